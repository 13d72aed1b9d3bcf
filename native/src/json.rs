//! JSON in and out, as orjson reads and writes it.
//!
//! The parser accepts exactly what `orjson.loads` accepts (RFC 8259, UTF-8 input, no BOM,
//! nesting up to 1024, integers in the signed or unsigned 64-bit range else a float, a
//! repeated key keeps its first position and its last value, as a Python dict does).
//! The writer writes what `orjson.dumps` writes: no spaces, only the escapes JSON needs,
//! floats in orjson's shortest form.

use indexmap::IndexMap;
use std::borrow::Cow;
use std::collections::HashMap;

/// An insertion-ordered map (a Python dict's order) with a fast hash seeded per process:
/// the keys are ids from the input, so the seed matters.
pub type Map<K, V> = IndexMap<K, V, foldhash::fast::RandomState>;

/// A parsed JSON value; strings without escapes borrow from the input.
#[derive(Clone, Debug, PartialEq)]
pub enum Value<'a> {
    Null,
    Bool(bool),
    /// An integer literal within i64 or u64 range.
    Int(i128),
    Float(f64),
    Str(Cow<'a, str>),
    Array(Vec<Value<'a>>),
    Object(Object<'a>),
}

/// Objects this size or smaller are searched key by key; a larger one gets a hash index
/// (a record has about ten keys; a hostile one may have a hundred thousand).
const LINEAR: usize = 16;

/// A JSON object as a Python dict holds it: keys in first-insertion order, a repeated key
/// keeping its first position and taking the last value.
#[derive(Clone, Debug, Default)]
pub struct Object<'a> {
    entries: Vec<(Cow<'a, str>, Value<'a>)>,
    /// Boxed: most objects have none, and a smaller `Value` moves faster (80 bytes to 48).
    #[allow(clippy::box_collection)]
    index: Option<Box<HashMap<String, usize, foldhash::fast::RandomState>>>,
    /// One bit per key's `key_bit`: a key whose bit is clear is not there (the common
    /// insert skips the search).
    bits: u64,
}

/// A bit of a key's length and end bytes, for `Object::bits`.
#[inline]
fn key_bit(k: &str) -> u64 {
    let b = k.as_bytes();
    let (first, last) = match (b.first(), b.last()) {
        (Some(f), Some(l)) => (*f as usize, *l as usize),
        _ => (0, 0),
    };
    1 << ((b.len() * 7 + first * 3 + last) & 63)
}

impl PartialEq for Object<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl<'a> Object<'a> {
    /// Insert; false when the key was already there (its value is replaced).
    pub fn insert(&mut self, k: Cow<'a, str>, v: Value<'a>) -> bool {
        if let Some(ix) = &mut self.index {
            if let Some(&i) = ix.get(k.as_ref()) {
                self.entries[i].1 = v;
                return false;
            }
            ix.insert(k.to_string(), self.entries.len());
            self.entries.push((k, v));
            return true;
        }
        let bit = key_bit(&k);
        if self.bits & bit != 0 {
            if let Some(e) = self.entries.iter_mut().find(|e| e.0 == k) {
                e.1 = v;
                return false;
            }
        }
        self.bits |= bit;
        self.entries.push((k, v));
        if self.entries.len() > LINEAR {
            let mut ix =
                HashMap::with_capacity_and_hasher(self.entries.len() * 2, Default::default());
            for (i, (key, _)) in self.entries.iter().enumerate() {
                ix.insert(key.to_string(), i);
            }
            self.index = Some(Box::new(ix));
        }
        true
    }

    /// Entries known to have distinct keys (taken from another object).
    pub fn from_distinct(entries: Vec<(Cow<'a, str>, Value<'a>)>) -> Self {
        let bits = entries.iter().fold(0, |b, (k, _)| b | key_bit(k));
        let mut o = Object {
            entries,
            index: None,
            bits,
        };
        if o.entries.len() > LINEAR {
            let mut ix = HashMap::with_capacity_and_hasher(o.entries.len() * 2, Default::default());
            for (i, (key, _)) in o.entries.iter().enumerate() {
                ix.insert(key.to_string(), i);
            }
            o.index = Some(Box::new(ix));
        }
        o
    }

    pub fn get(&self, k: &str) -> Option<&Value<'a>> {
        match &self.index {
            Some(ix) => ix.get(k).map(|&i| &self.entries[i].1),
            None => self.entries.iter().find(|e| e.0 == k).map(|e| &e.1),
        }
    }

    pub fn contains_key(&self, k: &str) -> bool {
        self.get(k).is_some()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value<'a>)> {
        self.entries.iter().map(|(k, v)| (k.as_ref(), v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_ref())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn into_entries(self) -> Vec<(Cow<'a, str>, Value<'a>)> {
        self.entries
    }

    pub fn into_owned(self) -> Object<'static> {
        Object {
            entries: self
                .entries
                .into_iter()
                .map(|(k, v)| (Cow::Owned(k.into_owned()), v.into_owned()))
                .collect(),
            index: self.index,
            bits: self.bits,
        }
    }
}

impl Value<'_> {
    /// The value of a key, with JSON null read as absent (Python's `dict.get` on null).
    pub fn get<'o, 'v>(obj: &'o Object<'v>, key: &str) -> Option<&'o Value<'v>> {
        match obj.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    pub fn into_owned(self) -> Value<'static> {
        match self {
            Value::Null => Value::Null,
            Value::Bool(b) => Value::Bool(b),
            Value::Int(i) => Value::Int(i),
            Value::Float(f) => Value::Float(f),
            Value::Str(s) => Value::Str(Cow::Owned(s.into_owned())),
            Value::Array(items) => Value::Array(items.into_iter().map(Value::into_owned).collect()),
            Value::Object(o) => Value::Object(o.into_owned()),
        }
    }
}

