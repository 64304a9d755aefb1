//! The load generator's hot path: one thread per job, each owning an io_uring
//! and a few queues ([`Driver`]s: NVMe/TCP queues in [`tcp`], file queues in
//! [`local`]), with no locks and no allocation per command.
//!
//! A job's loop, [`run_job`], only collects events and lets the drivers
//! decide:
//!
//! ```text
//!   +--> wait (io_uring_enter: submit what the drivers queued, wait for >= 1
//!   |          completion or a time-out; or just submit, when busy-polling)
//!   |    now = Instant::now()          (one clock read per batch)
//!   |    for each completion: driver.complete(kind, slot, result)
//!   |    for each driver: driver.pump()  (issue commands into free slots,
//!   |          gather a send, arm a receive)
//!   +--- until the end time (or the --size budget), then drain
//! ```
//!
//! Invariants:
//! - every command's latency is `completion batch time - issue batch time`;
//!   only completions inside the measured window are recorded;
//! - a buffer named by an operation in the ring stays alive until that
//!   operation's completion: on the way out the drivers are shut down (their
//!   sockets shut) and the ring drained; if draining fails the drivers are
//!   leaked rather than freed;
//! - the loop is bounded after the end: outstanding commands get
//!   [`DRAIN_LIMIT`] to complete, then the run fails with
//!   [`EngineError::Stuck`].

pub mod buf;
mod error;
pub mod local;
pub mod run;
pub mod setup;
pub mod tcp;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use io_uring::{IoUring, squeue, types};

pub use error::EngineError;

use crate::cpu;
use crate::rate::TokenBucket;
use crate::stats::{Dir, Stats};
use crate::workload::VerifyMap;

/// How long outstanding commands may take to complete after the end.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(10);
/// Longest sleep in the kernel, so that the end time and the stop flag are
/// noticed even when nothing completes.
const MAX_WAIT: Duration = Duration::from_millis(100);
/// With `--busy-poll` in local mode, the job yields its core after this many empty looks at
/// the ring (each one a system call, so about every 5–10 µs).
const YIELD_EVERY: u32 = 16;

/// What a completion belongs to: the kind of operation, in `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum OpKind {
    /// A socket receive.
    Recv = 1,
    /// A socket send.
    Send = 2,
    /// A file read or write of a slot.
    Io = 3,
}

/// `user_data` of an operation: queue index in the job, kind, slot.
pub fn token(queue: u32, kind: OpKind, slot: u16) -> u64 {
    u64::from(queue) << 32 | (kind as u64) << 16 | u64::from(slot)
}

/// The parts of a `user_data`.
pub fn untoken(data: u64) -> (u32, u8, u16) {
    ((data >> 32) as u32, (data >> 16) as u8, data as u16)
}

/// A job's io_uring.
pub struct Ring {
    ring: IoUring,
}

impl Ring {
    /// A ring of at least `entries` submission entries, created on the
    /// calling thread (which must be the one that uses it: single issuer).
    pub fn new(entries: u32) -> Result<Ring, EngineError> {
        let entries = entries.clamp(8, 4096).next_power_of_two();
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_coop_taskrun()
            .setup_cqsize(entries * 4)
            .build(entries)
            .or_else(|_| IoUring::new(entries))
            .map_err(EngineError::Ring)?;
        Ok(Ring { ring })
    }

    /// The ring, to register buffers and files.
    pub fn inner(&self) -> &IoUring {
        &self.ring
    }

