//! `nodeos nodedir`: where the guest Node.js's headers are, for building
//! native addons against the Node.js the image runs rather than the
//! host's: `npm_config_nodedir=$(npx nodeos nodedir) npm ci`.

use std::path::PathBuf;

use anyhow::Context;
use nodeos_image::BuildError;
use nodeos_image::node;
use nodeos_image::project;
use nodeos_image::registry::RegistryConfig;

use crate::exit::Exit;
use crate::ui::Ui;

#[derive(Debug, clap::Args)]
pub struct NodedirArgs {
    /// The npm project whose guest Node.js is meant.
    #[arg(value_name = "PROJECT_DIR")]
    project: Option<PathBuf>,
}

/// Resolves the project's Node.js as `nodeos build` does, extracts its
/// headers into the cache on first use, and prints their directory on
/// stdout.
pub fn run(args: NodedirArgs, ui: &Ui) -> anyhow::Result<Exit> {
    let dir = crate::project_dir(args.project);
    // Errors go through BuildError so that they get `nodeos build`'s exit
    // codes (3 for the project, 4 for engines.node, 5 for the registry…).
    let range = project::node_range(&dir)
        .map_err(BuildError::from)
        .context("nodedir failed")?;
    let registry = RegistryConfig::from_npm(&dir)
        .map_err(BuildError::from)
        .context("nodedir failed")?;
    let headers = node::fetch_headers(range.as_deref(), &registry, ui)
        .map_err(BuildError::from)
        .context("nodedir failed")?;
    println!("{}", headers.dir.display());
    Ok(Exit::Success)
}
