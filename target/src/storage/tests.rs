//! Pool tests: the API's behaviour and errors, file-backed and loop-device pools, recovery
//! from damaged metadata, injected I/O errors, and the allocator against a simple model.
//! (Crash tests are in `crash_tests`.)

use std::path::Path;
use std::process::Command;

use proptest::prelude::*;

use super::format::{self, Layout};
use super::pool::{Env, check_table};
use super::*;

const E: u64 = 1 << 20;

fn mem(bytes: u64) -> Box<dyn Device> {
    Box::new(MemDevice::new(bytes, 512))
}

#[test]
fn a_pool_comes_back_with_its_volumes() {
    let mut pool = Pool::create(mem(64 << 20), "pool0", false).unwrap();
    let info = pool.info();
    assert_eq!(
        (info.extent_bytes, info.data_extents, info.free_extents, info.volumes, info.generation),
        (E, 55, 55, 0, 1)
    );
    assert_eq!(info.capacity_bytes, 55 * E);
    let a = pool.create_volume("a", 3 * E, 4096).unwrap();
    let b = pool.create_volume("b", 1, 512).unwrap();
    assert_eq!(b.size_bytes(), E, "sizes round up to whole extents");
    assert_eq!(b.blocks(), E / 512);
    assert_eq!(a.state(), VolumeState::Ready);
    assert_eq!(pool.info().free_extents, 51);
    let generation = pool.generation();
    let volumes = pool.volumes().to_vec();
    let id = pool.id();

    let pool = Pool::open(pool.into_device()).unwrap();
    assert_eq!(pool.id(), id);
    assert_eq!(pool.name().as_str(), "pool0");
    assert_eq!(pool.generation(), generation);
    assert_eq!(pool.volumes(), volumes.as_slice());
    assert_eq!(pool.volume(a.id()).unwrap(), &a);
    assert_eq!(pool.volume_by_name("b").unwrap(), &b);
    assert_eq!(pool.info().free_extents, 51);
}

