//! Golden bytes for every PDU type, written by hand from the figures of the
//! NVMe TCP Transport Specification 1.0 (section 3.6.2): with and without
//! digests, with and without padding. Each test encodes, compares the bytes,
//! checks the common header against the size table and decodes back.
//!
//! Header digests are computed with the bit-at-a-time reference CRC32C of the
//! digest tests, not with the crate the code uses.

use super::*;
use crate::tcp::digest::tests::reference_crc32c;

/// Byte the output buffer starts filled with, so that a byte the encoder
/// forgot to write shows up.
const POISON: u8 = 0xEE;

fn encoded(encode: impl FnOnce(&mut [u8]) -> usize) -> Vec<u8> {
    let mut out = [POISON; HEADER_BUF_LEN];
    let len = encode(&mut out);
    out[..len].to_vec()
}

/// `header` followed by its reference HDGST, little-endian.
fn with_hdgst(header: &[u8]) -> Vec<u8> {
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(&reference_crc32c(header).to_le_bytes());
    bytes
}

fn padded(mut bytes: Vec<u8>, pdo: usize) -> Vec<u8> {
    bytes.resize(pdo, 0);
    bytes
}

fn limits(alignment: u32) -> Limits {
    Limits { max_icd_bytes: 8192, max_data_pdu_bytes: 1 << 20, data_alignment: alignment }
}

/// Checks the common header of `bytes` as `receiver` would and returns the
/// layout.
fn layout(bytes: &[u8], receiver: Role, digests: Digests, alignment: u32) -> Layout {
    let common = CommonHeader::decode(bytes[..8].try_into().unwrap()).unwrap();
    check(&common, receiver, digests, &limits(alignment)).unwrap()
}

fn sqe() -> [u8; 64] {
    std::array::from_fn(|i| i as u8)
}

fn cqe() -> [u8; 16] {
    std::array::from_fn(|i| 0xA0 + i as u8)
}

const BOTH: Digests = Digests { header: true, data: true };
const HEADER_ONLY: Digests = Digests { header: true, data: false };

#[test]
fn common_header() {
    let common = CommonHeader { pdu_type: PduType::R2t, flags: 0x01, hlen: 24, pdo: 0, plen: 28 };
    let bytes = [0x09, 0x01, 0x18, 0x00, 0x1C, 0x00, 0x00, 0x00];
    assert_eq!(common.encode(), bytes);
    assert_eq!(CommonHeader::decode(&bytes), Ok(common));
    let big = CommonHeader { plen: 0x0403_0201, ..common };
    assert_eq!(big.encode()[4..], [0x01, 0x02, 0x03, 0x04]);
}

#[test]
fn ic_req() {
    let pdu = IcReq { pfv: 0, hpda: 3, digests: BOTH, maxr2t: 0x0000_0102 };
    let mut expected = vec![
        0x00, 0x00, 0x80, 0x00, 0x80, 0x00, 0x00, 0x00, // CH: HLEN = PLEN = 128
        0x00, 0x00, // PFV
        0x03, // HPDA: 16-byte alignment
        0x03, // DGST: HDGST_ENABLE | DDGST_ENABLE
        0x02, 0x01, 0x00, 0x00, // MAXR2T, 0's based
    ];
    expected.resize(128, 0);
    let bytes = encoded(|out| pdu.encode(out));
    assert_eq!(bytes, expected);
    // ICReq never carries digests, whatever the connection will use.
    let layout = layout(&bytes, Role::Controller, BOTH, 4);
    assert_eq!((layout.header_digest_len, layout.pdo, layout.data_len), (0, 128, 0));
    assert_eq!(IcReq::decode(&bytes), Ok(pdu));
    assert_eq!(pdu.max_outstanding_r2t(), 0x103);
    assert_eq!(pda_alignment(pdu.hpda), 16);
}

