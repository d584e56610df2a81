//! What the appliance uses, read from /proc and /sys when asked: memory,
//! CPU time (the guest's and the app's), the /data volume, network bytes,
//! boot time and the log's counters. The parsers take text so that they
//! are tested on samples; [`system`] reads the real files.

use std::path::Path;
use std::sync::OnceLock;

use nodeos_manifest::update::{DiskUsage, LogStats, NetCounters, SystemStatus};

use crate::memory::MemInfo;

/// Milliseconds from the kernel's start to the app's first start.
static APP_FIRST_START_MS: OnceLock<u64> = OnceLock::new();

/// Records the boot time: called when the app starts; only the first call counts.
pub fn mark_app_started() {
    if let Some(uptime) = uptime_ms() {
        let _ = APP_FIRST_START_MS.set(uptime);
    }
}

/// Milliseconds since the kernel started (`/proc/uptime`).
pub fn uptime_ms() -> Option<u64> {
    parse_uptime_ms(&std::fs::read_to_string("/proc/uptime").ok()?)
}

/// Everything [`SystemStatus`] holds, as of now; `app` is the app's
/// process (the leader of its session), if it runs. What cannot be read
/// is reported as 0 or absent.
pub fn system(app: Option<i32>) -> SystemStatus {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let memory = MemInfo::parse(&read("/proc/meminfo"));
    let ticks = rustix::param::clock_ticks_per_second().max(1);
    let app_use = app.map(|pid| app_usage(pid, ticks)).unwrap_or_default();
    let (lines, ring_dropped) = crate::log::with_ring(|r| (r.next_seq(), r.dropped));
    let uptime = uptime_ms().unwrap_or(0);
    SystemStatus {
        boot_ms: APP_FIRST_START_MS.get().copied(),
        boot_unix_ms: crate::log::now_ms().saturating_sub(uptime),
        memory_total: memory.map_or(0, |m| m.total_kib * 1024),
        memory_available: memory.map_or(0, |m| m.available_kib * 1024),
        app_rss: app_use.rss_bytes,
        init_rss: parse_vm_rss(&read("/proc/self/status")).unwrap_or(0),
        cpu_ms: parse_cpu_ms(&read("/proc/stat"), ticks).unwrap_or(0),
        app_cpu_ms: app_use.cpu_ms,
        oom_kills: crate::supervise::oom_kills().unwrap_or(0),
        data: data_usage(&read("/proc/self/mounts")),
        network: network(Path::new("/sys/class/net")),
        log: LogStats {
            lines,
            ring_dropped,
            syslog: crate::syslog::stats(),
        },
    }
}

/// The first field of `/proc/uptime` in milliseconds.
fn parse_uptime_ms(text: &str) -> Option<u64> {
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some((secs * 1000.0) as u64)
}

/// `VmRSS` of a `/proc/<pid>/status`, bytes.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Busy CPU time of all CPUs from the `cpu` line of `/proc/stat`: every
/// field but idle and iowait (guest time is already in user).
fn parse_cpu_ms(stat: &str, ticks: u64) -> Option<u64> {
    let fields: Vec<u64> = stat
        .lines()
        .find_map(|l| l.strip_prefix("cpu "))?
        .split_whitespace()
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let busy: u64 = fields
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| !matches!(i, 3 | 4))
        .map(|(_, v)| v)
        .sum();
    Some(busy * 1000 / ticks)
}

/// One process's line of `/proc/<pid>/stat`, the fields after the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcStat {
    session: i32,
    /// utime + stime, and cutime + cstime (reaped children), in ticks.
    cpu: u64,
    children_cpu: u64,
    rss_pages: u64,
}

fn parse_proc_stat(text: &str) -> Option<ProcStat> {
    // The name is in parentheses and may hold spaces or parentheses itself.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state) of proc(5).
    let num = |field: usize| f.get(field - 3)?.parse::<u64>().ok();
    Some(ProcStat {
        session: f.get(6 - 3)?.parse().ok()?,
        cpu: num(14)? + num(15)?,
        children_cpu: num(16)? + num(17)?,
        rss_pages: num(24)?,
    })
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Usage {
    rss_bytes: u64,
    cpu_ms: u64,
}

/// RSS and CPU time of the app's session: the app and every process it
/// started that is still in its session, plus the children it reaped.
fn app_usage(app: i32, ticks: u64) -> Usage {
    let page = rustix::param::page_size() as u64;
    let stats = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_string_lossy().parse().ok()?;
            Some((
                pid,
                parse_proc_stat(&std::fs::read_to_string(e.path().join("stat")).ok()?)?,
            ))
        });
    session_usage(app, stats, page, ticks)
}

