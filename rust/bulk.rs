//! Bulk dispatch: Python serializes a chunk of payloads as one JSON array (one orjson call);
//! the engine splits it into elements, checks their sizes, takes a run of consecutive ids,
//! and (on the I/O runtime) packs one record per element. Writing the chunks is the store's
//! ordinary enqueue.

use crate::codec::{pack_into, Header, IdGen, IdRange, Record};
use crate::error::{Error, Result};
use crate::store::{NewJob, Watermark};

/// The byte spans of the top-level elements of a JSON array. The input is trusted to be JSON
/// (it comes from orjson); the scan only tracks nesting and strings.
pub fn split_json_array(b: &[u8]) -> Result<Vec<(usize, usize)>> {
    let bad = |at: usize| Error::Invalid(format!("bulk payloads are not a JSON array (at byte {at})"));
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && matches!(b[*i], b' ' | b'\n' | b'\r' | b'\t') {
            *i += 1;
        }
    };
    skip_ws(&mut i);
    if b.get(i) != Some(&b'[') {
        return Err(bad(i));
    }
    i += 1;
    let mut spans = Vec::new();
    skip_ws(&mut i);
    if b.get(i) == Some(&b']') {
        return Ok(spans);
    }
    loop {
        skip_ws(&mut i);
        let start = i;
        let mut depth = 0usize;
        let mut in_str = false;
        while i < b.len() {
            let c = b[i];
            if in_str {
                match c {
                    b'\\' => i += 1,
                    b'"' => in_str = false,
                    _ => {}
                }
            } else {
                match c {
                    b'"' => in_str = true,
                    b'[' | b'{' => depth += 1,
                    b']' | b'}' if depth > 0 => depth -= 1,
                    b',' | b']' if depth == 0 => break,
                    _ => {}
                }
            }
            i += 1;
        }
        let mut end = i;
        while end > start && matches!(b[end - 1], b' ' | b'\n' | b'\r' | b'\t') {
            end -= 1;
        }
        if end == start || i >= b.len() {
            return Err(bad(i));
        }
        spans.push((start, end));
        if b[i] == b']' {
            return Ok(spans);
        }
        i += 1; // the comma
    }
}

/// What every job of one bulk dispatch shares.
#[derive(Debug, Clone)]
pub struct BulkSpec {
    pub name: String,
    pub header: Header,
    pub options: Vec<u8>,
    pub delay_ms: u64,
    pub at_ms: Option<u64>,
    pub max_payload: usize,
    pub enqueued_ms: u64,
}

/// One chunk, checked and given its ids; packed on the I/O runtime (`Store::pack_chunk`), so
/// packing overlaps Python's serializing of the next chunk instead of holding up the caller.
pub struct Chunk {
    spec: BulkSpec,
    array: Vec<u8>,
    spans: Vec<(usize, usize)>,
    pub range: IdRange,
}

impl Chunk {
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Due now, with generated ids and no priority: its records can go to Redis as one raw
    /// RPUSH, each packed straight into the command (`records`).
    pub fn is_plain(&self) -> bool {
        self.spec.delay_ms == 0 && self.spec.at_ms.is_none() && self.spec.header.priority == 0
    }

    pub fn watermark(&self) -> Watermark {
        Watermark { producer: self.range.producer.clone(), last_seq: self.range.last_seq() }
    }

    /// Packs records `from..to`, handing each to `out` (one scratch buffer for all of them).
    pub fn records(&self, from: usize, to: usize, mut out: impl FnMut(&[u8])) {
        let spec = &self.spec;
        let mut record = Vec::with_capacity(256);
        // `<producer>-` once, then only the sequence number per record (itoa: no formatter).
        let mut id = format!("{}-", self.range.producer);
        let prefix = id.len();
        let mut digits = itoa::Buffer::new();
        for (k, (s, e)) in self.spans[from..to].iter().enumerate() {
            id.truncate(prefix);
            id.push_str(digits.format(self.range.first + (from + k) as u64));
            record.clear();
            pack_into(&mut record, spec.header, &id, &spec.name, spec.enqueued_ms, &spec.options, &self.array[*s..*e]);
            out(&record);
        }
    }