    /// Queues `entry`, submitting first when the submission queue is full.
    ///
    /// # Safety
    /// Every buffer, iovec and msghdr `entry` points at must stay valid (and
    /// not be touched by Rust code in a conflicting way) until the entry's
    /// completion has been reaped.
    pub unsafe fn push(&mut self, entry: &squeue::Entry) -> Result<(), EngineError> {
        loop {
            // SAFETY: the caller guarantees the entry's memory outlives it.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return Ok(());
            }
            self.ring.submit().map_err(EngineError::Ring)?;
        }
    }

    /// Submits what is queued and waits up to `timeout` for one completion
    /// (zero: do not wait).
    fn submit_and_wait(&mut self, timeout: Duration) -> Result<(), EngineError> {
        let result = if timeout.is_zero() {
            self.ring.submit()
        } else {
            let ts = types::Timespec::from(timeout);
            let args = types::SubmitArgs::new().timespec(&ts);
            self.ring.submitter().submit_with_args(1, &args)
        };
        match result {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) => Ok(()),
            Err(e) => Err(EngineError::Ring(e)),
        }
    }
}

/// What a job's queues share during one batch of events.
pub struct Ctx<'a> {
    /// Time of this batch.
    pub now: Instant,
    /// Whether new commands may be issued (before the end, no stop asked).
    pub issuing: bool,
    measuring: bool,
    second: usize,
    stats: &'a mut Stats,
    bucket: Option<&'a mut TokenBucket>,
    /// The verify map, when verifying.
    pub verify: Option<&'a VerifyMap>,
    /// Commands completed (ramp included), for the progress line.
    pub completed: u64,
    /// Bytes those moved.
    pub bytes: u64,
}

impl Ctx<'_> {
    /// Whether one more command may be issued now (takes a rate token).
    #[inline]
    pub fn may_issue(&mut self) -> bool {
        self.issuing && self.bucket.as_deref_mut().is_none_or(|b| b.take(self.now))
    }

    /// A command issued at `issued` completed now.
    #[inline]
    pub fn record(&mut self, issued: Instant, dir: Dir, bytes: u64) {
        self.completed += 1;
        self.bytes += bytes;
        if self.measuring {
            let latency = self.now.saturating_duration_since(issued);
            self.stats.record(self.second, dir, bytes, latency.as_nanos() as u64);
        }
    }

    /// Counts a read whose data was checked.
    #[inline]
    pub fn verified_read(&mut self) {
        if self.measuring {
            self.stats.verified_reads += 1;
        }
    }
}

/// A queue driven by a job's ring.
pub trait Driver {
    /// An operation of this queue completed.
    fn complete(&mut self, kind: u8, slot: u16, res: i32, ctx: &mut Ctx<'_>) -> Result<(), EngineError>;
    /// Issues what it can and queues its socket or file operations.
    fn pump(&mut self, ctx: &mut Ctx<'_>, ring: &mut Ring) -> Result<(), EngineError>;
    /// Commands issued and not completed.
    fn outstanding(&self) -> usize;
    /// Whether its `--size` budget is spent.
    fn exhausted(&self) -> bool;
    /// Operations in the ring that name its memory.
    fn kernel_ops(&self) -> usize;
    /// Makes its in-flight operations finish soon (shuts its socket down);
    /// afterwards it queues nothing more.
    fn shutdown(&mut self);
    /// Whether its operations may run on io-wq workers (file I/O the kernel cannot start
    /// without blocking), which share the job's CPUs: a busy-polling job then yields now
    /// and then. Socket operations complete inline or from a poll, so a network queue
    /// never needs it.
    const WORKERS: bool = false;
}

/// Progress a job publishes for the main thread, on its own cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Progress {
    /// Commands completed so far, ramp included.
    pub ios: AtomicU64,
    /// Bytes those moved.
    pub bytes: AtomicU64,
    /// The job has finished (or failed).
    pub done: AtomicBool,
}

/// When a run measures.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// When the ramp ends and measuring starts.
    pub measure_from: Instant,
    /// When issuing stops (`None`: when the `--size` budget is spent).
    pub end: Option<Instant>,
}

/// What a job is told besides its queues.
pub struct JobPlan {
    /// The run's clock.
    pub clock: Clock,
    /// This job's share of `--rate-iops`.
    pub rate_iops: Option<u64>,
    /// Burst of its token bucket.
    pub burst: u64,
    /// The verify map.
    pub verify: Option<Arc<VerifyMap>>,
    /// Where it publishes progress.
    pub progress: Arc<Progress>,
    /// Set by anyone to end the run early (another job failed, Ctrl-C).
    pub stop: Arc<AtomicBool>,
    /// Spin instead of sleeping in the kernel.
    pub busy_poll: bool,
    /// Seconds of series to preallocate.
    pub seconds: usize,
}

