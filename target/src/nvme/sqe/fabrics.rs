//! Fabrics commands (opcode 7Fh): Connect and its 1024-byte data, Property
//! Get/Set, Disconnect, Authentication Send/Receive (NVMe Base 2.0, 6).
//!
//! ```text
//! Connect SQE     40..42 RECFMT  42..44 QID  44..46 SQSIZE (0-based)  46 CATTR  48..52 KATO (ms)
//! Connect data    0..16 HOSTID  16..18 CNTLID  256..512 SUBNQN  512..768 HOSTNQN  (1024 bytes)
//! Property Get    40 ATTRIB (bits 2:0 size)  44..48 OFST
//! Property Set    40 ATTRIB  44..48 OFST  48..56 VALUE
//! Disconnect      40..42 RECFMT
//! ```
//!
//! Invariants: `from_sqe` asserts the command is the one viewed (dispatch bug
//! otherwise); fields that can be reserved values make `from_sqe` return a
//! [`WireError`] naming the byte offset.

use super::fabrics_offsets as off;
use super::{Sqe, assert_fabrics};
use crate::nvme::ids::{CntlId, NQN_FIELD_LEN, Nqn, Qid};
use crate::nvme::opcode::FabricsType;
use crate::nvme::property::PropertySize;
use crate::nvme::wire::{WireError, assert_out_len, check_len, get_array, get_u16, put_bytes, put_u16};

/// CATTR bit 2: the host disables submission queue flow control
/// (NVMe Base 2.0, 6.3 Figure 379).
pub const CATTR_DISABLE_SQ_FLOW_CONTROL: u8 = 1 << 2;

/// Connect command (NVMe Base 2.0, 6.3 Figure 379): creates the admin queue
/// (QID 0) and its controller, or an I/O queue of an existing controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connect {
    /// Record format; 0 is the only one defined.
    pub recfmt: u16,
    pub qid: u16,
    /// Submission queue size, 0-based: the queue holds `sqsize + 1` entries.
    pub sqsize: u16,
    /// Connect attributes: priority class (bits 1:0), [`CATTR_DISABLE_SQ_FLOW_CONTROL`].
    pub cattr: u8,
    /// Keep Alive Timeout in milliseconds (admin queue only; 0 disables).
    pub kato_ms: u32,
}

impl Connect {
    /// Reads the Connect fields of `sqe`.
    ///
    /// # Panics
    /// When `sqe` is not a Connect command.
    pub fn from_sqe(sqe: &Sqe) -> Connect {
        assert_fabrics(sqe, FabricsType::Connect);
        Connect {
            recfmt: sqe.cdw10 as u16,
            qid: (sqe.cdw10 >> 16) as u16,
            sqsize: sqe.cdw11 as u16,
            cattr: (sqe.cdw11 >> 16) as u8,
            kato_ms: sqe.cdw12,
        }
    }

    /// A Connect command; the caller adds the SGL of the Connect data.
    pub fn to_sqe(&self, cid: u16) -> Sqe {
        Sqe {
            cdw10: self.recfmt as u32 | (self.qid as u32) << 16,
            cdw11: self.sqsize as u32 | (self.cattr as u32) << 16,
            cdw12: self.kato_ms,
            ..Sqe::fabrics(FabricsType::Connect, cid)
        }
    }

    /// The queue this Connect creates.
    pub fn queue(&self) -> Qid {
        Qid(self.qid)
    }

    /// Number of entries of the submission queue (SQSIZE + 1).
    pub fn queue_entries(&self) -> u32 {
        self.sqsize as u32 + 1
    }

    /// Whether the host disables submission queue flow control.
    pub fn sq_flow_control_disabled(&self) -> bool {
        self.cattr & CATTR_DISABLE_SQ_FLOW_CONTROL != 0
    }
}

/// The data of a Connect command, 1024 bytes (NVMe Base 2.0, 6.3 Figure 380).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectData {
    /// Host Identifier: the host's 128-bit id.
    pub hostid: [u8; 16],
    /// [`CntlId::DYNAMIC`] on the admin queue for the dynamic model; the
    /// controller's id on I/O queues.
    pub cntlid: CntlId,
    pub subnqn: Nqn,
    pub hostnqn: Nqn,
}

const _: () = assert!(ConnectData::SIZE == 1024);

impl ConnectData {
    /// Size of the Connect data in bytes.
    pub const SIZE: usize = 1024;

