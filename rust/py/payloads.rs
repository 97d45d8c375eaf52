//! Bulk payloads straight from Python objects to JSON, in one pass over the list: no JSON
//! array to split again, no Python bytes object per chunk. Covers the plain JSON types (exact
//! dict with str keys, list, tuple, str, int within 64 bits, finite float, bool, None); any
//! other payload goes whole to the fallback (`serde.dumps`, orjson with the project's
//! options), so what is accepted, and how it reads back, is exactly what one dispatch does:
//! a NaN or an infinity too, which the fallback refuses with its path. The bytes are orjson's,
//! byte for byte: tests/test_payload_fuzz.py compares them over 100,000 generated payloads.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList, PyType};
use std::ptr::addr_of_mut;

/// orjson refuses deeper nesting of lists and dicts (it counts no tuple); such a payload goes
/// to the fallback, which decides.
const MAX_DEPTH: u32 = 254;

/// Appends payloads `range` of `list` to `out` as JSON, returning each one's byte span. A
/// payload outside the plain types is serialized by `fallback(payload)`; its error (a
/// `TypeError` naming the problem) is raised with the payload's index in the whole dispatch
/// (`first_index` is that of `range.start`).
pub fn serialize_list(
    list: &Bound<'_, PyList>,
    range: std::ops::Range<usize>,
    fallback: &Bound<'_, PyAny>,
    first_index: u64,
    out: &mut Vec<u8>,
) -> PyResult<Vec<(usize, usize)>> {
    let mut spans = Vec::with_capacity(range.len());
    for (k, i) in range.enumerate() {
        let item = list.get_item(i)?;
        let start = out.len();
        // SAFETY: the GIL is held and `item` is a live reference for the whole call; the
        // writer only reads objects and runs no Python code.
        if !unsafe { write_value(item.as_ptr(), out, 0) } {
            out.truncate(start);
            let bytes = fallback.call1((&item,)).map_err(|e| at_index(list.py(), e, first_index + k as u64))?;
            out.extend_from_slice(bytes.cast::<pyo3::types::PyBytes>()?.as_bytes());
        }
        spans.push((start, out.len()));
    }
    Ok(spans)
}

/// `_core._serialize_payloads(payloads, fallback)`: each payload serialized as
/// `BulkWriter.stage_payloads` serializes it, as bytes. For the differential test against
/// orjson (tests/test_payload_fuzz.py), which needs no Redis: not part of the API.
#[pyfunction]
#[pyo3(name = "_serialize_payloads")]
pub fn serialize_payloads<'py>(payloads: &Bound<'py, PyList>, fallback: &Bound<'py, PyAny>) -> PyResult<Vec<Bound<'py, PyBytes>>> {
    let mut out = Vec::new();
    let spans = serialize_list(payloads, 0..payloads.len(), fallback, 0, &mut out)?;
    Ok(spans.into_iter().map(|(a, b)| PyBytes::new(payloads.py(), &out[a..b])).collect())
}

/// `_core._dumps_plain(value)`: `value` as JSON if it holds only the plain types (those of
/// the bulk path, finite floats only), else None: `serde.dumps` writes one dispatch's payload
/// or a job's result with this first, and hands anything else to orjson.
#[pyfunction]
#[pyo3(name = "_dumps_plain")]
pub fn dumps_plain<'py>(value: &Bound<'py, PyAny>) -> Option<Bound<'py, PyBytes>> {
    thread_local! {
        /// One buffer per thread, reused: no allocation per call but the bytes object.
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(1024));
    }
    BUF.with_borrow_mut(|out| {
        out.clear();
        // SAFETY: the GIL is held and `value` is a live reference for the whole call; the
        // writer only reads objects and runs no Python code (so nothing can call back in).
        let done = unsafe { write_value(value.as_ptr(), out, 0) };
        let bytes = done.then(|| PyBytes::new(value.py(), out));
        if out.capacity() > 1 << 16 {
            *out = Vec::with_capacity(1024); // a large payload's buffer is not kept
        }
        bytes
    })
}

