//! The switch: state shared by the workers and the control plane, and the workers' lifecycle.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use arc_swap::ArcSwap;
use crossbeam_queue::ArrayQueue;

use crate::datapath::worker::Worker;
use crate::datapath::PollMode;
use crate::pool::{Frame, FramePool};
use crate::stats::{Counter, PerWorker, PortCounters, SwitchCounters};
use crate::table::affinity::AffinityTable;
use crate::table::conntrack::{Conntrack, Timeouts};
use crate::table::neigh::Neighbours;
use crate::table::services::ServiceTable;
use crate::table::{Fdb, PortTable};

/// Datapath settings.
#[derive(Debug, Clone)]
pub struct SwitchConfig {
    /// One worker per entry, pinned to that core (`None`: not pinned).
    pub cores: Vec<Option<usize>>,
    /// How idle workers wait.
    pub poll_mode: PollMode,
    /// FDB size bound.
    pub fdb_max: usize,
    /// FDB aging, seconds.
    pub fdb_aging_secs: u32,
    /// Frame buffers in the pool.
    pub pool_frames: usize,
    /// Bytes per frame buffer.
    pub frame_capacity: usize,
    /// Frames per rx burst.
    pub batch: usize,
    /// Frames each worker's inbound ring holds.
    pub ring_size: usize,
    /// Most ports the switch takes.
    pub max_ports: usize,
    /// Most service flows tracked.
    pub conntrack_max: usize,
    /// Conntrack idle timeouts.
    pub conntrack_timeouts: Timeouts,
    /// Most service flows one client address holds (0: no quota).
    pub conntrack_per_client: u32,
    /// Storm control of what each pod port floods.
    pub storm: crate::datapath::police::StormConfig,
    /// Most neighbour entries one port may hold.
    pub neigh_per_port: u32,
}

impl Default for SwitchConfig {
    fn default() -> Self {
        SwitchConfig {
            cores: vec![None],
            poll_mode: PollMode::Adaptive,
            fdb_max: 16384,
            fdb_aging_secs: crate::table::fdb::DEFAULT_AGING_SECS,
            pool_frames: 2048,
            frame_capacity: crate::pool::FRAME_CAPACITY,
            batch: 32,
            ring_size: 1024,
            max_ports: 4096,
            conntrack_max: 262_144,
            conntrack_timeouts: Timeouts::default(),
            conntrack_per_client: crate::table::conntrack::DEFAULT_PER_CLIENT,
            storm: Default::default(),
            neigh_per_port: crate::table::neigh::DEFAULT_PER_PORT,
        }
    }
}

/// A frame on its way to the worker that owns its egress port.
pub struct Handoff {
    /// Egress port.
    pub port: u16,
    /// The frame.
    pub frame: Frame,
}

/// One worker's inbound side, as other threads see it.
pub struct Lane {
    /// Frames handed over by other workers.
    pub inbox: ArrayQueue<Handoff>,
    /// Set while the worker sleeps in epoll; senders then wake it.
    pub sleeping: AtomicBool,
    /// Nanoseconds the worker spent in loop iterations that had work (for the busy
    /// fraction of `/metrics`); written once per such iteration by the worker only.
    pub busy_ns: Counter,
    /// [`Switch::now`] at the top of the worker's latest loop iteration (`/healthz`).
    pub heartbeat: AtomicU32,
    waker: mio::Waker,
}

impl Lane {
    /// Wakes the worker if it sleeps (or might be about to).
    pub fn wake(&self) {
        if self.sleeping.load(Ordering::SeqCst) {
            // A failed wake only delays the frame to the worker's next timeout.
            let _ = self.waker.wake();
        }
    }
}

/// The shared state.
pub struct Switch {
    /// The forwarding database.
    pub fdb: Fdb,
    /// Switch-wide counters, one slot per worker (`counters.at(worker)`), summed when read.
    pub counters: PerWorker<SwitchCounters>,
    /// The frame pool.
    pub pool: Arc<FramePool>,
    /// Per-worker inbound rings.
    pub lanes: Vec<Lane>,
    /// Settings.
    pub config: SwitchConfig,
    /// The service table (published by the control plane, read by the service stage).
    pub services: ArcSwap<ServiceTable>,
    /// Connection tracking of service flows.
    pub conntrack: Conntrack,
    /// Client-IP affinity pins.
    pub affinity: AffinityTable,
    /// Neighbours learned from ARP and NDP.
    pub neigh: Neighbours,
    table: ArcSwap<PortTable>,
    generation: AtomicU64,
    writer: Mutex<()>,
    stop: AtomicBool,
    start: Instant,
}

/// Why the switch could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// epoll/eventfd setup failed.
    #[error("creating a worker's poller: {0}")]
    Poll(std::io::Error),
    /// A worker thread could not be spawned.
    #[error("spawning a worker thread: {0}")]
    Spawn(std::io::Error),
}

