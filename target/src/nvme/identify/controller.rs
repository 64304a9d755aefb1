//! Identify Controller (CNS 01h, NVMe Base 2.0, 5.17.2.1 Figure 275) and the
//! NVM command set specific Identify Controller (CNS 06h, CSI 00h; NVM Command
//! Set 1.0, 4.1.5.2 Figure 97).
//!
//! ```text
//! 0..256     identity: VID 0, SSVID 2, SN 4 (20), MN 24 (40), FR 64 (8), RAB 72,
//!            IEEE 73 (3), CMIC 76, MDTS 77, CNTLID 78, VER 80, RTD3R 84, RTD3E 88,
//!            OAES 92, CTRATT 96, CNTRLTYPE 111, FGUID 112 (16), CRDT1..3 128..134
//! 256..512   admin: OACS 256, ACL 258, AERL 259, FRMW 260, LPA 261, ELPE 262,
//!            NPSS 263, AVSCC 264, APSTA 265, WCTEMP 266, CCTEMP 268, KAS 320,
//!            ANATT 342, ANACAP 343, ANAGRPMAX 344, NANAGRPID 348
//! 512..768   NVM: SQES 512, CQES 513, MAXCMD 514, NN 516, ONCS 520, FUSES 522,
//!            FNA 524, VWC 525, AWUN 526, AWUPF 528, ICSVSCC 530, NWPC 531,
//!            ACWU 532, SGLS 536, MNAN 540
//! 768..1024  SUBNQN (NUL padded)
//! 1792..2048 fabrics: IOCCSZ 1792, IORCSZ 1796 (16-byte units), ICDOFF 1800,
//!            FCATT 1802, MSDBD 1803, OFCS 1804, DCTYPE 1806
//! 2048..3072 power state descriptors 0..31 (32 bytes each); fabriq fills 0
//! ```

use crate::nvme::ids::{NQN_FIELD_LEN, Nqn};
use crate::nvme::wire::{
    WireError, assert_out_len, check_len, get_array, get_u16, get_u32, get_u64, put_bytes, put_u16, put_u32, put_u64,
};

use super::IDENTIFY_SIZE;

/// CNTRLTYPE values.
pub const CNTRLTYPE_IO: u8 = 1;
pub const CNTRLTYPE_DISCOVERY: u8 = 2;
pub const CNTRLTYPE_ADMIN: u8 = 3;

/// CMIC bits: more than one port, more than one controller, SR-IOV, ANA reporting.
pub const CMIC_MULTI_PORT: u8 = 1 << 0;
pub const CMIC_MULTI_CONTROLLER: u8 = 1 << 1;
pub const CMIC_SRIOV: u8 = 1 << 2;
pub const CMIC_ANA_REPORTING: u8 = 1 << 3;

/// OAES bits: which asynchronous notices the controller sends.
pub const OAES_NAMESPACE_ATTRIBUTE: u32 = 1 << 8;
pub const OAES_FIRMWARE_ACTIVATION: u32 = 1 << 9;
pub const OAES_ANA_CHANGE: u32 = 1 << 11;
pub const OAES_DISCOVERY_LOG_CHANGE: u32 = 1 << 31;

/// CTRATT bits.
pub const CTRATT_HOST_ID_128: u32 = 1 << 0;
pub const CTRATT_TBKAS: u32 = 1 << 6;
pub const CTRATT_ELBAS: u32 = 1 << 15;

/// OACS bits (optional admin commands).
pub const OACS_SECURITY: u16 = 1 << 0;
pub const OACS_FORMAT: u16 = 1 << 1;
pub const OACS_FIRMWARE: u16 = 1 << 2;
pub const OACS_NAMESPACE_MANAGEMENT: u16 = 1 << 3;
pub const OACS_DIRECTIVES: u16 = 1 << 5;

/// LPA bits (log page attributes).
pub const LPA_SMART_PER_NAMESPACE: u8 = 1 << 0;
pub const LPA_COMMANDS_EFFECTS: u8 = 1 << 1;
pub const LPA_EXTENDED_DATA: u8 = 1 << 2;

