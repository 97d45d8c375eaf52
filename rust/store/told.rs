//! The fields of an events stream entry as common.lua's `emit` writes them (`n` names, `a`
//! attempts, `d` due or delay ms, `x` results, errors or progress as JSON lists), for the
//! stores that write them from Rust: in process and SQLite.

use crate::store::lenient as rec;

/// A JSON list of raw JSON values (`null` for the missing ones).
pub fn json_list<'a>(values: impl IntoIterator<Item = Option<&'a [u8]>>) -> Vec<u8> {
    let mut out = b"[".to_vec();
    for (k, v) in values.into_iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        out.extend_from_slice(v.filter(|v| !v.is_empty()).unwrap_or(b"null"));
    }
    out.push(b']');
    out
}

/// The `n` field of records' names.
pub fn names_field<'a>(recs: impl IntoIterator<Item = &'a [u8]>) -> (&'static str, Vec<u8>) {
    let names: Vec<&str> = recs.into_iter().map(rec::name).collect();
    ("n", serde_json::to_vec(&names).unwrap_or_default())
}

/// The jobs of one kind of outcome of an ack, told in one entry (as ack.lua does).
pub struct Told {
    pub kind: &'static str,
    pub ids: Vec<String>,
    names: Vec<String>,
    attempts: Vec<i64>,
    delays: Vec<i64>,
    x: Vec<Option<Vec<u8>>>,
}

impl Told {
    pub fn new(kind: &'static str) -> Told {
        Told { kind, ids: vec![], names: vec![], attempts: vec![], delays: vec![], x: vec![] }
    }

    pub fn add(&mut self, id: &str, record: &[u8], attempt: Option<i64>, delay: Option<i64>, x: Option<&[u8]>) {
        self.ids.push(id.to_string());
        self.names.push(rec::name(record).to_string());
        self.attempts.extend(attempt);
        self.delays.extend(delay);
        self.x.push(x.map(|x| x.to_vec()));
    }

    pub fn fields(&self) -> Vec<(&'static str, Vec<u8>)> {
        let mut f = vec![("n", serde_json::to_vec(&self.names).unwrap_or_default())];
        if !self.attempts.is_empty() {
            f.push(numbers_field("a", self.attempts.iter().copied()));
        }
        if !self.delays.is_empty() {
            f.push(numbers_field("d", self.delays.iter().copied()));
        }
        if self.x.iter().any(Option::is_some) {
            f.push(("x", json_list(self.x.iter().map(|x| x.as_deref()))));
        }
        f
    }
}

pub fn numbers_field(key: &'static str, values: impl IntoIterator<Item = i64>) -> (&'static str, Vec<u8>) {
    let v: Vec<i64> = values.into_iter().collect();
    (key, serde_json::to_vec(&v).unwrap_or_default())
}
