"""Passwords and tokens never reach a user, a log or Slack: everything goes through ``redact``."""

from __future__ import annotations

import logging
from urllib.parse import unquote

import pytest

from bot.log_redaction import RedactingFilter, install_log_redaction
from bot.redact import percent_decoded, redact, redact_obj, register_env_secrets


@pytest.mark.parametrize(("text", "secret"), [
    ("postgresql://app:s3cretpw@db:5432/prod", "s3cretpw"),
    ("postgres://app:s3cretpw@db/prod?sslmode=require", "s3cretpw"),
    ("postgresql://:s3cretpw@db/prod", "s3cretpw"),
    # unencoded '@' and '/' in a hand-written URL: the whole password goes, not just its start
    ("postgresql://app:p@ssw0rd@db:5432/prod", "ssw0rd"),
    ("postgresql://app:ab/cd99@db/prod", "cd99"),
    ("postgresql://app:p%40ssw0rd@db/prod", "ssw0rd"),
    ("connect failed: 'postgresql://app:s3cretpw@db/prod'", "s3cretpw"),
    ('{"url": "postgresql://app:s3cretpw@db/prod"}', "s3cretpw"),
    ("postgresql://app@db/prod?password=s3cretpw&sslmode=require", "s3cretpw"),
    ("host=db user=app password=s3cretpw dbname=prod", "s3cretpw"),
    ("host=db password='s3cret pw' dbname=prod", "s3cret pw"),
    ("PGPASSWORD=s3cretpw pg_dump prod", "s3cretpw"),
    ("token xoxb-123456-7890-abcdefSECRET", "abcdefSECRET"),
    ("app token xapp-1-A0123-456-abcdefSECRET", "abcdefSECRET"),
    ("Authorization: Bearer abcdefSECRET123", "abcdefSECRET123"),
    # the key in any case, and spelled with a long s (which case-insensitive matching folds to "s")
    ("HOST=db PASSWORD=s3cretpw", "s3cretpw"),
    ("pa\u017f\u017fword=s3cretpw", "s3cretpw"),
    # a secret at the end of a long text (a lint report, a run's log) is found all the same
    ('ALTER TABLE "user" ADD COLUMN "password" TEXT;\n' * 2000 + "postgresql://app:s3cretpw@db/prod",
     "s3cretpw"),
])
def test_secrets_are_masked(text, secret):
    out = redact(text)
    assert secret not in out
    assert "***" in out


@pytest.mark.parametrize("text", [
    "postgresql://postgres@127.0.0.1:5432/mydb",
    "https://api.example.com:8443/health",
    "https://host:8080/users/@someone",
    "migration 20240101_init applied in 0.2s",
])
def test_text_without_secrets_is_unchanged(text):
    assert redact(text) == text


def test_both_urls_in_one_message_are_masked():
    out = redact("from postgresql://a:firstpw1@h1/db to postgresql://b:secondpw2@h2/db")
    assert "firstpw1" not in out and "secondpw2" not in out
    assert "@h1/db" in out and "@h2/db" in out


def test_signing_secret_from_the_environment_is_masked_everywhere():
    register_env_secrets({"SLACK_SIGNING_SECRET": "8f742231b10e8888abcd99yyyzzz"})
    assert redact("bad signature with 8f742231b10e8888abcd99yyyzzz") == "bad signature with ***"


def test_redact_obj_keeps_the_shape():
    data = {"env": {"url": "postgresql://u:pw123456@h/db", "n": 3, "names": ["a", "xoxb-1-zzzz"]}}
    assert redact_obj(data) == {"env": {"url": "postgresql://u:***@h/db", "n": 3, "names": ["a", "xoxb-***"]}}


def _captured_logger(name: str) -> tuple[logging.Logger, list[str]]:
    lines: list[str] = []

    class ListHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    logger = logging.getLogger(name)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.handlers = [ListHandler()]
    install_log_redaction(logger)
    return logger, lines


def test_log_lines_arguments_and_tracebacks_are_redacted():
    logger, lines = _captured_logger("migrabot.test.redact")
    logger.info("connecting to %s", "postgresql://app:logpw12345@db/prod")
    try:
        raise RuntimeError("failed for postgresql://app:excpw12345@db/prod")
    except RuntimeError:
        logger.exception("boom with token %s", "xoxb-1-2-logtoken")
    text = "\n".join(lines)
    assert "connecting to postgresql://app:***@db/prod" in text
    assert "RuntimeError" in text  # the traceback is kept, only the secret goes
    for secret in ("logpw12345", "excpw12345", "logtoken"):
        assert secret not in text


def test_installing_twice_adds_one_filter():
    logger, _ = _captured_logger("migrabot.test.redact2")
    install_log_redaction(logger)
    assert sum(isinstance(f, RedactingFilter) for f in logger.handlers[0].filters) == 1


@pytest.mark.parametrize("text", ["plain", "p%40ss", "%C3%A9t%C3%A9", "%E2%82", "100%", "%zz%4", "a%2Fb%2fc",
                                  "%F0%9F%98%80"])
def test_a_percent_encoded_password_is_decoded_as_urllib_does(text: str) -> None:
    assert percent_decoded(text) == unquote(text)
