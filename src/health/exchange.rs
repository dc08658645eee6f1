//! One probe over a connected, non-blocking byte stream: send the GET (through
//! rustls for https), read until the status line decides. The stream is any
//! `Read + Write`; `WouldBlock` means "call `drive` again when the socket is
//! ready". The body is never read: the status decides, as `curl --fail` does.

use super::HttpTarget;
use rustls::ClientConnection;
use std::io::{self, Read, Write};

/// Bytes of response we look through for the status line (and interim 1xx heads).
const MAX_HEAD: usize = 16 * 1024;

/// How a probe ended; the text is what the log and the `error` event show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass(String),
    Fail(String),
}

pub struct Exchange {
    request: Vec<u8>,
    sent: usize,
    head: Vec<u8>,
    expect: Option<u16>,
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

enum Head {
    Partial,
    Status(u16, String),
    Bad(String),
}

/// The status line at the start of `buf`; interim 1xx heads are consumed.
fn status_line(buf: &mut Vec<u8>) -> Head {
    loop {
        let Some(eol) = buf.iter().position(|&b| b == b'\n') else {
            return Head::Partial;
        };
        let line = buf[..eol].strip_suffix(b"\r").unwrap_or(&buf[..eol]);
        let Some(rest) = line.strip_prefix(b"HTTP/1.") else {
            return Head::Bad(format!("malformed response: {:?}", clean(line)));
        };
        let code = rest
            .get(2..5)
            .filter(|c| rest.get(1) == Some(&b' ') && c.iter().all(u8::is_ascii_digit))
            .and_then(|c| std::str::from_utf8(c).ok()?.parse::<u16>().ok());
        let Some(code) = code else {
            return Head::Bad(format!("malformed status line: {:?}", clean(line)));
        };
        let reason = clean(rest.get(6..).unwrap_or(&[])).trim().to_string();
        if (100..200).contains(&code) && code != 101 {
            // Skip the interim head and look at what follows it.
            match buf.windows(4).position(|w| w == b"\r\n\r\n") {
                Some(end) => {
                    buf.drain(..end + 4);
                    continue;
                }
                None => return Head::Partial,
            }
        }
        return Head::Status(code, reason);
    }
}

impl Exchange {
    /// `tls` is a fresh rustls client for an https target.
    pub fn http(target: &HttpTarget, tls: Option<ClientConnection>) -> Exchange {
        Exchange {
            request: target.request(),
            sent: 0,
            head: Vec::new(),
            expect: target.status,
            tls: tls.map(Box::new),
        }
    }

    fn decide(&mut self) -> Option<Outcome> {
        match status_line(&mut self.head) {
            Head::Partial if self.head.len() > MAX_HEAD => {
                Some(Outcome::Fail("malformed response: head too large".into()))
            }
            Head::Partial => None,
            Head::Bad(why) => Some(Outcome::Fail(why)),
            Head::Status(code, reason) => {
                let text = if reason.is_empty() {
                    format!("HTTP {code}")
                } else {
                    format!("HTTP {code} {reason}")
                };
                let ok = match self.expect {
                    Some(want) => code == want,
                    None => (200..300).contains(&code),
                };
                Some(match (ok, self.expect) {
                    (true, _) => Outcome::Pass(text),
                    (false, Some(want)) => Outcome::Fail(format!("{text}, expected {want}")),
                    (false, None) => Outcome::Fail(text),
                })
            }
        }
    }

    fn closed(&self) -> Outcome {
        Outcome::Fail(if self.head.is_empty() {
            "connection closed without a response".into()
        } else {
            "connection closed in the middle of the status line".into()
        })
    }

    /// Take response bytes; `Some` once the status decides.
    fn take(&mut self, data: &[u8]) -> Option<Outcome> {
        self.head.extend_from_slice(data);
        self.decide()
    }

    /// Move as many bytes as the stream allows. `Some` when the probe is over.
    pub fn drive<S: Read + Write>(&mut self, io: &mut S) -> Option<Outcome> {
        if self.tls.is_some() {
            self.drive_tls(io)
        } else {
            self.drive_plain(io)
        }
    }

