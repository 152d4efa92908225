//! Durable file writes shared by the folder-based adapters: a file appears under its final name
//! complete or not at all, and survives a power cut once the call returns.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` via a hidden temporary file in the same folder: write, fsync,
/// rename, fsync the folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().ok_or_else(|| std::io::Error::other("path has no folder"))?;
    let name = path.file_name().ok_or_else(|| std::io::Error::other("path has no file name"))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// Moves a file between folders of one filesystem and makes both folder entries durable.
pub fn move_durably(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::rename(from, to)?;
    if let Some(d) = to.parent() {
        sync_dir(d)?;
    }
    match from.parent() {
        Some(d) => sync_dir(d),
        None => Ok(()),
    }
}

/// fsyncs a folder so that renames and new entries in it are durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
