//! dm-verity for the read-only layers: what the manifest records of each
//! layer's hash tree, and the kernel command line that makes the kernel
//! check every block it reads from them.
//!
//! Each layer artefact is the filesystem padded to whole [`BLOCK_SIZE`]
//! blocks, followed by its hash tree (dm-verity format version 1: sha256,
//! the salt hashed before each block, 4096-byte data and hash blocks, the
//! tree's top level first), so the artefact's sha256 covers both. The
//! kernel sets the devices up itself from `dm-mod.create=` (`CONFIG_DM_INIT`,
//! no initramfs): the runtime layer becomes `/dev/dm-0`, the root
//! filesystem, and the app layer `/dev/dm-1`, which init mounts. A block
//! that does not match the tree panics the kernel
//! (`panic_on_corruption`): nothing runs on tampered data.

use serde::{Deserialize, Serialize};

use crate::slots::{Part, Slot, partition_name};

/// Data and hash block size, in bytes.
pub const BLOCK_SIZE: u64 = 4096;

/// The kernel parameter that creates device-mapper devices at boot.
pub const DM_CREATE: &str = "dm-mod.create=";

/// The kernel parameter that makes dm-init wait for the partitions under
/// them (NVMe and SCSI disks are probed asynchronously).
pub const DM_WAITFOR: &str = "dm-mod.waitfor=";

/// The device-mapper name of the runtime layer's verity device.
pub const RUNTIME_DEVICE: &str = "nodeos-runtime";

/// The device-mapper name of the app layer's verity device.
pub const APP_DEVICE: &str = "nodeos-app";

/// The root filesystem: the first device `dm-mod.create=` makes.
pub const ROOT: &str = "/dev/dm-0";

/// The kernel's message when a verified block does not match its tree;
/// `nodeos run` recognises it on the console.
pub const CORRUPTION_PANIC: &str = "dm-verity device corrupted";

/// One layer's hash tree, as the manifest records it. The hash algorithm
/// (sha256), the format version (1) and the block sizes are fixed; the
/// tree starts right after the data, at block `data_blocks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verity {
    /// Lower-case hex sha256 of the tree's top block (with the salt).
    pub root_hash: String,
    /// Lower-case hex salt, hashed before every block.
    pub salt: String,
    /// How many [`BLOCK_SIZE`] blocks of data the tree covers.
    pub data_blocks: u64,
}

impl Verity {
    /// The device-mapper table of this layer on `device` (data and tree on
    /// the same device, the tree after the data). A mismatch panics the
    /// kernel; a block is checked the first time it is read, not again
    /// when it is read back after the page cache dropped it
    /// (`check_at_most_once`): the disk changing under a running guest
    /// takes the hypervisor, which the threat model trusts
    /// (docs/security.md), and small VMs re-read node's pages often.
    pub fn table(&self, device: &str) -> String {
        let blocks = self.data_blocks;
        let sectors = blocks * (BLOCK_SIZE / 512);
        format!(
            "0 {sectors} verity 1 {device} {device} {BLOCK_SIZE} {BLOCK_SIZE} {blocks} {blocks} sha256 {} {} 2 panic_on_corruption check_at_most_once",
            self.root_hash, self.salt
        )
    }

