//! `nodeos run`: boot an image directory under QEMU, stream its console,
//! stop it gracefully on Ctrl-C. Settings and environment for this boot
//! (`--env`, `--restart`, …) go to the guest on a config disk. The
//! persistent data volume (`/data` in the guest) is created, grown and
//! checked before every boot, and locked while the VM runs.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use nodeos_image::Reporter;
use nodeos_image::project::Project;
use nodeos_manifest::console;
use nodeos_manifest::host::{
    CPUS_RANGE, DEFAULT_CPUS, DEFAULT_MEMORY_MIB, MEMORY_MIB_RANGE, VmSettings,
};
use nodeos_manifest::settings::{
    CheckStatus, Cidr, DATA_FAILED_MARKER, DataSettings, DataSize, MAX_GRACE_SECS, OnCheckFailure,
    StaticIpv4, SyslogTarget, check_env,
};
use nodeos_manifest::{LogFormat, MANIFEST_FILE, Manifest, RestartPolicy, RunConfig};
use nodeos_vmm::data::{DataVolume, Opened, SizeRequest, human_size};
use nodeos_vmm::{Accel, ConsoleSink, Outcome, PortForward, ResolvedAccel, Vm, VmConfig};

use crate::exit::{Exit, fail};
use crate::system;
use crate::ui::Ui;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The image directory [default: dist/<name>.nodeos of the project in the current directory]
    #[arg(value_name = "IMAGE_DIR")]
    image: Option<PathBuf>,
    /// Forward a host port to a guest port, e.g. 8080:3000 or
    /// 0.0.0.0:8080:3000 (repeatable) [default: the image's ports, else none].
    #[arg(short = 'p', long = "publish", value_name = "[ADDR:]HOST:GUEST")]
    publish: Vec<PortForward>,
    /// Guest memory in MiB [default: the image's memory, else 256].
    #[arg(long, value_name = "MB", value_parser = clap::value_parser!(u32).range(i64::from(*MEMORY_MIB_RANGE.start())..=i64::from(*MEMORY_MIB_RANGE.end())))]
    memory: Option<u32>,
    /// Number of virtual CPUs [default: the image's cpus, else 1].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(i64::from(*CPUS_RANGE.start())..=i64::from(*CPUS_RANGE.end())))]
    cpus: Option<u32>,
    /// Accelerator: auto uses KVM only where it is proven to work, else TCG.
    #[arg(long, value_name = "auto|kvm|tcg", default_value = "auto")]
    accel: Accel,
    /// Set an environment variable of the app; KEY alone passes KEY's value
    /// from this environment (repeatable; wins over --env-file).
    #[arg(short = 'e', long = "env", value_name = "KEY[=VALUE]")]
    env: Vec<String>,
    /// Read environment variables from a dotenv file: KEY=VALUE lines, #
    /// comments (repeatable; later files win).
    #[arg(long = "env-file", value_name = "FILE")]
    env_files: Vec<PathBuf>,
    /// Restart the app after it exits: always, on-failure (non-zero exit or
    /// signal), never [default: the image's, else always].
    #[arg(long, value_name = "always|on-failure|never")]
    restart: Option<RestartPolicy>,
    /// Seconds the app gets between SIGTERM and SIGKILL when stopped
    /// [default: the image's, else 10].
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_GRACE_SECS)))]
    grace: Option<u32>,
    /// Console log format of the guest [default: the image's, else text].
    #[arg(long, value_name = "text|json")]
    log_format: Option<LogFormat>,
    /// Also ship the guest's log to this syslog server (RFC 5424):
    /// udp://HOST:PORT or tcp://HOST:PORT, e.g. udp://10.0.2.2:514 for a
    /// server on the host [default: the image's syslog, else none].
    #[arg(long, value_name = "URL")]
    syslog: Option<SyslogTarget>,
    /// Static IPv4 address of the guest's first NIC instead of DHCP (or
    /// the image's address), e.g. 10.0.2.20/24.
    #[arg(long, value_name = "ADDR/PREFIX")]
    ip: Option<Cidr<Ipv4Addr>>,
    /// Default gateway with --ip [default: none].
    #[arg(long, value_name = "ADDR", requires = "ip")]
    gateway: Option<Ipv4Addr>,
    /// DNS server of the guest, replacing the image's and DHCP's (repeatable).
    #[arg(long, value_name = "ADDR")]
    dns: Vec<IpAddr>,
    /// Seconds to wait for a clean shutdown after Ctrl-C before killing the
    /// VM [default: 30, or --grace + 15 if that is more].
    #[arg(long, value_name = "SECS")]
    stop_timeout: Option<u64>,
    /// The data volume mounted at /data in the guest, created on first use
    /// [default: IMAGE_DIR's name with .data.img, beside it, e.g.
    /// dist/hello.data.img].
    #[arg(long, value_name = "PATH")]
    data: Option<PathBuf>,
    /// Size of the data volume when it is created, or to grow it to, e.g.
    /// 512M, 2G, 2048MiB [default: the image's data.size, else 1GiB].
    #[arg(long, value_name = "SIZE")]
    data_size: Option<DataSize>,
    /// Boot without a data volume: /data is then an empty read-only directory.
    #[arg(long, conflicts_with_all = ["data", "data_size", "data_on_check_failure"])]
    no_data: bool,
    /// When the data volume fails its check: stop (the app is not started)
    /// or start the app anyway [default: the image's data.onCheckFailure,
    /// else stop].
    #[arg(long, value_name = "stop|start")]
    data_on_check_failure: Option<OnCheckFailure>,
    /// The A/B system disk the image is installed into and booted from,
    /// created on first use [default: IMAGE_DIR's name with .system.img,
    /// beside it, e.g. dist/hello.system.img].
    #[arg(long, value_name = "PATH")]
    system: Option<PathBuf>,
    /// Seconds a new version's trial boot may take to reach a verdict (its
    /// health check passed or failed) before it is killed and rolled back
    /// [default: 300].
    #[arg(long, value_name = "SECS", value_parser = crate::duration::whole_seconds)]
    trial_boot_timeout: Option<u64>,
}

