"""A database's schema read from ``pg_catalog`` into plain objects keyed by name, never by OID.

    >>> catalog = await read_catalog(conn)                                # doctest: +SKIP
    >>> catalog.tables["public", "user"].columns["username"].describe()   # doctest: +SKIP
    'character varying(255) NOT NULL'

Two databases built from the same migrations give equal catalogs even though their OIDs
differ: every object is keyed by schema and name (functions also by argument types), and
every definition comes from PostgreSQL's own deparser (``format_type``, ``pg_get_indexdef``,
``pg_get_constraintdef``, ``pg_get_viewdef``, ``pg_get_functiondef``, ``pg_get_triggerdef``).
Those deparsers qualify names by the connection's ``search_path``, so compare catalogs read
with the same one.

Left out: system schemas (``pg_catalog``, ``information_schema``, ``pg_toast*``, ``pg_temp*``),
objects that belong to an extension (``pg_depend.deptype = 'e'``), the ledger
``_prisma_migrations``, sequences of identity columns (the column says it all), and things
migrations rarely own and servers differ on: owners, grants, row-level security policies,
statistics, domains and composite types.

Each kind is read with one set-based query, so a schema of thousands of columns costs about
as much as one of ten (a handful of round trips).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import asyncpg

LEDGER_TABLE = "_prisma_migrations"

Identity = tuple[str, ...]  # ("table", schema, name), ("column", schema, table, column), …

_SCHEMA_FILTER = """n.nspname NOT IN ('pg_catalog', 'information_schema')
    AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'"""


def _not_extension_member(catalog: str, oid: str) -> str:
    return (f"NOT EXISTS (SELECT 1 FROM pg_depend dep WHERE dep.classid = '{catalog}'::regclass "
            f"AND dep.objid = {oid} AND dep.deptype = 'e')")


# Relations worth comparing; the other queries join on it so their filters are the same.
_RELS = f"""
WITH rels AS (
  SELECT c.oid, n.nspname AS schema, c.relname AS name, c.relkind::text AS relkind
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p', 'f', 'v', 'm', 'S') AND {_SCHEMA_FILTER}
    AND c.relname <> '{LEDGER_TABLE}' AND {_not_extension_member('pg_class', 'c.oid')}
)
"""

_SCHEMAS = f"""
SELECT n.nspname AS name, d.description AS comment
FROM pg_namespace n
LEFT JOIN pg_description d ON d.objoid = n.oid AND d.classoid = 'pg_namespace'::regclass AND d.objsubid = 0
WHERE {_SCHEMA_FILTER} AND {_not_extension_member('pg_namespace', 'n.oid')}
"""

_TABLES = _RELS + """
SELECT r.schema, r.name, r.relkind, d.description AS comment
FROM rels r
LEFT JOIN pg_description d ON d.objoid = r.oid AND d.classoid = 'pg_class'::regclass AND d.objsubid = 0
WHERE r.relkind IN ('r', 'p', 'f')
"""

_COLUMNS = _RELS + """
SELECT r.schema, r.name AS table_name, a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type,
       a.attnotnull AS not_null, a.attidentity::text AS identity, a.attgenerated::text AS generated,
       pg_get_expr(ad.adbin, ad.adrelid) AS expression,
       CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation THEN
            CASE WHEN cn.nspname = 'pg_catalog' THEN quote_ident(co.collname)
                 ELSE quote_ident(cn.nspname) || '.' || quote_ident(co.collname) END END AS collation,
       d.description AS comment
FROM rels r
JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
LEFT JOIN pg_collation co ON co.oid = a.attcollation
LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace
LEFT JOIN pg_description d ON d.objoid = r.oid AND d.classoid = 'pg_class'::regclass AND d.objsubid = a.attnum
WHERE r.relkind IN ('r', 'p', 'f')
ORDER BY r.schema, r.name, a.attnum
"""

