//! The host's boot choice: which slot of the system disk `nodeos run`
//! boots next, and what it records when a trial fails in a way only the
//! host sees. Pure functions on the update [`State`]; the caller reads the
//! state from the [`crate::SystemDisk`] and writes it back.
//!
//! With `-kernel` the host is the bootloader, so it also counts trial
//! boots: the guest's update agent sets a new slot `trying` with
//! `tries: 1`, and [`choose_boot`] takes that try *before* the boot. A
//! trial that ends without a verdict from init (kernel panic, hang, QEMU
//! failure, Ctrl-C) leaves `tries: 0`, and the next [`choose_boot`] rolls
//! it back.

use nodeos_manifest::slots::{Slot, SlotStatus, State};

pub use nodeos_manifest::slots::NO_VERDICT;

/// What to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boot {
    /// The slot to boot.
    pub slot: Slot,
    /// This boot is the slot's trial: init runs the health check and
    /// commits or rolls back.
    pub trial: bool,
    /// A trial was rolled back by this choice, for this reason (to show,
    /// and to store with the console tail in the disk's log area).
    pub rolled_back: Option<String>,
}

/// Chooses the slot to boot and updates `state` for it; the caller must
/// write `state` back to the disk ([`crate::SystemDisk::write_state`])
/// *before* booting, so that a boot that never returns still counts:
///
/// 1. the inactive slot is `trying` with tries left: one try is taken and
///    it is booted as a trial;
/// 2. the inactive slot is `trying` with no tries left: its trial never
///    gave a verdict, so it is marked bad, the last update is recorded as
///    rolled back ([`NO_VERDICT`], at `now_ms`) and the active slot is
///    booted;
/// 3. the active slot is bad (the host found it damaged, see
///    [`record_host_rollback`]) and the other one good: the other one
///    becomes active and is booted;
/// 4. otherwise the active slot is booted.
///
/// Only the inactive slot can be on trial: `trying` on the active slot
/// (which no writer produces) is ignored.
pub fn choose_boot(state: &mut State, now_ms: u64) -> Boot {
    let active = state.active;
    let other = active.other();
    let candidate = state.slot(other);
    if candidate.status == SlotStatus::Trying {
        if candidate.tries > 0 {
            state.slot_mut(other).tries -= 1;
            return Boot {
                slot: other,
                trial: true,
                rolled_back: None,
            };
        }
        state.roll_back(other, NO_VERDICT, now_ms);
        return Boot {
            slot: active,
            trial: false,
            rolled_back: Some(NO_VERDICT.to_owned()),
        };
    }
    if state.slot(active).status == SlotStatus::Bad && candidate.status == SlotStatus::Good {
        state.active = other;
        return Boot {
            slot: other,
            trial: false,
            rolled_back: None,
        };
    }
    Boot {
        slot: active,
        trial: false,
        rolled_back: None,
    }
}

