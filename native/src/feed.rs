//! The worker's batch step around each record, without Python (`rater_native.Held.feed`
//! drives it): the record's home partition (SPEC 2, `rater/core/batch.py`
//! `BatchProcessor.home_partition`), its key as the engine reads it, and the routing of
//! its outputs (`rater/core/routing.py` `outputs_of`, `BatchProcessor._emit`). The
//! Python step stays the reference; tests/worker/test_native_store.py holds the two equal.

use crate::engine::Processed;
use crate::json::{parse, Value};
use std::borrow::Cow;

const SEED: u32 = 0x9747_b28c;
const M: u32 = 0x5bd1_e995;

/// MurmurHash2 of `data` as the Java client's `Utils.murmur2` computes it, unsigned
/// (`rater/core/partitioning.py` `murmur2`).
pub fn murmur2(data: &[u8]) -> u32 {
    let mut h = SEED ^ (data.len() as u32);
    let mut blocks = data.chunks_exact(4);
    for b in &mut blocks {
        let mut k = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let tail = blocks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if let Some(&first) = tail.first() {
        h ^= u32::from(first);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition of a key among `partitions` (at least 1): the Java client's default
/// partitioner, `toPositive(murmur2(key)) % partitions`.
pub fn partition_for(key: &[u8], partitions: u32) -> u32 {
    (murmur2(key) & 0x7fff_ffff) % partitions
}

/// The key a record is homed by.
#[derive(Debug, PartialEq, Eq)]
pub enum HomeKey {
    /// The record's own key (a non-empty one).
    Key,
    /// The `tenant_id` of a record without a key (or with an empty one), UTF-8 encoded.
    Tenant(String),
}

const TENANT_PROBE: &[u8] = b"\"tenant_id\"";

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// `BatchProcessor.home_partition`: the partition the record belongs on and the key that
/// says so; None when the value cannot name a tenant (it is rejected where it is). A
/// record without a key is read for its `tenant_id` only when its value is at most
/// `max_record_bytes` and holds `"tenant_id"` at all (a larger one is never decoded).
pub fn home_partition(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    partitions: u32,
    max_record_bytes: usize,
) -> Option<(u32, HomeKey)> {
    if let Some(k) = key.filter(|k| !k.is_empty()) {
        return Some((partition_for(k, partitions), HomeKey::Key));
    }
    let value = value.filter(|v| !v.is_empty())?;
    if value.len() > max_record_bytes || !contains(value, TENANT_PROBE) {
        return None;
    }
    // `orjson.loads(value).get("tenant_id")`: a document that is not an object has no
    // `get` (None); a tenant is a non-empty string.
    let Ok(Value::Object(obj)) = parse(value) else {
        return None;
    };
    match obj.get("tenant_id") {
        Some(Value::Str(t)) if !t.is_empty() => {
            let t = t.as_ref().to_owned();
            Some((partition_for(t.as_bytes(), partitions), HomeKey::Tenant(t)))
        }
        _ => None,
    }
}

/// A record's key as the engine reads it: `key.decode("utf-8", "replace")` (each
/// maximal invalid subsequence one U+FFFD, as Python's decoder does).
pub fn key_text(key: Option<&[u8]>) -> Option<Cow<'_, str>> {
    key.map(String::from_utf8_lossy)
}

/// The output streams (`rater/core/routing.py` `KINDS`; the worker's `Topics` fields).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Rated,
    Events,
    Requests,
    Rejects,
}

impl Kind {
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The outputs of a processed record in the order they are written (`outputs_of`): the
/// rated CDR, the balance events, the recharge requests, the reject.
pub fn outputs(p: &Processed) -> impl Iterator<Item = (Kind, &[u8])> {
    let o = &p.outcome;
    o.rated
        .iter()
        .map(|r| (Kind::Rated, r.as_slice()))
        .chain(o.events.iter().map(|e| (Kind::Events, e.as_slice())))
        .chain(
            o.recharge_requests
                .iter()
                .map(|r| (Kind::Requests, r.as_slice())),
        )
        .chain(p.reject.iter().map(|r| (Kind::Rejects, r.as_slice())))
}

/// The key of an output of kind `kind`: a reject is keyed as its input was, every other
/// output by the record's tenant when it names one, else by the input's key too.
pub fn keyed_by_tenant(kind: Kind, tenant: Option<&str>) -> bool {
    kind != Kind::Rejects && tenant.is_some_and(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Apache Kafka's UtilsTest.testMurmur2 vectors (signed 32-bit results), the ones
    /// tests/core/test_partitioning.py holds `rater.core.partitioning.murmur2` to.
    const JAVA_MURMUR2: [(&str, i32); 6] = [
        ("21", -973932308),
        ("foobar", -790332482),
        ("a-little-bit-long-string", -985981536),
        ("a-little-bit-longer-string", -1486304829),
        (
            "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
            -58897971,
        ),
        ("abc", 479470107),
    ];

    #[test]
    fn murmur2_is_the_java_clients_hash() {
        for (key, signed) in JAVA_MURMUR2 {
            assert_eq!(murmur2(key.as_bytes()), signed as u32, "{key}");
        }
    }

    #[test]
    fn partitions_are_those_of_the_python_partition_for() {
        // rater.core.partitioning: (murmur2(key), partition_for(key, 8), partition_for(key, 12)).
        let known: [(&[u8], u32, u32, u32); 10] = [
            (b"", 0x106e08d9, 1, 9),
            (b"a", 0xa2d0b27c, 4, 4),
            (b"ab", 0x12d8262a, 2, 2),
            (b"abc", 0x1c94221b, 3, 3),
            (b"abcd", 0xb11ab5f4, 4, 8),
            (b"t1", 0xb3a09603, 3, 7),
            (b"21", 0xc5f2f8ec, 4, 0),
            (b"tenant-000042", 0x9d224020, 0, 0),
            (b"\xff\xfe\x00", 0xda4806c4, 4, 4),
            ("caf\u{e9}".as_bytes(), 0xaf0e73b2, 2, 6),
        ];
        for (key, hash, p8, p12) in known {
            assert_eq!(murmur2(key), hash, "{key:?}");
            assert_eq!(partition_for(key, 8), p8, "{key:?}");
            assert_eq!(partition_for(key, 12), p12, "{key:?}");
            assert_eq!(partition_for(key, 1), 0);
        }
        // tests/core/test_partitioning.py, worked by hand: toPositive(-973932308) % 8 == 4.
        assert_eq!(partition_for(b"21", 8), 4);
    }

    #[test]
    fn a_key_homes_a_record_else_its_tenant_id() {
        let v: &[u8] = br#"{"tenant_id":"t1","x":1}"#;
        assert_eq!(
            home_partition(Some(b"21"), Some(v), 8, 100),
            Some((4, HomeKey::Key))
        );
        let t1 = Some((3, HomeKey::Tenant("t1".into())));
        assert_eq!(home_partition(None, Some(v), 8, 100), t1);
        assert_eq!(home_partition(Some(b""), Some(v), 8, 100), t1); // an empty key is none
                                                                    // Repeated: the last value, as a Python dict keeps it.
        let again: &[u8] = br#"{"tenant_id":"x","tenant_id":"t1"}"#;
        assert_eq!(home_partition(None, Some(again), 8, 100), t1);
    }

    #[test]
    fn a_value_that_cannot_name_a_tenant_homes_nothing() {
        for v in [
            &br#"{"tenant_id":"t1"}"#[..],
            br#"{"tenant_id":""}"#,
            br#"{"tenant_id":7}"#,
            br#"{"tenant_id":null}"#,
            br#"["tenant_id","t1"]"#,
            br#""tenant_id""#,
            br#"{"tenant_id":"t1""#,
            br#"{"tenant\u005fid":"t1"}"#, // no probe: never decoded
            br#"{"tenant_id":"t1"} x"#,
            b"",
        ] {
            let max = if v == br#"{"tenant_id":"t1"}"# {
                17
            } else {
                100
            };
            assert_eq!(home_partition(None, Some(v), 8, max), None, "{v:?}");
        }
        assert_eq!(home_partition(None, None, 8, 100), None);
        // At the bound: decoded.
        let v = br#"{"tenant_id":"t1"}"#;
        assert!(home_partition(None, Some(v), 8, v.len()).is_some());
    }

    #[test]
    fn a_key_is_read_as_python_replaces_invalid_utf8() {
        // b"a\xffb\xe2\x82".decode("utf-8", "replace") == "a\ufffdb\ufffd"
        assert_eq!(
            key_text(Some(b"a\xffb\xe2\x82")).as_deref(),
            Some("a\u{fffd}b\u{fffd}")
        );
        // b"\xed\xa0\x80".decode("utf-8", "replace"): a surrogate, three replacements.
        assert_eq!(
            key_text(Some(b"\xed\xa0\x80")).as_deref(),
            Some("\u{fffd}\u{fffd}\u{fffd}")
        );
        assert_eq!(key_text(None), None);
    }

    #[test]
    fn rejects_are_keyed_as_the_input_was() {
        assert!(keyed_by_tenant(Kind::Rated, Some("t1")));
        assert!(!keyed_by_tenant(Kind::Rejects, Some("t1")));
        assert!(!keyed_by_tenant(Kind::Events, Some("")));
        assert!(!keyed_by_tenant(Kind::Requests, None));
    }
}
