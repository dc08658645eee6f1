//! The HTTP/1.1 connection state machine fed arbitrary bytes split at arbitrary points.
//!
//! Input layout: `flags`, then `2 * (flags & 0x0f)` bytes of little-endian u16 split
//! offsets, then the wire bytes.
//!   flags bit 4: small limits (head 256, body 64) so 413/431 paths are reachable
//!   flags bit 5: the peer half-closes (EOF) after the last chunk
//!   flags bit 6: the peer reads its responses a few bytes at a time
//!   flags bit 7: `close_after_response` before answering the second request
//!
//! Checked: no panic, no endless loop, limits hold for every request handed out, error
//! responses are 400/413/431, the output is exactly the sequence of responses we queued
//! (plus interim 100 Continue), nothing follows a `Connection: close` response, a
//! connection whose peer closed ends once everything is answered, and `activity()`
//! counts exactly the bytes moved in both directions.
#![no_main]

use std::collections::VecDeque;
use std::io::{self, Read, Write};

use containerpilot::http::{Conn, Limits, ReadOutcome, Request, Response};
use libfuzzer_sys::fuzz_target;

struct Peer {
    chunks: VecDeque<Vec<u8>>,
    eof: bool,
    sent: u64,
}

impl Read for Peer {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.chunks.pop_front() {
            Some(mut c) => {
                let n = c.len().min(buf.len());
                buf[..n].copy_from_slice(&c[..n]);
                if n < c.len() {
                    self.chunks.push_front(c.split_off(n));
                }
                self.sent += n as u64;
                Ok(n)
            }
            None if self.eof => Ok(0),
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

/// The client side of the socket: collects what the server writes, optionally
/// in small pieces with WouldBlock in between.
struct Sink {
    got: Vec<u8>,
    slow: bool,
    calls: usize,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.calls += 1;
        if self.slow && self.calls.is_multiple_of(3) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = if self.slow {
            buf.len().min(7)
        } else {
            buf.len()
        };
        self.got.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What a queued response must look like on the wire.
struct Expected {
    status: u16,
    body: Vec<u8>,
    head_only: bool,
}

fn split(data: &[u8]) -> (u8, VecDeque<Vec<u8>>) {
    let Some((&flags, rest)) = data.split_first() else {
        return (0, VecDeque::new());
    };
    let n = usize::from(flags & 0x0f);
    let (cuts_raw, wire) = rest.split_at((2 * n).min(rest.len()));
    let mut cuts: Vec<usize> = cuts_raw
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (wire.len() + 1))
        .collect();
    cuts.push(0);
    cuts.push(wire.len());
    cuts.sort_unstable();
    cuts.dedup();
    let chunks = cuts
        .windows(2)
        .map(|w| wire[w[0]..w[1]].to_vec())
        .filter(|c| !c.is_empty())
        .collect();
    (flags, chunks)
}

fn answer(req: &Request, n: usize) -> Response {
    // Route like the control socket would, so responses vary in status and body.
    match containerpilot::control::parse(req, &|_| true) {
        Ok(cmd) => {
            let body = format!("{n} {cmd:?}\n");
            Response::text(200, &body)
        }
        Err(resp) => resp,
    }
}

fn check_request(req: &Request, limits: Limits) {
    assert!(
        req.body.len() <= limits.max_body,
        "body of {} bytes handed out with max_body {}",
        req.body.len(),
        limits.max_body
    );
    // Lossy UTF-8 can grow header values, so only count parts copied verbatim.
    let head: usize = req.method.len()
        + req.path.len()
        + req.query.len()
        + req.headers.iter().map(|(n, _)| n.len()).sum::<usize>();
    assert!(
        head <= limits.max_head,
        "head of at least {head} bytes handed out with max_head {}",
        limits.max_head
    );
    assert!(req.headers.len() <= 100, "{} headers", req.headers.len());
}

/// Parses the server's output as a response stream and compares it to what was queued.
fn check_output(out: &[u8], expected: &[Expected]) {
    let mut rest = out;
    let mut idx = 0;
    while !rest.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        let n = match resp.parse(rest) {
            Ok(httparse::Status::Complete(n)) => n,
            other => panic!(
                "unparsable output {other:?}: {:?}",
                String::from_utf8_lossy(rest)
            ),
        };
        let status = resp.code.unwrap_or(0);
        let length = resp
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .and_then(|v| v.parse::<usize>().ok());
        let closes = resp.headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("connection") && h.value.eq_ignore_ascii_case(b"close")
        });
        rest = &rest[n..];
        if status == 100 {
            continue;
        }
        let Some(exp) = expected.get(idx) else {
            panic!("more responses on the wire than queued ({idx} queued)");
        };
        idx += 1;
        assert_eq!(status, exp.status, "response {idx} status");
        assert_eq!(
            length,
            Some(exp.body.len()),
            "response {idx} Content-Length"
        );
        if !exp.head_only {
            assert!(
                rest.len() >= exp.body.len(),
                "response {idx} body truncated"
            );
            assert_eq!(
                &rest[..exp.body.len()],
                &exp.body[..],
                "response {idx} body"
            );
            rest = &rest[exp.body.len()..];
        }
        if closes {
            assert!(rest.is_empty(), "bytes after a Connection: close response");
        }
    }
    assert_eq!(
        idx,
        expected.len(),
        "queued responses missing from the wire"
    );
}

