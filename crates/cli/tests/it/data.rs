//! The persistent data volume (`/data`): what `nodeos run` does to the
//! volume file on the host (no VM), and what the app sees across boots,
//! hard kills, a full volume and corruption (real images under QEMU with
//! TCG, driven through `nodeos run` and the fixture app's HTTP endpoints).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nodeos_manifest::Profile;
use nodeos_manifest::settings::DataSize;
use nodeos_vmm::data::{DataVolume, SizeRequest};
use rustix::process::{Pid, Signal, kill_process};

use crate::support::*;

/// Generous: TCG on a loaded 2-core CI machine.
const BOOT: Duration = Duration::from_secs(240);
const STOP: Duration = Duration::from_secs(60);

fn size(text: &str) -> DataSize {
    text.parse().unwrap()
}

/// `nodeos run IMAGE --accel tcg -p PORT:3000 --data VOLUME ARGS…` in the
/// background.
fn boot(image: &Path, volume: &Path, port: u16, args: &[&str]) -> NodeosRun {
    NodeosRun::spawn(
        nodeos()
            .arg("run")
            .arg(image)
            .args(["--accel", "tcg", "-p", &format!("{port}:3000"), "--data"])
            .arg(volume)
            .args(args),
    )
}

/// Waits for the app to answer, then GETs `path`: (status, JSON body).
#[track_caller]
fn get(run: &NodeosRun, port: u16, path: &str) -> (u16, serde_json::Value) {
    if let Err(e) = http_get_until_ok(port, "/", BOOT) {
        panic!("the app never answered: {e}\n{}", run.transcript());
    }
    let (status, body) =
        http_get(port, path).unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", run.transcript()));
    let json = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("GET {path}: {e}: {body:?}\n{}", run.transcript()));
    (status, json)
}

/// Ctrl-C, then the exit code.
#[track_caller]
fn stop(run: &mut NodeosRun) -> Option<i32> {
    run.interrupt();
    run.wait(STOP)
}

/// An e2fsprogs tool (`/usr/sbin` is not in every PATH).
fn e2fs(tool: &str) -> Command {
    let path = ["/usr/sbin", "/sbin"]
        .iter()
        .map(|dir| Path::new(dir).join(tool))
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(tool));
    Command::new(path)
}

/// `debugfs -w -R REQUEST volume`: edits the volume's filesystem.
fn debugfs(volume: &Path, request: &str) {
    let out = e2fs("debugfs")
        .args(["-w", "-R", request])
        .arg(volume)
        .output()
        .unwrap();
    assert!(out.status.success(), "debugfs {request}: {out:?}");
}

fn data_image(tmp: &Path) -> PathBuf {
    build_image(&fixture("data-app"), Some(tmp), Profile::Dev)
}

