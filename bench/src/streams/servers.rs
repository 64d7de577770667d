//! The consumers under test and what they run on: `triggerfish serve`
//! hosts on the embedded engine or a `nats-server`, and the Node.js
//! consumer, each started for one run and read from its output.

use anyhow::Context;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use triggerfish_test_support::{guests, PluginsDir};

const TENANT: &str = "bench";
const STREAM: &str = "orders";

/// What a consumer reported: one line per batch.
#[derive(Default)]
pub(super) struct Seen {
    pub(super) records: usize,
    pub(super) batches: usize,
    pub(super) first: Option<(Instant, usize)>,
    pub(super) last: Option<Instant>,
    pub(super) latencies_us: Vec<u64>,
}

impl Seen {
    pub(super) fn note(&mut self, line: &str) {
        let Some((_, list)) = line.split_once("stream-bench ") else {
            return;
        };
        let now = Instant::now();
        let mut n = 0;
        for item in list.trim().split(',') {
            n += 1;
            if let Ok(us) = item.parse() {
                self.latencies_us.push(us);
            }
        }
        self.records += n;
        self.batches += 1;
        self.first.get_or_insert((now, n));
        self.last = Some(now);
    }

    /// Records per second from the first batch's report to the last one's.
    pub(super) fn rate(&self) -> f64 {
        match (self.first, self.last) {
            (Some((first, n)), Some(last)) if last > first => {
                (self.records - n) as f64 / (last - first).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

type Shared = Arc<Mutex<Seen>>;

/// A child process, killed when dropped.
pub(super) struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    pub(super) fn pid(&self) -> u32 {
        self.0.id()
    }
}

/// User and system CPU time of a process so far.
fn cpu(pid: u32) -> Duration {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // Fields after the command (which may hold spaces), from 3.
            let rest = stat.rsplit_once(')')?.1.to_owned();
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let user: u64 = fields.get(11)?.parse().ok()?;
            let system: u64 = fields.get(12)?.parse().ok()?;
            Some(user + system)
        })
        .unwrap_or(0);
    // Linux reports in USER_HZ, 100 a second on every common system.
    Duration::from_millis(ticks * 10)
}

/// Reads a child's output lines into `seen`, and hands the first line
/// `ready` accepts to the returned channel.
fn read_lines(
    out: impl std::io::Read + Send + 'static,
    seen: Shared,
    ready: impl Fn(&str) -> Option<String> + Send + 'static,
) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line.contains("stream-bench ") {
                seen.lock().unwrap().note(&line);
            } else if let Some(found) = ready(&line) {
                let _ = tx.send(found);
            }
        }
    });
    rx
}

/// A `nats-server -js` on a loopback port, its store in a temporary folder.
pub(super) struct Nats {
    pub(super) _proc: Proc,
    pub(super) pid: u32,
    pub(super) url: String,
    pub(super) _store: tempfile::TempDir,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn nats_server() -> anyhow::Result<Nats> {
    let store = tempfile::tempdir()?;
    let port = free_port()?;
    let proc = Proc(
        Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("nats-server runs (apt-get install -y nats-server)")?,
    );
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(10),
            "nats-server did not listen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Nats {
        pid: proc.pid(),
        _proc: proc,
        url: format!("nats://127.0.0.1:{port}"),
        _store: store,
    })
}

/// One `triggerfish serve`.
pub(super) struct Host {
    pub(super) proc: Proc,
    pub(super) base: String,
}

/// Where the consumers keep streams.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Engine {
    Embedded,
    Nats { hosts: usize },
}

/// What consumes the stream.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Consumer {
    Triggerfish(Engine),
    /// The Node.js consumer, on NATS (one Triggerfish host for ingest).
    Node,
}

impl Consumer {
    pub(super) fn label(self) -> String {
        match self {
            Consumer::Triggerfish(Engine::Embedded) => "Triggerfish, embedded engine".into(),
            Consumer::Triggerfish(Engine::Nats { hosts: 1 }) => "Triggerfish, NATS, 1 host".into(),
            Consumer::Triggerfish(Engine::Nats { hosts }) => {
                format!("Triggerfish, NATS, {hosts} hosts")
            }
            Consumer::Node => "Node.js consumer, NATS".into(),
        }
    }

