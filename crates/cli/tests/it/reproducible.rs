//! Reproducible images: the same inputs give byte-identical artefacts, and
//! `SOURCE_DATE_EPOCH` sets the files' timestamp. Real builds (Node.js and
//! the kernel from the cache), no VM.

use std::path::Path;

use nodeos_manifest::Profile;

use crate::support::*;

fn sha256_of_artifacts(image: &Path) -> Vec<(String, String)> {
    let manifest = nodeos_manifest::Manifest::from_json(
        &std::fs::read_to_string(image.join(nodeos_manifest::MANIFEST_FILE)).unwrap(),
    )
    .unwrap();
    let mut out: Vec<_> = manifest
        .artifacts
        .values()
        .map(|a| (a.path.clone(), a.sha256.clone()))
        .collect();
    out.push((
        nodeos_manifest::MANIFEST_FILE.into(),
        std::fs::read_to_string(image.join(nodeos_manifest::MANIFEST_FILE)).unwrap(),
    ));
    out
}

/// Two copies of one project in different directories, built at different
/// times into different output directories, the second with an empty
/// layer cache, give the same bytes: kernel, both layers and manifest.
#[test]
fn the_same_inputs_build_byte_identical_images() {
    let tmp = tempfile::tempdir().unwrap();
    let mut images = Vec::new();
    let fresh_cache = cache_without_layers(tmp.path());
    for copy in ["first", "second/nested"] {
        let project = tmp.path().join(copy).join("repro");
        write_project(
            &project,
            r#"{"name":"repro","version":"1.0.0","engines":{"node":"22"},"main":"server.js"}"#,
            &[
                ("server.js", "console.log('same bytes');\n"),
                ("lib/a.js", "module.exports = 1;\n"),
            ],
        );
        // Different file times on each copy must not matter.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let out = tmp.path().join(copy).join("out");
        let mut cmd = nodeos();
        cmd.arg("build")
            .arg(&project)
            .args(["--profile", "dev", "--out"])
            .arg(&out);
        if copy != "first" {
            cmd.env("NODEOS_CACHE_DIR", &fresh_cache);
        }
        let output = run(&mut cmd);
        assert_exit(&output, 0);
        if copy != "first" {
            assert!(
                stderr(&output).contains("Packing runtime layer"),
                "the fresh cache has no runtime layer: {}",
                stderr(&output)
            );
        }
        images.push(out.join("repro.nodeos"));
    }
    assert_eq!(
        sha256_of_artifacts(&images[0]),
        sha256_of_artifacts(&images[1])
    );
    for file in ["kernel", "runtime.img", "app.img"] {
        assert_eq!(
            std::fs::read(images[0].join(file)).unwrap(),
            std::fs::read(images[1].join(file)).unwrap(),
            "{file} differs"
        );
    }

    // SOURCE_DATE_EPOCH is honoured: another timestamp, another app layer;
    // the runtime layer's files are always dated 0, so it stays the same.
    let project = tmp.path().join("first/repro");
    let out = tmp.path().join("epoch");
    let output = run(nodeos()
        .arg("build")
        .arg(&project)
        .args(["--profile", "dev", "--out"])
        .arg(&out)
        .env("SOURCE_DATE_EPOCH", "1700000000"));
    assert_exit(&output, 0);
    let read = |image: &Path, file: &str| std::fs::read(image.join(file)).unwrap();
    let dated = out.join("repro.nodeos");
    assert_ne!(
        read(&dated, "app.img"),
        read(&images[0], "app.img"),
        "SOURCE_DATE_EPOCH made no difference"
    );
    assert_eq!(read(&dated, "runtime.img"), read(&images[0], "runtime.img"));
}

/// Changing one JS file repacks the app layer only: the runtime layer
/// comes from the cache, byte for byte.
#[test]
fn a_one_line_change_repacks_only_the_app_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("edit");
    let server = |line: &str| format!("console.log('{line}');\n");
    write_project(
        &project,
        r#"{"name":"edit","version":"1.0.0","engines":{"node":"22"},"main":"server.js"}"#,
        &[("server.js", &server("before"))],
    );
    let first = build_image(&project, None, Profile::Dev);
    let before = sha256_of_artifacts(&first);
    std::fs::write(project.join("server.js"), server("after")).unwrap();
    let output = run(nodeos()
        .arg("build")
        .arg(&project)
        .args(["--profile", "dev"]));
    assert_exit(&output, 0);
    let log = stderr(&output);
    assert!(log.contains("Packing app layer"), "{log}");
    assert!(!log.contains("runtime layer"), "{log}");
    let after = sha256_of_artifacts(&first);
    let sum = |sums: &[(String, String)], file: &str| {
        sums.iter().find(|(f, _)| f == file).unwrap().1.clone()
    };
    assert_eq!(sum(&before, "runtime.img"), sum(&after, "runtime.img"));
    assert_eq!(sum(&before, "kernel"), sum(&after, "kernel"));
    assert_ne!(sum(&before, "app.img"), sum(&after, "app.img"));
}

/// A cache directory with this user's Node.js downloads and kernels (linked)
/// but no runtime layers, so a build in it packs the runtime layer afresh.
fn cache_without_layers(tmp: &Path) -> std::path::PathBuf {
    let real = nodeos_manifest::cache_dir().expect("a cache directory");
    let fresh = tmp.join("fresh-cache");
    std::fs::create_dir(&fresh).unwrap();
    for entry in std::fs::read_dir(&real).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "layers" {
            std::os::unix::fs::symlink(entry.path(), fresh.join(entry.file_name())).unwrap();
        }
    }
    fresh
}

#[test]
fn a_malformed_source_date_epoch_exits_2_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let output = run(nodeos()
        .arg("build")
        .arg(example("hello"))
        .arg("--out")
        .arg(&out)
        .env("SOURCE_DATE_EPOCH", "yesterday"));
    assert_exit(&output, 2);
    assert!(
        stderr(&output).contains("SOURCE_DATE_EPOCH"),
        "{}",
        stderr(&output)
    );
    assert!(is_empty_or_missing(&out));
}