#[test]
fn data_written_and_fsynced_survives_a_hard_kill_of_qemu() {
    let tmp = tempfile::tempdir().unwrap();
    let image = data_image(tmp.path());
    let volume = tmp.path().join("app.data.img");
    let port = free_port();
    let mut run = boot(&image, &volume, port, &["--data-size", "16M"]);
    let (status, body) = get(&run, port, "/write?name=note.txt&text=still-here");
    assert_eq!((status, &body), (200, &serde_json::json!({"ok": true})));
    let (_, owner) = get(&run, port, "/stat");
    assert_eq!(
        (owner["uid"].as_u64(), owner["gid"].as_u64()),
        (Some(1000), Some(1000)),
        "{owner}"
    );
    assert!(
        run.stderr()
            .contains(&format!("Created data volume {} (16MiB)", volume.display())),
        "{}",
        run.transcript()
    );
    let console = run.stdout();
    assert!(
        console.contains("nodeos-init: data volume /dev/vd")
            && console.contains(" mounted on /data (13 MiB, 13 MiB free)"),
        "{}",
        run.transcript()
    );

    // A second run of the same image is refused before it boots: its
    // system disk is checked first (exit 8), and with a system disk of its
    // own, the volume (exit 13). Neither leaves a file behind.
    let second = crate::support::run(
        nodeos()
            .arg("run")
            .arg(&image)
            .args(["--accel", "tcg", "--data"])
            .arg(&volume),
    );
    assert_exit(&second, 8);
    assert!(
        stderr(&second).contains("is in use by another `nodeos run`"),
        "{}",
        stderr(&second)
    );
    let other_system = tmp.path().join("other.system.img");
    let second = crate::support::run(
        nodeos()
            .arg("run")
            .arg(&image)
            .args(["--accel", "tcg", "--data"])
            .arg(&volume)
            .arg("--system")
            .arg(&other_system),
    );
    assert_exit(&second, 13);
    assert!(
        stderr(&second).contains("is in use by another `nodeos run`"),
        "{}",
        stderr(&second)
    );
    assert!(!other_system.exists());

    // Pull the plug: SIGKILL to QEMU, no shutdown, no unmount.
    let qemu = run.qemu_pid().expect("QEMU runs");
    kill_process(Pid::from_raw(qemu as i32).unwrap(), Signal::KILL).unwrap();
    let code = run.wait(STOP);
    assert_ne!(code, Some(0), "{}", run.transcript());

    let mut run = boot(&image, &volume, port, &["--data-size", "16M"]);
    let (status, body) = get(&run, port, "/read?name=note.txt");
    assert_eq!(status, 200, "{body}\n{}", run.transcript());
    assert_eq!(body["text"], "still-here");
    assert!(!run.stderr().contains("Created"), "{}", run.transcript());
    assert_eq!(stop(&mut run), Some(0), "{}", run.transcript());

    // The clean shutdown unmounted /data: the volume is marked clean.
    let fsck = e2fs("e2fsck").arg("-n").arg(&volume).output().unwrap();
    assert!(
        fsck.status.success() && String::from_utf8_lossy(&fsck.stdout).contains("clean"),
        "{fsck:?}"
    );
}

#[test]
fn a_full_data_volume_gives_the_app_enospc_and_the_vm_keeps_running() {
    let tmp = tempfile::tempdir().unwrap();
    let image = data_image(tmp.path());
    let volume = tmp.path().join("small.data.img");
    let port = free_port();
    let mut run = boot(&image, &volume, port, &["--data-size", "16M"]);
    let (status, fill) = get(&run, port, "/fill");
    assert_eq!(status, 200, "{fill}");
    assert_eq!(fill["code"], "ENOSPC", "{fill}\n{}", run.transcript());
    assert!(fill["written"].as_u64().unwrap() > 4 << 20, "{fill}");
    // The app, init and the VM are still there, and space can be freed.
    let (status, _) = get(&run, port, "/");
    assert_eq!(status, 200);
    let (status, _) = get(&run, port, "/delete?name=fill");
    assert_eq!(status, 200);
    let (status, body) = get(&run, port, "/write?name=after&text=ok");
    assert_eq!(status, 200, "{body}");
    let console = run.stdout();
    assert!(!console.contains("app exited"), "{}", run.transcript());
    assert!(!console.contains("EXT4-fs error"), "{}", run.transcript());
    assert_eq!(stop(&mut run), Some(0), "{}", run.transcript());
}

