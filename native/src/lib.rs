//! Qryptify's compiled core: the per-record work of the hot paths, on whole batches.
//!
//! Every function here has a pure-Python twin that stays the fallback and the oracle (named in
//! each docstring); property tests in tests/unit/native/ hold the two byte-identical. Inputs
//! are bytes from Kafka, files and the network: every read is bounds-checked (`get`, no
//! `unsafe`), and anything outside the common shape is handed back to the Python path, which
//! alone decides verdicts for unusual records.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PySet, PyString, PyTuple};
use std::collections::HashMap;

mod archive;
mod copybin;
mod rest;
mod staged;
mod ts;
mod ws;

use staged::{NewRow, StagedRows};

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

/// One partition's bookkeeping during one `add` call, written to the Python dicts at its end.
struct Partition<'py> {
    topic: Bound<'py, PyAny>,
    partition: Bound<'py, PyAny>,
    tp: Bound<'py, PyTuple>,
    assigned: bool,
    floor: Option<i64>,
    next: i64,
    next_set: Option<i64>,
    held_before: Option<i64>,
    added: i64,
    first: i64,
    first_seq: usize,
}

#[allow(clippy::too_many_arguments)]
fn stage_records<'py>(
    slf: &Bound<'py, KlineStager>,
    py: Python<'py>,
    records: &Bound<'py, PyAny>,
    assigned: Option<&Bound<'py, PySet>>,
    floors: &Bound<'py, PyDict>,
    dicts: (&Bound<'py, PyDict>, &Bound<'py, PyDict>),
    rows: &Bound<'py, StagedRows>,
    add_exact: &Bound<'py, PyAny>,
    errors: Option<&Bound<'py, PyList>>,
    parts: &mut Vec<Partition<'py>>,
    counted: &mut usize,
) -> PyResult<(usize, usize)> {
    let empty = PyString::new(py, "");
    let zero = 0i64.into_pyobject(py)?.into_any();
    let have_floors = !floors.is_empty();
    let (mut taken, mut skipped) = (0usize, 0usize);
    let mut last: usize = usize::MAX;
    for r in records.try_iter()? {
        let r = r?;
        if let Some(errors) = errors {
            let err = r.call_method0(intern!(py, "error"))?;
            if !err.is_none() {
                errors.append(&r)?;
                continue;
            }
        }
        let topic = r.call_method0(intern!(py, "topic"))?;
        let partition = r.call_method0(intern!(py, "partition"))?;
        let same = |p: &Partition<'py>| -> PyResult<bool> {
            Ok((p.topic.is(&topic) || p.topic.eq(&topic)?) && p.partition.eq(&partition)?)
        };
        let k = if last < parts.len() && same(&parts[last])? {
            last
        } else {
            let mut found = None;
            for (i, p) in parts.iter().enumerate() {
                if same(p)? {
                    found = Some(i);
                    break;
                }
            }
            match found {
                Some(i) => i,
                None => {
                    parts.push(new_partition(
                        py, &topic, &partition, assigned, floors, dicts, &empty, &zero,
                    )?);
                    parts.len() - 1
                }
            }
        };
        last = k;
        let part = &mut parts[k];
        if !part.assigned {
            continue;
        }
        taken += 1;
        let offset: i64 = r
            .call_method0(intern!(py, "offset"))?
            .extract::<Option<i64>>()?
            .unwrap_or(0);
        if have_floors {
            if let Some(floor) = part.floor {
                if offset < floor {
                    skipped += 1;
                    continue;
                }
            }
        }
        if offset >= part.next {
            part.next = offset + 1;
            part.next_set = Some(offset + 1);
        }
        if part.added == 0 {
            part.first_seq = *counted;
            *counted += 1;
            part.first = offset;
        }
        part.added += 1;
        let tp = part.tp.clone();
        let value = r.call_method0(intern!(py, "value"))?;
        if stage_one(slf, py, &r, &tp, offset, &value, rows)? {
            continue;
        }
        add_exact.call1((r, tp, offset, value))?;
    }
    Ok((taken, skipped))
}

/// The fast path for one record: staged into `rows` (true), or false when the exact path must
/// decide. Twin of the fast branch of ``StagedBatch.add``.
fn stage_one<'py>(
    slf: &Bound<'py, KlineStager>,
    py: Python<'py>,
    r: &Bound<'py, PyAny>,
    tp: &Bound<'py, PyTuple>,
    offset: i64,
    value: &Bound<'py, PyAny>,
    rows: &Bound<'py, StagedRows>,
) -> PyResult<bool> {
    let Ok(bytes) = value.downcast::<PyBytes>() else {
        return Ok(false);
    };
    let this = slf.borrow();
    let d = bytes.as_bytes();
    if !d.starts_with(&this.prefix) {
        return Ok(false);
    }
    let key = r.call_method0(intern!(py, "key"))?;
    let Ok(k) = key.downcast::<PyBytes>() else {
        return Ok(false);
    };
    let Some(pair) = this.pairs.get(k.as_bytes()) else {
        return Ok(false);
    };
    let Some(s) = stage_fast(d, pair) else {
        return Ok(false);
    };
    let mut store = rows.borrow_mut();
    let index = match store.pair_of(k.as_bytes()) {
        Some(i) => i,
        None => store.add_pair((
            pair.key.bind(py).clone(),
            pair.symbol_str.bind(py).clone(),
            pair.interval_str.bind(py).clone(),
        )),
    };
    if store
        .seen_offset(index, s.open_time)
        .is_some_and(|seen| offset < seen)
    {
        return Ok(true);
    }
    store.put(
        index,
        NewRow {
            open_time: s.open_time,
            tp,
            offset,
            ingested: &d[s.ingested.0..s.ingested.1],
            line: &s.line,
            record_key: &key,
            value,
        },
    )?;
    Ok(true)
}

