//! Identifiers of NVMe and NVMe over Fabrics as newtypes with checked
//! constructors, and the NVMe Qualified Name.
//!
//! Invariants:
//! - An [`Nsid`] is always a valid namespace identifier, 1..=FFFF_FFFEh
//!   (NVMe Base 2.0, 3.2.1.2); the broadcast value FFFF_FFFFh and "no namespace"
//!   0h are not `Nsid`s: see [`NSID_BROADCAST`] and [`NamespaceSelector`].
//! - An [`Nqn`] always holds a name valid per NVMe Base 2.0, 4.5: UTF-8, at most
//!   223 bytes, in the date/domain form or the UUID form.

use std::fmt;
use std::str::FromStr;

/// Command identifier: chosen by the host, unique among its outstanding
/// commands on one submission queue (NVMe Base 2.0, 4.2 "CID").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cid(pub u16);

/// Queue identifier: 0 is the admin queue, 1.. are I/O queues (NVMe Base 2.0, 3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Qid(pub u16);

impl Qid {
    /// The admin queue.
    pub const ADMIN: Qid = Qid(0);

    /// Whether this is the admin queue.
    pub fn is_admin(self) -> bool {
        self.0 == 0
    }
}

/// The broadcast namespace identifier: "all namespaces" (NVMe Base 2.0, 3.2.1.2).
/// Not an [`Nsid`]: commands that accept it say so.
pub const NSID_BROADCAST: u32 = 0xFFFF_FFFF;

/// A valid namespace identifier, 1..=FFFF_FFFEh (NVMe Base 2.0, 3.2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nsid(u32);

impl Nsid {
    /// The smallest valid namespace identifier.
    pub const MIN: Nsid = Nsid(1);
    /// The largest valid namespace identifier.
    pub const MAX: Nsid = Nsid(0xFFFF_FFFE);
    /// The broadcast value, kept as a plain `u32` because it is not a namespace.
    pub const BROADCAST: u32 = NSID_BROADCAST;

    /// `Some` for 1..=FFFF_FFFEh, `None` for 0 and the broadcast value.
    pub const fn new(raw: u32) -> Option<Nsid> {
        if raw == 0 || raw == NSID_BROADCAST { None } else { Some(Nsid(raw)) }
    }

    /// The identifier as it goes on the wire.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Nsid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What a command's NSID field selects: nothing (0h), one namespace, or every
/// namespace (FFFF_FFFFh). Which of the three a command accepts is the
/// command's business.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NamespaceSelector {
    /// 0h: the command does not use a namespace.
    Unused,
    /// One namespace.
    One(Nsid),
    /// FFFF_FFFFh: every namespace.
    All,
}

impl NamespaceSelector {
    /// Reads the NSID field of a command.
    pub const fn from_raw(raw: u32) -> NamespaceSelector {
        match raw {
            0 => NamespaceSelector::Unused,
            NSID_BROADCAST => NamespaceSelector::All,
            n => NamespaceSelector::One(Nsid(n)),
        }
    }

    /// The NSID field value.
    pub const fn to_raw(self) -> u32 {
        match self {
            NamespaceSelector::Unused => 0,
            NamespaceSelector::One(n) => n.0,
            NamespaceSelector::All => NSID_BROADCAST,
        }
    }
}

/// Controller identifier within an NVM subsystem (NVMe Base 2.0, 3.1.2).
///
/// fabriq uses the dynamic controller model: the host asks for
/// [`CntlId::DYNAMIC`] in the Connect data and the subsystem allocates an id
/// in [`CntlId::MIN_DYNAMIC`]..=[`CntlId::MAX_DYNAMIC`]. [`CntlId::new`] accepts
/// only that range; [`CntlId::from_wire`] keeps any 16-bit value, for fields
/// that may hold the special values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CntlId(u16);

impl CntlId {
    /// FFFFh in the Connect data: "allocate me any controller" (dynamic model),
    /// also what a discovery log entry reports for a dynamic subsystem.
    pub const DYNAMIC: CntlId = CntlId(0xFFFF);
    /// FFFEh in the Connect data: any controller of the static model.
    pub const STATIC_ANY: CntlId = CntlId(0xFFFE);
    /// The smallest controller id a subsystem hands out (0 is not valid on fabrics).
    pub const MIN_DYNAMIC: CntlId = CntlId(1);
    /// The largest controller id a subsystem hands out; FFF0h..=FFFFh are reserved.
    pub const MAX_DYNAMIC: CntlId = CntlId(0xFFEF);

