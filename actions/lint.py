"""Is a migration zero-downtime safe? The runbook's classification, with squawk doing the parsing.

    >>> m = lint_sql("20240101_add_name", 'ALTER TABLE "users" DROP COLUMN "name";')
    >>> m.verdict, m.findings[0].category
    ('risky', 'drop-column')
    >>> print(m.findings[0].advice.split(":")[0])
    Use expand-contract

The runbook ("Zero-Downtime Migration Strategy") sorts operations into:

* **safe** (additive-only): new tables, nullable columns, ``CREATE INDEX CONCURRENTLY``,
  ``CHECK ... NOT VALID`` then ``VALIDATE CONSTRAINT``;
* **risky** (expand-contract): dropping, renaming or retyping a column, ``SET NOT NULL`` on
  an existing column; plus what its safe list implies: an index built without
  ``CONCURRENTLY`` or a constraint (CHECK/FK/UNIQUE/PRIMARY KEY) added without ``NOT VALID``
  on an existing table.

A migration is risky when one of its findings is risky; the report is "zero-downtime safe"
when no migration is. Each finding carries the runbook's alternative (``advice``).

How: squawk (``squawk --reporter json`` on all files at once, one process per report, reading
them where they are, told to skip the excluded rules it knows) finds the operations; its rule ids
map to the runbook's categories in :data:`RULES`. It runs while migrabot reads and splits the files
(:mod:`actions.squawk`; ``migrabot lint DIR`` starts it before reading its configuration). migrabot
adds what squawk does not know:

* an index or constraint on a table **created in the same migration** is not risky (the
  table is new and empty; Prisma's init migrations consist of exactly that), nor is
  anything else aimed at such a table;
* when squawk cannot parse a file it reports only the syntax error and nothing else, so
  migrabot then falls back to its own statement-level detection of the runbook's items
  (``actions.sqlsplit`` splits the statements) and says squawk could not parse it;
* ``CREATE INDEX CONCURRENTLY`` with other statements in the same file: Prisma sends a file as
  one implicit transaction, where CONCURRENTLY fails (a warning, not a downtime risk);
* the safe operations it recognises, listed as ``notes`` so a reviewer sees what is fine.

Excluded by default (:data:`DEFAULT_EXCLUDE`, replaced by ``[lint] exclude`` in the config),
because on Prisma-generated SQL they only add noise and are not about downtime:

* ``prefer-robust-stmts``: wants ``IF NOT EXISTS``/transactions; Prisma records each file's
  outcome in ``_prisma_migrations`` and migrabot runs it once, atomically where possible.
* ``prefer-text-field``, ``ban-char-field``, ``prefer-bigint-over-int``,
  ``prefer-bigint-over-smallint``, ``prefer-identity``, ``prefer-timestamp-tz``
  (``prefer-timestamptz``): data-type style; Prisma's schema decides the types
  (``VARCHAR(255)`` is even the runbook's own safe example).
* ``require-timeout-settings``, ``require-lock-timeout``, ``require-statement-timeout``:
  migrabot sets ``lock_timeout`` (and ``statement_timeout``) itself on its connection.
"""

from __future__ import annotations

import codecs
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

from actions.errors import ActionError
from actions.sqlsplit import Statement, split_sql, statement_non_transactional_reason
from actions.squawk import (
    DEFAULT_EXCLUDE,
    SQUAWK_TIMEOUT,
    SquawkRun,
    migration_files,
    migration_paths,
    run_squawk,
    squawk_binary,
    start_squawk,
)

__all__ = [
    "DEFAULT_EXCLUDE",
    "RULES",
    "SQUAWK_TIMEOUT",
    "Finding",
    "LintReport",
    "MigrationLint",
    "lint_folder",
    "lint_migrations",
    "lint_sql",
    "migration_files",
    "run_squawk",
    "squawk_binary",
    "start_squawk",
]


STATEMENT_CHARS = 200

# --- the runbook's advice -----------------------------------------------------------------------

EXPAND_CONTRACT = ("Use expand-contract: add the new column/table next to the old one, deploy code that "
                   "writes both and reads the new one, backfill, and only remove the old one in a later "
                   "migration after verification")
