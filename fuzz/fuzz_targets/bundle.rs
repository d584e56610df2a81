//! Feeds arbitrary bytes to what the guest's update agent reads from the
//! network:
//!
//! * an update bundle's head, as `read_head` reads a request body: the
//!   24-byte prefix ([`bundle::parse_prefix`]), then that many bytes of
//!   manifest JSON; and the bytes as the manifest JSON itself. The
//!   manifest goes to [`UpdateManifest::from_json`], which the agent calls
//!   once the signature holds: fuzzing it treats even the key holder as
//!   untrusted, so that a mistake in a signed bundle is refused, never a
//!   panic of PID 1's agent;
//! * the request's `Authorization` header ([`Authorization::parse`]) and a
//!   read token ([`ReadToken::parse`]).
//!
//! Checks, besides "no panic": a head written by [`bundle::encode_head`]
//! reads back the same length; an accepted manifest writes back and reads
//! back equal, its payload and bundle lengths are computed without
//! overflow, and what the agent then writes (the slot metadata, refused
//! when too large as the agent does; the state record of the accepted
//! update, also when it failed on an artefact's hash and the error is
//! kept as the reason) fits where it goes; parsed headers and tokens print in a form
//! that parses back equal.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nodeos_init::update::UpdateError;
use nodeos_manifest::bundle::{self, MAX_MANIFEST, PREFIX_LEN, SIGNATURE_LEN, UpdateManifest};
use nodeos_manifest::frame;
use nodeos_manifest::slots::{
    LastUpdate, SLOT_META_LEN, STATE_COPY_LEN, Slot, SlotMeta, SlotState, SlotStatus, State,
    UpdateResult,
};
use nodeos_manifest::update::{Authorization, ReadToken};

fuzz_target!(|data: &[u8]| {
    if let Some(prefix) = data.get(..PREFIX_LEN)
        && let Ok(len) = bundle::parse_prefix(prefix.try_into().unwrap())
    {
        assert!((1..=MAX_MANIFEST).contains(&len));
        if let Some(json) = data.get(PREFIX_LEN..PREFIX_LEN + len) {
            manifest(json);
        }
    }
    manifest(data);
    head(data);
    if let Ok(text) = std::str::from_utf8(data) {
        auth(text);
    }
});

/// A head written for `json` reads back its length.
fn head(json: &[u8]) {
    let head = bundle::encode_head(json, &[7; SIGNATURE_LEN]);
    assert_eq!(head.len(), PREFIX_LEN + json.len() + SIGNATURE_LEN);
    let prefix: &[u8; PREFIX_LEN] = head[..PREFIX_LEN].try_into().unwrap();
    match bundle::parse_prefix(prefix) {
        Ok(len) => assert_eq!(len, json.len()),
        Err(_) => assert!(json.is_empty() || json.len() > MAX_MANIFEST),
    }
    assert!(bundle::signed_bytes(json).ends_with(json));
}

/// The bundle's manifest, then what the agent derives and writes from it.
fn manifest(json: &[u8]) {
    let Ok(manifest) = UpdateManifest::from_json(json) else {
        return;
    };
    let written = serde_json::to_vec(&manifest).expect("an update manifest serialises");
    assert_eq!(UpdateManifest::from_json(&written).as_ref(), Ok(&manifest));
    for key in manifest.image.boot_artifacts() {
        assert!(manifest.artifact(key).is_some(), "{key} is listed");
    }
    let payload = manifest.payload_len();
    assert!(manifest.bundle_len(json.len()) >= payload);

    // The target slot's metadata, refused when too large (as `plan` does).
    let meta = SlotMeta {
        sequence: manifest.sequence,
        installed_by: "update".into(),
        image: manifest.image.clone(),
    };
    let meta_len = serde_json::to_vec(&meta).unwrap().len() + frame::OVERHEAD;
    if meta_len <= SLOT_META_LEN {
        assert_eq!(SlotMeta::decode(&meta.encode()).as_ref(), Ok(&meta));
    }

    // The state records the agent writes for the update, on an appliance
    // that runs an earlier update of the same image: both slots and the
    // last update carry the image's version.
    let version = &manifest.image.version;
    let mut state = State::new(Slot::A, version);
    *state.slot_mut(Slot::B) = SlotState {
        status: SlotStatus::Writing,
        sequence: manifest.sequence,
        version: version.clone(),
        tries: 0,
    };
    state.max_sequence = manifest.sequence;
    let (_, bytes) = state.next_copy();
    assert_eq!(bytes.len(), STATE_COPY_LEN);
    let slot = state.slot_mut(Slot::B);
    slot.status = SlotStatus::Trying;
    slot.tries = 1;
    state.last_update = Some(LastUpdate {
        sequence: manifest.sequence,
        from: version.clone(),
        to: version.clone(),
        slot: Slot::B,
        result: UpdateResult::Pending,
        reason: String::new(),
        at_ms: u64::MAX,
    });
    let (offset, bytes) = state.next_copy();
    let mut area = vec![0; 2 * STATE_COPY_LEN];
    let at = offset as usize;
    area[at..at + STATE_COPY_LEN].copy_from_slice(&bytes);
    assert_eq!(State::read(&area).as_ref(), Some(&state));

    // A payload artefact that does not match its sha256: the agent
    // records the update as rolled back, with the error as the reason.
    for key in manifest.image.boot_artifacts() {
        let error = UpdateError::HashMismatch {
            artifact: key.to_owned(),
            expected: manifest.artifact(key).unwrap().sha256.clone(),
            actual: "0".repeat(64),
        };
        let mut failed = state.clone();
        *failed.slot_mut(Slot::B) = SlotState::default();
        let last = failed.last_update.as_mut().unwrap();
        last.result = UpdateResult::RolledBack;
        last.reason = error.to_string();
        let (_, bytes) = failed.next_copy();
        assert_eq!(bytes.len(), STATE_COPY_LEN);
    }
}

/// The agent's request authentication: what parses prints back the same.
fn auth(text: &str) {
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    if let Some(auth) = Authorization::parse(text) {
        assert!(auth.key_id.len() <= 64 && auth.nonce.len() == 16);
        assert!(hex(&auth.nonce), "nonce {:?}", auth.nonce);
        assert_eq!(Authorization::parse(&auth.header()), Some(auth));
    }
    if let Some(token) = ReadToken::parse(text) {
        assert!(hex(&token.key_id) && hex(&token.id), "{token:?}");
        assert_eq!(ReadToken::parse(&token.to_string()), Some(token));
    }
}
