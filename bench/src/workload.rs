//! What a run does, independent of where it sends the commands: the access
//! pattern, sizes, depth, duration, verification; and the per-queue generator
//! that turns it into a stream of (direction, offset) pairs.
//!
//! Offsets are counted in *units* of `bs` bytes from `offset`: every command
//! is `bs` long and `bs`-aligned within the range, so a unit index names a
//! command's data exactly and the verify map can keep one bit per unit.
//!
//! Invariants:
//! - a [`Workload`] that [`Workload::check`] accepted has `bs > 0`, a range
//!   of at least one unit, `1 <= iodepth`, `1 <= queues`, `1 <= jobs`;
//! - a random queue draws units over the whole range; a sequential queue
//!   walks its own contiguous share of it (queues never overlap), wrapping;
//! - [`Generator::next`] never allocates and returns `None` once its byte
//!   budget (`--size`) is spent;
//! - the verify map only ever goes from "not written" to "written": every
//!   write of a unit carries the same pattern (same seed, same LBA), so a
//!   unit marked written reads back that pattern whatever writes race with
//!   the read, and a unit not yet marked is not checked. A read is checked
//!   only if its unit was marked when the read was *issued* (a read issued
//!   before the first write of its unit completed may see the old data).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::rng::Rng;
use crate::stats::Dir;

/// The access pattern (`--rw`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    /// Sequential reads.
    Read,
    /// Sequential writes.
    Write,
    /// Random reads.
    Randread,
    /// Random writes.
    Randwrite,
    /// Random reads and writes, `--rwmixread` percent reads.
    Randrw,
}

impl Pattern {
    /// Whether offsets are drawn at random.
    pub fn is_random(self) -> bool {
        matches!(self, Pattern::Randread | Pattern::Randwrite | Pattern::Randrw)
    }
}

/// A run's workload, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Workload {
    /// Access pattern.
    pub rw: Pattern,
    /// Percent of reads in `randrw` (100 for reads, 0 for writes).
    pub read_pct: u32,
    /// Bytes per command.
    pub bs: u32,
    /// Commands outstanding per queue.
    pub iodepth: u32,
    /// I/O queues per controller (in `local` mode: in all).
    pub queues: u32,
    /// Threads, each with its own io_uring; queues are spread over them.
    pub jobs: u32,
    /// Measured time (after the ramp); `None` with `size`.
    #[serde(serialize_with = "opt_secs")]
    pub runtime: Option<Duration>,
    /// Bytes to transfer in all, across queues, instead of a time.
    pub size: Option<u64>,
    /// Time at the start excluded from the statistics.
    #[serde(serialize_with = "secs")]
    pub ramp: Duration,
    /// Commands per second in all, or no limit.
    pub rate_iops: Option<u64>,
    /// First byte of the range.
    pub offset: u64,
    /// Bytes in the range (filled in from the namespace or file when not given).
    pub range: u64,
    /// Writes carry the pattern, reads check it.
    pub verify: bool,
    /// With `verify`: take every unit as already written with this seed (a
    /// read-only verify pass after a write run).
    pub assume_written: bool,
    /// Seed of the offsets and of the verify pattern.
    pub seed: u64,
    /// Spin on the completion queue instead of sleeping in the kernel.
    pub busy_poll: bool,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn opt_secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

/// Why a workload cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadError {
    /// A zero where at least one is needed.
    #[error("--{0} must be at least 1")]
    Zero(&'static str),
    /// `--rwmixread` over 100.
    #[error("--rwmixread {0} is over 100")]
    MixOver100(u32),
    /// `bs` is not a multiple of the block size.
    #[error("--bs {bs} is not a multiple of the {block} byte block size")]
    BsNotBlocks {
        /// Bytes per command.
        bs: u32,
        /// Block size of the namespace or file.
        block: u32,
    },
    /// `bs` over what one command may move.
    #[error("--bs {bs} is over the controller's largest transfer ({max} bytes, MDTS)")]
    BsOverMdts {
        /// Bytes per command.
        bs: u32,
        /// The controller's limit.
        max: u64,
    },
    /// `bs` over 65536 blocks (the NLB field).
    #[error("--bs {0} is over 65536 blocks")]
    BsOverNlb(u32),
    /// Offset not aligned.
    #[error("--offset {offset} is not a multiple of --bs {bs}")]
    OffsetUnaligned {
        /// First byte.
        offset: u64,
        /// Bytes per command.
        bs: u32,
    },
    /// The range leaves the namespace or file.
    #[error("--offset {offset} + --range {range} is past the end ({capacity} bytes)")]
    PastEnd {
        /// First byte.
        offset: u64,
        /// Bytes in the range.
        range: u64,
        /// Namespace or file size.
        capacity: u64,
    },
    /// Fewer bytes than one command.
    #[error("the range holds no whole --bs {bs} command ({range} bytes)")]
    RangeTooSmall {
        /// Bytes in the range.
        range: u64,
        /// Bytes per command.
        bs: u32,
    },
    /// Both or neither of runtime and size.
    #[error("give --runtime or --size, not both")]
    RuntimeAndSize,
    /// A verify run that checks nothing.
    #[error(
        "--verify with a read-only workload checks nothing; write first, then read with --assume-written and the same --seed"
    )]
    VerifyWithoutWrites,
    /// The queue depth is over what the controller allows.
    #[error("--iodepth {qd} is over the controller's queue size ({max} entries, CAP.MQES + 1)")]
    DepthOverMqes {
        /// Asked for.
        qd: u32,
        /// Allowed.
        max: u32,
    },
}

