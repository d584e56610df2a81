//! What to boot and how: [`VmConfig`] and the QEMU command line built from it.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use nodeos_manifest::host::PortForward;
pub use nodeos_manifest::slots::slot_cmdline;
use nodeos_manifest::slots::{Slot, SlotMeta};
use nodeos_manifest::{Manifest, RunConfig};

use crate::Error;

/// The QEMU binary looked up in `PATH` when [`VmConfig::qemu`] is `None`.
pub const DEFAULT_QEMU: &str = "qemu-system-x86_64";

/// Which accelerator the caller asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Accel {
    /// KVM if a probe guest proves it works on this host, else TCG.
    #[default]
    Auto,
    /// KVM or an error ([`Error::KvmUnavailable`]).
    Kvm,
    /// Software emulation: slow, works everywhere.
    Tcg,
}

impl FromStr for Accel {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "auto" => Ok(Accel::Auto),
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            _ => Err(Error::InvalidAccel(s.into())),
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Auto => "auto",
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

/// The accelerator actually used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResolvedAccel {
    Kvm,
    Tcg,
}

impl fmt::Display for ResolvedAccel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResolvedAccel::Kvm => "kvm",
            ResolvedAccel::Tcg => "tcg",
        })
    }
}

/// QEMU machine type.
///
/// `q35` is the default: under TCG it reached `nodeos-init: starting app`
/// 0.7–1 s sooner than `pc` (whose ACPI PCI interrupt-link setup costs
/// ~0.2 s per link). `microvm` (virtio-mmio, no PCI) is the stand-in for a
/// Firecracker-style boot; it is faster still, but under TCG the kernel's
/// TSC calibration against the PIT sometimes fails and the boot hangs, as
/// there is no HPET or ACPI PM timer to fall back on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Machine {
    Pc,
    #[default]
    Q35,
    Microvm,
}

impl Machine {
    /// The `-M` value.
    fn qemu_arg(self) -> &'static str {
        match self {
            Machine::Pc => "pc",
            Machine::Q35 => "q35",
            // The PIT is needed to calibrate the TSC under TCG; without it the kernel hangs.
            Machine::Microvm => "microvm,acpi=on,pit=on,pic=on,rtc=on",
        }
    }

    /// Suffix of the virtio device names: `-pci` or `-device` (mmio).
    fn virtio_bus(self) -> &'static str {
        match self {
            Machine::Pc | Machine::Q35 => "pci",
            Machine::Microvm => "device",
        }
    }
}

impl FromStr for Machine {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "pc" => Ok(Machine::Pc),
            "q35" => Ok(Machine::Q35),
            "microvm" => Ok(Machine::Microvm),
            _ => Err(Error::InvalidMachine(s.into())),
        }
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Machine::Pc => "pc",
            Machine::Q35 => "q35",
            Machine::Microvm => "microvm",
        })
    }
}

/// QEMU user networking's `hostfwd=` rule for a forward.
fn hostfwd(fwd: &PortForward) -> String {
    let addr = match fwd.host_addr {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    format!("hostfwd=tcp:{addr}:{}-:{}", fwd.host_port, fwd.guest_port)
}

/// Where guest console lines go besides the [`crate::Vm`]'s own log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConsoleSink {
    /// Nowhere else (tests): read them with [`crate::Vm::console_log`].
    #[default]
    None,
    /// Each line is written to stdout as it arrives (`nodeos run`).
    Stdout,
}

/// What to boot and how.
///
/// Its `Debug` output shows the names of [`VmConfig::run_config`]'s
/// environment variables but never their values.
#[derive(Clone)]
pub struct VmConfig {
    /// The kernel (`bzImage`), loaded directly with `-kernel`.
    pub kernel: PathBuf,
    /// The root filesystem image (the runtime layer), or the system disk
    /// that holds it: the first virtio disk (`/dev/vda`), read-only unless
    /// [`VmConfig::root_writable`].
    pub rootfs: PathBuf,
    /// Attach [`VmConfig::rootfs`] read-write (default false): set for the
    /// A/B system disk, whose inactive slot and update state the guest's
    /// update agent writes. The kernel still mounts its root read-only.
    pub root_writable: bool,
    /// The app layer: the second virtio disk (`/dev/vdb`), read-only.
    /// `None` with the system disk, which holds the app layer as a partition.
    pub app_layer: Option<PathBuf>,
    /// The kernel command line.
    pub cmdline: String,
    /// Guest RAM in MiB (default 256).
    pub memory_mb: u32,
    /// Virtual CPUs (default 1).
    pub cpus: u32,
    pub accel: Accel,
    /// Machine type (default `q35`).
    pub machine: Machine,
    pub forwards: Vec<PortForward>,
    /// Optional writable disk (raw, after the layers) for `/data`.
    pub data_disk: Option<PathBuf>,
    /// Settings and environment for this boot, over the image's. When not
    /// empty, [`crate::Vm::start`] writes them to a private file (mode 0600
    /// in a 0700 directory) and attaches it read-only as the last virtio
    /// disk, after the root and data disks; the file is removed once QEMU
    /// has exited. The values (which may be secrets) are never on QEMU's
    /// command line nor in any message of this crate.
    pub run_config: RunConfig,
    /// The QEMU binary; default `qemu-system-x86_64` from `PATH`.
    pub qemu: Option<PathBuf>,
    pub console: ConsoleSink,
    /// Where the QMP socket lives; default a temporary directory owned by the VM.
    pub state_dir: Option<PathBuf>,
    /// Appended to QEMU's command line as is.
    pub extra_args: Vec<OsString>,
}

