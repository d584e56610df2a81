//! `nodeos init` on real npm projects: what it writes, that a second run
//! changes nothing, that it never clobbers scripts without `--force`, and
//! that `nodeos build` accepts the result (a real build, no VM).

use std::path::Path;

use crate::support::*;

const PACKAGE: &str = r#"{
  "name": "init-demo",
  "version": "0.3.0",
  "main": "server.js",
  "scripts": {
    "start": "node server.js",
    "build": "tsc -p ."
  },
  "license": "MIT"
}
"#;

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

fn init(dir: &Path, extra: &[&str]) -> std::process::Output {
    run(nodeos().arg("init").arg(dir).args(extra))
}

#[test]
fn init_adds_scripts_and_settings_once_and_keeps_other_scripts_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_project(dir, PACKAGE, &[("server.js", "")]);
    std::fs::create_dir(dir.join(".git")).unwrap();

    let output = init(dir, &[]);
    assert_exit(&output, 0);
    let err = stderr(&output);
    assert!(
        err.contains(r#"kept script "build": "tsc -p .""#) && err.contains("--force"),
        "{err}"
    );
    let first = read(&dir.join("package.json"));
    let value: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(value["scripts"]["build"], "tsc -p .");
    assert_eq!(value["scripts"]["vm"], "nodeos run");
    assert_eq!(value["scripts"]["deploy"], "nodeos deploy");
    assert_eq!(value["nodeos"]["ports"][0], "8080:3000");
    // The file keeps its indentation, key order and final newline.
    assert!(
        first.starts_with("{\n  \"name\": \"init-demo\",\n  \"version\""),
        "{first}"
    );
    assert!(first.ends_with("}\n"));
    assert!(read(&dir.join(".gitignore")).contains("*.nodeos/\n"));

    // Idempotent: a second run writes nothing.
    let output = init(dir, &[]);
    assert_exit(&output, 0);
    assert!(
        stderr(&output).contains("nothing to do"),
        "{}",
        stderr(&output)
    );
    assert_eq!(read(&dir.join("package.json")), first);
    let gitignore = read(&dir.join(".gitignore"));
    assert_eq!(gitignore.matches("*.nodeos/").count(), 1, "{gitignore}");

    let output = init(dir, &["--force"]);
    assert_exit(&output, 0);
    let value: serde_json::Value = serde_json::from_str(&read(&dir.join("package.json"))).unwrap();
    assert_eq!(value["scripts"]["build"], "nodeos build");
    assert_eq!(value["scripts"]["start"], "node server.js");
}

#[test]
fn init_refuses_a_missing_or_broken_package_json_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let output = init(tmp.path(), &[]);
    assert_exit(&output, 3);
    assert!(
        stderr(&output).contains("run `npm init`"),
        "{}",
        stderr(&output)
    );
    assert!(!tmp.path().join("package.json").exists());

    for broken in [
        "{\"name\": \"x\",",
        "[1, 2]",
        r#"{"name":"x","scripts":["build"]}"#,
    ] {
        std::fs::write(tmp.path().join("package.json"), broken).unwrap();
        let output = init(tmp.path(), &[]);
        assert_exit(&output, 3);
        assert!(
            stderr(&output).contains("package.json: "),
            "{}",
            stderr(&output)
        );
        assert_eq!(read(&tmp.path().join("package.json")), broken);
        let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    }
}

#[test]
fn an_initialised_project_builds_with_its_vm_settings_in_the_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("app");
    std::fs::create_dir(&dir).unwrap();
    write_project(
        &dir,
        r#"{"name":"init-build","version":"1.0.0","main":"server.js","engines":{"node":"22"}}"#,
        &[("server.js", &read(&example("hello").join("server.js")))],
    );
    assert_exit(&init(&dir, &[]), 0);
    let output = run(nodeos()
        .args(["-v", "build"])
        .arg(&dir)
        .args(["--profile", "dev", "--json"]));
    assert_exit(&output, 0);
    let err = stderr(&output);
    assert!(
        err.contains("app: ") && err.contains(" files, "),
        "-v details: {err}"
    );
    let built: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(built["name"], "init-build");
    assert_eq!(built["version"], "1.0.0");
    assert!(
        built["node"].as_str().unwrap().starts_with("22."),
        "{built}"
    );
    for artifact in ["kernel", "runtime", "app"] {
        let entry = &built["artifacts"][artifact];
        let path = Path::new(entry["path"].as_str().expect("path"));
        assert_eq!(
            std::fs::metadata(path).unwrap().len(),
            entry["size"].as_u64().unwrap(),
            "{artifact}"
        );
        assert_eq!(entry["sha256"].as_str().unwrap().len(), 64);
    }
    let manifest = &built["manifest"];
    assert_eq!(
        manifest["vm"],
        serde_json::json!({"memory": 256, "cpus": 1, "ports": ["127.0.0.1:8080:3000"]})
    );
}
