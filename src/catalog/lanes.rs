//! Watch lanes: one thread per watch, with a small stack, that runs that
//! watch's queries one at a time. A blocking query may stay open for minutes;
//! since each watch has its own lane, nothing else ever waits behind it.
//!
//! A lane is dropped (abandoned) when its watch goes away or looks at something
//! else: its channel closes, an answer it may still send is ignored by
//! `Catalog::try_recv`, and its thread ends when the request it is in ends. So
//! that repeated reloads cannot pile threads up behind slow polls, at most
//! `MAX_ABANDONED` abandoned lanes may still be running before a new one is
//! refused (the watch then backs off and tries again).

use super::consul::ConsulClient;
use super::etcd::EtcdClient;
use super::{CatalogError, Observation, Reply, Target, THREAD_STACK};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

/// Abandoned lanes still in a request beyond which no new lane is started.
const MAX_ABANDONED: usize = 32;

/// How a lane reads the catalog: its own copy of the client.
pub(super) enum Reader {
    Consul(ConsulClient),
    Etcd(EtcdClient),
}

impl Reader {
    fn observe(
        &mut self,
        target: &Target,
        index: u64,
        wait: Option<Duration>,
    ) -> Result<Observation, CatalogError> {
        match self {
            Reader::Consul(c) => c.observe(target, index, wait),
            // `dc` is refused by the config loader when etcd is the catalog.
            Reader::Etcd(c) => c.observe(target, index, wait),
        }
    }
}

impl Clone for Reader {
    fn clone(&self) -> Reader {
        match self {
            Reader::Consul(c) => Reader::Consul(c.clone()),
            Reader::Etcd(c) => Reader::Etcd(c.reader()),
        }
    }
}

struct Query {
    index: u64,
    wait: Option<Duration>,
}

struct Lane {
    id: u64,
    target: Target,
    queries: Sender<Query>,
}

pub(super) struct Lanes {
    reader: Reader,
    replies: Sender<Reply>,
    waker: Arc<mio::Waker>,
    /// By watch index.
    lanes: Vec<Option<Lane>>,
    next_id: u64,
    /// Lane threads alive, abandoned ones included.
    alive: Arc<AtomicUsize>,
}

/// Counts a lane thread as alive for as long as it exists.
struct Alive(Arc<AtomicUsize>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Lanes {
    pub(super) fn new(reader: Reader, replies: Sender<Reply>, waker: Arc<mio::Waker>) -> Lanes {
        Lanes {
            reader,
            replies,
            waker,
            lanes: Vec::new(),
            next_id: 0,
            alive: Arc::default(),
        }
    }

    pub(super) fn observe(
        &mut self,
        watch: usize,
        target: &Target,
        index: u64,
        wait: Option<Duration>,
    ) -> Result<(), CatalogError> {
        let same = matches!(self.lanes.get(watch), Some(Some(l)) if l.target == *target);
        if !same {
            self.drop_lane(watch);
            let lane = self.spawn(watch, target)?;
            if self.lanes.len() <= watch {
                self.lanes.resize_with(watch + 1, || None);
            }
            self.lanes[watch] = Some(lane);
        }
        let sent = match self.lanes.get(watch) {
            Some(Some(lane)) => lane.queries.send(Query { index, wait }).is_ok(),
            _ => false,
        };
        if !sent {
            self.drop_lane(watch);
            return Err(CatalogError::Spawn("watch thread ended".into()));
        }
        Ok(())
    }

    pub(super) fn is_current(&self, watch: usize, lane: u64) -> bool {
        matches!(self.lanes.get(watch), Some(Some(l)) if l.id == lane)
    }

    pub(super) fn abandon_all(&mut self) {
        self.lanes.clear();
    }

    pub(super) fn alive(&self) -> usize {
        self.alive.load(Ordering::SeqCst)
    }

    fn drop_lane(&mut self, watch: usize) {
        if let Some(slot) = self.lanes.get_mut(watch) {
            *slot = None;
        }
    }

    fn spawn(&mut self, watch: usize, target: &Target) -> Result<Lane, CatalogError> {
        let current = self.lanes.iter().flatten().count();
        if self.alive() >= current + MAX_ABANDONED {
            return Err(CatalogError::Spawn(format!(
                "{MAX_ABANDONED} abandoned watch queries are still open"
            )));
        }
        self.next_id += 1;
        let id = self.next_id;
        let (tx, rx) = mpsc::channel();
        let reader = self.reader.clone();
        let replies = self.replies.clone();
        let waker = self.waker.clone();
        let t = target.clone();
        self.alive.fetch_add(1, Ordering::SeqCst);
        let alive = Alive(self.alive.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("watch-{watch}"))
            .stack_size(THREAD_STACK)
            .spawn(move || {
                let _alive = alive;
                run(reader, t, watch, id, rx, replies, waker);
            });
        // On failure the closure, and with it `alive`, was dropped: not counted.
        spawned.map_err(|e| CatalogError::Spawn(e.to_string()))?;
        Ok(Lane {
            id,
            target: target.clone(),
            queries: tx,
        })
    }
}

/// A lane's life: each query in turn, each answer sent back with a wake-up,
/// until the lane is dropped.
fn run(
    mut reader: Reader,
    target: Target,
    watch: usize,
    lane: u64,
    queries: Receiver<Query>,
    replies: Sender<Reply>,
    waker: Arc<mio::Waker>,
) {
    while let Ok(q) = queries.recv() {
        let result = reader
            .observe(&target, q.index, q.wait)
            .map_err(|e| e.to_string());
        if replies
            .send(Reply::Observed {
                watch,
                lane,
                result,
            })
            .is_err()
        {
            return;
        }
        if let Err(e) = waker.wake() {
            log::debug!("watch lane: cannot wake the loop: {e}");
        }
    }
}
