//! REST ``/fapi/v1/klines`` page (raw JSON bytes) → the closed candles' Avro bodies: twin of
//! ``page_values`` in ``qryptify.binance.rest`` (``json.loads`` + ``parse_klines`` + the
//! ``close_time < exchange now`` filter of ``page_events`` + ``KlineEncoder.encode``). A whole
//! page per call; None unless the page is a list of plain rows in ascending open time, and
//! then the Python path decides (and names the error, if any).
use pyo3::prelude::*;

use crate::archive::{digits_value, encode_value, encoded_lists, is_decimal, Encoded};

/// Bounds-checked reader over the body; every method None when the shape is not plain.
struct Json<'a> {
    d: &'a [u8],
    p: usize,
}

impl<'a> Json<'a> {
    /// The next byte after JSON whitespace (what ``json.loads`` skips).
    fn peek(&mut self) -> Option<u8> {
        while matches!(self.d.get(self.p), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.p += 1;
        }
        self.d.get(self.p).copied()
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.p += 1)
    }

    /// A non-negative JSON integer of at most 18 digits (always fits a long).
    fn int(&mut self) -> Option<i64> {
        self.peek()?;
        let start = self.p;
        while self.d.get(self.p).is_some_and(u8::is_ascii_digit) {
            self.p += 1;
        }
        let s = &self.d[start..self.p];
        if s.len() > 1 && s[0] == b'0' {
            return None; // not JSON
        }
        digits_value(s, 18)
    }

    /// A JSON string holding a plain decimal (so no escapes to decode).
    fn decimal(&mut self) -> Option<&'a [u8]> {
        self.expect(b'"')?;
        let start = self.p;
        let len = self.d.get(start..)?.iter().position(|c| *c == b'"')?;
        self.p = start + len + 1;
        let s = &self.d[start..start + len];
        is_decimal(s).then_some(s)
    }

    /// `[t,"o","h","l","c","v",T,"q",n,"V","Q"(,"ignore")?]`: (open, close, value).
    fn row(&mut self, head: &[u8], tail: &[u8]) -> Option<(i64, i64, Vec<u8>)> {
        self.expect(b'[')?;
        let open_time = self.int()?;
        let mut fields: [&[u8]; 11] = [b""; 11];
        for field in &mut fields[1..6] {
            self.expect(b',')?;
            *field = self.decimal()?;
        }
        self.expect(b',')?;
        let close_time = self.int()?;
        self.expect(b',')?;
        fields[7] = self.decimal()?;
        self.expect(b',')?;
        let trades = self.int()?;
        for field in &mut fields[9..11] {
            self.expect(b',')?;
            *field = self.decimal()?;
        }
        if self.peek()? == b',' {
            self.p += 1;
            self.decimal()?; // Binance's unused "ignore" column
        }
        self.expect(b']')?;
        Some((
            open_time,
            close_time,
            encode_value(&fields, open_time, close_time, trades, head, tail),
        ))
    }

    fn page(&mut self, head: &[u8], tail: &[u8], now_ms: i64) -> Option<Vec<(i64, i64, Vec<u8>)>> {
        let mut rows = Vec::new();
        self.expect(b'[')?;
        let mut last: Option<i64> = None;
        if self.peek()? != b']' {
            loop {
                let (open_time, close_time, value) = self.row(head, tail)?;
                if last.is_some_and(|t| open_time <= t) {
                    return None; // not ascending: the Python path names it
                }
                last = Some(open_time);
                if close_time < now_ms {
                    rows.push((open_time, close_time, value));
                }
                if self.peek()? == b']' {
                    break;
                }
                self.expect(b',')?;
            }
        }
        self.expect(b']')?;
        (self.peek().is_none()).then_some(rows)
    }
}

/// ``(open_times, close_times, values)`` of a klines page's candles closed before `now_ms`,
/// each value `head` + the row's fields + `tail`; None unless every row is plain.
#[pyfunction]
fn rest_page_values<'py>(
    py: Python<'py>,
    body: &[u8],
    head: &[u8],
    tail: &[u8],
    now_ms: i64,
) -> PyResult<Option<Encoded<'py>>> {
    let rows = py.allow_threads(|| Json { d: body, p: 0 }.page(head, tail, now_ms));
    rows.map(|rows| encoded_lists(py, rows)).transpose()
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(rest_page_values, m)?)?;
    Ok(())
}
