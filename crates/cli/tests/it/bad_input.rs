//! The bad-input matrix (issue #10): broken package.json files and
//! `"nodeos"` values, bad flags of every command, corrupt image
//! directories and update bundles (`deploy --image`), key files that are
//! not keys, and "appliances" that answer garbage. Every case must
//!
//! * exit with its documented code (docs/cli.md, "Exit codes");
//! * print exactly one `error:` line saying what is wrong (the case's
//!   needle, in the line or its indented continuation), after it at most
//!   clap's usage lines; nothing on stdout, no panic, no backtrace;
//! * leave its directory as it was: no output, no temporary or `.partial`
//!   file, no cache entry, every input unchanged (bytes, inode, ctime).
//!   The directory is the command's working directory, HOME, TMPDIR, the
//!   cache and the config directory, so whatever the command writes lands
//!   where it is seen;
//! * send nothing to an appliance when the input is refused first.
//!
//! All cases run (two at a time) and the failures are reported together
//! at the end, after the whole matrix. No VM boots (QEMU is a script that
//! exits 1) and nothing leaves 127.0.0.1 (the npm registry is a port
//! where nothing listens).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nodeos_image::keys;
use nodeos_manifest::update::PublicKey;

use crate::support::*;

/// How a case is set up: see [`Case::setup`].
type Setup = Box<dyn Fn(&mut Dir) -> Vec<String> + Send + Sync>;

/// One bad input.
struct Case {
    name: String,
    /// Writes the inputs into the case's directory and returns the
    /// arguments (paths relative to the directory, the working directory).
    setup: Setup,
    /// The documented exit code.
    code: i32,
    /// What the error must say.
    needle: String,
}

fn case(
    name: impl Into<String>,
    code: i32,
    needle: impl Into<String>,
    setup: impl Fn(&mut Dir) -> Vec<String> + Send + Sync + 'static,
) -> Case {
    Case {
        name: name.into(),
        setup: Box::new(setup),
        code,
        needle: needle.into(),
    }
}

/// Owned arguments: `command`, then `rest`.
fn args(command: &[&str], rest: &[&str]) -> Vec<String> {
    command
        .iter()
        .chain(rest)
        .map(|a| (*a).to_owned())
        .collect()
}

/// The directory of one case and what its command runs with.
struct Dir {
    root: PathBuf,
    env: Vec<(String, OsString)>,
    /// Appliances that must not be contacted, with their connection count.
    untouched: Vec<(String, Arc<AtomicUsize>)>,
    /// Listeners held open while the command runs (a busy port).
    held: Vec<TcpListener>,
}

const HELLO_JS: &str =
    "require('node:http').createServer((q, s) => s.end('hi')).listen(process.env.PORT);\n";
const HELLO_JSON: &str = r#"{"name":"x","version":"1.0.0"}"#;

impl Dir {
    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn write(&self, rel: &str, bytes: impl AsRef<[u8]>) {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    fn mkdir(&self, rel: &str) {
        std::fs::create_dir_all(self.path(rel)).unwrap();
    }

    fn env(&mut self, key: &str, value: impl Into<OsString>) {
        self.env.push((key.to_owned(), value.into()));
    }

    /// `project/` with this package.json and an index.js.
    fn project(&self, package_json: impl AsRef<[u8]>) -> &'static str {
        self.write("project/index.js", HELLO_JS);
        self.write("project/package.json", package_json);
        "project"
    }

    /// A key pair `key.pem` and `key.pem.pub`; the public key.
    fn key(&self) -> PublicKey {
        let key = keys::generate().unwrap();
        keys::write_pair(&key, &self.path("key.pem")).unwrap();
        keys::public_key(&key)
    }

    /// `image/`: a small image directory `hello 1.0.1` whose manifest
    /// matches its artefacts, trusting `key`.
    fn image(&self, key: Option<PublicKey>) -> &'static str {
        fake_image_dir(&self.path("image"));
        self.edit_manifest(|m| {
            m["name"] = "hello".into();
            m["version"] = "1.0.1".into();
            if let Some(key) = key {
                m["update_key"] = key.to_string().into();
            }
        });
        "image"
    }

    fn edit_manifest(&self, edit: impl FnOnce(&mut serde_json::Value)) {
        let path = self.path("image/manifest.json");
        let mut manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        edit(&mut manifest);
        std::fs::write(path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
    }

    /// An appliance that must not be contacted: it counts connections.
    fn agent(&mut self) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let count = Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                seen.fetch_add(1, Ordering::SeqCst);
                drop(conn);
            }
        });
        self.untouched.push((url.clone(), count));
        url
    }

    /// Something on 127.0.0.1 that answers every request with `reply`, or
    /// hangs up after reading it if `reply` is empty.
    fn junk_agent(&self, reply: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let mut reader = BufReader::new(conn);
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let _ = reader.into_inner().write_all(reply.as_bytes());
            }
        });
        url
    }

    /// A port on 127.0.0.1 that is taken while the command runs.
    fn busy_port(&mut self) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        self.held.push(listener);
        port
    }
}

/// An HTTP answer no update agent gives.
const HTML: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 19\r\nConnection: close\r\n\r\n<html>hello</html>\n";

