//! Profiles of the running app on demand, through node's inspector: a CPU
//! profile over a duration (a `.cpuprofile`) or a heap snapshot (a
//! `.heapsnapshot`), both in the Chrome DevTools formats.
//!
//! How ([`take`]):
//!
//! 1. **open**: SIGUSR1 makes node open its inspector on 127.0.0.1:9229
//!    (node's default: loopback only, never reachable from outside the
//!    guest). It is sent only if node catches it (`SigCgt` in
//!    `/proc/<pid>/status`): to a process that does not, it would be fatal.
//! 2. **find**: `GET /json/list` on that port, polled until it answers,
//!    gives the target's `webSocketDebuggerUrl`; only
//!    `ws://127.0.0.1:9229/…` is accepted.
//! 3. **profile**: the Chrome DevTools Protocol over a websocket
//!    ([`crate::websocket`]), after checking that the inspector is the
//!    app's (`process.pid`). The profile goes to the caller's sink as it
//!    comes: a heap snapshot chunk by chunk, never whole in init's memory.
//! 4. **close**: `process._debugEnd()` (what `inspector.close()` calls)
//!    closes the inspector again, and port 9229 is watched until it
//!    refuses connections. An inspector that was already open before the
//!    signal (node started with `--inspect`) is left open.
//!
//! One profile at a time ([`busy`]); every step has a deadline, so a hung
//! inspector cannot wedge the calling thread.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::websocket;

/// Where SIGUSR1 makes node open its inspector (node's default).
const INSPECTOR: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9229));
/// The prefix of the only websocket URL followed.
const WS_PREFIX: &str = "ws://127.0.0.1:9229/";
/// CPU sampling interval in microseconds (Chrome DevTools' default).
const SAMPLING_INTERVAL_US: u32 = 1000;
/// Longest one `GET /json/list` may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest `/json/list` answer read.
const MAX_LIST: usize = 1024 * 1024;
/// Time between two polls of the inspector's port.
const POLL: Duration = Duration::from_millis(100);
/// How often a CPU profile asks whether its client has gone.
const GONE_POLL: Duration = Duration::from_millis(250);

/// The longest CPU profile: longer durations are cut to it.
pub const MAX_CPU: Duration = Duration::from_secs(600);

/// What to profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// CPU samples over this long (at most [`MAX_CPU`]), every millisecond.
    Cpu(Duration),
    /// A snapshot of the JavaScript heap.
    Heap,
}

impl Kind {
    /// The file extension Chrome DevTools expects for this kind of profile.
    pub fn extension(self) -> &'static str {
        match self {
            Kind::Cpu(_) => "cpuprofile",
            Kind::Heap => "heapsnapshot",
        }
    }
}

/// Why a profile could not be taken (or finished).
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("a profile is already being taken; try again when it is done")]
    Busy,
    #[error("the app is not running")]
    NoApp,
    #[error(
        "the app (pid {pid}) does not catch SIGUSR1 (not node, or node started with \
         --disable-sigusr1), so it cannot open its inspector; the signal was not sent"
    )]
    NoDebugSignal { pid: i32 },
    #[error("cannot send SIGUSR1 to the app (pid {pid})")]
    Signal {
        pid: i32,
        #[source]
        source: io::Error,
    },
    #[error(
        "node's inspector did not open on 127.0.0.1:9229 within {}s after SIGUSR1 \
         (node without the inspector, the signal taken by the app, or the port in use); \
         last: {last}",
        waited.as_secs()
    )]
    InspectorNotUp { waited: Duration, last: String },
    #[error(
        "node's inspector did not answer {method} in time{}",
        timeout_hint(method)
    )]
    TimedOut { method: String },
    #[error("inspector protocol: {0}")]
    Protocol(String),
    #[error("connection to node's inspector")]
    Io(#[from] websocket::Error),
    #[error("the one who asked for the profile has gone")]
    Gone,
    #[error("cannot pass on the profile")]
    Sink(#[source] io::Error),
}

/// Why `method` may time out, for [`ProfileError::TimedOut`].
fn timeout_hint(method: &str) -> &'static str {
    match method {
        "HeapProfiler.takeHeapSnapshot" => {
            " (node 22 and later take a heap snapshot only between two turns of the \
             event loop: not while the app blocks it)"
        }
        _ => "",
    }
}

/// The time limits of a profile.
struct Limits {
    /// From SIGUSR1 until `/json/list` answers.
    inspector_up: Duration,
    /// For a CPU profile: its duration plus this, from the request on.
    cpu_slack: Duration,
    /// For a heap snapshot, from the request on.
    heap: Duration,
    /// Closing the inspector until its port refuses connections.
    close: Duration,
}

const LIMITS: Limits = Limits {
    inspector_up: Duration::from_secs(10),
    cpu_slack: Duration::from_secs(30),
    heap: Duration::from_secs(300),
    close: Duration::from_secs(5),
};

