//! NVMe/TCP PDUs as types, with no I/O (NVMe TCP Transport Specification 1.0,
//! section 3.6.2; earlier NVMe-oF 1.1 section 7.4, TP 8000).
//!
//! A PDU is read in three steps; this module owns the first and the last:
//! 1. the 8-byte common header is decoded ([`CommonHeader::decode`]) and
//!    [`check`]ed against the size table before a byte of anything else is
//!    read. The returned [`Layout`] says how the rest of the PDU splits:
//!    header, header digest, padding, data, data digest;
//! 2. the caller reads the rest of the header and verifies its digest
//!    ([`super::digest::check_header_digest`]);
//! 3. the typed header is decoded ([`Pdu::decode`], [`CapsuleCmd::decode`],
//!    ...), which checks the fields specific to its PDU type.
//!
//! ```text
//!  0    1     2    3    4         8          HLEN     +4      PDO           PLEN
//!  +----+-----+----+----+---------+----...----+-------+--...--+----...----+-------+
//!  |type|flags|HLEN|PDO |PLEN LE32|PDU-specific| HDGST |  PAD  |   DATA    | DDGST |
//!  +----+-----+----+----+---------+----...----+-------+--...--+----...----+-------+
//!  \---- common header (CH) -----/              optional optional optional optional
//! ```
//!
//! Invariants:
//! - [`check`] validates the header fields in wire order and blames the first
//!   field that disagrees with the fields before it, so the FEI it returns is
//!   the lowest offset in error, as Figures 22 and 23 require.
//! - A [`Layout`] that [`check`] returns always adds up:
//!   `plen == pdo + data_len + data_digest_len` and
//!   `pdo >= hlen + header_digest_len`, and `data_len` is within [`Limits`].
//! - Every multi-byte field is little-endian (section 2).
//! - Encoders write everything that precedes the data (header, header digest,
//!   padding) and return its length, which is where the data goes; what they
//!   write passes [`check`] and decodes back to the same value.
//! - Nothing here panics on bytes from the wire; encoders assert their
//!   arguments, because a bad one is a bug of ours.

use std::ops::Range;

use super::digest::{self, DIGEST_LEN};

/// Bytes in the common header (Figure 19).
pub const COMMON_HEADER_LEN: usize = 8;

/// FLAGS bit: a header digest follows the PDU header.
pub const HDGSTF: u8 = 0x01;
/// FLAGS bit: a data digest follows the PDU data.
pub const DDGSTF: u8 = 0x02;
/// FLAGS bit of H2CData and C2HData: the last data PDU of the transfer.
pub const LAST_PDU: u8 = 0x04;
/// FLAGS bit of C2HData: the command succeeded and no CapsuleResp follows.
pub const SUCCESS: u8 = 0x08;

/// HLEN of ICReq and ICResp (Figures 20 and 21).
pub const IC_HLEN: u8 = 128;
/// HLEN of H2CTermReq and C2HTermReq (Figures 22 and 23).
pub const TERM_REQ_HLEN: u8 = 24;
/// HLEN of CapsuleCmd (Figure 24): common header and a 64-byte SQE.
pub const CAPSULE_CMD_HLEN: u8 = 72;
/// HLEN of CapsuleResp (Figure 25): common header and a 16-byte CQE.
pub const CAPSULE_RESP_HLEN: u8 = 24;
/// HLEN of H2CData and C2HData (Figures 26 and 27).
pub const DATA_HLEN: u8 = 24;
/// HLEN of R2T (Figure 28).
pub const R2T_HLEN: u8 = 24;

/// Most bytes of offending header a TermReq carries (section 3.5).
pub const TERM_REQ_MAX_DATA: usize = 128;
/// Largest PLEN of a TermReq: its header and 128 bytes of data (section 3.5).
pub const TERM_REQ_MAX_PLEN: u32 = 152;
/// Largest HPDA and CPDA: 31, that is 128-byte alignment (Figures 20, 21).
pub const MAX_PDA: u8 = 31;
/// Smallest MAXH2CDATA a controller should announce (Figure 21).
pub const MIN_MAXH2CDATA: u32 = 4096;
/// A buffer this long holds what any encoder writes before the data (PDO is
/// one byte, and ICReq/ICResp are 128 bytes).
pub const HEADER_BUF_LEN: usize = 256;

/// Byte offsets of the fields, counted from the first byte of the PDU. For
/// "Invalid PDU Header Field" and "Unsupported Parameter" the FEI of a TermReq
/// is one of these (Figures 22 and 23).
pub mod offset {
    /// PDU-Type.
    pub const PDU_TYPE: usize = 0;
    /// FLAGS.
    pub const FLAGS: usize = 1;
    /// HLEN.
    pub const HLEN: usize = 2;
    /// PDO.
    pub const PDO: usize = 3;
    /// PLEN, 4 bytes.
    pub const PLEN: usize = 4;
    /// ICReq/ICResp PFV, 2 bytes.
    pub const PFV: usize = 8;
    /// ICReq HPDA.
    pub const HPDA: usize = 10;
    /// ICResp CPDA.
    pub const CPDA: usize = 10;
    /// ICReq/ICResp DGST (digest enables).
    pub const DGST: usize = 11;
    /// ICReq MAXR2T, 4 bytes, 0's based.
    pub const MAXR2T: usize = 12;
    /// ICResp MAXH2CDATA, 4 bytes.
    pub const MAXH2CDATA: usize = 12;
    /// TermReq FES, 2 bytes.
    pub const FES: usize = 8;
    /// TermReq FEI, 4 bytes.
    pub const FEI: usize = 10;
    /// CapsuleCmd SQE, 64 bytes.
    pub const SQE: usize = 8;
    /// CapsuleResp CQE, 16 bytes.
    pub const CQE: usize = 8;
    /// H2CData/C2HData/R2T CCCID, 2 bytes.
    pub const CCCID: usize = 8;
    /// H2CData/R2T TTAG, 2 bytes.
    pub const TTAG: usize = 10;
    /// H2CData/C2HData DATAO, 4 bytes.
    pub const DATAO: usize = 12;
    /// H2CData/C2HData DATAL, 4 bytes.
    pub const DATAL: usize = 16;
    /// R2T R2TO, 4 bytes.
    pub const R2TO: usize = 12;
    /// R2T R2TL, 4 bytes.
    pub const R2TL: usize = 16;
}

/// The direction a PDU type travels in: bit 0 of its opcode (Figure 10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Host to controller: even opcodes.
    H2c,
    /// Controller to host: odd opcodes.
    C2h,
}