_CONSTRAINTS = _RELS + """
SELECT r.schema, r.name AS table_name, con.conname AS name, con.contype::text AS type,
       pg_get_constraintdef(con.oid, true) AS definition, con.convalidated AS validated,
       con.condeferrable AS deferrable, con.condeferred AS deferred
FROM rels r JOIN pg_constraint con ON con.conrelid = r.oid
WHERE con.contype IN ('p', 'u', 'c', 'f', 'x')
"""

_INDEXES = _RELS + """
SELECT r.schema, r.name AS table_name, ic.relname AS name, pg_get_indexdef(i.indexrelid) AS definition,
       am.amname AS method, i.indisunique AS is_unique, i.indisprimary AS is_primary, i.indisvalid AS valid,
       pg_get_expr(i.indpred, i.indrelid) AS predicate,
       (SELECT con.conname FROM pg_constraint con WHERE con.conindid = i.indexrelid
          AND con.conrelid = i.indrelid AND con.contype IN ('p', 'u', 'x') LIMIT 1) AS constraint_name
FROM rels r
JOIN pg_index i ON i.indrelid = r.oid
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_am am ON am.oid = ic.relam
"""

_ENUMS = f"""
SELECT n.nspname AS schema, t.typname AS name,
       coalesce(array_agg(e.enumlabel ORDER BY e.enumsortorder) FILTER (WHERE e.enumlabel IS NOT NULL),
                '{{}}') AS labels
FROM pg_type t
JOIN pg_namespace n ON n.oid = t.typnamespace
LEFT JOIN pg_enum e ON e.enumtypid = t.oid
WHERE t.typtype = 'e' AND {_SCHEMA_FILTER} AND {_not_extension_member('pg_type', 't.oid')}
GROUP BY n.nspname, t.typname
"""

_SEQUENCES = _RELS + """
SELECT r.schema, r.name, format_type(s.seqtypid, NULL) AS data_type, s.seqstart AS start,
       s.seqincrement AS increment, s.seqmin AS minimum, s.seqmax AS maximum, s.seqcache AS cache,
       s.seqcycle AS cycle,
       (SELECT oc.relname || '.' || a.attname
          FROM pg_depend d
          JOIN pg_class oc ON oc.oid = d.refobjid
          JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
         WHERE d.classid = 'pg_class'::regclass AND d.objid = r.oid AND d.refclassid = 'pg_class'::regclass
           AND d.deptype = 'a' AND d.refobjsubid > 0 LIMIT 1) AS owned_by
FROM rels r JOIN pg_sequence s ON s.seqrelid = r.oid
WHERE r.relkind = 'S'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = r.oid
                  AND d.deptype = 'i')
"""

_VIEWS = _RELS + """
SELECT r.schema, r.name, r.relkind = 'm' AS materialized, pg_get_viewdef(r.oid, true) AS definition,
       d.description AS comment
FROM rels r
LEFT JOIN pg_description d ON d.objoid = r.oid AND d.classoid = 'pg_class'::regclass AND d.objsubid = 0
WHERE r.relkind IN ('v', 'm')
"""

_FUNCTIONS = f"""
SELECT n.nspname AS schema, p.proname AS name, pg_get_function_identity_arguments(p.oid) AS arguments,
       p.prokind::text AS kind, pg_get_functiondef(p.oid) AS definition
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE p.prokind IN ('f', 'p', 'w') AND {_SCHEMA_FILTER} AND {_not_extension_member('pg_proc', 'p.oid')}
"""

_TRIGGERS = _RELS + """
SELECT r.schema, r.name AS table_name, tg.tgname AS name, pg_get_triggerdef(tg.oid, true) AS definition,
       tg.tgenabled::text AS enabled
FROM rels r JOIN pg_trigger tg ON tg.tgrelid = r.oid
WHERE NOT tg.tgisinternal
"""

_EXTENSIONS = """
SELECT e.extname AS name, e.extversion AS version, n.nspname AS schema
FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
"""

