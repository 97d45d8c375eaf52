//! Bulk dispatch: a chunk of payloads arrives serialized one after another (straight from
//! Python objects, `py::payloads`); the engine checks their sizes, takes a run of consecutive
//! ids, and (on the I/O runtime) packs one record per payload. Writing the chunks is the
//! store's ordinary enqueue.

use crate::error::{Error, Result};
use crate::record::{pack_into, packed_len, run_bounds, Header, IdGen, IdRange, Record, PRODUCER_LEN};
use crate::store::{NewJob, Watermark};

/// What every job of one bulk dispatch shares.
#[derive(Debug, Clone)]
pub struct BulkSpec {
    pub name: String,
    pub header: Header,
    pub options: Vec<u8>,
    pub delay_us: u64,
    pub at_us: Option<u64>,
    pub max_payload: usize,
    pub enqueued_ms: u64,
}

/// One chunk, checked and given its ids; packed on the I/O runtime (`Store::pack_chunk`), so
/// packing overlaps Python's serializing of the next chunk instead of holding up the caller.
pub struct Chunk {
    spec: BulkSpec,
    payloads: Vec<u8>,
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
        self.spec.delay_us == 0 && self.spec.at_us.is_none() && self.spec.header.priority == 0
    }

    pub fn watermark(&self) -> Watermark {
        Watermark { producer: self.range.producer.clone(), last_seq: self.range.last_seq(), guard: Some(self.range.first) }
    }

    /// Its ids as one run for the events stream (store/redis/mod.rs `id_runs`'s shape).
    pub fn id_runs(&self) -> String {
        let name = serde_json::to_string(&self.spec.name).unwrap_or_else(|_| "null".into());
        format!("[[\"{}\",{},{},{name}]]", self.range.producer, self.range.first, self.len())
    }

    /// The chunk's records cut into list elements (`record::run_bounds`), sized by the longest
    /// id a record can have.
    pub fn run_bounds(&self) -> Vec<usize> {
        let fixed = packed_len("", &self.spec.name, &self.spec.options, b"") + PRODUCER_LEN + 1 + 8;
        run_bounds(self.len(), |i| fixed + self.spans[i].1 - self.spans[i].0)
    }

    /// Calls `f(id, payload)` for jobs `from..to`: `<producer>-` written once, then only the
    /// sequence number per job (itoa: no formatter).
    fn each(&self, from: usize, to: usize, mut f: impl FnMut(&str, &[u8])) {
        let mut id = format!("{}-", self.range.producer);
        let prefix = id.len();
        let mut digits = itoa::Buffer::new();
        for (k, (s, e)) in self.spans[from..to].iter().enumerate() {
            id.truncate(prefix);
            id.push_str(digits.format(self.range.first + (from + k) as u64));
            f(&id, &self.payloads[*s..*e]);
        }
    }

    /// Packs records `from..to` one after another into `out`, each after `frame(out, its
    /// length)` and before `end`: the bulk path frames them as command arguments in place.
    pub fn pack_records(&self, from: usize, to: usize, out: &mut Vec<u8>, mut frame: impl FnMut(&mut Vec<u8>, usize), end: &[u8]) {
        let spec = &self.spec;
        self.each(from, to, |id, payload| {
            frame(out, packed_len(id, &spec.name, &spec.options, payload));
            pack_into(out, spec.header, id, &spec.name, spec.enqueued_ms, &spec.options, payload);
            out.extend_from_slice(end);
        });
    }

    /// Records `from..to`, each handed to `out` (packed one after another in one buffer).
    pub fn records(&self, from: usize, to: usize, mut out: impl FnMut(&[u8])) {
        let mut all = Vec::with_capacity(self.payloads.len() + (to - from) * 64);
        let mut starts = Vec::with_capacity(to - from + 1);
        self.pack_records(from, to, &mut all, |buf, _| starts.push(buf.len()), b"");
        starts.push(all.len());
        for w in starts.windows(2) {
            out(&all[w[0]..w[1]]);
        }
    }

    /// Bytes of payload in the chunk, to size buffers.
    pub fn payload_bytes(&self) -> usize {
        self.payloads.len()
    }

    /// Each record in a buffer of its own, sized to it (as the in-memory store keeps them).
    pub fn record_vecs(&self) -> Vec<Vec<u8>> {
        let spec = &self.spec;
        let mut out = Vec::with_capacity(self.len());
        self.each(0, self.len(), |id, payload| {
            let mut record = Vec::with_capacity(packed_len(id, &spec.name, &spec.options, payload));
            pack_into(&mut record, spec.header, id, &spec.name, spec.enqueued_ms, &spec.options, payload);
            out.push(record);
        });
        out
    }

    /// One job per payload, under the chunk's run of ids (for `enqueue`: delays, priorities).
    pub fn pack(&self) -> (Vec<NewJob>, Watermark) {
        let spec = &self.spec;
        let jobs = self
            .record_vecs()
            .into_iter()
            .map(|record| NewJob {
                id: String::from_utf8_lossy(Record::peek_id(&record)).into_owned(),
                custom_id: false,
                delay_us: spec.delay_us,
                at_us: spec.at_us,
                record,
                dedup: None,
                group: None,
            })
            .collect();
        (jobs, self.watermark())
    }
}

/// Checks the size of each payload of a chunk, serialized one after another into `buf`
/// (`spans` are their byte ranges), and takes a run of ids for them. `first_index` is the
/// index of the chunk's first payload in the whole dispatch, for errors.
pub fn prepare_payloads(
    spec: &BulkSpec,
    ids: &mut IdGen,
    buf: Vec<u8>,
    spans: Vec<(usize, usize)>,
    first_index: u64,
) -> Result<Option<Chunk>> {
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
    Ok(Some(Chunk { spec: spec.clone(), payloads: buf, spans, range }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Record;

    #[test]
    fn packs_one_record_per_payload_with_consecutive_ids() {
        let spec = BulkSpec {
            name: "Job".into(),
            header: Header { attempt: 0, max_attempts: 3, priority: 0 },
            options: vec![],
            delay_us: 0,
            at_us: None,
            max_payload: 100,
            enqueued_ms: 1,
        };
        let mut ids = IdGen::default();
        let c = prepare_payloads(&spec, &mut ids, br#"{"i":0}{"i":1}"#.to_vec(), vec![(0, 7), (7, 14)], 0).unwrap().unwrap();
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
        assert_eq!(c.record_vecs(), direct);
        assert!(c.is_plain());
        let long = format!("1\"{}\"", "x".repeat(200)).into_bytes();
        let err = prepare_payloads(&spec, &mut ids, long, vec![(0, 1), (1, 203)], 40).err().unwrap();
        assert!(err.to_string().contains("payload at index 41"), "{err}");
        assert!(prepare_payloads(&spec, &mut ids, vec![], vec![], 0).unwrap().is_none());
    }
}
