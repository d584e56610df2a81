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
