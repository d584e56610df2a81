//! Phase 4a, layers: the app layer. The kernel mounted the runtime layer
//! as `/`; the app layer is another read-only disk holding `app.json` and
//! `app/`. Init mounts it at [`APP_LAYER_DIR`] and binds its `app/` onto
//! [`APP_DIR`], so the app sees itself at `/app` and the config is read
//! from [`nodeos_manifest::APP_CONFIG_PATH`].

use std::path::{Path, PathBuf};

use nodeos_manifest::{APP_DIR, APP_LAYER_DIR, APP_LAYER_TREE};
use rustix::mount::MountFlags;

use crate::disks::{self, Disk};
use crate::error::Error;
use crate::say;
use crate::system::System;

/// The root device when `/proc/cmdline` has no `root=`.
const DEFAULT_ROOT: &str = "/dev/vda";

/// Mounts the app layer and binds the app onto `/app`; returns its disk.
/// `partition` is the booted slot's app partition on the system disk; without
/// one, the app layer is the first layer disk that is not the root.
pub fn mount_app(sys: &mut impl System, partition: Option<&Path>) -> Result<Disk, Error> {
    let root = root_device(sys);
    let all = match partition {
        Some(dev) => {
            let head = sys.read(dev, 4096).unwrap_or_default();
            vec![Disk {
                dev: dev.to_owned(),
                content: disks::classify(&head),
            }]
        }
        None => disks::scan(sys),
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
    say!(
        "app layer {} ({fstype}) mounted on {APP_DIR}",
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

/// The device of `root=` on the kernel command line.
fn root_device(sys: &mut impl System) -> PathBuf {
    let cmdline = sys
        .read(Path::new("/proc/cmdline"), 4096)
        .unwrap_or_default();
    String::from_utf8_lossy(&cmdline)
        .split_whitespace()
        .find_map(|arg| arg.strip_prefix("root="))
        .map_or_else(|| PathBuf::from(DEFAULT_ROOT), PathBuf::from)
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
