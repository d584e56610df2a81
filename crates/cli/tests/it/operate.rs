//! Operating a running appliance without a shell (issue #9), under QEMU
//! (TCG), on one boot: `nodeos status` with resource use, `nodeos logs`
//! (whole, `--tail`, `--since`, `--follow`), remote syslog over UDP to the
//! host's loopback, the Prometheus metrics behind a read token, the status
//! page in headless Chromium, and CPU and heap profiles through Node's
//! inspector.
//!
//! The app is the update tests' app with a few routes added in front of
//! its handler: `/say?text=` logs a line, `/spin` starts burning CPU in a
//! function named `nodeosHotLoop`, and a distinctive string stays on its heap.

use std::net::UdpSocket;
use std::path::Path;
use std::time::{Duration, Instant};

use nodeos_manifest::update::Status;

use crate::browser::Browser;
use crate::support::*;
use crate::update::{Appliance, BOOT, STOP, image, keygen, wait_console};

const HEAP_MARKER: &str = "nodeos-heap-marker-5f0c1e";

/// Routes in front of the app's own handler.
const PRELUDE: &str = r#"
globalThis.heapMarker = ['nodeos-heap-marker-', '5f0c1e'].join('');
function nodeosHotLoop(ms) {
  const end = Date.now() + ms;
  let x = 0;
  while (Date.now() < end) x += Math.sqrt(x + 1);
  return x;
}
const createServer = http.createServer;
http.createServer = (handler) => createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  if (url.pathname === '/say') {
    console.log('said ' + url.searchParams.get('text'));
    return res.end('ok');
  }
  if (url.pathname === '/spin') {
    setInterval(() => nodeosHotLoop(40), 50);
    return res.end('spinning');
  }
  handler(req, res);
});
"#;