_CONSTRAINT_KINDS = {"p": "primary key", "u": "unique", "c": "check", "f": "foreign key", "x": "exclusion"}
_RELATION_KINDS = {"r": "table", "p": "partitioned table", "f": "foreign table"}
_IDENTITY = {"a": "GENERATED ALWAYS AS IDENTITY", "d": "GENERATED BY DEFAULT AS IDENTITY"}
_TRIGGER_STATES = {"O": "enabled", "D": "disabled", "R": "enabled on replica only", "A": "always enabled"}


_SHORT_TYPES = [
    (re.compile(r"^character varying\b"), "varchar"),
    (re.compile(r"^character\b"), "char"),
    (re.compile(r"^timestamp(\(\d+\))? with time zone\b"), r"timestamptz\1"),
    (re.compile(r"^timestamp(\(\d+\))? without time zone\b"), r"timestamp\1"),
    (re.compile(r"^time(\(\d+\))? with time zone\b"), r"timetz\1"),
    (re.compile(r"^time(\(\d+\))? without time zone\b"), r"time\1"),
]


def short_type(type_name: str) -> str:
    """The name people write in migrations for a ``format_type`` name (display only; comparisons use the long one).

    >>> short_type("character varying(255)"), short_type("timestamp(6) with time zone[]"), short_type("text")
    ('varchar(255)', 'timestamptz(6)[]', 'text')
    """
    for pattern, short in _SHORT_TYPES:
        if pattern.match(type_name):
            return pattern.sub(short, type_name, count=1)
    return type_name


@dataclass(frozen=True)
class Column:
    """One column: ``describe()`` is what a report shows.

    >>> Column("email", "text", True, "''::text").describe()
    "text NOT NULL DEFAULT ''::text"
    >>> Column("id", "integer", True, identity="a").describe()
    'integer NOT NULL GENERATED ALWAYS AS IDENTITY'
    >>> Column("email", "character varying(255)", False).describe()
    'varchar(255) NULL'
    """

    name: str
    type: str
    not_null: bool
    default: str | None = None
    identity: str = ""  # "a" (ALWAYS), "d" (BY DEFAULT) or ""
    generated: str | None = None  # the expression of GENERATED ALWAYS AS (…) STORED
    collation: str | None = None  # only when it differs from the type's default
    comment: str | None = None

    def describe(self) -> str:
        parts = [short_type(self.type)]
        if self.collation:
            parts.append(f"COLLATE {self.collation}")
        parts.append("NOT NULL" if self.not_null else "NULL")
        if self.default is not None:
            parts.append(f"DEFAULT {self.default}")
        if self.identity:
            parts.append(_IDENTITY.get(self.identity, f"identity {self.identity}"))
        if self.generated is not None:
            parts.append(f"GENERATED ALWAYS AS ({self.generated}) STORED")
        return " ".join(parts)

    def shape(self) -> tuple[object, ...]:
        """Everything but the comment (reported on its own line)."""
        return (self.type, self.not_null, self.default, self.identity, self.generated, self.collation)


@dataclass
class Table:
    schema: str
    name: str
    kind: str = "table"  # "table", "partitioned table", "foreign table"
    columns: dict[str, Column] = field(default_factory=dict)  # in column order
    comment: str | None = None


@dataclass(frozen=True)
class Constraint:
    schema: str
    table: str
    name: str
    kind: str  # "primary key", "unique", "check", "foreign key", "exclusion"
    definition: str  # pg_get_constraintdef without a trailing NOT VALID
    validated: bool = True
    deferrable: bool = False
    deferred: bool = False


@dataclass(frozen=True)
class Index:
    schema: str
    table: str
    name: str
    definition: str  # pg_get_indexdef: CREATE [UNIQUE] INDEX name ON schema.table USING method (…) [WHERE …]
    method: str = "btree"
    unique: bool = False
    primary: bool = False
    predicate: str | None = None
    valid: bool = True  # false: a CREATE INDEX CONCURRENTLY that failed half-way
    constraint: str | None = None  # the primary key / unique / exclusion constraint it backs

    def shape(self) -> tuple[object, ...]:
        return (self.table, self.definition, self.valid)


