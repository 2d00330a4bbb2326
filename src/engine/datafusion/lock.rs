//! One writer per warehouse, many readers. A process that builds (`seed`, `run`, `build`,
//! `test`, `watch`) holds an advisory lock on `<warehouse>/.kiln-lock` (`flock`, released by the
//! kernel when the process ends, however it ends); readers (`show`, `compile`) take no lock and
//! never delete anything. Who holds the lock is written into the file, so a second writer can
//! say which process it waits for.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

const LOCK_FILE: &str = ".kiln-lock";

/// The writer's lock; released when the last of its handles is dropped (or when the process
/// ends). A process that holds it gets another handle when it asks again (`kiln watch` opens
/// the warehouse anew when sources change).
#[derive(Debug, Clone)]
pub struct WriterLock {
    _file: Arc<File>,
}

/// The locks this process holds, by warehouse.
static HELD: Mutex<Vec<(PathBuf, Weak<File>)>> = Mutex::new(Vec::new());

/// Another process holds the lock.
#[derive(Debug, Clone)]
pub struct Busy {
    /// `pid 123, kiln build, since 2026-11-30T01:02:03Z`, as the holder wrote it.
    pub holder: String,
    pub path: PathBuf,
}

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the warehouse {} is being written by another kiln process ({})", self.path.display(), self.holder)
    }
}

impl WriterLock {
    /// Takes the lock of the warehouse at `root` for `command` (e.g. `kiln build`), or says who
    /// holds it.
    pub fn try_acquire(root: &Path, command: &str) -> std::io::Result<Result<WriterLock, Busy>> {
        std::fs::create_dir_all(root)?;
        let path = root.join(LOCK_FILE);
        let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
        held.retain(|(_, f)| f.strong_count() > 0);
        if let Some(file) = held.iter().find(|(p, _)| *p == path).and_then(|(_, f)| f.upgrade()) {
            return Ok(Ok(WriterLock { _file: file }));
        }
        let mut file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        if !try_lock(&file)? {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = if holder.trim().is_empty() { "unknown process".to_string() } else { holder.trim().to_string() };
            return Ok(Err(Busy { holder, path: root.to_path_buf() }));
        }
        let since = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "pid {}, {command}, since {since}", std::process::id())?;
        file.flush()?;
        let file = Arc::new(file);
        held.push((path, Arc::downgrade(&file)));
        Ok(Ok(WriterLock { _file: file }))
    }

    /// [`WriterLock::try_acquire`], retrying until `timeout`; `waiting` is told once whom it
    /// waits for.
    pub fn acquire(root: &Path, command: &str, timeout: Duration, waiting: &dyn Fn(&Busy)) -> std::io::Result<Result<WriterLock, Busy>> {
        let start = Instant::now();
        let mut told = false;
        loop {
            match Self::try_acquire(root, command)? {
                Ok(lock) => return Ok(Ok(lock)),
                Err(busy) if start.elapsed() >= timeout => return Ok(Err(busy)),
                Err(busy) => {
                    if !told {
                        waiting(&busy);
                        told = true;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }
}

#[cfg(unix)]
fn try_lock(file: &File) -> std::io::Result<bool> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a file descriptor this `File` owns; no memory is shared.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) { Ok(false) } else { Err(err) }
}

#[cfg(not(unix))]
fn try_lock(_file: &File) -> std::io::Result<bool> {
    // No advisory lock here: one writer at a time is up to the user (docs/engine.md).
    Ok(true)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn this_process_shares_its_lock_and_releases_it_with_the_last_handle() {
        let root = tempfile::tempdir().unwrap();
        let first = WriterLock::try_acquire(root.path(), "kiln watch").unwrap().expect("free");
        let again = WriterLock::try_acquire(root.path(), "kiln watch").unwrap().expect("shared within the process");
        let text = std::fs::read_to_string(root.path().join(LOCK_FILE)).unwrap();
        assert!(text.starts_with(&format!("pid {}, kiln watch, since ", std::process::id())), "{text}");
        drop(first);
        drop(again);
        assert!(HELD.lock().unwrap().iter().all(|(_, f)| f.strong_count() == 0), "released with the last handle");
    }
}