/// NVMe/TCP PDU types (Figure 10). Other opcodes are reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PduType {
    /// Initialize Connection Request (3.6.2.2).
    IcReq = 0x00,
    /// Initialize Connection Response (3.6.2.3).
    IcResp = 0x01,
    /// Host to Controller Terminate Connection Request (3.6.2.4).
    H2cTermReq = 0x02,
    /// Controller to Host Terminate Connection Request (3.6.2.5).
    C2hTermReq = 0x03,
    /// Command Capsule (3.6.2.6).
    CapsuleCmd = 0x04,
    /// Response Capsule (3.6.2.7).
    CapsuleResp = 0x05,
    /// Host To Controller Data (3.6.2.8).
    H2cData = 0x06,
    /// Controller To Host Data (3.6.2.9).
    C2hData = 0x07,
    /// Ready to Transfer (3.6.2.10).
    R2t = 0x09,
}

impl PduType {
    /// Every PDU type, in opcode order.
    pub const ALL: [PduType; 9] = [
        PduType::IcReq,
        PduType::IcResp,
        PduType::H2cTermReq,
        PduType::C2hTermReq,
        PduType::CapsuleCmd,
        PduType::CapsuleResp,
        PduType::H2cData,
        PduType::C2hData,
        PduType::R2t,
    ];

    /// Which way this type travels.
    pub fn direction(self) -> Direction {
        if self as u8 & 1 == 0 { Direction::H2c } else { Direction::C2h }
    }

    /// THE SIZE TABLE: the fixed HLEN of each type.
    pub fn hlen(self) -> u8 {
        match self {
            PduType::IcReq | PduType::IcResp => IC_HLEN,
            PduType::H2cTermReq | PduType::C2hTermReq => TERM_REQ_HLEN,
            PduType::CapsuleCmd => CAPSULE_CMD_HLEN,
            PduType::CapsuleResp => CAPSULE_RESP_HLEN,
            PduType::H2cData | PduType::C2hData => DATA_HLEN,
            PduType::R2t => R2T_HLEN,
        }
    }

    /// The FLAGS bits this type defines; the others are reserved.
    pub fn legal_flags(self) -> u8 {
        match self {
            PduType::IcReq | PduType::IcResp | PduType::H2cTermReq | PduType::C2hTermReq => 0,
            PduType::CapsuleCmd => HDGSTF | DDGSTF,
            PduType::CapsuleResp | PduType::R2t => HDGSTF,
            PduType::H2cData => HDGSTF | DDGSTF | LAST_PDU,
            PduType::C2hData => HDGSTF | DDGSTF | LAST_PDU | SUCCESS,
        }
    }

    /// Whether the PDU carries a header digest once it is negotiated: all but
    /// ICReq, ICResp (sent before it is) and the TermReqs (3.3.1.1).
    pub fn takes_header_digest(self) -> bool {
        !matches!(self, PduType::IcReq | PduType::IcResp) && !self.is_term_req()
    }

    /// H2CTermReq or C2HTermReq. Nobody answers a TermReq with a TermReq: a
    /// TermReq that fails [`check`] is dropped and the connection closed at
    /// once (section 3.5).
    pub fn is_term_req(self) -> bool {
        matches!(self, PduType::H2cTermReq | PduType::C2hTermReq)
    }
}

impl TryFrom<u8> for PduType {
    type Error = Fatal;

    fn try_from(value: u8) -> Result<PduType, Fatal> {
        PduType::ALL.into_iter().find(|pdu_type| *pdu_type as u8 == value).ok_or(Fatal::invalid_field(offset::PDU_TYPE))
    }
}

/// The side that receives the PDU being checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Receives ICReq, H2CTermReq, CapsuleCmd and H2CData.
    Controller,
    /// Receives ICResp, C2HTermReq, CapsuleResp, C2HData and R2T.
    Host,
}

impl Role {
    /// Whether this side may ever receive `pdu_type`. A PDU "transferred in a
    /// direction opposite from that with which it is associated is treated as
    /// a fatal transport error" (3.3).
    pub fn receives(self, pdu_type: PduType) -> bool {
        let inbound = match self {
            Role::Controller => Direction::H2c,
            Role::Host => Direction::C2h,
        };
        pdu_type.direction() == inbound
    }

    /// The TermReq this side sends when it detects a fatal error.
    pub fn term_req(self) -> PduType {
        match self {
            Role::Controller => PduType::C2hTermReq,
            Role::Host => PduType::H2cTermReq,
        }
    }
}

/// Which digests are in use on a connection (3.3.1.1): a digest is enabled
/// when it is set in both the ICReq and the ICResp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Digests {
    /// HDGST after every PDU header but ICReq, ICResp and the TermReqs.
    pub header: bool,
    /// DDGST after the data of CapsuleCmd (when it has in-capsule data),
    /// H2CData and C2HData.
    pub data: bool,
}

impl Digests {
    /// No digests (and what ICReq, ICResp and TermReqs always carry).
    pub const NONE: Digests = Digests { header: false, data: false };
    /// DGST bit 0: HDGST_ENABLE.
    pub const HDGST_ENABLE: u8 = 0x01;
    /// DGST bit 1: DDGST_ENABLE.
    pub const DDGST_ENABLE: u8 = 0x02;

    /// Bytes of HDGST a PDU that takes one carries: 0 or 4.
    pub fn header_len(self) -> u8 {
        if self.header { DIGEST_LEN as u8 } else { 0 }
    }

    /// Bytes of DDGST a PDU with data carries: 0 or 4.
    pub fn data_len(self) -> u8 {
        if self.data { DIGEST_LEN as u8 } else { 0 }
    }

    /// The digests enabled in both `self` and `other`: what a controller
    /// answers to a request, and what a connection then uses.
    pub fn both(self, other: Digests) -> Digests {
        Digests { header: self.header && other.header, data: self.data && other.data }
    }

    /// The DGST byte of ICReq/ICResp.
    pub fn to_dgst(self) -> u8 {
        let header = if self.header { Digests::HDGST_ENABLE } else { 0 };
        let data = if self.data { Digests::DDGST_ENABLE } else { 0 };
        header | data
    }

    /// From a DGST byte; bits 7:2 are reserved and ignored.
    pub fn from_dgst(dgst: u8) -> Digests {
        Digests { header: dgst & Digests::HDGST_ENABLE != 0, data: dgst & Digests::DDGST_ENABLE != 0 }
    }
}

