//! Loading plugins: compile each distinct `.wasm` once (within the shape
//! limits and the compiler's bounds), keep compiled code on disk so a
//! restart does not compile again, share it in memory between every file
//! with the same bytes, and remember what failed.

use super::compile::{check_shape, CompileError, Compiler};
use super::remembered::{Counters, Failures, LoadCounts, ProbeLimits};
use super::typecheck::handlers;
use super::{probe_timeout, Compiled, Origin, Plugin, PluginError};
use crate::encoding::sha256_hex;
use crate::engine::Runtime;
use crate::limits::Limits;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;
use wasmtime::component::Component;

/// Loads plugins: compiles each distinct `.wasm` once, keeps compiled code
/// on disk so a restart does not compile again, and shares it in memory
/// between every file with the same bytes. Remembers the last failures by
/// content, so bytes that failed are refused at once.
pub struct PluginLoader {
    runtime: Arc<Runtime>,
    /// `<cache dir>/<engine fingerprint>/`, if caching on disk.
    disk_cache: Option<PathBuf>,
    in_memory: Mutex<HashMap<String, Weak<Compiled>>>,
    /// One load of the same bytes at a time: tenants load concurrently,
    /// and the second load of a file waits and shares the first's code
    /// instead of compiling it again.
    loading: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    compiler: Compiler,
    failures: Failures,
    counters: Counters,
}

