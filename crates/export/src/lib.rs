//! `nodeos export`: turns a built image directory into the artefacts other
//! hypervisors and orchestrators take. Nothing is rebuilt: every format is
//! made from the image's kernel, layers and manifest, and its bytes depend
//! only on them and the export's options.
//!
//! | format | output | made of |
//! |---|---|---|
//! | `raw`, `qcow2`, `vmdk`, `vhdx` | one file | the UEFI disk ([`disk`]) |
//! | `gce` | `.tar.gz` | the UEFI disk as `disk.raw` ([`gce`]) |
//! | `firecracker` | a directory | `vmlinux`, the UEFI disk, `vm_config.json` ([`firecracker`]) |
//! | `kubevirt` | a directory | a containerDisk OCI archive of the qcow2 ([`oci`]), `vm.yaml` ([`kubevirt`]) |
//!
//! Every output is written under a temporary name beside its path and
//! renamed into place when complete: a failure leaves nothing behind, and
//! an existing output is replaced only by a whole new one.

pub mod convert;
pub mod disk;
pub mod firecracker;
pub mod gce;
pub mod kubevirt;
pub mod oci;
pub mod tools;
pub mod vhdx;

use std::path::{Path, PathBuf};

use nodeos_manifest::Manifest;

pub use disk::DiskPlan;
pub use tools::Tool;

/// The export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Raw,
    Qcow2,
    Vmdk,
    Vhdx,
    Firecracker,
    Kubevirt,
    Gce,
}