/// Fatal Error Status of a TermReq (Figures 22 and 23, bytes 09:08).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Fes {
    /// 01h: an invalid field in a PDU header. FEI: its byte offset.
    InvalidHeaderField = 0x01,
    /// 02h: an unexpected protocol sequence. FEI reserved.
    PduSequenceError = 0x02,
    /// 03h: a header digest did not verify. FEI: the HDGST received.
    HeaderDigestError = 0x03,
    /// 04h: H2CData outside its R2T, or C2HData outside the command's
    /// buffer. FEI reserved.
    DataTransferOutOfRange = 0x04,
    /// 05h, sent by a controller: H2CData with more data than MAXH2CDATA.
    /// The same value sent by a host means "R2T Limit Exceeded" (more R2Ts
    /// outstanding than MAXR2T), see [`Fes::R2T_LIMIT_EXCEEDED`]. FEI reserved.
    DataTransferLimitExceeded = 0x05,
    /// 06h: an unsupported parameter. FEI: its byte offset.
    UnsupportedParameter = 0x06,
}

impl Fes {
    /// 05h as an H2CTermReq (host) means it.
    pub const R2T_LIMIT_EXCEEDED: Fes = Fes::DataTransferLimitExceeded;

    const ALL: [Fes; 6] = [
        Fes::InvalidHeaderField,
        Fes::PduSequenceError,
        Fes::HeaderDigestError,
        Fes::DataTransferOutOfRange,
        Fes::DataTransferLimitExceeded,
        Fes::UnsupportedParameter,
    ];
}

impl TryFrom<u16> for Fes {
    type Error = Fatal;

    fn try_from(value: u16) -> Result<Fes, Fatal> {
        Fes::ALL.into_iter().find(|fes| *fes as u16 == value).ok_or(Fatal::invalid_field(offset::FES))
    }
}

/// A fatal transport error: what the TermReq that ends the connection says
/// (section 3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("NVMe/TCP fatal transport error {fes:?}, FEI {fei:#x}")]
pub struct Fatal {
    /// Fatal Error Status.
    pub fes: Fes,
    /// Fatal Error Information: a field offset for InvalidHeaderField and
    /// UnsupportedParameter, the received HDGST for HeaderDigestError, else 0.
    pub fei: u32,
}

impl Fatal {
    /// Any status with its information.
    pub fn new(fes: Fes, fei: u32) -> Fatal {
        Fatal { fes, fei }
    }

    /// "Invalid PDU Header Field" at byte `field` of the PDU.
    pub fn invalid_field(field: usize) -> Fatal {
        Fatal::new(Fes::InvalidHeaderField, field_offset(field))
    }

    /// "Unsupported Parameter" at byte `field` of the PDU.
    pub fn unsupported(field: usize) -> Fatal {
        Fatal::new(Fes::UnsupportedParameter, field_offset(field))
    }

    /// "PDU Sequence Error".
    pub fn sequence() -> Fatal {
        Fatal::new(Fes::PduSequenceError, 0)
    }

    /// "Data Transfer Out of Range".
    pub fn out_of_range() -> Fatal {
        Fatal::new(Fes::DataTransferOutOfRange, 0)
    }

    /// "Data Transfer Limit Exceeded" (controller) or "R2T Limit Exceeded"
    /// (host): the same code, 05h.
    pub fn limit_exceeded() -> Fatal {
        Fatal::new(Fes::DataTransferLimitExceeded, 0)
    }
}

fn field_offset(field: usize) -> u32 {
    assert!(field < usize::from(IC_HLEN), "field offset {field} is past every PDU header");
    field as u32
}

/// The common header every PDU starts with (Figure 19).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CommonHeader {
    /// PDU-Type.
    pub pdu_type: PduType,
    /// FLAGS: [`HDGSTF`], [`DDGSTF`], [`LAST_PDU`], [`SUCCESS`].
    pub flags: u8,
    /// HLEN: the PDU header length, header digest excluded.
    pub hlen: u8,
    /// PDO: where the data starts, from the first byte of the PDU.
    pub pdo: u8,
    /// PLEN: the whole PDU, digests and padding included.
    pub plen: u32,
}

impl CommonHeader {
    /// Reads the 8 bytes. Only an unknown PDU type fails here; everything
    /// else is [`check`]'s business.
    pub fn decode(bytes: &[u8; COMMON_HEADER_LEN]) -> Result<CommonHeader, Fatal> {
        Ok(CommonHeader {
            pdu_type: PduType::try_from(bytes[offset::PDU_TYPE])?,
            flags: bytes[offset::FLAGS],
            hlen: bytes[offset::HLEN],
            pdo: bytes[offset::PDO],
            plen: get_le32(bytes, offset::PLEN),
        })
    }

    /// The 8 bytes.
    pub fn encode(&self) -> [u8; COMMON_HEADER_LEN] {
        let mut bytes = [0; COMMON_HEADER_LEN];
        bytes[offset::PDU_TYPE] = self.pdu_type as u8;
        bytes[offset::FLAGS] = self.flags;
        bytes[offset::HLEN] = self.hlen;
        bytes[offset::PDO] = self.pdo;
        put_le32(&mut bytes, offset::PLEN, self.plen);
        bytes
    }

    /// Whether FLAGS has `flag` set.
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// What the receiving side accepts, beyond what the specification fixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limits {
    /// Most in-capsule data a CapsuleCmd may carry (IOCCSZ x 16 - 64 on I/O
    /// queues; controllers must accept 8192 bytes on the admin queue, 3.3).
    pub max_icd_bytes: u32,
    /// Most data one H2CData (the MAXH2CDATA we announced) or one C2HData
    /// (what the host is willing to buffer) may carry.
    pub max_data_pdu_bytes: u32,
    /// The PDO alignment this side asked for, in bytes: a controller's own
    /// CPDA, a host's own HPDA, see [`pda_alignment`].
    pub data_alignment: u32,
}

/// The alignment in bytes that an HPDA or CPDA value asks for: 0's based
/// dwords, so 0 is 4 bytes and 31 is 128 (Figures 20 and 21).
pub fn pda_alignment(pda: u8) -> u32 {
    assert!(pda <= MAX_PDA, "PDA {pda} is over {MAX_PDA}");
    (u32::from(pda) + 1) * 4
}

fn assert_alignment(alignment: u32) {
    assert!(
        alignment.is_multiple_of(4) && (4..=pda_alignment(MAX_PDA)).contains(&alignment),
        "data alignment {alignment} is not 4 to 128 bytes in dwords"
    );
}

