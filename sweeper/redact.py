"""Mask secrets in log output and in any text that may reach a user.

``install_redaction(secrets)`` registers the secret values in play (tokens, passwords) and puts a
``RedactingFilter`` on the root logger's handlers and on the ``httpx``/``httpcore`` loggers, whose
DEBUG output includes URLs and response headers. ``redact(text)`` applies the same masking to any
string, e.g. server error text before it goes into an exception message or the ledger.
"""

from __future__ import annotations

import base64
import logging
import re
import threading
from collections.abc import Iterable

MASK = "***"
# A secret shorter than this would mask every occurrence of its letters in ordinary text (a token
# "ab" turns "table" into "t***le"), so it can neither be masked safely nor be trusted as a
# credential: sweeper.auth refuses such credentials, and add_secrets() skips them.
MIN_SECRET_LENGTH = 8

# "Bearer <token>" / "Basic <b64>" wherever they appear, also inside httpcore's header tuples
# (b'Bearer abc'), so the value stops at whitespace or a quote.
_SCHEME_VALUE = re.compile(r"(?i)\b(Bearer|Basic)(\s+)[^\s'\"]+")

# Loggers that print request/response details at DEBUG; they propagate to the root handlers,
# but they get their own filter too in case someone attached a handler to them directly.
_HTTP_LOGGERS = ("httpx", "httpcore", "sweeper")

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None


def _compile(secrets: set[str]) -> re.Pattern[str] | None:
    if not secrets:
        return None
    # Longest first so a secret that contains another is masked as a whole.
    ordered = sorted(secrets, key=len, reverse=True)
    return re.compile("|".join(re.escape(s) for s in ordered))


def add_secrets(secrets: Iterable[str]) -> None:
    """Register more secret values to mask.

    Values shorter than ``MIN_SECRET_LENGTH`` (after stripping) are skipped: masking them would
    garble unrelated text. Credentials in use are never that short (``sweeper.auth`` refuses them).
    """
    global _pattern
    with _lock:
        _secrets.update(s for s in (v.strip() for v in secrets) if len(s) >= MIN_SECRET_LENGTH)
        _pattern = _compile(_secrets)


def basic_forms(username: str, password: str) -> tuple[str, ...]:
    """Every form HTTP Basic credentials travel in: the password, ``user:password`` and its base64.

    A server that echoes the Authorization value without the ``Basic`` prefix (or a proxy log that
    quotes it) shows only the base64, which the scheme pattern cannot recognise. The unpadded
    base64 is included too, for text that drops the ``=`` padding.
    """
    pair = f"{username}:{password}"
    encoded = base64.b64encode(pair.encode("utf-8")).decode("ascii")
    return tuple(dict.fromkeys((password, pair, encoded, encoded.rstrip("="))))


def clear_secrets() -> None:
    """Forget every registered secret (for tests and for a new run in the same process)."""
    global _pattern
    with _lock:
        _secrets.clear()
        _pattern = None


def redact(text: str) -> str:
    """Return ``text`` with every registered secret and every Bearer/Basic credential masked."""
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    return _SCHEME_VALUE.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in the message, its arguments and any traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed log call must not break logging; leave it to the handler
            return True
        record.msg = redact(message)
        record.args = None
        if record.exc_info and record.exc_info[0] is not None:
            # Pre-format the traceback so the handler's formatter uses the masked text.
            if not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact(record.exc_text)
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_FILTER = RedactingFilter()


def _attach(filterer: logging.Filterer) -> None:
    if _FILTER not in filterer.filters:
        filterer.addFilter(_FILTER)


def install_redaction(secrets: Iterable[str]) -> None:
    """Register ``secrets`` and mask them (and Bearer/Basic values) in all log output.

    Call it after logging handlers are configured: the filter is attached to the handlers that
    exist now (root and the HTTP loggers) and to the HTTP loggers themselves.
    """
    add_secrets(secrets)
    root = logging.getLogger()
    for handler in root.handlers:
        _attach(handler)
    for name in _HTTP_LOGGERS:
        logger = logging.getLogger(name)
        _attach(logger)
        for handler in logger.handlers:
            _attach(handler)


def uninstall_redaction() -> None:
    """Remove the filter installed by ``install_redaction`` and forget the secrets."""
    root = logging.getLogger()
    for filterer in [*root.handlers, *(logging.getLogger(n) for n in _HTTP_LOGGERS)]:
        filterer.removeFilter(_FILTER)
    for name in _HTTP_LOGGERS:
        for handler in logging.getLogger(name).handlers:
            handler.removeFilter(_FILTER)
    clear_secrets()
