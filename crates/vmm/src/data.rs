//! The persistent data volume: a raw disk image file holding one ext4
//! filesystem (label [`DATA_LABEL`], its root owned by the app's user),
//! attached read-write as the guest's `/data` ([`crate::VmConfig::data_disk`]).
//!
//! [`DataVolume::open`] readies it before a boot:
//!
//! * **creates** it on first use: a sparse file formatted by `mkfs.ext4`
//!   under a temporary name in the same directory, renamed into place only
//!   once complete, so a failure (disk full, no `mkfs.ext4`) leaves nothing;
//! * **grows** it offline (`e2fsck -f`, then `resize2fs`) when a larger size
//!   is asked for; it never shrinks one;
//! * **locks** it for as long as the [`DataVolume`] lives (`flock`), so two
//!   runs never share it, and refuses a volume that another process (a QEMU
//!   started some other way) holds a lock on;
//! * **checks** it with `e2fsck -p`, which replays the journal after a hard
//!   stop and repairs what is safe to repair; the result ([`DataCheck`])
//!   goes to the guest, whose init decides whether the app may start.
//!
//! The tools come from e2fsprogs; they are looked up in `PATH`, then in
//! `/usr/sbin` and `/sbin` (not in a normal user's `PATH` on Debian).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nodeos_manifest::settings::{CheckStatus, DataCheck, DataSize, MAX_CHECK_SUMMARY};
use nodeos_manifest::{APP_GID, APP_UID, DATA_LABEL};

/// Everything that can go wrong with a data volume on the host.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(
        "`{tool}` was not found in PATH, /usr/sbin or /sbin: install e2fsprogs (Debian/Ubuntu: `apt-get install e2fsprogs`)"
    )]
    ToolMissing { tool: &'static str },

    #[error("`{tool}` failed on `{}` ({status}): {output}", path.display())]
    Tool {
        tool: &'static str,
        path: PathBuf,
        status: String,
        output: String,
    },

    #[error(
        "`{}` is not a nodeos data volume (it holds no ext4 filesystem): give another path with --data, or move it away to have a new volume created",
        path.display()
    )]
    NotExt4 { path: PathBuf },

    #[error(
        "the data volume `{}` holds {size}, more than the {wanted} asked for: shrinking a volume is not supported; ask for {size} or more, or move the volume away to start over with an empty one",
        path.display()
    )]
    Shrink {
        path: PathBuf,
        size: String,
        wanted: DataSize,
    },

    #[error(
        "cannot grow the data volume `{}`: it failed its check ({summary}); repair it first with `e2fsck -fy {}`",
        path.display(),
        path.display()
    )]
    GrowUnchecked { path: PathBuf, summary: String },

    #[error(
        "the data volume `{}` is in use by {by}: stop that VM first, or give this one another volume with --data PATH",
        path.display()
    )]
    InUse { path: PathBuf, by: String },

    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DataError {
    let what = what.into();
    move |source| DataError::Io { what, source }
}

/// The size asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeRequest {
    /// From the image's settings: create or grow to this size; a larger
    /// volume is kept as it is.
    AtLeast(DataSize),
    /// Asked for explicitly (`--data-size`): create or grow to this size;
    /// a larger volume is an error, as it cannot shrink.
    Exactly(DataSize),
}

impl SizeRequest {
    fn size(self) -> DataSize {
        match self {
            SizeRequest::AtLeast(size) | SizeRequest::Exactly(size) => size,
        }
    }
}

/// What [`DataVolume::open`] did to the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// It did not exist and was created.
    Created,
    /// It was grown from this many bytes of filesystem.
    Grown { from: u64 },
    /// It was used as it is.
    Existing,
}

/// A data volume ready to boot with, locked while this value lives.
#[derive(Debug)]
pub struct DataVolume {
    path: PathBuf,
    /// Size of its filesystem in bytes.
    size: u64,
    /// Holds the `flock` (released when closed).
    _lock: File,
}

