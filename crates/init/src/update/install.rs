//! `POST /v1/update`: a signed bundle written into the slot that is not
//! booted.
//!
//! Everything that can be checked before a payload byte is written is: the
//! bundle's signature, appliance, sequence, version, length, and that each
//! artefact fits its partition and is either in the bundle or already in a
//! slot. Then, in order, each step synced before the next:
//!
//! 1. state: target `writing`, `max_sequence` raised (a failed bundle cannot
//!    be replayed either); the target's metadata area zeroed, so a
//!    half-written slot never reads as valid;
//! 2. each artefact streamed (or kept in place, or copied from the booted
//!    slot) into its partition, hashed on the way;
//! 3. the target's new [`SlotMeta`];
//! 4. state: target `trying` with one try, `last_update` pending;
//! 5. on a disk made by `nodeos export`, the target's kernel and trial boot
//!    entry on the ESP ([`super::esp`]), so that the firmware boots it next.
//!
//! A failure after step 1 sets the target back to `empty`. The partition
//! I/O goes through paths only ([`Shared::partitions`]), so the tests run it
//! on temporary files.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;

use nodeos_manifest::bundle::{
    PREFIX_LEN, SIGNATURE_LEN, Source, UpdateManifest, parse_prefix, signed_bytes,
};
use nodeos_manifest::console::UPDATE_ACCEPTED;
use nodeos_manifest::esp;
use nodeos_manifest::frame;
use nodeos_manifest::slots::{
    LastUpdate, Part, SLOT_META_LEN, Slot, SlotMeta, SlotState, SlotStatus, UpdateResult,
    partition_name, slot_cmdline,
};
use nodeos_manifest::update::{UpdateAccepted, to_hex};
use nodeos_manifest::{Artifact, Manifest};
use sha2::{Digest, Sha256};

use super::esp::Esp;
use super::{Shared, UpdateError, now_ms, read_slot_meta};
use crate::{log, say};

/// Largest piece read from the connection or a partition at once.
pub(crate) const CHUNK: usize = 64 << 10;
const MIB: u64 = 1 << 20;

/// An update being received. Only one exists at a time; dropping it lets
/// the next one in.
#[derive(Debug)]
pub(crate) struct Receiving<'a> {
    shared: &'a Shared,
}

impl<'a> Receiving<'a> {
    /// Refuses (`409 busy`) while another update is being received, after
    /// one was written this boot, and while this boot is a trial that has
    /// not been committed (on trial, or rolled back and about to reboot).
    pub fn begin(shared: &'a Shared) -> Result<Receiving<'a>, UpdateError> {
        if shared.receiving.swap(true, Ordering::SeqCst) {
            return Err(UpdateError::Busy(
                "another update is being received; try again when it is done".into(),
            ));
        }
        let receiving = Receiving { shared };
        if shared.accepted.load(Ordering::SeqCst) {
            return Err(UpdateError::Busy(
                "an update was already written; the appliance is rebooting into it".into(),
            ));
        }
        let booted = shared.store().state().slot(shared.slot).status;
        if shared.trial && booted != SlotStatus::Good {
            // Trying: no verdict yet. Bad: rolled back, rebooting into the
            // other slot, which must not be overwritten now.
            return Err(UpdateError::Busy(format!(
                "version {} is on trial ({}); try again once it is committed",
                shared.version,
                booted.as_str()
            )));
        }
        Ok(receiving)
    }
}

impl Drop for Receiving<'_> {
    fn drop(&mut self) {
        self.shared.receiving.store(false, Ordering::SeqCst);
    }
}

