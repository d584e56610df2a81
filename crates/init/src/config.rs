//! Phase 4, config & secrets: the app config baked into the image
//! (`app.json` of the app layer, with the package.json `"nodeos"` settings) and
//! the run config `nodeos run` passes on a config disk (overrides and the
//! environment given at boot, which may hold secrets: their values are never
//! printed). Also what init derives from them: the app's environment, the
//! hostname, the text of `/run/resolv.conf` and `/run/hosts`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use nodeos_manifest::settings::{DataCheck, RUN_CONFIG_MAX_JSON};
use nodeos_manifest::{APP_CONFIG_PATH, AppConfig, RunConfig};

use crate::disks::{self, Content};
use crate::error::Error;
use crate::system::System;

/// The app config, with the run config applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boot {
    pub app: AppConfig,
    /// The config disk the run config came from, if there was one.
    pub run_config_from: Option<PathBuf>,
    /// Names of the variables the run config added (values are secret).
    pub run_env_names: Vec<String>,
    /// `nodeos run`'s check of the data volume, from the run config.
    pub data_check: Option<DataCheck>,
}

/// Largest app config accepted.
const MAX_APP_CONFIG: usize = 1 << 20;

/// Reads the app config and applies the run config from the config disk,
/// if one is attached.
pub fn load_boot(sys: &mut impl System) -> Result<Boot, Error> {
    let mut app = load(sys, Path::new(APP_CONFIG_PATH))?;
    let mut boot = Boot {
        app: app.clone(),
        run_config_from: None,
        run_env_names: Vec::new(),
        data_check: None,
    };
    if let Some((disk, run)) = find_run_config(sys)? {
        run.apply(&mut app.settings, &mut app.env);
        validate(&app).map_err(|problem| Error::ConfigInvalid {
            path: disk.display().to_string(),
            problem,
        })?;
        boot.run_env_names = run.env.keys().cloned().collect();
        boot.data_check = run.data_check;
        boot.run_config_from = Some(disk);
        boot.app = app;
    }
    Ok(boot)
}

/// The first virtio disk that starts with [`RUN_CONFIG_MAGIC`] is the
/// config disk.
pub fn find_run_config(sys: &mut impl System) -> Result<Option<(PathBuf, RunConfig)>, Error> {
    let disks = disks::scan(sys);
    let Some(disk) = disks.iter().find(|d| d.content == Content::RunConfig) else {
        return Ok(None);
    };
    let dev = disk.dev.clone();
    let shown = dev.display().to_string();
    let bytes = sys
        .read(&dev, 24 + RUN_CONFIG_MAX_JSON)
        .map_err(|source| Error::Read {
            path: shown.clone(),
            source,
        })?;
    match RunConfig::from_disk(&bytes) {
        Ok(Some(run)) => Ok(Some((dev, run))),
        Ok(None) => Ok(None),
        Err(e) => Err(Error::ConfigInvalid {
            path: shown,
            problem: format!(
                "{e} (the config disk is written by `nodeos run`; is this nodeos older than the image?)"
            ),
        }),
    }
}

/// `PATH` the app gets (the image has node in `/usr/bin`).
pub const APP_PATH: &str = "/usr/bin:/bin";
/// `HOME` the app gets: writable tmpfs.
pub const APP_HOME: &str = "/tmp";
/// Hostname when the app name has nothing usable in it.
pub const FALLBACK_HOSTNAME: &str = "nodeos";

/// Reads and checks the app config at `path`.
pub fn load(sys: &mut impl System, path: &Path) -> Result<AppConfig, Error> {
    let shown = path.display().to_string();
    let text = sys
        .read(path, MAX_APP_CONFIG)
        .map_err(|source| Error::Read {
            path: shown.clone(),
            source,
        })?;
    parse(&text, &shown)
}

