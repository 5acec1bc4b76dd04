//! Qryptify's compiled core: the per-record work of the hot paths, on whole batches.
//!
//! Every function here has a pure-Python twin that stays the fallback and the oracle (named in
//! each docstring); property tests in tests/unit/native/ hold the two byte-identical. Inputs
//! are bytes from Kafka, files and the network: every read is bounds-checked (`get`, no
//! `unsafe`), and anything outside the common shape is handed back to the Python path, which
//! alone decides verdicts for unusual records.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use std::collections::HashMap;

mod archive;
mod rest;
mod ts;
mod ws;

use ts::{month_close, push_int, push_ts_text};

/// Open times outside [2010-01-01, 2200-01-01): qryptify.sink.batch.MIN_OPEN_MS / MAX_OPEN_MS.
pub(crate) const MIN_OPEN_MS: i64 = 1_262_304_000_000;
pub(crate) const MAX_OPEN_MS: i64 = 7_258_118_400_000;
const DAY_MS: i64 = 86_400_000;

/// A pair the Python exact path validated (``StagedBatch._learn_pair``).
struct Pair {
    key: Py<PyBytes>,
    symbol: Vec<u8>,
    interval: Vec<u8>,
    symbol_str: Py<PyString>,
    interval_str: Py<PyString>,
    interval_ms: i64, // 0 for 1M (calendar months)
}

/// One record's fast-path result: open time, the ingested_at varint's range, the COPY line.
struct Staged {
    open_time: i64,
    ingested: (usize, usize),
    line: Vec<u8>,
}

/// A one-byte Avro string length at `p` (zigzag 2n < 0x80): (start, end) of the string.
#[inline]
fn short_string(d: &[u8], p: usize) -> Option<(usize, usize)> {
    let b = *d.get(p)?;
    if b & 0x81 != 0 {
        return None;
    }
    let start = p + 1;
    let end = start + (b >> 1) as usize;
    if end > d.len() {
        return None;
    }
    Some((start, end))
}

/// The zigzag varint time at `p`: (ms, width), within the range the Python twin accepts.
#[inline]
fn read_time(d: &[u8], p: usize) -> Option<(i64, usize)> {
    let mut n: u64 = 0;
    let mut shift = 0u32;
    let mut q = p;
    loop {
        let b = *d.get(q)?;
        q += 1;
        n |= u64::from(b & 0x7F) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            break;
        }
        if shift >= 63 {
            return None;
        }
    }
    let ms = ((n >> 1) as i64) ^ -((n & 1) as i64);
    if !(MIN_OPEN_MS..MAX_OPEN_MS + 100 * DAY_MS).contains(&ms) {
        return None;
    }
    Some((ms, q - p))
}

/// `[0-9]{1,30}(\.[0-9]{1,30})?`: the plain unsigned decimals the fast path writes unchecked.
#[inline]
fn is_plain(s: &[u8]) -> bool {
    let int_len = s.iter().take_while(|c| c.is_ascii_digit()).count();
    if !(1..=30).contains(&int_len) {
        return false;
    }
    if int_len == s.len() {
        return true;
    }
    let frac = &s[int_len..];
    frac[0] == b'.' && (2..=31).contains(&frac.len()) && frac[1..].iter().all(u8::is_ascii_digit)
}

