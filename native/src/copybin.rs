//! COPY text of candle rows → PostgreSQL's binary COPY format, for the same table columns.
//!
//! The sink stages text lines (the Python path's format, held byte-identical by the
//! equivalence tests); the database parses binary rows with less CPU (no float and timestamp
//! parsing). The conversion takes only the exact shapes the sink writes and gives None for
//! anything else, so the caller sends the text instead and PostgreSQL judges it as before.
//! The same doubles arrive either way: Rust's float parse is correctly rounded, as is the C
//! library's strtod behind PostgreSQL's float8 input.

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::ts::{days_from_civil, push_ts_text};

/// PostgreSQL's epoch (2000-01-01) in Unix milliseconds.
const PG_EPOCH_MS: i64 = 946_684_800_000;
const DAY_MS: i64 = 86_400_000;
/// ``qryptify.db.CANDLE_COLUMNS``: ts, symbol, interval, open, high, low, close, volume,
/// close_time, quote_asset_volume, number_of_trades, taker_buy_base, taker_buy_quote.
const FIELDS: usize = 13;

#[derive(Clone, Copy)]
enum Kind {
    Time,
    Text,
    Double,
    BigInt,
}

const KINDS: [Kind; FIELDS] = [
    Kind::Time,
    Kind::Text,
    Kind::Text,
    Kind::Double,
    Kind::Double,
    Kind::Double,
    Kind::Double,
    Kind::Double,
    Kind::Time,
    Kind::Double,
    Kind::BigInt,
    Kind::Double,
    Kind::Double,
];

fn digits(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 18 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0i64, |n, c| n * 10 + i64::from(c - b'0')))
}

/// "YYYY-MM-DD HH:MM:SS.mmm+00" (``qryptify.sink.rows.ts_text``) → Unix ms; only the exact
/// text that time renders to.
fn parse_ts(s: &[u8]) -> Option<i64> {
    if s.len() != 26 {
        return None;
    }
    let n = |a: usize, b: usize| digits(&s[a..b]);
    let (y, m, d) = (n(0, 4)?, n(5, 7)?, n(8, 10)?);
    let (hh, mm, ss, ms) = (n(11, 13)?, n(14, 16)?, n(17, 19)?, n(20, 23)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 59 {
        return None;
    }
    let t = days_from_civil(y, m, d) * DAY_MS + ((hh * 60 + mm) * 60 + ss) * 1000 + ms;
    let mut again = Vec::with_capacity(26);
    push_ts_text(&mut again, t);
    (again == s).then_some(t)
}

/// `-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?` (what ``check_kline`` lets through) → a finite
/// double that is not a non-zero decimal rounded to 0 (PostgreSQL refuses those).
fn parse_double(s: &[u8]) -> Option<f64> {
    let mut i = usize::from(s.first() == Some(&b'-'));
    let int = s[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    if int == 0 {
        return None;
    }
    i += int;
    let mut nonzero = s[..i].iter().any(|c| (b'1'..=b'9').contains(c));
    if s.get(i) == Some(&b'.') {
        let frac = s[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if frac == 0 {
            return None;
        }
        nonzero |= s[i + 1..i + 1 + frac]
            .iter()
            .any(|c| (b'1'..=b'9').contains(c));
        i += 1 + frac;
    }
    if matches!(s.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(s.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let exp = s[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if exp == 0 {
            return None;
        }
        i += exp;
    }
    if i != s.len() {
        return None;
    }
    let v: f64 = std::str::from_utf8(s).ok()?.parse().ok()?;
    if !v.is_finite() || (v == 0.0 && nonzero) {
        return None;
    }
    Some(v)
}

fn parse_bigint(s: &[u8]) -> Option<i64> {
    let (neg, body) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    if body.is_empty() || body.len() > 19 || !body.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut n: i128 = 0;
    for c in body {
        n = n * 10 + i128::from(c - b'0');
    }
    let n = if neg { -n } else { n };
    i64::try_from(n).ok()
}

/// Text that binary COPY takes as is and text COPY would read the same: printable ASCII or
/// UTF-8, no backslash (an escape in text COPY), no control character.
fn plain_text(s: &[u8]) -> bool {
    !s.is_empty()
        && std::str::from_utf8(s).is_ok()
        && !s.iter().any(|&c| c == b'\\' || c < 0x20 || c == 0x7F)
}

fn push_field(out: &mut Vec<u8>, kind: Kind, s: &[u8]) -> Option<()> {
    match kind {
        Kind::Time => {
            let us = (parse_ts(s)? - PG_EPOCH_MS) * 1000;
            out.extend_from_slice(&8i32.to_be_bytes());
            out.extend_from_slice(&us.to_be_bytes());
        }
        Kind::Text => {
            if !plain_text(s) {
                return None;
            }
            out.extend_from_slice(&i32::try_from(s.len()).ok()?.to_be_bytes());
            out.extend_from_slice(s);
        }
        Kind::Double => {
            out.extend_from_slice(&8i32.to_be_bytes());
            out.extend_from_slice(&parse_double(s)?.to_be_bytes());
        }
        Kind::BigInt => {
            out.extend_from_slice(&8i32.to_be_bytes());
            out.extend_from_slice(&parse_bigint(s)?.to_be_bytes());
        }
    }
    Some(())
}

/// The binary COPY rows (without the file header and trailer) of `text`, or None.
pub(crate) fn convert(text: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() + text.len() / 4);
    push_rows(&mut out, text)?;
    Some(out)
}

/// Append the binary COPY rows of `text` to `out`; None (with `out` partly written) when a
/// line is not exactly what the sink stages.
pub(crate) fn push_rows(out: &mut Vec<u8>, text: &[u8]) -> Option<()> {
    let mut rest = text;
    while !rest.is_empty() {
        let end = rest.iter().position(|&c| c == b'\n')?;
        let line = &rest[..end];
        rest = &rest[end + 1..];
        out.extend_from_slice(&(FIELDS as i16).to_be_bytes());
        let mut fields = line.split(|&c| c == b'\t');
        for kind in KINDS {
            push_field(out, kind, fields.next()?)?;
        }
        if fields.next().is_some() {
            return None;
        }
    }
    Some(())
}

/// ``copy_binary(text)``: the binary COPY rows of candle COPY text (header and trailer not
/// included), or None when a line is not exactly what the sink stages; runs without the GIL.
#[pyfunction]
fn copy_binary<'py>(py: Python<'py>, text: &Bound<'py, PyBytes>) -> Option<Bound<'py, PyBytes>> {
    let data = text.as_bytes();
    let out = py.allow_threads(|| convert(data))?;
    Some(PyBytes::new(py, &out))
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(copy_binary, m)?)?;
    Ok(())
}
