//! Backends: where a namespace's blocks live. `file` (a regular file or a block device, through
//! io_uring, O_DIRECT where the device allows), `volume` (a volume of a storage pool: a list of
//! extents of the pool's device), `null` (discards writes, reads zeroes: the protocol's own
//! cost, for benchmarks) and `mem` (a memfd: memory that behaves like a file).
//!
//! A backend is shared by every reactor (the file descriptor is process-wide; a pool's device
//! is opened once and shared by all its volumes); each reactor turns an [`Op`] into io_uring
//! submissions with [`Backend::prep_into`]: one for a file, one per extent touched for a volume
//! (an I/O that crosses extents becomes several operations; their results are accounted
//! together, by bytes, by the queue). Backend errors become NVMe status codes in exactly one
//! place: [`status_for_errno`].
//!
//! ```text
//!  volume bytes   0        E1            E1+E2                 size
//!                 |extent 0 |  extent 1   |      extent 2       |
//!  device bytes   d0..      d1..          d2..
//!  Read{offset, len} crossing extents 1 and 2 -> Read(d1 + (offset - E1), E1+E2 - offset)
//!                                              + Read(d2, offset + len - (E1+E2))
//! ```
//!
//! Invariants: offsets and lengths reaching a backend were range-checked by the I/O layer
//! (`offset + len <= size_bytes`); with O_DIRECT they are multiples of the namespace block
//! size and buffers are page aligned (the pool guarantees it); a volume's extents are in
//! order, contiguous from 0, non-empty, and cover exactly its size (a bug otherwise: asserted
//! at construction); injected faults ([`Fault`]) are in the namespace's own byte offsets.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use io_uring::{opcode, squeue, types};

pub use crate::config::DirectIo;
use crate::nvme::Status;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    BlockDevice,
    Null,
    Mem,
    /// A volume of a storage pool: extents of the pool's device.
    Volume,
}

/// A piece of a volume: `len` bytes at volume byte `offset` live at device byte
/// `device_offset` (see `storage::Volume::map`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub device_offset: u64,
    pub len: u64,
}

/// A block I/O request, in bytes, already range-checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Read {
        offset: u64,
        len: u32,
    },
    Write {
        offset: u64,
        len: u32,
        fua: bool,
    },
    Flush,
    /// The range reads back as zeroes afterwards.
    WriteZeroes {
        offset: u64,
        len: u64,
    },
    /// Deallocate (discard / punch a hole); the range reads back as zeroes afterwards.
    Deallocate {
        offset: u64,
        len: u64,
    },
}

impl Op {
    fn is_read(&self) -> bool {
        matches!(self, Op::Read { .. })
    }

    /// Bytes the operations of a successful op report in all (fallocate and fsync report 0),
    /// however many submissions it became.
    pub fn expected_bytes(&self) -> u64 {
        match *self {
            Op::Read { len, .. } | Op::Write { len, .. } => u64::from(len),
            Op::Flush | Op::WriteZeroes { .. } | Op::Deallocate { .. } => 0,
        }
    }
}

/// A range of the namespace whose reads or writes fail with EIO: a fault-injection facility
/// (as in crucible's storage server) for testing how errors reach hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub reads: bool,
    pub writes: bool,
    pub offset: u64,
    pub len: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("{path}: does not exist and no size was given to create it")]
    MissingWithoutSize { path: PathBuf },
    #[error("{path}: {what} is {actual} bytes, not a multiple of the block size {block_size}")]
    Unaligned { path: PathBuf, what: &'static str, actual: u64, block_size: u32 },
    #[error("{path}: the device holds {device_bytes} bytes, less than the {size_bytes} configured")]
    DeviceTooSmall { path: PathBuf, device_bytes: u64, size_bytes: u64 },
    #[error("{path}: O_DIRECT was required but the device refuses it for {block_size}-byte blocks: {source}")]
    DirectRefused { path: PathBuf, block_size: u32, source: io::Error },
    #[error("{path}: neither a regular file nor a block device")]
    NotAFileOrDevice { path: PathBuf },
    #[error("memory backend of {size_bytes} bytes: {source}")]
    Mem { size_bytes: u64, source: io::Error },
}

