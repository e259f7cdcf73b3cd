"""No password or token ever appears in what a ``migrabot`` command prints, whatever goes wrong.

Every subcommand that exists in :func:`bot.cli.build_parser` is discovered and run as a real
process, so commands added later are covered without touching this file. Each runs with
configurations whose URLs carry a password: a working database, a refused port, a host that does
not resolve, an ``env:`` variable that is unset, and an unknown environment. For every run: the
password (and the Slack signing secret in the environment) never appears on stdout or stderr; no
run ends with an uncaught exception; without ``-v`` there is no traceback at all; a command that
reports an error exits non-zero. The ``-v`` runs check the log lines too.

A command that by design runs until stopped (a server) must still stop by itself in these
conditions (no Slack tokens, no stdin, a broken database); if it cannot, give it arguments that
make it exit in :data:`EXTRA_ARGS`.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from bot.cli import build_parser

SECRET = "Sup3rS3cret"
SIGNING_SECRET = "SigningS3cretValue0123456789"
TIMEOUT = 60  # seconds per run; every command has its own, shorter, network timeouts
# Extra arguments for a command (by its words, e.g. "backup list") that needs them to finish.
EXTRA_ARGS: dict[str, list[str]] = {}
MIGRATION = "20240101000000_init"
ENV_DESTS = ("env", "environment", "env_name")


def _leaf_commands(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], argparse.ArgumentParser]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        if words:
            yield words, parser
        return
    for action in subs:
        for name, sub in action.choices.items():
            yield from _leaf_commands(sub, (*words, name))


def discover() -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    seen: set[int] = set()
    found = []
    for words, sub in _leaf_commands(build_parser()):
        if id(sub) in seen:  # an alias of a command already listed
            continue
        seen.add(id(sub))
        found.append((words, sub))
    return found


COMMANDS = discover()


@dataclass
class Scenario:
    name: str
    config: Path
    env_name: str = "prod"
    verbose: bool = False


def _is_env(action: argparse.Action) -> bool:
    """An environment name: by its dest, or a metavar like ``ENV`` or ``ENV|DIR``."""
    metavar = action.metavar if isinstance(action.metavar, str) else ""
    return action.dest.lower() in ENV_DESTS or "ENV" in metavar.replace("|", " ").split()


def _placeholder(action: argparse.Action, env_name: str, migrations: Path) -> str:
    """A sensible value for an argument this test knows nothing about."""
    dest = action.dest.lower()
    metavar = action.metavar if isinstance(action.metavar, str) else ""
    if action.choices:
        return str(next(iter(action.choices)))
    if _is_env(action):
        return env_name
    if "migration" in dest or metavar in ("NAME", "MIGRATION"):
        return MIGRATION
    if any(word in dest for word in ("dir", "path", "file", "folder")):
        return str(migrations)
    return "x"


def build_argv(words: tuple[str, ...], parser: argparse.ArgumentParser, scenario: Scenario,
               migrations: Path) -> list[str]:
    argv = ["-v"] if scenario.verbose else []
    argv += [*words]
    # one option of each required either/or group (e.g. resolve --applied | --rolled-back)
    chosen = {id(group._group_actions[0]) for group in parser._mutually_exclusive_groups if group.required}
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._VersionAction):
            continue
        if action.option_strings:
            if "--config" in action.option_strings:
                argv += ["--config", str(scenario.config)]
            elif action.required or id(action) in chosen:
                argv.append(action.option_strings[0])
                if action.nargs != 0:
                    argv.append(_placeholder(action, scenario.env_name, migrations))
        elif action.nargs not in ("?", "*", argparse.REMAINDER):
            argv.append(_placeholder(action, scenario.env_name, migrations))
    return argv + EXTRA_ARGS.get(" ".join(words), [])


def _with_password(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{parts.username or 'postgres'}:{SECRET}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(path: Path, url: str, root: Path, admin_url: str, health_url: str) -> Path:
    path.write_text(f'''
[state]
path = "{root / "state.sqlite3"}"

[environments.staging]
database_url = "{url}"
migrations_dir = "{root / "migrations"}"
backup_dir = "{root / "backups"}"
connect_timeout = "3s"

[environments.prod]
aliases = ["production"]
database_url = "{url}"
migrations_dir = "{root / "migrations"}"
backup_dir = "{root / "backups"}"
pgbouncer_admin_url = "{admin_url}"
health_url = "{health_url}"
connect_timeout = "3s"
lock_timeout = "1s"
advisory_lock_timeout = "2s"
''')
    return path


@pytest.fixture
def scenarios(tmp_path: Path, database_url: str) -> list[Scenario]:
    migrations = tmp_path / "migrations" / MIGRATION
    migrations.mkdir(parents=True)
    (migrations / "migration.sql").write_text('CREATE TABLE "Thing" ("id" SERIAL PRIMARY KEY, "name" TEXT);\n')
    (tmp_path / "migrations" / "migration_lock.toml").write_text('provider = "postgresql"\n')
    port = _refused_port()
    admin = f"postgresql://pgbouncer:{SECRET}@127.0.0.1:{port}/pgbouncer"
    health = f"http://127.0.0.1:{port}/health"
    good = _with_password(database_url)
    refused = f"postgresql://postgres:{SECRET}@127.0.0.1:{port}/mbtest_refused"
    badhost = f"postgresql://postgres:{SECRET}@migrabot-no-such-host.invalid:5432/mbtest_badhost"
    unset = (tmp_path / "unset.toml")
    unset.write_text('[environments.prod]\ndatabase_url = "env:MIGRABOT_TEST_UNSET_URL"\n'
                     f'pgbouncer_admin_url = "{admin}"\n')
    cfg = {name: _config(tmp_path / f"{name}.toml", url, tmp_path, admin, health)
           for name, url in (("good", good), ("refused", refused), ("badhost", badhost))}
    return [
        # -v on the working database and on the unresolvable host checks the log lines of the
        # success path and of an error path; the others check the plain output for tracebacks
        Scenario("good -v", cfg["good"], verbose=True),
        Scenario("refused", cfg["refused"]),
        Scenario("badhost -v", cfg["badhost"], verbose=True),
        Scenario("unset-env", unset),
        Scenario("unknown-env", cfg["good"], env_name="nosuchenv"),
    ]


@dataclass
class Result:
    argv: list[str]
    code: int | None
    out: str
    err: str

    def show(self) -> str:
        return f"migrabot {' '.join(self.argv)} -> exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


def _run(argv: list[str], cwd: Path, database_url: str) -> Result:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "MIGRABOT_", "PG"))}
    env.update({
        # the runbook's variables, holding the password too
        "DATABASE_URL": _with_password(database_url), "NODE_ENV": "production",
        "SLACK_SIGNING_SECRET": SIGNING_SECRET, "PGPASSWORD": SECRET, "CI": "true",
    })
    try:
        proc = subprocess.run([sys.executable, "-m", "bot", *argv], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        def text(b: bytes | str | None) -> str:
            return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")
        return Result(argv, None, text(exc.stdout), text(exc.stderr))
    return Result(argv, proc.returncode, proc.stdout, proc.stderr)


def takes_env(parser: argparse.ArgumentParser) -> bool:
    return any(not a.option_strings and _is_env(a) and a.nargs not in ("?", "*") for a in parser._actions)


# the last line Python prints for an uncaught exception: "asyncpg.exceptions.Foo: ...", "KeyError: 'x'"
UNCAUGHT = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b(:|$)")
CONNECTION_FAILURE = ("connection refused", "cannot resolve", "cannot connect", "no answer from")


def test_commands_are_discovered():
    assert ("check-config",) in [words for words, _ in COMMANDS]


@pytest.mark.parametrize(("words", "parser"), COMMANDS, ids=[" ".join(w) for w, _ in COMMANDS])
def test_no_secret_in_any_output(words, parser, scenarios, tmp_path, database_url):
    migrations = tmp_path / "migrations"
    argvs = [(s, build_argv(words, parser, s, migrations)) for s in scenarios]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda sa: (sa[0], _run(sa[1], tmp_path, database_url)), argvs))
    failures = []
    for scenario, r in results:
        both = r.out + r.err
        problems = []
        if r.code is None:
            problems.append(f"did not finish within {TIMEOUT}s (add arguments in EXTRA_ARGS if it is a server)")
        if SECRET in both or SIGNING_SECRET in both:
            problems.append("a secret appears in the output")
        if not scenario.verbose and "Traceback" in r.err:
            problems.append("a traceback instead of one sentence")
        if UNCAUGHT.search(r.err.strip().rsplit("\n", 1)[-1]):
            problems.append("ends with an uncaught exception")
        lowered = r.err.lower()
        if r.code == 0 and not scenario.verbose and (
                r.err.startswith("migrabot: ") or any(c in lowered for c in CONNECTION_FAILURE)):
            problems.append("reports an error but exits 0")
        if scenario.name == "unset-env" and "--config" in r.argv and r.code == 0:
            problems.append("exits 0 although the configuration is unusable")
        if scenario.name == "unknown-env" and takes_env(parser) and r.code == 0:
            problems.append("exits 0 although the environment does not exist")
        if problems:
            failures.append(f"[{scenario.name}] {'; '.join(problems)}\n{r.show()}")
    assert not failures, "\n\n".join(failures)
