//! One probe over a connected, non-blocking byte stream: send the GET (through
//! rustls for https) and read the response. The status line decides, as with
//! `curl --fail`; the rest of the response is read only to leave the connection
//! ready for the next probe (HTTP/1.1 keep-alive), which saves a TCP (and TLS)
//! handshake per check. The stream is any `Read + Write`; `WouldBlock` means
//! "call `drive` again when the socket is ready".

use super::HttpTarget;
use crate::http::chunked::ChunkedDecoder;
use rustls::ClientConnection;
use std::io::{self, Read, Write};

/// Bytes of response head we look through (interim 1xx heads included).
const MAX_HEAD: usize = 16 * 1024;
/// A longer body is not drained for reuse: the connection is closed instead.
const MAX_BODY: usize = 64 * 1024;
const MAX_HEADERS: usize = 64;

/// How a probe ended; the text is what the log and the `error` event show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass(String),
    Fail(String),
}

/// The end of an exchange: its outcome, and whether the connection may carry
/// the next probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finish {
    pub outcome: Outcome,
    pub reusable: bool,
}

enum Stage {
    Head,
    Length(usize),
    Chunked(ChunkedDecoder),
    Done,
}

pub struct Exchange {
    request: Vec<u8>,
    sent: usize,
    buf: Vec<u8>,
    /// Some response byte has arrived.
    received: bool,
    /// What the status line said, once it has come.
    verdict: Option<Outcome>,
    expect: Option<u16>,
    stage: Stage,
    body_seen: usize,
    tls: Option<Box<ClientConnection>>,
}

/// An I/O error in few words: `connection refused`, not `Connection refused (os error 111)`.
pub fn short_error(e: &io::Error) -> String {
    let s = e.to_string();
    let s = match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    };
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => s,
    }
}

/// Printable, bounded text from the peer.
fn clean(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(64)])
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// `HTTP/1.x NNN reason` into the code and reason.
fn status_line(line: &[u8]) -> Result<(u16, String), String> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Some(rest) = line.strip_prefix(b"HTTP/1.") else {
        return Err(format!("malformed response: {:?}", clean(line)));
    };
    let code = rest
        .get(2..5)
        .filter(|c| rest.get(1) == Some(&b' ') && c.iter().all(u8::is_ascii_digit))
        .and_then(|c| std::str::from_utf8(c).ok()?.parse::<u16>().ok())
        .ok_or_else(|| format!("malformed status line: {:?}", clean(line)))?;
    Ok((code, clean(rest.get(6..).unwrap_or(&[])).trim().to_string()))
}

fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// How the body after a complete head is delimited; `None` = only by the end
/// of the connection, which then cannot be reused.
fn framing(code: u16, head: &[u8]) -> Option<Stage> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Response::new(&mut headers);
    if !matches!(r.parse(head), Ok(httparse::Status::Complete(_))) || r.version != Some(1) {
        return None;
    }
    let value = |name: &str| {
        r.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
            .collect::<Vec<_>>()
    };
    if value("connection")
        .iter()
        .any(|v| v.split(',').any(|t| t.trim() == "close"))
    {
        return None;
    }
    if code == 204 || code == 304 {
        return Some(Stage::Length(0));
    }
    if let Some(te) = value("transfer-encoding").last() {
        return (te.rsplit(',').next().map(str::trim) == Some("chunked"))
            .then(|| Stage::Chunked(ChunkedDecoder::new()));
    }
    match &value("content-length")[..] {
        [one] => one
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= MAX_BODY)
            .map(Stage::Length),
        _ => None,
    }
}

impl Exchange {
    /// `tls` is the rustls client of an https target: fresh, or the session of
    /// a kept connection.
    pub fn http(target: &HttpTarget, tls: Option<Box<ClientConnection>>) -> Exchange {
        Exchange {
            request: target.request(),
            sent: 0,
            buf: Vec::new(),
            received: false,
            verdict: None,
            expect: target.status,
            stage: Stage::Head,
            body_seen: 0,
            tls,
        }
    }

    /// The TLS session, to keep with a reusable connection.
    pub fn take_tls(&mut self) -> Option<Box<ClientConnection>> {
        self.tls.take()
    }

