"""Split a migration file into statements the way PostgreSQL's own lexer sees them.

    >>> [s.text for s in split_sql("CREATE TABLE a (x int); -- done\\nINSERT INTO a VALUES (1)")]
    ['CREATE TABLE a (x int)', 'INSERT INTO a VALUES (1)']
    >>> split_sql("SELECT 1;\\n\\nDO $$ BEGIN PERFORM 1; END $$")[1].line
    3
    >>> needs_no_transaction("CREATE INDEX CONCURRENTLY i ON t (x);")
    True

Handled: ``--`` and nested ``/* */`` comments, ``'...'`` strings with ``''`` escapes,
``E'...'`` strings with backslash escapes, ``"..."`` identifiers, dollar-quoted bodies
(``$$`` and ``$tag$``), SQL-standard function bodies (``BEGIN ATOMIC ... END``), a missing
final semicolon; empty statements are skipped. A statement's text starts at its first token
(leading comments are not part of it) and excludes the terminating semicolon.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "Statement",
    "needs_no_transaction",
    "non_transactional_reason",
    "split_sql",
    "statement_non_transactional_reason",
]


@dataclass(frozen=True)
class Statement:
    """One SQL statement: its text and the 1-based line where it starts."""

    text: str
    line: int
    start: int = 0  # character offset of the first token in the source
    end: int = 0  # character offset just past the statement (before its semicolon)

    @property
    def first_line(self) -> str:
        """The statement's first line, for messages ("statement 3 (line 12): CREATE INDEX ...")."""
        return self.text.splitlines()[0] if self.text else ""


_IDENT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_$")
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_ROUTINE_HEAD = re.compile(r"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?(?:FUNCTION|PROCEDURE)\b", re.I)


def _skip_comment_or_space(sql: str, i: int) -> int:
    """Index of the first character at or after ``i`` that is neither whitespace nor a comment."""
    n = len(sql)
    while i < n:
        c = sql[i]
        if c.isspace():
            i += 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j + 1
        elif sql.startswith("/*", i):
            i = _end_of_block_comment(sql, i)
        else:
            break
    return i


def _end_of_block_comment(sql: str, i: int) -> int:
    """Index just past the (possibly nested) block comment starting at ``i``."""
    depth = 0
    n = len(sql)
    while i < n:
        if sql.startswith("/*", i):
            depth += 1
            i += 2
        elif sql.startswith("*/", i):
            depth -= 1
            i += 2
            if depth == 0:
                return i
        else:
            i += 1
    return n  # unterminated: PostgreSQL will report it; we just stop


def _end_of_quoted(sql: str, i: int, quote: str, backslash: bool) -> int:
    """Index just past the quoted literal/identifier whose opening quote is at ``i``."""
    n = len(sql)
    i += 1
    while i < n:
        c = sql[i]
        if backslash and c == "\\":
            i += 2
            continue
        if c == quote:
            if i + 1 < n and sql[i + 1] == quote:  # doubled quote is an escaped quote
                i += 2
                continue
            return i + 1
        i += 1
    return n


def split_sql(sql: str) -> list[Statement]:
    """Split ``sql`` into statements at top-level semicolons.

    >>> [s.text for s in split_sql("SELECT ';' /* ; /* nested ; */ */; SELECT E'\\\\';'")]
    ["SELECT ';' /* ; /* nested ; */ */", "SELECT E'\\\\';'"]
    """
    statements: list[Statement] = []
    n = len(sql)
    i = 0
    start: int | None = None  # offset of the current statement's first token
    atomic_depth = 0  # BEGIN ATOMIC ... END nesting inside CREATE FUNCTION/PROCEDURE
    routine: bool | None = None  # is the current statement a CREATE FUNCTION/PROCEDURE?

    def finish(end: int) -> None:
        nonlocal start, atomic_depth, routine
        if start is not None:
            text = sql[start:end].rstrip()
            if text:
                line = sql.count("\n", 0, start) + 1
                statements.append(Statement(text=text, line=line, start=start, end=start + len(text)))
        start = None
        atomic_depth = 0
        routine = None

    while i < n:
        c = sql[i]
        if c.isspace():
            i += 1
            continue
        if c == "-" and sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j + 1
            continue
        if c == "/" and sql.startswith("/*", i):
            i = _end_of_block_comment(sql, i)
            continue
        if c == ";" and atomic_depth == 0:
            finish(i)
            i += 1
            continue
        if start is None:
            start = i
        prev = sql[i - 1] if i > 0 else ""
        if c == "'":
            i = _end_of_quoted(sql, i, "'", backslash=False)
        elif c == '"':
            i = _end_of_quoted(sql, i, '"', backslash=False)
        elif c in "eE" and i + 1 < n and sql[i + 1] == "'" and prev not in _IDENT_CHARS:
            i = _end_of_quoted(sql, i + 1, "'", backslash=True)
        elif c == "$" and prev not in _IDENT_CHARS:
            m = _DOLLAR_TAG.match(sql, i)
            if m:
                tag = m.group(0)
                close = sql.find(tag, m.end())
                i = n if close < 0 else close + len(tag)
            else:
                i += 1  # a positional parameter like $1
        elif (c.isalpha() or c == "_") and prev not in _IDENT_CHARS:
            m = _WORD.match(sql, i)
            assert m is not None
            word = m.group(0).upper()
            if routine is None:
                routine = bool(_ROUTINE_HEAD.match(sql, start))
            if routine:
                # psql's rule: inside CREATE FUNCTION/PROCEDURE, BEGIN and CASE open a block
                # that END closes, so semicolons in a BEGIN ATOMIC body do not end the statement.
                if word == "BEGIN" or (word == "CASE" and atomic_depth > 0):
                    atomic_depth += 1
                elif word == "END" and atomic_depth > 0:
                    atomic_depth -= 1
            i = m.end()
        else:
            i += 1
    finish(n)
    return statements


