//! Settings only the host reads: how `nodeos run` starts the VM when its
//! flags do not say (package.json's `memory`, `cpus` and `ports` in the
//! `"nodeos"` key, kept in the manifest as [`VmSettings`]).
//!
//! The guest never sees them, so they are not part of [`crate::Settings`].

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Guest memory `nodeos run` gives without `--memory` or `memory`, in MiB.
pub const DEFAULT_MEMORY_MIB: u32 = 256;
/// Accepted guest memory, in MiB.
pub const MEMORY_MIB_RANGE: std::ops::RangeInclusive<u32> = 32..=1_048_576;
/// Virtual CPUs `nodeos run` gives without `--cpus` or `cpus`.
pub const DEFAULT_CPUS: u32 = 1;
/// Accepted number of virtual CPUs.
pub const CPUS_RANGE: std::ops::RangeInclusive<u32> = 1..=64;

/// How `nodeos run` starts the VM unless its flags say otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VmSettings {
    /// Guest memory in MiB ([`DEFAULT_MEMORY_MIB`] when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u32>,
    /// Virtual CPUs ([`DEFAULT_CPUS`] when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    /// Host ports forwarded into the guest when `nodeos run` is given no
    /// `-p`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortForward>,
}

impl VmSettings {
    /// Whether nothing is set (the manifest then leaves the key out).
    pub fn is_empty(&self) -> bool {
        *self == VmSettings::default()
    }

    /// The first value out of range, as (key, problem).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Some(memory) = self.memory.filter(|m| !MEMORY_MIB_RANGE.contains(m)) {
            return Err((
                "memory",
                format!(
                    "{memory} MiB is outside {}–{} MiB",
                    MEMORY_MIB_RANGE.start(),
                    MEMORY_MIB_RANGE.end()
                ),
            ));
        }
        if let Some(cpus) = self.cpus.filter(|c| !CPUS_RANGE.contains(c)) {
            return Err((
                "cpus",
                format!(
                    "{cpus} is outside {}–{}",
                    CPUS_RANGE.start(),
                    CPUS_RANGE.end()
                ),
            ));
        }
        Ok(())
    }
}

/// A TCP port forwarded from the host into the guest (QEMU user
/// networking), written `HOST:GUEST` (host address 127.0.0.1),
/// `ADDR:HOST:GUEST` or `[V6ADDR]:HOST:GUEST`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortForward {
    pub host_addr: IpAddr,
    pub host_port: u16,
    pub guest_port: u16,
}

impl PortForward {
    /// Forwards `127.0.0.1:host_port` to `guest_port`.
    pub fn localhost(host_port: u16, guest_port: u16) -> PortForward {
        PortForward {
            host_addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            host_port,
            guest_port,
        }
    }
}

impl fmt::Display for PortForward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host_addr {
            IpAddr::V6(a) => write!(f, "[{a}]:{}:{}", self.host_port, self.guest_port),
            IpAddr::V4(a) => write!(f, "{a}:{}:{}", self.host_port, self.guest_port),
        }
    }
}

/// A port forward that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortForwardError {
    pub value: String,
    pub reason: String,
}

impl fmt::Display for PortForwardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid port forward `{}`: {} (expected HOST:GUEST or ADDR:HOST:GUEST, e.g. 8080:3000)",
            self.value, self.reason
        )
    }
}

impl std::error::Error for PortForwardError {}

impl FromStr for PortForward {
    type Err = PortForwardError;

