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
pub(crate) const BOOT: Duration = Duration::from_secs(240);
const STOP: Duration = Duration::from_secs(60);

/// Boots an image directory with the given forwards (tests never use KVM).
pub(crate) fn boot(image: &Path, memory_mb: u32, forwards: Vec<PortForward>) -> Vm {
    let manifest = nodeos_manifest::Manifest::from_json(
        &std::fs::read_to_string(image.join(nodeos_manifest::MANIFEST_FILE)).unwrap(),
    )
    .unwrap();
    let mut config = VmConfig::for_image(image, &manifest);
    config.memory_mb = memory_mb;
    config.accel = Accel::Tcg;
    config.forwards = forwards;
    Vm::start(config).expect("QEMU starts")
}

pub(crate) fn forward(guest_port: u16) -> (u16, PortForward) {
    let port = free_port();
    (port, format!("{port}:{guest_port}").parse().unwrap())
}

/// Fails the test with the guest console attached.
#[track_caller]
pub(crate) fn fail_with_console(vm: &Vm, what: &str) -> ! {
    panic!(
        "{what}\n----- guest console -----\n{}\n-------------------------",
        vm.console_log()
    );
}

pub(crate) fn wait_line(vm: &Vm, marker: &str, timeout: Duration) -> String {
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

/// Ctrl-Alt-Del on the VM's keyboard is a shutdown request like the power
/// button: init has the kernel turn it into SIGINT and stops the app.
#[test]
fn ctrl_alt_del_stops_the_app_and_powers_off() {
    let tmp = tempfile::tempdir().unwrap();
    let image = build_image(&example("hello"), Some(tmp.path()), Profile::Dev);
    let (port, fwd) = forward(3000);
    let mut vm = boot(&image, 256, vec![fwd]);
    http_get_until_ok(port, "/", BOOT)
        .unwrap_or_else(|e| fail_with_console(&vm, &format!("GET /: {e}")));
    let keys = serde_json::json!({"keys": [
        {"type": "qcode", "data": "ctrl"},
        {"type": "qcode", "data": "alt"},
        {"type": "qcode", "data": "delete"},
    ]});
    if let Err(e) = vm.qmp().and_then(|q| q.execute("send-key", Some(keys))) {
        fail_with_console(&vm, &format!("QMP send-key: {e}"));
    }
    wait_line(&vm, "Ctrl-Alt-Del: sending SIGTERM to the app", STOP);
    match vm.wait(STOP) {
        Ok(Some(Outcome::AppExited(AppExit::Code(0)))) => {}
        other => fail_with_console(&vm, &format!("expected a clean power-off, got {other:?}")),
    }
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

/// The guest contract's network line: with no static address, init gets eth0's
/// address, router and DNS server from QEMU's built-in DHCP server.
#[test]
fn network_comes_from_dhcp() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("dhcp");
    write_project(
        &project,
        r#"{"name":"dhcp","version":"0.1.0","engines":{"node":"22"},"scripts":{"start":"node main.js"},"nodeos":{"restart":"never"}}"#,
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
        r#"{"name":"exits","version":"0.1.0","engines":{"node":"22"},"scripts":{"start":"node dist/main.js 3"},"nodeos":{"restart":"never"}}"#,
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
    let out = child.stdout.take();
    let mut err = child.stderr.take().unwrap();
    let out_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut out) = out {
            let _ = out.read_to_end(&mut buf);
        }
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

/// CPU time (user + system) QEMU process `pid` has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses).
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz = rustix::param::clock_ticks_per_second();
    Duration::from_millis(ticks * 1000 / hz)
}

/// Supervision: a crashing app is restarted with a growing backoff, each
/// start a new generation in the log; five quick exits make a crash loop
/// in which the VM sits idle between slow retries.
#[test]
fn crashing_app_is_restarted_with_backoff_then_crash_loops_idle() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("crasher");
    write_project(
        &project,
        r#"{"name":"crasher","version":"0.1.0","engines":{"node":"22"},"scripts":{"start":"node main.js"}}"#,
        &[("main.js", "console.log('crasher up');\nprocess.exit(2);\n")],
    );
    let image = build_image(&project, None, Profile::Dev);
    let vm = boot(&image, 256, vec![]);
    wait_line(
        &vm,
        "restarting the app in 0.1s (restart 1, policy always)",
        BOOT,
    );
    wait_line(
        &vm,
        "restarting the app in 0.2s (restart 2, policy always)",
        BOOT,
    );
    wait_line(
        &vm,
        "app state crash-loop: 5 exits within 60s; retrying every 30s",
        BOOT,
    );
    let log = vm.console_log();
    for generation in 1..=5 {
        assert!(
            log.contains(&format!("app[{generation}] out: crasher up")),
            "generation {generation} missing:\n{log}"
        );
    }
    assert_eq!(log.matches("app exited code=2").count(), 5, "{log}");
    // Now in the 30 s crash-loop wait: QEMU must be (nearly) idle.
    let (cpu0, t0) = (cpu_time(vm.pid()), Instant::now());
    std::thread::sleep(Duration::from_secs(10));
    let busy = (cpu_time(vm.pid()) - cpu0).as_secs_f64() / t0.elapsed().as_secs_f64();
    if vm.console_log().matches(console::STARTING_APP).count() > 5 {
        fail_with_console(&vm, "restarted before the crash-loop delay was over");
    }
    assert!(
        busy < 0.25,
        "QEMU used {:.0}% of a CPU while the app waited to restart",
        busy * 100.0
    );
}

