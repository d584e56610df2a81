//! package.json's `"nodeos"` key: how the appliance runs the app.
//!
//! Its keys are the fields of [`Settings`] (`restart`, `grace`,
//! `logFormat`, `port`, `network`, `data`, `update`, `syslog`), which the guest
//! reads; `env`, extra environment for the app; and the keys only the host
//! reads: `memory`, `cpus` and `ports` ([`VmSettings`], for `nodeos run`)
//! and `node` (the Node.js version range, instead of `engines.node`).
//! [`parse`] checks all of it and names the offending key by its full
//! path (`nodeos.network.ipv4.gateway`) when something is wrong; an unknown
//! key gets the closest valid key as a suggestion. The reference is
//! docs/config.md; docs/nodeos.schema.json describes the same keys as a
//! JSON Schema (a test keeps the two in step).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use nodeos_manifest::Settings;
use nodeos_manifest::host::{PortForward, VmSettings};
use nodeos_manifest::settings::{Cidr, StaticIpv4, StaticIpv6, check_env};
use nodeos_manifest::update::PublicKey;
use serde_json::{Map, Value};
use serde_path_to_error::Segment;

/// The name of the key in package.json.
pub const KEY: &str = "nodeos";
/// The key of the extra environment inside `"nodeos"`.
const ENV_KEY: &str = "env";
/// A comment for people (JSON has none); ignored.
const COMMENT_KEY: &str = "$comment";
/// The keys only the host reads, taken out before [`Settings`] is read.
const HOST_KEYS: [&str; 4] = ["memory", "cpus", "ports", "node"];

/// What the `"nodeos"` key asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeosConfig {
    pub settings: Settings,
    /// `env`: extra environment of the app, exactly as written (no
    /// `NODE_ENV` default, never `PORT`).
    pub env: BTreeMap<String, String>,
    /// `memory`, `cpus`, `ports`: how `nodeos run` starts the VM.
    pub vm: VmSettings,
    /// `node`: the Node.js version range, instead of `engines.node`.
    pub node: Option<String>,
    /// `update.publicKey` written as a file path (resolved against the
    /// project directory), read by [`read_key_file`] when the build needs it.
    pub key_file: Option<PathBuf>,
}

/// A problem with the `"nodeos"` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Full dotted path of the key, e.g. `nodeos.network.ipv4.gateway`.
    pub key: String,
    /// What is wrong.
    pub problem: String,
    /// What to do about it.
    pub help: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, problem: impl Into<String>, help: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            problem: problem.into(),
            help: help.into(),
        }
    }
}

/// The help of a value that is well-formed JSON but not acceptable.
const FIX_VALUE: &str = "fix it, or remove it to use the default (see docs/config.md)";

/// Reads the `"nodeos"` value of package.json (`None` or `null`: defaults).
/// `dir` is the project directory, which a key file path in
/// `update.publicKey` is relative to.
pub fn parse(value: Option<&Value>, dir: &Path) -> Result<NodeosConfig, ConfigError> {
    let object = match value {
        None | Some(Value::Null) => return Ok(NodeosConfig::default()),
        Some(Value::Object(object)) => object,
        Some(other) => {
            return Err(ConfigError::new(
                KEY,
                format!("must be an object, not {}", json_type(other)),
                r#"write it as an object, e.g. "nodeos": {"restart": "on-failure"}"#,
            ));
        }
    };
    let mut settings_object = object.clone();
    // JSON Schema's comment keyword, which `nodeos init` writes.
    settings_object.remove(COMMENT_KEY);
    let env = settings_object.remove(ENV_KEY);
    let mut host_object = Map::new();
    for key in HOST_KEYS {
        if let Some(value) = settings_object.remove(key) {
            host_object.insert(key.to_owned(), value);
        }
    }
    let key_file = take_key_file(&mut settings_object, dir);
    let settings = settings(settings_object)?;
    let env = env_vars(env.as_ref())?;
    let (vm, node) = host_keys(host_object)?;
    Ok(NodeosConfig {
        settings,
        env,
        vm,
        node,
        key_file,
    })
}