    fn from_str(value: &str) -> Result<Self, PortForwardError> {
        let bad = |reason: String| PortForwardError {
            value: value.into(),
            reason,
        };
        let (host, guest) = value
            .rsplit_once(':')
            .ok_or_else(|| bad("missing `:`".into()))?;
        let (addr, host_port) = match host.rsplit_once(':') {
            None => (IpAddr::V4(Ipv4Addr::LOCALHOST), host),
            Some((addr, port)) => {
                let addr = addr
                    .strip_prefix('[')
                    .and_then(|a| a.strip_suffix(']'))
                    .unwrap_or(addr);
                let addr = addr
                    .parse::<IpAddr>()
                    .map_err(|_| bad(format!("`{addr}` is not an IP address")))?;
                (addr, port)
            }
        };
        let port = |what: &str, text: &str| -> Result<u16, PortForwardError> {
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(format!("{what} port `{text}` is not a number")));
            }
            match text.parse::<u32>() {
                Ok(0) => Err(bad(format!("{what} port must not be 0"))),
                Ok(p) if p <= u32::from(u16::MAX) => Ok(p as u16),
                _ => Err(bad(format!("{what} port `{text}` is larger than 65535"))),
            }
        };
        Ok(PortForward {
            host_addr: addr,
            host_port: port("host", host_port)?,
            guest_port: port("guest", guest)?,
        })
    }
}

impl Serialize for PortForward {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortForward {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(|e: PortForwardError| {
            serde::de::Error::custom(format!(
                "{}; expected \"HOST:GUEST\" or \"ADDR:HOST:GUEST\", e.g. \"8080:3000\"",
                e.reason
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_forward_parses_host_and_guest() {
        assert_eq!(
            "8080:3000".parse::<PortForward>().unwrap(),
            PortForward::localhost(8080, 3000)
        );
        let any: PortForward = "0.0.0.0:8080:3000".parse().unwrap();
        assert_eq!(any.host_addr, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!((any.host_port, any.guest_port), (8080, 3000));
        let v6: PortForward = "[::1]:80:8080".parse().unwrap();
        assert_eq!(v6.host_addr, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(v6.to_string(), "[::1]:80:8080");
        assert_eq!(any.to_string(), "0.0.0.0:8080:3000");
    }

    #[test]
    fn port_forward_rejects_bad_values_clearly() {
        let reason = |s: &str| s.parse::<PortForward>().unwrap_err().reason;
        assert_eq!(reason("0:3000"), "host port must not be 0");
        assert_eq!(reason("8080:0"), "guest port must not be 0");
        assert_eq!(reason("http:3000"), "host port `http` is not a number");
        assert_eq!(reason("8080:-1"), "guest port `-1` is not a number");
        assert_eq!(
            reason("70000:3000"),
            "host port `70000` is larger than 65535"
        );
        assert_eq!(
            reason("8080:99999999999"),
            "guest port `99999999999` is larger than 65535"
        );
        assert_eq!(reason("8080"), "missing `:`");
        assert_eq!(reason(":3000"), "host port `` is not a number");
        assert_eq!(
            reason("localhost:80:3000"),
            "`localhost` is not an IP address"
        );
        let message = "0:1".parse::<PortForward>().unwrap_err().to_string();
        assert!(message.contains("e.g. 8080:3000"), "{message}");
    }

    #[test]
    fn vm_settings_round_trip_as_strings_and_check_ranges() {
        let json = r#"{"memory":512,"cpus":2,"ports":["8080:3000","0.0.0.0:8443:443"]}"#;
        let vm: VmSettings = serde_json::from_str(json).unwrap();
        assert_eq!(
            vm.ports,
            vec![
                PortForward::localhost(8080, 3000),
                "0.0.0.0:8443:443".parse().unwrap()
            ]
        );
        assert_eq!(
            serde_json::to_string(&vm).unwrap(),
            json.replace("\"8080:3000\"", "\"127.0.0.1:8080:3000\"")
        );
        assert!(VmSettings::default().is_empty());
        assert_eq!(vm.validate(), Ok(()));
        let low = VmSettings {
            memory: Some(16),
            ..VmSettings::default()
        };
        assert_eq!(low.validate().unwrap_err().0, "memory");
        let many = VmSettings {
            cpus: Some(65),
            ..VmSettings::default()
        };
        assert_eq!(many.validate().unwrap_err().0, "cpus");
        let err = serde_json::from_str::<VmSettings>(r#"{"ports":["8080"]}"#).unwrap_err();
        assert!(err.to_string().contains("missing `:`"), "{err}");
    }
}
