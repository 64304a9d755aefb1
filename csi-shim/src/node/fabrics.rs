//! The kernel's NVMe-oF initiator, driven the way nvme-cli drives it: a connect is one write
//! of `key=value,...` options to `/dev/nvme-fabrics` (the kernel answers `instance=N,...` on
//! the same descriptor), a disconnect is a write to a controller's `delete_controller`, a
//! rescan a write to its `rescan_controller`.
//!
//! Everything else is read from sysfs, never guessed from device names:
//! `/sys/class/nvme-subsystem/nvme-subsysS/subsysnqn` names the subsystem; its entries
//! `nvmeC` are its controllers (each with `transport`, `address`, `state`); its entries
//! `nvmeSnN` are the namespace heads (native multipath, Debian's kernels), each with `nsid`.
//! Without native multipath the namespaces hang under each controller instead
//! (`nvmeC/nvmeCnN`); both layouts are looked at. All paths hang off a [`Sysfs`] root so
//! tests run against fake trees.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// The options of one connect, as nvme-cli names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub transport: String,
    pub traddr: String,
    pub trsvcid: String,
    pub nqn: String,
    pub hostnqn: String,
    pub hostid: String,
    pub ctrl_loss_tmo_s: i32,
    pub reconnect_delay_s: u32,
    /// 0: the kernel's default (one queue per CPU).
    pub nr_io_queues: u32,
}

impl Connect {
    /// The line written to `/dev/nvme-fabrics`.
    pub fn options(&self) -> String {
        let mut s = format!(
            "nqn={},transport={},traddr={},trsvcid={},hostnqn={}",
            self.nqn, self.transport, self.traddr, self.trsvcid, self.hostnqn
        );
        if !self.hostid.is_empty() {
            s.push_str(&format!(",hostid={}", self.hostid));
        }
        s.push_str(&format!(",ctrl_loss_tmo={},reconnect_delay={}", self.ctrl_loss_tmo_s, self.reconnect_delay_s));
        if self.nr_io_queues > 0 {
            s.push_str(&format!(",nr_io_queues={}", self.nr_io_queues));
        }
        s
    }
}

/// A value the kernel would misread (a `,` or `=` splits its option parser) or an empty one.
pub fn check_option(value: &str) -> bool {
    !value.is_empty() && value.len() <= 223 && value.bytes().all(|b| b.is_ascii_graphic() && b != b',' && b != b'=')
}

/// What the kernel answered a connect: `instance=N,cntlid=M` -> N (the controller `nvmeN`).
pub fn parse_instance(answer: &str) -> Option<u32> {
    answer.trim().split(',').find_map(|kv| kv.strip_prefix("instance=")).and_then(|n| n.parse().ok())
}

/// One controller of a subsystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Controller {
    /// `nvme3`.
    pub name: String,
    pub transport: String,
    /// `traddr=10.0.2.2,trsvcid=4420` (and `src_addr=` on newer kernels).
    pub address: String,
    /// `live`, `connecting`, `resetting`, `deleting`, ...
    pub state: String,
}

impl Controller {
    /// Whether the controller goes to `traddr`:`trsvcid`.
    pub fn reaches(&self, transport: &str, traddr: &str, trsvcid: &str) -> bool {
        let field = |k: &str| {
            self.address.split(',').find_map(|kv| kv.trim().strip_prefix(k).and_then(|r| r.strip_prefix('=')))
        };
        self.transport == transport && field("traddr") == Some(traddr) && field("trsvcid") == Some(trsvcid)
    }
}

/// The sysfs (and `/dev`) the node looks at.
#[derive(Debug, Clone)]
pub struct Sysfs {
    /// `/sys`.
    pub root: PathBuf,
    /// `/dev`.
    pub dev: PathBuf,
    /// `/dev/nvme-fabrics`.
    pub fabrics: PathBuf,
}

impl Default for Sysfs {
    fn default() -> Sysfs {
        Sysfs { root: "/sys".into(), dev: "/dev".into(), fabrics: "/dev/nvme-fabrics".into() }
    }
}

fn read_trim(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

/// Directory entries whose name is `prefix` followed by digits, with the digits also
/// satisfying `rest` (names sorted for a stable order).
fn entries(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok().map(|n| (n, e.path())))
            .filter(|(n, _)| keep(n))
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}

