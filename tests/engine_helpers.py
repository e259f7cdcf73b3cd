"""Small helpers for the engine tests: migration folders in tmp_path, reading _prisma_migrations."""

from __future__ import annotations

from pathlib import Path

import asyncpg


def make_migrations(root: Path, migrations: dict[str, str | bytes], *, down: dict[str, tuple[str, str]] | None = None,
                    provider: str | None = "postgresql") -> Path:
    """Write ``{name: sql}`` as Prisma folders under ``root``; ``down`` = {name: (filename, sql)}."""
    root.mkdir(parents=True, exist_ok=True)
    if provider:
        (root / "migration_lock.toml").write_text(f'# managed by Prisma\nprovider = "{provider}"\n')
    for name, sql in migrations.items():
        folder = root / name
        folder.mkdir(exist_ok=True)
        data = sql.encode() if isinstance(sql, str) else sql
        (folder / "migration.sql").write_bytes(data)
    for name, (filename, sql) in (down or {}).items():
        (root / name / filename).write_text(sql)
    return root


async def rows(url: str) -> list[dict]:
    conn = await asyncpg.connect(url)
    try:
        return [dict(r) for r in await conn.fetch("SELECT * FROM _prisma_migrations ORDER BY started_at")]
    finally:
        await conn.close()


async def fetchval(url: str, sql: str):  # type: ignore[no-untyped-def]
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()
