//! Talking to an appliance's update agent: its URL, the signing key, and
//! signed requests over plain HTTP/1.1.
//!
//! The client is a small one on `std::net::TcpStream` rather than ureq
//! (which nodeos-image uses for the npm registry): the agent speaks
//! only plain HTTP on one `host:port`, one request per connection, with an
//! exact `Content-Length` and no redirects, and the deploy loop must tell
//! "nothing listens" (the appliance is rebooting) from "the connection
//! broke" and from an answer. ureq would add what must not apply here (a
//! proxy from `HTTP_PROXY`, TLS and redirect handling) and hide those
//! differences behind its own error type.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use nodeos_image::Progress;
use nodeos_image::keys::{self, KeyError};
use nodeos_manifest::update::{
    DEFAULT_UPDATE_PORT, ErrorBody, STATUS_PATH, Status, UPDATE_PATH, UpdateAccepted,
};

use crate::exit::{Exit, fail};

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the agent may stay silent while a request or answer is under way.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer head (status line and headers) read.
const MAX_HEAD: usize = 16 << 10;
/// Largest answer body read (a status with its log tail is well below).
const MAX_BODY: usize = 4 << 20;
/// Bytes of the upload written at a time (and between progress updates).
const CHUNK: usize = 64 << 10;

/// Where an update agent listens: `http://HOST[:PORT]` (port 7070 by
/// default). Nothing else: no TLS, no path, no user name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// As given to connect: a name, an IPv4 address or a bare IPv6 address.
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// Parses the URL argument of `deploy` and `status`; a bad one is a
    /// usage error.
    pub fn parse(url: &str) -> anyhow::Result<Endpoint> {
        let usage = |why: &str| {
            fail(
                Exit::Usage,
                format!(
                    "URL {url:?} {why}; give the appliance's update agent as http://HOST:PORT, e.g. http://127.0.0.1:{DEFAULT_UPDATE_PORT}"
                ),
            )
        };
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(usage("has no scheme"));
        };
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(usage(&format!(
                "uses {scheme}://, but the update agent speaks plain http:// (requests are signed; tunnel it for privacy)"
            )));
        }
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#']) {
            return Err(usage("has a path; the agent's paths are fixed"));
        }
        if authority.contains('@') {
            return Err(usage(
                "has a user name; requests are signed with --key instead",
            ));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| usage("has an unclosed ["))?;
            match after {
                "" => (host, None),
                _ => (
                    host,
                    Some(
                        after
                            .strip_prefix(':')
                            .ok_or_else(|| usage("has junk after ]"))?,
                    ),
                ),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(usage("has no host"));
        }
        let port = match port {
            None => DEFAULT_UPDATE_PORT,
            Some(port) => port
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| usage("has a bad port"))?,
        };
        Ok(Endpoint {
            host: host.to_owned(),
            port,
        })
    }

    /// `host:port` (IPv6 in brackets), for the `Host` header and messages.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// `http://host:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.authority())
    }
}

