//! Choosing the accelerator: KVM only when it provably works.
//!
//! `/dev/kvm` existing proves little: under broken nested virtualisation a
//! KVM guest hangs before printing anything, and `-cpu host` may abort. So
//! KVM is used only after a tiny probe guest ([`probe_elf`]) has run under
//! it and exited through QEMU's `isa-debug-exit` device within
//! [`PROBE_TIMEOUT`]. The verdict is cached in `accel-probe.json`, keyed by
//! the QEMU binary, the host kernel and the host's boot id, so the probe runs
//! once per host boot.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::process::{Process, spawn_error};
use crate::{Accel, ConsoleSink, Error, ResolvedAccel};

/// How long the probe guest may take under KVM. It needs ~0.1 s when KVM works.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The value the probe writes to `isa-debug-exit`; QEMU then exits with
/// status `(value << 1) | 1`.
const PROBE_VALUE: u8 = 0x2a;
const PROBE_STATUS: i32 = ((PROBE_VALUE as i32) << 1) | 1;
const DEBUG_EXIT_PORT: u16 = 0xf4;
const CACHE_FILE: &str = "accel-probe.json";

/// Whether KVM works here, and why (not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvmStatus {
    pub usable: bool,
    /// One line for people: "KVM probe guest finished", "/dev/kvm: …", ….
    pub reason: String,
    /// The verdict came from the cache rather than a fresh probe.
    pub cached: bool,
}

/// Picks the accelerator for `requested`, probing KVM (or reading the cached
/// verdict) unless TCG was asked for.
pub fn resolve_accel(requested: Accel, qemu: &Path) -> Result<ResolvedAccel, Error> {
    match requested {
        Accel::Tcg => Ok(ResolvedAccel::Tcg),
        Accel::Auto => Ok(if kvm_status(qemu).usable {
            ResolvedAccel::Kvm
        } else {
            ResolvedAccel::Tcg
        }),
        Accel::Kvm => {
            let status = kvm_status(qemu);
            if status.usable {
                Ok(ResolvedAccel::Kvm)
            } else {
                Err(Error::KvmUnavailable {
                    reason: status.reason,
                })
            }
        }
    }
}

/// Checks that `/dev/kvm` opens, then consults the cache or runs the probe
/// guest under KVM with `qemu`.
pub fn kvm_status(qemu: &Path) -> KvmStatus {
    kvm_status_cached_in(qemu, cache_dir().as_deref())
}

fn kvm_status_cached_in(qemu: &Path, cache_dir: Option<&Path>) -> KvmStatus {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return KvmStatus {
            usable: false,
            reason: format!("cannot open /dev/kvm: {e}"),
            cached: false,
        };
    }
    let key = ProbeKey::for_host(qemu);
    let cache = cache_dir.map(|dir| dir.join(CACHE_FILE));
    if let (Some(key), Some(path)) = (&key, &cache)
        && let Some(entry) = read_cache(path).filter(|e| &e.key == key)
    {
        return KvmStatus {
            usable: entry.kvm_usable,
            reason: entry.reason,
            cached: true,
        };
    }
    let (usable, reason) = match run_probe(qemu, ResolvedAccel::Kvm, PROBE_TIMEOUT) {
        Ok(()) => (true, "the KVM probe guest ran".to_owned()),
        Err(why) => (false, format!("the KVM probe guest {why}")),
    };
    if let (Some(key), Some(path)) = (key, cache) {
        // The cache only saves time: failing to write it is not an error.
        let _ = write_cache(
            &path,
            &CacheEntry {
                key,
                kvm_usable: usable,
                reason: reason.clone(),
            },
        );
    }
    KvmStatus {
        usable,
        reason,
        cached: false,
    }
}

/// Boots [`probe_elf`] with `accel` and checks it exits as designed within
/// `timeout`. `Err` says what happened instead, for people.
pub(crate) fn run_probe(
    qemu: &Path,
    accel: ResolvedAccel,
    timeout: Duration,
) -> Result<(), String> {
    let dir = tempfile::Builder::new()
        .prefix("nodeos-probe")
        .tempdir()
        .map_err(|e| format!("could not be written: {e}"))?;
    let elf = dir.path().join("probe.elf");
    std::fs::write(&elf, probe_elf()).map_err(|e| format!("could not be written: {e}"))?;
    let mut command = Command::new(qemu);
    command.args(probe_args(accel, &elf));
    let process = Process::spawn(command, ConsoleSink::None)
        .map_err(|e| format!("did not start: {}", spawn_error(qemu, e)))?;
    let Some(status) = process.wait_finished(timeout) else {
        process.kill_and_reap();
        return Err(format!("did not finish within {timeout:?}"));
    };
    if status.code() == Some(PROBE_STATUS) {
        return Ok(());
    }
    let state = process.state();
    let stderr = state.stderr.text();
    let said = stderr
        .trim()
        .lines()
        .last()
        .map(|l| format!(": {l}"))
        .unwrap_or_default();
    Err(format!("failed ({status}){said}"))
}

