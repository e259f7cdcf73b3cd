"""Running squawk: started first, read last.

``migrabot lint DIR`` costs little more than squawk itself when squawk is started before Python
imports and reads anything else: this module imports only what starting it needs (no regular
expressions, no dataclasses), so the CLI can start squawk right after parsing its arguments and do
its own work (reading the files, splitting statements, the configuration) while squawk runs.

    >>> run = SquawkRun([], exclude=("prefer-robust-stmts",))
    >>> run.result()
    []
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from actions.errors import ActionError

# typing.TYPE_CHECKING without importing typing (start-up time); mypy takes the name as True
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import IO, Any

SQUAWK_TIMEOUT = 60.0

#: The rules migrabot tells squawk to skip unless ``[lint] exclude`` says otherwise (why each: actions.lint).
DEFAULT_EXCLUDE: tuple[str, ...] = (
    "prefer-robust-stmts",
    "prefer-text-field",
    "ban-char-field",
    "prefer-bigint-over-int",
    "prefer-bigint-over-smallint",
    "prefer-identity",
    "prefer-timestamp-tz",
    "prefer-timestamptz",
    "require-timeout-settings",
    "require-lock-timeout",
    "require-statement-timeout",
)

#: Rules squawk may be told to skip (``--exclude``): names squawk 2.x knows. squawk refuses a name it
#: does not know, so only these are passed to it; every exclusion is applied again to its findings.
SKIPPABLE: frozenset[str] = frozenset({
    "prefer-robust-stmts", "prefer-text-field", "ban-char-field", "prefer-bigint-over-int",
    "prefer-bigint-over-smallint", "prefer-identity", "prefer-timestamp-tz", "prefer-timestamptz",
    "require-timeout-settings", "require-lock-timeout", "require-statement-timeout",
})


def squawk_binary() -> str:
    """The squawk executable: next to this Python (the venv) first, then on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "squawk.exe" if os.name == "nt" else "squawk")
    if os.path.exists(here):
        return here
    for folder in os.environ.get("PATH", os.defpath).split(os.pathsep):  # shutil.which, without shutil
        found = os.path.join(folder or os.curdir, "squawk")
        if os.path.isfile(found) and os.access(found, os.X_OK):
            return found
    raise ActionError("squawk is not installed: run `pip install squawk-cli` in migrabot's environment")


def _scratch_file() -> IO[bytes]:
    """An unnamed read-write file that vanishes when closed: tempfile.TemporaryFile's job, without loading
    tempfile (O_TMPFILE on Linux; elsewhere a file created exclusively and unlinked at once)."""
    folder = os.environ.get("TMPDIR") or "/tmp"
    if hasattr(os, "O_TMPFILE"):
        try:
            return open(os.open(folder, os.O_TMPFILE | os.O_RDWR, 0o600), "w+b")
        except OSError:  # a file system without O_TMPFILE
            pass
    for attempt in range(100):
        path = os.path.join(folder, f"migrabot-squawk-{os.getpid()}-{time.monotonic_ns()}-{attempt}")
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        except FileExistsError:
            continue
        os.unlink(path)
        return open(fd, "w+b")
    raise ActionError(f"cannot create a scratch file in {folder}: check that it exists and is writable (TMPDIR)")


def migration_files(migrations_dir: str | os.PathLike[str]) -> list[str]:
    """The names of a Prisma migrations folder's migrations (sub-folders with a ``migration.sql``), in order."""
    with os.scandir(migrations_dir) as entries:
        return sorted(e.name for e in entries
                      if e.is_dir() and os.path.isfile(os.path.join(e.path, "migration.sql")))