/// The PDO a sender uses for a PDU with data: the header and its digest,
/// padded up to the alignment the receiver asked for (3.3: "the number of PAD
/// bytes is a function of the required alignment and the size of the PDU
/// Header"). A controller sending C2HData pads to the host's HPDA; a host
/// sending CapsuleCmd or H2CData pads to the controller's CPDA.
pub fn pdo_for(hlen: u8, header_digest: bool, alignment: u32) -> u8 {
    assert_alignment(alignment);
    let digest = if header_digest { DIGEST_LEN as u32 } else { 0 };
    let pdo = (u32::from(hlen) + digest).next_multiple_of(alignment);
    u8::try_from(pdo).expect("PDO fits in a byte for every header that carries data")
}

/// How the rest of a checked PDU splits, from its first byte:
/// `[0, hlen)` header, `[hlen, hlen + header_digest_len)` HDGST, then padding
/// up to `pdo`, `[pdo, pdo + data_len)` data, then `data_digest_len` bytes of
/// DDGST, ending at `plen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Layout {
    /// The type, as checked.
    pub pdu_type: PduType,
    /// HLEN, as in the size table.
    pub hlen: u8,
    /// 0 or 4.
    pub header_digest_len: u8,
    /// Where the data starts. The wire PDO when the PDU has data; HLEN for a
    /// TermReq, whose PDO field is reserved and whose data follows the header
    /// directly; `hlen + header_digest_len` when there is no data.
    pub pdo: u8,
    /// Bytes of data: in-capsule data, H2CData/C2HData payload, or the
    /// offending header a TermReq quotes.
    pub data_len: u32,
    /// 0 or 4.
    pub data_digest_len: u8,
    /// PLEN, as received.
    pub plen: u32,
}

impl Layout {
    /// The header and its digest.
    pub fn header_len(&self) -> usize {
        usize::from(self.hlen) + usize::from(self.header_digest_len)
    }

    /// Bytes of PAD between the header digest and the data.
    pub fn pad_len(&self) -> usize {
        usize::from(self.pdo) - self.header_len()
    }

    /// Where the data lies in the PDU. Contiguous, so it may be read straight
    /// into its destination buffer.
    pub fn data_range(&self) -> Range<usize> {
        let start = usize::from(self.pdo);
        start..start + self.data_len as usize
    }

    /// Bytes to read after the common header and before the data: the rest
    /// of the header, its digest and the padding.
    pub fn header_rest_len(&self) -> usize {
        usize::from(self.pdo) - COMMON_HEADER_LEN
    }
}

/// THE SIZE TABLE: validates a received common header before a byte of
/// anything else is read, and says how the rest of the PDU splits.
///
/// `role` is the side receiving, `digests` what ICReq/ICResp negotiated (the
/// ICs themselves and the TermReqs never carry digests, whatever was agreed),
/// `limits` what this side accepts. Fields are checked in wire order:
/// 1. PDU-Type (FEI 0): a type this role receives.
/// 2. FLAGS (FEI 1): no bit this type does not define; HDGSTF set iff header
///    digests are on; DDGSTF only if data digests are on, and always on
///    H2CData/C2HData when they are; C2HData SUCCESS only with LAST_PDU
///    (3.3.2.1).
/// 3. HLEN (FEI 2): exactly the size table's.
/// 4. PDO (FEI 3): 0 (reserved) on PDUs without data and on TermReqs; on a
///    PDU with data at least HLEN plus the header digest, and a multiple of
///    `limits.data_alignment`. A CapsuleCmd has in-capsule data when DDGSTF
///    is set (data digests on) or PDO is not 0 (off).
/// 5. PLEN (FEI 4): 128 for ICs; HLEN plus header digest for PDUs without
///    data; 24 to 152 for TermReqs; for data, at least PDO + 1 + data digest,
///    and the data within `limits`: in-capsule data over `max_icd_bytes` is an
///    invalid PLEN, H2CData over `max_data_pdu_bytes` (MAXH2CDATA) is "Data
///    Transfer Limit Exceeded", C2HData over it "Data Transfer Out of Range".
///
/// Stateless: an ICReq after the connection is up, or a CapsuleCmd before,
/// is a PDU Sequence Error for the caller's state machine to find.
pub fn check(header: &CommonHeader, role: Role, digests: Digests, limits: &Limits) -> Result<Layout, Fatal> {
    assert_alignment(limits.data_alignment);
    let pdu_type = header.pdu_type;
    if !role.receives(pdu_type) {
        return Err(Fatal::invalid_field(offset::PDU_TYPE));
    }
    let digests = if pdu_type.takes_header_digest() { digests } else { Digests::NONE };
    check_flags(header, digests)?;
    if header.hlen != pdu_type.hlen() {
        return Err(Fatal::invalid_field(offset::HLEN));
    }
    let body = Body::of(header, digests);
    let pdo = check_pdo(header, body, digests, limits.data_alignment)?;
    let (data_len, data_digest_len) = check_plen(header, body, pdo, limits)?;
    Ok(Layout {
        pdu_type,
        hlen: header.hlen,
        header_digest_len: digests.header_len(),
        pdo,
        data_len,
        data_digest_len,
        plen: header.plen,
    })
}

/// What follows the header, as the fields already checked announce it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    /// Nothing: PLEN is exactly the header and its digest.
    Empty,
    /// A TermReq's quote of the offending header, straight after the header.
    Quote,
    /// Data at PDO, possibly with a data digest.
    Data,
}

impl Body {
    fn of(header: &CommonHeader, digests: Digests) -> Body {
        match header.pdu_type {
            PduType::H2cTermReq | PduType::C2hTermReq => Body::Quote,
            PduType::H2cData | PduType::C2hData => Body::Data,
            PduType::CapsuleCmd if capsule_has_data(header, digests) => Body::Data,
            _ => Body::Empty,
        }
    }
}

fn capsule_has_data(header: &CommonHeader, digests: Digests) -> bool {
    if digests.data { header.has(DDGSTF) } else { header.pdo != 0 }
}

fn check_flags(header: &CommonHeader, digests: Digests) -> Result<(), Fatal> {
    let pdu_type = header.pdu_type;
    let data_pdu = matches!(pdu_type, PduType::H2cData | PduType::C2hData);
    let reserved = header.flags & !pdu_type.legal_flags() != 0;
    let header_digest = pdu_type.takes_header_digest() && header.has(HDGSTF) != digests.header;
    let stray_data_digest = header.has(DDGSTF) && !digests.data;
    let missing_data_digest = data_pdu && digests.data && !header.has(DDGSTF);
    let success_not_last = header.has(SUCCESS) && !header.has(LAST_PDU);
    if reserved || header_digest || stray_data_digest || missing_data_digest || success_not_last {
        return Err(Fatal::invalid_field(offset::FLAGS));
    }
    Ok(())
}

