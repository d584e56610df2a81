//! The nodeos contract: the one place the host and the guest meet.
//!
//! * [`Manifest`] is written by `nodeos build` as `manifest.json` beside the
//!   artefacts of an image directory and read by `nodeos run`.
//! * [`AppConfig`] is baked into the root filesystem at [`APP_CONFIG_PATH`]
//!   and read by nodeos-init to start the app.
//! * [`settings`] holds how init runs the app ([`Settings`], from
//!   package.json's `"nodeos"` key) and what `nodeos run` can change at
//!   boot ([`RunConfig`], on a config disk).
//! * [`host`] holds what only `nodeos run` reads: memory, CPUs and port
//!   forwards ([`host::VmSettings`], in the manifest).
//! * [`slots`], [`bundle`] and [`update`] hold the A/B system disk, the
//!   signed update bundle and the update agent's requests and answers.
//! * [`console`] holds the log record format of the serial console and the
//!   marker lines the VM runner and the tests wait for.
//!
//! Everything here is plain data with serde; no I/O beyond (de)serialising.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Version of the manifest format. Bumped on incompatible changes.
pub const MANIFEST_FORMAT: u32 = 2;
/// Name of the manifest file inside an image directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Where init mounts the app layer (the second disk): it holds the app
/// config ([`APP_CONFIG_PATH`]) and the app's files (`app/`, bound onto
/// [`APP_DIR`]).
pub const APP_LAYER_DIR: &str = "/layers/app";
/// The app config inside the guest: `app.json` at the app layer's root.
pub const APP_CONFIG_PATH: &str = "/layers/app/app.json";
/// The app's files inside the app layer, relative to its root.
pub const APP_LAYER_TREE: &str = "app";
/// Where the app's files appear to the app (a read-only bind mount of the
/// app layer's `app/`).
pub const APP_DIR: &str = "/app";
/// Where init mounts the persistent data volume (read-write, owned by
/// [`APP_USER`]).
pub const DATA_DIR: &str = "/data";
/// Label `nodeos run` gives the data volume's ext4 filesystem.
pub const DATA_LABEL: &str = "nodeos-data";
/// Where the node binary lives inside the root filesystem.
pub const NODE_PATH: &str = "/usr/bin/node";
/// Where nodeos-init lives inside the root filesystem.
pub const INIT_PATH: &str = "/sbin/init";
/// The unprivileged user the app runs as (in the image's `/etc/passwd`).
pub const APP_USER: &str = "app";
/// Its user id.
pub const APP_UID: u32 = 1000;
/// Its group id (group `app`, in the image's `/etc/group`).
pub const APP_GID: u32 = 1000;
/// Written by init at boot; the image's `/etc/hosts` is a symlink to it.
pub const RUN_HOSTS: &str = "/run/hosts";
/// Written by init at boot; the image's `/etc/resolv.conf` is a symlink to it.
pub const RUN_RESOLV_CONF: &str = "/run/resolv.conf";

/// The nodeos cache directory (Node.js downloads, kernels, the accelerator
/// probe): `$NODEOS_CACHE_DIR`, else `$XDG_CACHE_HOME/nodeos`, else
/// `$HOME/.cache/nodeos`; `None` if none of them is set.
pub fn cache_dir() -> Option<std::path::PathBuf> {
    cache_dir_from(|name| std::env::var_os(name))
}

