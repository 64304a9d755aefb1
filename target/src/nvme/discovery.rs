//! The discovery log page (log identifier 70h; NVMe Base 2.0, 5.16.1.23
//! Figures 262 and 263): a 1024-byte header and one 1024-byte entry per
//! subsystem port a host may connect to.
//!
//! ```text
//! header  0..8 GENCTR   8..16 NUMREC   16..18 RECFMT   18..1024 reserved
//! entry   0 TRTYPE  1 ADRFAM  2 SUBTYPE  3 TREQ  4..6 PORTID  6..8 CNTLID  8..10 ASQSZ
//!         10..12 EFLAGS  32..64 TRSVCID  256..512 SUBNQN  512..768 TRADDR  768..1024 TSAS
//! page    header at 0, entry i at 1024 * (i + 1)
//! ```
//!
//! TRSVCID and TRADDR are ASCII padded with spaces, as SPDK writes them; the
//! decoder also accepts NUL padding, which Linux nvmet writes. SUBNQN is
//! NUL padded like every NQN field.
//!
//! Invariant: [`DiscoveryLog::write_window`] produces exactly the bytes of
//! the whole page at the requested window, encoding only the records the
//! window overlaps.

use super::ids::{NQN_FIELD_LEN, Nqn};
use super::wire::{
    WireError, ascii_padded, ascii_trimmed, assert_out_len, at_offset, check_len, get_u16, get_u64, put_bytes, put_u16,
    put_u64,
};

/// Transport types (TRTYPE).
pub const TRTYPE_RDMA: u8 = 1;
pub const TRTYPE_FC: u8 = 2;
pub const TRTYPE_TCP: u8 = 3;

/// Address families (ADRFAM).
pub const ADRFAM_IPV4: u8 = 1;
pub const ADRFAM_IPV6: u8 = 2;
pub const ADRFAM_IB: u8 = 3;
pub const ADRFAM_FC: u8 = 4;

/// Subsystem types (SUBTYPE).
/// A referral to another discovery subsystem.
pub const SUBTYPE_REFERRAL: u8 = 1;
/// An NVM subsystem.
pub const SUBTYPE_NVM: u8 = 2;
/// The discovery subsystem answering (a "current discovery subsystem" entry).
pub const SUBTYPE_CURRENT_DISCOVERY: u8 = 3;

/// TREQ bits 1:0, secure channel: not specified.
pub const TREQ_SECURE_CHANNEL_NOT_SPECIFIED: u8 = 0b00;
/// TREQ bits 1:0, secure channel: required.
pub const TREQ_SECURE_CHANNEL_REQUIRED: u8 = 0b01;
/// TREQ bits 1:0, secure channel: not required.
pub const TREQ_SECURE_CHANNEL_NOT_REQUIRED: u8 = 0b10;
/// TREQ bit 2: the port supports disabling SQ flow control.
pub const TREQ_DISABLE_SQ_FLOW_CONTROL: u8 = 1 << 2;

/// EFLAGS bit 0: duplicate returned information (the entry reaches the same
/// discovery service as other entries with this bit).
pub const EFLAGS_DUPRETINFO: u16 = 1 << 0;
/// EFLAGS bit 1: explicit persistent connections supported for discovery.
pub const EFLAGS_EPCSD: u16 = 1 << 1;
/// EFLAGS bit 2: no centralized discovery controller connectivity.
pub const EFLAGS_NCC: u16 = 1 << 2;

/// NVMe/TCP security types (TSAS SECTYPE).
pub const TCP_SECTYPE_NONE: u8 = 0;
pub const TCP_SECTYPE_TLS12: u8 = 1;
pub const TCP_SECTYPE_TLS13: u8 = 2;

/// RDMA QP service types, provider types and connection management (TSAS).
pub const RDMA_QPTYPE_CONNECTED: u8 = 1;
pub const RDMA_QPTYPE_DATAGRAM: u8 = 2;
pub const RDMA_PRTYPE_NOT_SPECIFIED: u8 = 1;
pub const RDMA_PRTYPE_IB: u8 = 2;
pub const RDMA_PRTYPE_ROCE: u8 = 3;
pub const RDMA_PRTYPE_ROCEV2: u8 = 4;
pub const RDMA_PRTYPE_IWARP: u8 = 5;
pub const RDMA_CMS_RDMA_CM: u8 = 1;

/// Transport specific address subtype (TSAS), by transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tsas {
    /// All zero (transports without a defined TSAS).
    #[default]
    None,
    /// NVMe/TCP: security type at byte 0.
    Tcp { sectype: u8 },
    /// RDMA: QP type 0, provider type 1, connection management 2, P_KEY 8..10.
    Rdma { qptype: u8, prtype: u8, cms: u8, pkey: u16 },
}

