"""Remember request keys so that Slack's retries and double submits act once.

Bolt does not deduplicate (bolt-python #868): the same event or command can arrive twice.

    >>> from state.store import open_store
    >>> s = open_store(":memory:")
    >>> first_time(s, "trigger:123"), first_time(s, "trigger:123")
    (True, False)
"""

from __future__ import annotations

from state.store import Store, now_iso


def first_time(store: Store, key: str) -> bool:
    """True the first time ``key`` is seen, False on every later call (from any replica: the
    table's primary key decides, not process memory)."""
    if not key:
        return True
    return store.execute("INSERT INTO dedup (key, at) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                         [key, now_iso()]) == 1


def forget_older_than(store: Store, iso_cutoff: str) -> int:
    return store.execute("DELETE FROM dedup WHERE at < ?", [iso_cutoff])