    fn drive_plain<S: Read + Write>(&mut self, io: &mut S) -> Option<Outcome> {
        while self.sent < self.request.len() {
            match io.write(&self.request[self.sent..]) {
                Ok(0) => return Some(Outcome::Fail("connection closed while sending".into())),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Some(Outcome::Fail(format!("send: {}", short_error(&e)))),
            }
        }
        let mut buf = [0u8; 2048];
        loop {
            match io.read(&mut buf) {
                Ok(0) => return Some(self.closed()),
                Ok(n) => {
                    if let Some(o) = self.take(&buf[..n]) {
                        return Some(o);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Some(Outcome::Fail(format!("receive: {}", short_error(&e)))),
            }
        }
    }

    fn drive_tls<S: Read + Write>(&mut self, io: &mut S) -> Option<Outcome> {
        let mut conn = self.tls.take()?;
        let out = self.tls_steps(&mut conn, io);
        self.tls = Some(conn);
        out
    }

    fn tls_steps<S: Read + Write>(
        &mut self,
        conn: &mut ClientConnection,
        io: &mut S,
    ) -> Option<Outcome> {
        if self.sent == 0 {
            // rustls holds plaintext until the handshake is done.
            if let Err(e) = conn.writer().write_all(&self.request) {
                return Some(Outcome::Fail(format!("tls: {}", short_error(&e))));
            }
            self.sent = self.request.len();
        }
        loop {
            while conn.wants_write() {
                match conn.write_tls(io) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Some(Outcome::Fail(format!("send: {}", short_error(&e)))),
                }
            }
            let eof = match conn.read_tls(io) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Some(Outcome::Fail(format!("receive: {}", short_error(&e)))),
            };
            if let Err(e) = conn.process_new_packets() {
                // Tell the server why (a TLS alert) before we hang up.
                let _ = conn.write_tls(io);
                return Some(Outcome::Fail(format!("tls: {e}")));
            }
            let mut buf = [0u8; 2048];
            loop {
                match conn.reader().read(&mut buf) {
                    Ok(0) => return Some(self.closed()),
                    Ok(n) => {
                        if let Some(o) = self.take(&buf[..n]) {
                            return Some(o);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => return Some(self.closed()),
                }
            }
            if eof {
                return Some(self.closed());
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

    #[test]
    fn passes_on_2xx_in_pieces() {
        let mut x = Exchange::http(&target(None), None);
        let mut s = script(&[b"", b"HTTP/1.1 2", b"", b"04 No Content\r\n"], 10);
        assert_eq!(x.drive(&mut s), None, "request only partly sent");
        s.write_room = 1 << 20;
        assert_eq!(x.drive(&mut s), None);
        assert_eq!(
            x.drive(&mut s),
            Some(Outcome::Pass("HTTP 204 No Content".into()))
        );
        assert!(s.written.starts_with(b"GET /h HTTP/1.1\r\n"));
        assert!(s.written.ends_with(b"\r\n\r\n"));
    }

    #[test]
    fn fails_with_the_reason() {
        let run = |status: Option<u16>, resp: &[u8]| {
            let mut x = Exchange::http(&target(status), None);
            x.drive(&mut script(&[resp], 1 << 20))
        };
        assert_eq!(
            run(None, b"HTTP/1.1 500 Internal Server Error\r\n\r\n"),
            Some(Outcome::Fail("HTTP 500 Internal Server Error".into()))
        );
        assert_eq!(
            run(Some(204), b"HTTP/1.0 200 OK\r\n"),
            Some(Outcome::Fail("HTTP 200 OK, expected 204".into()))
        );
        assert_eq!(
            run(Some(503), b"HTTP/1.1 503\r\n"),
            Some(Outcome::Pass("HTTP 503".into()))
        );
        let mut x = Exchange::http(&target(None), None);
        assert_eq!(
            x.drive(&mut script(&[], 1 << 20)),
            Some(Outcome::Fail("connection closed without a response".into()))
        );
        assert_eq!(
            run(None, b"SSH-2.0-OpenSSH\r\n"),
            Some(Outcome::Fail(
                "malformed response: \"SSH-2.0-OpenSSH\"".into()
            ))
        );
        assert_eq!(
            run(None, b"HTTP/1.1 2x0 OK\r\n"),
            Some(Outcome::Fail(
                "malformed status line: \"HTTP/1.1 2x0 OK\"".into()
            ))
        );
        assert_eq!(
            run(None, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"),
            Some(Outcome::Pass("HTTP 200 OK".into()))
        );
    }

    #[test]
    fn endless_head_is_bounded() {
        let mut x = Exchange::http(&target(None), None);
        let junk = vec![b'x'; 4096];
        let reads: Vec<&[u8]> = std::iter::repeat(junk.as_slice()).take(10).collect();
        assert_eq!(
            x.drive(&mut script(&reads, 1 << 20)),
            Some(Outcome::Fail("malformed response: head too large".into()))
        );
    }

    #[test]
    fn io_errors_read_short() {
        let e = io::Error::from_raw_os_error(111);
        assert_eq!(short_error(&e), "connection refused");
    }
}
