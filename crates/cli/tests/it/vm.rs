//! VM boot tests: real images (real Node.js, nodeos's kernel) under QEMU
//! with TCG. Each waits for console markers with a hard timeout; on failure
//! the guest console is part of the panic message.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use nodeos_manifest::Profile;
use nodeos_manifest::console::{self, AppExit};
use nodeos_vmm::{Accel, Outcome, PortForward, Vm, VmConfig};
use rustix::process::{Pid, Signal, kill_process};

use crate::support::*;

/// Generous: TCG on a loaded 2-core CI machine.
const BOOT: Duration = Duration::from_secs(240);
const STOP: Duration = Duration::from_secs(60);

/// Boots an image directory with the given forwards (tests never use KVM).
fn boot(image: &Path, memory_mb: u32, forwards: Vec<PortForward>) -> Vm {
    let manifest = nodeos_manifest::Manifest::from_json(
        &std::fs::read_to_string(image.join(nodeos_manifest::MANIFEST_FILE)).unwrap(),
    )
    .unwrap();
    let mut config = VmConfig::new(
        image.join(&manifest.artifacts[&manifest.kernel.artifact].path),
        image.join(&manifest.artifacts[&manifest.rootfs.artifact].path),
        manifest.kernel.cmdline.clone(),
    );
    config.memory_mb = memory_mb;
    config.accel = Accel::Tcg;
    config.forwards = forwards;
    Vm::start(config).expect("QEMU starts")
}

fn forward(guest_port: u16) -> (u16, PortForward) {
    let port = free_port();
    (port, format!("{port}:{guest_port}").parse().unwrap())
}

/// Fails the test with the guest console attached.
#[track_caller]
fn fail_with_console(vm: &Vm, what: &str) -> ! {
    panic!(
        "{what}\n----- guest console -----\n{}\n-------------------------",
        vm.console_log()
    );
}

fn wait_line(vm: &Vm, marker: &str, timeout: Duration) -> String {
    match vm.wait_for_line(marker, timeout) {
        Ok(line) => line,
        Err(e) => fail_with_console(vm, &format!("waiting for {marker:?}: {e}")),
    }
}

fn stop(vm: &mut Vm) -> Outcome {
    match vm.shutdown(STOP) {
        Ok(outcome) => outcome,
        Err(e) => fail_with_console(vm, &format!("shutting down: {e}")),
    }
}

#[test]
fn hello_answers_http_and_powers_off_cleanly_on_the_power_button() {
    let tmp = tempfile::tempdir().unwrap();
    let image = build_image(&example("hello"), Some(tmp.path()), Profile::Dev);
    let (port, fwd) = forward(3000);
    let mut vm = boot(&image, 256, vec![fwd]);
    wait_line(&vm, console::STARTING_APP, BOOT);
    let body = http_get_until_ok(port, "/", BOOT)
        .unwrap_or_else(|e| fail_with_console(&vm, &format!("GET /: {e}")));
    assert!(
        body.starts_with("hello from nodeos (node v22."),
        "unexpected body {body:?}"
    );
    // The hostname is the app's name.
    assert!(
        body.trim_end().ends_with(", hello)"),
        "unexpected body {body:?}"
    );
    let outcome = stop(&mut vm);
    // hello closes its server on SIGTERM and exits 0.
    assert_eq!(
        outcome,
        Outcome::AppExited(AppExit::Code(0)),
        "console:\n{}",
        vm.console_log()
    );
    assert!(vm.console_log().contains(console::SHUTDOWN_REQUESTED));
    assert!(vm.console_log().contains(console::POWER_OFF));
}

#[test]
fn node_finds_every_kernel_feature_it_needs() {
    let tmp = tempfile::tempdir().unwrap();
    let image = build_image(&fixture("syscalls"), Some(tmp.path()), Profile::Dev);
    let mut vm = boot(&image, 256, vec![]);
    let line = wait_line(&vm, "SYSCALL-TEST P", BOOT);
    let _ = line;
    if vm.console_log().contains("SYSCALL-TEST FAILED") {
        fail_with_console(&vm, "a syscall check failed");
    }
    for check in [
        "fs",
        "watch",
        "timers",
        "tcp",
        "tcp6",
        "unix_socket",
        "dns_hosts",
        "crypto",
        "zlib",
        "worker_threads",
        "child_process",
        "os_info",
    ] {
        assert!(
            vm.console_log()
                .contains(&format!("SYSCALL-TEST {check} ok")),
            "check {check} did not run:\n{}",
            vm.console_log()
        );
    }
    match vm.wait(STOP) {
        Ok(Some(Outcome::AppExited(AppExit::Code(0)))) => {}
        other => fail_with_console(
            &vm,
            &format!("expected the app to exit 0 and the VM to power off, got {other:?}"),
        ),
    }
}

#[test]
fn only_production_dependencies_reach_the_image() {
    let tmp = tempfile::tempdir().unwrap();
    let image = build_image(&fixture("deps-app"), Some(tmp.path()), Profile::Dev);
    assert!(
        image.ends_with("nodeos-test-deps-app.nodeos"),
        "{}",
        image.display()
    );
    let (port, fwd) = forward(3000);
    let mut vm = boot(&image, 256, vec![fwd]);
    let body = http_get_until_ok(port, "/", BOOT)
        .unwrap_or_else(|e| fail_with_console(&vm, &format!("GET /: {e}")));
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["pad"], "1.2.0");
    assert_eq!(
        report["utilPad"], "0.9.0",
        "the nested copy must shadow the top-level one"
    );
    assert_eq!(
        report["devOnly"], false,
        "a devDependency reached the image"
    );
    assert_eq!(report["nodeEnv"], "production");
    assert_eq!(report["cwd"], "/app");
    stop(&mut vm);
}