fn probe_args(accel: ResolvedAccel, elf: &Path) -> Vec<OsString> {
    let cpu = match accel {
        ResolvedAccel::Kvm => ["-accel", "kvm", "-cpu", "host"],
        ResolvedAccel::Tcg => ["-accel", "tcg", "-cpu", "max"],
    };
    let mut args: Vec<OsString> = ["-M", "pc"]
        .into_iter()
        .chain(cpu)
        .map(OsString::from)
        .collect();
    args.extend(
        [
            "-m",
            "32",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ]
        .into_iter()
        .map(OsString::from),
    );
    args.push("-device".into());
    args.push(format!("isa-debug-exit,iobase={DEBUG_EXIT_PORT:#x},iosize=0x04").into());
    args.push("-kernel".into());
    args.push(elf.into());
    args
}

/// A 110-byte multiboot (v1) ELF32 kernel that writes 0x2a to the
/// `isa-debug-exit` port and halts, so QEMU exits with status 85. QEMU's
/// `-kernel` loads it directly.
pub fn probe_elf() -> Vec<u8> {
    const LOAD_ADDR: u32 = 0x10_0000;
    const EHDR: usize = 52;
    const PHDR: usize = 32;
    const MB_HEADER: usize = EHDR + PHDR; // 84, 4-byte aligned, in the first 8 KiB
    const CODE: usize = MB_HEADER + 12;
    const MB_MAGIC: u32 = 0x1bad_b002;
    const MB_FLAGS: u32 = 0; // ELF image: no address fields needed

    #[rustfmt::skip]
    let code: [u8; 14] = [
        0xfa,                                    // cli
        0x66, 0xba,                              // mov dx, DEBUG_EXIT_PORT
        DEBUG_EXIT_PORT as u8, (DEBUG_EXIT_PORT >> 8) as u8,
        0xb8, PROBE_VALUE, 0, 0, 0,              // mov eax, PROBE_VALUE
        0xef,                                    // out dx, eax
        0xf4,                                    // hlt
        0xeb, 0xfd,                              // jmp back to hlt
    ];
    let size = (CODE + code.len()) as u32;

    let mut elf = Vec::with_capacity(size as usize);
    let u16le = |v: &mut Vec<u8>, x: u16| v.extend_from_slice(&x.to_le_bytes());
    let u32le = |v: &mut Vec<u8>, x: u32| v.extend_from_slice(&x.to_le_bytes());
    // ELF header: 32-bit, little-endian, executable, i386.
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    u16le(&mut elf, 2); // e_type: EXEC
    u16le(&mut elf, 3); // e_machine: 386
    u32le(&mut elf, 1); // e_version
    u32le(&mut elf, LOAD_ADDR + CODE as u32); // e_entry
    u32le(&mut elf, EHDR as u32); // e_phoff
    u32le(&mut elf, 0); // e_shoff
    u32le(&mut elf, 0); // e_flags
    u16le(&mut elf, EHDR as u16); // e_ehsize
    u16le(&mut elf, PHDR as u16); // e_phentsize
    u16le(&mut elf, 1); // e_phnum
    u16le(&mut elf, 40); // e_shentsize
    u16le(&mut elf, 0); // e_shnum
    u16le(&mut elf, 0); // e_shstrndx
    // One PT_LOAD segment: the whole file at LOAD_ADDR, read + execute.
    for field in [1, 0, LOAD_ADDR, LOAD_ADDR, size, size, 5, 0x1000] {
        u32le(&mut elf, field);
    }
    // Multiboot header: magic, flags, checksum (the three sum to 0).
    for field in [
        MB_MAGIC,
        MB_FLAGS,
        0u32.wrapping_sub(MB_MAGIC).wrapping_sub(MB_FLAGS),
    ] {
        u32le(&mut elf, field);
    }
    elf.extend_from_slice(&code);
    debug_assert_eq!(elf.len(), size as usize);
    elf
}

pub use nodeos_manifest::cache_dir;

/// What the probe verdict depends on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ProbeKey {
    qemu: PathBuf,
    qemu_size: u64,
    qemu_mtime_ns: u64,
    kernel_release: String,
    boot_id: String,
}

