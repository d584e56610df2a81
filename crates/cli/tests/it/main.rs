//! Integration tests of the `nodeos` binary: one test binary, a few kinds.
//!
//! * `browser`: a small WebDriver client (headless Chromium through
//!   chromedriver, 127.0.0.1 only) for tests that look at pages.
//! * `cli`: runs the binary on bad input; no VM, no network (a local fake
//!   registry on 127.0.0.1 where one is needed).
//! * `config`: package.json `"nodeos"` keys that `nodeos build` refuses.
//! * `bad_input`: the bad-input matrix: broken package.json files,
//!   `"nodeos"` values, flags of every command, corrupt images and update
//!   bundles, each with one error, its exit code and nothing left behind
//!   (no VM, 127.0.0.1 only).
//! * `deploy`: `nodeos deploy` and `nodeos status` against a fake update
//!   agent on 127.0.0.1 (no VM, no build).
//! * `data`: the persistent data volume, on the host (no VM) and in the
//!   guest across hard kills, a full volume and corruption (VM).
//! * `reproducible`: real builds (no VM) that must give identical bytes.
//! * `vm`: builds real images (real Node.js from the configured npm
//!   registry, nodeos's real kernel) and boots them under QEMU (TCG).
//!
//! * `init`: `nodeos init` on real npm projects (a real build, no VM).
//! * `npm`: the npm packages `scripts/release-npm` packs, installed from
//!   their tarballs into a fresh project that then builds (no VM).
//! * `addons`: node_modules checks (lockfile, native addons, `nodeos
//!   nodedir`) and better-sqlite3 built for the guest, used in a VM.
//! * `load_balancer`: examples/load-balancer end to end, with two backends
//!   on the host's loopback (VM).
//! * `update`: signed A/B updates to a running appliance and each fault
//!   of issue #6 (VM).
//! * `export`: `nodeos export` in every format: the UEFI disk under OVMF
//!   with an update and a rollback, the Firecracker directory under
//!   `qemu -M microvm`, the formats checked by qemu-img, skopeo and umoci,
//!   and exported twice for identical bytes (VM).
//! * `operate`: a running appliance observed without a shell: status,
//!   logs, syslog, metrics, the status page in headless Chromium, CPU and
//!   heap profiles (VM).
//! * `verity`: the dm-verity trees of both layers in the manifest and on
//!   the command line, and a byte flipped in either layer stopping the
//!   guest before it is used (VM, booted from the files).
//! * `surface`: the minimal surface (issue #10): every file of both layers
//!   against an allow-list, and the app's privileges and the guest's
//!   sockets and processes seen from inside (VM).
//!
//! The VM tests wait for console markers with hard timeouts and print the
//! guest console when they fail.

mod addons;
mod bad_input;
mod browser;
mod cli;
mod config;
mod data;
mod deploy;
mod export;
mod init;
mod load_balancer;
mod npm;
mod operate;
mod reproducible;
mod support;
mod surface;
mod update;
mod verity;
mod vm;
