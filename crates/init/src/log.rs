//! Phase 2 (with the console): the log. Every line init prints and every
//! line of the app's stdout and stderr becomes a [`Record`] with a UTC
//! timestamp, written to the console (fd 2, `/dev/console`) in the
//! configured [`LogFormat`], kept in a bounded in-memory [`Ring`] for the
//! logs and status APIs (numbered, so followers of the log know where they
//! are: [`wait_for`]), and offered to the remote syslog shipper
//! ([`crate::syslog`]).
//!
//! The app's stdout and stderr are pipes ([`capture`]); one thread per pipe
//! splits the bytes into lines and logs them, tagged with the stream and the
//! restart generation.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nodeos_manifest::LogFormat;
use nodeos_manifest::console::{PREFIX, Record, Source, Stream};

/// Prints one init message (`nodeos-init: …` in the text format) on the
/// console and into the ring. Never panics, even when the console is gone.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::log::init_line(::std::format_args!($($arg)*))
    };
}

/// Longest line kept whole; longer ones are split (a line without a newline
/// must not grow init's memory without bound).
pub const MAX_LINE: usize = 16 * 1024;
/// Records the ring keeps at most.
pub const RING_LINES: usize = 2000;
/// Bytes of messages the ring keeps at most.
pub const RING_BYTES: usize = 512 * 1024;

/// The last log records, oldest first, bounded in count and bytes.
#[derive(Debug)]
pub struct Ring {
    records: VecDeque<Record>,
    bytes: usize,
    max_records: usize,
    max_bytes: usize,
    /// Records pushed out to stay within bounds.
    pub dropped: u64,
}

impl Ring {
    pub const fn new(max_records: usize, max_bytes: usize) -> Self {
        Ring {
            records: VecDeque::new(),
            bytes: 0,
            max_records,
            max_bytes,
            dropped: 0,
        }
    }

    pub fn push(&mut self, record: Record) {
        self.bytes += record.message.len();
        self.records.push_back(record);
        while self.records.len() > self.max_records || self.bytes > self.max_bytes {
            let Some(old) = self.records.pop_front() else {
                break;
            };
            self.bytes -= old.message.len();
            self.dropped += 1;
        }
    }

    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.records.iter()
    }

    /// The sequence number the next record gets: records logged so far
    /// (the first record is number 0).
    pub fn next_seq(&self) -> u64 {
        self.dropped + self.records.len() as u64
    }

    /// The records numbered `seq` and later that the ring still holds.
    pub fn since(&self, seq: u64) -> impl Iterator<Item = &Record> {
        let skip = seq.saturating_sub(self.dropped);
        self.records
            .iter()
            .skip(usize::try_from(skip).unwrap_or(usize::MAX))
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

struct Logger {
    format: LogFormat,
    ring: Ring,
}

static LOGGER: Mutex<Logger> = Mutex::new(Logger {
    format: LogFormat::Text,
    ring: Ring::new(RING_LINES, RING_BYTES),
});
/// Notified after every record (for followers of the log).
static LOGGED: Condvar = Condvar::new();

fn logger() -> MutexGuard<'static, Logger> {
    // A panic while holding the lock must not silence the log.
    LOGGER.lock().unwrap_or_else(|e| e.into_inner())
}

/// Switches the console format (text until the config is read).
pub fn set_format(format: LogFormat) {
    logger().format = format;
}

/// The ring of recent records (for the status and logs APIs).
pub fn with_ring<T>(f: impl FnOnce(&Ring) -> T) -> T {
    f(&logger().ring)
}

/// Waits until a record numbered `seq` or later is logged, or `timeout`
/// passed; returns whether one was.
pub fn wait_for(seq: u64, timeout: Duration) -> bool {
    let logger = logger();
    let (logger, _) = LOGGED
        .wait_timeout_while(logger, timeout, |l| l.ring.next_seq() <= seq)
        .unwrap_or_else(|e| e.into_inner());
    logger.ring.next_seq() > seq
}

/// Milliseconds since the epoch by the guest's clock.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Logs one record now: console first, then the ring.
pub fn emit(source: Source, message: String) {
    let record = Record {
        unix_ms: now_ms(),
        source,
        message,
    };
    let mut logger = logger();
    let mut line = record.format(logger.format);
    line.push('\n');
    // One write per line, under the lock: lines never interleave.
    let _ = io::stderr().lock().write_all(line.as_bytes());
    crate::syslog::offer(&record);
    logger.ring.push(record);
    drop(logger);
    LOGGED.notify_all();
}

#[doc(hidden)]
pub fn init_line(args: std::fmt::Arguments<'_>) {
    emit(Source::Init, args.to_string());
}

/// Logs a marker line from [`nodeos_manifest::console`] (`nodeos-init: …`).
pub fn marker(line: &str) {
    emit(
        Source::Init,
        line.strip_prefix(PREFIX).unwrap_or(line).to_owned(),
    );
}

/// The app's stdout and stderr for one generation: the write ends go to
/// the child, the read ends are drained by two threads.
pub struct AppOutput {
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub drain: Drain,
}

/// Tells when both of a generation's pipes are drained.
pub struct Drain(Receiver<()>);

