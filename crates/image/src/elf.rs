//! Shared-library discovery for dynamically linked ELF files (the Node.js
//! binary, native addons).
//!
//! [`read_elf_deps`] reads an ELF file's interpreter (`PT_INTERP`), its
//! `DT_NEEDED` libraries and its `DT_RPATH`/`DT_RUNPATH` search paths.
//! [`resolve_libraries`] follows those to the transitive closure of
//! libraries, searching as glibc's `ld.so` does without `/etc/ld.so.cache`
//! (the guest has none) and without `LD_LIBRARY_PATH`:
//!
//! 1. `DT_RPATH` of the requesting object, then of the object that loaded
//!    it, and so on up to the binary — only if the requesting object has no
//!    `DT_RUNPATH` (an object with `DT_RUNPATH` has its `DT_RPATH` ignored);
//! 2. `DT_RUNPATH` of the requesting object;
//! 3. the default directories.
//!
//! `$ORIGIN` (and `$PLATFORM`) are expanded; an entry with another dynamic
//! string token (`$LIB`) or a relative entry is skipped. A needed name that
//! matches an already loaded object's name or `DT_SONAME` is not searched
//! again, as `ld.so` does. Candidates of the wrong ELF class or machine are
//! passed over. glibc-hwcaps subdirectories are not searched.
//!
//! Each library is placed in the guest at the path where it was found (the
//! directory it was found in + the needed name), which `ld.so` searches too;
//! [`Library::outside_loader_path`] flags one found in a default directory
//! that the guest's `ld.so` does not search by itself.

use std::collections::{BTreeSet, VecDeque};
use std::fs::File;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use object::elf;
use object::read::ReadCache;
use object::read::elf::{Dyn, FileHeader, ProgramHeader, Sym};
use object::{Endianness, ReadRef};

/// What an ELF file needs from the dynamic loader.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ElfDeps {
    /// `PT_INTERP`, e.g. `/lib64/ld-linux-x86-64.so.2`; `None` for a shared
    /// library or a static binary.
    pub interpreter: Option<String>,
    /// `DT_NEEDED` entries, in order.
    pub needed: Vec<String>,
    /// `DT_RUNPATH` entries, unexpanded.
    pub runpath: Vec<String>,
    /// `DT_RPATH` entries, unexpanded.
    pub rpath: Vec<String>,
    /// `DT_SONAME`.
    pub soname: Option<String>,
    /// `e_machine` (62 is x86_64, 183 is aarch64).
    pub machine: u16,
    /// Whether it is a 64-bit (ELFCLASS64) file.
    pub is_64: bool,
}

/// A shared library to put into the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Library {
    /// The name it was needed as (`libc.so.6`), or the interpreter's path.
    pub name: String,
    /// The real file on the host (symbolic links followed).
    pub host_path: PathBuf,
    /// The absolute path in the guest where the loader looks for it, e.g.
    /// `/lib/x86_64-linux-gnu/libc.so.6`.
    pub guest_path: PathBuf,
    /// Found only in a default directory that the guest's `ld.so` does not
    /// search without `/etc/ld.so.cache`: the guest will not find it there
    /// unless the image adds that directory to the loader's path.
    pub outside_loader_path: bool,
}

/// Where to look for libraries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibrarySearch {
    /// The file system that guest paths are looked up in: `/` normally, a
    /// sysroot in tests.
    pub root: PathBuf,
    /// Directories searched after `DT_RPATH`/`DT_RUNPATH`, in order.
    pub default_dirs: Vec<PathBuf>,
    /// Directories the guest's `ld.so` searches by itself (its built-in
    /// "system search path"; see [`loader_search_path`]).
    pub loader_dirs: Vec<PathBuf>,
    /// Guest directories whose contents come from elsewhere on the host, as
    /// `(guest, host)` pairs, e.g. `("/app", <project dir>)`. A binary under
    /// such a host directory gets the matching guest path (so `$ORIGIN`
    /// means what it will mean in the guest), and a library found under such
    /// a guest directory is already in the image: it is not listed, though
    /// what it needs is.
    pub mapped_dirs: Vec<(PathBuf, PathBuf)>,
}

