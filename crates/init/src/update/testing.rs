//! Test fixtures: a fake sysfs, temporary files standing in for the system
//! disk's partitions, images and signed bundles.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey};
use nodeos_manifest::bundle::{self, PayloadEntry, Source, UpdateManifest};
use nodeos_manifest::slots::{
    Part, SLOT_META_LEN, STATE_PARTITION_LEN, Slot, SlotMeta, State, partition_name,
};
use nodeos_manifest::update::{Authorization, PublicKey, request_message, to_hex};
use nodeos_manifest::{MANIFEST_FORMAT, Manifest};
use sha2::{Digest, Sha256};

use super::{Shared, open};

/// Device name → partition name of the fake system disk.
pub const LAYOUT: [(&str, &str); 7] = [
    ("vda1", "nodeos-state"),
    ("vda2", "nodeos-boot-a"),
    ("vda3", "nodeos-boot-b"),
    ("vda4", "nodeos-runtime-a"),
    ("vda5", "nodeos-runtime-b"),
    ("vda6", "nodeos-app-a"),
    ("vda7", "nodeos-app-b"),
];

/// A fake `/sys` with the system disk's partitions (but those named in
/// `leave_out`) and an empty `/dev`, under `root`.
pub fn fake_sys(root: &Path, leave_out: &[&str]) -> (PathBuf, PathBuf) {
    let sys = root.join("sys");
    let dev = root.join("dev");
    std::fs::create_dir_all(&dev).unwrap();
    let disk = sys.join("class/block/vda");
    std::fs::create_dir_all(&disk).unwrap();
    std::fs::write(
        disk.join("uevent"),
        "MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n",
    )
    .unwrap();
    for (n, (devname, name)) in LAYOUT.iter().enumerate() {
        if leave_out.contains(name) {
            continue;
        }
        let dir = sys.join("class/block").join(devname);
        std::fs::create_dir_all(&dir).unwrap();
        let uevent = format!(
            "MAJOR=254\nMINOR={}\nDEVNAME={devname}\nDEVTYPE=partition\nPARTN={}\nPARTNAME={name}\n",
            n + 1,
            n + 1
        );
        std::fs::write(dir.join("uevent"), uevent).unwrap();
    }
    (sys, dev)
}

pub fn public_key(key: &SigningKey) -> PublicKey {
    PublicKey(key.verifying_key().to_bytes())
}

/// The `Authorization` header value of a request signed by `key`.
/// A read token of `key` valid until `expires_s`.
pub fn read_token(key: &SigningKey, expires_s: u64) -> String {
    let key_id = public_key(key).key_id();
    let id = "0011223344556677";
    let message = nodeos_manifest::update::ReadToken::message(&key_id, expires_s, id);
    nodeos_manifest::update::ReadToken {
        key_id,
        expires_s,
        id: id.into(),
        signature: ed25519_dalek::Signer::sign(key, message.as_bytes()).to_bytes(),
    }
    .to_string()
}

pub fn sign_request(
    key: &SigningKey,
    method: &str,
    path: &str,
    content_length: u64,
    ts_ms: u64,
    nonce: u64,
) -> String {
    let nonce = format!("{nonce:016x}");
    let message = request_message(method, path, ts_ms, &nonce, content_length);
    Authorization {
        key_id: public_key(key).key_id(),
        ts_ms,
        nonce,
        signature: key.sign(message.as_bytes()).to_bytes(),
    }
    .header()
}

/// Deterministic bytes that differ by `seed`.
fn noise(len: usize, seed: u8) -> Vec<u8> {
    (0..len as u32)
        .map(|i| {
            (i.wrapping_mul(2_654_435_761)
                .wrapping_add(u32::from(seed) << 8)
                >> 13) as u8
        })
        .collect()
}

fn sha256(bytes: &[u8]) -> String {
    to_hex(&Sha256::digest(bytes))
}

/// An image: its manifest and its three boot artefacts.
#[derive(Debug, Clone)]
pub struct Image {
    pub manifest: Manifest,
    pub kernel: Vec<u8>,
    pub runtime: Vec<u8>,
    pub app: Vec<u8>,
}

