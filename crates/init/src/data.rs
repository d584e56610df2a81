//! Phase 6a, data: the persistent volume at `/data` (after the network,
//! before privileges).
//!
//! `nodeos run` attaches an ext4 volume (label `nodeos-data`) and checks
//! it with `e2fsck -p` before the boot; the result comes in the run
//! config. Init checks it again itself, from its superblock (the magic,
//! the "errors" state, the superblock checksum when `metadata_csum` is on),
//! which also covers disks booted without `nodeos run`. A volume that
//! failed either check, or that cannot be mounted, stops the boot unless
//! the settings say `"onCheckFailure": "start"`: the app is not started
//! and the VM powers off with one console line saying why and how to fix
//! it ([`Error::Data`]).
//!
//! The volume is mounted `nosuid,nodev` with `errors=remount-ro`: should
//! the kernel find the filesystem damaged while the app runs, writes fail
//! with `EROFS` instead of spreading the damage, and the next boot's check
//! repairs it. Its root directory is given to the app's user at every boot
//! (a root recreated by `e2fsck -fy` belongs to root). With no ext4 disk,
//! `/data` stays the image's empty read-only directory. At shutdown,
//! [`unmount`] detaches it after the final sync, so it is clean for the
//! next check.

use std::path::Path;

use nodeos_manifest::settings::{CheckStatus, DataCheck, DataSettings, OnCheckFailure};
use nodeos_manifest::{APP_GID, APP_UID, DATA_DIR, DATA_LABEL};
use rustix::mount::MountFlags;

use crate::disks::{self, Content, Disk};
use crate::error::Error;
use crate::say;
use crate::system::System;

/// Flags of the `/data` mount.
pub const MOUNT_FLAGS: MountFlags = MountFlags::NOSUID.union(MountFlags::NODEV);
/// Options of the `/data` mount.
pub const MOUNT_OPTIONS: &str = "errors=remount-ro";

/// Finds, checks and mounts the data volume (see the module docs). `host`
/// is the result of `nodeos run`'s check, from the run config (phase 4).
pub fn setup(
    sys: &mut impl System,
    settings: &DataSettings,
    host: Option<&DataCheck>,
) -> Result<(), Error> {
    let disks = disks::scan(sys);
    let Some(disk) = find(&disks) else {
        say!(
            "data: no data volume attached: /data is not persistent (an empty read-only directory)"
        );
        return Ok(());
    };
    let dev = disk.dev.display().to_string();
    let head = sys.read(&disk.dev, disks::HEAD_LEN).unwrap_or_default();
    let problems = problems(host, &head);
    match host {
        Some(DataCheck {
            status: CheckStatus::Repaired,
            summary,
        }) => say!("data: e2fsck on the host repaired {dev}: {summary}"),
        None => say!(
            "data: {dev} was not checked on the host (not booted by `nodeos run`): checking its superblock only"
        ),
        _ => {}
    }
    let policy = settings.on_check_failure;
    if !problems.is_empty() {
        let problem = format!("failed its check: {}", problems.join("; "));
        refuse_or_warn(policy, &dev, problem)?;
    }
    if let Err(e) = sys.mount_fs(
        &disk.dev,
        Path::new(DATA_DIR),
        "ext4",
        MOUNT_FLAGS,
        MOUNT_OPTIONS,
    ) {
        refuse_or_warn(
            policy,
            &dev,
            format!("cannot be mounted on {DATA_DIR} ({e})"),
        )?;
        say!("data: /data is not persistent (an empty read-only directory)");
        return Ok(());
    }
    if let Err(e) = sys.chown(Path::new(DATA_DIR), APP_UID, APP_GID) {
        refuse_or_warn(
            policy,
            &dev,
            format!("cannot give {DATA_DIR} to the app's user ({e})"),
        )?;
    }
    match sys.fs_space(Path::new(DATA_DIR)) {
        Ok((total, free)) => say!(
            "data volume {dev} mounted on {DATA_DIR} ({} MiB, {} MiB free)",
            total >> 20,
            free >> 20
        ),
        Err(_) => say!("data volume {dev} mounted on {DATA_DIR}"),
    }
    Ok(())
}

