//! The files of a run's folder: atomic writes that leave nothing behind when
//! the process is killed, the advisory lock that keeps a second writer out,
//! and the removal of what a killed writer may have left.
//!
//! An atomic write ([`write_atomic_verified`]) writes into an unnamed file in
//! the target's directory (Linux `O_TMPFILE`; it vanishes if the process
//! dies), syncs it, reads it back and checks it, then links it as
//! `.NAME.PID.flowtrain-tmp` and renames that over `NAME`, and syncs the
//! directory. Killed at any moment, `NAME` holds the old or the new content;
//! only in the microseconds between the link and the rename can the
//! temporary name be left, and [`remove_leftovers`] (run when a run takes
//! its folder's lock) deletes it. Where unnamed files or their linking are
//! not available (no `O_TMPFILE`, no `/proc`), the file is written under
//! the temporary name directly.

use crate::error::{Result, TrainError};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The name of the lock file in a run's folder.
pub const LOCK_FILE: &str = ".lock";

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// The suffix of this module's temporary files.
const TEMPORARY_SUFFIX: &str = ".flowtrain-tmp";

/// `.NAME.PID.flowtrain-tmp` beside `path` (the process id keeps writers of
/// one path in different processes apart).
fn temporary_name(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| TrainError::Config(format!("{} is not a file path", path.display())))?;
    Ok(parent_dir(path).join(format!(
        ".{}.{}{TEMPORARY_SUFFIX}",
        name.to_string_lossy(),
        std::process::id()
    )))
}

/// A new file at `tmp` for writing and reading back.
fn named_file(tmp: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)
        .map_err(|e| TrainError::io(tmp, e))
}

/// An unnamed file in `dir`, if the filesystem supports it.
#[cfg(target_os = "linux")]
fn unnamed_file(dir: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o644)
        .open(dir)
        .ok()
}

#[cfg(not(target_os = "linux"))]
fn unnamed_file(_dir: &Path) -> Option<File> {
    None
}

/// Gives the unnamed `file` the name `to` (which must not exist).
#[cfg(target_os = "linux")]
fn link_unnamed(file: &File, to: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::io::AsRawFd;
    let from = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    let to = CString::new(to.as_os_str().as_bytes())?;
    // SAFETY: both paths are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn link_unnamed(_file: &File, _to: &Path) -> std::io::Result<()> {
    Err(std::io::Error::other("unnamed files are Linux-only"))
}

/// Writes `bytes` to `path` atomically (see the module docs).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_verified(path, bytes, |_| Ok(()))
}

/// Writes `bytes` to `path` atomically, replacing it only once the written
/// file has been read back, found equal to `bytes` and accepted by `verify`.
pub fn write_atomic_verified(
    path: &Path,
    bytes: &[u8],
    verify: impl FnOnce(&[u8]) -> Result<()>,
) -> Result<()> {
    let dir = parent_dir(path);
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let tmp = temporary_name(path)?;
    let result = write_checked(path, &tmp, bytes, verify);
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn write_checked(
    path: &Path,
    tmp: &Path,
    bytes: &[u8],
    verify: impl FnOnce(&[u8]) -> Result<()>,
) -> Result<()> {
    let dir = parent_dir(path);
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e: std::io::Error| TrainError::io(&p, e)
    };
    let (mut file, named) = match unnamed_file(dir) {
        Some(file) => (file, false),
        None => (named_file(tmp)?, true),
    };
    file.write_all(bytes)
        .and_then(|_| file.sync_all())
        .map_err(io(path))?;
    let mut back = Vec::with_capacity(bytes.len());
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut back))
        .map_err(io(path))?;
    if back != bytes {
        return Err(TrainError::Config(format!(
            "{}: the written file reads back differently ({} of {} bytes); the previous file is kept",
            path.display(),
            back.len(),
            bytes.len()
        )));
    }
    verify(&back)?;
    drop(back);
    if !named {
        let _ = std::fs::remove_file(tmp);
        if link_unnamed(&file, tmp).is_err() {
            // no /proc to link through: write the checked bytes under the name
            let mut again = named_file(tmp)?;
            again
                .write_all(bytes)
                .and_then(|_| again.sync_all())
                .map_err(io(tmp))?;
        }
    }
    std::fs::rename(tmp, path).map_err(io(path))?;
    // make the rename itself durable
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Deletes the temporary files that interrupted writes of this module left
/// in `dir` (`.*.flowtrain-tmp`), and, in a folder that holds a run (a
/// checkpoint or `config.toml`), those of older versions (`.tmpXXXXXX`);
/// returns them. Nothing else is touched.
pub fn remove_leftovers(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(TrainError::io(dir, e)),
    };
    let holds_run =
        dir.join(crate::train::CHECKPOINT).is_file() || dir.join("config.toml").is_file();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = name.starts_with('.') && name.ends_with(TEMPORARY_SUFFIX);
        let older = holds_run
            && name.len() == 10
            && name.starts_with(".tmp")
            && name[4..].chars().all(|c| c.is_ascii_alphanumeric());
        if (ours || older) && entry.path().is_file() {
            std::fs::remove_file(entry.path()).map_err(|e| TrainError::io(&entry.path(), e))?;
            removed.push(entry.path());
        }
    }
    Ok(removed)
}

/// The exclusive, advisory lock of a run's folder, held while a run writes
/// into it (`train`, `--resume`). A second writer gets an error naming the
/// folder and the process holding it; the lock ends with the process, so a
/// killed run never leaves its folder locked.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Takes the lock of `dir` (created if needed), then removes the
    /// leftovers of interrupted writes.
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| TrainError::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(TrainError::Config(format!(
                    "{} is in use by another run (process {}); wait for it to end or choose another --out",
                    dir.display(),
                    holder.trim()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(TrainError::io(&path, e)),
        }
        file.set_len(0)
            .and_then(|_| file.write_all(std::process::id().to_string().as_bytes()))
            .map_err(|e| TrainError::io(&path, e))?;
        remove_leftovers(dir)?;
        Ok(RunLock { _file: file })
    }
}
