//! Signed A/B updates under QEMU (TCG): `nodeos deploy` to a running
//! `nodeos run`, and each fault of issue #6. Every test ends with the
//! right version serving and the file written to /data before it intact;
//! after the VM stops, the host reads the system disk's state back.
//!
//! The app reports its version on `/`, answers `/healthz`, and writes and
//! reads files in /data (fsynced) like the data tests' fixture.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use nodeos_image::bundle::{self, Bundle};
use nodeos_image::keys;
use nodeos_manifest::Manifest;
use nodeos_manifest::Profile;
use nodeos_manifest::slots::{Slot, SlotStatus, UpdateResult};
use nodeos_manifest::update::{STATUS_PATH, Status, UPDATE_PATH};
use nodeos_vmm::system_disk::SystemDisk;
use rustix::process::{Pid, Signal, kill_process};

use crate::support::*;

/// Generous: TCG on a loaded 2-core CI machine.
pub(crate) const BOOT: Duration = Duration::from_secs(240);
pub(crate) const STOP: Duration = Duration::from_secs(60);

/// A key pair made by `nodeos keygen`.
pub(crate) struct Key {
    pub(crate) path: PathBuf,
    signing: SigningKey,
    public: String,
}

pub(crate) fn keygen(dir: &Path, name: &str) -> Key {
    let path = dir.join(name);
    let out = run(nodeos().arg("keygen").arg("--out").arg(&path));
    assert_exit(&out, 0);
    Key {
        signing: keys::read_private(&path).unwrap(),
        public: String::from_utf8(out.stdout).unwrap().trim().to_owned(),
        path,
    }
}

/// The test app at `version`; `prelude` runs first (e.g. a crash).
fn project(dir: &Path, version: &str, key: &Key, prelude: &str, extra: &[(&str, &str)]) -> PathBuf {
    let package = format!(
        r#"{{
  "name": "update-app",
  "version": "{version}",
  "private": true,
  "scripts": {{ "start": "node main.js" }},
  "engines": {{ "node": "22" }},
  "nodeos": {{
    "restart": "always",
    "update": {{ "publicKey": "{}", "health": {{ "path": "/healthz", "timeout": 60 }} }}
  }}
}}"#,
        key.public
    );
    let main = format!(
        r#"const fs = require('fs');
const http = require('http');
const path = require('path');
const VERSION = '{version}';
{prelude}
function durableWrite(file, data) {{
  const fd = fs.openSync(file, 'w');
  fs.writeSync(fd, data);
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  const dir = fs.openSync(path.dirname(file), 'r');
  fs.fsyncSync(dir);
  fs.closeSync(dir);
}}
http.createServer((req, res) => {{
  const url = new URL(req.url, 'http://x');
  const q = url.searchParams;
  let body;
  try {{
    if (url.pathname === '/') body = {{ version: VERSION }};
    else if (url.pathname === '/healthz') body = {{ ok: true }};
    else if (url.pathname === '/write') {{
      durableWrite(path.join('/data', q.get('name')), q.get('text'));
      body = {{ ok: true }};
    }} else if (url.pathname === '/read') {{
      body = {{ text: fs.readFileSync(path.join('/data', q.get('name')), 'utf8') }};
    }} else {{
      res.writeHead(404);
      return res.end();
    }}
    res.writeHead(200, {{ 'content-type': 'application/json' }});
  }} catch (e) {{
    res.writeHead(500, {{ 'content-type': 'application/json' }});
    body = {{ error: e.code || String(e) }};
  }}
  res.end(JSON.stringify(body));
}}).listen(process.env.PORT, () => console.log('update-app ' + VERSION + ' listening'));
"#
    );
    let mut files = vec![("main.js", main.as_str())];
    files.extend_from_slice(extra);
    write_project(dir, &package, &files);
    dir.to_owned()
}

