//! Phase 10, shutdown: stop every remaining process, sync, unmount (`/data`
//! first), power off (or reboot after an update or a rollback).
//! Reached from every path (app exit, shutdown request, error, panic);
//! PID 1 never returns from it.

use std::time::{Duration, Instant};

use nodeos_manifest::console;
use rustix::process::{Signal, WaitOptions};
use rustix::system::RebootCommand;

use crate::supervise::End;

use crate::{data, log, mounts, say, sys, system};

/// How long processes left after the app have between SIGTERM and SIGKILL.
pub const LEFTOVER_GRACE: Duration = Duration::from_secs(2);

/// How long the shutdown waits for the log to reach the syslog target.
pub const SYSLOG_FLUSH: Duration = Duration::from_secs(2);

/// SIGTERM (then SIGKILL) to everything, `sync`, power off (or reboot,
/// into the slot the update state names).
pub fn shutdown(end: End) -> ! {
    if let Err(e) = sys::kill_all(Signal::TERM) {
        say!("warning: cannot signal remaining processes: {e}");
    }
    if !reap_all_until(Instant::now() + LEFTOVER_GRACE) {
        say!(
            "processes still running after {}s: sending SIGKILL",
            LEFTOVER_GRACE.as_secs()
        );
        let _ = sys::kill_all(Signal::KILL);
        reap_all_until(Instant::now() + Duration::from_secs(1));
    }
    rustix::fs::sync();
    // The last lines (the app's exit, the stop) to the syslog target too.
    if !crate::syslog::flush(SYSLOG_FLUSH) {
        say!("warning: the last log lines did not reach the syslog target");
    }
    data::unmount(&mut system::Linux);
    mounts::unmount_all(&mut system::Linux);
    let (marker, command, what) = match end {
        End::PowerOff => (console::POWER_OFF, RebootCommand::PowerOff, "power off"),
        End::Reboot => (console::REBOOT, RebootCommand::Restart, "reboot"),
    };
    log::marker(marker);
    if let Err(e) = rustix::system::reboot(command) {
        say!("error: {what} failed: {e}; halting here");
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Reaps children until none is left (true) or `deadline` passes (false).
/// Polls every 20 ms: this runs only in the last seconds of the VM.
fn reap_all_until(deadline: Instant) -> bool {
    loop {
        // wait4(-1): every child, whatever its process group (see supervise::reap_one).
        match rustix::process::wait(WaitOptions::NOHANG) {
            Ok(Some(_)) => continue,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => return false,
            Err(_) => return true, // ECHILD: no children left
        }
    }
}