#[test]
fn an_appliance_is_observable_logs_metrics_status_page_syslog_and_profiles() {
    let tmp = tempfile::tempdir().unwrap();
    let key = keygen(tmp.path(), "update-key.pem");
    let other = keygen(tmp.path(), "other-key.pem");
    let image = image(tmp.path(), "1.0.0", &key, PRELUDE, &[]);
    let syslog = UdpSocket::bind("127.0.0.1:0").unwrap();
    syslog
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let syslog_port = syslog.local_addr().unwrap().port();

    let appliance = Appliance::new(tmp.path());
    let mut cmd = appliance.command(&image);
    // QEMU's user network takes 10.0.2.2 to the host's loopback.
    cmd.args(["--syslog", &format!("udp://10.0.2.2:{syslog_port}")]);
    let mut vm = NodeosRun::spawn(&mut cmd);
    assert_eq!(appliance.version(&vm), "1.0.0");
    wait_console(&vm, "agent on port", BOOT);
    let url = appliance.url();
    let signed = |args: &[&str]| {
        let mut cmd = nodeos();
        cmd.args(args).arg("--key").arg(&key.path);
        cmd
    };

    // Status for people and for scripts.
    let out = run(&mut signed(&["status", &url]));
    assert_exit(&out, 0);
    let table = String::from_utf8(out.stdout).unwrap();
    for row in ["memory ", "cpu ", "data ", "net eth0 ", "boot ", "log "] {
        assert!(table.contains(row), "no {row:?} row in\n{table}");
    }
    let out = run(&mut signed(&["status", &url, "--json"]));
    assert_exit(&out, 0);
    let status: Status = serde_json::from_slice(&out.stdout).unwrap();
    let sys = status.system.expect("the status has the resource use");
    assert!(sys.memory_total > sys.memory_available && sys.memory_available > 0);
    assert!(
        sys.app_rss > 10 << 20,
        "node's RSS is tens of MiB: {}",
        sys.app_rss
    );
    assert!(sys.boot_ms.is_some_and(|ms| ms > 0) && sys.cpu_ms > 0);
    assert!(sys.data.is_some_and(|d| d.size > 0 && d.used > 0));
    assert!(
        sys.network
            .iter()
            .any(|n| n.name == "eth0" && n.rx_bytes > 0)
    );
    assert_eq!(status.app.state, "running");
    assert!(status.app.pid.is_some());

    // Logs: whole, the tail, none from the future.
    let logs = |args: &[&str]| {
        let mut all = vec!["logs", url.as_str()];
        all.extend_from_slice(args);
        let out = run(&mut signed(&all));
        assert_exit(&out, 0);
        String::from_utf8(out.stdout).unwrap()
    };
    let all = logs(&[]);
    assert!(
        all.contains("app[1] out: update-app 1.0.0 listening"),
        "{all}"
    );
    assert!(all.contains("nodeos-init: starting app"), "{all}");
    assert_eq!(logs(&["--tail", "1"]).lines().count(), 1);
    assert_eq!(logs(&["--since", "2999-01-01T00:00:00Z"]), "");
    let json = logs(&["--json", "--tail", "3"]);
    for line in json.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }

    // Follow: a line logged now arrives on a running `nodeos logs -f`.
    let follower = NodeosRun::spawn(&mut signed(&["logs", &url, "-f", "--tail", "0"]));
    std::thread::sleep(Duration::from_secs(2));
    say(&appliance, "followed-line");
    wait_for(
        || follower.stdout().contains("said followed-line"),
        || follower.transcript(),
    );
    drop(follower);

    // Remote syslog: RFC 5424 datagrams from the guest (user.info = 14).
    let mut received = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !received.contains("said followed-line") {
        assert!(Instant::now() < deadline, "syslog got only:\n{received}");
        let mut buf = [0u8; 4096];
        if let Ok(n) = syslog.recv(&mut buf) {
            received.push_str(&String::from_utf8_lossy(&buf[..n]));
            received.push('\n');
        }
    }
    assert!(
        received.lines().any(|l| l.starts_with("<14>1 ")
            && l.contains(" update-app app 1 stdout - said followed-line")),
        "{received}"
    );
    assert!(
        received.contains("listening"),
        "the boot's lines are shipped too:\n{received}"
    );

    // Metrics behind a read token; a wrong or missing token gets 401 alone.
    let token = |key: &crate::update::Key, args: &[&str]| {
        let out = run(nodeos().arg("token").args(args).arg("--key").arg(&key.path));
        assert_exit(&out, 0);
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let read = token(&key, &["--ttl", "1h"]);
    let (code, metrics) = get(
        appliance.agent,
        "/v1/metrics",
        &[("Authorization", &format!("Bearer {read}"))],
    );
    assert_eq!(code, 200, "{metrics}");
    for expected in [
        "nodeos_app_state{state=\"running\"} 1",
        "nodeos_info{appliance=\"update-app\",version=\"1.0.0\",slot=\"a\"} 1",
        "nodeos_memory_available_bytes ",
        "nodeos_app_resident_bytes ",
        "nodeos_data_used_bytes ",
        "nodeos_network_receive_bytes_total{device=\"eth0\"} ",
        "nodeos_boot_seconds ",
        "nodeos_syslog_sent_total{target=",
    ] {
        assert!(metrics.contains(expected), "no {expected:?} in\n{metrics}");
    }
    let wrong = token(&other, &[]);
    for headers in [
        vec![("Authorization", format!("Bearer {wrong}"))],
        vec![(
            "Authorization",
            format!("Bearer {}x", &read[..read.len() - 1]),
        )],
        vec![],
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let (code, body) = get(appliance.agent, "/v1/metrics", &headers);
        assert_eq!(code, 401, "{body}");
        assert!(
            !body.contains("nodeos_") && !body.contains("1.0.0"),
            "{body}"
        );
    }
    // A read token cannot profile (or update).
    let (code, body) = request(
        appliance.agent,
        "POST",
        "/v1/profile?kind=heap",
        &[("Authorization", &format!("Bearer {read}"))],
    );
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("read_only"), "{body}");

    // The status page in a real browser, logged in by the token's link.
    let link = token(&key, &[&url]);
    let browser = Browser::start();
    browser.goto(&link);
    assert_eq!(
        browser.url(),
        format!("{url}/"),
        "the token leaves the address bar"
    );
    assert!(browser.title().contains("update-app"), "{}", browser.html());
    assert_eq!(browser.text("#state").trim(), "running");
    assert!(browser.text("#version").contains("1.0.0"));
    assert!(browser.text("#log").contains("said followed-line"));
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("operate-status-page.png");
    browser.screenshot(&shot);
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    eprintln!("status page screenshot: {}", shot.display());
    // It refreshes itself: a new line shows up without a reload.
    say(&appliance, "refreshed-line");
    wait_for(
        || browser.text("#log").contains("said refreshed-line"),
        || browser.html(),
    );
    drop(browser);

    // A CPU profile of a busy app finds its hot function; a second profile
    // meanwhile is refused.
    let (code, _) = http_get(appliance.app, "/spin").unwrap();
    assert_eq!(code, 200);
    let cpu = tmp.path().join("app.cpuprofile");
    let mut profiling = NodeosRun::spawn(&mut signed(&[
        "profile",
        &url,
        "--cpu",
        "4s",
        "--out",
        cpu.to_str().unwrap(),
    ]));
    wait_console(&vm, "CPU profile of the app (pid", Duration::from_secs(60));
    let out = run(&mut signed(&[
        "profile",
        &url,
        "--heap",
        "--out",
        tmp.path().join("x").to_str().unwrap(),
    ]));
    assert_exit(&out, 15);
    assert!(
        stderr(&out).contains("being taken already"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        profiling.wait(Duration::from_secs(120)),
        Some(0),
        "{}",
        profiling.transcript()
    );
    let profile: serde_json::Value = serde_json::from_slice(&std::fs::read(&cpu).unwrap()).unwrap();
    let (hot, share) = hottest_function(&profile);
    assert_eq!(hot, "nodeosHotLoop", "{share:.2} of the samples");
    eprintln!(
        "cpu profile: {hot} has {:.0} % of the samples",
        share * 100.0
    );

    // A heap snapshot holds the app's string.
    let heap = tmp.path().join("app.heapsnapshot");
    let out = run(&mut signed(&[
        "profile",
        &url,
        "--heap",
        "--out",
        heap.to_str().unwrap(),
    ]));
    assert_exit(&out, 0);
    let snapshot: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&heap).unwrap()).unwrap();
    assert!(snapshot["snapshot"]["meta"]["node_fields"].is_array());
    let node_count = snapshot["snapshot"]["node_count"].as_u64().unwrap();
    let node_fields = snapshot["snapshot"]["meta"]["node_fields"]
        .as_array()
        .unwrap()
        .len() as u64;
    assert_eq!(
        snapshot["nodes"].as_array().unwrap().len() as u64,
        node_count * node_fields
    );
    let strings = snapshot["strings"].as_array().unwrap();
    assert!(strings.iter().any(|s| s == HEAP_MARKER));
    // The inspector is closed again: the app still serves, and another
    // profile opens it anew.
    assert_eq!(appliance.version(&vm), "1.0.0");

    vm.interrupt();
    assert_eq!(vm.wait(STOP), Some(0), "{}", vm.transcript());
}

