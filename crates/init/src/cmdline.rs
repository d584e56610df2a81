//! The `nodeos.*` parameters of the kernel command line (`/proc/cmdline`).
//!
//! | parameter | default | meaning |
//! |---|---|---|
//! | `nodeos.ip=ADDR/PREFIX` | none: DHCP | static IPv4 address of the first NIC (no DHCP) |
//! | `nodeos.gw=ADDR` | `10.0.2.2` | default gateway with `nodeos.ip` |
//! | `nodeos.dns=ADDR[,ADDR…]` | `10.0.2.3` | name servers for `/run/resolv.conf` with `nodeos.ip` |
//! | `nodeos.dhcp_timeout=SECONDS` | `10` | how long to wait for a DHCP lease at boot (1–300) |
//! | `nodeos.grace=SECONDS` | `10` | how long the app has between SIGTERM and SIGKILL |
//!
//! The static defaults are what QEMU's user-mode networking hands out. A malformed
//! value is an error (init powers off with a message); an unknown `nodeos.*`
//! key is a warning, so newer hosts can boot older images.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use crate::error::Error;

/// The longest grace period `nodeos.grace` accepts (an hour).
pub const MAX_GRACE_SECS: u64 = 3600;
/// The longest boot-time DHCP wait `nodeos.dhcp_timeout` accepts (5 minutes).
pub const MAX_DHCP_TIMEOUT_SECS: u64 = 300;

/// Settings taken from the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootParams {
    /// `nodeos.ip`: a static address; `None` means DHCP.
    pub ip: Option<Ipv4Addr>,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub dns: Vec<IpAddr>,
    pub grace: Duration,
    /// How long the boot waits for a DHCP lease before starting the app without one.
    pub dhcp_timeout: Duration,
    /// `nodeos.*` keys this init does not know, to warn about.
    pub unknown: Vec<String>,
}

impl Default for BootParams {
    fn default() -> Self {
        BootParams {
            ip: None,
            prefix: 24,
            gateway: Ipv4Addr::new(10, 0, 2, 2),
            dns: vec![IpAddr::V4(Ipv4Addr::new(10, 0, 2, 3))],
            grace: Duration::from_secs(10),
            dhcp_timeout: Duration::from_secs(10),
            unknown: Vec::new(),
        }
    }
}

impl BootParams {
    /// Parses the text of `/proc/cmdline`; parameters outside `nodeos.` are ignored.
    pub fn parse(cmdline: &str) -> Result<Self, Error> {
        let mut params = BootParams::default();
        for word in cmdline.split_ascii_whitespace() {
            let Some(rest) = word.strip_prefix("nodeos.") else {
                continue;
            };
            let (key, value) = rest.split_once('=').unwrap_or((rest, ""));
            let bad = |problem: &str| Error::Cmdline {
                param: word.to_string(),
                problem: problem.to_string(),
            };
            match key {
                "ip" => {
                    let (addr, prefix) = value
                        .split_once('/')
                        .ok_or_else(|| bad("expected ADDR/PREFIX, e.g. 10.0.2.15/24"))?;
                    params.ip = Some(addr.parse().map_err(|_| bad("not an IPv4 address"))?);
                    params.prefix = prefix
                        .parse()
                        .ok()
                        .filter(|p| *p <= 32)
                        .ok_or_else(|| bad("prefix must be a number from 0 to 32"))?;
                }
                "gw" => params.gateway = value.parse().map_err(|_| bad("not an IPv4 address"))?,
                "dns" => {
                    params.dns = value
                        .split(',')
                        .map(|a| a.parse())
                        .collect::<Result<_, _>>()
                        .map_err(|_| bad("expected IP addresses separated by commas"))?;
                }
                "grace" => {
                    let secs: u64 = value
                        .parse()
                        .ok()
                        .filter(|secs| *secs <= MAX_GRACE_SECS)
                        .ok_or_else(|| bad("expected a whole number of seconds, at most 3600"))?;
                    params.grace = Duration::from_secs(secs);
                }
                "dhcp_timeout" => {
                    let secs: u64 = value
                        .parse()
                        .ok()
                        .filter(|secs| (1..=MAX_DHCP_TIMEOUT_SECS).contains(secs))
                        .ok_or_else(|| bad("expected a whole number of seconds from 1 to 300"))?;
                    params.dhcp_timeout = Duration::from_secs(secs);
                }
                _ => params.unknown.push(word.to_string()),
            }
        }
        Ok(params)
    }