    pub(super) fn engine(self) -> Engine {
        match self {
            Consumer::Triggerfish(engine) => engine,
            Consumer::Node => Engine::Nats { hosts: 1 },
        }
    }
}

/// One configuration of a run.
#[derive(Clone, Copy)]
pub(super) struct Setup {
    pub(super) consumer: Consumer,
    pub(super) batch: usize,
    /// The handler's wait per batch.
    pub(super) wait_ms: u64,
    /// Lanes per shard (Triggerfish).
    pub(super) parallelization: u32,
    /// The tenant's concurrency quota, per host.
    pub(super) concurrency: usize,
}

/// The tenant's folder for `setup`, its mapping on or off.
fn write_tenant(dir: &PluginsDir, setup: &Setup, enabled: bool) {
    let enabled = enabled && setup.consumer != Consumer::Node;
    dir.settings(
        TENANT,
        &format!(
            "[auth]\nmode = \"none\"\n\
             [[event-sources]]\nstream = \"{STREAM}\"\nkind = \"kinesis\"\nbatch-size = {}\n\
             parallelization = {}\nenabled = {enabled}\n\
             [plugins.10-stream-bench.config]\nwait-ms = \"{}\"\n",
            setup.batch, setup.parallelization, setup.wait_ms
        ),
    );
}

/// Everything one run starts: the NATS server, the hosts, the Node.js
/// consumer; stopped when dropped.
pub(super) struct Run {
    pub(super) nats: Option<Nats>,
    pub(super) hosts: Vec<Host>,
    pub(super) node: Option<Proc>,
    pub(super) seen: Shared,
    pub(super) dir: PluginsDir,
    pub(super) setup: Setup,
    pub(super) _data: Vec<tempfile::TempDir>,
}

pub(super) struct Tools {
    pub(super) serve: PathBuf,
    pub(super) cache: tempfile::TempDir,
    /// `NODE_PATH` for the Node.js consumer, if it could be installed.
    pub(super) node_modules: Option<PathBuf>,
}

