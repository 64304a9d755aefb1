//! I/O commands of the NVM command set (NVM Command Set 1.0, section 3): the `parse` step that
//! validates a command and says what it will do, in bytes, before any data moves.
//!
//! Invariants: a command that passes [`prepare`] addresses only blocks inside its namespace,
//! moves at most MDTS bytes, and its byte offsets and lengths are multiples of the namespace
//! block size; everything else is an NVMe status with DNR set.

use crate::backend::Op;
use crate::nvme::{DatasetManagement, DsmRange, IoOpcode, NSID_BROADCAST, ReadWrite, Sqe, Status};
use crate::subsys::{Limits, Namespace, NsTable};

use super::{DataDir, Exec, Prepared};

/// A validated I/O command, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoOp {
    Read {
        offset: u64,
        len: u32,
    },
    Write {
        offset: u64,
        len: u32,
        fua: bool,
    },
    Compare {
        offset: u64,
        len: u32,
    },
    /// `all`: the broadcast NSID, every namespace of the subsystem.
    Flush {
        all: bool,
    },
    WriteZeroes {
        offset: u64,
        len: u64,
        deallocate: bool,
        fua: bool,
    },
    /// `ranges` range descriptors arrive as data.
    DatasetManagement {
        ranges: u32,
        deallocate: bool,
    },
}

/// An I/O command bound to a namespace of the queue's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoCmd {
    pub ns_index: usize,
    pub op: IoOp,
}

/// Validates an I/O command against the namespace table and the limits.
pub fn prepare(sqe: &Sqe, table: &NsTable, limits: &Limits) -> Result<Prepared, Status> {
    let opcode = IoOpcode::try_from(sqe.opcode).map_err(|_| Status::INVALID_OPCODE.with_dnr())?;
    if opcode == IoOpcode::Flush && sqe.nsid == NSID_BROADCAST {
        let exec = Exec::Io(IoCmd { ns_index: 0, op: IoOp::Flush { all: true } });
        return Ok(Prepared { dir: DataDir::None, len: 0, exec });
    }
    let (ns_index, ns) = table.find(sqe.nsid).ok_or(Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr())?;
    let io = |op| Exec::Io(IoCmd { ns_index, op });
    match opcode {
        IoOpcode::Flush => Ok(Prepared { dir: DataDir::None, len: 0, exec: io(IoOp::Flush { all: false }) }),
        IoOpcode::Read | IoOpcode::Write | IoOpcode::Compare => {
            let rw = ReadWrite::from_sqe(sqe);
            let (offset, len) = data_range(&rw, ns, limits)?;
            let (dir, op) = match opcode {
                IoOpcode::Read => (DataDir::C2h, IoOp::Read { offset, len }),
                IoOpcode::Write => (DataDir::H2c, IoOp::Write { offset, len, fua: rw.fua }),
                _ => (DataDir::H2c, IoOp::Compare { offset, len }),
            };
            Ok(Prepared { dir, len, exec: io(op) })
        }
        IoOpcode::WriteZeroes => {
            let rw = ReadWrite::from_sqe(sqe);
            let (offset, len) = block_range(rw.slba, u64::from(rw.nlb), ns)?;
            let op = IoOp::WriteZeroes { offset, len, deallocate: rw.deac, fua: rw.fua };
            Ok(Prepared { dir: DataDir::None, len: 0, exec: io(op) })
        }
        IoOpcode::DatasetManagement => {
            let dsm = DatasetManagement::from_sqe(sqe);
            let len = dsm.nr * DsmRange::SIZE as u32;
            let op = IoOp::DatasetManagement { ranges: dsm.nr, deallocate: dsm.attr_deallocate };
            Ok(Prepared { dir: DataDir::H2c, len, exec: io(op) })
        }
        _ => Err(Status::INVALID_OPCODE.with_dnr()),
    }
}

/// The byte range of a Read, Write or Compare: inside the namespace and at most MDTS.
fn data_range(rw: &ReadWrite, ns: &Namespace, limits: &Limits) -> Result<(u64, u32), Status> {
    let (offset, len) = block_range(rw.slba, u64::from(rw.nlb), ns)?;
    if len > u64::from(limits.mdts_bytes) {
        return Err(Status::INVALID_FIELD.with_dnr());
    }
    Ok((offset, len as u32))
}

/// `nlb` blocks from `slba`, in bytes, if they lie inside the namespace.
fn block_range(slba: u64, nlb: u64, ns: &Namespace) -> Result<(u64, u64), Status> {
    let end = slba.checked_add(nlb).ok_or(Status::LBA_OUT_OF_RANGE.with_dnr())?;
    if end > ns.blocks() {
        return Err(Status::LBA_OUT_OF_RANGE.with_dnr());
    }
    let shift = ns.block_shift();
    Ok((slba << shift, nlb << shift))
}