/// Set while a profile is being taken.
static BUSY: AtomicBool = AtomicBool::new(false);

/// Whether a profile is being taken now.
pub fn busy() -> bool {
    BUSY.load(Ordering::Acquire)
}

/// Holds [`BUSY`] until dropped.
struct BusyGuard;

impl BusyGuard {
    fn claim() -> Option<Self> {
        BUSY.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| BusyGuard)
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        BUSY.store(false, Ordering::Release);
    }
}

/// Takes a profile of node with `pid` and passes it to `sink`, in one or
/// more pieces whose concatenation is the file (see [`Kind::extension`]).
///
/// `sink` is called only once the profile has started: an error before its
/// first call means nothing was passed on; an error after it means the
/// profile passed on so far is incomplete. A second profile while one is
/// being taken is refused at once with [`ProfileError::Busy`]. While a CPU
/// profile runs, `gone` is asked a few times a second whether the one who
/// asked for it has gone ([`ProfileError::Gone`]).
pub fn take(
    pid: i32,
    kind: Kind,
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    gone: &dyn Fn() -> bool,
) -> Result<(), ProfileError> {
    take_within(pid, kind, sink, gone, &LIMITS)
}

fn take_within(
    pid: i32,
    kind: Kind,
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    gone: &dyn Fn() -> bool,
    limits: &Limits,
) -> Result<(), ProfileError> {
    let _busy = BusyGuard::claim().ok_or(ProfileError::Busy)?;
    let started = Instant::now();
    let deadline = started
        + match kind {
            Kind::Cpu(duration) => duration.min(MAX_CPU) + limits.cpu_slack,
            Kind::Heap => limits.heap,
        };
    let process = check_app(pid)?;
    let was_open = TcpStream::connect_timeout(&INSPECTOR, HTTP_TIMEOUT).is_ok();
    rustix::process::kill_process(process, Signal::USR1).map_err(|e| match e {
        rustix::io::Errno::SRCH => ProfileError::NoApp,
        e => ProfileError::Signal {
            pid,
            source: e.into(),
        },
    })?;
    let path = ws_path(&find_target(process, limits.inspector_up)?)?;
    let mut inspector = match Inspector::connect(&path, deadline) {
        Ok(inspector) => inspector,
        Err(e) => {
            if !was_open {
                close_inspector(None, &path, limits.close);
            }
            return Err(e);
        }
    };
    match inspector.pid(deadline) {
        Ok(owner) if owner == i64::from(pid) => {}
        // Another process's inspector: not ours to close.
        Ok(owner) => {
            inspector.ws.close(Instant::now() + limits.close);
            return Err(ProfileError::Protocol(format!(
                "the inspector on 127.0.0.1:9229 is pid {owner}'s, not the app's (pid {pid})"
            )));
        }
        Err(e) => {
            if !was_open {
                close_inspector(Some(inspector), &path, limits.close);
            }
            return Err(e);
        }
    }
    let result = match kind {
        Kind::Cpu(duration) => {
            cpu_profile(&mut inspector, duration.min(MAX_CPU), sink, gone, deadline)
        }
        Kind::Heap => heap_snapshot(&mut inspector, sink, deadline),
    };
    if was_open {
        inspector.ws.close(Instant::now() + limits.close);
    } else {
        close_inspector(Some(inspector), &path, limits.close);
    }
    result
}

/// The app's pid, if it is a live process that catches SIGUSR1.
fn check_app(pid: i32) -> Result<Pid, ProfileError> {
    let process = Pid::from_raw(pid).filter(|p| p.as_raw_nonzero().get() > 0);
    let process = process.ok_or(ProfileError::NoApp)?;
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|_| ProfileError::NoApp)?;
    match catches_sigusr1(&status) {
        None => Err(ProfileError::NoApp),
        Some(false) => Err(ProfileError::NoDebugSignal { pid }),
        Some(true) => Ok(process),
    }
}

/// From `/proc/<pid>/status`: whether the process catches SIGUSR1, or
/// `None` for a zombie (or a text without the fields).
fn catches_sigusr1(status: &str) -> Option<bool> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    if field("State")?.starts_with('Z') {
        return None;
    }
    let caught = u64::from_str_radix(field("SigCgt")?, 16).ok()?;
    Some(caught & (1 << (Signal::USR1.as_raw() - 1)) != 0)
}

/// A target of node's inspector, as `/json/list` lists it.
#[derive(Debug, Deserialize)]
struct Target {
    #[serde(rename = "webSocketDebuggerUrl")]
    ws_url: Option<String>,
}

