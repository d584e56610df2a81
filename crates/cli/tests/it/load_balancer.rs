//! `examples/load-balancer` end to end: `npm ci` against the configured
//! registry, `nodeos build`, two backends on the host's loopback and the
//! balancer booted with `nodeos run` (TCG), which reaches them through
//! QEMU's gateway 10.0.2.2. Round robin, failover when a backend stops,
//! its return, and a clean stop on Ctrl-C.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nodeos_manifest::Profile;
use nodeos_manifest::console::{self, AppExit};

use crate::support::*;

/// Generous: TCG on a loaded 2-core CI machine.
const BOOT: Duration = Duration::from_secs(240);
const STOP: Duration = Duration::from_secs(60);
const NPM_CI: Duration = Duration::from_secs(300);
/// Longer than the example's health interval and timeout (3 s + 2 s).
const HEALTH: Duration = Duration::from_secs(30);

#[test]
fn load_balancer_alternates_fails_over_and_takes_a_backend_back() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("load-balancer");
    copy_project(&example("load-balancer"), &project);
    npm_ci(&project);
    let image = build_image(&project, None, Profile::Dev);

    let a = Backend::start("backend-a", 0);
    let mut b = Backend::start("backend-b", 0);
    let (url_a, url_b) = (a.guest_url(), b.guest_url());
    let port = free_port();
    let run = NodeosRun::spawn(
        nodeos()
            .arg("run")
            .arg(&image)
            .args(["--accel", "tcg", "--no-data", "-p", &format!("{port}:3000")])
            .args(["-e", &format!("BACKENDS={url_a},{url_b}")]),
    );
    let mut lb = Balancer { run, port };

    // Both backends up (the balancer's own view), then strict alternation.
    lb.wait_until_up(&[&url_a, &url_b]);
    let bodies: Vec<String> = (0..6).map(|i| lb.get_ok(&format!("/rr/{i}"))).collect();
    lb.assert_alternates(&bodies, ["backend-a", "backend-b"]);
    lb.wait_console(&format!("GET /rr/0 -> {url_a} 200"));
    lb.wait_console(&format!("GET /rr/1 -> {url_b} 200"));

    // b's listener is closed: every request is answered by a, the first
    // one after a retry if b was its turn.
    b.stop();
    for i in 0..8 {
        let body = lb.get_ok(&format!("/failover/{i}"));
        if body != "backend-a" {
            lb.fail(&format!(
                "GET /failover/{i} answered {body:?} with backend-b stopped"
            ));
        }
    }
    lb.wait_console(&format!("load-balancer: backend {url_b} is down"));
    lb.wait_console(&format!("GET /failover/7 -> {url_a} 200"));

    // b comes back on its port: the health check puts it back in rotation.
    let _b = Backend::start("backend-b", b.port);
    lb.wait_console(&format!("load-balancer: backend {url_b} is up"));
    let bodies: Vec<String> = (0..4).map(|i| lb.get_ok(&format!("/back/{i}"))).collect();
    lb.assert_alternates(&bodies, ["backend-a", "backend-b"]);

    // Ctrl-C: init sends SIGTERM, the balancer closes its server, exits 0.
    lb.run.interrupt();
    let code = lb.run.wait(STOP);
    let log = lb.run.stdout();
    if code != Some(0)
        || !log.contains("load-balancer: SIGTERM received, closing")
        || !log.contains(&console::app_exited_line(AppExit::Code(0)))
    {
        lb.fail(&format!(
            "expected a clean stop, nodeos run exited {code:?}"
        ));
    }
}

/// `npm ci` must fetch from the user's registry, so the committed lockfile
/// names none (`.npmrc`: `omit-lockfile-registry-resolved`).
#[test]
fn load_balancer_lockfile_names_no_registry() {
    let lockfile =
        std::fs::read_to_string(example("load-balancer").join("package-lock.json")).unwrap();
    let lock: serde_json::Value = serde_json::from_str(&lockfile).unwrap();
    let packages = lock["packages"].as_object().unwrap();
    assert!(
        packages.contains_key("node_modules/http-proxy"),
        "{lockfile}"
    );
    for (name, package) in packages {
        assert!(
            package.get("resolved").is_none(),
            "{name} has a resolved URL"
        );
    }
}

