//! The agent's read side besides the status: the log ([`logs`], whole or
//! followed), the Prometheus metrics ([`metrics`]), the status page
//! ([`page`], with its token login) and profiles of the app ([`profile`]).

use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nodeos_manifest::LogFormat;
use nodeos_manifest::console::Record;
use nodeos_manifest::update::{PAGE_PATH, Status, TOKEN_COOKIE};

use super::http::{Chunked, Head};
use super::{Shared, UpdateError, lock, metrics as prometheus, now_ms, status};
use crate::log::{self, Ring};
use crate::profile::{self, Kind, ProfileError};
use crate::say;

/// Clients following the log at once; more are refused (`busy`), so that
/// followers never take every connection from an update.
pub(crate) const MAX_FOLLOWERS: usize = 4;
/// A follower hears at least this often (an empty line), so that a
/// client that went away is noticed.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// The status page reloads itself this often, seconds.
const PAGE_REFRESH_S: u32 = 5;
/// Longest CPU profile.
pub(crate) const MAX_PROFILE_S: u64 = 300;
/// The headers of the status page: nothing but itself may load or frame it.
const PAGE_HEADERS: [(&str, &str); 3] = [
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    ),
    ("Referrer-Policy", "no-referrer"),
    ("X-Content-Type-Options", "nosniff"),
];

static FOLLOWERS: AtomicUsize = AtomicUsize::new(0);

/// The status as of now, with the resource use.
pub(crate) fn full_status(shared: &Shared) -> Status {
    let mut status = status::status(shared);
    status.system = Some(crate::stats::system(status.app.pid));
    status
}

/// An answer the agent writes whole.
pub(crate) struct Whole {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// `GET /v1/metrics`.
pub(crate) fn metrics(shared: &Shared) -> Whole {
    Whole {
        status: 200,
        content_type: prometheus::CONTENT_TYPE,
        headers: Vec::new(),
        body: prometheus::render(&full_status(shared)).into_bytes(),
    }
}

/// `GET /`: the status page; with `?token=` (a link `nodeos token URL`
/// printed, already checked), the token goes into a cookie and the
/// browser is sent to the page without it in the address.
pub(crate) fn page(shared: &Shared, head: &Head, token_expires_s: Option<u64>) -> Whole {
    if let (Some(token), Some(expires_s)) = (head.query("token"), token_expires_s) {
        // Checked as `ReadToken::parse` reads it: without the whitespace
        // around it, which must not reach the header.
        let token = token.trim();
        let max_age = expires_s.saturating_sub(now_ms() / 1000);
        return Whole {
            status: 303,
            content_type: "text/plain; charset=utf-8",
            headers: vec![
                ("Location", PAGE_PATH.to_owned()),
                (
                    "Set-Cookie",
                    format!(
                        "{TOKEN_COOKIE}={token}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict"
                    ),
                ),
                ("Referrer-Policy", "no-referrer".to_owned()),
            ],
            body: Vec::new(),
        };
    }
    let status = full_status(shared);
    let records: Vec<Record> =
        log::with_ring(|ring| last(ring, crate::page::LOG_LINES).cloned().collect());
    Whole {
        status: 200,
        content_type: "text/html; charset=utf-8",
        headers: PAGE_HEADERS
            .iter()
            .map(|(name, value)| (*name, (*value).to_owned()))
            .collect(),
        body: crate::page::render(&status, &records, PAGE_REFRESH_S).into_bytes(),
    }
}

/// The last `n` records of the ring.
fn last(ring: &Ring, n: usize) -> impl Iterator<Item = &Record> {
    ring.records().skip(ring.len().saturating_sub(n))
}

/// What `GET /v1/logs` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct LogQuery {
    /// Only records at or after this unix millisecond.
    pub since_ms: u64,
    /// Only the last this many of them.
    pub tail: Option<usize>,
    /// Then keep sending new records as they are logged.
    pub follow: bool,
}