/// The signing key of `--key FILE`, else of the default key file.
pub fn signing_key(arg: Option<PathBuf>) -> anyhow::Result<(SigningKey, PathBuf)> {
    let given = arg.is_some();
    let path = match arg {
        Some(path) => path,
        None => keys::default_path_from(|name| std::env::var_os(name)).ok_or_else(|| {
            fail(
                Exit::Key,
                "neither XDG_CONFIG_HOME nor HOME is set, so there is no default update key: pass --key FILE",
            )
        })?,
    };
    match keys::read_private(&path) {
        Ok(key) => Ok((key, path)),
        Err(KeyError::Missing { .. }) => Err(fail(
            Exit::Key,
            if given {
                format!("there is no key file {}", path.display())
            } else {
                format!(
                    "there is no update key at {}: make one with `nodeos keygen`, or pass --key FILE",
                    path.display()
                )
            },
        )),
        Err(e @ KeyError::NotAKey { .. }) => Err(fail(
            Exit::Key,
            format!("{e}; sign with the private key `nodeos keygen` wrote, not its .pub"),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Why a request to the agent failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Nothing answered: refused, timed out or not resolvable.
    #[error("cannot reach the appliance at {url}")]
    Unreachable {
        url: String,
        #[source]
        source: io::Error,
    },
    /// Connected, but the connection broke before a whole answer came.
    #[error("the connection to the appliance at {url} broke {when}")]
    Broken {
        url: String,
        /// `while sending the update`, `before it answered`.
        when: &'static str,
        /// Whether the whole request (with its body) was sent.
        sent: bool,
        #[source]
        source: io::Error,
    },
    /// 401: the agent did not accept the request's signature.
    #[error(
        "the appliance at {url} did not accept the request's signature (401): is key {key_id} the one its image trusts, and is this machine's clock within 5 minutes of the appliance's?"
    )]
    Unauthorized { url: String, key_id: String },
    /// Any other answer but 200, with the agent's reason.
    #[error("the appliance at {url} refused: {reason} ({status}{})", if error.is_empty() { String::new() } else { format!(" {error}") })]
    Refused {
        url: String,
        status: u16,
        /// The agent's error code (`not_newer`, `wrong_key`, …), if it gave one.
        error: String,
        reason: String,
    },
    /// Something answered that is not an update agent.
    #[error(
        "{url} answered, but not as a nodeos update agent ({what}); is it the update port ({DEFAULT_UPDATE_PORT} unless nodeos.update.port says otherwise)?"
    )]
    NotAnAgent { url: String, what: String },
    /// No nonce: the operating system gave no randomness.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// What the appliance sent could not be written where it goes (a file
    /// or standard output).
    #[error("cannot write what the appliance at {url} sent")]
    Output {
        url: String,
        #[source]
        source: io::Error,
    },
    /// The bundle could not be read from the image directory.
    #[error("cannot read the update bundle")]
    Bundle {
        #[source]
        source: io::Error,
    },
}

impl AgentError {
    /// Whether the appliance itself said no (rather than not answering).
    /// Whether the agent refused the request's key: a signature it cannot
    /// check (401) or a good signature by a key it does not trust (403
    /// `wrong_key`).
    pub fn wrong_key(&self) -> bool {
        match self {
            AgentError::Unauthorized { .. } => true,
            AgentError::Refused { status, error, .. } => *status == 403 && error == "wrong_key",
            _ => false,
        }
    }

    pub fn refused(&self) -> bool {
        matches!(
            self,
            AgentError::Unauthorized { .. } | AgentError::Refused { .. }
        )
    }
}

/// An answer.
#[derive(Debug)]
struct Response {
    status: u16,
    body: Vec<u8>,
}

/// A request body: the bytes, their count and a progress display.
pub struct Body<'a> {
    pub reader: &'a mut dyn Read,
    pub len: u64,
    pub progress: &'a dyn Progress,
}

/// Signed requests to one agent.
pub struct Client {
    endpoint: Endpoint,
    key: SigningKey,
}

impl Client {
    pub fn new(endpoint: Endpoint, key: SigningKey) -> Client {
        Client { endpoint, key }
    }

    pub fn url(&self) -> String {
        self.endpoint.url()
    }

    /// `GET /v1/status`.
    pub fn status(&self) -> Result<Status, AgentError> {
        let response = self.request("GET", STATUS_PATH, None, IO_TIMEOUT)?;
        self.parse(response)
    }

    /// `POST /v1/update` with `body` (a bundle); waits up to
    /// `answer_timeout` for the answer, which comes once the agent has
    /// written and checked the slot.
    pub fn update(
        &self,
        body: Body<'_>,
        answer_timeout: Duration,
    ) -> Result<UpdateAccepted, AgentError> {
        let response = self.request("POST", UPDATE_PATH, Some(body), answer_timeout)?;
        self.parse(response)
    }

