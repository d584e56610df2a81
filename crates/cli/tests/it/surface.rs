//! Minimal surface (issue #10): what an image holds and what runs in it.
//!
//! * [`hello_layers_hold_only_allowed_files`] lists every entry of both
//!   layers of examples/hello, built with both profiles (release:
//!   squashfs, dev: EROFS), and fails on a shell, a package manager, a
//!   setuid or setgid file, anything world-writable, a device node, and
//!   any runtime-layer path not in [`RUNTIME_ALLOWED`].
//! * [`layer_listing_sees_setuid_devices_and_shells`] checks the listing
//!   itself on a crafted tree, so a reader that loses mode bits cannot let
//!   the first test pass blind; [`allow_list_flags_extra_changed_and_stale_entries`]
//!   checks the allow-list and app-shape rules on made-up listings.
//! * [`app_is_unprivileged_and_only_the_agent_listens_besides_it`] boots
//!   an app with an update key (so the agent runs) and reads, from inside
//!   the guest, the app's credentials and every bound socket.
//!
//! How the layers are read: squashfs with `unsquashfs -lln` (type, every
//! mode bit, numeric owner, size, link target); EROFS with `fsck.erofs
//! --extract --preserve-perms --no-preserve-owner` for the tree and its
//! mode bits, plus `dump.erofs --path` for each entry's owner. Neither
//! erofs-utils tool alone is enough: `dump.erofs` prints only the 0777
//! bits, and `fsck.erofs --preserve` chowns after its chmod, which makes
//! the kernel clear setuid and setgid in the extracted copy.

use std::collections::BTreeMap;
use std::fmt;
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nodeos_manifest::{MANIFEST_FILE, Manifest, Profile};

use crate::support::*;
use crate::update::{Appliance, BOOT, STOP, image, keygen, wait_console};

/// What an entry of a layer is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink(String),
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

/// One entry of a layer, as the packer stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// Absolute inside the layer: `/`, `/usr/bin/node`.
    path: String,
    kind: Kind,
    /// Permission bits with setuid, setgid and sticky (`& 0o7777`).
    mode: u32,
    uid: u32,
    gid: u32,
    /// Bytes of a file, length of a link's target; 0 for the rest (the
    /// two formats size directories differently).
    size: u64,
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Dir => 'd',
            Kind::File => '-',
            Kind::Symlink(_) => 'l',
            Kind::CharDevice => 'c',
            Kind::BlockDevice => 'b',
            Kind::Fifo => 'p',
            Kind::Socket => 's',
        };
        write!(
            f,
            "{kind}{} {:>5}/{:<5} {:>10} {}",
            perm_string(self.mode),
            self.uid,
            self.gid,
            self.size,
            self.path
        )?;
        if let Kind::Symlink(target) = &self.kind {
            write!(f, " -> {target}")?;
        }
        Ok(())
    }
}

/// `rwsr-xr-x` for 0o4755, like ls.
fn perm_string(mode: u32) -> String {
    let bit = |mask: u32, c: char| if mode & mask != 0 { c } else { '-' };
    let special = |exec: u32, special: u32, set: char, unset: char| match (
        mode & exec != 0,
        mode & special != 0,
    ) {
        (true, true) => set,
        (false, true) => unset,
        (true, false) => 'x',
        (false, false) => '-',
    };
    [
        bit(0o400, 'r'),
        bit(0o200, 'w'),
        special(0o100, 0o4000, 's', 'S'),
        bit(0o040, 'r'),
        bit(0o020, 'w'),
        special(0o010, 0o2000, 's', 'S'),
        bit(0o004, 'r'),
        bit(0o002, 'w'),
        special(0o001, 0o1000, 't', 'T'),
    ]
    .iter()
    .collect()
}

/// Every entry of the layer file `image` packed as `format` (`erofs` or
/// `squashfs`), sorted by path.
fn list_layer(image: &Path, format: &str) -> Vec<Entry> {
    let mut entries = match format {
        "squashfs" => list_squashfs(image),
        "erofs" => list_erofs(image),
        other => panic!("unknown layer format {other:?}"),
    };
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    entries
}

/// Runs a listing tool; panics with its stderr when it fails.
fn tool_output(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} does not start ({e}); run scripts/setup"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("the listing is UTF-8")
}

/// `unsquashfs -lln -d ''`: `drwxr-xr-x 0/0 42 1970-01-01 00:00 /app`,
/// the root with an empty path, devices with `MAJOR, MINOR` as the size.
fn list_squashfs(image: &Path) -> Vec<Entry> {
    let listing = tool_output(
        Command::new("unsquashfs")
            .args(["-lln", "-d", ""])
            .arg(image),
    );
    listing
        .lines()
        .map(|line| parse_squashfs_line(line).unwrap_or_else(|| panic!("unparsed: {line:?}")))
        .collect()
}

