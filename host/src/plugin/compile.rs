//! Compiling a plugin's component, with bounded cost.
//!
//! A tenant's `.wasm` file is hostile input to the compiler: a few hundred
//! kilobytes of deeply nested blocks keep Cranelift busy for minutes, and a
//! megabyte of empty functions takes gigabytes of memory. Two lines of
//! defence stand in front of it:
//!
//! 1. [`check_shape`]: before anything compiles, the component's shape is
//!    held to the limits of [`super::shape`].
//! 2. [`Compiler::Subprocess`]: the compile itself runs in a child process
//!    (`triggerfish compile-worker`) under a CPU-time limit (`RLIMIT_CPU`),
//!    an address-space limit (`RLIMIT_AS`) and a wall-clock timeout, and
//!    hands back the serialized artifact, which the host loads with
//!    [`Component::deserialize`]. Whatever slips through the shape check
//!    costs at most those limits, and never the host's memory.
//!
//! [`Compiler::InProcess`] (the library's default, used by tests) compiles
//! in the calling thread with only the shape check in front.

pub use super::shape::check_shape;
use super::shape::{OverLimit, ShapeError};
use crate::engine::{engine_config, Metering, RuntimeConfig};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;
use wasmtime::component::Component;
use wasmtime::{Engine, InstanceAllocationStrategy};

/// Why a component was not compiled, or its compile failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// Not parseable as WebAssembly, or refused by the compiler.
    #[error("{0}")]
    Invalid(String),
    /// Over a limit of [`check_shape`]; nothing was compiled.
    #[error(transparent)]
    Shape(OverLimit),
    /// The compile used up its CPU time.
    #[error("compiling took longer than {seconds} s of CPU, the host's limit")]
    CpuTime { seconds: u64 },
    /// The compile ran out of address space.
    #[error("compiling needed more than {} MiB of memory, the host's limit", bytes >> 20)]
    Memory { bytes: u64 },
    /// The compile did not finish in time, although it had CPU time left:
    /// the host is overloaded.
    #[error("compiling did not finish within {0:?} of wall-clock time, the host's limit")]
    WallTime(Duration),
    /// The compiled code was larger than the host takes back.
    #[error("the compiled code is over {} MiB, the host's limit", bytes >> 20)]
    ArtifactTooLarge { bytes: u64 },
    /// The compiler process could not be run or did not answer: a fault of
    /// the host, not of the plugin (and not remembered against it).
    #[error("the compiler process failed: {0}")]
    Worker(String),
}

impl From<ShapeError> for CompileError {
    fn from(error: ShapeError) -> CompileError {
        match error {
            ShapeError::Invalid(message) => CompileError::Invalid(message),
            ShapeError::Over(over) => CompileError::Shape(over),
        }
    }
}

impl CompileError {
    /// Whether the failure says something about the plugin's bytes (and so
    /// may be remembered for them), rather than about the host's state.
    pub fn is_about_the_plugin(&self) -> bool {
        !matches!(self, CompileError::Worker(_) | CompileError::WallTime(_))
    }
}

/// CPU time one compile may use, in seconds. The 12 MiB JavaScript plugin
/// compiles in about 20 s of CPU (on this project's 2-core test machine).
pub const DEFAULT_COMPILE_CPU_SECONDS: u64 = 60;
/// Address space of the compiler process. Compiling the JavaScript plugin
/// takes about 0.55 GiB resident and passes under a 1 GiB limit.
pub const DEFAULT_COMPILE_MEMORY_BYTES: u64 = 2 << 30;
/// Wall-clock time one compile may take: see [`wall_timeout_for`].
pub const DEFAULT_COMPILE_WALL_TIMEOUT: Duration = wall_timeout_for(DEFAULT_COMPILE_CPU_SECONDS);

