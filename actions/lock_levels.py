"""Which lock PostgreSQL takes for a DDL statement, what it does to the table, and which locks conflict.

    >>> statement_locks('ALTER TABLE "users" ALTER COLUMN "email" SET NOT NULL;')
    [LockEffect(relation='users', mode='ACCESS EXCLUSIVE', effect='scan')]
    >>> statement_locks("CREATE INDEX CONCURRENTLY users_email ON users (email)")
    [LockEffect(relation='users', mode='SHARE UPDATE EXCLUSIVE', effect='index build')]
    >>> fk = 'ALTER TABLE "Post" ADD CONSTRAINT "fk" FOREIGN KEY ("a") REFERENCES "User"("id")'
    >>> [tuple(x) for x in statement_locks(fk)]
    [('"Post"', 'SHARE ROW EXCLUSIVE', 'scan'), ('"User"', 'SHARE ROW EXCLUSIVE', 'scan')]
    >>> conflicts("SHARE", "ROW EXCLUSIVE"), conflicts("SHARE UPDATE EXCLUSIVE", "ROW EXCLUSIVE")
    (True, False)
    >>> blocks("ACCESS EXCLUSIVE"), blocks("SHARE"), blocks("SHARE UPDATE EXCLUSIVE")
    ('reads and writes', 'writes', 'schema changes')

The table (:data:`FORMS`) follows the PostgreSQL 15 documentation ("Explicit Locking", table
13.2, and the lock level of each ``ALTER TABLE`` form), and each row is checked against a real
server's ``pg_locks`` by ``tests/test_lock_levels.py``. It covers the DDL forms the linter
(``actions.lint``, squawk's rules) recognises, plus what Prisma writes into migrations.

A relation is named as ``regclass::text`` prints it: bare when lower case, quoted otherwise
(``users``, ``"User"``, ``app."User"``), so ``to_regclass(relation)`` finds it.

Effects, mildest first: ``new`` (a relation the statement creates: nobody waits for it),
``brief`` (catalog only: the lock is held for milliseconds), ``rows`` (DML: as long as the
rows take), ``scan`` (reads the whole table while holding the lock), ``index build`` (reads
the table and sorts it into an index), ``rewrite`` (copies the table and rebuilds its
indexes), ``unknown``. Some effects depend on the data or the catalog, which this module
cannot see: ``ALTER COLUMN TYPE`` does not rewrite when the change is binary-coercible
(``varchar(10)`` → ``varchar(20)`` or ``text``); ``SET NOT NULL`` skips its scan when a
validated ``CHECK (col IS NOT NULL)`` exists; ``DROP TABLE`` and dropping a foreign key also
take ACCESS EXCLUSIVE on the referenced table. A rehearsal (``actions.rehearsal``) measures
what really happens.

No side effects, no database: usable for planning (``actions.impact``) and for lock-aware
retries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple

from actions.sqlsplit import Statement, split_sql

__all__ = [
    "CONFLICTS",
    "EFFECTS",
    "FORMS",
    "MODES",
    "Form",
    "LockEffect",
    "StatementLocks",
    "blocks",
    "classify",
    "conflicts",
    "mode_name",
    "sql_locks",
    "statement_locks",
    "strongest",
    "worst_effect",
]

# --- lock modes and their conflicts (PostgreSQL documentation, table 13.2) ----------------------

ACCESS_SHARE = "ACCESS SHARE"
ROW_SHARE = "ROW SHARE"
ROW_EXCLUSIVE = "ROW EXCLUSIVE"
SHARE_UPDATE_EXCLUSIVE = "SHARE UPDATE EXCLUSIVE"
SHARE = "SHARE"
SHARE_ROW_EXCLUSIVE = "SHARE ROW EXCLUSIVE"
EXCLUSIVE = "EXCLUSIVE"
ACCESS_EXCLUSIVE = "ACCESS EXCLUSIVE"
UNKNOWN = "unknown"

#: The table-level lock modes, weakest first (PostgreSQL's own numbering, 1 to 8).
MODES: tuple[str, ...] = (ACCESS_SHARE, ROW_SHARE, ROW_EXCLUSIVE, SHARE_UPDATE_EXCLUSIVE, SHARE,
                          SHARE_ROW_EXCLUSIVE, EXCLUSIVE, ACCESS_EXCLUSIVE)

#: For each mode, the modes it conflicts with (the relation is symmetric).
CONFLICTS: dict[str, frozenset[str]] = {
    ACCESS_SHARE: frozenset({ACCESS_EXCLUSIVE}),
    ROW_SHARE: frozenset({EXCLUSIVE, ACCESS_EXCLUSIVE}),
    ROW_EXCLUSIVE: frozenset({SHARE, SHARE_ROW_EXCLUSIVE, EXCLUSIVE, ACCESS_EXCLUSIVE}),
    SHARE_UPDATE_EXCLUSIVE: frozenset({SHARE_UPDATE_EXCLUSIVE, SHARE, SHARE_ROW_EXCLUSIVE, EXCLUSIVE,
                                       ACCESS_EXCLUSIVE}),
    SHARE: frozenset({ROW_EXCLUSIVE, SHARE_UPDATE_EXCLUSIVE, SHARE_ROW_EXCLUSIVE, EXCLUSIVE, ACCESS_EXCLUSIVE}),
    SHARE_ROW_EXCLUSIVE: frozenset({ROW_EXCLUSIVE, SHARE_UPDATE_EXCLUSIVE, SHARE, SHARE_ROW_EXCLUSIVE, EXCLUSIVE,
                                    ACCESS_EXCLUSIVE}),
    EXCLUSIVE: frozenset({ROW_SHARE, ROW_EXCLUSIVE, SHARE_UPDATE_EXCLUSIVE, SHARE, SHARE_ROW_EXCLUSIVE, EXCLUSIVE,
                          ACCESS_EXCLUSIVE}),
    ACCESS_EXCLUSIVE: frozenset(MODES),
}

# pg_locks.mode spells them "AccessExclusiveLock"
_PG_NAMES = {"".join(w.capitalize() for w in m.split()) + "Lock": m for m in MODES}


def mode_name(mode: str) -> str:
    """The documentation's name of a lock mode, from that name, pg_locks' name or a LOCK TABLE clause.

    >>> mode_name("AccessExclusiveLock"), mode_name("share row exclusive"), mode_name("ShareLock")
    ('ACCESS EXCLUSIVE', 'SHARE ROW EXCLUSIVE', 'SHARE')
    """
    if mode in _PG_NAMES:
        return _PG_NAMES[mode]
    upper = " ".join(mode.upper().split())
    if upper in CONFLICTS:
        return upper
    raise ValueError(f'unknown lock mode "{mode}" (expected one of: {", ".join(MODES)})')


def conflicts(a: str, b: str) -> bool:
    """True when a session holding mode ``a`` makes one asking for mode ``b`` wait (and vice versa).

    >>> conflicts("ACCESS SHARE", "AccessExclusiveLock"), conflicts("ROW EXCLUSIVE", "ROW EXCLUSIVE")
    (True, False)
    """
    return mode_name(b) in CONFLICTS[mode_name(a)]


def strongest(modes: list[str] | tuple[str, ...] | set[str]) -> str | None:
    """The strongest of ``modes`` by PostgreSQL's numbering, or None for none.

    >>> strongest(["ShareLock", "ROW EXCLUSIVE"])
    'SHARE'
    """
    known = [mode_name(m) for m in modes if m != UNKNOWN]
    return max(known, key=MODES.index) if known else None


def blocks(mode: str) -> str:
    """What application traffic a lock in ``mode`` holds up, in words.

    ``reads and writes`` (only ACCESS EXCLUSIVE), ``writes`` (INSERT/UPDATE/DELETE wait), or
    ``schema changes`` (only other DDL, VACUUM and the like wait).
    """
    if mode == UNKNOWN:
        return UNKNOWN
    if conflicts(mode, ACCESS_SHARE):
        return "reads and writes"
    if conflicts(mode, ROW_EXCLUSIVE):
        return "writes"
    return "schema changes"


# --- effects --------------------------------------------------------------------------------------

NEW, BRIEF, ROWS, SCAN, INDEX_BUILD, REWRITE = "new", "brief", "rows", "scan", "index build", "rewrite"
#: Effects, mildest first.
EFFECTS: tuple[str, ...] = (NEW, BRIEF, ROWS, SCAN, INDEX_BUILD, REWRITE, UNKNOWN)


def worst_effect(effects: list[str] | tuple[str, ...]) -> str:
    """The effect that takes longest (``unknown`` counts as the worst)."""
    return max(effects, key=EFFECTS.index) if effects else BRIEF


# --- the table -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Form:
    """One row of the documentation table: the lock on the target and, for foreign keys, on the other table."""

    mode: str
    effect: str
    note: str = ""
    other_mode: str | None = None  # on the referenced table (foreign keys)
    other_effect: str | None = None


AT = "ALTER TABLE"
FORMS: dict[str, Form] = {
    "CREATE TABLE": Form(ACCESS_EXCLUSIVE, NEW, "a new table: nobody else can be using it",
                         SHARE_ROW_EXCLUSIVE, BRIEF),
    "CREATE VIEW": Form(ACCESS_EXCLUSIVE, NEW, "a new view"),
    "DROP TABLE": Form(ACCESS_EXCLUSIVE, BRIEF, "also ACCESS EXCLUSIVE on the tables its foreign keys reference"),
    "DROP VIEW": Form(ACCESS_EXCLUSIVE, BRIEF),
    "TRUNCATE": Form(ACCESS_EXCLUSIVE, BRIEF, "removes every row"),
    f"{AT} RENAME TO": Form(ACCESS_EXCLUSIVE, BRIEF),
    f"{AT} RENAME COLUMN": Form(ACCESS_EXCLUSIVE, BRIEF),
    f"{AT} RENAME CONSTRAINT": Form(ACCESS_EXCLUSIVE, BRIEF),
    f"{AT} SET SCHEMA": Form(ACCESS_EXCLUSIVE, BRIEF),
    f"{AT} OWNER TO": Form(ACCESS_EXCLUSIVE, BRIEF),
    f"{AT} REPLICA IDENTITY": Form(ACCESS_EXCLUSIVE, BRIEF),
    f"{AT} ADD COLUMN": Form(ACCESS_EXCLUSIVE, BRIEF, "no rewrite since PostgreSQL 11 (constant default)",
                             SHARE_ROW_EXCLUSIVE, BRIEF),
    f"{AT} ADD COLUMN (volatile default)": Form(
        ACCESS_EXCLUSIVE, REWRITE, "a volatile default, serial, identity or stored generated column "
        "fills every row", SHARE_ROW_EXCLUSIVE, BRIEF),
    f"{AT} ADD COLUMN NOT NULL (no default)": Form(
        ACCESS_EXCLUSIVE, SCAN, "checks every row (fails when the table has rows)", SHARE_ROW_EXCLUSIVE, BRIEF),
    f"{AT} ADD COLUMN (with index)": Form(ACCESS_EXCLUSIVE, INDEX_BUILD, "a UNIQUE/PRIMARY KEY column builds an "
                                          "index", SHARE_ROW_EXCLUSIVE, BRIEF),
    f"{AT} DROP COLUMN": Form(ACCESS_EXCLUSIVE, BRIEF, "the space is reclaimed later, no rewrite"),
    f"{AT} ALTER COLUMN TYPE": Form(ACCESS_EXCLUSIVE, REWRITE, "no rewrite when binary-coercible (varchar(n) to "
                                    "a longer varchar or text); indexes on the column are rebuilt"),
    f"{AT} ALTER COLUMN SET NOT NULL": Form(ACCESS_EXCLUSIVE, SCAN, "no scan when a validated CHECK (col IS NOT "
                                            "NULL) exists (PostgreSQL 12+)"),
    f"{AT} ALTER COLUMN DROP NOT NULL": Form(ACCESS_EXCLUSIVE, BRIEF),
    f"{AT} ALTER COLUMN SET DEFAULT": Form(ACCESS_EXCLUSIVE, BRIEF, "existing rows are not changed"),
    f"{AT} ALTER COLUMN DROP DEFAULT": Form(ACCESS_EXCLUSIVE, BRIEF),
    f"{AT} ALTER COLUMN SET STATISTICS": Form(SHARE_UPDATE_EXCLUSIVE, BRIEF),
    f"{AT} ALTER COLUMN SET STORAGE": Form(ACCESS_EXCLUSIVE, BRIEF),
    f"{AT} ALTER COLUMN SET (attribute option)": Form(SHARE_UPDATE_EXCLUSIVE, BRIEF),
    f"{AT} ALTER COLUMN identity": Form(ACCESS_EXCLUSIVE, BRIEF),
    f"{AT} ADD CHECK": Form(ACCESS_EXCLUSIVE, SCAN, "validates every row under the lock"),
    f"{AT} ADD CHECK NOT VALID": Form(ACCESS_EXCLUSIVE, BRIEF, "existing rows are checked later by VALIDATE"),
    f"{AT} ADD FOREIGN KEY": Form(SHARE_ROW_EXCLUSIVE, SCAN, "validates every row; both tables' writes wait",
                                  SHARE_ROW_EXCLUSIVE, SCAN),
    f"{AT} ADD FOREIGN KEY NOT VALID": Form(SHARE_ROW_EXCLUSIVE, BRIEF, "existing rows are checked later by "
                                            "VALIDATE", SHARE_ROW_EXCLUSIVE, BRIEF),
    f"{AT} ADD UNIQUE/PRIMARY KEY": Form(ACCESS_EXCLUSIVE, INDEX_BUILD, "builds the index under the lock"),
    f"{AT} ADD CONSTRAINT USING INDEX": Form(ACCESS_EXCLUSIVE, BRIEF, "a PRIMARY KEY scans for NULLs unless "
                                             "the columns are NOT NULL already"),
    f"{AT} ADD EXCLUDE": Form(ACCESS_EXCLUSIVE, INDEX_BUILD),
    f"{AT} VALIDATE CONSTRAINT": Form(SHARE_UPDATE_EXCLUSIVE, SCAN, "reads and writes continue; a foreign key's "
                                      "referenced table gets ROW SHARE"),
    f"{AT} DROP CONSTRAINT": Form(ACCESS_EXCLUSIVE, BRIEF, "a foreign key's referenced table is locked ACCESS "
                                  "EXCLUSIVE too"),
    f"{AT} ENABLE/DISABLE TRIGGER": Form(SHARE_ROW_EXCLUSIVE, BRIEF),
    f"{AT} ENABLE/DISABLE ROW LEVEL SECURITY": Form(ACCESS_EXCLUSIVE, BRIEF),
    f"{AT} SET (storage parameter)": Form(SHARE_UPDATE_EXCLUSIVE, BRIEF, "fillfactor, autovacuum and toast "
                                          "parameters; some others take ACCESS EXCLUSIVE"),
    f"{AT} SET LOGGED/UNLOGGED": Form(ACCESS_EXCLUSIVE, REWRITE),
    f"{AT} SET TABLESPACE": Form(ACCESS_EXCLUSIVE, REWRITE, "copies the files"),
    f"{AT} SET ACCESS METHOD": Form(ACCESS_EXCLUSIVE, REWRITE),
    f"{AT} CLUSTER ON": Form(SHARE_UPDATE_EXCLUSIVE, BRIEF),
    f"{AT} ATTACH PARTITION": Form(SHARE_UPDATE_EXCLUSIVE, BRIEF, "the partition is locked ACCESS EXCLUSIVE and "
                                   "scanned unless a matching CHECK exists", ACCESS_EXCLUSIVE, SCAN),
    f"{AT} DETACH PARTITION": Form(ACCESS_EXCLUSIVE, BRIEF, "", ACCESS_EXCLUSIVE, BRIEF),
    f"{AT} DETACH PARTITION CONCURRENTLY": Form(SHARE_UPDATE_EXCLUSIVE, BRIEF, "two transactions: the second "
                                                "locks the partition ACCESS EXCLUSIVE", ACCESS_EXCLUSIVE, BRIEF),
    f"{AT} (other)": Form(ACCESS_EXCLUSIVE, UNKNOWN, "most ALTER TABLE forms take ACCESS EXCLUSIVE"),
    "CREATE INDEX": Form(SHARE, INDEX_BUILD, "reads continue, writes wait for the whole build"),
    "CREATE INDEX CONCURRENTLY": Form(SHARE_UPDATE_EXCLUSIVE, INDEX_BUILD, "reads and writes continue; it waits "
                                      "for transactions older than itself; cannot run in a transaction"),
    "DROP INDEX": Form(ACCESS_EXCLUSIVE, BRIEF, "on the index and its table"),
    "DROP INDEX CONCURRENTLY": Form(SHARE_UPDATE_EXCLUSIVE, BRIEF, "on the index and its table"),
    "ALTER INDEX RENAME": Form(SHARE_UPDATE_EXCLUSIVE, BRIEF, "since PostgreSQL 12"),
    "ALTER INDEX SET TABLESPACE": Form(ACCESS_EXCLUSIVE, REWRITE),
    "REINDEX TABLE": Form(SHARE, INDEX_BUILD, "its indexes are locked ACCESS EXCLUSIVE: queries using them wait"),
    "REINDEX INDEX": Form(ACCESS_EXCLUSIVE, INDEX_BUILD, "its table is locked SHARE"),
    "REINDEX CONCURRENTLY": Form(SHARE_UPDATE_EXCLUSIVE, INDEX_BUILD),
    "CREATE TRIGGER": Form(SHARE_ROW_EXCLUSIVE, BRIEF),
    "DROP TRIGGER": Form(ACCESS_EXCLUSIVE, BRIEF),
    "COMMENT ON": Form(SHARE_UPDATE_EXCLUSIVE, BRIEF),
    "INSERT": Form(ROW_EXCLUSIVE, ROWS, "tables its foreign keys reference get ROW SHARE"),
    "UPDATE": Form(ROW_EXCLUSIVE, ROWS),
    "DELETE": Form(ROW_EXCLUSIVE, ROWS),
    "VACUUM": Form(SHARE_UPDATE_EXCLUSIVE, SCAN, "cannot run in a transaction"),
    "VACUUM FULL": Form(ACCESS_EXCLUSIVE, REWRITE),
    "ANALYZE": Form(SHARE_UPDATE_EXCLUSIVE, SCAN, "reads a sample"),
    "CLUSTER": Form(ACCESS_EXCLUSIVE, REWRITE),
    "REFRESH MATERIALIZED VIEW": Form(ACCESS_EXCLUSIVE, REWRITE),
    "REFRESH MATERIALIZED VIEW CONCURRENTLY": Form(EXCLUSIVE, ROWS, "reads continue; the differences are "
                                                   "applied row by row"),
}
# LOCK TABLE takes the mode it names; statements that lock no table have no row.
LOCK_TABLE_FORM = "LOCK TABLE"
NO_TABLE_FORMS = ("CREATE TYPE", "ALTER TYPE", "DROP TYPE", "CREATE EXTENSION", "CREATE SCHEMA",
                  "CREATE SEQUENCE", "ALTER SEQUENCE", "DROP SEQUENCE", "CREATE FUNCTION", "DROP FUNCTION",
                  "CREATE DOMAIN", "SET", "transaction control")


# --- results ----------------------------------------------------------------------------------------


class LockEffect(NamedTuple):
    """One relation a statement locks: ``(relation, mode, effect)``; relation None when unknown."""

    relation: str | None
    mode: str
    effect: str


@dataclass(frozen=True)
class StatementLocks:
    """What one statement locks, by which rows of :data:`FORMS` (``forms``), and the relations it creates."""

    forms: tuple[str, ...]
    locks: list[LockEffect] = field(default_factory=list)
    creates: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def form(self) -> str:
        return "; ".join(self.forms)

    @property
    def known(self) -> bool:
        return not any(lock.mode == UNKNOWN for lock in self.locks)

    def to_dict(self) -> dict[str, object]:
        return {"form": self.form, "locks": [lock._asdict() for lock in self.locks], "creates": list(self.creates),
                "notes": list(self.notes)}


# --- names ------------------------------------------------------------------------------------------

# An identifier: quoted, or a letter, underscore or non-ASCII character (BMP) followed by those, digits, $ and
# word characters. Spelled as negated ASCII classes: the same set as [A-Za-z_\u0080-\uffff][\w$\u0080-\uffff]*,
# whose large ranges cost ~20 ms to compile per pattern (~0.3 s for this module, paid by every deploy).
_NAME = (r'(?:"(?:[^"]|"")+"|[^\x00-\x40\x5b-\x5e\x60\x7b-\x7f\U00010000-\U0010ffff]'
         r'(?:[^\x00-\x23\x25-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f\U00010000-\U0010ffff]|\w)*)')
_QNAME = rf"{_NAME}(?:\s*\.\s*{_NAME}){{0,2}}"
_NAME_RE = re.compile(_NAME)
_PLAIN = re.compile(r"^[a-z_][a-z0-9_$]*$")


def _part(raw: str) -> str:
    if raw.startswith('"'):
        inner = raw[1:-1].replace('""', '"')
    else:
        inner = raw.lower()
    return inner if _PLAIN.match(inner) else '"' + inner.replace('"', '""') + '"'


def relation_name(qualified: str) -> str:
    """A (possibly schema-qualified) name as written in SQL, the way ``regclass::text`` shows it.

    >>> relation_name('"users"'), relation_name('Public."User"'), relation_name("Orders")
    ('users', 'public."User"', 'orders')
    """
    return ".".join(_part(p) for p in _NAME_RE.findall(qualified))


def _names_list(text: str) -> list[str]:
    """The comma-separated relation names at the start of ``text`` (DROP TABLE a, b CASCADE)."""
    out = []
    pos = 0
    while m := re.compile(rf"\s*(?:ONLY\s+)?(?P<n>{_QNAME})\s*\*?\s*(?P<sep>,)?", re.I).match(text, pos):
        out.append(relation_name(m.group("n")))
        pos = m.end()
        if not m.group("sep"):
            break
    return out


# --- parsing -----------------------------------------------------------------------------------------


def _split_top_level(text: str) -> list[str]:
    """``text`` split at commas outside parentheses and quotes (ALTER TABLE's sub-commands)."""
    parts, depth, start, i, n = [], 0, 0, 0, len(text)
    while i < n:
        c = text[i]
        if c in "'\"":
            j = i + 1
            while j < n and not (text[j] == c and (j + 1 >= n or text[j + 1] != c)):
                j += 2 if text[j] == c else 1
            i = j + 1
            continue
        if c == "$" and (m := re.match(r"\$[A-Za-z_]*\$", text[i:])):
            close = text.find(m.group(0), i + len(m.group(0)))
            i = n if close < 0 else close + len(m.group(0))
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
        i += 1
    parts.append(text[start:].strip())
    return [p for p in parts if p]


_I = re.I | re.S
_VOLATILE_DEFAULT = re.compile(
    r"\b(?:random|gen_random_uuid|uuid_generate_v\w+|clock_timestamp|timeofday|nextval|txid_current|"
    r"statement_timestamp|setseed)\s*\(", re.I)
_SERIAL = re.compile(r"^\s*" + _NAME + r"\s+(?:small|big)?serial\d?\b", re.I)
_REFERENCES = re.compile(rf"\bREFERENCES\s+(?P<t>{_QNAME})", re.I)

# (pattern on one ALTER TABLE sub-command, form); first match wins
_SUBCOMMANDS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^ADD\s+(?:CONSTRAINT\s+" + _NAME + r"\s+)?CHECK\b.*\bNOT\s+VALID\s*$", _I),
     f"{AT} ADD CHECK NOT VALID"),
    (re.compile(r"^ADD\s+(?:CONSTRAINT\s+" + _NAME + r"\s+)?CHECK\b", _I), f"{AT} ADD CHECK"),
    (re.compile(r"^ADD\s+(?:CONSTRAINT\s+" + _NAME + r"\s+)?FOREIGN\s+KEY\b.*\bNOT\s+VALID\s*$", _I),
     f"{AT} ADD FOREIGN KEY NOT VALID"),
    (re.compile(r"^ADD\s+(?:CONSTRAINT\s+" + _NAME + r"\s+)?FOREIGN\s+KEY\b", _I), f"{AT} ADD FOREIGN KEY"),
    (re.compile(r"^ADD\s+(?:CONSTRAINT\s+" + _NAME + r"\s+)?(?:UNIQUE|PRIMARY\s+KEY)\s+USING\s+INDEX\b", _I),
     f"{AT} ADD CONSTRAINT USING INDEX"),
    (re.compile(r"^ADD\s+(?:CONSTRAINT\s+" + _NAME + r"\s+)?(?:UNIQUE|PRIMARY\s+KEY)\b", _I),
     f"{AT} ADD UNIQUE/PRIMARY KEY"),
    (re.compile(r"^ADD\s+(?:CONSTRAINT\s+" + _NAME + r"\s+)?EXCLUDE\b", _I), f"{AT} ADD EXCLUDE"),
    (re.compile(r"^ADD\b", _I), f"{AT} ADD COLUMN"),  # refined by _add_column_form
    (re.compile(r"^DROP\s+CONSTRAINT\b", _I), f"{AT} DROP CONSTRAINT"),
    (re.compile(r"^DROP\b", _I), f"{AT} DROP COLUMN"),
    (re.compile(r"^ALTER\s+(?:COLUMN\s+)?" + _NAME + r"\s+(?:SET\s+DATA\s+)?TYPE\b", _I), f"{AT} ALTER COLUMN TYPE"),
    (re.compile(r"^ALTER\s+(?:COLUMN\s+)?" + _NAME + r"\s+SET\s+NOT\s+NULL\b", _I), f"{AT} ALTER COLUMN SET NOT NULL"),
    (re.compile(r"^ALTER\s+(?:COLUMN\s+)?" + _NAME + r"\s+DROP\s+NOT\s+NULL\b", _I),
     f"{AT} ALTER COLUMN DROP NOT NULL"),
    (re.compile(r"^ALTER\s+(?:COLUMN\s+)?" + _NAME + r"\s+SET\s+DEFAULT\b", _I), f"{AT} ALTER COLUMN SET DEFAULT"),
    (re.compile(r"^ALTER\s+(?:COLUMN\s+)?" + _NAME + r"\s+DROP\s+DEFAULT\b", _I),
     f"{AT} ALTER COLUMN DROP DEFAULT"),
    (re.compile(r"^ALTER\s+(?:COLUMN\s+)?" + _NAME + r"\s+SET\s+STATISTICS\b", _I),
     f"{AT} ALTER COLUMN SET STATISTICS"),
    (re.compile(r"^ALTER\s+(?:COLUMN\s+)?" + _NAME + r"\s+SET\s+STORAGE\b", _I), f"{AT} ALTER COLUMN SET STORAGE"),
    (re.compile(r"^ALTER\s+(?:COLUMN\s+)?" + _NAME + r"\s+(?:SET|RESET)\s*\(", _I),
     f"{AT} ALTER COLUMN SET (attribute option)"),
    (re.compile(r"^ALTER\s+(?:COLUMN\s+)?" + _NAME + r"\s+(?:ADD\s+GENERATED|SET\s+GENERATED|DROP\s+IDENTITY|"
                r"RESTART|SET\s+INCREMENT|SET\s+START)\b", _I), f"{AT} ALTER COLUMN identity"),
    (re.compile(r"^VALIDATE\s+CONSTRAINT\b", _I), f"{AT} VALIDATE CONSTRAINT"),
    (re.compile(r"^(?:ENABLE|DISABLE)\s+(?:ALWAYS\s+|REPLICA\s+)?TRIGGER\b", _I), f"{AT} ENABLE/DISABLE TRIGGER"),
    (re.compile(r"^(?:ENABLE|DISABLE|FORCE|NO\s+FORCE)\s+ROW\s+LEVEL\s+SECURITY\b", _I),
     f"{AT} ENABLE/DISABLE ROW LEVEL SECURITY"),
    (re.compile(r"^(?:SET|RESET)\s*\(", _I), f"{AT} SET (storage parameter)"),
    (re.compile(r"^SET\s+(?:LOGGED|UNLOGGED)\b", _I), f"{AT} SET LOGGED/UNLOGGED"),
    (re.compile(r"^SET\s+TABLESPACE\b", _I), f"{AT} SET TABLESPACE"),
    (re.compile(r"^SET\s+ACCESS\s+METHOD\b", _I), f"{AT} SET ACCESS METHOD"),
    (re.compile(r"^(?:CLUSTER\s+ON|SET\s+WITHOUT\s+CLUSTER)\b", _I), f"{AT} CLUSTER ON"),
    (re.compile(r"^OWNER\s+TO\b", _I), f"{AT} OWNER TO"),
    (re.compile(r"^REPLICA\s+IDENTITY\b", _I), f"{AT} REPLICA IDENTITY"),
]