fn check_pdo(header: &CommonHeader, body: Body, digests: Digests, alignment: u32) -> Result<u8, Fatal> {
    let header_len = header.hlen + digests.header_len();
    let valid = match body {
        Body::Empty | Body::Quote => header.pdo == 0,
        Body::Data => header.pdo >= header_len && u32::from(header.pdo) % alignment == 0,
    };
    if !valid {
        return Err(Fatal::invalid_field(offset::PDO));
    }
    Ok(match body {
        Body::Empty => header_len,
        Body::Quote => header.hlen,
        Body::Data => header.pdo,
    })
}

/// Returns the data length and data digest length.
fn check_plen(header: &CommonHeader, body: Body, pdo: u8, limits: &Limits) -> Result<(u32, u8), Fatal> {
    let plen = header.plen;
    let bad_plen = Fatal::invalid_field(offset::PLEN);
    match body {
        Body::Empty if plen == u32::from(pdo) => Ok((0, 0)),
        Body::Empty => Err(bad_plen),
        Body::Quote if (u32::from(TERM_REQ_HLEN)..=TERM_REQ_MAX_PLEN).contains(&plen) => {
            Ok((plen - u32::from(TERM_REQ_HLEN), 0))
        }
        Body::Quote => Err(bad_plen),
        Body::Data => {
            let digest_len = if header.has(DDGSTF) { DIGEST_LEN as u8 } else { 0 };
            let before_data = u32::from(pdo) + u32::from(digest_len);
            match plen.checked_sub(before_data) {
                Some(data_len) if data_len > 0 => {
                    check_data_limit(header.pdu_type, data_len, limits)?;
                    Ok((data_len, digest_len))
                }
                _ => Err(bad_plen),
            }
        }
    }
}

fn check_data_limit(pdu_type: PduType, data_len: u32, limits: &Limits) -> Result<(), Fatal> {
    let (limit, error) = match pdu_type {
        PduType::CapsuleCmd => (limits.max_icd_bytes, Fatal::invalid_field(offset::PLEN)),
        PduType::H2cData => (limits.max_data_pdu_bytes, Fatal::limit_exceeded()),
        _ => (limits.max_data_pdu_bytes, Fatal::out_of_range()),
    };
    if data_len > limit { Err(error) } else { Ok(()) }
}

/// A decoded PDU header, one variant per type: what [`Pdu::decode`] hands the
/// state machine after [`check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pdu {
    /// ICReq.
    IcReq(IcReq),
    /// ICResp.
    IcResp(IcResp),
    /// H2CTermReq or C2HTermReq.
    TermReq(TermReq),
    /// CapsuleCmd.
    CapsuleCmd(CapsuleCmd),
    /// CapsuleResp.
    CapsuleResp(CapsuleResp),
    /// H2CData.
    H2cData(H2cData),
    /// C2HData.
    C2hData(C2hData),
    /// R2T.
    R2t(R2t),
}

impl Pdu {
    /// Decodes the header in `bytes` (from the PDU's first byte, at least
    /// HLEN of them; for a TermReq the whole PDU, whose data it quotes).
    pub fn decode(bytes: &[u8]) -> Result<Pdu, Fatal> {
        let first = bytes.first().ok_or(Fatal::invalid_field(offset::PDU_TYPE))?;
        Ok(match PduType::try_from(*first)? {
            PduType::IcReq => Pdu::IcReq(IcReq::decode(bytes)?),
            PduType::IcResp => Pdu::IcResp(IcResp::decode(bytes)?),
            PduType::H2cTermReq | PduType::C2hTermReq => Pdu::TermReq(TermReq::decode(bytes)?),
            PduType::CapsuleCmd => Pdu::CapsuleCmd(CapsuleCmd::decode(bytes)?),
            PduType::CapsuleResp => Pdu::CapsuleResp(CapsuleResp::decode(bytes)?),
            PduType::H2cData => Pdu::H2cData(H2cData::decode(bytes)?),
            PduType::C2hData => Pdu::C2hData(C2hData::decode(bytes)?),
            PduType::R2t => Pdu::R2t(R2t::decode(bytes)?),
        })
    }
}

/// Initialize Connection Request (3.6.2.2, Figure 20): the host's first PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IcReq {
    /// PDU Format Version; 0 is the only one defined.
    pub pfv: u16,
    /// Host PDU Data Alignment for C2H PDUs with data, 0's based dwords, 0 to
    /// 31; see [`pda_alignment`].
    pub hpda: u8,
    /// The digests the host asks for.
    pub digests: Digests,
    /// Most R2Ts outstanding per command, 0's based.
    pub maxr2t: u32,
}

impl IcReq {
    /// Decodes its 128 bytes. PFV other than 0 is an unsupported parameter;
    /// HPDA over 31 an invalid field. DGST bits 7:2 are reserved and ignored.
    pub fn decode(bytes: &[u8]) -> Result<IcReq, Fatal> {
        let bytes = typed_header(bytes, PduType::IcReq)?;
        let pfv = get_le16(bytes, offset::PFV);
        if pfv != 0 {
            return Err(Fatal::unsupported(offset::PFV));
        }
        let hpda = bytes[offset::HPDA];
        if hpda > MAX_PDA {
            return Err(Fatal::invalid_field(offset::HPDA));
        }
        Ok(IcReq {
            pfv,
            hpda,
            digests: Digests::from_dgst(bytes[offset::DGST]),
            maxr2t: get_le32(bytes, offset::MAXR2T),
        })
    }

    /// Writes the 128 bytes and returns 128.
    pub fn encode(&self, out: &mut [u8]) -> usize {
        assert!(self.hpda <= MAX_PDA, "HPDA {} is over {MAX_PDA}", self.hpda);
        let out = start_header(out, IC_HLEN.into(), fixed_header(PduType::IcReq, IC_HLEN.into()));
        put_le16(out, offset::PFV, self.pfv);
        out[offset::HPDA] = self.hpda;
        out[offset::DGST] = self.digests.to_dgst();
        put_le32(out, offset::MAXR2T, self.maxr2t);
        usize::from(IC_HLEN)
    }

    /// How many R2Ts may be outstanding per command (MAXR2T is 0's based).
    pub fn max_outstanding_r2t(&self) -> u64 {
        u64::from(self.maxr2t) + 1
    }
}

