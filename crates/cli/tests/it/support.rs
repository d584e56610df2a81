//! Helpers shared by the integration tests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use nodeos_manifest::Profile;

/// The `nodeos` binary under test.
pub fn nodeos() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nodeos"));
    cmd.env("NO_COLOR", "1");
    cmd
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn example(name: &str) -> PathBuf {
    repo_root().join("examples").join(name)
}

/// Runs a command, returning its output; panics if it could not start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("nodeos runs")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts the exit code, showing stderr when it differs.
#[track_caller]
pub fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "expected exit code {code}; stderr:\n{}\nstdout:\n{}",
        stderr(out),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Builds `project` into `out` (default: the project's `dist/`) and
/// returns the image directory.
pub fn build_image(project: &Path, out: Option<&Path>, profile: Profile) -> PathBuf {
    let mut cmd = nodeos();
    cmd.arg("build")
        .arg(project)
        .args(["--profile", profile.as_str(), "--json"]);
    if let Some(out) = out {
        cmd.arg("--out").arg(out);
    }
    let output = run(&mut cmd);
    assert_exit(&output, 0);
    let value: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("--json prints JSON");
    PathBuf::from(value["dir"].as_str().expect("dir in --json output"))
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GETs `path` on 127.0.0.1:`port` until it answers 200 or `timeout` passes.
pub fn http_get_until_ok(port: u16, path: &str, timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no attempt");
    while Instant::now() < deadline {
        match http_get(port, path) {
            Ok((200, body)) => return Ok(body),
            Ok((status, body)) => last = format!("status {status}: {body}"),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(last)
}

/// One HTTP/1.0 GET; returns (status, body).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line)?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
    let mut rest = String::new();
    reader.read_to_string(&mut rest)?;
    let body = rest
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Writes a minimal npm project into `dir`.
pub fn write_project(dir: &Path, package_json: &str, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("package.json"), package_json).unwrap();
    for (name, contents) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }
}

/// True if `dir` does not exist or is empty.
pub fn is_empty_or_missing(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

/// A `nodeos run` in the background. Its stdout (the guest console) and
/// stderr are collected as they arrive; dropping it kills it (and with it
/// QEMU, through QEMU's parent-death signal).
pub struct NodeosRun {
    child: std::process::Child,
    stdout: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl NodeosRun {
    /// Starts `cmd` (a `nodeos run …` command) with its output piped.
    pub fn spawn(cmd: &mut Command) -> NodeosRun {
        use std::process::Stdio;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nodeos run starts");
        let collect = |mut pipe: Box<dyn Read + Send>| {
            let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let sink = buf.clone();
            let reader = std::thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    sink.lock().unwrap().extend_from_slice(&chunk[..n]);
                }
            });
            (buf, reader)
        };
        let (stdout, out_reader) = collect(Box::new(child.stdout.take().unwrap()));
        let (stderr, err_reader) = collect(Box::new(child.stderr.take().unwrap()));
        NodeosRun {
            child,
            stdout,
            stderr,
            readers: vec![out_reader, err_reader],
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The console so far.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Both outputs, for failure messages.
    pub fn transcript(&self) -> String {
        format!(
            "----- console -----\n{}\n----- stderr -----\n{}\n------------------",
            self.stdout(),
            self.stderr()
        )
    }

    /// Ctrl-C.
    pub fn interrupt(&self) {
        use rustix::process::{Pid, Signal, kill_process};
        kill_process(Pid::from_child(&self.child), Signal::INT).unwrap();
    }

    /// The QEMU process `nodeos run` started, if it runs.
    pub fn qemu_pid(&self) -> Option<u32> {
        let parent = self.pid();
        std::fs::read_dir("/proc")
            .ok()?
            .flatten()
            .find_map(|entry| {
                let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
                let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
                let (comm, rest) = stat.rsplit_once(')')?;
                let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
                (ppid == parent && comm.contains("qemu")).then_some(pid)
            })
    }

    /// Waits for nodeos to exit (killing it after `timeout`) and returns
    /// its exit code (`None` if it was killed or died of a signal).
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let code = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        code
    }
}

impl Drop for NodeosRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes an image directory whose manifest matches its (fake) artefacts:
/// enough for `nodeos run` to get past its image check without a VM.
pub fn fake_image_dir(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let files = [
        ("kernel", "kernel"),
        ("runtime", "runtime.img"),
        ("app", "app.img"),
    ];
    let mut artifacts = serde_json::Map::new();
    for (key, file) in files {
        std::fs::write(dir.join(file), format!("{key} bytes")).unwrap();
        let (sha256, size) = nodeos_image::sha256_file(&dir.join(file)).unwrap();
        artifacts.insert(
            key.into(),
            serde_json::json!({ "path": file, "sha256": sha256, "size": size }),
        );
    }
    let manifest = serde_json::json!({
        "format": nodeos_manifest::MANIFEST_FORMAT, "name": "fake", "version": "1.0.0", "profile": "dev",
        "node": { "version": "22.0.0", "range": null, "integrity": "sha512-x" },
        "kernel": { "version": "6.1.0", "cmdline": "console=ttyS0", "artifact": "kernel" },
        "layers": { "format": "erofs", "compression": "lz4hc", "runtime": "runtime", "app": "app" },
        "artifacts": artifacts,
        "builder": "test"
    });
    std::fs::write(
        dir.join(nodeos_manifest::MANIFEST_FILE),
        serde_json::to_string_pretty(&manifest).unwrap(),
    )
    .unwrap();
}

/// An executable shell script `dir/name` with `body`. It is written by
/// `cp`, never through a descriptor of this process: a child another test
/// thread forks meanwhile would inherit it and make exec fail (ETXTBSY).
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let source = dir.join(format!("{name}.source"));
    std::fs::write(&source, format!("#!/bin/sh\n{body}\n")).unwrap();
    let path = dir.join(name);
    let copied = Command::new("cp").arg(&source).arg(&path).status().unwrap();
    assert!(copied.success(), "cp {}", source.display());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}
