//! The A/B system disk: one sparse GPT disk image per appliance holding the
//! update state and two slots of boot artefacts (kernel, runtime layer, app
//! layer), attached read-write as the guest's `/dev/vda`.
//!
//! | partition (GPT name) | size | contents |
//! |---|---|---|
//! | `nodeos-state` | [`STATE_PARTITION_LEN`] | the update [`State`] (two copies) and the last trial's log tail |
//! | `nodeos-boot-a`, `-b` | [`Layout::boot`] | [`SlotMeta`], then the kernel at [`SLOT_META_LEN`] |
//! | `nodeos-runtime-a`, `-b` | [`Layout::runtime`] | the runtime layer as built |
//! | `nodeos-app-a`, `-b` | [`Layout::app`] | the app layer as built |
//!
//! The partitions come in that order, each aligned to 1 MiB. The file is
//! sparse, so generous partitions cost nothing until written; their sizes
//! are fixed when the disk is created and bound what later updates can hold.
//!
//! [`SystemDisk`] locks the file (`flock`) for as long as it lives, as
//! [`crate::data::DataVolume`] does, so two runs never share a disk.
//! `nodeos run` is the bootloader: it installs images into slots
//! ([`SystemDisk::install`]), checks a slot before booting it
//! ([`SystemDisk::verify_slot`]) and hands its kernel to QEMU
//! ([`SystemDisk::kernel_file`]); the guest's update agent writes the other
//! slot and the state.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use gptman::{GPT, GPTPartitionEntry};
use nodeos_manifest::esp::ESP_PARTITION;
use nodeos_manifest::slots::{
    self, LOG_MAX, LOG_OFFSET, Part, SLOT_META_LEN, STATE_COPY_LEN, STATE_PARTITION,
    STATE_PARTITION_LEN, Slot, SlotMeta, SlotMetaError, State,
};
use nodeos_manifest::{DATA_LABEL, Manifest};
use sha2::{Digest, Sha256};

use nodeos_manifest::update::to_hex as hex;

use crate::data::Locked;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// Sector size of the disk's GPT.
const SECTOR: u64 = 512;
/// Space before the first partition and after the last one: the primary
/// and backup GPT, rounded to the alignment.
const GPT_RESERVE: u64 = MIB;
/// Buffer size for copying and hashing artefacts.
const CHUNK: usize = MIB as usize;
/// Partition type of the EFI system partition
/// (C12A7328-F81F-11D2-BA4B-00A0C93EC93B), in GPT's mixed-endian byte order.
const EFI_SYSTEM: [u8; 16] = [
    0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b,
];
/// Partition type of every other partition: "Linux filesystem data"
/// (0FC63DAF-8483-4772-8E79-3D69D8477DE4), in GPT's mixed-endian byte order.
const LINUX_DATA: [u8; 16] = [
    0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4,
];

/// Everything that can go wrong with a system disk on the host.
///
/// Messages name the disk and say what to do; a `#[source]` is not repeated
/// in them.
#[derive(Debug, thiserror::Error)]
pub enum SystemDiskError {
    #[error(
        "cannot create the system disk `{}`: a file is already there; use it, or remove it to start over",
        path.display()
    )]
    Exists { path: PathBuf },

    #[error(
        "the system disk `{}` is in use by {by}: stop that VM first, or give this one another system disk with --system PATH",
        path.display()
    )]
    InUse { path: PathBuf, by: String },

    #[error(
        "`{}` is not a nodeos system disk: {reason}; give the path of a system disk, or move this file away to have a new one created",
        path.display()
    )]
    NotSystemDisk { path: PathBuf, reason: String },

    #[error(
        "cannot install into slot {slot} of `{}`: the {artifact} is {size} bytes but its partition holds {room}; create a new system disk: remove {} (the app's /data is a separate file and is kept)",
        path.display(),
        path.display()
    )]
    TooLarge {
        path: PathBuf,
        slot: Slot,
        artifact: &'static str,
        size: u64,
        room: u64,
    },

    #[error(
        "the image's {artifact} (`{}`) does not match its manifest ({what}): rebuild the image",
        file.display()
    )]
    ImageMismatch {
        file: PathBuf,
        artifact: &'static str,
        what: String,
    },

    #[error("the image's manifest lists no {artifact} artefact `{key}`: rebuild the image")]
    MissingArtifact { artifact: &'static str, key: String },

    #[error("slot {slot} of the system disk `{}` holds no image it can boot", path.display())]
    SlotMeta {
        path: PathBuf,
        slot: Slot,
        #[source]
        source: SlotMetaError,
    },

    #[error(
        "the system disk `{}`: slot {slot}: {artifact} does not match its sha256 (the slot is damaged or was not fully written)",
        path.display()
    )]
    SlotMismatch {
        path: PathBuf,
        slot: Slot,
        artifact: &'static str,
    },

    #[error(
        "the system disk `{}`: slot {slot}: its {artifact} ({size} bytes) is larger than its partition ({room} bytes)",
        path.display()
    )]
    SlotOverflow {
        path: PathBuf,
        slot: Slot,
        artifact: &'static str,
        size: u64,
        room: u64,
    },

    #[error("cannot write the partition table of the system disk `{}`", path.display())]
    Gpt {
        path: PathBuf,
        #[source]
        source: gptman::Error,
    },

    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SystemDiskError {
    let what = what.into();
    move |source| SystemDiskError::Io { what, source }
}

/// Sizes in bytes of one slot's partitions (each a multiple of 1 MiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// `nodeos-boot-X`: [`SLOT_META_LEN`] of metadata, then the kernel.
    pub boot: u64,
    /// `nodeos-runtime-X`: the runtime layer.
    pub runtime: u64,
    /// `nodeos-app-X`: the app layer.
    pub app: u64,
}