/// `nvme3`: a controller.
fn is_controller(name: &str) -> bool {
    name.strip_prefix("nvme").is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

/// `nvme3n1`: a namespace block device (not the hidden per-path `nvme3c4n1`).
fn is_namespace(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("nvme") else { return false };
    let Some((a, b)) = rest.split_once('n') else { return false };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    digits(a) && digits(b)
}

impl Sysfs {
    fn subsystems_dir(&self) -> PathBuf {
        self.root.join("class/nvme-subsystem")
    }

    /// The subsystem directory whose `subsysnqn` is `nqn`.
    pub fn subsystem(&self, nqn: &str) -> Option<PathBuf> {
        entries(&self.subsystems_dir(), |n| n.starts_with("nvme-subsys"))
            .into_iter()
            .find(|(_, p)| read_trim(&p.join("subsysnqn")).as_deref() == Some(nqn))
            .map(|(_, p)| p)
    }

    /// The controllers of the subsystem `nqn`.
    pub fn controllers(&self, nqn: &str) -> Vec<Controller> {
        let Some(subsys) = self.subsystem(nqn) else { return Vec::new() };
        entries(&subsys, is_controller)
            .into_iter()
            .map(|(name, p)| Controller {
                name,
                transport: read_trim(&p.join("transport")).unwrap_or_default(),
                address: read_trim(&p.join("address")).unwrap_or_default(),
                state: read_trim(&p.join("state")).unwrap_or_default(),
            })
            .collect()
    }

    /// The block device name (`nvme2n1`) of namespace `nsid` of the subsystem `nqn`.
    pub fn namespace(&self, nqn: &str, nsid: u32) -> Option<String> {
        let subsys = self.subsystem(nqn)?;
        let wanted = nsid.to_string();
        let has_nsid = |p: &Path| read_trim(&p.join("nsid")).as_deref() == Some(wanted.as_str());
        if let Some((name, _)) = entries(&subsys, is_namespace).into_iter().find(|(_, p)| has_nsid(p)) {
            return Some(name);
        }
        // No native multipath: the namespaces hang under each controller.
        entries(&subsys, is_controller)
            .into_iter()
            .flat_map(|(_, ctrl)| entries(&ctrl, is_namespace))
            .find(|(_, p)| has_nsid(p))
            .map(|(name, _)| name)
    }

    /// The device file of a block device name.
    pub fn device(&self, name: &str) -> PathBuf {
        self.dev.join(name)
    }

    /// The size of a block device in bytes (sysfs counts 512-byte sectors).
    pub fn size_bytes(&self, name: &str) -> Option<u64> {
        read_trim(&self.root.join("class/block").join(name).join("size"))?.parse::<u64>().ok().map(|s| s * 512)
    }

    /// The block device name of `major:minor`.
    pub fn block_name(&self, major: u32, minor: u32) -> Option<String> {
        let uevent = std::fs::read_to_string(self.root.join(format!("dev/block/{major}:{minor}/uevent"))).ok()?;
        uevent.lines().find_map(|l| l.strip_prefix("DEVNAME=")).map(str::to_owned)
    }

    /// The subsystem NQN a block device name belongs to (`nvme2n1` -> its subsystem).
    pub fn nqn_of(&self, name: &str) -> Option<String> {
        entries(&self.subsystems_dir(), |n| n.starts_with("nvme-subsys")).into_iter().find_map(|(_, p)| {
            let direct = p.join(name).exists();
            let under = entries(&p, is_controller).iter().any(|(_, c)| c.join(name).exists());
            (direct || under).then(|| read_trim(&p.join("subsysnqn"))).flatten()
        })
    }

    /// Whether anything stacks on the block device (device-mapper, md: `holders/`).
    pub fn has_holders(&self, name: &str) -> bool {
        std::fs::read_dir(self.root.join("class/block").join(name).join("holders"))
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
    }

    /// Connects: one write of the options to `/dev/nvme-fabrics`; the controller's instance.
    /// `EALREADY`: the kernel has this very connection already (not an error to the caller).
    pub fn connect(&self, c: &Connect) -> io::Result<Option<u32>> {
        let mut f = std::fs::OpenOptions::new().read(true).write(true).open(&self.fabrics)?;
        f.write_all(c.options().as_bytes())?;
        let mut answer = String::new();
        // The kernel answers on the same descriptor; a fake file in tests answers nothing.
        f.read_to_string(&mut answer).ok();
        Ok(parse_instance(&answer))
    }

    /// Deletes a controller (nvme-cli's disconnect).
    pub fn disconnect(&self, controller: &str) -> io::Result<()> {
        std::fs::write(self.root.join("class/nvme").join(controller).join("delete_controller"), "1")
    }

    /// Asks a controller to rescan its namespaces (sizes included).
    pub fn rescan(&self, controller: &str) -> io::Result<()> {
        std::fs::write(self.root.join("class/nvme").join(controller).join("rescan_controller"), "1")
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A fake sysfs with one subsystem (`nvme-subsys2`, controller `nvme3`, namespace head
    /// `nvme2n1` when `multipath`, else `nvme3/nvme3n1`).
    pub fn fake(root: &Path, nqn: &str, multipath: bool) -> Sysfs {
        let w = |p: PathBuf, s: &str| {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, s).unwrap();
        };
        let sys = root.join("sys");
        let subsys = sys.join("class/nvme-subsystem/nvme-subsys2");
        w(subsys.join("subsysnqn"), &format!("{nqn}\n"));
        w(sys.join("class/nvme-subsystem/nvme-subsys0/subsysnqn"), "nqn.other\n");
        w(subsys.join("nvme3/transport"), "tcp\n");
        w(subsys.join("nvme3/address"), "traddr=10.0.2.2,trsvcid=4420,src_addr=10.0.2.15\n");
        w(subsys.join("nvme3/state"), "live\n");
        let ns = if multipath { subsys.join("nvme2n1") } else { subsys.join("nvme3/nvme3n1") };
        w(ns.join("nsid"), "1\n");
        if multipath {
            w(subsys.join("nvme3/nvme2c3n1/nsid"), "1\n");
        }
        let name = if multipath { "nvme2n1" } else { "nvme3n1" };
        w(sys.join("class/block").join(name).join("size"), "2048\n");
        std::fs::create_dir_all(sys.join("class/block").join(name).join("holders")).unwrap();
        w(sys.join("dev/block/259:7/uevent"), &format!("MAJOR=259\nMINOR=7\nDEVNAME={name}\nDEVTYPE=disk\n"));
        std::fs::create_dir_all(root.join("dev")).unwrap();
        Sysfs { root: sys, dev: root.join("dev"), fabrics: root.join("dev/nvme-fabrics") }
    }

    const NQN: &str = "nqn.2026-11.dev.fabriq:vol:5b0c8f1e-2a64-4c1d-9e3f-7d2a1b6c4e90";

    #[test]
    fn namespaces_are_found_by_subsystem_nqn_with_and_without_multipath() {
        for (multipath, name) in [(true, "nvme2n1"), (false, "nvme3n1")] {
            let dir = tempfile::tempdir().unwrap();
            let sys = fake(dir.path(), NQN, multipath);
            assert_eq!(sys.namespace(NQN, 1).as_deref(), Some(name));
            assert_eq!(sys.namespace(NQN, 2), None);
            assert_eq!(sys.namespace("nqn.none", 1), None);
            assert_eq!(sys.size_bytes(name), Some(2048 * 512));
            assert_eq!(sys.block_name(259, 7).as_deref(), Some(name));
            assert_eq!(sys.nqn_of(name).as_deref(), Some(NQN));
            assert!(!sys.has_holders(name));
            let ctrls = sys.controllers(NQN);
            assert_eq!(ctrls.len(), 1);
            assert_eq!(ctrls[0].name, "nvme3");
            assert!(ctrls[0].reaches("tcp", "10.0.2.2", "4420"));
            assert!(!ctrls[0].reaches("tcp", "10.0.2.2", "4421"));
            assert!(!ctrls[0].reaches("rdma", "10.0.2.2", "4420"));
        }
    }

    #[test]
    fn missing_sysfs_finds_nothing() {
        let sys = Sysfs { root: "/nonexistent-sysfs".into(), ..Sysfs::default() };
        assert_eq!(sys.subsystem(NQN), None);
        assert!(sys.controllers(NQN).is_empty());
        assert_eq!(sys.namespace(NQN, 1), None);
    }

    #[test]
    fn connect_options_and_answers() {
        let c = Connect {
            transport: "tcp".into(),
            traddr: "10.0.2.2".into(),
            trsvcid: "4420".into(),
            nqn: NQN.into(),
            hostnqn: "nqn.2014-08.org.nvmexpress:uuid:1".into(),
            hostid: "1b4e28ba-2fa1-11d2-883f-0016d3cca427".into(),
            ctrl_loss_tmo_s: -1,
            reconnect_delay_s: 2,
            nr_io_queues: 4,
        };
        assert_eq!(
            c.options(),
            format!(
                "nqn={NQN},transport=tcp,traddr=10.0.2.2,trsvcid=4420,hostnqn=nqn.2014-08.org.nvmexpress:uuid:1,\
                 hostid=1b4e28ba-2fa1-11d2-883f-0016d3cca427,ctrl_loss_tmo=-1,reconnect_delay=2,nr_io_queues=4"
            )
        );
        let c = Connect { hostid: String::new(), nr_io_queues: 0, ..c };
        assert!(!c.options().contains("hostid") && !c.options().contains("nr_io_queues"));
        assert_eq!(parse_instance("instance=3,cntlid=1\n"), Some(3));
        assert_eq!(parse_instance(""), None);
        assert!(check_option("10.0.2.2") && !check_option("a,b") && !check_option("a=b") && !check_option(""));
        assert!(!check_option("a b"));
    }

    #[test]
    fn connect_writes_the_options() {
        let dir = tempfile::tempdir().unwrap();
        let sys = fake(dir.path(), NQN, true);
        std::fs::write(&sys.fabrics, "").unwrap();
        let c = Connect {
            transport: "tcp".into(),
            traddr: "10.0.2.2".into(),
            trsvcid: "4420".into(),
            nqn: NQN.into(),
            hostnqn: "nqn.h".into(),
            hostid: String::new(),
            ctrl_loss_tmo_s: 60,
            reconnect_delay_s: 2,
            nr_io_queues: 0,
        };
        sys.connect(&c).unwrap();
        assert_eq!(std::fs::read_to_string(&sys.fabrics).unwrap(), c.options());
        std::fs::create_dir_all(sys.root.join("class/nvme/nvme3")).unwrap();
        sys.disconnect("nvme3").unwrap();
        sys.rescan("nvme3").unwrap();
        assert_eq!(std::fs::read_to_string(sys.root.join("class/nvme/nvme3/delete_controller")).unwrap(), "1");
    }
}
