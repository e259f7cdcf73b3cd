"""Times for people: a scheduled start in words, and as a Slack date token every reader sees in their zone."""

from __future__ import annotations

from datetime import UTC, datetime

from actions.humanize import duration


def when_text(iso: str | None, now: datetime | None = None) -> str:
    """``2026-01-01T22:00:00+01:00`` → ``2026-01-01 22:00 (UTC+01:00), in 2h 3m``.

    >>> when_text("2026-01-01T22:00:00+00:00", datetime(2026, 1, 1, 21, 0, tzinfo=UTC))
    '2026-01-01 22:00 (UTC), in 1h 0m'
    """
    if not iso:
        return "?"
    at = datetime.fromisoformat(iso)
    offset = at.strftime("%z")
    zone = "UTC" if offset in ("+0000", "") else f"UTC{offset[:3]}:{offset[3:]}"
    seconds = (at - (now or datetime.now(UTC))).total_seconds()
    rel = f"in {duration(seconds)}" if seconds >= 1 else "now"
    fmt = "%Y-%m-%d %H:%M:%S" if at.second else "%Y-%m-%d %H:%M"
    return f"{at.strftime(fmt)} ({zone}), {rel}"


def slack_date(iso: str) -> str:
    """An absolute time every reader sees in their own time zone (fallback: the configured one).

    >>> slack_date("2026-01-01T22:00:00+00:00")
    '<!date^1767304800^{date_short_pretty} at {time}|2026-01-01 22:00 (UTC)>'
    """
    fallback = when_text(iso).rpartition(",")[0]
    return f"<!date^{int(datetime.fromisoformat(iso).timestamp())}^{{date_short_pretty}} at {{time}}|{fallback}>"