/// [`cache_dir`] with the environment passed in. Empty variables count as
/// unset, as the XDG base directory specification asks.
pub fn cache_dir_from(
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Option<std::path::PathBuf> {
    let var = |name: &str| {
        env(name)
            .filter(|v| !v.is_empty())
            .map(std::path::PathBuf::from)
    };
    var("NODEOS_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|dir| dir.join("nodeos")))
        .or_else(|| var("HOME").map(|home| home.join(".cache").join("nodeos")))
}

/// `manifest.json`: what an image directory holds and how to boot it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`MANIFEST_FORMAT`] for manifests this crate writes.
    pub format: u32,
    /// `name` from package.json.
    pub name: String,
    /// `version` from package.json.
    pub version: String,
    /// Build profile the image was made with.
    pub profile: Profile,
    /// Node.js runtime inside the image.
    pub node: NodeInfo,
    /// The kernel and how to start it.
    pub kernel: KernelInfo,
    /// The two read-only layers: the runtime (the root filesystem) and the app.
    pub layers: LayersInfo,
    /// The app's data volume settings (package.json `"nodeos": {"data": …}`),
    /// which `nodeos run` needs on the host to create the volume.
    #[serde(default)]
    pub data: settings::DataSettings,
    /// How `nodeos run` starts the VM unless its flags say otherwise
    /// (package.json `"nodeos": {"memory", "cpus", "ports"}`).
    #[serde(default, skip_serializing_if = "host::VmSettings::is_empty")]
    pub vm: host::VmSettings,
    /// The key updates of this image must be signed with (package.json
    /// `nodeos.update.publicKey`, or `nodeos build --key`), also baked into
    /// its app.json; `nodeos deploy` checks its key against it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_key: Option<update::PublicKey>,
    /// Every file of the image directory except the manifest itself.
    pub artifacts: BTreeMap<String, Artifact>,
    /// `nodeos <version>` that wrote this manifest.
    pub builder: String,
}

impl Manifest {
    /// Parses a manifest and checks its format version first, so that a
    /// manifest of another format is reported as such rather than as
    /// unknown fields.
    pub fn from_json(text: &str) -> Result<Self, ManifestError> {
        #[derive(Deserialize)]
        struct Format {
            format: u32,
        }
        let value: serde_json::Value = serde_json::from_str(text).map_err(ManifestError::Parse)?;
        if !value.is_object() {
            return Err(ManifestError::NotAnObject);
        }
        let Format { format } = serde_json::from_value(value).map_err(ManifestError::Parse)?;
        if format != MANIFEST_FORMAT {
            return Err(ManifestError::Format(format));
        }
        serde_json::from_str(text).map_err(ManifestError::Parse)
    }

    /// The artefact keys an image needs to boot: the kernel and both layers.
    pub fn boot_artifacts(&self) -> [&str; 3] {
        [
            &self.kernel.artifact,
            &self.layers.runtime,
            &self.layers.app,
        ]
    }

    /// Serialises the manifest as pretty JSON with a trailing newline.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("manifest serialises");
        text.push('\n');
        text
    }
}

/// Why a manifest could not be read.
#[derive(Debug)]
pub enum ManifestError {
    Parse(serde_json::Error),
    /// Valid JSON, but an array, a string, a number…
    NotAnObject,
    Format(u32),
}

impl std::fmt::Display for ManifestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ManifestError::Parse(e) => write!(f, "manifest is not valid: {e}"),
            ManifestError::NotAnObject => f.write_str("manifest is not valid: not a JSON object"),
            ManifestError::Format(v) => write!(
                f,
                "manifest format {v} is not supported (this nodeos reads format {MANIFEST_FORMAT})"
            ),
        }
    }
}

impl std::error::Error for ManifestError {}

/// Build profile: the size / boot-time trade-off of the root filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Faster to build and to boot, larger.
    Dev,
    /// Smallest image.
    #[default]
    Release,
}

impl Profile {
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Dev => "dev",
            Profile::Release => "release",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeInfo {
    /// Exact Node.js version, e.g. `22.23.3`.
    pub version: String,
    /// The `engines.node` range it was resolved from, if any.
    pub range: Option<String>,
    /// The registry's `dist.integrity` of the tarball it came from.
    pub integrity: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelInfo {
    /// Release string read from the bzImage header, e.g. `6.1.192`.
    pub version: String,
    /// Kernel command line to boot the image with.
    pub cmdline: String,
    /// Artefact key of the kernel in [`Manifest::artifacts`].
    pub artifact: String,
}

/// The image's two read-only filesystem layers, packed the same way.
///
/// The runtime layer (nodeos-init, node and its shared libraries, `/etc`)
/// is the guest's root filesystem (`/dev/vda`); it depends only on the
/// Node.js version, the init build and the profile, so builds share it
/// through the cache. The app layer (`app.json` and `app/`, the app with
/// its production dependencies) is the second disk, rebuilt every build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayersInfo {
    /// `erofs` or `squashfs`.
    pub format: String,
    /// Compression algorithm, e.g. `lz4hc` or `xz`.
    pub compression: String,
    /// Artefact key of the runtime layer in [`Manifest::artifacts`].
    pub runtime: String,
    /// Artefact key of the app layer in [`Manifest::artifacts`].
    pub app: String,
}

/// One file of an image directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// File name relative to the image directory.
    pub path: String,
    /// Lower-case hex sha256 of the file.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// The layers' dm-verity hash tree, which the artefact ends with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verity: Option<verity::Verity>,
}

