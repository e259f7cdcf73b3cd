"""What the last scheduled drift check found, so that ``drift_cron`` posts only when it changed.

    >>> import shutil, tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> remember(folder, "prod", "abc", "prod: DRIFTED (1 difference)")
    True
    >>> remember(folder, "prod", "abc", "prod: DRIFTED (1 difference)")   # nothing new: do not post
    False
    >>> last_fingerprint(folder, "prod")
    'abc'
    >>> shutil.rmtree(folder)

The file is ``<backup_dir>/<env>/drift/last.json``, next to the backups (the bot's state store
is not needed, so the CLI and the bot could share it).
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def memory_path(backup_dir: Path, env_name: str) -> Path:
    return Path(backup_dir) / env_name / "drift" / "last.json"


def fingerprint(report: Any) -> str:
    """The findings of a :class:`actions.drift.DriftReport`, without timings or scratch names.

    Two checks that found the same things have the same fingerprint, whatever order they ran in.
    """
    findings = sorted([f"file:{f.kind}:{f.migration}:{f.message}" for f in report.files]
                      + [f"diff:{d.message}" for d in report.differences]
                      + [f"unrecorded:{u.migration}" for u in report.unrecorded]
                      + ([f"prisma:{report.prisma.detail}"] if report.prisma.status == "drifted" else [])
                      + [f"status:{report.status}"] + ([f"problem:{report.problem}"] if report.problem else []))
    return hashlib.sha256("\n".join(findings).encode()).hexdigest()


def last_fingerprint(backup_dir: Path, env_name: str) -> str | None:
    """The fingerprint remembered by the last check, or None (never checked, or the file is unreadable)."""
    try:
        data = json.loads(memory_path(backup_dir, env_name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = data.get("fingerprint") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def remember(backup_dir: Path, env_name: str, print_: str, headline: str) -> bool:
    """Store this check's fingerprint; True when it differs from the last one (then the check is posted)."""
    changed = last_fingerprint(backup_dir, env_name) != print_
    path = memory_path(backup_dir, env_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    # written aside and renamed: a crash mid-write leaves the previous memory, never half a file
    tmp.write_text(json.dumps({"fingerprint": print_, "headline": headline,
                               "checked_at": datetime.now(UTC).isoformat()}), encoding="utf-8")
    os.replace(tmp, path)
    return changed
