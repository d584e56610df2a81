//! Phase 9, supervise: start the app, reap every child, restart the app by
//! its restart policy with exponential backoff, detect crash loops and OOM
//! kills, and stop it on request with a grace period.
//!
//! The decisions are made by [`Supervisor`], a pure state machine (events
//! and the clock in, actions out); [`supervise`] feeds it from a channel
//! that the signal thread and the power-button threads write to, and
//! carries its actions out.

use std::collections::VecDeque;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use nodeos_manifest::console::{self, AppExit};
use nodeos_manifest::{AppConfig, RestartPolicy};
use rustix::process::{Pid, Signal, WaitOptions};
use signal_hook::consts::{SIGCHLD, SIGINT, SIGTERM};

use crate::error::Error;
use crate::sys::Credentials;
use crate::{input, log, say, start};

/// What wakes the main loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// SIGTERM, SIGINT (Ctrl-Alt-Del) or SIGCHLD arrived at PID 1.
    Signal(i32),
    /// The ACPI power button was pressed.
    PowerButton,
    /// Memory stayed low ([`crate::memory`]).
    MemoryLow(crate::memory::MemInfo),
    /// The update agent wrote a new version into the other slot: stop the
    /// app and reboot into it.
    UpdateReady,
    /// The health check's verdict ([`crate::health`]): how it passed, or why not.
    Health(Result<String, String>),
}

/// The channel the main loop waits on. Holding a sender keeps `recv` from
/// ever failing with "disconnected".
pub struct Events {
    rx: Receiver<Event>,
    tx: Sender<Event>,
}

impl Events {
    /// Another sender, for a thread that wakes the main loop.
    pub fn sender(&self) -> Sender<Event> {
        self.tx.clone()
    }
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
    crate::memory::watch(tx.clone());
    Ok(Events { rx, tx })
}

/// Delay before the first restart; doubled after each quick exit (as
/// Docker's restart policies do).
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
/// The longest delay between restarts (also the delay in a crash loop).
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A run at least this long counts as healthy: the backoff starts over.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(60);
/// This many exits within [`CRASH_LOOP_WINDOW`] is a crash loop.
pub const CRASH_LOOP_EXITS: usize = 5;
pub const CRASH_LOOP_WINDOW: Duration = Duration::from_secs(60);
/// How long the app's output pipes may stay open after it exited (by a
/// child that inherited them) before its exit is logged anyway.
pub const DRAIN_TIMEOUT: Duration = Duration::from_millis(500);

/// Why a shutdown was requested (for the log line after the marker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Sigterm,
    CtrlAltDel,
    PowerButton,
}

/// How the VM ends once supervision is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The usual end: the app is done or a shutdown was asked for.
    PowerOff,
    /// Into another slot: an update was installed, or a trial failed. Under
    /// `nodeos run` QEMU exits and the host boots the slot the update state
    /// names.
    Reboot,
}

/// What the main loop must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Log this init message (a marker or a `nodeos-init: …` line).
    Print(String),
    /// Start the next generation of the app, then report
    /// [`Supervisor::started`] or [`Supervisor::start_failed`].
    Start,
    /// SIGTERM to the app's process.
    TermApp(i32),
    /// SIGKILL to the app and its process group.
    KillApp(i32),
    /// The new version passed its trial (how, for the log): record it as
    /// committed in the update state.
    Commit(String),
    /// The new version failed its trial (why): record it as rolled back
    /// with the log tail; the VM then reboots into the old slot.
    Rollback(String),
    /// Supervision is over: go to the shutdown phase, which ends as
    /// [`Supervisor::end`] says.
    Finish,
}

/// The app's state, as the logs and (later) the status API name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A start was asked for and not yet reported.
    Starting,
    Running {
        pid: i32,
        since: Instant,
    },
    /// Waiting to restart after an exit.
    Backoff {
        until: Instant,
    },
    /// Shutdown requested: SIGTERM sent, SIGKILL at `deadline`.
    Stopping {
        pid: i32,
        deadline: Instant,
    },
    /// SIGKILL sent; waiting for the exit.
    Killed {
        pid: i32,
    },
    /// Over: the VM powers off.
    Done,
}

/// The last exit of the app, as recorded for the logs and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitRecord {
    pub generation: u32,
    pub exit: AppExit,
    /// The kernel's OOM killer ended it.
    pub oom: bool,
}

