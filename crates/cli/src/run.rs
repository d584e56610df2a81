//! `nodeos run`: boot an image directory under QEMU, stream its console,
//! stop it gracefully on Ctrl-C.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use nodeos_image::Reporter;
use nodeos_image::project::Project;
use nodeos_manifest::console;
use nodeos_manifest::{MANIFEST_FILE, Manifest};
use nodeos_vmm::{Accel, ConsoleSink, Outcome, PortForward, ResolvedAccel, Vm, VmConfig};

use crate::exit::{Exit, fail};
use crate::ui::Ui;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The image directory [default: dist/<name>.nodeos of the project in the current directory]
    #[arg(value_name = "IMAGE_DIR")]
    image: Option<PathBuf>,
    /// Forward a host port to a guest port, e.g. 8080:3000 or 0.0.0.0:8080:3000 (repeatable).
    #[arg(short = 'p', long = "publish", value_name = "[ADDR:]HOST:GUEST")]
    publish: Vec<PortForward>,
    /// Guest memory in MiB.
    #[arg(long, value_name = "MB", default_value_t = 256, value_parser = clap::value_parser!(u32).range(32..=1048576))]
    memory: u32,
    /// Number of virtual CPUs.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    cpus: u32,
    /// Accelerator: auto uses KVM only where it is proven to work, else TCG.
    #[arg(long, value_name = "auto|kvm|tcg", default_value = "auto")]
    accel: Accel,
    /// Seconds to wait for a clean shutdown after Ctrl-C before killing the VM.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    stop_timeout: u64,
}

pub fn run(args: RunArgs, ui: &Ui) -> anyhow::Result<Exit> {
    let dir = match args.image {
        Some(dir) => dir,
        None => default_image_dir()?,
    };
    let manifest = verify_image(&dir)?;
    let artifact = |key: &str| dir.join(&manifest.artifacts[key].path);
    let config = |accel: Accel| {
        let mut config = VmConfig::new(
            artifact(&manifest.kernel.artifact),
            artifact(&manifest.rootfs.artifact),
            manifest.kernel.cmdline.clone(),
        );
        config.memory_mb = args.memory;
        config.cpus = args.cpus;
        config.accel = accel;
        config.forwards = args.publish.clone();
        config.qemu = std::env::var_os("NODEOS_QEMU").map(PathBuf::from);
        config.console = ConsoleSink::Stdout;
        config
    };

    let (tx, signals) = mpsc::channel();
    let hook = SignalThread::start(tx)?;
    let boot_err = || format!("cannot boot {}", dir.display());
    let mut vm = Vm::start(config(args.accel)).with_context(boot_err)?;
    if args.accel == Accel::Auto && vm.accel() == ResolvedAccel::Kvm {
        // The probe guest ran under KVM; make sure the real one does too.
        if vm.wait_for_line(console::PREFIX, KVM_FIRST_LINE).is_err() {
            vm.kill();
            ui.warn(&format!(
                "the guest printed nothing within {}s under KVM; falling back to TCG",
                KVM_FIRST_LINE.as_secs()
            ));
            vm = Vm::start(config(Accel::Tcg)).with_context(boot_err)?;
        }
    }
    ui.note(&format!(
        "booting {} v{} with {} ({} MiB, {} CPU); Ctrl-C stops it",
        manifest.name,
        manifest.version,
        vm.accel(),
        args.memory,
        args.cpus
    ));
    for fwd in &args.publish {
        ui.note(&format!(
            "forwarding {}:{} -> guest port {}",
            fwd.host_addr, fwd.host_port, fwd.guest_port
        ));
    }

    let stop_timeout = Duration::from_secs(args.stop_timeout);
    let mut stopping: Option<Instant> = None;
    let outcome = loop {
        if let Some(outcome) = vm.wait(Duration::from_millis(100))? {
            break outcome;
        }
        if signals.try_recv().is_ok() {
            if stopping.is_some() {
                vm.kill();
                return Err(fail(
                    Exit::Interrupted,
                    "interrupted again: the VM was killed",
                ));
            }
            ui.note("stopping the guest (press Ctrl-C again to kill it)");
            stopping = Some(Instant::now());
            if let Err(e) = vm.powerdown() {
                // The guest may have powered off just now and taken QMP with it.
                match vm.wait(Duration::from_secs(2))? {
                    Some(outcome) => break outcome,
                    None => return Err(e).context("cannot press the guest's power button"),
                }
            }
        }
        if stopping.is_some_and(|since| since.elapsed() > stop_timeout) {
            vm.kill();
            return Err(fail(
                Exit::Vm,
                format!(
                    "the guest did not shut down within {}s and was killed",
                    stop_timeout.as_secs()
                ),
            ));
        }
    };
    drop(hook);
    exit_for(outcome, stopping.is_some())
}

