//! Feeds arbitrary bytes to every parser of the appliance's configuration:
//!
//! * the config disk `nodeos run` attaches ([`RunConfig::from_disk`]), both
//!   as given and wrapped in a valid `NODEOS-RUNCONFIG` header, so that a
//!   JSON input reaches the run config's own deserialiser;
//! * `app.json` as init reads it ([`nodeos_init::config::parse`]: serde,
//!   then init's checks), and what init derives from it (hostname,
//!   environment, `/run/hosts`, `/run/resolv.conf`);
//! * package.json's `"nodeos"` key as the build reads it
//!   ([`nodeos_image::config::parse`]);
//! * the string forms inside them (syslog target, CIDR, data size, port
//!   forward, public key, policy names).
//!
//! Checks, besides "no panic": everything accepted writes back and reads
//! back equal; what the build accepts, init accepts (the app.json the
//! build would bake from it); a run config applied to a valid app config
//! is either accepted or refused by init's check, never a panic; the
//! hostname made from any app name is a valid host name.

#![no_main]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::str::FromStr;

use libfuzzer_sys::fuzz_target;
use nodeos_manifest::host::PortForward;
use nodeos_manifest::settings::{
    Cidr, DataSize, MIN_DATA_SIZE, OnCheckFailure, RUN_CONFIG_FORMAT, RUN_CONFIG_MAGIC,
    SyslogTarget, is_hostname,
};
use nodeos_manifest::update::PublicKey;
use nodeos_manifest::{AppConfig, LogFormat, RestartPolicy, RunConfig, Settings};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    config_disk(data);
    config_disk(&wrap_in_disk_header(data));
    app_json(data);
    package_json(data);
    if let Ok(text) = std::str::from_utf8(data)
        && text.len() <= 512
    {
        string_forms(text);
    }
});

/// `data` as the payload of a well-formed config disk header.
fn wrap_in_disk_header(data: &[u8]) -> Vec<u8> {
    let mut disk = Vec::with_capacity(24 + data.len());
    disk.extend_from_slice(RUN_CONFIG_MAGIC);
    disk.extend_from_slice(&RUN_CONFIG_FORMAT.to_le_bytes());
    disk.extend_from_slice(&(data.len() as u32).to_le_bytes());
    disk.extend_from_slice(data);
    disk
}

/// A valid app config, as `nodeos build` writes one.
fn base_app(settings: Settings, env: BTreeMap<String, String>) -> AppConfig {
    AppConfig {
        name: "fuzz".into(),
        node: "/usr/bin/node".into(),
        workdir: "/app".into(),
        args: vec!["/app/index.js".into()],
        env,
        entry: Some("/app/index.js".into()),
        settings,
    }
}

/// The config disk: read, written back by the host's code, read again;
/// then applied to a valid app config as init's `load_boot` does.
fn config_disk(bytes: &[u8]) {
    let Ok(Some(config)) = RunConfig::from_disk(bytes) else {
        return;
    };
    let disk = config
        .to_disk()
        .expect("a run config read from a disk writes back");
    assert_eq!(disk.len() % 4096, 0);
    let back = RunConfig::from_disk(&disk).expect("a written config disk reads back");
    assert_eq!(back.as_ref(), Some(&config));
    // Also from a disk cut right after the payload.
    let json_len = u32::from_le_bytes(disk[20..24].try_into().unwrap()) as usize;
    assert_eq!(
        RunConfig::from_disk(&disk[..24 + json_len]).unwrap(),
        Some(config.clone())
    );

    let mut app = base_app(Settings::default(), BTreeMap::new());
    config.apply(&mut app.settings, &mut app.env);
    // The run config may still be refused in combination (a static address
    // whose gateway is elsewhere was checked; a port clash was not): an
    // error, never a panic.
    let _ = nodeos_init::config::validate(&app);
    for key in config.env.keys() {
        assert!(app.env.contains_key(key), "{key:?} applied");
    }
    let _ = format!("{config:?}");
}

