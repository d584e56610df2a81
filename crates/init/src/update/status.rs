//! `GET /v1/status`: what the appliance runs, where each slot stands and
//! how the last update went.

use std::collections::BTreeMap;

use nodeos_manifest::slots::{Part, Slot, SlotStatus, UpdateResult};
use nodeos_manifest::update::{SlotInfo, Status};

use super::{Shared, lock, read_slot_meta};

/// The status as of now.
pub(crate) fn status(shared: &Shared) -> Status {
    let (state, log_tail) = {
        let store = shared.store();
        let state = store.state().clone();
        let rolled_back = state
            .last_update
            .as_ref()
            .is_some_and(|last| last.result == UpdateResult::RolledBack);
        let tail = if rolled_back { store.log_tail() } else { None };
        (state, tail)
    };
    let slots: BTreeMap<Slot, SlotInfo> = [Slot::A, Slot::B]
        .into_iter()
        .map(|slot| {
            let s = state.slot(slot);
            let artifacts = if slot == shared.slot {
                shared.booted.hashes()
            } else {
                read_slot_meta(shared.partitions.part(Part::Boot, slot))
                    .map(|meta| meta.hashes())
                    .unwrap_or_default()
            };
            let info = SlotInfo {
                status: s.status,
                version: s.version.clone(),
                sequence: s.sequence,
                artifacts,
            };
            (slot, info)
        })
        .collect();
    Status {
        appliance: shared.appliance.clone(),
        version: shared.version.clone(),
        slot: shared.slot,
        trial: shared.trial && state.slot(shared.slot).status == SlotStatus::Trying,
        max_sequence: state.max_sequence,
        uptime_s: crate::stats::uptime_ms().map_or(0, |ms| ms / 1000),
        app: lock(&shared.app).clone(),
        health: lock(&shared.health).clone(),
        slots,
        last_update: state.last_update,
        log_tail,
        system: None,
    }
}

#[cfg(test)]
mod tests {
    use nodeos_manifest::slots::LastUpdate;

    use super::*;
    use crate::update::testing::{Fixture, Image};

    #[test]
    fn reports_both_slots_and_a_rollback_with_its_log_tail() {
        let fx = Fixture::new(&Image::new("1.0.0", 1));
        let shared = fx.shared();
        *lock(&shared.health) = Some("GET /healthz 200 after 0.8 s".into());
        let status = status(&shared);
        assert_eq!(
            (status.appliance.as_str(), status.version.as_str()),
            ("hello", "1.0.0")
        );
        assert_eq!((status.slot, status.trial), (Slot::A, false));
        assert_eq!(status.slots[&Slot::A].status, SlotStatus::Good);
        assert_eq!(status.slots[&Slot::A].artifacts.len(), 3);
        assert!(status.slots[&Slot::B].artifacts.is_empty());
        assert_eq!(
            status.health.as_deref(),
            Some("GET /healthz 200 after 0.8 s")
        );
        assert_eq!(status.log_tail, None);

        {
            let mut store = shared.store();
            store.write_log_tail("boom at start\n").unwrap();
            store
                .update(|s| {
                    s.last_update = Some(LastUpdate {
                        sequence: 3,
                        from: "1.0.0".into(),
                        to: "1.0.1".into(),
                        slot: Slot::B,
                        result: UpdateResult::RolledBack,
                        reason: "app exited".into(),
                        at_ms: 1,
                    })
                })
                .unwrap();
        }
        let status = super::status(&shared);
        assert_eq!(status.log_tail.as_deref(), Some("boom at start\n"));
        let json = serde_json::to_string(&status).unwrap();
        assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), status);
    }
}