#[derive(Debug)]
pub struct Backend {
    kind: Kind,
    /// Shared: a pool's device serves every volume of the pool.
    fd: Option<Arc<OwnedFd>>,
    /// A volume's extents, in volume order (empty for the other kinds).
    extents: Vec<Extent>,
    size_bytes: u64,
    direct: bool,
    /// The fallocate mode that zeroes a range on this file system or device.
    zero_mode: i32,
    path: Option<PathBuf>,
    faults: Vec<Fault>,
}

const PUNCH_HOLE: i32 = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
const ZERO_RANGE: i32 = libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE;
const TMPFS_MAGIC: libc::c_long = 0x0102_1994;

impl Backend {
    /// A backend that keeps nothing: writes vanish, reads return zeroes.
    pub fn null(size_bytes: u64) -> Backend {
        Backend {
            kind: Kind::Null,
            fd: None,
            extents: Vec::new(),
            size_bytes,
            direct: false,
            zero_mode: 0,
            path: None,
            faults: Vec::new(),
        }
    }

    /// Memory that behaves like a sparse file (a memfd), shared by every reactor.
    pub fn mem(size_bytes: u64) -> Result<Backend, BackendError> {
        let err = |source| BackendError::Mem { size_bytes, source };
        // SAFETY: the name is a NUL-terminated literal; the returned fd is checked.
        let fd = unsafe { libc::memfd_create(c"fabriq-mem".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(err(io::Error::last_os_error()));
        }
        // SAFETY: fd was just created and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        File::from(fd.try_clone().map_err(err)?).set_len(size_bytes).map_err(err)?;
        // shmem has no FALLOC_FL_ZERO_RANGE; a punched hole reads back as zeroes.
        Ok(Backend {
            kind: Kind::Mem,
            fd: Some(Arc::new(fd)),
            extents: Vec::new(),
            size_bytes,
            direct: false,
            zero_mode: PUNCH_HOLE,
            path: None,
            faults: Vec::new(),
        })
    }

    /// A regular file (created sparse when missing and a size is given) or a block device.
    /// `size_bytes` None means "the whole file or device".
    pub fn open_file(
        path: &Path,
        size_bytes: Option<u64>,
        block_size: u32,
        direct: DirectIo,
    ) -> Result<Backend, BackendError> {
        let open_err = |source| BackendError::Open { path: path.to_owned(), source };
        let meta = match std::fs::metadata(path) {
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(open_err(e)),
        };
        let block_device = meta.as_ref().is_some_and(|m| m.file_type().is_block_device());
        if meta.as_ref().is_some_and(|m| !m.is_file() && !block_device) {
            return Err(BackendError::NotAFileOrDevice { path: path.to_owned() });
        }
        if meta.is_none() && size_bytes.is_none() {
            return Err(BackendError::MissingWithoutSize { path: path.to_owned() });
        }
        if meta.is_none()
            && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(open_err)?;
        }
        let file = OpenOptions::new().read(true).write(true).create(!block_device).open(path).map_err(open_err)?;
        let actual =
            if block_device { device_size(&file).map_err(open_err)? } else { file.metadata().map_err(open_err)?.len() };
        let size_bytes = match (size_bytes, block_device, meta.is_some()) {
            (Some(want), true, _) if want > actual => {
                return Err(BackendError::DeviceTooSmall {
                    path: path.to_owned(),
                    device_bytes: actual,
                    size_bytes: want,
                });
            }
            // A device may export less than it holds.
            (Some(want), true, _) => want,
            // A missing file is created sparse at the configured size.
            (Some(want), false, false) => {
                file.set_len(want).map_err(open_err)?;
                want
            }
            // An existing file keeps its own size: a configuration never resizes data.
            (Some(want), false, true) => {
                if want != actual {
                    tracing::warn!(path = %path.display(), actual, configured = want, "existing file keeps its own size");
                }
                actual
            }
            (None, _, _) => actual,
        };
        if size_bytes == 0 || size_bytes % u64::from(block_size) != 0 {
            return Err(BackendError::Unaligned {
                path: path.to_owned(),
                what: "the size",
                actual: size_bytes,
                block_size,
            });
        }
        let zero_mode = if !block_device && is_tmpfs(&file) { PUNCH_HOLE } else { ZERO_RANGE };
        let kind = if block_device { Kind::BlockDevice } else { Kind::File };
        let (fd, is_direct) = reopen_direct(path, file, block_size, direct)?;
        tracing::info!(path = %path.display(), ?kind, size_bytes, direct = is_direct, "backend opened");
        Ok(Backend {
            kind,
            fd: Some(Arc::new(fd)),
            extents: Vec::new(),
            size_bytes,
            direct: is_direct,
            zero_mode,
            path: Some(path.to_owned()),
            faults: Vec::new(),
        })
    }