/// How long a guest started under `--accel auto` with KVM gets to print its
/// first init line before nodeos falls back to TCG.
const KVM_FIRST_LINE: Duration = Duration::from_secs(30);

/// Forwards SIGINT and SIGTERM to a channel while it lives.
struct SignalThread(signal_hook::iterator::Handle);

impl SignalThread {
    fn start(tx: mpsc::Sender<i32>) -> anyhow::Result<Self> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
            .context("cannot install the Ctrl-C handler")?;
        let handle = signals.handle();
        std::thread::spawn(move || {
            for signal in signals.forever() {
                if tx.send(signal).is_err() {
                    break;
                }
            }
        });
        Ok(SignalThread(handle))
    }
}

impl Drop for SignalThread {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Maps how the guest ended to nodeos's exit status.
fn exit_for(outcome: Outcome, stop_requested: bool) -> anyhow::Result<Exit> {
    match outcome {
        Outcome::AppExited(exit) if exit.success() || stop_requested => Ok(Exit::Success),
        Outcome::AppExited(exit) => {
            Err(fail(Exit::AppFailed, format!("the app exited with {exit}")))
        }
        Outcome::PoweredOff => Ok(Exit::Success),
        Outcome::KernelPanic { .. } => Err(fail(
            Exit::Vm,
            "the guest kernel panicked (see the console above)",
        )),
        Outcome::HardStopped => Err(fail(Exit::Vm, "the VM was hard-stopped")),
        Outcome::QemuFailed {
            status,
            stderr_tail,
        } => Err(fail(
            Exit::Vm,
            format!("QEMU failed ({status}): {stderr_tail}"),
        )),
    }
}

/// `dist/<name>.nodeos` of the project in the current directory.
fn default_image_dir() -> anyhow::Result<PathBuf> {
    match Project::load(Path::new(".")) {
        Ok(project) => Ok(Path::new("dist").join(format!("{}.nodeos", project.image_name()))),
        Err(e) => Err(fail(
            Exit::Image,
            format!(
                "no IMAGE_DIR given and the current directory is not a buildable npm project ({e}); pass the image directory, e.g. dist/<name>.nodeos"
            ),
        )),
    }
}

/// Reads the manifest and checks every artefact's size and sha256.
pub fn verify_image(dir: &Path) -> anyhow::Result<Manifest> {
    let rebuild = "rebuild it with `nodeos build`";
    if !dir.is_dir() {
        return Err(fail(
            Exit::Image,
            format!(
                "image directory {} does not exist; {rebuild}",
                dir.display()
            ),
        ));
    }
    let manifest_path = dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&manifest_path).map_err(|_| {
        fail(
            Exit::Image,
            format!(
                "{} is not a nodeos image: it has no {MANIFEST_FILE}; {rebuild}",
                dir.display()
            ),
        )
    })?;
    let manifest = Manifest::from_json(&text).map_err(|e| {
        fail(
            Exit::Image,
            format!("{}: {e}; {rebuild}", manifest_path.display()),
        )
    })?;
    for key in [&manifest.kernel.artifact, &manifest.rootfs.artifact] {
        if !manifest.artifacts.contains_key(key) {
            return Err(fail(
                Exit::Image,
                format!(
                    "{}: no artefact named {key}; {rebuild}",
                    manifest_path.display()
                ),
            ));
        }
    }
    for artifact in manifest.artifacts.values() {
        let plain = Path::new(&artifact.path)
            .file_name()
            .is_some_and(|n| n == artifact.path.as_str());
        if !plain {
            return Err(fail(
                Exit::Image,
                format!(
                    "{}: artefact path {:?} is not a plain file name; {rebuild}",
                    manifest_path.display(),
                    artifact.path
                ),
            ));
        }
        let path = dir.join(&artifact.path);
        let (sha256, size) = nodeos_image::sha256_file(&path).map_err(|_| {
            fail(
                Exit::Image,
                format!(
                    "image is incomplete: {} is missing; {rebuild}",
                    path.display()
                ),
            )
        })?;
        if size != artifact.size || sha256 != artifact.sha256 {
            return Err(fail(
                Exit::Image,
                format!(
                    "image is corrupt: {} does not match its checksum in {MANIFEST_FILE}; {rebuild}",
                    path.display()
                ),
            ));
        }
    }
    Ok(manifest)
}
