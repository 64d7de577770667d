//! Reading what a tenant put in its folder without trusting it.
//!
//! A tenant can write anything into its folder: links, FIFOs, sockets,
//! files that grow while they are read, names swapped between a file and a
//! FIFO in a loop (`renameat2(RENAME_EXCHANGE)`). Checking a path and then
//! opening it is a race the tenant wins, and opening a FIFO with no writer
//! blocks for ever. So a file is opened once, without following a link and
//! without blocking, and everything is decided on the open descriptor.
//!
//! These are blocking calls: run them off the async workers
//! ([`off_worker`]), never on one.

use super::file::TenantFile;
use super::operator::TenantPolicy;
use super::{Settings, TENANT_FILE, TENANT_FILE_MAX_BYTES};
use crate::limits::Quotas;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;

/// Why a tenant's file was not read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("does not exist")]
    Missing,
    /// The name is a symbolic link: links are never followed, wherever
    /// they point.
    #[error("is a link (links are never followed)")]
    Link,
    /// A FIFO, socket, device or directory: only regular files are read.
    #[error("is {0}, not a regular file")]
    NotRegular(&'static str),
    #[error("is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    /// The file was within the limit when opened and grew past it while
    /// being read.
    #[error("grew past the limit of {limit} bytes while being read")]
    Grew { limit: u64 },
    #[error("cannot be read: {0}")]
    Io(std::io::Error),
}

/// Reads a regular file of at most `limit` bytes.
///
/// The file is opened with `O_NOFOLLOW | O_NONBLOCK | O_NOCTTY |
/// O_CLOEXEC`, so opening never follows a link in the last component of
/// `path` (only the tenant's own name: the folders above it are the
/// operator's) and never waits for a FIFO's writer. Its type and size come
/// from `fstat` on the open descriptor, so a name swapped after the open
/// changes nothing. At most `limit + 1` bytes are read, so a file growing
/// while it is read is caught too.
///
/// Fails with [`FileError::Link`] for a link, [`FileError::NotRegular`] for
/// a FIFO, socket, device or directory, [`FileError::TooLarge`] /
/// [`FileError::Grew`] past `limit`, [`FileError::Missing`] when there is
/// nothing by that name. Blocking: call it off the async workers.
pub fn read_regular_file(path: &Path, limit: u64) -> Result<Vec<u8>, FileError> {
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let fd = rustix::fs::open(path, flags, Mode::empty()).map_err(|e| match e {
        Errno::NOENT => FileError::Missing,
        // What O_NOFOLLOW answers for a link (EMLINK on some BSDs).
        Errno::LOOP | Errno::MLINK => FileError::Link,
        // What open answers for a socket, or a device with no driver.
        Errno::NXIO => FileError::NotRegular("a socket or a device"),
        e => FileError::Io(e.into()),
    })?;
    let stat = rustix::fs::fstat(&fd).map_err(|e| FileError::Io(e.into()))?;
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile => {}
        other => return Err(FileError::NotRegular(describe(other))),
    }
    let size = stat.st_size as u64;
    if size > limit {
        return Err(FileError::TooLarge { size, limit });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    File::from(fd)
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(FileError::Io)?;
    if bytes.len() as u64 > limit {
        return Err(FileError::Grew { limit });
    }
    Ok(bytes)
}

fn describe(file_type: FileType) -> &'static str {
    match file_type {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a link",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        _ => "of an unknown type",
    }
}

