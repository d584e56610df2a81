//! What nodeos-init prints on the console (`/dev/console`, the first serial
//! port), and how the host reads it back.
//!
//! Every line init writes is a log record: init's own events and each line
//! of the app's stdout and stderr, with a UTC timestamp. Two formats, chosen
//! by the `logFormat` setting:
//!
//! * **text**: `2026-11-26T15:00:01.123Z nodeos-init: starting app` for
//!   init, `2026-11-26T15:00:01.512Z app[1] out: listening` for the app
//!   (`[1]` is the restart generation: 1 for the first start, 2 after the
//!   first restart, …; `out` or `err` is the stream).
//! * **json**: one object per line, `{"time":"…","source":"init","message":"starting app"}`
//!   or `{"time":"…","source":"app","generation":1,"stream":"stdout","message":"listening"}`.
//!
//! Marker lines (the constants below) are init messages that the VM runner
//! and the tests wait for. [`normalize`] turns a record of either format back
//! into its untimed text form (`nodeos-init: starting app`), so matching a
//! marker does not depend on the format or on the clock.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// Every init message starts with this in the text format.
pub const PREFIX: &str = "nodeos-init: ";
/// Printed once the network is up, just before node is started (every start).
pub const STARTING_APP: &str = "nodeos-init: starting app";
/// Printed just before init asks the kernel to power off.
pub const POWER_OFF: &str = "nodeos-init: powering off";
/// Printed just before init asks the kernel to reboot (after an update or a
/// rollback); under `nodeos run` QEMU then exits and the host boots the
/// slot the update state names.
pub const REBOOT: &str = "nodeos-init: rebooting";
/// Starts the line init prints when a new version passed its health check:
/// `nodeos-init: update committed: hello 1.0.0 → 1.0.1 (slot b)`.
pub const UPDATE_COMMITTED: &str = "nodeos-init: update committed";
/// Starts the line init prints when a new version failed its trial:
/// `nodeos-init: update rolled back: <reason>`.
pub const UPDATE_ROLLED_BACK: &str = "nodeos-init: update rolled back";
/// Starts the line init prints when the agent accepted an update and is
/// about to write it: `nodeos-init: update accepted: hello 1.0.1 (sequence N) into slot b`.
pub const UPDATE_ACCEPTED: &str = "nodeos-init: update accepted";
/// Printed when the power button (or SIGTERM to PID 1) asks for shutdown.
pub const SHUTDOWN_REQUESTED: &str = "nodeos-init: shutdown requested";

/// How the app's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppExit {
    /// Exited with this status code.
    Code(i32),
    /// Killed by this signal number.
    Signal(i32),
}

impl AppExit {
    pub fn success(self) -> bool {
        self == AppExit::Code(0)
    }
}

impl std::fmt::Display for AppExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppExit::Code(c) => write!(f, "exit code {c}"),
            AppExit::Signal(s) => write!(f, "signal {s}"),
        }
    }
}

const EXITED: &str = "nodeos-init: app exited ";

/// The message init prints when the app's process has ended.
pub fn app_exited_line(exit: AppExit) -> String {
    match exit {
        AppExit::Code(c) => format!("{EXITED}code={c}"),
        AppExit::Signal(s) => format!("{EXITED}signal={s}"),
    }
}

/// Parses a line printed by [`app_exited_line`] (in either log format, with
/// or without a timestamp); tolerates a trailing `\r`.
pub fn parse_app_exited(line: &str) -> Option<AppExit> {
    let line = normalize(line.trim_end_matches(['\r', '\n']));
    // The app's last output may lack a newline, putting the marker
    // mid-line: look for it anywhere, last occurrence wins.
    let rest = &line[line.rfind(EXITED)? + EXITED.len()..];
    // Anything after the number (e.g. `(OOM kill)`) is commentary.
    let number = |s: &str| {
        s.split(|c: char| !(c.is_ascii_digit() || c == '-'))
            .next()
            .and_then(|n| n.parse().ok())
    };
    if let Some(c) = rest.strip_prefix("code=") {
        return number(c).map(AppExit::Code);
    }
    number(rest.strip_prefix("signal=")?).map(AppExit::Signal)
}

/// Which of the app's output streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Who wrote a log record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// nodeos-init itself.
    Init,
    /// The app, in its `generation`-th start (1-based), on `stream`.
    App { generation: u32, stream: Stream },
}