impl Run {
    pub(super) fn start(tools: &Tools, setup: Setup, enabled: bool) -> anyhow::Result<Run> {
        let dir = PluginsDir::new();
        dir.plugin(TENANT, "10-stream-bench.wasm", guests::STREAM_BENCH);
        write_tenant(&dir, &setup, enabled);
        let operator = dir.path().join(".operator.toml");
        std::fs::write(
            &operator,
            format!(
                "[defaults.quotas]\nconcurrency = {}\nstream-records-per-second = 10000000\n",
                setup.concurrency
            ),
        )?;
        let nats = match setup.consumer.engine() {
            Engine::Nats { .. } => Some(nats_server()?),
            Engine::Embedded => None,
        };
        let hosts_wanted = match setup.consumer {
            Consumer::Triggerfish(Engine::Nats { hosts }) => hosts,
            _ => 1,
        };
        let seen = Shared::default();
        let mut data = Vec::new();
        let mut hosts = Vec::new();
        for _ in 0..hosts_wanted {
            let mut command = Command::new(&tools.serve);
            command
                .args(["serve", "--no-watch", "--listen", "127.0.0.1:0"])
                .arg("--plugins-dir")
                .arg(dir.path())
                .arg("--operator-config")
                .arg(&operator)
                .arg("--cache-dir")
                .arg(tools.cache.path());
            match &nats {
                Some(nats) => {
                    command.args(["--streams", &nats.url]);
                }
                None => {
                    let folder = tempfile::tempdir()?;
                    command.arg("--data-dir").arg(folder.path());
                    data.push(folder);
                }
            }
            let mut child = command
                .env("RUST_LOG", "warn,triggerfish=info,plugin=info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .with_context(|| format!("{} runs", tools.serve.display()))?;
            let stderr = child.stderr.take().context("its stderr")?;
            let proc = Proc(child);
            let serving = read_lines(stderr, seen.clone(), |line| {
                line.contains(" serving ")
                    .then(|| line.split_once("address=")?.1.split_whitespace().next())
                    .flatten()
                    .map(str::to_owned)
            });
            let address = serving
                .recv_timeout(Duration::from_secs(120))
                .context("the host never said it was serving")?;
            hosts.push(Host {
                proc,
                base: format!("http://{address}"),
            });
        }
        Ok(Run {
            nats,
            hosts,
            node: None,
            seen,
            dir,
            setup,
            _data: data,
        })
    }

    /// Starts the Node.js consumer and waits until its consumers exist
    /// (the stream must exist: post to it first).
    pub(super) fn start_node(&mut self, tools: &Tools) -> anyhow::Result<()> {
        let modules = tools
            .node_modules
            .as_ref()
            .context("the Node.js consumer is not installed")?;
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("node/stream-consumer/index.js");
        let nats = self.nats.as_ref().context("NATS")?;
        let mut child = Command::new("node")
            .arg(script)
            .args([
                &nats.url,
                TENANT,
                STREAM,
                "4",
                &self.setup.batch.to_string(),
                &self.setup.wait_ms.to_string(),
            ])
            .env("NODE_PATH", modules)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("node runs")?;
        let stdout = child.stdout.take().context("its stdout")?;
        let node = Proc(child);
        let ready = read_lines(stdout, self.seen.clone(), |line| {
            (line == "ready").then(|| line.to_owned())
        });
        ready
            .recv_timeout(Duration::from_secs(60))
            .context("the Node.js consumer never became ready")?;
        self.node = Some(node);
        Ok(())
    }

    /// Turns the mapping on (a SIGHUP to every host: they run with
    /// `--no-watch`).
    pub(super) fn enable(&self) -> anyhow::Result<()> {
        write_tenant(&self.dir, &self.setup, true);
        for host in &self.hosts {
            let status = Command::new("kill")
                .args(["-HUP", &host.proc.pid().to_string()])
                .status()?;
            anyhow::ensure!(status.success(), "kill -HUP failed");
        }
        Ok(())
    }

    /// CPU time of every process of the run so far.
    pub(super) fn cpu(&self) -> Duration {
        let mut total: Duration = self.hosts.iter().map(|h| cpu(h.proc.pid())).sum();
        if let Some(nats) = &self.nats {
            total += cpu(nats.pid);
        }
        if let Some(node) = &self.node {
            total += cpu(node.pid());
        }
        total
    }

    pub(super) fn urls(&self) -> Vec<String> {
        self.hosts
            .iter()
            .map(|h| format!("{}/v1/tenants/{TENANT}/streams/{STREAM}/records", h.base))
            .collect()
    }

    pub(super) fn reset(&self) {
        *self.seen.lock().unwrap() = Seen::default();
    }

    /// Waits until the consumers reported `records` records, or the bound.
    pub(super) fn wait_for(&self, records: usize, bound: Duration) {
        let started = Instant::now();
        while self.seen.lock().unwrap().records < records && started.elapsed() < bound {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Installs the `nats` package for the Node.js consumer into
/// `target/node-tools/stream-consumer` from the committed lock file, once
/// per version of it (as xtask installs componentize-js). None, with the
/// reason, when Node.js, npm or the registry is not there.
pub(super) fn install_node_client() -> Result<PathBuf, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let source = root.join("node/stream-consumer");
    let tools = root
        .parent()
        .ok_or("the workspace")?
        .join("target/node-tools/stream-consumer");
    let read = |file: &str| std::fs::read(source.join(file)).map_err(|e| format!("{file}: {e}"));
    let (manifest, lock) = (read("package.json")?, read("package-lock.json")?);
    let installed = tools.join("node_modules/.installed-lock.json");
    if std::fs::read(&installed).ok().as_ref() == Some(&lock) {
        return Ok(tools.join("node_modules"));
    }
    std::fs::create_dir_all(&tools).map_err(|e| e.to_string())?;
    std::fs::write(tools.join("package.json"), &manifest)
        .and_then(|_| std::fs::write(tools.join("package-lock.json"), &lock))
        .map_err(|e| e.to_string())?;
    let out = Command::new("npm")
        .current_dir(&tools)
        .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
        .output()
        .map_err(|e| format!("cannot run npm: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`npm install` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    std::fs::write(&installed, &lock).map_err(|e| e.to_string())?;
    Ok(tools.join("node_modules"))
}
