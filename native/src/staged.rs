//! The staged rows of one sink batch, held in Rust: twin of the Python dict
//! ``StagedBatch._rows`` ((pair key, open time) -> (partition, offset, ingested_at varint, row,
//! key, value)) with the same insertion order (a replaced row keeps its place, a deleted one
//! that comes again goes last), and of ``StagedBatch.split``'s pass over it. COPY lines live in
//! one buffer, so a batch's COPY text is that buffer when no row was replaced or dropped.

use pyo3::exceptions::{PyIndexError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PySet, PyString, PyTuple};
use std::collections::HashMap;

use crate::copybin;

/// A pair's names as the rows carry them.
struct PairNames {
    symbol: Py<PyString>,
    interval: Py<PyString>,
}

struct Entry {
    pair: usize,
    open_time: i64,
    tp: Py<PyTuple>,
    offset: i64,
    ingested: ([u8; 10], u8),
    line: (usize, usize),
    /// The line in binary COPY format, in `bin` (while there is one).
    bin: (usize, usize),
    key: PyObject,
    value: PyObject,
}

/// One staged candle, as the fast path or the exact path hands it over.
pub(crate) struct NewRow<'a, 'py> {
    pub open_time: i64,
    pub tp: &'a Bound<'py, PyTuple>,
    pub offset: i64,
    pub ingested: &'a [u8],
    pub line: &'a [u8],
    pub record_key: &'a Bound<'py, PyAny>,
    pub value: &'a Bound<'py, PyAny>,
}

/// What the exact path stages: (tp, offset, ingested_at varint, (symbol, interval, open time,
/// line), key, value).
type ExactRow<'py> = (
    Bound<'py, PyTuple>,
    i64,
    Vec<u8>,
    (Bound<'py, PyString>, Bound<'py, PyString>, i64, Vec<u8>),
    Bound<'py, PyAny>,
    Bound<'py, PyAny>,
);

/// (symbol, interval) of a pair key the rows have not seen yet.
pub(crate) type Names<'py> = (
    Bound<'py, PyBytes>,
    Bound<'py, PyString>,
    Bound<'py, PyString>,
);

#[pyclass(module = "qryptify_native")]
pub(crate) struct StagedRows {
    pairs: Vec<PairNames>,
    pair_index: HashMap<Vec<u8>, usize>,
    /// Per pair: open time -> index in `entries`.
    slots: Vec<HashMap<i64, usize>>,
    entries: Vec<Option<Entry>>,
    live: usize,
    text: Vec<u8>,
    /// Every line converted to binary COPY as it was staged (``copy_binary``'s twin, line by
    /// line, on the consumer thread), so the writer sends without converting; None from the
    /// first line the conversion does not take (the writer then converts, or sends text).
    bin: Option<Vec<u8>>,
    /// Every entry is live and the lines lie in `text` in entry order (nothing to gather).
    compact: bool,
    /// Split: the rows view and the origins read it; it takes no more rows.
    frozen: bool,
}

impl StagedRows {
    fn check_open(&self) -> PyResult<()> {
        if self.frozen {
            return Err(PyRuntimeError::new_err(
                "these rows were split: stage more into a copy()",
            ));
        }
        Ok(())
    }

    pub(crate) fn pair_of(&self, key: &[u8]) -> Option<usize> {
        self.pair_index.get(key).copied()
    }

    pub(crate) fn add_pair(&mut self, names: Names<'_>) -> usize {
        let (key, symbol, interval) = names;
        let index = self.pairs.len();
        self.pair_index.insert(key.as_bytes().to_vec(), index);
        self.pairs.push(PairNames {
            symbol: symbol.unbind(),
            interval: interval.unbind(),
        });
        self.slots.push(HashMap::new());
        index
    }

    /// The offset of the row staged for (pair, open time), if any.
    pub(crate) fn seen_offset(&self, pair: usize, open_time: i64) -> Option<i64> {
        let i = *self.slots[pair].get(&open_time)?;
        self.entries[i].as_ref().map(|e| e.offset)
    }