    /// What the status said, if it has come (a timeout after it does not
    /// turn a pass into a failure).
    pub fn verdict(&self) -> Option<&Outcome> {
        self.verdict.as_ref()
    }

    /// Nothing came back: on a kept connection the server may have closed it
    /// while idle, and a fresh connection deserves a try.
    pub fn stale(&self) -> bool {
        !self.received
    }

    fn judge(&self, code: u16, reason: &str) -> Outcome {
        let text = if reason.is_empty() {
            format!("HTTP {code}")
        } else {
            format!("HTTP {code} {reason}")
        };
        let ok = match self.expect {
            Some(want) => code == want,
            None => (200..300).contains(&code),
        };
        match (ok, self.expect) {
            (true, _) => Outcome::Pass(text),
            (false, Some(want)) => Outcome::Fail(format!("{text}, expected {want}")),
            (false, None) => Outcome::Fail(text),
        }
    }

    fn finish(&mut self, reusable: bool) -> Option<Finish> {
        let outcome = self.verdict.take()?;
        Some(Finish { outcome, reusable })
    }

    fn fail(why: String) -> Option<Finish> {
        Some(Finish {
            outcome: Outcome::Fail(why),
            reusable: false,
        })
    }

    /// Work through the buffered response; `Some` once it is decided and,
    /// for a kept connection, read to its end.
    fn step(&mut self) -> Option<Finish> {
        loop {
            match &mut self.stage {
                Stage::Head => {
                    let Some(eol) = self.buf.iter().position(|&b| b == b'\n') else {
                        if self.buf.len() > MAX_HEAD {
                            return Self::fail("malformed response: head too large".into());
                        }
                        return None;
                    };
                    let (code, reason) = match status_line(&self.buf[..eol]) {
                        Ok(s) => s,
                        Err(why) => return Self::fail(why),
                    };
                    let interim = (100..200).contains(&code) && code != 101;
                    if !interim && self.verdict.is_none() {
                        self.verdict = Some(self.judge(code, &reason));
                    }
                    let Some(end) = head_end(&self.buf) else {
                        if self.buf.len() > MAX_HEAD {
                            return match self.verdict {
                                Some(_) => self.finish(false),
                                None => Self::fail("malformed response: head too large".into()),
                            };
                        }
                        return None;
                    };
                    if interim {
                        self.buf.drain(..end);
                        continue;
                    }
                    let next = framing(code, &self.buf[..end]);
                    self.buf.drain(..end);
                    match next {
                        Some(stage) => self.stage = stage,
                        None => return self.finish(false),
                    }
                }
                Stage::Length(left) => {
                    let take = (*left).min(self.buf.len());
                    self.buf.drain(..take);
                    *left -= take;
                    if *left > 0 {
                        return None;
                    }
                    self.stage = Stage::Done;
                }
                Stage::Chunked(dec) => {
                    let mut scratch = Vec::new();
                    let Ok(p) = dec.decode(&self.buf, &mut scratch, MAX_BODY) else {
                        return self.finish(false);
                    };
                    self.buf.drain(..p.consumed);
                    self.body_seen += scratch.len();
                    if self.body_seen > MAX_BODY {
                        return self.finish(false);
                    }
                    if !p.done {
                        return None;
                    }
                    self.stage = Stage::Done;
                }
                Stage::Done => {
                    // Bytes beyond the response: the server is out of step.
                    let clean_end = self.buf.is_empty();
                    return self.finish(clean_end);
                }
            }
        }
    }

    fn take(&mut self, data: &[u8]) -> Option<Finish> {
        self.received = true;
        self.buf.extend_from_slice(data);
        self.step()
    }

    /// The peer closed the connection.
    fn closed(&mut self) -> Option<Finish> {
        if self.verdict.is_some() {
            return self.finish(false);
        }
        Self::fail(if self.buf.is_empty() {
            "connection closed without a response".into()
        } else {
            "connection closed in the middle of the status line".into()
        })
    }

    /// Move as many bytes as the stream allows. `Some` when the probe is over.
    pub fn drive<S: Read + Write>(&mut self, io: &mut S) -> Option<Finish> {
        match self.tls.take() {
            Some(mut conn) => {
                let out = self.tls_steps(&mut conn, io);
                self.tls = Some(conn);
                out
            }
            None => self.drive_plain(io),
        }
    }

