//! A verifiable data pattern: every logical block says which LBA it belongs
//! to and which run wrote it, then carries bytes derived from both. A read
//! that returns another block, a stale block, a torn block or zeroes shows up
//! in [`check`] with the LBA and the byte offset where it first differs.
//!
//! ```text
//! block: 0..8 LBA (LE)   8..16 seed (LE)   16.. words of splitmix64(lba, seed, i)
//! ```
//!
//! Invariants: [`fill`] is a pure function of (block size, LBA, seed), so the
//! load generator's verify mode can recompute any block without storing it;
//! [`check`] accepts exactly what [`fill`] wrote with the same arguments.

/// Smallest block the pattern fits: the two header words.
pub const MIN_BLOCK_SIZE: usize = 16;

/// Where a buffer first differs from the pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("LBA {lba}: byte {offset} of the block is {found:#04x}, expected {expected:#04x}")]
pub struct Mismatch {
    /// The LBA of the block that differs.
    pub lba: u64,
    /// Byte offset within that block.
    pub offset: usize,
    /// What the pattern says.
    pub expected: u8,
    /// What the buffer holds.
    pub found: u8,
}

/// Fills `buf` (whole blocks of `block_size` bytes) with the pattern of the
/// blocks starting at `slba`, written by run `seed`.
pub fn fill(buf: &mut [u8], block_size: usize, slba: u64, seed: u64) {
    assert_blocks(buf.len(), block_size);
    for (index, block) in buf.chunks_exact_mut(block_size).enumerate() {
        let lba = slba + index as u64;
        for (word_index, word) in block.chunks_exact_mut(8).enumerate() {
            word.copy_from_slice(&word_at(lba, seed, word_index).to_le_bytes());
        }
    }
}

/// Checks that `buf` holds what [`fill`] writes for the same arguments.
pub fn check(buf: &[u8], block_size: usize, slba: u64, seed: u64) -> Result<(), Mismatch> {
    assert_blocks(buf.len(), block_size);
    for (index, block) in buf.chunks_exact(block_size).enumerate() {
        let lba = slba + index as u64;
        for (word_index, word) in block.chunks_exact(8).enumerate() {
            let expected = word_at(lba, seed, word_index).to_le_bytes();
            if let Some(byte) = (0..8).find(|&byte| word[byte] != expected[byte]) {
                return Err(Mismatch {
                    lba,
                    offset: word_index * 8 + byte,
                    expected: expected[byte],
                    found: word[byte],
                });
            }
        }
    }
    Ok(())
}

fn assert_blocks(len: usize, block_size: usize) {
    assert!(
        block_size >= MIN_BLOCK_SIZE && block_size.is_multiple_of(8),
        "block size {block_size} is not a multiple of 8 of at least {MIN_BLOCK_SIZE}"
    );
    assert!(len.is_multiple_of(block_size), "buffer of {len} bytes is not whole blocks of {block_size}");
}

fn word_at(lba: u64, seed: u64, word_index: usize) -> u64 {
    match word_index {
        0 => lba,
        1 => seed,
        _ => splitmix64(lba.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed.rotate_left(29) ^ word_index as u64),
    }
}

/// One step of splitmix64 (Steele, Lea and Flood, 2014): a cheap bijective
/// mixer, so neighbouring words and blocks never repeat.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_words_name_the_block() {
        let mut buf = vec![0u8; 1024];
        fill(&mut buf, 512, 0x1122_3344_5566, 42);
        assert_eq!(&buf[0..8], &0x1122_3344_5566u64.to_le_bytes());
        assert_eq!(&buf[8..16], &42u64.to_le_bytes());
        assert_eq!(&buf[512..520], &0x1122_3344_5567u64.to_le_bytes());
        assert_ne!(&buf[16..512], &buf[528..1024]);
    }

    #[test]
    fn zeroes_are_caught_at_the_first_byte() {
        let buf = vec![0u8; 4096];
        assert_eq!(check(&buf, 4096, 3, 9), Err(Mismatch { lba: 3, offset: 0, expected: 3, found: 0 }));
    }

    #[test]
    fn a_block_from_another_run_or_lba_is_caught() {
        let mut buf = vec![0u8; 2048];
        fill(&mut buf, 512, 10, 1);
        let mut other = vec![0u8; 512];
        fill(&mut other, 512, 12, 2);
        buf[1024..1536].copy_from_slice(&other);
        let mismatch = check(&buf, 512, 10, 1).unwrap_err();
        assert_eq!((mismatch.lba, mismatch.offset), (12, 8));
    }

    #[test]
    #[should_panic(expected = "not whole blocks")]
    fn partial_blocks_are_a_bug() {
        fill(&mut [0u8; 100], 512, 0, 0);
    }

    proptest! {
        #[test]
        fn check_accepts_fill_and_finds_any_flipped_bit(
            blocks in 1usize..6,
            slba in any::<u64>().prop_map(|l| l >> 8),
            seed in any::<u64>(),
            flip in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let block_size = 512;
            let mut buf = vec![0u8; blocks * block_size];
            fill(&mut buf, block_size, slba, seed);
            prop_assert_eq!(check(&buf, block_size, slba, seed), Ok(()));
            let at = flip.index(buf.len());
            buf[at] ^= 1 << bit;
            let mismatch = check(&buf, block_size, slba, seed).unwrap_err();
            prop_assert_eq!(mismatch.lba, slba + (at / block_size) as u64);
            prop_assert_eq!(mismatch.offset, at % block_size);
        }
    }
}
