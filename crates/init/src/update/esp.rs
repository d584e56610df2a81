//! The EFI system partition of a disk made by `nodeos export`, kept in
//! step with the update state: the firmware's loader (systemd-boot) picks
//! the slot from its boot entries, so every change of the state that
//! decides what boots next is mirrored here (see [`nodeos_manifest::esp`]):
//!
//! * an update written into a slot: its kernel and a trial entry with one
//!   try ([`Esp::stage_trial`]);
//! * the trial committed: the entry loses its counters ([`Esp::commit`]);
//! * the trial rolled back: the entry is deleted ([`Esp::remove`]).
//!
//! Disks without an ESP (`nodeos run --system`, where the host is the
//! bootloader) have nothing to mirror. The partition is mounted (vfat,
//! `noexec,nosuid,nodev`) only for each change and unmounted after it.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nodeos_manifest::esp::{self, ESP_PARTITION};
use nodeos_manifest::slots::Slot;
use rustix::mount::{MountFlags, UnmountFlags};

use super::Partitions;

/// Where the ESP is mounted while it is changed.
const MOUNT_POINT: &str = "/run/nodeos-esp";

/// One change at a time: the agent and the supervisor both make them.
static BUSY: Mutex<()> = Mutex::new(());

/// The ESP of the system disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Esp {
    dev: PathBuf,
}

impl Esp {
    /// The system disk's ESP, if it has one.
    pub fn find(partitions: &Partitions) -> Option<Esp> {
        partitions.get(ESP_PARTITION).map(|dev| Esp {
            dev: dev.to_owned(),
        })
    }

    /// Writes `slot`'s kernel (from `kernel`) and its trial entry (`entry`,
    /// see [`esp::entry`]), replacing any entry `slot` had.
    pub fn stage_trial(&self, slot: Slot, kernel: &mut impl Read, entry: &str) -> io::Result<()> {
        self.with_mounted(|root| stage_in(root, slot, kernel, entry))
    }

    /// `slot`'s trial passed: its entry keeps no counters.
    pub fn commit(&self, slot: Slot) -> io::Result<()> {
        self.with_mounted(|root| commit_in(root, slot))
    }

    /// `slot` must not boot: its entries are deleted.
    pub fn remove(&self, slot: Slot) -> io::Result<()> {
        self.with_mounted(|root| remove_in(root, slot).map(drop))
    }

    fn with_mounted<T>(&self, change: impl FnOnce(&Path) -> io::Result<T>) -> io::Result<T> {
        let _busy = BUSY.lock().unwrap_or_else(|e| e.into_inner());
        let target = Path::new(MOUNT_POINT);
        std::fs::create_dir_all(target)?;
        let flags = MountFlags::NOEXEC | MountFlags::NOSUID | MountFlags::NODEV;
        rustix::mount::mount(&self.dev, target, "vfat", flags, None).map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("cannot mount {} (vfat): {e}", self.dev.display()),
            )
        })?;
        let result = change(target);
        rustix::fs::sync();
        let unmounted = rustix::mount::unmount(target, UnmountFlags::empty());
        let value = result?;
        unmounted.map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("cannot unmount {MOUNT_POINT}: {e}"),
            )
        })?;
        Ok(value)
    }
}

/// [`Esp::stage_trial`] on the ESP mounted at `root`. The old entry goes
/// first, so no entry ever names a kernel half written; the new one is
/// written under a name systemd-boot ignores and renamed when complete.
fn stage_in(root: &Path, slot: Slot, kernel: &mut impl Read, entry: &str) -> io::Result<()> {
    remove_in(root, slot)?;
    let kernel_path = root.join(esp::kernel_path(slot));
    if let Some(dir) = kernel_path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = File::create(&kernel_path)?;
    io::copy(kernel, &mut file)?;
    file.sync_all()?;
    let entries = root.join(esp::ENTRIES_DIR);
    std::fs::create_dir_all(&entries)?;
    let tmp = entries.join(format!("nodeos-{slot}.tmp"));
    let mut file = File::create(&tmp)?;
    file.write_all(entry.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, entries.join(esp::entry_name(slot, true)))
}

/// [`Esp::commit`] on the ESP mounted at `root`: the entry of `slot` is
/// renamed `nodeos-<slot>.conf`. An entry without counters is kept as it is.
fn commit_in(root: &Path, slot: Slot) -> io::Result<()> {
    let entries = root.join(esp::ENTRIES_DIR);
    let blessed = esp::entry_name(slot, false);
    let mut found = false;
    for name in entry_names(&entries, slot)? {
        if name == blessed {
            found = true;
        } else if found {
            std::fs::remove_file(entries.join(&name))?;
        } else {
            std::fs::rename(entries.join(&name), entries.join(&blessed))?;
            found = true;
        }
    }
    if found {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no boot entry of slot {slot} in {}", esp::ENTRIES_DIR),
        ))
    }
}

/// Deletes every entry of `slot`; how many there were.
fn remove_in(root: &Path, slot: Slot) -> io::Result<usize> {
    let entries = root.join(esp::ENTRIES_DIR);
    let names = entry_names(&entries, slot)?;
    for name in &names {
        std::fs::remove_file(entries.join(name))?;
    }
    Ok(names.len())
}

/// The entries of `slot` in `entries`, the one without counters first.
fn entry_names(entries: &Path, slot: Slot) -> io::Result<Vec<String>> {
    let mut names: Vec<String> = match std::fs::read_dir(entries) {
        Ok(list) => list
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            // FAT keeps the case it was given, but matches without it.
            .filter(|n| esp::is_entry_of(&n.to_ascii_lowercase(), slot))
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    names.sort_by_key(|n| (n.contains('+'), n.clone()));
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(root: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(root.join(esp::ENTRIES_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_trial_is_staged_committed_or_removed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let entries = root.join(esp::ENTRIES_DIR);
        std::fs::create_dir_all(&entries).unwrap();
        std::fs::write(entries.join("nodeos-a.conf"), "a").unwrap();
        std::fs::write(entries.join("nodeos-b+0-1.conf"), "old trial").unwrap();

        stage_in(root, Slot::B, &mut &b"kernel b"[..], "entry b").unwrap();
        assert_eq!(listing(root), ["nodeos-a.conf", "nodeos-b+1-0.conf"]);
        assert_eq!(
            std::fs::read(root.join("EFI/nodeos/b.efi")).unwrap(),
            b"kernel b"
        );
        assert_eq!(
            std::fs::read_to_string(entries.join("nodeos-b+1-0.conf")).unwrap(),
            "entry b"
        );

        // systemd-boot took the try before booting it.
        std::fs::rename(
            entries.join("nodeos-b+1-0.conf"),
            entries.join("nodeos-b+0-1.conf"),
        )
        .unwrap();
        commit_in(root, Slot::B).unwrap();
        assert_eq!(listing(root), ["nodeos-a.conf", "nodeos-b.conf"]);
        commit_in(root, Slot::B).unwrap();
        assert_eq!(
            listing(root),
            ["nodeos-a.conf", "nodeos-b.conf"],
            "committing twice changes nothing"
        );

        stage_in(root, Slot::A, &mut &b"kernel a2"[..], "entry a2").unwrap();
        assert_eq!(listing(root), ["nodeos-a+1-0.conf", "nodeos-b.conf"]);
        assert_eq!(remove_in(root, Slot::A).unwrap(), 1);
        assert_eq!(listing(root), ["nodeos-b.conf"]);
        assert!(commit_in(root, Slot::A).is_err(), "no entry to commit");
    }
}
