//! NVMe/TCP header and data digests (NVMe TCP Transport Specification 1.0,
//! section 3.3.1.1 "PDU Header and Data Digests").
//!
//! Both digests are CRC32C (Castagnoli, RFC 3385): initial value all ones,
//! final value inverted; `crc32c::crc32c` computes exactly that. On the wire a
//! digest is the 32-bit value in little-endian byte order, like every other
//! NVMe/TCP field (section 2: "PDU bytes are transmitted and received in
//! little endian byte order"); SPDK and Linux both store it that way.
//!
//! Invariants:
//! - HDGST covers the PDU header only: the HLEN bytes from the first byte of
//!   the common header. It never covers the padding.
//! - DDGST covers the PDU data only (PAD bytes are "not protected by HDGST nor
//!   by DDGST"), so a [`DataDigest`] is fed exactly the data bytes, in order,
//!   from however many buffers they were scattered into.
//! - A header digest mismatch is fatal (the PLEN it vouches for cannot be
//!   trusted); a data digest mismatch is not (section 3.5, "Digest Error
//!   handling"), see [`DataDigestMismatch`].

use super::pdu::{Fatal, Fes};

/// Bytes a digest takes on the wire (HDGST and DDGST alike).
pub const DIGEST_LEN: usize = 4;

/// The HDGST of a PDU header: CRC32C over its HLEN bytes.
pub fn header_digest(header: &[u8]) -> u32 {
    crc32c::crc32c(header)
}

/// The wire form of a digest: little-endian.
pub fn to_wire(digest: u32) -> [u8; DIGEST_LEN] {
    digest.to_le_bytes()
}

/// A digest read from the wire.
pub fn from_wire(bytes: [u8; DIGEST_LEN]) -> u32 {
    u32::from_le_bytes(bytes)
}

/// Verifies the HDGST that followed `header` (its HLEN bytes).
///
/// A mismatch is a fatal transport error, "Header Digest Error"; the FEI of
/// the TermReq carries the digest that was received (Figures 22 and 23,
/// bytes 13:10 for FES 03h).
pub fn check_header_digest(header: &[u8], received: [u8; DIGEST_LEN]) -> Result<(), Fatal> {
    let received = from_wire(received);
    if header_digest(header) == received { Ok(()) } else { Err(Fatal::new(Fes::HeaderDigestError, received)) }
}

/// The DDGST of a PDU's data, accumulated over as many buffers as the data
/// was received into or is sent from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DataDigest {
    crc: u32,
}

impl DataDigest {
    /// A digest over no bytes yet.
    pub fn new() -> DataDigest {
        DataDigest { crc: 0 }
    }

    /// Feeds the next bytes of the data, in wire order.
    pub fn update(&mut self, bytes: &[u8]) {
        self.crc = crc32c::crc32c_append(self.crc, bytes);
    }

    /// The digest of every byte fed so far.
    pub fn finish(&self) -> u32 {
        self.crc
    }

    /// Compares with the DDGST that followed the data.
    pub fn check(&self, received: [u8; DIGEST_LEN]) -> Result<(), DataDigestMismatch> {
        let received = from_wire(received);
        let computed = self.finish();
        if computed == received { Ok(()) } else { Err(DataDigestMismatch { computed, received }) }
    }
}

/// The data of a PDU does not match its DDGST.
///
/// Not a fatal error: the byte stream is still in step (section 3.5). What the
/// specification prescribes:
/// - a controller that finds it in a CapsuleCmd's in-capsule data fails that
///   command with a non-fatal transport error (the generic status "Transient
///   Transport Error", 22h, in the NVMe Base Specification);
/// - a controller that finds it in an H2CData PDU may go on receiving that
///   command's H2CData PDUs or stop early, and then fails the command the same
///   way;
/// - a host that finds it in a C2HData PDU keeps receiving that command's
///   C2HData PDUs and fails the command once it completes successfully.
///
/// Linux nvmet does not do this: it treats a data digest error as fatal and
/// tears the connection down without sending a C2HTermReq. Older SPDK sent a
/// TermReq with FES "Header Digest Error"; current SPDK completes the command
/// with Transient Transport Error, as the specification says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("data digest mismatch: computed {computed:#010x}, received {received:#010x}")]
pub struct DataDigestMismatch {
    /// The CRC32C of the data as received.
    pub computed: u32,
    /// The DDGST the peer sent.
    pub received: u32,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A bit-at-a-time CRC32C, written from the definition (reflected
    /// polynomial 0x82F63B78, initial value and final XOR all ones), to check
    /// the hardware-accelerated crate against something independent.
    pub(crate) fn reference_crc32c(bytes: &[u8]) -> u32 {
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

    #[test]
    fn known_check_value() {
        // The CRC-32C "check" value for the ASCII digits 1 to 9.
        assert_eq!(header_digest(b"123456789"), 0xE306_9283);
        assert_eq!(reference_crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn rfc3720_vectors_in_wire_order() {
        // RFC 3720 appendix B.4 gives each CRC32C as the bytes in the order
        // they are sent, which is NVMe/TCP's order too.
        let zeros = [0u8; 32];
        let ones = [0xFFu8; 32];
        let up: Vec<u8> = (0..32).collect();
        let down: Vec<u8> = (0..32).rev().collect();
        assert_eq!(to_wire(header_digest(&zeros)), [0xAA, 0x36, 0x91, 0x8A]);
        assert_eq!(to_wire(header_digest(&ones)), [0x43, 0xAB, 0xA8, 0x62]);
        assert_eq!(to_wire(header_digest(&up)), [0x4E, 0x79, 0xDD, 0x46]);
        assert_eq!(to_wire(header_digest(&down)), [0x5C, 0xDB, 0x3F, 0x11]);
    }

    #[test]
    fn header_digest_check() {
        let header = [0x05u8, 0x01, 0x18, 0x00, 0x1C, 0, 0, 0];
        let good = to_wire(header_digest(&header));
        assert_eq!(check_header_digest(&header, good), Ok(()));
        let mut bad = good;
        bad[0] ^= 1;
        assert_eq!(check_header_digest(&header, bad), Err(Fatal::new(Fes::HeaderDigestError, from_wire(bad))));
    }

    #[test]
    fn data_digest_check() {
        let mut digest = DataDigest::new();
        digest.update(b"1234");
        digest.update(b"56789");
        assert_eq!(digest.check([0x83, 0x92, 0x06, 0xE3]), Ok(()));
        assert_eq!(digest.check([0, 0, 0, 0]), Err(DataDigestMismatch { computed: 0xE306_9283, received: 0 }));
    }

    #[test]
    fn empty_data_digest_is_zero() {
        assert_eq!(DataDigest::new().finish(), 0);
        assert_eq!(reference_crc32c(&[]), 0);
    }

    proptest! {
        #[test]
        fn accumulator_matches_one_shot_over_any_split(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut digest = DataDigest::new();
            let mut start = 0;
            for point in points.into_iter().chain([bytes.len()]) {
                digest.update(&bytes[start..point]);
                start = point;
            }
            prop_assert_eq!(digest.finish(), header_digest(&bytes));
            prop_assert_eq!(digest.finish(), reference_crc32c(&bytes));
        }

        #[test]
        fn wire_form_round_trips(value in any::<u32>()) {
            prop_assert_eq!(from_wire(to_wire(value)), value);
            prop_assert_eq!(to_wire(value)[0], value as u8);
        }
    }
}