const MAX_DEPTH: usize = 1024;

pub struct Parser<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
    depth: usize,
    /// The first key that appears twice in one object, objects taken in the order they
    /// end (as Python's `json.loads(object_pairs_hook=...)` meets them).
    repeated: Option<String>,
}

/// Parse one JSON document. The error text is this parser's own; callers that need
/// orjson's exact message ask orjson (the reject detail quotes it).
pub fn parse(b: &[u8]) -> Result<Value<'_>, String> {
    parse_noting_repeats(b).map(|(v, _)| v)
}

/// `parse`, and the first repeated key (see `Parser::repeated`).
pub fn parse_noting_repeats(b: &[u8]) -> Result<(Value<'_>, Option<String>), String> {
    let Ok(s) = std::str::from_utf8(b) else {
        return Err("str is not valid UTF-8".into());
    };
    let mut p = Parser {
        s,
        b,
        i: 0,
        depth: 0,
        repeated: None,
    };
    p.ws();
    if p.i >= b.len() {
        return Err("empty document".into());
    }
    let v = p.value()?;
    p.ws();
    if p.i != b.len() {
        return Err("unexpected content after document".into());
    }
    Ok((v, p.repeated))
}

impl<'a> Parser<'a> {
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn lit(&mut self, word: &[u8], v: Value<'a>) -> Result<Value<'a>, String> {
        if self.b.len() >= self.i + word.len() && &self.b[self.i..self.i + word.len()] == word {
            self.i += word.len();
            Ok(v)
        } else {
            Err("invalid literal".into())
        }
    }

    fn value(&mut self) -> Result<Value<'a>, String> {
        match self.peek() {
            None => Err("unexpected end of data".into()),
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'"') => Ok(Value::Str(self.string()?)),
            Some(b't') => self.lit(b"true", Value::Bool(true)),
            Some(b'f') => self.lit(b"false", Value::Bool(false)),
            Some(b'n') => self.lit(b"null", Value::Null),
            Some(c) if c == b'-' || c.is_ascii_digit() => self.number(),
            Some(_) => Err("unexpected character".into()),
        }
    }

    fn enter(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err("array and object recursion depth exceeded".into());
        }
        Ok(())
    }

    fn object(&mut self) -> Result<Value<'a>, String> {
        self.enter()?;
        self.i += 1;
        let mut map = Object::default();
        let mut first_repeat: Option<String> = None;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            self.depth -= 1;
            return Ok(Value::Object(map));
        }
        // A record has about eight keys: one allocation for most objects.
        map.entries.reserve(8);
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return Err("expected a key".into());
            }
            let k = self.string()?;
            self.ws();
            if self.peek() != Some(b':') {
                return Err("expected ':'".into());
            }
            self.i += 1;
            self.ws();
            let v = self.value()?;
            let noted = if first_repeat.is_none() {
                Some(k.clone())
            } else {
                None
            };
            if !map.insert(k, v) && first_repeat.is_none() {
                first_repeat = noted.map(Cow::into_owned);
            }
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    break;
                }
                _ => return Err("expected ',' or '}'".into()),
            }
        }
        self.depth -= 1;
        if self.repeated.is_none() {
            self.repeated = first_repeat;
        }
        Ok(Value::Object(map))
    }

    fn array(&mut self) -> Result<Value<'a>, String> {
        self.enter()?;
        self.i += 1;
        let mut items = Vec::new();
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            self.depth -= 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.ws();
            items.push(self.value()?);
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    break;
                }
                _ => return Err("expected ',' or ']'".into()),
            }
        }
        self.depth -= 1;
        Ok(Value::Array(items))
    }

    fn hex4(&mut self) -> Result<u32, String> {
        if self.i + 4 > self.b.len() {
            return Err("unexpected end of data".into());
        }
        let mut v = 0u32;
        for k in 0..4 {
            let d = (self.b[self.i + k] as char)
                .to_digit(16)
                .ok_or("invalid escape")?;
            v = v * 16 + d;
        }
        self.i += 4;
        Ok(v)
    }

    fn string(&mut self) -> Result<Cow<'a, str>, String> {
        self.i += 1; // the opening quote
        let start = self.i;
        // Fast path: no escapes, borrowed. The input is valid UTF-8 and quotes and
        // backslashes are ASCII, so these are character boundaries.
        while self.i + 8 <= self.b.len() {
            let w = u64::from_le_bytes(self.b[self.i..self.i + 8].try_into().expect("8 bytes"));
            let bits = escape_bits(w);
            if bits != 0 {
                // Straight to the first quote, backslash or control byte.
                self.i += (bits.trailing_zeros() / 8) as usize;
                break;
            }
            self.i += 8;
        }
        while self.i < self.b.len() {
            let c = self.b[self.i];
            if c == b'"' {
                let s = &self.s[start..self.i];
                self.i += 1;
                return Ok(Cow::Borrowed(s));
            }
            if c == b'\\' {
                break;
            }
            if c < 0x20 {
                return Err("unexpected control character in string".into());
            }
            self.i += 1;
        }
        let mut out = String::from(&self.s[start..self.i]);
        let mut run = self.i;
        loop {
            let Some(c) = self.peek() else {
                return Err("unexpected end of data".into());
            };
            if c == b'"' {
                out.push_str(&self.s[run..self.i]);
                self.i += 1;
                break;
            }
            if c < 0x20 {
                return Err("unexpected control character in string".into());
            }
            if c != b'\\' {
                self.i += 1;
                continue;
            }
            out.push_str(&self.s[run..self.i]);
            self.i += 1;
            let Some(e) = self.peek() else {
                return Err("unexpected end of data".into());
            };
            self.i += 1;
            match e {
                b'"' => out.push('"'),
                b'\\' => out.push('\\'),
                b'/' => out.push('/'),
                b'b' => out.push('\u{8}'),
                b'f' => out.push('\u{c}'),
                b'n' => out.push('\n'),
                b'r' => out.push('\r'),
                b't' => out.push('\t'),
                b'u' => {
                    let u = self.hex4()?;
                    let cp = if (0xD800..0xDC00).contains(&u) {
                        if self.b.get(self.i) != Some(&b'\\')
                            || self.b.get(self.i + 1) != Some(&b'u')
                        {
                            return Err("no low surrogate in string".into());
                        }
                        self.i += 2;
                        let lo = self.hex4()?;
                        if !(0xDC00..0xE000).contains(&lo) {
                            return Err("invalid low surrogate in string".into());
                        }
                        0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00)
                    } else if (0xDC00..0xE000).contains(&u) {
                        return Err("invalid high surrogate in string".into());
                    } else {
                        u
                    };
                    out.push(char::from_u32(cp).ok_or("invalid escape")?);
                }
                _ => return Err("invalid escaped character in string".into()),
            }
            run = self.i;
        }
        Ok(Cow::Owned(out))
    }

    fn number(&mut self) -> Result<Value<'a>, String> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.i += 1;
                if matches!(self.peek(), Some(c) if c.is_ascii_digit()) {
                    return Err("number with leading zero is not allowed".into());
                }
            }
            Some(c) if c.is_ascii_digit() => {
                while matches!(self.peek(), Some(c) if c.is_ascii_digit()) {
                    self.i += 1;
                }
            }
            _ => return Err("invalid number".into()),
        }
        let mut is_float = false;
        if self.peek() == Some(b'.') {
            is_float = true;
            self.i += 1;
            if !matches!(self.peek(), Some(c) if c.is_ascii_digit()) {
                return Err("invalid number".into());
            }
            while matches!(self.peek(), Some(c) if c.is_ascii_digit()) {
                self.i += 1;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            is_float = true;
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if !matches!(self.peek(), Some(c) if c.is_ascii_digit()) {
                return Err("invalid number".into());
            }
            while matches!(self.peek(), Some(c) if c.is_ascii_digit()) {
                self.i += 1;
            }
        }
        let text = &self.s[start..self.i];
        if !is_float {
            if let Ok(v) = text.parse::<i128>() {
                if v >= i64::MIN as i128 && v <= u64::MAX as i128 {
                    return Ok(Value::Int(v));
                }
            }
        }
        let f: f64 = text.parse().map_err(|_| "invalid number")?;
        if f.is_infinite() {
            return Err("number is infinity when parsed as double".into());
        }
        Ok(Value::Float(f))
    }
}

