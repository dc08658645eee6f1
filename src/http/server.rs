//! Server side: one `Conn` per accepted connection, fed by the event loop.
//!
//! `Conn` does no I/O of its own beyond the non-blocking `read_from`/`write_to` helpers,
//! so the loop stays in charge of readiness, timeouts and routing. A typical wake-up:
//!
//! ```text
//! let outcome = conn.read_from(&mut stream);           // on readable
//! while let Some(r) = conn.next_request() {             // pipelined requests, one by one
//!     let resp = match r { Ok(req) => route(req), Err(resp) => resp };
//!     conn.respond(resp);
//! }
//! if conn.wants_write() { conn.write_to(&mut stream)?; } // on writable, too
//! if outcome == ReadOutcome::Closed || conn.finished() { drop(conn) }
//! // ReadOutcome::Paused: call read_from again soon without waiting for readiness.
//! ```
//!
//! Memory a peer can hold is bounded three ways: the router's `Gate` says from the
//! request line alone whether a body is wanted at all (a request that will be refused
//! is answered before its body is read), kept bodies draw on a `BodyBudget` shared by
//! every connection of a listener, and buffers shrink back once drained.

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::rc::Rc;

use super::chunked::{ChunkError, ChunkedDecoder};
use super::reason;

/// Per-call read budget so one busy client cannot starve the loop.
const READ_BUDGET: usize = 64 * 1024;
/// Read chunk size for one `read` call.
const READ_CHUNK: usize = 16 * 1024;
/// Stop parsing further pipelined requests while this much output is unsent,
/// so a client that never reads cannot make us buffer without bound.
const OUT_HIGH_WATER: usize = 256 * 1024;
/// httparse needs a fixed header array; more headers than this → 431.
const MAX_HEADERS: usize = 100;
/// A drained buffer with more capacity than this is freed rather than kept at
/// its peak for the next request.
const KEEP_CAPACITY: usize = 4096;

/// Size limits for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Request line plus headers, including the blank line.
    pub max_head: usize,
    /// Decoded body, whatever the gate allows.
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 8192,
            max_body: 1 << 20,
        }
    }
}

/// What a route does with a request body, decided from the method and path alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyRule {
    /// Collect the body (up to this many bytes, 413 beyond) from the shared budget.
    Keep(usize),
    /// Read the body and throw it away (up to this many bytes, 413 beyond).
    Discard(usize),
    /// Takes no body: the request is handed out without it (`body_refused`) for the
    /// router to answer, and the connection closes without reading the body.
    Refuse,
}

/// The router's say on bodies, asked once a head announces one.
pub type Gate = fn(method: &str, path: &str) -> BodyRule;

fn keep_any(_: &str, _: &str) -> BodyRule {
    BodyRule::Keep(usize::MAX)
}

/// Bytes all pending request bodies of a listener may hold together. A body that
/// does not fit is answered 503 and its connection closed; its bytes are never read.
#[derive(Debug, Clone)]
pub struct BodyBudget(Rc<Cell<usize>>);

impl BodyBudget {
    pub fn new(bytes: usize) -> BodyBudget {
        BodyBudget(Rc::new(Cell::new(bytes)))
    }

    /// Bytes not held by any pending body.
    pub fn available(&self) -> usize {
        self.0.get()
    }

    fn take(&self, n: usize) -> bool {
        let left = self.0.get();
        if n > left {
            return false;
        }
        self.0.set(left - n);
        true
    }

    fn give(&self, n: usize) {
        self.0.set(self.0.get().saturating_add(n));
    }
}

/// One complete request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The request target before any `?`, not percent-decoded.
    pub path: String,
    /// Everything after the first `?` (empty when there is none).
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The head announced a body the gate refused; `body` is empty and the
    /// connection closes after the response.
    pub body_refused: bool,
    /// Whether the protocol lets the connection stay open after the response.
    pub keep_alive: bool,
}

impl Request {
    /// First header with this name, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A response to queue with `Conn::respond`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: Option<&'static str>,
    pub body: Vec<u8>,
    pub extra_headers: Vec<(String, String)>,
}

impl Response {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Response {
            status,
            content_type: None,
            body: body.into(),
            extra_headers: Vec::new(),
        }
    }

    pub fn text(status: u16, body: &str) -> Self {
        Response {
            content_type: Some("text/plain; charset=utf-8"),
            ..Response::new(status, body)
        }
    }

    pub fn json(status: u16, body: String) -> Self {
        Response {
            content_type: Some("application/json"),
            ..Response::new(status, body)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Drained the socket (hit WouldBlock); wait for the next readiness event.
    Open,
    /// Stopped before the socket was drained (per-call budget used, or the input buffer
    /// is full until buffered requests are handled). Edge-triggered callers get no new
    /// event for the data still queued: handle requests, then call `read_from` again
    /// (or re-arm the registration).
    Paused,
    /// The peer sent EOF or the socket failed, and nothing remains to be answered:
    /// drop the connection.
    Closed,
}

/// What `respond` needs to know about the request it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pending {
    keep_alive: bool,
    /// HEAD: send headers only.
    head_only: bool,
    /// HTTP/1.0 keep-alive must be confirmed explicitly.
    echo_keep_alive: bool,
}

#[derive(Debug)]
enum BodyKind {
    /// Bytes still to come.
    Length(usize),
    Chunked(ChunkedDecoder),
}

/// A body being received.
#[derive(Debug)]
struct Incoming {
    req: Request,
    kind: BodyKind,
    pending: Pending,
    /// Store the bytes (`BodyRule::Keep`) or count and drop them.
    keep: bool,
    max: usize,
    /// Body bytes seen so far (stored or dropped).
    seen: usize,
}

/// What feeding input to a body gave.
enum BodyStep {
    More,
    Done,
    Fail(u16, String),
}

#[derive(Debug)]
enum State {
    /// Waiting for (the rest of) a request head.
    Head,
    /// Head parsed; collecting the body.
    Body(Box<Incoming>),
    /// The body cannot be received (bad framing, too large, no budget): the
    /// error response is handed out next.
    Failed(u16, String),
    /// A request (or protocol error) was handed out; waiting for `respond`.
    Awaiting(Pending),
    /// The last response closes the connection; input is discarded.
    Closed,
}

/// One HTTP/1.1 server connection (sans I/O, apart from the generic read/write helpers).
#[derive(Debug)]
pub struct Conn {
    limits: Limits,
    gate: Gate,
    budget: BodyBudget,
    /// Bytes of `budget` this connection holds for the body in progress.
    reserved: usize,
    activity: u64,
    input: Vec<u8>,
    output: Vec<u8>,
    out_pos: usize,
    state: State,
    /// A request parsed while handling EOF, handed out by the next `next_request`.
    ready: Option<Result<Request, Response>>,
    peer_closed: bool,
    /// The last parse attempt ran out of input (so nothing more can come after EOF).
    needs_input: bool,
    force_close: bool,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.release();
    }
}

