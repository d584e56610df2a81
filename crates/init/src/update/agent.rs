//! The listener: one thread per connection, at most [`MAX_CONNECTIONS`] at
//! once, each request signed. It must never bring PID 1 down: bad input is
//! answered, a connection thread that panics ends alone, and the accept
//! loop is restarted with backoff if it ever stops.

use std::io::{self, Read};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nodeos_manifest::update::{
    ErrorBody, LOGS_PATH, METRICS_PATH, PAGE_PATH, PROFILE_PATH, STATUS_PATH, TOKEN_COOKIE,
    UPDATE_PATH,
};
use serde::Serialize;

use super::auth::Access;
use super::http::{self, Body, HEAD_TIMEOUT, HeadError, READ_TIMEOUT, Timed};
use super::install::{self, Receiving};
use super::{Shared, UpdateError, auth, now_ms, observe};
use crate::{error_chain, say};

/// Connections served at once; more are closed at once. At most
/// [`observe::MAX_FOLLOWERS`] of them follow the log.
pub const MAX_CONNECTIONS: usize = 8;
/// The longest a connection may last (a large upload on a slow link).
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How long a refused upload's body is still read (and thrown away), so
/// the client sees the answer instead of a reset connection.
const LINGER: Duration = Duration::from_secs(30);
/// The same for requests that were not signed.
const LINGER_UNSIGNED: Duration = Duration::from_secs(2);
/// First delay before the accept loop is restarted; doubled each time.
const RESTART_BACKOFF: Duration = Duration::from_secs(1);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Stack of a connection thread (requests are parsed on the heap).
const CONNECTION_STACK: usize = 256 << 10;

/// Starts the agent on `0.0.0.0:port`. `on_ready` is called once, after
/// an update was written, the state says the new slot is trying with one
/// try, and the `200` answer was sent: the caller then stops the app and
/// reboots. Fails only if the port cannot be bound or no thread starts.
pub fn start_agent(
    shared: Arc<Shared>,
    port: u16,
    on_ready: Box<dyn Fn() + Send + Sync>,
) -> io::Result<()> {
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))?;
    serve(listener, shared, on_ready)
}

/// [`start_agent`] on a bound listener (tests bind port 0).
pub(crate) fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    on_ready: Box<dyn Fn() + Send + Sync>,
) -> io::Result<()> {
    let agent = Arc::new(Agent {
        shared,
        on_ready,
        active: AtomicUsize::new(0),
    });
    respawn(
        "update-agent",
        RESTART_BACKOFF,
        Arc::new(move || accept_loop(&listener, &agent)),
    )
}

struct Agent {
    shared: Arc<Shared>,
    on_ready: Box<dyn Fn() + Send + Sync>,
    /// Connections being served.
    active: AtomicUsize,
}

/// Runs `body` in a thread named `name`, and again after `backoff`
/// (doubled each time, up to a minute) whenever it returns or panics.
fn respawn(
    name: &'static str,
    backoff: Duration,
    body: Arc<dyn Fn() + Send + Sync>,
) -> io::Result<()> {
    thread::Builder::new()
        .name(format!("{name}-watch"))
        .stack_size(64 << 10)
        .spawn(move || {
            let mut delay = backoff;
            loop {
                let started = Instant::now();
                let run = Arc::clone(&body);
                let ended = thread::Builder::new()
                    .name(name.into())
                    .stack_size(CONNECTION_STACK)
                    .spawn(move || run())
                    .map(|thread| thread.join());
                if started.elapsed() > RESTART_BACKOFF_MAX {
                    delay = backoff;
                }
                let secs = delay.as_secs_f32();
                match ended {
                    Ok(Ok(())) => say!("warning: {name} stopped; restarting it in {secs} s"),
                    Ok(Err(_)) => say!("bug: {name} panicked; restarting it in {secs} s"),
                    Err(e) => say!("warning: cannot start {name}: {e}; retrying in {secs} s"),
                }
                thread::sleep(delay);
                delay = (delay * 2).min(RESTART_BACKOFF_MAX);
            }
        })
        .map(drop)
}

