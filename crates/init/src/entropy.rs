//! Phase 5, entropy & clock: the app must never block in
//! `crypto.randomBytes` or see a 1970 clock.
//!
//! The kernel seeds its random number generator from virtio-rng (QEMU's
//! `virtio-rng` device, which nodeos's VMs always have) and from jitter;
//! init waits until `getrandom` no longer blocks, so nothing the app does
//! later can. The wall clock is set by the kernel from the RTC at boot
//! (`CONFIG_RTC_HCTOSYS`); init checks that it looks set.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nodeos_manifest::console::rfc3339_millis;

use crate::say;
use crate::system::System;

/// A clock before this (2024-01-01) was not set from a real RTC.
pub const PLAUSIBLE_SINCE_UNIX: u64 = 1_704_067_200;

/// Waits for the random number generator, then reports it and the clock.
pub fn ready(sys: &mut impl System) {
    let t0 = Instant::now();
    if !sys.entropy_ready() {
        say!("entropy: waiting for the kernel's random number generator");
        if let Err(e) = sys.wait_for_entropy() {
            say!("warning: getrandom failed: {e}; crypto in the app may block");
        }
    }
    let waited = t0.elapsed();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    say!("{}", report(waited, now));
}

/// The console line: when entropy was ready and what the clock says.
pub fn report(waited: Duration, now: Duration) -> String {
    let clock = rfc3339_millis(now.as_millis() as u64);
    let mut line = format!(
        "entropy: ready after {}ms; clock: {clock}",
        waited.as_millis()
    );
    if now.as_secs() < PLAUSIBLE_SINCE_UNIX {
        line.push_str(" (not set: the VM has no working RTC; TLS certificates will look invalid)");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::Recorder;

    #[test]
    fn waits_only_when_not_ready() {
        let mut sys = Recorder {
            entropy: true,
            ..Recorder::default()
        };
        ready(&mut sys);
        assert_eq!(sys.calls, ["entropy?"]);

        let mut sys = Recorder::default();
        ready(&mut sys);
        assert_eq!(sys.calls, ["entropy?", "wait for entropy"]);
    }

    #[test]
    fn an_unset_clock_is_called_out() {
        let line = report(Duration::from_millis(3), Duration::from_secs(10));
        assert!(
            line.starts_with("entropy: ready after 3ms; clock: 1970-01-01T00:00:10.000Z (not set"),
            "{line}"
        );
        let line = report(Duration::ZERO, Duration::from_secs(1_795_705_201));
        assert_eq!(
            line,
            "entropy: ready after 0ms; clock: 2026-11-26T15:00:01.000Z"
        );
    }
}
