//! `nodeos profile URL --cpu 10s | --heap`: a CPU profile (`.cpuprofile`)
//! or a heap snapshot (`.heapsnapshot`) of the running app, taken by the
//! appliance through Node's inspector (opened on the guest's loopback for
//! the profile only) and written to a file that Chrome DevTools opens.
//! The file is written beside its final name and renamed when whole; an
//! interrupted profile (Ctrl-C, SIGTERM) leaves nothing and exits 130.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;
use nodeos_manifest::update::PROFILE_PATH;

use crate::agent_client::{Client, Endpoint};
use crate::exit::{Exit, fail};
use crate::ui::Ui;

/// Longest CPU profile the agent takes.
const MAX_CPU_S: u64 = 300;

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("kind").required(true).args(["cpu", "heap"])))]
pub struct ProfileArgs {
    /// The appliance's update agent: http://HOST:PORT (port default 7070).
    #[arg(value_name = "URL")]
    url: String,
    /// Sample the app's CPU for this long (1s to 300s; 10s, 1m) into a .cpuprofile.
    #[arg(long, value_name = "DURATION", value_parser = parse_seconds)]
    cpu: Option<u64>,
    /// Take a heap snapshot into a .heapsnapshot (the app pauses while it is taken).
    #[arg(long)]
    heap: bool,
    /// The file to write [default: <appliance>-<unix time>.cpuprofile or .heapsnapshot
    /// in the current directory].
    #[arg(short, long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// The private key that signs the request [default:
    /// $XDG_CONFIG_HOME/nodeos/update-key.pem, else
    /// ~/.config/nodeos/update-key.pem].
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
}

fn parse_seconds(text: &str) -> Result<u64, String> {
    // A bare number is seconds.
    let with_unit = if text.bytes().all(|b| b.is_ascii_digit()) {
        format!("{text}s")
    } else {
        text.to_owned()
    };
    crate::duration::parse(&with_unit)
        .filter(|d| d.subsec_nanos() == 0 && (1..=MAX_CPU_S).contains(&d.as_secs()))
        .map(|d| d.as_secs())
        .ok_or_else(|| format!("give whole seconds from 1s to {MAX_CPU_S}s: 10s, 30s, 1m"))
}

pub fn run(args: ProfileArgs, ui: &Ui) -> anyhow::Result<Exit> {
    let endpoint = Endpoint::parse(&args.url)?;
    let (key, _) = crate::agent_client::signing_key(args.key)?;
    let client = Client::new(endpoint, key);
    let (target, suffix, what, timeout) = match args.cpu {
        Some(secs) => (
            format!("{PROFILE_PATH}?kind=cpu&seconds={secs}"),
            "cpuprofile",
            format!("a {secs} s CPU profile"),
            Duration::from_secs(secs + 60),
        ),
        None => (
            format!("{PROFILE_PATH}?kind=heap"),
            "heapsnapshot",
            "a heap snapshot".to_owned(),
            Duration::from_secs(300),
        ),
    };
    let out = match args.out {
        Some(out) => out,
        None => {
            let name = client.status()?.appliance;
            let safe: String = name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            PathBuf::from(format!("{safe}-{now}.{suffix}"))
        }
    };
    let staging = staging_path(&out, suffix)?;
    let file = File::create(&staging).map_err(|e| {
        fail(
            Exit::Output,
            format!("cannot write {}: {e}", staging.display()),
        )
    })?;
    ui.note(&format!("taking {what} of the app at {}…", client.url()));
    // The transfer runs in a thread, so that Ctrl-C or SIGTERM only sets a
    // flag here and the partial file is removed before exiting 130.
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&interrupted))?;
    }
    let (done_tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(transfer(&client, &target, timeout, file));
    });
    let result = loop {
        if interrupted.load(Ordering::SeqCst) {
            let _ = std::fs::remove_file(&staging);
            return Err(fail(
                Exit::Interrupted,
                format!("interrupted; {} was not written", out.display()),
            ));
        }
        match done.recv_timeout(Duration::from_millis(100)) {
            Ok(result) => break result,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break Err(anyhow::anyhow!("the transfer thread ended without a word"));
            }
        }
    };
    let bytes = match result.and_then(|bytes| {
        std::fs::rename(&staging, &out)
            .with_context(|| format!("cannot rename the profile to {}", out.display()))?;
        Ok(bytes)
    }) {
        Ok(bytes) => bytes,
        Err(e) => {
            let _ = std::fs::remove_file(&staging);
            return Err(e);
        }
    };
    ui.note(&format!(
        "wrote {} ({bytes} bytes); open it in Chrome DevTools ({})",
        out.display(),
        if suffix == "cpuprofile" {
            "Performance panel, Load profile"
        } else {
            "Memory panel, Load"
        }
    ));
    println!("{}", out.display());
    Ok(Exit::Success)
}

/// Streams the profile into `file` and syncs it; the bytes written.
fn transfer(client: &Client, target: &str, timeout: Duration, file: File) -> anyhow::Result<u64> {
    let mut writer = BufWriter::new(file);
    let mut bytes = 0u64;
    client.stream("POST", target, timeout, &mut |data| {
        bytes += data.len() as u64;
        writer.write_all(data)
    })?;
    let file = writer.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(bytes)
}

/// `<dir>/.<name>.partial`, in the output's directory (which must exist);
/// `suffix` is the kind of file, for the example when `out` is a directory.
fn staging_path(out: &Path, suffix: &str) -> anyhow::Result<PathBuf> {
    if out.is_dir() {
        return Err(fail(
            Exit::Output,
            format!(
                "--out {} is a directory; give the file to write, e.g. {}",
                out.display(),
                out.join(format!("app.{suffix}")).display()
            ),
        ));
    }
    let name = out.file_name().ok_or_else(|| {
        fail(
            Exit::Usage,
            format!("--out {} names no file", out.display()),
        )
    })?;
    let dir = match out.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(fail(
            Exit::Output,
            format!(
                "the directory {} does not exist: create it or choose another --out",
                dir.display()
            ),
        ));
    }
    Ok(dir.join(format!(".{}.partial", name.to_string_lossy())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_durations_are_bounded() {
        assert_eq!(parse_seconds("10s"), Ok(10));
        assert_eq!(parse_seconds("10"), Ok(10));
        assert_eq!(parse_seconds("2m"), Ok(120));
        for bad in ["0s", "301s", "6m", "x", ""] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
    }
}