/// ONCS bits (optional NVM commands).
pub const ONCS_COMPARE: u16 = 1 << 0;
pub const ONCS_WRITE_UNCORRECTABLE: u16 = 1 << 1;
pub const ONCS_DATASET_MANAGEMENT: u16 = 1 << 2;
pub const ONCS_WRITE_ZEROES: u16 = 1 << 3;
pub const ONCS_SAVE_SELECT: u16 = 1 << 4;
pub const ONCS_RESERVATIONS: u16 = 1 << 5;
pub const ONCS_TIMESTAMP: u16 = 1 << 6;
pub const ONCS_VERIFY: u16 = 1 << 7;
pub const ONCS_COPY: u16 = 1 << 8;

/// VWC bit 0: a volatile write cache is present (bits 2:1 say whether Flush
/// accepts the broadcast NSID: 10b no, 11b yes).
pub const VWC_PRESENT: u8 = 1 << 0;

/// SGLS bits 1:0: SGLs supported with byte alignment (01b) or dword alignment (10b).
pub const SGLS_BYTE_ALIGNED: u32 = 0b01;
pub const SGLS_DWORD_ALIGNED: u32 = 0b10;
/// SGLS: keyed SGL data block descriptors supported (RDMA).
pub const SGLS_KEYED: u32 = 1 << 2;
/// SGLS: bit bucket descriptors supported.
pub const SGLS_BIT_BUCKET: u32 = 1 << 16;
/// SGLS: the address of a data block descriptor may be an offset (in-capsule data).
pub const SGLS_OFFSET: u32 = 1 << 20;

/// FCATT bit 0: the subsystem uses the static controller model (clear: dynamic).
pub const FCATT_STATIC_MODEL: u8 = 1 << 0;

/// A power state descriptor, 32 bytes (NVMe Base 2.0, 5.17.2.1 Figure 276).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PowerStateDescriptor {
    /// Maximum Power, in centiwatts (0.0001 W when MXPS is set).
    pub mp: u16,
    /// MXPS (bit 0) and NOPS, non-operational state (bit 1).
    pub flags: u8,
    /// Entry latency in microseconds.
    pub enlat_us: u32,
    /// Exit latency in microseconds.
    pub exlat_us: u32,
    pub rrt: u8,
    pub rrl: u8,
    pub rwt: u8,
    pub rwl: u8,
    pub idlp: u16,
    pub ips: u8,
    pub actp: u16,
    /// Active Power Workload (bits 2:0) and Active Power Scale (bits 7:6).
    pub apw_aps: u8,
}

impl PowerStateDescriptor {
    /// Size of a descriptor in bytes.
    pub const SIZE: usize = 32;

    fn encode(&self, b: &mut [u8]) {
        put_u16(b, 0, self.mp);
        b[3] = self.flags;
        put_u32(b, 4, self.enlat_us);
        put_u32(b, 8, self.exlat_us);
        b[12..16].copy_from_slice(&[self.rrt, self.rrl, self.rwt, self.rwl]);
        put_u16(b, 16, self.idlp);
        b[18] = self.ips;
        put_u16(b, 20, self.actp);
        b[22] = self.apw_aps;
    }

    fn decode(b: &[u8]) -> PowerStateDescriptor {
        PowerStateDescriptor {
            mp: get_u16(b, 0),
            flags: b[3],
            enlat_us: get_u32(b, 4),
            exlat_us: get_u32(b, 8),
            rrt: b[12],
            rrl: b[13],
            rwt: b[14],
            rwl: b[15],
            idlp: get_u16(b, 16),
            ips: b[18],
            actp: get_u16(b, 20),
            apw_aps: b[22],
        }
    }
}

const _: () = assert!(PowerStateDescriptor::SIZE == 32 && NvmIdentifyController::SIZE == 4096);

const PSD0: usize = 2048;
const SUBNQN: usize = 768;

