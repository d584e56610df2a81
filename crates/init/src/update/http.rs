//! Just enough HTTP/1.1 for the agent: one request per connection, a head
//! of at most [`MAX_HEAD`] bytes parsed with httparse, a body of exactly
//! `Content-Length` bytes, and JSON answers with `Connection: close`.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

/// Largest request head accepted.
pub(crate) const MAX_HEAD: usize = 8 << 10;
/// Most headers in a request head.
const MAX_HEADERS: usize = 32;
/// How long a read of the body may wait for the client.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the whole request head may take (each read of it waits at
/// most this long too): before its signature is checked, a connection
/// holds one of the few slots only briefly.
pub(crate) const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Headers that may appear once at most.
const SINGLE: [&str; 4] = [
    "authorization",
    "content-length",
    "transfer-encoding",
    "expect",
];

/// A request head.
#[derive(Debug)]
pub(crate) struct Head {
    pub method: String,
    /// The request target as sent (path and query).
    pub target: String,
    /// Lower-case names and raw values, in order.
    headers: Vec<(String, Vec<u8>)>,
}

impl Head {
    /// The value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The target without its query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    /// `Content-Length`, if sent; an error if it is not a number.
    pub fn content_length(&self) -> Result<Option<u64>, String> {
        let Some(value) = self.header("content-length") else {
            return Ok(None);
        };
        std::str::from_utf8(value)
            .ok()
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse().ok())
            .map(Some)
            .ok_or_else(|| {
                format!(
                    "Content-Length {:?} is not a number",
                    String::from_utf8_lossy(value)
                )
            })
    }

    /// Whether the client waits for `100 Continue` before sending the body.
    pub fn expects_continue(&self) -> bool {
        self.header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"))
    }
}

/// Why no request head was read.
#[derive(Debug)]
pub(crate) enum HeadError {
    /// The client closed the connection or went quiet: nobody to answer.
    Gone,
    /// Over [`MAX_HEAD`] bytes or [`MAX_HEADERS`] headers (431).
    TooLarge,
    /// Not HTTP (400).
    Malformed(String),
}

/// Reads a request head from `conn`; returns it and the body bytes that
/// arrived with it.
pub(crate) fn read_head(conn: &mut impl Read) -> Result<(Head, Vec<u8>), HeadError> {
    let mut buf = vec![0; MAX_HEAD];
    let mut len = 0;
    loop {
        match conn.read(&mut buf[len..]) {
            Ok(0) => return Err(HeadError::Gone),
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(HeadError::Gone),
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(end)) => {
                let head = Head {
                    method: request.method.unwrap_or_default().to_owned(),
                    target: request.path.unwrap_or_default().to_owned(),
                    headers: request
                        .headers
                        .iter()
                        .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
                        .collect(),
                };
                for name in SINGLE {
                    if head.headers.iter().filter(|(n, _)| n == name).count() > 1 {
                        return Err(HeadError::Malformed(format!(
                            "the request has more than one {name} header"
                        )));
                    }
                }
                return Ok((head, buf[end..len].to_vec()));
            }
            Ok(httparse::Status::Partial) if len == MAX_HEAD => return Err(HeadError::TooLarge),
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
            Err(e) => {
                return Err(HeadError::Malformed(format!(
                    "the request is not HTTP/1.1: {e}"
                )));
            }
        }
    }
}

/// A reader that gives up at `deadline`, and says so when the client
/// went quiet for longer than the socket's read timeout.
#[derive(Debug)]
pub(crate) struct Timed<R> {
    inner: R,
    deadline: Instant,
}

impl<R> Timed<R> {
    pub fn new(inner: R, deadline: Instant) -> Self {
        Timed { inner, deadline }
    }
}

impl<R: Read> Read for Timed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if Instant::now() >= self.deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the connection took too long",
            ));
        }
        match self.inner.read(buf) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client stopped sending",
                ))
            }
            other => other,
        }
    }
}

/// The request body: the bytes that came with the head, then the
/// connection, `Content-Length` bytes in all.
#[derive(Debug)]
pub(crate) struct Body<R> {
    early: Vec<u8>,
    at: usize,
    inner: R,
    remaining: u64,
}

impl<R> Body<R> {
    pub fn new(early: Vec<u8>, inner: R, content_length: u64) -> Self {
        Body {
            early,
            at: 0,
            inner,
            remaining: content_length,
        }
    }

    /// Bytes of the body not read yet.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }
}

impl<R: Read> Read for Body<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let max = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        if max == 0 {
            return Ok(0);
        }
        let n = if self.at < self.early.len() {
            let n = max.min(self.early.len() - self.at);
            buf[..n].copy_from_slice(&self.early[self.at..self.at + n]);
            self.at += n;
            n
        } else {
            self.inner.read(&mut buf[..max])?
        };
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Writes a whole answer with a JSON body.
pub(crate) fn respond(out: &mut impl Write, status: u16, json: &[u8]) -> io::Result<()> {
    let mut answer = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        reason(status),
        json.len()
    )
    .into_bytes();
    answer.extend_from_slice(json);
    out.write_all(&answer)?;
    out.flush()
}

/// Tells a client that sent `Expect: 100-continue` to send the body.
pub(crate) fn continue_100(out: &mut impl Write) -> io::Result<()> {
    out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    out.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        422 => "Unprocessable Content",
        431 => "Request Header Fields Too Large",
        _ => "Internal Server Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(bytes: &[u8]) -> Result<(Head, Vec<u8>), HeadError> {
        read_head(&mut &bytes[..])
    }

    #[test]
    fn a_head_and_the_start_of_the_body() {
        let (head, early) = head(
            b"POST /v1/update?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\nAUTHORIZATION: sig\r\n\r\n0123",
        )
        .unwrap();
        assert_eq!((head.method.as_str(), head.path()), ("POST", "/v1/update"));
        assert_eq!(head.target, "/v1/update?x=1");
        assert_eq!(head.content_length(), Ok(Some(10)));
        assert_eq!(head.header("authorization"), Some(&b"sig"[..]));
        assert_eq!(early, b"0123");
        let mut body = Body::new(early, &b"456789 and more"[..], 10);
        let mut all = Vec::new();
        body.read_to_end(&mut all).unwrap();
        assert_eq!(all, b"0123456789");
        assert_eq!(body.remaining(), 0);
    }

    #[test]
    fn bad_heads_are_refused() {
        assert!(matches!(head(b""), Err(HeadError::Gone)));
        assert!(matches!(head(b"GET / HTTP/1.1\r\n"), Err(HeadError::Gone)));
        assert!(matches!(
            head(b"\x16\x03\x01 hello\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert!(matches!(head(long.as_bytes()), Err(HeadError::TooLarge)));
        let many: String = (0..40).map(|i| format!("X{i}: 1\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert!(matches!(head(many.as_bytes()), Err(HeadError::TooLarge)));
        let twice = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert!(matches!(head(twice), Err(HeadError::Malformed(_))));
        let (bad, _) = head(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n").unwrap();
        assert!(bad.content_length().is_err());
        let (none, _) = head(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(none.content_length(), Ok(None));
    }

    #[test]
    fn answers_are_complete() {
        let mut out = Vec::new();
        respond(&mut out, 404, b"{}").unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"), "{text}");
        assert!(text.contains("Content-Length: 2\r\n") && text.contains("Connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\n{}"));
    }
}