def _add_column_form(sub: str) -> str:
    """Refine ``ADD [COLUMN] name type ...`` by what fills or checks existing rows."""
    body = re.sub(r"^ADD\s+(?:COLUMN\s+)?(?:IF\s+NOT\s+EXISTS\s+)?", "", sub, flags=re.I)
    if (_SERIAL.match(body) or re.search(r"\bGENERATED\b", body, re.I)
            or (re.search(r"\bDEFAULT\b", body, re.I) and _VOLATILE_DEFAULT.search(body))):
        return f"{AT} ADD COLUMN (volatile default)"
    if re.search(r"\b(?:PRIMARY\s+KEY|UNIQUE)\b", body, re.I):
        return f"{AT} ADD COLUMN (with index)"
    if re.search(r"\bNOT\s+NULL\b", body, re.I) and not re.search(r"\bDEFAULT\b", body, re.I):
        return f"{AT} ADD COLUMN NOT NULL (no default)"
    if re.search(r"\bCHECK\s*\(", body, re.I):
        return f"{AT} ADD CHECK"
    return f"{AT} ADD COLUMN"


class _Builder:
    """Collects (relation, mode, effect) and merges them per relation: strongest mode, worst effect."""

    def __init__(self) -> None:
        self.forms: list[str] = []
        self.by_relation: dict[str | None, tuple[str, str]] = {}
        self.creates: list[str] = []
        self.notes: list[str] = []

    def add(self, relation: str | None, mode: str, effect: str) -> None:
        old = self.by_relation.get(relation)
        if old is None:
            self.by_relation[relation] = (mode, effect)
            return
        modes = [m for m in (old[0], mode) if m != UNKNOWN]
        merged = max(modes, key=MODES.index) if modes else UNKNOWN
        self.by_relation[relation] = (merged, worst_effect([old[1], effect]))

    def form(self, name: str, relation: str | None, other: str | None = None) -> None:
        row = FORMS[name]
        self.forms.append(name)
        if row.note and row.note not in self.notes:
            self.notes.append(row.note)
        self.add(relation, row.mode, row.effect)
        if other is not None and row.other_mode and row.other_effect:
            self.add(other, row.other_mode, row.other_effect)

    def result(self) -> StatementLocks:
        locks = [LockEffect(rel, mode, effect) for rel, (mode, effect) in self.by_relation.items()]
        return StatementLocks(tuple(self.forms), locks, tuple(self.creates), tuple(self.notes))