/// The deallocate operations a Dataset Management command asks for, all ranges checked first
/// so a bad range fails the command before anything is discarded. Zero-length ranges are
/// skipped.
pub fn deallocate_ranges(data: &[u8], ranges: u32, ns: &Namespace) -> Result<Vec<Op>, Status> {
    let list = DsmRange::decode_list(data, ranges).map_err(|_| Status::DATA_SGL_LENGTH_INVALID.with_dnr())?;
    let mut ops = Vec::with_capacity(ranges as usize);
    for range in list {
        if range.nlb == 0 {
            continue;
        }
        let (offset, len) = block_range(range.slba, u64::from(range.nlb), ns)?;
        ops.push(Op::Deallocate { offset, len });
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use crate::nvme::{IoOpcode, Nsid, SglDescriptor};
    use std::sync::Arc;

    fn table() -> NsTable {
        let ns = Namespace::new(Nsid::new(1).unwrap(), 512, Backend::null(1 << 20), uuid::Uuid::nil(), [0; 16], 1);
        NsTable { generation: 1, namespaces: vec![Arc::new(ns)] }
    }

    fn rw(opcode: IoOpcode, nsid: u32, slba: u64, nlb: u32) -> Sqe {
        let mut sqe = ReadWrite { slba, nlb, fua: false, limited_retry: false, deac: false }.to_sqe(opcode, 7, nsid);
        sqe.dptr = SglDescriptor::transport(nlb * 512).encode();
        sqe
    }

    #[test]
    fn read_write_compare_become_byte_ranges() {
        let t = table();
        let l = Limits::default();
        let p = prepare(&rw(IoOpcode::Read, 1, 2, 8), &t, &l).unwrap();
        assert_eq!((p.dir, p.len), (DataDir::C2h, 4096));
        assert_eq!(p.exec, Exec::Io(IoCmd { ns_index: 0, op: IoOp::Read { offset: 1024, len: 4096 } }));
        let p = prepare(&rw(IoOpcode::Write, 1, 0, 1), &t, &l).unwrap();
        assert_eq!((p.dir, p.len), (DataDir::H2c, 512));
        let p = prepare(&rw(IoOpcode::Compare, 1, 0, 1), &t, &l).unwrap();
        assert_eq!(p.exec, Exec::Io(IoCmd { ns_index: 0, op: IoOp::Compare { offset: 0, len: 512 } }));
    }

    #[test]
    fn bad_commands_get_the_spec_status() {
        let t = table();
        let l = Limits::default();
        let blocks = (1u64 << 20) / 512;
        let err = |sqe: Sqe| prepare(&sqe, &t, &l).unwrap_err();
        assert_eq!(err(rw(IoOpcode::Read, 2, 0, 1)), Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr());
        assert_eq!(err(rw(IoOpcode::Read, 1, blocks, 1)), Status::LBA_OUT_OF_RANGE.with_dnr());
        assert_eq!(err(rw(IoOpcode::Read, 1, blocks - 1, 2)), Status::LBA_OUT_OF_RANGE.with_dnr());
        assert_eq!(err(rw(IoOpcode::Read, 1, u64::MAX, 1)), Status::LBA_OUT_OF_RANGE.with_dnr());
        assert_eq!(err(rw(IoOpcode::Read, 1, 0, 257)), Status::INVALID_FIELD.with_dnr(), "beyond MDTS");
        assert_eq!(err(Sqe::new(0x7E, 1)), Status::INVALID_OPCODE.with_dnr());
        assert!(prepare(&rw(IoOpcode::Read, 1, blocks - 1, 1), &t, &l).is_ok());
    }

    #[test]
    fn flush_broadcast_and_write_zeroes_ignore_mdts() {
        let t = table();
        let l = Limits::default();
        let mut flush = Sqe::new(IoOpcode::Flush.into(), 1);
        flush.nsid = NSID_BROADCAST;
        assert_eq!(
            prepare(&flush, &t, &l).unwrap().exec,
            Exec::Io(IoCmd { ns_index: 0, op: IoOp::Flush { all: true } })
        );
        let p = prepare(&rw(IoOpcode::WriteZeroes, 1, 0, 2048), &t, &l).unwrap();
        assert_eq!(p.len, 0);
        assert_eq!(
            p.exec,
            Exec::Io(IoCmd {
                ns_index: 0,
                op: IoOp::WriteZeroes { offset: 0, len: 1 << 20, deallocate: false, fua: false }
            })
        );
    }

    #[test]
    fn dsm_ranges_are_checked_before_anything_is_discarded() {
        let t = table();
        let ns = &t.namespaces[0];
        let mut data = vec![0u8; 48];
        DsmRange { context_attributes: 0, nlb: 8, slba: 0 }.encode(&mut data[0..16]);
        DsmRange { context_attributes: 0, nlb: 0, slba: 99 }.encode(&mut data[16..32]);
        DsmRange { context_attributes: 0, nlb: 8, slba: 16 }.encode(&mut data[32..48]);
        let ops = deallocate_ranges(&data, 3, ns).unwrap();
        assert_eq!(ops, vec![Op::Deallocate { offset: 0, len: 4096 }, Op::Deallocate { offset: 8192, len: 4096 }]);
        DsmRange { context_attributes: 0, nlb: 8, slba: 4096 }.encode(&mut data[32..48]);
        assert_eq!(deallocate_ranges(&data, 3, ns).unwrap_err(), Status::LBA_OUT_OF_RANGE.with_dnr());
    }
}