ADVICE = {
    "drop-column": EXPAND_CONTRACT + " (first deploy code that no longer reads or writes the column, then drop it).",
    "rename-column": EXPAND_CONTRACT + " (add the column under its new name, copy the data, drop the old "
                     "name later) instead of RENAME COLUMN.",
    "change-column-type": EXPAND_CONTRACT + " (add a column of the new type, backfill it, switch the code, "
                          "drop the old column later) instead of changing the type in place.",
    "set-not-null": "Use expand-contract: add the column nullable, backfill it, add CHECK (col IS NOT NULL) "
                    "NOT VALID, VALIDATE CONSTRAINT in a later migration, then SET NOT NULL (PostgreSQL 12+ "
                    "skips the table scan when such a constraint is validated).",
    "index-not-concurrent": "Use CREATE INDEX CONCURRENTLY (alone in its migration file: it cannot run "
                            "inside a transaction), as in the runbook's example.",
    "constraint-not-valid": "Use ADD CONSTRAINT ... NOT VALID, then VALIDATE CONSTRAINT in a separate "
                            "migration (for UNIQUE/PRIMARY KEY: CREATE UNIQUE INDEX CONCURRENTLY, then ADD "
                            "CONSTRAINT ... USING INDEX).",
    "drop-table": EXPAND_CONTRACT + " (stop using the table in a release first, then drop it).",
    "rename-table": EXPAND_CONTRACT + " (create the new table or a view, move the code over, drop the old "
                    "name later) instead of renaming it.",
    "table-rewrite": "Add the column without the volatile default (or serial), backfill in batches, then set "
                     "the default: a rewrite holds an ACCESS EXCLUSIVE lock for its whole duration.",
    "drop-database": "Never drop a database in a migration.",
    "drop-index-not-concurrent": "Use DROP INDEX CONCURRENTLY (alone in its migration file).",
    "concurrently-in-transaction": "Put CREATE/DROP INDEX CONCURRENTLY alone in its own migration file: "
                                   "Prisma runs a file as one transaction, where CONCURRENTLY fails.",
    "syntax": "Check the SQL: squawk could not parse it, so only migrabot's own checks ran on this file.",
    "other": "See squawk's documentation for this rule (https://squawkhq.com/docs/rules).",
}


class Rule(NamedTuple):
    category: str
    risky: bool
    new_table_ok: bool = False  # not risky when aimed at a table created in the same migration


RULES: dict[str, Rule] = {
    "ban-drop-column": Rule("drop-column", True, True),
    "renaming-column": Rule("rename-column", True, True),
    "changing-column-type": Rule("change-column-type", True, True),
    "adding-not-nullable-field": Rule("set-not-null", True, True),
    "adding-required-field": Rule("set-not-null", True, True),
    "require-concurrent-index-creation": Rule("index-not-concurrent", True, True),
    "constraint-missing-not-valid": Rule("constraint-not-valid", True, True),
    "adding-foreign-key-constraint": Rule("constraint-not-valid", True, True),
    "disallowed-unique-constraint": Rule("constraint-not-valid", True, True),
    "adding-primary-key-constraint": Rule("constraint-not-valid", True, True),
    "adding-serial-primary-key-field": Rule("constraint-not-valid", True, True),
    "ban-drop-table": Rule("drop-table", True, True),
    "renaming-table": Rule("rename-table", True, True),
    "adding-field-with-default": Rule("table-rewrite", True, True),
    "ban-drop-database": Rule("drop-database", True),
    "require-concurrent-index-deletion": Rule("drop-index-not-concurrent", False, True),
    "ban-concurrent-index-creation-in-transaction": Rule("concurrently-in-transaction", False),
    "syntax-error": Rule("syntax", False),
}


class Finding(NamedTuple):
    """One problem: ``rule`` is squawk's rule id (or ``migrabot:<category>`` for our own checks)."""

    rule: str
    category: str
    message: str
    advice: str
    line: int  # 1-based line in migration.sql
    statement: str  # the statement's text, trimmed
    risky: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "category": self.category, "risky": self.risky, "message": self.message,
                "advice": self.advice, "line": self.line, "statement": self.statement}


