//! Output for people, on stderr: cargo-style status lines, warnings and
//! progress bars (progress only when stderr is a terminal).

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use nodeos_image::{Progress, Reporter};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

/// Prints status lines and progress on stderr.
pub struct Ui {
    color: bool,
    quiet: bool,
    verbose: bool,
    progress: bool,
}

impl Ui {
    /// `quiet` hides everything but warnings and errors; `verbose` adds
    /// details (what was found, chosen or run). They exclude each other.
    pub fn new(color: ColorChoice, quiet: bool, verbose: bool) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let color = match color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => terminal && std::env::var_os("NO_COLOR").is_none(),
        };
        Ui {
            color,
            quiet,
            verbose: verbose && !quiet,
            progress: terminal && !quiet,
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    /// `error: <message>` (the one place errors are printed).
    pub fn error(&self, message: &str) {
        let _ = writeln!(
            std::io::stderr(),
            "{} {message}",
            self.paint("1;31", "error:")
        );
    }

    /// Information for people; hidden by `--quiet`.
    pub fn note(&self, message: &str) {
        if self.quiet {
            return;
        }
        let _ = writeln!(
            std::io::stderr(),
            "{} {message}",
            self.paint("1;36", "note:")
        );
    }
}

impl Reporter for Ui {
    fn status(&self, verb: &str, message: &str) {
        if !self.quiet {
            let verb = self.paint("1;32", &format!("{verb:>12}"));
            let _ = writeln!(std::io::stderr(), "{verb} {message}");
        }
    }

    fn detail(&self, message: &str) {
        if self.verbose {
            let _ = writeln!(
                std::io::stderr(),
                "{} {message}",
                self.paint("2", &format!("{:>12}", "·"))
            );
        }
    }

    fn warn(&self, message: &str) {
        let _ = writeln!(
            std::io::stderr(),
            "{} {message}",
            self.paint("1;33", "warning:")
        );
    }

    fn spinner(&self, label: &str) -> Box<dyn Progress> {
        if !self.progress {
            return Box::new(nodeos_image::Silent);
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{prefix:>12.cyan.bold} {spinner} {msg} ({elapsed})")
                .expect("valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        bar.set_prefix("Progress");
        bar.set_message(label.to_owned());
        Box::new(Bar(bar))
    }

    fn progress(&self, label: &str, total: Option<u64>) -> Box<dyn Progress> {
        if !self.progress {
            return Box::new(nodeos_image::Silent);
        }
        let bar = match total {
            Some(total) => {
                let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix:>12.cyan.bold} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                bar
            }
            None => {
                let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix:>12.cyan.bold} {spinner} {pos} {msg} ({elapsed})",
                    )
                    .expect("valid template"),
                );
                bar.enable_steady_tick(Duration::from_millis(200));
                bar
            }
        };
        bar.set_prefix("Progress");
        bar.set_message(label.to_owned());
        Box::new(Bar(bar))
    }
}

struct Bar(ProgressBar);

impl Progress for Bar {
    fn inc(&self, bytes: u64) {
        self.0.inc(bytes);
    }

    fn finish(&self) {
        self.0.finish_and_clear();
    }
}