/// Asks the app to log `said <text>`.
fn say(appliance: &Appliance, text: &str) {
    let (code, _) = http_get(appliance.app, &format!("/say?text={text}")).unwrap();
    assert_eq!(code, 200);
}

#[track_caller]
fn wait_for(done: impl Fn() -> bool, context: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out:\n{}", context());
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    request(port, "GET", path, headers)
}

/// One plain HTTP/1.1 request to 127.0.0.1:`port`: (status, body).
fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let code = answer.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (code, body.to_owned())
}

/// The function with the most self samples in a `.cpuprofile` (the idle,
/// program and garbage collector entries aside), and its share of all samples.
fn hottest_function(profile: &serde_json::Value) -> (String, f64) {
    let names: std::collections::HashMap<u64, String> = profile["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["id"].as_u64().unwrap(),
                n["callFrame"]["functionName"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let samples = profile["samples"].as_array().unwrap();
    assert!(!samples.is_empty(), "the profile has samples");
    // What Chrome DevTools reads: a time delta per sample, and the span.
    assert_eq!(
        profile["timeDeltas"].as_array().unwrap().len(),
        samples.len()
    );
    assert!(profile["startTime"].as_u64().unwrap() < profile["endTime"].as_u64().unwrap());
    let mut counts: std::collections::HashMap<&str, usize> = Default::default();
    for sample in samples {
        let name = names[&sample.as_u64().unwrap()].as_str();
        *counts.entry(name).or_default() += 1;
    }
    let (name, count) = counts
        .into_iter()
        .filter(|(name, _)| !name.starts_with('(') && !name.is_empty())
        .max_by_key(|(_, count)| *count)
        .expect("a named function was sampled");
    (name.to_owned(), count as f64 / samples.len() as f64)
}
