//! A small W3C WebDriver client for the tests: it drives a headless
//! Chromium through `chromedriver` over plain HTTP/1.1 on 127.0.0.1, so a
//! test can load a page, read its elements and keep a screenshot.
//!
//! Debian's `chromium` and `chromium-driver` (installed by `scripts/setup`)
//! provide `/usr/bin/chromium` and `/usr/bin/chromedriver`. The browser is
//! told to stay off the network: no background requests, no component
//! updates, no proxy, and no host resolves but 127.0.0.1 and `localhost`.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::free_port;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// The W3C name of an element reference in a response.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Chromium's arguments: headless, as root (no sandbox), a fixed window,
/// and no traffic but what the test asks for.
const ARGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--window-size=1280,1024",
    "--no-first-run",
    "--no-default-browser-check",
    "--no-pings",
    "--no-proxy-server",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-breakpad",
    "--metrics-recording-only",
    "--safebrowsing-disable-auto-update",
    "--disable-features=OptimizationHints,MediaRouter,Translate,AutofillServerCommunication,\
     CertificateTransparencyComponentUpdater,DialMediaRouteProvider",
];

/// A headless Chromium session; quits the browser and stops chromedriver
/// on drop.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    /// chromedriver's stdout and stderr, shown when it fails to start.
    log: tempfile::NamedTempFile,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a session. Panics with
    /// what to do if chromedriver or Chromium is missing or does not start.
    pub fn start() -> Browser {
        for (path, package) in [(CHROMEDRIVER, "chromium-driver"), (CHROMIUM, "chromium")] {
            assert!(
                Path::new(path).exists(),
                "{path} not found (Debian package {package}): run scripts/setup"
            );
        }
        let log = tempfile::NamedTempFile::new().unwrap();
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap())
            // Its own process group, so that drop can stop Chromium too.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e}: run scripts/setup"));
        let mut browser = Browser {
            driver,
            port,
            session: String::new(),
            log,
        };
        browser.wait_ready(Duration::from_secs(30));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "timeouts": {"pageLoad": 30_000, "script": 30_000, "implicit": 0},
            "goog:chromeOptions": {"binary": CHROMIUM, "args": ARGS},
        }}});
        let created = browser
            .request("POST", "/session", Some(&capabilities))
            .unwrap_or_else(|e| panic!("chromedriver cannot start Chromium: {e}{}", browser.log()));
        browser.session = created["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        browser
    }

    /// Loads `url` and waits for it to load.
    pub fn goto(&self, url: &str) {
        self.command("POST", "url", Some(&json!({ "url": url })));
    }

    /// The current URL (after redirects).
    pub fn url(&self) -> String {
        self.string("url")
    }

    pub fn title(&self) -> String {
        self.string("title")
    }

    /// The rendered text of the first element matching `css`; panics if
    /// none does. A page that reloads itself (the status page refreshes)
    /// can replace the element between finding it and reading it; then it
    /// is found again in the new page.
    pub fn text(&self, css: &str) -> String {
        let query = json!({"using": "css selector", "value": css});
        let mut attempts = 0;
        loop {
            let found = self.command("POST", "element", Some(&query));
            let id = found[ELEMENT].as_str().expect("an element reference");
            let path = format!("/session/{}/element/{id}/text", self.session);
            match self.request("GET", &path, None) {
                Ok(Value::String(text)) => return text,
                Ok(other) => panic!("webdriver text of {css}: not a string: {other}"),
                Err(e) if e.starts_with("stale element reference") && attempts < 5 => attempts += 1,
                Err(e) => panic!("webdriver text of {css}: {e}"),
            }
        }
    }

    /// The page's source as the browser holds it now.
    pub fn html(&self) -> String {
        self.string("source")
    }

    /// The cookies visible to the current page, as WebDriver cookie
    /// objects (`name`, `value`, `path`, `httpOnly`, `secure`, `sameSite`, …).
    pub fn cookies(&self) -> Vec<Value> {
        match self.command("GET", "cookie", None) {
            Value::Array(cookies) => cookies,
            other => panic!("webdriver: cookies are not a list: {other}"),
        }
    }

    /// Saves a PNG of the viewport to `path`.
    pub fn screenshot(&self, path: &Path) {
        let png = base64_decode(&self.string("screenshot"));
        std::fs::write(path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    /// A session command whose value is a string.
    fn string(&self, command: &str) -> String {
        match self.command("GET", command, None) {
            Value::String(s) => s,
            other => panic!("webdriver GET {command}: not a string: {other}"),
        }
    }

    /// A command on this session; panics on an error.
    fn command(&self, method: &str, command: &str, body: Option<&Value>) -> Value {
        let path = format!("/session/{}/{command}", self.session);
        self.request(method, &path, body)
            .unwrap_or_else(|e| panic!("webdriver {method} {command}: {e}"))
    }

    /// One WebDriver request; the response's `value`, or its error.
    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let body = body.map(Value::to_string).unwrap_or_default();
        let (status, response) =
            http(self.port, method, path, &body).map_err(|e| format!("{method} {path}: {e}"))?;
        let value: Value = serde_json::from_slice(&response)
            .map(|mut v: Value| v["value"].take())
            .map_err(|e| format!("{method} {path}: status {status}, not JSON: {e}"))?;
        if status != 200 {
            let (error, message) = (&value["error"], &value["message"]);
            return Err(format!(
                "{}: {}",
                error.as_str().unwrap_or("?"),
                message.as_str().unwrap_or("?")
            ));
        }
        Ok(value)
    }

    /// Waits for chromedriver's `/status` to say it is ready.
    fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(status) = self.request("GET", "/status", None)
                && status["ready"] == true
            {
                return;
            }
            if let Ok(Some(exit)) = self.driver.try_wait() {
                panic!("chromedriver exited at start ({exit}){}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver is not ready after {timeout:?}{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// chromedriver's output so far, for a panic message.
    fn log(&self) -> String {
        let text = std::fs::read_to_string(self.log.path()).unwrap_or_default();
        format!("\n--- chromedriver output ---\n{text}")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.request("DELETE", &format!("/session/{}", self.session), None);
        }
        // Chromium normally went with its session; this catches what did not.
        if let Some(group) = rustix::process::Pid::from_raw(self.driver.id() as i32) {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
        let _ = self.driver.wait();
    }
}

/// One HTTP/1.1 request to 127.0.0.1:`port` with a JSON body; returns the
/// status and the body (by `Content-Length`, chunks or end of stream).
fn http(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(90)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok());
    let status =
        status.ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let (mut length, mut chunked) = (None, false);
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let Some((name, value)) = line.trim_end().split_once(':') else {
            break;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| std::io::Error::other(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..])?;
            reader.read_line(&mut line)?;
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        reader.read_exact(&mut body)?;
    } else {
        reader.read_to_end(&mut body)?;
    }
    Ok((status, body))
}

