//! Real node_modules (issue #7): what `nodeos build` refuses in them (a
//! lockfile out of sync, no node_modules, an addon for another platform or
//! Node.js; no VM), `nodeos nodedir` for node-gyp, and a VM test of
//! better-sqlite3, a native addon compiled from source against the guest's
//! Node.js, keeping its rows on `/data` across boots.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use nodeos_manifest::Profile;
use sha2::{Digest, Sha256};

use crate::support::*;

/// Generous: TCG on a loaded 2-core CI machine.
const BOOT: Duration = Duration::from_secs(240);
const STOP: Duration = Duration::from_secs(60);

/// A package `name@version` in `dir` with an `index.js`.
fn package(dir: &Path, name: &str, version: &str) {
    write_project(
        dir,
        &format!(r#"{{"name":"{name}","version":"{version}"}}"#),
        &[("index.js", "module.exports = 1;\n")],
    );
}

/// An app for Node.js 22 depending on `a@^1.0.0`, with `node_modules/a`
/// at 1.0.0 and a package-lock.json that locks a at `locked`.
fn app_with_lockfile(dir: &Path, locked: &str) {
    write_project(
        dir,
        r#"{"name":"app","version":"1.0.0","engines":{"node":"22"},"dependencies":{"a":"^1.0.0"}}"#,
        &[
            ("index.js", "require('a');\n"),
            (
                "package-lock.json",
                &format!(
                    r#"{{"name":"app","version":"1.0.0","lockfileVersion":3,"requires":true,"packages":{{
                        "":{{"name":"app","version":"1.0.0","dependencies":{{"a":"^1.0.0"}}}},
                        "node_modules/a":{{"version":"{locked}"}}}}}}"#
                ),
            ),
        ],
    );
    package(&dir.join("node_modules/a"), "a", "1.0.0");
}

fn build(dir: &Path) -> Output {
    run(nodeos().arg("build").arg(dir).args(["--profile", "dev"]))
}