class MigrationLint:
    """One migration's verdict: "risky" when a finding is risky; "unparsed" when squawk could not
    parse the file (migrabot's own checks found nothing, which proves nothing); else "safe".

    ``notes``: the safe operations recognised, e.g. 'new table "User"'; given as a list, or as a function
    that works them out when first asked for (the CLI's text report never shows them). A plain class,
    like :class:`LintReport`: dataclasses cost ``migrabot lint DIR`` 7 ms of start-up."""

    __slots__ = ("_notes", "findings", "name")

    def __init__(self, name: str, findings: list[Finding] | None = None,
                 notes: list[str] | Callable[[], list[str]] | None = None) -> None:
        self.name = name
        self.findings: list[Finding] = [] if findings is None else findings
        self._notes: list[str] | Callable[[], list[str]] = [] if notes is None else notes

    @property
    def notes(self) -> list[str]:
        if callable(self._notes):
            self._notes = self._notes()
        return self._notes

    def __repr__(self) -> str:
        return f"MigrationLint(name={self.name!r}, findings={self.findings!r}, notes={self.notes!r})"

    @property
    def unparsed(self) -> bool:
        return any(f.category == "syntax" for f in self.findings)

    @property
    def verdict(self) -> str:
        if any(f.risky for f in self.findings):
            return "risky"
        return "unparsed" if self.unparsed else "safe"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "verdict": self.verdict, "findings": [f.to_dict() for f in self.findings],
                "notes": list(self.notes)}


class LintReport:
    """Every migration's verdict; zero-downtime safe when each is "safe"."""

    __slots__ = ("migrations",)

    def __init__(self, migrations: list[MigrationLint]) -> None:
        self.migrations = migrations

    def __repr__(self) -> str:
        return f"LintReport(migrations={self.migrations!r})"

    @property
    def zero_downtime_safe(self) -> bool:
        return all(m.verdict == "safe" for m in self.migrations)

    @property
    def risky(self) -> list[MigrationLint]:
        return [m for m in self.migrations if m.verdict == "risky"]

    @property
    def unparsed(self) -> list[MigrationLint]:
        return [m for m in self.migrations if m.verdict == "unparsed"]

    def to_dict(self) -> dict[str, Any]:
        return {"zero_downtime_safe": self.zero_downtime_safe,
                "migrations": [m.to_dict() for m in self.migrations]}


# --- our own statement-level view ---------------------------------------------------------------

_NAME = r'(?:"(?:[^"]|"")+"|[A-Za-z_][\w$]*)'
_QNAME = rf"(?:{_NAME}\s*\.\s*)?{_NAME}"
_CREATE_TABLE = re.compile(
    rf"^CREATE\s+(?:(?:GLOBAL\s+|LOCAL\s+)?(?:TEMP|TEMPORARY)\s+|UNLOGGED\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?"
    rf"(?P<t>{_QNAME})", re.I)
_ALTER_TABLE = re.compile(rf"^ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?(?P<t>{_QNAME})", re.I)
_CREATE_INDEX = re.compile(
    rf"^CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?P<c>CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?(?:{_NAME}\s+)?"
    rf"ON\s+(?:ONLY\s+)?(?P<t>{_QNAME})", re.I)
_DROP_INDEX = re.compile(r"^DROP\s+INDEX\s+(?P<c>CONCURRENTLY\s+)?", re.I)
_DROP_TABLE = re.compile(r"^DROP\s+TABLE\b", re.I)

# ALTER TABLE sub-commands (own detection, used when squawk could not parse the file)
_OWN_CHECKS: list[tuple[re.Pattern[str], str, str]] = [
    (re.compile(r"(?:^|,)\s*DROP\s+(?:COLUMN\s+)?(?!CONSTRAINT\b)(?:IF\s+EXISTS\s+)?" + _NAME, re.I), "ban-drop-column",
     "Dropping a column breaks code that still reads or writes it."),
    (re.compile(r"^\s*RENAME\s+(?:COLUMN\s+)?(?!TO\b|CONSTRAINT\b)" + _NAME + r"\s+TO\b", re.I), "renaming-column",
     "Renaming a column breaks code that uses the old name."),
    (re.compile(r"(?:^|,)\s*ALTER\s+(?:COLUMN\s+)?" + _NAME + r"\s+(?:SET\s+DATA\s+)?TYPE\b", re.I),
     "changing-column-type",
     "Changing a column type rewrites the table under an ACCESS EXCLUSIVE lock and may break clients."),
    (re.compile(r"\bSET\s+NOT\s+NULL\b", re.I), "adding-not-nullable-field",
     "SET NOT NULL scans the whole table under an ACCESS EXCLUSIVE lock."),
    (re.compile(r"\bADD\s+(?:CONSTRAINT\s+" + _NAME + r"\s+)?(?:CHECK|FOREIGN\s+KEY|UNIQUE|PRIMARY\s+KEY)\b", re.I),
     "constraint-missing-not-valid", "A new constraint scans the table while blocking writes."),
]