fn accept_loop(listener: &TcpListener, agent: &Arc<Agent>) {
    let mut failing = false;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                failing = false;
                admit(agent, stream);
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
            Err(e) => {
                // Out of file descriptors or memory: say so once, then wait it out.
                if !failing {
                    say!("warning: the update agent cannot accept a connection: {e}");
                }
                failing = true;
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// One of the [`MAX_CONNECTIONS`]; given back when dropped, even by a
/// panicking connection thread.
struct Permit(Arc<Agent>);

impl Permit {
    fn take(agent: &Arc<Agent>) -> Option<Permit> {
        agent
            .active
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < MAX_CONNECTIONS).then_some(n + 1)
            })
            .ok()
            .map(|_| Permit(Arc::clone(agent)))
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

fn admit(agent: &Arc<Agent>, stream: TcpStream) {
    let Some(permit) = Permit::take(agent) else {
        // Too many at once: closed without a word.
        return;
    };
    let spawned = thread::Builder::new()
        .name("update-conn".into())
        .stack_size(CONNECTION_STACK)
        .spawn(move || {
            let agent = Arc::clone(&permit.0);
            agent.handle(stream);
            drop(permit);
        });
    if let Err(e) = spawned {
        say!("warning: the update agent cannot start a connection thread: {e}");
    }
}

impl Agent {
    /// Serves the one request of a connection.
    fn handle(&self, stream: TcpStream) {
        let started = Instant::now();
        let deadline = started + CONNECTION_TIMEOUT;
        // Without the timeouts a silent client would hold a connection
        // forever; setting them does not fail on a connected socket.
        let _ = stream.set_read_timeout(Some(HEAD_TIMEOUT));
        let _ = stream.set_write_timeout(Some(READ_TIMEOUT));
        let _ = stream.set_nodelay(true);
        let (head, early) = match http::read_head(&mut Timed::new(&stream, started + HEAD_TIMEOUT))
        {
            Ok(read) => read,
            Err(HeadError::Gone) => return,
            Err(HeadError::TooLarge) => {
                let reason = format!("the request head is over {} KiB", http::MAX_HEAD >> 10);
                return refuse_unread(&stream, 431, &reason);
            }
            Err(HeadError::Malformed(reason)) => return refuse_unread(&stream, 400, &reason),
        };
        let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
        let is_update = head.path() == UPDATE_PATH;
        let content_length = match head.content_length() {
            Ok(n) => n,
            Err(reason) => return refuse_unread(&stream, 400, &reason),
        };
        let mut body = Body::new(
            early,
            Timed::new(&stream, deadline),
            content_length.unwrap_or(0),
        );
        let request = auth::Request {
            authorization: head.header("authorization"),
            method: &head.method,
            path: &head.target,
            content_length: content_length.unwrap_or(0),
        };
        let mut signed = false;
        let answer = self.authenticate(&head, &request).and_then(|access| {
            signed = access.0 == Access::Full;
            self.dispatch(&stream, &head, content_length, &mut body, access)
        });
        let ready = match answer {
            Ok(Answer::Json(json)) => {
                let _ = http::respond(&mut &stream, 200, &json);
                false
            }
            Ok(Answer::Ready(json)) => {
                let _ = http::respond(&mut &stream, 200, &json);
                true
            }
            Ok(Answer::Whole(whole)) => {
                let _ = http::respond_with(
                    &mut &stream,
                    whole.status,
                    whole.content_type,
                    &whole.headers,
                    &whole.body,
                );
                false
            }
            Ok(Answer::Sent) => false,
            Err(e) => {
                let reason = error_chain(&e);
                // Only signed refusals: unsigned requests must not be able
                // to flood the console and push the app's lines out of the
                // log ring (the tail a rollback keeps).
                if is_update && signed {
                    say!("update refused: {reason}");
                }
                let _ = http::respond(&mut &stream, e.status(), &error_json(e.code(), &reason));
                false
            }
        };
        if body.remaining() > 0 {
            let time = if signed { LINGER } else { LINGER_UNSIGNED };
            linger(
                &stream,
                time.min(deadline.saturating_duration_since(Instant::now())),
            );
        }
        let _ = stream.shutdown(Shutdown::Both);
        if ready {
            (self.on_ready)();
        }
    }

    /// Who sent the request: signed by the update key ([`Access::Full`]),
    /// or carrying a read token ([`Access::Read`]) as `Authorization:
    /// Bearer`, the status page's cookie, or (logging in to the page) its
    /// `?token=`; with the token's expiry. Anything else is refused.
    fn authenticate(
        &self,
        head: &http::Head,
        request: &auth::Request<'_>,
    ) -> Result<(Access, Option<u64>), UpdateError> {
        let verifier = &self.shared.verifier;
        let now = now_ms();
        let token = |text: &str| {
            verifier
                .check_token(text, now)
                .map(|t| (Access::Read, Some(t.expires_s)))
        };
        let login = (head.path() == PAGE_PATH)
            .then(|| head.query("token"))
            .flatten();
        if let Some(text) = login {
            return token(&text);
        }
        match request.authorization {
            Some(value) => match value.strip_prefix(b"Bearer ") {
                Some(text) => token(&String::from_utf8_lossy(text)),
                None => verifier.check(request, now).map(|()| (Access::Full, None)),
            },
            None => match head.cookie(TOKEN_COOKIE) {
                Some(text) => token(text),
                None => verifier.check(request, now).map(|()| (Access::Full, None)),
            },
        }
    }

    /// An authenticated request: its answer.
    fn dispatch(
        &self,
        stream: &TcpStream,
        head: &http::Head,
        content_length: Option<u64>,
        body: &mut Body<Timed<&TcpStream>>,
        (access, token_expires_s): (Access, Option<u64>),
    ) -> Result<Answer, UpdateError> {
        let full = |what: &'static str| match access {
            Access::Full => Ok(()),
            Access::Read => Err(UpdateError::ReadOnly { what }),
        };
        match (head.path(), head.method.as_str()) {
            (STATUS_PATH, "GET") => Ok(Answer::Json(to_json(&observe::full_status(&self.shared)))),
            (METRICS_PATH, "GET") => Ok(Answer::Whole(observe::metrics(&self.shared))),
            (PAGE_PATH, "GET") => Ok(Answer::Whole(observe::page(
                &self.shared,
                head,
                token_expires_s,
            ))),
            (LOGS_PATH, "GET") => {
                let query = observe::LogQuery::parse(head)?;
                observe::logs(stream, query)?;
                Ok(Answer::Sent)
            }
            (PROFILE_PATH, "POST") => {
                full("profile the app")?;
                observe::profile(&self.shared, stream, head)?;
                Ok(Answer::Sent)
            }
            (UPDATE_PATH, "POST") => {
                full("update the appliance")?;
                if head.header("transfer-encoding").is_some() {
                    return Err(UpdateError::BadRequest(
                        "chunked uploads are not accepted: send the bundle with a Content-Length"
                            .into(),
                    ));
                }
                let length = content_length.ok_or(UpdateError::LengthRequired)?;
                let receiving = Receiving::begin(&self.shared)?;
                if head.expects_continue() {
                    http::continue_100(&mut &*stream)
                        .map_err(UpdateError::io("cannot answer the client"))?;
                }
                let accepted = install::install(&receiving, body, length)?;
                Ok(Answer::Ready(to_json(&accepted)))
            }
            (
                path @ (STATUS_PATH | METRICS_PATH | PAGE_PATH | LOGS_PATH | PROFILE_PATH
                | UPDATE_PATH),
                method,
            ) => Err(UpdateError::MethodNotAllowed {
                method: method.to_owned(),
                path: path.to_owned(),
            }),
            (path, _) => Err(UpdateError::NotFound {
                path: path.to_owned(),
            }),
        }
    }
}