impl Layout {
    /// Room for the image `manifest` and later updates of it: boot is
    /// max(64 MiB, 2 × kernel + [`SLOT_META_LEN`]), runtime max(1 GiB,
    /// 2 × runtime), app max(1 GiB, 4 × app), each rounded up to 1 MiB.
    pub fn for_image(manifest: &Manifest) -> Layout {
        let size = |key: &str| manifest.artifacts.get(key).map_or(0, |a| a.size);
        Layout {
            boot: round_up(
                (64 * MIB).max(2 * size(&manifest.kernel.artifact) + SLOT_META_LEN as u64),
            ),
            runtime: round_up(GIB.max(2 * size(&manifest.layers.runtime))),
            app: round_up(GIB.max(4 * size(&manifest.layers.app))),
        }
    }

    fn len(&self, part: Part) -> u64 {
        match part {
            Part::Boot => self.boot,
            Part::Runtime => self.runtime,
            Part::App => self.app,
        }
    }
}

/// Partitions a disk made by `nodeos export` has besides the system
/// disk's own; [`SystemDisk::open`] accepts a disk with or without them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extras {
    /// Size of the EFI system partition ([`ESP_PARTITION`]), placed first.
    pub esp: Option<u64>,
    /// Size of the data partition ([`DATA_LABEL`]), placed last so that a
    /// grown disk can grow it.
    pub data: Option<u64>,
    /// Every GUID is derived from this seed instead of drawn at random, so
    /// the same seed gives the same partition table.
    pub guid_seed: Option<Vec<u8>>,
}

/// The bytes a disk of `layout` and `extras` takes (its file's length).
pub fn disk_len(layout: &Layout, extras: &Extras) -> u64 {
    table(layout, extras)
        .iter()
        .try_fold(2 * GPT_RESERVE, |total, p| total.checked_add(p.len))
        .unwrap_or(u64::MAX)
}

/// One partition to create.
struct Planned {
    name: String,
    type_guid: [u8; 16],
    len: u64,
}

/// Every partition of a disk of `layout` and `extras`, in disk order.
fn table(layout: &Layout, extras: &Extras) -> Vec<Planned> {
    let mut sizes = vec![STATE_PARTITION_LEN];
    for part in Part::ALL {
        let len = round_up(layout.len(part));
        sizes.extend([len, len]);
    }
    let mut planned: Vec<Planned> = extras
        .esp
        .map(|len| Planned {
            name: ESP_PARTITION.to_owned(),
            type_guid: EFI_SYSTEM,
            len: round_up(len),
        })
        .into_iter()
        .collect();
    planned.extend(
        partition_names()
            .into_iter()
            .zip(sizes)
            .map(|(name, len)| Planned {
                name,
                type_guid: LINUX_DATA,
                len,
            }),
    );
    planned.extend(extras.data.map(|len| Planned {
        name: DATA_LABEL.to_owned(),
        type_guid: LINUX_DATA,
        len: round_up(len),
    }));
    planned
}

/// `bytes` rounded up to whole MiB, at least one.
fn round_up(bytes: u64) -> u64 {
    bytes.max(1).div_ceil(MIB) * MIB
}

/// The partition names in disk order: state, then boot, runtime and app of
/// slot a and of slot b.
fn partition_names() -> Vec<String> {
    let mut names = vec![STATE_PARTITION.to_owned()];
    for part in Part::ALL {
        for slot in [Slot::A, Slot::B] {
            names.push(slots::partition_name(part, slot));
        }
    }
    names
}

/// A system disk, opened read-write and locked while this value lives.
#[derive(Debug)]
pub struct SystemDisk {
    path: PathBuf,
    /// The disk, holding the `flock` (released when closed).
    file: File,
    /// GPT name → (byte offset, byte length).
    partitions: BTreeMap<String, (u64, u64)>,
}

impl SystemDisk {
    /// Creates a new system disk at `path` with partitions of `layout`'s
    /// sizes (rounded up to whole MiB), all empty (no state, no slot), and
    /// opens it.
    ///
    /// Refuses a path that exists. The disk is built under a temporary
    /// name in the same directory and renamed into place only once
    /// complete, so a failure leaves nothing behind.
    pub fn create(path: &Path, layout: &Layout) -> Result<SystemDisk, SystemDiskError> {
        SystemDisk::create_with(path, layout, &Extras::default())
    }

