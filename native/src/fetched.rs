//! Fetched Kafka record batches read without a Python object per field: the worker's
//! input records go from the fetch response's bytes to the rating call as spans of those
//! bytes (rater/worker/adapter.py hands aiokafka's fetched bytes here; the batches it
//! cannot read plainly go back to aiokafka's own decoder, so what a fetch yields is
//! aiokafka's, record for record: tests/worker/test_fetched.py).
//!
//! A fetch is record batches back to back; a batch cut short at the end of the fetch (the
//! broker's size limit) is left out, as aiokafka's `MemoryRecords` leaves it. Every batch
//! starts with its base offset (i64), its length (i32, the bytes after this field) and,
//! at byte 16 in every message format, its magic. The layout of a v2 batch and its records
//! is written out in `crate::recordbatch`. A batch is *plain* when this module reads its
//! records: message format 2, uncompressed, not a control batch, well formed. Any other
//! (compressed, format 0 or 1, a transaction marker, corrupt) is read by aiokafka.

use crate::recordbatch::HEADER_LEN;

const LOG_OVERHEAD: usize = 12; // base offset and length
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const CODEC_MASK: i16 = 0x07;
pub const TIMESTAMP_TYPE_MASK: i16 = 0x08;
pub const TRANSACTIONAL_MASK: i16 = 0x10;
pub const CONTROL_MASK: i16 = 0x20;

/// One batch of a fetch: where it lies, and its v2 header fields (zero for another format).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub start: usize,
    pub end: usize,
    pub magic: i8,
    pub base_offset: i64,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub first_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub count: i32,
    pub crc: u32,
}

/// One record of a plain batch: its offset and timestamp, and where its key and value lie
/// in the fetch (None: null).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<(usize, usize)>,
    pub value: Option<(usize, usize)>,
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

fn i32_at(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(a)
}

impl Batch {
    fn other(start: usize, end: usize, base_offset: i64) -> Batch {
        Batch {
            start,
            end,
            magic: -1,
            base_offset,
            attributes: 0,
            last_offset_delta: 0,
            first_timestamp: 0,
            max_timestamp: 0,
            producer_id: -1,
            count: 0,
            crc: 0,
        }
    }

    /// The offset after its last record (the fetch goes on from there).
    pub fn next_offset(&self) -> i64 {
        self.base_offset
            .wrapping_add(i64::from(self.last_offset_delta))
            .wrapping_add(1)
    }

    /// Message format 2 with its whole header: its fields are read.
    pub fn is_v2(&self) -> bool {
        self.magic >= 2 && self.end - self.start >= HEADER_LEN
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_MASK != 0
    }

    /// Format 2, uncompressed, not a control batch: its records can be read here.
    pub fn is_plain(&self) -> bool {
        self.is_v2() && self.attributes & CODEC_MASK == 0 && !self.is_control()
    }

    /// The CRC-32C of everything from the attributes on is the one in the header.
    pub fn crc_ok(&self, buf: &[u8]) -> bool {
        self.is_v2() && crc32c::crc32c(&buf[self.start + ATTRIBUTES_AT..self.end]) == self.crc
    }
}

/// The whole batches of a fetch, in order.
pub fn batches(buf: &[u8]) -> Vec<Batch> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while buf.len() - pos >= LOG_OVERHEAD {
        let length = i32_at(buf, pos + 8);
        // A negative length (never from a broker): the rest is one batch that is not
        // plain, so aiokafka reads it and does what it does.
        let Ok(length) = usize::try_from(length) else {
            out.push(Batch::other(pos, buf.len(), i64_at(buf, pos)));
            break;
        };
        let end = pos + LOG_OVERHEAD + length;
        if end > buf.len() {
            break; // not whole (cut by the fetch size): left out, and the fetch ends
        }
        let mut b = Batch::other(pos, end, i64_at(buf, pos));
        if end > pos + MAGIC_AT {
            b.magic = buf[pos + MAGIC_AT] as i8;
        }
        if b.is_v2() {
            let h = &buf[pos..];
            b.crc = u32::from_be_bytes([h[CRC_AT], h[CRC_AT + 1], h[CRC_AT + 2], h[CRC_AT + 3]]);
            b.attributes = i16::from_be_bytes([h[ATTRIBUTES_AT], h[ATTRIBUTES_AT + 1]]);
            b.last_offset_delta = i32_at(h, 23);
            b.first_timestamp = i64_at(h, 27);
            b.max_timestamp = i64_at(h, 35);
            b.producer_id = i64_at(h, 43);
            b.count = i32_at(h, 57);
        }
        out.push(b);
        pos = end;
    }
    out
}

/// A zigzag varint at `*pos`, read no further than `end`; None when it runs past `end`
/// or past 64 bits.
fn varint(buf: &[u8], pos: &mut usize, end: usize) -> Option<i64> {
    let mut z: u64 = 0;
    let mut shift = 0u32;
    loop {
        if *pos >= end || shift > 63 {
            return None;
        }
        let byte = buf[*pos];
        *pos += 1;
        z |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
        shift += 7;
    }
}

/// Nullable bytes: a varint length (negative: null), then that many bytes.
fn field(buf: &[u8], pos: &mut usize, end: usize) -> Option<Option<(usize, usize)>> {
    let len = varint(buf, pos, end)?;
    if len < 0 {
        return Some(None);
    }
    let len = usize::try_from(len).ok()?;
    let start = *pos;
    let stop = start.checked_add(len)?;
    if stop > end {
        return None;
    }
    *pos = stop;
    Some(Some((start, stop)))
}

