//! `nodeos keygen`.

use std::path::PathBuf;

use nodeos_image::keys::{self, KeyError};

use crate::exit::{Exit, fail};
use crate::ui::Ui;

#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// The private key file to write; the public key goes to FILE.pub
    /// [default: $XDG_CONFIG_HOME/nodeos/update-key.pem, else
    /// ~/.config/nodeos/update-key.pem]
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// Writes a new update-signing key pair and prints its public key on stdout.
pub fn run(args: KeygenArgs, ui: &Ui) -> anyhow::Result<Exit> {
    let private = match args.out {
        Some(path) => path,
        None => keys::default_path_from(|name| std::env::var_os(name)).ok_or_else(|| {
            fail(
                Exit::Usage,
                "neither XDG_CONFIG_HOME nor HOME is set: pass --out FILE",
            )
        })?,
    };
    if let Some(dir) = private.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            fail(
                Exit::Output,
                format!("cannot create {}: {e}; choose another --out", dir.display()),
            )
        })?;
    }
    let key = keys::generate()?;
    match keys::write_pair(&key, &private) {
        Ok(()) => {}
        // Nothing is left: write_pair removes what it wrote.
        Err(KeyError::Io { path, source }) if unwritable(&source) => {
            return Err(fail(
                Exit::Output,
                format!(
                    "cannot write {}: {source}; choose another --out",
                    path.display()
                ),
            ));
        }
        Err(e) => return Err(anyhow::Error::new(e).context("keygen failed")),
    }
    ui.note(&format!(
        "wrote the private key {} (mode 0600; keep it secret, out of the project) and the public key {}",
        private.display(),
        keys::public_path(&private).display()
    ));
    println!("{}", keys::public_key_text(&key.verifying_key()));
    Ok(Exit::Success)
}

/// Whether writing failed because of where, not because of the disk: a
/// missing or read-only directory, or a directory in the way.
fn unwritable(err: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        err.kind(),
        NotFound | NotADirectory | IsADirectory | PermissionDenied | ReadOnlyFilesystem
    )
}
