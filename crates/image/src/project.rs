//! Reading an npm project: its `package.json` and the file Node.js runs.
//!
//! [`Project::load`] reads and checks `package.json` and decides the entry
//! point the guest runs, by the same rules a user expects from `npm start`:
//!
//! 1. `scripts.start`, when it is a plain `node [node-flags…] <file> [args…]`
//!    command (shell-like quoting allowed; anything with shell operators,
//!    expansions or another program falls through);
//! 2. else `main`;
//! 3. else `index.js`.
//!
//! The entry is resolved as Node.js resolves a main module path: the exact
//! file; else, for a directory, its `package.json` `main` or `index.js`;
//! else `<entry>.js`. It must stay inside the project directory.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use nodeos_manifest::Settings;
use serde_json::{Map, Value};

use nodeos_manifest::host::VmSettings;

use crate::config;

/// An npm project, as read from its `package.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    /// The project directory, canonical (symlinks resolved, absolute).
    pub dir: PathBuf,
    /// The package name (`my-app` or `@scope/my-app`), checked by npm's rules.
    pub name: String,
    /// The package version, as written (any non-empty string).
    pub version: String,
    /// The resolved entry file, relative to [`Project::dir`] with `/`
    /// separators, e.g. `index.js` or `src/server.js`.
    pub entry: String,
    /// Where the entry came from.
    pub entry_from: EntrySource,
    /// Node.js flags written before the file in `scripts.start`,
    /// e.g. `["--enable-source-maps"]`.
    pub node_args: Vec<String>,
    /// Arguments written after the file in `scripts.start`.
    pub entry_args: Vec<String>,
    /// The Node.js version range the package asks for: `nodeos.node`,
    /// else `engines.node`.
    pub engines_node: Option<String>,
    /// `dependencies`: name → version range.
    pub dependencies: BTreeMap<String, String>,
    /// `optionalDependencies`: name → version range.
    pub optional_dependencies: BTreeMap<String, String>,
    /// How the appliance runs the app: the `"nodeos"` key of
    /// `package.json` (defaults without one).
    pub settings: Settings,
    /// Extra environment of the app (`nodeos.env`), as written: no
    /// `NODE_ENV` default, never `PORT`.
    pub env: BTreeMap<String, String>,
    /// How `nodeos run` starts the VM (`nodeos.memory`, `cpus`, `ports`).
    pub vm: VmSettings,
    /// `nodeos.update.publicKey` given as a file, read when the image is
    /// built without `--key` ([`config::read_key_file`]).
    pub update_key_file: Option<PathBuf>,
}

/// Which part of `package.json` chose the entry file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntrySource {
    /// A `node <file>` command in `scripts.start`.
    StartScript,
    /// The `main` field.
    Main,
    /// Neither was usable: `index.js`.
    Default,
}

impl fmt::Display for EntrySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EntrySource::StartScript => "from \"scripts.start\" in package.json",
            EntrySource::Main => "from \"main\" in package.json",
            EntrySource::Default => {
                "the default, as package.json has no \"main\" and no \"start\" script running node"
            }
        })
    }
}

