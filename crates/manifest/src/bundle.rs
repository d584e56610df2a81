//! The update bundle `nodeos deploy` uploads and the agent installs.
//!
//! ```text
//! "NODEOS-BUNDLE\0\0\0" | u32 LE format (1) | u32 LE H | H bytes UpdateManifest JSON
//! | 64-byte ed25519 signature over SIGNING_CONTEXT ‖ those H bytes | payload
//! ```
//!
//! The payload is the artefacts whose [`Source`] is `Bundle`, in the order
//! of [`UpdateManifest::payload`], each exactly its manifest size. The
//! others are already on the appliance (`Slot`): the agent keeps or copies
//! them, checking the same sha256.

use serde::{Deserialize, Serialize};

use crate::Manifest;
use crate::update::PublicKey;

/// First bytes of a bundle.
pub const MAGIC: &[u8; 16] = b"NODEOS-BUNDLE\0\0\0";
/// The bundle layout version.
pub const FORMAT: u32 = 1;
/// Bytes before the manifest JSON: magic, format and its length.
pub const PREFIX_LEN: usize = 24;
/// Largest manifest JSON accepted.
pub const MAX_MANIFEST: usize = 64 << 10;
/// Length of the signature after the manifest.
pub const SIGNATURE_LEN: usize = 64;
/// Longest image name or version a bundle may carry (npm allows 214 for
/// names).
pub const MAX_NAME: usize = 256;

/// Whether `text` may be an image's name or version where bundles and the
/// update state record carry it: at most [`MAX_NAME`] bytes and nothing
/// JSON escapes (a control character takes six bytes there, and the 4 KiB
/// state record holds a version four times).
pub fn is_plain_name(text: &str) -> bool {
    text.len() <= MAX_NAME && !text.contains(|c: char| c.is_control() || c == '"' || c == '\\')
}

/// What the signature covers, before the manifest bytes.
pub const SIGNING_CONTEXT: &[u8] = b"nodeos-bundle-v1\0";

/// The signed part of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateManifest {
    /// Always [`FORMAT`].
    pub format: u32,
    /// The app's name; the agent refuses a bundle for another appliance.
    pub appliance: String,
    /// Must be above every sequence the appliance accepted before.
    pub sequence: u64,
    /// [`PublicKey::key_id`] of the signing key.
    pub key_id: String,
    /// Whether going to a lower version was asked for (`--allow-downgrade`).
    #[serde(default)]
    pub downgrade: bool,
    /// The image as built: its artefacts' sizes and sha256s.
    pub image: Manifest,
    /// Where each boot artefact (kernel, runtime, app) comes from.
    pub payload: Vec<PayloadEntry>,
}

/// One boot artefact of the new version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayloadEntry {
    /// Key in the image's artefacts: `kernel`, `runtime` or `app`.
    pub artifact: String,
    pub source: Source,
}

/// Where an artefact's bytes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// In the bundle's payload.
    Bundle,
    /// Already in one of the appliance's slots (same sha256).
    Slot,
}

/// Why a bundle (or its head) is refused before any payload is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleError {
    NotABundle,
    Format(u32),
    ManifestTooLarge(usize),
    Manifest(String),
}

impl std::fmt::Display for BundleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BundleError::NotABundle => write!(f, "not a nodeos update bundle"),
            BundleError::Format(v) => {
                write!(
                    f,
                    "bundle format {v} is not supported (this reads format {FORMAT})"
                )
            }
            BundleError::ManifestTooLarge(n) => {
                write!(f, "bundle manifest is {n} bytes, more than {MAX_MANIFEST}")
            }
            BundleError::Manifest(e) => write!(f, "bundle manifest is not valid: {e}"),
        }
    }
}

impl std::error::Error for BundleError {}

/// Whether `key` is a well-formed artefact key: 1 to 64 ASCII letters,
/// digits, `.`, `_` or `-` (the builder's are `kernel`, `runtime`, `app`).
fn is_artifact_key(key: &str) -> bool {
    (1..=64).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The manifest JSON length from the first [`PREFIX_LEN`] bytes.
pub fn parse_prefix(prefix: &[u8; PREFIX_LEN]) -> Result<usize, BundleError> {
    if &prefix[..16] != MAGIC {
        return Err(BundleError::NotABundle);
    }
    let word = |at: usize| u32::from_le_bytes(prefix[at..at + 4].try_into().expect("4 bytes"));
    if word(16) != FORMAT {
        return Err(BundleError::Format(word(16)));
    }
    let len = word(20) as usize;
    if len == 0 || len > MAX_MANIFEST {
        return Err(BundleError::ManifestTooLarge(len));
    }
    Ok(len)
}

/// The bytes a bundle signature covers: [`SIGNING_CONTEXT`] then the
/// manifest JSON exactly as it appears in the bundle.
pub fn signed_bytes(manifest_json: &[u8]) -> Vec<u8> {
    [SIGNING_CONTEXT, manifest_json].concat()
}

/// The head of a bundle: prefix, manifest JSON and signature. The payload follows it.
pub fn encode_head(manifest_json: &[u8], signature: &[u8; SIGNATURE_LEN]) -> Vec<u8> {
    let mut head = Vec::with_capacity(PREFIX_LEN + manifest_json.len() + SIGNATURE_LEN);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&FORMAT.to_le_bytes());
    head.extend_from_slice(&(manifest_json.len() as u32).to_le_bytes());
    head.extend_from_slice(manifest_json);
    head.extend_from_slice(signature);
    head
}

