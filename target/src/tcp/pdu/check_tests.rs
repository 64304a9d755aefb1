//! Exhaustive tests of [`check`]: hand-written cases for each rule (the FES
//! and FEI each rejection must carry), then sweeps over types x roles x
//! digests x flags x HLEN x PDO x PLEN x alignments compared with a model
//! written separately from the code, as a flat table of what Figures 10 and
//! 19 to 28 say, checked field by field in wire order.

use super::*;

const ALL_DIGESTS: [Digests; 4] = [
    Digests { header: false, data: false },
    Digests { header: true, data: false },
    Digests { header: false, data: true },
    Digests { header: true, data: true },
];

const ROLES: [Role; 2] = [Role::Controller, Role::Host];

const INVALID: u16 = 0x01;
const OUT_OF_RANGE: u16 = 0x04;
const LIMIT_EXCEEDED: u16 = 0x05;

/// What the body of a PDU type may be, per its figure.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// ICReq/ICResp: PLEN fixed at 128.
    Ic,
    /// Header (and digest) only: PLEN is their length.
    Bare,
    /// TermReq: PLEN 24 to 152.
    Term,
    /// CapsuleCmd: in-capsule data optional.
    OptionalData,
    /// H2CData/C2HData: data required.
    Data,
}

/// One row per PDU type: opcode, the side that receives it, HLEN, the FLAGS
/// bits its figure defines, whether digests apply, its shape.
struct Row {
    opcode: u8,
    receiver: Role,
    hlen: u8,
    flags: u8,
    digests: bool,
    shape: Shape,
}

#[rustfmt::skip]
const TABLE: [Row; 9] = [
    Row { opcode: 0, receiver: Role::Controller, hlen: 128, flags: 0, digests: false, shape: Shape::Ic },
    Row { opcode: 1, receiver: Role::Host, hlen: 128, flags: 0, digests: false, shape: Shape::Ic },
    Row { opcode: 2, receiver: Role::Controller, hlen: 24, flags: 0, digests: false, shape: Shape::Term },
    Row { opcode: 3, receiver: Role::Host, hlen: 24, flags: 0, digests: false, shape: Shape::Term },
    Row { opcode: 4, receiver: Role::Controller, hlen: 72, flags: 0b0011, digests: true, shape: Shape::OptionalData },
    Row { opcode: 5, receiver: Role::Host, hlen: 24, flags: 0b0001, digests: true, shape: Shape::Bare },
    Row { opcode: 6, receiver: Role::Controller, hlen: 24, flags: 0b0111, digests: true, shape: Shape::Data },
    Row { opcode: 7, receiver: Role::Host, hlen: 24, flags: 0b1111, digests: true, shape: Shape::Data },
    Row { opcode: 9, receiver: Role::Host, hlen: 24, flags: 0b0001, digests: true, shape: Shape::Bare },
];

/// The expected outcome: the layout as (pdo, data_len, data_digest_len,
/// header_digest_len), or the (FES, FEI) of the rejection.
type Outcome = Result<(u8, u32, u8, u8), (u16, u32)>;

