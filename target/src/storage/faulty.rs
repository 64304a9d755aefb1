//! A device that fails on purpose, for testing crash safety: it wraps sparse memory and can
//! cut the power at the N-th write after K bytes (tearing the sector that was being written:
//! its tail keeps the old bytes or turns to garbage), model a volatile write cache (writes not
//! yet flushed survive a crash whole, partly or not at all, sector by sector and in any
//! order), and fail reads, writes, discards or flushes with `EIO`.
//!
//! Invariants: reads always see every write that returned (the cache is coherent); what
//! survives [`FaultyDevice::crash`] is the durable image plus some sectors of the writes made
//! since the last successful flush, never anything else; once the power is cut every call
//! fails until the test takes the crash image. Writes, write-zeroes and discards all count as
//! writes (they share one index).

use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use super::device::{Device, MemDevice, Sparse, check_range};

/// Where the power goes: during the write with index `write_index` (0-based, counted over the
/// device's life), after its first `after_bytes` bytes reached the medium.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    pub write_index: u64,
    pub after_bytes: u64,
    pub tear: Tear,
}

/// What becomes of the rest of the sector the cut falls in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tear {
    /// It keeps its old bytes.
    KeepOld,
    /// It holds garbage.
    Garbage,
}

/// What a crash does to writes still in the volatile cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CachePolicy {
    /// All of them reached the medium.
    KeepAll,
    /// None did.
    DropAll,
    /// Each sector of each of them did or did not, chosen by a generator seeded here.
    Random(u64),
}

/// See the module documentation. Clones share the same device.
#[derive(Debug, Clone)]
pub struct FaultyDevice {
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    size_bytes: u64,
    sector_bytes: u32,
    /// What reads see.
    view: Sparse,
    /// What a crash keeps for sure.
    durable: Sparse,
    /// Writes since the last flush, in order (only with a volatile cache).
    pending: Vec<Pending>,
    volatile: bool,
    writes: u64,
    flushes: u64,
    write_lengths: Vec<u64>,
    cut: Option<Cut>,
    dead: bool,
    fail_write: Option<u64>,
    fail_flush: Option<u64>,
    fail_reads: bool,
    fail_discards: bool,
}

#[derive(Debug, Clone)]
enum Data {
    Bytes(Vec<u8>),
    Zeroes(u64),
}

impl Data {
    fn len(&self) -> u64 {
        match self {
            Data::Bytes(b) => b.len() as u64,
            Data::Zeroes(n) => *n,
        }
    }

    /// Bytes `from..to` of this data.
    fn slice(&self, from: u64, to: u64) -> Data {
        match self {
            Data::Bytes(b) => Data::Bytes(b[from as usize..to as usize].to_vec()),
            Data::Zeroes(_) => Data::Zeroes(to - from),
        }
    }

    fn apply(&self, image: &mut Sparse, offset: u64) {
        match self {
            Data::Bytes(b) => image.write(b, offset),
            Data::Zeroes(n) => image.zero(offset, *n),
        }
    }
}

#[derive(Debug, Clone)]
struct Pending {
    offset: u64,
    data: Data,
}

fn eio(why: &str) -> io::Error {
    io::Error::other(format!("injected fault: {why}"))
}

/// xorshift64*: a deterministic generator for garbage bytes and random cache outcomes.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