#[test]
fn ic_resp() {
    let pdu = IcResp { pfv: 0, cpda: 0, digests: HEADER_ONLY, maxh2cdata: 0x0002_0000 };
    let mut expected = vec![
        0x01, 0x00, 0x80, 0x00, 0x80, 0x00, 0x00, 0x00, // CH
        0x00, 0x00, // PFV
        0x00, // CPDA: 4-byte alignment
        0x01, // DGST: HDGST_ENABLE
        0x00, 0x00, 0x02, 0x00, // MAXH2CDATA: 128 KiB
    ];
    expected.resize(128, 0);
    let bytes = encoded(|out| pdu.encode(out));
    assert_eq!(bytes, expected);
    assert_eq!(layout(&bytes, Role::Host, BOTH, 4).plen, 128);
    assert_eq!(IcResp::decode(&bytes), Ok(pdu));
}

#[test]
fn c2h_term_req_quotes_the_offending_header() {
    let offending = [0x06, 0x00, 0x18, 0x18, 0x1F, 0x00, 0x00, 0x00];
    let fatal = Fatal::invalid_field(offset::PLEN);
    let pdu = TermReq::reply(Role::Controller, fatal, &offending);
    let mut expected = vec![
        0x03, 0x00, 0x18, 0x00, 0x20, 0x00, 0x00, 0x00, // CH: C2HTermReq, PLEN 32
        0x01, 0x00, // FES: Invalid PDU Header Field
        0x04, 0x00, 0x00, 0x00, // FEI: PLEN is at byte 4
    ];
    expected.resize(24, 0);
    expected.extend_from_slice(&offending);
    let mut out = [POISON; HEADER_BUF_LEN];
    let len = pdu.encode(&mut out);
    assert_eq!(out[..len], expected[..]);
    let layout = layout(&expected, Role::Host, BOTH, 4);
    assert_eq!((layout.pdo, layout.data_len, layout.header_digest_len), (24, 8, 0));
    let decoded = TermReq::decode(&expected).unwrap();
    assert_eq!(decoded, pdu);
    assert_eq!(decoded.fatal(), fatal);
    assert_eq!(decoded.data.as_slice(), offending);
}

#[test]
fn h2c_term_req_header_digest_error() {
    let fatal = Fatal::new(Fes::HeaderDigestError, 0xDEAD_BEEF);
    let pdu = TermReq::reply(Role::Host, fatal, &[]);
    let mut expected = vec![
        0x02, 0x00, 0x18, 0x00, 0x18, 0x00, 0x00, 0x00, // CH: H2CTermReq, PLEN 24
        0x03, 0x00, // FES: Header Digest Error
        0xEF, 0xBE, 0xAD, 0xDE, // FEI: the HDGST received
    ];
    expected.resize(24, 0);
    let mut out = [POISON; HEADER_BUF_LEN];
    let len = pdu.encode(&mut out);
    assert_eq!(out[..len], expected[..]);
    assert_eq!(layout(&expected, Role::Controller, BOTH, 4).data_len, 0);
    assert_eq!(TermReq::decode(&expected), Ok(pdu));
}

#[test]
fn term_req_quote_is_cut_at_128_bytes() {
    let ic_req = [0x5Au8; 128 + 4];
    let pdu = TermReq::reply(Role::Controller, Fatal::unsupported(offset::PFV), &ic_req);
    let mut out = [POISON; HEADER_BUF_LEN];
    assert_eq!(pdu.encode(&mut out), 152);
    assert_eq!(out[4..8], [152, 0, 0, 0]);
    assert_eq!(out[8..10], [0x06, 0x00]);
    assert_eq!(out[10..14], [0x08, 0, 0, 0]);
    assert_eq!(out[24..152], [0x5A; 128]);
}

#[test]
fn capsule_cmd_without_data() {
    let pdu = CapsuleCmd { sqe: sqe() };
    let mut expected = vec![0x04, 0x00, 0x48, 0x00, 0x48, 0x00, 0x00, 0x00];
    expected.extend_from_slice(&sqe());
    let bytes = encoded(|out| pdu.encode(out, Digests::NONE, 0, 4));
    assert_eq!(bytes, expected);
    let layout = layout(&bytes, Role::Controller, Digests::NONE, 4);
    assert_eq!((layout.pdo, layout.data_len, layout.plen), (72, 0, 72));
    assert_eq!(CapsuleCmd::decode(&bytes), Ok(pdu));
}

