//! The host tools an export runs, the Debian packages that provide them,
//! and the staging of outputs (a temporary directory beside the output,
//! renamed into place when complete).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{ExportError, io_error};

/// A host tool (or file) an export needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Mformat,
    Mmd,
    Mcopy,
    SystemdBoot,
    MkfsExt4,
    QemuImg,
    Xz,
    Tar,
}

/// systemd-boot's EFI binary, as Debian's `systemd-boot-efi` installs it.
pub const SYSTEMD_BOOT_EFI: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Tool::Mformat => "mformat",
            Tool::Mmd => "mmd",
            Tool::Mcopy => "mcopy",
            Tool::SystemdBoot => "systemd-bootx64.efi",
            Tool::MkfsExt4 => "mkfs.ext4",
            Tool::QemuImg => "qemu-img",
            Tool::Xz => "xz",
            Tool::Tar => "tar",
        }
    }

    /// The Debian package that provides it.
    pub fn package(self) -> &'static str {
        match self {
            Tool::Mformat | Tool::Mmd | Tool::Mcopy => "mtools",
            Tool::SystemdBoot => "systemd-boot-efi",
            Tool::MkfsExt4 => "e2fsprogs",
            Tool::QemuImg => "qemu-utils",
            Tool::Xz => "xz-utils",
            Tool::Tar => "tar",
        }
    }

    /// Where it is, if installed: a command in `PATH` (or `/usr/sbin`,
    /// `/sbin`), or systemd-boot's file.
    pub fn find(self) -> Option<PathBuf> {
        if self == Tool::SystemdBoot {
            let path = PathBuf::from(SYSTEMD_BOOT_EFI);
            return path.is_file().then_some(path);
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
            .map(|dir| dir.join(self.name()))
            .find(|candidate| is_executable(candidate))
    }

    /// A command running this tool; [`check`] has found it.
    pub fn command(self) -> Command {
        Command::new(self.find().unwrap_or_else(|| PathBuf::from(self.name())))
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Fails, naming every missing tool and its package, unless all of `tools`
/// are installed.
pub fn check(tools: &[Tool]) -> Result<(), ExportError> {
    let mut missing: Vec<Tool> = tools
        .iter()
        .copied()
        .filter(|t| t.find().is_none())
        .collect();
    missing.dedup();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ExportError::ToolsMissing(missing))
    }
}

/// "`mformat` (Debian package mtools) is not installed; …".
pub(crate) fn missing_message(missing: &[Tool]) -> String {
    let names: Vec<String> = missing
        .iter()
        .map(|t| format!("`{}` (Debian package {})", t.name(), t.package()))
        .collect();
    let mut packages: Vec<&str> = missing.iter().map(|t| t.package()).collect();
    packages.sort_unstable();
    packages.dedup();
    format!(
        "{} {} not installed; install {} (`apt-get install {}`)",
        names.join(", "),
        if missing.len() == 1 { "is" } else { "are" },
        if packages.len() == 1 { "it" } else { "them" },
        packages.join(" ")
    )
}

/// Runs `command` (named `tool` in errors); fails with the tail of its
/// output unless it exits 0.
pub(crate) fn run(tool: &'static str, mut command: Command) -> Result<(), ExportError> {
    let output = command.output().map_err(|e| ExportError::ToolFailed {
        tool,
        status: "did not start".into(),
        output: e.to_string(),
    })?;
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    if text.is_empty() {
        text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    }
    let tail: Vec<&str> = text.lines().rev().take(5).collect();
    Err(ExportError::ToolFailed {
        tool,
        status: output.status.to_string(),
        output: tail.into_iter().rev().collect::<Vec<_>>().join(" / "),
    })
}