/// The model of [`check`], on raw bytes and in wide integers.
fn model(ch: [u8; 8], role: Role, negotiated: Digests, limits: &Limits) -> Outcome {
    let invalid = |fei: u32| Err((INVALID, fei));
    let Some(row) = TABLE.iter().find(|row| row.opcode == ch[0]) else {
        return invalid(0);
    };
    if row.receiver != role {
        return invalid(0);
    }
    let (hd, dd) = if row.digests { (negotiated.header, negotiated.data) } else { (false, false) };
    let (flags, hlen, pdo) = (ch[1], ch[2], i64::from(ch[3]));
    let plen = i64::from(u32::from_le_bytes([ch[4], ch[5], ch[6], ch[7]]));
    let hdgstf = flags & 1 != 0;
    let ddgstf = flags & 2 != 0;
    if flags & !row.flags != 0
        || (row.digests && hdgstf != hd)
        || (ddgstf && !dd)
        || (row.shape == Shape::Data && dd && !ddgstf)
        || (flags & 8 != 0 && flags & 4 == 0)
    {
        return invalid(1);
    }
    if hlen != row.hlen {
        return invalid(2);
    }
    let header_len = i64::from(hlen) + if hd { 4 } else { 0 };
    let has_data = match row.shape {
        Shape::Data => true,
        Shape::OptionalData if dd => ddgstf,
        Shape::OptionalData => pdo != 0,
        _ => false,
    };
    let aligned = pdo % i64::from(limits.data_alignment) == 0;
    if (has_data && (pdo < header_len || !aligned)) || (!has_data && pdo != 0) {
        return invalid(3);
    }
    let hdl = if hd { 4 } else { 0 };
    match row.shape {
        Shape::Ic | Shape::Bare | Shape::OptionalData if !has_data => {
            if plen != header_len {
                return invalid(4);
            }
            Ok((header_len as u8, 0, 0, hdl))
        }
        Shape::Term => {
            if !(24..=152).contains(&plen) {
                return invalid(4);
            }
            Ok((24, (plen - 24) as u32, 0, 0))
        }
        _ => {
            let ddgst = if ddgstf { 4 } else { 0 };
            let data_len = plen - pdo - ddgst;
            if data_len < 1 {
                return invalid(4);
            }
            let (limit, over) = match ch[0] {
                4 => (limits.max_icd_bytes, (INVALID, 4)),
                6 => (limits.max_data_pdu_bytes, (LIMIT_EXCEEDED, 0)),
                _ => (limits.max_data_pdu_bytes, (OUT_OF_RANGE, 0)),
            };
            if data_len > i64::from(limit) {
                return Err(over);
            }
            Ok((pdo as u8, data_len as u32, ddgst as u8, hdl))
        }
    }
}

/// [`check`] on raw bytes, in the model's terms.
fn actual(ch: [u8; 8], role: Role, digests: Digests, limits: &Limits) -> Outcome {
    let common = CommonHeader::decode(&ch).map_err(|f| (f.fes as u16, f.fei))?;
    match check(&common, role, digests, limits) {
        Ok(layout) => {
            assert_layout_adds_up(&layout, &common);
            Ok((layout.pdo, layout.data_len, layout.data_digest_len, layout.header_digest_len))
        }
        Err(fatal) => Err((fatal.fes as u16, fatal.fei)),
    }
}

fn assert_layout_adds_up(layout: &Layout, common: &CommonHeader) {
    assert_eq!(layout.pdu_type, common.pdu_type);
    assert_eq!(layout.hlen, common.pdu_type.hlen());
    assert_eq!(layout.plen, common.plen);
    assert!(usize::from(layout.pdo) >= layout.header_len());
    let end = layout.data_range().end as u64 + u64::from(layout.data_digest_len);
    assert_eq!(end, u64::from(layout.plen), "{layout:?}");
}

fn ch(opcode: u8, flags: u8, hlen: u8, pdo: u8, plen: u32) -> [u8; 8] {
    let p = plen.to_le_bytes();
    [opcode, flags, hlen, pdo, p[0], p[1], p[2], p[3]]
}

const LIMITS: Limits = Limits { max_icd_bytes: 8192, max_data_pdu_bytes: 131_072, data_alignment: 4 };

/// Counts the outcomes a sweep saw, so that no sweep passes vacuously.
#[derive(Default)]
struct Tally {
    accepted: usize,
    rejected: std::collections::BTreeMap<(u16, u32), usize>,
}

impl Tally {
    fn compare(&mut self, bytes: [u8; 8], role: Role, digests: Digests, limits: &Limits) {
        let expected = model(bytes, role, digests, limits);
        let got = actual(bytes, role, digests, limits);
        assert_eq!(got, expected, "{bytes:02x?} {role:?} {digests:?} {limits:?}");
        match got {
            Ok(_) => self.accepted += 1,
            Err(key) => *self.rejected.entry(key).or_default() += 1,
        }
    }

