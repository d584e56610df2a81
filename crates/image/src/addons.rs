//! Native addons: the `*.node` files of the app tree.
//!
//! The guest is x86-64 Linux with glibc, so every `.node` file must be an
//! ELF shared library for it (ELFCLASS64, EM_X86_64, OS ABI System V or
//! GNU, not linked against musl). One that is not (a Mach-O, a PE, an ELF
//! for another CPU or OS, or not a binary at all) is an error naming the
//! file, its package and the fix, unless it is evidently meant for another
//! platform and so never loaded on this one:
//!
//! - its package's `os`, `cpu` or `libc` field in package.json excludes
//!   Linux, x64 or glibc (npm's per-platform packages, such as
//!   `@scope/tool-darwin-arm64`); or
//! - its path inside the package names another platform, CPU or libc in one
//!   of its words (`prebuilds/darwin-arm64/x.node`,
//!   `prebuilds/linux-x64/x.musl.node`, `bin/win32-ia32/x.node`): packages
//!   that ship a build for every platform and pick one at run time.
//!
//! Such files stay in the image as they are, but are not checked further.
//!
//! An addon that does not use Node-API is built for one Node.js ABI and
//! exports `node_register_module_v<NODE_MODULE_VERSION>`; when that number
//! is not the guest Node.js's, Node.js would refuse it ("Module did not
//! self-register"), so it is an error too. Node-API addons
//! (`napi_register_module_v1`) load in any version. Addons whose path names
//! an ABI (`abi115`, `node-v115`, `napi`) are left to their package's
//! loader, which picks one by the running Node.js.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::deps::{AppFile, FileKind};
use crate::elf::{self, ElfError};
use crate::lockfile::PackageManager;
use crate::node::{self, NodeRuntime};
use crate::project::{ProjectError, read_package_json};

/// What a binary file was built for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An x86-64 Linux ELF file, not linked against musl: what the guest
    /// loads.
    Guest,
    /// Anything else, described for people, e.g. `a macOS (Mach-O) binary`.
    Other(String),
}

/// Reads what `path` was built for from its first bytes (and, for an
/// x86-64 ELF file, the libraries it needs).
pub fn target(path: &Path) -> io::Result<Target> {
    let mut head = Vec::with_capacity(64);
    File::open(path)?.take(64).read_to_end(&mut head)?;
    let other = |what: &str| Ok(Target::Other(what.to_string()));
    if head.starts_with(b"\x7fELF") && head.len() >= 20 {
        let is_64 = head[4] == 2;
        let little = head[5] == 1;
        let os_abi = head[7];
        let machine = if little {
            u16::from_le_bytes([head[18], head[19]])
        } else {
            u16::from_be_bytes([head[18], head[19]])
        };
        let os = match os_abi {
            // System V: the usual Linux value.
            0 | 3 => "Linux",
            2 => "NetBSD",
            6 => "Solaris",
            9 => "FreeBSD",
            12 => "OpenBSD",
            _ => "an unknown OS",
        };
        if !(is_64 && little && machine == 62 && os == "Linux") {
            return Ok(Target::Other(format!(
                "an ELF binary for {os} {}",
                machine_name(machine, is_64)
            )));
        }
        return Ok(match elf::read_elf_deps(path) {
            Ok(deps) if uses_musl(&deps) => Target::Other(
                "a Linux x86-64 binary linked against musl (as on Alpine), not glibc".to_string(),
            ),
            Ok(_) => Target::Guest,
            Err(ElfError::Malformed { reason, .. }) => {
                Target::Other(format!("a damaged ELF file ({reason})"))
            }
            Err(ElfError::Io { source, .. }) => return Err(source),
            Err(e) => Target::Other(format!("an unreadable ELF file ({e})")),
        });
    }
    match head.get(..4) {
        Some([0xcf, 0xfa, 0xed, 0xfe]) => {
            let cpu = head
                .get(4..8)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            let arch = match cpu {
                Some(0x0100_0007) => "x86-64 ",
                Some(0x0100_000c) => "arm64 ",
                _ => "",
            };
            Ok(Target::Other(format!("a macOS {arch}(Mach-O) binary")))
        }
        Some([0xca, 0xfe, 0xba, 0xbe | 0xbf]) => other("a macOS universal (Mach-O) binary"),
        Some([0xce, 0xfa, 0xed, 0xfe] | [0xfe, 0xed, 0xfa, 0xce | 0xcf]) => {
            other("a macOS (Mach-O) binary")
        }
        _ if head.starts_with(b"MZ") => other("a Windows (PE) binary"),
        _ => other("not a compiled binary"),
    }
}

