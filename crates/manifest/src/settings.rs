//! Appliance settings: how init runs the app (restart policy, grace period,
//! log format, remote syslog, port, network, the persistent data volume).
//!
//! They come from package.json's `"nodeos"` key at build time
//! ([`Settings`], baked into [`crate::AppConfig`]) and can be overridden
//! when the VM boots, without rebuilding, by a [`RunConfig`] that the VM
//! runner hands the guest on a small **config disk** (see
//! [`RunConfig::to_disk`]). The run config also carries the environment
//! given to `nodeos run --env/--env-file`, which may hold secrets: it is
//! never written into the image and init never prints its values.
//!
//! Field names are camelCase in JSON, as npm users expect in package.json.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use crate::console::LogFormat;

/// Port the app is told to listen on (`PORT`) unless the settings say otherwise.
pub const DEFAULT_PORT: u16 = 3000;
/// Seconds between SIGTERM and SIGKILL when the app is stopped.
pub const DEFAULT_GRACE_SECS: u32 = 10;
/// Longest grace period accepted.
pub const MAX_GRACE_SECS: u32 = 3600;
/// Seconds the boot waits for a DHCP lease before starting the app anyway.
pub const DEFAULT_DHCP_TIMEOUT_SECS: u32 = 10;
/// Accepted range of `network.dhcpTimeout`.
pub const DHCP_TIMEOUT_RANGE: std::ops::RangeInclusive<u32> = 1..=300;

/// Everything init needs to know about how to run the app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Settings {
    /// When the app is started again after it exits.
    pub restart: RestartPolicy,
    /// Seconds the app gets between SIGTERM and SIGKILL when stopped.
    pub grace: u32,
    /// Format of the console log.
    pub log_format: LogFormat,
    /// A syslog server every log record is also shipped to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syslog: Option<SyslogTarget>,
    /// The port the app listens on: `PORT` in its environment, and the
    /// app may bind it even below 1024.
    pub port: u16,
    /// Network configuration of the first NIC.
    pub network: Network,
    /// The persistent volume at `/data`.
    pub data: DataSettings,
    /// Signed updates: the key, the agent's port and the health check.
    pub update: crate::update::UpdateSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            restart: RestartPolicy::default(),
            grace: DEFAULT_GRACE_SECS,
            log_format: LogFormat::default(),
            syslog: None,
            port: DEFAULT_PORT,
            network: Network::default(),
            data: DataSettings::default(),
            update: crate::update::UpdateSettings::default(),
        }
    }
}

impl Settings {
    /// Checks what serde cannot. The error names the key (`grace`,
    /// `network.ipv4.address`, …) relative to the settings object.
    pub fn validate(&self) -> Result<(), SettingsError> {
        check_grace(self.grace)?;
        if self.port == 0 {
            return Err(SettingsError::new("port", "must be between 1 and 65535"));
        }
        self.network.validate()?;
        self.update.validate(self.port)
    }
}

/// A settings value that is well-formed JSON but not acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError {
    /// Dotted path of the key, e.g. `network.ipv4.address`.
    pub key: String,
    pub problem: String,
}

impl SettingsError {
    pub fn new(key: &str, problem: impl Into<String>) -> Self {
        SettingsError {
            key: key.to_owned(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.key, self.problem)
    }
}

impl std::error::Error for SettingsError {}

/// When init starts the app again after it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// After every exit, whatever the status (servers should never stop).
    #[default]
    Always,
    /// After a non-zero exit code or a signal; exit code 0 powers off.
    OnFailure,
    /// Never: any exit powers the VM off.
    Never,
}

impl RestartPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Never => "never",
        }
    }
}

impl FromStr for RestartPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(RestartPolicy::Always),
            "on-failure" => Ok(RestartPolicy::OnFailure),
            "never" => Ok(RestartPolicy::Never),
            other => Err(format!(
                "unknown restart policy {other:?} (expected always, on-failure or never)"
            )),
        }
    }
}

/// Port of a `udp://` syslog target that names none (RFC 5426).
pub const SYSLOG_UDP_PORT: u16 = 514;
/// Port of a `tcp://` syslog target that names none (IANA's `syslog-conn`).
pub const SYSLOG_TCP_PORT: u16 = 601;

/// How log records travel to a [`SyslogTarget`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SyslogTransport {
    /// One datagram per record (RFC 5426).
    Udp,
    /// One connection, records framed by octet counting (RFC 6587).
    Tcp,
}

impl SyslogTransport {
    /// The URL scheme: `udp` or `tcp`.
    pub fn as_str(self) -> &'static str {
        match self {
            SyslogTransport::Udp => "udp",
            SyslogTransport::Tcp => "tcp",
        }
    }

    /// The port of a target that names none.
    pub fn default_port(self) -> u16 {
        match self {
            SyslogTransport::Udp => SYSLOG_UDP_PORT,
            SyslogTransport::Tcp => SYSLOG_TCP_PORT,
        }
    }
}

/// A remote syslog server, written `udp://HOST:PORT` or `tcp://HOST:PORT`.
/// `HOST` is an IPv4 address, a host name (resolved when init connects)
/// or an IPv6 address in brackets (`udp://[fec0::2]:514`). Without a port
/// a `udp://` target uses 514 and a `tcp://` target 601. It is always
/// written back with its port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SyslogTarget {
    transport: SyslogTransport,
    /// An IP address (IPv6 without brackets) or a host name.
    host: String,
    port: u16,
}

