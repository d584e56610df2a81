//! The A/B system disk: partition names, the update state record and each
//! slot's metadata. The host (`nodeos run`, the bootloader) and the guest
//! (init's update agent and health check) both read and write these.
//!
//! The system disk is GPT. Its partitions are found by name
//! ([`partition_name`]): the host through the GPT, the kernel through
//! `root=PARTLABEL=`, init through `PARTNAME=` in sysfs.
//!
//! | partition | contents |
//! |---|---|
//! | `nodeos-state` | two [`State`] copies at 0 and [`STATE_COPY_LEN`]; the last trial's log tail at [`LOG_OFFSET`] |
//! | `nodeos-boot-a`/`-b` | [`SlotMeta`] in the first [`SLOT_META_LEN`] bytes, then the kernel |
//! | `nodeos-runtime-a`/`-b` | the runtime layer, as built |
//! | `nodeos-app-a`/`-b` | the app layer, as built |

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Manifest;
use crate::frame::{self, FrameError};
use crate::verity;

/// One of the two slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    /// The other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// `"a"` or `"b"`.
    pub fn parse(text: &str) -> Option<Slot> {
        match text {
            "a" => Some(Slot::A),
            "b" => Some(Slot::B),
            _ => None,
        }
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a slot partition holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// [`SlotMeta`] and the kernel.
    Boot,
    /// The runtime layer (the root filesystem).
    Runtime,
    /// The app layer.
    App,
}

impl Part {
    pub const ALL: [Part; 3] = [Part::Boot, Part::Runtime, Part::App];

    pub fn as_str(self) -> &'static str {
        match self {
            Part::Boot => "boot",
            Part::Runtime => "runtime",
            Part::App => "app",
        }
    }
}

/// GPT name of the state partition.
pub const STATE_PARTITION: &str = "nodeos-state";

/// GPT name of a slot's partition: `nodeos-app-b`, …
pub fn partition_name(part: Part, slot: Slot) -> String {
    format!("nodeos-{}-{}", part.as_str(), slot.as_str())
}

/// Kernel command line argument naming the slot being booted.
pub const CMDLINE_SLOT: &str = "nodeos.slot=";

/// Why a trial with no tries left is rolled back.
pub const NO_VERDICT: &str = "the new version never confirmed it was healthy (it did not reach a verdict within its trial boot)";

/// Bytes of one state copy (two copies, at 0 and at this offset).
pub const STATE_COPY_LEN: usize = 4096;
/// Offset of the last trial's log tail in the state partition.
pub const LOG_OFFSET: u64 = 64 << 10;
/// Largest log tail kept, in bytes.
pub const LOG_MAX: usize = 60 << 10;
/// Size of the state partition.
pub const STATE_PARTITION_LEN: u64 = 1 << 20;
/// Bytes at the start of a boot partition reserved for [`SlotMeta`]; the
/// kernel follows.
pub const SLOT_META_LEN: usize = 64 << 10;
/// Longest `reason` kept in [`LastUpdate`].
pub const MAX_REASON: usize = 1024;

const STATE_MAGIC: &[u8; 16] = b"NODEOS-STATE\0\0\0\0";
const META_MAGIC: &[u8; 16] = b"NODEOS-SLOTMETA\0";
const LOG_MAGIC: &[u8; 16] = b"NODEOS-LOGTAIL\0\0";

/// Where a slot stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotStatus {
    /// Never written, or a write was abandoned.
    #[default]
    Empty,
    /// An update is being written into it.
    Writing,
    /// Written and verified; booted as a trial until it passes or fails the health check.
    Trying,
    /// Committed: passed its health check (or installed by the host).
    Good,
    /// Failed its trial.
    Bad,
}

impl SlotStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SlotStatus::Empty => "empty",
            SlotStatus::Writing => "writing",
            SlotStatus::Trying => "trying",
            SlotStatus::Good => "good",
            SlotStatus::Bad => "bad",
        }
    }
}