@dataclass(frozen=True)
class Enum:
    schema: str
    name: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Sequence:
    schema: str
    name: str
    data_type: str
    start: int
    increment: int
    minimum: int
    maximum: int
    cache: int
    cycle: bool
    owned_by: str | None = None  # "table.column" of a serial column

    def describe(self) -> str:
        owned = f" OWNED BY {self.owned_by}" if self.owned_by else ""
        return (f"AS {self.data_type} INCREMENT {self.increment} MINVALUE {self.minimum} MAXVALUE {self.maximum} "
                f"START {self.start} CACHE {self.cache}{' CYCLE' if self.cycle else ''}{owned}")


@dataclass(frozen=True)
class View:
    schema: str
    name: str
    definition: str
    materialized: bool = False
    comment: str | None = None


@dataclass(frozen=True)
class Function:
    schema: str
    name: str
    arguments: str  # identity arguments: "a integer, b text"
    kind: str  # "function", "procedure", "window function"
    definition: str  # pg_get_functiondef: CREATE OR REPLACE FUNCTION …

    @property
    def signature(self) -> str:
        return f"{self.name}({self.arguments})"


@dataclass(frozen=True)
class Trigger:
    schema: str
    table: str
    name: str
    definition: str  # pg_get_triggerdef
    enabled: str = "enabled"


@dataclass(frozen=True)
class Extension:
    name: str
    version: str
    schema: str


@dataclass(frozen=True)
class Schema:
    name: str
    comment: str | None = None


@dataclass
class Catalog:
    """A schema as plain data; every mapping is keyed by names only."""

    schemas: dict[str, Schema] = field(default_factory=dict)
    tables: dict[tuple[str, str], Table] = field(default_factory=dict)
    constraints: dict[tuple[str, str, str], Constraint] = field(default_factory=dict)
    indexes: dict[tuple[str, str], Index] = field(default_factory=dict)
    enums: dict[tuple[str, str], Enum] = field(default_factory=dict)
    sequences: dict[tuple[str, str], Sequence] = field(default_factory=dict)
    views: dict[tuple[str, str], View] = field(default_factory=dict)
    functions: dict[tuple[str, str], Function] = field(default_factory=dict)  # (schema, "name(args)")
    triggers: dict[tuple[str, str, str], Trigger] = field(default_factory=dict)
    extensions: dict[str, Extension] = field(default_factory=dict)
    current_schema: str = "public"  # the first schema of the search_path: reports leave it out

    def identities(self) -> set[Identity]:
        """Every object as an identity tuple, the same ones :func:`new_identities` returns."""
        ids: set[Identity] = {("schema", s) for s in self.schemas}
        for (schema, name), table in self.tables.items():
            ids.add(("table", schema, name))
            ids.update(("column", schema, name, c) for c in table.columns)
        ids.update(("constraint", *k) for k in self.constraints)
        ids.update(("index", *k) for k in self.indexes)
        ids.update(("enum", *k) for k in self.enums)
        ids.update(("sequence", *k) for k in self.sequences)
        ids.update(("view", *k) for k in self.views)
        ids.update(("function", *k) for k in self.functions)
        ids.update(("trigger", *k) for k in self.triggers)
        ids.update(("extension", k) for k in self.extensions)
        return ids

    def object_count(self) -> int:
        return (len(self.tables) + sum(len(t.columns) for t in self.tables.values()) + len(self.constraints)
                + len(self.indexes) + len(self.enums) + len(self.sequences) + len(self.views)
                + len(self.functions) + len(self.triggers) + len(self.extensions))


def _strip_not_valid(definition: str) -> str:
    """pg_get_constraintdef appends " NOT VALID" to an unvalidated constraint; validity is kept apart."""
    return definition[: -len(" NOT VALID")] if definition.endswith(" NOT VALID") else definition


