//! The device a pool lives on: the [`Device`] trait, [`FileDevice`] (a regular file or a block
//! device) and [`MemDevice`] (sparse memory, for tests and for the fault-injecting
//! [`FaultyDevice`](super::FaultyDevice)).
//!
//! This is the control path: pools read and write their metadata here with plain positioned
//! I/O and make it durable with `fdatasync`; volume data goes through the io_uring backends.
//!
//! Invariants: every operation is range-checked against [`Device::size_bytes`] (a regular file
//! never grows by accident); after `flush` returns, every write, write-zeroes and discard that
//! returned before it is durable; after `write_zeroes` the range reads as zeroes; after
//! `discard` its contents are unspecified (zeroes on files, on memory, and on devices with
//! deterministic zeroing) and the space may be released.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use super::error::{InvalidArgument, StorageError};

/// Byte-addressed storage with a durability barrier. Implementations are shared (`&self`)
/// and do their own locking.
pub trait Device: Send + Sync + fmt::Debug {
    /// Usable bytes.
    fn size_bytes(&self) -> u64;
    /// The logical sector: the unit a power cut may tear writes at (512 or 4096 on the devices
    /// pools accept).
    fn sector_bytes(&self) -> u32;
    /// Fills `buf` from `offset`; a short read is an error.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset` (durable only after [`Device::flush`]).
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// The range reads as zeroes afterwards (durable only after [`Device::flush`]).
    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()>;
    /// The range's contents are no longer needed; the device may release its space.
    fn discard(&self, offset: u64, len: u64) -> io::Result<()>;
    /// Makes everything written before durable.
    fn flush(&self) -> io::Result<()>;
}

/// `Ok` when `offset..offset + len` lies inside a device of `device_bytes`.
pub(crate) fn check_range(device_bytes: u64, offset: u64, len: u64) -> io::Result<()> {
    if offset.checked_add(len).is_some_and(|end| end <= device_bytes) {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bytes {offset}..+{len} are beyond the device's {device_bytes}"),
        ))
    }
}

/// A regular file or a block device, through positioned reads and writes (`pread`/`pwrite`),
/// `fdatasync`, and `fallocate` for zeroing and discarding.
#[derive(Debug)]
pub struct FileDevice {
    file: File,
    path: PathBuf,
    size_bytes: u64,
    sector_bytes: u32,
    block_device: bool,
}

const PUNCH_HOLE: i32 = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
const ZERO_RANGE: i32 = libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE;
/// `_IO(0x12, 119)`: discard a byte range of a block device (no promise of zeroes).
const BLKDISCARD: libc::Ioctl = 0x1277;
/// The largest buffer written when zeroes have to be written out.
const ZERO_BUFFER_BYTES: u64 = 1 << 20;

impl FileDevice {
    /// Opens an existing regular file or block device for reading and writing. A block device
    /// is opened with `O_EXCL`, so one that is mounted or claimed by another exclusive user
    /// (the kernel's md, LVM, another pool) is refused with `EBUSY`; a regular file is locked
    /// (`flock`), so two owners of one pool file are refused too.
    pub fn open(path: &Path) -> Result<FileDevice, StorageError> {
        let open_err = |source| StorageError::Open { path: path.to_owned(), source };
        let meta = std::fs::metadata(path).map_err(open_err)?;
        let block_device = meta.file_type().is_block_device();
        if !block_device && !meta.is_file() {
            return Err(InvalidArgument::NotADevice(path.to_owned()).into());
        }
        let mut options = OpenOptions::new();
        options.read(true).write(true);
        if block_device {
            options.custom_flags(libc::O_EXCL | libc::O_CLOEXEC);
        }
        let file = options.open(path).map_err(open_err)?;
        if !block_device {
            // The file's counterpart of O_EXCL: one pool owner at a time (an advisory lock,
            // released when the file is closed).
            file.try_lock().map_err(|e| {
                open_err(match e {
                    std::fs::TryLockError::WouldBlock => {
                        io::Error::new(io::ErrorKind::ResourceBusy, "in use by another pool owner")
                    }
                    std::fs::TryLockError::Error(e) => e,
                })
            })?;
        }
        let (size_bytes, sector_bytes) = if block_device {
            let size_bytes = (&file).seek(SeekFrom::End(0)).map_err(open_err)?;
            (size_bytes, logical_sector_bytes(&file).map_err(open_err)?)
        } else {
            // Buffered writes to a file reach the disk in pages: that is where they may tear.
            (meta.len(), if meta.blksize() >= 4096 { 4096 } else { 512 })
        };
        Ok(FileDevice { file, path: path.to_owned(), size_bytes, sector_bytes, block_device })
    }