/// Polls `/json/list` for up to `wait` until it names a target, and
/// returns the URL of its websocket.
fn find_target(pid: Pid, wait: Duration) -> Result<String, ProfileError> {
    let deadline = Instant::now() + wait;
    loop {
        let tried = Instant::now();
        let last = match list_targets(tried + HTTP_TIMEOUT) {
            Ok(targets) => match targets.into_iter().find_map(|t| t.ws_url) {
                Some(url) => return Ok(url),
                None => "no target listed".to_owned(),
            },
            Err(e) => e,
        };
        if rustix::process::test_kill_process(pid).is_err() {
            return Err(ProfileError::NoApp);
        }
        if Instant::now() >= deadline {
            return Err(ProfileError::InspectorNotUp { waited: wait, last });
        }
        std::thread::sleep(POLL.saturating_sub(tried.elapsed()));
    }
}

/// The path of an inspector websocket URL, if it is on 127.0.0.1:9229 and
/// its path is a plain id (it goes into a request line). (Node builds the
/// URL from the `Host` of the request, so this refuses only what is not
/// node's inspector.)
fn ws_path(url: &str) -> Result<String, ProfileError> {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b == b'-';
    match url.strip_prefix(WS_PREFIX) {
        Some(id) if !id.is_empty() && id.bytes().all(plain) => Ok(format!("/{id}")),
        _ => Err(ProfileError::Protocol(format!(
            "the inspector's websocket is {url:?}, not {WS_PREFIX}<id>; refused"
        ))),
    }
}