    fn assert_saw(&self, outcomes: &[(u16, u32)]) {
        assert!(self.accepted > 0, "nothing was accepted");
        for outcome in outcomes {
            assert!(self.rejected.contains_key(outcome), "never saw {outcome:?}: {:?}", self.rejected);
        }
    }
}

// ---------------------------------------------------------------------------
// Hand-written cases: one per rule, with the FES and FEI it must produce.

fn rejects(bytes: [u8; 8], role: Role, digests: Digests, fes: Fes, fei: u32) {
    let common = CommonHeader::decode(&bytes);
    let result = common.and_then(|common| check(&common, role, digests, &LIMITS));
    assert_eq!(result, Err(Fatal::new(fes, fei)), "{bytes:02x?}");
}

fn accepts(bytes: [u8; 8], role: Role, digests: Digests) -> Layout {
    let common = CommonHeader::decode(&bytes).unwrap();
    check(&common, role, digests, &LIMITS).unwrap()
}

const CTRL: Role = Role::Controller;
const HOST: Role = Role::Host;
const INV: Fes = Fes::InvalidHeaderField;
const NO: Digests = Digests::NONE;
const HD: Digests = Digests { header: true, data: false };
const DD: Digests = Digests { header: false, data: true };
const BOTH: Digests = Digests { header: true, data: true };

#[test]
fn unknown_and_reserved_opcodes_are_invalid_type() {
    for opcode in [0x08, 0x0A, 0x0B, 0x10, 0x7F, 0x80, 0xFF] {
        for role in ROLES {
            rejects(ch(opcode, 0, 24, 0, 24), role, NO, INV, 0);
        }
    }
}

#[test]
fn a_pdu_in_the_wrong_direction_is_invalid_type() {
    // Section 3.3: "transferred in a direction opposite ... fatal".
    rejects(ch(0x05, 0, 24, 0, 24), CTRL, NO, INV, 0);
    rejects(ch(0x09, 0, 24, 0, 24), CTRL, NO, INV, 0);
    rejects(ch(0x04, 0, 72, 0, 72), HOST, NO, INV, 0);
    rejects(ch(0x00, 0, 128, 0, 128), HOST, NO, INV, 0);
    rejects(ch(0x01, 0, 128, 0, 128), CTRL, NO, INV, 0);
    rejects(ch(0x02, 0, 24, 0, 24), HOST, NO, INV, 0);
}

#[test]
fn reserved_flags_are_invalid_flags() {
    rejects(ch(0x00, 0x01, 128, 0, 128), CTRL, BOTH, INV, 1);
    rejects(ch(0x02, 0x01, 24, 0, 24), CTRL, BOTH, INV, 1);
    rejects(ch(0x04, 0x04, 72, 0, 72), CTRL, NO, INV, 1);
    rejects(ch(0x05, 0x02, 24, 0, 24), HOST, DD, INV, 1);
    rejects(ch(0x06, 0x08, 24, 24, 28), CTRL, NO, INV, 1);
    rejects(ch(0x07, 0x10, 24, 24, 28), HOST, NO, INV, 1);
    rejects(ch(0x09, 0x04, 24, 0, 24), HOST, NO, INV, 1);
}

#[test]
fn hdgstf_must_match_negotiation() {
    // 3.3.1.1: set in all PDUs but ICs and TermReqs iff header digests are on.
    rejects(ch(0x04, 0x00, 72, 0, 76), CTRL, HD, INV, 1);
    rejects(ch(0x04, 0x01, 72, 0, 76), CTRL, NO, INV, 1);
    rejects(ch(0x05, 0x00, 24, 0, 28), HOST, HD, INV, 1);
    accepts(ch(0x05, 0x01, 24, 0, 28), HOST, HD);
    // TermReqs never carry it, even with header digests on.
    accepts(ch(0x02, 0x00, 24, 0, 24), CTRL, BOTH);
}

