//! `GET /v1/metrics`: the status in the Prometheus text exposition format
//! (version 0.0.4). Every name starts with `nodeos_`; label values are
//! escaped; counters end in `_total`.

use std::fmt::Write as _;

use nodeos_manifest::slots::Slot;
use nodeos_manifest::update::Status;

/// The `Content-Type` of the answer.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The app states the `nodeos_app_state` gauge has a series for.
const STATES: [&str; 5] = ["starting", "running", "restarting", "stopping", "exited"];

/// The metrics text of `status`.
pub(crate) fn render(status: &Status) -> String {
    let mut m = Metrics::default();
    m.family(
        "nodeos_info",
        "gauge",
        "What the appliance runs (always 1).",
    );
    m.sample(
        "nodeos_info",
        &[
            ("appliance", &status.appliance),
            ("version", &status.version),
            ("slot", status.slot.as_str()),
        ],
        1,
    );
    m.one(
        "nodeos_uptime_seconds",
        "gauge",
        "Seconds since the kernel started.",
        status.uptime_s,
    );
    m.one(
        "nodeos_trial",
        "gauge",
        "1 while this boot is a new version's trial.",
        u64::from(status.trial),
    );

    let app = &status.app;
    m.family(
        "nodeos_app_state",
        "gauge",
        "1 for the app's current state.",
    );
    for state in STATES {
        m.sample(
            "nodeos_app_state",
            &[("state", state)],
            u64::from(app.state == state),
        );
    }
    m.one(
        "nodeos_app_generation",
        "gauge",
        "The app's run: 1 at the first start, one more per restart.",
        u64::from(app.generation),
    );
    m.one(
        "nodeos_app_restarts_total",
        "counter",
        "Restarts of the app since boot.",
        u64::from(app.restarts),
    );
    m.one(
        "nodeos_app_oom_exits_total",
        "counter",
        "Runs of the app that ended for lack of memory.",
        u64::from(app.oom_exits),
    );
    m.family(
        "nodeos_app_last_exit_info",
        "gauge",
        "How the app's last run ended (exit code, signal, out of memory).",
    );
    if let Some(exit) = &app.last_exit {
        m.sample("nodeos_app_last_exit_info", &[("reason", exit)], 1);
    }
    m.one(
        "nodeos_health_ok",
        "gauge",
        "1 if this boot's health check passed.",
        u64::from(
            status
                .health
                .as_deref()
                .is_some_and(|h| h.starts_with("healthy")),
        ),
    );

    if let Some(sys) = &status.system {
        if let Some(boot) = sys.boot_ms {
            m.seconds(
                "nodeos_boot_seconds",
                "gauge",
                "Seconds from the kernel's start to the app's first start.",
                boot,
            );
        }
        m.seconds(
            "nodeos_boot_timestamp_seconds",
            "gauge",
            "When the kernel started, unix seconds.",
            sys.boot_unix_ms,
        );
        m.one(
            "nodeos_memory_total_bytes",
            "gauge",
            "MemTotal.",
            sys.memory_total,
        );
        m.one(
            "nodeos_memory_available_bytes",
            "gauge",
            "MemAvailable: memory the app could still get.",
            sys.memory_available,
        );
        m.one(
            "nodeos_app_resident_bytes",
            "gauge",
            "Resident memory of the app's processes.",
            sys.app_rss,
        );
        m.one(
            "nodeos_init_resident_bytes",
            "gauge",
            "Resident memory of nodeos-init (PID 1 and its agent).",
            sys.init_rss,
        );
        m.seconds(
            "nodeos_cpu_seconds_total",
            "counter",
            "Busy CPU time of the guest, all CPUs.",
            sys.cpu_ms,
        );
        m.seconds(
            "nodeos_app_cpu_seconds_total",
            "counter",
            "CPU time of the app's processes.",
            sys.app_cpu_ms,
        );
        m.one(
            "nodeos_oom_kills_total",
            "counter",
            "The kernel's OOM kills since boot.",
            sys.oom_kills,
        );
        if let Some(data) = &sys.data {
            m.one(
                "nodeos_data_size_bytes",
                "gauge",
                "Size of the /data volume.",
                data.size,
            );
            m.one(
                "nodeos_data_used_bytes",
                "gauge",
                "Bytes used on /data.",
                data.used,
            );
            m.one(
                "nodeos_data_available_bytes",
                "gauge",
                "Bytes the app can still write to /data.",
                data.available,
            );
        }
        let rx = "nodeos_network_receive_bytes_total";
        m.family(rx, "counter", "Bytes received, by interface.");
        for net in &sys.network {
            m.sample(rx, &[("device", &net.name)], net.rx_bytes);
        }
        let tx = "nodeos_network_transmit_bytes_total";
        m.family(tx, "counter", "Bytes sent, by interface.");
        for net in &sys.network {
            m.sample(tx, &[("device", &net.name)], net.tx_bytes);
        }
        m.one(
            "nodeos_log_lines_total",
            "counter",
            "Log lines since boot (init's and the app's).",
            sys.log.lines,
        );
        m.one(
            "nodeos_log_ring_dropped_total",
            "counter",
            "Log lines the in-memory ring no longer holds.",
            sys.log.ring_dropped,
        );
        if let Some(syslog) = &sys.log.syslog {
            let target = [("target", syslog.target.as_str())];
            m.family(
                "nodeos_syslog_sent_total",
                "counter",
                "Log lines shipped to remote syslog.",
            );
            m.sample("nodeos_syslog_sent_total", &target, syslog.sent);
            m.family(
                "nodeos_syslog_dropped_total",
                "counter",
                "Log lines lost on the way to remote syslog (buffer full, target down).",
            );
            m.sample("nodeos_syslog_dropped_total", &target, syslog.dropped);
            m.family(
                "nodeos_syslog_up",
                "gauge",
                "1 if the last send to remote syslog worked.",
            );
            m.sample("nodeos_syslog_up", &target, u64::from(syslog.connected));
        }
    }

    m.family(
        "nodeos_slot_info",
        "gauge",
        "What each slot holds (always 1).",
    );
    for slot in [Slot::A, Slot::B] {
        if let Some(info) = status.slots.get(&slot) {
            m.sample(
                "nodeos_slot_info",
                &[
                    ("slot", slot.as_str()),
                    ("status", info.status.as_str()),
                    ("version", &info.version),
                ],
                1,
            );
        }
    }
    m.one(
        "nodeos_update_sequence",
        "gauge",
        "The highest update sequence accepted.",
        status.max_sequence,
    );
    m.family(
        "nodeos_last_update_info",
        "gauge",
        "The last update and how it ended.",
    );
    if let Some(last) = &status.last_update {
        m.sample(
            "nodeos_last_update_info",
            &[
                ("result", last.result.as_str()),
                ("from", &last.from),
                ("to", &last.to),
                ("slot", last.slot.as_str()),
            ],
            1,
        );
        m.seconds(
            "nodeos_last_update_timestamp_seconds",
            "gauge",
            "When the last update's result was recorded, unix seconds.",
            last.at_ms,
        );
    }
    m.text
}