/// The VM's memory, CPUs and port forwards: the flags, else the image's
/// settings (package.json `nodeos.memory`, `cpus`, `ports`), else the
/// defaults.
struct VmShape {
    memory: u32,
    cpus: u32,
    forwards: Vec<PortForward>,
}

impl VmShape {
    fn new(args: &RunArgs, image: &VmSettings) -> VmShape {
        VmShape {
            memory: args.memory.or(image.memory).unwrap_or(DEFAULT_MEMORY_MIB),
            cpus: args.cpus.or(image.cpus).unwrap_or(DEFAULT_CPUS),
            forwards: if args.publish.is_empty() {
                image.ports.clone()
            } else {
                args.publish.clone()
            },
        }
    }
}

pub fn run(args: RunArgs, ui: &Ui) -> anyhow::Result<Exit> {
    // Bad flags are usage errors, reported before the image is even looked at.
    let mut run_config = run_config(&args, |key| std::env::var_os(key))?;
    let stop_timeout = stop_timeout(args.stop_timeout, args.grace);
    if let (Some(stop), Some(grace)) = (args.stop_timeout, args.grace)
        && stop <= u64::from(grace)
    {
        ui.warn(&format!(
            "--stop-timeout {stop} is not longer than --grace {grace}: the VM may be killed before the app has stopped"
        ));
    }
    let dir = match args.image.clone() {
        Some(dir) => dir,
        None => default_image_dir()?,
    };
    let manifest = verify_image(&dir)?;
    let shape = VmShape::new(&args, &manifest.vm);
    // A busy port fails before the data volume is created or checked.
    nodeos_vmm::check_forwards(&shape.forwards)?;
    let system_path = args
        .system
        .clone()
        .unwrap_or_else(|| system::default_path(&dir));
    // An existing system disk is checked before a data volume is created.
    let opened = system::open(&system_path)?;
    // Held until the VM has ended: the lock keeps other runs off the volume.
    let data = if args.no_data {
        None
    } else {
        let (volume, check) = open_data(&args, &dir, &manifest.data, ui)?;
        run_config.data_check = Some(check);
        Some(volume)
    };
    // Held until the last boot has ended: the lock keeps other runs off it.
    let system = system::prepare(&system_path, opened, &dir, &manifest, ui)?;

    let (tx, signals) = mpsc::channel();
    let hook = SignalThread::start(tx)?;
    let stop_timeout = Duration::from_secs(stop_timeout);
    let mut accel = args.accel;
    // Every boot: the slot the update state names. The guest reboots
    // (QEMU exits) after installing an update and to roll one back.
    let mut first_boot = true;
    let (outcome, stopping, vm) = 'boot: loop {
        if !first_boot && signals.try_recv().is_ok() {
            // Ctrl-C while the guest rebooted: it had shut down cleanly, and
            // a trial waiting to boot keeps its try.
            ui.note("stopped between two boots");
            return Ok(Exit::Success);
        }
        let (boot, meta) = system::next_boot(&system, ui)?;
        let image = &meta.image;
        let kernel = system
            .kernel_file(boot.slot, &meta)
            .with_context(|| format!("cannot read the kernel of slot {}", boot.slot))?;
        let config = |accel: Accel| {
            let mut config = VmConfig::for_slot(kernel.path(), system.path(), &meta, boot.slot);
            config.memory_mb = shape.memory;
            config.cpus = shape.cpus;
            config.accel = accel;
            config.forwards = shape.forwards.clone();
            config.qemu = std::env::var_os("NODEOS_QEMU").map(PathBuf::from);
            config.console = ConsoleSink::Stdout;
            config.run_config = run_config.clone();
            config.data_disk = data.as_ref().map(|v| v.path().to_owned());
            config
        };
        nodeos_vmm::check_forwards(&shape.forwards)?;
        let mut vm = start_vm(config, &mut accel, &dir, ui)?;
        ui.detail(vm.command_line());
        ui.note(&format!(
            "booting {} v{} from slot {}{} with {} ({} MiB, {} CPU); Ctrl-C stops it",
            image.name,
            image.version,
            boot.slot,
            if boot.trial { " (trial)" } else { "" },
            vm.accel(),
            shape.memory,
            shape.cpus
        ));
        if first_boot {
            for fwd in &shape.forwards {
                ui.note(&format!(
                    "forwarding {}:{} -> guest port {}",
                    fwd.host_addr, fwd.host_port, fwd.guest_port
                ));
            }
        }
        if first_boot && !run_config.env.is_empty() {
            // Names only: values may be secrets.
            let names: Vec<&str> = run_config.env.keys().map(String::as_str).collect();
            ui.note(&format!(
                "app environment: {} (values on a read-only config disk, not shown)",
                names.join(", ")
            ));
        }
        first_boot = false;
        let trial_secs = args
            .trial_boot_timeout
            .unwrap_or(DEFAULT_TRIAL_BOOT_TIMEOUT);
        let trial_deadline = boot
            .trial
            .then(|| Instant::now() + Duration::from_secs(trial_secs));
        let mut stopping: Option<Instant> = None;
        let mut verdict_seen = false;
        let mut last_scan = Instant::now();
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
            if let Some(deadline) = trial_deadline
                && !verdict_seen
                && stopping.is_none()
                && last_scan.elapsed() >= Duration::from_secs(1)
            {
                last_scan = Instant::now();
                verdict_seen = trial_verdict(&vm.console_log());
                if !verdict_seen && Instant::now() >= deadline {
                    vm.kill();
                    let reason = format!(
                        "the new version reached no verdict within {trial_secs}s of booting (see --trial-boot-timeout)"
                    );
                    if system::host_rollback(&system, boot.slot, &reason, &console_tail(&vm))? {
                        ui.warn(&format!("update rolled back: {reason}"));
                    }
                    continue 'boot;
                }
            }
        };
        if stopping.is_none() && matches!(outcome, Outcome::Rebooted) {
            continue;
        }
        if boot.trial && stopping.is_none() && !verdict_seen {
            // Panic, power-off or QEMU failure before a verdict: only the
            // host saw it. The state decides (the console may have been
            // cut): a slot the guest committed is no longer on trial.
            let reason = format!("the new version did not come up: {}", describe(&outcome));
            if system::host_rollback(&system, boot.slot, &reason, &console_tail(&vm))? {
                ui.warn(&format!("update rolled back: {reason}"));
                continue;
            }
        }
        break (outcome, stopping, vm);
    };
    drop(hook);
    if let (Some(volume), Some(reason)) = (&data, data_failure(&vm.console_log())) {
        let path = volume.path().display();
        return Err(fail(
            Exit::Data,
            format!(
                "the app was not started: {reason}; repair the volume with `e2fsck -fy {path}`, or boot anyway with --data-on-check-failure start"
            ),
        ));
    }
    exit_for(outcome, stopping.is_some())
}

