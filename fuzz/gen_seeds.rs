//! Writes the seed inputs of every fuzz target into `fuzz/seeds/<target>/`,
//! made with the project's own encoders (and dhcproto for the DHCP
//! replies), so that the fuzzers start from what nodeos really reads.
//!
//!     cd fuzz && cargo run --example gen_seeds
//!
//! Files are overwritten; seeds added by hand (and crash reproducers) are
//! left alone.

use std::collections::BTreeMap;
use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use dhcproto::Encodable;
use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode};
use nodeos_fuzz::samples;
use nodeos_init::dhcp::{self, ClientId};
use nodeos_manifest::RunConfig;
use nodeos_manifest::bundle;
use nodeos_manifest::settings::{CheckStatus, DataCheck, OnCheckFailure, StaticIpv4};
use nodeos_manifest::slots::{self, LastUpdate, Slot, SlotStatus, State, UpdateResult};
use nodeos_manifest::update::{Authorization, ReadToken};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    config(&root.join("config"));
    manifest(&root.join("manifest"));
    bundle(&root.join("bundle"));
    dhcp(&root.join("dhcp"));
}

fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) {
    fs::create_dir_all(dir).unwrap();
    let path: PathBuf = dir.join(name);
    fs::write(&path, bytes).unwrap();
    println!("{}", path.display());
}

/// A valid update key.
const KEY: &str = "ed25519:3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";

fn config(dir: &Path) {
    write(
        dir,
        "app.json",
        serde_json::to_vec_pretty(&samples::app_config()).unwrap(),
    );
    write(
        dir,
        "app-minimal.json",
        r#"{"name":"x","node":"/usr/bin/node","workdir":"/app","args":[],"env":{}}"#,
    );

    let run = RunConfig {
        env: BTreeMap::from([("API_TOKEN".into(), "s3cret=1".into())]),
        restart: Some(nodeos_manifest::RestartPolicy::OnFailure),
        grace: Some(2),
        log_format: Some(nodeos_manifest::LogFormat::Json),
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
    };
    let disk = run.to_disk().unwrap();
    let len = u32::from_le_bytes(disk[20..24].try_into().unwrap()) as usize;
    write(dir, "runconfig.disk", &disk[..24 + len]);
    write(dir, "runconfig.json", serde_json::to_vec(&run).unwrap());

    write(
        dir,
        "package-full.json",
        format!(
            r#"{{
  "name": "@acme/api",
  "version": "2.0.0",
  "main": "server.js",
  "scripts": {{"start": "node --enable-source-maps server.js"}},
  "engines": {{"node": ">=22"}},
  "nodeos": {{
    "$comment": "appliance settings",
    "restart": "on-failure",
    "grace": 5,
    "logFormat": "json",
    "syslog": "udp://[fec0::2]:514",
    "port": 8080,
    "network": {{
      "ipv4": {{"address": "10.0.2.20/24", "gateway": "10.0.2.2"}},
      "ipv6": {{"address": "fec0::20/64", "gateway": "fec0::2"}},
      "dns": ["10.0.2.3", "fec0::3"],
      "hosts": {{"db.internal": "10.0.2.2"}},
      "dhcpTimeout": 5
    }},
    "data": {{"size": "2GiB", "onCheckFailure": "start"}},
    "update": {{"publicKey": "{KEY}", "port": 7070,
                "health": {{"path": "/healthz", "timeout": 60, "uptime": 5}}}},
    "env": {{"LOG_LEVEL": "info"}},
    "memory": 512,
    "cpus": 2,
    "ports": ["8080:8080", "0.0.0.0:9090:9090", "[::1]:80:8080"],
    "node": "^22.11"
  }}
}}"#
        ),
    );
    write(
        dir,
        "package-minimal.json",
        r#"{"name":"hello","version":"1.0.0","nodeos":{}}"#,
    );
    write(
        dir,
        "package-keyfile.json",
        r#"{"name":"hello","version":"1.0.0","nodeos":{"update":{"publicKey":"keys/update.pub"},"data":{"size":33554432}}}"#,
    );
    write(
        dir,
        "package-typo.json",
        r#"{"name":"hello","nodeos":{"restrat":"always","network":{"ipv4":{"adress":"10.0.2.2/24"}}}}"#,
    );
    write(
        dir,
        "edge-package-limits.json",
        r#"{"name":"x","nodeos":{"grace":3600,"port":65535,"memory":1048576,"cpus":64,
            "network":{"dhcpTimeout":300,"ipv4":{"address":"10.0.2.15/32"}},
            "data":{"size":"16777216B"},"update":{"port":1,"health":{"timeout":240,"uptime":240}},
            "env":{"A":"","LONG":"\u00e9\ud83d\ude00"},"ports":["65535:1"],"node":"*"}}"#,
    );
    write(
        dir,
        "edge-runconfig-bad-env.json",
        r#"{"env":{"A=B":"x"},"grace":3601,"dns":["::ffff:10.0.2.3"]}"#,
    );
    for (name, text) in [
        ("syslog.txt", "udp://[fec0::2]:5514"),
        ("cidr4.txt", "10.0.2.15/24"),
        ("cidr6.txt", "fec0::15/64"),
        ("size.txt", "2048MiB"),
        ("port.txt", "[::1]:80:8080"),
        ("key.txt", KEY),
        ("policy.txt", "on-failure"),
        ("empty.txt", ""),
    ] {
        write(dir, name, text);
    }
}