    /// Stage a row (the caller checked it is newer than what is staged): twin of
    /// ``rows[ident] = (tp, offset, ingested, row, key, value)``.
    pub(crate) fn put(&mut self, pair: usize, row: NewRow<'_, '_>) -> PyResult<()> {
        self.check_open()?;
        if row.ingested.len() > 10 {
            return Err(PyValueError::new_err(
                "ingested_at varint longer than 10 bytes",
            ));
        }
        let mut ingested = [0u8; 10];
        ingested[..row.ingested.len()].copy_from_slice(row.ingested);
        let start = self.text.len();
        self.text.extend_from_slice(row.line);
        let mut bin = (0, 0);
        if let Some(buf) = &mut self.bin {
            let bin_start = buf.len();
            if copybin::push_rows(buf, row.line).is_some() {
                bin = (bin_start, buf.len() - bin_start);
            } else {
                self.bin = None;
            }
        }
        let entry = Entry {
            pair,
            open_time: row.open_time,
            tp: row.tp.clone().unbind(),
            offset: row.offset,
            ingested: (ingested, row.ingested.len() as u8),
            line: (start, row.line.len()),
            bin,
            key: row.record_key.clone().unbind(),
            value: row.value.clone().unbind(),
        };
        match self.slots[pair].get(&row.open_time) {
            Some(&i) if self.entries[i].is_some() => {
                self.entries[i] = Some(entry);
                self.compact = false;
            }
            _ => {
                self.slots[pair].insert(row.open_time, self.entries.len());
                self.entries.push(Some(entry));
                self.live += 1;
            }
        }
        Ok(())
    }

    fn remove(&mut self, i: usize) {
        if let Some(e) = self.entries[i].take() {
            self.slots[e.pair].remove(&e.open_time);
            self.live -= 1;
            self.compact = false;
        }
    }

    fn line(&self, e: &Entry) -> &[u8] {
        &self.text[e.line.0..e.line.0 + e.line.1]
    }

    /// The `span`s in `buf` of the entries of `order`, joined: `buf` itself when compact.
    fn gather<'py>(
        &self,
        py: Python<'py>,
        order: &[usize],
        buf: &[u8],
        span: impl Fn(&Entry) -> (usize, usize),
    ) -> Bound<'py, PyBytes> {
        if self.compact {
            return PyBytes::new(py, buf);
        }
        let entries = || order.iter().filter_map(|&i| self.entries[i].as_ref());
        let mut gathered = Vec::with_capacity(entries().map(|e| span(e).1).sum());
        for (start, len) in entries().map(&span) {
            gathered.extend_from_slice(&buf[start..start + len]);
        }
        PyBytes::new(py, &gathered)
    }

    fn row_tuple<'py>(&self, py: Python<'py>, e: &Entry) -> PyResult<Bound<'py, PyTuple>> {
        let names = &self.pairs[e.pair];
        PyTuple::new(
            py,
            [
                names.symbol.bind(py).clone().into_any(),
                names.interval.bind(py).clone().into_any(),
                e.open_time.into_pyobject(py)?.into_any(),
                PyBytes::new(py, self.line(e)).into_any(),
            ],
        )
    }

    fn order(&self) -> Vec<usize> {
        (0..self.entries.len())
            .filter(|&i| self.entries[i].is_some())
            .collect()
    }
}

#[pymethods]
impl StagedRows {
    #[new]
    pub(crate) fn new() -> Self {
        StagedRows {
            pairs: Vec::new(),
            pair_index: HashMap::new(),
            slots: Vec::new(),
            entries: Vec::new(),
            live: 0,
            text: Vec::new(),
            bin: Some(Vec::new()),
            compact: true,
            frozen: false,
        }
    }

    fn __len__(&self) -> usize {
        self.live
    }

    /// True once split (the split's rows view reads it): stage more into a ``copy()``.
    #[getter]
    fn frozen(&self) -> bool {
        self.frozen
    }

