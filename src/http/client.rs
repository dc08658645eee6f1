//! Blocking one-shot client for the CLI subcommands (`-putenv`, `-reload`, ...) and tests.

use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::chunked::{ChunkError, ChunkedDecoder};

/// Largest response head we will buffer.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Largest response body we will buffer (status JSON and metrics are far smaller).
const MAX_RESPONSE_BODY: usize = 64 * 1024 * 1024;
const MAX_RESPONSE_HEADERS: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl ClientResponse {
    /// First header with this name, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What went wrong, in one line (`connect to /path: ...`, `malformed response: ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError(pub String);

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ClientError {}

/// Connects to a unix socket and performs one request; `timeout` bounds every
/// individual read and write (not the whole exchange).
pub fn request_unix(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<(&str, &[u8])>,
    timeout: Duration,
) -> Result<ClientResponse, ClientError> {
    let mut stream = UnixStream::connect(socket)
        .map_err(|e| ClientError(format!("connect to {}: {e}", socket.display())))?;
    // A zero Duration is rejected by the socket API; treat it as "no timeout".
    let t = (!timeout.is_zero()).then_some(timeout);
    stream
        .set_read_timeout(t)
        .and_then(|_| stream.set_write_timeout(t))
        .map_err(|e| ClientError(format!("set timeout on {}: {e}", socket.display())))?;
    request(&mut stream, method, path, body)
}

/// One request over a connected stream (`Connection: close`, `Host: localhost`), then
/// reads the whole response, delimited by Content-Length, chunked encoding, or EOF.
/// Interim 1xx responses are skipped.
pub fn request<S: Read + Write>(
    stream: &mut S,
    method: &str,
    path: &str,
    body: Option<(&str, &[u8])>,
) -> Result<ClientResponse, ClientError> {
    let wire = encode_request(method, path, body);
    stream
        .write_all(&wire)
        .and_then(|_| stream.flush())
        .map_err(|e| io_error("send request", e))?;
    read_response(stream, method == "HEAD")
}

fn encode_request(method: &str, path: &str, body: Option<(&str, &[u8])>) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    match body {
        Some((content_type, bytes)) => {
            out.push_str(&format!(
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
                bytes.len()
            ));
        }
        // Some servers insist on a length for methods that normally carry a body.
        None if matches!(method, "POST" | "PUT" | "PATCH") => out.push_str("Content-Length: 0\r\n"),
        None => {}
    }
    out.push_str("\r\n");
    let mut wire = out.into_bytes();
    if let Some((_, bytes)) = body {
        wire.extend_from_slice(bytes);
    }
    wire
}

fn io_error(what: &str, e: io::Error) -> ClientError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            ClientError(format!("{what}: timeout"))
        }
        _ => ClientError(format!("{what}: {e}")),
    }
}

/// Reads more bytes into `buf`; `Ok(false)` on EOF.
fn fill<R: Read>(r: &mut R, buf: &mut Vec<u8>) -> Result<bool, ClientError> {
    let mut chunk = [0u8; 8192];
    loop {
        match r.read(&mut chunk) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(true);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_error("read response", e)),
        }
    }
}

enum BodyFraming {
    None,
    Length(usize),
    Chunked,
    UntilEof,
}

fn read_response<R: Read>(r: &mut R, head_request: bool) -> Result<ClientResponse, ClientError> {
    let mut buf = Vec::new();
    loop {
        let (status, headers, head_len) = loop {
            match parse_head(&buf)? {
                Some(head) => break head,
                None if buf.len() > MAX_RESPONSE_HEAD => {
                    return Err(ClientError("malformed response: head too large".into()))
                }
                None => {
                    if !fill(r, &mut buf)? {
                        return Err(ClientError(if buf.is_empty() {
                            "connection closed without a response".into()
                        } else {
                            "connection closed in the middle of the response head".into()
                        }));
                    }
                }
            }
        };
        buf.drain(..head_len);
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        let framing = response_framing(status, &headers, head_request)?;
        let body = read_body(r, buf, framing)?;
        return Ok(ClientResponse {
            status,
            headers,
            body,
        });
    }
}

type Head = (u16, Vec<(String, String)>, usize);

fn parse_head(buf: &[u8]) -> Result<Option<Head>, ClientError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(n)) => {
            let status = resp
                .code
                .ok_or_else(|| ClientError("malformed response: no status code".into()))?;
            let headers = resp
                .headers
                .iter()
                .map(|h| {
                    let value = String::from_utf8_lossy(h.value).trim().to_string();
                    (h.name.to_string(), value)
                })
                .collect();
            Ok(Some((status, headers, n)))
        }
        Err(e) => Err(ClientError(format!("malformed response: {e}"))),
    }
}

