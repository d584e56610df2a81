//! Updates: the settings that enable them, the signed requests the update
//! agent accepts and the status it reports.
//!
//! Every request to the agent carries
//! `Authorization: Nodeos-Ed25519 key=<key id>,ts=<unix ms>,nonce=<16 hex>,sig=<128 hex>`,
//! an ed25519 signature by the update key over [`request_message`], or a
//! [`ReadToken`] that only reads. The agent answers nothing else.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::settings::SettingsError;
use crate::slots::{LastUpdate, Slot, SlotStatus};

/// Default port of the update agent.
pub const DEFAULT_UPDATE_PORT: u16 = 7070;
/// Default seconds a new version has to pass its health check.
pub const DEFAULT_HEALTH_TIMEOUT: u32 = 60;
/// Longest health timeout: `nodeos run` gives a trial boot 300 s by
/// default (`--trial-boot-timeout`) to reach a verdict, boot included.
pub const MAX_HEALTH_TIMEOUT: u32 = 240;
/// Default seconds the app must stay up when no health path is set.
pub const DEFAULT_HEALTH_UPTIME: u32 = 10;
/// The HTTP authentication scheme of agent requests.
pub const AUTH_SCHEME: &str = "Nodeos-Ed25519";
/// How far a request's timestamp may be from the guest's clock.
pub const MAX_CLOCK_SKEW_MS: u64 = 300_000;
/// Path of the status request.
pub const STATUS_PATH: &str = "/v1/status";
/// Path of the update upload.
pub const UPDATE_PATH: &str = "/v1/update";
/// Path of the log records (`?since=<unix ms>&tail=<n>&follow=1`).
pub const LOGS_PATH: &str = "/v1/logs";
/// Path of the Prometheus text metrics.
pub const METRICS_PATH: &str = "/v1/metrics";
/// Path of a profile (`?kind=cpu&seconds=<n>` or `?kind=heap`).
pub const PROFILE_PATH: &str = "/v1/profile";
/// Path of the status page (HTML).
pub const PAGE_PATH: &str = "/";

/// package.json `"nodeos": {"update": …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct UpdateSettings {
    /// The key updates must be signed with; no key, no update agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key: Option<PublicKey>,
    /// The agent's TCP port (not the app's).
    pub port: u16,
    /// What a new version must pass before it is committed.
    pub health: HealthCheck,
}

impl Default for UpdateSettings {
    fn default() -> Self {
        UpdateSettings {
            public_key: None,
            port: DEFAULT_UPDATE_PORT,
            health: HealthCheck::default(),
        }
    }
}

impl UpdateSettings {
    /// Checks what serde cannot; `app_port` is the app's port, which the
    /// agent must not take.
    pub fn validate(&self, app_port: u16) -> Result<(), SettingsError> {
        if self.port == 0 || self.port == app_port {
            return Err(SettingsError::new(
                "update.port",
                format!(
                    "must be a port from 1 to 65535 other than the app's port {app_port}, not {}",
                    self.port
                ),
            ));
        }
        self.health.validate()
    }
}

/// The health check of a new version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct HealthCheck {
    /// HTTP path GET on the app's port; the first 2xx passes. Without it
    /// the app passes by staying up [`HealthCheck::uptime`] seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Seconds from the app's start to a pass, else the update is rolled back.
    pub timeout: u32,
    /// Seconds the app must stay up when there is no `path`.
    pub uptime: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            path: None,
            timeout: DEFAULT_HEALTH_TIMEOUT,
            uptime: DEFAULT_HEALTH_UPTIME,
        }
    }
}

impl HealthCheck {
    pub fn validate(&self) -> Result<(), SettingsError> {
        if let Some(path) = &self.path
            && (!path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f))
        {
            return Err(SettingsError::new(
                "update.health.path",
                format!("must start with / and hold no spaces or control characters, not {path:?}"),
            ));
        }
        if !(1..=MAX_HEALTH_TIMEOUT).contains(&self.timeout) {
            return Err(SettingsError::new(
                "update.health.timeout",
                format!(
                    "must be 1 to {MAX_HEALTH_TIMEOUT} seconds, not {}",
                    self.timeout
                ),
            ));
        }
        if self.uptime == 0 || self.uptime > self.timeout {
            return Err(SettingsError::new(
                "update.health.uptime",
                format!(
                    "must be 1 to timeout ({}) seconds, not {}",
                    self.timeout, self.uptime
                ),
            ));
        }
        Ok(())
    }
}

