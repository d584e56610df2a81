//! Integration tests of the `nodeos` binary: one test binary, three kinds.
//!
//! * `cli`: runs the binary on bad input; no VM, no network (a local fake
//!   registry on 127.0.0.1 where one is needed).
//! * `vm`: builds real images (real Node.js from the configured npm
//!   registry, nodeos's real kernel) and boots them under QEMU (TCG).
//!
//! The VM tests wait for console markers with hard timeouts and print the
//! guest console when they fail.

mod cli;
mod config;
mod support;
mod vm;