/// Identify Controller: the fields a fabrics target fills. Everything else
/// encodes as zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifyController {
    pub vid: u16,
    pub ssvid: u16,
    /// Serial number, ASCII padded with spaces ([`crate::nvme::wire::ascii_padded`]).
    pub sn: [u8; 20],
    /// Model number, ASCII padded with spaces.
    pub mn: [u8; 40],
    /// Firmware revision, ASCII padded with spaces.
    pub fr: [u8; 8],
    /// Recommended arbitration burst.
    pub rab: u8,
    /// IEEE OUI, least significant byte first.
    pub ieee: [u8; 3],
    pub cmic: u8,
    /// Maximum data transfer size: 2^mdts units of CAP.MPSMIN; 0 is no limit.
    pub mdts: u8,
    /// Must equal the CNTLID the Connect response returned (Linux rejects the
    /// controller otherwise).
    pub cntlid: u16,
    /// The version, as VS.
    pub ver: u32,
    pub rtd3r: u32,
    pub rtd3e: u32,
    pub oaes: u32,
    pub ctratt: u32,
    pub cntrltype: u8,
    pub fguid: [u8; 16],
    /// Command retry delay times, in 100 ms units.
    pub crdt1: u16,
    pub crdt2: u16,
    pub crdt3: u16,
    pub oacs: u16,
    /// Abort command limit, 0-based.
    pub acl: u8,
    /// Asynchronous event request limit, 0-based.
    pub aerl: u8,
    pub frmw: u8,
    pub lpa: u8,
    /// Error log page entries, 0-based.
    pub elpe: u8,
    /// Number of power states supported, 0-based.
    pub npss: u8,
    pub avscc: u8,
    pub apsta: u8,
    /// Warning composite temperature threshold, kelvin.
    pub wctemp: u16,
    /// Critical composite temperature threshold, kelvin.
    pub cctemp: u16,
    /// Keep alive support: granularity in 100 ms units; 0 means none, which a
    /// Linux host refuses on an I/O controller.
    pub kas: u16,
    pub anatt: u8,
    pub anacap: u8,
    pub anagrpmax: u32,
    pub nanagrpid: u32,
    /// Submission queue entry sizes: required (bits 3:0) and maximum (7:4), log2.
    pub sqes: u8,
    /// Completion queue entry sizes, as `sqes`.
    pub cqes: u8,
    /// Maximum outstanding commands per queue.
    pub maxcmd: u16,
    /// Number of namespaces: the largest NSID the controller may report.
    pub nn: u32,
    pub oncs: u16,
    pub fuses: u16,
    pub fna: u8,
    pub vwc: u8,
    pub awun: u16,
    pub awupf: u16,
    pub icsvscc: u8,
    pub nwpc: u8,
    pub acwu: u16,
    pub sgls: u32,
    pub mnan: u32,
    /// The NVM subsystem NQN; `None` encodes an empty field.
    pub subnqn: Option<Nqn>,
    /// I/O queue command capsule size in 16-byte units (4 = SQE only).
    pub ioccsz: u32,
    /// I/O queue response capsule size in 16-byte units (1 = CQE only).
    pub iorcsz: u32,
    /// In-capsule data offset, in 16-byte units (Linux NVMe/TCP requires 0).
    pub icdoff: u16,
    pub fcatt: u8,
    /// Maximum SGL data block descriptors per command (0 = no limit).
    pub msdbd: u8,
    /// Optional fabrics commands supported (bit 0: Disconnect).
    pub ofcs: u16,
    /// Discovery controller type (0 not reported, 1 direct, 2 central).
    pub dctype: u8,
    pub psd0: PowerStateDescriptor,
}

