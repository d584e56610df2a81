//! Making the signed update bundle `nodeos deploy` uploads (the format is
//! [`nodeos_manifest::bundle`]'s).
//!
//! [`plan`] decides which boot artefacts travel: those the appliance holds
//! in neither slot (by sha256, from its status). [`Bundle::sign`] signs the
//! manifest and [`Bundle::reader`] streams head and payload from the image
//! directory, so an upload never holds the layers in memory.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use nodeos_manifest::bundle::{
    self, BundleError, FORMAT, MAX_MANIFEST, PayloadEntry, Source, UpdateManifest,
};
use nodeos_manifest::update::{PublicKey, Status};
use nodeos_manifest::{MANIFEST_FILE, Manifest};

/// The unsigned manifest of an update from `image`: every boot artefact
/// (kernel, runtime, app, in that order) is `Slot` when its sha256 is among
/// either slot's artefacts in `status`, else `Bundle`. Without a status
/// everything travels.
pub fn plan(
    image: &Manifest,
    status: Option<&Status>,
    sequence: u64,
    key: &PublicKey,
    downgrade: bool,
) -> UpdateManifest {
    let on_appliance = |sha256: &str| {
        status.is_some_and(|s| {
            s.slots
                .values()
                .any(|slot| slot.artifacts.values().any(|held| held == sha256))
        })
    };
    let payload = image
        .boot_artifacts()
        .iter()
        .map(|&key| {
            let held = image
                .artifacts
                .get(key)
                .is_some_and(|a| on_appliance(&a.sha256));
            PayloadEntry {
                artifact: key.to_owned(),
                source: if held { Source::Slot } else { Source::Bundle },
            }
        })
        .collect();
    UpdateManifest {
        format: FORMAT,
        appliance: image.name.clone(),
        sequence,
        key_id: key.key_id(),
        downgrade,
        image: image.clone(),
        payload,
    }
}

/// The sequence of the next update: the deployer's clock in unix ms, or one
/// above the highest the appliance accepted if that is later (a clock
/// behind the last deployer's).
pub fn sequence_for(status: &Status, now_ms: u64) -> u64 {
    now_ms.max(status.max_sequence.saturating_add(1))
}

/// A signed bundle whose payload is read from an image directory.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub manifest: UpdateManifest,
    /// Prefix, manifest JSON and signature.
    head: Vec<u8>,
    image_dir: PathBuf,
}

impl Bundle {
    /// Signs `manifest` with `key`; the payload comes from `image_dir`
    /// when the bundle is read.
    pub fn sign(
        manifest: UpdateManifest,
        key: &SigningKey,
        image_dir: &Path,
    ) -> Result<Bundle, BundleError> {
        let json = serde_json::to_vec(&manifest).expect("update manifest serialises");
        if json.len() > MAX_MANIFEST {
            return Err(BundleError::ManifestTooLarge(json.len()));
        }
        let signature = crate::keys::sign(key, &bundle::signed_bytes(&json));
        Ok(Bundle {
            head: bundle::encode_head(&json, &signature),
            manifest,
            image_dir: image_dir.to_owned(),
        })
    }

    /// Bytes of the whole bundle (the upload's Content-Length).
    pub fn len(&self) -> u64 {
        self.head.len() as u64 + self.payload_bytes()
    }

    /// Never true: a bundle has at least its head.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Prefix, manifest JSON and signature.
    pub fn head(&self) -> &[u8] {
        &self.head
    }

    /// Bytes of artefacts that travel in the bundle.
    pub fn payload_bytes(&self) -> u64 {
        self.manifest.payload_len()
    }

