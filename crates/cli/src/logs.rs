//! `nodeos logs URL`: the app's and init's log lines from a running
//! appliance's log ring, and with `--follow` the new ones as they come,
//! across reboots (an update) until Ctrl-C. Lines are the command's data:
//! stdout.

use std::io::{self, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nodeos_manifest::LogFormat;
use nodeos_manifest::console::{Record, parse_rfc3339_millis};
use nodeos_manifest::update::LOGS_PATH;

use crate::agent_client::{AgentError, Client, Endpoint, printable};
use crate::exit::Exit;
use crate::ui::Ui;

/// How long a followed log may be gone (the appliance rebooting into an
/// update) before `logs --follow` gives up.
const RECONNECT_FOR: Duration = Duration::from_secs(300);

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The appliance's update agent: http://HOST:PORT (port default 7070).
    #[arg(value_name = "URL")]
    url: String,
    /// Keep printing new lines as they are logged (until Ctrl-C).
    #[arg(short, long)]
    follow: bool,
    /// Only lines since then: a duration back from now (30s, 10m, 2h, 1d)
    /// or a time (2026-11-27T10:00:00Z).
    #[arg(long, value_name = "WHEN", value_parser = parse_since)]
    since: Option<Since>,
    /// Only the last N lines (before following).
    #[arg(short = 'n', long, value_name = "N")]
    tail: Option<u64>,
    /// Print each line as the guest's JSON log record.
    #[arg(long)]
    json: bool,
    /// The private key that signs the request [default:
    /// $XDG_CONFIG_HOME/nodeos/update-key.pem, else
    /// ~/.config/nodeos/update-key.pem].
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
}

/// `--since`: how far back, or from when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Since {
    Ago(Duration),
    UnixMs(u64),
}

fn parse_since(text: &str) -> Result<Since, String> {
    // With or without milliseconds.
    let with_ms = match text.strip_suffix('Z') {
        Some(whole) if text.len() == 20 => format!("{whole}.000Z"),
        _ => text.to_owned(),
    };
    if let Some(ms) = parse_rfc3339_millis(&with_ms) {
        return Ok(Since::UnixMs(ms));
    }
    match crate::duration::parse(text) {
        Some(ago) => Ok(Since::Ago(ago)),
        None => Err(
            "give a duration back from now (30s, 10m, 2h, 1d) or a UTC time (2026-11-27T10:00:00Z)"
                .into(),
        ),
    }
}

pub fn run(args: LogsArgs, ui: &Ui) -> anyhow::Result<Exit> {
    let endpoint = Endpoint::parse(&args.url)?;
    let (key, _) = crate::agent_client::signing_key(args.key)?;
    let client = Client::new(endpoint, key);
    let since_ms = match args.since {
        None => 0,
        Some(Since::UnixMs(ms)) => ms,
        Some(Since::Ago(ago)) => now_ms().saturating_sub(ago.as_millis() as u64),
    };
    let mut printer = Printer::new(args.json);
    let mut tail = args.tail;
    let mut gone_since: Option<Instant> = None;
    loop {
        // After a reconnection: from the last line's millisecond on,
        // skipping the lines of that millisecond already printed.
        let from = printer.resume().unwrap_or(since_ms);
        let mut target = format!("{LOGS_PATH}?since={from}");
        if let Some(n) = tail {
            target.push_str(&format!("&tail={n}"));
        }
        if args.follow {
            target.push_str("&follow=1");
        }
        let timeout = if args.follow {
            // The agent sends an empty line every 15 s.
            Duration::from_secs(60)
        } else {
            Duration::from_secs(30)
        };
        let received = printer.received;
        let result = client.stream("GET", &target, timeout, &mut |data| printer.feed(data));
        printer.flush_partial();
        if printer.received > received {
            // It was back: an outage counts from its own start.
            gone_since = None;
        }
        match result {
            Ok(()) if !args.follow => return Ok(Exit::Success),
            Err(AgentError::Output { source, .. })
                if source.kind() == io::ErrorKind::BrokenPipe =>
            {
                // stdout closed (`| head`): done.
                return Ok(Exit::Success);
            }
            Err(e @ AgentError::Output { .. }) => return Err(e.into()),
            Err(e) if !args.follow || e.refused() => return Err(e.into()),
            // The agent ended a followed log (it is shutting down): again.
            Ok(()) => std::thread::sleep(Duration::from_secs(1)),
            Err(e) => {
                let since = *gone_since.get_or_insert_with(Instant::now);
                if since.elapsed() > RECONNECT_FOR {
                    return Err(anyhow::Error::new(e).context(format!(
                        "the appliance was gone for over {} s",
                        RECONNECT_FOR.as_secs()
                    )));
                }
                if since.elapsed() < Duration::from_millis(100) {
                    ui.note(&format!(
                        "{}; reconnecting (the appliance may be rebooting)",
                        crate::format_chain(&anyhow::Error::new(e))
                    ));
                }
                std::thread::sleep(Duration::from_secs(1));
                tail = None;
                continue;
            }
        }
        gone_since = None;
        tail = None;
    }
}

