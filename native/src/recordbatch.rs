//! Kafka record batches (message format v2, uncompressed), as aiokafka's
//! `DefaultRecordBatchBuilder` writes them, byte for byte: the worker hands a whole list of
//! records to `build` instead of appending them one by one in Python
//! (rater/worker/sending.py; tests/worker/test_record_batches.py holds the bytes equal to
//! aiokafka's for the same records).
//!
//! Layout (KIP-98): a 61-byte header, then the records. Header: base offset (i64, 0: the
//! broker sets it), batch length (i32, the bytes after this field), partition leader epoch
//! (i32, -1), magic (i8, 2), CRC-32C (u32, of everything from the attributes on),
//! attributes (i16), last offset delta (i32), first and max timestamp (i64), producer id
//! (i64), producer epoch (i16), base sequence (i32), record count (i32). A record: its
//! length, attributes (0), timestamp delta, offset delta, key, value and headers, every
//! integer a zigzag varint, a null key or value written as length -1.

pub const HEADER_LEN: usize = 61;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;

/// A record: key, value (None is null) and headers (key, value).
pub type Headers<'a> = [(&'a str, Option<&'a [u8]>)];

pub struct RecordBatch {
    buf: Vec<u8>,
    count: i32,
    first_timestamp: i64,
    max_timestamp: i64,
    batch_size: usize,
}

fn varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn varint_len(v: i64) -> usize {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut n = 1;
    while z >= 0x80 {
        z >>= 7;
        n += 1;
    }
    n
}