#[test]
fn build_refuses_node_modules_out_of_sync_with_the_lockfile() {
    let tmp = tempfile::tempdir().unwrap();
    app_with_lockfile(tmp.path(), "1.1.0");
    let out = build(tmp.path());
    assert_exit(&out, 3);
    assert!(
        stderr(&out).contains(
            "node_modules is out of sync with package-lock.json (a: installed 1.0.0, lockfile 1.1.0); run `npm ci`"
        ),
        "{}",
        stderr(&out)
    );

    // A dependency added to package.json but not to the lockfile.
    write_project(
        tmp.path(),
        r#"{"name":"app","version":"1.0.0","dependencies":{"a":"^1.0.0","b":"2"}}"#,
        &[],
    );
    let out = build(tmp.path());
    assert_exit(&out, 3);
    assert!(
        stderr(&out).contains("package-lock.json does not list dependency b; run `npm install`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn build_without_node_modules_says_to_run_npm_ci() {
    let tmp = tempfile::tempdir().unwrap();
    app_with_lockfile(tmp.path(), "1.0.0");
    std::fs::remove_dir_all(tmp.path().join("node_modules")).unwrap();
    let out = build(tmp.path());
    assert_exit(&out, 3);
    assert!(
        stderr(&out).contains("node_modules is missing; run `npm ci` in the project first"),
        "{}",
        stderr(&out)
    );
}

/// The first 64 bytes of an ELF shared object for Linux on aarch64.
fn aarch64_elf() -> Vec<u8> {
    let mut header = vec![0u8; 64];
    header[..8].copy_from_slice(b"\x7fELF\x02\x01\x01\x00");
    header[16] = 3; // ET_DYN
    header[18..20].copy_from_slice(&183u16.to_le_bytes()); // EM_AARCH64
    header[20] = 1;
    header
}

#[test]
fn build_refuses_an_addon_for_another_platform_and_names_its_package() {
    let tmp = tempfile::tempdir().unwrap();
    app_with_lockfile(tmp.path(), "1.0.0");
    let addon = tmp.path().join("node_modules/a/build/Release/a.node");
    std::fs::create_dir_all(addon.parent().unwrap()).unwrap();
    std::fs::write(&addon, aarch64_elf()).unwrap();
    // The same file where the package keeps builds for other platforms is
    // left to the package's loader.
    let prebuilt = tmp
        .path()
        .join("node_modules/a/prebuilds/linux-arm64/a.node");
    std::fs::create_dir_all(prebuilt.parent().unwrap()).unwrap();
    std::fs::write(&prebuilt, aarch64_elf()).unwrap();

    let out = build(tmp.path());
    assert_exit(&out, 3);
    assert!(
        stderr(&out).contains(
            "native addon node_modules/a/build/Release/a.node (a@1.0.0) is an ELF binary for Linux aarch64, \
             but the guest runs Linux x86-64 with glibc; install node_modules on Linux x86-64 (e.g. run \
             `npm_config_nodedir=$(npx nodeos nodedir) npm_config_build_from_source=true npm rebuild a` there), or list it in .nodeosignore if the app never loads it"
        ),
        "{}",
        stderr(&out)
    );

    // A Mach-O (node_modules installed on a Mac).
    let mut macho = vec![0xcf, 0xfa, 0xed, 0xfe, 0x0c, 0, 0, 0x01];
    macho.resize(64, 0);
    std::fs::write(&addon, macho).unwrap();
    let out = build(tmp.path());
    assert_exit(&out, 3);
    assert!(
        stderr(&out).contains("(a@1.0.0) is a macOS arm64 (Mach-O) binary"),
        "{}",
        stderr(&out)
    );
}

/// Compiles a shared library exporting `symbol` into `path`; `false`
/// without a C compiler.
fn compile_library(path: &Path, symbol: &str) -> bool {
    let source = path.with_extension("c");
    std::fs::write(&source, format!("void {symbol}(void) {{}}\n")).unwrap();
    let built = Command::new("gcc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(path)
        .arg(&source)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    std::fs::remove_file(source).unwrap();
    built
}

#[test]
fn build_refuses_an_addon_built_for_another_node_abi() {
    let tmp = tempfile::tempdir().unwrap();
    app_with_lockfile(tmp.path(), "1.0.0");
    let addon = tmp.path().join("node_modules/a/build/Release/a.node");
    std::fs::create_dir_all(addon.parent().unwrap()).unwrap();
    // Built against Node.js 20's headers (as npm on a Node.js 20 host
    // builds it without a nodedir) for an image with Node.js 22.
    assert!(
        compile_library(&addon, "node_register_module_v115"),
        "gcc is needed"
    );
    let out = build(tmp.path());
    assert_exit(&out, 3);
    let err = stderr(&out);
    assert!(
        err.contains(
            "native addon node_modules/a/build/Release/a.node (a@1.0.0) was built for Node.js 20 \
             (NODE_MODULE_VERSION 115), but the image runs Node.js 22."
        ) && err.contains("(NODE_MODULE_VERSION 127)")
            && err.contains(
                "; rebuild it for the guest: `npm_config_nodedir=$(npx nodeos nodedir) \
             npm_config_build_from_source=true npm rebuild a`"
            ),
        "{err}"
    );
}

/// `nodeos nodedir DIR`: the headers directory, on stdout alone.
fn nodedir(project: &Path) -> PathBuf {
    let out = run(nodeos().arg("nodedir").arg(project));
    assert_exit(&out, 0);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout:?}");
    PathBuf::from(stdout.trim_end())
}

#[test]
fn nodedir_gives_node_gyp_the_guest_node_headers() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("addon");
    // A project whose entry does not exist yet (compiled later): nodedir
    // only reads engines.node.
    write_project(
        &project,
        r#"{"name":"addon","version":"1.0.0","main":"dist/index.js","gypfile":true,"engines":{"node":"22"}}"#,
        &[
            (
                "binding.gyp",
                r#"{"targets":[{"target_name":"addon","sources":["addon.cc"]}]}"#,
            ),
            ("addon.cc", "#include <node.h>\nNODE_MODULE_INIT() {}\n"),
        ],
    );
    let dir = nodedir(&project);
    assert!(dir.is_absolute(), "{}", dir.display());
    for file in ["node_version.h", "node.h", "common.gypi", "config.gypi"] {
        assert!(dir.join("include/node").join(file).is_file(), "{file}");
    }
    let header = std::fs::read_to_string(dir.join("include/node/node_version.h")).unwrap();
    assert!(header.contains("#define NODE_MAJOR_VERSION 22"));
    // Again: the same directory, from the cache.
    assert_eq!(nodedir(&project), dir);

    // npm runs node-gyp for a package with binding.gyp; with the nodedir
    // it builds for the guest's Node.js 22, whatever the host's is.
    let out = run(Command::new("npm")
        .arg("install")
        .current_dir(&project)
        .env("npm_config_nodedir", &dir));
    assert!(out.status.success(), "npm install: {out:?}");
    let symbols = nodeos_image::elf::exported_symbols(
        &project.join("build/Release/addon.node"),
        &["node_register_module_v"],
    )
    .unwrap();
    assert_eq!(symbols, ["node_register_module_v127"]);
}

#[test]
fn nodedir_of_a_directory_without_package_json_exits_3() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(nodeos().arg("nodedir").arg(tmp.path()));
    assert_exit(&out, 3);
    assert!(stderr(&out).contains("no package.json"), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
}

// --- better-sqlite3 in the guest (VM) ----------------------------------

/// Copies the sqlite-app fixture into `dir` and gives it node_modules,
/// installed with `npm ci` against the guest's Node.js headers (the addon
/// compiled from source: prebuilt binaries are not fetched) or copied from
/// the cache of an earlier install of the same package.json, lockfile and
/// Node.js.
fn sqlite_app(dir: &Path) {
    let fixture = fixture("sqlite-app");
    std::fs::create_dir_all(dir).unwrap();
    for file in [
        "package.json",
        "package-lock.json",
        "main.js",
        ".nodeosignore",
    ] {
        std::fs::copy(fixture.join(file), dir.join(file)).unwrap();
    }
    let headers = nodedir(dir);
    let mut key = Sha256::new();
    for file in ["package.json", "package-lock.json"] {
        key.update(std::fs::read(dir.join(file)).unwrap());
    }
    key.update(headers.as_os_str().as_encoded_bytes());
    let key: String = key.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let cache = nodeos_manifest::cache_dir()
        .unwrap()
        .join("test-fixtures")
        .join(format!("sqlite-app-{key}"));
    if !cache.join("node_modules").is_dir() {
        install(dir, &headers);
        save(&dir.join("node_modules"), &cache);
    } else {
        copy_dir(&cache.join("node_modules"), dir);
    }
}

/// `npm ci` with the addon compiled for the guest.
fn install(dir: &Path, headers: &Path) {
    for tool in ["g++", "make", "python3"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(found, "{tool} is needed to compile better-sqlite3");
    }
    let started = Instant::now();
    let out = run(Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .env("npm_config_nodedir", headers)
        .env("npm_config_build_from_source", "true"));
    assert!(
        out.status.success(),
        "npm ci failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    eprintln!(
        "addons: npm ci with better-sqlite3 compiled from source took {:.0?}",
        started.elapsed()
    );
}

/// Puts `node_modules` into the cache as `cache/node_modules`, atomically.
fn save(node_modules: &Path, cache: &Path) {
    let parent = cache.parent().unwrap();
    std::fs::create_dir_all(parent).unwrap();
    let tmp = tempfile::Builder::new()
        .prefix(".sqlite-app-")
        .tempdir_in(parent)
        .unwrap();
    copy_dir(node_modules, tmp.path());
    // Another run may have put it there meanwhile: then this copy goes.
    if std::fs::rename(tmp.path(), cache).is_ok() {
        let _ = tmp.keep();
    }
}

/// `cp -a from into/`.
fn copy_dir(from: &Path, into: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(into)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "cp -a {} {}",
        from.display(),
        into.display()
    );
}

