//! The exit codes of `nodeos`, one per kind of failure a script may want to
//! tell apart. Documented in docs/cli.md; never reuse or renumber a code.

use nodeos_image::BuildError;
use nodeos_image::bundle::ImageError;
use nodeos_image::kernel::KernelError;
use nodeos_image::keys::KeyError;
use nodeos_image::layers::LayerError;
use nodeos_image::node::NodeError;
use nodeos_image::rootfs::RootfsError;
use nodeos_vmm::data::DataError;

use crate::agent_client::AgentError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Everything worked; for `run`, the guest shut down cleanly.
    Success = 0,
    /// An unexpected failure (I/O error, full disk, a bug).
    Failure = 1,
    /// Bad command-line usage (clap's own code).
    Usage = 2,
    /// The npm project is unusable: no/invalid package.json, missing entry
    /// file, dependency not installed.
    Project = 3,
    /// `engines.node` is not a valid range or matches no published Node.js.
    NodeVersion = 4,
    /// The npm registry could not be reached and nothing usable is cached.
    Registry = 5,
    /// A download did not match the registry's integrity checksum.
    Integrity = 6,
    /// The kernel given cannot be read or is not a kernel, or building
    /// nodeos's kernel failed.
    Kernel = 7,
    /// The image directory is missing, incomplete or corrupt.
    Image = 8,
    /// A host port asked for with `-p` is already in use.
    PortInUse = 9,
    /// The VM failed: QEMU could not start, the guest kernel panicked, or the
    /// guest had to be hard-stopped.
    Vm = 10,
    /// The app inside the guest exited with a failure status on its own.
    AppFailed = 11,
    /// A host tool nodeos needs is not installed (the message names it).
    ToolMissing = 12,
    /// `run`: the data volume cannot be used: it failed its check and the
    /// guest did not start the app, it is not an ext4 volume, another VM
    /// uses it, it is larger than asked for (no shrinking), or creating or
    /// growing it failed.
    Data = 13,
    /// A key problem found before anything is sent: `keygen`'s key file or
    /// its `.pub` already exists (never overwritten); a key file is missing
    /// or not an ed25519 key (`build --key`, `deploy`, `status`); `deploy`:
    /// the image does not trust the key it would be signed with.
    Key = 14,
    /// `deploy`, `status`: the appliance refused the request or the update
    /// (bad signature, another key, not newer than what it has, busy, a
    /// hash mismatch, …), or it is another appliance than the image's.
    Refused = 15,
    /// `deploy`: the new version failed its trial and the appliance rolled
    /// back to the old one (the reason and the new version's log tail are
    /// printed).
    RolledBack = 16,
    /// `deploy`, `status`: the appliance cannot be reached (or what answers
    /// is not an update agent), or `deploy` saw no verdict within
    /// `--timeout`.
    Unreachable = 17,
    /// `export`, `profile`, `keygen`: the output path cannot be written
    /// (its directory is missing or read-only, or a directory is in the
    /// way, or `profile` cannot write what the appliance sends); nothing
    /// is left behind. `logs`: standard output cannot be written.
    Output = 18,
    /// `run` was interrupted twice and the VM was killed; `export` or
    /// `profile` was interrupted (Ctrl-C, SIGTERM), leaving nothing
    /// half-written.
    Interrupted = 130,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// A failure that already knows its exit code; raised by the commands for
