//! Namespace identify structures: Identify Namespace of the NVM command set
//! (CNS 00h; NVM Command Set 1.0, 4.1.5.1 Figure 96), the NVM command set
//! specific one (CNS 05h, Figure 98), the I/O command set independent one
//! (CNS 08h; NVMe Base 2.0, 5.17.2.9 Figure 289), the namespace identification
//! descriptor list (CNS 03h; Figure 285) and namespace ID lists (CNS 02h, 07h).
//!
//! ```text
//! Identify Namespace: NSZE 0, NCAP 8, NUSE 16, NSFEAT 24, NLBAF 25, FLBAS 26, MC 27,
//!   DPC 28, DPS 29, NMIC 30, RESCAP 31, FPI 32, DLFEAT 33, NAWUN 34, NAWUPF 36,
//!   NACWU 38, NABSN 40, NABO 42, NABSPF 44, NOIOB 46, NVMCAP 48 (16), NPWG 64,
//!   NPWA 66, NPDG 68, NPDA 70, NOWS 72, ANAGRPID 92, NSATTR 99, NVMSETID 100,
//!   ENDGID 102, NGUID 104 (16), EUI64 120 (8), LBAF0..63 128 (4 each: MS u16,
//!   LBADS u8, RP u8)
//! descriptor: NIDT 0, NIDL 1, reserved 2..4, NID 4..4+NIDL; the list ends at NIDT 0
//! ```

use crate::nvme::ids::Nsid;
use crate::nvme::wire::{
    WireError, assert_out_len, check_len, get_array, get_u16, get_u32, get_u64, get_u128, put_bytes, put_u16, put_u32,
    put_u64, put_u128,
};

use super::IDENTIFY_SIZE;

/// NSFEAT bit 0: thin provisioning (NCAP may be less than NSZE).
pub const NSFEAT_THIN_PROVISIONING: u8 = 1 << 0;
/// NSFEAT bit 1: NAWUN, NAWUPF and NACWU are valid.
pub const NSFEAT_ATOMICS: u8 = 1 << 1;
/// NSFEAT bit 2: the deallocated or unwritten logical block error is supported.
pub const NSFEAT_DULBE: u8 = 1 << 2;
/// NSFEAT bit 4: NPWG, NPWA, NPDG, NPDA and NOWS are valid.
pub const NSFEAT_OPTIMAL_IO: u8 = 1 << 4;
/// NMIC bit 0: the namespace may be attached to several controllers.
pub const NMIC_SHARED: u8 = 1 << 0;
/// NSATTR bit 0: the namespace is write protected.
pub const NSATTR_WRITE_PROTECTED: u8 = 1 << 0;
/// DLFEAT bits 2:0 value 001b: deallocated blocks read as zeroes.
pub const DLFEAT_READS_ZEROES: u8 = 0b001;
/// DLFEAT bit 3: Write Zeroes with DEAC deallocates.
pub const DLFEAT_WRITE_ZEROES_DEALLOCATES: u8 = 1 << 3;

/// An LBA format (NVM Command Set 1.0, 4.1.5.1 Figure 96 LBAF).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LbaFormat {
    /// Metadata bytes per logical block.
    pub ms: u16,
    /// LBA data size as a power of two (9 for 512 bytes, 12 for 4096).
    pub lbads: u8,
    /// Relative performance, 2 bits (0 best).
    pub rp: u8,
}

impl LbaFormat {
    /// A format of `block_size` bytes (a power of two) without metadata.
    ///
    /// # Panics
    /// When `block_size` is not a power of two.
    pub fn with_block_size(block_size: u32) -> LbaFormat {
        assert!(block_size.is_power_of_two(), "block size {block_size} not a power of two");
        LbaFormat { ms: 0, lbads: block_size.trailing_zeros() as u8, rp: 0 }
    }

    /// The data size of a logical block in bytes, when LBADS is in range.
    pub fn block_size(&self) -> Option<u64> {
        1u64.checked_shl(self.lbads as u32)
    }
}

/// Number of LBA format slots in Identify Namespace.
pub const LBAF_SLOTS: usize = 64;
const LBAF: usize = 128;