    /// The same rows, open for more (twin of going on with the dict after a split).
    fn copy(&self, py: Python<'_>) -> Self {
        StagedRows {
            pairs: self
                .pairs
                .iter()
                .map(|p| PairNames {
                    symbol: p.symbol.clone_ref(py),
                    interval: p.interval.clone_ref(py),
                })
                .collect(),
            pair_index: self.pair_index.clone(),
            slots: self.slots.clone(),
            entries: self
                .entries
                .iter()
                .map(|e| {
                    e.as_ref().map(|e| Entry {
                        pair: e.pair,
                        open_time: e.open_time,
                        tp: e.tp.clone_ref(py),
                        offset: e.offset,
                        ingested: e.ingested,
                        line: e.line,
                        bin: e.bin,
                        key: e.key.clone_ref(py),
                        value: e.value.clone_ref(py),
                    })
                })
                .collect(),
            live: self.live,
            text: self.text.clone(),
            bin: self.bin.clone(),
            compact: self.compact,
            frozen: false,
        }
    }

    /// ``rows.get((pair key, open time))``: the staged tuple, or None.
    fn get<'py>(
        &self,
        py: Python<'py>,
        ident: (Vec<u8>, i64),
    ) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let Some(pair) = self.pair_of(&ident.0) else {
            return Ok(None);
        };
        let Some(&i) = self.slots[pair].get(&ident.1) else {
            return Ok(None);
        };
        let Some(e) = self.entries[i].as_ref() else {
            return Ok(None);
        };
        let ingested = &e.ingested.0[..e.ingested.1 as usize];
        Ok(Some(PyTuple::new(
            py,
            [
                e.tp.bind(py).clone().into_any(),
                e.offset.into_pyobject(py)?.into_any(),
                PyBytes::new(py, ingested).into_any(),
                self.row_tuple(py, e)?.into_any(),
                e.key.bind(py).clone(),
                e.value.bind(py).clone(),
            ],
        )?))
    }

    /// ``rows[(pair key, open time)] = (tp, offset, ingested, (symbol, interval, open time,
    /// line), key, value)`` (the exact path).
    fn __setitem__(
        &mut self,
        ident: (Bound<'_, PyBytes>, i64),
        staged: ExactRow<'_>,
    ) -> PyResult<()> {
        self.check_open()?;
        let (key, open_time) = ident;
        let (tp, offset, ingested, (symbol, interval, row_time, line), record_key, value) = staged;
        if row_time != open_time {
            return Err(PyValueError::new_err(
                "the row's open time is not its key's",
            ));
        }
        let pair = match self.pair_of(key.as_bytes()) {
            Some(p) => p,
            None => self.add_pair((key.clone(), symbol, interval)),
        };
        self.put(
            pair,
            NewRow {
                open_time,
                tp: &tp,
                offset,
                ingested: &ingested,
                line: &line,
                record_key: &record_key,
                value: &value,
            },
        )
    }

    /// Twin of ``StagedBatch._drop_covered``: forget the rows of pair ``key`` with ``start <=
    /// open time < end`` staged from offsets below ``offset``.
    fn drop_covered(&mut self, key: &[u8], start: i64, end: i64, offset: i64) -> PyResult<()> {
        self.check_open()?;
        let Some(pair) = self.pair_of(key) else {
            return Ok(());
        };
        let doomed: Vec<usize> = self.slots[pair]
            .iter()
            .filter(|(&t, &i)| {
                start <= t && t < end && self.entries[i].as_ref().is_some_and(|e| e.offset < offset)
            })
            .map(|(_, &i)| i)
            .collect();
        for i in doomed {
            self.remove(i);
        }
        Ok(())
    }

    /// Forget the rows staged from these partitions ((topic, partition) tuples).
    fn drop_partitions(&mut self, py: Python<'_>, gone: &Bound<'_, PySet>) -> PyResult<()> {
        self.check_open()?;
        for i in 0..self.entries.len() {
            let doomed = match &self.entries[i] {
                Some(e) => gone.contains(e.tp.bind(py))?,
                None => false,
            };
            if doomed {
                self.remove(i);
            }
        }
        Ok(())
    }

    /// Twin of the pass over the rows in ``StagedBatch.split``: (COPY text, rows view,
    /// partition per row, spans {(symbol, interval): (first, last)}, newest [(interval, open
    /// time, ingested_at varint)] per pair in first-seen order, the text's rows in binary COPY
    /// format or None). The rows take no more changes.
    #[allow(clippy::type_complexity)]
    fn split<'py>(
        slf: &Bound<'py, Self>,
        py: Python<'py>,
    ) -> PyResult<(
        Bound<'py, PyBytes>,
        CopyRows,
        Bound<'py, PyList>,
        Bound<'py, PyDict>,
        Bound<'py, PyList>,
        Option<Bound<'py, PyBytes>>,
    )> {
        let mut this = slf.borrow_mut();
        this.frozen = true;
        let order = this.order();
        let text = this.gather(py, &order, &this.text, |e| e.line);
        let binary = match &this.bin {
            Some(bin) if !order.is_empty() => Some(this.gather(py, &order, bin, |e| e.bin)),
            _ => None,
        };
        let partitions = PyList::empty(py);
        // per pair, in first-seen order: (first, last, index of the newest entry)
        let mut spans: Vec<Option<(i64, i64, usize)>> = vec![None; this.pairs.len()];
        let mut seen_order: Vec<usize> = Vec::new();
        for &i in &order {
            let Some(e) = &this.entries[i] else { continue };
            partitions.append(e.tp.bind(py))?;
            let t = e.open_time;
            match &mut spans[e.pair] {
                slot @ None => {
                    *slot = Some((t, t, i));
                    seen_order.push(e.pair);
                }
                Some(span) => {
                    if t > span.1 {
                        *span = (span.0, t, i);
                    } else if t < span.0 {
                        span.0 = t;
                    }
                }
            }
        }
        let span_dict = PyDict::new(py);
        let newest = PyList::empty(py);
        for &p in &seen_order {
            let Some((first, last, i)) = spans[p] else {
                continue;
            };
            let names = &this.pairs[p];
            let pair = (names.symbol.bind(py), names.interval.bind(py));
            span_dict.set_item(pair, (first, last))?;
            if let Some(e) = &this.entries[i] {
                let raw = PyBytes::new(py, &e.ingested.0[..e.ingested.1 as usize]);
                newest.append((names.interval.bind(py), last, raw))?;
            }
        }
        drop(this);
        let view = CopyRows {
            rows: slf.clone().unbind(),
            order,
        };
        Ok((text, view, partitions, span_dict, newest, binary))
    }
}

