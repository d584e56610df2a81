//! Which files go into the image's `/app`: the project's own files and its
//! installed production dependencies.
//!
//! The project's own files are everything in its directory except
//! `node_modules/`, `.git/`, `*.nodeos/` directories, `.npmrc` files (they
//! may hold registry tokens), the top-level `dist/` (the default build
//! output; kept when the entry file itself lives under `dist/`, as in
//! compiled TypeScript projects) and the caller's `exclude` paths.
//!
//! Dependencies are found as Node.js finds them at run time: starting from
//! `dependencies` and `optionalDependencies` in `package.json`, each name is
//! looked up in `<dir>/node_modules/<name>` of the requiring package's
//! directory and then of each parent directory up to the project root; every
//! package reached this way is included whole (except its own nested
//! `node_modules/`, which is reached only through the same lookup) and its
//! `dependencies`, `optionalDependencies` and installed `peerDependencies`
//! are followed in turn. `devDependencies` are never followed, so packages
//! only they need stay out.
//!
//! Symbolic links:
//! - a link whose target lies inside the tree being copied (the project, or
//!   the package being copied) is kept as a relative link;
//! - a link whose target lies outside it is replaced by a copy of the
//!   target's contents, since that target will not exist in the guest;
//! - a package reached through a link (npm workspaces, `npm link`, pnpm) is
//!   followed: when its real directory is inside the project the link is
//!   kept and the real directory is included at its own place, so the guest
//!   resolves modules exactly as the host does; when it is outside, the real
//!   contents are copied at the `node_modules` path;
//! - a dangling link is kept as it is.
//!
//! What is installed is checked against the project while it is collected
//! ([`crate::lockfile`]): with dependencies but no `node_modules`, the
//! build stops and says which install command to run; with an npm
//! lockfile, package.json's dependencies must be in it and every package
//! taken must be installed as it says. docs/dependencies.md has the rules
//! and the errors.
//!
//! `.nodeosignore` in the project directory leaves files out of the app.
//! It has gitignore syntax (`#` comments, `!` to re-include, a leading `/`
//! anchors, a trailing `/` matches only directories, `**`), and its
//! patterns are matched against each entry's path in the app, which is its
//! path relative to the project directory: `src/test/a.js`, and for
//! installed packages `node_modules/a/README.md` or
//! `node_modules/a/node_modules/b/docs/`. A pattern without a `/` (other
//! than a trailing one) matches a name at any depth, inside node_modules
//! too: `*.md` drops every package's README. As in git, a file inside an
//! excluded directory cannot be re-included. package.json files are always
//! kept (Node.js reads them to resolve modules); a pattern that excludes the
//! entry file or a whole package the app needs is an error, as is one that
//! is not a valid glob.
//!
//! Finally the `*.node` files are checked ([`crate::addons`]).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use serde_json::Value;

use crate::addons;
use crate::lockfile::{Lockfile, PackageManager};
use crate::node::NodeRuntime;
use crate::project::{Project, ProjectError, read_package_json};

/// The file that lists paths to leave out of the app, in the project
/// directory.
pub const IGNORE_FILE: &str = ".nodeosignore";

/// One entry of the app tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppFile {
    /// Where the contents come from on the host (for a directory or a
    /// symbolic link, the host path it corresponds to).
    pub source: PathBuf,
    /// Where it goes, relative to the app root (`/app` in the guest).
    pub dest: PathBuf,
    pub kind: FileKind,
}

/// What an [`AppFile`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file; `executable` if any execute bit is set on the host.
    File { executable: bool },
    /// A directory. Every parent of every entry is listed as one.
    Dir,
    /// A symbolic link with this (relative, or dangling as found) target.
    Symlink { target: PathBuf },
}

/// Lists the files of the app tree, sorted by `dest`.
///
/// `exclude` paths (absolute, or relative to the project directory) are left
/// out of the project's own files, e.g. the build output directory.
pub fn app_files(project: &Project, exclude: &[PathBuf]) -> Result<Vec<AppFile>, ProjectError> {
    let root = project.dir.clone();
    let manager = PackageManager::detect(&root);
    let lockfile = match manager {
        PackageManager::NpmLocked => Lockfile::read(&root)?,
        _ => None,
    };
    if let Some(lockfile) = &lockfile {
        let optional = &project.optional_dependencies;
        let production = project
            .dependencies
            .iter()
            .filter(|(name, _)| !optional.contains_key(*name));
        lockfile.check_root(production.chain(optional))?;
    }
    let excludes = exclude
        .iter()
        .map(|path| {
            let path = if path.is_absolute() {
                path.clone()
            } else {
                root.join(path)
            };
            path.canonicalize().unwrap_or(path)
        })
        .collect();
    let mut c = Collector {
        root: root.clone(),
        excludes,
        keep_dist: project.entry.starts_with("dist/"),
        files: BTreeMap::new(),
        placed: vec![(PathBuf::new(), root.clone())],
        ignore: IgnoreFile::read(&root)?,
        lockfile,
        install: manager.install_command(),
    };
    let mut chain = Vec::new();
    c.copy_tree(
        &root,
        Path::new(""),
        Filter::Project,
        (&root, Path::new("")),
        &mut chain,
    )?;
    c.add_dependencies(project)?;
    c.add_parent_dirs();
    if let Some(ignore) = &c.ignore
        && !c.files.contains_key(Path::new(&project.entry))
        && let Some((line, pattern)) = ignore.excludes(Path::new(&project.entry), false)
    {
        return Err(ProjectError::IgnoredButNeeded {
            path: ignore.path.clone(),
            line,
            pattern,
            what: format!("the entry file {}", project.entry),
        });
    }
    let files: Vec<AppFile> = c.files.into_values().collect();
    addons::check(&files, manager)?;
    Ok(files)
}

