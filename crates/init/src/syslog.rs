//! Remote syslog: when the `syslog` setting names a server
//! (`udp://HOST:PORT` or `tcp://HOST:PORT`), every log record — init's
//! lines and the app's output — is also shipped there as an RFC 5424
//! message.
//!
//! [`offer`] is called by [`crate::log::emit`] for every record while the
//! logger's lock is held, so it never blocks on the network and never
//! logs: it copies the record into a bounded buffer (at most
//! [`MAX_RECORDS`] records and [`MAX_BYTES`] bytes of messages; when it is
//! full the **oldest** record is dropped and counted) and wakes the
//! shipper thread. [`start`] starts that thread once the network is up,
//! first handing it the records already in the log's ring (the boot so
//! far). The thread sends the records in order:
//!
//! * **udp**: one datagram per record, cut to [`MAX_DATAGRAM`] bytes at a
//!   character boundary. A send the kernel refuses (the target answered
//!   "port unreachable", no route) loses that record.
//! * **tcp**: one connection, each message framed by octet counting
//!   (RFC 6587: `LEN SP MSG`). When the connection cannot be made or
//!   breaks, records wait in the buffer and init reconnects after 1 s,
//!   then 2, 4, … up to 30 s; a write that failed loses the record it
//!   carried. Connects and writes time out after [`CONNECT_TIMEOUT`] and
//!   [`WRITE_TIMEOUT`], so a stalled server cannot wedge the thread.
//!
//! The host name is resolved each time the thread connects. The first
//! time the target cannot be reached, init logs one warning, and one line
//! when it is reachable again; after that only [`stats`] tells (the
//! status API's `syslog`).
//!
//! # The message
//!
//! `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG`, e.g.
//! `<14>1 2026-11-26T15:00:01.512Z my-api app 2 stdout - listening`:
//!
//! | field | init's lines | the app's stdout | the app's stderr |
//! |---|---|---|---|
//! | PRI (facility user = 1) | 14 (info) | 14 (info) | 11 (err) |
//! | APP-NAME | `nodeos-init` | `app` | `app` |
//! | PROCID | `-` | the restart generation (1, 2, …) | the generation |
//! | MSGID | `-` | `stdout` | `stderr` |
//!
//! TIMESTAMP is the record's time, UTC with milliseconds; HOSTNAME is the
//! name given to [`start`] (the VM's host name), reduced to printable
//! ASCII and 255 bytes; there is no structured data (`-`) and no BOM
//! before MSG (the record's line, UTF-8; left out when empty).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nodeos_manifest::console::{Record, Source, Stream, rfc3339_millis};
use nodeos_manifest::settings::{SyslogTarget, SyslogTransport};
use nodeos_manifest::update::SyslogStats;

/// Records the buffer holds at most while they wait to be sent.
pub const MAX_RECORDS: usize = 1000;
/// Bytes of messages the buffer holds at most.
pub const MAX_BYTES: usize = 256 * 1024;
/// Longest UDP datagram sent; longer messages are cut (RFC 5426 asks
/// receivers to take at least 480 bytes and should take 2048).
pub const MAX_DATAGRAM: usize = 2048;
/// How long a TCP connect may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one write to the target may block.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Wait before the first reconnect; it doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between two connection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Facility `user` (RFC 5424 §6.2.1).
const FACILITY_USER: u8 = 1;
/// Severity `informational`: init's lines and the app's stdout.
const SEVERITY_INFO: u8 = 6;
/// Severity `error`: the app's stderr.
const SEVERITY_ERR: u8 = 3;
/// Consecutive UDP sends without an error after which a target that
/// failed counts as reachable again: a refused datagram is reported on
/// the send after it, so a down UDP target alternates failures and
/// "successes".
const UDP_RECOVERY_STREAK: u32 = 10;
/// The first millisecond of year 10000, which RFC 3339 cannot write.
const YEAR_10000_MS: u64 = 253_402_300_800_000;
/// Stack of the shipper thread: formatting and `getaddrinfo` (musl's
/// resolver keeps its buffers on the stack) need little.
const STACK_SIZE: usize = 128 * 1024;