impl ProbeKey {
    fn for_host(qemu: &Path) -> Option<ProbeKey> {
        let qemu = qemu.canonicalize().ok()?;
        let meta = qemu.metadata().ok()?;
        let mtime = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
        let read = |path| {
            std::fs::read_to_string(path)
                .ok()
                .map(|s| s.trim().to_owned())
        };
        Some(ProbeKey {
            qemu_size: meta.len(),
            qemu_mtime_ns: u64::try_from(mtime.as_nanos()).ok()?,
            qemu,
            kernel_release: read("/proc/sys/kernel/osrelease")?,
            boot_id: read("/proc/sys/kernel/random/boot_id")?,
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct CacheEntry {
    #[serde(flatten)]
    key: ProbeKey,
    kvm_usable: bool,
    reason: String,
}

fn read_cache(path: &Path) -> Option<CacheEntry> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn write_cache(path: &Path, entry: &CacheEntry) -> std::io::Result<()> {
    let dir = path.parent().expect("cache file has a directory");
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    serde_json::to_writer_pretty(&mut tmp, entry)?;
    tmp.persist(path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_elf_is_a_multiboot_elf32() {
        let elf = probe_elf();
        assert_eq!(elf.len(), 110);
        assert_eq!(&elf[..6], b"\x7fELF\x01\x01");
        let word = |at: usize| u32::from_le_bytes(elf[at..at + 4].try_into().unwrap());
        assert_eq!(
            word(24),
            0x10_0000 + 96,
            "entry point is the code after the multiboot header"
        );
        let header = (0..8192)
            .step_by(4)
            .find(|&at| at + 12 <= elf.len() && word(at) == 0x1bad_b002)
            .unwrap();
        assert_eq!(header % 4, 0);
        assert_eq!(
            word(header)
                .wrapping_add(word(header + 4))
                .wrapping_add(word(header + 8)),
            0
        );
        assert_eq!(
            word(52 + 16),
            elf.len() as u32,
            "PT_LOAD covers the whole file"
        );
    }

    #[test]
    fn cache_round_trips_and_is_keyed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join(CACHE_FILE);
        let key = ProbeKey {
            qemu: "/usr/bin/qemu-system-x86_64".into(),
            qemu_size: 1,
            qemu_mtime_ns: 2,
            kernel_release: "6.1.0".into(),
            boot_id: "abc".into(),
        };
        write_cache(
            &path,
            &CacheEntry {
                key: key.clone(),
                kvm_usable: false,
                reason: "timed out".into(),
            },
        )
        .unwrap();
        let entry = read_cache(&path).unwrap();
        assert_eq!(entry.key, key);
        assert!(!entry.kvm_usable);
        let other_boot = ProbeKey {
            boot_id: "def".into(),
            ..key
        };
        assert_ne!(entry.key, other_boot);
    }

    #[test]
    fn tcg_never_probes() {
        assert_eq!(
            resolve_accel(Accel::Tcg, Path::new("/nonexistent")).unwrap(),
            ResolvedAccel::Tcg
        );
    }

    #[test]
    fn probe_guest_exits_as_designed_under_tcg() {
        let qemu = crate::find_qemu(None).unwrap();
        let started = std::time::Instant::now();
        run_probe(&qemu, ResolvedAccel::Tcg, Duration::from_secs(20)).unwrap();
        eprintln!("TCG probe took {:?}", started.elapsed());
        // A probe that cannot finish in time is killed and reported, like a hung KVM guest.
        let err = run_probe(&qemu, ResolvedAccel::Tcg, Duration::from_millis(1)).unwrap_err();
        assert_eq!(err, "did not finish within 1ms");
    }

    #[test]
    fn kvm_verdict_is_cached() {
        let qemu = crate::find_qemu(None).unwrap();
        // Not via NODEOS_CACHE_DIR: tests run in parallel and share the environment.
        let cache = tempfile::tempdir().unwrap();
        let fresh = kvm_status_cached_in(&qemu, Some(cache.path()));
        eprintln!("fresh: {fresh:?}");
        assert!(!fresh.cached);
        let again = kvm_status_cached_in(&qemu, Some(cache.path()));
        eprintln!("again: {again:?}");
        if std::path::Path::new("/dev/kvm").exists() {
            assert!(
                again.cached,
                "the second verdict comes from {}",
                cache.path().display()
            );
            assert_eq!((again.usable, &again.reason), (fresh.usable, &fresh.reason));
        }
    }
}