/// Reads the bundle from `body` (exactly `content_length` bytes) and
/// writes it into the other slot; see the module docs.
pub(crate) fn install(
    receiving: &Receiving<'_>,
    body: &mut impl Read,
    content_length: u64,
) -> Result<UpdateAccepted, UpdateError> {
    let shared = receiving.shared;
    let head = read_head(shared, body, content_length)?;
    let plan = plan(shared, head, content_length)?;
    let target = plan.target;
    shared
        .store()
        .update(|s| {
            *s.slot_mut(target) = SlotState {
                status: SlotStatus::Writing,
                sequence: plan.manifest.sequence,
                version: plan.manifest.image.version.clone(),
                tries: 0,
            };
            s.max_sequence = plan.manifest.sequence;
        })
        .map_err(UpdateError::io("cannot write the update state"))?;
    match write_slot(shared, &plan, body) {
        Ok(written) => Ok(UpdateAccepted {
            slot: target,
            version: plan.manifest.image.version.clone(),
            sequence: plan.manifest.sequence,
            written,
            rebooting: true,
        }),
        Err(e) => {
            let reason = e.to_string();
            if let Err(e) = shared.store().update(|s| {
                *s.slot_mut(target) = SlotState::default();
                // Step 5 fails after step 4 recorded the update.
                if let Some(last) = &mut s.last_update
                    && last.slot == target
                    && last.result == UpdateResult::Pending
                {
                    last.result = UpdateResult::RolledBack;
                    last.reason = reason.clone();
                    last.at_ms = now_ms();
                }
            }) {
                say!("warning: cannot mark slot {target} empty after a failed update: {e}");
            }
            Err(e)
        }
    }
}

/// The bundle's manifest, its signature checked.
struct Head {
    json_len: usize,
    manifest: UpdateManifest,
}

fn read_head(
    shared: &Shared,
    body: &mut impl Read,
    content_length: u64,
) -> Result<Head, UpdateError> {
    let receive = || UpdateError::io("cannot receive the bundle");
    let smallest = (PREFIX_LEN + SIGNATURE_LEN) as u64;
    if content_length <= smallest {
        return Err(UpdateError::BadRequest(format!(
            "a {content_length}-byte body is not an update bundle"
        )));
    }
    let mut prefix = [0; PREFIX_LEN];
    body.read_exact(&mut prefix).map_err(receive())?;
    let json_len = parse_prefix(&prefix).map_err(|e| UpdateError::BadRequest(e.to_string()))?;
    if smallest + json_len as u64 > content_length {
        return Err(UpdateError::BadRequest(format!(
            "the bundle's manifest ({json_len} bytes) does not fit in a {content_length}-byte body"
        )));
    }
    let mut json = vec![0; json_len];
    body.read_exact(&mut json).map_err(receive())?;
    let mut signature = [0; SIGNATURE_LEN];
    body.read_exact(&mut signature).map_err(receive())?;
    let ours = shared.verifier.key_id();
    if !shared.verifier.verifies(&signed_bytes(&json), &signature) {
        // Name the key the bundle claims, when it says one, to help.
        #[derive(serde::Deserialize)]
        struct KeyId {
            key_id: String,
        }
        return Err(match serde_json::from_slice::<KeyId>(&json) {
            Ok(KeyId { key_id }) if key_id != ours => UpdateError::WrongKey {
                theirs: key_id,
                ours: ours.to_owned(),
            },
            _ => UpdateError::BadSignature {
                key_id: ours.to_owned(),
            },
        });
    }
    let manifest =
        UpdateManifest::from_json(&json).map_err(|e| UpdateError::BadRequest(e.to_string()))?;
    Ok(Head { json_len, manifest })
}

/// What to write where, all checked.
struct Plan {
    manifest: UpdateManifest,
    target: Slot,
    steps: Vec<Step>,
    /// The target's new metadata, framed.
    meta: Vec<u8>,
}

/// One artefact of the new version.
struct Step {
    artifact: String,
    part: Part,
    size: u64,
    sha256: String,
    how: How,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    /// From the bundle's payload.
    Bundle,
    /// The target partition already holds it.
    Keep,
    /// From the booted slot's partition.
    Copy,
}