/// What can be wrong with an npm project (and, from [`crate::deps`], its
/// installed dependencies).
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error("project directory {} does not exist; pass the directory of an npm project", dir.display())]
    DirMissing { dir: PathBuf },
    #[error("{} is not a directory; pass the directory of an npm project", dir.display())]
    NotADir { dir: PathBuf },
    #[error("no package.json in {}; run nodeos build in an npm project or pass its directory", dir.display())]
    NoPackageJson { dir: PathBuf },
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}:{line}:{column}: invalid JSON: {message}; fix the file's syntax", path.display())]
    InvalidJson {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}: the top level must be a JSON object ({{ ... }})", path.display())]
    NotAnObject { path: PathBuf },
    #[error("{}: \"name\" is missing; add one, e.g. \"name\": \"my-app\"", path.display())]
    MissingName { path: PathBuf },
    #[error(
        "{}: invalid package name {name:?}: {reason}; use lower-case letters, digits, '-', '.' and '_' (or @scope/name)",
        path.display()
    )]
    InvalidName {
        path: PathBuf,
        name: String,
        reason: &'static str,
    },
    #[error("{}: \"version\" is missing or empty; add one, e.g. \"version\": \"1.0.0\"", path.display())]
    MissingVersion { path: PathBuf },
    #[error("{}: \"{field}\" must be {expected}; fix it or remove it", path.display())]
    InvalidField {
        path: PathBuf,
        field: String,
        expected: &'static str,
    },
    #[error("{}: {key}: {problem}; {help}", path.display())]
    Config {
        path: PathBuf,
        /// Full dotted path of the key, e.g. `nodeos.restart`.
        key: String,
        problem: String,
        help: String,
    },
    #[error("entry file {entry} ({from}) does not exist; create it or fix package.json")]
    EntryMissing { entry: String, from: EntrySource },
    #[error(
        "entry file {entry} ({from}) is outside the project directory {}; the app can only run files inside the project",
        dir.display()
    )]
    EntryOutsideProject {
        entry: String,
        from: EntrySource,
        dir: PathBuf,
    },
    #[error("entry file {entry} ({from}) has a path that is not UTF-8; rename it")]
    EntryNotUtf8 { entry: String, from: EntrySource },
    #[error(
        "dependency {name} (required by {required_by}) is not installed; run `{install}` in the project first"
    )]
    DependencyNotInstalled {
        name: String,
        required_by: String,
        /// The command that installs node_modules, e.g. `npm ci`.
        install: &'static str,
    },
    #[error("node_modules is missing; run `{install}` in the project first")]
    NodeModulesMissing { install: &'static str },
    #[error("{lockfile} does not list dependency {name}; run `npm install`")]
    LockfileMissingDependency {
        lockfile: &'static str,
        name: String,
    },
    #[error(
        "package.json asks for {name}@{wanted} but {lockfile} has {name}@{locked}; run `npm install`"
    )]
    LockfileRangeDiffers {
        lockfile: &'static str,
        name: String,
        wanted: String,
        locked: String,
    },
    #[error(
        "node_modules is out of sync with {lockfile} ({package}: installed {installed}, lockfile {locked}); run `npm ci`"
    )]
    LockfileOutOfSync {
        lockfile: &'static str,
        /// The package name, with its location when it is nested.
        package: String,
        installed: String,
        locked: String,
    },
    #[error("{}:{line}: invalid pattern {pattern:?}: {message}; fix or remove the line", path.display())]
    IgnorePattern {
        path: PathBuf,
        line: usize,
        pattern: String,
        message: String,
    },
    #[error(
        "{}:{line}: {pattern:?} excludes {what}, which the app needs; narrow the pattern or remove the line",
        path.display()
    )]
    IgnoredButNeeded {
        path: PathBuf,
        line: usize,
        pattern: String,
        /// E.g. `the entry file server.js` or `the package a at node_modules/a`.
        what: String,
    },
    #[error(
        "native addon {} ({package}) is {found}, but the guest runs Linux x86-64 with glibc; \
         install node_modules on Linux x86-64 (e.g. run `{fix}` there), or list it in .nodeosignore if the app never loads it",
        file.display()
    )]
    ForeignAddon {
        /// Where it is in the app, e.g. `node_modules/x/build/Release/x.node`.
        file: PathBuf,
        /// `name@version` of the nearest package.json.
        package: String,
        /// What it is, e.g. `a macOS (Mach-O) binary`.
        found: String,
        fix: String,
    },
    #[error(
        "native addon {} ({package}) was built for {} (NODE_MODULE_VERSION {addon_abi}), \
         but the image runs Node.js {guest} (NODE_MODULE_VERSION {guest_abi}); rebuild it for the guest: `{fix}`",
        file.display(),
        match crate::node::major_for_module_version(*addon_abi) {
            Some(major) => format!("Node.js {major}"),
            None => "another Node.js".to_string(),
        }
    )]
    AddonAbiMismatch {
        file: PathBuf,
        package: String,
        addon_abi: u32,
        guest: String,
        guest_abi: u32,
        fix: String,
    },
    #[error(
        "{name:?} (required by {required_by}) is not a valid package name; fix the dependency in package.json"
    )]
    InvalidDependencyName { name: String, required_by: String },
    #[error("symbolic link {} leads back into a directory being copied; remove the link cycle", path.display())]
    SymlinkCycle { path: PathBuf },
}

