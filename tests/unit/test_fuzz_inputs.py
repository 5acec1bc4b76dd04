"""Fuzzing every input boundary (issue 10): config, pairs, REST klines JSON, WebSocket frames,
Avro records, archive CSV / zip / CHECKSUM.

The property everywhere: an input either parses to a valid value or raises the project's typed
error (a subclass of ``IngestorError``) with a non-empty message — never another exception,
never a hang (pytest-timeout guards each test; the WebSocket parser must not even raise).

Runs are bounded and derandomised, so CI sees the same examples every time (a few seconds in
all). ``QRYPTIFY_FUZZ_EXAMPLES=5000 pytest tests/unit/test_fuzz_inputs.py`` explores more, with
fresh random inputs. Every case fuzzing found is kept below as an explicit regression test
(``test_found_*``) and as an ``@example``.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import string
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from qryptify.avro import AvroCodec, KlineCodec
from qryptify.binance.archive import ArchiveFile, parse_checksum, parse_csv, read_zip
from qryptify.binance.rest import BinanceRest, fast_rest_row, parse_exchange_info, parse_klines
from qryptify.binance.weights import WeightBudget
from qryptify.binance.ws import ControlReply, KlineFrame, Malformed, parse_frame
from qryptify.clock import ExchangeClock, FixedClock
from qryptify.config import Config, RestConfig, build_config, load_config
from qryptify.errors import (
    ArchiveError,
    ConfigError,
    ExchangeError,
    IngestorError,
    MalformedPayload,
    PairError,
    UndecodableRecord,
)
from qryptify.kline import EmptyRange, Kline, validate_kline
from qryptify.pairs import INTERVALS, Pair, parse_pair
from qryptify.sink.batch import Record, split_batch

pytestmark = pytest.mark.timeout(120)

T = TypeVar("T")

_EXPLORE = int(os.environ.get("QRYPTIFY_FUZZ_EXAMPLES", "0"))


def fuzz(examples: int) -> settings:
    """Bounded and derandomised in CI; more and random with QRYPTIFY_FUZZ_EXAMPLES."""
    return settings(
        max_examples=_EXPLORE or examples,
        deadline=None,
        derandomize=not _EXPLORE,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def typed_or_value(fn: Callable[[], T], *errors: type[IngestorError]) -> T | None:
    """Call ``fn``; a raised error must be one of ``errors`` with a message naming something."""
    try:
        return fn()
    except IngestorError as exc:
        assert isinstance(exc, errors), f"{type(exc).__name__} is not one of {errors}: {exc}"
        assert str(exc).strip(), f"{type(exc).__name__} without a message"
        return None


# -- strategies -----------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=12), inner, max_size=6)
    ),
    max_leaves=15,
)
SECTIONS = ("pairs", "rest", "ws", "db", "backfill", "kafka", "archive", "sink", "metrics", "log")
VALID_DOC: dict[str, Any] = {
    "pairs": ["BTCUSDT/1m", "ETHUSDT-1h", {"symbol": "BNBUSDT", "interval": "15m"}],
    "rest": {"endpoint": "https://fapi.binance.com", "timeout_s": 10, "klines_limit": 499},
    "ws": {"endpoint": "wss://fstream.binance.com/stream", "watchdog_grace_ms": 5000},
    "db": {"dsn": "postgresql://postgres:pw@localhost:5432/qryptify"},
    "backfill": {"start_date": "2024-01-01", "concurrency": 4},
    "kafka": {"bootstrap_servers": "127.0.0.1:9092", "security_protocol": "PLAINTEXT"},
    "archive": {"enabled": True},
    "sink": {"batch_size": 1000},
    "metrics": {"port": 0},
    "log": {"level": "INFO"},
}


def _mutations() -> st.SearchStrategy[dict[str, Any]]:
    """The valid document with some keys replaced, added or removed."""
    keys = [(s, k) for s, v in VALID_DOC.items() if isinstance(v, dict) for k in v]

    def apply(changes: list[tuple[tuple[str, str], object]], drops: list[str]) -> dict[str, Any]:
        doc = json.loads(json.dumps(VALID_DOC))
        for (section, key), value in changes:
            doc[section][key] = value
        for section in drops:
            doc.pop(section, None)
        return doc  # type: ignore[no-any-return]

    extra_keys = st.sampled_from(keys) | st.tuples(st.sampled_from(SECTIONS[1:]), st.text())
    return st.builds(
        apply,
        st.lists(st.tuples(extra_keys, json_values), max_size=4),
        st.lists(st.sampled_from(SECTIONS), max_size=2),
    )


# -- config ---------------------------------------------------------------------------------


@fuzz(150)
@given(
    st.dictionaries(st.sampled_from(SECTIONS) | st.text(max_size=8), json_values, max_size=6)
    | _mutations()
)
@example({"db": {"dsn": "postgresql://u:secret@[::1/db"}})  # found: urlsplit ValueError
@example({"ws": {"endpoint": "ws://[::1"}})  # found: urlsplit ValueError
def test_build_config_gives_a_config_or_a_config_error(doc: dict[str, Any]) -> None:
    cfg = typed_or_value(lambda: build_config(doc), ConfigError)
    assert cfg is None or isinstance(cfg, Config)


YAML_ALPHABET = string.ascii_letters + string.digits + " :-/[]{},.#&*!|>'\"\n\t_@%"


@fuzz(100)
@given(
    st.text(alphabet=YAML_ALPHABET, max_size=200),
    st.dictionaries(
        st.sampled_from(
            ["QRYPTIFY_PAIRS", "QRYPTIFY_REST__TIMEOUT_S", "QRYPTIFY_DB__DSN", "QRYPTIFY_WS",
             "QRYPTIFY_KAFKA__PARTITIONS", "QRYPTIFY_X__Y__Z", "QRYPTIFY___", "OTHER"]
        ),
        st.text(alphabet=YAML_ALPHABET, max_size=40),
        max_size=3,
    ),
)  # fmt: skip
@example("a: " + "[" * 2000 + "]" * 2000, {})  # found: RecursionError from yaml
@example("rest: {timeout_s: " + "9" * 5000 + "}", {})  # found: int() digit limit ValueError
def test_load_config_gives_a_config_or_a_config_error(text: str, env: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(text, encoding="utf-8")
        cfg = typed_or_value(lambda: load_config(path, env), ConfigError)
    assert cfg is None or isinstance(cfg, Config)


# -- pairs ----------------------------------------------------------------------------------


@fuzz(200)
@given(
    json_values
    | st.builds(
        lambda s, sep, i: f"{s}{sep}{i}",
        st.text(alphabet=string.ascii_letters + string.digits + "_", max_size=24),
        st.sampled_from(["/", "-", "|", ":", " ", "", "//", " / "]),
        st.sampled_from(INTERVALS) | st.text(max_size=4),
    )
)
def test_parse_pair_gives_a_pair_or_a_pair_error(value: object) -> None:
    pair = typed_or_value(lambda: parse_pair(value), PairError)
    assert pair is None or (isinstance(pair, Pair) and Pair(pair.symbol, pair.interval) == pair)


# -- REST klines JSON -----------------------------------------------------------------------

GOOD_ROW: list[object] = [
    1720656000000, "1.5", "2", "0.5", "1.5", "10", 1720656059999, "15", 3, "5", "7.5", "0",
]  # fmt: skip
row_values = st.one_of(
    st.integers(),
    st.text(alphabet="0123456789.-+eE ", max_size=14),
    st.floats(),
    st.none(),
    st.booleans(),
    st.text(max_size=6),
)


def _mutated_rows() -> st.SearchStrategy[list[object]]:
    def apply(changes: list[tuple[int, object]], cut: int) -> list[object]:
        row = list(GOOD_ROW)
        for index, value in changes:
            row[index] = value
        return row[:cut]

    return st.builds(
        apply, st.lists(st.tuples(st.integers(0, 11), row_values), max_size=3), st.integers(0, 13)
    )


@fuzz(200)
@given(json_values | st.lists(_mutated_rows() | st.lists(row_values, max_size=13), max_size=4))
def test_rest_klines_body_gives_klines_or_malformed_payload(body: object) -> None:
    klines = typed_or_value(lambda: parse_klines(Pair("BTCUSDT", "1m"), body, 0), MalformedPayload)
    assert klines is None or all(isinstance(k, Kline) for k in klines)


@fuzz(400)
@given(_mutated_rows())
def test_fast_rest_row_agrees_with_the_careful_parser(row: list[object]) -> None:
    def parse(fn: Callable[..., Kline]) -> Kline | str:
        try:
            return fn("BTCUSDT", "1m", row, 0)
        except MalformedPayload as exc:
            return f"error: {exc.source}"

    assert parse(fast_rest_row) == parse(Kline.from_rest_row)


@fuzz(100)
@given(json_values)
def test_exchange_info_body_gives_info_or_malformed_payload(body: object) -> None:
    typed_or_value(lambda: parse_exchange_info(body), MalformedPayload)


class _FakeExchange:
    """Answers requests from a drawn list; time only moves by sleeps (no real waiting)."""

    def __init__(self, answers: list[httpx.Response]) -> None:
        self.answers = answers
        self.local = FixedClock(1_720_656_000_000)
        self.clock = ExchangeClock(self.local)
        self.clock.observe(self.local.now_ms(), self.local.now_ms(), self.local.now_ms())

    def handler(self, _request: httpx.Request) -> httpx.Response:
        return self.answers.pop(0) if self.answers else httpx.Response(200, json=[])

    async def sleep(self, seconds: float) -> None:
        self.local.advance(int(seconds * 1000) + 1)
        await asyncio.sleep(0)

    def fetch_klines(self, config: RestConfig, **options: Any) -> list[Kline]:
        """One ``BinanceRest.klines`` call (BTCUSDT 1m, one hour) answered from the list."""
        rest = BinanceRest(
            config,
            clock=self.clock,
            transport=httpx.MockTransport(self.handler),
            sleep=self.sleep,
            budget_clock=self.local,
            **options,
        )

        async def call() -> list[Kline]:
            try:
                return await rest.klines(Pair("BTCUSDT", "1m"), 1720656000000, 1720659540000)
            finally:
                await rest.aclose()

        return asyncio.run(call())


responses = st.builds(
    lambda status, body, retry, used: httpx.Response(
        status,
        content=body,
        headers={k: v for k, v in (("Retry-After", retry), ("X-MBX-USED-WEIGHT-1M", used)) if v},
    ),
    st.sampled_from([200, 200, 200, 400, 403, 404, 408, 418, 429, 500, 502, 503, 504]),
    st.one_of(
        st.binary(max_size=60),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.lists(_mutated_rows(), max_size=3).map(lambda v: json.dumps(v).encode()),
        st.just(b"[" * 5000 + b"]" * 5000),
    ),
    st.sampled_from(["", "1", "0", "-3", "abc", "2.5", "99999999999"]),
    st.sampled_from(["", "12", "x", "-1", "999999"]),
)


@fuzz(120)
@given(st.lists(responses, max_size=4))
@example([httpx.Response(200, content=b"[" * 100_000 + b"]" * 100_000)])  # found: RecursionError
def test_rest_client_gives_klines_or_an_exchange_error(answers: list[httpx.Response]) -> None:
    fake = _FakeExchange(list(answers))
    config = RestConfig(endpoint="http://exchange.test", retry_attempts=2, retry_max_wait_s=1)
    budget = WeightBudget(limit=2400, safety_margin=0.02)
    klines = typed_or_value(lambda: fake.fetch_klines(config, budget=budget), ExchangeError)
    assert klines is None or all(isinstance(k, Kline) for k in klines)


# -- WebSocket frames -----------------------------------------------------------------------

FRAME_K: dict[str, Any] = {
    "t": 1638747660000, "T": 1638747719999, "s": "BTCUSDT", "i": "1m", "f": 100, "L": 200,
    "o": "0.0010", "c": "0.0020", "h": "0.0025", "l": "0.0015", "v": "1000", "n": 100,
    "x": True, "q": "1.0000", "V": "500", "Q": "0.500", "B": "123456",
}  # fmt: skip


def _frames() -> st.SearchStrategy[str]:
    def build(patch: dict[str, object], drop: list[str], combined: bool) -> str:
        k = dict(FRAME_K)
        event: dict[str, object] = {"e": "kline", "E": 1638747660000, "s": "BTCUSDT", "k": k}
        for key, value in patch.items():
            (k if key in FRAME_K else event)[key] = value
        for key in drop:
            k.pop(key, None)
        doc = {"stream": "btcusdt@kline_1m", "data": event} if combined else event
        return json.dumps(doc)

    keys = st.sampled_from([*FRAME_K, "e", "E", "stream", "data", "result", "id", "code"])
    return st.builds(
        build,
        st.dictionaries(keys, json_values, max_size=4),
        st.lists(st.sampled_from(list(FRAME_K)), max_size=2),
        st.booleans(),
    )


@fuzz(300)
@given(st.text(max_size=300) | st.binary(max_size=300) | _frames(), st.booleans())
@example("[" * 100_000, False)  # found: RecursionError escaped parse_frame
@example('{"e":"kline","E":' + "[" * 990 + "]" * 990 + ',"k":{}}', True)  # deep, then repr
def test_parse_frame_never_raises(raw: str | bytes, closed_only: bool) -> None:
    frame = parse_frame(raw, 1_700_000_000_000, closed_only=closed_only)
    assert isinstance(frame, KlineFrame | ControlReply | Malformed)
    if isinstance(frame, Malformed):
        assert frame.kind and frame.reason
    if isinstance(frame, KlineFrame) and frame.kline is not None:
        assert validate_kline(frame.kline) is frame.kline


# -- Avro records ---------------------------------------------------------------------------

CODEC = KlineCodec()
GOOD_KLINE = Kline("BTCUSDT", "1m", 1720656000000, 1720656059999, "1.5", "2", "0.5", "1.5",
                   "10", "15", 3, "5", "7.5", "rest", 1720656061000)  # fmt: skip
GOOD_RECORDS = [
    CODEC.encode(GOOD_KLINE),
    CODEC.encode(EmptyRange("BTCUSDT", "1m", 1720656000000, 1720659600000, 1720660000000)),
]


def _damaged() -> st.SearchStrategy[bytes]:
    def damage(base: int, flips: list[tuple[int, int]], cut: int, tail: bytes) -> bytes:
        data = bytearray(GOOD_RECORDS[base])
        for index, bit in flips:
            data[index % len(data)] ^= 1 << bit
        return bytes(data[: cut % (len(data) + 1)]) + tail

    return st.builds(
        damage,
        st.integers(0, len(GOOD_RECORDS) - 1),
        st.lists(st.tuples(st.integers(0, 200), st.integers(0, 7)), max_size=4),
        st.integers(0, 400),
        st.binary(max_size=6),
    )


def _decoded_ok(event: object) -> bool:
    if isinstance(event, Kline):
        return all(
            isinstance(getattr(event, f), int if f in ("open_time", "close_time", "trades",
                                                       "ingested_at") else str)
            for f in Kline.__slots__
        )  # fmt: skip
    return isinstance(event, EmptyRange)


@fuzz(300)
@given(st.binary(max_size=120) | _damaged() | st.binary(max_size=40).map(lambda b: b"\xc3\x01" + b))
def test_avro_decode_gives_an_event_or_undecodable_record(data: bytes) -> None:
    event = typed_or_value(lambda: CODEC.decode(data), UndecodableRecord)
    assert event is None or _decoded_ok(event)
    typed_or_value(lambda: AvroCodec().decode(data), UndecodableRecord)


@fuzz(200)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([b"BTCUSDT|1m", b"ETHUSDT|1m", None, b"\xff"]),
            st.none() | st.binary(max_size=80) | _damaged() | st.sampled_from(GOOD_RECORDS),
        ),
        max_size=8,
    )
)
def test_sink_split_never_raises_and_accounts_for_every_record(
    records: list[tuple[bytes | None, bytes | None]],
) -> None:
    batch = [Record("klines", i % 3, i, key, value) for i, (key, value) in enumerate(records)]
    split = split_batch(batch, CODEC)
    assert split.records == len(batch)
    assert len(split.dlq) + len(split.batch) + len(split.empty_ranges) <= len(batch)
    assert all(e.reason and e.error_class for e in split.dlq)
    for partition in {r.partition() for r in batch}:
        last = max(r.offset() for r in batch if r.partition() == partition)
        assert split.offsets[("klines", partition)] == last + 1


# -- archive --------------------------------------------------------------------------------

CSV_ROW = "1720656000000,1.5,2,0.5,1.5,10,1720656059999,15,3,5,7.5,0"
ARCHIVE = ArchiveFile.daily("BTCUSDT", "1m", 1720656000000)


def _csv_texts() -> st.SearchStrategy[bytes]:
    def build(changes: list[tuple[int, str]], header: bool, rows: int) -> bytes:
        fields = CSV_ROW.split(",")
        for index, value in changes:
            fields[index % len(fields)] = value
        lines = ["open_time,open,high,low,close"] if header else []
        lines += [",".join(fields)] + [CSV_ROW] * rows
        return ("\n".join(lines) + "\n").encode("utf-8", "replace")

    return st.builds(
        build,
        st.lists(st.tuples(st.integers(0, 12), st.text(string.printable, max_size=25)), max_size=3),
        st.booleans(),
        st.integers(0, 2),
    )


@fuzz(500)
@given(st.binary(max_size=300) | _csv_texts())
@example(("9" * 5000 + CSV_ROW[13:]).encode())  # found: int() digit-limit ValueError
def test_archive_csv_gives_klines_or_an_archive_error(data: bytes) -> None:
    klines = typed_or_value(lambda: parse_csv(data, "BTCUSDT", "1m", 0, "x.csv"), ArchiveError)
    assert klines is None or all(isinstance(k, Kline) for k in klines)


def _zip(csv: bytes = (CSV_ROW + "\n").encode() * 40) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(zipfile.ZipInfo(ARCHIVE.csv_name, (2024, 7, 12, 0, 0, 0)), csv)
    return buffer.getvalue()


ZIP = _zip()
#: Where the central directory's general purpose flags are (what zipfile reads them from).
CENTRAL_FLAGS = ZIP.index(b"PK\x01\x02") + 8


@fuzz(400)
@given(
    st.lists(st.tuples(st.integers(0, len(ZIP) - 1), st.integers(0, 255)), max_size=4),
    st.integers(0, len(ZIP)),
)
def test_archive_zip_gives_csv_or_an_archive_error(
    patches: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(ZIP)
    for index, value in patches:
        data[index] = value
    csv = typed_or_value(lambda: read_zip(bytes(data[:cut]), ARCHIVE), ArchiveError)
    assert csv is None or isinstance(csv, bytes)


CHECKSUM_LINES = st.builds(
    lambda digest, name: f"{digest}  {name}",
    st.text("0123456789abcdef", min_size=60, max_size=66),
    st.sampled_from([ARCHIVE.zip_name, "other.zip", ""]),
)


@fuzz(300)
@given(st.text(max_size=150) | CHECKSUM_LINES)
def test_archive_checksum_gives_a_digest_or_an_archive_error(text: str) -> None:
    digest = typed_or_value(lambda: parse_checksum(text, ARCHIVE.zip_name), ArchiveError)
    assert digest is None or (len(digest) == 64 and int(digest, 16) >= 0)


# -- the cases fuzzing found (each failed before its fix) -----------------------------------


def _zip_with(offset: int, value: int) -> bytes:
    data = bytearray(ZIP)
    data[offset] = value
    return bytes(data)


@pytest.mark.parametrize(
    "data",
    [
        # A deflate stream with a flipped byte whose CRC header still lets zipfile start:
        # zlib.error ("invalid ... repeat") escaped read_zip.
        _zip_with(30 + len(ARCHIVE.csv_name) + 5, 0xCB),
        # General purpose flag bit 5 ("compressed patched data"): NotImplementedError.
        _zip_with(CENTRAL_FLAGS, 0x20),
        # Flag bit 0 (encrypted): RuntimeError, "password required".
        _zip_with(CENTRAL_FLAGS, 0x01),
    ],
)
def test_found_read_zip_raises_archive_error_for_undecompressible_members(data: bytes) -> None:
    with pytest.raises(ArchiveError, match="not a readable zip"):
        read_zip(data, ARCHIVE)


def test_found_archive_csv_with_a_5000_digit_number_is_an_archive_error() -> None:
    with pytest.raises(ArchiveError, match="out of range"):
        parse_csv(("9" * 5000 + CSV_ROW[13:] + "\n").encode(), "BTCUSDT", "1m", 0, "x.csv")
    row = CSV_ROW.split(",")
    row[8] = "7" * 5000
    with pytest.raises(ArchiveError, match=r"x\.csv:1"):
        parse_csv((",".join(row) + "\n").encode(), "BTCUSDT", "1m", 0, "x.csv")


@pytest.mark.parametrize(
    "text", ["a: " + "[" * 2000 + "]" * 2000, "pairs: " + "[" * 500 + "]" * 500,
             "rest: {timeout_s: " + "9" * 5000 + "}"],
)  # fmt: skip
def test_found_load_config_turns_yaml_oddities_into_config_errors(
    text: str, tmp_path: Path
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="--config"):
        load_config(path, {})


def test_found_unparseable_urls_are_config_errors_and_keep_the_password_hidden() -> None:
    with pytest.raises(ConfigError, match="db.dsn") as caught:
        build_config({"db": {"dsn": "postgresql://u:hunter2secret@[::1/db"}})
    assert "hunter2secret" not in str(caught.value)
    with pytest.raises(ConfigError, match="ws.endpoint"):
        build_config({"ws": {"endpoint": "ws://[::1"}})


@pytest.mark.parametrize(
    "raw", ["[" * 100_000, '{"a":' * 100_000, b"[" * 100_000,
            '{"e":"kline","E":' + "[" * 990 + "]" * 990 + ',"k":{}}'],
)  # fmt: skip
def test_found_parse_frame_reports_absurd_nesting_as_malformed(raw: str | bytes) -> None:
    frame = parse_frame(raw, 0)
    assert isinstance(frame, Malformed)


def test_found_rest_client_reports_absurd_nesting_as_malformed_payload() -> None:
    fake = _FakeExchange([httpx.Response(200, content=b"[" * 100_000 + b"]" * 100_000)])
    with pytest.raises(MalformedPayload, match="not JSON|nested"):
        fake.fetch_klines(RestConfig(endpoint="http://exchange.test"))
