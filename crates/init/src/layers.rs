//! Phase 4a, layers: the app layer. The kernel mounted the runtime layer
//! as `/`; the app layer is another read-only disk holding `app.json` and
//! `app/`. Init mounts it at [`APP_LAYER_DIR`] and binds its `app/` onto
//! [`APP_DIR`], so the app sees itself at `/app` and the config is read
//! from [`nodeos_manifest::APP_CONFIG_PATH`]. An image built with dm-verity
//! has the kernel check the app layer too: init then mounts the verity
//! device the kernel made of it ([`verity::APP_DEVICE`]) and nothing else.

use std::path::{Path, PathBuf};

use nodeos_manifest::verity;
use nodeos_manifest::{APP_DIR, APP_LAYER_DIR, APP_LAYER_TREE};
use rustix::mount::MountFlags;

use crate::disks::{self, Disk};
use crate::error::Error;
use crate::say;
use crate::system::System;

/// The root device when `/proc/cmdline` has no `root=`.
const DEFAULT_ROOT: &str = "/dev/vda";

/// Mounts the app layer and binds the app onto `/app`; returns its disk.
/// With dm-verity on the command line it is the verity device of the app
/// layer, which must exist. Otherwise `partition` is the booted slot's app
/// partition on the system disk; without one, the app layer is the first
/// layer disk that is not the root.
pub fn mount_app(sys: &mut impl System, partition: Option<&Path>) -> Result<Disk, Error> {
    let cmdline = sys
        .read(Path::new("/proc/cmdline"), 8192)
        .unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline);
    let root = root_device(&cmdline);
    let verified = verity::creates_device(&cmdline, verity::APP_DEVICE);
    let all = if verified {
        let dev = verity_device(sys, verity::APP_DEVICE).ok_or(Error::AppVerityMissing)?;
        one(sys, &dev)
    } else {
        match partition {
            Some(dev) => one(sys, dev),
            None => disks::scan(sys),
        }
    };
    let Some(disk) = find_app_layer(&all, &root) else {
        let names: Vec<String> = all.iter().map(|d| d.dev.display().to_string()).collect();
        return Err(Error::AppLayerMissing {
            root: root.display().to_string(),
            disks: if names.is_empty() {
                "(none)".to_string()
            } else {
                names.join(", ")
            },
        });
    };
    let fstype = disk.content.layer_fstype().expect("a layer");
    let fail = |target: &'static str| {
        let dev = disk.dev.display().to_string();
        move |source| Error::AppLayer {
            dev,
            fstype,
            target,
            source,
        }
    };
    let ro = MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV;
    sys.mount_fs(&disk.dev, Path::new(APP_LAYER_DIR), fstype, ro, "")
        .map_err(fail(APP_LAYER_DIR))?;
    let tree = Path::new(APP_LAYER_DIR).join(APP_LAYER_TREE);
    sys.mount_fs(&tree, Path::new(APP_DIR), "", MountFlags::BIND, "")
        .map_err(fail(APP_DIR))?;
    let checked = if verified {
        ", checked by dm-verity"
    } else {
        ""
    };
    say!(
        "app layer {} ({fstype}{checked}) mounted on {APP_DIR}",
        disk.dev.display()
    );
    Ok(disk.clone())
}

/// The first read-only layer that is not the root device.
fn find_app_layer<'a>(disks: &'a [Disk], root: &Path) -> Option<&'a Disk> {
    disks
        .iter()
        .find(|d| d.dev != root && d.content.layer_fstype().is_some())
}

/// `dev` as the only disk to look at.
fn one(sys: &mut impl System, dev: &Path) -> Vec<Disk> {
    let head = sys.read(dev, disks::HEAD_LEN).unwrap_or_default();
    vec![Disk {
        dev: dev.to_owned(),
        content: disks::classify(&head),
    }]
}

/// The device of `root=` on the kernel command line.
fn root_device(cmdline: &str) -> PathBuf {
    verity::cmdline_words(cmdline)
        .into_iter()
        .find_map(|arg| arg.strip_prefix("root="))
        .map_or_else(|| PathBuf::from(DEFAULT_ROOT), PathBuf::from)
}