    fn parse<T: serde::de::DeserializeOwned>(&self, response: Response) -> Result<T, AgentError> {
        let url = self.url();
        match response.status {
            200 => serde_json::from_slice(&response.body).map_err(|e| AgentError::NotAnAgent {
                url,
                what: format!("its 200 answer is not the JSON expected: {e}"),
            }),
            401 => Err(AgentError::Unauthorized {
                url,
                key_id: keys::public_key(&self.key).key_id(),
            }),
            status => {
                let (error, reason) = match serde_json::from_slice::<ErrorBody>(&response.body) {
                    Ok(body) => (printable(&body.error), printable(&body.reason)),
                    Err(_) => {
                        let text = String::from_utf8_lossy(&response.body);
                        let first = text.lines().next().unwrap_or("").trim();
                        let first: String = first.chars().take(200).collect();
                        let reason = if first.is_empty() {
                            "no reason given".to_owned()
                        } else {
                            printable(&first)
                        };
                        (String::new(), reason)
                    }
                };
                Err(AgentError::Refused {
                    url,
                    status,
                    error,
                    reason,
                })
            }
        }
    }

    /// One request on a fresh connection (`Connection: close`), its whole answer.
    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Body<'_>>,
        answer_timeout: Duration,
    ) -> Result<Response, AgentError> {
        let url = self.url();
        let (mut reader, head) = self.send(method, path, body, answer_timeout)?;
        read_body(&mut reader, &head).map_err(|source| AgentError::Broken {
            url,
            when: "before it answered",
            sent: true,
            source,
        })
    }

    /// `GET target` whose `200` answer is streamed in chunks: each piece
    /// goes to `sink` as it arrives. An answer cut short (the connection
    /// ended before the last chunk) is an error; a failing `sink` is
    /// [`AgentError::Output`] with the sink's error.
    pub fn stream(
        &self,
        method: &str,
        target: &str,
        answer_timeout: Duration,
        sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> Result<(), AgentError> {
        let url = self.url();
        let (mut reader, head) = self.send(method, target, None, answer_timeout)?;
        let broken = |source| AgentError::Broken {
            url: url.clone(),
            when: "in the middle of the answer",
            sent: true,
            source,
        };
        if head.status != 200 || !head.chunked {
            let response = read_body(&mut reader, &head).map_err(broken)?;
            return self.parse::<serde::de::IgnoredAny>(response).and_then(|_| {
                Err(AgentError::NotAnAgent {
                    url: url.clone(),
                    what: "its answer is not streamed".into(),
                })
            });
        }
        let mut sink_error = None;
        let result = read_chunks(&mut reader, &mut |data| {
            sink(data).map_err(|e| {
                let kind = e.kind();
                sink_error = Some(e);
                io::Error::from(kind)
            })
        });
        match sink_error {
            Some(source) => Err(AgentError::Output { url, source }),
            None => result.map_err(broken),
        }
    }

    /// Sends a signed request and reads the answer's head.
    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Body<'_>>,
        answer_timeout: Duration,
    ) -> Result<(BufReader<TcpStream>, AnswerHead), AgentError> {
        let url = self.url();
        let len = body.as_ref().map_or(0, |b| b.len);
        let authorization = keys::sign_request(&self.key, method, path, len)?;
        let mut stream = connect(&self.endpoint).map_err(|source| AgentError::Unreachable {
            url: url.clone(),
            source,
        })?;
        let broken = |when, sent, source| AgentError::Broken {
            url: url.clone(),
            when,
            sent,
            source,
        };
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: nodeos/{}\r\nAuthorization: {authorization}\r\nAccept: application/json\r\nConnection: close\r\n",
            self.endpoint.authority(),
            env!("CARGO_PKG_VERSION"),
        );
        if body.is_some() {
            head.push_str(&format!(
                "Content-Type: application/octet-stream\r\nContent-Length: {len}\r\n"
            ));
        }
        head.push_str("\r\n");
        stream
            .write_all(head.as_bytes())
            .map_err(|e| broken("while sending the request", false, e))?;
        if let Some(body) = body
            && let Err(e) = send_body(&mut stream, body)
        {
            return match e {
                SendError::Read(source) => Err(AgentError::Bundle { source }),
                // The agent may have answered early (a refusal) and
                // closed: its answer says more than the broken pipe.
                SendError::Write(source) => {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut reader = BufReader::new(stream);
                    match read_head(&mut reader) {
                        Ok(head) => Ok((reader, head)),
                        Err(_) => Err(broken("while sending the update", false, source)),
                    }
                }
            };
        }
        let _ = stream.set_read_timeout(Some(answer_timeout));
        let mut reader = BufReader::new(stream);
        let head = read_head(&mut reader).map_err(|e| broken("before it answered", true, e))?;
        Ok((reader, head))
    }
}

