//! `triggerfish`: run Cognito-style triggers as WebAssembly plugins.

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::Value;
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use triggerfish::auth::admin::AdminKeys;
use triggerfish::auth::hash_key;
use triggerfish::cognito::Cognito;
use triggerfish::dispatch::{Dispatcher, InvokeError, LogSink};
use triggerfish::engine::{Runtime, RuntimeConfig};
use triggerfish::limits::Limits;
use triggerfish::ops::log_format::FlatJson;
use triggerfish::ops::Admin;
use triggerfish::plugin::compile::{self, Compiler, SubprocessCompiler, WorkerArgs};
use triggerfish::plugin::PluginLoader;
use triggerfish::sources::http::server::{self as http_server, ServerLimits};
use triggerfish::sources::http::{Api, HttpSource};
use triggerfish::sources::streams::StreamsSource;
use triggerfish::sources::{self, Source};
use triggerfish::streams::embedded::EmbeddedEngine;
use triggerfish::streams::engine::Engine;
use triggerfish::streams::nats::NatsEngine;
use triggerfish::streams::Streams;
use triggerfish::tenant::operator::OperatorConfig;
use triggerfish::tenant::registry::Tenants;
use triggerfish::tenant::{is_tenant_name, watch, Tenant};

// A plugin call allocates many small values (the event as component
// values, WASI state); mimalloc serves them about a fifth faster than
// glibc's malloc (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        /// Do not watch the folder; reload only on SIGHUP (for production).
        #[arg(long)]
        no_watch: bool,
        /// Where the embedded engine keeps streams, checkpoints and queues
        /// [default: DIR/.triggerfish-data, inside the plugins folder; a
        /// folder whose name starts with a dot is never a tenant].
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Keep streams on NATS JetStream at this URL (`nats://HOST:PORT`),
        /// shared with every host connected to it, rather than in the
        /// embedded engine.
        #[arg(long, value_name = "URL", conflicts_with = "data_dir")]
        streams: Option<String>,
        /// The address consumers reach this host at, for the payload URLs
        /// of oversized Cognito Streams records [default: http://LISTEN].
        #[arg(long, value_name = "URL")]
        public_url: Option<String>,
        /// Operator keys, one hash a line as `triggerfish hash-key` prints
        /// it: they open GET /metrics and GET /status. Without it those
        /// routes are off (404).
        #[arg(long, value_name = "FILE")]
        admin_keys: Option<PathBuf>,
        /// How the log is written on stderr: `text` for people, `json`
        /// (one object a line, span fields flattened) for log shippers.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
        #[command(flatten)]
        engine: EngineArgs,
        #[command(flatten)]
        http: HttpArgs,
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
    /// Deploy a plugin (or a tenant.toml) to a running host over HTTP.
    ///
    /// The host checks the plugin as `check` does before it replaces
    /// anything, and answers once the new version serves. The key must be
    /// listed in the tenant's `[auth] deploy-keys`. Exits 1 when the host
    /// refuses the deploy (its reason on stderr), 2 when it cannot be
    /// reached.
    #[command(group = clap::ArgGroup::new("what").required(true).multiple(true))]
    Deploy {
        /// The plugin to install or replace.
        #[arg(value_name = "FILE.wasm", group = "what")]
        file: Option<PathBuf>,
        /// The plugin's name in the tenant (its file name there, without
        /// `.wasm`; it sets its place in the chain) [default: FILE's name].
        #[arg(long, requires = "file")]
        name: Option<String>,
        /// A tenant.toml to replace the tenant's with (sent before the plugin).
        #[arg(long, value_name = "FILE", group = "what")]
        config: Option<PathBuf>,
        /// Remove the tenant's plugin of this name instead.
        #[arg(long, value_name = "NAME", group = "what", conflicts_with_all = ["file", "config"])]
        delete: Option<String>,
        /// The tenant to deploy to.
        #[arg(long)]
        tenant: String,
        /// The host: http://HOST:PORT.
        #[arg(long, value_name = "URL")]
        url: String,
        /// A key of the tenant with the deploy right; read from the
        /// environment variable TRIGGERFISH_DEPLOY_KEY when left out (which
        /// keeps it out of the process list).
        #[arg(long)]
        key: Option<String>,
    },
    /// Print the hash of an API key, for `[auth] keys` in tenant.toml.
    HashKey {
        /// The key; read from standard input when left out.
        key: Option<String>,
    },
    /// Compiles the component on standard input to standard output: the
    /// child process the host compiles plugins in, under its limits.
    #[command(name = compile::WORKER_COMMAND, hide = true)]
    CompileWorker {
        #[command(flatten)]
        args: WorkerArgs,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args)]