fn plan(shared: &Shared, head: Head, content_length: u64) -> Result<Plan, UpdateError> {
    let manifest = head.manifest;
    if manifest.appliance != shared.appliance {
        return Err(UpdateError::WrongAppliance {
            bundle: manifest.appliance,
            running: shared.appliance.clone(),
        });
    }
    let state = shared.store().state().clone();
    if manifest.sequence <= state.max_sequence {
        return Err(UpdateError::NotNewer {
            sequence: manifest.sequence,
            max_sequence: state.max_sequence,
        });
    }
    if !manifest.downgrade && version_lower(&manifest.image.version, &shared.version) {
        return Err(UpdateError::Downgrade {
            from: shared.version.clone(),
            to: manifest.image.version.clone(),
        });
    }
    let expected = manifest.bundle_len(head.json_len);
    if content_length != expected {
        return Err(UpdateError::BadRequest(format!(
            "the body is {content_length} bytes, but the bundle's manifest makes it {expected}"
        )));
    }
    let target = shared.slot.other();
    let committed = state.slot(target);
    if state.active == target && committed.status == SlotStatus::Good {
        return Err(UpdateError::Busy(format!(
            "slot {target} holds the committed version {}, but slot {} was booted; restart the appliance first",
            committed.version, shared.slot
        )));
    }
    let old = read_slot_meta(shared.partitions.part(Part::Boot, target)).ok();
    let mut steps = Vec::new();
    for entry in &manifest.payload {
        let key = &entry.artifact;
        let (part, artifact) = Part::ALL
            .into_iter()
            .find(|&p| role(&manifest.image, p) == key)
            .zip(manifest.artifact(key))
            .ok_or_else(|| {
                UpdateError::BadRequest(format!(
                    "the bundle's payload names {key:?}, not an artefact that boots"
                ))
            })?;
        if steps.iter().any(|s: &Step| s.part == part) {
            return Err(UpdateError::BadRequest(format!(
                "the bundle's payload names the {} twice",
                part.as_str()
            )));
        }
        let room = room(shared, part, target)?;
        if artifact.size > room {
            return Err(UpdateError::TooLarge {
                artifact: key.clone(),
                size: artifact.size,
                partition: partition_name(part, target),
                room,
            });
        }
        let how = match entry.source {
            Source::Bundle => How::Bundle,
            Source::Slot if holds(old.as_ref(), part, artifact) => How::Keep,
            Source::Slot if holds(Some(&shared.booted), part, artifact) => How::Copy,
            Source::Slot => {
                return Err(UpdateError::MissingArtifact {
                    artifact: key.clone(),
                    sha256: artifact.sha256.clone(),
                });
            }
        };
        steps.push(Step {
            artifact: key.clone(),
            part,
            size: artifact.size,
            sha256: artifact.sha256.clone(),
            how,
        });
    }
    let meta = SlotMeta {
        sequence: manifest.sequence,
        installed_by: "update".into(),
        image: manifest.image.clone(),
    };
    // SlotMeta::encode asserts the size; refuse instead.
    let meta_len = serde_json::to_vec(&meta).map_or(usize::MAX, |j| j.len()) + frame::OVERHEAD;
    if meta_len > SLOT_META_LEN {
        return Err(UpdateError::BadRequest(format!(
            "the image manifest is too large for the slot's metadata area ({meta_len} bytes, at most {SLOT_META_LEN})"
        )));
    }
    Ok(Plan {
        target,
        steps,
        meta: meta.encode(),
        manifest,
    })
}

/// The artefact key that plays `part` in `image`.
fn role(image: &Manifest, part: Part) -> &str {
    match part {
        Part::Boot => &image.kernel.artifact,
        Part::Runtime => &image.layers.runtime,
        Part::App => &image.layers.app,
    }
}

/// Whether the slot described by `meta` holds `artifact` as its `part`.
fn holds(meta: Option<&SlotMeta>, part: Part, artifact: &Artifact) -> bool {
    meta.and_then(|m| m.image.artifacts.get(role(&m.image, part)))
        .is_some_and(|a| a.size == artifact.size && a.sha256.eq_ignore_ascii_case(&artifact.sha256))
}