    /// `Some` for an id a controller can have, 1..=FFEFh.
    pub const fn new(raw: u16) -> Option<CntlId> {
        if raw >= Self::MIN_DYNAMIC.0 && raw <= Self::MAX_DYNAMIC.0 { Some(CntlId(raw)) } else { None }
    }

    /// Any value read from a wire field, special values included.
    pub const fn from_wire(raw: u16) -> CntlId {
        CntlId(raw)
    }

    /// The value as it goes on the wire.
    pub const fn get(self) -> u16 {
        self.0
    }

    /// Whether a controller can have this id (1..=FFEFh).
    pub const fn is_allocatable(self) -> bool {
        Self::new(self.0).is_some()
    }
}

impl fmt::Display for CntlId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#06x}", self.0)
    }
}

/// NVMe/TCP transfer tag: the controller's name for a data transfer it asked
/// for with an R2T (NVMe/TCP Transport 1.0, 3.6.2.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ttag(pub u16);

/// Logical block address within a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Lba(pub u64);

/// The well-known NQN of discovery subsystems (NVMe Base 2.0, 4.5).
pub const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";

/// The prefix of the UUID form of an NQN (NVMe Base 2.0, 4.5).
pub const NQN_UUID_PREFIX: &str = "nqn.2014-08.org.nvmexpress:uuid:";

/// The longest NQN, in bytes, not counting the terminating NUL (NVMe Base 2.0, 4.5).
pub const NQN_MAX_LEN: usize = 223;

/// The size of the NQN fields of Connect data, Identify Controller and the
/// discovery log: NUL-terminated and NUL-padded.
pub const NQN_FIELD_LEN: usize = 256;

/// Why a string is not an NQN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NqnError {
    #[error("an NQN is at most 223 bytes, this one has {0}")]
    TooLong(usize),
    #[error("an NQN is UTF-8 text")]
    NotUtf8,
    #[error("an NQN holds no NUL character")]
    Nul,
    #[error("an NQN starts with \"nqn.\"")]
    MissingPrefix,
    #[error("an NQN has a yyyy-mm date after \"nqn.\"")]
    BadDate,
    #[error("an NQN has a reverse domain name after its date")]
    BadDomain,
    #[error("the UUID form of an NQN ends with a UUID in 8-4-4-4-12 hex form")]
    BadUuid,
    #[error("a fixed NQN field is {0} bytes, at least 224 expected")]
    FieldTooShort(usize),
}

/// An NVMe Qualified Name (NVMe Base 2.0, 4.5), validated.
///
/// Two forms:
/// - `nqn.yyyy-mm.reverse.domain` optionally followed by `:` and anything
///   (the date is when the naming authority owned the domain);
/// - `nqn.2014-08.org.nvmexpress:uuid:` followed by a UUID.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nqn(String);

impl Nqn {
    /// Validates `s` as an NQN.
    pub fn parse(s: &str) -> Result<Nqn, NqnError> {
        validate(s)?;
        Ok(Nqn(s.to_owned()))
    }

    /// The discovery NQN.
    pub fn discovery() -> Nqn {
        Nqn(DISCOVERY_NQN.to_owned())
    }

    /// Reads a NUL-terminated, NUL-padded NQN field (Connect data SUBNQN and
    /// HOSTNQN, NVMe Base 2.0, 6.3 Figure 380). The name ends at the first NUL.
    pub fn from_fixed_field(field: &[u8]) -> Result<Nqn, NqnError> {
        if field.len() <= NQN_MAX_LEN {
            return Err(NqnError::FieldTooShort(field.len()));
        }
        let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
        let text = std::str::from_utf8(&field[..end]).map_err(|_| NqnError::NotUtf8)?;
        Nqn::parse(text)
    }