/// One slot in the [`State`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SlotState {
    pub status: SlotStatus,
    /// The signed sequence of the update that wrote it (0 when the host installed it).
    #[serde(default)]
    pub sequence: u64,
    /// The app's version (package.json `version`), for people.
    #[serde(default)]
    pub version: String,
    /// Trial boots left; the host takes one before each trial boot.
    #[serde(default)]
    pub tries: u32,
}

/// How the last update ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateResult {
    /// Written; the trial has not given a verdict yet.
    Pending,
    /// The new version passed its health check and is active.
    Committed,
    /// The new version failed; the old one is active again.
    RolledBack,
}

impl UpdateResult {
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateResult::Pending => "pending",
            UpdateResult::Committed => "committed",
            UpdateResult::RolledBack => "rolled_back",
        }
    }
}

/// The last update and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastUpdate {
    pub sequence: u64,
    /// Version before the update.
    pub from: String,
    /// Version the update brought.
    pub to: String,
    /// The slot it was written to.
    pub slot: Slot,
    pub result: UpdateResult,
    /// Why it was rolled back, or how the health check passed.
    #[serde(default)]
    pub reason: String,
    /// When the result was recorded (unix ms, guest or host clock).
    #[serde(default)]
    pub at_ms: u64,
}

/// The update state record: which slot is active and where each stands.
///
/// Unknown fields are ignored on purpose: after a rollback an older init
/// reads what a newer one wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Always 1 for now.
    pub format: u32,
    /// Write counter: each write stores `seq + 1` in the other copy.
    pub seq: u64,
    /// The committed slot, booted unless the other is on trial.
    pub active: Slot,
    /// The highest update sequence ever accepted; a bundle must be above it.
    pub max_sequence: u64,
    pub a: SlotState,
    pub b: SlotState,
    #[serde(default)]
    pub last_update: Option<LastUpdate>,
}

impl State {
    /// A fresh state: `active` good with `version`, the other empty.
    pub fn new(active: Slot, version: &str) -> State {
        let mut state = State {
            format: 1,
            seq: 0,
            active,
            max_sequence: 0,
            a: SlotState::default(),
            b: SlotState::default(),
            last_update: None,
        };
        *state.slot_mut(active) = SlotState {
            status: SlotStatus::Good,
            sequence: 0,
            version: version.to_owned(),
            tries: 0,
        };
        state
    }

    pub fn slot(&self, slot: Slot) -> &SlotState {
        match slot {
            Slot::A => &self.a,
            Slot::B => &self.b,
        }
    }

    pub fn slot_mut(&mut self, slot: Slot) -> &mut SlotState {
        match slot {
            Slot::A => &mut self.a,
            Slot::B => &mut self.b,
        }
    }

    /// Marks the inactive `slot` bad and the last update (for it, or a new
    /// record of it) rolled back for `reason` at `now_ms`: its trial
    /// failed, or ended with no verdict.
    pub fn roll_back(&mut self, slot: Slot, reason: &str, now_ms: u64) {
        let from = self.slot(self.active).version.clone();
        let entry = self.slot_mut(slot);
        entry.status = SlotStatus::Bad;
        entry.tries = 0;
        let (sequence, to) = (entry.sequence, entry.version.clone());
        let last = match &mut self.last_update {
            Some(last) if last.slot == slot => last,
            last => last.insert(LastUpdate {
                sequence,
                from,
                to,
                slot,
                result: UpdateResult::RolledBack,
                reason: String::new(),
                at_ms: now_ms,
            }),
        };
        last.result = UpdateResult::RolledBack;
        last.reason = reason.to_owned();
        last.at_ms = now_ms;
    }

    /// The slot on trial, if any.
    pub fn trying(&self) -> Option<Slot> {
        [Slot::A, Slot::B]
            .into_iter()
            .find(|&s| self.slot(s).status == SlotStatus::Trying)
    }