fn session_usage(
    app: i32,
    stats: impl Iterator<Item = (i32, ProcStat)>,
    page: u64,
    ticks: u64,
) -> Usage {
    let (mut pages, mut cpu) = (0, 0);
    for (pid, stat) in stats.filter(|(_, s)| s.session == app) {
        pages += stat.rss_pages;
        cpu += stat.cpu;
        if pid == app {
            cpu += stat.children_cpu;
        }
    }
    Usage {
        rss_bytes: pages * page,
        cpu_ms: cpu * 1000 / ticks,
    }
}

/// Size and use of `/data` if a volume is mounted there (statvfs).
fn data_usage(mounts: &str) -> Option<DiskUsage> {
    let mounted = mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/data"));
    if !mounted {
        return None;
    }
    let vfs = rustix::fs::statvfs("/data").ok()?;
    let block = vfs.f_frsize;
    Some(DiskUsage {
        size: vfs.f_blocks * block,
        used: (vfs.f_blocks - vfs.f_bfree) * block,
        available: vfs.f_bavail * block,
    })
}

/// Byte counters of every interface under `sys_class_net` but `lo`, by name.
fn network(sys_class_net: &Path) -> Vec<NetCounters> {
    let mut all: Vec<NetCounters> = std::fs::read_dir(sys_class_net)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let counter = |what: &str| -> Option<u64> {
                std::fs::read_to_string(e.path().join("statistics").join(what))
                    .ok()?
                    .trim()
                    .parse()
                    .ok()
            };
            (name != "lo").then(|| NetCounters {
                rx_bytes: counter("rx_bytes").unwrap_or(0),
                tx_bytes: counter("tx_bytes").unwrap_or(0),
                name,
            })
        })
        .collect();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_and_cpu_lines_parse() {
        assert_eq!(parse_uptime_ms("12.34 40.00\n"), Some(12_340));
        assert_eq!(parse_uptime_ms(""), None);
        assert_eq!(
            parse_vm_rss("Name:\tx\nVmRSS:\t    1300 kB\n"),
            Some(1300 * 1024)
        );
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        let stat = "cpu  100 5 50 1000 20 3 2 0 0 0\ncpu0 100 5 50 1000 20 3 2 0 0 0\nintr 1\n";
        // user + nice + system + irq + softirq + steal = 160 ticks.
        assert_eq!(parse_cpu_ms(stat, 100), Some(1600));
        assert_eq!(parse_cpu_ms("intr 1\n", 100), None);
    }

    #[test]
    fn a_process_line_parses_even_with_a_strange_name() {
        let line = "42 (node (my) app) S 1 42 42 0 -1 4194560 100 0 0 0 \
                    150 50 7 3 20 0 11 0 500 1000000 2560 18446744073709551615";
        let stat = parse_proc_stat(line).unwrap();
        assert_eq!(
            stat,
            ProcStat {
                session: 42,
                cpu: 200,
                children_cpu: 10,
                rss_pages: 2560
            }
        );
        assert_eq!(parse_proc_stat("42 (x) S 1"), None);
    }

    #[test]
    fn the_app_session_is_summed_and_others_left_out() {
        let stat = |session, cpu, children_cpu, rss_pages| ProcStat {
            session,
            cpu,
            children_cpu,
            rss_pages,
        };
        let procs = [
            (1, stat(0, 1000, 1000, 300)), // init
            (42, stat(42, 200, 10, 2560)), // the app
            (43, stat(42, 100, 99, 440)),  // its worker: its reaped children are not counted
        ];
        let usage = session_usage(42, procs.into_iter(), 4096, 100);
        assert_eq!(usage.rss_bytes, 3000 * 4096);
        assert_eq!(usage.cpu_ms, 3100);
    }

    #[test]
    fn this_machine_reports_memory_cpu_and_its_interfaces() {
        let session = rustix::process::getsid(None)
            .unwrap()
            .as_raw_nonzero()
            .get();
        let status = system(Some(session));
        assert!(status.memory_total > status.memory_available && status.memory_available > 0);
        assert!(status.cpu_ms > 0);
        assert!(status.app_rss > 0, "this test process has resident pages");
        assert!(status.init_rss > 0);
        assert!(status.boot_unix_ms > 1_600_000_000_000);
        assert!(status.network.iter().all(|n| n.name != "lo"));
    }

    #[test]
    fn data_usage_needs_a_mount_on_data() {
        assert_eq!(data_usage("proc /proc proc rw 0 0\n"), None);
    }
}
