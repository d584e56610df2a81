//! `nodeos export`: the UEFI disk booted by OVMF (TCG) and updated with
//! `nodeos deploy`, the Firecracker directory booted under
//! `qemu -M microvm` (virtio-mmio, no PCI, no firmware: Firecracker's boot
//! path), each disk format checked by `qemu-img` and compared with the raw
//! disk, the KubeVirt archive by skopeo, every format exported twice for
//! identical bytes, and the bad inputs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use nodeos_manifest::Profile;
use nodeos_manifest::esp::ESP_PARTITION;
use nodeos_manifest::slots::{Slot, SlotStatus, UpdateResult};
use nodeos_vmm::system_disk::SystemDisk;

use crate::support::*;
use crate::update::{image, keygen};

/// Generous: OVMF and the kernel under TCG on a loaded 2-core machine.
const BOOT: Duration = Duration::from_secs(300);
const STOP: Duration = Duration::from_secs(60);
/// Debian's OVMF (package `ovmf`), the 4 MiB build without Secure Boot.
const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// `nodeos export IMAGE --format FORMAT -o OUT --json EXTRA…`; the JSON.
fn export(image: &Path, format: &str, out: &Path, extra: &[&str]) -> serde_json::Value {
    let output = run(nodeos()
        .arg("export")
        .arg(image)
        .args(["--format", format, "--json", "--out"])
        .arg(out)
        .args(extra));
    assert_exit(&output, 0);
    serde_json::from_slice(&output.stdout).expect("--json prints JSON")
}

