//! The DHCPv4 client protocol (RFC 2131) as a pure state machine: messages
//! in, messages out, time passed in by the caller. No sockets, no clock, so
//! every step is unit-tested; [`crate::net`] does the I/O.
//!
//! * Boot: [`Acquire`] sends DISCOVER, takes the first OFFER, sends REQUEST
//!   for it, and ends with a [`Lease`] on ACK. A NAK (or four REQUESTs with
//!   no answer) starts over with DISCOVER and a new transaction id. Each
//!   packet is resent after [`retransmit_delay`] (1, 2, 4, 4… s); the caller
//!   bounds the whole exchange.
//! * Renewal: at T1 a REQUEST for the same address goes to the server that
//!   granted it ([`renew_request`], RENEWING), at T2 to everyone (REBINDING);
//!   [`renew_wait`] spaces the retries. An ACK is a new [`Lease`]
//!   ([`Lease::from_ack`]).

use std::net::Ipv4Addr;
use std::time::Duration;

use dhcproto::v4::{
    DhcpOption, DhcpOptions, Flags, HType, Message, MessageType, Opcode, OptionCode,
};

/// REQUESTs sent for one OFFER before starting over with DISCOVER.
pub const REQUEST_TRIES: u32 = 4;
/// The shortest wait between renewal retries (RFC 2131 §4.4.5: 60 s).
pub const MIN_RENEW_WAIT: Duration = Duration::from_secs(60);

/// Who we are on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientId {
    pub mac: [u8; 6],
    /// Sent as option 12 so the server can register the name.
    pub hostname: String,
}

/// An accepted lease: what to configure and when to renew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    /// The server that granted it (option 54).
    pub server: Ipv4Addr,
    /// Lease time (option 51); `u32::MAX` seconds means infinite.
    pub lease: Duration,
    /// Renewal time T1 (option 58, else half the lease).
    pub t1: Duration,
    /// Rebinding time T2 (option 59, else 7/8 of the lease).
    pub t2: Duration,
}

/// Lease time when the server sends none (RFC 2131 leaves it to the client).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(3600);

impl Lease {
    /// The lease an ACK grants, or `None` if it is not a usable ACK.
    pub fn from_ack(msg: &Message) -> Option<Lease> {
        if msg.opcode() != Opcode::BootReply || msg.opts().msg_type() != Some(MessageType::Ack) {
            return None;
        }
        let addr = msg.yiaddr();
        if addr.is_unspecified() || addr.is_broadcast() {
            return None;
        }
        let opts = msg.opts();
        let mask = match opts.get(OptionCode::SubnetMask) {
            Some(DhcpOption::SubnetMask(m)) => *m,
            _ => classful_mask(addr),
        };
        let router = match opts.get(OptionCode::Router) {
            Some(DhcpOption::Router(r)) => r.first().copied(),
            _ => None,
        };
        let dns = match opts.get(OptionCode::DomainNameServer) {
            Some(DhcpOption::DomainNameServer(d)) => d.clone(),
            _ => Vec::new(),
        };
        let server = server_id(msg).unwrap_or(msg.siaddr());
        let secs = |code| match opts.get(code) {
            Some(
                DhcpOption::AddressLeaseTime(s) | DhcpOption::Renewal(s) | DhcpOption::Rebinding(s),
            ) => Some(*s),
            _ => None,
        };
        let (lease, t1, t2) = lease_times(
            secs(OptionCode::AddressLeaseTime),
            secs(OptionCode::Renewal),
            secs(OptionCode::Rebinding),
        );
        Some(Lease {
            addr,
            prefix: prefix_len(mask),
            router,
            dns,
            server,
            lease,
            t1,
            t2,
        })
    }
}

/// Lease, T1 and T2 from options 51, 58, 59. Missing T1/T2 (or ones out of
/// order) become 1/2 and 7/8 of the lease (RFC 2131 §4.4.5).
pub fn lease_times(
    lease: Option<u32>,
    t1: Option<u32>,
    t2: Option<u32>,
) -> (Duration, Duration, Duration) {
    let lease = lease.map_or(DEFAULT_LEASE, |s| Duration::from_secs(s.into()));
    let t2 = t2
        .map(|s| Duration::from_secs(s.into()))
        .filter(|t| *t <= lease)
        .unwrap_or(lease * 7 / 8);
    let t1 = t1
        .map(|s| Duration::from_secs(s.into()))
        .filter(|t| *t <= t2)
        .unwrap_or((lease / 2).min(t2));
    (lease, t1, t2)
}

