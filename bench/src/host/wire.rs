//! PDU framing for the host side of NVMe/TCP over any byte stream: what goes
//! on the socket and what comes off it, with no knowledge of commands.
//!
//! Sending: [`Framing`] turns a PDU header and its data into the exact bytes
//! of the wire (header, HDGST, padding to the controller's CPDA, data, DDGST);
//! [`Wire`] writes them, first letting a [`Tamper`] queued by a test rewrite
//! them. Receiving: [`Wire::recv`] reads one whole PDU in the three steps of
//! the PDU module (common header, size-table [`check`], typed decode) and
//! verifies its digests.
//!
//! Invariants:
//! - Nothing is read past the PLEN that [`check`] accepted, so the stream
//!   stays in step after every PDU, even one whose digest is wrong.
//! - When an I/O failure or a malformed header leaves the stream in the middle
//!   of a PDU, the wire is marked broken and refuses every later call with
//!   [`HostError::Broken`]: nothing is ever read or written out of step.
//! - A time-out at a PDU boundary is clean: the wire stays usable.
//! - What [`Framing`] builds passes the controller's [`check`]; only a
//!   [`Tamper`] or [`Wire::send_raw`] sends anything else.

use std::io::{self, Read, Write};
use std::time::Duration;

use fabriq_target::tcp::digest::{self, DIGEST_LEN, DataDigest};
use fabriq_target::tcp::pdu::{
    self, COMMON_HEADER_LEN, CapsuleCmd, CommonHeader, Digests, H2cData, HEADER_BUF_LEN, IcReq, Layout, Limits, Pdu,
    PduType, Role, TermReq, check,
};

use super::error::{DigestKind, HostError, Violation};

/// How a connection frames the PDUs it sends: the digests negotiated and the
/// data alignment the controller asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    /// Digests in use (none before the ICResp).
    pub digests: Digests,
    /// The controller's CPDA in bytes ([`pdu::pda_alignment`]): where data
    /// starts in CapsuleCmd and H2CData PDUs.
    pub cpda_alignment: u32,
}

impl Framing {
    /// Before the ICResp: no digests, 4-byte alignment.
    pub const INITIAL: Framing = Framing { digests: Digests::NONE, cpda_alignment: 4 };

    /// A CapsuleCmd carrying `sqe` and `icd` as in-capsule data.
    pub fn capsule_cmd(&self, sqe: &[u8; 64], icd: &[u8]) -> Vec<u8> {
        let icd_len = u32::try_from(icd.len()).expect("in-capsule data over 4 GiB");
        let capsule = CapsuleCmd { sqe: *sqe };
        self.with_data(icd, |out| capsule.encode(out, self.digests, icd_len, self.cpda_alignment))
    }

    /// An H2CData PDU; `header.datal` must be `data.len()`.
    pub fn h2c_data(&self, header: &H2cData, data: &[u8]) -> Vec<u8> {
        assert_eq!(header.datal as usize, data.len(), "DATAL is not the data length");
        self.with_data(data, |out| header.encode(out, self.digests, self.cpda_alignment))
    }

    fn with_data(&self, data: &[u8], encode: impl FnOnce(&mut [u8]) -> usize) -> Vec<u8> {
        let mut header = [0u8; HEADER_BUF_LEN];
        let data_start = encode(&mut header);
        let digest_len = if self.digests.data && !data.is_empty() { DIGEST_LEN } else { 0 };
        let mut bytes = Vec::with_capacity(data_start + data.len() + digest_len);
        bytes.extend_from_slice(&header[..data_start]);
        bytes.extend_from_slice(data);
        if digest_len > 0 {
            let mut ddgst = DataDigest::new();
            ddgst.update(data);
            bytes.extend_from_slice(&digest::to_wire(ddgst.finish()));
        }
        bytes
    }
}