def _unknown(form: str = "unknown") -> StatementLocks:
    return StatementLocks((form,), [LockEffect(None, UNKNOWN, UNKNOWN)])


def _alter_table(b: _Builder, table: str, rest: str) -> None:
    rest = rest.strip()
    if re.match(r"^RENAME\s+TO\b", rest, re.I):
        b.form(f"{AT} RENAME TO", table)
        return
    if re.match(r"^RENAME\s+CONSTRAINT\b", rest, re.I):
        b.form(f"{AT} RENAME CONSTRAINT", table)
        return
    if re.match(r"^RENAME\b", rest, re.I):
        b.form(f"{AT} RENAME COLUMN", table)
        return
    if re.match(r"^SET\s+SCHEMA\b", rest, re.I):
        b.form(f"{AT} SET SCHEMA", table)
        return
    if m := re.match(rf"^ATTACH\s+PARTITION\s+(?P<p>{_QNAME})", rest, re.I):
        b.form(f"{AT} ATTACH PARTITION", table, relation_name(m.group("p")))
        return
    if m := re.match(rf"^DETACH\s+PARTITION\s+(?P<p>{_QNAME})(?P<c>\s+CONCURRENTLY)?", rest, re.I):
        name = f"{AT} DETACH PARTITION" + (" CONCURRENTLY" if m.group("c") else "")
        b.form(name, table, relation_name(m.group("p")))
        return
    for sub in _split_top_level(rest):
        form = next((f for pattern, f in _SUBCOMMANDS if pattern.match(sub)), f"{AT} (other)")
        if form == f"{AT} ADD COLUMN":
            form = _add_column_form(sub)
        ref = _REFERENCES.search(sub)
        b.form(form, table, relation_name(ref.group("t")) if ref else None)