/// The prefix length of a netmask (leading one bits).
pub fn prefix_len(mask: Ipv4Addr) -> u8 {
    u32::from(mask).leading_ones() as u8
}

fn classful_mask(addr: Ipv4Addr) -> Ipv4Addr {
    match addr.octets()[0] {
        0..=127 => Ipv4Addr::new(255, 0, 0, 0),
        128..=191 => Ipv4Addr::new(255, 255, 0, 0),
        _ => Ipv4Addr::new(255, 255, 255, 0),
    }
}

fn server_id(msg: &Message) -> Option<Ipv4Addr> {
    match msg.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(s)) => Some(*s),
        _ => None,
    }
}

/// Whether `msg` is addressed to the client with `mac` (its `chaddr`).
///
/// `hlen` is checked first: dhcproto's decoder keeps whatever `hlen` the
/// datagram says, and `Message::chaddr` slices its 16-byte array by it,
/// so a reply with `hlen` over 16 would panic PID 1.
fn is_for(msg: &Message, mac: &[u8; 6]) -> bool {
    (mac.len()..=16).contains(&usize::from(msg.hlen())) && msg.chaddr()[..mac.len()] == mac[..]
}

/// How long to wait for an answer after the `attempt`-th send (0-based):
/// 1, 2, 4, 4, 4… seconds.
pub fn retransmit_delay(attempt: u32) -> Duration {
    Duration::from_secs(1 << attempt.min(2))
}

/// How long to wait for an answer to a renewal REQUEST sent `left` before
/// the deadline (T2 when renewing, lease end when rebinding): half of what is
/// left, at least 60 s, never past the deadline.
pub fn renew_wait(left: Duration) -> Duration {
    (left / 2).max(MIN_RENEW_WAIT).min(left)
}

/// A BOOTREQUEST of `kind` with our identity: chaddr, broadcast flag,
/// options 53, 61 (client id), 12 (hostname), 55 (parameter list).
fn request_base(id: &ClientId, xid: u32, kind: MessageType, broadcast: bool) -> Message {
    let unspecified = Ipv4Addr::UNSPECIFIED;
    let mut msg = Message::new_with_id(
        xid,
        unspecified,
        unspecified,
        unspecified,
        unspecified,
        &id.mac,
    );
    msg.set_opcode(Opcode::BootRequest).set_htype(HType::Eth);
    if broadcast {
        msg.set_flags(Flags::default().set_broadcast());
    }
    let mut client_id = vec![1u8];
    client_id.extend_from_slice(&id.mac);
    let opts: &mut DhcpOptions = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::ClientIdentifier(client_id));
    if !id.hostname.is_empty() {
        opts.insert(DhcpOption::Hostname(id.hostname.clone()));
    }
    opts.insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::AddressLeaseTime,
        OptionCode::Renewal,
        OptionCode::Rebinding,
    ]));
    msg
}

/// DISCOVER, broadcast flag set (we have no address to receive unicast on).
pub fn discover(id: &ClientId, xid: u32) -> Message {
    request_base(id, xid, MessageType::Discover, true)
}

/// REQUEST for an offered address (SELECTING): options 50 and 54, ciaddr 0.
pub fn select_request(id: &ClientId, xid: u32, offered: Ipv4Addr, server: Ipv4Addr) -> Message {
    let mut msg = request_base(id, xid, MessageType::Request, true);
    msg.opts_mut()
        .insert(DhcpOption::RequestedIpAddress(offered));
    msg.opts_mut().insert(DhcpOption::ServerIdentifier(server));
    msg
}

