//! Measures time from QEMU start to a console marker, per machine type.
//! Prints numbers; asserts nothing (a benchmark, not a test). TCG unless
//! `--accel` says otherwise.
//!
//! ```text
//! cargo run --release -p nodeos-vmm --example boot-time -- \
//!     --kernel dist/hello.nodeos/kernel --rootfs dist/hello.nodeos/rootfs.img \
//!     --cmdline 'console=ttyS0 root=/dev/vda ro rootfstype=erofs panic=-1 quiet' \
//!     --marker 'nodeos-init: starting app' --machines pc,q35,microvm --runs 3
//! ```
//!
//! `--app PATH` attaches an app layer as the second disk (as `nodeos run`
//! of an image's files does). `--shutdown` also presses the power button
//! after the marker and prints the outcome and how long the power-off
//! took.

use std::time::{Duration, Instant};

use nodeos_vmm::{Accel, Machine, Vm, VmConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut kernel = None;
    let mut rootfs = None;
    let mut app = None;
    let mut cmdline = String::from("console=ttyS0 panic=-1");
    let mut marker = String::from("Kernel panic");
    let mut machines = String::from("pc,q35,microvm");
    let mut runs = 3;
    let mut accel = Accel::Tcg;
    let mut memory_mb = 256;
    let mut shutdown = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--kernel" => kernel = Some(value()?),
            "--rootfs" => rootfs = Some(value()?),
            "--app" => app = Some(value()?),
            "--cmdline" => cmdline = value()?,
            "--marker" => marker = value()?,
            "--machines" => machines = value()?,
            "--runs" => runs = value()?.parse()?,
            "--accel" => accel = value()?.parse()?,
            "--memory" => memory_mb = value()?.parse()?,
            "--shutdown" => shutdown = true,
            _ => return Err(format!("unknown flag {flag}").into()),
        }
    }
    let kernel = kernel.ok_or("--kernel PATH is required (e.g. dist/hello.nodeos/kernel)")?;
    // Without a root image, an empty file stands in (the kernel then panics).
    let empty = tempfile::NamedTempFile::new()?;
    let rootfs = rootfs.unwrap_or_else(|| empty.path().display().to_string());

    for machine in machines.split(',') {
        let machine: Machine = machine.parse()?;
        let mut times = Vec::new();
        for _ in 0..runs {
            let mut config = VmConfig::new(&kernel, &rootfs, &cmdline);
            config.machine = machine;
            config.accel = accel;
            config.memory_mb = memory_mb;
            config.app_layer = app.as_ref().map(Into::into);
            let started = Instant::now();
            let mut vm = Vm::start(config)?;
            match vm.wait_for_line(&marker, Duration::from_secs(180)) {
                Ok(_) => {
                    times.push(started.elapsed());
                    if shutdown {
                        let pressed = Instant::now();
                        let outcome = vm.shutdown(Duration::from_secs(30))?;
                        println!(
                            "{machine}: power button -> {outcome} in {:?}",
                            pressed.elapsed()
                        );
                    }
                }
                Err(e) => {
                    eprintln!("{machine}: {e}\n--- console ---\n{}", vm.console_log());
                    break;
                }
            }
        }
        let ms: Vec<_> = times.iter().map(|t| t.as_millis()).collect();
        let best = ms.iter().min().copied().unwrap_or_default();
        let mean = if ms.is_empty() {
            0
        } else {
            ms.iter().sum::<u128>() / ms.len() as u128
        };
        println!(
            "{machine:8} {accel} to `{marker}`: runs {ms:?} ms, best {best} ms, mean {mean} ms"
        );
    }
    Ok(())
}