impl VmConfig {
    /// A config with the defaults: 256 MiB, 1 CPU, `auto` accelerator, `q35`,
    /// no forwards, console only to the log.
    pub fn new(
        kernel: impl Into<PathBuf>,
        rootfs: impl Into<PathBuf>,
        cmdline: impl Into<String>,
    ) -> VmConfig {
        VmConfig {
            kernel: kernel.into(),
            rootfs: rootfs.into(),
            root_writable: false,
            app_layer: None,
            cmdline: cmdline.into(),
            memory_mb: 256,
            cpus: 1,
            accel: Accel::Auto,
            machine: Machine::Q35,
            forwards: Vec::new(),
            data_disk: None,
            run_config: RunConfig::default(),
            qemu: None,
            console: ConsoleSink::None,
            state_dir: None,
            extra_args: Vec::new(),
        }
    }

    /// A config with the defaults for the image directory `dir` described
    /// by `manifest`: its kernel, command line, runtime and app layers.
    pub fn for_image(dir: &Path, manifest: &Manifest) -> VmConfig {
        let artifact = |key: &str| {
            dir.join(
                manifest
                    .artifacts
                    .get(key)
                    .map_or(key, |artifact| artifact.path.as_str()),
            )
        };
        let mut config = VmConfig::new(
            artifact(&manifest.kernel.artifact),
            artifact(&manifest.layers.runtime),
            manifest.kernel.cmdline.clone(),
        );
        config.app_layer = Some(artifact(&manifest.layers.app));
        config
    }

    /// A config with the defaults for booting `slot` of the system disk
    /// `system_disk`, whose metadata is `meta`: `kernel` is that slot's
    /// kernel copied out of the disk
    /// ([`crate::SystemDisk::kernel_file`]), the command line the image's
    /// with [`slot_cmdline`], and the system disk is the root drive,
    /// attached read-write, with no separate app layer.
    pub fn for_slot(
        kernel: impl Into<PathBuf>,
        system_disk: &Path,
        meta: &SlotMeta,
        slot: Slot,
    ) -> VmConfig {
        let mut config = VmConfig::new(
            kernel,
            system_disk,
            slot_cmdline(&meta.image.kernel.cmdline, slot),
        );
        config.root_writable = true;
        config
    }