/// Identify Namespace of the NVM command set (CNS 00h).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifyNamespace {
    /// Namespace size, in logical blocks.
    pub nsze: u64,
    /// Namespace capacity, in logical blocks.
    pub ncap: u64,
    /// Namespace utilization, in logical blocks.
    pub nuse: u64,
    pub nsfeat: u8,
    /// Number of LBA formats, 0-based.
    pub nlbaf: u8,
    /// Formatted LBA size: format index bits 3:0 (and 6:5 for indexes over 15).
    pub flbas: u8,
    pub mc: u8,
    pub dpc: u8,
    pub dps: u8,
    pub nmic: u8,
    pub rescap: u8,
    pub fpi: u8,
    pub dlfeat: u8,
    pub nawun: u16,
    pub nawupf: u16,
    pub nacwu: u16,
    pub nabsn: u16,
    pub nabo: u16,
    pub nabspf: u16,
    pub noiob: u16,
    /// NVM capacity in bytes.
    pub nvmcap: u128,
    pub npwg: u16,
    pub npwa: u16,
    pub npdg: u16,
    pub npda: u16,
    pub nows: u16,
    pub anagrpid: u32,
    pub nsattr: u8,
    pub nvmsetid: u16,
    pub endgid: u16,
    pub nguid: [u8; 16],
    pub eui64: [u8; 8],
    pub lbaf: [LbaFormat; LBAF_SLOTS],
}

impl Default for IdentifyNamespace {
    fn default() -> IdentifyNamespace {
        IdentifyNamespace {
            nsze: 0,
            ncap: 0,
            nuse: 0,
            nsfeat: 0,
            nlbaf: 0,
            flbas: 0,
            mc: 0,
            dpc: 0,
            dps: 0,
            nmic: 0,
            rescap: 0,
            fpi: 0,
            dlfeat: 0,
            nawun: 0,
            nawupf: 0,
            nacwu: 0,
            nabsn: 0,
            nabo: 0,
            nabspf: 0,
            noiob: 0,
            nvmcap: 0,
            npwg: 0,
            npwa: 0,
            npdg: 0,
            npda: 0,
            nows: 0,
            anagrpid: 0,
            nsattr: 0,
            nvmsetid: 0,
            endgid: 0,
            nguid: [0; 16],
            eui64: [0; 8],
            lbaf: [LbaFormat::default(); LBAF_SLOTS],
        }
    }
}

const _: () = assert!(IdentifyNamespace::SIZE == 4096 && LBAF + 4 * LBAF_SLOTS == 384);

impl IdentifyNamespace {
    /// Size of the structure in bytes.
    pub const SIZE: usize = IDENTIFY_SIZE;

    /// The index of the LBA format in use, from FLBAS.
    pub fn lba_format_index(&self) -> usize {
        (self.flbas & 0x0F) as usize | ((self.flbas as usize & 0x60) >> 1)
    }

    /// Writes the structure into the first 4096 bytes of `out`, which the
    /// caller zeroed.
    ///
    /// # Panics
    /// When `out` is shorter than 4096 bytes.
    pub fn encode(&self, out: &mut [u8]) {
        assert_out_len(out, Self::SIZE, "IdentifyNamespace");
        self.encode_sizes(out);
        self.encode_ids(out);
        for (i, f) in self.lbaf.iter().enumerate() {
            let off = LBAF + 4 * i;
            put_u16(out, off, f.ms);
            out[off + 2] = f.lbads;
            out[off + 3] = f.rp & 3;
        }
    }

    fn encode_sizes(&self, b: &mut [u8]) {
        put_u64(b, 0, self.nsze);
        put_u64(b, 8, self.ncap);
        put_u64(b, 16, self.nuse);
        let bytes = [
            self.nsfeat,
            self.nlbaf,
            self.flbas,
            self.mc,
            self.dpc,
            self.dps,
            self.nmic,
            self.rescap,
            self.fpi,
            self.dlfeat,
        ];
        put_bytes(b, 24, &bytes);
        let halves = [self.nawun, self.nawupf, self.nacwu, self.nabsn, self.nabo, self.nabspf, self.noiob];
        for (i, h) in halves.into_iter().enumerate() {
            put_u16(b, 34 + 2 * i, h);
        }
        put_u128(b, 48, self.nvmcap);
        for (i, h) in [self.npwg, self.npwa, self.npdg, self.npda, self.nows].into_iter().enumerate() {
            put_u16(b, 64 + 2 * i, h);
        }
    }

