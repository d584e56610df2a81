//! The UEFI disk every disk format is made from: the A/B system disk of
//! `nodeos run` (`nodeos_vmm::system_disk`), with an EFI system partition
//! first and the data partition last.
//!
//! | partition (GPT name) | contents |
//! |---|---|
//! | `nodeos-esp` ([`ESP_SIZE`], FAT32) | systemd-boot, slot a's kernel and boot entry ([`nodeos_manifest::esp`]) |
//! | `nodeos-state`, `nodeos-{boot,runtime,app}-{a,b}` | as `nodeos run` makes them: slot a installed and active, slot b empty |
//! | `nodeos-data` (ext4, label `nodeos-data`) | the app's `/data`, empty, its root owned by the app's user |
//!
//! The firmware boots `EFI/BOOT/BOOTX64.EFI` (systemd-boot), which boots
//! the slot's kernel (an EFI-stub bzImage) with the slot's command line.
//! The guest's update agent writes slot b and its boot entry; see
//! [`nodeos_manifest::esp`] for how a trial boot works.
//!
//! The bytes depend only on the image and the plan: the GUIDs, the FAT
//! serial and the ext4 UUID come from [`seed`], and every timestamp is
//! fixed.

use std::path::{Path, PathBuf};

use nodeos_manifest::esp::{self, ESP_PARTITION};
use nodeos_manifest::slots::{Slot, State, slot_cmdline};
use nodeos_manifest::{APP_GID, APP_UID, DATA_LABEL, Manifest};
use nodeos_vmm::system_disk::{Extras, Layout, SystemDisk, SystemDiskError, disk_len};
use sha2::{Digest, Sha256};

use crate::tools::{self, Tool};
use crate::{ExportError, io_error};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// Size of the EFI system partition: FAT32 needs at least about 33 MiB,
/// and room for two kernels and systemd-boot is far less.
pub const ESP_SIZE: u64 = 64 * MIB;
/// FAT has no dates before 1980; every file on the ESP is dated
/// 1980-01-01 00:00 UTC.
const FAT_EPOCH: &str = "315532800";

/// The disk's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DiskPlan {
    /// The whole disk's size in bytes (rounded down to whole MiB); the data
    /// partition takes what the slots and the ESP leave. `None`: the
    /// smallest disk with the image's `data.size`.
    pub size: Option<u64>,
}

impl DiskPlan {
    /// The same plan with the disk rounded up to whole GiB.
    pub fn whole_gib(self, manifest: &Manifest) -> DiskPlan {
        let need = disk_len(&Layout::for_image(manifest), &extras(manifest, None));
        DiskPlan {
            size: Some(self.size.unwrap_or(need).max(need).next_multiple_of(GIB)),
        }
    }

    /// The slot layout and the extra partitions of this plan for
    /// `manifest`; fails if `size` is below what the image needs.
    pub fn resolve(&self, manifest: &Manifest) -> Result<(Layout, Extras), ExportError> {
        let layout = Layout::for_image(manifest);
        let mut extras = extras(manifest, Some(seed(manifest, self).to_vec()));
        let need = disk_len(&layout, &extras);
        if let Some(size) = self.size {
            if size < need {
                return Err(ExportError::TooSmall { size, need });
            }
            let more = (size - need) / MIB * MIB;
            extras.data = extras.data.map(|data| data + more);
        }
        Ok((layout, extras))
    }
}

/// The ESP and a data partition of the image's `data.size`.
fn extras(manifest: &Manifest, guid_seed: Option<Vec<u8>>) -> Extras {
    Extras {
        esp: Some(ESP_SIZE),
        data: Some(manifest.data.size.bytes().next_multiple_of(MIB)),
        guid_seed,
    }
}

/// What every identifier of an export of `manifest` by `plan` is derived
/// from: sha256 of the manifest (which holds every artefact's sha256) and
/// the plan.
pub fn seed(manifest: &Manifest, plan: &DiskPlan) -> [u8; 32] {
    let json = serde_json::to_vec(manifest).expect("a manifest serialises");
    Sha256::new()
        .chain_update(b"nodeos-export\0")
        .chain_update(&json)
        .chain_update(plan.size.unwrap_or(0).to_le_bytes())
        .finalize()
        .into()
}