    /// A volume of a storage pool: `extents` of `device` (the pool's device, opened once with
    /// O_DIRECT when `direct`, shared by every volume of the pool), `size_bytes` in all.
    ///
    /// # Panics
    /// When the extents are not in order, contiguous from 0 and non-empty, or do not add up
    /// to `size_bytes`: the pool's extent map guarantees all of it.
    pub fn volume(device: Arc<OwnedFd>, direct: bool, extents: Vec<Extent>, size_bytes: u64) -> Backend {
        let mut end = 0u64;
        for e in &extents {
            assert!(e.len > 0 && e.offset == end, "volume extents out of order or empty: {extents:?}");
            end = e.offset.checked_add(e.len).expect("extent end overflows");
        }
        assert_eq!(end, size_bytes, "volume extents cover {end} bytes, not {size_bytes}");
        let zero_mode = zero_mode_of(device.as_raw_fd());
        Backend {
            kind: Kind::Volume,
            fd: Some(device),
            extents,
            size_bytes,
            direct,
            zero_mode,
            path: None,
            faults: Vec::new(),
        }
    }

    pub fn with_faults(mut self, faults: Vec<Fault>) -> Backend {
        self.faults = faults;
        self
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    pub fn is_direct(&self) -> bool {
        self.direct
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub fn raw_fd(&self) -> Option<RawFd> {
        self.fd.as_ref().map(|fd| fd.as_raw_fd())
    }

    /// A volume's extents (empty for the other kinds).
    pub fn extents(&self) -> &[Extent] {
        &self.extents
    }

    /// Makes what was written durable, synchronously (fdatasync; a volume syncs its pool's
    /// device). Not for the data path: for stops and removals.
    pub fn sync(&self) -> io::Result<()> {
        let Some(fd) = self.raw_fd() else { return Ok(()) };
        // SAFETY: fdatasync on a descriptor this backend keeps open.
        if unsafe { libc::fdatasync(fd) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// An injected error for this op, if a fault range covers it.
    pub fn injected_errno(&self, op: &Op) -> Option<i32> {
        let (offset, len, is_read) = match *op {
            Op::Read { offset, len } => (offset, u64::from(len), true),
            Op::Write { offset, len, .. } => (offset, u64::from(len), false),
            Op::WriteZeroes { offset, len } | Op::Deallocate { offset, len } => (offset, len, false),
            Op::Flush => return None,
        };
        self.faults
            .iter()
            .any(|f| (if is_read { f.reads } else { f.writes }) && offset < f.offset + f.len && f.offset < offset + len)
            .then_some(libc::EIO)
    }

    /// Emits the io_uring submissions for `op`, in order: none when the backend completes it
    /// at once (null), one for a file, one per extent it touches for a volume (a flush: one
    /// fdatasync of the device). `buf` is the data buffer for reads and writes, `fixed` its
    /// registered index if the pool's regions are registered with this ring. Returns how many
    /// submissions were emitted.
    pub fn prep_into(&self, op: &Op, buf: *mut u8, fixed: Option<u16>, mut emit: impl FnMut(squeue::Entry)) -> usize {
        let Some(fd) = self.fd.as_ref() else { return 0 };
        let fd = types::Fd(fd.as_raw_fd());
        if self.kind != Kind::Volume {
            emit(self.entry(fd, op, buf, fixed));
            return 1;
        }
        let (offset, len) = match *op {
            Op::Flush => {
                emit(self.entry(fd, op, buf, fixed));
                return 1;
            }
            Op::Read { offset, len } | Op::Write { offset, len, .. } => (offset, u64::from(len)),
            Op::WriteZeroes { offset, len } | Op::Deallocate { offset, len } => (offset, len),
        };
        let mut emitted = 0;
        for (device_offset, piece_len, within) in self.map(offset, len) {
            let piece = match *op {
                Op::Read { .. } => Op::Read { offset: device_offset, len: piece_len as u32 },
                Op::Write { fua, .. } => Op::Write { offset: device_offset, len: piece_len as u32, fua },
                Op::WriteZeroes { .. } => Op::WriteZeroes { offset: device_offset, len: piece_len },
                Op::Deallocate { .. } => Op::Deallocate { offset: device_offset, len: piece_len },
                Op::Flush => unreachable!("a flush is not split"),
            };
            // The piece's part of the buffer (which holds the op's `len` bytes for reads and
            // writes; other ops pass none): `within < len`, so it stays inside.
            let piece_buf = buf.wrapping_add(within as usize);
            emit(self.entry(fd, &piece, piece_buf, fixed));
            emitted += 1;
        }
        emitted
    }

    /// A volume's bytes `offset..offset + len` as `(device_offset, len, offset_within_op)`
    /// pieces, in order; a piece never crosses an extent boundary.
    fn map(&self, offset: u64, len: u64) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        let end = offset + len;
        let first = self.extents.partition_point(|e| e.offset + e.len <= offset);
        self.extents[first..].iter().take_while(move |e| e.offset < end).map(move |e| {
            let from = offset.max(e.offset);
            let to = end.min(e.offset + e.len);
            (e.device_offset + (from - e.offset), to - from, from - offset)
        })
    }

    /// One submission for `op` on `fd`, offsets as given (device offsets for a volume).
    fn entry(&self, fd: types::Fd, op: &Op, buf: *mut u8, fixed: Option<u16>) -> squeue::Entry {
        match *op {
            Op::Read { offset, len } => match fixed {
                Some(index) => opcode::ReadFixed::new(fd, buf, len, index).offset(offset).build(),
                None => opcode::Read::new(fd, buf, len).offset(offset).build(),
            },
            Op::Write { offset, len, fua } => {
                let flags = if fua { libc::RWF_DSYNC } else { 0 };
                match fixed {
                    Some(index) => opcode::WriteFixed::new(fd, buf, len, index).offset(offset).rw_flags(flags).build(),
                    None => opcode::Write::new(fd, buf, len).offset(offset).rw_flags(flags).build(),
                }
            }
            Op::Flush => opcode::Fsync::new(fd).flags(types::FsyncFlags::DATASYNC).build(),
            Op::WriteZeroes { offset, len } => {
                opcode::Fallocate::new(fd, len).offset(offset).mode(self.zero_mode).build()
            }
            Op::Deallocate { offset, len } => opcode::Fallocate::new(fd, len).offset(offset).mode(PUNCH_HOLE).build(),
        }
    }
}

/// The one mapping from a failed backend operation (a negative errno from io_uring, or a short
/// transfer reported as `EIO`) to the NVMe status the host sees.
pub fn status_for_errno(op: &Op, errno: i32) -> Status {
    match errno {
        libc::EIO | libc::EBADMSG | libc::EUCLEAN | libc::ENODATA if op.is_read() => Status::UNRECOVERED_READ_ERROR,
        libc::EIO | libc::EBADMSG | libc::EUCLEAN => Status::WRITE_FAULT,
        libc::ENOSPC | libc::EDQUOT | libc::EFBIG => Status::CAPACITY_EXCEEDED,
        libc::EROFS | libc::EPERM | libc::EACCES => Status::NAMESPACE_IS_WRITE_PROTECTED,
        // Transient conditions: no DNR, the host retries.
        libc::EAGAIN | libc::EBUSY | libc::ENOMEM | libc::EINTR => Status::NAMESPACE_NOT_READY,
        libc::EOPNOTSUPP | libc::EINVAL => Status::INVALID_FIELD.with_dnr(),
        _ => Status::INTERNAL_ERROR,
    }
}

fn device_size(file: &File) -> io::Result<u64> {
    let mut bytes: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which is valid for it.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64, &mut bytes as *mut u64) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(bytes) }
}

/// _IOR(0x12, 114, size_t)
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;

fn is_tmpfs(file: &File) -> bool {
    is_tmpfs_fd(file.as_raw_fd())
}

fn is_tmpfs_fd(fd: RawFd) -> bool {
    // SAFETY: statfs is plain data, fully written by fstatfs on success.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and pointer to a statfs.
    let rc = unsafe { libc::fstatfs(fd, &mut st) };
    rc == 0 && st.f_type == TMPFS_MAGIC
}

/// The fallocate mode that zeroes a range of an open device or file: tmpfs (and memfd) has no
/// ZERO_RANGE, but a punched hole reads back as zeroes.
fn zero_mode_of(fd: RawFd) -> i32 {
    // SAFETY: stat is plain data, fully written by fstat on success.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and pointer to a stat.
    let rc = unsafe { libc::fstat(fd, &mut st) };
    let block_device = rc == 0 && st.st_mode & libc::S_IFMT == libc::S_IFBLK;
    if !block_device && is_tmpfs_fd(fd) { PUNCH_HOLE } else { ZERO_RANGE }
}

/// Reopens with O_DIRECT when asked and when an aligned read of one block works; returns the
/// descriptor to use and whether it is direct.
fn reopen_direct(
    path: &Path,
    buffered: File,
    block_size: u32,
    want: DirectIo,
) -> Result<(OwnedFd, bool), BackendError> {
    if want == DirectIo::Off {
        return Ok((buffered.into(), false));
    }
    let attempt = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .and_then(|direct| probe_direct_read(&direct, block_size).map(|()| direct));
    match attempt {
        Ok(direct) => Ok((direct.into(), true)),
        Err(source) if want == DirectIo::On => {
            Err(BackendError::DirectRefused { path: path.to_owned(), block_size, source })
        }
        Err(error) => {
            tracing::warn!(path = %path.display(), block_size, %error, "O_DIRECT not available; falling back to the page cache (flush makes data durable)");
            Ok((buffered.into(), false))
        }
    }
}

fn probe_direct_read(file: &File, block_size: u32) -> io::Result<()> {
    let layout = std::alloc::Layout::from_size_align(4096.max(block_size as usize), 4096).expect("valid layout");
    // SAFETY: non-zero size layout; freed below with the same layout.
    let buf = unsafe { std::alloc::alloc(layout) };
    if buf.is_null() {
        return Err(io::Error::from(io::ErrorKind::OutOfMemory));
    }
    // SAFETY: buf is valid for block_size bytes (<= layout size) and aligned to 4096.
    let rc = unsafe { libc::pread(file.as_raw_fd(), buf.cast(), block_size as usize, 0) };
    let result = if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) };
    // SAFETY: allocated above with this layout.
    unsafe { std::alloc::dealloc(buf, layout) };
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_created_sparse_at_the_given_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ns.img");
        let b = Backend::open_file(&path, Some(1 << 20), 4096, DirectIo::Auto).unwrap();
        assert_eq!(b.size_bytes(), 1 << 20);
        assert_eq!(b.kind(), Kind::File);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 1 << 20);
        use std::os::unix::fs::MetadataExt;
        assert!(meta.blocks() * 512 < 1 << 20, "file is sparse");
    }

    #[test]
    fn open_errors_are_clear() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.img");
        let err = Backend::open_file(&missing, None, 512, DirectIo::Auto).unwrap_err();
        assert!(err.to_string().contains("does not exist and no size"), "{err}");
        let odd = dir.path().join("odd.img");
        std::fs::write(&odd, vec![0u8; 1000]).unwrap();
        let err = Backend::open_file(&odd, None, 512, DirectIo::Off).unwrap_err();
        assert!(err.to_string().contains("not a multiple of the block size 512"), "{err}");
        let err = Backend::open_file(dir.path(), None, 512, DirectIo::Off).unwrap_err();
        assert!(err.to_string().contains("neither a regular file nor a block device"), "{err}");
    }

    #[test]
    fn existing_file_keeps_its_size_and_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ns.img");
        std::fs::write(&path, vec![7u8; 4096]).unwrap();
        let b = Backend::open_file(&path, Some(8192), 512, DirectIo::Off).unwrap();
        assert_eq!(b.size_bytes(), 4096);
        let data = std::fs::read(&path).unwrap();
        assert_eq!(data, vec![7u8; 4096]);
    }

    #[test]
    fn faults_cover_overlapping_ranges_only() {
        let b = Backend::null(1 << 20).with_faults(vec![Fault { reads: true, writes: false, offset: 4096, len: 4096 }]);
        assert_eq!(b.injected_errno(&Op::Read { offset: 0, len: 4096 }), None);
        assert_eq!(b.injected_errno(&Op::Read { offset: 4096 + 4095, len: 512 }), Some(libc::EIO));
        assert_eq!(b.injected_errno(&Op::Read { offset: 0, len: 4097 }), Some(libc::EIO));
        assert_eq!(b.injected_errno(&Op::Write { offset: 4096, len: 512, fua: false }), None);
        let emitted = b.prep_into(&Op::Read { offset: 0, len: 1 }, std::ptr::null_mut(), None, |_| panic!("emitted"));
        assert_eq!(emitted, 0, "null completes inline");
    }

    #[test]
    fn errno_mapping_distinguishes_reads_and_writes() {
        let read = Op::Read { offset: 0, len: 512 };
        let write = Op::Write { offset: 0, len: 512, fua: false };
        assert_eq!(status_for_errno(&read, libc::EIO), Status::UNRECOVERED_READ_ERROR);
        assert_eq!(status_for_errno(&write, libc::EIO), Status::WRITE_FAULT);
        assert_eq!(status_for_errno(&write, libc::ENOSPC), Status::CAPACITY_EXCEEDED);
        assert!(!status_for_errno(&read, libc::EAGAIN).dnr());
        assert_eq!(status_for_errno(&read, libc::ENOTCONN), Status::INTERNAL_ERROR);
    }

    const K64: u64 = 64 * 1024;

    /// A memfd of `bytes` as a pool's device.
    fn device(bytes: u64) -> Arc<OwnedFd> {
        let mem = Backend::mem(bytes).unwrap();
        Arc::clone(mem.fd.as_ref().unwrap())
    }

    /// Extents of `len` bytes each, at the given device offsets, in volume order.
    fn extents(lens_and_devs: &[(u64, u64)]) -> Vec<Extent> {
        let mut offset = 0;
        lens_and_devs
            .iter()
            .map(|&(len, device_offset)| {
                let e = Extent { offset, device_offset, len };
                offset += len;
                e
            })
            .collect()
    }

    fn pieces(b: &Backend, offset: u64, len: u64) -> Vec<(u64, u64, u64)> {
        b.map(offset, len).collect()
    }

    #[test]
    fn volume_io_splits_at_extent_boundaries() {
        // Three extents, stored out of order on the device.
        let x = extents(&[(K64, 10 * K64), (K64, 2 * K64), (2 * K64, 5 * K64)]);
        let v = Backend::volume(device(16 * K64), false, x, 4 * K64);
        assert_eq!((v.kind(), v.size_bytes(), v.path()), (Kind::Volume, 4 * K64, None));
        assert_eq!(pieces(&v, 0, 4 * K64), vec![(10 * K64, K64, 0), (2 * K64, K64, K64), (5 * K64, 2 * K64, 2 * K64)]);
        // Exactly one extent, starting and ending at its boundaries.
        assert_eq!(pieces(&v, K64, K64), vec![(2 * K64, K64, 0)]);
        // Ending at a boundary, starting at one.
        assert_eq!(pieces(&v, K64 - 512, 512), vec![(11 * K64 - 512, 512, 0)]);
        assert_eq!(pieces(&v, 2 * K64, 512), vec![(5 * K64, 512, 0)]);
        // Crossing one boundary: the second piece starts where the first left the buffer.
        assert_eq!(pieces(&v, K64 - 512, 1024), vec![(11 * K64 - 512, 512, 0), (2 * K64, 512, 512)]);
        // Crossing two.
        assert_eq!(
            pieces(&v, K64 - 4096, K64 + 8192),
            vec![(11 * K64 - 4096, 4096, 0), (2 * K64, K64, 4096), (5 * K64, 4096, K64 + 4096)]
        );
        // The last block.
        assert_eq!(pieces(&v, 4 * K64 - 512, 512), vec![(7 * K64 - 512, 512, 0)]);
        // Each piece is one submission; a flush is one fdatasync of the device.
        let count = |op: Op| v.prep_into(&op, std::ptr::null_mut(), None, |_| {});
        assert_eq!(count(Op::Read { offset: K64 - 4096, len: (K64 + 8192) as u32 }), 3);
        assert_eq!(count(Op::Write { offset: 0, len: 4096, fua: true }), 1);
        assert_eq!(count(Op::WriteZeroes { offset: 0, len: 4 * K64 }), 3);
        assert_eq!(count(Op::Deallocate { offset: K64, len: 2 * K64 }), 2);
        assert_eq!(count(Op::Flush), 1);
    }

    #[test]
    fn a_volume_of_one_extent_and_of_many() {
        let one = Backend::volume(device(4 * K64), true, extents(&[(3 * K64, K64)]), 3 * K64);
        assert!(one.is_direct());
        assert_eq!(pieces(&one, 0, 3 * K64), vec![(K64, 3 * K64, 0)]);
        assert_eq!(pieces(&one, 4096, 512), vec![(K64 + 4096, 512, 0)]);
        // 64 extents of 4 KiB, in reverse device order: a 256 KiB transfer is 64 pieces.
        let many: Vec<_> = (0..64).map(|i| (4096, (63 - i) * 4096)).collect();
        let v = Backend::volume(device(64 * 4096), false, extents(&many), 64 * 4096);
        let all = pieces(&v, 0, 64 * 4096);
        assert_eq!(all.len(), 64);
        for (i, &(dev, len, within)) in all.iter().enumerate() {
            assert_eq!((dev, len, within), ((63 - i as u64) * 4096, 4096, i as u64 * 4096));
        }
        assert_eq!(pieces(&v, 4096 * 10 + 100, 4096), vec![(53 * 4096 + 100, 3996, 0), (52 * 4096, 100, 3996)]);
    }

    #[test]
    #[should_panic(expected = "out of order or empty")]
    fn volume_extents_must_be_contiguous() {
        let mut x = extents(&[(K64, 0), (K64, K64)]);
        x[1].offset += 512;
        Backend::volume(device(4 * K64), false, x, 2 * K64);
    }

    #[test]
    #[should_panic(expected = "not 131072")]
    fn volume_extents_must_cover_the_size() {
        Backend::volume(device(4 * K64), false, extents(&[(K64, 0)]), 2 * K64);
    }

    #[test]
    fn volume_faults_are_in_volume_offsets() {
        let x = extents(&[(K64, 3 * K64), (K64, 0)]);
        let v = Backend::volume(device(4 * K64), false, x, 2 * K64).with_faults(vec![Fault {
            reads: true,
            writes: true,
            offset: K64,
            len: 4096,
        }]);
        assert_eq!(v.injected_errno(&Op::Read { offset: K64, len: 512 }), Some(libc::EIO));
        assert_eq!(v.injected_errno(&Op::Write { offset: K64 - 512, len: 1024, fua: false }), Some(libc::EIO));
        assert_eq!(v.injected_errno(&Op::Read { offset: 0, len: 4096 }), None, "device offset 3*64K is not it");
    }

    /// Runs `op` on `b` through a real ring, returns the results of its submissions.
    fn run(b: &Backend, op: Op, buf: &mut [u8]) -> Vec<i32> {
        let mut ring = io_uring::IoUring::new(64).unwrap();
        let mut n = 0;
        b.prep_into(&op, buf.as_mut_ptr(), None, |entry| {
            // SAFETY: the entry points into `buf`, which outlives the wait below.
            unsafe { ring.submission().push(&entry.user_data(n)).unwrap() };
            n += 1;
        });
        ring.submit_and_wait(n as usize).unwrap();
        let mut results: Vec<(u64, i32)> = ring.completion().map(|c| (c.user_data(), c.result())).collect();
        results.sort();
        results.into_iter().map(|(_, r)| r).collect()
    }

    #[test]
    fn volume_data_lands_at_the_device_offsets() {
        let dev = device(8 * K64);
        let x = extents(&[(K64, 6 * K64), (K64, K64), (K64, 4 * K64)]);
        let v = Backend::volume(Arc::clone(&dev), false, x, 3 * K64);
        let file = File::from(dev.try_clone().unwrap());
        let device_bytes = |at: u64, len: usize| {
            let mut out = vec![0u8; len];
            std::os::unix::fs::FileExt::read_exact_at(&file, &mut out, at).unwrap();
            out
        };
        // A write crossing both boundaries: 8 KiB before the first, all of the second, 8 KiB
        // of the third.
        let len = K64 as usize + 16384;
        let mut data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let results = run(&v, Op::Write { offset: K64 - 8192, len: len as u32, fua: false }, &mut data);
        assert_eq!(results, vec![8192, K64 as i32, 8192]);
        assert_eq!(device_bytes(7 * K64 - 8192, 8192), data[..8192]);
        assert_eq!(device_bytes(K64, K64 as usize), data[8192..8192 + K64 as usize]);
        assert_eq!(device_bytes(4 * K64, 8192), data[8192 + K64 as usize..]);
        assert!(device_bytes(0, K64 as usize).iter().all(|&b| b == 0), "nothing outside the extents");
        // Read back through the volume.
        let mut back = vec![0u8; len];
        let results = run(&v, Op::Read { offset: K64 - 8192, len: len as u32 }, &mut back);
        assert_eq!(results.iter().map(|&r| r as usize).sum::<usize>(), len);
        assert_eq!(back, data);
        // Zeroing a range crossing a boundary zeroes both device ranges, nothing else.
        let results = run(&v, Op::WriteZeroes { offset: 2 * K64 - 4096, len: 8192 }, &mut []);
        assert_eq!(results, vec![0, 0]);
        assert!(device_bytes(2 * K64 - 4096, 4096).iter().all(|&b| b == 0));
        assert!(device_bytes(4 * K64, 4096).iter().all(|&b| b == 0));
        assert_eq!(device_bytes(2 * K64 - 8192, 4096), data[K64 as usize..K64 as usize + 4096]);
        assert_eq!(device_bytes(4 * K64 + 4096, 4096), data[8192 + K64 as usize + 4096..]);
        assert_eq!(run(&v, Op::Flush, &mut []), vec![0]);
        v.sync().unwrap();
    }
}