impl Project {
    /// Reads `<dir>/package.json` and resolves the entry file.
    pub fn load(dir: &Path) -> Result<Project, ProjectError> {
        let (dir, path, object) = open_project(dir)?;

        let name = match object.get("name") {
            Some(Value::String(name)) if !name.is_empty() => name.clone(),
            Some(Value::String(_)) | None | Some(Value::Null) => {
                return Err(ProjectError::MissingName { path });
            }
            Some(_) => {
                return Err(ProjectError::InvalidField {
                    path,
                    field: "name".into(),
                    expected: "a string",
                });
            }
        };
        if let Err(reason) = check_name(&name) {
            return Err(ProjectError::InvalidName { path, name, reason });
        }
        let version = match object.get("version") {
            // The version travels in bundles and the update state record.
            Some(Value::String(v)) if !nodeos_manifest::bundle::is_plain_name(v) => {
                return Err(ProjectError::InvalidField {
                    path,
                    field: "version".into(),
                    expected: "at most 256 bytes with no control characters, `\"` or `\\`",
                });
            }
            Some(Value::String(v)) if !v.trim().is_empty() => v.clone(),
            Some(Value::String(_)) | None | Some(Value::Null) => {
                return Err(ProjectError::MissingVersion { path });
            }
            Some(_) => {
                return Err(ProjectError::InvalidField {
                    path,
                    field: "version".into(),
                    expected: "a string",
                });
            }
        };

        let engines_node = engines_node(&object, &path)?;
        let dependencies = string_map(&object, "dependencies", &path)?;
        let optional_dependencies = string_map(&object, "optionalDependencies", &path)?;
        let main = match object.get("main") {
            None | Some(Value::Null) => None,
            Some(Value::String(main)) => Some(main.clone()),
            Some(_) => {
                return Err(ProjectError::InvalidField {
                    path,
                    field: "main".into(),
                    expected: "a string",
                });
            }
        };
        let config::NodeosConfig {
            settings,
            env,
            vm,
            node,
            key_file,
        } = config::parse(object.get(config::KEY), &dir).map_err(|e| ProjectError::Config {
            path: path.clone(),
            key: e.key,
            problem: e.problem,
            help: e.help,
        })?;
        let start = match object.get("scripts") {
            Some(Value::Object(scripts)) => match scripts.get("start") {
                Some(Value::String(start)) => Some(start.clone()),
                _ => None,
            },
            _ => None,
        };

        let (written, from, node_args, entry_args) =
            match start.as_deref().and_then(parse_node_command) {
                Some(cmd) => (cmd.file, EntrySource::StartScript, cmd.node_args, cmd.args),
                None => match main {
                    Some(main) if !main.trim().is_empty() => {
                        (main, EntrySource::Main, Vec::new(), Vec::new())
                    }
                    _ => (
                        "index.js".to_string(),
                        EntrySource::Default,
                        Vec::new(),
                        Vec::new(),
                    ),
                },
            };
        let entry = resolve_entry(&dir, &written, from)?;

        Ok(Project {
            dir,
            name,
            version,
            entry,
            entry_from: from,
            node_args,
            entry_args,
            engines_node: node.or(engines_node),
            dependencies,
            optional_dependencies,
            settings,
            env,
            vm,
            update_key_file: key_file,
        })
    }

    /// The name of the image directory: the package name with a scope
    /// flattened (`@scope/name` → `scope-name`).
    pub fn image_name(&self) -> String {
        image_name(&self.name)
    }
}

/// The Node.js version range of the project in `dir`, read as
/// [`Project::load`] reads it (`nodeos.node`, else `engines.node`) but
/// without resolving the entry file, which may not exist yet: `nodeos
/// nodedir` runs before the project is installed or compiled.
pub fn node_range(dir: &Path) -> Result<Option<String>, ProjectError> {
    let (dir, path, object) = open_project(dir)?;
    let engines = engines_node(&object, &path)?;
    let config =
        config::parse(object.get(config::KEY), &dir).map_err(|e| ProjectError::Config {
            path: path.clone(),
            key: e.key,
            problem: e.problem,
            help: e.help,
        })?;
    Ok(config.node.or(engines))
}

/// The canonical project directory, its package.json's path and contents.
fn open_project(dir: &Path) -> Result<(PathBuf, PathBuf, Map<String, Value>), ProjectError> {
    let dir = match dir.canonicalize() {
        Ok(dir) => dir,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ProjectError::DirMissing {
                dir: dir.to_path_buf(),
            });
        }
        Err(source) => {
            return Err(ProjectError::Io {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    if !dir.is_dir() {
        return Err(ProjectError::NotADir { dir });
    }
    let path = dir.join("package.json");
    match read_package_json(&path)? {
        Some(object) => Ok((dir, path, object)),
        None => Err(ProjectError::NoPackageJson { dir }),
    }
}

/// `engines.node`, if the package asks for a Node.js version there.
fn engines_node(object: &Map<String, Value>, path: &Path) -> Result<Option<String>, ProjectError> {
    let invalid = |field: &str, expected| ProjectError::InvalidField {
        path: path.to_path_buf(),
        field: field.into(),
        expected,
    };
    match object.get("engines") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(engines)) => match engines.get("node") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(range)) => Ok(Some(range.clone())),
            Some(_) => Err(invalid("engines.node", "a version range string")),
        },
        Some(_) => Err(invalid("engines", "an object")),
    }
}