impl SyslogTarget {
    pub fn transport(&self) -> SyslogTransport {
        self.transport
    }

    /// The IP address (an IPv6 one without brackets) or host name.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl FromStr for SyslogTarget {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: String| {
            format!(
                "{text:?} is not a syslog target: {why} (expected udp://HOST:PORT or \
                 tcp://HOST:PORT, e.g. udp://10.0.2.2:514; the port defaults to \
                 {SYSLOG_UDP_PORT} for udp and {SYSLOG_TCP_PORT} for tcp)"
            )
        };
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| bad("it does not start with udp:// or tcp://".into()))?;
        let transport = match scheme.to_ascii_lowercase().as_str() {
            "udp" => SyslogTransport::Udp,
            "tcp" => SyslogTransport::Tcp,
            _ => return Err(bad(format!("unknown transport {scheme:?}"))),
        };
        let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
            let (addr, after) = bracketed
                .split_once(']')
                .ok_or_else(|| bad("`]` is missing after the IPv6 address".into()))?;
            let addr: Ipv6Addr = addr
                .parse()
                .map_err(|_| bad(format!("{addr:?} is not an IPv6 address")))?;
            let port = match after {
                "" => None,
                _ => Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| bad(format!("unexpected {after:?} after the address")))?,
                ),
            };
            (addr.to_string(), port)
        } else {
            let (host, port) = match rest.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            };
            if port.is_some_and(|p| p.contains(':')) {
                return Err(bad(
                    "an IPv6 address must be in brackets, e.g. udp://[fec0::2]:514".into(),
                ));
            }
            if host.is_empty() {
                return Err(bad("the host is missing".into()));
            }
            if host.parse::<Ipv4Addr>().is_err() && !is_hostname(host) {
                return Err(bad(format!("{host:?} is not an IP address or host name")));
            }
            (host.to_owned(), port)
        };
        let port = match port {
            None => transport.default_port(),
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| bad(format!("port {p:?} is not a number from 1 to 65535")))?,
        };
        Ok(SyslogTarget {
            transport,
            host,
            port,
        })
    }
}

/// `udp://HOST:PORT` (IPv6 hosts in brackets), as [`SyslogTarget::from_str`]
/// reads it back.
impl fmt::Display for SyslogTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = self.transport.as_str();
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

impl Serialize for SyslogTarget {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SyslogTarget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Network configuration of the first NIC. Without `ipv4` the address
/// comes from DHCP; without `ipv6` IPv6 autoconfigures if offered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Network {
    /// A static IPv4 address instead of DHCP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<StaticIpv4>,
    /// A static IPv6 address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<StaticIpv6>,
    /// DNS servers. With DHCP they replace the servers of the lease; with a
    /// static address and none given, QEMU's user-network resolver 10.0.2.3.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<IpAddr>,
    /// Extra `/etc/hosts` entries: host name → address.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub hosts: BTreeMap<String, IpAddr>,
    /// Seconds the boot waits for a DHCP lease (1–300).
    pub dhcp_timeout: u32,
}

impl Default for Network {
    fn default() -> Self {
        Network {
            ipv4: None,
            ipv6: None,
            dns: Vec::new(),
            hosts: BTreeMap::new(),
            dhcp_timeout: DEFAULT_DHCP_TIMEOUT_SECS,
        }
    }
}

impl Network {
    pub fn validate(&self) -> Result<(), SettingsError> {
        if !DHCP_TIMEOUT_RANGE.contains(&self.dhcp_timeout) {
            return Err(SettingsError::new(
                "network.dhcpTimeout",
                format!(
                    "{} is outside {}–{} seconds",
                    self.dhcp_timeout,
                    DHCP_TIMEOUT_RANGE.start(),
                    DHCP_TIMEOUT_RANGE.end()
                ),
            ));
        }
        if let Some(v4) = &self.ipv4 {
            v4.validate()?;
        }
        for name in self.hosts.keys() {
            if !is_hostname(name) {
                return Err(SettingsError::new(
                    &format!("network.hosts.{name}"),
                    "is not a valid host name (letters, digits, `-` and `.` only)",
                ));
            }
        }
        Ok(())
    }
}

/// A host name as `/etc/hosts` accepts it: dot-separated labels of
/// `[A-Za-z0-9-]`, 1–63 bytes each, at most 253 bytes in all.
pub fn is_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// A static IPv4 configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticIpv4 {
    /// `ADDRESS/PREFIX`, e.g. `10.0.2.15/24`.
    pub address: Cidr<Ipv4Addr>,
    /// Default route; none means no default route (a local network only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
}

impl StaticIpv4 {
    /// The gateway, if any, must be inside the address's subnet.
    pub fn validate(&self) -> Result<(), SettingsError> {
        match self.gateway {
            Some(gw) if !self.address.contains(gw) => Err(SettingsError::new(
                "network.ipv4.gateway",
                format!("{gw} is not inside {}", self.address),
            )),
            _ => Ok(()),
        }
    }
}

/// `grace` must not exceed [`MAX_GRACE_SECS`].
fn check_grace(grace: u32) -> Result<(), SettingsError> {
    if grace > MAX_GRACE_SECS {
        return Err(SettingsError::new(
            "grace",
            format!("{grace} seconds is more than the maximum of {MAX_GRACE_SECS}"),
        ));
    }
    Ok(())
}