/// The sources of the native addons among `files` (the project's, from
/// [`app_files`]) that the guest loads: x86-64 Linux ELF files, each built
/// for `node`'s ABI unless it uses Node-API (see [`crate::addons`]).
pub fn native_addons(
    project: &Project,
    files: &[AppFile],
    node: &NodeRuntime,
) -> Result<Vec<PathBuf>, ProjectError> {
    let manager = PackageManager::detect(&project.dir);
    let addons = addons::check(files, manager)?;
    addons::check_abi(&addons, node, manager)?;
    Ok(addons.into_iter().map(|a| a.source).collect())
}

/// `.nodeosignore`, read (see the module documentation).
struct IgnoreFile {
    path: PathBuf,
    matcher: Gitignore,
    /// The line number of each pattern, by its text.
    lines: BTreeMap<String, usize>,
}

impl IgnoreFile {
    fn read(root: &Path) -> Result<Option<IgnoreFile>, ProjectError> {
        let path = root.join(IGNORE_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(io_error(&path, source)),
        };
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let mut builder = GitignoreBuilder::new(root);
        let mut lines = BTreeMap::new();
        for (index, line) in text.lines().enumerate() {
            builder.add_line(Some(path.clone()), line).map_err(|e| {
                ProjectError::IgnorePattern {
                    path: path.clone(),
                    line: index + 1,
                    pattern: line.trim().to_string(),
                    message: glob_message(e),
                }
            })?;
            lines
                .entry(line.trim_end().to_string())
                .or_insert(index + 1);
        }
        let matcher = builder.build().map_err(|e| ProjectError::IgnorePattern {
            path: path.clone(),
            line: 0,
            pattern: String::new(),
            message: glob_message(e),
        })?;
        Ok(Some(IgnoreFile {
            path,
            matcher,
            lines,
        }))
    }

    /// Whether the entry at `dest` in the app is left out, given that its
    /// parent directory is not.
    fn ignores(&self, dest: &Path, is_dir: bool) -> bool {
        self.matcher.matched(dest, is_dir).is_ignore()
    }

    /// The line and pattern that leave out `dest` or a parent directory of
    /// it, if one does.
    fn excludes(&self, dest: &Path, is_dir: bool) -> Option<(usize, String)> {
        match self.matcher.matched_path_or_any_parents(dest, is_dir) {
            ignore::Match::Ignore(glob) => {
                let pattern = glob.original().to_string();
                let line = self.lines.get(&pattern).copied().unwrap_or(0);
                Some((line, pattern))
            }
            _ => None,
        }
    }
}

