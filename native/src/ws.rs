//! WebSocket kline frames (a batch, as received) → per-frame verdicts: twin of
//! ``kline_frames`` in ``qryptify.binance.frames`` (``parse_frame`` + ``KlineEncoder.encode``).
//! A frame in the exchange's exact combined-stream layout (``_OPEN_SNAPSHOT_RE`` in
//! ``qryptify.binance.ws``, with ``"x"`` true or false), ASCII, with plain values, is decided
//! here: an open candle's snapshot, or a closed candle that passes every rule of ``Kline.from_ws``
//! and ``validate_kline`` with its Avro value. Every other frame (malformed, control, another
//! layout, any doubt) goes to the Python path's ``decide`` callback, which alone names errors.
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString};
use std::cmp::Ordering;

use crate::archive::{digits_value, encode_value, is_decimal};
use crate::ts::month_close;
use crate::{MAX_OPEN_MS, MIN_OPEN_MS};

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;

/// ``qryptify.pairs.FIXED_INTERVAL_MS`` (Binance's intervals); "1M" is a calendar month (0).
fn interval_ms(interval: &[u8]) -> Option<i64> {
    Some(match interval {
        b"1m" => MINUTE_MS,
        b"3m" => 3 * MINUTE_MS,
        b"5m" => 5 * MINUTE_MS,
        b"15m" => 15 * MINUTE_MS,
        b"30m" => 30 * MINUTE_MS,
        b"1h" => HOUR_MS,
        b"2h" => 2 * HOUR_MS,
        b"4h" => 4 * HOUR_MS,
        b"6h" => 6 * HOUR_MS,
        b"8h" => 8 * HOUR_MS,
        b"12h" => 12 * HOUR_MS,
        b"1d" => DAY_MS,
        b"3d" => 3 * DAY_MS,
        b"1w" => 7 * DAY_MS,
        b"1M" => 0,
        _ => return None,
    })
}

/// ``qryptify.pairs._SYMBOL_RE``: `[A-Z0-9]{2,20}(_[0-9]{6})?`.
fn is_symbol(s: &[u8]) -> bool {
    let (base, suffix) = match s.iter().position(|c| *c == b'_') {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    (2..=20).contains(&base.len())
        && base
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        && suffix.is_none_or(|x| x.len() == 6 && x.iter().all(u8::is_ascii_digit))
}

/// Exact-layout reader: literals byte for byte, no whitespace (the exchange sends none).
struct Lex<'a> {
    d: &'a [u8],
    p: usize,
}

impl<'a> Lex<'a> {
    fn lit(&mut self, s: &[u8]) -> Option<()> {
        let end = self.p + s.len();
        (self.d.get(self.p..end)? == s).then(|| self.p = end)
    }

    /// `"[^"\\\x00-\x1f]*"`: a JSON string that needs no decoding.
    fn string(&mut self) -> Option<&'a [u8]> {
        self.lit(b"\"")?;
        let start = self.p;
        let len = self.d.get(start..)?.iter().position(|c| *c == b'"')?;
        let s = &self.d[start..start + len];
        if s.iter().any(|c| *c == b'\\' || *c < 0x20) {
            return None;
        }
        self.p = start + len + 1;
        Some(s)
    }

    /// `-?(0|[1-9][0-9]*)`: a JSON integer, as text.
    fn int(&mut self) -> Option<&'a [u8]> {
        let start = self.p;
        if self.d.get(self.p) == Some(&b'-') {
            self.p += 1;
        }
        let digits = self.p;
        while self.d.get(self.p).is_some_and(u8::is_ascii_digit) {
            self.p += 1;
        }
        let n = self.p - digits;
        if n == 0 || (n > 1 && self.d[digits] == b'0') {
            return None;
        }
        Some(&self.d[start..self.p])
    }
}

/// A non-negative JSON integer that fits in 18 digits (so an i64), as its value.
fn small_int(s: &[u8]) -> Option<i64> {
    digits_value(s, 18)
}

/// The fields of one frame in the exact layout.
struct Fields<'a> {
    stream: &'a [u8],
    event_time: &'a [u8],
    open_time: &'a [u8],
    close_time: &'a [u8],
    symbol: &'a [u8],
    interval: &'a [u8],
    closed: bool,
    /// The row in exchange column order (``archive::encode_value``): t, o, h, l, c, v, T, q,
    /// n, V, Q (the three integers are read separately).
    row: [&'a [u8]; 11],
}