#[derive(Default)]
struct Metrics {
    text: String,
}

impl Metrics {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            let labels: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let _ = write!(self.text, "{{{}}}", labels.join(","));
        }
        let _ = writeln!(self.text, " {value}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: u64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// A value given in milliseconds, written in seconds.
    fn seconds(&mut self, name: &str, kind: &str, help: &str, ms: u64) {
        self.family(name, kind, help);
        let _ = writeln!(self.text, "{name} {}.{:03}", ms / 1000, ms % 1000);
    }
}

/// A label value: backslash, double quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use nodeos_manifest::update::{DiskUsage, LogStats, NetCounters, SyslogStats, SystemStatus};

    use super::*;
    use crate::update::status;
    use crate::update::testing::{Fixture, Image};

    fn sample() -> Status {
        let fx = Fixture::new(&Image::new("1.0.0", 1));
        let mut status = status::status(&fx.shared());
        status.app.state = "running".into();
        status.app.restarts = 2;
        status.app.last_exit = Some("signal 9 (out of memory)".into());
        status.system = Some(SystemStatus {
            boot_ms: Some(1234),
            boot_unix_ms: 1_800_000_000_000,
            memory_total: 100,
            memory_available: 60,
            app_rss: 30,
            init_rss: 20,
            cpu_ms: 5005,
            app_cpu_ms: 4000,
            oom_kills: 1,
            data: Some(DiskUsage {
                size: 10,
                used: 4,
                available: 5,
            }),
            network: vec![NetCounters {
                name: "eth0".into(),
                rx_bytes: 7,
                tx_bytes: 8,
            }],
            log: LogStats {
                lines: 99,
                ring_dropped: 0,
                syslog: Some(SyslogStats {
                    target: "udp://10.0.2.2:514".into(),
                    sent: 90,
                    dropped: 9,
                    connected: true,
                }),
            },
        });
        status
    }

    #[test]
    fn every_sample_line_is_well_formed_and_declared() {
        let text = render(&sample());
        let mut declared = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(["gauge", "counter"].contains(&kind), "{line}");
                assert!(declared.insert(name.to_owned()), "{name} declared twice");
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(declared.contains(name), "{name} not declared: {line}");
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn the_numbers_of_the_issue_are_there() {
        let text = render(&sample());
        for expected in [
            "nodeos_info{appliance=\"hello\",version=\"1.0.0\",slot=\"a\"} 1",
            "nodeos_app_state{state=\"running\"} 1",
            "nodeos_app_state{state=\"exited\"} 0",
            "nodeos_app_restarts_total 2",
            "nodeos_app_last_exit_info{reason=\"signal 9 (out of memory)\"} 1",
            "nodeos_boot_seconds 1.234",
            "nodeos_memory_available_bytes 60",
            "nodeos_app_resident_bytes 30",
            "nodeos_cpu_seconds_total 5.005",
            "nodeos_data_used_bytes 4",
            "nodeos_network_receive_bytes_total{device=\"eth0\"} 7",
            "nodeos_syslog_dropped_total{target=\"udp://10.0.2.2:514\"} 9",
            "nodeos_slot_info{slot=\"a\",status=\"good\",version=\"1.0.0\"} 1",
        ] {
            assert!(text.contains(expected), "no {expected:?} in\n{text}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let mut status = sample();
        status.app.last_exit = Some("a \"quoted\\ line\nbreak".into());
        let text = render(&status);
        assert!(
            text.contains(r#"reason="a \"quoted\\ line\nbreak""#),
            "{text}"
        );
    }
}