impl Tsas {
    fn encode(&self, b: &mut [u8]) {
        match *self {
            Tsas::None => {}
            Tsas::Tcp { sectype } => b[0] = sectype,
            Tsas::Rdma { qptype, prtype, cms, pkey } => {
                b[..3].copy_from_slice(&[qptype, prtype, cms]);
                put_u16(b, 8, pkey);
            }
        }
    }

    fn decode(trtype: u8, b: &[u8]) -> Tsas {
        match trtype {
            TRTYPE_TCP => Tsas::Tcp { sectype: b[0] },
            TRTYPE_RDMA => Tsas::Rdma { qptype: b[0], prtype: b[1], cms: b[2], pkey: get_u16(b, 8) },
            _ => Tsas::None,
        }
    }
}

/// The discovery log page header (first 1024 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DiscoveryLogHeader {
    /// Generation counter: changes whenever the page changes.
    pub genctr: u64,
    /// Number of records (entries) in the page.
    pub numrec: u64,
    /// Record format; 0.
    pub recfmt: u16,
}

impl DiscoveryLogHeader {
    /// Size of the header in bytes.
    pub const SIZE: usize = 1024;

    /// Writes the header into the first 1024 bytes of `out`, which the caller zeroed.
    ///
    /// # Panics
    /// When `out` is shorter than 1024 bytes.
    pub fn encode(&self, out: &mut [u8]) {
        assert_out_len(out, Self::SIZE, "DiscoveryLogHeader");
        put_u64(out, 0, self.genctr);
        put_u64(out, 8, self.numrec);
        put_u16(out, 16, self.recfmt);
    }

    /// Reads the header. Hosts read it alone first (16 bytes are enough) to
    /// learn NUMREC; this decoder needs only those 18 bytes.
    pub fn decode(b: &[u8]) -> Result<DiscoveryLogHeader, WireError> {
        check_len(b, 18)?;
        Ok(DiscoveryLogHeader { genctr: get_u64(b, 0), numrec: get_u64(b, 8), recfmt: get_u16(b, 16) })
    }
}

const _: () = assert!(DiscoveryLogHeader::SIZE == 1024 && DiscoveryLogEntry::SIZE == 1024);

const TRSVCID: usize = 32;
const TRSVCID_LEN: usize = 32;
const SUBNQN: usize = 256;
const TRADDR: usize = 512;
const TRADDR_LEN: usize = 256;
const TSAS: usize = 768;

/// One discovery log page entry (1024 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryLogEntry {
    pub trtype: u8,
    pub adrfam: u8,
    pub subtype: u8,
    pub treq: u8,
    /// The NVM subsystem port this entry describes.
    pub portid: u16,
    /// [`crate::nvme::CntlId::DYNAMIC`] (FFFFh) for the dynamic model.
    pub cntlid: u16,
    /// Maximum admin submission queue size the host may request, 1-based.
    pub asqsz: u16,
    pub eflags: u16,
    /// Transport service identifier: the TCP port as decimal text, at most 32 bytes.
    pub trsvcid: String,
    pub subnqn: Nqn,
    /// Transport address: the IP address as text, at most 256 bytes.
    pub traddr: String,
    pub tsas: Tsas,
}

impl DiscoveryLogEntry {
    /// Size of an entry in bytes.
    pub const SIZE: usize = 1024;

    /// Writes the entry into the first 1024 bytes of `out`, which the caller zeroed.
    ///
    /// # Panics
    /// When `out` is shorter than 1024 bytes, or TRSVCID or TRADDR is not
    /// printable ASCII fitting its field: configuration is validated before it
    /// reaches the log page, so either is a bug.
    pub fn encode(&self, out: &mut [u8]) {
        assert_out_len(out, Self::SIZE, "DiscoveryLogEntry");
        out[..4].copy_from_slice(&[self.trtype, self.adrfam, self.subtype, self.treq]);
        put_u16(out, 4, self.portid);
        put_u16(out, 6, self.cntlid);
        put_u16(out, 8, self.asqsz);
        put_u16(out, 10, self.eflags);
        let trsvcid: [u8; TRSVCID_LEN] = ascii_padded(&self.trsvcid).expect("TRSVCID is ASCII of at most 32 bytes");
        put_bytes(out, TRSVCID, &trsvcid);
        self.subnqn.write_fixed_field(&mut out[SUBNQN..SUBNQN + NQN_FIELD_LEN]);
        let traddr: [u8; TRADDR_LEN] = ascii_padded(&self.traddr).expect("TRADDR is ASCII of at most 256 bytes");
        put_bytes(out, TRADDR, &traddr);
        self.tsas.encode(&mut out[TSAS..Self::SIZE]);
    }

