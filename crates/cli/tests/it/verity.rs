//! dm-verity under the read-only layers (issue #10): real images of
//! examples/hello booted from their files under QEMU (TCG), untouched and
//! with one byte flipped in a layer. The host's own check (`nodeos run`
//! compares every artefact's sha256 before booting) is bypassed on purpose:
//! these tests show what the guest does with a disk changed behind its
//! back, as an exported disk on a cloud could be.

use std::path::{Path, PathBuf};

use nodeos_manifest::console;
use nodeos_manifest::verity::{self, Verity};
use nodeos_manifest::{MANIFEST_FILE, Manifest, Profile};
use nodeos_vmm::Outcome;

use crate::support::*;
use crate::vm::{BOOT, boot, fail_with_console, forward, wait_line};

fn read_manifest(image: &Path) -> Manifest {
    Manifest::from_json(&std::fs::read_to_string(image.join(MANIFEST_FILE)).unwrap()).unwrap()
}

/// A copy of the image directory `image` at `to` with bit 0 of byte
/// `offset` of the artefact `key` flipped, its manifest unchanged.
fn tampered_copy(image: &Path, to: &Path, key: &str, offset: usize) -> PathBuf {
    std::fs::create_dir_all(to).unwrap();
    let manifest = read_manifest(image);
    for entry in std::fs::read_dir(image).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
    let path = to.join(&manifest.artifacts[key].path);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[offset] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    to.to_owned()
}

#[test]
fn the_manifest_records_each_layers_tree_and_the_command_line_checks_both() {
    let tmp = tempfile::tempdir().unwrap();
    let image = build_image(&example("hello"), Some(tmp.path()), Profile::Dev);
    let manifest = read_manifest(&image);
    let tree = |key: &str| -> Verity {
        let artifact = &manifest.artifacts[key];
        let verity = artifact
            .verity
            .clone()
            .unwrap_or_else(|| panic!("{key} has no verity tree: {artifact:?}"));
        assert!(verity.is_well_formed(), "{key}: {verity:?}");
        // The file is the data, then the tree: one level of hash blocks per
        // 128-fold, none for a single data block (its digest is the root).
        let (mut level, mut tree_blocks) = (verity.data_blocks, 0);
        while level > 1 {
            level = level.div_ceil(128);
            tree_blocks += level;
        }
        assert_eq!(
            artifact.size,
            (verity.data_blocks + tree_blocks) * verity::BLOCK_SIZE,
            "{key}: {artifact:?}"
        );
        verity
    };
    let (runtime, app) = (tree("runtime"), tree("app"));
    assert!(manifest.artifacts["kernel"].verity.is_none());
    let create = verity::dm_create(&runtime, "/dev/vda", &app, "/dev/vdb");
    let words = verity::cmdline_words(&manifest.kernel.cmdline);
    assert!(
        words.contains(&create.as_str()),
        "{}",
        manifest.kernel.cmdline
    );
    assert!(words.contains(&"root=/dev/dm-0"), "{words:?}");
}

#[test]
fn a_flipped_byte_in_either_layer_stops_the_guest_and_the_untouched_image_serves() {
    let tmp = tempfile::tempdir().unwrap();
    let image = build_image(
        &example("hello"),
        Some(&tmp.path().join("out")),
        Profile::Dev,
    );

    // Untouched: it boots from the verity devices and serves.
    let (port, fwd) = forward(3000);
    let mut vm = boot(&image, 256, vec![fwd]);
    let mounted = wait_line(&vm, "mounted on /app", BOOT);
    assert!(
        mounted.contains("app layer /dev/dm-1 (erofs, checked by dm-verity)"),
        "{mounted}"
    );
    http_get_until_ok(port, "/", BOOT)
        .unwrap_or_else(|e| fail_with_console(&vm, &format!("GET /: {e}")));
    vm.shutdown(BOOT).unwrap();

    // Byte 0 is outside what EROFS reads of its superblock (which starts at
    // byte 1024), so without dm-verity either flip would go unnoticed; the
    // kernel reads block 0 of the runtime layer to mount the root, and init
    // reads block 0 of the app layer to recognise it.
    for key in ["runtime", "app"] {
        let copy = tampered_copy(&image, &tmp.path().join(key), key, 0);
        let mut vm = boot(&copy, 256, vec![]);
        let outcome = match vm.wait(BOOT) {
            Ok(Some(outcome)) => outcome,
            other => fail_with_console(&vm, &format!("{key}: the guest did not stop: {other:?}")),
        };
        let log = vm.console_log();
        match &outcome {
            Outcome::Tampered { line } if line.contains("data block 0 is corrupted") => {}
            other => fail_with_console(
                &vm,
                &format!("{key}: expected a tampered layer, got {other:?}"),
            ),
        }
        assert!(log.contains(verity::CORRUPTION_PANIC), "{key}:\n{log}");
        assert!(
            !log.contains(console::STARTING_APP),
            "{key}: the app started on a tampered layer:\n{log}"
        );
    }
}