/// Reads the host-only keys.
fn host_keys(object: Map<String, Value>) -> Result<(VmSettings, Option<String>), ConfigError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct HostKeys {
        memory: Option<u32>,
        cpus: Option<u32>,
        #[serde(default)]
        ports: Vec<PortForward>,
        node: Option<String>,
    }
    let value = Value::Object(object);
    let keys: HostKeys =
        serde_path_to_error::deserialize(&value).map_err(|e| serde_error(&value, &e))?;
    let vm = VmSettings {
        memory: keys.memory,
        cpus: keys.cpus,
        ports: keys.ports,
    };
    vm.validate()
        .map_err(|(key, problem)| ConfigError::new(format!("{KEY}.{key}"), problem, FIX_VALUE))?;
    if let Some(range) = &keys.node
        && let Err(e) = nodejs_semver::Range::parse(range.trim())
    {
        return Err(ConfigError::new(
            format!("{KEY}.node"),
            format!("{range:?} is not a version range ({e})"),
            r#"write a Node.js version or range, e.g. "node": "22" or "node": "^22.11""#,
        ));
    }
    Ok((vm, keys.node))
}

/// Takes a file path out of `update.publicKey` (anything not starting
/// with `ed25519:`), resolved against `dir`; [`read_key_file`] reads it
/// when the build needs the key (`--key` wins without it being read).
fn take_key_file(object: &mut Map<String, Value>, dir: &Path) -> Option<PathBuf> {
    let update = object.get_mut("update")?.as_object_mut()?;
    match update.get("publicKey")? {
        Value::String(written) if !written.starts_with(crate::keys::PUBLIC_KEY_PREFIX) => {
            let path = dir.join(written);
            update.remove("publicKey");
            Some(path)
        }
        _ => None,
    }
}

/// Reads the public key of `nodeos.update.publicKey` given as a file: a
/// `.pub` file or a public key PEM. A private key is refused: it has no
/// place in a project, whose files all go into the image.
pub fn read_key_file(path: &Path) -> Result<PublicKey, ConfigError> {
    let key = format!("{KEY}.update.publicKey");
    let text = std::fs::read_to_string(path).unwrap_or_default();
    if text.trim_start().starts_with("-----BEGIN PRIVATE KEY-----") {
        return Err(ConfigError::new(
            key,
            format!("{} is a private key", path.display()),
            "copy only the public key (the .pub file `nodeos keygen` wrote) into the project, point at it, and keep the private key outside the project",
        ));
    }
    crate::keys::read_public(path).map_err(|e| {
        ConfigError::new(
            key,
            e.to_string(),
            r#"write the key itself ("ed25519:<64 hex digits>") or the path of a .pub file, relative to package.json"#,
        )
    })
}

/// Deserialises and validates the settings keys (everything but `env`).
fn settings(object: Map<String, Value>) -> Result<Settings, ConfigError> {
    let value = Value::Object(object);
    let settings: Settings =
        serde_path_to_error::deserialize(&value).map_err(|e| serde_error(&value, &e))?;
    settings.validate().map_err(|e| {
        ConfigError::new(
            format!("{KEY}.{}", e.key),
            e.problem.replace('`', "\""),
            FIX_VALUE,
        )
    })?;
    Ok(settings)
}

/// Turns a serde error into one naming the key; an unknown key is named
/// itself, with the closest valid key as a suggestion.
fn serde_error(value: &Value, e: &serde_path_to_error::Error<serde_json::Error>) -> ConfigError {
    let segments: Vec<&Segment> = e.path().iter().collect();
    let message = e.inner().to_string();
    if message.starts_with("unknown field")
        && let Some(error) = unknown_key(value, &segments)
    {
        return error;
    }
    ConfigError::new(key_path(&segments), message.replace('`', "\""), FIX_VALUE)
}

