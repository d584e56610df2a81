//! The nodeos image builder.
//!
//! Turns an npm project into an image directory (`dist/<name>.nodeos/`):
//! a kernel, two read-only compressed layers (the runtime, cached across
//! builds, and the app; see [`layers`]) and `manifest.json`.
//! Building is a plan (read package.json, resolve and fetch Node.js, find
//! the kernel, list the files) followed by a write into a temporary
//! directory that is renamed into place only when everything succeeded.
//!
//! [`bundle`] and [`keys`] make and sign the update bundles `nodeos
//! deploy` sends to a running appliance.
//!
//! The library never prints: progress goes through a [`Reporter`].

pub mod addons;
mod build;
pub mod bundle;
pub mod cache;
pub mod config;
pub mod deps;
pub mod elf;
pub mod kernel;
pub mod keys;
pub mod layers;
pub mod lockfile;
pub mod node;
pub mod project;
pub mod registry;
pub mod rootfs;
pub mod verity;

pub use build::{
    BuildError, BuildOptions, Built, DEFAULT_PORT, KERNEL_FILE, app_config, build,
    is_static_binary, kernel_cmdline, sha256_file,
};
pub use layers::{APP_FILE, RUNTIME_FILE};

/// Lower-case hex of `bytes` (digests in cache keys, manifests, key files).
pub(crate) use nodeos_manifest::update::to_hex as hex;

/// Receives progress from the builder; the CLI draws it on stderr.
pub trait Reporter: Sync {
    /// A cargo-style status line, e.g. `("Downloading", "node 22.23.3")`.
    fn status(&self, verb: &str, message: &str);
    /// Something the user should know about that does not stop the build.
    fn warn(&self, message: &str);
    /// Starts a byte-count progress display (a download of `total` bytes, if known).
    fn progress(&self, label: &str, total: Option<u64>) -> Box<dyn Progress>;
    /// A detail only `--verbose` shows: what was found, chosen or run.
    fn detail(&self, _message: &str) {}
    /// Starts a spinner with the elapsed time, for a step of unknown
    /// length (packing a layer); [`Progress::finish`] clears it.
    fn spinner(&self, _label: &str) -> Box<dyn Progress> {
        Box::new(Silent)
    }
}

/// A running byte-count progress display.
pub trait Progress {
    fn inc(&self, bytes: u64);
    fn finish(&self);
}

/// A [`Reporter`] that shows nothing (tests, `--quiet`).
pub struct Silent;

impl Reporter for Silent {
    fn status(&self, _verb: &str, _message: &str) {}
    fn warn(&self, _message: &str) {}
    fn progress(&self, _label: &str, _total: Option<u64>) -> Box<dyn Progress> {
        Box::new(Silent)
    }
}

impl Progress for Silent {
    fn inc(&self, _bytes: u64) {}
    fn finish(&self) {}
}