#[test]
fn ddgstf_must_match_negotiation_and_data() {
    // Data digests off: DDGSTF never.
    rejects(ch(0x06, 0x02, 24, 24, 32), CTRL, NO, INV, 1);
    // On: always on H2CData/C2HData.
    rejects(ch(0x06, 0x00, 24, 24, 28), CTRL, DD, INV, 1);
    rejects(ch(0x07, 0x04, 24, 24, 28), HOST, DD, INV, 1);
    // On a CapsuleCmd it says whether there is in-capsule data: set without
    // data, PDO 0 disagrees; clear with data, PDO disagrees.
    rejects(ch(0x04, 0x02, 72, 0, 72), CTRL, DD, INV, 3);
    rejects(ch(0x04, 0x00, 72, 72, 80), CTRL, DD, INV, 3);
    let with = accepts(ch(0x04, 0x02, 72, 72, 80), CTRL, DD);
    assert_eq!((with.data_len, with.data_digest_len), (4, 4));
    let without = accepts(ch(0x04, 0x00, 72, 0, 72), CTRL, DD);
    assert_eq!((without.data_len, without.data_digest_len), (0, 0));
}

#[test]
fn success_needs_last_pdu() {
    // 3.3.2.1: SUCCESS without LAST_PDU: Invalid PDU Header Field, FLAGS.
    rejects(ch(0x07, 0x08, 24, 24, 28), HOST, NO, INV, 1);
    accepts(ch(0x07, 0x0C, 24, 24, 28), HOST, NO);
    accepts(ch(0x07, 0x04, 24, 24, 28), HOST, NO);
}

#[test]
fn hlen_is_the_size_table() {
    for (opcode, hlen, role) in [
        (0x00, 128, CTRL),
        (0x01, 128, HOST),
        (0x02, 24, CTRL),
        (0x03, 24, HOST),
        (0x04, 72, CTRL),
        (0x05, 24, HOST),
        (0x09, 24, HOST),
    ] {
        for wrong in [0, 8, hlen - 1, hlen + 1, 255] {
            rejects(ch(opcode, 0, wrong, 0, u32::from(hlen)), role, NO, INV, 2);
        }
        accepts(ch(opcode, 0, hlen, 0, u32::from(hlen)), role, NO);
    }
    for opcode in [0x06, 0x07] {
        let role = if opcode == 0x06 { CTRL } else { HOST };
        rejects(ch(opcode, 0, 28, 28, 32), role, NO, INV, 2);
        accepts(ch(opcode, 0, 24, 28, 32), role, NO);
    }
}

#[test]
fn pdo_is_reserved_without_data() {
    rejects(ch(0x00, 0, 128, 128, 128), CTRL, NO, INV, 3);
    rejects(ch(0x03, 0, 24, 24, 32), HOST, NO, INV, 3);
    rejects(ch(0x05, 0, 24, 24, 24), HOST, NO, INV, 3);
    rejects(ch(0x09, 1, 24, 28, 28), HOST, HD, INV, 3);
}

#[test]
fn pdo_of_data_pdus() {
    // Inside the header or its digest.
    rejects(ch(0x06, 0, 24, 0, 28), CTRL, NO, INV, 3);
    rejects(ch(0x06, 0, 24, 20, 28), CTRL, NO, INV, 3);
    rejects(ch(0x06, 1, 24, 24, 32), CTRL, HD, INV, 3);
    rejects(ch(0x04, 0, 72, 68, 80), CTRL, NO, INV, 3);
    // Not a multiple of the alignment.
    rejects(ch(0x06, 0, 24, 26, 30), CTRL, NO, INV, 3);
    // Padding beyond the minimum is accepted if aligned.
    let layout = accepts(ch(0x06, 0, 24, 32, 40), CTRL, NO);
    assert_eq!((layout.pad_len(), layout.data_len), (8, 8));
}