fn bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => varint(out, -1),
        Some(b) => {
            varint(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}

impl RecordBatch {
    /// An empty batch that takes records while it stays below `batch_size` bytes (its
    /// first record whatever its size), as aiokafka's builder does.
    pub fn new(batch_size: usize) -> RecordBatch {
        let mut buf = Vec::with_capacity(batch_size.clamp(HEADER_LEN, 1 << 16));
        buf.resize(HEADER_LEN, 0);
        RecordBatch {
            buf,
            count: 0,
            first_timestamp: 0,
            max_timestamp: 0,
            batch_size,
        }
    }

    pub fn count(&self) -> i32 {
        self.count
    }

    /// The bytes written so far, the header included.
    pub fn size(&self) -> usize {
        self.buf.len()
    }

    /// Append a record with its offset delta the next one; false (nothing appended) when
    /// the batch has a record already and would reach its size with this one.
    pub fn append(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &Headers,
    ) -> bool {
        let first = self.count == 0;
        let delta = if first {
            0
        } else {
            timestamp - self.first_timestamp
        };
        let field = |b: Option<&[u8]>| b.map_or(1, |b| varint_len(b.len() as i64) + b.len());
        let len = 1
            + varint_len(delta)
            + varint_len(self.count as i64)
            + field(key)
            + field(value)
            + varint_len(headers.len() as i64)
            + headers
                .iter()
                .map(|(k, v)| field(Some(k.as_bytes())) + field(*v))
                .sum::<usize>();
        if !first && varint_len(len as i64) + len + self.buf.len() >= self.batch_size {
            return false;
        }
        if first {
            self.first_timestamp = timestamp;
            self.max_timestamp = timestamp;
        } else {
            self.max_timestamp = self.max_timestamp.max(timestamp);
        }
        let r = &mut self.buf;
        r.reserve(len + 5);
        varint(r, len as i64);
        r.push(0); // attributes
        varint(r, delta);
        varint(r, self.count as i64);
        bytes(r, key);
        bytes(r, value);
        varint(r, headers.len() as i64);
        for (k, v) in headers {
            bytes(r, Some(k.as_bytes()));
            bytes(r, *v);
        }
        self.count += 1;
        true
    }

    /// The batch as sent, with the producer's id, epoch and first sequence number (-1 for
    /// a producer that is not idempotent): the header written over the space kept for it.
    pub fn finish(&mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> &[u8] {
        let len = self.buf.len();
        let mut h = Vec::with_capacity(HEADER_LEN);
        h.extend_from_slice(&0i64.to_be_bytes());
        h.extend_from_slice(&((len - 12) as i32).to_be_bytes());
        h.extend_from_slice(&(-1i32).to_be_bytes());
        h.push(2);
        h.extend_from_slice(&0u32.to_be_bytes()); // the CRC, below
        h.extend_from_slice(&0i16.to_be_bytes());
        h.extend_from_slice(&(self.count - 1).max(0).to_be_bytes());
        h.extend_from_slice(&self.first_timestamp.to_be_bytes());
        h.extend_from_slice(&self.max_timestamp.to_be_bytes());
        h.extend_from_slice(&producer_id.to_be_bytes());
        h.extend_from_slice(&producer_epoch.to_be_bytes());
        h.extend_from_slice(&base_sequence.to_be_bytes());
        h.extend_from_slice(&self.count.to_be_bytes());
        self.buf[..HEADER_LEN].copy_from_slice(&h);
        let crc = crc32c::crc32c(&self.buf[ATTRIBUTES_AT..]);
        self.buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        &self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zigzag_varints_as_kafka_writes_them() {
        let cases: [(i64, &[u8]); 6] = [
            (0, &[0x00]),
            (-1, &[0x01]),
            (1, &[0x02]),
            (63, &[0x7e]),
            (64, &[0x80, 0x01]),
            (300, &[0xd8, 0x04]),
        ];
        for (v, want) in cases {
            let mut out = Vec::new();
            varint(&mut out, v);
            assert_eq!(out, want, "{v}");
            assert_eq!(varint_len(v), want.len());
        }
    }

    #[test]
    fn crc32c_check_value() {
        // The CRC-32C of "123456789" (RFC 3720's check value).
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn one_record_batch_worked_out_by_hand() {
        let mut b = RecordBatch::new(1 << 20);
        assert!(b.append(1_000, Some(b"k"), Some(b"vv"), &[("h", None)]));
        let out = b.finish(-1, -1, -1).to_vec();
        // The record: attributes 0, timestamp delta 0, offset delta 0, key length 1 (0x02)
        // and "k", value length 2 (0x04) and "vv", 1 header (0x02): key "h" (0x02, "h"),
        // null value (0x01). 12 bytes, so its length varint is 0x18.
        let record = [
            0x18, 0, 0, 0, 0x02, b'k', 0x04, b'v', b'v', 0x02, 0x02, b'h', 0x01,
        ];
        assert_eq!(&out[HEADER_LEN..], &record);
        assert_eq!(out.len(), 61 + 13);
        assert_eq!(&out[8..12], &(61i32 + 13 - 12).to_be_bytes());
        assert_eq!(&out[12..16], &(-1i32).to_be_bytes());
        assert_eq!(out[16], 2);
        assert_eq!(&out[23..27], &0i32.to_be_bytes()); // last offset delta
        assert_eq!(&out[27..35], &1_000i64.to_be_bytes());
        assert_eq!(&out[35..43], &1_000i64.to_be_bytes());
        assert_eq!(&out[57..61], &1i32.to_be_bytes());
        let crc = crc32c::crc32c(&out[21..]);
        assert_eq!(&out[17..21], &crc.to_be_bytes());
    }

    #[test]
    fn a_full_batch_refuses_the_next_record_but_never_its_first() {
        let mut b = RecordBatch::new(100);
        assert!(b.append(5, None, Some(&[7u8; 500]), &[]));
        assert!(!b.append(5, None, Some(b"x"), &[]));
        assert_eq!(b.count(), 1);
        // Each record: attributes, deltas, null key, value length and 2 bytes, 0 headers: 8
        // bytes and its length byte: 9. Two make 79 bytes: refused by a batch of 79 (the
        // size is not reached, as in aiokafka's builder), taken by one of 80.
        for (size, fits) in [(79, false), (80, true)] {
            let mut b = RecordBatch::new(size);
            assert!(b.append(5, None, Some(b"ab"), &[]));
            assert_eq!(b.size(), 61 + 9);
            assert_eq!(b.append(9, None, Some(b"cd"), &[]), fits);
        }
    }
}
