//! Phase 6, network: loopback, the hostname, `/run/hosts`, and the first
//! Ethernet interface: DHCPv4 by default, or the static IPv4 address of the
//! settings (`network.ipv4`); a static IPv6 address too with
//! `network.ipv6`; `/run/resolv.conf`.
//!
//! DHCP: the NIC is brought up, [`crate::dhcp::Acquire`] runs over a UDP
//! socket bound to port 68 on that NIC for at most `network.dhcpTimeout`,
//! and the lease is applied. Then a background thread keeps it: renewal at
//! T1, rebinding at T2, a fresh DISCOVER after a NAK or an expired lease,
//! and, when boot got no answer, more attempts every minute.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use dhcproto::v4::Message;
use dhcproto::{Decodable, Decoder, Encodable};
use nodeos_manifest::settings::{Cidr, Network};
use nodeos_manifest::{RUN_HOSTS, RUN_RESOLV_CONF};

use crate::dhcp::{self, Acquire, ClientId, Lease, RenewAnswer, Step};
use crate::error::Error;
use crate::sys::NetSocket;
use crate::system::System;
use crate::{config, say};

/// How long one background acquisition round lasts, and the pause after a
/// round with no answer.
const BACKGROUND_ROUND: Duration = Duration::from_secs(60);
/// DNS server with a static address and no `network.dns`: QEMU's user-mode resolver.
pub const DEFAULT_DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);

/// Brings the network up. No NIC, or no DHCP answer in time, is a console
/// line, not an error: the app starts anyway.
pub fn setup(sys: &mut impl System, network: &Network, app_name: &str) -> Result<(), Error> {
    let sock = NetSocket::new().map_err(|source| Error::Net {
        iface: "-".into(),
        action: "open a socket",
        source,
    })?;
    configure(
        &sock,
        "lo",
        Cidr {
            addr: Ipv4Addr::LOCALHOST,
            prefix: 8,
        },
        None,
    )?;
    let host = config::hostname(app_name);
    if let Err(e) = sys.set_hostname(&host) {
        say!("warning: cannot set hostname {host:?}: {e}");
    }
    write_run_file(sys, RUN_HOSTS, &config::hosts(&host, &network.hosts))?;
    let static_dns = if network.dns.is_empty() {
        vec![IpAddr::V4(DEFAULT_DNS)]
    } else {
        network.dns.clone()
    };
    let Some(nic) = first_nic(Path::new("/sys/class/net")) else {
        say!("warning: no network interface found; the app runs without a network");
        return write_run_file(sys, RUN_RESOLV_CONF, &config::resolv_conf(&network.dns));
    };
    if let Some(v6) = network.ipv6 {
        configure_ipv6(&sock, &nic, v6)?;
    }
    match network.ipv4 {
        Some(v4) => {
            configure(&sock, &nic, v4.address, v4.gateway)?;
            let via = v4.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
            say!("network: {nic} {}{via} (static)", v4.address);
            write_run_file(sys, RUN_RESOLV_CONF, &config::resolv_conf(&static_dns))
        }
        None => {
            if !network.dns.is_empty() {
                write_run_file(sys, RUN_RESOLV_CONF, &config::resolv_conf(&network.dns))?;
            }
            let timeout = Duration::from_secs(u64::from(network.dhcp_timeout));
            start_dhcp(sock, nic, host, timeout, !network.dns.is_empty())
        }
    }
}

fn configure_ipv6(
    sock: &NetSocket,
    nic: &str,
    v6: nodeos_manifest::settings::StaticIpv6,
) -> Result<(), Error> {
    let fail = |action| {
        move |source| Error::Net {
            iface: nic.into(),
            action,
            source,
        }
    };
    sock.set_up(nic).map_err(fail("bring the link up"))?;
    let v6sock = crate::sys::Net6Socket::new().map_err(fail("open an IPv6 socket"))?;
    v6sock
        .add_addr(nic, v6.address.addr, v6.address.prefix)
        .map_err(fail("set the IPv6 address"))?;
    if let Some(gw) = v6.gateway {
        v6sock
            .add_default_route(nic, gw)
            .map_err(fail("add the IPv6 default route"))?;
    }
    let via = v6.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
    say!("network: {nic} {}{via} (static)", v6.address);
    Ok(())
}

fn write_run_file(sys: &mut impl System, path: &str, text: &str) -> Result<(), Error> {
    sys.write(Path::new(path), text.as_bytes())
        .map_err(|source| Error::Write {
            path: path.into(),
            source,
        })
}

/// For the DHCP thread, which has no [`System`] of its own.
fn write_resolv_conf(text: &str) -> Result<(), Error> {
    write_run_file(&mut crate::system::Linux, RUN_RESOLV_CONF, text)
}