fn response_framing(
    status: u16,
    headers: &[(String, String)],
    head_request: bool,
) -> Result<BodyFraming, ClientError> {
    if head_request || status == 204 || status == 304 {
        return Ok(BodyFraming::None);
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    if let Some(te) = find("transfer-encoding") {
        if te
            .rsplit(',')
            .next()
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
        {
            return Ok(BodyFraming::Chunked);
        }
        return Ok(BodyFraming::UntilEof);
    }
    match find("content-length") {
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n <= MAX_RESPONSE_BODY => Ok(BodyFraming::Length(n)),
            Ok(_) => Err(ClientError(format!("response body too large: {v} bytes"))),
            Err(_) => Err(ClientError(format!(
                "malformed response: bad Content-Length {v:?}"
            ))),
        },
        None => Ok(BodyFraming::UntilEof),
    }
}

fn read_body<R: Read>(
    r: &mut R,
    mut buf: Vec<u8>,
    framing: BodyFraming,
) -> Result<Vec<u8>, ClientError> {
    let truncated =
        || ClientError("connection closed before the response body was complete".into());
    match framing {
        BodyFraming::None => Ok(Vec::new()),
        BodyFraming::Length(n) => {
            while buf.len() < n {
                if !fill(r, &mut buf)? {
                    return Err(truncated());
                }
            }
            buf.truncate(n);
            Ok(buf)
        }
        BodyFraming::UntilEof => {
            while fill(r, &mut buf)? {
                if buf.len() > MAX_RESPONSE_BODY {
                    return Err(ClientError("response body too large".into()));
                }
            }
            Ok(buf)
        }
        BodyFraming::Chunked => {
            let mut dec = ChunkedDecoder::new();
            let mut body = Vec::new();
            loop {
                let progress =
                    dec.decode(&buf, &mut body, MAX_RESPONSE_BODY)
                        .map_err(|e| match e {
                            ChunkError::TooLarge => ClientError("response body too large".into()),
                            ChunkError::Malformed(_) => {
                                ClientError(format!("malformed response: {e}"))
                            }
                        })?;
                buf.drain(..progress.consumed);
                if progress.done {
                    return Ok(body);
                }
                if !fill(r, &mut buf)? {
                    return Err(truncated());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::server::{Conn, Limits, ReadOutcome, Response};
    use super::*;
    use std::os::unix::net::UnixListener;
    use std::thread;

    /// A fake stream: records what is written, replays a canned response in small pieces.
    struct Canned {
        sent: Vec<u8>,
        reply: Vec<u8>,
        pos: usize,
        step: usize,
    }

    impl Canned {
        fn new(reply: &[u8], step: usize) -> Canned {
            Canned {
                sent: Vec::new(),
                reply: reply.to_vec(),
                pos: 0,
                step,
            }
        }
    }

    impl Read for Canned {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.reply.len() - self.pos);
            buf[..n].copy_from_slice(&self.reply[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    impl Write for Canned {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.sent.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn request_encoding() {
        let mut s = Canned::new(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 100);
        request(
            &mut s,
            "POST",
            "/v3/env",
            Some(("application/json", b"{\"A\":\"1\"}")),
        )
        .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&s.sent),
            "POST /v3/env HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\n{\"A\":\"1\"}"
        );
        let mut s = Canned::new(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 100);
        request(&mut s, "POST", "/v3/reload", None).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&s.sent),
            "POST /v3/reload HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        );
        let mut s = Canned::new(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 100);
        request(&mut s, "GET", "/v3/ping", None).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&s.sent),
            "GET /v3/ping HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn response_framings() {
        let cases: [(&[u8], u16, &[u8]); 5] = [
            (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\nEXTRA", 200, b"ok\n"),
            (
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 422 Unprocessable Entity\r\nContent-Length: 2\r\n\r\nno",
                422,
                b"no",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;x\r\nab\r\n1\r\nc\r\n0\r\nT: 1\r\n\r\n",
                200,
                b"abc",
            ),
            (b"HTTP/1.0 200 OK\r\n\r\nuntil eof", 200, b"until eof"),
            (b"HTTP/1.1 204 No Content\r\n\r\n", 204, b""),
        ];
        for (reply, status, body) in cases {
            for step in [1, 7, 4096] {
                let mut s = Canned::new(reply, step);
                let resp = request(&mut s, "GET", "/", None).unwrap();
                assert_eq!(
                    (resp.status, resp.body.as_slice()),
                    (status, body),
                    "step {step}"
                );
            }
        }
        let mut s = Canned::new(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\n",
            100,
        );
        let resp = request(&mut s, "HEAD", "/", None).unwrap();
        assert_eq!(resp.body, b"");
        assert_eq!(resp.header("x-a"), Some("b"));
    }

    #[test]
    fn response_errors_are_named() {
        let cases: [(&[u8], &str); 6] = [
            (b"", "connection closed without a response"),
            (
                b"HTTP/1.1 200 OK\r\nConte",
                "connection closed in the middle of the response head",
            ),
            (
                b"SSH-2.0-OpenSSH\r\n\r\n",
                "malformed response: invalid HTTP version",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort",
                "connection closed before the response body was complete",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                "malformed response: bad Content-Length \"x\"",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nq\r\n",
                "malformed response: bad chunked encoding: bad chunk size",
            ),
        ];
        for (reply, msg) in cases {
            let err = request(&mut Canned::new(reply, 3), "GET", "/", None).unwrap_err();
            assert_eq!(err.to_string(), msg);
        }
    }

    #[test]
    fn connect_failure_names_the_socket() {
        let err = request_unix(
            Path::new("/nonexistent/containerpilot.sock"),
            "GET",
            "/v3/ping",
            None,
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(
            err.0
                .starts_with("connect to /nonexistent/containerpilot.sock: "),
            "{err}"
        );
    }

    /// Drives a `Conn` on a non-blocking stream the way the event loop will, polling by sleeping.
    fn serve(mut stream: UnixStream, handler: fn(&super::super::Request) -> Response) -> usize {
        stream.set_nonblocking(true).unwrap();
        let mut conn = Conn::new(Limits::default());
        let mut served = 0;
        for _ in 0..2000 {
            let outcome = conn.read_from(&mut stream);
            while let Some(r) = conn.next_request() {
                let resp = match r {
                    Ok(req) => handler(&req),
                    Err(resp) => resp,
                };
                served += 1;
                conn.respond(resp);
            }
            if conn.wants_write() {
                conn.write_to(&mut stream).unwrap();
            }
            if outcome == ReadOutcome::Closed || conn.finished() {
                return served;
            }
            thread::sleep(Duration::from_millis(1));
        }
        panic!("server loop did not finish");
    }

    fn echo(req: &super::super::Request) -> Response {
        let mut resp = Response::text(
            200,
            &format!("{} {} {}", req.method, req.path, req.body.len()),
        );
        resp.extra_headers
            .push(("X-Query".into(), req.query.clone()));
        resp
    }

    #[test]
    fn round_trip_over_socket_pair() {
        let (client, server) = UnixStream::pair().unwrap();
        let handle = thread::spawn(move || serve(server, echo));
        let mut client = client;
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let body = vec![b'z'; 200_000];
        let resp = request(
            &mut client,
            "POST",
            "/v3/env?a=b",
            Some(("application/json", &body)),
        )
        .unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body, b"POST /v3/env 200000");
        assert_eq!(resp.header("X-Query"), Some("a=b"));
        assert_eq!(resp.header("connection"), Some("close"));
        assert_eq!(handle.join().unwrap(), 1);
    }

    #[test]
    fn round_trip_via_request_unix() {
        let dir = std::env::temp_dir().join(format!("cp-http-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("control.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let handle = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            serve(stream, |_| Response::new(405, "Method Not Allowed\n"))
        });
        let resp = request_unix(&path, "GET", "/v3/reload", None, Duration::from_secs(5)).unwrap();
        assert_eq!(resp.status, 405);
        assert_eq!(resp.body, b"Method Not Allowed\n");
        assert_eq!(handle.join().unwrap(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn timeout_is_reported() {
        let (mut client, _server) = UnixStream::pair().unwrap();
        client
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let err = request(&mut client, "GET", "/v3/ping", None).unwrap_err();
        assert_eq!(err.to_string(), "read response: timeout");
    }

    #[test]
    fn random_responses_never_panic() {
        let mut seed: u64 = 7;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        let pieces: [&[u8]; 8] = [
            b"HTTP/1.1 200 OK\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"Content-Length: 3\r\n",
            b"Transfer-Encoding: chunked\r\n",
            b"\r\n",
            b"3\r\nabc\r\n",
            b"0\r\n\r\n",
            b"\xfe",
        ];
        for _ in 0..3000 {
            let mut reply = Vec::new();
            for _ in 0..next() % 10 {
                if next() % 4 == 0 {
                    reply.push(next() as u8);
                } else {
                    reply.extend_from_slice(pieces[next() % pieces.len()]);
                }
            }
            let step = 1 + next() % 16;
            let _ = request(&mut Canned::new(&reply, step), "GET", "/", None);
        }
    }
}
