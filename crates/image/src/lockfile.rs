//! Which package manager installed `node_modules`, and whether what is
//! installed is what npm's lockfile says.
//!
//! The package manager ([`PackageManager::detect`]) is the one whose marker
//! `node_modules` holds (pnpm's `.modules.yaml`, yarn's `.yarn-integrity` or
//! `.yarn-state.yml`), else the one whose lockfile the project has
//! (`npm-shrinkwrap.json` or `package-lock.json`, `pnpm-lock.yaml`,
//! `yarn.lock`), else npm without a lockfile. It decides which command the
//! errors suggest.
//!
//! Only npm's lockfiles are read ([`Lockfile`]; `lockfileVersion` 1, 2 and
//! 3; `npm-shrinkwrap.json` wins over `package-lock.json`, as in npm):
//!
//! - every production dependency in package.json must be listed in the
//!   lockfile's root package (`packages[""]`), with the same range;
//! - every installed package that `nodeos build` takes must be listed under
//!   its location (`node_modules/a/node_modules/b`, `packages/lib` for a
//!   workspace member) with the version its package.json has, and be a link
//!   exactly where the lockfile has a link (`"link": true`, as for
//!   workspaces, to the same place).
//!
//! Packages outside the project (the targets of `npm link` or `file:`
//! links) are compared only when the lockfile lists them.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use nodejs_semver::Version;
use serde_json::{Map, Value};

use crate::project::{ProjectError, read_package_json};

/// The tool that installs the project's `node_modules`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageManager {
    /// npm, with `package-lock.json` or `npm-shrinkwrap.json`.
    NpmLocked,
    /// npm, without a lockfile.
    Npm,
    Pnpm,
    Yarn,
}

impl PackageManager {
    /// Finds the package manager of the project in `dir` (see the module
    /// documentation).
    pub fn detect(dir: &Path) -> PackageManager {
        let modules = dir.join("node_modules");
        let has = |path: PathBuf| path.exists();
        if has(modules.join(".modules.yaml")) {
            PackageManager::Pnpm
        } else if has(modules.join(".yarn-integrity")) || has(modules.join(".yarn-state.yml")) {
            PackageManager::Yarn
        } else if NPM_LOCKFILES.iter().any(|name| has(dir.join(name))) {
            PackageManager::NpmLocked
        } else if has(dir.join("pnpm-lock.yaml")) {
            PackageManager::Pnpm
        } else if has(dir.join("yarn.lock")) {
            PackageManager::Yarn
        } else {
            PackageManager::Npm
        }
    }

    /// The command that installs `node_modules` (as the lockfile says, when
    /// there is one).
    pub fn install_command(self) -> &'static str {
        match self {
            PackageManager::NpmLocked => "npm ci",
            PackageManager::Npm => "npm install",
            PackageManager::Pnpm => "pnpm install",
            PackageManager::Yarn => "yarn install",
        }
    }

    /// The command that rebuilds the native addon of `package` for the
    /// guest's Node.js; `None` for the project itself.
    pub fn rebuild_command(self, package: Option<&str>) -> String {
        let env = "npm_config_nodedir=$(npx nodeos nodedir) npm_config_build_from_source=true";
        match package {
            None => "npx node-gyp rebuild --nodedir=$(npx nodeos nodedir)".to_string(),
            Some(name) if self == PackageManager::Pnpm => format!("{env} pnpm rebuild {name}"),
            Some(name) => format!("{env} npm rebuild {name}"),
        }
    }
}

/// npm's lockfiles, in the order npm prefers them.
const NPM_LOCKFILES: [&str; 2] = ["npm-shrinkwrap.json", "package-lock.json"];

/// An npm lockfile, reduced to what the checks need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lockfile {
    /// Its file name: `package-lock.json` or `npm-shrinkwrap.json`.
    pub name: &'static str,
    /// The root package's dependency ranges (production and optional);
    /// `None` when the lockfile does not record them (version 1).
    root: Option<BTreeMap<String, String>>,
    /// Locations relative to the project (`node_modules/a`) → entries.
    packages: BTreeMap<String, Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    version: Option<String>,
    /// For a link, where it points, relative to the project.
    link: Option<String>,
}

impl Lockfile {
    /// Reads the npm lockfile of the project in `dir`: `Ok(None)` when it
    /// has none, or one of a `lockfileVersion` this does not know.
    pub fn read(dir: &Path) -> Result<Option<Lockfile>, ProjectError> {
        for name in NPM_LOCKFILES {
            if let Some(object) = read_package_json(&dir.join(name))? {
                return Ok(Lockfile::parse(name, &object));
            }
        }
        Ok(None)
    }

