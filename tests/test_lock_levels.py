"""The lock table of actions/lock_levels.py, row by row, against a real server's pg_locks.

Each case runs its statement in a transaction on a shared database (rolled back afterwards) and
reads ``pg_locks`` for that backend from a second session: for every relation the table names,
its mode must be the strongest mode the backend took on that relation. Where the effect can be
seen it is checked too: a ``rewrite`` gives the table a new relfilenode, an ``index build`` a new
or rebuilt index, a ``scan`` counts in ``pg_stat_xact_user_tables``, a ``brief`` change neither.

Statements that cannot run in a transaction (CONCURRENTLY, VACUUM) are caught half-way: another
session holds a transaction that makes them wait, and the modes they hold or wait for are read.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from actions.lock_levels import (
    FORMS,
    LOCK_TABLE_FORM,
    MODES,
    classify,
    conflicts,
    mode_name,
    sql_locks,
    statement_locks,
    strongest,
)
from tests import pgserver

SETUP = """
CREATE SCHEMA archive;
CREATE TABLE orgs (id int PRIMARY KEY, name text);
CREATE TABLE users (id int PRIMARY KEY, org_id int, email text, name varchar(20), age int, nickname text,
                    CONSTRAINT users_org_fk FOREIGN KEY (org_id) REFERENCES orgs (id));
CREATE INDEX users_age_idx ON users (age);
CREATE UNIQUE INDEX users_email_key ON users (email);
ALTER TABLE users ADD CONSTRAINT users_age_check CHECK (age >= 0) NOT VALID;
CREATE FUNCTION noop() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
CREATE TRIGGER users_noop BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION noop();
CREATE TABLE events (id int, kind int) PARTITION BY LIST (kind);
CREATE TABLE events_1 PARTITION OF events FOR VALUES IN (1);
CREATE TABLE events_2 (id int, kind int);
CREATE VIEW active_users AS SELECT id, email FROM users WHERE email LIKE '%@%';
INSERT INTO orgs SELECT g, 'org ' || g FROM generate_series(1, 100) g;
INSERT INTO users SELECT g, g % 100 + 1, 'u' || g || '@example.com', 'n' || g, g % 90,
                         CASE WHEN g % 2 = 0 THEN NULL ELSE 'nick' END FROM generate_series(1, 2000) g;
