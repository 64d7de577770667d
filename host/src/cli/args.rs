//! The command line: its commands and flags (clap), and the defaults
//! they resolve to.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use triggerfish::engine::{Runtime, RuntimeConfig};
use triggerfish::plugin::compile::{self, Compiler, SubprocessCompiler, WorkerArgs};
use triggerfish::plugin::PluginLoader;
use triggerfish::sources::drain;
use triggerfish::sources::http::server::ServerLimits;
use triggerfish::tenant::operator::OperatorConfig;

#[derive(Parser)]
#[command(
    name = "triggerfish",
    version,
    about = "Run Cognito-style identity and data lifecycle triggers as sandboxed WebAssembly plugins",
    long_about = "Run Cognito-style identity and data lifecycle triggers as sandboxed WebAssembly plugins.\n\n\
        Plugins live in a folder per tenant: DIR/<tenant>/*.wasm, run in file-name order, \
        with optional settings in DIR/<tenant>/tenant.toml."
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
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
        /// Take the tenants' plugins and tenant.toml files from the NATS
        /// server of `--streams` instead of the plugins folder, so that
        /// every host connected to it serves the same tenants: deploys
        /// (and `triggerfish deploy --folder`) go there, and each host
        /// follows the changes. The host mirrors them into
        /// DIR/.triggerfish-shared (which it owns); the tenant folders in
        /// DIR are not served.
        #[arg(long, requires = "streams")]
        shared_plugins: bool,
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
        #[command(flatten)]
        drain: DrainArgs,
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
    /// Deploy a plugin (or a tenant.toml, or a whole folder) to a running host over HTTP.
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
        /// Upload a folder: with --tenant, DIR is that tenant's folder;
        /// without, DIR is a plugins folder and each tenant folder in it is
        /// uploaded. Each tenant's tenant.toml goes first, then its plugins
        /// in name order; plugins the host has and the folder does not are
        /// left. With an operator key, a host started with
        /// --shared-plugins creates the tenants it does not have.
        #[arg(long, value_name = "DIR", group = "what",
              conflicts_with_all = ["file", "config", "delete"])]
        folder: Option<PathBuf>,
        /// Remove the tenant and all its files from every host (an
        /// operator key; hosts started with --shared-plugins).
        #[arg(long, group = "what", conflicts_with_all = ["file", "config", "delete", "folder"])]
        remove_tenant: bool,
        /// The tenant to deploy to.
        #[arg(long, required_unless_present = "folder")]
        tenant: Option<String>,
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
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args)]
pub(crate) struct EngineArgs {
    /// Where compiled plugins are cached, so a restart does not compile
    /// them again [default: $XDG_CACHE_HOME/triggerfish or ~/.cache/triggerfish].
    /// It must be private to this user: its files are loaded as native code.
    #[arg(long, value_name = "DIR")]
    pub(crate) cache_dir: Option<PathBuf>,
    /// Compile every plugin on load, with no compile cache on disk.
    #[arg(long, conflicts_with = "cache_dir")]
    pub(crate) no_cache: bool,
    /// Plugin instances that may be alive at once, across all tenants.
    #[arg(long, default_value_t = RuntimeConfig::default().max_instances)]
    pub(crate) max_instances: u32,
    /// The most memory (MiB) any tenant may give one plugin instance.
    #[arg(long, default_value_t = RuntimeConfig::default().max_memory_bytes >> 20)]
    pub(crate) max_memory_mib: u64,
    /// The operator's configuration: each tenant's quotas, the ceilings of
    /// its limits and the outbound hosts it may ever reach (see the
    /// README). Without it, the built-in defaults are every tenant's
    /// ceilings and plugins reach no outbound host.
    #[arg(long, value_name = "FILE")]
    pub(crate) operator_config: Option<PathBuf>,
    /// CPU seconds one plugin compile may use (in a child process).
    #[arg(long, default_value_t = compile::DEFAULT_COMPILE_CPU_SECONDS)]
    pub(crate) compile_cpu_seconds: u64,
    /// Memory (MiB of address space) one plugin compile may use.
    #[arg(long, default_value_t = compile::DEFAULT_COMPILE_MEMORY_BYTES >> 20)]
    pub(crate) compile_memory_mib: u64,
}

impl EngineArgs {
    pub(crate) fn loader(&self) -> anyhow::Result<PluginLoader> {
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
    pub(crate) fn operator(&self) -> anyhow::Result<OperatorConfig> {
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
pub(crate) struct HttpArgs {
    /// Client connections open at once, all clients together (lowered to
    /// fit the file-descriptor limit).
    #[arg(long, default_value_t = ServerLimits::default().max_connections as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_connections: u32,
    /// Connections open at once from one client address (IPv6: one /64).
    #[arg(long, default_value_t = ServerLimits::default().max_connections_per_client as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_connections_per_client: u32,
    /// Time (ms) to receive a request's headers.
    #[arg(long, value_name = "MS", default_value_t = millis(ServerLimits::default().header_timeout),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) header_timeout_ms: u64,
    /// Time (ms) to receive a request's whole body (408 past it), and to send the answer.
    #[arg(long, value_name = "MS", default_value_t = millis(ServerLimits::default().body_timeout),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) body_timeout_ms: u64,
    /// Time (ms) a keep-alive connection may wait for its next request.
    #[arg(long, value_name = "MS", default_value_t = millis(ServerLimits::default().idle_timeout),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) idle_timeout_ms: u64,
}

pub(crate) fn millis(duration: std::time::Duration) -> u64 {
    duration.as_millis() as u64
}

impl HttpArgs {
    pub(crate) fn limits(&self) -> ServerLimits {
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

/// How `serve` drains on SIGTERM or Ctrl-C (see `sources::drain`).
#[derive(clap::Args)]
pub(crate) struct DrainArgs {
    /// On SIGTERM or Ctrl-C, how long (ms) to serve on while /healthz says
    /// "draining" before the listener closes, so a load balancer stops
    /// sending requests first: more than its check interval times the
    /// failed checks it needs.
    #[arg(long, value_name = "MS", default_value_t = millis(drain::DEFAULT_DRAIN_GRACE))]
    pub(crate) drain_grace_ms: u64,
    /// The most a whole drain may take (s): past it the host exits 1,
    /// abandoning the requests and batches still in flight.
    #[arg(long, value_name = "S", default_value_t = drain::DEFAULT_DRAIN_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) drain_timeout_s: u64,
}

impl DrainArgs {
    pub(crate) fn grace(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.drain_grace_ms)
    }

    pub(crate) fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.drain_timeout_s)
    }
}

/// The data folder inside the plugins folder, when `--data-dir` is not given.
pub(crate) const DEFAULT_DATA_DIR: &str = ".triggerfish-data";

fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("triggerfish"))
}