_CREATE_TABLE = re.compile(
    rf"^CREATE\s+(?:(?:GLOBAL\s+|LOCAL\s+)?(?:TEMP|TEMPORARY)\s+|UNLOGGED\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?"
    rf"(?P<t>{_QNAME})", re.I)
_CREATE_INDEX = re.compile(
    rf"^CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?P<c>CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?(?:{_NAME}\s+)?"
    rf"ON\s+(?:ONLY\s+)?(?P<t>{_QNAME})", re.I)
_ALTER_TABLE = re.compile(rf"^ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?(?P<t>{_QNAME})\s*\*?", re.I)
_LOCK_MODE = re.compile(r"\bIN\s+(?P<m>(?:ACCESS|ROW|SHARE|UPDATE|EXCLUSIVE|\s)+?)\s+MODE\b", re.I)

# statements that lock no table at all
_NO_TABLE = [
    (re.compile(r"^CREATE\s+TYPE\b", re.I), "CREATE TYPE"),
    (re.compile(r"^ALTER\s+TYPE\b", re.I), "ALTER TYPE"),
    (re.compile(r"^DROP\s+TYPE\b(?!.*\bCASCADE\b)", _I), "DROP TYPE"),
    (re.compile(r"^CREATE\s+EXTENSION\b", re.I), "CREATE EXTENSION"),
    (re.compile(r"^CREATE\s+SCHEMA\b(?!.*\bCREATE\b)", _I), "CREATE SCHEMA"),
    (re.compile(r"^CREATE\s+(?:(?:TEMP|TEMPORARY|UNLOGGED)\s+)?SEQUENCE\b", re.I), "CREATE SEQUENCE"),
    (re.compile(r"^ALTER\s+SEQUENCE\b", re.I), "ALTER SEQUENCE"),
    (re.compile(r"^DROP\s+SEQUENCE\b(?!.*\bCASCADE\b)", _I), "DROP SEQUENCE"),
    (re.compile(r"^CREATE\s+(?:OR\s+REPLACE\s+)?(?:FUNCTION|PROCEDURE)\b", re.I), "CREATE FUNCTION"),
    (re.compile(r"^DROP\s+(?:FUNCTION|PROCEDURE)\b(?!.*\bCASCADE\b)", _I), "DROP FUNCTION"),
    (re.compile(r"^CREATE\s+DOMAIN\b", re.I), "CREATE DOMAIN"),
    (re.compile(r"^(?:SET|RESET)\s", re.I), "SET"),
    (re.compile(r"^(?:BEGIN|START\s+TRANSACTION|COMMIT|END|ROLLBACK|ABORT|SAVEPOINT|RELEASE)\b", re.I),
     "transaction control"),
]