CREATE MATERIALIZED VIEW org_sizes AS SELECT org_id, count(*) AS n FROM users GROUP BY org_id;
CREATE UNIQUE INDEX org_sizes_org ON org_sizes (org_id);
ANALYZE;
"""


@dataclass(frozen=True)
class Case:
    sql: str
    form: str
    effects: bool = True  # False where the effect cannot be seen here (said why next to the case)
    blocker: str | None = None  # for a statement that cannot run in a transaction: what makes it wait
    undo: str | None = None  # and what puts the shared database back afterwards

    def __str__(self) -> str:
        return self.sql


AT = "ALTER TABLE"
WRITER = "INSERT INTO users (id, org_id) VALUES (99999, 1)"  # CONCURRENTLY waits for writers like this one
READER = "SELECT count(*) FROM users WHERE age = 1"
CASES = [
    Case("CREATE TABLE t_new (id int PRIMARY KEY, org_id int REFERENCES orgs (id))", "CREATE TABLE"),
    Case("CREATE VIEW v_new AS SELECT id FROM users", "CREATE VIEW"),
    Case("DROP TABLE events_2", "DROP TABLE"),
    Case("DROP VIEW active_users", "DROP VIEW"),
    Case("TRUNCATE events_2", "TRUNCATE", effects=False),  # an empty new file: a new relfilenode, yet instant
    Case("ALTER TABLE users RENAME TO people", f"{AT} RENAME TO"),
    Case('ALTER TABLE "users" RENAME COLUMN "nickname" TO "nick"', f"{AT} RENAME COLUMN"),
    Case("ALTER TABLE users RENAME CONSTRAINT users_age_check TO users_age_ok", f"{AT} RENAME CONSTRAINT"),
    Case("ALTER TABLE events_2 SET SCHEMA archive", f"{AT} SET SCHEMA"),
    Case("ALTER TABLE users OWNER TO CURRENT_USER", f"{AT} OWNER TO"),
    Case("ALTER TABLE users REPLICA IDENTITY FULL", f"{AT} REPLICA IDENTITY"),
    Case('ALTER TABLE "users" ADD COLUMN "bio" TEXT', f"{AT} ADD COLUMN"),
    Case("ALTER TABLE users ADD COLUMN token uuid DEFAULT gen_random_uuid()", f"{AT} ADD COLUMN (volatile default)"),
    Case("ALTER TABLE events_2 ADD COLUMN must int NOT NULL", f"{AT} ADD COLUMN NOT NULL (no default)"),
    Case("ALTER TABLE users ADD COLUMN code int UNIQUE", f"{AT} ADD COLUMN (with index)"),
    Case("ALTER TABLE users DROP COLUMN nickname", f"{AT} DROP COLUMN"),
    Case('ALTER TABLE "users" ALTER COLUMN "age" SET DATA TYPE BIGINT', f"{AT} ALTER COLUMN TYPE"),
    Case('ALTER TABLE "users" ALTER COLUMN "email" SET NOT NULL', f"{AT} ALTER COLUMN SET NOT NULL"),
    Case("ALTER TABLE users ALTER COLUMN email DROP NOT NULL", f"{AT} ALTER COLUMN DROP NOT NULL"),
    Case("ALTER TABLE users ALTER COLUMN nickname SET DEFAULT 'x'", f"{AT} ALTER COLUMN SET DEFAULT"),
    Case("ALTER TABLE users ALTER COLUMN nickname DROP DEFAULT", f"{AT} ALTER COLUMN DROP DEFAULT"),
    Case("ALTER TABLE users ALTER COLUMN age SET STATISTICS 200", f"{AT} ALTER COLUMN SET STATISTICS"),
    Case("ALTER TABLE users ALTER COLUMN email SET STORAGE EXTERNAL", f"{AT} ALTER COLUMN SET STORAGE"),
    Case("ALTER TABLE users ALTER COLUMN age SET (n_distinct = 10)", f"{AT} ALTER COLUMN SET (attribute option)"),
    Case("ALTER TABLE users ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY", f"{AT} ALTER COLUMN identity"),
    Case("ALTER TABLE users ADD CONSTRAINT users_age_pos CHECK (age >= 0)", f"{AT} ADD CHECK"),
    Case("ALTER TABLE users ADD CONSTRAINT users_age_pos CHECK (age >= 0) NOT VALID", f"{AT} ADD CHECK NOT VALID"),
    Case('ALTER TABLE "users" ADD CONSTRAINT "users_org_fk2" FOREIGN KEY ("org_id") REFERENCES "orgs"("id") '
         "ON DELETE CASCADE ON UPDATE CASCADE", f"{AT} ADD FOREIGN KEY"),
    Case("ALTER TABLE users ADD CONSTRAINT users_org_fk2 FOREIGN KEY (org_id) REFERENCES orgs (id) NOT VALID",
         f"{AT} ADD FOREIGN KEY NOT VALID"),
    Case("ALTER TABLE orgs ADD CONSTRAINT orgs_name_key UNIQUE (name)", f"{AT} ADD UNIQUE/PRIMARY KEY"),
    Case("ALTER TABLE users ADD CONSTRAINT users_email_uq UNIQUE USING INDEX users_email_key",
         f"{AT} ADD CONSTRAINT USING INDEX"),
    Case("ALTER TABLE users ADD CONSTRAINT users_no_twins EXCLUDE USING btree (id WITH =)", f"{AT} ADD EXCLUDE"),
    Case("ALTER TABLE users VALIDATE CONSTRAINT users_age_check", f"{AT} VALIDATE CONSTRAINT"),
    Case("ALTER TABLE users DROP CONSTRAINT users_age_check", f"{AT} DROP CONSTRAINT"),
    Case("ALTER TABLE users DISABLE TRIGGER users_noop", f"{AT} ENABLE/DISABLE TRIGGER"),
    Case("ALTER TABLE users ENABLE ROW LEVEL SECURITY", f"{AT} ENABLE/DISABLE ROW LEVEL SECURITY"),
    Case("ALTER TABLE users SET (fillfactor = 70)", f"{AT} SET (storage parameter)"),
    Case("ALTER TABLE events_2 SET UNLOGGED", f"{AT} SET LOGGED/UNLOGGED"),
    # to the tablespace/access method the table already has (another needs a directory on the server): no copy
    Case("ALTER TABLE users SET TABLESPACE pg_default", f"{AT} SET TABLESPACE", effects=False),
    Case("ALTER TABLE users SET ACCESS METHOD heap", f"{AT} SET ACCESS METHOD", effects=False),
    Case("ALTER TABLE users CLUSTER ON users_age_idx", f"{AT} CLUSTER ON"),
    Case("ALTER TABLE events ATTACH PARTITION events_2 FOR VALUES IN (2)", f"{AT} ATTACH PARTITION"),
    Case("ALTER TABLE events DETACH PARTITION events_1", f"{AT} DETACH PARTITION"),
    Case("ALTER TABLE events DETACH PARTITION events_1 CONCURRENTLY", f"{AT} DETACH PARTITION CONCURRENTLY",
         effects=False, blocker="LOCK TABLE events_1 IN ACCESS SHARE MODE",  # its second transaction waits
         undo="ALTER TABLE events ATTACH PARTITION events_1 FOR VALUES IN (1)"),
    Case("ALTER TABLE users ALTER COLUMN email SET COMPRESSION pglz", f"{AT} (other)"),
    Case('CREATE INDEX "users_name_idx" ON "users"("name")', "CREATE INDEX"),
    Case('CREATE UNIQUE INDEX CONCURRENTLY "users_name_key" ON "users"("name")', "CREATE INDEX CONCURRENTLY",
         effects=False, blocker=WRITER, undo="DROP INDEX IF EXISTS users_name_key"),
    Case("DROP INDEX users_age_idx", "DROP INDEX"),
    Case("DROP INDEX CONCURRENTLY users_age_idx", "DROP INDEX CONCURRENTLY", effects=False, blocker=READER,
         undo="CREATE INDEX IF NOT EXISTS users_age_idx ON users (age)"),
    Case("ALTER INDEX users_age_idx RENAME TO users_age_i", "ALTER INDEX RENAME"),
    Case("ALTER INDEX users_age_idx SET TABLESPACE pg_default", "ALTER INDEX SET TABLESPACE", effects=False),
    Case("REINDEX TABLE users", "REINDEX TABLE"),
    Case("REINDEX INDEX users_age_idx", "REINDEX INDEX"),
    Case("REINDEX INDEX CONCURRENTLY users_age_idx", "REINDEX CONCURRENTLY", effects=False, blocker=WRITER),
    Case("CREATE TRIGGER users_noop2 AFTER UPDATE ON users FOR EACH ROW EXECUTE FUNCTION noop()", "CREATE TRIGGER"),
    Case("DROP TRIGGER users_noop ON users", "DROP TRIGGER"),
    Case("COMMENT ON COLUMN users.email IS 'where we write'", "COMMENT ON"),
    Case("INSERT INTO users (id, org_id, email) VALUES (100000, 1, 'new@example.com')", "INSERT"),
    Case("UPDATE users SET age = age + 1 WHERE id < 10", "UPDATE"),
    Case("DELETE FROM users WHERE id = 1", "DELETE"),
    Case("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE", "LOCK TABLE"),
    Case("LOCK orgs", "LOCK TABLE"),
    Case("VACUUM users", "VACUUM", effects=False, blocker="LOCK TABLE users IN SHARE UPDATE EXCLUSIVE MODE"),
    Case("VACUUM FULL users", "VACUUM FULL", effects=False, blocker=READER),
    Case("ANALYZE users", "ANALYZE", effects=False),  # reads a sample, which the scan counters do not count
    Case("CLUSTER users USING users_age_idx", "CLUSTER"),
    Case("REFRESH MATERIALIZED VIEW org_sizes", "REFRESH MATERIALIZED VIEW"),
    Case("REFRESH MATERIALIZED VIEW CONCURRENTLY org_sizes", "REFRESH MATERIALIZED VIEW CONCURRENTLY"),
]
NO_TABLE_CASES = ["CREATE TYPE mood AS ENUM ('ok', 'meh')", "CREATE SCHEMA reports",
                  "CREATE FUNCTION two() RETURNS int LANGUAGE sql AS 'SELECT 2'", "SET search_path TO public"]


@pytest.fixture(scope="module")
def lockdb(pg_server: pgserver.Server) -> Iterator[str]:
    name = asyncio.run(pgserver.create_database(pg_server, prefix="mblocks"))
    url = pg_server.url_for(name)

    async def seed() -> None:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            await conn.execute(SETUP)
        finally:
            await conn.close()

    asyncio.run(seed())
    yield url
    asyncio.run(pgserver.drop_databases_like(pg_server, name))


def test_every_row_of_the_table_has_a_case() -> None:
    assert {c.form for c in CASES} == {*FORMS, LOCK_TABLE_FORM}
    for case in CASES:
        assert case.form in classify(case.sql).forms, case.sql


_RELATIONS = """
SELECT c.oid::int8 AS oid, c.relkind::text AS kind, c.relfilenode::int8 AS filenode,
       coalesce(i.indrelid, c.oid)::int8 AS table_oid
