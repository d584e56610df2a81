//! The EFI system partition of a disk made by `nodeos export`: systemd-boot
//! as the firmware's default loader and one boot entry per slot. The host
//! writes it at export; the guest's update agent and init keep it in step
//! with the update [`State`](crate::slots::State), which stays the truth.
//!
//! The trial boot of an update uses systemd-boot's boot counting, the rule
//! `nodeos run` applies when it is the bootloader: the agent writes the new
//! slot's entry as `nodeos-<slot>+1-0.conf` with a higher `version`, so it
//! sorts first; systemd-boot takes the try (renames it `+0-1`) *before*
//! booting it. Init renames it `nodeos-<slot>.conf` when the trial commits
//! and deletes it when it rolls back. A trial that never gives a verdict
//! (a panic, a hang cut short by a reset) leaves `+0-1`, which sorts last,
//! so the next boot is the old slot, and init then records the rollback.
//!
//! | path | contents |
//! |---|---|
//! | [`LOADER_PATH`] | `systemd-bootx64.efi` |
//! | [`LOADER_CONF_PATH`] | [`LOADER_CONF`] |
//! | `EFI/nodeos/<slot>.efi` | the slot's kernel (an EFI-stub bzImage) |
//! | `loader/entries/nodeos-<slot>[+L-D].conf` | [`entry`] |

use crate::slots::Slot;

/// GPT name of the EFI system partition.
pub const ESP_PARTITION: &str = "nodeos-esp";
/// The removable-media default loader path the firmware boots.
pub const LOADER_PATH: &str = "EFI/BOOT/BOOTX64.EFI";
/// systemd-boot's configuration file.
pub const LOADER_CONF_PATH: &str = "loader/loader.conf";
/// The directory of the boot entries.
pub const ENTRIES_DIR: &str = "loader/entries";
/// The directory of the slots' kernels.
pub const KERNELS_DIR: &str = "EFI/nodeos";
/// systemd-boot's configuration: no menu, no editor, only our entries, the
/// first in sort order (the highest `version` with tries left) booted.
pub const LOADER_CONF: &str =
    "timeout 0\ndefault nodeos-*\neditor no\nauto-entries no\nauto-firmware no\n";
/// Every entry's `sort-key`: entries are then ordered by `version`.
const SORT_KEY: &str = "nodeos";

/// Path of `slot`'s kernel on the ESP, without a leading slash.
pub fn kernel_path(slot: Slot) -> String {
    format!("{KERNELS_DIR}/{slot}.efi")
}

/// File name of `slot`'s boot entry: `nodeos-<slot>.conf` for a committed
/// slot, `nodeos-<slot>+1-0.conf` (one try left) for a trial.
pub fn entry_name(slot: Slot, trial: bool) -> String {
    if trial {
        format!("nodeos-{slot}+1-0.conf")
    } else {
        format!("nodeos-{slot}.conf")
    }
}

/// Whether the file name `name` is a boot entry of `slot`, with or without
/// boot counters (`nodeos-a.conf`, `nodeos-a+1-0.conf`, `nodeos-a+0-1.conf`).
pub fn is_entry_of(name: &str, slot: Slot) -> bool {
    let Some(rest) = name
        .strip_prefix("nodeos-")
        .and_then(|r| r.strip_prefix(slot.as_str()))
        .and_then(|r| r.strip_suffix(".conf"))
    else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    let Some(counters) = rest.strip_prefix('+') else {
        return false;
    };
    let mut parts = counters.split('-');
    let numeric =
        |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    numeric(parts.next()) && {
        let done = parts.next();
        (done.is_none() || numeric(done)) && parts.next().is_none()
    }
}

/// The boot entry of `slot`: `title` for people, `sequence` (the update
/// that wrote the slot; 0 for the export) as its `version`, so a newer
/// update sorts first, and the kernel command line `cmdline`
/// ([`crate::slots::slot_cmdline`] of the image's) with `rootwait`: NVMe
/// and SCSI disks appear after the kernel first looks for its root.
pub fn entry(title: &str, sequence: u64, slot: Slot, cmdline: &str) -> String {
    let title: String = title.chars().filter(|c| !c.is_control()).collect();
    let rootwait = if cmdline.split_whitespace().any(|w| w == "rootwait") {
        ""
    } else {
        " rootwait"
    };
    format!(
        "title {title}\nsort-key {SORT_KEY}\nversion {sequence}\nlinux /{}\noptions {cmdline}{rootwait}\n",
        kernel_path(slot)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_of_a_slot_are_told_apart_by_name() {
        for name in [
            "nodeos-a.conf",
            "nodeos-a+1-0.conf",
            "nodeos-a+0-1.conf",
            "nodeos-a+3.conf",
        ] {
            assert!(is_entry_of(name, Slot::A), "{name}");
            assert!(!is_entry_of(name, Slot::B), "{name}");
        }
        for name in [
            "nodeos-a.conf.tmp",
            "nodeos-ab.conf",
            "nodeos-a+.conf",
            "nodeos-a+1-.conf",
            "nodeos-a+1-0-2.conf",
            "other.conf",
            "nodeos-a+x-0.conf",
        ] {
            assert!(!is_entry_of(name, Slot::A), "{name}");
        }
        assert_eq!(entry_name(Slot::B, true), "nodeos-b+1-0.conf");
        assert_eq!(entry_name(Slot::B, false), "nodeos-b.conf");
        assert!(is_entry_of(&entry_name(Slot::B, true), Slot::B));
    }

    #[test]
    fn an_entry_boots_the_slot_kernel_with_its_command_line() {
        let text = entry(
            "hello 1.0.0 (slot b)\n",
            7,
            Slot::B,
            "console=ttyS0 nodeos.slot=b",
        );
        assert_eq!(
            text,
            "title hello 1.0.0 (slot b)\nsort-key nodeos\nversion 7\nlinux /EFI/nodeos/b.efi\noptions console=ttyS0 nodeos.slot=b rootwait\n"
        );
    }
}