def _ident(name: str) -> str:
    """Table name without schema; quoted names keep their case, bare names fold to lower case."""
    last = re.findall(_NAME, name)[-1]
    return last[1:-1].replace('""', '"') if last.startswith('"') else last.lower()


def _target_table(text: str) -> str | None:
    for pattern in (_ALTER_TABLE, _CREATE_INDEX, _CREATE_TABLE):
        m = pattern.match(text)
        if m:
            return _ident(m.group("t"))
    return None


def _trim(text: str) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= STATEMENT_CHARS else one_line[: STATEMENT_CHARS - 1] + "…"


def _statement_at(statements: list[Statement], line: int) -> Statement | None:
    """The statement that contains 1-based ``line`` (the last one starting at or before it)."""
    found = None
    for st in statements:
        if st.line <= line:
            found = st
        else:
            break
    return found


_VALIDATE = re.compile(r"\bVALIDATE\s+CONSTRAINT\b", re.I)
_NOT_VALID = re.compile(r"\bNOT\s+VALID\b", re.I)
_ADD = re.compile(r"\bADD\s+(?:COLUMN\s+)?", re.I)
_NOT_NULLABLE = re.compile(r"\bNOT\s+NULL\b|\bCONSTRAINT\b|\bPRIMARY\b|\bUNIQUE\b|\bCHECK\b|\bFOREIGN\b", re.I)


def _notes(statements: list[Statement]) -> tuple[list[str], set[str]]:
    """The safe operations recognised, and the tables the migration creates."""
    notes, new_tables = [], set()
    for st in statements:
        text = st.text
        if m := _CREATE_TABLE.match(text):
            new_tables.add(table := _ident(m.group("t")))
            notes.append(f'new table "{table}"')
        elif (m := _CREATE_INDEX.match(text)) and m.group("c"):
            notes.append(f'index built CONCURRENTLY on "{_ident(m.group("t"))}"')
        elif m := _ALTER_TABLE.match(text):
            rest = text[m.end():]
            if _VALIDATE.search(rest):
                notes.append(f'constraint validated on "{_ident(m.group("t"))}" (no write lock)')
            elif _NOT_VALID.search(rest):
                notes.append(f'constraint added NOT VALID on "{_ident(m.group("t"))}"')
            elif _ADD.search(rest) and not _NOT_NULLABLE.search(rest):
                notes.append(f'nullable column added to "{_ident(m.group("t"))}"')
    return notes, new_tables


def _own_findings(statements: list[Statement]) -> list[tuple[str, str, Statement]]:
    """(rule, message, statement) for the runbook's items, found without squawk."""
    out: list[tuple[str, str, Statement]] = []
    for st in statements:
        text = st.text
        if m := _CREATE_INDEX.match(text):
            if not m.group("c"):
                out.append(("require-concurrent-index-creation",
                            "Building an index without CONCURRENTLY blocks writes to the table.", st))
        elif _DROP_TABLE.match(text):
            out.append(("ban-drop-table", "Dropping a table breaks code that still uses it.", st))
        elif m := _ALTER_TABLE.match(text):
            rest = text[m.end():]
            for pattern, rule, message in _OWN_CHECKS:
                if pattern.search(rest) and not (rule == "constraint-missing-not-valid"
                                                 and re.search(r"\bNOT\s+VALID\b", rest, re.I)):
                    out.append((rule, message, st))
            if re.search(r"\bADD\s+(?:COLUMN\s+)?" + _NAME + r"\s+[^,]*\bNOT\s+NULL\b", rest, re.I) and not re.search(
                    r"\bDEFAULT\b", rest, re.I):
                out.append(("adding-required-field", "A NOT NULL column without a default fails on a table "
                            "with rows and locks it.", st))
    return out


_CONCURRENTLY = re.compile(r"\bCONCURRENTLY\b", re.I)


def _concurrently_not_alone(statements: list[Statement]) -> list[Statement]:
    if len(statements) < 2:
        return []
    return [st for st in statements if _CONCURRENTLY.search(st.text) and statement_non_transactional_reason(st.text)]

# --- linting ----------------------------------------------------------------------------------


