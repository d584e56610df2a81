//! The app config (`/etc/nodeos/app.json`) and what init derives from it:
//! the app's environment, the hostname, the text of `/run/resolv.conf`.

use std::net::IpAddr;
use std::path::Path;

use nodeos_manifest::AppConfig;

use crate::error::Error;

/// `PATH` the app gets (the image has node in `/usr/bin`).
pub const APP_PATH: &str = "/usr/bin:/bin";
/// `HOME` the app gets: writable tmpfs.
pub const APP_HOME: &str = "/tmp";
/// Hostname when the app name has nothing usable in it.
pub const FALLBACK_HOSTNAME: &str = "nodeos";

/// Reads and checks the app config at `path`.
pub fn load(path: &Path) -> Result<AppConfig, Error> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: shown.clone(),
        source,
    })?;
    let config: AppConfig = serde_json::from_str(&text).map_err(|source| Error::ConfigJson {
        path: shown.clone(),
        source,
    })?;
    validate(&config).map_err(|problem| Error::ConfigInvalid {
        path: shown,
        problem,
    })?;
    Ok(config)
}

/// Checks what serde cannot: the things `execve` and `chdir` would reject later
/// with a less helpful message.
pub fn validate(config: &AppConfig) -> Result<(), String> {
    if config.name.trim().is_empty() {
        return Err("`name` is empty".into());
    }
    if !config.node.starts_with('/') {
        return Err(format!(
            "`node` must be an absolute path, not {:?}",
            config.node
        ));
    }
    if !config.workdir.starts_with('/') {
        return Err(format!(
            "`workdir` must be an absolute path, not {:?}",
            config.workdir
        ));
    }
    if let Some(arg) = config.args.iter().find(|a| a.contains('\0')) {
        return Err(format!("argument {arg:?} contains a NUL byte"));
    }
    for (key, value) in &config.env {
        if key.is_empty() || key.contains(['=', '\0']) {
            return Err(format!("environment variable name {key:?} is not valid"));
        }
        if value.contains('\0') {
            return Err(format!("environment variable {key} contains a NUL byte"));
        }
    }
    Ok(())
}

/// The app's whole environment: `PATH` and `HOME`, then every `env` entry of
/// the config (which may override them). Sorted by name, no duplicates.
pub fn app_env(config: &AppConfig) -> Vec<(String, String)> {
    let mut env = std::collections::BTreeMap::new();
    env.insert("PATH".to_string(), APP_PATH.to_string());
    env.insert("HOME".to_string(), APP_HOME.to_string());
    for (k, v) in &config.env {
        env.insert(k.clone(), v.clone());
    }
    env.into_iter().collect()
}

/// A valid hostname (RFC 1123 label) made from the app name: lower case,
/// `[a-z0-9-]`, at most 63 bytes, no leading/trailing `-`. An npm scope
/// `@acme/api` becomes `acme-api`.
pub fn hostname(app_name: &str) -> String {
    let mut out = String::new();
    for c in app_name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
        if out.len() >= 63 {
            break;
        }
    }
    let trimmed = out.trim_end_matches('-');
    if trimmed.is_empty() {
        FALLBACK_HOSTNAME.to_string()
    } else {
        trimmed.to_string()
    }
}

/// Text of `/run/resolv.conf` (`/etc/resolv.conf` links to it).
pub fn resolv_conf(dns: &[IpAddr]) -> String {
    dns.iter().map(|a| format!("nameserver {a}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn sample() -> AppConfig {
        AppConfig {
            name: "hello".into(),
            node: "/usr/bin/node".into(),
            workdir: "/app".into(),
            args: vec!["index.js".into()],
            env: BTreeMap::from([
                ("PORT".into(), "3000".into()),
                ("NODE_ENV".into(), "production".into()),
            ]),
        }
    }

    #[test]
    fn env_is_path_home_and_config_entries() {
        let env = app_env(&sample());
        let keys: Vec<_> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            keys,
            [
                "HOME=/tmp",
                "NODE_ENV=production",
                "PATH=/usr/bin:/bin",
                "PORT=3000"
            ]
        );
    }

    #[test]
    fn config_env_overrides_defaults() {
        let mut c = sample();
        c.env.insert("HOME".into(), "/data".into());
        assert!(app_env(&c).contains(&("HOME".to_string(), "/data".to_string())));
    }

    #[test]
    fn hostnames_are_sanitised() {
        assert_eq!(hostname("hello"), "hello");
        assert_eq!(hostname("@acme/My_API"), "acme-my-api");
        assert_eq!(hostname("--x--"), "x");
        assert_eq!(hostname("ünï"), "n");
        assert_eq!(hostname("@@@"), FALLBACK_HOSTNAME);
        assert_eq!(hostname(""), FALLBACK_HOSTNAME);
        let long = hostname(&"a".repeat(100));
        assert_eq!(long.len(), 63);
    }

    #[test]
    fn resolv_conf_lists_every_server() {
        let dns = ["10.0.2.3".parse().unwrap(), "fec0::3".parse().unwrap()];
        assert_eq!(
            resolv_conf(&dns),
            "nameserver 10.0.2.3\nnameserver fec0::3\n"
        );
    }

    #[test]
    fn validation_rejects_what_execve_would() {
        assert!(validate(&sample()).is_ok());
        let mut c = sample();
        c.node = "node".into();
        assert!(validate(&c).unwrap_err().contains("node"));
        let mut c = sample();
        c.workdir = "app".into();
        assert!(validate(&c).unwrap_err().contains("workdir"));
        let mut c = sample();
        c.env.insert("A=B".into(), "x".into());
        assert!(validate(&c).is_err());
        let mut c = sample();
        c.name = " ".into();
        assert!(validate(&c).is_err());
    }

    #[test]
    fn load_reports_missing_file_bad_json_and_bad_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.json");
        let err = load(&path).unwrap_err();
        assert!(matches!(err, Error::Read { .. }), "{err}");

        std::fs::write(&path, "{\"name\": 1}").unwrap();
        let err = load(&path).unwrap_err();
        assert!(matches!(err, Error::ConfigJson { .. }), "{err}");

        let mut c = sample();
        c.workdir = "relative".into();
        std::fs::write(&path, serde_json::to_string(&c).unwrap()).unwrap();
        let err = load(&path).unwrap_err();
        assert!(matches!(err, Error::ConfigInvalid { .. }), "{err}");

        std::fs::write(&path, serde_json::to_string(&sample()).unwrap()).unwrap();
        assert_eq!(load(&path).unwrap(), sample());
    }
}