/// The balancer under `nodeos run`, reached through its forwarded port.
struct Balancer {
    run: NodeosRun,
    port: u16,
}

impl Balancer {
    #[track_caller]
    fn fail(&self, what: &str) -> ! {
        panic!("{what}\n{}", self.run.transcript());
    }

    /// GETs `path` and returns the body of a 200 (trimmed).
    #[track_caller]
    fn get_ok(&self, path: &str) -> String {
        match http_get(self.port, path) {
            Ok((200, body)) => body.trim().to_owned(),
            Ok((status, body)) => self.fail(&format!("GET {path}: {status} {body:?}")),
            Err(e) => self.fail(&format!("GET {path}: {e}")),
        }
    }

    /// Waits until the balancer answers `/healthz` with every URL up.
    #[track_caller]
    fn wait_until_up(&self, urls: &[&str]) {
        let deadline = Instant::now() + BOOT;
        let mut last = String::from("no answer");
        while Instant::now() < deadline {
            if let Ok((200, body)) = http_get(self.port, "/healthz") {
                let state: serde_json::Value = serde_json::from_str(&body)
                    .unwrap_or_else(|e| self.fail(&format!("/healthz: {e}: {body:?}")));
                let up = |url: &&str| {
                    state["backends"].as_array().is_some_and(|list| {
                        list.iter().any(|b| b["url"] == *url && b["up"] == true)
                    })
                };
                if urls.iter().all(up) {
                    return;
                }
                last = body;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        self.fail(&format!(
            "the backends never were all up; last /healthz: {last}"
        ));
    }

    /// Asserts `bodies` alternate between the two names.
    #[track_caller]
    fn assert_alternates(&self, bodies: &[String], names: [&str; 2]) {
        let alternates = bodies.iter().all(|b| names.contains(&b.as_str()))
            && bodies.windows(2).all(|w| w[0] != w[1]);
        if !alternates {
            self.fail(&format!("not round robin over {names:?}: {bodies:?}"));
        }
    }

    /// Waits until the console has a line containing `text`.
    #[track_caller]
    fn wait_console(&self, text: &str) {
        let deadline = Instant::now() + HEALTH;
        while !self.run.stdout().contains(text) {
            if Instant::now() > deadline {
                self.fail(&format!("no {text:?} on the console"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A backend on 127.0.0.1 that answers every request with its name. It
/// serves from a thread until stopped; then its listener is closed, so
/// connections to its port are refused.
struct Backend {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Backend {
    /// Listens on `port` (0: any free port).
    fn start(name: &'static str, port: u16) -> Backend {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("{name}: bind 127.0.0.1:{port}: {e}"));
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => answer(conn, name),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Backend {
            port,
            stop,
            thread: Some(thread),
        }
    }

    /// Its address as the guest sees it (QEMU's gateway is the host).
    fn guest_url(&self) -> String {
        format!("http://10.0.2.2:{}", self.port)
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads one request's head and answers `name`, closing the connection.
fn answer(mut conn: TcpStream, name: &str) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    }
    let body = format!("{name}\n");
    let _ = write!(
        conn,
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// Copies the example without what a local `npm install` or build left.
fn copy_project(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "node_modules" || name == "dist" {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            copy_project(&entry.path(), &to.join(&name));
        } else {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

/// `npm ci` in `dir` with the user's npm configuration (its registry).
fn npm_ci(dir: &Path) {
    let log = dir.with_extension("npm-ci.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut child = match Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!(
                "this test needs npm to install the example's dependencies: install Node.js and npm"
            )
        }
        Err(e) => panic!("npm ci: {e}"),
    };
    let deadline = Instant::now() + NPM_CI;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if !status.is_some_and(|s| s.success()) {
        panic!(
            "npm ci in {} failed ({status:?}; None: no exit within {NPM_CI:?}):\n{}",
            dir.display(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
}
