//! `nodeos build`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use nodeos_image::{BuildOptions, Built, build, keys};
use nodeos_manifest::Profile;

use crate::exit::Exit;
use crate::ui::Ui;

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The npm project to build (the directory holding package.json).
    #[arg(value_name = "PROJECT_DIR")]
    project: Option<PathBuf>,
    /// Where to put <name>.nodeos/ [default: PROJECT_DIR/dist]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// dev: EROFS/lz4hc, boots faster; release: squashfs/xz, smallest.
    #[arg(long, value_enum, default_value_t = ProfileArg::Release)]
    profile: ProfileArg,
    /// Use this bzImage instead of nodeos's own kernel.
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,
    /// The static nodeos-init binary [default: $NODEOS_INIT, or next to nodeos]
    #[arg(long, value_name = "PATH", hide = true)]
    init: Option<PathBuf>,
    /// The key updates must be signed with, baked into the image instead of
    /// package.json's nodeos.update.publicKey: a private or public key PEM,
    /// or a .pub file (ed25519:<hex>).
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Print what was built as JSON on stdout: the image directory, name,
    /// version, Node.js and kernel versions, each artefact's path, size and
    /// sha256, and the manifest.
    #[arg(long)]
    json: bool,
}

impl BuildArgs {
    /// What `nodeos build PROJECT_DIR --profile PROFILE` builds.
    pub fn for_project(project: Option<PathBuf>, profile: ProfileArg) -> BuildArgs {
        BuildArgs {
            project,
            out: None,
            profile,
            kernel: None,
            init: None,
            key: None,
            json: false,
        }
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ProfileArg {
    Dev,
    Release,
}

pub fn run(args: BuildArgs, ui: &Ui) -> anyhow::Result<Exit> {
    let json = args.json;
    let built = build_image(args, ui)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&summary(&built))?);
    }
    Ok(Exit::Success)
}

/// What `build --json` prints: the image directory, the versions in it,
/// each artefact's path, size and sha256, and the whole manifest.
fn summary(built: &Built) -> serde_json::Value {
    let m = &built.manifest;
    let artifacts: serde_json::Map<String, serde_json::Value> = m
        .artifacts
        .iter()
        .map(|(key, a)| {
            let value = serde_json::json!({
                "path": built.dir.join(&a.path),
                "size": a.size,
                "sha256": a.sha256,
            });
            (key.clone(), value)
        })
        .collect();
    serde_json::json!({
        "dir": built.dir,
        "name": m.name,
        "version": m.version,
        "profile": m.profile,
        "node": m.node.version,
        "kernel": m.kernel.version,
        "size": m.artifacts.values().map(|a| a.size).sum::<u64>(),
        "artifacts": artifacts,
        "manifest": m,
    })
}

/// Builds the image as `nodeos build` does (`deploy` builds through here too).
pub fn build_image(args: BuildArgs, ui: &Ui) -> anyhow::Result<Built> {
    let update_key = args
        .key
        .as_deref()
        .map(keys::read_public)
        .transpose()
        .context("--key")?;
    let project_dir = crate::project_dir(args.project);
    let init = match args.init {
        Some(path) => path,
        None => find_init()?,
    };
    let options = BuildOptions {
        project_dir,
        out_dir: args.out,
        profile: match args.profile {
            ProfileArg::Dev => Profile::Dev,
            ProfileArg::Release => Profile::Release,
        },
        kernel: args.kernel,
        init,
        source_date_epoch: source_date_epoch(std::env::var_os("SOURCE_DATE_EPOCH"))?,
        update_key,
    };
    build(&options, ui).context("build failed")
}

/// `SOURCE_DATE_EPOCH` (reproducible-builds.org): the timestamp of every
/// file in the image. Unset or empty: none (0). Anything but a whole number
/// of seconds is a usage error.
fn source_date_epoch(value: Option<std::ffi::OsString>) -> anyhow::Result<Option<u64>> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    value
        .to_str()
        .and_then(|v| v.trim().parse().ok())
        .map(Some)
        .ok_or_else(|| {
            crate::exit::fail(
                Exit::Usage,
                format!(
                    "SOURCE_DATE_EPOCH must be a whole number of seconds since 1970, not {value:?}"
                ),
            )
        })
}

/// Locates nodeos-init: `$NODEOS_INIT`, next to this executable (an
/// installed nodeos), or the musl build of a source checkout; a candidate
/// that is not a static binary (a glibc build left by `cargo build
/// --workspace`) is passed over. When none fits, returns the first place
/// looked so the build reports it after checking the project.
fn find_init() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("NODEOS_INIT") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("cannot locate the nodeos executable")?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let candidates = [
        dir.join("nodeos-init"),
        dir.join("../x86_64-unknown-linux-musl/release/nodeos-init"),
        dir.join("../../x86_64-unknown-linux-musl/release/nodeos-init"),
    ];
    Ok(candidates
        .iter()
        .find(|p| p.is_file() && nodeos_image::is_static_binary(p))
        .unwrap_or(&candidates[0])
        .clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_date_epoch_is_a_whole_number_or_nothing() {
        let parse = |v: Option<&str>| source_date_epoch(v.map(Into::into));
        assert_eq!(parse(None).unwrap(), None);
        assert_eq!(parse(Some("")).unwrap(), None);
        assert_eq!(parse(Some("1700000000")).unwrap(), Some(1_700_000_000));
        for bad in ["yesterday", "-1", "1.5", "0x10"] {
            let err = parse(Some(bad)).unwrap_err();
            assert!(err.to_string().contains("SOURCE_DATE_EPOCH"), "{err}");
        }
    }
}