fn machine_name(machine: u16, is_64: bool) -> String {
    match machine {
        62 if is_64 => "x86-64".into(),
        62 => "x86-64 (32-bit x32)".into(),
        3 => "x86 (32-bit)".into(),
        183 => "aarch64".into(),
        40 => "arm (32-bit)".into(),
        243 => "riscv".into(),
        21 => "ppc64".into(),
        20 => "ppc".into(),
        22 => "s390x".into(),
        8 => "mips".into(),
        258 => "loongarch".into(),
        other => format!("machine {other}"),
    }
}

fn uses_musl(deps: &elf::ElfDeps) -> bool {
    deps.needed.iter().any(|lib| lib.starts_with("libc.musl"))
        || deps
            .interpreter
            .as_deref()
            .is_some_and(|i| i.contains("ld-musl"))
}

/// A native addon the guest will load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addon {
    /// The file on the host.
    pub source: PathBuf,
    /// Where it is in the app.
    pub dest: PathBuf,
    /// Its package's name and version.
    package: Package,
    /// Its path inside the package.
    inside: PathBuf,
}

/// The package a file belongs to: the nearest package.json with a name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Package {
    name: String,
    version: String,
    /// The project itself (not an installed package).
    is_project: bool,
    /// Its `os`, `cpu` or `libc` field leaves out x86-64 Linux with glibc.
    other_platform: bool,
}