    /// [`SystemDisk::create`] with the partitions of `extras` too.
    pub fn create_with(
        path: &Path,
        layout: &Layout,
        extras: &Extras,
    ) -> Result<SystemDisk, SystemDiskError> {
        if path.symlink_metadata().is_ok() {
            return Err(SystemDiskError::Exists {
                path: path.to_owned(),
            });
        }
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let name = path
            .file_name()
            .map_or_else(|| "system.img".into(), |n| n.to_string_lossy().into_owned());
        let shown = path.display();
        let cannot = || format!("cannot create the system disk `{shown}`");
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(io_error(format!(
                "cannot create the system disk `{shown}` in `{}`",
                dir.display()
            )))?;
        write_table(path, tmp.as_file(), layout, extras)?;
        tmp.as_file().sync_all().map_err(io_error(cannot()))?;
        // The temporary file is removed if anything above failed.
        match tmp.persist_noclobber(path) {
            Ok(_) => {}
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(SystemDiskError::Exists {
                    path: path.to_owned(),
                });
            }
            Err(e) => return Err(io_error(cannot())(e.error)),
        }
        if let Ok(dir) = File::open(dir) {
            let _ = dir.sync_all();
        }
        SystemDisk::open(path)
    }

    /// Opens the system disk at `path` read-write, locks it and finds its
    /// partitions; fails if another `nodeos run` holds it or a partition is
    /// missing.
    pub fn open(path: &Path) -> Result<SystemDisk, SystemDiskError> {
        let shown = path.display();
        let file = File::options()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_error(format!("cannot open the system disk `{shown}`")))?;
        match crate::data::lock_exclusive(&file) {
            Ok(()) => {}
            Err(Locked::By(by)) => {
                return Err(SystemDiskError::InUse {
                    path: path.to_owned(),
                    by,
                });
            }
            Err(Locked::Io(e)) => {
                return Err(io_error(format!("cannot lock the system disk `{shown}`"))(
                    e,
                ));
            }
        }
        let not_ours = |reason: String| SystemDiskError::NotSystemDisk {
            path: path.to_owned(),
            reason,
        };
        let len = file
            .metadata()
            .map_err(io_error(format!("cannot read the system disk `{shown}`")))?
            .len();
        let gpt = GPT::find_from(&mut &file)
            .map_err(|e| not_ours(format!("it has no valid GPT partition table ({e})")))?;
        let mut partitions = BTreeMap::new();
        for (_, entry) in gpt.iter().filter(|(_, e)| e.is_used()) {
            let name = entry.partition_name.as_str();
            let bytes = |sectors: u64| {
                sectors
                    .checked_mul(gpt.sector_size)
                    .ok_or_else(|| not_ours(format!("partition {name} is out of range")))
            };
            let start = bytes(entry.starting_lba)?;
            let size = bytes(entry.size().map_err(|e| not_ours(e.to_string()))?)?;
            // The guest finds partitions by name too: ours must be unique.
            if partitions.insert(name.to_owned(), (start, size)).is_some()
                && name.starts_with("nodeos-")
            {
                return Err(not_ours(format!("two partitions are named {name}")));
            }
        }
        for name in partition_names() {
            match partitions.get(&name) {
                None => return Err(not_ours(format!("no partition {name}"))),
                Some(&(start, size)) if start.checked_add(size).is_none_or(|end| end > len) => {
                    return Err(not_ours(format!(
                        "partition {name} ends past the end of the file ({len} bytes)"
                    )));
                }
                Some(_) => {}
            }
        }
        let state = partitions[STATE_PARTITION].1;
        if state < LOG_OFFSET + LOG_MAX as u64 + 64 {
            return Err(not_ours(format!(
                "partition {STATE_PARTITION} is too small ({state} bytes)"
            )));
        }
        let disk = SystemDisk {
            path: path.to_owned(),
            file,
            partitions,
        };
        for slot in [Slot::A, Slot::B] {
            let boot = disk.part(Part::Boot, slot).1;
            if boot <= SLOT_META_LEN as u64 {
                return Err(not_ours(format!(
                    "partition {} is too small ({boot} bytes)",
                    slots::partition_name(Part::Boot, slot)
                )));
            }
        }
        Ok(disk)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Byte offset and length of the partition with the GPT name `name`.
    pub fn partition(&self, name: &str) -> Option<(u64, u64)> {
        self.partitions.get(name).copied()
    }

    /// The slot partition sizes, read back from the partition table (slot
    /// a's; slot b's are the same on a disk [`SystemDisk::create`] made).
    pub fn layout(&self) -> Layout {
        Layout {
            boot: self.part(Part::Boot, Slot::A).1,
            runtime: self.part(Part::Runtime, Slot::A).1,
            app: self.part(Part::App, Slot::A).1,
        }
    }

    /// The update state: the newest valid of its two copies, `None` on a
    /// new disk (or if both copies are damaged).
    pub fn read_state(&self) -> Result<Option<State>, SystemDiskError> {
        let (start, _) = self.partitions[STATE_PARTITION];
        let mut area = vec![0; 2 * STATE_COPY_LEN];
        self.file
            .read_exact_at(&mut area, start)
            .map_err(io_error(self.what("read the update state of")))?;
        Ok(State::read(&area))
    }

    /// Writes `state` into the copy after the one read last
    /// ([`State::next_copy`], which bumps its `seq`) and syncs it to disk.
    /// A torn write leaves the other copy, the previous state, valid.
    pub fn write_state(&self, state: &mut State) -> Result<(), SystemDiskError> {
        let (start, _) = self.partitions[STATE_PARTITION];
        let (offset, bytes) = state.next_copy();
        self.write_synced(start + offset, &bytes, "write the update state of")
    }

    /// The last trial's log tail, if one was written (`None` also when it
    /// cannot be read).
    pub fn read_log_tail(&self) -> Option<String> {
        let (start, _) = self.partitions[STATE_PARTITION];
        let mut area = vec![0; LOG_MAX + 64];
        self.file
            .read_exact_at(&mut area, start + LOG_OFFSET)
            .ok()?;
        slots::decode_log_tail(&area)
    }

    /// Stores the end of `text` as the last trial's log tail
    /// ([`slots::encode_log_tail`]).
    pub fn write_log_tail(&self, text: &str) -> Result<(), SystemDiskError> {
        let (start, _) = self.partitions[STATE_PARTITION];
        let bytes = slots::encode_log_tail(text);
        self.write_synced(start + LOG_OFFSET, &bytes, "write the log tail to")
    }

    /// The metadata at the start of `slot`'s boot partition: what image the
    /// slot holds ([`SystemDiskError::SlotMeta`] if none, e.g. never
    /// written or an install was cut short).
    pub fn slot_meta(&self, slot: Slot) -> Result<SlotMeta, SystemDiskError> {
        let (start, _) = self.part(Part::Boot, slot);
        let mut area = vec![0; SLOT_META_LEN];
        self.file
            .read_exact_at(&mut area, start)
            .map_err(io_error(self.what(&format!("read slot {slot} of"))))?;
        SlotMeta::decode(&area).map_err(|source| SystemDiskError::SlotMeta {
            path: self.path.clone(),
            slot,
            source,
        })
    }

    /// Installs the image in `image_dir` described by `manifest` into
    /// `slot`, as the host does (`sequence` 0, `installed_by: "host"`).
    /// Leaves the update state alone: marking the slot good (or making it
    /// active) is the caller's job.
    ///
    /// Checks that each artefact fits its partition first. The slot's
    /// metadata is cleared before anything else is written and written
    /// last, so a cut-short install never reads as a valid slot. Each
    /// artefact is hashed as it is copied and must match the manifest.
    pub fn install(
        &self,
        slot: Slot,
        image_dir: &Path,
        manifest: &Manifest,
    ) -> Result<(), SystemDiskError> {
        let mut copies = Vec::new();
        for (part, key) in Part::ALL.into_iter().zip(manifest.boot_artifacts()) {
            let artifact =
                manifest
                    .artifacts
                    .get(key)
                    .ok_or_else(|| SystemDiskError::MissingArtifact {
                        artifact: artifact_name(part),
                        key: key.to_owned(),
                    })?;
            let file_path = image_dir.join(&artifact.path);
            let file = File::open(&file_path).map_err(io_error(format!(
                "cannot read the image's {} `{}`",
                artifact_name(part),
                file_path.display()
            )))?;
            let size = file
                .metadata()
                .map_err(io_error(format!(
                    "cannot read the image's {} `{}`",
                    artifact_name(part),
                    file_path.display()
                )))?
                .len();
            if size != artifact.size {
                return Err(SystemDiskError::ImageMismatch {
                    file: file_path,
                    artifact: artifact_name(part),
                    what: format!("{size} bytes, the manifest says {}", artifact.size),
                });
            }
            let (start, room) = self.artifact_area(part, slot);
            if size > room {
                return Err(SystemDiskError::TooLarge {
                    path: self.path.clone(),
                    slot,
                    artifact: artifact_name(part),
                    size,
                    room,
                });
            }
            // Never more than the checked size, even if the file grows now.
            copies.push((part, file.take(size), file_path, start, &artifact.sha256));
        }

        let (boot, _) = self.part(Part::Boot, slot);
        let written = self.what(&format!("write slot {slot} of"));
        self.write_synced(boot, &vec![0; SLOT_META_LEN], &written)?;
        for (part, mut file, file_path, start, sha256) in copies {
            let mut hasher = Sha256::new();
            let mut buf = vec![0; CHUNK];
            let mut at = start;
            loop {
                let n = file.read(&mut buf).map_err(io_error(format!(
                    "cannot read the image's {} `{}`",
                    artifact_name(part),
                    file_path.display()
                )))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                self.file
                    .write_all_at(&buf[..n], at)
                    .map_err(io_error(written.clone()))?;
                at += n as u64;
            }
            // A file that shrank leaves part of the limit unread.
            if file.limit() != 0 || hex(&hasher.finalize()) != *sha256 {
                return Err(SystemDiskError::ImageMismatch {
                    file: file_path,
                    artifact: artifact_name(part),
                    what: "its sha256 differs".into(),
                });
            }
        }
        self.file.sync_data().map_err(io_error(written.clone()))?;
        let meta = SlotMeta {
            sequence: 0,
            installed_by: "host".into(),
            image: manifest.clone(),
        };
        self.write_synced(boot, &meta.encode(), &written)
    }

    /// Checks every boot artefact of `slot` against the sha256 its metadata
    /// records; returns the metadata. Run before each boot of a slot: the
    /// guest writes the disk, the host trusts only what it has checked.
    pub fn verify_slot(&self, slot: Slot) -> Result<SlotMeta, SystemDiskError> {
        let meta = self.slot_meta(slot)?;
        for (part, key) in Part::ALL.into_iter().zip(meta.image.boot_artifacts()) {
            let artifact =
                meta.image
                    .artifacts
                    .get(key)
                    .ok_or_else(|| SystemDiskError::SlotMeta {
                        path: self.path.clone(),
                        slot,
                        source: SlotMetaError::Json(format!("it lists no artefact `{key}`")),
                    })?;
            let start = self.artifact_start(part, slot, artifact.size)?;
            let mut hasher = Sha256::new();
            self.for_each_chunk(start, artifact.size, |chunk| {
                hasher.update(chunk);
                Ok(())
            })?;
            if hex(&hasher.finalize()) != artifact.sha256 {
                return Err(SystemDiskError::SlotMismatch {
                    path: self.path.clone(),
                    slot,
                    artifact: artifact_name(part),
                });
            }
        }
        Ok(meta)
    }

    /// Copies `slot`'s kernel (as `meta`, read from that slot, describes
    /// it) to a private temporary file (mode 0600) for QEMU's `-kernel`.
    /// Keep it until QEMU has exited; it is removed when dropped.
    pub fn kernel_file(
        &self,
        slot: Slot,
        meta: &SlotMeta,
    ) -> Result<tempfile::NamedTempFile, SystemDiskError> {
        let key = &meta.image.kernel.artifact;
        let size = meta
            .image
            .artifacts
            .get(key)
            .ok_or_else(|| SystemDiskError::SlotMeta {
                path: self.path.clone(),
                slot,
                source: SlotMetaError::Json(format!("it lists no artefact `{key}`")),
            })?
            .size;
        let start = self.artifact_start(Part::Boot, slot, size)?;
        let what = format!("cannot copy the kernel of slot {slot} to a temporary file");
        let tmp = tempfile::Builder::new()
            .prefix("nodeos-kernel-")
            .tempfile()
            .map_err(io_error(what.clone()))?;
        let mut at = 0;
        self.for_each_chunk(start, size, |chunk| {
            tmp.as_file()
                .write_all_at(chunk, at)
                .map_err(io_error(what.clone()))?;
            at += chunk.len() as u64;
            Ok(())
        })?;
        Ok(tmp)
    }

    /// The slot whose metadata records the same kernel, runtime and app
    /// sha256s as `manifest` (slot a first if both do); slots whose
    /// metadata does not read are skipped. Only the metadata is compared:
    /// [`SystemDisk::verify_slot`] checks the bytes.
    pub fn find_slot_with(&self, manifest: &Manifest) -> Option<Slot> {
        let wanted = boot_hashes(manifest)?;
        [Slot::A, Slot::B].into_iter().find(|&slot| {
            self.slot_meta(slot)
                .is_ok_and(|meta| boot_hashes(&meta.image).as_ref() == Some(&wanted))
        })
    }

    /// Offset and length of `slot`'s partition `part`.
    fn part(&self, part: Part, slot: Slot) -> (u64, u64) {
        self.partitions[&slots::partition_name(part, slot)]
    }

    /// Where an artefact of `part` starts in `slot` and how much room it has.
    fn artifact_area(&self, part: Part, slot: Slot) -> (u64, u64) {
        let (start, len) = self.part(part, slot);
        match part {
            Part::Boot => (start + SLOT_META_LEN as u64, len - SLOT_META_LEN as u64),
            Part::Runtime | Part::App => (start, len),
        }
    }

    /// Where an artefact of `part` and `size` bytes starts in `slot`, if
    /// it fits there.
    fn artifact_start(&self, part: Part, slot: Slot, size: u64) -> Result<u64, SystemDiskError> {
        let (start, room) = self.artifact_area(part, slot);
        if size > room {
            return Err(SystemDiskError::SlotOverflow {
                path: self.path.clone(),
                slot,
                artifact: artifact_name(part),
                size,
                room,
            });
        }
        Ok(start)
    }

    /// Calls `f` with the `len` bytes at `start`, a chunk at a time.
    fn for_each_chunk(
        &self,
        start: u64,
        len: u64,
        mut f: impl FnMut(&[u8]) -> Result<(), SystemDiskError>,
    ) -> Result<(), SystemDiskError> {
        let mut buf = vec![0; CHUNK];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(CHUNK as u64) as usize;
            self.file
                .read_exact_at(&mut buf[..n], start + done)
                .map_err(io_error(self.what("read")))?;
            f(&buf[..n])?;
            done += n as u64;
        }
        Ok(())
    }

    /// Writes `bytes` at `offset` and waits until they are on disk.
    fn write_synced(&self, offset: u64, bytes: &[u8], what: &str) -> Result<(), SystemDiskError> {
        self.file
            .write_all_at(bytes, offset)
            .and_then(|()| self.file.sync_data())
            .map_err(io_error(what))
    }

    /// ``cannot VERB the system disk `PATH` ``.
    fn what(&self, verb: &str) -> String {
        format!("cannot {verb} the system disk `{}`", self.path.display())
    }
}