    fn encode_ids(&self, b: &mut [u8]) {
        put_u32(b, 92, self.anagrpid);
        b[99] = self.nsattr;
        put_u16(b, 100, self.nvmsetid);
        put_u16(b, 102, self.endgid);
        put_bytes(b, 104, &self.nguid);
        put_bytes(b, 120, &self.eui64);
    }

    /// Reads the structure.
    pub fn decode(b: &[u8]) -> Result<IdentifyNamespace, WireError> {
        check_len(b, Self::SIZE)?;
        let mut ns = IdentifyNamespace::default();
        ns.decode_sizes(b);
        ns.anagrpid = get_u32(b, 92);
        ns.nsattr = b[99];
        ns.nvmsetid = get_u16(b, 100);
        ns.endgid = get_u16(b, 102);
        ns.nguid = get_array(b, 104);
        ns.eui64 = get_array(b, 120);
        for (i, f) in ns.lbaf.iter_mut().enumerate() {
            let off = LBAF + 4 * i;
            *f = LbaFormat { ms: get_u16(b, off), lbads: b[off + 2], rp: b[off + 3] & 3 };
        }
        Ok(ns)
    }

    fn decode_sizes(&mut self, b: &[u8]) {
        self.nsze = get_u64(b, 0);
        self.ncap = get_u64(b, 8);
        self.nuse = get_u64(b, 16);
        [
            self.nsfeat,
            self.nlbaf,
            self.flbas,
            self.mc,
            self.dpc,
            self.dps,
            self.nmic,
            self.rescap,
            self.fpi,
            self.dlfeat,
        ] = get_array(b, 24);
        let h = |i: usize| get_u16(b, 34 + 2 * i);
        (self.nawun, self.nawupf, self.nacwu, self.nabsn) = (h(0), h(1), h(2), h(3));
        (self.nabo, self.nabspf, self.noiob) = (h(4), h(5), h(6));
        self.nvmcap = get_u128(b, 48);
        let h = |i: usize| get_u16(b, 64 + 2 * i);
        (self.npwg, self.npwa, self.npdg, self.npda, self.nows) = (h(0), h(1), h(2), h(3), h(4));
    }
}

/// The NVM command set specific Identify Namespace (CNS 05h, CSI 00h; NVM
/// Command Set 1.0, 4.1.5.3 Figure 98). A Linux host asks for it only when
/// Identify Controller sets [`super::controller::CTRATT_ELBAS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvmIdentifyNamespace {
    /// Logical block storage tag mask.
    pub lbstm: u64,
    /// Protection information capabilities.
    pub pic: u8,
    /// Extended LBA formats, one per LBA format.
    pub elbaf: [u32; LBAF_SLOTS],
}

impl Default for NvmIdentifyNamespace {
    fn default() -> NvmIdentifyNamespace {
        NvmIdentifyNamespace { lbstm: 0, pic: 0, elbaf: [0; LBAF_SLOTS] }
    }
}

impl NvmIdentifyNamespace {
    /// Size of the structure in bytes.
    pub const SIZE: usize = IDENTIFY_SIZE;

    /// Writes the structure into the first 4096 bytes of `out`, which the
    /// caller zeroed.
    ///
    /// # Panics
    /// When `out` is shorter than 4096 bytes.
    pub fn encode(&self, out: &mut [u8]) {
        assert_out_len(out, Self::SIZE, "NvmIdentifyNamespace");
        put_u64(out, 0, self.lbstm);
        out[8] = self.pic;
        for (i, e) in self.elbaf.iter().enumerate() {
            put_u32(out, 12 + 4 * i, *e);
        }
    }

    /// Reads the structure.
    pub fn decode(b: &[u8]) -> Result<NvmIdentifyNamespace, WireError> {
        check_len(b, Self::SIZE)?;
        let mut ns = NvmIdentifyNamespace { lbstm: get_u64(b, 0), pic: b[8], ..Default::default() };
        for (i, e) in ns.elbaf.iter_mut().enumerate() {
            *e = get_u32(b, 12 + 4 * i);
        }
        Ok(ns)
    }
}