/// The guest contract's network line: with no `nodeos.ip`, init gets eth0's
/// address, router and DNS server from QEMU's built-in DHCP server.
#[test]
fn network_comes_from_dhcp() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("dhcp");
    write_project(
        &project,
        r#"{"name":"dhcp","version":"0.1.0","engines":{"node":"22"},"scripts":{"start":"node main.js"}}"#,
        &[(
            "main.js",
            "const os = require('os');\nconst fs = require('fs');\n\
             const v4 = (os.networkInterfaces().eth0 || []).find((a) => a.family === 'IPv4');\n\
             console.log('ETH0 ' + (v4 ? v4.cidr : 'none'));\n\
             for (const line of fs.readFileSync('/etc/resolv.conf', 'utf8').split('\\n')) if (line) console.log('RESOLV ' + line);\n",
        )],
    );
    let image = build_image(&project, None, Profile::Dev);
    let mut vm = boot(&image, 256, vec![]);
    let net = wait_line(&vm, "nodeos-init: network: eth0", BOOT);
    assert!(
        net.contains("eth0 10.0.2.15/24 via 10.0.2.2 (dhcp, lease "),
        "{net}"
    );
    wait_line(&vm, &console::app_exited_line(AppExit::Code(0)), BOOT);
    let log = vm.console_log();
    assert!(log.contains("ETH0 10.0.2.15/24"), "console:\n{log}");
    assert!(
        log.contains("RESOLV nameserver 10.0.2.3"),
        "console:\n{log}"
    );
    match vm.wait(STOP) {
        Ok(Some(_)) => {}
        Ok(None) => fail_with_console(&vm, "the VM did not power off after the app exited"),
        Err(e) => fail_with_console(&vm, &format!("waiting for power-off: {e}")),
    }
}

/// Also guards two regressions: an entry under `dist/` must survive the
/// default output directory (`dist/`), and the exit marker must be found
/// after app output that does not end with a newline.
#[test]
fn app_exit_status_is_reported_and_the_vm_powers_off() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("exits");
    write_project(
        &project,
        r#"{"name":"exits","version":"0.1.0","engines":{"node":"22"},"scripts":{"start":"node dist/main.js 3"}}"#,
        &[(
            "dist/main.js",
            "process.stdout.write('exiting with ' + process.argv[2]);\nprocess.exit(Number(process.argv[2]));\n",
        )],
    );
    let image = build_image(&project, None, Profile::Dev);
    assert_eq!(image, project.join("dist/exits.nodeos"));
    let child = nodeos()
        .arg("run")
        .arg(&image)
        .args(["--accel", "tcg"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nodeos run starts");
    let (status, output) = wait_timeout(child, BOOT);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("exiting with 3"), "console:\n{stdout}");
    assert!(
        stdout.contains(&console::app_exited_line(AppExit::Code(3))),
        "console:\n{stdout}"
    );
    assert_eq!(
        status,
        Some(11),
        "console:\n{stdout}\nstderr:\n{}",
        stderr(&output)
    );
    assert!(
        stderr(&output).contains("exit code 3"),
        "{}",
        stderr(&output)
    );
}

/// The whole user path with the smallest profile: `nodeos build --profile
/// release`, `nodeos run -p`, GET, Ctrl-C, exit 0.
#[test]
fn nodeos_run_serves_a_release_image_and_stops_on_ctrl_c() {
    let tmp = tempfile::tempdir().unwrap();
    let image = build_image(&example("hello"), Some(tmp.path()), Profile::Release);
    let port = free_port();
    let child = nodeos()
        .arg("run")
        .arg(&image)
        .args(["-p", &format!("{port}:3000"), "--memory", "128"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nodeos run starts");
    let answer = http_get_until_ok(port, "/", BOOT);
    // Ctrl-C: SIGINT to nodeos, which presses the guest's power button.
    kill_process(Pid::from_child(&child), Signal::INT).unwrap();
    let (status, output) = wait_timeout(child, STOP);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let body = answer.unwrap_or_else(|e| {
        panic!(
            "GET /: {e}\nconsole:\n{stdout}\nstderr:\n{}",
            stderr(&output)
        )
    });
    assert!(body.starts_with("hello from nodeos"), "{body:?}");
    assert_eq!(
        status,
        Some(0),
        "console:\n{stdout}\nstderr:\n{}",
        stderr(&output)
    );
    assert!(stdout.contains(console::POWER_OFF), "console:\n{stdout}");
}

/// Waits for a child to exit, killing it after `timeout` (status `None`);
/// returns its status code and everything it printed.
fn wait_timeout(mut child: Child, timeout: Duration) -> (Option<i32>, Output) {
    // Drain the pipes while waiting so a chatty child never blocks.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    });
    let err_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let status = child.wait().unwrap();
    let output = Output {
        status,
        stdout: out_thread.join().unwrap(),
        stderr: err_thread.join().unwrap(),
    };
    (code, output)
}