/// The unknown key at the end of `segments`, named with a suggestion.
fn unknown_key(value: &Value, segments: &[&Segment]) -> Option<ConfigError> {
    let (Segment::Map { key: unknown }, parent) = segments.split_last()? else {
        return None;
    };
    lookup(value, parent)?.as_object()?;
    let sample = all_keys_sample();
    let valid = lookup(&sample, parent)?.as_object()?;
    if valid.contains_key(unknown) {
        return None;
    }
    let mut candidates: Vec<&str> = valid.keys().map(String::as_str).collect();
    if parent.is_empty() {
        candidates.push(ENV_KEY);
        candidates.extend(HOST_KEYS);
    }
    candidates.sort_unstable();
    let help = match closest(unknown, &candidates) {
        Some(best) => format!("did you mean \"{best}\"?"),
        None => format!(
            "the keys here are {}",
            candidates
                .iter()
                .map(|c| format!("\"{c}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    Some(ConfigError::new(key_path(segments), "unknown key", help))
}

/// A [`Settings`] with every optional part filled in, as JSON: the shape
/// that lists every valid key.
fn all_keys_sample() -> Value {
    let mut sample = Settings {
        syslog: Some("udp://10.0.2.2:514".parse().expect("a syslog target")),
        ..Settings::default()
    };
    sample.network.ipv4 = Some(StaticIpv4 {
        address: Cidr {
            addr: Ipv4Addr::new(10, 0, 2, 15),
            prefix: 24,
        },
        gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
    });
    sample.network.ipv6 = Some(StaticIpv6 {
        address: Cidr {
            addr: Ipv6Addr::LOCALHOST,
            prefix: 64,
        },
        gateway: Some(Ipv6Addr::LOCALHOST),
    });
    sample.network.dns = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    sample
        .network
        .hosts
        .insert("host".to_owned(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    sample.update.public_key = Some(nodeos_manifest::update::PublicKey([0; 32]));
    sample.update.health.path = Some("/".to_owned());
    serde_json::to_value(&sample).expect("settings serialise")
}

fn lookup<'v>(value: &'v Value, segments: &[&Segment]) -> Option<&'v Value> {
    segments
        .iter()
        .try_fold(value, |value, segment| match segment {
            Segment::Map { key } => value.get(key),
            Segment::Seq { index } => value.get(index),
            _ => None,
        })
}

/// `nodeos.network.dns[1]` for the path `network`, `dns`, `1`.
fn key_path(segments: &[&Segment]) -> String {
    let mut out = KEY.to_owned();
    for segment in segments {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } => {
                out.push('.');
                out.push_str(key);
            }
            Segment::Enum { variant } => {
                out.push('.');
                out.push_str(variant);
            }
            _ => out.push_str(".?"),
        }
    }
    out
}

/// Reads `env`: an object of names to string values.
fn env_vars(value: Option<&Value>) -> Result<BTreeMap<String, String>, ConfigError> {
    let key = format!("{KEY}.{ENV_KEY}");
    let object = match value {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::Object(object)) => object,
        Some(other) => {
            return Err(ConfigError::new(
                key,
                format!("must be an object, not {}", json_type(other)),
                r#"write it as an object of names and strings, e.g. "env": {"LOG_LEVEL": "info"}"#,
            ));
        }
    };
    let mut env = BTreeMap::new();
    for (name, value) in object {
        let var_key = format!("{key}.{name}");
        if name == "PORT" {
            return Err(ConfigError::new(
                var_key,
                "PORT cannot be set here: nodeos-init sets it from the port setting",
                r#"set "nodeos.port" instead, e.g. "port": 8080"#,
            ));
        }
        let Value::String(value) = value else {
            let help = match value {
                Value::Number(_) | Value::Bool(_) => {
                    format!("write the value in quotes, e.g. \"{name}\": \"{value}\"")
                }
                _ => "write the value as a string".to_owned(),
            };
            return Err(ConfigError::new(
                var_key,
                format!("must be a string, not {}", json_type(value)),
                help,
            ));
        };
        if let Err(problem) = check_env(name, value) {
            return Err(ConfigError::new(
                var_key,
                problem,
                "use a name without \"=\" or NUL bytes, and a value without NUL bytes",
            ));
        }
        env.insert(name.clone(), value.clone());
    }
    Ok(env)
}

/// "a string", "an array", … for messages.
fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The candidate closest to `word`, if it is close enough to be a typo.
fn closest<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let word = word.to_lowercase();
    let limit = (word.chars().count() / 3).max(2);
    candidates
        .iter()
        .map(|c| (edit_distance(&word, &c.to_lowercase()), *c))
        .filter(|(d, c)| *d <= limit && *d < c.chars().count())
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Optimal string alignment distance: insertions, deletions,
/// substitutions and swaps of neighbours each cost 1.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // rows[i][j]: distance between a[..i] and b[..j].
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = d;
        }
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use nodeos_manifest::{LogFormat, RestartPolicy};

    use super::*;

    fn parse_str(json: &str) -> Result<NodeosConfig, ConfigError> {
        let value: Value = serde_json::from_str(json).expect("test JSON");
        parse(Some(&value), Path::new("."))
    }

    #[track_caller]
    fn error(json: &str) -> ConfigError {
        parse_str(json).expect_err("must be refused")
    }

    #[test]
    fn no_key_or_null_or_empty_object_means_defaults() {
        assert_eq!(
            parse(None, Path::new(".")).unwrap(),
            NodeosConfig::default()
        );
        assert_eq!(
            parse(Some(&Value::Null), Path::new(".")).unwrap(),
            NodeosConfig::default()
        );
        assert_eq!(parse_str("{}").unwrap(), NodeosConfig::default());
        assert_eq!(NodeosConfig::default().settings, Settings::default());
    }

    #[test]
    fn a_full_object_is_read() {
        let config = parse_str(
            r#"{"restart":"on-failure","grace":30,"logFormat":"json","port":80,
                "network":{"ipv4":{"address":"10.0.2.20/24","gateway":"10.0.2.2"},
                           "ipv6":{"address":"fec0::20/64","gateway":"fec0::2"},
                           "dns":["10.0.2.3","1.1.1.1"],
                           "hosts":{"db.internal":"10.0.2.2"},
                           "dhcpTimeout":5},
                "env":{"LOG_LEVEL":"debug","NODE_ENV":"staging"}}"#,
        )
        .unwrap();
        let s = &config.settings;
        assert_eq!(s.restart, RestartPolicy::OnFailure);
        assert_eq!(s.grace, 30);
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.port, 80);
        assert_eq!(s.network.ipv4.unwrap().address.to_string(), "10.0.2.20/24");
        assert_eq!(s.network.ipv6.unwrap().address.prefix, 64);
        assert_eq!(s.network.dns.len(), 2);
        assert_eq!(s.network.hosts.len(), 1);
        assert_eq!(s.network.dhcp_timeout, 5);
        assert_eq!(
            config.env,
            BTreeMap::from([
                ("LOG_LEVEL".to_owned(), "debug".to_owned()),
                ("NODE_ENV".to_owned(), "staging".to_owned()),
            ])
        );
    }

    #[test]
    fn the_example_of_the_docs_is_valid() {
        let doc = include_str!("../../../docs/config.md");
        let example = doc
            .split("```json\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("docs/config.md has a JSON example");
        let package: Value = serde_json::from_str(example).expect("the example is JSON");
        let config = parse(package.get(KEY), Path::new(".")).expect("the example is valid");
        assert_ne!(config.settings, Settings::default());
        assert!(!config.env.is_empty());
    }

    #[test]
    fn nodeos_must_be_an_object() {
        for json in [r#""always""#, "[]", "3", "true"] {
            let e = error(json);
            assert_eq!(e.key, "nodeos", "{json}");
            assert!(e.problem.starts_with("must be an object"), "{e:?}");
        }
    }

    #[test]
    fn wrong_types_name_the_key() {
        let e = error(r#"{"grace":"10"}"#);
        assert_eq!(e.key, "nodeos.grace");
        assert_eq!(e.problem, r#"invalid type: string "10", expected u32"#);
        assert_eq!(e.help, FIX_VALUE);
        let e = error(r#"{"port":70000}"#);
        assert_eq!(e.key, "nodeos.port");
        let e = error(r#"{"network":{"dns":["10.0.2.3", 5]}}"#);
        assert_eq!(e.key, "nodeos.network.dns[1]");
        let e = error(r#"{"network":{"hosts":{"db":"nowhere"}}}"#);
        assert_eq!(e.key, "nodeos.network.hosts.db");
    }

    #[test]
    fn bad_variant_names_the_key_and_the_choices() {
        let e = error(r#"{"restart":"sometimes"}"#);
        assert_eq!(e.key, "nodeos.restart");
        assert_eq!(
            e.problem,
            r#"unknown variant "sometimes", expected one of "always", "on-failure", "never""#
        );
        let e = error(r#"{"logFormat":"xml"}"#);
        assert_eq!(e.key, "nodeos.logFormat");
        assert!(e.problem.contains(r#""json""#), "{e:?}");
    }

    #[test]
    fn unknown_keys_are_named_with_a_suggestion() {
        let e = error(r#"{"restrat":"always"}"#);
        assert_eq!(e.key, "nodeos.restrat");
        assert_eq!(e.problem, "unknown key");
        assert_eq!(e.help, r#"did you mean "restart"?"#);
        let e = error(r#"{"log_format":"json"}"#);
        assert_eq!(e.help, r#"did you mean "logFormat"?"#);
        let e = error(r#"{"envs":{}}"#);
        assert_eq!(e.help, r#"did you mean "env"?"#);
        let e = error(r#"{"network":{"dhcp_timeout":5}}"#);
        assert_eq!(e.key, "nodeos.network.dhcp_timeout");
        assert_eq!(e.help, r#"did you mean "dhcpTimeout"?"#);
        let e = error(r#"{"network":{"ipv4":{"address":"10.0.2.9/24","gw":"10.0.2.2"}}}"#);
        assert_eq!(e.key, "nodeos.network.ipv4.gw");
        assert!(e.help.starts_with("the keys here are"), "{e:?}");
        assert!(e.help.contains(r#""gateway""#), "{e:?}");
        let e = error(r#"{"kernelArgs":"quiet"}"#);
        assert_eq!(e.key, "nodeos.kernelArgs");
        assert!(e.help.contains(r#""restart""#) && e.help.contains(r#""env""#));
        assert!(e.help.contains(r#""memory""#) && e.help.contains(r#""node""#));
    }

    #[test]
    fn bad_addresses_name_the_key() {
        let e = error(r#"{"network":{"ipv4":{"address":"10.0.2.20"}}}"#);
        assert_eq!(e.key, "nodeos.network.ipv4.address");
        assert!(e.problem.contains("ADDRESS/PREFIX"), "{e:?}");
        let e = error(r#"{"network":{"ipv4":{"address":"10.0.2.20/40"}}}"#);
        assert_eq!(e.key, "nodeos.network.ipv4.address");
        let e = error(r#"{"network":{"ipv6":{"address":"10.0.2.20/24"}}}"#);
        assert_eq!(e.key, "nodeos.network.ipv6.address");
        let e = error(r#"{"network":{"ipv4":{}}}"#);
        assert_eq!(e.key, "nodeos.network.ipv4");
        assert!(e.problem.contains(r#""address""#), "{e:?}");
    }

    #[test]
    fn validation_errors_name_the_key() {
        let e = error(r#"{"network":{"ipv4":{"address":"10.0.2.20/24","gateway":"10.0.3.2"}}}"#);
        assert_eq!(e.key, "nodeos.network.ipv4.gateway");
        assert_eq!(e.problem, "10.0.3.2 is not inside 10.0.2.20/24");
        let e = error(r#"{"grace":3601}"#);
        assert_eq!(e.key, "nodeos.grace");
        assert!(e.problem.contains("3600"), "{e:?}");
        assert_eq!(error(r#"{"port":0}"#).key, "nodeos.port");
        let e = error(r#"{"network":{"dhcpTimeout":0}}"#);
        assert_eq!(e.key, "nodeos.network.dhcpTimeout");
        let e = error(r#"{"network":{"hosts":{"bad_name":"10.0.2.2"}}}"#);
        assert_eq!(e.key, "nodeos.network.hosts.bad_name");
    }

    #[test]
    fn env_errors_name_the_variable() {
        let e = error(r#"{"env":{"PORT":"8080"}}"#);
        assert_eq!(e.key, "nodeos.env.PORT");
        assert!(e.help.contains(r#""nodeos.port""#), "{e:?}");
        let e = error(r#"{"env":{"A=B":"x"}}"#);
        assert_eq!(e.key, "nodeos.env.A=B");
        assert!(e.problem.contains("not a valid environment variable name"));
        assert_eq!(error(r#"{"env":{"":"x"}}"#).key, "nodeos.env.");
        assert_eq!(error(r#"{"env":{"A\u0000":"x"}}"#).key, "nodeos.env.A\0");
        let e = error(r#"{"env":{"A":"x\u0000y"}}"#);
        assert!(e.problem.contains("NUL"), "{e:?}");
        let e = error(r#"{"env":{"RETRIES":3}}"#);
        assert_eq!(e.key, "nodeos.env.RETRIES");
        assert_eq!(e.problem, "must be a string, not a number");
        assert_eq!(e.help, r#"write the value in quotes, e.g. "RETRIES": "3""#);
        let e = error(r#"{"env":["A=1"]}"#);
        assert_eq!(e.key, "nodeos.env");
        assert_eq!(e.problem, "must be an object, not an array");
        let e = error(r#"{"env":{"A":{"b":1}}}"#);
        assert_eq!(e.problem, "must be a string, not an object");
        assert_eq!(e.help, "write the value as a string");
    }

    #[test]
    fn the_key_sample_lists_every_settings_key() {
        let sample = all_keys_sample();
        let keys = |v: &Value| {
            let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            keys.sort();
            keys
        };
        assert_eq!(
            keys(&sample),
            [
                "data",
                "grace",
                "logFormat",
                "network",
                "port",
                "restart",
                "syslog",
                "update"
            ]
        );
        assert_eq!(keys(&sample["update"]), ["health", "port", "publicKey"]);
        assert_eq!(
            keys(&sample["update"]["health"]),
            ["path", "timeout", "uptime"]
        );
        assert_eq!(keys(&sample["data"]), ["onCheckFailure", "size"]);
        assert_eq!(
            keys(&sample["network"]),
            ["dhcpTimeout", "dns", "hosts", "ipv4", "ipv6"]
        );
        assert_eq!(keys(&sample["network"]["ipv4"]), ["address", "gateway"]);
        assert_eq!(keys(&sample["network"]["ipv6"]), ["address", "gateway"]);
        // The sample itself is valid, so it round-trips.
        let value = Value::Object(sample.as_object().unwrap().clone());
        assert!(parse(Some(&value), Path::new(".")).is_ok());
    }

    /// docs/nodeos.schema.json, which the npm package ships for editors.
    fn schema() -> Value {
        serde_json::from_str(include_str!("../../../docs/nodeos.schema.json"))
            .expect("the schema is JSON")
    }

    /// Compares the schema's object keys with the accepted ones at `path`,
    /// recursively; every object is closed (`additionalProperties: false`).
    fn assert_same_keys(schema: &Value, accepted: &Map<String, Value>, path: &str) {
        let properties = schema["properties"].as_object().expect(path);
        assert_eq!(schema["additionalProperties"], false, "{path} is closed");
        let mut in_schema: Vec<&String> = properties.keys().collect();
        let mut in_parser: Vec<&String> = accepted.keys().collect();
        in_schema.sort();
        in_parser.sort();
        assert_eq!(in_schema, in_parser, "the keys of {path}");
        for (key, sub) in properties {
            if let (Some(_), Some(Value::Object(inner))) =
                (sub.get("properties"), accepted.get(key))
            {
                assert_same_keys(sub, inner, &format!("{path}.{key}"));
            }
        }
    }

    #[test]
    fn the_json_schema_lists_exactly_the_accepted_keys() {
        let mut accepted = all_keys_sample().as_object().unwrap().clone();
        for key in HOST_KEYS.iter().chain([&ENV_KEY, &COMMENT_KEY]) {
            accepted.insert((*key).to_owned(), Value::Null);
        }
        assert_same_keys(&schema(), &accepted, KEY);
    }

    #[test]
    fn the_json_schema_enums_and_defaults_are_the_parsers() {
        let schema = schema();
        let props = &schema["properties"];
        for (key, value) in [
            ("restart", &props["restart"]),
            ("logFormat", &props["logFormat"]),
        ] {
            for choice in value["enum"].as_array().unwrap() {
                let json = serde_json::json!({ key: choice }).to_string();
                parse_str(&json).unwrap_or_else(|e| panic!("{json}: {e:?}"));
            }
        }
        for choice in props["data"]["properties"]["onCheckFailure"]["enum"]
            .as_array()
            .unwrap()
        {
            parse_str(&serde_json::json!({"data": {"onCheckFailure": choice}}).to_string())
                .unwrap();
        }
        // Every default the schema states is what an empty key gives.
        let defaults = serde_json::to_value(Settings::default()).unwrap();
        let check = |schema: &Value, actual: &Value, path: &str| {
            if let Some(default) = schema.get("default") {
                assert_eq!(default, actual, "default of {path}");
            }
        };
        for key in ["restart", "grace", "logFormat", "port"] {
            check(&props[key], &defaults[key], key);
        }
        check(
            &props["network"]["properties"]["dhcpTimeout"],
            &defaults["network"]["dhcpTimeout"],
            "network.dhcpTimeout",
        );
        check(
            &props["data"]["properties"]["size"],
            &defaults["data"]["size"],
            "data.size",
        );
        check(
            &props["data"]["properties"]["onCheckFailure"],
            &defaults["data"]["onCheckFailure"],
            "data.onCheckFailure",
        );
        let update = &props["update"]["properties"];
        check(&update["port"], &defaults["update"]["port"], "update.port");
        for key in ["timeout", "uptime"] {
            check(
                &update["health"]["properties"][key],
                &defaults["update"]["health"][key],
                key,
            );
        }
        use nodeos_manifest::host::{DEFAULT_CPUS, DEFAULT_MEMORY_MIB};
        assert_eq!(props["memory"]["default"], DEFAULT_MEMORY_MIB);
        assert_eq!(props["cpus"]["default"], DEFAULT_CPUS);
    }

    #[test]
    fn host_keys_are_read_apart_from_the_guest_settings() {
        let config =
            parse_str(r#"{"memory":512,"cpus":2,"ports":["8080:3000"],"node":"20","port":3000}"#)
                .unwrap();
        assert_eq!(config.vm.memory, Some(512));
        assert_eq!(config.vm.cpus, Some(2));
        assert_eq!(config.vm.ports, vec![PortForward::localhost(8080, 3000)]);
        assert_eq!(config.node.as_deref(), Some("20"));
        assert_eq!(config.settings, Settings::default());
        let e = error(r#"{"memory":"512M"}"#);
        assert_eq!(e.key, "nodeos.memory");
        let e = error(r#"{"memory":16}"#);
        assert_eq!(
            (e.key.as_str(), e.problem.as_str()),
            ("nodeos.memory", "16 MiB is outside 32–1048576 MiB")
        );
        let e = error(r#"{"cpus":0}"#);
        assert_eq!(e.key, "nodeos.cpus");
        let e = error(r#"{"ports":["8080"]}"#);
        assert_eq!(e.key, "nodeos.ports[0]");
        assert!(e.problem.starts_with(r#"missing ":"; expected"#), "{e:?}");
        let e = error(r#"{"node":"lts please"}"#);
        assert_eq!(e.key, "nodeos.node");
        let e = error(r#"{"memroy":512}"#);
        assert_eq!(
            (e.key.as_str(), e.help.as_str()),
            ("nodeos.memroy", "did you mean \"memory\"?")
        );
    }

    #[test]
    fn a_public_key_path_is_read_relative_to_the_project() {
        let home = tempfile::tempdir().unwrap();
        let project = tempfile::tempdir().unwrap();
        let key = crate::keys::generate().unwrap();
        let private = home.path().join("update.pem");
        crate::keys::write_pair(&key, &private).unwrap();
        std::fs::create_dir(project.path().join("keys")).unwrap();
        std::fs::copy(
            crate::keys::public_path(&private),
            project.path().join("keys/update.pub"),
        )
        .unwrap();
        let key_file = |json: &str| {
            let value: Value = serde_json::from_str(json).unwrap();
            let config = parse(Some(&value), project.path()).unwrap();
            assert_eq!(config.settings.update.public_key, None);
            config.key_file.expect("a key file")
        };
        // Parsing only resolves the path; the file is read when needed.
        let path = key_file(r#"{"update":{"publicKey":"keys/update.pub"}}"#);
        assert_eq!(path, project.path().join("keys/update.pub"));
        assert_eq!(read_key_file(&path).unwrap(), crate::keys::public_key(&key));
        let e = read_key_file(&private).unwrap_err();
        assert_eq!(e.key, "nodeos.update.publicKey");
        assert!(e.problem.ends_with("is a private key"), "{e:?}");
        let missing = key_file(r#"{"update":{"publicKey":"keys/missing.pub"}}"#);
        let e = read_key_file(&missing).unwrap_err();
        assert_eq!(e.key, "nodeos.update.publicKey");
        assert!(e.help.contains(".pub file"), "{e:?}");
        // A key written out is no file.
        let value =
            serde_json::json!({"update": {"publicKey": crate::keys::public_key(&key).to_string()}});
        assert_eq!(parse(Some(&value), project.path()).unwrap().key_file, None);
    }

    #[test]
    fn closest_key() {
        let keys = ["restart", "grace", "logFormat", "port", "network", "env"];
        assert_eq!(closest("restrat", &keys), Some("restart"));
        assert_eq!(closest("Grace", &keys), Some("grace"));
        assert_eq!(closest("prot", &keys), Some("port"));
        assert_eq!(closest("memory", &keys), None);
        assert_eq!(closest("x", &keys), None);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("abc", "acb"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
