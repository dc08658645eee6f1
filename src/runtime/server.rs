//! Listening sockets (control unix socket, telemetry TCP port) and their
//! connections, driven by the loop. HTTP parsing is `crate::http`; what a request
//! means is decided by the caller through the `route` callback.

use super::listeners::SocketFile;
use crate::http::{BodyBudget, BodyRule, Conn, Gate, Limits, ReadOutcome, Request, Response};
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
/// Bytes all pending request bodies of a listener may hold together (SPEC §4);
/// a body beyond it is answered 503.
pub const BODY_BUDGET: usize = 8 << 20;
/// After a closing answer sent before the request was fully read (a refused
/// body, a 413 or 503), what the client still sends is read and dropped until it
/// pauses this long (at most `IDLE` in all, at most `LINGER_BYTES`), so that its
/// writes do not fail with a reset before it reads the answer.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: u64 = 2 << 20;
/// Freed memory goes back to the OS when the last client of a burst that moved
/// this much has gone, or after this much more under steady traffic.
const TRIM_AFTER: u64 = 1 << 20;
const TRIM_ALWAYS_AFTER: u64 = 64 << 20;
/// After `accept` failed for want of descriptors or memory, try again this much
/// later (or as soon as one of our clients leaves) instead of spinning on it.
const ACCEPT_RETRY: Duration = Duration::from_millis(250);

pub enum Listener {
    /// The control socket and the file it created.
    Unix(UnixListener, SocketFile),
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

impl Stream {
    fn shutdown_write(&self) {
        let _ = match self {
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Write),
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
        };
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
    /// The closing answer is sent; input is dropped until EOF or the deadline.
    linger: Option<Linger>,
}

#[derive(Clone, Copy)]
struct Linger {
    until: Instant,
    /// `until` moves with the client's bytes, but never past this.
    last_until: Instant,
    /// `activity()` when lingering began.
    from: u64,
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

    fn deadline(&self) -> Instant {
        match self.linger {
            Some(l) => l.until,
            None => self.deadline_base() + IDLE,
        }
    }

    /// Who gives up a slot first: a lingering client (its exchange is over), then
    /// the one idle or incomplete longest.
    fn eviction_rank(&self) -> (bool, Instant) {
        (self.linger.is_none(), self.deadline_base())
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
    /// Connections served at once: `MAX_CONNS`, less under a low descriptor limit.
    cap: usize,
    /// Accepting failed (no descriptor left, no memory): the next try is due
    /// then. The listener is edge-triggered, so a queued client is only ever
    /// accepted because we try again, never because it gets a second event.
    retry_at: Option<Instant>,
    /// An accept failure was logged; the next success is logged too.
    accept_failing: bool,
    /// When the table last filled up and a connection was evicted (for the log).
    warned_full: Option<Instant>,
    /// Bytes closed connections moved since freed memory was last handed back.
    moved_since_trim: u64,
    /// What the router takes as request bodies on this listener.
    gate: Gate,
    budget: BodyBudget,
}

impl Server {
    pub fn new(
        reg: &Registry,
        mut listener: Listener,
        listener_token: Token,
        base: usize,
        span: usize,
    ) -> io::Result<Server> {
        // The control routes say which bodies they take; telemetry takes none.
        let gate: Gate = match listener {
            Listener::Unix(..) => crate::control::body_rule,
            Listener::Tcp(_) => |_, _| BodyRule::Refuse,
        };
        match &mut listener {
            Listener::Unix(l, _) => reg.register(l, listener_token, Interest::READABLE)?,
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
            cap: conn_cap(),
            retry_at: None,
            accept_failing: false,
            warned_full: None,
            moved_since_trim: 0,
            gate,
            budget: BodyBudget::new(BODY_BUDGET),
        })
    }

    pub fn owns(&self, t: Token) -> bool {
        t == self.listener_token || (t.0 >= self.base && t.0 < self.base + self.span)
    }

    pub fn is_listener(&self, t: Token) -> bool {
        t == self.listener_token
    }

    /// Stop listening for good: clients are dropped and the control socket's
    /// file is removed if it is still the one this server created.
    pub fn deregister(&mut self, reg: &Registry) {
        match &mut self.listener {
            Listener::Unix(l, file) => {
                let _ = reg.deregister(l);
                file.remove();
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
    /// Out of descriptors, the same happens if we hold a client; otherwise the
    /// listener is left alone until `ACCEPT_RETRY` has passed.
    pub fn accept(&mut self, reg: &Registry, now: Instant) {
        self.backlog = true;
        // Evict for a descriptor at most once per accepted client, so a failure
        // that eviction does not cure cannot empty the table.
        let mut evicted_for_fd = false;
        for _ in 0..ACCEPT_BATCH {
            let accepted = match &self.listener {
                Listener::Unix(l, _) => l.accept().map(|(s, _)| Stream::Unix(s)),
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
                Err(e) if out_of_descriptors(&e) && !evicted_for_fd && !self.clients.is_empty() => {
                    self.evict(reg, now, "no file descriptor left");
                    evicted_for_fd = true;
                    continue;
                }
                Err(e) => {
                    if !self.accept_failing {
                        log::warn!(
                            "{}: cannot accept connections: {e}; retrying every {} ms",
                            self.name(),
                            ACCEPT_RETRY.as_millis()
                        );
                        self.accept_failing = true;
                    }
                    self.retry_at = Some(now + ACCEPT_RETRY);
                    return;
                }
            };
            evicted_for_fd = false;
            self.retry_at = None;
            if self.accept_failing {
                log::info!("{}: accepting connections again", self.name());
                self.accept_failing = false;
            }
            if self.clients.len() >= self.cap {
                self.evict(reg, now, "connection table full");
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
                    conn: Conn::with_rules(
                        // The gate sets each route's body limit.
                        Limits {
                            max_body: usize::MAX,
                            ..Limits::default()
                        },
                        self.gate,
                        self.budget.clone(),
                    ),
                    last: now,
                    paused: true, // read at once: data may have arrived before registration
                    busy_since: None,
                    linger: None,
                },
            );
        }
    }

    /// Drops the client whose idle or incomplete time is longest.
    fn evict(&mut self, reg: &Registry, now: Instant, why: &str) {
        let Some(t) = self
            .clients
            .iter()
            .min_by_key(|(_, c)| c.eviction_rank())
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
                "{}: {why} ({} connections open); dropping the longest-idle ones for new clients",
                self.name(),
                self.clients.len()
            );
            self.warned_full = Some(now);
        }
        self.close(reg, t);
    }

