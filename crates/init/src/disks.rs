//! The virtio disks attached to the guest, told apart by their content
//! rather than their order: the first bytes of a disk say whether it is a
//! read-only layer (EROFS or squashfs), an ext4 volume, or the run config
//! `nodeos run` writes.

use std::path::{Path, PathBuf};

use nodeos_manifest::DATA_LABEL;
use nodeos_manifest::settings::RUN_CONFIG_MAGIC;

use crate::system::System;

/// How many bytes of a disk [`classify`] needs.
pub const HEAD_LEN: usize = 2048;

/// What a disk holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// EROFS (magic `0xE0F5E1E2` at byte 1024).
    Erofs,
    /// squashfs (`hsqs` at byte 0).
    Squashfs,
    /// ext4 (or ext2/3: magic `0xEF53` at byte 1080), with its label.
    Ext4 { label: String },
    /// The run config of `nodeos run`.
    RunConfig,
    /// Anything else (blank, another filesystem, too short).
    Unknown,
}

impl Content {
    /// The `mount(2)` filesystem type of a read-only layer.
    pub fn layer_fstype(&self) -> Option<&'static str> {
        match self {
            Content::Erofs => Some("erofs"),
            Content::Squashfs => Some("squashfs"),
            _ => None,
        }
    }
}

/// One attached disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// `/dev/vdX`.
    pub dev: PathBuf,
    pub content: Content,
}

/// Classifies the first bytes of a disk.
pub fn classify(head: &[u8]) -> Content {
    if head.starts_with(RUN_CONFIG_MAGIC) {
        return Content::RunConfig;
    }
    if head.starts_with(b"hsqs") {
        return Content::Squashfs;
    }
    if head.get(1024..1028) == Some(&0xE0F5_E1E2u32.to_le_bytes()[..]) {
        return Content::Erofs;
    }
    if head.get(1080..1082) == Some(&0xEF53u16.to_le_bytes()[..]) {
        let label = head.get(1144..1160).unwrap_or_default();
        let end = label.iter().position(|&b| b == 0).unwrap_or(label.len());
        return Content::Ext4 {
            label: String::from_utf8_lossy(&label[..end]).into_owned(),
        };
    }
    Content::Unknown
}

/// Every virtio disk (`/sys/block/vd*`) in name order, then the data
/// partition of a disk made by `nodeos export` (GPT name [`DATA_LABEL`],
/// on whatever disk: virtio, SCSI or NVMe), classified. A disk that cannot
/// be read is left out.
pub fn scan(sys: &mut impl System) -> Vec<Disk> {
    let mut disks = whole_disks(sys);
    disks.extend(named_partition(sys, DATA_LABEL).and_then(|dev| {
        let head = sys.read(&dev, HEAD_LEN).ok()?;
        Some(Disk {
            content: classify(&head),
            dev,
        })
    }));
    disks
}

/// The device node of the partition with the GPT name `name`, from
/// `PARTNAME=` in `/sys/class/block/*/uevent`.
pub fn named_partition(sys: &mut impl System, name: &str) -> Option<PathBuf> {
    let class = Path::new("/sys/class/block");
    let mut entries = sys.list(class).ok()?;
    entries.sort();
    entries.into_iter().find_map(|entry| {
        let uevent = sys.read(&class.join(&entry).join("uevent"), 4096).ok()?;
        let text = String::from_utf8_lossy(&uevent);
        let (partname, devname) = crate::update::parse_uevent(&text)?;
        (partname == name).then(|| Path::new("/dev").join(devname))
    })
}

fn whole_disks(sys: &mut impl System) -> Vec<Disk> {
    let Ok(names) = sys.list(Path::new("/sys/block")) else {
        return Vec::new();
    };
    names
        .iter()
        .filter(|n| n.starts_with("vd"))
        .filter_map(|name| {
            let dev = PathBuf::from("/dev").join(name);
            let head = sys.read(&dev, HEAD_LEN).ok()?;
            Some(Disk {
                content: classify(&head),
                dev,
            })
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use crate::system::Recorder;

    /// The first [`HEAD_LEN`] bytes of a disk with `content`.
    pub fn head(content: &Content) -> Vec<u8> {
        let mut head = vec![0u8; HEAD_LEN];
        match content {
            Content::Erofs => head[1024..1028].copy_from_slice(&0xE0F5_E1E2u32.to_le_bytes()),
            Content::Squashfs => head[..4].copy_from_slice(b"hsqs"),
            Content::Ext4 { label } => {
                head[1080..1082].copy_from_slice(&0xEF53u16.to_le_bytes());
                head[1144..1144 + label.len()].copy_from_slice(label.as_bytes());
            }
            Content::RunConfig => head[..RUN_CONFIG_MAGIC.len()].copy_from_slice(RUN_CONFIG_MAGIC),
            Content::Unknown => {}
        }
        head
    }

    #[test]
    fn classifies_each_kind_of_disk() {
        for content in [
            Content::Erofs,
            Content::Squashfs,
            Content::Ext4 {
                label: "nodeos-data".into(),
            },
            Content::Ext4 {
                label: String::new(),
            },
            Content::RunConfig,
            Content::Unknown,
        ] {
            assert_eq!(classify(&head(&content)), content);
        }
        assert_eq!(classify(b"hs"), Content::Unknown);
        assert_eq!(classify(&[]), Content::Unknown);
    }

    #[test]
    fn the_data_partition_of_an_exported_disk_is_found_by_name() {
        let data = Content::Ext4 {
            label: DATA_LABEL.into(),
        };
        let mut sys = Recorder::default()
            .with_file(
                "/sys/class/block/nvme0n1/uevent",
                "DEVNAME=nvme0n1\nDEVTYPE=disk\n",
            )
            .with_file(
                "/sys/class/block/nvme0n1p1/uevent",
                "DEVNAME=nvme0n1p1\nPARTNAME=nodeos-esp\n",
            )
            .with_file(
                "/sys/class/block/nvme0n1p9/uevent",
                "MAJOR=259\nDEVNAME=nvme0n1p9\nPARTNAME=nodeos-data\n",
            )
            .with_file("/dev/nvme0n1p9", head(&data));
        assert_eq!(
            scan(&mut sys),
            [Disk {
                dev: "/dev/nvme0n1p9".into(),
                content: data
            }]
        );
        assert_eq!(named_partition(&mut sys, "nodeos-app-b"), None);
    }

    #[test]
    fn scan_lists_virtio_disks_in_order_and_skips_unreadable_ones() {
        let mut sys = Recorder::default()
            .with_file("/sys/block/vda/size", "1")
            .with_file("/sys/block/vdb/size", "1")
            .with_file("/sys/block/vdc/size", "1")
            .with_file("/sys/block/loop0/size", "1")
            .with_file("/dev/vda", head(&Content::Squashfs))
            .with_file("/dev/vdb", head(&Content::Erofs));
        assert_eq!(
            scan(&mut sys),
            [
                Disk {
                    dev: "/dev/vda".into(),
                    content: Content::Squashfs
                },
                Disk {
                    dev: "/dev/vdb".into(),
                    content: Content::Erofs
                },
            ]
        );
    }
}