impl PluginLoader {
    /// A loader with its compile cache in `cache_dir` (none: no disk
    /// cache), compiling in process ([`Compiler::InProcess`]; see
    /// [`PluginLoader::with_compiler`]).
    ///
    /// Whoever can write to the cache directory can run native code in the
    /// host, so it must be private to the host's user; it is created 0700.
    pub fn new(runtime: Arc<Runtime>, cache_dir: Option<&Path>) -> PluginLoader {
        let disk_cache = cache_dir.and_then(|dir| {
            let dir = dir.join(engine_fingerprint(runtime.engine()));
            match create_private_dir(&dir) {
                Ok(()) => Some(dir),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "compile cache unavailable; compiling every plugin");
                    None
                }
            }
        });
        PluginLoader {
            runtime,
            disk_cache,
            in_memory: Mutex::new(HashMap::new()),
            loading: Mutex::default(),
            compiler: Compiler::InProcess,
            failures: Failures::default(),
            counters: Counters::default(),
        }
    }

    /// This loader, compiling with `compiler` (a [`Compiler::Subprocess`]
    /// bounds each compile in CPU time, memory and wall-clock time).
    /// The engine plugins are loaded into.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    pub fn with_compiler(mut self, compiler: Compiler) -> PluginLoader {
        self.compiler = compiler;
        self
    }

    /// What this loader has compiled, probed and refused from memory.
    pub fn counts(&self) -> LoadCounts {
        self.counters.snapshot(&self.failures)
    }

    /// Loads one plugin file's bytes as plugin `name`, probing it under
    /// `limits`, the limits its calls will have. Compilation runs on a
    /// blocking thread (or a child process), never on the async runtime.
    /// Bytes that failed before are refused at once with the same error
    /// (a failed probe only under the same limits).
    pub async fn load(
        &self,
        name: &str,
        bytes: Vec<u8>,
        limits: &Limits,
    ) -> Result<Plugin, PluginError> {
        let hash = sha256_hex(&bytes);
        let probe_limits = ProbeLimits::of(limits, probe_timeout(limits));
        if let Some(error) = self.failures.recall(&hash, probe_limits) {
            Counters::add(&self.counters.refused_as_remembered);
            tracing::debug!(plugin = name, hash = %&hash[..12], "refused: these bytes failed to load before");
            return Err(error);
        }
        let loaded = self
            .load_unremembered(name, hash.clone(), bytes, limits, probe_limits)
            .await;
        if let Err(error) = &loaded {
            self.failures.remember(&hash, probe_limits, error);
        }
        loaded
    }

    async fn load_unremembered(
        &self,
        name: &str,
        hash: String,
        bytes: Vec<u8>,
        limits: &Limits,
        probe_limits: ProbeLimits,
    ) -> Result<Plugin, PluginError> {
        let plugin = |compiled, origin| Plugin {
            name: name.to_owned(),
            compiled,
            loaded_at: SystemTime::now(),
            origin,
        };
        let lock = {
            let mut loading = self.loading.lock().unwrap_or_else(|e| e.into_inner());
            // Forget the locks no load holds any more.
            loading.retain(|_, lock| Arc::strong_count(lock) > 1);
            loading.entry(hash.clone()).or_default().clone()
        };
        let _one_load_of_these_bytes = lock.lock().await;
        if let Some(compiled) = self.shared(&hash) {
            // Shared code was probed under its first loader's limits; these
            // may be tighter.
            if compiled.probed_with(probe_limits) {
                return Ok(plugin(compiled, Origin::Shared));
            }
            Counters::add(&self.counters.probed);
            compiled.probe(limits).await?;
            compiled.mark_probed(probe_limits);
            return Ok(plugin(compiled, Origin::Shared));
        }
        let size = bytes.len();
        let (component, origin) = self.compile(&hash, bytes).await?;
        let pre = self
            .runtime
            .linker()
            .instantiate_pre(&component)
            .map_err(|e| PluginError::Link(format!("{e:#}")))?;
        let handlers = handlers(&self.runtime, &component)?;
        let compiled = Compiled {
            hash: hash.clone(),
            size,
            handlers,
            pre,
            runtime: self.runtime.clone(),
            probed: Mutex::default(),
        };
        Counters::add(&self.counters.probed);
        compiled.probe(limits).await?;
        compiled.mark_probed(probe_limits);
        let compiled = Arc::new(compiled);
        let mut in_memory = self.in_memory.lock().unwrap_or_else(|e| e.into_inner());
        in_memory.retain(|_, weak| weak.strong_count() > 0);
        in_memory.insert(hash, Arc::downgrade(&compiled));
        Ok(plugin(compiled, origin))
    }

    fn shared(&self, hash: &str) -> Option<Arc<Compiled>> {
        let in_memory = self.in_memory.lock().unwrap_or_else(|e| e.into_inner());
        in_memory.get(hash).and_then(Weak::upgrade)
    }

    /// The compiled component: from the disk cache if it is there and
    /// readable, else checked by [`check_shape`], compiled now by the
    /// loader's [`Compiler`] and written to the cache.
    async fn compile(
        &self,
        hash: &str,
        bytes: Vec<u8>,
    ) -> Result<(Component, Origin), PluginError> {
        let engine = self.runtime.engine().clone();
        let runtime_config = self.runtime.config().clone();
        let compiler = self.compiler.clone();
        let cached = self
            .disk_cache
            .as_ref()
            .map(|dir| dir.join(format!("{hash}.cwasm")));
        let work = move || {
            if let Some(path) = cached.as_ref().filter(|p| p.is_file()) {
                // SAFETY: the cache directory is private to this host and
                // its files are written only by `write_cache` below, from
                // `Component::serialize` on an engine of the same
                // fingerprint (the directory name).
                match unsafe { Component::deserialize_file(&engine, path) } {
                    Ok(component) => return Ok((component, Origin::DiskCache)),
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable compile cache entry")
                    }
                }
            }
            // A cache entry passed this when it was compiled.
            check_shape(&bytes).map_err(CompileError::from)?;
            let component = match &compiler {
                Compiler::InProcess => {
                    let component = Component::from_binary(&engine, &bytes)
                        .map_err(|e| PluginError::Compile(format!("{e:#}")))?;
                    if let Some(path) = &cached {
                        if let Err(e) = component
                            .serialize()
                            .map_err(anyhow::Error::from)
                            .and_then(|artifact| write_cache(&artifact, path))
                        {
                            tracing::warn!(path = %path.display(), error = %e, "cannot write the compile cache");
                        }
                    }
                    component
                }
                Compiler::Subprocess(subprocess) => {
                    let artifact = subprocess.compile(&runtime_config, &bytes)?;
                    if let Some(path) = &cached {
                        if let Err(e) = write_cache(&artifact, path) {
                            tracing::warn!(path = %path.display(), error = %e, "cannot write the compile cache");
                        }
                    }
                    // SAFETY: the artifact is `Component::serialize` of
                    // this same binary (`triggerfish compile-worker`), with
                    // an engine configured as this one; `deserialize`
                    // checks that the configurations agree.
                    unsafe { Component::deserialize(&engine, &artifact) }.map_err(|e| {
                        CompileError::Worker(format!("cannot load the compiled code: {e:#}"))
                    })?
                }
            };
            Ok((component, Origin::Compiled))
        };
        let compiled = tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| PluginError::Compile(e.to_string()))?;
        if matches!(compiled, Ok((_, Origin::Compiled))) {
            Counters::add(&self.counters.compiled);
        }
        compiled
    }
}

/// A name for the engine's configuration: compiled code is only valid for
/// an engine with the same one.
fn engine_fingerprint(engine: &wasmtime::Engine) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("engine-{:016x}", hasher.finish())
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Writes a cache entry whole or not at all: to a temporary name, then
/// renamed into place.
fn write_cache(bytes: &[u8], path: &Path) -> anyhow::Result<()> {
    let partial = path.with_extension(format!("partial-{}", std::process::id()));
    std::fs::write(&partial, bytes)?;
    std::fs::rename(&partial, path)?;
    Ok(())
}