    /// Creates a new regular file of `size_bytes` (sparse: it takes no space until written)
    /// and opens it. Refuses a path that exists.
    pub fn create(path: &Path, size_bytes: u64) -> Result<FileDevice, StorageError> {
        if size_bytes == 0 || !size_bytes.is_multiple_of(4096) {
            return Err(InvalidArgument::FileSize(size_bytes).into());
        }
        let open_err = |source| StorageError::Open { path: path.to_owned(), source };
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(path).map_err(open_err)?;
        file.set_len(size_bytes).map_err(open_err)?;
        file.sync_all().map_err(open_err)?;
        // The new directory entry is durable only once its directory is synced.
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        File::open(parent).and_then(|dir| dir.sync_all()).map_err(open_err)?;
        drop(file);
        FileDevice::open(path)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn is_block_device(&self) -> bool {
        self.block_device
    }

    fn write_zero_buffers(&self, offset: u64, len: u64) -> io::Result<()> {
        let zeroes = vec![0; ZERO_BUFFER_BYTES.min(len) as usize];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(ZERO_BUFFER_BYTES) as usize;
            self.file.write_all_at(&zeroes[..n], offset + done)?;
            done += n as u64;
        }
        Ok(())
    }
}

impl Device for FileDevice {
    fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    fn sector_bytes(&self) -> u32 {
        self.sector_bytes
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(self.size_bytes, offset, buf.len() as u64)?;
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        check_range(self.size_bytes, offset, buf.len() as u64)?;
        self.file.write_all_at(buf, offset)
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        check_range(self.size_bytes, offset, len)?;
        if len == 0 {
            return Ok(());
        }
        match fallocate(&self.file, ZERO_RANGE, offset, len) {
            Err(e) if unsupported(&e) => self.write_zero_buffers(offset, len),
            result => result,
        }
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        check_range(self.size_bytes, offset, len)?;
        if len == 0 {
            return Ok(());
        }
        match fallocate(&self.file, PUNCH_HOLE, offset, len) {
            // A block device that cannot zero by unmapping may still discard without a promise.
            Err(e) if unsupported(&e) && self.block_device => match block_discard(&self.file, offset, len) {
                Err(e) if unsupported(&e) => Ok(()),
                result => result,
            },
            // Nothing to release on this file system: the space stays allocated.
            Err(e) if unsupported(&e) => Ok(()),
            result => result,
        }
    }

    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

fn unsupported(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EOPNOTSUPP)
}

fn fallocate(file: &File, mode: i32, offset: u64, len: u64) -> io::Result<()> {
    let to_off = |v: u64| libc::off_t::try_from(v).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let (offset, len) = (to_off(offset)?, to_off(len)?);
    // SAFETY: fallocate takes only integers; the descriptor is open for as long as `file` lives.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), mode, offset, len) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

fn block_discard(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let range: [u64; 2] = [offset, len];
    // SAFETY: BLKDISCARD reads two u64 (start, length) through the pointer, which points at
    // `range` for the whole call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), BLKDISCARD, range.as_ptr()) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

fn logical_sector_bytes(file: &File) -> io::Result<u32> {
    let mut bytes: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer, which points at `bytes`.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::BLKSSZGET, &mut bytes as *mut libc::c_int) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    u32::try_from(bytes).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
}

/// Sparse bytes in 4 KiB chunks: chunks never written read as zeroes, and zeroing whole chunks
/// frees them, so a "terabyte" device costs only what was written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Sparse {
    chunks: BTreeMap<u64, Box<[u8]>>,
}