impl Default for IdentifyController {
    fn default() -> IdentifyController {
        IdentifyController {
            vid: 0,
            ssvid: 0,
            sn: [b' '; 20],
            mn: [b' '; 40],
            fr: [b' '; 8],
            rab: 0,
            ieee: [0; 3],
            cmic: 0,
            mdts: 0,
            cntlid: 0,
            ver: 0,
            rtd3r: 0,
            rtd3e: 0,
            oaes: 0,
            ctratt: 0,
            cntrltype: 0,
            fguid: [0; 16],
            crdt1: 0,
            crdt2: 0,
            crdt3: 0,
            oacs: 0,
            acl: 0,
            aerl: 0,
            frmw: 0,
            lpa: 0,
            elpe: 0,
            npss: 0,
            avscc: 0,
            apsta: 0,
            wctemp: 0,
            cctemp: 0,
            kas: 0,
            anatt: 0,
            anacap: 0,
            anagrpmax: 0,
            nanagrpid: 0,
            sqes: 0,
            cqes: 0,
            maxcmd: 0,
            nn: 0,
            oncs: 0,
            fuses: 0,
            fna: 0,
            vwc: 0,
            awun: 0,
            awupf: 0,
            icsvscc: 0,
            nwpc: 0,
            acwu: 0,
            sgls: 0,
            mnan: 0,
            subnqn: None,
            ioccsz: 0,
            iorcsz: 0,
            icdoff: 0,
            fcatt: 0,
            msdbd: 0,
            ofcs: 0,
            dctype: 0,
            psd0: PowerStateDescriptor::default(),
        }
    }
}

const _: () = assert!(IdentifyController::SIZE == 4096);

impl IdentifyController {
    /// Size of the structure in bytes.
    pub const SIZE: usize = IDENTIFY_SIZE;

    /// Writes the structure into the first 4096 bytes of `out`, which the
    /// caller zeroed.
    ///
    /// # Panics
    /// When `out` is shorter than 4096 bytes.
    pub fn encode(&self, out: &mut [u8]) {
        assert_out_len(out, Self::SIZE, "IdentifyController");
        self.encode_identity(out);
        self.encode_admin(out);
        self.encode_nvm(out);
        if let Some(nqn) = &self.subnqn {
            nqn.write_fixed_field(&mut out[SUBNQN..SUBNQN + NQN_FIELD_LEN]);
        }
        self.encode_fabrics(out);
        self.psd0.encode(&mut out[PSD0..PSD0 + PowerStateDescriptor::SIZE]);
    }

    fn encode_identity(&self, b: &mut [u8]) {
        put_u16(b, 0, self.vid);
        put_u16(b, 2, self.ssvid);
        put_bytes(b, 4, &self.sn);
        put_bytes(b, 24, &self.mn);
        put_bytes(b, 64, &self.fr);
        b[72] = self.rab;
        put_bytes(b, 73, &self.ieee);
        b[76] = self.cmic;
        b[77] = self.mdts;
        put_u16(b, 78, self.cntlid);
        for (off, v) in [(80, self.ver), (84, self.rtd3r), (88, self.rtd3e), (92, self.oaes), (96, self.ctratt)] {
            put_u32(b, off, v);
        }
        b[111] = self.cntrltype;
        put_bytes(b, 112, &self.fguid);
        put_u16(b, 128, self.crdt1);
        put_u16(b, 130, self.crdt2);
        put_u16(b, 132, self.crdt3);
    }

    fn encode_admin(&self, b: &mut [u8]) {
        put_u16(b, 256, self.oacs);
        let bytes = [self.acl, self.aerl, self.frmw, self.lpa, self.elpe, self.npss, self.avscc, self.apsta];
        put_bytes(b, 258, &bytes);
        put_u16(b, 266, self.wctemp);
        put_u16(b, 268, self.cctemp);
        put_u16(b, 320, self.kas);
        b[342] = self.anatt;
        b[343] = self.anacap;
        put_u32(b, 344, self.anagrpmax);
        put_u32(b, 348, self.nanagrpid);
    }

