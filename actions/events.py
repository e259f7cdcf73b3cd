"""Progress events of a deploy or an undo, delivered to an ``on_event`` callback.

    >>> DeployEvent("finished", "01_init", attempt=1, duration=0.25).describe()
    '01_init applied in 0.25s'

The callback may be sync or async; whatever it raises is logged and ignored, so a broken
Slack update can never break a migration.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from actions.blockers import Blocker
from actions.callbacks import call_safely

log = logging.getLogger(__name__)

# "waiting": a session holds a lock the migration's statement conflicts with; the migration waits
# without queueing (no attempt is made while it is there). "retrying": an attempt hit lock_timeout.
EventKind = Literal["started", "waiting", "retrying", "finished", "failed", "waiting_for_lock"]


@dataclass
class DeployEvent:
    kind: EventKind
    migration: str | None
    attempt: int = 1
    duration: float | None = None
    delay: float | None = None  # retrying: seconds until the next attempt
    blockers: list[Blocker] = field(default_factory=list)
    logs: str | None = None
    statement: str | None = None
    waited: float | None = None  # finished/failed: seconds spent waiting for lock holders, queueing nothing

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "migration": self.migration, "attempt": self.attempt,
                "duration": self.duration, "delay": self.delay,
                "blockers": [b.to_dict() for b in self.blockers], "logs": self.logs, "statement": self.statement,
                "waited": self.waited}

    def describe(self) -> str:
        """One human line (the CLI prints these as they happen)."""
        name = self.migration or "(no migration)"
        who = "; ".join(b.describe() for b in self.blockers)
        if self.kind == "waiting_for_lock":
            return f"waiting for the migration lock held by {who or 'another session'}"
        if self.kind == "started":
            return f"{name}: started" + (f" (attempt {self.attempt})" if self.attempt > 1 else "")
        if self.kind == "waiting":
            took = f"; waited {self.duration:.1f}s so far" if self.duration else ""
            return (f"{name}: waits, queueing nothing, for {who or 'another session'} to release a conflicting lock "
                    f"({self.logs}){took}")
        if self.kind == "retrying":
            delay = f" in {self.delay:.2f}s" if self.delay is not None else ""
            blocked = f", blocked by {who}" if who else ""
            return f"{name}: lock timeout{blocked}; retrying{delay} (attempt {self.attempt})"
        if self.kind == "finished":
            took = f" in {self.duration:.2f}s" if self.duration is not None else ""
            tries = f" after {self.attempt} attempts" if self.attempt > 1 else ""
            waited = (f" (waited {self.waited:.1f}s for {', '.join(f'pid {b.pid}' for b in self.blockers)} to release "
                      "a conflicting lock)" if self.waited else "")
            return f"{name} applied{took}{tries}{waited}"
        logs = f"\n{self.logs}" if self.logs else ""
        return f"{name}: FAILED{logs}"


EventCallback = Callable[[DeployEvent], Any]


async def emit_safely(on_event: EventCallback | None, event: DeployEvent) -> None:
    """Call ``on_event`` (sync or async); log and swallow anything it raises."""
    await call_safely(on_event, event, f"on_event ({event.kind})")
