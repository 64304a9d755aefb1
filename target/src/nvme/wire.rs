//! Byte-level helpers shared by every structure in [`crate::nvme`]: the one error
//! type of this layer, little-endian field access at explicit offsets, and the
//! padded ASCII string fields of the specification.
//!
//! Invariants:
//! - Every multi-byte field of NVMe is little endian (NVMe Base 2.0, 1.5 "Conventions");
//!   the `get_*`/`put_*` helpers are the only place that knows it.
//! - Decoders return [`WireError::Short`] when the buffer is too small (a peer may
//!   send a short buffer); encoders take a buffer the caller sized, and a short one
//!   is a bug in the caller, so they assert.

use super::status::Status;

/// What can be wrong with bytes handed to a decoder of this module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The buffer is shorter than the structure it should hold.
    #[error("buffer holds {got} bytes, the structure needs {need}")]
    Short { need: usize, got: usize },
    /// A field holds a value the specification reserves.
    #[error("field at byte {offset} holds the reserved value {value:#x}")]
    Reserved { offset: u16, value: u32 },
    /// A code (opcode, fabrics command type, ...) this crate does not know.
    #[error("unknown {what} {value:#04x}")]
    Unknown { what: &'static str, value: u8 },
    /// An ASCII field holds a byte outside printable ASCII, or a string does
    /// not fit its field.
    #[error("field at byte {offset} is not printable ASCII that fits {len} bytes")]
    Ascii { offset: u16, len: u16 },
    /// An NQN field does not hold a valid NVMe Qualified Name.
    #[error("NQN field at byte {offset}: {source}")]
    Nqn {
        offset: u16,
        #[source]
        source: super::ids::NqnError,
    },
}

impl WireError {
    /// The status a controller returns for a command whose parsing failed so
    /// (NVMe Base 2.0, 4.6.1.2.1 generic status values).
    pub fn status(&self) -> Status {
        match self {
            WireError::Short { .. } => Status::DATA_SGL_LENGTH_INVALID,
            WireError::Unknown { .. } => Status::INVALID_OPCODE,
            WireError::Reserved { .. } | WireError::Ascii { .. } | WireError::Nqn { .. } => Status::INVALID_FIELD,
        }
    }

    /// The byte offset of the offending field, where known: what an error log
    /// entry reports as the parameter error location.
    pub fn offset(&self) -> Option<u16> {
        match self {
            WireError::Reserved { offset, .. } | WireError::Ascii { offset, .. } | WireError::Nqn { offset, .. } => {
                Some(*offset)
            }
            WireError::Short { .. } | WireError::Unknown { .. } => None,
        }
    }
}

/// Fails with [`WireError::Short`] when `buf` is shorter than `need`.
pub fn check_len(buf: &[u8], need: usize) -> Result<(), WireError> {
    if buf.len() < need {
        return Err(WireError::Short { need, got: buf.len() });
    }
    Ok(())
}

/// Asserts that an output buffer holds `need` bytes: a shorter one is a caller bug.
pub(crate) fn assert_out_len(out: &[u8], need: usize, what: &str) {
    assert!(out.len() >= need, "{what}: output buffer holds {} bytes, {need} needed", out.len());
}

pub(crate) fn get_u16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

pub(crate) fn get_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4-byte slice"))
}

pub(crate) fn get_u64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8-byte slice"))
}

pub(crate) fn get_u128(b: &[u8], off: usize) -> u128 {
    u128::from_le_bytes(b[off..off + 16].try_into().expect("16-byte slice"))
}

pub(crate) fn get_array<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    b[off..off + N].try_into().expect("slice of the array's length")
}