    /// Bumps `seq` and encodes this state for the copy it now belongs in;
    /// returns the byte offset of that copy in the state partition and the
    /// bytes to write there (exactly [`STATE_COPY_LEN`]).
    ///
    /// The reason of the last update is cut to [`MAX_REASON`] bytes, and
    /// further while the record would not fit its copy (a reason full of
    /// characters JSON escapes). Names and versions are at most
    /// [`crate::bundle::MAX_NAME`] bytes with nothing to escape (the build
    /// and the agent refuse others), so the rest always fits.
    pub fn next_copy(&mut self) -> (u64, Vec<u8>) {
        self.seq += 1;
        let mut max_reason = MAX_REASON;
        loop {
            if let Some(last) = &mut self.last_update {
                truncate_utf8(&mut last.reason, max_reason);
            }
            let json = serde_json::to_vec(self).expect("state serialises");
            let mut bytes = frame::encode(STATE_MAGIC, &json);
            let reason_left = self
                .last_update
                .as_ref()
                .is_some_and(|l| !l.reason.is_empty());
            if bytes.len() > STATE_COPY_LEN && reason_left {
                max_reason /= 2;
                continue;
            }
            assert!(bytes.len() <= STATE_COPY_LEN, "state record too large");
            bytes.resize(STATE_COPY_LEN, 0);
            return ((self.seq % 2) * STATE_COPY_LEN as u64, bytes);
        }
    }

    /// Reads the newest valid copy from the first `2 * STATE_COPY_LEN`
    /// bytes of the state partition; `None` if neither copy is valid. A
    /// copy that breaks what every writer keeps to (see `is_sane`) is not
    /// valid.
    pub fn read(area: &[u8]) -> Option<State> {
        area.chunks(STATE_COPY_LEN)
            .take(2)
            .filter_map(|copy| {
                let json = frame::decode(STATE_MAGIC, copy, STATE_COPY_LEN).ok()?;
                serde_json::from_slice::<State>(json).ok()
            })
            .filter(State::is_sane)
            .max_by_key(|state| state.seq)
    }

    /// What every writer keeps to: a write counter that can still advance,
    /// and versions the build and the agent take (at most
    /// [`crate::bundle::MAX_NAME`] bytes, nothing JSON escapes), so that
    /// the next copy always fits.
    fn is_sane(&self) -> bool {
        let plain = crate::bundle::is_plain_name;
        let last = self.last_update.as_ref();
        self.seq < u64::MAX
            && plain(&self.a.version)
            && plain(&self.b.version)
            && last.is_none_or(|l| plain(&l.from) && plain(&l.to))
    }
}

/// What a slot holds: the image manifest as built (its artefact sizes and
/// sha256s) and the update that wrote it. Framed at the start of the boot
/// partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotMeta {
    /// The update's sequence (0 when the host installed the image).
    pub sequence: u64,
    /// `host` or `update`.
    pub installed_by: String,
    pub image: Manifest,
}

impl SlotMeta {
    /// The framed bytes to write at the start of the boot partition.
    pub fn encode(&self) -> Vec<u8> {
        let json = serde_json::to_vec(self).expect("slot meta serialises");
        let bytes = frame::encode(META_MAGIC, &json);
        assert!(bytes.len() <= SLOT_META_LEN, "slot metadata too large");
        bytes
    }

    /// Reads the metadata from the start of a boot partition.
    pub fn decode(area: &[u8]) -> Result<SlotMeta, SlotMetaError> {
        let json = frame::decode(META_MAGIC, area, SLOT_META_LEN).map_err(SlotMetaError::Frame)?;
        serde_json::from_slice(json).map_err(|e| SlotMetaError::Json(e.to_string()))
    }

    /// Artefact key → sha256 of the kernel, runtime and app.
    pub fn hashes(&self) -> BTreeMap<String, String> {
        self.image
            .boot_artifacts()
            .into_iter()
            .filter_map(|key| {
                let artifact = self.image.artifacts.get(key)?;
                Some((key.to_owned(), artifact.sha256.clone()))
            })
            .collect()
    }
}

/// Why a slot's metadata could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotMetaError {
    Frame(FrameError),
    Json(String),
}

