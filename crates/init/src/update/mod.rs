//! Signed A/B updates inside the guest: the update agent.
//!
//! The agent is a thread of PID 1 listening on `update.port`. It answers
//! only requests signed with the running image's update key (every request
//! carries an `Authorization: Nodeos-Ed25519 …` header, checked before any
//! body byte is read), reports the appliance's status and writes a signed
//! update bundle into the slot that is *not* booted. It never opens the
//! booted slot's partitions for writing.
//!
//! * [`Partitions`] finds the system disk's partitions by GPT name in sysfs.
//! * [`StateStore`] reads and writes the update state record (shared with
//!   the supervisor, which commits or rolls back a trial).
//! * [`open`] reads what the booted slot holds into [`Shared`];
//!   [`start_agent`] starts the listener.
//!
//! The wire protocol is in `docs/design/deploy.md` (c); the types it carries
//! are in [`nodeos_manifest::update`] and [`nodeos_manifest::bundle`].

mod agent;
mod auth;
pub mod esp;
mod http;
mod install;
mod metrics;
mod observe;
mod partitions;
mod status;
mod store;
#[cfg(test)]
mod testing;

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, MutexGuard};

use nodeos_manifest::slots::{NO_VERDICT, Part, SLOT_META_LEN, Slot, SlotMeta, SlotStatus};
use nodeos_manifest::update::{
    AppStatus, LOGS_PATH, METRICS_PATH, PAGE_PATH, PROFILE_PATH, PublicKey, STATUS_PATH,
    UPDATE_PATH,
};

pub use agent::start_agent;
pub use partitions::Partitions;
pub(crate) use partitions::parse_uevent;
pub use store::StateStore;

/// What the agent and the supervisor share.
pub struct Shared {
    /// The running image's name (its `SlotMeta.image.name`).
    pub appliance: String,
    /// The running image's version.
    pub version: String,
    /// The booted slot.
    pub slot: Slot,
    /// The booted slot's status was `Trying` at boot: this boot is a trial.
    pub trial: bool,
    /// The running image's update key.
    pub key: PublicKey,
    pub partitions: Partitions,
    /// The ESP of a disk made by `nodeos export`, mirrored on every change.
    pub esp: Option<esp::Esp>,
    pub store: Mutex<StateStore>,
    /// The app process as the supervisor sees it (the supervisor keeps it current).
    pub app: Mutex<AppStatus>,
    /// How the health check went on this boot (the health check writes it).
    pub health: Mutex<Option<String>>,
    verifier: auth::Verifier,
    /// What the booted slot holds (its metadata never changes while it runs).
    booted: SlotMeta,
    /// An update is being received.
    receiving: AtomicBool,
    /// An update was written this boot; the next one waits for the reboot.
    accepted: AtomicBool,
}