fn manifest(dir: &Path) {
    let manifest = samples::manifest();
    write(dir, "manifest.json", manifest.to_json());
    write(dir, "cmdline.txt", &manifest.kernel.cmdline);
    write(
        dir,
        "cmdline-slot.txt",
        "root=PARTLABEL=nodeos-runtime-a rootfstype=erofs nodeos.slot=a ro -- root=x",
    );

    let mut state = State::new(Slot::A, "1.2.3");
    state.max_sequence = 2;
    state.b.status = SlotStatus::Trying;
    state.b.version = "1.3.0".into();
    state.b.sequence = 2;
    state.b.tries = 1;
    state.last_update = Some(LastUpdate {
        sequence: 2,
        from: "1.2.3".into(),
        to: "1.3.0".into(),
        slot: Slot::B,
        result: UpdateResult::Pending,
        reason: String::new(),
        at_ms: 1_700_000_000_000,
    });
    write(dir, "state.json", serde_json::to_vec(&state).unwrap());
    let (_, copy) = state.next_copy();
    write(dir, "state.copy", trim_zeros(&copy));

    let meta = samples::slot_meta();
    write(dir, "slotmeta.json", serde_json::to_vec(&meta).unwrap());
    write(dir, "slotmeta.bin", meta.encode());

    let log = "2024-01-01T00:00:00.000Z app[1] out: listening on 3000\n\
               2024-01-01T00:00:01.000Z nodeos-init: health check failed\n";
    write(dir, "logtail.txt", log);
    write(dir, "logtail.bin", slots::encode_log_tail(log));
}

fn trim_zeros(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    &bytes[..end]
}

fn bundle(dir: &Path) {
    let manifest = samples::update_manifest();
    let json = serde_json::to_vec(&manifest).unwrap();
    write(dir, "update-manifest.json", &json);
    let mut head = bundle::encode_head(&json, &[0x5a; bundle::SIGNATURE_LEN]);
    head.extend_from_slice(b"payload bytes follow");
    write(dir, "bundle-head.bin", head);

    let auth = Authorization {
        key_id: "0123456789abcdef".into(),
        ts_ms: 1_700_000_000_000,
        nonce: "00112233aabbccdd".into(),
        signature: [0xcd; 64],
    };
    write(dir, "authorization.txt", auth.header());
    let token = ReadToken {
        key_id: "0123456789abcdef".into(),
        expires_s: 1_800_000_000,
        id: "fedcba9876543210".into(),
        signature: [0x11; 64],
    };
    write(dir, "read-token.txt", token.to_string());
}

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);

/// A reply as QEMU's user-network DHCP server sends it.
fn reply(kind: MessageType, extra: &[DhcpOption]) -> Vec<u8> {
    let z = Ipv4Addr::UNSPECIFIED;
    let mut m = Message::new_with_id(0x1234_5678, z, ADDR, SERVER, z, &MAC);
    m.set_opcode(Opcode::BootReply);
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(kind));
    o.insert(DhcpOption::ServerIdentifier(SERVER));
    if kind != MessageType::Nak {
        o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        o.insert(DhcpOption::Router(vec![SERVER]));
        o.insert(DhcpOption::DomainNameServer(vec![Ipv4Addr::new(
            10, 0, 2, 3,
        )]));
        o.insert(DhcpOption::AddressLeaseTime(86400));
    }
    for opt in extra {
        o.insert(opt.clone());
    }
    m.to_vec().unwrap()
}

fn dhcp(dir: &Path) {
    write(dir, "offer.bin", reply(MessageType::Offer, &[]));
    write(dir, "ack.bin", reply(MessageType::Ack, &[]));
    write(dir, "nak.bin", reply(MessageType::Nak, &[]));
    write(
        dir,
        "ack-t1-t2.bin",
        reply(
            MessageType::Ack,
            &[DhcpOption::Renewal(600), DhcpOption::Rebinding(900)],
        ),
    );
    write(
        dir,
        "ack-t1-after-t2.bin",
        reply(
            MessageType::Ack,
            &[
                DhcpOption::AddressLeaseTime(u32::MAX),
                DhcpOption::Renewal(900),
                DhcpOption::Rebinding(600),
            ],
        ),
    );
    write(
        dir,
        "ack-many-dns.bin",
        reply(
            MessageType::Ack,
            &[
                DhcpOption::DomainNameServer(vec![
                    Ipv4Addr::new(10, 0, 2, 3),
                    Ipv4Addr::new(1, 1, 1, 1),
                    Ipv4Addr::new(8, 8, 8, 8),
                ]),
                DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 240, 0)),
            ],
        ),
    );
    write(
        dir,
        "edge-ack-mask-zero-lease-zero.bin",
        reply(
            MessageType::Ack,
            &[
                DhcpOption::SubnetMask(Ipv4Addr::UNSPECIFIED),
                DhcpOption::AddressLeaseTime(0),
            ],
        ),
    );
    let mut broadcast = Message::new_with_id(
        0x1234_5678,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::BROADCAST,
        SERVER,
        Ipv4Addr::UNSPECIFIED,
        &MAC,
    );
    broadcast.set_opcode(Opcode::BootReply);
    broadcast
        .opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Ack));
    write(
        dir,
        "edge-ack-broadcast-no-server-id.bin",
        broadcast.to_vec().unwrap(),
    );
    let id = ClientId {
        mac: MAC,
        hostname: "hello".into(),
    };
    write(
        dir,
        "discover.bin",
        dhcp::discover(&id, 0x1234_5678).to_vec().unwrap(),
    );
    write(
        dir,
        "request.bin",
        dhcp::select_request(&id, 0x1234_5678, ADDR, SERVER)
            .to_vec()
            .unwrap(),
    );
}