/// The sha256 of every file `export --json` listed, by file name.
fn hashes(json: &serde_json::Value) -> Vec<(String, String)> {
    json["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let name = Path::new(f["path"].as_str().unwrap()).file_name().unwrap();
            (
                name.to_string_lossy().into_owned(),
                f["sha256"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[track_caller]
fn tool(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} does not run ({e}); run scripts/setup"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The built hello example.
fn hello(tmp: &Path) -> PathBuf {
    build_image(&example("hello"), Some(&tmp.join("image")), Profile::Dev)
}

/// QEMU booting `disk` (qcow2) by OVMF, with the app's port 3000 at
/// 127.0.0.1:`app` and the agent's 7070 at `agent`. No `-no-reboot`: the
/// guest's reboots go through the firmware and systemd-boot.
fn ovmf(disk: &Path, vars: &Path, app: u16, agent: u16) -> Command {
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-machine", "q35,accel=tcg", "-m", "512", "-nographic"])
        .args(["-no-user-config", "-nodefaults", "-serial", "stdio"])
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"))
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,unit=1,file={}", vars.display()))
        .arg("-drive")
        .arg(format!("if=virtio,format=qcow2,file={}", disk.display()))
        .arg("-nic")
        .arg(format!(
            "user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:{app}-:3000,hostfwd=tcp:127.0.0.1:{agent}-:7070"
        ));
    qemu
}

/// The version the update test app serves on `/`, once it answers.
#[track_caller]
fn version(app: u16, vm: &NodeosRun) -> String {
    let body = http_get_until_ok(app, "/", BOOT)
        .unwrap_or_else(|e| panic!("the app never answered: {e}\n{}", vm.transcript()));
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    json["version"].as_str().unwrap().to_owned()
}

#[track_caller]
fn get(app: u16, path: &str, vm: &NodeosRun) -> serde_json::Value {
    let (status, body) =
        http_get(app, path).unwrap_or_else(|e| panic!("{path}: {e}\n{}", vm.transcript()));
    assert_eq!(status, 200, "{path}: {body}\n{}", vm.transcript());
    serde_json::from_str(&body).unwrap()
}

/// The qcow2 disk boots by UEFI (OVMF, systemd-boot, the kernel's EFI
/// stub) and serves; `nodeos deploy` writes slot b, the firmware boots it
/// as a trial and init commits it; a version that crashes is rolled back
/// and its boot entry removed; /data keeps its file throughout.
#[test]
fn the_uefi_disk_boots_under_ovmf_takes_an_update_and_rolls_back_a_bad_one() {
    let tmp = tempfile::tempdir().unwrap();
    let key = keygen(tmp.path(), "key.pem");
    let v1 = image(tmp.path(), "1.0.0", &key, "", &[]);
    let v2 = image(tmp.path(), "1.0.1", &key, "", &[]);
    let bad = image(
        tmp.path(),
        "2.0.0",
        &key,
        "throw new Error('boom at start');",
        &[],
    );
    let disk = tmp.path().join("appliance.qcow2");
    export(&v1, "qcow2", &disk, &[]);
    let vars = tmp.path().join("vars.fd");
    std::fs::copy(OVMF_VARS, &vars).expect("OVMF is installed (Debian package ovmf)");

    let (app, agent) = (free_port(), free_port());
    let mut vm = NodeosRun::spawn(&mut ovmf(&disk, &vars, app, agent));
    assert_eq!(version(app, &vm), "1.0.0");
    assert!(
        vm.stdout().contains("booting slot a"),
        "{}",
        vm.transcript()
    );
    get(app, "/write?name=keep&text=kept", &vm);

    let url = format!("http://127.0.0.1:{agent}");
    let deploy = |image: &Path| {
        run(nodeos()
            .arg("deploy")
            .arg(&url)
            .arg("--image")
            .arg(image)
            .arg("--key")
            .arg(&key.path)
            .args(["--timeout", "600"]))
    };
    let out = deploy(&v2);
    assert_exit(&out, 0);
    assert_eq!(version(app, &vm), "1.0.1", "{}", vm.transcript());
    assert!(
        vm.stdout().contains("booting slot b"),
        "{}",
        vm.transcript()
    );
    assert_eq!(get(app, "/read?name=keep", &vm)["text"], "kept");

    let out = deploy(&bad);
    assert_exit(&out, 16);
    assert!(stderr(&out).contains("boom at start"), "{}", stderr(&out));
    assert_eq!(version(app, &vm), "1.0.1", "{}", vm.transcript());
    assert_eq!(get(app, "/read?name=keep", &vm)["text"], "kept");
    vm.interrupt();
    assert!(vm.wait(STOP).is_some(), "{}", vm.transcript());

    // The disk afterwards: slot b active, a rolled back, and on the ESP
    // only b's entry, without boot counters.
    let raw = tmp.path().join("after.raw");
    tool(
        "qemu-img",
        &[
            "convert",
            "-f",
            "qcow2",
            "-O",
            "raw",
            disk.to_str().unwrap(),
            raw.to_str().unwrap(),
        ],
    );
    let system = SystemDisk::open(&raw).unwrap();
    let state = system.read_state().unwrap().unwrap();
    assert_eq!(state.active, Slot::B);
    assert_eq!(
        (state.a.status, state.b.status),
        (SlotStatus::Bad, SlotStatus::Good)
    );
    assert_eq!(state.last_update.unwrap().result, UpdateResult::RolledBack);
    let (esp, _) = system.partition(ESP_PARTITION).unwrap();
    drop(system);
    let entries = tool(
        "mdir",
        &[
            "-b",
            "-i",
            &format!("{}@@{esp}", raw.display()),
            "::/loader/entries",
        ],
    );
    let names: Vec<String> = text(&entries)
        .lines()
        .filter_map(|l| l.rsplit('/').next())
        .map(str::to_ascii_lowercase)
        .collect();
    assert_eq!(names, ["nodeos-b.conf"], "{}", text(&entries));
}

/// The Firecracker directory: `vmlinux` is an ELF, `vm_config.json` has
/// Firecracker's fields, and the same kernel, disk and boot arguments
/// boot under `qemu -M microvm` (virtio-mmio devices named on the command
/// line, as Firecracker does) and serve.
#[test]
fn the_firecracker_directory_boots_under_qemu_microvm() {
    let tmp = tempfile::tempdir().unwrap();
    let image = hello(tmp.path());
    let dir = tmp.path().join("hello.firecracker");
    let json = export(&image, "firecracker", &dir, &["--tap", "fc-tap7"]);
    let names: Vec<String> = hashes(&json).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["disk.raw", "vm_config.json", "vmlinux"]);
    let vmlinux = std::fs::read(dir.join("vmlinux")).unwrap();
    assert_eq!(&vmlinux[..4], b"\x7fELF");

    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("vm_config.json")).unwrap()).unwrap();
    let keys = |v: &serde_json::Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(&config),
        [
            "boot-source",
            "drives",
            "machine-config",
            "network-interfaces"
        ]
    );
    assert_eq!(
        keys(&config["boot-source"]),
        ["boot_args", "kernel_image_path"]
    );
    assert_eq!(
        keys(&config["drives"][0]),
        ["drive_id", "is_read_only", "is_root_device", "path_on_host"]
    );
    assert_eq!(config["drives"][0]["path_on_host"], "disk.raw");
    assert_eq!(config["drives"][0]["is_root_device"], false);
    assert_eq!(config["network-interfaces"][0]["host_dev_name"], "fc-tap7");
    assert!(config["machine-config"]["mem_size_mib"].as_u64().unwrap() >= 128);
    let boot_args = config["boot-source"]["boot_args"].as_str().unwrap();
    assert!(
        boot_args.contains("root=/dev/dm-0")
            && boot_args
                .contains("verity 1 PARTLABEL=nodeos-runtime-a PARTLABEL=nodeos-runtime-a ")
            && boot_args.contains("verity 1 PARTLABEL=nodeos-app-a PARTLABEL=nodeos-app-a ")
            && boot_args.contains("nodeos.slot=a"),
        "{boot_args}"
    );

    let port = free_port();
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args([
        "-M",
        "microvm,acpi=off,rtc=on",
        "-accel",
        "tcg",
        "-m",
        "256",
    ])
    .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
    .args(["-serial", "stdio", "-kernel"])
    .arg(dir.join("vmlinux"))
    .args(["-append", boot_args, "-drive"])
    .arg(format!(
        "id=system,file={},format=raw,if=none",
        dir.join("disk.raw").display()
    ))
    .args(["-device", "virtio-blk-device,drive=system"])
    .args([
        "-netdev",
        &format!("user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:3000"),
    ])
    .args(["-device", "virtio-net-device,netdev=n0"]);
    let mut vm = NodeosRun::spawn(&mut qemu);
    let body = http_get_until_ok(port, "/", BOOT)
        .unwrap_or_else(|e| panic!("the app never answered: {e}\n{}", vm.transcript()));
    assert!(body.contains("hello from nodeos"), "{body}");
    assert!(
        vm.stdout().contains("booting slot a"),
        "{}",
        vm.transcript()
    );
    vm.interrupt();
    assert!(vm.wait(STOP).is_some(), "{}", vm.transcript());
}

