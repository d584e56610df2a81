//! The kernel: nodeos's own minimal build, or a bzImage the user names.
//!
//! The project kernel is built from a pinned source tarball (Debian's
//! `linux-source-6.1` package) with `kernel/nodeos.config` applied on top of
//! `tinyconfig` by `kernel/build.sh`. Both files are compiled into this
//! crate, so an installed `nodeos` needs no checkout. The result is cached
//! under `<cache>/kernel/<key>/`, where the key hashes the source tarball,
//! the config fragment and the build script: change any of them and the
//! kernel is rebuilt, otherwise it never is.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use crate::Reporter;

/// The config fragment applied on top of `tinyconfig`.
pub const CONFIG_FRAGMENT: &str = include_str!("../../../kernel/nodeos.config");
/// The build recipe (POSIX shell).
pub const BUILD_SCRIPT: &str = include_str!("../../../kernel/build.sh");
/// Where Debian's `linux-source-6.1` package puts the pinned source.
pub const DEFAULT_SOURCE: &str = "/usr/src/linux-source-6.1.tar.xz";
/// Environment variable naming another source tarball.
pub const SOURCE_ENV: &str = "NODEOS_KERNEL_SOURCE";

/// A kernel ready to be put into an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// The bzImage file.
    pub path: PathBuf,
    /// The release string from the bzImage header (e.g. `6.1.192`).
    pub version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(
        "{path} is not a Linux kernel (no bzImage header); pass a bzImage to --kernel, or omit it to use nodeos's own kernel"
    )]
    NotAKernel { path: PathBuf },
    #[error("cannot read kernel {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "kernel source {path} not found; install it with `apt-get install linux-source-6.1`, set {SOURCE_ENV}, or pass --kernel"
    )]
    SourceMissing { path: PathBuf },
    #[error("the kernel build failed (full log: {log}); last lines:\n{tail}")]
    BuildFailed { log: PathBuf, tail: String },
    #[error(
        "building the kernel needs {}, which {} not installed; install them with `apt-get install make gcc flex bison bc libelf-dev xz-utils` (scripts/setup does)",
        missing.join(", "),
        if missing.len() == 1 { "is" } else { "are" }
    )]
    ToolsMissing { missing: Vec<String> },
    #[error("cannot run the kernel build script")]
    Spawn { source: std::io::Error },
    #[error("kernel cache {path}")]
    Cache {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Reads the release string from a bzImage's setup header.
///
/// Checks the `HdrS` magic at offset 0x202 and follows the `kernel_version`
/// pointer at 0x20e (relative to 0x200), as the x86 boot protocol defines.
pub fn inspect(path: &Path) -> Result<Kernel, KernelError> {
    let read_err = |source| KernelError::Read {
        path: path.to_owned(),
        source,
    };
    let not_kernel = || KernelError::NotAKernel {
        path: path.to_owned(),
    };
    let mut file = File::open(path).map_err(read_err)?;
    let mut header = [0u8; 0x210];
    if file.read_exact(&mut header).is_err() || &header[0x202..0x206] != b"HdrS" {
        return Err(not_kernel());
    }
    let offset = u16::from_le_bytes([header[0x20e], header[0x20f]]);
    if offset == 0 {
        return Err(not_kernel());
    }
    let mut text = [0u8; 128];
    file.seek(SeekFrom::Start(0x200 + u64::from(offset)))
        .map_err(read_err)?;
    let n = file.read(&mut text).map_err(read_err)?;
    let text = &text[..n];
    let end = text
        .iter()
        .position(|&b| b == 0 || b == b' ')
        .unwrap_or(text.len());
    let version = std::str::from_utf8(&text[..end]).map_err(|_| not_kernel())?;
    if version.is_empty() {
        return Err(not_kernel());
    }
    Ok(Kernel {
        path: path.to_owned(),
        version: version.to_owned(),
    })
}

/// Returns nodeos's own kernel, building it first if it is not cached.
pub fn project_kernel(cache: &Path, reporter: &dyn Reporter) -> Result<Kernel, KernelError> {
    let source = std::env::var_os(SOURCE_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOURCE));
    if !source.is_file() {
        return Err(KernelError::SourceMissing { path: source });
    }
    let key = cache_key(&source)?;
    let root = cache.join("kernel");
    let entry = root.join(&key);
    let bzimage = entry.join("bzImage");
    if bzimage.is_file() {
        return inspect(&bzimage);
    }

    let cache_err = |path: &Path| {
        let path = path.to_owned();
        move |source| KernelError::Cache { path, source }
    };
    fs::create_dir_all(&root).map_err(cache_err(&root))?;
    let lock_path = root.join(format!("{key}.lock"));
    let lock = File::create(&lock_path).map_err(cache_err(&lock_path))?;
    if lock.try_lock().is_err() {
        reporter.status("Waiting", "for another nodeos process building the kernel");
        lock.lock().map_err(cache_err(&lock_path))?;
    }
    if bzimage.is_file() {
        return inspect(&bzimage);
    }

    let missing: Vec<String> = BUILD_TOOLS
        .iter()
        .filter(|tool| !on_path(tool))
        .map(|tool| tool.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(KernelError::ToolsMissing { missing });
    }
    reporter.status(
        "Building",
        "the nodeos kernel (first time only; 10 to 15 minutes on 2 cores, then cached)",
    );
    let work = root.join(format!(".build-{key}"));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(cache_err(&work))?;
    let script = work.join("build.sh");
    let fragment = work.join("nodeos.config");
    fs::write(&script, BUILD_SCRIPT).map_err(cache_err(&script))?;
    fs::write(&fragment, CONFIG_FRAGMENT).map_err(cache_err(&fragment))?;
    let out = work.join("out");
    fs::create_dir_all(&out).map_err(cache_err(&out))?;
    let log_path = root.join(format!("{key}.log"));
    let started = std::time::Instant::now();
    if let Err(e) = run_build(&script, &source, &fragment, &out, &log_path, reporter) {
        // The extracted source tree is over a gigabyte; never leave it behind.
        let _ = fs::remove_dir_all(&work);
        return Err(e);
    }

    let built = inspect(&out.join("bzImage"))?;
    // Keep only the artefacts; the source tree was removed by the script.
    fs::rename(&out, &entry).map_err(cache_err(&entry))?;
    let _ = fs::remove_dir_all(&work);
    reporter.status(
        "Built",
        &format!(
            "kernel {} in {}s",
            built.version,
            started.elapsed().as_secs()
        ),
    );
    Ok(Kernel {
        path: bzimage,
        version: built.version,
    })
}