/// Decodes standard base64 (padding and whitespace ignored).
fn base64_decode(text: &str) -> Vec<u8> {
    let sextet = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {:?}", c as char),
    };
    let (mut out, mut bits, mut n) = (Vec::with_capacity(text.len() * 3 / 4), 0u32, 0);
    for c in text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
    {
        bits = bits << 6 | u32::from(sextet(c));
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

/// Serves `page` as `/` (with a cookie) on 127.0.0.1 from a thread; 404
/// for anything else. Returns the port.
fn serve(page: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let (status, body) = match request.split_whitespace().nth(1) {
                Some("/") => ("200 OK", page),
                _ => ("404 Not Found", "not found"),
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n\
                 Set-Cookie: nodeos=yes; Path=/; HttpOnly\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[test]
fn base64_decodes_what_a_browser_sends() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGVs\nbG8h"), b"hello!");
    assert_eq!(base64_decode("iVBORw0KGgo="), b"\x89PNG\r\n\x1a\n");
}

#[test]
fn the_driver_renders_a_local_page_and_takes_a_screenshot() {
    let port = serve(
        "<!DOCTYPE html><html><head><title>nodeos browser test</title><style>\
         body{font:20px system-ui;background:#f4f5f7} div{display:inline-block;width:200px;\
         height:120px;margin:8px} .a{background:#15803d}.b{background:#b45309}.c{background:#2563eb}\
         </style></head><body><h1 id=\"greeting\">Hello &amp; welcome</h1>\
         <div class=\"a\"></div><div class=\"b\"></div><div class=\"c\"></div></body></html>",
    );
    let browser = Browser::start();
    let url = format!("http://127.0.0.1:{port}/");
    browser.goto(&url);
    assert_eq!(browser.url(), url);
    assert_eq!(browser.title(), "nodeos browser test");
    assert_eq!(browser.text("#greeting"), "Hello & welcome");
    assert!(browser.html().contains("class=\"c\""));
    let cookies = browser.cookies();
    assert!(
        cookies
            .iter()
            .any(|c| c["name"] == "nodeos" && c["httpOnly"] == true),
        "{cookies:?}"
    );

    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-screenshot.png");
    browser.screenshot(&path);
    eprintln!("screenshot: {}", path.display());
    let mut png = Vec::new();
    File::open(&path).unwrap().read_to_end(&mut png).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && &png[12..16] == b"IHDR",
        "not a PNG"
    );
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert!(
        (1200..=1400).contains(&width) && height > 0,
        "{width}×{height}"
    );
    assert!(
        png.len() > 2048,
        "a {}-byte screenshot is too small to show the page",
        png.len()
    );
}