/// `/dev/dm-N` of the device-mapper device called `name`.
fn verity_device(sys: &mut impl System, name: &str) -> Option<PathBuf> {
    let mut blocks = sys.list(Path::new("/sys/block")).ok()?;
    blocks.sort();
    blocks
        .into_iter()
        .filter(|block| block.starts_with("dm-"))
        .find(|block| {
            let path = Path::new("/sys/block").join(block).join("dm/name");
            sys.read(&path, 256)
                .is_ok_and(|found| String::from_utf8_lossy(&found).trim() == name)
        })
        .map(|block| Path::new("/dev").join(block))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::disks::Content;
    use crate::disks::tests::head;
    use crate::system::Recorder;

    fn machine(disks: &[(&str, Content)]) -> Recorder {
        let mut sys =
            Recorder::default().with_file("/proc/cmdline", "console=ttyS0 root=/dev/vda ro");
        for (name, content) in disks {
            sys = sys
                .with_file(&format!("/sys/block/{name}/size"), "1")
                .with_file(&format!("/dev/{name}"), head(content));
        }
        sys
    }

    #[test]
    fn mounts_the_second_layer_and_binds_the_app() {
        let mut sys = machine(&[
            ("vda", Content::Squashfs),
            ("vdb", Content::Squashfs),
            (
                "vdc",
                Content::Ext4 {
                    label: "nodeos-data".into(),
                },
            ),
            ("vdd", Content::RunConfig),
        ]);
        let disk = mount_app(&mut sys, None).unwrap();
        assert_eq!(disk.dev, Path::new("/dev/vdb"));
        let mounts: Vec<&String> = sys
            .calls
            .iter()
            .filter(|c| c.starts_with("mount"))
            .collect();
        assert_eq!(
            mounts,
            [
                "mount squashfs /dev/vdb /layers/app  MountFlags(NODEV | NOSUID | RDONLY)",
                "mount  /layers/app/app /app  MountFlags(BIND)",
            ]
        );
    }

    #[test]
    fn with_a_slot_the_app_partition_is_mounted_without_a_scan() {
        let mut sys = machine(&[("vda", Content::Erofs), ("vdb", Content::Erofs)])
            .with_file(
                "/proc/cmdline",
                "root=PARTLABEL=nodeos-runtime-b nodeos.slot=b",
            )
            .with_file("/dev/vda7", head(&Content::Erofs));
        let disk = mount_app(&mut sys, Some(Path::new("/dev/vda7"))).unwrap();
        assert_eq!(disk.dev, Path::new("/dev/vda7"));
        assert!(
            sys.calls
                .iter()
                .any(|c| c.starts_with("mount erofs /dev/vda7 /layers/app")),
            "{:?}",
            sys.calls
        );
        let mut empty = machine(&[]).with_file("/dev/vda7", vec![0u8; 4096]);
        let err = mount_app(&mut empty, Some(Path::new("/dev/vda7"))).unwrap_err();
        assert!(err.to_string().contains("/dev/vda7"), "{err}");
    }

    #[test]
    fn the_root_device_comes_from_the_command_line() {
        let mut sys = machine(&[("vda", Content::Erofs), ("vdb", Content::Erofs)])
            .with_file("/proc/cmdline", "root=/dev/vdb rootfstype=erofs");
        assert_eq!(
            mount_app(&mut sys, None).unwrap().dev,
            Path::new("/dev/vda")
        );
    }

    /// A command line with both layers' verity devices, as images are built.
    fn verity_cmdline() -> String {
        let layer = verity::Verity {
            root_hash: "a".repeat(64),
            salt: "b".repeat(64),
            data_blocks: 2,
        };
        let create = verity::dm_create(&layer, "/dev/vda", &layer, "/dev/vdb");
        format!("console=ttyS0 root=/dev/dm-0 ro rootfstype=erofs {create} quiet")
    }

    #[test]
    fn with_verity_the_apps_verity_device_is_mounted_and_nothing_else() {
        let mut sys = machine(&[("vda", Content::Erofs), ("vdb", Content::Erofs)])
            .with_file("/proc/cmdline", verity_cmdline())
            .with_file("/sys/block/dm-0/dm/name", "nodeos-runtime\n")
            .with_file("/sys/block/dm-1/dm/name", "nodeos-app\n")
            .with_file("/dev/dm-1", head(&Content::Erofs));
        let slot_partition = Path::new("/dev/vda4");
        let disk = mount_app(&mut sys, Some(slot_partition)).unwrap();
        assert_eq!(disk.dev, Path::new("/dev/dm-1"));
        assert!(
            sys.calls
                .iter()
                .any(|c| c.starts_with("mount erofs /dev/dm-1 /layers/app ")),
            "{:?}",
            sys.calls
        );
    }

    #[test]
    fn with_verity_and_no_verity_device_the_unchecked_layer_is_refused() {
        let mut sys = machine(&[("vda", Content::Erofs), ("vdb", Content::Erofs)])
            .with_file("/proc/cmdline", verity_cmdline())
            .with_file("/sys/block/dm-0/dm/name", "nodeos-runtime\n");
        let err = mount_app(&mut sys, None).unwrap_err();
        assert!(matches!(err, Error::AppVerityMissing), "{err}");
        assert!(err.to_string().contains("`nodeos-app`"), "{err}");
        assert!(!sys.calls.iter().any(|c| c.starts_with("mount")));
    }

    #[test]
    fn no_app_layer_names_the_disks_it_saw() {
        let mut sys = machine(&[("vda", Content::Erofs), ("vdb", Content::RunConfig)]);
        let err = mount_app(&mut sys, None).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("no app layer: none of the virtio disks /dev/vda, /dev/vdb holds"),
            "{err}"
        );
    }

    #[test]
    fn a_failed_mount_names_the_disk_and_target() {
        let mut sys = machine(&[("vda", Content::Erofs), ("vdb", Content::Erofs)]);
        sys.fail.push("/app".into());
        let err = mount_app(&mut sys, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot mount the app layer /dev/vdb (erofs) on /app"
        );
    }
}