impl LogQuery {
    pub fn parse(head: &Head) -> Result<LogQuery, UpdateError> {
        let number = |name: &str| -> Result<Option<u64>, UpdateError> {
            head.query(name)
                .map(|v| {
                    v.parse().map_err(|_| {
                        UpdateError::BadRequest(format!("{name}={v:?} is not a whole number"))
                    })
                })
                .transpose()
        };
        let follow = match head.query("follow").as_deref() {
            None | Some("0" | "false") => false,
            Some("" | "1" | "true") => true,
            Some(other) => {
                return Err(UpdateError::BadRequest(format!(
                    "follow={other:?} is neither 1 nor 0"
                )));
            }
        };
        Ok(LogQuery {
            since_ms: number("since")?.unwrap_or(0),
            tail: number("tail")?.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            follow,
        })
    }

    /// The matching records the ring holds, one JSON object per line
    /// (the console's JSON format), and the sequence number after them.
    fn select(&self, ring: &Ring) -> (Vec<u8>, u64) {
        let matching: Vec<&Record> = ring
            .records()
            .filter(|r| r.unix_ms >= self.since_ms)
            .collect();
        let skip = self
            .tail
            .map_or(0, |tail| matching.len().saturating_sub(tail));
        (ndjson(matching.into_iter().skip(skip)), ring.next_seq())
    }
}

fn ndjson<'a>(records: impl Iterator<Item = &'a Record>) -> Vec<u8> {
    let mut out = String::new();
    for record in records {
        out.push_str(&record.format(LogFormat::Json));
        out.push('\n');
    }
    out.into_bytes()
}

/// One of the [`MAX_FOLLOWERS`], given back when dropped.
struct Follower;

impl Follower {
    fn take() -> Option<Follower> {
        FOLLOWERS
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < MAX_FOLLOWERS).then_some(n + 1)
            })
            .ok()
            .map(|_| Follower)
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        FOLLOWERS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `GET /v1/logs`: newline-delimited JSON records, in chunks; with
/// `follow`, new records as they come until the client goes away. A
/// client that cannot keep up misses what the ring dropped meanwhile.
pub(crate) fn logs(stream: &TcpStream, query: LogQuery) -> Result<(), UpdateError> {
    let _follower = if query.follow {
        Some(Follower::take().ok_or_else(|| {
            UpdateError::Busy(format!(
                "{MAX_FOLLOWERS} clients follow the log already; try again later"
            ))
        })?)
    } else {
        None
    };
    let (first, mut next) = log::with_ring(|ring| query.select(ring));
    // From here on an error means the client went away: nobody to tell.
    let Ok(mut out) = Chunked::start(stream, "application/x-ndjson") else {
        return Ok(());
    };
    if out.send(&first).is_err() {
        return Ok(());
    }
    if !query.follow {
        let _ = out.finish();
        return Ok(());
    }
    loop {
        let batch = if log::wait_for(next, KEEPALIVE) {
            let (batch, after) = log::with_ring(|ring| (ndjson(ring.since(next)), ring.next_seq()));
            next = after;
            batch
        } else {
            b"\n".to_vec()
        };
        if out.send(&batch).is_err() {
            return Ok(());
        }
    }
}