impl Shared {
    /// The state store, even if a thread panicked while holding it.
    pub fn store(&self) -> MutexGuard<'_, StateStore> {
        lock(&self.store)
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("appliance", &self.appliance)
            .field("version", &self.version)
            .field("slot", &self.slot)
            .field("trial", &self.trial)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Reads the booted slot's metadata and the update state, ends a trial the
/// firmware gave up on ([`end_unfinished_trial`]) and deletes a rolled-back
/// slot's boot entry; refuses a boot of a slot that is neither active nor
/// on trial (a stale boot entry). `slot` is the
/// booted slot (`nodeos.slot=` on the kernel command line), `key` the
/// running image's update key; `sys_root` and `dev_root` are `/sys` and
/// `/dev` (a fake tree in tests).
pub fn open(
    slot: Slot,
    key: PublicKey,
    sys_root: &Path,
    dev_root: &Path,
) -> Result<Shared, UpdateError> {
    let partitions = Partitions::find(sys_root, dev_root).map_err(UpdateError::Partitions)?;
    let mut store = StateStore::open(partitions.state())?;
    let booted = read_slot_meta(partitions.part(Part::Boot, slot))
        .map_err(|problem| UpdateError::BootedMeta { slot, problem })?;
    let verifier = auth::Verifier::new(&key).ok_or(UpdateError::Key { key })?;
    let trial = store.state().slot(slot).status == SlotStatus::Trying;
    let esp = esp::Esp::find(&partitions);
    end_unfinished_trial(&mut store, slot, esp.as_ref());
    let state = store.state();
    if let Some(esp) = &esp
        && state.slot(slot.other()).status == SlotStatus::Bad
        && let Err(e) = esp.remove(slot.other())
    {
        // A rollback `nodeos run` recorded leaves the entry behind.
        crate::say!(
            "warning: cannot remove slot {}'s boot entry: {e}",
            slot.other()
        );
    }
    if state.active != slot && !trial {
        // Only a stale boot entry gets here; the agent writes the slot not
        // booted, which is the active one.
        return Err(UpdateError::NotActive {
            booted: slot,
            active: state.active,
        });
    }
    Ok(Shared {
        appliance: booted.image.name.clone(),
        version: booted.image.version.clone(),
        slot,
        trial,
        key,
        partitions,
        esp,
        store: Mutex::new(store),
        app: Mutex::default(),
        health: Mutex::new(None),
        verifier,
        booted,
        receiving: AtomicBool::new(false),
        accepted: AtomicBool::new(false),
    })
}

/// The active slot was booted while the other was on trial: the trial
/// ended without a verdict (its boot panicked or hung and was reset, and
/// the firmware's loader, finding no try left, booted the active slot), so
/// it is rolled back, as `nodeos run` does before such a boot.
fn end_unfinished_trial(store: &mut StateStore, booted: Slot, esp: Option<&esp::Esp>) {
    let state = store.state();
    let other = booted.other();
    if state.active != booted || state.slot(other).status != SlotStatus::Trying {
        return;
    }
    let version = state.slot(other).version.clone();
    crate::log::marker(&format!(
        "{}: {NO_VERDICT} (slot {other}, {version})",
        nodeos_manifest::console::UPDATE_ROLLED_BACK
    ));
    if let Err(e) = store.update(|state| state.roll_back(other, NO_VERDICT, now_ms())) {
        crate::say!("error: cannot record the rollback of slot {other}: {e}");
    }
    if let Some(esp) = esp
        && let Err(e) = esp.remove(other)
    {
        crate::say!("warning: cannot remove slot {other}'s boot entry: {e}");
    }
}

/// Why the agent cannot start, or why it refused a request. [`UpdateError::status`]
/// and [`UpdateError::code`] give the HTTP answer; the message is its `reason`.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("cannot find the system disk's partitions")]
    Partitions(#[source] io::Error),
    #[error("cannot read the update state on {path}")]
    StateRead {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "neither copy of the update state on {path} is valid (the system disk is not set up by `nodeos run`)"
    )]
    NoState { path: PathBuf },
    #[error("cannot tell what the booted slot {slot} holds: {problem}")]
    BootedMeta { slot: Slot, problem: String },
    #[error(
        "slot {booted} was booted, but slot {active} is the active one and {booted} is not on trial; reboot the appliance"
    )]
    NotActive { booted: Slot, active: Slot },
    #[error("the update key {key} is not a valid ed25519 public key")]
    Key { key: PublicKey },

    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("signed with key {theirs}, but this appliance trusts only key {ours}")]
    WrongKey { theirs: String, ours: String },
    #[error("the request was replayed: nonce {nonce} was used before")]
    Replayed { nonce: String },
    #[error(
        "no such path {path}: the agent serves {STATUS_PATH}, {LOGS_PATH}, {METRICS_PATH}, {PAGE_PATH} (the status page), {PROFILE_PATH} and {UPDATE_PATH}"
    )]
    NotFound { path: String },
    #[error("a read token cannot {what}: sign the request with the update key")]
    ReadOnly { what: &'static str },
    #[error("{0}")]
    Unavailable(String),
    #[error("{path} does not take {method}")]
    MethodNotAllowed { method: String, path: String },
    #[error("an update needs a Content-Length header")]
    LengthRequired,
    #[error("{0}")]
    Busy(String),
    #[error("the bundle's signature does not verify with this appliance's key {key_id}")]
    BadSignature { key_id: String },
    #[error("the bundle is for appliance {bundle:?}, this appliance runs {running:?}")]
    WrongAppliance { bundle: String, running: String },
    #[error(
        "the bundle's sequence {sequence} is not above {max_sequence}, the highest this appliance accepted (an old or replayed bundle)"
    )]
    NotNewer { sequence: u64, max_sequence: u64 },
    #[error(
        "version {to} is lower than the running {from}; sign the bundle with downgrade allowed (`nodeos deploy --allow-downgrade`) to go back"
    )]
    Downgrade { from: String, to: String },
    #[error("{artifact} is {size} bytes, but partition {partition} holds only {room}")]
    TooLarge {
        artifact: String,
        size: u64,
        partition: String,
        room: u64,
    },
    #[error(
        "{artifact} (sha256 {sha256}) is not in the bundle and neither slot holds it; deploy again with it in the bundle"
    )]
    MissingArtifact { artifact: String, sha256: String },
    #[error("{artifact} does not match the signed manifest: sha256 {actual}, expected {expected}")]
    HashMismatch {
        artifact: String,
        expected: String,
        actual: String,
    },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