/// The high bit of each of 8 bytes (little-endian) that is below 0x20, a quote or a
/// backslash; the lowest set bit is exact (a borrow only runs up from a real match).
#[inline]
fn escape_bits(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    below_space | has_zero(w ^ (ONES * b'"' as u64)) | has_zero(w ^ (ONES * b'\\' as u64))
}

/// Whether any of 8 bytes is below 0x20, a quote or a backslash.
#[inline]
fn needs_escape(w: u64) -> bool {
    escape_bits(w) != 0
}

/// Whether a string needs no escape at all (the common case): eight bytes at a time.
#[inline]
fn plain(b: &[u8]) -> bool {
    let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
    if b.len() < 8 {
        return !b.iter().fold(false, |bad, &c| {
            bad | (c < 0x20) | (c == b'"') | (c == b'\\')
        });
    }
    // Whole words, then the last eight bytes (overlapping the previous word).
    let mut bad = needs_escape(word(b.len() - 8));
    let mut at = 0;
    while at + 8 <= b.len() {
        bad |= needs_escape(word(at));
        at += 8;
    }
    !bad
}

/// A string as orjson writes it, quotes included.
#[inline]
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    if plain(b) {
        out.reserve(b.len() + 2);
        out.push(b'"');
        out.extend_from_slice(b);
        out.push(b'"');
        return;
    }
    write_escaped(out, b);
}

