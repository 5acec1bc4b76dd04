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
from urllib.parse import quote, urlsplit

from qryptify.config import Config

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def register_secret(secret: str | None) -> None:
    """Every later log line has this string replaced by ***."""
    if secret and len(secret) >= 3:
        with _secrets_lock:
            _secrets.add(secret)
            _secrets.add(quote(secret, safe=""))


def register_config_secrets(cfg: Config) -> None:
    register_secret(urlsplit(cfg.db.dsn.get_secret_value()).password)
    if cfg.kafka.sasl_password is not None:
        register_secret(cfg.kafka.sasl_password.get_secret_value())


def scrub(text: str, secrets: Iterable[str] | None = None) -> str:
    for secret in sorted(secrets if secrets is not None else _secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


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
    for noisy in ("httpx", "httpcore", "websockets", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
