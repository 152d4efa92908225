//! Backup and restore of a data directory as one file: a consistent SQLite snapshot (`VACUUM
//! INTO`, one read transaction, so it is safe while the hub runs) that also carries the key and
//! PKI files, because records are useless without the subject key and the chain unverifiable
//! without the checkpoint key. Both directions verify the audit chain of what they wrote.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::sqlite::{db_path, open_reader, verify_with};
use super::StoreError;
use crate::ledger::keys::{self, load_public_key};
use crate::ledger::{ChainBroken, ChainReport};

const FORMAT: &str = "conghua-hub-backup-v1";
/// Folders of the data directory that travel with the database.
const CARRIED: [&str; 2] = ["keys", "pki"];

/// Backup and restore failures.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Refusing to overwrite.
    #[error("{0} already exists")]
    Exists(PathBuf),
    /// Restore needs an empty data directory.
    #[error("{0} is not empty: restore only into an empty data directory")]
    NotEmpty(PathBuf),
    /// The file is not a hub backup.
    #[error("{0} is not a hub backup")]
    NotABackup(PathBuf),
    /// Database or files.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The checkpoint key that came with the data cannot be read.
    #[error(transparent)]
    Key(#[from] keys::KeyError),
}

impl From<rusqlite::Error> for BackupError {
    fn from(e: rusqlite::Error) -> Self {
        BackupError::Store(e.into())
    }
}

impl From<std::io::Error> for BackupError {
    fn from(e: std::io::Error) -> Self {
        BackupError::Store(e.into())
    }
}

/// What a backup or restore produced.
#[derive(Debug)]
pub struct Report {
    /// Size of the backup file or restored database.
    pub bytes: u64,
    /// Key and PKI files carried.
    pub files: usize,
    /// The audit chain of the copy.
    pub chain: Result<ChainReport, ChainBroken>,
}

/// Progress of the verification step: (entries checked, entries in all).
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

fn files_under(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files_under(root, &path, out)?;
        } else if path.extension().is_none_or(|e| e != "tmp") {
            out.push(path.strip_prefix(root).map(Path::to_path_buf).unwrap_or(path));
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn verify_copy(
    conn: &Connection,
    key_file: &Path,
    progress: Progress<'_>,
) -> Result<Result<ChainReport, ChainBroken>, BackupError> {
    let key = load_public_key(key_file)?;
    let total: i64 = conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM audit", [], |r| r.get(0))?;
    Ok(verify_with(conn, key, &mut |seq| progress(seq, total as u64))?)
}

/// Writes a consistent snapshot of `data` to `out` (mode 0600: it holds keys).
pub fn backup(data: &Path, out: &Path, progress: Progress<'_>) -> Result<Report, BackupError> {
    if out.exists() {
        return Err(BackupError::Exists(out.to_path_buf()));
    }
    let src_path = db_path(data);
    if !src_path.exists() {
        return Err(BackupError::Store(StoreError::Io(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} does not exist", src_path.display()),
        ))));
    }
    let tmp = out.with_extension("partial");
    let _ = std::fs::remove_file(&tmp);
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Created first with 0600 so the keys never sit in a world-readable file.
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        std::fs::remove_file(&tmp)?;
    }
    let src = open_reader(&src_path)?;
    src.execute("VACUUM INTO ?1", params![tmp.to_string_lossy()])?;
    drop(src);
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    }
    let dst = Connection::open(&tmp)?;
    dst.execute_batch(
        "CREATE TABLE backup_meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
         CREATE TABLE backup_files (path TEXT PRIMARY KEY, mode INTEGER NOT NULL, contents BLOB NOT NULL);",
    )?;
    let mut files = Vec::new();
    for dir in CARRIED {
        files_under(data, &data.join(dir), &mut files)?;
    }
    for rel in &files {
        use std::os::unix::fs::PermissionsExt;
        let full = data.join(rel);
        let mode = std::fs::metadata(&full)?.permissions().mode() & 0o777;
        dst.execute(
            "INSERT INTO backup_files (path, mode, contents) VALUES (?1, ?2, ?3)",
            params![rel.to_string_lossy(), mode, std::fs::read(&full)?],
        )?;
    }
    let now = chrono::Utc::now().to_rfc3339();
    dst.execute("INSERT INTO backup_meta (k, v) VALUES ('format', ?1), ('created_at', ?2)", params![FORMAT, now])?;
    let chain = verify_copy(&dst, &keys::dir(data).join("audit-signing.pub"), progress)?;
    if let Ok(head) = &chain {
        // The manifest names the chain head, so a restore can be checked against it.
        dst.execute(
            "INSERT INTO backup_meta (k, v) VALUES ('audit_head_seq', ?1), ('audit_head_digest', ?2)",
            params![head.head_seq.to_string(), head.head_digest],
        )?;
    }
    dst.execute_batch("PRAGMA journal_mode = DELETE")?;
    drop(dst);
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, out)?;
    sync_dir(out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))?;
    Ok(Report { bytes: std::fs::metadata(out)?.len(), files: files.len(), chain })
}

/// Restores a backup into an empty (or new) data directory.
pub fn restore(from: &Path, data: &Path, progress: Progress<'_>) -> Result<Report, BackupError> {
    if data.exists() && std::fs::read_dir(data)?.next().is_some() {
        return Err(BackupError::NotEmpty(data.to_path_buf()));
    }
    let src = Connection::open_with_flags(from, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|_| BackupError::NotABackup(from.to_path_buf()))?;
    let format: Option<String> =
        src.query_row("SELECT v FROM backup_meta WHERE k = 'format'", [], |r| r.get(0)).optional().unwrap_or(None);
    if format.as_deref() != Some(FORMAT) {
        return Err(BackupError::NotABackup(from.to_path_buf()));
    }
    std::fs::create_dir_all(data)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o700))?;
    }
    let mut files = 0;
    {
        let mut stmt = src.prepare("SELECT path, mode, contents FROM backup_files ORDER BY path")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let (rel, mode, contents): (String, u32, Vec<u8>) = (row.get(0)?, row.get(1)?, row.get(2)?);
            let rel = Path::new(&rel);
            // Only plain relative paths under the carried folders: a crafted backup must not
            // write outside the data directory.
            let safe = rel.components().all(|c| matches!(c, std::path::Component::Normal(_)))
                && rel.components().next().is_some_and(|c| CARRIED.iter().any(|d| c.as_os_str() == *d));
            if !safe {
                return Err(BackupError::NotABackup(from.to_path_buf()));
            }
            let target = data.join(rel);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let mut f =
                    std::fs::OpenOptions::new().write(true).create_new(true).mode(mode & 0o777).open(&target)?;
                f.write_all(&contents)?;
                f.sync_all()?;
            }
            files += 1;
        }
    }
    let db = db_path(data);
    let tmp = db.with_extension("partial");
    src.execute("VACUUM INTO ?1", params![tmp.to_string_lossy()])?;
    drop(src);
    let conn = Connection::open(&tmp)?;
    conn.execute_batch("DROP TABLE backup_files; DROP TABLE backup_meta; VACUUM;")?;
    let chain = verify_copy(&conn, &keys::dir(data).join("audit-signing.pub"), progress)?;
    drop(conn);
    std::fs::File::open(&tmp)?.sync_all()?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    }
    std::fs::rename(&tmp, &db)?;
    sync_dir(data)?;
    Ok(Report { bytes: std::fs::metadata(&db)?.len(), files, chain })
}