/// The records of a plain batch, appended to `out`; None when the batch is not well
/// formed (then nothing is appended, and aiokafka reads it, to raise what it raises).
/// Header keys must be UTF-8, as aiokafka decodes them.
pub fn records(buf: &[u8], b: &Batch, out: &mut Vec<Span>) -> Option<()> {
    if !b.is_plain() || b.count < 0 {
        return None;
    }
    let log_append = b.attributes & TIMESTAMP_TYPE_MASK != 0;
    let first = out.len();
    let mut pos = b.start + HEADER_LEN;
    let end = b.end;
    let ok = (|| {
        for _ in 0..b.count {
            let length = usize::try_from(varint(buf, &mut pos, end)?).ok()?;
            let start = pos;
            varint(buf, &mut pos, end)?; // attributes, unused
            let ts_delta = varint(buf, &mut pos, end)?;
            let offset_delta = varint(buf, &mut pos, end)?;
            let key = field(buf, &mut pos, end)?;
            let value = field(buf, &mut pos, end)?;
            let headers = varint(buf, &mut pos, end)?;
            if headers < 0 {
                return None;
            }
            for _ in 0..headers {
                let name = field(buf, &mut pos, end)??;
                std::str::from_utf8(&buf[name.0..name.1]).ok()?;
                field(buf, &mut pos, end)?;
            }
            if pos - start != length {
                return None;
            }
            out.push(Span {
                offset: b.base_offset.wrapping_add(offset_delta),
                timestamp: if log_append {
                    b.max_timestamp
                } else {
                    b.first_timestamp.wrapping_add(ts_delta)
                },
                key,
                value,
            });
        }
        (pos == end).then_some(())
    })();
    if ok.is_none() {
        out.truncate(first);
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recordbatch::RecordBatch;

    type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

    fn batch(base: i64, records: &[KeyValue]) -> Vec<u8> {
        let mut rb = RecordBatch::new(1 << 20);
        for (i, (k, v)) in records.iter().enumerate() {
            let headers: &[(&str, Option<&[u8]>)] = if i % 2 == 1 {
                &[("h", Some(b"x".as_slice())), ("n", None)]
            } else {
                &[]
            };
            assert!(rb.append(1_000 + i as i64, *k, *v, headers));
        }
        let mut bytes = rb.finish(-1, -1, -1).to_vec();
        bytes[..8].copy_from_slice(&base.to_be_bytes());
        bytes
    }

    #[test]
    fn reads_the_records_of_whole_batches() {
        let mut buf = batch(10, &[(Some(b"t1"), Some(b"{}")), (None, Some(b"abc"))]);
        buf.extend(batch(12, &[(Some(b""), None)]));
        let whole = buf.len();
        buf.extend(&batch(13, &[(Some(b"k"), Some(b"v"))])[..20]); // cut short
        let bs = batches(&buf);
        assert_eq!(bs.len(), 2);
        assert_eq!(bs[1].end, whole);
        assert!(bs.iter().all(|b| b.is_plain() && b.crc_ok(&buf)));
        assert_eq!((bs[0].next_offset(), bs[1].next_offset()), (12, 13));
        let mut spans = Vec::new();
        for b in &bs {
            records(&buf, b, &mut spans).unwrap();
        }
        let text = |s: Option<(usize, usize)>| s.map(|(a, z)| &buf[a..z]);
        let got: Vec<_> = spans
            .iter()
            .map(|s| (s.offset, s.timestamp, text(s.key), text(s.value)))
            .collect();
        assert_eq!(
            got,
            vec![
                (10, 1_000, Some(b"t1".as_slice()), Some(b"{}".as_slice())),
                (11, 1_001, None, Some(b"abc".as_slice())),
                (12, 1_000, Some(b"".as_slice()), None),
            ]
        );
    }

    #[test]
    fn a_changed_byte_fails_the_crc_and_a_short_record_is_not_read() {
        let mut buf = batch(0, &[(Some(b"t1"), Some(b"{}"))]);
        let last = buf.len() - 1;
        buf[last] ^= 1;
        let b = &batches(&buf)[0];
        assert!(!b.crc_ok(&buf));
        // A record length one past its bytes: not well formed, nothing read.
        let mut buf = batch(0, &[(Some(b"t1"), Some(b"{}"))]);
        buf[HEADER_LEN] += 2; // zigzag: length + 1
        let b = &batches(&buf)[0];
        let mut spans = vec![];
        assert_eq!(records(&buf, b, &mut spans), None);
        assert!(spans.is_empty());
    }

    #[test]
    fn other_formats_and_compressed_batches_are_not_plain() {
        let mut buf = batch(0, &[(Some(b"t1"), Some(b"{}"))]);
        buf[ATTRIBUTES_AT + 1] |= 1; // gzip
        assert!(!batches(&buf)[0].is_plain());
        let mut buf = batch(0, &[(Some(b"t1"), Some(b"{}"))]);
        buf[ATTRIBUTES_AT + 1] |= CONTROL_MASK as u8;
        assert!(!batches(&buf)[0].is_plain());
        let mut buf = batch(0, &[(Some(b"t1"), Some(b"{}"))]);
        buf[MAGIC_AT] = 1;
        assert!(!batches(&buf)[0].is_plain());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let base = batch(5, &[(Some(b"tenant"), Some(b"{\"a\":1}")), (None, None)]);
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut buf = base.clone();
            let n = (seed % 4 + 1) as usize;
            for j in 0..n {
                let at = ((seed >> (8 * j)) as usize) % buf.len();
                buf[at] = (seed >> (16 + j)) as u8;
            }
            buf.truncate(buf.len() - (seed >> 40) as usize % 8);
            let mut spans = vec![];
            for b in batches(&buf) {
                let _ = b.crc_ok(&buf);
                let _ = records(&buf, &b, &mut spans);
            }
        }
    }
}