/// Initialize Connection Response (3.6.2.3, Figure 21).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IcResp {
    /// PDU Format Version; 0 is the only one defined.
    pub pfv: u16,
    /// Controller PDU Data Alignment for H2C PDUs with data, 0's based dwords,
    /// 0 to 31. Linux hosts refuse any CPDA but 0.
    pub cpda: u8,
    /// The digests the connection uses.
    pub digests: Digests,
    /// Most PDU data bytes per H2CData PDU.
    pub maxh2cdata: u32,
}

impl IcResp {
    /// Decodes its 128 bytes. PFV other than 0 is an unsupported parameter;
    /// CPDA over 31 and a MAXH2CDATA that is not a multiple of dwords are
    /// invalid fields; a MAXH2CDATA under 4096 (which the specification only
    /// says "should" not happen) is refused as unsupported, as Linux does.
    pub fn decode(bytes: &[u8]) -> Result<IcResp, Fatal> {
        let bytes = typed_header(bytes, PduType::IcResp)?;
        let pfv = get_le16(bytes, offset::PFV);
        if pfv != 0 {
            return Err(Fatal::unsupported(offset::PFV));
        }
        let cpda = bytes[offset::CPDA];
        if cpda > MAX_PDA {
            return Err(Fatal::invalid_field(offset::CPDA));
        }
        let maxh2cdata = get_le32(bytes, offset::MAXH2CDATA);
        if !maxh2cdata.is_multiple_of(4) {
            return Err(Fatal::invalid_field(offset::MAXH2CDATA));
        }
        if maxh2cdata < MIN_MAXH2CDATA {
            return Err(Fatal::unsupported(offset::MAXH2CDATA));
        }
        let digests = Digests::from_dgst(bytes[offset::DGST]);
        Ok(IcResp { pfv, cpda, digests, maxh2cdata })
    }

    /// Writes the 128 bytes and returns 128.
    pub fn encode(&self, out: &mut [u8]) -> usize {
        assert!(self.cpda <= MAX_PDA, "CPDA {} is over {MAX_PDA}", self.cpda);
        let out = start_header(out, IC_HLEN.into(), fixed_header(PduType::IcResp, IC_HLEN.into()));
        put_le16(out, offset::PFV, self.pfv);
        out[offset::CPDA] = self.cpda;
        out[offset::DGST] = self.digests.to_dgst();
        put_le32(out, offset::MAXH2CDATA, self.maxh2cdata);
        usize::from(IC_HLEN)
    }

    /// A controller may turn down a digest the host asked for, but enabling
    /// one it did not ask for is an invalid DGST field (3.3.1.1).
    pub fn check_digests(&self, requested: Digests) -> Result<(), Fatal> {
        let unasked_header = self.digests.header && !requested.header;
        let unasked_data = self.digests.data && !requested.data;
        if unasked_header || unasked_data {
            return Err(Fatal::invalid_field(offset::DGST));
        }
        Ok(())
    }
}

/// Up to 128 bytes of the PDU header a TermReq quotes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TermData {
    bytes: [u8; TERM_REQ_MAX_DATA],
    len: u8,
}

impl TermData {
    /// Quotes `header`, cut to 128 bytes.
    pub fn new(header: &[u8]) -> TermData {
        let len = header.len().min(TERM_REQ_MAX_DATA);
        let mut bytes = [0; TERM_REQ_MAX_DATA];
        bytes[..len].copy_from_slice(&header[..len]);
        TermData { bytes, len: len as u8 }
    }

    /// The quoted bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// How many bytes are quoted.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether nothing is quoted.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::fmt::Debug for TermData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TermData({:02x?})", self.as_slice())
    }
}

/// H2CTermReq and C2HTermReq (3.6.2.4 and 3.6.2.5, Figures 22 and 23): the
/// same layout, FES at 8, FEI at 10, reserved to 24, then the quote. Never
/// carries digests; FLAGS and PDO are reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TermReq {
    /// H2C (sent by a host) or C2H (sent by a controller).
    pub direction: Direction,
    /// Fatal Error Status.
    pub fes: Fes,
    /// Fatal Error Information.
    pub fei: u32,
    /// The header of the PDU being processed when the error was found.
    pub data: TermData,
}

impl TermReq {
    /// The TermReq that `receiver`, having found `fatal` in the PDU whose
    /// header is `offending_header`, sends. Never in answer to a TermReq.
    pub fn reply(receiver: Role, fatal: Fatal, offending_header: &[u8]) -> TermReq {
        TermReq {
            direction: receiver.term_req().direction(),
            fes: fatal.fes,
            fei: fatal.fei,
            data: TermData::new(offending_header),
        }
    }

    /// What it reports.
    pub fn fatal(&self) -> Fatal {
        Fatal::new(self.fes, self.fei)
    }

    /// The PDU type for its direction.
    pub fn pdu_type(&self) -> PduType {
        match self.direction {
            Direction::H2c => PduType::H2cTermReq,
            Direction::C2h => PduType::C2hTermReq,
        }
    }

    /// Decodes a whole TermReq (header and quote, PLEN bytes). An unknown FES
    /// is an invalid field; whatever the result, the connection is over.
    pub fn decode(bytes: &[u8]) -> Result<TermReq, Fatal> {
        let pdu_type = term_req_type(bytes)?;
        let header = typed_header(bytes, pdu_type)?;
        let plen = get_le32(header, offset::PLEN);
        let hlen = u32::from(TERM_REQ_HLEN);
        if !(hlen..=TERM_REQ_MAX_PLEN).contains(&plen) || bytes.len() < plen as usize {
            return Err(Fatal::invalid_field(offset::PLEN));
        }
        Ok(TermReq {
            direction: pdu_type.direction(),
            fes: Fes::try_from(get_le16(header, offset::FES))?,
            fei: get_le32(header, offset::FEI),
            data: TermData::new(&bytes[usize::from(TERM_REQ_HLEN)..plen as usize]),
        })
    }

    /// Writes the whole TermReq, quote included, and returns PLEN.
    pub fn encode(&self, out: &mut [u8]) -> usize {
        let plen = usize::from(TERM_REQ_HLEN) + self.data.len();
        let out = start_header(out, plen, fixed_header(self.pdu_type(), plen as u32));
        put_le16(out, offset::FES, self.fes as u16);
        put_le32(out, offset::FEI, self.fei);
        out[usize::from(TERM_REQ_HLEN)..plen].copy_from_slice(self.data.as_slice());
        plen
    }
}

fn term_req_type(bytes: &[u8]) -> Result<PduType, Fatal> {
    match bytes.first().map(|first| PduType::try_from(*first)) {
        Some(Ok(pdu_type)) if pdu_type.is_term_req() => Ok(pdu_type),
        _ => Err(Fatal::invalid_field(offset::PDU_TYPE)),
    }
}

