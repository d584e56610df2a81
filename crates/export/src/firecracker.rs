//! `firecracker`: a directory Firecracker boots with
//! `firecracker --no-api --config-file vm_config.json`:
//!
//! | file | contents |
//! |---|---|
//! | `vmlinux` | the image's kernel, unpacked from its bzImage (Firecracker boots an uncompressed ELF on x86-64) |
//! | `disk.raw` | the UEFI disk ([`crate::disk`]); Firecracker ignores the ESP and boots slot a directly |
//! | `vm_config.json` | [`VmConfig`], in Firecracker's configuration schema, paths relative to the directory |
//!
//! Firecracker has no PCI and no firmware: its devices are virtio-mmio,
//! announced on the kernel command line, which the kernel has
//! (`VIRTIO_MMIO_CMDLINE_DEVICES`). `qemu -M microvm` boots the same way,
//! and is how this is tested.

use std::path::Path;
use std::process::Stdio;

use nodeos_manifest::Manifest;
use nodeos_manifest::host::{DEFAULT_CPUS, DEFAULT_MEMORY_MIB};
use nodeos_manifest::slots::{Slot, slot_cmdline};
use serde::Serialize;

use crate::tools::Tool;
use crate::{ExportError, io_error};

/// The file names in the directory.
pub const VMLINUX: &str = "vmlinux";
pub const DISK: &str = "disk.raw";
pub const CONFIG: &str = "vm_config.json";

/// Kernel arguments Firecracker's guests need besides the image's: reboot
/// through the keyboard controller (Firecracker's only reset, which ends
/// the VM) and no PCI probing.
pub const EXTRA_ARGS: &str = "reboot=k pci=off";