def _classify_text(text: str) -> StatementLocks:
    b = _Builder()
    if m := _CREATE_INDEX.match(text):
        b.form("CREATE INDEX CONCURRENTLY" if m.group("c") else "CREATE INDEX", relation_name(m.group("t")))
        return b.result()
    if m := _CREATE_TABLE.match(text):
        table = relation_name(m.group("t"))
        b.form("CREATE TABLE", table)
        b.creates.append(table)
        for ref in _REFERENCES.finditer(text[m.end():]):
            other = relation_name(ref.group("t"))
            if other != table:
                b.add(other, SHARE_ROW_EXCLUSIVE, BRIEF)
        return b.result()
    if m := re.match(rf"^CREATE\s+(?:OR\s+REPLACE\s+)?(?:(?:TEMP|TEMPORARY)\s+)?(?:MATERIALIZED\s+)?VIEW\s+"
                     rf"(?:IF\s+NOT\s+EXISTS\s+)?(?P<t>{_QNAME})", text, re.I):
        view = relation_name(m.group("t"))
        b.form("CREATE VIEW", view)
        b.creates.append(view)
        return b.result()
    if m := re.match(r"^DROP\s+(?P<k>TABLE|VIEW|MATERIALIZED\s+VIEW)\s+(?:IF\s+EXISTS\s+)?", text, re.I):
        for name in _names_list(text[m.end():]):
            b.form("DROP TABLE" if m.group("k").upper() == "TABLE" else "DROP VIEW", name)
        return b.result() if b.forms else _unknown()
    if m := re.match(r"^TRUNCATE\s+(?:TABLE\s+)?", text, re.I):
        for name in _names_list(text[m.end():]):
            b.form("TRUNCATE", name)
        return b.result() if b.forms else _unknown()
    if m := _ALTER_TABLE.match(text):
        _alter_table(b, relation_name(m.group("t")), text[m.end():])
        return b.result()
    if m := re.match(r"^DROP\s+INDEX\s+(?P<c>CONCURRENTLY\s+)?(?:IF\s+EXISTS\s+)?", text, re.I):
        for name in _names_list(text[m.end():]):
            b.form("DROP INDEX CONCURRENTLY" if m.group("c") else "DROP INDEX", name)
        return b.result() if b.forms else _unknown()
    if m := re.match(rf"^ALTER\s+INDEX\s+(?:IF\s+EXISTS\s+)?(?P<i>{_QNAME})\s+(?P<rest>.*)$", text, _I):
        rest = m.group("rest")
        if re.match(r"RENAME\s+TO\b", rest, re.I):
            b.form("ALTER INDEX RENAME", relation_name(m.group("i")))
        elif re.match(r"SET\s+TABLESPACE\b", rest, re.I):
            b.form("ALTER INDEX SET TABLESPACE", relation_name(m.group("i")))
        else:
            return _unknown("ALTER INDEX")
        return b.result()
    if m := re.match(rf"^REINDEX\s+(?:\([^)]*\)\s*)?(?P<k>INDEX|TABLE)\s+(?P<c>CONCURRENTLY\s+)?(?P<t>{_QNAME})",
                     text, re.I):
        form = "REINDEX CONCURRENTLY" if m.group("c") else f"REINDEX {m.group('k').upper()}"
        b.form(form, relation_name(m.group("t")))
        return b.result()
    if m := re.match(rf"^CREATE\s+(?:OR\s+REPLACE\s+)?(?:CONSTRAINT\s+)?TRIGGER\b.*?\bON\s+(?P<t>{_QNAME})", text, _I):
        b.form("CREATE TRIGGER", relation_name(m.group("t")))
        return b.result()
    if m := re.match(rf"^DROP\s+TRIGGER\s+(?:IF\s+EXISTS\s+)?{_NAME}\s+ON\s+(?P<t>{_QNAME})", text, re.I):
        b.form("DROP TRIGGER", relation_name(m.group("t")))
        return b.result()
    if m := re.match(r"^LOCK\s+(?:TABLE\s+)?", text, re.I):
        mode_match = _LOCK_MODE.search(text)
        try:
            mode = mode_name(mode_match.group("m")) if mode_match else ACCESS_EXCLUSIVE
        except ValueError:
            return _unknown(LOCK_TABLE_FORM)
        for name in _names_list(text[m.end():]):
            b.forms.append(LOCK_TABLE_FORM)
            b.add(name, mode, BRIEF)
        return b.result() if b.forms else _unknown(LOCK_TABLE_FORM)
    if m := re.match(rf"^(?P<k>INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+(?:ONLY\s+)?(?P<t>{_QNAME})", text, re.I):
        b.form(m.group("k").split()[0].upper(), relation_name(m.group("t")))
        return b.result()
    if m := re.match(rf"^VACUUM\b(?P<opts>[^;]*?)\s*(?P<t>{_QNAME})?\s*$", text, re.I):
        full = bool(re.search(r"\bFULL\b", m.group("opts") or "", re.I))
        table = m.group("t")
        if table is None or table.upper() in ("FULL", "ANALYZE", "VERBOSE", "FREEZE"):
            return _unknown("VACUUM (every table)")
        b.form("VACUUM FULL" if full else "VACUUM", relation_name(table))
        return b.result()
    if m := re.match(rf"^(?:ANALYZE|ANALYSE)\s+(?:VERBOSE\s+)?(?P<t>{_QNAME})", text, re.I):
        b.form("ANALYZE", relation_name(m.group("t")))
        return b.result()
    if m := re.match(rf"^CLUSTER\s+(?:VERBOSE\s+)?(?P<t>{_QNAME})", text, re.I):
        b.form("CLUSTER", relation_name(m.group("t")))
        return b.result()
    if m := re.match(rf"^REFRESH\s+MATERIALIZED\s+VIEW\s+(?P<c>CONCURRENTLY\s+)?(?P<t>{_QNAME})", text, re.I):
        b.form("REFRESH MATERIALIZED VIEW" + (" CONCURRENTLY" if m.group("c") else ""), relation_name(m.group("t")))
        return b.result()
    if m := re.match(rf"^COMMENT\s+ON\s+(?P<k>TABLE|COLUMN)\s+(?P<t>{_QNAME})", text, re.I):
        parts = _NAME_RE.findall(m.group("t"))
        if m.group("k").upper() == "COLUMN":
            parts = parts[:-1]
        b.form("COMMENT ON", ".".join(_part(p) for p in parts))
        return b.result()
    for pattern, form in _NO_TABLE:
        if pattern.match(text):
            return StatementLocks((form,), [])
    return _unknown()


