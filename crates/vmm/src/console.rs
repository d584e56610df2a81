//! Splitting QEMU's serial output into lines, and the bounded log they go to.

use std::collections::VecDeque;

/// Splits a byte stream into lines: `\n` ends a line, trailing `\r`s are
/// dropped (the kernel and the tty write `\r\n`), invalid UTF-8 is replaced.
#[derive(Debug, Default)]
pub(crate) struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Feeds `bytes`; calls `line` for every line they complete.
    pub(crate) fn push(&mut self, mut bytes: &[u8], mut line: impl FnMut(String)) {
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&bytes[..end]);
            line(Self::take(&mut self.partial));
            bytes = &bytes[end + 1..];
        }
        self.partial.extend_from_slice(bytes);
    }

    /// The unterminated last line, if any, at end of stream.
    pub(crate) fn finish(&mut self) -> Option<String> {
        (!self.partial.is_empty()).then(|| Self::take(&mut self.partial))
    }

    fn take(partial: &mut Vec<u8>) -> String {
        let mut bytes = std::mem::take(partial);
        while bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }
}

/// The console lines seen so far. Keeps the last [`ConsoleLog::MAX_LINES`]
/// so a long-running `nodeos run` does not grow without bound; lines keep
/// their absolute index so waiters can resume where they stopped.
#[derive(Debug, Default)]
pub(crate) struct ConsoleLog {
    lines: VecDeque<String>,
    /// Absolute index of `lines[0]`.
    first: usize,
}

impl ConsoleLog {
    pub(crate) const MAX_LINES: usize = 100_000;

    pub(crate) fn push(&mut self, line: String) {
        if self.lines.len() == Self::MAX_LINES {
            self.lines.pop_front();
            self.first += 1;
        }
        self.lines.push_back(line);
    }

    /// Absolute index one past the last line.
    pub(crate) fn end(&self) -> usize {
        self.first + self.lines.len()
    }

    /// Lines from absolute index `from` (or the oldest kept) on.
    pub(crate) fn since(&self, from: usize) -> impl Iterator<Item = &str> {
        self.lines
            .iter()
            .skip(from.saturating_sub(self.first))
            .map(String::as_str)
    }

    pub(crate) fn lines(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().map(String::as_str)
    }

    /// The whole kept log, one `\n` after each line.
    pub(crate) fn text(&self) -> String {
        let mut out = String::new();
        for line in &self.lines {
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

/// Keeps the last `cap` bytes written to it (QEMU's stderr).
#[derive(Debug)]
pub(crate) struct Tail {
    bytes: VecDeque<u8>,
    cap: usize,
}

impl Tail {
    pub(crate) fn new(cap: usize) -> Tail {
        Tail {
            bytes: VecDeque::with_capacity(cap),
            cap,
        }
    }

    pub(crate) fn push(&mut self, data: &[u8]) {
        let data = &data[data.len().saturating_sub(self.cap)..];
        let overflow = (self.bytes.len() + data.len()).saturating_sub(self.cap);
        self.bytes.drain(..overflow);
        self.bytes.extend(data);
    }

    pub(crate) fn text(&self) -> String {
        let (a, b) = self.bytes.as_slices();
        String::from_utf8_lossy(&[a, b].concat()).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<String> {
        let mut splitter = LineSplitter::default();
        let mut lines = Vec::new();
        for chunk in chunks {
            splitter.push(chunk, |l| lines.push(l));
        }
        lines.extend(splitter.finish());
        lines
    }

    #[test]
    fn lines_are_split_across_chunks_and_lose_carriage_returns() {
        assert_eq!(
            split(&[
                b"Linux version 6.1\r\nnodeos-in",
                b"it: starting app\r",
                b"\n\nlast"
            ]),
            ["Linux version 6.1", "nodeos-init: starting app", "", "last"]
        );
        assert_eq!(split(&[b"a\r\r\n", b"b\rc\n"]), ["a", "b\rc"]);
        assert!(split(&[b""]).is_empty());
    }

    #[test]
    fn invalid_utf8_is_replaced_not_dropped() {
        assert_eq!(split(&[b"caf\xc3", b"\xa9 \xff\n"]), ["café \u{fffd}"]);
    }

    #[test]
    fn log_keeps_absolute_indexes_when_trimmed() {
        let mut log = ConsoleLog::default();
        for i in 0..ConsoleLog::MAX_LINES + 2 {
            log.push(i.to_string());
        }
        assert_eq!(log.end(), ConsoleLog::MAX_LINES + 2);
        assert_eq!(log.lines().next(), Some("2"));
        assert_eq!(
            log.since(ConsoleLog::MAX_LINES + 1).collect::<Vec<_>>(),
            [(ConsoleLog::MAX_LINES + 1).to_string()]
        );
        assert_eq!(log.since(0).next(), Some("2"));
    }

    #[test]
    fn tail_keeps_the_last_bytes() {
        let mut tail = Tail::new(8);
        tail.push(b"hello ");
        tail.push(b"world");
        assert_eq!(tail.text(), "lo world");
        tail.push(b"0123456789");
        assert_eq!(tail.text(), "23456789");
    }
}