    fn drive_plain<S: Read + Write>(&mut self, io: &mut S) -> Option<Finish> {
        let unsent = self.sent < self.request.len();
        while self.sent < self.request.len() {
            match io.write(&self.request[self.sent..]) {
                Ok(0) => return Self::fail("connection closed while sending".into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Self::fail(format!("send: {}", short_error(&e))),
            }
        }
        if unsent && self.sent == self.request.len() {
            // The answer cannot be there yet; its arrival wakes us (the
            // poll is edge-triggered and registered before the write).
            return None;
        }
        let mut buf = [0u8; 2048];
        loop {
            match io.read(&mut buf) {
                Ok(0) => return self.closed(),
                Ok(n) => {
                    if let Some(f) = self.take(&buf[..n]) {
                        return Some(f);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Self::fail(format!("receive: {}", short_error(&e))),
            }
        }
    }

    fn tls_steps<S: Read + Write>(
        &mut self,
        conn: &mut ClientConnection,
        io: &mut S,
    ) -> Option<Finish> {
        if self.sent == 0 {
            // rustls holds plaintext until the handshake is done.
            if let Err(e) = conn.writer().write_all(&self.request) {
                return Self::fail(format!("tls: {}", short_error(&e)));
            }
            self.sent = self.request.len();
        }
        loop {
            while conn.wants_write() {
                match conn.write_tls(io) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Self::fail(format!("send: {}", short_error(&e))),
                }
            }
            let eof = match conn.read_tls(io) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Self::fail(format!("receive: {}", short_error(&e))),
            };
            if let Err(e) = conn.process_new_packets() {
                // Tell the server why (a TLS alert) before we hang up.
                let _ = conn.write_tls(io);
                return Self::fail(format!("tls: {e}"));
            }
            let mut buf = [0u8; 2048];
            loop {
                match conn.reader().read(&mut buf) {
                    Ok(0) => return self.closed(),
                    Ok(n) => {
                        if let Some(f) = self.take(&buf[..n]) {
                            return Some(f);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => return self.closed(),
                }
            }
            if eof {
                return self.closed();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream that hands out scripted reads and records writes; an empty
    /// script entry is WouldBlock.
    struct Script {
        reads: Vec<Vec<u8>>,
        written: Vec<u8>,
        write_room: usize,
    }

    impl Read for Script {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.reads.is_empty() {
                return Ok(0);
            }
            let mut next = self.reads.remove(0);
            if next.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = next.len().min(buf.len());
            buf[..n].copy_from_slice(&next[..n]);
            if n < next.len() {
                self.reads.insert(0, next.split_off(n));
            }
            Ok(n)
        }
    }

    impl Write for Script {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.write_room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.write_room);
            self.write_room -= n;
            self.written.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn target(status: Option<u16>) -> HttpTarget {
        let mut t = HttpTarget::parse("http://127.0.0.1:9/h").unwrap();
        t.status = status;
        t
    }

    fn script(reads: &[&[u8]], room: usize) -> Script {
        Script {
            reads: reads.iter().map(|r| r.to_vec()).collect(),
            written: Vec::new(),
            write_room: room,
        }
    }

    /// Drive as the loop would: again after each readiness, until done.
    fn drive_all(x: &mut Exchange, s: &mut Script) -> Option<Finish> {
        for _ in 0..20 {
            if let Some(f) = x.drive(s) {
                return Some(f);
            }
        }
        None
    }

    fn pass(text: &str, reusable: bool) -> Option<Finish> {
        Some(Finish {
            outcome: Outcome::Pass(text.into()),
            reusable,
        })
    }

    fn fail(text: &str) -> Option<Finish> {
        Some(Finish {
            outcome: Outcome::Fail(text.into()),
            reusable: false,
        })
    }

    #[test]
    fn passes_on_2xx_in_pieces_and_keeps_the_connection() {
        let mut x = Exchange::http(&target(None), None);
        let mut s = script(
            &[
                b"",
                b"HTTP/1.1 2",
                b"",
                b"04 No Content\r\nServer: x\r\n",
                b"",
                b"\r\n",
            ],
            10,
        );
        assert_eq!(x.drive(&mut s), None, "request only partly sent");
        s.write_room = 1 << 20;
        let unread = s.reads.len();
        assert_eq!(x.drive(&mut s), None, "request sent: wait to be woken");
        assert_eq!(s.reads.len(), unread, "nothing read right after sending");
        assert_eq!(x.drive(&mut s), None);
        assert_eq!(x.drive(&mut s), None, "the head is not complete yet");
        assert_eq!(
            x.verdict(),
            Some(&Outcome::Pass("HTTP 204 No Content".into()))
        );
        assert_eq!(x.drive(&mut s), pass("HTTP 204 No Content", true));
        assert!(s.written.starts_with(b"GET /h HTTP/1.1\r\n"));
        assert!(s.written.ends_with(b"\r\n\r\n"));
    }

    #[test]
    fn the_body_is_read_to_its_end_for_reuse() {
        let run = |resp: &[&[u8]]| {
            let mut x = Exchange::http(&target(None), None);
            drive_all(&mut x, &mut script(resp, 1 << 20))
        };
        let ok = |body: &str| {
            run(&[
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                body.as_bytes(),
            ])
        };
        assert_eq!(ok("hello"), pass("HTTP 200 OK", true));
        assert_eq!(
            ok("hello!"),
            pass("HTTP 200 OK", false),
            "extra bytes: out of step"
        );
        assert_eq!(ok("hel"), pass("HTTP 200 OK", false), "closed early");
        let chunked: &[&[u8]] = &[
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc",
            b"\r\n0\r\n\r\n",
        ];
        assert_eq!(run(chunked), pass("HTTP 200 OK", true));
        let close: &[&[u8]] =
            &[b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n"];
        assert_eq!(run(close), pass("HTTP 200 OK", false));
        let old: &[&[u8]] = &[b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"];
        assert_eq!(run(old), pass("HTTP 200 OK", false));
        let unframed: &[&[u8]] = &[b"HTTP/1.1 200 OK\r\n\r\nbody until the end"];
        assert_eq!(run(unframed), pass("HTTP 200 OK", false));
        let huge: &[&[u8]] = &[b"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\n"];
        assert_eq!(run(huge), pass("HTTP 200 OK", false));
    }

    #[test]
    fn fails_with_the_reason() {
        let run = |status: Option<u16>, resp: &[u8]| {
            let mut x = Exchange::http(&target(status), None);
            drive_all(&mut x, &mut script(&[resp], 1 << 20))
        };
        assert_eq!(
            run(
                None,
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"
            ),
            Some(Finish {
                outcome: Outcome::Fail("HTTP 500 Internal Server Error".into()),
                reusable: true
            })
        );
        assert_eq!(
            run(Some(204), b"HTTP/1.0 200 OK\r\n"),
            fail("HTTP 200 OK, expected 204")
        );
        assert_eq!(run(Some(503), b"HTTP/1.1 503\r\n"), pass("HTTP 503", false));
        let mut x = Exchange::http(&target(None), None);
        assert_eq!(
            drive_all(&mut x, &mut script(&[], 1 << 20)),
            fail("connection closed without a response")
        );
        assert!(x.stale());
        assert_eq!(
            run(None, b"SSH-2.0-OpenSSH\r\n"),
            fail("malformed response: \"SSH-2.0-OpenSSH\"")
        );
        assert_eq!(
            run(None, b"HTTP/1.1 2x0 OK\r\n"),
            fail("malformed status line: \"HTTP/1.1 2x0 OK\"")
        );
        assert_eq!(
            run(None, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"),
            pass("HTTP 200 OK", false)
        );
    }

    #[test]
    fn endless_head_is_bounded() {
        let mut x = Exchange::http(&target(None), None);
        let junk = vec![b'x'; 4096];
        let reads: Vec<&[u8]> = std::iter::repeat(junk.as_slice()).take(10).collect();
        assert_eq!(
            drive_all(&mut x, &mut script(&reads, 1 << 20)),
            fail("malformed response: head too large")
        );
    }

    #[test]
    fn io_errors_read_short() {
        let e = io::Error::from_raw_os_error(111);
        assert_eq!(short_error(&e), "connection refused");
    }
}