    /// Reads an entry.
    pub fn decode(b: &[u8]) -> Result<DiscoveryLogEntry, WireError> {
        check_len(b, Self::SIZE)?;
        let text = |off: usize, len: usize| {
            ascii_trimmed(&b[off..off + len]).map(str::to_owned).map_err(|e| at_offset(e, off))
        };
        let subnqn = Nqn::from_fixed_field(&b[SUBNQN..SUBNQN + NQN_FIELD_LEN])
            .map_err(|source| WireError::Nqn { offset: SUBNQN as u16, source })?;
        Ok(DiscoveryLogEntry {
            trtype: b[0],
            adrfam: b[1],
            subtype: b[2],
            treq: b[3],
            portid: get_u16(b, 4),
            cntlid: get_u16(b, 6),
            asqsz: get_u16(b, 8),
            eflags: get_u16(b, 10),
            trsvcid: text(TRSVCID, TRSVCID_LEN)?,
            subnqn,
            traddr: text(TRADDR, TRADDR_LEN)?,
            tsas: Tsas::decode(b[0], &b[TSAS..Self::SIZE]),
        })
    }
}

/// A whole discovery log page, built from its entries on demand.
#[derive(Debug, Clone, Copy)]
pub struct DiscoveryLog<'a> {
    pub genctr: u64,
    pub entries: &'a [DiscoveryLogEntry],
}