/// The app's lifecycle as seen by PID 1.
#[derive(Debug)]
pub struct Supervisor {
    policy: RestartPolicy,
    grace: Duration,
    state: State,
    /// Starts so far (the current generation once running).
    generation: u32,
    /// Exits since the last healthy run (drives the backoff).
    quick_exits: u32,
    /// Exit times within the crash-loop window.
    recent_exits: VecDeque<Instant>,
    crash_loop: bool,
    last_exit: Option<ExitRecord>,
    /// Init killed the running app for lack of memory.
    killed_for_memory: bool,
    /// Runs that ended for lack of memory.
    oom_exits: u32,
    /// This boot is a new version's trial and the verdict is still open.
    trial_open: bool,
    /// Supervision ends in a reboot rather than a power-off.
    reboot: bool,
}

impl Supervisor {
    pub fn new(policy: RestartPolicy, grace: Duration) -> Self {
        Supervisor {
            policy,
            grace,
            state: State::Starting,
            generation: 0,
            quick_exits: 0,
            recent_exits: VecDeque::new(),
            crash_loop: false,
            last_exit: None,
            killed_for_memory: false,
            oom_exits: 0,
            trial_open: false,
            reboot: false,
        }
    }

    /// This boot is a trial: the health check's verdict, or any exit of
    /// the app before it, decides whether the new version is committed.
    pub fn start_trial(&mut self) {
        self.trial_open = true;
    }

    /// Whether a trial verdict is still awaited.
    pub fn trial_open(&self) -> bool {
        self.trial_open
    }

    /// How the VM ends once supervision is over.
    pub fn end(&self) -> End {
        if self.reboot {
            End::Reboot
        } else {
            End::PowerOff
        }
    }