    /// Reads the Connect data. An invalid NQN fails with
    /// [`WireError::Nqn`] at the field's offset, what Connect Invalid
    /// Parameters reports with IATTR 1.
    pub fn decode(b: &[u8]) -> Result<ConnectData, WireError> {
        check_len(b, Self::SIZE)?;
        Ok(ConnectData {
            hostid: get_array(b, off::DATA_HOSTID as usize),
            cntlid: CntlId::from_wire(get_u16(b, off::DATA_CNTLID as usize)),
            subnqn: nqn_at(b, off::DATA_SUBNQN)?,
            hostnqn: nqn_at(b, off::DATA_HOSTNQN)?,
        })
    }

    /// Writes the Connect data into the first 1024 bytes of `out`, which the
    /// caller zeroed.
    ///
    /// # Panics
    /// When `out` is shorter than 1024 bytes.
    pub fn encode(&self, out: &mut [u8]) {
        assert_out_len(out, Self::SIZE, "ConnectData");
        put_bytes(out, off::DATA_HOSTID as usize, &self.hostid);
        put_u16(out, off::DATA_CNTLID as usize, self.cntlid.get());
        let sub = off::DATA_SUBNQN as usize;
        self.subnqn.write_fixed_field(&mut out[sub..sub + NQN_FIELD_LEN]);
        let host = off::DATA_HOSTNQN as usize;
        self.hostnqn.write_fixed_field(&mut out[host..host + NQN_FIELD_LEN]);
    }
}

fn nqn_at(b: &[u8], offset: u16) -> Result<Nqn, WireError> {
    let start = offset as usize;
    Nqn::from_fixed_field(&b[start..start + NQN_FIELD_LEN]).map_err(|source| WireError::Nqn { offset, source })
}

fn property_size(sqe: &Sqe) -> Result<PropertySize, WireError> {
    PropertySize::from_attrib(sqe.cdw10 as u8)
}

/// Property Get (NVMe Base 2.0, 6.5 Figure 386): read a controller property;
/// the value returns in Dwords 0 and 1 of the completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PropertyGet {
    pub size: PropertySize,
    /// Offset of the property (see [`crate::nvme::property`]).
    pub offset: u32,
}

impl PropertyGet {
    /// Reads the Property Get fields; a reserved ATTRIB size fails.
    ///
    /// # Panics
    /// When `sqe` is not a Property Get command.
    pub fn from_sqe(sqe: &Sqe) -> Result<PropertyGet, WireError> {
        assert_fabrics(sqe, FabricsType::PropertyGet);
        Ok(PropertyGet { size: property_size(sqe)?, offset: sqe.cdw11 })
    }

    /// A Property Get command.
    pub fn to_sqe(&self, cid: u16) -> Sqe {
        Sqe { cdw10: self.size.attrib() as u32, cdw11: self.offset, ..Sqe::fabrics(FabricsType::PropertyGet, cid) }
    }
}

/// Property Set (NVMe Base 2.0, 6.6 Figure 388): write a controller property.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PropertySet {
    pub size: PropertySize,
    pub offset: u32,
    /// The value; for a 4-byte property only the low 32 bits count.
    pub value: u64,
}

impl PropertySet {
    /// Reads the Property Set fields; a reserved ATTRIB size fails.
    ///
    /// # Panics
    /// When `sqe` is not a Property Set command.
    pub fn from_sqe(sqe: &Sqe) -> Result<PropertySet, WireError> {
        assert_fabrics(sqe, FabricsType::PropertySet);
        Ok(PropertySet {
            size: property_size(sqe)?,
            offset: sqe.cdw11,
            value: sqe.cdw12 as u64 | (sqe.cdw13 as u64) << 32,
        })
    }

    /// A Property Set command.
    pub fn to_sqe(&self, cid: u16) -> Sqe {
        Sqe {
            cdw10: self.size.attrib() as u32,
            cdw11: self.offset,
            cdw12: self.value as u32,
            cdw13: (self.value >> 32) as u32,
            ..Sqe::fabrics(FabricsType::PropertySet, cid)
        }
    }
}

/// Disconnect (NVMe Base 2.0, 6.4): tear down the queue it is sent on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disconnect {
    pub recfmt: u16,
}

impl Disconnect {
    /// Reads the Disconnect fields.
    ///
    /// # Panics
    /// When `sqe` is not a Disconnect command.
    pub fn from_sqe(sqe: &Sqe) -> Disconnect {
        assert_fabrics(sqe, FabricsType::Disconnect);
        Disconnect { recfmt: sqe.cdw10 as u16 }
    }