impl Conn {
    /// A connection that keeps any body up to `limits.max_body`, with no shared budget.
    pub fn new(limits: Limits) -> Conn {
        Conn::with_rules(limits, keep_any, BodyBudget::new(usize::MAX))
    }

    /// A connection whose bodies are admitted by `gate` and held within `budget`.
    pub fn with_rules(limits: Limits, gate: Gate, budget: BodyBudget) -> Conn {
        Conn {
            limits,
            gate,
            budget,
            reserved: 0,
            activity: 0,
            input: Vec::new(),
            output: Vec::new(),
            out_pos: 0,
            state: State::Head,
            ready: None,
            peer_closed: false,
            needs_input: false,
            force_close: false,
        }
    }

    /// Reads until WouldBlock, at most ~64 KiB per call (then `Paused`). EINTR is retried.
    /// Body bytes go straight to the body in progress, so the input buffer only ever
    /// holds heads (and the start of whatever follows them).
    pub fn read_from<R: Read>(&mut self, r: &mut R) -> ReadOutcome {
        let mut chunk = [0u8; READ_CHUNK];
        let mut total = 0;
        let outcome = loop {
            if total >= READ_BUDGET || self.input_full() {
                break ReadOutcome::Paused;
            }
            match r.read(&mut chunk) {
                Ok(0) => break self.on_eof(),
                Ok(n) => {
                    total += n;
                    self.activity += n as u64;
                    self.needs_input = false;
                    // After a closing response (or a refused body), drain what the
                    // client still sends so the kernel does not reset the connection
                    // before it reads our answer.
                    if self.discarding() {
                        continue;
                    }
                    self.input.extend_from_slice(&chunk[..n]);
                    if let State::Body(_) = self.state {
                        if let BodyStep::Fail(status, msg) = self.feed_body() {
                            self.state = State::Failed(status, msg);
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break ReadOutcome::Open,
                Err(_) => {
                    self.peer_closed = true;
                    break ReadOutcome::Closed;
                }
            }
        };
        self.trim();
        outcome
    }

    /// Input is thrown away: a closing answer is queued or about to be.
    fn discarding(&self) -> bool {
        match &self.state {
            State::Closed | State::Failed(..) => true,
            State::Awaiting(p) => !p.keep_alive,
            _ => false,
        }
    }

    /// The next complete request, if one is buffered. `Err` carries a ready-made error
    /// response (400/413/431/503) that should be passed to `respond`; the connection
    /// closes after it. May queue `100 Continue`, so check `wants_write` afterwards.
    pub fn next_request(&mut self) -> Option<Result<Request, Response>> {
        if let Some(r) = self.ready.take() {
            return Some(r);
        }
        if self.output.len() - self.out_pos > OUT_HIGH_WATER {
            return None;
        }
        let r = self.advance();
        self.trim();
        r
    }

    /// Queues the response to the request (or error) last returned by `next_request`.
    pub fn respond(&mut self, resp: Response) {
        let pending = match self.state {
            State::Awaiting(p) => p,
            // Called without an outstanding request: still send it, then close, since
            // the client cannot match it to anything.
            _ => Pending {
                keep_alive: false,
                head_only: false,
                echo_keep_alive: false,
            },
        };
        let keep_alive = pending.keep_alive && !self.force_close;
        self.serialize(&resp, pending, keep_alive);
        self.state = if keep_alive {
            State::Head
        } else {
            self.input = Vec::new();
            State::Closed
        };
        self.needs_input = false;
    }

    /// Makes the next response close the connection (e.g. on shutdown or reload).
    pub fn close_after_response(&mut self) {
        self.force_close = true;
    }

    /// Writes queued bytes until WouldBlock; `Ok(true)` when everything is flushed.
    pub fn write_to<W: Write>(&mut self, w: &mut W) -> io::Result<bool> {
        while self.out_pos < self.output.len() {
            match w.write(&self.output[self.out_pos..]) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => {
                    self.out_pos += n;
                    self.activity += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        self.output.clear();
        self.out_pos = 0;
        self.trim();
        Ok(true)
    }

    pub fn wants_write(&self) -> bool {
        self.out_pos < self.output.len()
    }

    /// True when the connection should be dropped now: a closing response is flushed, or
    /// the peer closed and nothing is left to answer. Ask after `next_request` gave `None`.
    pub fn finished(&self) -> bool {
        if self.wants_write() || self.ready.is_some() {
            return false;
        }
        match self.state {
            State::Closed => true,
            State::Awaiting(_) | State::Failed(..) => false,
            State::Head | State::Body(_) => self.peer_closed && self.needs_input,
        }
    }

    /// Nothing buffered in either direction and no request in progress: the caller's
    /// idle timeout applies.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Head)
            && self.input.is_empty()
            && !self.wants_write()
            && self.ready.is_none()
    }

    /// The peer sent EOF (or the socket failed).
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Bytes moved in either direction so far: a caller's idle clock should only
    /// restart when this changes.
    pub fn activity(&self) -> u64 {
        self.activity
    }

    /// The input buffer is at its bound: reading resumes only once responses
    /// drain (the peer reads), so this is not a reason to poll again at once.
    pub fn input_full(&self) -> bool {
        // A maximal head plus a read's worth of what follows it: body bytes move to
        // the body as they arrive, so only heads and pipelined requests queue here.
        self.input.len() >= self.limits.max_head + READ_CHUNK
    }

    /// Bytes held in buffers, for callers that watch memory.
    pub fn buffered(&self) -> usize {
        let body = match &self.state {
            State::Body(b) => b.req.body.capacity(),
            _ => 0,
        };
        self.input.capacity() + self.output.capacity() + body
    }

    /// Frees drained buffers instead of keeping them at their peak size.
    fn trim(&mut self) {
        if self.input.is_empty() && self.input.capacity() > KEEP_CAPACITY {
            self.input = Vec::new();
        }
        if self.output.is_empty() && self.output.capacity() > KEEP_CAPACITY {
            self.output = Vec::new();
        }
    }

    /// Gives back this connection's share of the body budget.
    fn release(&mut self) {
        self.budget.give(self.reserved);
        self.reserved = 0;
    }

    fn on_eof(&mut self) -> ReadOutcome {
        self.peer_closed = true;
        if self.wants_write() || self.ready.is_some() {
            return ReadOutcome::Open;
        }
        match self.state {
            State::Awaiting(_) => ReadOutcome::Open,
            State::Closed => ReadOutcome::Closed,
            State::Head | State::Body(_) | State::Failed(..) => {
                // A client that half-closes after its request still gets an answer.
                match self.advance() {
                    Some(r) => {
                        self.ready = Some(r);
                        ReadOutcome::Open
                    }
                    None if self.wants_write() => ReadOutcome::Open,
                    None => ReadOutcome::Closed,
                }
            }
        }
    }

    fn advance(&mut self) -> Option<Result<Request, Response>> {
        loop {
            match std::mem::replace(&mut self.state, State::Head) {
                State::Head => {
                    if self.input.is_empty() {
                        self.needs_input = true;
                        return None;
                    }
                    match self.parse_head() {
                        HeadOutcome::Partial => {
                            self.needs_input = true;
                            return None;
                        }
                        HeadOutcome::Error(status, msg) => {
                            return Some(Err(self.fail(status, msg)))
                        }
                        HeadOutcome::Request(req, pending) => {
                            self.state = State::Awaiting(pending);
                            return Some(Ok(req));
                        }
                        HeadOutcome::NeedsBody(incoming) => {
                            self.state = State::Body(incoming);
                        }
                    }
                }
                State::Body(incoming) => {
                    self.state = State::Body(incoming);
                    match self.feed_body() {
                        BodyStep::More => {
                            self.needs_input = true;
                            return None;
                        }
                        BodyStep::Fail(status, msg) => return Some(Err(self.fail(status, msg))),
                        BodyStep::Done => {
                            let State::Body(incoming) =
                                std::mem::replace(&mut self.state, State::Head)
                            else {
                                return None;
                            };
                            self.release();
                            self.state = State::Awaiting(incoming.pending);
                            return Some(Ok(incoming.req));
                        }
                    }
                }
                State::Failed(status, msg) => return Some(Err(self.fail(status, msg))),
                other @ (State::Awaiting(_) | State::Closed) => {
                    self.state = other;
                    return None;
                }
            }
        }
    }

    /// Moves buffered input into the body in progress (or drops it, for a
    /// discarded body), drawing on the budget for kept bytes.
    fn feed_body(&mut self) -> BodyStep {
        let State::Body(b) = &mut self.state else {
            return BodyStep::More;
        };
        let used = match &mut b.kind {
            BodyKind::Length(left) => {
                let take = (*left).min(self.input.len());
                if b.keep {
                    if b.req.body.capacity() == 0 {
                        // The whole length was reserved from the budget at the head.
                        b.req.body.reserve_exact(*left);
                    }
                    b.req.body.extend_from_slice(&self.input[..take]);
                }
                *left -= take;
                b.seen += take;
                take
            }
            BodyKind::Chunked(dec) => {
                let progress = if b.keep {
                    // Decoding never yields more bytes than it is given.
                    let need = (b.req.body.len() + self.input.len()).min(b.max);
                    if need > self.reserved {
                        if !self.budget.take(need - self.reserved) {
                            return BodyStep::Fail(503, busy_message());
                        }
                        self.reserved = need;
                    }
                    b.req.body.reserve_exact(need - b.req.body.len());
                    dec.decode(&self.input, &mut b.req.body, b.max)
                } else {
                    let mut scratch = Vec::new();
                    let r = dec.decode(&self.input, &mut scratch, b.max - b.seen);
                    b.seen += scratch.len();
                    r
                };
                match progress {
                    Ok(p) => p.consumed,
                    Err(ChunkError::TooLarge) => {
                        return BodyStep::Fail(413, too_large(b.max));
                    }
                    Err(e) => return BodyStep::Fail(400, format!("{e}\n")),
                }
            }
        };
        self.input.drain(..used);
        let done = match &b.kind {
            BodyKind::Length(left) => *left == 0,
            BodyKind::Chunked(dec) => dec.is_done(),
        };
        if done {
            BodyStep::Done
        } else {
            BodyStep::More
        }
    }

    /// Turns a protocol error into a closing response; later input is ignored.
    fn fail(&mut self, status: u16, msg: String) -> Response {
        self.input = Vec::new();
        self.release();
        self.state = State::Awaiting(Pending {
            keep_alive: false,
            head_only: false,
            echo_keep_alive: false,
        });
        Response::text(status, &msg)
    }

    fn parse_head(&mut self) -> HeadOutcome {
        let max_head = self.limits.max_head;
        let head_too_large =
            || HeadOutcome::Error(431, format!("request head larger than {max_head} bytes\n"));
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        let head_len = match parsed.parse(&self.input) {
            Ok(httparse::Status::Complete(n)) if n > max_head => return head_too_large(),
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if self.input.len() > max_head => {
                return head_too_large()
            }
            Ok(httparse::Status::Partial) => return HeadOutcome::Partial,
            Err(httparse::Error::TooManyHeaders) => {
                return HeadOutcome::Error(
                    431,
                    format!("more than {MAX_HEADERS} request headers\n"),
                )
            }
            Err(e) => return HeadOutcome::Error(400, format!("malformed request: {e}\n")),
        };
        let (Some(method), Some(target), Some(minor)) =
            (parsed.method, parsed.path, parsed.version)
        else {
            return HeadOutcome::Error(400, "malformed request\n".to_string());
        };
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (target.to_string(), String::new()),
        };
        let headers: Vec<(String, String)> = parsed
            .headers
            .iter()
            .map(|h| {
                let value = String::from_utf8_lossy(h.value).trim().to_string();
                (h.name.to_string(), value)
            })
            .collect();
        let method = method.to_string();
        self.input.drain(..head_len);

        let framing = match body_framing(&headers) {
            Ok(f) => f,
            Err((status, msg)) => return HeadOutcome::Error(status, msg),
        };
        let keep_alive = if minor == 0 {
            has_token(&headers, "connection", "keep-alive")
        } else {
            !has_token(&headers, "connection", "close")
        };
        let mut pending = Pending {
            keep_alive,
            head_only: method == "HEAD",
            echo_keep_alive: minor == 0 && keep_alive,
        };
        let expects_continue = minor == 1 && has_token(&headers, "expect", "100-continue");
        let mut req = Request {
            method,
            path,
            query,
            headers,
            body: Vec::new(),
            body_refused: false,
            keep_alive,
        };
        if framing == Framing::Length(0) {
            return HeadOutcome::Request(req, pending);
        }
        let (keep, max) = match (self.gate)(&req.method, &req.path) {
            BodyRule::Refuse => {
                // Answered without reading a byte of the body; the body bytes
                // already here and still coming are dropped until we close.
                req.body_refused = true;
                req.keep_alive = false;
                pending.keep_alive = false;
                pending.echo_keep_alive = false;
                self.input = Vec::new();
                return HeadOutcome::Request(req, pending);
            }
            BodyRule::Keep(max) => (true, max.min(self.limits.max_body)),
            BodyRule::Discard(max) => (false, max.min(self.limits.max_body)),
        };
        let kind = match framing {
            Framing::Length(n) => {
                let n = match usize::try_from(n) {
                    Ok(n) if n <= max => n,
                    _ => return HeadOutcome::Error(413, too_large(max)),
                };
                if keep {
                    if !self.budget.take(n) {
                        return HeadOutcome::Error(503, busy_message());
                    }
                    self.reserved = n;
                }
                BodyKind::Length(n)
            }
            Framing::Chunked => BodyKind::Chunked(ChunkedDecoder::new()),
        };
        // The client waits for this before sending the body; if the body is already
        // arriving it did not wait, and the interim response would be noise.
        if expects_continue && self.input.is_empty() {
            self.output
                .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        HeadOutcome::NeedsBody(Box::new(Incoming {
            req,
            kind,
            pending,
            keep,
            max,
            seen: 0,
        }))
    }

    fn serialize(&mut self, resp: &Response, pending: Pending, keep_alive: bool) {
        let out = &mut self.output;
        let no_body = resp.status < 200 || resp.status == 204 || resp.status == 304;
        out.extend_from_slice(
            format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status)).as_bytes(),
        );
        if let Some(ct) = resp.content_type {
            push_header(out, "Content-Type", ct);
        }
        for (name, value) in &resp.extra_headers {
            push_header(out, name, value);
        }
        if !no_body {
            push_header(out, "Content-Length", &resp.body.len().to_string());
        }
        if !keep_alive {
            push_header(out, "Connection", "close");
        } else if pending.echo_keep_alive {
            push_header(out, "Connection", "keep-alive");
        }
        out.extend_from_slice(b"\r\n");
        if !no_body && !pending.head_only {
            out.extend_from_slice(&resp.body);
        }
    }
}

fn too_large(max: usize) -> String {
    format!("request body larger than {max} bytes\n")
}

fn busy_message() -> String {
    "too many request bodies in progress; try again later\n".to_string()
}

enum HeadOutcome {
    Partial,
    Error(u16, String),
    Request(Request, Pending),
    NeedsBody(Box<Incoming>),
}

#[derive(PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
}

/// Decides how the body is delimited; conflicting or unsupported framing is refused
/// rather than guessed, since a wrong guess desynchronises the pipelined stream.
fn body_framing(headers: &[(String, String)]) -> Result<Framing, (u16, String)> {
    let mut codings: Vec<String> = Vec::new();
    let mut saw_te = false;
    let mut length: Option<u64> = None;
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("transfer-encoding") {
            saw_te = true;
            codings.extend(tokens(value).map(|t| t.to_ascii_lowercase()));
        } else if name.eq_ignore_ascii_case("content-length") {
            for part in value.split(',') {
                let n = parse_length(part.trim())?;
                if length.is_some_and(|l| l != n) {
                    return Err((400, "conflicting Content-Length headers\n".to_string()));
                }
                length = Some(n);
            }
        }
    }
    if saw_te {
        if length.is_some() {
            return Err((
                400,
                "both Transfer-Encoding and Content-Length\n".to_string(),
            ));
        }
        if codings != ["chunked"] {
            return Err((400, "unsupported Transfer-Encoding\n".to_string()));
        }
        return Ok(Framing::Chunked);
    }
    Ok(Framing::Length(length.unwrap_or(0)))
}