/// How long a trial boot may take to reach a verdict unless
/// `--trial-boot-timeout` says: a TCG boot (up to ~20 s for a release
/// image here) plus the default health timeout (60 s), with room to spare.
const DEFAULT_TRIAL_BOOT_TIMEOUT: u64 = 300;

/// Starts QEMU. Under `--accel auto` a KVM guest that prints nothing in
/// time is killed and started again under TCG, and later boots use TCG.
fn start_vm(
    config: impl Fn(Accel) -> VmConfig,
    accel: &mut Accel,
    dir: &Path,
    ui: &Ui,
) -> anyhow::Result<Vm> {
    let boot_err = || format!("cannot boot {}", dir.display());
    let vm = Vm::start(config(*accel)).with_context(boot_err)?;
    if *accel == Accel::Auto && vm.accel() == ResolvedAccel::Kvm {
        // The probe guest ran under KVM; make sure the real one does too.
        if vm.wait_for_line(console::PREFIX, KVM_FIRST_LINE).is_err() {
            let mut vm = vm;
            vm.kill();
            ui.warn(&format!(
                "the guest printed nothing within {}s under KVM; falling back to TCG",
                KVM_FIRST_LINE.as_secs()
            ));
            *accel = Accel::Tcg;
            return Vm::start(config(Accel::Tcg)).with_context(boot_err);
        }
    }
    Ok(vm)
}