/// Writes an empty system disk of `layout` and `extras` into `file` (a new,
/// empty file): sizes it, then writes the protective MBR and the GPT.
fn write_table(
    path: &Path,
    file: &File,
    layout: &Layout,
    extras: &Extras,
) -> Result<(), SystemDiskError> {
    let gpt_error = |source| SystemDiskError::Gpt {
        path: path.to_owned(),
        source,
    };
    let total = disk_len(layout, extras);
    file.set_len(total).map_err(io_error(format!(
        "cannot create the system disk `{}` of {total} bytes",
        path.display()
    )))?;
    let guid = |purpose: &str| match &extras.guid_seed {
        Some(seed) => Ok(derived_guid(seed, purpose)),
        None => random_guid(),
    };
    let mut gpt = GPT::new_from(&mut &*file, SECTOR, guid("disk")?).map_err(gpt_error)?;
    gpt.align = MIB / SECTOR;
    let mut start = GPT_RESERVE;
    for (i, planned) in table(layout, extras).into_iter().enumerate() {
        gpt[i as u32 + 1] = GPTPartitionEntry {
            partition_type_guid: planned.type_guid,
            unique_partition_guid: guid(&planned.name)?,
            starting_lba: start / SECTOR,
            ending_lba: (start + planned.len) / SECTOR - 1,
            attribute_bits: 0,
            partition_name: planned.name.as_str().into(),
        };
        start += planned.len;
    }
    gpt.write_into(&mut &*file).map_err(gpt_error)?;
    GPT::write_protective_mbr_into(&mut &*file, SECTOR).map_err(gpt_error)?;
    Ok(())
}

