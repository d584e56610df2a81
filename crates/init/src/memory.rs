//! The low-memory watchdog: an early OOM killer for the app.
//!
//! Without swap, a VM whose app eats its memory does not always reach the
//! kernel's OOM killer quickly: the kernel first evicts the page cache,
//! including node's own code, and the guest can thrash for minutes (under
//! TCG, far longer), unreachable. Like earlyoom and systemd-oomd, init
//! watches `MemAvailable` and, once it has stayed below
//! [`LOW_PERCENT`] % of `MemTotal` for [`LOW_SAMPLES`] readings in a row,
//! tells the supervisor, which kills the app and reports it as out of
//! memory. The kernel's OOM killer stays the backstop. Init's own pages are
//! locked in memory, so it keeps running while the app thrashes.

use std::sync::mpsc::Sender;
use std::time::Duration;

use crate::say;
use crate::supervise::Event;

/// `MemAvailable` below this share of `MemTotal` is low.
pub const LOW_PERCENT: u64 = 5;
/// Consecutive low readings before the app is killed.
pub const LOW_SAMPLES: u32 = 3;
/// Reading interval when memory is plentiful (above 4 × the threshold).
pub const RELAXED: Duration = Duration::from_secs(1);
/// Reading interval when memory is getting short.
pub const ALERT: Duration = Duration::from_millis(200);

/// `MemTotal` and `MemAvailable` of `/proc/meminfo`, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemInfo {
    pub total_kib: u64,
    pub available_kib: u64,
}

impl MemInfo {
    pub fn parse(meminfo: &str) -> Option<MemInfo> {
        let field = |name: &str| {
            meminfo
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        };
        Some(MemInfo {
            total_kib: field("MemTotal")?,
            available_kib: field("MemAvailable")?,
        })
    }

    /// Below the low-memory threshold.
    pub fn is_low(self) -> bool {
        self.available_kib * 100 < self.total_kib * LOW_PERCENT
    }

    /// Close enough to the threshold to read more often.
    fn is_tight(self) -> bool {
        self.available_kib * 100 < self.total_kib * LOW_PERCENT * 4
    }
}

/// Counts consecutive low readings; says when to act.
#[derive(Debug, Default)]
pub struct Watch {
    low_in_a_row: u32,
}

impl Watch {
    /// One reading: `true` exactly when it completes [`LOW_SAMPLES`] low
    /// readings in a row (then counting starts over).
    pub fn reading(&mut self, info: MemInfo) -> bool {
        if !info.is_low() {
            self.low_in_a_row = 0;
            return false;
        }
        self.low_in_a_row += 1;
        if self.low_in_a_row >= LOW_SAMPLES {
            self.low_in_a_row = 0;
            return true;
        }
        false
    }
}

/// Starts the watchdog thread; it sends [`Event::MemoryLow`].
pub fn watch(tx: Sender<Event>) {
    let spawned = std::thread::Builder::new()
        .name("memory".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let mut watch = Watch::default();
            loop {
                let Some(info) = std::fs::read_to_string("/proc/meminfo")
                    .ok()
                    .as_deref()
                    .and_then(MemInfo::parse)
                else {
                    say!("warning: cannot read /proc/meminfo; the low-memory watchdog stops");
                    return;
                };
                if watch.reading(info) && tx.send(Event::MemoryLow(info)).is_err() {
                    return;
                }
                std::thread::sleep(if info.is_tight() { ALERT } else { RELAXED });
            }
        });
    if let Err(e) = spawned {
        say!("warning: cannot start the low-memory watchdog: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "MemTotal:         120000 kB\nMemFree:            1000 kB\nMemAvailable:       5000 kB\nBuffers:               0 kB\n";

    #[test]
    fn meminfo_is_parsed() {
        assert_eq!(
            MemInfo::parse(MEMINFO),
            Some(MemInfo {
                total_kib: 120_000,
                available_kib: 5000
            })
        );
        assert_eq!(MemInfo::parse("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn low_means_under_five_percent() {
        let info = |available_kib| MemInfo {
            total_kib: 100_000,
            available_kib,
        };
        assert!(info(4999).is_low());
        assert!(!info(5000).is_low());
        assert!(info(19_999).is_tight());
        assert!(!info(20_000).is_tight());
    }

    #[test]
    fn acts_only_after_consecutive_low_readings() {
        let low = MemInfo {
            total_kib: 100_000,
            available_kib: 1000,
        };
        let fine = MemInfo {
            total_kib: 100_000,
            available_kib: 50_000,
        };
        let mut w = Watch::default();
        assert!(!w.reading(low));
        assert!(!w.reading(low));
        assert!(!w.reading(fine), "a good reading resets the count");
        assert!(!w.reading(low));
        assert!(!w.reading(low));
        assert!(w.reading(low));
        assert!(!w.reading(low), "counting starts over after acting");
    }
}
