//! Sizes and durations as people type them on a command line (`4k`, `128KiB`,
//! `1G`, `10s`, `500ms`), and back.
//!
//! Invariants: size suffixes are binary (k = KiB = 1024, as fio reads them);
//! a parsed value never overflows `u64` (overflow is an error, not a wrap).

use std::time::Duration;

/// Why a size or duration did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// No number at the start.
    #[error("`{0}` does not start with a number")]
    NoNumber(String),
    /// A suffix this parser does not know.
    #[error("`{0}`: unknown unit suffix (use k/KiB, m/MiB, g/GiB, t/TiB for sizes; ms, s, m, h for durations)")]
    BadSuffix(String),
    /// The value does not fit.
    #[error("`{0}` is too large")]
    Overflow(String),
}

/// Parses a byte count: digits, then an optional binary suffix
/// (`k`, `K`, `KiB`, `KB`, `m`, ..., `t`); `b`/`B` or nothing means bytes.
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let text = text.trim();
    let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    if digits_end == 0 {
        return Err(UnitError::NoNumber(text.to_string()));
    }
    let number: u64 = text[..digits_end].parse().map_err(|_| UnitError::Overflow(text.to_string()))?;
    let shift = match text[digits_end..].to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(UnitError::BadSuffix(text.to_string())),
    };
    number.checked_mul(1u64 << shift).ok_or_else(|| UnitError::Overflow(text.to_string()))
}

/// Parses a duration: digits, then `ms`, `s` (the default), `m` or `h`.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let text = text.trim();
    let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    if digits_end == 0 {
        return Err(UnitError::NoNumber(text.to_string()));
    }
    let number: u64 = text[..digits_end].parse().map_err(|_| UnitError::Overflow(text.to_string()))?;
    let millis_per_unit: u64 = match &text[digits_end..] {
        "ms" => 1,
        "" | "s" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        _ => return Err(UnitError::BadSuffix(text.to_string())),
    };
    number.checked_mul(millis_per_unit).map(Duration::from_millis).ok_or_else(|| UnitError::Overflow(text.to_string()))
}

/// A byte count the way the summary prints it: the largest binary unit that
/// divides it exactly (`128KiB`, `1GiB`, `1000B`).
pub fn format_size(bytes: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("128KiB"), Ok(128 << 10));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("512b"), Ok(512));
        assert!(matches!(parse_size("k"), Err(UnitError::NoNumber(_))));
        assert!(matches!(parse_size("4q"), Err(UnitError::BadSuffix(_))));
        assert!(matches!(parse_size("99999999999T"), Err(UnitError::Overflow(_))));
        assert!(matches!(parse_size("-1"), Err(UnitError::NoNumber(_))));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("1d").is_err());
    }

    #[test]
    fn formatting_round_trips() {
        for bytes in [512u64, 4096, 128 << 10, 1 << 30, 3 << 20, 1000] {
            assert_eq!(parse_size(&format_size(bytes)), Ok(bytes));
        }
        assert_eq!(format_size(128 << 10), "128KiB");
    }
}