/// Whether init recorded a trial's verdict (committed or rolled back) on
/// the console. Only init's records count: the app cannot fake one.
fn trial_verdict(console_log: &str) -> bool {
    console_log.lines().any(|line| {
        console::Record::parse(line).is_some_and(|r| r.source == console::Source::Init) && {
            let text = console::normalize(line);
            text.starts_with(console::UPDATE_COMMITTED)
                || text.starts_with(console::UPDATE_ROLLED_BACK)
        }
    })
}

/// The console's last lines, kept for `nodeos status` when the host rolls
/// a trial back.
fn console_tail(vm: &Vm) -> String {
    let log = vm.console_log();
    nodeos_manifest::slots::last_lines(&log, 200).to_owned()
}

/// How a boot ended, in a few words.
fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::AppExited(exit) => format!("the app exited with {exit} and the guest powered off"),
        Outcome::PoweredOff => "the guest powered off".to_owned(),
        Outcome::Rebooted => "the guest rebooted".to_owned(),
        Outcome::KernelPanic { line } => format!("the kernel panicked ({line})"),
        Outcome::Tampered { line } => {
            format!("the kernel found a tampered block of a layer and stopped ({line})")
        }
        Outcome::HardStopped => "the VM was hard-stopped".to_owned(),
        Outcome::QemuFailed {
            status,
            stderr_tail,
        } => {
            format!("QEMU failed ({status}): {stderr_tail}")
        }
    }
}