    fn encode_nvm(&self, b: &mut [u8]) {
        b[512] = self.sqes;
        b[513] = self.cqes;
        put_u16(b, 514, self.maxcmd);
        put_u32(b, 516, self.nn);
        put_u16(b, 520, self.oncs);
        put_u16(b, 522, self.fuses);
        b[524] = self.fna;
        b[525] = self.vwc;
        put_u16(b, 526, self.awun);
        put_u16(b, 528, self.awupf);
        b[530] = self.icsvscc;
        b[531] = self.nwpc;
        put_u16(b, 532, self.acwu);
        put_u32(b, 536, self.sgls);
        put_u32(b, 540, self.mnan);
    }

    fn encode_fabrics(&self, b: &mut [u8]) {
        put_u32(b, 1792, self.ioccsz);
        put_u32(b, 1796, self.iorcsz);
        put_u16(b, 1800, self.icdoff);
        b[1802] = self.fcatt;
        b[1803] = self.msdbd;
        put_u16(b, 1804, self.ofcs);
        b[1806] = self.dctype;
    }

    /// Reads the structure; an empty SUBNQN reads as `None`, an invalid one fails.
    pub fn decode(b: &[u8]) -> Result<IdentifyController, WireError> {
        check_len(b, Self::SIZE)?;
        let mut id = IdentifyController::default();
        id.decode_identity(b);
        id.decode_admin(b);
        id.decode_nvm(b);
        id.decode_fabrics(b);
        id.subnqn = decode_subnqn(&b[SUBNQN..SUBNQN + NQN_FIELD_LEN])?;
        id.psd0 = PowerStateDescriptor::decode(&b[PSD0..PSD0 + PowerStateDescriptor::SIZE]);
        Ok(id)
    }

    fn decode_identity(&mut self, b: &[u8]) {
        self.vid = get_u16(b, 0);
        self.ssvid = get_u16(b, 2);
        self.sn = get_array(b, 4);
        self.mn = get_array(b, 24);
        self.fr = get_array(b, 64);
        self.rab = b[72];
        self.ieee = get_array(b, 73);
        self.cmic = b[76];
        self.mdts = b[77];
        self.cntlid = get_u16(b, 78);
        self.ver = get_u32(b, 80);
        self.rtd3r = get_u32(b, 84);
        self.rtd3e = get_u32(b, 88);
        self.oaes = get_u32(b, 92);
        self.ctratt = get_u32(b, 96);
        self.cntrltype = b[111];
        self.fguid = get_array(b, 112);
        self.crdt1 = get_u16(b, 128);
        self.crdt2 = get_u16(b, 130);
        self.crdt3 = get_u16(b, 132);
    }

    fn decode_admin(&mut self, b: &[u8]) {
        self.oacs = get_u16(b, 256);
        [self.acl, self.aerl, self.frmw, self.lpa, self.elpe, self.npss, self.avscc, self.apsta] = get_array(b, 258);
        self.wctemp = get_u16(b, 266);
        self.cctemp = get_u16(b, 268);
        self.kas = get_u16(b, 320);
        self.anatt = b[342];
        self.anacap = b[343];
        self.anagrpmax = get_u32(b, 344);
        self.nanagrpid = get_u32(b, 348);
    }

    fn decode_nvm(&mut self, b: &[u8]) {
        self.sqes = b[512];
        self.cqes = b[513];
        self.maxcmd = get_u16(b, 514);
        self.nn = get_u32(b, 516);
        self.oncs = get_u16(b, 520);
        self.fuses = get_u16(b, 522);
        self.fna = b[524];
        self.vwc = b[525];
        self.awun = get_u16(b, 526);
        self.awupf = get_u16(b, 528);
        self.icsvscc = b[530];
        self.nwpc = b[531];
        self.acwu = get_u16(b, 532);
        self.sgls = get_u32(b, 536);
        self.mnan = get_u32(b, 540);
    }

    fn decode_fabrics(&mut self, b: &[u8]) {
        self.ioccsz = get_u32(b, 1792);
        self.iorcsz = get_u32(b, 1796);
        self.icdoff = get_u16(b, 1800);
        self.fcatt = b[1802];
        self.msdbd = b[1803];
        self.ofcs = get_u16(b, 1804);
        self.dctype = b[1806];
    }
}

