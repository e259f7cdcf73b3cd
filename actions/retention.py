"""Pruning old backups without ever removing the one a rollback would need.

    >>> removed = prune(env.backup_dir, "prod", Retention(keep_last=10, keep_days=30))   # doctest: +SKIP

Rules, in order:

* the newest verified backup is always kept, whatever the settings say;
* failed or unverified backups older than the newest verified one go first (they cannot
  be restored, and a newer good one exists); a "running" one newer than it is left alone
  (a backup may be in progress right now);
* verified backups are kept when they are among the ``keep_last`` newest verified ones
  or younger than ``keep_days`` (either rule keeps a backup); with neither set, no
  verified backup is removed.
"""

from __future__ import annotations

import logging
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

from actions.backup import BackupInfo, list_backups
from actions.errors import ActionError
from bot.config import Retention

log = logging.getLogger(__name__)


def plan(backups: list[BackupInfo], retention: Retention, now: datetime) -> list[BackupInfo]:
    """Which of ``backups`` (newest first) the rules remove."""
    verified = [b for b in backups if b.verified]
    newest_verified = verified[0] if verified else None
    remove: list[BackupInfo] = []
    for b in backups:
        if b is newest_verified:
            continue
        if not b.verified:
            if newest_verified is not None and b.created_at <= newest_verified.created_at:
                remove.append(b)
            elif b.status not in ("running",) and _expired(b, None, retention, now):
                remove.append(b)
            continue
        if _expired(b, verified.index(b), retention, now):
            remove.append(b)
    return remove


def _expired(b: BackupInfo, rank: int | None, retention: Retention, now: datetime) -> bool:
    if retention.keep_last is None and retention.keep_days is None:
        return False
    if retention.keep_last is not None and rank is not None and rank < retention.keep_last:
        return False
    return not (retention.keep_days is not None and b.age(now) < timedelta(days=retention.keep_days))


def prune(backup_dir: Path, env_name: str, retention: Retention, *, now: datetime | None = None,
          dry_run: bool = False) -> list[str]:
    """Remove the backups the retention rules let go; return their ids (only listed with ``dry_run``)."""
    now = now or datetime.now(UTC)
    doomed = plan(list_backups(backup_dir, env_name), retention, now)
    removed: list[str] = []
    env_dir = (Path(backup_dir) / env_name).resolve()
    for b in doomed:
        if b.path.resolve().parent != env_dir:  # never follow a symlink out of the backup folder
            continue
        if not dry_run:
            try:
                shutil.rmtree(b.path)
            except OSError as exc:
                raise ActionError(f"cannot remove old backup {b.path} ({exc.strerror or exc}): check its "
                                  "permissions; the backups removed so far: " + (", ".join(removed) or "none")
                                  ) from None
            log.info("pruned backup %s/%s", env_name, b.id)
        removed.append(b.id)
    return removed