/// An app that allocates past the guest's memory is killed (by init's
/// low-memory watchdog or the kernel's OOM killer); init says it ran out of
/// memory and restarts it.
#[test]
fn oom_killed_app_is_reported_and_restarted() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("hog");
    write_project(
        &project,
        r#"{"name":"hog","version":"0.1.0","engines":{"node":"22"},"scripts":{"start":"node main.js"}}"#,
        &[(
            "main.js",
            // One tight synchronous loop: memory runs out fast, before the
            // kernel spends long evicting node's code pages.
            "console.log('allocating');\nconst keep = [];\n\
             for (;;) keep.push(Buffer.alloc(16 << 20, 1));\n",
        )],
    );
    let image = build_image(&project, None, Profile::Dev);
    let vm = boot(&image, 128, vec![]);
    // Either the kernel's OOM killer or init's low-memory watchdog, whichever
    // is first; both are reported as out of memory.
    wait_line(&vm, "app exited signal=9 (out of memory: killed by ", BOOT);
    wait_line(
        &vm,
        "restarting the app in 0.1s (restart 1, policy always)",
        BOOT,
    );
    wait_line(&vm, "app[2] out: allocating", BOOT);
}

/// Shutdown: the app gets SIGTERM and its grace period, and what it
/// writes while stopping reaches the console before the power-off.
/// Also the run-time config: env from `--env`/`--env-file` reaches the
/// app, the secret's value is never printed by nodeos or init, and
/// `--log-format json` makes every init and app line a JSON record.
#[test]
fn nodeos_run_passes_env_and_settings_and_the_app_stops_gracefully() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("graceful");
    write_project(
        &project,
        r#"{"name":"graceful","version":"0.1.0","engines":{"node":"22"},"scripts":{"start":"node main.js"},
            "nodeos":{"env":{"FROM_IMAGE":"image"}}}"#,
        &[(
            "main.js",
            "const crypto = require('crypto');\n\
             const s = process.env.API_SECRET || '';\n\
             console.log('SECRET-SHA ' + crypto.createHash('sha256').update(s).digest('hex'));\n\
             console.log('ENV ' + process.env.GREETING + ' ' + process.env.FROM_IMAGE);\n\
             process.on('SIGTERM', () => setTimeout(() => { console.log('SIGTERM-MARKER written'); process.exit(0); }, 1500));\n\
             setInterval(() => {}, 1000);\n\
             console.log('READY');\n",
        )],
    );
    let image = build_image(&project, None, Profile::Dev);
    let secret = "hunter2-not-in-any-log";
    let env_file = tmp.path().join("secrets.env");
    std::fs::write(&env_file, format!("# secrets\nAPI_SECRET={secret}\n")).unwrap();
    let child = nodeos()
        .arg("run")
        .arg(&image)
        .args(["--accel", "tcg", "--log-format", "json", "--grace", "5"])
        .arg("--env-file")
        .arg(&env_file)
        .args(["--env", "GREETING=hi"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nodeos run starts");
    let pid = Pid::from_child(&child);
    // Ctrl-C once the app is up (its READY line is on the console).
    let (status, output) = wait_timeout_after(child, BOOT, "READY", move || {
        kill_process(pid, Signal::INT).unwrap();
    });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let err = stderr(&output);
    assert_eq!(status, Some(0), "console:\n{stdout}\nstderr:\n{err}");
    let expected_sha = sha256_hex(secret.as_bytes());
    let records: Vec<serde_json::Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let app_lines: Vec<&str> = records
        .iter()
        .filter(|r| r["source"] == "app")
        .map(|r| r["message"].as_str().unwrap())
        .collect();
    assert!(
        app_lines.contains(&format!("SECRET-SHA {expected_sha}").as_str()),
        "{stdout}"
    );
    assert!(app_lines.contains(&"ENV hi image"), "{stdout}");
    assert!(
        !stdout.contains(secret) && !err.contains(secret),
        "the secret was printed"
    );
    let init: Vec<&str> = records
        .iter()
        .filter(|r| r["source"] == "init")
        .map(|r| r["message"].as_str().unwrap())
        .collect();
    assert!(
        init.iter()
            .any(|m| m.contains("API_SECRET") && m.contains("values not shown")),
        "{stdout}"
    );
    let marker = stdout
        .find("SIGTERM-MARKER written")
        .expect("marker on the console");
    let off = stdout.find("powering off").expect("power-off line");
    assert!(marker < off, "marker after power-off:\n{stdout}");
    assert!(
        stdout.contains("sending SIGTERM to the app, SIGKILL in 5s"),
        "{stdout}"
    );
}

/// Privileges: the app runs as uid 1000 with no capabilities and
/// no_new_privs, can write only to /tmp, and still serves on port 80.
#[test]
fn app_runs_unprivileged_and_binds_its_low_port() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("unpriv");
    write_project(
        &project,
        r#"{"name":"unpriv","version":"0.1.0","engines":{"node":"22"},"scripts":{"start":"node main.js"},
            "nodeos":{"port":80}}"#,
        &[(
            "main.js",
            "const fs = require('fs');\nconst http = require('http');\n\
             const status = fs.readFileSync('/proc/self/status', 'utf8');\n\
             const field = (k) => status.split('\\n').find((l) => l.startsWith(k + ':')).split(/\\s+/)[1];\n\
             const writable = (p) => { try { fs.writeFileSync(p, 'x'); return true; } catch (e) { return e.code; } };\n\
             const report = { uid: process.getuid(), gid: process.getgid(), groups: process.getgroups(),\n\
               capEff: field('CapEff'), capPrm: field('CapPrm'), capBnd: field('CapBnd'), noNewPrivs: field('NoNewPrivs'),\n\
               user: require('os').userInfo().username, port: process.env.PORT,\n\
               writes: Object.fromEntries(['/tmp/x', '/x', '/app/x', '/etc/x', '/run/x', '/dev/x', '/proc/sys/kernel/hostname'].map((p) => [p, writable(p)])) };\n\
             http.createServer((q, r) => r.end(JSON.stringify(report))).listen(Number(process.env.PORT));\n",
        )],
    );
    let image = build_image(&project, None, Profile::Dev);
    let (port, fwd) = forward(80);
    let mut vm = boot(&image, 256, vec![fwd]);
    let body = http_get_until_ok(port, "/", BOOT)
        .unwrap_or_else(|e| fail_with_console(&vm, &format!("GET /: {e}")));
    let r: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (r["uid"].as_u64(), r["gid"].as_u64()),
        (Some(1000), Some(1000)),
        "{r}"
    );
    assert_eq!(r["groups"], serde_json::json!([1000]), "{r}");
    assert_eq!(r["user"], "app");
    assert_eq!(r["port"], "80");
    for cap in ["capEff", "capPrm", "capBnd"] {
        assert_eq!(r[cap], "0000000000000000", "{cap}: {r}");
    }
    assert_eq!(r["noNewPrivs"], "1");
    assert_eq!(r["writes"]["/tmp/x"], true, "{r}");
    for path in [
        "/x",
        "/app/x",
        "/etc/x",
        "/run/x",
        "/dev/x",
        "/proc/sys/kernel/hostname",
    ] {
        let outcome = &r["writes"][path];
        assert!(
            outcome == "EROFS" || outcome == "EACCES" || outcome == "EPERM",
            "{path}: {outcome} ({r})"
        );
    }
    stop(&mut vm);
}