/// The I/O command set independent Identify Namespace (CNS 08h; NVMe Base
/// 2.0, 5.17.2.9 Figure 289).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IdentifyNamespaceIndependent {
    pub nsfeat: u8,
    pub nmic: u8,
    pub rescap: u8,
    pub fpi: u8,
    pub anagrpid: u32,
    pub nsattr: u8,
    pub nvmsetid: u16,
    pub endgid: u16,
    /// Namespace status: bit 0 set when the namespace is ready.
    pub nstat: u8,
}

impl IdentifyNamespaceIndependent {
    /// Size of the structure in bytes.
    pub const SIZE: usize = IDENTIFY_SIZE;

    /// Writes the structure into the first 4096 bytes of `out`, which the
    /// caller zeroed.
    ///
    /// # Panics
    /// When `out` is shorter than 4096 bytes.
    pub fn encode(&self, out: &mut [u8]) {
        assert_out_len(out, Self::SIZE, "IdentifyNamespaceIndependent");
        put_bytes(out, 0, &[self.nsfeat, self.nmic, self.rescap, self.fpi]);
        put_u32(out, 4, self.anagrpid);
        out[8] = self.nsattr;
        put_u16(out, 10, self.nvmsetid);
        put_u16(out, 12, self.endgid);
        out[14] = self.nstat;
    }

    /// Reads the structure.
    pub fn decode(b: &[u8]) -> Result<IdentifyNamespaceIndependent, WireError> {
        check_len(b, Self::SIZE)?;
        Ok(IdentifyNamespaceIndependent {
            nsfeat: b[0],
            nmic: b[1],
            rescap: b[2],
            fpi: b[3],
            anagrpid: get_u32(b, 4),
            nsattr: b[8],
            nvmsetid: get_u16(b, 10),
            endgid: get_u16(b, 12),
            nstat: b[14],
        })
    }
}

const _: () = assert!(NvmIdentifyNamespace::SIZE == 4096 && IdentifyNamespaceIndependent::SIZE == 4096);

/// A namespace identification descriptor (NVMe Base 2.0, 5.17.2.3 Figures 285
/// and 286): NIDT with its fixed NIDL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NamespaceId {
    /// NIDT 1, 8 bytes.
    Eui64([u8; 8]),
    /// NIDT 2, 16 bytes.
    Nguid([u8; 16]),
    /// NIDT 3, 16 bytes.
    Uuid([u8; 16]),
    /// NIDT 4, 1 byte: the command set of the namespace.
    Csi(u8),
}

/// Header bytes before each descriptor's NID.
const NID_HEADER: usize = 4;

impl NamespaceId {
    /// NIDT.
    pub fn nidt(&self) -> u8 {
        match self {
            NamespaceId::Eui64(_) => 1,
            NamespaceId::Nguid(_) => 2,
            NamespaceId::Uuid(_) => 3,
            NamespaceId::Csi(_) => 4,
        }
    }

    fn nid(&self) -> &[u8] {
        match self {
            NamespaceId::Eui64(v) => v,
            NamespaceId::Nguid(v) | NamespaceId::Uuid(v) => v,
            NamespaceId::Csi(v) => std::slice::from_ref(v),
        }
    }

    /// The expected NIDL of a known NIDT.
    fn nidl_of(nidt: u8) -> Option<usize> {
        match nidt {
            1 => Some(8),
            2 | 3 => Some(16),
            4 => Some(1),
            _ => None,
        }
    }

    fn from_nid(nidt: u8, nid: &[u8]) -> NamespaceId {
        match nidt {
            1 => NamespaceId::Eui64(get_array(nid, 0)),
            2 => NamespaceId::Nguid(get_array(nid, 0)),
            3 => NamespaceId::Uuid(get_array(nid, 0)),
            _ => NamespaceId::Csi(nid[0]),
        }
    }
}

