//! NVM command set I/O on a [`Connection`] to an I/O queue: Read, Write,
//! Compare, Write Zeroes, Flush, Dataset Management (deallocate). One call,
//! one command, waited for; pipelined I/O uses [`Command`] builders with
//! [`Connection::submit`] and [`Connection::wait_any`].
//!
//! Block counts (`nlb`) are counts, 1 to 65536, as in `ReadWrite`; the
//! 0's based wire form is the nvme layer's business. The transfer length is
//! the buffer's: the host does not know the block size, so a buffer that
//! does not match `nlb` blocks is sent as it is (and the controller should
//! fail the command).
//!
//! Invariant: a completion is returned whatever its status; only transport
//! failures are errors.

use super::command::Command;
use super::connection::{Completion, Connection};
use super::error::HostError;

impl Connection {
    /// Reads `nlb` blocks at `slba` into `buf`. The data is copied into `buf`
    /// when the command succeeds; the completion's `data` is left empty.
    pub fn read(&mut self, nsid: u32, slba: u64, nlb: u32, buf: &mut [u8]) -> Result<Completion, HostError> {
        let mut completion = self.execute(Command::read(nsid, slba, nlb, buf.len()))?;
        if completion.is_success() {
            buf.copy_from_slice(&completion.data);
        }
        completion.data = Vec::new();
        Ok(completion)
    }

    /// Writes `data` as `nlb` blocks at `slba`: in the capsule when it fits
    /// [`Connection::icd_limit`], else by R2T.
    pub fn write(&mut self, nsid: u32, slba: u64, nlb: u32, data: &[u8], fua: bool) -> Result<Completion, HostError> {
        self.execute(Command::write(nsid, slba, nlb, data.to_vec(), fua))
    }

    /// Compares `nlb` blocks at `slba` with `data` (Compare Failure status
    /// when they differ).
    pub fn compare(&mut self, nsid: u32, slba: u64, nlb: u32, data: &[u8]) -> Result<Completion, HostError> {
        self.execute(Command::compare(nsid, slba, nlb, data.to_vec()))
    }

    /// Flush.
    pub fn flush(&mut self, nsid: u32) -> Result<Completion, HostError> {
        self.execute(Command::flush(nsid))
    }

    /// Write Zeroes of `nlb` blocks at `slba`, deallocating them if asked.
    pub fn write_zeroes(&mut self, nsid: u32, slba: u64, nlb: u32, deallocate: bool) -> Result<Completion, HostError> {
        self.execute(Command::write_zeroes(nsid, slba, nlb, deallocate))
    }

    /// Dataset Management deallocating `ranges` of (SLBA, block count).
    pub fn dsm_deallocate(&mut self, nsid: u32, ranges: &[(u64, u32)]) -> Result<Completion, HostError> {
        self.execute(Command::dsm_deallocate(nsid, ranges))
    }
}