impl Workload {
    /// Checks the parts that do not depend on the device.
    pub fn check(&self) -> Result<(), WorkloadError> {
        for (name, value) in [("bs", self.bs), ("iodepth", self.iodepth), ("queues", self.queues), ("jobs", self.jobs)]
        {
            if value == 0 {
                return Err(WorkloadError::Zero(name));
            }
        }
        if self.rate_iops == Some(0) {
            return Err(WorkloadError::Zero("rate-iops"));
        }
        if self.read_pct > 100 {
            return Err(WorkloadError::MixOver100(self.read_pct));
        }
        if self.runtime.is_some() == self.size.is_some() {
            return Err(WorkloadError::RuntimeAndSize);
        }
        if self.verify && self.read_pct == 100 && !self.assume_written {
            return Err(WorkloadError::VerifyWithoutWrites);
        }
        if !self.offset.is_multiple_of(u64::from(self.bs)) {
            return Err(WorkloadError::OffsetUnaligned { offset: self.offset, bs: self.bs });
        }
        Ok(())
    }

    /// Checks the workload against a device of `capacity` bytes in blocks
    /// of `block` bytes, filling in the range when it was not given (0).
    pub fn fit(&mut self, capacity: u64, block: u32) -> Result<(), WorkloadError> {
        if !self.bs.is_multiple_of(block) {
            return Err(WorkloadError::BsNotBlocks { bs: self.bs, block });
        }
        if self.bs / block > 65536 {
            return Err(WorkloadError::BsOverNlb(self.bs));
        }
        if self.range == 0 {
            self.range = capacity.saturating_sub(self.offset);
        }
        if self.offset.checked_add(self.range).is_none_or(|end| end > capacity) {
            return Err(WorkloadError::PastEnd { offset: self.offset, range: self.range, capacity });
        }
        if self.units() == 0 {
            return Err(WorkloadError::RangeTooSmall { range: self.range, bs: self.bs });
        }
        Ok(())
    }

    /// Whole commands in the range.
    pub fn units(&self) -> u64 {
        self.range / u64::from(self.bs)
    }
}

/// One queue's stream of commands.
#[derive(Debug, Clone)]
pub struct Generator {
    rng: Rng,
    random: bool,
    read_pct: u32,
    /// Units of the whole range (random) or of this queue's share (sequential).
    units: u64,
    /// First unit of this queue's share (0 for random).
    first: u64,
    next_seq: u64,
    /// Commands left to issue under `--size`.
    budget: Option<u64>,
}

impl Generator {
    /// The generator of queue `queue` out of `queues` in all.
    pub fn new(workload: &Workload, queue: u32, queues: u32) -> Generator {
        assert!(queue < queues, "queue {queue} of {queues}");
        let total = workload.units();
        let (first, units) = if workload.rw.is_random() {
            (0, total)
        } else {
            // Contiguous shares; the first `total % queues` get one more.
            let (base, extra) = (total / u64::from(queues), total % u64::from(queues));
            let q = u64::from(queue);
            (q * base + q.min(extra), base + u64::from(q < extra))
        };
        let budget = workload.size.map(|size| {
            let commands = size / u64::from(workload.bs);
            let (base, extra) = (commands / u64::from(queues), commands % u64::from(queues));
            base + u64::from(u64::from(queue) < extra)
        });
        Generator {
            rng: Rng::new(workload.seed, u64::from(queue)),
            random: workload.rw.is_random(),
            read_pct: workload.read_pct,
            units,
            first,
            next_seq: 0,
            budget,
        }
    }

    /// The next command: its direction and unit (from the start of the
    /// range), or `None` when the budget is spent (or this sequential queue
    /// got an empty share).
    #[inline]
    pub fn next_command(&mut self) -> Option<(Dir, u64)> {
        if self.units == 0 {
            return None;
        }
        if let Some(budget) = self.budget.as_mut() {
            *budget = budget.checked_sub(1)?;
        }
        let unit = if self.random {
            self.rng.below(self.units)
        } else {
            let unit = self.next_seq;
            self.next_seq = if unit + 1 == self.units { 0 } else { unit + 1 };
            unit
        };
        let dir = match self.read_pct {
            100 => Dir::Read,
            0 => Dir::Write,
            pct => {
                if self.rng.below(100) < u64::from(pct) {
                    Dir::Read
                } else {
                    Dir::Write
                }
            }
        };
        Some((dir, self.first + unit))
    }