fn decode_subnqn(field: &[u8]) -> Result<Option<Nqn>, WireError> {
    if field[0] == 0 {
        return Ok(None);
    }
    Nqn::from_fixed_field(field).map(Some).map_err(|source| WireError::Nqn { offset: SUBNQN as u16, source })
}

/// The NVM command set specific Identify Controller (CNS 06h, CSI 00h; NVM
/// Command Set 1.0, 4.1.5.2 Figure 97). Size limits are in units of
/// CAP.MPSMIN as powers of two (0: no limit beyond MDTS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NvmIdentifyController {
    /// Verify size limit.
    pub vsl: u8,
    /// Write Zeroes size limit.
    pub wzsl: u8,
    /// Write Uncorrectable size limit.
    pub wusl: u8,
    /// Dataset Management ranges limit (0: no limit beyond 256).
    pub dmrl: u8,
    /// Dataset Management range size limit, in logical blocks.
    pub dmrsl: u32,
    /// Dataset Management size limit, in logical blocks.
    pub dmsl: u64,
}

impl NvmIdentifyController {
    /// Size of the structure in bytes.
    pub const SIZE: usize = IDENTIFY_SIZE;

    /// Writes the structure into the first 4096 bytes of `out`, which the
    /// caller zeroed.
    ///
    /// # Panics
    /// When `out` is shorter than 4096 bytes.
    pub fn encode(&self, out: &mut [u8]) {
        assert_out_len(out, Self::SIZE, "NvmIdentifyController");
        put_bytes(out, 0, &[self.vsl, self.wzsl, self.wusl, self.dmrl]);
        put_u32(out, 4, self.dmrsl);
        put_u64(out, 8, self.dmsl);
    }

