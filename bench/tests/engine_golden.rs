//! The engine's CapsuleCmd PDUs, byte for byte against the host library's
//! encoding (itself pinned by golden bytes in host_golden.rs): templates
//! built once per slot and patched per command must equal what the host
//! library builds from scratch, for every framing.

use fabriq_bench::engine::tcp::{capsule_template, patch_slba};
use fabriq_bench::host::{Command, Framing};
use fabriq_bench::pattern;
use fabriq_bench::stats::Dir;
use fabriq_target::tcp::digest::{self, DataDigest};
use fabriq_target::tcp::pdu::Digests;

fn framings() -> Vec<Framing> {
    let mut out = Vec::new();
    for (header, data) in [(false, false), (true, false), (false, true), (true, true)] {
        for cpda_alignment in [4, 32, 128] {
            out.push(Framing { digests: Digests { header, data }, cpda_alignment });
        }
    }
    out
}

#[test]
fn read_capsules_match_the_host_library() {
    for framing in framings() {
        for (cid, slba, nlb, lba) in [(0u16, 0u64, 8u32, 512u32), (31, 0x1234_5678_9abc, 1, 4096), (127, 7, 256, 512)] {
            let bs = nlb * lba;
            let (mut template, len) = capsule_template(Dir::Read, cid, 1, nlb, bs, false, framing);
            patch_slba(&mut template, slba, framing.digests.header);
            let expected = Command::read(1, slba, nlb, bs as usize).to_capsule(cid, framing, 8192);
            assert_eq!(&template[..len], &expected.bytes[..], "{framing:?} cid {cid}");
        }
    }
}

#[test]
fn in_capsule_writes_match_the_host_library() {
    for framing in framings() {
        let (cid, slba, nlb, lba) = (5u16, 4242u64, 8u32, 512u32);
        let bs = nlb * lba;
        let mut data = vec![0u8; bs as usize];
        pattern::fill(&mut data, lba as usize, slba, 3);
        let (mut template, len) = capsule_template(Dir::Write, cid, 1, nlb, bs, true, framing);
        // A template patched for another LBA first: patching must overwrite.
        patch_slba(&mut template, 99, framing.digests.header);
        patch_slba(&mut template, slba, framing.digests.header);
        let mut pdu = template[..len].to_vec();
        pdu.extend_from_slice(&data);
        if framing.digests.data {
            let mut d = DataDigest::new();
            d.update(&data);
            pdu.extend_from_slice(&digest::to_wire(d.finish()));
        }
        let expected = Command::write(1, slba, nlb, data, false).to_capsule(cid, framing, bs);
        assert!(expected.in_capsule);
        assert_eq!(pdu, expected.bytes, "{framing:?}");
    }
}

#[test]
fn r2t_writes_match_the_host_library() {
    for framing in framings() {
        let (cid, slba, nlb, lba) = (9u16, 1u64 << 33, 256u32, 512u32);
        let bs = nlb * lba;
        let (mut template, len) = capsule_template(Dir::Write, cid, 7, nlb, bs, false, framing);
        patch_slba(&mut template, slba, framing.digests.header);
        let expected = Command::write(7, slba, nlb, vec![0; bs as usize], false).to_capsule(cid, framing, 8192);
        assert!(!expected.in_capsule);
        assert_eq!(&template[..len], &expected.bytes[..], "{framing:?}");
    }
}