/// A static IPv6 configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticIpv6 {
    /// `ADDRESS/PREFIX`, e.g. `fec0::15/64`.
    pub address: Cidr<Ipv6Addr>,
    /// Default route, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv6Addr>,
}

/// An address with its prefix length, written `ADDRESS/PREFIX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr<A> {
    pub addr: A,
    pub prefix: u8,
}

/// The address types a [`Cidr`] can hold.
pub trait CidrAddr: Copy + FromStr + fmt::Display {
    const BITS: u8;
    fn to_bits(self) -> u128;
}

impl CidrAddr for Ipv4Addr {
    const BITS: u8 = 32;
    fn to_bits(self) -> u128 {
        u128::from(u32::from(self))
    }
}

impl CidrAddr for Ipv6Addr {
    const BITS: u8 = 128;
    fn to_bits(self) -> u128 {
        u128::from(self)
    }
}

impl<A: CidrAddr> Cidr<A> {
    /// Whether `other` is inside this address's network.
    pub fn contains(&self, other: A) -> bool {
        let host_bits = u32::from(A::BITS - self.prefix);
        let shift = |v: u128| v.checked_shr(host_bits).unwrap_or(0);
        shift(self.addr.to_bits()) == shift(other.to_bits())
    }
}

impl Cidr<Ipv4Addr> {
    /// The prefix as a netmask, e.g. 24 → 255.255.255.0.
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(
            u32::MAX
                .checked_shl(32 - u32::from(self.prefix))
                .unwrap_or(0),
        )
    }
}

impl<A: CidrAddr> FromStr for Cidr<A> {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not ADDRESS/PREFIX (e.g. 10.0.2.15/24)"))?;
        let addr = addr.parse().map_err(|_| {
            format!(
                "{addr:?} is not an IPv{} address",
                if A::BITS == 32 { 4 } else { 6 }
            )
        })?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (1..=A::BITS).contains(p))
            .ok_or_else(|| format!("prefix {prefix:?} is not between 1 and {}", A::BITS))?;
        Ok(Cidr { addr, prefix })
    }
}

impl<A: CidrAddr> fmt::Display for Cidr<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl<A: CidrAddr> Serialize for Cidr<A> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de, A: CidrAddr> Deserialize<'de> for Cidr<A> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Size of the data volume unless the settings say otherwise: 1 GiB.
pub const DEFAULT_DATA_SIZE: DataSize = DataSize(1 << 30);
/// Smallest data volume: ext4 needs room for its journal and metadata.
pub const MIN_DATA_SIZE: DataSize = DataSize(16 << 20);
/// Longest [`DataCheck::summary`] a run config may carry.
pub const MAX_CHECK_SUMMARY: usize = 1024;
/// The start of the console line init prints when the data volume stops
/// the boot (it failed its check or cannot be mounted): the app is not
/// started and the VM powers off. `nodeos run` looks for it to explain
/// its exit status. (It is init's `error:` line for the data phase.)
pub const DATA_FAILED_MARKER: &str = "nodeos-init: error: data volume ";

/// The persistent volume at `/data` (package.json `"nodeos": {"data": …}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct DataSettings {
    /// Size `nodeos run` creates the volume with (or grows it to).
    pub size: DataSize,
    /// What init does when the volume fails its check.
    pub on_check_failure: OnCheckFailure,
}

impl Default for DataSettings {
    fn default() -> Self {
        DataSettings {
            size: DEFAULT_DATA_SIZE,
            on_check_failure: OnCheckFailure::default(),
        }
    }
}

/// What init does when the data volume failed its check (on the host, in
/// its own superblock check, or when mounting it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnCheckFailure {
    /// Do not start the app; power the VM off with the reason.
    #[default]
    Stop,
    /// Warn, mount the volume if it can be mounted, and start the app.
    Start,
}

impl OnCheckFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            OnCheckFailure::Stop => "stop",
            OnCheckFailure::Start => "start",
        }
    }
}

impl FromStr for OnCheckFailure {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "stop" => Ok(OnCheckFailure::Stop),
            "start" => Ok(OnCheckFailure::Start),
            other => Err(format!(
                "unknown check failure policy {other:?} (expected stop or start)"
            )),
        }
    }
}

/// A size in bytes, written `512M`, `1G`, `1GiB`, `2048MiB` or a plain
/// number of bytes. Units are binary whatever their spelling (`M`, `MB`
/// and `MiB` are all 2^20 bytes), case-insensitive, and only whole
/// numbers are accepted. Sizes are rounded up to a multiple of 4 KiB
/// and must be at least [`MIN_DATA_SIZE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DataSize(u64);

impl DataSize {
    /// Granularity of a volume's size (a whole number of ext4 blocks).
    pub const ALIGN: u64 = 4096;

    /// `bytes` rounded up to [`DataSize::ALIGN`]; `None` if it is below
    /// [`MIN_DATA_SIZE`] or does not fit.
    pub fn from_bytes(bytes: u64) -> Option<DataSize> {
        let aligned = bytes.checked_next_multiple_of(Self::ALIGN)?;
        (aligned >= MIN_DATA_SIZE.0).then_some(DataSize(aligned))
    }

    pub fn bytes(self) -> u64 {
        self.0
    }
}