/// What a job measured.
#[derive(Debug)]
pub struct JobResult {
    /// Its statistics.
    pub stats: Stats,
    /// Its thread's CPU time inside the measured window.
    pub cpu: Duration,
    /// The measured window as this job saw it.
    pub window: Duration,
}

/// Runs one job to its end: see the module documentation.
pub fn run_job<D: Driver>(mut drivers: Vec<D>, mut ring: Ring, plan: &JobPlan) -> Result<JobResult, EngineError> {
    let result = job_loop(&mut drivers, &mut ring, plan);
    plan.progress.done.store(true, Ordering::Release);
    if result.is_err() {
        plan.stop.store(true, Ordering::Release);
    }
    let drained = drain(&mut drivers, &mut ring);
    if drained.is_err() {
        // Operations may still name the drivers' buffers: never free them.
        std::mem::forget(drivers);
        std::mem::forget(ring);
    }
    match (result, drained) {
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(e),
        (Ok(r), Ok(())) => Ok(r),
    }
}

fn job_loop<D: Driver>(drivers: &mut [D], ring: &mut Ring, plan: &JobPlan) -> Result<JobResult, EngineError> {
    let clock = plan.clock;
    let mut stats = Stats::new(plan.seconds);
    let start = Instant::now();
    let mut bucket = plan.rate_iops.map(|rate| TokenBucket::new(rate, plan.burst, start));
    let mut cpu_from: Option<(Duration, Instant)> = None;
    let mut cpu_to: Option<(Duration, Instant)> = None;
    let (mut completed, mut bytes) = (0u64, 0u64);
    let mut now = start;
    let mut empty_polls: u32 = 0;
    loop {
        let stopped = plan.stop.load(Ordering::Relaxed);
        let before_end = clock.end.is_none_or(|end| now < end);
        let issuing = before_end && !stopped;
        if cpu_from.is_none() && now >= clock.measure_from {
            cpu_from = Some((cpu::thread_cpu(), now));
        }
        if cpu_to.is_none() && !before_end {
            cpu_to = Some((cpu::thread_cpu(), now));
        }
        let measuring = now >= clock.measure_from && before_end;
        let second = if measuring { now.duration_since(clock.measure_from).as_secs() as usize } else { 0 };
        {
            let mut ctx = Ctx {
                now,
                issuing,
                measuring,
                second,
                stats: &mut stats,
                bucket: bucket.as_mut(),
                verify: plan.verify.as_deref(),
                completed,
                bytes,
            };
            for driver in drivers.iter_mut() {
                driver.pump(&mut ctx, ring)?;
            }
            completed = ctx.completed;
            bytes = ctx.bytes;
        }
        plan.progress.ios.store(completed, Ordering::Relaxed);
        plan.progress.bytes.store(bytes, Ordering::Relaxed);
        let outstanding: usize = drivers.iter().map(|d| d.outstanding()).sum();
        let all_spent = drivers.iter().all(|d| d.exhausted());
        if outstanding == 0 && (!issuing || all_spent) {
            break;
        }
        if !issuing {
            let since = clock.end.unwrap_or(start).max(start);
            if stopped || now.saturating_duration_since(since) > DRAIN_LIMIT {
                if stopped {
                    break;
                }
                return Err(EngineError::Stuck { outstanding, secs: DRAIN_LIMIT.as_secs() });
            }
        }
        let timeout = if plan.busy_poll {
            Duration::ZERO
        } else {
            let mut t = MAX_WAIT;
            if issuing {
                if let Some(end) = clock.end {
                    t = t.min(end.saturating_duration_since(now));
                }
                if let Some(b) = bucket.as_ref() {
                    t = t.min(b.wait(now));
                }
                if now < clock.measure_from {
                    t = t.min(clock.measure_from - now);
                }
            }
            t.max(Duration::from_micros(1))
        };
        ring.submit_and_wait(timeout)?;
        now = Instant::now();
        let measuring = now >= clock.measure_from && clock.end.is_none_or(|end| now <= end);
        let second = if measuring { now.duration_since(clock.measure_from).as_secs() as usize } else { 0 };
        let mut ctx = Ctx {
            now,
            issuing,
            measuring,
            second,
            stats: &mut stats,
            bucket: bucket.as_mut(),
            verify: plan.verify.as_deref(),
            completed,
            bytes,
        };
        // The completion queue is reaped whole: what the kernel finished
        // while we handle these shows up in the next batch.
        let mut cq = ring.ring.completion();
        cq.sync();
        let mut reaped = 0;
        for cqe in &mut cq {
            reaped += 1;
            let (queue, kind, slot) = untoken(cqe.user_data());
            drivers[queue as usize].complete(kind, slot, cqe.result(), &mut ctx)?;
        }
        completed = ctx.completed;
        bytes = ctx.bytes;
        // Busy polling local I/O: now and then give the core away while nothing completes, so
        // that the io-wq workers running what the kernel could not start inline (tmpfs, a
        // page-cache miss), which share this thread's CPUs, are not kept waiting.
        if D::WORKERS && plan.busy_poll && reaped == 0 && outstanding > 0 {
            empty_polls = empty_polls.wrapping_add(1);
            if empty_polls.is_multiple_of(YIELD_EVERY) {
                std::thread::yield_now();
            }
        }
    }
    let end = Instant::now();
    let (cpu0, t0) = cpu_from.unwrap_or((cpu::thread_cpu(), end));
    let (cpu1, t1) = cpu_to.unwrap_or((cpu::thread_cpu(), end));
    let window = t1.saturating_duration_since(t0);
    // Rounded: a window a hair over N seconds must not add an empty second.
    stats.finish(window.as_secs_f64().round() as usize);
    Ok(JobResult { stats, cpu: cpu1.saturating_sub(cpu0), window })
}

