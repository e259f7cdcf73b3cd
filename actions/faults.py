"""Named fault-injection points, for the fault-injection tests only: a no-op unless asked for.

Some steps of a restore or a deploy last milliseconds (the swap's renames, the undo of a failed
swap, the pre-flight): too short for a test to hit them from outside with ``kill -9`` or
``pg_terminate_backend``. Each such step calls ``fault_point("name")`` once; the tests
(``tests/test_fault_injection.py``) start the real CLI with ``MIGRABOT_FAULT_POINT`` set:

    MIGRABOT_FAULT_POINT=swap                 # SIGKILL this process when it reaches the swap
    MIGRABOT_FAULT_POINT=swap:pause,undo      # freeze at the swap (the test terminates our backends,
                                              # then lets us go on), then SIGKILL at the undo

``name:pause`` writes ``$MIGRABOT_FAULT_DIR/<name>`` (holding this process's pid) and sleeps,
event loop included, until the test removes that file (60 s at most): the fault the test then
causes is a real one (its connections' backends terminated by the server). Without the variable,
``fault_point`` costs one dictionary lookup. Points: ``deploy.preflight``, ``deploy.backup``,
``deploy.status``, ``deploy.verify`` (actions/procedure.py); ``restore.snapshot``,
``restore.pg_restore``, ``restore.verify``, ``restore.swap``, ``restore.undo`` (actions/restore.py).

    >>> fault_point("restore.swap")   # not asked for: nothing happens
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

VARIABLE = "MIGRABOT_FAULT_POINT"
PAUSE_DIR = "MIGRABOT_FAULT_DIR"
PAUSE_LIMIT = 60.0


def fault_point(name: str) -> None:
    """Do what ``MIGRABOT_FAULT_POINT`` asks at ``name`` (SIGKILL, or pause), else nothing."""
    wanted = os.environ.get(VARIABLE)
    if not wanted:
        return
    for entry in wanted.split(","):
        point, _, action = entry.strip().partition(":")
        if point == name:
            _act(name, action or "kill")


def _act(name: str, action: str) -> None:
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "pause":
        marker = Path(os.environ.get(PAUSE_DIR, ".")) / name
        marker.write_text(str(os.getpid()))
        deadline = time.monotonic() + PAUSE_LIMIT
        while marker.exists() and time.monotonic() < deadline:
            time.sleep(0.02)  # blocking on purpose: nothing of this process moves while the test acts