/// Builds the app at `version` into `<tmp>/<version>/`; returns the image directory.
pub(crate) fn image(
    tmp: &Path,
    version: &str,
    key: &Key,
    prelude: &str,
    extra: &[(&str, &str)],
) -> PathBuf {
    let dir = tmp.join(format!("src-{version}"));
    project(&dir, version, key, prelude, extra);
    build_image(&dir, Some(&tmp.join(version)), Profile::Dev)
}

/// The ports and files of one appliance.
pub(crate) struct Appliance {
    pub(crate) app: u16,
    pub(crate) agent: u16,
    system: PathBuf,
    data: PathBuf,
}

impl Appliance {
    pub(crate) fn new(tmp: &Path) -> Appliance {
        Appliance {
            app: free_port(),
            agent: free_port(),
            system: tmp.join("update-app.system.img"),
            data: tmp.join("update-app.data.img"),
        }
    }

    /// `nodeos run IMAGE` with both ports forwarded.
    pub(crate) fn command(&self, image: &Path) -> std::process::Command {
        let mut cmd = nodeos();
        cmd.arg("run")
            .arg(image)
            .args(["--accel", "tcg", "--data-size", "16M"])
            .args(["-p", &format!("{}:3000", self.app)])
            .args(["-p", &format!("{}:7070", self.agent)])
            .arg("--data")
            .arg(&self.data)
            .arg("--system")
            .arg(&self.system);
        cmd
    }

    /// [`Appliance::command`] in the background.
    fn boot(&self, image: &Path) -> NodeosRun {
        NodeosRun::spawn(&mut self.command(image))
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.agent)
    }

    /// The version serving on `/`, once it answers.
    #[track_caller]
    pub(crate) fn version(&self, run: &NodeosRun) -> String {
        let body = http_get_until_ok(self.app, "/", BOOT)
            .unwrap_or_else(|e| panic!("the app never answered: {e}\n{}", run.transcript()));
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        json["version"].as_str().unwrap().to_owned()
    }

    #[track_caller]
    fn write(&self, run: &NodeosRun, name: &str, text: &str) {
        let (status, body) = http_get(self.app, &format!("/write?name={name}&text={text}"))
            .unwrap_or_else(|e| panic!("write: {e}\n{}", run.transcript()));
        assert_eq!(status, 200, "{body}\n{}", run.transcript());
    }

    #[track_caller]
    fn read(&self, run: &NodeosRun, name: &str) -> String {
        let (status, body) = http_get(self.app, &format!("/read?name={name}"))
            .unwrap_or_else(|e| panic!("read: {e}\n{}", run.transcript()));
        assert_eq!(status, 200, "{body}\n{}", run.transcript());
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        json["text"].as_str().unwrap().to_owned()
    }

    /// `nodeos deploy URL --image IMAGE --key KEY ARGS…`.
    fn deploy(&self, image: &Path, key: &Key, args: &[&str]) -> std::process::Output {
        run(nodeos()
            .arg("deploy")
            .arg(self.url())
            .arg("--image")
            .arg(image)
            .arg("--key")
            .arg(&key.path)
            .args(args))
    }

    /// A signed `GET /v1/status`.
    #[track_caller]
    fn status(&self, key: &Key) -> Status {
        let (code, body) = request(self.agent, key, "GET", STATUS_PATH, &[]);
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Host side, after the VM stopped: the state and a check of each good slot.
    fn state(&self) -> nodeos_manifest::slots::State {
        let system = SystemDisk::open(&self.system).unwrap();
        let state = system.read_state().unwrap().expect("a state");
        for slot in [Slot::A, Slot::B] {
            if state.slot(slot).status == SlotStatus::Good {
                system.verify_slot(slot).unwrap();
            }
        }
        state
    }
}

/// One HTTP/1.1 request to the agent on 127.0.0.1:`port`, signed with
/// `key`, with `body`: (status, body).
fn request(port: u16, key: &Key, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let auth = keys::sign_request(&key.signing, method, path, body.len() as u64).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(body).unwrap();
    read_answer(stream)
}