/// The reason a gitignore pattern is not valid, without the pattern.
fn glob_message(e: ignore::Error) -> String {
    match e {
        ignore::Error::Glob { err, .. } => err,
        other => other.to_string(),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Filter {
    /// The project's own files.
    Project,
    /// An installed package's files.
    Package,
}

struct Collector {
    /// The canonical project directory.
    root: PathBuf,
    excludes: Vec<PathBuf>,
    keep_dist: bool,
    files: BTreeMap<PathBuf, AppFile>,
    /// Which host directory each placed package directory (by dest) holds.
    placed: Vec<(PathBuf, PathBuf)>,
    ignore: Option<IgnoreFile>,
    /// npm's lockfile, when npm installed node_modules with one.
    lockfile: Option<Lockfile>,
    /// The command that installs node_modules (for errors).
    install: &'static str,
}

impl Collector {
    fn add(&mut self, source: PathBuf, dest: PathBuf, kind: FileKind) {
        self.files
            .entry(dest.clone())
            .or_insert(AppFile { source, dest, kind });
    }

    /// Copies the directory `src` (a real path) to `dest`. Links that stay
    /// within `boundary` (a real dir and its dest) are kept as links.
    fn copy_tree(
        &mut self,
        src: &Path,
        dest: &Path,
        filter: Filter,
        boundary: (&Path, &Path),
        chain: &mut Vec<PathBuf>,
    ) -> Result<(), ProjectError> {
        chain.push(src.to_path_buf());
        let mut entries = fs::read_dir(src)
            .and_then(|rd| rd.collect::<Result<Vec<_>, io::Error>>())
            .map_err(|source| io_error(src, source))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name();
            let path = entry.path();
            let to = dest.join(&name);
            let meta = fs::symlink_metadata(&path).map_err(|source| io_error(&path, source))?;
            if self.skipped(&path, &name, dest, meta.is_dir(), filter)
                || (name != "package.json"
                    && self
                        .ignore
                        .as_ref()
                        .is_some_and(|i| i.ignores(&to, meta.is_dir())))
            {
                continue;
            }
            if meta.file_type().is_symlink() {
                self.copy_link(&path, &to, filter, boundary, chain)?;
            } else if meta.is_dir() {
                self.add(path.clone(), to.clone(), FileKind::Dir);
                self.copy_tree(&path, &to, filter, boundary, chain)?;
            } else if meta.is_file() {
                let executable = meta.permissions().mode() & 0o111 != 0;
                self.add(path, to, FileKind::File { executable });
            }
            // Sockets, FIFOs and devices have no place in an image.
        }
        chain.pop();
        Ok(())
    }

    fn skipped(
        &self,
        path: &Path,
        name: &OsStr,
        dest: &Path,
        is_dir: bool,
        filter: Filter,
    ) -> bool {
        if name == ".npmrc" {
            return true;
        }
        if is_dir && name == "node_modules" {
            return true;
        }
        if filter == Filter::Package {
            return false;
        }
        if is_dir
            && (name == ".git"
                || name.to_str().is_some_and(|n| n.ends_with(".nodeos"))
                || (name == "dist" && dest.as_os_str().is_empty() && !self.keep_dist))
        {
            return true;
        }
        self.excludes.iter().any(|e| path.starts_with(e))
    }

    fn copy_link(
        &mut self,
        link: &Path,
        to: &Path,
        filter: Filter,
        boundary: (&Path, &Path),
        chain: &mut Vec<PathBuf>,
    ) -> Result<(), ProjectError> {
        let raw = fs::read_link(link).map_err(|source| io_error(link, source))?;
        let Ok(real) = link.canonicalize() else {
            // Dangling: it dangles on the host too.
            self.add(
                link.to_path_buf(),
                to.to_path_buf(),
                FileKind::Symlink { target: raw },
            );
            return Ok(());
        };
        if let Ok(inside) = real.strip_prefix(boundary.0) {
            let target_dest = boundary.1.join(inside);
            let from = to.parent().unwrap_or(Path::new(""));
            let target = relative_path(from, &target_dest);
            self.add(
                link.to_path_buf(),
                to.to_path_buf(),
                FileKind::Symlink { target },
            );
            return Ok(());
        }
        let meta = fs::metadata(&real).map_err(|source| io_error(&real, source))?;
        if meta.is_dir() {
            if chain.iter().any(|dir| dir.starts_with(&real)) {
                return Err(ProjectError::SymlinkCycle {
                    path: link.to_path_buf(),
                });
            }
            self.add(real.clone(), to.to_path_buf(), FileKind::Dir);
            self.copy_tree(&real, to, filter, (&real, to), chain)?;
        } else if meta.is_file() {
            let executable = meta.permissions().mode() & 0o111 != 0;
            self.add(real, to.to_path_buf(), FileKind::File { executable });
        }
        Ok(())
    }

    /// The host path that the guest path `dest` (relative to the app root)
    /// holds: found through the package directory placed deepest above it.
    fn host_for(&self, dest: &Path) -> PathBuf {
        let mut best: Option<&(PathBuf, PathBuf)> = None;
        for placed in &self.placed {
            if dest.starts_with(&placed.0)
                && best.is_none_or(|b| placed.0.components().count() > b.0.components().count())
            {
                best = Some(placed);
            }
        }
        match best {
            Some((at, host)) => host.join(dest.strip_prefix(at).unwrap_or(dest)),
            None => self.root.join(dest),
        }
    }

    /// Follows production dependencies from the project, breadth first.
    fn add_dependencies(&mut self, project: &Project) -> Result<(), ProjectError> {
        let mut root_deps: BTreeMap<String, bool> = BTreeMap::new();
        for name in project.dependencies.keys() {
            root_deps.insert(name.clone(), false);
        }
        for name in project.optional_dependencies.keys() {
            root_deps.insert(name.clone(), true);
        }
        let mut queue: VecDeque<(PathBuf, String, BTreeMap<String, bool>)> = VecDeque::new();
        queue.push_back((PathBuf::new(), project.name.clone(), root_deps));
        let mut visited: BTreeSet<PathBuf> = BTreeSet::new();
        visited.insert(PathBuf::new());

        while let Some((from_dest, required_by, deps)) = queue.pop_front() {
            for (name, optional) in deps {
                let Some(found) = self.resolve(&from_dest, &name, &required_by)? else {
                    if optional {
                        continue;
                    }
                    if !self.root.join("node_modules").is_dir() {
                        return Err(ProjectError::NodeModulesMissing {
                            install: self.install,
                        });
                    }
                    return Err(ProjectError::DependencyNotInstalled {
                        name,
                        required_by,
                        install: self.install,
                    });
                };
                let Found { at, real, host } = found;
                if !visited.insert(at.clone()) {
                    continue;
                }
                let manifest_path = real.join("package.json");
                let manifest = read_package_json(&manifest_path)?.unwrap_or_default();
                if let Some(lockfile) = &self.lockfile {
                    lockfile.check_package(
                        &name,
                        &relative_to(&self.root, &host),
                        &relative_to(&self.root, &real),
                        manifest.get("version").and_then(Value::as_str),
                    )?;
                }
                if let Some(ignore) = &self.ignore
                    && let Some((line, pattern)) = ignore.excludes(&at, true)
                {
                    return Err(ProjectError::IgnoredButNeeded {
                        path: ignore.path.clone(),
                        line,
                        pattern,
                        what: format!("the package {name} at {}", at.display()),
                    });
                }
                let mut next = BTreeMap::new();
                for (field, optional) in [
                    ("peerDependencies", true),
                    ("dependencies", false),
                    ("optionalDependencies", true),
                ] {
                    if let Some(Value::Object(map)) = manifest.get(field) {
                        for dep in map.keys() {
                            next.insert(dep.clone(), optional);
                        }
                    }
                }
                let mut chain = Vec::new();
                self.copy_tree(&real, &at, Filter::Package, (&real, &at), &mut chain)?;
                queue.push_back((at.clone(), format!("{name} at {}", at.display()), next));
            }
        }
        Ok(())
    }

    /// Looks `name` up from the package placed at `from` as Node.js does,
    /// and places what it finds (and a link to it, when it is reached
    /// through one).
    fn resolve(
        &mut self,
        from: &Path,
        name: &str,
        required_by: &str,
    ) -> Result<Option<Found>, ProjectError> {
        if !valid_dependency_name(name) {
            return Err(ProjectError::InvalidDependencyName {
                name: name.to_string(),
                required_by: required_by.to_string(),
            });
        }
        let mut dir = from.to_path_buf();
        loop {
            if dir.file_name() != Some(OsStr::new("node_modules")) {
                let candidate = dir.join("node_modules").join(name);
                let host = self.host_for(&candidate);
                if host.is_dir() {
                    let (at, real) = self.place(candidate, &host)?;
                    return Ok(Some(Found { at, real, host }));
                }
            }
            if !dir.pop() {
                return Ok(None);
            }
        }
    }

    /// Places the package found at guest path `at` (host path `host`).
    fn place(&mut self, at: PathBuf, host: &Path) -> Result<(PathBuf, PathBuf), ProjectError> {
        let real = host
            .canonicalize()
            .map_err(|source| io_error(host, source))?;
        if real != host
            && let Ok(inside) = real.strip_prefix(&self.root)
        {
            // A link to a directory inside the project (a workspace member,
            // pnpm's store): keep the link, include the real directory.
            let inside = inside.to_path_buf();
            let from = at.parent().unwrap_or(Path::new(""));
            let target = relative_path(from, &inside);
            self.add(host.to_path_buf(), at, FileKind::Symlink { target });
            return Ok((inside, real));
        }
        // A package nested inside a copy of itself would nest forever.
        if let Some((dest, _)) = self
            .placed
            .iter()
            .find(|(dest, r)| *r == real && at.starts_with(dest) && *dest != at)
        {
            return Ok((dest.clone(), real));
        }
        self.placed.push((at.clone(), real.clone()));
        Ok((at, real))
    }

    /// Lists every parent directory of every entry.
    fn add_parent_dirs(&mut self) {
        let mut parents = BTreeSet::new();
        for dest in self.files.keys() {
            let mut dir = dest.clone();
            while dir.pop() && !dir.as_os_str().is_empty() {
                if !self.files.contains_key(&dir) {
                    parents.insert(dir.clone());
                }
            }
        }
        for dir in parents {
            let source = self.host_for(&dir);
            self.add(source, dir, FileKind::Dir);
        }
    }
}

/// A package found by [`Collector::resolve`].
struct Found {
    /// Where it is placed in the app.
    at: PathBuf,
    /// Its real directory on the host.
    real: PathBuf,
    /// Where Node.js finds it on the host (`real`, or a link to it).
    host: PathBuf,
}

/// The path of `path` relative to `root` (both absolute), with `..` when it
/// lies outside.
fn relative_to(root: &Path, path: &Path) -> PathBuf {
    let root: Vec<Component> = root.components().collect();
    let path: Vec<Component> = path.components().collect();
    let common = root.iter().zip(&path).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..root.len() {
        out.push("..");
    }
    for part in &path[common..] {
        out.push(part);
    }
    out
}

fn io_error(path: &Path, source: io::Error) -> ProjectError {
    ProjectError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `name` or `@scope/name`, without path tricks.
fn valid_dependency_name(name: &str) -> bool {
    let parts: Vec<&str> = match name.strip_prefix('@') {
        Some(rest) => match rest.split_once('/') {
            Some((scope, pkg)) => vec![scope, pkg],
            None => return false,
        },
        None => vec![name],
    };
    parts.iter().all(|part| {
        !part.is_empty() && *part != "." && *part != ".." && !part.contains(['/', '\\', '\0'])
    })
}

/// The relative path from directory `from` to `to` (both relative to the
/// same root, without `..`).
fn relative_path(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<Component> = from.components().collect();
    let to: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for part in &to[common..] {
        out.push(part);
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    struct Tree(tempfile::TempDir);

    impl Tree {
        fn new() -> Tree {
            Tree(tempfile::tempdir().expect("tempdir"))
        }
        fn path(&self) -> &Path {
            self.0.path()
        }
        fn file(&self, rel: &str, text: &str) -> &Tree {
            let path = self.path().join(rel);
            fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            fs::write(path, text).expect("write");
            self
        }
        fn package(&self, dir: &str, name: &str, extra: &str) -> &Tree {
            let json = format!(r#"{{"name":"{name}","version":"1.0.0"{extra}}}"#);
            self.file(&format!("{dir}/package.json"), &json)
                .file(&format!("{dir}/index.js"), "")
        }
        fn link(&self, target: &str, rel: &str) -> &Tree {
            let path = self.path().join(rel);
            fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            symlink(target, path).expect("symlink");
            self
        }
        fn files(&self, exclude: &[PathBuf]) -> Result<Vec<AppFile>, ProjectError> {
            let project = Project::load(self.path()).expect("project loads");
            app_files(&project, exclude)
        }
    }

    /// The non-directory entries, as `dest` or `dest -> target`.
    fn listing(files: &[AppFile]) -> Vec<String> {
        files
            .iter()
            .filter_map(|f| match &f.kind {
                FileKind::Dir => None,
                FileKind::File { .. } => Some(f.dest.display().to_string()),
                FileKind::Symlink { target } => {
                    Some(format!("{} -> {}", f.dest.display(), target.display()))
                }
            })
            .collect()
    }

    #[test]
    fn production_dependencies_only() {
        let t = Tree::new();
        t.package(
            ".",
            "app",
            r#","dependencies":{"a":"1","b":"1","@s/c":"1"},"optionalDependencies":{"opt":"1","gone":"1"},"devDependencies":{"dev":"1"}"#,
        )
        .file("src/lib.js", "")
        .file(".npmrc", "//token")
        .file(".git/HEAD", "")
        .file("dist/app.nodeos/manifest.json", "")
        .file("out/x", "")
        .file("node_modules/.package-lock.json", "{}")
        .file("node_modules/.bin/tool", "")
        // a needs b@2, which shadows the root b@1 for a only.
        .package("node_modules/a", "a", r#","dependencies":{"b":"2"}"#)
        .package("node_modules/a/node_modules/b", "b", r#","dependencies":{"a":"1"}"#)
        .package("node_modules/b", "b", "")
        .package("node_modules/@s/c", "@s/c", r#","peerDependencies":{"peer":"1","absent-peer":"1"}"#)
        .package("node_modules/peer", "peer", "")
        .package("node_modules/opt", "opt", "")
        .package("node_modules/dev", "dev", r#","dependencies":{"devdep":"1"}"#)
        .package("node_modules/devdep", "devdep", "")
        .file("node_modules/a/node_modules/unused/index.js", "");
        let files = t.files(&[PathBuf::from("out")]).expect("app files");
        assert_eq!(
            listing(&files),
            [
                "index.js",
                "node_modules/@s/c/index.js",
                "node_modules/@s/c/package.json",
                "node_modules/a/index.js",
                "node_modules/a/node_modules/b/index.js",
                "node_modules/a/node_modules/b/package.json",
                "node_modules/a/package.json",
                "node_modules/b/index.js",
                "node_modules/b/package.json",
                "node_modules/opt/index.js",
                "node_modules/opt/package.json",
                "node_modules/peer/index.js",
                "node_modules/peer/package.json",
                "package.json",
                "src/lib.js",
            ]
        );
        // Every parent directory is listed, before its children.
        let dirs: Vec<_> = files
            .iter()
            .filter(|f| f.kind == FileKind::Dir)
            .map(|f| f.dest.display().to_string())
            .collect();
        assert_eq!(
            dirs,
            [
                "node_modules",
                "node_modules/@s",
                "node_modules/@s/c",
                "node_modules/a",
                "node_modules/a/node_modules",
                "node_modules/a/node_modules/b",
                "node_modules/b",
                "node_modules/opt",
                "node_modules/peer",
                "src",
            ]
        );
        let mut sorted = files.clone();
        sorted.sort_by(|x, y| x.dest.cmp(&y.dest));
        assert_eq!(sorted, files);
    }

    #[test]
    fn missing_required_dependency_is_an_error() {
        let t = Tree::new();
        t.package(".", "app", r#","dependencies":{"a":"1"}"#)
            .package("node_modules/a", "a", r#","dependencies":{"b":"1"}"#);
        let e = t.files(&[]).expect_err("b is missing");
        match &e {
            ProjectError::DependencyNotInstalled {
                name, required_by, ..
            } => {
                assert_eq!(name, "b");
                assert_eq!(required_by, "a at node_modules/a");
            }
            other => panic!("unexpected {other}"),
        }
        assert!(e.to_string().contains("npm install"));
    }

    #[test]
    fn workspace_package_linked_inside_the_project() {
        let t = Tree::new();
        t.package(".", "app", r#","dependencies":{"@ws/lib":"*"}"#)
            .package("packages/lib", "@ws/lib", r#","dependencies":{"x":"1"}"#)
            .package("packages/lib/node_modules/x", "x", "")
            // Not a dependency: nested node_modules never come in whole.
            .package("packages/other/node_modules/y", "y", "")
            .link("../../packages/lib", "node_modules/@ws/lib");
        let files = t.files(&[]).expect("app files");
        assert_eq!(
            listing(&files),
            [
                "index.js",
                "node_modules/@ws/lib -> ../../packages/lib",
                "package.json",
                "packages/lib/index.js",
                "packages/lib/node_modules/x/index.js",
                "packages/lib/node_modules/x/package.json",
                "packages/lib/package.json",
            ]
        );
    }

    #[test]
    fn npm_link_outside_the_project_is_copied() {
        let outside = Tree::new();
        outside
            .package(".", "linked", r#","dependencies":{"z":"1"}"#)
            .package("node_modules/z", "z", "")
            .link("index.js", "alias.js");
        let t = Tree::new();
        t.package(".", "app", r#","dependencies":{"linked":"*"}"#);
        fs::create_dir_all(t.path().join("node_modules")).expect("mkdir");
        symlink(outside.path(), t.path().join("node_modules/linked")).expect("symlink");
        let files = t.files(&[]).expect("app files");
        assert_eq!(
            listing(&files),
            [
                "index.js",
                "node_modules/linked/alias.js -> index.js",
                "node_modules/linked/index.js",
                "node_modules/linked/node_modules/z/index.js",
                "node_modules/linked/node_modules/z/package.json",
                "node_modules/linked/package.json",
                "package.json",
            ]
        );
        let z = files
            .iter()
            .find(|f| f.dest == Path::new("node_modules/linked/node_modules/z/index.js"))
            .expect("z");
        assert!(
            z.source
                .starts_with(outside.path().canonicalize().expect("canonical"))
        );
    }

    #[test]
    fn project_symlinks() {
        let outside = Tree::new();
        outside.file("shared/util.js", "").file("one.js", "");
        let t = Tree::new();
        t.package(".", "app", "")
            .file("src/a.js", "")
            .link("src/a.js", "alias.js")
            .link(&t.path().join("src").display().to_string(), "abs-src")
            .link(
                &outside.path().join("shared").display().to_string(),
                "shared",
            )
            .link(
                &outside.path().join("one.js").display().to_string(),
                "one.js",
            )
            .link("missing-target", "dangling");
        let files = t.files(&[]).expect("app files");
        assert_eq!(
            listing(&files),
            [
                "abs-src -> src",
                "alias.js -> src/a.js",
                "dangling -> missing-target",
                "index.js",
                "one.js",
                "package.json",
                "shared/util.js",
                "src/a.js",
            ]
        );
    }

    #[test]
    fn symlink_cycle_outside_is_an_error() {
        let outside = Tree::new();
        outside.file("loop/x.js", "");
        symlink(outside.path(), outside.path().join("loop/back")).expect("symlink");
        let t = Tree::new();
        t.package(".", "app", "")
            .link(&outside.path().join("loop").display().to_string(), "loop");
        let e = t.files(&[]).expect_err("cycle");
        assert!(matches!(e, ProjectError::SymlinkCycle { .. }), "{e}");
    }

    #[test]
    fn dist_is_kept_when_the_entry_lives_there() {
        let t = Tree::new();
        t.file(
            "package.json",
            r#"{"name":"app","version":"1","main":"dist/index.js"}"#,
        )
        .file("dist/index.js", "")
        .file("dist/app.nodeos/kernel", "");
        let files = t.files(&[]).expect("app files");
        assert_eq!(listing(&files), ["dist/index.js", "package.json"]);
    }

    #[test]
    fn bad_dependency_name_is_refused() {
        let t = Tree::new();
        t.package(".", "app", r#","dependencies":{"../../etc":"1"}"#);
        let e = t.files(&[]).expect_err("bad name");
        assert!(
            matches!(e, ProjectError::InvalidDependencyName { .. }),
            "{e}"
        );
    }

    #[test]
    fn native_addons_are_checked_and_named_by_their_package() {
        let t = Tree::new();
        t.package(".", "app", r#","dependencies":{"a":"1","mac-only":"1"}"#)
            .package("node_modules/a", "a", "")
            // Builds for other platforms, chosen at run time by the package.
            .file("node_modules/a/prebuilds/darwin-arm64/a.node", "\u{cf}")
            .file("node_modules/a/prebuilds/linux-x64/a.musl.node", "?")
            .package(
                "node_modules/mac-only",
                "mac-only",
                r#","os":["darwin"],"cpu":["arm64"]"#,
            )
            .file("node_modules/mac-only/bin.node", "MZ");
        fs::copy("/bin/ls", t.path().join("real.node")).expect("copy");
        let files = t.files(&[]).expect("app files");
        let project = Project::load(t.path()).expect("project");
        let node = NodeRuntime {
            version: "22.0.0".into(),
            range: None,
            integrity: String::new(),
            binary: PathBuf::from("/nonexistent/node"),
        };
        let addons = native_addons(&project, &files, &node).expect("addons");
        assert_eq!(addons.len(), 1, "{addons:?}");
        assert!(addons[0].ends_with("real.node"));
        let real = files
            .iter()
            .find(|f| f.dest == Path::new("real.node"))
            .expect("real.node");
        assert_eq!(real.kind, FileKind::File { executable: true });
        assert!(
            files
                .iter()
                .any(|f| f.dest == Path::new("node_modules/a/prebuilds/darwin-arm64/a.node")),
            "kept in the image"
        );

        // A Mach-O where the guest would load it is an error.
        let mut macho = vec![0xcf, 0xfa, 0xed, 0xfe, 0x07, 0, 0, 0x01];
        macho.resize(64, 0);
        let addon = t.path().join("node_modules/a/build/Release/a.node");
        fs::create_dir_all(addon.parent().expect("parent")).expect("mkdir");
        fs::write(&addon, &macho).expect("write");
        let e = t.files(&[]).expect_err("Mach-O addon");
        assert_eq!(
            e.to_string(),
            "native addon node_modules/a/build/Release/a.node (a@1.0.0) is a macOS x86-64 (Mach-O) binary, \
             but the guest runs Linux x86-64 with glibc; install node_modules on Linux x86-64 \
             (e.g. run `npm_config_nodedir=$(npx nodeos nodedir) npm_config_build_from_source=true npm rebuild a` there), or list it in .nodeosignore if the app never loads it"
        );
        // So is text, and the project's own addon gets node-gyp's command.
        fs::remove_file(&addon).expect("rm");
        t.file("build/Release/own.node", "not a binary");
        let e = t.files(&[]).expect_err("text addon");
        assert!(
            matches!(&e, ProjectError::ForeignAddon { package, found, fix, .. }
                if package == "app@1.0.0" && found == "not a compiled binary"
                    && fix == "npx node-gyp rebuild --nodedir=$(npx nodeos nodedir)"),
            "{e}"
        );
    }

    fn lock(t: &Tree, packages: &str) {
        t.file(
            "package-lock.json",
            &format!(
                r#"{{"name":"app","lockfileVersion":3,"requires":true,"packages":{packages}}}"#
            ),
        );
    }

    #[test]
    fn installed_packages_must_match_the_lockfile() {
        let t = Tree::new();
        t.package(
            ".",
            "app",
            r#","dependencies":{"a":"^1.0.0"},"devDependencies":{"dev":"1"}"#,
        )
        .package("node_modules/a", "a", r#","dependencies":{"b":"2"}"#)
        .package("node_modules/b", "b", "")
        .package("node_modules/dev", "dev", "");
        // b is 1.0.0 on disk.
        lock(
            &t,
            r#"{"":{"dependencies":{"a":"^1.0.0"},"devDependencies":{"dev":"1"}},
                "node_modules/a":{"version":"1.0.0"},
                "node_modules/b":{"version":"1.0.0"}}"#,
        );
        t.files(&[]).expect("in sync (dev is not looked at)");
        lock(
            &t,
            r#"{"":{"dependencies":{"a":"^1.0.0"}},
                "node_modules/a":{"version":"1.0.0"},
                "node_modules/b":{"version":"2.0.0"}}"#,
        );
        let e = t.files(&[]).expect_err("b differs");
        assert_eq!(
            e.to_string(),
            "node_modules is out of sync with package-lock.json (b: installed 1.0.0, lockfile 2.0.0); run `npm ci`"
        );
        lock(
            &t,
            r#"{"":{"dependencies":{}},"node_modules/a":{"version":"1.0.0"}}"#,
        );
        let e = t.files(&[]).expect_err("a not listed");
        assert_eq!(
            e.to_string(),
            "package-lock.json does not list dependency a; run `npm install`"
        );
        // No node_modules: the lockfile's install command.
        fs::remove_dir_all(t.path().join("node_modules")).expect("rm");
        lock(
            &t,
            r#"{"":{"dependencies":{"a":"^1.0.0"}},"node_modules/a":{"version":"1.0.0"}}"#,
        );
        let e = t.files(&[]).expect_err("no node_modules");
        assert_eq!(
            e.to_string(),
            "node_modules is missing; run `npm ci` in the project first"
        );
        fs::remove_file(t.path().join("package-lock.json")).expect("rm");
        let e = t.files(&[]).expect_err("no node_modules");
        assert!(e.to_string().contains("run `npm install`"), "{e}");
    }

    #[test]
    fn workspace_links_match_the_lockfile() {
        let t = Tree::new();
        t.package(".", "app", r#","dependencies":{"@ws/lib":"*"}"#)
            .package("packages/lib", "@ws/lib", "")
            .link("../../packages/lib", "node_modules/@ws/lib");
        lock(
            &t,
            r#"{"":{"dependencies":{"@ws/lib":"*"}},
                "node_modules/@ws/lib":{"resolved":"packages/lib","link":true},
                "packages/lib":{"name":"@ws/lib","version":"1.0.0"}}"#,
        );
        t.files(&[]).expect("in sync");
        lock(
            &t,
            r#"{"":{"dependencies":{"@ws/lib":"*"}},
                "node_modules/@ws/lib":{"version":"1.0.0"}}"#,
        );
        let e = t.files(&[]).expect_err("a link where a package was locked");
        assert!(
            e.to_string().contains(
                "(@ws/lib at packages/lib: installed a link to packages/lib, lockfile 1.0.0)"
            ),
            "{e}"
        );
    }

    #[test]
    fn nodeosignore_leaves_out_what_it_matches() {
        let t = Tree::new();
        t.package(".", "app", r#","dependencies":{"a":"1"}"#)
            .file("src/lib.js", "")
            .file("src/lib.test.js", "")
            .file("docs/guide.md", "")
            .file("notes.md", "")
            .file("keep.md", "")
            .file("test/fixture/package.json", "{}")
            .file("test/fixture/data.txt", "")
            .package("node_modules/a", "a", "")
            .file("node_modules/a/README.md", "")
            .file("node_modules/a/test/a.test.js", "")
            .file(
                ".nodeosignore",
                "# tests and docs\n*.test.js\n/docs/\ntest/\n\n*.md\n!keep.md\r\nnode_modules/**/test/\n",
            );
        let files = t.files(&[]).expect("app files");
        assert_eq!(
            listing(&files),
            [
                ".nodeosignore",
                "index.js",
                "keep.md",
                "node_modules/a/index.js",
                "node_modules/a/package.json",
                "package.json",
                "src/lib.js",
            ]
        );
    }

    #[test]
    fn nodeosignore_keeps_package_json_and_what_the_app_needs() {
        let t = Tree::new();
        t.package(".", "app", r#","dependencies":{"a":"1"}"#)
            .package("node_modules/a", "a", "");
        t.file(".nodeosignore", "*.json\n");
        let files = t.files(&[]).expect("app files");
        assert!(
            files
                .iter()
                .any(|f| f.dest == Path::new("node_modules/a/package.json"))
        );
        t.file(
            ".nodeosignore",
            "# copied from .gitignore\n.env\nnode_modules\n",
        );
        let e = t.files(&[]).expect_err("excludes a");
        assert_eq!(
            e.to_string(),
            format!(
                "{}:3: \"node_modules\" excludes the package a at node_modules/a, which the app needs; \
                 narrow the pattern or remove the line",
                t.path()
                    .canonicalize()
                    .expect("canonical")
                    .join(".nodeosignore")
                    .display()
            )
        );
        t.file(".nodeosignore", "*.js\n!node_modules/**\n");
        let e = t.files(&[]).expect_err("excludes the entry");
        assert!(
            e.to_string()
                .ends_with(".nodeosignore:1: \"*.js\" excludes the entry file index.js, which the app needs; narrow the pattern or remove the line"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_nodeosignore_pattern_names_the_line() {
        let t = Tree::new();
        t.package(".", "app", "")
            .file(".nodeosignore", "ok.js\n\nsrc/{a,b\n");
        let e = t.files(&[]).expect_err("bad glob");
        match &e {
            ProjectError::IgnorePattern {
                path,
                line,
                pattern,
                ..
            } => {
                assert!(path.ends_with(".nodeosignore"));
                assert_eq!((*line, pattern.as_str()), (3, "src/{a,b"));
            }
            other => panic!("unexpected {other}"),
        }
        assert!(
            e.to_string()
                .contains(".nodeosignore:3: invalid pattern \"src/{a,b\": "),
            "{e}"
        );
    }

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative_path(Path::new("a/b"), Path::new("a/c/d")),
            Path::new("../c/d")
        );
        assert_eq!(relative_path(Path::new(""), Path::new("x")), Path::new("x"));
        assert_eq!(
            relative_path(Path::new("a"), Path::new("a")),
            Path::new(".")
        );
    }
}