fn parse_length(s: &str) -> Result<u64, (u16, String)> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err((400, "invalid Content-Length\n".to_string()));
    }
    // All digits but too big for u64 is still just "too large".
    Ok(s.parse::<u64>().unwrap_or(u64::MAX))
}

fn tokens(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|t| !t.is_empty())
}

fn has_token(headers: &[(String, String)], name: &str, token: &str) -> bool {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .any(|(_, v)| tokens(v).any(|t| t.eq_ignore_ascii_case(token)))
}

/// Header values come from our own code, but may echo client input: strip line breaks
/// so nothing can inject a header.
fn push_header(out: &mut Vec<u8>, name: &str, value: &str) {
    let clean = |s: &str| s.replace(['\r', '\n'], " ");
    out.extend_from_slice(clean(name).as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(clean(value).as_bytes());
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A socket stand-in: hands out scripted chunks, then WouldBlock (or EOF).
    struct Script {
        chunks: VecDeque<Vec<u8>>,
        eof: bool,
    }

    impl Script {
        fn new(chunks: &[&[u8]]) -> Script {
            Script {
                chunks: chunks
                    .iter()
                    .filter(|c| !c.is_empty())
                    .map(|c| c.to_vec())
                    .collect(),
                eof: false,
            }
        }
        fn eof(mut self) -> Script {
            self.eof = true;
            self
        }
    }

    impl Read for Script {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.chunks.pop_front() {
                Some(mut c) => {
                    let n = c.len().min(buf.len());
                    buf[..n].copy_from_slice(&c[..n]);
                    if n < c.len() {
                        self.chunks.push_front(c.split_off(n));
                    }
                    Ok(n)
                }
                None if self.eof => Ok(0),
                None => Err(io::ErrorKind::WouldBlock.into()),
            }
        }
    }

    fn feed(conn: &mut Conn, bytes: &[u8]) -> ReadOutcome {
        conn.read_from(&mut Script::new(&[bytes]))
    }

    fn take_output(conn: &mut Conn) -> String {
        let mut out = Vec::new();
        assert!(conn.write_to(&mut out).unwrap());
        String::from_utf8_lossy(&out).into_owned()
    }

    fn small() -> Limits {
        Limits {
            max_head: 256,
            max_body: 64,
        }
    }

    fn expect_request(conn: &mut Conn) -> Request {
        match conn.next_request() {
            Some(Ok(r)) => r,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    fn expect_error(conn: &mut Conn) -> Response {
        match conn.next_request() {
            Some(Err(r)) => r,
            other => panic!("expected an error response, got {other:?}"),
        }
    }

    const POST: &[u8] = b"POST /v3/environ?x=1&y HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"FOO\":\"bar\"}";

    fn post_expected() -> Request {
        Request {
            method: "POST".into(),
            path: "/v3/environ".into(),
            query: "x=1&y".into(),
            headers: vec![
                ("Host".into(), "localhost".into()),
                ("Content-Type".into(), "application/json".into()),
                ("Content-Length".into(), "13".into()),
            ],
            body: b"{\"FOO\":\"bar\"}".to_vec(),
            body_refused: false,
            keep_alive: true,
        }
    }

    const CHUNKED: &[u8] = b"PUT /v3/metric HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;a=b\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n";

    #[test]
    fn every_split_point_yields_the_same_request() {
        let chunked_expected = Request {
            method: "PUT".into(),
            path: "/v3/metric".into(),
            query: String::new(),
            headers: vec![("Transfer-Encoding".into(), "chunked".into())],
            body: b"abcde".to_vec(),
            body_refused: false,
            keep_alive: true,
        };
        for (wire, expected) in [(POST, post_expected()), (CHUNKED, chunked_expected)] {
            for split in 0..=wire.len() {
                let mut conn = Conn::new(Limits::default());
                assert_eq!(feed(&mut conn, &wire[..split]), ReadOutcome::Open);
                if split < wire.len() {
                    assert!(
                        conn.next_request().is_none(),
                        "early request at split {split}"
                    );
                    feed(&mut conn, &wire[split..]);
                }
                assert_eq!(expect_request(&mut conn), expected, "split {split}");
                assert!(conn.next_request().is_none());
            }
        }
    }

    #[test]
    fn byte_at_a_time_with_polling() {
        let mut conn = Conn::new(Limits::default());
        let mut got = Vec::new();
        for b in POST.iter().chain(CHUNKED) {
            feed(&mut conn, &[*b]);
            while let Some(r) = conn.next_request() {
                let r = r.unwrap();
                conn.respond(Response::text(200, "ok"));
                got.push(r);
            }
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], post_expected());
        assert_eq!(got[1].body, b"abcde");
    }

    #[test]
    fn pipelined_requests_are_answered_in_order() {
        let mut conn = Conn::new(Limits::default());
        let mut wire = b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n".to_vec();
        wire.extend_from_slice(POST);
        feed(&mut conn, &wire);
        let a = expect_request(&mut conn);
        assert_eq!(a.path, "/a");
        // No second request until the first is answered.
        assert!(conn.next_request().is_none());
        conn.respond(Response::text(200, "A"));
        let b = expect_request(&mut conn);
        assert_eq!(b.path, "/b");
        conn.respond(Response::new(404, "B"));
        assert_eq!(expect_request(&mut conn), post_expected());
        conn.respond(Response::json(200, "{}".into()));
        assert!(conn.next_request().is_none());
        assert_eq!(
            take_output(&mut conn),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 1\r\n\r\nA\
             HTTP/1.1 404 Not Found\r\nContent-Length: 1\r\n\r\nB\
             HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        );
        assert!(!conn.finished());
        assert!(conn.is_idle());
    }

    fn keep_alive_case(wire: &[u8]) -> (bool, String, bool) {
        let mut conn = Conn::new(Limits::default());
        feed(&mut conn, wire);
        let req = expect_request(&mut conn);
        conn.respond(Response::new(200, "x"));
        let out = take_output(&mut conn);
        (req.keep_alive, out, conn.finished())
    }

    #[test]
    fn keep_alive_rules_for_1_0_and_1_1() {
        let (ka, out, fin) = keep_alive_case(b"GET / HTTP/1.1\r\n\r\n");
        assert!(ka && !fin);
        assert_eq!(out, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx");

        let (ka, out, fin) = keep_alive_case(b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n");
        assert!(!ka && fin);
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx"
        );

        let (ka, out, fin) = keep_alive_case(b"GET / HTTP/1.0\r\n\r\n");
        assert!(!ka && fin);
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx"
        );

        let (ka, out, fin) = keep_alive_case(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(ka && !fin);
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\nx"
        );
    }

    #[test]
    fn input_after_a_closing_response_is_ignored() {
        let mut conn = Conn::new(Limits::default());
        feed(&mut conn, b"GET /1 HTTP/1.0\r\n\r\nGET /2 HTTP/1.1\r\n\r\n");
        expect_request(&mut conn);
        conn.respond(Response::new(200, ""));
        assert!(conn.next_request().is_none());
        feed(&mut conn, b"GET /3 HTTP/1.1\r\n\r\n");
        assert!(conn.next_request().is_none());
        take_output(&mut conn);
        assert!(conn.finished());
    }

    #[test]
    fn server_can_force_close() {
        let mut conn = Conn::new(Limits::default());
        feed(&mut conn, b"POST /v3/reload HTTP/1.1\r\n\r\n");
        expect_request(&mut conn);
        conn.close_after_response();
        conn.respond(Response::new(200, "\n"));
        assert_eq!(
            take_output(&mut conn),
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n\n"
        );
        assert!(conn.finished());
    }

    #[test]
    fn head_response_has_no_body_and_extra_headers_are_sanitised() {
        let mut conn = Conn::new(Limits::default());
        feed(&mut conn, b"HEAD /status HTTP/1.1\r\n\r\n");
        expect_request(&mut conn);
        let mut resp = Response::text(200, "hello");
        resp.extra_headers
            .push(("X-A".into(), "v\r\nInjected: 1".into()));
        conn.respond(resp);
        assert_eq!(
            take_output(&mut conn),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nX-A: v  Injected: 1\r\nContent-Length: 5\r\n\r\n"
        );
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers() {
        let mut conn = Conn::new(Limits::default());
        feed(
            &mut conn,
            b"POST /v3/env HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;foo=\"bar\"\r\n{\"A\":\r\n4\r\n\"1\"}\r\n0\r\nX-Checksum: abc\r\nX-More: d\r\n\r\nGET /next HTTP/1.1\r\n\r\n",
        );
        let req = expect_request(&mut conn);
        assert_eq!(req.body, b"{\"A\":\"1\"}");
        conn.respond(Response::new(200, "\n"));
        assert_eq!(expect_request(&mut conn).path, "/next");
    }

    fn error_for(limits: Limits, wire: &[u8]) -> (Response, String, Conn) {
        let mut conn = Conn::new(limits);
        feed(&mut conn, wire);
        let resp = expect_error(&mut conn);
        conn.respond(resp.clone());
        let out = take_output(&mut conn);
        assert!(conn.finished(), "error must close: {out}");
        (resp, out, conn)
    }

    #[test]
    fn malformed_chunks_are_400_and_close() {
        let cases: [(&[u8], &str); 4] = [
            (b"zz\r\n", "bad chunked encoding: bad chunk size\n"),
            (
                b"3\r\nabcd\r\n",
                "bad chunked encoding: missing CRLF after chunk data\n",
            ),
            (b"0x3\r\nabc\r\n", "bad chunked encoding: bad chunk size\n"),
            (b"3\nabc\n0\n\n", "bad chunked encoding: bare LF\n"),
        ];
        for (body, msg) in cases {
            let mut wire = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            wire.extend_from_slice(body);
            let (resp, out, _) = error_for(Limits::default(), &wire);
            assert_eq!(resp.status, 400);
            assert_eq!(String::from_utf8_lossy(&resp.body), msg);
            assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
            assert!(out.contains("\r\nConnection: close\r\n"), "{out}");
        }
    }

    #[test]
    fn chunked_body_over_limit_is_413() {
        let (resp, out, _) = error_for(
            small(),
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n41\r\n",
        );
        assert_eq!(resp.status, 413);
        assert!(out.starts_with("HTTP/1.1 413 Payload Too Large\r\n"));
        // 0x40 = 64 bytes is exactly the limit and accepted.
        let mut conn = Conn::new(small());
        let mut wire = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n".to_vec();
        wire.extend_from_slice(&[b'x'; 64]);
        wire.extend_from_slice(b"\r\n0\r\n\r\n");
        feed(&mut conn, &wire);
        assert_eq!(expect_request(&mut conn).body.len(), 64);
    }

    #[test]
    fn framing_conflicts_are_rejected() {
        let cases: [(&[u8], u16, &str); 6] = [
            (
                b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
                400,
                "conflicting Content-Length headers\n",
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                400,
                "invalid Content-Length\n",
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 1e3\r\n\r\n",
                400,
                "invalid Content-Length\n",
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
                400,
                "both Transfer-Encoding and Content-Length\n",
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                400,
                "unsupported Transfer-Encoding\n",
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                413,
                "request body larger than 1048576 bytes\n",
            ),
        ];
        for (wire, status, msg) in cases {
            let (resp, _, _) = error_for(Limits::default(), wire);
            assert_eq!(
                (resp.status, String::from_utf8_lossy(&resp.body).as_ref()),
                (status, msg)
            );
        }
        // Repeated identical lengths are fine.
        let mut conn = Conn::new(Limits::default());
        feed(
            &mut conn,
            b"POST / HTTP/1.1\r\nContent-Length: 2, 2\r\n\r\nok",
        );
        assert_eq!(expect_request(&mut conn).body, b"ok");
    }

    #[test]
    fn expect_100_continue() {
        let mut conn = Conn::new(Limits::default());
        feed(
            &mut conn,
            b"PUT /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
        );
        assert!(conn.next_request().is_none());
        assert!(conn.wants_write());
        assert_eq!(take_output(&mut conn), "HTTP/1.1 100 Continue\r\n\r\n");
        feed(&mut conn, b"hello");
        assert_eq!(expect_request(&mut conn).body, b"hello");
        conn.respond(Response::new(200, ""));
        assert_eq!(
            take_output(&mut conn),
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
        );

        // Body already sent: no interim response.
        let mut conn = Conn::new(Limits::default());
        feed(
            &mut conn,
            b"PUT /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
        );
        expect_request(&mut conn);
        assert!(!conn.wants_write());

        // Too large: straight to 413, never 100.
        let (resp, out, _) = error_for(
            Limits::default(),
            b"PUT /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1048577\r\n\r\n",
        );
        assert_eq!(resp.status, 413);
        assert!(
            out.starts_with("HTTP/1.1 413 Payload Too Large\r\n"),
            "{out}"
        );
    }

    #[test]
    fn limits_give_exact_status_lines() {
        // Content-Length over the limit: 413 without waiting for the body.
        let (_, out, _) = error_for(
            Limits::default(),
            b"POST /v3/env HTTP/1.1\r\nContent-Length: 1048577\r\n\r\n",
        );
        assert_eq!(
            out,
            "HTTP/1.1 413 Payload Too Large\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 39\r\nConnection: close\r\n\r\nrequest body larger than 1048576 bytes\n"
        );
        // Exactly at the limit is fine.
        let mut conn = Conn::new(small());
        let mut wire = b"POST / HTTP/1.1\r\nContent-Length: 64\r\n\r\n".to_vec();
        wire.extend_from_slice(&[b'y'; 64]);
        feed(&mut conn, &wire);
        assert_eq!(expect_request(&mut conn).body.len(), 64);

        // Head too large without ever completing: 431.
        let mut wire = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        wire.extend(std::iter::repeat_n(b'a', 8200));
        let (_, out, _) = error_for(Limits::default(), &wire);
        assert!(
            out.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{out}"
        );

        // A complete head just over the limit is 431 too; exactly at it is accepted.
        let at_limit = |extra: usize| {
            let mut w = b"GET / HTTP/1.1\r\nX: ".to_vec();
            let fill = 256 - w.len() - 4 + extra;
            w.extend(std::iter::repeat_n(b'a', fill));
            w.extend_from_slice(b"\r\n\r\n");
            w
        };
        let mut conn = Conn::new(small());
        feed(&mut conn, &at_limit(0));
        expect_request(&mut conn);
        let (resp, _, _) = error_for(small(), &at_limit(1));
        assert_eq!(resp.status, 431);

        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..101 {
            many.extend_from_slice(format!("H{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        let (resp, _, _) = error_for(Limits::default(), &many);
        assert_eq!(resp.status, 431);
        assert_eq!(resp.body, b"more than 100 request headers\n");
    }

    #[test]
    fn non_http_is_400_and_close() {
        let cases: [&[u8]; 5] = [
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"GET / HTTP/2.0\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET / FOO\r\n\r\n",
            b"hello there\r\n\r\n",
        ];
        for wire in cases {
            let (resp, out, _) = error_for(Limits::default(), wire);
            assert_eq!(resp.status, 400, "{wire:?}");
            assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
            assert!(out.contains("Connection: close\r\n"));
        }
    }

    /// Accepts one byte, then refuses with WouldBlock, alternately.
    struct Trickle {
        got: Vec<u8>,
        block_next: bool,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.block_next = !self.block_next;
            if !self.block_next {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            match buf.first() {
                Some(b) => {
                    self.got.push(*b);
                    Ok(1)
                }
                None => Ok(0),
            }
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn trickling_writer_gets_exact_bytes() {
        let mut conn = Conn::new(Limits::default());
        feed(&mut conn, b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.0\r\n\r\n");
        expect_request(&mut conn);
        conn.respond(Response::text(200, "first"));
        expect_request(&mut conn);
        conn.respond(Response::json(500, "{\"e\":1}".into()));
        let mut w = Trickle {
            got: Vec::new(),
            block_next: false,
        };
        let mut calls = 0;
        while !conn.write_to(&mut w).unwrap() {
            assert!(conn.wants_write());
            assert!(!conn.finished());
            calls += 1;
        }
        let expected = "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\n\r\nfirst\
                        HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: 7\r\nConnection: close\r\n\r\n{\"e\":1}";
        assert_eq!(String::from_utf8_lossy(&w.got), expected);
        assert_eq!(calls, expected.len() - 1);
        assert!(conn.finished());
    }

    #[test]
    fn write_errors_are_reported() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut conn = Conn::new(Limits::default());
        feed(&mut conn, b"GET / HTTP/1.1\r\n\r\n");
        expect_request(&mut conn);
        conn.respond(Response::new(200, "x"));
        let err = conn.write_to(&mut Broken).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn eof_handling() {
        // EOF mid-head: nothing to answer.
        let mut conn = Conn::new(Limits::default());
        let out = conn.read_from(&mut Script::new(&[b"GET / HT"]).eof());
        assert_eq!(out, ReadOutcome::Closed);
        assert!(conn.next_request().is_none());
        assert!(conn.finished());

        // EOF on a fresh connection.
        let mut conn = Conn::new(Limits::default());
        assert_eq!(
            conn.read_from(&mut Script::new(&[]).eof()),
            ReadOutcome::Closed
        );

        // Half-close after a complete request: it still gets answered, then finished.
        let mut conn = Conn::new(Limits::default());
        let out = conn.read_from(
            &mut Script::new(&[b"GET /x HTTP/1.1\r\n\r\nGET /y HTTP/1.1\r\n\r\n"]).eof(),
        );
        assert_eq!(out, ReadOutcome::Open);
        assert!(!conn.finished());
        assert_eq!(expect_request(&mut conn).path, "/x");
        conn.respond(Response::new(200, "1"));
        assert_eq!(expect_request(&mut conn).path, "/y");
        conn.respond(Response::new(200, "2"));
        assert!(conn.next_request().is_none());
        assert!(!conn.finished());
        take_output(&mut conn);
        assert!(conn.finished());
    }

    #[test]
    fn read_interrupted_is_retried_and_errors_close() {
        struct Flaky(u8);
        impl Read for Flaky {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.0 += 1;
                match self.0 {
                    1 => Err(io::ErrorKind::Interrupted.into()),
                    2 => {
                        buf[..5].copy_from_slice(b"GET /");
                        Ok(5)
                    }
                    _ => Err(io::ErrorKind::ConnectionReset.into()),
                }
            }
        }
        let mut conn = Conn::new(Limits::default());
        assert_eq!(conn.read_from(&mut Flaky(0)), ReadOutcome::Closed);
    }

    #[test]
    fn reads_are_bounded_per_call() {
        struct Endless;
        impl Read for Endless {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                buf.fill(b'a');
                Ok(buf.len())
            }
        }
        let mut conn = Conn::new(Limits::default());
        let head = b"POST / HTTP/1.1\r\nContent-Length: 1048576\r\n\r\n";
        feed(&mut conn, head);
        // Before the head is parsed, input stops at a head plus a read's worth.
        assert_eq!(conn.read_from(&mut Endless), ReadOutcome::Paused);
        assert_eq!(conn.input.len(), 2 * READ_CHUNK + head.len());
        let mut rounds = 0;
        let req = loop {
            if let Some(r) = conn.next_request() {
                break r.unwrap();
            }
            // Body bytes go straight to the body: the input buffer stays empty.
            assert!(conn.input.is_empty());
            assert_eq!(conn.read_from(&mut Endless), ReadOutcome::Paused);
            rounds += 1;
        };
        assert_eq!(req.body.len(), 1 << 20);
        assert_eq!(req.body.capacity(), 1 << 20, "body sized once, exactly");
        assert_eq!(rounds, 16);
    }

    fn refuse_posts(method: &str, path: &str) -> BodyRule {
        match (method, path) {
            ("POST", "/keep") => BodyRule::Keep(100),
            ("POST", "/drop") => BodyRule::Discard(100),
            _ => BodyRule::Refuse,
        }
    }

    #[test]
    fn a_refused_body_is_answered_before_it_is_read() {
        let mut conn = Conn::with_rules(Limits::default(), refuse_posts, BodyBudget::new(1000));
        // Too large and unwanted: the route's answer (say 405) wins over 413.
        feed(
            &mut conn,
            b"POST /metrics HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 99999999\r\n\r\nxxxx",
        );
        let req = expect_request(&mut conn);
        assert!(req.body_refused && req.body.is_empty() && !req.keep_alive);
        assert!(!conn.wants_write(), "no 100 Continue for a refused body");
        conn.respond(Response::text(405, "Method Not Allowed\n"));
        let out = take_output(&mut conn);
        assert!(out.starts_with("HTTP/1.1 405 ") && out.contains("Connection: close\r\n"));
        // What the client still sends is read and dropped, never buffered.
        for _ in 0..10 {
            feed(&mut conn, &[b'x'; 10000]);
            assert!(conn.buffered() <= KEEP_CAPACITY, "{}", conn.buffered());
        }
        assert!(conn.next_request().is_none());
        assert!(conn.finished());
        assert_eq!(conn.budget.available(), 1000);
    }

    #[test]
    fn a_discarded_body_keeps_the_connection_in_step() {
        let mut conn = Conn::with_rules(Limits::default(), refuse_posts, BodyBudget::new(0));
        feed(
            &mut conn,
            b"POST /drop HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloPOST /drop HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /next HTTP/1.1\r\n\r\n",
        );
        for _ in 0..2 {
            let req = expect_request(&mut conn);
            assert!(req.body.is_empty() && !req.body_refused && req.keep_alive);
            conn.respond(Response::new(200, ""));
        }
        assert_eq!(expect_request(&mut conn).path, "/next");
        // Over the discard limit: 413 from the length, or from the chunk size.
        let (resp, _, _) = error_for_rules(b"POST /drop HTTP/1.1\r\nContent-Length: 101\r\n\r\n");
        assert_eq!(resp.status, 413);
        let (resp, _, _) =
            error_for_rules(b"POST /drop HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n");
        assert_eq!(resp.status, 413);
        assert_eq!(resp.body, b"request body larger than 100 bytes\n");
    }

    fn error_for_rules(wire: &[u8]) -> (Response, String, Conn) {
        let mut conn = Conn::with_rules(Limits::default(), refuse_posts, BodyBudget::new(1000));
        feed(&mut conn, wire);
        let resp = expect_error(&mut conn);
        conn.respond(resp.clone());
        let out = take_output(&mut conn);
        (resp, out, conn)
    }

    #[test]
    fn kept_bodies_share_one_budget() {
        let budget = BodyBudget::new(100);
        let mut a = Conn::with_rules(Limits::default(), refuse_posts, budget.clone());
        let mut b = Conn::with_rules(Limits::default(), refuse_posts, budget.clone());
        feed(&mut a, b"POST /keep HTTP/1.1\r\nContent-Length: 80\r\n\r\n");
        assert!(a.next_request().is_none());
        assert_eq!(budget.available(), 20, "the announced length is held");
        // The second does not fit: 503 and close, before its body is read.
        feed(
            &mut b,
            b"POST /keep HTTP/1.1\r\nContent-Length: 30\r\n\r\nabc",
        );
        let resp = expect_error(&mut b);
        assert_eq!(resp.status, 503);
        b.respond(resp);
        let out = take_output(&mut b);
        assert!(
            out.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{out}"
        );
        assert!(out.contains("Connection: close"));
        assert!(b.finished());
        // A chunked body draws on the budget as it arrives.
        let mut c = Conn::with_rules(Limits::default(), refuse_posts, budget.clone());
        feed(
            &mut c,
            b"POST /keep HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n",
        );
        assert!(c.next_request().is_none());
        assert_eq!(budget.available(), 10);
        feed(&mut c, b"10\r\n0123456789abcdef\r\n");
        assert_eq!(expect_error(&mut c).status, 503);
        assert_eq!(budget.available(), 20, "a failed body gives its share back");
        // The first completes: handed out, its share returns.
        feed(&mut a, &[b'y'; 80]);
        assert_eq!(expect_request(&mut a).body.len(), 80);
        assert_eq!(budget.available(), 100);
        // A connection dropped mid-body gives its share back too.
        feed(
            &mut a,
            b"POST /keep HTTP/1.1\r\nContent-Length: 50\r\n\r\nab",
        );
        a.respond(Response::new(200, ""));
        let mut d = Conn::with_rules(Limits::default(), refuse_posts, budget.clone());
        feed(
            &mut d,
            b"POST /keep HTTP/1.1\r\nContent-Length: 50\r\n\r\nab",
        );
        assert!(d.next_request().is_none());
        assert_eq!(budget.available(), 50);
        drop(d);
        assert_eq!(budget.available(), 100);
    }

    #[test]
    fn buffers_are_released_after_a_burst() {
        let mut conn = Conn::new(Limits::default());
        let mut wire = b"POST / HTTP/1.1\r\nContent-Length: 500000\r\n\r\n".to_vec();
        wire.resize(wire.len() + 500_000, b'b');
        let mut peer = Script::new(&[&wire]);
        let req = loop {
            conn.read_from(&mut peer);
            if let Some(r) = conn.next_request() {
                break r.unwrap();
            }
        };
        conn.respond(Response::new(200, req.body));
        assert!(conn.buffered() > 500_000);
        take_output(&mut conn);
        assert!(
            conn.buffered() <= KEEP_CAPACITY,
            "{} bytes kept",
            conn.buffered()
        );
        assert!(conn.is_idle());
    }

    #[test]
    fn idle_state() {
        let mut conn = Conn::new(Limits::default());
        assert!(conn.is_idle());
        feed(&mut conn, b"GET");
        assert!(!conn.is_idle());
        feed(&mut conn, b" / HTTP/1.1\r\n\r\n");
        expect_request(&mut conn);
        assert!(!conn.is_idle());
        conn.respond(Response::new(200, ""));
        assert!(!conn.is_idle());
        take_output(&mut conn);
        assert!(conn.is_idle());
    }

    #[test]
    fn header_lookup_is_case_insensitive() {
        let mut conn = Conn::new(Limits::default());
        feed(
            &mut conn,
            b"GET / HTTP/1.1\r\ncontent-TYPE:   text/x  \r\nX-A: 1\r\nx-a: 2\r\n\r\n",
        );
        let req = expect_request(&mut conn);
        assert_eq!(req.header("Content-Type"), Some("text/x"));
        assert_eq!(req.header("X-A"), Some("1"));
        assert_eq!(req.header("missing"), None);
    }

    /// Linear congruential generator: deterministic noise without a rand crate.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) as u32
        }
        fn below(&mut self, n: usize) -> usize {
            self.next() as usize % n
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let pieces: [&[u8]; 16] = [
            b"GET ",
            b"POST ",
            b"/v3/env",
            b" HTTP/1.1\r\n",
            b" HTTP/1.0\r\n",
            b"\r\n",
            b"Content-Length: 5\r\n",
            b"Transfer-Encoding: chunked\r\n",
            b"Expect: 100-continue\r\n",
            b"Connection: keep-alive\r\n",
            b"3\r\nabc\r\n",
            b"0\r\n\r\n",
            b"ffffffff\r\n",
            b":",
            b"\n",
            b"\xff\x00",
        ];
        let templates: [&[u8]; 4] = [
            POST,
            CHUNKED,
            b"GET /status HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            b"PUT /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
        ];
        let mut rng = Lcg(42);
        let (mut oks, mut errs) = (0, 0);
        for _ in 0..4000 {
            let mut wire = Vec::new();
            for _ in 0..1 + rng.below(3) {
                if rng.below(2) == 0 {
                    // A valid request, sometimes with a few bytes corrupted.
                    let mut msg = templates[rng.below(templates.len())].to_vec();
                    if rng.below(2) == 0 {
                        for _ in 0..1 + rng.below(3) {
                            let at = rng.below(msg.len());
                            msg[at] = rng.next() as u8;
                        }
                    }
                    wire.extend_from_slice(&msg);
                } else {
                    for _ in 0..rng.below(12) {
                        if rng.below(3) == 0 {
                            wire.push(rng.next() as u8);
                        } else {
                            wire.extend_from_slice(pieces[rng.below(pieces.len())]);
                        }
                    }
                }
            }
            let mut conn = Conn::new(small());
            let mut rest = &wire[..];
            while !rest.is_empty() {
                let n = 1 + rng.below(rest.len());
                conn.read_from(&mut Script::new(&[&rest[..n]]));
                rest = &rest[n..];
                while let Some(r) = conn.next_request() {
                    let resp = match r {
                        Ok(req) => {
                            oks += 1;
                            Response::new(200, req.body)
                        }
                        Err(resp) => {
                            errs += 1;
                            resp
                        }
                    };
                    conn.respond(resp);
                }
                let mut sink = Vec::new();
                assert!(conn.write_to(&mut sink).is_ok());
                assert!(conn.input.len() <= small().max_head + 2 * READ_CHUNK);
            }
            let _ = conn.read_from(&mut Script::new(&[]).eof());
            let _ = conn.finished();
        }
        // The mix must exercise both paths, or the test proves little.
        assert!(oks > 200 && errs > 200, "oks {oks} errs {errs}");
    }
}
