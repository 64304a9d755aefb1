//! File systems on volumes: finding out whether a device carries one already (a few
//! signatures read straight from the device, so a volume with data is never formatted over),
//! formatting (`mkfs.ext4`, `mkfs.xfs`), growing online (`resize2fs` on the device,
//! `xfs_growfs` on the mount point) and usage figures (statvfs).
//!
//! The probe looks for what blkid would find at the start of a disk: a file system it knows
//! (ext2/3/4, xfs, btrfs), a partition table (MBR, GPT), LUKS, swap. Anything found makes the
//! device "not empty": it is mounted if it is the file system wanted, refused otherwise.

use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::process::Command;

/// What a device starts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// No signature the probe knows: free to format.
    Empty,
    /// A file system the node mounts (`ext4` for any of ext2/3/4, `xfs`).
    Fs(&'static str),
    /// Something else (`btrfs`, `gpt`, `mbr`, `luks`, `swap`): never formatted over.
    Other(&'static str),
}

/// The bytes the probe reads: the first 68 KiB (btrfs's superblock sits at 64 KiB).
const PROBE_BYTES: usize = 68 * 1024;

/// Reads the start of `device` and tells what it carries.
pub fn probe(device: &Path) -> io::Result<Content> {
    let mut f = std::fs::File::open(device)?;
    f.seek(SeekFrom::Start(0))?;
    let mut buf = Vec::with_capacity(PROBE_BYTES);
    f.take(PROBE_BYTES as u64).read_to_end(&mut buf)?;
    Ok(probe_bytes(&buf))
}

/// [`probe`] on bytes already read.
pub fn probe_bytes(b: &[u8]) -> Content {
    let at = |off: usize, magic: &[u8]| b.get(off..off + magic.len()) == Some(magic);
    if at(0, b"XFSB") {
        return Content::Fs("xfs");
    }
    // ext2/3/4: s_magic 0xEF53 (little-endian) at byte 56 of the superblock at 1024.
    if at(1080, &[0x53, 0xEF]) {
        return Content::Fs("ext4");
    }
    if at(0, b"LUKS\xba\xbe") {
        return Content::Other("luks");
    }
    if at(65536 + 64, b"_BHRfS_M") {
        return Content::Other("btrfs");
    }
    if at(512, b"EFI PART") || at(4096, b"EFI PART") {
        return Content::Other("gpt");
    }
    if at(4096 - 10, b"SWAPSPACE2") || at(4096 - 10, b"SWAP-SPACE") {
        return Content::Other("swap");
    }
    // An MBR: the boot signature and at least one partition entry with a type.
    if at(510, &[0x55, 0xAA]) && (0..4).any(|i| b.get(446 + 16 * i + 4).is_some_and(|t| *t != 0)) {
        return Content::Other("mbr");
    }
    Content::Empty
}

/// Why a tool failed.
#[derive(Debug, thiserror::Error)]
#[error("{tool}: {why}")]
pub struct ToolError {
    pub tool: String,
    pub why: String,
}

/// Runs a tool to completion; its stderr is the error.
fn run(tool: &str, args: &[&std::ffi::OsStr]) -> Result<(), ToolError> {
    let out = Command::new(tool)
        .args(args)
        .output()
        .map_err(|e| ToolError { tool: tool.to_owned(), why: format!("cannot run it: {e}") })?;
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(ToolError { tool: tool.to_owned(), why: format!("{}: {}", out.status, stderr.trim()) })
    }
}

/// Formats `device` with `fs_type` (checked to be ext4 or xfs). No discard: a fresh fabriq
/// volume reads zeros where never written, and a discard of a whole volume is slow.
pub fn mkfs(device: &Path, fs_type: &str) -> Result<(), ToolError> {
    let dev = device.as_os_str();
    match fs_type {
        "ext4" => run("mkfs.ext4", &["-q".as_ref(), "-F".as_ref(), "-E".as_ref(), "nodiscard".as_ref(), dev]),
        "xfs" => run("mkfs.xfs", &["-q".as_ref(), "-f".as_ref(), "-K".as_ref(), dev]),
        other => Err(ToolError { tool: "mkfs".into(), why: format!("no file system {other:?}") }),
    }
}

/// Grows the file system on `device` mounted at `mount_point` to the device's size.
pub fn grow(device: &Path, mount_point: &Path, fs_type: &str) -> Result<(), ToolError> {
    match fs_type {
        "ext2" | "ext3" | "ext4" => run("resize2fs", &[device.as_os_str()]),
        "xfs" => run("xfs_growfs", &["-d".as_ref(), mount_point.as_os_str()]),
        other => {
            Err(ToolError { tool: "grow".into(), why: format!("file system {other:?} cannot be grown by the driver") })
        }
    }
}

/// Usage of a mounted file system: (total, available, used) bytes and the same in inodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub bytes: (u64, u64, u64),
    pub inodes: (u64, u64, u64),
}

/// statvfs(3) of `path`.
pub fn usage(path: &Path) -> io::Result<Usage> {
    let s = rustix::fs::statvfs(path).map_err(io::Error::from)?;
    let unit = if s.f_frsize > 0 { s.f_frsize } else { s.f_bsize };
    let total = s.f_blocks.saturating_mul(unit);
    let avail = s.f_bavail.saturating_mul(unit);
    let used = s.f_blocks.saturating_sub(s.f_bfree).saturating_mul(unit);
    Ok(Usage { bytes: (total, avail, used), inodes: (s.f_files, s.f_ffree, s.f_files.saturating_sub(s.f_ffree)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(patches: &[(usize, &[u8])]) -> Vec<u8> {
        let mut b = vec![0u8; PROBE_BYTES];
        for (off, bytes) in patches {
            b[*off..*off + bytes.len()].copy_from_slice(bytes);
        }
        b
    }

    #[test]
    fn signatures() {
        assert_eq!(probe_bytes(&with(&[])), Content::Empty);
        assert_eq!(probe_bytes(&[]), Content::Empty);
        assert_eq!(probe_bytes(&with(&[(0, b"XFSB")])), Content::Fs("xfs"));
        assert_eq!(probe_bytes(&with(&[(1080, &[0x53, 0xEF])])), Content::Fs("ext4"));
        assert_eq!(probe_bytes(&with(&[(65600, b"_BHRfS_M")])), Content::Other("btrfs"));
        assert_eq!(probe_bytes(&with(&[(512, b"EFI PART")])), Content::Other("gpt"));
        assert_eq!(probe_bytes(&with(&[(0, b"LUKS\xba\xbe")])), Content::Other("luks"));
        assert_eq!(probe_bytes(&with(&[(4086, b"SWAPSPACE2")])), Content::Other("swap"));
        // A boot signature alone (no partition typed) is not a partition table.
        assert_eq!(probe_bytes(&with(&[(510, &[0x55, 0xAA])])), Content::Empty);
        assert_eq!(probe_bytes(&with(&[(510, &[0x55, 0xAA]), (450, &[0x83])])), Content::Other("mbr"));
    }

    #[test]
    fn probe_reads_a_file_and_usage_reads_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("disk");
        std::fs::write(&f, with(&[(0, b"XFSB")])).unwrap();
        assert_eq!(probe(&f).unwrap(), Content::Fs("xfs"));
        std::fs::write(&f, b"short").unwrap();
        assert_eq!(probe(&f).unwrap(), Content::Empty);
        let u = usage(dir.path()).unwrap();
        assert!(u.bytes.0 > 0 && u.bytes.0 >= u.bytes.1 && u.bytes.0 >= u.bytes.2);
        assert!(usage(&dir.path().join("nope")).is_err());
    }
}