/// Where `part`'s artefact starts in its partition.
fn offset(part: Part) -> u64 {
    match part {
        Part::Boot => SLOT_META_LEN as u64,
        Part::Runtime | Part::App => 0,
    }
}

/// Bytes an artefact may take in `part` of `slot` (the partition's size,
/// less the metadata area of a boot partition).
fn room(shared: &Shared, part: Part, slot: Slot) -> Result<u64, UpdateError> {
    let path = shared.partitions.part(part, slot);
    let size = File::open(path)
        .and_then(|mut f| f.seek(SeekFrom::End(0)))
        .map_err(UpdateError::io(format!(
            "cannot tell the size of {}",
            partition_name(part, slot)
        )))?;
    Ok(size.saturating_sub(offset(part)))
}

/// Opens a partition of the slot being written. The booted slot is never
/// opened for writing: that would break the running system.
fn open_target(shared: &Shared, part: Part, slot: Slot) -> Result<File, UpdateError> {
    assert_ne!(
        slot, shared.slot,
        "the update agent never writes the booted slot"
    );
    OpenOptions::new()
        .write(true)
        .open(shared.partitions.part(part, slot))
        .map_err(UpdateError::io(format!(
            "cannot open {} for writing",
            partition_name(part, slot)
        )))
}

/// Steps 1 (after the state) to 3; the bytes written.
fn write_slot(shared: &Shared, plan: &Plan, body: &mut impl Read) -> Result<u64, UpdateError> {
    let target = plan.target;
    let boot_name = partition_name(Part::Boot, target);
    let boot = open_target(shared, Part::Boot, target)?;
    boot.write_all_at(&vec![0; SLOT_META_LEN], 0)
        .and_then(|()| boot.sync_data())
        .map_err(UpdateError::io(format!(
            "cannot clear the metadata of {boot_name}"
        )))?;
    let m = &plan.manifest;
    log::marker(&format!(
        "{UPDATE_ACCEPTED}: {} {} (sequence {}) into slot {target}",
        m.appliance, m.image.version, m.sequence
    ));

    let mut written = 0;
    for step in &plan.steps {
        let name = partition_name(step.part, target);
        let file = match step.how {
            How::Keep => {
                say!("update: slot {target}: {} kept in place", step.artifact);
                continue;
            }
            How::Bundle => {
                let file = open_target(shared, step.part, target)?;
                let sha256 = copy(body, "the bundle", &file, &name, step, target)?;
                check(step, &sha256)?;
                file
            }
            How::Copy => {
                let from = partition_name(step.part, shared.slot);
                let mut source = File::open(shared.partitions.part(step.part, shared.slot))
                    .and_then(|mut f| f.seek(SeekFrom::Start(offset(step.part))).map(|_| f))
                    .map_err(UpdateError::io(format!("cannot read {from}")))?;
                let file = open_target(shared, step.part, target)?;
                let sha256 = copy(&mut source, &from, &file, &name, step, target)?;
                check(step, &sha256)?;
                file
            }
        };
        file.sync_data()
            .map_err(UpdateError::io(format!("cannot sync {name}")))?;
        written += step.size;
    }

    boot.write_all_at(&plan.meta, 0)
        .and_then(|()| boot.sync_data())
        .map_err(UpdateError::io(format!(
            "cannot write the metadata of {boot_name}"
        )))?;
    shared
        .store()
        .update(|s| {
            let slot = s.slot_mut(target);
            slot.status = SlotStatus::Trying;
            slot.tries = 1;
            s.last_update = Some(LastUpdate {
                sequence: m.sequence,
                from: shared.version.clone(),
                to: m.image.version.clone(),
                slot: target,
                result: UpdateResult::Pending,
                reason: String::new(),
                at_ms: now_ms(),
            });
        })
        .map_err(UpdateError::io("cannot write the update state"))?;
    if let Some(esp) = &shared.esp {
        stage_boot_entry(shared, esp, plan)?;
    }
    shared.accepted.store(true, Ordering::SeqCst);
    say!(
        "update written: {} {} into slot {target} ({written} bytes); it boots next, as a trial",
        m.appliance,
        m.image.version
    );
    Ok(written)
}

