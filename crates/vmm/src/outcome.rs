//! How a VM run ended, derived from QEMU's exit status and the console log.

use std::fmt;
use std::process::ExitStatus;

use nodeos_manifest::console::{self, AppExit, Record, Source};
use nodeos_manifest::verity;

/// The kernel's panic line starts with this (`Kernel panic - not syncing: …`).
const KERNEL_PANIC: &str = "Kernel panic - not syncing";

/// How the guest ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The app exited (init printed `app exited …`) and the guest powered off.
    AppExited(AppExit),
    /// The guest powered off without an app exit line (e.g. the power button).
    PoweredOff,
    /// Init rebooted the guest on purpose (after an update, or to roll one
    /// back): it printed [`console::REBOOT`], and QEMU, run with
    /// `-no-reboot`, exited by itself. The host boots again, the slot the
    /// update state names.
    Rebooted,
    /// The kernel panicked; `line` is the panic line.
    KernelPanic { line: String },
    /// dm-verity found a block of a read-only layer that does not match the
    /// layer's hash tree, and the kernel stopped
    /// ([`nodeos_manifest::verity::CORRUPTION_PANIC`]): the disk was
    /// changed after it was built. `line` is the kernel's line naming the
    /// block.
    Tampered { line: String },
    /// The runner stopped QEMU (QMP `quit` or SIGKILL); no clean power-off.
    HardStopped,
    /// QEMU itself failed (bad arguments, missing file, crashed).
    QemuFailed {
        status: ExitStatus,
        stderr_tail: String,
    },
}

impl Outcome {
    /// Derives the outcome. `hard_stopped` says the runner killed QEMU;
    /// `lines` is the console log, oldest first, in either log format.
    ///
    /// With a restart policy the app may exit several times in one boot:
    /// the last `app exited` line counts (init prints it after the app's
    /// last output, so the app cannot fake it). Only lines that are no log
    /// record (the kernel's) count as kernel panics, so the app cannot fake
    /// one by printing the kernel's words; likewise only init's own record
    /// of [`console::REBOOT`] makes a reboot, which counts over an app exit
    /// (a trial's app exit is what makes init roll back and reboot).
    pub(crate) fn derive<'a>(
        status: ExitStatus,
        lines: impl IntoIterator<Item = &'a str>,
        stderr_tail: &str,
        hard_stopped: bool,
    ) -> Outcome {
        let mut panic = None;
        let mut corrupted = None;
        let mut app_exit = None;
        let mut rebooted = false;
        for line in lines {
            let kernel = Record::parse(line).is_none();
            if panic.is_none() && line.contains(KERNEL_PANIC) && kernel {
                panic = Some(line.trim().to_owned());
            }
            if corrupted.is_none() && kernel && is_verity_corruption(line) {
                corrupted = Some(line.trim().to_owned());
            }
            rebooted |= is_reboot_marker(line);
            if let Some(exit) = console::parse_app_exited(line) {
                app_exit = Some(exit);
            }
        }
        if let Some(line) = panic {
            if line.contains(verity::CORRUPTION_PANIC) {
                return Outcome::Tampered {
                    line: corrupted.unwrap_or(line),
                };
            }
            return Outcome::KernelPanic { line };
        }
        if hard_stopped {
            return Outcome::HardStopped;
        }
        if !status.success() {
            return Outcome::QemuFailed {
                status,
                stderr_tail: stderr_tail.to_owned(),
            };
        }
        if rebooted {
            return Outcome::Rebooted;
        }
        match app_exit {
            Some(exit) => Outcome::AppExited(exit),
            None => Outcome::PoweredOff,
        }
    }

    /// The app exited with code 0 and the guest powered off cleanly.
    pub fn success(&self) -> bool {
        *self == Outcome::AppExited(AppExit::Code(0)) || *self == Outcome::PoweredOff
    }
}