FROM pg_class c LEFT JOIN pg_index i ON i.indexrelid = c.oid
WHERE c.relnamespace IN ('public'::regnamespace, 'archive'::regnamespace)
"""


async def _relations(conn: asyncpg.Connection) -> dict[int, asyncpg.Record]:
    return {r["oid"]: r for r in await conn.fetch(_RELATIONS)}


async def _resolve(conn: asyncpg.Connection, names: list[str]) -> dict[str, int | None]:
    return {n: await conn.fetchval("SELECT to_regclass($1)::int8", n) for n in names}


async def _backend_modes(watcher: asyncpg.Connection, pid: int) -> dict[int, str]:
    """The strongest mode the backend holds or waits for, per relation."""
    rows = await watcher.fetch("SELECT relation::int8 AS oid, mode FROM pg_locks WHERE pid = $1 "
                               "AND locktype = 'relation'", pid)
    by_oid: dict[int, list[str]] = {}
    for r in rows:
        by_oid.setdefault(r["oid"], []).append(r["mode"])
    return {oid: str(strongest(modes)) for oid, modes in by_oid.items()}


def _check_effect(effect: str, oid: int, before: dict[int, Any], after: dict[int, Any], scans: dict[int, int],
                  sql: str) -> None:
    rewritten = oid in before and oid in after and before[oid]["filenode"] != after[oid]["filenode"]
    index_built = any(r["kind"] in ("i", "I") and (r["table_oid"] == oid or o == oid)
                      and (o not in before or before[o]["filenode"] != r["filenode"]) for o, r in after.items())
    scanned = scans.get(oid, 0) > 0
    if effect == "rewrite":
        assert rewritten, f"{sql}: expected a rewrite"
    elif effect == "index build":
        assert index_built, f"{sql}: expected an index build"
    elif effect == "scan":
        assert scanned, f"{sql}: expected a scan"
    elif effect == "brief":
        assert not (scanned or rewritten or index_built), f"{sql}: expected a brief change"
    elif effect == "new":  # building a new table's own indexes reads it, empty as it is
        assert oid not in before, f"{sql}: expected a new relation"


async def _in_transaction(url: str, case: Case) -> None:
    locks = [lock for lock in statement_locks(case.sql) if lock.relation]
    conn = await asyncpg.connect(url, timeout=10)
    watcher = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute("BEGIN; SET LOCAL lock_timeout = '5s'")
        oids = await _resolve(conn, [str(lock.relation) for lock in locks])
        before = await _relations(conn)
        await conn.execute(case.sql)
        for name, oid in (await _resolve(conn, [n for n, o in oids.items() if o is None])).items():
            oids[name] = oid  # created by the statement
        after = await _relations(conn)
        scans = {r["relid"]: r["n"] for r in await conn.fetch(
            "SELECT relid::int8 AS relid, seq_scan + coalesce(idx_scan, 0) AS n FROM pg_stat_xact_user_tables")}
        modes = await _backend_modes(watcher, conn.get_server_pid())
        for lock in locks:
            oid = oids[str(lock.relation)]
            assert oid is not None, f"{case.sql}: {lock.relation} not found"
            assert modes.get(oid) and mode_name(modes[oid]) == lock.mode, (case.sql, lock, modes.get(oid))
            if case.effects:
                _check_effect(lock.effect, oid, before, after, scans, case.sql)
    finally:
        await conn.execute("ROLLBACK")
        await conn.close()
        await watcher.close()


async def _caught_waiting(url: str, case: Case) -> None:
    """Run a statement that cannot be in a transaction while ``case.blocker`` makes it wait; read its locks then."""
    assert case.blocker is not None
    locks = [lock for lock in statement_locks(case.sql) if lock.relation]
    runner = await asyncpg.connect(url, timeout=10)
    blocker = await asyncpg.connect(url, timeout=10)
    watcher = await asyncpg.connect(url, timeout=10)
    task: asyncio.Task[Any] | None = None
    try:
        oids = await _resolve(watcher, [str(lock.relation) for lock in locks])
        await blocker.execute("BEGIN")
        await blocker.execute(case.blocker)
        task = asyncio.create_task(runner.execute(case.sql))
        pid = runner.get_server_pid()
        for _ in range(200):
            if await watcher.fetchval("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid):
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail(f"{case.sql} never waited for the blocking session")
        modes = await _backend_modes(watcher, pid)
        for lock in locks:
            oid = oids[str(lock.relation)]
            assert oid is not None and modes.get(oid), (case.sql, lock, modes)
            assert mode_name(modes[oid]) == lock.mode, (case.sql, lock, modes[oid])
    finally:
        await blocker.execute("ROLLBACK")
        if task is not None:
            await asyncio.wait_for(task, 60)
        if case.undo:
            await watcher.execute(case.undo)
        for conn in (runner, blocker, watcher):
            await conn.close()


@pytest.mark.parametrize("case", CASES, ids=str)
async def test_the_table_names_the_mode_postgresql_takes(lockdb: str, case: Case) -> None:
    if case.blocker:
        await _caught_waiting(lockdb, case)
    else:
        await _in_transaction(lockdb, case)


@pytest.mark.parametrize("sql", NO_TABLE_CASES)
async def test_statements_without_a_table_lock_none(lockdb: str, sql: str) -> None:
    assert statement_locks(sql) == []
    conn = await asyncpg.connect(lockdb, timeout=10)
    watcher = await asyncpg.connect(lockdb, timeout=10)
    try:
        await conn.execute("BEGIN")
        existing = set(await _relations(conn))
        await conn.execute(sql)
        assert not existing & set(await _backend_modes(watcher, conn.get_server_pid()))
    finally:
        await conn.execute("ROLLBACK")
        await conn.close()
        await watcher.close()


async def test_the_conflict_matrix_is_the_servers(lockdb: str) -> None:
    holder = await asyncpg.connect(lockdb, timeout=10)
    asker = await asyncpg.connect(lockdb, timeout=10)
    try:
        for held, asked in itertools.product(MODES, MODES):
            await holder.execute(f"BEGIN; LOCK TABLE orgs IN {held} MODE")
            try:
                await asker.execute(f"BEGIN; LOCK TABLE orgs IN {asked} MODE NOWAIT")
                waited = False
            except asyncpg.LockNotAvailableError:
                waited = True
            finally:
                await asker.execute("ROLLBACK")
                await holder.execute("ROLLBACK")
            assert conflicts(held, asked) is waited, (held, asked)
            assert conflicts(asked, held) is waited
    finally:
        await holder.close()
        await asker.close()


# --- reading the SQL (no server) -------------------------------------------------------------------------


@pytest.mark.parametrize(("sql", "expected"), [
    # several sub-commands: the strongest mode and the worst effect per relation
    ('ALTER TABLE "Post" ADD COLUMN "x" INT, ADD CONSTRAINT "fk" FOREIGN KEY ("x") REFERENCES app."User"("id")',
     [('"Post"', "ACCESS EXCLUSIVE", "scan"), ('app."User"', "SHARE ROW EXCLUSIVE", "scan")]),
    ("alter table only Public.Users alter column a type text, alter column b set not null",
     [("public.users", "ACCESS EXCLUSIVE", "rewrite")]),
    ('ALTER TABLE IF EXISTS "T" ADD COLUMN "n" INTEGER NOT NULL', [('"T"', "ACCESS EXCLUSIVE", "scan")]),
    ('ALTER TABLE "T" ADD COLUMN "n" INTEGER NOT NULL DEFAULT 0', [('"T"', "ACCESS EXCLUSIVE", "brief")]),
    ('ALTER TABLE "T" ADD COLUMN "id2" BIGSERIAL', [('"T"', "ACCESS EXCLUSIVE", "rewrite")]),
    ("DROP TABLE IF EXISTS a, b CASCADE", [("a", "ACCESS EXCLUSIVE", "brief"), ("b", "ACCESS EXCLUSIVE", "brief")]),
    ("LOCK TABLE t IN ROW EXCLUSIVE MODE NOWAIT", [("t", "ROW EXCLUSIVE", "brief")]),
    ("-- a comment first\nCREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t USING gin (doc);",
     [("t", "SHARE UPDATE EXCLUSIVE", "index build")]),
    ("GRANT SELECT ON t TO app", [(None, "unknown", "unknown")]),
    ("SELECT pg_sleep(1)", [(None, "unknown", "unknown")]),
])
def test_reading_statements(sql: str, expected: list[tuple[str | None, str, str]]) -> None:
    assert [tuple(lock) for lock in statement_locks(sql)] == expected


def test_one_statement_at_a_time_and_whole_files() -> None:
    with pytest.raises(ValueError, match="use sql_locks"):
        statement_locks("ALTER TABLE a ADD COLUMN b int; ALTER TABLE a DROP COLUMN c")
    found = sql_locks('CREATE TABLE "A" (id int);\n\nALTER TABLE "A" ADD COLUMN b int;\nCREATE TYPE e AS ENUM (\'x\');')
    assert [(st.line, locks.form, locks.creates) for st, locks in found] == [
        (1, "CREATE TABLE", ('"A"',)), (3, "ALTER TABLE ADD COLUMN", ()), (4, "CREATE TYPE", ())]
