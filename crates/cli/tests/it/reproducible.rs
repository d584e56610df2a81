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
/// times into different output directories, give the same bytes: kernel,
/// root filesystem and manifest.
#[test]
fn the_same_inputs_build_byte_identical_images() {
    let tmp = tempfile::tempdir().unwrap();
    let mut images = Vec::new();
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
        images.push(build_image(
            &project,
            Some(&tmp.path().join(copy).join("out")),
            Profile::Dev,
        ));
    }
    assert_eq!(
        sha256_of_artifacts(&images[0]),
        sha256_of_artifacts(&images[1])
    );
    for file in ["kernel", "rootfs.img"] {
        assert_eq!(
            std::fs::read(images[0].join(file)).unwrap(),
            std::fs::read(images[1].join(file)).unwrap(),
            "{file} differs"
        );
    }

    // SOURCE_DATE_EPOCH is honoured: another timestamp, another root image.
    let project = tmp.path().join("first/repro");
    let out = tmp.path().join("epoch");
    let output = run(nodeos()
        .arg("build")
        .arg(&project)
        .args(["--profile", "dev", "--out"])
        .arg(&out)
        .env("SOURCE_DATE_EPOCH", "1700000000"));
    assert_exit(&output, 0);
    let dated = out.join("repro.nodeos/rootfs.img");
    assert_ne!(
        std::fs::read(&dated).unwrap(),
        std::fs::read(images[0].join("rootfs.img")).unwrap(),
        "SOURCE_DATE_EPOCH made no difference"
    );
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