    /// A Disconnect command.
    pub fn to_sqe(&self, cid: u16) -> Sqe {
        Sqe { cdw10: self.recfmt as u32, ..Sqe::fabrics(FabricsType::Disconnect, cid) }
    }
}

/// Authentication Send or Receive (NVMe Base 2.0, 6.1 and 6.2): carries
/// in-band authentication messages (DH-HMAC-CHAP) in its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authentication {
    /// Send or Receive.
    pub fctype: FabricsType,
    /// Security Protocol (E9h for NVMe in-band authentication).
    pub secp: u8,
    pub spsp0: u8,
    pub spsp1: u8,
    /// Transfer Length (Send) or Allocation Length (Receive), in bytes.
    pub length: u32,
}

impl Authentication {
    /// Reads the fields of an Authentication Send or Receive.
    ///
    /// # Panics
    /// When `sqe` is neither.
    pub fn from_sqe(sqe: &Sqe) -> Authentication {
        let fctype = match FabricsType::try_from(sqe.fctype()) {
            Ok(t @ (FabricsType::AuthenticationSend | FabricsType::AuthenticationReceive)) => t,
            _ => panic!("Authentication view of fctype {:#04x}", sqe.fctype()),
        };
        assert_fabrics(sqe, fctype);
        let [_, spsp0, spsp1, secp] = sqe.cdw10.to_le_bytes();
        Authentication { fctype, secp, spsp0, spsp1, length: sqe.cdw11 }
    }