struct EngineArgs {
    /// Where compiled plugins are cached, so a restart does not compile
    /// them again [default: $XDG_CACHE_HOME/triggerfish or ~/.cache/triggerfish].
    /// It must be private to this user: its files are loaded as native code.
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile every plugin on load, with no compile cache on disk.
    #[arg(long, conflicts_with = "cache_dir")]
    no_cache: bool,
    /// Plugin instances that may be alive at once, across all tenants.
    #[arg(long, default_value_t = RuntimeConfig::default().max_instances)]
    max_instances: u32,
    /// The most memory (MiB) any tenant may give one plugin instance.
    #[arg(long, default_value_t = RuntimeConfig::default().max_memory_bytes >> 20)]
    max_memory_mib: u64,
    /// The operator's configuration: each tenant's quotas, the ceilings of
    /// its limits and the outbound hosts it may ever reach (see the
    /// README). Without it, the built-in defaults are every tenant's
    /// ceilings and plugins reach no outbound host.
    #[arg(long, value_name = "FILE")]
    operator_config: Option<PathBuf>,
    /// CPU seconds one plugin compile may use (in a child process).
    #[arg(long, default_value_t = compile::DEFAULT_COMPILE_CPU_SECONDS)]
    compile_cpu_seconds: u64,
    /// Memory (MiB of address space) one plugin compile may use.
    #[arg(long, default_value_t = compile::DEFAULT_COMPILE_MEMORY_BYTES >> 20)]
    compile_memory_mib: u64,
}

impl EngineArgs {
    fn loader(&self) -> anyhow::Result<PluginLoader> {
        let config = RuntimeConfig {
            max_instances: self.max_instances,
            max_memory_bytes: self.max_memory_mib << 20,
            ..RuntimeConfig::default()
        };
        let runtime = Runtime::new(config).context("cannot start the WebAssembly engine")?;
        let cache_dir = match (&self.cache_dir, self.no_cache) {
            (_, true) => None,
            (Some(dir), false) => Some(dir.clone()),
            (None, false) => default_cache_dir(),
        };
        let mut compiler = SubprocessCompiler::new(compile::own_executable()?);
        compiler.cpu_seconds = self.compile_cpu_seconds;
        compiler.memory_bytes = self.compile_memory_mib << 20;
        compiler.wall_timeout = compile::wall_timeout_for(compiler.cpu_seconds);
        Ok(PluginLoader::new(Arc::new(runtime), cache_dir.as_deref())
            .with_compiler(Compiler::Subprocess(compiler)))
    }

    /// The operator's configuration, checked against the engine's limits.
    fn operator(&self) -> anyhow::Result<OperatorConfig> {
        let max_memory = self.max_memory_mib << 20;
        match &self.operator_config {
            Some(path) => OperatorConfig::load(path, max_memory),
            None => OperatorConfig::parse("", max_memory)
                .map_err(|e| anyhow::anyhow!("the built-in limits do not fit the engine: {e}")),
        }
    }
}

/// The limits of the HTTP server (see `sources::http::server::ServerLimits`).
#[derive(clap::Args)]
struct HttpArgs {
    /// Client connections open at once, all clients together (lowered to
    /// fit the file-descriptor limit).
    #[arg(long, default_value_t = ServerLimits::default().max_connections as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Connections open at once from one client address (IPv6: one /64).
    #[arg(long, default_value_t = ServerLimits::default().max_connections_per_client as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_connections_per_client: u32,
    /// Time (ms) to receive a request's headers.
    #[arg(long, value_name = "MS", default_value_t = millis(ServerLimits::default().header_timeout),
          value_parser = clap::value_parser!(u64).range(1..))]
    header_timeout_ms: u64,
    /// Time (ms) to receive a request's whole body (408 past it), and to send the answer.
    #[arg(long, value_name = "MS", default_value_t = millis(ServerLimits::default().body_timeout),
          value_parser = clap::value_parser!(u64).range(1..))]
    body_timeout_ms: u64,
    /// Time (ms) a keep-alive connection may wait for its next request.
    #[arg(long, value_name = "MS", default_value_t = millis(ServerLimits::default().idle_timeout),
          value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout_ms: u64,
}

fn millis(duration: std::time::Duration) -> u64 {
    duration.as_millis() as u64
}

