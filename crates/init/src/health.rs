//! The health check of a version on trial: with a `path`, an HTTP GET on
//! the app's port every half second until a 2xx answers or the timeout
//! passes; without one, the app staying up `uptime` seconds. The verdict
//! goes to the supervisor as [`crate::supervise::Event::Health`]; any exit
//! of the app before it fails the trial there
//! ([`crate::supervise::Supervisor`]).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use nodeos_manifest::update::HealthCheck;

/// Time between two GETs.
const INTERVAL: Duration = Duration::from_millis(500);
/// Longest a single GET may take.
const PER_TRY: Duration = Duration::from_secs(2);

/// Starts the check in a thread, from now (the app's first start), and
/// hands its verdict to `verdict`.
pub fn spawn(check: &HealthCheck, port: u16, verdict: impl FnOnce(Verdict) + Send + 'static) {
    let check = check.clone();
    let spawned = std::thread::Builder::new()
        .name("health".into())
        .stack_size(64 * 1024)
        .spawn(move || verdict(run(&check, port, Instant::now())));
    if let Err(e) = spawned {
        crate::say!("warning: cannot start the health check: {e}");
    }
}

/// How the check passed, or why it did not.
pub type Verdict = Result<String, String>;

/// Runs the check to its verdict: `Ok(how it passed)` or `Err(why not)`.
pub fn run(check: &HealthCheck, port: u16, started: Instant) -> Verdict {
    let timeout = Duration::from_secs(u64::from(check.timeout));
    let Some(path) = &check.path else {
        let uptime = Duration::from_secs(u64::from(check.uptime));
        std::thread::sleep(uptime.saturating_sub(started.elapsed()));
        return Ok(format!("the app stayed up {}s", check.uptime));
    };
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    loop {
        let tried = Instant::now();
        let last = match get(addr, path) {
            Ok(code) if (200..300).contains(&code) => {
                return Ok(format!(
                    "GET {path} {code} after {:.1}s",
                    started.elapsed().as_secs_f64()
                ));
            }
            Ok(code) => format!("HTTP {code}"),
            Err(e) => e,
        };
        if started.elapsed() >= timeout {
            return Err(format!(
                "GET {path} on port {port} gave no 2xx within {}s (last: {last})",
                check.timeout
            ));
        }
        std::thread::sleep(INTERVAL.saturating_sub(tried.elapsed()));
    }
}

/// One `GET path` on `addr`: the status code of the answer.
fn get(addr: SocketAddr, path: &str) -> Result<u16, String> {
    let mut stream = TcpStream::connect_timeout(&addr, PER_TRY).map_err(|e| e.to_string())?;
    let deadline = |s: &TcpStream| {
        s.set_read_timeout(Some(PER_TRY))
            .and_then(|()| s.set_write_timeout(Some(PER_TRY)))
    };
    deadline(&stream).map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUser-Agent: nodeos-init health check\r\nConnection: close\r\n\r\n",
        addr.port()
    )
    .map_err(|e| e.to_string())?;
    let mut head = [0u8; 64];
    let mut len = 0;
    while len < 12 {
        match stream.read(&mut head[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) => return Err(e.to_string()),
        }
    }
    parse_status(&head[..len]).ok_or_else(|| "not an HTTP answer".to_owned())
}

/// The status code of an HTTP/1.x status line.
fn parse_status(head: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(head.get(..12)?).ok()?;
    let code = text.strip_prefix("HTTP/1.")?.get(2..5)?;
    code.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn check(path: Option<&str>, timeout: u32) -> HealthCheck {
        HealthCheck {
            path: path.map(str::to_owned),
            timeout,
            uptime: 1,
        }
    }

    /// A server on 127.0.0.1 answering every request with `status`.
    fn server(status: &'static str) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                // The whole request first: closing with unread bytes would
                // reset the connection before the answer is read.
                let mut request = Vec::new();
                let mut buf = [0; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = write!(conn, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
            }
        });
        port
    }

    #[test]
    fn status_lines_parse() {
        assert_eq!(parse_status(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(parse_status(b"HTTP/1.0 500 x"), Some(500));
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status(b"HTTP/1.1"), None);
    }

    #[test]
    fn a_2xx_passes_and_names_the_path() {
        let port = server("200 OK");
        let verdict = run(&check(Some("/healthz"), 5), port, Instant::now()).unwrap();
        assert!(verdict.starts_with("GET /healthz 200 after "), "{verdict}");
    }

    #[test]
    fn an_error_status_until_the_timeout_fails_with_the_last_answer() {
        let port = server("503 Service Unavailable");
        let err = run(&check(Some("/ready"), 1), port, Instant::now()).unwrap_err();
        assert!(err.contains("no 2xx within 1s (last: HTTP 503)"), "{err}");
    }

    #[test]
    fn nothing_listening_fails_with_the_connect_error() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port(); // closed again at once
        let err = run(&check(Some("/"), 1), port, Instant::now()).unwrap_err();
        assert!(err.contains("refused"), "{err}");
    }

    #[test]
    fn without_a_path_the_app_passes_by_staying_up() {
        let started = Instant::now() - Duration::from_secs(5);
        assert_eq!(
            run(&check(None, 60), 1, started),
            Ok("the app stayed up 1s".to_owned())
        );
    }
}