    /// Reads the structure.
    pub fn decode(b: &[u8]) -> Result<NvmIdentifyController, WireError> {
        check_len(b, Self::SIZE)?;
        Ok(NvmIdentifyController {
            vsl: b[0],
            wzsl: b[1],
            wusl: b[2],
            dmrl: b[3],
            dmrsl: get_u32(b, 4),
            dmsl: get_u64(b, 8),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvme::wire::ascii_padded;
    use proptest::prelude::*;

    /// What fabriq's I/O controller reports, close enough for a golden test.
    fn fabriq_like() -> IdentifyController {
        IdentifyController {
            vid: 0x1B36,
            ssvid: 0x1AF4,
            sn: ascii_padded("f4b2c0de").unwrap(),
            mn: ascii_padded("fabriq").unwrap(),
            fr: ascii_padded("0.1.0").unwrap(),
            rab: 6,
            ieee: [0x12, 0x34, 0x56],
            cmic: CMIC_MULTI_PORT | CMIC_MULTI_CONTROLLER,
            mdts: 5,
            cntlid: 0x0001,
            ver: 0x0002_0000,
            oaes: OAES_NAMESPACE_ATTRIBUTE,
            ctratt: CTRATT_HOST_ID_128,
            cntrltype: CNTRLTYPE_IO,
            fguid: [0xF0; 16],
            oacs: 0,
            acl: 3,
            aerl: 3,
            frmw: 0x03,
            lpa: LPA_COMMANDS_EFFECTS | LPA_EXTENDED_DATA,
            elpe: 127,
            wctemp: 343,
            cctemp: 373,
            kas: 10,
            sqes: 0x66,
            cqes: 0x44,
            maxcmd: 128,
            nn: 1024,
            oncs: ONCS_DATASET_MANAGEMENT | ONCS_WRITE_ZEROES,
            vwc: VWC_PRESENT | 0b110,
            sgls: SGLS_BYTE_ALIGNED | SGLS_KEYED | SGLS_OFFSET,
            subnqn: Some(Nqn::parse("nqn.2026-11.dev.fabriq:vol:1").unwrap()),
            ioccsz: 4 + 8192 / 16,
            iorcsz: 1,
            ofcs: 1,
            psd0: PowerStateDescriptor { mp: 2500, ..Default::default() },
            ..IdentifyController::default()
        }
    }

    #[test]
    fn golden_bytes_at_the_specification_offsets() {
        let mut b = vec![0u8; 4096];
        fabriq_like().encode(&mut b);
        assert_eq!(&b[0..4], &[0x36, 0x1B, 0xF4, 0x1A]);
        assert_eq!(&b[4..24], b"f4b2c0de            ");
        assert_eq!(&b[24..30], b"fabriq");
        assert_eq!(b[63], b' ');
        assert_eq!(&b[64..72], b"0.1.0   ");
        assert_eq!((b[72], b[73], b[75], b[76], b[77]), (6, 0x12, 0x56, 0x03, 5));
        assert_eq!(&b[78..84], &[0x01, 0x00, 0x00, 0x00, 0x02, 0x00]);
        assert_eq!(&b[92..100], &[0, 1, 0, 0, 1, 0, 0, 0]);
        assert_eq!(b[111], CNTRLTYPE_IO);
        assert_eq!(b[112], 0xF0);
        assert_eq!(&b[258..264], &[3, 3, 0x03, 0x06, 127, 0]);
        assert_eq!(&b[266..270], &[0x57, 0x01, 0x75, 0x01]);
        assert_eq!(&b[320..322], &[10, 0]);
        assert_eq!(&b[512..520], &[0x66, 0x44, 128, 0, 0x00, 0x04, 0, 0]);
        assert_eq!(&b[520..522], &[0x0C, 0x00]);
        assert_eq!(b[525], 0x07);
        assert_eq!(&b[536..540], &[0x05, 0x00, 0x10, 0x00]);
        assert_eq!(&b[768..797], b"nqn.2026-11.dev.fabriq:vol:1\0");
        assert_eq!(&b[1792..1800], &[0x04, 0x02, 0, 0, 1, 0, 0, 0]);
        assert_eq!(&b[1804..1806], &[1, 0]);
        assert_eq!(&b[2048..2050], &2500u16.to_le_bytes());
        assert!(b[3072..].iter().all(|&x| x == 0));
        assert_eq!(IdentifyController::decode(&b).unwrap(), fabriq_like());
    }

    #[test]
    fn empty_subnqn_decodes_as_none_and_bad_one_fails() {
        let mut b = vec![0u8; 4096];
        IdentifyController::default().encode(&mut b);
        assert_eq!(IdentifyController::decode(&b).unwrap().subnqn, None);
        b[768..772].copy_from_slice(b"bad!");
        let err = IdentifyController::decode(&b).unwrap_err();
        assert_eq!(err.offset(), Some(768));
        assert!(IdentifyController::decode(&b[..4095]).is_err());
    }

    #[test]
    fn nvm_identify_controller_golden() {
        let id = NvmIdentifyController { vsl: 1, wzsl: 2, wusl: 3, dmrl: 4, dmrsl: 0x0102_0304, dmsl: 0x1_0000_0000 };
        let mut b = vec![0u8; 4096];
        id.encode(&mut b);
        assert_eq!(&b[..16], &[1, 2, 3, 4, 4, 3, 2, 1, 0, 0, 0, 0, 1, 0, 0, 0]);
        assert!(b[16..].iter().all(|&x| x == 0));
        assert_eq!(NvmIdentifyController::decode(&b), Ok(id));
    }

    fn ascii<const N: usize>() -> impl Strategy<Value = [u8; N]> {
        proptest::collection::vec(0x20u8..0x7F, N).prop_map(|v| v.try_into().unwrap())
    }

    prop_compose! {
        fn arb_psd()(mp: u16, flags: u8, enlat_us: u32, exlat_us: u32, r: [u8; 4], idlp: u16,
                     ips: u8, actp: u16, apw_aps: u8) -> PowerStateDescriptor {
            PowerStateDescriptor { mp, flags, enlat_us, exlat_us, rrt: r[0], rrl: r[1], rwt: r[2],
                                   rwl: r[3], idlp, ips, actp, apw_aps }
        }
    }

    prop_compose! {
        fn arb_ctrl()(
            ids in (any::<u16>(), any::<u16>(), ascii::<20>(), ascii::<40>(), ascii::<8>(),
                    any::<u8>(), any::<[u8; 3]>(), any::<u8>(), any::<u8>(), any::<u16>()),
            dws in any::<[u32; 5]>(),
            misc in (any::<u8>(), any::<[u8; 16]>(), any::<[u16; 3]>(), any::<u16>(), any::<[u8; 8]>()),
            temps in any::<[u16; 3]>(),
            ana in (any::<u8>(), any::<u8>(), any::<u32>(), any::<u32>()),
            nvm in (any::<[u8; 2]>(), any::<u16>(), any::<u32>(), any::<[u16; 2]>(), any::<[u8; 2]>(),
                    any::<[u16; 2]>(), any::<[u8; 2]>(), any::<u16>(), any::<u32>(), any::<u32>()),
            nqn in proptest::option::of("[a-z0-9]{1,64}"),
            fab in (any::<u32>(), any::<u32>(), any::<u16>(), any::<u8>(), any::<u8>(), any::<u16>(), any::<u8>()),
            psd0 in arb_psd(),
        ) -> IdentifyController {
            let (vid, ssvid, sn, mn, fr, rab, ieee, cmic, mdts, cntlid) = ids;
            let (cntrltype, fguid, crdt, oacs, adm) = misc;
            let (anatt, anacap, anagrpmax, nanagrpid) = ana;
            let (qes, maxcmd, nn, oncs_fuses, fna_vwc, aw, ics_nwpc, acwu, sgls, mnan) = nvm;
            let (ioccsz, iorcsz, icdoff, fcatt, msdbd, ofcs, dctype) = fab;
            IdentifyController {
                vid, ssvid, sn, mn, fr, rab, ieee, cmic, mdts, cntlid,
                ver: dws[0], rtd3r: dws[1], rtd3e: dws[2], oaes: dws[3], ctratt: dws[4],
                cntrltype, fguid, crdt1: crdt[0], crdt2: crdt[1], crdt3: crdt[2], oacs,
                acl: adm[0], aerl: adm[1], frmw: adm[2], lpa: adm[3], elpe: adm[4], npss: adm[5],
                avscc: adm[6], apsta: adm[7], wctemp: temps[0], cctemp: temps[1], kas: temps[2],
                anatt, anacap, anagrpmax, nanagrpid,
                sqes: qes[0], cqes: qes[1], maxcmd, nn, oncs: oncs_fuses[0], fuses: oncs_fuses[1],
                fna: fna_vwc[0], vwc: fna_vwc[1], awun: aw[0], awupf: aw[1], icsvscc: ics_nwpc[0],
                nwpc: ics_nwpc[1], acwu, sgls, mnan,
                subnqn: nqn.map(|t| Nqn::parse(&format!("nqn.2026-11.dev.fabriq:{t}")).unwrap()),
                ioccsz, iorcsz, icdoff, fcatt, msdbd, ofcs, dctype, psd0,
            }
        }
    }

    proptest! {
        #[test]
        fn identify_controller_round_trips(id in arb_ctrl()) {
            let mut b = vec![0u8; 4096];
            id.encode(&mut b);
            prop_assert_eq!(IdentifyController::decode(&b).unwrap(), id);
        }

        #[test]
        fn nvm_identify_controller_round_trips(l: [u8; 4], dmrsl: u32, dmsl: u64) {
            let id = NvmIdentifyController { vsl: l[0], wzsl: l[1], wusl: l[2], dmrl: l[3], dmrsl, dmsl };
            let mut b = vec![0u8; 4096];
            id.encode(&mut b);
            prop_assert_eq!(NvmIdentifyController::decode(&b), Ok(id));
        }
    }
}
