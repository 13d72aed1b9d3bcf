//! The outputs of one batch (rated CDRs, balance events, recharge requests, rejects), held
//! natively from the rating (`Held.feed`) to their Kafka record batches
//! (`partition_batches`): each a topic, a key and a value, the bytes in one buffer of the
//! batch. No Python object is made per output on that path; Python reads one only by
//! index (a reject standing in for an output too large, the one-by-one fallback of
//! rater/worker/sending.py, the tests).

/// Where an entry's bytes are in the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    at: usize,
    len: usize,
}

/// An output as read back: (topic index, key or None, value).
pub type Output<'a> = (usize, Option<&'a [u8]>, &'a [u8]);

#[derive(Clone, Copy, Debug)]
struct Entry {
    topic: usize,
    key: Option<Span>,
    value: Span,
}

/// A batch's outputs in order: (topic, key or None, value).
#[derive(Debug, Default)]
pub struct BatchOutputs {
    topics: Vec<String>,
    entries: Vec<Entry>,
    bytes: Vec<u8>,
}

impl BatchOutputs {
    /// No outputs yet; `topics` are the first topic indexes (the rating's four output
    /// topics, in `feed::Kind` order).
    pub fn new(topics: Vec<String>) -> BatchOutputs {
        BatchOutputs {
            topics,
            entries: Vec::new(),
            bytes: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The topic names by index.
    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    /// The index of topic `name`, added if it is new.
    pub fn topic_index(&mut self, name: &str) -> usize {
        match self.topics.iter().position(|t| t == name) {
            Some(i) => i,
            None => {
                self.topics.push(name.to_owned());
                self.topics.len() - 1
            }
        }
    }

    fn keep(&mut self, b: &[u8]) -> Span {
        let at = self.bytes.len();
        self.bytes.extend_from_slice(b);
        Span { at, len: b.len() }
    }

    /// One more output, onto topic index `topic` (below `topics().len()`).
    pub fn push(&mut self, topic: usize, key: Option<&[u8]>, value: &[u8]) {
        assert!(topic < self.topics.len(), "topic index {topic} unknown");
        let key = key.map(|k| self.keep(k));
        let value = self.keep(value);
        self.entries.push(Entry { topic, key, value });
    }

    /// Output `i` replaced (a reject standing in for an output too large to write); its
    /// old bytes stay in the buffer, unused, until the batch is done. False: no output `i`.
    pub fn set(&mut self, i: usize, topic: usize, key: Option<&[u8]>, value: &[u8]) -> bool {
        assert!(topic < self.topics.len(), "topic index {topic} unknown");
        if i >= self.entries.len() {
            return false;
        }
        let key = key.map(|k| self.keep(k));
        let value = self.keep(value);
        self.entries[i] = Entry { topic, key, value };
        true
    }

    fn span(&self, s: Span) -> &[u8] {
        &self.bytes[s.at..s.at + s.len]
    }

    /// Output `i`: (topic index, key, value).
    pub fn get(&self, i: usize) -> Option<Output<'_>> {
        let e = self.entries.get(i)?;
        Some((e.topic, e.key.map(|k| self.span(k)), self.span(e.value)))
    }

    /// Every output in order: (topic index, key, value).
    pub fn iter(&self) -> impl Iterator<Item = Output<'_>> + '_ {
        self.entries
            .iter()
            .map(|e| (e.topic, e.key.map(|k| self.span(k)), self.span(e.value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outputs() -> BatchOutputs {
        BatchOutputs::new(vec!["rated".into(), "events".into()])
    }

    #[test]
    fn outputs_come_back_in_order_with_their_keys() {
        let mut o = outputs();
        o.push(1, Some(b"t1"), b"{\"a\":1}");
        o.push(0, None, b"x");
        o.push(0, Some(b""), b"");
        let all: Vec<_> = o.iter().collect();
        assert_eq!(
            all,
            vec![
                (1, Some(&b"t1"[..]), &b"{\"a\":1}"[..]),
                (0, None, &b"x"[..]),
                (0, Some(&b""[..]), &b""[..]),
            ]
        );
        assert_eq!(o.len(), 3);
        assert_eq!(o.get(3), None);
    }

    #[test]
    fn a_replaced_output_reads_back_new_and_the_others_do_not_move() {
        let mut o = outputs();
        o.push(0, Some(b"t1"), b"big");
        o.push(1, Some(b"t2"), b"event");
        let rejects = o.topic_index("rejects");
        assert_eq!(rejects, 2);
        assert_eq!(o.topic_index("events"), 1);
        assert!(o.set(0, rejects, None, b"reject"));
        assert!(!o.set(2, rejects, None, b"nothing"));
        assert_eq!(o.get(0), Some((2, None, &b"reject"[..])));
        assert_eq!(o.get(1), Some((1, Some(&b"t2"[..]), &b"event"[..])));
        assert_eq!(o.topics(), ["rated", "events", "rejects"]);
    }

    #[test]
    #[should_panic(expected = "topic index 2 unknown")]
    fn a_topic_index_not_given_is_a_bug() {
        outputs().push(2, None, b"");
    }
}
