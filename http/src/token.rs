//! Token files: what a token must be, a new random one, and writing the file that holds it.
//! Each API keeps its own file format (one token, or `scope token` lines) and its errors.
//!
//! Invariants: a new token file is written to a temporary file with mode 0600, synced, renamed
//! over the path and its directory synced: it is either absent or whole, and only its owner
//! reads it.

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// A token shorter than this is refused: it could be guessed.
pub const TOKEN_MIN_CHARS: usize = 16;

/// Whether `token` is long enough and printable ASCII without spaces.
pub fn is_strong(token: &str) -> bool {
    token.len() >= TOKEN_MIN_CHARS && token.bytes().all(|b| b.is_ascii_graphic())
}

/// A new random token: 64 hexadecimal digits (256 bits, of which 244 random).
pub fn new_token() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

/// Writes `text` to `path` (creating its directory), readable by the owner only, crash-safely.
pub fn write_private(path: &Path, text: &str) -> io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir).and_then(|d| d.sync_all())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_tokens_are_strong_and_written_privately() {
        use std::os::unix::fs::PermissionsExt;
        let token = new_token();
        assert!(token.len() == 64 && is_strong(&token) && token != new_token());
        assert!(is_strong("0123456789abcdef") && !is_strong("0123456789abcde"));
        assert!(!is_strong("0123456789 abcdef") && !is_strong("0123456789abcdé"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("token");
        write_private(&path, "one\n").unwrap();
        write_private(&path, "two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(!path.with_extension("tmp").exists());
    }
}
