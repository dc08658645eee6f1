//! The loop's side of native health checks: one non-blocking socket per probe
//! in flight, its poll token and its timeout timer. What is sent and how the
//! answer is judged is `crate::health`; what the result means for the job is
//! `jobs::Job::probe_done`.

use super::{Runtime, TimerKey};
use crate::config::types::TlsConfig;
use crate::health::{self, Exchange, Outcome, Target};
use crate::jobs::World;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Probe tokens are `PROBE_BASE + job index`, above the connection tokens
/// and below the pipe tokens.
const PROBE_BASE: usize = 1 << (usize::BITS - 3);
const PROBE_SPAN: usize = 1 << 24;

/// At most this many distinct TLS set-ups are kept (reloads may change them).
const TLS_CACHE: usize = 32;

pub fn owns(t: Token) -> bool {
    t.0 >= PROBE_BASE && t.0 < PROBE_BASE + PROBE_SPAN
}

struct Probe {
    stream: TcpStream,
    connected: bool,
    /// `None` for a TCP check: connecting is the whole probe.
    exchange: Option<Exchange>,
}

#[derive(Default)]
pub struct Probes {
    live: HashMap<usize, Probe>,
    tls: Vec<(TlsConfig, Arc<rustls::ClientConfig>)>,
}

impl Probes {
    fn tls_config(&mut self, t: &TlsConfig) -> Result<Arc<rustls::ClientConfig>, String> {
        if let Some((_, c)) = self.tls.iter().find(|(k, _)| k == t) {
            return Ok(c.clone());
        }
        let c = health::tls_client_config(t).map_err(|e| e.to_string())?;
        if self.tls.len() >= TLS_CACHE {
            self.tls.remove(0);
        }
        self.tls.push((t.clone(), c.clone()));
        Ok(c)
    }

    /// Open the socket and start connecting; errors are the failure reason.
    fn open(&mut self, reg: &Registry, job: usize, target: &Target) -> Result<(), String> {
        let exchange = match target {
            Target::Tcp(_) => None,
            Target::Http(h) => {
                let tls = if h.https {
                    let config = self.tls_config(&h.tls)?;
                    let name = health::server_name(h).map_err(|e| e.to_string())?;
                    Some(
                        rustls::ClientConnection::new(config, name)
                            .map_err(|e| format!("tls: {e}"))?,
                    )
                } else {
                    None
                };
                Some(Exchange::http(h, tls))
            }
        };
        let addr = target.addr();
        let mut stream = TcpStream::connect(addr)
            .map_err(|e| format!("connect {addr}: {}", health::short_error(&e)))?;
        reg.register(
            &mut stream,
            Token(PROBE_BASE + job),
            Interest::READABLE | Interest::WRITABLE,
        )
        .map_err(|e| format!("cannot watch the socket: {e}"))?;
        self.live.insert(
            job,
            Probe {
                stream,
                connected: false,
                exchange,
            },
        );
        Ok(())
    }

    /// Move the probe of `job` along; `Some` when it is over.
    fn advance(&mut self, job: usize) -> Option<Outcome> {
        let p = self.live.get_mut(&job)?;
        if !p.connected {
            let addr = p.stream.peer_addr();
            match (p.stream.take_error(), addr) {
                (Ok(Some(e)), _) | (Err(e), _) => return Some(connect_failed(&p.stream, &e)),
                (Ok(None), Ok(_)) => p.connected = true,
                (Ok(None), Err(e)) if e.kind() == io::ErrorKind::NotConnected => return None,
                (Ok(None), Err(e)) => return Some(connect_failed(&p.stream, &e)),
            }
        }
        match &mut p.exchange {
            None => Some(Outcome::Pass("connected".into())),
            Some(x) => x.drive(&mut p.stream),
        }
    }

    fn close(&mut self, reg: &Registry, job: usize) -> Option<bool> {
        let mut p = self.live.remove(&job)?;
        let _ = reg.deregister(&mut p.stream);
        Some(p.connected)
    }

    pub fn close_all(&mut self, reg: &Registry) {
        let jobs: Vec<usize> = self.live.keys().copied().collect();
        for j in jobs {
            self.close(reg, j);
        }
    }
}

fn connect_failed(s: &TcpStream, e: &io::Error) -> Outcome {
    // The peer address is what we connected to, when the socket still knows.
    let to = s.peer_addr().map(|a| format!(" {a}")).unwrap_or_default();
    Outcome::Fail(format!("connect{to}: {}", health::short_error(e)))
}

impl Runtime {
    fn probe_target(&self, job: usize) -> Option<(Target, Duration)> {
        let h = self.jobs.get(job)?.cfg.health.as_ref()?;
        Some((h.native.clone()?, h.timeout))
    }

    /// Start the native check of `job`. A probe that fails before it gets
    /// going (no socket, bad TLS set-up) fails at once, like a check process
    /// that cannot start; the returned actions are the job's reaction.
    pub(super) fn start_probe(
        &mut self,
        job: usize,
        now: Instant,
    ) -> Option<Vec<crate::jobs::Action>> {
        let (target, timeout) = self.probe_target(job)?;
        self.jobs[job].probe_started();
        match self.probes.open(self.poll.registry(), job, &target) {
            Ok(()) => {
                self.timers.arm(TimerKey::Probe(job), now, timeout, false);
                None
            }
            Err(reason) => Some(self.probe_result(job, &target, Outcome::Fail(reason))),
        }
    }

    pub(super) fn on_probe_ready(&mut self, t: Token) {
        let job = t.0 - PROBE_BASE;
        if let Some(outcome) = self.probes.advance(job) {
            self.end_probe(job, outcome);
        }
    }

    /// `health.timeout` passed with the probe still in flight.
    pub(super) fn probe_timed_out(&mut self, job: usize) {
        let Some((_, timeout)) = self.probe_target(job) else {
            return;
        };
        let phase = match self.probes.live.get(&job) {
            Some(p) if p.connected => "waiting for the response",
            Some(_) => "connecting",
            None => return,
        };
        let reason = format!(
            "timeout after {} ({phase})",
            crate::config::duration::format(timeout)
        );
        self.end_probe(job, Outcome::Fail(reason));
    }

    /// The job is ending: drop its probe without a result.
    pub(super) fn stop_probe(&mut self, job: usize) {
        self.timers.cancel(TimerKey::Probe(job));
        self.probes.close(self.poll.registry(), job);
    }

    fn end_probe(&mut self, job: usize, outcome: Outcome) {
        self.stop_probe(job);
        let Some((target, _)) = self.probe_target(job) else {
            return;
        };
        let now = Instant::now();
        let acts = self.probe_result(job, &target, outcome);
        self.execute(job, acts, now);
    }

    /// Log the result (one line for a failure) and hand it to the job.
    fn probe_result(
        &mut self,
        job: usize,
        target: &Target,
        outcome: Outcome,
    ) -> Vec<crate::jobs::Action> {
        let name = self.jobs[job].check_name();
        let error = match outcome {
            Outcome::Pass(detail) => {
                log::debug!("{name}: {}: {detail}", target.describe());
                None
            }
            Outcome::Fail(reason) => {
                log::error!("{name}: {}: {reason}", target.describe());
                Some(reason)
            }
        };
        let world = World {
            now: Instant::now(),
            completed: &self.completed,
            stop_timeout: self.cfg.stop_timeout,
            wall_ms: crate::cron::wall_ms(),
        };
        self.jobs[job].probe_done(error, &world)
    }
}