impl DataVolume {
    /// Creates, locks, grows and checks the volume at `path` (see the
    /// module docs); returns it with what was done and what the check
    /// found.
    pub fn open(
        path: &Path,
        request: SizeRequest,
    ) -> Result<(DataVolume, Opened, DataCheck), DataError> {
        let mut opened = Opened::Existing;
        if !path.exists() && create(path, request.size())? {
            opened = Opened::Created;
        }
        let lock = lock(path)?;
        let mut size = filesystem_size(path, &lock)?;
        let wanted = request.size().bytes();
        let check = if size < wanted {
            // resize2fs wants a freshly checked filesystem: check it in full.
            let check = run_check(path, true)?;
            if check.status == CheckStatus::Failed {
                return Err(DataError::GrowUnchecked {
                    path: path.to_owned(),
                    summary: check.summary,
                });
            }
            grow(path, &lock, wanted)?;
            opened = Opened::Grown { from: size };
            size = filesystem_size(path, &lock)?;
            check
        } else {
            if let SizeRequest::Exactly(wanted) = request
                && size > wanted.bytes()
            {
                return Err(DataError::Shrink {
                    path: path.to_owned(),
                    size: human_size(size),
                    wanted,
                });
            }
            run_check(path, false)?
        };
        let volume = DataVolume {
            path: path.to_owned(),
            size,
            _lock: lock,
        };
        Ok((volume, opened, check))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the volume's filesystem in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// Where `nodeos run` keeps the data volume of the image directory
/// `image_dir` by default: beside it, `dist/hello.nodeos` →
/// `dist/hello.data.img` (the image directory itself is replaced by every
/// build; this file is not).
pub fn default_path(image_dir: &Path) -> PathBuf {
    beside(image_dir, "data.img")
}

/// A file beside the image directory named after it: `dist/hello.nodeos`
/// and `system.img` → `dist/hello.system.img`.
pub fn beside(image_dir: &Path, suffix: &str) -> PathBuf {
    let absolute;
    let dir = if image_dir.file_name().is_some() {
        image_dir
    } else {
        // `.` or `..`: name it after the directory it stands for.
        absolute = image_dir
            .canonicalize()
            .unwrap_or_else(|_| image_dir.to_owned());
        &absolute
    };
    let name = dir
        .file_name()
        .map_or_else(|| "nodeos".into(), |n| n.to_string_lossy().into_owned());
    let stem = name.strip_suffix(".nodeos").unwrap_or(&name);
    dir.with_file_name(format!("{stem}.{suffix}"))
}

/// `1GiB`, `20MiB`, or `N bytes` when no binary unit divides it.
pub fn human_size(bytes: u64) -> String {
    match DataSize::from_bytes(bytes) {
        Some(size) if size.bytes() == bytes => size.to_string(),
        _ => format!("{bytes} bytes"),
    }
}

/// Makes a new volume at `path`: a sparse temporary file beside it,
/// formatted, then renamed to `path`, never replacing a file: `false` if
/// another run created one there meanwhile (that one is used).
fn create(path: &Path, size: DataSize) -> Result<bool, DataError> {
    let mkfs = find_tool("mkfs.ext4")?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map_or_else(|| "data.img".into(), |n| n.to_string_lossy().into_owned());
    let shown = path.display();
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io_error(format!(
            "cannot create the data volume `{shown}` in `{}`",
            dir.display()
        )))?;
    tmp.as_file()
        .set_len(size.bytes())
        .map_err(io_error(format!("cannot create the data volume `{shown}`")))?;
    // Inode tables and the journal are zeroed here, on the host, in a few
    // milliseconds; left lazy, the guest kernel's ext4lazyinit thread would
    // zero them at every boot until done, competing with the app for the
    // (emulated) CPU. A 1 GiB volume then takes about 33 MiB on disk.
    let root_owner =
        format!("root_owner={APP_UID}:{APP_GID},lazy_itable_init=0,lazy_journal_init=0");
    let mut command = Command::new(&mkfs);
    command
        .args(["-q", "-F", "-L", DATA_LABEL, "-m", "0", "-E", &root_owner])
        .arg(tmp.path());
    run_tool("mkfs.ext4", path, command)?;
    tmp.as_file()
        .sync_all()
        .map_err(io_error(format!("cannot write the data volume `{shown}`")))?;
    // The temporary file is removed if anything above failed.
    match tmp.persist_noclobber(path) {
        Ok(_) => {}
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => {
            return Err(DataError::Io {
                what: format!("cannot create the data volume `{shown}`"),
                source: e.error,
            });
        }
    }
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(true)
}

/// Opens `path` read-write and takes an exclusive `flock` on it; fails if
/// another `nodeos run` holds it, or a QEMU holds its own (fcntl) locks.
fn lock(path: &Path) -> Result<File, DataError> {
    let shown = path.display();
    let file = File::options()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_error(format!("cannot open the data volume `{shown}`")))?;
    match lock_exclusive(&file) {
        Ok(()) => Ok(file),
        Err(Locked::By(by)) => Err(DataError::InUse {
            path: path.to_owned(),
            by,
        }),
        Err(Locked::Io(e)) => Err(io_error(format!("cannot lock the data volume `{shown}`"))(
            e,
        )),
    }
}