impl UpdateError {
    /// The HTTP status of the answer.
    pub fn status(&self) -> u16 {
        match self {
            UpdateError::BadRequest(_) | UpdateError::WrongAppliance { .. } => 400,
            UpdateError::Unauthorized(_) | UpdateError::Replayed { .. } => 401,
            UpdateError::WrongKey { .. }
            | UpdateError::BadSignature { .. }
            | UpdateError::ReadOnly { .. } => 403,
            UpdateError::NotFound { .. } => 404,
            UpdateError::MethodNotAllowed { .. } => 405,
            UpdateError::LengthRequired => 411,
            UpdateError::Busy(_) | UpdateError::NotNewer { .. } | UpdateError::Downgrade { .. } => {
                409
            }
            UpdateError::TooLarge { .. } => 413,
            UpdateError::MissingArtifact { .. } | UpdateError::HashMismatch { .. } => 422,
            UpdateError::Partitions(_)
            | UpdateError::StateRead { .. }
            | UpdateError::NoState { .. }
            | UpdateError::BootedMeta { .. }
            | UpdateError::NotActive { .. }
            | UpdateError::Key { .. }
            | UpdateError::Io { .. } => 500,
            UpdateError::Unavailable(_) => 503,
        }
    }

    /// The short code of the answer's `error` field.
    pub fn code(&self) -> &'static str {
        match self {
            UpdateError::BadRequest(_) => "bad_request",
            UpdateError::Unauthorized(_) => "unauthorized",
            UpdateError::WrongKey { .. } => "wrong_key",
            UpdateError::Replayed { .. } => "replayed",
            UpdateError::NotFound { .. } => "not_found",
            UpdateError::ReadOnly { .. } => "read_only",
            UpdateError::Unavailable(_) => "unavailable",
            UpdateError::MethodNotAllowed { .. } => "method_not_allowed",
            UpdateError::LengthRequired => "length_required",
            UpdateError::Busy(_) => "busy",
            UpdateError::BadSignature { .. } => "bad_signature",
            UpdateError::WrongAppliance { .. } => "wrong_appliance",
            UpdateError::NotNewer { .. } => "not_newer",
            UpdateError::Downgrade { .. } => "downgrade",
            UpdateError::TooLarge { .. } => "too_large",
            UpdateError::MissingArtifact { .. } => "missing_artifact",
            UpdateError::HashMismatch { .. } => "hash_mismatch",
            UpdateError::Partitions(_)
            | UpdateError::StateRead { .. }
            | UpdateError::NoState { .. }
            | UpdateError::BootedMeta { .. }
            | UpdateError::NotActive { .. }
            | UpdateError::Key { .. }
            | UpdateError::Io { .. } => "io",
        }
    }

    fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> UpdateError {
        let what = what.into();
        move |source| UpdateError::Io { what, source }
    }
}

/// Locks `mutex` even if a thread panicked while holding it: the agent's
/// data stays usable after a connection thread's bug.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The metadata at the start of a boot partition, or why there is none.
pub(crate) fn read_slot_meta(boot_partition: &Path) -> Result<SlotMeta, String> {
    let mut area = Vec::with_capacity(SLOT_META_LEN);
    File::open(boot_partition)
        .and_then(|f| f.take(SLOT_META_LEN as u64).read_to_end(&mut area))
        .map_err(|e| format!("cannot read {}: {e}", boot_partition.display()))?;
    SlotMeta::decode(&area).map_err(|e| e.to_string())
}

pub(crate) use crate::log::now_ms;
