//! The `logfile` as a tracing writer that SIGHUP can reopen, so logrotate can move the file away
//! and the pooler starts a new one, as PgBouncer does. Nothing else writes here.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

/// An append-mode log file behind a lock (log lines are written whole).
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    /// The open file; replaced by [`LogFile::reopen`].
    file: Mutex<File>,
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl LogFile {
    /// Opens (creating) `path` for appending.
    pub fn open(path: &Path) -> io::Result<Arc<LogFile>> {
        Ok(Arc::new(LogFile {
            path: path.to_path_buf(),
            file: Mutex::new(open(path)?),
        }))
    }

    /// Opens the path again; later lines go to the new file. On failure the old file stays.
    pub fn reopen(&self) -> io::Result<()> {
        let f = open(&self.path)?;
        *self.file.lock() = f;
        Ok(())
    }
}

impl io::Write for &LogFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.lock().write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.lock().write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.lock().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reopen_follows_a_rotated_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pooler.log");
        let log = LogFile::open(&path).unwrap();
        (&*log).write_all(b"one\n").unwrap();
        std::fs::rename(&path, dir.path().join("pooler.log.1")).unwrap();
        (&*log).write_all(b"two\n").unwrap();
        log.reopen().unwrap();
        (&*log).write_all(b"three\n").unwrap();
        let rotated = std::fs::read_to_string(dir.path().join("pooler.log.1")).unwrap();
        assert_eq!(rotated, "one\ntwo\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
    }
}