#[test]
fn a_corrupted_data_volume_is_repaired_or_stops_the_app_unless_told_otherwise() {
    let tmp = tempfile::tempdir().unwrap();
    let image = data_image(tmp.path());
    let volume = tmp.path().join("app.data.img");
    drop(DataVolume::open(&volume, SizeRequest::AtLeast(size("16M"))).unwrap());
    let local = tmp.path().join("keep.txt");
    std::fs::write(&local, "kept").unwrap();
    debugfs(&volume, &format!("write {} keep.txt", local.display()));

    // Repairable: a wrong link count, on a volume not marked clean.
    debugfs(&volume, "sif keep.txt links_count 5");
    debugfs(&volume, "ssv state 0");
    let port = free_port();
    let mut run = boot(&image, &volume, port, &["--data-size", "16M"]);
    let (status, body) = get(&run, port, "/read?name=keep.txt");
    assert_eq!((status, &body["text"]), (200, &"kept".into()), "{body}");
    assert!(
        run.stderr()
            .contains("had errors that e2fsck repaired: nodeos-data was not cleanly unmounted, check forced. nodeos-data: Inode 12 ref count is 5, should be 1. FIXED."),
        "{}",
        run.transcript()
    );
    assert!(
        run.stdout()
            .contains("nodeos-init: data: e2fsck on the host repaired /dev/vd"),
        "{}",
        run.transcript()
    );
    assert_eq!(stop(&mut run), Some(0), "{}", run.transcript());

    // Not repairable by `e2fsck -p`: the root directory's inode is wiped.
    debugfs(&volume, "clri <2>");
    debugfs(&volume, "ssv state 0");
    let mut run = boot(&image, &volume, port, &["--data-size", "16M"]);
    let code = run.wait(BOOT);
    let (console, err) = (run.stdout(), run.stderr());
    assert_eq!(code, Some(13), "{}", run.transcript());
    assert!(
        console.contains("nodeos-init: error: data volume /dev/vd")
            && console.contains(
                " failed its check: e2fsck on the host could not repair it (nodeos-data was not cleanly unmounted"
            )
            && console.contains("; the app is not started. Repair the volume"),
        "{}",
        run.transcript()
    );
    assert!(!console.contains("starting app"), "{}", run.transcript());
    assert!(
        err.contains("failed its check (e2fsck -p: ")
            && err.contains("error: the app was not started: data volume /dev/vd")
            && err.contains(&format!("`e2fsck -fy {}`", volume.display())),
        "{}",
        run.transcript()
    );

    // Told to start anyway: the app starts (on an unmountable volume,
    // without a persistent /data).
    let start_anyway = ["--data-size", "16M", "--data-on-check-failure", "start"];
    let mut run = boot(&image, &volume, port, &start_anyway);
    let (status, _) = get(&run, port, "/");
    assert_eq!(status, 200);
    assert!(
        run.stdout()
            .contains("failed its check: e2fsck on the host could not repair it")
            && run.stdout().contains("starting the app anyway"),
        "{}",
        run.transcript()
    );
    let (status, body) = get(&run, port, "/write?name=x&text=y");
    assert_eq!(status, 500, "/data is read-only: {body}");
    assert_eq!(stop(&mut run), Some(0), "{}", run.transcript());
}

#[test]
fn run_with_a_bad_data_size_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("nope.nodeos");
    for (value, needle) in [
        ("12X", "unknown unit"),
        ("1M", "minimum of 16MiB"),
        ("1.5G", "whole number"),
        ("lots", "not a size"),
    ] {
        let out = run(nodeos().arg("run").arg(&image).args(["--data-size", value]));
        assert_exit(&out, 2);
        let err = stderr(&out);
        assert!(
            err.contains("--data-size") && err.contains(needle),
            "{value}: {err}"
        );
    }
    let out = run(nodeos()
        .arg("run")
        .arg(&image)
        .args(["--no-data", "--data-size", "1G"]));
    assert_exit(&out, 2);
    let out = run(nodeos()
        .arg("run")
        .arg(&image)
        .args(["--data-on-check-failure", "maybe"]));
    assert_exit(&out, 2);
    assert!(is_empty_or_missing(tmp.path()), "nothing is created");
}