/// conditions they detect themselves.
#[derive(Debug)]
pub struct Failed {
    pub exit: Exit,
    pub message: String,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failed {}

pub fn fail(exit: Exit, message: impl Into<String>) -> anyhow::Error {
    Failed {
        exit,
        message: message.into(),
    }
    .into()
}

/// Finds the exit code for an error by looking through its causes.
pub fn classify(err: &anyhow::Error) -> Exit {
    for cause in err.chain() {
        if let Some(f) = cause.downcast_ref::<Failed>() {
            return f.exit;
        }
        if let Some(e) = cause.downcast_ref::<BuildError>() {
            return classify_build(e);
        }
        if let Some(e) = cause.downcast_ref::<nodeos_vmm::Error>() {
            return classify_vmm(e);
        }
        if let Some(e) = cause.downcast_ref::<KeyError>() {
            return match e {
                KeyError::Exists { .. }
                | KeyError::NotAKey { .. }
                | KeyError::NotAPublicKey { .. }
                | KeyError::Missing { .. } => Exit::Key,
                // `--key DIR` is no key file either.
                KeyError::Io { source, .. } if names_a_directory(source) => Exit::Key,
                KeyError::Io { .. } | KeyError::Random(_) => Exit::Failure,
            };
        }
        if let Some(e) = cause.downcast_ref::<AgentError>() {
            return match e {
                AgentError::Unauthorized { .. } | AgentError::Refused { .. } => Exit::Refused,
                AgentError::Unreachable { .. }
                | AgentError::Broken { .. }
                | AgentError::NotAnAgent { .. } => Exit::Unreachable,
                AgentError::Bundle { .. } => Exit::Image,
                AgentError::Output { .. } => Exit::Output,
                AgentError::Key(_) => Exit::Failure,
            };
        }
        if cause.downcast_ref::<ImageError>().is_some() {
            return Exit::Image;
        }
        if let Some(e) = cause.downcast_ref::<nodeos_vmm::SystemDiskError>() {
            return match e {
                nodeos_vmm::SystemDiskError::Io { source, .. } if !names_a_directory(source) => {
                    Exit::Failure
                }
                _ => Exit::Image,
            };
        }
        if let Some(e) = cause.downcast_ref::<DataError>() {
            return match e {
                DataError::ToolMissing { .. } => Exit::ToolMissing,
                DataError::Io { source, .. } if !names_a_directory(source) => Exit::Failure,
                _ => Exit::Data,
            };
        }
    }
    Exit::Failure
}

/// Whether an I/O error says that a path the user gave (`--system`,
/// `--data`, `--key`) is a directory, or runs through a file: bad input,
/// not an unexpected failure.
fn names_a_directory(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        std::io::ErrorKind::IsADirectory | std::io::ErrorKind::NotADirectory
    )
}

fn classify_build(err: &BuildError) -> Exit {
    match err {
        BuildError::Project(_) => Exit::Project,
        // A library an addon needs is not on the host: the project cannot be packed.
        BuildError::Elf(_) => Exit::Project,
        BuildError::Node(e) => match e {
            NodeError::InvalidRange { .. } | NodeError::NoMatchingVersion { .. } => {
                Exit::NodeVersion
            }
            NodeError::Integrity { .. } | NodeError::UnsupportedIntegrity { .. } => Exit::Integrity,
            NodeError::Cache(_) | NodeError::Io { .. } => Exit::Failure,
            // Everything else is about reaching or using the registry.
            _ => Exit::Registry,
        },
        BuildError::Kernel(e) => match e {
            KernelError::ToolsMissing { .. } | KernelError::SourceMissing { .. } => {
                Exit::ToolMissing
            }
            // A `--kernel` that cannot be read (missing, a directory) is no
            // kernel either.
            KernelError::NotAKernel { .. }
            | KernelError::BuildFailed { .. }
            | KernelError::Read { .. } => Exit::Kernel,
            KernelError::Spawn { .. } | KernelError::Cache { .. } => Exit::Failure,
        },
        BuildError::Rootfs(RootfsError::ToolMissing { .. })
        | BuildError::Layer(LayerError::Rootfs(RootfsError::ToolMissing { .. })) => {
            Exit::ToolMissing
        }
        BuildError::InitMissing { .. } | BuildError::InitNotStatic { .. } => Exit::ToolMissing,
        BuildError::Rootfs(_)
        | BuildError::Layer(_)
        | BuildError::Cache(_)
        | BuildError::Output { .. } => Exit::Failure,
    }
}

fn classify_vmm(err: &nodeos_vmm::Error) -> Exit {
    use nodeos_vmm::Error;
    match err {
        Error::PortInUse { .. } => Exit::PortInUse,
        Error::QemuNotFound { .. } => Exit::ToolMissing,
        _ => Exit::Vm,
    }
}