pub(crate) fn put_u16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u128(b: &mut [u8], off: usize, v: u128) {
    b[off..off + 16].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_bytes(b: &mut [u8], off: usize, v: &[u8]) {
    b[off..off + v.len()].copy_from_slice(v);
}

/// An ASCII string left-justified and padded with spaces (20h) to `N` bytes, as
/// the specification's ASCII fields are (NVMe Base 2.0, 1.5 "ASCII string"):
/// serial number, model number, firmware revision, TRSVCID, TRADDR.
///
/// Fails when `s` is longer than `N` or holds a byte outside 20h..=7Eh; the
/// error's offset is 0, for the caller to rebase.
pub fn ascii_padded<const N: usize>(s: &str) -> Result<[u8; N], WireError> {
    let bad = WireError::Ascii { offset: 0, len: N as u16 };
    if s.len() > N || !s.bytes().all(|c| (0x20..=0x7e).contains(&c)) {
        return Err(bad);
    }
    let mut out = [b' '; N];
    out[..s.len()].copy_from_slice(s.as_bytes());
    Ok(out)
}

/// The text of a padded ASCII field: bytes up to the first NUL, trailing
/// spaces removed. Fields from peers may pad with NULs or spaces; both read
/// the same. Fails on bytes outside printable ASCII.
pub fn ascii_trimmed(field: &[u8]) -> Result<&str, WireError> {
    let bad = WireError::Ascii { offset: 0, len: field.len() as u16 };
    let end = field.iter().position(|&c| c == 0).unwrap_or(field.len());
    let text = &field[..end];
    if !text.iter().all(|c| (0x20..=0x7e).contains(c)) {
        return Err(bad);
    }
    let text = std::str::from_utf8(text).map_err(|_| bad)?;
    Ok(text.trim_end_matches(' '))
}

/// Moves the offset of an [`WireError::Ascii`] or [`WireError::Nqn`] error to
/// where the field sits in its enclosing structure.
pub(crate) fn at_offset(e: WireError, offset: usize) -> WireError {
    let offset = offset as u16;
    match e {
        WireError::Ascii { len, .. } => WireError::Ascii { offset, len },
        WireError::Nqn { source, .. } => WireError::Nqn { offset, source },
        other => other,
    }
}

/// Defines a `#[repr(u8)]` enum of specification codes with `TryFrom<u8>`
/// (unknown codes fail with [`WireError::Unknown`] carrying the byte) and
/// `name()` giving the specification's name.
macro_rules! u8_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident ($what:literal) {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant = $value, )+
        }

        impl TryFrom<u8> for $name {
            type Error = $crate::nvme::wire::WireError;
            fn try_from(value: u8) -> Result<Self, Self::Error> {
                match value {
                    $( $value => Ok($name::$variant), )+
                    _ => Err($crate::nvme::wire::WireError::Unknown { what: $what, value }),
                }
            }
        }

        impl $name {
            /// Every code of this enum, in the specification's order.
            pub const ALL: &'static [$name] = &[ $( $name::$variant, )+ ];

            /// The specification's name of this code.
            pub fn name(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }
        }

        impl From<$name> for u8 {
            fn from(code: $name) -> u8 {
                code as u8
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{} ({:#04x})", self.name(), *self as u8)
            }
        }
    };
}
pub(crate) use u8_enum;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn le_helpers_put_the_low_byte_first() {
        let mut b = [0u8; 16];
        put_u16(&mut b, 0, 0x0102);
        put_u32(&mut b, 2, 0x0304_0506);
        put_u64(&mut b, 6, 0x0708_090a_0b0c_0d0e);
        assert_eq!(&b[..14], &[2, 1, 6, 5, 4, 3, 0x0e, 0x0d, 0x0c, 0x0b, 0x0a, 9, 8, 7]);
        assert_eq!(get_u16(&b, 0), 0x0102);
        assert_eq!(get_u32(&b, 2), 0x0304_0506);
        assert_eq!(get_u64(&b, 6), 0x0708_090a_0b0c_0d0e);
    }

    #[test]
    fn ascii_fields_pad_with_spaces_and_trim_both_paddings() {
        assert_eq!(&ascii_padded::<8>("1.0").unwrap(), b"1.0     ");
        assert_eq!(ascii_trimmed(b"1.0     ").unwrap(), "1.0");
        assert_eq!(ascii_trimmed(b"4420\0\0\0\0").unwrap(), "4420");
        assert!(ascii_padded::<2>("abc").is_err());
        assert!(ascii_padded::<8>("é").is_err());
        assert!(ascii_trimmed(b"a\x01b").is_err());
    }

    #[test]
    fn check_len_reports_what_was_needed() {
        assert_eq!(check_len(&[0; 3], 4), Err(WireError::Short { need: 4, got: 3 }));
        assert_eq!(check_len(&[0; 4], 4), Ok(()));
    }
}
