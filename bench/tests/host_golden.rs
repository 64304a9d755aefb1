//! Golden bytes of what the host library sends: command capsules (Connect,
//! Identify, Read, Write with in-capsule data), H2CData and ICReq, written by
//! hand at the offsets of the NVMe/TCP 1.0 figures (CapsuleCmd: Figure 24;
//! H2CData: Figure 26; ICReq: Figure 20) and NVMe Base 2.0 (SQE: Figure 87;
//! Connect: Figures 379 and 380; SGL descriptors: Figures 119 and 120).
//! Each golden PDU must also pass the controller's size-table check.
//!
//! Digests are computed with a bit-at-a-time CRC32C written here from the
//! definition, independent of the crate the library uses.

use fabriq_bench::host::wire::{Framing, ic_req_bytes};
use fabriq_bench::host::{Command, Placement, connect_data};
use fabriq_target::nvme::sqe::Connect;
use fabriq_target::tcp::pdu::{CommonHeader, Digests, H2cData, IcReq, Limits, PduType, Role, check, pda_alignment};

const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:6d1b0e62-94b3-4c1e-a9d5-6f1a7b3c2e10";
const SUBNQN: &str = "nqn.2026-11.dev.fabriq:vol:4f2b8a70-1c3e-4d5f-8a9b-0c1d2e3f4a5b";
const HOSTID: [u8; 16] =
    [0x6d, 0x1b, 0x0e, 0x62, 0x94, 0xb3, 0x4c, 0x1e, 0xa9, 0xd5, 0x6f, 0x1a, 0x7b, 0x3c, 0x2e, 0x10];

fn reference_crc32c(bytes: &[u8]) -> u32 {
    let mut crc = u32::MAX;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0x82F6_3B78 & mask);
        }
    }
    !crc
}

fn put(bytes: &mut [u8], at: usize, value: &[u8]) {
    bytes[at..at + value.len()].copy_from_slice(value);
}

/// Checks `pdu` as the controller would receive it.
fn controller_accepts(pdu: &[u8], digests: Digests, cpda_alignment: u32) {
    let common = CommonHeader::decode(pdu[..8].try_into().unwrap()).unwrap();
    let limits = Limits { max_icd_bytes: 8192, max_data_pdu_bytes: 1 << 20, data_alignment: cpda_alignment };
    let layout = check(&common, Role::Controller, digests, &limits).unwrap();
    assert_eq!(layout.plen as usize, pdu.len());
}

const NONE: Framing = Framing::INITIAL;

#[test]
fn connect_admin_capsule() {
    let connect = Connect { recfmt: 0, qid: 0, sqsize: 31, cattr: 0, kato_ms: 120_000 };
    let data = connect_data(HOSTID, 0xFFFF, SUBNQN, HOSTNQN);
    let capsule = Command::connect(&connect, data).to_capsule(0, NONE, 0);
    assert!(capsule.in_capsule);

    let mut want = vec![0u8; 72 + 1024];
    // Common header: CapsuleCmd, no flags, HLEN 72, PDO 72, PLEN 1096.
    put(&mut want, 0, &[0x04, 0x00, 72, 72, 0x48, 0x04, 0x00, 0x00]);
    // SQE (from byte 8): opcode 7Fh, PSDT 01b (SGL), CID 0, FCTYPE 01h.
    put(&mut want, 8, &[0x7F, 0x40, 0x00, 0x00, 0x01]);
    // SGL1 (SQE bytes 24..40): address 0, length 1024, data block/offset.
    put(&mut want, 8 + 32, &[0x00, 0x04, 0x00, 0x00]);
    want[8 + 39] = 0x01;
    // RECFMT 0, QID 0, SQSIZE 31, CATTR 0, KATO 120000 ms.
    put(&mut want, 8 + 44, &[0x1F, 0x00]);
    put(&mut want, 8 + 48, &120_000u32.to_le_bytes());
    // Connect data: HOSTID, CNTLID FFFFh, SUBNQN at 256, HOSTNQN at 512.
    put(&mut want, 72, &HOSTID);
    put(&mut want, 72 + 16, &[0xFF, 0xFF]);
    put(&mut want, 72 + 256, SUBNQN.as_bytes());
    put(&mut want, 72 + 512, HOSTNQN.as_bytes());

    assert_eq!(capsule.bytes, want);
    controller_accepts(&capsule.bytes, Digests::NONE, 4);
}

