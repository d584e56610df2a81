//! The download cache shared by all builds of one user.
//!
//! Entries are made safe for concurrent builds (parallel tests, two
//! terminals) with two rules:
//!
//! - a file appears under its final name only when it is complete: it is
//!   written to a temporary file in the same directory, synced and renamed
//!   ([`AtomicFile`], [`write_atomic`]);
//! - whoever creates an entry holds its [`EntryLock`] (an exclusive
//!   `flock` on a `<name>.lock` file beside it) and checks again whether the
//!   entry exists after taking the lock, so an entry is produced once.
//!
//! A crash leaves at most a stray temporary file (`.tmp*`) behind, never a
//! truncated entry.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// What can go wrong with the cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(
        "no cache directory: none of NODEOS_CACHE_DIR, XDG_CACHE_HOME or HOME is set; \
         set NODEOS_CACHE_DIR to a writable directory"
    )]
    NoCacheDir,
    #[error("cache entry {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl CacheError {
    fn io(path: &Path) -> impl FnOnce(io::Error) -> CacheError + '_ {
        move |source| CacheError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The cache directory: `$NODEOS_CACHE_DIR`, else `$XDG_CACHE_HOME/nodeos`,
/// else `$HOME/.cache/nodeos`. It is not created here.
pub fn cache_dir() -> Result<PathBuf, CacheError> {
    nodeos_manifest::cache_dir().ok_or(CacheError::NoCacheDir)
}

/// An exclusive, cross-process lock on one cache entry; released on drop.
#[derive(Debug)]
pub struct EntryLock {
    _file: File,
}

/// Takes the lock for the entry `entry` (a file or directory path, which
/// need not exist), blocking until other processes release it. The lock
/// file is `<entry>.lock`; its parent directory is created if needed.
pub fn lock(entry: &Path) -> Result<EntryLock, CacheError> {
    let mut name = entry.as_os_str().to_owned();
    name.push(".lock");
    let path = PathBuf::from(name);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(CacheError::io(parent))?;
    }
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(CacheError::io(&path))?;
    file.lock().map_err(CacheError::io(&path))?;
    Ok(EntryLock { _file: file })
}

/// A file being written into the cache: it gets its final name only in
/// [`AtomicFile::commit`]; dropped without committing, it is deleted.
#[derive(Debug)]
pub struct AtomicFile {
    temp: tempfile::NamedTempFile,
    dest: PathBuf,
}

impl AtomicFile {
    /// Starts writing `dest`, creating its parent directory if needed.
    pub fn create(dest: &Path) -> Result<Self, CacheError> {
        let dir = parent_of(dest);
        fs::create_dir_all(dir).map_err(CacheError::io(dir))?;
        let mut builder = tempfile::Builder::new();
        builder.prefix(".tmp");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(fs::Permissions::from_mode(0o644));
        }
        let temp = builder.tempfile_in(dir).map_err(CacheError::io(dir))?;
        Ok(AtomicFile {
            temp,
            dest: dest.to_path_buf(),
        })
    }

    /// Where the data is being written until the commit (to hand it to
    /// another program, such as `strip`).
    pub fn temp_path(&self) -> &Path {
        self.temp.path()
    }

    /// The open temporary file.
    pub fn file(&self) -> &File {
        self.temp.as_file()
    }

    /// Syncs the data and renames the file to its final name, replacing any
    /// file there.
    pub fn commit(self) -> Result<PathBuf, CacheError> {
        let AtomicFile { temp, dest } = self;
        temp.as_file()
            .sync_all()
            .map_err(CacheError::io(temp.path()))?;
        temp.persist(&dest)
            .map_err(|err| CacheError::io(&dest)(err.error))?;
        // Make the rename itself durable; failing to is not worth an error.
        if let Ok(dir) = File::open(parent_of(&dest)) {
            let _ = dir.sync_all();
        }
        Ok(dest)
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.temp.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.temp.flush()
    }
}

/// Writes `contents` to `dest` atomically (see [`AtomicFile`]).
pub fn write_atomic(dest: &Path, contents: &[u8]) -> Result<(), CacheError> {
    let mut file = AtomicFile::create(dest)?;
    file.write_all(contents)
        .map_err(CacheError::io(file.temp_path()))?;
    file.commit()?;
    Ok(())
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    #[test]
    fn atomic_file_appears_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("sub/entry");
        let mut file = AtomicFile::create(&dest).unwrap();
        file.write_all(b"half").unwrap();
        assert!(!dest.exists());
        drop(file);
        assert!(!dest.exists());
        assert_eq!(fs::read_dir(dir.path().join("sub")).unwrap().count(), 0);

        write_atomic(&dest, b"whole").unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"whole");
        write_atomic(&dest, b"replaced").unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"replaced");
    }

    #[test]
    fn lock_serialises_creators() {
        let dir = tempfile::tempdir().unwrap();
        let entry = dir.path().join("entry");
        let created = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let start = Arc::new(Barrier::new(4));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (entry, created, start) = (entry.clone(), created.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    // Each thread opens its own lock file description, as
                    // separate processes would.
                    let _lock = lock(&entry).unwrap();
                    if !entry.exists() {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        write_atomic(&entry, b"x").unwrap();
                        created.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(created.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
