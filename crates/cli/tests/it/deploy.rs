//! `nodeos deploy` and `nodeos status` against a fake update agent: a
//! thread on 127.0.0.1 that checks each request's signature, records it
//! and answers what the test scripted. No VM, no build (`--image` points
//! at a hand-made image directory).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};

use nodeos_image::keys;
use nodeos_manifest::bundle::{self, PREFIX_LEN, SIGNATURE_LEN, Source, UpdateManifest};
use nodeos_manifest::slots::{LastUpdate, Slot, SlotStatus, UpdateResult};
use nodeos_manifest::update::{
    AppStatus, PublicKey, STATUS_PATH, SlotInfo, Status, UPDATE_PATH, UpdateAccepted,
};

use crate::support::*;

/// One request the fake agent received.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
    /// Whether its `Authorization` header is a valid signature by the
    /// test's key over this method, path and body length.
    signed: bool,
}

/// What the fake agent does with a request.
enum Reply {
    Json(u16, String),
    /// Close the connection without answering (an appliance going down).
    Hang,
}

/// An update agent on 127.0.0.1 that answers `handler(request, index)`.
struct FakeAgent {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl FakeAgent {
    fn start(
        key: PublicKey,
        mut handler: impl FnMut(&Request, usize) -> Reply + Send + 'static,
    ) -> FakeAgent {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let Some(request) = read_request(&mut stream, &key) else {
                    continue;
                };
                let index = {
                    let mut log = log.lock().unwrap();
                    log.push(request.clone());
                    log.len() - 1
                };
                if let Reply::Json(code, body) = handler(&request, index) {
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                }
            }
        });
        FakeAgent { port, requests }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

fn read_request(stream: &mut TcpStream, key: &PublicKey) -> Option<Request> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = BTreeMap::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        headers.insert(name.trim().to_lowercase(), value.trim().to_owned());
    }
    let len: usize = headers
        .get("content-length")
        .map_or(0, |v| v.parse().unwrap());
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    let signed = headers
        .get("authorization")
        .is_some_and(|auth| keys::check_request(key, auth, &method, &path, len as u64));
    Some(Request {
        method,
        path,
        body,
        signed,
    })
}

/// A key pair in `dir`: the private key file and its public key.
fn key_pair(dir: &Path, name: &str) -> (PathBuf, PublicKey) {
    let path = dir.join(name);
    let key = keys::generate().unwrap();
    keys::write_pair(&key, &path).unwrap();
    (path, keys::public_key(&key))
}

/// An image directory `hello 1.0.1` with small fake artefacts, trusting
/// `key`; returns it with the sha256 of each artefact.
fn image(dir: &Path, key: Option<PublicKey>) -> (PathBuf, BTreeMap<String, String>) {
    let image = dir.join("hello.nodeos");
    fake_image_dir(&image);
    let path = image.join(nodeos_manifest::MANIFEST_FILE);
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    manifest["name"] = "hello".into();
    manifest["version"] = "1.0.1".into();
    if let Some(key) = key {
        manifest["update_key"] = key.to_string().into();
    }
    std::fs::write(&path, manifest.to_string()).unwrap();
    let shas = manifest["artifacts"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v["sha256"].as_str().unwrap().to_owned()))
        .collect();
    (image, shas)
}

/// The status of `hello` running `version` on `slot`; slot a holds the
/// kernel and runtime of the test image (so only the app travels).
fn status(
    shas: &BTreeMap<String, String>,
    version: &str,
    slot: Slot,
    last_update: Option<LastUpdate>,
) -> Status {
    let held: BTreeMap<String, String> = ["kernel", "runtime"]
        .iter()
        .map(|k| ((*k).to_owned(), shas[*k].clone()))
        .collect();
    let info = |status, version: &str, artifacts| SlotInfo {
        status,
        version: version.to_owned(),
        sequence: 0,
        artifacts,
    };
    Status {
        appliance: "hello".into(),
        version: version.into(),
        slot,
        trial: false,
        max_sequence: 5,
        uptime_s: 3725,
        app: AppStatus {
            state: "running".into(),
            generation: 2,
            restarts: 1,
            last_exit: Some("exit code 1".into()),
            pid: Some(42),
            oom_exits: 0,
        },
        health: None,
        slots: BTreeMap::from([
            (Slot::A, info(SlotStatus::Good, "1.0.0", held)),
            (Slot::B, info(SlotStatus::Empty, "", BTreeMap::new())),
        ]),
        last_update,
        log_tail: None,
        system: None,
    }
}

