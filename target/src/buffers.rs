//! Per-reactor data buffers (not to be confused with storage pools): every data buffer the
//! data plane uses is carved out of a few memory regions mapped (and pre-faulted) when the
//! reactor starts, so no I/O allocates.
//!
//! The pool has size classes (4 KiB up to the maximum data transfer size). A request takes a
//! buffer of the smallest class that fits and has one free, falling back to larger classes;
//! when every class that fits is empty the caller waits (backpressure), it never allocates.
//! Each class is one region, registered with io_uring as one fixed buffer whose index is the
//! class number, so block I/O can use `ReadFixed`/`WriteFixed` on any buffer of the class.
//! Regions of 2 MiB or more are 2 MiB-aligned and backed by transparent huge pages where the
//! kernel allows (`madvise`), as SPDK's hugepage memory is: a large transfer is then one
//! segment for the block layer, and the kernel's copies into it take fewer TLB misses.
//!
//! Invariants:
//! - a [`Buf`] is owned by exactly one holder; it goes back with [`BufferPool::put`];
//! - a buffer handed to the kernel stays owned by its command until the completion arrives;
//! - the pool counts what is out; the reactor checks the count is zero when it stops, and a
//!   pool dropped with buffers out leaks its regions rather than unmap memory the kernel may
//!   still write to.
//! - every buffer is 4096-byte aligned (O_DIRECT needs it).

use std::io;
use std::ptr::NonNull;

/// Smallest buffer: one memory page, the NVMe/TCP target's unit of data transfer.
pub const PAGE_BYTES: usize = 4096;

/// A transparent huge page on x86_64 (and aarch64 with 4 KiB pages).
const HUGE_PAGE_BYTES: usize = 2 << 20;

/// One buffer of the pool. Not `Clone`, not `Send`: it lives and dies on its reactor.
#[derive(Debug)]
pub struct Buf {
    ptr: NonNull<u8>,
    cap: u32,
    class: u8,
    index: u32,
}

impl Buf {
    /// Capacity in bytes (the class size; at least what was asked for).
    pub fn capacity(&self) -> usize {
        self.cap as usize
    }

    /// The io_uring fixed-buffer index of this buffer's region.
    pub fn fixed_index(&self) -> u16 {
        u16::from(self.class)
    }

    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The first `len` bytes. Must not be called while the kernel writes into the buffer.
    pub fn slice(&self, len: usize) -> &[u8] {
        assert!(len <= self.capacity(), "slice {len} beyond buffer capacity {}", self.cap);
        // SAFETY: the region is mapped for the pool's life, this Buf owns [ptr, ptr+cap)
        // exclusively, and `len <= cap`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), len) }
    }

    /// The first `len` bytes, writable. Same rule as [`Buf::slice`].
    pub fn slice_mut(&mut self, len: usize) -> &mut [u8] {
        assert!(len <= self.capacity(), "slice {len} beyond buffer capacity {}", self.cap);
        // SAFETY: as in `slice`; `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), len) }
    }
}

/// An anonymous private mapping, zeroed and pre-faulted, unmapped on drop (unless leaked).
/// Public for fabriq-bench, whose data buffers want the same memory as the target's.
#[derive(Debug)]
pub struct Region {
    ptr: NonNull<u8>,
    len: usize,
}

impl Region {
    /// Maps `len` bytes (a multiple of the page). Regions of 2 MiB or more are placed on a
    /// 2 MiB boundary and asked to be backed by transparent huge pages: a 128 KiB buffer then
    /// sits in one physically contiguous page, which makes the kernel's copies into it cheaper
    /// (fewer TLB misses) and a fixed buffer's block I/O one segment instead of 32.
    pub fn map(len: usize) -> io::Result<Region> {
        assert!(len > 0 && len.is_multiple_of(PAGE_BYTES));
        if len >= HUGE_PAGE_BYTES {
            return Region::map_huge(len);
        }
        let ptr = mmap_anonymous(len, libc::MAP_POPULATE)?;
        Ok(Region { ptr, len })
    }

