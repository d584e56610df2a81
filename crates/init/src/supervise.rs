//! Phase 6, supervise: reap every child, watch the app, and stop it on
//! request. The decisions are made by [`Supervisor`], a pure state machine
//! (events and the clock in, actions out); [`supervise`] feeds it from a
//! channel that the signal thread and the power-button threads write to.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use nodeos_manifest::console::{self, AppExit};
use rustix::process::{Pid, Signal, WaitOptions};
use signal_hook::consts::{SIGCHLD, SIGINT, SIGTERM};

use crate::error::Error;
use crate::{input, log, say};

/// What wakes the main loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// SIGTERM, SIGINT (Ctrl-Alt-Del) or SIGCHLD arrived at PID 1.
    Signal(i32),
    /// The ACPI power button was pressed.
    PowerButton,
}

/// The channel the main loop waits on. Holding a sender keeps `recv` from
/// ever failing with "disconnected".
pub struct Events {
    rx: Receiver<Event>,
    _tx: Sender<Event>,
}

/// Starts listening: Ctrl-Alt-Del becomes SIGINT, a thread turns SIGTERM,
/// SIGINT and SIGCHLD into events, one thread per input device watches the
/// power button. Called early so a request during boot is not lost.
pub fn listen() -> Result<Events, Error> {
    if let Err(e) = rustix::system::reboot(rustix::system::RebootCommand::CadOff) {
        say!("warning: cannot route Ctrl-Alt-Del to init: {e}");
    }
    let (tx, rx) = mpsc::channel();
    let mut signals =
        signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGCHLD]).map_err(Error::Signals)?;
    let sig_tx = tx.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            for sig in signals.forever() {
                if sig_tx.send(Event::Signal(sig)).is_err() {
                    return;
                }
            }
        })
        .map_err(Error::Signals)?;
    input::watch_power_button(&tx);
    Ok(Events { rx, _tx: tx })
}

/// Why a shutdown was requested (for the log line after the marker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Sigterm,
    CtrlAltDel,
    PowerButton,
}

/// What the main loop must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Print this line as it is (a marker or a `nodeos-init: …` line).
    Print(String),
    /// SIGTERM to the app's process.
    TermApp,
    /// SIGKILL to the app and its process group.
    KillApp,
    /// The app is gone: supervision ends.
    Done(AppExit),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    Stopping { deadline: Instant },
    Killed,
    Exited(AppExit),
}

/// The app's lifecycle as seen by PID 1.
#[derive(Debug)]
pub struct Supervisor {
    app: i32,
    grace: Duration,
    state: State,
}

impl Supervisor {
    pub fn new(app: i32, grace: Duration) -> Self {
        Supervisor {
            app,
            grace,
            state: State::Running,
        }
    }

    /// A child was reaped with raw wait status `status`.
    pub fn child_exited(&mut self, pid: i32, status: i32) -> Vec<Action> {
        if pid != self.app || matches!(self.state, State::Exited(_)) {
            return Vec::new(); // an orphan: reaping it was all there was to do
        }
        let Some(exit) = app_exit(status) else {
            return Vec::new();
        };
        self.state = State::Exited(exit);
        vec![
            Action::Print(console::app_exited_line(exit)),
            Action::Done(exit),
        ]
    }

    /// SIGTERM/SIGINT to PID 1 or the power button, at time `now`.
    pub fn shutdown_requested(&mut self, reason: Reason, now: Instant) -> Vec<Action> {
        if self.state != State::Running {
            return Vec::new(); // already stopping: the grace deadline stands
        }
        self.state = State::Stopping {
            deadline: now + self.grace,
        };
        let why = match reason {
            Reason::Sigterm => "SIGTERM to init",
            Reason::CtrlAltDel => "Ctrl-Alt-Del",
            Reason::PowerButton => "power button",
        };
        vec![
            Action::Print(console::SHUTDOWN_REQUESTED.to_string()),
            Action::Print(format!(
                "{}{why}: sending SIGTERM to the app, SIGKILL in {}s",
                console::PREFIX,
                self.grace.as_secs()
            )),
            Action::TermApp,
        ]
    }

    /// When [`Supervisor::tick`] must be called next, if ever.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Stopping { deadline } => Some(deadline),
            _ => None,
        }
    }

    /// Time passed: kills the app once the grace period is over.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        match self.state {
            State::Stopping { deadline } if now >= deadline => {
                self.state = State::Killed;
                vec![
                    Action::Print(format!(
                        "{}grace period over: sending SIGKILL to the app",
                        console::PREFIX
                    )),
                    Action::KillApp,
                ]
            }
            _ => Vec::new(),
        }
    }
}

/// Maps a raw wait status to how the process ended; `None` for
/// stopped/continued (not an end).
pub fn app_exit(status: i32) -> Option<AppExit> {
    let sig = status & 0x7f;
    if sig == 0 {
        Some(AppExit::Code((status >> 8) & 0xff))
    } else if sig != 0x7f {
        Some(AppExit::Signal(sig))
    } else {
        None
    }
}

/// Supervises the app until it has exited; returns how it ended.
pub fn supervise(app: Pid, grace: Duration, events: &Events) -> AppExit {
    let mut sup = Supervisor::new(app.as_raw_nonzero().get(), grace);
    loop {
        // Reap everything that has exited: the app and any orphan.
        while let Some((pid, status)) = reap_one() {
            if let Some(exit) = apply(sup.child_exited(pid, status), app) {
                return exit;
            }
        }
        let event = match sup.deadline() {
            Some(deadline) => events
                .rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now())),
            None => events.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        let actions = match event {
            Ok(Event::Signal(SIGCHLD)) => continue,
            Ok(Event::Signal(SIGINT)) => sup.shutdown_requested(Reason::CtrlAltDel, Instant::now()),
            Ok(Event::Signal(_)) => sup.shutdown_requested(Reason::Sigterm, Instant::now()),
            Ok(Event::PowerButton) => sup.shutdown_requested(Reason::PowerButton, Instant::now()),
            Err(_) => sup.tick(Instant::now()),
        };
        if let Some(exit) = apply(actions, app) {
            return exit;
        }
    }
}