def classify(sql: str) -> StatementLocks:
    """The locks of the one statement in ``sql`` (comments and a final semicolon are fine).

    >>> classify("ALTER TABLE t ADD COLUMN a int, ALTER COLUMN b TYPE bigint").form
    'ALTER TABLE ADD COLUMN; ALTER TABLE ALTER COLUMN TYPE'
    >>> classify("CREATE TYPE mood AS ENUM ('a')").locks
    []
    >>> classify("GRANT SELECT ON t TO app").locks
    [LockEffect(relation=None, mode='unknown', effect='unknown')]
    """
    statements = split_sql(sql)
    if not statements:
        return StatementLocks(("empty",), [])
    if len(statements) > 1:
        raise ValueError(f"expected one statement, got {len(statements)}: use sql_locks() for a whole file")
    return _classify_text(statements[0].text)


def statement_locks(sql: str) -> list[LockEffect]:
    """``[(relation, lock mode, effect), ...]`` for one statement; ``unknown`` when it is not in the table."""
    return classify(sql).locks


def sql_locks(sql: str) -> list[tuple[Statement, StatementLocks]]:
    """Every statement of a migration file with its locks.

    >>> [(s.line, l.form) for s, l in sql_locks("CREATE TABLE a (x int);\\nCREATE INDEX ON a (x);")]
    [(1, 'CREATE TABLE'), (2, 'CREATE INDEX')]
    """
    return [(st, _classify_text(st.text)) for st in split_sql(sql)]