/// Limits and timings of a [`Shipper`]; the defaults are the constants
/// above (tests shorten them).
#[derive(Debug, Clone)]
pub struct Options {
    pub max_records: usize,
    pub max_bytes: usize,
    pub connect_timeout: Duration,
    pub write_timeout: Duration,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_records: MAX_RECORDS,
            max_bytes: MAX_BYTES,
            connect_timeout: CONNECT_TIMEOUT,
            write_timeout: WRITE_TIMEOUT,
            first_backoff: FIRST_BACKOFF,
            max_backoff: MAX_BACKOFF,
        }
    }
}

/// The shipper started by [`start`], if any.
static SHIPPER: OnceLock<Arc<Shipper>> = OnceLock::new();

/// Starts shipping the log to `target`, with `hostname` as the messages'
/// HOSTNAME: one thread, which first sends the records already in the
/// log's ring. Call it once, after the network is up, and not while the
/// logger's lock is held; a second call fails with `AlreadyExists`.
pub fn start(target: &SyslogTarget, hostname: &str) -> io::Result<()> {
    if SHIPPER.get().is_some() {
        return Err(already_started());
    }
    let shipper = Shipper::new(target.clone(), hostname, Options::default());
    // The shipper's thread is not under the logger's lock: it may log.
    shipper.spawn(|line| crate::say!("{line}"))?;
    // Under the logger's lock: a record is either in the ring now or
    // emitted after the shipper is installed, so none is shipped twice
    // and none is missed.
    let installed = crate::log::with_ring(|ring| {
        for record in ring.records() {
            shipper.offer(record);
        }
        SHIPPER.set(Arc::clone(&shipper)).is_ok()
    });
    if !installed {
        shipper.stop();
        return Err(already_started());
    }
    crate::say!(
        "shipping the log to syslog {target} as host {}",
        shipper.hostname
    );
    Ok(())
}

fn already_started() -> io::Error {
    io::Error::new(
        io::ErrorKind::AlreadyExists,
        "the syslog shipper is already running",
    )
}

/// Queues `record` for the syslog target; does nothing before [`start`].
/// Called by [`crate::log::emit`] under the logger's lock: it never
/// blocks (the buffer's lock is only ever held for a push or a pop) and
/// never logs.
pub fn offer(record: &Record) {
    if let Some(shipper) = SHIPPER.get() {
        shipper.offer(record);
    }
}

/// What has been shipped since [`start`]; `None` when no target is set.
pub fn stats() -> Option<SyslogStats> {
    SHIPPER.get().map(|shipper| shipper.stats())
}

/// Waits up to `timeout` for the buffer to be sent (before power-off, so
/// the last lines get out); `true` if it was. Not under the logger's lock.
pub fn flush(timeout: Duration) -> bool {
    SHIPPER.get().is_none_or(|shipper| shipper.flush(timeout))
}

/// A bounded buffer of records and the thread that sends them to one
/// syslog target. [`start`] keeps one in a global; tests make their own.
pub struct Shipper {
    target: SyslogTarget,
    /// HOSTNAME of every message, already sanitised.
    hostname: String,
    options: Options,
    queue: Mutex<Queue>,
    /// Wakes the thread: a record arrived, or [`Shipper::stop`].
    wake: Condvar,
    /// Wakes [`Shipper::flush`]: the buffer is empty and nothing is in flight.
    idle: Condvar,
    sent: AtomicU64,
    dropped: AtomicU64,
    connected: AtomicBool,
}

#[derive(Default)]
struct Queue {
    records: VecDeque<Record>,
    /// Bytes of the messages in `records`.
    bytes: usize,
    /// The thread took a record and has not finished sending it.
    busy: bool,
    stop: bool,
}

impl Shipper {
    pub fn new(target: SyslogTarget, hostname: &str, options: Options) -> Arc<Shipper> {
        Arc::new(Shipper {
            target,
            hostname: sanitise_hostname(hostname),
            options,
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            idle: Condvar::new(),
            sent: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            connected: AtomicBool::new(false),
        })
    }