#[test]
fn connect_io_capsule_with_digests() {
    let connect = Connect { recfmt: 0, qid: 3, sqsize: 127, cattr: 0x04, kato_ms: 0 };
    let data = connect_data(HOSTID, 0x0021, SUBNQN, HOSTNQN);
    let framing = Framing { digests: Digests { header: true, data: true }, cpda_alignment: 4 };
    let capsule = Command::connect(&connect, data.clone()).to_capsule(0x0102, framing, 0);

    // HDGSTF | DDGSTF, PDO 76 (header and its digest), PLEN 76 + 1024 + 4.
    let mut header = vec![0u8; 72];
    put(&mut header, 0, &[0x04, 0x03, 72, 76, 0x50, 0x04, 0x00, 0x00]);
    put(&mut header, 8, &[0x7F, 0x40, 0x02, 0x01, 0x01]);
    put(&mut header, 8 + 32, &[0x00, 0x04, 0x00, 0x00]);
    header[8 + 39] = 0x01;
    // QID 3, SQSIZE 127, CATTR: disable SQ flow control.
    put(&mut header, 8 + 42, &[0x03, 0x00, 0x7F, 0x00, 0x04]);
    let mut want = header.clone();
    want.extend_from_slice(&reference_crc32c(&header).to_le_bytes());
    want.extend_from_slice(&data);
    want.extend_from_slice(&reference_crc32c(&data).to_le_bytes());
    assert_eq!(&data[16..18], &[0x21, 0x00]);

    assert_eq!(capsule.bytes, want);
    controller_accepts(&capsule.bytes, framing.digests, 4);
}

#[test]
fn identify_controller_capsule() {
    let capsule = Command::identify(0x01, 0, 0).to_capsule(5, NONE, 8192);
    assert!(!capsule.in_capsule);
    let mut want = vec![0u8; 72];
    // No data in the capsule: PDO 0, PLEN 72.
    put(&mut want, 0, &[0x04, 0x00, 72, 0, 72, 0, 0, 0]);
    put(&mut want, 8, &[0x06, 0x40, 0x05, 0x00]);
    // SGL1: transport SGL data block (type 5, subtype Ah), length 4096.
    put(&mut want, 8 + 32, &[0x00, 0x10, 0x00, 0x00]);
    want[8 + 39] = 0x5A;
    // CDW10: CNS 01h.
    want[8 + 40] = 0x01;
    assert_eq!(capsule.bytes, want);
    controller_accepts(&capsule.bytes, Digests::NONE, 4);
}

#[test]
fn read_capsule() {
    let capsule = Command::read(1, 0x1_0000_0002, 8, 4096).to_capsule(0x1234, NONE, 8192);
    let mut want = vec![0u8; 72];
    put(&mut want, 0, &[0x04, 0x00, 72, 0, 72, 0, 0, 0]);
    // Read, SGL, CID 1234h, NSID 1.
    put(&mut want, 8, &[0x02, 0x40, 0x34, 0x12, 0x01, 0x00, 0x00, 0x00]);
    put(&mut want, 8 + 32, &[0x00, 0x10, 0x00, 0x00]);
    want[8 + 39] = 0x5A;
    // SLBA 1_0000_0002h in CDW10/11, NLB 7 (eight blocks, 0's based).
    put(&mut want, 8 + 40, &[0x02, 0, 0, 0, 0x01, 0, 0, 0, 0x07, 0, 0, 0]);
    assert_eq!(capsule.bytes, want);
    controller_accepts(&capsule.bytes, Digests::NONE, 4);
}

