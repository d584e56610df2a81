//! `nodeos keygen`.

use std::path::PathBuf;

use anyhow::Context;
use nodeos_image::keys;

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
        None => default_path(
            std::env::var_os("XDG_CONFIG_HOME"),
            std::env::var_os("HOME"),
        )?,
    };
    if let Some(dir) = private.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let key = keys::generate()?;
    keys::write_pair(&key, &private).context("keygen failed")?;
    ui.note(&format!(
        "wrote the private key {} (mode 0600; keep it secret, out of the project) and the public key {}",
        private.display(),
        keys::public_path(&private).display()
    ));
    println!("{}", keys::public_key_text(&key.verifying_key()));
    Ok(Exit::Success)
}

/// `$XDG_CONFIG_HOME/nodeos/update-key.pem`, else
/// `$HOME/.config/nodeos/update-key.pem`.
fn default_path(
    xdg_config_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> anyhow::Result<PathBuf> {
    let base = match (
        xdg_config_home.filter(|v| !v.is_empty()),
        home.filter(|v| !v.is_empty()),
    ) {
        (Some(xdg), _) => PathBuf::from(xdg),
        (None, Some(home)) => PathBuf::from(home).join(".config"),
        (None, None) => {
            return Err(fail(
                Exit::Usage,
                "neither XDG_CONFIG_HOME nor HOME is set: pass --out FILE",
            ));
        }
    };
    Ok(base.join("nodeos").join("update-key.pem"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_key_lives_in_the_user_config_directory() {
        assert_eq!(
            default_path(Some("/x".into()), Some("/home/u".into())).unwrap(),
            PathBuf::from("/x/nodeos/update-key.pem")
        );
        assert_eq!(
            default_path(Some("".into()), Some("/home/u".into())).unwrap(),
            PathBuf::from("/home/u/.config/nodeos/update-key.pem")
        );
        assert!(default_path(None, None).is_err());
    }
}