fn last_update(sequence: u64, result: UpdateResult, reason: &str) -> LastUpdate {
    LastUpdate {
        sequence,
        from: "1.0.0".into(),
        to: "1.0.1".into(),
        slot: Slot::B,
        result,
        reason: reason.into(),
        at_ms: 0,
    }
}

fn json(status: &Status) -> Reply {
    Reply::Json(200, serde_json::to_string(status).unwrap())
}

fn error(code: u16, error: &str, reason: &str) -> Reply {
    Reply::Json(
        code,
        serde_json::json!({ "error": error, "reason": reason }).to_string(),
    )
}

/// Checks a bundle the way the agent does and returns its manifest.
fn check_bundle(body: &[u8], key: &PublicKey) -> UpdateManifest {
    let prefix: [u8; PREFIX_LEN] = body[..PREFIX_LEN].try_into().unwrap();
    let len = bundle::parse_prefix(&prefix).unwrap();
    let json = &body[PREFIX_LEN..PREFIX_LEN + len];
    let signature: [u8; SIGNATURE_LEN] = body[PREFIX_LEN + len..PREFIX_LEN + len + SIGNATURE_LEN]
        .try_into()
        .unwrap();
    assert!(
        keys::verify(key, &bundle::signed_bytes(json), &signature),
        "the bundle is signed by the deploy key"
    );
    let manifest = UpdateManifest::from_json(json).unwrap();
    assert_eq!(manifest.bundle_len(len), body.len() as u64);
    manifest
}

/// `nodeos deploy URL --image IMAGE --key KEY [extra]`, with no default key.
fn deploy(tmp: &Path, url: &str, image: &Path, key: &Path, extra: &[&str]) -> Output {
    run(nodeos()
        .arg("deploy")
        .arg(url)
        .arg("--image")
        .arg(image)
        .arg("--key")
        .arg(key)
        .args(extra)
        .env("XDG_CONFIG_HOME", tmp.join("config")))
}

#[test]
fn status_prints_what_the_appliance_runs_over_a_signed_request() {
    let tmp = tempfile::tempdir().unwrap();
    let (key_file, key) = key_pair(tmp.path(), "key.pem");
    let (_, shas) = image(tmp.path(), Some(key));
    let mut answer = status(
        &shas,
        "1.0.1",
        Slot::B,
        Some(last_update(9, UpdateResult::Committed, "GET /healthz 200")),
    );
    answer.health = Some("GET /healthz 200 after 0.8 s".into());
    let reply = answer.clone();
    let agent = FakeAgent::start(key, move |_, _| json(&reply));

    let out = run(nodeos()
        .arg("status")
        .arg(agent.url())
        .arg("--key")
        .arg(&key_file));
    assert_exit(&out, 0);
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "appliance    hello",
        "version      1.0.1 (slot b)",
        "uptime       1 h 02 min",
        "running (generation 2, 1 restart; last exit: exit code 1)",
        "health       GET /healthz 200 after 0.8 s",
        "slot a       good, 1.0.0",
        "slot b       empty",
        "last update  committed, 1.0.0 → 1.0.1 in slot b: GET /healthz 200",
    ] {
        assert!(text.contains(needle), "expected {needle:?} in:\n{text}");
    }
    let requests = agent.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        (requests[0].method.as_str(), requests[0].path.as_str()),
        ("GET", STATUS_PATH)
    );
    assert!(requests[0].signed, "the request carries a valid signature");

    let out = run(nodeos()
        .arg("status")
        .arg(agent.url())
        .arg("--key")
        .arg(&key_file)
        .arg("--json"));
    assert_exit(&out, 0);
    let parsed: Status = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(parsed, answer);
}