/// Commands `kernel/build.sh` runs (besides POSIX basics).
const BUILD_TOOLS: &[&str] = &["make", "gcc", "flex", "bison", "bc", "tar", "xz"];

fn on_path(command: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(command).is_file()))
}

/// Runs the build script, streaming its output into a log and counting
/// compiled objects on the progress display.
fn run_build(
    script: &Path,
    source: &Path,
    fragment: &Path,
    out: &Path,
    log_path: &Path,
    reporter: &dyn Reporter,
) -> Result<(), KernelError> {
    let mut log = File::create(log_path).map_err(|source| KernelError::Cache {
        path: log_path.to_owned(),
        source,
    })?;
    let mut child = Command::new("sh")
        .arg(script)
        .args([source, fragment, out])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| KernelError::Spawn { source })?;
    // Merge stderr into the log from a second thread so neither pipe fills up.
    let stderr = child.stderr.take().expect("stderr is piped");
    let err_lines = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let progress = reporter.progress("kernel objects compiled", None);
    let stdout = child.stdout.take().expect("stdout is piped");
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        let _ = writeln!(log, "{line}");
        if line.trim_start().starts_with("CC") {
            progress.inc(1);
        }
    }
    progress.finish();
    let status = child
        .wait()
        .map_err(|source| KernelError::Spawn { source })?;
    let err_lines = err_lines.join().unwrap_or_default();
    for line in &err_lines {
        let _ = writeln!(log, "{line}");
    }
    if status.success() {
        return Ok(());
    }
    let tail = err_lines
        .iter()
        .rev()
        .take(15)
        .rev()
        .cloned()
        .collect::<Vec<_>>()
        .join("\n");
    Err(KernelError::BuildFailed {
        log: log_path.to_owned(),
        tail,
    })
}