impl std::fmt::Display for SlotMetaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SlotMetaError::Frame(FrameError::NoMagic) => write!(f, "the slot is empty"),
            SlotMetaError::Frame(e) => write!(f, "slot metadata: {e}"),
            SlotMetaError::Json(e) => write!(f, "slot metadata is not valid: {e}"),
        }
    }
}

impl std::error::Error for SlotMetaError {}

/// The framed log tail to write at [`LOG_OFFSET`]: the last [`LOG_MAX`]
/// bytes of `text`, cut at a line start when possible.
pub fn encode_log_tail(text: &str) -> Vec<u8> {
    let mut start = text.len().saturating_sub(LOG_MAX);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let mut tail = &text[start..];
    if start > 0
        && let Some(newline) = tail.find('\n')
    {
        tail = &tail[newline + 1..];
    }
    frame::encode(LOG_MAGIC, tail.as_bytes())
}

/// The log tail read from the bytes at [`LOG_OFFSET`], if one was written.
pub fn decode_log_tail(area: &[u8]) -> Option<String> {
    let bytes = frame::decode(LOG_MAGIC, area, LOG_MAX).ok()?;
    Some(String::from_utf8_lossy(bytes).into_owned())
}

/// The last `n` lines of `text` (a final newline does not start a line).
pub fn last_lines(text: &str, n: usize) -> &str {
    let body = text.strip_suffix('\n').unwrap_or(text);
    match body.rmatch_indices('\n').nth(n.saturating_sub(1)) {
        Some((at, _)) if n > 0 => &text[at + 1..],
        _ => text,
    }
}