    /// Writes the name into a fixed field and NUL-fills the rest of it.
    ///
    /// # Panics
    /// When `field` has no room for the name and its terminating NUL: the
    /// specification's fields are 256 bytes and a name at most 223, so a
    /// shorter field is a bug in the caller.
    pub fn write_fixed_field(&self, field: &mut [u8]) {
        let name = self.0.as_bytes();
        assert!(field.len() > name.len(), "NQN field of {} bytes cannot hold a {}-byte name", field.len(), name.len());
        field[..name.len()].copy_from_slice(name);
        field[name.len()..].fill(0);
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the well-known discovery NQN.
    pub fn is_discovery(&self) -> bool {
        self.0 == DISCOVERY_NQN
    }

    /// The UUID of a UUID-form NQN.
    pub fn uuid(&self) -> Option<uuid::Uuid> {
        let rest = self.0.strip_prefix(NQN_UUID_PREFIX)?;
        uuid::Uuid::try_parse(rest).ok()
    }
}

impl fmt::Display for Nqn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Nqn {
    type Err = NqnError;
    fn from_str(s: &str) -> Result<Nqn, NqnError> {
        Nqn::parse(s)
    }
}

impl AsRef<str> for Nqn {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

fn validate(s: &str) -> Result<(), NqnError> {
    if s.len() > NQN_MAX_LEN {
        return Err(NqnError::TooLong(s.len()));
    }
    if s.contains('\0') {
        return Err(NqnError::Nul);
    }
    if let Some(uuid) = s.strip_prefix(NQN_UUID_PREFIX) {
        return validate_uuid(uuid);
    }
    let rest = s.strip_prefix("nqn.").ok_or(NqnError::MissingPrefix)?;
    let rest = validate_date(rest)?;
    let domain = rest.split_once(':').map_or(rest, |(domain, _)| domain);
    validate_domain(domain)
}

/// Checks `yyyy-mm.` and returns what follows the dot.
fn validate_date(s: &str) -> Result<&str, NqnError> {
    let b = s.as_bytes();
    if b.len() < 8 || b[4] != b'-' || b[7] != b'.' {
        return Err(NqnError::BadDate);
    }
    if !b[..4].iter().chain(&b[5..7]).all(u8::is_ascii_digit) {
        return Err(NqnError::BadDate);
    }
    let month = (b[5] - b'0') * 10 + (b[6] - b'0');
    if !(1..=12).contains(&month) {
        return Err(NqnError::BadDate);
    }
    // b[..8] is ASCII, so byte 8 is a character boundary.
    Ok(&s[8..])
}

/// A reverse domain name: dot-separated labels of letters, digits and
/// hyphens, 1..=63 bytes each, not starting or ending with a hyphen (RFC 1123).
fn validate_domain(domain: &str) -> Result<(), NqnError> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
    };
    if domain.split('.').all(label_ok) { Ok(()) } else { Err(NqnError::BadDomain) }
}