impl UpdateManifest {
    /// Parses the manifest JSON of a bundle (after its signature was checked).
    pub fn from_json(json: &[u8]) -> Result<UpdateManifest, BundleError> {
        let manifest: UpdateManifest =
            serde_json::from_slice(json).map_err(|e| BundleError::Manifest(e.to_string()))?;
        if manifest.format != FORMAT {
            return Err(BundleError::Format(manifest.format));
        }
        // The version goes into the state record, the name into the
        // agent's answers.
        for text in [&manifest.image.name, &manifest.image.version] {
            if !is_plain_name(text) {
                return Err(BundleError::Manifest(format!(
                    "the image's name and version must be at most {MAX_NAME} bytes each, \
                     with no control characters, `\"` or `\\`"
                )));
            }
        }
        let boot = manifest.image.boot_artifacts();
        let listed: Vec<&str> = manifest
            .payload
            .iter()
            .map(|e| e.artifact.as_str())
            .collect();
        if listed.len() != 3 || boot.iter().any(|key| !listed.contains(key)) {
            return Err(BundleError::Manifest(format!(
                "payload must list {} once each, not {listed:?}",
                boot.join(", ")
            )));
        }
        for key in boot {
            // The key and the sha256 go into the agent's errors, which the
            // state record keeps as the reason of a failed update.
            if !is_artifact_key(key) {
                return Err(BundleError::Manifest(format!(
                    "artefact key {key:?} must be 1 to 64 letters, digits, `.`, `_` or `-`"
                )));
            }
            let Some(artifact) = manifest.image.artifacts.get(key) else {
                return Err(BundleError::Manifest(format!(
                    "image has no artefact {key:?}"
                )));
            };
            if artifact.sha256.len() != 64
                || !artifact.sha256.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return Err(BundleError::Manifest(format!(
                    "the sha256 of artefact {key:?} must be 64 hex digits"
                )));
            }
        }
        if manifest.checked_payload_len().is_none_or(|payload| {
            payload
                .checked_add((PREFIX_LEN + json.len() + SIGNATURE_LEN) as u64)
                .is_none()
        }) {
            return Err(BundleError::Manifest(
                "the sizes of the artefacts in the payload add up to more than 2^64 bytes".into(),
            ));
        }
        Ok(manifest)
    }

    /// Size and sha256 of an artefact of the image.
    pub fn artifact(&self, key: &str) -> Option<&crate::Artifact> {
        self.image.artifacts.get(key)
    }

    /// Bytes of payload after the head ([`u64::MAX`] if the sizes add up
    /// to more, which [`UpdateManifest::from_json`] refuses).
    pub fn payload_len(&self) -> u64 {
        self.checked_payload_len().unwrap_or(u64::MAX)
    }

    fn checked_payload_len(&self) -> Option<u64> {
        self.payload
            .iter()
            .filter(|e| e.source == Source::Bundle)
            .filter_map(|e| self.artifact(&e.artifact))
            .try_fold(0u64, |sum, a| sum.checked_add(a.size))
    }

    /// Total bytes of the bundle with this manifest JSON length (at most
    /// [`u64::MAX`]).
    pub fn bundle_len(&self, manifest_json_len: usize) -> u64 {
        ((PREFIX_LEN + manifest_json_len + SIGNATURE_LEN) as u64).saturating_add(self.payload_len())
    }

    /// Whether this key signed it, by id.
    pub fn signed_by(&self, key: &PublicKey) -> bool {
        self.key_id == key.key_id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_checks() {
        let head = encode_head(b"{}", &[0; 64]);
        let prefix: [u8; PREFIX_LEN] = head[..PREFIX_LEN].try_into().unwrap();
        assert_eq!(parse_prefix(&prefix), Ok(2));
        let mut other = prefix;
        other[0] = b'X';
        assert_eq!(parse_prefix(&other), Err(BundleError::NotABundle));
        let mut other = prefix;
        other[16] = 2;
        assert_eq!(parse_prefix(&other), Err(BundleError::Format(2)));
        let mut other = prefix;
        other[20..24].copy_from_slice(&(MAX_MANIFEST as u32 + 1).to_le_bytes());
        assert!(matches!(
            parse_prefix(&other),
            Err(BundleError::ManifestTooLarge(_))
        ));
        assert_eq!(signed_bytes(b"{}"), b"nodeos-bundle-v1\0{}");
    }

    /// A valid update manifest as JSON, to be spoilt by the tests.
    fn manifest_json() -> serde_json::Value {
        let artifact =
            |size: u64| serde_json::json!({"path": "x", "sha256": "ab".repeat(32), "size": size});
        serde_json::json!({
            "format": FORMAT,
            "appliance": "hello",
            "sequence": 2,
            "key_id": "0123456789abcdef",
            "image": {
                "format": crate::MANIFEST_FORMAT,
                "name": "hello",
                "version": "1.2.3",
                "profile": "release",
                "node": {"version": "22.11.0", "range": null, "integrity": "sha512-x"},
                "kernel": {"version": "6.1", "cmdline": "console=ttyS0", "artifact": "kernel"},
                "layers": {"format": "erofs", "compression": "lz4hc", "runtime": "runtime", "app": "app"},
                "artifacts": {"kernel": artifact(5), "runtime": artifact(7), "app": artifact(11)},
                "builder": "nodeos 0.1.0"
            },
            "payload": [
                {"artifact": "kernel", "source": "slot"},
                {"artifact": "runtime", "source": "bundle"},
                {"artifact": "app", "source": "bundle"}
            ]
        })
    }

    fn parse(value: &serde_json::Value) -> Result<UpdateManifest, BundleError> {
        UpdateManifest::from_json(&serde_json::to_vec(value).unwrap())
    }

    #[test]
    fn payload_and_bundle_lengths() {
        let json = serde_json::to_vec(&manifest_json()).unwrap();
        let manifest = UpdateManifest::from_json(&json).unwrap();
        assert_eq!(manifest.payload_len(), 18);
        assert_eq!(
            manifest.bundle_len(json.len()),
            (PREFIX_LEN + json.len() + SIGNATURE_LEN) as u64 + 18
        );
    }

    #[test]
    fn payload_sizes_that_overflow_are_refused_not_a_panic() {
        // Caught by the `bundle` fuzz target (seed edge-sizes-overflow):
        // the sum overflowed (a panic with overflow checks, a wrong bundle
        // length without).
        let mut value = manifest_json();
        value["image"]["artifacts"]["app"]["size"] = u64::MAX.into();
        let err = parse(&value).unwrap_err();
        assert!(err.to_string().contains("more than 2^64"), "{err}");
        value["image"]["artifacts"]["app"]["size"] = (u64::MAX - 7 - 100).into();
        assert!(parse(&value).is_err(), "the head's length counts too");
    }

    #[test]
    fn a_version_json_would_escape_is_refused() {
        // Caught by the `bundle` fuzz target (seed
        // edge-control-char-version): 256 control characters are 1536
        // bytes in JSON, and the state record holds the version four times
        // in 4 KiB, so writing it panicked.
        for version in [
            "1.0.0\u{1}",
            "1.0.0\"",
            "1.0.0\\",
            &"1".repeat(MAX_NAME + 1),
        ] {
            let mut value = manifest_json();
            value["image"]["version"] = version.into();
            let err = parse(&value).unwrap_err();
            assert!(err.to_string().contains("no control characters"), "{err}");
        }
        let mut value = manifest_json();
        value["image"]["version"] = "1.0.0-rc.1+build.5".into();
        assert!(parse(&value).is_ok());
    }

    #[test]
    fn boot_artefacts_need_a_plain_key_and_a_hex_sha256() {
        // Caught by the `bundle` fuzz target (seed edge-long-sha256): both
        // go into the reason of a failed update, which the state record
        // keeps; 1024 bytes of control characters overflowed it.
        let mut value = manifest_json();
        value["image"]["artifacts"]["app"]["sha256"] = "\u{7}".repeat(1100).into();
        let err = parse(&value).unwrap_err();
        assert!(err.to_string().contains("64 hex digits"), "{err}");

        let mut value = manifest_json();
        let app = value["image"]["artifacts"]["app"].clone();
        value["image"]["artifacts"]["app \"x\""] = app;
        value["image"]["layers"]["app"] = "app \"x\"".into();
        value["payload"][2]["artifact"] = "app \"x\"".into();
        let err = parse(&value).unwrap_err();
        assert!(err.to_string().contains("artefact key"), "{err}");
    }
}
