//! A small QMP (QEMU Machine Protocol) client: JSON objects, one per line,
//! over a Unix socket.
//!
//! The server greets with `{"QMP": …}`; the client must send
//! `qmp_capabilities` before anything else. Each command gets exactly one
//! `{"return": …}` or `{"error": …}` carrying the command's `id`; events
//! (`{"event": …}`) may arrive at any time in between and are kept.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::Error;

/// How long to wait for a reply before giving up on QEMU.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A QMP connection past the capabilities handshake.
#[derive(Debug)]
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
    events: Vec<Value>,
}

impl Qmp {
    /// Connects to the socket at `path` and does the handshake.
    pub fn connect(path: &Path) -> Result<Qmp, Error> {
        Qmp::handshake(UnixStream::connect(path).map_err(Error::QmpIo)?)
    }

    /// Reads the greeting from `stream` and negotiates capabilities.
    pub fn handshake(stream: UnixStream) -> Result<Qmp, Error> {
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .map_err(Error::QmpIo)?;
        let writer = stream.try_clone().map_err(Error::QmpIo)?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream),
            writer,
            next_id: 1,
            events: Vec::new(),
        };
        let greeting = qmp.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(Error::Qmp(format!(
                "expected the QMP greeting, got {greeting}"
            )));
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// Runs `command` and returns its `return` value; events that arrive
    /// meanwhile are kept for [`Qmp::take_events`].
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, Error> {
        let id = self.next_id;
        self.next_id += 1;
        let mut request = json!({ "execute": command, "id": id });
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        let mut line = request.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(Error::QmpIo)?;
        loop {
            let mut message = self.read_message()?;
            if message.get("event").is_some() {
                self.events.push(message);
                continue;
            }
            if message.get("id").and_then(Value::as_u64) != Some(id) {
                return Err(Error::Qmp(format!(
                    "reply to `{command}` has the wrong id: {message}"
                )));
            }
            if let Some(value) = message.get_mut("return") {
                return Ok(value.take());
            }
            if let Some(error) = message.get("error") {
                let class = error
                    .get("class")
                    .and_then(Value::as_str)
                    .unwrap_or("Error");
                let desc = error
                    .get("desc")
                    .and_then(Value::as_str)
                    .unwrap_or("no description");
                return Err(Error::Qmp(format!("`{command}` failed: {class}: {desc}")));
            }
            return Err(Error::Qmp(format!(
                "unexpected reply to `{command}`: {message}"
            )));
        }
    }

    /// Events received so far (oldest first), removed from the connection.
    pub fn take_events(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.events)
    }

    /// Presses the ACPI power button.
    pub fn system_powerdown(&mut self) -> Result<(), Error> {
        self.execute("system_powerdown", None).map(drop)
    }

    /// Asks QEMU to exit now. QEMU may close the socket before replying;
    /// that counts as success.
    pub fn quit(&mut self) -> Result<(), Error> {
        match self.execute("quit", None) {
            Ok(_) | Err(Error::QmpIo(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn set_reply_timeout(&self, timeout: Duration) -> Result<(), Error> {
        self.reader
            .get_ref()
            .set_read_timeout(Some(timeout))
            .map_err(Error::QmpIo)
    }

    fn read_message(&mut self) -> Result<Value, Error> {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.reader.read_line(&mut line).map_err(Error::QmpIo)?;
            if n == 0 {
                return Err(Error::QmpIo(std::io::ErrorKind::UnexpectedEof.into()));
            }
            let text = line.trim();
            if !text.is_empty() {
                return serde_json::from_str(text)
                    .map_err(|e| Error::Qmp(format!("invalid JSON from QEMU ({e}): {text}")));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;
    use std::thread;

    /// A fake QMP server: sends the greeting, then for each expected request
    /// checks the command and writes the scripted replies (`ID` in them is
    /// replaced by the request's id). Returns the requests it saw.
    fn fake_server(
        script: Vec<(&'static str, Vec<&'static str>)>,
    ) -> (tempfile::TempDir, thread::JoinHandle<Vec<Value>>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut writer = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            writer
                .write_all(b"{\"QMP\": {\"version\": {\"qemu\": {\"major\": 7}}, \"capabilities\": [\"oob\"]}}\r\n")
                .unwrap();
            let mut seen = Vec::new();
            for (command, replies) in script {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let request: Value = serde_json::from_str(&line).unwrap();
                assert_eq!(request["execute"], command, "{line}");
                let id = request["id"].to_string();
                for reply in replies {
                    writer
                        .write_all(reply.replace("ID", &id).as_bytes())
                        .unwrap();
                    writer.write_all(b"\r\n").unwrap();
                }
                seen.push(request);
            }
            seen
        });
        (dir, server)
    }

    #[test]
    fn handshake_then_powerdown_with_events_interleaved() {
        let (dir, server) = fake_server(vec![
            ("qmp_capabilities", vec![r#"{"return": {}, "id": ID}"#]),
            (
                "system_powerdown",
                vec![
                    r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "POWERDOWN"}"#,
                    "",
                    r#"{"return": {}, "id": ID}"#,
                ],
            ),
            (
                "query-status",
                vec![
                    r#"{"event": "RESUME"}"#,
                    r#"{"return": {"status": "running", "running": true}, "id": ID}"#,
                ],
            ),
        ]);
        let mut qmp = Qmp::connect(&dir.path().join("qmp.sock")).unwrap();
        qmp.system_powerdown().unwrap();
        let status = qmp.execute("query-status", None).unwrap();
        assert_eq!(status["status"], "running");
        let events: Vec<_> = qmp
            .take_events()
            .iter()
            .map(|e| e["event"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(events, ["POWERDOWN", "RESUME"]);
        assert!(qmp.take_events().is_empty());

        let seen = server.join().unwrap();
        let ids: Vec<_> = seen.iter().map(|r| r["id"].as_u64().unwrap()).collect();
        assert_eq!(ids, [1, 2, 3]);
        assert!(seen.iter().all(|r| r.get("arguments").is_none()));
    }

    #[test]
    fn error_replies_become_qmp_errors() {
        let (dir, server) = fake_server(vec![
            ("qmp_capabilities", vec![r#"{"return": {}, "id": ID}"#]),
            (
                "nope",
                vec![
                    r#"{"error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}, "id": ID}"#,
                ],
            ),
        ]);
        let mut qmp = Qmp::connect(&dir.path().join("qmp.sock")).unwrap();
        let err = qmp.execute("nope", Some(json!({"x": 1}))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "QMP: `nope` failed: CommandNotFound: The command nope has not been found"
        );
        let seen = server.join().unwrap();
        assert_eq!(seen[1]["arguments"], json!({"x": 1}));
    }

    #[test]
    fn quit_tolerates_the_socket_closing_first() {
        let (dir, server) = fake_server(vec![
            ("qmp_capabilities", vec![r#"{"return": {}, "id": ID}"#]),
            ("quit", vec![]),
        ]);
        let mut qmp = Qmp::connect(&dir.path().join("qmp.sock")).unwrap();
        let quit = thread::spawn(move || qmp.quit());
        server.join().unwrap(); // the server hangs up without replying
        quit.join().unwrap().unwrap();
    }

    #[test]
    fn a_server_that_is_not_qmp_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream.write_all(b"{\"hello\": 1}\n").unwrap();
        });
        let err = Qmp::connect(&path).unwrap_err();
        assert!(
            err.to_string().contains("expected the QMP greeting"),
            "{err}"
        );
        server.join().unwrap();
    }
}
