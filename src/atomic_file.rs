//! Output files are written to a temporary file beside the target and renamed over it, so a reader
//! never sees a half-written file and an interrupted run leaves the old file intact.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, Result};

/// Writes `path` atomically with what `fill` produces. On any error (or interruption reported by
/// `fill`) the temporary file is removed and `path` is untouched.
pub fn write<F>(path: &Path, fill: F) -> Result<()>
where
    F: FnOnce(&mut dyn Write) -> std::io::Result<()>,
{
    write_with(path, |w| fill(w).map_err(|e| Error::io(path, e)))
}

/// Like [`write`], for producers that fail with library errors.
pub fn write_with<F>(path: &Path, fill: F) -> Result<()>
where
    F: FnOnce(&mut dyn Write) -> Result<()>,
{
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let prefix = format!(".{}.", path.file_name().and_then(|n| n.to_str()).unwrap_or("out"));
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    // Like any new file (the umask applies), not the private 0600 of temporary files.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let tmp = builder.tempfile_in(dir).map_err(|e| Error::io(dir, e))?;
    let _registered = Registered::new(tmp.path());
    let mut w = BufWriter::new(tmp);
    fill(&mut w)?;
    let tmp = w.into_inner().map_err(|e| Error::io(path, e.into_error()))?;
    tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// Temporary files being written, so that a process killed on purpose can remove them first.
static IN_PROGRESS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Removes every temporary file still being written; for an immediate exit (a second Ctrl-C),
/// which skips the destructors that normally clean up.
pub fn remove_in_progress() {
    if let Ok(paths) = IN_PROGRESS.lock() {
        for p in paths.iter() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Keeps a temporary path in [`IN_PROGRESS`] while it lives.
struct Registered(PathBuf);

impl Registered {
    fn new(path: &Path) -> Self {
        if let Ok(mut paths) = IN_PROGRESS.lock() {
            paths.push(path.to_path_buf());
        }
        Registered(path.to_path_buf())
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut paths) = IN_PROGRESS.lock() {
            paths.retain(|p| p != &self.0);
        }
    }
}