# --- what cannot run inside a transaction block ------------------------------------------------

_NO_TX_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\b", re.I), "CREATE INDEX CONCURRENTLY"),
    (re.compile(r"^DROP\s+INDEX\s+CONCURRENTLY\b", re.I), "DROP INDEX CONCURRENTLY"),
    (re.compile(r"^REINDEX\b[^;]*?\bCONCURRENTLY\b", re.I | re.S), "REINDEX ... CONCURRENTLY"),
    (re.compile(r"^VACUUM\b", re.I), "VACUUM"),
    (re.compile(r"^(?:CREATE|DROP)\s+DATABASE\b", re.I), "CREATE/DROP DATABASE"),
    (re.compile(r"^(?:CREATE|DROP)\s+TABLESPACE\b", re.I), "CREATE/DROP TABLESPACE"),
    (re.compile(r"^ALTER\s+SYSTEM\b", re.I), "ALTER SYSTEM"),
    (re.compile(r"^(?:CREATE|DROP)\s+SUBSCRIPTION\b", re.I), "CREATE/DROP SUBSCRIPTION"),
]
_ADD_VALUE = re.compile(r"^ALTER\s+TYPE\b.*\bADD\s+VALUE\b", re.I | re.S)
_TX_CONTROL = re.compile(
    r"^(?:BEGIN|START\s+TRANSACTION|COMMIT|END|ROLLBACK|ABORT|SAVEPOINT|RELEASE|PREPARE\s+TRANSACTION)\b", re.I)
_PG12 = 120000
# Every reason above starts with or contains one of these words; a file without any has none.
_NO_TX_WORDS = re.compile(r"concurrently|vacuum|database|tablespace|system|subscription|value|begin|start|commit"
                          r"|end|rollback|abort|savepoint|release|prepare", re.I)


def statement_non_transactional_reason(text: str, server_version: int = 150000) -> str | None:
    """Why this one statement cannot run inside a transaction block, or None.

    ``server_version`` is PostgreSQL's ``server_version_num`` (ALTER TYPE ... ADD VALUE only
    needs its own transaction before 12).

    >>> statement_non_transactional_reason("vacuum analyze t")
    'VACUUM'
    >>> statement_non_transactional_reason("ALTER TYPE mood ADD VALUE 'meh'") is None
    True
    >>> statement_non_transactional_reason("ALTER TYPE mood ADD VALUE 'meh'", server_version=110000)
    'ALTER TYPE ... ADD VALUE (PostgreSQL < 12)'
    """
    head = text[_skip_comment_or_space(text, 0):]
    for pattern, reason in _NO_TX_PATTERNS:
        if pattern.match(head):
            return reason
    if server_version < _PG12 and _ADD_VALUE.match(head):
        return "ALTER TYPE ... ADD VALUE (PostgreSQL < 12)"
    if _TX_CONTROL.match(head):
        return "the file manages its own transaction (BEGIN/COMMIT)"
    return None


def non_transactional_reason(sql: str, server_version: int = 150000) -> str | None:
    """The first reason why ``sql`` cannot run as one transaction, or None when it can.

    >>> non_transactional_reason("BEGIN; CREATE TABLE t (x int); COMMIT;")
    'the file manages its own transaction (BEGIN/COMMIT)'
    >>> non_transactional_reason("DO $$ BEGIN PERFORM 1; COMMIT; END $$") is None
    True
    """
    if not _NO_TX_WORDS.search(sql):  # none of the words a reason needs: no need to split (most files)
        return None
    for statement in split_sql(sql):
        reason = statement_non_transactional_reason(statement.text, server_version)
        if reason:
            return reason
    return None


def needs_no_transaction(sql: str, server_version: int = 150000) -> bool:
    """True when ``sql`` must run statement by statement outside a transaction block."""
    return non_transactional_reason(sql, server_version) is not None
