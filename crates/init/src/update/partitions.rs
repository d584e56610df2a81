//! The system disk's partitions, found by GPT name: the kernel puts each
//! partition's name into `PARTNAME=` of its sysfs `uevent`. Init never
//! parses the GPT itself.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use nodeos_manifest::slots::{Part, STATE_PARTITION, Slot, partition_name};

/// Partition name (`nodeos-app-b`, …) → device node (`/dev/vda6`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partitions {
    by_name: BTreeMap<String, PathBuf>,
}

impl Partitions {
    /// Scans `<sys_root>/class/block/*/uevent` for `PARTNAME=nodeos-*` and
    /// maps each to `<dev_root>/<DEVNAME>`. Fails, naming the partition, if
    /// the state partition or any slot partition is missing, or if a name is
    /// found twice (two system disks: which one to write is not clear).
    pub fn find(sys_root: &Path, dev_root: &Path) -> io::Result<Partitions> {
        let class = sys_root.join("class/block");
        let entries = std::fs::read_dir(&class).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot list {}: {e}", class.display()))
        })?;
        let mut devices: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
        devices.sort();
        let mut by_name: BTreeMap<String, PathBuf> = BTreeMap::new();
        for device in devices {
            // A device that vanished or has no uevent is not a partition of ours.
            let Ok(uevent) = std::fs::read_to_string(device.join("uevent")) else {
                continue;
            };
            let Some((name, devname)) = parse_uevent(&uevent) else {
                continue;
            };
            let node = dev_root.join(devname);
            if let Some(first) = by_name.get(name) {
                return Err(io::Error::other(format!(
                    "two partitions are named {name} ({} and {}); attach only one system disk",
                    first.display(),
                    node.display()
                )));
            }
            by_name.insert(name.to_owned(), node);
        }
        let partitions = Partitions { by_name };
        for name in required() {
            if partitions.get(&name).is_none() {
                let found: Vec<&str> = partitions.by_name.keys().map(String::as_str).collect();
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "no partition named {name} (found: {}); boot from a system disk made by `nodeos run`",
                        if found.is_empty() {
                            "none".to_owned()
                        } else {
                            found.join(", ")
                        }
                    ),
                ));
            }
        }
        Ok(partitions)
    }

    /// The device node of the partition named `name`.
    pub fn get(&self, name: &str) -> Option<&Path> {
        self.by_name.get(name).map(PathBuf::as_path)
    }

    /// The state partition.
    pub fn state(&self) -> &Path {
        self.get(STATE_PARTITION)
            .expect("find() checked the state partition")
    }

    /// A slot's partition.
    pub fn part(&self, part: Part, slot: Slot) -> &Path {
        self.get(&partition_name(part, slot))
            .expect("find() checked every slot partition")
    }
}

/// Every partition the agent needs.
fn required() -> impl Iterator<Item = String> {
    let slots = [Slot::A, Slot::B].into_iter().flat_map(|slot| {
        Part::ALL
            .into_iter()
            .map(move |part| partition_name(part, slot))
    });
    std::iter::once(STATE_PARTITION.to_owned()).chain(slots)
}

/// `(PARTNAME, DEVNAME)` of a uevent naming a `nodeos-*` partition.
pub(crate) fn parse_uevent(text: &str) -> Option<(&str, &str)> {
    let field = |key: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
    };
    let name = field("PARTNAME").filter(|n| n.starts_with("nodeos-"))?;
    let devname = field("DEVNAME").filter(|d| !d.is_empty() && !d.contains(".."))?;
    Some((name, devname))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::update::testing::fake_sys;

    #[test]
    fn finds_every_partition_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let (sys, dev) = fake_sys(dir.path(), &[]);
        let parts = Partitions::find(&sys, &dev).unwrap();
        assert_eq!(parts.state(), dev.join("vda1"));
        assert_eq!(parts.part(Part::Boot, Slot::A), dev.join("vda2"));
        assert_eq!(parts.part(Part::App, Slot::B), dev.join("vda7"));
        assert_eq!(
            parts.get("nodeos-runtime-b"),
            Some(dev.join("vda5").as_path())
        );
        assert_eq!(parts.get("vda"), None);
    }

    #[test]
    fn a_missing_partition_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (sys, dev) = fake_sys(dir.path(), &["nodeos-app-b"]);
        let err = Partitions::find(&sys, &dev).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(
            err.to_string().contains("no partition named nodeos-app-b"),
            "{err}"
        );
    }

    #[test]
    fn a_name_found_twice_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (sys, dev) = fake_sys(dir.path(), &[]);
        let other = sys.join("class/block/vdb2");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(
            other.join("uevent"),
            "DEVNAME=vdb2\nDEVTYPE=partition\nPARTNAME=nodeos-app-b\n",
        )
        .unwrap();
        let err = Partitions::find(&sys, &dev).unwrap_err();
        assert!(
            err.to_string()
                .contains("two partitions are named nodeos-app-b"),
            "{err}"
        );
    }

    #[test]
    fn uevents_without_our_names_are_skipped() {
        assert_eq!(parse_uevent("DEVNAME=vda\nDEVTYPE=disk\n"), None);
        assert_eq!(parse_uevent("DEVNAME=vdb1\nPARTNAME=EFI\n"), None);
        assert_eq!(
            parse_uevent("MAJOR=254\nDEVNAME=vda3\nPARTNAME=nodeos-boot-b\n"),
            Some(("nodeos-boot-b", "vda3"))
        );
    }
}