fn validate_uuid(s: &str) -> Result<(), NqnError> {
    // 8-4-4-4-12 hex digits: the only form the specification allows.
    let groups: Vec<&str> = s.split('-').collect();
    let lens_ok = groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12]);
    let hex_ok = groups.iter().all(|g| g.bytes().all(|c| c.is_ascii_hexdigit()));
    if lens_ok && hex_ok { Ok(()) } else { Err(NqnError::BadUuid) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn nsid_rejects_zero_and_broadcast() {
        assert_eq!(Nsid::new(0), None);
        assert_eq!(Nsid::new(NSID_BROADCAST), None);
        assert_eq!(Nsid::new(1).map(Nsid::get), Some(1));
        assert_eq!(Nsid::new(0xFFFF_FFFE), Some(Nsid::MAX));
        assert_eq!(Nsid::BROADCAST, 0xFFFF_FFFF);
    }

    #[test]
    fn namespace_selector_round_trips() {
        for raw in [0, 1, 7, 0xFFFF_FFFE, 0xFFFF_FFFF] {
            assert_eq!(NamespaceSelector::from_raw(raw).to_raw(), raw);
        }
        assert_eq!(NamespaceSelector::from_raw(0xFFFF_FFFF), NamespaceSelector::All);
    }

    #[test]
    fn cntlid_allocatable_range() {
        assert_eq!(CntlId::new(0), None);
        assert_eq!(CntlId::new(0xFFF0), None);
        assert_eq!(CntlId::new(0xFFFF), None);
        assert_eq!(CntlId::new(1), Some(CntlId::MIN_DYNAMIC));
        assert_eq!(CntlId::new(0xFFEF), Some(CntlId::MAX_DYNAMIC));
        assert!(!CntlId::DYNAMIC.is_allocatable());
        assert_eq!(CntlId::from_wire(0xFFFF), CntlId::DYNAMIC);
    }

    #[test]
    fn nqn_accepts_the_forms_of_the_specification() {
        for ok in [
            DISCOVERY_NQN,
            "nqn.2014-08.org.nvmexpress:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
            "nqn.2026-11.dev.fabriq:vol:3f1c0b6e-2a8d-4b8e-9c61-0a1b2c3d4e5f",
            "nqn.2016-06.io.spdk:cnode1",
            "nqn.1992-01.com.example",
        ] {
            let nqn = Nqn::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(nqn.as_str(), ok);
            assert_eq!(nqn.to_string(), ok);
        }
        assert!(Nqn::discovery().is_discovery());
    }

    #[test]
    fn nqn_rejects_malformed_names() {
        let cases = [
            ("iqn.2014-08.org.example", NqnError::MissingPrefix),
            ("nqn.14-08.org.example", NqnError::BadDate),
            ("nqn.2014-13.org.example", NqnError::BadDate),
            ("nqn.2014-00.org.example", NqnError::BadDate),
            ("nqn.2014-08.", NqnError::BadDomain),
            ("nqn.2014-08.org..example", NqnError::BadDomain),
            ("nqn.2014-08.-org.example", NqnError::BadDomain),
            ("nqn.2014-08.org_x:y", NqnError::BadDomain),
            ("nqn.2014-08.org.nvmexpress:uuid:not-a-uuid", NqnError::BadUuid),
            ("nqn.2014-08.org.ex\0", NqnError::Nul),
        ];
        for (bad, why) in cases {
            assert_eq!(Nqn::parse(bad), Err(why), "{bad}");
        }
        let long = format!("nqn.2014-08.org.example:{}", "x".repeat(200));
        assert_eq!(Nqn::parse(&long), Err(NqnError::TooLong(long.len())));
        let max = format!("nqn.2014-08.org.example:{}", "x".repeat(NQN_MAX_LEN - 24));
        assert_eq!(Nqn::parse(&max).map(|n| n.as_str().len()), Ok(NQN_MAX_LEN));
    }

    #[test]
    fn uuid_form_yields_its_uuid() {
        let id = "f81d4fae-7dec-11d0-a765-00a0c91e6bf6";
        let nqn = Nqn::parse(&format!("{NQN_UUID_PREFIX}{id}")).unwrap();
        assert_eq!(nqn.uuid().unwrap().to_string(), id);
        assert_eq!(Nqn::discovery().uuid(), None);
    }

    #[test]
    fn fixed_field_golden_bytes() {
        let mut field = [0xAAu8; NQN_FIELD_LEN];
        Nqn::discovery().write_fixed_field(&mut field);
        assert_eq!(&field[..36], DISCOVERY_NQN.as_bytes());
        assert!(field[36..].iter().all(|&b| b == 0));
        assert_eq!(Nqn::from_fixed_field(&field).unwrap(), Nqn::discovery());
    }

    #[test]
    fn fixed_field_errors() {
        assert_eq!(Nqn::from_fixed_field(&[0; 16]), Err(NqnError::FieldTooShort(16)));
        let mut field = [0u8; NQN_FIELD_LEN];
        field[..5].copy_from_slice(&[b'n', b'q', b'n', b'.', 0xFF]);
        assert_eq!(Nqn::from_fixed_field(&field), Err(NqnError::NotUtf8));
        let full = [b'a'; NQN_FIELD_LEN];
        assert_eq!(Nqn::from_fixed_field(&full), Err(NqnError::TooLong(NQN_FIELD_LEN)));
    }

    proptest! {
        #[test]
        fn fixed_field_round_trips(tail in "[a-zA-Z0-9:._-]{0,180}") {
            let nqn = Nqn::parse(&format!("nqn.2026-11.dev.fabriq:{tail}")).unwrap();
            let mut field = [0u8; NQN_FIELD_LEN];
            nqn.write_fixed_field(&mut field);
            prop_assert_eq!(Nqn::from_fixed_field(&field).unwrap(), nqn);
        }

        #[test]
        fn parse_never_panics(s in ".{0,300}") {
            let _ = Nqn::parse(&s);
        }
    }
}