#[test]
fn volume_requests_are_checked() {
    let mut pool = Pool::create(mem(32 << 20), "p", false).unwrap();
    let a = pool.create_volume("a", 2 * E, 4096).unwrap();
    let generation = pool.generation();
    let err = pool.create_volume("a", E, 4096).unwrap_err();
    assert!(matches!(&err, StorageError::NameTaken(n) if n.as_str() == "a"), "{err}");
    assert_eq!(err.code(), "name_taken");
    let err = pool.create_volume("c", E, 1024).unwrap_err();
    assert_eq!(err.to_string(), "block size 1024 is not supported: 512 or 4096");
    assert_eq!(err.code(), "invalid_argument");
    assert!(matches!(pool.create_volume("c", 0, 512), Err(StorageError::InvalidArgument(InvalidArgument::ZeroSize))));
    assert!(matches!(
        pool.create_volume("c", u64::MAX, 512),
        Err(StorageError::InvalidArgument(InvalidArgument::SizeTooLarge(_)))
    ));
    let err = pool.create_volume("no/slash", E, 512).unwrap_err();
    assert!(err.to_string().contains("not '/'"), "{err}");
    let err = pool.create_volume("big", 100 * E, 512).unwrap_err();
    assert!(matches!(err, StorageError::NoSpace { needed_extents: 100, free_extents: 21, extent_bytes: E }), "{err}");
    assert_eq!(err.code(), "no_space");
    let err = pool.grow_volume(a.id(), E).unwrap_err();
    assert!(
        matches!(err, StorageError::InvalidArgument(InvalidArgument::Shrink { current_bytes, requested_bytes, .. }) if current_bytes == 2 * E && requested_bytes == E)
    );
    assert_eq!(
        pool.grow_volume(a.id(), 2 * E - 5).map(|_| ()).unwrap_err().code(),
        "invalid_argument",
        "less than it has is a shrink"
    );
    assert_eq!(pool.grow_volume(a.id(), 2 * E).unwrap(), a, "growing to the same size changes nothing");
    assert_eq!(pool.generation(), generation, "no refused request wrote anything");
    let missing = VolumeId::parse("67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap();
    let err = pool.grow_volume(missing, 4 * E).unwrap_err();
    assert_eq!(err.to_string(), "no volume with id 67e55044-10b1-426f-9247-bb680e5fe0c8");
    assert_eq!(err.code(), "not_found");
    assert_eq!(pool.volume_by_name("zz").unwrap_err().to_string(), "no volume named \"zz\"");
    assert!(matches!(pool.delete_volume(missing), Err(StorageError::NotFound(Lookup::Id(_)))));
}

#[test]
fn fragmented_space_is_used_and_maps_translate() {
    // 23 data extents: 9..32.
    let mut pool = Pool::create(mem(32 << 20), "p", false).unwrap();
    let ids: Vec<VolumeId> = (0..6).map(|i| pool.create_volume(&format!("v{i}"), 3 * E, 512).unwrap().id()).collect();
    assert_eq!(pool.info().free_extents, 5);
    for id in [ids[1], ids[3]] {
        pool.delete_volume(id).unwrap();
    }
    // Free: 12..15, 18..21, 27..32 (5). Ten extents: biggest spans first.
    let big = pool.create_volume("big", 10 * E, 4096).unwrap();
    let runs: Vec<(u64, u64, u64)> = big.runs().iter().map(|r| (r.logical_start, r.physical_start, r.count)).collect();
    assert_eq!(runs, vec![(0, 27, 5), (5, 12, 3), (8, 18, 2)]);
    let pieces: Vec<(u64, u64)> = big.map(4 * E + 10, 2 * E).unwrap().collect();
    assert_eq!(
        pieces,
        vec![(31 * E + 10, E - 10), (12 * E, E + 10)],
        "a piece ends where a run does, not at every extent"
    );
    assert_eq!(pool.info().free_extents, 1);
    // The last free extent continues nothing of v0 (9..12): it lands at 20.
    let v0 = pool.grow_volume(ids[0], 4 * E).unwrap();
    assert_eq!(v0.runs().len(), 2);
    assert_eq!(v0.runs()[1], Run { logical_start: 3, physical_start: 20, count: 1 });
    assert!(matches!(
        pool.grow_volume(ids[0], 5 * E),
        Err(StorageError::NoSpace { needed_extents: 1, free_extents: 0, .. })
    ));
    let reopened = Pool::open(pool.into_device()).unwrap();
    assert_eq!(reopened.volume(big.id()).unwrap(), &big);
}

#[test]
fn growing_extends_in_place_when_it_can() {
    let mut pool = Pool::create(mem(32 << 20), "p", false).unwrap();
    let a = pool.create_volume("a", E, 512).unwrap();
    let a = pool.grow_volume(a.id(), 5 * E).unwrap();
    assert_eq!(a.runs(), &[Run { logical_start: 0, physical_start: 9, count: 5 }]);
}

#[test]
fn deleting_discards_and_frees() {
    let dev = FaultyDevice::new(&MemDevice::new(32 << 20, 512), false);
    let mut pool = Pool::create(Box::new(dev.clone()), "p", false).unwrap();
    let a = pool.create_volume("a", 2 * E, 512).unwrap();
    let (offset, _) = a.map(0, 1).unwrap().next().unwrap();
    pool.device().write_at(b"data", offset).unwrap();
    pool.delete_volume(a.id()).unwrap();
    let mut back = [1; 4];
    pool.device().read_at(&mut back, offset).unwrap();
    assert_eq!(back, [0; 4], "the memory device discards to zeroes");
    assert_eq!(pool.info().free_extents, 23);
    assert!(pool.volumes().is_empty());
    assert!(matches!(pool.volume(a.id()), Err(StorageError::NotFound(_))));
}

#[test]
fn a_failed_discard_leaves_the_volume_deleting_until_retried_or_reopened() {
    let dev = FaultyDevice::new(&MemDevice::new(32 << 20, 512), false);
    let mut pool = Pool::create(Box::new(dev.clone()), "p", false).unwrap();
    let a = pool.create_volume("a", 2 * E, 512).unwrap();
    let b = pool.create_volume("b", 2 * E, 512).unwrap();
    dev.fail_discards(true);
    let err = pool.delete_volume(a.id()).unwrap_err();
    assert_eq!(err.code(), "io_error");
    assert_eq!(pool.volume(a.id()).unwrap().state(), VolumeState::Deleting);
    assert!(matches!(pool.grow_volume(a.id(), 3 * E), Err(StorageError::Deleting(_))));
    assert_eq!(pool.info().free_extents, 19, "a deleting volume still owns its extents");
    assert!(matches!(pool.create_volume("a", E, 512), Err(StorageError::NameTaken(_))));
    dev.fail_discards(false);
    pool.delete_volume(a.id()).unwrap();
    assert_eq!(pool.info().free_extents, 21);

    dev.fail_discards(true);
    assert!(pool.delete_volume(b.id()).is_err());
    dev.fail_discards(false);
    let pool = Pool::open(pool.into_device()).unwrap();
    assert!(pool.volumes().is_empty(), "open finished the deletion");
    assert_eq!(pool.info().free_extents, 23);
}

#[test]
fn failed_writes_and_flushes_leave_a_consistent_pool() {
    let dev = FaultyDevice::new(&MemDevice::new(32 << 20, 512), true);
    let mut pool = Pool::create(Box::new(dev.clone()), "p", false).unwrap();
    pool.create_volume("a", E, 512).unwrap();
    let before = pool.volumes().to_vec();
    let generation = pool.generation();

    dev.fail_write(dev.writes());
    assert_eq!(pool.create_volume("b", E, 512).map(drop).unwrap_err().code(), "io_error");
    assert_eq!(pool.volumes(), before.as_slice(), "memory keeps the old table");
    assert_eq!(pool.generation(), generation);

    dev.fail_flush(dev.flushes());
    assert!(pool.create_volume("b", E, 512).is_err());
    assert_eq!(pool.volumes(), before.as_slice());
    // What reached the cache may or may not survive: either way the pool opens, old or new.
    for policy in [CachePolicy::DropAll, CachePolicy::KeepAll] {
        let reopened = Pool::open(Box::new(dev.crash(policy))).unwrap();
        assert!(reopened.volumes().len() == 1 || reopened.volumes().len() == 2);
    }
    // The next update supersedes the failed one.
    let b = pool.create_volume("b", E, 512).unwrap();
    let reopened = Pool::open(Box::new(dev.crash(CachePolicy::DropAll))).unwrap();
    assert_eq!(reopened.volume(b.id()).unwrap(), &b);
    assert_eq!(reopened.generation(), generation + 1);

    dev.fail_reads(true);
    let err = Pool::open(Box::new(dev.clone())).unwrap_err();
    assert!(matches!(err, StorageError::Io { context: "reading the label", .. }), "{err}");
}

#[test]
fn a_damaged_slot_falls_back_to_the_other() {
    let mut pool = Pool::create(mem(32 << 20), "p", false).unwrap();
    pool.create_volume("a", E, 512).unwrap(); // generation 2, in slot A
    let dev = pool.into_device();
    // Flip a byte of slot A's table.
    let at = (1 << 20) + format::SLOT_HEADER_BYTES as u64 + 20;
    let mut byte = [0];
    dev.read_at(&mut byte, at).unwrap();
    dev.write_at(&[byte[0] ^ 0x40], at).unwrap();
    let pool = Pool::open(dev).unwrap();
    assert_eq!(pool.generation(), 1, "slot B's older table");
    assert!(pool.volumes().is_empty());

    // Now B (generation 1) is damaged too: nothing valid is left.
    let dev = pool.into_device();
    dev.write_at(&[0xff; 8], (5 << 20) + 32).unwrap();
    let err = Pool::open(dev).unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::Corrupt(Corruption::NoValidSlot {
                a: SlotProblem::PayloadChecksum,
                b: SlotProblem::HeaderChecksum
            })
        ),
        "{err}"
    );
    assert_eq!(err.code(), "corrupt_metadata");
    assert_eq!(
        err.to_string(),
        "pool metadata is corrupt: no metadata slot is valid: slot A payload checksum mismatch; slot B header checksum mismatch"
    );
}

