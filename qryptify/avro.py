"""Avro codec for the topic's records, in Avro single-object encoding: ``C3 01`` + the 8-byte
little-endian CRC-64-AVRO fingerprint of the schema's Parsing Canonical Form + the Avro body.
No schema registry is needed: the schemas ship in ``qryptify/schemas``.

The reader resolves the writer schema (found by fingerprint) against the current reader
schema, so records written by older schema versions stay readable. Logical types are stripped
for speed: times travel as int milliseconds, which is what every caller wants.
"""

from __future__ import annotations

import io
import json
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from qryptify.errors import UndecodableRecord
from qryptify.kline import EmptyRange, Event, Kline

SOE_MAGIC = b"\xc3\x01"
NAMESPACE = "io.qryptify.binance.futures"
KLINE = f"{NAMESPACE}.Kline"
EMPTY_RANGE = f"{NAMESPACE}.EmptyRange"
SOURCE_OFFSET = f"{NAMESPACE}.SourceOffset"


def schemas_dir() -> Path:
    """The Avro schemas shipped inside the package (``qryptify/schemas``)."""
    return Path(__file__).resolve().parent / "schemas"


def _strip_logical(node: Any) -> Any:
    """The same schema without logical types: identical bytes, ints instead of datetimes."""
    if isinstance(node, dict):
        return {k: _strip_logical(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_strip_logical(v) for v in node]
    return node


@dataclass(frozen=True, slots=True)
class SchemaVersion:
    name: str  # full name
    text: str  # schema JSON as written in the .avsc
    fingerprint: bytes  # 8 bytes, little-endian CRC-64-AVRO of the canonical form
    parsed: Any  # fastavro-parsed, logical types stripped


def load_schema(text: str) -> SchemaVersion:
    raw = json.loads(text)
    canonical = to_parsing_canonical_form(fastavro.parse_schema(raw))
    fp = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
    parsed = fastavro.parse_schema(_strip_logical(raw))
    name = str(raw["name"]) if "." in str(raw["name"]) else f"{raw.get('namespace')}.{raw['name']}"
    return SchemaVersion(name=name, text=text, fingerprint=fp, parsed=parsed)


@dataclass(slots=True)
class SchemaCatalogue:
    """Current schema per record name, plus every known writer version by fingerprint."""

    current: dict[str, SchemaVersion] = field(default_factory=dict)
    by_fingerprint: dict[bytes, SchemaVersion] = field(default_factory=dict)

    def add(self, version: SchemaVersion, *, current: bool) -> None:
        self.by_fingerprint[version.fingerprint] = version
        if current:
            self.current[version.name] = version

    @classmethod
    def from_dir(cls, directory: Path | None = None) -> SchemaCatalogue:
        base = directory or schemas_dir()
        catalogue = cls()
        # Older versions stay decodable: qryptify/schemas/history/*.avsc are writer schemas only.
        for path in sorted((base / "history").glob("*.avsc")):
            catalogue.add(load_schema(path.read_text(encoding="utf-8")), current=False)
        for path in sorted(base.glob("*.avsc")):
            catalogue.add(load_schema(path.read_text(encoding="utf-8")), current=True)
        return catalogue


class AvroCodec:
    """Encodes/decodes records by full name."""

    def __init__(self, catalogue: SchemaCatalogue | None = None) -> None:
        self.catalogue = catalogue or SchemaCatalogue.from_dir()

    def _prefix(self, version: SchemaVersion) -> bytes:
        return SOE_MAGIC + version.fingerprint

    def encode(self, name: str, record: Mapping[str, Any]) -> bytes:
        version = self.catalogue.current[name]
        buf = io.BytesIO()
        buf.write(self._prefix(version))
        fastavro.schemaless_writer(buf, version.parsed, record)
        return buf.getvalue()

    def _writer(self, data: bytes) -> tuple[SchemaVersion, int]:
        if data[:2] == SOE_MAGIC:
            if len(data) < 10:
                raise UndecodableRecord(f"{len(data)} bytes: too short for a single-object header")
            version = self.catalogue.by_fingerprint.get(data[2:10])
            if version is None:
                raise UndecodableRecord(
                    f"unknown schema fingerprint {data[2:10].hex()} (not in qryptify/schemas/)"
                )
            return version, 10
        if not data:
            raise UndecodableRecord("empty value")
        raise UndecodableRecord(
            f"unknown framing: first bytes {data[:2].hex()} are not C3 01 (Avro single-object)"
        )

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """Return ``(record full name, record)``; raise UndecodableRecord naming why."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise UndecodableRecord(f"value is {type(data).__name__}, not bytes")
        data = bytes(data)
        writer, start = self._writer(data)
        reader = self.catalogue.current.get(writer.name)
        if reader is None:
            raise UndecodableRecord(f"record type {writer.name} is not one this reader knows")
        body = io.BytesIO(data)
        body.seek(start)
        try:
            record = fastavro.schemaless_reader(
                body, writer.parsed, None if reader is writer else reader.parsed
            )
        except Exception as exc:  # fastavro raises EOFError, ValueError, IndexError, …
            raise UndecodableRecord(f"{writer.name} body does not decode: {exc!r:.200}") from None
        if body.tell() != len(data):
            raise UndecodableRecord(
                f"{writer.name}: {len(data) - body.tell()} trailing bytes after the record"
            )
        if not isinstance(record, dict):
            raise UndecodableRecord(f"{writer.name} decoded to {type(record).__name__}")
        return writer.name, record


_KLINE_FIELDS = Kline.__slots__
_EMPTY_FIELDS = EmptyRange.__slots__


#: Avro types of the Kline fields, in ``Kline.__slots__`` order, that ``decode_kline_body``
#: reads: s = string, l = long, e = the KlineSource enum.
_KLINE_LAYOUT = "ssllsssssslssel"
_SOURCES: tuple[str, ...] = ("rest", "ws", "archive")


def _layout(parsed: Any) -> str | None:
    """The field layout of a parsed Kline schema, if it is the one the fast reader knows."""
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        return None
    codes = []
    for f in parsed.get("fields", []):
        t = f.get("type")
        if isinstance(t, dict) and set(t) == {"type"}:
            t = t["type"]  # {"type": "long"} once the logical type is stripped
        if t == "string":
            codes.append("s")
        elif t == "long":
            codes.append("l")
        elif isinstance(t, dict) and t.get("type") == "enum" and tuple(t["symbols"]) == _SOURCES:
            codes.append("e")
        else:
            return None
    names = tuple(f["name"] for f in parsed["fields"])
    return "".join(codes) if names == Kline.__slots__ else None


def decode_kline_body(data: bytes, pos: int) -> Kline:
    """Read the Avro body of the current Kline schema at ``pos`` (the 10-byte single-object
    header skipped): about twice as fast as the generic reader on the sink's hot path, and
    checked against fastavro in tests/unit/qryptify/test_avro_fast.py."""
    values: list[Any] = []
    append = values.append
    try:
        for code in _KLINE_LAYOUT:
            b = data[pos]
            pos += 1
            if b < 0x80:
                n = (b >> 1) ^ -(b & 1)
            else:
                n = b & 0x7F
                shift = 7
                while b & 0x80:
                    b = data[pos]
                    pos += 1
                    n |= (b & 0x7F) << shift
                    shift += 7
                    if shift > 70:
                        raise UndecodableRecord("Kline body: varint longer than 10 bytes")
                n = (n >> 1) ^ -(n & 1)
            if code == "s":
                end = pos + n
                if n < 0 or end > len(data):
                    raise UndecodableRecord("Kline body does not decode: string past the end")
                append(data[pos:end].decode())
                pos = end
            elif code == "e":
                if not 0 <= n < len(_SOURCES):
                    raise UndecodableRecord(f"Kline body does not decode: enum index {n}")
                append(_SOURCES[n])
            else:
                if not -(2**63) <= n < 2**63:
                    raise UndecodableRecord("Kline body does not decode: long out of range")
                append(n)
    except IndexError:
        raise UndecodableRecord("Kline body does not decode: truncated") from None
    except UnicodeDecodeError as exc:
        raise UndecodableRecord(f"Kline body does not decode: {exc!r:.200}") from None
    if pos != len(data):
        raise UndecodableRecord(f"{KLINE}: {len(data) - pos} trailing bytes after the record")
    return Kline(*values)


class KlineCodec:
    """Klines and empty ranges to and from topic values."""

    def __init__(self, avro: AvroCodec | None = None) -> None:
        self.avro = avro or AvroCodec()
        current = self.avro.catalogue.current.get(KLINE)
        # Fast path only for the exact layout decode_kline_body reads, in single-object framing.
        self._fast_prefix: bytes | None = None
        if current is not None and _layout(current.parsed) == _KLINE_LAYOUT:
            self._fast_prefix = SOE_MAGIC + current.fingerprint

    @property
    def fast_prefix(self) -> bytes | None:
        """The 10-byte header of current-schema Kline records (the sink's fast path reads
        those bodies itself, see ``qryptify.sink.batch``)."""
        return self._fast_prefix

    def encode(self, event: Event) -> bytes:
        if isinstance(event, Kline):
            encoder = kline_encoder(self)
            if encoder is not None:
                return encoder.encode(event)
            return self.avro.encode(KLINE, {f: getattr(event, f) for f in _KLINE_FIELDS})
        return self.avro.encode(EMPTY_RANGE, {f: getattr(event, f) for f in _EMPTY_FIELDS})

    def decode(self, data: bytes) -> Event:
        fast = self._fast_prefix
        if fast is not None and data[:10] == fast and isinstance(data, bytes):
            return decode_kline_body(data, 10)
        name, record = self.avro.decode(data)
        try:
            if name == KLINE:
                return Kline(**record)
            if name == EMPTY_RANGE:
                return EmptyRange(**record)
        except (TypeError, ValueError) as exc:
            raise UndecodableRecord(f"{name} fields do not fit: {exc}") from None
        raise UndecodableRecord(f"record type {name} is not a kline event")


# -- fast Kline encoding (the publishers' hot path) ---------------------------------------------
#: The Kline schema KlineEncoder writes: field names and Avro types in schema order. Any other
#: current schema (an evolved one) keeps the generic fastavro writer.
_ENCODER_FIELDS: tuple[tuple[str, str], ...] = (
    ("symbol", "string"), ("interval", "string"), ("open_time", "long"), ("close_time", "long"),
    ("open", "string"), ("high", "string"), ("low", "string"), ("close", "string"),
    ("volume", "string"), ("quote_volume", "string"), ("trades", "long"),
    ("taker_buy_base", "string"), ("taker_buy_quote", "string"), ("source", "enum"),
    ("ingested_at", "long"),
)  # fmt: skip
_LONG_MIN = -(2**63)
_LONG_MAX = 2**63 - 1


def _small_long(n: int) -> bytes:
    z = n << 1
    return bytes([z]) if z < 0x80 else bytes([(z & 0x7F) | 0x80, z >> 7])


#: Zigzag varints of 0 <= n < 8192 (two bytes at most): string lengths, trade counts.
_SMALL_LONGS: tuple[bytes, ...] = tuple(_small_long(n) for n in range(8192))


def _encodable_layout(parsed: Any) -> bool:
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        return False
    found: list[tuple[str, str]] = []
    for f in parsed.get("fields", []):
        t = f.get("type")
        if isinstance(t, dict) and set(t) == {"type"}:
            t = t["type"]  # {"type": "long"} once the logical type is stripped
        if isinstance(t, dict) and t.get("type") == "enum":
            if tuple(t.get("symbols", ())) != _SOURCES:
                return False
            t = "enum"
        found.append((str(f.get("name")), str(t)))
    return tuple(found) == _ENCODER_FIELDS


def encode_long(n: int) -> bytes:
    """Avro ``long``: zigzag, then base-128 varint, low group first (what fastavro writes)."""
    if not _LONG_MIN <= n <= _LONG_MAX:
        raise OverflowError("Python int too large to convert to C long")  # fastavro's words
    z = (n << 1) ^ (n >> 63)
    if z < 0x4000 and n >= 0:
        return _SMALL_LONGS[n]
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def encode_time(ms: int) -> bytes:
    """``encode_long`` for a non-negative long, unrolled for 6-byte varints: every millisecond
    time from 2001 to 2039, i.e. two of the three longs of every candle."""
    z = ms << 1
    if 0x800000000 <= z < 0x40000000000:
        return (
            (z & 0x7F)
            | (z & 0x3F80) << 1
            | (z & 0x1FC000) << 2
            | (z & 0xFE00000) << 3
            | (z & 0x7F0000000) << 4
            | (z & 0x3F800000000) << 5
            | 0x8080808080
        ).to_bytes(6, "little")
    return encode_long(ms)


def encode_string(text: str) -> bytes:
    raw = text.encode()
    return encode_long(len(raw)) + raw


@dataclass(frozen=True, slots=True)
class KlineEncoder:
    """Writes current-schema Kline records without fastavro's per-record dispatch.

    ``prefix`` is the framing header (single-object or Confluent). The bytes are exactly what
    ``AvroCodec.encode(KLINE, …)`` writes, checked against fastavro in
    tests/unit/qryptify/test_avro_encode.py; anything outside the plain shape (a field of the
    wrong type, an unknown source) goes back to that generic writer, so its errors stay as
    they are."""

    prefix: bytes
    fallback: AvroCodec

    def encode(self, k: Kline) -> bytes:
        try:
            if (
                type(k.open_time) is int
                and type(k.close_time) is int
                and type(k.trades) is int
                and type(k.ingested_at) is int
            ):
                return b"".join(
                    (
                        self.prefix,
                        encode_string(k.symbol),
                        encode_string(k.interval),
                        encode_long(k.open_time),
                        encode_long(k.close_time),
                        encode_string(k.open),
                        encode_string(k.high),
                        encode_string(k.low),
                        encode_string(k.close),
                        encode_string(k.volume),
                        encode_string(k.quote_volume),
                        encode_long(k.trades),
                        encode_string(k.taker_buy_base),
                        encode_string(k.taker_buy_quote),
                        _SMALL_LONGS[_SOURCES.index(k.source)],
                        encode_long(k.ingested_at),
                    )
                )
        except (AttributeError, ValueError, OverflowError):
            pass  # not a str, an unknown source, out of range: the generic writer says how
        return self.fallback.encode(KLINE, {f: getattr(k, f) for f in _KLINE_FIELDS})

    def row_frame(
        self, symbol: str, interval: str, source: str, ingested_at: int
    ) -> tuple[bytes, bytes]:
        """What every record of one pair, source and ingest time starts and ends with: the
        header + symbol + interval, and source + ingested_at (the compiled core writes the
        fields between them, ``qryptify.binance.archive.parse_csv_encoded``)."""
        head = self.prefix + encode_string(symbol) + encode_string(interval)
        return head, _SMALL_LONGS[_SOURCES.index(source)] + encode_long(ingested_at)

    def encode_rows(
        self, symbol: str, interval: str, source: str, ingested_at: int, rows: list[Any]
    ) -> tuple[list[int], list[int], list[bytes]]:
        """Encode validated CSV rows of one pair: ``(open_times, close_times, values)``.

        Each row is the 11 data columns of an archive CSV line as ASCII bytes in file order
        (open time, open, high, low, close, volume, close time, quote volume, trades, taker
        buy base, taker buy quote), the three integer columns plain digits that fit a long.
        The pair's strings, the source and the ingest time are the same for every row, so they
        are encoded once."""
        head, tail = self.row_frame(symbol, interval, source, ingested_at)
        lengths = _SMALL_LONGS
        time = encode_time
        join = b"".join
        opens: list[int] = []
        closes: list[int] = []
        values: list[bytes] = []
        add_open, add_close, add_value = opens.append, closes.append, values.append
        for t, o, h, lo, c, v, ct, q, n, tb, tq in rows:
            open_time = int(t)
            close_time = int(ct)
            trades = int(n)
            add_open(open_time)
            add_close(close_time)
            # Decimal strings are ASCII: their length in characters is their length in bytes.
            try:
                value = join(
                    (
                        head, time(open_time), time(close_time),
                        lengths[len(o)], o, lengths[len(h)], h, lengths[len(lo)], lo,
                        lengths[len(c)], c, lengths[len(v)], v, lengths[len(q)], q,
                        lengths[trades] if trades < 8192 else encode_long(trades),
                        lengths[len(tb)], tb, lengths[len(tq)], tq, tail,
                    )
                )  # fmt: skip
            except IndexError:  # a string of 8192 bytes or more: the general varint
                value = join(
                    (
                        head, time(open_time), time(close_time),
                        *(encode_long(len(x)) + x for x in (o, h, lo, c, v, q)),
                        encode_long(trades),
                        *(encode_long(len(x)) + x for x in (tb, tq)), tail,
                    )
                )  # fmt: skip
            add_value(value)
        return opens, closes, values


def kline_encoder(codec: KlineCodec) -> KlineEncoder | None:
    """The codec's fast Kline encoder, or None when the current Kline schema is not the one
    ``KlineEncoder`` writes (the generic writer then does every record)."""
    avro = codec.avro
    found = _ENCODERS.get(avro)
    if found is None:
        version = avro.catalogue.current.get(KLINE)
        if version is None or not _encodable_layout(version.parsed):
            _ENCODERS[avro] = False
            return None
        found = _ENCODERS[avro] = KlineEncoder(avro._prefix(version), avro)
    return found or None


#: Per AvroCodec (whose framing prefix the encoder bakes in): its encoder, or False for none.
_ENCODERS: weakref.WeakKeyDictionary[AvroCodec, KlineEncoder | Literal[False]] = (
    weakref.WeakKeyDictionary()
)


@dataclass(frozen=True, slots=True)
class EncodedKlines:
    """Candles of one pair in ascending open-time order, already in their topic encoding:
    what the archive path hands the publisher instead of one Kline object per row."""

    symbol: str
    interval: str
    open_times: list[int]
    close_times: list[int]
    values: list[bytes]  # the topic values (framed Avro), one per candle

    def __len__(self) -> int:
        return len(self.values)

    def take(self, start: int, stop: int) -> EncodedKlines:
        """Rows ``start:stop`` (list slicing: no per-row work)."""
        return EncodedKlines(
            self.symbol,
            self.interval,
            self.open_times[start:stop],
            self.close_times[start:stop],
            self.values[start:stop],
        )

    def pick(self, rows: list[int]) -> EncodedKlines:
        """The rows at the given indexes, in that order."""
        return EncodedKlines(
            self.symbol,
            self.interval,
            [self.open_times[i] for i in rows],
            [self.close_times[i] for i in rows],
            [self.values[i] for i in rows],
        )