    fn map_huge(len: usize) -> io::Result<Region> {
        let len = len.next_multiple_of(HUGE_PAGE_BYTES);
        let span = len + HUGE_PAGE_BYTES;
        // Nothing is populated yet: the span is trimmed to its aligned part first.
        let raw = mmap_anonymous(span, 0)?.as_ptr() as usize;
        let start = raw.next_multiple_of(HUGE_PAGE_BYTES);
        let end = start + len;
        // SAFETY: both trimmed pieces lie inside the span just mapped and nothing uses them.
        // The tail is never empty: `start` is less than a huge page past `raw`.
        unsafe {
            if start > raw {
                libc::munmap(raw as *mut libc::c_void, start - raw);
            }
            libc::munmap(end as *mut libc::c_void, raw + span - end);
            // Advice only: without transparent huge pages the region stays on small pages.
            libc::madvise(start as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
        }
        // Pre-fault (MAP_POPULATE's job for small regions) so that no I/O takes a page fault.
        for off in (0..len).step_by(PAGE_BYTES) {
            // SAFETY: inside the region, which is mapped writable.
            unsafe { std::ptr::write_volatile((start + off) as *mut u8, 0) };
        }
        let ptr = NonNull::new(start as *mut u8).expect("mmap returned a null mapping");
        Ok(Region { ptr, len })
    }

    /// The first byte; page-aligned (2 MiB-aligned for regions of 2 MiB or more).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

/// A private anonymous read-write mapping of `len` bytes, with `flags` added.
fn mmap_anonymous(len: usize, flags: libc::c_int) -> io::Result<NonNull<u8>> {
    // SAFETY: an anonymous private mapping with no address hint touches no existing memory.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | flags,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(NonNull::new(ptr.cast::<u8>()).expect("mmap returned a null mapping"))
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `map` with this length and is unmapped only here.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

#[derive(Debug)]
struct Class {
    buf_bytes: usize,
    region: Region,
    free: Vec<u32>,
    count: u32,
}

/// How a pool is laid out: the size classes and how many buffers each has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// (buffer size in bytes, number of buffers), ascending by size.
    pub classes: Vec<(usize, u32)>,
}

impl Layout {
    /// Splits `total_bytes` evenly over the classes 4 KiB, 16 KiB, 64 KiB and the largest
    /// transfer `max_transfer_bytes` (when larger than 64 KiB). Every class gets at least
    /// `min_per_class` buffers so a small pool still serves a full queue of large commands.
    pub fn for_budget(total_bytes: usize, max_transfer_bytes: usize, min_per_class: u32) -> Layout {
        assert!(max_transfer_bytes >= PAGE_BYTES && max_transfer_bytes.is_power_of_two());
        let mut sizes: Vec<usize> =
            [PAGE_BYTES, 16 * 1024, 64 * 1024].into_iter().filter(|s| *s <= max_transfer_bytes).collect();
        if *sizes.last().expect("4 KiB always fits") < max_transfer_bytes {
            sizes.push(max_transfer_bytes);
        }
        let per_class = total_bytes / sizes.len();
        let classes = sizes.into_iter().map(|size| (size, ((per_class / size) as u32).max(min_per_class))).collect();
        Layout { classes }
    }

    pub fn total_bytes(&self) -> usize {
        self.classes.iter().map(|(size, n)| size * *n as usize).sum()
    }
}

/// The pool itself. Owned by one reactor.
#[derive(Debug)]
pub struct BufferPool {
    classes: Vec<Class>,
    outstanding: usize,
    /// A read-only region of zeroes as large as the largest class (null backend reads).
    zeroes: Region,
    /// A write-only sink as large as the largest class (null backend writes land here).
    sink: Region,
}

impl BufferPool {
    pub fn new(layout: &Layout) -> io::Result<BufferPool> {
        assert!(!layout.classes.is_empty() && layout.classes.len() <= usize::from(u8::MAX));
        let mut classes = Vec::with_capacity(layout.classes.len());
        for &(buf_bytes, count) in &layout.classes {
            assert!(buf_bytes % PAGE_BYTES == 0 && count > 0);
            let region = Region::map(buf_bytes * count as usize)?;
            classes.push(Class { buf_bytes, region, free: (0..count).rev().collect(), count });
        }
        let largest = layout.classes.last().expect("checked non-empty").0;
        Ok(BufferPool { classes, outstanding: 0, zeroes: Region::map(largest)?, sink: Region::map(largest)? })
    }

    /// The largest buffer the pool can hand out.
    pub fn max_buf_bytes(&self) -> usize {
        self.classes.last().expect("pool has classes").buf_bytes
    }

    /// A buffer of at least `len` bytes, or `None` when every class that fits is exhausted.
    pub fn get(&mut self, len: usize) -> Option<Buf> {
        assert!(len <= self.max_buf_bytes(), "buffer of {len} bytes beyond the pool's largest");
        let (class_no, class) =
            self.classes.iter_mut().enumerate().find(|(_, c)| c.buf_bytes >= len && !c.free.is_empty())?;
        let index = class.free.pop().expect("class has a free buffer");
        let offset = index as usize * class.buf_bytes;
        // SAFETY: index < count, so offset + buf_bytes lies within the region.
        let ptr = unsafe { NonNull::new_unchecked(class.region.ptr.as_ptr().add(offset)) };
        self.outstanding += 1;
        Some(Buf { ptr, cap: class.buf_bytes as u32, class: class_no as u8, index })
    }

    /// Returns a buffer to its class.
    pub fn put(&mut self, buf: Buf) {
        let class = &mut self.classes[usize::from(buf.class)];
        debug_assert!(buf.index < class.count && !class.free.contains(&buf.index), "double put");
        class.free.push(buf.index);
        self.outstanding -= 1;
    }

    /// How many buffers are out right now (zero when the reactor is quiet and stopped).
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// `len` bytes of zeroes that stay valid for the pool's life.
    pub fn zeroes(&self, len: usize) -> (*const u8, usize) {
        assert!(len <= self.zeroes.len);
        (self.zeroes.ptr.as_ptr(), len)
    }

    /// A sink of `len` bytes for data that is received and thrown away.
    pub fn sink(&self, len: usize) -> *mut u8 {
        assert!(len <= self.sink.len);
        self.sink.ptr.as_ptr()
    }

    /// One iovec per class, in class order: what io_uring registers as fixed buffers.
    pub fn iovecs(&self) -> Vec<libc::iovec> {
        self.classes
            .iter()
            .map(|c| libc::iovec { iov_base: c.region.ptr.as_ptr().cast(), iov_len: c.region.len })
            .collect()
    }
}

impl Drop for BufferPool {
    fn drop(&mut self) {
        if self.outstanding != 0 {
            tracing::error!(outstanding = self.outstanding, "buffer pool dropped with buffers out; leaking it");
            for class in self.classes.drain(..) {
                std::mem::forget(class.region);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> BufferPool {
        BufferPool::new(&Layout { classes: vec![(4096, 2), (16384, 1)] }).unwrap()
    }

    #[test]
    fn regions_are_zeroed_and_large_ones_sit_on_huge_page_boundaries() {
        for len in [PAGE_BYTES, 3 * PAGE_BYTES, HUGE_PAGE_BYTES, 3 * HUGE_PAGE_BYTES + PAGE_BYTES] {
            let region = Region::map(len).unwrap();
            let align = if len >= HUGE_PAGE_BYTES { HUGE_PAGE_BYTES } else { PAGE_BYTES };
            assert_eq!(region.as_ptr() as usize % align, 0, "{len} bytes");
            // SAFETY: the region is mapped writable for at least `len` bytes.
            let bytes = unsafe { std::slice::from_raw_parts_mut(region.as_ptr(), len) };
            assert!(bytes.iter().all(|&b| b == 0));
            bytes.fill(0xa5);
        }
    }

    #[test]
    fn layout_splits_budget_over_classes() {
        let l = Layout::for_budget(64 << 20, 128 << 10, 1);
        assert_eq!(l.classes, vec![(4096, 4096), (16384, 1024), (65536, 256), (131072, 128)]);
        assert_eq!(l.total_bytes(), 64 << 20);
        let l = Layout::for_budget(0, 16384, 3);
        assert_eq!(l.classes, vec![(4096, 3), (16384, 3)]);
    }

    #[test]
    fn get_prefers_the_smallest_class_then_falls_back() {
        let mut p = small();
        let a = p.get(100).unwrap();
        let b = p.get(4096).unwrap();
        assert_eq!((a.capacity(), b.capacity()), (4096, 4096));
        let c = p.get(1).unwrap();
        assert_eq!(c.capacity(), 16384, "falls back to the larger class");
        assert!(p.get(1).is_none(), "exhausted pool makes the caller wait");
        assert_eq!(p.outstanding(), 3);
        p.put(a);
        assert_eq!(p.get(10).unwrap().capacity(), 4096);
        p.put(b);
        p.put(c);
    }

    #[test]
    fn buffers_are_page_aligned_and_disjoint() {
        let mut p = small();
        let mut a = p.get(4096).unwrap();
        let mut b = p.get(4096).unwrap();
        assert_eq!(a.as_ptr() as usize % PAGE_BYTES, 0);
        assert_eq!(b.as_ptr() as usize % PAGE_BYTES, 0);
        a.slice_mut(4096).fill(0xAA);
        b.slice_mut(4096).fill(0x55);
        assert!(a.slice(4096).iter().all(|&x| x == 0xAA));
        assert_eq!(a.fixed_index(), 0);
        p.put(a);
        p.put(b);
        assert_eq!(p.outstanding(), 0);
        assert_eq!(p.iovecs().len(), 2);
    }

    #[test]
    #[should_panic(expected = "beyond the pool's largest")]
    fn oversized_request_is_a_bug() {
        small().get(16385);
    }
}
