//! Recognises what a device already holds before a pool is created over it: another fabriq
//! pool, a file system, a volume manager or RAID member, an encrypted volume, or a partition
//! table. Magic numbers and offsets are those libblkid (util-linux) probes for.
//!
//! Invariants: probing only reads, and only the device's first 4 MiB and a few bytes after;
//! the first match in the order below wins, most specific first (a FAT or NTFS boot sector
//! also carries the DOS boot signature; a GPT disk also carries a protective MBR).

use std::fmt;
use std::io;

use super::device::Device;
use super::format::{LABEL_MAGIC, Label};
use super::ids::{Name, PoolId};

/// A recognised signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    /// A fabriq pool label; id and name are known when the label verifies.
    FabriqPool {
        id: Option<PoolId>,
        name: Option<Name>,
    },
    Luks,
    Xfs,
    Ext,
    Btrfs,
    Swap,
    Lvm2,
    MdRaid,
    Iso9660,
    Ntfs,
    Fat,
    Gpt,
    Mbr,
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Signature::FabriqPool { id: Some(id), name: Some(name) } => write!(f, "fabriq pool {name} ({id})"),
            Signature::FabriqPool { .. } => f.write_str("a damaged fabriq pool label"),
            Signature::Luks => f.write_str("a LUKS encrypted volume"),
            Signature::Xfs => f.write_str("an XFS file system"),
            Signature::Ext => f.write_str("an ext2/ext3/ext4 file system"),
            Signature::Btrfs => f.write_str("a Btrfs file system"),
            Signature::Swap => f.write_str("a Linux swap area"),
            Signature::Lvm2 => f.write_str("an LVM2 physical volume"),
            Signature::MdRaid => f.write_str("a Linux MD RAID member"),
            Signature::Iso9660 => f.write_str("an ISO 9660 file system"),
            Signature::Ntfs => f.write_str("an NTFS file system"),
            Signature::Fat => f.write_str("a FAT file system"),
            Signature::Gpt => f.write_str("a GPT partition table"),
            Signature::Mbr => f.write_str("a DOS (MBR) partition table or boot sector"),
        }
    }
}

/// Bytes read from the start of the device: enough for every fixed-offset magic below.
const HEAD_BYTES: u64 = 128 << 10;
/// Where a LUKS2 secondary header may start (kept when the primary one was wiped).
const LUKS2_SECONDARY_OFFSETS: [u64; 9] =
    [0x4000, 0x8000, 0x1_0000, 0x2_0000, 0x4_0000, 0x8_0000, 0x10_0000, 0x20_0000, 0x40_0000];
/// The swap signature sits in the last 10 bytes of the first page, for page sizes 4..64 KiB.
const SWAP_OFFSETS: [usize; 5] = [0xff6, 0x1ff6, 0x3ff6, 0x7ff6, 0xfff6];

/// The first signature found on the device, if any.
pub fn probe(device: &dyn Device) -> io::Result<Option<Signature>> {
    let mut head = vec![0; HEAD_BYTES.min(device.size_bytes()) as usize];
    device.read_at(&mut head, 0)?;
    if let Some(found) = probe_head(&head) {
        return Ok(Some(found));
    }
    for offset in LUKS2_SECONDARY_OFFSETS {
        if offset + 8 <= device.size_bytes() {
            let mut magic = [0; 6];
            device.read_at(&mut magic, offset)?;
            if &magic == b"SKUL\xba\xbe" {
                return Ok(Some(Signature::Luks));
            }
        }
    }
    Ok(None)
}