/// `@scope/name` → `scope-name`; unscoped names are returned as they are.
pub fn image_name(package_name: &str) -> String {
    match package_name
        .strip_prefix('@')
        .and_then(|rest| rest.split_once('/'))
    {
        Some((scope, name)) => format!("{scope}-{name}"),
        None => package_name.to_string(),
    }
}

/// Reads a `package.json` as a JSON object; `Ok(None)` if it does not exist.
pub(crate) fn read_package_json(path: &Path) -> Result<Option<Map<String, Value>>, ProjectError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ProjectError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    // npm tolerates a UTF-8 byte order mark.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(object)) => Ok(Some(object)),
        Ok(_) => Err(ProjectError::NotAnObject {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(ProjectError::InvalidJson {
            path: path.to_path_buf(),
            line: e.line(),
            column: e.column(),
            message: json_message(&e),
        }),
    }
}

/// serde_json's message without its trailing " at line L column C".
fn json_message(e: &serde_json::Error) -> String {
    let message = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    message
        .strip_suffix(&suffix)
        .unwrap_or(&message)
        .to_string()
}

fn string_map(
    object: &Map<String, Value>,
    field: &str,
    path: &Path,
) -> Result<BTreeMap<String, String>, ProjectError> {
    let mut out = BTreeMap::new();
    match object.get(field) {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (name, range) in map {
                match range {
                    Value::String(range) => {
                        out.insert(name.clone(), range.clone());
                    }
                    _ => {
                        return Err(ProjectError::InvalidField {
                            path: path.to_path_buf(),
                            field: format!("{field}.{name}"),
                            expected: "a version string",
                        });
                    }
                }
            }
        }
        Some(_) => {
            return Err(ProjectError::InvalidField {
                path: path.to_path_buf(),
                field: field.to_string(),
                expected: "an object of name: version",
            });
        }
    }
    Ok(out)
}

/// Checks a package name by npm's rules for new packages.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.len() > 214 {
        return Err("it is longer than 214 characters");
    }
    if name.trim() != name {
        return Err("it has leading or trailing spaces");
    }
    if name.to_lowercase() != name {
        return Err("it has capital letters");
    }
    if name == "node_modules" || name == "favicon.ico" {
        return Err("it is a reserved name");
    }
    let parts: Vec<&str> = match name.strip_prefix('@') {
        Some(rest) => match rest.split_once('/') {
            Some((scope, pkg)) => vec![scope, pkg],
            None => return Err("a scoped name must look like @scope/name"),
        },
        None => vec![name],
    };
    for part in parts {
        if part.is_empty() {
            return Err("it has an empty part");
        }
        if part.starts_with('.') || part.starts_with('_') {
            return Err("it starts with '.' or '_'");
        }
        if !part
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
        {
            return Err("it has characters that are not URL-safe");
        }
    }
    Ok(())
}

/// A `node [flags…] <file> [args…]` command.
#[derive(Debug, PartialEq, Eq)]
struct NodeCommand {
    node_args: Vec<String>,
    file: String,
    args: Vec<String>,
}

/// Node.js options that take their value as the next argument.
const NODE_VALUE_FLAGS: &[&str] = &[
    "-r",
    "--require",
    "--import",
    "--loader",
    "--experimental-loader",
    "-C",
    "--conditions",
    "--env-file",
    "--env-file-if-exists",
    "--input-type",
    "--title",
    "--inspect-port",
    "--debug-port",
    "--redirect-warnings",
    "--disable-warning",
    "--dns-result-order",
    "--unhandled-rejections",
    "--icu-data-dir",
    "--openssl-config",
    "--tls-cipher-list",
    "--tls-keylog",
    "--secure-heap",
    "--secure-heap-min",
    "--heapsnapshot-signal",
    "--heapsnapshot-near-heap-limit",
    "--diagnostic-dir",
    "--report-directory",
    "--report-dir",
    "--report-filename",
    "--report-signal",
    "--cpu-prof-dir",
    "--cpu-prof-name",
    "--cpu-prof-interval",
    "--heap-prof-dir",
    "--heap-prof-name",
    "--heap-prof-interval",
    "--max-old-space-size",
    "--max-semi-space-size",
    "--stack-size",
    "--stack-trace-limit",
    "--watch-path",
];