#[cold]
fn write_escaped(out: &mut Vec<u8>, b: &[u8]) {
    out.push(b'"');
    let mut run = 0;
    let mut i = 0;
    while i < b.len() {
        if i + 8 <= b.len() {
            let w = u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
            if !needs_escape(w) {
                i += 8;
                continue;
            }
        }
        let c = b[i];
        if c >= 0x20 && c != b'"' && c != b'\\' {
            i += 1;
            continue;
        }
        out.extend_from_slice(&b[run..i]);
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            8 => out.extend_from_slice(b"\\b"),
            12 => out.extend_from_slice(b"\\f"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(c >> 4) as usize]);
                out.push(HEX[(c & 15) as usize]);
            }
        }
        i += 1;
        run = i;
    }
    out.extend_from_slice(&b[run..]);
    out.push(b'"');
}

/// A short ASCII text held inline, without an allocation: money amounts and event ids,
/// written several times per record.
#[derive(Clone, Copy)]
pub struct Short {
    buf: [u8; 48],
    len: usize,
}

impl Default for Short {
    fn default() -> Self {
        Short {
            buf: [0; 48],
            len: 0,
        }
    }
}

impl Short {
    /// Append an ASCII byte (panics past 48 bytes: callers write bounded texts).
    pub fn push(&mut self, c: u8) {
        debug_assert!(c.is_ascii());
        self.buf[self.len] = c;
        self.len += 1;
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).expect("ASCII")
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Up to 24 bytes in lowercase hex.
    pub fn hex(bytes: &[u8]) -> Short {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = Short::default();
        for (pair, b) in s.buf.chunks_exact_mut(2).zip(bytes) {
            pair[0] = HEX[(b >> 4) as usize];
            pair[1] = HEX[(b & 15) as usize];
        }
        s.len = 2 * bytes.len().min(24);
        s
    }
}

