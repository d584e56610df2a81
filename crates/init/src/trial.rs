//! Phase 4b, slots: which slot of the A/B system disk this boot runs,
//! whether it is a new version's trial, and the verdict: committed in the
//! update state after the health check passed, or rolled back (with the
//! log tail kept for `nodeos status` and `nodeos deploy`).
//!
//! The bootloader chose the slot and passed it as `nodeos.slot=`: the host
//! (`nodeos run`), or systemd-boot on a disk made by `nodeos export`, whose
//! boot entries init keeps in step ([`crate::update::esp`]). Without it (an
//! image booted from its files directly) there are no slots and no updates.

use std::sync::Arc;
use std::sync::mpsc::Sender;

use nodeos_manifest::console::{self, LogFormat};
use nodeos_manifest::slots::{CMDLINE_SLOT, Slot, SlotStatus, UpdateResult};
use nodeos_manifest::update::{AppStatus, HealthCheck};

use crate::supervise::Event;
use crate::update::{Shared, lock, now_ms};
use crate::{health, log, say};

/// The slot named by `nodeos.slot=` on the kernel command line.
pub fn booted_slot(cmdline: &str) -> Option<Slot> {
    cmdline
        .split_whitespace()
        .find_map(|arg| arg.strip_prefix(CMDLINE_SLOT))
        .and_then(Slot::parse)
}

/// The boot's part in updates, shared with the update agent.
pub struct Updates {
    shared: Arc<Shared>,
    health: HealthCheck,
}

impl Updates {
    pub fn new(shared: Arc<Shared>, health: HealthCheck) -> Updates {
        if shared.trial {
            say!(
                "slot {}: trial of {} {}; health check: {}",
                shared.slot,
                shared.appliance,
                shared.version,
                match &health.path {
                    Some(path) => format!("GET {path} 2xx within {}s", health.timeout),
                    None => format!("the app up for {}s", health.uptime),
                }
            );
        }
        Updates { shared, health }
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Whether this boot is a new version's trial.
    pub fn is_trial(&self) -> bool {
        self.shared.trial
    }

    /// Starts the health check against the app's port. It runs on every
    /// boot, so that `nodeos status` can show it; its verdict only decides
    /// a trial.
    pub fn start_health(&self, port: u16, events: Sender<Event>) {
        let shared = Arc::clone(&self.shared);
        health::spawn(&self.health, port, move |verdict| {
            *lock(&shared.health) = Some(match &verdict {
                Ok(how) => format!("healthy: {how}"),
                Err(why) => format!("unhealthy: {why}"),
            });
            let _ = events.send(Event::Health(verdict));
        });
    }

    /// Keeps the app's status current for the agent.
    pub fn set_app(&self, status: AppStatus) {
        *lock(&self.shared.app) = status;
    }

    /// The trial passed: the booted slot becomes the active one.
    ///
    /// On a disk with an ESP its boot entry loses its counters first: a
    /// stop between the two then boots the slot again as a trial (the
    /// state still says so), never the old slot with the state saying new.
    pub fn commit(&self, detail: &str) {
        let shared = &self.shared;
        let slot = shared.slot;
        if let Some(esp) = &shared.esp
            && let Err(e) = esp.commit(slot)
        {
            // Left on trial: its entry's try is used up, so the next boot
            // is the old slot, which rolls this one back.
            say!(
                "error: cannot mark slot {slot}'s boot entry committed: {e}; the update stays on trial and the next boot rolls it back"
            );
            return;
        }
        let mut store = shared.store();
        let from = store
            .state()
            .last_update
            .as_ref()
            .map(|l| l.from.clone())
            .unwrap_or_default();
        let result = store.update(|state| {
            state.active = slot;
            let booted = state.slot_mut(slot);
            booted.status = SlotStatus::Good;
            booted.tries = 0;
            if let Some(last) = &mut state.last_update
                && last.slot == slot
            {
                last.result = UpdateResult::Committed;
                last.reason = detail.to_owned();
                last.at_ms = now_ms();
            }
        });
        drop(store);
        match result {
            Ok(()) => log::marker(&format!(
                "{}: {} {from} → {} (slot {slot}; {detail})",
                console::UPDATE_COMMITTED,
                shared.appliance,
                shared.version
            )),
            // The slot stays on trial; the next boot rolls it back.
            Err(e) => say!("error: cannot commit the update: {e}; the next boot rolls it back"),
        }
    }

    /// The trial failed: the booted slot is marked bad and the log so far
    /// is kept; the supervisor then stops the app and reboots into the
    /// active slot.
    pub fn rollback(&self, reason: &str) {
        let shared = &self.shared;
        let slot = shared.slot;
        log::marker(&format!("{}: {reason}", console::UPDATE_ROLLED_BACK));
        let tail = log::with_ring(|ring| {
            ring.records()
                .map(|r| r.format(LogFormat::Text) + "\n")
                .collect::<String>()
        });
        let mut store = shared.store();
        if let Err(e) = store.write_log_tail(&tail) {
            say!("warning: cannot keep the log tail: {e}");
        }
        let result = store.update(|state| {
            let booted = state.slot_mut(slot);
            booted.status = SlotStatus::Bad;
            booted.tries = 0;
            if let Some(last) = &mut state.last_update
                && last.slot == slot
            {
                last.result = UpdateResult::RolledBack;
                last.reason = reason.to_owned();
                last.at_ms = now_ms();
            }
        });
        drop(store);
        if let Err(e) = result {
            // The host still rolls back: the trial's one try is used up.
            say!("error: cannot record the rollback: {e}");
        }
        if let Some(esp) = &shared.esp
            && let Err(e) = esp.remove(slot)
        {
            // Its try is used up: the firmware boots the other slot anyway.
            say!("warning: cannot remove slot {slot}'s boot entry: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slot_comes_from_the_command_line() {
        assert_eq!(
            booted_slot("console=ttyS0 root=PARTLABEL=nodeos-runtime-b nodeos.slot=b"),
            Some(Slot::B)
        );
        assert_eq!(booted_slot("console=ttyS0 root=/dev/vda"), None);
        assert_eq!(booted_slot("nodeos.slot=c"), None);
    }
}
