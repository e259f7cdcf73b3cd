"""Read a Prisma migrations folder: one ``<name>/migration.sql`` per migration, in name order.

    >>> from pathlib import Path
    >>> migrations = read_migrations(Path("prisma/migrations"))      # doctest: +SKIP
    >>> [(m.name, m.transactional) for m in migrations]               # doctest: +SKIP
    [('20240101_init', True), ('20240202_index', False)]

The checksum is Prisma's: lowercase hex SHA-256 of the file's bytes. A file also matches a
recorded checksum when only its line endings differ (a Windows checkout of the same file).
A UTF-8 byte order mark (which some Windows editors write) stays in the checksum, as Prisma
counts it, but not in the SQL that runs: PostgreSQL would read it as part of the first word.
"""

from __future__ import annotations

import codecs
import hashlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from actions.errors import ActionError
from actions.sqlsplit import non_transactional_reason

MIGRATION_FILE = "migration.sql"
LOCK_FILE = "migration_lock.toml"
DOWN_FILES = ("down.sql", "rollback.sql")
SUPPORTED_PROVIDERS = ("postgresql", "postgres")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _line_ending_variants(data: bytes) -> list[bytes]:
    """The file as it is, with CRLF turned into LF, and with LF turned into CRLF."""
    lf = data.replace(b"\r\n", b"\n")
    crlf = lf.replace(b"\n", b"\r\n")
    return [data, lf, crlf]


@dataclass(frozen=True)
class LocalMigration:
    """One migration folder on disk."""

    name: str
    path: Path  # the migration.sql file
    sql_bytes: bytes
    checksum: str
    transactional: bool
    non_transactional_reason: str | None = None
    down_sql_path: Path | None = None
    checksum_variants: frozenset[str] = field(default_factory=frozenset)

    @property
    def sql(self) -> str:
        """The SQL to run: the file's text without a leading byte order mark."""
        return sql_text(self.sql_bytes)

    def matches(self, checksum: str) -> bool:
        """True when ``checksum`` (from ``_prisma_migrations``) is this file, line endings aside."""
        return checksum.lower() in self.checksum_variants or checksum.lower() == self.checksum


def sql_text(data: bytes) -> str:
    r"""A migration file's bytes as the SQL to send, without a UTF-8 byte order mark.

    >>> sql_text(b"\xef\xbb\xbfSELECT 1;")
    'SELECT 1;'
    """
    return data.removeprefix(codecs.BOM_UTF8).decode("utf-8", errors="replace")


def load_migration(folder: Path) -> LocalMigration:
    """One migration folder; raises ActionError when its migration.sql is missing or unreadable."""
    sql_path = folder / MIGRATION_FILE
    try:
        data = sql_path.read_bytes()
    except FileNotFoundError:
        raise ActionError(
            f'the migration folder "{folder.name}" has no {MIGRATION_FILE} ({sql_path}): add the file '
            "or remove the folder (Prisma refuses such a folder too)") from None
    except OSError as exc:
        raise ActionError(f"cannot read {sql_path}: {exc.strerror or exc}; check its permissions") from None
    try:
        text = data.removeprefix(codecs.BOM_UTF8).decode("utf-8")
    except UnicodeDecodeError:
        raise ActionError(f"{sql_path} is not valid UTF-8: save it as UTF-8 and try again") from None
    reason = non_transactional_reason(text)
    down = next((folder / f for f in DOWN_FILES if (folder / f).is_file()), None)
    checksum = sha256_hex(data)
    # each distinct variant hashed once (an LF file is its own LF variant): per-file work a deploy of
    # thousands of migrations pays before its first statement
    variants = {checksum, *(sha256_hex(v) for v in set(_line_ending_variants(data)) if v != data)}
    return LocalMigration(
        name=folder.name,
        path=sql_path,
        sql_bytes=data,
        checksum=checksum,
        transactional=reason is None,
        non_transactional_reason=reason,
        down_sql_path=down,
        checksum_variants=frozenset(variants),
    )


def check_provider(migrations_dir: Path) -> str | None:
    """The provider named in ``migration_lock.toml`` (None without the file); refuses non-PostgreSQL ones.

    The file is TOML (Prisma writes comments and ``provider = "postgresql"``), read as such.
    """
    lock = migrations_dir / LOCK_FILE
    try:
        data = tomllib.loads(lock.read_bytes().decode("utf-8-sig"))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ActionError(f"cannot read {lock}: {exc.strerror or exc}; check its permissions") from None
    except UnicodeDecodeError:
        raise ActionError(f"{lock} is not UTF-8 text: save it as UTF-8 (Prisma writes "
                          'provider = "postgresql")') from None
    except tomllib.TOMLDecodeError as exc:
        raise ActionError(f"{lock} is not valid TOML ({exc}): it should hold one line "
                          'provider = "postgresql", as Prisma writes it') from None
    provider = data.get("provider")
    if provider is None:
        return None
    if provider not in SUPPORTED_PROVIDERS:
        raise ActionError(
            f'{lock} says provider = "{provider}", but migrabot only runs PostgreSQL migrations: '
            "point migrations_dir at the PostgreSQL migrations folder")
    return str(provider)


def read_migrations(migrations_dir: Path) -> list[LocalMigration]:
    """Every migration in ``migrations_dir``, sorted by folder name (Prisma's order)."""
    migrations_dir = Path(migrations_dir)
    if not migrations_dir.exists():
        raise ActionError(
            f"the migrations folder {migrations_dir} does not exist: set migrations_dir for this "
            "environment in migrabot.toml (usually prisma/migrations)")
    if not migrations_dir.is_dir():
        raise ActionError(f"{migrations_dir} is not a folder: set migrations_dir to the prisma/migrations folder")
    check_provider(migrations_dir)
    try:
        entries = sorted(migrations_dir.iterdir(), key=lambda p: p.name)
    except OSError as exc:
        raise ActionError(
            f"cannot list the migrations folder {migrations_dir}: {exc.strerror or exc}; check its "
            "permissions or set migrations_dir") from None
    # hidden folders (.git, editor state) are not migrations
    return [load_migration(p) for p in entries if p.is_dir() and not p.name.startswith(".")]