/// The 128 bytes of an ICReq.
pub fn ic_req_bytes(ic_req: &IcReq) -> Vec<u8> {
    let mut out = [0u8; HEADER_BUF_LEN];
    let len = ic_req.encode(&mut out);
    out[..len].to_vec()
}

/// The bytes of an H2CTermReq (never digests, FLAGS and PDO 0).
pub fn term_req_bytes(term_req: &TermReq) -> Vec<u8> {
    let mut out = [0u8; HEADER_BUF_LEN];
    let len = term_req.encode(&mut out);
    out[..len].to_vec()
}

/// Recomputes the HDGST of an encoded PDU after a test edited its header, so
/// that the controller finds the edited field rather than a digest error.
/// Does nothing when the PDU's FLAGS say it carries no header digest.
pub fn refresh_header_digest(pdu_bytes: &mut [u8]) {
    let hlen = usize::from(pdu_bytes[pdu::offset::HLEN]);
    if pdu_bytes[pdu::offset::FLAGS] & pdu::HDGSTF == 0 || pdu_bytes.len() < hlen + DIGEST_LEN {
        return;
    }
    let hdgst = digest::to_wire(digest::header_digest(&pdu_bytes[..hlen]));
    pdu_bytes[hlen..hlen + DIGEST_LEN].copy_from_slice(&hdgst);
}

/// A one-shot rewrite of the next PDU of one type that the host sends: the
/// hook for the controller's error-path tests (wrong HLEN, PDO, PLEN, TTAG,
/// DATAO, a corrupt digest, ...). It sees the whole encoded PDU, digests
/// included, and may change its length.
pub struct Tamper {
    pdu_type: PduType,
    edit: Edit,
}

/// A rewrite of an encoded PDU.
type Edit = Box<dyn FnOnce(&mut Vec<u8>) + Send>;

impl Tamper {
    /// Rewrites the next PDU of `pdu_type` with `edit`.
    pub fn new(pdu_type: PduType, edit: impl FnOnce(&mut Vec<u8>) + Send + 'static) -> Tamper {
        Tamper { pdu_type, edit: Box::new(edit) }
    }
}

impl std::fmt::Debug for Tamper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tamper({:?})", self.pdu_type)
    }
}

/// One PDU as received: its typed header and all of its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedPdu {
    /// The decoded header (for a TermReq, with the quoted header).
    pub pdu: Pdu,
    /// How the PDU splits, as the size table checked it.
    pub layout: Layout,
    /// Every byte of the PDU, PLEN of them.
    pub bytes: Vec<u8>,
    /// Set when the data did not match its DDGST.
    pub(crate) data_digest_error: Option<digest::DataDigestMismatch>,
}

impl ReceivedPdu {
    /// The PDU type.
    pub fn pdu_type(&self) -> PduType {
        self.layout.pdu_type
    }

    /// FLAGS.
    pub fn flags(&self) -> u8 {
        self.bytes[pdu::offset::FLAGS]
    }

    /// The HLEN bytes of the header.
    pub fn header(&self) -> &[u8] {
        &self.bytes[..usize::from(self.layout.hlen)]
    }

    /// The PDU data: C2HData payload, or the header a TermReq quotes.
    pub fn data(&self) -> &[u8] {
        &self.bytes[self.layout.data_range()]
    }
}

/// Most data one C2HData PDU may carry before the host calls its length out
/// of range: far above any transfer fabriq allows, low enough that a bogus
/// PLEN cannot make the host allocate gigabytes.
pub const MAX_C2H_DATA_BYTES: u32 = 64 << 20;

/// A byte stream that speaks NVMe/TCP PDUs, host side.
#[derive(Debug)]
pub struct Wire<S> {
    stream: S,
    framing: Framing,
    /// What the host accepts in received PDUs: its own HPDA.
    limits: Limits,
    tampers: Vec<Tamper>,
    broken: bool,
}