/// Command Capsule (3.6.2.6, Figure 24): an SQE, and in-capsule data when
/// there is any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CapsuleCmd {
    /// The 64-byte submission queue entry, as on the wire.
    pub sqe: [u8; 64],
}

impl CapsuleCmd {
    /// Decodes its 72 bytes.
    pub fn decode(bytes: &[u8]) -> Result<CapsuleCmd, Fatal> {
        let bytes = typed_header(bytes, PduType::CapsuleCmd)?;
        let mut sqe = [0; 64];
        sqe.copy_from_slice(&bytes[offset::SQE..offset::SQE + 64]);
        Ok(CapsuleCmd { sqe })
    }

    /// Writes the header, its digest and the padding for `icd_len` bytes of
    /// in-capsule data aligned to `alignment` (the controller's CPDA), and
    /// returns where the data starts. No data: PDO 0 and no DDGSTF.
    pub fn encode(&self, out: &mut [u8], digests: Digests, icd_len: u32, alignment: u32) -> usize {
        let frame = Frame::new(CAPSULE_CMD_HLEN, digests, icd_len, alignment);
        let out = start_header(out, frame.header_end(), frame.common(PduType::CapsuleCmd, 0));
        out[offset::SQE..offset::SQE + 64].copy_from_slice(&self.sqe);
        frame.finish(out)
    }
}

/// Response Capsule (3.6.2.7, Figure 25): a CQE, never data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CapsuleResp {
    /// The 16-byte completion queue entry, as on the wire.
    pub cqe: [u8; 16],
}

impl CapsuleResp {
    /// Decodes its 24 bytes.
    pub fn decode(bytes: &[u8]) -> Result<CapsuleResp, Fatal> {
        let bytes = typed_header(bytes, PduType::CapsuleResp)?;
        let mut cqe = [0; 16];
        cqe.copy_from_slice(&bytes[offset::CQE..offset::CQE + 16]);
        Ok(CapsuleResp { cqe })
    }

    /// Writes the header and its digest; returns PLEN.
    pub fn encode(&self, out: &mut [u8], digests: Digests) -> usize {
        let frame = Frame::new(CAPSULE_RESP_HLEN, digests, 0, 4);
        let out = start_header(out, frame.header_end(), frame.common(PduType::CapsuleResp, 0));
        out[offset::CQE..offset::CQE + 16].copy_from_slice(&self.cqe);
        frame.finish(out)
    }
}

/// Host To Controller Data (3.6.2.8, Figure 26), answering an R2T.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct H2cData {
    /// The CID of the command the data belongs to.
    pub cccid: u16,
    /// The transfer tag of the R2T it answers.
    pub ttag: u16,
    /// Offset of this data in the command's data buffer.
    pub datao: u32,
    /// Bytes of data in this PDU.
    pub datal: u32,
    /// LAST_PDU: the last H2CData answering that R2T.
    pub last: bool,
}

impl H2cData {
    /// Decodes its 24 bytes. DATAL must be the data length that PLEN, PDO and
    /// DDGSTF imply. DATAO/DATAL are not required to be dword multiples:
    /// byte-granular commands (Security Send) would not fit, and neither
    /// Linux nvmet nor SPDK asks for it.
    pub fn decode(bytes: &[u8]) -> Result<H2cData, Fatal> {
        let bytes = typed_header(bytes, PduType::H2cData)?;
        let datal = data_length(bytes)?;
        Ok(H2cData {
            cccid: get_le16(bytes, offset::CCCID),
            ttag: get_le16(bytes, offset::TTAG),
            datao: get_le32(bytes, offset::DATAO),
            datal,
            last: bytes[offset::FLAGS] & LAST_PDU != 0,
        })
    }

    /// Writes the header, its digest and the padding for `datal` bytes aligned
    /// to `alignment` (the controller's CPDA); returns where the data starts.
    pub fn encode(&self, out: &mut [u8], digests: Digests, alignment: u32) -> usize {
        assert!(self.datal > 0, "an H2CData PDU carries data");
        let frame = Frame::new(DATA_HLEN, digests, self.datal, alignment);
        let last = if self.last { LAST_PDU } else { 0 };
        let out = start_header(out, frame.header_end(), frame.common(PduType::H2cData, last));
        put_le16(out, offset::CCCID, self.cccid);
        put_le16(out, offset::TTAG, self.ttag);
        put_le32(out, offset::DATAO, self.datao);
        put_le32(out, offset::DATAL, self.datal);
        frame.finish(out)
    }
}

/// Controller To Host Data (3.6.2.9, Figure 27).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct C2hData {
    /// The CID of the command the data belongs to.
    pub cccid: u16,
    /// Offset of this data in the command's data buffer.
    pub datao: u32,
    /// Bytes of data in this PDU.
    pub datal: u32,
    /// LAST_PDU: the command's last C2HData.
    pub last: bool,
    /// SUCCESS: the command succeeded and no CapsuleResp follows; only with
    /// `last`, and only when SQ head pointer updates are disabled.
    pub success: bool,
}

impl C2hData {
    /// Decodes its 24 bytes. SUCCESS without LAST_PDU is an invalid FLAGS
    /// field (3.3.2.1); DATAL must be what PLEN, PDO and DDGSTF imply.
    pub fn decode(bytes: &[u8]) -> Result<C2hData, Fatal> {
        let bytes = typed_header(bytes, PduType::C2hData)?;
        let flags = bytes[offset::FLAGS];
        if flags & SUCCESS != 0 && flags & LAST_PDU == 0 {
            return Err(Fatal::invalid_field(offset::FLAGS));
        }
        Ok(C2hData {
            cccid: get_le16(bytes, offset::CCCID),
            datao: get_le32(bytes, offset::DATAO),
            datal: data_length(bytes)?,
            last: flags & LAST_PDU != 0,
            success: flags & SUCCESS != 0,
        })
    }

    /// Writes the header, its digest and the padding for `datal` bytes aligned
    /// to `alignment` (the host's HPDA); returns where the data starts.
    pub fn encode(&self, out: &mut [u8], digests: Digests, alignment: u32) -> usize {
        assert!(self.datal > 0, "a C2HData PDU carries data");
        assert!(self.last || !self.success, "SUCCESS is only set with LAST_PDU");
        let frame = Frame::new(DATA_HLEN, digests, self.datal, alignment);
        let last = if self.last { LAST_PDU } else { 0 };
        let success = if self.success { SUCCESS } else { 0 };
        let out = start_header(out, frame.header_end(), frame.common(PduType::C2hData, last | success));
        put_le16(out, offset::CCCID, self.cccid);
        put_le32(out, offset::DATAO, self.datao);
        put_le32(out, offset::DATAL, self.datal);
        frame.finish(out)
    }
}

