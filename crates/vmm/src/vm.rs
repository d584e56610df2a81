//! A running VM: QEMU plus its QMP connection and console log.

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nodeos_manifest::console;

use crate::config_disk::ConfigDisk;
use crate::process::{Process, spawn_error};
use crate::qmp::Qmp;
use crate::{Error, Outcome, PortForward, ResolvedAccel, VmConfig, find_qemu, resolve_accel};

/// How long QEMU gets to create its QMP socket.
const QMP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `kill` waits for QMP `quit` before SIGKILL.
const QUIT_GRACE: Duration = Duration::from_secs(2);
/// Longest Unix socket path (`sun_path` is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// A running QEMU. Dropping it kills QEMU's process group.
#[derive(Debug)]
pub struct Vm {
    process: Process,
    qmp: Option<Qmp>,
    accel: ResolvedAccel,
    qmp_socket: PathBuf,
    hard_stopped: bool,
    /// The QEMU command line, for people (`nodeos run -v`).
    command_line: String,
    /// Where the config disk was written, if there is one. The file itself
    /// belongs to `process`, which removes it once QEMU has exited.
    config_disk: Option<PathBuf>,
    /// Removed after `process` is dropped (fields drop in order).
    _state_dir: Option<tempfile::TempDir>,
}

impl Vm {
    /// Checks that the forwarded host ports are free, picks the accelerator,
    /// writes the config disk (if [`VmConfig::run_config`] is not empty),
    /// starts QEMU and connects to its QMP socket.
    pub fn start(config: VmConfig) -> Result<Vm, Error> {
        check_forwards(&config.forwards)?;
        let qemu = find_qemu(config.qemu.as_deref())?;
        let files = [
            Some(("kernel", &config.kernel)),
            Some(("runtime layer", &config.rootfs)),
            config.app_layer.as_ref().map(|path| ("app layer", path)),
        ];
        for (what, path) in files.into_iter().flatten() {
            std::fs::File::open(path).map_err(Error::io(format!(
                "cannot read the {what} `{}`",
                path.display()
            )))?;
        }
        let accel = resolve_accel(config.accel, &qemu)?;

        let (state_dir, owned) = match &config.state_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(Error::io(format!(
                    "cannot create the VM state directory `{}`",
                    dir.display()
                )))?;
                (dir.clone(), None)
            }
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("nodeos-vm")
                    .tempdir()
                    .map_err(Error::io("cannot create a temporary VM state directory"))?;
                (dir.path().to_path_buf(), Some(dir))
            }
        };
        let qmp_socket = state_dir.join("qmp.sock");
        if qmp_socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(Error::Io {
                what: format!(
                    "the QMP socket path `{}` is too long: use a shorter state directory",
                    qmp_socket.display()
                ),
                source: std::io::ErrorKind::InvalidInput.into(),
            });
        }
        match std::fs::remove_file(&qmp_socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::io(format!(
                    "cannot remove the stale socket `{}`",
                    qmp_socket.display()
                ))(e));
            }
        }

        let disk = if config.run_config.is_empty() {
            None
        } else {
            Some(ConfigDisk::write(&config.run_config)?)
        };
        let disk_path = disk.as_ref().map(|d| d.path().to_path_buf());

        let mut command = Command::new(&qemu);
        command.args(config.qemu_args(accel, &qmp_socket, disk_path.as_deref()));
        let command_line = std::iter::once(command.get_program())
            .chain(command.get_args())
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        // The process owns the disk: it goes as soon as QEMU has exited.
        let process = Process::spawn_holding(command, config.console, Box::new(disk))
            .map_err(|e| spawn_error(&qemu, e))?;
        let mut vm = Vm {
            process,
            qmp: None,
            accel,
            command_line,
            qmp_socket,
            hard_stopped: false,
            config_disk: disk_path,
            _state_dir: owned,
        };
        vm.qmp = Some(vm.connect_qmp()?);
        // QEMU answers QMP only from its main loop, after it has opened
        // every drive: the config disk's name is no longer needed. Removing
        // it now means even a SIGKILLed runner leaves no secret behind;
        // QEMU keeps reading through its open file.
        if let Some(path) = &vm.config_disk {
            let _ = std::fs::remove_file(path);
        }
        Ok(vm)
    }

    /// Retries until QEMU has created the socket; fails fast if QEMU exits.
    fn connect_qmp(&self) -> Result<Qmp, Error> {
        let deadline = Instant::now() + QMP_CONNECT_TIMEOUT;
        loop {
            match Qmp::connect(&self.qmp_socket) {
                Ok(qmp) => return Ok(qmp),
                Err(Error::QmpIo(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                    ) => {}
                Err(e) => return Err(e),
            }
            if Instant::now() >= deadline {
                return Err(Error::Qmp(format!(
                    "QEMU did not open its QMP socket `{}` within {QMP_CONNECT_TIMEOUT:?}",
                    self.qmp_socket.display()
                )));
            }
            // Sleeps, but wakes at once if QEMU exits.
            let exited = self
                .process
                .wait_until(Duration::from_millis(20), |s| s.status.is_some())
                .1;
            if exited {
                // Let the stderr reader drain, so the error shows what QEMU said.
                self.process.wait_finished(Duration::from_secs(2));
                return Err(self.exited_error("the QMP socket"));
            }
        }
    }

    /// The accelerator QEMU runs with.
    pub fn accel(&self) -> ResolvedAccel {
        self.accel
    }

    /// The QEMU command line it was started with, for people.
    pub fn command_line(&self) -> &str {
        &self.command_line
    }

    /// QEMU's process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Path of the QMP socket.
    pub fn qmp_socket(&self) -> &Path {
        &self.qmp_socket
    }

    /// Where the config disk was written ([`VmConfig::run_config`]), if it
    /// was. The name is removed as soon as QEMU has the file open (once
    /// [`Vm::start`] returns); its directory goes when QEMU has exited.
    pub fn config_disk(&self) -> Option<&Path> {
        self.config_disk.as_deref()
    }

    /// Waits for a console line containing `marker` (seen at any time since
    /// boot) and returns the line as the guest printed it.
    ///
    /// Lines are matched as printed and in their untimed text form
    /// ([`console::normalize`]), so `nodeos-init: starting app` matches
    /// the record `2026-11-26T15:00:01.123Z nodeos-init: starting app` and
    /// its JSON form alike, and an app's output matches with or without
    /// its `TIME app[N] out: ` prefix.
    pub fn wait_for_line(&self, marker: &str, timeout: Duration) -> Result<String, Error> {
        self.wait_for_line_matching(marker, |line| line.contains(marker), timeout)
    }

    /// Waits for a console line for which `pred` holds and returns it as the
    /// guest printed it; `what` names it in errors. `pred` sees the line as
    /// printed and its untimed text form ([`console::normalize`]), as in
    /// [`Vm::wait_for_line`]; either may match.
    pub fn wait_for_line_matching(
        &self,
        what: &str,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Result<String, Error> {
        let mut next = 0;
        let mut found = None;
        let (state, done) = self.process.wait_until(timeout, |state| {
            found = first_match(state.log.since(next), &pred).map(str::to_owned);
            next = state.log.end();
            found.is_some() || !state.stdout_open
        });
        drop(state);
        match (found, done) {
            (Some(line), _) => Ok(line),
            (None, false) => Err(Error::Timeout {
                marker: what.to_owned(),
                waited: timeout,
            }),
            (None, true) => {
                // The console closed: QEMU is exiting. Give it a moment to be reaped.
                self.process.wait_finished(Duration::from_secs(5));
                Err(self.exited_error(&format!("the console line `{what}`")))
            }
        }
    }

    /// Everything the guest printed so far, one `\n` after each line.
    pub fn console_log(&self) -> String {
        self.process.state().log.text()
    }

    /// The last few KiB QEMU wrote to its stderr.
    pub fn stderr_tail(&self) -> String {
        self.process.state().stderr.text()
    }

    /// The QMP connection, for commands this type has no method for.
    pub fn qmp(&mut self) -> Result<&mut Qmp, Error> {
        self.qmp
            .as_mut()
            .ok_or_else(|| Error::Qmp("the QMP connection was lost earlier".into()))
    }

    /// Presses the ACPI power button (QMP `system_powerdown`).
    pub fn powerdown(&mut self) -> Result<(), Error> {
        let result = self.qmp()?.system_powerdown();
        if let Err(Error::QmpIo(_)) = result {
            self.qmp = None;
        }
        result
    }

    /// Waits up to `timeout` for QEMU to exit; `Some` with how the guest
    /// ended once it has, `None` if it is still running.
    pub fn wait(&mut self, timeout: Duration) -> Result<Option<Outcome>, Error> {
        let Some(status) = self.process.wait_finished(timeout) else {
            return Ok(None);
        };
        let state = self.process.state();
        Ok(Some(Outcome::derive(
            status,
            state.log.lines(),
            &state.stderr.text(),
            self.hard_stopped,
        )))
    }

    /// Stops QEMU now: QMP `quit`, then SIGKILL to its process group if it
    /// has not exited within a short grace. A no-op once QEMU has exited.
    pub fn kill(&mut self) {
        if self.process.state().status.is_some() {
            return;
        }
        self.hard_stopped = true;
        if let Some(qmp) = self.qmp.as_mut() {
            let _ = qmp.set_reply_timeout(QUIT_GRACE);
            // Best effort: SIGKILL follows anyway.
            let _ = qmp.quit();
        }
        self.qmp = None;
        if self.process.wait_finished(QUIT_GRACE).is_none() {
            self.process.kill_and_reap();
        }
    }

    /// Presses the power button, waits up to `grace` for the guest to power
    /// off, else kills QEMU ([`Outcome::HardStopped`]).
    pub fn shutdown(&mut self, grace: Duration) -> Result<Outcome, Error> {
        if let Some(outcome) = self.wait(Duration::ZERO)? {
            return Ok(outcome);
        }
        if self.powerdown().is_ok()
            && let Some(outcome) = self.wait(grace)?
        {
            return Ok(outcome);
        }
        self.kill();
        Ok(self
            .wait(Duration::from_secs(10))?
            .unwrap_or(Outcome::HardStopped))
    }

    fn exited_error(&self, waiting_for: &str) -> Error {
        let state = self.process.state();
        Error::Exited {
            waiting_for: waiting_for.to_owned(),
            status: state.status,
            stderr_tail: state.stderr.text(),
        }
    }
}

// `Process`'s own `Drop` kills QEMU's process group and reaps it; a `Drop`
// here documents the promise and closes QMP first.
impl Drop for Vm {
    fn drop(&mut self) {
        self.qmp = None;
        self.process.kill_group();
    }
}

/// The first of `lines` whose untimed text form satisfies `pred`.
fn first_match<'a>(
    mut lines: impl Iterator<Item = &'a str>,
    pred: impl Fn(&str) -> bool,
) -> Option<&'a str> {
    lines.find(|line| pred(line) || pred(&console::normalize(line)))
}