fn check_aligned(bytes: [u8; 8], digests: Digests, alignment: u32) -> Result<Layout, Fatal> {
    let limits = Limits { data_alignment: alignment, ..LIMITS };
    check(&CommonHeader::decode(&bytes).unwrap(), CTRL, digests, &limits)
}

#[test]
fn pdo_alignment_follows_limits() {
    let bad_pdo = Err(Fatal::invalid_field(3));
    assert_eq!(check_aligned(ch(0x06, 0, 24, 32, 40), NO, 64), bad_pdo);
    assert_eq!(check_aligned(ch(0x06, 0, 24, 64, 72), NO, 64).unwrap().pad_len(), 40);
    // CPDA 2: 12-byte alignment, not a power of two.
    assert_eq!(check_aligned(ch(0x04, 1, 72, 84, 88), HD, 12).unwrap().pad_len(), 8);
    assert_eq!(check_aligned(ch(0x04, 1, 72, 76, 88), HD, 12), bad_pdo);
}

#[test]
fn plen_of_fixed_size_pdus() {
    rejects(ch(0x00, 0, 128, 0, 132), CTRL, BOTH, INV, 4);
    rejects(ch(0x01, 0, 128, 0, 127), HOST, NO, INV, 4);
    rejects(ch(0x05, 0, 24, 0, 28), HOST, NO, INV, 4);
    rejects(ch(0x05, 1, 24, 0, 24), HOST, HD, INV, 4);
    rejects(ch(0x09, 0, 24, 0, 0), HOST, NO, INV, 4);
    rejects(ch(0x04, 0, 72, 0, 80), CTRL, NO, INV, 4);
    rejects(ch(0x04, 0, 72, 0, u32::MAX), CTRL, NO, INV, 4);
}

#[test]
fn plen_of_term_reqs() {
    // 3.5: at least the 24-byte header, at most 152 (128 bytes of quote).
    rejects(ch(0x02, 0, 24, 0, 23), CTRL, NO, INV, 4);
    rejects(ch(0x02, 0, 24, 0, 153), CTRL, NO, INV, 4);
    rejects(ch(0x03, 0, 24, 0, 0x0010_0000), HOST, NO, INV, 4);
    assert_eq!(accepts(ch(0x03, 0, 24, 0, 152), HOST, NO).data_len, 128);
    assert_eq!(accepts(ch(0x02, 0, 24, 0, 24), CTRL, NO).data_len, 0);
}

#[test]
fn plen_of_data_pdus() {
    // No room for data, or for the digest.
    rejects(ch(0x06, 0, 24, 24, 24), CTRL, NO, INV, 4);
    rejects(ch(0x06, 0, 24, 24, 20), CTRL, NO, INV, 4);
    rejects(ch(0x06, 2, 24, 24, 28), CTRL, DD, INV, 4);
    rejects(ch(0x04, 0, 72, 72, 72), CTRL, NO, INV, 4);
    let one = accepts(ch(0x06, 2, 24, 24, 29), CTRL, DD);
    assert_eq!((one.data_range(), one.data_digest_len), (24..25, 4));
}

#[test]
fn data_over_the_limits() {
    let icd = 72 + 8192;
    accepts(ch(0x04, 0, 72, 72, icd), CTRL, NO);
    rejects(ch(0x04, 0, 72, 72, icd + 1), CTRL, NO, INV, 4);
    // 3.3.2.2: H2CData over MAXH2CDATA is "Data Transfer Limit Exceeded".
    let limit = Fes::DataTransferLimitExceeded;
    let h2c = 28 + 131_072;
    accepts(ch(0x06, 1, 24, 28, h2c), CTRL, HD);
    rejects(ch(0x06, 1, 24, 28, h2c + 1), CTRL, HD, limit, 0);
    rejects(ch(0x06, 1, 24, 28, u32::MAX), CTRL, HD, limit, 0);
    // C2HData over what the host buffers is out of range of any command.
    let c2h = 24 + 131_072 + 4;
    accepts(ch(0x07, 2, 24, 24, c2h), HOST, DD);
    rejects(ch(0x07, 2, 24, 24, c2h + 1), HOST, DD, Fes::DataTransferOutOfRange, 0);
}