#[test]
fn a_checksummed_table_with_a_double_owned_extent_is_refused() {
    let mut pool = Pool::create(mem(32 << 20), "p", false).unwrap();
    let a = pool.create_volume("a", 2 * E, 512).unwrap();
    let mut b = pool.create_volume("b", 2 * E, 512).unwrap();
    let layout = Layout::for_device(32 << 20, E, 4 << 20).unwrap();
    b.runs[0].physical_start = a.runs()[0].physical_start + 1;
    let table = vec![a.clone(), b.clone()];
    assert!(matches!(check_table(&table, &layout), Err(TableProblem::OwnedTwice { extent: 10, .. })));
    let bytes = format::encode_slot(&layout, pool.id(), 4, &table).unwrap();
    let dev = pool.into_device();
    dev.write_at(&bytes, layout.slot_offsets[0]).unwrap();
    let err = Pool::open(dev).unwrap_err();
    assert!(
        matches!(
            &err,
            StorageError::Corrupt(Corruption::Table {
                slot: 'A',
                generation: 4,
                problem: TableProblem::OwnedTwice { .. }
            })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("is owned by both volume"), "{err}");
}

#[test]
fn label_problems_are_clear() {
    let err = Pool::open(mem(32 << 20)).unwrap_err();
    assert!(matches!(err, StorageError::NotAPool { found: None }));
    assert_eq!(err.to_string(), "no fabriq pool label on the device");
    let ext = MemDevice::new(32 << 20, 512);
    ext.write_at(&[0x53, 0xef], 1080).unwrap();
    assert_eq!(
        Pool::open(Box::new(ext)).unwrap_err().to_string(),
        "no fabriq pool label on the device (it holds an ext2/ext3/ext4 file system)"
    );
    assert!(matches!(Pool::open(mem(100)).unwrap_err(), StorageError::NotAPool { .. }));

    let pool = Pool::create(mem(32 << 20), "p", false).unwrap();
    let dev = pool.into_device();
    dev.write_at(&[0xee], 100).unwrap();
    assert!(matches!(Pool::open(dev).unwrap_err(), StorageError::Corrupt(Corruption::LabelChecksum)));
}

#[test]
fn a_device_shorter_than_its_label_says_is_refused() {
    let pool = Pool::create(mem(32 << 20), "p", false).unwrap();
    let dev = pool.into_device();
    let short = MemDevice::new(31 << 20, 512);
    let mut bytes = vec![0; 9 << 20];
    dev.read_at(&mut bytes, 0).unwrap();
    short.write_at(&bytes, 0).unwrap();
    let err = Pool::open(Box::new(short)).unwrap_err();
    assert!(
        matches!(err, StorageError::DeviceTooSmall { device_bytes, needed_bytes, .. } if device_bytes == 31 << 20 && needed_bytes == 32 << 20)
    );
    assert!(err.to_string().contains("was it shrunk?"), "{err}");
    let err = Pool::create(mem((10 << 20) - 1), "p", false).unwrap_err();
    assert!(matches!(err, StorageError::DeviceTooSmall { needed_bytes, .. } if needed_bytes == 10 << 20), "{err}");
}

#[test]
fn create_refuses_what_the_device_holds_unless_forced() {
    let first = Pool::create(mem(32 << 20), "first", false).unwrap();
    let first_id = first.id();
    let dev = first.into_device();
    let err = Pool::create(dev, "second", false).unwrap_err();
    assert_eq!(err.code(), "foreign_device");
    assert_eq!(
        err.to_string(),
        format!("the device holds fabriq pool first ({first_id}); refusing to create a pool over it unless forced")
    );

    let dev = MemDevice::new(32 << 20, 512);
    dev.write_at(b"XFSB", 0).unwrap();
    dev.write_at(b"_BHRfS_M", 65600).unwrap();
    let err = Pool::create(Box::new(dev), "p", false).unwrap_err();
    assert!(matches!(err, StorageError::Foreign { found: Signature::Xfs }));
    assert_eq!(err.to_string(), "the device holds an XFS file system; refusing to create a pool over it unless forced");

    let dev = FaultyDevice::new(&MemDevice::new(32 << 20, 512), false);
    dev.write_at(b"XFSB", 0).unwrap();
    dev.write_at(b"_BHRfS_M", 65600).unwrap();
    dev.write_at(b"SKUL\xba\xbe", 0x40_0000).unwrap();
    let pool = Pool::create(Box::new(dev.clone()), "p", true).unwrap();
    drop(pool);
    let mut head = vec![0; 5 << 20];
    dev.read_at(&mut head, 0).unwrap();
    assert!(head[..format::LABEL_BYTES].starts_with(b"FABRIQPL"));
    assert_eq!(
        probe(&dev).unwrap(),
        Some(Signature::FabriqPool {
            id: Pool::open(Box::new(dev.clone())).ok().map(|p| p.id()),
            name: Some(Name::new("p").unwrap())
        })
    );
    assert!(head[65600..65608].iter().all(|&b| b == 0), "forcing wipes the metadata area: no stale Btrfs");
    assert!(head[0x40_0000..0x40_0006].iter().all(|&b| b == 0), "nor a stale LUKS2 secondary header");
}

#[test]
fn forcing_over_an_old_pool_forgets_it_entirely() {
    let mut old = Pool::create(mem(32 << 20), "old", false).unwrap();
    for i in 0..5 {
        old.create_volume(&format!("v{i}"), E, 512).unwrap();
    }
    let old_id = old.id();
    let new = Pool::create_in(
        old.into_device(),
        "new",
        &CreateOptions { force: true, ..CreateOptions::default() },
        Env::fixed(1),
    )
    .unwrap();
    assert_ne!(new.id(), old_id);
    let reopened = Pool::open(new.into_device()).unwrap();
    assert_eq!(reopened.name().as_str(), "new");
    assert!(reopened.volumes().is_empty());
    assert_eq!(reopened.generation(), 1);
}

#[test]
fn create_options_are_checked() {
    let with = |extent_bytes, slot_bytes| {
        Pool::create_with(mem(64 << 20), "p", &CreateOptions { force: false, extent_bytes, slot_bytes }).map(drop)
    };
    assert!(matches!(with(3 << 20, 4 << 20), Err(StorageError::InvalidArgument(InvalidArgument::ExtentSize(_)))));
    assert!(matches!(with(32 << 10, 4 << 20), Err(StorageError::InvalidArgument(InvalidArgument::ExtentSize(_)))));
    assert!(matches!(with(1 << 20, 5000), Err(StorageError::InvalidArgument(InvalidArgument::SlotSize(5000)))));
    with(64 << 10, 8 << 10).unwrap();
    let err = Pool::create(Box::new(MemDevice::new(64 << 20, 2048)), "p", false).unwrap_err();
    assert_eq!(err.to_string(), "the device's sector size 2048 is not supported: 512 or 4096");
    assert!(matches!(
        Pool::create(mem(64 << 20), "", false),
        Err(StorageError::InvalidArgument(InvalidArgument::Name { .. }))
    ));
}

#[test]
fn a_full_metadata_slot_is_a_distinct_error_and_writes_nothing() {
    // An 8 KiB slot holds (8192 - 64 - 8) / (112 + 24) = 59 one-run volumes.
    let options = CreateOptions { force: false, extent_bytes: 64 << 10, slot_bytes: 8 << 10 };
    let mut pool = Pool::create_with(mem(64 << 20), "p", &options).unwrap();
    for i in 0..59 {
        pool.create_volume(&format!("v{i}"), 64 << 10, 512).unwrap();
    }
    let generation = pool.generation();
    let err = pool.create_volume("one-too-many", 64 << 10, 512).unwrap_err();
    assert!(matches!(err, StorageError::MetadataFull { table_bytes: 8168, slot_bytes: 8128 }), "{err}");
    assert_eq!(err.code(), "metadata_full");
    assert_eq!(pool.generation(), generation);
    assert_eq!(Pool::open(pool.into_device()).unwrap().volumes().len(), 59);
}

#[test]
fn a_file_backed_pool_survives_a_restart_and_releases_deleted_space() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pool.img");
    let allocated = || std::fs::metadata(&path).unwrap().blocks() * 512;
    let dev = FileDevice::create(&path, 256 << 20).unwrap();
    let mut pool = Pool::create(Box::new(dev), "default", false).unwrap();
    let a = pool.create_volume("a", 8 * E, 4096).unwrap();
    let b = pool.create_volume("b", 2 * E, 512).unwrap();
    let data = vec![0x5a; 8 << 20];
    for (offset, len) in a.map(0, 8 * E).unwrap() {
        pool.device().write_at(&data[..len as usize], offset).unwrap();
    }
    pool.device().flush().unwrap();
    let with_data = allocated();
    assert!(with_data >= 8 << 20, "{with_data}");
    drop(pool);

    let mut pool = Pool::open(Box::new(FileDevice::open(&path).unwrap())).unwrap();
    assert_eq!(pool.volumes(), &[a.clone(), b.clone()]);
    let (offset, _) = a.map(5 * E, 1).unwrap().next().unwrap();
    let mut back = [0; 16];
    pool.device().read_at(&mut back, offset).unwrap();
    assert_eq!(back, [0x5a; 16]);
    pool.delete_volume(a.id()).unwrap();
    assert!(allocated() <= with_data - (8 << 20), "the deleted volume's extents were punched out of the file");
    pool.device().read_at(&mut back, offset).unwrap();
    assert_eq!(back, [0; 16]);
    drop(pool);
    let pool = Pool::open(Box::new(FileDevice::open(&path).unwrap())).unwrap();
    assert_eq!(pool.volumes(), &[b]);
}