/// The wall-clock timeout of a compile that may use `cpu_seconds` of CPU:
/// twice that (at least 10 s), so that a legitimate compile still finishes
/// on an overloaded host.
pub const fn wall_timeout_for(cpu_seconds: u64) -> Duration {
    let seconds = cpu_seconds.saturating_mul(2);
    Duration::from_secs(if seconds < 10 { 10 } else { seconds })
}

/// This process's own executable, to run as the compiler: on Linux
/// `/proc/self/exe`, which still names it after an upgrade replaced the
/// file on disk.
pub fn own_executable() -> std::io::Result<PathBuf> {
    let this = std::path::Path::new("/proc/self/exe");
    if this.exists() {
        Ok(this.to_owned())
    } else {
        std::env::current_exe()
    }
}
/// Size of the compiled artifact the host reads back from the compiler
/// process. The JavaScript plugin's is 43 MB.
pub const DEFAULT_MAX_ARTIFACT_BYTES: u64 = 512 << 20;
/// Bytes of the compiler process's standard error kept for the error
/// message.
const STDERR_KEPT: u64 = 16 << 10;

/// How plugins are compiled.
#[derive(Debug, Clone, Default)]
pub enum Compiler {
    /// In the calling (blocking) thread, with no bound but the shape
    /// check: for tests and tools that compile only trusted code.
    #[default]
    InProcess,
    /// In a child process under CPU, memory and time limits: what `serve`
    /// and `invoke` use.
    Subprocess(SubprocessCompiler),
}

impl Compiler {
    /// A child-process compiler running `exe compile-worker` (the
    /// `triggerfish` binary: usually [`std::env::current_exe`]), with the
    /// default limits.
    pub fn subprocess(exe: PathBuf) -> Compiler {
        Compiler::Subprocess(SubprocessCompiler::new(exe))
    }
}

/// The limits of a child-process compile.
#[derive(Debug, Clone)]
pub struct SubprocessCompiler {
    /// The `triggerfish` binary, run as `exe compile-worker`.
    pub exe: PathBuf,
    /// `RLIMIT_CPU` of the child, in seconds (all its threads together).
    pub cpu_seconds: u64,
    /// `RLIMIT_AS` of the child, in bytes.
    pub memory_bytes: u64,
    /// The child is killed after this long.
    pub wall_timeout: Duration,
    /// The most bytes of compiled code read back.
    pub max_artifact_bytes: u64,
}

impl SubprocessCompiler {
    pub fn new(exe: PathBuf) -> SubprocessCompiler {
        SubprocessCompiler {
            exe,
            cpu_seconds: DEFAULT_COMPILE_CPU_SECONDS,
            memory_bytes: DEFAULT_COMPILE_MEMORY_BYTES,
            wall_timeout: DEFAULT_COMPILE_WALL_TIMEOUT,
            max_artifact_bytes: DEFAULT_MAX_ARTIFACT_BYTES,
        }
    }