/// Step 5 on a disk with an ESP: the new slot's kernel and its trial
/// entry, so that the firmware's loader boots it next, once. A failure
/// fails the update (the target goes back to `empty`): no entry would boot
/// it.
fn stage_boot_entry(shared: &Shared, esp: &Esp, plan: &Plan) -> Result<(), UpdateError> {
    let target = plan.target;
    let image = &plan.manifest.image;
    let what = format!("cannot write the boot entry of slot {target}");
    let kernel_size = image
        .artifacts
        .get(&image.kernel.artifact)
        .map(|a| a.size)
        .ok_or_else(|| {
            UpdateError::io(what.clone())(io::Error::other(format!(
                "the update lists no kernel artefact `{}`",
                image.kernel.artifact
            )))
        })?;
    let boot = shared.partitions.part(Part::Boot, target);
    File::open(boot)
        .and_then(|mut f| f.seek(SeekFrom::Start(SLOT_META_LEN as u64)).map(|_| f))
        .and_then(|f| {
            let title = format!("{} {} (slot {target})", image.name, image.version);
            let cmdline = slot_cmdline(&image.kernel.cmdline, target);
            let entry = esp::entry(&title, plan.manifest.sequence, target, &cmdline);
            esp.stage_trial(target, &mut f.take(kernel_size), &entry)
        })
        .map_err(UpdateError::io(what))
}

/// Copies `step.size` bytes from `from` into `to` at the artefact's
/// offset, printing a line per MiB; the sha256 of what was copied.
fn copy(
    from: &mut impl Read,
    from_name: &str,
    to: &File,
    to_name: &str,
    step: &Step,
    target: Slot,
) -> Result<String, UpdateError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0; CHUNK];
    let base = offset(step.part);
    let total_mib = step.size.div_ceil(MIB);
    let mut done = 0;
    while done < step.size {
        // Whole chunks: fewer, aligned writes to the block device.
        let want = (step.size - done).min(CHUNK as u64) as usize;
        let mut filled = 0;
        while filled < want {
            match from.read(&mut buf[filled..want]) {
                Ok(0) => {
                    return Err(UpdateError::Io {
                        what: format!(
                            "{from_name} ended after {} of the {} bytes of {}",
                            done + filled as u64,
                            step.size,
                            step.artifact
                        ),
                        source: io::ErrorKind::UnexpectedEof.into(),
                    });
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(UpdateError::io(format!("cannot read {from_name}"))(e)),
            }
        }
        to.write_all_at(&buf[..want], base + done)
            .map_err(UpdateError::io(format!("cannot write {to_name}")))?;
        hasher.update(&buf[..want]);
        let before = done / MIB;
        done += want as u64;
        if done / MIB > before {
            say!(
                "update: slot {target}: {} {}/{total_mib} MiB written",
                step.artifact,
                done / MIB
            );
        }
    }
    Ok(to_hex(&hasher.finalize()))
}

fn check(step: &Step, actual: &str) -> Result<(), UpdateError> {
    if actual.eq_ignore_ascii_case(&step.sha256) {
        Ok(())
    } else {
        Err(UpdateError::HashMismatch {
            artifact: step.artifact.clone(),
            expected: step.sha256.clone(),
            actual: actual.to_owned(),
        })
    }
}

/// Whether `new` is a lower `major.minor.patch` than `running`; false when
/// either does not parse (pre-release and build suffixes are ignored).
fn version_lower(new: &str, running: &str) -> bool {
    fn numeric(version: &str) -> Option<(u64, u64, u64)> {
        let core = version
            .trim()
            .trim_start_matches('v')
            .split(['-', '+'])
            .next()?;
        let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
        let triple = (parts.next()??, parts.next()??, parts.next()??);
        parts.next().is_none().then_some(triple)
    }
    matches!((numeric(new), numeric(running)), (Some(a), Some(b)) if a < b)
}