fn parse_squashfs_line(line: &str) -> Option<Entry> {
    let (perms, rest) = token(line)?;
    let (owner, rest) = token(rest)?;
    let (size, mut rest) = token(rest)?;
    let kind_char = perms.chars().next()?;
    if matches!(kind_char, 'c' | 'b') {
        // `1,  3`: the minor is a token of its own.
        rest = token(rest)?.1;
    }
    let (_date, rest) = token(rest)?;
    let (_time, rest) = token(rest)?;
    let name = rest.strip_prefix(' ')?;
    let (uid, gid) = owner.split_once('/')?;
    let (name, kind) = match kind_char {
        'd' => (name, Kind::Dir),
        '-' => (name, Kind::File),
        'l' => {
            let (name, target) = name.split_once(" -> ")?;
            (name, Kind::Symlink(target.to_owned()))
        }
        'c' => (name, Kind::CharDevice),
        'b' => (name, Kind::BlockDevice),
        'p' => (name, Kind::Fifo),
        's' => (name, Kind::Socket),
        _ => return None,
    };
    let size = match kind {
        Kind::File | Kind::Symlink(_) => size.parse().ok()?,
        _ => 0,
    };
    Some(Entry {
        path: if name.is_empty() { "/" } else { name }.to_owned(),
        kind,
        mode: parse_perms(perms.get(1..)?)?,
        uid: uid.parse().ok()?,
        gid: gid.parse().ok()?,
        size,
    })
}

/// The first whitespace-separated token of `s` and what follows it.
fn token(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start();
    let end = s.find(char::is_whitespace).unwrap_or(s.len());
    (end > 0).then(|| (&s[..end], &s[end..]))
}

/// `rwsr-xr-x` back to 0o4755.
fn parse_perms(text: &str) -> Option<u32> {
    let c: Vec<char> = text.chars().collect();
    if c.len() != 9 {
        return None;
    }
    let mut mode = 0;
    for (i, (&ch, bit)) in c.iter().zip((0..9).rev()).enumerate() {
        match (i % 3, ch) {
            (_, '-') => {}
            (0, 'r') | (1, 'w') | (2, 'x') => mode |= 1 << bit,
            (2, 's' | 't') => mode |= (1 << bit) | special_bit(i),
            (2, 'S' | 'T') => mode |= special_bit(i),
            _ => return None,
        }
    }
    Some(mode)
}

/// setuid, setgid or sticky, for the execute column at `index` (2, 5, 8).
fn special_bit(index: usize) -> u32 {
    match index {
        2 => 0o4000,
        5 => 0o2000,
        _ => 0o1000,
    }
}

/// The tree and its modes from an extraction that sets permissions but no
/// owner (so nothing clears setuid/setgid), each owner from `dump.erofs`.
fn list_erofs(image: &Path) -> Vec<Entry> {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    tool_output(
        Command::new("fsck.erofs")
            .arg(format!("--extract={}", root.display()))
            .args(["--preserve-perms", "--no-preserve-owner"])
            .arg(image),
    );
    let mut entries = Vec::new();
    walk(&root, "/", &mut entries);
    for entry in &mut entries {
        let info = tool_output(
            Command::new("dump.erofs")
                .arg(format!("--path={}", entry.path))
                .arg(image),
        );
        let (uid, gid, access) = parse_dump_owner(&info)
            .unwrap_or_else(|| panic!("no owner for {} in\n{info}", entry.path));
        // Cross-check the extraction against the inode (dump.erofs shows
        // only the 0777 bits).
        assert_eq!(
            access,
            entry.mode & 0o777,
            "fsck.erofs extracted {} with mode {:o}, dump.erofs says {access:o}",
            entry.path,
            entry.mode
        );
        (entry.uid, entry.gid) = (uid, gid);
    }
    entries
}