/// An ed25519 public key, written `ed25519:<64 lower-case hex digits>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// Parses `ed25519:<64 hex digits>`.
    pub fn parse(text: &str) -> Result<PublicKey, String> {
        let hex = text.trim().strip_prefix("ed25519:").ok_or_else(|| {
            format!("{text:?} is not an update key: expected ed25519:<64 hex digits>")
        })?;
        let bytes = from_hex(hex).filter(|b| b.len() == 32).ok_or_else(|| {
            format!("{text:?} is not an update key: expected 64 hex digits after ed25519:")
        })?;
        Ok(PublicKey(bytes.try_into().expect("32 bytes")))
    }

    /// A short name for the key in messages and requests: the first 16
    /// hex digits.
    pub fn key_id(&self) -> String {
        to_hex(&self.0[..8])
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ed25519:{}", to_hex(&self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        PublicKey::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Lower-case hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of an even-length hex string, either case.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    // Digits only: `u8::from_str_radix` alone would take `+1` for 0x01.
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// What a request signature covers: the method, the path, the timestamp,
/// the nonce and the body's length, so a signature cannot be moved to
/// another request or body size.
pub fn request_message(
    method: &str,
    path: &str,
    ts_ms: u64,
    nonce: &str,
    content_length: u64,
) -> String {
    format!("nodeos-request-v1\n{method}\n{path}\n{ts_ms}\n{nonce}\n{content_length}")
}

/// The parsed `Authorization` header of an agent request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub key_id: String,
    pub ts_ms: u64,
    /// 16 hex digits, fresh for every request.
    pub nonce: String,
    pub signature: [u8; 64],
}

impl Authorization {
    /// The header value.
    pub fn header(&self) -> String {
        format!(
            "{AUTH_SCHEME} key={},ts={},nonce={},sig={}",
            self.key_id,
            self.ts_ms,
            self.nonce,
            to_hex(&self.signature)
        )
    }

    /// Parses a header value; `None` if it is not well-formed.
    pub fn parse(value: &str) -> Option<Authorization> {
        let params = value.strip_prefix(AUTH_SCHEME)?.strip_prefix(' ')?;
        let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
        for part in params.split(',') {
            let (k, v) = part.trim().split_once('=')?;
            if fields.insert(k, v).is_some() {
                return None;
            }
        }
        let nonce = *fields.get("nonce")?;
        let key_id = *fields.get("key")?;
        if nonce.len() != 16 || from_hex(nonce).is_none() || key_id.len() > 64 {
            return None;
        }
        let sig = from_hex(fields.get("sig")?)?;
        Some(Authorization {
            key_id: key_id.to_owned(),
            ts_ms: fields.get("ts")?.parse().ok()?,
            nonce: nonce.to_owned(),
            signature: sig.try_into().ok()?,
        })
    }
}

/// First part of a read token.
pub const TOKEN_SCHEME: &str = "nodeos-read";
/// The cookie the status page keeps a read token in.
pub const TOKEN_COOKIE: &str = "nodeos_token";
/// The longest a read token may be valid: a year.
pub const MAX_TOKEN_TTL_S: u64 = 366 * 86_400;

/// A **read token**: the update key's signature over "this key may read
/// the status, the logs, the metrics and the status page until
/// `expires_s`". Made offline by `nodeos token`, it lets what cannot sign
/// each request (Prometheus, a browser) read the agent; it can neither
/// update nor profile. Text form:
/// `nodeos-read.<key id>.<expiry unix s>.<16 hex id>.<128 hex signature>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadToken {
    pub key_id: String,
    /// Unix seconds after which the agent refuses it.
    pub expires_s: u64,
    /// 16 hex digits, random: tells tokens apart in logs.
    pub id: String,
    pub signature: [u8; 64],
}

impl ReadToken {
    /// What the signature covers.
    pub fn message(key_id: &str, expires_s: u64, id: &str) -> String {
        format!("nodeos-token-v1\nread\n{key_id}\n{expires_s}\n{id}")
    }