    /// Starts the thread that sends the buffer. `notice` gets the (at most
    /// two) lines worth logging: the target is unreachable, it is back.
    pub fn spawn(
        self: &Arc<Self>,
        notice: impl Fn(&str) + Send + 'static,
    ) -> io::Result<JoinHandle<()>> {
        let shipper = Arc::clone(self);
        std::thread::Builder::new()
            .name("syslog".into())
            .stack_size(STACK_SIZE)
            .spawn(move || shipper.run(&notice))
    }

    /// Adds a copy of `record` to the buffer, dropping the oldest records
    /// (counted) to stay within the bounds. Never blocks on I/O.
    pub fn offer(&self, record: &Record) {
        let record = record.clone();
        let mut dropped = 0;
        {
            let mut queue = self.lock();
            if queue.stop {
                return;
            }
            queue.bytes += record.message.len();
            queue.records.push_back(record);
            while queue.records.len() > self.options.max_records
                || queue.bytes > self.options.max_bytes
            {
                let Some(old) = queue.records.pop_front() else {
                    break;
                };
                queue.bytes = queue.bytes.saturating_sub(old.message.len());
                dropped += 1;
            }
        }
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        self.wake.notify_one();
    }

    pub fn stats(&self) -> SyslogStats {
        SyslogStats {
            target: self.target.to_string(),
            sent: self.sent.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            connected: self.connected.load(Ordering::Relaxed),
        }
    }

