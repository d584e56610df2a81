//! `nodeos`: turn an npm project into its own operating system.
//!
//! The binary is thin: it parses arguments, draws output and maps errors to
//! exit codes ([`exit::Exit`]); the work is done by `nodeos-image` (build,
//! keys, update bundles) and `nodeos-vmm` (run). `deploy`, `status`, `logs`
//! and `profile` talk to a running appliance's agent ([`agent_client`]).

mod agent_client;
mod build;
mod deploy;
mod duration;
mod envfile;
mod exit;
mod export;
mod init;
mod keygen;
mod logs;
mod nodedir;
mod profile;
mod run;
mod status;
mod system;
mod token;
mod ui;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::exit::Exit;
use crate::ui::{ColorChoice, Ui};

#[derive(Debug, Parser)]
#[command(name = "nodeos", version, about = "Turn an npm project into a bootable VM appliance", long_about = None)]
struct Cli {
    /// Print only errors and warnings.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Also print details: files and libraries found, cache hits, the QEMU
    /// command line.
    #[arg(short, long, global = true)]
    verbose: bool,
    /// When to color output.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto, value_name = "WHEN")]
    color: ColorChoice,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Set up an npm project for nodeos: npm scripts, a "nodeos" key,
    /// .gitignore lines
    Init(init::InitArgs),
    /// Build the project into an image directory (dist/<name>.nodeos/)
    Build(build::BuildArgs),
    /// Boot an image directory under QEMU
    Run(run::RunArgs),
    /// Write a new ed25519 key pair for signing updates
    Keygen(keygen::KeygenArgs),
    /// Build, sign and upload a new version to a running appliance, and wait
    /// until it is committed or rolled back
    Deploy(deploy::DeployArgs),
    /// Show what a running appliance runs, what it uses and how its last
    /// update went
    Status(status::StatusArgs),
    /// Print a running appliance's log lines, and with -f the new ones
    Logs(logs::LogsArgs),
    /// Take a CPU profile or heap snapshot of a running appliance's app
    Profile(profile::ProfileArgs),
    /// Sign a read token for Prometheus or the status page (offline)
    Token(token::TokenArgs),
    /// Write an image as a UEFI disk (raw, qcow2, vmdk, vhdx), a GCE image,
    /// a Firecracker directory or a KubeVirt containerDisk
    Export(export::ExportArgs),
    /// Print a directory with the guest Node.js's headers, for building
    /// native addons: npm_config_nodedir=$(npx nodeos nodedir) npm ci
    Nodedir(nodedir::NodedirArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                Exit::Usage.code()
            } else {
                0
            });
        }
    };
    let ui = Ui::new(cli.color, cli.quiet, cli.verbose);
    let result = match cli.command {
        Command::Init(args) => init::run(args, &ui),
        Command::Build(args) => build::run(args, &ui),
        Command::Run(args) => run::run(args, &ui),
        Command::Keygen(args) => keygen::run(args, &ui),
        Command::Deploy(args) => deploy::run(args, &ui),
        Command::Status(args) => status::run(args, &ui),
        Command::Logs(args) => logs::run(args, &ui),
        Command::Profile(args) => profile::run(args, &ui),
        Command::Token(args) => token::run(args, &ui),
        Command::Nodedir(args) => nodedir::run(args, &ui),
        Command::Export(args) => export::run(args, &ui),
    };
    match result {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(err) => {
            ui.error(&format_chain(&err));
            ExitCode::from(exit::classify(&err).code())
        }
    }
}

/// `outer: inner: innermost`, each cause once.
pub(crate) fn format_chain(err: &anyhow::Error) -> String {
    let mut text = String::new();
    let mut last = String::new();
    for cause in err.chain() {
        let message = cause.to_string();
        // `#[error(transparent)]` wrappers repeat their source's message,
        // and some errors end with it (`{path}: {source}`).
        if last.ends_with(&message) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&message);
        last = message;
    }
    text
}

/// The project directory a command works on: the argument or the current one.
fn project_dir(arg: Option<PathBuf>) -> PathBuf {
    arg.unwrap_or_else(|| PathBuf::from("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{path}: {source}")]
    struct EndsWithItsSource {
        path: &'static str,
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn each_cause_is_printed_once() {
        let io = || std::io::Error::from(std::io::ErrorKind::IsADirectory);
        let err = anyhow::Error::new(EndsWithItsSource {
            path: "/tmp",
            source: io(),
        })
        .context("--key");
        assert_eq!(format_chain(&err), format!("--key: /tmp: {}", io()));
        let err = anyhow::Error::new(io()).context("cannot read kernel x");
        assert_eq!(
            format_chain(&err),
            format!("cannot read kernel x: {}", io())
        );
    }
}