#[test]
fn real_tools_signatures_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tools: [(&str, &[&str], Signature); 2] =
        [("mkfs.ext4", &["-q", "-F"], Signature::Ext), ("mkswap", &[], Signature::Swap)];
    for (tool, args, expected) in tools {
        let path = dir.path().join(format!("{tool}.img"));
        drop(FileDevice::create(&path, 64 << 20).unwrap());
        match Command::new(tool).args(args).arg(&path).output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => panic!("{tool} failed: {}", String::from_utf8_lossy(&out.stderr)),
            Err(e) => {
                eprintln!("skipping {tool}: {e}");
                continue;
            }
        }
        let dev = FileDevice::open(&path).unwrap();
        let err = Pool::create(Box::new(dev), "p", false).unwrap_err();
        assert!(matches!(&err, StorageError::Foreign { found } if *found == expected), "{tool}: {err}");
        let pool = Pool::create(Box::new(FileDevice::open(&path).unwrap()), "p", true).unwrap();
        drop(pool);
        if let Ok(out) = Command::new("blkid").arg("-p").arg(&path).output() {
            let said = String::from_utf8_lossy(&out.stdout);
            assert!(!said.contains("TYPE="), "blkid still sees a signature after a forced create: {said}");
        }
    }
}

/// A loop device over a sparse file, detached on drop.
struct Loop {
    device: String,
}