/// Fails unless the image's kernel is a PE image (an EFI-stub bzImage
/// starts with `MZ`), which the firmware's loader can start.
pub fn check_efi_stub(image_dir: &Path, manifest: &Manifest) -> Result<(), ExportError> {
    let path = kernel_file(image_dir, manifest)?;
    let mut head = [0u8; 2];
    std::fs::File::open(&path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .map_err(io_error(format!("cannot read `{}`", path.display())))?;
    if &head == b"MZ" {
        Ok(())
    } else {
        Err(ExportError::NoEfiStub { path })
    }
}

/// The image's kernel file.
pub(crate) fn kernel_file(image_dir: &Path, manifest: &Manifest) -> Result<PathBuf, ExportError> {
    manifest
        .artifacts
        .get(&manifest.kernel.artifact)
        .map(|a| image_dir.join(&a.path))
        .ok_or_else(|| {
            SystemDiskError::MissingArtifact {
                artifact: "kernel",
                key: manifest.kernel.artifact.clone(),
            }
            .into()
        })
}

/// Writes the UEFI disk of the image in `image_dir` to `raw` (a new file)
/// as `plan` says; returns its size.
pub fn write(
    image_dir: &Path,
    manifest: &Manifest,
    plan: &DiskPlan,
    raw: &Path,
) -> Result<u64, ExportError> {
    let (layout, extras) = plan.resolve(manifest)?;
    let disk = SystemDisk::create_with(raw, &layout, &extras)?;
    disk.install(Slot::A, image_dir, manifest)?;
    disk.write_state(&mut State::new(Slot::A, &manifest.version))?;
    let esp = disk
        .partition(ESP_PARTITION)
        .expect("create_with made the ESP");
    let data = disk.partition(DATA_LABEL).expect("create_with made it");
    // The tools below write the file; nothing else may.
    drop(disk);

    let seed = seed(manifest, plan);
    let kernel = kernel_file(image_dir, manifest)?;
    write_esp(raw, esp, manifest, &kernel, &seed)?;
    format_data(raw, data, &seed)?;
    let size = std::fs::metadata(raw)
        .map_err(io_error(format!("cannot read `{}`", raw.display())))?
        .len();
    Ok(size)
}

/// Formats the ESP (`(offset, length)` in `raw`) as FAT32 and copies
/// systemd-boot, slot a's kernel, the loader configuration and slot a's
/// entry onto it, with mtools.
fn write_esp(
    raw: &Path,
    (offset, len): (u64, u64),
    manifest: &Manifest,
    kernel: &Path,
    seed: &[u8; 32],
) -> Result<(), ExportError> {
    let image = format!("{}@@{offset}", raw.display());
    let mtools = |tool: Tool| {
        let mut command = tool.command();
        command
            .env("SOURCE_DATE_EPOCH", FAT_EPOCH)
            .env("MTOOLS_SKIP_CHECK", "1")
            .env("MTOOLSRC", "/dev/null")
            .arg("-i")
            .arg(&image);
        command
    };
    let serial = hex4(&seed[..4]);
    let mut format = mtools(Tool::Mformat);
    format.args(["-F", "-h", "64", "-s", "32", "-v", "NODEOS", "-N", &serial]);
    format.arg("-T").arg((len / 512).to_string()).arg("::");
    tools::run("mformat", format)?;

    let mut mkdir = mtools(Tool::Mmd);
    for dir in [
        "EFI",
        "EFI/BOOT",
        esp::KERNELS_DIR,
        "loader",
        esp::ENTRIES_DIR,
    ] {
        mkdir.arg(format!("::/{dir}"));
    }
    tools::run("mmd", mkdir)?;

    let staging = tempfile::tempdir().map_err(io_error("cannot create a temporary directory"))?;
    let text = |name: &str, content: &str| -> Result<std::path::PathBuf, ExportError> {
        let path = staging.path().join(name);
        std::fs::write(&path, content)
            .map_err(io_error(format!("cannot write `{}`", path.display())))?;
        Ok(path)
    };
    let title = format!("{} {} (slot a)", manifest.name, manifest.version);
    let cmdline = slot_cmdline(&manifest.kernel.cmdline, Slot::A);
    let files = [
        (
            Tool::SystemdBoot.find().expect("tools::check found it"),
            esp::LOADER_PATH.to_owned(),
        ),
        (kernel.to_owned(), esp::kernel_path(Slot::A)),
        (
            text("loader.conf", esp::LOADER_CONF)?,
            esp::LOADER_CONF_PATH.to_owned(),
        ),
        (
            text("entry.conf", &esp::entry(&title, 0, Slot::A, &cmdline))?,
            format!("{}/{}", esp::ENTRIES_DIR, esp::entry_name(Slot::A, false)),
        ),
    ];
    for (from, to) in files {
        let mut copy = mtools(Tool::Mcopy);
        copy.arg(&from).arg(format!("::/{to}"));
        tools::run("mcopy", copy)?;
    }
    Ok(())
}

/// Formats the data partition (`(offset, length)` in `raw`) as ext4 the
/// way `nodeos run` makes a data volume, with an ext4 UUID from `seed`
/// and fixed timestamps.
fn format_data(raw: &Path, (offset, len): (u64, u64), seed: &[u8; 32]) -> Result<(), ExportError> {
    let uuid = uuid(&seed[4..20]);
    let extended = format!(
        "root_owner={APP_UID}:{APP_GID},lazy_itable_init=0,lazy_journal_init=0,hash_seed={uuid},offset={offset}"
    );
    let mut mkfs = Tool::MkfsExt4.command();
    mkfs.env("E2FSPROGS_FAKE_TIME", "1")
        .env("MKE2FS_CONFIG", "/etc/mke2fs.conf")
        .args([
            "-q", "-F", "-t", "ext4", "-L", DATA_LABEL, "-m", "0", "-U", &uuid, "-E", &extended,
        ])
        .arg(raw)
        .arg(format!("{}k", len / 1024));
    tools::run("mkfs.ext4", mkfs)
}

fn hex4(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// A version 4 UUID string made from 16 bytes.
fn uuid(bytes: &[u8]) -> String {
    let mut b = [0u8; 16];
    b.copy_from_slice(&bytes[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_version_4() {
        let id = uuid(&[0xff; 16]);
        assert_eq!(id, "ffffffff-ffff-4fff-bfff-ffffffffffff");
        assert_eq!(hex4(&[0x12, 0xab, 0, 1]), "12AB0001");
    }
}