async def read_catalog(conn: asyncpg.Connection, *, timeout: float = 120.0) -> Catalog:
    """The schema of the database ``conn`` is connected to, read in one consistent snapshot.

    Inside a transaction the caller opened, that transaction's snapshot is used (read the
    ledger in the same one to see both at the same moment).
    """
    if conn.is_in_transaction():
        return await _read_catalog(conn, timeout)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        return await _read_catalog(conn, timeout)


async def _read_catalog(conn: asyncpg.Connection, timeout: float) -> Catalog:
    catalog = Catalog()
    catalog.current_schema = await conn.fetchval("SELECT coalesce(current_schema(), 'public')",
                                                 timeout=timeout)
    for r in await conn.fetch(_SCHEMAS, timeout=timeout):
        catalog.schemas[r["name"]] = Schema(r["name"], r["comment"])
    for r in await conn.fetch(_TABLES, timeout=timeout):
        catalog.tables[r["schema"], r["name"]] = Table(r["schema"], r["name"], _RELATION_KINDS[r["relkind"]],
                                                       comment=r["comment"])
    for r in await conn.fetch(_COLUMNS, timeout=timeout):
        generated = bool(r["generated"])
        catalog.tables[r["schema"], r["table_name"]].columns[r["name"]] = Column(
            r["name"], r["type"], r["not_null"], None if generated else r["expression"], r["identity"] or "",
            r["expression"] if generated else None, r["collation"], r["comment"])
    for r in await conn.fetch(_CONSTRAINTS, timeout=timeout):
        catalog.constraints[r["schema"], r["table_name"], r["name"]] = Constraint(
            r["schema"], r["table_name"], r["name"], _CONSTRAINT_KINDS[r["type"]],
            _strip_not_valid(r["definition"]), r["validated"], r["deferrable"], r["deferred"])
    for r in await conn.fetch(_INDEXES, timeout=timeout):
        catalog.indexes[r["schema"], r["name"]] = Index(
            r["schema"], r["table_name"], r["name"], r["definition"], r["method"], r["is_unique"],
            r["is_primary"], r["predicate"], r["valid"], r["constraint_name"])
    for r in await conn.fetch(_ENUMS, timeout=timeout):
        catalog.enums[r["schema"], r["name"]] = Enum(r["schema"], r["name"], tuple(r["labels"]))
    for r in await conn.fetch(_SEQUENCES, timeout=timeout):
        catalog.sequences[r["schema"], r["name"]] = Sequence(
            r["schema"], r["name"], r["data_type"], r["start"], r["increment"], r["minimum"], r["maximum"],
            r["cache"], r["cycle"], r["owned_by"])
    for r in await conn.fetch(_VIEWS, timeout=timeout):
        catalog.views[r["schema"], r["name"]] = View(r["schema"], r["name"], r["definition"], r["materialized"],
                                                     r["comment"])
    kinds = {"f": "function", "p": "procedure", "w": "window function"}
    for r in await conn.fetch(_FUNCTIONS, timeout=timeout):
        fn = Function(r["schema"], r["name"], r["arguments"], kinds[r["kind"]], r["definition"])
        catalog.functions[fn.schema, fn.signature] = fn
    for r in await conn.fetch(_TRIGGERS, timeout=timeout):
        catalog.triggers[r["schema"], r["table_name"], r["name"]] = Trigger(
            r["schema"], r["table_name"], r["name"], r["definition"], _TRIGGER_STATES.get(r["enabled"], "enabled"))
    for r in await conn.fetch(_EXTENSIONS, timeout=timeout):
        catalog.extensions[r["name"]] = Extension(r["name"], r["version"], r["schema"])
    return catalog


