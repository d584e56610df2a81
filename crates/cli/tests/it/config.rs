//! package.json's `"nodeos"` key (docs/config.md): a broken one stops
//! `nodeos build` before anything is downloaded or written, with exit code
//! 3 and one error line that names the key.

use std::path::{Path, PathBuf};

use crate::support::*;

const HELLO_JS: &str =
    "require('node:http').createServer((q, s) => s.end('hi')).listen(process.env.PORT);\n";

/// A package.json whose `"nodeos"` key is `key` (raw JSON).
fn package_json(key: &str) -> String {
    format!(r#"{{"name":"x","version":"1.0.0","nodeos":{key}}}"#)
}

/// Every file and directory under `dir`, relative to it, sorted.
fn tree(dir: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            out.push(path.strip_prefix(root).unwrap().to_owned());
            if entry.file_type().unwrap().is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Builds a project whose `"nodeos"` key is `key`, with an isolated
/// cache and a registry where nothing listens, and asserts that the build
/// exits 3 with one error line holding each of `needles`, and that nothing
/// was written: no output directory, no temporary files, no cache.
fn assert_config_refused(key: &str, out: Option<&str>, needles: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("project");
    write_project(&project, &package_json(key), &[("index.js", HELLO_JS)]);
    let before = tree(tmp.path());

    let mut cmd = nodeos();
    cmd.arg("build")
        .arg(&project)
        .env("NODEOS_CACHE_DIR", tmp.path().join("cache"))
        .env(
            "npm_config_registry",
            format!("http://127.0.0.1:{}/", free_port()),
        );
    if let Some(out) = out {
        cmd.arg("--out").arg(tmp.path().join(out));
    }
    let output = run(&mut cmd);
    assert_exit(&output, 3);

    let err = stderr(&output);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one error line:\n{err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(lines[0].contains("package.json: "), "{err}");
    for needle in needles {
        assert!(err.contains(needle), "expected {needle:?} in:\n{err}");
    }
    assert!(output.stdout.is_empty(), "nothing on stdout");
    assert_eq!(tree(tmp.path()), before, "a refused build wrote files");
}

#[test]
fn build_with_an_unknown_restart_policy_exits_3() {
    assert_config_refused(
        r#"{"restart":"sometimes"}"#,
        None,
        &[
            r#"nodeos.restart: unknown variant "sometimes", expected one of "always", "on-failure", "never""#,
        ],
    );
}

#[test]
fn build_with_a_misspelt_key_suggests_the_right_one_and_exits_3() {
    assert_config_refused(
        r#"{"restrat":"never"}"#,
        Some("out"),
        &[r#"nodeos.restrat: unknown key; did you mean "restart"?"#],
    );
    assert_config_refused(
        r#"{"network":{"dhcp_timeout":5}}"#,
        None,
        &[r#"nodeos.network.dhcp_timeout: unknown key; did you mean "dhcpTimeout"?"#],
    );
}

#[test]
fn build_with_a_wrong_type_exits_3() {
    assert_config_refused(
        r#"{"grace":"10"}"#,
        None,
        &[r#"nodeos.grace: invalid type: string "10", expected u32"#],
    );
    assert_config_refused(
        r#""on-failure""#,
        Some("out"),
        &["nodeos: must be an object, not a string"],
    );
}

#[test]
fn build_with_a_gateway_outside_the_subnet_exits_3() {
    assert_config_refused(
        r#"{"network":{"ipv4":{"address":"10.0.2.20/24","gateway":"10.0.3.2"}}}"#,
        None,
        &["nodeos.network.ipv4.gateway: 10.0.3.2 is not inside 10.0.2.20/24"],
    );
    assert_config_refused(
        r#"{"network":{"ipv4":{"address":"10.0.2.20"}}}"#,
        None,
        &["nodeos.network.ipv4.address:", "ADDRESS/PREFIX"],
    );
}

#[test]
fn build_with_port_in_env_points_to_the_port_setting_and_exits_3() {
    assert_config_refused(
        r#"{"env":{"PORT":"8080"}}"#,
        None,
        &["nodeos.env.PORT:", r#"set "nodeos.port" instead"#],
    );
    assert_config_refused(
        r#"{"env":{"A=B":"1"}}"#,
        None,
        &["nodeos.env.A=B:", "not a valid environment variable name"],
    );
}