const CHUNK_BYTES: u64 = 4096;

impl Sparse {
    pub fn read(&self, buf: &mut [u8], offset: u64) {
        let mut done = 0;
        while done < buf.len() {
            let pos = offset + done as u64;
            let within = (pos % CHUNK_BYTES) as usize;
            let n = (CHUNK_BYTES as usize - within).min(buf.len() - done);
            match self.chunks.get(&(pos / CHUNK_BYTES)) {
                Some(chunk) => buf[done..done + n].copy_from_slice(&chunk[within..within + n]),
                None => buf[done..done + n].fill(0),
            }
            done += n;
        }
    }

    pub fn write(&mut self, data: &[u8], offset: u64) {
        let mut done = 0;
        while done < data.len() {
            let pos = offset + done as u64;
            let within = (pos % CHUNK_BYTES) as usize;
            let n = (CHUNK_BYTES as usize - within).min(data.len() - done);
            let chunk = self
                .chunks
                .entry(pos / CHUNK_BYTES)
                .or_insert_with(|| vec![0; CHUNK_BYTES as usize].into_boxed_slice());
            chunk[within..within + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
    }

    pub fn zero(&mut self, offset: u64, len: u64) {
        let end = offset + len;
        let first_whole = offset.div_ceil(CHUNK_BYTES);
        let end_whole = end / CHUNK_BYTES;
        if first_whole < end_whole {
            let whole: Vec<u64> = self.chunks.range(first_whole..end_whole).map(|(&k, _)| k).collect();
            for key in whole {
                self.chunks.remove(&key);
            }
        }
        let head_end = end.min(first_whole * CHUNK_BYTES);
        self.zero_partial(offset, head_end);
        self.zero_partial((end_whole * CHUNK_BYTES).max(head_end), end);
    }

    fn zero_partial(&mut self, start: u64, end: u64) {
        let mut pos = start;
        while pos < end {
            let within = (pos % CHUNK_BYTES) as usize;
            let n = (CHUNK_BYTES - pos % CHUNK_BYTES).min(end - pos);
            if let Some(chunk) = self.chunks.get_mut(&(pos / CHUNK_BYTES)) {
                chunk[within..within + n as usize].fill(0);
            }
            pos += n;
        }
    }

    /// Bytes held in memory.
    pub fn allocated_bytes(&self) -> u64 {
        self.chunks.len() as u64 * CHUNK_BYTES
    }
}

/// A device in memory, sparse, with no volatile cache: every write is "durable" at once.
#[derive(Debug)]
pub struct MemDevice {
    size_bytes: u64,
    sector_bytes: u32,
    data: Mutex<Sparse>,
}

impl MemDevice {
    pub fn new(size_bytes: u64, sector_bytes: u32) -> MemDevice {
        MemDevice::from_sparse(size_bytes, sector_bytes, Sparse::default())
    }

    pub(crate) fn from_sparse(size_bytes: u64, sector_bytes: u32, data: Sparse) -> MemDevice {
        MemDevice { size_bytes, sector_bytes, data: Mutex::new(data) }
    }

    /// An independent copy.
    pub fn snapshot(&self) -> MemDevice {
        MemDevice::from_sparse(self.size_bytes, self.sector_bytes, self.sparse())
    }

    /// Bytes held in memory (a measure of what was written and not zeroed since).
    pub fn allocated_bytes(&self) -> u64 {
        self.lock().allocated_bytes()
    }

    pub(crate) fn sparse(&self) -> Sparse {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sparse> {
        self.data.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Device for MemDevice {
    fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    fn sector_bytes(&self) -> u32 {
        self.sector_bytes
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(self.size_bytes, offset, buf.len() as u64)?;
        self.lock().read(buf, offset);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        check_range(self.size_bytes, offset, buf.len() as u64)?;
        self.lock().write(buf, offset);
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        check_range(self.size_bytes, offset, len)?;
        self.lock().zero(offset, len);
        Ok(())
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.write_zeroes(offset, len)
    }

    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn mem_device_is_sparse_and_range_checked() {
        let dev = MemDevice::new(1 << 40, 512);
        dev.write_at(b"hello", (1 << 40) - 5).unwrap();
        let mut buf = [0; 7];
        dev.read_at(&mut buf, (1 << 40) - 7).unwrap();
        assert_eq!(&buf, b"\0\0hello");
        assert_eq!(dev.allocated_bytes(), 4096);
        assert!(dev.write_at(b"x", 1 << 40).is_err());
        assert!(dev.read_at(&mut buf, u64::MAX - 2).is_err());
        dev.discard(0, 1 << 40).unwrap();
        assert_eq!(dev.allocated_bytes(), 0);
    }

    proptest! {
        #[test]
        fn sparse_behaves_like_a_flat_buffer(ops in proptest::collection::vec((any::<bool>(), 0u64..20_000, 0u64..9_000, any::<u8>()), 1..30)) {
            let mut flat = vec![0u8; 30_000];
            let mut sparse = Sparse::default();
            for (zero, offset, len, byte) in ops {
                if zero {
                    sparse.zero(offset, len);
                    flat[offset as usize..(offset + len) as usize].fill(0);
                } else {
                    let data = vec![byte; len as usize];
                    sparse.write(&data, offset);
                    flat[offset as usize..(offset + len) as usize].copy_from_slice(&data);
                }
            }
            let mut back = vec![0u8; 30_000];
            sparse.read(&mut back, 0);
            prop_assert!(back == flat);
        }
    }

    #[test]
    fn file_device_creates_sparse_files_and_keeps_to_their_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pool.img");
        let dev = FileDevice::create(&path, 64 << 20).unwrap();
        assert_eq!(dev.size_bytes(), 64 << 20);
        assert!(!dev.is_block_device());
        assert!([512, 4096].contains(&dev.sector_bytes()));
        assert!(std::fs::metadata(&path).unwrap().blocks() * 512 < 1 << 20, "sparse");
        dev.write_at(&[7; 8192], 1 << 20).unwrap();
        dev.flush().unwrap();
        dev.write_zeroes((1 << 20) + 100, 100).unwrap();
        let mut back = [1u8; 300];
        dev.read_at(&mut back, (1 << 20) + 50).unwrap();
        assert!(
            back[..50].iter().all(|&b| b == 7)
                && back[50..150].iter().all(|&b| b == 0)
                && back[150..].iter().all(|&b| b == 7)
        );
        dev.discard(1 << 20, 1 << 20).unwrap();
        dev.read_at(&mut back, 1 << 20).unwrap();
        assert!(back.iter().all(|&b| b == 0), "a punched hole reads as zeroes");
        assert!(dev.write_at(b"x", 64 << 20).is_err(), "never grows the file");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 64 << 20);
        assert!(matches!(FileDevice::create(&path, 64 << 20), Err(StorageError::Open { .. })), "never overwrites");
        let busy = FileDevice::open(&path).unwrap_err();
        assert!(busy.to_string().contains("in use by another pool owner"), "{busy}");
        drop(dev);
        FileDevice::open(&path).unwrap();
        assert!(matches!(
            FileDevice::create(&dir.path().join("odd"), 1000),
            Err(StorageError::InvalidArgument(InvalidArgument::FileSize(1000)))
        ));
        assert!(matches!(
            FileDevice::open(dir.path()),
            Err(StorageError::InvalidArgument(InvalidArgument::NotADevice(_)))
        ));
        let missing = FileDevice::open(&dir.path().join("missing")).unwrap_err();
        assert!(missing.to_string().contains("missing"), "{missing}");
    }
}