/// Why a disk image could not be locked for this run.
pub(crate) enum Locked {
    /// Who holds it: another `nodeos run`, or a process with fcntl locks.
    By(String),
    Io(std::io::Error),
}

/// How long a held `flock` is waited for before it counts as taken: a
/// process forked while the image was open (ours or another tool's) holds
/// the lock until it execs, which takes a few milliseconds at most.
const LOCK_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// Takes an exclusive `flock` on an open disk image (held until the file
/// is closed); fails if another `nodeos run` holds one past [`LOCK_GRACE`],
/// or a QEMU holds its own (fcntl) locks on it.
pub(crate) fn lock_exclusive(file: &File) -> Result<(), Locked> {
    let deadline = std::time::Instant::now() + LOCK_GRACE;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Locked::By("another `nodeos run`".into()));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Locked::Io(e)),
        }
    }
    let meta = file.metadata().map_err(Locked::Io)?;
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    match fcntl_lock_holder(&locks, meta.dev(), meta.ino()) {
        None => Ok(()),
        Some(Some(pid)) => Err(Locked::By(format!(
            "process {pid} (a QEMU started outside `nodeos run`?)"
        ))),
        Some(None) => Err(Locked::By(
            "another process (a QEMU started outside `nodeos run`?)".into(),
        )),
    }
}

/// Whether `/proc/locks` (given as `locks`) lists a POSIX or open-file-
/// description lock (what QEMU takes on its images) on the file with
/// device `dev` and inode `ino`; with the holder's pid when it is known.
fn fcntl_lock_holder(locks: &str, dev: u64, ino: u64) -> Option<Option<u32>> {
    // glibc's dev_t encoding, which /proc/locks prints as MAJOR:MINOR in hex.
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    locks.lines().find_map(|line| {
        // `1: OFDLCK ADVISORY READ -1 08:01:1234 100 101`; `->` marks a waiter.
        let fields: Vec<&str> = line.split_whitespace().filter(|f| *f != "->").collect();
        let [_, kind, _, _, pid, file, ..] = fields[..] else {
            return None;
        };
        if kind != "POSIX" && kind != "OFDLCK" {
            return None;
        }
        let mut parts = file.split(':');
        let (maj, min, inode) = (parts.next()?, parts.next()?, parts.next()?);
        let matches = u64::from_str_radix(maj, 16).ok()? == major
            && u64::from_str_radix(min, 16).ok()? == minor
            && inode.parse::<u64>().ok()? == ino;
        matches.then(|| pid.parse::<u32>().ok())
    })
}

/// Size in bytes of the ext4 filesystem in `file` (blocks × block size).
fn filesystem_size(path: &Path, mut file: &File) -> Result<u64, DataError> {
    use std::io::Seek;
    let mut head = vec![0u8; 2048];
    file.rewind()
        .and_then(|_| file.read(&mut head))
        .map_err(io_error(format!(
            "cannot read the data volume `{}`",
            path.display()
        )))?;
    superblock_size(&head).ok_or_else(|| DataError::NotExt4 {
        path: path.to_owned(),
    })
}

