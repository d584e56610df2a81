//! The npm packages `scripts/release-npm` packs: installed from their
//! tarballs into a fresh project (npm offline: nothing comes from a
//! registry), `node_modules/.bin/nodeos` is the launcher that runs the
//! platform package's binary, builds an image with it and passes exit codes
//! and signals through. The build is real (Node.js from the configured
//! registry, nodeos's kernel), as in the VM tests; nothing boots.

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};
use tempfile::TempDir;

use crate::support::*;

const PLATFORM_PACKAGE: &str = "@nodeos/linux-x64";

/// Runs `scripts/release-npm` into a fresh directory; returns it and the
/// tarballs it printed (the platform package's, then nodeos's).
fn packed() -> (TempDir, Vec<PathBuf>) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("tarballs");
    let output = run(Command::new(repo_root().join("scripts/release-npm")).arg(&out));
    assert_exit(&output, 0);
    let tarballs: Vec<PathBuf> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(PathBuf::from)
        .collect();
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        tarballs,
        [
            out.join(format!("nodeos-linux-x64-{version}.tgz")),
            out.join(format!("nodeos-{version}.tgz")),
        ]
    );
    (tmp, tarballs)
}

/// `npm ARGS` in `project`, with a cache of its own (so an offline install
/// cannot be served from the user's) but the user's npm config.
fn npm(project: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("npm");
    cmd.args(args)
        .current_dir(project)
        .env("npm_config_cache", project.join("../npm-cache"))
        .env("npm_config_update_notifier", "false")
        .env("NO_COLOR", "1")
        .env_remove("NODEOS_INIT");
    cmd
}

/// `npx nodeos` in `project`; `--no` keeps npx from fetching a `nodeos`
/// when none is installed.
fn npx_nodeos(project: &Path) -> Command {
    let mut cmd = npm(project, &["exec", "--no", "--", "nodeos"]);
    cmd.stdin(Stdio::null());
    cmd
}

/// A small HTTP app in `tmp/name` with `tarballs` installed as npm does
/// them, offline, with `flags`.
fn project_with(tmp: &Path, name: &str, tarballs: &[PathBuf], flags: &[&str]) -> PathBuf {
    let dir = tmp.join(name);
    write_project(
        &dir,
        &format!(
            r#"{{"name": "{name}", "version": "1.0.0", "private": true,
                "scripts": {{"start": "node index.js"}}, "engines": {{"node": "22"}}}}"#
        ),
        &[(
            "index.js",
            "require('node:http').createServer((req, res) => res.end('hi\\n')).listen(3000);\n",
        )],
    );
    let mut args = vec![
        "install",
        "--offline",
        "--no-audit",
        "--no-fund",
        "--save-dev",
    ];
    args.extend(flags);
    args.extend(tarballs.iter().map(|t| t.to_str().unwrap()));
    assert_exit(&run(&mut npm(&dir, &args)), 0);
    dir
}

