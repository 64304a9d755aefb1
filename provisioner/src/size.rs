//! Sizes as people write and read them: `"10GiB"` (powers of 1024), `"100GB"` (powers of
//! 1000), a bare number of bytes; a lone `k`, `M`, `G` or `T` is refused, because tools
//! disagree on whether it means 1000 or 1024 and a volume off by 7 % is the wrong volume.

/// Why a size could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("expected a whole number of bytes, optionally followed by a unit")]
    NoNumber,
    #[error("does not fit in 64 bits")]
    Overflow,
    #[error("unit {0:?} is ambiguous: write KiB, MiB, GiB, TiB (powers of 1024) or kB, MB, GB, TB (powers of 1000)")]
    Ambiguous(String),
    #[error("unknown unit {0:?}: expected B, kB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024)")]
    UnknownUnit(String),
}

const KIB: u64 = 1 << 10;

/// `"4096"`, `"1GiB"`, `"1 GiB"`, `"100GB"`; units are case-insensitive.
pub fn parse(text: &str) -> Result<u64, SizeError> {
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
pub fn human(bytes: u64) -> String {
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
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse("4096"), Ok(4096));
        assert_eq!(parse("1GiB"), Ok(1 << 30));
        assert_eq!(parse(" 2 mib "), Ok(2 << 20));
        assert_eq!(parse("100GB"), Ok(100_000_000_000));
        assert_eq!(parse("1G"), Err(SizeError::Ambiguous("G".into())));
        assert_eq!(parse("1 furlong"), Err(SizeError::UnknownUnit("furlong".into())));
        assert_eq!(parse("GiB"), Err(SizeError::NoNumber));
        assert_eq!(parse("99999999999PiB"), Err(SizeError::Overflow));
    }

    #[test]
    fn prints_for_people() {
        assert_eq!(human(1000), "1000 B");
        assert_eq!(human(1 << 30), "1 GiB");
        assert_eq!(human(3 << 29), "1.5 GiB");
        assert_eq!(human(0), "0 B");
    }
}