/// Every case, by area.
fn cases() -> Vec<Case> {
    [
        package_json_cases(),
        config_cases(),
        build_flag_cases(),
        run_flag_cases(),
        image_cases(),
        run_disk_cases(),
        export_cases(),
        deploy_cases(),
        operate_cases(),
        key_cases(),
        init_cases(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// `nodeos build project` with a broken package.json or project: exit 3
/// (4 for an `engines.node` that is no range), before any download.
fn package_json_cases() -> Vec<Case> {
    #[rustfmt::skip]
    let table: &[(&str, i32, &str, &str)] = &[
        ("empty package.json", 3, "package.json:1:0: invalid JSON", ""),
        ("package.json not JSON", 3, "package.json:1:2: invalid JSON: expected ident", "name = x\n"),
        ("package.json cut short", 3, "package.json:2:", "{\"name\": \"x\",\n\"version\": \"1.0"),
        ("package.json an array", 3, "the top level must be a JSON object", r#"[{"name":"x"}]"#),
        ("package.json a string", 3, "the top level must be a JSON object", r#""x""#),
        ("name missing", 3, "\"name\" is missing", r#"{"version":"1.0.0"}"#),
        ("name not a string", 3, "\"name\" must be a string", r#"{"name":5,"version":"1.0.0"}"#),
        ("name with capitals", 3, "invalid package name \"My App\"", r#"{"name":"My App","version":"1.0.0"}"#),
        ("version missing", 3, "\"version\" is missing", r#"{"name":"x"}"#),
        ("version a number", 3, "\"version\" must be a string", r#"{"name":"x","version":1}"#),
        ("main not a string", 3, "\"main\" must be a string", r#"{"name":"x","version":"1.0.0","main":["a.js"]}"#),
        ("main missing", 3, "entry file server.js (from \"main\"", r#"{"name":"x","version":"1.0.0","main":"server.js"}"#),
        ("start script's file missing", 3, "entry file server.js (from \"scripts.start\"", r#"{"name":"x","version":"1.0.0","scripts":{"start":"node server.js"}}"#),
        ("main outside the project", 3, "is outside the project directory", r#"{"name":"x","version":"1.0.0","main":"../index.js"}"#),
        ("dependencies not an object", 3, "\"dependencies\" must be an object", r#"{"name":"x","version":"1.0.0","dependencies":["a"]}"#),
        ("dependencies not installed", 3, "node_modules is missing", r#"{"name":"x","version":"1.0.0","dependencies":{"a":"1.0.0"}}"#),
        ("engines not an object", 3, "\"engines\" must be an object", r#"{"name":"x","version":"1.0.0","engines":"22"}"#),
        ("engines.node not a string", 3, "\"engines.node\" must be a version range string", r#"{"name":"x","version":"1.0.0","engines":{"node":22}}"#),
        ("engines.node not a range", 4, "engines.node \">=abc\" in package.json is not a valid version range", r#"{"name":"x","version":"1.0.0","engines":{"node":">=abc"}}"#),
    ];
    let mut cases: Vec<Case> = table
        .iter()
        .map(|&(name, code, needle, json)| {
            case(format!("build: {name}"), code, needle, move |d| {
                args(&["build", d.project(json)], &[])
            })
        })
        .collect();
    cases.extend([
        case("build: no package.json", 3, "no package.json in", |d| {
            d.write("project/index.js", HELLO_JS);
            args(&["build", "project"], &[])
        }),
        case("build: no project directory", 3, "does not exist", |_| {
            args(&["build", "project"], &[])
        }),
        case("build: project a file", 3, "is not a directory", |d| {
            d.write("project", HELLO_JSON);
            args(&["build", "project"], &[])
        }),
        case("build: package.json a directory", 3, "cannot read", |d| {
            d.mkdir("project/package.json");
            args(&["build", "project"], &[])
        }),
        case("build: package.json not UTF-8", 3, "valid UTF-8", |d| {
            // Latin-1 in a string.
            let project =
                d.project(b"{\"name\":\"x\",\"version\":\"1.0.0\",\"description\":\"caf\xe9\"}");
            args(&["build", project], &[])
        }),
        case(
            "build: .nodeosignore with a bad pattern",
            3,
            ".nodeosignore:2: invalid pattern \"src/{a,b\"",
            |d| {
                d.write("project/.nodeosignore", "# tests\nsrc/{a,b\n");
                args(&["build", d.project(HELLO_JSON)], &[])
            },
        ),
        case(
            "build: .nodeosignore leaving out the entry file",
            3,
            ".nodeosignore:1: \"*.js\" excludes the entry file index.js",
            |d| {
                d.write("project/.nodeosignore", "*.js\n");
                args(&["build", d.project(HELLO_JSON)], &[])
            },
        ),
    ]);
    cases
}

/// `nodeos build` with a bad `"nodeos"` key: exit 3, naming the key.
fn config_cases() -> Vec<Case> {
    #[rustfmt::skip]
    let table: &[(&str, &str)] = &[
        ("5", "nodeos: must be an object, not a number"),
        (r#""on-failure""#, "nodeos: must be an object, not a string"),
        ("[]", "nodeos: must be an object, not an array"),
        (r#"{"restrat":"never"}"#, "nodeos.restrat: unknown key; did you mean \"restart\"?"),
        (r#"{"restart":1}"#, "nodeos.restart: "),
        (r#"{"restart":"sometimes"}"#, "nodeos.restart: unknown variant \"sometimes\""),
        (r#"{"grace":"10"}"#, "nodeos.grace: "),
        (r#"{"grace":-1}"#, "nodeos.grace: "),
        (r#"{"grace":3601}"#, "nodeos.grace: 3601 seconds is more than the maximum of 3600"),
        (r#"{"port":0}"#, "nodeos.port: must be between 1 and 65535"),
        (r#"{"port":70000}"#, "nodeos.port: "),
        (r#"{"port":"80"}"#, "nodeos.port: "),
        (r#"{"memory":16}"#, "nodeos.memory: 16 MiB is outside 32–1048576 MiB"),
        (r#"{"memory":"512"}"#, "nodeos.memory: "),
        (r#"{"memory":2000000}"#, "nodeos.memory: 2000000 MiB is outside"),
        (r#"{"cpus":0}"#, "nodeos.cpus: 0 is outside 1–64"),
        (r#"{"cpus":65}"#, "nodeos.cpus: 65 is outside 1–64"),
        (r#"{"network":"dhcp"}"#, "nodeos.network: "),
        (r#"{"network":{"ipv4":{"address":"10.0.2.20"}}}"#, "nodeos.network.ipv4.address: "),
        (r#"{"network":{"ipv4":{"address":"10.0.2.20/24","gateway":"10.0.3.2"}}}"#, "nodeos.network.ipv4.gateway: 10.0.3.2 is not inside 10.0.2.20/24"),
        (r#"{"network":{"dns":["nameserver"]}}"#, "nodeos.network.dns[0]: "),
        (r#"{"network":{"hosts":{"db":"db.internal"}}}"#, "nodeos.network.hosts.db: "),
        (r#"{"network":{"dhcpTimeout":0}}"#, "nodeos.network.dhcpTimeout: 0 is outside 1–300"),
        (r#"{"env":["A=1"]}"#, "nodeos.env: must be an object, not an array"),
        (r#"{"env":{"A":1}}"#, "nodeos.env.A: must be a string, not a number"),
        (r#"{"env":{"A=B":"1"}}"#, "nodeos.env.A=B: \"A=B\" is not a valid environment variable name"),
        (r#"{"env":{"":"1"}}"#, "\"\" is not a valid environment variable name"),
        (r#"{"env":{"PORT":"80"}}"#, "nodeos.env.PORT: PORT cannot be set here"),
        (r#"{"update":{"publicKey":"ed25519:zz"}}"#, "nodeos.update.publicKey: \"ed25519:zz\" is not an update key"),
        (r#"{"update":{"publicKey":5}}"#, "nodeos.update.publicKey: "),
        (r#"{"update":{"publicKey":"keys/update.pub"}}"#, "nodeos.update.publicKey: there is no key file"),
        (r#"{"update":{"port":3000}}"#, "nodeos.update.port: must be a port from 1 to 65535 other than the app's port"),
        (r#"{"update":{"health":{"path":"healthz"}}}"#, "nodeos.update.health.path: must start with /"),
        (r#"{"update":{"health":{"timeout":0}}}"#, "nodeos.update.health.timeout: must be 1 to 240 seconds"),
        (r#"{"data":{"size":"1M"}}"#, "nodeos.data.size: \"1M\" is less than the minimum of 16MiB"),
        (r#"{"data":{"size":"1.5G"}}"#, "nodeos.data.size: \"1.5G\" is not a whole number"),
        (r#"{"data":{"size":"lots"}}"#, "nodeos.data.size: \"lots\" is not a size"),
        (r#"{"data":{"size":-5}}"#, "nodeos.data.size: "),
        (r#"{"data":{"onCheckFailure":"maybe"}}"#, "nodeos.data.onCheckFailure: unknown variant \"maybe\""),
        (r#"{"syslog":"10.0.2.2:514"}"#, "nodeos.syslog: \"10.0.2.2:514\" is not a syslog target"),
        (r#"{"syslog":"http://10.0.2.2:514"}"#, "unknown transport \"http\""),
        (r#"{"syslog":"udp://10.0.2.2:99999"}"#, "port \"99999\" is not a number from 1 to 65535"),
        (r#"{"logFormat":"xml"}"#, "nodeos.logFormat: unknown variant \"xml\""),
        (r#"{"ports":"8080:3000"}"#, "nodeos.ports: "),
        (r#"{"ports":["8080"]}"#, "nodeos.ports[0]: missing \":\""),
        (r#"{"ports":["70000:3000"]}"#, "nodeos.ports[0]: host port \"70000\" is larger than 65535"),
        (r#"{"node":"lts"}"#, "nodeos.node: \"lts\" is not a version range"),
    ];
    let mut cases: Vec<Case> = table
        .iter()
        .map(|&(nodeos, needle)| {
            case(
                format!("build: \"nodeos\": {nodeos}"),
                3,
                needle,
                move |d| {
                    let json = format!(r#"{{"name":"x","version":"1.0.0","nodeos":{nodeos}}}"#);
                    args(&["build", d.project(json)], &[])
                },
            )
        })
        .collect();
    cases.push(case(
        "build: nodeos.update.publicKey names a private key",
        3,
        "is a private key; copy only the public key",
        |d| {
            let json =
                r#"{"name":"x","version":"1.0.0","nodeos":{"update":{"publicKey":"update.pem"}}}"#;
            let project = d.project(json);
            let key = keys::generate().unwrap();
            keys::write_pair(&key, &d.path("project/update.pem")).unwrap();
            args(&["build", project], &[])
        },
    ));
    cases
}

/// A file written before the command, and its bytes (`-`: a directory).
type Input = Option<(&'static str, &'static [u8])>;

/// `nodeos build project FLAGS` with a good project and bad flags, keys
/// or kernels.
fn build_flag_cases() -> Vec<Case> {
    #[rustfmt::skip]
    let table: &[(&str, i32, &str, &[&str], Input)] = &[
        ("unknown flag", 2, "unexpected argument '--fast'", &["--fast"], None),
        ("--profile fast", 2, "'fast' for '--profile <PROFILE>'", &["--profile", "fast"], None),
        ("--kernel missing", 7, "cannot read kernel bzImage", &["--kernel", "bzImage"], None),
        ("--kernel a directory", 7, "bzImage is not a Linux kernel", &["--kernel", "bzImage"], Some(("bzImage", b"-"))),
        ("--kernel zeros", 7, "bzImage is not a Linux kernel", &["--kernel", "bzImage"], Some(("bzImage", &[0; 8192]))),
        ("--kernel cut short", 7, "bzImage is not a Linux kernel", &["--kernel", "bzImage"], Some(("bzImage", b"MZ\0\0"))),
        ("--key missing", 14, "--key: there is no key file key.pem", &["--key", "key.pem"], None),
        ("--key not a key", 14, "ed25519:<64 hex digits>", &["--key", "key.pem"], Some(("key.pem", b"not a key\n"))),
        ("--key a directory", 14, "--key: keys: ", &["--key", "keys"], Some(("keys", b"-"))),
    ];
    let mut cases: Vec<Case> = table
        .iter()
        .map(|&(name, code, needle, flags, file)| {
            case(format!("build: {name}"), code, needle, move |d| {
                match file {
                    Some((path, b"-")) => d.mkdir(path),
                    Some((path, bytes)) => d.write(path, bytes),
                    None => {}
                }
                args(&["build", d.project(HELLO_JSON)], flags)
            })
        })
        .collect();
    cases.extend([
        case(
            "build: --color bogus",
            2,
            "'bogus' for '--color <WHEN>'",
            |d| args(&["--color", "bogus", "build", d.project(HELLO_JSON)], &[]),
        ),
        case("build: -q and -v", 2, "cannot be used with", |d| {
            args(&["-q", "-v", "build", d.project(HELLO_JSON)], &[])
        }),
        case(
            "build: SOURCE_DATE_EPOCH not a number",
            2,
            "SOURCE_DATE_EPOCH must be a whole number of seconds",
            |d| {
                d.env("SOURCE_DATE_EPOCH", "yesterday");
                args(&["build", d.project(HELLO_JSON)], &[])
            },
        ),
    ]);
    cases
}

/// `nodeos run image FLAGS` with a bad flag: exit 2 naming the flag,
/// before the image (which does not exist) is looked at.
fn run_flag_cases() -> Vec<Case> {
    #[rustfmt::skip]
    let table: &[(&[&str], &str)] = &[
        (&["--frobnicate"], "unexpected argument '--frobnicate'"),
        (&["--memory", "lots"], "'lots' for '--memory <MB>'"),
        (&["--memory", "16"], "16 is not in 32..=1048576"),
        (&["--memory", "2000000"], "2000000 is not in 32..=1048576"),
        (&["--cpus", "0"], "0 is not in 1..=64"),
        (&["--cpus", "65"], "65 is not in 1..=64"),
        (&["-p", "8080"], "'8080' for '--publish"),
        (&["-p", "70000:3000"], "'70000:3000' for '--publish"),
        (&["-p", "0:3000"], "host port must not be 0"),
        (&["-p", "8080:0"], "guest port must not be 0"),
        (&["-p", "300.0.0.1:8080:3000"], "`300.0.0.1` is not an IP address"),
        (&["--accel", "warp"], "invalid accelerator `warp`: expected auto, kvm or tcg"),
        (&["--restart", "sometimes"], "'sometimes' for '--restart"),
        (&["--grace", "3601"], "'3601' for '--grace"),
        (&["--grace", "soon"], "'soon' for '--grace"),
        (&["--log-format", "xml"], "'xml' for '--log-format"),
        (&["--syslog", "10.0.2.2:514"], "udp://HOST:PORT or tcp://HOST:PORT"),
        (&["--ip", "10.0.2.20"], "'10.0.2.20' for '--ip"),
        (&["--ip", "10.0.2.20/33"], "prefix \"33\" is not between 1 and 32"),
        (&["--gateway", "10.0.2.2"], "--ip <ADDR/PREFIX>"),
        (&["--dns", "nameserver"], "'nameserver' for '--dns"),
        (&["--data-size", "1M"], "\"1M\" is less than the minimum of 16MiB"),
        (&["--data-size", "lots"], "\"lots\" is not a size"),
        (&["--no-data", "--data", "v.img"], "'--no-data' cannot be used with '--data <PATH>'"),
        (&["--data-on-check-failure", "later"], "'later' for '--data-on-check-failure"),
        (&["--stop-timeout", "soon"], "'soon' for '--stop-timeout"),
        (&["--trial-boot-timeout", "0"], "'0' for '--trial-boot-timeout"),
        (&["--env", "=hunter2"], "--env: the variable name is empty"),
        (&["--env", "NODEOS_TEST_UNSET"], "--env NODEOS_TEST_UNSET: NODEOS_TEST_UNSET is not set"),
        (&["--env-file", "missing.env"], "--env-file missing.env: cannot read it"),
    ];
    let mut cases: Vec<Case> = table
        .iter()
        .map(|&(flags, needle)| {
            case(format!("run: {}", flags.join(" ")), 2, needle, move |_| {
                args(&["run", "image"], flags)
            })
        })
        .collect();
    cases.extend([
        case(
            "run: --env-file a directory",
            2,
            "--env-file env: cannot read it",
            |d| {
                d.mkdir("env");
                args(&["run", "image"], &["--env-file", "env"])
            },
        ),
        case(
            "run: --env-file with a bad line",
            2,
            "--env-file app.env:2: ",
            |d| {
                d.write("app.env", "A=1\nDB_PASSWORD hunter2\n");
                args(&["run", "image"], &["--env-file", "app.env"])
            },
        ),
    ]);
    cases
}

/// A way to break `image/`.
type Damage = fn(&Dir);

fn truncate(d: &Dir, rel: &str, len: u64) {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(d.path(rel))
        .unwrap();
    file.set_len(len).unwrap();
}

fn damages() -> Vec<(&'static str, &'static str, Damage)> {
    #[rustfmt::skip]
    let damages: Vec<(&str, &str, Damage)> = vec![
        ("no image directory", "image directory image does not exist", |d| {
            std::fs::remove_dir_all(d.path("image")).unwrap()
        }),
        ("manifest missing", "image is not a nodeos image: it has no manifest.json", |d| {
            std::fs::remove_file(d.path("image/manifest.json")).unwrap()
        }),
        ("manifest empty", "image/manifest.json: manifest is not valid", |d| {
            d.write("image/manifest.json", "")
        }),
        ("manifest cut short", "image/manifest.json: manifest is not valid", |d| {
            truncate(d, "image/manifest.json", 100)
        }),
        ("manifest an array", "image/manifest.json: manifest is not valid", |d| {
            d.write("image/manifest.json", "[]")
        }),
        ("manifest of a newer format", "manifest format 99 is not supported", |d| {
            d.edit_manifest(|m| m["format"] = 99.into())
        }),
        ("manifest with a wrong sha256", "image/app.img does not match its checksum", |d| {
            d.edit_manifest(|m| m["artifacts"]["app"]["sha256"] = "0".repeat(64).into())
        }),
        ("manifest with a path out of the image", "\"../app.img\" is not a plain file name", |d| {
            d.edit_manifest(|m| m["artifacts"]["app"]["path"] = "../app.img".into())
        }),
        ("manifest without the app layer", "no artefact named app", |d| {
            d.edit_manifest(|m| drop(m["artifacts"].as_object_mut().unwrap().remove("app")))
        }),
        ("kernel missing", "image is incomplete: image/kernel is missing", |d| {
            std::fs::remove_file(d.path("image/kernel")).unwrap()
        }),
        ("kernel cut short", "image/kernel does not match its checksum", |d| {
            truncate(d, "image/kernel", 3)
        }),
        ("kernel with a byte more", "image/kernel does not match its checksum", |d| {
            let mut kernel = std::fs::read(d.path("image/kernel")).unwrap();
            kernel.push(0);
            d.write("image/kernel", kernel);
        }),
        ("runtime layer cut short", "image/runtime.img does not match its checksum", |d| {
            truncate(d, "image/runtime.img", 3)
        }),
        ("app layer empty", "image/app.img does not match its checksum", |d| {
            truncate(d, "image/app.img", 0)
        }),
        ("app layer with a byte flipped", "image/app.img does not match its checksum", |d| {
            let mut app = std::fs::read(d.path("image/app.img")).unwrap();
            app[0] ^= 0x20;
            d.write("image/app.img", app);
        }),
    ];
    damages
}

/// Every damage to `image/` under `run`, `export` and `deploy --image`
/// (the update bundle is read from the image directory): exit 8, with the
/// same words, before anything is written or sent.
fn image_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for (name, needle, damage) in damages() {
        cases.push(case(format!("run: {name}"), 8, needle, move |d| {
            let image = d.image(None);
            damage(d);
            args(&["run", image], &[])
        }));
        cases.push(case(format!("export: {name}"), 8, needle, move |d| {
            let image = d.image(None);
            damage(d);
            args(
                &["export", image],
                &["--format", "raw", "--out", "disk.raw"],
            )
        }));
        cases.push(case(format!("deploy: {name}"), 8, needle, move |d| {
            let image = d.image(Some(d.key()));
            damage(d);
            let url = d.agent();
            args(&["deploy", &url], &["--image", image, "--key", "key.pem"])
        }));
    }
    let outside = "no IMAGE_DIR given and the current directory is not a buildable npm project";
    cases.extend([
        case("run: no IMAGE_DIR outside a project", 8, outside, |_| {
            args(&["run"], &[])
        }),
        case("export: no IMAGE_DIR outside a project", 8, outside, |_| {
            args(&["export", "--format", "raw"], &[])
        }),
    ]);
    cases
}

/// `nodeos run` of a good image with a bad system disk, data volume or
/// port: refused as they are, and nothing is created.
fn run_disk_cases() -> Vec<Case> {
    vec![
        case(
            "run: --system not a system disk",
            8,
            "`system.img` is not a nodeos system disk",
            |d| {
                d.write("system.img", vec![0x5a; 70_000]);
                args(
                    &["run", d.image(None)],
                    &["--system", "system.img", "--no-data"],
                )
            },
        ),
        case(
            "run: --system not a system disk, with a data volume",
            8,
            "`system.img` is not a nodeos system disk",
            |d| {
                d.write("system.img", vec![0x5a; 70_000]);
                args(&["run", d.image(None)], &["--system", "system.img"])
            },
        ),
        case(
            "run: --system a directory",
            8,
            "cannot open the system disk `system`",
            |d| {
                d.mkdir("system");
                args(
                    &["run", d.image(None)],
                    &["--system", "system", "--no-data"],
                )
            },
        ),
        case(
            "run: --data not a data volume",
            13,
            "`data.img` is not a nodeos data volume",
            |d| {
                d.write("data.img", vec![0x5a; 70_000]);
                args(&["run", d.image(None)], &["--data", "data.img"])
            },
        ),
        case(
            "run: --data a directory",
            13,
            "cannot open the data volume `data`",
            |d| {
                d.mkdir("data");
                args(&["run", d.image(None)], &["--data", "data"])
            },
        ),
        case("run: -p a port in use", 9, "is already in use", |d| {
            let publish = format!("{}:3000", d.busy_port());
            args(&["run", d.image(None)], &["-p", &publish])
        }),
    ]
}

/// `nodeos export image FLAGS` of a good image (whose kernel has no EFI
/// stub) with bad flags or outputs.
fn export_cases() -> Vec<Case> {
    #[rustfmt::skip]
    let table: &[(&str, i32, &str, &[&str])] = &[
        ("no --format", 2, "--format <FORMAT>", &[]),
        ("--format iso", 2, "'iso' for '--format <FORMAT>'", &["--format", "iso"]),
        ("unknown flag", 2, "unexpected argument '--compress'", &["--format", "raw", "--compress"]),
        ("--size 0", 2, "\"0\" is less than the minimum of 16MiB", &["--format", "raw", "--size", "0"]),
        ("--size lots", 2, "\"lots\" is not a size", &["--format", "raw", "--size", "lots"]),
        ("--size below what the image needs", 2, "--size 1073741824 is smaller than the image needs", &["--format", "raw", "--size", "1G", "--out", "disk.raw"]),
        ("--tap without firecracker", 2, "--tap is for --format firecracker, not raw", &["--format", "raw", "--tap", "tap1"]),
        ("--image without kubevirt", 2, "--image is for --format kubevirt, not raw", &["--format", "raw", "--image", "hello:1"]),
        ("--image with a bad tag", 2, "its tag must be", &["--format", "kubevirt", "--image", "hello:-bad", "--out", "kv"]),
        ("--out in a missing directory", 18, "cannot write the export", &["--format", "raw", "--out", "missing/disk.raw"]),
        ("a kernel without the EFI stub", 7, "cannot boot by UEFI (it has no EFI stub)", &["--format", "raw", "--out", "disk.raw"]),
    ];
    let mut cases: Vec<Case> = table
        .iter()
        .map(|&(name, code, needle, flags)| {
            case(format!("export: {name}"), code, needle, move |d| {
                args(&["export", d.image(None)], flags)
            })
        })
        .collect();
    cases.extend([
        case(
            "export: --out taken by a directory",
            18,
            "is in the way: it is not a file",
            |d| {
                d.write("taken/keep.txt", "mine");
                args(
                    &["export", d.image(None)],
                    &["--format", "raw", "--out", "taken"],
                )
            },
        ),
        case("export: host tools missing", 12, "apt-get install", |d| {
            d.env("PATH", "/nonexistent");
            let flags = ["--format", "qcow2", "--out", "disk.qcow2"];
            args(&["export", d.image(None)], &flags)
        }),
    ]);
    cases
}

/// `nodeos deploy`: bad flags, URLs, keys and images are refused before
/// the appliance is asked anything; an answer that is not an agent's is 17.
fn deploy_cases() -> Vec<Case> {
    #[rustfmt::skip]
    let flags: &[(&str, &str, &[&str])] = &[
        ("unknown flag", "unexpected argument '--force'", &["--force"]),
        ("--timeout 0", "'0' for '--timeout <SECS>': give a whole number of seconds", &["--timeout", "0"]),
        ("--timeout soon", "'soon' for '--timeout <SECS>'", &["--timeout", "soon"]),
        ("--image with --profile", "cannot be used with", &["--profile", "dev"]),
    ];
    #[rustfmt::skip]
    let urls: &[(&str, &str)] = &[
        ("127.0.0.1:7070", "has no scheme"),
        ("https://127.0.0.1:7070", "uses https://, but the update agent speaks plain http://"),
        ("http://127.0.0.1:7070/v1", "has a path"),
        ("http://127.0.0.1:99999", "has a bad port"),
        ("http://admin@127.0.0.1:7070", "has a user name"),
    ];
    let mut cases: Vec<Case> = flags
        .iter()
        .map(|&(name, needle, flags)| {
            case(format!("deploy: {name}"), 2, needle, move |d| {
                let url = d.agent();
                let mut a = args(&["deploy", &url], &["--image", d.image(Some(d.key()))]);
                a.extend(args(&["--key", "key.pem"], flags));
                a
            })
        })
        .collect();
    cases.extend(urls.iter().map(|&(url, needle)| {
        case(format!("deploy: URL {url}"), 2, needle, move |d| {
            let image = d.image(Some(d.key()));
            args(&["deploy", url], &["--image", image, "--key", "key.pem"])
        })
    }));
    // The image and key as given; an appliance that must not be asked.
    let refused = |name: &str, code, needle: &str, setup: fn(&Dir) -> Vec<String>| {
        case(format!("deploy: {name}"), code, needle, move |d| {
            let rest = setup(d);
            let url = d.agent();
            let mut a = args(&["deploy", &url], &[]);
            a.extend(rest);
            a
        })
    };
    cases.extend([
        refused("image trusting another key", 14, "trusts update key", |d| {
            d.key();
            let other = keys::public_key(&keys::generate().unwrap());
            args(&["--image", d.image(Some(other))], &["--key", "key.pem"])
        }),
        refused(
            "image without an update key",
            14,
            "has no update key",
            |d| {
                d.key();
                args(&["--image", d.image(None)], &["--key", "key.pem"])
            },
        ),
        refused("--key missing", 14, "there is no key file key.pem", |d| {
            args(&["--image", d.image(None)], &["--key", "key.pem"])
        }),
        refused(
            "--key not a key",
            14,
            "key.pem: not an ed25519 private key",
            |d| {
                d.write(
                    "key.pem",
                    "-----BEGIN PRIVATE KEY-----\nbm9wZQ==\n-----END PRIVATE KEY-----\n",
                );
                args(&["--image", d.image(None)], &["--key", "key.pem"])
            },
        ),
        refused(
            "--key the .pub file",
            14,
            "key.pem.pub: not an ed25519 private key",
            |d| {
                args(
                    &["--image", d.image(Some(d.key()))],
                    &["--key", "key.pem.pub"],
                )
            },
        ),
        refused("no default key", 14, "make one with `nodeos keygen`", |d| {
            args(&["--image", d.image(None)], &[])
        }),
        refused(
            "a project with a broken package.json",
            3,
            "deploy failed: build failed: ",
            |d| {
                d.key();
                args(&[d.project("{")], &["--key", "key.pem"])
            },
        ),
    ]);
    // Something else answers.
    for (what, reply, needle) in [
        (
            "something else answers",
            HTML,
            "answered, but not as a nodeos update agent",
        ),
        (
            "the appliance hangs up",
            "",
            "the connection to the appliance at",
        ),
    ] {
        cases.push(case(format!("deploy: {what}"), 17, needle, move |d| {
            let image = d.image(Some(d.key()));
            let url = d.junk_agent(reply);
            args(&["deploy", &url], &["--image", image, "--key", "key.pem"])
        }));
    }
    cases
}

/// `status`, `logs`, `profile` and `token`.
fn operate_cases() -> Vec<Case> {
    // With key.pem, against an appliance that must not be contacted.
    #[rustfmt::skip]
    let refused: &[(&str, i32, &str, &[&str])] = &[
        ("status: unknown flag", 2, "unexpected argument '--all'", &["status", "--all"]),
        ("logs: --since yesterday", 2, "'yesterday' for '--since <WHEN>'", &["logs", "--since", "yesterday"]),
        ("logs: --since month 13", 2, "'2026-13-01T00:00:00Z' for '--since <WHEN>'", &["logs", "--since", "2026-13-01T00:00:00Z"]),
        ("logs: --tail many", 2, "'many' for '--tail <N>'", &["logs", "--tail", "many"]),
        ("logs: --tail -1", 2, "unexpected argument '-1'", &["logs", "--tail", "-1"]),
        ("profile: neither --cpu nor --heap", 2, "<--cpu <DURATION>|--heap>", &["profile"]),
        ("profile: --cpu 0s", 2, "'0s' for '--cpu <DURATION>'", &["profile", "--cpu", "0s"]),
        ("profile: --cpu 301s", 2, "'301s' for '--cpu <DURATION>'", &["profile", "--cpu", "301s"]),
        ("profile: --cpu 1.5s", 2, "'1.5s' for '--cpu <DURATION>'", &["profile", "--cpu", "1.5s"]),
        ("profile: --cpu and --heap", 2, "cannot be used with", &["profile", "--cpu", "10s", "--heap"]),
        ("profile: --out in a missing directory", 18, "the directory missing does not exist", &["profile", "--heap", "--out", "missing/app.heapsnapshot"]),
        ("profile: --out a directory", 18, "--out profiles is a directory", &["profile", "--heap", "--out", "profiles"]),
    ];
    let mut cases: Vec<Case> = refused
        .iter()
        .map(|&(name, code, needle, command)| {
            case(name, code, needle, move |d| {
                d.key();
                d.mkdir("profiles");
                let url = d.agent();
                let mut a = args(&command[..1], &[&url]);
                a.extend(args(&command[1..], &["--key", "key.pem"]));
                a
            })
        })
        .collect();
    // With key.pem, against something that is not an update agent.
    #[rustfmt::skip]
    let answered: &[(&str, &str, &[&str])] = &[
        ("status: something else answers", HTML, &["status"]),
        ("status: the appliance hangs up", "", &["status"]),
        ("logs: something else answers", HTML, &["logs"]),
        ("logs: the appliance hangs up", "", &["logs"]),
        ("profile: something else answers", HTML, &["profile", "--heap", "--out", "app.heapsnapshot"]),
        ("profile: the appliance hangs up", "", &["profile", "--cpu", "1s", "--out", "app.cpuprofile"]),
    ];
    cases.extend(answered.iter().map(|&(name, reply, command)| {
        let needle = if reply.is_empty() {
            "the connection to the appliance at"
        } else {
            "answered, but not as a nodeos update agent"
        };
        case(name, 17, needle, move |d| {
            d.key();
            let url = d.junk_agent(reply);
            let mut a = args(&command[..1], &[&url]);
            a.extend(args(&command[1..], &["--key", "key.pem"]));
            a
        })
    }));
    // Keys and flags, offline; the URL must be plain http:// all the same.
    #[rustfmt::skip]
    let offline: &[(&str, i32, &str, &[&str])] = &[
        ("status: URL without a scheme", 2, "URL \"127.0.0.1:7070\" has no scheme", &["status", "127.0.0.1:7070", "--key", "key.pem"]),
        ("logs: URL ftp://", 2, "uses ftp://", &["logs", "ftp://127.0.0.1:7070", "--key", "key.pem"]),
        ("token: --ttl 0s", 2, "'0s' for '--ttl <DURATION>'", &["token", "--ttl", "0s", "--key", "key.pem"]),
        ("token: --ttl 367d", 2, "'367d' for '--ttl <DURATION>'", &["token", "--ttl", "367d", "--key", "key.pem"]),
        ("token: --ttl 2y", 2, "'2y' for '--ttl <DURATION>'", &["token", "--ttl", "2y", "--key", "key.pem"]),
        ("token: URL ftp://", 2, "uses ftp://", &["token", "ftp://127.0.0.1:7070", "--key", "key.pem"]),
        ("token: --key the .pub file", 14, "key.pem.pub: not an ed25519 private key", &["token", "--key", "key.pem.pub"]),
        ("token: --key missing", 14, "there is no key file nokey.pem", &["token", "--key", "nokey.pem"]),
        ("token: --key a directory", 14, "profiles: ", &["token", "--key", "profiles"]),
        ("token: no default key", 14, "make one with `nodeos keygen`", &["token"]),
    ];
    cases.extend(offline.iter().map(|&(name, code, needle, command)| {
        case(name, code, needle, move |d| {
            if command.contains(&"key.pem") || command.contains(&"key.pem.pub") {
                d.key();
            }
            d.mkdir("profiles");
            args(command, &[])
        })
    }));
    // No key: the appliance is not asked.
    for command in [&["status"][..], &["logs"], &["profile", "--heap"]] {
        let name = command[0];
        cases.push(case(
            format!("{name}: --key missing"),
            14,
            "there is no key file nokey.pem",
            move |d| {
                let url = d.agent();
                args(&[name, &url, "--key", "nokey.pem"], &command[1..])
            },
        ));
        cases.push(case(
            format!("{name}: no default key"),
            14,
            "make one with `nodeos keygen`",
            move |d| {
                let url = d.agent();
                args(&[name, &url], &command[1..])
            },
        ));
    }
    cases
}

fn key_cases() -> Vec<Case> {
    vec![
        case(
            "keygen: unknown flag",
            2,
            "unexpected argument '--force'",
            |_| args(&["keygen"], &["--out", "key.pem", "--force"]),
        ),
        case(
            "keygen: the key exists",
            14,
            "key.pem already exists; nodeos never overwrites a key",
            |d| {
                d.key();
                args(&["keygen"], &["--out", "key.pem"])
            },
        ),
        case(
            "keygen: its .pub exists",
            14,
            "key.pem.pub already exists; nodeos never overwrites a key",
            |d| {
                d.write("key.pem.pub", "ed25519:00\n");
                args(&["keygen"], &["--out", "key.pem"])
            },
        ),
        case("keygen: no HOME and no --out", 2, "pass --out FILE", |d| {
            d.env("HOME", "");
            d.env("XDG_CONFIG_HOME", "");
            args(&["keygen"], &[])
        }),
        case(
            "keygen: --out in a directory that cannot be made",
            18,
            "cannot create /proc/nodeos-test",
            |_| args(&["keygen"], &["--out", "/proc/nodeos-test/key.pem"]),
        ),
        case(
            "keygen: --out in a directory that cannot be written",
            18,
            "cannot write /proc/self/key.pem",
            |_| args(&["keygen"], &["--out", "/proc/self/key.pem"]),
        ),
    ]
}

/// `nodeos init` refuses a package.json it cannot edit and leaves it as
/// it is (in a git work tree, where it would write .gitignore too);
/// `nodeos nodedir` reads the project as `build` does.
fn init_cases() -> Vec<Case> {
    #[rustfmt::skip]
    let table: &[(&str, &str, &str)] = &[
        ("package.json not JSON", "project/package.json: not valid JSON", "{\"name\": \"x\",\n"),
        ("package.json an array", "the top level must be an object", "[]"),
        ("scripts not an object", "\"scripts\" must be an object", r#"{"name":"x","version":"1.0.0","scripts":5}"#),
    ];
    let mut cases: Vec<Case> = table
        .iter()
        .map(|&(name, needle, json)| {
            case(format!("init: {name}"), 3, needle, move |d| {
                d.mkdir("project/.git");
                args(&["init", d.project(json)], &[])
            })
        })
        .collect();
    cases.extend([
        case(
            "init: no package.json",
            3,
            "no package.json in project",
            |d| {
                d.mkdir("project/.git");
                args(&["init", "project"], &[])
            },
        ),
        case(
            "init: unknown flag",
            2,
            "unexpected argument '--yes'",
            |d| args(&["init", d.project(HELLO_JSON)], &["--yes"]),
        ),
        case(
            "nodedir: engines.node not a range",
            4,
            "engines.node \"abc\" in package.json is not a valid version range",
            |d| {
                let json = r#"{"name":"x","version":"1.0.0","engines":{"node":"abc"}}"#;
                args(&["nodedir", d.project(json)], &[])
            },
        ),
        case("nodedir: no package.json", 3, "no package.json in", |d| {
            d.mkdir("project");
            args(&["nodedir", "project"], &[])
        }),
    ]);
    cases
}

/// What a path under a case's directory is.
#[derive(Debug, PartialEq, Eq)]
enum Node {
    Dir,
    File {
        len: u64,
        sha256: String,
        ino: u64,
        ctime_ns: i128,
    },
    Link(PathBuf),
}

/// Every path under `dir` and what it is. Files are hashed; their inode
/// and ctime catch a rewrite with the same bytes too.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Node> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Node>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let node = if meta.is_symlink() {
                Node::Link(std::fs::read_link(&path).unwrap())
            } else if meta.is_dir() {
                walk(root, &path, out);
                Node::Dir
            } else {
                Node::File {
                    len: meta.len(),
                    sha256: nodeos_image::sha256_file(&path)
                        .map(|(sha, _)| sha)
                        .unwrap_or_default(),
                    ino: meta.ino(),
                    ctime_ns: i128::from(meta.ctime()) * 1_000_000_000
                        + i128::from(meta.ctime_nsec()),
                }
            };
            out.insert(path.strip_prefix(root).unwrap().to_owned(), node);
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// What changed between two snapshots, one line each.
fn changes(before: &BTreeMap<PathBuf, Node>, after: &BTreeMap<PathBuf, Node>) -> Vec<String> {
    let mut out = Vec::new();
    for (path, node) in after {
        match before.get(path) {
            None => out.push(format!("left behind: {}", path.display())),
            Some(old) if old != node => out.push(format!("changed: {}", path.display())),
            Some(_) => {}
        }
    }
    for path in before.keys().filter(|p| !after.contains_key(*p)) {
        out.push(format!("removed: {}", path.display()));
    }
    out
}

/// The lines clap prints after its error.
fn usage_line(line: &str) -> bool {
    line.is_empty()
        || line.starts_with(char::is_whitespace)
        || line.starts_with("Usage:")
        || line.starts_with("For more information")
}

/// What is wrong with a command's output.
fn output_problems(case: &Case, stdout: &str, stderr: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if !stdout.is_empty() {
        problems.push(format!("stdout is not empty: {stdout:?}"));
    }
    let lines: Vec<&str> = stderr.lines().collect();
    let errors: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with("error:"))
        .collect();
    match errors[..] {
        [i] => {
            // The error and its indented continuation, where clap lists
            // the missing arguments or the possible values.
            let continued = lines[i + 1..]
                .iter()
                .take_while(|l| l.starts_with(char::is_whitespace));
            let error = std::iter::once(&lines[i])
                .chain(continued)
                .copied()
                .collect::<Vec<_>>()
                .join("\n");
            if !error.contains(&case.needle) {
                problems.push(format!("the error does not say {:?}", case.needle));
            }
            if !lines[i + 1..].iter().all(|l| usage_line(l)) {
                problems.push("more than usage after the error".to_owned());
            }
        }
        _ => problems.push(format!("{} `error:` lines, expected 1", errors.len())),
    }
    for bad in ["panicked", "RUST_BACKTRACE", "stack backtrace"] {
        if stderr.contains(bad) {
            problems.push(format!("stderr says {bad:?}"));
        }
    }
    problems
}

/// Runs one case in its own directory: its exit code and what is wrong.
fn run_case(case: &Case, registry: &str) -> (Option<i32>, Vec<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_owned();
    std::fs::create_dir(root.join("tmp")).unwrap();
    let qemu = script(&root, "qemu", "exit 1");
    let mut dir = Dir {
        root: root.clone(),
        env: Vec::new(),
        untouched: Vec::new(),
        held: Vec::new(),
    };
    let argv = (case.setup)(&mut dir);
    let before = snapshot(&root);

    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_nodeos"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("NO_COLOR", "1")
        .env("HOME", root.join("home"))
        .env("XDG_CONFIG_HOME", root.join("config"))
        .env("XDG_CACHE_HOME", root.join("xdg-cache"))
        .env("NODEOS_CACHE_DIR", root.join("cache"))
        .env("TMPDIR", root.join("tmp"))
        .env("NODEOS_QEMU", &qemu)
        .env("npm_config_registry", registry)
        .envs(dir.env.iter().map(|(k, v)| (k, v)))
        .args(&argv)
        .current_dir(&root);
    let mut child = NodeosRun::spawn(&mut cmd);
    let code = child.wait(Duration::from_secs(120));
    drop(std::mem::take(&mut dir.held));

    let mut problems = Vec::new();
    if code != Some(case.code) {
        problems.push(format!("exit {code:?}, expected {}", case.code));
    }
    problems.extend(output_problems(case, &child.stdout(), &child.stderr()));
    problems.extend(changes(&before, &snapshot(&root)));
    for (url, count) in &dir.untouched {
        match count.load(Ordering::SeqCst) {
            0 => {}
            n => problems.push(format!("{n} connection(s) to {url}, expected none")),
        }
    }
    if !problems.is_empty() {
        let stderr: Vec<String> = child
            .stderr()
            .lines()
            .map(|l| format!("        {l}"))
            .collect();
        problems.push(format!(
            "command: nodeos {}\n      stderr:\n{}",
            argv.join(" "),
            stderr.join("\n")
        ));
    }
    (code, problems)
}

/// Every bad input: one error, its documented exit code, nothing left
/// behind. Prints the whole matrix, then fails listing each failed case.
#[test]
fn every_bad_input_gives_one_error_its_exit_code_and_leaves_nothing() {
    let registry = format!("http://127.0.0.1:{}/", free_port());
    let cases = cases();
    let mut names = std::collections::BTreeSet::new();
    for case in &cases {
        assert!(names.insert(&case.name), "two cases named {:?}", case.name);
    }
    let start = Instant::now();
    // Two at a time: a case mostly waits for its process.
    let next = AtomicUsize::new(0);
    let mut results: Vec<(usize, Option<i32>, Vec<String>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(case) = cases.get(i) else {
                            return done;
                        };
                        let (code, problems) = run_case(case, &registry);
                        done.push((i, code, problems));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    results.sort_by_key(|r| r.0);

    let mut failures = Vec::new();
    let mut table = String::new();
    for (case, (_, code, problems)) in cases.iter().zip(results) {
        let got = code.map_or("killed".to_owned(), |c| c.to_string());
        let verdict = if problems.is_empty() {
            "ok"
        } else {
            failures.push(format!("{}:\n    {}", case.name, problems.join("\n    ")));
            "FAILED"
        };
        table.push_str(&format!(
            "{:>4} {:>4}  {}  {verdict}\n",
            case.code, got, case.name
        ));
    }
    println!(
        "want  got  case\n{table}{} cases in {:.1} s",
        cases.len(),
        start.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

/// `nodeos init` keeps an existing `"nodeos"` key as it is, but says what
/// in it `nodeos build` would refuse rather than leaving that to the build.
#[test]
fn init_warns_about_a_nodeos_key_that_build_would_refuse() {
    let tmp = tempfile::tempdir().unwrap();
    let json = r#"{"name":"x","version":"1.0.0","nodeos":{"restart":"sometimes"}}"#;
    write_project(tmp.path(), json, &[("index.js", HELLO_JS)]);
    let out = run(nodeos().arg("init").arg(tmp.path()));
    assert_exit(&out, 0);
    let err = stderr(&out);
    assert!(
        err.contains("warning: ")
            && err.contains("package.json: nodeos.restart: unknown variant \"sometimes\"")
            && err.contains("`nodeos build` refuses it as it is"),
        "{err}"
    );
    let value: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("package.json")).unwrap()).unwrap();
    assert_eq!(value["nodeos"], serde_json::json!({"restart": "sometimes"}));
    assert_eq!(value["scripts"]["build"], "nodeos build");
}