fn fields(d: &[u8]) -> Option<Fields<'_>> {
    let mut x = Lex { d, p: 0 };
    let mut row: [&[u8]; 11] = [b""; 11];
    x.lit(b"{\"stream\":")?;
    let stream = x.string()?;
    if stream.is_empty() {
        return None;
    }
    x.lit(b",\"data\":{\"e\":\"kline\",\"E\":")?;
    let event_time = x.int()?;
    x.lit(b",\"s\":")?;
    x.string()?;
    x.lit(b",\"k\":{\"t\":")?;
    let open_time = x.int()?;
    x.lit(b",\"T\":")?;
    let close_time = x.int()?;
    x.lit(b",\"s\":")?;
    let symbol = x.string()?;
    x.lit(b",\"i\":")?;
    let interval = x.string()?;
    x.lit(b",\"f\":")?;
    x.int()?;
    x.lit(b",\"L\":")?;
    x.int()?;
    for (name, i) in [
        (&b",\"o\":"[..], 1),
        (b",\"c\":", 4),
        (b",\"h\":", 2),
        (b",\"l\":", 3),
        (b",\"v\":", 5),
    ] {
        x.lit(name)?;
        row[i] = x.string()?;
    }
    x.lit(b",\"n\":")?;
    row[8] = x.int()?;
    x.lit(b",\"x\":")?;
    let closed = if x.lit(b"true").is_some() {
        true
    } else {
        x.lit(b"false")?;
        false
    };
    for (name, i) in [(&b",\"q\":"[..], 7), (b",\"V\":", 9), (b",\"Q\":", 10)] {
        x.lit(name)?;
        row[i] = x.string()?;
    }
    x.lit(b",\"B\":")?;
    x.string()?;
    x.lit(b"}}}")?;
    if x.p != d.len() {
        return None;
    }
    row[0] = open_time;
    row[6] = close_time;
    Some(Fields {
        stream,
        event_time,
        open_time,
        close_time,
        symbol,
        interval,
        closed,
        row,
    })
}

/// `stream == f"{symbol.lower()}@kline_{interval}"`.
fn names_stream(f: &Fields<'_>) -> bool {
    let s = f.stream;
    let n = f.symbol.len();
    s.len() == n + 7 + f.interval.len()
        && s[..n]
            .iter()
            .zip(f.symbol)
            .all(|(a, b)| *a == b.to_ascii_lowercase())
        && &s[n..n + 7] == b"@kline_"
        && &s[n + 7..] == f.interval
}

/// A plain decimal `-?[0-9]+(\.[0-9]+)?` as (negative, integer digits, fraction digits) without
/// leading / trailing zeros; None for any other form (an exponent: the Python path decides).
fn plain(s: &[u8]) -> Option<(bool, &[u8], &[u8])> {
    let (neg, body) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    let (int, frac) = match body.iter().position(|c| *c == b'.') {
        Some(i) => (&body[..i], &body[i + 1..]),
        None => (body, &b""[..]),
    };
    if int.is_empty() || !int.iter().all(u8::is_ascii_digit) || !frac.iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    let lead = int.iter().position(|c| *c != b'0').unwrap_or(int.len());
    let trail = frac.iter().rposition(|c| *c != b'0').map_or(0, |i| i + 1);
    let (int, frac) = (&int[lead..], &frac[..trail]);
    let zero = int.is_empty() && frac.is_empty();
    Some((neg && !zero, int, frac))
}

/// Decimal order of two plain decimals (``Decimal`` comparison).
fn cmp_plain(a: (bool, &[u8], &[u8]), b: (bool, &[u8], &[u8])) -> Ordering {
    if a.0 != b.0 {
        return if a.0 {
            Ordering::Less
        } else {
            Ordering::Greater
        };
    }
    let magnitude =
        a.1.len()
            .cmp(&b.1.len())
            .then(a.1.cmp(b.1))
            .then(a.2.cmp(b.2));
    if a.0 {
        magnitude.reverse()
    } else {
        magnitude
    }
}