#[test]
fn write_capsule_with_in_capsule_data_padded_to_cpda() {
    let data: Vec<u8> = (0..512u32).map(|i| (i * 7) as u8).collect();
    // CPDA 7: data starts at a multiple of 32 bytes.
    let framing = Framing { digests: Digests { header: true, data: false }, cpda_alignment: pda_alignment(7) };
    let capsule = Command::write(2, 16, 1, data.clone(), true).to_capsule(7, framing, 4096);
    assert!(capsule.in_capsule);

    let mut header = vec![0u8; 72];
    // HDGSTF, PDO 96 (72 + 4 rounded up to 32), PLEN 96 + 512 = 608.
    put(&mut header, 0, &[0x04, 0x01, 72, 96, 0x60, 0x02, 0x00, 0x00]);
    put(&mut header, 8, &[0x01, 0x40, 0x07, 0x00, 0x02, 0x00, 0x00, 0x00]);
    // SGL1: in-capsule data block at offset 0, 512 bytes.
    put(&mut header, 8 + 32, &[0x00, 0x02, 0x00, 0x00]);
    header[8 + 39] = 0x01;
    // SLBA 16, NLB 0 (one block), FUA (CDW12 bit 30).
    put(&mut header, 8 + 40, &[0x10, 0, 0, 0, 0, 0, 0, 0, 0x00, 0, 0, 0x40]);
    let mut want = header.clone();
    want.extend_from_slice(&reference_crc32c(&header).to_le_bytes());
    want.resize(96, 0);
    want.extend_from_slice(&data);

    assert_eq!(capsule.bytes, want);
    controller_accepts(&capsule.bytes, framing.digests, 32);
}

#[test]
fn oversized_write_goes_by_r2t_unless_forced() {
    let write = Command::write(1, 0, 16, vec![0; 8192], false);
    let capsule = write.to_capsule(1, NONE, 4096);
    assert!(!capsule.in_capsule);
    assert_eq!(capsule.bytes.len(), 72);
    assert_eq!(capsule.bytes[8 + 39], 0x5A);
    assert_eq!(&capsule.bytes[8 + 32..8 + 36], &[0x00, 0x20, 0x00, 0x00]);

    let forced = write.placed(Placement::InCapsule).to_capsule(1, NONE, 4096);
    assert!(forced.in_capsule);
    assert_eq!(forced.bytes.len(), 72 + 8192);
    assert_eq!(forced.bytes[8 + 39], 0x01);
}

#[test]
fn h2c_data_pdu() {
    let framing = Framing { digests: Digests { header: false, data: true }, cpda_alignment: 4 };
    let header = H2cData { cccid: 0x0A0B, ttag: 0x0C0D, datao: 0x1000, datal: 8, last: true };
    let bytes = framing.h2c_data(&header, b"01234567");
    let mut want = vec![0u8; 24];
    // H2CData, DDGSTF | LAST_PDU, HLEN 24, PDO 24, PLEN 24 + 8 + 4.
    put(&mut want, 0, &[0x06, 0x06, 24, 24, 36, 0, 0, 0]);
    put(&mut want, 8, &[0x0B, 0x0A, 0x0D, 0x0C, 0x00, 0x10, 0, 0, 8, 0, 0, 0]);
    want.extend_from_slice(b"01234567");
    want.extend_from_slice(&reference_crc32c(b"01234567").to_le_bytes());
    assert_eq!(bytes, want);
    controller_accepts(&bytes, framing.digests, 4);
}

#[test]
fn ic_req_pdu() {
    let bytes = ic_req_bytes(&IcReq { pfv: 0, hpda: 3, digests: Digests { header: true, data: false }, maxr2t: 15 });
    let mut want = vec![0u8; 128];
    put(&mut want, 0, &[0x00, 0x00, 128, 0, 128, 0, 0, 0]);
    // PFV 0, HPDA 3, DGST HDGST_ENABLE, MAXR2T 15.
    put(&mut want, 8, &[0, 0, 3, 0x01, 15, 0, 0, 0]);
    assert_eq!(bytes, want);
    controller_accepts(&bytes, Digests::NONE, 4);
    assert_eq!(CommonHeader::decode(bytes[..8].try_into().unwrap()).unwrap().pdu_type, PduType::IcReq);
}
