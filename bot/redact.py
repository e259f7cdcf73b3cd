"""One place that removes secrets from text before it is shown or logged.

Every log line (through :mod:`bot.log_redaction`), every CLI message and every
Slack payload goes through :func:`redact`. It loads no logging and no URL parsing: every CLI
command imports it before it does anything (``migrabot lint DIR`` starts squawk after it).

>>> redact("postgresql://app:s3cret@db:5432/prod")
'postgresql://app:***@db:5432/prod'
>>> redact("host=db password=s3cret dbname=prod")
'host=db password=*** dbname=prod'
>>> redact("token xoxb-1234-abcd")
'token xoxb-***'
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping

# typing.TYPE_CHECKING without importing typing (start-up time); mypy takes the name as True
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MASK = "***"

# scheme://user:password@host. The password runs to the LAST '@' before the host, so an
# unencoded '@' or '/' in it (invalid, but common in hand-written URLs) is masked whole;
# "host:8080/path/@x" is not a password (a port followed by a path).
_URL_PASSWORD = re.compile(
    r"(?P<pre>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?!\d+[/?#])(?P<pw>\S+?)"
    r"(?=@[^@\s/?#]*(?:[/?#\s'\"<>,;)\]}]|$))")
# ?password=... in a URL query string, or password=... in a libpq key/value DSN
_KV_PASSWORD = re.compile(r"(?P<pre>\b(?:password|passwd|pwd|sslpassword)\s*=\s*)(?P<pw>'[^']*'|[^\s&;]+)", re.I)
# PGPASSWORD=... in an environment dump
_ENV_PASSWORD = re.compile(r"(?P<pre>\bPGPASSWORD=)(?P<pw>\S+)")
# Slack tokens: bot/user/app/refresh/config tokens all start with a known prefix
_SLACK_TOKEN = re.compile(r"\b(?P<pre>xox[abposre]-|xoxe\.xox[bp]-|xapp-)(?P<pw>[A-Za-z0-9-]+)")
# an HTTP Authorization header value
_BEARER = re.compile(r"(?P<pre>\bBearer\s+)(?P<pw>[A-Za-z0-9._~+/=-]{8,})")

# Each pattern with a cheap test of the lower-cased text that every match of it passes: most text
# (a lint report, a rendered run) passes none, and running the patterns on it costs far more.
_PATTERNS: tuple[tuple[re.Pattern[str], re.Pattern[str]], ...] = (
    (_URL_PASSWORD, re.compile("://")),
    # re.I lets "s" match "\u017f" (long s), which lower() keeps
    (_KV_PASSWORD, re.compile("(?:pa[s\u017f][s\u017f]w(?:or)?d|pwd)\\s*=")),
    (_ENV_PASSWORD, re.compile("pgpassword=")),
    (_SLACK_TOKEN, re.compile("xox|xapp-")),
    (_BEARER, re.compile("bearer")),
)

# The environment variables whose values are secrets wherever they appear.
SECRET_ENV_VARS = ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET", "PGPASSWORD")

_known_secrets: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Remember a secret value (a signing secret, a password) so that it is masked wherever it appears.

    A percent-encoded password is remembered in both spellings.

    >>> register_secret("hunter2-long-enough")
    >>> redact("the secret is hunter2-long-enough")
    'the secret is ***'
    """
    if not value or len(value) < 4:  # masking "a" or "pw" everywhere would garble every message
        return
    with _lock:
        _known_secrets.add(value)
        decoded = percent_decoded(value)
        if decoded != value and len(decoded) >= 4:
            _known_secrets.add(decoded)


def percent_decoded(value: str) -> str:
    """``urllib.parse.unquote(value)``: runs of ``%XX`` decoded as UTF-8 (invalid bytes replaced), without
    loading urllib (every CLI command imports this module before it starts).

    >>> percent_decoded("p%40ss%C3%A9%zz")
    'p@ssé%zz'
    """
    return _PERCENT_RUN.sub(lambda m: bytes.fromhex(m.group().replace("%", "")).decode("utf-8", "replace"), value)


_PERCENT_RUN = re.compile("(?:%[0-9A-Fa-f]{2})+")


def register_env_secrets(environ: Mapping[str, str]) -> None:
    """Remember the values of :data:`SECRET_ENV_VARS` (Slack tokens, signing secret) as secrets."""
    for name in SECRET_ENV_VARS:
        register_secret(environ.get(name))


def redact(text: Any) -> str:
    """Return ``text`` as a string with every password and token replaced by ``***``."""
    s = text if isinstance(text, str) else str(text)
    # known secrets first: a pattern could otherwise mask only part of one and leave the rest
    with _lock:
        secrets = sorted(_known_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in s:
            s = s.replace(secret, MASK)
    lowered = s.lower()
    for pattern, hint in _PATTERNS:
        if hint.search(lowered):
            s = pattern.sub(_masked, s)
    return s


def _masked(m: re.Match[str]) -> str:
    return m.group("pre") + MASK


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