/// The largest binary unit that divides the size evenly: `1GiB`,
/// `20MiB`, `12KiB` or `4096` (bytes), in the form [`DataSize::from_str`]
/// reads back.
impl fmt::Display for DataSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units = [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")];
        match units
            .iter()
            .find(|(shift, _)| self.0.is_multiple_of(1u64 << shift))
        {
            Some((shift, unit)) => write!(f, "{}{unit}", self.0 >> shift),
            None => write!(f, "{}", self.0),
        }
    }
}

impl FromStr for DataSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let expected = "expected a size such as 512M, 1G, 2048MiB or a number of bytes";
        let s = text.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        if number.is_empty() {
            return Err(format!("{text:?} is not a size ({expected})"));
        }
        let shift = match unit.trim_start().to_ascii_lowercase().as_str() {
            "" | "b" => 0,
            "k" | "kb" | "kib" => 10,
            "m" | "mb" | "mib" => 20,
            "g" | "gb" | "gib" => 30,
            "t" | "tb" | "tib" => 40,
            _ if unit.starts_with(['.', ',']) => {
                return Err(format!(
                    "{text:?} is not a whole number; use a smaller unit, e.g. 1536M for 1.5G"
                ));
            }
            _ => return Err(format!("{text:?} has an unknown unit ({expected})")),
        };
        let too_large = || format!("{text:?} is too large");
        let bytes = number
            .parse::<u64>()
            .map_err(|_| too_large())?
            .checked_mul(1 << shift)
            .ok_or_else(too_large)?;
        DataSize::from_bytes(bytes).ok_or_else(|| {
            if bytes < MIN_DATA_SIZE.0 {
                format!(
                    "{text:?} is less than the minimum of {MIN_DATA_SIZE} (ext4 needs room for its journal)"
                )
            } else {
                too_large()
            }
        })
    }
}

impl Serialize for DataSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A string as [`DataSize::from_str`] reads it, or a number of bytes.
impl<'de> Deserialize<'de> for DataSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        let parsed = match Raw::deserialize(d).map_err(|_: D::Error| {
            serde::de::Error::custom(
                "expected a size such as \"512M\", \"1G\", \"2048MiB\" or a number of bytes",
            )
        })? {
            Raw::Bytes(n) => n.to_string().parse(),
            Raw::Text(text) => text.parse(),
        };
        parsed.map_err(serde::de::Error::custom)
    }
}

/// What the host's check of the data volume (`e2fsck -p`, run by
/// `nodeos run` before every boot) found; handed to init in the
/// [`RunConfig`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DataCheck {
    pub status: CheckStatus,
    /// e2fsck's own words, on one line, at most [`MAX_CHECK_SUMMARY`] bytes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub summary: String,
}

/// The outcome of a filesystem check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    /// Nothing to repair.
    Clean,
    /// Problems were found and repaired (e2fsck exit status 1 or 2).
    Repaired,
    /// Problems remain (exit status 4 or more): the volume needs a manual
    /// `e2fsck -fy`.
    Failed,
}

impl CheckStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Clean => "clean",
            CheckStatus::Repaired => "repaired",
            CheckStatus::Failed => "failed",
        }
    }
}

/// Settings given when the VM boots (`nodeos run`), on top of the image's.
/// Every `Some` replaces the image's value; `env` entries are added to (and
/// win over) the image's environment.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RunConfig {
    /// Extra environment (`--env`, `--env-file`); may hold secrets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    /// A syslog server for this boot (replaces the image's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syslog: Option<SyslogTarget>,
    /// A static IPv4 address for this boot (replaces DHCP or the image's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<StaticIpv4>,
    /// DNS servers for this boot (replace the image's and the lease's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<IpAddr>,
    /// `data.onCheckFailure` for this boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_on_check_failure: Option<OnCheckFailure>,
    /// What the host's check of the attached data volume found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_check: Option<DataCheck>,
}

/// Shows environment names only: the values may be secrets.
impl fmt::Debug for RunConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunConfig")
            .field(
                "env",
                &self
                    .env
                    .keys()
                    .map(|k| (k, "<redacted>"))
                    .collect::<BTreeMap<_, _>>(),
            )
            .field("restart", &self.restart)
            .field("grace", &self.grace)
            .field("log_format", &self.log_format)
            .field("syslog", &self.syslog)
            .field("ipv4", &self.ipv4)
            .field("dns", &self.dns)
            .field("data_on_check_failure", &self.data_on_check_failure)
            .field("data_check", &self.data_check)
            .finish()
    }
}

/// First bytes of a config disk.
pub const RUN_CONFIG_MAGIC: &[u8; 16] = b"NODEOS-RUNCONFIG";
/// Version of the config disk layout.
pub const RUN_CONFIG_FORMAT: u32 = 1;
/// Largest JSON payload a config disk may carry.
pub const RUN_CONFIG_MAX_JSON: usize = 1 << 20;
/// Config disks are padded to a multiple of this (a whole number of sectors).
const DISK_ALIGN: usize = 4096;
const HEADER_LEN: usize = 24;

/// Why a config disk could not be read.
#[derive(Debug)]
pub enum RunConfigError {
    /// The header is there but the disk is cut short or too large.
    Truncated { need: usize, have: usize },
    /// A layout version this build does not read.
    Format(u32),
    /// The payload is more than [`RUN_CONFIG_MAX_JSON`] bytes.
    TooLarge(usize),
    /// The payload is not a valid run config.
    Json(serde_json::Error),
    /// Well-formed but not acceptable.
    Invalid(SettingsError),
}