/// `Uid: 0   Gid: 0  Access: 0755/rwxr-xr-x` → (0, 0, 0o755).
fn parse_dump_owner(info: &str) -> Option<(u32, u32, u32)> {
    let line = info.lines().find(|l| l.trim_start().starts_with("Uid:"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let after = |key: &str| {
        let i = words.iter().position(|w| *w == key)?;
        words.get(i + 1).copied()
    };
    let access = after("Access:")?.split('/').next()?;
    Some((
        after("Uid:")?.parse().ok()?,
        after("Gid:")?.parse().ok()?,
        u32::from_str_radix(access, 8).ok()?,
    ))
}

/// Lists `dir` (the layer's `path`) and everything under it.
fn walk(dir: &Path, path: &str, out: &mut Vec<Entry>) {
    let meta = std::fs::symlink_metadata(dir).unwrap();
    let file_type = meta.file_type();
    use std::os::unix::fs::FileTypeExt;
    let kind = if file_type.is_dir() {
        Kind::Dir
    } else if file_type.is_file() {
        Kind::File
    } else if file_type.is_symlink() {
        Kind::Symlink(std::fs::read_link(dir).unwrap().display().to_string())
    } else if file_type.is_char_device() {
        Kind::CharDevice
    } else if file_type.is_block_device() {
        Kind::BlockDevice
    } else if file_type.is_fifo() {
        Kind::Fifo
    } else {
        Kind::Socket
    };
    let size = match kind {
        Kind::File | Kind::Symlink(_) => meta.len(),
        _ => 0,
    };
    out.push(Entry {
        path: path.to_owned(),
        kind: kind.clone(),
        mode: meta.permissions().mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        size,
    });
    if kind == Kind::Dir {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().expect("UTF-8 names"))
            .collect();
        names.sort();
        for name in names {
            let child = if path == "/" {
                format!("/{name}")
            } else {
                format!("{path}/{name}")
            };
            walk(&dir.join(&name), &child, out);
        }
    }
}

/// What one runtime-layer path must be. Everything there is root's (0:0).
#[derive(Debug, Clone, Copy)]
enum Allowed {
    Dir(u32),
    File(u32),
    Link(&'static str),
}

impl Allowed {
    fn matches(self, entry: &Entry) -> bool {
        match (self, &entry.kind) {
            (Allowed::Dir(mode), Kind::Dir) | (Allowed::File(mode), Kind::File) => {
                entry.mode == mode
            }
            (Allowed::Link(target), Kind::Symlink(actual)) => actual == target,
            _ => false,
        }
    }
}

impl fmt::Display for Allowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Allowed::Dir(mode) => write!(f, "a directory with mode {mode:04o}"),
            Allowed::File(mode) => write!(f, "a file with mode {mode:04o}"),
            Allowed::Link(target) => write!(f, "a link to {target}"),
        }
    }
}

/// Every path of the runtime layer, exactly: the mount points, nodeos-init,
/// node, the shared libraries node links (glibc's loader and libraries,
/// libstdc++, libgcc_s), and `/etc`. A new file needs a line here.
const RUNTIME_ALLOWED: &[(&str, Allowed)] = &[
    ("/", Allowed::Dir(0o755)),
    // Mount points: the app's tree, the data volume, the app layer.
    ("/app", Allowed::Dir(0o755)),
    ("/data", Allowed::Dir(0o755)),
    ("/layers", Allowed::Dir(0o755)),
    ("/layers/app", Allowed::Dir(0o755)),
    // Mount points of the kernel's and init's file systems.
    ("/dev", Allowed::Dir(0o755)),
    ("/proc", Allowed::Dir(0o555)),
    ("/run", Allowed::Dir(0o755)),
    ("/sys", Allowed::Dir(0o555)),
    // Covered by a tmpfs with mode 1777 at every boot (the one
    // world-writable entry, see WORLD_WRITABLE_MOUNT_POINTS).
    ("/tmp", Allowed::Dir(0o1777)),
    ("/etc", Allowed::Dir(0o755)),
    ("/etc/group", Allowed::File(0o644)),
    ("/etc/hosts", Allowed::Link("../run/hosts")),
    ("/etc/os-release", Allowed::File(0o644)),
    ("/etc/passwd", Allowed::File(0o644)),
    ("/etc/resolv.conf", Allowed::Link("../run/resolv.conf")),
    ("/lib", Allowed::Dir(0o755)),
    ("/lib/x86_64-linux-gnu", Allowed::Dir(0o755)),
    ("/lib/x86_64-linux-gnu/libc.so.6", Allowed::File(0o755)),
    ("/lib/x86_64-linux-gnu/libdl.so.2", Allowed::File(0o755)),
    ("/lib/x86_64-linux-gnu/libgcc_s.so.1", Allowed::File(0o755)),
    ("/lib/x86_64-linux-gnu/libm.so.6", Allowed::File(0o755)),
    (
        "/lib/x86_64-linux-gnu/libpthread.so.0",
        Allowed::File(0o755),
    ),
    ("/lib/x86_64-linux-gnu/libstdc++.so.6", Allowed::File(0o755)),
    ("/lib64", Allowed::Dir(0o755)),
    ("/lib64/ld-linux-x86-64.so.2", Allowed::File(0o755)),
    ("/sbin", Allowed::Dir(0o755)),
    ("/sbin/init", Allowed::File(0o755)),
    ("/usr", Allowed::Dir(0o755)),
    ("/usr/bin", Allowed::Dir(0o755)),
    ("/usr/bin/node", Allowed::File(0o755)),
];