fn probe_head(head: &[u8]) -> Option<Signature> {
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    if at(0, &LABEL_MAGIC) {
        let label = Label::decode(head).ok();
        return Some(Signature::FabriqPool { id: label.as_ref().map(|l| l.pool_id), name: label.map(|l| l.name) });
    }
    let boot_signature = at(510, &[0x55, 0xaa]);
    let checks: [(bool, Signature); 12] = [
        (at(0, b"LUKS\xba\xbe"), Signature::Luks),
        (at(0, b"XFSB"), Signature::Xfs),
        // The ext superblock is at 1024; its magic 0xEF53 at 0x38 inside it.
        (at(0x400 + 0x38, &[0x53, 0xef]), Signature::Ext),
        (at(0x1_0000 + 0x40, b"_BHRfS_M"), Signature::Btrfs),
        (SWAP_OFFSETS.iter().any(|&o| at(o, b"SWAPSPACE2") || at(o, b"SWAP-SPACE")), Signature::Swap),
        // The LVM2 label may be in any of the first four 512-byte sectors.
        ((0..4).any(|s| at(s * 512, b"LABELONE") && at(s * 512 + 0x18, b"LVM2 001")), Signature::Lvm2),
        // MD superblock 1.1 at 0, 1.2 at 4 KiB: magic 0xa92b4efc, little-endian.
        (at(0, &[0xfc, 0x4e, 0x2b, 0xa9]) || at(0x1000, &[0xfc, 0x4e, 0x2b, 0xa9]), Signature::MdRaid),
        (at(0x8001, b"CD001"), Signature::Iso9660),
        (at(3, b"NTFS    "), Signature::Ntfs),
        (boot_signature && (at(0x36, b"FAT12   ") || at(0x36, b"FAT16   ") || at(0x52, b"FAT32   ")), Signature::Fat),
        // The GPT header is in LBA 1: byte 512 or 4096 depending on the sector size.
        (at(512, b"EFI PART") || at(4096, b"EFI PART"), Signature::Gpt),
        (boot_signature, Signature::Mbr),
    ];
    checks.into_iter().find_map(|(found, signature)| found.then_some(signature))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::device::MemDevice;

    fn with(offset: u64, bytes: &[u8]) -> MemDevice {
        let dev = MemDevice::new(16 << 20, 512);
        dev.write_at(bytes, offset).unwrap();
        dev
    }

    fn lvm2_label() -> Vec<u8> {
        let mut label = b"LABELONE".to_vec();
        label.resize(0x18, 0);
        label.extend_from_slice(b"LVM2 001");
        label
    }

    #[test]
    fn blank_is_nothing() {
        assert_eq!(probe(&MemDevice::new(16 << 20, 512)).unwrap(), None);
        assert_eq!(probe(&MemDevice::new(4096, 512)).unwrap(), None, "a device smaller than the probe window");
    }

    #[test]
    fn each_signature_is_named() {
        let cases: Vec<(MemDevice, Signature)> = vec![
            (with(0, b"LUKS\xba\xbe\x00\x01"), Signature::Luks),
            (with(0x20_0000, b"SKUL\xba\xbe\x00\x02"), Signature::Luks),
            (with(0, b"XFSB"), Signature::Xfs),
            (with(1080, &[0x53, 0xef]), Signature::Ext),
            (with(65600, b"_BHRfS_M"), Signature::Btrfs),
            (with(4086, b"SWAPSPACE2"), Signature::Swap),
            (with(65526, b"SWAP-SPACE"), Signature::Swap),
            (with(512, &lvm2_label()), Signature::Lvm2),
            (with(4096, &[0xfc, 0x4e, 0x2b, 0xa9]), Signature::MdRaid),
            (with(32769, b"CD001"), Signature::Iso9660),
            (with(4096, b"EFI PART"), Signature::Gpt),
            (with(510, &[0x55, 0xaa]), Signature::Mbr),
            (with(0, b"FABRIQPL"), Signature::FabriqPool { id: None, name: None }),
        ];
        for (dev, expected) in cases {
            assert_eq!(probe(&dev).unwrap(), Some(expected.clone()), "{expected}");
        }
    }

    #[test]
    fn boot_sectors_are_told_apart() {
        let fat = with(510, &[0x55, 0xaa]);
        fat.write_at(b"FAT32   ", 0x52).unwrap();
        assert_eq!(probe(&fat).unwrap(), Some(Signature::Fat));
        let ntfs = with(510, &[0x55, 0xaa]);
        ntfs.write_at(b"NTFS    ", 3).unwrap();
        assert_eq!(probe(&ntfs).unwrap(), Some(Signature::Ntfs));
        let gpt = with(510, &[0x55, 0xaa]);
        gpt.write_at(b"EFI PART", 512).unwrap();
        assert_eq!(probe(&gpt).unwrap(), Some(Signature::Gpt), "a protective MBR is reported as the GPT it protects");
        let fat_without_boot_signature = with(0x52, b"FAT32   ");
        assert_eq!(probe(&fat_without_boot_signature).unwrap(), None);
        let lvm_label_without_type = with(0, b"LABELONE");
        assert_eq!(probe(&lvm_label_without_type).unwrap(), None);
    }

    #[test]
    fn messages_name_what_was_found() {
        assert_eq!(Signature::Ext.to_string(), "an ext2/ext3/ext4 file system");
        assert_eq!(Signature::Mbr.to_string(), "a DOS (MBR) partition table or boot sector");
    }
}