/// Static network settings from package.json: IPv4 and IPv6 addresses,
/// an /etc/hosts entry, and outbound TCP through QEMU's gateway to a
/// server on the host's loopback.
#[test]
fn static_network_hosts_entry_and_outbound_tcp() {
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host_port = server.local_addr().unwrap().port();
    let accepted = std::thread::spawn(move || {
        let (mut conn, _) = server.accept().unwrap();
        std::io::Write::write_all(&mut conn, b"pong from the host\n").unwrap();
    });
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("netstatic");
    let package_json = format!(
        r#"{{"name":"netstatic","version":"0.1.0","engines":{{"node":"22"}},"scripts":{{"start":"node main.js"}},
            "nodeos":{{"restart":"never","env":{{"HOST_PORT":"{host_port}"}},
              "network":{{"ipv4":{{"address":"10.0.2.20/24","gateway":"10.0.2.2"}},
                          "ipv6":{{"address":"fec0::20/64","gateway":"fec0::2"}},
                          "hosts":{{"host.internal":"10.0.2.2"}}}}}}}}"#
    );
    write_project(
        &project,
        &package_json,
        &[(
            "main.js",
            "const os = require('os'); const dns = require('dns'); const net = require('net');\n\
             const eth0 = os.networkInterfaces().eth0 || [];\n\
             for (const a of eth0) console.log('ADDR ' + a.family + ' ' + a.cidr);\n\
             dns.lookup('host.internal', { family: 4 }, (err, addr) => {\n\
               console.log('LOOKUP ' + (err ? err.code : addr));\n\
               const c = net.connect(Number(process.env.HOST_PORT), 'host.internal');\n\
               c.on('data', (d) => { console.log('TCP ' + d.toString().trim()); c.end(); });\n\
               c.on('error', (e) => { console.log('TCP error ' + e.code); process.exit(1); });\n\
             });\n",
        )],
    );
    let image = build_image(&project, None, Profile::Dev);
    let vm = boot(&image, 256, vec![]);
    let line = wait_line(&vm, "network: eth0 10.0.2.20/24", BOOT);
    assert!(
        line.ends_with("network: eth0 10.0.2.20/24 via 10.0.2.2 (static)"),
        "{line}"
    );
    wait_line(&vm, "network: eth0 fec0::20/64 via fec0::2 (static)", BOOT);
    wait_line(&vm, "TCP pong from the host", BOOT);
    let log = vm.console_log();
    assert!(log.contains("LOOKUP 10.0.2.2"), "{log}");
    assert!(log.contains("ADDR IPv4 10.0.2.20/24"), "{log}");
    assert!(log.contains("ADDR IPv6 fec0::20/64"), "{log}");
    accepted.join().unwrap();
}

/// Like `wait_timeout`, but runs `then` once `marker` appears on stdout.
fn wait_timeout_after(
    mut child: Child,
    timeout: Duration,
    marker: &'static str,
    then: impl FnOnce() + Send + 'static,
) -> (Option<i32>, Output) {
    let mut out = child.stdout.take().unwrap();
    let out_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let mut then = Some(then);
        loop {
            match out.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if then.is_some() && String::from_utf8_lossy(&buf).contains(marker) {
                (then.take().unwrap())();
            }
        }
        buf
    });
    let (status, mut output) = wait_timeout(child, timeout);
    output.stdout = out_thread.join().unwrap();
    (status, output)
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