    /// The whole bundle as a stream: the head, then each artefact sourced
    /// from the bundle, in payload order. Every file is opened and its size
    /// checked against the manifest first; a file that shrinks while it is
    /// read is an error rather than a short bundle.
    pub fn reader(&self) -> io::Result<BundleReader> {
        let mut files = Vec::new();
        for entry in &self.manifest.payload {
            if entry.source != Source::Bundle {
                continue;
            }
            let artifact = self.manifest.artifact(&entry.artifact).ok_or_else(|| {
                io::Error::other(format!("the image has no artefact {:?}", entry.artifact))
            })?;
            let path = artifact_path(&self.image_dir, &artifact.path)?;
            let file = File::open(&path).map_err(|e| with_path(&path, e))?;
            let size = file.metadata().map_err(|e| with_path(&path, e))?.len();
            if size != artifact.size {
                return Err(io::Error::other(format!(
                    "{} is {size} bytes, but its {MANIFEST_FILE} says {}; rebuild the image",
                    path.display(),
                    artifact.size
                )));
            }
            files.push(Part {
                path,
                file,
                left: size,
            });
        }
        files.reverse();
        Ok(BundleReader {
            head: io::Cursor::new(self.head.clone()),
            files,
        })
    }
}

/// A [`Bundle`] as bytes, exactly [`Bundle::len`] of them.
#[derive(Debug)]
pub struct BundleReader {
    head: io::Cursor<Vec<u8>>,
    /// The files still to read, the next one last.
    files: Vec<Part>,
}

#[derive(Debug)]
struct Part {
    path: PathBuf,
    file: File,
    left: u64,
}

impl Read for BundleReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.head.read(buf)?;
        if n > 0 || buf.is_empty() {
            return Ok(n);
        }
        while let Some(part) = self.files.last_mut() {
            if part.left == 0 {
                self.files.pop();
                continue;
            }
            let want = buf
                .len()
                .min(usize::try_from(part.left).unwrap_or(usize::MAX));
            let n = part.file.read(&mut buf[..want])?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "{} became shorter while it was being sent",
                        part.path.display()
                    ),
                ));
            }
            part.left -= n as u64;
            return Ok(n);
        }
        Ok(0)
    }
}

/// `dir/name`, refusing a name that is not a plain file name.
fn artifact_path(dir: &Path, name: &str) -> io::Result<PathBuf> {
    let plain = Path::new(name).file_name().is_some_and(|n| n == name);
    if !plain {
        return Err(io::Error::other(format!(
            "artefact path {name:?} in {MANIFEST_FILE} is not a plain file name"
        )));
    }
    Ok(dir.join(name))
}

fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Why an image directory cannot be deployed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{} is not a nodeos image: it has no {MANIFEST_FILE}", dir.display())]
    NoManifest { dir: PathBuf },
    #[error("{}: {reason}", path.display())]
    BadManifest { path: PathBuf, reason: String },
    #[error("image is incomplete: {} is missing", path.display())]
    Missing { path: PathBuf },
    #[error("image is corrupt: {} does not match its checksum in {MANIFEST_FILE}", path.display())]
    Corrupt { path: PathBuf },
}