    /// The app's state as the status API names it.
    pub fn state_name(&self) -> &'static str {
        match self.state {
            State::Starting => "starting",
            State::Running { .. } => "running",
            State::Backoff { .. } => "restarting",
            State::Stopping { .. } | State::Killed { .. } => "stopping",
            State::Done => "exited",
        }
    }

    /// The first actions: start generation 1.
    pub fn begin(&mut self) -> Vec<Action> {
        self.state = State::Starting;
        vec![Action::Start]
    }

    /// The generation the next (or current) start has.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    pub fn last_exit(&self) -> Option<ExitRecord> {
        self.last_exit
    }

    /// Runs that ended for lack of memory (the kernel's OOM killer or init's).
    pub fn oom_exits(&self) -> u32 {
        self.oom_exits
    }

    /// The app's process while there is one.
    pub fn app_pid(&self) -> Option<i32> {
        match self.state {
            State::Running { pid, .. } | State::Stopping { pid, .. } | State::Killed { pid } => {
                Some(pid)
            }
            State::Starting | State::Backoff { .. } | State::Done => None,
        }
    }

    pub fn in_crash_loop(&self) -> bool {
        self.crash_loop
    }

    /// The app of generation [`Supervisor::generation`] `+ 1` is running as `pid`.
    pub fn started(&mut self, pid: i32, now: Instant) -> Vec<Action> {
        self.generation += 1;
        self.killed_for_memory = false;
        self.state = State::Running { pid, since: now };
        Vec::new()
    }

    /// The app could not even be started (node missing, not executable):
    /// retrying cannot help, the state is `failed` and the VM powers off.
    pub fn start_failed(&mut self) -> Vec<Action> {
        self.generation += 1;
        self.state = State::Done;
        let exit = AppExit::Code(127);
        self.last_exit = Some(ExitRecord {
            generation: self.generation,
            exit,
            oom: false,
        });
        let mut actions = vec![
            Action::Print(format!(
                "{}app state failed: it could not be started",
                console::PREFIX
            )),
            Action::Print(console::app_exited_line(exit)),
        ];
        if self.trial_open {
            self.fail_trial("the app could not be started".into(), &mut actions);
        }
        actions.push(Action::Finish);
        actions
    }

    /// The trial failed: roll back, then reboot.
    fn fail_trial(&mut self, reason: String, actions: &mut Vec<Action>) {
        self.trial_open = false;
        self.reboot = true;
        actions.push(Action::Rollback(reason));
    }

    /// A child was reaped with raw wait status `status`; `oom` says the
    /// kernel's OOM killer killed something since the app started.
    pub fn child_exited(&mut self, pid: i32, status: i32, oom: bool, now: Instant) -> Vec<Action> {
        let (app, since) = match self.state {
            State::Running { pid, since } => (pid, Some(since)),
            State::Stopping { pid, .. } | State::Killed { pid } => (pid, None),
            _ => return Vec::new(),
        };
        if pid != app {
            return Vec::new(); // an orphan: reaping it was all there was to do
        }
        let Some(exit) = app_exit(status) else {
            return Vec::new();
        };
        // The kernel's OOM killer only explains a SIGKILL init did not send
        // itself; the low-memory watchdog's SIGKILL is init's.
        let killed = exit == AppExit::Signal(9);
        let by_init = killed && self.killed_for_memory;
        let oom = by_init || (oom && killed && since.is_some());
        self.last_exit = Some(ExitRecord {
            generation: self.generation,
            exit,
            oom,
        });
        self.oom_exits += u32::from(oom);
        let mut line = console::app_exited_line(exit);
        if by_init {
            line.push_str(" (out of memory: killed by nodeos-init's low-memory watchdog)");
        } else if oom {
            line.push_str(" (out of memory: killed by the kernel's OOM killer)");
        }
        let mut actions = vec![Action::Print(line)];
        let Some(since) = since else {
            self.state = State::Done; // it was being stopped
            actions.push(Action::Finish);
            return actions;
        };
        if self.trial_open {
            // A new version must not crash, whatever the restart policy.
            self.state = State::Done;
            let mut reason = format!("the app exited during its trial ({exit})");
            if oom {
                reason.push_str(", out of memory");
            }
            self.fail_trial(reason, &mut actions);
            actions.push(Action::Finish);
            return actions;
        }
        let restart = match self.policy {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !exit.success(),
            RestartPolicy::Never => false,
        };
        if !restart {
            self.state = State::Done;
            actions.push(Action::Print(format!(
                "{}restart policy {}: not restarting; powering off",
                console::PREFIX,
                self.policy.as_str()
            )));
            actions.push(Action::Finish);
            return actions;
        }
        if now.saturating_duration_since(since) >= HEALTHY_AFTER {
            self.quick_exits = 0;
            self.recent_exits.clear();
            self.crash_loop = false;
        }
        self.quick_exits += 1;
        self.recent_exits.push_back(now);
        while self
            .recent_exits
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > CRASH_LOOP_WINDOW)
        {
            self.recent_exits.pop_front();
        }
        if self.recent_exits.len() >= CRASH_LOOP_EXITS && !self.crash_loop {
            self.crash_loop = true;
            actions.push(Action::Print(format!(
                "{}app state crash-loop: {} exits within {}s; retrying every {}s",
                console::PREFIX,
                self.recent_exits.len(),
                CRASH_LOOP_WINDOW.as_secs(),
                BACKOFF_MAX.as_secs()
            )));
        }
        // In a crash loop every retry waits the longest delay, until a run
        // lasts HEALTHY_AFTER.
        let delay = if self.crash_loop {
            BACKOFF_MAX
        } else {
            backoff(self.quick_exits)
        };
        actions.push(Action::Print(format!(
            "{}restarting the app in {} (restart {}, policy {})",
            console::PREFIX,
            human(delay),
            self.generation,
            self.policy.as_str()
        )));
        self.state = State::Backoff { until: now + delay };
        actions
    }

    /// Memory stayed low: the running app is killed (once) and its exit
    /// reported as out of memory; the restart policy then applies.
    pub fn memory_low(&mut self, info: crate::memory::MemInfo) -> Vec<Action> {
        let State::Running { pid, .. } = self.state else {
            return Vec::new();
        };
        if self.killed_for_memory {
            return Vec::new();
        }
        self.killed_for_memory = true;
        vec![
            Action::Print(format!(
                "{}memory low: {} of {} MiB available for {} readings; killing the app",
                console::PREFIX,
                info.available_kib / 1024,
                info.total_kib / 1024,
                crate::memory::LOW_SAMPLES
            )),
            Action::KillApp(pid),
        ]
    }

    /// SIGTERM/SIGINT to PID 1 or the power button, at time `now`.
    pub fn shutdown_requested(&mut self, reason: Reason, now: Instant) -> Vec<Action> {
        let why = match reason {
            Reason::Sigterm => "SIGTERM to init",
            Reason::CtrlAltDel => "Ctrl-Alt-Del",
            Reason::PowerButton => "power button",
        };
        if self.state == State::Done
            || matches!(self.state, State::Stopping { .. } | State::Killed { .. })
        {
            return Vec::new(); // already stopping: the grace deadline stands
        }
        let mut actions = vec![Action::Print(console::SHUTDOWN_REQUESTED.to_string())];
        actions.extend(self.stop(why, now));
        actions
    }

    /// The update agent installed a new version: stop the app, then reboot
    /// into it.
    pub fn update_ready(&mut self, now: Instant) -> Vec<Action> {
        self.reboot = true;
        self.stop("update installed, rebooting into it", now)
    }

    /// The health check's verdict. It only counts while a trial is open:
    /// a pass commits the new version, a failure rolls it back and reboots.
    pub fn health(&mut self, verdict: Result<String, String>, now: Instant) -> Vec<Action> {
        if !self.trial_open {
            return Vec::new();
        }
        match verdict {
            Ok(detail) => {
                self.trial_open = false;
                vec![Action::Commit(detail)]
            }
            Err(reason) => {
                let mut actions = Vec::new();
                self.fail_trial(reason, &mut actions);
                actions.extend(self.stop("rolling back", now));
                actions
            }
        }
    }

    /// Stops the app (SIGTERM, SIGKILL after the grace period) so that
    /// supervision ends; `why` is logged.
    fn stop(&mut self, why: &str, now: Instant) -> Vec<Action> {
        match self.state {
            State::Running { pid, .. } => {
                self.state = State::Stopping {
                    pid,
                    deadline: now + self.grace,
                };
                vec![
                    Action::Print(format!(
                        "{}{why}: sending SIGTERM to the app, SIGKILL in {}s",
                        console::PREFIX,
                        self.grace.as_secs()
                    )),
                    Action::TermApp(pid),
                ]
            }
            State::Starting | State::Backoff { .. } => {
                self.state = State::Done;
                vec![
                    Action::Print(format!(
                        "{}{why}: the app is not running (waiting to restart)",
                        console::PREFIX
                    )),
                    Action::Finish,
                ]
            }
            // Already stopping: the grace deadline stands.
            State::Stopping { .. } | State::Killed { .. } | State::Done => Vec::new(),
        }
    }

    /// When [`Supervisor::tick`] must be called next, if ever.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Stopping { deadline, .. } => Some(deadline),
            State::Backoff { until } => Some(until),
            _ => None,
        }
    }

    /// Time passed: restarts after the backoff, kills after the grace period.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        match self.state {
            State::Backoff { until } if now >= until => {
                self.state = State::Starting;
                vec![Action::Start]
            }
            State::Stopping { pid, deadline } if now >= deadline => {
                self.state = State::Killed { pid };
                vec![
                    Action::Print(format!(
                        "{}grace period over: sending SIGKILL to the app",
                        console::PREFIX
                    )),
                    Action::KillApp(pid),
                ]
            }
            _ => Vec::new(),
        }
    }
}

