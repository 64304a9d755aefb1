//! The block device's own view of a run (`--disk`): requests it served, how
//! large they were after the block layer merged them, and how much of the
//! window it was busy, from its counters in `/sys/dev/block/MAJ:MIN/stat`.
//! A target and a local run can reach the same device with the same commands
//! and still hand it different requests; this is where that shows.
//!
//! Invariants: a device is named by what the operator knows (`vda`,
//! `/dev/vda`, or any file on it, resolved through the file's `st_dev`); a
//! file on no block device (tmpfs, procfs) is an error, never a silent zero;
//! figures are differences of two samples, so counters that wrapped or a
//! device that vanished give an error or zeroes, never a negative.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why `--disk` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// Neither a block device's name nor a path that exists.
    #[error("--disk {spec}: no block device of that name, and no such file ({error})")]
    NotFound {
        /// What was given.
        spec: String,
        /// Why the path failed.
        error: std::io::Error,
    },
    /// The file lives on no block device.
    #[error("--disk {spec}: it is on no block device (device {major}:{minor}; tmpfs and the like have none)")]
    NoBlockDevice {
        /// What was given.
        spec: String,
        /// Its device's major number.
        major: u32,
        /// Its minor number.
        minor: u32,
    },
    /// The counters could not be read or did not parse.
    #[error("{path}: {message}")]
    Stat {
        /// The counters' file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// A block device whose counters are sampled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// Its kernel name (`vda`, `nvme0n1p2`).
    pub name: String,
    /// Its counters' file.
    pub stat: PathBuf,
}

impl Disk {
    /// The device `spec` names: a name under `/sys/class/block`, a device node, or the
    /// device holding a file or directory.
    pub fn resolve(spec: &str) -> Result<Disk, DiskError> {
        Disk::resolve_in(Path::new("/sys"), spec)
    }

    fn resolve_in(sys: &Path, spec: &str) -> Result<Disk, DiskError> {
        if !spec.contains('/') && !spec.is_empty() {
            let stat = sys.join("class/block").join(spec).join("stat");
            if stat.is_file() {
                return Ok(Disk { name: spec.to_string(), stat });
            }
        }
        let meta = std::fs::metadata(spec).map_err(|error| DiskError::NotFound { spec: spec.into(), error })?;
        let dev = if meta.file_type().is_block_device() { meta.rdev() } else { meta.dev() };
        let (major, minor) = (libc::major(dev), libc::minor(dev));
        let dir = sys.join(format!("dev/block/{major}:{minor}"));
        let stat = dir.join("stat");
        if major == 0 || !stat.is_file() {
            return Err(DiskError::NoBlockDevice { spec: spec.into(), major, minor });
        }
        // The link's target ends with the kernel's name for the device.
        let name = std::fs::canonicalize(&dir)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| format!("{major}:{minor}"));
        Ok(Disk { name, stat })
    }

    /// Its counters now.
    pub fn sample(&self) -> Result<Counters, DiskError> {
        let err = |message: String| DiskError::Stat { path: self.stat.clone(), message };
        let text = std::fs::read_to_string(&self.stat).map_err(|e| err(e.to_string()))?;
        Counters::parse(&text).ok_or_else(|| err(format!("unexpected contents {:?}", text.trim())))
    }
}

/// The counters of a block device's `stat` file that a run's figures use
/// (Documentation/block/stat.rst): totals since the device appeared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Read requests completed.
    pub reads: u64,
    /// Reads merged into a request already queued.
    pub read_merges: u64,
    /// 512-byte sectors read.
    pub read_sectors: u64,
    /// Write requests completed.
    pub writes: u64,
    /// Writes merged into a request already queued.
    pub write_merges: u64,
    /// 512-byte sectors written.
    pub write_sectors: u64,
    /// Milliseconds with at least one request in flight.
    pub busy_ms: u64,
    /// Milliseconds of requests in flight, summed over requests.
    pub queue_ms: u64,
}

impl Counters {
    /// From the text of a `stat` file (11 fields at least; newer kernels add discards and
    /// flushes after them).
    pub fn parse(text: &str) -> Option<Counters> {
        let f: Vec<u64> = text.split_ascii_whitespace().map(str::parse).collect::<Result<_, _>>().ok()?;
        if f.len() < 11 {
            return None;
        }
        Some(Counters {
            reads: f[0],
            read_merges: f[1],
            read_sectors: f[2],
            writes: f[4],
            write_merges: f[5],
            write_sectors: f[6],
            busy_ms: f[9],
            queue_ms: f[10],
        })
    }
}