impl FaultyDevice {
    /// A device that starts with `image`'s contents (all durable). With `volatile_cache`,
    /// writes are durable only once flushed.
    pub fn new(image: &MemDevice, volatile_cache: bool) -> FaultyDevice {
        let data = image.sparse();
        let state = State {
            size_bytes: image.size_bytes(),
            sector_bytes: image.sector_bytes(),
            view: data.clone(),
            durable: data,
            pending: Vec::new(),
            volatile: volatile_cache,
            writes: 0,
            flushes: 0,
            write_lengths: Vec::new(),
            cut: None,
            dead: false,
            fail_write: None,
            fail_flush: None,
            fail_reads: false,
            fail_discards: false,
        };
        FaultyDevice { state: Arc::new(Mutex::new(state)) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Arms a power cut.
    pub fn cut(&self, cut: Cut) {
        self.lock().cut = Some(cut);
    }

    /// The write with this index fails with `EIO` and writes nothing (the device lives on).
    pub fn fail_write(&self, index: u64) {
        self.lock().fail_write = Some(index);
    }

    /// The flush with this index (0-based) fails with `EIO`; what it should have made durable
    /// stays in the cache.
    pub fn fail_flush(&self, index: u64) {
        self.lock().fail_flush = Some(index);
    }

    pub fn fail_reads(&self, fail: bool) {
        self.lock().fail_reads = fail;
    }

    pub fn fail_discards(&self, fail: bool) {
        self.lock().fail_discards = fail;
    }

    /// Writes so far: the index the next write will have.
    pub fn writes(&self) -> u64 {
        self.lock().writes
    }

    /// Flushes so far.
    pub fn flushes(&self) -> u64 {
        self.lock().flushes
    }

    /// The length of every write so far, by index.
    pub fn write_lengths(&self) -> Vec<u64> {
        self.lock().write_lengths.clone()
    }

    /// Whether the power was cut.
    pub fn is_dead(&self) -> bool {
        self.lock().dead
    }

    /// What the medium holds after a crash now: the durable image plus what `policy` lets
    /// through of the writes still cached.
    pub fn crash(&self, policy: CachePolicy) -> MemDevice {
        let s = self.lock();
        let mut image = s.durable.clone();
        let sector = u64::from(s.sector_bytes);
        match policy {
            CachePolicy::DropAll => {}
            CachePolicy::KeepAll => s.pending.iter().for_each(|p| p.data.apply(&mut image, p.offset)),
            CachePolicy::Random(seed) => {
                let mut rng = Rng::new(seed);
                for p in &s.pending {
                    let end = p.offset + p.data.len();
                    let mut pos = p.offset;
                    while pos < end {
                        let piece_end = ((pos / sector + 1) * sector).min(end);
                        if rng.next() & 1 == 1 {
                            p.data.slice(pos - p.offset, piece_end - p.offset).apply(&mut image, pos);
                        }
                        pos = piece_end;
                    }
                }
            }
        }
        MemDevice::from_sparse(s.size_bytes, s.sector_bytes, image)
    }

    fn mutate(&self, offset: u64, data: Data, is_discard: bool) -> io::Result<()> {
        let mut s = self.lock();
        if s.dead {
            return Err(eio("the power is off"));
        }
        let len = data.len();
        check_range(s.size_bytes, offset, len)?;
        let index = s.writes;
        s.writes += 1;
        s.write_lengths.push(len);
        let Some(cut) = s.cut.filter(|c| c.write_index == index) else {
            if s.fail_write == Some(index) || (is_discard && s.fail_discards) {
                return Err(eio("write failed"));
            }
            s.apply(offset, data);
            return Ok(());
        };
        let written = cut.after_bytes.min(len);
        s.apply(offset, data.slice(0, written));
        let sector = u64::from(s.sector_bytes);
        let torn_at = offset + written;
        if written < len && !torn_at.is_multiple_of(sector) && cut.tear == Tear::Garbage {
            let torn_end = ((torn_at / sector + 1) * sector).min(offset + len);
            let mut rng = Rng::new(index ^ torn_at.rotate_left(17));
            let garbage: Vec<u8> = (torn_at..torn_end).map(|_| rng.next() as u8).collect();
            s.apply(torn_at, Data::Bytes(garbage));
        }
        s.dead = true;
        Err(eio("power cut during a write"))
    }
}

impl State {
    fn apply(&mut self, offset: u64, data: Data) {
        data.apply(&mut self.view, offset);
        if self.volatile {
            self.pending.push(Pending { offset, data });
        } else {
            data.apply(&mut self.durable, offset);
        }
    }
}

impl Device for FaultyDevice {
    fn size_bytes(&self) -> u64 {
        self.lock().size_bytes
    }

    fn sector_bytes(&self) -> u32 {
        self.lock().sector_bytes
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let s = self.lock();
        if s.dead {
            return Err(eio("the power is off"));
        }
        if s.fail_reads {
            return Err(eio("read failed"));
        }
        check_range(s.size_bytes, offset, buf.len() as u64)?;
        s.view.read(buf, offset);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.mutate(offset, Data::Bytes(buf.to_vec()), false)
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        self.mutate(offset, Data::Zeroes(len), false)
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.mutate(offset, Data::Zeroes(len), true)
    }

    fn flush(&self) -> io::Result<()> {
        let mut s = self.lock();
        if s.dead {
            return Err(eio("the power is off"));
        }
        let index = s.flushes;
        s.flushes += 1;
        if s.fail_flush == Some(index) {
            return Err(eio("flush failed"));
        }
        let pending = std::mem::take(&mut s.pending);
        for p in pending {
            p.data.apply(&mut s.durable, p.offset);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(dev: &dyn Device, offset: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        dev.read_at(&mut buf, offset).unwrap();
        buf
    }

    #[test]
    fn a_cut_keeps_a_prefix_and_kills_the_device() {
        let dev = FaultyDevice::new(&MemDevice::new(1 << 20, 512), false);
        dev.write_at(&[1; 1024], 0).unwrap();
        dev.cut(Cut { write_index: 1, after_bytes: 700, tear: Tear::KeepOld });
        assert!(dev.write_at(&[2; 1024], 0).is_err());
        assert!(dev.is_dead());
        assert!(dev.flush().is_err() && dev.write_at(&[3], 0).is_err());
        let image = dev.crash(CachePolicy::DropAll);
        assert_eq!(read(&image, 0, 1024), [vec![2; 700], vec![1; 324]].concat());
        assert_eq!(dev.write_lengths(), vec![1024, 1024], "calls after the cut are not writes");
    }

    #[test]
    fn a_torn_sector_may_hold_garbage() {
        let dev = FaultyDevice::new(&MemDevice::new(1 << 20, 512), false);
        dev.cut(Cut { write_index: 0, after_bytes: 100, tear: Tear::Garbage });
        assert!(dev.write_at(&[9; 1024], 0).is_err());
        let image = read(&dev.crash(CachePolicy::DropAll), 0, 1024);
        assert_eq!(image[..100], [9; 100]);
        assert!(image[100..512].iter().any(|&b| b != 0 && b != 9), "garbage in the torn sector");
        assert!(image[512..].iter().all(|&b| b == 0), "the next sector is untouched");
    }

    #[test]
    fn the_volatile_cache_loses_what_was_not_flushed() {
        let dev = FaultyDevice::new(&MemDevice::new(1 << 20, 512), true);
        dev.write_at(&[1; 512], 0).unwrap();
        dev.flush().unwrap();
        dev.write_at(&[2; 4096], 0).unwrap();
        assert_eq!(read(&dev, 0, 4), vec![2; 4], "reads see the cache");
        assert_eq!(read(&dev.crash(CachePolicy::DropAll), 0, 512), vec![1; 512]);
        assert_eq!(read(&dev.crash(CachePolicy::KeepAll), 0, 4096), vec![2; 4096]);
        let mixed = read(&dev.crash(CachePolicy::Random(7)), 0, 4096);
        let kept = mixed.chunks(512).filter(|s| s.iter().all(|&b| b == 2)).count();
        assert!(mixed.chunks(512).all(|s| s.iter().all(|&b| b == s[0])), "sectors survive whole or not at all");
        assert!(kept > 0 && kept < 8, "seed 7 keeps some sectors and loses others: kept {kept}");
        dev.flush().unwrap();
        assert_eq!(read(&dev.crash(CachePolicy::DropAll), 0, 4096), vec![2; 4096]);
    }

    #[test]
    fn injected_errors() {
        let dev = FaultyDevice::new(&MemDevice::new(1 << 20, 512), true);
        dev.fail_write(1);
        dev.fail_flush(0);
        dev.write_at(&[1; 10], 0).unwrap();
        assert!(dev.write_at(&[2; 10], 0).is_err());
        assert_eq!(read(&dev, 0, 10), vec![1; 10], "a failed write wrote nothing");
        assert!(dev.flush().is_err());
        dev.flush().unwrap();
        dev.fail_discards(true);
        assert!(dev.discard(0, 4096).is_err());
        dev.fail_reads(true);
        assert!(dev.read_at(&mut [0; 1], 0).is_err());
        assert!(!dev.is_dead());
    }
}
