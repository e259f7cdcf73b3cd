"""Numbers for people: sizes, durations and ages, the same in the CLI, in Slack and in messages.

    >>> size(1536), size(5 * 1024 ** 3)
    ('1.5 kB', '5.0 GB')
    >>> duration(0.25), duration(75), duration(3725)
    ('250 ms', '1m 15s', '1h 2m')
    >>> age(45), age(720), age(3 * 3600), age(3 * 86400)
    ('45s', '12 min', '3.0 h', '3.0 days')
"""

from __future__ import annotations


def size(num_bytes: float | None) -> str:
    if num_bytes is None:
        return "?"
    value = float(num_bytes)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"


def duration(seconds: float | None) -> str:
    """How long something took, precise enough to compare steps."""
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m {int(seconds % 60)}s"
    return f"{int(seconds // 3600)}h {int(seconds % 3600 // 60)}m"


def age(seconds: float | None) -> str:
    """How old something is (a backup, a transaction), rounded the way people say it."""
    if seconds is None:
        return ""
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