impl Loop {
    fn attach(file: &Path) -> Option<Loop> {
        if !Path::new("/dev/loop-control").exists() {
            eprintln!("skipping: /dev/loop-control is missing (no loop module)");
            return None;
        }
        match Command::new("losetup").args(["-f", "--show"]).arg(file).output() {
            Ok(out) if out.status.success() => {
                Some(Loop { device: String::from_utf8_lossy(&out.stdout).trim().to_owned() })
            }
            Ok(out) => {
                eprintln!("skipping: losetup refused: {}", String::from_utf8_lossy(&out.stderr).trim());
                None
            }
            Err(e) => {
                eprintln!("skipping: losetup: {e}");
                None
            }
        }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
    }
}

#[test]
fn a_pool_on_a_loop_device() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backing.img");
    drop(FileDevice::create(&file, 64 << 20).unwrap());
    let Some(lo) = Loop::attach(&file) else { return };
    let path = Path::new(&lo.device);
    let dev = FileDevice::open(path).unwrap();
    assert!(dev.is_block_device());
    assert_eq!(dev.size_bytes(), 64 << 20);
    assert!([512, 4096].contains(&dev.sector_bytes()));
    let busy = FileDevice::open(path).unwrap_err();
    assert!(busy.to_string().contains(&lo.device), "a second exclusive open is refused: {busy}");
    let mut pool = Pool::create(Box::new(dev), "lo", false).unwrap();
    let v = pool.create_volume("v", 4 * E, 4096).unwrap();
    let (offset, _) = v.map(0, 1).unwrap().next().unwrap();
    pool.device().write_at(&[7; 4096], offset).unwrap();
    pool.device().flush().unwrap();
    let grown = pool.grow_volume(v.id(), 6 * E).unwrap();
    drop(pool);
    let mut pool = Pool::open(Box::new(FileDevice::open(path).unwrap())).unwrap();
    assert_eq!(pool.volume(v.id()).unwrap(), &grown);
    pool.delete_volume(v.id()).unwrap();
    let mut back = [1; 4096];
    pool.device().read_at(&mut back, offset).unwrap();
    assert_eq!(back, [0; 4096], "a loop device zeroes what it discards");
    drop(pool);
    let err = Pool::create(Box::new(FileDevice::open(path).unwrap()), "again", false).unwrap_err();
    assert_eq!(err.code(), "foreign_device");
}

