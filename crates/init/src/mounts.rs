//! Phase 1, mount: the kernel's pseudo filesystems and the writable tmpfs
//! directories, from one table so the order and options can be tested.

use std::io;
use std::path::Path;

use rustix::mount::MountFlags;

use crate::error::Error;
use crate::say;
use crate::system::System;

/// One filesystem to mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mount {
    pub fstype: &'static str,
    pub target: &'static str,
    pub flags: MountFlags,
    pub data: &'static str,
    /// Create the mount point first (it lives on an earlier tmpfs/devtmpfs).
    pub mkdir: bool,
    /// `EBUSY` means the kernel mounted it already (devtmpfs with DEVTMPFS_MOUNT).
    pub may_exist: bool,
}

const SAFE: MountFlags = MountFlags::NOSUID.union(MountFlags::NODEV);
const SAFE_NOEXEC: MountFlags = SAFE.union(MountFlags::NOEXEC);

/// Everything init mounts, in order.
pub const MOUNTS: &[Mount] = &[
    Mount {
        fstype: "proc",
        target: "/proc",
        flags: SAFE_NOEXEC,
        data: "",
        mkdir: false,
        may_exist: false,
    },
    Mount {
        fstype: "sysfs",
        target: "/sys",
        flags: SAFE_NOEXEC,
        data: "",
        mkdir: false,
        may_exist: false,
    },
    Mount {
        fstype: "devtmpfs",
        target: "/dev",
        flags: MountFlags::NOSUID.union(MountFlags::NOEXEC),
        data: "mode=0755",
        mkdir: false,
        may_exist: true,
    },
    Mount {
        fstype: "tmpfs",
        target: "/dev/shm",
        flags: SAFE_NOEXEC,
        data: "mode=1777",
        mkdir: true,
        may_exist: false,
    },
    // /tmp keeps exec: node addons and tools may unpack and run code there.
    Mount {
        fstype: "tmpfs",
        target: "/tmp",
        flags: SAFE,
        data: "mode=1777",
        mkdir: false,
        may_exist: false,
    },
    Mount {
        fstype: "tmpfs",
        target: "/run",
        flags: SAFE_NOEXEC,
        data: "mode=0755",
        mkdir: false,
        may_exist: false,
    },
];

/// Mounts every entry of [`MOUNTS`].
pub fn mount_all(sys: &mut impl System) -> Result<(), Error> {
    for m in MOUNTS {
        let fail = |source| Error::Mount {
            fstype: m.fstype,
            target: m.target,
            source,
        };
        if m.mkdir {
            match sys.mkdir(Path::new(m.target)) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(fail(e)),
                _ => {}
            }
        }
        match sys.mount(m) {
            Err(e)
                if m.may_exist
                    && e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error()) => {}
            Err(e) => return Err(fail(e)),
            Ok(()) => {}
        }
    }
    Ok(())
}

/// The shutdown half: detaches every writable filesystem init mounted, in
/// reverse order, after the final `sync`. A failure is a warning: the
/// machine is about to power off and the root is read-only anyway.
pub fn unmount_all(sys: &mut impl System) {
    for m in MOUNTS.iter().rev().filter(|m| m.fstype == "tmpfs") {
        if let Err(e) = sys.unmount(Path::new(m.target)) {
            say!("warning: cannot unmount {}: {e}", m.target);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::system::Recorder;

    #[test]
    fn mounts_in_order_and_tolerates_preexisting_devtmpfs() {
        let mut fake = Recorder {
            busy: vec!["/dev".into()],
            ..Recorder::default()
        };
        mount_all(&mut fake).unwrap();
        assert_eq!(
            fake.calls,
            [
                "mount proc /proc ",
                "mount sysfs /sys ",
                "mount devtmpfs /dev mode=0755",
                "mkdir /dev/shm",
                "mount tmpfs /dev/shm mode=1777",
                "mount tmpfs /tmp mode=1777",
                "mount tmpfs /run mode=0755",
            ]
        );
    }

    #[test]
    fn busy_proc_is_an_error() {
        let mut fake = Recorder {
            busy: vec!["/proc".into()],
            ..Recorder::default()
        };
        let err = mount_all(&mut fake).unwrap_err();
        assert_eq!(err.to_string(), "cannot mount proc on /proc");
        assert_eq!(fake.calls.len(), 1, "stops at the first failure");
    }

    #[test]
    fn shutdown_unmounts_the_tmpfs_mounts_in_reverse_order() {
        let mut fake = Recorder::default();
        unmount_all(&mut fake);
        assert_eq!(
            fake.calls,
            ["unmount /run", "unmount /tmp", "unmount /dev/shm"]
        );
    }

    #[test]
    fn tmpfs_mounts_are_nosuid_nodev() {
        for m in MOUNTS.iter().filter(|m| m.fstype == "tmpfs") {
            assert!(m.flags.contains(SAFE), "{}", m.target);
        }
    }
}
