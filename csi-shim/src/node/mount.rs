//! Mounts: reading the mount table (`/proc/self/mountinfo`, the kernel's `proc(5)` format)
//! and the mount(2)/umount2(2) calls the node makes, through rustix (no unsafe code here).
//!
//! Mount flags from a volume capability are split the way mount(8) splits them: the generic
//! ones (`ro`, `noatime`, `nodev`, ...) become mount(2) flags, the rest is the file system's
//! data string (`discard`, `nobarrier`, ...).

use std::io;
use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, UnmountFlags};

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The device of the mounted file system (for a bind of a device node: devtmpfs's).
    pub major: u32,
    pub minor: u32,
    /// The path within the file system that is mounted (`/` for a whole file system,
    /// `/nvme0n1` for a bind of devtmpfs's `nvme0n1`).
    pub root: String,
    pub mount_point: PathBuf,
    /// Per-mount options (`rw,relatime`).
    pub options: String,
    pub fs_type: String,
    pub source: String,
}

impl Entry {
    pub fn read_only(&self) -> bool {
        self.options.split(',').any(|o| o == "ro")
    }
}

/// `\040`-style octal escapes of mountinfo fields undone.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    for line in text.lines() {
        // id parent major:minor root mount_point options [optional...] - fstype source super
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 6 || r.len() < 2 {
            continue;
        }
        let Some((major, minor)) = l[2].split_once(':') else { continue };
        let (Ok(major), Ok(minor)) = (major.parse(), minor.parse()) else { continue };
        out.push(Entry {
            major,
            minor,
            root: unescape(l[3]),
            mount_point: PathBuf::from(unescape(l[4])),
            options: l[5].to_owned(),
            fs_type: r[0].to_owned(),
            source: unescape(r[1]),
        });
    }
    out
}

/// The mount table of this process's mount namespace.
pub fn table() -> io::Result<Vec<Entry>> {
    Ok(parse(&std::fs::read_to_string("/proc/self/mountinfo")?))
}

/// The topmost mount at `path`, if `path` is a mount point.
pub fn at(table: &[Entry], path: &Path) -> Option<Entry> {
    table.iter().rev().find(|e| e.mount_point == path).cloned()
}

/// Mount flags and the data string for `options` (a capability's mount flags).
pub fn split_options(options: &[String]) -> (MountFlags, String) {
    let mut flags = MountFlags::empty();
    let mut data = Vec::new();
    for opt in options.iter().flat_map(|o| o.split(',')).filter(|o| !o.is_empty()) {
        match opt {
            "ro" => flags |= MountFlags::RDONLY,
            "rw" | "defaults" => {}
            "noatime" => flags |= MountFlags::NOATIME,
            "nodiratime" => flags |= MountFlags::NODIRATIME,
            "relatime" => flags |= MountFlags::RELATIME,
            "strictatime" => flags |= MountFlags::STRICTATIME,
            "lazytime" => flags |= MountFlags::LAZYTIME,
            "nodev" => flags |= MountFlags::NODEV,
            "noexec" => flags |= MountFlags::NOEXEC,
            "nosuid" => flags |= MountFlags::NOSUID,
            "sync" => flags |= MountFlags::SYNCHRONOUS,
            "dirsync" => flags |= MountFlags::DIRSYNC,
            other => data.push(other),
        }
    }
    (flags, data.join(","))
}

/// mount(2) of a file system.
pub fn mount_fs(device: &Path, target: &Path, fs_type: &str, flags: MountFlags, data: &str) -> io::Result<()> {
    let data = std::ffi::CString::new(data).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    rustix::mount::mount(device, target, fs_type, flags, Some(data.as_c_str())).map_err(io::Error::from)
}

/// A bind mount of `source` at `target`, then read-only and the generic `flags` applied by
/// a remount (a bind takes no flags of its own).
pub fn bind(source: &Path, target: &Path, flags: MountFlags) -> io::Result<()> {
    rustix::mount::mount_bind(source, target).map_err(io::Error::from)?;
    if !flags.is_empty()
        && let Err(e) = rustix::mount::mount_remount(target, MountFlags::BIND | flags, "")
    {
        rustix::mount::unmount(target, UnmountFlags::empty()).ok();
        return Err(e.into());
    }
    Ok(())
}

/// umount2(2) of `target` (the topmost mount there).
pub fn unmount(target: &Path) -> io::Result<()> {
    rustix::mount::unmount(target, UnmountFlags::empty()).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
30 22 259:3 / /var/lib/kubelet/plugins/kubernetes.io/csi/csi.fabriq.dev/abc/globalmount rw,relatime shared:1 - ext4 /dev/nvme0n1 rw
31 22 259:3 / /var/lib/kubelet/pods/p/volumes/kubernetes.io~csi/pvc-1/mount ro,relatime shared:1 - ext4 /dev/nvme0n1 rw
32 22 0:5 /nvme1n1 /var/lib/kubelet/pods/p/volumeDevices/kubernetes.io~csi/pvc-2 rw,nosuid master:2 - devtmpfs udev rw,size=1k
33 22 0:40 / /mnt/with\\040space rw - tmpfs tmpfs rw
bad line
";

    #[test]
    fn mountinfo_lines() {
        let t = parse(SAMPLE);
        assert_eq!(t.len(), 5);
        assert_eq!(
            (t[1].major, t[1].minor, t[1].fs_type.as_str(), t[1].source.as_str()),
            (259, 3, "ext4", "/dev/nvme0n1")
        );
        assert!(!t[1].read_only() && t[2].read_only());
        assert_eq!(t[3].root, "/nvme1n1");
        assert_eq!(t[4].mount_point, PathBuf::from("/mnt/with space"));
        let p = Path::new("/var/lib/kubelet/pods/p/volumes/kubernetes.io~csi/pvc-1/mount");
        assert_eq!(at(&t, p).unwrap().mount_point, p);
        assert!(at(&t, Path::new("/nope")).is_none());
    }

    #[test]
    fn options_split_into_flags_and_data() {
        let (flags, data) = split_options(&["noatime,discard".into(), "ro".into(), "nobarrier".into()]);
        assert_eq!(flags, MountFlags::NOATIME | MountFlags::RDONLY);
        assert_eq!(data, "discard,nobarrier");
        assert_eq!(split_options(&[]), (MountFlags::empty(), String::new()));
    }
}