/// Node.js options that mean node does not run a file.
const NODE_NO_FILE_FLAGS: &[&str] = &[
    "-e",
    "--eval",
    "-p",
    "--print",
    "-pe",
    "-c",
    "--check",
    "-i",
    "--interactive",
    "--test",
    "--run",
    "-v",
    "--version",
    "-h",
    "--help",
    "--v8-options",
    "--completion-bash",
];

/// Parses a start script that runs a file with node; `None` for anything else.
fn parse_node_command(script: &str) -> Option<NodeCommand> {
    let words = shell_words(script)?;
    let mut words = words.into_iter();
    if words.next()? != "node" {
        return None;
    }
    let mut node_args = Vec::new();
    let file = loop {
        let word = words.next()?;
        if word == "--" {
            break words.next()?;
        }
        if word == "-" {
            return None;
        }
        if !word.starts_with('-') {
            break word;
        }
        let flag = word.split_once('=').map_or(word.as_str(), |(f, _)| f);
        if NODE_NO_FILE_FLAGS.contains(&flag) {
            return None;
        }
        let takes_value = !word.contains('=') && NODE_VALUE_FLAGS.contains(&flag);
        node_args.push(word);
        if takes_value {
            node_args.push(words.next()?);
        }
    };
    Some(NodeCommand {
        node_args,
        file,
        args: words.collect(),
    })
}

/// Splits a command line the way a POSIX shell does for simple commands.
/// `None` if it uses anything beyond words and quoting: operators
/// (`&&`, `|`, `;`, redirections), expansions (`$`, backticks, globs, `~`),
/// comments, or has an unterminated quote.
fn shell_words(s: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => word.push(c),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '$' | '`' => return None,
                        '\\' => match chars.next()? {
                            '\n' => {}
                            c @ ('"' | '\\' | '$' | '`') => word.push(c),
                            c => {
                                word.push('\\');
                                word.push(c);
                            }
                        },
                        c => word.push(c),
                    }
                }
            }
            '\\' => match chars.next()? {
                '\n' => {}
                c => {
                    in_word = true;
                    word.push(c);
                }
            },
            '|' | '&' | ';' | '<' | '>' | '(' | ')' | '$' | '`' | '*' | '?' | '[' => {
                return None;
            }
            '#' | '~' if !in_word => return None,
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Some(words)
}