/// REQUEST to extend `lease` (RENEWING, unicast to its server, or REBINDING,
/// broadcast): ciaddr is our address, no options 50/54 (RFC 2131 §4.3.2).
pub fn renew_request(id: &ClientId, xid: u32, lease: &Lease) -> Message {
    let mut msg = request_base(id, xid, MessageType::Request, false);
    msg.set_ciaddr(lease.addr);
    msg
}

/// What the caller does after feeding [`Acquire`] a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Not for us, or not expected now: keep waiting.
    Ignore,
    /// Send [`Acquire::packet`] now (the state moved on).
    Send,
    /// Done: configure this lease.
    Bound(Lease),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Selecting,
    Requesting { offered: Ipv4Addr, server: Ipv4Addr },
}

/// Getting a lease at boot: DISCOVER → OFFER → REQUEST → ACK.
#[derive(Debug, Clone)]
pub struct Acquire {
    id: ClientId,
    xid: u32,
    phase: Phase,
    /// Sends of the current packet so far.
    attempt: u32,
}

impl Acquire {
    pub fn new(id: ClientId, xid: u32) -> Self {
        Acquire {
            id,
            xid,
            phase: Phase::Selecting,
            attempt: 0,
        }
    }

    pub fn xid(&self) -> u32 {
        self.xid
    }

    /// The packet to send now (DISCOVER or REQUEST); counts the attempt and
    /// returns how long to wait for an answer before [`Acquire::timeout`].
    pub fn packet(&mut self) -> (Message, Duration) {
        let msg = match &self.phase {
            Phase::Selecting => discover(&self.id, self.xid),
            Phase::Requesting { offered, server } => {
                select_request(&self.id, self.xid, *offered, *server)
            }
        };
        let wait = retransmit_delay(self.attempt);
        self.attempt += 1;
        (msg, wait)
    }

    /// No answer in time. Resend the same packet, except after
    /// [`REQUEST_TRIES`] unanswered REQUESTs: start over with a DISCOVER.
    pub fn timeout(&mut self) {
        if matches!(self.phase, Phase::Requesting { .. }) && self.attempt >= REQUEST_TRIES {
            self.restart();
        }
    }

    fn restart(&mut self) {
        self.phase = Phase::Selecting;
        self.attempt = 0;
        self.xid = self.xid.wrapping_add(1);
    }

    /// Feeds a received message.
    pub fn receive(&mut self, msg: &Message) -> Step {
        if msg.opcode() != Opcode::BootReply || msg.xid() != self.xid || !is_for(msg, &self.id.mac)
        {
            return Step::Ignore;
        }
        match (&self.phase, msg.opts().msg_type()) {
            (Phase::Selecting, Some(MessageType::Offer)) => {
                let offered = msg.yiaddr();
                let Some(server) = server_id(msg) else {
                    return Step::Ignore;
                };
                if offered.is_unspecified() {
                    return Step::Ignore;
                }
                self.phase = Phase::Requesting { offered, server };
                self.attempt = 0;
                Step::Send
            }
            (Phase::Requesting { server, .. }, Some(MessageType::Ack)) => {
                if server_id(msg).is_some_and(|s| s != *server) {
                    return Step::Ignore;
                }
                match Lease::from_ack(msg) {
                    Some(lease) => Step::Bound(lease),
                    None => Step::Ignore,
                }
            }
            (Phase::Requesting { server, .. }, Some(MessageType::Nak)) => {
                if server_id(msg).is_some_and(|s| s != *server) {
                    return Step::Ignore;
                }
                self.restart();
                Step::Send
            }
            _ => Step::Ignore,
        }
    }
}

/// The answer to a renewal REQUEST with transaction `xid`, if `msg` is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenewAnswer {
    Ack(Lease),
    Nak,
}

/// Classifies a message received while renewing or rebinding.
pub fn renew_answer(msg: &Message, id: &ClientId, xid: u32) -> Option<RenewAnswer> {
    if msg.opcode() != Opcode::BootReply || msg.xid() != xid || !is_for(msg, &id.mac) {
        return None;
    }
    match msg.opts().msg_type()? {
        MessageType::Ack => Lease::from_ack(msg).map(RenewAnswer::Ack),
        MessageType::Nak => Some(RenewAnswer::Nak),
        _ => None,
    }
}