/// The rows of a split batch as a sequence of (symbol, interval, open time, COPY line), built
/// when read (the database reads the COPY text; rows are read when a batch is halved, a
/// partition revoked or a row rejected).
#[pyclass(module = "qryptify_native", sequence)]
pub(crate) struct CopyRows {
    rows: Py<StagedRows>,
    order: Vec<usize>,
}

#[pymethods]
impl CopyRows {
    fn __len__(&self) -> usize {
        self.order.len()
    }

    /// Equal to any sequence of the same rows (a list of tuples from the Python path).
    fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        let Ok(n) = other.len() else {
            return Ok(false);
        };
        if n != self.order.len() {
            return Ok(false);
        }
        for (i, theirs) in other.try_iter()?.enumerate() {
            if !self.__getitem__(py, i as isize)?.eq(theirs?)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn __getitem__<'py>(&self, py: Python<'py>, index: isize) -> PyResult<Bound<'py, PyTuple>> {
        let n = self.order.len() as isize;
        let i = if index < 0 { index + n } else { index };
        if !(0..n).contains(&i) {
            return Err(PyIndexError::new_err("row index out of range"));
        }
        let rows = self.rows.bind(py).borrow();
        match &rows.entries[self.order[i as usize]] {
            Some(e) => rows.row_tuple(py, e),
            None => Err(PyRuntimeError::new_err("row dropped after the split")),
        }
    }
}
