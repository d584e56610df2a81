//! Just enough HTTP/1.1 for the agent: one request per connection, a head
//! of at most [`MAX_HEAD`] bytes parsed with httparse, a body of exactly
//! `Content-Length` bytes, and answers with `Connection: close`: whole
//! ones with a `Content-Length`, or streamed in chunks ([`Chunked`]).

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

    /// The value of query parameter `name`, percent-decoded; `None` if it
    /// is absent or not UTF-8 after decoding.
    pub fn query(&self, name: &str) -> Option<String> {
        let (_, query) = self.target.split_once('?')?;
        query.split('&').find_map(|pair| {
            let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
            (n == name).then(|| percent_decode(v))?
        })
    }

    /// The value of cookie `name`, if the request carries it.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        let cookies = std::str::from_utf8(self.header("cookie")?).ok()?;
        cookies.split(';').find_map(|c| {
            let (n, v) = c.trim().split_once('=')?;
            (n == name).then_some(v)
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

/// `%XX` and `+` decoded; `None` if the result is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
                continue;
            }
            (b'+', _) => out.push(b' '),
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Writes a whole answer with a JSON body.
pub(crate) fn respond(out: &mut impl Write, status: u16, json: &[u8]) -> io::Result<()> {
    respond_with(out, status, "application/json", &[], json)
}

/// Writes a whole answer: `content_type`, `headers` (name, value) and `body`.
pub(crate) fn respond_with(
    out: &mut impl Write,
    status: u16,
    content_type: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> io::Result<()> {
    let mut answer = head(status, content_type, headers);
    answer.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut answer = answer.into_bytes();
    answer.extend_from_slice(body);
    out.write_all(&answer)?;
    out.flush()
}

/// The status line and headers of an answer, without the blank line.
fn head(status: u16, content_type: &str, headers: &[(&str, String)]) -> String {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nCache-Control: no-store\r\nConnection: close\r\n",
        reason(status)
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head
}

/// A `200` answer sent in chunks as it is made (a log being followed, a
/// heap snapshot). Only [`Chunked::finish`] sends the last chunk, so a
/// client can tell a whole answer from one cut short by an error.
pub(crate) struct Chunked<W: Write> {
    out: W,
}

impl<W: Write> Chunked<W> {
    /// Sends the head.
    pub fn start(mut out: W, content_type: &str) -> io::Result<Self> {
        let mut head = head(200, content_type, &[]);
        head.push_str("Transfer-Encoding: chunked\r\n\r\n");
        out.write_all(head.as_bytes())?;
        out.flush()?;
        Ok(Chunked { out })
    }

    /// Sends `data` as one chunk (nothing for empty data: an empty chunk
    /// would end the answer).
    pub fn send(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
        chunk.extend_from_slice(data);
        chunk.extend_from_slice(b"\r\n");
        self.out.write_all(&chunk)?;
        self.out.flush()
    }

    /// Sends the last chunk: the answer is whole.
    pub fn finish(mut self) -> io::Result<()> {
        self.out.write_all(b"0\r\n\r\n")?;
        self.out.flush()
    }
}

/// Tells a client that sent `Expect: 100-continue` to send the body.
pub(crate) fn continue_100(out: &mut impl Write) -> io::Result<()> {
    out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    out.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        303 => "See Other",
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
        503 => "Service Unavailable",
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
    fn query_parameters_and_cookies() {
        let (h, _) = head(
            b"GET /v1/logs?since=5&tail=&x=a%20b+c%2F&bad=%ff HTTP/1.1\r\nCookie: a=1; nodeos_token=t.o.k\r\n\r\n",
        )
        .unwrap();
        assert_eq!(h.query("since").as_deref(), Some("5"));
        assert_eq!(h.query("tail").as_deref(), Some(""));
        assert_eq!(h.query("x").as_deref(), Some("a b c/"));
        assert_eq!(h.query("bad"), None, "not UTF-8");
        assert_eq!(h.query("follow"), None);
        assert_eq!(h.cookie("nodeos_token"), Some("t.o.k"));
        assert_eq!(h.cookie("b"), None);
    }

    #[test]
    fn chunked_answers_end_only_when_finished() {
        let mut out = Vec::new();
        let mut chunked = Chunked::start(&mut out, "application/x-ndjson").unwrap();
        chunked.send(b"hello\n").unwrap();
        chunked.send(b"").unwrap();
        chunked.send(&[b'x'; 20]).unwrap();
        chunked.finish().unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Transfer-Encoding: chunked\r\n\r\n6\r\nhello\n\r\n14\r\n"));
        assert!(text.ends_with(&format!("{}\r\n0\r\n\r\n", "x".repeat(20))));
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
