"""``resolve --applied`` / ``--rolled-back``: settle a failed migration exactly as Prisma does.

    >>> await resolve_rolled_back(url, Path("prisma/migrations"), "20240301_bad")   # doctest: +SKIP
    'marked 1 failed row of 20240301_bad as rolled back; the next deploy runs it again'

Both take the migration advisory lock, so they never race a deploy.
"""

from __future__ import annotations

from pathlib import Path

from actions import prisma_table
from actions.advisory_lock import migration_lock
from actions.db import connection
from actions.errors import ActionError
from actions.migrations_dir import load_migration, read_migrations


async def resolve_applied(url: str, migrations_dir: Path, name: str, *, advisory_lock_timeout: float = 10.0,
                          timeout: float = 10.0) -> str:
    """Record ``name`` as applied (you completed it by hand); its failed rows become rolled back."""
    migrations_dir = Path(migrations_dir)
    read_migrations(migrations_dir)  # provider check and a clear error for a wrong folder
    folder = migrations_dir / name
    if not folder.is_dir():
        raise ActionError(
            f'cannot resolve "{name}" as applied (Prisma P3017): there is no folder {folder}; check the name '
            "against `migrabot status ENV`", code="P3017")
    migration = load_migration(folder)
    async with connection(url, timeout=timeout) as conn, migration_lock(conn, timeout=advisory_lock_timeout):
        rows = [r for r in await prisma_table.read_rows(conn) if r.migration_name == name]
        if any(r.is_applied for r in rows):
            raise ActionError(
                f'cannot resolve "{name}" as applied (Prisma P3008): it is already recorded as applied; '
                "nothing to do", code="P3008")
        async with conn.transaction():
            await prisma_table.ensure_table(conn)
            settled = await prisma_table.mark_rolled_back(conn, name)
            await prisma_table.insert_resolved_applied(conn, name, migration.checksum)
    extra = f" ({settled} failed row(s) marked rolled back)" if settled else ""
    return f"recorded {name} as applied{extra}; deploy will not run it"


async def resolve_rolled_back(url: str, migrations_dir: Path, name: str, *, advisory_lock_timeout: float = 10.0,
                              timeout: float = 10.0) -> str:
    """Mark the failed row(s) of ``name`` as rolled back, so the next deploy runs it again."""
    async with connection(url, timeout=timeout) as conn, migration_lock(conn, timeout=advisory_lock_timeout):
        rows = [r for r in await prisma_table.read_rows(conn) if r.migration_name == name]
        if not rows:
            raise ActionError(
                f'cannot resolve "{name}" as rolled back (Prisma P3011): the database has no record of it; '
                "check the name against `migrabot status ENV`", code="P3011")
        if not any(r.is_failed for r in rows):
            raise ActionError(
                f'cannot resolve "{name}" as rolled back (Prisma P3012): it has no failed row, only successful '
                "or already rolled-back ones; to undo an applied migration use `/rollback ENV last` or restore a "
                "backup", code="P3012")
        count = await prisma_table.mark_rolled_back(conn, name)
    return f"marked {count} failed row(s) of {name} as rolled back; the next deploy runs it again"


async def resolve_problem(url: str, migrations_dir: Path, name: str, as_: str, *, timeout: float = 10.0) -> str | None:
    """Why ``resolve`` of ``name`` as ``as_`` ("applied" / "rolled-back") would be refused, or None.

    Asked before a resolve is put up for approval, so nobody approves what Prisma's rules refuse;
    the resolve itself checks again under the advisory lock.
    """
    if as_ not in ("applied", "rolled-back"):
        return f'resolve takes "applied" or "rolled-back", not "{as_}"'
    async with connection(url, timeout=timeout) as conn:
        rows = [r for r in await prisma_table.read_rows(conn) if r.migration_name == name]
    if as_ == "applied":
        if not (Path(migrations_dir) / name).is_dir():
            return (f'cannot resolve "{name}" as applied (Prisma P3017): there is no folder of that name in '
                    f"{migrations_dir}")
        if any(r.is_applied for r in rows):
            return f'cannot resolve "{name}" as applied (Prisma P3008): it is already recorded as applied'
        return None
    if not rows:
        return f'cannot resolve "{name}" as rolled back (Prisma P3011): the database has no record of it'
    if not any(r.is_failed for r in rows):
        return (f'cannot resolve "{name}" as rolled back (Prisma P3012): it has no failed row; to undo an applied '
                "migration use `/rollback ENV last` or restore a backup")
    return None
