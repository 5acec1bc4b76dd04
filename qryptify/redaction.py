"""Secret redaction (invariant 7): every message, log line and printed DSN passes through here.

Pure text functions, no I/O. Covers the forms a PostgreSQL DSN or a broker URL takes: a
password in URL userinfo (``postgresql://u:pw@h/db``), in a URL query (``?password=pw``), and
in libpq keyword/value conninfo (``host=h password=pw``, quoted or bare).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import parse_qsl, unquote, urlsplit

#: Key names that hold secrets: any level of a dotted key, any nesting of a shown mapping.
SECRET_WORDS = ("pass", "pwd", "secret", "token", "credential", "private")
# A password in URL userinfo: up to the last '@' of the authority (an unencoded '@' in a
# password happens; '/', '?' and '#' end the authority, so paths like stream@kline stay).
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/?#@\s]*:)[^/?#\s]*@")
# A password in a URL query: ?password=… or &password=… up to the next parameter.
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)[^&#\s]*", re.I)
# libpq keyword/value conninfo: password=... (quoted or bare); not the query form above.
_KEYWORD_PASSWORD = re.compile(r"(?P<head>(?<![?&])\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.I)
_KEYWORD_VALUE = re.compile(r"\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", re.I)
_HIDDEN = "***"


def is_secret_key(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in SECRET_WORDS)


def redact_text(text: str) -> str:
    """Replace passwords in URLs (userinfo and query) and in ``password=…`` conninfo by ***."""
    text = _URL_PASSWORD.sub(lambda m: f"{m.group('head')}{_HIDDEN}@", text)
    text = _QUERY_PASSWORD.sub(lambda m: f"{m.group('head')}{_HIDDEN}", text)
    return _KEYWORD_PASSWORD.sub(lambda m: f"{m.group('head')}{_HIDDEN}", text)


def redact_dsn(dsn: str) -> str:
    """A DSN fit to print: URL or keyword form, every password replaced by ***."""
    return redact_text(dsn)


def dsn_passwords(dsn: str) -> list[str]:
    """Every password ``dsn`` carries, as written and decoded (to scrub driver messages that
    quote it)."""
    found: list[str] = []
    if "://" in dsn:
        try:
            parts = urlsplit(dsn)
            if parts.password:
                found += [parts.password, unquote(parts.password)]
            found += [v for k, v in parse_qsl(parts.query) if k.lower() == "password"]
        except ValueError:
            pass
        found += [m.group(0)[len(m.group("head")) :] for m in _QUERY_PASSWORD.finditer(dsn)]
    for m in _KEYWORD_VALUE.finditer(dsn):
        value = m.group(1)
        found.append(value)
        if value.startswith("'") and value.endswith("'") and len(value) >= 2:
            found.append(value[1:-1].replace("\\'", "'").replace("\\\\", "\\"))
    # Longest first, so that a password containing another is replaced whole.
    return sorted({p for p in found if p}, key=len, reverse=True)


def redact_message(message: str, dsn: str) -> str:
    """A driver or CLI message fit to show: the DSN in its redacted form, and its password
    removed wherever the message quotes it."""
    cleaned = message.replace(dsn, redact_dsn(dsn)) if dsn else message
    for password in dsn_passwords(dsn):
        cleaned = cleaned.replace(password, _HIDDEN)
    return redact_text(cleaned).strip()


def redact_value(value: object) -> object:
    """A copy of a config value fit to show: secret-named keys and passwords in text removed."""
    if hasattr(value, "get_secret_value"):  # pydantic SecretStr / SecretBytes
        return "<redacted>"
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {
            k: "<redacted>" if is_secret_key(str(k)) else redact_value(v) for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(v) for v in value]
    return value