    /// The QEMU argv (without the program) for this config. `config_disk`
    /// is the file [`VmConfig::run_config`] was written to, if it was (the
    /// caller's job; [`crate::Vm::start`] does it): it is attached
    /// read-only after the root and data disks.
    pub fn qemu_args(
        &self,
        accel: ResolvedAccel,
        qmp_socket: &Path,
        config_disk: Option<&Path>,
    ) -> Vec<OsString> {
        fn push(args: &mut Vec<OsString>, items: &[&str]) {
            args.extend(items.iter().map(OsString::from));
        }
        /// `PREFIX` + path with commas escaped + `suffix`.
        fn option_with_path(prefix: &str, path: &Path, suffix: &str) -> OsString {
            let mut value = OsString::from(prefix);
            value.push(escape_commas(path.as_os_str()));
            value.push(suffix);
            value
        }

        let mut args = Vec::new();
        push(&mut args, &["-M", self.machine.qemu_arg()]);
        match accel {
            ResolvedAccel::Kvm => push(&mut args, &["-accel", "kvm", "-cpu", "host"]),
            ResolvedAccel::Tcg => push(&mut args, &["-accel", "tcg", "-cpu", "max"]),
        }
        push(
            &mut args,
            &[
                "-m",
                &self.memory_mb.to_string(),
                "-smp",
                &self.cpus.to_string(),
            ],
        );
        push(
            &mut args,
            &[
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-no-reboot",
                "-serial",
                "stdio",
            ],
        );
        args.extend(["-kernel".into(), self.kernel.clone().into()]);
        push(&mut args, &["-append", &self.cmdline]);

        // The guest finds its disks by their contents, except the root
        // filesystem, which must stay /dev/vda; the rest keep this order.
        let bus = self.machine.virtio_bus();
        let disks = [
            Some(("root", self.rootfs.as_path(), !self.root_writable)),
            self.app_layer.as_deref().map(|path| ("app", path, true)),
            self.data_disk.as_deref().map(|path| ("data", path, false)),
            config_disk.map(|path| ("config", path, true)),
        ];
        for (id, path, readonly) in disks.into_iter().flatten() {
            let options = format!(
                ",format=raw,if=none,id={id}{}",
                if readonly { ",readonly=on" } else { "" }
            );
            args.extend(["-drive".into(), option_with_path("file=", path, &options)]);
            push(
                &mut args,
                &["-device", &format!("virtio-blk-{bus},drive={id}")],
            );
        }

        let mut netdev = String::from("user,id=n0");
        for fwd in &self.forwards {
            netdev.push(',');
            netdev.push_str(&hostfwd(fwd));
        }
        push(
            &mut args,
            &[
                "-netdev",
                &netdev,
                "-device",
                &format!("virtio-net-{bus},netdev=n0"),
            ],
        );
        push(&mut args, &["-device", &format!("virtio-rng-{bus}")]);
        args.extend([
            "-qmp".into(),
            option_with_path("unix:", qmp_socket, ",server=on,wait=off"),
        ]);
        args.extend(self.extra_args.iter().cloned());
        args
    }
}

impl fmt::Debug for VmConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let VmConfig {
            kernel,
            rootfs,
            root_writable,
            cmdline,
            memory_mb,
            cpus,
            accel,
            machine,
            forwards,
            app_layer,
            data_disk,
            run_config,
            qemu,
            console,
            state_dir,
            extra_args,
        } = self;
        f.debug_struct("VmConfig")
            .field("kernel", kernel)
            .field("rootfs", rootfs)
            .field("root_writable", root_writable)
            .field("cmdline", cmdline)
            .field("memory_mb", memory_mb)
            .field("cpus", cpus)
            .field("accel", accel)
            .field("machine", machine)
            .field("forwards", forwards)
            .field("app_layer", app_layer)
            .field("data_disk", data_disk)
            .field("run_config", run_config)
            .field("qemu", qemu)
            .field("console", console)
            .field("state_dir", state_dir)
            .field("extra_args", extra_args)
            .finish()
    }
}

/// QEMU option values are comma-separated: a literal comma is doubled.
fn escape_commas(value: &OsStr) -> OsString {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let mut out = Vec::with_capacity(value.len());
    for &b in value.as_bytes() {
        out.push(b);
        if b == b',' {
            out.push(b',');
        }
    }
    OsString::from_vec(out)
}

/// The QEMU binary to run: `explicit` if given (it must exist), else
/// `qemu-system-x86_64` from `PATH`.
pub fn find_qemu(explicit: Option<&Path>) -> Result<PathBuf, Error> {
    if let Some(path) = explicit {
        return if path.is_file() {
            Ok(path.to_path_buf())
        } else {
            Err(Error::QemuNotFound {
                name: path.display().to_string(),
            })
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(DEFAULT_QEMU))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| Error::QemuNotFound {
            name: DEFAULT_QEMU.into(),
        })
}