/// Runtime-layer directories that may be world-writable: mount points
/// whose file system (a tmpfs, mode 1777, docs/guest-contract.md) always
/// covers them. Read-only and hidden, their own mode grants nothing.
const WORLD_WRITABLE_MOUNT_POINTS: &[&str] = &["/tmp"];

/// Names that must not appear anywhere in either layer, as a file, link or
/// directory, with what they are.
const FORBIDDEN_NAMES: &[(&str, &[&str])] = &[
    (
        "a shell",
        &[
            "sh", "bash", "dash", "ash", "zsh", "ksh", "mksh", "csh", "tcsh", "fish", "rbash",
            "busybox", "toybox",
        ],
    ),
    (
        "a package manager",
        &[
            "npm", "npx", "corepack", "yarn", "yarnpkg", "pnpm", "pnpx", "apt", "apt-get", "dpkg",
            "rpm", "yum", "dnf", "apk", "pip", "pip3", "gem",
        ],
    ),
    ("a privilege tool", &["su", "sudo", "doas"]),
];

/// What is wrong with one entry.
struct Finding {
    layer: &'static str,
    path: String,
    why: String,
}

/// Checks both layers should pass: forbidden names, setuid/setgid,
/// world-writable entries, device nodes, FIFOs and sockets, owners.
fn check_common(layer: &'static str, entries: &[Entry], findings: &mut Vec<Finding>) {
    let mut say = |path: &str, why: String| {
        findings.push(Finding {
            layer,
            path: path.to_owned(),
            why,
        })
    };
    for e in entries {
        let name = e.path.rsplit('/').next().unwrap_or_default();
        for (what, names) in FORBIDDEN_NAMES {
            if names.contains(&name) {
                say(&e.path, format!("{what} ({name})"));
            }
        }
        if e.mode & 0o4000 != 0 {
            say(&e.path, "setuid".into());
        }
        if e.mode & 0o2000 != 0 {
            say(&e.path, "setgid".into());
        }
        let exempt = layer == "runtime" && WORLD_WRITABLE_MOUNT_POINTS.contains(&e.path.as_str());
        if e.mode & 0o002 != 0 && !matches!(e.kind, Kind::Symlink(_)) && !exempt {
            say(&e.path, "world-writable".into());
        }
        match e.kind {
            Kind::CharDevice | Kind::BlockDevice => say(&e.path, "a device node".into()),
            Kind::Fifo => say(&e.path, "a FIFO".into()),
            Kind::Socket => say(&e.path, "a socket".into()),
            _ => {}
        }
        if (e.uid, e.gid) != (0, 0) {
            say(&e.path, format!("owned by {}:{}, not root", e.uid, e.gid));
        }
    }
}

/// The runtime layer is exactly [`RUNTIME_ALLOWED`], and every line of it
/// matched something (no stale entries).
fn check_runtime(entries: &[Entry], findings: &mut Vec<Finding>) {
    let mut say = |path: &str, why: String| {
        findings.push(Finding {
            layer: "runtime",
            path: path.to_owned(),
            why,
        })
    };
    for e in entries {
        match RUNTIME_ALLOWED.iter().find(|(path, _)| *path == e.path) {
            None => say(&e.path, "not in the allow-list".into()),
            Some((_, allowed)) if !allowed.matches(e) => {
                say(&e.path, format!("the allow-list expects {allowed}"));
            }
            Some(_) => {}
        }
    }
    for (path, _) in RUNTIME_ALLOWED {
        if !entries.iter().any(|e| e.path == *path) {
            say(path, "stale allow-list entry: matched nothing".into());
        }
    }
}