/// The DNS servers of a lease as `/run/resolv.conf` text.
pub fn resolv_conf(lease: &Lease) -> String {
    let dns: Vec<std::net::IpAddr> = lease.dns.iter().map(|a| (*a).into()).collect();
    crate::config::resolv_conf(&dns)
}

/// A transaction id from the MAC and a clock reading: different per boot
/// and per machine, with no wait on the kernel's random pool.
pub fn make_xid(mac: &[u8; 6], nanos: u128) -> u32 {
    let mut x = nanos as u64 ^ ((nanos >> 64) as u64);
    for b in mac {
        x = (x ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
    }
    (x ^ (x >> 32)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::{Decodable, Decoder, Encodable};

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
    const ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);

    fn id() -> ClientId {
        ClientId {
            mac: MAC,
            hostname: "hello".into(),
        }
    }

    /// Encodes and decodes, as the wire would.
    fn wire(msg: &Message) -> Message {
        let bytes = msg.to_vec().unwrap();
        Message::decode(&mut Decoder::new(&bytes)).unwrap()
    }

    /// A reply from QEMU's user-net server, as it sends them.
    fn reply(xid: u32, kind: MessageType) -> Message {
        let z = Ipv4Addr::UNSPECIFIED;
        let mut m = Message::new_with_id(xid, z, ADDR, SERVER, z, &MAC);
        m.set_opcode(Opcode::BootReply);
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(kind));
        o.insert(DhcpOption::ServerIdentifier(SERVER));
        o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        o.insert(DhcpOption::Router(vec![SERVER]));
        o.insert(DhcpOption::DomainNameServer(vec![Ipv4Addr::new(
            10, 0, 2, 3,
        )]));
        o.insert(DhcpOption::AddressLeaseTime(86400));
        wire(&m)
    }

    fn opt(msg: &Message, code: OptionCode) -> Option<&DhcpOption> {
        msg.opts().get(code)
    }

    #[test]
    fn discover_has_identity_broadcast_flag_and_parameter_list() {
        let m = wire(&discover(&id(), 0xdead_beef));
        assert_eq!(m.opcode(), Opcode::BootRequest);
        assert_eq!(m.xid(), 0xdead_beef);
        assert_eq!(m.htype(), HType::Eth);
        assert_eq!(m.chaddr(), &MAC);
        assert!(m.flags().broadcast());
        assert_eq!(m.ciaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(m.opts().msg_type(), Some(MessageType::Discover));
        assert_eq!(
            opt(&m, OptionCode::ClientIdentifier),
            Some(&DhcpOption::ClientIdentifier(vec![
                1, 0x52, 0x54, 0, 0x12, 0x34, 0x56
            ]))
        );
        assert_eq!(
            opt(&m, OptionCode::Hostname),
            Some(&DhcpOption::Hostname("hello".into()))
        );
        let Some(DhcpOption::ParameterRequestList(list)) =
            opt(&m, OptionCode::ParameterRequestList)
        else {
            panic!("no option 55");
        };
        for code in [
            OptionCode::SubnetMask,
            OptionCode::Router,
            OptionCode::DomainNameServer,
            OptionCode::AddressLeaseTime,
        ] {
            assert!(list.contains(&code), "{code:?}");
        }
        assert!(opt(&m, OptionCode::RequestedIpAddress).is_none());
        assert!(opt(&m, OptionCode::ServerIdentifier).is_none());
    }

    #[test]
    fn offer_leads_to_a_request_for_the_offered_address_then_ack_binds() {
        let mut a = Acquire::new(id(), 7);
        let (first, wait) = a.packet();
        assert_eq!(first.opts().msg_type(), Some(MessageType::Discover));
        assert_eq!(wait, Duration::from_secs(1));
        assert_eq!(a.receive(&reply(7, MessageType::Offer)), Step::Send);
        let (req, wait) = a.packet();
        let req = wire(&req);
        assert_eq!(wait, Duration::from_secs(1), "the attempt count restarts");
        assert_eq!(req.xid(), 7);
        assert!(req.flags().broadcast());
        assert_eq!(req.opts().msg_type(), Some(MessageType::Request));
        assert_eq!(
            opt(&req, OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress(ADDR))
        );
        assert_eq!(
            opt(&req, OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(SERVER))
        );
        assert_eq!(req.ciaddr(), Ipv4Addr::UNSPECIFIED);
        let Step::Bound(lease) = a.receive(&reply(7, MessageType::Ack)) else {
            panic!("not bound");
        };
        assert_eq!(
            lease,
            Lease {
                addr: ADDR,
                prefix: 24,
                router: Some(SERVER),
                dns: vec![Ipv4Addr::new(10, 0, 2, 3)],
                server: SERVER,
                lease: Duration::from_secs(86400),
                t1: Duration::from_secs(43200),
                t2: Duration::from_secs(75600),
            }
        );
    }

    #[test]
    fn foreign_or_unexpected_messages_are_ignored() {
        let mut a = Acquire::new(id(), 7);
        a.packet();
        assert_eq!(
            a.receive(&reply(8, MessageType::Offer)),
            Step::Ignore,
            "other xid"
        );
        let mut other_mac = reply(7, MessageType::Offer);
        other_mac.set_chaddr(&[1, 2, 3, 4, 5, 6]);
        assert_eq!(a.receive(&other_mac), Step::Ignore, "other client");
        assert_eq!(
            a.receive(&reply(7, MessageType::Ack)),
            Step::Ignore,
            "ACK before OFFER"
        );
        let mut request = reply(7, MessageType::Offer);
        request.set_opcode(Opcode::BootRequest);
        assert_eq!(a.receive(&request), Step::Ignore, "our own broadcast");
    }

    #[test]
    fn a_reply_with_hlen_over_16_is_ignored_not_a_panic() {
        // Found by the `dhcp` fuzz target: dhcproto decodes any hlen, and
        // Message::chaddr slices its 16-byte array by it.
        let mut bytes = reply(7, MessageType::Offer).to_vec().unwrap();
        bytes[2] = 250;
        let msg = Message::decode(&mut Decoder::new(&bytes)).unwrap();
        assert_eq!(msg.hlen(), 250);
        let mut a = Acquire::new(id(), 7);
        a.packet();
        assert_eq!(a.receive(&msg), Step::Ignore);
        assert_eq!(renew_answer(&msg, &id(), 7), None);
        bytes[2] = 16;
        let msg = Message::decode(&mut Decoder::new(&bytes)).unwrap();
        assert_eq!(
            a.receive(&msg),
            Step::Send,
            "a longer chaddr starting with our MAC"
        );
    }

    #[test]
    fn nak_restarts_with_discover_and_a_new_xid() {
        let mut a = Acquire::new(id(), 7);
        a.packet();
        a.receive(&reply(7, MessageType::Offer));
        a.packet();
        assert_eq!(a.receive(&reply(7, MessageType::Nak)), Step::Send);
        assert_ne!(a.xid(), 7);
        let (m, wait) = a.packet();
        assert_eq!(m.opts().msg_type(), Some(MessageType::Discover));
        assert_eq!(m.xid(), a.xid());
        assert_eq!(wait, Duration::from_secs(1));
    }

    #[test]
    fn retransmission_backs_off_and_unanswered_requests_restart() {
        let waits: Vec<u64> = (0..6).map(|n| retransmit_delay(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 4, 4, 4]);

        let mut a = Acquire::new(id(), 7);
        for _ in 0..6 {
            let (m, _) = a.packet();
            assert_eq!(
                m.opts().msg_type(),
                Some(MessageType::Discover),
                "DISCOVER repeats"
            );
            a.timeout();
        }
        a.receive(&reply(7, MessageType::Offer));
        for n in 0..REQUEST_TRIES {
            let (m, wait) = a.packet();
            assert_eq!(m.opts().msg_type(), Some(MessageType::Request));
            assert_eq!(wait, retransmit_delay(n));
            a.timeout();
        }
        let (m, _) = a.packet();
        assert_eq!(m.opts().msg_type(), Some(MessageType::Discover));
    }

    #[test]
    fn lease_t1_t2_defaults_and_server_values() {
        let s = Duration::from_secs;
        assert_eq!(
            lease_times(Some(86400), None, None),
            (s(86400), s(43200), s(75600))
        );
        assert_eq!(
            lease_times(Some(100), Some(30), Some(60)),
            (s(100), s(30), s(60))
        );
        assert_eq!(lease_times(None, None, None).0, DEFAULT_LEASE);
        // Out of order: T2 past the lease, T1 past T2.
        assert_eq!(
            lease_times(Some(100), Some(90), Some(200)),
            (s(100), s(50), Duration::from_millis(87_500))
        );
        assert_eq!(
            lease_times(Some(100), Some(95), Some(90)),
            (s(100), s(50), s(90))
        );
    }

    #[test]
    fn ack_options_58_59_and_missing_mask() {
        let mut m = reply(1, MessageType::Ack);
        m.opts_mut().insert(DhcpOption::Renewal(600));
        m.opts_mut().insert(DhcpOption::Rebinding(900));
        m.opts_mut().remove(OptionCode::SubnetMask);
        let lease = Lease::from_ack(&wire(&m)).unwrap();
        assert_eq!(lease.t1, Duration::from_secs(600));
        assert_eq!(lease.t2, Duration::from_secs(900));
        assert_eq!(lease.prefix, 8, "classful mask for 10/8");
        assert!(Lease::from_ack(&reply(1, MessageType::Offer)).is_none());
        assert!(Lease::from_ack(&reply(1, MessageType::Nak)).is_none());
    }

    #[test]
    fn renewal_request_is_for_our_address_without_50_54() {
        let lease = Lease::from_ack(&reply(1, MessageType::Ack)).unwrap();
        let m = wire(&renew_request(&id(), 9, &lease));
        assert_eq!(m.opts().msg_type(), Some(MessageType::Request));
        assert_eq!(m.ciaddr(), ADDR);
        assert_eq!(m.xid(), 9);
        assert!(!m.flags().broadcast());
        assert!(opt(&m, OptionCode::RequestedIpAddress).is_none());
        assert!(opt(&m, OptionCode::ServerIdentifier).is_none());

        assert_eq!(
            renew_answer(&reply(9, MessageType::Ack), &id(), 9),
            Some(RenewAnswer::Ack(lease))
        );
        assert_eq!(
            renew_answer(&reply(9, MessageType::Nak), &id(), 9),
            Some(RenewAnswer::Nak)
        );
        assert_eq!(renew_answer(&reply(8, MessageType::Ack), &id(), 9), None);
        assert_eq!(renew_answer(&reply(9, MessageType::Offer), &id(), 9), None);
    }

    #[test]
    fn renewal_retries_are_spaced() {
        let s = Duration::from_secs;
        assert_eq!(renew_wait(s(32400)), s(16200));
        assert_eq!(renew_wait(s(100)), s(60));
        assert_eq!(renew_wait(s(30)), s(30));
        assert_eq!(renew_wait(s(0)), s(0));
    }

    #[test]
    fn resolv_conf_and_prefix_from_options() {
        let mut m = reply(1, MessageType::Ack);
        m.opts_mut().insert(DhcpOption::DomainNameServer(vec![
            Ipv4Addr::new(10, 0, 2, 3),
            Ipv4Addr::new(1, 1, 1, 1),
        ]));
        m.opts_mut()
            .insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 240, 0)));
        let lease = Lease::from_ack(&wire(&m)).unwrap();
        assert_eq!(
            resolv_conf(&lease),
            "nameserver 10.0.2.3\nnameserver 1.1.1.1\n"
        );
        assert_eq!(lease.prefix, 20);
        assert_eq!(prefix_len(Ipv4Addr::new(0, 0, 0, 0)), 0);
        assert_eq!(prefix_len(Ipv4Addr::new(255, 255, 255, 255)), 32);
    }

    #[test]
    fn xids_differ_by_mac_and_time() {
        assert_ne!(make_xid(&MAC, 1), make_xid(&MAC, 2));
        assert_ne!(make_xid(&MAC, 1), make_xid(&[0; 6], 1));
    }
}