#[test]
fn the_lowest_field_in_error_is_blamed() {
    // Wrong flags, HLEN, PDO and PLEN at once: FLAGS.
    rejects(ch(0x06, 0x80, 0, 3, 0), CTRL, NO, INV, 1);
    // Wrong HLEN, PDO and PLEN: HLEN.
    rejects(ch(0x06, 0, 0, 3, 0), CTRL, NO, INV, 2);
    // Wrong PDO and PLEN: PDO.
    rejects(ch(0x06, 0, 24, 3, 0), CTRL, NO, INV, 3);
    // Wrong type and everything: the type.
    rejects(ch(0x05, 0xFF, 0, 3, 0), CTRL, NO, INV, 0);
}

#[test]
fn ics_ignore_negotiated_digests() {
    for digests in ALL_DIGESTS {
        let layout = accepts(ch(0x00, 0, 128, 0, 128), CTRL, digests);
        assert_eq!((layout.header_digest_len, layout.pdo), (0, 128));
        assert_eq!(layout.header_rest_len(), 120);
    }
}

#[test]
#[should_panic(expected = "data alignment")]
fn an_alignment_that_no_pda_gives_is_a_bug() {
    let _ = check_aligned(ch(0x06, 0, 24, 24, 28), NO, 6);
}

// ---------------------------------------------------------------------------
// Sweeps against the model.

/// Opcodes: every defined one, the reserved 08h, and a few beyond.
const OPCODES: [u8; 13] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0x0A, 0x40, 0xFF];
const ALIGNMENTS: [u32; 4] = [4, 12, 16, 128];

fn plens_near(pdo: u8) -> Vec<u32> {
    let p = u32::from(pdo);
    let mut plens = vec![0, 23, 24, 28, 72, 76, 127, 128, 152, 153, u32::MAX];
    plens.extend([p, p + 1, p + 4, p + 5, p + 8, p + 8192, p + 8196, p + 8197]);
    plens.extend([p + 131_072, p + 131_076, p + 131_077]);
    plens
}

#[test]
fn every_opcode_byte() {
    let mut tally = Tally::default();
    for opcode in 0..=u8::MAX {
        for role in ROLES {
            for (hlen, plen) in [(24, 24), (72, 72), (128, 128)] {
                tally.compare(ch(opcode, 0, hlen, 0, plen), role, Digests::NONE, &LIMITS);
            }
        }
    }
    tally.assert_saw(&[(INVALID, 0)]);
}

#[test]
fn every_flags_byte() {
    let mut tally = Tally::default();
    for opcode in OPCODES {
        let hlen = TABLE.iter().find(|row| row.opcode == opcode).map_or(24, |row| row.hlen);
        for role in ROLES {
            for digests in ALL_DIGESTS {
                for flags in 0..=u8::MAX {
                    for pdo in [0, hlen, hlen + 4, 32] {
                        for plen in plens_near(pdo) {
                            tally.compare(ch(opcode, flags, hlen, pdo, plen), role, digests, &LIMITS);
                        }
                    }
                }
            }
        }
    }
    tally.assert_saw(&[(INVALID, 0), (INVALID, 1), (INVALID, 3), (INVALID, 4)]);
    tally.assert_saw(&[(LIMIT_EXCEEDED, 0), (OUT_OF_RANGE, 0)]);
}

/// The flags a valid PDU of `row` may have under `digests`.
fn plausible_flags(row: &Row, digests: Digests) -> Vec<u8> {
    (0..=0x0F)
        .filter(|flags| flags & !row.flags == 0)
        .filter(|flags| {
            let hd = !row.digests || (flags & 1 != 0) == digests.header;
            hd && (flags & 2 == 0 || digests.data)
        })
        .collect()
}