#[allow(clippy::too_many_arguments)]
fn new_partition<'py>(
    py: Python<'py>,
    topic: &Bound<'py, PyAny>,
    partition: &Bound<'py, PyAny>,
    assigned: Option<&Bound<'py, PySet>>,
    floors: &Bound<'py, PyDict>,
    (offsets, held): (&Bound<'py, PyDict>, &Bound<'py, PyDict>),
    empty: &Bound<'py, PyString>,
    zero: &Bound<'py, PyAny>,
) -> PyResult<Partition<'py>> {
    let is_assigned = match assigned {
        Some(set) => set.contains(PyTuple::new(py, [topic, partition])?)?,
        None => true,
    };
    let t = if topic.is_truthy()? {
        topic.clone()
    } else {
        empty.clone().into_any()
    };
    let p = if partition.is_truthy()? {
        partition.clone()
    } else {
        zero.clone()
    };
    let tp = PyTuple::new(py, [t, p.clone()])?;
    let floor = match floors.get_item(&p)? {
        Some(f) => Some(f.extract::<i64>()?),
        None => None,
    };
    let next = match offsets.get_item(&tp)? {
        Some(v) => v.extract::<i64>()?,
        None => 0,
    };
    let held_before = match held.get_item(&tp)? {
        Some(v) => Some(v.extract::<i64>()?),
        None => None,
    };
    Ok(Partition {
        topic: topic.clone(),
        partition: partition.clone(),
        tp,
        assigned: is_assigned,
        floor,
        next,
        next_set: None,
        held_before,
        added: 0,
        first: 0,
        first_seq: 0,
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

    /// Stage `records` (objects with topic/partition/offset/key/value methods: consumed
    /// ``confluent_kafka.Message``s or ``Record``s) into a ``StagedBatch``: rows into `rows`,
    /// per partition the next offset, the count held and the first offset into the dicts
    /// `offsets`, `held` and `firsts`; records the fast path cannot take go, in order, to
    /// `add_exact(record, tp, offset, value)`. Twin of the loop's ``_accept`` filter and
    /// ``StagedBatch.add``: with `errors` (a list), records whose ``error()`` is not None are
    /// appended to it and skipped; with `assigned` (a set of (topic, partition)), records of
    /// other partitions are skipped. Returns (records taken, of which below their partition's
    /// floor: already written, skipped).
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (records, assigned, floors, offsets, held, firsts, rows, add_exact, errors))]
    fn add(
        slf: &Bound<'_, Self>,
        py: Python<'_>,
        records: &Bound<'_, PyAny>,
        assigned: Option<&Bound<'_, PySet>>,
        floors: &Bound<'_, PyDict>,
        offsets: &Bound<'_, PyDict>,
        held: &Bound<'_, PyDict>,
        firsts: &Bound<'_, PyDict>,
        rows: &Bound<'_, StagedRows>,
        add_exact: &Bound<'_, PyAny>,
        errors: Option<&Bound<'_, PyList>>,
    ) -> PyResult<(usize, usize)> {
        let mut parts: Vec<Partition<'_>> = Vec::new();
        let mut counted = 0usize;
        let result = stage_records(
            slf,
            py,
            records,
            assigned,
            floors,
            (offsets, held),
            rows,
            add_exact,
            errors,
            &mut parts,
            &mut counted,
        );
        // What was staged stays staged (as on the Python path), also when add_exact raised.
        parts.sort_by_key(|p| p.first_seq);
        for p in parts.iter().filter(|p| p.added > 0) {
            if let Some(next) = p.next_set {
                offsets.set_item(&p.tp, next)?;
            }
            match p.held_before {
                None => {
                    held.set_item(&p.tp, p.added)?;
                    firsts.set_item(&p.tp, p.first)?;
                }
                Some(h) => held.set_item(&p.tp, h + p.added)?,
            }
        }
        result
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

    /// The indices from `start` of `values` (bodies keyed `key`) that the fast path does not
    /// take: only these need the Python exact path's verdict (``rejected_values``).
    fn fast_misses(
        &self,
        key: &[u8],
        values: &Bound<'_, PyList>,
        start: usize,
    ) -> PyResult<Vec<usize>> {
        let pair = self.pairs.get(key);
        let mut misses = Vec::new();
        for (i, value) in values.iter().enumerate().skip(start) {
            let taken = match (pair, value.downcast::<PyBytes>()) {
                (Some(p), Ok(b)) => {
                    let d = b.as_bytes();
                    d.starts_with(&self.prefix) && stage_fast(d, p).is_some()
                }
                _ => false,
            };
            if !taken {
                misses.push(i);
            }
        }
        Ok(misses)
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
    m.add_class::<StagedRows>()?;
    m.add_class::<staged::CopyRows>()?;
    m.add_function(wrap_pyfunction!(ts_texts, m)?)?;
    archive::register(m)?;
    copybin::register(m)?;
    rest::register(m)?;
    ws::register(m)?;
    Ok(())
}