/// One log record: a line of init's events or of the app's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Milliseconds since the Unix epoch (UTC).
    pub unix_ms: u64,
    pub source: Source,
    /// The line, without its newline; for init, without [`PREFIX`].
    pub message: String,
}

/// The console log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines: `TIME nodeos-init: …` / `TIME app[N] out: …`.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log format {other:?} (expected text or json)"
            )),
        }
    }
}

/// The JSON form of a record (field order is the output order).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRecord<'a> {
    time: Cow<'a, str>,
    source: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    generation: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stream: Option<Stream>,
    message: Cow<'a, str>,
}

impl Record {
    /// The record as one line (no newline) in `format`.
    pub fn format(&self, format: LogFormat) -> String {
        let time = rfc3339_millis(self.unix_ms);
        match format {
            LogFormat::Text => match self.source {
                Source::Init => format!("{time} {PREFIX}{}", self.message),
                Source::App { generation, stream } => {
                    let s = match stream {
                        Stream::Stdout => "out",
                        Stream::Stderr => "err",
                    };
                    format!("{time} app[{generation}] {s}: {}", self.message)
                }
            },
            LogFormat::Json => {
                let (source, generation, stream) = match self.source {
                    Source::Init => ("init", None, None),
                    Source::App { generation, stream } => ("app", Some(generation), Some(stream)),
                };
                let rec = JsonRecord {
                    time: time.into(),
                    source: source.into(),
                    generation,
                    stream,
                    message: self.message.as_str().into(),
                };
                serde_json::to_string(&rec).expect("a log record serialises")
            }
        }
    }

    /// Parses a line written by [`Record::format`] in either format; `None`
    /// for anything else (kernel messages, partial lines).
    pub fn parse(line: &str) -> Option<Record> {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.starts_with('{') {
            let rec: JsonRecord<'_> = serde_json::from_str(line).ok()?;
            let source = match (&*rec.source, rec.generation, rec.stream) {
                ("init", None, None) => Source::Init,
                ("app", Some(generation), Some(stream)) => Source::App { generation, stream },
                _ => return None,
            };
            return Some(Record {
                unix_ms: parse_rfc3339_millis(&rec.time)?,
                source,
                message: rec.message.into_owned(),
            });
        }
        let (time, rest) = line.split_once(' ')?;
        let unix_ms = parse_rfc3339_millis(time)?;
        if let Some(message) = rest.strip_prefix(PREFIX) {
            return Some(Record {
                unix_ms,
                source: Source::Init,
                message: message.to_owned(),
            });
        }
        let rest = rest.strip_prefix("app[")?;
        let (generation, rest) = rest.split_once("] ")?;
        let (stream, message) = if let Some(m) = rest.strip_prefix("out: ") {
            (Stream::Stdout, m)
        } else {
            (Stream::Stderr, rest.strip_prefix("err: ")?)
        };
        Some(Record {
            unix_ms,
            source: Source::App {
                generation: generation.parse().ok()?,
                stream,
            },
            message: message.to_owned(),
        })
    }
}

/// The untimed text form of a console line: init records become
/// `nodeos-init: MESSAGE`, app records their bare message; any other line
/// (kernel output, a line cut by the app's missing newline) is returned as is.
pub fn normalize(line: &str) -> Cow<'_, str> {
    match Record::parse(line) {
        Some(Record {
            source: Source::Init,
            message,
            ..
        }) => Cow::Owned(format!("{PREFIX}{message}")),
        Some(rec) => Cow::Owned(rec.message),
        None => Cow::Borrowed(line),
    }
}

/// `2026-11-26T15:00:01.123Z` for a time in milliseconds since the epoch.
pub fn rfc3339_millis(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        unix_ms % 1000
    )
}

