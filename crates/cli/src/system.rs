//! `nodeos run` as the bootloader of the A/B system disk: it installs the
//! image directory into a slot, and before every boot picks the slot the
//! update state names, counts trial boots and checks the slot's files.
//!
//! The system disk (`dist/<name>.system.img` by default) holds two slots,
//! each a complete version (kernel, runtime layer, app layer); the update
//! agent in the guest writes the slot not running. See
//! [`nodeos_manifest::slots`] for the layout.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use nodeos_image::Reporter;
use nodeos_manifest::Manifest;
use nodeos_manifest::slots::{Slot, SlotMeta, SlotState, SlotStatus, State, UpdateResult};
use nodeos_vmm::slots::{Boot, choose_boot, record_host_rollback};
use nodeos_vmm::system_disk::{Layout, SystemDisk};

use crate::exit::{Exit, fail};
use crate::ui::Ui;

/// Where the system disk of `image_dir` lives unless `--system` says.
pub fn default_path(image_dir: &Path) -> PathBuf {
    nodeos_vmm::data::beside(image_dir, "system.img")
}

/// Opens the system disk at `path` if there is one (locked while it
/// lives), so that a file that is no system disk is refused before
/// anything else is created.
pub fn open(path: &Path) -> anyhow::Result<Option<SystemDisk>> {
    if path.exists() {
        Ok(Some(SystemDisk::open(path)?))
    } else {
        Ok(None)
    }
}

/// Opens the system disk (locked while it lives), creating it on first
/// use, and makes sure `manifest`'s image is in a slot: an image no slot
/// holds (a new local build) is installed into the slot not active and
/// made active, so build → run boots what was just built. An image some
/// slot holds already boots as the state says (after `nodeos deploy`, the
/// deployed version keeps running), unless that slot was installed and
/// never recorded (a run killed in between), which makes it active.
/// `opened` is the disk at `path` if the caller opened it already ([`open`]).
pub fn prepare(
    path: &Path,
    opened: Option<SystemDisk>,
    dir: &Path,
    manifest: &Manifest,
    ui: &Ui,
) -> anyhow::Result<SystemDisk> {
    let shown = path.display();
    let system = if let Some(system) = opened {
        system
    } else if path.exists() {
        SystemDisk::open(path)?
    } else {
        let system = SystemDisk::create(path, &Layout::for_image(manifest))?;
        ui.status("Created", &format!("system disk {shown} (slots a and b)"));
        system
    };
    let state = system
        .read_state()
        .with_context(|| format!("cannot read the update state of {shown}"))?;
    let found = system.find_slot_with(manifest);
    if let (Some(slot), Some(state)) = (found, &state) {
        let held = state.slot(slot).status;
        let why = match held {
            _ if slot == state.active => return Ok(system),
            // Built again after a deploy made the other slot active.
            SlotStatus::Good => Some(""),
            SlotStatus::Bad => Some(" (it failed its trial)"),
            SlotStatus::Trying => Some(" (on trial)"),
            // Installed by a run that was killed before it recorded it.
            SlotStatus::Empty | SlotStatus::Writing => None,
        };
        if let Some(why) = why {
            ui.note(&format!(
                "{} v{} is in slot {slot}{why}; booting as the update state says (active: slot {}, v{})",
                manifest.name,
                manifest.version,
                state.active,
                state.slot(state.active).version
            ));
            return Ok(system);
        }
    }
    let slot = match found {
        Some(slot) => slot,
        None => {
            let slot = state.as_ref().map_or(Slot::A, |s| s.active.other());
            if state
                .as_ref()
                .is_some_and(|s| s.slot(slot).status == SlotStatus::Trying)
            {
                ui.warn(&format!(
                    "slot {slot} held an update on trial; this build replaces it"
                ));
            }
            ui.status(
                "Installing",
                &format!(
                    "{} v{} into slot {slot} of {shown}",
                    manifest.name, manifest.version
                ),
            );
            let spinner = ui.spinner(&format!("writing slot {slot}"));
            let installed = system.install(slot, dir, manifest);
            spinner.finish();
            installed?;
            slot
        }
    };
    let mut state = match state {
        Some(mut state) => {
            state.active = slot;
            *state.slot_mut(slot) = SlotState {
                status: SlotStatus::Good,
                sequence: 0,
                version: manifest.version.clone(),
                tries: 0,
            };
            if let Some(last) = &mut state.last_update
                && last.slot == slot
                && last.result == UpdateResult::Pending
            {
                last.result = UpdateResult::RolledBack;
                last.reason = format!("replaced by a local build of {}", manifest.version);
            }
            state
        }
        None => State::new(slot, &manifest.version),
    };
    write_state(&system, &mut state)?;
    Ok(system)
}

