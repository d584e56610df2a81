//! `nodeos status URL`: what a running appliance runs and how its last
//! update went. The status is the command's data, so it goes to stdout.

use std::fmt::Write as _;
use std::path::PathBuf;

use nodeos_manifest::slots::{Slot, SlotStatus};
use nodeos_manifest::update::{Status, SystemStatus};

use crate::agent_client::{Client, Endpoint, printable};
use crate::deploy::human_bytes as bytes;
use crate::exit::Exit;
use crate::ui::Ui;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The appliance's update agent: http://HOST:PORT (port default 7070).
    #[arg(value_name = "URL")]
    url: String,
    /// The private key that signs the request [default:
    /// $XDG_CONFIG_HOME/nodeos/update-key.pem, else
    /// ~/.config/nodeos/update-key.pem].
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Print the status as JSON (the agent's `GET /v1/status` answer).
    #[arg(long)]
    json: bool,
}

pub fn run(args: StatusArgs, _ui: &Ui) -> anyhow::Result<Exit> {
    let endpoint = Endpoint::parse(&args.url)?;
    let (key, _) = crate::agent_client::signing_key(args.key)?;
    let status = Client::new(endpoint, key).status()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", table(&status));
    }
    Ok(Exit::Success)
}

/// The status as `name  value` lines.
fn table(status: &Status) -> String {
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut row = |name: &str, value: String| rows.push((name.to_owned(), value));
    row("appliance", printable(&status.appliance));
    row(
        "version",
        format!(
            "{} (slot {}{})",
            printable(&status.version),
            status.slot,
            if status.trial { ", on trial" } else { "" }
        ),
    );
    row("uptime", duration(status.uptime_s));
    let app = &status.app;
    let mut value = format!(
        "{} (generation {}, {} restart{}",
        printable(&app.state),
        app.generation,
        app.restarts,
        if app.restarts == 1 { "" } else { "s" }
    );
    if let Some(exit) = &app.last_exit {
        let _ = write!(value, "; last exit: {}", printable(exit));
    }
    value.push(')');
    row("app", value);
    row(
        "health",
        status
            .health
            .as_deref()
            .map_or_else(|| "not checked on this boot".to_owned(), printable),
    );
    if let Some(sys) = &status.system {
        system_rows(sys, &mut row);
    }
    for slot in [Slot::A, Slot::B] {
        let value = match status.slots.get(&slot) {
            None => "unknown".to_owned(),
            Some(info) if info.status == SlotStatus::Empty => "empty".to_owned(),
            Some(info) => format!("{}, {}", info.status.as_str(), printable(&info.version)),
        };
        row(&format!("slot {slot}"), value);
    }
    if let Some(last) = &status.last_update {
        let mut value = format!(
            "{}, {} → {} in slot {}",
            last.result.as_str(),
            printable(&last.from),
            printable(&last.to),
            last.slot
        );
        if !last.reason.is_empty() {
            let _ = write!(value, ": {}", printable(&last.reason));
        }
        row("last update", value);
    } else {
        row("last update", "none".to_owned());
    }
    let width = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(name, value)| format!("{name:<width$}  {value}\n"))
        .collect()
}

/// The rows of the resource use.
fn system_rows(sys: &SystemStatus, row: &mut impl FnMut(&str, String)) {
    if let Some(boot) = sys.boot_ms {
        row(
            "boot",
            format!("app started {:.2} s after the kernel", boot as f64 / 1000.0),
        );
    }
    row(
        "memory",
        format!(
            "{} available of {}; app {}, init {} resident",
            bytes(sys.memory_available),
            bytes(sys.memory_total),
            bytes(sys.app_rss),
            bytes(sys.init_rss)
        ),
    );
    row(
        "cpu",
        format!(
            "app {:.1} s, all {:.1} s{}",
            sys.app_cpu_ms as f64 / 1000.0,
            sys.cpu_ms as f64 / 1000.0,
            if sys.oom_kills > 0 {
                format!("; {} OOM kill(s)", sys.oom_kills)
            } else {
                String::new()
            }
        ),
    );
    row(
        "data",
        sys.data.map_or_else(
            || "no volume".to_owned(),
            |d| {
                format!(
                    "{} used of {}, {} free",
                    bytes(d.used),
                    bytes(d.size),
                    bytes(d.available)
                )
            },
        ),
    );
    for net in &sys.network {
        row(
            &format!("net {}", printable(&net.name)),
            format!("{} in, {} out", bytes(net.rx_bytes), bytes(net.tx_bytes)),
        );
    }
    let mut log = format!("{} lines", sys.log.lines);
    if let Some(syslog) = &sys.log.syslog {
        let _ = write!(
            log,
            "; syslog {} {}: {} sent, {} dropped",
            printable(&syslog.target),
            if syslog.connected { "up" } else { "down" },
            syslog.sent,
            syslog.dropped
        );
    }
    row("log", log);
}

/// `45 s`, `12 min 5 s`, `3 h 02 min`, `4 d 7 h`.
fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s} s"),
        (0, 0, _) => format!("{m} min {s} s"),
        (0, _, _) => format!("{h} h {m:02} min"),
        _ => format!("{d} d {h} h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(45), "45 s");
        assert_eq!(duration(725), "12 min 5 s");
        assert_eq!(duration(3 * 3600 + 120), "3 h 02 min");
        assert_eq!(duration(4 * 86_400 + 7 * 3600 + 59), "4 d 7 h");
    }
}