/// One `GET /json/list` on the inspector's port, answered by `deadline`.
fn list_targets(deadline: Instant) -> Result<Vec<Target>, String> {
    let mut stream =
        TcpStream::connect_timeout(&INSPECTOR, HTTP_TIMEOUT).map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(HTTP_TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /json/list HTTP/1.1\r\nHost: 127.0.0.1:9229\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    read_list(&mut stream, deadline)
}

/// The targets in the answer to `GET /json/list` on `stream`: a whole
/// answer of at most [`MAX_LIST`] bytes by `deadline`, or an error.
fn read_list(stream: &mut TcpStream, deadline: Instant) -> Result<Vec<Target>, String> {
    let fail = |e: io::Error| e.to_string();
    let mut answer = Vec::new();
    let mut buf = [0; 16 * 1024];
    loop {
        if let Some((head, Some(len))) = parse_answer(&answer)? {
            if len > MAX_LIST {
                return Err(format!(
                    "/json/list: a body of {len} bytes, over {MAX_LIST}"
                ));
            }
            if answer.len() >= head + len {
                let body = &answer[head..head + len];
                return serde_json::from_slice(body).map_err(|e| format!("/json/list: {e}"));
            }
        }
        if answer.len() > MAX_LIST {
            return Err(format!("/json/list: answer over {MAX_LIST} bytes"));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("/json/list: no whole answer in time".to_owned());
        }
        stream
            .set_read_timeout(Some(left.min(HTTP_TIMEOUT)))
            .map_err(fail)?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Nothing came in time: the deadline above says so.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    // The end of the connection ends a body without a length.
    match parse_answer(&answer)? {
        Some((head, _)) => {
            serde_json::from_slice(&answer[head..]).map_err(|e| format!("/json/list: {e}"))
        }
        None => Err("/json/list: incomplete answer".to_owned()),
    }
}

/// The length of a complete `200` answer head and its `Content-Length`,
/// or `None` while the head is incomplete.
fn parse_answer(answer: &[u8]) -> Result<Option<(usize, Option<usize>)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(answer) {
        Ok(httparse::Status::Complete(head)) => head,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("/json/list: not an HTTP answer: {e}")),
    };
    if response.code != Some(200) {
        return Err(format!("/json/list: HTTP {}", response.code.unwrap_or(0)));
    }
    let length = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("Content-Length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok());
    Ok(Some((head, length)))
}

/// What every message from the inspector is first read as: an answer has
/// the `id` of its command, an event has a `method`.
#[derive(Deserialize)]
struct Incoming {
    id: Option<u64>,
    method: Option<String>,
}

/// An answer, read again once its id is known.
#[derive(Deserialize)]
struct Answer<T> {
    result: Option<T>,
    error: Option<CommandError>,
}

#[derive(Deserialize)]
struct CommandError {
    message: String,
}

/// The answer to `Runtime.evaluate` (with `returnByValue`).
#[derive(Deserialize)]
struct Evaluated {
    result: RemoteObject,
}

#[derive(Deserialize)]
struct RemoteObject {
    value: Option<Value>,
}

/// The answer to `Profiler.stop`.
#[derive(Deserialize)]
struct Stopped {
    profile: CpuProfile,
}

/// A `.cpuprofile`: the two long arrays (a number per sample) typed, so
/// that a long profile costs init 16 bytes a sample, not a JSON value's 64;
/// everything else as it came.
#[derive(Deserialize, Serialize)]
struct CpuProfile {
    nodes: Vec<Value>,
    samples: Vec<u64>,
    #[serde(rename = "timeDeltas")]
    time_deltas: Vec<i64>,
    #[serde(flatten)]
    rest: serde_json::Map<String, Value>,
}

/// A `HeapProfiler.addHeapSnapshotChunk` event.
#[derive(Deserialize)]
struct ChunkEvent {
    params: Chunk,
}

#[derive(Deserialize)]
struct Chunk {
    chunk: String,
}

/// Handles the events that come before an answer: (method, whole message).
type OnEvent<'a> = dyn FnMut(&str, &str) -> Result<(), ProfileError> + 'a;

/// A Chrome DevTools Protocol session with node's inspector.
struct Inspector {
    ws: websocket::Client,
    last_id: u64,
}

impl Inspector {
    fn connect(path: &str, deadline: Instant) -> Result<Self, ProfileError> {
        let ws = websocket::Client::connect(INSPECTOR, path, deadline)?;
        Ok(Inspector { ws, last_id: 0 })
    }

    /// Sends a command without waiting for its answer; returns its id.
    fn send(&mut self, method: &str, params: Value) -> Result<u64, ProfileError> {
        self.last_id += 1;
        let id = self.last_id;
        let message = json!({ "id": id, "method": method, "params": params });
        self.ws.send_text(&message.to_string())?;
        Ok(id)
    }

    /// Calls `method` and returns its result. Events that arrive before the
    /// answer go to `on_event`.
    fn call<T: DeserializeOwned>(
        &mut self,
        method: &str,
        params: Value,
        deadline: Instant,
        on_event: &mut OnEvent,
    ) -> Result<T, ProfileError> {
        let not_cdp = |e: serde_json::Error| {
            ProfileError::Protocol(format!("a message that is not CDP ({method}): {e}"))
        };
        let id = self.send(method, params)?;
        loop {
            let message = self.ws.recv(deadline).map_err(|e| match e {
                websocket::Error::TimedOut => ProfileError::TimedOut {
                    method: method.to_owned(),
                },
                e => ProfileError::Io(e),
            })?;
            let websocket::Message::Text(text) = message else {
                return Err(ProfileError::Protocol("a binary message".to_owned()));
            };
            match serde_json::from_str(&text).map_err(not_cdp)? {
                Incoming { id: Some(got), .. } if got == id => {
                    let answer: Answer<T> = serde_json::from_str(&text).map_err(not_cdp)?;
                    return match answer {
                        Answer { error: Some(e), .. } => Err(ProfileError::Protocol(format!(
                            "{method} failed: {}",
                            e.message
                        ))),
                        Answer {
                            result: Some(result),
                            ..
                        } => Ok(result),
                        Answer { result: None, .. } => Err(ProfileError::Protocol(format!(
                            "{method} answered without a result"
                        ))),
                    };
                }
                Incoming {
                    id: None,
                    method: Some(event),
                } => on_event(&event, &text)?,
                Incoming { .. } => {}
            }
        }
    }

    /// Calls a command whose result does not matter.
    fn command(
        &mut self,
        method: &str,
        params: Value,
        deadline: Instant,
    ) -> Result<(), ProfileError> {
        self.call::<IgnoredAny>(method, params, deadline, &mut ignore)?;
        Ok(())
    }

    /// The pid of the node process behind the inspector.
    fn pid(&mut self, deadline: Instant) -> Result<i64, ProfileError> {
        let params = json!({ "expression": "process.pid", "returnByValue": true });
        let evaluated: Evaluated = self.call("Runtime.evaluate", params, deadline, &mut ignore)?;
        let value = evaluated.result.value.unwrap_or_default();
        value
            .as_i64()
            .ok_or_else(|| ProfileError::Protocol(format!("process.pid evaluated to {value}")))
    }
}

fn ignore(_: &str, _: &str) -> Result<(), ProfileError> {
    Ok(())
}

/// Samples the CPU for `duration` and passes the profile on, serialised
/// straight into the sink.
fn cpu_profile(
    inspector: &mut Inspector,
    duration: Duration,
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    gone: &dyn Fn() -> bool,
    deadline: Instant,
) -> Result<(), ProfileError> {
    inspector.command("Profiler.enable", json!({}), deadline)?;
    let interval = json!({ "interval": SAMPLING_INTERVAL_US });
    inspector.command("Profiler.setSamplingInterval", interval, deadline)?;
    inspector.command("Profiler.start", json!({}), deadline)?;
    let end = Instant::now() + duration;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        if gone() {
            // Closing the inspector session stops the profiler.
            return Err(ProfileError::Gone);
        }
        std::thread::sleep(left.min(GONE_POLL));
    }
    let stopped: Stopped = inspector.call("Profiler.stop", json!({}), deadline, &mut ignore)?;
    let mut out = io::BufWriter::with_capacity(64 * 1024, SinkWriter(sink));
    serde_json::to_writer(&mut out, &stopped.profile)
        .map_err(io::Error::from)
        .and_then(|()| out.flush())
        .map_err(ProfileError::Sink)
}

/// [`Write`] into a sink.
struct SinkWriter<'a>(&'a mut dyn FnMut(&[u8]) -> io::Result<()>);