    fn parse(name: &'static str, object: &Map<String, Value>) -> Option<Lockfile> {
        let version = object.get("lockfileVersion").and_then(Value::as_u64)?;
        let mut packages = BTreeMap::new();
        let root = match version {
            1 => {
                if let Some(Value::Object(deps)) = object.get("dependencies") {
                    add_v1(&mut packages, "", deps);
                }
                None
            }
            2 | 3 => {
                let Some(Value::Object(entries)) = object.get("packages") else {
                    return None;
                };
                for (location, entry) in entries {
                    let Value::Object(entry) = entry else {
                        continue;
                    };
                    let link = (entry.get("link") == Some(&Value::Bool(true)))
                        .then(|| string(entry, "resolved").unwrap_or_default());
                    packages.insert(
                        location.clone(),
                        Entry {
                            version: string(entry, "version"),
                            link,
                        },
                    );
                }
                let root = entries.get("").and_then(Value::as_object);
                let mut ranges = BTreeMap::new();
                for field in ["dependencies", "optionalDependencies"] {
                    if let Some(Value::Object(deps)) = root.and_then(|r| r.get(field)) {
                        for (dep, range) in deps {
                            if let Value::String(range) = range {
                                ranges.insert(dep.clone(), range.clone());
                            }
                        }
                    }
                }
                Some(ranges)
            }
            _ => return None,
        };
        Some(Lockfile {
            name,
            root,
            packages,
        })
    }