#[test]
fn capsule_cmd_without_data_with_digests() {
    // Data digests on, but no in-capsule data: no DDGSTF, PDO 0.
    let pdu = CapsuleCmd { sqe: sqe() };
    let mut header = vec![0x04, 0x01, 0x48, 0x00, 0x4C, 0x00, 0x00, 0x00];
    header.extend_from_slice(&sqe());
    let bytes = encoded(|out| pdu.encode(out, BOTH, 0, 4));
    assert_eq!(bytes, with_hdgst(&header));
    let layout = layout(&bytes, Role::Controller, BOTH, 4);
    assert_eq!((layout.header_digest_len, layout.pdo, layout.data_len), (4, 76, 0));
    assert_eq!(CapsuleCmd::decode(&bytes), Ok(pdu));
}

#[test]
fn capsule_cmd_with_data_and_digests() {
    // 512 bytes of in-capsule data: PDO 76, PLEN 76 + 512 + 4 = 592.
    let pdu = CapsuleCmd { sqe: sqe() };
    let mut header = vec![0x04, 0x03, 0x48, 0x4C, 0x50, 0x02, 0x00, 0x00];
    header.extend_from_slice(&sqe());
    let bytes = encoded(|out| pdu.encode(out, BOTH, 512, 4));
    assert_eq!(bytes, with_hdgst(&header));
    let layout = layout(&bytes, Role::Controller, BOTH, 4);
    assert_eq!(layout.data_range(), 76..588);
    assert_eq!((layout.data_digest_len, layout.pad_len()), (4, 0));
    assert_eq!(CapsuleCmd::decode(&bytes), Ok(pdu));
}

#[test]
fn capsule_cmd_with_data_padded_to_cpda() {
    // CPDA 0Fh: 64-byte alignment, so the 72-byte header is padded to 128.
    let pdu = CapsuleCmd { sqe: sqe() };
    let mut header = vec![0x04, 0x00, 0x48, 0x80, 0x90, 0x00, 0x00, 0x00];
    header.extend_from_slice(&sqe());
    let bytes = encoded(|out| pdu.encode(out, Digests::NONE, 16, pda_alignment(15)));
    assert_eq!(bytes, padded(header, 128));
    let layout = layout(&bytes, Role::Controller, Digests::NONE, 64);
    assert_eq!((layout.pad_len(), layout.data_len, layout.plen), (56, 16, 144));
    assert_eq!(CapsuleCmd::decode(&bytes), Ok(pdu));
}

#[test]
fn capsule_resp() {
    let pdu = CapsuleResp { cqe: cqe() };
    let mut expected = vec![0x05, 0x00, 0x18, 0x00, 0x18, 0x00, 0x00, 0x00];
    expected.extend_from_slice(&cqe());
    let bytes = encoded(|out| pdu.encode(out, Digests::NONE));
    assert_eq!(bytes, expected);
    assert_eq!(layout(&bytes, Role::Host, Digests::NONE, 4).plen, 24);
    assert_eq!(CapsuleResp::decode(&bytes), Ok(pdu));
}

#[test]
fn capsule_resp_with_header_digest() {
    let pdu = CapsuleResp { cqe: cqe() };
    let mut header = vec![0x05, 0x01, 0x18, 0x00, 0x1C, 0x00, 0x00, 0x00];
    header.extend_from_slice(&cqe());
    let bytes = encoded(|out| pdu.encode(out, BOTH));
    assert_eq!(bytes, with_hdgst(&header));
    let layout = layout(&bytes, Role::Host, BOTH, 4);
    assert_eq!((layout.pdo, layout.data_len, layout.data_digest_len), (28, 0, 0));
    assert_eq!(CapsuleResp::decode(&bytes), Ok(pdu));
}