impl Format {
    pub const ALL: [Format; 7] = [
        Format::Raw,
        Format::Qcow2,
        Format::Vmdk,
        Format::Vhdx,
        Format::Firecracker,
        Format::Kubevirt,
        Format::Gce,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Vhdx => "vhdx",
            Format::Firecracker => "firecracker",
            Format::Kubevirt => "kubevirt",
            Format::Gce => "gce",
        }
    }

    pub fn parse(text: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.as_str() == text)
    }

    /// What the output is beside the image directory `dist/<name>.nodeos`:
    /// `dist/<name>.<suffix>`.
    pub fn suffix(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Gce => "gce.tar.gz",
            other => other.as_str(),
        }
    }

    /// For the formats that write a directory: which file names in it are
    /// an export's (an existing output is replaced only if it holds nothing
    /// else).
    pub fn directory_files(self) -> Option<&'static dyn Fn(&str) -> bool> {
        match self {
            Format::Firecracker => Some(&|name: &str| {
                [firecracker::VMLINUX, firecracker::DISK, firecracker::CONFIG].contains(&name)
            }),
            Format::Kubevirt => {
                Some(&|name: &str| name == kubevirt::MANIFESTS || name.ends_with(".oci.tar"))
            }
            _ => None,
        }
    }

    /// The host tools this format needs, checked before anything is written.
    pub fn tools(self) -> Vec<Tool> {
        let mut tools = vec![
            Tool::Mformat,
            Tool::Mmd,
            Tool::Mcopy,
            Tool::SystemdBoot,
            Tool::MkfsExt4,
        ];
        match self {
            Format::Qcow2 | Format::Vmdk | Format::Kubevirt => tools.push(Tool::QemuImg),
            Format::Firecracker => tools.push(Tool::Xz),
            Format::Gce => tools.push(Tool::Tar),
            Format::Raw | Format::Vhdx => {}
        }
        tools
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to export and where.
#[derive(Debug, Clone)]
pub struct Options {
    pub format: Format,
    /// The output file (or directory, for `firecracker` and `kubevirt`).
    pub out: PathBuf,
    /// The disk's sizes.
    pub plan: DiskPlan,
    /// `firecracker`: the host's tap device for the guest's network.
    pub tap: String,
    /// `kubevirt`: the container image reference the archive is pushed as.
    pub image_ref: Option<String>,
}

/// Everything that can go wrong in an export. Messages say what to do; a
/// `#[source]` is not repeated in them.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{}", tools::missing_message(.0))]
    ToolsMissing(Vec<Tool>),

    #[error(
        "--size {size} is smaller than the image needs: at least {need} bytes ({}); give a larger --size, or leave it out",
        human(*.need)
    )]
    TooSmall { size: u64, need: u64 },

    #[error(
        "`{}` is in the way: {reason}; remove it or give another --out",
        path.display()
    )]
    OutputTaken { path: PathBuf, reason: String },

    #[error("cannot write the export to `{}`", path.display())]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("`{tool}` failed ({status}): {output}")]
    ToolFailed {
        tool: &'static str,
        status: String,
        output: String,
    },

    #[error(transparent)]
    SystemDisk(#[from] nodeos_vmm::SystemDiskError),

    #[error("the image's kernel `{}` cannot be unpacked into a vmlinux: {reason}", path.display())]
    Vmlinux { path: PathBuf, reason: String },

    #[error(
        "the image's kernel `{}` cannot boot by UEFI (it has no EFI stub): build the image with nodeos's own kernel (no --kernel), or use a kernel built with CONFIG_EFI_STUB",
        path.display()
    )]
    NoEfiStub { path: PathBuf },

    #[error(transparent)]
    Vhdx(#[from] vhdx::VhdxError),

    #[error(transparent)]
    Oci(#[from] oci::OciError),

    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

pub(crate) fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ExportError {
    let what = what.into();
    move |source| ExportError::Io { what, source }
}

/// `bytes` for people: `1.5 GiB`.
pub fn human(bytes: u64) -> String {
    nodeos_vmm::data::human_size(bytes)
}

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    /// The output path.
    pub path: PathBuf,
    /// Every file written, with its size, in path order.
    pub files: Vec<(PathBuf, u64)>,
    /// The disk's virtual size.
    pub disk_size: u64,
}

/// Exports the image in `image_dir` (its `manifest` already checked) as
/// `options` say. `step` is told each step as it starts, for progress.
pub fn export(
    image_dir: &Path,
    manifest: &Manifest,
    options: &Options,
    step: &mut dyn FnMut(&str),
) -> Result<Exported, ExportError> {
    tools::check(&options.format.tools())?;
    let out = &options.out;
    tools::check_out(out, options.format.directory_files())?;
    let staging = tools::staging_dir(out)?;
    // The cheap checks first: the size asked for, then the kernel.
    options.plan.resolve(manifest)?;
    if options.format != Format::Firecracker {
        disk::check_efi_stub(image_dir, manifest)?;
    }
    let mut plan = options.plan;
    if options.format == Format::Gce {
        // GCE imports only disks of whole GiB; the data partition takes the rest.
        plan = plan.whole_gib(manifest);
    }
    let raw = staging.path().join("disk.raw");
    step("writing the UEFI disk (slot a installed, slot b empty)");
    let disk_size = disk::write(image_dir, manifest, &plan, &raw)?;
    let seed = disk::seed(manifest, &plan);
    let made = staging.path().join("out");
    match options.format {
        Format::Raw => std::fs::rename(&raw, &made).map_err(io_error("cannot move the disk"))?,
        Format::Qcow2 => {
            step("converting to qcow2");
            convert::qcow2(&raw, &made)?;
        }
        Format::Vmdk => {
            step("converting to vmdk (streamOptimized)");
            convert::vmdk(&raw, &made, out, &seed)?;
        }
        Format::Vhdx => {
            step("converting to vhdx (dynamic)");
            vhdx::write_vhdx(&raw, &made, &seed)?;
        }
        Format::Gce => {
            step("packing disk.raw into a tar.gz");
            gce::write(&raw, &made)?;
        }
        Format::Firecracker => {
            step("unpacking the kernel into vmlinux");
            firecracker::write(image_dir, manifest, &raw, &made, &options.tap)?;
        }
        Format::Kubevirt => {
            step("converting to qcow2 and packing the containerDisk");
            let qcow2 = staging.path().join("disk.qcow2");
            convert::qcow2(&raw, &qcow2)?;
            kubevirt::write_dir(manifest, &qcow2, &made, options.image_ref.as_deref())?;
        }
    }
    tools::replace(&made, staging.path(), out)?;
    drop(staging);
    let files = tools::list_files(out)?;
    Ok(Exported {
        path: out.clone(),
        files,
        disk_size,
    })
}
