//! Where relations live on disk. Database, schema and relation names are SQL names: anything
//! goes (`/`, `..`, quotes, unicode, case, any length), so each is encoded into one safe path
//! component that can never leave the warehouse root:
//!
//! - lower-case ASCII letters, digits, `_` and `-` stay as they are (`main`, `orders`), so
//!   warehouses written before stay readable;
//! - every other byte of the name's UTF-8 is `%XX` (an upper-case letter too, so `Orders` and
//!   `orders` differ on case-insensitive file systems; `.` too, so no component is `.` or `..`);
//! - a component longer than [`MAX_COMPONENT`] keeps a readable prefix and ends with `~` and the
//!   name's SHA-256; the full name is kept in a `_kiln_name` file inside the directory.
//!
//! The encoding is injective: different names never share a directory.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// File systems allow 255 bytes per component; stay well below.
pub const MAX_COMPONENT: usize = 180;

/// The file that holds the full name of a directory whose name was shortened.
pub const NAME_FILE: &str = "_kiln_name";

fn kept(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
}

/// The path component of `name`.
pub fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for &b in name.as_bytes() {
        if kept(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() {
        // The empty name: `%` alone cannot come from any other name.
        return "%".into();
    }
    if out.len() > MAX_COMPONENT {
        let hash = Sha256::digest(name.as_bytes());
        let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        let mut cut = MAX_COMPONENT - 1 - hex.len();
        // Never cut inside a `%XX`.
        while out.as_bytes()[..cut].iter().rev().take(2).any(|&b| b == b'%') {
            cut -= 1;
        }
        return format!("{}~{hex}", &out[..cut]);
    }
    out
}

/// The name a component encodes, or `None` for a shortened one (read [`NAME_FILE`]) or a
/// directory kiln did not name.
pub fn decode(component: &str) -> Option<String> {
    if component == "%" {
        return Some(String::new());
    }
    if component.contains('~') {
        return None;
    }
    let b = component.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                let byte = u8::from_str_radix(hex, 16).ok()?;
                // Only what `encode` writes: an escaped byte that would have been kept is not.
                if kept(byte) || hex.chars().any(|c| c.is_ascii_lowercase()) {
                    return None;
                }
                out.push(byte);
                i += 3;
            }
            c if kept(c) => {
                out.push(c);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// The name of directory `dir` (its component decoded, or its [`NAME_FILE`]).
pub fn name_of(dir: &Path) -> Option<String> {
    let component = dir.file_name()?.to_str()?;
    match decode(component) {
        Some(name) => Some(name),
        None if component.contains('~') => {
            let name = std::fs::read_to_string(dir.join(NAME_FILE)).ok()?;
            (encode(&name) == component).then_some(name)
        }
        None => None,
    }
}

/// `parent/<encoded name>`, creating it (and the name file of a shortened name) when `create`.
pub fn child(parent: &Path, name: &str, create: bool) -> std::io::Result<PathBuf> {
    let dir = parent.join(encode(name));
    if create && !dir.is_dir() {
        std::fs::create_dir_all(&dir)?;
        if decode(&encode(name)).is_none() {
            std::fs::write(dir.join(NAME_FILE), name)?;
        }
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names from a small generator: `/`, `..`, NUL, quotes, unicode, case, long runs.
    fn names() -> Vec<String> {
        let pieces = ["a", "Z", "/", "..", ".", "\0", "\"", "'", "é", "日本", " ", "%", "~", "-", "_", "9", "\\", "%41", "~x"];
        let mut out: Vec<String> = vec![String::new(), "main".into(), "orders".into(), "Orders".into(), "x".repeat(400), "日".repeat(200)];
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..3000 {
            let mut name = String::new();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            for k in 0..(seed % 12) {
                name.push_str(pieces[((seed >> (k * 5)) % pieces.len() as u64) as usize]);
            }
            out.push(name);
        }
        out
    }

    #[test]
    fn every_name_stays_one_safe_component_and_round_trips() {
        let root = tempfile::tempdir().unwrap();
        let mut seen = std::collections::HashMap::new();
        for name in names() {
            let component = encode(&name);
            assert!(!component.is_empty() && component != "." && component != "..", "{name:?} -> {component:?}");
            assert!(!component.contains(['/', '\\', '\0']) && component.len() <= MAX_COMPONENT, "{name:?} -> {component:?}");
            if let Some(other) = seen.insert(component.clone(), name.clone()) {
                assert_eq!(other, name, "two names share {component:?}");
            }
            let dir = child(root.path(), &name, true).unwrap();
            assert_eq!(dir.parent(), Some(root.path()), "{name:?} left the root");
            assert_eq!(name_of(&dir).as_deref(), Some(name.as_str()), "{name:?} does not round-trip");
        }
        assert_eq!(encode("main"), "main", "plain names keep their directories");
        assert_eq!(encode("Orders"), "%4Frders");
        assert_eq!(encode(".."), "%2E%2E");
    }

    #[test]
    fn directories_kiln_did_not_name_are_not_relations() {
        for foreign in ["Foo", "a.b", "%zz", "%61", "%2e", "x~y"] {
            assert_eq!(decode(foreign), None, "{foreign}");
        }
    }
}