class SquawkRun:
    """squawk (``--reporter json``, one process) under way on ``paths``; :meth:`result` waits for its
    findings. It writes to an unnamed temporary file, not a pipe: a large report never stalls it, and
    no thread of ours wakes up while it writes. ``exclude``: the rules squawk may skip (those in
    :data:`SKIPPABLE` are passed to it; the caller still filters)."""

    def __init__(self, paths: Sequence[str | os.PathLike[str]], *, exclude: Iterable[str] = (),
                 timeout: float = SQUAWK_TIMEOUT) -> None:
        self.paths = [os.fspath(p) for p in paths]
        self.skipped = tuple(sorted(SKIPPABLE.intersection(exclude)))
        self.timeout = timeout
        self._started = 0.0
        self._proc: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None
        self._err: IO[bytes] | None = None
        if self.paths:
            self._start(self.skipped)

    def _start(self, skipped: tuple[str, ...]) -> None:
        cmd = [squawk_binary(), "--reporter", "json", *(["--exclude", ",".join(skipped)] if skipped else []),
               *self.paths]
        self._out, self._err = _scratch_file(), _scratch_file()
        self._started = time.monotonic()
        try:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._out, stderr=self._err)
        except OSError as exc:
            self._close()
            raise ActionError(f"squawk could not run ({exc.strerror or exc}): reinstall it with "
                              "`pip install squawk-cli`") from None

    def _close(self) -> None:
        for f in (self._out, self._err):
            if f is not None:
                f.close()

    def running(self) -> bool:
        """True while squawk is still at work."""
        return self._proc is not None and self._proc.poll() is None

    def cancel(self) -> None:
        """Stop it (its findings are not wanted)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._close()

    def _wait(self) -> tuple[bytes, bytes]:
        assert self._proc is not None and self._out is not None and self._err is not None
        try:
            self._proc.wait(timeout=max(0.0, self.timeout - (time.monotonic() - self._started)))
        except subprocess.TimeoutExpired:
            self.cancel()
            raise ActionError(f"squawk did not finish linting {len(self.paths)} file(s) within {self.timeout:g}s: "
                              "lint fewer migrations at once") from None
        try:
            self._out.seek(0)
            self._err.seek(0)
            return self._out.read(), self._err.read()
        finally:
            self._close()

    def result(self) -> list[dict[str, Any]]:
        """squawk's findings (a list of dicts with ``file``, ``line``, ``rule_name``, ``message``, …)."""
        if self._proc is None:
            return []
        if self._out is None or self._out.closed:
            raise ActionError("squawk's findings were already read or the run was cancelled")
        out, err_bytes = self._wait()
        out = out.strip()
        # squawk exits 1 when it finds something; anything without JSON is a real failure
        try:
            if not out and self._proc.returncode:
                raise ValueError("no output")
            data = json.loads(out or b"[]")
        except ValueError:  # json.JSONDecodeError too
            err = err_bytes.decode(errors="replace")
            if self.skipped and "--exclude" in err:  # an older squawk without one of these rules: skip nothing
                self.skipped = ()
                self._start(())
                return self.result()
            detail = (err or out.decode(errors="replace")).strip().splitlines()
            raise ActionError(f"squawk failed (exit {self._proc.returncode}): "
                              f"{detail[-1] if detail else 'no output'}; check that `squawk --version` works") from None
        if not isinstance(data, list):
            raise ActionError("squawk's JSON output was not a list of findings: upgrade squawk-cli (>= 2.0)")
        return data


def run_squawk(paths: Sequence[str | os.PathLike[str]], *, timeout: float = SQUAWK_TIMEOUT,
               exclude: Iterable[str] = ()) -> list[dict[str, Any]]:
    """squawk's JSON findings for ``paths`` (one process for all of them), waiting for them."""
    return SquawkRun(paths, exclude=exclude, timeout=timeout).result()


def migration_paths(migrations_dir: str | os.PathLike[str], names: list[str]) -> list[str]:
    """``<dir>/<name>/migration.sql`` for each name: the paths squawk is given (and reports findings for)."""
    root = os.fspath(migrations_dir)
    return [os.path.join(root, name, "migration.sql") for name in names]


def start_squawk(migrations_dir: str | os.PathLike[str], names: list[str] | None = None,
                 exclude: Iterable[str] = DEFAULT_EXCLUDE, *, timeout: float = SQUAWK_TIMEOUT) -> SquawkRun:
    """squawk started on a folder's migrations, to hand to ``actions.lint.lint_folder`` (``squawk=``) once
    the caller knows the rest: it runs while the caller loads the linter and reads its configuration."""
    names = migration_files(migrations_dir) if names is None else names
    return SquawkRun(migration_paths(migrations_dir, names), exclude=exclude, timeout=timeout)