    /// Compiles `wasm` in a child process and returns the serialized
    /// artifact (`Component::serialize` of an engine configured as
    /// `runtime`'s). Blocks: call from a blocking thread.
    pub fn compile(&self, runtime: &RuntimeConfig, wasm: &[u8]) -> Result<Vec<u8>, CompileError> {
        use std::os::unix::process::{CommandExt, ExitStatusExt};
        use std::process::{Command, Stdio};

        let mut command = Command::new(&self.exe);
        command
            .arg(WORKER_COMMAND)
            .args(WorkerArgs::from_config(runtime).to_args())
            // Short error messages, and no time spent capturing backtraces.
            .env("RUST_BACKTRACE", "0")
            .env("RUST_LIB_BACKTRACE", "0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let (cpu, memory) = (self.cpu_seconds.max(1), self.memory_bytes);
        // SAFETY: between fork and exec this only makes raw system calls
        // (setrlimit, prctl), which are async-signal-safe, and allocates
        // nothing.
        unsafe {
            command.pre_exec(move || limit_this_process(cpu, memory));
        }
        let mut child = command
            .spawn()
            .map_err(|e| CompileError::Worker(format!("cannot run {}: {e}", self.exe.display())))?;
        let pid = child.id();
        let (mut stdin, stdout, stderr) = (
            child.stdin.take().expect("piped"),
            child.stdout.take().expect("piped"),
            child.stderr.take().expect("piped"),
        );
        let cap = self.max_artifact_bytes;
        let (status, artifact, message) = std::thread::scope(|scope| {
            // The child reads all its input before it writes anything; a
            // child that died early makes this write fail, which its exit
            // status then explains.
            scope.spawn(move || {
                let _ = stdin.write_all(wasm);
            });
            let artifact = scope.spawn(move || {
                let mut artifact = Vec::new();
                // Reading stops one byte past the cap; the child then
                // fails on a closed pipe.
                let _ = stdout.take(cap + 1).read_to_end(&mut artifact);
                artifact
            });
            let message = scope.spawn(move || {
                let mut message = Vec::new();
                let mut stderr = stderr;
                let _ = (&mut stderr).take(STDERR_KEPT).read_to_end(&mut message);
                // Drain the rest so the child never blocks on a full pipe.
                let _ = std::io::copy(&mut stderr, &mut std::io::sink());
                message
            });
            let (done, waited) = std::sync::mpsc::channel();
            let waiter = scope.spawn(move || {
                let status = child.wait();
                let _ = done.send(());
                status
            });
            let killed = match waited.recv_timeout(self.wall_timeout) {
                Ok(()) => false,
                Err(_) => {
                    // The waiter has not reaped the child yet, so its pid
                    // still names it.
                    kill(pid);
                    true
                }
            };
            let status = waiter.join().expect("the waiter does not panic");
            let artifact = artifact.join().expect("the reader does not panic");
            let message = message.join().expect("the reader does not panic");
            (status.map(|s| (s, killed)), artifact, message)
        });
        let (status, killed_by_us) = status
            .map_err(|e| CompileError::Worker(format!("cannot wait for the compiler: {e}")))?;
        let message = String::from_utf8_lossy(&message).trim().to_owned();
        if killed_by_us {
            return Err(CompileError::WallTime(self.wall_timeout));
        }
        if artifact.len() as u64 > cap {
            return Err(CompileError::ArtifactTooLarge { bytes: cap });
        }
        match (status.code(), status.signal()) {
            (Some(0), _) => Ok(artifact),
            (Some(code), _) if code == i32::from(WORKER_INVALID) => {
                Err(CompileError::Invalid(message))
            }
            (Some(code), _) if code == i32::from(WORKER_OUT_OF_MEMORY) => {
                Err(CompileError::Memory { bytes: memory })
            }
            (_, Some(SIGXCPU)) => Err(CompileError::CpuTime { seconds: cpu }),
            // The hard limit, one second past the soft one.
            (_, Some(SIGKILL)) => Err(CompileError::CpuTime { seconds: cpu }),
            // Rust aborts when an allocation fails.
            (_, Some(SIGABRT)) if message.contains("memory allocation") => {
                Err(CompileError::Memory { bytes: memory })
            }
            _ => Err(CompileError::Worker(format!(
                "the compiler process ended with {status}{}",
                if message.is_empty() {
                    String::new()
                } else {
                    format!(": {}", last_line(&message))
                }
            ))),
        }
    }
}

const SIGABRT: i32 = libc::SIGABRT;
const SIGKILL: i32 = libc::SIGKILL;
const SIGXCPU: i32 = libc::SIGXCPU;

fn kill(pid: u32) {
    // SAFETY: a plain system call on a child this process has not reaped.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
}

fn last_line(text: &str) -> &str {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
}

/// In the child, before exec: the limits, no core dumps, and death with
/// the host.
fn limit_this_process(cpu_seconds: u64, memory_bytes: u64) -> std::io::Result<()> {
    let set = |resource, soft: u64, hard: u64| {
        let limit = libc::rlimit {
            rlim_cur: soft as libc::rlim_t,
            rlim_max: hard as libc::rlim_t,
        };
        // SAFETY: a plain system call with a valid pointer.
        if unsafe { libc::setrlimit(resource, &limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    // SIGXCPU at the soft limit, SIGKILL a second later.
    set(libc::RLIMIT_CPU, cpu_seconds, cpu_seconds + 1)?;
    set(libc::RLIMIT_AS, memory_bytes, memory_bytes)?;
    set(libc::RLIMIT_CORE, 0, 0)?;
    // SAFETY: a plain system call. A host that dies takes its compile
    // with it.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    Ok(())
}

// ---------------------------------------------------------------- worker

/// The hidden subcommand of `triggerfish` that compiles in a child process.
pub const WORKER_COMMAND: &str = "compile-worker";
/// Exit code of the worker when the component does not compile.
const WORKER_INVALID: u8 = 3;
/// Exit code of the worker when the compile ran out of memory.
const WORKER_OUT_OF_MEMORY: u8 = 4;

/// The engine settings the worker needs to compile as the host would, as
/// command-line arguments of `triggerfish compile-worker`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct WorkerArgs {
    #[arg(long)]
    pub max_instances: u32,
    #[arg(long)]
    pub max_memory_bytes: u64,
    #[arg(long)]
    pub no_fuel: bool,
    #[arg(long)]
    pub no_epochs: bool,
}

impl WorkerArgs {
    fn from_config(config: &RuntimeConfig) -> WorkerArgs {
        WorkerArgs {
            max_instances: config.max_instances,
            max_memory_bytes: config.max_memory_bytes,
            no_fuel: !config.metering.fuel,
            no_epochs: !config.metering.epochs,
        }
    }

    fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            format!("--max-instances={}", self.max_instances),
            format!("--max-memory-bytes={}", self.max_memory_bytes),
        ];
        if self.no_fuel {
            args.push("--no-fuel".into());
        }
        if self.no_epochs {
            args.push("--no-epochs".into());
        }
        args
    }

    fn to_config(&self) -> RuntimeConfig {
        RuntimeConfig {
            max_instances: self.max_instances,
            max_memory_bytes: self.max_memory_bytes,
            metering: Metering {
                fuel: !self.no_fuel,
                epochs: !self.no_epochs,
            },
        }
    }
}

/// The compile worker's whole life: reads a component from standard
/// input, compiles it with an engine configured as the host's (but with
/// no instance pool, which compiled code does not depend on), and writes
/// the serialized artifact to standard output. Returns the exit code.
pub fn run_worker(args: &WorkerArgs) -> u8 {
    let mut wasm = Vec::new();
    if let Err(e) = std::io::stdin().lock().read_to_end(&mut wasm) {
        eprintln!("cannot read the component: {e}");
        return 2;
    }
    let mut config = engine_config(&args.to_config());
    config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
    let engine = match Engine::new(&config) {
        Ok(engine) => engine,
        Err(e) => {
            eprintln!("cannot start the engine: {e:#}");
            return 2;
        }
    };
    let compiled = Component::from_binary(&engine, &wasm).and_then(|c| c.serialize());
    match compiled {
        Ok(artifact) => {
            let mut stdout = std::io::stdout().lock();
            match stdout.write_all(&artifact).and_then(|()| stdout.flush()) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("cannot write the compiled code: {e}");
                    2
                }
            }
        }
        Err(e) => {
            let message = format!("{e:#}");
            eprintln!("{message}");
            if is_out_of_memory(&e) {
                WORKER_OUT_OF_MEMORY
            } else {
                WORKER_INVALID
            }
        }
    }
}

/// Whether a compile error comes from an allocation the address-space
/// limit refused (a failed `mmap` is an error, not an abort).
fn is_out_of_memory(error: &wasmtime::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.raw_os_error() == Some(libc::ENOMEM))
    }) || format!("{error:#}").contains("Cannot allocate memory")
}
