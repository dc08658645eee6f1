//! Listening sockets (control unix socket, telemetry TCP port) and their
//! connections, driven by the loop. HTTP parsing is `crate::http`; what a request
//! means is decided by the caller through the `route` callback.

use crate::http::{Conn, Limits, ReadOutcome, Request, Response};
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Interest, Registry, Token};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

/// A client that sends nothing for this long is dropped (SPEC §4).
pub const IDLE: Duration = Duration::from_secs(10);
/// Connections one listener serves at once (SPEC §4); a new one beyond this
/// takes the slot of the longest-idle or slowest incomplete connection.
pub const MAX_CONNS: usize = 256;
/// Connections accepted per turn of the loop, so a flood of connects cannot
/// keep the loop from everything else (the rest are taken on the next turn).
const ACCEPT_BATCH: usize = 64;
/// How often "table full" is logged while connections are being evicted.
const FULL_WARNING_EVERY: Duration = Duration::from_secs(60);

pub enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

pub enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.flush(),
            Stream::Tcp(s) => s.flush(),
        }
    }
}

struct Client {
    stream: Stream,
    conn: Conn,
    last: Instant,
    /// Read budget ran out: come back without waiting for readiness.
    paused: bool,
    /// Since when a request has been half-received or a response half-sent: an
    /// exchange must finish within `IDLE`, so trickling bytes (slowloris) does not
    /// keep a connection alive.
    busy_since: Option<Instant>,
}

impl Client {
    /// Idle time counts from the last byte moved, or from the start of an
    /// exchange that has not finished, whichever is earlier.
    fn deadline_base(&self) -> Instant {
        match self.busy_since {
            Some(b) if b < self.last => b,
            _ => self.last,
        }
    }
}

/// One listener and its clients. Tokens for clients are `base + n`.
pub struct Server {
    pub listener: Listener,
    listener_token: Token,
    base: usize,
    next: usize,
    span: usize,
    clients: HashMap<Token, Client>,
    /// The listener may have connections waiting: accept on the next turn.
    backlog: bool,
    /// When the table last filled up and a connection was evicted (for the log).
    warned_full: Option<Instant>,
}

impl Server {
    pub fn new(
        reg: &Registry,
        mut listener: Listener,
        listener_token: Token,
        base: usize,
        span: usize,
    ) -> io::Result<Server> {
        match &mut listener {
            Listener::Unix(l) => reg.register(l, listener_token, Interest::READABLE)?,
            Listener::Tcp(l) => reg.register(l, listener_token, Interest::READABLE)?,
        }
        Ok(Server {
            listener,
            listener_token,
            base,
            next: 0,
            span,
            clients: HashMap::new(),
            backlog: true,
            warned_full: None,
        })
    }

    pub fn owns(&self, t: Token) -> bool {
        t == self.listener_token || (t.0 >= self.base && t.0 < self.base + self.span)
    }

    pub fn is_listener(&self, t: Token) -> bool {
        t == self.listener_token
    }

    pub fn deregister(&mut self, reg: &Registry) {
        match &mut self.listener {
            Listener::Unix(l) => {
                let _ = reg.deregister(l);
            }
            Listener::Tcp(l) => {
                let _ = reg.deregister(l);
            }
        }
        for (_, mut c) in self.clients.drain() {
            deregister_stream(reg, &mut c.stream);
        }
    }

    fn alloc(&mut self) -> Option<Token> {
        for _ in 0..self.span {
            self.next = (self.next + 1) % self.span;
            let t = Token(self.base + self.next);
            if !self.clients.contains_key(&t) {
                return Some(t);
            }
        }
        None
    }