/// With `stop`, the error that ends the boot; with `start`, a warning.
fn refuse_or_warn(policy: OnCheckFailure, dev: &str, problem: String) -> Result<(), Error> {
    match policy {
        OnCheckFailure::Stop => Err(Error::Data {
            dev: dev.to_owned(),
            problem,
        }),
        OnCheckFailure::Start => {
            say!(
                "warning: data volume {dev} {problem}; starting the app anyway (onCheckFailure is start)"
            );
            Ok(())
        }
    }
}

/// The data volume among the disks: the ext4 disk labelled
/// [`DATA_LABEL`], else the first ext4 disk.
pub fn find(disks: &[Disk]) -> Option<&Disk> {
    let ext4 = |d: &&Disk| matches!(d.content, Content::Ext4 { .. });
    disks
        .iter()
        .filter(ext4)
        .find(|d| matches!(&d.content, Content::Ext4 { label } if label == DATA_LABEL))
        .or_else(|| disks.iter().find(ext4))
}

/// What is wrong with the volume, from the host's check and from its
/// first [`disks::HEAD_LEN`] bytes; empty when nothing is.
pub fn problems(host: Option<&DataCheck>, head: &[u8]) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(DataCheck {
        status: CheckStatus::Failed,
        summary,
    }) = host
    {
        problems.push(format!(
            "e2fsck on the host could not repair it ({summary})"
        ));
    }
    match Superblock::parse(head) {
        None => problems.push("its superblock cannot be read".into()),
        Some(sb) => {
            if sb.has_errors {
                problems.push("its filesystem has recorded errors".into());
            }
            if sb.checksum == Checksum::Bad {
                problems.push("its superblock checksum is wrong".into());
            }
        }
    }
    problems
}

/// Whether the superblock's checksum matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksum {
    /// No `metadata_csum`: nothing to compare.
    None,
    Good,
    Bad,
}

/// The parts of an ext4 superblock init looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub block_size: u64,
    pub blocks: u64,
    /// `s_state` has the "errors detected" bit.
    pub has_errors: bool,
    pub checksum: Checksum,
}

/// Offsets and flags in the superblock (1024 bytes at byte 1024).
mod sb {
    pub const START: usize = 1024;
    pub const LEN: usize = 1024;
    pub const BLOCKS_LO: usize = 0x04;
    pub const LOG_BLOCK_SIZE: usize = 0x18;
    pub const MAGIC: usize = 0x38;
    pub const STATE: usize = 0x3A;
    pub const FEATURE_INCOMPAT: usize = 0x60;
    pub const FEATURE_RO_COMPAT: usize = 0x64;
    pub const BLOCKS_HI: usize = 0x150;
    pub const CHECKSUM_TYPE: usize = 0x175;
    pub const CHECKSUM: usize = 0x3FC;

    pub const EXT4_MAGIC: u16 = 0xEF53;
    pub const STATE_ERRORS: u16 = 0x2;
    pub const INCOMPAT_64BIT: u32 = 0x80;
    pub const RO_COMPAT_METADATA_CSUM: u32 = 0x400;
    pub const CHECKSUM_CRC32C: u8 = 1;
}