impl<S: Read + Write> Wire<S> {
    /// A wire over `stream` before the ICReq: no digests, and C2H data
    /// aligned to `hpda_alignment` bytes.
    pub fn new(stream: S, hpda_alignment: u32) -> Wire<S> {
        Wire {
            stream,
            framing: Framing::INITIAL,
            limits: Limits { max_icd_bytes: 0, max_data_pdu_bytes: MAX_C2H_DATA_BYTES, data_alignment: hpda_alignment },
            tampers: Vec::new(),
            broken: false,
        }
    }

    /// How PDUs are framed now.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// Switches to what the ICResp negotiated.
    pub fn set_framing(&mut self, framing: Framing) {
        self.framing = framing;
    }

    /// The stream, to set time-outs or shut it down.
    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// Gives the stream back, for a caller that drives the connection on its
    /// own from here on (the load generator's engine).
    ///
    /// # Panics
    /// When the wire is broken: the stream is not at a PDU boundary.
    pub fn into_stream(self) -> S {
        assert!(!self.broken, "a broken wire is not at a PDU boundary");
        self.stream
    }

    /// Whether an earlier failure left the stream out of step.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Queues a one-shot rewrite of the next PDU of its type.
    pub fn tamper(&mut self, tamper: Tamper) {
        self.tampers.push(tamper);
    }

    /// Sends one encoded PDU of `pdu_type`, rewritten by the first queued
    /// [`Tamper`] for that type, if any.
    pub fn send(&mut self, pdu_type: PduType, mut bytes: Vec<u8>) -> Result<(), HostError> {
        if let Some(at) = self.tampers.iter().position(|t| t.pdu_type == pdu_type) {
            let tamper = self.tampers.remove(at);
            (tamper.edit)(&mut bytes);
        }
        self.send_raw(&bytes)
    }

    /// Sends any bytes, as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), HostError> {
        if self.broken {
            return Err(HostError::Broken);
        }
        if let Err(error) = self.stream.write_all(bytes).and_then(|()| self.stream.flush()) {
            // How much of the PDU went out is unknown.
            self.broken = true;
            return Err(io_error(error, None));
        }
        Ok(())
    }

    /// Receives one whole PDU. `timeout` only names the time-out in the error;
    /// the caller sets it on the stream.
    pub fn recv(&mut self, timeout: Duration) -> Result<ReceivedPdu, HostError> {
        if self.broken {
            return Err(HostError::Broken);
        }
        let mut common = [0u8; COMMON_HEADER_LEN];
        self.fill(&mut common, true, timeout)?;
        let layout = match self.check_common(&common) {
            Ok(layout) => layout,
            Err(fatal) => {
                // The rest of the PDU cannot be delimited.
                self.broken = true;
                return Err(Violation::Malformed(fatal).into());
            }
        };
        let mut bytes = vec![0u8; layout.plen as usize];
        bytes[..COMMON_HEADER_LEN].copy_from_slice(&common);
        self.fill(&mut bytes[COMMON_HEADER_LEN..], false, timeout)?;
        finish_pdu(layout, bytes)
    }

    fn check_common(&self, common: &[u8; COMMON_HEADER_LEN]) -> Result<Layout, pdu::Fatal> {
        let header = CommonHeader::decode(common)?;
        let layout = check(&header, Role::Host, self.framing.digests, &self.limits)?;
        Ok(layout)
    }

    /// Reads exactly `buf.len()` bytes. `at_boundary` says no byte of this
    /// PDU was read yet, so that a time-out or end of stream before the first
    /// byte is clean.
    fn fill(&mut self, buf: &mut [u8], at_boundary: bool, timeout: Duration) -> Result<(), HostError> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.stream.read(&mut buf[filled..]) {
                Ok(0) if at_boundary && filled == 0 => return Err(HostError::Closed),
                Ok(0) => {
                    self.broken = true;
                    return Err(HostError::Io(io::ErrorKind::UnexpectedEof.into()));
                }
                Ok(n) => filled += n,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    if !(at_boundary && filled == 0) {
                        self.broken = true;
                    }
                    return Err(io_error(error, Some(timeout)));
                }
            }
        }
        Ok(())
    }
}