    /// Parses the text form; `None` if it is not well-formed.
    pub fn parse(text: &str) -> Option<ReadToken> {
        let mut parts = text.trim().split('.');
        if parts.next()? != TOKEN_SCHEME {
            return None;
        }
        let key_id = parts.next()?;
        let expires_s = parts.next()?.parse().ok()?;
        let id = parts.next()?;
        let signature = from_hex(parts.next()?)?.try_into().ok()?;
        let hex = |s: &str, len: usize| s.len() == len && from_hex(s).is_some();
        if parts.next().is_some() || !hex(key_id, 16) || !hex(id, 16) {
            return None;
        }
        Some(ReadToken {
            key_id: key_id.to_ascii_lowercase(),
            expires_s,
            id: id.to_ascii_lowercase(),
            signature,
        })
    }
}

impl fmt::Display for ReadToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{TOKEN_SCHEME}.{}.{}.{}.{}",
            self.key_id,
            self.expires_s,
            self.id,
            to_hex(&self.signature)
        )
    }
}

/// `GET /v1/status`: what the appliance runs and how the last update went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The app's name.
    pub appliance: String,
    /// The running version.
    pub version: String,
    /// The booted slot.
    pub slot: Slot,
    /// Whether this boot is a trial of a new version.
    pub trial: bool,
    /// The highest update sequence accepted so far.
    pub max_sequence: u64,
    /// Seconds since the kernel started.
    pub uptime_s: u64,
    pub app: AppStatus,
    /// How the health check went on this boot, if it ran.
    #[serde(default)]
    pub health: Option<String>,
    pub slots: BTreeMap<Slot, SlotInfo>,
    #[serde(default)]
    pub last_update: Option<LastUpdate>,
    /// The last lines the failed trial printed, if the last update was rolled back.
    #[serde(default)]
    pub log_tail: Option<String>,
    /// Resource use, boot time and log shipping (absent from older agents).
    #[serde(default)]
    pub system: Option<SystemStatus>,
}

/// What the appliance uses, as `GET /v1/status` reports it; the metrics
/// endpoint gives the same numbers to Prometheus.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SystemStatus {
    /// Milliseconds from the kernel's start to the first start of the app.
    #[serde(default)]
    pub boot_ms: Option<u64>,
    /// Unix milliseconds when the kernel started.
    #[serde(default)]
    pub boot_unix_ms: u64,
    /// `MemTotal` and `MemAvailable`, bytes.
    pub memory_total: u64,
    pub memory_available: u64,
    /// Resident memory of the app's processes, bytes.
    pub app_rss: u64,
    /// Resident memory of init (PID 1, with the agent), bytes.
    #[serde(default)]
    pub init_rss: u64,
    /// CPU time of the whole guest (user + system + …, not idle), milliseconds.
    pub cpu_ms: u64,
    /// CPU time of the app's processes (and their reaped children), milliseconds.
    pub app_cpu_ms: u64,
    /// The kernel's OOM kills since boot.
    #[serde(default)]
    pub oom_kills: u64,
    /// The `/data` volume, if one is mounted.
    #[serde(default)]
    pub data: Option<DiskUsage>,
    /// Bytes through each network interface but `lo`.
    #[serde(default)]
    pub network: Vec<NetCounters>,
    pub log: LogStats,
}

/// A filesystem's size and use, bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DiskUsage {
    pub size: u64,
    pub used: u64,
    pub available: u64,
}

/// One network interface's counters.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NetCounters {
    pub name: String,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// The log: lines logged since boot, lines the ring no longer holds, and
/// the remote syslog shipping if one is configured.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LogStats {
    pub lines: u64,
    pub ring_dropped: u64,
    #[serde(default)]
    pub syslog: Option<SyslogStats>,
}

/// Remote syslog shipping since boot.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SyslogStats {
    /// `udp://HOST:PORT` or `tcp://HOST:PORT`.
    pub target: String,
    /// Records handed to the transport.
    pub sent: u64,
    /// Records lost: the buffer was full or the target could not be reached.
    pub dropped: u64,
    /// Whether the last send worked.
    pub connected: bool,
}

/// The app process, as init sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AppStatus {
    /// `starting`, `running`, `restarting`, `exited` or `stopping`.
    pub state: String,
    /// 1 for the first start, then one more per restart.
    pub generation: u32,
    /// Restarts so far.
    pub restarts: u32,
    /// How the last run ended (`exit code 1`, `signal 9`), if one did.
    #[serde(default)]
    pub last_exit: Option<String>,
    /// The running generation's process id.
    #[serde(default)]
    pub pid: Option<i32>,
    /// Runs the OOM killer (or init, for lack of memory) ended.
    #[serde(default)]
    pub oom_exits: u32,
}

