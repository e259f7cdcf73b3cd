"""One place that removes secrets from text before it is shown or logged.

Every log line (through :class:`RedactingFilter`), every CLI message and every
Slack payload goes through :func:`redact`.

>>> redact("postgresql://app:s3cret@db:5432/prod")
'postgresql://app:***@db:5432/prod'
>>> redact("host=db password=s3cret dbname=prod")
'host=db password=*** dbname=prod'
>>> redact("token xoxb-1234-abcd")
'token xoxb-***'
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

MASK = "***"

# scheme://user:password@host  (password may contain anything but '@' and whitespace)
_URL_PASSWORD = re.compile(r"(?P<pre>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s/]+)(?=@)")
# ?password=... in a URL query string, or password=... in a libpq key/value DSN
_KV_PASSWORD = re.compile(r"(?P<pre>\b(?:password|passwd|pwd|sslpassword)\s*=\s*)(?P<pw>'[^']*'|[^\s&;]+)", re.I)
# PGPASSWORD=... in an environment dump
_ENV_PASSWORD = re.compile(r"(?P<pre>\bPGPASSWORD=)(?P<pw>\S+)")
_SLACK_TOKEN = re.compile(r"\b(?P<pre>xox[abposre]-|xapp-)(?P<pw>[A-Za-z0-9-]+)")

_known_secrets: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Remember a secret value (a signing secret, a password) so that it is masked wherever it appears.

    >>> register_secret("hunter2-long-enough")
    >>> redact("the secret is hunter2-long-enough")
    'the secret is ***'
    """
    if value and len(value) >= 4:
        with _lock:
            _known_secrets.add(value)


def redact(text: Any) -> str:
    """Return ``text`` as a string with every password and token replaced by ``***``."""
    s = text if isinstance(text, str) else str(text)
    s = _URL_PASSWORD.sub(lambda m: m.group("pre") + MASK, s)
    s = _KV_PASSWORD.sub(lambda m: m.group("pre") + MASK, s)
    s = _ENV_PASSWORD.sub(lambda m: m.group("pre") + MASK, s)
    s = _SLACK_TOKEN.sub(lambda m: m.group("pre") + MASK, s)
    with _lock:
        secrets = sorted(_known_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in s:
            s = s.replace(secret, MASK)
    return s


def redact_obj(value: Any) -> Any:
    """Redact every string inside a JSON-like structure (dicts, lists), keeping its shape.

    >>> redact_obj({"url": "postgres://u:p@h/db", "n": 1})
    {'url': 'postgres://u:***@h/db', 'n': 1}
    """
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_obj(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_obj(v) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """A logging filter that redacts the formatted message of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not hide the log line
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            record.exc_text = redact(
                logging.Formatter().formatException(record.exc_info)  # type: ignore[arg-type]
            )
            record.exc_info = None
            del exc
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Attach :class:`RedactingFilter` to every handler of ``logger`` (the root logger by default)."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