impl Package {
    fn label(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

/// Checks every `.node` file among `files` and returns the ones the guest
/// loads (see the module documentation).
pub fn check(files: &[AppFile], manager: PackageManager) -> Result<Vec<Addon>, ProjectError> {
    let manifests: BTreeMap<&Path, &Path> = files
        .iter()
        .filter(|f| {
            matches!(f.kind, FileKind::File { .. })
                && f.dest.file_name() == Some(OsStr::new("package.json"))
        })
        .map(|f| (f.dest.as_path(), f.source.as_path()))
        .collect();
    let mut packages: BTreeMap<PathBuf, Option<Package>> = BTreeMap::new();
    let mut addons = Vec::new();
    for file in files {
        if !matches!(file.kind, FileKind::File { .. })
            || file.dest.extension() != Some(OsStr::new("node"))
        {
            continue;
        }
        let Some((package, inside)) = owner(&file.dest, &manifests, &mut packages)? else {
            continue;
        };
        if package.other_platform {
            continue;
        }
        let found = target(&file.source).map_err(|source| ProjectError::Io {
            path: file.source.clone(),
            source,
        })?;
        match found {
            Target::Guest => addons.push(Addon {
                source: file.source.clone(),
                dest: file.dest.clone(),
                package,
                inside,
            }),
            Target::Other(_) if names_other_platform(&inside) => {}
            Target::Other(found) => {
                return Err(ProjectError::ForeignAddon {
                    file: file.dest.clone(),
                    fix: fix(manager, &package),
                    package: package.label(),
                    found,
                });
            }
        }
    }
    Ok(addons)
}

/// Checks that the addons built for one Node.js ABI are built for the
/// guest's.
pub fn check_abi(
    addons: &[Addon],
    node: &NodeRuntime,
    manager: PackageManager,
) -> Result<(), ProjectError> {
    let Some(guest_abi) = node::module_version(node) else {
        return Ok(());
    };
    for addon in addons {
        if names_abi(&addon.inside) {
            continue;
        }
        // A damaged file is reported when its libraries are resolved.
        let Ok(symbols) = elf::exported_symbols(&addon.source, &[NODE_INIT, NAPI_INIT]) else {
            continue;
        };
        if symbols.iter().any(|s| s.starts_with(NAPI_INIT)) {
            continue;
        }
        let abis: Vec<u32> = symbols
            .iter()
            .filter_map(|s| s.strip_prefix(NODE_INIT)?.parse().ok())
            .collect();
        let Some(&addon_abi) = abis.first() else {
            continue;
        };
        if abis.contains(&guest_abi) {
            continue;
        }
        return Err(ProjectError::AddonAbiMismatch {
            file: addon.dest.clone(),
            package: addon.package.label(),
            addon_abi,
            guest: node.version.clone(),
            guest_abi,
            fix: fix(manager, &addon.package),
        });
    }
    Ok(())
}

const NODE_INIT: &str = "node_register_module_v";
const NAPI_INIT: &str = "napi_register_module_v";

fn fix(manager: PackageManager, package: &Package) -> String {
    manager.rebuild_command((!package.is_project).then_some(package.name.as_str()))
}

/// The package `dest` belongs to and the path of `dest` inside it; `None`
/// when no package.json with a name is above it.
fn owner(
    dest: &Path,
    manifests: &BTreeMap<&Path, &Path>,
    packages: &mut BTreeMap<PathBuf, Option<Package>>,
) -> Result<Option<(Package, PathBuf)>, ProjectError> {
    for dir in dest.ancestors().skip(1) {
        let manifest = dir.join("package.json");
        let Some(source) = manifests.get(manifest.as_path()) else {
            continue;
        };
        if !packages.contains_key(dir) {
            let object = read_package_json(source)?.unwrap_or_default();
            packages.insert(dir.to_path_buf(), package(&object, dir));
        }
        if let Some(Some(package)) = packages.get(dir) {
            let inside = dest.strip_prefix(dir).unwrap_or(dest).to_path_buf();
            return Ok(Some((package.clone(), inside)));
        }
    }
    Ok(None)
}

fn package(object: &Map<String, Value>, dir: &Path) -> Option<Package> {
    let name = object.get("name")?.as_str()?.to_string();
    let version = object
        .get("version")
        .and_then(Value::as_str)
        .unwrap_or("(no version)")
        .to_string();
    let other_platform = !allows(object.get("os"), "linux")
        || !allows(object.get("cpu"), "x64")
        || !allows(object.get("libc"), "glibc");
    Some(Package {
        name,
        version,
        is_project: dir.as_os_str().is_empty(),
        other_platform,
    })
}

/// Whether an npm `os`/`cpu`/`libc` list (`["linux"]`, `["!win32"]`)
/// allows `value`.
fn allows(list: Option<&Value>, value: &str) -> bool {
    let items: Vec<&str> = match list {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        Some(Value::String(item)) => vec![item.as_str()],
        _ => return true,
    };
    if items.iter().any(|i| i.strip_prefix('!') == Some(value)) {
        return false;
    }
    let mut allowed = items.iter().filter(|i| !i.starts_with('!')).peekable();
    allowed.peek().is_none() || allowed.any(|i| *i == value)
}

/// The words of a path, lower case, with the spellings of x86-64 made one
/// word (`x64`).
fn words(path: &Path) -> Vec<String> {
    let text = path.to_string_lossy().to_lowercase();
    let text = text
        .replace("x86_64", "x64")
        .replace("x86-64", "x64")
        .replace("amd64", "x64");
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// Words that name a platform, CPU or libc other than x86-64 Linux glibc.
const OTHER_PLATFORMS: &[&str] = &[
    "darwin",
    "macos",
    "mac",
    "osx",
    "win32",
    "win",
    "windows",
    "freebsd",
    "openbsd",
    "netbsd",
    "sunos",
    "solaris",
    "aix",
    "android",
    "ios",
    "arm64",
    "aarch64",
    "arm",
    "armv6",
    "armv6l",
    "armv7",
    "armv7l",
    "armhf",
    "ia32",
    "x86",
    "i386",
    "i686",
    "ppc",
    "ppc64",
    "ppc64le",
    "s390",
    "s390x",
    "riscv64",
    "loong64",
    "mips",
    "mipsel",
    "mips64el",
    "universal",
    "musl",
    "linuxmusl",
    "alpine",
];

fn names_other_platform(path: &Path) -> bool {
    words(path)
        .iter()
        .any(|w| OTHER_PLATFORMS.contains(&w.as_str()))
}

/// Whether a path names a Node.js ABI: `abi115`, `node-v115`, `napi`,
/// `napi-v3`, `electron`.
fn names_abi(path: &Path) -> bool {
    let words = words(path);
    let numbered = |w: &str, prefix: &str| {
        w.strip_prefix(prefix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    words.iter().enumerate().any(|(i, w)| {
        numbered(w, "abi")
            || w == "napi"
            || w == "electron"
            || (w == "node" && words.get(i + 1).is_some_and(|next| numbered(next, "v")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::process::{Command, Stdio};

    /// A minimal 64-byte ELF header.
    fn elf_header(class: u8, data: u8, os_abi: u8, machine: u16) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = class;
        h[5] = data;
        h[6] = 1;
        h[7] = os_abi;
        h[16] = 3; // ET_DYN
        let m = if data == 1 {
            machine.to_le_bytes()
        } else {
            machine.to_be_bytes()
        };
        h[18..20].copy_from_slice(&m);
        h
    }

    fn target_of(bytes: &[u8]) -> Target {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.node");
        fs::write(&path, bytes).expect("write");
        target(&path).expect("readable")
    }

    fn other(text: &str) -> Target {
        Target::Other(text.to_string())
    }

    #[test]
    fn targets_from_headers() {
        assert_eq!(
            target_of(&elf_header(2, 1, 0, 183)),
            other("an ELF binary for Linux aarch64")
        );
        assert_eq!(
            target_of(&elf_header(2, 1, 9, 62)),
            other("an ELF binary for FreeBSD x86-64")
        );
        assert_eq!(
            target_of(&elf_header(1, 1, 3, 3)),
            other("an ELF binary for Linux x86 (32-bit)")
        );
        assert_eq!(
            target_of(&elf_header(2, 2, 0, 21)),
            other("an ELF binary for Linux ppc64")
        );
        assert!(matches!(
            target_of(&elf_header(2, 1, 3, 62)[..24]),
            Target::Other(text) if text.starts_with("a damaged ELF file")
        ));
        let mut macho = vec![0xcf, 0xfa, 0xed, 0xfe, 0x0c, 0, 0, 0x01];
        macho.resize(64, 0);
        assert_eq!(target_of(&macho), other("a macOS arm64 (Mach-O) binary"));
        // Cut short after the magic: named, not a panic.
        assert_eq!(
            target_of(&[0xcf, 0xfa, 0xed, 0xfe, 0x0c]),
            other("a macOS (Mach-O) binary")
        );
        assert_eq!(
            target_of(&[0xca, 0xfe, 0xba, 0xbe, 0, 0, 0, 2]),
            other("a macOS universal (Mach-O) binary")
        );
        assert_eq!(target_of(b"MZ\x90\0rest"), other("a Windows (PE) binary"));
        assert_eq!(target_of(b"hello"), other("not a compiled binary"));
        assert_eq!(target_of(b""), other("not a compiled binary"));
        assert_eq!(
            target(Path::new("/bin/ls")).expect("ls"),
            Target::Guest,
            "an x86-64 glibc ELF file"
        );
    }

    #[test]
    fn npm_platform_fields() {
        let list = |json: &str| serde_json::from_str::<Value>(json).expect("json");
        assert!(allows(None, "linux"));
        assert!(allows(Some(&list(r#"["linux","darwin"]"#)), "linux"));
        assert!(!allows(Some(&list(r#"["darwin"]"#)), "linux"));
        assert!(allows(Some(&list(r#"["!win32"]"#)), "linux"));
        assert!(!allows(Some(&list(r#"["!linux"]"#)), "linux"));
        assert!(allows(Some(&list(r#""linux""#)), "linux"));
        assert!(!allows(Some(&list(r#"["musl"]"#)), "glibc"));
    }

    #[test]
    fn platform_and_abi_words() {
        for yes in [
            "prebuilds/darwin-arm64/x.node",
            "prebuilds/linux-arm64/node.napi.node",
            "prebuilds/linux-x64/x.musl.node",
            "bin/win32-ia32-115/x.node",
            "lib/binding/Release/node-v115-darwin-x64/x.node",
            "swc.linux-arm-gnueabihf.node",
        ] {
            assert!(names_other_platform(Path::new(yes)), "{yes}");
        }
        for no in [
            "build/Release/x.node",
            "prebuilds/linux-x64/x.glibc.node",
            "lib/binding/node-v127-linux-x64/x.node",
            "charm.node",
            "lib/x86_64-linux-gnu/x.node",
            "build/Release/obj.target/x.node",
        ] {
            assert!(!names_other_platform(Path::new(no)), "{no}");
        }
        for yes in [
            "prebuilds/linux-x64/node.abi115.node",
            "prebuilds/linux-x64/x.napi.node",
            "lib/binding/node-v115-linux-x64/x.node",
            "bin/linux-x64-electron/x.node",
        ] {
            assert!(names_abi(Path::new(yes)), "{yes}");
        }
        for no in ["build/Release/x.node", "node/x.node", "nodev1/x.node"] {
            assert!(!names_abi(Path::new(no)), "{no}");
        }
    }

    /// Compiles a shared library exporting `symbol` into `path`; `false`
    /// without a C compiler.
    pub(crate) fn compile_addon(path: &Path, symbol: &str) -> bool {
        let Some(dir) = path.parent() else {
            return false;
        };
        let source = dir.join(format!("{symbol}.c"));
        fs::write(&source, format!("void {symbol}(void) {{}}\n")).expect("write");
        Command::new("gcc")
            .args(["-shared", "-fPIC", "-o"])
            .arg(path)
            .arg(&source)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn runtime(version: &str) -> NodeRuntime {
        NodeRuntime {
            version: version.to_string(),
            range: None,
            integrity: String::new(),
            binary: PathBuf::from("/nonexistent/node"),
        }
    }

    fn addon(source: PathBuf, inside: &str) -> Addon {
        Addon {
            source,
            dest: Path::new("node_modules/x").join(inside),
            package: Package {
                name: "x".into(),
                version: "1.0.0".into(),
                is_project: false,
                other_platform: false,
            },
            inside: PathBuf::from(inside),
        }
    }

    #[test]
    fn an_addon_for_another_node_abi_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let v115 = dir.path().join("v115.node");
        if !compile_addon(&v115, "node_register_module_v115") {
            return; // no C compiler here
        }
        let napi = dir.path().join("napi.node");
        assert!(compile_addon(&napi, "napi_register_module_v1"));
        let v127 = dir.path().join("v127.node");
        assert!(compile_addon(&v127, "node_register_module_v127"));
        let manager = PackageManager::NpmLocked;
        let node22 = runtime("22.23.3");
        let e = check_abi(
            &[addon(v115.clone(), "build/Release/x.node")],
            &node22,
            manager,
        )
        .expect_err("ABI 115 in Node 22");
        assert_eq!(
            e.to_string(),
            "native addon node_modules/x/build/Release/x.node (x@1.0.0) was built for Node.js 20 \
             (NODE_MODULE_VERSION 115), but the image runs Node.js 22.23.3 (NODE_MODULE_VERSION 127); \
             rebuild it for the guest: `npm_config_nodedir=$(npx nodeos nodedir) \
             npm_config_build_from_source=true npm rebuild x`"
        );
        check_abi(
            &[addon(v115.clone(), "build/Release/x.node")],
            &runtime("20.1.0"),
            manager,
        )
        .expect("ABI 115 in Node 20");
        check_abi(&[addon(v127, "build/Release/x.node")], &node22, manager).expect("same ABI");
        check_abi(&[addon(napi, "build/Release/x.node")], &node22, manager).expect("Node-API");
        check_abi(
            &[addon(v115.clone(), "prebuilds/linux-x64/node.abi115.node")],
            &node22,
            manager,
        )
        .expect("the package's loader picks by ABI");
        check_abi(
            &[addon(v115, "build/Release/x.node")],
            &runtime("99.0.0"),
            manager,
        )
        .expect("unknown guest ABI: not judged");
    }
}