/// Records that the host saw `slot`'s trial fail (kernel panic, QEMU
/// failure, no verdict before the trial deadline, the slot failed its
/// check): `slot` is bad with no tries left, and the last update is rolled
/// back with `reason` at `now_ms`. The caller writes `state` back.
///
/// If `slot` is the active one (only a damaged active slot, found by
/// [`crate::SystemDisk::verify_slot`], gets here), it is only marked bad:
/// `active` and the last update are left alone, and the next
/// [`choose_boot`] falls back to the other slot if that one is good.
pub fn record_host_rollback(state: &mut State, slot: Slot, reason: &str, now_ms: u64) {
    if slot == state.active {
        let entry = state.slot_mut(slot);
        entry.status = SlotStatus::Bad;
        entry.tries = 0;
    } else {
        state.roll_back(slot, reason, now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodeos_manifest::slots::{LastUpdate, SlotState, UpdateResult};

    const NOW: u64 = 1_795_705_201_000;

    fn slot(status: SlotStatus, version: &str, tries: u32) -> SlotState {
        SlotState {
            status,
            sequence: if status == SlotStatus::Good { 0 } else { 42 },
            version: version.into(),
            tries,
        }
    }

    /// Active a (1.0.0, good); b as given; a pending update to b when
    /// `pending`.
    fn state(b: SlotState, pending: bool) -> State {
        let mut state = State::new(Slot::A, "1.0.0");
        state.b = b;
        if pending {
            state.last_update = Some(LastUpdate {
                sequence: 42,
                from: "1.0.0".into(),
                to: "2.0.0".into(),
                slot: Slot::B,
                result: UpdateResult::Pending,
                reason: String::new(),
                at_ms: 5,
            });
        }
        state
    }

    #[test]
    fn choose_boot_table() {
        use SlotStatus::*;
        struct Case {
            name: &'static str,
            b: SlotState,
            pending: bool,
            boot: Boot,
            b_after: (SlotStatus, u32),
            result: Option<UpdateResult>,
        }
        let boot = |slot, trial, rolled_back: Option<&str>| Boot {
            slot,
            trial,
            rolled_back: rolled_back.map(str::to_owned),
        };
        let cases = [
            Case {
                name: "trial with a try left takes it",
                b: slot(Trying, "2.0.0", 1),
                pending: true,
                boot: boot(Slot::B, true, None),
                b_after: (Trying, 0),
                result: Some(UpdateResult::Pending),
            },
            Case {
                name: "trial with tries left keeps the rest",
                b: slot(Trying, "2.0.0", 3),
                pending: true,
                boot: boot(Slot::B, true, None),
                b_after: (Trying, 2),
                result: Some(UpdateResult::Pending),
            },
            Case {
                name: "trial without a verdict is rolled back",
                b: slot(Trying, "2.0.0", 0),
                pending: true,
                boot: boot(Slot::A, false, Some(NO_VERDICT)),
                b_after: (Bad, 0),
                result: Some(UpdateResult::RolledBack),
            },
            Case {
                name: "rolled back without a last update record creates one",
                b: slot(Trying, "2.0.0", 0),
                pending: false,
                boot: boot(Slot::A, false, Some(NO_VERDICT)),
                b_after: (Bad, 0),
                result: Some(UpdateResult::RolledBack),
            },
            Case {
                name: "empty other slot",
                b: SlotState::default(),
                pending: false,
                boot: boot(Slot::A, false, None),
                b_after: (Empty, 0),
                result: None,
            },
            Case {
                name: "bad other slot",
                b: slot(Bad, "2.0.0", 0),
                pending: false,
                boot: boot(Slot::A, false, None),
                b_after: (Bad, 0),
                result: None,
            },
            Case {
                name: "half-written other slot",
                b: slot(Writing, "2.0.0", 0),
                pending: false,
                boot: boot(Slot::A, false, None),
                b_after: (Writing, 0),
                result: None,
            },
            Case {
                name: "good other slot (the previous version)",
                b: slot(Good, "0.9.0", 0),
                pending: false,
                boot: boot(Slot::A, false, None),
                b_after: (Good, 0),
                result: None,
            },
        ];
        for case in cases {
            let mut state = state(case.b, case.pending);
            let chosen = choose_boot(&mut state, NOW);
            assert_eq!(chosen, case.boot, "{}", case.name);
            assert_eq!(
                (state.b.status, state.b.tries),
                case.b_after,
                "{}",
                case.name
            );
            assert_eq!(state.active, Slot::A, "{}", case.name);
            assert_eq!(state.a.status, Good, "{}", case.name);
            let last = state.last_update.as_ref();
            assert_eq!(last.map(|l| l.result), case.result, "{}", case.name);
            if case.boot.rolled_back.is_some() {
                let last = last.unwrap();
                assert_eq!(
                    (last.slot, last.sequence, last.reason.as_str(), last.at_ms),
                    (Slot::B, 42, NO_VERDICT, NOW),
                    "{}",
                    case.name
                );
                assert_eq!(
                    (&*last.from, &*last.to),
                    ("1.0.0", "2.0.0"),
                    "{}",
                    case.name
                );
            }
        }
    }

    #[test]
    fn a_trial_boots_once_then_rolls_back() {
        let mut state = state(slot(SlotStatus::Trying, "2.0.0", 1), true);
        assert!(choose_boot(&mut state, NOW).trial);
        // The trial never reached a verdict: the next boot rolls back.
        let next = choose_boot(&mut state, NOW + 1);
        assert_eq!(next.slot, Slot::A);
        assert!(!next.trial && next.rolled_back.is_some());
        // And after that the active slot boots as usual.
        assert_eq!(
            choose_boot(&mut state, NOW + 2),
            Boot {
                slot: Slot::A,
                trial: false,
                rolled_back: None
            }
        );
    }

    #[test]
    fn trying_on_the_active_slot_is_not_a_trial() {
        let mut state = state(slot(SlotStatus::Good, "0.9.0", 0), false);
        state.a.status = SlotStatus::Trying;
        state.a.tries = 1;
        let chosen = choose_boot(&mut state, NOW);
        assert_eq!((chosen.slot, chosen.trial), (Slot::A, false));
        assert_eq!(state.a.tries, 1);
    }

    #[test]
    fn a_damaged_active_slot_falls_back_to_a_good_other_slot() {
        let mut state = state(slot(SlotStatus::Good, "0.9.0", 0), false);
        record_host_rollback(&mut state, Slot::A, "slot a: runtime does not match", NOW);
        assert_eq!(state.a.status, SlotStatus::Bad);
        assert_eq!(state.active, Slot::A, "left alone");
        assert_eq!(state.last_update, None, "left alone");
        let chosen = choose_boot(&mut state, NOW);
        assert_eq!((chosen.slot, chosen.trial), (Slot::B, false));
        assert_eq!(state.active, Slot::B);

        // With no good slot to fall back to, the active one is booted anyway
        // (and its check fails again: the caller's error to report).
        let mut state = state_with_empty_b();
        record_host_rollback(&mut state, Slot::A, "damaged", NOW);
        assert_eq!(choose_boot(&mut state, NOW).slot, Slot::A);
    }

    fn state_with_empty_b() -> State {
        state(SlotState::default(), false)
    }

    #[test]
    fn host_rollback_table() {
        struct Case {
            name: &'static str,
            pending: bool,
            last_for_a: bool,
        }
        let cases = [
            Case {
                name: "pending update for the slot",
                pending: true,
                last_for_a: false,
            },
            Case {
                name: "no last update",
                pending: false,
                last_for_a: false,
            },
            Case {
                name: "last update was for the other slot",
                pending: false,
                last_for_a: true,
            },
        ];
        for case in cases {
            let mut state = state(slot(SlotStatus::Trying, "2.0.0", 0), case.pending);
            if case.last_for_a {
                state.last_update = Some(LastUpdate {
                    sequence: 7,
                    from: "0.9.0".into(),
                    to: "1.0.0".into(),
                    slot: Slot::A,
                    result: UpdateResult::Committed,
                    reason: "GET /healthz 200".into(),
                    at_ms: 1,
                });
            }
            record_host_rollback(&mut state, Slot::B, "the kernel panicked", NOW);
            assert_eq!(
                (state.b.status, state.b.tries),
                (SlotStatus::Bad, 0),
                "{}",
                case.name
            );
            assert_eq!(state.active, Slot::A, "{}", case.name);
            let last = state.last_update.clone().unwrap();
            assert_eq!(
                (
                    last.slot,
                    last.sequence,
                    last.result,
                    last.reason.as_str(),
                    last.at_ms
                ),
                (
                    Slot::B,
                    42,
                    UpdateResult::RolledBack,
                    "the kernel panicked",
                    NOW
                ),
                "{}",
                case.name
            );
            assert_eq!(
                (&*last.from, &*last.to),
                ("1.0.0", "2.0.0"),
                "{}",
                case.name
            );
            // After it the active slot boots, with nothing more to roll back.
            assert_eq!(
                choose_boot(&mut state, NOW),
                Boot {
                    slot: Slot::A,
                    trial: false,
                    rolled_back: None
                },
                "{}",
                case.name
            );
        }
    }
}