/// Firecracker's `--config-file`: the API's `PUT` bodies under their
/// resource names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmConfig {
    #[serde(rename = "boot-source")]
    pub boot_source: BootSource,
    pub drives: Vec<Drive>,
    #[serde(rename = "network-interfaces")]
    pub network_interfaces: Vec<NetworkInterface>,
    #[serde(rename = "machine-config")]
    pub machine_config: MachineConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootSource {
    pub kernel_image_path: String,
    pub boot_args: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drive {
    pub drive_id: String,
    pub path_on_host: String,
    /// `false`: Firecracker would add `root=/dev/vda`; the boot arguments
    /// name the slot's root partition instead.
    pub is_root_device: bool,
    pub is_read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkInterface {
    pub iface_id: String,
    pub guest_mac: String,
    pub host_dev_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MachineConfig {
    pub vcpu_count: u32,
    pub mem_size_mib: u32,
    pub smt: bool,
}

impl VmConfig {
    /// The configuration for `manifest`'s image, its network on the host's
    /// tap device `tap`.
    pub fn new(manifest: &Manifest, tap: &str) -> VmConfig {
        VmConfig {
            boot_source: BootSource {
                kernel_image_path: VMLINUX.into(),
                boot_args: boot_args(&manifest.kernel.cmdline),
            },
            drives: vec![Drive {
                drive_id: "system".into(),
                path_on_host: DISK.into(),
                is_root_device: false,
                is_read_only: false,
            }],
            network_interfaces: vec![NetworkInterface {
                iface_id: "eth0".into(),
                guest_mac: "06:00:ac:10:00:02".into(),
                host_dev_name: tap.into(),
            }],
            machine_config: MachineConfig {
                vcpu_count: manifest.vm.cpus.unwrap_or(DEFAULT_CPUS),
                mem_size_mib: manifest.vm.memory.unwrap_or(DEFAULT_MEMORY_MIB),
                smt: false,
            },
        }
    }
}

/// The image's command line made to boot slot a, plus [`EXTRA_ARGS`].
pub fn boot_args(cmdline: &str) -> String {
    format!("{} {EXTRA_ARGS}", slot_cmdline(cmdline, Slot::A))
}

/// Writes the directory `out` (new) from the image and the UEFI disk `raw`
/// (moved into it).
pub fn write(
    image_dir: &Path,
    manifest: &Manifest,
    raw: &Path,
    out: &Path,
    tap: &str,
) -> Result<(), ExportError> {
    std::fs::create_dir(out).map_err(io_error(format!("cannot create `{}`", out.display())))?;
    let kernel = crate::disk::kernel_file(image_dir, manifest)?;
    let vmlinux = unpack_vmlinux(&kernel)?;
    let write = |name: &str, bytes: &[u8]| {
        let path = out.join(name);
        std::fs::write(&path, bytes).map_err(io_error(format!("cannot write `{}`", path.display())))
    };
    write(VMLINUX, &vmlinux)?;
    let mut json = serde_json::to_vec_pretty(&VmConfig::new(manifest, tap)).expect("serialises");
    json.push(b'\n');
    write(CONFIG, &json)?;
    std::fs::rename(raw, out.join(DISK)).map_err(io_error("cannot move the disk"))
}

/// The uncompressed kernel ELF inside the bzImage at `path`: the payload
/// the setup header points at (boot protocol 2.08+), xz or gzip.
pub fn unpack_vmlinux(path: &Path) -> Result<Vec<u8>, ExportError> {
    let bad = |reason: &str| ExportError::Vmlinux {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let image =
        std::fs::read(path).map_err(io_error(format!("cannot read `{}`", path.display())))?;
    let payload = payload(&image).map_err(bad)?;
    let elf = if payload.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        unxz(payload).map_err(|e| bad(&e))?
    } else if payload.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(payload), &mut out)
            .map_err(|e| bad(&format!("its gzip payload does not unpack: {e}")))?;
        out
    } else {
        return Err(bad(
            "its payload is compressed with neither xz nor gzip (nodeos's kernel is xz); build the kernel with KERNEL_XZ or KERNEL_GZIP",
        ));
    };
    if !elf.starts_with(b"\x7fELF") {
        return Err(bad("the unpacked payload is not an ELF file"));
    }
    Ok(elf)
}

/// The compressed payload of a bzImage.
fn payload(image: &[u8]) -> Result<&[u8], &'static str> {
    let u16_at = |at: usize| {
        image
            .get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        image
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    if image.get(0x202..0x206) != Some(b"HdrS") {
        return Err("it has no bzImage header");
    }
    if u16_at(0x206).unwrap_or(0) < 0x208 {
        return Err("its boot protocol is older than 2.08 (no payload fields)");
    }
    let setup_sects = match image[0x1f1] {
        0 => 4,
        n => n as usize,
    };
    let (Some(offset), Some(len)) = (u32_at(0x248), u32_at(0x24c)) else {
        return Err("its header is cut short");
    };
    let start = (setup_sects + 1) * 512 + offset;
    image
        .get(start..start + len)
        .ok_or("its payload lies past the end of the file")
}

/// `xz -dc --single-stream`: the kernel's xz payload is followed by its
/// unpacked size, which `xz` would read as a second stream.
fn unxz(payload: &[u8]) -> Result<Vec<u8>, String> {
    let mut child = Tool::Xz
        .command()
        .args(["-dc", "--single-stream"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("`xz` did not start: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped");
    let input = payload.to_vec();
    let feeder = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &input));
    let output = child
        .wait_with_output()
        .map_err(|e| format!("`xz` failed: {e}"))?;
    let _ = feeder.join();
    if !output.status.success() {
        return Err(format!(
            "`xz -d` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(output.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_uses_firecrackers_field_names() {
        // Field names and types as in Firecracker's API (swagger): the
        // PUT /boot-source, /drives, /network-interfaces and
        // /machine-config bodies.
        let config = VmConfig {
            boot_source: BootSource {
                kernel_image_path: "vmlinux".into(),
                boot_args: boot_args("console=ttyS0 root=/dev/vda ro panic=-1"),
            },
            drives: vec![Drive {
                drive_id: "system".into(),
                path_on_host: "disk.raw".into(),
                is_root_device: false,
                is_read_only: false,
            }],
            network_interfaces: vec![NetworkInterface {
                iface_id: "eth0".into(),
                guest_mac: "06:00:ac:10:00:02".into(),
                host_dev_name: "tap0".into(),
            }],
            machine_config: MachineConfig {
                vcpu_count: 2,
                mem_size_mib: 256,
                smt: false,
            },
        };
        let value = serde_json::to_value(&config).unwrap();
        let expected = serde_json::json!({
            "boot-source": {
                "kernel_image_path": "vmlinux",
                "boot_args": "console=ttyS0 root=PARTLABEL=nodeos-runtime-a ro panic=-1 nodeos.slot=a reboot=k pci=off"
            },
            "drives": [{"drive_id": "system", "path_on_host": "disk.raw", "is_root_device": false, "is_read_only": false}],
            "network-interfaces": [{"iface_id": "eth0", "guest_mac": "06:00:ac:10:00:02", "host_dev_name": "tap0"}],
            "machine-config": {"vcpu_count": 2, "mem_size_mib": 256, "smt": false}
        });
        assert_eq!(value, expected);
    }

    #[test]
    fn a_file_without_a_bzimage_header_is_refused() {
        assert_eq!(payload(&[0; 4096]), Err("it has no bzImage header"));
        let mut image = vec![0u8; 4096];
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        image[0x1f1] = 1;
        image[0x248..0x24c].copy_from_slice(&10u32.to_le_bytes());
        image[0x24c..0x250].copy_from_slice(&100_000u32.to_le_bytes());
        assert_eq!(
            payload(&image),
            Err("its payload lies past the end of the file")
        );
        image[0x24c..0x250].copy_from_slice(&6u32.to_le_bytes());
        image[1024 + 10..1024 + 16].copy_from_slice(b"abcdef");
        assert_eq!(payload(&image), Ok(&b"abcdef"[..]));
    }
}