/// raw, qcow2, vmdk and vhdx hold the same disk (`qemu-img compare`),
/// pass `qemu-img check` where it has one, report their format and size;
/// gce is `disk.raw` of whole GiB in a tar.gz; kubevirt is an OCI archive
/// skopeo reads and a VirtualMachine; and exporting any of them again
/// gives the same bytes.
#[test]
fn every_format_is_accepted_by_its_tools_and_exports_the_same_bytes_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let image = hello(tmp.path());
    let one = tmp.path().join("one");
    let two = tmp.path().join("two");
    std::fs::create_dir_all(&one).unwrap();
    std::fs::create_dir_all(&two).unwrap();
    let raw = one.join("hello.raw");
    let mut virtual_size = 0;
    for (format, name) in [
        ("raw", "hello.raw"),
        ("qcow2", "hello.qcow2"),
        ("vmdk", "hello.vmdk"),
        ("vhdx", "hello.vhdx"),
        ("gce", "hello.gce.tar.gz"),
        ("kubevirt", "hello.kubevirt"),
    ] {
        let first = export(&image, format, &one.join(name), &[]);
        let second = export(&image, format, &two.join(name), &[]);
        assert_eq!(
            hashes(&first),
            hashes(&second),
            "{format}: the same bytes twice"
        );
        let path = one.join(name);
        let path = path.to_str().unwrap();
        match format {
            "raw" => virtual_size = first["disk_size"].as_u64().unwrap(),
            "qcow2" | "vmdk" | "vhdx" => {
                tool("qemu-img", &["check", "-f", format, path]);
                let info: serde_json::Value = serde_json::from_slice(
                    &tool("qemu-img", &["info", "--output=json", "-f", format, path]).stdout,
                )
                .unwrap();
                assert_eq!(info["format"], format);
                assert_eq!(
                    info["virtual-size"].as_u64(),
                    Some(virtual_size),
                    "{format}"
                );
                let compared = tool(
                    "qemu-img",
                    &[
                        "compare",
                        "-f",
                        "raw",
                        "-F",
                        format,
                        raw.to_str().unwrap(),
                        path,
                    ],
                );
                assert!(text(&compared).contains("identical"), "{}", text(&compared));
            }
            "gce" => {
                let listing = text(&tool("tar", &["-tvzf", path]));
                let line = listing.trim();
                assert!(line.ends_with(" disk.raw"), "{listing}");
                assert_eq!(listing.lines().count(), 1, "{listing}");
                let size: u64 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
                assert_eq!(size % (1 << 30), 0, "GCE takes whole GiB: {size}");
                assert!(size >= virtual_size);
            }
            "kubevirt" => {
                let archive = Path::new(path).join("hello.oci.tar");
                let inspect = tool(
                    "skopeo",
                    &["inspect", &format!("oci-archive:{}", archive.display())],
                );
                let info: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
                assert_eq!(info["Architecture"], "amd64");
                assert_eq!(info["Layers"].as_array().unwrap().len(), 1);
                let vm = std::fs::read_to_string(Path::new(path).join("vm.yaml")).unwrap();
                assert!(vm.contains("kind: VirtualMachine"), "{vm}");
                assert!(vm.contains("secureBoot: false"), "{vm}");
                assert!(vm.contains("image: hello:1.0.0"), "{vm}");
            }
            _ => unreachable!(),
        }
    }
    // A larger disk: the data partition takes the rest.
    let big = export(&image, "raw", &one.join("big.raw"), &["--size", "8G"]);
    assert_eq!(big["disk_size"], 8u64 << 30);
}