/// Writes the namespace identification descriptor list (CNS 03h) into the
/// first 4096 bytes of `out`, which the caller zeroed: the zero bytes after
/// the last descriptor end the list.
///
/// # Panics
/// When `out` is shorter than 4096 bytes or the descriptors do not fit.
pub fn encode_ns_id_descriptors(ids: &[NamespaceId], out: &mut [u8]) {
    assert_out_len(out, IDENTIFY_SIZE, "namespace ID descriptors");
    let mut off = 0;
    for id in ids {
        let nid = id.nid();
        assert!(off + NID_HEADER + nid.len() <= IDENTIFY_SIZE, "descriptors exceed 4096 bytes");
        out[off] = id.nidt();
        out[off + 1] = nid.len() as u8;
        put_bytes(out, off + NID_HEADER, nid);
        off += NID_HEADER + nid.len();
    }
}

/// Reads a namespace identification descriptor list. Descriptors of unknown
/// types are skipped by their NIDL; a known type with another NIDL fails.
pub fn decode_ns_id_descriptors(b: &[u8]) -> Result<Vec<NamespaceId>, WireError> {
    check_len(b, IDENTIFY_SIZE)?;
    let mut ids = Vec::new();
    let mut off = 0;
    while off + NID_HEADER <= IDENTIFY_SIZE && b[off] != 0 {
        let (nidt, nidl) = (b[off], b[off + 1] as usize);
        let end = off + NID_HEADER + nidl;
        check_len(&b[..IDENTIFY_SIZE], end)?;
        match NamespaceId::nidl_of(nidt) {
            Some(want) if want != nidl => {
                return Err(WireError::Reserved { offset: off as u16 + 1, value: nidl as u32 });
            }
            Some(_) => ids.push(NamespaceId::from_nid(nidt, &b[off + NID_HEADER..end])),
            None => {}
        }
        off = end;
    }
    Ok(ids)
}

/// The most namespace IDs one list holds.
pub const NS_LIST_MAX: usize = IDENTIFY_SIZE / 4;

/// Writes a namespace ID list (CNS 02h or 07h) into the first 4096 bytes of
/// `out`, which the caller zeroed: the IDs of `nsids` greater than
/// `start_after` (the command's NSID), ascending, at most 1024. Returns how
/// many were written.
///
/// # Panics
/// When `out` is shorter than 4096 bytes or `nsids` is not strictly ascending.
pub fn encode_ns_list(nsids: &[Nsid], start_after: u32, out: &mut [u8]) -> usize {
    assert_out_len(out, IDENTIFY_SIZE, "namespace list");
    assert!(nsids.windows(2).all(|w| w[0] < w[1]), "namespace IDs not strictly ascending");
    let first = nsids.partition_point(|n| n.get() <= start_after);
    let listed = &nsids[first..nsids.len().min(first + NS_LIST_MAX)];
    for (i, nsid) in listed.iter().enumerate() {
        put_u32(out, 4 * i, nsid.get());
    }
    listed.len()
}