fn read_answer(stream: TcpStream) -> (u16, String) {
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let code = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut rest = String::new();
    let _ = reader.read_to_string(&mut rest);
    let body = rest.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (code, body.to_owned())
}

/// The whole bundle of `image` for the appliance in `status`, signed by `key`.
fn bundle_bytes(image: &Path, status: &Status, sequence: u64, key: &Key) -> Vec<u8> {
    let manifest = read_manifest(image);
    let plan = bundle::plan(
        &manifest,
        Some(status),
        sequence,
        &keys::public_key(&key.signing),
        false,
    );
    let bundle = Bundle::sign(plan, &key.signing, image).unwrap();
    let mut bytes = Vec::new();
    bundle.reader().unwrap().read_to_end(&mut bytes).unwrap();
    assert_eq!(bytes.len() as u64, bundle.len());
    bytes
}

fn read_manifest(image: &Path) -> Manifest {
    Manifest::from_json(&std::fs::read_to_string(image.join("manifest.json")).unwrap()).unwrap()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Waits until the console has a line containing `text`.
#[track_caller]
pub(crate) fn wait_console(run: &NodeosRun, text: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !run.stdout().contains(text) {
        assert!(
            Instant::now() < deadline,
            "no {text:?} on the console\n{}",
            run.transcript()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn deploy_commits_a_new_version_keeps_data_and_refuses_a_replay() {
    let tmp = tempfile::tempdir().unwrap();
    let key = keygen(tmp.path(), "key.pem");
    let v1 = image(tmp.path(), "1.0.0", &key, "", &[]);
    let v2 = image(tmp.path(), "1.0.1", &key, "", &[]);
    let box_ = Appliance::new(tmp.path());
    let mut run = box_.boot(&v1);
    assert_eq!(box_.version(&run), "1.0.0");
    box_.write(&run, "keep", "before-update");
    let before = box_.status(&key);
    assert_eq!((before.version.as_str(), before.slot), ("1.0.0", Slot::A));

    let out = box_.deploy(&v2, &key, &[]);
    assert_exit(&out, 0);
    let said = stderr(&out);
    assert!(
        said.contains("1.0.0 → 1.0.1"),
        "{said}\n{}",
        run.transcript()
    );
    assert!(said.contains("slot b"), "{said}");
    assert_eq!(box_.version(&run), "1.0.1");
    assert_eq!(box_.read(&run, "keep"), "before-update");
    let after = box_.status(&key);
    assert_eq!((after.slot, after.trial), (Slot::B, false));
    let last = after.last_update.clone().unwrap();
    assert_eq!(last.result, UpdateResult::Committed, "{last:?}");
    assert!(after.max_sequence > before.max_sequence);
    // Only the app layer travelled: the runtime and kernel were already there.
    assert!(
        run.stdout().contains("update accepted: update-app 1.0.1"),
        "{}",
        run.transcript()
    );

    // The same bundle again, and the older version's: both refused.
    for (image, sequence) in [(&v2, last.sequence), (&v1, before.max_sequence)] {
        let bytes = bundle_bytes(image, &after, sequence, &key);
        let (code, body) = request(box_.agent, &key, "POST", UPDATE_PATH, &bytes);
        assert_eq!(code, 409, "{body}");
        assert!(body.contains("not_newer"), "{body}");
    }
    assert_eq!(box_.version(&run), "1.0.1");

    run.interrupt();
    assert_eq!(run.wait(STOP), Some(0), "{}", run.transcript());
    let state = box_.state();
    assert_eq!(state.active, Slot::B);
    assert_eq!(
        (state.a.status, state.b.status),
        (SlotStatus::Good, SlotStatus::Good)
    );

    // Booting the old image directory again runs the deployed version.
    let mut run = box_.boot(&v1);
    assert_eq!(box_.version(&run), "1.0.1", "{}", run.transcript());
    assert_eq!(box_.read(&run, "keep"), "before-update");
    run.interrupt();
    assert_eq!(run.wait(STOP), Some(0), "{}", run.transcript());
}

/// Key rotation (docs/security.md): the running version takes an update
/// signed with the key it trusts; the new version trusts the new key only.
#[test]
fn deploy_with_a_new_key_hands_the_appliance_over_to_it() {
    let tmp = tempfile::tempdir().unwrap();
    let old = keygen(tmp.path(), "old.pem");
    let new = keygen(tmp.path(), "new.pem");
    let v1 = image(tmp.path(), "1.0.0", &old, "", &[]);
    let v2 = image(tmp.path(), "1.0.1", &new, "", &[]);
    let box_ = Appliance::new(tmp.path());
    let mut run = box_.boot(&v1);
    assert_eq!(box_.version(&run), "1.0.0");

    // An image trusting another key is refused before anything is sent,
    // with the way to hand over.
    let out = box_.deploy(&v2, &old, &[]);
    assert_exit(&out, 14);
    assert!(stderr(&out).contains("--new-key"), "{}", stderr(&out));
    // The new key alone is not what the running version trusts.
    let out = box_.deploy(&v2, &new, &[]);
    assert_exit(&out, 15);
    assert!(stderr(&out).contains("wrong_key"), "{}", stderr(&out));
    let same = box_.deploy(&v2, &old, &["--new-key", old.path.to_str().unwrap()]);
    assert_exit(&same, 14);

    let new_path = new.path.to_str().unwrap();
    let out = box_.deploy(&v2, &old, &["--new-key", new_path]);
    assert_exit(&out, 0);
    let said = stderr(&out);
    assert!(
        said.contains("1.0.0 → 1.0.1"),
        "{said}\n{}",
        run.transcript()
    );
    assert!(
        said.contains("now takes requests signed with update key"),
        "{said}"
    );
    assert_eq!(box_.version(&run), "1.0.1");
    let status = box_.status(&new);
    assert_eq!((status.slot, status.trial), (Slot::B, false));
    let (code, body) = request(box_.agent, &old, "GET", STATUS_PATH, &[]);
    assert_eq!(code, 403, "the old key still works: {body}");
    assert!(body.contains("wrong_key"), "{body}");

    run.interrupt();
    assert_eq!(run.wait(STOP), Some(0), "{}", run.transcript());
}

#[test]
fn a_version_that_crashes_at_start_is_rolled_back_and_deploy_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let key = keygen(tmp.path(), "key.pem");
    let v1 = image(tmp.path(), "1.0.0", &key, "", &[]);
    let crash = "throw new Error('boom at start');";
    let v2 = image(tmp.path(), "2.0.0", &key, crash, &[]);
    let box_ = Appliance::new(tmp.path());
    let mut run = box_.boot(&v1);
    assert_eq!(box_.version(&run), "1.0.0");
    box_.write(&run, "keep", "survives-rollback");

    let out = box_.deploy(&v2, &key, &[]);
    assert_exit(&out, 16);
    let said = stderr(&out);
    assert!(said.contains("rolled back"), "{said}\n{}", run.transcript());
    assert!(said.contains("boom at start"), "{said}");
    assert_eq!(box_.version(&run), "1.0.0", "{}", run.transcript());
    assert_eq!(box_.read(&run, "keep"), "survives-rollback");
    let status = box_.status(&key);
    assert_eq!(status.slot, Slot::A);
    assert_eq!(status.last_update.unwrap().result, UpdateResult::RolledBack);
    assert_eq!(status.slots[&Slot::B].status, SlotStatus::Bad);

    run.interrupt();
    assert_eq!(run.wait(STOP), Some(0), "{}", run.transcript());
    let state = box_.state();
    assert_eq!((state.active, state.b.status), (Slot::A, SlotStatus::Bad));
}

#[test]
fn corrupt_and_foreign_bundles_are_refused_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let key = keygen(tmp.path(), "key.pem");
    let other = keygen(tmp.path(), "other.pem");
    let v1 = image(tmp.path(), "1.0.0", &key, "", &[]);
    let v2 = image(tmp.path(), "1.0.1", &key, "", &[]);
    let box_ = Appliance::new(tmp.path());
    let mut run = box_.boot(&v1);
    assert_eq!(box_.version(&run), "1.0.0");
    box_.write(&run, "keep", "untouched");
    let status = box_.status(&key);

    // One byte of the app layer flipped in transit.
    let mut corrupt = bundle_bytes(&v2, &status, now_ms(), &key);
    let at = corrupt.len() - 100;
    corrupt[at] ^= 0x01;
    let (code, body) = request(box_.agent, &key, "POST", UPDATE_PATH, &corrupt);
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("app"), "{body}");

    // A bundle signed by another key, in a request signed by the right one.
    let status = box_.status(&key);
    let foreign = bundle_bytes(&v2, &status, now_ms(), &other);
    let (code, body) = request(box_.agent, &key, "POST", UPDATE_PATH, &foreign);
    assert_eq!(code, 403, "{body}");
    // A request signed by another key.
    let (code, body) = request(box_.agent, &other, "GET", STATUS_PATH, &[]);
    assert_eq!(code, 403, "{body}");
    // No signature at all.
    let mut stream = TcpStream::connect(("127.0.0.1", box_.agent)).unwrap();
    write!(stream, "GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_answer(stream).0, 401);

    assert_eq!(box_.version(&run), "1.0.0");
    assert_eq!(box_.read(&run, "keep"), "untouched");
    assert!(!run.stdout().contains("rebooting"), "{}", run.transcript());
    run.interrupt();
    assert_eq!(run.wait(STOP), Some(0), "{}", run.transcript());
    let state = box_.state();
    assert_eq!(state.active, Slot::A);
    assert!(matches!(state.b.status, SlotStatus::Empty), "{:?}", state.b);
}

#[test]
fn qemu_killed_mid_upload_or_mid_write_boots_the_old_version() {
    let tmp = tempfile::tempdir().unwrap();
    let key = keygen(tmp.path(), "key.pem");
    let v1 = image(tmp.path(), "1.0.0", &key, "", &[]);
    // 4 MiB that do not compress, so the app layer takes a while to write.
    let mut noise = vec![0u8; 4 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for byte in &mut noise {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *byte = b'a' + (x % 26) as u8;
    }
    let noise = String::from_utf8(noise).unwrap();
    let v2 = image(tmp.path(), "1.0.1", &key, "", &[("noise.txt", &noise)]);
    let box_ = Appliance::new(tmp.path());

    // Cut once after the head, once in the middle of the app layer.
    for (cut, wait_for) in [(0usize, "update accepted"), (3 << 20, "MiB written")] {
        let mut run = box_.boot(&v1);
        assert_eq!(box_.version(&run), "1.0.0", "{}", run.transcript());
        box_.write(&run, "keep", "before-the-cut");
        let status = box_.status(&key);
        let bytes = bundle_bytes(&v2, &status, now_ms(), &key);
        let head = bytes.len() - (read_manifest(&v2).artifacts["app"].size as usize);
        let mut stream = TcpStream::connect(("127.0.0.1", box_.agent)).unwrap();
        let auth =
            keys::sign_request(&key.signing, "POST", UPDATE_PATH, bytes.len() as u64).unwrap();
        write!(
            stream,
            "POST {UPDATE_PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: {}\r\n\r\n",
            bytes.len()
        )
        .unwrap();
        stream.write_all(&bytes[..head + cut]).unwrap();
        wait_console(&run, wait_for, BOOT);
        let qemu = run.qemu_pid().expect("QEMU runs");
        kill_process(Pid::from_raw(qemu as i32).unwrap(), Signal::KILL).unwrap();
        assert_ne!(run.wait(STOP), Some(0), "{}", run.transcript());
        drop(stream);

        let state = box_.state();
        assert_eq!(state.active, Slot::A);
        assert!(
            matches!(state.b.status, SlotStatus::Writing | SlotStatus::Empty),
            "{:?}",
            state.b
        );
        let mut run = box_.boot(&v1);
        assert_eq!(box_.version(&run), "1.0.0", "{}", run.transcript());
        assert_eq!(box_.read(&run, "keep"), "before-the-cut");
        run.interrupt();
        assert_eq!(run.wait(STOP), Some(0), "{}", run.transcript());
    }

    // After both cuts a whole update still goes through.
    let mut run = box_.boot(&v1);
    assert_eq!(box_.version(&run), "1.0.0");
    let out = box_.deploy(&v2, &key, &[]);
    assert_exit(&out, 0);
    assert_eq!(box_.version(&run), "1.0.1", "{}", run.transcript());
    assert_eq!(box_.read(&run, "keep"), "before-the-cut");
    run.interrupt();
    assert_eq!(run.wait(STOP), Some(0), "{}", run.transcript());
}

/// A copy of `image` at `to` whose runtime layer is 1 MiB of zeros, its
/// kernel command line changed by `cmdline`, and its manifest's sizes and
/// sha256s updated to match (so the host installs it), but not its
/// dm-verity root hash: the kernel finds the layer does not match its tree
/// and panics.
fn broken_copy(image: &Path, to: &Path, cmdline: impl Fn(&str) -> String) -> PathBuf {
    std::fs::create_dir_all(to).unwrap();
    let mut manifest = read_manifest(image);
    for artifact in manifest.artifacts.values() {
        std::fs::copy(image.join(&artifact.path), to.join(&artifact.path)).unwrap();
    }
    let zeros = vec![0u8; 1 << 20];
    let runtime = manifest.artifacts.get_mut("runtime").unwrap();
    std::fs::write(to.join(&runtime.path), &zeros).unwrap();
    runtime.size = zeros.len() as u64;
    runtime.sha256 = sha256_hex(&zeros);
    manifest.kernel.cmdline = cmdline(&manifest.kernel.cmdline);
    std::fs::write(to.join("manifest.json"), manifest.to_json()).unwrap();
    to.to_owned()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn a_kernel_that_never_reaches_init_is_rolled_back_by_the_host() {
    let tmp = tempfile::tempdir().unwrap();
    let key = keygen(tmp.path(), "key.pem");
    let v1 = image(tmp.path(), "1.0.0", &key, "", &[]);
    let v2 = image(tmp.path(), "1.0.1", &key, "", &[]);
    let panics = broken_copy(&v2, &tmp.path().join("panics"), str::to_owned);
    // panic=0: the kernel waits forever after its panic; only the host's
    // trial deadline ends the boot.
    let hangs = broken_copy(&v2, &tmp.path().join("hangs"), |c| {
        c.replace("panic=-1", "panic=0")
    });
    let box_ = Appliance::new(tmp.path());
    let mut run = NodeosRun::spawn(box_.command(&v1).args(["--trial-boot-timeout", "45"]));
    assert_eq!(box_.version(&run), "1.0.0");
    box_.write(&run, "keep", "kernel-faults");

    for (broken, why) in [
        (&panics, "the kernel found a tampered block of a layer"),
        (&hangs, "no verdict within 45s"),
    ] {
        let out = box_.deploy(broken, &key, &[]);
        assert_exit(&out, 16);
        let said = stderr(&out);
        assert!(said.contains(why), "{said}\n{}", run.transcript());
        assert_eq!(box_.version(&run), "1.0.0", "{}", run.transcript());
        assert_eq!(box_.read(&run, "keep"), "kernel-faults");
    }
    run.interrupt();
    assert_eq!(run.wait(STOP), Some(0), "{}", run.transcript());
    let state = box_.state();
    assert_eq!((state.active, state.b.status), (Slot::A, SlotStatus::Bad));
}
