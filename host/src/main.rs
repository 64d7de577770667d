//! `triggerfish`: run Cognito-style triggers as WebAssembly plugins.

use anyhow::Context;
use clap::Parser;
use std::io::Read;
use std::sync::Arc;
use triggerfish::auth::admin::AdminKeys;
use triggerfish::auth::hash_key;
use triggerfish::cognito::Cognito;
use triggerfish::dispatch::{Dispatcher, InvokeError, LogSink};
use triggerfish::engine::{Runtime, RuntimeConfig};
use triggerfish::limits::Limits;
use triggerfish::ops::log_format::FlatJson;
use triggerfish::ops::Admin;
use triggerfish::plugin::compile::{self, Compiler};
use triggerfish::plugin::PluginLoader;
use triggerfish::sources::drain::{self, Health};
use triggerfish::sources::http::server as http_server;
use triggerfish::sources::http::{Api, HttpSource};
use triggerfish::sources::streams::StreamsSource;
use triggerfish::sources::{self, Source};
use triggerfish::streams::embedded::EmbeddedEngine;
use triggerfish::streams::engine::Engine;
use triggerfish::streams::nats::NatsEngine;
use triggerfish::streams::shared_store::SharedStore;
use triggerfish::streams::Streams;
use triggerfish::tenant::registry::Tenants;
use triggerfish::tenant::shared::{self, Shared};
use triggerfish::tenant::{is_tenant_name, watch, Tenant};

// A plugin call allocates many small values (the event as component
// values, WASI state); mimalloc serves them about a fifth faster than
// glibc's malloc (see BENCHMARKS.md). It asks for transparent huge
// pages, which keep whole 2 MiB pages resident (about 70 MiB more) and
// drain the embedded engine's streams about 8% faster; an operator
// short of memory sets MIMALLOC_ALLOW_THP=0 (README, "Memory").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cli;
use cli::args::{Cli, Command, LogFormat, DEFAULT_DATA_DIR};
use cli::deploy::{deploy, deploy_folder};

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
            shared_plugins,
            public_url,
            admin_keys,
            log_format: _,
            engine,
            http,
            drain: drain_args,
        } => {
            // Before anything else: a signal from now on drains the host
            // rather than killing it.
            let signals = drain::Signals::new().context("cannot listen for SIGTERM")?;
            anyhow::ensure!(
                plugins_dir.is_dir(),
                "the plugins folder {} is not a folder",
                plugins_dir.display()
            );
            let tenants = match streams.as_deref().filter(|_| shared_plugins) {
                Some(url) => Arc::new(Tenants::with_shared(
                    engine.loader()?,
                    engine.operator()?,
                    shared_store(url, &plugins_dir).await?,
                )),
                None => Arc::new(Tenants::new(
                    engine.loader()?,
                    engine.operator()?,
                    &plugins_dir,
                )),
            };
            // The shared store is followed by tenant::shared, not the folder.
            let _watcher = if no_watch || shared_plugins {
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
                    // With a shared store: read it whole first, then follow it.
                    let loaded = match tenants.shared() {
                        Some(_) => shared::load(&tenants).await.map(Some),
                        None => tenants.load_all().await.map(|()| None),
                    };
                    match loaded {
                        Ok(revision) => {
                            tracing::info!(%address, plugins_dir = %plugins_dir.display(), tenants = tenants.count(), "serving");
                            if let Some(revision) = revision {
                                shared::follow(tenants, revision).await;
                            }
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
            let cognito = Arc::new(Cognito::new(streams.clone(), &public_url));
            cognito.sweep_outboxes();
            let dispatcher = Arc::new(dispatcher.with_cognito(cognito));
            let health = Health::default();
            let api = Api {
                tenants: tenants.clone(),
                dispatcher: dispatcher.clone(),
                streams: Some(streams.clone()),
                admin,
                health: health.clone(),
            };
            let sources: Vec<Box<dyn Source>> = vec![
                Box::new(HttpSource {
                    listener,
                    api,
                    limits: http_server::ServerLimits {
                        // Requests in flight may take the whole drain. The
                        // server's own bound comes a second later, so that a
                        // drain that runs out always ends in the drain's
                        // exit code (1), never in a server that gave up
                        // first and an exit that says all went well.
                        shutdown_grace: drain_args.timeout() + std::time::Duration::from_secs(1),
                        ..http.limits()
                    },
                    drain_grace: drain_args.grace(),
                }),
                Box::new(StreamsSource {
                    streams,
                    tenants,
                    dispatcher,
                }),
            ];
            let (stop_handle, stop) = sources::stop_signal();
            let stop_handle = Arc::new(stop_handle);
            tokio::spawn(drain::follow_signals(
                signals,
                health,
                stop_handle.clone(),
                drain_args.grace(),
                drain_args.timeout(),
            ));
            sources::run_all(sources, stop, stop_handle).await?;
            tracing::info!("drained: exiting");
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
            folder,
            remove_tenant,
            tenant,
            url,
            key,
        } => match (folder, tenant) {
            (Some(folder), tenant) => deploy_folder(&folder, tenant.as_deref(), &url, key).await,
            (None, Some(tenant)) if remove_tenant => {
                cli::deploy::remove_tenant(&tenant, &url, key).await
            }
            (None, Some(tenant)) => deploy(file, name, config, delete, &tenant, &url, key).await,
            (None, None) => anyhow::bail!("--tenant is needed"),
        },
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

/// The shared store at `url`, mirrored into the plugins folder's
/// `.triggerfish-shared` (`serve --shared-plugins`).
async fn shared_store(url: &str, plugins_dir: &std::path::Path) -> anyhow::Result<Arc<Shared>> {
    let store = SharedStore::connect(url)
        .await
        .with_context(|| format!("cannot use the shared store at {url}"))?;
    let mirror = plugins_dir.join(shared::MIRROR_DIR);
    let shared = Shared::new(Arc::new(store), &mirror)
        .with_context(|| format!("cannot make the mirror {}", mirror.display()))?;
    Ok(Arc::new(shared))
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
