"""Split a migration file into statements the way PostgreSQL's own lexer sees them.

    >>> [s.text for s in split_sql("CREATE TABLE a (x int); -- done\\nINSERT INTO a VALUES (1)")]
    ['CREATE TABLE a (x int)', 'INSERT INTO a VALUES (1)']
    >>> split_sql("SELECT 1;\\n\\nDO $$ BEGIN PERFORM 1; END $$")[1].line
    3
    >>> needs_no_transaction("CREATE INDEX CONCURRENTLY i ON t (x);")
    True

Handled: ``--`` and nested ``/* */`` comments, ``'...'`` strings with ``''`` escapes,
``E'...'`` strings with backslash escapes, ``"..."`` identifiers, dollar-quoted bodies
(``$$`` and ``$tag$``), SQL-standard function bodies (``BEGIN ATOMIC ... END``), semicolons
inside parentheses (a rule's ``DO ALSO (...; ...)``), unquoted non-ASCII names, a missing final
semicolon; empty statements are skipped (psql's rules). A statement's text starts at its first token
(leading comments are not part of it) and excludes the terminating semicolon.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = [
    "Statement",
    "needs_no_transaction",
    "non_transactional_reason",
    "split_sql",
    "statement_non_transactional_reason",
]


class Statement(NamedTuple):
    """One SQL statement: its text and the 1-based line where it starts (a named tuple, not a dataclass:
    ``migrabot lint DIR`` loads this module on its way and dataclasses cost it 7 ms)."""

    text: str
    line: int
    start: int = 0  # character offset of the first token in the source
    end: int = 0  # character offset just past the statement (before its semicolon)

    @property
    def first_line(self) -> str:
        """The statement's first line, for messages ("statement 3 (line 12): CREATE INDEX ...")."""
        return self.text.splitlines()[0] if self.text else ""


# Characters that continue an identifier (PostgreSQL's ident_cont: letters, digits, _, $ and every
# non-ASCII character), so that the "$" of "a$1$" or the "E" of "nameE'x'" does not start a token.
# Written as "not one of the other ASCII characters": a class spelling out the non-ASCII range costs
# 5 to 14 ms to compile (more with re.I), paid by every `migrabot` command that imports this module.
_ID = r"^\x00-\x23\x25-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f"
# The next character that matters for splitting. Everything else (words, numbers, operators,
# whitespace) is skipped by the regular expression engine, not by a Python loop: a migration is
# mostly words, and this runs on every file a deploy, a status or a lint reads.
# A whole "identifier" or 'string' is one match (Prisma quotes every identifier): an unterminated one
# matches as its quote alone.
_QUOTED = r"\"[^\"]*(?:\"\"[^\"]*)*\"|'[^']*(?:''[^']*)*'"
_NEXT = re.compile(rf"{_QUOTED}|[;()'\"]|--|/\*|(?<![{_ID}])(?:[eE]'|\$)")
# Inside CREATE FUNCTION/PROCEDURE, BEGIN/CASE/END matter too (psql's rule, see split_sql).
_NEXT_IN_ROUTINE = re.compile(rf"{_QUOTED}|[;()'\"]|--|/\*|(?<![{_ID}])(?:[eE]'|\$|(?:begin|case|end)(?![{_ID}]))",
                              re.I)
# $tag$: a tag starts like an identifier (not with a digit) and has no "$"
_DOLLAR_TAG = re.compile(r"\$(?:[^\x00-\x40\x5b-\x5e\x60\x7b-\x7f][^\x00-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]*)?\$")
_ROUTINE_HEAD = re.compile(r"CREATE\s+(?:OR\s+REPLACE\s+)?(?:FUNCTION|PROCEDURE)\b", re.I)
# the rest of an E'...' string after its opening quote: backslash escapes, and '' as a quote
_REST_OF_E_STRING = re.compile(r"[^'\\]*(?:(?:\\.|'')[^'\\]*)*'", re.S)
_SPACE_OR_COMMENT = re.compile(r"(?:\s+|--[^\n]*(?:\n|\Z))+")


def _skip_comment_or_space(sql: str, i: int) -> int:
    """Index of the first character at or after ``i`` that is neither whitespace nor a comment."""
    n = len(sql)
    while i < n:
        m = _SPACE_OR_COMMENT.match(sql, i)
        if m:
            i = m.end()
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
        opening, closing = sql.find("/*", i), sql.find("*/", i)
        if closing < 0:
            return n  # unterminated: PostgreSQL will report it; we just stop
        if 0 <= opening < closing:
            depth += 1
            i = opening + 2
        else:
            depth -= 1
            i = closing + 2
            if depth == 0:
                return i
    return n


def split_sql(sql: str) -> list[Statement]:
    """Split ``sql`` into statements at top-level semicolons, as psql does.

    A semicolon splits only outside parentheses (a rule's ``DO ALSO (...; ...)`` is one statement)
    and, in ``CREATE [OR REPLACE] FUNCTION|PROCEDURE``, outside ``BEGIN ... END`` (a ``BEGIN
    ATOMIC`` body, where ``CASE ... END`` nests too): psql's own heuristics (psqlscan.l).

    >>> [s.text for s in split_sql("SELECT ';' /* ; /* nested ; */ */; SELECT E'\\\\';'")]
    ["SELECT ';' /* ; /* nested ; */ */", "SELECT E'\\\\';'"]
    """
    statements: list[Statement] = []
    n = len(sql)
    i = 0
    line, counted = 1, 0  # the line number at offset ``counted``: lines are counted once, not per statement
    while True:
        i = _skip_comment_or_space(sql, i)
        if i >= n:
            return statements
        if sql[i] == ";":  # an empty statement
            i += 1
            continue
        start = i
        routine = _ROUTINE_HEAD.match(sql, start) is not None
        find = (_NEXT_IN_ROUTINE if routine else _NEXT).search
        parens = blocks = 0
        end = n
        while i < n:
            m = find(sql, i)
            if m is None:
                i = n
                break
            j = m.start()
            c = sql[j]
            if c == ";":
                i = j + 1
                if parens == 0 and blocks == 0:
                    end = j
                    break
            elif c == "(":
                parens += 1
                i = j + 1
            elif c == ")":
                parens = max(0, parens - 1)
                i = j + 1
            elif c == "'" or c == '"':
                i = m.end() if m.end() - j > 1 else n  # a whole quoted token, or an unterminated one
            elif c == "-":
                k = sql.find("\n", j)
                i = n if k < 0 else k + 1
            elif c == "/":
                i = _end_of_block_comment(sql, j)
            elif c == "$":
                tag = _DOLLAR_TAG.match(sql, j)
                if tag:
                    close = sql.find(tag.group(), tag.end())
                    i = n if close < 0 else close + len(tag.group())
                else:
                    i = j + 1  # a positional parameter like $1
            elif m.end() - j == 2 and sql[j + 1] == "'":  # E'...'
                rest = _REST_OF_E_STRING.match(sql, j + 2)
                i = rest.end() if rest else n
            else:  # BEGIN, CASE or END in a routine, outside parentheses (psql's rule)
                word = m.group().upper()
                if parens == 0:
                    if word == "BEGIN" or (word == "CASE" and blocks > 0):
                        blocks += 1
                    elif word == "END" and blocks > 0:
                        blocks -= 1
                i = m.end()
        text = sql[start:end].rstrip()
        if text:
            line += sql.count("\n", counted, start)
            counted = start
            statements.append(Statement(text=text, line=line, start=start, end=start + len(text)))


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
