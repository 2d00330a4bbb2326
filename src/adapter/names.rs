//! Identifier quoting and hashing, shared by the Jinja layer and the engines.

/// Quotes an identifier, doubling the quote character inside it (a backtick is escaped with
/// a backslash instead, as BigQuery wants).
pub fn quote_ident(s: &str, quote: char) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_quoted(&mut out, s, quote);
    out
}

/// Appends `s` quoted as [`quote_ident`] does.
pub fn push_quoted(out: &mut String, s: &str, quote: char) {
    out.push(quote);
    for c in s.chars() {
        if c == quote {
            out.push(if quote == '`' { '\\' } else { quote });
        }
        out.push(c);
    }
    out.push(quote);
}

/// Hex md5 (dbt's `local_md5`, SQL's `md5`, test-name shortening, project ids).
pub fn md5_hex(text: &str) -> String {
    use md5::{Digest, Md5};
    hex(&Md5::digest(text.as_bytes()))
}

/// Hex sha256 (dbt's file checksums).
pub fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    hex(&Sha256::digest(text.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}