/// A version 4 GUID in GPT byte order made from sha256(`seed`, `purpose`).
fn derived_guid(seed: &[u8], purpose: &str) -> [u8; 16] {
    let digest = Sha256::new()
        .chain_update(seed)
        .chain_update([0])
        .chain_update(purpose.as_bytes())
        .finalize();
    let mut guid = [0; 16];
    guid.copy_from_slice(&digest[..16]);
    set_version_4(&mut guid);
    guid
}

/// A random (version 4) GUID in GPT byte order.
fn random_guid() -> Result<[u8; 16], SystemDiskError> {
    let mut guid = [0; 16];
    getrandom::fill(&mut guid).map_err(|e| SystemDiskError::Io {
        what: "cannot get random bytes for the system disk's GUIDs".into(),
        source: std::io::Error::other(e),
    })?;
    set_version_4(&mut guid);
    Ok(guid)
}

/// Version 4 in the high nibble of the third field (stored little-endian),
/// variant 10 in the top bits of the fourth.
fn set_version_4(guid: &mut [u8; 16]) {
    guid[7] = (guid[7] & 0x0f) | 0x40;
    guid[8] = (guid[8] & 0x3f) | 0x80;
}

/// `kernel`, `runtime` or `app`: how errors name a slot's artefacts.
fn artifact_name(part: Part) -> &'static str {
    match part {
        Part::Boot => "kernel",
        Part::Runtime | Part::App => part.as_str(),
    }
}

