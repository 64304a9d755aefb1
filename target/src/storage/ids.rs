//! Identifiers and names of pools and volumes: newtypes with checked constructors.
//!
//! Invariants: a [`PoolId`] or [`VolumeId`] is never the nil UUID (an all-zero field on disk
//! means "nothing here", never an identity). A [`Name`] is 1..=64 bytes of ASCII letters,
//! digits, `-`, `_` and `.`, starting with a letter or a digit: safe in a URL path, a log line
//! and a file name, and its on-disk form (a length byte and zero-padded bytes) round-trips.

use std::fmt;

use uuid::Uuid;

/// A pool's identity, chosen at creation and written in its label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolId(Uuid);

impl PoolId {
    /// `None` for the nil UUID.
    pub fn new(uuid: Uuid) -> Option<PoolId> {
        (!uuid.is_nil()).then_some(PoolId(uuid))
    }

    pub fn get(self) -> Uuid {
        self.0
    }
}

impl fmt::Display for PoolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// A volume's identity, unique in its pool; the NVMe subsystem NQN is derived from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VolumeId(Uuid);

impl VolumeId {
    /// `None` for the nil UUID.
    pub fn new(uuid: Uuid) -> Option<VolumeId> {
        (!uuid.is_nil()).then_some(VolumeId(uuid))
    }

    /// Parses the hyphenated (or any form the `uuid` crate reads) text of a volume id.
    pub fn parse(text: &str) -> Option<VolumeId> {
        Uuid::parse_str(text).ok().and_then(VolumeId::new)
    }

    pub fn get(self) -> Uuid {
        self.0
    }
}

impl fmt::Display for VolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// The name of a pool or a volume (volume names are unique in their pool).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);

impl Name {
    /// The longest name, in bytes (the on-disk field's size).
    pub const MAX_BYTES: usize = 64;

    pub fn new(raw: &str) -> Result<Name, NameProblem> {
        let mut chars = raw.chars();
        let first = chars.next().ok_or(NameProblem::Empty)?;
        if raw.len() > Name::MAX_BYTES {
            return Err(NameProblem::TooLong(raw.len()));
        }
        if !first.is_ascii_alphanumeric() {
            return Err(NameProblem::BadFirst(first));
        }
        if let Some(bad) = chars.find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
            return Err(NameProblem::BadChar(bad));
        }
        Ok(Name(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameProblem {
    #[error("a name cannot be empty")]
    Empty,
    #[error("a name is at most 64 bytes, this one has {0}")]
    TooLong(usize),
    #[error("a name starts with an ASCII letter or digit, not {0:?}")]
    BadFirst(char),
    #[error("a name holds only ASCII letters, digits, '-', '_' and '.', not {0:?}")]
    BadChar(char),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert_eq!(Name::new("pvc-0b6e.data_1").unwrap().as_str(), "pvc-0b6e.data_1");
        assert_eq!(Name::new("a").unwrap().to_string(), "a");
        assert_eq!(Name::new(&"x".repeat(64)).unwrap().as_str().len(), 64);
        assert_eq!(Name::new(""), Err(NameProblem::Empty));
        assert_eq!(Name::new(&"x".repeat(65)), Err(NameProblem::TooLong(65)));
        assert_eq!(Name::new("-x"), Err(NameProblem::BadFirst('-')));
        assert_eq!(Name::new(".hidden"), Err(NameProblem::BadFirst('.')));
        assert_eq!(Name::new("a b"), Err(NameProblem::BadChar(' ')));
        assert_eq!(Name::new("a/b"), Err(NameProblem::BadChar('/')));
        assert_eq!(Name::new("é"), Err(NameProblem::BadFirst('é')));
    }

    #[test]
    fn nil_is_no_identity() {
        assert!(PoolId::new(Uuid::nil()).is_none());
        assert!(VolumeId::new(Uuid::nil()).is_none());
        assert!(VolumeId::parse("00000000-0000-0000-0000-000000000000").is_none());
        let id = VolumeId::parse("67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap();
        assert_eq!(id.to_string(), "67e55044-10b1-426f-9247-bb680e5fe0c8");
        assert!(VolumeId::parse("not-a-uuid").is_none());
    }
}
