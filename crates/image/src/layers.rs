//! The two read-only layers of an image.
//!
//! * The **runtime layer** is the guest's root filesystem: nodeos-init,
//!   node, the shared libraries they need, `/etc` and the mount points. It
//!   does not depend on the app's files, so it is packed once per
//!   [`RuntimeInputs`] and kept in the cache (`<cache>/layers/`); a build
//!   copies it. Its files always carry the timestamp 0, so
//!   `SOURCE_DATE_EPOCH` does not split the cache.
//! * The **app layer** holds `app.json` (what init starts) and `app/` (the
//!   app with its production dependencies); it is packed by every build.
//!   Init mounts it at [`APP_LAYER_DIR`] and binds `app/` onto [`APP_DIR`].
//!
//! Changing one JS file therefore repacks only the app layer.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nodeos_manifest::verity::Verity;
use nodeos_manifest::{
    APP_DIR, APP_GID, APP_LAYER_DIR, APP_UID, APP_USER, DATA_DIR, INIT_PATH, NODE_PATH, RUN_HOSTS,
    RUN_RESOLV_CONF,
};
use sha2::{Digest, Sha256};

use crate::cache::{self, AtomicFile, CacheError};
use crate::elf::Library;
use crate::rootfs::{LayerKind, RootfsError, RootfsFormat, Staging};
use crate::{Reporter, hex};

/// File name of the runtime layer inside an image directory.
pub const RUNTIME_FILE: &str = "runtime.img";
/// File name of the app layer inside an image directory.
pub const APP_FILE: &str = "app.img";
/// How many runtime layers the cache keeps (the least recently used go).
const KEEP_RUNTIME_LAYERS: usize = 8;

/// Everything the runtime layer is made of. Two builds with equal inputs
/// share one cached layer.
#[derive(Debug, Clone, Copy)]
pub struct RuntimeInputs<'a> {
    /// The static nodeos-init binary.
    pub init: &'a Path,
    /// The node binary.
    pub node: &'a Path,
    /// The libraries node and the app's native addons need.
    pub libraries: &'a [Library],
    pub format: RootfsFormat,
}

/// A packed layer file with its checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub path: PathBuf,
    /// Lower-case hex sha256.
    pub sha256: String,
    pub size: u64,
    /// Its dm-verity hash tree, which the file ends with.
    pub verity: Verity,
}

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("cannot read {path} to fingerprint the runtime layer")]
    Input {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The cache key of the runtime layer: a sha256 over the packer settings,
/// the guest's `/etc` and the content and guest path of every file.
pub fn runtime_key(inputs: &RuntimeInputs<'_>) -> Result<String, LayerError> {
    let mut hasher = Sha256::new();
    let mut field = |name: &str, value: &[u8]| {
        hasher.update((name.len() as u64).to_le_bytes());
        hasher.update(name.as_bytes());
        hasher.update((value.len() as u64).to_le_bytes());
        hasher.update(value);
    };
    field("layout", LAYOUT_VERSION.as_bytes());
    field("format", inputs.format.fs_type().as_bytes());
    field(
        "packer",
        inputs
            .format
            .packer_flags(LayerKind::Runtime)
            .join(" ")
            .as_bytes(),
    );
    for (path, contents, mode) in etc_files() {
        field(path, &contents);
        field("mode", &mode.to_le_bytes());
    }
    let mut files = vec![
        (Path::new(INIT_PATH), inputs.init),
        (Path::new(NODE_PATH), inputs.node),
    ];
    files.extend(
        inputs
            .libraries
            .iter()
            .map(|lib| (lib.guest_path.as_path(), lib.host_path.as_path())),
    );
    for (guest, host) in files {
        let (sha256, _) = crate::sha256_file(host).map_err(|source| LayerError::Input {
            path: host.to_owned(),
            source,
        })?;
        field(&guest.to_string_lossy(), sha256.as_bytes());
    }
    Ok(hex(&hasher.finalize()))
}

/// Bumped whenever [`stage_runtime`] lays the tree out differently, so old
/// cache entries are not reused.
const LAYOUT_VERSION: &str = "2";

/// The runtime layer for `inputs` from the cache under `cache_dir`, packed
/// first if it is not there. Safe against concurrent builds: one packs,
/// the others wait and reuse it.
pub fn runtime_layer(
    cache_dir: &Path,
    inputs: &RuntimeInputs<'_>,
    reporter: &dyn Reporter,
) -> Result<Layer, LayerError> {
    let key = runtime_key(inputs)?;
    let dir = cache_dir.join("layers");
    let path = dir.join(format!(
        "runtime-{}-{}.img",
        inputs.format.fs_type(),
        &key[..16]
    ));
    let sum_path = sum_path(&path);
    let _lock = cache::lock(&path)?;
    if let Some(layer) = read_cached(&path, &sum_path) {
        // Its modification time is its last use, for pruning.
        let _ = fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(SystemTime::now()));
        return Ok(layer);
    }
    reporter.status(
        "Packing",
        &format!(
            "runtime layer ({} {}; first build with this Node.js and init, then cached)",
            inputs.format.fs_type(),
            inputs.format.compression()
        ),
    );
    let stage = tempfile::Builder::new()
        .prefix(".tmp-runtime-")
        .tempdir_in(&dir)
        .map_err(|source| CacheError::Io {
            path: dir.clone(),
            source,
        })?;
    let staging = Staging::new(stage.path().to_owned());
    stage_runtime(inputs, &staging)?;
    let file = AtomicFile::create(&path)?;
    let spinner = reporter.spinner("packing the runtime layer");
    let packed = staging.pack(file.temp_path(), inputs.format, LayerKind::Runtime, 0);
    spinner.finish();
    let verity = packed?;
    let (sha256, size) = crate::sha256_file(file.temp_path()).map_err(|source| CacheError::Io {
        path: file.temp_path().to_owned(),
        source,
    })?;
    file.commit()?;
    let sum = format!(
        "{sha256} {size} {} {} {}\n",
        verity.root_hash, verity.salt, verity.data_blocks
    );
    cache::write_atomic(&sum_path, sum.as_bytes())?;
    prune(&dir, &path);
    Ok(Layer {
        path,
        sha256,
        size,
        verity,
    })
}