/// The sha256s of the kernel, runtime and app, in that order; `None` if
/// the manifest lacks one of them.
fn boot_hashes(manifest: &Manifest) -> Option<Vec<String>> {
    manifest
        .boot_artifacts()
        .into_iter()
        .map(|key| manifest.artifacts.get(key).map(|a| a.sha256.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodeos_manifest::slots::{SlotStatus, UpdateResult};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// Small partitions: 1 MiB boot, 2 MiB runtime, 1 MiB app.
    const SMALL: Layout = Layout {
        boot: MIB,
        runtime: 2 * MIB,
        app: MIB,
    };

    /// Writes a fake image (kernel, runtime, app of the given sizes, with
    /// contents that depend on `seed`) into `dir` and returns its manifest
    /// (read from JSON, so that fields added later with defaults do not
    /// matter here).
    fn fake_image(dir: &Path, seed: u8, sizes: [u64; 3]) -> Manifest {
        std::fs::create_dir_all(dir).unwrap();
        let mut artifacts = serde_json::Map::new();
        for (key, size) in ["kernel", "runtime", "app"].into_iter().zip(sizes) {
            let bytes: Vec<u8> = (0..size)
                .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
                .collect();
            let file = format!("{key}.img");
            std::fs::write(dir.join(&file), &bytes).unwrap();
            artifacts.insert(
                key.to_owned(),
                serde_json::json!({
                    "path": file,
                    "sha256": hex(&Sha256::digest(&bytes)),
                    "size": size,
                }),
            );
        }
        let manifest = serde_json::json!({
            "format": nodeos_manifest::MANIFEST_FORMAT,
            "name": "hello",
            "version": format!("1.0.{seed}"),
            "profile": "release",
            "node": {"version": "22.1.0", "range": null, "integrity": "sha512-x"},
            "kernel": {
                "version": "6.1",
                "cmdline": "console=ttyS0 root=/dev/vda ro",
                "artifact": "kernel",
            },
            "layers": {
                "format": "erofs",
                "compression": "lz4hc",
                "runtime": "runtime",
                "app": "app",
            },
            "artifacts": artifacts,
            "builder": "nodeos 0.1.0",
        });
        Manifest::from_json(&manifest.to_string()).unwrap()
    }

    const SIZES: [u64; 3] = [300_000, 1_500_000, 5_000];

    #[test]
    fn an_export_disk_has_the_esp_first_and_data_last_and_the_same_bytes_for_a_seed() {
        let dir = tempfile::tempdir().unwrap();
        let extras = Extras {
            esp: Some(3 * MIB),
            data: Some(5 * MIB),
            guid_seed: Some(b"seed".to_vec()),
        };
        let make = |name: &str| {
            let path = dir.path().join(name);
            let disk = SystemDisk::create_with(&path, &SMALL, &extras).unwrap();
            let esp = disk.partition(ESP_PARTITION).unwrap();
            let data = disk.partition(DATA_LABEL).unwrap();
            let state = disk.partition(STATE_PARTITION).unwrap();
            assert_eq!(esp, (GPT_RESERVE, 3 * MIB));
            assert_eq!(state.0, GPT_RESERVE + 3 * MIB);
            assert_eq!(data.0 + data.1 + GPT_RESERVE, disk_len(&SMALL, &extras));
            drop(disk);
            // Reopened, it is still a system disk.
            SystemDisk::open(&path).unwrap();
            std::fs::read(&path).unwrap()
        };
        let first = make("one.img");
        assert_eq!(first.len() as u64, disk_len(&SMALL, &extras));
        assert_eq!(first, make("two.img"), "same seed, same bytes");
        let gpt = GPT::find_from(&mut std::io::Cursor::new(&first)).unwrap();
        assert_eq!(gpt[1].partition_type_guid, EFI_SYSTEM);
        assert_eq!(gpt[1].partition_name.as_str(), ESP_PARTITION);

        let random = |name: &str| {
            let path = dir.path().join(name);
            drop(SystemDisk::create(&path, &SMALL).unwrap());
            std::fs::read(path).unwrap()
        };
        assert_ne!(
            random("r1.img"),
            random("r2.img"),
            "GUIDs are random without a seed"
        );
    }

    fn new_disk(dir: &Path) -> SystemDisk {
        SystemDisk::create(&dir.join("hello.system.img"), &SMALL).unwrap()
    }

    #[test]
    fn layout_for_an_image_leaves_room_for_updates() {
        let dir = tempfile::tempdir().unwrap();
        let mut manifest = fake_image(dir.path(), 1, [10, 10, 10]);
        assert_eq!(
            Layout::for_image(&manifest),
            Layout {
                boot: 64 * MIB,
                runtime: GIB,
                app: GIB
            }
        );
        let set = |m: &mut Manifest, key: &str, size| m.artifacts.get_mut(key).unwrap().size = size;
        set(&mut manifest, "kernel", 40 * MIB);
        set(&mut manifest, "runtime", 600 * MIB + 1);
        set(&mut manifest, "app", 300 * MIB);
        assert_eq!(
            Layout::for_image(&manifest),
            Layout {
                boot: 81 * MIB,
                runtime: 1201 * MIB,
                app: 1200 * MIB
            }
        );
    }

    #[test]
    fn create_then_open_finds_every_partition_in_order_and_aligned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hello.system.img");
        drop(SystemDisk::create(&path, &SMALL).unwrap());
        let disk = SystemDisk::open(&path).unwrap();
        assert_eq!(disk.path(), path);
        let mut end = 0;
        for name in partition_names() {
            let (start, len) = disk.partition(&name).unwrap();
            assert_eq!((start % MIB, len % MIB), (0, 0), "{name}");
            assert!(start >= end.max(MIB), "{name} after the previous one");
            end = start + len;
        }
        assert_eq!(
            disk.partition(STATE_PARTITION).unwrap().1,
            STATE_PARTITION_LEN
        );
        assert_eq!(disk.partition("nodeos-boot-c"), None);
        assert_eq!(disk.layout(), SMALL);
        let meta = std::fs::metadata(&path).unwrap();
        assert!(meta.len() >= end + 33 * SECTOR, "room for the backup GPT");
        assert!(meta.blocks() * 512 < meta.len(), "the disk is sparse");
        assert_eq!(disk.read_state().unwrap(), None);
        assert_eq!(disk.read_log_tail(), None);
        assert!(matches!(
            disk.slot_meta(Slot::A),
            Err(SystemDiskError::SlotMeta { slot: Slot::A, .. })
        ));
    }

    #[test]
    fn the_partition_table_passes_sgdisk_verify() {
        let dir = tempfile::tempdir().unwrap();
        let disk = new_disk(dir.path());
        let sgdisk = |arg: &str| {
            std::process::Command::new("sgdisk")
                .arg(arg)
                .arg(disk.path())
                .output()
        };
        let Ok(output) = sgdisk("-v") else {
            eprintln!("SKIPPED: sgdisk is not installed (Debian/Ubuntu: apt-get install gdisk)");
            return;
        };
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{text}");
        assert!(text.contains("No problems found"), "{text}");
        let output = sgdisk("-p").unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        let rows: Vec<_> = text
            .lines()
            .skip_while(|line| !line.trim_start().starts_with("Number"))
            .skip(1)
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
            .collect();
        let names: Vec<_> = rows.iter().map(|row| *row.last().unwrap()).collect();
        assert_eq!(names, partition_names(), "{text}");
        // Linux filesystem data.
        assert!(
            rows.iter().all(|row| row[row.len() - 2] == "8300"),
            "{text}"
        );
    }

    #[test]
    fn create_refuses_an_existing_path_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hello.system.img");
        std::fs::write(&path, "mine").unwrap();
        let err = SystemDisk::create(&path, &SMALL).unwrap_err();
        assert!(matches!(err, SystemDiskError::Exists { .. }), "{err}");
        assert!(err.to_string().contains("a file is already there"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "mine");

        // Too large to be a file: fails after the temporary file was made.
        let huge = Layout {
            app: u64::MAX / 2,
            ..SMALL
        };
        let other = dir.path().join("other.system.img");
        let err = SystemDisk::create(&other, &huge).unwrap_err();
        assert!(matches!(err, SystemDiskError::Io { .. }), "{err}");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["hello.system.img"]);
    }

    #[test]
    fn open_refuses_a_file_that_is_not_a_system_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.img");
        std::fs::write(&path, vec![0; 1 << 16]).unwrap();
        let err = SystemDisk::open(&path).unwrap_err().to_string();
        assert!(err.contains("is not a nodeos system disk"), "{err}");

        // A GPT without the last partition.
        let file = File::options().read(true).write(true).open(&path).unwrap();
        file.set_len(16 * MIB).unwrap();
        let mut gpt = GPT::new_from(&mut &file, SECTOR, [1; 16]).unwrap();
        for (i, name) in partition_names().iter().take(6).enumerate() {
            gpt[i as u32 + 1] = GPTPartitionEntry {
                partition_type_guid: LINUX_DATA,
                unique_partition_guid: [i as u8 + 1; 16],
                starting_lba: (i as u64 + 1) * MIB / SECTOR,
                ending_lba: (i as u64 + 2) * MIB / SECTOR - 1,
                attribute_bits: 0,
                partition_name: name.as_str().into(),
            };
        }
        gpt.write_into(&mut &file).unwrap();
        drop(file);
        let err = SystemDisk::open(&path).unwrap_err().to_string();
        assert!(
            err.contains("is not a nodeos system disk: no partition nodeos-app-b"),
            "{err}"
        );
    }

    #[test]
    fn a_second_open_while_the_first_is_alive_is_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let disk = new_disk(dir.path());
        let err = SystemDisk::open(disk.path()).unwrap_err();
        assert!(matches!(err, SystemDiskError::InUse { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("is in use by another `nodeos run`"),
            "{err}"
        );
        let path = disk.path().to_owned();
        drop(disk);
        SystemDisk::open(&path).unwrap();
    }

    #[test]
    fn state_and_log_tail_round_trip_across_writes() {
        let dir = tempfile::tempdir().unwrap();
        let disk = new_disk(dir.path());
        let mut state = State::new(Slot::A, "1.0.0");
        for round in 1..=5u64 {
            state.max_sequence = round * 100;
            state.b.status = if round % 2 == 0 {
                SlotStatus::Trying
            } else {
                SlotStatus::Bad
            };
            disk.write_state(&mut state).unwrap();
            assert_eq!(state.seq, round);
            assert_eq!(disk.read_state().unwrap().as_ref(), Some(&state));
        }
        // Read back by a new opener, as the next run would.
        let path = disk.path().to_owned();
        disk.write_log_tail("line 1\nline 2\n").unwrap();
        drop(disk);
        let disk = SystemDisk::open(&path).unwrap();
        let read = disk.read_state().unwrap().unwrap();
        assert_eq!((read.seq, read.max_sequence), (5, 500));
        assert_eq!(disk.read_log_tail().as_deref(), Some("line 1\nline 2\n"));
        assert!(
            read.last_update
                .is_none_or(|l| l.result != UpdateResult::Pending)
        );
    }

    #[test]
    fn install_then_verify_and_a_flipped_byte_names_the_artefact() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = fake_image(&dir.path().join("image"), 1, SIZES);
        let disk = new_disk(dir.path());
        disk.install(Slot::B, &dir.path().join("image"), &manifest)
            .unwrap();
        let meta = disk.verify_slot(Slot::B).unwrap();
        assert_eq!(
            (meta.sequence, meta.installed_by.as_str(), &meta.image),
            (0, "host", &manifest)
        );
        assert_eq!(disk.slot_meta(Slot::B).unwrap(), meta);
        let err = disk.verify_slot(Slot::A).unwrap_err().to_string();
        assert!(err.contains("slot a of the system disk"), "{err}");

        let (runtime, _) = disk.partition("nodeos-runtime-b").unwrap();
        let mut byte = [0];
        disk.file
            .read_exact_at(&mut byte, runtime + 777_777)
            .unwrap();
        disk.file
            .write_all_at(&[byte[0] ^ 1], runtime + 777_777)
            .unwrap();
        let err = disk.verify_slot(Slot::B).unwrap_err();
        assert!(
            matches!(
                err,
                SystemDiskError::SlotMismatch {
                    slot: Slot::B,
                    artifact: "runtime",
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("slot b: runtime does not match its sha256"),
            "{err}"
        );
    }

    #[test]
    fn an_artefact_too_large_for_its_partition_is_refused_and_the_slot_kept() {
        let dir = tempfile::tempdir().unwrap();
        let disk = new_disk(dir.path());
        let small = fake_image(&dir.path().join("v1"), 1, SIZES);
        disk.install(Slot::A, &dir.path().join("v1"), &small)
            .unwrap();
        let large = fake_image(&dir.path().join("v2"), 2, [1000, 1000, MIB + 1]);
        let err = disk
            .install(Slot::A, &dir.path().join("v2"), &large)
            .unwrap_err();
        assert!(
            matches!(
                err,
                SystemDiskError::TooLarge {
                    artifact: "app",
                    ..
                }
            ),
            "{err}"
        );
        let message = err.to_string();
        let shown = disk.path().display().to_string();
        for part in [
            "the app is 1048577 bytes but its partition holds 1048576",
            &format!("remove {shown}"),
            "/data is a separate file and is kept",
        ] {
            assert!(message.contains(part), "{message}");
        }
        // Refused before anything was written: the slot still holds v1.
        assert_eq!(disk.verify_slot(Slot::A).unwrap().image, small);

        // The kernel's room is its partition less the metadata.
        let kernel = fake_image(
            &dir.path().join("v3"),
            3,
            [MIB - SLOT_META_LEN as u64 + 1, 10, 10],
        );
        let err = disk
            .install(Slot::A, &dir.path().join("v3"), &kernel)
            .unwrap_err();
        assert!(
            matches!(
                err,
                SystemDiskError::TooLarge {
                    artifact: "kernel",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn an_install_cut_short_leaves_no_valid_slot() {
        let dir = tempfile::tempdir().unwrap();
        let disk = new_disk(dir.path());
        let image = dir.path().join("image");
        let v1 = fake_image(&image, 1, SIZES);
        disk.install(Slot::A, &image, &v1).unwrap();
        // The app file changed after the build: found while copying.
        let v2 = fake_image(&image, 2, SIZES);
        std::fs::write(image.join("app.img"), vec![7; SIZES[2] as usize]).unwrap();
        let err = disk.install(Slot::A, &image, &v2).unwrap_err();
        assert!(
            matches!(
                err,
                SystemDiskError::ImageMismatch {
                    artifact: "app",
                    ..
                }
            ),
            "{err}"
        );
        assert!(matches!(
            disk.slot_meta(Slot::A),
            Err(SystemDiskError::SlotMeta { .. })
        ));
        assert_eq!(disk.find_slot_with(&v1), None);
    }

    #[test]
    fn find_slot_with_matches_the_artefact_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let disk = new_disk(dir.path());
        let v1 = fake_image(&dir.path().join("v1"), 1, SIZES);
        let v2 = fake_image(&dir.path().join("v2"), 2, SIZES);
        assert_eq!(disk.find_slot_with(&v1), None);
        disk.install(Slot::A, &dir.path().join("v1"), &v1).unwrap();
        assert_eq!(disk.find_slot_with(&v1), Some(Slot::A));
        assert_eq!(disk.find_slot_with(&v2), None);
        disk.install(Slot::B, &dir.path().join("v2"), &v2).unwrap();
        assert_eq!(disk.find_slot_with(&v2), Some(Slot::B));
        // The same files under another version string are the same image.
        let mut renamed = v1.clone();
        renamed.version = "9.9.9".into();
        assert_eq!(disk.find_slot_with(&renamed), Some(Slot::A));
    }

    #[test]
    fn kernel_file_holds_the_kernel_privately() {
        let dir = tempfile::tempdir().unwrap();
        let disk = new_disk(dir.path());
        let image = dir.path().join("image");
        let manifest = fake_image(&image, 4, SIZES);
        disk.install(Slot::B, &image, &manifest).unwrap();
        let meta = disk.verify_slot(Slot::B).unwrap();
        let kernel = disk.kernel_file(Slot::B, &meta).unwrap();
        assert_eq!(
            std::fs::read(kernel.path()).unwrap(),
            std::fs::read(image.join("kernel.img")).unwrap()
        );
        let mode = kernel.as_file().metadata().unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