impl Default for LibrarySearch {
    /// The host (`/`) with Debian's x86_64 directories; `loader_dirs` are
    /// Debian 12 glibc's built-in system search path.
    fn default() -> LibrarySearch {
        let dirs = |list: &[&str]| list.iter().map(PathBuf::from).collect::<Vec<_>>();
        LibrarySearch {
            root: PathBuf::from("/"),
            default_dirs: dirs(&[
                "/lib/x86_64-linux-gnu",
                "/usr/lib/x86_64-linux-gnu",
                "/lib64",
                "/usr/lib64",
                "/lib",
                "/usr/lib",
            ]),
            loader_dirs: dirs(&[
                "/lib/x86_64-linux-gnu",
                "/usr/lib/x86_64-linux-gnu",
                "/lib",
                "/usr/lib",
            ]),
            mapped_dirs: Vec::new(),
        }
    }
}

/// What can go wrong reading ELF files and finding their libraries.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not an ELF file", path.display())]
    NotElf { path: PathBuf },
    #[error("{} is a damaged or unsupported ELF file: {reason}", path.display())]
    Malformed { path: PathBuf, reason: String },
    #[error(
        "library {library} (needed by {}) was not found in {}; install the package that provides it (on Debian: `apt-file search {library}`)",
        needed_by.display(),
        searched.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(":")
    )]
    NotFound {
        library: String,
        needed_by: PathBuf,
        searched: Vec<PathBuf>,
    },
    #[error("cannot ask the dynamic loader {} for its search path: {reason}", interpreter.display())]
    Loader {
        interpreter: PathBuf,
        reason: String,
    },
}

/// Reads the interpreter, needed libraries and search paths of an ELF file
/// (32- or 64-bit, either byte order).
pub fn read_elf_deps(path: &Path) -> Result<ElfDeps, ElfError> {
    let (cache, class) = open(path)?;
    let parsed = match class {
        elf::ELFCLASS64 => parse::<elf::FileHeader64<Endianness>>(&cache),
        elf::ELFCLASS32 => parse::<elf::FileHeader32<Endianness>>(&cache),
        _ => Err("unknown ELF class".to_string()),
    };
    parsed.map_err(|reason| ElfError::Malformed {
        path: path.to_path_buf(),
        reason,
    })
}

/// The names of the dynamic symbols (`.dynsym`) that an ELF file defines
/// and that start with one of `prefixes`, e.g. a Node.js addon's
/// `node_register_module_v127`. Empty when the file has no section headers.
pub fn exported_symbols(path: &Path, prefixes: &[&str]) -> Result<Vec<String>, ElfError> {
    let (cache, class) = open(path)?;
    let found = match class {
        elf::ELFCLASS64 => symbols::<elf::FileHeader64<Endianness>>(&cache, prefixes),
        elf::ELFCLASS32 => symbols::<elf::FileHeader32<Endianness>>(&cache, prefixes),
        _ => Err("unknown ELF class".to_string()),
    };
    found.map_err(|reason| ElfError::Malformed {
        path: path.to_path_buf(),
        reason,
    })
}

/// Opens an ELF file for reading the parts needed (the node binary is
/// > 100 MB) and returns its class.
fn open(path: &Path) -> Result<(ReadCache<File>, elf::FileClass), ElfError> {
    let io_error = |source| ElfError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io_error)?;
    let mut ident = [0u8; 5];
    match file.read_exact(&mut ident) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(ElfError::NotElf {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(io_error(e)),
    }
    if ident[..4] != *b"\x7fELF" {
        return Err(ElfError::NotElf {
            path: path.to_path_buf(),
        });
    }
    Ok((ReadCache::new(file), elf::FileClass(ident[4])))
}