/// Hash of everything that determines the kernel's bytes.
fn cache_key(source: &Path) -> Result<String, KernelError> {
    let read_err = |e| KernelError::Read {
        path: source.to_owned(),
        source: e,
    };
    let mut hasher = Sha256::new();
    let mut file = File::open(source).map_err(read_err)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(read_err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hasher.update(b"\0fragment\0");
    hasher.update(CONFIG_FRAGMENT.as_bytes());
    hasher.update(b"\0script\0");
    hasher.update(BUILD_SCRIPT.as_bytes());
    let digest = hasher.finalize();
    Ok(crate::hex(&digest[..12]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_bzimage(version: &str) -> Vec<u8> {
        let mut image = vec![0u8; 0x400];
        image[0x202..0x206].copy_from_slice(b"HdrS");
        let offset: u16 = 0x100;
        image[0x20e..0x210].copy_from_slice(&offset.to_le_bytes());
        let at = 0x200 + usize::from(offset);
        let text = format!("{version} (nodeos@nodeos) #1\0");
        image[at..at + text.len()].copy_from_slice(text.as_bytes());
        image
    }

    #[test]
    fn inspect_reads_the_release_from_the_setup_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bzImage");
        fs::write(&path, fake_bzimage("6.1.192")).unwrap();
        assert_eq!(inspect(&path).unwrap().version, "6.1.192");
    }

    #[test]
    fn inspect_rejects_files_that_are_not_kernels() {
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in [("short", b"hello".to_vec()), ("zeros", vec![0u8; 4096])] {
            let path = dir.path().join(name);
            fs::write(&path, bytes).unwrap();
            let err = inspect(&path).unwrap_err();
            assert!(
                matches!(err, KernelError::NotAKernel { .. }),
                "{name}: {err}"
            );
        }
    }

    /// Runs build.sh's Kconfig check on `config` (a `.config`'s text).
    fn check_config(config: &str) -> std::process::Output {
        let dir = tempfile::tempdir().unwrap();
        let (script, fragment, dot_config) = (
            dir.path().join("build.sh"),
            dir.path().join("fragment"),
            dir.path().join("config"),
        );
        fs::write(&script, BUILD_SCRIPT).unwrap();
        fs::write(&fragment, CONFIG_FRAGMENT).unwrap();
        fs::write(&dot_config, config).unwrap();
        Command::new("sh")
            .arg(&script)
            .arg("--check-config")
            .args([&fragment, &dot_config])
            .output()
            .unwrap()
    }

    fn fragment_options() -> Vec<&'static str> {
        CONFIG_FRAGMENT
            .lines()
            .filter(|l| l.starts_with("CONFIG_"))
            .collect()
    }

    #[test]
    fn build_sh_accepts_a_config_with_every_fragment_option() {
        let config = format!(
            "# generated\n{}\nCONFIG_EXTRA=y\n",
            fragment_options().join("\n")
        );
        let out = check_config(&config);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn build_sh_refuses_a_config_where_kconfig_dropped_an_option() {
        // What Kconfig writes when MEMBARRIER's dependencies are unmet: V8
        // would then abort at start ("Check failed: 0 == ret").
        let config = fragment_options()
            .iter()
            .map(|l| {
                if *l == "CONFIG_MEMBARRIER=y" {
                    "# CONFIG_MEMBARRIER is not set"
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let out = check_config(&config);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("CONFIG_MEMBARRIER=y"), "{stderr}");
        assert!(!stderr.contains("CONFIG_ADVISE_SYSCALLS"), "{stderr}");
    }
}