impl HttpArgs {
    fn limits(&self) -> ServerLimits {
        use std::time::Duration;
        ServerLimits {
            max_connections: self.max_connections as usize,
            max_connections_per_client: self.max_connections_per_client as usize,
            header_timeout: Duration::from_millis(self.header_timeout_ms),
            body_timeout: Duration::from_millis(self.body_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            ..ServerLimits::default()
        }
    }
}

/// The data folder inside the plugins folder, when `--data-dir` is not given.
const DEFAULT_DATA_DIR: &str = ".triggerfish-data";

fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("triggerfish"))
}

fn init_log(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,cranelift=warn,wasmtime=warn".into());
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => log
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => log
            .with_ansi(false)
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(FlatJson)
            .init(),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_log(match &cli.command {
        Command::Serve { log_format, .. } => *log_format,
        _ => LogFormat::Text,
    });
    if let Command::CompileWorker { args } = &cli.command {
        // No async runtime: the worker only compiles.
        return std::process::ExitCode::from(compile::run_worker(args));
    }
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
            no_watch,
            data_dir,
            streams,
            public_url,
            admin_keys,
            log_format: _,
            engine,
            http,
        } => {
            anyhow::ensure!(
                plugins_dir.is_dir(),
                "the plugins folder {} is not a folder",
                plugins_dir.display()
            );
            let tenants = Arc::new(Tenants::new(
                engine.loader()?,
                engine.operator()?,
                &plugins_dir,
            ));
            let _watcher = if no_watch {
                None
            } else {
                Some(watch::watch(tenants.clone()).context("cannot watch the plugins folder")?)
            };
            let _sighup = watch::reload_on_sighup(tenants.clone())?;
            let admin = match admin_keys {
                Some(path) => {
                    let keys = AdminKeys::load(&path)?;
                    tracing::info!(
                        keys = keys.len(),
                        "operator routes on: GET /metrics, GET /status"
                    );
                    Some(Arc::new(Admin::new(keys, tenants.clone())))
                }
                None => None,
            };
            let mut dispatcher = dispatcher();
            for sink in admin.iter().flat_map(|a| a.sinks()) {
                dispatcher = dispatcher.with_sink(sink);
            }
            let listener =
                http_server::bind(listen).with_context(|| format!("cannot listen on {listen}"))?;
            // Listen at once, and load the tenants meanwhile: /healthz says
            // 503 "starting" until every tenant is loaded, then "serving"
            // is logged with the address.
            let address = listener.local_addr()?;
            tracing::info!(%address, "listening; loading the tenants");
            tokio::spawn({
                let tenants = tenants.clone();
                let plugins_dir = plugins_dir.clone();
                async move {
                    match tenants.load_all().await {
                        Ok(()) => {
                            tracing::info!(%address, plugins_dir = %plugins_dir.display(), tenants = tenants.count(), "serving")
                        }
                        Err(error) => {
                            tracing::error!(error = %format!("{error:#}"), "loading the plugins folder failed")
                        }
                    }
                }
            });
            let engine: Arc<dyn Engine> = match streams {
                Some(url) => Arc::new(
                    NatsEngine::connect(&url)
                        .await
                        .with_context(|| format!("cannot use the streams at {url}"))?,
                ),
                None => {
                    let data_dir = data_dir.unwrap_or_else(|| plugins_dir.join(DEFAULT_DATA_DIR));
                    Arc::new(EmbeddedEngine::open(&data_dir).with_context(|| {
                        format!("cannot open the streams in {}", data_dir.display())
                    })?)
                }
            };
            let streams = Arc::new(Streams::new(engine));
            if let Some(admin) = &admin {
                admin.metrics.register_collector(Box::new(
                    triggerfish::ops::scraped::StreamMetrics {
                        streams: streams.clone(),
                    },
                ));
                admin.set_streams(streams.clone());
            }
            let public_url = public_url.unwrap_or_else(|| format!("http://{address}"));
            let dispatcher = Arc::new(
                dispatcher.with_cognito(Arc::new(Cognito::new(streams.clone(), &public_url))),
            );
            let api = Api {
                tenants: tenants.clone(),
                dispatcher: dispatcher.clone(),
                streams: Some(streams.clone()),
                admin,
            };
            let sources: Vec<Box<dyn Source>> = vec![
                Box::new(HttpSource {
                    listener,
                    api,
                    limits: http.limits(),
                }),
                Box::new(StreamsSource {
                    streams,
                    tenants,
                    dispatcher,
                }),
            ];
            let (stop_handle, stop) = sources::stop_signal();
            let stop_handle = Arc::new(stop_handle);
            tokio::spawn({
                let stop_handle = stop_handle.clone();
                async move {
                    shutdown_signal().await;
                    tracing::info!("stopping: finishing the requests in flight");
                    stop_handle.stop();
                }
            });
            sources::run_all(sources, stop, stop_handle).await?;
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
            let event = sources::json::parse_strict(text.as_bytes())
                .context("the event is not valid JSON")?;
            let operator = engine.operator()?;
            let policy = operator.for_tenant(&tenant);
            let tenant = Tenant::load(&engine.loader()?, policy, &tenant, &dir, None).await;
            match dispatcher().dispatch(&tenant, event).await {
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
            // Only to check: a small pool and no disk cache.
            let config = RuntimeConfig {
                max_instances: 4,
                ..RuntimeConfig::default()
            };
            let loader = PluginLoader::new(Arc::new(Runtime::new(config)?), None)
                .with_compiler(Compiler::subprocess(compile::own_executable()?));
            let name = file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            match loader.load(&name, bytes, &Limits::default()).await {
                Ok(plugin) => {
                    println!(
                        "{}: a valid plugin (sha256 {})",
                        file.display(),
                        plugin.hash()
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
        Command::Deploy {
            file,
            name,
            config,
            delete,
            tenant,
            url,
            key,
        } => deploy(file, name, config, delete, &tenant, &url, key).await,
        Command::HashKey { key } => {
            let key = match key {
                Some(key) => key,
                None => read_stdin()?.trim().to_owned(),
            };
            anyhow::ensure!(!key.is_empty(), "the key is empty");
            println!("{}", hash_key(&key));
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::CompileWorker { .. } => unreachable!("handled before the async runtime starts"),
    }
}

/// `triggerfish deploy`: each step's outcome on stdout, a refusal on
/// stderr with exit code 1.
async fn deploy(
    file: Option<PathBuf>,
    name: Option<String>,
    config: Option<PathBuf>,
    delete: Option<String>,
    tenant: &str,
    url: &str,
    key: Option<String>,
) -> anyhow::Result<std::process::ExitCode> {
    use triggerfish::client::DeployClient;
    let key = match key.or_else(|| std::env::var("TRIGGERFISH_DEPLOY_KEY").ok()) {
        Some(key) if !key.trim().is_empty() => key.trim().to_owned(),
        _ => anyhow::bail!("no key: pass --key or set TRIGGERFISH_DEPLOY_KEY"),
    };
    let client = DeployClient::new(url, tenant, &key)?;
    let refused = |what: &str, answer: &triggerfish::client::Answer| {
        eprintln!("error: the host refused {what}: {}", answer.error());
        Ok(std::process::ExitCode::from(1))
    };
    if let Some(name) = delete {
        let answer = client.delete_plugin(&name).await?;
        if !answer.is_success() {
            return refused(&format!("to delete {name}"), &answer);
        }
        println!("deleted {name} from {tenant}");
    }
    let warn_failures = |body: &Value| {
        for error in body["errors"].as_array().into_iter().flatten() {
            eprintln!(
                "warning: {} of {tenant} does not load: {}",
                error["plugin"].as_str().unwrap_or_default(),
                error["error"].as_str().unwrap_or_default()
            );
        }
    };
    if let Some(path) = config {
        let toml =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let answer = client.put_config(toml).await?;
        if !answer.is_success() {
            return refused(&format!("{}", path.display()), &answer);
        }
        println!("{}: live as the tenant.toml of {tenant}", path.display());
        warn_failures(&answer.body);
    }
    if let Some(path) = file {
        let name = match name {
            Some(name) => name,
            None => path
                .file_stem()
                .and_then(|s| s.to_str())
                .map(str::to_owned)
                .with_context(|| {
                    format!("{} has no usable file name: pass --name", path.display())
                })?,
        };
        let wasm =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let answer = client.put_plugin(&name, wasm).await?;
        if !answer.is_success() {
            return refused(&format!("{}", path.display()), &answer);
        }
        let body = &answer.body;
        let triggers: Vec<&str> = body["triggers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        println!(
            "{}: live as {} in {tenant} ({}, sha256 {}); triggers: {}",
            path.display(),
            body["plugin"].as_str().unwrap_or(&name),
            if body["replaced"] == true {
                "replaced"
            } else {
                "new"
            },
            body["hash"].as_str().unwrap_or_default(),
            triggers.join(", ")
        );
        warn_failures(body);
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// The dispatcher every way in shares, with its sinks.
fn dispatcher() -> Dispatcher {
    Dispatcher::new().with_sink(Arc::new(LogSink))
}

fn read_stdin() -> anyhow::Result<String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("cannot read standard input")?;
    Ok(text)
}