/// Ctrl-C (SIGINT) during an export: nodeos finishes or fails the step
/// under way, removes its temporary files, and exits 130; the output is
/// either absent or whole.
#[test]
fn an_interrupted_export_leaves_no_temporary_files() {
    let tmp = tempfile::tempdir().unwrap();
    let image = hello(tmp.path());
    let dir = tmp.path().join("out");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("hello.gce.tar.gz");
    let mut export = NodeosRun::spawn(
        nodeos()
            .arg("export")
            .arg(&image)
            .args(["--format", "gce", "--out"])
            .arg(&out),
    );
    let staging_seen = || {
        std::fs::read_dir(&dir).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".hello.gce")
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !staging_seen() {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            export.transcript()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    export.interrupt();
    assert_eq!(export.wait(BOOT), Some(130), "{}", export.transcript());
    assert!(
        export.stderr().contains("interrupted"),
        "{}",
        export.transcript()
    );
    let left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.is_empty() || left == ["hello.gce.tar.gz"],
        "{left:?}\n{}",
        export.transcript()
    );
}

/// Bad input: each gives one error naming the fix, its exit code, and
/// leaves nothing behind.
#[test]
fn bad_export_input_fails_with_one_clear_error_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("image");
    fake_image_dir(&image);
    let out_dir = tmp.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let export_with = |args: &[&str]| run(nodeos().arg("export").arg(&image).args(args));

    let out = export_with(&["--format", "iso"]);
    assert_exit(&out, 2);
    let said = stderr(&out);
    for format in [
        "raw",
        "qcow2",
        "vmdk",
        "vhdx",
        "firecracker",
        "kubevirt",
        "gce",
    ] {
        assert!(said.contains(format), "{said}");
    }

    let missing = tmp.path().join("no-such-dir").join("x.raw");
    let out = export_with(&["--format", "raw", "--out", missing.to_str().unwrap()]);
    assert_exit(&out, 18);
    assert!(
        stderr(&out).contains("cannot write the export"),
        "{}",
        stderr(&out)
    );

    let out = export_with(&["--format", "raw", "--out", out_dir.to_str().unwrap()]);
    assert_exit(&out, 18);
    assert!(
        stderr(&out).contains("is in the way: it is not a file"),
        "{}",
        stderr(&out)
    );
    let out = export_with(&["--format", "raw", "--tap", "tap1"]);
    assert_exit(&out, 2);
    let out = export_with(&[
        "--format",
        "kubevirt",
        "--image",
        "registry.example.com/x:-bad",
    ]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("its tag must be"), "{}", stderr(&out));

    // The fake image's kernel is no EFI-stub bzImage.
    let out = export_with(&[
        "--format",
        "qcow2",
        "--out",
        out_dir.join("x.qcow2").to_str().unwrap(),
    ]);
    assert_exit(&out, 7);
    assert!(stderr(&out).contains("no EFI stub"), "{}", stderr(&out));

    let small = out_dir.join("small.raw");
    let out = export_with(&[
        "--format",
        "raw",
        "--size",
        "1G",
        "--out",
        small.to_str().unwrap(),
    ]);
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("smaller than the image needs"),
        "{}",
        stderr(&out)
    );

    let out = run(nodeos()
        .env("PATH", "/nonexistent")
        .arg("export")
        .arg(&image)
        .args(["--format", "qcow2", "--out"])
        .arg(out_dir.join("x.qcow2")));
    assert_exit(&out, 12);
    let said = stderr(&out);
    assert!(said.contains("apt-get install mtools qemu-utils"), "{said}");

    assert!(is_empty_or_missing(&out_dir), "nothing is left behind");
}
