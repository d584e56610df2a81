//! `nodeos build`: plan (project, Node.js, kernel, init, files) then write
//! the image directory through a temporary directory renamed at the end.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use nodeos_manifest::update::PublicKey;
use nodeos_manifest::verity::{self, Verity};
use nodeos_manifest::{
    APP_DIR, APP_LAYER_TREE, AppConfig, Artifact, KernelInfo, LayersInfo, MANIFEST_FILE,
    MANIFEST_FORMAT, Manifest, NODE_PATH, NodeInfo, Profile,
};
use sha2::{Digest, Sha256};

use crate::deps::{self, AppFile, FileKind};
use crate::elf::{self, ElfError, LibrarySearch};
use crate::kernel::{self, Kernel, KernelError};
use crate::layers::{self, APP_FILE, Layer, LayerError, RUNTIME_FILE, RuntimeInputs};
use crate::node::{self, NodeError};
use crate::project::{Project, ProjectError};
use crate::registry::RegistryConfig;
use crate::rootfs::{LayerKind, RootfsError, RootfsFormat, Staging};
use crate::{Reporter, cache, config};

/// File name of the kernel inside an image directory.
pub const KERNEL_FILE: &str = "kernel";
pub use nodeos_manifest::settings::DEFAULT_PORT;

/// What to build and how.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The npm project (directory holding package.json).
    pub project_dir: PathBuf,
    /// Where `<name>.nodeos/` goes; default `<project>/dist`.
    pub out_dir: Option<PathBuf>,
    pub profile: Profile,
    /// A bzImage to use instead of nodeos's own kernel.
    pub kernel: Option<PathBuf>,
    /// The static nodeos-init binary to install as `/sbin/init`.
    pub init: PathBuf,
    /// Timestamp of every file in the app layer, in seconds since 1970
    /// (`SOURCE_DATE_EPOCH`); `None` is 0. (The runtime layer's files are
    /// always dated 0.) Builds of the same inputs with the same timestamp
    /// are byte-identical.
    pub source_date_epoch: Option<u64>,
    /// The key updates must be signed with (`nodeos build --key`); it
    /// replaces package.json's `nodeos.update.publicKey` in the image's
    /// app.json and manifest. `None` keeps package.json's, if any.
    pub update_key: Option<PublicKey>,
}