/// How a request was answered.
enum Answer {
    /// `200` with this JSON.
    Json(Vec<u8>),
    /// `200` with this JSON, and an update is ready: reboot into it.
    Ready(Vec<u8>),
    Whole(observe::Whole),
    /// Streamed by the route itself.
    Sent,
}

/// Answers a request that is not even read as HTTP (`bad_request`).
fn refuse_unread(stream: &TcpStream, status: u16, reason: &str) {
    let _ = http::respond(&mut &*stream, status, &error_json("bad_request", reason));
    linger(stream, LINGER_UNSIGNED);
}

/// Reads and drops what the client still sends, for at most `time`, so
/// that closing does not reset the connection before it read the answer.
fn linger(stream: &TcpStream, time: Duration) {
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let until = Instant::now() + time;
    let mut sink = vec![0; install::CHUNK];
    let mut reader = stream;
    while Instant::now() < until {
        match reader.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

fn error_json(code: &str, reason: &str) -> Vec<u8> {
    to_json(&ErrorBody {
        error: code.into(),
        reason: reason.into(),
    })
}

fn to_json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|e| {
        format!(r#"{{"error":"io","reason":"cannot encode the answer: {e}"}}"#).into_bytes()
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::SocketAddr;
    use std::sync::atomic::AtomicU32;
    use std::sync::{Mutex, mpsc};

    use nodeos_manifest::bundle::Source;
    use nodeos_manifest::slots::{Slot, SlotStatus};
    use nodeos_manifest::update::{Status, UpdateAccepted};

    use super::*;
    use crate::update::lock;
    use crate::update::testing::{Fixture, Image, read_token, sign_request};

    const WAIT: Duration = Duration::from_secs(10);

    struct Running {
        addr: SocketAddr,
        shared: Arc<Shared>,
        ready: mpsc::Receiver<()>,
    }

    fn start(fx: &Fixture) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(fx.shared());
        let (tx, ready) = mpsc::channel();
        let tx = Mutex::new(tx);
        let on_ready = Box::new(move || {
            let _ = lock(&tx).send(());
        });
        serve(listener, Arc::clone(&shared), on_ready).unwrap();
        Running {
            addr,
            shared,
            ready,
        }
    }

    /// Sends `request`, reads the answer to the end: status and body.
    fn exchange(addr: SocketAddr, request: &[u8]) -> (u16, String) {
        let mut conn = TcpStream::connect(addr).unwrap();
        conn.set_read_timeout(Some(WAIT)).unwrap();
        conn.write_all(request).unwrap();
        let mut answer = Vec::new();
        conn.read_to_end(&mut answer).unwrap();
        let text = String::from_utf8(answer).unwrap();
        let status = text[9..12].parse().unwrap();
        let (_, body) = text.split_once("\r\n\r\n").unwrap();
        (status, body.to_owned())
    }

    fn signed(fx: &Fixture, method: &str, path: &str, body: &[u8]) -> Vec<u8> {
        static NONCE: AtomicU32 = AtomicU32::new(1);
        let nonce = NONCE.fetch_add(1, Ordering::SeqCst).into();
        let auth = sign_request(&fx.key, method, path, body.len() as u64, now_ms(), nonce);
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: appliance\r\nAuthorization: {auth}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        request
    }

    fn error_code(body: &str) -> String {
        serde_json::from_str::<ErrorBody>(body).unwrap().error
    }

    #[test]
    fn unsigned_requests_get_401_and_nothing_else() {
        let fx = Fixture::new(&Image::new("1.0.0", 1));
        let agent = start(&fx);
        for request in [
            &b"GET /v1/status HTTP/1.1\r\nHost: appliance\r\n\r\n"[..],
            b"GET /nothing HTTP/1.1\r\n\r\n",
            b"POST /v1/update HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        ] {
            let (status, body) = exchange(agent.addr, request);
            assert_eq!(status, 401, "{body}");
            assert_eq!(error_code(&body), "unauthorized");
            assert!(!body.contains("hello") && !body.contains("1.0.0"), "{body}");
        }
        let (status, _) = exchange(agent.addr, b"\x16\x03\x01 not http\r\n\r\n");
        assert_eq!(status, 400);
    }

    fn with_token(method: &str, target: &str, header: &str) -> Vec<u8> {
        format!("{method} {target} HTTP/1.1\r\nHost: appliance\r\n{header}\r\n\r\n").into_bytes()
    }

    #[test]
    fn a_read_token_reads_and_nothing_more() {
        let fx = Fixture::new(&Image::new("1.0.0", 1));
        let agent = start(&fx);
        let token = read_token(&fx.key, now_ms() / 1000 + 600);
        let bearer = format!("Authorization: Bearer {token}");
        let (status, body) = exchange(agent.addr, &with_token("GET", METRICS_PATH, &bearer));
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("nodeos_info{appliance=\"hello\""), "{body}");
        let (status, body) = exchange(agent.addr, &with_token("GET", STATUS_PATH, &bearer));
        assert_eq!(status, 200, "{body}");
        let status: Status = serde_json::from_str(&body).unwrap();
        assert!(status.system.is_some_and(|s| s.memory_total > 0));
        // Again: a token is not a one-time nonce.
        let (status, _) = exchange(agent.addr, &with_token("GET", METRICS_PATH, &bearer));
        assert_eq!(status, 200);
        for (method, path, code) in [
            ("POST", UPDATE_PATH, "read_only"),
            ("POST", PROFILE_PATH, "read_only"),
        ] {
            let (status, body) = exchange(agent.addr, &with_token(method, path, &bearer));
            assert_eq!((status, error_code(&body).as_str()), (403, code), "{path}");
        }
        // Another key's token, a forged one, an expired one: 401 and nothing else.
        let other = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        for bad in [
            read_token(&other, now_ms() / 1000 + 600),
            token.replacen("nodeos-read.", "nodeos-read.0", 1),
            read_token(&fx.key, now_ms() / 1000 - 1),
        ] {
            for header in [
                format!("Authorization: Bearer {bad}"),
                format!("Cookie: nodeos_token={bad}"),
            ] {
                let (status, body) =
                    exchange(agent.addr, &with_token("GET", METRICS_PATH, &header));
                assert_eq!(
                    (status, error_code(&body).as_str()),
                    (401, "unauthorized"),
                    "{body}"
                );
                assert!(
                    !body.contains("nodeos_info") && !body.contains("1.0.0"),
                    "{body}"
                );
            }
        }
    }

    #[test]
    fn the_status_page_logs_in_by_link_then_by_cookie() {
        let fx = Fixture::new(&Image::new("1.0.0", 1));
        let agent = start(&fx);
        let token = read_token(&fx.key, now_ms() / 1000 + 600);
        let answer = |request: &[u8]| {
            let mut conn = TcpStream::connect(agent.addr).unwrap();
            conn.write_all(request).unwrap();
            let mut text = String::new();
            conn.read_to_string(&mut text).unwrap();
            text
        };
        let login = answer(&with_token("GET", &format!("/?token={token}"), "X: y"));
        assert!(login.starts_with("HTTP/1.1 303 "), "{login}");
        assert!(login.contains("\r\nLocation: /\r\n"), "{login}");
        assert!(
            login.contains(&format!(
                "Set-Cookie: nodeos_token={token}; Path=/; Max-Age="
            )),
            "{login}"
        );
        assert!(login.contains("HttpOnly; SameSite=Strict"), "{login}");
        let page = answer(&with_token(
            "GET",
            "/",
            &format!("Cookie: nodeos_token={token}"),
        ));
        assert!(page.starts_with("HTTP/1.1 200 "), "{page}");
        assert!(page.contains("Content-Type: text/html"), "{page}");
        assert!(
            page.contains("Content-Security-Policy: default-src 'none'"),
            "{page}"
        );
        assert!(page.contains("<title>") && page.contains("hello"), "{page}");
        // Whitespace around the token does not reach the header.
        let padded = answer(&with_token(
            "GET",
            &format!("/?token=%0D%0A%0D%0A{token}%20"),
            "X: y",
        ));
        assert!(
            padded.contains(&format!("\r\nSet-Cookie: nodeos_token={token}; Path=/;")),
            "{padded}"
        );
        let bad = answer(&with_token("GET", "/?token=nodeos-read.junk", "X: y"));
        assert!(
            bad.starts_with("HTTP/1.1 401 ") && !bad.contains("Set-Cookie"),
            "{bad}"
        );
    }

    #[test]
    fn the_log_is_sent_as_json_lines_in_chunks() {
        let fx = Fixture::new(&Image::new("1.0.0", 1));
        let agent = start(&fx);
        crate::say!("a line for the log endpoint");
        let target = format!("{LOGS_PATH}?tail=5");
        let mut conn = TcpStream::connect(agent.addr).unwrap();
        conn.write_all(&signed(&fx, "GET", &target, b"")).unwrap();
        let mut text = String::new();
        conn.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
        assert!(text.contains("Transfer-Encoding: chunked"), "{text}");
        assert!(
            text.ends_with("\r\n0\r\n\r\n"),
            "the last chunk ends it: {text}"
        );
        assert!(
            text.contains(r#""message":"a line for the log endpoint""#),
            "{text}"
        );
        let (status, body) = exchange(
            agent.addr,
            &signed(&fx, "GET", &format!("{LOGS_PATH}?tail=x"), b""),
        );
        assert_eq!((status, error_code(&body).as_str()), (400, "bad_request"));
    }

    #[test]
    fn signed_status_and_wrong_routes() {
        let fx = Fixture::new(&Image::new("1.0.0", 1));
        let agent = start(&fx);
        let (status, body) = exchange(agent.addr, &signed(&fx, "GET", STATUS_PATH, b""));
        assert_eq!(status, 200, "{body}");
        let report: Status = serde_json::from_str(&body).unwrap();
        assert_eq!((report.appliance.as_str(), report.slot), ("hello", Slot::A));
        assert_eq!(report.slots[&Slot::A].status, SlotStatus::Good);

        let (status, body) = exchange(agent.addr, &signed(&fx, "GET", "/v1/other", b""));
        assert_eq!((status, error_code(&body).as_str()), (404, "not_found"));
        let (status, body) = exchange(agent.addr, &signed(&fx, "DELETE", STATUS_PATH, b""));
        assert_eq!(
            (status, error_code(&body).as_str()),
            (405, "method_not_allowed")
        );
        let (status, body) = exchange(agent.addr, &signed(&fx, "GET", UPDATE_PATH, b""));
        assert_eq!(status, 405, "{body}");
        // The same signed request twice.
        let request = signed(&fx, "GET", STATUS_PATH, b"");
        assert_eq!(exchange(agent.addr, &request).0, 200);
        let (status, body) = exchange(agent.addr, &request);
        assert_eq!((status, error_code(&body).as_str()), (401, "replayed"));
    }

    #[test]
    fn a_signed_bundle_is_installed_and_reported_ready() {
        let fx = Fixture::new(&Image::new("1.0.0", 1));
        let agent = start(&fx);
        let v2 = Image::new("1.0.1", 2);
        let bundle = fx.bundle(&v2, 10, [Source::Bundle; 3]);
        let (status, body) = exchange(agent.addr, &signed(&fx, "POST", UPDATE_PATH, &bundle));
        assert_eq!(status, 200, "{body}");
        let accepted: UpdateAccepted = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (accepted.slot, accepted.sequence, accepted.rebooting),
            (Slot::B, 10, true)
        );
        agent.ready.recv_timeout(WAIT).expect("on_ready is called");
        assert_eq!(agent.shared.store().state().b.status, SlotStatus::Trying);
        // Only one per boot, and on_ready only once.
        let again = fx.bundle(&Image::new("1.0.2", 3), 11, [Source::Bundle; 3]);
        let (status, body) = exchange(agent.addr, &signed(&fx, "POST", UPDATE_PATH, &again));
        assert_eq!((status, error_code(&body).as_str()), (409, "busy"));
        assert!(
            agent
                .ready
                .recv_timeout(Duration::from_millis(200))
                .is_err()
        );
    }

    #[test]
    fn an_update_without_a_length_is_refused() {
        let fx = Fixture::new(&Image::new("1.0.0", 1));
        let agent = start(&fx);
        let auth = sign_request(&fx.key, "POST", UPDATE_PATH, 0, now_ms(), 99);
        let request = format!(
            "POST {UPDATE_PATH} HTTP/1.1\r\nAuthorization: {auth}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        );
        let (status, body) = exchange(agent.addr, request.as_bytes());
        assert_eq!(status, 400, "{body}");
        let auth = sign_request(&fx.key, "POST", UPDATE_PATH, 0, now_ms(), 100);
        let request = format!("POST {UPDATE_PATH} HTTP/1.1\r\nAuthorization: {auth}\r\n\r\n");
        let (status, body) = exchange(agent.addr, request.as_bytes());
        assert_eq!(
            (status, error_code(&body).as_str()),
            (411, "length_required")
        );
    }

    #[test]
    fn a_fifth_connection_is_closed_and_the_agent_goes_on() {
        let fx = Fixture::new(&Image::new("1.0.0", 1));
        let agent = start(&fx);
        let idle: Vec<TcpStream> = (0..MAX_CONNECTIONS)
            .map(|_| TcpStream::connect(agent.addr).unwrap())
            .collect();
        let mut fifth = TcpStream::connect(agent.addr).unwrap();
        fifth.set_read_timeout(Some(WAIT)).unwrap();
        let t0 = Instant::now();
        let mut buf = [0; 16];
        // Closed at once: end of file (or a reset), not a timeout.
        match fifth.read(&mut buf) {
            Ok(n) => assert_eq!(n, 0),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}"),
        }
        assert!(t0.elapsed() < WAIT);
        drop(idle);
        let deadline = Instant::now() + WAIT;
        loop {
            let mut conn = TcpStream::connect(agent.addr).unwrap();
            conn.set_read_timeout(Some(WAIT)).unwrap();
            let _ = conn.write_all(&signed(&fx, "GET", STATUS_PATH, b""));
            let mut answer = Vec::new();
            let _ = conn.read_to_end(&mut answer);
            if answer.starts_with(b"HTTP/1.1 200 ") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the idle connections were never let go"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn a_panicking_loop_is_restarted() {
        let runs = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let counter = Arc::clone(&runs);
        respawn(
            "test-loop",
            Duration::from_millis(10),
            Arc::new(move || {
                if counter.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("a bug in the loop");
                }
                let _ = lock(&tx).send(());
                loop {
                    thread::park();
                }
            }),
        )
        .unwrap();
        rx.recv_timeout(WAIT).expect("the third run");
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }
}