fuzz_target!(|data: &[u8]| {
    let (flags, chunks) = split(data);
    let limits = if flags & 0x10 != 0 {
        Limits {
            max_head: 256,
            max_body: 64,
        }
    } else {
        Limits::default()
    };
    let total_chunks = chunks.len();
    let mut peer = Peer {
        chunks,
        eof: flags & 0x20 != 0,
        sent: 0,
    };
    let mut sink = Sink {
        got: Vec::new(),
        slow: flags & 0x40 != 0,
        calls: 0,
    };
    let mut conn = Conn::new(limits);
    let mut expected: Vec<Expected> = Vec::new();
    let mut rounds = 0usize;
    // Every round either consumes a chunk, flushes, or sees EOF; anything beyond this
    // means the connection stopped making progress.
    let max_rounds = total_chunks + data.len() + 64;
    loop {
        rounds += 1;
        assert!(rounds <= max_rounds, "connection made no progress");
        let outcome = conn.read_from(&mut peer);
        let mut handed = 0usize;
        while let Some(r) = conn.next_request() {
            handed += 1;
            assert!(handed <= data.len() + 1, "next_request never runs dry");
            let (resp, head_only) = match r {
                Ok(req) => {
                    check_request(&req, limits);
                    if flags & 0x80 != 0 && expected.len() == 1 {
                        conn.close_after_response();
                    }
                    (answer(&req, expected.len()), req.method == "HEAD")
                }
                Err(resp) => {
                    assert!(
                        matches!(resp.status, 400 | 413 | 431),
                        "protocol error answered with {}",
                        resp.status
                    );
                    (resp, false)
                }
            };
            expected.push(Expected {
                status: resp.status,
                body: resp.body.clone(),
                head_only,
            });
            conn.respond(resp);
        }
        let mut flushes = 0usize;
        while conn.wants_write() {
            flushes += 1;
            assert!(flushes < 1 << 20, "write_to never drains");
            match conn.write_to(&mut sink) {
                Ok(_) => {}
                Err(e) => panic!("write to sink failed: {e}"),
            }
        }
        assert_eq!(
            conn.activity(),
            peer.sent + sink.got.len() as u64,
            "activity is not the bytes moved in both directions"
        );
        if outcome == ReadOutcome::Closed || conn.finished() {
            break;
        }
        // Peer has nothing more to say and keeps the socket open: the loop would wait.
        if outcome == ReadOutcome::Open && peer.chunks.is_empty() && !peer.eof {
            break;
        }
    }
    if peer.eof && peer.chunks.is_empty() {
        assert!(
            conn.finished() || !conn.wants_write(),
            "peer closed, all answered, yet the connection lingers with output"
        );
    }
    check_output(&sink.got, &expected);
});