fn truncate_utf8(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

/// The kernel command line `cmdline` made to boot `slot` of the system
/// disk: its `root=` argument (whatever its value; one is added if there
/// is none) becomes `root=PARTLABEL=nodeos-runtime-<slot>`, and
/// `nodeos.slot=<slot>` is added, replacing any there was. Arguments after
/// `--` (init's, not the kernel's) are kept as they are, after both.
///
/// An image built with dm-verity keeps `root=` (the verity device), has
/// the devices under its verity devices in `dm-mod.create=` become the
/// slot's runtime and app partitions, and gets `dm-mod.waitfor=` for them
/// (see [`crate::verity`]).
pub fn slot_cmdline(cmdline: &str, slot: Slot) -> String {
    let verity = verity::has_verity(cmdline);
    let mut words = verity::cmdline_words(cmdline).into_iter();
    let root = format!("root=PARTLABEL={}", partition_name(Part::Runtime, slot));
    let mut args: Vec<String> = Vec::new();
    let mut has_root = false;
    let mut init_args = None;
    for word in words.by_ref() {
        if word == "--" {
            init_args = Some(word);
            break;
        }
        if !verity::is_balanced(word) {
            // It would swallow the rest of the line (`root=`, `nodeos.slot=`).
            continue;
        }
        if word.starts_with("root=") {
            if !has_root {
                args.push(if verity {
                    word.to_owned()
                } else {
                    root.clone()
                });
                has_root = true;
            }
        } else if let Some(create) = verity::dm_create_for_slot(word, slot) {
            args.push(create);
        } else if !word.starts_with(CMDLINE_SLOT) && !word.starts_with(verity::DM_WAITFOR) {
            args.push(word.to_owned());
        }
    }
    if !has_root {
        args.push(if verity {
            format!("root={}", verity::ROOT)
        } else {
            root
        });
    }
    if verity {
        args.push(verity::dm_waitfor(slot));
    }
    args.push(format!("{CMDLINE_SLOT}{slot}"));
    args.extend(init_args.map(str::to_owned));
    args.extend(words.map(str::to_owned));
    args.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names() {
        assert_eq!(partition_name(Part::App, Slot::B), "nodeos-app-b");
        assert_eq!(partition_name(Part::Runtime, Slot::A), "nodeos-runtime-a");
        assert_eq!(Slot::A.other(), Slot::B);
        assert_eq!(Slot::parse("b"), Some(Slot::B));
        assert_eq!(Slot::parse("c"), None);
    }

    fn area(copies: &[(u64, Vec<u8>)]) -> Vec<u8> {
        let mut area = vec![0; 2 * STATE_COPY_LEN];
        for (offset, bytes) in copies {
            let at = *offset as usize;
            area[at..at + bytes.len()].copy_from_slice(bytes);
        }
        area
    }

    #[test]
    fn the_newest_valid_copy_wins_and_a_torn_one_falls_back() {
        let mut state = State::new(Slot::A, "1.0.0");
        let first = state.next_copy();
        state.max_sequence = 7;
        let second = state.next_copy();
        assert_ne!(first.0, second.0, "copies alternate");
        let both = area(&[first.clone(), second.clone()]);
        assert_eq!(State::read(&both).unwrap().max_sequence, 7);

        let mut torn = second.clone();
        torn.1[40] ^= 0xff;
        let read = State::read(&area(&[first, torn])).unwrap();
        assert_eq!((read.seq, read.max_sequence), (1, 0));
        assert_eq!(State::read(&area(&[])), None);
    }

    #[test]
    fn unknown_fields_from_a_newer_writer_are_ignored() {
        let json = r#"{"format":1,"seq":3,"active":"b","max_sequence":9,
            "a":{"status":"bad","future":1},"b":{"status":"good","version":"2"},"future":true}"#;
        let state: State = serde_json::from_str(json).unwrap();
        assert_eq!(state.active, Slot::B);
        assert_eq!(state.a.status, SlotStatus::Bad);
        assert_eq!(state.trying(), None);
    }

    #[test]
    fn a_long_reason_is_cut_to_fit_the_copy() {
        let mut state = State::new(Slot::A, "1");
        state.last_update = Some(LastUpdate {
            sequence: 1,
            from: "1".into(),
            to: "2".into(),
            slot: Slot::B,
            result: UpdateResult::RolledBack,
            reason: "é".repeat(5000),
            at_ms: 0,
        });
        let (_, bytes) = state.next_copy();
        let read = State::read(&area(&[(STATE_COPY_LEN as u64, bytes)])).unwrap();
        assert!(read.last_update.unwrap().reason.len() <= MAX_REASON);

        // A reason JSON escapes six times over (found by fuzzing), with the
        // longest versions the build and the agent take.
        let version = "9".repeat(crate::bundle::MAX_NAME);
        let mut state = State::new(Slot::A, &version);
        state.b.version = version.clone();
        state.last_update = Some(LastUpdate {
            sequence: 1,
            from: version.clone(),
            to: version.clone(),
            slot: Slot::B,
            result: UpdateResult::RolledBack,
            reason: "\u{1}".repeat(5000),
            at_ms: 0,
        });
        let (offset, bytes) = state.next_copy();
        assert_eq!(bytes.len(), STATE_COPY_LEN);
        let read = State::read(&area(&[(offset, bytes)])).unwrap();
        let reason = read.last_update.unwrap().reason;
        assert!(
            !reason.is_empty() && reason.len() < MAX_REASON,
            "{}",
            reason.len()
        );
    }

    #[test]
    fn a_copy_whose_counter_cannot_advance_is_not_read() {
        let mut state = State::new(Slot::A, "1");
        state.next_copy();
        let (offset, good) = state.next_copy();
        state.seq = u64::MAX - 1;
        state.active = Slot::B;
        let (stuck_offset, stuck) = state.next_copy();
        assert_eq!(state.seq, u64::MAX);
        assert_ne!(offset, stuck_offset);
        let read = State::read(&area(&[(offset, good), (stuck_offset, stuck)])).unwrap();
        assert_eq!((read.seq, read.active), (2, Slot::A));

        // Nor is one with a version no build or bundle has.
        for version in ["9".repeat(257), "1\u{7}".into(), "1\"".into()] {
            let mut state = State::new(Slot::A, "1");
            state.b.version = version.clone();
            state.seq = 1;
            let (offset, bad) = state.next_copy();
            assert_eq!(State::read(&area(&[(offset, bad)])), None, "{version:?}");
        }
    }

    #[test]
    fn log_tail_keeps_the_end_from_a_line_start() {
        let text: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        let tail = decode_log_tail(&encode_log_tail(&text)).unwrap();
        assert!(tail.len() <= LOG_MAX);
        assert!(tail.starts_with("line "), "{}", &tail[..20]);
        assert!(tail.ends_with("line 19999\n"));
        assert_eq!(decode_log_tail(&[0; 100]), None);
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(last_lines("a\nb", 5), "a\nb");
    }

    #[test]
    fn a_verity_cmdline_keeps_root_and_verifies_the_slots_partitions() {
        let layer = |fill: &str| crate::verity::Verity {
            root_hash: fill.repeat(64),
            salt: "5".repeat(64),
            data_blocks: 4,
        };
        let files = crate::verity::dm_create(&layer("a"), "/dev/vda", &layer("b"), "/dev/vdb");
        let cmdline = format!("console=ttyS0 root=/dev/dm-0 ro {files} panic=-1");
        let slot_b = crate::verity::dm_create(
            &layer("a"),
            "PARTLABEL=nodeos-runtime-b",
            &layer("b"),
            "PARTLABEL=nodeos-app-b",
        );
        let waitfor = "dm-mod.waitfor=PARTLABEL=nodeos-runtime-b,PARTLABEL=nodeos-app-b";
        let expected =
            format!("console=ttyS0 root=/dev/dm-0 ro {slot_b} panic=-1 {waitfor} nodeos.slot=b");
        assert_eq!(slot_cmdline(&cmdline, Slot::B), expected);
        // Idempotent, and back to the other slot.
        assert_eq!(slot_cmdline(&expected, Slot::B), expected);
        let slot_a = slot_cmdline(&expected, Slot::A);
        assert!(
            slot_a.contains("PARTLABEL=nodeos-app-a PARTLABEL=nodeos-app-a"),
            "{slot_a}"
        );
        assert!(!slot_a.contains("-b"), "{slot_a}");
    }

    #[test]
    fn slot_cmdline_replaces_root_and_the_slot() {
        let cases = [
            (
                "console=ttyS0 root=/dev/vda ro",
                Slot::B,
                "console=ttyS0 root=PARTLABEL=nodeos-runtime-b ro nodeos.slot=b",
            ),
            (
                "console=ttyS0  ro quiet",
                Slot::A,
                "console=ttyS0 ro quiet root=PARTLABEL=nodeos-runtime-a nodeos.slot=a",
            ),
            (
                "root=PARTLABEL=nodeos-runtime-a rootfstype=erofs nodeos.slot=a ro",
                Slot::B,
                "root=PARTLABEL=nodeos-runtime-b rootfstype=erofs ro nodeos.slot=b",
            ),
            (
                "root=/dev/vda root=/dev/vdb panic=-1",
                Slot::A,
                "root=PARTLABEL=nodeos-runtime-a panic=-1 nodeos.slot=a",
            ),
            (
                "console=ttyS0 root=/dev/vda -- root=init-arg nodeos.slot=x",
                Slot::B,
                "console=ttyS0 root=PARTLABEL=nodeos-runtime-b nodeos.slot=b -- root=init-arg nodeos.slot=x",
            ),
            ("", Slot::A, "root=PARTLABEL=nodeos-runtime-a nodeos.slot=a"),
            // An unbalanced quote (found by fuzzing) is dropped.
            (
                "console=ttyS0 x=\"open root=/dev/vda",
                Slot::A,
                "console=ttyS0 root=PARTLABEL=nodeos-runtime-a nodeos.slot=a",
            ),
            (
                "\"",
                Slot::A,
                "root=PARTLABEL=nodeos-runtime-a nodeos.slot=a",
            ),
            (
                "ro dm-mod.create=\"open",
                Slot::A,
                "ro root=PARTLABEL=nodeos-runtime-a nodeos.slot=a",
            ),
        ];
        for (cmdline, slot, expected) in cases {
            assert_eq!(slot_cmdline(cmdline, slot), expected, "{cmdline:?}");
            assert_eq!(slot_cmdline(expected, slot), expected, "again: {cmdline:?}");
        }
    }
}