/// Ready to Transfer (3.6.2.10, Figure 28): the controller asks for data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct R2t {
    /// The CID of the command whose data is wanted.
    pub cccid: u16,
    /// The controller's tag for this transfer; H2CData echoes it.
    pub ttag: u16,
    /// Offset of the wanted data in the command's data buffer.
    pub r2to: u32,
    /// Bytes wanted.
    pub r2tl: u32,
}

impl R2t {
    /// Decodes its 24 bytes. R2TL 0 is an invalid field: it could only be
    /// answered by an H2CData without data, which does not exist.
    pub fn decode(bytes: &[u8]) -> Result<R2t, Fatal> {
        let bytes = typed_header(bytes, PduType::R2t)?;
        let r2tl = get_le32(bytes, offset::R2TL);
        if r2tl == 0 {
            return Err(Fatal::invalid_field(offset::R2TL));
        }
        Ok(R2t {
            cccid: get_le16(bytes, offset::CCCID),
            ttag: get_le16(bytes, offset::TTAG),
            r2to: get_le32(bytes, offset::R2TO),
            r2tl,
        })
    }

    /// Writes the header and its digest; returns PLEN.
    pub fn encode(&self, out: &mut [u8], digests: Digests) -> usize {
        assert!(self.r2tl > 0, "an R2T asks for data");
        let frame = Frame::new(R2T_HLEN, digests, 0, 4);
        let out = start_header(out, frame.header_end(), frame.common(PduType::R2t, 0));
        put_le16(out, offset::CCCID, self.cccid);
        put_le16(out, offset::TTAG, self.ttag);
        put_le32(out, offset::R2TO, self.r2to);
        put_le32(out, offset::R2TL, self.r2tl);
        frame.finish(out)
    }
}

/// How a PDU that may take digests is framed when we send it.
struct Frame {
    hlen: u8,
    digests: Digests,
    has_data: bool,
    /// Wire PDO: 0 without data.
    pdo: u8,
    plen: u32,
}

impl Frame {
    fn new(hlen: u8, digests: Digests, data_len: u32, alignment: u32) -> Frame {
        let has_data = data_len > 0;
        let pdo = if has_data { pdo_for(hlen, digests.header, alignment) } else { 0 };
        let before_data = if has_data { pdo } else { hlen + digests.header_len() };
        let data_digest = if has_data { digests.data_len() } else { 0 };
        let plen = u32::from(before_data)
            .checked_add(data_len)
            .and_then(|len| len.checked_add(u32::from(data_digest)))
            .expect("PLEN overflows 32 bits");
        Frame { hlen, digests, has_data, pdo, plen }
    }

    /// The common header, with the digest flags and `type_flags` set.
    fn common(&self, pdu_type: PduType, type_flags: u8) -> CommonHeader {
        let header = if self.digests.header { HDGSTF } else { 0 };
        let data = if self.has_data && self.digests.data { DDGSTF } else { 0 };
        let flags = header | data | type_flags;
        CommonHeader { pdu_type, flags, hlen: self.hlen, pdo: self.pdo, plen: self.plen }
    }

    /// Where the data starts: PDO, or the end of the header digest.
    fn header_end(&self) -> usize {
        let header_len = usize::from(self.hlen) + usize::from(self.digests.header_len());
        if self.has_data { usize::from(self.pdo) } else { header_len }
    }

    /// Writes the header digest and zeroes the padding; returns the length of
    /// everything before the data.
    fn finish(&self, out: &mut [u8]) -> usize {
        let hlen = usize::from(self.hlen);
        let header_len = hlen + usize::from(self.digests.header_len());
        if self.digests.header {
            let hdgst = digest::to_wire(digest::header_digest(&out[..hlen]));
            out[hlen..header_len].copy_from_slice(&hdgst);
        }
        out[header_len..self.header_end()].fill(0);
        self.header_end()
    }
}

/// Checks that `out` holds the `written` bytes the encoder is about to write,
/// zeroes the header, writes the common header, and returns `out`.
fn start_header(out: &mut [u8], written: usize, common: CommonHeader) -> &mut [u8] {
    let pdu_type = common.pdu_type;
    assert!(out.len() >= written, "{} bytes do not hold a {pdu_type:?} header", out.len());
    out[..usize::from(common.hlen)].fill(0);
    out[..COMMON_HEADER_LEN].copy_from_slice(&common.encode());
    out
}

/// The common header of a PDU that never takes digests nor padding.
fn fixed_header(pdu_type: PduType, plen: u32) -> CommonHeader {
    CommonHeader { pdu_type, flags: 0, hlen: pdu_type.hlen(), pdo: 0, plen }
}

/// The first HLEN bytes of `bytes`, once sure they are long enough and start
/// with the right type and HLEN.
fn typed_header(bytes: &[u8], pdu_type: PduType) -> Result<&[u8], Fatal> {
    let hlen = usize::from(pdu_type.hlen());
    if bytes.first() != Some(&(pdu_type as u8)) {
        return Err(Fatal::invalid_field(offset::PDU_TYPE));
    }
    if bytes.len() < hlen || bytes[offset::HLEN] != pdu_type.hlen() {
        return Err(Fatal::invalid_field(offset::HLEN));
    }
    Ok(&bytes[..hlen])
}

/// DATAL of an H2CData/C2HData header, which must equal PLEN - PDO - DDGST.
fn data_length(bytes: &[u8]) -> Result<u32, Fatal> {
    let datal = get_le32(bytes, offset::DATAL);
    let digest = if bytes[offset::FLAGS] & DDGSTF != 0 { DIGEST_LEN as u32 } else { 0 };
    let pdo = u32::from(bytes[offset::PDO]);
    let implied = get_le32(bytes, offset::PLEN).checked_sub(pdo).and_then(|len| len.checked_sub(digest));
    if pdo == 0 || implied != Some(datal) || datal == 0 {
        return Err(Fatal::invalid_field(offset::DATAL));
    }
    Ok(datal)
}

fn get_le16(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn get_le32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn put_le16(bytes: &mut [u8], at: usize, value: u16) {
    bytes[at..at + 2].copy_from_slice(&value.to_le_bytes());
}

fn put_le32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

#[cfg(test)]
mod check_tests;
#[cfg(test)]
mod golden_tests;
#[cfg(test)]
mod prop_tests;
