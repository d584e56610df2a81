//! The one error type of the VM runner.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Everything that can go wrong while starting or controlling a VM.
///
/// Messages say what to do; the `#[source]` (if any) is not repeated in them.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "`{name}` was not found in PATH: install QEMU (Debian/Ubuntu: `apt-get install qemu-system-x86`) or give the path to the binary"
    )]
    QemuNotFound { name: String },

    #[error(
        "invalid port forward `{value}`: {reason} (expected HOST:GUEST or ADDR:HOST:GUEST, e.g. 8080:3000)"
    )]
    InvalidPortForward { value: String, reason: String },

    #[error("invalid accelerator `{0}`: expected auto, kvm or tcg")]
    InvalidAccel(String),

    #[error("invalid machine type `{0}`: expected pc, q35 or microvm")]
    InvalidMachine(String),

    #[error(
        "host port {addr}:{port} is already in use: stop what listens there or forward another host port"
    )]
    PortInUse { addr: IpAddr, port: u16 },

    #[error("cannot listen on host port {addr}:{port} for forwarding: use another address or port")]
    PortUnavailable {
        addr: IpAddr,
        port: u16,
        #[source]
        source: std::io::Error,
    },

    #[error("could not start QEMU (`{}`)", qemu.display())]
    Spawn {
        qemu: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("QMP: {0}")]
    Qmp(String),

    #[error("lost the QMP connection to QEMU")]
    QmpIo(#[source] std::io::Error),

    #[error(
        "timed out after {waited:?} waiting for the console line `{marker}`: the guest is stuck or slow (see the console log)"
    )]
    Timeout { marker: String, waited: Duration },

    #[error(
        "QEMU exited ({}) while waiting for {waiting_for}{}",
        describe_status(status),
        stderr_suffix(stderr_tail)
    )]
    Exited {
        waiting_for: String,
        status: Option<ExitStatus>,
        stderr_tail: String,
    },

    #[error(
        "KVM was asked for but does not work on this host ({reason}): use `--accel tcg` or `--accel auto`"
    )]
    KvmUnavailable { reason: String },

    /// The [`nodeos_manifest::RunConfig`] of [`crate::VmConfig::run_config`]
    /// is not valid or too large. The message names keys, never values.
    #[error("cannot pass the run config to the guest")]
    RunConfig(#[source] nodeos_manifest::settings::RunConfigError),

    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}

pub(crate) fn describe_status(status: &Option<ExitStatus>) -> String {
    match status {
        Some(s) => s.to_string(),
        None => "status not known yet".into(),
    }
}

fn stderr_suffix(tail: &str) -> String {
    let tail = tail.trim();
    if tail.is_empty() {
        String::new()
    } else {
        format!("; QEMU said:\n{tail}")
    }
}