fn symbols<Elf: FileHeader<Endian = Endianness>>(
    data: &ReadCache<File>,
    prefixes: &[&str],
) -> Result<Vec<String>, String> {
    let header = Elf::parse(data).map_err(|e| e.to_string())?;
    let endian = header.endian().map_err(|e| e.to_string())?;
    let sections = header.sections(endian, data).map_err(|e| e.to_string())?;
    let table = sections
        .symbols(endian, data, elf::SHT_DYNSYM)
        .map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    for symbol in table.iter() {
        if symbol.st_shndx(endian) == elf::SHN_UNDEF {
            continue;
        }
        let name = symbol
            .name(endian, table.strings())
            .map_err(|e| e.to_string())?;
        if prefixes.iter().any(|p| name.starts_with(p.as_bytes())) {
            names.push(String::from_utf8_lossy(name).into_owned());
        }
    }
    Ok(names)
}

fn parse<Elf: FileHeader<Endian = Endianness>>(data: &ReadCache<File>) -> Result<ElfDeps, String> {
    let header = Elf::parse(data).map_err(|e| e.to_string())?;
    let endian = header.endian().map_err(|e| e.to_string())?;
    let segments = header
        .program_headers(endian, data)
        .map_err(|e| e.to_string())?;
    let mut deps = ElfDeps {
        machine: header.e_machine(endian).0,
        is_64: header.is_class_64(),
        ..ElfDeps::default()
    };
    let mut dynamic = None;
    for segment in segments {
        if let Some(interp) = segment
            .interpreter(endian, data)
            .map_err(|e| e.to_string())?
        {
            deps.interpreter = Some(String::from_utf8_lossy(interp).into_owned());
        }
        if let Some(entries) = segment.dynamic(endian, data).map_err(|e| e.to_string())? {
            dynamic = Some(entries);
        }
    }
    let Some(dynamic) = dynamic else {
        return Ok(deps); // statically linked
    };

    let mut strtab = None;
    let mut strsz = None;
    for entry in dynamic {
        let tag = entry.tag(endian);
        if tag == elf::DT_NULL {
            break;
        } else if tag == elf::DT_STRTAB {
            strtab = Some(entry.val(endian));
        } else if tag == elf::DT_STRSZ {
            strsz = Some(entry.val(endian));
        }
    }
    let (Some(strtab), Some(strsz)) = (strtab, strsz) else {
        return Err("dynamic section without a string table".into());
    };
    // DT_STRTAB is an address: find the loaded segment that holds it.
    let strtab_offset = segments
        .iter()
        .filter(|s| s.p_type(endian) == elf::PT_LOAD)
        .find_map(|s| {
            let vaddr: u64 = s.p_vaddr(endian).into();
            let filesz: u64 = s.p_filesz(endian).into();
            let offset: u64 = s.p_offset(endian).into();
            (strtab >= vaddr && strtab.checked_sub(vaddr)? < filesz)
                .then(|| offset.checked_add(strtab - vaddr))
                .flatten()
        })
        .ok_or("the dynamic string table is outside every loaded segment")?;
    let end = strtab_offset
        .checked_add(strsz)
        .ok_or("the dynamic string table size overflows")?;
    let string = |value: u64| -> Result<String, String> {
        let start = strtab_offset
            .checked_add(value)
            .filter(|s| *s < end)
            .ok_or("a dynamic string is outside the string table")?;
        let bytes = data
            .read_bytes_at_until(start..end, 0)
            .map_err(|()| "cannot read a dynamic string".to_string())?;
        Ok(String::from_utf8_lossy(bytes).into_owned())
    };
    let split = |list: String| -> Vec<String> {
        list.split(':')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    for entry in dynamic {
        let tag = entry.tag(endian);
        let value = entry.val(endian);
        if tag == elf::DT_NULL {
            break;
        } else if tag == elf::DT_NEEDED {
            deps.needed.push(string(value)?);
        } else if tag == elf::DT_RUNPATH {
            deps.runpath.extend(split(string(value)?));
        } else if tag == elf::DT_RPATH {
            deps.rpath.extend(split(string(value)?));
        } else if tag == elf::DT_SONAME {
            deps.soname = Some(string(value)?);
        }
    }
    Ok(deps)
}

/// Expands one `DT_RPATH`/`DT_RUNPATH` entry for an object whose directory
/// in the guest is `origin`. `None` for entries `ld.so` would skip here:
/// empty or relative ones, and ones with tokens other than `$ORIGIN` and
/// `$PLATFORM`.
pub fn expand_search_dir(entry: &str, origin: &Path, platform: &str) -> Option<PathBuf> {
    let origin = origin.to_str()?;
    let expanded = entry
        .replace("${ORIGIN}", origin)
        .replace("$ORIGIN", origin)
        .replace("${PLATFORM}", platform)
        .replace("$PLATFORM", platform);
    if expanded.contains('$') || !expanded.starts_with('/') {
        return None;
    }
    Some(normalize(Path::new(&expanded)))
}

/// Removes `.` and `..` from an absolute path, lexically.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// One object being loaded.
struct Loaded {
    /// Where it is in the guest (for `$ORIGIN` and messages).
    guest: PathBuf,
    deps: ElfDeps,
    /// Expanded `DT_RPATH` dirs of it and the objects that loaded it.
    rpath_chain: Vec<PathBuf>,
}

/// Finds the libraries `binaries` need, transitively: the interpreter first
/// (at its `PT_INTERP` path), then libraries in load order (breadth first),
/// each once. The binaries themselves are not listed.
///
/// A binary's `$ORIGIN` is its guest directory: under a
/// [`LibrarySearch::mapped_dirs`] entry, else relative to `search.root` when
/// it lies under it, else its host directory.
pub fn resolve_libraries(
    binaries: &[PathBuf],
    search: &LibrarySearch,
) -> Result<Vec<Library>, ElfError> {
    let mut out: Vec<Library> = Vec::new();
    let mut loaded_names: BTreeSet<String> = BTreeSet::new();
    let mut queue: VecDeque<Loaded> = VecDeque::new();
    let mut placed: BTreeSet<PathBuf> = BTreeSet::new();

    for binary in binaries {
        let deps = read_elf_deps(binary)?;
        let guest = guest_path(search, binary);
        if let Some(interp) = &deps.interpreter
            && !out.iter().any(|l| l.guest_path == Path::new(interp))
        {
            let host = host_path(search, Path::new(interp));
            let not_found = || ElfError::NotFound {
                library: interp.clone(),
                needed_by: binary.clone(),
                searched: vec![
                    Path::new(interp)
                        .parent()
                        .map(Path::to_path_buf)
                        .unwrap_or_default(),
                ],
            };
            let real = host.canonicalize().map_err(|_| not_found())?;
            let interp_deps = read_elf_deps(&real)?;
            loaded_names.insert(interp.clone());
            if let Some(name) = Path::new(interp).file_name().and_then(|n| n.to_str()) {
                loaded_names.insert(name.to_string());
            }
            loaded_names.extend(interp_deps.soname.clone());
            placed.insert(PathBuf::from(interp));
            out.push(Library {
                name: interp.clone(),
                host_path: real,
                guest_path: PathBuf::from(interp),
                outside_loader_path: false,
            });
        }
        let origin = guest.parent().unwrap_or(Path::new("/")).to_path_buf();
        let rpath_chain = own_rpath(&deps, &origin);
        queue.push_back(Loaded {
            guest,
            deps,
            rpath_chain,
        });
    }

    while let Some(object) = queue.pop_front() {
        let origin = object.guest.parent().unwrap_or(Path::new("/"));
        let platform = platform(object.deps.machine);
        for name in &object.deps.needed {
            if name == "linux-vdso.so.1" || name == "linux-gate.so.1" || loaded_names.contains(name)
            {
                continue;
            }
            let mut dirs: Vec<(PathBuf, bool)> = Vec::new();
            if object.deps.runpath.is_empty() {
                dirs.extend(object.rpath_chain.iter().map(|d| (d.clone(), false)));
            }
            dirs.extend(
                object
                    .deps
                    .runpath
                    .iter()
                    .filter_map(|e| expand_search_dir(e, origin, platform))
                    .map(|d| (d, false)),
            );
            dirs.extend(search.default_dirs.iter().map(|d| (d.clone(), true)));
            let candidates: Vec<(PathBuf, bool)> = if name.contains('/') {
                vec![(normalize(&origin.join(name)), false)]
            } else {
                dirs.into_iter()
                    .map(|(d, default)| (d.join(name), default))
                    .collect()
            };

            let mut found = None;
            for (guest, default) in &candidates {
                let host = host_path(search, guest);
                if !host.is_file() {
                    continue;
                }
                let Ok(real) = host.canonicalize() else {
                    continue;
                };
                match read_elf_deps(&real) {
                    Ok(deps)
                        if deps.is_64 == object.deps.is_64
                            && deps.machine == object.deps.machine =>
                    {
                        let outside = *default
                            && !guest
                                .parent()
                                .is_some_and(|dir| search.loader_dirs.iter().any(|d| d == dir));
                        found = Some((guest.clone(), real, deps, outside));
                        break;
                    }
                    // ld.so passes over files it cannot use.
                    Ok(_) | Err(ElfError::NotElf { .. } | ElfError::Malformed { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            let Some((guest, real, deps, outside)) = found else {
                let mut searched: Vec<PathBuf> = Vec::new();
                for (candidate, _) in candidates {
                    let dir = candidate
                        .parent()
                        .map(Path::to_path_buf)
                        .unwrap_or_default();
                    if !searched.contains(&dir) {
                        searched.push(dir);
                    }
                }
                return Err(ElfError::NotFound {
                    library: name.clone(),
                    needed_by: object.guest.clone(),
                    searched,
                });
            };
            loaded_names.insert(name.clone());
            loaded_names.extend(deps.soname.clone());
            if !placed.insert(guest.clone()) {
                continue;
            }
            let in_image = search.mapped_dirs.iter().any(|(g, _)| guest.starts_with(g));
            if !in_image {
                out.push(Library {
                    name: name.clone(),
                    host_path: real,
                    guest_path: guest.clone(),
                    outside_loader_path: outside,
                });
            }
            let lib_origin = guest.parent().unwrap_or(Path::new("/")).to_path_buf();
            let mut rpath_chain = own_rpath(&deps, &lib_origin);
            rpath_chain.extend(object.rpath_chain.iter().cloned());
            queue.push_back(Loaded {
                guest,
                deps,
                rpath_chain,
            });
        }
    }
    Ok(out)
}

/// The expanded `DT_RPATH` of an object (empty if it has `DT_RUNPATH`).
fn own_rpath(deps: &ElfDeps, origin: &Path) -> Vec<PathBuf> {
    if !deps.runpath.is_empty() {
        return Vec::new();
    }
    deps.rpath
        .iter()
        .filter_map(|e| expand_search_dir(e, origin, platform(deps.machine)))
        .collect()
}

/// glibc's `$PLATFORM` for a machine.
fn platform(machine: u16) -> &'static str {
    match elf::Machine(machine) {
        elf::EM_X86_64 => "x86_64",
        elf::EM_AARCH64 => "aarch64",
        elf::EM_386 => "i686",
        _ => "unknown",
    }
}

/// The host path that holds the guest path `guest`.
fn host_path(search: &LibrarySearch, guest: &Path) -> PathBuf {
    for (g, h) in &search.mapped_dirs {
        if let Ok(rest) = guest.strip_prefix(g) {
            return h.join(rest);
        }
    }
    search.root.join(guest.strip_prefix("/").unwrap_or(guest))
}

/// The guest path of the host file `binary`: under a mapped directory, else
/// relative to the root when under it, else the host path itself.
fn guest_path(search: &LibrarySearch, binary: &Path) -> PathBuf {
    for (g, h) in &search.mapped_dirs {
        if let Ok(rest) = binary.strip_prefix(h) {
            return g.join(rest);
        }
    }
    match binary.strip_prefix(&search.root) {
        Ok(inside) if binary.is_absolute() => Path::new("/").join(inside),
        _ => binary.to_path_buf(),
    }
}

/// Asks a glibc dynamic loader for its built-in "system search path"
/// (by running `<interpreter> --help`).
pub fn loader_search_path(interpreter: &Path) -> Result<Vec<PathBuf>, ElfError> {
    let failed = |reason: String| ElfError::Loader {
        interpreter: interpreter.to_path_buf(),
        reason,
    };
    let output = Command::new(interpreter)
        .arg("--help")
        .output()
        .map_err(|e| failed(e.to_string()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let dirs: Vec<PathBuf> = text
        .lines()
        .filter_map(|line| line.trim().strip_suffix("(system search path)"))
        .map(|dir| PathBuf::from(dir.trim()))
        .collect();
    if dirs.is_empty() {
        return Err(failed(
            "its --help printed no \"system search path\" (not glibc 2.33 or later?)".into(),
        ));
    }
    Ok(dirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest_paths(libs: &[Library]) -> Vec<String> {
        libs.iter()
            .map(|l| l.guest_path.display().to_string())
            .collect()
    }
    use std::fs;
    use std::process::Stdio;

    #[test]
    fn reads_host_ls() {
        let deps = read_elf_deps(Path::new("/bin/ls")).expect("ls is ELF");
        assert!(deps.needed.iter().any(|n| n == "libc.so.6"), "{deps:?}");
        assert!(
            deps.interpreter
                .as_deref()
                .is_some_and(|i| i.contains("ld-linux")),
            "{deps:?}"
        );
        assert!(deps.soname.is_none());
    }

    #[test]
    fn reads_a_library_soname() {
        let libc = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
        if !libc.exists() {
            return;
        }
        let deps = read_elf_deps(libc).expect("libc is ELF");
        assert_eq!(deps.soname.as_deref(), Some("libc.so.6"));
        assert!(
            deps.interpreter.is_some() || deps.needed.iter().any(|n| n.starts_with("ld-linux"))
        );
    }

    #[test]
    fn exported_symbols_of_libc() {
        let libc = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
        if !libc.exists() {
            return;
        }
        let found = exported_symbols(libc, &["printf", "snprintf"]).expect("libc");
        assert!(found.iter().any(|s| s == "printf"), "{found:?}");
        assert!(
            found
                .iter()
                .all(|s| s.starts_with("printf") || s.starts_with("snprintf"))
        );
        // ls defines none of these, though it imports printf-like functions.
        let none = exported_symbols(Path::new("/bin/ls"), &["printf"]).expect("ls");
        assert!(none.is_empty(), "{none:?}");
    }

    #[test]
    fn non_elf_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        for (name, content) in [
            ("text", &b"#!/bin/sh\necho hi\n"[..]),
            ("empty", b""),
            ("short", b"\x7fEL"),
        ] {
            let path = tmp.path().join(name);
            fs::write(&path, content).expect("write");
            let e = read_elf_deps(&path).expect_err("not ELF");
            assert!(matches!(e, ElfError::NotElf { .. }), "{name}: {e}");
        }
        let path = tmp.path().join("truncated");
        fs::write(&path, b"\x7fELF\x02\x01\x01\0\0\0").expect("write");
        let e = read_elf_deps(&path).expect_err("truncated");
        assert!(matches!(e, ElfError::Malformed { .. }), "{e}");
        let e = read_elf_deps(&tmp.path().join("missing")).expect_err("missing");
        assert!(matches!(e, ElfError::Io { .. }), "{e}");
    }

    #[test]
    fn garbage_after_elf_magic_does_not_panic() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ls = fs::read("/bin/ls").expect("read ls");
        // Keep the header, corrupt bytes further in, in a few patterns.
        for (i, step) in [7usize, 13, 31, 97].into_iter().enumerate() {
            let mut bytes = ls[..ls.len().min(8192)].to_vec();
            for j in (16..bytes.len()).step_by(step) {
                bytes[j] = bytes[j].wrapping_mul(31).wrapping_add(i as u8);
            }
            let path = tmp.path().join(format!("bad{i}"));
            fs::write(&path, bytes).expect("write");
            let _ = read_elf_deps(&path);
        }
    }

    #[test]
    fn resolves_host_ls() {
        let libs = resolve_libraries(&[PathBuf::from("/bin/ls")], &LibrarySearch::default())
            .expect("libraries of ls");
        let interp = &libs[0];
        assert_eq!(interp.guest_path, Path::new("/lib64/ld-linux-x86-64.so.2"));
        let libc = libs.iter().find(|l| l.name == "libc.so.6").expect("libc");
        assert_eq!(
            libc.guest_path,
            Path::new("/lib/x86_64-linux-gnu/libc.so.6")
        );
        assert!(!libc.outside_loader_path);
        assert!(libc.host_path.is_file());
        // ld-linux is needed by libc too, but it is the interpreter already.
        assert_eq!(
            libs.iter().filter(|l| l.name.contains("ld-linux")).count(),
            1,
            "{libs:#?}"
        );
        let mut guests: Vec<_> = libs.iter().map(|l| &l.guest_path).collect();
        guests.dedup();
        assert_eq!(guests.len(), libs.len());
    }

    #[test]
    fn expands_origin() {
        let origin = Path::new("/opt/app/bin");
        assert_eq!(
            expand_search_dir("$ORIGIN/../lib", origin, "x86_64"),
            Some(PathBuf::from("/opt/app/lib"))
        );
        assert_eq!(
            expand_search_dir("${ORIGIN}/x/$PLATFORM", origin, "x86_64"),
            Some(PathBuf::from("/opt/app/bin/x/x86_64"))
        );
        assert_eq!(expand_search_dir("/usr/$LIB", origin, "x86_64"), None);
        assert_eq!(expand_search_dir("lib", origin, "x86_64"), None);
        assert_eq!(expand_search_dir("", origin, "x86_64"), None);
    }

    #[test]
    fn missing_library_is_reported() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let search = LibrarySearch {
            root: tmp.path().to_path_buf(),
            ..LibrarySearch::default()
        };
        // /bin/ls outside the empty sysroot: its interpreter is missing.
        let e = resolve_libraries(&[PathBuf::from("/bin/ls")], &search).expect_err("missing");
        assert!(matches!(e, ElfError::NotFound { .. }), "{e}");
        assert!(e.to_string().contains("apt-file search"), "{e}");
    }

    #[test]
    fn loader_reports_its_search_path() {
        let Ok(dirs) = loader_search_path(Path::new("/lib64/ld-linux-x86-64.so.2")) else {
            return; // not glibc >= 2.33
        };
        // What LibrarySearch::default() assumes the guest's ld.so searches.
        assert_eq!(dirs, LibrarySearch::default().loader_dirs);
    }

    /// Compiles `lib{name}.so` and a program linked to it into a sysroot:
    /// `opt/app/lib/libgreet.so` and `opt/app/bin/prog` with the given
    /// link flags. `false` if there is no C compiler; panics if there is one
    /// and the build fails.
    fn build_fixture(root: &Path, flags: &[&str]) -> bool {
        let have_gcc = Command::new("gcc")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !have_gcc {
            return false;
        }
        let src = root.join("src");
        fs::create_dir_all(&src).expect("mkdir");
        fs::create_dir_all(root.join("opt/app/lib")).expect("mkdir");
        fs::create_dir_all(root.join("opt/app/bin")).expect("mkdir");
        fs::write(src.join("greet.c"), "int greet(void) { return 42; }\n").expect("write");
        fs::write(
            src.join("prog.c"),
            "int greet(void);\nint main(void) { return greet() != 42; }\n",
        )
        .expect("write");
        let gcc = |args: &[&str]| {
            Command::new("gcc")
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let lib = root.join("opt/app/lib/libgreet.so");
        let prog = root.join("opt/app/bin/prog");
        let (Some(lib_s), Some(prog_s), Some(src_s)) = (lib.to_str(), prog.to_str(), src.to_str())
        else {
            return false;
        };
        assert!(gcc(&[
            "-shared",
            "-fPIC",
            "-Wl,-soname,libgreet.so",
            "-o",
            lib_s,
            &format!("{src_s}/greet.c")
        ]));
        let lib_dir = format!("-L{}", root.join("opt/app/lib").display());
        let mut args = vec!["-o", prog_s, &format!("{src_s}/prog.c")[..]]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
        args.push(lib_dir);
        args.push("-lgreet".into());
        args.extend(flags.iter().map(|f| f.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert!(gcc(&args), "gcc {args:?}");
        // The sysroot needs libc and the loader, at their usual places.
        for (from, to) in [
            (
                "/lib/x86_64-linux-gnu/libc.so.6",
                "lib/x86_64-linux-gnu/libc.so.6",
            ),
            ("/lib64/ld-linux-x86-64.so.2", "lib64/ld-linux-x86-64.so.2"),
        ] {
            let to = root.join(to);
            fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
            fs::copy(from, to).expect("copy");
        }
        true
    }

    fn sysroot_test(flags: &[&str]) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().canonicalize().expect("canonical");
        if !build_fixture(&root, flags) {
            return; // no C compiler here
        }
        let prog = root.join("opt/app/bin/prog");
        let deps = read_elf_deps(&prog).expect("prog");
        let search = LibrarySearch {
            root: root.clone(),
            ..LibrarySearch::default()
        };
        let libs = resolve_libraries(std::slice::from_ref(&prog), &search).expect("resolves");
        let guests = guest_paths(&libs);
        assert_eq!(
            guests,
            [
                "/lib64/ld-linux-x86-64.so.2",
                "/opt/app/lib/libgreet.so",
                "/lib/x86_64-linux-gnu/libc.so.6",
            ],
            "{deps:?}"
        );
        assert!(libs.iter().all(|l| l.host_path.starts_with(&root)));
        assert!(libs.iter().all(|l| !l.outside_loader_path));

        // Without the library where $ORIGIN points, it is not found.
        fs::remove_file(root.join("opt/app/lib/libgreet.so")).expect("rm");
        let e = resolve_libraries(&[prog], &search).expect_err("missing");
        match e {
            ElfError::NotFound {
                library, searched, ..
            } => {
                assert_eq!(library, "libgreet.so");
                assert_eq!(searched[0], Path::new("/opt/app/lib"));
            }
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn runpath_with_origin_in_a_sysroot() {
        sysroot_test(&["-Wl,-rpath,$ORIGIN/../lib", "-Wl,--enable-new-dtags"]);
    }

    #[test]
    fn rpath_with_origin_in_a_sysroot() {
        sysroot_test(&["-Wl,-rpath,$ORIGIN/../lib", "-Wl,--disable-new-dtags"]);
    }

    #[test]
    fn library_outside_the_loader_path_is_flagged() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().canonicalize().expect("canonical");
        if !build_fixture(&root, &[]) {
            return;
        }
        let search = LibrarySearch {
            root: root.clone(),
            default_dirs: vec![
                PathBuf::from("/lib/x86_64-linux-gnu"),
                PathBuf::from("/opt/app/lib"),
            ],
            ..LibrarySearch::default()
        };
        let libs = resolve_libraries(&[root.join("opt/app/bin/prog")], &search).expect("resolves");
        let greet = libs
            .iter()
            .find(|l| l.name == "libgreet.so")
            .expect("greet");
        assert!(greet.outside_loader_path);
        let libc = libs.iter().find(|l| l.name == "libc.so.6").expect("libc");
        assert!(!libc.outside_loader_path);
    }

    #[test]
    fn addon_libraries_inside_a_mapped_dir_are_not_listed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().canonicalize().expect("canonical");
        if !build_fixture(&root, &["-Wl,-rpath,$ORIGIN/../lib"]) {
            return;
        }
        // The "app" is root/opt/app, seen as /app in the guest.
        let search = LibrarySearch {
            root: root.clone(),
            mapped_dirs: vec![(PathBuf::from("/app"), root.join("opt/app"))],
            ..LibrarySearch::default()
        };
        let libs = resolve_libraries(&[root.join("opt/app/bin/prog")], &search).expect("resolves");
        let guests = guest_paths(&libs);
        assert_eq!(
            guests,
            [
                "/lib64/ld-linux-x86-64.so.2",
                "/lib/x86_64-linux-gnu/libc.so.6"
            ]
        );
    }
}
