"""How far a migration file run statement by statement got, as its row's logs record it.

Its own module, light to import: ``migrabot status`` reads it back from ``_prisma_migrations``
without loading the runner that writes it (and the lock table the runner needs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["PROGRESS_PREFIX", "StatementProgress", "numbers", "partly_applied"]


def numbers(items: list[int]) -> str:
    """Statement numbers as ranges.

    >>> numbers([1, 2, 3, 5]), numbers([4])
    ('1-3, 5', '4')
    """
    runs: list[list[int]] = []
    for n in sorted(items):
        if runs and runs[-1][-1] == n - 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


def _statements(items: list[int]) -> str:
    return f"statement{'s' if len(items) > 1 else ''} {numbers(items)}"


# Written at the start of the progress line in the row's logs: `status` reads it back from there.
PROGRESS_PREFIX = "Progress: "
_NOTHING_COMMITTED = "no statement of this file is committed"


@dataclass
class StatementProgress:
    """How far a file run statement by statement got; statements are numbered from 1.

    >>> p = StatementProgress(total=6, committed=[1], rolled_back=[2, 3], failed=4)
    >>> p.not_run, p.describe()
    ([5, 6], "statement 1 of 6 is committed; statements 2-3 were rolled back with the file's own \
transaction; statement 4 failed; statements 5-6 did not run")
    """

    total: int
    committed: list[int] = field(default_factory=list)  # ran, and their effects stay
    rolled_back: list[int] = field(default_factory=list)  # ran inside the file's own BEGIN, then undone
    failed: int | None = None  # the statement that failed or was interrupted
    interrupted: bool = False  # the connection was lost during ``failed``: whether it took effect is unknown
    note: str = ""  # about the interrupted statement, e.g. what an interrupted CONCURRENTLY leaves behind

    @property
    def not_run(self) -> list[int]:
        ran = {*self.committed, *self.rolled_back, *([self.failed] if self.failed else [])}
        return [n for n in range(1, self.total + 1) if n not in ran]

    def stop(self, failed: int | None, open_block: list[int], *, interrupted: bool = False) -> StatementProgress:
        """Record the end: ``open_block`` (statements since the file's own BEGIN) was rolled back."""
        self.rolled_back.extend(open_block)
        self.failed, self.interrupted = failed, interrupted
        return self

    def describe(self) -> str:
        if self.committed:
            verb = "are" if len(self.committed) > 1 else "is"
            parts = [f"{_statements(self.committed)} of {self.total} {verb} committed"]
        else:
            parts = [_NOTHING_COMMITTED]
        if self.rolled_back:
            parts.append(f"{_statements(self.rolled_back)} {'were' if len(self.rolled_back) > 1 else 'was'} "
                         "rolled back with the file's own transaction")
        if self.failed and self.interrupted:
            parts.append(f"statement {self.failed} was interrupted (whether it took effect is unknown{self.note})")
        elif self.failed:
            parts.append(f"statement {self.failed} failed")
        if self.not_run:
            parts.append(f"{_statements(self.not_run)} did not run")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, object]:
        return {"total": self.total, "committed": list(self.committed), "rolled_back": list(self.rolled_back),
                "failed": self.failed, "interrupted": self.interrupted, "not_run": self.not_run}


def partly_applied(logs: str | None) -> str | None:
    """From a row's logs: what is committed when a failed file left statements behind, else None.

    >>> partly_applied("ERROR: x\\nProgress: statements 1-2 of 4 are committed; statement 3 failed")
    'statements 1-2 of 4 are committed'
    >>> partly_applied("Progress: no statement of this file is committed; statement 1 failed") is None
    True
    """
    for line in (logs or "").splitlines():
        if line.startswith(PROGRESS_PREFIX):
            first = line[len(PROGRESS_PREFIX):].split(";")[0].strip()
            return None if first == _NOTHING_COMMITTED else first
    return None