/// A regular file someone may execute.
pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accel_and_machine_round_trip() {
        for a in [Accel::Auto, Accel::Kvm, Accel::Tcg] {
            assert_eq!(a.to_string().parse::<Accel>().unwrap(), a);
        }
        for m in [Machine::Pc, Machine::Q35, Machine::Microvm] {
            assert_eq!(m.to_string().parse::<Machine>().unwrap(), m);
        }
        assert!(matches!(
            "KVM".parse::<Accel>(),
            Err(Error::InvalidAccel(_))
        ));
    }

    fn argv(config: &VmConfig, accel: ResolvedAccel) -> Vec<String> {
        config
            .qemu_args(accel, Path::new("/run/vm/qmp.sock"), None)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn command_line_for_tcg_with_forwards() {
        let mut config = VmConfig::new(
            "/img/kernel",
            "/img/rootfs.img",
            "console=ttyS0 root=/dev/vda ro",
        );
        config.forwards = vec![
            PortForward::localhost(8080, 3000),
            "0.0.0.0:9000:9001".parse().unwrap(),
        ];
        #[rustfmt::skip]
        let expected = [
            "-M", "q35", "-accel", "tcg", "-cpu", "max", "-m", "256", "-smp", "1",
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-serial", "stdio",
            "-kernel", "/img/kernel", "-append", "console=ttyS0 root=/dev/vda ro",
            "-drive", "file=/img/rootfs.img,format=raw,if=none,id=root,readonly=on",
            "-device", "virtio-blk-pci,drive=root",
            "-netdev", "user,id=n0,hostfwd=tcp:127.0.0.1:8080-:3000,hostfwd=tcp:0.0.0.0:9000-:9001",
            "-device", "virtio-net-pci,netdev=n0", "-device", "virtio-rng-pci",
            "-qmp", "unix:/run/vm/qmp.sock,server=on,wait=off",
        ];
        assert_eq!(argv(&config, ResolvedAccel::Tcg), expected);
    }

    #[test]
    fn command_line_for_kvm_microvm_and_data_disk() {
        let mut config = VmConfig::new("/k", "/a,b/root.img", "console=ttyS0");
        config.machine = Machine::Microvm;
        config.memory_mb = 96;
        config.cpus = 2;
        config.data_disk = Some("/d/data.img".into());
        config.extra_args = vec!["-s".into()];
        let args = argv(&config, ResolvedAccel::Kvm);
        let has = |pair: [&str; 2]| args.windows(2).any(|w| w == pair);
        assert!(
            has(["-M", "microvm,acpi=on,pit=on,pic=on,rtc=on"]),
            "{args:?}"
        );
        assert!(has(["-accel", "kvm"]) && has(["-cpu", "host"]), "{args:?}");
        assert!(has(["-m", "96"]) && has(["-smp", "2"]), "{args:?}");
        assert!(
            has([
                "-drive",
                "file=/a,,b/root.img,format=raw,if=none,id=root,readonly=on"
            ]),
            "{args:?}"
        );
        assert!(has(["-device", "virtio-blk-device,drive=root"]), "{args:?}");
        assert!(
            has(["-drive", "file=/d/data.img,format=raw,if=none,id=data"]),
            "{args:?}"
        );
        assert!(has(["-device", "virtio-blk-device,drive=data"]), "{args:?}");
        assert!(has(["-device", "virtio-net-device,netdev=n0"]), "{args:?}");
        assert!(has(["-device", "virtio-rng-device"]), "{args:?}");
        assert_eq!(args.last().unwrap(), "-s");
    }

    /// Index of the `-device` argument attaching `drive`, and of its `-drive`.
    fn disk_positions(args: &[String], id: &str) -> (usize, usize) {
        let drive = args
            .iter()
            .position(|a| {
                a.starts_with("file=") && a.split(',').any(|option| option == format!("id={id}"))
            })
            .unwrap_or_else(|| panic!("no drive {id} in {args:?}"));
        let device = args
            .iter()
            .position(|a| a.ends_with(&format!(",drive={id}")))
            .unwrap_or_else(|| panic!("no device for {id} in {args:?}"));
        (drive, device)
    }

    #[test]
    fn disks_are_root_app_data_config_in_that_order_on_every_machine() {
        for machine in [Machine::Pc, Machine::Q35, Machine::Microvm] {
            for data in [None, Some(PathBuf::from("/d/data.img"))] {
                let mut config = VmConfig::new("/k", "/r.img", "console=ttyS0");
                config.machine = machine;
                config.app_layer = Some("/i/app.img".into());
                config.data_disk = data.clone();
                let args: Vec<String> = config
                    .qemu_args(
                        ResolvedAccel::Tcg,
                        Path::new("/q.sock"),
                        Some(Path::new("/tmp/x,y/config.img")),
                    )
                    .into_iter()
                    .map(|a| a.into_string().unwrap())
                    .collect();
                let bus = machine.virtio_bus();
                let (drive, device) = disk_positions(&args, "config");
                assert_eq!(
                    args[drive],
                    "file=/tmp/x,,y/config.img,format=raw,if=none,id=config,readonly=on"
                );
                assert_eq!(args[drive - 1], "-drive");
                assert_eq!(args[device], format!("virtio-blk-{bus},drive=config"));
                assert_eq!(args[device - 1], "-device");
                let (root_drive, root_device) = disk_positions(&args, "root");
                let (app_drive, app_device) = disk_positions(&args, "app");
                assert!(
                    root_drive < app_drive && root_device < app_device,
                    "{args:?}"
                );
                assert!(app_drive < drive && app_device < device, "{args:?}");
                assert!(args[app_drive].ends_with(",readonly=on"), "{args:?}");
                if data.is_some() {
                    let (data_drive, data_device) = disk_positions(&args, "data");
                    assert!(app_drive < data_drive && app_device < data_device);
                    assert!(data_drive < drive && data_device < device, "{args:?}");
                    assert!(!args[data_drive].contains("readonly"), "{args:?}");
                }
                // Every virtio-blk device in order: the config disk is last.
                let disks: Vec<_> = args
                    .iter()
                    .filter(|a| a.starts_with("virtio-blk-"))
                    .collect();
                assert_eq!(disks.last().unwrap().as_str(), args[device]);
            }
        }
    }

    #[test]
    fn a_slot_boots_from_the_writable_system_disk() {
        let manifest: Manifest = serde_json::from_value(serde_json::json!({
            "format": nodeos_manifest::MANIFEST_FORMAT,
            "name": "hello",
            "version": "1.0.0",
            "profile": "release",
            "node": {"version": "22.1.0", "range": null, "integrity": "sha512-x"},
            "kernel": {"version": "6.1", "cmdline": "console=ttyS0 root=/dev/vda ro", "artifact": "kernel"},
            "layers": {"format": "erofs", "compression": "lz4hc", "runtime": "runtime", "app": "app"},
            "artifacts": {},
            "builder": "nodeos 0.1.0",
        }))
        .unwrap();
        let meta = SlotMeta {
            sequence: 0,
            installed_by: "host".into(),
            image: manifest,
        };
        let mut config = VmConfig::for_slot(
            "/tmp/nodeos-kernel-x",
            Path::new("/d/hello.system.img"),
            &meta,
            Slot::B,
        );
        assert_eq!(
            config.cmdline,
            "console=ttyS0 root=PARTLABEL=nodeos-runtime-b ro nodeos.slot=b"
        );
        assert_eq!(config.app_layer, None);
        assert!(config.root_writable);
        config.data_disk = Some("/d/hello.data.img".into());
        let args: Vec<String> = config
            .qemu_args(
                ResolvedAccel::Tcg,
                Path::new("/q.sock"),
                Some(Path::new("/c.img")),
            )
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let has = |pair: [&str; 2]| args.windows(2).any(|w| w == pair);
        assert!(has(["-kernel", "/tmp/nodeos-kernel-x"]), "{args:?}");
        let (root, root_device) = disk_positions(&args, "root");
        assert_eq!(
            args[root],
            "file=/d/hello.system.img,format=raw,if=none,id=root"
        );
        let (data, data_device) = disk_positions(&args, "data");
        let (cfg, cfg_device) = disk_positions(&args, "config");
        assert!(root < data && data < cfg, "{args:?}");
        assert!(root_device < data_device && data_device < cfg_device);
        assert!(!args.iter().any(|a| a.contains("id=app")), "{args:?}");
        // The default stays read-only.
        let args = argv(&VmConfig::new("/k", "/r.img", "x"), ResolvedAccel::Tcg);
        assert!(
            args.contains(&"file=/r.img,format=raw,if=none,id=root,readonly=on".to_owned()),
            "{args:?}"
        );
    }

    #[test]
    fn no_config_disk_without_a_path() {
        let config = VmConfig::new("/k", "/r.img", "console=ttyS0");
        let args = argv(&config, ResolvedAccel::Tcg);
        assert!(
            !args
                .iter()
                .any(|a| a.contains("id=config") || a.contains("drive=config")),
            "{args:?}"
        );
    }

    #[test]
    fn debug_output_hides_environment_values() {
        let mut config = VmConfig::new("/k", "/r.img", "console=ttyS0");
        config
            .run_config
            .env
            .insert("API_TOKEN".into(), "hunter2".into());
        config.run_config.grace = Some(7);
        let debug = format!("{config:?}");
        assert!(
            debug.contains("API_TOKEN") && debug.contains("<redacted>"),
            "{debug}"
        );
        assert!(debug.contains("grace: Some(7)"), "{debug}");
        assert!(!debug.contains("hunter2"), "{debug}");
        let pretty = format!("{config:#?}");
        assert!(!pretty.contains("hunter2"), "{pretty}");
    }

    #[test]
    fn missing_qemu_says_what_to_install() {
        let err = find_qemu(Some(Path::new("/nonexistent/qemu"))).unwrap_err();
        assert!(
            err.to_string().contains("apt-get install qemu-system-x86"),
            "{err}"
        );
    }
}
