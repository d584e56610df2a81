//! The root filesystem: a staging tree on the host, packed into a
//! read-only compressed image by `mkfs.erofs` or `mksquashfs`.
//!
//! The trade-off between the two is exposed as the build profile (see
//! docs/benchmarks.md for the measurements behind the defaults): `dev` packs
//! EROFS with lz4hc, which decompresses fastest and boots quickest; `release`
//! packs squashfs with xz, which is smallest. Every file is owned by root and
//! carries a fixed timestamp, so the same tree gives the same image.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use nodeos_manifest::Profile;
use nodeos_manifest::verity::Verity;

/// How the root filesystem image is packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootfsFormat {
    /// EROFS, lz4hc-compressed.
    ErofsLz4hc,
    /// squashfs, xz-compressed with the x86 BCJ filter.
    SquashfsXz,
}

impl RootfsFormat {
    pub fn for_profile(profile: Profile) -> Self {
        match profile {
            Profile::Dev => RootfsFormat::ErofsLz4hc,
            Profile::Release => RootfsFormat::SquashfsXz,
        }
    }

    /// The `rootfstype=` value and the manifest's `rootfs.format`.
    pub fn fs_type(self) -> &'static str {
        match self {
            RootfsFormat::ErofsLz4hc => "erofs",
            RootfsFormat::SquashfsXz => "squashfs",
        }
    }

    pub fn compression(self) -> &'static str {
        match self {
            RootfsFormat::ErofsLz4hc => "lz4hc",
            RootfsFormat::SquashfsXz => "xz",
        }
    }

    /// How the packer compresses `layer` (part of the runtime layer's
    /// cache key).
    ///
    /// squashfs keeps a cache of three fragment blocks and one data block
    /// per mount, and an xz dictionary of one block per CPU: about 5 MiB
    /// for 1 MiB blocks. The app layer is small and mostly text, so it uses
    /// 128 KiB blocks and no x86 filter, which keeps the guest's memory
    /// floor where it was with a single root filesystem.
    pub fn packer_flags(self, layer: LayerKind) -> &'static [&'static str] {
        match (self, layer) {
            (RootfsFormat::ErofsLz4hc, _) => &["-zlz4hc,9", "-C65536"],
            (RootfsFormat::SquashfsXz, LayerKind::Runtime) => {
                &["-comp", "xz", "-Xbcj", "x86", "-b", "1M"]
            }
            (RootfsFormat::SquashfsXz, LayerKind::App) => &["-comp", "xz", "-b", "128K"],
        }
    }

    fn tool(self) -> &'static str {
        match self {
            RootfsFormat::ErofsLz4hc => "mkfs.erofs",
            RootfsFormat::SquashfsXz => "mksquashfs",
        }
    }

    fn package(self) -> &'static str {
        match self {
            RootfsFormat::ErofsLz4hc => "erofs-utils",
            RootfsFormat::SquashfsXz => "squashfs-tools",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("cannot stage {path} into the root filesystem")]
    Stage {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("refusing to stage {path}: it would land outside the root filesystem")]
    Escape { path: PathBuf },
    #[error("{tool} is not installed; install it with `apt-get install {package}`")]
    ToolMissing {
        tool: &'static str,
        package: &'static str,
    },
    #[error("{tool} failed ({status}):\n{stderr}")]
    ToolFailed {
        tool: &'static str,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("cannot append the dm-verity hash tree to {path}")]
    Verity {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Which layer a tree is packed as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// The root filesystem: init, node, libraries.
    Runtime,
    /// The app and its dependencies.
    App,
}

/// A directory tree that becomes `/` of the guest.
pub struct Staging {
    root: PathBuf,
}

impl Staging {
    /// Uses `root` (which must exist and be empty) as the guest's `/`.
    pub fn new(root: PathBuf) -> Self {
        Staging { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Host path of the guest path `guest` (absolute or relative to `/`).
    fn host(&self, guest: &Path) -> Result<PathBuf, RootfsError> {
        let mut out = self.root.clone();
        for part in guest.components() {
            match part {
                Component::RootDir | Component::CurDir => {}
                Component::Normal(p) => out.push(p),
                Component::ParentDir | Component::Prefix(_) => {
                    return Err(RootfsError::Escape {
                        path: guest.to_owned(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Creates a directory (and its parents) with the given mode.
    pub fn dir(&self, guest: impl AsRef<Path>, mode: u32) -> Result<(), RootfsError> {
        let path = self.host(guest.as_ref())?;
        let err = |source| RootfsError::Stage {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(&path).map_err(err)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(err)
    }

    /// Places a copy of the host file `source` at `guest` with `mode`.
    ///
    /// Files whose mode already matches are hard-linked instead of copied
    /// when the cache and the output share a file system; the packer only
    /// reads them.
    pub fn file(
        &self,
        guest: impl AsRef<Path>,
        source: &Path,
        mode: u32,
    ) -> Result<(), RootfsError> {
        self.place(guest.as_ref(), |path| {
            let same_mode =
                fs::metadata(source).is_ok_and(|m| m.permissions().mode() & 0o7777 == mode);
            if same_mode && fs::hard_link(source, path).is_ok() {
                return Ok(());
            }
            fs::copy(source, path)?;
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
        })
    }

    /// Writes `contents` to `guest` with `mode`.
    pub fn write(
        &self,
        guest: impl AsRef<Path>,
        contents: &[u8],
        mode: u32,
    ) -> Result<(), RootfsError> {
        self.place(guest.as_ref(), |path| {
            fs::write(path, contents)?;
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
        })
    }

    /// Creates a symbolic link at `guest` pointing to `target`.
    pub fn symlink(&self, guest: impl AsRef<Path>, target: &Path) -> Result<(), RootfsError> {
        self.place(guest.as_ref(), |path| symlink(target, path))
    }

    /// Creates the parents of `guest`, then runs `make` on its host path.
    fn place(
        &self,
        guest: &Path,
        make: impl FnOnce(&Path) -> std::io::Result<()>,
    ) -> Result<(), RootfsError> {
        let path = self.host(guest)?;
        let result = match path.parent() {
            Some(parent) => fs::create_dir_all(parent).and_then(|()| make(&path)),
            None => make(&path),
        };
        result.map_err(|source| RootfsError::Stage { path, source })
    }

    /// Packs the tree into `image` in the given format, reproducibly:
    /// every file owned by root with the timestamp `epoch` (seconds since
    /// 1970), a fixed filesystem UUID, no extended attributes, entries in
    /// the packers' sorted order. The image ends with its dm-verity hash
    /// tree ([`crate::verity`]), whose parameters are returned.
    pub fn pack(
        &self,
        image: &Path,
        format: RootfsFormat,
        layer: LayerKind,
        epoch: u64,
    ) -> Result<Verity, RootfsError> {
        let mut cmd = Command::new(format.tool());
        let epoch = epoch.to_string();
        match format {
            RootfsFormat::ErofsLz4hc => {
                cmd.args(format.packer_flags(layer))
                    .args(["--all-root", "--quiet", "-x-1"])
                    .arg(format!("-T{epoch}"))
                    .arg("-U00000000-0000-0000-0000-000000000000")
                    .arg(image)
                    .arg(&self.root);
            }
            RootfsFormat::SquashfsXz => {
                cmd.arg(&self.root)
                    .arg(image)
                    .args(format.packer_flags(layer))
                    .args([
                        "-noappend",
                        "-quiet",
                        "-no-progress",
                        "-all-root",
                        "-no-xattrs",
                        "-mkfs-time",
                        &epoch,
                        "-all-time",
                        &epoch,
                    ]);
            }
        }
        // The flags say it all; mksquashfs refuses SOURCE_DATE_EPOCH
        // alongside -mkfs-time/-all-time.
        let output = cmd
            .env_remove("SOURCE_DATE_EPOCH")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => RootfsError::ToolMissing {
                    tool: format.tool(),
                    package: format.package(),
                },
                _ => RootfsError::Stage {
                    path: image.to_owned(),
                    source: e,
                },
            })?;
        if !output.status.success() {
            return Err(RootfsError::ToolFailed {
                tool: format.tool(),
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        crate::verity::append_hash_tree(image).map_err(|source| RootfsError::Verity {
            path: image.to_owned(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_refuses_paths_that_escape_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let staging = Staging::new(dir.path().to_owned());
        let err = staging.write("/etc/../../x", b"", 0o644).unwrap_err();
        assert!(matches!(err, RootfsError::Escape { .. }), "{err}");
    }

    #[test]
    fn staging_places_files_dirs_and_links_under_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let staging = Staging::new(dir.path().to_owned());
        staging.dir("/tmp", 0o1777).unwrap();
        staging
            .write("/etc/hosts", b"127.0.0.1 localhost\n", 0o644)
            .unwrap();
        staging
            .symlink("/etc/resolv.conf", Path::new("../run/resolv.conf"))
            .unwrap();
        let meta = fs::metadata(dir.path().join("tmp")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o1777);
        assert_eq!(
            fs::read(dir.path().join("etc/hosts")).unwrap(),
            b"127.0.0.1 localhost\n"
        );
        assert_eq!(
            fs::read_link(dir.path().join("etc/resolv.conf")).unwrap(),
            Path::new("../run/resolv.conf")
        );
    }
}