impl Image {
    /// App `hello` at `version`; the app is over 1 MiB (progress lines).
    pub fn new(version: &str, seed: u8) -> Image {
        let mut image = Image {
            manifest: serde_json::from_value(serde_json::json!({
                "format": MANIFEST_FORMAT,
                "name": "hello",
                "version": version,
                "profile": "release",
                "node": {"version": "22.1.0", "range": null, "integrity": "sha512-x"},
                "kernel": {"version": "6.1", "cmdline": "console=ttyS0", "artifact": "kernel"},
                "layers": {"format": "erofs", "compression": "lz4hc", "runtime": "runtime", "app": "app"},
                "artifacts": {},
                "builder": "nodeos 0.1.0",
            }))
            .unwrap(),
            kernel: noise(100_000, seed),
            runtime: noise(300_000, seed.wrapping_add(100)),
            app: noise(1_500_000, seed.wrapping_add(200)),
        };
        image.rehash();
        image
    }

    fn rehash(&mut self) {
        for (key, bytes) in [
            ("kernel", &self.kernel),
            ("runtime", &self.runtime),
            ("app", &self.app),
        ] {
            self.manifest.artifacts.insert(
                key.into(),
                nodeos_manifest::Artifact {
                    path: format!("{key}.img"),
                    sha256: sha256(bytes),
                    size: bytes.len() as u64,
                    verity: None,
                },
            );
        }
    }

    pub fn set_kernel(&mut self, bytes: Vec<u8>) {
        self.kernel = bytes;
        self.rehash();
    }

    pub fn set_runtime(&mut self, bytes: Vec<u8>) {
        self.runtime = bytes;
        self.rehash();
    }

    pub fn set_app(&mut self, bytes: Vec<u8>) {
        self.app = bytes;
        self.rehash();
    }

    /// Kernel, runtime, app.
    pub fn parts(&self) -> [Vec<u8>; 3] {
        [self.kernel.clone(), self.runtime.clone(), self.app.clone()]
    }

    pub fn total_size(&self) -> u64 {
        (self.kernel.len() + self.runtime.len() + self.app.len()) as u64
    }
}

/// A system disk in temporary files: slot A holds `booted` (committed),
/// slot B is empty; the update key is `SigningKey::from_bytes(&[1; 32])`.
pub struct Fixture {
    _dir: tempfile::TempDir,
    sys: PathBuf,
    dev: PathBuf,
    pub key: SigningKey,
}

impl Fixture {
    pub const BOOT_LEN: u64 = SLOT_META_LEN as u64 + (512 << 10);
    pub const RUNTIME_LEN: u64 = 2 << 20;
    pub const APP_LEN: u64 = 2 << 20;