#[cfg(test)]
mod tests {
    use nodeos_manifest::bundle::Source::{Bundle, Slot as InSlot};
    use nodeos_manifest::slots::Slot;

    use super::*;
    use crate::update::testing::{Fixture, Image};

    fn run(shared: &Shared, bundle: &[u8]) -> Result<UpdateAccepted, UpdateError> {
        let receiving = Receiving::begin(shared)?;
        install(&receiving, &mut &bundle[..], bundle.len() as u64)
    }

    #[test]
    fn a_full_bundle_is_written_into_the_other_slot() {
        let v1 = Image::new("1.0.0", 1);
        let fx = Fixture::new(&v1);
        let shared = fx.shared();
        let before = fx.booted_bytes();
        let v2 = Image::new("1.0.1", 2);
        let bundle = fx.bundle(&v2, 10, [Bundle; 3]);
        let accepted = run(&shared, &bundle).unwrap();
        assert_eq!(accepted.slot, Slot::B);
        assert_eq!(accepted.version, "1.0.1");
        assert_eq!(accepted.written, v2.total_size());
        let state = shared.store().state().clone();
        assert_eq!(state.b.status, SlotStatus::Trying);
        assert_eq!(
            (state.b.tries, state.b.sequence, state.max_sequence),
            (1, 10, 10)
        );
        let last = state.last_update.unwrap();
        assert_eq!((last.from.as_str(), last.to.as_str()), ("1.0.0", "1.0.1"));
        assert_eq!(last.result, UpdateResult::Pending);
        assert_eq!(fx.slot_image_bytes(Slot::B, &v2), v2.parts());
        let meta = read_slot_meta(&fx.path(Part::Boot, Slot::B)).unwrap();
        assert_eq!((meta.sequence, meta.installed_by.as_str()), (10, "update"));
        assert_eq!(meta.image, v2.manifest);
        assert_eq!(fx.booted_bytes(), before, "the booted slot is untouched");
        // The state on disk says the same.
        let reopened = super::super::StateStore::open(shared.partitions.state()).unwrap();
        assert_eq!(reopened.state().b.status, SlotStatus::Trying);
        // One update per boot.
        let again = run(
            &shared,
            &fx.bundle(&Image::new("1.0.2", 3), 11, [Bundle; 3]),
        );
        assert_eq!(again.unwrap_err().code(), "busy");
    }

    #[test]
    fn a_trial_is_booted_once_and_a_boot_of_the_old_slot_rolls_it_back() {
        let fx = Fixture::new(&Image::new("1.0.0", 1));
        let shared = fx.shared();
        let v2 = Image::new("1.0.1", 2);
        run(&shared, &fx.bundle(&v2, 10, [Bundle; 3])).unwrap();
        drop(shared);
        // The loader booted the trial: init sees it on trial.
        let trial = fx.shared_in(Slot::B);
        assert!(trial.trial);
        assert_eq!(trial.store().state().b.status, SlotStatus::Trying);
        drop(trial);
        // The trial ended with no verdict and the loader booted slot a.
        let old = fx.shared();
        assert!(!old.trial);
        let state = old.store().state().clone();
        assert_eq!((state.active, state.b.status), (Slot::A, SlotStatus::Bad));
        let last = state.last_update.unwrap();
        assert_eq!(last.result, UpdateResult::RolledBack);
        assert_eq!(last.reason, nodeos_manifest::slots::NO_VERDICT);
        drop(old);
        // A stale entry booting the bad slot gets no agent: it would write
        // the active slot.
        let stale = fx.open_in(Slot::B).unwrap_err();
        assert!(
            matches!(
                stale,
                UpdateError::NotActive {
                    booted: Slot::B,
                    active: Slot::A
                }
            ),
            "{stale}"
        );
    }