class _Prepared:
    """What migrabot knows of one file: its statements, the tables it creates and the safe operations it
    recognises, each worked out when first needed. Splitting is the costly part: it is done while squawk
    runs (:meth:`split`), and after that only for a file that has a finding or whose notes are asked for."""

    __slots__ = ("_new_tables", "_notes", "_statements", "_targets", "sql")

    def __init__(self, sql: str) -> None:
        self.sql = sql
        self._statements: list[Statement] | None = None
        self._notes: list[str] = []
        self._new_tables: set[str] = set()
        self._targets: dict[int, str | None] = {}  # statement start -> the table it is aimed at

    def split(self) -> list[Statement]:
        if self._statements is None:
            self._statements = split_sql(self.sql)
            self._notes, self._new_tables = _notes(self._statements)
        return self._statements

    @property
    def new_tables(self) -> set[str]:
        self.split()
        return self._new_tables

    def notes(self) -> list[str]:
        self.split()
        return list(self._notes)

    def target(self, st: Statement) -> str | None:
        """The table ``st`` is aimed at (squawk often reports several rules on one statement)."""
        if st.start not in self._targets:
            self._targets[st.start] = _target_table(st.text)
        return self._targets[st.start]

    def not_alone(self) -> list[Statement]:
        # most files have no CONCURRENTLY at all: one look at the whole text, and no split, for those
        # (a substring test: a case-insensitive search with \b is 30 times slower)
        if "concurrently" not in self.sql.lower():
            return []
        return _concurrently_not_alone(self.split())


def _lint_one(name: str, prepared: _Prepared, raw: list[dict[str, Any]], exclude: set[str]) -> MigrationLint:
    result = MigrationLint(name, notes=prepared.notes)
    seen: set[tuple[str, int]] = set()

    def add(rule_id: str, message: str, line: int, help_text: str | None = None, own: bool = False) -> None:
        if rule_id in exclude:
            return
        rule = RULES.get(rule_id, Rule("other", False))
        if rule.category in exclude:
            return
        st = _statement_at(prepared.split(), line)
        if rule.new_table_ok and st is not None and prepared.target(st) in prepared.new_tables:
            return  # the table is new and empty: nothing to lock out or scan
        # one finding per runbook category and statement (squawk may report one item twice)
        key = (rule.category if rule.category != "other" else rule_id, st.line if st else line)
        if key in seen:
            return
        seen.add(key)
        advice = ADVICE.get(rule.category, ADVICE["other"])
        if rule.category == "other" and help_text:
            advice = help_text
        result.findings.append(Finding(
            rule=f"migrabot:{rule.category}" if own else rule_id, category=rule.category, message=message,
            advice=advice, line=st.line if st else line, statement=_trim(st.text) if st else "", risky=rule.risky))

    syntax_error = any(item.get("rule_name") == "syntax-error" for item in raw)
    for item in sorted(raw, key=lambda i: (int(i.get("line") or 0), str(i.get("rule_name")))):
        rule_id = str(item.get("rule_name") or "unknown")
        line = int(item.get("line") or 0) + 1  # squawk counts lines from 0
        if rule_id == "syntax-error":
            if ("syntax", 0) not in seen:
                add(rule_id, f"squawk could not parse line {line}: {item.get('message')}", line)
                seen.add(("syntax", 0))
            continue
        add(rule_id, str(item.get("message") or rule_id), line, item.get("help"))
    if syntax_error:
        for rule_id, message, st in _own_findings(prepared.split()):
            add(rule_id, message, st.line, own=True)
    for st in prepared.not_alone():
        add("ban-concurrent-index-creation-in-transaction",
            "CONCURRENTLY cannot run inside a transaction, and this file has other statements.", st.line, own=True)
    result.findings.sort(key=lambda f: (f.line, not f.risky))
    return result


def lint_migrations(items: Iterable[tuple[str, str]] | Path, *, exclude: Iterable[str] = DEFAULT_EXCLUDE,
                    timeout: float = SQUAWK_TIMEOUT) -> LintReport:
    """Lint ``(name, sql)`` pairs (or every migration of a Prisma migrations folder), squawk run once.

    >>> report = lint_migrations([("a", "CREATE TABLE t (id int);"), ("b", "ALTER TABLE t DROP COLUMN x;")])
    >>> report.zero_downtime_safe, [m.verdict for m in report.migrations]
    (False, ['safe', 'risky'])
    """
    if isinstance(items, Path):
        return lint_folder(items, exclude=exclude, timeout=timeout)
    return _lint([(name, sql, None) for name, sql in items], set(exclude), timeout)