    /// An Authentication Send or Receive command; the caller adds the SGL.
    pub fn to_sqe(&self, cid: u16) -> Sqe {
        Sqe {
            cdw10: u32::from_le_bytes([0, self.spsp0, self.spsp1, self.secp]),
            cdw11: self.length,
            ..Sqe::fabrics(self.fctype, cid)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvme::ids::DISCOVERY_NQN;
    use proptest::prelude::*;

    #[test]
    fn connect_golden_bytes() {
        let c = Connect { recfmt: 0, qid: 3, sqsize: 127, cattr: 0x04, kato_ms: 5000 };
        let b = c.to_sqe(0x0102).encode();
        let mut want = [0u8; 64];
        want[0] = 0x7F;
        want[2..4].copy_from_slice(&[0x02, 0x01]);
        want[4] = 0x01;
        want[42..44].copy_from_slice(&[3, 0]);
        want[44..46].copy_from_slice(&[127, 0]);
        want[46] = 0x04;
        want[48..52].copy_from_slice(&5000u32.to_le_bytes());
        assert_eq!(b, want);
        let back = Connect::from_sqe(&Sqe::decode(&want));
        assert_eq!(back, c);
        assert_eq!(back.queue_entries(), 128);
        assert!(back.sq_flow_control_disabled());
        assert_eq!(back.queue(), Qid(3));
    }

    #[test]
    fn offsets_match_the_bytes_the_fields_occupy() {
        let c = Connect { recfmt: 0x1111, qid: 0x2222, sqsize: 0x3333, cattr: 0x44, kato_ms: 0x5555_5555 };
        let b = c.to_sqe(0).encode();
        assert_eq!(b[off::CONNECT_RECFMT as usize], 0x11);
        assert_eq!(b[off::CONNECT_QID as usize], 0x22);
        assert_eq!(b[off::CONNECT_SQSIZE as usize], 0x33);
        assert_eq!(b[off::CONNECT_CATTR as usize], 0x44);
        assert_eq!(b[off::CONNECT_KATO as usize], 0x55);
        assert_eq!(b[off::FCTYPE as usize], FabricsType::Connect as u8);
    }

    fn sample_data() -> ConnectData {
        ConnectData {
            hostid: *b"0123456789abcdef",
            cntlid: CntlId::DYNAMIC,
            subnqn: Nqn::discovery(),
            hostnqn: Nqn::parse("nqn.2014-08.org.nvmexpress:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6").unwrap(),
        }
    }

    #[test]
    fn connect_data_golden_bytes() {
        let mut b = [0u8; 1024];
        sample_data().encode(&mut b);
        assert_eq!(&b[..16], b"0123456789abcdef");
        assert_eq!(&b[16..18], &[0xFF, 0xFF]);
        assert!(b[18..256].iter().all(|&x| x == 0));
        assert_eq!(&b[256..256 + 36], DISCOVERY_NQN.as_bytes());
        assert_eq!(b[256 + 36], 0);
        assert_eq!(&b[512..516], b"nqn.");
        assert!(b[768..].iter().all(|&x| x == 0));
        assert_eq!(ConnectData::decode(&b).unwrap(), sample_data());
    }

    #[test]
    fn connect_data_errors_name_the_field() {
        let mut b = [0u8; 1024];
        sample_data().encode(&mut b);
        assert_eq!(ConnectData::decode(&b[..1000]), Err(WireError::Short { need: 1024, got: 1000 }));
        b[512..516].copy_from_slice(b"xqn.");
        let err = ConnectData::decode(&b).unwrap_err();
        assert_eq!(err.offset(), Some(off::DATA_HOSTNQN));
    }

    #[test]
    fn property_get_golden_and_reserved_size() {
        let g = PropertyGet { size: PropertySize::Eight, offset: 0x00 };
        let b = g.to_sqe(7).encode();
        assert_eq!((b[0], b[4], b[40], b[44]), (0x7F, 0x04, 0x01, 0x00));
        assert_eq!(PropertyGet::from_sqe(&Sqe::decode(&b)), Ok(g));
        let mut bad = Sqe::decode(&b);
        bad.cdw10 = 2;
        assert_eq!(PropertyGet::from_sqe(&bad), Err(WireError::Reserved { offset: off::PROPERTY_ATTRIB, value: 2 }));
    }

    #[test]
    fn property_set_golden() {
        let s = PropertySet { size: PropertySize::Four, offset: 0x14, value: 0x0046_0001 };
        let b = s.to_sqe(1).encode();
        assert_eq!(b[4], 0x00);
        assert_eq!(b[40], 0x00);
        assert_eq!(&b[44..48], &[0x14, 0, 0, 0]);
        assert_eq!(&b[48..56], &[0x01, 0x00, 0x46, 0, 0, 0, 0, 0]);
        assert_eq!(PropertySet::from_sqe(&Sqe::decode(&b)), Ok(s));
    }

    #[test]
    fn disconnect_and_authentication_round_trip() {
        let d = Disconnect { recfmt: 0 };
        let sqe = d.to_sqe(4);
        assert_eq!(sqe.encode()[4], 0x08);
        assert_eq!(Disconnect::from_sqe(&sqe), d);
        let a = Authentication {
            fctype: FabricsType::AuthenticationReceive,
            secp: 0xE9,
            spsp0: 0x01,
            spsp1: 0x01,
            length: 512,
        };
        let b = a.to_sqe(5).encode();
        assert_eq!((b[4], b[41], b[42], b[43]), (0x06, 0x01, 0x01, 0xE9));
        assert_eq!(Authentication::from_sqe(&Sqe::decode(&b)), a);
    }

    #[test]
    #[should_panic(expected = "Connect view")]
    fn viewing_another_command_is_a_bug() {
        Connect::from_sqe(&Sqe::fabrics(FabricsType::PropertyGet, 0));
    }

    proptest! {
        #[test]
        fn connect_round_trips(recfmt: u16, qid: u16, sqsize: u16, cattr: u8, kato_ms: u32, cid: u16) {
            let c = Connect { recfmt, qid, sqsize, cattr, kato_ms };
            prop_assert_eq!(Connect::from_sqe(&Sqe::decode(&c.to_sqe(cid).encode())), c);
        }

        #[test]
        fn property_set_round_trips(eight: bool, offset: u32, value: u64) {
            let size = if eight { PropertySize::Eight } else { PropertySize::Four };
            let s = PropertySet { size, offset, value };
            prop_assert_eq!(PropertySet::from_sqe(&s.to_sqe(0)), Ok(s));
        }

        #[test]
        fn connect_data_round_trips(hostid: [u8; 16], cntlid: u16, tail in "[a-z0-9]{1,100}") {
            let data = ConnectData {
                hostid,
                cntlid: CntlId::from_wire(cntlid),
                subnqn: Nqn::parse(&format!("nqn.2026-11.dev.fabriq:vol:{tail}")).unwrap(),
                hostnqn: Nqn::parse(&format!("nqn.2026-11.dev.fabriq:host:{tail}")).unwrap(),
            };
            let mut b = vec![0u8; ConnectData::SIZE];
            data.encode(&mut b);
            prop_assert_eq!(ConnectData::decode(&b).unwrap(), data);
        }
    }
}