    #[test]
    fn a_corrupted_payload_byte_leaves_the_target_empty() {
        let fx = Fixture::new(&Image::new("1.0.0", 1));
        let shared = fx.shared();
        let before = fx.booted_bytes();
        let v2 = Image::new("1.0.1", 2);
        let mut bundle = fx.bundle(&v2, 10, [Bundle; 3]);
        let at = bundle.len() - v2.app.len() / 2;
        bundle[at] ^= 1;
        let err = run(&shared, &bundle).unwrap_err();
        assert_eq!((err.status(), err.code()), (422, "hash_mismatch"));
        assert!(err.to_string().starts_with("app does not match"), "{err}");
        let state = shared.store().state().clone();
        assert_eq!(state.b, SlotState::default());
        assert_eq!(state.max_sequence, 10, "a failed bundle cannot be replayed");
        assert!(read_slot_meta(&fx.path(Part::Boot, Slot::B)).is_err());
        assert_eq!(fx.booted_bytes(), before, "the booted slot is untouched");
        // The same bundle again (fixed) is now a replay.
        let bundle = fx.bundle(&v2, 10, [Bundle; 3]);
        assert_eq!(run(&shared, &bundle).unwrap_err().code(), "not_newer");
    }

    #[test]
    fn slot_artefacts_are_kept_in_place_or_copied_from_the_booted_slot() {
        let v1 = Image::new("1.0.0", 1);
        let fx = Fixture::new(&v1);
        // Slot B already holds v1's runtime (an earlier update) but not its kernel.
        let mut old_b = Image::new("0.9.0", 9);
        old_b.set_runtime(v1.runtime.clone());
        fx.install_raw(Slot::B, &old_b);
        let shared = fx.shared();
        let mut v2 = Image::new("1.0.1", 2);
        v2.set_kernel(v1.kernel.clone());
        v2.set_runtime(v1.runtime.clone());
        let runtime_b = fx.path(Part::Runtime, Slot::B);
        let mtime = std::fs::metadata(&runtime_b).unwrap().modified().unwrap();
        let bundle = fx.bundle(&v2, 10, [InSlot, InSlot, Bundle]);
        let accepted = run(&shared, &bundle).unwrap();
        assert_eq!(
            accepted.written,
            (v2.kernel.len() + v2.app.len()) as u64,
            "the runtime was kept, the kernel copied"
        );
        assert_eq!(fx.slot_image_bytes(Slot::B, &v2), v2.parts());
        assert_eq!(
            std::fs::metadata(&runtime_b).unwrap().modified().unwrap(),
            mtime
        );
    }

    #[test]
    fn an_artefact_in_no_slot_is_refused_before_anything_is_written() {
        let fx = Fixture::new(&Image::new("1.0.0", 1));
        let shared = fx.shared();
        let v2 = Image::new("1.0.1", 2);
        let err = run(&shared, &fx.bundle(&v2, 10, [InSlot, Bundle, Bundle])).unwrap_err();
        assert_eq!((err.status(), err.code()), (422, "missing_artifact"));
        assert_eq!(shared.store().state().max_sequence, 0);
    }

    #[test]
    fn a_replay_is_refused_before_anything_is_written() {
        let fx = Fixture::new(&Image::new("1.0.0", 1));
        let shared = fx.shared();
        shared.store().update(|s| s.max_sequence = 10).unwrap();
        let target_before = fx.slot_bytes(Slot::B);
        let seq = shared.store().state().seq;
        for sequence in [5, 10] {
            let bundle = fx.bundle(&Image::new("1.0.1", 2), sequence, [Bundle; 3]);
            let err = run(&shared, &bundle).unwrap_err();
            assert_eq!((err.status(), err.code()), (409, "not_newer"));
            assert!(
                err.to_string()
                    .contains(&format!("sequence {sequence} is not above 10")),
                "{err}"
            );
        }
        assert_eq!(shared.store().state().seq, seq, "the state was not written");
        assert_eq!(fx.slot_bytes(Slot::B), target_before);
    }