/// Reads a namespace ID list: the IDs before the first zero entry.
pub fn decode_ns_list(b: &[u8]) -> Result<Vec<u32>, WireError> {
    check_len(b, IDENTIFY_SIZE)?;
    Ok(b[..IDENTIFY_SIZE].chunks_exact(4).map(|c| get_u32(c, 0)).take_while(|&n| n != 0).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> IdentifyNamespace {
        let mut ns = IdentifyNamespace {
            nsze: 0x20_0000,
            ncap: 0x20_0000,
            nuse: 0x1000,
            nsfeat: NSFEAT_THIN_PROVISIONING | NSFEAT_OPTIMAL_IO,
            nlbaf: 1,
            flbas: 1,
            dlfeat: DLFEAT_READS_ZEROES | DLFEAT_WRITE_ZEROES_DEALLOCATES,
            nvmcap: 1 << 40,
            npwg: 7,
            nows: 31,
            anagrpid: 1,
            nsattr: NSATTR_WRITE_PROTECTED,
            nguid: [0xAB; 16],
            eui64: [0xCD; 8],
            ..Default::default()
        };
        ns.lbaf[0] = LbaFormat::with_block_size(512);
        ns.lbaf[1] = LbaFormat { ms: 8, lbads: 12, rp: 1 };
        ns
    }

    #[test]
    fn identify_namespace_golden() {
        let mut b = vec![0u8; 4096];
        sample().encode(&mut b);
        assert_eq!(&b[0..8], &[0, 0, 0x20, 0, 0, 0, 0, 0]);
        assert_eq!(&b[16..24], &[0, 0x10, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&b[24..34], &[0x11, 1, 1, 0, 0, 0, 0, 0, 0, 0x09]);
        assert_eq!(&b[48..64], &(1u128 << 40).to_le_bytes());
        assert_eq!(&b[64..66], &[7, 0]);
        assert_eq!(&b[72..74], &[31, 0]);
        assert_eq!(&b[92..96], &[1, 0, 0, 0]);
        assert_eq!(b[99], 1);
        assert_eq!(&b[104..120], &[0xAB; 16]);
        assert_eq!(&b[120..128], &[0xCD; 8]);
        assert_eq!(&b[128..136], &[0, 0, 9, 0, 8, 0, 12, 1]);
        assert!(b[136..].iter().all(|&x| x == 0));
        let back = IdentifyNamespace::decode(&b).unwrap();
        assert_eq!(back, sample());
        assert_eq!(back.lba_format_index(), 1);
        assert_eq!(back.lbaf[back.lba_format_index()].block_size(), Some(4096));
    }

    #[test]
    fn flbas_index_uses_the_high_bits() {
        let ns = IdentifyNamespace { flbas: 0x63, ..Default::default() };
        assert_eq!(ns.lba_format_index(), 0x33);
    }

    #[test]
    fn descriptor_list_golden() {
        let ids =
            [NamespaceId::Eui64([1; 8]), NamespaceId::Nguid([2; 16]), NamespaceId::Uuid([3; 16]), NamespaceId::Csi(0)];
        let mut b = vec![0u8; 4096];
        encode_ns_id_descriptors(&ids, &mut b);
        assert_eq!(&b[0..4], &[1, 8, 0, 0]);
        assert_eq!(&b[4..12], &[1; 8]);
        assert_eq!(&b[12..16], &[2, 16, 0, 0]);
        assert_eq!(&b[32..36], &[3, 16, 0, 0]);
        assert_eq!(&b[52..57], &[4, 1, 0, 0, 0]);
        assert!(b[57..].iter().all(|&x| x == 0));
        assert_eq!(decode_ns_id_descriptors(&b).unwrap(), ids.to_vec());
    }

    #[test]
    fn descriptor_list_skips_unknown_and_rejects_bad_lengths() {
        let mut b = vec![0u8; 4096];
        b[..6].copy_from_slice(&[9, 2, 0, 0, 0xEE, 0xEE]);
        b[6..11].copy_from_slice(&[4, 1, 0, 0, 2]);
        assert_eq!(decode_ns_id_descriptors(&b).unwrap(), vec![NamespaceId::Csi(2)]);
        b[7] = 2;
        assert_eq!(decode_ns_id_descriptors(&b), Err(WireError::Reserved { offset: 7, value: 2 }));
        // Unknown descriptors chained up to offset 4085, then a UUID that would
        // run past the end of the structure.
        let mut overrun = vec![0u8; 4096];
        for i in 0..15 {
            overrun[259 * i..259 * i + 2].copy_from_slice(&[9, 255]);
        }
        overrun[3885..3887].copy_from_slice(&[9, 196]);
        overrun[4085..4087].copy_from_slice(&[3, 16]);
        assert_eq!(decode_ns_id_descriptors(&overrun), Err(WireError::Short { need: 4105, got: 4096 }));
    }

    #[test]
    fn ns_list_starts_after_the_given_id_and_caps_at_1024() {
        let nsids: Vec<Nsid> = (1..=2000).map(|n| Nsid::new(n).unwrap()).collect();
        let mut b = vec![0u8; 4096];
        assert_eq!(encode_ns_list(&nsids, 0, &mut b), 1024);
        assert_eq!(&b[..8], &[1, 0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(decode_ns_list(&b).unwrap().last(), Some(&1024));
        let mut b = vec![0u8; 4096];
        assert_eq!(encode_ns_list(&nsids, 1990, &mut b), 10);
        assert_eq!(decode_ns_list(&b).unwrap(), (1991..=2000).collect::<Vec<_>>());
        let mut b = vec![0u8; 4096];
        assert_eq!(encode_ns_list(&nsids, 2000, &mut b), 0);
        assert!(decode_ns_list(&b).unwrap().is_empty());
    }

    #[test]
    fn independent_and_nvm_namespace_golden() {
        let ind =
            IdentifyNamespaceIndependent { nsfeat: 1, nmic: 1, anagrpid: 2, nstat: 1, endgid: 3, ..Default::default() };
        let mut b = vec![0u8; 4096];
        ind.encode(&mut b);
        assert_eq!(&b[..16], &[1, 1, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 1, 0]);
        assert_eq!(IdentifyNamespaceIndependent::decode(&b), Ok(ind));

        let mut nvm = NvmIdentifyNamespace { lbstm: 0xFF, pic: 1, ..Default::default() };
        nvm.elbaf[1] = 0x80;
        let mut b = vec![0u8; 4096];
        nvm.encode(&mut b);
        assert_eq!(&b[..20], &[0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0x80, 0, 0, 0]);
        assert_eq!(NvmIdentifyNamespace::decode(&b), Ok(nvm));
    }

    prop_compose! {
        fn arb_ns()(
            sizes in any::<[u64; 3]>(),
            bytes in any::<[u8; 10]>(),
            halves in any::<[u16; 12]>(),
            nvmcap: u128,
            ids in (any::<u32>(), any::<u8>(), any::<u16>(), any::<u16>(), any::<[u8; 16]>(), any::<[u8; 8]>()),
            lbaf in proptest::collection::vec((any::<u16>(), any::<u8>(), 0u8..4), LBAF_SLOTS),
        ) -> IdentifyNamespace {
            let mut ns = IdentifyNamespace {
                nsze: sizes[0], ncap: sizes[1], nuse: sizes[2],
                nsfeat: bytes[0], nlbaf: bytes[1], flbas: bytes[2], mc: bytes[3], dpc: bytes[4],
                dps: bytes[5], nmic: bytes[6], rescap: bytes[7], fpi: bytes[8], dlfeat: bytes[9],
                nawun: halves[0], nawupf: halves[1], nacwu: halves[2], nabsn: halves[3], nabo: halves[4],
                nabspf: halves[5], noiob: halves[6], nvmcap, npwg: halves[7], npwa: halves[8],
                npdg: halves[9], npda: halves[10], nows: halves[11],
                anagrpid: ids.0, nsattr: ids.1, nvmsetid: ids.2, endgid: ids.3, nguid: ids.4, eui64: ids.5,
                ..Default::default()
            };
            for (slot, (ms, lbads, rp)) in ns.lbaf.iter_mut().zip(lbaf) {
                *slot = LbaFormat { ms, lbads, rp };
            }
            ns
        }
    }

    fn arb_id() -> impl Strategy<Value = NamespaceId> {
        prop_oneof![
            any::<[u8; 8]>().prop_map(NamespaceId::Eui64),
            any::<[u8; 16]>().prop_map(NamespaceId::Nguid),
            any::<[u8; 16]>().prop_map(NamespaceId::Uuid),
            any::<u8>().prop_map(NamespaceId::Csi),
        ]
    }

    proptest! {
        #[test]
        fn identify_namespace_round_trips(ns in arb_ns()) {
            let mut b = vec![0u8; 4096];
            ns.encode(&mut b);
            prop_assert_eq!(IdentifyNamespace::decode(&b).unwrap(), ns);
        }

        #[test]
        fn descriptors_round_trip(ids in proptest::collection::vec(arb_id(), 0..50)) {
            let mut b = vec![0u8; 4096];
            encode_ns_id_descriptors(&ids, &mut b);
            prop_assert_eq!(decode_ns_id_descriptors(&b).unwrap(), ids);
        }

        #[test]
        fn ns_list_round_trips(set in proptest::collection::btree_set(1u32..0xFFFF_FFFE, 0..1500), after: u32) {
            let nsids: Vec<Nsid> = set.iter().map(|&n| Nsid::new(n).unwrap()).collect();
            let mut b = vec![0u8; 4096];
            let n = encode_ns_list(&nsids, after, &mut b);
            let want: Vec<u32> = set.iter().copied().filter(|&x| x > after).take(1024).collect();
            prop_assert_eq!(n, want.len());
            prop_assert_eq!(decode_ns_list(&b).unwrap(), want);
        }
    }
}
