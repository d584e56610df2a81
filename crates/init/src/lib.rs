//! nodeos-init: PID 1 of a nodeos guest.
//!
//! It owns everything between the kernel starting `/sbin/init` and the VM
//! powering off: mounting the pseudo filesystems, the console, the network,
//! starting node with the app, reaping every process, and shutting down. It
//! is a static musl binary with pure-Rust dependencies only. [`run`] lists
//! the phases; the `nodeos-init` binary calls it and then [`shutdown`].
//!
//! # Guest contract
//!
//! What the app can rely on (its user, environment, filesystems, network,
//! restart policy, shutdown, log format, console markers) is written down
//! once, in `docs/guest-contract.md`, and each line there names the test
//! that checks it. In short: node runs the app from `/app` as the
//! unprivileged user `app` without capabilities, after the network is up,
//! entropy is ready and the clock is set; its output is logged with
//! timestamps; it is restarted by its restart policy with backoff; a
//! shutdown request gives it SIGTERM and a grace period; PID 1 never
//! exits or panics into the kernel: every path ends in [`shutdown()`].

pub mod config;
pub mod console;
pub mod data;
pub mod dhcp;
pub mod disks;
pub mod entropy;
pub mod error;
pub mod health;
pub mod input;
pub mod layers;
pub mod log;
pub mod memory;
pub mod mounts;
pub mod net;
pub mod page;
pub mod privileges;
pub mod profile;
pub mod shutdown;
pub mod start;
pub mod stats;
pub mod supervise;
pub mod sys;
pub mod syslog;
pub mod system;
pub mod trial;
pub mod update;
pub mod websocket;

pub use error::Error;
pub use shutdown::shutdown;

use std::path::Path;

use nodeos_manifest::slots::{Part, Slot};

/// Boots the guest and runs the app until supervision is over. The phases,
/// in order:
///
/// 1. **mount** ([`mounts::mount_all`]): /proc, /sys, /dev, /dev/shm, /tmp, /run.
/// 2. **console & logs** ([`console::setup`], [`log`]): fds 0–2 on
///    `/dev/console`; every line timestamped, in text until the config
///    says otherwise. Init's memory is locked ([`lock_memory`]).
/// 3. **signals** ([`supervise::listen`]): Ctrl-Alt-Del → SIGINT; SIGTERM,
///    SIGINT, SIGCHLD and the power button feed one channel (early, so a
///    request during boot is not lost).
/// 4. **slots** ([`trial::booted_slot`]): the slot of the A/B system disk
///    the bootloader booted (`nodeos.slot=`: `nodeos run`, or systemd-boot on
///    an exported disk), if any.
///    **layers** ([`layers::mount_app`]): the app layer (that slot's app
///    partition, else the second read-only disk) on `/layers/app`, its
///    `app/` bound onto `/app`.
///    **config & secrets** ([`load_config`]): the app layer's `app.json`
///    and the run config from the config disk; before the network, because
///    the network settings are part of it.
/// 5. **entropy & clock** ([`entropy::ready`]).
/// 6. **network** ([`net::setup`]): lo, hostname, /run/hosts, first NIC by
///    DHCP (or static IPv4/IPv6), resolv.conf; a thread keeps the lease.
///    **syslog** ([`syslog::start`]): with a target, the log is shipped
///    there too (RFC 5424, bounded buffer, never blocking the app).
///    **data** ([`data::setup`]): the persistent volume checked and
///    mounted on `/data` (without one, `/data` stays read-only); a volume
///    that failed its check ends the boot here, before the app starts,
///    unless `data.onCheckFailure` is `start`.
/// 7. **privileges** ([`privileges::prepare`]): the app's user; its port
///    made bindable.
///    **agent** ([`start_updates`]): with an update key, the agent
///    ([`update`]): status, logs, metrics, the status page, profiles and
///    updates; on a new version's trial, its verdict ([`trial`]).
/// 8. **start** ([`start::spawn`]) and 9. **supervise**
///    ([`supervise::supervise`]): node with the app, restarted by the
///    restart policy, stopped on request with a grace period; on a trial,
///    the health check ([`health`]) or any exit of the app decides.
///
/// The caller then runs phase 10, **shutdown** ([`shutdown()`]), on every
/// path, ending as the returned [`supervise::End`] says.
pub fn run() -> Result<supervise::End, Error> {
    let sys = &mut system::Linux;
    mounts::mount_all(sys)?;
    console::setup()?;
    lock_memory();
    let events = supervise::listen()?;
    let slot = booted_slot(sys);
    let app_partition = match slot {
        Some(slot) => Some(
            update::Partitions::find(Path::new("/sys"), Path::new("/dev"))
                .map_err(|source| Error::Partitions { slot, source })?
                .part(Part::App, slot)
                .to_owned(),
        ),
        None => None,
    };
    layers::mount_app(sys, app_partition.as_deref())?;
    let boot = load_config(sys)?;
    let app = boot.app;
    entropy::ready(sys);
    net::setup(sys, &app.settings.network, &app.name)?;
    start_syslog(&app);
    data::setup(sys, &app.settings.data, boot.data_check.as_ref())?;
    let creds = privileges::prepare(sys, &app)?;
    let updates = slot.and_then(|slot| start_updates(slot, &app, &events));
    Ok(supervise::supervise(&app, creds, &events, updates.as_ref()))
}

