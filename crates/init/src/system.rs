//! The system calls the boot phases make, behind one trait so the phases
//! can be unit-tested without root or a VM: [`Linux`] makes the real calls,
//! [`Recorder`] records them and answers reads from an in-memory file table
//! (youki's `Syscall` trait and its test fake are the model).
//!
//! The DHCP client and the process supervision talk to the kernel directly
//! (sockets, `wait4`, signals); their decisions are pure state machines
//! ([`crate::dhcp`], [`crate::supervise::Supervisor`]) tested on their own.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use rustix::mount::MountFlags;

use crate::mounts::Mount;

/// What the boot phases ask of the kernel.
pub trait System {
    fn mkdir(&mut self, path: &Path) -> io::Result<()>;
    fn mount(&mut self, m: &Mount) -> io::Result<()>;
    /// Mounts `source` (a block device, or a directory with `MS_BIND`) of
    /// type `fstype` on `target`.
    fn mount_fs(
        &mut self,
        source: &Path,
        target: &Path,
        fstype: &str,
        flags: MountFlags,
        data: &str,
    ) -> io::Result<()>;
    /// Detaches the filesystem at `target` (lazily: busy is not an error).
    fn unmount(&mut self, target: &Path) -> io::Result<()>;
    /// Reads at most `limit` bytes from the start of `path`.
    fn read(&mut self, path: &Path, limit: usize) -> io::Result<Vec<u8>>;
    /// Creates or truncates `path` with `contents`, mode 0644.
    fn write(&mut self, path: &Path, contents: &[u8]) -> io::Result<()>;
    /// The names in directory `path`, sorted.
    fn list(&mut self, path: &Path) -> io::Result<Vec<String>>;
    fn set_hostname(&mut self, name: &str) -> io::Result<()>;
    /// Whether the kernel's random number generator is initialised
    /// (`getrandom(GRND_NONBLOCK)` does not fail with `EAGAIN`).
    fn entropy_ready(&mut self) -> bool;
    /// Blocks until the random number generator is initialised.
    fn wait_for_entropy(&mut self) -> io::Result<()>;
    /// Gives `path` to user `uid` and group `gid`.
    fn chown(&mut self, path: &Path, uid: u32, gid: u32) -> io::Result<()>;
    /// Size and free space (available to unprivileged users), in bytes,
    /// of the filesystem holding `path`.
    fn fs_space(&mut self, path: &Path) -> io::Result<(u64, u64)>;
}

/// The real kernel.
pub struct Linux;

impl System for Linux {
    fn mkdir(&mut self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }

    fn mount(&mut self, m: &Mount) -> io::Result<()> {
        // The pseudo filesystems have no device: their type is the source.
        self.mount_fs(
            Path::new(m.fstype),
            Path::new(m.target),
            m.fstype,
            m.flags,
            m.data,
        )
    }

    fn mount_fs(
        &mut self,
        source: &Path,
        target: &Path,
        fstype: &str,
        flags: MountFlags,
        data: &str,
    ) -> io::Result<()> {
        let data = std::ffi::CString::new(data).map_err(io::Error::other)?;
        rustix::mount::mount(source, target, fstype, flags, data.as_c_str())?;
        Ok(())
    }

    fn unmount(&mut self, target: &Path) -> io::Result<()> {
        rustix::mount::unmount(target, rustix::mount::UnmountFlags::DETACH)?;
        Ok(())
    }

    fn read(&mut self, path: &Path, limit: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        std::fs::File::open(path)?
            .take(limit as u64)
            .read_to_end(&mut out)?;
        Ok(out)
    }

    fn write(&mut self, path: &Path, contents: &[u8]) -> io::Result<()> {
        std::fs::write(path, contents)
    }

    fn list(&mut self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = std::fs::read_dir(path)?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect::<Vec<_>>();
        names.sort();
        Ok(names)
    }

    fn set_hostname(&mut self, name: &str) -> io::Result<()> {
        rustix::system::sethostname(name.as_bytes())?;
        Ok(())
    }

    fn entropy_ready(&mut self) -> bool {
        let mut byte = [0u8; 1];
        !matches!(
            rustix::rand::getrandom(&mut byte, rustix::rand::GetRandomFlags::NONBLOCK),
            Err(rustix::io::Errno::AGAIN)
        )
    }

    fn wait_for_entropy(&mut self) -> io::Result<()> {
        let mut byte = [0u8; 1];
        rustix::rand::getrandom(&mut byte, rustix::rand::GetRandomFlags::empty())?;
        Ok(())
    }

    fn chown(&mut self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        use rustix::fs::{Gid, Uid};
        rustix::fs::chown(path, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))?;
        Ok(())
    }

    fn fs_space(&mut self, path: &Path) -> io::Result<(u64, u64)> {
        let st = rustix::fs::statvfs(path)?;
        Ok((st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize))
    }
}