impl std::ops::Deref for Short {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for Short {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for Short {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq<&str> for Short {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Shortest round-trip digits and the exponent of the first one: 1.5e-7 -> ("15", -7).
pub fn float_digits(f: f64) -> (String, i32) {
    let s = format!("{:e}", f.abs());
    let (mant, exp) = s.split_once('e').expect("LowerExp has an exponent");
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    (digits, exp.parse().expect("LowerExp exponent"))
}

/// A float as orjson writes it: fixed notation for exponents -5..15 (`100.0`,
/// `0.000015`), else `1e-7`, `1.5e+16`.
pub fn write_float(out: &mut Vec<u8>, f: f64) {
    if f.is_sign_negative() {
        out.push(b'-');
    }
    if f == 0.0 {
        out.extend_from_slice(b"0.0");
        return;
    }
    let (digits, e) = float_digits(f);
    let d = digits.as_bytes();
    if (-5..16).contains(&e) {
        if e < 0 {
            out.extend_from_slice(b"0.");
            for _ in 0..(-e - 1) {
                out.push(b'0');
            }
            out.extend_from_slice(d);
        } else {
            let int_len = e as usize + 1;
            if d.len() <= int_len {
                out.extend_from_slice(d);
                for _ in d.len()..int_len {
                    out.push(b'0');
                }
                out.extend_from_slice(b".0");
            } else {
                out.extend_from_slice(&d[..int_len]);
                out.push(b'.');
                out.extend_from_slice(&d[int_len..]);
            }
        }
    } else {
        out.push(d[0]);
        if d.len() > 1 {
            out.push(b'.');
            out.extend_from_slice(&d[1..]);
        }
        out.push(b'e');
        if e > 0 {
            out.push(b'+');
        }
        out.extend_from_slice(e.to_string().as_bytes());
    }
}

/// The decimal digits of `n` at the end of `buf`; returns where they start. In u64
/// arithmetic when `n` fits (every count, duration and amount in range).
pub fn decimal(buf: &mut [u8; 40], n: u128) -> usize {
    fn run<
        T: Copy + PartialEq + From<u8> + std::ops::Rem<Output = T> + std::ops::Div<Output = T>,
    >(
        buf: &mut [u8; 40],
        mut n: T,
        digit: impl Fn(T) -> u8,
    ) -> usize {
        let (ten, zero) = (T::from(10), T::from(0));
        let mut at = buf.len();
        loop {
            at -= 1;
            buf[at] = b'0' + digit(n % ten);
            n = n / ten;
            if n == zero {
                return at;
            }
        }
    }
    match u64::try_from(n) {
        Ok(w) => run(buf, w, |d| d as u8),
        Err(_) => run(buf, n, |d| d as u8),
    }
}

pub fn write_int(out: &mut Vec<u8>, v: i128) {
    let mut digits = [0u8; 40];
    let at = decimal(&mut digits, v.unsigned_abs());
    if v < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[at..]);
}

pub fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Int(i) => write_int(out, *i),
        Value::Float(f) => write_float(out, *f),
        Value::Str(s) => write_str(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (n, x) in items.iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                write_value(out, x);
            }
            out.push(b']');
        }
        Value::Object(map) => write_object(out, map),
    }
}