/// The app layer's shape: `app.json` at the root, everything else under
/// `app/`; links stay inside `app/`.
fn check_app(entries: &[Entry], findings: &mut Vec<Finding>) {
    let mut say = |path: &str, why: String| {
        findings.push(Finding {
            layer: "app",
            path: path.to_owned(),
            why,
        })
    };
    let kind_of = |path: &str| entries.iter().find(|e| e.path == path).map(|e| &e.kind);
    if kind_of("/app.json") != Some(&Kind::File) {
        say("/app.json", "missing, or not a file".into());
    }
    if kind_of("/app") != Some(&Kind::Dir) {
        say("/app", "missing, or not a directory".into());
    }
    for e in entries {
        if !matches!(e.path.as_str(), "/" | "/app.json" | "/app") && !e.path.starts_with("/app/") {
            say(&e.path, "outside app/".into());
        }
        if let Kind::Symlink(target) = &e.kind
            && !link_stays_under(&e.path, target, "/app")
        {
            say(&e.path, format!("links out of app/ (to {target})"));
        }
    }
}

/// True if the link at `link` to `target` (relative) resolves under `dir`.
fn link_stays_under(link: &str, target: &str, dir: &str) -> bool {
    if target.starts_with('/') {
        return false;
    }
    let mut resolved = PathBuf::from(link);
    resolved.pop();
    for part in Path::new(target).components() {
        match part {
            Component::Normal(p) => resolved.push(p),
            Component::ParentDir => {
                if !resolved.pop() {
                    return false;
                }
            }
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    resolved.starts_with(dir)
}

fn listing(entries: &[Entry]) -> String {
    entries.iter().map(|e| format!("  {e}\n")).collect()
}

/// Both layers of `image` (an image directory): (runtime, app).
fn layers(image: &Path) -> (Vec<Entry>, Vec<Entry>) {
    let manifest =
        Manifest::from_json(&std::fs::read_to_string(image.join(MANIFEST_FILE)).unwrap()).unwrap();
    let layer = |key: &str| {
        let artifact = &manifest.artifacts[key];
        list_layer(&image.join(&artifact.path), &manifest.layers.format)
    };
    (layer(&manifest.layers.runtime), layer(&manifest.layers.app))
}

/// Every entry of examples/hello's two layers, for both profiles.
///
/// The runtime layer must be exactly [`RUNTIME_ALLOWED`] (paths, types,
/// modes, link targets, all root's), with no stale line in that table.
/// The app layer is the app's own tree, so it is checked for its shape
/// (`app.json`, everything else under `app/`, links staying there) and the
/// rules both layers share: no shell, package manager or privilege tool by
/// name, nothing setuid, setgid or world-writable, no device node, FIFO or
/// socket, everything owned by root.
///
/// Executable files in the app layer are allowed: `node_modules/.bin`
/// links and scripts with a `#!` line are the app's dependencies' own
/// business, and they are inert here: with no shell and no `/usr/bin/env`
/// in the runtime layer, `execve` of a script finds no interpreter.
/// (The app layer is also mounted `nosuid,nodev`; the check does not rely
/// on that.)
///
/// Both profiles must list the same entries (sizes of directories aside),
/// which also cross-checks the squashfs and EROFS readers.
#[test]
fn hello_layers_hold_only_allowed_files() {
    let tmp = tempfile::tempdir().unwrap();
    let mut by_profile = BTreeMap::new();
    for profile in [Profile::Release, Profile::Dev] {
        let image = build_image(
            &example("hello"),
            Some(&tmp.path().join(profile.as_str())),
            profile,
        );
        let (runtime, app) = layers(&image);
        let mut findings = Vec::new();
        check_common("runtime", &runtime, &mut findings);
        check_runtime(&runtime, &mut findings);
        check_common("app", &app, &mut findings);
        check_app(&app, &mut findings);
        let listings = format!(
            "runtime layer:\n{}app layer:\n{}",
            listing(&runtime),
            listing(&app)
        );
        if !findings.is_empty() {
            let found: String = findings
                .iter()
                .map(|f| format!("  {} layer: {}: {}\n", f.layer, f.path, f.why))
                .collect();
            panic!(
                "examples/hello ({} profile) has entries it must not:\n{found}\n{listings}",
                profile.as_str()
            );
        }
        println!("examples/hello, {} profile:\n{listings}", profile.as_str());
        by_profile.insert(profile.as_str(), (runtime, app));
    }
    let (release, dev) = (&by_profile["release"], &by_profile["dev"]);
    assert_eq!(
        release,
        dev,
        "the profiles' layers differ:\nrelease:\n{}{}dev:\n{}{}",
        listing(&release.0),
        listing(&release.1),
        listing(&dev.0),
        listing(&dev.1)
    );
}

/// The listing and the checks find what they must, in both formats: a
/// setuid and a setgid file, a shell, a package manager, a world-writable
/// file, a FIFO, a device node and a foreign owner (those two as root),
/// and keep a sticky directory's bits and a link's target.
#[test]
fn layer_listing_sees_setuid_devices_and_shells() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("tree");
    let root = rustix::process::geteuid().is_root();
    let file = |name: &str, mode: u32| {
        let path = src.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, name).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    file("bin/sh", 0o755);
    file("bin/su", 0o4755);
    file("bin/setgid", 0o2755);
    file("app/node_modules/npm/package.json", 0o644);
    file("shared", 0o666);
    std::fs::create_dir(src.join("tmp")).unwrap();
    std::fs::set_permissions(src.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::os::unix::fs::symlink("../run/hosts", src.join("hosts")).unwrap();
    let made = |cmd: &mut Command| assert!(cmd.status().unwrap().success(), "{cmd:?}");
    made(Command::new("mkfifo").arg(src.join("fifo")));
    if root {
        made(
            Command::new("mknod")
                .arg(src.join("null"))
                .args(["c", "1", "3"]),
        );
        file("theirs", 0o644);
        std::os::unix::fs::chown(src.join("theirs"), Some(1000), Some(1000)).unwrap();
    }
    let erofs = tmp.path().join("tree.erofs");
    made(
        Command::new("mkfs.erofs")
            .args(["-zlz4hc", "--quiet"])
            .arg(&erofs)
            .arg(&src),
    );
    let squashfs = tmp.path().join("tree.squashfs");
    made(Command::new("mksquashfs").arg(&src).arg(&squashfs).args([
        "-quiet",
        "-no-progress",
        "-no-xattrs",
        "-noappend",
    ]));
    let mut expected = vec![
        ("/bin/sh", "a shell (sh)"),
        ("/bin/su", "a privilege tool (su)"),
        ("/bin/su", "setuid"),
        ("/bin/setgid", "setgid"),
        ("/app/node_modules/npm", "a package manager (npm)"),
        ("/shared", "world-writable"),
        ("/tmp", "world-writable"),
        ("/fifo", "a FIFO"),
    ];
    if root {
        expected.extend([
            ("/null", "a device node"),
            ("/theirs", "owned by 1000:1000, not root"),
        ]);
    }
    expected.sort();
    let erofs_entries = list_layer(&erofs, "erofs");
    let squashfs_entries = list_layer(&squashfs, "squashfs");
    for entries in [&erofs_entries, &squashfs_entries] {
        let mut findings = Vec::new();
        check_common("app", entries, &mut findings);
        let mut found: Vec<(&str, &str)> = findings
            .iter()
            .map(|f| (f.path.as_str(), f.why.as_str()))
            .collect();
        found.sort();
        assert_eq!(found, expected, "listing:\n{}", listing(entries));
        let get = |path: &str| entries.iter().find(|e| e.path == path).unwrap();
        assert_eq!(get("/bin/su").mode, 0o4755, "{}", listing(entries));
        assert_eq!(get("/bin/setgid").mode, 0o2755);
        assert_eq!(get("/tmp").mode, 0o1777);
        assert_eq!(get("/hosts").kind, Kind::Symlink("../run/hosts".into()));
        assert_eq!(get("/bin/sh").size, 6);
    }
    assert_eq!(
        erofs_entries,
        squashfs_entries,
        "erofs:\n{}squashfs:\n{}",
        listing(&erofs_entries),
        listing(&squashfs_entries)
    );
    assert!(link_stays_under(
        "/app/node_modules/.bin/x",
        "../x/bin/x.js",
        "/app"
    ));
    assert!(!link_stays_under("/app/a", "../../etc/passwd", "/app"));
    assert!(!link_stays_under("/app/a", "/bin/sh", "/app"));
}

/// The allow-list and the app layer's shape catch an extra file, a
/// changed mode or link, a stale line, and a file outside `app/`.
#[test]
fn allow_list_flags_extra_changed_and_stale_entries() {
    let entry = |path: &str, kind: Kind, mode: u32| Entry {
        path: path.into(),
        kind,
        mode,
        uid: 0,
        gid: 0,
        size: 0,
    };
    let allowed: Vec<Entry> = RUNTIME_ALLOWED
        .iter()
        .map(|&(path, allowed)| match allowed {
            Allowed::Dir(mode) => entry(path, Kind::Dir, mode),
            Allowed::File(mode) => entry(path, Kind::File, mode),
            Allowed::Link(target) => entry(path, Kind::Symlink(target.into()), 0o777),
        })
        .collect();
    let mut findings = Vec::new();
    check_common("runtime", &allowed, &mut findings);
    check_runtime(&allowed, &mut findings);
    assert!(
        findings.is_empty(),
        "{:?}",
        findings.first().map(|f| &f.why)
    );

    let mut changed: Vec<Entry> = allowed
        .into_iter()
        .filter(|e| e.path != "/usr/bin/node")
        .collect();
    changed.push(entry("/usr/bin/env", Kind::File, 0o755));
    for e in &mut changed {
        match e.path.as_str() {
            "/etc/passwd" => e.mode = 0o600,
            "/etc/hosts" => e.kind = Kind::Symlink("/tmp/hosts".into()),
            _ => {}
        }
    }
    let mut findings = Vec::new();
    check_runtime(&changed, &mut findings);
    let mut found: Vec<(&str, &str)> = findings
        .iter()
        .map(|f| (f.path.as_str(), f.why.split(':').next().unwrap()))
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            (
                "/etc/hosts",
                "the allow-list expects a link to ../run/hosts"
            ),
            (
                "/etc/passwd",
                "the allow-list expects a file with mode 0644"
            ),
            ("/usr/bin/env", "not in the allow-list"),
            ("/usr/bin/node", "stale allow-list entry"),
        ]
    );

    let app = [
        entry("/", Kind::Dir, 0o755),
        entry("/app.json", Kind::File, 0o644),
        entry("/app", Kind::Dir, 0o755),
        entry(
            "/app/node_modules/.bin/x",
            Kind::Symlink("../x/x.js".into()),
            0o777,
        ),
        entry(
            "/app/escape",
            Kind::Symlink("../../sbin/init".into()),
            0o777,
        ),
        entry("/etc", Kind::Dir, 0o755),
    ];
    let mut findings = Vec::new();
    check_app(&app, &mut findings);
    let found: Vec<(&str, &str)> = findings
        .iter()
        .map(|f| (f.path.as_str(), f.why.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            ("/app/escape", "links out of app/ (to ../../sbin/init)"),
            ("/etc", "outside app/"),
        ]
    );
}

