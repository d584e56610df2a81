//! The nodeos VM runner: boots an appliance (kernel + root filesystem image)
//! under QEMU and controls it. Used by `nodeos run` and by the VM tests.
//!
//! This crate owns:
//! * the QEMU command line ([`VmConfig`], [`Machine`], [`PortForward`]);
//! * the config disk: a [`nodeos_manifest::RunConfig`] (environment,
//!   restart policy, …) written to a private file and attached read-only
//!   after the root disk, removed once QEMU has exited;
//! * the accelerator choice ([`resolve_accel`]): KVM only once a tiny probe
//!   guest has proved that it really works on this host, else TCG; the
//!   verdict is cached once per host boot;
//! * QMP control (power button, quit), hand-rolled over a Unix socket;
//! * serial console capture: every guest line goes to an in-memory log that
//!   [`Vm::wait_for_line`] waits on, and optionally to stdout; markers match
//!   init's log records in either log format (text or JSON), timestamps
//!   ignored ([`nodeos_manifest::console::normalize`]);
//! * turning "QEMU exited" plus the console log into an [`Outcome`]
//!   (app exit code, power-off, reboot, kernel panic, hard stop, QEMU
//!   failure);
//! * the A/B system disk ([`SystemDisk`]): a GPT disk image holding the
//!   update state and two slots of boot artefacts, and the host's boot
//!   choice between the slots ([`choose_boot`]), as `nodeos run` is the
//!   bootloader.
//!
//! QEMU runs in its own process group and dies with its owner: [`Vm`]'s
//! `Drop` kills the group, and the parent-death signal covers a killed
//! owner process. No async runtime: a few threads and a `Condvar`.
//!
//! ```no_run
//! use std::time::Duration;
//! use nodeos_vmm::{Vm, VmConfig};
//! use nodeos_manifest::console;
//!
//! let config = VmConfig::new("dist/kernel", "dist/rootfs.img", "console=ttyS0 root=/dev/vda ro");
//! let mut vm = Vm::start(config)?;
//! vm.wait_for_line(console::STARTING_APP, Duration::from_secs(60))?;
//! let outcome = vm.shutdown(Duration::from_secs(10))?;
//! println!("{outcome}");
//! # Ok::<(), nodeos_vmm::Error>(())
//! ```

mod accel;
mod config;
mod config_disk;
mod console;
pub mod data;
mod error;
mod outcome;
mod process;
mod qmp;
pub mod slots;
pub mod system_disk;
mod vm;

pub use accel::{KvmStatus, PROBE_TIMEOUT, cache_dir, kvm_status, probe_elf, resolve_accel};
pub use config::{
    Accel, ConsoleSink, Machine, PortForward, ResolvedAccel, VmConfig, find_qemu, slot_cmdline,
};
pub use error::Error;
pub use outcome::Outcome;
pub use qmp::Qmp;
pub use slots::{Boot, choose_boot, record_host_rollback};
pub use system_disk::{Extras, Layout, SystemDisk, SystemDiskError, disk_len};
pub use vm::{Vm, check_forwards};
