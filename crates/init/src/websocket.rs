//! A minimal RFC 6455 websocket client over a plain [`TcpStream`]: enough
//! to talk to node's inspector on loopback ([`crate::profile`]). It does
//! the opening handshake (and checks `Sec-WebSocket-Accept`), sends masked
//! text frames, and receives text and binary messages: 7-, 16- and 64-bit
//! lengths, fragments reassembled, pings answered, a close answered and
//! reported. No TLS, no extensions, no subprotocols.
//!
//! Every read has a deadline and every write a timeout, and an incoming
//! message has a size limit, so a peer that hangs or floods cannot wedge
//! or exhaust the caller. SHA-1 and base64 (for the handshake only) are
//! implemented here: a few lines instead of two more crates.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The GUID of RFC 6455 §1.3, appended to the key for the accept hash.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Largest handshake answer head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Longest a write may block (the peer not reading).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default limit on an incoming message: the size of a reassembled message.
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;
/// The most a payload grows by ahead of the bytes read into it.
const READ_STEP: usize = 64 * 1024;

const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// Close status codes (RFC 6455 §7.4.1) this client sends.
const NORMAL: u16 = 1000;
const PROTOCOL_ERROR: u16 = 1002;
const INVALID_DATA: u16 = 1007;
const TOO_BIG: u16 = 1009;

/// What can go wrong on a websocket.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("websocket I/O")]
    Io(#[from] io::Error),
    #[error("websocket handshake: {0}")]
    Handshake(String),
    #[error("websocket protocol error: {0}")]
    Protocol(String),
    #[error("an incoming websocket message is larger than {limit} bytes")]
    TooBig { limit: usize },
    #[error("the peer closed the websocket (code {}{}{reason})",
        code.map_or("none".to_owned(), |c| c.to_string()),
        if reason.is_empty() { "" } else { ": " })]
    Closed { code: Option<u16>, reason: String },
    #[error("the peer closed the connection without a websocket close frame")]
    Eof,
    #[error("no websocket message before the deadline")]
    TimedOut,
}

/// A whole incoming message.
#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    Text(String),
    Binary(Vec<u8>),
}

/// The client end of an open websocket.
pub struct Client {
    stream: TcpStream,
    /// Bytes read from the stream and not yet consumed: `buf[pos..]`.
    buf: Vec<u8>,
    pos: usize,
    /// Largest incoming message accepted.
    limit: usize,
    /// A close frame was sent: nothing else may be.
    close_sent: bool,
}

impl Client {
    /// Connects to `addr` and opens a websocket on `path` (with `Host:
    /// addr`), all before `deadline`.
    pub fn connect(addr: SocketAddr, path: &str, deadline: Instant) -> Result<Self, Error> {
        let timeout = left(deadline)?;
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        stream.set_nodelay(true)?;
        let mut client = Client {
            stream,
            buf: Vec::with_capacity(64 * 1024),
            pos: 0,
            limit: MAX_MESSAGE,
            close_sent: false,
        };
        let mut nonce = [0; 16];
        random(&mut nonce)?;
        let key = base64(&nonce);
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        client.stream.write_all(request.as_bytes())?;
        client.read_handshake(&key, deadline)?;
        Ok(client)
    }