/// Makes the two pipes and starts the threads that log what arrives on
/// them as generation `generation` of the app.
pub fn capture(generation: u32) -> io::Result<AppOutput> {
    let (tx, drained) = mpsc::channel();
    let mut ends = Vec::new();
    for stream in [Stream::Stdout, Stream::Stderr] {
        let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let tx = tx.clone();
        std::thread::Builder::new()
            .name(format!("log-{stream:?}").to_lowercase())
            .stack_size(64 * 1024)
            .spawn(move || {
                let source = Source::App { generation, stream };
                for_each_line(std::fs::File::from(read), MAX_LINE, |line| {
                    emit(source, line)
                });
                let _ = tx.send(());
            })?;
        ends.push(write);
    }
    let stderr = ends.pop().expect("two pipes");
    let stdout = ends.pop().expect("two pipes");
    Ok(AppOutput {
        stdout,
        stderr,
        drain: Drain(drained),
    })
}

impl Drain {
    /// Waits until both pipes reached end-of-file (every writer closed
    /// them) or `timeout` passed: the app's last words are logged before
    /// its exit is. A child of the app that keeps a pipe open does not
    /// hold init up for longer than `timeout`.
    pub fn drained(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for _ in 0..2 {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.0.recv_timeout(left).is_err() {
                return;
            }
        }
    }
}

/// Calls `f` with each line read from `input` (without the newline or a
/// trailing `\r`, invalid UTF-8 replaced), splitting lines longer than
/// `max` bytes; a last line without a newline is passed too.
pub fn for_each_line(input: impl io::Read, max: usize, mut f: impl FnMut(String)) {
    let mut reader = BufReader::with_capacity(8192, input);
    let mut line = Vec::new();
    loop {
        let buf = match reader.fill_buf() {
            Ok([]) => break,
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let (take, end_of_line) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        let room = max - line.len();
        let (take, end_of_line) = if take - usize::from(end_of_line) > room {
            (room, false)
        } else {
            (take, end_of_line)
        };
        line.extend_from_slice(&buf[..take]);
        reader.consume(take);
        if end_of_line || line.len() >= max {
            f(finish(&mut line));
        }
    }
    if !line.is_empty() {
        f(finish(&mut line));
    }
}

fn finish(line: &mut Vec<u8>) -> String {
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    let text = String::from_utf8_lossy(line).into_owned();
    line.clear();
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max: usize) -> Vec<String> {
        let mut out = Vec::new();
        for_each_line(input, max, |l| out.push(l));
        out
    }

    #[test]
    fn splits_lines_and_keeps_the_last_one_without_newline() {
        assert_eq!(lines(b"a\nbc\r\n\nlast", 100), ["a", "bc", "", "last"]);
        assert!(lines(b"", 100).is_empty());
        assert_eq!(lines(b"\xffok\n", 100), ["\u{fffd}ok"]);
    }

    #[test]
    fn long_lines_are_split_at_the_limit() {
        assert_eq!(lines(b"abcdefgh\nij\n", 3), ["abc", "def", "gh", "ij"]);
        assert_eq!(lines(b"abc\n", 3), ["abc"]);
        let big = vec![b'x'; 100_000];
        let out = lines(&big, MAX_LINE);
        assert_eq!(out.len(), 100_000usize.div_ceil(MAX_LINE));
        assert!(out.iter().all(|l| l.len() <= MAX_LINE));
    }

    fn record(message: &str) -> Record {
        Record {
            unix_ms: 0,
            source: Source::Init,
            message: message.into(),
        }
    }

    #[test]
    fn ring_is_bounded_by_count_and_bytes() {
        let mut ring = Ring::new(3, 10);
        for m in ["a", "b", "c", "d"] {
            ring.push(record(m));
        }
        let kept: Vec<_> = ring.records().map(|r| r.message.as_str()).collect();
        assert_eq!(kept, ["b", "c", "d"]);
        assert_eq!(ring.dropped, 1);
        ring.push(record("0123456789"));
        assert_eq!(ring.len(), 1, "bytes bound evicts the older records");
        ring.push(record("this one is too long alone"));
        assert!(ring.is_empty(), "a record over the byte bound is not kept");
    }

    #[test]
    fn records_are_numbered_across_evictions() {
        let mut ring = Ring::new(3, 100);
        assert_eq!(ring.next_seq(), 0);
        for m in ["a", "b", "c", "d", "e"] {
            ring.push(record(m));
        }
        assert_eq!(ring.next_seq(), 5);
        let since = |seq| {
            ring.since(seq)
                .map(|r| r.message.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(since(3), ["d", "e"]);
        assert_eq!(since(0), ["c", "d", "e"], "evicted records are gone");
        assert!(since(5).is_empty());
    }

    #[test]
    fn a_follower_wakes_when_a_record_is_logged() {
        let next = with_ring(Ring::next_seq);
        assert!(!wait_for(next + 1_000_000, Duration::from_millis(10)));
        let waiter = std::thread::spawn(move || wait_for(next, Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(50));
        emit(Source::Init, "wake up".into());
        assert!(waiter.join().unwrap());
    }

    #[test]
    fn captured_output_is_drained_after_the_writers_close() {
        let AppOutput {
            stdout,
            stderr,
            drain,
        } = capture(1).unwrap();
        let mut stdout = std::fs::File::from(stdout);
        writeln!(stdout, "hello from a test").unwrap();
        drop((stdout, stderr));
        let t0 = Instant::now();
        drain.drained(Duration::from_secs(10));
        assert!(t0.elapsed() < Duration::from_secs(10), "both pipes hit EOF");
        let seen = with_ring(|r| r.records().any(|rec| rec.message == "hello from a test"));
        assert!(seen);
    }
}