/// The delay before restart number `n` (1-based): 0.1 s, 0.2 s, 0.4 s, …
/// capped at [`BACKOFF_MAX`].
pub fn backoff(n: u32) -> Duration {
    let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
    BACKOFF_INITIAL.saturating_mul(factor).min(BACKOFF_MAX)
}

fn human(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
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

/// What init knows about the running generation.
struct Running {
    pid: Pid,
    drain: log::Drain,
    oom_kills_before: Option<u64>,
}

/// Starts and supervises the app until supervision is over (the policy
/// says not to restart, or a shutdown was requested and the app is gone).
///
/// With `trial`, this boot runs a new version on trial: the health check
/// starts with the app, and the verdict is committed or rolled back
/// through it. Returns how the VM ends.
pub fn supervise(
    app: &AppConfig,
    creds: Credentials,
    events: &Events,
    updates: Option<&crate::trial::Updates>,
) -> End {
    let grace = Duration::from_secs(u64::from(app.settings.grace));
    let mut sup = Supervisor::new(app.settings.restart, grace);
    if updates.is_some_and(|u| u.is_trial()) {
        sup.start_trial();
    }
    let mut health_started = false;
    let mut running: Option<Running> = None;
    let mut queue: VecDeque<Action> = sup.begin().into();
    loop {
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Print(line) => log::marker(&line),
                Action::Start => {
                    let oom_kills_before = oom_kills();
                    let actions = match start::spawn(app, creds, sup.generation() + 1) {
                        Ok((pid, drain)) => {
                            crate::stats::mark_app_started();
                            running = Some(Running {
                                pid,
                                drain,
                                oom_kills_before,
                            });
                            if let Some(updates) = updates
                                && !health_started
                            {
                                health_started = true;
                                updates.start_health(app.settings.port, events.sender());
                            }
                            sup.started(pid.as_raw_nonzero().get(), Instant::now())
                        }
                        Err(err) => {
                            say!("error: {}", crate::error_chain(&err));
                            sup.start_failed()
                        }
                    };
                    queue.extend(actions);
                }
                // ESRCH (already gone, not yet reaped) is fine for both.
                Action::TermApp(pid) => {
                    if let Some(pid) = Pid::from_raw(pid) {
                        let _ = rustix::process::kill_process(pid, Signal::TERM);
                    }
                }
                Action::KillApp(pid) => {
                    if let Some(pid) = Pid::from_raw(pid) {
                        let _ = rustix::process::kill_process_group(pid, Signal::KILL);
                        let _ = rustix::process::kill_process(pid, Signal::KILL);
                    }
                }
                Action::Commit(detail) => {
                    if let Some(updates) = updates {
                        updates.commit(&detail);
                    }
                }
                Action::Rollback(reason) => {
                    if let Some(updates) = updates {
                        updates.rollback(&reason);
                    }
                }
                Action::Finish => return sup.end(),
            }
        }
        if let Some(updates) = updates {
            updates.set_app(app_status(&sup));
        }
        // Reap everything that has exited: the app and any orphan.
        while let Some((pid, status)) = reap_one() {
            let oom = match &running {
                Some(r) if r.pid.as_raw_nonzero().get() == pid => {
                    // The app's last words first, then its exit.
                    r.drain.drained(DRAIN_TIMEOUT);
                    let before = r.oom_kills_before;
                    running = None;
                    matches!((before, oom_kills()), (Some(b), Some(a)) if a > b)
                }
                _ => false,
            };
            queue.extend(sup.child_exited(pid, status, oom, Instant::now()));
        }
        if !queue.is_empty() {
            continue;
        }
        let event = match sup.deadline() {
            Some(deadline) => events
                .rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now())),
            None => events.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        let now = Instant::now();
        queue.extend(match event {
            Ok(Event::Signal(SIGCHLD)) => continue,
            Ok(Event::Signal(SIGINT)) => sup.shutdown_requested(Reason::CtrlAltDel, now),
            Ok(Event::Signal(_)) => sup.shutdown_requested(Reason::Sigterm, now),
            Ok(Event::PowerButton) => sup.shutdown_requested(Reason::PowerButton, now),
            Ok(Event::MemoryLow(info)) => sup.memory_low(info),
            Ok(Event::UpdateReady) => sup.update_ready(now),
            Ok(Event::Health(verdict)) => sup.health(verdict, now),
            Err(_) => sup.tick(now),
        });
    }
}