/// Handles of the running workers.
pub struct Running {
    /// The switch.
    pub switch: Arc<Switch>,
    threads: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops the workers and waits for them.
    pub fn stop(self) {
        self.switch.stop.store(true, Ordering::SeqCst);
        for lane in &self.switch.lanes {
            let _ = lane.waker.wake();
        }
        for t in self.threads {
            let _ = t.join();
        }
        // Frames still on their way between workers go back to the pool.
        let mut local = crate::pool::LocalPool::new(self.switch.pool.clone(), 64);
        for lane in &self.switch.lanes {
            while let Some(h) = lane.inbox.pop() {
                local.put(h.frame);
            }
        }
    }
}

impl Switch {
    /// Allocates the pool and tables and starts one worker per configured core.
    pub fn start(config: SwitchConfig) -> Result<Running, StartError> {
        let pool = FramePool::new(config.pool_frames, config.frame_capacity);
        Switch::start_with_pool(config, pool)
    }

    /// Like [`Switch::start`], with a frame pool made elsewhere (the uplink's, in its UMEM).
    pub fn start_with_pool(config: SwitchConfig, pool: Arc<FramePool>) -> Result<Running, StartError> {
        let mut config = config;
        if config.cores.is_empty() {
            config.cores.push(None);
        }
        let mut polls = Vec::new();
        let mut lanes = Vec::new();
        for _ in &config.cores {
            let poll = mio::Poll::new().map_err(StartError::Poll)?;
            let waker = mio::Waker::new(poll.registry(), crate::datapath::worker::WAKE_TOKEN)
                .map_err(StartError::Poll)?;
            lanes.push(Lane {
                inbox: ArrayQueue::new(config.ring_size.max(1)),
                sleeping: AtomicBool::new(false),
                busy_ns: Counter::default(),
                heartbeat: AtomicU32::new(0),
                waker,
            });
            polls.push(poll);
        }
        let switch = Arc::new(Switch {
            fdb: Fdb::new(config.fdb_max, config.fdb_aging_secs),
            counters: PerWorker::new(config.cores.len()),
            pool,
            lanes,
            services: ArcSwap::from_pointee(ServiceTable::default()),
            conntrack: Conntrack::new(
                config.conntrack_max,
                config.conntrack_timeouts,
                config.conntrack_per_client,
            ),
            affinity: AffinityTable::new(config.conntrack_max),
            neigh: Neighbours::new(
                config.fdb_max,
                config.neigh_per_port,
                config.max_ports,
                config.fdb_aging_secs,
            ),
            table: ArcSwap::from_pointee(PortTable::default()),
            generation: AtomicU64::new(0),
            writer: Mutex::new(()),
            stop: AtomicBool::new(false),
            start: Instant::now(),
            config,
        });
        let mut threads = Vec::new();
        for (id, poll) in polls.into_iter().enumerate() {
            let core = switch.config.cores[id];
            let sw = switch.clone();
            let t = std::thread::Builder::new()
                .name(format!("tapway-w{id}"))
                .spawn(move || {
                    if let Some(core) = core {
                        if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                            tracing::warn!(worker = id, core, "could not pin worker to core");
                        }
                    }
                    Worker::new(id, sw, poll).run();
                })
                .map_err(StartError::Spawn)?;
            threads.push(t);
        }
        Ok(Running { switch, threads })
    }

    /// Seconds since start: the clock of FDB aging.
    pub fn now(&self) -> u32 {
        u32::try_from(self.start.elapsed().as_secs()).unwrap_or(u32::MAX)
    }

    /// Nanoseconds since start: the clock of rate limits.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Seconds since start.
    pub fn uptime_secs(&self) -> u64 {
        self.start.elapsed().as_secs()
    }

    /// Whether workers should exit.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// The current port table.
    pub fn ports(&self) -> Arc<PortTable> {
        self.table.load_full()
    }

    /// Bumped every time the port table changes.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Changes the port table: `f` gets the current table and returns the next one, which is
    /// published to the workers (writers are serialized; readers never wait).
    pub fn update<R>(&self, f: impl FnOnce(&PortTable) -> (PortTable, R)) -> R {
        let _guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let (next, r) = f(&self.table.load());
        self.table.store(Arc::new(next));
        self.generation.fetch_add(1, Ordering::AcqRel);
        for lane in &self.lanes {
            let _ = lane.waker.wake();
        }
        r
    }

    /// Counters for a new port: a slot for each worker.
    pub fn port_counters(&self) -> PortCounters {
        PortCounters::new(self.lanes.len())
    }

    /// The worker with the fewest ports, for a new port.
    pub fn least_loaded_worker(&self) -> usize {
        let table = self.ports();
        (0..self.lanes.len()).min_by_key(|w| table.iter().filter(|p| p.worker == *w).count()).unwrap_or(0)
    }
}
