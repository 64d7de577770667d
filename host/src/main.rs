//! `triggerfish`: run Cognito-style triggers as WebAssembly plugins.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use triggerfish::chain::{self, InvokeError};
use triggerfish::host::{hash_key, Host};
use triggerfish::limits::Limits;
use triggerfish::plugin::Plugin;
use triggerfish::runtime::{Runtime, RuntimeConfig};
use triggerfish::tenant::{is_tenant_name, Tenant};

#[derive(Parser)]
#[command(
    name = "triggerfish",
    version,
    about = "Run Cognito-style identity and data lifecycle triggers as sandboxed WebAssembly plugins",
    long_about = "Run Cognito-style identity and data lifecycle triggers as sandboxed WebAssembly plugins.\n\n\
        Plugins live in a folder per tenant: DIR/<tenant>/*.wasm, run in file-name order, \
        with optional settings in DIR/<tenant>/tenant.toml."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API for every tenant in the plugins folder.
    Serve {
        /// The plugins folder: one sub-folder per tenant.
        #[arg(long, value_name = "DIR")]
        plugins_dir: PathBuf,
        /// Address to listen on. Loopback by default; expose it on purpose.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Run one event through a tenant's chain and print the resulting event.
    ///
    /// Exits 1 when the chain denies the event or fails (the error on
    /// stderr), 2 when the event or the tenant is not usable.
    Invoke {
        /// The plugins folder: one sub-folder per tenant.
        #[arg(long, value_name = "DIR")]
        plugins_dir: PathBuf,
        /// The tenant whose chain runs the event.
        #[arg(long)]
        tenant: String,
        /// The event JSON file; `-` or nothing reads standard input.
        #[arg(value_name = "EVENT.json")]
        event: Option<PathBuf>,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Say which triggers a component implements, or why it is not a valid plugin.
    Check {
        /// The component to check.
        #[arg(value_name = "FILE.wasm")]
        file: PathBuf,
    },
    /// Print the hash of an API key, for `[auth] keys` in tenant.toml.
    HashKey {
        /// The key; read from standard input when left out.
        key: Option<String>,
    },
}

#[derive(clap::Args)]
struct EngineArgs {
    /// Plugin instances that may be alive at once, across all tenants.
    #[arg(long, default_value_t = RuntimeConfig::default().max_instances)]
    max_instances: u32,
    /// The most memory (MiB) any tenant may give one plugin instance.
    #[arg(long, default_value_t = RuntimeConfig::default().max_memory_bytes >> 20)]
    max_memory_mib: u64,
}

impl EngineArgs {
    fn runtime(&self) -> anyhow::Result<Arc<Runtime>> {
        let config = RuntimeConfig {
            max_instances: self.max_instances,
            max_memory_bytes: self.max_memory_mib << 20,
        };
        Ok(Arc::new(
            Runtime::new(config).context("cannot start the WebAssembly engine")?,
        ))
    }
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,cranelift=warn,wasmtime=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    match cli.command {
        Command::Serve {
            plugins_dir,
            listen,
            engine,
        } => {
            let host = Arc::new(Host::open(engine.runtime()?, &plugins_dir).await?);
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            tracing::info!(address = %listener.local_addr()?, plugins_dir = %plugins_dir.display(), "serving");
            axum::serve(listener, triggerfish::http::router(host))
                .with_graceful_shutdown(async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await?;
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Invoke {
            plugins_dir,
            tenant,
            event,
            engine,
        } => {
            anyhow::ensure!(
                is_tenant_name(&tenant),
                "{tenant:?} is not a tenant name: tenant names are letters, digits, - and _"
            );
            let dir = plugins_dir.join(&tenant);
            anyhow::ensure!(dir.is_dir(), "no tenant folder {}", dir.display());
            let text = match event.as_deref() {
                None => read_stdin()?,
                Some(path) if path.as_os_str() == "-" => read_stdin()?,
                Some(path) => std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?,
            };
            let event: serde_json::Value =
                serde_json::from_str(&text).context("the event is not valid JSON")?;
            let tenant = Tenant::load(&engine.runtime()?, &tenant, &dir).await;
            match chain::invoke(&tenant, event).await {
                Ok(event) => {
                    println!("{}", serde_json::to_string_pretty(&event)?);
                    Ok(std::process::ExitCode::SUCCESS)
                }
                Err(InvokeError::Chain(error)) => {
                    eprintln!("error: {error}");
                    Ok(std::process::ExitCode::from(1))
                }
                Err(error) => Err(error.into()),
            }
        }
        Command::Check { file } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let runtime = EngineArgs {
                max_instances: 4,
                max_memory_mib: RuntimeConfig::default().max_memory_bytes >> 20,
            }
            .runtime()?;
            let name = file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            match Plugin::load(&runtime, &name, bytes, &Limits::default()).await {
                Ok(plugin) => {
                    println!(
                        "{}: a valid plugin (sha256 {})",
                        file.display(),
                        plugin.hash
                    );
                    for trigger in plugin.triggers() {
                        println!("  {trigger}  ({})", trigger.export_name());
                    }
                    Ok(std::process::ExitCode::SUCCESS)
                }
                Err(error) => {
                    eprintln!("{}: not a valid plugin: {error}", file.display());
                    Ok(std::process::ExitCode::from(1))
                }
            }
        }
        Command::HashKey { key } => {
            let key = match key {
                Some(key) => key,
                None => read_stdin()?.trim().to_owned(),
            };
            anyhow::ensure!(!key.is_empty(), "the key is empty");
            println!("{}", hash_key(&key));
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}

fn read_stdin() -> anyhow::Result<String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("cannot read standard input")?;
    Ok(text)
}