#[test]
fn h2c_data() {
    let pdu = H2cData { cccid: 0x1234, ttag: 0x0005, datao: 0x1000, datal: 0x200, last: true };
    let expected = vec![
        0x06, 0x04, 0x18, 0x18, 0x18, 0x02, 0x00, 0x00, // CH: LAST_PDU, PDO 24, PLEN 536
        0x34, 0x12, // CCCID
        0x05, 0x00, // TTAG
        0x00, 0x10, 0x00, 0x00, // DATAO
        0x00, 0x02, 0x00, 0x00, // DATAL
        0x00, 0x00, 0x00, 0x00, // reserved
    ];
    let bytes = encoded(|out| pdu.encode(out, Digests::NONE, 4));
    assert_eq!(bytes, expected);
    let layout = layout(&bytes, Role::Controller, Digests::NONE, 4);
    assert_eq!(layout.data_range(), 24..536);
    assert_eq!(H2cData::decode(&bytes), Ok(pdu));
}

#[test]
fn h2c_data_with_digests() {
    let pdu = H2cData { cccid: 0x1234, ttag: 0x0005, datao: 0, datal: 0x200, last: false };
    let header = [
        0x06, 0x03, 0x18, 0x1C, 0x20, 0x02, 0x00, 0x00, // CH: PDO 28, PLEN 28 + 512 + 4
        0x34, 0x12, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];
    let bytes = encoded(|out| pdu.encode(out, BOTH, 4));
    assert_eq!(bytes, with_hdgst(&header));
    let layout = layout(&bytes, Role::Controller, BOTH, 4);
    assert_eq!((layout.data_len, layout.data_digest_len), (512, 4));
    assert_eq!(H2cData::decode(&bytes), Ok(pdu));
}

#[test]
fn h2c_data_padded_like_figure_8() {
    // Figure 8: CPDA 0Fh, no header digest: 40 bytes of PAD, data at 64.
    let pdu = H2cData { cccid: 1, ttag: 2, datao: 0, datal: 64, last: true };
    let header = vec![
        0x06, 0x04, 0x18, 0x40, 0x80, 0x00, 0x00, 0x00, // CH: PDO 64, PLEN 128
        0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];
    let bytes = encoded(|out| pdu.encode(out, Digests::NONE, pda_alignment(0x0F)));
    assert_eq!(bytes, padded(header, 64));
    assert_eq!(layout(&bytes, Role::Controller, Digests::NONE, 64).pad_len(), 40);
    assert_eq!(H2cData::decode(&bytes), Ok(pdu));
}

#[test]
fn c2h_data_padded_like_figure_9() {
    // Figure 9: HPDA 03h, no header digest: 16-byte alignment, 8 bytes of PAD.
    let pdu = C2hData { cccid: 7, datao: 0, datal: 0x1000, last: true, success: true };
    let header = vec![
        0x07, 0x0C, 0x18, 0x20, 0x20, 0x10, 0x00, 0x00, // CH: LAST_PDU|SUCCESS, PDO 32
        0x07, 0x00, // CCCID
        0x00, 0x00, // reserved
        0x00, 0x00, 0x00, 0x00, // DATAO
        0x00, 0x10, 0x00, 0x00, // DATAL
        0x00, 0x00, 0x00, 0x00, // reserved
    ];
    let bytes = encoded(|out| pdu.encode(out, Digests::NONE, pda_alignment(3)));
    assert_eq!(bytes, padded(header, 32));
    let layout = layout(&bytes, Role::Host, Digests::NONE, 16);
    assert_eq!((layout.pad_len(), layout.data_range()), (8, 32..0x1020));
    assert_eq!(C2hData::decode(&bytes), Ok(pdu));
}