pub fn write_object(out: &mut Vec<u8>, map: &Object) {
    out.push(b'{');
    for (n, (k, x)) in map.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        write_str(out, k);
        out.push(b':');
        write_value(out, x);
    }
    out.push(b'}');
}

/// Compact JSON (as this crate writes it: no spaces outside strings) indented as
/// `orjson.dumps(..., option=OPT_INDENT_2)` writes it: each member and element on its own
/// line, two spaces a level, `": "` after a key, empty objects and arrays as `{}` and `[]`.
pub fn indent2(compact: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(compact.len() + compact.len() / 2);
    let mut depth = 0usize;
    let newline = |out: &mut Vec<u8>, depth: usize| {
        out.push(b'\n');
        out.resize(out.len() + 2 * depth, b' ');
    };
    let mut i = 0;
    while i < compact.len() {
        let c = compact[i];
        match c {
            b'"' => {
                // A string, its escapes included, as it is.
                let start = i;
                i += 1;
                while i < compact.len() && compact[i] != b'"' {
                    i += if compact[i] == b'\\' { 2 } else { 1 };
                }
                out.extend_from_slice(&compact[start..(i + 1).min(compact.len())]);
            }
            b'{' | b'[' => {
                let close = if c == b'{' { b'}' } else { b']' };
                if compact.get(i + 1) == Some(&close) {
                    out.extend_from_slice(&[c, close]);
                    i += 1;
                } else {
                    out.push(c);
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            b',' => {
                out.push(b',');
                newline(&mut out, depth);
            }
            b':' => out.extend_from_slice(b": "),
            _ => out.push(c),
        }
        i += 1;
    }
    out
}

/// A JSON object written field by field: `{"a":1,"b":"x"}`.
pub struct Obj<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Obj<'a> {
    #[inline]
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Obj { out, first: true }
    }

    /// A field name: one of the outputs' own names, which never need an escape.
    #[inline]
    pub fn key(&mut self, k: &'static str) -> &mut Vec<u8> {
        debug_assert!(plain(k.as_bytes()));
        self.out.reserve(k.len() + 4);
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(k.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out
    }
    #[inline]
    pub fn str(&mut self, k: &'static str, v: &str) -> &mut Self {
        let o = self.key(k);
        write_str(o, v);
        self
    }
    /// A `Short` value: ASCII digits, hex, signs and points, which need no escape.
    #[inline]
    pub fn short(&mut self, k: &'static str, v: &Short) -> &mut Self {
        let o = self.key(k);
        o.push(b'"');
        o.extend_from_slice(v.as_bytes());
        o.push(b'"');
        self
    }
    #[inline]
    pub fn opt_str(&mut self, k: &'static str, v: Option<&str>) -> &mut Self {
        let o = self.key(k);
        match v {
            Some(s) => write_str(o, s),
            None => o.extend_from_slice(b"null"),
        }
        self
    }
    #[inline]
    pub fn int(&mut self, k: &'static str, v: i128) -> &mut Self {
        let o = self.key(k);
        write_int(o, v);
        self
    }
    pub fn bool(&mut self, k: &'static str, v: bool) -> &mut Self {
        let o = self.key(k);
        o.extend_from_slice(if v { b"true" } else { b"false" });
        self
    }
    pub fn raw(&mut self, k: &'static str, v: &[u8]) -> &mut Self {
        let o = self.key(k);
        o.extend_from_slice(v);
        self
    }
    #[inline]
    pub fn end(self) {
        self.out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dump(v: &Value) -> String {
        let mut o = Vec::new();
        write_value(&mut o, v);
        String::from_utf8(o).unwrap()
    }

    #[test]
    fn indent2_writes_what_orjson_writes_with_indent_2() {
        // orjson.dumps({"a": {"b": [1, {}], "c": []}, "d": "x,{:}\"]"}, option=OPT_INDENT_2)
        let compact = br#"{"a":{"b":[1,{}],"c":[]},"d":"x,{:}\"]"}"#;
        let want = "{\n  \"a\": {\n    \"b\": [\n      1,\n      {}\n    ],\n    \"c\": []\n  },\n  \"d\": \"x,{:}\\\"]\"\n}";
        assert_eq!(String::from_utf8(indent2(compact)).unwrap(), want);
        assert_eq!(indent2(b"{}"), b"{}");
        assert_eq!(indent2(br#""a\\""#), br#""a\\""#);
    }

    #[test]
    fn floats_are_written_as_orjson_writes_them() {
        // Expected values: orjson.dumps of each float, read off orjson 3.11.9.
        for (f, want) in [
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (123456789.123, "123456789.123"),
            (1e-7, "1e-7"),
            (0.1, "0.1"),
            (5e-324, "5e-324"),
            (-0.0, "-0.0"),
            (1.5e-5, "0.000015"),
            (1e-5, "0.00001"),
            (1.5e-6, "1.5e-6"),
            (100.0, "100.0"),
            (-1.5e-7, "-1.5e-7"),
            (1.2345e20, "1.2345e+20"),
        ] {
            assert_eq!(dump(&Value::Float(f)), want, "{f}");
        }
    }

    #[test]
    fn big_integers_become_floats_and_repeated_keys_keep_the_last_value() {
        assert_eq!(
            parse(b"18446744073709551615").unwrap(),
            Value::Int(18446744073709551615)
        );
        assert_eq!(
            dump(&parse(b"18446744073709551616").unwrap()),
            "1.8446744073709552e+19"
        );
        assert_eq!(
            dump(&parse(b"-9223372036854775809").unwrap()),
            "-9.223372036854776e+18"
        );
        assert_eq!(
            dump(&parse(b"{\"a\":1,\"a\":2,\"b\":3}").unwrap()),
            "{\"a\":2,\"b\":3}"
        );
    }

    #[test]
    fn what_orjson_refuses_is_refused() {
        for bad in [
            &b"1e999"[..],
            b"\"\\ud800\"",
            b"\"\\udc00x\"",
            b"01",
            b"1.",
            b".5",
            b"\"a\tb\"",
            b"{}x",
            b"\xef\xbb\xbf{}",
            b"\"\xff\"",
            b"",
            b"nul",
            b"NaN",
            b"[1,]",
            b"{\"a\":1,}",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let deep_ok = format!("{}{}", "[".repeat(1024), "]".repeat(1024));
        assert!(parse(deep_ok.as_bytes()).is_ok());
        let deep_bad = format!("{}{}", "[".repeat(1025), "]".repeat(1025));
        assert!(parse(deep_bad.as_bytes()).is_err());
    }

    #[test]
    fn long_strings_escape_in_any_position() {
        for n in 0..20 {
            for bad in ['"', '\\', '\u{1}', '\u{1f}'] {
                let text: String = "abcdefghijklmnopqrst"
                    .chars()
                    .take(n)
                    .chain([bad])
                    .chain("uvwxyz0123456".chars())
                    .collect();
                let mut o = Vec::new();
                write_str(&mut o, &text);
                let want = match bad {
                    '"' => "\\\"".to_string(),
                    '\\' => "\\\\".to_string(),
                    c => format!("\\u{:04x}", c as u32),
                };
                assert_eq!(
                    String::from_utf8(o).unwrap(),
                    format!("\"{}{}uvwxyz0123456\"", &"abcdefghijklmnopqrst"[..n], want)
                );
            }
        }
        // Bytes of 0x80 and above (UTF-8) are never escaped.
        let mut o = Vec::new();
        write_str(&mut o, "ééééééééé€");
        assert_eq!(String::from_utf8(o).unwrap(), "\"ééééééééé€\"");
    }

    #[test]
    fn strings_escape_only_what_json_needs() {
        let mut o = Vec::new();
        write_str(&mut o, "\u{0}\u{1f}\u{7f}\u{2028} é\"\\/\u{8}\u{c}\u{1a}");
        assert_eq!(
            String::from_utf8(o).unwrap(),
            "\"\\u0000\\u001f\u{7f}\u{2028} é\\\"\\\\/\\b\\f\\u001a\""
        );
    }
}
