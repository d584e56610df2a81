//! nodeos-init: PID 1 of a nodeos guest.
//!
//! It owns everything between the kernel starting `/sbin/init` and the VM
//! powering off: mounting the pseudo filesystems, the console, the network,
//! starting node with the app, reaping every process, and shutting down. It
//! is a static musl binary with pure-Rust dependencies only. [`run`] lists
//! the phases; the `nodeos-init` binary calls it and then [`shutdown`].
//!
//! # Guest contract (what the app can rely on)
//!
//! * **Process**: `AppConfig.node` (normally `/usr/bin/node`) runs with
//!   `AppConfig.args`, working directory `AppConfig.workdir` (the app's root,
//!   normally `/app`), as root for now (unprivileged user: not yet), as the
//!   leader of its own session and process group. stdin is `/dev/null`;
//!   stdout and stderr are the serial console.
//! * **Environment**: exactly `PATH=/usr/bin:/bin`, `HOME=/tmp`, plus every
//!   `AppConfig.env` entry (which win over those two; `NODE_ENV`, `PORT` come
//!   from there). Nothing from the kernel command line leaks in.
//! * **Filesystems**: `/` read-only; `/tmp` tmpfs (mode 1777, nosuid, nodev,
//!   exec allowed); `/run` tmpfs (0755, noexec); `/dev` devtmpfs; `/dev/shm`
//!   tmpfs (1777); `/proc`, `/sys`. Tmpfs contents are lost at power-off.
//! * **Network** is up before node starts: `lo` 127.0.0.1/8 (and ::1), the
//!   first Ethernet interface (sorted by name, usually `eth0`) configured by
//!   DHCPv4 (address, netmask, default route, DNS servers in
//!   `/etc/resolv.conf` → `/run/resolv.conf`; the lease is renewed in the
//!   background), waiting at most `nodeos.dhcp_timeout` (10 s). No answer:
//!   one `error:` line and the app starts without an IPv4 address while DHCP
//!   keeps trying. With `nodeos.ip=ADDR/PREFIX` the address is static instead,
//!   with `nodeos.gw` (10.0.2.2) and `nodeos.dns` (10.0.2.3). IPv6
//!   autoconfigures if the network offers it.
//!   The hostname is the app name made a valid hostname (`@acme/My_API` →
//!   `acme-my-api`). No NIC: a warning, the app starts anyway.
//! * **Stopping**: SIGTERM or SIGINT to PID 1, Ctrl-Alt-Del, or the ACPI power
//!   button (QMP `system_powerdown`) sends **SIGTERM to the app's process**;
//!   after the grace period (`nodeos.grace=SECONDS`, default 10) its process
//!   group gets SIGKILL. Once the app has exited, every remaining process
//!   gets SIGTERM, then SIGKILL 2 s later; then `sync` and power off.
//! * **The app exiting** (any code or signal) powers the VM off. There is no
//!   restart policy yet.
//! * **Orphans** are reaped by PID 1; zombies never accumulate.
//! * **Console markers** (whole lines, from [`nodeos_manifest::console`]):
//!   `nodeos-init: starting app`, `nodeos-init: shutdown requested`,
//!   `nodeos-init: app exited code=N` / `signal=N`, `nodeos-init: powering off`.
//!   Every line init prints starts with `nodeos-init: `; errors as
//!   `nodeos-init: error: …`, warnings as `nodeos-init: warning: …`.
//! * **Broken image or boot parameters** (unreadable or invalid app.json,
//!   malformed `nodeos.*` value, node missing): one `error:` line, then the
//!   normal power-off path. PID 1 never exits or panics into the kernel.

pub mod cmdline;
pub mod config;
pub mod console;
pub mod dhcp;
pub mod error;
pub mod input;
pub mod log;
pub mod mounts;
pub mod net;
pub mod shutdown;
pub mod start;
pub mod supervise;
pub mod sys;

use std::path::Path;

use nodeos_manifest::{APP_CONFIG_PATH, AppConfig};

pub use error::Error;
pub use shutdown::shutdown;

/// Boots the guest and runs the app until it has exited. The phases, in order:
///
/// 1. **mount** ([`mounts::mount_all`]): /proc, /sys, /dev, /dev/shm, /tmp, /run.
/// 2. **console** ([`console::setup`]): fds 0–2 on `/dev/console`.
/// 3. **signals** ([`supervise::listen`]): Ctrl-Alt-Del → SIGINT; SIGTERM,
///    SIGINT, SIGCHLD and the power button feed one channel.
/// 4. **config** ([`load_config`]): `/proc/cmdline` and `/etc/nodeos/app.json`.
/// 5. **network** ([`net::setup`]): lo, hostname, first NIC by DHCP (or
///    static), default route, resolv.conf; a thread keeps the lease.
/// 6. **start** ([`start::spawn`]): node with the app.
/// 7. **supervise** ([`supervise::supervise`]): reap, wait for the app, stop
///    it on request with a grace period.
///
/// The caller then runs phase 8, **shutdown** ([`shutdown()`]), on every path.
pub fn run() -> Result<(), Error> {
    mounts::mount_all(&mut mounts::Kernel)?;
    console::setup()?;
    let events = supervise::listen()?;
    let (params, app) = load_config()?;
    net::setup(&params, &app.name)?;
    let pid = start::spawn(&app)?;
    supervise::supervise(pid, params.grace, &events);
    Ok(())
}

/// Phase 4: the boot parameters and the app config.
pub fn load_config() -> Result<(cmdline::BootParams, AppConfig), Error> {
    let text = std::fs::read_to_string("/proc/cmdline").map_err(|source| Error::Read {
        path: "/proc/cmdline".into(),
        source,
    })?;
    let params = cmdline::BootParams::parse(&text)?;
    for unknown in &params.unknown {
        say!("warning: unknown boot parameter {unknown} ignored");
    }
    let app = config::load(Path::new(APP_CONFIG_PATH))?;
    say!("app {} ({} {})", app.name, app.node, app.args.join(" "));
    Ok((params, app))
}

/// `error: cause: cause…` on one line: each source once, outermost first.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chain_prints_each_cause_once() {
        let err = Error::Spawn {
            node: "/usr/bin/node".into(),
            workdir: "/app".into(),
            source: std::io::Error::from_raw_os_error(2),
        };
        let text = error_chain(&err);
        assert!(
            text.starts_with("cannot start the app (/usr/bin/node in /app): "),
            "{text}"
        );
        assert_eq!(text.matches("No such file").count(), 1, "{text}");
    }
}