    /// Whether a `--size` budget is spent.
    pub fn exhausted(&self) -> bool {
        self.budget == Some(0) || self.units == 0
    }
}

/// Which units hold the verify pattern, shared by every job of a run.
#[derive(Debug)]
pub struct VerifyMap {
    bits: Box<[AtomicU64]>,
    seed: u64,
    block: u32,
}

impl VerifyMap {
    /// A map of `units` units, all unwritten (or all written).
    pub fn new(units: u64, all_written: bool, seed: u64, block: u32) -> VerifyMap {
        let words = units.div_ceil(64) as usize;
        let fill = if all_written { u64::MAX } else { 0 };
        VerifyMap { bits: (0..words).map(|_| AtomicU64::new(fill)).collect(), seed, block }
    }

    /// The pattern's seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The pattern's block size (the device's LBA size).
    pub fn block(&self) -> u32 {
        self.block
    }

    /// A write of `unit` completed.
    #[inline]
    pub fn mark(&self, unit: u64) {
        self.bits[(unit / 64) as usize].fetch_or(1 << (unit % 64), Ordering::Release);
    }

    /// Whether a write of `unit` completed before now.
    #[inline]
    pub fn is_written(&self, unit: u64) -> bool {
        self.bits[(unit / 64) as usize].load(Ordering::Acquire) & (1 << (unit % 64)) != 0
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn workload(rw: Pattern) -> Workload {
        Workload {
            rw,
            read_pct: match rw {
                Pattern::Read | Pattern::Randread => 100,
                Pattern::Write | Pattern::Randwrite => 0,
                Pattern::Randrw => 50,
            },
            bs: 4096,
            iodepth: 4,
            queues: 1,
            jobs: 1,
            runtime: Some(Duration::from_secs(1)),
            size: None,
            ramp: Duration::ZERO,
            rate_iops: None,
            offset: 0,
            range: 0,
            verify: false,
            assume_written: false,
            seed: 1,
            busy_poll: false,
        }
    }

    #[test]
    fn sequential_shares_cover_the_range_once() {
        let mut w = workload(Pattern::Read);
        w.fit(4096 * 10, 512).unwrap();
        let mut seen = Vec::new();
        for q in 0..3 {
            let mut g = Generator::new(&w, q, 3);
            let share = if q == 0 { 4 } else { 3 };
            let units: Vec<u64> = (0..share).map(|_| g.next_command().unwrap().1).collect();
            assert_eq!(g.next_command().unwrap().1, units[0], "wraps within its share");
            seen.extend(units);
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn random_units_stay_in_range_and_mix_follows_the_percentage() {
        let mut w = workload(Pattern::Randrw);
        w.read_pct = 70;
        w.offset = 4096 * 8;
        w.fit(4096 * 1000, 4096).unwrap();
        assert_eq!(w.units(), 992);
        let mut g = Generator::new(&w, 0, 1);
        let mut reads = 0;
        for _ in 0..100_000 {
            let (dir, unit) = g.next_command().unwrap();
            assert!(unit < 992);
            reads += u32::from(dir == Dir::Read);
        }
        assert!((69_000..=71_000).contains(&reads), "{reads}");
    }

    #[test]
    fn size_budget_is_split_over_queues() {
        let mut w = workload(Pattern::Randwrite);
        w.runtime = None;
        w.size = Some(4096 * 7);
        w.fit(1 << 20, 512).unwrap();
        let counts: Vec<usize> = (0..2)
            .map(|q| {
                let mut g = Generator::new(&w, q, 2);
                std::iter::from_fn(|| g.next_command()).count()
            })
            .collect();
        assert_eq!(counts, [4, 3]);
    }

    #[test]
    fn checks() {
        let mut w = workload(Pattern::Read);
        assert_eq!(w.check(), Ok(()));
        w.verify = true;
        assert_eq!(w.check(), Err(WorkloadError::VerifyWithoutWrites));
        w.assume_written = true;
        assert_eq!(w.check(), Ok(()));
        w.iodepth = 0;
        assert_eq!(w.check(), Err(WorkloadError::Zero("iodepth")));
        let mut w = workload(Pattern::Randrw);
        w.bs = 4096;
        assert_eq!(w.clone().fit(1 << 20, 4096 * 3), Err(WorkloadError::BsNotBlocks { bs: 4096, block: 12288 }));
        w.offset = 1 << 20;
        assert!(matches!(w.clone().fit(1 << 20, 512), Err(WorkloadError::RangeTooSmall { .. })));
        w.range = 4096;
        assert!(matches!(w.fit(1 << 20, 512), Err(WorkloadError::PastEnd { .. })));
    }

    #[test]
    fn verify_map_marks() {
        let map = VerifyMap::new(130, false, 9, 512);
        assert!(!map.is_written(129));
        map.mark(129);
        assert!(map.is_written(129));
        assert!(!map.is_written(128));
        assert!(VerifyMap::new(3, true, 9, 512).is_written(2));
    }
}