    /// One job per payload, under the chunk's run of ids (for `enqueue`: delays, priorities).
    pub fn pack(&self) -> (Vec<NewJob>, Watermark) {
        let spec = &self.spec;
        let mut jobs = Vec::with_capacity(self.spans.len());
        self.records(0, self.len(), |record| {
            let id = String::from_utf8_lossy(Record::peek_id(record)).into_owned();
            jobs.push(NewJob { id, custom_id: false, delay_ms: spec.delay_ms, at_ms: spec.at_ms, record: record.to_vec() });
        });
        (jobs, self.watermark())
    }
}

/// Splits a JSON array of payloads, checks each size and takes a run of ids for them.
/// `first_index` is the index of the chunk's first payload in the whole dispatch, for errors.
pub fn prepare_chunk(spec: &BulkSpec, ids: &mut IdGen, array: &[u8], first_index: u64) -> Result<Option<Chunk>> {
    let spans = split_json_array(array)?;
    for (k, (s, e)) in spans.iter().enumerate() {
        if e - s > spec.max_payload {
            return Err(Error::Invalid(format!(
                "payload at index {} is {} bytes, over the limit of {} bytes",
                first_index + k as u64,
                e - s,
                spec.max_payload
            )));
        }
    }
    if spans.is_empty() {
        return Ok(None);
    }
    let range = ids.take(spans.len() as u64);
    Ok(Some(Chunk { spec: spec.clone(), array: array.to_vec(), spans, range }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Record;

    fn parts(s: &str) -> Vec<&str> {
        split_json_array(s.as_bytes()).unwrap().into_iter().map(|(a, b)| &s[a..b]).collect()
    }

    #[test]
    fn splits_top_level_elements() {
        assert_eq!(parts("[]"), Vec::<&str>::new());
        assert_eq!(parts("[1]"), vec!["1"]);
        assert_eq!(parts(r#"[{"a":[1,2],"b":"x,]}"},null,"q\"]",[[]]]"#), vec![r#"{"a":[1,2],"b":"x,]}"}"#, "null", r#""q\"]""#, "[[]]"]);
        assert_eq!(parts(" [ 1 , {\"k\": 2} ] "), vec!["1", "{\"k\": 2}"]);
    }

    #[test]
    fn refuses_what_is_not_an_array() {
        for bad in ["", "{}", "[1,", "[1", "[,]"] {
            assert!(split_json_array(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn packs_one_record_per_payload_with_consecutive_ids() {
        let spec = BulkSpec {
            name: "Job".into(),
            header: Header { attempt: 0, max_attempts: 3, priority: 0 },
            options: vec![],
            delay_ms: 0,
            at_ms: None,
            max_payload: 100,
            enqueued_ms: 1,
        };
        let mut ids = IdGen::default();
        let c = prepare_chunk(&spec, &mut ids, br#"[{"i":0},{"i":1}]"#, 0).unwrap().unwrap();
        let (jobs, mark) = c.pack();
        let r: Vec<Record> = jobs.iter().map(|j| Record::unpack(&j.record).unwrap()).collect();
        assert_eq!(r[1].payload, br#"{"i":1}"#);
        assert_eq!(r[1].id, c.range.id(1));
        assert_eq!(mark.last_seq, c.range.first + 1);
        // Packed on the fly (the bulk path), any sub-range gives the same records.
        let mut direct = vec![];
        c.records(0, 1, |r| direct.push(r.to_vec()));
        c.records(1, 2, |r| direct.push(r.to_vec()));
        assert_eq!(direct, jobs.iter().map(|j| j.record.clone()).collect::<Vec<_>>());
        assert!(c.is_plain());
        let err = prepare_chunk(&spec, &mut ids, format!("[1,\"{}\"]", "x".repeat(200)).as_bytes(), 40).err().unwrap();
        assert!(err.to_string().contains("payload at index 41"), "{err}");
    }
}
