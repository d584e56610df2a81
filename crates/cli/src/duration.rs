//! Durations on the command line: a whole number and a unit, `500ms`,
//! `30s`, `10m` (or `10min`), `2h`, `1d`. Each flag checks its own range.

use std::time::Duration;

/// A `SECS` flag (`deploy --timeout`, `run --trial-boot-timeout`): whole
/// seconds, at least one.
pub fn whole_seconds(text: &str) -> Result<u64, String> {
    text.parse()
        .ok()
        .filter(|&secs| secs >= 1)
        .ok_or_else(|| "give a whole number of seconds, at least 1".to_owned())
}

/// `text` as a duration; `None` if it is not a number followed by a unit.
pub fn parse(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let ms: u64 = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    let n: u64 = number.parse().ok()?;
    Some(Duration::from_millis(n.checked_mul(ms)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_whole_and_from_one() {
        assert_eq!(whole_seconds("600"), Ok(600));
        assert_eq!(whole_seconds("1"), Ok(1));
        for bad in ["0", "-1", "10m", "1.5", ""] {
            assert!(whole_seconds(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_number_and_a_unit() {
        assert_eq!(parse("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse("10m"), parse("10min"));
        assert_eq!(parse("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("1d"), Some(Duration::from_secs(86_400)));
        for bad in ["", "10", "s", "10 s", "-5s", "1y", "99999999999999999999d"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