    pub fn new(booted: &Image) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let (sys, dev) = fake_sys(dir.path(), &[]);
        let fx = Fixture {
            _dir: dir,
            sys,
            dev,
            key: SigningKey::from_bytes(&[1; 32]),
        };
        let state = File::create(fx.dev.join("vda1")).unwrap();
        state.set_len(STATE_PARTITION_LEN).unwrap();
        let (offset, bytes) = State::new(Slot::A, &booted.manifest.version).next_copy();
        state.write_all_at(&bytes, offset).unwrap();
        for slot in [Slot::A, Slot::B] {
            for (part, len) in [
                (Part::Boot, Self::BOOT_LEN),
                (Part::Runtime, Self::RUNTIME_LEN),
                (Part::App, Self::APP_LEN),
            ] {
                File::create(fx.path(part, slot))
                    .unwrap()
                    .set_len(len)
                    .unwrap();
            }
        }
        fx.install_raw(Slot::A, booted);
        fx
    }

    /// Writes `image` into `slot` as the host would (metadata included),
    /// without touching the state.
    pub fn install_raw(&self, slot: Slot, image: &Image) {
        let open = |part| {
            OpenOptions::new()
                .write(true)
                .open(self.path(part, slot))
                .unwrap()
        };
        let meta = SlotMeta {
            sequence: 0,
            installed_by: "host".into(),
            image: image.manifest.clone(),
        };
        let boot = open(Part::Boot);
        boot.write_all_at(&meta.encode(), 0).unwrap();
        boot.write_all_at(&image.kernel, SLOT_META_LEN as u64)
            .unwrap();
        open(Part::Runtime).write_all_at(&image.runtime, 0).unwrap();
        open(Part::App).write_all_at(&image.app, 0).unwrap();
    }

    pub fn path(&self, part: Part, slot: Slot) -> PathBuf {
        let name = partition_name(part, slot);
        let (devname, _) = LAYOUT.iter().find(|(_, n)| *n == name).unwrap();
        self.dev.join(devname)
    }

    /// [`open`] on this disk, booted from slot A.
    pub fn shared(&self) -> Shared {
        self.shared_in(Slot::A)
    }

    /// [`Fixture::shared`] of a boot of `slot`.
    pub fn shared_in(&self, slot: Slot) -> Shared {
        self.open_in(slot).unwrap()
    }

    /// [`open`] for a boot of `slot`.
    pub fn open_in(&self, slot: Slot) -> Result<Shared, super::UpdateError> {
        open(slot, public_key(&self.key), &self.sys, &self.dev)
    }

    /// Every byte of `slot`'s three partitions.
    pub fn slot_bytes(&self, slot: Slot) -> Vec<Vec<u8>> {
        Part::ALL
            .iter()
            .map(|&part| std::fs::read(self.path(part, slot)).unwrap())
            .collect()
    }

    pub fn booted_bytes(&self) -> Vec<Vec<u8>> {
        self.slot_bytes(Slot::A)
    }

    /// What `slot` holds where `image`'s artefacts go, as long as they are.
    pub fn slot_image_bytes(&self, slot: Slot, image: &Image) -> [Vec<u8>; 3] {
        let read = |part, offset: usize, len: usize| {
            std::fs::read(self.path(part, slot)).unwrap()[offset..offset + len].to_vec()
        };
        [
            read(Part::Boot, SLOT_META_LEN, image.kernel.len()),
            read(Part::Runtime, 0, image.runtime.len()),
            read(Part::App, 0, image.app.len()),
        ]
    }

    /// A bundle of `image` for appliance `hello`, signed by the fixture's key;
    /// `sources` are the kernel's, the runtime's and the app's.
    pub fn bundle(&self, image: &Image, sequence: u64, sources: [Source; 3]) -> Vec<u8> {
        self.bundle_for("hello", image, sequence, sources, false)
    }

    pub fn bundle_for(
        &self,
        appliance: &str,
        image: &Image,
        sequence: u64,
        sources: [Source; 3],
        downgrade: bool,
    ) -> Vec<u8> {
        make_bundle(&self.key, appliance, image, sequence, sources, downgrade)
    }

    /// A full bundle signed by another key.
    pub fn bundle_signed(&self, secret: &[u8; 32], image: &Image, sequence: u64) -> Vec<u8> {
        let key = SigningKey::from_bytes(secret);
        make_bundle(&key, "hello", image, sequence, [Source::Bundle; 3], false)
    }
}

pub fn make_bundle(
    key: &SigningKey,
    appliance: &str,
    image: &Image,
    sequence: u64,
    sources: [Source; 3],
    downgrade: bool,
) -> Vec<u8> {
    let keys = ["kernel", "runtime", "app"];
    let manifest = UpdateManifest {
        format: bundle::FORMAT,
        appliance: appliance.into(),
        sequence,
        key_id: public_key(key).key_id(),
        downgrade,
        image: image.manifest.clone(),
        payload: keys
            .iter()
            .zip(sources)
            .map(|(key, source)| PayloadEntry {
                artifact: (*key).into(),
                source,
            })
            .collect(),
    };
    let json = serde_json::to_vec(&manifest).unwrap();
    let signature = key.sign(&bundle::signed_bytes(&json)).to_bytes();
    let mut out = bundle::encode_head(&json, &signature);
    for (bytes, source) in image.parts().iter().zip(sources) {
        if source == Source::Bundle {
            out.extend_from_slice(bytes);
        }
    }
    out
}
