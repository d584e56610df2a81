//! Integration tests of the `nodeos` binary: one test binary, a few kinds.
//!
//! * `cli`: runs the binary on bad input; no VM, no network (a local fake
//!   registry on 127.0.0.1 where one is needed).
//! * `config`: package.json `"nodeos"` keys that `nodeos build` refuses.
//! * `deploy`: `nodeos deploy` and `nodeos status` against a fake update
//!   agent on 127.0.0.1 (no VM, no build).
//! * `deploy`: `nodeos deploy` and `nodeos status` against a fake update
//!   agent on 127.0.0.1 (no VM).
//! * `data`: the persistent data volume, on the host (no VM) and in the
//!   guest across hard kills, a full volume and corruption (VM).
//! * `reproducible`: real builds (no VM) that must give identical bytes.
//! * `vm`: builds real images (real Node.js from the configured npm
//!   registry, nodeos's real kernel) and boots them under QEMU (TCG).
//!
//! * `update`: signed A/B updates to a running appliance and each fault
//!   of issue #6 (VM).
//!
//! The VM tests wait for console markers with hard timeouts and print the
//! guest console when they fail.

mod cli;
mod config;
mod data;
mod deploy;
mod reproducible;
mod support;
mod update;
mod vm;
