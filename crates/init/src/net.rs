//! Phase 4, network: loopback, the first Ethernet interface with a static
//! IPv4 address and default route, `/run/resolv.conf`, the hostname.

use std::path::Path;

use crate::cmdline::BootParams;
use crate::error::Error;
use crate::sys::NetSocket;
use crate::{config, say};

/// Where the resolver config goes (`/etc/resolv.conf` is a symlink to it).
pub const RESOLV_CONF: &str = "/run/resolv.conf";

/// Brings the network up. No NIC is a warning, not an error.
pub fn setup(params: &BootParams, app_name: &str) -> Result<(), Error> {
    let sock = NetSocket::new().map_err(|source| Error::Net {
        iface: "-".into(),
        action: "open a socket",
        source,
    })?;
    configure(&sock, "lo", std::net::Ipv4Addr::LOCALHOST, 8, None)?;
    match first_nic(Path::new("/sys/class/net")) {
        Some(nic) => {
            configure(&sock, &nic, params.ip, params.prefix, Some(params.gateway))?;
            say!(
                "network: {nic} {}/{} via {}",
                params.ip,
                params.prefix,
                params.gateway
            );
        }
        None => say!("warning: no network interface found; the app runs without a network"),
    }
    let text = config::resolv_conf(&params.dns);
    std::fs::write(RESOLV_CONF, text).map_err(|source| Error::Write {
        path: RESOLV_CONF.into(),
        source,
    })?;
    let host = config::hostname(app_name);
    if let Err(e) = rustix::system::sethostname(host.as_bytes()) {
        say!("warning: cannot set hostname {host:?}: {e}");
    }
    Ok(())
}

fn configure(
    sock: &NetSocket,
    iface: &str,
    addr: std::net::Ipv4Addr,
    prefix: u8,
    gateway: Option<std::net::Ipv4Addr>,
) -> Result<(), Error> {
    let fail = |action| {
        move |source| Error::Net {
            iface: iface.into(),
            action,
            source,
        }
    };
    let mask = BootParams {
        prefix,
        ..BootParams::default()
    }
    .netmask();
    sock.set_addr(iface, addr)
        .map_err(fail("set the IPv4 address"))?;
    sock.set_netmask(iface, mask)
        .map_err(fail("set the netmask"))?;
    sock.set_up(iface).map_err(fail("bring the link up"))?;
    if let Some(gw) = gateway {
        sock.add_default_route(iface, gw)
            .map_err(fail("add the default route"))?;
    }
    Ok(())
}

/// The first (by name) Ethernet interface under `/sys/class/net`: type 1
/// (ARPHRD_ETHER) and not loopback. Usually `eth0`.
pub fn first_nic(class_net: &Path) -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir(class_net)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name != "lo")
        .filter(|name| {
            std::fs::read_to_string(class_net.join(name).join("type"))
                .is_ok_and(|t| t.trim() == "1")
        })
        .collect();
    names.sort();
    names.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(dir: &Path, name: &str, kind: &str) {
        std::fs::create_dir(dir.join(name)).unwrap();
        std::fs::write(dir.join(name).join("type"), format!("{kind}\n")).unwrap();
    }

    #[test]
    fn picks_the_first_ethernet_interface() {
        let dir = tempfile::tempdir().unwrap();
        iface(dir.path(), "lo", "772");
        iface(dir.path(), "sit0", "776");
        iface(dir.path(), "eth1", "1");
        iface(dir.path(), "eth0", "1");
        assert_eq!(first_nic(dir.path()).as_deref(), Some("eth0"));
    }

    #[test]
    fn no_nic_is_none() {
        let dir = tempfile::tempdir().unwrap();
        iface(dir.path(), "lo", "772");
        assert_eq!(first_nic(dir.path()), None);
        assert_eq!(first_nic(&dir.path().join("missing")), None);
    }
}