    #[test]
    fn too_large_an_artefact_is_refused() {
        let fx = Fixture::new(&Image::new("1.0.0", 1));
        let shared = fx.shared();
        let mut v2 = Image::new("1.0.1", 2);
        v2.set_app(vec![7; (Fixture::APP_LEN + 1) as usize]);
        let err = run(&shared, &fx.bundle(&v2, 10, [Bundle; 3])).unwrap_err();
        assert_eq!((err.status(), err.code()), (413, "too_large"));
        assert!(err.to_string().contains("nodeos-app-b"), "{err}");
        assert_eq!(shared.store().state().max_sequence, 0);
    }

    #[test]
    fn other_refusals() {
        let fx = Fixture::new(&Image::new("1.0.0", 1));
        let shared = fx.shared();
        let v2 = Image::new("1.0.1", 2);

        let mut bundle = fx.bundle(&v2, 10, [Bundle; 3]);
        let err = run(
            &shared,
            &fx.bundle_for("other", &v2, 10, [Bundle; 3], false),
        )
        .unwrap_err();
        assert_eq!((err.status(), err.code()), (400, "wrong_appliance"));

        let old = Image::new("0.9.9", 3);
        let err = run(&shared, &fx.bundle(&old, 10, [Bundle; 3])).unwrap_err();
        assert_eq!((err.status(), err.code()), (409, "downgrade"));
        let downgrade = fx.bundle_for("hello", &old, 10, [Bundle; 3], true);
        assert!(run(&Fixture::new(&Image::new("1.0.0", 1)).shared(), &downgrade).is_ok());

        let signed_by_other = fx.bundle_signed(&[9; 32], &v2, 10);
        let err = run(&shared, &signed_by_other).unwrap_err();
        assert_eq!((err.status(), err.code()), (403, "wrong_key"));

        let at = PREFIX_LEN + 10;
        bundle[at] ^= 1;
        let err = run(&shared, &bundle).unwrap_err();
        assert_eq!((err.status(), err.code()), (403, "bad_signature"));

        let bundle = fx.bundle(&v2, 10, [Bundle; 3]);
        let receiving = Receiving::begin(&shared).unwrap();
        let err = install(&receiving, &mut &bundle[..], bundle.len() as u64 + 1).unwrap_err();
        assert_eq!((err.status(), err.code()), (400, "bad_request"));
        assert_eq!(Receiving::begin(&shared).unwrap_err().code(), "busy");
        drop(receiving);

        let err = run(
            &shared,
            b"GET / HTTP/1.1\r\n\r\nnot a bundle at all, but long enough to try",
        )
        .unwrap_err();
        assert_eq!((err.status(), err.code()), (400, "bad_request"));
        assert_eq!(shared.store().state().max_sequence, 0);
    }

    #[test]
    fn a_trial_in_progress_refuses_updates() {
        let fx = Fixture::new(&Image::new("1.0.0", 1));
        let shared = fx.shared();
        shared
            .store()
            .update(|s| s.a.status = SlotStatus::Trying)
            .unwrap();
        let trial = fx.shared();
        assert!(trial.trial);
        let err = Receiving::begin(&trial).unwrap_err();
        assert_eq!((err.status(), err.code()), (409, "busy"));
        // Once committed, updates are taken again.
        trial
            .store()
            .update(|s| s.a.status = SlotStatus::Good)
            .unwrap();
        assert!(Receiving::begin(&trial).is_ok());
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(version_lower("1.0.9", "1.0.10"));
        assert!(version_lower("0.9.0", "1.0.0"));
        assert!(!version_lower("1.0.0", "1.0.0"));
        assert!(!version_lower("1.0.0-beta.1", "1.0.0"));
        assert!(!version_lower("2.0.0", "1.9.9"));
        assert!(!version_lower("banana", "1.0.0"));
        assert!(!version_lower("1.0", "1.0.0"));
    }
}