#[test]
fn npm_install_from_the_tarballs_gives_a_nodeos_that_builds_an_image() {
    let (tmp, tarballs) = packed();
    let project = project_with(tmp.path(), "npm-hello", &tarballs, &[]);

    let modules = project.join("node_modules");
    assert_eq!(
        modules.join(".bin/nodeos").canonicalize().unwrap(),
        modules.join("nodeos/bin/nodeos").canonicalize().unwrap()
    );
    for bin in ["nodeos", "nodeos-init"] {
        let path = modules.join(PLATFORM_PACKAGE).join("bin").join(bin);
        assert!(path.is_file(), "{} is missing", path.display());
    }
    // The optional dependency came from its tarball, not a registry.
    let lock: serde_json::Value =
        serde_json::from_slice(&std::fs::read(modules.join(".package-lock.json")).unwrap())
            .unwrap();
    let resolved = lock["packages"][format!("node_modules/{PLATFORM_PACKAGE}")]["resolved"]
        .as_str()
        .unwrap_or_default();
    assert!(resolved.starts_with("file:"), "resolved: {resolved:?}");
    // What a registry install relies on: nodeos names the platform package,
    // at exactly the version that was packed with it, as an optional
    // dependency (npm then installs it only on a matching os and cpu).
    let read_json = |path: PathBuf| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    let main = read_json(modules.join("nodeos/package.json"));
    let platform = read_json(modules.join(PLATFORM_PACKAGE).join("package.json"));
    assert_eq!(
        main["optionalDependencies"][PLATFORM_PACKAGE], platform["version"],
        "{main}"
    );
    assert_eq!(main["version"], platform["version"]);
    assert_eq!(platform["os"], serde_json::json!(["linux"]));
    assert_eq!(platform["cpu"], serde_json::json!(["x64"]));
    let schema = std::fs::read(modules.join("nodeos/schema.json")).unwrap();
    serde_json::from_slice::<serde_json::Value>(&schema).expect("schema.json is JSON");

    let output = run(npx_nodeos(&project).arg("--version"));
    assert_exit(&output, 0);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("nodeos {}\n", env!("CARGO_PKG_VERSION"))
    );

    let output = run(npx_nodeos(&project).args(["build", "--profile", "dev"]));
    assert_exit(&output, 0);
    let image = project.join("dist/npm-hello.nodeos");
    for file in ["manifest.json", "kernel", "runtime.img", "app.img"] {
        assert!(image.join(file).is_file(), "{file} missing in {image:?}");
    }

    // A failure's exit code comes through the launcher (3: bad package.json).
    let broken = tmp.path().join("broken");
    write_project(&broken, "{ not json", &[]);
    let output = run(npx_nodeos(&project).arg("build").arg(&broken));
    assert_exit(&output, 3);
}

#[test]
fn the_launcher_forwards_sigint_and_sigterm_and_dies_of_the_same_signal() {
    let (tmp, tarballs) = packed();
    let project = project_with(tmp.path(), "npm-signals", &tarballs, &[]);
    let key = tmp.path().join("update-key.pem");
    assert_exit(
        &run(npx_nodeos(&project).arg("keygen").arg("--out").arg(&key)),
        0,
    );
    for signal in [Signal::INT, Signal::TERM] {
        // An "appliance" that accepts and never answers: `nodeos status`
        // waits on it until the signal comes.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mut launcher = Command::new(project.join("node_modules/.bin/nodeos"))
            .args(["status", &url, "--key"])
            .arg(&key)
            .env("NO_COLOR", "1")
            // Not a terminal's foreground group, where a SIGINT would be a
            // Ctrl-C the binary got too (and the launcher would not forward).
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the launcher starts");
        let _connection = match accept_within(&listener, Duration::from_secs(60)) {
            Ok(connection) => connection,
            Err(e) => {
                let _ = launcher.kill();
                let output = launcher.wait_with_output().unwrap();
                panic!("nodeos status never connected ({e}):\n{}", stderr(&output));
            }
        };
        kill_process(Pid::from_child(&launcher), signal).unwrap();
        let status = wait_within(&mut launcher, Duration::from_secs(30));
        assert_eq!(status.signal(), Some(signal.as_raw()), "{status:?}");
    }
}

#[test]
fn without_the_platform_package_the_launcher_says_how_to_install_it() {
    let (tmp, tarballs) = packed();
    let project = project_with(
        tmp.path(),
        "npm-no-optional",
        &tarballs[1..],
        &["--omit=optional"],
    );
    assert!(!project.join("node_modules").join(PLATFORM_PACKAGE).exists());
    let output = run(npx_nodeos(&project).arg("--version"));
    assert_exit(&output, 1);
    let err = stderr(&output);
    assert!(
        err.contains(&format!(
            "{PLATFORM_PACKAGE}, which holds the nodeos binary"
        )) && err.contains("supported platforms: linux-x64")
            && err.contains("--omit=optional"),
        "{err}"
    );
}

/// Accepts one connection, giving up after `timeout`.
fn accept_within(listener: &TcpListener, timeout: Duration) -> Result<TcpStream, String> {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match listener.accept() {
            Ok((stream, _)) => return Ok(stream),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(format!("no connection within {timeout:?}"))
}

/// Waits for `child` to exit; kills it and fails after `timeout`.
fn wait_within(child: &mut std::process::Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the launcher did not exit within {timeout:?} of the signal");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