/// The names of the real folders (not links to folders) in the plugins
/// folder, unfiltered: the caller decides which are tenant names.
/// Blocking.
pub fn folders(plugins_dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(plugins_dir)?.filter_map(Result::ok) {
        // `file_type` does not follow links: a link to a folder is no tenant.
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Whether `path` is a real folder (a link to one is not). Blocking.
pub fn is_folder(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// Runs blocking filesystem work on tokio's blocking threads, so a slow or
/// hostile folder holds one of those, never an async worker. A panic in
/// `work` is passed on to the caller as if it had run inline.
pub async fn off_worker<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}

// ---------------------------------------------------------- a tenant folder

/// What a load needs from a tenant folder, read in one go off the async
/// workers (see [`read_folder`]).
pub(super) struct FolderSnapshot {
    /// `tenant.toml` resolved within the operator's policy (the defaults
    /// when there is none), or why it was refused.
    pub(super) settings: Result<Settings, String>,
    /// Each `.wasm` entry by file stem, in file-name order: its bytes, or
    /// why they were not read.
    pub(super) plugins: Vec<(String, Result<Vec<u8>, String>)>,
}

/// Reads a tenant folder: `tenant.toml`, then each `.wasm` entry within
/// the quotas it resolves to (`fallback`, the quotas of the tenant as it
/// was, when it is refused; the operator's when there was none). Blocking:
/// see this module.
pub(super) fn read_folder(
    dir: &Path,
    policy: &TenantPolicy,
    fallback: Option<Quotas>,
) -> FolderSnapshot {
    let settings = read_tenant_file(dir).and_then(|file| Settings::resolve(file, policy));
    let quotas = match &settings {
        Ok(settings) => settings.quotas.clone(),
        Err(_) => fallback.unwrap_or_else(|| policy.quotas.clone()),
    };
    let plugins = wasm_files(dir)
        .into_iter()
        .enumerate()
        .map(|(index, (stem, path))| {
            // A plugin's name lands in log lines: a control character in
            // it (a newline, say) could forge one, so such a file is
            // refused under its name escaped.
            if stem.chars().any(char::is_control) {
                let error =
                    "the file name has control characters: plugin file names must be printable"
                        .to_owned();
                return (stem.escape_debug().to_string(), Err(error));
            }
            let read = if index >= quotas.plugins {
                Err(format!(
                    "over the tenant's quota of {} plugins",
                    quotas.plugins
                ))
            } else {
                read_plugin_file(&path, quotas.wasm_bytes)
            };
            (stem, read)
        })
        .collect();
    FolderSnapshot { settings, plugins }
}

/// Reads a plugin file: a regular file (never a link out of the folder,
/// never a FIFO) of at most `limit` bytes. Blocking.
fn read_plugin_file(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    read_regular_file(path, limit).map_err(|e| match e {
        FileError::Link | FileError::NotRegular(_) => {
            format!("{e}: plugins must be regular files in the tenant folder")
        }
        FileError::TooLarge { size, limit } => format!(
            "the file is {size} bytes, over the tenant's quota of {limit} bytes ([quotas] wasm-kib)"
        ),
        FileError::Grew { limit } => format!(
            "the file grew past the tenant's quota of {limit} bytes while being read ([quotas] wasm-kib)"
        ),
        e => format!("{}: {e}", path.display()),
    })
}

/// Reads and parses `tenant.toml` (the defaults when there is none): a
/// regular file of at most [`TENANT_FILE_MAX_BYTES`]. Blocking.
fn read_tenant_file(dir: &Path) -> Result<TenantFile, String> {
    let path = dir.join(TENANT_FILE);
    let bytes = match read_regular_file(&path, TENANT_FILE_MAX_BYTES) {
        Ok(bytes) => bytes,
        Err(FileError::Missing) => return Ok(TenantFile::default()),
        Err(e @ (FileError::Link | FileError::NotRegular(_))) => {
            return Err(format!(
                "{TENANT_FILE} {e}: it must be a regular file in the tenant folder"
            ))
        }
        Err(e) => return Err(format!("{TENANT_FILE} {e}")),
    };
    let text = String::from_utf8(bytes).map_err(|_| format!("{TENANT_FILE} is not UTF-8"))?;
    TenantFile::parse(&text).map_err(|e| format!("{TENANT_FILE}: {e}"))
}

/// The `.wasm` entries of a tenant folder, by file stem, in file-name
/// order: every kind of entry but folders (links, FIFOs and the like are
/// listed so that loading refuses them by name, rather than the plugin
/// silently leaving the chain; they are never opened as such). Blocking.
pub fn wasm_files(dir: &Path) -> Vec<(String, std::path::PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<(String, std::path::PathBuf)> = entries
        .filter_map(Result::ok)
        // `file_type` does not follow links.
        .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
        .filter_map(|e| {
            let path = e.path();
            let is_wasm = path.extension().and_then(|x| x.to_str()) == Some("wasm");
            let stem = path.file_stem()?.to_str()?.to_owned();
            is_wasm.then_some((stem, path))
        })
        .collect();
    files.sort();
    files
}

/// The longest plugin name (the file name without `.wasm`), in bytes: a
/// file name is at most 255 bytes on the file systems the host runs on.
pub const MAX_PLUGIN_NAME_BYTES: usize = 200;

/// The plugin's file stem for a name given in a request: `NAME` or
/// `NAME.wasm`, printable, with no path separator, not starting with a
/// dot (so never `.` or `..`, nor a hidden temporary name), at most
/// [`MAX_PLUGIN_NAME_BYTES`]. The same names the folder loads, less those
/// that could reach outside it.
pub fn plugin_stem(name: &str) -> Result<&str, &'static str> {
    let refuse = Err;
    let stem = name.strip_suffix(".wasm").unwrap_or(name);
    if stem.is_empty() {
        return refuse("it is empty");
    }
    if stem.len() > MAX_PLUGIN_NAME_BYTES {
        return refuse("it is longer than 200 bytes");
    }
    if stem.chars().any(char::is_control) {
        return refuse("it has control characters");
    }
    if stem.contains(['/', '\\']) {
        return refuse("it has a path separator");
    }
    if stem.starts_with('.') {
        return refuse("it starts with a dot");
    }
    Ok(stem)
}

/// Writes `dir/file_name` whole or not at all: to a new hidden name in the
/// same folder (`O_EXCL`, never following a link), synced, renamed over
/// the old file, and the folder synced, so neither the watcher nor a crash
/// sees half a file. The temporary name does not end in `.wasm`, so a
/// reload never loads it. Blocking.
pub(super) fn write_atomically(
    dir: &Path,
    file_name: &str,
    bytes: &[u8],
    mode: u32,
) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    if !is_folder(dir) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the tenant folder is gone",
        ));
    }
    let temp = dir.join(format!(
        ".{file_name}.deploy-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, dir.join(file_name))?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_name_with_a_newline_is_refused_escaped() {
        let dir = std::env::temp_dir().join(format!("tf-names-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("10-a\nINFO forged.wasm"), b"\0asm").unwrap();
        let folder = read_folder(&dir, &TenantPolicy::default(), None);
        std::fs::remove_dir_all(&dir).unwrap();
        let [(name, read)] = folder.plugins.as_slice() else {
            panic!("one entry expected")
        };
        assert_eq!(name, "10-a\\nINFO forged");
        assert!(read.as_ref().unwrap_err().contains("control characters"));
    }
    use std::os::unix::fs::symlink;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "triggerfish-tenant-files-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn reads_regular_files_within_the_limit() {
        let dir = scratch("regular");
        let file = dir.join("a.wasm");
        std::fs::write(&file, b"12345").unwrap();
        assert_eq!(read_regular_file(&file, 5).unwrap(), b"12345");
        assert!(matches!(
            read_regular_file(&file, 4),
            Err(FileError::TooLarge { size: 5, limit: 4 })
        ));
        assert!(matches!(
            read_regular_file(&dir.join("none"), 4),
            Err(FileError::Missing)
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_links_fifos_and_folders_without_blocking() {
        let dir = scratch("hostile");
        std::fs::write(dir.join("real"), b"x").unwrap();
        symlink(dir.join("real"), dir.join("link")).unwrap();
        rustix::fs::mkfifoat(rustix::fs::CWD, dir.join("fifo"), Mode::from(0o600)).unwrap();
        std::fs::create_dir(dir.join("folder")).unwrap();

        let link = read_regular_file(&dir.join("link"), 10).unwrap_err();
        assert!(matches!(link, FileError::Link), "{link}");
        // With no writer, a blocking open of the FIFO would never return.
        let fifo = read_regular_file(&dir.join("fifo"), 10).unwrap_err();
        assert_eq!(fifo.to_string(), "is a FIFO, not a regular file");
        let folder = read_regular_file(&dir.join("folder"), 10).unwrap_err();
        assert_eq!(folder.to_string(), "is a directory, not a regular file");

        symlink(dir.join("folder"), dir.join("linked-folder")).unwrap();
        assert_eq!(folders(&dir).unwrap(), ["folder"]);
        assert!(is_folder(&dir.join("folder")));
        assert!(!is_folder(&dir.join("linked-folder")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