/// A temporary directory beside `out`, removed when dropped. Made first,
/// so that an output path that cannot be written fails before any work.
pub(crate) fn staging_dir(out: &Path) -> Result<tempfile::TempDir, ExportError> {
    let dir = parent(out);
    let name = out
        .file_name()
        .map_or_else(|| "export".into(), |n| n.to_string_lossy().into_owned());
    tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempdir_in(dir)
        .map_err(|source| ExportError::Output {
            path: out.to_owned(),
            source,
        })
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Fails unless `out` is free for an export: missing, or what an export
/// of the same kind would replace (a file for a file format; for a
/// directory format, a directory holding only files named `expected`
/// accepts).
pub(crate) fn check_out(
    out: &Path,
    expected: Option<&dyn Fn(&str) -> bool>,
) -> Result<(), ExportError> {
    let taken = |reason: &str| ExportError::OutputTaken {
        path: out.to_owned(),
        reason: reason.to_owned(),
    };
    let Ok(meta) = std::fs::symlink_metadata(out) else {
        return Ok(());
    };
    match expected {
        None if meta.is_file() => Ok(()),
        None => Err(taken("it is not a file")),
        Some(_) if !meta.is_dir() => Err(taken("it is not a directory")),
        Some(ours) => {
            let entries = std::fs::read_dir(out).map_err(|source| ExportError::Output {
                path: out.to_owned(),
                source,
            })?;
            for entry in entries {
                let entry = entry.map_err(|source| ExportError::Output {
                    path: out.to_owned(),
                    source,
                })?;
                let name = entry.file_name();
                let is_ours =
                    name.to_str().is_some_and(ours) && entry.file_type().is_ok_and(|t| t.is_file());
                if !is_ours {
                    return Err(taken(&format!(
                        "it holds {:?}, which no export writes",
                        name.to_string_lossy()
                    )));
                }
            }
            Ok(())
        }
    }
}

/// Moves the finished `made` (a file or directory in the staging directory
/// `staging`) to `out`, replacing what was there ([`check_out`] allowed it).
pub(crate) fn replace(made: &Path, staging: &Path, out: &Path) -> Result<(), ExportError> {
    let output_error = |source| ExportError::Output {
        path: out.to_owned(),
        source,
    };
    let sync = |path: &Path| std::fs::File::open(path).and_then(|f| f.sync_all());
    if made.is_dir() {
        for entry in std::fs::read_dir(made).map_err(output_error)? {
            let entry = entry.map_err(output_error)?;
            sync(&entry.path()).map_err(output_error)?;
        }
    } else {
        sync(made).map_err(output_error)?;
    }
    if out.is_dir() {
        // Out of the way first, so that the new one appears whole; put
        // back if it cannot.
        let old = staging.join("old");
        std::fs::rename(out, &old).map_err(output_error)?;
        if let Err(e) = std::fs::rename(made, out) {
            let _ = std::fs::rename(&old, out);
            return Err(output_error(e));
        }
    } else {
        std::fs::rename(made, out).map_err(output_error)?;
    }
    let _ = sync(parent(out));
    Ok(())
}

/// Every file at `out` (itself, or the files of a directory) with its
/// size; each made readable by all, as a build's outputs are.
pub(crate) fn list_files(out: &Path) -> Result<Vec<(PathBuf, u64)>, ExportError> {
    use std::os::unix::fs::PermissionsExt;
    let mut paths = if out.is_dir() {
        std::fs::read_dir(out)
            .map_err(io_error(format!("cannot list `{}`", out.display())))?
            .filter_map(|e| Some(e.ok()?.path()))
            .collect()
    } else {
        vec![out.to_owned()]
    };
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let what = || format!("cannot read `{}`", path.display());
            let meta = std::fs::metadata(&path).map_err(io_error(what()))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
                .map_err(io_error(what()))?;
            Ok((path, meta.len()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_missing_tools_message_names_their_packages_once() {
        let text = missing_message(&[Tool::Mformat, Tool::Mcopy, Tool::QemuImg]);
        assert_eq!(
            text,
            "`mformat` (Debian package mtools), `mcopy` (Debian package mtools), `qemu-img` (Debian package qemu-utils) are not installed; install them (`apt-get install mtools qemu-utils`)"
        );
        assert!(
            missing_message(&[Tool::SystemdBoot])
                .ends_with("install it (`apt-get install systemd-boot-efi`)")
        );
    }

    #[test]
    fn an_output_beside_which_nothing_can_be_written_fails_first() {
        let err = staging_dir(Path::new("/proc/nodeos-export-test/out.raw")).unwrap_err();
        assert!(matches!(err, ExportError::Output { .. }), "{err}");
    }

    #[test]
    fn a_directory_output_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("hello.firecracker");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("disk.raw"), "old").unwrap();
        let ours = |name: &str| name == "disk.raw";
        check_out(&out, Some(&ours)).unwrap();
        std::fs::write(out.join("notes.txt"), "mine").unwrap();
        let err = check_out(&out, Some(&ours)).unwrap_err();
        assert!(err.to_string().contains("notes.txt"), "{err}");
        assert!(
            check_out(&out, None).is_err(),
            "a directory is no file output"
        );
        std::fs::remove_file(out.join("notes.txt")).unwrap();
        let staging = staging_dir(&out).unwrap();
        let made = staging.path().join("out");
        std::fs::create_dir(&made).unwrap();
        std::fs::write(made.join("vm_config.json"), "{}").unwrap();
        replace(&made, staging.path(), &out).unwrap();
        let names: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["vm_config.json"]);
        drop(staging);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "nothing else is left"
        );
    }
}