/// The app's status as `nodeos status` shows it.
fn app_status(sup: &Supervisor) -> nodeos_manifest::update::AppStatus {
    nodeos_manifest::update::AppStatus {
        state: sup.state_name().to_owned(),
        generation: sup.generation(),
        restarts: sup.generation().saturating_sub(1),
        last_exit: sup.last_exit().map(|r| {
            if r.oom {
                format!("{} (out of memory)", r.exit)
            } else {
                r.exit.to_string()
            }
        }),
        pid: sup.app_pid(),
        oom_exits: sup.oom_exits(),
    }
}

/// The kernel's count of OOM kills since boot (`oom_kill` in /proc/vmstat).
pub fn oom_kills() -> Option<u64> {
    parse_oom_kills(&std::fs::read_to_string("/proc/vmstat").ok()?)
}

pub fn parse_oom_kills(vmstat: &str) -> Option<u64> {
    vmstat
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
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

#[cfg(test)]
mod tests {
    use super::*;

    const APP: i32 = 42;

    fn raw_exit(code: i32) -> i32 {
        code << 8
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn lines(actions: &[Action]) -> Vec<&str> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Print(l) => Some(l.as_str()),
                _ => None,
            })
            .collect()
    }

    /// A supervisor whose app (generation 1) is running since `t0`.
    fn running(policy: RestartPolicy, t0: Instant) -> Supervisor {
        let mut s = Supervisor::new(policy, secs(10));
        assert_eq!(s.begin(), [Action::Start]);
        assert!(s.started(APP, t0).is_empty());
        assert_eq!(s.generation(), 1);
        s
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
    fn backoff_doubles_up_to_the_cap() {
        let delays: Vec<u128> = (1..=11).map(|n| backoff(n).as_millis()).collect();
        assert_eq!(
            delays,
            [
                100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000
            ]
        );
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn policy_always_restarts_after_a_backoff_and_counts_generations() {
        let t0 = Instant::now();
        let mut s = running(RestartPolicy::Always, t0);
        assert!(
            s.child_exited(7, 0, false, t0).is_empty(),
            "orphans are only reaped"
        );
        let t1 = t0 + secs(2);
        let actions = s.child_exited(APP, raw_exit(3), false, t1);
        assert_eq!(
            lines(&actions),
            [
                "nodeos-init: app exited code=3",
                "nodeos-init: restarting the app in 0.1s (restart 1, policy always)"
            ]
        );
        assert_eq!(s.deadline(), Some(t1 + ms(100)));
        assert!(
            s.tick(t1 + ms(99)).is_empty(),
            "never restarts before the backoff"
        );
        assert_eq!(s.tick(t1 + ms(100)), [Action::Start]);
        s.started(APP + 1, t1 + secs(1));
        assert_eq!(s.generation(), 2);
        let actions = s.child_exited(APP + 1, raw_exit(0), false, t1 + secs(2));
        assert!(
            lines(&actions)[1].contains("in 0.2s (restart 2"),
            "{actions:?}"
        );
        assert_eq!(
            s.last_exit(),
            Some(ExitRecord {
                generation: 2,
                exit: AppExit::Code(0),
                oom: false
            })
        );
    }

    #[test]
    fn a_healthy_run_resets_the_backoff() {
        let t0 = Instant::now();
        let mut s = running(RestartPolicy::Always, t0);
        s.child_exited(APP, raw_exit(1), false, t0 + secs(1));
        s.tick(t0 + secs(2));
        s.started(APP, t0 + secs(2));
        s.child_exited(APP, raw_exit(1), false, t0 + secs(3));
        assert_eq!(
            s.deadline(),
            Some(t0 + secs(3) + ms(200)),
            "second quick exit"
        );
        s.tick(t0 + secs(5));
        s.started(APP, t0 + secs(5));
        let t = t0 + secs(5) + HEALTHY_AFTER;
        s.child_exited(APP, raw_exit(1), false, t);
        assert_eq!(
            s.deadline(),
            Some(t + BACKOFF_INITIAL),
            "after a long run: from the start"
        );
    }

    #[test]
    fn quick_exits_become_a_crash_loop_that_retries_slowly() {
        let mut now = Instant::now();
        let mut s = running(RestartPolicy::Always, now);
        let mut crash_lines = 0;
        for round in 1..=7 {
            now += secs(1);
            let actions = s.child_exited(APP, raw_exit(1), false, now);
            crash_lines += lines(&actions)
                .iter()
                .filter(|l| l.contains("app state crash-loop"))
                .count();
            assert_eq!(
                s.in_crash_loop(),
                round >= CRASH_LOOP_EXITS,
                "round {round}"
            );
            let until = s.deadline().unwrap();
            if round >= CRASH_LOOP_EXITS {
                assert_eq!(until - now, BACKOFF_MAX, "round {round}");
            }
            now = until;
            assert_eq!(s.tick(now), [Action::Start]);
            s.started(APP, now);
        }
        assert_eq!(crash_lines, 1, "the state change is logged once");
    }

    #[test]
    fn policy_on_failure_stops_after_a_clean_exit() {
        let t0 = Instant::now();
        let mut s = running(RestartPolicy::OnFailure, t0);
        let actions = s.child_exited(APP, 15, false, t0);
        assert!(matches!(actions.last(), Some(Action::Print(l)) if l.contains("restarting")));
        s.tick(t0 + secs(1));
        s.started(APP, t0 + secs(1));
        let actions = s.child_exited(APP, raw_exit(0), false, t0 + secs(2));
        assert_eq!(actions.last(), Some(&Action::Finish));
        assert!(lines(&actions)[1].contains("restart policy on-failure: not restarting"));
        assert_eq!(s.deadline(), None);
    }

    #[test]
    fn policy_never_powers_off_on_any_exit() {
        let t0 = Instant::now();
        let mut s = running(RestartPolicy::Never, t0);
        let actions = s.child_exited(APP, raw_exit(1), false, t0);
        assert_eq!(lines(&actions)[0], "nodeos-init: app exited code=1");
        assert_eq!(actions.last(), Some(&Action::Finish));
    }

    #[test]
    fn oom_kills_are_reported_as_such() {
        let t0 = Instant::now();
        let mut s = running(RestartPolicy::Always, t0);
        let actions = s.child_exited(APP, 9, true, t0);
        assert_eq!(
            lines(&actions)[0],
            "nodeos-init: app exited signal=9 (out of memory: killed by the kernel's OOM killer)"
        );
        assert!(s.last_exit().unwrap().oom);
        assert_eq!(
            console::parse_app_exited(lines(&actions)[0]),
            Some(AppExit::Signal(9))
        );
        // An OOM kill elsewhere does not explain an exit code.
        s.tick(t0 + secs(1));
        s.started(APP, t0 + secs(1));
        let actions = s.child_exited(APP, raw_exit(1), true, t0 + secs(2));
        assert_eq!(lines(&actions)[0], "nodeos-init: app exited code=1");
    }

    #[test]
    fn low_memory_kills_the_app_once_and_reports_it_as_oom() {
        let t0 = Instant::now();
        let info = crate::memory::MemInfo {
            total_kib: 120 * 1024,
            available_kib: 2 * 1024,
        };
        let mut s = running(RestartPolicy::Always, t0);
        let actions = s.memory_low(info);
        assert_eq!(
            lines(&actions),
            ["nodeos-init: memory low: 2 of 120 MiB available for 3 readings; killing the app"]
        );
        assert_eq!(actions.last(), Some(&Action::KillApp(APP)));
        assert!(s.memory_low(info).is_empty(), "kills once");
        let actions = s.child_exited(APP, 9, false, t0 + secs(1));
        assert_eq!(
            lines(&actions)[0],
            "nodeos-init: app exited signal=9 (out of memory: killed by nodeos-init's low-memory watchdog)"
        );
        assert!(s.last_exit().unwrap().oom);
        assert!(lines(&actions)[1].starts_with("nodeos-init: restarting the app"));
        // Between restarts there is nothing to kill.
        assert!(s.memory_low(info).is_empty());
        s.tick(t0 + secs(2));
        s.started(APP, t0 + secs(2));
        let actions = s.child_exited(APP, 9, false, t0 + secs(3));
        assert_eq!(
            lines(&actions)[0],
            "nodeos-init: app exited signal=9",
            "a new generation starts clean"
        );
    }

    #[test]
    fn shutdown_terms_then_kills_after_grace_and_never_restarts() {
        let t0 = Instant::now();
        let mut s = running(RestartPolicy::Always, t0);
        let actions = s.shutdown_requested(Reason::PowerButton, t0);
        assert_eq!(lines(&actions)[0], console::SHUTDOWN_REQUESTED);
        assert_eq!(actions.last(), Some(&Action::TermApp(APP)));
        assert_eq!(s.deadline(), Some(t0 + secs(10)));

        // A second request does not restart the grace period or re-send.
        assert!(
            s.shutdown_requested(Reason::Sigterm, t0 + secs(5))
                .is_empty()
        );
        assert!(s.tick(t0 + secs(9)).is_empty());
        let actions = s.tick(t0 + secs(10));
        assert_eq!(actions.last(), Some(&Action::KillApp(APP)));
        assert_eq!(s.deadline(), None);
        assert!(s.tick(t0 + secs(20)).is_empty(), "kills once");

        let actions = s.child_exited(APP, 9, true, t0 + secs(11));
        assert_eq!(
            lines(&actions),
            ["nodeos-init: app exited signal=9"],
            "init's own SIGKILL is not an OOM kill"
        );
        assert_eq!(actions.last(), Some(&Action::Finish));
    }

    #[test]
    fn app_that_stops_in_time_is_not_killed() {
        let t0 = Instant::now();
        let mut s = running(RestartPolicy::Always, t0);
        s.shutdown_requested(Reason::Sigterm, t0);
        let actions = s.child_exited(APP, raw_exit(0), false, t0 + secs(1));
        assert_eq!(actions.last(), Some(&Action::Finish));
        assert!(s.tick(t0 + secs(11)).is_empty());
        assert!(s.shutdown_requested(Reason::PowerButton, t0).is_empty());
    }

    #[test]
    fn shutdown_while_waiting_to_restart_powers_off_at_once() {
        let t0 = Instant::now();
        let mut s = running(RestartPolicy::Always, t0);
        s.child_exited(APP, raw_exit(1), false, t0);
        let actions = s.shutdown_requested(Reason::CtrlAltDel, t0);
        assert_eq!(lines(&actions)[0], console::SHUTDOWN_REQUESTED);
        assert_eq!(actions.last(), Some(&Action::Finish));
        assert!(s.tick(t0 + secs(5)).is_empty(), "no restart after that");
    }

    #[test]
    fn an_app_that_cannot_start_is_failed_with_code_127() {
        let mut s = Supervisor::new(RestartPolicy::Always, secs(10));
        s.begin();
        let actions = s.start_failed();
        assert_eq!(
            lines(&actions),
            [
                "nodeos-init: app state failed: it could not be started",
                "nodeos-init: app exited code=127"
            ]
        );
        assert_eq!(actions.last(), Some(&Action::Finish));
    }

    #[test]
    fn zero_grace_kills_at_once() {
        let t0 = Instant::now();
        let mut s = Supervisor::new(RestartPolicy::Always, Duration::ZERO);
        s.begin();
        s.started(APP, t0);
        s.shutdown_requested(Reason::CtrlAltDel, t0);
        assert_eq!(s.tick(t0).last(), Some(&Action::KillApp(APP)));
    }

    #[test]
    fn oom_kill_counter_is_read_from_vmstat() {
        assert_eq!(parse_oom_kills("pgfault 10\noom_kill 3\nfoo 1\n"), Some(3));
        assert_eq!(parse_oom_kills("pgfault 10\n"), None);
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

    /// A supervisor on trial whose app (generation 1) runs since `t0`.
    fn on_trial(policy: RestartPolicy, t0: Instant) -> Supervisor {
        let mut s = Supervisor::new(policy, secs(10));
        s.start_trial();
        assert_eq!(s.begin(), [Action::Start]);
        s.started(APP, t0);
        s
    }

    #[test]
    fn a_passed_health_check_commits_and_the_app_keeps_running() {
        let t0 = Instant::now();
        let mut s = on_trial(RestartPolicy::Always, t0);
        assert!(s.trial_open());
        let actions = s.health(Ok("GET / 200 after 1.0s".into()), t0 + secs(1));
        assert_eq!(actions, [Action::Commit("GET / 200 after 1.0s".into())]);
        assert!(!s.trial_open());
        assert_eq!(s.state_name(), "running");
        assert!(
            s.health(Err("late".into()), t0 + secs(2)).is_empty(),
            "a verdict counts once"
        );
        // After the commit the restart policy applies again.
        let actions = s.child_exited(APP, raw_exit(1), false, t0 + secs(3));
        assert!(lines(&actions)[1].contains("restarting"), "{actions:?}");
        assert_eq!(s.end(), End::PowerOff);
    }

    #[test]
    fn any_exit_during_the_trial_rolls_back_whatever_the_policy() {
        let t0 = Instant::now();
        let mut s = on_trial(RestartPolicy::Always, t0);
        let actions = s.child_exited(APP, raw_exit(1), false, t0 + secs(1));
        assert_eq!(
            actions,
            [
                Action::Print("nodeos-init: app exited code=1".into()),
                Action::Rollback("the app exited during its trial (exit code 1)".into()),
                Action::Finish,
            ]
        );
        assert_eq!(s.end(), End::Reboot);
        let mut s = on_trial(RestartPolicy::Never, t0);
        let actions = s.child_exited(APP, 9, true, t0 + secs(1));
        assert!(
            actions.contains(&Action::Rollback(
                "the app exited during its trial (signal 9), out of memory".into()
            )),
            "{actions:?}"
        );
    }

    #[test]
    fn a_failed_health_check_rolls_back_then_stops_the_app_and_reboots() {
        let t0 = Instant::now();
        let mut s = on_trial(RestartPolicy::Always, t0);
        let actions = s.health(Err("no 2xx within 60s".into()), t0 + secs(60));
        assert_eq!(actions[0], Action::Rollback("no 2xx within 60s".into()));
        assert_eq!(actions.last(), Some(&Action::TermApp(APP)));
        assert_eq!(s.state_name(), "stopping");
        let actions = s.child_exited(APP, 15, false, t0 + secs(61));
        assert_eq!(actions.last(), Some(&Action::Finish));
        assert_eq!(s.end(), End::Reboot);
    }

    #[test]
    fn an_installed_update_stops_the_app_and_reboots() {
        let t0 = Instant::now();
        let mut s = running(RestartPolicy::Always, t0);
        assert!(
            s.health(Err("ignored".into()), t0).is_empty(),
            "no trial, no verdict"
        );
        let actions = s.update_ready(t0 + secs(1));
        assert_eq!(
            lines(&actions),
            [
                "nodeos-init: update installed, rebooting into it: sending SIGTERM to the app, SIGKILL in 10s"
            ]
        );
        assert_eq!(actions.last(), Some(&Action::TermApp(APP)));
        assert_eq!(
            s.child_exited(APP, 15, false, t0 + secs(2)).last(),
            Some(&Action::Finish)
        );
        assert_eq!(s.end(), End::Reboot);
    }

    #[test]
    fn a_start_failure_on_trial_rolls_back() {
        let mut s = Supervisor::new(RestartPolicy::Always, secs(10));
        s.start_trial();
        s.begin();
        let actions = s.start_failed();
        assert!(actions.contains(&Action::Rollback("the app could not be started".into())));
        assert_eq!(s.end(), End::Reboot);
    }
}