/// Shuts every driver down and reaps until nothing of theirs is in the ring.
fn drain<D: Driver>(drivers: &mut [D], ring: &mut Ring) -> Result<(), EngineError> {
    for driver in drivers.iter_mut() {
        driver.shutdown();
    }
    let deadline = Instant::now() + DRAIN_LIMIT;
    let mut sink_stats = Stats::new(0);
    while drivers.iter().map(|d| d.kernel_ops()).sum::<usize>() > 0 {
        if Instant::now() > deadline {
            return Err(EngineError::Stuck {
                outstanding: drivers.iter().map(|d| d.kernel_ops()).sum(),
                secs: DRAIN_LIMIT.as_secs(),
            });
        }
        ring.submit_and_wait(MAX_WAIT)?;
        let mut ctx = Ctx {
            now: Instant::now(),
            issuing: false,
            measuring: false,
            second: 0,
            stats: &mut sink_stats,
            bucket: None,
            verify: None,
            completed: 0,
            bytes: 0,
        };
        let mut cq = ring.ring.completion();
        cq.sync();
        for cqe in &mut cq {
            let (queue, kind, slot) = untoken(cqe.user_data());
            // Errors after shutdown are expected (reset sockets); only the
            // bookkeeping of what is in flight matters here.
            let _ = drivers[queue as usize].complete(kind, slot, cqe.result(), &mut ctx);
        }
    }
    Ok(())
}

/// An `io::Error` from a negative io_uring result.
pub fn errno(res: i32) -> io::Error {
    io::Error::from_raw_os_error(-res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        let t = token(7, OpKind::Send, 513);
        assert_eq!(untoken(t), (7, OpKind::Send as u8, 513));
        assert_eq!(untoken(token(u32::MAX, OpKind::Io, u16::MAX)), (u32::MAX, 3, u16::MAX));
    }
}