    /// Waits up to `timeout` until the buffer is empty and the last record
    /// taken from it was sent (or failed); `true` if that happened.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut queue = self.lock();
        while !queue.records.is_empty() || queue.busy {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || queue.stop {
                return false;
            }
            queue = self
                .idle
                .wait_timeout(queue, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    /// Ends the thread once it is done with the record in hand; what is
    /// left in the buffer is not sent, and later offers are ignored.
    pub fn stop(&self) {
        self.lock().stop = true;
        self.wake.notify_all();
        self.idle.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Nothing under this lock can panic, but a poisoned lock must not
        // stop the log either.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The thread: wait for records, connect when needed (with backoff),
    /// send them one by one, in order.
    fn run(&self, notice: &dyn Fn(&str)) {
        let mut link: Option<Link> = None;
        let mut health = Health::default();
        let mut backoff = self.options.first_backoff;
        let mut retry_at: Option<Instant> = None;
        // Whether the current TCP connection carried a record: one that
        // breaks before that counts as a failed attempt (backoff).
        let mut used = false;
        loop {
            if !self.wait_for_work(link.is_some(), retry_at) {
                return;
            }
            if link.as_ref().is_some_and(Link::closed_by_peer) {
                link = None;
            }
            let current = match &mut link {
                Some(current) => current,
                None => match Link::open(&self.target, &self.options) {
                    Ok(opened) => {
                        retry_at = None;
                        used = false;
                        if matches!(opened, Link::Tcp(_)) {
                            self.succeeded(&mut health, notice);
                        }
                        link.insert(opened)
                    }
                    Err(e) => {
                        retry_at = Some(Instant::now() + backoff);
                        backoff = backoff.saturating_mul(2).min(self.options.max_backoff);
                        self.failed(&mut health, notice, || {
                            format!(
                                "warning: cannot reach syslog {}: {e}; the log waits in a buffer \
                                 of {} records (the oldest dropped when it is full) until it can",
                                self.target, self.options.max_records
                            )
                        });
                        continue;
                    }
                },
            };
            let Some(record) = self.take() else {
                continue;
            };
            let message = format_message(&record, &self.hostname);
            match current.send(&message) {
                Ok(()) => {
                    used = true;
                    backoff = self.options.first_backoff;
                    self.sent.fetch_add(1, Ordering::Relaxed);
                    self.succeeded(&mut health, notice);
                }
                Err(e) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    if matches!(current, Link::Tcp(_)) {
                        // The frame may be half written: start over.
                        link = None;
                        if !used {
                            retry_at = Some(Instant::now() + backoff);
                            backoff = backoff.saturating_mul(2).min(self.options.max_backoff);
                        }
                    }
                    self.failed(&mut health, notice, || {
                        format!(
                            "warning: cannot send the log to syslog {}: {e}; records are lost \
                             until it is back",
                            self.target
                        )
                    });
                }
            }
        }
    }

    /// Blocks until there is a record to send and, without a link, the
    /// time to retry has come; `false` when the shipper is stopped.
    fn wait_for_work(&self, linked: bool, retry_at: Option<Instant>) -> bool {
        let mut queue = self.lock();
        queue.busy = false;
        loop {
            if queue.stop {
                return false;
            }
            if queue.records.is_empty() {
                self.idle.notify_all();
                queue = self
                    .wake
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            let left = match retry_at {
                Some(at) if !linked => at.saturating_duration_since(Instant::now()),
                _ => Duration::ZERO,
            };
            if left.is_zero() {
                return true;
            }
            queue = self
                .wake
                .wait_timeout(queue, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// The oldest record, marked in flight.
    fn take(&self) -> Option<Record> {
        let mut queue = self.lock();
        let record = queue.records.pop_front()?;
        queue.bytes = queue.bytes.saturating_sub(record.message.len());
        queue.busy = true;
        Some(record)
    }

    fn succeeded(&self, health: &mut Health, notice: &dyn Fn(&str)) {
        health.streak = health.streak.saturating_add(1);
        let needed = match (self.target.transport(), health.failed) {
            (SyslogTransport::Udp, true) => UDP_RECOVERY_STREAK,
            _ => 1,
        };
        if health.streak < needed {
            return;
        }
        self.connected.store(true, Ordering::Relaxed);
        health.failed = false;
        if health.warned && !health.recovered {
            health.recovered = true;
            notice(&format!(
                "syslog {} is reachable again ({} records dropped so far)",
                self.target,
                self.dropped.load(Ordering::Relaxed)
            ));
        }
    }

    fn failed(&self, health: &mut Health, notice: &dyn Fn(&str), line: impl FnOnce() -> String) {
        self.connected.store(false, Ordering::Relaxed);
        health.streak = 0;
        health.failed = true;
        if !health.warned {
            health.warned = true;
            notice(&line());
        }
    }
}

/// Whether the target works, and what has been said about it.
#[derive(Default)]
struct Health {
    /// Sends (or connects) in a row that worked.
    streak: u32,
    /// The last attempts failed and the target has not recovered since.
    failed: bool,
    /// The one "unreachable" warning was logged.
    warned: bool,
    /// The one "reachable again" line was logged.
    recovered: bool,
}

/// A way to the target: a connected UDP socket or a TCP connection.
enum Link {
    Udp(UdpSocket),
    Tcp(TcpStream),
}

impl Link {
    /// Resolves the target's host and connects to the first address that
    /// takes it.
    fn open(target: &SyslogTarget, options: &Options) -> io::Result<Link> {
        let addrs: Vec<SocketAddr> = (target.host(), target.port()).to_socket_addrs()?.collect();
        let mut last = io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} has no address", target.host()),
        );
        for addr in addrs {
            let opened = match target.transport() {
                SyslogTransport::Udp => open_udp(addr, options),
                SyslogTransport::Tcp => open_tcp(addr, options),
            };
            match opened {
                Ok(link) => return Ok(link),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Whether the server closed or reset the TCP connection (checked
    /// before each send: a write into a closed connection would seem to
    /// work and lose the record). Anything the server sent is discarded,
    /// up to 64 KiB a time: a server that keeps sending is not closed.
    fn closed_by_peer(&self) -> bool {
        let Link::Tcp(stream) = self else {
            return false;
        };
        use rustix::net::RecvFlags;
        let mut buf = [0u8; 4096];
        for _ in 0..16 {
            match rustix::net::recv(stream, &mut buf[..], RecvFlags::DONTWAIT) {
                Ok((_, 0)) => return true,
                Ok(_) => continue,
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::AGAIN) => return false,
                Err(_) => return true,
            }
        }
        false
    }

    fn send(&mut self, message: &str) -> io::Result<()> {
        match self {
            Link::Udp(socket) => {
                socket.send(truncate(message, MAX_DATAGRAM).as_bytes())?;
                Ok(())
            }
            Link::Tcp(stream) => {
                let mut frame = Vec::with_capacity(message.len() + 8);
                let _ = write!(frame, "{} ", message.len());
                frame.extend_from_slice(message.as_bytes());
                stream.write_all(&frame)
            }
        }
    }
}

fn open_udp(addr: SocketAddr, options: &Options) -> io::Result<Link> {
    let local: SocketAddr = match addr {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local)?;
    socket.connect(addr)?;
    socket.set_write_timeout(Some(options.write_timeout))?;
    Ok(Link::Udp(socket))
}

fn open_tcp(addr: SocketAddr, options: &Options) -> io::Result<Link> {
    let stream = TcpStream::connect_timeout(&addr, options.connect_timeout)?;
    stream.set_write_timeout(Some(options.write_timeout))?;
    Ok(Link::Tcp(stream))
}

/// `record` as an RFC 5424 message (see the module's documentation);
/// `hostname` must already be sanitised ([`sanitise_hostname`]).
pub fn format_message(record: &Record, hostname: &str) -> String {
    let (severity, app_name, generation, msgid) = match record.source {
        Source::Init => (SEVERITY_INFO, "nodeos-init", None, "-"),
        Source::App { generation, stream } => match stream {
            Stream::Stdout => (SEVERITY_INFO, "app", Some(generation), "stdout"),
            Stream::Stderr => (SEVERITY_ERR, "app", Some(generation), "stderr"),
        },
    };
    let pri = FACILITY_USER * 8 + severity;
    let timestamp = if record.unix_ms < YEAR_10000_MS {
        rfc3339_millis(record.unix_ms)
    } else {
        "-".to_owned()
    };
    let mut out = String::with_capacity(64 + hostname.len() + record.message.len());
    let _ = write!(out, "<{pri}>1 {timestamp} {hostname} {app_name} ");
    match generation {
        Some(generation) => {
            let _ = write!(out, "{generation}");
        }
        None => out.push('-'),
    }
    let _ = write!(out, " {msgid} -");
    if !record.message.is_empty() {
        out.push(' ');
        out.push_str(&record.message);
    }
    out
}

/// The HOSTNAME field: printable ASCII only (anything else becomes `-`),
/// at most 255 bytes, `-` (unknown) when empty.
pub fn sanitise_hostname(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '-' })
        .take(255)
        .collect();
    if clean.is_empty() {
        "-".to_owned()
    } else {
        clean
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a
/// character boundary.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;
    use std::sync::mpsc;

    const TIME: u64 = 1_795_705_201_123; // 2026-11-26T15:00:01.123Z

    fn init(message: &str) -> Record {
        Record {
            unix_ms: TIME,
            source: Source::Init,
            message: message.into(),
        }
    }

    fn app(generation: u32, stream: Stream, message: &str) -> Record {
        Record {
            unix_ms: TIME + 389,
            source: Source::App { generation, stream },
            message: message.into(),
        }
    }

    fn target(url: &str) -> SyslogTarget {
        url.parse().unwrap()
    }

    /// Short timings, so that reconnect tests take milliseconds.
    fn quick() -> Options {
        Options {
            connect_timeout: Duration::from_secs(2),
            write_timeout: Duration::from_secs(2),
            first_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
            ..Options::default()
        }
    }

    /// A shipper whose notices arrive on the returned channel.
    fn shipper(url: &str, options: Options) -> (Arc<Shipper>, mpsc::Receiver<String>) {
        let shipper = Shipper::new(target(url), "my-api", options);
        let (tx, notices) = mpsc::channel();
        shipper
            .spawn(move |line| {
                let _ = tx.send(line.to_owned());
            })
            .unwrap();
        (shipper, notices)
    }

    /// A TCP port on 127.0.0.1 that nothing listens on (for now).
    fn closed_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// Reads one octet-counted frame.
    fn read_frame(stream: &mut TcpStream) -> String {
        let mut len = Vec::new();
        let mut byte = [0u8];
        loop {
            stream.read_exact(&mut byte).unwrap();
            if byte[0] == b' ' {
                break;
            }
            assert!(byte[0].is_ascii_digit(), "frame length: {len:?} {byte:?}");
            len.push(byte[0]);
        }
        let len: usize = String::from_utf8(len).unwrap().parse().unwrap();
        let mut message = vec![0u8; len];
        stream.read_exact(&mut message).unwrap();
        String::from_utf8(message).unwrap()
    }

    /// The next connection to `listener`, within 10 s.
    fn accept(listener: &TcpListener) -> TcpStream {
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false).unwrap();
                    stream
                        .set_read_timeout(Some(Duration::from_secs(10)))
                        .unwrap();
                    return stream;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "no connection");
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    }

    /// Polls `f` until it holds, for at most 10 s.
    fn eventually(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting: {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn messages_are_rfc5424_with_severity_by_stream() {
        let h = "my-api";
        assert_eq!(
            format_message(&init("starting app"), h),
            "<14>1 2026-11-26T15:00:01.123Z my-api nodeos-init - - - starting app"
        );
        assert_eq!(
            format_message(&app(2, Stream::Stdout, "listening on 3000"), h),
            "<14>1 2026-11-26T15:00:01.512Z my-api app 2 stdout - listening on 3000"
        );
        assert_eq!(
            format_message(&app(1, Stream::Stderr, "Error: ünï"), h),
            "<11>1 2026-11-26T15:00:01.512Z my-api app 1 stderr - Error: ünï"
        );
        assert_eq!(
            format_message(&app(1, Stream::Stdout, ""), h),
            "<14>1 2026-11-26T15:00:01.512Z my-api app 1 stdout -",
            "an empty line has no MSG"
        );
        let far = Record {
            unix_ms: YEAR_10000_MS,
            ..init("x")
        };
        assert_eq!(
            format_message(&far, h),
            "<14>1 - my-api nodeos-init - - - x"
        );
    }

    #[test]
    fn hostnames_are_printable_ascii_and_bounded() {
        assert_eq!(sanitise_hostname("my-api"), "my-api");
        assert_eq!(sanitise_hostname(""), "-");
        assert_eq!(sanitise_hostname("my api\tü"), "my-api--");
        assert_eq!(sanitise_hostname(&"x".repeat(300)).len(), 255);
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate("abc", 10), "abc");
        assert_eq!(truncate("abc", 2), "ab");
        assert_eq!(truncate("aé", 2), "a", "é is two bytes");
        assert_eq!(truncate("aé", 3), "aé");
    }

    #[test]
    fn the_buffer_is_bounded_by_count_and_bytes_dropping_the_oldest() {
        // No thread: nothing leaves the buffer.
        let options = Options {
            max_records: 10,
            max_bytes: 100,
            ..Options::default()
        };
        let shipper = Shipper::new(target("udp://127.0.0.1:9"), "h", options);
        for i in 0..25 {
            shipper.offer(&init(&i.to_string()));
        }
        let kept: Vec<String> = shipper
            .lock()
            .records
            .iter()
            .map(|r| r.message.clone())
            .collect();
        assert_eq!(kept, (15..25).map(|i| i.to_string()).collect::<Vec<_>>());
        assert_eq!(shipper.stats().dropped, 15);

        for _ in 0..5 {
            shipper.offer(&init(&"y".repeat(30)));
        }
        let queue = shipper.lock();
        assert_eq!(queue.records.len(), 3, "3 × 30 bytes fit in 100");
        assert_eq!(queue.bytes, 90);
        drop(queue);
        assert_eq!(shipper.stats().dropped, 15 + 10 + 2);
        assert_eq!(shipper.stats().sent, 0);
    }

    #[test]
    fn a_udp_listener_receives_one_rfc5424_datagram_per_record() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let url = format!("udp://{}", server.local_addr().unwrap());
        let (shipper, _notices) = shipper(&url, quick());
        let long = "é".repeat(3000);
        let records = [
            init("starting app"),
            app(1, Stream::Stdout, "listening"),
            app(1, Stream::Stderr, "oops"),
            app(1, Stream::Stdout, &long),
        ];
        for record in &records {
            shipper.offer(record);
        }
        let mut buf = [0u8; 65536];
        let mut received = Vec::new();
        for _ in &records {
            let n = server.recv(&mut buf).unwrap();
            received.push(String::from_utf8(buf[..n].to_vec()).expect("cut at a char boundary"));
        }
        assert_eq!(
            received[..3],
            [
                "<14>1 2026-11-26T15:00:01.123Z my-api nodeos-init - - - starting app",
                "<14>1 2026-11-26T15:00:01.512Z my-api app 1 stdout - listening",
                "<11>1 2026-11-26T15:00:01.512Z my-api app 1 stderr - oops",
            ]
        );
        assert!(received[3].len() <= MAX_DATAGRAM && received[3].len() > MAX_DATAGRAM - 2);
        assert!(received[3].starts_with("<14>1 2026-11-26T15:00:01.512Z my-api app 1 stdout - éé"));
        assert!(shipper.flush(Duration::from_secs(10)));
        let stats = shipper.stats();
        assert_eq!(stats.target, url);
        assert_eq!((stats.sent, stats.dropped, stats.connected), (4, 0, true));
        shipper.stop();
    }

    #[test]
    fn a_tcp_listener_receives_octet_counted_frames() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("tcp://{}", listener.local_addr().unwrap());
        let (shipper, _notices) = shipper(&url, quick());
        shipper.offer(&init("starting app"));
        shipper.offer(&app(3, Stream::Stderr, "line with\nnewline ü"));
        let mut stream = accept(&listener);
        let expected = "<14>1 2026-11-26T15:00:01.123Z my-api nodeos-init - - - starting app";
        let mut frame = vec![0u8; format!("{} {expected}", expected.len()).len()];
        stream.read_exact(&mut frame).unwrap();
        assert_eq!(
            String::from_utf8(frame).unwrap(),
            format!("{} {expected}", expected.len()),
            "LEN SP MSG"
        );
        assert_eq!(
            read_frame(&mut stream),
            "<11>1 2026-11-26T15:00:01.512Z my-api app 3 stderr - line with\nnewline ü"
        );
        assert!(shipper.flush(Duration::from_secs(10)));
        assert_eq!(shipper.stats().sent, 2);
        assert!(shipper.stats().connected);
        shipper.stop();
    }

    #[test]
    fn a_tcp_target_that_comes_up_late_gets_the_buffered_records() {
        let port = closed_port();
        let (shipper, notices) = shipper(&format!("tcp://127.0.0.1:{port}"), quick());
        for i in 0..3 {
            shipper.offer(&init(&format!("early {i}")));
        }
        let warning = notices.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(
            warning.starts_with(&format!(
                "warning: cannot reach syslog tcp://127.0.0.1:{port}: "
            )),
            "{warning}"
        );
        assert!(!shipper.stats().connected);
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let mut stream = accept(&listener);
        for i in 0..3 {
            assert!(read_frame(&mut stream).ends_with(&format!(" - - - early {i}")));
        }
        let back = notices.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(back.contains("is reachable again"), "{back}");
        let stats = shipper.stats();
        assert_eq!((stats.sent, stats.dropped, stats.connected), (3, 0, true));
        shipper.stop();
    }

    #[test]
    fn a_closed_tcp_connection_is_reopened_without_losing_records() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("tcp://{}", listener.local_addr().unwrap());
        let (shipper, _notices) = shipper(&url, quick());
        shipper.offer(&init("one"));
        let mut first = accept(&listener);
        assert!(read_frame(&mut first).ends_with(" one"));
        assert!(shipper.flush(Duration::from_secs(10)));
        drop(first);
        shipper.offer(&init("two"));
        let mut second = accept(&listener);
        assert!(read_frame(&mut second).ends_with(" two"));
        assert!(shipper.flush(Duration::from_secs(10)));
        assert_eq!((shipper.stats().sent, shipper.stats().dropped), (2, 0));
        shipper.stop();
    }

    #[test]
    fn an_unreachable_target_only_counts_drops_and_offer_never_blocks() {
        let port = closed_port();
        let (shipper, notices) = shipper(&format!("tcp://127.0.0.1:{port}"), Options::default());
        shipper.offer(&init("first"));
        // The thread has failed to connect and waits a second to retry.
        notices.recv_timeout(Duration::from_secs(10)).unwrap();
        let t0 = Instant::now();
        for i in 0..5000 {
            shipper.offer(&app(1, Stream::Stdout, &format!("line {i}")));
        }
        let took = t0.elapsed();
        assert!(took < Duration::from_secs(1), "5000 offers took {took:?}");
        let stats = shipper.stats();
        assert_eq!(stats.sent, 0);
        assert_eq!(stats.dropped, 5001 - MAX_RECORDS as u64);
        assert!(!stats.connected);
        let oldest = shipper.lock().records.front().unwrap().message.clone();
        assert_eq!(oldest, "line 4000", "the oldest records were dropped");
        shipper.stop();
    }

    #[test]
    fn a_refused_udp_target_counts_drops() {
        let port = {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            socket.local_addr().unwrap().port()
        };
        let (shipper, notices) = shipper(&format!("udp://127.0.0.1:{port}"), quick());
        eventually("a refused datagram", || {
            shipper.offer(&init("anyone?"));
            shipper.flush(Duration::from_secs(10));
            shipper.stats().dropped > 0
        });
        let warning = notices.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(
            warning.contains("cannot send the log to syslog udp://"),
            "{warning}"
        );
        assert!(!shipper.stats().connected);
        shipper.stop();
    }

    #[test]
    fn a_stalled_tcp_target_does_not_block_offers() {
        // The server accepts but never reads: the thread ends up blocked in
        // a write, and the buffer fills and drops instead of the caller
        // waiting.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("tcp://{}", listener.local_addr().unwrap());
        let options = Options {
            write_timeout: Duration::from_secs(60),
            ..quick()
        };
        let (shipper, _notices) = shipper(&url, options);
        shipper.offer(&init("hello"));
        let _stalled = accept(&listener);
        let big = "x".repeat(16 * 1024);
        let t0 = Instant::now();
        for _ in 0..3000 {
            shipper.offer(&app(1, Stream::Stdout, &big));
        }
        let took = t0.elapsed();
        assert!(took < Duration::from_secs(5), "3000 offers took {took:?}");
        eventually("the buffer overflows", || shipper.stats().dropped > 0);
        assert!(shipper.lock().bytes <= MAX_BYTES);
        shipper.stop();
    }

    /// The only test of the global: before [`start`] nothing happens;
    /// `start` ships the ring (the boot so far) and runs only once.
    #[test]
    fn start_ships_the_boot_log_so_far_and_runs_once() {
        offer(&init("nobody listens"));
        assert_eq!(stats(), None);
        assert!(flush(Duration::ZERO));

        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        crate::say!("syslog test: logged before the shipper started");
        let url = target(&format!("udp://{}", server.local_addr().unwrap()));
        start(&url, "test host").unwrap();
        let mut buf = [0u8; 65536];
        loop {
            let n = server.recv(&mut buf).expect("the boot log arrives");
            let message = String::from_utf8_lossy(&buf[..n]);
            if message.ends_with("syslog test: logged before the shipper started") {
                assert!(
                    message.contains(" test-host nodeos-init - - - "),
                    "{message}"
                );
                break;
            }
        }
        assert_eq!(stats().unwrap().target, url.to_string());
        let again = start(&url, "test host").unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::AlreadyExists);
    }
}
