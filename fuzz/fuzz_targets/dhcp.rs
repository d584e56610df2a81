//! Feeds arbitrary bytes as a datagram received on the DHCP client port,
//! as init's network phase reads one (at most 1500 bytes, then
//! `Message::decode` of dhcproto), to init's DHCP client:
//! [`Lease::from_ack`], [`dhcp::renew_answer`] and the boot-time state
//! machine [`Acquire`], both while selecting (the datagram as an OFFER)
//! and while requesting (the datagram as the answer to our REQUEST for an
//! OFFER from the same server).
//!
//! Checks, besides "no panic": a lease has a usable address, a prefix of
//! at most 32 and T1 ≤ T2 ≤ lease time; only an ACK binds, only while
//! requesting, and to the lease `from_ack` reads; an OFFER leads to a
//! REQUEST for the offered address from the offering server; a NAK starts
//! over with a new transaction id; a reply for another transaction or
//! MAC is ignored; the lease does not change when the message is encoded
//! and decoded again.

#![no_main]

use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable};
use libfuzzer_sys::fuzz_target;
use nodeos_init::dhcp::{self, Acquire, ClientId, Lease, RenewAnswer, Step};

/// The receive buffer of init's DHCP socket.
const RECV_BUF: usize = 1500;
/// Offset of `chaddr` in a BOOTP message.
const CHADDR: usize = 28;

fuzz_target!(|data: &[u8]| {
    let data = &data[..data.len().min(RECV_BUF)];
    let Ok(msg) = Message::decode(&mut Decoder::new(data)) else {
        return;
    };
    let lease = Lease::from_ack(&msg);
    if let Some(lease) = &lease {
        check_lease(&msg, lease);
        same_lease_after_the_wire(&msg, lease);
    }

    // A client whose transaction and MAC the message answers: the first
    // six bytes of chaddr, read from the datagram (`Message::chaddr`
    // panics when hlen is over 16). The message is for that client only
    // if hlen covers a MAC and fits chaddr.
    let Some(mac) = data.get(CHADDR..CHADDR + 6) else {
        return;
    };
    let id = ClientId {
        mac: mac.try_into().unwrap(),
        hostname: "fuzz".into(),
    };
    let xid = msg.xid();
    let for_us = (6..=16).contains(&msg.hlen());

    match dhcp::renew_answer(&msg, &id, xid) {
        Some(RenewAnswer::Ack(renewed)) => assert_eq!(Some(&renewed), lease.as_ref()),
        Some(RenewAnswer::Nak) => assert_eq!(msg.opts().msg_type(), Some(MessageType::Nak)),
        None => assert!(
            !for_us || lease.is_none(),
            "a usable ACK was not taken as a renewal"
        ),
    }
    assert_eq!(dhcp::renew_answer(&msg, &id, xid.wrapping_add(1)), None);

    selecting(&msg, &id, xid);
    requesting(&msg, &id, xid, lease.filter(|_| for_us).as_ref());
});

fn check_lease(msg: &Message, lease: &Lease) {
    assert_eq!(msg.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(msg.opcode(), Opcode::BootReply);
    assert!(!lease.addr.is_unspecified() && !lease.addr.is_broadcast());
    assert!(lease.prefix <= 32);
    assert!(lease.t1 <= lease.t2 && lease.t2 <= lease.lease, "{lease:?}");
    let _ = dhcp::renew_wait(lease.t2 - lease.t1);
    let _ = dhcp::resolv_conf(lease);
}

/// Encoded again and decoded, the message grants the same lease.
fn same_lease_after_the_wire(msg: &Message, lease: &Lease) {
    let Ok(bytes) = msg.to_vec() else {
        return;
    };
    let again = Message::decode(&mut Decoder::new(&bytes)).expect("an encoded message decodes");
    assert_eq!(Lease::from_ack(&again).as_ref(), Some(lease));
}

/// The message arrives while the client waits for an OFFER.
fn selecting(msg: &Message, id: &ClientId, xid: u32) {
    let mut acquire = Acquire::new(id.clone(), xid);
    acquire.packet();
    match acquire.receive(msg) {
        Step::Bound(lease) => panic!("bound to {lease:?} before requesting"),
        Step::Send => {
            assert_eq!(msg.opts().msg_type(), Some(MessageType::Offer));
            let (request, _) = acquire.packet();
            assert_eq!(request.opts().msg_type(), Some(MessageType::Request));
            assert_eq!(request.xid(), xid);
            assert_eq!(
                request.opts().get(OptionCode::RequestedIpAddress),
                Some(&DhcpOption::RequestedIpAddress(msg.yiaddr()))
            );
            assert_eq!(
                request.opts().get(OptionCode::ServerIdentifier),
                msg.opts().get(OptionCode::ServerIdentifier)
            );
            request.to_vec().expect("our REQUEST encodes");
        }
        Step::Ignore => {}
    }
    let mut other = Acquire::new(id.clone(), xid.wrapping_add(1));
    other.packet();
    assert_eq!(other.receive(msg), Step::Ignore, "another transaction");
}

/// The message arrives after the client sent a REQUEST for an OFFER from
/// the server the message names (or 10.0.2.2 if it names none). `lease`
/// is the lease the message grants if it is addressed to us.
fn requesting(msg: &Message, id: &ClientId, xid: u32, lease: Option<&Lease>) {
    let server = match msg.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(s)) => *s,
        _ => Ipv4Addr::new(10, 0, 2, 2),
    };
    let offered = match msg.yiaddr() {
        a if a.is_unspecified() => Ipv4Addr::new(10, 0, 2, 15),
        a => a,
    };
    let mut acquire = Acquire::new(id.clone(), xid);
    acquire.packet();
    assert_eq!(
        acquire.receive(&offer(id, xid, offered, server)),
        Step::Send
    );
    acquire.packet();
    match acquire.receive(msg) {
        Step::Bound(bound) => {
            assert_eq!(Some(&bound), lease, "binds to the lease from_ack reads");
        }
        Step::Send => {
            assert_eq!(msg.opts().msg_type(), Some(MessageType::Nak));
            assert_ne!(acquire.xid(), xid, "a NAK starts a new transaction");
            let (discover, _) = acquire.packet();
            assert_eq!(discover.opts().msg_type(), Some(MessageType::Discover));
        }
        Step::Ignore => assert!(lease.is_none(), "a usable ACK from the server was ignored"),
    }
}

/// An OFFER of `offered` from `server`, as QEMU's user network sends it.
fn offer(id: &ClientId, xid: u32, offered: Ipv4Addr, server: Ipv4Addr) -> Message {
    let z = Ipv4Addr::UNSPECIFIED;
    let mut m = Message::new_with_id(xid, z, offered, server, z, &id.mac);
    m.set_opcode(Opcode::BootReply);
    m.opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Offer));
    m.opts_mut().insert(DhcpOption::ServerIdentifier(server));
    m
}