impl Superblock {
    /// Reads the superblock from the first 2048 bytes of a volume; `None`
    /// if they are too short or hold no ext2/3/4 magic.
    pub fn parse(head: &[u8]) -> Option<Superblock> {
        let raw = head.get(sb::START..sb::START + sb::LEN)?;
        let u16_at = |at: usize| u16::from_le_bytes([raw[at], raw[at + 1]]);
        let u32_at = |at: usize| u32::from_le_bytes(raw[at..at + 4].try_into().expect("4 bytes"));
        if u16_at(sb::MAGIC) != sb::EXT4_MAGIC {
            return None;
        }
        let blocks_hi = if u32_at(sb::FEATURE_INCOMPAT) & sb::INCOMPAT_64BIT != 0 {
            u64::from(u32_at(sb::BLOCKS_HI))
        } else {
            0
        };
        let checksum = if u32_at(sb::FEATURE_RO_COMPAT) & sb::RO_COMPAT_METADATA_CSUM == 0 {
            Checksum::None
        } else if raw[sb::CHECKSUM_TYPE] == sb::CHECKSUM_CRC32C
            && crc32c_raw(!0, &raw[..sb::CHECKSUM]) == u32_at(sb::CHECKSUM)
        {
            Checksum::Good
        } else {
            Checksum::Bad
        };
        Some(Superblock {
            block_size: 1024u64.checked_shl(u32_at(sb::LOG_BLOCK_SIZE)).unwrap_or(0),
            blocks: u64::from(u32_at(sb::BLOCKS_LO)) | blocks_hi << 32,
            has_errors: u16_at(sb::STATE) & sb::STATE_ERRORS != 0,
            checksum,
        })
    }
}

/// CRC-32C (Castagnoli) of `data` from `crc`, without the final
/// inversion: ext4's metadata checksums are `crc32c_raw(!0, bytes)`.
/// (The standard CRC-32C is `!crc32c_raw(!0, bytes)`.)
pub fn crc32c_raw(mut crc: u32, data: &[u8]) -> u32 {
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0x82F6_3B78 & (crc & 1).wrapping_neg());
        }
    }
    crc
}