    /// Accept what the backlog holds. A full table does not make a new client
    /// wait: the connection that has been idle or incomplete longest gives up its
    /// slot, so attackers holding slots cannot lock out a well-behaved client.
    pub fn accept(&mut self, reg: &Registry, now: Instant) {
        self.backlog = true;
        for _ in 0..ACCEPT_BATCH {
            let accepted = match &self.listener {
                Listener::Unix(l) => l.accept().map(|(s, _)| Stream::Unix(s)),
                Listener::Tcp(l) => l.accept().map(|(s, _)| Stream::Tcp(s)),
            };
            let mut stream = match accepted {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.backlog = false;
                    return;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue
                }
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    self.backlog = false;
                    return;
                }
            };
            if self.clients.len() >= MAX_CONNS {
                self.evict(reg, now);
            }
            let Some(token) = self.alloc() else { return };
            let res = match &mut stream {
                Stream::Unix(s) => reg.register(s, token, Interest::READABLE | Interest::WRITABLE),
                Stream::Tcp(s) => reg.register(s, token, Interest::READABLE | Interest::WRITABLE),
            };
            if res.is_err() {
                continue;
            }
            self.clients.insert(
                token,
                Client {
                    stream,
                    conn: Conn::new(Limits::default()),
                    last: now,
                    paused: true, // read at once: data may have arrived before registration
                    busy_since: None,
                },
            );
        }
    }

    /// Drops the client whose idle or incomplete time is longest.
    fn evict(&mut self, reg: &Registry, now: Instant) {
        let Some(t) = self
            .clients
            .iter()
            .min_by_key(|(_, c)| c.deadline_base())
            .map(|(t, _)| *t)
        else {
            return;
        };
        let quiet = match self.warned_full {
            Some(w) => now.duration_since(w) >= FULL_WARNING_EVERY,
            None => true,
        };
        if quiet {
            log::warn!(
                "{}: {MAX_CONNS} connections open; dropping the longest-idle ones for new clients",
                self.name()
            );
            self.warned_full = Some(now);
        }
        self.drop_client(reg, t);
    }

    fn name(&self) -> &'static str {
        match self.listener {
            Listener::Unix(_) => "control",
            Listener::Tcp(_) => "telemetry",
        }
    }

    /// Serve one client after a readiness event (or a paused read).
    pub fn serve(
        &mut self,
        reg: &Registry,
        t: Token,
        now: Instant,
        route: &mut dyn FnMut(Request) -> Response,
    ) {
        let Some(c) = self.clients.get_mut(&t) else {
            return;
        };
        let before = c.conn.activity();
        let outcome = c.conn.read_from(&mut c.stream);
        // A full input buffer waits for the peer to read our responses (a
        // writable event), not for another turn of the loop.
        c.paused = outcome == ReadOutcome::Paused && !c.conn.input_full();
        while let Some(r) = c.conn.next_request() {
            let resp = match r {
                Ok(req) => route(req),
                Err(resp) => resp,
            };
            c.conn.respond(resp);
        }
        let mut broken = false;
        if c.conn.wants_write() && c.conn.write_to(&mut c.stream).is_err() {
            broken = true;
        }
        // Only bytes moved count as activity: a client that never reads its
        // responses still times out.
        if c.conn.activity() != before {
            c.last = now;
        }
        if c.conn.is_idle() {
            c.busy_since = None;
        } else if c.busy_since.is_none() {
            c.busy_since = Some(now);
        }
        if broken || outcome == ReadOutcome::Closed || c.conn.finished() {
            self.drop_client(reg, t);
        }
    }

    fn drop_client(&mut self, reg: &Registry, t: Token) {
        if let Some(mut c) = self.clients.remove(&t) {
            deregister_stream(reg, &mut c.stream);
        }
    }

    /// Clients with unread input left over from a budget-limited read.
    pub fn paused(&self) -> Vec<Token> {
        self.clients
            .iter()
            .filter(|(_, c)| c.paused)
            .map(|(t, _)| *t)
            .collect()
    }

    pub fn wants_accept(&self) -> bool {
        self.backlog
    }

    /// Drop clients idle past `IDLE`; returns the earliest time one could expire.
    pub fn expire(&mut self, reg: &Registry, now: Instant) -> Option<Instant> {
        let stale: Vec<Token> = self
            .clients
            .iter()
            .filter(|(_, c)| now.duration_since(c.deadline_base()) >= IDLE)
            .map(|(t, _)| *t)
            .collect();
        for t in stale {
            self.drop_client(reg, t);
        }
        self.clients
            .values()
            .map(|c| c.deadline_base() + IDLE)
            .min()
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }
}

fn deregister_stream(reg: &Registry, s: &mut Stream) {
    let _ = match s {
        Stream::Unix(s) => reg.deregister(s),
        Stream::Tcp(s) => reg.deregister(s),
    };
}
