"""Configuration: the seed's YAML (pairs, rest, ws, db, backfill) plus kafka, archive, sink,
metrics and log sections, every key overridable by environment (``QRYPTIFY_DB__DSN=…``).

``load_config(path, environ)`` returns a frozen ``Config`` or raises ``ConfigError`` naming the
key, the bad value and what is allowed. Secrets never appear in ``repr`` or error messages.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import SplitResult, urlsplit, urlunsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from qryptify.errors import ConfigError, ConfigErrors, PairError
from qryptify.futures.config import FuturesConfig
from qryptify.pairs import Pair, parse_pair
from qryptify.redaction import redact_dsn

ENV_PREFIX = "QRYPTIFY_"
DEFAULT_CONFIG_PATH = "config.yaml"
LEGACY_WS_PATHS = ("/stream", "/ws", "")


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class RestConfig(_Section):
    endpoint: str = "https://fapi.binance.com"
    #: Page size; None picks the limit with most candles per weight (499 → weight 2).
    klines_limit: Annotated[int, Field(ge=1, le=1500)] | None = None
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    max_connections: Annotated[int, Field(ge=1, le=256)] = 16
    #: The exchange's REQUEST_WEIGHT per minute; refreshed from exchangeInfo at start.
    weight_limit: Annotated[int, Field(ge=10)] = 2400
    #: Fraction of the limit we never use, for other clients on the same IP.
    weight_safety_margin: Annotated[float, Field(ge=0, lt=0.5)] = 0.02
    #: Attempts per request for 5xx, timeouts and connection errors (backoff in between).
    retry_attempts: Annotated[int, Field(ge=1, le=100)] = 8
    retry_max_wait_s: Annotated[float, Field(gt=0, le=600)] = 30.0
    #: Length of the exchange's weight window (REQUEST_WEIGHT per MINUTE: 60 s on Binance).
    weight_window_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    #: Refresh the exchange-clock offset (/fapi/v1/time) this often.
    time_sync_every_s: Annotated[float, Field(gt=0)] = 300.0

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http(s) URL such as https://fapi.binance.com")
        return v.rstrip("/")


class WsConfig(_Section):
    endpoint: str = "wss://fstream.binance.com/market/stream"
    max_streams_per_connection: Annotated[int, Field(ge=1, le=1024)] = 200
    #: Rotate each connection before the exchange's 24 h cut.
    rotate_after_s: Annotated[float, Field(gt=0)] = 23 * 3600.0
    #: A closed candle is expected by close + grace; else it is fetched by REST.
    watchdog_grace_ms: Annotated[int, Field(ge=0)] = 5000
    #: A connection silent this long is replaced.
    stale_after_s: Annotated[float, Field(gt=0)] = 30.0
    #: ... and silent at least this long in wall time (matters against an accelerated exchange).
    stale_min_wall_s: Annotated[float, Field(ge=0)] = 10.0
    #: Wall ms between two connection attempts (connections are opened gradually).
    connect_spacing_ms: Annotated[int, Field(ge=0, le=60_000)] = 500
    #: Jittered exponential reconnect backoff, wall seconds.
    reconnect_initial_s: Annotated[float, Field(gt=0, le=60)] = 0.1
    reconnect_max_s: Annotated[float, Field(gt=0, le=600)] = 30.0
    #: Client keepalive pings (the server's own pings are always answered); 0 disables.
    ping_interval_s: Annotated[float, Field(ge=0, le=600)] = 20.0
    #: Rotation: exchange seconds added per connection index, and the wall seconds a
    #: replacement gets to deliver its first frame before it is abandoned.
    rotate_stagger_s: Annotated[float, Field(ge=0)] = 60.0
    handover_timeout_s: Annotated[float, Field(gt=0, le=600)] = 30.0
    #: Exchange ms before the watchdog re-fetches a pair whose candle REST did not have yet.
    watchdog_retry_ms: Annotated[int, Field(ge=1)] = 5000
    #: REST fetches (gap fills, watchdog) in flight at once; all share the weight budget.
    rest_concurrency: Annotated[int, Field(ge=1, le=256)] = 8
    #: Wall seconds between source-offset commits (only acknowledged positions).
    offset_commit_every_s: Annotated[float, Field(gt=0, le=600)] = 1.0
    #: Validate every frame (True) or only closed ones; open snapshots are never published.
    check_open_frames: bool = True

    @field_validator("endpoint")
    @classmethod
    def _ws_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("ws", "wss") or not parts.netloc:
            raise ValueError("must be a ws(s) URL such as wss://fstream.binance.com/market/stream")
        return v.rstrip("/")

    def needs_rewrite(self) -> bool:
        return urlsplit(self.endpoint).path in LEGACY_WS_PATHS


def market_stream_url(endpoint: str) -> str:
    """The 2026 routed combined-stream URL for any configured endpoint.

    Since 2026-04-23 unrouted ``/stream`` connections complete the handshake but receive no
    kline frames; klines are served only under ``/market``.
    """
    parts = urlsplit(endpoint)
    path = parts.path.rstrip("/")
    if path in LEGACY_WS_PATHS or path == "/market" or path == "/market/ws":
        path = "/market/stream"
    return urlunsplit(SplitResult(parts.scheme, parts.netloc, path, "", ""))


class DbConfig(_Section):
    dsn: SecretStr = SecretStr("postgresql://postgres:postgres@localhost:5432/qryptify")

    @field_validator("dsn")
    @classmethod
    def _dsn(cls, v: SecretStr) -> SecretStr:
        parts = urlsplit(v.get_secret_value())
        if parts.scheme not in ("postgresql", "postgres"):
            raise ValueError("must be a postgresql://user:password@host:port/database URL")
        if not parts.hostname or not parts.path.strip("/"):
            raise ValueError("needs a host and a database: postgresql://user:pw@host:5432/db")
        try:
            _ = parts.port
        except ValueError:
            raise ValueError("has an invalid port") from None
        return v

    def redacted_dsn(self) -> str:
        return redact_dsn(self.dsn.get_secret_value())


class BackfillConfig(_Section):
    #: The first instant to backfill (UTC): the first candle is the first one opening at or
    #: after it. A date means its midnight UTC; a timestamp keeps its time ("Z" or an offset).
    start_date: datetime = datetime(2020, 1, 1, tzinfo=UTC)
    #: Pairs fetched at the same time (all share one weight budget).
    concurrency: Annotated[int, Field(ge=1, le=256)] = 8
    #: Candles per pair re-read periodically after catching up (exchange corrections).
    recheck_recent: Annotated[int, Field(ge=0, le=1500)] = 5
    recheck_every_s: Annotated[float, Field(gt=0)] = 300.0
    #: Seconds between archive audits (every ingested archive file's published .CHECKSUM
    #: compared with the one used; re-uploaded files re-ingested). Checked between passes, so
    #: at most every ``recheck_every_s``; 0 = off (``qryptify audit`` still works).
    audit_every_s: Annotated[float, Field(ge=0)] = 86_400.0
    #: Exit after catching up (True) or keep the recent history exact (False).
    exit_when_done: bool = False

    @field_validator("start_date", mode="before")
    @classmethod
    def _instant(cls, v: object) -> object:
        return parse_start_date(v)

    @property
    def start_ms(self) -> int:
        return int(self.start_date.timestamp() * 1000)


START_DATE_ALLOWED = (
    "must be a date YYYY-MM-DD or an ISO-8601 timestamp with Z or an offset, "
    "e.g. 2022-01-01T00:00:00Z"
)


def parse_start_date(value: object) -> datetime:
    """A date (midnight UTC) or an aware ISO-8601 timestamp, as an aware UTC datetime.

    YAML already turns unquoted ``2022-01-01`` into a date and ``2022-01-01T00:00:00Z`` into a
    datetime; quoted ones arrive as text. A timestamp without a zone is refused: it would
    silently mean the machine's zone to some readers and UTC to others.
    """
    if isinstance(value, str):
        text = value.strip()
        try:
            value = (
                date.fromisoformat(text)
                if len(text) == 10
                else datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
            )
        except ValueError:
            raise ValueError(START_DATE_ALLOWED) from None
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"{START_DATE_ALLOWED} (a timestamp needs its zone)")
        return value.astimezone(UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    raise ValueError(START_DATE_ALLOWED)


class KafkaConfig(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    topic: str = "klines"
    offsets_topic: str = "klines.offsets"
    dlq_topic: str = "klines.dlq"
    partitions: Annotated[int, Field(ge=1, le=1000)] = 6
    replication_factor: Annotated[int, Field(ge=1, le=10)] = 1
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "zstd"
    linger_ms: Annotated[int, Field(ge=0, le=10_000)] = 5
    client_id: str = "qryptify"

    @field_validator("topic", "offsets_topic", "dlq_topic")
    @classmethod
    def _topic(cls, v: str) -> str:
        if not v or len(v) > 249 or any(not (c.isalnum() or c in "._-") for c in v):
            raise ValueError("a topic name is 1-249 characters of a-z A-Z 0-9 . _ -")
        return v

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers(cls, v: str) -> str:
        for server in v.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError("must be host:port[,host:port…]")
        return v

    @model_validator(mode="after")
    def _sasl(self) -> KafkaConfig:
        if self.security_protocol.startswith("SASL") and not self.sasl_mechanism:
            raise ValueError(f"security_protocol {self.security_protocol} needs sasl_mechanism")
        return self


class ArchiveConfig(_Section):
    endpoint: str = "https://data.binance.vision"
    enabled: bool = True
    cache_dir: str | None = None


class SinkConfig(_Section):
    group_id: str = "qryptify-sink"
    batch_size: Annotated[int, Field(ge=1, le=200_000)] = 20_000
    max_latency_ms: Annotated[int, Field(ge=1, le=600_000)] = 200
    #: Upper bound for rows decompressed by one transaction on compressed chunks.
    max_tuples_decompressed: Annotated[int, Field(ge=0)] = 0


class MetricsConfig(_Section):
    host: str = "127.0.0.1"
    #: Base port: backfiller +0, producer +1, sink +2. 0 disables the HTTP endpoint.
    port: Annotated[int, Field(ge=0, le=65535)] = 9400


class LogConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["auto", "json", "human"] = "auto"


class Config(_Section):
    pairs: tuple[Pair, ...] = ()
    rest: RestConfig = RestConfig()
    ws: WsConfig = WsConfig()
    db: DbConfig = DbConfig()
    backfill: BackfillConfig = BackfillConfig()
    kafka: KafkaConfig = KafkaConfig()
    archive: ArchiveConfig = ArchiveConfig()
    sink: SinkConfig = SinkConfig()
    metrics: MetricsConfig = MetricsConfig()
    log: LogConfig = LogConfig()
    #: Optional futures data (funding rates); off by default.
    futures: FuturesConfig = FuturesConfig()
    #: Notes produced while loading (e.g. a legacy URL rewritten); services log them.
    warnings: tuple[str, ...] = ()


#: Where each configured key came from: a key path (("db", "dsn")) → "file PATH" or
#: "environment NAME". Keys not in it have their default.
Sources = dict[tuple[str, ...], str]


def _parse_pairs(raw: object, source: str | None) -> tuple[tuple[Pair, ...], list[ConfigError]]:
    if raw is None:
        return (), []
    if isinstance(raw, str):
        raw = [p for p in raw.split(",") if p.strip()]
    if not isinstance(raw, list | tuple):
        return (), [ConfigError("pairs", raw, "must be a list of SYMBOL/interval entries", source)]
    pairs: list[Pair] = []
    errors: list[ConfigError] = []
    seen: dict[Pair, int] = {}
    for i, item in enumerate(raw):
        try:
            pair = parse_pair(item)
        except PairError as exc:
            errors.append(ConfigError(f"pairs[{i}]", item, exc.reason, source))
            continue
        if pair in seen:
            errors.append(
                ConfigError(
                    f"pairs[{i}]", item, f"duplicate of pairs[{seen[pair]}] ({pair})", source
                )
            )
            continue
        seen[pair] = i
        pairs.append(pair)
    return tuple(pairs), errors


def _file_sources(data: Mapping[str, Any], origin: str, prefix: tuple[str, ...] = ()) -> Sources:
    found: Sources = {}
    for key, value in data.items():
        path = (*prefix, str(key))
        found[path] = origin
        if isinstance(value, Mapping):
            found.update(_file_sources(value, origin, path))
    return found


def _apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> Sources:
    applied: Sources = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name and name != "QRYPTIFY_PAIRS":
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        try:
            parsed = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            parsed = value
        # Keep secrets and free text as given; YAML would turn "0123" or "on" into non-strings.
        # A text field (passwords, ids, names) keeps even a numeric-looking value as text.
        keep = _is_text_field(path) or not isinstance(parsed, int | float | bool)
        node[path[-1]] = value if keep else parsed
        applied[tuple(path)] = f"environment {name}"
    return applied


def _is_text_field(path: Sequence[str]) -> bool:
    """True when ``path`` names a str / SecretStr setting (optional or not) of Config."""
    model: Any = Config
    annotation: Any = None
    for part in path:
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return False
        annotation = fields[part].annotation
        model = annotation
    options = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else ()
    return any(t in (str, SecretStr) for t in (annotation, *options))


def source_of(key_path: tuple[str, ...], sources: Sources) -> str:
    """Where the value at ``key_path`` (or its nearest configured parent) came from."""
    for end in range(len(key_path), 0, -1):
        found = sources.get(key_path[:end])
        if found is not None:
            return found
    return "default"


def load_config(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Load, override from the environment, validate. Raises ConfigError (ConfigErrors when
    the values are wrong: every problem at once, each with its source)."""
    return build_config(*read_config(path, environ))