    /// Checks that the lockfile lists every production dependency of
    /// package.json (`dependencies`, `optionalDependencies`) with the same
    /// range.
    pub fn check_root<'a>(
        &self,
        wanted: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> Result<(), ProjectError> {
        for (name, range) in wanted {
            let locked = match &self.root {
                Some(root) => root.get(name).map(String::as_str),
                // Version 1 records no ranges: a direct dependency is one
                // at the top of node_modules.
                None => self
                    .packages
                    .contains_key(&format!("node_modules/{name}"))
                    .then_some(range.as_str()),
            };
            match locked {
                None => {
                    return Err(ProjectError::LockfileMissingDependency {
                        lockfile: self.name,
                        name: name.clone(),
                    });
                }
                Some(locked) if locked.trim() != range.trim() => {
                    return Err(ProjectError::LockfileRangeDiffers {
                        lockfile: self.name,
                        name: name.clone(),
                        wanted: range.clone(),
                        locked: locked.to_string(),
                    });
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Checks one installed package against the lockfile.
    ///
    /// `found` is where Node.js finds it and `real` its real directory, both
    /// relative to the project (`..` allowed for `real`); they differ when
    /// it is reached through a link. `installed` is its package.json's
    /// version.
    pub fn check_package(
        &self,
        name: &str,
        found: &Path,
        real: &Path,
        installed: Option<&str>,
    ) -> Result<(), ProjectError> {
        let found_key = key(found);
        let real_key = key(real);
        // npm's `install-strategy=linked` keeps packages in a store of its
        // own (`node_modules/.store/…`) that the lockfile does not describe.
        if real.components().any(
            |c| matches!(c, Component::Normal(name) if name.to_string_lossy().starts_with('.')),
        ) {
            return Ok(());
        }
        let label = if real_key == format!("node_modules/{name}") {
            name.to_string()
        } else {
            format!("{name} at {real_key}")
        };
        let installed_text = installed.unwrap_or("(no version)");
        let out_of_sync = |installed: String, locked: String| ProjectError::LockfileOutOfSync {
            lockfile: self.name,
            package: label.clone(),
            installed,
            locked,
        };
        let via_link = found_key != real_key;
        if via_link {
            let link_text = format!("a link to {real_key}");
            match self.packages.get(&found_key) {
                None => return Err(out_of_sync(link_text, "none".into())),
                Some(Entry {
                    link: Some(target), ..
                }) => {
                    if key(Path::new(target)) != real_key {
                        return Err(out_of_sync(link_text, format!("a link to {target}")));
                    }
                }
                Some(Entry { version, .. }) => {
                    let locked = version.clone().unwrap_or_else(|| "(no version)".into());
                    return Err(out_of_sync(link_text, locked));
                }
            }
        }
        match self.packages.get(&real_key) {
            // The link's entry vouched for it (version 1 lists no link
            // targets), and npm does not always record what lies outside
            // the project.
            None if via_link || real_key.starts_with("../") => Ok(()),
            None => Err(out_of_sync(installed_text.to_string(), "none".into())),
            Some(Entry {
                link: Some(target), ..
            }) if !via_link => Err(out_of_sync(
                installed_text.to_string(),
                format!("a link to {target}"),
            )),
            Some(Entry {
                version: Some(locked),
                ..
            }) => match installed {
                Some(installed) if !same_version(installed, locked) => {
                    Err(out_of_sync(installed.to_string(), locked.clone()))
                }
                _ => Ok(()),
            },
            Some(_) => Ok(()),
        }
    }
}

/// Adds the (nested) `dependencies` of a version 1 lockfile under `prefix`.
fn add_v1(packages: &mut BTreeMap<String, Entry>, prefix: &str, deps: &Map<String, Value>) {
    for (name, entry) in deps {
        let Value::Object(entry) = entry else {
            continue;
        };
        let location = format!("{prefix}node_modules/{name}");
        let version = string(entry, "version");
        // Version 1 writes links as `"version": "file:<path>"`.
        let link = version
            .as_deref()
            .and_then(|v| v.strip_prefix("file:"))
            .map(str::to_string);
        packages.insert(
            location.clone(),
            Entry {
                version: if link.is_some() { None } else { version },
                link,
            },
        );
        if let Some(Value::Object(nested)) = entry.get("dependencies") {
            add_v1(packages, &format!("{location}/"), nested);
        }
    }
}

fn string(object: &Map<String, Value>, field: &str) -> Option<String> {
    object
        .get(field)
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// A location as the lockfile writes it: `/`-separated, without `.`.
fn key(path: &Path) -> String {
    let parts: Vec<String> = path
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    parts.join("/")
}

/// Equal as written, or as semantic versions (`v1.0.0` is `1.0.0`).
/// A lockfile version that is no semantic version (version 1 writes git
/// URLs there) matches anything.
fn same_version(installed: &str, locked: &str) -> bool {
    if installed.trim() == locked.trim() {
        return true;
    }
    let Ok(locked) = Version::parse(locked.trim()) else {
        return true;
    };
    Version::parse(installed.trim()).is_ok_and(|installed| installed == locked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lockfile(json: &str) -> Lockfile {
        let value: Value = serde_json::from_str(json).expect("json");
        Lockfile::parse("package-lock.json", value.as_object().expect("object"))
            .expect("known lockfile version")
    }

    fn deps(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn check_root(lock: &Lockfile, pairs: &[(&str, &str)]) -> Result<(), ProjectError> {
        let deps = deps(pairs);
        lock.check_root(deps.iter().map(|(a, b)| (a, b)))
    }

    const V3: &str = r#"{
        "name": "app", "lockfileVersion": 3, "requires": true,
        "packages": {
            "": {"name": "app", "version": "1.0.0", "workspaces": ["packages/*"],
                 "dependencies": {"a": "^1.0.0", "@ws/lib": "*"},
                 "optionalDependencies": {"opt": "2"},
                 "devDependencies": {"dev": "1"}},
            "node_modules/a": {"version": "1.2.0"},
            "node_modules/a/node_modules/b": {"version": "2.0.0"},
            "node_modules/@ws/lib": {"resolved": "packages/lib", "link": true},
            "packages/lib": {"name": "@ws/lib", "version": "0.2.0"},
            "node_modules/linked": {"resolved": "../linked", "link": true},
            "../linked": {"version": "3.0.0"}
        }
    }"#;

    #[test]
    fn root_dependencies_must_be_listed_with_the_same_range() {
        let lock = lockfile(V3);
        check_root(&lock, &[("a", "^1.0.0"), ("opt", "2"), ("@ws/lib", "*")]).expect("in sync");
        let e = check_root(&lock, &[("a", "^1.0.0"), ("new", "1")]).expect_err("missing");
        assert_eq!(
            e.to_string(),
            "package-lock.json does not list dependency new; run `npm install`"
        );
        let e = check_root(&lock, &[("dev", "1")]).expect_err("dev only");
        assert!(matches!(e, ProjectError::LockfileMissingDependency { .. }));
        let e = check_root(&lock, &[("a", "^2.0.0")]).expect_err("range");
        assert_eq!(
            e.to_string(),
            "package.json asks for a@^2.0.0 but package-lock.json has a@^1.0.0; run `npm install`"
        );
    }

    #[test]
    fn installed_versions_must_match() {
        let lock = lockfile(V3);
        let check = |name: &str, found: &str, real: &str, version: Option<&str>| {
            lock.check_package(name, Path::new(found), Path::new(real), version)
        };
        check("a", "node_modules/a", "node_modules/a", Some("1.2.0")).expect("same");
        check("a", "node_modules/a", "node_modules/a", Some("v1.2.0")).expect("same semver");
        let e = check("a", "node_modules/a", "node_modules/a", Some("1.3.0")).expect_err("newer");
        assert_eq!(
            e.to_string(),
            "node_modules is out of sync with package-lock.json (a: installed 1.3.0, lockfile 1.2.0); run `npm ci`"
        );
        let nested = "node_modules/a/node_modules/b";
        let e = check("b", nested, nested, Some("2.0.1")).expect_err("nested");
        assert!(
            e.to_string()
                .contains("(b at node_modules/a/node_modules/b: installed 2.0.1, lockfile 2.0.0)"),
            "{e}"
        );
        let e = check("c", "node_modules/c", "node_modules/c", Some("1.0.0")).expect_err("extra");
        assert!(
            e.to_string()
                .contains("(c: installed 1.0.0, lockfile none)"),
            "{e}"
        );
    }

    #[test]
    fn links_must_be_links_to_the_same_place() {
        let lock = lockfile(V3);
        let check = |found: &str, real: &str, version: &str| {
            lock.check_package("x", Path::new(found), Path::new(real), Some(version))
        };
        check("node_modules/@ws/lib", "packages/lib", "0.2.0").expect("workspace");
        check("node_modules/linked", "../linked", "3.0.0").expect("outside link");
        let e = check("node_modules/@ws/lib", "packages/lib", "0.3.0").expect_err("version");
        assert!(
            e.to_string().contains("installed 0.3.0, lockfile 0.2.0"),
            "{e}"
        );
        let e = check("node_modules/@ws/lib", "packages/other", "0.2.0").expect_err("elsewhere");
        assert!(
            e.to_string()
                .contains("installed a link to packages/other, lockfile a link to packages/lib"),
            "{e}"
        );
        // A real directory where the lockfile has a link, and the reverse.
        let e = check("node_modules/linked", "node_modules/linked", "3.0.0").expect_err("copy");
        assert!(
            e.to_string().contains("lockfile a link to ../linked"),
            "{e}"
        );
        let e = check("node_modules/a", "packages/a", "1.2.0").expect_err("linked");
        assert!(
            e.to_string()
                .contains("installed a link to packages/a, lockfile 1.2.0"),
            "{e}"
        );
        // npm's linked install strategy: a store the lockfile does not know.
        let store = "node_modules/.store/a@1.2.0-x/node_modules/a";
        check("node_modules/a", store, "1.2.0").expect("a store");
        // Outside the project, what the lockfile does not list is not judged.
        let outside = "../linked/node_modules/z";
        check(outside, outside, "1.0.0").expect("not listed, outside");
    }

    #[test]
    fn version_1_lockfiles() {
        let lock = lockfile(
            r#"{"name": "app", "lockfileVersion": 1, "requires": true, "dependencies": {
                "a": {"version": "1.2.0", "dependencies": {"b": {"version": "2.0.0"}}},
                "g": {"version": "git+ssh://git@example.invalid/g.git#abc"},
                "l": {"version": "file:packages/l"}
            }}"#,
        );
        check_root(&lock, &[("a", "^1"), ("g", "x")]).expect("listed");
        assert!(check_root(&lock, &[("new", "1")]).is_err());
        let check = |name: &str, found: &str, real: &str, version: &str| {
            lock.check_package(name, Path::new(found), Path::new(real), Some(version))
        };
        let nested = "node_modules/a/node_modules/b";
        check("b", nested, nested, "2.0.0").expect("same");
        assert!(check("b", nested, nested, "2.0.1").is_err());
        check("g", "node_modules/g", "node_modules/g", "0.1.0").expect("git: not compared");
        check("l", "node_modules/l", "packages/l", "1.0.0").expect("link");
    }

    #[test]
    fn unknown_lockfile_versions_are_not_read() {
        for json in [
            r#"{"lockfileVersion": 9, "packages": {}}"#,
            r#"{"packages": {}}"#,
            r#"{"lockfileVersion": 3}"#,
        ] {
            let value: Value = serde_json::from_str(json).expect("json");
            assert_eq!(
                Lockfile::parse("package-lock.json", value.as_object().expect("object")),
                None
            );
        }
    }

    #[test]
    fn package_manager_from_markers_and_lockfiles() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        assert_eq!(PackageManager::detect(d), PackageManager::Npm);
        std::fs::write(d.join("yarn.lock"), "").expect("write");
        assert_eq!(PackageManager::detect(d), PackageManager::Yarn);
        std::fs::write(d.join("package-lock.json"), "{}").expect("write");
        assert_eq!(PackageManager::detect(d), PackageManager::NpmLocked);
        assert_eq!(PackageManager::NpmLocked.install_command(), "npm ci");
        std::fs::create_dir(d.join("node_modules")).expect("mkdir");
        std::fs::write(d.join("node_modules/.modules.yaml"), "").expect("write");
        assert_eq!(PackageManager::detect(d), PackageManager::Pnpm);
        assert_eq!(
            PackageManager::Pnpm.rebuild_command(Some("x")),
            "npm_config_nodedir=$(npx nodeos nodedir) npm_config_build_from_source=true pnpm rebuild x"
        );
    }
}