/// dm-verity's `device-mapper: verity: 254:0: data block 7 is corrupted`.
fn is_verity_corruption(line: &str) -> bool {
    line.contains("verity") && line.contains(" is corrupted")
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::AppExited(exit) => write!(f, "app exited ({exit}), guest powered off"),
            Outcome::PoweredOff => f.write_str("guest powered off"),
            Outcome::Rebooted => f.write_str("guest rebooted"),
            Outcome::KernelPanic { line } => write!(f, "kernel panic: {line}"),
            Outcome::Tampered { line } => write!(f, "tampered layer, the kernel stopped: {line}"),
            Outcome::HardStopped => f.write_str("VM was stopped hard (no clean power-off)"),
            Outcome::QemuFailed {
                status,
                stderr_tail,
            } => {
                write!(f, "QEMU failed ({status})")?;
                match stderr_tail.trim() {
                    "" => Ok(()),
                    tail => write!(f, ": {tail}"),
                }
            }
        }
    }
}

/// Whether `line` is init's [`console::REBOOT`] record, in either log
/// format, or the bare marker (an untimed init line). An app printing the
/// same words makes an app record, which does not count.
fn is_reboot_marker(line: &str) -> bool {
    let line = line.trim_end_matches(['\r', '\n']);
    match Record::parse(line) {
        Some(Record {
            source: Source::Init,
            message,
            ..
        }) => console::REBOOT.strip_prefix(console::PREFIX) == Some(message.as_str()),
        Some(_) => false,
        None => line == console::REBOOT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodeos_manifest::console::{LogFormat, Source, Stream};
    use std::os::unix::process::ExitStatusExt;

    fn exit(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    const BOOT: &[&str] = &[
        "Linux version 6.1.0",
        "Run /sbin/init as init process",
        console::STARTING_APP,
    ];

    fn derive(status: ExitStatus, extra: &[&str], hard: bool) -> Outcome {
        Outcome::derive(status, BOOT.iter().chain(extra).copied(), "", hard)
    }

    #[test]
    fn app_exit_line_then_power_off_is_app_exited() {
        let lines = [
            "nodeos-init: app exited code=3",
            console::POWER_OFF,
            "reboot: Power down",
        ];
        assert_eq!(
            derive(exit(0), &lines, false),
            Outcome::AppExited(AppExit::Code(3))
        );
        let lines = ["nodeos-init: app exited signal=15", console::POWER_OFF];
        assert_eq!(
            derive(exit(0), &lines, false),
            Outcome::AppExited(AppExit::Signal(15))
        );
        assert!(derive(exit(0), &["nodeos-init: app exited code=0"], false).success());
    }

    #[test]
    fn power_off_without_app_exit_is_powered_off() {
        let lines = [console::SHUTDOWN_REQUESTED, console::POWER_OFF];
        assert_eq!(derive(exit(0), &lines, false), Outcome::PoweredOff);
    }

    #[test]
    fn a_verity_panic_is_a_tampered_layer_naming_the_block() {
        let block = "[    1.9] device-mapper: verity: 254:0: data block 0 is corrupted";
        let panic = "[    1.9] Kernel panic - not syncing: dm-verity device corrupted";
        assert_eq!(
            derive(exit(0), &[block, panic], false),
            Outcome::Tampered {
                line: block.trim().into()
            }
        );
        // Without the block's line, the panic line itself.
        assert_eq!(
            derive(exit(0), &[panic], false),
            Outcome::Tampered {
                line: panic.trim().into()
            }
        );
        // The app printing dm-verity's words is a log record, not the kernel.
        let lines = [
            app(LogFormat::Text, 1, block),
            app(LogFormat::Text, 1, panic),
            init(LogFormat::Text, 2, console::POWER_OFF),
        ];
        assert_eq!(derive_lines(exit(0), &lines, false), Outcome::PoweredOff);
    }

    #[test]
    fn kernel_panic_wins_over_everything() {
        let line = "[    1.2] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)";
        let expected = Outcome::KernelPanic {
            line: line.trim().into(),
        };
        assert_eq!(
            derive(
                exit(0),
                &[line, "[    1.3] ---[ end Kernel panic - not syncing ]---"],
                false
            ),
            expected
        );
        // init died after the app exited: still a panic.
        assert_eq!(
            derive(exit(0), &["nodeos-init: app exited code=0", line], true),
            expected
        );
    }

    #[test]
    fn runner_kill_is_hard_stopped() {
        assert_eq!(
            derive(ExitStatus::from_raw(9), &[], true),
            Outcome::HardStopped
        );
        assert_eq!(
            derive(exit(0), &["nodeos-init: app exited code=0"], true),
            Outcome::HardStopped
        );
    }

    /// An init record in `format`, `ms` milliseconds into the boot.
    fn init(format: LogFormat, ms: u64, marker: &str) -> String {
        Record {
            unix_ms: 1_795_705_201_000 + ms,
            source: Source::Init,
            message: marker.strip_prefix(console::PREFIX).unwrap().to_owned(),
        }
        .format(format)
    }

    fn app(format: LogFormat, generation: u32, message: &str) -> String {
        Record {
            unix_ms: 1_795_705_201_000,
            source: Source::App {
                generation,
                stream: Stream::Stdout,
            },
            message: message.to_owned(),
        }
        .format(format)
    }

    fn derive_lines(status: ExitStatus, lines: &[String], hard: bool) -> Outcome {
        Outcome::derive(status, lines.iter().map(String::as_str), "", hard)
    }

    #[test]
    fn app_exit_is_read_from_timestamped_text_and_json_records() {
        for format in [LogFormat::Text, LogFormat::Json] {
            let lines = [
                "Linux version 6.1.0".to_owned(),
                init(format, 1, console::STARTING_APP),
                app(format, 1, "listening on 3000"),
                init(format, 2, &console::app_exited_line(AppExit::Code(4))),
                init(format, 3, console::POWER_OFF),
                "reboot: Power down".to_owned(),
            ];
            assert_eq!(
                derive_lines(exit(0), &lines, false),
                Outcome::AppExited(AppExit::Code(4)),
                "{format:?}"
            );
            let lines = [
                init(format, 1, console::SHUTDOWN_REQUESTED),
                init(format, 2, console::POWER_OFF),
            ];
            assert_eq!(
                derive_lines(exit(0), &lines, false),
                Outcome::PoweredOff,
                "{format:?}"
            );
        }
    }

    #[test]
    fn the_last_app_exit_of_a_restarting_app_decides() {
        for format in [LogFormat::Text, LogFormat::Json] {
            let exited = |ms, e| init(format, ms, &console::app_exited_line(e));
            let lines = [
                init(format, 1, console::STARTING_APP),
                exited(2, AppExit::Code(1)),
                init(format, 3, console::STARTING_APP),
                exited(4, AppExit::Signal(9)),
                init(format, 5, console::STARTING_APP),
                exited(6, AppExit::Code(0)),
                init(format, 7, console::POWER_OFF),
            ];
            assert_eq!(
                derive_lines(exit(0), &lines, false),
                Outcome::AppExited(AppExit::Code(0)),
                "{format:?}"
            );
            // Restarted after a success, then failed for good.
            let lines = [
                exited(2, AppExit::Code(0)),
                init(format, 3, console::STARTING_APP),
                exited(4, AppExit::Code(3)),
                init(format, 7, console::POWER_OFF),
            ];
            assert_eq!(
                derive_lines(exit(0), &lines, false),
                Outcome::AppExited(AppExit::Code(3)),
                "{format:?}"
            );
        }
    }

    #[test]
    fn app_output_cannot_fake_a_kernel_panic() {
        for format in [LogFormat::Text, LogFormat::Json] {
            let lines = [
                init(format, 1, console::STARTING_APP),
                app(format, 1, "Kernel panic - not syncing: just kidding"),
                app(format, 1, "nodeos-init: app exited code=5"),
                init(format, 2, &console::app_exited_line(AppExit::Code(0))),
                init(format, 3, console::POWER_OFF),
            ];
            assert_eq!(
                derive_lines(exit(0), &lines, false),
                Outcome::AppExited(AppExit::Code(0)),
                "{format:?}"
            );
        }
    }

    #[test]
    fn app_exit_after_output_without_a_newline_is_found() {
        let lines = [
            console::STARTING_APP.to_owned(),
            format!(
                "exiting with 3{}",
                console::app_exited_line(AppExit::Code(3))
            ),
            console::POWER_OFF.to_owned(),
        ];
        assert_eq!(
            derive_lines(exit(0), &lines, false),
            Outcome::AppExited(AppExit::Code(3))
        );
    }

    #[test]
    fn qemu_error_exit_is_qemu_failed_with_stderr() {
        let tail =
            "qemu-system-x86_64: could not set up host forwarding rule 'tcp:127.0.0.1:8080-:3000'";
        let outcome = Outcome::derive(exit(1), [] as [&str; 0], tail, false);
        assert_eq!(
            outcome,
            Outcome::QemuFailed {
                status: exit(1),
                stderr_tail: tail.into()
            }
        );
        assert!(
            outcome.to_string().contains("host forwarding rule"),
            "{outcome}"
        );
        assert!(!outcome.success());
    }

    #[test]
    fn reboot_marker_then_qemu_exit_is_rebooted() {
        for format in [LogFormat::Text, LogFormat::Json] {
            // A trial failed: the app crashed, init rolled back and rebooted.
            let lines = [
                init(format, 1, console::STARTING_APP),
                init(format, 2, &console::app_exited_line(AppExit::Code(1))),
                init(format, 3, console::UPDATE_ROLLED_BACK),
                init(format, 4, console::REBOOT),
                "reboot: Restarting system".to_owned(),
            ];
            assert_eq!(
                derive_lines(exit(0), &lines, false),
                Outcome::Rebooted,
                "{format:?}"
            );
            let outcome = derive_lines(exit(0), &lines[3..], false);
            assert_eq!(outcome, Outcome::Rebooted, "{format:?}");
            assert_eq!(outcome.to_string(), "guest rebooted");
            assert!(!outcome.success());
        }
        assert_eq!(
            derive(exit(0), &[console::REBOOT], false),
            Outcome::Rebooted
        );
        assert_eq!(
            derive(exit(0), &[&format!("{}\r", console::REBOOT)], false),
            Outcome::Rebooted
        );
    }

    #[test]
    fn a_reboot_needs_qemu_to_exit_by_itself_without_a_panic() {
        let panic = "[    3.1] Kernel panic - not syncing: Attempted to kill init!";
        assert!(matches!(
            derive(exit(0), &[console::REBOOT, panic], false),
            Outcome::KernelPanic { .. }
        ));
        assert_eq!(
            derive(exit(0), &[console::REBOOT], true),
            Outcome::HardStopped
        );
        assert!(matches!(
            derive(exit(1), &[console::REBOOT], false),
            Outcome::QemuFailed { .. }
        ));
    }

    #[test]
    fn app_output_cannot_fake_a_reboot() {
        for format in [LogFormat::Text, LogFormat::Json] {
            let lines = [
                init(format, 1, console::STARTING_APP),
                app(format, 1, console::REBOOT),
                app(format, 1, "rebooting"),
                init(format, 2, &console::app_exited_line(AppExit::Code(0))),
                init(format, 3, console::POWER_OFF),
            ];
            assert_eq!(
                derive_lines(exit(0), &lines, false),
                Outcome::AppExited(AppExit::Code(0)),
                "{format:?}"
            );
        }
        // Nor can text around the marker on one line.
        let line = format!("say {}", console::REBOOT);
        assert_eq!(derive(exit(0), &[&line], false), Outcome::PoweredOff);
    }
}