    fn name(&self) -> &'static str {
        match self.listener {
            Listener::Unix(..) => "control",
            Listener::Tcp(_) => "telemetry",
        }
    }

    /// Serve one client after a readiness event (or a paused read). Returns
    /// true when the client is done: the caller closes it with `close`. (The
    /// registry is not needed here, so `route` may borrow whatever owns it.)
    pub fn serve(
        &mut self,
        t: Token,
        now: Instant,
        route: &mut dyn FnMut(Request) -> Response,
    ) -> bool {
        let Some(c) = self.clients.get_mut(&t) else {
            return false;
        };
        if let Some(l) = &mut c.linger {
            let before = c.conn.activity();
            let outcome = c.conn.read_from(&mut c.stream);
            c.paused = outcome == ReadOutcome::Paused;
            if c.conn.activity() != before {
                l.until = (now + LINGER).min(l.last_until);
            }
            return outcome == ReadOutcome::Closed || c.conn.activity() - l.from > LINGER_BYTES;
        }
        let before = c.conn.activity();
        let outcome = c.conn.read_from(&mut c.stream);
        while let Some(r) = c.conn.next_request() {
            let resp = match r {
                Ok(req) => route(req),
                Err(resp) => resp,
            };
            c.conn.respond(resp);
        }
        // Data is left in the socket: read again next turn (edge-triggered, no
        // new event would come for it) unless the input buffer is still full
        // after handling requests, which waits for the peer to read our
        // responses (a writable event).
        c.paused = outcome == ReadOutcome::Paused && !c.conn.input_full();
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
        if broken || outcome == ReadOutcome::Closed {
            return true;
        }
        if !c.conn.finished() {
            return false;
        }
        if c.conn.peer_closed() {
            return true;
        }
        // Answered and closing, but the client may still be sending: tell it we
        // are done and drop what comes until it closes too.
        c.stream.shutdown_write();
        c.linger = Some(Linger {
            until: now + LINGER,
            last_until: now + IDLE,
            from: c.conn.activity(),
        });
        c.paused = true;
        false
    }

    /// Close a client: its descriptor is free again, so a failed accept may be
    /// retried at once.
    pub fn close(&mut self, reg: &Registry, t: Token) {
        if let Some(mut c) = self.clients.remove(&t) {
            deregister_stream(reg, &mut c.stream);
            if self.retry_at.is_some() {
                self.retry_at = Some(Instant::now());
            }
            self.moved_since_trim += c.conn.activity();
            drop(c);
            let burst_over = self.clients.is_empty() && self.moved_since_trim >= TRIM_AFTER;
            if burst_over || self.moved_since_trim >= TRIM_ALWAYS_AFTER {
                if self.clients.is_empty() {
                    self.clients.shrink_to_fit();
                }
                return_freed_memory();
                self.moved_since_trim = 0;
            }
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

    /// Connections may be waiting and nothing says to hold off.
    pub fn wants_accept(&self, now: Instant) -> bool {
        self.backlog && self.retry_at.map_or(true, |t| now >= t)
    }

    /// Drop clients idle past `IDLE`; returns the earliest time one could expire.
    pub fn expire(&mut self, reg: &Registry, now: Instant) -> Option<Instant> {
        let stale: Vec<Token> = self
            .clients
            .iter()
            .filter(|(_, c)| now >= c.deadline())
            .map(|(t, _)| *t)
            .collect();
        for t in stale {
            self.close(reg, t);
        }
        let idle = self.clients.values().map(Client::deadline).min();
        match (idle, self.retry_at.filter(|_| self.backlog)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }
}

/// glibc's allocator keeps freed heap pages (and raises its mmap threshold after
/// large frees, so the next large bodies land on the heap too); without this, a
/// burst of big requests would stay resident long after the peers left.
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free pages of the allocator's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// A quarter of the descriptor limit per listener (at least 8, at most
/// `MAX_CONNS`): clients cannot take the descriptors jobs need for their pipes.
fn conn_cap() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0
        || lim.rlim_cur == libc::RLIM_INFINITY
    {
        return MAX_CONNS;
    }
    usize::try_from(lim.rlim_cur / 4)
        .unwrap_or(MAX_CONNS)
        .clamp(8, MAX_CONNS)
}

fn deregister_stream(reg: &Registry, s: &mut Stream) {
    let _ = match s {
        Stream::Unix(s) => reg.deregister(s),
        Stream::Tcp(s) => reg.deregister(s),
    };
}