/// The state, which [`prepare`] made sure exists.
fn read_state(system: &SystemDisk) -> anyhow::Result<State> {
    system
        .read_state()
        .with_context(|| format!("cannot read the update state of {}", system.path().display()))?
        .ok_or_else(|| {
            fail(
                Exit::Image,
                format!(
                    "{} holds no valid update state; remove it to start over (the /data volume is a separate file and is kept)",
                    system.path().display()
                ),
            )
        })
}

/// What to boot next: the slot, whether it is a trial, and its checked
/// metadata. A trial's try is used up (and written) before it boots, so a
/// trial that never reaches a verdict is rolled back on the next call. A
/// slot whose files do not match its metadata is never booted.
pub fn next_boot(system: &SystemDisk, ui: &Ui) -> anyhow::Result<(Boot, SlotMeta)> {
    loop {
        let mut state = read_state(system)?;
        let boot = choose_boot(&mut state, now_ms());
        let already_bad = state.slot(boot.slot).status == SlotStatus::Bad;
        write_state(system, &mut state)?;
        if let Some(reason) = &boot.rolled_back {
            ui.warn(&format!("update rolled back: {reason}"));
        }
        let err = match system.verify_slot(boot.slot) {
            Ok(meta) => return Ok((boot, meta)),
            Err(err) => err,
        };
        if boot.trial {
            host_rollback(
                system,
                boot.slot,
                &format!("its files do not verify: {err}"),
                "",
            )?;
        } else if !already_bad {
            // The active slot is damaged: mark it bad, which makes the
            // other slot active if it is good.
            ui.warn(&format!(
                "slot {} does not verify ({err}); trying the other slot",
                boot.slot
            ));
            let mut state = read_state(system)?;
            record_host_rollback(&mut state, boot.slot, &err.to_string(), now_ms());
            write_state(system, &mut state)?;
        } else {
            return Err(fail(
                Exit::Image,
                format!(
                    "cannot boot slot {} of {}: {err}; no slot is good: rebuild and run the image again, or remove the system disk to start over",
                    boot.slot,
                    system.path().display()
                ),
            ));
        }
    }
}

/// Records that a trial failed where only the host could see it (kernel
/// panic, QEMU failure, no verdict in time), with the console's last
/// lines for `nodeos status`; does nothing (false) when the guest already
/// recorded a verdict for the slot.
pub fn host_rollback(
    system: &SystemDisk,
    slot: Slot,
    reason: &str,
    console_tail: &str,
) -> anyhow::Result<bool> {
    let mut state = read_state(system)?;
    if state.slot(slot).status != SlotStatus::Trying {
        return Ok(false);
    }
    record_host_rollback(&mut state, slot, reason, now_ms());
    if !console_tail.is_empty() {
        system
            .write_log_tail(console_tail)
            .with_context(|| format!("cannot write to {}", system.path().display()))?;
    }
    write_state(system, &mut state)?;
    Ok(true)
}

fn write_state(system: &SystemDisk, state: &mut State) -> anyhow::Result<()> {
    system.write_state(state).with_context(|| {
        format!(
            "cannot write the update state of {}",
            system.path().display()
        )
    })
}

/// Milliseconds since the epoch by the host's clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
