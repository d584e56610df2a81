//! The config disk: a [`RunConfig`] handed to the guest as a small raw,
//! read-only virtio disk (see [`RunConfig::to_disk`]).
//!
//! The run config may hold secrets (`nodeos run --env`), so the image file
//! lives in a private temporary directory (mode 0700, the file 0600), only
//! its path is on QEMU's command line, its name is removed as soon as QEMU
//! has opened it ([`crate::Vm::start`]), and the directory goes once QEMU
//! has exited (or the [`crate::Vm`] is dropped, whichever comes first).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nodeos_manifest::RunConfig;
use nodeos_manifest::settings::RunConfigError;

use crate::Error;

/// File name of the disk image inside its private directory.
const FILE_NAME: &str = "config.img";

/// A written config disk; dropping it removes the file and its directory.
#[derive(Debug)]
pub(crate) struct ConfigDisk {
    path: PathBuf,
    /// Removed on drop, with the file inside.
    _dir: tempfile::TempDir,
}

impl ConfigDisk {
    /// Checks `config` and writes it to a new private directory.
    pub(crate) fn write(config: &RunConfig) -> Result<ConfigDisk, Error> {
        config
            .validate()
            .map_err(|e| Error::RunConfig(RunConfigError::Invalid(e)))?;
        let bytes = config.to_disk().map_err(Error::RunConfig)?;
        let dir = tempfile::Builder::new()
            .prefix("nodeos-config")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()
            .map_err(Error::io(
                "cannot create a private temporary directory for the config disk",
            ))?;
        // Exactly 0700, whatever the umask took away.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).map_err(
            Error::io(format!("cannot make `{}` private", dir.path().display())),
        )?;
        let path = dir.path().join(FILE_NAME);
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut file| file.write_all(&bytes));
        written.map_err(Error::io(format!(
            "cannot write the config disk `{}`",
            path.display()
        )))?;
        Ok(ConfigDisk { path, _dir: dir })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodeos_manifest::{LogFormat, RestartPolicy};

    fn sample() -> RunConfig {
        let mut config = RunConfig {
            restart: Some(RestartPolicy::OnFailure),
            grace: Some(3),
            log_format: Some(LogFormat::Json),
            ..RunConfig::default()
        };
        config
            .env
            .insert("TOKEN".into(), "s3cr3t, with comma".into());
        config.env.insert("EMPTY".into(), String::new());
        config
    }

    #[test]
    fn written_disk_round_trips_and_is_private() {
        let config = sample();
        let disk = ConfigDisk::write(&config).unwrap();
        let bytes = std::fs::read(disk.path()).unwrap();
        assert_eq!(bytes.len() % 4096, 0);
        assert_eq!(RunConfig::from_disk(&bytes).unwrap(), Some(config));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(disk.path()), 0o600);
        assert_eq!(mode(disk.path().parent().unwrap()), 0o700);
    }

    #[test]
    fn dropping_the_disk_removes_file_and_directory() {
        let disk = ConfigDisk::write(&sample()).unwrap();
        let path = disk.path().to_path_buf();
        assert!(path.is_file());
        drop(disk);
        assert!(!path.exists());
        assert!(!path.parent().unwrap().exists());
    }

    #[test]
    fn invalid_config_is_refused_without_writing_anything() {
        let mut config = sample();
        config.grace = Some(99_999);
        let err = ConfigDisk::write(&config).unwrap_err();
        assert!(matches!(err, Error::RunConfig(_)), "{err:?}");
        let mut config = sample();
        config.env.insert("BAD=NAME".into(), "hunter2".into());
        let err = ConfigDisk::write(&config).unwrap_err();
        let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
        assert!(chain.contains("BAD=NAME"), "{chain}");
        assert!(!chain.contains("hunter2"), "{chain}");
    }
}