/// Creates, grows and checks the data volume for this boot (see
/// [`nodeos_vmm::data`]) and says what happened; returns it (locked) with
/// the check's result for the guest.
fn open_data(
    args: &RunArgs,
    dir: &Path,
    settings: &DataSettings,
    ui: &Ui,
) -> anyhow::Result<(DataVolume, nodeos_manifest::settings::DataCheck)> {
    let path = args
        .data
        .clone()
        .unwrap_or_else(|| nodeos_vmm::data::default_path(dir));
    let request = match args.data_size {
        Some(size) => SizeRequest::Exactly(size),
        None => SizeRequest::AtLeast(settings.size),
    };
    let (volume, opened, check) = DataVolume::open(&path, request)?;
    let shown = path.display();
    let size = human_size(volume.size());
    match opened {
        Opened::Created => ui.status("Created", &format!("data volume {shown} ({size})")),
        Opened::Grown { from } => ui.status(
            "Resized",
            &format!("data volume {shown} from {} to {size}", human_size(from)),
        ),
        Opened::Existing => {}
    }
    let policy = args
        .data_on_check_failure
        .unwrap_or(settings.on_check_failure);
    match check.status {
        CheckStatus::Clean => {}
        CheckStatus::Repaired => ui.warn(&format!(
            "data volume {shown} had errors that e2fsck repaired: {}",
            check.summary
        )),
        CheckStatus::Failed => ui.warn(&format!(
            "data volume {shown} failed its check (e2fsck -p: {}); repair it with `e2fsck -fy {shown}`{}",
            check.summary,
            match policy {
                OnCheckFailure::Stop => "; the guest will not start the app",
                OnCheckFailure::Start => "; the guest starts the app anyway (onCheckFailure start)",
            }
        )),
    }
    ui.note(&format!("data volume {shown} ({size}) on /data"));
    Ok((volume, check))
}

/// Why the guest refused to start the app because of its data volume, from
/// init's [`DATA_FAILED_MARKER`] record on the console (either log format;
/// the app's output cannot fake it), without the advice meant for the
/// guest's console.
fn data_failure(console_log: &str) -> Option<String> {
    let marker = DATA_FAILED_MARKER.strip_prefix(console::PREFIX)?;
    console_log.lines().find_map(|line| {
        let record = console::Record::parse(line)?;
        if record.source != console::Source::Init || !record.message.starts_with(marker) {
            return None;
        }
        // `error: data volume /dev/vdc …` → `data volume /dev/vdc …`.
        let reason = record.message.strip_prefix("error: ")?;
        let reason = reason
            .split("; the app is not started")
            .next()
            .unwrap_or(reason);
        Some(reason.to_owned())
    })
}

/// `--stop-timeout` when not given, unless `--grace` asks for more.
const DEFAULT_STOP_TIMEOUT: u64 = 30;
/// How much longer than `--grace` the default stop timeout is: time for
/// init to sync and power off after the app has gone.
const STOP_MARGIN: u64 = 15;

/// Seconds `nodeos run` waits after Ctrl-C before killing the VM: the
/// explicit `--stop-timeout`, else 30, or `--grace` + 15 if that is more.
fn stop_timeout(explicit: Option<u64>, grace: Option<u32>) -> u64 {
    explicit.unwrap_or_else(|| {
        let grace = grace.map_or(0, u64::from);
        DEFAULT_STOP_TIMEOUT.max(grace + STOP_MARGIN)
    })
}