/// The DHCP client of one NIC: its socket, identity and the ioctl socket
/// to apply leases with.
struct Dhcp {
    nic: String,
    /// `network.dns` is set: keep its resolv.conf, ignore the lease's servers.
    fixed_dns: bool,
    id: ClientId,
    udp: UdpSocket,
    sock: NetSocket,
}

fn start_dhcp(
    sock: NetSocket,
    nic: String,
    hostname: String,
    timeout: Duration,
    fixed_dns: bool,
) -> Result<(), Error> {
    let fail = |action| {
        let iface = nic.clone();
        move |source| Error::Net {
            iface,
            action,
            source,
        }
    };
    sock.set_up(&nic).map_err(fail("bring the link up"))?;
    let mac = read_mac(&Path::new("/sys/class/net").join(&nic).join("address"))
        .map_err(fail("read the MAC address"))?;
    let udp = dhcp_socket(&nic).map_err(fail("open the DHCP socket (UDP port 68)"))?;
    let client = Dhcp {
        id: ClientId { mac, hostname },
        nic,
        fixed_dns,
        udp,
        sock,
    };
    let lease = client.acquire(Instant::now() + timeout);
    let bound = match lease {
        Some(lease) => {
            client.apply(&lease, None)?;
            say!("{}", client.summary(&lease));
            Some((lease, Instant::now()))
        }
        None => {
            say!(
                "error: no DHCP answer on {} within {}s; the app starts without an IPv4 address \
                 (DHCP keeps trying in the background; set `nodeos.network.ipv4` in package.json for a static address)",
                client.nic,
                timeout.as_secs()
            );
            if !client.fixed_dns {
                write_resolv_conf("")?;
            }
            None
        }
    };
    let spawned = std::thread::Builder::new()
        .name("dhcp".into())
        .spawn(move || client.maintain(bound));
    if let Err(e) = spawned {
        say!("warning: cannot start the DHCP renewal thread: {e}; the lease will not be renewed");
    }
    Ok(())
}

/// A UDP socket on 0.0.0.0:68 bound to `nic` that may broadcast; it works
/// before the interface has an address.
fn dhcp_socket(nic: &str) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_broadcast(true)?;
    s.bind_device(Some(nic.as_bytes()))?;
    s.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68).into())?;
    Ok(s.into())
}

/// Parses `/sys/class/net/<nic>/address` (`52:54:00:12:34:56`).
fn read_mac(path: &Path) -> io::Result<[u8; 6]> {
    let text = std::fs::read_to_string(path)?;
    parse_mac(text.trim()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad MAC address {text:?}"),
        )
    })
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

fn new_xid(mac: &[u8; 6]) -> u32 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    dhcp::make_xid(mac, nanos)
}

const SERVER_PORT: u16 = 67;

impl Dhcp {
    fn send(&self, msg: &Message, to: Ipv4Addr) {
        let sent = msg
            .to_vec()
            .map_err(io::Error::other)
            .and_then(|bytes| self.udp.send_to(&bytes, SocketAddrV4::new(to, SERVER_PORT)));
        if let Err(e) = sent {
            say!("warning: cannot send a DHCP message on {}: {e}", self.nic);
        }
    }

    /// Waits until `until` for a message; `None` when the time is up. Never
    /// spins: a receive error other than the timeout sleeps out the wait.
    fn recv(&self, until: Instant) -> Option<Message> {
        let mut buf = [0u8; 1500];
        loop {
            let left = until
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())?;
            if self.udp.set_read_timeout(Some(left)).is_err() {
                std::thread::sleep(left);
                return None;
            }
            match self.udp.recv(&mut buf) {
                Ok(n) => {
                    if let Ok(msg) = Message::decode(&mut Decoder::new(&buf[..n])) {
                        return Some(msg);
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return None;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    std::thread::sleep(left);
                    return None;
                }
            }
        }
    }