/// `nodeos run IMAGE --accel tcg -p PORT:3000 --data VOLUME` in the background.
fn boot(image: &Path, volume: &Path, port: u16) -> NodeosRun {
    NodeosRun::spawn(
        nodeos()
            .arg("run")
            .arg(image)
            .args(["--accel", "tcg", "-p", &format!("{port}:3000"), "--data"])
            .arg(volume)
            .args(["--data-size", "64M"]),
    )
}

/// The app's answer to GET / once it answers.
#[track_caller]
fn rows(run: &NodeosRun, port: u16) -> serde_json::Value {
    let body = http_get_until_ok(port, "/", BOOT)
        .unwrap_or_else(|e| panic!("the app never answered: {e}\n{}", run.transcript()));
    serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("GET /: {e}: {body:?}\n{}", run.transcript()))
}

#[test]
fn better_sqlite3_built_for_the_guest_keeps_its_rows_on_data_across_boots() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("sqlite-app");
    sqlite_app(&project);
    let image = build_image(&project, Some(tmp.path()), Profile::Dev);
    let volume = tmp.path().join("app.data.img");
    let port = free_port();

    let mut run = boot(&image, &volume, port);
    let first = rows(&run, port);
    assert_eq!(
        first["rows"],
        serde_json::json!([{"id": 1, "note": "boot 1"}]),
        "{first}\n{}",
        run.transcript()
    );
    assert!(
        first["sqlite"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.")),
        "{first}"
    );
    assert!(
        run.stdout()
            .contains(r#"sqlite-app: rows [{"id":1,"note":"boot 1"}]"#),
        "{}",
        run.transcript()
    );
    run.interrupt();
    assert_eq!(run.wait(STOP), Some(0), "{}", run.transcript());

    // The same volume again: the first boot's row is still there.
    let mut run = boot(&image, &volume, port);
    let second = rows(&run, port);
    assert_eq!(
        second["rows"],
        serde_json::json!([{"id": 1, "note": "boot 1"}, {"id": 2, "note": "boot 2"}]),
        "{second}\n{}",
        run.transcript()
    );
    run.interrupt();
    assert_eq!(run.wait(STOP), Some(0), "{}", run.transcript());
}