/// The settings and environment for this boot, from the flags. Env files
/// are read in order (later ones win), then `--env` (wins over all files).
/// Every problem is a usage error naming the flag, never a value.
fn run_config(
    args: &RunArgs,
    host_env: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> anyhow::Result<RunConfig> {
    let usage = |message: String| fail(Exit::Usage, message);
    let mut env = BTreeMap::new();
    for path in &args.env_files {
        let bytes = std::fs::read(path).map_err(|e| {
            usage(format!(
                "--env-file {}: cannot read it: {e}",
                path.display()
            ))
        })?;
        let vars = crate::envfile::parse(&bytes).map_err(|e| {
            usage(format!(
                "--env-file {}:{}: {}",
                path.display(),
                e.line,
                e.problem
            ))
        })?;
        env.extend(vars);
    }
    for spec in &args.env {
        let (key, value) = env_arg(spec, &host_env).map_err(usage)?;
        env.insert(key, value);
    }
    let config = RunConfig {
        env,
        restart: args.restart,
        grace: args.grace,
        log_format: args.log_format,
        syslog: args.syslog.clone(),
        ipv4: args.ip.map(|address| StaticIpv4 {
            address,
            gateway: args.gateway,
        }),
        dns: args.dns.clone(),
        data_on_check_failure: args.data_on_check_failure,
        data_check: None,
    };
    // Clap and the checks above cover all of it; this is the contract's word.
    config
        .validate()
        .map_err(|e| usage(format!("invalid run settings: {e}")))?;
    if let Err(e) = config.to_disk() {
        return Err(usage(format!(
            "the environment given with --env and --env-file is too large: {e}"
        )));
    }
    Ok(config)
}

/// One `--env KEY=VALUE` or `--env KEY` (value from `host_env`). Errors
/// name the variable but never print a value.
fn env_arg(
    spec: &str,
    host_env: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<(String, String), String> {
    let (key, value) = match spec.split_once('=') {
        Some((key, value)) => (key, Some(value.to_owned())),
        None => (spec, None),
    };
    if key.is_empty() {
        return Err("--env: the variable name is empty (expected KEY=VALUE or KEY)".into());
    }
    let value = match value {
        Some(value) => value,
        None => host_env(key)
            .ok_or_else(|| {
                format!(
                    "--env {key}: {key} is not set in this environment; give its value with --env {key}=VALUE"
                )
            })?
            .into_string()
            .map_err(|_| format!("--env {key}: the value of {key} in this environment is not UTF-8"))?,
    };
    check_env(key, &value).map_err(|problem| format!("--env: {problem}"))?;
    Ok((key.to_owned(), value))
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
        // the boot loop handles reboots (issue #6)
        Outcome::Rebooted => Ok(Exit::Success),
        Outcome::KernelPanic { .. } => Err(fail(
            Exit::Vm,
            "the guest kernel panicked (see the console above)",
        )),
        Outcome::Tampered { line } => Err(fail(
            Exit::Image,
            format!(
                "the guest refused the image: dm-verity found a block of a layer that does not match its hash tree ({line}), and the kernel stopped before using it; the image was changed after it was built: rebuild it with `nodeos build`"
            ),
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
pub(crate) fn default_image_dir() -> anyhow::Result<PathBuf> {
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
    for key in manifest.boot_artifacts() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: RunArgs,
    }

    fn args(flags: &[&str]) -> RunArgs {
        Cli::try_parse_from(std::iter::once("run").chain(flags.iter().copied()))
            .unwrap()
            .args
    }

    fn host(key: &str) -> Option<std::ffi::OsString> {
        match key {
            "FROM_HOST" => Some("host value".into()),
            "EMPTY_ON_HOST" => Some("".into()),
            _ => None,
        }
    }

    fn message(err: anyhow::Error) -> String {
        assert_eq!(crate::exit::classify(&err), Exit::Usage, "{err}");
        err.to_string()
    }

    #[test]
    fn env_flag_takes_key_value_or_the_host_value() {
        let ok = |spec| env_arg(spec, host).unwrap();
        assert_eq!(ok("A=1"), ("A".into(), "1".into()));
        assert_eq!(ok("A="), ("A".into(), "".into()));
        assert_eq!(ok("A==b=c"), ("A".into(), "=b=c".into()));
        assert_eq!(ok("FROM_HOST"), ("FROM_HOST".into(), "host value".into()));
        assert_eq!(ok("EMPTY_ON_HOST"), ("EMPTY_ON_HOST".into(), "".into()));
        let err = |spec| env_arg(spec, host).unwrap_err();
        assert!(err("=secret").contains("name is empty"));
        assert!(!err("=secret").contains("secret"));
        assert!(err("").contains("name is empty"));
        assert!(
            err("UNSET").contains("UNSET is not set"),
            "{}",
            err("UNSET")
        );
        assert!(err("A=x\0y").contains("NUL"));
    }

    #[test]
    fn later_env_files_win_and_env_flags_win_over_all_files() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("first.env");
        let second = dir.path().join("second.env");
        std::fs::write(&first, "A=first\nB=first\nC=first\n").unwrap();
        std::fs::write(&second, "B=second\nC=second\n").unwrap();
        let flags = [
            "--env-file",
            first.to_str().unwrap(),
            "--env-file",
            second.to_str().unwrap(),
            "--env",
            "C=flag",
            "-e",
            "FROM_HOST",
            "--restart",
            "on-failure",
            "--grace",
            "20",
            "--log-format",
            "json",
            "--syslog",
            "tcp://10.0.2.2",
        ];
        let config = run_config(&args(&flags), host).unwrap();
        let env: Vec<_> = config
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            env,
            [
                ("A", "first"),
                ("B", "second"),
                ("C", "flag"),
                ("FROM_HOST", "host value")
            ]
        );
        assert_eq!(config.restart, Some(RestartPolicy::OnFailure));
        assert_eq!(config.grace, Some(20));
        assert_eq!(config.log_format, Some(LogFormat::Json));
        assert_eq!(
            config.syslog.map(|t| t.to_string()).as_deref(),
            Some("tcp://10.0.2.2:601")
        );
    }

    #[test]
    fn network_flags_become_a_static_address_and_dns_servers() {
        let flags = [
            "--ip",
            "10.0.2.20/24",
            "--gateway",
            "10.0.2.2",
            "--dns",
            "10.0.2.3",
        ];
        let config = run_config(&args(&flags), host).unwrap();
        let v4 = config.ipv4.unwrap();
        assert_eq!(v4.address.to_string(), "10.0.2.20/24");
        assert_eq!(v4.gateway, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(config.dns, [IpAddr::V4(Ipv4Addr::new(10, 0, 2, 3))]);
        let flags = ["--ip", "10.0.2.20/24", "--gateway", "10.0.3.2"];
        let err = run_config(&args(&flags), host).unwrap_err();
        assert!(
            format!("{err:#}").contains("network.ipv4.gateway"),
            "{err:#}"
        );
    }

    #[test]
    fn no_flags_means_an_empty_run_config() {
        assert!(run_config(&args(&[]), host).unwrap().is_empty());
    }

    #[test]
    fn env_file_problems_are_usage_errors_naming_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.env");
        std::fs::write(&bad, "# ok\nA=1\nhunter2\n").unwrap();
        let err =
            message(run_config(&args(&["--env-file", bad.to_str().unwrap()]), host).unwrap_err());
        assert!(
            err.starts_with(&format!("--env-file {}:3: ", bad.display())),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
        let missing = dir.path().join("missing.env");
        let err = message(
            run_config(&args(&["--env-file", missing.to_str().unwrap()]), host).unwrap_err(),
        );
        assert!(err.contains("missing.env: cannot read it"), "{err}");
    }

    #[test]
    fn oversized_environment_is_a_usage_error() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.env");
        std::fs::write(&big, format!("BIG={}\n", "x".repeat(1 << 20))).unwrap();
        let err =
            message(run_config(&args(&["--env-file", big.to_str().unwrap()]), host).unwrap_err());
        assert!(err.contains("too large"), "{err}");
    }

    #[test]
    fn stop_timeout_outlasts_the_grace_period() {
        assert_eq!(stop_timeout(None, None), 30);
        assert_eq!(stop_timeout(None, Some(0)), 30);
        assert_eq!(stop_timeout(None, Some(15)), 30);
        assert_eq!(stop_timeout(None, Some(16)), 31);
        assert_eq!(stop_timeout(None, Some(3600)), 3615);
        assert_eq!(stop_timeout(Some(5), Some(3600)), 5);
        assert_eq!(stop_timeout(Some(100), None), 100);
    }

    #[test]
    fn the_guests_data_failure_line_is_found_in_either_log_format() {
        use nodeos_manifest::console::{LogFormat, Record, Source, Stream};
        let message = "error: data volume /dev/vdc failed its check: its filesystem has recorded errors; the app is not started. Repair …";
        let record = |source, message: &str| Record {
            unix_ms: 1_795_705_201_000,
            source,
            message: message.into(),
        };
        for format in [LogFormat::Text, LogFormat::Json] {
            let init = record(Source::Init, message).format(format);
            let log = format!("[    1.0] Linux\n{init}\nnodeos-init: powering off\n");
            assert_eq!(
                data_failure(&log).as_deref(),
                Some("data volume /dev/vdc failed its check: its filesystem has recorded errors"),
                "{format:?}"
            );
            let app = Source::App {
                generation: 1,
                stream: Stream::Stdout,
            };
            let fake = record(app, &format!("nodeos-init: {message}")).format(format);
            assert_eq!(
                data_failure(&fake),
                None,
                "{format:?}: the app cannot fake it"
            );
        }
        assert_eq!(data_failure("nodeos-init: error: no app layer"), None);
    }

    #[test]
    fn data_flags() {
        let a = args(&[
            "--data",
            "v.img",
            "--data-size",
            "2G",
            "--data-on-check-failure",
            "start",
        ]);
        assert_eq!(a.data_size.unwrap().bytes(), 2 << 30);
        assert_eq!(a.data_on_check_failure, Some(OnCheckFailure::Start));
        let config = run_config(&a, host).unwrap();
        assert_eq!(config.data_on_check_failure, Some(OnCheckFailure::Start));
        let fails = |flags: &[&str]| {
            Cli::try_parse_from(std::iter::once("run").chain(flags.iter().copied())).is_err()
        };
        assert!(fails(&["--data-size", "8M"]));
        assert!(fails(&["--data-size", "2Q"]));
        assert!(fails(&["--no-data", "--data", "v.img"]));
        assert!(fails(&["--no-data", "--data-on-check-failure", "start"]));
        assert!(fails(&["--data-on-check-failure", "later"]));
        assert!(!fails(&["--no-data"]));
    }

    #[test]
    fn a_bad_syslog_url_is_a_usage_error_saying_what_is_accepted() {
        let err = Cli::try_parse_from(["run", "--syslog", "syslog.internal:514"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(err.use_stderr(), "main exits 2 for it");
        let text = err.to_string();
        assert!(text.contains("--syslog"), "{text}");
        assert!(
            text.contains("udp://HOST:PORT or tcp://HOST:PORT"),
            "{text}"
        );
    }

    #[test]
    fn flag_values_are_checked_by_clap() {
        let fails = |flags: &[&str]| {
            Cli::try_parse_from(std::iter::once("run").chain(flags.iter().copied())).is_err()
        };
        assert!(fails(&["--restart", "sometimes"]));
        assert!(fails(&["--grace", "3601"]));
        assert!(fails(&["--grace", "-1"]));
        assert!(fails(&["--log-format", "xml"]));
        assert!(fails(&["--syslog", "10.0.2.2:514"]), "a scheme is required");
        assert!(fails(&["--syslog", "udp://[fec0::2"]));
        assert!(fails(&["--ip", "10.0.2.20"]), "prefix required");
        assert!(fails(&["--ip", "10.0.2.20/33"]));
        assert!(fails(&["--gateway", "10.0.2.2"]), "--gateway needs --ip");
        assert!(fails(&["--dns", "nameserver"]));
        assert!(!fails(&[
            "--ip",
            "10.0.2.20/24",
            "--gateway",
            "10.0.2.2",
            "--dns",
            "fec0::3"
        ]));
        assert!(!fails(&[
            "--grace",
            "3600",
            "--restart",
            "never",
            "--log-format",
            "text"
        ]));
    }
}
