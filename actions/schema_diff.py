"""What differs between the schema the migrations build and the live one, object by object, with the way back.

    >>> from actions.catalog import Catalog, Column, Table
    >>> expected, actual = Catalog(), Catalog()
    >>> expected.tables["public", "users"] = Table("public", "users", columns={"email": Column("email", "text", True)})
    >>> actual.tables["public", "users"] = Table("public", "users", columns={
    ...     "email": Column("email", "character varying(255)", False)})
    >>> [d.message for d in compare_catalogs(expected, actual)]
    ['`users.email`: migrations say `text NOT NULL`, database has `varchar(255) NULL`']

Each :class:`Difference` carries ``fix_sql`` when the way back is simple and safe to generate
(an index, nullability, a default, a check or foreign key constraint, validating a NOT VALID
constraint, a function, a trigger, a comment, a missing enum value), else ``by_hand`` says what a
person has to decide. Generated statements are idempotent (``IF NOT EXISTS``, ``IF EXISTS``,
``OR REPLACE``): in a fix migration they also apply cleanly on a database that never drifted,
such as the shadow database of the next drift check.

Objects inside a table that is missing or extra are not listed one by one: the table is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from actions.catalog import Catalog, Column, Constraint, Identity, Index, Table, Trigger
from actions.db import quote_ident
from actions.prisma_table import literal

BY_HAND = "write this by hand"


@dataclass(frozen=True)
class Difference:
    """One object that differs: ``message`` is the report line."""

    kind: str  # "table", "column", "index", "constraint", "enum", "sequence", "view", "function", …
    name: str  # as shown: "users.email", "idx_orders_created" (schema left out when it is the current one)
    change: str  # "missing" (only the migrations have it), "extra" (only the database), "changed"
    message: str
    group: str  # the object it is listed under: "table `users`", "enum `status`"
    expected: str | None = None  # what the migrations say
    actual: str | None = None  # what the database has
    migration: str | None = None  # the migration that creates it, when known
    fix_sql: str | None = None  # SQL bringing the database to the expected state
    by_hand: str | None = None  # when no SQL is generated: what a person has to do
    identity: Identity = ()

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "change": self.change, "message": self.message,
                "group": self.group, "expected": self.expected, "actual": self.actual,
                "migration": self.migration, "fix_sql": self.fix_sql, "by_hand": self.by_hand,
                "identity": list(self.identity)}


class _Names:
    """Display names (schema left out when it is the current one) and quoted SQL names."""

    def __init__(self, current_schema: str) -> None:
        self.current = current_schema

    def show(self, schema: str, *parts: str) -> str:
        return ".".join(parts) if schema == self.current else ".".join((schema, *parts))

    @staticmethod
    def sql(schema: str, name: str) -> str:
        return f"{quote_ident(schema)}.{quote_ident(name)}"


def _one_line(text: str | None, limit: int = 160) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _comment_shown(text: str | None) -> str:
    return "(none)" if text is None else _one_line(text)


def _comment_sql(text: str | None) -> str:
    return "NULL" if text is None else literal(text)


class _Differ:
    def __init__(self, expected: Catalog, actual: Catalog, created_by: Mapping[Identity, str]) -> None:
        self.expected = expected
        self.actual = actual
        self.created_by = created_by
        self.names = _Names(actual.current_schema)
        self.out: list[Difference] = []
        # tables reported whole: their columns, indexes, constraints and triggers are not listed
        self.whole: set[tuple[str, str]] = set(expected.tables) ^ set(actual.tables)

    # -- emitting ----------------------------------------------------------------------------------

    def missing(self, kind: str, identity: Identity, name: str, group: str, *, expected: str | None = None,
                fix_sql: str | None = None, by_hand: str | None = None, detail: str = "") -> None:
        migration = self.created_by.get(identity)
        if migration:
            message = f"migration `{migration}` is recorded as applied but its {kind} `{name}` is missing"
        else:
            message = f"{kind} `{name}` is missing from the database"
        self.out.append(Difference(kind, name, "missing", message + detail, group, expected, None, migration,
                                   fix_sql, None if fix_sql else (by_hand or BY_HAND), identity))

    def extra(self, kind: str, identity: Identity, name: str, group: str, *, actual: str | None = None,
              fix_sql: str | None = None, by_hand: str | None = None, detail: str = "") -> None:
        message = f"{kind} `{name}` exists only in the database{detail}"
        self.out.append(Difference(kind, name, "extra", message, group, None, actual, None, fix_sql,
                                   None if fix_sql else (by_hand or BY_HAND), identity))

    def changed(self, kind: str, identity: Identity, name: str, group: str, expected: str, actual: str, *,
                fix_sql: str | None = None, by_hand: str | None = None, message: str | None = None) -> None:
        if message is None:
            label = f"`{name}`" if kind == "column" else f"{kind} `{name}`"
            message = f"{label}: migrations say `{expected}`, database has `{actual}`"
        self.out.append(Difference(kind, name, "changed", message, group, expected, actual, None, fix_sql,
                                   None if fix_sql else (by_hand or BY_HAND), identity))

    def _table_group(self, schema: str, table: str) -> str:
        return f"table `{self.names.show(schema, table)}`"

    # -- kinds -------------------------------------------------------------------------------------

    def schemas(self) -> None:
        e, a = self.expected.schemas, self.actual.schemas
        for name in sorted(e.keys() - a.keys()):
            self.missing("schema", ("schema", name), name, f"schema `{name}`",
                         fix_sql=f"CREATE SCHEMA IF NOT EXISTS {quote_ident(name)};")
        for name in sorted(a.keys() - e.keys()):
            self.extra("schema", ("schema", name), name, f"schema `{name}`",
                       by_hand="drop it if nothing uses it (DROP SCHEMA … CASCADE drops everything in it)")
        for name in sorted(e.keys() & a.keys()):
            if e[name].comment != a[name].comment:
                self.changed("comment", ("schema", name), name, f"schema `{name}`", _comment_shown(e[name].comment),
                             _comment_shown(a[name].comment),
                             fix_sql=f"COMMENT ON SCHEMA {quote_ident(name)} IS {_comment_sql(e[name].comment)};",
                             message=f"comment on schema `{name}`: migrations say `{_comment_shown(e[name].comment)}`, "
                                     f"database has `{_comment_shown(a[name].comment)}`")

    def tables(self) -> None:
        e, a = self.expected.tables, self.actual.tables
        for key in sorted(e.keys() - a.keys()):
            name = self.names.show(*key)
            self.missing(e[key].kind, ("table", *key), name, self._table_group(*key),
                         by_hand="find out why it is gone, then create it again as its migration does (or "
                                 "restore a backup)")
        for key in sorted(a.keys() - e.keys()):
            name = self.names.show(*key)
            self.extra(a[key].kind, ("table", *key), name, self._table_group(*key),
                       by_hand="put it in a migration if the application needs it, else drop it (its data goes "
                               "with it: back it up first)")
        for key in sorted(e.keys() & a.keys()):
            self._table(e[key], a[key])

    def _table(self, e: Table, a: Table) -> None:
        group = self._table_group(e.schema, e.name)
        table_sql = self.names.sql(e.schema, e.name)
        for col in [c for c in e.columns if c not in a.columns]:
            spec = e.columns[col].describe()
            self.missing("column", ("column", e.schema, e.name, col), self.names.show(e.schema, e.name, col), group,
                         expected=spec, detail=f" (migrations say `{spec}`)")
        for col in [c for c in a.columns if c not in e.columns]:
            spec = a.columns[col].describe()
            self.extra("column", ("column", a.schema, a.name, col), self.names.show(a.schema, a.name, col), group,
                       actual=spec, detail=f" (`{spec}`)",
                       by_hand="put it in a migration if the application uses it, else drop it (its data goes "
                               "with it)")
        for col in [c for c in e.columns if c in a.columns]:
            self._column(e, e.columns[col], a.columns[col], group, table_sql)
        if e.comment != a.comment:
            self.changed("comment", ("table", e.schema, e.name), self.names.show(e.schema, e.name), group,
                         _comment_shown(e.comment), _comment_shown(a.comment),
                         fix_sql=f"COMMENT ON TABLE {table_sql} IS {_comment_sql(e.comment)};",
                         message=f"comment on table `{self.names.show(e.schema, e.name)}`: migrations say "
                                 f"`{_comment_shown(e.comment)}`, database has `{_comment_shown(a.comment)}`")

    def _column(self, table: Table, e: Column, a: Column, group: str, table_sql: str) -> None:
        name = self.names.show(table.schema, table.name, e.name)
        identity = ("column", table.schema, table.name, e.name)
        if e.shape() != a.shape():
            self.changed("column", identity, name, group, e.describe(), a.describe(),
                         fix_sql=_column_fix(table_sql, e, a),
                         by_hand="change the column in a migration of your own (a type change may need a USING "
                                 "clause and rewrites the table)")
        if e.comment != a.comment:
            self.changed("comment", identity, name, group, _comment_shown(e.comment), _comment_shown(a.comment),
                         fix_sql=f"COMMENT ON COLUMN {table_sql}.{quote_ident(e.name)} IS {_comment_sql(e.comment)};",
                         message=f"comment on column `{name}`: migrations say `{_comment_shown(e.comment)}`, "
                                 f"database has `{_comment_shown(a.comment)}`")

    def constraints(self) -> None:
        e, a = self.expected.constraints, self.actual.constraints
        for key in sorted(e.keys() | a.keys()):
            schema, table, _ = key
            if (schema, table) in self.whole:
                continue
            self._constraint(key, e.get(key), a.get(key))

    def _constraint(self, key: tuple[str, str, str], e: Constraint | None, a: Constraint | None) -> None:
        schema, table, name = key
        shown = self.names.show(*key)
        group = self._table_group(schema, table)
        table_sql = self.names.sql(schema, table)
        identity = ("constraint", *key)
        simple = ("check", "foreign key")
        drop = f"ALTER TABLE {table_sql} DROP CONSTRAINT IF EXISTS {quote_ident(name)};"
        if a is None and e is not None:
            add = f"{drop}\nALTER TABLE {table_sql} ADD CONSTRAINT {quote_ident(name)} {_constraint_text(e)};"
            self.missing(f"{e.kind} constraint", identity, shown, group, expected=_constraint_text(e),
                         fix_sql=add if e.kind in simple else None,
                         by_hand="add it back in a migration of your own (other constraints may depend on it)")
        elif e is None and a is not None:
            self.extra(f"{a.kind} constraint", identity, shown, group, actual=_constraint_text(a),
                       fix_sql=drop if a.kind in simple else None,
                       by_hand="drop it in a migration of your own if nothing depends on it")
        elif e is not None and a is not None and (e.kind, e.definition, e.validated) != (a.kind, a.definition,
                                                                                            a.validated):
            fix: str | None = None
            by_hand = None
            if (e.kind, e.definition) == (a.kind, a.definition) and e.validated and not a.validated:
                fix = f"ALTER TABLE {table_sql} VALIDATE CONSTRAINT {quote_ident(name)};"
            elif (e.kind, e.definition) == (a.kind, a.definition):
                by_hand = ("nothing to do unless you want it NOT VALID as the migrations say: the database's "
                           "constraint is validated, which is stricter")
            elif e.kind in simple and a.kind in simple:
                fix = f"{drop}\nALTER TABLE {table_sql} ADD CONSTRAINT {quote_ident(name)} {_constraint_text(e)};"
            self.changed(f"{e.kind} constraint", identity, shown, group, _constraint_text(e), _constraint_text(a),
                         fix_sql=fix, by_hand=by_hand)

    def indexes(self) -> None:
        # indexes behind a primary key / unique / exclusion constraint are the constraint's business
        e = {k: v for k, v in self.expected.indexes.items() if v.constraint is None}
        a = {k: v for k, v in self.actual.indexes.items() if v.constraint is None}
        for key in sorted(e.keys() | a.keys()):
            index = e.get(key) or a[key]
            if (index.schema, index.table) in self.whole:
                continue
            self._index(key, e.get(key), a.get(key))

    def _index(self, key: tuple[str, str], e: Index | None, a: Index | None) -> None:
        shown = self.names.show(*key)
        identity = ("index", *key)
        drop = f"DROP INDEX IF EXISTS {self.names.sql(*key)};"
        if a is None and e is not None:
            self.missing("index", identity, shown, self._table_group(e.schema, e.table), expected=e.definition,
                         fix_sql=_create_index_if_not_exists(e.definition))
        elif e is None and a is not None:
            self.extra("index", identity, shown, self._table_group(a.schema, a.table), actual=a.definition,
                       fix_sql=drop)
        elif e is not None and a is not None and e.shape() != a.shape():
            group = self._table_group(e.schema, e.table)
            if (e.table, e.definition) == (a.table, a.definition) and e.valid and not a.valid:
                self.changed("index", identity, shown, group, e.definition, a.definition + " (INVALID)",
                             fix_sql=f"REINDEX INDEX {self.names.sql(*key)};",
                             message=f"index `{shown}` is INVALID in the database (a CREATE INDEX CONCURRENTLY "
                                     "failed half-way); the migrations build it valid")
            else:
                self.changed("index", identity, shown, group, e.definition, a.definition,
                             fix_sql=f"{drop}\n{_create_index_if_not_exists(e.definition)}")

    def enums(self) -> None:
        e, a = self.expected.enums, self.actual.enums
        for key in sorted(e.keys() - a.keys()):
            self.missing("enum", ("enum", *key), self.names.show(*key), f"enum `{self.names.show(*key)}`",
                         expected=_labels(e[key].values))
        for key in sorted(a.keys() - e.keys()):
            self.extra("enum", ("enum", *key), self.names.show(*key), f"enum `{self.names.show(*key)}`",
                       actual=_labels(a[key].values))
        for key in sorted(e.keys() & a.keys()):
            if e[key].values != a[key].values:
                shown = self.names.show(*key)
                self.changed("enum", ("enum", *key), shown, f"enum `{shown}`", _labels(e[key].values),
                             _labels(a[key].values), fix_sql=_enum_fix(self.names.sql(*key), e[key].values,
                                                                      a[key].values),
                             by_hand="PostgreSQL cannot drop or reorder enum values: recreate the type in a "
                                     "migration of your own (or put the value in a migration if it is wanted)")

    def sequences(self) -> None:
        e, a = self.expected.sequences, self.actual.sequences

        def in_whole_table(seq: Any) -> bool:
            return bool(seq.owned_by) and (seq.schema, seq.owned_by.split(".")[0]) in self.whole

        for key in sorted(e.keys() - a.keys()):
            if not in_whole_table(e[key]):
                self.missing("sequence", ("sequence", *key), self.names.show(*key),
                             f"sequence `{self.names.show(*key)}`", expected=e[key].describe())
        for key in sorted(a.keys() - e.keys()):
            if not in_whole_table(a[key]):
                self.extra("sequence", ("sequence", *key), self.names.show(*key),
                           f"sequence `{self.names.show(*key)}`", actual=a[key].describe())
        for key in sorted(e.keys() & a.keys()):
            if e[key] != a[key]:
                shown = self.names.show(*key)
                self.changed("sequence", ("sequence", *key), shown, f"sequence `{shown}`", e[key].describe(),
                             a[key].describe())

    def views(self) -> None:
        e, a = self.expected.views, self.actual.views
        for key in sorted(e.keys() | a.keys()):
            view = e.get(key) or a[key]
            kind = "materialized view" if view.materialized else "view"
            shown = self.names.show(*key)
            group = f"{kind} `{shown}`"
            if key not in a:
                self.missing(kind, ("view", *key), shown, group, expected=e[key].definition)
            elif key not in e:
                self.extra(kind, ("view", *key), shown, group, actual=a[key].definition)
            else:
                ev, av = e[key], a[key]
                if (ev.definition, ev.materialized) != (av.definition, av.materialized):
                    self.changed(kind, ("view", *key), shown, group, ev.definition, av.definition,
                                 message=f"{kind} `{shown}`: its definition differs from the migrations' "
                                         f"(migrations: `{_one_line(ev.definition, 100)}`; database: "
                                         f"`{_one_line(av.definition, 100)}`)",
                                 by_hand="recreate it from the migrations' definition (CREATE OR REPLACE VIEW "
                                         "only works when its columns stay the same)")
                if ev.comment != av.comment:
                    sql_kind = "MATERIALIZED VIEW" if ev.materialized else "VIEW"
                    self.changed("comment", ("view", *key), shown, group, _comment_shown(ev.comment),
                                 _comment_shown(av.comment),
                                 fix_sql=f"COMMENT ON {sql_kind} {self.names.sql(*key)} IS "
                                         f"{_comment_sql(ev.comment)};",
                                 message=f"comment on {kind} `{shown}`: migrations say `{_comment_shown(ev.comment)}`, "
                                         f"database has `{_comment_shown(av.comment)}`")

    def functions(self) -> None:
        e, a = self.expected.functions, self.actual.functions
        for key in sorted(e.keys() | a.keys()):
            fn = e.get(key) or a[key]
            shown = self.names.show(*key)
            group = f"{fn.kind} `{shown}`"
            if key not in a:
                self.missing(fn.kind, ("function", *key), shown, group, expected=e[key].definition,
                             fix_sql=_statement(e[key].definition))
            elif key not in e:
                self.extra(fn.kind, ("function", *key), shown, group, actual=a[key].definition,
                           by_hand="drop it in a migration of your own if nothing uses it")
            elif e[key].definition != a[key].definition:
                self.changed(fn.kind, ("function", *key), shown, group, e[key].definition, a[key].definition,
                             fix_sql=_statement(e[key].definition),
                             message=f"{fn.kind} `{shown}`: its definition differs from the migrations'")

    def triggers(self) -> None:
        e, a = self.expected.triggers, self.actual.triggers
        for key in sorted(e.keys() | a.keys()):
            schema, table, _name = key
            if (schema, table) in self.whole:
                continue
            self._trigger(key, e.get(key), a.get(key))

    def _trigger(self, key: tuple[str, str, str], e: Trigger | None, a: Trigger | None) -> None:
        schema, table, name = key
        shown = self.names.show(*key)
        group = self._table_group(schema, table)
        drop = f"DROP TRIGGER IF EXISTS {quote_ident(name)} ON {self.names.sql(schema, table)};"
        if a is None and e is not None:
            self.missing("trigger", ("trigger", *key), shown, group, expected=e.definition,
                         fix_sql=f"{drop}\n{_statement(e.definition)}")
        elif e is None and a is not None:
            self.extra("trigger", ("trigger", *key), shown, group, actual=a.definition, fix_sql=drop)
        elif e is not None and a is not None and (e.definition, e.enabled) != (a.definition, a.enabled):
            if e.definition == a.definition:
                verb = "ENABLE" if e.enabled == "enabled" else "DISABLE"
                fix = (f"ALTER TABLE {self.names.sql(schema, table)} {verb} TRIGGER {quote_ident(name)};"
                       if e.enabled in ("enabled", "disabled") else None)
                self.changed("trigger", ("trigger", *key), shown, group, e.enabled, a.enabled, fix_sql=fix)
            else:
                self.changed("trigger", ("trigger", *key), shown, group, e.definition, a.definition,
                             fix_sql=f"{drop}\n{_statement(e.definition)}")

    def extensions(self) -> None:
        e, a = self.expected.extensions, self.actual.extensions
        for name in sorted(e.keys() - a.keys()):
            self.missing("extension", ("extension", name), name, f"extension `{name}`",
                         fix_sql=f"CREATE EXTENSION IF NOT EXISTS {quote_ident(name)} WITH SCHEMA "
                                 f"{quote_ident(e[name].schema)};")
        for name in sorted(a.keys() - e.keys()):
            self.extra("extension", ("extension", name), name, f"extension `{name}`",
                       by_hand="put it in a migration if the application uses it, else DROP EXTENSION")
        for name in sorted(e.keys() & a.keys()):
            if e[name] != a[name]:
                self.changed("extension", ("extension", name), name, f"extension `{name}`",
                             f"version {e[name].version} in schema {e[name].schema}",
                             f"version {a[name].version} in schema {a[name].schema}",
                             by_hand="ALTER EXTENSION … UPDATE / SET SCHEMA in a migration of your own, or accept "
                                     "the database's (a server upgrade may have updated it)")

    def run(self) -> list[Difference]:
        steps: list[Callable[[], None]] = [self.schemas, self.extensions, self.enums, self.tables,
                                           self.constraints, self.indexes, self.sequences, self.views,
                                           self.functions, self.triggers]
        for step in steps:
            step()
        return self.out


def _constraint_text(c: Constraint) -> str:
    return c.definition + ("" if c.validated else " NOT VALID")


def _create_index_if_not_exists(definition: str) -> str:
    """``pg_get_indexdef`` output made idempotent.

    >>> _create_index_if_not_exists('CREATE UNIQUE INDEX "a b" ON public.t USING btree (x)')
    'CREATE UNIQUE INDEX IF NOT EXISTS "a b" ON public.t USING btree (x);'
    """
    head = "CREATE UNIQUE INDEX " if definition.startswith("CREATE UNIQUE INDEX ") else "CREATE INDEX "
    return f"{head}IF NOT EXISTS {definition[len(head):]};"


def _statement(definition: str) -> str:
    text = definition.strip()
    return text if text.endswith(";") else text + ";"


def _labels(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(literal(v) for v in values) + ")"


def _column_fix(table_sql: str, e: Column, a: Column) -> str | None:
    """SET/DROP NOT NULL and SET/DROP DEFAULT when only those differ; None otherwise."""
    if (e.type, e.identity, e.generated, e.collation) != (a.type, a.identity, a.generated, a.collation):
        return None
    column = f"ALTER TABLE {table_sql} ALTER COLUMN {quote_ident(e.name)}"
    statements = []
    if e.default != a.default:
        statements.append(f"{column} SET DEFAULT {e.default};" if e.default is not None else f"{column} DROP DEFAULT;")
    if e.not_null != a.not_null:
        statements.append(f"{column} SET NOT NULL;" if e.not_null else f"{column} DROP NOT NULL;")
    return "\n".join(statements) or None


def _enum_fix(type_sql: str, expected: tuple[str, ...], actual: tuple[str, ...]) -> str | None:
    """ADD VALUE statements when the database only lacks values (same order otherwise); None otherwise.

    >>> print(_enum_fix('"public"."s"', ("a", "b", "c"), ("a", "c")))
    ALTER TYPE "public"."s" ADD VALUE IF NOT EXISTS 'b' BEFORE 'c';
    """
    if [v for v in expected if v in actual] != list(actual):
        return None  # extra or reordered values: PostgreSQL cannot remove or move them
    statements = []
    for i, value in enumerate(expected):
        if value in actual:
            continue
        later = next((v for v in expected[i + 1:] if v in actual), None)
        where = f" BEFORE {literal(later)}" if later is not None else ""
        statements.append(f"ALTER TYPE {type_sql} ADD VALUE IF NOT EXISTS {literal(value)}{where};")
    return "\n".join(statements) or None


def compare_catalogs(expected: Catalog, actual: Catalog, *,
                     created_by: Mapping[Identity, str] | None = None) -> list[Difference]:
    """Every difference between ``expected`` (built from the migrations) and ``actual`` (the live database).

    ``created_by`` maps an object's identity to the migration that created it: a missing object
    is then reported as "migration `X` is recorded as applied but its table `t` is missing".
    """
    return _Differ(expected, actual, created_by or {}).run()