/// `_core._surely_finite(data, value)`: true when `data`, orjson's output for `value`, surely
/// hides no NaN or infinity (orjson writes them as null, as it writes None): it has no `null`
/// in it, or `value` holds no non-finite float, as a key or a value, and nothing but the JSON
/// types (dicts, lists and their subclasses, tuples, str, int, bool, None, float) and the
/// types orjson writes with no float inside (str and int subclasses, datetime, date, time,
/// UUID). False otherwise (a NaN, or an enum, dataclass, numpy value...), when `serde.dumps`
/// walks the value itself to find the bad float, if any. This costs a single dispatch a few
/// tens of ns; in Python the byte search alone costs more than orjson's serialization of a
/// small dict, and the walk of a payload with a None in it a µs or more.
#[pyfunction]
#[pyo3(name = "_surely_finite")]
pub fn surely_finite(data: &[u8], value: &Bound<'_, PyAny>) -> bool {
    static NULL: std::sync::LazyLock<memchr::memmem::Finder<'static>> = std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"null"));
    if NULL.find(data).is_none() {
        return true;
    }
    static LEAVES: PyOnceLock<[Py<PyType>; 4]> = PyOnceLock::new();
    let py = value.py();
    let Ok(leaves) = LEAVES.get_or_try_init(py, || -> PyResult<_> {
        let (datetime, uuid) = (py.import("datetime")?, py.import("uuid")?);
        let ty = |m: &Bound<'_, PyModule>, name: &str| -> PyResult<Py<PyType>> { Ok(m.getattr(name)?.cast_into::<PyType>()?.unbind()) };
        Ok([ty(&datetime, "datetime")?, ty(&datetime, "date")?, ty(&datetime, "time")?, ty(&uuid, "UUID")?])
    }) else {
        return false; // the walk in Python decides
    };
    let walk = FiniteWalk { leaves: leaves.each_ref().map(|t| t.as_ptr() as *mut ffi::PyTypeObject) };
    // SAFETY: the GIL is held and `value` is a live reference for the whole call; the walk
    // only reads objects and runs no Python code.
    unsafe { walk.value(value.as_ptr(), 0) }
}

/// The walk of `surely_finite`.
struct FiniteWalk {
    /// Types with no float inside: datetime, date, time, UUID.
    leaves: [*mut ffi::PyTypeObject; 4],
}

impl FiniteWalk {
    /// For a scalar, whether it is finite; None for a container or an unknown type. The plain
    /// types are checked first, inlined into the loops: most items are, with no call.
    ///
    /// # Safety
    /// The GIL is held and `p` is a live object.
    #[inline(always)]
    unsafe fn scalar(&self, p: *mut ffi::PyObject) -> Option<bool> {
        let t = ffi::Py_TYPE(p);
        if t == addr_of_mut!(ffi::PyUnicode_Type)
            || t == addr_of_mut!(ffi::PyLong_Type)
            || p == ffi::Py_None()
            || t == addr_of_mut!(ffi::PyBool_Type)
        {
            Some(true)
        } else if t == addr_of_mut!(ffi::PyFloat_Type) {
            Some(ffi::PyFloat_AsDouble(p).is_finite())
        } else {
            self.other_scalar(t)
        }
    }

    #[cold]
    unsafe fn other_scalar(&self, t: *mut ffi::PyTypeObject) -> Option<bool> {
        let subclass = ffi::Py_TPFLAGS_LONG_SUBCLASS | ffi::Py_TPFLAGS_UNICODE_SUBCLASS;
        (self.leaves.contains(&t) || ffi::PyType_GetFlags(t) & subclass != 0).then_some(true)
    }

    /// # Safety
    /// The GIL is held and `p` is a live object.
    unsafe fn value(&self, p: *mut ffi::PyObject, depth: u32) -> bool {
        if let Some(finite) = self.scalar(p) {
            return finite;
        }
        if depth >= MAX_DEPTH {
            return false; // deeper than orjson goes but through tuples: left to the walk in Python
        }
        let flags = ffi::PyType_GetFlags(ffi::Py_TYPE(p));
        if flags & ffi::Py_TPFLAGS_DICT_SUBCLASS != 0 {
            let (mut pos, mut key, mut value) = (0, std::ptr::null_mut(), std::ptr::null_mut());
            while ffi::PyDict_Next(p, &mut pos, &mut key, &mut value) != 0 {
                // A key is a scalar (a tuple key, which orjson refuses, is not).
                if self.scalar(key) != Some(true) || !self.scalar(value).unwrap_or_else(|| self.value(value, depth + 1)) {
                    return false;
                }
            }
            return true;
        }
        let list = flags & ffi::Py_TPFLAGS_LIST_SUBCLASS != 0;
        if list || is(p, addr_of_mut!(ffi::PyTuple_Type)) {
            let n = if list { ffi::PyList_Size(p) } else { ffi::PyTuple_Size(p) };
            for i in 0..n {
                let item = if list { ffi::PyList_GetItem(p, i) } else { ffi::PyTuple_GetItem(p, i) };
                if item.is_null() {
                    ffi::PyErr_Clear(); // out of range: cannot happen, nothing here shrinks it
                    return false;
                }
                if !self.scalar(item).unwrap_or_else(|| self.value(item, depth + 1)) {
                    return false;
                }
            }
            return true;
        }
        false
    }
}

fn at_index(py: Python<'_>, e: PyErr, index: u64) -> PyErr {
    let msg = format!("payload at index {index}: {}", e.value(py));
    if e.is_instance_of::<pyo3::exceptions::PyTypeError>(py) {
        pyo3::exceptions::PyTypeError::new_err(msg)
    } else if e.is_instance_of::<pyo3::exceptions::PyValueError>(py) {
        pyo3::exceptions::PyValueError::new_err(msg)
    } else {
        e
    }
}