    /// Whether the fields are well-formed: hex digests of the right length
    /// and at least one data block. (Whether they match the layer is the
    /// kernel's check.)
    pub fn is_well_formed(&self) -> bool {
        let hex = |s: &str, len: usize| {
            s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        hex(&self.root_hash, 64) && hex(&self.salt, 64) && self.data_blocks > 0
    }
}

/// `dm-mod.create="…"`: the runtime layer's verity device on `runtime_dev`
/// and the app layer's on `app_dev`, in that order (so the runtime layer is
/// [`ROOT`]).
pub fn dm_create(runtime: &Verity, runtime_dev: &str, app: &Verity, app_dev: &str) -> String {
    format!(
        "{DM_CREATE}\"{RUNTIME_DEVICE},,,ro,{};{APP_DEVICE},,,ro,{}\"",
        runtime.table(runtime_dev),
        app.table(app_dev)
    )
}

/// Splits a kernel command line into its parameters the way the kernel
/// does: at whitespace outside double quotes.
pub fn cmdline_words(cmdline: &str) -> Vec<&str> {
    let mut words = Vec::new();
    let mut start = None;
    let mut quoted = false;
    for (i, c) in cmdline.char_indices() {
        if c == '"' {
            quoted = !quoted;
        }
        if c.is_whitespace() && !quoted {
            if let Some(s) = start.take() {
                words.push(&cmdline[s..i]);
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        words.push(&cmdline[s..]);
    }
    words
}

/// The `dm-mod.create=` parameter `word` with the devices under the
/// runtime and app verity devices replaced by `slot`'s partitions; other
/// devices are kept. `None` if `word` is not `dm-mod.create=`.
pub fn dm_create_for_slot(word: &str, slot: Slot) -> Option<String> {
    let value = dm_create_value(word)?;
    if value.contains('"') {
        // Not what a build writes; quoting it again would move its quotes.
        return Some(word.to_owned());
    }
    let devices: Vec<String> = value
        .split(';')
        .map(|device| {
            let fields: Vec<&str> = device.splitn(5, ',').collect();
            let part = match device_name(device) {
                RUNTIME_DEVICE => Part::Runtime,
                APP_DEVICE => Part::App,
                _ => return device.to_owned(),
            };
            let [name, uuid, minor, flags, table] = fields[..] else {
                return device.to_owned();
            };
            let partition = format!("PARTLABEL={}", partition_name(part, slot));
            let mut words: Vec<&str> = table.split(' ').collect();
            // `start length verity version data_dev hash_dev …`
            if words.get(2) == Some(&"verity") && words.len() > 5 {
                words[4] = &partition;
                words[5] = &partition;
            }
            format!("{name},{uuid},{minor},{flags},{}", words.join(" "))
        })
        .collect();
    Some(format!("{DM_CREATE}\"{}\"", devices.join(";")))
}

/// Whether `cmdline` has the kernel create the device-mapper device `name`
/// (in `dm-mod.create=`).
pub fn creates_device(cmdline: &str, name: &str) -> bool {
    cmdline_words(cmdline)
        .into_iter()
        .filter_map(dm_create_value)
        .any(|value| value.split(';').any(|device| device_name(device) == name))
}

/// The value of the `dm-mod.create=` parameter `word` without the quotes
/// around it; `None` if `word` is another parameter.
fn dm_create_value(word: &str) -> Option<&str> {
    let value = word.strip_prefix(DM_CREATE)?;
    Some(
        value
            .strip_prefix('"')
            .and_then(|inner| inner.strip_suffix('"'))
            .unwrap_or(value),
    )
}

/// The name of one device of `dm-mod.create=`: its first field.
fn device_name(device: &str) -> &str {
    device.split(',').next().unwrap_or_default().trim()
}

/// `dm-mod.waitfor=` for `slot`'s runtime and app partitions.
pub fn dm_waitfor(slot: Slot) -> String {
    format!(
        "{DM_WAITFOR}PARTLABEL={},PARTLABEL={}",
        partition_name(Part::Runtime, slot),
        partition_name(Part::App, slot)
    )
}

/// Whether the command line sets up the verity devices (the image was
/// built with dm-verity): a whole `dm-mod.create=` among the kernel's
/// parameters (before `--`).
pub fn has_verity(cmdline: &str) -> bool {
    cmdline_words(cmdline)
        .into_iter()
        .take_while(|word| *word != "--")
        .any(|word| is_balanced(word) && word.starts_with(DM_CREATE))
}

/// Whether `word` closes every quote it opens. One that does not would
/// swallow the rest of the line; no build writes one.
pub fn is_balanced(word: &str) -> bool {
    word.matches('"').count().is_multiple_of(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verity(fill: char, blocks: u64) -> Verity {
        Verity {
            root_hash: fill.to_string().repeat(64),
            salt: "5".repeat(64),
            data_blocks: blocks,
        }
    }

    #[test]
    fn the_table_is_what_dm_verity_reads() {
        let table = verity('a', 100).table("/dev/vda");
        assert_eq!(
            table,
            format!(
                "0 800 verity 1 /dev/vda /dev/vda 4096 4096 100 100 sha256 {} {} 2 panic_on_corruption check_at_most_once",
                "a".repeat(64),
                "5".repeat(64)
            )
        );
    }

    #[test]
    fn well_formed_needs_hex_digests_and_data() {
        assert!(verity('a', 1).is_well_formed());
        assert!(!verity('a', 0).is_well_formed());
        assert!(!verity('A', 1).is_well_formed());
        assert!(!verity('g', 1).is_well_formed());
        let mut short = verity('a', 1);
        short.root_hash.pop();
        assert!(!short.is_well_formed());
    }

    #[test]
    fn words_split_outside_quotes_only() {
        assert_eq!(
            cmdline_words(" a  b=\"c d;e\"   f=\"\" g"),
            ["a", "b=\"c d;e\"", "f=\"\"", "g"]
        );
        assert_eq!(cmdline_words(""), Vec::<&str>::new());
        assert_eq!(cmdline_words("x=\"open"), ["x=\"open"]);
    }

    #[test]
    fn slots_replace_the_devices_of_both_layers_only() {
        let create = dm_create(&verity('a', 8), "/dev/vda", &verity('b', 2), "/dev/vdb");
        let words = cmdline_words(&create);
        assert_eq!(words, [create.as_str()], "one parameter");
        let b = dm_create_for_slot(&create, Slot::B).unwrap();
        assert_eq!(
            b,
            dm_create(
                &verity('a', 8),
                "PARTLABEL=nodeos-runtime-b",
                &verity('b', 2),
                "PARTLABEL=nodeos-app-b"
            )
        );
        // Again, from one slot to the other.
        assert_eq!(
            dm_create_for_slot(&b, Slot::A).unwrap(),
            dm_create(
                &verity('a', 8),
                "PARTLABEL=nodeos-runtime-a",
                &verity('b', 2),
                "PARTLABEL=nodeos-app-a"
            )
        );
        // A device of another name is left alone.
        let other = "dm-mod.create=\"other,,,ro,0 8 linear /dev/vdc 0\"";
        assert_eq!(dm_create_for_slot(other, Slot::A).unwrap(), other);
        // Quotes inside the value (found by fuzzing): kept as they are.
        for odd in ["dm-mod.create=a\"b c\"", "dm-mod.create=\"a\"b\""] {
            assert_eq!(dm_create_for_slot(odd, Slot::A).unwrap(), odd);
        }
        assert_eq!(dm_create_for_slot("root=/dev/vda", Slot::A), None);
    }

    #[test]
    fn verity_is_seen_on_the_command_line() {
        let create = dm_create(&verity('a', 8), "/dev/vda", &verity('b', 2), "/dev/vdb");
        assert!(has_verity(&format!(
            "console=ttyS0 root={ROOT} ro {create} quiet"
        )));
        assert!(!has_verity("console=ttyS0 root=/dev/vda ro"));
        assert!(!has_verity("ro dm-mod.create=\"open"));
        assert!(!has_verity(&format!("ro -- {create}")));
        assert_eq!(
            dm_waitfor(Slot::A),
            "dm-mod.waitfor=PARTLABEL=nodeos-runtime-a,PARTLABEL=nodeos-app-a"
        );
    }

    #[test]
    fn the_devices_created_are_found_by_name() {
        let create = dm_create(&verity('a', 8), "/dev/vda", &verity('b', 2), "/dev/vdb");
        let cmdline = format!("console=ttyS0 root={ROOT} ro {create} quiet");
        assert!(creates_device(&cmdline, APP_DEVICE));
        assert!(creates_device(&cmdline, RUNTIME_DEVICE));
        assert!(!creates_device(&cmdline, "nodeos"));
        let runtime_only = format!("{DM_CREATE}{RUNTIME_DEVICE},,,ro,0 8 verity");
        assert!(creates_device(&runtime_only, RUNTIME_DEVICE));
        assert!(!creates_device(&runtime_only, APP_DEVICE));
        assert!(!creates_device(&format!("app={APP_DEVICE},"), APP_DEVICE));
    }
}
