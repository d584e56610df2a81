//! The virtio disks attached to the guest, told apart by their content
//! rather than their order: the first bytes of a disk say whether it is a
//! read-only layer (EROFS or squashfs), an ext4 volume, or the run config
//! `nodeos run` writes.

use std::path::PathBuf;

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

/// Every virtio disk (`/sys/block/vd*`) in name order, classified. A disk
/// that cannot be read is left out.
pub fn scan(sys: &mut impl System) -> Vec<Disk> {
    let Ok(names) = sys.list(std::path::Path::new("/sys/block")) else {
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