/// Connects to the first address of `endpoint` that answers.
fn connect(endpoint: &Endpoint) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the host name has no address");
    for addr in (endpoint.host.as_str(), endpoint.port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(stream) => {
                stream.set_read_timeout(Some(IO_TIMEOUT))?;
                stream.set_write_timeout(Some(IO_TIMEOUT))?;
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

enum SendError {
    /// Reading the body's source failed.
    Read(io::Error),
    /// Writing to the agent failed.
    Write(io::Error),
}

/// Copies exactly `body.len` bytes to `stream`, driving the progress display.
fn send_body(stream: &mut TcpStream, body: Body<'_>) -> Result<(), SendError> {
    let mut buf = vec![0u8; CHUNK];
    let mut left = body.len;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = body
            .reader
            .read(&mut buf[..want])
            .map_err(SendError::Read)?;
        if n == 0 {
            return Err(SendError::Read(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the bundle ended {left} bytes early"),
            )));
        }
        stream.write_all(&buf[..n]).map_err(SendError::Write)?;
        body.progress.inc(n as u64);
        left -= n as u64;
    }
    stream.flush().map_err(SendError::Write)?;
    body.progress.finish();
    Ok(())
}

/// An answer's status line and the headers that say how its body comes.
#[derive(Debug)]
struct AnswerHead {
    status: u16,
    content_length: Option<usize>,
    chunked: bool,
}

/// Reads a status line and headers, within [`MAX_HEAD`].
fn read_head(reader: &mut impl BufRead) -> io::Result<AnswerHead> {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        let n = (&mut *reader)
            .take((MAX_HEAD - before) as u64 + 1)
            .read_until(b'\n', &mut head)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                if head.is_empty() {
                    "the connection closed without an answer"
                } else {
                    "the connection closed in the middle of the answer"
                },
            ));
        }
        if head.len() > MAX_HEAD {
            return Err(io::Error::other("the answer's headers are too long"));
        }
        if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.lines();
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| {
            io::Error::other(format!(
                "not an HTTP answer: {:?}",
                printable(&status_line.chars().take(80).collect::<String>())
            ))
        })?;
    let mut answer = AnswerHead {
        status,
        content_length: None,
        chunked: false,
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let len: usize = value
                .trim()
                .parse()
                .map_err(|_| io::Error::other("a bad Content-Length in the answer"))?;
            answer.content_length = Some(len);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            answer.chunked = value.trim().eq_ignore_ascii_case("chunked");
        }
    }
    Ok(answer)
}

/// Reads a whole body (of `Content-Length` bytes, chunked, or up to the
/// end of the connection) within [`MAX_BODY`].
fn read_body(reader: &mut impl BufRead, head: &AnswerHead) -> io::Result<Response> {
    let mut body = Vec::new();
    let too_large = || io::Error::other(format!("the answer is more than {MAX_BODY} bytes"));
    match head.content_length {
        _ if head.chunked => read_chunks(reader, &mut |data| {
            if body.len() + data.len() > MAX_BODY {
                return Err(too_large());
            }
            body.extend_from_slice(data);
            Ok(())
        })?,
        Some(len) if len > MAX_BODY => return Err(too_large()),
        Some(len) => {
            body.resize(len, 0);
            reader.read_exact(&mut body)?;
        }
        None => {
            reader.take(MAX_BODY as u64 + 1).read_to_end(&mut body)?;
            if body.len() > MAX_BODY {
                return Err(too_large());
            }
        }
    }
    Ok(Response {
        status: head.status,
        body,
    })
}