fn is(p: *mut ffi::PyObject, t: *mut ffi::PyTypeObject) -> bool {
    // SAFETY: `p` is a live object (see callers).
    unsafe { ffi::Py_TYPE(p) == t }
}

/// Writes `p` as JSON; false (with `out` partly written) for anything outside the plain
/// types, which the caller hands to the fallback.
///
/// # Safety
/// The GIL is held and `p` is a live object.
unsafe fn write_value(p: *mut ffi::PyObject, out: &mut Vec<u8>, depth: u32) -> bool {
    if is(p, addr_of_mut!(ffi::PyUnicode_Type)) {
        return write_str(p, out);
    }
    if is(p, addr_of_mut!(ffi::PyLong_Type)) {
        let mut overflow = 0;
        let v = ffi::PyLong_AsLongLongAndOverflow(p, &mut overflow);
        if overflow != 0 {
            return false;
        }
        out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
        return true;
    }
    if is(p, addr_of_mut!(ffi::PyDict_Type)) {
        if depth >= MAX_DEPTH {
            return false;
        }
        out.push(b'{');
        let (mut pos, mut key, mut value) = (0, std::ptr::null_mut(), std::ptr::null_mut());
        let mut first = true;
        while ffi::PyDict_Next(p, &mut pos, &mut key, &mut value) != 0 {
            if !is(key, addr_of_mut!(ffi::PyUnicode_Type)) {
                return false; // orjson's non-str keys have rules of their own
            }
            if !first {
                out.push(b',');
            }
            first = false;
            if !write_str(key, out) {
                return false;
            }
            out.push(b':');
            if !write_value(value, out, depth + 1) {
                return false;
            }
        }
        out.push(b'}');
        return true;
    }
    let list = is(p, addr_of_mut!(ffi::PyList_Type));
    if list || is(p, addr_of_mut!(ffi::PyTuple_Type)) {
        if depth >= MAX_DEPTH {
            return false;
        }
        out.push(b'[');
        let n = if list { ffi::PyList_Size(p) } else { ffi::PyTuple_Size(p) };
        for i in 0..n {
            if i > 0 {
                out.push(b',');
            }
            let item = if list { ffi::PyList_GetItem(p, i) } else { ffi::PyTuple_GetItem(p, i) };
            if item.is_null() {
                ffi::PyErr_Clear(); // out of range: cannot happen, nothing here shrinks it
                return false;
            }
            if !write_value(item, out, depth + 1) {
                return false;
            }
        }
        out.push(b']');
        return true;
    }
    if p == ffi::Py_None() {
        out.extend_from_slice(b"null");
        return true;
    }
    if p == ffi::Py_True() {
        out.extend_from_slice(b"true");
        return true;
    }
    if p == ffi::Py_False() {
        out.extend_from_slice(b"false");
        return true;
    }
    if is(p, addr_of_mut!(ffi::PyFloat_Type)) {
        let v = ffi::PyFloat_AsDouble(p);
        if !v.is_finite() {
            return false; // the fallback refuses it (orjson alone would write null)
        }
        let mut digits = ryu::Buffer::new();
        let text = digits.format_finite(v).as_bytes();
        // orjson writes a positive exponent with its sign: 1e+16.
        match text.iter().position(|&c| c == b'e') {
            Some(e) if text.get(e + 1) != Some(&b'-') => {
                out.extend_from_slice(&text[..=e]);
                out.push(b'+');
                out.extend_from_slice(&text[e + 1..]);
            }
            _ => out.extend_from_slice(text),
        }
        return true;
    }
    false
}

/// A str as a JSON string, escaped as orjson escapes it; false for a str that is not valid
/// UTF-8 (lone surrogates), which the fallback refuses with its own message.
///
/// # Safety
/// The GIL is held and `p` is a live str.
unsafe fn write_str(p: *mut ffi::PyObject, out: &mut Vec<u8>) -> bool {
    let mut size: ffi::Py_ssize_t = 0;
    let data = ffi::PyUnicode_AsUTF8AndSize(p, &mut size);
    if data.is_null() {
        ffi::PyErr_Clear();
        return false;
    }
    let s = std::slice::from_raw_parts(data as *const u8, size as usize);
    out.reserve(s.len() + 2);
    out.push(b'"');
    // Most strings need no escape: one check over all bytes, with no early exit so that it
    // compiles to vector compares, then one copy.
    if !s.iter().fold(false, |any, &c| any | (c < 0x20) | (c == b'"') | (c == b'\\')) {
        out.extend_from_slice(s);
        out.push(b'"');
        return true;
    }
    let mut from = 0;
    for (i, &c) in s.iter().enumerate() {
        if c >= 0x20 && c != b'"' && c != b'\\' {
            continue;
        }
        out.extend_from_slice(&s[from..i]);
        from = i + 1;
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(c >> 4) as usize]);
                out.push(HEX[(c & 15) as usize]);
            }
        }
    }
    out.extend_from_slice(&s[from..]);
    out.push(b'"');
    true
}