/// The filesystem size recorded in an ext2/3/4 superblock (the first
/// 2048 bytes of a volume), or `None` if there is none.
fn superblock_size(head: &[u8]) -> Option<u64> {
    let sb = head.get(1024..2048)?;
    let u16_at = |at: usize| u16::from_le_bytes([sb[at], sb[at + 1]]);
    let u32_at = |at: usize| u32::from_le_bytes(sb[at..at + 4].try_into().expect("4 bytes"));
    if u16_at(0x38) != 0xEF53 {
        return None;
    }
    let log_block = u32_at(0x18);
    if log_block > 6 {
        return None;
    }
    let block_size = 1024u64 << log_block;
    let incompat_64bit = u32_at(0x60) & 0x80 != 0;
    let blocks_hi = if incompat_64bit { u32_at(0x150) } else { 0 };
    let blocks = u64::from(u32_at(0x04)) | (u64::from(blocks_hi) << 32);
    blocks.checked_mul(block_size)
}

/// Extends the file to `size` bytes and the filesystem to fill it.
fn grow(path: &Path, file: &File, size: u64) -> Result<(), DataError> {
    let resize2fs = find_tool("resize2fs")?;
    let len = file
        .metadata()
        .map_err(io_error(format!(
            "cannot read the data volume `{}`",
            path.display()
        )))?
        .len();
    if len < size {
        file.set_len(size).map_err(io_error(format!(
            "cannot grow the data volume `{}`",
            path.display()
        )))?;
    }
    let mut command = Command::new(resize2fs);
    command.arg(path);
    run_tool("resize2fs", path, command)?;
    Ok(())
}

/// `e2fsck -p` (preen: repair what is safe without asking), with `-f` to
/// check even a filesystem marked clean.
fn run_check(path: &Path, force: bool) -> Result<DataCheck, DataError> {
    let e2fsck = find_tool("e2fsck")?;
    let mut command = Command::new(e2fsck);
    command.arg("-p");
    if force {
        command.arg("-f");
    }
    command.arg(path);
    let output = capture("e2fsck", command)?;
    let summary = summarize(&output.text);
    // 0: clean; 1: repaired; 2: repaired, reboot (mounted root only);
    // 4: errors left; 8: operational error; 16: usage; 32: cancelled.
    let status = match output.code {
        Some(0) => CheckStatus::Clean,
        Some(1 | 2) => CheckStatus::Repaired,
        Some(code) if code >= 4 && code & 16 == 0 => CheckStatus::Failed,
        _ => {
            return Err(DataError::Tool {
                tool: "e2fsck",
                path: path.to_owned(),
                status: output.status,
                output: summary,
            });
        }
    };
    Ok(DataCheck { status, summary })
}