/// A fake [`System`] for tests: every call is appended to `calls` as one
/// readable line; reads are answered from `files`; writes land in `files`.
/// A path listed in `fail` makes the call on it fail with `EIO`, and a
/// mount target in `busy` fails with `EBUSY`.
#[derive(Debug, Default)]
pub struct Recorder {
    pub calls: Vec<String>,
    pub files: BTreeMap<PathBuf, Vec<u8>>,
    pub fail: Vec<PathBuf>,
    pub busy: Vec<PathBuf>,
    /// What [`System::entropy_ready`] answers.
    pub entropy: bool,
}

impl Recorder {
    pub fn with_file(mut self, path: &str, contents: impl AsRef<[u8]>) -> Self {
        self.files
            .insert(PathBuf::from(path), contents.as_ref().to_vec());
        self
    }

    /// The text written to `path`, if any.
    pub fn text(&self, path: &str) -> Option<String> {
        self.files
            .get(Path::new(path))
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

    fn check(&self, path: &Path) -> io::Result<()> {
        if self.fail.iter().any(|p| p == path) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(())
    }
}

impl System for Recorder {
    fn mkdir(&mut self, path: &Path) -> io::Result<()> {
        self.calls.push(format!("mkdir {}", path.display()));
        self.check(path)
    }

    fn mount(&mut self, m: &Mount) -> io::Result<()> {
        self.calls
            .push(format!("mount {} {} {}", m.fstype, m.target, m.data));
        if self.busy.iter().any(|p| p == Path::new(m.target)) {
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        }
        self.check(Path::new(m.target))
    }

    fn mount_fs(
        &mut self,
        source: &Path,
        target: &Path,
        fstype: &str,
        flags: MountFlags,
        data: &str,
    ) -> io::Result<()> {
        self.calls.push(format!(
            "mount {fstype} {} {} {data} {:?}",
            source.display(),
            target.display(),
            flags
        ));
        if self.busy.iter().any(|p| p == target) {
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        }
        self.check(source)?;
        self.check(target)
    }

    fn unmount(&mut self, target: &Path) -> io::Result<()> {
        self.calls.push(format!("unmount {}", target.display()));
        self.check(target)
    }

    fn read(&mut self, path: &Path, limit: usize) -> io::Result<Vec<u8>> {
        self.calls.push(format!("read {}", path.display()));
        self.check(path)?;
        let bytes = self
            .files
            .get(path)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        Ok(bytes[..bytes.len().min(limit)].to_vec())
    }

    fn write(&mut self, path: &Path, contents: &[u8]) -> io::Result<()> {
        self.calls.push(format!("write {}", path.display()));
        self.check(path)?;
        self.files.insert(path.to_owned(), contents.to_vec());
        Ok(())
    }

    fn list(&mut self, path: &Path) -> io::Result<Vec<String>> {
        self.calls.push(format!("list {}", path.display()));
        self.check(path)?;
        let mut names: Vec<String> = self
            .files
            .keys()
            .filter_map(|p| p.strip_prefix(path).ok())
            .filter_map(|rest| rest.iter().next())
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        names.dedup();
        if names.is_empty() {
            return Err(io::ErrorKind::NotFound.into());
        }
        Ok(names)
    }

    fn set_hostname(&mut self, name: &str) -> io::Result<()> {
        self.calls.push(format!("hostname {name}"));
        Ok(())
    }

    fn entropy_ready(&mut self) -> bool {
        self.calls.push("entropy?".into());
        self.entropy
    }

    fn wait_for_entropy(&mut self) -> io::Result<()> {
        self.calls.push("wait for entropy".into());
        self.entropy = true;
        Ok(())
    }

    fn chown(&mut self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        self.calls
            .push(format!("chown {} {uid}:{gid}", path.display()));
        self.check(path)
    }

    /// Always 64 MiB, 48 MiB free.
    fn fs_space(&mut self, path: &Path) -> io::Result<(u64, u64)> {
        self.calls.push(format!("space {}", path.display()));
        self.check(path)?;
        Ok((64 << 20, 48 << 20))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorder_lists_direct_children_sorted() {
        let mut r = Recorder::default()
            .with_file("/sys/block/vda/size", "1")
            .with_file("/sys/block/vdb/size", "2")
            .with_file("/sys/block/vdb/ro", "0");
        assert_eq!(r.list(Path::new("/sys/block")).unwrap(), ["vda", "vdb"]);
        assert!(r.list(Path::new("/nope")).is_err());
        assert_eq!(r.read(Path::new("/sys/block/vdb/size"), 10).unwrap(), b"2");
        assert_eq!(r.read(Path::new("/sys/block/vdb/size"), 0).unwrap(), b"");
    }

    #[test]
    fn linux_reads_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello world").unwrap();
        assert_eq!(Linux.read(&path, 5).unwrap(), b"hello");
        assert_eq!(Linux.list(dir.path()).unwrap(), ["f"]);
    }
}