#[test]
fn c2h_data_with_digests_and_padding() {
    // HPDA 3 with a header digest: 24 + 4 = 28, padded to 32.
    let pdu = C2hData { cccid: 0xBEEF, datao: 0x2000, datal: 0x10, last: false, success: false };
    let header = [
        0x07, 0x03, 0x18, 0x20, 0x34, 0x00, 0x00, 0x00, // CH: PDO 32, PLEN 32 + 16 + 4
        0xEF, 0xBE, 0x00, 0x00, 0x00, 0x20, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];
    let bytes = encoded(|out| pdu.encode(out, BOTH, 16));
    assert_eq!(bytes, padded(with_hdgst(&header), 32));
    let layout = layout(&bytes, Role::Host, BOTH, 16);
    assert_eq!((layout.header_len(), layout.pad_len(), layout.header_rest_len()), (28, 4, 24));
    assert_eq!(C2hData::decode(&bytes), Ok(pdu));
}

#[test]
fn r2t() {
    let pdu = R2t { cccid: 0x0102, ttag: 0x0304, r2to: 0x0BB8, r2tl: 0x2000 };
    let expected = vec![
        0x09, 0x00, 0x18, 0x00, 0x18, 0x00, 0x00, 0x00, // CH
        0x02, 0x01, // CCCID
        0x04, 0x03, // TTAG
        0xB8, 0x0B, 0x00, 0x00, // R2TO
        0x00, 0x20, 0x00, 0x00, // R2TL
        0x00, 0x00, 0x00, 0x00, // reserved
    ];
    let bytes = encoded(|out| pdu.encode(out, Digests::NONE));
    assert_eq!(bytes, expected);
    assert_eq!(layout(&bytes, Role::Host, Digests::NONE, 4).plen, 24);
    assert_eq!(R2t::decode(&bytes), Ok(pdu));
}

#[test]
fn r2t_with_header_digest() {
    let pdu = R2t { cccid: 0x0102, ttag: 0x0304, r2to: 0, r2tl: 0x0BB8 };
    let header = [
        0x09, 0x01, 0x18, 0x00, 0x1C, 0x00, 0x00, 0x00, 0x02, 0x01, 0x04, 0x03, 0x00, 0x00, 0x00, 0x00, 0xB8, 0x0B,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];
    let bytes = encoded(|out| pdu.encode(out, HEADER_ONLY));
    assert_eq!(bytes, with_hdgst(&header));
    assert_eq!(layout(&bytes, Role::Host, HEADER_ONLY, 4).header_digest_len, 4);
    assert_eq!(crate::tcp::digest::check_header_digest(&bytes[..24], bytes[24..28].try_into().unwrap()), Ok(()));
    assert_eq!(R2t::decode(&bytes), Ok(pdu));
}

#[test]
fn pdo_for_pads_to_the_alignment() {
    assert_eq!(pdo_for(24, false, 4), 24);
    assert_eq!(pdo_for(24, true, 4), 28);
    assert_eq!(pdo_for(24, false, 16), 32);
    assert_eq!(pdo_for(24, true, 8), 32);
    assert_eq!(pdo_for(72, true, 4), 76);
    assert_eq!(pdo_for(72, true, 12), 84);
    assert_eq!(pdo_for(72, true, 128), 128);
    assert_eq!(pdo_for(24, false, 64), 64);
}

#[test]
fn pda_values() {
    assert_eq!(pda_alignment(0), 4);
    assert_eq!(pda_alignment(1), 8);
    assert_eq!(pda_alignment(2), 12);
    assert_eq!(pda_alignment(31), 128);
}

#[test]
fn digest_negotiation() {
    let asked = Digests { header: true, data: false };
    let offered = BOTH;
    assert_eq!(asked.both(offered), asked);
    assert_eq!(Digests::from_dgst(0xFF), BOTH);
    assert_eq!(BOTH.to_dgst(), 0x03);
    assert_eq!(IcResp { pfv: 0, cpda: 0, digests: asked, maxh2cdata: 4096 }.check_digests(asked), Ok(()));
    let pushy = IcResp { pfv: 0, cpda: 0, digests: BOTH, maxh2cdata: 4096 };
    assert_eq!(pushy.check_digests(asked), Err(Fatal::invalid_field(11)));
}
