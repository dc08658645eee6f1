//! Child stdout/stderr pipes: registered with the poll, read in bounded slices so a
//! child that floods its output cannot starve the loop, split into lines and logged
//! with the job name and the pid of the run that wrote them.

use crate::config::types::LogLevel;
use crate::logging;
use crate::process::LineSplitter;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};

/// Bytes read from one pipe per turn of the loop.
const BUDGET: usize = 64 * 1024;

#[derive(Clone, Debug)]
pub enum Label {
    Job(String),
    Check(String),
    /// A 2.x sensor's stdout: lines are values for this metric, not log lines.
    Sensor {
        metric: String,
    },
}

struct Pipe {
    file: File,
    label: Label,
    pid: i32,
    lines: LineSplitter,
}

pub struct Pipes {
    next: usize,
    first: usize,
    open: HashMap<Token, Pipe>,
    /// Pipes that may still have data (mio is edge-triggered: we must come back).
    ready: VecDeque<Token>,
    buf: Vec<u8>,
    sensor_values: Vec<(String, String)>,
}

impl Pipes {
    pub fn new(first: usize) -> Pipes {
        Pipes {
            next: first,
            first,
            open: HashMap::new(),
            ready: VecDeque::new(),
            buf: vec![0; BUDGET],
            sensor_values: Vec::new(),
        }
    }

    fn alloc(&mut self) -> Token {
        // Pipe tokens live in the upper half of the token space, so they never
        // collide with the connection tokens that count up from `first`.
        loop {
            self.next = self.next.wrapping_add(1);
            if self.next < self.first {
                self.next = self.first;
            }
            let t = Token((1usize << (usize::BITS - 2)) + self.next);
            if !self.open.contains_key(&t) {
                return t;
            }
        }
    }

    pub fn owns(&self, t: Token) -> bool {
        self.open.contains_key(&t)
    }

    pub fn add(&mut self, reg: &Registry, fd: OwnedFd, label: Label, pid: i32) -> io::Result<()> {
        let token = self.alloc();
        reg.register(&mut SourceFd(&fd.as_raw_fd()), token, Interest::READABLE)?;
        self.open.insert(
            token,
            Pipe {
                file: File::from(fd),
                label,
                pid,
                lines: LineSplitter::default(),
            },
        );
        // Data may already be waiting; edge-triggered polls would not tell us.
        self.ready.push_back(token);
        Ok(())
    }

    pub fn mark_ready(&mut self, t: Token) {
        if self.open.contains_key(&t) && !self.ready.contains(&t) {
            self.ready.push_back(t);
        }
    }

    pub fn has_backlog(&self) -> bool {
        !self.ready.is_empty()
    }

    /// One bounded read for every pipe that was ready.
    pub fn service(&mut self) {
        let n = self.ready.len();
        for _ in 0..n {
            let Some(t) = self.ready.pop_front() else {
                break;
            };
            match self.read_some(t) {
                ReadState::More => self.ready.push_back(t),
                ReadState::Drained => {}
                ReadState::Closed => self.close(t),
            }
        }
    }

    /// A process exited: log everything it left in its pipes now, so its output
    /// comes before its exit in the log. Stops at WouldBlock (a grandchild may
    /// still hold the pipe open).
    pub fn drain_pid(&mut self, pid: i32) {
        let tokens: Vec<Token> = self
            .open
            .iter()
            .filter(|(_, p)| p.pid == pid)
            .map(|(t, _)| *t)
            .collect();
        for t in tokens {
            for _ in 0..64 {
                match self.read_some(t) {
                    ReadState::More => continue,
                    ReadState::Drained => break,
                    ReadState::Closed => {
                        self.close(t);
                        break;
                    }
                }
            }
        }
    }

    fn read_some(&mut self, t: Token) -> ReadState {
        let Some(p) = self.open.get_mut(&t) else {
            return ReadState::Drained;
        };
        let mut lines = Vec::new();
        let state = loop {
            match p.file.read(&mut self.buf) {
                Ok(0) => {
                    p.lines.finish(&mut lines);
                    break ReadState::Closed;
                }
                Ok(n) => {
                    // One read per turn; the next turn (poll timeout 0) reads on
                    // until WouldBlock, so a flood shares the loop fairly.
                    p.lines.push(&self.buf[..n], &mut lines);
                    break ReadState::More;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break ReadState::Drained,
                Err(_) => {
                    p.lines.finish(&mut lines);
                    break ReadState::Closed;
                }
            }
        };
        for line in lines {
            match &p.label {
                Label::Job(j) => logging::emit(LogLevel::Info, Some(j), Some(p.pid as u32), &line),
                Label::Check(c) => {
                    logging::emit_check(LogLevel::Info, c, Some(p.pid as u32), &line)
                }
                Label::Sensor { metric } => {
                    let v = line.trim();
                    if !v.is_empty() {
                        self.sensor_values.push((metric.clone(), v.to_string()));
                    }
                }
            }
        }
        state
    }

    fn close(&mut self, t: Token) {
        if let Some(p) = self.open.remove(&t) {
            // Closing the fd removes it from epoll; nothing else holds it.
            drop(p);
        }
        self.ready.retain(|x| *x != t);
    }

    pub fn take_sensor_values(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.sensor_values)
    }

    pub fn close_all(&mut self, reg: &Registry) {
        for (_, p) in self.open.drain() {
            let _ = reg.deregister(&mut SourceFd(&p.file.as_raw_fd()));
        }
        self.ready.clear();
    }
}

enum ReadState {
    /// Budget used; there may be more.
    More,
    /// WouldBlock: wait for the next readiness event.
    Drained,
    Closed,
}