impl fmt::Display for RunConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunConfigError::Truncated { need, have } => {
                write!(f, "config disk is cut short ({have} of {need} bytes)")
            }
            RunConfigError::Format(v) => write!(
                f,
                "config disk format {v} is not supported (this init reads format {RUN_CONFIG_FORMAT})"
            ),
            RunConfigError::TooLarge(n) => write!(
                f,
                "config is {n} bytes, more than the limit of {RUN_CONFIG_MAX_JSON}"
            ),
            RunConfigError::Json(e) => write!(f, "config disk holds no valid run config: {e}"),
            RunConfigError::Invalid(e) => write!(f, "run config: {e}"),
        }
    }
}

impl std::error::Error for RunConfigError {}

impl RunConfig {
    /// Whether there is nothing to pass (no config disk needed).
    pub fn is_empty(&self) -> bool {
        *self == RunConfig::default()
    }

    /// Applies the run config to the image's settings and environment.
    pub fn apply(&self, settings: &mut Settings, env: &mut BTreeMap<String, String>) {
        if let Some(restart) = self.restart {
            settings.restart = restart;
        }
        if let Some(grace) = self.grace {
            settings.grace = grace;
        }
        if let Some(format) = self.log_format {
            settings.log_format = format;
        }
        if let Some(target) = &self.syslog {
            settings.syslog = Some(target.clone());
        }
        if let Some(ipv4) = self.ipv4 {
            settings.network.ipv4 = Some(ipv4);
        }
        if !self.dns.is_empty() {
            settings.network.dns = self.dns.clone();
        }
        if let Some(policy) = self.data_on_check_failure {
            settings.data.on_check_failure = policy;
        }
        env.extend(self.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    }

    /// Checks the values (and environment names) without applying them.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if let Some(grace) = self.grace {
            check_grace(grace)?;
        }
        if let Some(v4) = &self.ipv4 {
            v4.validate()?;
        }
        if let Some(check) = &self.data_check
            && check.summary.len() > MAX_CHECK_SUMMARY
        {
            return Err(SettingsError::new(
                "dataCheck.summary",
                format!("is longer than {MAX_CHECK_SUMMARY} bytes"),
            ));
        }
        for (key, value) in &self.env {
            if let Err(problem) = check_env(key, value) {
                return Err(SettingsError::new(&format!("env.{key}"), problem));
            }
        }
        Ok(())
    }

    /// The raw bytes of a config disk: [`RUN_CONFIG_MAGIC`], the layout
    /// version and the JSON length (u32 little-endian each), the JSON, then
    /// zeros up to a multiple of 4096 bytes.
    pub fn to_disk(&self) -> Result<Vec<u8>, RunConfigError> {
        let json = serde_json::to_vec(self).map_err(RunConfigError::Json)?;
        if json.len() > RUN_CONFIG_MAX_JSON {
            return Err(RunConfigError::TooLarge(json.len()));
        }
        let mut disk = Vec::with_capacity(HEADER_LEN + json.len() + DISK_ALIGN);
        disk.extend_from_slice(RUN_CONFIG_MAGIC);
        disk.extend_from_slice(&RUN_CONFIG_FORMAT.to_le_bytes());
        disk.extend_from_slice(&(json.len() as u32).to_le_bytes());
        disk.extend_from_slice(&json);
        disk.resize(disk.len().div_ceil(DISK_ALIGN) * DISK_ALIGN, 0);
        Ok(disk)
    }

    /// Reads a config disk; `Ok(None)` when `bytes` does not start with
    /// [`RUN_CONFIG_MAGIC`] (another disk). `bytes` may be longer than the
    /// payload.
    pub fn from_disk(bytes: &[u8]) -> Result<Option<RunConfig>, RunConfigError> {
        if !bytes.starts_with(RUN_CONFIG_MAGIC) {
            return Ok(None);
        }
        if bytes.len() < HEADER_LEN {
            return Err(RunConfigError::Truncated {
                need: HEADER_LEN,
                have: bytes.len(),
            });
        }
        let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let format = word(16);
        if format != RUN_CONFIG_FORMAT {
            return Err(RunConfigError::Format(format));
        }
        let len = word(20) as usize;
        if len > RUN_CONFIG_MAX_JSON {
            return Err(RunConfigError::TooLarge(len));
        }
        let json = bytes
            .get(HEADER_LEN..HEADER_LEN + len)
            .ok_or(RunConfigError::Truncated {
                need: HEADER_LEN + len,
                have: bytes.len(),
            })?;
        let config: RunConfig = serde_json::from_slice(json).map_err(RunConfigError::Json)?;
        config.validate().map_err(RunConfigError::Invalid)?;
        Ok(Some(config))
    }
}