/// `POST /v1/profile?kind=cpu&seconds=N` or `?kind=heap`: the profile,
/// streamed in chunks as the inspector hands it over. An error before the
/// first byte is an error answer; after it, the answer is cut short (no
/// last chunk), which the client reports.
pub(crate) fn profile(shared: &Shared, stream: &TcpStream, head: &Head) -> Result<(), UpdateError> {
    let kind = match head.query("kind").as_deref() {
        Some("cpu") => {
            let seconds = match head.query("seconds") {
                None => 10,
                Some(v) => v
                    .parse::<u64>()
                    .ok()
                    .filter(|s| (1..=MAX_PROFILE_S).contains(s))
                    .ok_or_else(|| {
                        UpdateError::BadRequest(format!(
                            "seconds={v:?} is not a whole number from 1 to {MAX_PROFILE_S}"
                        ))
                    })?,
            };
            Kind::Cpu(Duration::from_secs(seconds))
        }
        Some("heap") => Kind::Heap,
        other => {
            return Err(UpdateError::BadRequest(format!(
                "kind={:?} is neither cpu nor heap",
                other.unwrap_or_default()
            )));
        }
    };
    let pid = lock(&shared.app).pid.ok_or_else(|| {
        UpdateError::Unavailable("the app is not running; profile it once it runs".into())
    })?;
    let what = match kind {
        Kind::Cpu(d) => format!("a {} s CPU profile", d.as_secs()),
        Kind::Heap => "a heap snapshot".to_owned(),
    };
    if profile::busy() {
        return Err(busy());
    }
    say!("taking {what} of the app (pid {pid})");
    let mut out: Option<Chunked<&TcpStream>> = None;
    let mut sent = 0u64;
    let taken = profile::take(
        pid,
        kind,
        &mut |data: &[u8]| {
            let chunked = match &mut out {
                Some(chunked) => chunked,
                None => out.insert(Chunked::start(stream, "application/json")?),
            };
            sent += data.len() as u64;
            chunked.send(data)
        },
        &|| client_gone(stream),
    );
    match (taken, out) {
        (Ok(()), Some(chunked)) => {
            if chunked.finish().is_ok() {
                say!("sent {what} of the app ({sent} bytes)");
            }
            Ok(())
        }
        (Ok(()), None) => Err(UpdateError::Unavailable(format!(
            "the inspector gave an empty {what}"
        ))),
        (Err(ProfileError::Gone), None) => {
            say!("stopped {what} of the app: the client has gone");
            Ok(())
        }
        (Err(e), None) => Err(match e {
            ProfileError::Busy => busy(),
            e => {
                UpdateError::Unavailable(format!("cannot take {what}: {}", crate::error_chain(&e)))
            }
        }),
        (Err(e), Some(_)) => {
            say!(
                "warning: {what} was cut short after {sent} bytes: {}",
                crate::error_chain(&e)
            );
            Ok(())
        }
    }
}

/// Whether the client closed its end of the connection. It sends nothing
/// after its request, so the end of its stream or an error means it left.
fn client_gone(stream: &TcpStream) -> bool {
    use rustix::net::RecvFlags;
    let mut byte = [0u8; 1];
    match rustix::net::recv(stream, &mut byte[..], RecvFlags::PEEK | RecvFlags::DONTWAIT) {
        Ok((_, 0)) => true,
        Ok(_) => false,
        Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => false,
        Err(_) => true,
    }
}

fn busy() -> UpdateError {
    UpdateError::Busy("a profile is being taken already; wait for it to finish".into())
}

#[cfg(test)]
mod tests {
    use nodeos_manifest::console::{Source, Stream};

    use super::*;
    use crate::update::http;

    fn head(target: &str) -> Head {
        let request = format!("GET {target} HTTP/1.1\r\n\r\n");
        http::read_head(&mut request.as_bytes()).unwrap().0
    }

    #[test]
    fn log_queries_parse_and_refuse_junk() {
        assert_eq!(
            LogQuery::parse(&head("/v1/logs")).unwrap(),
            LogQuery::default()
        );
        assert_eq!(
            LogQuery::parse(&head("/v1/logs?since=5&tail=2&follow=1")).unwrap(),
            LogQuery {
                since_ms: 5,
                tail: Some(2),
                follow: true
            }
        );
        for bad in ["since=-1", "tail=x", "follow=yes"] {
            let err = LogQuery::parse(&head(&format!("/v1/logs?{bad}"))).unwrap_err();
            assert_eq!(err.status(), 400, "{err}");
        }
    }

    #[test]
    fn since_and_tail_select_records() {
        let mut ring = Ring::new(10, 1000);
        for (ms, text) in [(1, "one"), (2, "two"), (3, "three"), (4, "four")] {
            ring.push(Record {
                unix_ms: ms,
                source: Source::App {
                    generation: 1,
                    stream: Stream::Stdout,
                },
                message: text.into(),
            });
        }
        let messages = |query: LogQuery| {
            let (text, next) = query.select(&ring);
            assert_eq!(next, 4);
            String::from_utf8(text)
                .unwrap()
                .lines()
                .map(|l| Record::parse(l).unwrap().message)
                .collect::<Vec<_>>()
        };
        assert_eq!(messages(LogQuery::default()).len(), 4);
        let since = LogQuery {
            since_ms: 2,
            ..LogQuery::default()
        };
        assert_eq!(messages(since), ["two", "three", "four"]);
        let tail = LogQuery {
            since_ms: 2,
            tail: Some(1),
            follow: false,
        };
        assert_eq!(messages(tail), ["four"]);
    }
}