#[test]
fn every_hlen_byte() {
    let mut tally = Tally::default();
    for row in &TABLE {
        for digests in ALL_DIGESTS {
            for flags in plausible_flags(row, digests) {
                for hlen in 0..=u8::MAX {
                    for pdo in [0, row.hlen, row.hlen + 4] {
                        for plen in plens_near(pdo) {
                            let bytes = ch(row.opcode, flags, hlen, pdo, plen);
                            tally.compare(bytes, row.receiver, digests, &LIMITS);
                        }
                    }
                }
            }
        }
    }
    tally.assert_saw(&[(INVALID, 1), (INVALID, 2), (INVALID, 3), (INVALID, 4)]);
}

#[test]
fn every_pdo_byte_and_alignment() {
    let mut tally = Tally::default();
    for row in &TABLE {
        for digests in ALL_DIGESTS {
            for flags in plausible_flags(row, digests) {
                for data_alignment in ALIGNMENTS {
                    let limits = Limits { data_alignment, ..LIMITS };
                    for pdo in 0..=u8::MAX {
                        for plen in plens_near(pdo) {
                            let bytes = ch(row.opcode, flags, row.hlen, pdo, plen);
                            tally.compare(bytes, row.receiver, digests, &limits);
                        }
                    }
                }
            }
        }
    }
    tally.assert_saw(&[(INVALID, 1), (INVALID, 3), (INVALID, 4)]);
    tally.assert_saw(&[(LIMIT_EXCEEDED, 0), (OUT_OF_RANGE, 0)]);
}

#[test]
fn every_small_plen() {
    let mut tally = Tally::default();
    for row in &TABLE {
        for digests in ALL_DIGESTS {
            for flags in plausible_flags(row, digests) {
                let header_len = row.hlen + if row.digests && digests.header { 4 } else { 0 };
                for pdo in [0, header_len, header_len.next_multiple_of(16)] {
                    for plen in 0..=600 {
                        let bytes = ch(row.opcode, flags, row.hlen, pdo, plen);
                        tally.compare(bytes, row.receiver, digests, &LIMITS);
                    }
                }
            }
        }
    }
    tally.assert_saw(&[(INVALID, 1), (INVALID, 3), (INVALID, 4)]);
}

#[test]
fn plen_around_every_limit() {
    let mut tally = Tally::default();
    for row in &TABLE {
        for digests in ALL_DIGESTS {
            for flags in plausible_flags(row, digests) {
                for max in [0, 1, 4096, 8192] {
                    let limits = Limits { max_icd_bytes: max, max_data_pdu_bytes: max, ..LIMITS };
                    let pdo = row.hlen + if row.digests && digests.header { 4 } else { 0 };
                    for extra in 0..12 {
                        let plen = u32::from(pdo) + max + extra;
                        let bytes = ch(row.opcode, flags, row.hlen, pdo, plen.saturating_sub(4));
                        tally.compare(bytes, row.receiver, digests, &limits);
                        tally.compare(ch(row.opcode, flags, row.hlen, pdo, plen), row.receiver, digests, &limits);
                    }
                }
            }
        }
    }
    tally.assert_saw(&[(INVALID, 4), (LIMIT_EXCEEDED, 0), (OUT_OF_RANGE, 0)]);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

    #[test]
    fn any_header_matches_the_model(
        bytes in proptest::prelude::any::<[u8; 8]>(),
        controller in proptest::prelude::any::<bool>(),
        header in proptest::prelude::any::<bool>(),
        data in proptest::prelude::any::<bool>(),
        pda in 0..=MAX_PDA,
        max_icd_bytes in 0..20_000u32,
        max_data_pdu_bytes in 0..300_000u32,
    ) {
        let role = if controller { Role::Controller } else { Role::Host };
        let data_alignment = pda_alignment(pda);
        let limits = Limits { max_icd_bytes, max_data_pdu_bytes, data_alignment };
        let digests = Digests { header, data };
        let expected = model(bytes, role, digests, &limits);
        proptest::prop_assert_eq!(actual(bytes, role, digests, &limits), expected);
    }
}