/// Inverse of [`rfc3339_millis`] (exactly that shape, nothing more general).
pub fn parse_rfc3339_millis(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() != 24 || text.get(23..) != Some("Z") {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u64> {
        let s = text.get(range)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let seps = [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
    ];
    if seps.iter().any(|&(i, c)| b[i] != c) {
        return None;
    }
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, min, s, ms) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..23)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || h > 23 || min > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(y as i64, m as u32, d as u32);
    let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + min * 60 + s;
    Some(secs * 1000 + ms)
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// (year, month, day) → days since 1970-01-01 (Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_exit_lines_round_trip() {
        for exit in [AppExit::Code(0), AppExit::Code(3), AppExit::Signal(15)] {
            assert_eq!(parse_app_exited(&app_exited_line(exit)), Some(exit));
        }
        assert_eq!(
            parse_app_exited("nodeos-init: app exited code=7\r"),
            Some(AppExit::Code(7))
        );
        assert_eq!(
            parse_app_exited(
                "nodeos-init: app exited signal=9 (killed by the kernel: out of memory)"
            ),
            Some(AppExit::Signal(9))
        );
        assert_eq!(parse_app_exited("nodeos-init: app exited code=x"), None);
        assert_eq!(parse_app_exited("hello"), None);
    }

    #[test]
    fn app_exit_line_is_found_after_output_without_a_newline() {
        let line = format!("last words{}", app_exited_line(AppExit::Code(1)));
        assert_eq!(parse_app_exited(&line), Some(AppExit::Code(1)));
    }

    #[test]
    fn app_exit_is_parsed_from_both_log_formats() {
        for format in [LogFormat::Text, LogFormat::Json] {
            let rec = Record {
                unix_ms: 1_764_000_000_123,
                source: Source::Init,
                message: app_exited_line(AppExit::Signal(9))[PREFIX.len()..].to_owned(),
            };
            let line = rec.format(format);
            assert_eq!(parse_app_exited(&line), Some(AppExit::Signal(9)), "{line}");
        }
    }

    #[test]
    fn timestamps_round_trip_and_match_known_dates() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(
            rfc3339_millis(1_795_705_201_123),
            "2026-11-26T15:00:01.123Z"
        );
        for ms in [0, 951_782_400_000, 1_795_705_201_123, 4_102_444_799_999] {
            assert_eq!(parse_rfc3339_millis(&rfc3339_millis(ms)), Some(ms));
        }
        for bad in [
            "",
            "2026-11-26T15:00:01Z",
            "2026-13-26T15:00:01.123Z",
            "2026-11-26 15:00:01.123Z",
        ] {
            assert_eq!(parse_rfc3339_millis(bad), None, "{bad}");
        }
    }

    fn records() -> Vec<Record> {
        vec![
            Record {
                unix_ms: 1_795_705_201_123,
                source: Source::Init,
                message: "starting app".into(),
            },
            Record {
                unix_ms: 1_795_705_201_512,
                source: Source::App {
                    generation: 2,
                    stream: Stream::Stdout,
                },
                message: "listening on \"3000\" ünï".into(),
            },
            Record {
                unix_ms: 1_795_705_201_600,
                source: Source::App {
                    generation: 1,
                    stream: Stream::Stderr,
                },
                message: String::new(),
            },
        ]
    }

    #[test]
    fn text_records_look_as_documented() {
        let lines: Vec<_> = records()
            .iter()
            .map(|r| r.format(LogFormat::Text))
            .collect();
        assert_eq!(
            lines,
            [
                "2026-11-26T15:00:01.123Z nodeos-init: starting app",
                "2026-11-26T15:00:01.512Z app[2] out: listening on \"3000\" ünï",
                "2026-11-26T15:00:01.600Z app[1] err: ",
            ]
        );
    }

    #[test]
    fn json_records_look_as_documented() {
        let lines: Vec<_> = records()
            .iter()
            .map(|r| r.format(LogFormat::Json))
            .collect();
        assert_eq!(
            lines[0],
            r#"{"time":"2026-11-26T15:00:01.123Z","source":"init","message":"starting app"}"#
        );
        assert_eq!(
            lines[1],
            r#"{"time":"2026-11-26T15:00:01.512Z","source":"app","generation":2,"stream":"stdout","message":"listening on \"3000\" ünï"}"#
        );
    }

    #[test]
    fn records_round_trip_in_both_formats() {
        for format in [LogFormat::Text, LogFormat::Json] {
            for rec in records() {
                let line = rec.format(format);
                assert_eq!(Record::parse(&line), Some(rec), "{line}");
            }
        }
    }

    #[test]
    fn markers_normalize_from_either_format() {
        for format in [LogFormat::Text, LogFormat::Json] {
            let line = records()[0].format(format);
            assert_eq!(normalize(&line), STARTING_APP);
            assert!(normalize(&line).contains(STARTING_APP));
        }
        assert_eq!(
            normalize("[    0.123] Linux version 6.1"),
            "[    0.123] Linux version 6.1"
        );
        assert_eq!(normalize("{not json"), "{not json");
        assert_eq!(
            normalize(&records()[1].format(LogFormat::Json)),
            "listening on \"3000\" ünï"
        );
    }
}