def _usable(run: SquawkRun | None, excluded: set[str]) -> bool:
    """A run started before the exclusions were known is usable when it skipped none of the rules wanted."""
    return run is not None and set(run.skipped) <= excluded


def _lint(items: list[tuple[str, str, str | None]], excluded: set[str], timeout: float,
          in_place: SquawkRun | None = None) -> LintReport:
    """``(name, sql, file)`` triples. ``in_place``: squawk already under way on every ``file`` where it is;
    SQL without a file (or with a file when there is no such run) goes to squawk from a temporary copy.
    Our own work on each file (statements, new tables, notes) is done while squawk runs, not after it."""
    runs: list[SquawkRun] = []
    if in_place is not None:
        runs.append(in_place)
    tmp = None
    try:
        paths = [file for _, _, file in items]
        copies = [i for i, path in enumerate(paths) if path is None or in_place is None]
        if copies:
            tmp = tempfile.mkdtemp(prefix="migrabot-lint-")
            for i in copies:
                copy = paths[i] = os.path.join(tmp, f"{i:05d}.sql")
                with open(copy, "w", encoding="utf-8") as f:
                    f.write(items[i][1])
            runs.append(SquawkRun([paths[i] or "" for i in copies], exclude=excluded, timeout=timeout))
        prepared = [_Prepared(sql) for _, sql, _ in items]
        # split while squawk runs, and no longer: once it has answered, only the files with a finding are
        # split (on a hundred files squawk is the faster of the two; on thousands, the slower)
        for prep in prepared:
            if not any(run.running() for run in runs):
                break
            prep.split()
        raw = [item for run in runs for item in run.result()]
    finally:
        for run in runs:
            run.cancel()  # a no-op once it ended; after a failure here, squawk is not left running
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    by_file: dict[str, list[dict[str, Any]]] = {}
    for item in raw:
        by_file.setdefault(str(item.get("file", "")), []).append(item)
    return LintReport([_lint_one(name, prep, by_file.get(path or "", []), excluded)
                       for (name, _, _), path, prep in zip(items, paths, prepared, strict=True)])


def lint_sql(name: str, sql: str, *, exclude: Iterable[str] = DEFAULT_EXCLUDE) -> MigrationLint:
    """Lint one migration's SQL."""
    return lint_migrations([(name, sql)], exclude=exclude).migrations[0]


def lint_folder(migrations_dir: Path, names: list[str] | None = None, exclude: Iterable[str] = DEFAULT_EXCLUDE,
                *, timeout: float = SQUAWK_TIMEOUT, squawk: SquawkRun | None = None) -> LintReport:
    """Lint ``<dir>/<name>/migration.sql`` for ``names`` (default: every migration folder, in order).

    ``squawk``: a run :func:`start_squawk` started on these files; used when it skipped no rule that
    ``exclude`` wants (else squawk runs again)."""
    migrations_dir = Path(migrations_dir)
    if not migrations_dir.is_dir():
        if squawk is not None:
            squawk.cancel()
        raise ActionError(f"{migrations_dir} is not a directory: point migrations_dir at prisma/migrations")
    if names is None:
        names = migration_files(migrations_dir)
    excluded = set(exclude)
    files = migration_paths(migrations_dir, names)
    if squawk is not None and not (_usable(squawk, excluded) and squawk.paths == files):
        squawk.cancel()
        squawk = None
    # squawk reads the files where they are (no copy of a thousand files), started before we read them
    in_place = squawk if squawk is not None else SquawkRun(files, exclude=excluded, timeout=timeout)
    try:
        items: list[tuple[str, str, str | None]] = []
        for name, path in zip(names, files, strict=True):
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as exc:
                raise ActionError(f"cannot read {path} ({exc.strerror or exc}): check the migrations folder") from None
            # utf-8-sig: a byte order mark is not SQL (migrations_dir drops it before running, too); such a
            # file, or one that is not UTF-8, is linted again from a clean copy (squawk's own reading ignored)
            text = data.decode("utf-8-sig", errors="replace")
            plain = not data.startswith(codecs.BOM_UTF8) and text.encode("utf-8") == data
            items.append((name, text, path if plain else None))
    except BaseException:
        in_place.cancel()
        raise
    return _lint(items, excluded, timeout, in_place)