    /// DISCOVER → OFFER → REQUEST → ACK, retransmitting, until `deadline`.
    fn acquire(&self, deadline: Instant) -> Option<Lease> {
        let mut state = Acquire::new(self.id.clone(), new_xid(&self.id.mac));
        'send: loop {
            if Instant::now() >= deadline {
                return None;
            }
            let (msg, wait) = state.packet();
            self.send(&msg, Ipv4Addr::BROADCAST);
            let until = (Instant::now() + wait).min(deadline);
            while let Some(reply) = self.recv(until) {
                match state.receive(&reply) {
                    Step::Ignore => {}
                    Step::Send => continue 'send,
                    Step::Bound(lease) => return Some(lease),
                }
            }
            state.timeout();
        }
    }

    /// Configures `lease` (address, mask, route, resolv.conf); with the
    /// previous lease, only what changed.
    fn apply(&self, lease: &Lease, old: Option<&Lease>) -> Result<(), Error> {
        let same_addr = old.is_some_and(|o| {
            o.addr == lease.addr && o.prefix == lease.prefix && o.router == lease.router
        });
        if !same_addr {
            let addr = Cidr {
                addr: lease.addr,
                prefix: lease.prefix,
            };
            configure(&self.sock, &self.nic, addr, lease.router)?;
        }
        if !self.fixed_dns && old.is_none_or(|o| o.dns != lease.dns) {
            write_resolv_conf(&dhcp::resolv_conf(lease))?;
        }
        Ok(())
    }

    /// `network: eth0 10.0.2.15/24 via 10.0.2.2 (dhcp, lease 86400s)`.
    fn summary(&self, lease: &Lease) -> String {
        let via = lease
            .router
            .map(|r| format!(" via {r}"))
            .unwrap_or_default();
        let time = if lease.lease.as_secs() == u64::from(u32::MAX) {
            "infinite".to_string()
        } else {
            format!("{}s", lease.lease.as_secs())
        };
        format!(
            "network: {} {}/{}{via} (dhcp, lease {time})",
            self.nic, lease.addr, lease.prefix
        )
    }

    /// The renewal thread: never returns, never spins.
    fn maintain(self, mut bound: Option<(Lease, Instant)>) {
        loop {
            let Some((lease, since)) = bound.take() else {
                match self.acquire(Instant::now() + BACKGROUND_ROUND) {
                    Some(lease) => {
                        self.apply_logged(&lease, None);
                        say!("{}", self.summary(&lease));
                        bound = Some((lease, Instant::now()));
                    }
                    None => std::thread::sleep(BACKGROUND_ROUND),
                }
                continue;
            };
            sleep_until(since.checked_add(lease.t1));
            match self.renew(&lease, since) {
                Some(new) => {
                    self.apply_logged(&new, Some(&lease));
                    say!("{} renewed", self.summary(&new));
                    bound = Some((new, Instant::now()));
                }
                None => say!(
                    "warning: DHCP lease of {} on {} not renewed; asking for a new one",
                    lease.addr,
                    self.nic
                ),
            }
        }
    }

    fn apply_logged(&self, lease: &Lease, old: Option<&Lease>) {
        if let Err(e) = self.apply(lease, old) {
            say!("error: {}", crate::error_chain(&e));
        }
    }

    /// RENEWING (unicast to the server) until T2, then REBINDING (broadcast)
    /// until the lease ends. `None` on NAK or expiry.
    fn renew(&self, lease: &Lease, since: Instant) -> Option<Lease> {
        let phases = [(lease.t2, lease.server), (lease.lease, Ipv4Addr::BROADCAST)];
        for (end, to) in phases {
            let Some(deadline) = since.checked_add(end) else {
                continue;
            };
            while let Some(left) = deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
            {
                let xid = new_xid(&self.id.mac);
                self.send(&dhcp::renew_request(&self.id, xid, lease), to);
                let until = Instant::now() + dhcp::renew_wait(left);
                while let Some(reply) = self.recv(until) {
                    match dhcp::renew_answer(&reply, &self.id, xid) {
                        Some(RenewAnswer::Ack(new)) => return Some(new),
                        Some(RenewAnswer::Nak) => return None,
                        None => {}
                    }
                }
            }
        }
        None
    }
}

/// Sleeps until `t`; `None` (too far to represent) sleeps for ever.
fn sleep_until(t: Option<Instant>) {
    loop {
        let left = match t {
            Some(t) => match t.checked_duration_since(Instant::now()) {
                Some(d) if !d.is_zero() => d,
                _ => return,
            },
            None => Duration::from_secs(u64::from(u32::MAX)),
        };
        std::thread::sleep(left);
    }
}

fn configure(
    sock: &NetSocket,
    iface: &str,
    addr: Cidr<Ipv4Addr>,
    gateway: Option<Ipv4Addr>,
) -> Result<(), Error> {
    let fail = |action| {
        move |source| Error::Net {
            iface: iface.into(),
            action,
            source,
        }
    };
    sock.set_addr(iface, addr.addr)
        .map_err(fail("set the IPv4 address"))?;
    sock.set_netmask(iface, addr.netmask())
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
    fn mac_addresses_from_sysfs() {
        assert_eq!(
            parse_mac("52:54:00:12:34:56"),
            Some([0x52, 0x54, 0, 0x12, 0x34, 0x56])
        );
        assert_eq!(parse_mac("52:54:00:12:34"), None);
        assert_eq!(parse_mac("52:54:00:12:34:56:78"), None);
        assert_eq!(parse_mac("zz:54:00:12:34:56"), None);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("address");
        std::fs::write(&path, "52:54:00:12:34:56\n").unwrap();
        assert_eq!(read_mac(&path).unwrap()[5], 0x56);
    }

    #[test]
    fn no_nic_is_none() {
        let dir = tempfile::tempdir().unwrap();
        iface(dir.path(), "lo", "772");
        assert_eq!(first_nic(dir.path()), None);
        assert_eq!(first_nic(&dir.path().join("missing")), None);
    }
}
