"""The one exception tree of the project.

    IngestorError
    ├── ConfigError(key, value, reason, source)  bad configuration; exit code 2 at start
    │   └── ConfigErrors(errors)                 all of one config's problems at once
    ├── PairError(value, reason)                 bad symbol / interval / pair string
    ├── ExchangeError                            anything the exchange (or its simulator) did
    │   ├── ExchangeRejected(status, code, msg)  a 4xx with a Binance error body (-1121, -1120, …)
    │   ├── RateLimited(retry_after_s)           HTTP 429: wait, then retry
    │   ├── IpBanned(until_ms)                   HTTP 418: stop every request until then
    │   ├── ExchangeUnavailable(reason)          5xx, timeouts, connection errors: retryable
    │   └── MalformedPayload(source, reason)     JSON / CSV / frame that is not what Binance sends
    ├── ArchiveError(path, reason)               missing or corrupt archive file (checksum, rows)
    ├── UndecodableRecord(reason)                Avro bytes that cannot be decoded        → DLQ
    ├── InvalidKline(reason)                     decoded, but violates the kline rules    → DLQ
    │   └── InvalidEmptyRange(reason)            an empty-range event that cannot be true → DLQ
    ├── InvalidFuturesRecord(reason)             a bad funding or price-kline record      → DLQ
    ├── KeyMismatch(key, expected)               record key is not its value's pair key   → DLQ
    ├── DatabaseUnavailable(reason)              PostgreSQL down or failing: retry, commit nothing
    ├── KafkaFailure                             anything the Kafka cluster did or failed to do
    │   ├── KafkaUnavailable(reason)             the brokers cannot be reached
    │   ├── KafkaSetupError                      admin: topics cannot be listed or created
    │   ├── DeliveryFailed(pair, position, reason)  a record not acknowledged after retries
    │   ├── FuturesPublishFailed                 a futures batch not acknowledged in full
    │   ├── OffsetStoreError                     the source-offsets topic cannot be read
    │   ├── DlqUnavailable(reason)               DLQ records not delivered: retry, commit nothing
    │   └── KafkaFatal(reason)                   librdkafka fatal error or lost position: stop
    └── NoDataYet(reason)                        nothing published or stored yet to work on

Whether an error is worth retrying unchanged is decided in one place, ``is_retryable``:
RateLimited, ExchangeUnavailable, DatabaseUnavailable and DlqUnavailable are; the rest are not.

Every exception carries the data its handler needs and a short message naming the bad value.
Messages never carry secrets: ``ConfigError`` hides values of secret-named keys and of unknown
keys, and strips passwords from URLs and ``password=`` conninfo (``qryptify.redaction``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from qryptify.redaction import is_secret_key, redact_text, redact_value

if TYPE_CHECKING:  # only for the annotation: pairs itself raises PairError from here
    from qryptify.pairs import Pair


class IngestorError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(IngestorError):
    """``source`` says where the value came from: ``file PATH``, ``environment NAME`` or
    ``default``."""

    def __init__(self, key: str, value: object, reason: str, source: str | None = None) -> None:
        self.key = key
        self.value = value
        self.reason = reason
        self.source = source
        origin = f" (from {source})" if source else ""
        super().__init__(f"config {key}{_shown(key, value, reason)}: {redact_text(reason)}{origin}")


class ConfigErrors(ConfigError):
    """Every problem of one configuration at once, one per line; ``key``/``value``/``reason``
    are the first one's."""

    def __init__(self, errors: Sequence[ConfigError]) -> None:
        if not errors:
            raise ValueError("ConfigErrors needs at least one error")
        self.errors = tuple(errors)
        first = self.errors[0]
        self.key, self.value, self.reason, self.source = (
            first.key,
            first.value,
            first.reason,
            first.source,
        )
        IngestorError.__init__(self, "\n".join(str(e) for e in self.errors))


def _shown(key: str, value: object, reason: str) -> str:
    if reason.startswith("unknown key"):
        # The value of a misspelt key is useless to the reader and may be a secret
        # (``sasl_passwd: …``): name the key only.
        return ""
    if is_secret_key(key):
        return "=<redacted>"
    return f"={redact_value(value)!r}"


class PairError(IngestorError, ValueError):
    def __init__(self, value: object, reason: str) -> None:
        self.value = value
        self.reason = reason
        super().__init__(f"{value!r}: {reason}")


class ExchangeError(IngestorError):
    """Something the exchange answered or failed to answer."""


class ExchangeRejected(ExchangeError):
    def __init__(self, status: int, code: int | None, msg: str) -> None:
        self.status = status
        self.code = code
        self.msg = msg
        super().__init__(f"exchange rejected the request: HTTP {status} code={code} {msg}")


class RateLimited(ExchangeError):
    def __init__(self, retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(f"rate limited (HTTP 429); retry after {retry_after_s:g}s")


class IpBanned(ExchangeError):
    def __init__(self, until_ms: int) -> None:
        self.until_ms = until_ms
        super().__init__(f"IP banned (HTTP 418) until {until_ms} ms")


class ExchangeUnavailable(ExchangeError):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"exchange unavailable: {reason}")


class MalformedPayload(ExchangeError, ValueError):
    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"malformed {source} payload: {reason}")


class ArchiveError(IngestorError):
    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"archive {path}: {reason}")


class UndecodableRecord(IngestorError, ValueError):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"undecodable record: {reason}")


class InvalidKline(IngestorError, ValueError):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"invalid kline: {reason}")


class InvalidEmptyRange(InvalidKline):
    """An empty-range event that cannot be true (outside 2010..2200, reversed, implausibly
    long, confirmed before it began)."""


class KeyMismatch(IngestorError, ValueError):
    """The record's key is not the pair of its value: it would sit in the wrong partition."""

    def __init__(self, key: bytes | None, expected: str) -> None:
        self.key = key
        self.expected = expected
        super().__init__(f"record key {key!r:.60} is not the value's pair key {expected!r}")


class DatabaseUnavailable(IngestorError):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"database unavailable: {reason}")


class KafkaFailure(IngestorError):
    """Something the Kafka cluster answered or failed to answer."""


class KafkaUnavailable(KafkaFailure):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"kafka unavailable: {reason}")


class KafkaSetupError(KafkaFailure):
    pass


class DeliveryFailed(KafkaFailure):
    """Kafka reported a record as not delivered (after the producer's own retries)."""

    def __init__(self, pair: Pair, position: int, reason: str) -> None:
        self.pair = pair
        self.position = position
        self.reason = reason
        super().__init__(f"delivery of {pair} @ {position} failed: {reason}")


class FuturesPublishFailed(KafkaFailure):
    """Kafka did not acknowledge every futures record of a batch."""


class OffsetStoreError(KafkaFailure):
    pass


class DlqUnavailable(KafkaFailure):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"DLQ unavailable: {reason}")


class KafkaFatal(KafkaFailure):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"fatal Kafka error: {reason}")


class NoDataYet(IngestorError):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"no data yet: {reason}")


def is_retryable(exc: BaseException) -> bool:
    """True when the same request may succeed later without any change."""
    return isinstance(exc, RateLimited | ExchangeUnavailable | DatabaseUnavailable | DlqUnavailable)


class InvalidFuturesRecord(IngestorError, ValueError):
    """A funding (or other futures) record that breaks its rules; goes to the DLQ."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)