    /// Sets the largest incoming message accepted (default [`MAX_MESSAGE`]).
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    /// Reads the answer head to the opening handshake and checks it: 101,
    /// an upgrade to websocket, and the accept hash of `key`. Bytes after
    /// the head (the first frames) stay in the buffer.
    fn read_handshake(&mut self, key: &str, deadline: Instant) -> Result<(), Error> {
        let head_len = loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            if self.buf.len() >= MAX_HEAD {
                return Err(Error::Handshake(format!(
                    "the answer head is longer than {MAX_HEAD} bytes"
                )));
            }
            self.read_more(deadline)?;
        };
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut answer = httparse::Response::new(&mut headers);
        answer
            .parse(&self.buf[..head_len])
            .map_err(|e| Error::Handshake(format!("not an HTTP answer: {e}")))?;
        if answer.code != Some(101) {
            return Err(Error::Handshake(format!(
                "expected 101 Switching Protocols, got {} {}",
                answer.code.unwrap_or(0),
                answer.reason.unwrap_or("")
            )));
        }
        let header = |name: &str| {
            answer
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .and_then(|h| std::str::from_utf8(h.value).ok())
                .map(str::trim)
        };
        if !header("Upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")) {
            return Err(Error::Handshake("no Upgrade: websocket".to_owned()));
        }
        let upgrade = |v: &str| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        };
        if !header("Connection").is_some_and(upgrade) {
            return Err(Error::Handshake("no Connection: Upgrade".to_owned()));
        }
        let expected = accept(key);
        match header("Sec-WebSocket-Accept") {
            Some(got) if got == expected => {}
            got => {
                return Err(Error::Handshake(format!(
                    "Sec-WebSocket-Accept is {got:?}, expected {expected:?}"
                )));
            }
        }
        if let Some(ext) = header("Sec-WebSocket-Extensions") {
            return Err(Error::Handshake(format!("unrequested extensions {ext:?}")));
        }
        self.pos = head_len;
        Ok(())
    }

    /// Sends `text` as one masked text frame.
    pub fn send_text(&mut self, text: &str) -> Result<(), Error> {
        self.send(TEXT, text.as_bytes())
    }

    /// Sends one masked frame with FIN set.
    fn send(&mut self, opcode: u8, payload: &[u8]) -> Result<(), Error> {
        if self.close_sent {
            return Err(Error::Protocol("the websocket is closing".to_owned()));
        }
        let mut mask = [0; 4];
        random(&mut mask)?;
        self.stream.write_all(&frame(opcode, payload, mask))?;
        if opcode == CLOSE {
            self.close_sent = true;
        }
        Ok(())
    }

    /// The next whole message, before `deadline`. Pings are answered and
    /// pongs dropped on the way; a close from the peer is answered and
    /// returned as [`Error::Closed`].
    pub fn recv(&mut self, deadline: Instant) -> Result<Message, Error> {
        match self.recv_inner(deadline) {
            Err(e @ Error::Protocol(_)) => Err(self.fail(PROTOCOL_ERROR, e)),
            Err(e @ Error::TooBig { .. }) => Err(self.fail(TOO_BIG, e)),
            other => other,
        }
    }

    fn recv_inner(&mut self, deadline: Instant) -> Result<Message, Error> {
        // The message being reassembled from fragments: its opcode, payload.
        let mut partial: Option<(u8, Vec<u8>)> = None;
        loop {
            let head = self.read_head(deadline)?;
            if head.opcode >= CLOSE {
                let payload = self.read_payload(head.len, Vec::new(), deadline)?;
                match head.opcode {
                    PING if !self.close_sent => self.send(PONG, &payload)?,
                    PING | PONG => {}
                    _ => return Err(self.closed_by_peer(&payload)),
                }
                continue;
            }
            let (opcode, payload) = match (head.opcode, partial.take()) {
                (CONTINUATION, Some(partial)) => partial,
                (CONTINUATION, None) => {
                    return Err(Error::Protocol(
                        "a continuation frame out of a message".into(),
                    ));
                }
                (_, Some(_)) => {
                    return Err(Error::Protocol(
                        "a new message inside a fragmented one".into(),
                    ));
                }
                // Text or binary: `read_head` let no other opcode through.
                (opcode, None) => (opcode, Vec::new()),
            };
            if head.len > (self.limit - payload.len()) as u64 {
                return Err(Error::TooBig { limit: self.limit });
            }
            let payload = self.read_payload(head.len, payload, deadline)?;
            if !head.fin {
                partial = Some((opcode, payload));
                continue;
            }
            return match opcode {
                TEXT => match String::from_utf8(payload) {
                    Ok(text) => Ok(Message::Text(text)),
                    Err(_) => Err(self.fail(
                        INVALID_DATA,
                        Error::Protocol("a text message that is not UTF-8".into()),
                    )),
                },
                _ => Ok(Message::Binary(payload)),
            };
        }
    }

    /// The peer's close frame: answered (echoing its code) if this end has
    /// not closed yet, and turned into [`Error::Closed`].
    fn closed_by_peer(&mut self, payload: &[u8]) -> Error {
        let (code, reason) = match payload {
            [] => (None, String::new()),
            [a, b, reason @ ..] => (
                Some(u16::from_be_bytes([*a, *b])),
                String::from_utf8_lossy(reason).into_owned(),
            ),
            [_] => {
                return self.fail(
                    PROTOCOL_ERROR,
                    Error::Protocol("a 1-byte close frame".into()),
                );
            }
        };
        if !self.close_sent {
            // Codes a close frame must not carry (RFC 6455 §7.4) are not
            // echoed: 1000 is sent instead.
            let echo = code
                .filter(|c| (1000..5000).contains(c) && ![1004, 1005, 1006, 1015].contains(c))
                .unwrap_or(NORMAL);
            let _ = self.send(CLOSE, &echo.to_be_bytes());
        }
        let _ = self.stream.shutdown(Shutdown::Both);
        Error::Closed { code, reason }
    }

    /// Closes after an error on our side: a close frame with `code`
    /// (best effort), then the connection. Returns `err`.
    fn fail(&mut self, code: u16, err: Error) -> Error {
        if !self.close_sent {
            let _ = self.send(CLOSE, &code.to_be_bytes());
        }
        let _ = self.stream.shutdown(Shutdown::Both);
        err
    }

    /// Closes the websocket cleanly: a close frame (1000), then incoming
    /// frames are read and dropped until the peer's close, the end of the
    /// connection or `deadline`, and the connection is shut down.
    pub fn close(mut self, deadline: Instant) {
        if !self.close_sent && self.send(CLOSE, &NORMAL.to_be_bytes()).is_err() {
            return;
        }
        loop {
            match self.read_head(deadline) {
                Ok(head) if head.opcode == CLOSE => break,
                Ok(head) => {
                    if self.skip(head.len, deadline).is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Reads and checks a frame head.
    fn read_head(&mut self, deadline: Instant) -> Result<Head, Error> {
        let [b0, b1] = self.take::<2>(deadline)?;
        let fin = b0 & 0x80 != 0;
        let opcode = b0 & 0x0F;
        if b0 & 0x70 != 0 {
            return Err(Error::Protocol(
                "reserved bits set (no extension was agreed)".into(),
            ));
        }
        if b1 & 0x80 != 0 {
            return Err(Error::Protocol("a masked frame from the server".into()));
        }
        let len = match b1 & 0x7F {
            126 => u64::from(u16::from_be_bytes(self.take::<2>(deadline)?)),
            127 => {
                let len = u64::from_be_bytes(self.take::<8>(deadline)?);
                if len >> 63 != 0 {
                    return Err(Error::Protocol(
                        "a 64-bit length with its top bit set".into(),
                    ));
                }
                len
            }
            len => u64::from(len),
        };
        match opcode {
            CONTINUATION | TEXT | BINARY => {}
            CLOSE | PING | PONG if fin && len <= 125 => {}
            CLOSE | PING | PONG => {
                return Err(Error::Protocol(
                    "a fragmented or over-long control frame".into(),
                ));
            }
            other => return Err(Error::Protocol(format!("reserved opcode {other:#x}"))),
        }
        Ok(Head { fin, opcode, len })
    }

    /// Appends a payload of `len` bytes (already checked against the
    /// limit) to `payload`, which grows as the bytes come (not by what the
    /// peer announced).
    fn read_payload(
        &mut self,
        len: u64,
        mut payload: Vec<u8>,
        deadline: Instant,
    ) -> Result<Vec<u8>, Error> {
        let len = usize::try_from(len).map_err(|_| Error::TooBig { limit: self.limit })?;
        let end = payload.len() + len;
        while payload.len() < end {
            if self.pos < self.buf.len() {
                let n = (self.buf.len() - self.pos).min(end - payload.len());
                payload.extend_from_slice(&self.buf[self.pos..self.pos + n]);
                self.pos += n;
            } else {
                let filled = payload.len();
                payload.resize(filled + (end - filled).min(READ_STEP), 0);
                let n = read_until(&mut self.stream, &mut payload[filled..], deadline)?;
                payload.truncate(filled + n);
            }
        }
        Ok(payload)
    }

    /// Drops `len` incoming bytes.
    fn skip(&mut self, mut len: u64, deadline: Instant) -> Result<(), Error> {
        while len > 0 {
            if self.pos == self.buf.len() {
                self.read_more(deadline)?;
            }
            let n = ((self.buf.len() - self.pos) as u64).min(len);
            self.pos += n as usize;
            len -= n;
        }
        Ok(())
    }

    /// The next `N` incoming bytes.
    fn take<const N: usize>(&mut self, deadline: Instant) -> Result<[u8; N], Error> {
        while self.buf.len() - self.pos < N {
            self.read_more(deadline)?;
        }
        let mut out = [0; N];
        out.copy_from_slice(&self.buf[self.pos..self.pos + N]);
        self.pos += N;
        Ok(out)
    }

    /// Reads more bytes into the buffer (dropping the consumed ones first).
    fn read_more(&mut self, deadline: Instant) -> Result<(), Error> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let len = self.buf.len();
        self.buf.resize(len + 64 * 1024, 0);
        let read = read_until(&mut self.stream, &mut self.buf[len..], deadline);
        self.buf.truncate(len + *read.as_ref().unwrap_or(&0));
        read.map(drop)
    }
}

/// One read from `stream`, waiting at most until `deadline`.
fn read_until(stream: &mut TcpStream, out: &mut [u8], deadline: Instant) -> Result<usize, Error> {
    loop {
        stream.set_read_timeout(Some(left(deadline)?))?;
        return match stream.read(out) {
            Ok(0) => Err(Error::Eof),
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(Error::TimedOut)
            }
            Err(e) => Err(e.into()),
        };
    }
}

/// A frame head as read.
struct Head {
    fin: bool,
    opcode: u8,
    len: u64,
}

/// The time left until `deadline`, or [`Error::TimedOut`].
fn left(deadline: Instant) -> Result<Duration, Error> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Error::TimedOut);
    }
    Ok(left)
}