/// Why an environment variable cannot be passed to `execve`, if it cannot.
pub fn check_env(key: &str, value: &str) -> Result<(), String> {
    if key.is_empty() || key.contains(['=', '\0']) {
        return Err(format!("{key:?} is not a valid environment variable name"));
    }
    if value.contains('\0') {
        return Err(format!("the value of {key} contains a NUL byte"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_settings_object_means_defaults() {
        let s: Settings = serde_json::from_str("{}").unwrap();
        assert_eq!(s, Settings::default());
        assert_eq!(s.restart, RestartPolicy::Always);
        assert_eq!(s.grace, 10);
        assert_eq!(s.port, 3000);
        assert_eq!(s.network.dhcp_timeout, 10);
        assert!(s.validate().is_ok());
    }

    #[test]
    fn settings_parse_from_package_json_style() {
        let s: Settings = serde_json::from_str(
            r#"{"restart":"on-failure","grace":3,"logFormat":"json","port":80,
                "network":{"ipv4":{"address":"10.0.2.20/24","gateway":"10.0.2.2"},
                           "ipv6":{"address":"fec0::20/64"},
                           "dns":["10.0.2.3"],"hosts":{"db.internal":"10.0.2.2"},"dhcpTimeout":5}}"#,
        )
        .unwrap();
        assert_eq!(s.restart, RestartPolicy::OnFailure);
        assert_eq!(s.log_format, LogFormat::Json);
        let v4 = s.network.ipv4.unwrap();
        assert_eq!(v4.address.to_string(), "10.0.2.20/24");
        assert_eq!(v4.address.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(s.network.ipv6.unwrap().address.prefix, 64);
        assert!(s.validate().is_ok());
        let back: Settings = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn bad_settings_name_the_key() {
        let err = serde_json::from_str::<Settings>(r#"{"restart":"sometimes"}"#).unwrap_err();
        assert!(err.to_string().contains("on-failure"), "{err}");
        let err = serde_json::from_str::<Settings>(r#"{"restrat":"always"}"#).unwrap_err();
        assert!(err.to_string().contains("restrat"), "{err}");
        let err =
            serde_json::from_str::<Settings>(r#"{"network":{"ipv4":{"address":"10.0.2.20"}}}"#)
                .unwrap_err();
        assert!(err.to_string().contains("ADDRESS/PREFIX"), "{err}");
        let err =
            serde_json::from_str::<Settings>(r#"{"network":{"ipv4":{"address":"fec0::1/64"}}}"#)
                .unwrap_err();
        assert!(err.to_string().contains("IPv4"), "{err}");

        let mut s = Settings {
            grace: 4000,
            ..Settings::default()
        };
        assert_eq!(s.validate().unwrap_err().key, "grace");
        s.grace = 1;
        s.network.dhcp_timeout = 0;
        assert_eq!(s.validate().unwrap_err().key, "network.dhcpTimeout");
        s.network.dhcp_timeout = 10;
        s.network.ipv4 = Some(StaticIpv4 {
            address: "10.0.2.20/24".parse().unwrap(),
            gateway: Some(Ipv4Addr::new(10, 0, 3, 2)),
        });
        assert_eq!(s.validate().unwrap_err().key, "network.ipv4.gateway");
        s.network.ipv4 = None;
        s.network
            .hosts
            .insert("bad name".into(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(s.validate().unwrap_err().key, "network.hosts.bad name");
    }

    #[test]
    fn cidr_edges() {
        assert!("10.0.2.15/0".parse::<Cidr<Ipv4Addr>>().is_err());
        assert!("10.0.2.15/33".parse::<Cidr<Ipv4Addr>>().is_err());
        let c: Cidr<Ipv4Addr> = "10.0.2.15/32".parse().unwrap();
        assert_eq!(c.netmask(), Ipv4Addr::BROADCAST);
        assert!(c.contains(Ipv4Addr::new(10, 0, 2, 15)));
        assert!(!c.contains(Ipv4Addr::new(10, 0, 2, 16)));
        let c: Cidr<Ipv4Addr> = "10.0.2.15/1".parse().unwrap();
        assert_eq!(c.netmask(), Ipv4Addr::new(128, 0, 0, 0));
        let c: Cidr<Ipv6Addr> = "fec0::15/64".parse().unwrap();
        assert!(c.contains("fec0::2".parse().unwrap()));
        assert!(!c.contains("fec1::2".parse().unwrap()));
    }

    #[test]
    fn hostnames() {
        assert!(is_hostname("db.internal"));
        assert!(is_hostname("a-1"));
        for bad in ["", "a..b", "-a", "a b", "a_b", &"x".repeat(64)] {
            assert!(!is_hostname(bad), "{bad}");
        }
    }

    fn run_config() -> RunConfig {
        RunConfig {
            env: BTreeMap::from([("API_TOKEN".into(), "s3cret=1".into())]),
            restart: Some(RestartPolicy::Never),
            grace: Some(2),
            log_format: Some(LogFormat::Json),
            syslog: Some("tcp://logs.internal:6514".parse().unwrap()),
            ipv4: Some(StaticIpv4 {
                address: "10.0.2.30/24".parse().unwrap(),
                gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
            }),
            dns: vec![IpAddr::V4(Ipv4Addr::new(10, 0, 2, 3))],
            data_on_check_failure: Some(OnCheckFailure::Start),
            data_check: Some(DataCheck {
                status: CheckStatus::Repaired,
                summary: "nodeos-data: 11/16384 files".into(),
            }),
        }
    }

    #[test]
    fn config_disk_round_trips() {
        let disk = run_config().to_disk().unwrap();
        assert_eq!(disk.len() % 4096, 0);
        assert!(disk.starts_with(RUN_CONFIG_MAGIC));
        assert_eq!(RunConfig::from_disk(&disk).unwrap(), Some(run_config()));
        assert_eq!(
            RunConfig::from_disk(&disk[..400]).unwrap(),
            Some(run_config())
        );
    }

    #[test]
    fn other_disks_and_broken_config_disks() {
        assert_eq!(RunConfig::from_disk(&[0u8; 4096]).unwrap(), None);
        assert_eq!(RunConfig::from_disk(b"hsqs").unwrap(), None);
        let disk = run_config().to_disk().unwrap();
        assert!(matches!(
            RunConfig::from_disk(&disk[..30]),
            Err(RunConfigError::Truncated { .. })
        ));
        let mut bad = disk.clone();
        bad[16] = 9;
        assert!(matches!(
            RunConfig::from_disk(&bad),
            Err(RunConfigError::Format(9))
        ));
        let mut bad = disk.clone();
        bad[24] = b'[';
        assert!(matches!(
            RunConfig::from_disk(&bad),
            Err(RunConfigError::Json(_))
        ));
        let mut bad = disk;
        bad[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            RunConfig::from_disk(&bad),
            Err(RunConfigError::TooLarge(_))
        ));
        let mut c = run_config();
        c.env.insert("A=B".into(), "x".into());
        let disk = c.to_disk().unwrap();
        assert!(matches!(
            RunConfig::from_disk(&disk),
            Err(RunConfigError::Invalid(_))
        ));
    }

    #[test]
    fn debug_output_hides_env_values() {
        let text = format!("{:?}", run_config());
        assert!(text.contains("API_TOKEN"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
    }

    #[test]
    fn run_config_overrides_settings_and_adds_env() {
        let mut settings = Settings::default();
        let mut env = BTreeMap::from([("NODE_ENV".to_string(), "production".to_string())]);
        run_config().apply(&mut settings, &mut env);
        assert_eq!(settings.restart, RestartPolicy::Never);
        assert_eq!(settings.grace, 2);
        assert_eq!(settings.log_format, LogFormat::Json);
        assert_eq!(
            settings.syslog.as_ref().map(ToString::to_string).as_deref(),
            Some("tcp://logs.internal:6514")
        );
        assert_eq!(
            settings.network.ipv4.unwrap().address.to_string(),
            "10.0.2.30/24"
        );
        assert_eq!(settings.network.dns.len(), 1);
        assert_eq!(settings.data.on_check_failure, OnCheckFailure::Start);
        assert_eq!(
            settings.data.size, DEFAULT_DATA_SIZE,
            "size is the host's business"
        );
        assert_eq!(env.len(), 2);
        assert!(RunConfig::default().is_empty());
        assert!(!run_config().is_empty());
    }

    #[test]
    fn data_sizes_take_binary_units_in_any_spelling() {
        let size = |text: &str| text.parse::<DataSize>().unwrap().bytes();
        assert_eq!(size("512M"), 512 << 20);
        assert_eq!(size("1G"), 1 << 30);
        assert_eq!(size("1GiB"), 1 << 30);
        assert_eq!(size("1gb"), 1 << 30);
        assert_eq!(size("2048MiB"), 2 << 30);
        assert_eq!(size(" 20 MiB "), 20 << 20);
        assert_eq!(size("16777216"), 16 << 20);
        assert_eq!(size("16777216B"), 16 << 20);
        assert_eq!(size("16385K"), (16 << 20) + 4096, "rounded up to 4 KiB");
        assert_eq!(size("2T"), 2 << 40);
        assert_eq!(MIN_DATA_SIZE.bytes(), 16 << 20);
        assert_eq!(DEFAULT_DATA_SIZE.to_string(), "1GiB");
    }

    #[test]
    fn bad_data_sizes_say_what_is_wrong() {
        let err = |text: &str| text.parse::<DataSize>().unwrap_err();
        assert!(err("15M").contains("minimum of 16MiB"), "{}", err("15M"));
        assert!(err("0").contains("minimum"));
        assert!(err("1.5G").contains("whole number"), "{}", err("1.5G"));
        assert!(err("1X").contains("unknown unit"), "{}", err("1X"));
        assert!(err("1 GiBs").contains("unknown unit"));
        assert!(err("big").contains("not a size"));
        assert!(err("").contains("not a size"));
        assert!(err("-1G").contains("not a size"));
        assert!(err("99999999999999999999").contains("too large"));
        assert!(err("17179869184T").contains("too large"));
    }

    #[test]
    fn data_sizes_print_in_the_largest_exact_unit_and_read_back() {
        for (bytes, text) in [
            (1u64 << 30, "1GiB"),
            (1536 << 20, "1536MiB"),
            ((16 << 20) + 4096, "16388KiB"),
            (3 << 40, "3TiB"),
        ] {
            let size = DataSize::from_bytes(bytes).unwrap();
            assert_eq!(size.to_string(), text);
            assert_eq!(text.parse::<DataSize>().unwrap(), size);
        }
        assert_eq!(
            DataSize::from_bytes((16 << 20) + 1).unwrap().bytes() % 4096,
            0
        );
        assert_eq!(DataSize::from_bytes(u64::MAX), None);
    }

    #[test]
    fn data_settings_parse_with_defaults() {
        let s: Settings = serde_json::from_str(r#"{"data":{"size":"2G"}}"#).unwrap();
        assert_eq!(s.data.size.bytes(), 2 << 30);
        assert_eq!(s.data.on_check_failure, OnCheckFailure::Stop);
        let s: Settings =
            serde_json::from_str(r#"{"data":{"size":33554432,"onCheckFailure":"start"}}"#).unwrap();
        assert_eq!(s.data.size.bytes(), 32 << 20);
        assert_eq!(s.data.on_check_failure, OnCheckFailure::Start);
        assert_eq!(Settings::default().data.size, DEFAULT_DATA_SIZE);
        let json = serde_json::to_string(&s.data).unwrap();
        assert_eq!(json, r#"{"size":"32MiB","onCheckFailure":"start"}"#);

        let err = |json: &str| {
            serde_json::from_str::<Settings>(json)
                .unwrap_err()
                .to_string()
        };
        assert!(err(r#"{"data":{"size":"1M"}}"#).contains("minimum"));
        assert!(err(r#"{"data":{"size":1.5}}"#).contains("expected a size"));
        assert!(err(r#"{"data":{"onCheckFailure":"maybe"}}"#).contains("start"));
        assert!(err(r#"{"data":{"sise":"1G"}}"#).contains("sise"));
    }

    #[test]
    fn check_failure_policy_and_status_names() {
        assert_eq!("start".parse(), Ok(OnCheckFailure::Start));
        assert_eq!("stop".parse(), Ok(OnCheckFailure::Stop));
        assert!(
            "go".parse::<OnCheckFailure>()
                .unwrap_err()
                .contains("stop or start")
        );
        assert_eq!(OnCheckFailure::Start.as_str(), "start");
        assert_eq!(CheckStatus::Repaired.as_str(), "repaired");
    }

    #[test]
    fn syslog_targets_parse_with_default_ports_and_print_back() {
        let target = |text: &str| text.parse::<SyslogTarget>().unwrap();
        let t = target("udp://10.0.2.2:514");
        assert_eq!(t.transport(), SyslogTransport::Udp);
        assert_eq!((t.host(), t.port()), ("10.0.2.2", 514));
        let t = target("tcp://logs.internal:6514");
        assert_eq!(t.transport(), SyslogTransport::Tcp);
        assert_eq!((t.host(), t.port()), ("logs.internal", 6514));
        let t = target("udp://[fec0::2]:5514");
        assert_eq!((t.host(), t.port()), ("fec0::2", 5514));
        assert_eq!(t.to_string(), "udp://[fec0::2]:5514");
        assert_eq!(target("udp://10.0.2.2").port(), SYSLOG_UDP_PORT);
        assert_eq!(target("tcp://logs").port(), SYSLOG_TCP_PORT);
        assert_eq!(target("tcp://[::1]").to_string(), "tcp://[::1]:601");
        assert_eq!(target("UDP://localhost").to_string(), "udp://localhost:514");
        for text in ["udp://10.0.2.2:514", "tcp://[fec0::2]:601", "tcp://a.b-c:1"] {
            assert_eq!(target(text).to_string(), text);
            assert_eq!(
                target(text).to_string().parse::<SyslogTarget>(),
                Ok(target(text))
            );
        }
    }

    #[test]
    fn bad_syslog_targets_say_what_is_accepted() {
        let err = |text: &str| text.parse::<SyslogTarget>().unwrap_err();
        for (text, why) in [
            ("10.0.2.2:514", "does not start with udp:// or tcp://"),
            ("http://10.0.2.2:514", "unknown transport \"http\""),
            ("udp://", "the host is missing"),
            ("udp://:514", "the host is missing"),
            (
                "udp://10.0.2.2:0",
                "port \"0\" is not a number from 1 to 65535",
            ),
            ("udp://10.0.2.2:65536", "from 1 to 65535"),
            ("udp://10.0.2.2:", "port \"\" is not"),
            ("udp://10.0.2.2:514/", "port \"514/\" is not"),
            ("udp://fec0::2:514", "IPv6 address must be in brackets"),
            ("udp://[fec0::2", "`]` is missing"),
            ("udp://[fec0::zz]:514", "is not an IPv6 address"),
            ("udp://[fec0::2]514", "unexpected \"514\""),
            (
                "tcp://bad_name:601",
                "\"bad_name\" is not an IP address or host name",
            ),
            ("tcp://user@host:601", "is not an IP address or host name"),
        ] {
            let e = err(text);
            assert!(e.contains(why), "{text}: {e}");
            assert!(
                e.contains("expected udp://HOST:PORT or tcp://HOST:PORT"),
                "{e}"
            );
        }
    }

    #[test]
    fn syslog_setting_is_a_url_string_and_absent_by_default() {
        let s: Settings = serde_json::from_str(r#"{"syslog":"udp://10.0.2.2:514"}"#).unwrap();
        assert_eq!(s.syslog, Some("udp://10.0.2.2:514".parse().unwrap()));
        assert!(s.validate().is_ok());
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains(r#""syslog":"udp://10.0.2.2:514""#), "{json}");
        let json = serde_json::to_string(&Settings::default()).unwrap();
        assert!(!json.contains("syslog"), "{json}");
        let err = serde_json::from_str::<Settings>(r#"{"syslog":"udp:10.0.2.2"}"#).unwrap_err();
        assert!(err.to_string().contains("udp://HOST:PORT"), "{err}");
        let err = serde_json::from_str::<Settings>(r#"{"syslog":514}"#).unwrap_err();
        assert!(err.to_string().contains("string"), "{err}");
    }

    #[test]
    fn an_overlong_check_summary_is_refused() {
        let mut c = RunConfig {
            data_check: Some(DataCheck {
                status: CheckStatus::Failed,
                summary: "x".repeat(MAX_CHECK_SUMMARY),
            }),
            ..RunConfig::default()
        };
        assert!(c.validate().is_ok());
        c.data_check.as_mut().unwrap().summary.push('x');
        assert_eq!(c.validate().unwrap_err().key, "dataCheck.summary");
    }
}