/// `app.json`: parsed and checked as init does at boot.
fn app_json(bytes: &[u8]) {
    let Ok(app) = nodeos_init::config::parse(bytes, "app.json") else {
        return;
    };
    let json = serde_json::to_vec(&app).expect("an app config serialises");
    let back = nodeos_init::config::parse(&json, "app.json")
        .expect("a valid app config written back is valid");
    assert_eq!(back, app);

    let hostname = nodeos_init::config::hostname(&app.name);
    assert!(
        is_hostname(&hostname) && hostname.len() <= 63,
        "{:?} made the hostname {hostname:?}",
        app.name
    );
    let env = nodeos_init::config::app_env(&app);
    assert!(env.windows(2).all(|w| w[0].0 < w[1].0), "sorted, unique");
    let _ = nodeos_init::config::hosts(&hostname, &app.settings.network.hosts);
    let _ = nodeos_init::config::resolv_conf(&app.settings.network.dns);
}

/// package.json's `"nodeos"` key, as `nodeos build` reads it.
fn package_json(bytes: &[u8]) {
    let Ok(Value::Object(package)) = serde_json::from_slice::<Value>(bytes) else {
        return;
    };
    let dir = Path::new("/nonexistent-project");
    let Ok(config) = nodeos_image::config::parse(package.get("nodeos"), dir) else {
        return;
    };
    config
        .settings
        .validate()
        .expect("settings the build accepts are valid");
    config
        .vm
        .validate()
        .expect("vm settings accepted are valid");

    // The settings as baked into app.json read back equal through the same parser.
    let written = serde_json::to_value(&config.settings).expect("settings serialise");
    let again = nodeos_image::config::parse(Some(&written), dir)
        .expect("settings written back are accepted");
    assert_eq!(again.settings, config.settings);
    // The vm settings as kept in the manifest read back equal.
    let vm = serde_json::to_string(&config.vm).expect("vm settings serialise");
    assert_eq!(
        serde_json::from_str::<nodeos_manifest::host::VmSettings>(&vm).unwrap(),
        config.vm
    );

    // What the build accepts, init accepts.
    let app = base_app(config.settings, config.env);
    let json = serde_json::to_vec(&app).expect("an app config serialises");
    if let Err(e) = nodeos_init::config::parse(&json, "app.json") {
        panic!("the build accepted a config init refuses: {e}");
    }
}

/// The string forms of single values: each accepted one prints in a form
/// that reads back equal.
fn string_forms(text: &str) {
    round_trip::<SyslogTarget>(text);
    round_trip::<Cidr<Ipv4Addr>>(text);
    round_trip::<Cidr<Ipv6Addr>>(text);
    round_trip::<PortForward>(text);
    if let Some(size) = round_trip::<DataSize>(text) {
        assert!(size.bytes() % DataSize::ALIGN == 0 && size >= MIN_DATA_SIZE);
    }
    if let Ok(key) = PublicKey::parse(text) {
        assert_eq!(PublicKey::parse(&key.to_string()), Ok(key));
    }
    if let Ok(policy) = RestartPolicy::from_str(text) {
        assert_eq!(policy.as_str(), text);
    }
    if let Ok(policy) = OnCheckFailure::from_str(text) {
        assert_eq!(policy.as_str(), text);
    }
    if let Ok(format) = LogFormat::from_str(text) {
        assert_eq!(LogFormat::from_str(format.as_str()), Ok(format));
    }
    let _ = is_hostname(text);
}

fn round_trip<T>(text: &str) -> Option<T>
where
    T: FromStr + std::fmt::Display + PartialEq + std::fmt::Debug,
    T::Err: std::fmt::Debug,
{
    let value = text.parse::<T>().ok()?;
    let printed = value.to_string();
    let back = printed
        .parse::<T>()
        .unwrap_or_else(|e| panic!("{text:?} printed as {printed:?}, which does not parse: {e:?}"));
    assert_eq!(back, value, "{text:?} printed as {printed:?}");
    Some(value)
}