/// Reaps one exited child, whatever its process group, without blocking:
/// `Some((pid, raw status))`, or `None` when no child has exited (or there
/// are no children at all).
///
/// This is `wait4(-1, WNOHANG)`. Not `rustix::process::waitpid(None, …)`:
/// that is `wait4(0, …)`, which only sees init's own process group, so the
/// app (in its own session) and its orphans would stay zombies.
pub fn reap_one() -> Option<(i32, i32)> {
    match rustix::process::wait(WaitOptions::NOHANG) {
        Ok(Some((pid, status))) => Some((pid.as_raw_nonzero().get(), status.as_raw())),
        _ => None,
    }
}

fn apply(actions: Vec<Action>, app: Pid) -> Option<AppExit> {
    for action in actions {
        match action {
            Action::Print(line) => log::marker(&line),
            // ESRCH (already gone, not yet reaped) is fine for both.
            Action::TermApp => drop(rustix::process::kill_process(app, Signal::TERM)),
            Action::KillApp => {
                let _ = rustix::process::kill_process_group(app, Signal::KILL);
                let _ = rustix::process::kill_process(app, Signal::KILL);
            }
            Action::Done(exit) => return Some(exit),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: i32 = 42;

    fn raw_exit(code: i32) -> i32 {
        code << 8
    }

    #[test]
    fn raw_statuses_map_to_app_exits() {
        assert_eq!(app_exit(0), Some(AppExit::Code(0)));
        assert_eq!(app_exit(raw_exit(3)), Some(AppExit::Code(3)));
        assert_eq!(app_exit(15), Some(AppExit::Signal(15)));
        assert_eq!(app_exit(9 | 0x80), Some(AppExit::Signal(9)), "core dumped");
        assert_eq!(app_exit(0x137f), None, "stopped by SIGSTOP");
        assert_eq!(app_exit(0xffff), None, "continued");
    }

    #[test]
    fn app_exit_ends_supervision_with_the_marker() {
        let mut s = Supervisor::new(APP, Duration::from_secs(10));
        assert!(s.child_exited(7, 0).is_empty(), "orphans are only reaped");
        let actions = s.child_exited(APP, raw_exit(3));
        assert_eq!(
            actions,
            [
                Action::Print("nodeos-init: app exited code=3".into()),
                Action::Done(AppExit::Code(3))
            ]
        );
    }

    #[test]
    fn shutdown_terms_then_kills_after_grace() {
        let t0 = Instant::now();
        let mut s = Supervisor::new(APP, Duration::from_secs(10));
        assert_eq!(s.deadline(), None);
        let actions = s.shutdown_requested(Reason::PowerButton, t0);
        assert_eq!(
            actions[0],
            Action::Print(console::SHUTDOWN_REQUESTED.into())
        );
        assert_eq!(actions.last(), Some(&Action::TermApp));
        assert_eq!(s.deadline(), Some(t0 + Duration::from_secs(10)));

        // A second request does not restart the grace period or re-send.
        assert!(
            s.shutdown_requested(Reason::Sigterm, t0 + Duration::from_secs(5))
                .is_empty()
        );
        assert!(s.tick(t0 + Duration::from_secs(9)).is_empty());
        let actions = s.tick(t0 + Duration::from_secs(10));
        assert_eq!(actions.last(), Some(&Action::KillApp));
        assert_eq!(s.deadline(), None);
        assert!(
            s.tick(t0 + Duration::from_secs(20)).is_empty(),
            "kills once"
        );

        let actions = s.child_exited(APP, 9);
        assert_eq!(actions.last(), Some(&Action::Done(AppExit::Signal(9))));
    }

    #[test]
    fn app_that_stops_in_time_is_not_killed() {
        let t0 = Instant::now();
        let mut s = Supervisor::new(APP, Duration::from_secs(10));
        s.shutdown_requested(Reason::Sigterm, t0);
        let actions = s.child_exited(APP, raw_exit(0));
        assert_eq!(actions.last(), Some(&Action::Done(AppExit::Code(0))));
        assert!(s.tick(t0 + Duration::from_secs(11)).is_empty());
        assert!(s.shutdown_requested(Reason::PowerButton, t0).is_empty());
    }

    /// Regression: init reaped with `waitpid(0)`, which misses children in
    /// another process group, so the app's exit went unnoticed.
    #[test]
    #[allow(clippy::zombie_processes, reason = "reap_one is what waits for it")]
    fn reap_one_sees_children_in_other_sessions() {
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.args(["-c", "exit 7"]);
        crate::sys::new_session(&mut cmd);
        let child = cmd.spawn().unwrap();
        let pid = child.id() as i32;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match reap_one() {
                Some((p, status)) if p == pid => {
                    assert_eq!(app_exit(status), Some(AppExit::Code(7)));
                    break;
                }
                Some(_) => {}
                None => {
                    assert!(Instant::now() < deadline, "child {pid} never reaped");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }

    #[test]
    fn zero_grace_kills_at_once() {
        let t0 = Instant::now();
        let mut s = Supervisor::new(APP, Duration::ZERO);
        s.shutdown_requested(Reason::CtrlAltDel, t0);
        assert_eq!(s.tick(t0).last(), Some(&Action::KillApp));
    }
}
