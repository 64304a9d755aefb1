//! Crash tests of pool metadata. A scripted sequence of updates (create a pool, create, grow
//! and delete volumes, a deletion whose discard fails, a restart that finishes it, a forced
//! re-creation over a pool with volumes) runs on a [`FaultyDevice`]; for every write of every
//! update, the power is cut at several byte offsets inside it (sector boundaries, torn
//! sectors keeping old bytes or holding garbage), with a write-through device and with a
//! volatile cache that keeps all, none or a random subset of the unflushed sectors. Each
//! crash image is reopened and must show the whole table from before the update or from
//! after it (or no pool, for a pool creation), with no extent owned twice. Data checks ride
//! along: every extent of a live volume keeps the stamp written into it before the update,
//! and every extent that is free, or newly given to a volume, reads as zeroes.

use std::collections::HashSet;

use super::pool::Env;
use super::*;

const E: u64 = 1 << 20;
/// 31 data extents: 9..40.
const DEVICE_BYTES: u64 = 40 << 20;
const STAMP_BYTES: usize = 32;

#[derive(Debug, Clone, Copy)]
enum Step {
    /// Forced, so that it also runs over an existing pool.
    CreatePool,
    Create(&'static str, u64),
    Grow(&'static str, u64),
    Delete(&'static str),
    /// The discard fails: the volume stays `Deleting`.
    DeleteDiscardFails(&'static str),
    /// Open, which finishes what a failed deletion left.
    Reopen,
}

fn script() -> Vec<Step> {
    use Step::*;
    vec![
        CreatePool,
        Create("a", 3),
        Create("b", 4),
        Create("c", 2),
        Grow("a", 5),
        Delete("b"),
        Create("d", 6),
        Grow("c", 4),
        DeleteDiscardFails("a"),
        Reopen,
        Create("e", 16),
        Grow("d", 7),
        Delete("e"),
        CreatePool,
    ]
}

/// A pool state as a restart sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Observed {
    NoPool,
    Pool { id: PoolId, name: Name, generation: u64, volumes: Vec<Volume> },
}

impl Observed {
    fn volumes(&self) -> &[Volume] {
        match self {
            Observed::NoPool => &[],
            Observed::Pool { volumes, .. } => volumes,
        }
    }
}

fn stamp(volume: &Volume, logical_extent: u64) -> [u8; STAMP_BYTES] {
    let mut s = [0; STAMP_BYTES];
    s[..16].copy_from_slice(volume.id().get().as_bytes());
    s[16..24].copy_from_slice(&logical_extent.to_le_bytes());
    s[24..].copy_from_slice(b"STAMPED!");
    s
}

/// Where a stamp goes in each physical extent: its first and its last bytes.
fn stamp_offsets(physical_extent: u64) -> [u64; 2] {
    [physical_extent * E, (physical_extent + 1) * E - STAMP_BYTES as u64]
}

/// Writes each live volume's stamps into its extents: what a host would have written.
fn write_stamps(image: &MemDevice, volumes: &[Volume]) {
    for v in volumes.iter().filter(|v| v.state() == VolumeState::Ready) {
        for run in v.runs() {
            for i in 0..run.count {
                for offset in stamp_offsets(run.physical_start + i) {
                    image.write_at(&stamp(v, run.logical_start + i), offset).unwrap();
                }
            }
        }
    }
}

/// Opens a copy of `image` (which finishes deletions, as a restart would) and checks it: no
/// extent owned twice; stamps intact on the extents of `stamped` volumes that are still
/// there; zeroes everywhere else in the data area.
fn observe(image: &MemDevice, stamped: &[Volume]) -> Result<Observed, String> {
    let copy = image.snapshot();
    let pool = match Pool::open_in(Box::new(copy), Env::fixed(0)) {
        Ok(pool) => pool,
        Err(StorageError::NotAPool { .. } | StorageError::Corrupt(Corruption::LabelChecksum)) => {
            return Ok(Observed::NoPool);
        }
        Err(e) => return Err(format!("the pool does not open: {e}")),
    };
    let mut owned = HashSet::new();
    let info = pool.info();
    let first = info.device_bytes / E - info.data_extents;
    for v in pool.volumes() {
        if v.state() != VolumeState::Ready {
            return Err(format!("volume {} is left {:?}", v.name(), v.state()));
        }
        let before = stamped.iter().find(|s| s.id() == v.id());
        for run in v.runs() {
            for i in 0..run.count {
                let (logical, physical) = (run.logical_start + i, run.physical_start + i);
                if !owned.insert(physical) {
                    return Err(format!("extent {physical} is owned twice"));
                }
                let expected = match before {
                    Some(b) if logical < b.extents() => stamp(v, logical),
                    _ => [0; STAMP_BYTES],
                };
                for offset in stamp_offsets(physical) {
                    let mut got = [0; STAMP_BYTES];
                    pool.device().read_at(&mut got, offset).map_err(|e| e.to_string())?;
                    if got != expected {
                        return Err(format!(
                            "volume {} extent {logical} (physical {physical}) lost its data or holds stale data",
                            v.name()
                        ));
                    }
                }
            }
        }
    }
    for physical in (first..first + info.data_extents).filter(|p| !owned.contains(p)) {
        for offset in stamp_offsets(physical) {
            let mut got = [0; STAMP_BYTES];
            pool.device().read_at(&mut got, offset).map_err(|e| e.to_string())?;
            if got != [0; STAMP_BYTES] {
                return Err(format!("free extent {physical} was not discarded"));
            }
        }
    }
    Ok(Observed::Pool {
        id: pool.id(),
        name: pool.name().clone(),
        generation: pool.generation(),
        volumes: pool.volumes().to_vec(),
    })
}

/// Opens the pool for steps that work on an open pool (before any fault is armed).
fn prepare(step: Step, dev: &FaultyDevice, seed: u64) -> Option<Pool> {
    match step {
        Step::CreatePool | Step::Reopen => None,
        _ => Some(Pool::open_in(Box::new(dev.clone()), Env::fixed(seed)).expect("the image before a step opens")),
    }
}

fn apply(step: Step, pool: Option<Pool>, dev: &FaultyDevice, seed: u64) -> Result<(), StorageError> {
    let id = |pool: &Pool, name: &str| pool.volume_by_name(name).map(|v| v.id());
    match (step, pool) {
        (Step::CreatePool, None) => {
            let options = CreateOptions { force: true, ..CreateOptions::default() };
            Pool::create_in(Box::new(dev.clone()), "pool", &options, Env::fixed(seed)).map(drop)
        }
        (Step::Reopen, None) => Pool::open_in(Box::new(dev.clone()), Env::fixed(seed)).map(drop),
        (Step::Create(name, extents), Some(mut pool)) => pool.create_volume(name, extents * E, 4096).map(drop),
        (Step::Grow(name, extents), Some(mut pool)) => {
            let id = id(&pool, name)?;
            pool.grow_volume(id, extents * E).map(drop)
        }
        (Step::Delete(name), Some(mut pool)) => {
            let id = id(&pool, name)?;
            pool.delete_volume(id)
        }
        (Step::DeleteDiscardFails(name), Some(mut pool)) => {
            let id = id(&pool, name)?;
            dev.fail_discards(true);
            pool.delete_volume(id)
        }
        (step, _) => unreachable!("{step:?} is prepared by `prepare`"),
    }
}

/// Offsets inside a write of `len` bytes where the power goes.
fn cut_points(len: u64, sector: u64) -> Vec<u64> {
    let mut points = vec![0, 1, sector / 2, sector - 1, sector, sector + 1, 4095, 4096, 4097, len / 2, len - 1, len];
    points.retain(|&p| p <= len);
    points.sort_unstable();
    points.dedup();
    points
}

/// (volatile cache, what the crash does to it)
fn cache_models(seed: u64) -> [(bool, CachePolicy); 4] {
    [
        (false, CachePolicy::DropAll),
        (true, CachePolicy::DropAll),
        (true, CachePolicy::KeepAll),
        (true, CachePolicy::Random(seed)),
    ]
}

fn crash_at_every_write(sector_bytes: u32) {
    let sector = u64::from(sector_bytes);
    let mut image = MemDevice::new(DEVICE_BYTES, sector_bytes);
    // The volumes whose extents carry stamps in `image`.
    let mut stamped: Vec<Volume> = Vec::new();
    let mut crashes = 0;
    for (index, step) in script().into_iter().enumerate() {
        let seed = index as u64 + 1;
        let before = observe(&image, &stamped).unwrap_or_else(|e| panic!("before step {index} {step:?}: {e}"));

        // The update without faults: what "after" is, and which writes it makes.
        let dev = FaultyDevice::new(&image, false);
        let pool = prepare(step, &dev, seed);
        let base = dev.writes();
        let result = apply(step, pool, &dev, seed);
        assert_eq!(result.is_ok(), !matches!(step, Step::DeleteDiscardFails(_)), "step {index} {step:?}: {result:?}");
        let writes = dev.write_lengths()[base as usize..].to_vec();
        let after_image = dev.crash(CachePolicy::KeepAll);
        let after = observe(&after_image, &stamped).unwrap_or_else(|e| panic!("after step {index} {step:?}: {e}"));
        // A restart finishes deletions, so what it sees before and after a reopen is the same.
        if !matches!(step, Step::Reopen) {
            assert_ne!(before, after, "step {index} {step:?} changes the pool");
        }

        // An update that returned is durable: a crash dropping the whole cache keeps it.
        let dev = FaultyDevice::new(&image, true);
        let pool = prepare(step, &dev, seed);
        let _ = apply(step, pool, &dev, seed);
        let seen = observe(&dev.crash(CachePolicy::DropAll), &stamped).unwrap();
        assert_eq!(seen, after, "step {index} {step:?}: what returned was not durable");

        for (n, &len) in writes.iter().enumerate() {
            for after_bytes in cut_points(len, sector) {
                let tears: &[Tear] =
                    if after_bytes % sector == 0 { &[Tear::KeepOld] } else { &[Tear::KeepOld, Tear::Garbage] };
                for &tear in tears {
                    for (volatile, policy) in cache_models(seed * 1_000_003 + n as u64 * 1009 + after_bytes) {
                        let dev = FaultyDevice::new(&image, volatile);
                        let pool = prepare(step, &dev, seed);
                        dev.cut(Cut { write_index: dev.writes() + n as u64, after_bytes, tear });
                        let _ = apply(step, pool, &dev, seed);
                        assert!(dev.is_dead(), "step {index} {step:?}: write {n} was not reached");
                        let what = format!(
                            "step {index} {step:?}, write {n} of {len} bytes cut after {after_bytes} ({tear:?}), volatile cache {volatile} {policy:?}"
                        );
                        let seen = observe(&dev.crash(policy), &stamped).unwrap_or_else(|e| panic!("{what}: {e}"));
                        let no_pool_allowed = matches!(step, Step::CreatePool) && seen == Observed::NoPool;
                        assert!(
                            seen == before || seen == after || no_pool_allowed,
                            "{what}: neither the old state nor the new one: {seen:#?}"
                        );
                        crashes += 1;
                    }
                }
            }
        }
        write_stamps(&after_image, after.volumes());
        stamped = after.volumes().to_vec();
        image = after_image;
    }
    eprintln!("{crashes} crashes, each reopened and checked ({sector_bytes}-byte sectors)");
}

#[test]
fn metadata_survives_a_crash_at_every_write_512_byte_sectors() {
    crash_at_every_write(512);
}

#[test]
fn metadata_survives_a_crash_at_every_write_4096_byte_sectors() {
    crash_at_every_write(4096);
}

/// The script itself does what it says: fragmentation, multi-run volumes, a forced
/// re-creation over volumes.
#[test]
fn the_crash_script_covers_fragmented_volumes() {
    let mut image = MemDevice::new(DEVICE_BYTES, 512);
    let mut most_runs = 0;
    for (index, step) in script().into_iter().enumerate() {
        let dev = FaultyDevice::new(&image, false);
        let pool = prepare(step, &dev, index as u64 + 1);
        let _ = apply(step, pool, &dev, index as u64 + 1);
        image = dev.crash(CachePolicy::KeepAll);
        if let Ok(Observed::Pool { volumes, .. }) = observe(&image, &[]) {
            most_runs = most_runs.max(volumes.iter().map(|v| v.runs().len()).max().unwrap_or(0));
        }
    }
    assert!(most_runs >= 2, "some volume spans several runs");
}