#[derive(Debug, Clone)]
enum Op {
    Create { extents: u64 },
    Grow { which: usize, more: u64 },
    Delete { which: usize },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u64..12).prop_map(|extents| Op::Create { extents }),
        3 => (any::<usize>(), 1u64..8).prop_map(|(which, more)| Op::Grow { which, more }),
        3 => any::<usize>().prop_map(|which| Op::Delete { which }),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// The allocator against a model that only knows who owns each extent: random creates,
    /// grows and deletes never give out an owned extent, never move a volume's existing
    /// extents, never lose space, and fail with "no space" exactly when the model is short.
    #[test]
    fn allocation_agrees_with_a_simple_model(ops in proptest::collection::vec(op(), 1..60)) {
        // 48 data extents: 9..57.
        let (first, end) = (9u64, 57u64);
        let mut pool = Pool::create(mem(end * E), "model", false).unwrap();
        let mut owner: Vec<Option<VolumeId>> = vec![None; end as usize];
        let mut live: Vec<VolumeId> = Vec::new();
        let model_free = |owner: &[Option<VolumeId>]| owner[first as usize..].iter().filter(|o| o.is_none()).count() as u64;
        let extents_of = |v: &Volume| -> Vec<u64> { v.runs().iter().flat_map(|r| r.physical_start..r.physical_end()).collect() };
        for (n, op) in ops.into_iter().enumerate() {
            match op {
                Op::Create { extents } => {
                    let free = model_free(&owner);
                    match pool.create_volume(&format!("v{n}"), extents * E, 512) {
                        Ok(v) => {
                            prop_assert!(free >= extents);
                            prop_assert_eq!(v.extents(), extents);
                            for p in extents_of(&v) {
                                prop_assert!(p >= first && owner[p as usize].is_none(), "extent {} given out twice", p);
                                owner[p as usize] = Some(v.id());
                            }
                            live.push(v.id());
                        }
                        Err(StorageError::NoSpace { needed_extents, free_extents, .. }) => {
                            prop_assert_eq!((needed_extents, free_extents), (extents, free));
                            prop_assert!(free < extents);
                        }
                        Err(e) => prop_assert!(false, "{}", e),
                    }
                }
                Op::Grow { which, more } if !live.is_empty() => {
                    let id = live[which % live.len()];
                    let before = pool.volume(id).unwrap().clone();
                    let free = model_free(&owner);
                    match pool.grow_volume(id, (before.extents() + more) * E) {
                        Ok(v) => {
                            prop_assert!(free >= more);
                            let old = extents_of(&before);
                            let new = extents_of(&v);
                            prop_assert_eq!(&new[..old.len()], &old[..], "existing extents never move");
                            for &p in &new[old.len()..] {
                                prop_assert!(p >= first && owner[p as usize].is_none(), "extent {} given out twice", p);
                                owner[p as usize] = Some(id);
                            }
                        }
                        Err(StorageError::NoSpace { .. }) => prop_assert!(free < more),
                        Err(e) => prop_assert!(false, "{}", e),
                    }
                }
                Op::Delete { which } if !live.is_empty() => {
                    let id = live.remove(which % live.len());
                    pool.delete_volume(id).unwrap();
                    owner.iter_mut().filter(|o| **o == Some(id)).for_each(|o| *o = None);
                }
                Op::Reopen => {
                    let volumes = pool.volumes().to_vec();
                    pool = Pool::open(pool.into_device()).unwrap();
                    prop_assert_eq!(pool.volumes(), volumes.as_slice());
                }
                Op::Grow { .. } | Op::Delete { .. } => {}
            }
            prop_assert_eq!(pool.info().free_extents, model_free(&owner));
            prop_assert_eq!(pool.volumes().len(), live.len());
            for v in pool.volumes() {
                let mut mine: Vec<u64> = extents_of(v);
                mine.sort_unstable();
                let modelled: Vec<u64> = (0..end).filter(|&p| owner[p as usize] == Some(v.id())).collect();
                prop_assert_eq!(mine, modelled);
            }
        }
    }
}