/// A finished image directory.
#[derive(Debug, Clone)]
pub struct Built {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Project(#[from] ProjectError),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Elf(#[from] ElfError),
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Cache(#[from] cache::CacheError),
    #[error(
        "nodeos-init not found at {path}; build it with `cargo build -p nodeos-init --release --target x86_64-unknown-linux-musl` or set NODEOS_INIT"
    )]
    InitMissing { path: PathBuf },
    #[error("{path} is not a static binary, so it cannot be the guest's /sbin/init")]
    InitNotStatic { path: PathBuf },
    #[error("cannot write the image to {path}")]
    Output {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Builds the image directory for `options.project_dir`.
///
/// Cheap checks of the user's input (package.json, the files and
/// dependencies, a `--kernel` path) come before anything slow (downloads,
/// the kernel build, packing).
pub fn build(options: &BuildOptions, reporter: &dyn Reporter) -> Result<Built, BuildError> {
    let project = with_update_key(Project::load(&options.project_dir)?, options.update_key)?;
    reporter.status(
        "Building",
        &format!(
            "{} v{} ({} profile)",
            project.name,
            project.version,
            options.profile.as_str()
        ),
    );
    // Output directories are `*.nodeos`, which app_files always leaves out.
    let files = deps::app_files(&project, &[])?;
    report_files(&files, reporter);
    let given_kernel = options.kernel.as_deref().map(kernel::inspect).transpose()?;

    let registry = RegistryConfig::from_npm(&project.dir)?;
    let node = node::fetch_node(project.engines_node.as_deref(), &registry, reporter)?;
    // Addons for another platform or Node.js are the user's to fix: said
    // before the kernel build.
    let mut binaries = vec![node.binary.clone()];
    binaries.extend(deps::native_addons(&project, &files, &node)?);
    check_init(&options.init)?;
    let kernel = match given_kernel {
        Some(kernel) => kernel,
        None => kernel::project_kernel(&cache::cache_dir()?, reporter)?,
    };

    // An addon's $ORIGIN is its place under /app; libraries it ships in the
    // app tree are already part of the files.
    let search = LibrarySearch {
        mapped_dirs: vec![(PathBuf::from(APP_DIR), project.dir.clone())],
        ..LibrarySearch::default()
    };
    let libraries = elf::resolve_libraries(&binaries, &search)?;
    for addon in &binaries[1..] {
        reporter.detail(&format!("native addon {}", addon.display()));
    }
    for lib in &libraries {
        reporter.detail(&format!(
            "library {} = {} → {}",
            lib.name,
            lib.host_path.display(),
            lib.guest_path.display()
        ));
    }
    for lib in libraries.iter().filter(|lib| lib.outside_loader_path) {
        reporter.warn(&format!(
            "{} was found in {}, which the guest's dynamic loader does not search; it may fail to load",
            lib.name,
            lib.guest_path.parent().unwrap_or(Path::new("/")).display()
        ));
    }

    let format = RootfsFormat::for_profile(options.profile);
    let runtime = layers::runtime_layer(
        &cache::cache_dir()?,
        &RuntimeInputs {
            init: &options.init,
            node: &node.binary,
            libraries: &libraries,
            format,
        },
        reporter,
    )?;

    let plan = Plan {
        project: &project,
        node: &node,
        kernel: &kernel,
        runtime: &runtime,
        files: &files,
        format,
        profile: options.profile,
        epoch: options.source_date_epoch.unwrap_or(0),
    };
    let out_dir = match &options.out_dir {
        Some(dir) => absolute(dir),
        None => project.dir.join("dist"),
    };
    let created_out_dir = !out_dir.exists();
    let result = write_output(&plan, &out_dir, reporter);
    if result.is_err() && created_out_dir {
        let _ = fs::remove_dir(&out_dir);
    }
    let built = result?;
    reporter.status("Finished", &built.dir.display().to_string());
    Ok(built)
}

/// Tells `--verbose` what goes into /app: how many files and bytes, and
/// which installed packages.
fn report_files(files: &[AppFile], reporter: &dyn Reporter) {
    let mut bytes = 0;
    let mut count = 0;
    let mut packages = Vec::new();
    for file in files {
        if let FileKind::File { .. } = file.kind {
            count += 1;
            bytes += fs::metadata(&file.source).map(|m| m.len()).unwrap_or(0);
            if let Some(package) = installed_package(&file.dest) {
                packages.push(package.display().to_string());
            }
        }
    }
    reporter.detail(&format!(
        "app: {count} files, {bytes} bytes, {} installed packages",
        packages.len()
    ));
    for package in packages {
        reporter.detail(&format!("package {package}"));
    }
}

/// The package directory of `dest` if it is an installed package's
/// manifest: `…/node_modules/name/package.json` or
/// `…/node_modules/@scope/name/package.json`.
fn installed_package(dest: &Path) -> Option<&Path> {
    if dest.file_name()? != "package.json" {
        return None;
    }
    let dir = dest.parent()?;
    let parent = dir.parent()?;
    let modules = match parent.file_name()?.to_str()? {
        scope if scope.starts_with('@') => parent.parent()?,
        _ => parent,
    };
    (modules.file_name()? == "node_modules").then_some(dir)
}

/// `project` with its update key replaced by `key`, if one is given, else
/// by the key file package.json names, if it does: the key then goes into
/// app.json (what the agent trusts) and the manifest (what `nodeos deploy`
/// checks) alike.
fn with_update_key(mut project: Project, key: Option<PublicKey>) -> Result<Project, ProjectError> {
    let key = match (key, &project.update_key_file) {
        (Some(key), _) => Some(key),
        (None, Some(file)) => {
            Some(
                config::read_key_file(file).map_err(|e| ProjectError::Config {
                    path: project.dir.join("package.json"),
                    key: e.key,
                    problem: e.problem,
                    help: e.help,
                })?,
            )
        }
        (None, None) => None,
    };
    if let Some(key) = key {
        project.settings.update.public_key = Some(key);
    }
    Ok(project)
}

/// Writes `<out_dir>/<name>.nodeos/` through a temporary directory beside
/// it. A lock on the output directory itself serialises concurrent builds
/// into it, so leftovers of an interrupted build can be removed safely.
fn write_output(
    plan: &Plan<'_>,
    out_dir: &Path,
    reporter: &dyn Reporter,
) -> Result<Built, BuildError> {
    let out_err = |source| BuildError::Output {
        path: out_dir.to_owned(),
        source,
    };
    let name = plan.project.image_name();
    fs::create_dir_all(out_dir).map_err(out_err)?;
    let lock = File::open(out_dir).map_err(out_err)?;
    lock.lock().map_err(out_err)?;
    remove_leftovers(out_dir, &name);

    let final_dir = out_dir.join(format!("{name}.nodeos"));
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.tmp-"))
        .suffix(".nodeos")
        .tempdir_in(out_dir)
        .map_err(out_err)?;
    let manifest = write_image(plan, tmp.path(), reporter)?;
    replace_dir(tmp, &final_dir)?;
    Ok(Built {
        dir: final_dir,
        manifest,
    })
}

/// Removes what an interrupted build of `name` left in `out_dir`.
fn remove_leftovers(out_dir: &Path, name: &str) {
    let prefixes = [format!(".{name}.tmp-"), format!(".{name}.old-")];
    let Ok(entries) = fs::read_dir(out_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        if prefixes.iter().any(|p| file_name.starts_with(p.as_str()))
            && file_name.ends_with(".nodeos")
        {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Everything decided before anything is written.
struct Plan<'a> {
    project: &'a Project,
    node: &'a node::NodeRuntime,
    kernel: &'a Kernel,
    /// The cached runtime layer.
    runtime: &'a Layer,
    files: &'a [AppFile],
    format: RootfsFormat,
    profile: Profile,
    /// Timestamp of every file in the app layer.
    epoch: u64,
}

/// Writes the kernel, both layers and the manifest into `dir`.
fn write_image(
    plan: &Plan<'_>,
    dir: &Path,
    reporter: &dyn Reporter,
) -> Result<Manifest, BuildError> {
    let out_err = |path: &Path| {
        let path = path.to_owned();
        move |source| BuildError::Output { path, source }
    };
    let root = dir.join("app-layer");
    fs::create_dir(&root).map_err(out_err(&root))?;
    let staging = Staging::new(root.clone());
    stage_app(plan.project, plan.files, &staging)?;
    reporter.status(
        "Packing",
        &format!(
            "app layer ({} {})",
            plan.format.fs_type(),
            plan.format.compression()
        ),
    );
    let app = dir.join(APP_FILE);
    let spinner = reporter.spinner("packing the app layer");
    let packed = staging.pack(&app, plan.format, LayerKind::App, plan.epoch);
    spinner.finish();
    let app_verity = packed?;
    fs::remove_dir_all(&root).map_err(out_err(&root))?;

    let runtime = dir.join(RUNTIME_FILE);
    fs::copy(&plan.runtime.path, &runtime).map_err(out_err(&runtime))?;
    let kernel_path = dir.join(KERNEL_FILE);
    fs::copy(&plan.kernel.path, &kernel_path).map_err(out_err(&kernel_path))?;

    let mut artifacts = BTreeMap::new();
    let kernel_sum = sha256_file(&kernel_path).map_err(out_err(&kernel_path))?;
    let app_sum = sha256_file(&app).map_err(out_err(&app))?;
    // The runtime layer was checksummed when it was cached; `nodeos run`
    // checks the copy.
    let runtime_sum = (plan.runtime.sha256.clone(), plan.runtime.size);
    for (key, file, (sha256, size), verity) in [
        ("kernel", KERNEL_FILE, kernel_sum, None),
        ("app", APP_FILE, app_sum, Some(app_verity.clone())),
        (
            "runtime",
            RUNTIME_FILE,
            runtime_sum,
            Some(plan.runtime.verity.clone()),
        ),
    ] {
        artifacts.insert(
            key.to_owned(),
            Artifact {
                path: file.to_owned(),
                sha256,
                size,
                verity,
            },
        );
    }
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        name: plan.project.name.clone(),
        version: plan.project.version.clone(),
        profile: plan.profile,
        node: NodeInfo {
            version: plan.node.version.clone(),
            range: plan.node.range.clone(),
            integrity: plan.node.integrity.clone(),
        },
        kernel: KernelInfo {
            version: plan.kernel.version.clone(),
            cmdline: kernel_cmdline(plan.format, &plan.runtime.verity, &app_verity),
            artifact: "kernel".to_owned(),
        },
        layers: LayersInfo {
            format: plan.format.fs_type().to_owned(),
            compression: plan.format.compression().to_owned(),
            runtime: "runtime".to_owned(),
            app: "app".to_owned(),
        },
        data: plan.project.settings.data,
        vm: plan.project.vm.clone(),
        update_key: plan.project.settings.update.public_key,
        artifacts,
        builder: format!("nodeos {}", env!("CARGO_PKG_VERSION")),
    };
    let manifest_path = dir.join(MANIFEST_FILE);
    fs::write(&manifest_path, manifest.to_json()).map_err(out_err(&manifest_path))?;
    Ok(manifest)
}

/// The kernel command line an image boots with: the runtime layer, checked
/// by dm-verity, is the root filesystem; the app layer is checked too.
/// Booted from the image's files, they are the first two virtio disks;
/// [`nodeos_manifest::slots::slot_cmdline`] makes them a slot's partitions.
pub fn kernel_cmdline(format: RootfsFormat, runtime: &Verity, app: &Verity) -> String {
    format!(
        "console=ttyS0 root={} ro rootfstype={} panic=-1 quiet {}",
        verity::ROOT,
        format.fs_type(),
        verity::dm_create(runtime, "/dev/vda", app, "/dev/vdb")
    )
}

/// Lays out the app layer: `app.json` and the app's files under `app/`.
fn stage_app(project: &Project, files: &[AppFile], staging: &Staging) -> Result<(), BuildError> {
    let config = app_config(project);
    let json = serde_json::to_vec_pretty(&config).expect("app config serialises");
    staging.write(LAYER_APP_CONFIG, &json, 0o644)?;
    let app = Path::new(APP_LAYER_TREE);
    staging.dir(app, 0o755)?;
    for file in files {
        let guest = app.join(&file.dest);
        match &file.kind {
            FileKind::Dir => staging.dir(&guest, 0o755)?,
            FileKind::File { executable } => staging.file(
                &guest,
                &file.source,
                if *executable { 0o755 } else { 0o644 },
            )?,
            FileKind::Symlink { target } => staging.symlink(&guest, target)?,
        }
    }
    Ok(())
}

/// `app.json` at the root of the app layer ([`nodeos_manifest::APP_CONFIG_PATH`] in the guest).
const LAYER_APP_CONFIG: &str = "app.json";

/// What nodeos-init starts: node on the entry, in the app's root, with the
/// settings and environment of package.json's `"nodeos"` key. `NODE_ENV`
/// is `production` unless `nodeos.env` says otherwise; `PORT`, `PATH` and
/// `HOME` are left to init (`PORT` comes from `settings.port`).
pub fn app_config(project: &Project) -> AppConfig {
    let mut args = project.node_args.clone();
    args.push(project.entry.clone());
    args.extend(project.entry_args.iter().cloned());
    let mut env = BTreeMap::from([("NODE_ENV".to_owned(), "production".to_owned())]);
    env.extend(project.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    AppConfig {
        name: project.name.clone(),
        node: NODE_PATH.to_owned(),
        workdir: APP_DIR.to_owned(),
        args,
        env,
        entry: Some(format!("{APP_DIR}/{}", project.entry)),
        settings: project.settings.clone(),
    }
}

/// Refuses an init that would need a dynamic loader inside the guest.
fn check_init(path: &Path) -> Result<(), BuildError> {
    if !path.is_file() {
        return Err(BuildError::InitMissing {
            path: path.to_owned(),
        });
    }
    if !is_static_binary(path) {
        return Err(BuildError::InitNotStatic {
            path: path.to_owned(),
        });
    }
    Ok(())
}

/// Whether `path` is an ELF executable that needs no dynamic loader and no
/// shared library, as the guest's /sbin/init must be.
pub fn is_static_binary(path: &Path) -> bool {
    elf::read_elf_deps(path).is_ok_and(|deps| deps.interpreter.is_none() && deps.needed.is_empty())
}

/// Moves the finished temporary directory to `dest`, replacing whatever
/// was there. If anything fails, the previous image is put back and the new
/// one removed.
fn replace_dir(new: tempfile::TempDir, dest: &Path) -> Result<(), BuildError> {
    let err = |source| BuildError::Output {
        path: dest.to_owned(),
        source,
    };
    if !dest.exists() {
        fs::rename(new.path(), dest).map_err(err)?;
        let _ = new.keep();
        return Ok(());
    }
    let parent = dest.parent().unwrap_or(Path::new("."));
    let name = dest.file_stem().unwrap_or_default().to_string_lossy();
    let old = tempfile::Builder::new()
        .prefix(&format!(".{name}.old-"))
        .suffix(".nodeos")
        .tempdir_in(parent)
        .map_err(err)?;
    // rename(2) replaces an empty directory, so `old` takes dest's place.
    fs::rename(dest, old.path()).map_err(err)?;
    if let Err(e) = fs::rename(new.path(), dest) {
        let _ = fs::rename(old.path(), dest);
        let _ = old.keep();
        return Err(err(e));
    }
    let _ = new.keep();
    Ok(())
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// Lower-case hex sha256 and size of a file.
pub fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((crate::hex(&hasher.finalize()), size))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn new_image(parent: &Path, marker: &str) -> tempfile::TempDir {
        let dir = tempfile::Builder::new()
            .prefix(".hello.tmp-")
            .suffix(".nodeos")
            .tempdir_in(parent)
            .unwrap();
        fs::write(dir.path().join("marker"), marker).unwrap();
        dir
    }

    #[test]
    fn replace_dir_puts_the_new_image_in_place_and_leaves_nothing_else() {
        let parent = tempfile::tempdir().unwrap();
        let dest = parent.path().join("hello.nodeos");
        replace_dir(new_image(parent.path(), "first"), &dest).unwrap();
        assert_eq!(fs::read_to_string(dest.join("marker")).unwrap(), "first");
        replace_dir(new_image(parent.path(), "second"), &dest).unwrap();
        assert_eq!(fs::read_to_string(dest.join("marker")).unwrap(), "second");
        assert_eq!(names(parent.path()), ["hello.nodeos"]);
    }

    #[test]
    fn leftovers_of_interrupted_builds_are_removed_and_nothing_else() {
        let parent = tempfile::tempdir().unwrap();
        for dir in [
            ".hello.tmp-abc.nodeos",
            ".hello.old-def.nodeos",
            "hello.nodeos",
            ".other.tmp-abc.nodeos",
            ".hello.tmp-keep",
        ] {
            fs::create_dir(parent.path().join(dir)).unwrap();
        }
        remove_leftovers(parent.path(), "hello");
        assert_eq!(
            names(parent.path()),
            [".hello.tmp-keep", ".other.tmp-abc.nodeos", "hello.nodeos"]
        );
    }

    fn project(package_json: &str) -> (tempfile::TempDir, Project) {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("package.json"), package_json).unwrap();
        fs::write(dir.path().join("index.js"), "").unwrap();
        let project = Project::load(dir.path()).unwrap();
        (dir, project)
    }

    #[test]
    fn app_config_defaults_without_a_nodeos_key() {
        let (_dir, project) = project(r#"{"name":"hello","version":"1.0.0"}"#);
        let config = app_config(&project);
        assert_eq!(config.args, ["index.js"]);
        assert_eq!(
            config.env,
            BTreeMap::from([("NODE_ENV".to_owned(), "production".to_owned())])
        );
        assert_eq!(config.settings, nodeos_manifest::Settings::default());
        assert_eq!(config.settings.port, DEFAULT_PORT);
    }

    #[test]
    fn app_config_carries_the_nodeos_key() {
        let (_dir, project) = project(
            r#"{"name":"hello","version":"1.0.0","nodeos":{
                "restart":"never","port":80,"env":{"NODE_ENV":"staging","LOG_LEVEL":"debug"}}}"#,
        );
        let config = app_config(&project);
        assert_eq!(
            config.settings.restart,
            nodeos_manifest::RestartPolicy::Never
        );
        assert_eq!(config.settings.port, 80);
        assert_eq!(config.env["NODE_ENV"], "staging");
        assert_eq!(config.env["LOG_LEVEL"], "debug");
        assert!(!config.env.contains_key("PORT"), "init sets PORT");
        let json = serde_json::to_string(&config).unwrap();
        let back: AppConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, config);
    }

    #[test]
    fn app_layer_has_the_config_and_the_app_under_app() {
        let (dir, project) = project(r#"{"name":"hello","version":"1.0.0"}"#);
        let files = deps::app_files(&project, &[]).unwrap();
        let root = tempfile::tempdir().unwrap();
        stage_app(&project, &files, &Staging::new(root.path().to_owned())).unwrap();
        let config: AppConfig =
            serde_json::from_slice(&fs::read(root.path().join("app.json")).unwrap()).unwrap();
        assert_eq!(config, app_config(&project));
        assert_eq!(names(root.path()), ["app", "app.json"]);
        assert_eq!(
            names(&root.path().join("app")),
            ["index.js", "package.json"]
        );
        assert_eq!(
            fs::read(root.path().join("app/package.json")).unwrap(),
            fs::read(dir.path().join("package.json")).unwrap()
        );
    }

    #[test]
    fn an_update_key_option_replaces_the_package_json_key() {
        let from_json = format!("ed25519:{}", "11".repeat(32));
        let (_dir, project) = project(&format!(
            r#"{{"name":"hello","version":"1.0.0","nodeos":{{"update":{{"publicKey":"{from_json}","port":7071}}}}}}"#
        ));
        assert_eq!(
            app_config(&project)
                .settings
                .update
                .public_key
                .unwrap()
                .to_string(),
            from_json
        );
        let key = PublicKey([0x22; 32]);
        let project = with_update_key(project, Some(key)).unwrap();
        let config = app_config(&project);
        assert_eq!(config.settings.update.public_key, Some(key));
        assert_eq!(config.settings.update.port, 7071, "only the key changes");
        let project = with_update_key(project, None).unwrap();
        assert_eq!(project.settings.update.public_key, Some(key));
    }

    #[test]
    fn a_bad_update_key_in_package_json_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("package.json"),
            r#"{"name":"hello","version":"1.0.0","nodeos":{"update":{"publicKey":"ed25519:beef"}}}"#,
        )
        .unwrap();
        fs::write(dir.path().join("index.js"), "").unwrap();
        let err = Project::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("nodeos.update.publicKey"), "{err}");
        assert!(err.contains("64 hex digits"), "{err}");
    }

    #[test]
    fn kernel_cmdline_names_the_root_filesystem_type_and_verifies_both_layers() {
        let layer = |fill: &str| Verity {
            root_hash: fill.repeat(64),
            salt: "5".repeat(64),
            data_blocks: 3,
        };
        let (runtime, app) = (layer("a"), layer("b"));
        let squashfs = kernel_cmdline(RootfsFormat::SquashfsXz, &runtime, &app);
        assert!(squashfs.contains("rootfstype=squashfs"), "{squashfs}");
        let erofs = kernel_cmdline(RootfsFormat::ErofsLz4hc, &runtime, &app);
        assert!(erofs.contains("rootfstype=erofs"), "{erofs}");
        assert!(erofs.contains(" root=/dev/dm-0 "), "{erofs}");
        let create = verity::dm_create(&runtime, "/dev/vda", &app, "/dev/vdb");
        assert!(
            verity::cmdline_words(&erofs).contains(&create.as_str()),
            "{erofs}"
        );
    }
}