/// Decodes a chunked body, handing each chunk's data to `sink`; an error
/// if the connection ends before the last (empty) chunk.
fn read_chunks(
    reader: &mut impl BufRead,
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let cut_short = || {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the answer was cut short (the appliance stopped sending before its end)",
        )
    };
    let mut line = String::new();
    let mut data = vec![0u8; CHUNK];
    loop {
        line.clear();
        if (&mut *reader).take(100).read_line(&mut line)? == 0 {
            return Err(cut_short());
        }
        let size = line.trim_end().split(';').next().unwrap_or("");
        let mut left = u64::from_str_radix(size.trim(), 16)
            .map_err(|_| io::Error::other(format!("a bad chunk size {size:?} in the answer")))?;
        if left == 0 {
            return Ok(());
        }
        while left > 0 {
            let want = data.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = reader.read(&mut data[..want])?;
            if n == 0 {
                return Err(cut_short());
            }
            sink(&data[..n])?;
            left -= n as u64;
        }
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf).map_err(|_| cut_short())?;
        if &crlf != b"\r\n" {
            return Err(io::Error::other(
                "a chunk in the answer is not ended by CRLF",
            ));
        }
    }
}

/// `text` with control characters (escape sequences from the appliance)
/// shown as `\u{…}` escapes, so it cannot drive the terminal.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\t' {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_answers_are_decoded_and_a_cut_one_is_an_error() {
        let mut got = Vec::new();
        let whole = b"5\r\nhello\r\n7;ext=1\r\n world!\r\n0\r\n\r\n";
        read_chunks(&mut &whole[..], &mut |d| {
            got.extend_from_slice(d);
            Ok(())
        })
        .unwrap();
        assert_eq!(got, b"hello world!");
        for cut in [&b"5\r\nhello\r\n"[..], b"5\r\nhel", b"", b"zz\r\n"] {
            let err = read_chunks(&mut &cut[..], &mut |_| Ok(())).unwrap_err();
            assert!(
                err.to_string().contains("cut short") || err.to_string().contains("chunk size"),
                "{err}"
            );
        }
        let head =
            read_head(&mut &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"[..]).unwrap();
        assert!(head.chunked && head.status == 200 && head.content_length.is_none());
    }

    #[test]
    fn urls_are_plain_http_host_and_port() {
        let ok = |url: &str| Endpoint::parse(url).unwrap();
        assert_eq!(
            ok("http://127.0.0.1:7071"),
            Endpoint {
                host: "127.0.0.1".into(),
                port: 7071
            }
        );
        assert_eq!(ok("http://127.0.0.1:7071/").port, 7071);
        assert_eq!(ok("HTTP://box.local").port, DEFAULT_UPDATE_PORT);
        let v6 = ok("http://[::1]:7072");
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 7072));
        assert_eq!(v6.url(), "http://[::1]:7072");
        assert_eq!(ok("http://[::1]").port, DEFAULT_UPDATE_PORT);
        for bad in [
            "127.0.0.1:7070",
            "https://127.0.0.1:7070",
            "http://127.0.0.1:7070/v1/status",
            "http://127.0.0.1:7070?x",
            "http://u@127.0.0.1:7070",
            "http://:7070",
            "http://127.0.0.1:0",
            "http://127.0.0.1:port",
            "http://[::1",
        ] {
            let err = Endpoint::parse(bad).unwrap_err();
            assert_eq!(crate::exit::classify(&err), Exit::Usage, "{bad}");
            assert!(err.to_string().contains("http://HOST:PORT"), "{err}");
        }
    }

    #[test]
    fn printable_escapes_control_characters() {
        assert_eq!(printable("a\tb"), "a\tb");
        assert_eq!(printable("\x1b[31mred"), "\\u{1b}[31mred");
        assert_eq!(printable("→ ok"), "→ ok");
    }
}