/// Checks the header digest, decodes the typed header and checks the data
/// digest of a PDU read whole.
fn finish_pdu(layout: Layout, bytes: Vec<u8>) -> Result<ReceivedPdu, HostError> {
    let hlen = usize::from(layout.hlen);
    if layout.header_digest_len > 0 {
        let received: [u8; DIGEST_LEN] = bytes[hlen..hlen + DIGEST_LEN].try_into().expect("four bytes");
        if digest::check_header_digest(&bytes[..hlen], received).is_err() {
            return Err(HostError::Digest {
                kind: DigestKind::Header,
                cid: None,
                computed: digest::header_digest(&bytes[..hlen]),
                received: digest::from_wire(received),
            });
        }
    }
    let pdu = Pdu::decode(&bytes).map_err(Violation::Malformed)?;
    let data_digest_error = if layout.data_digest_len > 0 {
        let data = &bytes[layout.data_range()];
        let end = layout.data_range().end;
        let received: [u8; DIGEST_LEN] = bytes[end..end + DIGEST_LEN].try_into().expect("four bytes");
        let mut ddgst = DataDigest::new();
        ddgst.update(data);
        ddgst.check(received).err()
    } else {
        None
    };
    Ok(ReceivedPdu { pdu, layout, bytes, data_digest_error })
}

