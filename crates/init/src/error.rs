//! The one error type of init. Each variant says which step failed; the
//! underlying cause is its `#[source]` and is not repeated in the message.
//! [`crate::error_chain`] renders the whole chain once, on one line.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot mount {fstype} on {target}")]
    Mount {
        fstype: &'static str,
        target: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "no app layer: none of the virtio disks {disks} holds an EROFS or squashfs filesystem besides the root {root} (boot the image with `nodeos run`, which attaches app.img as the second disk)"
    )]
    AppLayerMissing { root: String, disks: String },
    #[error(
        "the command line has dm-verity check the app layer, but the kernel made no `{}` device (its device-mapper lines above say why)",
        nodeos_manifest::verity::APP_DEVICE
    )]
    AppVerityMissing,
    #[error("slot {slot}: cannot find the system disk's partitions")]
    Partitions {
        slot: nodeos_manifest::slots::Slot,
        #[source]
        source: io::Error,
    },
    #[error("cannot mount the app layer {dev} ({fstype}) on {target}")]
    AppLayer {
        dev: String,
        fstype: &'static str,
        target: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot open /dev/console for stdin/stdout/stderr")]
    Console(#[source] io::Error),
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} is not a valid app config (the image is broken: rebuild it with `nodeos build`)"
    )]
    ConfigJson {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: {problem} (the image is broken: rebuild it with `nodeos build`)")]
    ConfigInvalid { path: String, problem: String },
    #[error("cannot {action} on network interface {iface}")]
    Net {
        iface: String,
        action: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot set up signal handling")]
    Signals(#[source] io::Error),
    #[error("the app's entry {entry} is not in the image (rebuild it with `nodeos build`)")]
    Entry {
        entry: String,
        #[source]
        source: io::Error,
    },
    /// The data volume stops the boot (`onCheckFailure` is `stop`). The
    /// message starts with `data volume ` so that the host can recognise
    /// it ([`nodeos_manifest::settings::DATA_FAILED_MARKER`]).
    #[error(
        "data volume {dev} {problem}; the app is not started. Repair the volume on the host with `e2fsck -fy VOLUME_FILE`, or start the app anyway with \"data\": {{\"onCheckFailure\": \"start\"}} in package.json's \"nodeos\" key or `nodeos run --data-on-check-failure start`"
    )]
    Data { dev: String, problem: String },
    #[error("cannot start the app ({node} in {workdir})")]
    Spawn {
        node: String,
        workdir: String,
        #[source]
        source: io::Error,
    },
}
