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
        None => keys::default_path_from(|name| std::env::var_os(name)).ok_or_else(|| {
            fail(
                Exit::Usage,
                "neither XDG_CONFIG_HOME nor HOME is set: pass --out FILE",
            )
        })?,
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