# --- which objects a migration created ----------------------------------------------------------------
#
# Catalog rows a transaction inserts or updates carry its xid in ``xmin``. After each migration,
# the rows younger than the previous look are read: the objects they describe that were never
# seen before are the ones that migration created. ``age(xmin) < txid_current() - since`` is
# "xmin is after ``since``" with wraparound handled by PostgreSQL (frozen rows have the largest age).

_IDENTITIES = """
SELECT 'schema' AS kind, n.nspname AS a, NULL::name AS b, NULL::text AS c
  FROM pg_namespace n WHERE {n}
UNION ALL
SELECT CASE WHEN c.relkind IN ('r', 'p', 'f') THEN 'table' WHEN c.relkind IN ('v', 'm') THEN 'view'
            WHEN c.relkind = 'S' THEN 'sequence' ELSE 'index' END, n.nspname, c.relname, NULL
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'f', 'v', 'm', 'S', 'i', 'I') AND {c}
UNION ALL
SELECT 'column', n.nspname, c.relname, a.attname
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'f') AND {a}
UNION ALL
SELECT 'constraint', n.nspname, c.relname, con.conname
  FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE {con}
UNION ALL
SELECT 'enum', n.nspname, t.typname, NULL
  FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
 WHERE t.typtype = 'e' AND {t}
UNION ALL
SELECT 'function', n.nspname, p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')', NULL
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE {p}
UNION ALL
SELECT 'trigger', n.nspname, c.relname, tg.tgname
  FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE NOT tg.tgisinternal AND {tg}
UNION ALL
SELECT 'extension', e.extname, NULL, NULL FROM pg_extension e WHERE {e}
"""
_ALIASES = ("n", "c", "a", "con", "t", "p", "tg", "e")
_ALL_IDENTITIES = _IDENTITIES.format(**{alias: "true" for alias in _ALIASES})
# One round trip: the transaction id marks the moment, and only rows younger than ``since`` are read.
_NEW_IDENTITIES = (
    "WITH mark AS MATERIALIZED (SELECT txid_current() AS now),\n"
    "     win AS MATERIALIZED (SELECT least(greatest(now - $1::bigint, 0), 2147483647)::int AS span FROM mark)\n"
    "SELECT 'mark' AS kind, now::text AS a, NULL::name AS b, NULL::text AS c FROM mark\nUNION ALL"
    + _IDENTITIES.format(**{alias: f"age({alias}.xmin) < (SELECT span FROM win)" for alias in _ALIASES}))
_MAX_AGE = 2**31 - 1


def _identities(rows: list[asyncpg.Record]) -> set[Identity]:
    found: set[Identity] = set()
    for r in rows:
        found.add((r["kind"], *[p for p in (r["a"], r["b"], r["c"]) if p is not None]))
    return found


async def all_identities(conn: asyncpg.Connection, *, timeout: float = 120.0) -> set[Identity]:
    """Every object of the database as identity tuples, with nothing left out (no transaction id used)."""
    return _identities(await conn.fetch(_ALL_IDENTITIES, timeout=timeout))


async def new_identities(conn: asyncpg.Connection, since: int | None, *, timeout: float = 120.0
                         ) -> tuple[set[Identity], int]:
    """Objects whose catalog rows changed after transaction ``since`` (all when None), and the mark to pass next.

        >>> seen, mark = await new_identities(conn, None)           # doctest: +SKIP
        >>> await conn.execute("CREATE TABLE t (x int)")            # doctest: +SKIP
        >>> (await new_identities(conn, mark))[0]                   # doctest: +SKIP
        {('table', 'public', 't'), ('column', 'public', 't', 'x')}

    The identities have the shapes :meth:`Catalog.identities` uses; changed rows of older objects
    are returned too, so callers keep the first migration that showed each object.
    """
    rows = await conn.fetch(_NEW_IDENTITIES, 0 if since is None else since, timeout=timeout)
    mark = next(int(r["a"]) for r in rows if r["kind"] == "mark")
    if since is None:
        return await all_identities(conn, timeout=timeout), mark
    return _identities([r for r in rows if r["kind"] != "mark"]), mark