/// What the app reports on `/surface`: its credentials from
/// /proc/self/status, every listening TCP socket and every bound UDP,
/// raw, packet or listening unix socket of the guest (from /proc/net,
/// which shows the whole network namespace), and the guest's user-space
/// processes (kernel threads are the children of kthreadd, pid 2).
const SURFACE_ROUTE: &str = r#"
function surfaceReport() {
  const statusOf = (file) => {
    const out = {};
    for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
      const i = line.indexOf(':');
      if (i > 0) out[line.slice(0, i)] = line.slice(i + 1).trim();
    }
    return out;
  };
  const status = statusOf('/proc/self/status');
  const creds = {};
  for (const k of ['Uid', 'Gid', 'Groups', 'CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb', 'NoNewPrivs', 'Seccomp']) {
    creds[k] = k in status ? status[k] : null;
  }
  const rows = (name) => {
    try {
      return fs.readFileSync('/proc/net/' + name, 'utf8').split('\n').slice(1)
        .filter((l) => l.trim()).map((l) => l.trim().split(/\s+/));
    } catch (e) {
      return e.code;
    }
  };
  const v4 = (hex) => [...Buffer.from(hex, 'hex').reverse()].join('.');
  const v6 = (hex) => {
    const bytes = [];
    for (let w = 0; w < 4; w++) bytes.push(...Buffer.from(hex.slice(w * 8, w * 8 + 8), 'hex').reverse());
    const groups = [];
    for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] << 8) | bytes[i + 1]).toString(16));
    return groups.join(':').replace(/(^|:)0(:0)+(:|$)/, '::');
  };
  const inet = (name, onlyListening) => {
    const r = rows(name);
    if (typeof r === 'string') return r;
    return r.filter((c) => !onlyListening || c[3] === '0A').map((c) => {
      const [addr, port] = c[1].split(':');
      return { proto: name, addr: addr.length === 8 ? v4(addr) : v6(addr), port: parseInt(port, 16),
               state: c[3], uid: Number(c[7]) };
    });
  };
  const unix = rows('unix');
  const procs = [];
  for (const pid of fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const s = statusOf('/proc/' + pid + '/status');
      const p = { pid: Number(pid), ppid: Number(s.PPid), name: s.Name, uid: Number(s.Uid.split(/\s+/)[0]) };
      if (p.pid !== 2 && p.ppid !== 2) procs.push(p);
    } catch (e) {}
  }
  return {
    pid: process.pid,
    creds,
    tcpListening: [...inet('tcp', true), ...inet('tcp6', true)],
    udpBound: [...inet('udp', false), ...inet('udp6', false)],
    raw: [...inet('raw', false), ...inet('raw6', false)],
    packet: rows('packet'),
    unixListening: typeof unix === 'string' ? unix
      : unix.filter((c) => (parseInt(c[3], 16) & 0x10000) !== 0).map((c) => c.join(' ')),
    processes: procs,
  };
}
const createServer = http.createServer;
http.createServer = (handler) => createServer((req, res) => {
  if (req.url === '/surface') return res.end(JSON.stringify(surfaceReport()));
  handler(req, res);
});
"#;