/// Parses and checks the bytes of an app config read from `shown` (the
/// path its errors name). Also what the `config` fuzz target feeds.
pub fn parse(text: &[u8], shown: &str) -> Result<AppConfig, Error> {
    let config: AppConfig = serde_json::from_slice(text).map_err(|source| Error::ConfigJson {
        path: shown.to_owned(),
        source,
    })?;
    validate(&config).map_err(|problem| Error::ConfigInvalid {
        path: shown.to_owned(),
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
        nodeos_manifest::settings::check_env(key, value)?;
    }
    config.settings.validate().map_err(|e| e.to_string())
}

/// The app's whole environment: `PATH`, `HOME` and `PORT` (the settings'
/// port), then every `env` entry of the config (which may override them).
/// Sorted by name, no duplicates.
pub fn app_env(config: &AppConfig) -> Vec<(String, String)> {
    let mut env = BTreeMap::new();
    env.insert("PATH".to_string(), APP_PATH.to_string());
    env.insert("HOME".to_string(), APP_HOME.to_string());
    env.insert("PORT".to_string(), config.settings.port.to_string());
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

/// Text of `/run/hosts` (`/etc/hosts` links to it): localhost, the
/// machine's own name on the loopback, then the configured entries.
pub fn hosts(hostname: &str, extra: &BTreeMap<String, IpAddr>) -> String {
    let mut text = format!("127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\t{hostname}\n");
    for (name, addr) in extra {
        text.push_str(&format!("{addr}\t{name}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::Recorder;

    fn sample() -> AppConfig {
        AppConfig {
            name: "hello".into(),
            node: "/usr/bin/node".into(),
            workdir: "/app".into(),
            args: vec!["index.js".into()],
            env: BTreeMap::from([("NODE_ENV".into(), "production".into())]),
            entry: Some("/app/index.js".into()),
            settings: Default::default(),
        }
    }

    #[test]
    fn port_comes_from_the_settings() {
        let mut c = sample();
        c.settings.port = 80;
        assert!(app_env(&c).contains(&("PORT".to_string(), "80".to_string())));
    }

    #[test]
    fn hosts_has_localhost_the_hostname_and_the_configured_names() {
        let extra = BTreeMap::from([("db.internal".to_string(), "10.0.2.2".parse().unwrap())]);
        assert_eq!(
            hosts("hello", &extra),
            "127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\thello\n10.0.2.2\tdb.internal\n"
        );
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
        let path = Path::new(APP_CONFIG_PATH);
        let err = load(&mut Recorder::default(), path).unwrap_err();
        assert!(matches!(err, Error::Read { .. }), "{err}");

        let mut sys = Recorder::default().with_file(APP_CONFIG_PATH, "{\"name\": 1}");
        let err = load(&mut sys, path).unwrap_err();
        assert!(matches!(err, Error::ConfigJson { .. }), "{err}");

        let mut c = sample();
        c.workdir = "relative".into();
        let mut sys =
            Recorder::default().with_file(APP_CONFIG_PATH, serde_json::to_vec(&c).unwrap());
        let err = load(&mut sys, path).unwrap_err();
        assert!(matches!(err, Error::ConfigInvalid { .. }), "{err}");

        let mut c = sample();
        c.settings.grace = 99_999;
        let mut sys =
            Recorder::default().with_file(APP_CONFIG_PATH, serde_json::to_vec(&c).unwrap());
        let err = load(&mut sys, path).unwrap_err();
        assert!(err.to_string().contains("`grace`"), "{err}");

        let mut sys = image();
        assert_eq!(load(&mut sys, path).unwrap(), sample());
    }

    fn image() -> Recorder {
        Recorder::default()
            .with_file(APP_CONFIG_PATH, serde_json::to_vec(&sample()).unwrap())
            .with_file("/sys/block/vda/size", "1")
            .with_file("/dev/vda", b"hsqs and the rest of a root filesystem")
    }

    fn run_config() -> RunConfig {
        RunConfig {
            env: BTreeMap::from([("API_TOKEN".into(), "s3cret".into())]),
            restart: Some(nodeos_manifest::RestartPolicy::Never),
            grace: Some(3),
            ..RunConfig::default()
        }
    }

    #[test]
    fn without_a_config_disk_the_image_config_stands() {
        let boot = load_boot(&mut image()).unwrap();
        assert_eq!(boot.app, sample());
        assert_eq!(boot.run_config_from, None);
        assert_eq!(boot.data_check, None);
    }

    #[test]
    fn the_hosts_data_check_comes_with_the_run_config() {
        use nodeos_manifest::settings::CheckStatus;
        let check = DataCheck {
            status: CheckStatus::Repaired,
            summary: "journal replayed".into(),
        };
        let run = RunConfig {
            data_check: Some(check.clone()),
            ..run_config()
        };
        let mut sys = image()
            .with_file("/sys/block/vdb/size", "8")
            .with_file("/dev/vdb", run.to_disk().unwrap());
        assert_eq!(load_boot(&mut sys).unwrap().data_check, Some(check));
    }

    #[test]
    fn the_config_disk_is_found_and_applied() {
        let mut sys = image()
            .with_file("/sys/block/vdb/size", "8")
            .with_file("/dev/vdb", run_config().to_disk().unwrap());
        let boot = load_boot(&mut sys).unwrap();
        assert_eq!(boot.run_config_from, Some(PathBuf::from("/dev/vdb")));
        assert_eq!(boot.run_env_names, ["API_TOKEN"]);
        assert_eq!(boot.app.settings.grace, 3);
        assert_eq!(
            boot.app.settings.restart,
            nodeos_manifest::RestartPolicy::Never
        );
        assert_eq!(boot.app.env["API_TOKEN"], "s3cret");
        assert_eq!(boot.app.env["NODE_ENV"], "production", "image env kept");
        assert!(
            sys.calls.contains(&"read /dev/vda".to_string()),
            "{:?}",
            sys.calls
        );
    }

    #[test]
    fn a_broken_config_disk_is_an_error_naming_the_disk() {
        let mut disk = run_config().to_disk().unwrap();
        disk[24] = b'!';
        let mut sys = image()
            .with_file("/sys/block/vdb/size", "8")
            .with_file("/dev/vdb", disk);
        let err = load_boot(&mut sys).unwrap_err();
        assert!(err.to_string().starts_with("/dev/vdb: "), "{err}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
}