/// One slot in [`Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotInfo {
    pub status: SlotStatus,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub sequence: u64,
    /// Artefact key (`kernel`, `runtime`, `app`) → sha256 of what the slot
    /// holds, from its metadata; empty when it holds nothing valid.
    #[serde(default)]
    pub artifacts: BTreeMap<String, String>,
}

/// The JSON body of every error answer of the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A short code: `bad_request`, `unauthorized`, `wrong_key`, `not_newer`,
    /// `busy`, `too_large`, `hash_mismatch`, `not_found`, `read_only` (a
    /// read token asked to update or profile), `unavailable` (no app to
    /// profile, or its inspector did not open), `io`.
    pub error: String,
    /// One sentence for people.
    pub reason: String,
}

/// The JSON body of a successful `POST /v1/update`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateAccepted {
    /// The slot written.
    pub slot: Slot,
    /// The version it holds.
    pub version: String,
    pub sequence: u64,
    /// Bytes written to the slot (0 for artefacts kept in place).
    pub written: u64,
    /// Always true: the appliance reboots into the new slot.
    pub rebooting: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_digits_only() {
        assert_eq!(from_hex("00ff7A"), Some(vec![0, 255, 122]));
        assert_eq!(from_hex(""), Some(vec![]));
        for bad in ["+1", "-1", "0", "0g", " 1", "1 ", "é1"] {
            assert_eq!(from_hex(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn public_keys_parse_and_print() {
        let text = format!("ed25519:{}", "ab".repeat(32));
        let key = PublicKey::parse(&text).unwrap();
        assert_eq!(key.to_string(), text);
        assert_eq!(key.key_id(), "abababababababab");
        let json = serde_json::to_string(&key).unwrap();
        assert_eq!(serde_json::from_str::<PublicKey>(&json).unwrap(), key);
        for bad in [
            "ab".repeat(32),
            format!("ed25519:{}", "ab".repeat(31)),
            "ed25519:zz".into(),
        ] {
            assert!(PublicKey::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn read_tokens_round_trip_and_reject_junk() {
        let token = ReadToken {
            key_id: "0123456789abcdef".into(),
            expires_s: 1_800_000_000,
            id: "00112233aabbccdd".into(),
            signature: [7; 64],
        };
        let text = token.to_string();
        assert!(text.starts_with("nodeos-read.0123456789abcdef.1800000000.00112233aabbccdd."));
        assert_eq!(ReadToken::parse(&text), Some(token.clone()));
        assert_eq!(ReadToken::parse(&format!(" {text}\n")), Some(token));
        for bad in [
            text.replace("nodeos-read", "nodeos-write"),
            text.replace(".1800000000.", ".-1."),
            text.replace("0123456789abcdef", "0123"),
            text.replace("00112233aabbccdd", "zz112233aabbccdd"),
            format!("{text}.extra"),
            text[..text.len() - 2].to_owned(),
            String::new(),
        ] {
            assert_eq!(ReadToken::parse(&bad), None, "{bad}");
        }
        assert_ne!(
            ReadToken::message("k", 1, "a"),
            request_message("GET", "/", 1, "a", 0),
            "a token's signature can never pass as a request's"
        );
    }

    #[test]
    fn authorization_round_trips_and_rejects_junk() {
        let auth = Authorization {
            key_id: "0123456789abcdef".into(),
            ts_ms: 1_700_000_000_000,
            nonce: "00112233aabbccdd".into(),
            signature: [7; 64],
        };
        assert_eq!(Authorization::parse(&auth.header()), Some(auth.clone()));
        let header = auth.header();
        for bad in [
            header.replace(AUTH_SCHEME, "Bearer"),
            header.replace("nonce=00112233aabbccdd", "nonce=0011"),
            header.replace("ts=", "ts=-"),
            format!("{header},ts=1"),
            header[..header.len() - 2].to_owned(),
        ] {
            assert_eq!(Authorization::parse(&bad), None, "{bad}");
        }
    }

    #[test]
    fn settings_defaults_and_checks() {
        let settings: UpdateSettings = serde_json::from_str("{}").unwrap();
        assert_eq!(settings, UpdateSettings::default());
        assert!(settings.validate(3000).is_ok());
        assert!(settings.validate(7070).is_err());
        let mut bad = settings.clone();
        bad.health.path = Some("healthz".into());
        assert!(bad.validate(3000).is_err());
        let mut bad = settings;
        bad.health.uptime = 100;
        assert!(bad.validate(3000).is_err());
    }
}