/// A closed candle's (open time, close time, trades) when ``Kline.from_ws`` + ``validate_kline``
/// accept it (and its values are plain); None when the Python path must decide.
fn valid_close(f: &Fields<'_>) -> Option<(i64, i64, i64)> {
    if !is_symbol(f.symbol) {
        return None;
    }
    let step = interval_ms(f.interval)?;
    let open_time = small_int(f.open_time)?;
    let close_time = small_int(f.close_time)?;
    let trades = small_int(f.row[8])?;
    if !(MIN_OPEN_MS..MAX_OPEN_MS).contains(&open_time) {
        return None;
    }
    let expected = if step == 0 {
        month_close(open_time)
    } else {
        open_time + step - 1
    };
    if close_time != expected {
        return None;
    }
    let mut dec = [(false, &b""[..], &b""[..]); 11];
    for i in [1, 2, 3, 4, 5, 7, 9, 10] {
        if !is_decimal(f.row[i]) {
            return None;
        }
        dec[i] = plain(f.row[i])?;
    }
    let (o, h, lo, c) = (dec[1], dec[2], dec[3], dec[4]);
    let le = |a, b| cmp_plain(a, b) != Ordering::Greater;
    if !(le(lo, o) && le(o, h) && le(lo, c) && le(c, h)) {
        return None;
    }
    if [5, 7, 9, 10].iter().any(|&i| dec[i].0) {
        return None; // a negative volume
    }
    Some((open_time, close_time, trades))
}

enum Verdict<'a> {
    Open(Fields<'a>, i64, i64),
    Close(Fields<'a>, i64, i64, Vec<u8>),
    Python,
}

/// Per frame: ``kline_frame(stream, E, t, False, None)`` for an open candle's snapshot (with
/// `validate_open`, only one that passes the closed candle's rules too),
/// ``close(stream, E, symbol, interval, t, value)`` for a valid closed candle (value = `prefix`
/// + symbol + interval + the row + `tail`), else ``decide(frame)``.
#[pyfunction]
fn ws_kline_frames<'py>(
    py: Python<'py>,
    frames: &Bound<'py, PyList>,
    prefix: &[u8],
    tail: &[u8],
    validate_open: bool,
    kline_frame: &Bound<'py, PyAny>,
    close: &Bound<'py, PyAny>,
    decide: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyList>> {
    let items: Vec<Bound<'py, PyAny>> = frames.iter().collect();
    let out = PyList::empty(py);
    for item in &items {
        let text = if let Ok(s) = item.downcast::<PyString>() {
            s.to_str().ok().map(str::as_bytes)
        } else if let Ok(b) = item.downcast::<PyBytes>() {
            Some(b.as_bytes())
        } else {
            None
        };
        match text.map_or(Verdict::Python, |d| {
            decide_frame(d, prefix, tail, validate_open)
        }) {
            Verdict::Python => out.append(decide.call1((item,))?)?,
            Verdict::Open(f, event_time, open_time) => {
                let args = (ascii(py, f.stream), event_time, open_time, false, py.None());
                out.append(kline_frame.call1(args)?)?;
            }
            Verdict::Close(f, event_time, open_time, value) => {
                let args = (
                    ascii(py, f.stream),
                    event_time,
                    ascii(py, f.symbol),
                    ascii(py, f.interval),
                    open_time,
                    PyBytes::new(py, &value),
                );
                out.append(close.call1(args)?)?;
            }
        }
    }
    Ok(out)
}

fn ascii<'py>(py: Python<'py>, s: &[u8]) -> Bound<'py, PyString> {
    // Checked ASCII by `decide_frame`, so valid UTF-8.
    PyString::new(py, std::str::from_utf8(s).unwrap_or_default())
}

fn decide_frame<'a>(d: &'a [u8], prefix: &[u8], tail: &[u8], validate_open: bool) -> Verdict<'a> {
    if !d.is_ascii() {
        return Verdict::Python;
    }
    let Some(f) = fields(d) else {
        return Verdict::Python;
    };
    let Some(event_time) = small_int(f.event_time).filter(|_| names_stream(&f)) else {
        return Verdict::Python;
    };
    if !f.closed {
        return match small_int(f.open_time) {
            Some(_) if validate_open && valid_close(&f).is_none() => Verdict::Python,
            Some(open_time) => Verdict::Open(f, event_time, open_time),
            None => Verdict::Python,
        };
    }
    let Some((open_time, close_time, trades)) = valid_close(&f) else {
        return Verdict::Python;
    };
    let mut head = Vec::with_capacity(prefix.len() + f.symbol.len() + f.interval.len() + 2);
    head.extend_from_slice(prefix);
    push_short_string(&mut head, f.symbol);
    push_short_string(&mut head, f.interval);
    let value = encode_value(&f.row, open_time, close_time, trades, &head, tail);
    Verdict::Close(f, event_time, open_time, value)
}

/// An Avro string shorter than 64 bytes (symbols and intervals are): one length byte.
fn push_short_string(out: &mut Vec<u8>, s: &[u8]) {
    out.push((s.len() as u8) << 1);
    out.extend_from_slice(s);
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(ws_kline_frames, m)?)?;
    Ok(())
}
