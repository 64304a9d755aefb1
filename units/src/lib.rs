//! Byte sizes as people write and read them, the same in every fabriq program that takes
//! one from a person: the target's and the provisioner's configuration files and `fabriqctl`.
//!
//! - [`parse_size`]: `"4096"`, `"4096B"`, `"100GB"` (powers of 1000), `"1GiB"` (powers of
//!   1024), `"1 GiB"`; units are case-insensitive; only whole numbers.
//! - [`human_size`]: the other way, in powers of 1024.
//!
//! A lone `k`, `M`, `G`, `T` or `P` is refused: tools disagree on whether it means 1000 or
//! 1024, and a size off by 7 % is a volume or a namespace of the wrong size. (`fabriq-bench`
//! takes fio's sizes instead, where `k` is 1024: its users come from fio.)

/// Why a size could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("expected a whole number of bytes, optionally followed by a unit")]
    NoNumber,
    #[error("does not fit in 64 bits")]
    Overflow,
    #[error(
        "unit \"{0}\" is ambiguous: write \"KiB\", \"MiB\", ... (powers of 1024) or \"kB\", \"MB\", ... (powers of 1000)"
    )]
    Ambiguous(String),
    #[error(
        "unknown unit \"{0}\": expected B, kB, MB, GB, TB, PB (powers of 1000) or KiB, MiB, GiB, TiB, PiB (powers of 1024)"
    )]
    UnknownUnit(String),
}

const KIB: u64 = 1 << 10;

/// Reads a size: digits, optional spaces, an optional unit.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let text = text.trim();
    let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(SizeError::NoNumber);
    }
    let number: u64 = digits.parse().map_err(|_| SizeError::Overflow)?;
    let unit = unit.trim_start();
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1000u64.pow(2),
        "gb" => 1000u64.pow(3),
        "tb" => 1000u64.pow(4),
        "pb" => 1000u64.pow(5),
        "kib" => KIB,
        "mib" => KIB.pow(2),
        "gib" => KIB.pow(3),
        "tib" => KIB.pow(4),
        "pib" => KIB.pow(5),
        "k" | "m" | "g" | "t" | "p" => return Err(SizeError::Ambiguous(unit.to_owned())),
        _ => return Err(SizeError::UnknownUnit(unit.to_owned())),
    };
    number.checked_mul(multiplier).ok_or(SizeError::Overflow)
}

/// `1073741824` -> `"1 GiB"`, `1610612736` -> `"1.5 GiB"`, `1000` -> `"1000 B"`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn sizes_parse() {
        let cases: [(&str, u64); 16] = [
            ("4096", 4096),
            ("4096B", 4096),
            ("4096 b", 4096),
            ("4kB", 4000),
            ("4KB", 4000),
            ("4KiB", 4096),
            ("512MiB", 512 << 20),
            ("1GiB", 1 << 30),
            ("1 gib", 1 << 30),
            (" 2 mib ", 2 << 20),
            ("100GB", 100_000_000_000),
            ("2TB", 2_000_000_000_000),
            ("2TiB", 2 << 40),
            ("3PB", 3_000_000_000_000_000),
            ("3PiB", 3 << 50),
            (" 7 ", 7),
        ];
        for (text, bytes) in cases {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
    }

    #[test]
    fn bad_sizes_say_why() {
        assert_eq!(parse_size("16EiB"), Err(SizeError::UnknownUnit("EiB".into())));
        assert_eq!(parse_size("1 furlong"), Err(SizeError::UnknownUnit("furlong".into())));
        assert_eq!(parse_size("1.5GiB"), Err(SizeError::UnknownUnit(".5GiB".into())));
        assert_eq!(parse_size("4k"), Err(SizeError::Ambiguous("k".into())));
        assert_eq!(parse_size("1G"), Err(SizeError::Ambiguous("G".into())));
        assert_eq!(parse_size("2p"), Err(SizeError::Ambiguous("p".into())));
        assert_eq!(parse_size("20000000TiB"), Err(SizeError::Overflow));
        assert_eq!(parse_size("99999999999PiB"), Err(SizeError::Overflow));
        assert_eq!(parse_size("99999999999999999999"), Err(SizeError::Overflow));
        assert_eq!(parse_size(""), Err(SizeError::NoNumber));
        assert_eq!(parse_size("GiB"), Err(SizeError::NoNumber));
        assert_eq!(parse_size("-3"), Err(SizeError::NoNumber));
        assert_eq!(
            SizeError::Ambiguous("k".into()).to_string(),
            "unit \"k\" is ambiguous: write \"KiB\", \"MiB\", ... (powers of 1024) or \"kB\", \"MB\", ... (powers of 1000)"
        );
    }

    #[test]
    fn sizes_print_for_people() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1000), "1000 B");
        assert_eq!(human_size(1 << 30), "1 GiB");
        assert_eq!(human_size(3 << 29), "1.5 GiB");
        assert_eq!(human_size(u64::MAX), "16384 PiB");
    }

    proptest! {
        #[test]
        fn sizes_with_units_parse_to_their_product(number in 0u64..1 << 20, unit in 0usize..11, space in any::<bool>()) {
            let units: [(&str, u64); 11] = [
                ("", 1), ("B", 1), ("kB", 1000), ("MB", 1000 * 1000), ("GB", 1000 * 1000 * 1000),
                ("TB", 1000u64.pow(4)), ("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("TiB", 1 << 40),
                ("PiB", 1 << 50),
            ];
            let (name, multiplier) = units[unit];
            let text = format!("{number}{}{name}", if space { " " } else { "" });
            prop_assert_eq!(parse_size(&text), number.checked_mul(multiplier).ok_or(SizeError::Overflow));
        }

        #[test]
        fn whole_units_print_back_as_they_parse(number in 1u64..1024, unit in 0usize..5) {
            let names = ["KiB", "MiB", "GiB", "TiB", "PiB"];
            let bytes = parse_size(&format!("{number}{}", names[unit])).unwrap();
            prop_assert_eq!(human_size(bytes), format!("{number} {}", names[unit]));
        }
    }
}