#[test]
fn status_refused_for_a_bad_signature_exits_15() {
    let tmp = tempfile::tempdir().unwrap();
    let (key_file, key) = key_pair(tmp.path(), "key.pem");
    let agent = FakeAgent::start(key, |_, _| Reply::Json(401, String::new()));
    let out = run(nodeos()
        .arg("status")
        .arg(agent.url())
        .arg("--key")
        .arg(&key_file));
    assert_exit(&out, 15);
    let err = stderr(&out);
    assert!(
        err.contains("did not accept the request's signature"),
        "{err}"
    );
    assert!(err.contains(&key.key_id()), "names the key: {err}");
}

#[test]
fn deploy_that_commits_exits_0_and_prints_old_and_new_version() {
    let tmp = tempfile::tempdir().unwrap();
    let (key_file, key) = key_pair(tmp.path(), "key.pem");
    let (image, shas) = image(tmp.path(), Some(key));
    let app = std::fs::read(image.join("app.img")).unwrap();
    let mut sequence = 0;
    let agent = FakeAgent::start(key, move |request, index| match index {
        0 => json(&status(&shas, "1.0.0", Slot::A, None)),
        1 => {
            assert_eq!(request.path, UPDATE_PATH);
            let manifest = check_bundle(&request.body, &key);
            sequence = manifest.sequence;
            Reply::Json(
                200,
                serde_json::to_string(&UpdateAccepted {
                    slot: Slot::B,
                    version: manifest.image.version,
                    sequence,
                    written: 9,
                    rebooting: true,
                })
                .unwrap(),
            )
        }
        // The appliance reboots.
        2 => Reply::Hang,
        3 => {
            let mut trial = status(
                &shas,
                "1.0.1",
                Slot::B,
                Some(last_update(sequence, UpdateResult::Pending, "")),
            );
            trial.trial = true;
            json(&trial)
        }
        _ => {
            let mut done = status(
                &shas,
                "1.0.1",
                Slot::B,
                Some(last_update(
                    sequence,
                    UpdateResult::Committed,
                    "GET /healthz 200 after 0.8 s",
                )),
            );
            done.health = Some("GET /healthz 200 after 0.8 s".into());
            json(&done)
        }
    });

    let out = deploy(tmp.path(), &agent.url(), &image, &key_file, &["--json"]);
    assert_exit(&out, 0);
    let err = stderr(&out);
    assert!(
        err.contains(
            "Deployed hello 1.0.0 → 1.0.1 on slot b: healthy (GET /healthz 200 after 0.8 s), "
        ),
        "{err}"
    );
    assert!(
        err.contains("kernel and runtime are already on the appliance"),
        "{err}"
    );
    let last: Status = serde_json::from_slice(&out.stdout).expect("--json prints the status");
    assert_eq!(
        last.last_update.map(|u| u.result),
        Some(UpdateResult::Committed)
    );

    let requests = agent.requests();
    assert!(requests.len() >= 5, "{requests:?}");
    assert!(requests.iter().all(|r| r.signed), "every request is signed");
    let upload = &requests[1];
    assert_eq!(upload.method, "POST");
    let manifest = check_bundle(&upload.body, &key);
    assert_eq!(manifest.appliance, "hello");
    assert!(manifest.sequence > 5, "above the appliance's max_sequence");
    assert!(!manifest.downgrade);
    let sources: Vec<(&str, Source)> = manifest
        .payload
        .iter()
        .map(|e| (e.artifact.as_str(), e.source))
        .collect();
    assert_eq!(
        sources,
        [
            ("kernel", Source::Slot),
            ("runtime", Source::Slot),
            ("app", Source::Bundle)
        ]
    );
    assert!(upload.body.ends_with(&app), "only app.img travels");
}

