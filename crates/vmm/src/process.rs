//! A QEMU child process: own process group, tied to its owner's life,
//! stdout split into console lines, stderr tail kept, exit status recorded.
//!
//! Three threads per process: a stdout reader, a stderr reader and a waiter
//! that owns the [`Child`]. They share one [`State`] under a `Mutex`, and a
//! `Condvar` wakes whoever waits for a line or for the exit.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

use crate::console::{ConsoleLog, LineSplitter, Tail};
use crate::{ConsoleSink, Error};

/// Bytes of QEMU's stderr kept for error messages.
const STDERR_TAIL: usize = 4096;

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) log: ConsoleLog,
    pub(crate) stderr: Tail,
    pub(crate) stdout_open: bool,
    pub(crate) stderr_open: bool,
    pub(crate) status: Option<ExitStatus>,
}

impl State {
    /// QEMU has exited and both pipes are drained: the log is complete.
    pub(crate) fn finished(&self) -> bool {
        self.status.is_some() && !self.stdout_open && !self.stderr_open
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug)]
pub(crate) struct Process {
    pid: Pid,
    shared: Arc<Shared>,
    waiter: Option<JoinHandle<()>>,
}

impl Process {
    /// Spawns `command` with stdin null and stdout/stderr captured, in a new
    /// process group, with SIGKILL as its parent-death signal.
    ///
    /// The parent-death signal fires when the *thread* that spawned QEMU
    /// exits, so a VM must not outlive the thread that started it.
    pub(crate) fn spawn(command: Command, sink: ConsoleSink) -> std::io::Result<Process> {
        Process::spawn_holding(command, sink, Box::new(()))
    }

    /// [`Process::spawn`], keeping `until_exit` alive until QEMU has exited:
    /// it is dropped right after QEMU is reaped, before the exit status is
    /// published (so whoever sees the status sees it dropped), or with the
    /// process if spawning fails.
    pub(crate) fn spawn_holding(
        mut command: Command,
        sink: ConsoleSink,
        until_exit: Box<dyn Send>,
    ) -> std::io::Result<Process> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // SAFETY: the closure runs in the forked child before exec and only
        // makes one async-signal-safe syscall (prctl), allocating nothing.
        unsafe {
            command.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
                Ok(())
            });
        }
        let mut child = command.spawn()?;
        let pid = Pid::from_child(&child);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                log: ConsoleLog::default(),
                stderr: Tail::new(STDERR_TAIL),
                stdout_open: true,
                stderr_open: true,
                status: None,
            }),
            changed: Condvar::new(),
        });

        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let threads = |child: Child| -> std::io::Result<JoinHandle<()>> {
            let s = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("qemu-console".into())
                .spawn(move || read_console(stdout, sink, &s))?;
            let s = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("qemu-stderr".into())
                .spawn(move || read_stderr(stderr, &s))?;
            let s = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("qemu-wait".into())
                .spawn(move || reap(child, &s, until_exit))
        };
        let waiter = threads(child).inspect_err(|_| {
            // Without its threads nobody would ever stop or reap QEMU.
            let _ = rustix::process::kill_process_group(pid, Signal::KILL);
        })?;
        Ok(Process {
            pid,
            shared,
            waiter: Some(waiter),
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid.as_raw_pid() as u32
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.shared.state)
    }

    /// Waits until `done(state)` holds or `timeout` passes; returns the
    /// guard and whether `done` held.
    pub(crate) fn wait_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&State) -> bool,
    ) -> (MutexGuard<'_, State>, bool) {
        let deadline = Instant::now() + timeout;
        let mut state = self.state();
        loop {
            if done(&state) {
                return (state, true);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return (state, false);
            }
            state = match self.shared.changed.wait_timeout(state, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// Waits for the exit and drained pipes; the status if it came in time.
    pub(crate) fn wait_finished(&self, timeout: Duration) -> Option<ExitStatus> {
        let (state, done) = self.wait_until(timeout, State::finished);
        if done { state.status } else { None }
    }

    /// SIGKILLs QEMU's whole process group unless QEMU has been reaped.
    pub(crate) fn kill_group(&self) {
        let state = self.state();
        if state.status.is_none() {
            // The group may already be empty (ESRCH): nothing left to kill.
            let _ = rustix::process::kill_process_group(self.pid, Signal::KILL);
        }
        drop(state);
    }

    /// Kills the group and waits until QEMU is reaped and its pipes closed.
    pub(crate) fn kill_and_reap(&self) -> Option<ExitStatus> {
        self.kill_group();
        self.wait_finished(Duration::from_secs(10))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill_group();
        if let Some(waiter) = self.waiter.take() {
            // After SIGKILL the wait returns promptly.
            let _ = waiter.join();
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panicking reader thread must not take the VM's cleanup down with it.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn read_console(mut stdout: impl Read, sink: ConsoleSink, shared: &Shared) {
    let mut splitter = LineSplitter::default();
    let mut buf = [0u8; 8192];
    let deliver = |line: String| {
        if sink == ConsoleSink::Stdout {
            let mut out = std::io::stdout().lock();
            // The console is best-effort output; a closed stdout must not stop capture.
            let _ = writeln!(out, "{line}").and_then(|()| out.flush());
        }
        lock(&shared.state).log.push(line);
        shared.changed.notify_all();
    };
    loop {
        match stdout.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => splitter.push(&buf[..n], &deliver),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    if let Some(line) = splitter.finish() {
        deliver(line);
    }
    lock(&shared.state).stdout_open = false;
    shared.changed.notify_all();
}

fn read_stderr(mut stderr: impl Read, shared: &Shared) {
    let mut buf = [0u8; 4096];
    loop {
        match stderr.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => lock(&shared.state).stderr.push(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    lock(&shared.state).stderr_open = false;
    shared.changed.notify_all();
}

fn reap(mut child: Child, shared: &Shared, until_exit: Box<dyn Send>) {
    let status = loop {
        match child.wait() {
            Ok(status) => break status,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // ECHILD cannot happen for a child we own; record a failure rather than hang.
            Err(_) => break std::os::unix::process::ExitStatusExt::from_raw(0xff00),
        }
    };
    drop(until_exit);
    lock(&shared.state).status = Some(status);
    shared.changed.notify_all();
}

/// Maps a spawn failure to the error users can act on.
pub(crate) fn spawn_error(qemu: &std::path::Path, source: std::io::Error) -> Error {
    if source.kind() == std::io::ErrorKind::NotFound {
        Error::QemuNotFound {
            name: qemu.display().to_string(),
        }
    } else {
        Error::Spawn {
            qemu: qemu.to_path_buf(),
            source,
        }
    }
}
