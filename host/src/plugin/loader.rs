//! Loading plugins: compile each distinct `.wasm` once, keep compiled code
//! on disk so a restart does not compile again, and share it in memory
//! between every file with the same bytes.

use super::typecheck::handlers;
use super::{Compiled, Origin, Plugin, PluginError};
use crate::encoding::sha256_hex;
use crate::engine::Runtime;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;
use wasmtime::component::Component;

/// Loads plugins: compiles each distinct `.wasm` once, keeps compiled code
/// on disk so a restart does not compile again, and shares it in memory
/// between every file with the same bytes.
pub struct PluginLoader {
    runtime: Arc<Runtime>,
    /// `<cache dir>/<engine fingerprint>/`, if caching on disk.
    disk_cache: Option<PathBuf>,
    in_memory: Mutex<HashMap<String, Weak<Compiled>>>,
}

impl PluginLoader {
    /// A loader with its compile cache in `cache_dir` (none: no disk cache).
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
        }
    }

    /// Loads one plugin file's bytes as plugin `name`. Compilation runs on
    /// a blocking thread, never on the async runtime.
    pub async fn load(&self, name: &str, bytes: Vec<u8>) -> Result<Plugin, PluginError> {
        let hash = sha256_hex(&bytes);
        let plugin = |compiled, origin| Plugin {
            name: name.to_owned(),
            compiled,
            loaded_at: SystemTime::now(),
            origin,
        };
        if let Some(compiled) = self.shared(&hash) {
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
        };
        compiled.probe().await?;
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
    /// readable, else compiled now (and written to the cache).
    async fn compile(
        &self,
        hash: &str,
        bytes: Vec<u8>,
    ) -> Result<(Component, Origin), PluginError> {
        let engine = self.runtime.engine().clone();
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
            let component = Component::from_binary(&engine, &bytes)
                .map_err(|e| PluginError::Compile(format!("{e:#}")))?;
            if let Some(path) = &cached {
                if let Err(e) = write_cache(&component, path) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot write the compile cache");
                }
            }
            Ok((component, Origin::Compiled))
        };
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| PluginError::Compile(e.to_string()))?
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
fn write_cache(component: &Component, path: &Path) -> anyhow::Result<()> {
    let bytes = component.serialize()?;
    let partial = path.with_extension(format!("partial-{}", std::process::id()));
    std::fs::write(&partial, bytes)?;
    std::fs::rename(&partial, path)?;
    Ok(())
}
