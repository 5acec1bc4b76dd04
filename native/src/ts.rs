//! Calendar arithmetic for millisecond times (proleptic Gregorian, UTC), without allocation.

const DAY_MS: i64 = 86_400_000;

/// (year, month, day) of the day `z` days after 1970-01-01 (H. Hinnant's civil_from_days).
pub(crate) fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Days from 1970-01-01 to (year, month, day).
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Close time of the 1M candle holding `open_ms`: the next month's first millisecond - 1
/// (twin of ``qryptify.pairs.close_time("1M", ...)``).
pub(crate) fn month_close(open_ms: i64) -> i64 {
    let (y, m, _) = civil_from_days(open_ms.div_euclid(DAY_MS));
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    days_from_civil(ny, nm, 1) * DAY_MS - 1
}

fn push_digits(out: &mut Vec<u8>, value: i64, width: usize) {
    let mut buf = [b'0'; 20];
    let mut v = value;
    let mut i = buf.len();
    while v > 0 || buf.len() - i < width {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.extend_from_slice(&buf[i..]);
}

/// `ms` as TIMESTAMPTZ input text, "2024-01-01 00:00:00.000+00" (twin of
/// ``qryptify.sink.rows.ts_text``; callers pass times within 2010..2200).
pub(crate) fn push_ts_text(out: &mut Vec<u8>, ms: i64) {
    let (y, m, d) = civil_from_days(ms.div_euclid(DAY_MS));
    let rem = ms.rem_euclid(DAY_MS);
    push_digits(out, y, 4);
    out.push(b'-');
    push_digits(out, m, 2);
    out.push(b'-');
    push_digits(out, d, 2);
    out.push(b' ');
    push_digits(out, rem / 3_600_000, 2);
    out.push(b':');
    push_digits(out, rem / 60_000 % 60, 2);
    out.push(b':');
    push_digits(out, rem / 1000 % 60, 2);
    out.push(b'.');
    push_digits(out, rem % 1000, 3);
    out.extend_from_slice(b"+00");
}

/// A non-negative integer in decimal (Python's ``%d``).
pub(crate) fn push_int(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
        push_digits(out, -v, 1);
    } else {
        push_digits(out, v, 1);
    }
}