/// Prints whole records as they arrive in pieces.
struct Printer {
    json: bool,
    /// A line not yet ended by a newline.
    partial: Vec<u8>,
    /// Time of the last record printed.
    last_ms: Option<u64>,
    /// How many records of that millisecond were printed.
    at_last_ms: usize,
    /// How many records of `last_ms` to skip: printed before a reconnection.
    skip: usize,
    /// Bytes received so far.
    received: u64,
}

impl Printer {
    fn new(json: bool) -> Printer {
        Printer {
            json,
            partial: Vec::new(),
            last_ms: None,
            at_last_ms: 0,
            skip: 0,
            received: 0,
        }
    }

    /// Where to ask from again after the connection ended: the time of the
    /// last record printed, whose records so far are then skipped.
    fn resume(&mut self) -> Option<u64> {
        self.skip = self.at_last_ms;
        self.last_ms
    }

    fn feed(&mut self, data: &[u8]) -> io::Result<()> {
        self.received += data.len() as u64;
        self.partial.extend_from_slice(data);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return Ok(());
        };
        let whole: Vec<u8> = self.partial.drain(..=end).collect();
        let mut out = io::stdout().lock();
        for line in String::from_utf8_lossy(&whole).lines() {
            self.print(&mut out, line)?;
        }
        out.flush()
    }

    fn flush_partial(&mut self) {
        // A record cut short by a broken connection is dropped: it comes
        // again after the reconnection, or never was whole.
        self.partial.clear();
    }

    fn print(&mut self, out: &mut impl Write, line: &str) -> io::Result<()> {
        if line.trim().is_empty() {
            return Ok(()); // a keep-alive
        }
        match Record::parse(line) {
            Some(record) => {
                let again = Some(record.unix_ms) == self.last_ms;
                if again && self.skip > 0 {
                    self.skip -= 1;
                    return Ok(());
                }
                self.skip = 0;
                if self.json {
                    writeln!(out, "{}", record.format(LogFormat::Json))?;
                } else {
                    writeln!(out, "{}", printable(&record.format(LogFormat::Text)))?;
                }
                if again {
                    self.at_last_ms += 1;
                } else {
                    self.last_ms = Some(record.unix_ms);
                    self.at_last_ms = 1;
                }
                Ok(())
            }
            None => writeln!(out, "{}", printable(line)),
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_and_times() {
        assert_eq!(parse_since("30s"), Ok(Since::Ago(Duration::from_secs(30))));
        assert_eq!(parse_since("10m"), Ok(Since::Ago(Duration::from_secs(600))));
        assert_eq!(parse_since("2h"), Ok(Since::Ago(Duration::from_secs(7200))));
        assert_eq!(
            parse_since("1d"),
            Ok(Since::Ago(Duration::from_secs(86_400)))
        );
        let at = Ok(Since::UnixMs(1_795_773_600_000));
        assert_eq!(parse_since("2026-11-27T10:00:00.000Z"), at);
        assert_eq!(parse_since("2026-11-27T10:00:00Z"), at);
        for bad in ["", "10", "m", "10 m", "-5s", "yesterday"] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn records_are_printed_whole_whatever_the_pieces() {
        let mut printer = Printer::new(false);
        let line = r#"{"time":"2026-11-27T10:00:00.000Z","source":"app","generation":1,"stream":"stdout","message":"hi"}"#;
        let mut out = Vec::new();
        printer.print(&mut out, line).unwrap();
        printer.print(&mut out, "").unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-11-27T10:00:00.000Z app[1] out: hi\n"
        );
        assert_eq!(printer.last_ms, Some(1_795_773_600_000));
    }

    #[test]
    fn a_reconnection_goes_on_after_the_last_line_printed() {
        let record = |ms: u32, text: &str| {
            format!(
                r#"{{"time":"2026-11-27T10:00:00.{ms:03}Z","source":"app","generation":1,"stream":"stdout","message":"{text}"}}"#
            )
        };
        let mut printer = Printer::new(false);
        let mut out = Vec::new();
        for (ms, text) in [(1, "a"), (2, "b"), (2, "c")] {
            printer.print(&mut out, &record(ms, text)).unwrap();
        }
        // The agent answers from the same millisecond on: b and c again,
        // then d of that millisecond, logged while disconnected, and e.
        assert_eq!(printer.resume(), Some(1_795_773_600_002));
        for (ms, text) in [(2, "b"), (2, "c"), (2, "d"), (3, "e")] {
            printer.print(&mut out, &record(ms, text)).unwrap();
        }
        let messages: Vec<String> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|line| line.rsplit(' ').next().unwrap().to_owned())
            .collect();
        assert_eq!(messages, ["a", "b", "c", "d", "e"]);
        // Again, with nothing new: nothing is printed twice.
        let mut out = Vec::new();
        printer.resume();
        printer.print(&mut out, &record(3, "e")).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn a_line_that_cannot_be_written_is_not_counted_as_printed() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from(io::ErrorKind::StorageFull))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut printer = Printer::new(true);
        let line = r#"{"time":"2026-11-27T10:00:00.000Z","source":"app","generation":1,"stream":"stdout","message":"hi"}"#;
        assert!(printer.print(&mut Full, line).is_err());
        assert_eq!(printer.last_ms, None);
    }
}