impl DiscoveryLog<'_> {
    /// Size of the whole page in bytes.
    pub fn len_bytes(&self) -> u64 {
        (1 + self.entries.len() as u64) * 1024
    }

    fn header(&self) -> DiscoveryLogHeader {
        DiscoveryLogHeader { genctr: self.genctr, numrec: self.entries.len() as u64, recfmt: 0 }
    }

    /// Writes the window `[offset, offset + out.len())` of the page into
    /// `out` and returns how many bytes came from the page; the rest of `out`
    /// is zero-filled. Only the 1024-byte records the window overlaps are
    /// encoded. `None` when `offset` lies past the end of the page (Invalid
    /// Field in Command for the controller).
    pub fn write_window(&self, offset: u64, out: &mut [u8]) -> Option<usize> {
        let page_len = self.len_bytes();
        if offset > page_len {
            return None;
        }
        let valid = (out.len() as u64).min(page_len - offset) as usize;
        out.fill(0);
        let mut record = [0u8; 1024];
        let mut pos = 0;
        while pos < valid {
            let abs = offset + pos as u64;
            let (index, within) = ((abs / 1024) as usize, (abs % 1024) as usize);
            self.encode_record(index, &mut record);
            let n = (1024 - within).min(valid - pos);
            out[pos..pos + n].copy_from_slice(&record[within..within + n]);
            pos += n;
        }
        Some(valid)
    }

    /// Record 0 is the header, record i the entry i - 1.
    fn encode_record(&self, index: usize, record: &mut [u8; 1024]) {
        record.fill(0);
        match index {
            0 => self.header().encode(record),
            i => self.entries[i - 1].encode(record),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvme::ids::DISCOVERY_NQN;
    use proptest::prelude::*;

    fn tcp_entry(port: u16) -> DiscoveryLogEntry {
        DiscoveryLogEntry {
            trtype: TRTYPE_TCP,
            adrfam: ADRFAM_IPV4,
            subtype: SUBTYPE_NVM,
            treq: TREQ_SECURE_CHANNEL_NOT_REQUIRED | TREQ_DISABLE_SQ_FLOW_CONTROL,
            portid: port,
            cntlid: 0xFFFF,
            asqsz: 32,
            eflags: 0,
            trsvcid: "4420".into(),
            subnqn: Nqn::parse(&format!("nqn.2026-11.dev.fabriq:vol:{port}")).unwrap(),
            traddr: "192.0.2.10".into(),
            tsas: Tsas::Tcp { sectype: TCP_SECTYPE_NONE },
        }
    }

    #[test]
    fn entry_golden() {
        let mut b = [0u8; 1024];
        tcp_entry(1).encode(&mut b);
        assert_eq!(&b[..12], &[3, 1, 2, 0x06, 1, 0, 0xFF, 0xFF, 32, 0, 0, 0]);
        assert!(b[12..32].iter().all(|&x| x == 0));
        assert_eq!(&b[32..36], b"4420");
        assert!(b[36..64].iter().all(|&x| x == b' '));
        assert!(b[64..256].iter().all(|&x| x == 0));
        assert_eq!(&b[256..285], b"nqn.2026-11.dev.fabriq:vol:1\0");
        assert_eq!(&b[512..522], b"192.0.2.10");
        assert!(b[522..768].iter().all(|&x| x == b' '));
        assert!(b[768..].iter().all(|&x| x == 0));
        assert_eq!(DiscoveryLogEntry::decode(&b).unwrap(), tcp_entry(1));
    }

    #[test]
    fn entry_decodes_nul_padding_and_rdma_tsas() {
        let mut b = [0u8; 1024];
        b[0] = TRTYPE_RDMA;
        b[32..36].copy_from_slice(b"4420");
        b[256..256 + DISCOVERY_NQN.len()].copy_from_slice(DISCOVERY_NQN.as_bytes());
        b[512..521].copy_from_slice(b"fe80::1%2");
        b[768..771].copy_from_slice(&[RDMA_QPTYPE_CONNECTED, RDMA_PRTYPE_ROCEV2, RDMA_CMS_RDMA_CM]);
        b[776..778].copy_from_slice(&[0xFF, 0xFF]);
        let e = DiscoveryLogEntry::decode(&b).unwrap();
        assert_eq!((e.trsvcid.as_str(), e.traddr.as_str()), ("4420", "fe80::1%2"));
        assert_eq!(e.tsas, Tsas::Rdma { qptype: 1, prtype: 4, cms: 1, pkey: 0xFFFF });
        b[33] = 0x01;
        assert_eq!(DiscoveryLogEntry::decode(&b).unwrap_err().offset(), Some(32));
    }

    #[test]
    fn header_golden() {
        let h = DiscoveryLogHeader { genctr: 5, numrec: 2, recfmt: 0 };
        let mut b = [0u8; 1024];
        h.encode(&mut b);
        assert_eq!(&b[..18], &[5, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(DiscoveryLogHeader::decode(&b[..18]), Ok(h));
    }

    fn whole_page(log: &DiscoveryLog<'_>) -> Vec<u8> {
        let mut page = vec![0u8; log.len_bytes() as usize];
        log.header().encode(&mut page[..1024]);
        for (i, e) in log.entries.iter().enumerate() {
            e.encode(&mut page[1024 * (i + 1)..1024 * (i + 2)]);
        }
        page
    }

    #[test]
    fn window_reads_the_header_alone_as_hosts_do() {
        let entries = [tcp_entry(1), tcp_entry(2)];
        let log = DiscoveryLog { genctr: 9, entries: &entries };
        let mut out = [0u8; 16];
        assert_eq!(log.write_window(0, &mut out), Some(16));
        assert_eq!(&out, &[9, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]);
        let mut big = vec![0xAAu8; 4096];
        assert_eq!(log.write_window(0, &mut big), Some(3072));
        assert_eq!(&big[..3072], whole_page(&log).as_slice());
        assert!(big[3072..].iter().all(|&x| x == 0));
        assert_eq!(log.write_window(3072, &mut out), Some(0));
        assert_eq!(log.write_window(3073, &mut out), None);
    }

    proptest! {
        #[test]
        fn window_equals_slice_of_whole_page(n in 0usize..5, offset in 0u64..6000, len in 0usize..3000) {
            let entries: Vec<_> = (0..n as u16).map(tcp_entry).collect();
            let log = DiscoveryLog { genctr: 1, entries: &entries };
            let page = whole_page(&log);
            let mut out = vec![0xEEu8; len];
            match log.write_window(offset, &mut out) {
                None => prop_assert!(offset > page.len() as u64),
                Some(valid) => {
                    let start = offset as usize;
                    prop_assert_eq!(valid, len.min(page.len() - start));
                    prop_assert_eq!(&out[..valid], &page[start..start + valid]);
                    prop_assert!(out[valid..].iter().all(|&x| x == 0));
                }
            }
        }

        #[test]
        fn entry_round_trips(trtype in prop::sample::select(vec![TRTYPE_TCP, TRTYPE_RDMA, TRTYPE_FC]),
                             head: [u8; 3], halves: [u16; 4], svc in "[0-9]{1,32}",
                             addr in "[0-9a-f.:]{1,200}", t: [u8; 3], pkey: u16) {
            let tsas = match trtype {
                TRTYPE_TCP => Tsas::Tcp { sectype: t[0] },
                TRTYPE_RDMA => Tsas::Rdma { qptype: t[0], prtype: t[1], cms: t[2], pkey },
                _ => Tsas::None,
            };
            let e = DiscoveryLogEntry {
                trtype, adrfam: head[0], subtype: head[1], treq: head[2], portid: halves[0],
                cntlid: halves[1], asqsz: halves[2], eflags: halves[3], trsvcid: svc,
                subnqn: Nqn::discovery(), traddr: addr, tsas,
            };
            let mut b = [0u8; 1024];
            e.encode(&mut b);
            prop_assert_eq!(DiscoveryLogEntry::decode(&b).unwrap(), e);
        }
    }
}