/// What the device did over a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskUse {
    /// Its kernel name.
    pub device: String,
    /// Read requests it completed per second.
    pub reads_per_s: f64,
    /// Write requests per second.
    pub writes_per_s: f64,
    /// Mean size of a read request, KiB (after merging).
    pub read_kib_per_request: f64,
    /// Mean size of a write request, KiB.
    pub write_kib_per_request: f64,
    /// Mean size of any request, KiB; none without requests.
    pub kib_per_request: Option<f64>,
    /// Commands merged into other requests (reads and writes).
    pub merged: u64,
    /// Percent of the window with a request in flight.
    pub busy_pct: f64,
    /// Mean requests in flight over the window.
    pub queue_depth: f64,
}

impl DiskUse {
    /// From samples `a` then `b`, `seconds` apart.
    pub fn between(device: &str, a: &Counters, b: &Counters, seconds: f64) -> DiskUse {
        let d = |x: u64, y: u64| y.saturating_sub(x);
        let (reads, writes) = (d(a.reads, b.reads), d(a.writes, b.writes));
        let (read_sectors, write_sectors) = (d(a.read_sectors, b.read_sectors), d(a.write_sectors, b.write_sectors));
        let per_s = |n: u64| if seconds > 0.0 { n as f64 / seconds } else { 0.0 };
        let kib = |sectors: u64, n: u64| if n > 0 { sectors as f64 / 2.0 / n as f64 } else { 0.0 };
        let ms = seconds * 1000.0;
        let share = |x: u64| if ms > 0.0 { x as f64 / ms } else { 0.0 };
        DiskUse {
            device: device.to_string(),
            reads_per_s: per_s(reads),
            writes_per_s: per_s(writes),
            read_kib_per_request: kib(read_sectors, reads),
            write_kib_per_request: kib(write_sectors, writes),
            kib_per_request: (reads + writes > 0).then(|| kib(read_sectors + write_sectors, reads + writes)),
            merged: d(a.read_merges, b.read_merges) + d(a.write_merges, b.write_merges),
            // io_ticks advance in jiffies: a window of a few seconds may read a hair over 100%.
            busy_pct: (100.0 * share(d(a.busy_ms, b.busy_ms))).min(100.0),
            queue_depth: share(d(a.queue_ms, b.queue_ms)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A Linux 6.x stat line: 17 fields (reads, merges, sectors, ticks; writes ...; in
    // flight, io_ticks, time in queue; discards ...; flushes ...).
    const LINE: &str = "   5618    84270 23011328     3950        2        0       16        1        0     3972     3951        0        0        0        0        0        0\n";

    #[test]
    fn parses_a_stat_line() {
        let c = Counters::parse(LINE).unwrap();
        assert_eq!((c.reads, c.read_merges, c.read_sectors), (5618, 84270, 23_011_328));
        assert_eq!((c.writes, c.write_merges, c.write_sectors), (2, 0, 16));
        assert_eq!((c.busy_ms, c.queue_ms), (3972, 3951));
        // The 11 fields of older kernels are enough; fewer or words are not.
        assert!(Counters::parse("1 2 3 4 5 6 7 8 9 10 11").is_some());
        assert!(Counters::parse("1 2 3 4 5 6 7 8 9 10").is_none());
        assert!(Counters::parse("1 2 3 x 5 6 7 8 9 10 11").is_none());
        assert!(Counters::parse("").is_none());
    }

    #[test]
    fn figures_over_a_window() {
        let a = Counters {
            reads: 100,
            read_merges: 10,
            read_sectors: 1000,
            busy_ms: 500,
            queue_ms: 700,
            ..Counters::default()
        };
        let b = Counters {
            reads: 100 + 5618,
            read_merges: 10 + 84270,
            read_sectors: 1000 + 5618 * 4096,
            writes: 4,
            write_sectors: 4 * 8,
            busy_ms: 500 + 2700,
            queue_ms: 700 + 8000,
            ..Counters::default()
        };
        let u = DiskUse::between("vda", &a, &b, 4.0);
        assert_eq!(u.device, "vda");
        assert!((u.reads_per_s - 1404.5).abs() < 1e-9);
        assert!((u.writes_per_s - 1.0).abs() < 1e-9);
        assert!((u.read_kib_per_request - 2048.0).abs() < 1e-9);
        assert!((u.write_kib_per_request - 4.0).abs() < 1e-9);
        // 5618 reads of 2048 KiB and 4 writes of 4 KiB.
        let all = (5618.0 * 2048.0 + 4.0 * 4.0) / 5622.0;
        assert!((u.kib_per_request.unwrap() - all).abs() < 1e-9);
        assert_eq!(u.merged, 84270);
        assert!((u.busy_pct - 67.5).abs() < 1e-9);
        assert!((u.queue_depth - 2.0).abs() < 1e-9);
        // No requests: sizes are zero, not NaN; a counter that went backwards is no negative.
        let idle = DiskUse::between("vda", &b, &a, 1.0);
        assert_eq!((idle.reads_per_s, idle.read_kib_per_request, idle.merged, idle.busy_pct), (0.0, 0.0, 0, 0.0));
        assert_eq!(idle.kib_per_request, None);
        assert_eq!(DiskUse::between("vda", &a, &a, 0.0).busy_pct, 0.0);
        // Rounding of io_ticks never reports more than the whole window.
        let over = Counters { busy_ms: a.busy_ms + 1010, ..a };
        assert_eq!(DiskUse::between("vda", &a, &over, 1.0).busy_pct, 100.0);
    }

    /// A fake /sys: `class/block/vdz/stat`, and `dev/block/M:m` linking to it.
    fn fake_sys(dev: u64) -> tempfile::TempDir {
        let sys = tempfile::tempdir().unwrap();
        let node = sys.path().join("devices/virtual/block/vdz");
        std::fs::create_dir_all(&node).unwrap();
        std::fs::write(node.join("stat"), LINE).unwrap();
        std::fs::create_dir_all(sys.path().join("class/block")).unwrap();
        std::os::unix::fs::symlink(&node, sys.path().join("class/block/vdz")).unwrap();
        std::fs::create_dir_all(sys.path().join("dev/block")).unwrap();
        let link = sys.path().join(format!("dev/block/{}:{}", libc::major(dev), libc::minor(dev)));
        std::os::unix::fs::symlink(&node, link).unwrap();
        sys
    }

    #[test]
    fn resolves_a_name_and_a_file_on_the_device() {
        // The device of this test's own temporary file, whatever it is, stands for "vdz".
        let file = tempfile::NamedTempFile::new().unwrap();
        let dev = std::fs::metadata(file.path()).unwrap().dev();
        let sys = fake_sys(dev);
        let by_name = Disk::resolve_in(sys.path(), "vdz").unwrap();
        assert_eq!(by_name.name, "vdz");
        assert_eq!(by_name.sample().unwrap(), Counters::parse(LINE).unwrap());
        let by_file = Disk::resolve_in(sys.path(), file.path().to_str().unwrap());
        if libc::major(dev) == 0 {
            // The temporary directory is on tmpfs: no block device, and the error says so.
            let e = by_file.unwrap_err();
            assert!(matches!(e, DiskError::NoBlockDevice { .. }), "{e}");
        } else {
            let disk = by_file.unwrap();
            assert_eq!(disk.name, "vdz");
            assert_eq!(disk.sample().unwrap().reads, 5618);
        }
    }

    #[test]
    fn refuses_what_is_no_block_device() {
        let sys = fake_sys(libc::makedev(250, 7));
        let e = Disk::resolve_in(sys.path(), "nosuchdisk").unwrap_err();
        assert!(matches!(e, DiskError::NotFound { .. }), "{e}");
        assert!(e.to_string().contains("nosuchdisk"), "{e}");
        // /proc is on no block device anywhere.
        let e = Disk::resolve_in(sys.path(), "/proc/self").unwrap_err();
        assert!(matches!(e, DiskError::NoBlockDevice { major: 0, .. }), "{e}");
        assert!(e.to_string().contains("no block device"), "{e}");
        // A device whose counters are garbage is an error when sampled, not zeroes.
        std::fs::write(sys.path().join("devices/virtual/block/vdz/stat"), "garbage\n").unwrap();
        let e = Disk::resolve_in(sys.path(), "vdz").unwrap().sample().unwrap_err();
        assert!(e.to_string().contains("unexpected contents"), "{e}");
    }

    #[test]
    fn this_machines_devices_read() {
        // Every block device of the machine running the tests resolves by name and samples
        // (a machine with none has nothing to check).
        let Ok(entries) = std::fs::read_dir("/sys/class/block") else { return };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let disk = Disk::resolve(&name).unwrap();
            disk.sample().unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