/// Reads an image directory's manifest and checks the boot artefacts
/// against it (size and sha256), as `nodeos run` does before booting.
pub fn read_image(dir: &Path) -> Result<Manifest, ImageError> {
    let path = dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&path).map_err(|_| ImageError::NoManifest {
        dir: dir.to_owned(),
    })?;
    let bad = |reason: String| ImageError::BadManifest {
        path: path.clone(),
        reason,
    };
    let manifest = Manifest::from_json(&text).map_err(|e| bad(e.to_string()))?;
    for key in manifest.boot_artifacts() {
        let artifact = manifest
            .artifacts
            .get(key)
            .ok_or_else(|| bad(format!("no artefact named {key}")))?;
        let file = artifact_path(dir, &artifact.path).map_err(|e| bad(e.to_string()))?;
        let (sha256, size) =
            crate::sha256_file(&file).map_err(|_| ImageError::Missing { path: file.clone() })?;
        if size != artifact.size || sha256 != artifact.sha256 {
            return Err(ImageError::Corrupt { path: file });
        }
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use nodeos_manifest::bundle::{PREFIX_LEN, SIGNATURE_LEN};
    use nodeos_manifest::slots::{Slot, SlotStatus};
    use nodeos_manifest::update::{AppStatus, SlotInfo};
    use nodeos_manifest::{
        Artifact, KernelInfo, LayersInfo, MANIFEST_FORMAT, NodeInfo, Profile, settings,
    };

    use super::*;
    use crate::keys;

    /// An image directory with small artefacts, and its manifest.
    fn image(dir: &Path) -> Manifest {
        let mut artifacts = BTreeMap::new();
        for (key, file, bytes) in [
            ("kernel", "kernel", vec![1u8; 300]),
            ("runtime", "runtime.img", vec![2u8; 5000]),
            ("app", "app.img", b"the app layer".to_vec()),
        ] {
            let path = dir.join(file);
            std::fs::write(&path, &bytes).unwrap();
            let (sha256, size) = crate::sha256_file(&path).unwrap();
            artifacts.insert(
                key.to_owned(),
                Artifact {
                    path: file.to_owned(),
                    sha256,
                    size,
                    verity: None,
                },
            );
        }
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            name: "hello".into(),
            version: "1.0.1".into(),
            profile: Profile::Dev,
            node: NodeInfo {
                version: "22.0.0".into(),
                range: None,
                integrity: "sha512-x".into(),
            },
            kernel: KernelInfo {
                version: "6.1.0".into(),
                cmdline: "console=ttyS0".into(),
                artifact: "kernel".into(),
            },
            layers: LayersInfo {
                format: "erofs".into(),
                compression: "lz4hc".into(),
                runtime: "runtime".into(),
                app: "app".into(),
            },
            data: settings::DataSettings::default(),
            vm: Default::default(),
            update_key: None,
            artifacts,
            builder: "test".into(),
        };
        std::fs::write(dir.join(MANIFEST_FILE), manifest.to_json()).unwrap();
        manifest
    }

    /// A status whose slot a holds `held` (artefact key → sha256).
    fn status(held: &[(&str, &str)]) -> Status {
        let info = |status, artifacts: BTreeMap<String, String>| SlotInfo {
            status,
            version: "1.0.0".into(),
            sequence: 0,
            artifacts,
        };
        let held = held
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Status {
            appliance: "hello".into(),
            version: "1.0.0".into(),
            slot: Slot::A,
            trial: false,
            max_sequence: 41,
            uptime_s: 5,
            app: AppStatus::default(),
            health: None,
            slots: BTreeMap::from([
                (Slot::A, info(SlotStatus::Good, held)),
                (Slot::B, info(SlotStatus::Empty, BTreeMap::new())),
            ]),
            last_update: None,
            log_tail: None,
            system: None,
        }
    }

    fn sources(manifest: &UpdateManifest) -> Vec<(&str, Source)> {
        manifest
            .payload
            .iter()
            .map(|e| (e.artifact.as_str(), e.source))
            .collect()
    }

    #[test]
    fn without_a_status_every_boot_artefact_travels() {
        let dir = tempfile::tempdir().unwrap();
        let image = image(dir.path());
        let key = keys::public_key(&keys::generate().unwrap());
        let plan = plan(&image, None, 7, &key, false);
        assert_eq!(
            sources(&plan),
            [
                ("kernel", Source::Bundle),
                ("runtime", Source::Bundle),
                ("app", Source::Bundle)
            ]
        );
        assert_eq!(plan.payload_len(), 300 + 5000 + 13);
        assert_eq!(plan.appliance, "hello");
        assert_eq!(plan.sequence, 7);
        assert_eq!(plan.key_id, key.key_id());
        assert!(plan.signed_by(&key));
    }

    #[test]
    fn artefacts_a_slot_holds_stay_on_the_appliance() {
        let dir = tempfile::tempdir().unwrap();
        let image = image(dir.path());
        let sha = |key: &str| image.artifacts[key].sha256.clone();
        // Held under any key, in either slot: only the sha256 counts.
        let mut status = status(&[("runtime", &sha("runtime"))]);
        status
            .slots
            .get_mut(&Slot::B)
            .unwrap()
            .artifacts
            .insert("kernel".into(), sha("kernel"));
        let key = keys::public_key(&keys::generate().unwrap());
        let plan = plan(&image, Some(&status), 42, &key, true);
        assert_eq!(
            sources(&plan),
            [
                ("kernel", Source::Slot),
                ("runtime", Source::Slot),
                ("app", Source::Bundle)
            ]
        );
        assert_eq!(plan.payload_len(), 13);
        assert!(plan.downgrade);
    }

    #[test]
    fn the_sequence_follows_the_clock_but_always_rises() {
        let status = status(&[]);
        assert_eq!(sequence_for(&status, 1_000), 1_000);
        assert_eq!(sequence_for(&status, 10), 42);
        let mut last = status;
        last.max_sequence = u64::MAX;
        assert_eq!(sequence_for(&last, 10), u64::MAX);
    }

    #[test]
    fn a_signed_bundle_reads_back_verifies_and_carries_only_its_payload() {
        let dir = tempfile::tempdir().unwrap();
        let image = image(dir.path());
        let signing = keys::generate().unwrap();
        let key = keys::public_key(&signing);
        let status = status(&[("runtime", &image.artifacts["runtime"].sha256)]);
        let manifest = plan(&image, Some(&status), 42, &key, false);
        let bundle = Bundle::sign(manifest.clone(), &signing, dir.path()).unwrap();

        let mut bytes = Vec::new();
        bundle.reader().unwrap().read_to_end(&mut bytes).unwrap();
        assert_eq!(bytes.len() as u64, bundle.len());
        assert_eq!(bytes.len(), bundle.head().len() + 300 + 13);

        let prefix: [u8; PREFIX_LEN] = bytes[..PREFIX_LEN].try_into().unwrap();
        let json_len = bundle::parse_prefix(&prefix).unwrap();
        let json = &bytes[PREFIX_LEN..PREFIX_LEN + json_len];
        let signature: [u8; SIGNATURE_LEN] = bytes
            [PREFIX_LEN + json_len..PREFIX_LEN + json_len + SIGNATURE_LEN]
            .try_into()
            .unwrap();
        assert!(keys::verify(&key, &bundle::signed_bytes(json), &signature));
        let other = keys::public_key(&keys::generate().unwrap());
        assert!(!keys::verify(
            &other,
            &bundle::signed_bytes(json),
            &signature
        ));
        assert_eq!(UpdateManifest::from_json(json).unwrap(), manifest);
        assert_eq!(manifest.bundle_len(json_len), bundle.len());

        let payload = &bytes[bundle.head().len()..];
        assert_eq!(&payload[..300], &[1u8; 300][..], "the kernel first");
        assert_eq!(&payload[300..], b"the app layer");
    }

    #[test]
    fn a_payload_file_of_the_wrong_size_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let image = image(dir.path());
        let signing = keys::generate().unwrap();
        let manifest = plan(&image, None, 1, &keys::public_key(&signing), false);
        let bundle = Bundle::sign(manifest, &signing, dir.path()).unwrap();
        std::fs::write(dir.path().join("app.img"), b"longer than it was").unwrap();
        let err = bundle.reader().unwrap_err().to_string();
        assert!(err.contains("app.img is 18 bytes"), "{err}");
        std::fs::remove_file(dir.path().join("app.img")).unwrap();
        assert!(bundle.reader().is_err());
    }

    #[test]
    fn read_image_checks_the_boot_artefacts() {
        let dir = tempfile::tempdir().unwrap();
        let image = image(dir.path());
        assert_eq!(read_image(dir.path()).unwrap(), image);
        std::fs::write(dir.path().join("app.img"), b"the app layeR").unwrap();
        assert!(matches!(
            read_image(dir.path()),
            Err(ImageError::Corrupt { .. })
        ));
        std::fs::remove_file(dir.path().join("kernel")).unwrap();
        assert!(matches!(
            read_image(dir.path()),
            Err(ImageError::Missing { .. })
        ));
        std::fs::remove_file(dir.path().join(MANIFEST_FILE)).unwrap();
        assert!(matches!(
            read_image(dir.path()),
            Err(ImageError::NoManifest { .. })
        ));
    }
}
