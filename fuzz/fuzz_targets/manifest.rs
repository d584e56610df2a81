//! Feeds arbitrary bytes to what nodeos reads back from image directories
//! and from the system disk:
//!
//! * `manifest.json` ([`Manifest::from_json`], read by `nodeos run` and
//!   `nodeos deploy`), and the kernel command line in it
//!   ([`slots::slot_cmdline`]);
//! * the checksummed frame every record on the system disk is kept in
//!   ([`frame::decode`]), both on the raw bytes and with the bytes framed
//!   correctly (the fuzzer cannot forge a sha256), with the magic of each
//!   record: the update state ([`State::read`]), a slot's metadata
//!   ([`SlotMeta::decode`]) and the last trial's log tail
//!   ([`slots::decode_log_tail`]).
//!
//! Checks, besides "no panic": a frame decodes to exactly the bytes that
//! were encoded; each record that reads writes back and reads back equal;
//! a state that reads can be updated as init and the host update it (the
//! boot-time rollback of a trial without a verdict) and written as the
//! next copy, which then wins over the copy it was read from;
//! `slot_cmdline` is idempotent and names the slot once.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use nodeos_fuzz::samples;
use nodeos_manifest::Manifest;
use nodeos_manifest::frame;
use nodeos_manifest::slots::{
    self, CMDLINE_SLOT, NO_VERDICT, SLOT_META_LEN, STATE_COPY_LEN, Slot, SlotMeta, State,
};

/// The magic of each record, taken from the bytes the project's own
/// encoders write (the constants are private to `slots`).
struct Magics {
    state: [u8; 16],
    meta: [u8; 16],
    log: [u8; 16],
}

fn magics() -> &'static Magics {
    static MAGICS: OnceLock<Magics> = OnceLock::new();
    MAGICS.get_or_init(|| {
        let first16 = |bytes: &[u8]| -> [u8; 16] { bytes[..16].try_into().unwrap() };
        Magics {
            state: first16(&State::new(Slot::A, "1.0.0").next_copy().1),
            meta: first16(&samples::slot_meta().encode()),
            log: first16(&slots::encode_log_tail("")),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let magics = magics();
    frames(data, &magics.state);

    if let Ok(text) = std::str::from_utf8(data) {
        manifest_json(text);
        cmdline(text);
    }

    state(data);
    state(&framed(&magics.state, data));
    slot_meta(data);
    slot_meta(&framed(&magics.meta, data));
    log_tail(data);
    log_tail(&framed(&magics.log, data));
});

fn framed(magic: &[u8; 16], payload: &[u8]) -> Vec<u8> {
    frame::encode(magic, payload)
}

/// The frame: what decodes is exactly what was encoded.
fn frames(data: &[u8], magic: &[u8; 16]) {
    for max in [0, 16, data.len(), usize::MAX] {
        if let Ok(payload) = frame::decode(magic, data, max) {
            assert!(payload.len() <= max);
            let len = payload.len() + frame::OVERHEAD;
            assert_eq!(frame::encode(magic, payload), &data[..len]);
        }
    }
    let encoded = frame::encode(magic, data);
    assert_eq!(encoded.len(), data.len() + frame::OVERHEAD);
    assert_eq!(frame::decode(magic, &encoded, data.len()), Ok(data));
    let mut longer = encoded.clone();
    longer.extend_from_slice(data);
    assert_eq!(frame::decode(magic, &longer, data.len()), Ok(data));
    if !data.is_empty() {
        assert!(frame::decode(magic, &encoded[..encoded.len() - 1], usize::MAX).is_err());
        assert!(frame::decode(magic, &encoded, data.len() - 1).is_err());
    }
}

/// `manifest.json`: reads back equal after writing.
fn manifest_json(text: &str) {
    let Ok(manifest) = Manifest::from_json(text) else {
        return;
    };
    let written = manifest.to_json();
    assert_eq!(Manifest::from_json(&written).ok().as_ref(), Some(&manifest));
    let _ = manifest.boot_artifacts();
    cmdline(&manifest.kernel.cmdline);
}

/// The kernel command line made for a slot does not change when made
/// again, and names the slot; without quoting (which `dm-mod.create=`
/// uses), it has one `root=` and one slot argument before any `--`.
fn cmdline(text: &str) {
    for slot in [Slot::A, Slot::B] {
        let once = slots::slot_cmdline(text, slot);
        assert_eq!(slots::slot_cmdline(&once, slot), once, "from {text:?}");
        let slot_arg = format!("{CMDLINE_SLOT}{slot}");
        assert!(once.split_whitespace().any(|w| w == slot_arg), "{once:?}");
        if !text.contains('"') {
            let kernel_args = once.split(" -- ").next().unwrap_or("");
            let words: Vec<&str> = kernel_args.split(' ').collect();
            assert_eq!(
                words.iter().filter(|w| **w == slot_arg).count(),
                1,
                "{once:?}"
            );
            let roots = words.iter().filter(|w| w.starts_with("root=")).count();
            assert_eq!(roots, 1, "{once:?}");
        }
    }
}

/// The update state: as read from the state partition, updated as init
/// does at boot, and written as the next copy.
fn state(copy: &[u8]) {
    if copy.len() > STATE_COPY_LEN {
        // A copy is at most STATE_COPY_LEN bytes; longer bytes are two copies.
        let _ = State::read(copy);
        return;
    }
    let mut area = copy.to_vec();
    area.resize(2 * STATE_COPY_LEN, 0);
    let Some(read) = State::read(&area) else {
        return;
    };
    // `read` refuses a counter at u64::MAX (it could not advance). One just
    // below it, which only a forged record has (no writer makes 2^64
    // writes), takes one more write that is then refused: the state stops
    // changing, and nothing panics. The invariants below are for the rest.
    assert!(read.seq < u64::MAX);
    if read.seq == u64::MAX - 1 {
        let _ = read.clone().next_copy();
        return;
    }

    // The boot-time rollback of a slot whose trial gave no verdict.
    let mut next = read.clone();
    let trying = next.trying().unwrap_or(next.active.other());
    next.roll_back(trying, NO_VERDICT, 1);
    let (offset, bytes) = next.next_copy();
    assert_eq!(bytes.len(), STATE_COPY_LEN);
    assert_eq!(next.seq, read.seq + 1);
    let offset = offset as usize;
    area[offset..offset + STATE_COPY_LEN].copy_from_slice(&bytes);
    assert_eq!(
        State::read(&area).as_ref(),
        Some(&next),
        "the new copy wins"
    );
}

/// A slot's metadata: written back, it reads back equal.
fn slot_meta(area: &[u8]) {
    let Ok(meta) = SlotMeta::decode(area) else {
        return;
    };
    let _ = meta.hashes();
    let json = serde_json::to_vec(&meta).expect("slot meta serialises");
    if json.len() + frame::OVERHEAD <= SLOT_META_LEN {
        assert_eq!(SlotMeta::decode(&meta.encode()).as_ref(), Ok(&meta));
    }
}

/// The last trial's log tail: no panic, and what is kept of a text
/// re-encodes to the same tail.
fn log_tail(area: &[u8]) {
    let Some(tail) = slots::decode_log_tail(area) else {
        return;
    };
    // Invalid UTF-8 grows when replaced; a longer text is cut again.
    if tail.len() > slots::LOG_MAX {
        return;
    }
    let again = slots::decode_log_tail(&slots::encode_log_tail(&tail));
    assert_eq!(again.as_deref(), Some(tail.as_str()));
    let _ = slots::last_lines(&tail, 40);
}