impl Write for SinkWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (self.0)(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Takes a heap snapshot, passing each chunk on as it arrives.
fn heap_snapshot(
    inspector: &mut Inspector,
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    deadline: Instant,
) -> Result<(), ProfileError> {
    inspector.command("HeapProfiler.enable", json!({}), deadline)?;
    let mut chunks = 0u64;
    let mut on_event = |method: &str, text: &str| {
        if method != "HeapProfiler.addHeapSnapshotChunk" {
            return Ok(());
        }
        let event: ChunkEvent = serde_json::from_str(text)
            .map_err(|e| ProfileError::Protocol(format!("a heap snapshot chunk: {e}")))?;
        chunks += 1;
        sink(event.params.chunk.as_bytes()).map_err(ProfileError::Sink)
    };
    let params = json!({ "reportProgress": false });
    let _: IgnoredAny = inspector.call(
        "HeapProfiler.takeHeapSnapshot",
        params,
        deadline,
        &mut on_event,
    )?;
    if chunks == 0 {
        return Err(ProfileError::Protocol("an empty heap snapshot".to_owned()));
    }
    Ok(())
}

/// Closes node's inspector: `process._debugEnd()` on `inspector` (or, if
/// that session is unusable, a new one), then the session, then waits up
/// to `limit` for the port to refuse connections. Best effort: a failure is
/// logged.
fn close_inspector(inspector: Option<Inspector>, path: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    // Not waiting for an answer: there is none. Node closes every session
    // as it ends the inspector (20 to 26 do); one that waited for them to
    // go instead would answer only after this one closed.
    let end = |inspector: &mut Inspector| {
        let params = json!({ "expression": "process._debugEnd()" });
        inspector.send("Runtime.evaluate", params).is_ok()
    };
    let mut sent = false;
    if let Some(mut inspector) = inspector {
        sent = end(&mut inspector);
        inspector.ws.close(deadline);
    }
    if !sent && let Ok(mut inspector) = Inspector::connect(path, deadline) {
        sent = end(&mut inspector);
        inspector.ws.close(deadline);
    }
    while TcpStream::connect_timeout(&INSPECTOR, POLL).is_ok() {
        if !sent || Instant::now() >= deadline {
            crate::say!(
                "warning: node's inspector on 127.0.0.1:9229 is still open after a profile"
            );
            return;
        }
        std::thread::sleep(POLL / 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io::{BufRead, BufReader};
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::sync::mpsc;
    use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

    /// Port 9229 is one per machine: the tests that open it run one at a time.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn serial() -> MutexGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `node` on this machine. These tests profile a real node, so without
    /// one they fail rather than skip.
    fn node() -> PathBuf {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|dir| dir.join("node"))
            .find(|node| node.is_file())
            .expect("`node` is not on PATH: the profile tests need a real node (scripts/setup installs it with npm)")
    }

    /// Burns the CPU in a function with a name to find in the profile, and
    /// lets the event loop turn between two bursts. (An async function:
    /// it has no caller that V8 could inline it into, as node 26 does with
    /// a plain function called from a `setImmediate` callback.)
    const HOT: &str = "
        async function nodeosHotLoop() {
            let x = 0;
            for (;;) {
                const end = Date.now() + 20;
                while (Date.now() < end) for (let i = 0; i < 1000; i++) x += Math.sqrt(i);
                await new Promise(setImmediate);
            }
        }
        nodeosHotLoop();
    ";

    /// Blocks the event loop for good, once `ready` is out.
    const STUCK: &str = "
        function nodeosStuck() { let x = 0; for (;;) x += Math.sqrt(x); }
        setImmediate(nodeosStuck);
    ";

    /// Holds a string made at run time (so not in the script's source),
    /// and otherwise idles.
    const HOLDS: &str = "
        globalThis.nodeosKeep = ['nodeos', 'heap', 'marker', String(6 * 7)].join('-');
        setInterval(() => {}, 1000);
    ";

    /// A process for a test; killed on drop, its stderr printed if the
    /// test failed.
    struct App {
        child: Child,
        stderr: Arc<Mutex<Vec<u8>>>,
    }

    impl App {
        /// `node -e script`, once it is running the script.
        fn node(args: &[&str], script: &str) -> App {
            let script = format!("{script}\nconsole.log('ready');");
            let mut command = Command::new(node());
            command.args(args).arg("-e").arg(script);
            App::spawn(command, true)
        }

        fn spawn(mut command: Command, wait_ready: bool) -> App {
            let mut child = command
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn the test app");
            let stderr = Arc::new(Mutex::new(Vec::new()));
            let mut pipe = child.stderr.take().unwrap();
            let collected = Arc::clone(&stderr);
            std::thread::spawn(move || {
                let mut buf = [0; 4096];
                while let Ok(n @ 1..) = pipe.read(&mut buf) {
                    collected.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
            let stdout = child.stdout.take().unwrap();
            let app = App { child, stderr };
            if wait_ready {
                let (tx, rx) = mpsc::channel();
                std::thread::spawn(move || {
                    let mut line = String::new();
                    let _ = BufReader::new(stdout).read_line(&mut line);
                    let _ = tx.send(line);
                });
                let line = rx.recv_timeout(Duration::from_secs(10));
                assert_eq!(
                    line.as_deref().map(str::trim),
                    Ok("ready"),
                    "the app did not start"
                );
            }
            app
        }

        fn pid(&self) -> i32 {
            self.child.id() as i32
        }

        fn stderr(&self) -> String {
            String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
        }

        fn running(&mut self) -> bool {
            self.child.try_wait().unwrap().is_none()
        }
    }

    impl Drop for App {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            if std::thread::panicking() {
                eprintln!(
                    "--- stderr of pid {} ---\n{}",
                    self.child.id(),
                    self.stderr()
                );
            }
        }
    }

    /// Takes a profile into memory, counting the sink's calls.
    fn take_whole(pid: i32, kind: Kind) -> Result<(Vec<u8>, usize), ProfileError> {
        let mut out = Vec::new();
        let mut calls = 0;
        take(
            pid,
            kind,
            &mut |piece| {
                calls += 1;
                out.extend_from_slice(piece);
                Ok(())
            },
            &|| false,
        )?;
        Ok((out, calls))
    }

    /// The error of a profile that must fail (without printing a profile).
    fn refused(pid: i32, kind: Kind) -> ProfileError {
        match take_whole(pid, kind) {
            Ok((bytes, _)) => panic!("took a profile of {} bytes", bytes.len()),
            Err(e) => e,
        }
    }

    fn inspector_listening() -> bool {
        TcpStream::connect_timeout(&INSPECTOR, Duration::from_secs(1)).is_ok()
    }

    /// Self samples per function name in a `.cpuprofile`.
    fn self_samples(profile: &Value) -> HashMap<String, usize> {
        let names: HashMap<u64, &str> = profile["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                let name = n["callFrame"]["functionName"].as_str().unwrap();
                (n["id"].as_u64().unwrap(), name)
            })
            .collect();
        let mut counts = HashMap::new();
        for sample in profile["samples"].as_array().unwrap() {
            let name = names[&sample.as_u64().unwrap()];
            *counts.entry(name.to_owned()).or_default() += 1;
        }
        counts
    }

    #[test]
    fn a_cpu_profile_finds_the_hot_function() {
        let _serial = serial();
        let app = App::node(&[], HOT);
        let (bytes, _) = take_whole(app.pid(), Kind::Cpu(Duration::from_secs(2))).unwrap();
        let profile: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(profile["startTime"].as_u64() < profile["endTime"].as_u64());
        let samples = profile["samples"].as_array().unwrap().len();
        assert_eq!(samples, profile["timeDeltas"].as_array().unwrap().len());
        let counts = self_samples(&profile);
        let hot = counts.get("nodeosHotLoop").copied().unwrap_or(0);
        let top = counts.iter().max_by_key(|(_, n)| **n).unwrap();
        assert!(
            hot * 2 > samples && top.0 == "nodeosHotLoop",
            "nodeosHotLoop has {hot} of {samples} samples; top: {top:?}; all: {counts:?}"
        );
        assert!(!inspector_listening(), "the inspector is still open");
    }

    #[test]
    fn an_app_whose_event_loop_is_blocked_gets_a_cpu_profile() {
        // Node opens the inspector from its own thread and runs inspector
        // commands in interrupts of the running JavaScript.
        let _serial = serial();
        let app = App::node(&[], STUCK);
        let (bytes, _) = take_whole(app.pid(), Kind::Cpu(Duration::from_millis(500))).unwrap();
        // Which function the samples name is V8's business: code compiled
        // before the profile started can be charged to its caller (node 20
        // to 26 charge nodeosStuck's to processImmediate). But the app never
        // idles.
        let counts = self_samples(&serde_json::from_slice(&bytes).unwrap());
        let samples: usize = counts.values().sum();
        let idle = counts.get("(idle)").copied().unwrap_or(0);
        assert!(samples > 0 && idle * 10 < samples, "{counts:?}");
        assert!(!inspector_listening(), "the inspector is still open");
    }

    #[test]
    fn a_heap_snapshot_that_does_not_come_times_out_and_closes_the_inspector() {
        // Node 22 and later take the snapshot in a task of the event loop,
        // which this app blocks; node 20 takes it at once.
        let _serial = serial();
        let app = App::node(&[], STUCK);
        let limits = Limits {
            heap: Duration::from_secs(3),
            ..LIMITS
        };
        let mut sent = 0;
        let result = take_within(
            app.pid(),
            Kind::Heap,
            &mut |_| {
                sent += 1;
                Ok(())
            },
            &|| false,
            &limits,
        );
        if let Err(err) = result {
            assert!(matches!(err, ProfileError::TimedOut { .. }), "{err:?}");
            let text = err.to_string();
            assert!(
                text.contains("did not answer HeapProfiler.takeHeapSnapshot"),
                "{text}"
            );
            assert_eq!(sent, 0);
        }
        assert!(!inspector_listening(), "the inspector is still open");
        let (bytes, _) = take_whole(app.pid(), Kind::Cpu(Duration::ZERO)).unwrap();
        serde_json::from_slice::<Value>(&bytes).unwrap();
    }

    #[test]
    fn a_heap_snapshot_streams_the_apps_strings() {
        let _serial = serial();
        let app = App::node(&[], HOLDS);
        let (bytes, calls) = take_whole(app.pid(), Kind::Heap).unwrap();
        assert!(
            calls > 1,
            "the snapshot came in {calls} piece(s), not streamed"
        );
        let snapshot: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(snapshot["snapshot"]["meta"]["node_fields"].is_array());
        let strings = snapshot["strings"].as_array().unwrap();
        assert!(strings.iter().any(|s| s == "nodeos-heap-marker-42"));
        assert!(!inspector_listening(), "the inspector is still open");
    }

    #[test]
    fn a_cpu_profile_whose_client_has_gone_ends_at_once() {
        let _serial = serial();
        let app = App::node(&[], HOT);
        let started = Instant::now();
        let left = || started.elapsed() > Duration::from_millis(500);
        let result = take(
            app.pid(),
            Kind::Cpu(Duration::from_secs(60)),
            &mut |_| panic!("the sink of a profile nobody waits for"),
            &left,
        );
        assert!(matches!(result, Err(ProfileError::Gone)), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(!busy());
        assert!(!inspector_listening(), "the inspector is still open");
    }

    #[test]
    fn the_inspector_closes_after_each_profile_and_opens_again_for_the_next() {
        let _serial = serial();
        let app = App::node(&[], HOT);
        for kind in [
            Kind::Cpu(Duration::from_millis(300)),
            Kind::Heap,
            Kind::Cpu(Duration::ZERO),
        ] {
            assert!(
                !inspector_listening(),
                "port 9229 is open before the profile"
            );
            take_whole(app.pid(), kind).unwrap();
            assert!(
                !inspector_listening(),
                "the inspector is still open after {kind:?}"
            );
        }
        let stderr = app.stderr();
        assert_eq!(
            stderr
                .matches("Debugger listening on ws://127.0.0.1:9229/")
                .count(),
            3,
            "{stderr}"
        );
    }

    #[test]
    fn a_second_profile_while_one_runs_is_refused_as_busy() {
        let _serial = serial();
        let app = App::node(&[], HOT);
        let pid = app.pid();
        let first = std::thread::spawn(move || take_whole(pid, Kind::Cpu(Duration::from_secs(2))));
        let waiting = Instant::now();
        while !busy() {
            assert!(
                waiting.elapsed() < Duration::from_secs(10),
                "the first profile never started"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let refused = take(
            pid,
            Kind::Heap,
            &mut |_| panic!("the sink of a refused profile"),
            &|| false,
        );
        assert!(matches!(refused, Err(ProfileError::Busy)), "{refused:?}");
        first.join().unwrap().unwrap();
        assert!(!busy());
    }

    #[test]
    fn a_process_that_does_not_catch_sigusr1_is_not_signalled() {
        let _serial = serial();
        let mut command = Command::new("sleep");
        command.arg("30");
        let mut app = App::spawn(command, false);
        let err = refused(app.pid(), Kind::Heap);
        assert!(matches!(err, ProfileError::NoDebugSignal { .. }), "{err:?}");
        assert!(err.to_string().contains("does not catch SIGUSR1"), "{err}");
        assert!(app.running(), "SIGUSR1 killed it");
    }

    #[test]
    fn node_with_disable_sigusr1_is_not_signalled() {
        let _serial = serial();
        let supported = Command::new(node())
            .args(["--disable-sigusr1", "-e", "0"])
            .stderr(Stdio::null())
            .status()
            .unwrap();
        if !supported.success() {
            eprintln!("this node has no --disable-sigusr1 (added in node 22.14)");
            return;
        }
        // Node blocks SIGUSR1 then: it would stay pending, harmlessly.
        let mut app = App::node(&["--disable-sigusr1"], HOLDS);
        let err = refused(app.pid(), Kind::Heap);
        assert!(matches!(err, ProfileError::NoDebugSignal { .. }), "{err:?}");
        assert!(err.to_string().contains("--disable-sigusr1"), "{err}");
        assert!(app.running());
    }

    #[test]
    fn a_gone_or_absent_app_is_no_app() {
        let _serial = serial();
        let mut gone = Command::new("true").spawn().unwrap();
        let pid = gone.id() as i32;
        gone.wait().unwrap();
        for pid in [pid, 0, -1] {
            let err = refused(pid, Kind::Cpu(Duration::ZERO));
            assert!(matches!(err, ProfileError::NoApp), "pid {pid}: {err:?}");
        }
    }

    #[test]
    fn an_app_that_takes_sigusr1_itself_times_out_clearly() {
        let _serial = serial();
        let mut app = App::node(
            &[],
            "process.on('SIGUSR1', () => {}); setInterval(() => {}, 1000);",
        );
        let limits = Limits {
            inspector_up: Duration::from_secs(1),
            ..LIMITS
        };
        let started = Instant::now();
        let err =
            take_within(app.pid(), Kind::Heap, &mut |_| Ok(()), &|| false, &limits).unwrap_err();
        assert!(
            matches!(err, ProfileError::InspectorNotUp { .. }),
            "{err:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(
            err.to_string()
                .contains("did not open on 127.0.0.1:9229 within 1s"),
            "{err}"
        );
        assert!(app.running());
    }

    #[test]
    fn an_inspector_opened_by_the_app_is_left_open() {
        let _serial = serial();
        let app = App::node(&["--inspect=127.0.0.1:9229"], HOLDS);
        take_whole(app.pid(), Kind::Cpu(Duration::from_millis(100))).unwrap();
        assert!(inspector_listening(), "the app's own inspector was closed");
    }

    #[test]
    fn sigusr1_is_read_from_proc_status() {
        let status = |state: &str, caught: &str| {
            format!("Name:\tnode\nState:\t{state}\nSigIgn:\t0000000001001000\nSigCgt:\t{caught}\n")
        };
        assert_eq!(
            catches_sigusr1(&status("S (sleeping)", "0000000100004602")),
            Some(true)
        );
        assert_eq!(
            catches_sigusr1(&status("R (running)", "0000000000004002")),
            Some(false)
        );
        assert_eq!(
            catches_sigusr1(&status("Z (zombie)", "0000000000000200")),
            None
        );
        assert_eq!(catches_sigusr1("Name:\tx\n"), None);
    }

    #[test]
    fn only_a_loopback_inspector_url_is_followed() {
        let ok = ws_path("ws://127.0.0.1:9229/0f2c9a51-7a30-4d09-97ce-f1c012b43c34").unwrap();
        assert_eq!(ok, "/0f2c9a51-7a30-4d09-97ce-f1c012b43c34");
        for url in [
            "ws://0.0.0.0:9229/abc",
            "ws://10.0.2.15:9229/abc",
            "ws://127.0.0.1:92290/abc",
            "ws://127.0.0.1:9229/",
            "ws://127.0.0.1:9229/a b\r\nHost: x",
            "ws://127.0.0.1:9229/x/abc",
            "wss://127.0.0.1:9229/abc",
        ] {
            assert!(
                matches!(ws_path(url), Err(ProfileError::Protocol(_))),
                "{url}"
            );
        }
    }

    #[test]
    fn list_answers_parse_with_and_without_a_length() {
        let head =
            b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n[]";
        assert_eq!(parse_answer(head), Ok(Some((head.len() - 2, Some(2)))));
        assert_eq!(parse_answer(b"HTTP/1.1 200 OK\r\nCont"), Ok(None));
        let err = parse_answer(b"HTTP/1.1 404 Not Found\r\n\r\n").unwrap_err();
        assert_eq!(err, "/json/list: HTTP 404");
    }

    /// What `read_list` makes of an answer a fake inspector writes in
    /// `pieces`, `gap` apart, within `within`.
    fn list_from(
        pieces: &[&'static [u8]],
        gap: Duration,
        within: Duration,
    ) -> Result<Vec<Target>, String> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let pieces = pieces.to_vec();
        let server = std::thread::spawn(move || {
            let (mut peer, _) = listener.accept().unwrap();
            for piece in pieces {
                if peer.write_all(piece).is_err() {
                    return;
                }
                std::thread::sleep(gap);
            }
        });
        let mut stream = TcpStream::connect(addr).unwrap();
        let listed = read_list(&mut stream, Instant::now() + within);
        drop(stream);
        server.join().unwrap();
        listed
    }

    #[test]
    fn a_list_answer_is_bounded_in_size_and_time() {
        let whole = list_from(
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]"],
            Duration::ZERO,
            Duration::from_secs(5),
        );
        assert_eq!(whole.map(|targets| targets.len()), Ok(0));
        let huge = list_from(
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\n[]"],
            Duration::ZERO,
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert!(huge.contains("over"), "{huge}");
        let started = Instant::now();
        let mut drip: Vec<&'static [u8]> = vec![b"HTTP/1.1 200 OK\r\nX-Drip: "];
        drip.extend([b"x" as &[u8]; 20]);
        let slow = list_from(
            &drip,
            Duration::from_millis(100),
            Duration::from_millis(500),
        )
        .unwrap_err();
        assert!(slow.contains("in time"), "{slow}");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
    }
}