/// `<layer>.sha256`: `HEX SIZE ROOT_HASH SALT DATA_BLOCKS` (the sha256 and
/// size of the file, then its verity tree's), written after the layer.
fn sum_path(layer: &Path) -> PathBuf {
    let mut name = layer.as_os_str().to_owned();
    name.push(".sha256");
    PathBuf::from(name)
}

/// A cached layer whose size still matches its checksum file. (`nodeos
/// run` checks the sha256 of every artefact before booting.)
fn read_cached(path: &Path, sum_path: &Path) -> Option<Layer> {
    let text = fs::read_to_string(sum_path).ok()?;
    let [sha256, size, root_hash, salt, data_blocks] = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .try_into()
        .ok()?;
    let size: u64 = size.parse().ok()?;
    let verity = Verity {
        root_hash: root_hash.to_owned(),
        salt: salt.to_owned(),
        data_blocks: data_blocks.parse().ok()?,
    };
    let whole = fs::metadata(path).ok()?.len() == size && sha256.len() == 64;
    (whole && verity.is_well_formed()).then(|| Layer {
        path: path.to_owned(),
        sha256: sha256.to_owned(),
        size,
        verity,
    })
}

/// Removes the least recently used runtime layers beyond
/// [`KEEP_RUNTIME_LAYERS`], never `keep`. Best effort.
fn prune(dir: &Path, keep: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut layers: Vec<(SystemTime, PathBuf)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with("runtime-") && name.ends_with(".img")
        })
        .filter_map(|p| Some((fs::metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    layers.sort_by_key(|(modified, _)| std::cmp::Reverse(*modified));
    for (_, path) in layers.iter().skip(KEEP_RUNTIME_LAYERS) {
        if path != keep {
            let _lock = cache::lock(path);
            let _ = fs::remove_file(sum_path(path));
            let _ = fs::remove_file(path);
        }
    }
}

/// `/etc` of the runtime layer: `(guest path, contents, mode)`. Nothing
/// here depends on the app, so every app shares the layer.
fn etc_files() -> Vec<(&'static str, Vec<u8>, u32)> {
    let passwd = format!(
        "root:x:0:0:root:/tmp:/sbin/init\n\
         {APP_USER}:x:{APP_UID}:{APP_GID}:{APP_USER}:/tmp:/sbin/init\n"
    );
    let group = format!("root:x:0:\n{APP_USER}:x:{APP_GID}:\n");
    let os_release = format!(
        "NAME=nodeos\nID=nodeos\nVERSION_ID={v}\nPRETTY_NAME=\"nodeos {v}\"\n",
        v = env!("CARGO_PKG_VERSION"),
    );
    vec![
        ("/etc/passwd", passwd.into_bytes(), 0o644),
        ("/etc/group", group.into_bytes(), 0o644),
        ("/etc/os-release", os_release.into_bytes(), 0o644),
    ]
}

/// Lays out the runtime layer: mount points, init, node, libraries, `/etc`.
fn stage_runtime(inputs: &RuntimeInputs<'_>, staging: &Staging) -> Result<(), RootfsError> {
    for (dir, mode) in [
        ("/proc", 0o555),
        ("/sys", 0o555),
        ("/dev", 0o755),
        ("/tmp", 0o1777),
        ("/run", 0o755),
        ("/usr/bin", 0o755),
        ("/sbin", 0o755),
        (APP_LAYER_DIR, 0o755),
        (APP_DIR, 0o755),
        (DATA_DIR, 0o755),
    ] {
        staging.dir(dir, mode)?;
    }
    staging.file(INIT_PATH, inputs.init, 0o755)?;
    staging.file(NODE_PATH, inputs.node, 0o755)?;
    for lib in inputs.libraries {
        staging.file(&lib.guest_path, &lib.host_path, 0o755)?;
    }
    for (path, contents, mode) in etc_files() {
        staging.write(path, &contents, mode)?;
    }
    staging.symlink("/etc/hosts", &relative_to_etc(RUN_HOSTS))?;
    staging.symlink("/etc/resolv.conf", &relative_to_etc(RUN_RESOLV_CONF))?;
    Ok(())
}

/// The target of a symlink in `/etc` to the absolute guest path `path`
/// (`/run/hosts` → `../run/hosts`), so it also resolves on the host.
fn relative_to_etc(path: &str) -> PathBuf {
    Path::new("..").join(path.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_file(path: &Path, bytes: &[u8]) {
        fs::write(path, bytes).unwrap();
    }

    struct Inputs {
        _dir: tempfile::TempDir,
        init: PathBuf,
        node: PathBuf,
        libs: Vec<Library>,
    }

    fn inputs() -> Inputs {
        let dir = tempfile::tempdir().unwrap();
        let init = dir.path().join("init");
        let node = dir.path().join("node");
        let lib = dir.path().join("libc.so.6");
        write_file(&init, b"init");
        write_file(&node, b"node");
        write_file(&lib, b"libc");
        Inputs {
            libs: vec![Library {
                name: "libc.so.6".into(),
                host_path: lib,
                guest_path: "/lib/x86_64-linux-gnu/libc.so.6".into(),
                outside_loader_path: false,
            }],
            init,
            node,
            _dir: dir,
        }
    }

    fn key(i: &Inputs, format: RootfsFormat) -> String {
        runtime_key(&RuntimeInputs {
            init: &i.init,
            node: &i.node,
            libraries: &i.libs,
            format,
        })
        .unwrap()
    }

    #[test]
    fn runtime_key_changes_with_every_input_and_only_then() {
        let i = inputs();
        let base = key(&i, RootfsFormat::ErofsLz4hc);
        assert_eq!(base.len(), 64);
        assert_eq!(key(&i, RootfsFormat::ErofsLz4hc), base, "stable");
        assert_ne!(key(&i, RootfsFormat::SquashfsXz), base, "format");
        write_file(&i.init, b"init 2");
        let after_init = key(&i, RootfsFormat::ErofsLz4hc);
        assert_ne!(after_init, base, "init");
        write_file(&i.node, b"node 2");
        assert_ne!(key(&i, RootfsFormat::ErofsLz4hc), after_init, "node");
        let mut moved = inputs();
        moved.libs[0].guest_path = "/lib64/libc.so.6".into();
        let other = inputs();
        assert_ne!(
            key(&moved, RootfsFormat::ErofsLz4hc),
            key(&other, RootfsFormat::ErofsLz4hc),
            "library path"
        );
    }

    #[test]
    fn a_cached_layer_needs_a_matching_checksum_file() {
        let dir = tempfile::tempdir().unwrap();
        let layer = dir.path().join("runtime-x.img");
        write_file(&layer, b"12345");
        let sums = sum_path(&layer);
        assert_eq!(read_cached(&layer, &sums), None, "no checksum file");
        let hex64 = "a".repeat(64);
        let tree = format!("{} {} 1", "b".repeat(64), "c".repeat(64));
        write_file(&sums, format!("{hex64} 5\n").as_bytes());
        assert_eq!(
            read_cached(&layer, &sums),
            None,
            "a checksum file without the tree"
        );
        write_file(&sums, format!("{hex64} 5 {tree}\n").as_bytes());
        assert_eq!(
            read_cached(&layer, &sums),
            Some(Layer {
                path: layer.clone(),
                sha256: hex64.clone(),
                size: 5,
                verity: Verity {
                    root_hash: "b".repeat(64),
                    salt: "c".repeat(64),
                    data_blocks: 1,
                },
            })
        );
        write_file(&sums, format!("{hex64} 6 {tree}\n").as_bytes());
        assert_eq!(read_cached(&layer, &sums), None, "size differs");
        write_file(&sums, format!("{hex64} 5 {tree}0x\n").as_bytes());
        assert_eq!(read_cached(&layer, &sums), None, "a malformed tree");
    }

    #[test]
    fn prune_keeps_the_most_recently_used_layers() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let mut paths = Vec::new();
        for n in 0..KEEP_RUNTIME_LAYERS + 2 {
            let path = dir.path().join(format!("runtime-erofs-{n:016}.img"));
            write_file(&path, b"x");
            write_file(&sum_path(&path), b"x");
            let age = std::time::Duration::from_secs(60 * n as u64);
            fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(now - age)
                .unwrap();
            paths.push(path);
        }
        write_file(&dir.path().join("other.img"), b"x");
        // The oldest is the one just used: it stays.
        prune(dir.path(), paths.last().unwrap());
        let kept: Vec<bool> = paths.iter().map(|p| p.exists()).collect();
        let mut expected = vec![true; KEEP_RUNTIME_LAYERS];
        expected.extend([false, true]);
        assert_eq!(kept, expected);
        assert!(!sum_path(&paths[KEEP_RUNTIME_LAYERS]).exists());
        assert!(dir.path().join("other.img").exists());
    }

    #[test]
    fn runtime_layer_has_the_mount_points_etc_and_no_app() {
        let i = inputs();
        let root = tempfile::tempdir().unwrap();
        let staging = Staging::new(root.path().to_owned());
        stage_runtime(
            &RuntimeInputs {
                init: &i.init,
                node: &i.node,
                libraries: &i.libs,
                format: RootfsFormat::ErofsLz4hc,
            },
            &staging,
        )
        .unwrap();
        let r = root.path();
        for dir in ["layers/app", "app", "data", "tmp", "proc"] {
            assert!(r.join(dir).is_dir(), "{dir}");
        }
        assert_eq!(fs::read_dir(r.join("app")).unwrap().count(), 0);
        assert_eq!(fs::read(r.join("sbin/init")).unwrap(), b"init");
        assert_eq!(fs::read(r.join("usr/bin/node")).unwrap(), b"node");
        assert!(r.join("lib/x86_64-linux-gnu/libc.so.6").is_file());
        assert_eq!(
            fs::read_to_string(r.join("etc/passwd")).unwrap(),
            "root:x:0:0:root:/tmp:/sbin/init\napp:x:1000:1000:app:/tmp:/sbin/init\n"
        );
        assert_eq!(
            fs::read_to_string(r.join("etc/group")).unwrap(),
            "root:x:0:\napp:x:1000:\n"
        );
        assert_eq!(
            fs::read_link(r.join("etc/hosts")).unwrap(),
            Path::new("../run/hosts")
        );
        assert_eq!(
            fs::read_link(r.join("etc/resolv.conf")).unwrap(),
            Path::new("../run/resolv.conf")
        );
    }
}