def read_config(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> tuple[dict[str, Any], Sources]:
    """The raw settings (file, then environment overrides) and where each came from."""
    env = os.environ if environ is None else environ
    chosen = path if path is not None else env.get("QRYPTIFY_CONFIG")
    data: dict[str, Any] = {}
    sources: Sources = {}
    if chosen is not None:
        file = Path(chosen)
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError("--config", str(file), f"cannot read: {exc.strerror}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise ConfigError("--config", str(file), f"not valid YAML{where}") from None
        except (ValueError, RecursionError) as exc:  # a 5000-digit int; absurd nesting
            raise ConfigError("--config", str(file), f"not usable YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError("--config", str(file), "top level must be a mapping of sections")
        data = loaded
        sources = _file_sources(data, f"file {file}")
    sources.update(_apply_env(data, env))
    return data, sources


def build_config(data: Mapping[str, Any], sources: Sources | None = None) -> Config:
    """Validate ``data``; raises ConfigErrors naming every bad key at once."""
    known = sources or {}
    data = dict(data)
    pairs, errors = _parse_pairs(data.pop("pairs", None), source_of(("pairs",), known))
    warnings: list[str] = []
    ws = data.get("ws")
    if isinstance(ws, dict) and isinstance(ws.get("endpoint"), str):
        old = ws["endpoint"].strip()
        try:
            new = market_stream_url(old) if urlsplit(old).scheme in ("ws", "wss") else old
        except ValueError:  # e.g. "ws://[::1": the validator names the key and the value
            new = old
        if new != old.rstrip("/"):
            warnings.append(
                f"ws.endpoint {old} rewritten to {new}: since 2026-04-23 Binance serves klines "
                "only on the /market routed path (legacy URLs connect but send nothing)"
            )
            data["ws"] = {**ws, "endpoint": new}
    try:
        cfg = Config(pairs=pairs, warnings=tuple(warnings), **data)
    except ValidationError as exc:
        errors += [_to_config_error(err, known) for err in exc.errors(include_url=False)]
        raise ConfigErrors(errors) from None
    except TypeError as exc:  # e.g. a section given as a list
        raise ConfigErrors([*errors, ConfigError("<top>", None, str(exc))]) from None
    k = cfg.kafka
    if cfg.futures.topic in (k.topic, k.offsets_topic, k.dlq_topic):
        errors.append(
            ConfigError(
                "futures.topic",
                cfg.futures.topic,
                "must differ from the kafka topics",
                source_of(("futures", "topic"), known),
            )
        )
    if errors:
        raise ConfigErrors(errors)
    return cfg


def check_config(cfg: Config, sources: Sources | None = None) -> list[ConfigError]:
    """What ``qryptify config check`` adds to validation: what a running pipeline needs."""
    problems: list[ConfigError] = []
    if not cfg.pairs:
        problems.append(
            ConfigError(
                "pairs",
                [],
                "at least one SYMBOL/interval pair is needed, e.g. BTCUSDT/1m",
                source_of(("pairs",), sources or {}),
            )
        )
    return problems


def _to_config_error(err: Any, sources: Sources) -> ConfigError:
    loc = [str(p) for p in err["loc"]]
    key = ".".join(loc) or "<top>"
    source = source_of(tuple(loc), sources)
    value: object = err.get("input")
    if err["type"] == "extra_forbidden":
        section = loc[0] if len(loc) > 1 else None
        allowed = _allowed_keys(section)
        return ConfigError(key, value, f"unknown key; allowed: {', '.join(allowed)}", source)
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if key.endswith("dsn") and isinstance(value, str):
        value = redact_dsn(value)
    msg = err["msg"].removeprefix("Value error, ")
    return ConfigError(key, value, msg, source)


def _allowed_keys(section: str | None) -> list[str]:
    if section is None:
        return [k for k in Config.model_fields if k != "warnings"]
    field = Config.model_fields.get(section)
    annotation = field.annotation if field else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []
