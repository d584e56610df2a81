//! `nodeos export`: a built image as a UEFI disk (raw, qcow2, vmdk, vhdx),
//! a GCE image, a Firecracker directory or a KubeVirt containerDisk. The
//! work is done by `nodeos-export`; this parses the flags, checks the image
//! and reports.

use std::path::PathBuf;

use nodeos_export::{DiskPlan, ExportError, Format, Options};
use nodeos_image::Reporter;
use nodeos_manifest::settings::DataSize;

use crate::exit::{Exit, fail};
use crate::ui::Ui;

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The image directory [default: dist/<name>.nodeos of the project in the current directory]
    #[arg(value_name = "IMAGE_DIR")]
    image: Option<PathBuf>,
    /// What to make: a UEFI disk (raw, qcow2, vmdk, vhdx), a GCE image
    /// (gce), a Firecracker directory (firecracker) or a KubeVirt
    /// containerDisk with its manifests (kubevirt).
    #[arg(long, short = 'f', value_name = "FORMAT", value_parser = format_parser())]
    format: Format,
    /// Where to write it [default: beside the image: dist/<name>.<format>]
    #[arg(long, short = 'o', value_name = "PATH")]
    out: Option<PathBuf>,
    /// The disk's size, e.g. 8G; the data partition takes what the slots
    /// leave [default: the smallest that holds both slots and the image's
    /// data.size].
    #[arg(long, value_name = "SIZE")]
    size: Option<DataSize>,
    /// firecracker: the host tap device of the guest's network interface
    /// [default: tap0].
    #[arg(long, value_name = "NAME")]
    tap: Option<String>,
    /// kubevirt: the container image reference the archive will be pushed
    /// as, e.g. registry.example.com/hello:1.0.0 [default: <name>:<version>]
    #[arg(long = "image", value_name = "REF")]
    image_ref: Option<String>,
    /// Print what was written as JSON on stdout: the format, the output,
    /// the disk's size, and each file's path, size and sha256.
    #[arg(long)]
    json: bool,
}

/// `--format`: one of [`Format::ALL`], which clap lists when it is not.
fn format_parser() -> impl clap::builder::TypedValueParser<Value = Format> {
    use clap::builder::{PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new(Format::ALL.map(Format::as_str))
        .map(|name| Format::parse(&name).expect("a listed format"))
}

pub fn run(args: ExportArgs, ui: &Ui) -> anyhow::Result<Exit> {
    let format = args.format;
    let dir = match args.image {
        Some(dir) => dir,
        None => crate::run::default_image_dir()?,
    };
    let manifest = crate::run::verify_image(&dir)?;
    let out = args
        .out
        .unwrap_or_else(|| nodeos_vmm::data::beside(&dir, format.suffix()));
    if args.image_ref.is_some() && format != Format::Kubevirt {
        return Err(fail(
            Exit::Usage,
            format!("--image is for --format kubevirt, not {format}"),
        ));
    }
    if args.tap.is_some() && format != Format::Firecracker {
        return Err(fail(
            Exit::Usage,
            format!("--tap is for --format firecracker, not {format}"),
        ));
    }
    if let Some(image) = &args.image_ref
        && !valid_tag(nodeos_export::kubevirt::image_tag(image))
    {
        return Err(fail(
            Exit::Usage,
            format!(
                "--image {image:?}: its tag must be 1 to 128 of A-Z, a-z, 0-9, `_`, `.` and `-`, not starting with `.` or `-`"
            ),
        ));
    }
    let options = Options {
        format,
        out: out.clone(),
        plan: DiskPlan {
            size: args.size.map(|s| s.bytes()),
        },
        tap: args.tap.unwrap_or_else(|| "tap0".to_owned()),
        image_ref: args.image_ref,
    };
    ui.status(
        "Exporting",
        &format!(
            "{} v{} as {format} to {}",
            manifest.name,
            manifest.version,
            out.display()
        ),
    );
    // Ctrl-C or SIGTERM must not kill nodeos before it removes its staging
    // directory: the signal only sets a flag here. The tool running then
    // (qemu-img, tar, mkfs) gets it too and stops, which fails the export
    // and removes the staging; a step in this process runs to its end.
    let interrupted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, std::sync::Arc::clone(&interrupted))?;
    }
    let mut spinner: Option<Box<dyn nodeos_image::Progress>> = None;
    let result = nodeos_export::export(&dir, &manifest, &options, &mut |step| {
        if let Some(previous) = spinner.take() {
            previous.finish();
        }
        ui.detail(step);
        spinner = Some(ui.spinner(step));
    });
    if let Some(spinner) = spinner.take() {
        spinner.finish();
    }
    if interrupted.load(std::sync::atomic::Ordering::SeqCst) {
        let what = match &result {
            Ok(exported) => format!("{} was written whole", exported.path.display()),
            Err(_) => "nothing was written".to_owned(),
        };
        return Err(fail(Exit::Interrupted, format!("interrupted; {what}")));
    }
    let exported = result.map_err(classify)?;
    for (path, size) in &exported.files {
        ui.detail(&format!("{} ({size} bytes)", path.display()));
    }
    ui.status(
        "Finished",
        &format!(
            "{} ({} disk)",
            exported.path.display(),
            nodeos_vmm::data::human_size(exported.disk_size)
        ),
    );
    if args.json {
        let mut files = Vec::new();
        for (path, size) in &exported.files {
            let (sha256, _) = nodeos_image::sha256_file(path)?;
            files.push(serde_json::json!({"path": absolute(path), "size": size, "sha256": sha256}));
        }
        let summary = serde_json::json!({
            "format": format.as_str(),
            "path": absolute(&exported.path),
            "disk_size": exported.disk_size,
            "files": files,
        });
        println!("{}", serde_json::to_string_pretty(&summary)?);
    }
    Ok(Exit::Success)
}

fn absolute(path: &std::path::Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_owned())
        .display()
        .to_string()
}

/// The exit code of an export failure; the message is the error's.
fn classify(err: ExportError) -> anyhow::Error {
    use nodeos_vmm::SystemDiskError;
    let exit = match &err {
        ExportError::ToolsMissing(_) => Exit::ToolMissing,
        ExportError::TooSmall { .. } => Exit::Usage,
        ExportError::Output { .. } | ExportError::OutputTaken { .. } => Exit::Output,
        ExportError::Vmlinux { .. } | ExportError::NoEfiStub { .. } => Exit::Kernel,
        ExportError::SystemDisk(
            SystemDiskError::ImageMismatch { .. } | SystemDiskError::MissingArtifact { .. },
        ) => Exit::Image,
        _ => Exit::Failure,
    };
    let message = crate::format_chain(&anyhow::Error::new(err));
    fail(exit, message)
}

/// A container image tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && tag.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}