    /// The netmask of [`BootParams::prefix`].
    pub fn netmask(&self) -> Ipv4Addr {
        netmask(self.prefix)
    }
}

/// The IPv4 netmask of a prefix length, e.g. 255.255.255.0 for 24.
pub fn netmask(prefix: u8) -> Ipv4Addr {
    let bits = u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0);
    Ipv4Addr::from(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    const QEMU: &str = "console=ttyS0 root=/dev/vda ro rootfstype=erofs panic=-1 loglevel=4\n";

    #[test]
    fn no_nodeos_params_gives_dhcp_and_qemu_user_networking_defaults() {
        let p = BootParams::parse(QEMU).unwrap();
        assert_eq!(p, BootParams::default());
        assert_eq!(p.ip, None);
        assert_eq!(p.dhcp_timeout, Duration::from_secs(10));
        assert_eq!(p.netmask().to_string(), "255.255.255.0");
        assert_eq!(p.gateway.to_string(), "10.0.2.2");
        assert_eq!(p.dns, vec!["10.0.2.3".parse::<IpAddr>().unwrap()]);
        assert_eq!(p.grace, Duration::from_secs(10));
    }

    #[test]
    fn all_params_are_read() {
        let p = BootParams::parse(&format!(
            "{QEMU} nodeos.ip=192.168.7.9/16 nodeos.gw=192.168.0.1 nodeos.dns=1.1.1.1,2606:4700::1111 nodeos.grace=3 nodeos.dhcp_timeout=30 nodeos.future=1"
        ))
        .unwrap();
        assert_eq!(p.ip, Some(Ipv4Addr::new(192, 168, 7, 9)));
        assert_eq!(p.dhcp_timeout, Duration::from_secs(30));
        assert_eq!(p.prefix, 16);
        assert_eq!(p.netmask(), Ipv4Addr::new(255, 255, 0, 0));
        assert_eq!(p.gateway, Ipv4Addr::new(192, 168, 0, 1));
        assert_eq!(p.dns.len(), 2);
        assert_eq!(p.grace, Duration::from_secs(3));
        assert_eq!(p.unknown, vec!["nodeos.future=1".to_string()]);
    }

    #[test]
    fn netmask_edges() {
        assert_eq!(netmask(0), Ipv4Addr::new(0, 0, 0, 0));
        assert_eq!(netmask(8), Ipv4Addr::new(255, 0, 0, 0));
        assert_eq!(netmask(31), Ipv4Addr::new(255, 255, 255, 254));
        assert_eq!(netmask(32), Ipv4Addr::new(255, 255, 255, 255));
    }

    #[test]
    fn malformed_values_are_errors_naming_the_param() {
        for bad in [
            "nodeos.ip=10.0.2.15",
            "nodeos.ip=10.0.2.300/24",
            "nodeos.ip=10.0.2.15/33",
            "nodeos.gw=fe80::1",
            "nodeos.dns=",
            "nodeos.dns=1.1.1.1,x",
            "nodeos.grace=-1",
            "nodeos.grace=1.5",
            "nodeos.grace=3601",
            "nodeos.grace=18446744073709551615",
            "nodeos.dhcp_timeout=0",
            "nodeos.dhcp_timeout=301",
            "nodeos.dhcp_timeout=x",
        ] {
            let err = BootParams::parse(&format!("{QEMU} {bad}")).unwrap_err();
            assert!(err.to_string().contains(bad), "{bad}: {err}");
        }
    }
}