#[test]
fn run_creates_the_data_volume_beside_the_image_grows_it_or_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("fake.nodeos");
    fake_image_dir(&image);
    // QEMU fails at once: everything before it has happened.
    let qemu = script(tmp.path(), "fake-qemu", "exit 1");

    // A failing mkfs.ext4 (first in PATH) leaves no file behind.
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    script(
        &bin,
        "mkfs.ext4",
        "echo 'No space left on device' >&2; exit 1",
    );
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = run(nodeos()
        .arg("run")
        .arg(&image)
        .args(["--accel", "tcg", "--data-size", "16M"])
        .env("PATH", &path)
        .env("NODEOS_QEMU", &qemu));
    assert_exit(&out, 13);
    assert!(
        stderr(&out).contains("`mkfs.ext4` failed on") && stderr(&out).contains("No space left"),
        "{}",
        stderr(&out)
    );
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        !names.iter().any(|n| n.contains("data")),
        "half-written volume left: {names:?}"
    );

    // The real one: dist/fake.nodeos → dist/fake.data.img.
    let out = run(nodeos()
        .arg("run")
        .arg(&image)
        .args(["--accel", "tcg", "--data-size", "16M"])
        .env("NODEOS_QEMU", &qemu));
    assert_exit(&out, 10);
    let volume = tmp.path().join("fake.data.img");
    assert!(
        stderr(&out).contains(&format!("Created data volume {} (16MiB)", volume.display())),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::metadata(&volume).unwrap().len(), 16 << 20);

    // A larger --data-size grows it (offline, before the boot).
    let out = run(nodeos()
        .arg("run")
        .arg(&image)
        .args(["--accel", "tcg", "--data-size", "20M"])
        .env("NODEOS_QEMU", &qemu));
    assert_exit(&out, 10);
    assert!(
        stderr(&out).contains(&format!(
            "Resized data volume {} from 16MiB to 20MiB",
            volume.display()
        )),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::metadata(&volume).unwrap().len(), 20 << 20);

    // --no-data: no volume, not even a default one.
    let other = tmp.path().join("other.nodeos");
    fake_image_dir(&other);
    let out = run(nodeos()
        .arg("run")
        .arg(&other)
        .args(["--accel", "tcg", "--no-data"])
        .env("NODEOS_QEMU", &qemu));
    assert_exit(&out, 10);
    assert!(!tmp.path().join("other.data.img").exists());
}

#[test]
fn run_refuses_to_shrink_a_data_volume_or_use_a_file_that_is_not_one() {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("fake.nodeos");
    fake_image_dir(&image);
    let qemu = script(tmp.path(), "fake-qemu", "exit 1");
    let volume = tmp.path().join("big.img");
    drop(DataVolume::open(&volume, SizeRequest::AtLeast(size("20M"))).unwrap());
    let before = std::fs::read(&volume).unwrap();

    let out = run(nodeos()
        .arg("run")
        .arg(&image)
        .args(["--accel", "tcg", "--data-size", "16M", "--data"])
        .arg(&volume)
        .env("NODEOS_QEMU", &qemu));
    assert_exit(&out, 13);
    let err = stderr(&out);
    assert!(
        err.contains("holds 20MiB, more than the 16MiB asked for")
            && err.contains("shrinking a volume is not supported"),
        "{err}"
    );
    assert!(
        std::fs::read(&volume).unwrap() == before,
        "the volume changed"
    );

    let notes = tmp.path().join("notes.txt");
    std::fs::write(&notes, "not a volume\n").unwrap();
    let out = run(nodeos()
        .arg("run")
        .arg(&image)
        .args(["--accel", "tcg", "--data"])
        .arg(&notes)
        .env("NODEOS_QEMU", &qemu));
    assert_exit(&out, 13);
    assert!(
        stderr(&out).contains("is not a nodeos data volume"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "not a volume\n");
}

/// `"nodeos": {"data": {"size": …}}` in package.json is recorded in the
/// manifest by `nodeos build` and sizes the volume `nodeos run` creates.
#[test]
fn the_data_size_from_package_json_sizes_the_new_volume() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("sized");
    write_project(
        &project,
        r#"{"name":"sized","version":"1.0.0","engines":{"node":"22"},
            "nodeos":{"data":{"size":"24MiB"}}}"#,
        &[("index.js", "")],
    );
    let image = build_image(&project, None, nodeos_manifest::Profile::Dev);
    let manifest = nodeos_manifest::Manifest::from_json(
        &std::fs::read_to_string(image.join(nodeos_manifest::MANIFEST_FILE)).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest.data.size, size("24MiB"));
    let qemu = script(tmp.path(), "fake-qemu", "exit 1");
    let out = run(nodeos()
        .arg("run")
        .arg(&image)
        .args(["--accel", "tcg"])
        .env("NODEOS_QEMU", &qemu));
    assert_exit(&out, 10);
    let volume = project.join("dist/sized.data.img");
    assert_eq!(std::fs::metadata(&volume).unwrap().len(), 24 << 20);
}