/// `/etc/nodeos/app.json`: what nodeos-init starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// `name` from package.json (used for the hostname and log lines).
    pub name: String,
    /// Absolute path of the node binary.
    pub node: String,
    /// Working directory of the app (its root).
    pub workdir: String,
    /// Arguments passed to node: the entry file first, then the script's own arguments.
    pub args: Vec<String>,
    /// Environment of the app, on top of `PATH`, `HOME` and `PORT` set by init.
    pub env: BTreeMap<String, String>,
    /// Absolute path of the entry file (also among `args`); init checks it
    /// exists before starting node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    /// How init runs the app (package.json's `"nodeos"` key).
    #[serde(default)]
    pub settings: Settings,
}

pub mod bundle;
pub mod console;
pub mod esp;
pub mod frame;
pub mod host;
pub mod settings;
pub mod slots;
pub mod update;
pub mod verity;

pub use settings::{LogFormat, Network, RestartPolicy, RunConfig, Settings};

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        let mut artifacts = BTreeMap::new();
        artifacts.insert(
            "kernel".into(),
            Artifact {
                path: "kernel".into(),
                sha256: "00".repeat(32),
                size: 1,
                verity: None,
            },
        );
        Manifest {
            format: MANIFEST_FORMAT,
            name: "hello".into(),
            version: "1.0.0".into(),
            profile: Profile::Release,
            node: NodeInfo {
                version: "22.1.0".into(),
                range: Some("22".into()),
                integrity: "sha512-x".into(),
            },
            kernel: KernelInfo {
                version: "6.1".into(),
                cmdline: "console=ttyS0".into(),
                artifact: "kernel".into(),
            },
            layers: LayersInfo {
                format: "erofs".into(),
                compression: "lz4hc".into(),
                runtime: "runtime".into(),
                app: "app".into(),
            },
            data: settings::DataSettings::default(),
            vm: host::VmSettings::default(),
            update_key: None,
            artifacts,
            builder: "nodeos 0.1.0".into(),
        }
    }

    #[test]
    fn cache_dir_precedence() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        let all: &[(&str, &str)] = &[
            ("NODEOS_CACHE_DIR", "/n"),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/h"),
        ];
        assert_eq!(cache_dir_from(env(all)), Some("/n".into()));
        assert_eq!(cache_dir_from(env(&all[1..])), Some("/x/nodeos".into()));
        assert_eq!(
            cache_dir_from(env(&all[2..])),
            Some("/h/.cache/nodeos".into())
        );
        assert_eq!(
            cache_dir_from(env(&[("NODEOS_CACHE_DIR", ""), ("HOME", "/h")])),
            Some("/h/.cache/nodeos".into())
        );
        assert_eq!(cache_dir_from(env(&[])), None);
    }

    #[test]
    fn manifest_round_trips() {
        let m = sample();
        assert_eq!(Manifest::from_json(&m.to_json()).unwrap(), m);
    }

    #[test]
    fn a_format_1_manifest_is_reported_as_an_older_format() {
        let text = r#"{"format": 1, "name": "hello", "rootfs": {"artifact": "rootfs"}}"#;
        let err = Manifest::from_json(text).unwrap_err();
        assert!(matches!(err, ManifestError::Format(1)), "{err}");
        assert_eq!(
            err.to_string(),
            "manifest format 1 is not supported (this nodeos reads format 2)"
        );
    }

    #[test]
    fn manifest_rejects_other_format_versions() {
        let mut m = sample();
        m.format = 99;
        let err = Manifest::from_json(&m.to_json()).unwrap_err();
        assert!(matches!(err, ManifestError::Format(99)), "{err}");
    }

    #[test]
    fn a_manifest_that_is_no_object_says_so() {
        for text in ["[]", "[1]", "\"manifest\"", "3", "null"] {
            let err = Manifest::from_json(text).unwrap_err();
            assert!(matches!(err, ManifestError::NotAnObject), "{text}: {err}");
            assert_eq!(err.to_string(), "manifest is not valid: not a JSON object");
        }
    }
}
