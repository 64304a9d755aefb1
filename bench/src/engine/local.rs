//! `local` mode: the same workload on a file or block device through the
//! job's io_uring, reads and writes straight into the slots' registered
//! buffers (ReadFixed/WriteFixed, O_DIRECT by default). What a network target
//! on that backend can at best approach.
//!
//! Invariants:
//! - one operation per Busy slot, never more; a slot's buffer is only read
//!   or rewritten by Rust code when the slot is Free (before issue, after
//!   completion);
//! - a completion that moved fewer bytes than asked, or failed, ends the run
//!   (no retries: a benchmark must not hide errors);
//! - with registered buffers, buffer index = `base + slot`, assigned by the
//!   job when it registers every queue's buffers on its ring.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

use io_uring::{opcode, types};

use super::buf::Chunks;
use super::{Ctx, Driver, EngineError, OpKind, Ring, errno, token};
use crate::pattern;
use crate::stats::Dir;
use crate::workload::{Generator, Workload};

/// The pattern block size in local mode: the smallest O_DIRECT unit.
pub const LOCAL_BLOCK: u32 = 512;

#[derive(Debug, Clone, Copy)]
struct Slot {
    busy: bool,
    dir: Dir,
    unit: u64,
    byte: u64,
    issued: Instant,
    /// A read of a unit written (verify) when it was issued.
    check: bool,
}

/// One queue of slots over a shared file.
pub struct LocalQueue {
    index: u32,
    file: Arc<File>,
    /// Registered file index, when the file is registered.
    fixed_file: Option<u32>,
    /// Registered buffer index of slot 0, when buffers are registered.
    buf_base: Option<u16>,
    bs: u32,
    offset: u64,
    seed: u64,
    verify: bool,
    slots: Box<[Slot]>,
    free: Vec<u16>,
    bufs: Chunks,
    generator: Generator,
    outstanding: usize,
    shut: bool,
}

impl LocalQueue {
    /// Queue `index` of its job over `file`.
    pub fn new(index: u32, file: Arc<File>, workload: &Workload, generator: Generator) -> LocalQueue {
        let qd = workload.iodepth as usize;
        assert!(qd <= usize::from(u16::MAX), "slots are 16-bit");
        let bs = workload.bs;
        let mut bufs = Chunks::new(qd, bs as usize);
        for slot in 0..qd {
            pattern::fill(bufs.slice_mut(slot, bs as usize), LOCAL_BLOCK as usize, slot as u64, workload.seed);
        }
        let now = Instant::now();
        LocalQueue {
            index,
            file,
            fixed_file: None,
            buf_base: None,
            bs,
            offset: workload.offset,
            seed: workload.seed,
            verify: workload.verify,
            slots: vec![Slot { busy: false, dir: Dir::Read, unit: 0, byte: 0, issued: now, check: false }; qd]
                .into_boxed_slice(),
            free: (0..qd as u16).rev().collect(),
            bufs,
            generator,
            outstanding: 0,
            shut: false,
        }
    }

    /// The iovecs of its slot buffers, for registration.
    pub fn buffers(&self) -> Vec<libc::iovec> {
        self.bufs.iovecs()
    }

    /// Its buffers were registered from index `base` on.
    pub fn use_registered(&mut self, base: u16) {
        self.buf_base = Some(base);
    }

    /// The file was registered at index `index`.
    pub fn use_fixed_file(&mut self, index: u32) {
        self.fixed_file = Some(index);
    }

    fn issue(&mut self, cid: u16, dir: Dir, unit: u64, ctx: &Ctx<'_>, ring: &mut Ring) -> Result<(), EngineError> {
        let byte = self.offset + unit * u64::from(self.bs);
        let bs = self.bs as usize;
        if dir == Dir::Write && self.verify {
            let lba = byte / u64::from(LOCAL_BLOCK);
            pattern::fill(self.bufs.slice_mut(usize::from(cid), bs), LOCAL_BLOCK as usize, lba, self.seed);
        }
        let check = dir == Dir::Read && ctx.verify.is_some_and(|map| map.is_written(unit));
        self.slots[usize::from(cid)] = Slot { busy: true, dir, unit, byte, issued: ctx.now, check };
        let ptr = self.bufs.ptr(usize::from(cid));
        let entry = match (self.fixed_file, self.buf_base, dir) {
            (Some(f), Some(base), Dir::Read) => {
                opcode::ReadFixed::new(types::Fixed(f), ptr, self.bs, base + cid).offset(byte).build()
            }
            (Some(f), Some(base), Dir::Write) => {
                opcode::WriteFixed::new(types::Fixed(f), ptr, self.bs, base + cid).offset(byte).build()
            }
            (_, _, Dir::Read) => opcode::Read::new(types::Fd(self.file.as_raw_fd()), ptr, self.bs).offset(byte).build(),
            (_, _, Dir::Write) => {
                opcode::Write::new(types::Fd(self.file.as_raw_fd()), ptr, self.bs).offset(byte).build()
            }
        };
        let entry = entry.user_data(token(self.index, OpKind::Io, cid));
        // SAFETY: the slot's chunk belongs to this queue, which outlives the
        // operation (the job reaps every operation before dropping queues),
        // and the slot stays Busy, untouched, until the completion.
        unsafe { ring.push(&entry)? };
        self.outstanding += 1;
        Ok(())
    }
}

impl Driver for LocalQueue {
    const WORKERS: bool = true;

    fn complete(&mut self, _kind: u8, cid: u16, res: i32, ctx: &mut Ctx<'_>) -> Result<(), EngineError> {
        let slot = self.slots[usize::from(cid)];
        assert!(slot.busy, "a completion for idle slot {cid}");
        self.slots[usize::from(cid)].busy = false;
        self.outstanding -= 1;
        self.free.push(cid);
        let write = slot.dir == Dir::Write;
        if res < 0 {
            return Err(EngineError::LocalIo { offset: slot.byte, write, error: errno(res) });
        }
        if res as u32 != self.bs {
            return Err(EngineError::ShortIo { offset: slot.byte, write, done: res as u32, len: self.bs });
        }
        if let Some(map) = ctx.verify {
            match slot.dir {
                Dir::Write => map.mark(slot.unit),
                Dir::Read if slot.check => {
                    let data = self.bufs.slice(usize::from(cid), self.bs as usize);
                    let lba = slot.byte / u64::from(LOCAL_BLOCK);
                    pattern::check(data, LOCAL_BLOCK as usize, lba, map.seed())
                        .map_err(|mismatch| EngineError::Verify { qid: self.index as u16, mismatch })?;
                    ctx.verified_read();
                }
                Dir::Read => {}
            }
        }
        ctx.record(slot.issued, slot.dir, u64::from(self.bs));
        Ok(())
    }

    fn pump(&mut self, ctx: &mut Ctx<'_>, ring: &mut Ring) -> Result<(), EngineError> {
        if self.shut {
            return Ok(());
        }
        while let Some(&cid) = self.free.last() {
            if !ctx.may_issue() {
                break;
            }
            let Some((dir, unit)) = self.generator.next_command() else { break };
            self.free.pop();
            self.issue(cid, dir, unit, ctx, ring)?;
        }
        Ok(())
    }

    fn outstanding(&self) -> usize {
        self.outstanding
    }

    fn exhausted(&self) -> bool {
        self.generator.exhausted()
    }

    fn kernel_ops(&self) -> usize {
        self.outstanding
    }

    fn shutdown(&mut self) {
        self.shut = true;
    }
}