/// One frame with FIN set and its payload masked with `mask`, as a client
/// sends it (RFC 6455 §5.2).
fn frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(0x80 | opcode);
    match payload.len() {
        len @ 0..=125 => out.push(0x80 | len as u8),
        len @ 126..=0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    out
}

/// Fills `buf` from the kernel's random source.
fn random(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        match rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key`.
fn accept(key: &str) -> String {
    base64(&sha1(format!("{key}{GUID}").as_bytes()))
}

/// Standard base64 with padding (RFC 4648 §4).
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let bytes = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// SHA-1 (FIPS 180-4): only for the handshake's accept hash, where RFC
/// 6455 requires it; it is not used for anything secret.
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut message = data.to_vec();
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&(data.len() as u64 * 8).to_be_bytes());
    for block in message.chunks_exact(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (h, v) in h.iter_mut().zip([a, b, c, d, e]) {
            *h = h.wrapping_add(v);
        }
    }
    let mut out = [0; 20];
    for (chunk, word) in out.chunks_exact_mut(4).zip(h) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread::JoinHandle;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[test]
    fn sha1_matches_the_fips_test_vectors() {
        assert_eq!(hex(&sha1(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(
            hex(&sha1(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            hex(&sha1(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        );
        assert_eq!(
            hex(&sha1(&vec![b'a'; 1_000_000])),
            "34aa973cd4c4daa4f61eeb2bdbad27316534016f"
        );
    }

    #[test]
    fn base64_matches_the_rfc_4648_test_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
    }

    #[test]
    fn accept_matches_the_rfc_6455_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn masked_frames_match_the_rfc_6455_examples() {
        // RFC 6455 §5.7: a masked "Hello", and the masked pong to a ping.
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let hello = [0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
        assert_eq!(
            frame(TEXT, b"Hello", mask),
            [&[0x81, 0x85][..], &hello].concat()
        );
        assert_eq!(
            frame(PONG, b"Hello", mask),
            [&[0x8a, 0x85][..], &hello].concat()
        );
        // 16- and 64-bit lengths.
        let long = frame(BINARY, &[0; 256], [0; 4]);
        assert_eq!(long[..4], [0x82, 0xFE, 0x01, 0x00]);
        assert_eq!(long.len(), 4 + 4 + 256);
        let huge = frame(BINARY, &[0; 65536], [0; 4]);
        assert_eq!(huge[..10], [0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    /// What the in-test server saw from the client.
    struct Seen {
        request: String,
        /// Unmasked (opcode, payload) of every frame the client sent.
        frames: Vec<(u8, Vec<u8>)>,
    }

    /// A server on 127.0.0.1 for one connection: it answers the handshake
    /// (with `accept` overriding the correct accept value), writes
    /// `script`, then records the client's frames until a close frame or
    /// the end of the connection.
    fn server(accept_override: Option<&'static str>, script: Vec<u8>) -> (u16, JoinHandle<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut request = Vec::new();
            let mut byte = [0];
            while !request.ends_with(b"\r\n\r\n") {
                conn.read_exact(&mut byte).unwrap();
                request.push(byte[0]);
            }
            let request = String::from_utf8(request).unwrap();
            let key = request
                .lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                .unwrap()
                .to_owned();
            let accept_value = accept_override.map_or_else(|| accept(&key), str::to_owned);
            let answer = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Accept: {accept_value}\r\n\r\n"
            );
            // Head and first frames in one write: the client must keep
            // what follows the head.
            let _ = conn.write_all(&[answer.as_bytes(), &script].concat());
            let mut frames = Vec::new();
            loop {
                let mut head = [0; 2];
                if conn.read_exact(&mut head).is_err() {
                    break;
                }
                assert_eq!(head[1] & 0x80, 0x80, "client frames are masked");
                let len = match head[1] & 0x7F {
                    126 => {
                        let mut l = [0; 2];
                        conn.read_exact(&mut l).unwrap();
                        u16::from_be_bytes(l) as usize
                    }
                    127 => {
                        let mut l = [0; 8];
                        conn.read_exact(&mut l).unwrap();
                        u64::from_be_bytes(l) as usize
                    }
                    len => len as usize,
                };
                let mut mask = [0; 4];
                conn.read_exact(&mut mask).unwrap();
                let mut payload = vec![0; len];
                conn.read_exact(&mut payload).unwrap();
                for (b, m) in payload.iter_mut().zip(mask.iter().cycle()) {
                    *b ^= m;
                }
                let opcode = head[0] & 0x0F;
                frames.push((opcode, payload));
                if opcode == CLOSE {
                    let _ = conn.write_all(&[0x88, 0x02, 0x03, 0xE8]);
                    break;
                }
            }
            Seen { request, frames }
        });
        (port, handle)
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn the_handshake_sends_a_fresh_key_and_checks_the_accept_value() {
        let (port, server) = server(None, Vec::new());
        let client = Client::connect(addr(port), "/abc-123", soon()).unwrap();
        client.close(soon());
        let seen = server.join().unwrap();
        assert!(
            seen.request.starts_with("GET /abc-123 HTTP/1.1\r\n"),
            "{}",
            seen.request
        );
        assert!(
            seen.request
                .contains(&format!("\r\nHost: 127.0.0.1:{port}\r\n"))
        );
        assert!(seen.request.contains("\r\nSec-WebSocket-Version: 13\r\n"));
        let key = seen
            .request
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "));
        assert_eq!(key.map(str::len), Some(24), "16 bytes in base64");
        assert_eq!(seen.frames, [(CLOSE, vec![0x03, 0xE8])]);
    }

    #[test]
    fn a_wrong_accept_value_fails_the_handshake() {
        let (port, _server) = server(Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), Vec::new());
        let err = Client::connect(addr(port), "/", soon()).err().unwrap();
        assert!(
            matches!(err, Error::Handshake(ref m) if m.contains("Accept")),
            "{err}"
        );
    }

    #[test]
    fn a_non_101_answer_fails_the_handshake() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0; 1024];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(b"HTTP/1.0 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        });
        let err = Client::connect(addr(port), "/", soon()).err().unwrap();
        assert!(err.to_string().contains("got 400 Bad Request"), "{err}");
    }

    #[test]
    fn rfc_6455_example_frames_are_received() {
        let mut script = Vec::new();
        // §5.7: a single-frame unmasked text message.
        script.extend_from_slice(&[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        // A fragmented text message with a ping between its fragments.
        script.extend_from_slice(&[0x01, 0x03, 0x48, 0x65, 0x6c]);
        script.extend_from_slice(&[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        script.extend_from_slice(&[0x80, 0x02, 0x6c, 0x6f]);
        // 256 bytes of binary (16-bit length), then 200,000 (64-bit
        // length, read in several steps).
        script.extend_from_slice(&[0x82, 0x7E, 0x01, 0x00]);
        script.extend(std::iter::repeat_n(7, 256));
        script.extend_from_slice(&[0x82, 0x7F, 0, 0, 0, 0, 0, 0x03, 0x0D, 0x40]);
        script.extend(std::iter::repeat_n(9, 200_000));
        // An unsolicited pong, then the server closes.
        script.extend_from_slice(&[0x8A, 0x00]);
        script.extend_from_slice(&[0x88, 0x04, 0x03, 0xE9, b'b', b'y']);
        let (port, server) = server(None, script);
        let mut client = Client::connect(addr(port), "/", soon()).unwrap();
        assert_eq!(client.recv(soon()).unwrap(), Message::Text("Hello".into()));
        assert_eq!(client.recv(soon()).unwrap(), Message::Text("Hello".into()));
        assert_eq!(client.recv(soon()).unwrap(), Message::Binary(vec![7; 256]));
        assert_eq!(
            client.recv(soon()).unwrap(),
            Message::Binary(vec![9; 200_000])
        );
        let err = client.recv(soon()).unwrap_err();
        assert!(
            matches!(err, Error::Closed { code: Some(1001), ref reason } if reason == "by"),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "the peer closed the websocket (code 1001: by)"
        );
        let seen = server.join().unwrap();
        // The ping was answered with its payload; the close was echoed.
        assert_eq!(
            seen.frames,
            [(PONG, b"Hello".to_vec()), (CLOSE, vec![0x03, 0xE9])]
        );
    }

    #[test]
    fn a_close_code_that_must_not_be_sent_is_answered_with_1000() {
        for (code, echoed) in [(1001u16, 1001u16), (1005, 1000), (1006, 1000), (999, 1000)] {
            let mut script = vec![0x88, 0x02];
            script.extend_from_slice(&code.to_be_bytes());
            let (port, server) = server(None, script);
            let mut client = Client::connect(addr(port), "/", soon()).unwrap();
            let err = client.recv(soon()).unwrap_err();
            assert!(
                matches!(err, Error::Closed { code: Some(c), .. } if c == code),
                "{err}"
            );
            let seen = server.join().unwrap();
            assert_eq!(
                seen.frames,
                [(CLOSE, echoed.to_be_bytes().to_vec())],
                "{code}"
            );
        }
    }

    #[test]
    fn masked_text_goes_out() {
        let (port, server) = server(None, Vec::new());
        let mut client = Client::connect(addr(port), "/", soon()).unwrap();
        client.send_text("{\"id\":1}").unwrap();
        let long = "x".repeat(70_000);
        client.send_text(&long).unwrap();
        client.close(soon());
        let seen = server.join().unwrap();
        assert_eq!(seen.frames[0], (TEXT, b"{\"id\":1}".to_vec()));
        assert_eq!(seen.frames[1], (TEXT, long.into_bytes()));
        assert_eq!(seen.frames[2].0, CLOSE);
    }

    #[test]
    fn a_message_over_the_limit_is_refused_before_it_is_read() {
        let mut script = vec![0x01, 0x7E, 0x01, 0x00];
        script.extend(std::iter::repeat_n(b'a', 256));
        // A continuation claiming 2^40 bytes: the total is over the limit.
        script.extend_from_slice(&[0x80, 0x7F, 0, 0, 1, 0, 0, 0, 0, 0]);
        let (port, server) = server(None, script);
        let mut client = Client::connect(addr(port), "/", soon()).unwrap();
        client.set_limit(1024);
        let err = client.recv(soon()).unwrap_err();
        assert!(matches!(err, Error::TooBig { limit: 1024 }), "{err}");
        let seen = server.join().unwrap();
        assert_eq!(seen.frames, [(CLOSE, TOO_BIG.to_be_bytes().to_vec())]);
    }

    #[test]
    fn protocol_violations_are_refused() {
        let cases: [(&[u8], &str); 5] = [
            (&[0x81, 0x81, 0, 0, 0, 0, b'a'], "masked"),
            (&[0xC1, 0x00], "reserved bits"),
            (&[0x83, 0x00], "reserved opcode"),
            (&[0x80, 0x00], "continuation"),
            (&[0x09, 0x00], "control frame"),
        ];
        for (script, expected) in cases {
            let (port, server) = server(None, script.to_vec());
            let mut client = Client::connect(addr(port), "/", soon()).unwrap();
            let err = client.recv(soon()).unwrap_err();
            assert!(err.to_string().contains(expected), "{expected}: {err}");
            let seen = server.join().unwrap();
            assert_eq!(
                seen.frames,
                [(CLOSE, PROTOCOL_ERROR.to_be_bytes().to_vec())]
            );
        }
    }

    #[test]
    fn invalid_utf8_text_is_refused() {
        let (port, _server) = server(None, vec![0x81, 0x02, 0xC3, 0x28]);
        let mut client = Client::connect(addr(port), "/", soon()).unwrap();
        let err = client.recv(soon()).unwrap_err();
        assert!(err.to_string().contains("UTF-8"), "{err}");
    }

    #[test]
    fn a_silent_server_times_out_at_the_deadline() {
        let (port, _server) = server(None, Vec::new());
        let mut client = Client::connect(addr(port), "/", soon()).unwrap();
        let started = Instant::now();
        let err = client
            .recv(started + Duration::from_millis(200))
            .unwrap_err();
        assert!(matches!(err, Error::TimedOut), "{err}");
        assert!(started.elapsed() >= Duration::from_millis(200));
    }

    #[test]
    fn a_dropped_connection_is_reported() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (port2, server) = server(None, Vec::new());
        drop(listener);
        assert!(matches!(
            Client::connect(addr(port), "/", soon()).err().unwrap(),
            Error::Io(_)
        ));
        let mut client = Client::connect(addr(port2), "/", soon()).unwrap();
        client.send(CLOSE, &[]).unwrap(); // the server stops reading
        server.join().unwrap();
        let err = client.recv(soon()).unwrap_err();
        // The server's close answer, then the end of the connection.
        assert!(matches!(err, Error::Closed { .. } | Error::Eof), "{err}");
    }
}