/// One line of e2fsck's output for people and the guest: blank lines and
/// the version banner dropped, whitespace collapsed, at most
/// [`MAX_CHECK_SUMMARY`] / 2 bytes (cut at a character boundary, with `…`).
pub fn summarize(output: &str) -> String {
    const LIMIT: usize = MAX_CHECK_SUMMARY / 2;
    let mut text = output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !is_banner(l))
        .map(|l| {
            l.split(|c: char| c.is_whitespace() || c.is_control())
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join(" ");
    if text.len() > LIMIT {
        let mut cut = LIMIT - '…'.len_utf8();
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// `e2fsck 1.47.0 (5-Feb-2023)` and the like.
fn is_banner(line: &str) -> bool {
    ["e2fsck ", "resize2fs ", "mke2fs "]
        .iter()
        .any(|tool| line.starts_with(tool) && line.ends_with(')'))
}

/// What a tool printed (stdout, then stderr) and how it exited.
struct Captured {
    code: Option<i32>,
    status: String,
    text: String,
}

fn capture(tool: &'static str, mut command: Command) -> Result<Captured, DataError> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(io_error(format!("cannot run `{tool}`")))?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push('\n');
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Ok(Captured {
        code: output.status.code(),
        status: output.status.to_string(),
        text,
    })
}

/// Runs a tool that must succeed.
fn run_tool(tool: &'static str, path: &Path, command: Command) -> Result<(), DataError> {
    let output = capture(tool, command)?;
    if output.code == Some(0) {
        return Ok(());
    }
    Err(DataError::Tool {
        tool,
        path: path.to_owned(),
        status: output.status,
        output: summarize(&output.text),
    })
}

/// `tool` from `PATH`, else `/usr/sbin` or `/sbin`.
fn find_tool(tool: &'static str) -> Result<PathBuf, DataError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(tool))
        .find(|candidate| crate::config::is_executable(candidate))
        .ok_or(DataError::ToolMissing { tool })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(text: &str) -> DataSize {
        text.parse().unwrap()
    }

    /// The host tools are a documented requirement of `nodeos run`; these
    /// tests need them too.
    #[test]
    fn default_path_is_beside_the_image_directory() {
        assert_eq!(
            default_path(Path::new("dist/hello.nodeos")),
            Path::new("dist/hello.data.img")
        );
        assert_eq!(
            default_path(Path::new("dist/hello.nodeos/")),
            Path::new("dist/hello.data.img")
        );
        assert_eq!(
            default_path(Path::new("/srv/images/api")),
            Path::new("/srv/images/api.data.img")
        );
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("x.nodeos");
        std::fs::create_dir(&image).unwrap();
        assert_eq!(
            default_path(&image.join(".")),
            dir.path().canonicalize().unwrap().join("x.data.img")
        );
    }

    #[test]
    fn summaries_are_one_short_line() {
        let out = "e2fsck 1.47.0 (5-Feb-2023)\n\nnodeos-data was not cleanly unmounted, check forced.\n\
                   nodeos-data: 11/16384 files (0.0% non-contiguous), 9513/65536 blocks\n";
        assert_eq!(
            summarize(out),
            "nodeos-data was not cleanly unmounted, check forced. \
             nodeos-data: 11/16384 files (0.0% non-contiguous), 9513/65536 blocks"
        );
        assert_eq!(summarize("a\tb\r\n\x1b c"), "a b c");
        let long = summarize(&"é".repeat(2000));
        assert!(long.len() <= MAX_CHECK_SUMMARY / 2, "{}", long.len());
        assert!(long.ends_with('…'));
    }

    #[test]
    fn lock_holders_are_found_in_proc_locks() {
        // dev 8:1 (0x801), inode 1234.
        let locks = "1: FLOCK  ADVISORY  WRITE 77 08:01:1234 0 EOF\n\
                     2: OFDLCK ADVISORY  READ  -1 08:01:1234 100 100\n";
        assert_eq!(fcntl_lock_holder(locks, 0x801, 1234), Some(None));
        assert_eq!(fcntl_lock_holder(locks, 0x801, 1235), None);
        assert_eq!(fcntl_lock_holder(locks, 0x802, 1234), None);
        let locks = "3: POSIX  ADVISORY  WRITE 4242 fd:00:99 0 EOF\n\
                     3: -> POSIX  ADVISORY  WRITE 4343 fd:00:99 0 EOF\n";
        assert_eq!(fcntl_lock_holder(locks, 0xfd00, 99), Some(Some(4242)));
        assert_eq!(
            fcntl_lock_holder("1: FLOCK ADVISORY WRITE 1 fd:00:99 0 EOF", 0xfd00, 99),
            None
        );
        assert_eq!(fcntl_lock_holder("garbage\n\n", 0, 0), None);
    }

    #[test]
    fn superblock_size_needs_the_ext4_magic() {
        assert_eq!(superblock_size(&[0u8; 2048]), None);
        assert_eq!(superblock_size(&[0u8; 100]), None);
        let mut head = vec![0u8; 2048];
        head[1024 + 0x38..][..2].copy_from_slice(&0xEF53u16.to_le_bytes());
        head[1024 + 0x18..][..4].copy_from_slice(&2u32.to_le_bytes());
        head[1024 + 0x04..][..4].copy_from_slice(&1000u32.to_le_bytes());
        assert_eq!(superblock_size(&head), Some(4096 * 1000));
        head[1024 + 0x60..][..4].copy_from_slice(&0x80u32.to_le_bytes());
        head[1024 + 0x150..][..4].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(superblock_size(&head), Some(4096 * (1000 + (1 << 32))));
    }

    #[test]
    fn a_new_volume_is_created_checked_grown_and_never_shrunk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.data.img");
        let (volume, opened, check) =
            DataVolume::open(&path, SizeRequest::AtLeast(size("16M"))).unwrap();
        assert_eq!(opened, Opened::Created);
        assert_eq!(check.status, CheckStatus::Clean, "{check:?}");
        assert_eq!(volume.size(), 16 << 20);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 16 << 20);
        assert!(meta.blocks() * 512 < 16 << 20, "the file is sparse");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
        // Locked while `volume` lives.
        let err = DataVolume::open(&path, SizeRequest::AtLeast(size("16M"))).unwrap_err();
        assert!(matches!(err, DataError::InUse { .. }), "{err}");
        assert!(err.to_string().contains("another `nodeos run`"), "{err}");
        drop(volume);

        let (volume, opened, _) =
            DataVolume::open(&path, SizeRequest::Exactly(size("24M"))).unwrap();
        assert_eq!(opened, Opened::Grown { from: 16 << 20 });
        assert_eq!(volume.size(), 24 << 20);
        drop(volume);
        let (_, opened, check) =
            DataVolume::open(&path, SizeRequest::AtLeast(size("16M"))).unwrap();
        assert_eq!(opened, Opened::Existing, "a larger volume is kept");
        assert_eq!(check.status, CheckStatus::Clean);
    }

    #[test]
    fn shrinking_is_refused_and_leaves_the_volume_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.img");
        drop(DataVolume::open(&path, SizeRequest::AtLeast(size("20M"))).unwrap());
        let before = std::fs::read(&path).unwrap();
        let err = DataVolume::open(&path, SizeRequest::Exactly(size("16M"))).unwrap_err();
        assert!(matches!(err, DataError::Shrink { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("holds 20MiB, more than the 16MiB asked for"),
            "{text}"
        );
        assert!(
            text.contains("shrinking a volume is not supported"),
            "{text}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn a_file_that_is_not_ext4_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.txt");
        std::fs::write(&path, "my notes\n").unwrap();
        let err = DataVolume::open(&path, SizeRequest::AtLeast(size("16M"))).unwrap_err();
        assert!(matches!(err, DataError::NotExt4 { .. }), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"my notes\n");
    }

    #[test]
    fn the_check_reports_repairs_and_failures() {
        let debugfs = |path: &Path, request: &str| {
            let status = Command::new(find_tool("debugfs").unwrap())
                .args(["-w", "-R", request])
                .arg(path)
                .stderr(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success());
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.img");
        drop(DataVolume::open(&path, SizeRequest::AtLeast(size("16M"))).unwrap());
        // Marked as having errors: e2fsck -p checks and finds nothing to fix
        // beyond the flag.
        debugfs(&path, "ssv state 2");
        let (volume, _, check) =
            DataVolume::open(&path, SizeRequest::AtLeast(size("16M"))).unwrap();
        assert_eq!(check.status, CheckStatus::Repaired, "{check:?}");
        assert!(check.summary.contains("check forced"), "{check:?}");
        drop(volume);
        // The root directory's inode wiped: preening cannot fix that.
        debugfs(&path, "clri <2>");
        debugfs(&path, "ssv state 0");
        let (volume, _, check) =
            DataVolume::open(&path, SizeRequest::AtLeast(size("16M"))).unwrap();
        assert_eq!(check.status, CheckStatus::Failed, "{check:?}");
        assert!(check.summary.contains("RUN fsck MANUALLY"), "{check:?}");
        drop(volume);
        // Growing a volume that fails its check is refused.
        let err = DataVolume::open(&path, SizeRequest::AtLeast(size("20M"))).unwrap_err();
        assert!(matches!(err, DataError::GrowUnchecked { .. }), "{err}");
        assert!(err.to_string().contains("e2fsck -fy"), "{err}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 16 << 20);
    }

    #[test]
    fn a_failed_creation_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-dir").join("v.img");
        let err = DataVolume::open(&missing, SizeRequest::AtLeast(size("16M"))).unwrap_err();
        assert!(
            matches!(err, DataError::Io { .. } | DataError::ToolMissing { .. }),
            "{err}"
        );
        assert!(!missing.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
