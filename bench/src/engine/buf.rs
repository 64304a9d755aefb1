//! Page-aligned data buffers allocated once at start-up: every command slot's
//! data lives in one of these for the whole run.
//!
//! Invariants: the memory is 4096-aligned (what O_DIRECT and registered
//! buffers want), zero-initialized, never reallocated, and freed only when
//! the owner drops it, which the engine does only after every kernel
//! operation that names it has completed.

use fabriq_target::buffers::Region;

/// Alignment of every buffer.
pub const PAGE: usize = 4096;

/// A fixed, page-aligned, zeroed byte buffer cut into equal chunks.
#[derive(Debug)]
pub struct Chunks {
    region: Region,
    chunk: usize,
    count: usize,
}

// SAFETY: the buffer is plain memory owned by this value; moving it to
// another thread moves the ownership (the job thread builds its queues on the
// main thread and then owns them).
unsafe impl Send for Chunks {}

impl Chunks {
    /// `count` chunks of `chunk` bytes each (`chunk` rounded up to a page so
    /// every chunk is aligned).
    ///
    /// # Panics
    /// When `count` or `chunk` is 0, or the allocation fails.
    pub fn new(count: usize, chunk: usize) -> Chunks {
        assert!(count > 0 && chunk > 0, "an empty buffer");
        let chunk = chunk.next_multiple_of(PAGE);
        let len = chunk.checked_mul(count).expect("buffer size overflows");
        // The target's memory: zeroed, pre-faulted, on transparent huge pages from 2 MiB up.
        let region = Region::map(len).unwrap_or_else(|e| panic!("mapping {len} bytes of data buffers: {e}"));
        Chunks { region, chunk, count }
    }

    /// Bytes per chunk (a multiple of the page).
    pub fn chunk_len(&self) -> usize {
        self.chunk
    }

    /// Number of chunks.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The address of chunk `i`, for handing to the kernel.
    #[inline]
    pub fn ptr(&self, i: usize) -> *mut u8 {
        assert!(i < self.count, "chunk {i} of {}", self.count);
        // i < count: the offset stays inside the allocation.
        self.region.as_ptr().wrapping_add(i * self.chunk)
    }

    /// Chunk `i`'s first `len` bytes.
    ///
    /// The caller must not hold this while the kernel writes the chunk (the
    /// engine only looks at a slot's data when no operation on it is in
    /// flight).
    #[inline]
    pub fn slice(&self, i: usize, len: usize) -> &[u8] {
        assert!(len <= self.chunk, "{len} bytes of a {} byte chunk", self.chunk);
        // SAFETY: in bounds (checked by ptr and above); the memory is
        // initialized (zeroed at allocation).
        unsafe { std::slice::from_raw_parts(self.ptr(i), len) }
    }

    /// Chunk `i`'s first `len` bytes, writable.
    #[inline]
    pub fn slice_mut(&mut self, i: usize, len: usize) -> &mut [u8] {
        assert!(len <= self.chunk, "{len} bytes of a {} byte chunk", self.chunk);
        // SAFETY: in bounds; &mut self means no other Rust reference exists.
        unsafe { std::slice::from_raw_parts_mut(self.ptr(i), len) }
    }

    /// One iovec per chunk, for `register_buffers`.
    pub fn iovecs(&self) -> Vec<libc::iovec> {
        (0..self.count).map(|i| libc::iovec { iov_base: self.ptr(i).cast(), iov_len: self.chunk }).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_aligned_and_apart() {
        let mut c = Chunks::new(3, 5000);
        assert_eq!(c.chunk_len(), 8192);
        for i in 0..3 {
            assert_eq!(c.ptr(i) as usize % PAGE, 0);
        }
        c.slice_mut(1, 8192).fill(7);
        assert!(c.slice(0, 8192).iter().all(|&b| b == 0));
        assert!(c.slice(2, 8192).iter().all(|&b| b == 0));
        assert_eq!(c.iovecs().len(), 3);
    }
}