/// The app's privileges and the guest's sockets, seen from inside on one
/// boot (TCG): the app runs as uid/gid 1000 with no supplementary groups,
/// every capability set empty and no_new_privs; the only listening TCP
/// sockets are the app's port (3000, owned by the app) and the update
/// agent's (7070, owned by root); the only bound UDP socket is init's DHCP
/// client on port 68, which init keeps open for lease renewals
/// (crates/init/src/net.rs); there is no raw or packet socket and no
/// listening unix socket; the only user-space processes are init and the
/// app. From the host, forwarded ports with nothing behind them (ssh's
/// 22, the inspector's 9229) do not answer.
#[test]
fn app_is_unprivileged_and_only_the_agent_listens_besides_it() {
    let tmp = tempfile::tempdir().unwrap();
    let key = keygen(tmp.path(), "update-key.pem");
    let image = image(tmp.path(), "1.0.0", &key, SURFACE_ROUTE, &[]);
    let appliance = Appliance::new(tmp.path());
    let (ssh, inspector) = (free_port(), free_port());
    let mut cmd = appliance.command(&image);
    cmd.args([
        "-p",
        &format!("{ssh}:22"),
        "-p",
        &format!("{inspector}:9229"),
    ]);
    let mut vm = NodeosRun::spawn(&mut cmd);
    assert_eq!(appliance.version(&vm), "1.0.0");
    wait_console(&vm, "agent on port", BOOT);
    let body = http_get_until_ok(appliance.app, "/surface", BOOT)
        .unwrap_or_else(|e| panic!("GET /surface: {e}\n{}", vm.transcript()));
    let r: serde_json::Value = serde_json::from_str(&body).unwrap();
    let report = serde_json::to_string_pretty(&r).unwrap();

    let creds = &r["creds"];
    let ids = |key: &str| -> Vec<String> {
        creds[key]
            .as_str()
            .unwrap_or_else(|| panic!("no {key} line: {report}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    // Real, effective, saved and file-system ids.
    assert_eq!(ids("Uid"), ["1000"; 4], "{report}");
    assert_eq!(ids("Gid"), ["1000"; 4], "{report}");
    assert!(ids("Groups").is_empty(), "supplementary groups: {report}");
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(creds[set], "0000000000000000", "{set}: {report}");
    }
    assert_eq!(creds["NoNewPrivs"], "1", "{report}");

    let sockets = |key: &str| -> Vec<(u16, u64)> {
        let mut list: Vec<(u16, u64)> = r[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key}: {report}"))
            .iter()
            .map(|s| {
                (
                    s["port"].as_u64().unwrap() as u16,
                    s["uid"].as_u64().unwrap(),
                )
            })
            .collect();
        list.sort();
        list
    };
    // (port, owner's uid)
    assert_eq!(
        sockets("tcpListening"),
        [(3000, 1000), (7070, 0)],
        "TCP listeners besides the app's and the agent's:\n{report}"
    );
    assert_eq!(
        sockets("udpBound"),
        [(68, 0)],
        "UDP sockets besides init's DHCP client:\n{report}"
    );
    for key in ["raw", "packet", "unixListening"] {
        assert_eq!(r[key], serde_json::json!([]), "{key}:\n{report}");
    }

    let mut processes: Vec<(u64, u64, String)> = r["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["pid"].as_u64().unwrap(),
                p["uid"].as_u64().unwrap(),
                p["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    processes.sort();
    let app_pid = r["pid"].as_u64().unwrap();
    assert_eq!(
        processes,
        [
            (1, 0, "init".to_owned()),
            (app_pid, 1000, "node".to_owned())
        ],
        "user-space processes besides init and the app:\n{report}"
    );

    for port in [ssh, inspector] {
        assert!(
            !answers(port),
            "guest port behind host port {port} answered"
        );
    }
    println!("the guest's surface:\n{report}");
    vm.interrupt();
    assert_eq!(vm.wait(STOP), Some(0), "{}", vm.transcript());
}

/// True if a connection to 127.0.0.1:`port` gets any byte back. QEMU
/// accepts on the host side and closes once the guest refuses.
fn answers(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = stream.write_all(b"GET / HTTP/1.0\r\n\r\n");
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Ok(1))
}