/// A socket time-out shows as `WouldBlock` (Unix) or `TimedOut` (others).
fn io_error(error: io::Error, timeout: Option<Duration>) -> HostError {
    match (error.kind(), timeout) {
        (io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut, Some(timeout)) => HostError::Timeout(timeout),
        _ => HostError::Io(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fabriq_target::tcp::pdu::{C2hData, CapsuleResp, LAST_PDU, R2t, SUCCESS};
    use std::io::Cursor;

    /// A stream that reads from a script and records what is written.
    struct Script {
        input: Cursor<Vec<u8>>,
        output: Vec<u8>,
    }

    impl Read for Script {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            // One byte at a time, to exercise the partial-read loop.
            let len = buf.len().min(1);
            self.input.read(&mut buf[..len])
        }
    }

    impl Write for Script {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn wire(input: Vec<u8>, digests: Digests) -> Wire<Script> {
        let mut wire = Wire::new(Script { input: Cursor::new(input), output: Vec::new() }, 4);
        wire.set_framing(Framing { digests, cpda_alignment: 4 });
        wire
    }

    const BOTH: Digests = Digests { header: true, data: true };
    const T: Duration = Duration::from_secs(1);

    fn c2h_data(digests: Digests, data: &[u8], flags_success: bool) -> Vec<u8> {
        let header = C2hData { cccid: 7, datao: 0, datal: data.len() as u32, last: true, success: flags_success };
        let mut out = [0u8; HEADER_BUF_LEN];
        let start = header.encode(&mut out, digests, 4);
        let mut bytes = out[..start].to_vec();
        bytes.extend_from_slice(data);
        if digests.data {
            let mut d = DataDigest::new();
            d.update(data);
            bytes.extend_from_slice(&digest::to_wire(d.finish()));
        }
        bytes
    }

    #[test]
    fn receives_c2h_data_with_digests() {
        let bytes = c2h_data(BOTH, b"abcdefgh", true);
        let mut wire = wire(bytes.clone(), BOTH);
        let pdu = wire.recv(T).unwrap();
        assert_eq!(pdu.pdu_type(), PduType::C2hData);
        assert_eq!(pdu.data(), b"abcdefgh");
        assert_eq!(pdu.flags() & (LAST_PDU | SUCCESS), LAST_PDU | SUCCESS);
        assert_eq!(pdu.data_digest_error, None);
        assert_eq!(pdu.bytes, bytes);
        assert!(matches!(wire.recv(T), Err(HostError::Closed)));
    }

    #[test]
    fn data_digest_mismatch_keeps_the_stream_in_step() {
        let mut bytes = c2h_data(BOTH, b"abcdefgh", false);
        let last = bytes.len() - 1;
        bytes[last] ^= 0xFF;
        let resp = {
            let mut out = [0u8; HEADER_BUF_LEN];
            let len = CapsuleResp { cqe: [1; 16] }.encode(&mut out, BOTH);
            out[..len].to_vec()
        };
        bytes.extend_from_slice(&resp);
        let mut wire = wire(bytes, BOTH);
        assert!(wire.recv(T).unwrap().data_digest_error.is_some());
        assert_eq!(wire.recv(T).unwrap().pdu_type(), PduType::CapsuleResp);
    }

    #[test]
    fn header_digest_mismatch_is_an_error() {
        let mut bytes = {
            let mut out = [0u8; HEADER_BUF_LEN];
            let r2t = R2t { cccid: 1, ttag: 2, r2to: 0, r2tl: 4096 };
            let len = r2t.encode(&mut out, BOTH);
            out[..len].to_vec()
        };
        bytes[24] ^= 1;
        let mut wire = wire(bytes, BOTH);
        assert!(matches!(wire.recv(T), Err(HostError::Digest { kind: DigestKind::Header, .. })));
    }

    #[test]
    fn malformed_header_breaks_the_wire() {
        // A CapsuleResp with HLEN 23.
        let bytes = vec![0x05, 0, 23, 0, 24, 0, 0, 0];
        let mut wire = wire(bytes, Digests::NONE);
        match wire.recv(T) {
            Err(HostError::Protocol(Violation::Malformed(fatal))) => {
                assert_eq!(fatal, pdu::Fatal::invalid_field(pdu::offset::HLEN));
            }
            other => panic!("{other:?}"),
        }
        assert!(wire.is_broken());
        assert!(matches!(wire.recv(T), Err(HostError::Broken)));
        assert!(matches!(wire.send_raw(b"x"), Err(HostError::Broken)));
    }

    #[test]
    fn eof_inside_a_pdu_is_not_a_clean_close() {
        let mut bytes = c2h_data(Digests::NONE, b"abcd", false);
        bytes.truncate(bytes.len() - 1);
        let mut wire = wire(bytes, Digests::NONE);
        assert!(matches!(wire.recv(T), Err(HostError::Io(_))));
        assert!(wire.is_broken());
    }

    #[test]
    fn tamper_rewrites_only_the_next_pdu_of_its_type() {
        let mut wire = wire(Vec::new(), Digests::NONE);
        wire.tamper(Tamper::new(PduType::CapsuleCmd, |bytes| bytes[2] = 71));
        let framing = wire.framing();
        let capsule = framing.capsule_cmd(&[0; 64], &[]);
        wire.send(PduType::H2cData, vec![6]).unwrap();
        wire.send(PduType::CapsuleCmd, capsule.clone()).unwrap();
        wire.send(PduType::CapsuleCmd, capsule.clone()).unwrap();
        let out = &wire.stream().output;
        assert_eq!(out[0], 6);
        assert_eq!(out[1 + 2], 71);
        assert_eq!(out[1 + 72 + 2], 72);
    }

    #[test]
    fn refreshed_header_digest_verifies() {
        let framing = Framing { digests: BOTH, cpda_alignment: 4 };
        let mut bytes = framing.capsule_cmd(&[0; 64], &[]);
        bytes[8] = 0x02;
        refresh_header_digest(&mut bytes);
        let received: [u8; 4] = bytes[72..76].try_into().unwrap();
        assert_eq!(digest::check_header_digest(&bytes[..72], received), Ok(()));
    }
}