/// Each forwarded host port must be free now (QEMU would fail later with a
/// less clear message) and forwarded once. [`Vm::start`] checks it; callers
/// may check earlier, before preparing anything else.
pub fn check_forwards(forwards: &[PortForward]) -> Result<(), Error> {
    let mut seen = HashSet::new();
    for fwd in forwards {
        if !seen.insert((fwd.host_addr, fwd.host_port)) {
            return Err(Error::InvalidPortForward {
                value: fwd.to_string(),
                reason: format!("host port {} is forwarded twice", fwd.host_port),
            });
        }
        match TcpListener::bind((fwd.host_addr, fwd.host_port)) {
            Ok(listener) => drop(listener),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                return Err(Error::PortInUse {
                    addr: fwd.host_addr,
                    port: fwd.host_port,
                });
            }
            Err(source) => {
                return Err(Error::PortUnavailable {
                    addr: fwd.host_addr,
                    port: fwd.host_port,
                    source,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Accel, ConsoleSink};
    use nodeos_manifest::RunConfig;

    #[test]
    fn markers_match_records_of_either_log_format() {
        use console::{LogFormat, Record, Source, Stream};
        for format in [LogFormat::Text, LogFormat::Json] {
            let record = |source, message: &str| {
                Record {
                    unix_ms: 1_795_705_201_123,
                    source,
                    message: message.to_owned(),
                }
                .format(format)
            };
            let starting = record(Source::Init, "starting app");
            let listening = record(
                Source::App {
                    generation: 1,
                    stream: Stream::Stdout,
                },
                "listening on 3000",
            );
            let lines = [
                "[    0.5] Linux version 6.1",
                starting.as_str(),
                listening.as_str(),
            ];
            let find = |marker: &str| first_match(lines.into_iter(), |l| l.contains(marker));
            assert_eq!(
                find(console::STARTING_APP),
                Some(starting.as_str()),
                "{format:?}"
            );
            // The accelerator fallback waits for any init line.
            assert_eq!(find(console::PREFIX), Some(starting.as_str()), "{format:?}");
            assert_eq!(find("listening on"), Some(listening.as_str()), "{format:?}");
            assert_eq!(find("Linux version"), Some(lines[0]));
            // The line as printed matches too (an app line with its generation).
            if format == LogFormat::Text {
                assert_eq!(find("app[1] out: listening"), Some(listening.as_str()));
            }
            assert_eq!(
                first_match(lines.into_iter(), |l| l == "listening on 3000"),
                Some(listening.as_str())
            );
        }
    }

    #[test]
    fn busy_host_port_is_reported_before_qemu_starts() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut config = VmConfig::new("/nonexistent/kernel", "/nonexistent/rootfs", "");
        config.forwards = vec![PortForward::localhost(port, 3000)];
        let err = Vm::start(config).unwrap_err();
        assert!(
            matches!(err, Error::PortInUse { port: p, .. } if p == port),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains(&format!("127.0.0.1:{port} is already in use")),
            "{err}"
        );
    }

    #[test]
    fn duplicate_host_ports_are_rejected() {
        let fwd = PortForward::localhost(1, 2);
        assert!(matches!(
            check_forwards(&[fwd, fwd]),
            Err(Error::InvalidPortForward { .. })
        ));
    }

    #[test]
    fn missing_kernel_is_named() {
        let mut config = VmConfig::new("/nonexistent/kernel", "/nonexistent/rootfs", "");
        config.accel = Accel::Tcg;
        config.qemu = Some("/bin/true".into());
        let err = Vm::start(config).unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot read the kernel `/nonexistent/kernel`"),
            "{err}"
        );
    }

    /// A stand-in QEMU: a shell script that prints console lines, complains
    /// on stderr and exits, to test the runner without a VM.
    fn fake_qemu(dir: &Path, script: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        // The executable is written by `cp`, never through a descriptor of
        // this process: a child another test thread forks meanwhile would
        // inherit that descriptor and make exec fail with ETXTBSY.
        let source = dir.join("fake-qemu.sh");
        std::fs::write(&source, format!("#!/bin/sh\n{script}\n")).unwrap();
        let path = dir.join("fake-qemu");
        let copied = Command::new("cp").arg(&source).arg(&path).status().unwrap();
        assert!(copied.success());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn fake_config(dir: &Path, script: &str) -> VmConfig {
        let kernel = dir.join("kernel");
        std::fs::write(&kernel, b"").unwrap();
        let mut config = VmConfig::new(&kernel, &kernel, "console=ttyS0");
        config.accel = Accel::Tcg;
        config.qemu = Some(fake_qemu(dir, script));
        config
    }

    #[test]
    fn qemu_exiting_at_start_reports_its_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let config = fake_config(
            dir.path(),
            "echo \"qemu-system-x86_64: could not set up host forwarding rule 'tcp:127.0.0.1:1-:2'\" >&2; exit 1",
        );
        let err = Vm::start(config).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, Error::Exited { .. }), "{err:?}");
        assert!(
            message.contains("the QMP socket") && message.contains("host forwarding rule"),
            "{message}"
        );
    }

    /// A fake QEMU that also serves QMP would need more than `sh`; instead
    /// the console plumbing is tested through `Process` directly.
    #[test]
    fn console_lines_and_exit_are_captured() {
        let dir = tempfile::tempdir().unwrap();
        let qemu = fake_qemu(
            dir.path(),
            "printf 'Linux version 6.1\\r\\nnodeos-init: starting app\\r\\n'; printf 'nodeos-init: app exited code=3\\r\\nnodeos-init: powering off\\r\\nno newline'",
        );
        let process = Process::spawn(Command::new(&qemu), ConsoleSink::None).unwrap();
        let status = process.wait_finished(Duration::from_secs(10)).unwrap();
        let state = process.state();
        let lines: Vec<_> = state.log.lines().collect();
        assert_eq!(
            lines,
            [
                "Linux version 6.1",
                console::STARTING_APP,
                "nodeos-init: app exited code=3",
                console::POWER_OFF,
                "no newline"
            ]
        );
        assert_eq!(
            Outcome::derive(status, lines, "", false),
            Outcome::AppExited(nodeos_manifest::console::AppExit::Code(3))
        );
    }

    #[test]
    fn config_disk_is_removed_once_qemu_has_exited() {
        let dir = tempfile::tempdir().unwrap();
        let mut run_config = RunConfig::default();
        run_config.env.insert("TOKEN".into(), "hunter2".into());
        let disk = ConfigDisk::write(&run_config).unwrap();
        let path = disk.path().to_path_buf();
        let qemu = fake_qemu(dir.path(), "sleep 600");
        let process =
            Process::spawn_holding(Command::new(&qemu), ConsoleSink::None, Box::new(disk)).unwrap();
        assert!(path.is_file(), "the disk lives while QEMU runs");
        process.kill_and_reap().expect("QEMU is reaped");
        assert!(!path.exists(), "the disk outlived QEMU");
        assert!(!path.parent().unwrap().exists());
    }

    #[test]
    fn config_disk_is_passed_by_path_only_and_removed_when_start_fails() {
        let dir = tempfile::tempdir().unwrap();
        let args_file = dir.path().join("args");
        let mut config = fake_config(
            dir.path(),
            &format!(
                "for a in \"$@\"; do echo \"$a\"; done > '{}'; exit 1",
                args_file.display()
            ),
        );
        config
            .run_config
            .env
            .insert("TOKEN".into(), "hunter2".into());
        let err = Vm::start(config).unwrap_err();
        assert!(matches!(err, Error::Exited { .. }), "{err:?}");
        let args = std::fs::read_to_string(&args_file).unwrap();
        assert!(!args.contains("hunter2"), "{args}");
        let drive = args
            .lines()
            .find(|a| a.contains(",id=config,"))
            .unwrap_or_else(|| panic!("no config drive in {args}"));
        let path = drive
            .strip_prefix("file=")
            .and_then(|d| d.split(",format=").next())
            .unwrap();
        assert!(path.ends_with("config.img"), "{drive}");
        assert!(!Path::new(path).exists(), "{path} outlived QEMU");
    }

    #[test]
    fn dropping_a_process_kills_its_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild.pid");
        let qemu = fake_qemu(
            dir.path(),
            &format!("sleep 600 & echo $! > {}; echo up; wait", pidfile.display()),
        );
        let process = Process::spawn(Command::new(&qemu), ConsoleSink::None).unwrap();
        let (state, up) = process.wait_until(Duration::from_secs(10), |s| {
            s.log.lines().any(|l| l == "up")
        });
        assert!(up);
        drop(state);
        let grandchild: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        drop(process);
        // The grandchild was in QEMU's group: it got SIGKILL too (it may
        // linger as a zombie of the reaped shell only until init reaps it).
        let deadline = Instant::now() + Duration::from_secs(5);
        let alive = || {
            std::fs::read_to_string(format!("/proc/{grandchild}/stat")).is_ok_and(|stat| {
                !stat
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
        };
        while alive() {
            assert!(
                Instant::now() < deadline,
                "grandchild {grandchild} survived"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    // Real boots: TCG only, never KVM.

    /// A nodeos kernel: `$NODEOS_TEST_KERNEL`, else the one in the image
    /// `scripts/test` builds first (`target/test-warmup/hello.nodeos`).
    fn kernel() -> PathBuf {
        if let Some(path) = std::env::var_os("NODEOS_TEST_KERNEL") {
            return PathBuf::from(path);
        }
        let warmup = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/test-warmup/hello.nodeos/kernel");
        assert!(
            warmup.is_file(),
            "no kernel to boot: run scripts/test, or set NODEOS_TEST_KERNEL to a nodeos bzImage"
        );
        warmup
    }

    fn tcg_config(rootfs: &Path, cmdline: &str) -> VmConfig {
        let mut config = VmConfig::new(kernel(), rootfs, cmdline);
        config.accel = Accel::Tcg;
        config
    }

    #[test]
    fn kernel_without_root_panics_and_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.img");
        std::fs::write(&empty, b"").unwrap();
        let mut vm = Vm::start(tcg_config(&empty, "console=ttyS0 panic=-1")).unwrap();
        assert_eq!(vm.accel(), ResolvedAccel::Tcg);
        let started = Instant::now();
        let line = vm
            .wait_for_line("Linux version", Duration::from_secs(60))
            .unwrap();
        eprintln!("{:?}: {line}", started.elapsed());
        let panic = vm
            .wait_for_line("Kernel panic", Duration::from_secs(120))
            .unwrap();
        eprintln!("{:?}: {panic}", started.elapsed());
        let outcome = vm
            .wait(Duration::from_secs(30))
            .unwrap()
            .expect("QEMU exits after the panic (-no-reboot)");
        assert!(
            matches!(&outcome, Outcome::KernelPanic { line } if line.contains("VFS")),
            "{outcome:?}"
        );
        // A marker that never comes: QEMU has exited, so this fails fast.
        let err = vm
            .wait_for_line(console::STARTING_APP, Duration::from_secs(60))
            .unwrap_err();
        assert!(matches!(err, Error::Exited { .. }), "{err:?}");
        assert!(vm.console_log().contains("Kernel panic"));
    }

    #[test]
    fn timeout_then_shutdown_of_a_guest_that_ignores_the_power_button() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.img");
        std::fs::write(&empty, b"").unwrap();
        // panic=0: the kernel hangs after the panic instead of rebooting.
        let mut config = tcg_config(&empty, "console=ttyS0 panic=0");
        config.state_dir = Some(dir.path().join("state"));
        let mut vm = Vm::start(config).unwrap();
        assert!(dir.path().join("state/qmp.sock").exists());
        let err = vm
            .wait_for_line("no such marker", Duration::from_millis(300))
            .unwrap_err();
        assert!(
            matches!(&err, Error::Timeout { marker, .. } if marker == "no such marker"),
            "{err:?}"
        );
        vm.wait_for_line("Kernel panic", Duration::from_secs(120))
            .unwrap();
        let started = Instant::now();
        let outcome = vm.shutdown(Duration::from_secs(1)).unwrap();
        eprintln!("shutdown took {:?}", started.elapsed());
        // The panic line wins over the hard stop.
        assert!(
            matches!(outcome, Outcome::KernelPanic { .. }),
            "{outcome:?}"
        );
    }

    #[test]
    fn config_disk_is_the_last_virtio_disk_and_gone_after_exit() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.img");
        std::fs::write(&empty, b"").unwrap();
        let data = dir.path().join("data.img");
        std::fs::write(&data, vec![0u8; 1 << 20]).unwrap();
        let mut config = tcg_config(&empty, "console=ttyS0 panic=-1");
        config.data_disk = Some(data);
        config
            .run_config
            .env
            .insert("TOKEN".into(), "hunter2".into());
        config.run_config.grace = Some(5);
        let mut vm = Vm::start(config).unwrap();
        let disk = vm.config_disk().expect("a config disk").to_path_buf();
        assert!(
            !disk.exists(),
            "the name is removed once QEMU has the disk open"
        );
        let dir_mode = std::fs::metadata(disk.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        // QEMU still reads it: the file, through /proc/PID/fd.
        let held = std::fs::read_dir(format!("/proc/{}/fd", vm.pid()))
            .unwrap()
            .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .find(|target| target.starts_with(disk.parent().unwrap()))
            .expect("QEMU holds the config disk open");
        assert!(
            held.to_string_lossy().ends_with("(deleted)"),
            "{}",
            held.display()
        );
        // Root, data, config: /dev/vda, vdb, vdc (one 4 KiB page = 8 sectors).
        let line = vm
            .wait_for_line("[vdc] 8 512-byte logical blocks", Duration::from_secs(120))
            .unwrap();
        eprintln!("{line}");
        let log = vm.console_log();
        assert!(log.contains("[vdb] 2048 512-byte logical blocks"), "{log}");
        vm.wait(Duration::from_secs(120))
            .unwrap()
            .expect("QEMU exits after the panic (-no-reboot)");
        assert!(
            !disk.parent().unwrap().exists(),
            "the config disk's directory outlived QEMU"
        );
        assert!(!vm.console_log().contains("hunter2"));
    }

    #[test]
    fn kill_of_a_booting_guest_is_hard_stopped_and_drop_leaves_no_qemu() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.img");
        std::fs::write(&empty, b"").unwrap();
        let mut vm = Vm::start(tcg_config(&empty, "console=ttyS0 panic=0")).unwrap();
        let pid = vm.pid();
        vm.kill();
        assert_eq!(vm.wait(Duration::ZERO).unwrap(), Some(Outcome::HardStopped));
        drop(vm);
        assert!(!Path::new(&format!("/proc/{pid}")).exists());

        let vm = Vm::start(tcg_config(&empty, "console=ttyS0 panic=0")).unwrap();
        let pid = vm.pid();
        drop(vm);
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "Drop reaps QEMU"
        );
    }
}