#[test]
fn deploy_that_is_rolled_back_exits_16_with_the_reason_and_the_log_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let (key_file, key) = key_pair(tmp.path(), "key.pem");
    let (image, shas) = image(tmp.path(), Some(key));
    let mut sequence = 0;
    let agent = FakeAgent::start(key, move |request, index| match index {
        0 => json(&status(&shas, "1.0.0", Slot::A, None)),
        1 => {
            sequence = check_bundle(&request.body, &key).sequence;
            Reply::Json(
                200,
                serde_json::json!({"slot":"b","version":"1.0.1","sequence":sequence,"written":9,"rebooting":true})
                    .to_string(),
            )
        }
        _ => {
            let mut back = status(
                &shas,
                "1.0.0",
                Slot::A,
                Some(last_update(
                    sequence,
                    UpdateResult::RolledBack,
                    "the app exited (exit code 1) before its health check passed",
                )),
            );
            let mut tail: String = (1..=30)
                .map(|i| format!("app[1] out: line {i:02}\n"))
                .collect();
            tail.push_str("app[1] err: Error: boom at start\n");
            back.log_tail = Some(tail);
            json(&back)
        }
    });

    let out = deploy(tmp.path(), &agent.url(), &image, &key_file, &[]);
    assert_exit(&out, 16);
    let err = stderr(&out);
    assert!(
        err.contains("error: deploy failed: hello 1.0.1 was rolled back: the app exited (exit code 1) before its health check passed"),
        "{err}"
    );
    assert!(
        err.contains("    app[1] err: Error: boom at start"),
        "{err}"
    );
    assert!(err.contains("line 30") && err.contains("line 12"), "{err}");
    assert!(!err.contains("line 11"), "only the last 20 lines: {err}");
    assert_eq!(err.matches("error:").count(), 1, "{err}");
}

#[test]
fn deploy_refused_as_not_newer_exits_15_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let (key_file, key) = key_pair(tmp.path(), "key.pem");
    let (image, shas) = image(tmp.path(), Some(key));
    let agent = FakeAgent::start(key, move |_, index| match index {
        0 => json(&status(&shas, "1.0.0", Slot::A, None)),
        _ => error(
            409,
            "not_newer",
            "sequence 6 is not above 1700000000000, the highest accepted",
        ),
    });
    let out = deploy(tmp.path(), &agent.url(), &image, &key_file, &[]);
    assert_exit(&out, 15);
    let err = stderr(&out);
    assert!(
        err.contains(
            "refused: sequence 6 is not above 1700000000000, the highest accepted (409 not_newer)"
        ),
        "{err}"
    );
    assert_eq!(agent.requests().len(), 2, "no polling after a refusal");
}

#[test]
fn deploy_with_nothing_listening_exits_17() {
    let tmp = tempfile::tempdir().unwrap();
    let (key_file, key) = key_pair(tmp.path(), "key.pem");
    let (image, _) = image(tmp.path(), Some(key));
    let url = format!("http://127.0.0.1:{}", free_port());
    let out = deploy(tmp.path(), &url, &image, &key_file, &[]);
    assert_exit(&out, 17);
    let err = stderr(&out);
    assert!(
        err.contains(&format!("cannot reach the appliance at {url}")),
        "{err}"
    );
}

#[test]
fn deploy_without_a_verdict_in_time_exits_17_saying_what_it_saw() {
    let tmp = tempfile::tempdir().unwrap();
    let (key_file, key) = key_pair(tmp.path(), "key.pem");
    let (image, shas) = image(tmp.path(), Some(key));
    let mut sequence = 0;
    let agent = FakeAgent::start(key, move |request, index| match index {
        0 => json(&status(&shas, "1.0.0", Slot::A, None)),
        1 => {
            sequence = check_bundle(&request.body, &key).sequence;
            Reply::Json(
                200,
                serde_json::json!({"slot":"b","version":"1.0.1","sequence":sequence,"written":9,"rebooting":true})
                    .to_string(),
            )
        }
        _ => json(&status(
            &shas,
            "1.0.1",
            Slot::B,
            Some(last_update(sequence, UpdateResult::Pending, "")),
        )),
    });
    let out = deploy(
        tmp.path(),
        &agent.url(),
        &image,
        &key_file,
        &["--timeout", "1"],
    );
    assert_exit(&out, 17);
    let err = stderr(&out);
    assert!(err.contains("no verdict"), "{err}");
    assert!(err.contains("the update still pending"), "{err}");
}

