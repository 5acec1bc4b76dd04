//! Archive CSV → Avro bodies: twin of ``_fast_rows`` + ``KlineEncoder.encode_rows`` in
//! ``qryptify.binance.archive`` / ``qryptify.avro``. A whole file per call; None unless every
//! line is a plain data row, exactly when the Python twin returns None (then the general
//! parser decides and names the bad line).
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

/// Characters ``str.splitlines`` breaks on besides "\n" (ASCII only: the file is ASCII).
const LINE_BREAKS: &[u8] = b"\r\x0b\x0c\x1c\x1d\x1e";

/// `-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?`
pub(crate) fn is_decimal(s: &[u8]) -> bool {
    let mut i = usize::from(s.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < s.len() && s[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > start
    };
    if !digits(&mut i) {
        return false;
    }
    if i < s.len() && s[i] == b'.' {
        i += 1;
        if !digits(&mut i) {
            return false;
        }
    }
    if i < s.len() && (s[i] == b'e' || s[i] == b'E') {
        i += 1;
        if i < s.len() && (s[i] == b'-' || s[i] == b'+') {
            i += 1;
        }
        if !digits(&mut i) {
            return false;
        }
    }
    i == s.len()
}

/// `[0-9]{1,max}` as its value.
pub(crate) fn digits_value(s: &[u8], max: usize) -> Option<i64> {
    if s.is_empty() || s.len() > max || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0i64, |n, c| n * 10 + i64::from(c - b'0')))
}

fn push_long(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8 & 0x7F) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn push_string(out: &mut Vec<u8>, s: &[u8]) {
    push_long(out, s.len() as i64);
    out.extend_from_slice(s);
}

/// One line's record: (open time, close time, Avro value), or None if it is not a plain row.
fn encode_line(line: &[u8], head: &[u8], tail: &[u8]) -> Option<(i64, i64, Vec<u8>)> {
    let fields: Vec<&[u8]> = line.split(|c| *c == b',').collect();
    if fields.len() != 11 && fields.len() != 12 {
        return None;
    }
    if fields.len() == 12 && fields[11].iter().any(|c| LINE_BREAKS.contains(c)) {
        return None;
    }
    let open_time = digits_value(fields[0], 14)?;
    let close_time = digits_value(fields[6], 14)?;
    let trades = digits_value(fields[8], 18)?;
    let decimals = [1, 2, 3, 4, 5, 7, 9, 10];
    if !decimals.iter().all(|&i| is_decimal(fields[i])) {
        return None;
    }
    let value = encode_value(&fields, open_time, close_time, trades, head, tail);
    Some((open_time, close_time, value))
}

/// A kline's topic value: `head` + the row's fields in Avro order + `tail`; `fields` are the
/// 11 data columns in exchange order (CSV and REST JSON rows share it).
pub(crate) fn encode_value(
    fields: &[&[u8]],
    open_time: i64,
    close_time: i64,
    trades: i64,
    head: &[u8],
    tail: &[u8],
) -> Vec<u8> {
    let size: usize = fields.iter().map(|f| f.len() + 1).sum();
    let mut value = Vec::with_capacity(head.len() + tail.len() + 24 + size);
    value.extend_from_slice(head);
    push_long(&mut value, open_time);
    push_long(&mut value, close_time);
    for i in [1, 2, 3, 4, 5, 7] {
        push_string(&mut value, fields[i]);
    }
    push_long(&mut value, trades);
    push_string(&mut value, fields[9]);
    push_string(&mut value, fields[10]);
    value.extend_from_slice(tail);
    value
}

/// Open times, close times and topic values, as Python lists.
pub(crate) type Encoded<'py> = (Bound<'py, PyList>, Bound<'py, PyList>, Bound<'py, PyList>);

/// ``(open_times, close_times, values)`` of an archive CSV whose every line is a plain data
/// row (an optional header line starting with `header_start` first), each value `head` + the
/// row's fields + `tail`; None otherwise.
#[pyfunction]
fn archive_csv_values<'py>(
    py: Python<'py>,
    data: &[u8],
    header_start: &[u8],
    head: &[u8],
    tail: &[u8],
) -> PyResult<Option<Encoded<'py>>> {
    if !data.is_ascii() {
        return Ok(None);
    }
    let owned;
    let data: &[u8] = if data.contains(&b'\r') {
        let mut v = Vec::with_capacity(data.len());
        let mut i = 0;
        while i < data.len() {
            if data[i] == b'\r' && data.get(i + 1) == Some(&b'\n') {
                i += 1; // "\r\n" -> "\n"
                continue;
            }
            v.push(data[i]);
            i += 1;
        }
        owned = v;
        &owned
    } else {
        data
    };
    let mut body = data;
    if data.starts_with(header_start) {
        let cut = data.iter().position(|c| *c == b'\n');
        let header = match cut {
            Some(c) => &data[..c],
            None => data,
        };
        if header.iter().any(|c| LINE_BREAKS.contains(c)) {
            return Ok(None);
        }
        body = match cut {
            Some(c) => &data[c + 1..],
            None => &[],
        };
    }
    // The parse needs no Python object: other threads (the publish loop) run meanwhile.
    let rows: Option<Vec<(i64, i64, Vec<u8>)>> = py.allow_threads(|| {
        if body.is_empty() {
            return Some(Vec::new());
        }
        let body = body.strip_suffix(b"\n").unwrap_or(body);
        body.split(|c| *c == b'\n')
            .map(|line| encode_line(line, head, tail))
            .collect()
    });
    rows.map(|rows| encoded_lists(py, rows)).transpose()
}

/// Rows of (open time, close time, value) as the three Python lists.
pub(crate) fn encoded_lists(
    py: Python<'_>,
    rows: Vec<(i64, i64, Vec<u8>)>,
) -> PyResult<Encoded<'_>> {
    let opens = PyList::empty(py);
    let closes = PyList::empty(py);
    let values = PyList::empty(py);
    for (open_time, close_time, value) in rows {
        opens.append(open_time)?;
        closes.append(close_time)?;
        values.append(PyBytes::new(py, &value))?;
    }
    Ok((opens, closes, values))
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(archive_csv_values, m)?)?;
    Ok(())
}
