//! The fuzz targets' shared samples: well-formed values made with the
//! project's own types, which the targets derive record magics from and
//! `gen_seeds` writes as seed inputs.

pub mod samples {
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;

    use nodeos_manifest::bundle::{PayloadEntry, Source, UpdateManifest};
    use nodeos_manifest::slots::SlotMeta;
    use nodeos_manifest::{AppConfig, MANIFEST_FORMAT, Manifest};

    /// An image manifest as `nodeos build` writes it. Made from JSON so
    /// that new optional fields of the manifest types need no change here.
    pub fn manifest() -> Manifest {
        let artifact = |path: &str, size: u64| {
            format!(
                r#""{path}": {{"path": "{path}", "sha256": "{}", "size": {size}}}"#,
                "ab".repeat(32)
            )
        };
        let json = format!(
            r#"{{
  "format": {MANIFEST_FORMAT},
  "name": "hello",
  "version": "1.2.3",
  "profile": "release",
  "node": {{"version": "22.11.0", "range": "22", "integrity": "sha512-AAAA"}},
  "kernel": {{"version": "6.1.0", "cmdline": "console=ttyS0 root=/dev/vda ro quiet panic=-1", "artifact": "kernel"}},
  "layers": {{"format": "erofs", "compression": "lz4hc", "runtime": "runtime", "app": "app"}},
  "artifacts": {{{}, {}, {}}},
  "builder": "nodeos 0.1.0"
}}"#,
            artifact("kernel", 5_000_000),
            artifact("runtime", 40_000_000),
            artifact("app", 1_000_000),
        );
        Manifest::from_json(&json).expect("the sample manifest parses")
    }

    /// The metadata `nodeos run` writes into a boot partition.
    pub fn slot_meta() -> SlotMeta {
        SlotMeta {
            sequence: 0,
            installed_by: "host".into(),
            image: manifest(),
        }
    }

    /// The signed manifest of an update bundle, as `nodeos deploy` makes it.
    pub fn update_manifest() -> UpdateManifest {
        let entry = |artifact: &str, source| PayloadEntry {
            artifact: artifact.into(),
            source,
        };
        UpdateManifest {
            format: nodeos_manifest::bundle::FORMAT,
            appliance: "hello".into(),
            sequence: 2,
            key_id: "0123456789abcdef".into(),
            downgrade: false,
            image: manifest(),
            payload: vec![
                entry("kernel", Source::Slot),
                entry("runtime", Source::Slot),
                entry("app", Source::Bundle),
            ],
        }
    }

    /// An app config as `nodeos build` bakes it into the app layer.
    pub fn app_config() -> AppConfig {
        let mut settings = nodeos_manifest::Settings::default();
        settings.network.ipv4 = Some(nodeos_manifest::settings::StaticIpv4 {
            address: "10.0.2.15/24".parse().unwrap(),
            gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
        });
        AppConfig {
            name: "@acme/hello".into(),
            node: "/usr/bin/node".into(),
            workdir: "/app".into(),
            args: vec!["/app/server.js".into(), "--port".into(), "3000".into()],
            env: BTreeMap::from([("NODE_ENV".into(), "production".into())]),
            entry: Some("/app/server.js".into()),
            settings,
        }
    }
}