#[test]
fn deploy_of_an_image_with_another_key_is_refused_before_any_request() {
    let tmp = tempfile::tempdir().unwrap();
    let (key_file, key) = key_pair(tmp.path(), "key.pem");
    let (_, other) = key_pair(tmp.path(), "other.pem");
    let agent = FakeAgent::start(key, |_, _| error(500, "io", "unexpected"));
    for (name, baked) in [("other", Some(other)), ("none", None)] {
        let dir = tmp.path().join(name);
        let (image, _) = image(&dir, baked);
        let out = deploy(tmp.path(), &agent.url(), &image, &key_file, &[]);
        assert_exit(&out, 14);
        let err = stderr(&out);
        assert!(
            err.contains("nodeos build --key") && err.contains("nodeos.update.publicKey"),
            "{err}"
        );
    }
    assert_eq!(agent.requests().len(), 0, "nothing was sent");
}

#[test]
fn deploy_to_another_appliance_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (key_file, key) = key_pair(tmp.path(), "key.pem");
    let (image, shas) = image(tmp.path(), Some(key));
    let agent = FakeAgent::start(key, move |_, _| {
        let mut other = status(&shas, "3.0.0", Slot::A, None);
        other.appliance = "billing".into();
        json(&other)
    });
    let out = deploy(tmp.path(), &agent.url(), &image, &key_file, &[]);
    assert_exit(&out, 15);
    let err = stderr(&out);
    assert!(err.contains("\"billing\", not \"hello\""), "{err}");
    assert_eq!(agent.requests().len(), 1, "only the status was asked");
}

#[test]
fn deploy_without_a_key_says_to_run_keygen() {
    let tmp = tempfile::tempdir().unwrap();
    let (image, _) = image(tmp.path(), None);
    let out = run(nodeos()
        .arg("deploy")
        .arg(format!("http://127.0.0.1:{}", free_port()))
        .arg("--image")
        .arg(&image)
        .env("XDG_CONFIG_HOME", tmp.path().join("config")));
    assert_exit(&out, 14);
    let err = stderr(&out);
    assert!(
        err.contains("nodeos keygen") && err.contains("--key FILE"),
        "{err}"
    );
}

#[test]
fn deploy_to_a_url_that_is_not_plain_http_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    for url in ["https://127.0.0.1:7070", "http://127.0.0.1:7070/v1"] {
        let out = run(nodeos()
            .arg("deploy")
            .arg(url)
            .env("XDG_CONFIG_HOME", tmp.path()));
        assert_exit(&out, 2);
        assert!(
            stderr(&out).contains("http://HOST:PORT"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn build_with_a_key_file_that_is_not_a_key_exits_14_naming_the_forms() {
    let tmp = tempfile::tempdir().unwrap();
    let junk = tmp.path().join("junk.pem");
    std::fs::write(&junk, "not a key\n").unwrap();
    for (key, says) in [
        (junk, "ed25519:<64 hex digits>"),
        (tmp.path().join("missing.pem"), "there is no key file"),
    ] {
        let out = run(nodeos()
            .arg("build")
            .arg(example("hello"))
            .arg("--out")
            .arg(tmp.path().join("out"))
            .arg("--key")
            .arg(&key));
        assert_exit(&out, 14);
        let err = stderr(&out);
        assert!(err.contains("--key: ") && err.contains(says), "{err}");
        assert!(err.contains(&key.display().to_string()), "{err}");
        assert!(!tmp.path().join("out").exists());
    }
}

#[test]
fn deploy_of_the_running_image_uploads_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (key_file, key) = key_pair(tmp.path(), "key.pem");
    let (image, shas) = image(tmp.path(), Some(key));
    let agent = FakeAgent::start(key, move |_, _| {
        let mut running = status(&shas, "1.0.1", Slot::A, None);
        let slot = running.slots.get_mut(&Slot::A).unwrap();
        slot.artifacts = shas.clone();
        slot.version = "1.0.1".into();
        json(&running)
    });
    let out = deploy(tmp.path(), &agent.url(), &image, &key_file, &[]);
    assert_exit(&out, 0);
    let err = stderr(&out);
    assert!(
        err.contains("hello 1.0.1 is already running on slot a"),
        "{err}"
    );
    assert_eq!(agent.requests().len(), 1, "only the status was asked");
}
