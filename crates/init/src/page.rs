//! The status page: one small HTML page that shows [`Status`] and the tail
//! of the log to a person with a browser.
//!
//! It is self-contained: an inline `<style>`, no scripts, fonts, images or
//! other files, so it works under `default-src 'none'; style-src
//! 'unsafe-inline'`, and it reloads itself with `<meta http-equiv="refresh">`.
//! Everything from the status and the log is HTML-escaped: log lines are
//! written by the app and are not trusted. Tests find the main elements by
//! their ids: `state`, `version`, `memory` and `log`.

use std::fmt::Write;

use nodeos_manifest::console::{Record, Source, Stream, rfc3339_millis};
use nodeos_manifest::update::{Status, SystemStatus};

/// How many of the last log records the page shows.
pub const LOG_LINES: usize = 100;

const STYLE: &str = "\
:root{font:14px/1.4 system-ui,sans-serif;color:#1d2430;background:#f4f5f7}
body{margin:0 auto;max-width:1200px;padding:16px}
h1{font-size:22px;margin:0}h1 span{color:#5b6472;font-weight:normal}
.sub{color:#5b6472;margin:2px 0 14px}
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(270px,1fr));gap:12px}
section{background:#fff;border:1px solid #dfe2e7;border-radius:8px;padding:10px 14px}
.wide{grid-column:1/-1}
h2{font-size:12px;text-transform:uppercase;letter-spacing:.05em;color:#5b6472;margin:0 0 6px}
table{border-collapse:collapse;width:100%}
th,td{padding:1px 0;text-align:left;vertical-align:top}
th{font-weight:normal;color:#5b6472;padding-right:14px;white-space:nowrap;width:1%}
.badge{display:inline-block;padding:1px 10px;border-radius:10px;color:#fff;background:#6b7280;font-weight:600}
.ok{background:#15803d}.warn{background:#b45309}.bad{background:#b91c1c}
.bar{height:8px;background:#e5e7eb;border-radius:4px;overflow:hidden;margin:4px 0 8px}
.bar span{display:block;height:100%;background:#2563eb}
pre,#log{font:12px/1.35 ui-monospace,monospace;margin:0}
#log td{padding:0 10px 0 0;white-space:pre-wrap;word-break:break-all}
#log td:nth-child(-n+2){white-space:nowrap;color:#5b6472;width:1%}
#log tr.err td{color:#b91c1c;background:#fef2f2}
";

/// The page for `status` and the last [`LOG_LINES`] records of `log`; it
/// reloads itself every `refresh_s` seconds (never, if 0).
pub fn render(status: &Status, log: &[Record], refresh_s: u32) -> String {
    let (name, version) = (esc(&status.appliance), esc(&status.version));
    let refresh = match refresh_s {
        0 => String::new(),
        n => format!("<meta http-equiv=\"refresh\" content=\"{n}\">"),
    };
    let trial = if status.trial { " (on trial)" } else { "" };
    let mut page = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">{refresh}\
         <title>{name} {version}</title><style>{STYLE}</style></head><body>\n\
         <h1>{name} <span id=\"version\">{version}</span></h1>\
         <p class=\"sub\">slot {}{trial} · up {}</p>\n<main>\n",
        status.slot,
        duration(status.uptime_s),
    );

    let app = &status.app;
    let badge = match app.state.as_str() {
        "running" => "ok",
        "starting" | "restarting" => "warn",
        "exited" | "stopping" => "bad",
        _ => "",
    };
    let state = esc(&app.state);
    let state = format!("<p><span id=\"state\" class=\"badge {badge}\">{state}</span></p>");
    Card::new(&mut page, "app", "App", &state)
        .row("generation", app.generation)
        .row("restarts", app.restarts)
        .row("last exit", app.last_exit.as_deref().unwrap_or("none"))
        .row("OOM exits", app.oom_exits)
        .row("health", status.health.as_deref().unwrap_or("not checked"))
        .row("pid", app.pid.map_or("—".into(), |pid| pid.to_string()))
        .end();
    match &status.system {
        Some(system) => system_cards(&mut page, status, system),
        None => Card::new(&mut page, "memory", "Memory", "")
            .row("usage", "not reported")
            .end(),
    }

    let mut slots = Card::new(&mut page, "slots", "Slots", "");
    for (slot, info) in &status.slots {
        let booted = if *slot == status.slot { ", booted" } else { "" };
        let (version, seq) = (or_dash(&info.version), info.sequence);
        slots = slots.row(
            slot.as_str(),
            format!(
                "{}{booted} · {version} · sequence {seq}",
                info.status.as_str()
            ),
        );
    }
    slots.end();
    let update = Card::new(&mut page, "update", "Last update", "");
    match &status.last_update {
        None => update.row("result", "no update yet").end(),
        Some(u) => update
            .row("result", u.result.as_str().replace('_', " "))
            .row("versions", format!("{} → {}", u.from, u.to))
            .row("slot", format!("{} (sequence {})", u.slot, u.sequence))
            .row("reason", or_dash(&u.reason))
            .row("at", time(u.at_ms))
            .end(),
    }
    if let Some(tail) = &status.log_tail {
        let tail = esc(tail);
        let _ = writeln!(
            page,
            "<section class=\"wide\"><h2>The failed trial's last lines</h2><pre>{tail}</pre></section>"
        );
    }
    log_section(&mut page, log, status.system.as_ref(), refresh_s);
    page.push_str("</main></body></html>\n");
    page
}

/// Memory, CPU and boot, `/data`, the network and log shipping.
fn system_cards(page: &mut String, status: &Status, s: &SystemStatus) {
    let used = s.memory_total.saturating_sub(s.memory_available);
    Card::new(page, "memory", "Memory", &bar(used, s.memory_total))
        .row("total", bytes(s.memory_total))
        .row("available", bytes(s.memory_available))
        .row("app RSS", bytes(s.app_rss))
        .row("OOM kills", s.oom_kills)
        .end();
    let boot = s
        .boot_ms
        .map_or("—".into(), |ms| format!("{:.2} s", ms as f64 / 1000.0));
    Card::new(page, "system", "System", "")
        .row("uptime", duration(status.uptime_s))
        .row("boot to app", boot)
        .row("booted at", time(s.boot_unix_ms))
        .row("CPU (guest)", cpu(s.cpu_ms))
        .row("CPU (app)", cpu(s.app_cpu_ms))
        .end();
    if let Some(d) = &s.data {
        Card::new(page, "data", "/data", &bar(d.used, d.size))
            .row("used", format!("{} of {}", bytes(d.used), bytes(d.size)))
            .row("available", bytes(d.available))
            .end();
    }
    if !s.network.is_empty() {
        let mut card = Card::new(page, "network", "Network", "");
        for n in &s.network {
            card = card.row(
                &n.name,
                format!("↓ {} · ↑ {}", bytes(n.rx_bytes), bytes(n.tx_bytes)),
            );
        }
        card.end();
    }
    if let Some(sys) = &s.log.syslog {
        Card::new(page, "syslog", "Syslog shipping", "")
            .row("target", &sys.target)
            .row("sent", sys.sent)
            .row("dropped", sys.dropped)
            .row("connected", if sys.connected { "yes" } else { "no" })
            .end();
    }
}

/// The last [`LOG_LINES`] records, stderr lines marked `err`.
fn log_section(page: &mut String, log: &[Record], system: Option<&SystemStatus>, refresh_s: u32) {
    let tail = &log[log.len().saturating_sub(LOG_LINES)..];
    let _ = write!(
        page,
        "<section class=\"wide\"><h2>Log: last {} lines",
        tail.len()
    );
    if let Some(s) = system {
        let (lines, dropped) = (s.log.lines, s.log.ring_dropped);
        let _ = write!(page, " of {lines} since boot ({dropped} no longer held)");
    }
    if refresh_s > 0 {
        let _ = write!(page, " · refreshes every {refresh_s} s");
    }
    page.push_str("</h2><table id=\"log\">\n");
    for rec in tail {
        let (source, class) = match rec.source {
            Source::Init => ("init".to_owned(), ""),
            Source::App {
                generation: g,
                stream: Stream::Stdout,
            } => (format!("app[{g}] out"), ""),
            Source::App {
                generation: g,
                stream: Stream::Stderr,
            } => (format!("app[{g}] err"), " class=\"err\""),
        };
        let (time, message) = (rfc3339_millis(rec.unix_ms), esc(&rec.message));
        let clock = &time[11..23];
        let _ = writeln!(
            page,
            "<tr{class}><td title=\"{time}\">{clock}</td><td>{source}</td><td>{message}</td></tr>"
        );
    }
    page.push_str("</table></section>\n");
}

/// A card being written: a titled section with a piece of HTML, then a
/// table of label → text (escaped here).
struct Card<'a>(&'a mut String);

impl<'a> Card<'a> {
    fn new(page: &'a mut String, id: &str, title: &str, html: &str) -> Card<'a> {
        let _ = write!(page, "<section id=\"{id}\"><h2>{title}</h2>{html}<table>");
        Card(page)
    }

    fn row(self, label: &str, value: impl std::fmt::Display) -> Card<'a> {
        let (label, value) = (esc(label), esc(&value.to_string()));
        let _ = write!(self.0, "<tr><th>{label}</th><td>{value}</td></tr>");
        self
    }

    fn end(self) {
        self.0.push_str("</table></section>\n");
    }
}

/// A bar filled to `part` of `whole`.
fn bar(part: u64, whole: u64) -> String {
    let percent = (part.min(whole) * 100).checked_div(whole).unwrap_or(0);
    format!(
        "<div class=\"bar\" title=\"{percent}%\"><span style=\"width:{percent}%\"></span></div>"
    )
}

/// `text` with `& < > " '` escaped, for HTML text and attribute values.
fn esc(text: &str) -> String {
    let pairs = [
        ('&', "&amp;"),
        ('<', "&lt;"),
        ('>', "&gt;"),
        ('"', "&quot;"),
        ('\'', "&#39;"),
    ];
    pairs
        .iter()
        .fold(text.to_owned(), |t, (c, e)| t.replace(*c, e))
}

/// A unix time in ms as `2026-11-26 15:00:01 UTC`, `—` for 0 (unknown).
fn time(unix_ms: u64) -> String {
    match unix_ms {
        0 => "—".into(),
        ms => {
            let t = rfc3339_millis(ms);
            format!("{} {} UTC", &t[..10], &t[11..19])
        }
    }
}

fn or_dash(text: &str) -> &str {
    if text.is_empty() { "—" } else { text }
}

/// `512 B`, `1.5 KiB`, `12.0 MiB`, `1.2 GiB`.
fn bytes(n: u64) -> String {
    let (mut value, mut unit) = (n as f64, 0);
    while value >= 1024.0 && unit < 4 {
        (value, unit) = (value / 1024.0, unit + 1);
    }
    match unit {
        0 => format!("{n} B"),
        u => format!("{value:.1} {}", ["KiB", "MiB", "GiB", "TiB"][u - 1]),
    }
}

/// `42 s`, `5 min 3 s`, `2 h 5 min`, `3 d 4 h`.
fn duration(s: u64) -> String {
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        3600..86_400 => format!("{} h {} min", s / 3600, s / 60 % 60),
        _ => format!("{} d {} h", s / 86_400, s / 3600 % 24),
    }
}

/// CPU time: `0.25 s` under a minute, else as [`duration`].
fn cpu(ms: u64) -> String {
    match ms {
        0..60_000 => format!("{:.2} s", ms as f64 / 1000.0),
        _ => duration(ms / 1000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(system: serde_json::Value) -> Status {
        serde_json::from_value(serde_json::json!({
            "appliance": "hello", "version": "1.0.1", "slot": "b", "trial": true,
            "max_sequence": 2, "uptime_s": 3725, "system": system,
            "app": {"state": "running", "generation": 2, "restarts": 1},
            "slots": {"a": {"status": "good", "version": "1.0.0"}, "b": {"status": "trying", "version": "1.0.1"}},
            "last_update": {"sequence": 2, "from": "1.0.0", "to": "1.0.1", "slot": "b", "result": "pending", "at_ms": 1795705201123u64},
        }))
        .unwrap()
    }

    /// A record of the app's: `text` is `out: …` or `err: …`.
    fn line(text: &str) -> Record {
        Record::parse(&format!("2026-11-26T15:00:01.123Z app[1] {text}")).unwrap()
    }

    #[test]
    fn log_lines_are_escaped() {
        let log = [line("err: <script>alert('x')</script> & \"q\"")];
        let page = render(&status(serde_json::Value::Null), &log, 5);
        assert!(!page.contains("<script>"), "{page}");
        let escaped = "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;";
        assert!(page.contains(escaped), "{page}");
        assert!(
            page.contains("<tr class=\"err\">"),
            "stderr lines stand out"
        );
    }

    #[test]
    fn only_the_last_100_log_lines_are_shown() {
        let log: Vec<_> = (0..250)
            .map(|i| line(&format!("out: line #{i};")))
            .collect();
        let page = render(&status(serde_json::Value::Null), &log, 5);
        assert_eq!(page.matches("<tr><td title=").count(), LOG_LINES);
        assert!(!page.contains("line #149;"));
        assert!(page.contains("line #150;") && page.contains("line #249;"));
    }

    #[test]
    fn a_status_without_system_renders() {
        let page = render(&status(serde_json::Value::Null), &[], 5);
        assert!(page.contains("id=\"memory\"") && page.contains("not reported"));
        assert!(page.ends_with("</html>\n"));
    }

    #[test]
    fn the_page_has_its_ids_refresh_and_numbers() {
        let system = serde_json::json!({
            "memory_total": 536870912u64, "memory_available": 402653184u64, "app_rss": 41943040u64,
            "cpu_ms": 1500, "app_cpu_ms": 900, "network": [{"name": "eth0", "rx_bytes": 1536, "tx_bytes": 0}],
            "log": {"lines": 3, "ring_dropped": 0,
                    "syslog": {"target": "udp://10.0.2.2:514", "sent": 7, "dropped": 0, "connected": true}},
        });
        let page = render(&status(system), &[], 7);
        for id in ["state", "version", "memory", "log"] {
            assert!(page.contains(&format!("id=\"{id}\"")), "id {id} missing");
        }
        assert!(page.contains("<meta http-equiv=\"refresh\" content=\"7\">"));
        assert!(page.contains("<title>hello 1.0.1</title>") && page.contains("(on trial)"));
        assert!(page.contains("class=\"badge ok\">running<"));
        for text in [
            "512.0 MiB",
            "width:25%",
            "1.5 KiB",
            "udp://10.0.2.2:514",
            "1 h 2 min",
        ] {
            assert!(page.contains(text), "{text} missing");
        }
        assert!(!render(&status(serde_json::Value::Null), &[], 0).contains("refresh\" content"));
    }

    #[test]
    fn sizes_and_durations_read_well() {
        assert_eq!(
            [bytes(0), bytes(1536), bytes(3 << 30)],
            ["0 B", "1.5 KiB", "3.0 GiB"]
        );
        assert_eq!(
            [duration(42), duration(303), duration(90_000)],
            ["42 s", "5 min 3 s", "1 d 1 h"]
        );
    }
}