/// Phase 6b, syslog: with a `syslog` target, every log line (the boot's
/// so far, then each new one) is also shipped there. Optional: a problem
/// is logged and the boot goes on.
fn start_syslog(app: &nodeos_manifest::AppConfig) {
    if let Some(target) = &app.settings.syslog
        && let Err(e) = syslog::start(target, &config::hostname(&app.name))
    {
        say!("warning: cannot ship the log to syslog {target}: {e}");
    }
}

/// The slot the bootloader booted (`nodeos.slot=`), if it booted one.
fn booted_slot(sys: &mut impl system::System) -> Option<Slot> {
    let cmdline = sys.read(Path::new("/proc/cmdline"), 4096).ok()?;
    let slot = trial::booted_slot(&String::from_utf8_lossy(&cmdline))?;
    say!("booting slot {slot} of the system disk");
    Some(slot)
}

/// Phase 8b, agent: with an update key, the update agent listens on its
/// port and this boot's trial (if it is one) is decided by the health
/// check. Updates are optional: a problem here is logged and the app runs.
fn start_updates(
    slot: Slot,
    app: &nodeos_manifest::AppConfig,
    events: &supervise::Events,
) -> Option<trial::Updates> {
    let settings = &app.settings.update;
    let Some(key) = settings.public_key else {
        say!("updates disabled: the image has no update.publicKey");
        return None;
    };
    let shared = match update::open(slot, key, Path::new("/sys"), Path::new("/dev")) {
        Ok(shared) => std::sync::Arc::new(shared),
        Err(e) => {
            say!("warning: updates disabled: {}", error_chain(&e));
            return None;
        }
    };
    let updates = trial::Updates::new(shared, settings.health.clone());
    let tx = events.sender();
    let ready = Box::new(move || {
        let _ = tx.send(supervise::Event::UpdateReady);
    });
    match update::start_agent(
        std::sync::Arc::clone(updates.shared()),
        settings.port,
        ready,
    ) {
        Ok(()) => say!(
            "update agent on port {} (key {})",
            settings.port,
            key.key_id()
        ),
        Err(e) => say!("warning: cannot start the update agent: {e}"),
    }
    Some(updates)
}

/// Keeps init's own pages in memory (as they are touched), so that when
/// the app drives the VM into memory pressure, PID 1 is not paged out and
/// stays responsive: it still reaps, logs and restarts. Init is about 1 MiB.
fn lock_memory() {
    use rustix::mm::MlockAllFlags;
    let flags = MlockAllFlags::CURRENT | MlockAllFlags::FUTURE | MlockAllFlags::ONFAULT;
    if let Err(e) = rustix::mm::mlockall(flags) {
        say!("warning: cannot lock init's memory: {e}; init may stall under memory pressure");
    }
}

/// Phase 4: the app config with the run config applied; switches the log
/// to the configured format. Environment values are never printed.
pub fn load_config(sys: &mut impl system::System) -> Result<config::Boot, Error> {
    let boot = config::load_boot(sys)?;
    let app = &boot.app;
    log::set_format(app.settings.log_format);
    say!("app {} ({} {})", app.name, app.node, app.args.join(" "));
    let s = &app.settings;
    say!(
        "settings: restart {}, grace {}s, port {}, log {}",
        s.restart.as_str(),
        s.grace,
        s.port,
        s.log_format.as_str()
    );
    if let Some(disk) = &boot.run_config_from {
        say!(
            "run config from {}: environment {} (values not shown)",
            disk.display(),
            if boot.run_env_names.is_empty() {
                "unchanged".to_string()
            } else {
                boot.run_env_names.join(", ")
            }
        );
    }
    Ok(boot)
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