/// The shutdown half: detaches `/data` after the final sync, so that the
/// filesystem is marked clean. Not mounted is fine; anything else is a
/// warning (the sync has already written everything).
pub fn unmount(sys: &mut impl System) {
    match sys.unmount(Path::new(DATA_DIR)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
        Err(e) => say!("warning: cannot unmount {DATA_DIR}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::system::Recorder;

    /// The first 2048 bytes of a volume `mkfs.ext4 -L nodeos-data` made
    /// (metadata_csum on), with the checksum recomputed after `edit`.
    fn volume(edit: impl FnOnce(&mut [u8])) -> Vec<u8> {
        let mut head = vec![0u8; disks::HEAD_LEN];
        let raw = &mut head[sb::START..sb::START + sb::LEN];
        raw[sb::BLOCKS_LO..][..4].copy_from_slice(&16384u32.to_le_bytes());
        raw[sb::LOG_BLOCK_SIZE..][..4].copy_from_slice(&2u32.to_le_bytes());
        raw[sb::MAGIC..][..2].copy_from_slice(&sb::EXT4_MAGIC.to_le_bytes());
        raw[sb::STATE..][..2].copy_from_slice(&1u16.to_le_bytes());
        raw[sb::FEATURE_INCOMPAT..][..4].copy_from_slice(&0x2c2u32.to_le_bytes());
        raw[sb::FEATURE_RO_COMPAT..][..4].copy_from_slice(&0x46bu32.to_le_bytes());
        raw[0x78..0x78 + DATA_LABEL.len()].copy_from_slice(DATA_LABEL.as_bytes());
        raw[sb::CHECKSUM_TYPE] = sb::CHECKSUM_CRC32C;
        edit(raw);
        let crc = crc32c_raw(!0, &raw[..sb::CHECKSUM]);
        raw[sb::CHECKSUM..].copy_from_slice(&crc.to_le_bytes());
        head
    }

    /// A machine with the data volume `data` as /dev/vdc.
    fn boot(data: Vec<u8>) -> Recorder {
        Recorder::default()
            .with_file("/sys/block/vda/size", "1")
            .with_file("/dev/vda", disks::tests::head(&Content::Erofs))
            .with_file("/sys/block/vdb/size", "1")
            .with_file("/dev/vdb", disks::tests::head(&Content::Squashfs))
            .with_file("/sys/block/vdc/size", "1")
            .with_file("/dev/vdc", data)
    }

    fn check(status: CheckStatus, summary: &str) -> Option<DataCheck> {
        Some(DataCheck {
            status,
            summary: summary.into(),
        })
    }

    fn settings(on_check_failure: OnCheckFailure) -> DataSettings {
        DataSettings {
            on_check_failure,
            ..DataSettings::default()
        }
    }

    fn mounts(sys: &Recorder) -> Vec<&String> {
        sys.calls
            .iter()
            .filter(|c| c.starts_with("mount") || c.starts_with("chown"))
            .collect()
    }

    const MOUNT: &str = "mount ext4 /dev/vdc /data errors=remount-ro MountFlags(NODEV | NOSUID)";

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(!crc32c_raw(!0, b"123456789"), 0xE306_9283);
        assert_eq!(crc32c_raw(!0, b""), !0);
    }

    #[test]
    fn a_clean_volume_is_mounted_and_given_to_the_app() {
        let host = check(CheckStatus::Clean, "clean");
        let mut sys = boot(volume(|_| {}));
        setup(&mut sys, &DataSettings::default(), host.as_ref()).unwrap();
        assert_eq!(mounts(&sys), [MOUNT, "chown /data 1000:1000"]);
        assert!(sys.calls.contains(&"space /data".to_string()));
    }

    #[test]
    fn the_labelled_ext4_disk_is_preferred() {
        let disk = |dev: &str, label: &str| Disk {
            dev: dev.into(),
            content: Content::Ext4 {
                label: label.into(),
            },
        };
        let layer = Disk {
            dev: "/dev/vda".into(),
            content: Content::Erofs,
        };
        let disks = [
            layer.clone(),
            disk("/dev/vdb", "other"),
            disk("/dev/vdc", DATA_LABEL),
        ];
        assert_eq!(find(&disks).unwrap().dev, Path::new("/dev/vdc"));
        assert_eq!(find(&disks[..2]).unwrap().dev, Path::new("/dev/vdb"));
        assert_eq!(find(&disks[..1]), None);
    }

    #[test]
    fn without_a_data_disk_data_stays_read_only_and_the_boot_goes_on() {
        let mut sys = Recorder::default()
            .with_file("/sys/block/vda/size", "1")
            .with_file("/dev/vda", disks::tests::head(&Content::Erofs));
        setup(&mut sys, &DataSettings::default(), None).unwrap();
        assert!(mounts(&sys).is_empty(), "{:?}", sys.calls);
    }

    #[test]
    fn a_volume_the_host_could_not_repair_stops_the_boot() {
        let host = check(CheckStatus::Failed, "UNEXPECTED INCONSISTENCY");
        let mut sys = boot(volume(|_| {}));
        let err = setup(&mut sys, &DataSettings::default(), host.as_ref()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(
                "data volume /dev/vdc failed its check: e2fsck on the host could not repair it (UNEXPECTED INCONSISTENCY); the app is not started."
            ),
            "{text}"
        );
        assert!(text.contains("e2fsck -fy"), "{text}");
        assert!(text.contains(r#""onCheckFailure": "start""#), "{text}");
        let line = format!("{}error: {text}", nodeos_manifest::console::PREFIX);
        assert!(line.starts_with(nodeos_manifest::settings::DATA_FAILED_MARKER));
        assert!(mounts(&sys).is_empty(), "not mounted: {:?}", sys.calls);
    }

    #[test]
    fn recorded_errors_and_a_bad_checksum_stop_the_boot_without_a_host_check() {
        let errors = volume(|raw| raw[sb::STATE] = 0x3);
        let mut sys = boot(errors);
        let err = setup(&mut sys, &DataSettings::default(), None).unwrap_err();
        assert!(err.to_string().contains("has recorded errors"), "{err}");

        let mut bad = volume(|_| {});
        bad[sb::START + 0x100] ^= 1;
        let host = check(CheckStatus::Clean, "");
        let mut sys = boot(bad);
        let err = setup(&mut sys, &DataSettings::default(), host.as_ref()).unwrap_err();
        assert!(err.to_string().contains("checksum is wrong"), "{err}");
        assert!(mounts(&sys).is_empty());
    }

    #[test]
    fn with_on_check_failure_start_a_failed_volume_is_mounted_anyway() {
        let host = check(CheckStatus::Failed, "bad");
        let mut sys = boot(volume(|raw| raw[sb::STATE] = 0x3));
        setup(&mut sys, &settings(OnCheckFailure::Start), host.as_ref()).unwrap();
        assert_eq!(mounts(&sys), [MOUNT, "chown /data 1000:1000"]);
    }

    #[test]
    fn a_mount_failure_stops_the_boot_or_leaves_data_read_only() {
        let host = check(CheckStatus::Clean, "");
        let mut sys = boot(volume(|_| {}));
        sys.busy.push("/data".into());
        let err = setup(&mut sys, &DataSettings::default(), host.as_ref()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("data volume /dev/vdc cannot be mounted on /data ("),
            "{err}"
        );
        let host = check(CheckStatus::Clean, "");
        let mut sys = boot(volume(|_| {}));
        sys.busy.push("/data".into());
        setup(&mut sys, &settings(OnCheckFailure::Start), host.as_ref()).unwrap();
        assert_eq!(mounts(&sys), [MOUNT], "no chown of the read-only directory");
    }

    #[test]
    fn a_repair_on_the_host_is_reported_and_the_volume_mounted() {
        let host = check(CheckStatus::Repaired, "check forced");
        let mut sys = boot(volume(|_| {}));
        setup(&mut sys, &DataSettings::default(), host.as_ref()).unwrap();
        assert_eq!(mounts(&sys).len(), 2);
    }

    #[test]
    fn superblocks_are_read_and_checked() {
        let sb = Superblock::parse(&volume(|_| {})).unwrap();
        assert_eq!(
            sb,
            Superblock {
                block_size: 4096,
                blocks: 16384,
                has_errors: false,
                checksum: Checksum::Good,
            }
        );
        let no_csum = volume(|raw| raw[sb::FEATURE_RO_COMPAT + 1] = 0);
        let mut no_csum = no_csum;
        no_csum[sb::START + sb::CHECKSUM] ^= 0xff;
        assert_eq!(
            Superblock::parse(&no_csum).unwrap().checksum,
            Checksum::None
        );
        let big = volume(|raw| {
            raw[sb::FEATURE_INCOMPAT] |= 0x80;
            raw[sb::BLOCKS_HI] = 1;
        });
        assert_eq!(Superblock::parse(&big).unwrap().blocks, (1 << 32) + 16384);
        assert_eq!(Superblock::parse(&[0u8; 2048]), None);
        assert_eq!(Superblock::parse(&[0u8; 1500]), None);
        assert_eq!(
            problems(None, &[0u8; 2048]),
            ["its superblock cannot be read"]
        );
    }

    /// A superblock as the host's mkfs.ext4 writes it (e2fsprogs is
    /// installed by scripts/setup): init's checksum must agree with
    /// e2fsprogs'.
    #[test]
    fn a_real_mkfs_superblock_checks_out() {
        let mkfs = ["/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("mkfs.ext4 (Debian package e2fsprogs) is installed");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.img");
        std::fs::File::create(&path)
            .unwrap()
            .set_len(16 << 20)
            .unwrap();
        let status = std::process::Command::new(mkfs)
            .args(["-q", "-F", "-L", DATA_LABEL])
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
        let head = std::fs::read(&path).unwrap()[..disks::HEAD_LEN].to_vec();
        let sb = Superblock::parse(&head).unwrap();
        assert_eq!(sb.checksum, Checksum::Good, "{sb:?}");
        assert_eq!(sb.blocks * sb.block_size, 16 << 20);
        assert!(problems(None, &head).is_empty());
    }

    #[test]
    fn shutdown_unmounts_data_and_ignores_not_mounted() {
        let mut sys = Recorder::default();
        unmount(&mut sys);
        assert_eq!(sys.calls, ["unmount /data"]);
    }
}
