//! Python's `repr` of a string, for reject details that quote a value as the Python core
//! does (`f"{text[:40]!r}"`).
//!
//! ASCII is done here exactly. Which non-ASCII characters Python prints as they are and
//! which it escapes depends on Unicode tables (`str.isprintable`); for a string with any
//! non-ASCII character the Python bindings install a hook that asks Python itself. Without
//! the hook (the pure Rust tests) non-ASCII characters are kept as they are.

use std::sync::OnceLock;

pub static NON_ASCII_REPR: OnceLock<fn(&str) -> String> = OnceLock::new();

pub fn repr(s: &str) -> String {
    if !s.is_ascii() {
        if let Some(hook) = NON_ASCII_REPR.get() {
            return hook(s);
        }
    }
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// The first `n` characters (code points), as Python's `s[:n]`.
pub fn head(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_and_escapes_as_python_does() {
        // Expected values: repr() in CPython 3.11.
        assert_eq!(repr("abc"), "'abc'");
        assert_eq!(repr("a'b"), "\"a'b\"");
        assert_eq!(repr("a\"b"), "'a\"b'");
        assert_eq!(repr("a'\"b"), "'a\\'\"b'");
        assert_eq!(repr("x\u{1}\u{7f}\\\n"), "'x\\x01\\x7f\\\\\\n'");
        assert_eq!(head("héllo", 2), "hé");
    }
}
