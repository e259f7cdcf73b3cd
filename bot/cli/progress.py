"""A procedure's steps printed as they happen (the CLI's :class:`actions.procedure.Recorder`).

    rec = PrintedSteps(quiet=args.json)
    await run_migrate(env, names, checksums, rec, ...)
    rec.steps   # [{"name": "backup", "status": "done", "detail": "…", "duration": 1.2}, …] for --json
"""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TextIO

from actions.errors import ActionError
from actions.humanize import duration
from actions.procedure import StepFailed
from bot.redact import redact

MARK = {"done": "ok  ", "failed": "FAIL", "skipped": "skip", "running": "... "}


class PrintedSteps:
    def __init__(self, *, quiet: bool = False, out: TextIO | None = None) -> None:
        self.quiet = quiet
        self.out = out or sys.stdout
        self.steps: list[dict[str, Any]] = []
        self._started: dict[str, float] = {}
        self._labels: dict[str, str] = {}

    def _print(self, line: str) -> None:
        if not self.quiet:
            print(redact(line), file=self.out, flush=True)

    def plan(self, steps: list[tuple[str, str]]) -> None:
        self._labels.update(dict(steps))

    def start(self, name: str, label: str, position: int) -> None:
        self._labels[name] = label
        self._started[name] = time.monotonic()

    def finish(self, name: str, status: str, detail: str = "") -> None:
        took = time.monotonic() - self._started.pop(name, time.monotonic())
        label = self._labels.get(name, name).replace("`", "")
        self.steps.append({"name": name, "status": status, "detail": detail, "duration": round(took, 3)})
        if status != "done" or not name.startswith("migration:"):  # deploy events already print migrations
            self._print(f"{MARK.get(status, status)} {label} ({duration(took)})" + (f": {detail}" if detail else ""))

    def note(self, name: str, detail: str) -> None:
        if name == "backup":
            self._print(f"     backup: {detail}")

    def step(self, name: str, label: str, position: int) -> AbstractAsyncContextManager[dict[str, str]]:
        return self._step(name, label, position)

    @asynccontextmanager
    async def _step(self, name: str, label: str, position: int) -> AsyncIterator[dict[str, str]]:
        note = {"detail": ""}
        self.start(name, label, position)
        try:
            yield note
        except ActionError as exc:
            self.finish(name, "failed", str(exc))
            raise StepFailed(str(exc)) from None
        except StepFailed as exc:
            self.finish(name, "failed", note["detail"] or str(exc))
            raise
        self.finish(name, "done", note["detail"])
