"""Logging: one line per event, JSON when not on a TTY, and secrets scrubbed from everything
(messages, arguments and tracebacks) before any handler sees them (invariant 7)."""

from __future__ import annotations

import json
import logging
import sys
import threading
import traceback
from collections.abc import Iterable
from datetime import UTC, datetime
from types import TracebackType
from urllib.parse import quote, quote_plus, unquote, urlsplit

from qryptify.config import Config
from qryptify.redaction import redact_text

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def register_secret(secret: str | None) -> None:
    """Every later log line has this string, and its URL-encoded forms, replaced by ***."""
    if secret and len(secret) >= 3:
        with _secrets_lock:
            _secrets.update({secret, quote(secret, safe=""), quote(secret), quote_plus(secret)})


def register_config_secrets(cfg: Config) -> None:
    password = urlsplit(cfg.db.dsn.get_secret_value()).password
    if password:
        # urlsplit keeps the percent-encoding; drivers and error messages use the decoded form.
        register_secret(password)
        register_secret(unquote(password))
    if cfg.kafka.sasl_password is not None:
        register_secret(cfg.kafka.sasl_password.get_secret_value())


def scrub(text: str, secrets: Iterable[str] | None = None) -> str:
    """Registered secrets, and any password in a URL or ``password=`` conninfo, become ***."""
    for secret in sorted(secrets if secrets is not None else _secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return redact_text(text)


def _format_exception(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> str:
    return scrub("".join(traceback.format_exception(exc_type, exc, tb)))


def _scrubbing_excepthook(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    sys.stderr.write(_format_exception(exc_type, exc, tb))


def _scrubbing_thread_excepthook(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    name = args.thread.name if args.thread is not None else "?"
    text = _format_exception(args.exc_type, args.exc_value, args.exc_traceback)
    sys.stderr.write(f"Exception in thread {name}:\n{text}")


class RepeatFilter(logging.Filter):
    """Lets the same message through at most once per ``window_s`` (librdkafka repeats a
    failed connection every few milliseconds)."""

    def __init__(self, window_s: float = 60.0) -> None:
        super().__init__()
        self.window_s = window_s
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = record.getMessage()
        with self._lock:
            last = self._last.get(key)
            if last is not None and record.created - last < self.window_s:
                return False
            if len(self._last) > 1000:
                self._last.clear()
            self._last[key] = record.created
        return True


class RedactingFormatter(logging.Formatter):
    def __init__(self, json_lines: bool, service: str) -> None:
        super().__init__()
        self.json_lines = json_lines
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        message = scrub(record.getMessage())
        exc = ""
        if record.exc_info:
            exc = scrub("".join(traceback.format_exception(*record.exc_info)).rstrip())
        if self.json_lines:
            doc: dict[str, object] = {
                "ts": datetime.fromtimestamp(record.created, UTC).isoformat(
                    timespec="milliseconds"
                ),
                "level": record.levelname,
                "service": self.service,
                "logger": record.name,
                "msg": message,
            }
            if exc:
                doc["exc"] = exc
            return json.dumps(doc, ensure_ascii=False)
        stamp = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        line = f"{stamp} {record.levelname:<7} {self.service} {record.name}: {message}"
        return f"{line}\n{exc}" if exc else line


def configure_logging(cfg: Config, service: str) -> None:
    register_config_secrets(cfg)
    fmt = cfg.log.format
    json_lines = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(json_lines, service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(cfg.log.level)
    # Tracebacks nobody caught go through the scrubber too.
    sys.excepthook = _scrubbing_excepthook
    threading.excepthook = _scrubbing_thread_excepthook
    for noisy in ("httpx", "httpcore", "websockets", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    librdkafka = logging.getLogger(LIBRDKAFKA_LOGGER)
    librdkafka.filters[:] = [RepeatFilter()]
    librdkafka.setLevel(max(logging.WARNING, root.level))


#: The logger librdkafka's own lines go to (qryptify.kafka passes it to every client).
LIBRDKAFKA_LOGGER = "qryptify.librdkafka"


def quiet_librdkafka(level: str) -> None:
    """Command-line tools report a broker failure in one line of their own; librdkafka's
    lines only show with log.level DEBUG."""
    if level != "DEBUG":
        logging.getLogger(LIBRDKAFKA_LOGGER).setLevel(logging.CRITICAL)
