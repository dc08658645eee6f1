//! The loop's side of native health checks: one non-blocking socket per job
//! with an http/tcp check, its poll token and its timeout timer. An HTTP
//! connection the server keeps open is kept for the next probe (watched while
//! idle, so a server that closes it is noticed); a probe that finds a kept
//! connection dead before any answer retries once on a fresh one. What is sent
//! and how the answer is judged is `crate::health`; what the result means for
//! the job is `jobs::Job::probe_done`.

use super::{Runtime, TimerKey};
use crate::config::types::TlsConfig;
use crate::health::{self, Exchange, Finish, Outcome, Target};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use std::collections::HashMap;
use std::io::{self, Read};
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
    /// Runs over a kept connection (which the server may have dropped).
    reused: bool,
}

/// A kept HTTP connection between probes, with its TLS session.
struct Idle {
    stream: TcpStream,
    tls: Option<Box<rustls::ClientConnection>>,
}

#[derive(Default)]
pub struct Probes {
    live: HashMap<usize, Probe>,
    idle: HashMap<usize, Idle>,
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

    /// Start a probe: on the kept connection if there is one, else open a
    /// socket and start connecting; errors are the failure reason.
    fn open(&mut self, reg: &Registry, job: usize, target: &Target) -> Result<(), String> {
        if let (Target::Http(h), Some(idle)) = (target, self.idle.remove(&job)) {
            self.live.insert(
                job,
                Probe {
                    stream: idle.stream,
                    connected: true,
                    exchange: Some(Exchange::http(h, idle.tls)),
                    reused: true,
                },
            );
            return Ok(());
        }
        let exchange = match target {
            Target::Tcp(_) => None,
            Target::Http(h) => {
                let tls = if h.https {
                    let config = self.tls_config(&h.tls)?;
                    let name = health::server_name(h).map_err(|e| e.to_string())?;
                    Some(Box::new(
                        rustls::ClientConnection::new(config, name)
                            .map_err(|e| format!("tls: {e}"))?,
                    ))
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
                reused: false,
            },
        );
        Ok(())
    }

    /// Move the probe of `job` along; `Some` when it is over.
    fn advance(&mut self, job: usize) -> Option<Finish> {
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
            None => Some(Finish {
                outcome: Outcome::Pass("connected".into()),
                reusable: false,
            }),
            Some(x) => x.drive(&mut p.stream),
        }
    }

    /// The probe is over: keep its connection for the next one or close it.
    fn release(&mut self, reg: &Registry, job: usize, reusable: bool) {
        let Some(mut p) = self.live.remove(&job) else {
            return;
        };
        match p.exchange.as_mut() {
            Some(x) if reusable => {
                let tls = x.take_tls();
                self.idle.insert(
                    job,
                    Idle {
                        stream: p.stream,
                        tls,
                    },
                );
            }
            _ => {
                let _ = reg.deregister(&mut p.stream);
            }
        }
    }

    /// A kept connection became readable while idle: the server closed it
    /// (or sent something unasked for), so it is dropped.
    fn check_idle(&mut self, reg: &Registry, job: usize) {
        let Some(idle) = self.idle.get_mut(&job) else {
            return;
        };
        let mut byte = [0u8; 1];
        match idle.stream.read(&mut byte) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            _ => {
                if let Some(mut i) = self.idle.remove(&job) {
                    let _ = reg.deregister(&mut i.stream);
                }
            }
        }
    }

    /// Drop the probe in flight and the kept connection of `job`.
    fn close(&mut self, reg: &Registry, job: usize) {
        self.release(reg, job, false);
        if let Some(mut i) = self.idle.remove(&job) {
            let _ = reg.deregister(&mut i.stream);
        }
    }

    pub fn close_all(&mut self, reg: &Registry) {
        let jobs: Vec<usize> = self.live.keys().chain(self.idle.keys()).copied().collect();
        for j in jobs {
            self.close(reg, j);
        }
    }
}

fn connect_failed(s: &TcpStream, e: &io::Error) -> Finish {
    // The peer address is what we connected to, when the socket still knows.
    let to = s.peer_addr().map(|a| format!(" {a}")).unwrap_or_default();
    Finish {
        outcome: Outcome::Fail(format!("connect{to}: {}", health::short_error(e))),
        reusable: false,
    }
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
                // A kept connection is writable already and will not say so
                // again: send now.
                match self.probes.advance(job) {
                    Some(f) => self.probe_over(job, f, &target),
                    None => None,
                }
            }
            Err(reason) => Some(self.probe_result(job, &target, Outcome::Fail(reason))),
        }
    }

    /// What to do with a finished exchange: retry a dead kept connection on a
    /// fresh one, else keep or close the socket and report.
    fn probe_over(
        &mut self,
        job: usize,
        f: Finish,
        target: &Target,
    ) -> Option<Vec<crate::jobs::Action>> {
        let stale = self
            .probes
            .live
            .get(&job)
            .is_some_and(|p| p.reused && p.exchange.as_ref().is_some_and(|x| x.stale()));
        if stale && matches!(f.outcome, Outcome::Fail(_)) {
            self.probes.release(self.poll.registry(), job, false);
            let retry = self.probes.open(self.poll.registry(), job, target);
            return match retry {
                Ok(()) => None, // the timeout timer still runs
                Err(reason) => {
                    self.timers.cancel(TimerKey::Probe(job));
                    Some(self.probe_result(job, target, Outcome::Fail(reason)))
                }
            };
        }
        self.timers.cancel(TimerKey::Probe(job));
        self.probes.release(self.poll.registry(), job, f.reusable);
        Some(self.probe_result(job, target, f.outcome))
    }

    pub(super) fn on_probe_ready(&mut self, t: Token) {
        let job = t.0 - PROBE_BASE;
        if !self.probes.live.contains_key(&job) {
            self.probes.check_idle(self.poll.registry(), job);
            return;
        }
        if let Some(f) = self.probes.advance(job) {
            let Some((target, _)) = self.probe_target(job) else {
                self.stop_probe(job);
                return;
            };
            if let Some(acts) = self.probe_over(job, f, &target) {
                self.execute(job, acts, Instant::now());
            }
        }
    }

    /// `health.timeout` passed with the probe still in flight.
    pub(super) fn probe_timed_out(&mut self, job: usize) {
        let Some((_, timeout)) = self.probe_target(job) else {
            return;
        };
        let outcome = match self.probes.live.get(&job) {
            // The status came; only the rest of the response is late.
            Some(Probe {
                exchange: Some(x), ..
            }) if x.verdict().is_some() => x.verdict().cloned(),
            Some(p) => {
                let phase = if p.connected {
                    "waiting for the response"
                } else {
                    "connecting"
                };
                Some(Outcome::Fail(format!(
                    "timeout after {} ({phase})",
                    crate::config::duration::format(timeout)
                )))
            }
            None => None,
        };
        if let Some(o) = outcome {
            self.end_probe(job, o);
        }
    }

    /// The job is ending: drop its probe (without a result) and its kept
    /// connection.
    pub(super) fn stop_probe(&mut self, job: usize) {
        self.timers.cancel(TimerKey::Probe(job));
        self.probes.close(self.poll.registry(), job);
    }

    fn end_probe(&mut self, job: usize, outcome: Outcome) {
        self.timers.cancel(TimerKey::Probe(job));
        self.probes.release(self.poll.registry(), job, false);
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
        let world = super::world_at(Instant::now(), &self.completed, self.cfg.stop_timeout);
        self.jobs[job].probe_done(error, &world)
    }
}