/// Normalises `rel` lexically below `dir`; `None` if it climbs out.
fn join_inside(dir: &Path, rel: &Path) -> Option<PathBuf> {
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    let rel = match rel.strip_prefix(dir) {
        Ok(inside) if rel.is_absolute() => inside,
        _ => rel,
    };
    for component in rel.components() {
        match component {
            Component::CurDir => {}
            Component::Normal(part) => parts.push(part),
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    let mut out = dir.to_path_buf();
    out.extend(parts);
    Some(out)
}

/// Resolves the entry file as Node.js resolves a main module path.
fn resolve_entry(dir: &Path, written: &str, from: EntrySource) -> Result<String, ProjectError> {
    let outside = || ProjectError::EntryOutsideProject {
        entry: written.to_string(),
        from,
        dir: dir.to_path_buf(),
    };
    let missing = || ProjectError::EntryMissing {
        entry: written.to_string(),
        from,
    };
    let path = join_inside(dir, Path::new(written)).ok_or_else(outside)?;
    let found = find_module_file(&path, 0).ok_or_else(missing)?;
    let real = found.canonicalize().map_err(|_| missing())?;
    let rel = real.strip_prefix(dir).map_err(|_| outside())?;
    let rel = rel.to_str().ok_or_else(|| ProjectError::EntryNotUtf8 {
        entry: written.to_string(),
        from,
    })?;
    Ok(rel.replace(std::path::MAIN_SEPARATOR, "/"))
}

/// The exact file; a directory's `main` or `index.js`; else `<path>.js`.
fn find_module_file(path: &Path, depth: u32) -> Option<PathBuf> {
    if path.is_file() {
        return Some(path.to_path_buf());
    }
    if path.is_dir() {
        if depth == 0
            && let Ok(Some(object)) = read_package_json(&path.join("package.json"))
            && let Some(Value::String(main)) = object.get("main")
            && let Some(main) = join_inside(path, Path::new(main))
            && main != path
            && let Some(found) = find_module_file(&main, depth + 1)
        {
            return Some(found);
        }
        let index = path.join("index.js");
        return index.is_file().then_some(index);
    }
    let mut with_js = path.as_os_str().to_os_string();
    with_js.push(".js");
    let with_js = PathBuf::from(with_js);
    with_js.is_file().then_some(with_js)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(
        package_json: &str,
        files: &[&str],
    ) -> (tempfile::TempDir, Result<Project, ProjectError>) {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::write(tmp.path().join("package.json"), package_json).expect("write");
        for file in files {
            let path = tmp.path().join(file);
            fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            fs::write(path, "").expect("write");
        }
        let result = Project::load(tmp.path());
        (tmp, result)
    }

    fn ok(package_json: &str, files: &[&str]) -> Project {
        let (_tmp, result) = project(package_json, files);
        result.expect("project loads")
    }

    fn err(package_json: &str, files: &[&str]) -> ProjectError {
        let (_tmp, result) = project(package_json, files);
        result.expect_err("project must not load")
    }

    #[test]
    fn entry_from_start_script() {
        let p = ok(
            r#"{"name":"app","version":"1.0.0","main":"other.js","scripts":{"start":"node server.js"}}"#,
            &["server.js", "other.js"],
        );
        assert_eq!(p.entry, "server.js");
        assert_eq!(p.entry_from, EntrySource::StartScript);
        assert!(p.node_args.is_empty() && p.entry_args.is_empty());
        assert_eq!(p.name, "app");
        assert_eq!(p.version, "1.0.0");
    }

    #[test]
    fn start_script_node_flags_and_args() {
        let p = ok(
            r#"{"name":"app","version":"1","scripts":{"start":"node --enable-source-maps dist/index.js --port 3"}}"#,
            &["dist/index.js"],
        );
        assert_eq!(p.entry, "dist/index.js");
        assert_eq!(p.node_args, ["--enable-source-maps"]);
        assert_eq!(p.entry_args, ["--port", "3"]);
    }

    #[test]
    fn start_script_flag_with_separate_value() {
        let p = ok(
            r#"{"name":"app","version":"1","scripts":{"start":"node -r dotenv/config --max-old-space-size=100 app"}}"#,
            &["app.js"],
        );
        assert_eq!(p.entry, "app.js");
        assert_eq!(
            p.node_args,
            ["-r", "dotenv/config", "--max-old-space-size=100"]
        );
    }

    #[test]
    fn start_script_quoted_paths() {
        let p = ok(
            r#"{"name":"app","version":"1","scripts":{"start":"node \"my dir/serve r.js\" 'a b' c\\ d"}}"#,
            &["my dir/serve r.js"],
        );
        assert_eq!(p.entry, "my dir/serve r.js");
        assert_eq!(p.entry_args, ["a b", "c d"]);
    }

    #[test]
    fn start_script_that_is_not_node_falls_back_to_main() {
        for start in [
            "next start",
            "npm run serve",
            "node build.js && node server.js",
            "node -e 'x()'",
            "NODE_ENV=production node server.js",
            "node $FILE",
            "node",
        ] {
            let json = format!(
                r#"{{"name":"app","version":"1","main":"lib/main.js","scripts":{{"start":{}}}}}"#,
                serde_json::to_string(start).expect("json")
            );
            let p = ok(&json, &["lib/main.js", "server.js", "build.js"]);
            assert_eq!(p.entry, "lib/main.js", "start script {start:?}");
            assert_eq!(p.entry_from, EntrySource::Main);
        }
    }

    #[test]
    fn entry_from_main_and_default() {
        let p = ok(
            r#"{"name":"app","version":"1","main":"./src/server"}"#,
            &["src/server.js"],
        );
        assert_eq!(p.entry, "src/server.js");
        let p = ok(
            r#"{"name":"app","version":"1","main":"lib"}"#,
            &["lib/index.js"],
        );
        assert_eq!(p.entry, "lib/index.js");
        let p = ok(r#"{"name":"app","version":"1"}"#, &["index.js"]);
        assert_eq!(p.entry, "index.js");
        assert_eq!(p.entry_from, EntrySource::Default);
    }

    #[test]
    fn node_dot_uses_main() {
        let p = ok(
            r#"{"name":"app","version":"1","main":"srv.js","scripts":{"start":"node ."}}"#,
            &["srv.js"],
        );
        assert_eq!(p.entry, "srv.js");
        assert_eq!(p.entry_from, EntrySource::StartScript);
    }

    #[test]
    fn fields_are_read() {
        let p = ok(
            r#"{"name":"app","version":"1","engines":{"node":">=22"},
               "dependencies":{"a":"^1"},"optionalDependencies":{"b":"2"},
               "devDependencies":{"c":"3"},"nodeos":{"restart":"never","env":{"A":"1"}}}"#,
            &["index.js"],
        );
        assert_eq!(p.engines_node.as_deref(), Some(">=22"));
        assert_eq!(p.dependencies.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(p.optional_dependencies.keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!(p.settings.restart, nodeos_manifest::RestartPolicy::Never);
        assert_eq!(p.env["A"], "1");
    }

    #[test]
    fn nodeos_key_errors_name_the_file_and_the_key() {
        let e = err(
            r#"{"name":"app","version":"1","nodeos":{"restart":"sometimes"}}"#,
            &["index.js"],
        );
        assert!(matches!(&e, ProjectError::Config { key, .. } if key == "nodeos.restart"));
        let message = e.to_string();
        let (file, rest) = message.split_once(": ").expect("path first");
        assert!(file.ends_with("package.json"), "{message}");
        assert_eq!(
            rest,
            "nodeos.restart: unknown variant \"sometimes\", expected one of \"always\", \"on-failure\", \"never\"; \
             fix it, or remove it to use the default (see docs/config.md)"
        );
        let e = err(
            r#"{"name":"app","version":"1","nodeos":{"restrat":"never"}}"#,
            &["index.js"],
        );
        let message = e.to_string();
        assert!(
            message
                .ends_with("package.json: nodeos.restrat: unknown key; did you mean \"restart\"?"),
            "{message}"
        );
    }

    #[test]
    fn node_range_needs_no_entry_file() {
        let (tmp, result) = project(
            r#"{"name":"app","version":"1","main":"dist/index.js","engines":{"node":">=20"}}"#,
            &[],
        );
        assert!(matches!(result, Err(ProjectError::EntryMissing { .. })));
        assert_eq!(
            node_range(tmp.path()).expect("range").as_deref(),
            Some(">=20")
        );
        let (tmp, _) = project(
            r#"{"name":"app","version":"1","engines":{"node":">=20"},"nodeos":{"node":"22"}}"#,
            &[],
        );
        assert_eq!(
            node_range(tmp.path()).expect("range").as_deref(),
            Some("22")
        );
        let (tmp, _) = project(r#"{"name":"app","version":"1","engines":"22"}"#, &[]);
        assert!(matches!(
            node_range(tmp.path()),
            Err(ProjectError::InvalidField { .. })
        ));
        let e = node_range(&tmp.path().join("missing")).expect_err("no dir");
        assert!(matches!(e, ProjectError::DirMissing { .. }), "{e}");
    }

    #[test]
    fn image_names() {
        let p = ok(r#"{"name":"@acme/web-app","version":"1"}"#, &["index.js"]);
        assert_eq!(p.image_name(), "acme-web-app");
        assert_eq!(image_name("plain"), "plain");
    }

    #[test]
    fn missing_dir_and_package_json() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let e = Project::load(&tmp.path().join("nope")).expect_err("missing");
        assert!(matches!(e, ProjectError::DirMissing { .. }), "{e}");
        let e = Project::load(tmp.path()).expect_err("no package.json");
        assert!(matches!(e, ProjectError::NoPackageJson { .. }), "{e}");
        assert!(e.to_string().contains("run nodeos build in an npm project"));
    }

    #[test]
    fn invalid_json_reports_position() {
        let e = err("{\n  \"name\": \"app\",\n  \"version\": 1.0.0\n}", &[]);
        match &e {
            ProjectError::InvalidJson { line, column, .. } => {
                assert_eq!(*line, 3);
                assert!(*column > 0);
            }
            other => panic!("unexpected {other}"),
        }
        let message = e.to_string();
        assert!(message.contains("package.json:3:"), "{message}");
        assert!(!message.contains(" at line "), "{message}");
    }

    #[test]
    fn top_level_must_be_object() {
        assert!(matches!(
            err("[1,2]", &[]),
            ProjectError::NotAnObject { .. }
        ));
    }

    #[test]
    fn name_and_version_errors() {
        assert!(matches!(
            err(r#"{"version":"1"}"#, &[]),
            ProjectError::MissingName { .. }
        ));
        assert!(matches!(
            err(r#"{"name":3,"version":"1"}"#, &[]),
            ProjectError::InvalidField { .. }
        ));
        for bad in [
            "App",
            "a b",
            ".app",
            "_app",
            "@scope",
            "@/x",
            "a/b",
            "café",
            "node_modules",
        ] {
            let json = format!(
                r#"{{"name":{},"version":"1"}}"#,
                serde_json::to_string(bad).expect("json")
            );
            assert!(
                matches!(err(&json, &[]), ProjectError::InvalidName { .. }),
                "{bad}"
            );
        }
        let long = "a".repeat(215);
        let json = format!(r#"{{"name":"{long}","version":"1"}}"#);
        assert!(matches!(err(&json, &[]), ProjectError::InvalidName { .. }));
        assert!(matches!(
            err(r#"{"name":"app"}"#, &[]),
            ProjectError::MissingVersion { .. }
        ));
        assert!(matches!(
            err(r#"{"name":"app","version":""}"#, &[]),
            ProjectError::MissingVersion { .. }
        ));
        // What the bundle and the update state record could not hold.
        let long = "1".repeat(257);
        for version in [long.as_str(), "1.0\\u0001", "1\\\"0", "1\\\\0"] {
            let json = format!(r#"{{"name":"app","version":"{version}"}}"#);
            let e = err(&json, &[]);
            assert!(
                matches!(&e, ProjectError::InvalidField { field, .. } if field == "version"),
                "{version}: {e}"
            );
        }
        let version = "1".repeat(256);
        ok(
            &format!(r#"{{"name":"app","version":"{version}"}}"#),
            &["index.js"],
        );
    }

    #[test]
    fn entry_errors() {
        let e = err(r#"{"name":"app","version":"1","main":"src/x.js"}"#, &[]);
        assert_eq!(
            e.to_string(),
            "entry file src/x.js (from \"main\" in package.json) does not exist; create it or fix package.json"
        );
        let e = err(r#"{"name":"app","version":"1"}"#, &[]);
        assert!(matches!(
            e,
            ProjectError::EntryMissing {
                from: EntrySource::Default,
                ..
            }
        ));
        let e = err(
            r#"{"name":"app","version":"1","scripts":{"start":"node ../x.js"}}"#,
            &[],
        );
        assert!(matches!(e, ProjectError::EntryOutsideProject { .. }), "{e}");
        let e = err(r#"{"name":"app","version":"1","main":"/etc/passwd"}"#, &[]);
        assert!(matches!(e, ProjectError::EntryOutsideProject { .. }), "{e}");
    }

    #[test]
    fn entry_symlink_escaping_project_is_refused() {
        let outside = tempfile::tempdir().expect("tempdir");
        fs::write(outside.path().join("x.js"), "").expect("write");
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::write(
            tmp.path().join("package.json"),
            r#"{"name":"app","version":"1"}"#,
        )
        .expect("write");
        std::os::unix::fs::symlink(outside.path().join("x.js"), tmp.path().join("index.js"))
            .expect("symlink");
        let e = Project::load(tmp.path()).expect_err("escapes");
        assert!(matches!(e, ProjectError::EntryOutsideProject { .. }), "{e}");
    }

    #[test]
    fn shell_words_cases() {
        assert_eq!(
            shell_words("a  'b c' \"d\\\"e\" f\\ g").expect("words"),
            ["a", "b c", "d\"e", "f g"]
        );
        assert_eq!(shell_words("x 'unterminated"), None);
        assert_eq!(shell_words("a | b"), None);
        assert_eq!(shell_words("a # comment"), None);
        assert_eq!(shell_words("a#b").expect("words"), ["a#b"]);
    }

    #[test]
    fn garbage_input_does_not_panic() {
        for json in [
            "",
            "null",
            "\"x\"",
            "{",
            "{\"name\":null}",
            "{\"name\":\"a\",\"version\":\"1\",\"dependencies\":[]}",
            "{\"name\":\"a\",\"version\":\"1\",\"scripts\":{\"start\":\"node '\"}}",
            "\u{feff}{}",
        ] {
            let _ = project(json, &[]).1;
        }
    }
}