#[inline]
fn as_f64(s: &[u8]) -> f64 {
    // is_plain held: ASCII digits and at most one dot; Rust's parse is correctly rounded, as is
    // CPython's float().
    std::str::from_utf8(s)
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Twin of ``StagedBatch._fast`` (qryptify/sink/batch.py): one current-schema Kline body
/// (after the 10-byte single-object header) straight to its COPY line, or None where the
/// Python exact path must decide.
fn stage_fast(d: &[u8], pair: &Pair) -> Option<Staged> {
    let (s, e) = short_string(d, 10)?;
    if d[s..e] != pair.symbol[..] {
        return None;
    }
    let (s, e) = short_string(d, e)?;
    if d[s..e] != pair.interval[..] {
        return None;
    }
    let (ot, w) = read_time(d, e)?;
    let mut p = e + w;
    let (ct, w) = read_time(d, p)?;
    p += w;
    let mut fields: [(usize, usize); 8] = [(0, 0); 8];
    for f in fields.iter_mut().take(6) {
        let (s, e) = short_string(d, p)?;
        *f = (s, e);
        p = e;
    }
    // trades: non-negative, at most 3 bytes (< 2**20) on this path
    let b = *d.get(p)?;
    p += 1;
    let mut n = u64::from(b & 0x7F);
    if b & 0x80 != 0 {
        let b = *d.get(p)?;
        p += 1;
        n |= u64::from(b & 0x7F) << 7;
        if b & 0x80 != 0 {
            let b = *d.get(p)?;
            p += 1;
            if b & 0x80 != 0 {
                return None;
            }
            n |= u64::from(b) << 14;
        }
    }
    if n & 1 != 0 {
        return None;
    }
    for f in fields.iter_mut().skip(6) {
        let (s, e) = short_string(d, p)?;
        *f = (s, e);
        p = e;
    }
    let b = *d.get(p)?; // the source enum: index 0..2, zigzag 0, 2, 4
    if b > 4 || b & 1 != 0 {
        return None;
    }
    let ingested = (p + 1, d.len());
    let width = d.len() - (p + 1);
    if !(1..10).contains(&width) {
        return None;
    }
    let raw = &d[p + 1..];
    if raw[..width - 1].iter().any(|c| c & 0x80 == 0) || raw[width - 1] & 0x80 != 0 {
        return None;
    }
    let expected_close = if pair.interval_ms != 0 {
        pair.interval_ms + ot - 1
    } else {
        month_close(ot)
    };
    if ct != expected_close || !(MIN_OPEN_MS..MAX_OPEN_MS).contains(&ot) {
        return None;
    }
    let text = |i: usize| &d[fields[i].0..fields[i].1];
    let (o, h, lo, c) = (text(0), text(1), text(2), text(3));
    if !fields.iter().all(|&(s, e)| is_plain(&d[s..e])) {
        return None;
    }
    // Floats prove low <= open, close <= high for the exact decimals (rounding to the nearest
    // double is monotonic); a tie proves it only for identical spellings.
    let (fo, fh, fl, fc) = (as_f64(o), as_f64(h), as_f64(lo), as_f64(c));
    if !(fl <= fo && fo <= fh && fl <= fc && fc <= fh) {
        return None;
    }
    if (fo == fl && o != lo)
        || (fo == fh && o != h)
        || (fc == fl && c != lo)
        || (fc == fh && c != h)
    {
        return None;
    }
    let mut line =
        Vec::with_capacity(96 + (e - 10) + fields.iter().map(|f| f.1 - f.0).sum::<usize>());
    push_ts_text(&mut line, ot);
    for part in [&pair.symbol[..], &pair.interval[..], o, h, lo, c, text(4)] {
        line.push(b'\t');
        line.extend_from_slice(part);
    }
    line.push(b'\t');
    push_ts_text(&mut line, ct);
    line.push(b'\t');
    line.extend_from_slice(text(5));
    line.push(b'\t');
    push_int(&mut line, (n >> 1) as i64);
    line.push(b'\t');
    line.extend_from_slice(text(6));
    line.push(b'\t');
    line.extend_from_slice(text(7));
    line.push(b'\n');
    Some(Staged {
        open_time: ot,
        ingested,
        line,
    })
}

/// The sink's staging step for whole batches of consumed records: twin of the Python loop in
/// ``StagedBatch.add``, writing into the same dicts so both paths can share one batch.
#[pyclass(module = "qryptify_native")]
struct KlineStager {
    prefix: Vec<u8>,
    pairs: HashMap<Vec<u8>, Pair>,
}

#[pymethods]
impl KlineStager {
    #[new]
    fn new(prefix: &[u8]) -> Self {
        KlineStager {
            prefix: prefix.to_vec(),
            pairs: HashMap::new(),
        }
    }

    /// Remember a pair the exact path validated (``StagedBatch._learn_pair``).
    fn learn(&mut self, py: Python<'_>, symbol: &str, interval: &str, interval_ms: i64) {
        let key = format!("{symbol}|{interval}").into_bytes();
        let pair = Pair {
            key: PyBytes::new(py, &key).unbind(),
            symbol: symbol.as_bytes().to_vec(),
            interval: interval.as_bytes().to_vec(),
            symbol_str: PyString::new(py, symbol).unbind(),
            interval_str: PyString::new(py, interval).unbind(),
            interval_ms,
        };
        // A field that is empty or holds a tab or newline never passes the Python twin's line
        // check; such a pair never takes the fast path.
        let clean = |s: &[u8]| !s.is_empty() && !s.iter().any(|c| *c == b'\t' || *c == b'\n');
        if clean(&pair.symbol) && clean(&pair.interval) {
            self.pairs.insert(key, pair);
        }
    }

    fn clear_pairs(&mut self) {
        self.pairs.clear();
    }

    /// Stage `records` (objects with topic/partition/offset/key/value methods) into the
    /// Python dicts of a ``StagedBatch``; records the fast path cannot take go, in order, to
    /// `add_exact(record, tp, offset, value)`. Returns how many records were below their
    /// partition's floor (already written) and skipped.
    #[allow(clippy::too_many_arguments)]
    fn add(
        slf: &Bound<'_, Self>,
        py: Python<'_>,
        records: &Bound<'_, PyAny>,
        floors: &Bound<'_, PyDict>,
        offsets: &Bound<'_, PyDict>,
        held: &Bound<'_, PyDict>,
        firsts: &Bound<'_, PyDict>,
        rows: &Bound<'_, PyDict>,
        add_exact: &Bound<'_, PyAny>,
    ) -> PyResult<usize> {
        let empty = PyString::new(py, "");
        let zero = 0i64.into_pyobject(py)?.into_any();
        let have_floors = !floors.is_empty();
        let mut skipped = 0usize;
        let mut last: Option<(Bound<'_, PyAny>, Bound<'_, PyAny>, Bound<'_, PyTuple>)> = None;
        for r in records.try_iter()? {
            let r = r?;
            let topic = r.call_method0(intern!(py, "topic"))?;
            let topic = if topic.is_truthy()? {
                topic
            } else {
                empty.clone().into_any()
            };
            let partition = r.call_method0(intern!(py, "partition"))?;
            let partition = if partition.is_truthy()? {
                partition
            } else {
                zero.clone()
            };
            let offset_obj = r.call_method0(intern!(py, "offset"))?;
            let offset: i64 = if offset_obj.is_truthy()? {
                offset_obj.extract()?
            } else {
                0
            };
            let tp = match &last {
                Some((t, p, tp)) if t.eq(&topic)? && p.eq(&partition)? => tp.clone(),
                _ => {
                    let tp = PyTuple::new(py, [topic.clone(), partition.clone()])?;
                    last = Some((topic, partition.clone(), tp.clone()));
                    tp
                }
            };
            if have_floors {
                if let Some(floor) = floors.get_item(&partition)? {
                    if offset < floor.extract::<i64>()? {
                        skipped += 1;
                        continue;
                    }
                }
            }
            let next = match offsets.get_item(&tp)? {
                Some(v) => v.extract::<i64>()?,
                None => 0,
            };
            if offset >= next {
                offsets.set_item(&tp, offset + 1)?;
            }
            match held.get_item(&tp)? {
                None => {
                    held.set_item(&tp, 1)?;
                    firsts.set_item(&tp, offset)?;
                }
                Some(count) => held.set_item(&tp, count.extract::<i64>()? + 1)?,
            }
            let value = r.call_method0(intern!(py, "value"))?;
            if let Ok(bytes) = value.downcast::<PyBytes>() {
                // Borrowed only here: add_exact may learn a pair (a mutable borrow).
                let this = slf.borrow();
                let d = bytes.as_bytes();
                if d.starts_with(&this.prefix) {
                    let key = r.call_method0(intern!(py, "key"))?;
                    let pair = match key.downcast::<PyBytes>() {
                        Ok(k) => this.pairs.get(k.as_bytes()),
                        Err(_) => None,
                    };
                    if let Some(staged) =
                        pair.and_then(|pair| stage_fast(d, pair).map(|s| (pair, s)))
                    {
                        let (pair, s) = staged;
                        let ident = PyTuple::new(
                            py,
                            [
                                pair.key.bind(py).clone().into_any(),
                                s.open_time.into_pyobject(py)?.into_any(),
                            ],
                        )?;
                        let newer = match rows.get_item(&ident)? {
                            None => true,
                            Some(seen) => offset >= seen.get_item(1)?.extract::<i64>()?,
                        };
                        if newer {
                            let row = PyTuple::new(
                                py,
                                [
                                    pair.symbol_str.bind(py).clone().into_any(),
                                    pair.interval_str.bind(py).clone().into_any(),
                                    s.open_time.into_pyobject(py)?.into_any(),
                                    PyBytes::new(py, &s.line).into_any(),
                                ],
                            )?;
                            let entry = PyTuple::new(
                                py,
                                [
                                    tp.clone().into_any(),
                                    offset.into_pyobject(py)?.into_any(),
                                    PyBytes::new(py, &d[s.ingested.0..s.ingested.1]).into_any(),
                                    row.into_any(),
                                    key.clone(),
                                    value.clone(),
                                ],
                            )?;
                            rows.set_item(ident, entry)?;
                        }
                        continue;
                    }
                }
            }
            add_exact.call1((r, tp, offset, value))?;
        }
        Ok(skipped)
    }

    /// Test seam: the fast path's verdict for each (key, value): None, or
    /// ((pair key, open time), raw ingested_at varint, (symbol, interval, open time, line)),
    /// as ``StagedBatch._fast`` returns it.
    fn fast_rows<'py>(
        &self,
        py: Python<'py>,
        items: Vec<(Option<Vec<u8>>, Vec<u8>)>,
    ) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for (key, d) in items {
            let pair = key.as_ref().and_then(|k| self.pairs.get(k));
            let staged = if d.starts_with(&self.prefix) {
                pair.and_then(|p| stage_fast(&d, p).map(|s| (p, s)))
            } else {
                None
            };
            match staged {
                None => out.append(py.None())?,
                Some((pair, s)) => {
                    let ident = (pair.key.bind(py).clone(), s.open_time);
                    let row = (
                        pair.symbol_str.bind(py).clone(),
                        pair.interval_str.bind(py).clone(),
                        s.open_time,
                        PyBytes::new(py, &s.line),
                    );
                    out.append((ident, PyBytes::new(py, &d[s.ingested.0..s.ingested.1]), row))?;
                }
            }
        }
        Ok(out)
    }
}

/// Twin of ``qryptify.sink.rows.ts_text`` for a batch of times (tests).
#[pyfunction]
fn ts_texts<'py>(py: Python<'py>, times: Vec<i64>) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    for ms in times {
        let mut v = Vec::with_capacity(26);
        push_ts_text(&mut v, ms);
        out.append(PyBytes::new(py, &v))?;
    }
    Ok(out)
}

#[pymodule]
fn qryptify_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<KlineStager>()?;
    m.add_function(wrap_pyfunction!(ts_texts, m)?)?;
    archive::register(m)?;
    rest::register(m)?;
    ws::register(m)?;
    Ok(())
}
