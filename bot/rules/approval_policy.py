"""The requirement handler: who may request, tick, vote and run, and whether a run is approved.

    >>> from bot.config import Environment
    >>> from pathlib import Path
    >>> env = Environment(name="prod", database_url="postgresql://u@h/p", migrations_dir=Path("m"),
    ...                   backup_dir=Path("b"), approvers=("U2", "U3"), required_approvals=2,
    ...                   allow_self_approval=False)
    >>> may_vote(env, requested_by="U1", user="U1", members={"U1", "U2", "U3"})
    'you requested this run, and prod does not allow self-approval'
    >>> vote = {"user": "U2", "decision": "approve", "at": "2999-01-01T00:00:00+00:00", "via": "button"}
    >>> state = evaluate(env, requested_by="U1", votes=[vote], members={"U2", "U3"})
    >>> state.count, state.needed, state.met
    (1, 2, False)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.config import Environment


@dataclass
class ApprovalState:
    needed: int
    approvals: list[dict[str, Any]] = field(default_factory=list)
    rejections: list[dict[str, Any]] = field(default_factory=list)
    expired: list[dict[str, Any]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.approvals)

    @property
    def met(self) -> bool:
        return self.count >= self.needed and not self.rejections

    @property
    def rejected(self) -> bool:
        return bool(self.rejections)


def approver_ids(env: Environment) -> tuple[list[str], list[str]]:
    """Split ``approvers`` into user ids and user-group ids (``S…``)."""
    users = [a for a in env.approvers if not a.startswith("S")]
    groups = [a for a in env.approvers if a.startswith("S")]
    return users, groups


def may_vote(env: Environment, *, requested_by: str, user: str, members: set[str]) -> str | None:
    """None when ``user`` may approve or reject, else the reason in one sentence."""
    if env.approvers and user not in members:
        return f"you are not an approver for {env.name} (ask one of the configured approvers)"
    if user == requested_by and not env.allow_self_approval:
        return f"you requested this run, and {env.name} does not allow self-approval"
    return None


def may_request(env: Environment, user: str, members: set[str] | None = None) -> str | None:
    if env.requesters and user not in env.requesters and user not in (members or set()):
        return f"you are not allowed to start runs on {env.name} (see `requesters` in the configuration)"
    return None


def may_operate(env: Environment, user: str, *, requested_by: str, members: set[str] | None = None) -> str | None:
    """Ticking the checklist, pressing Run or Abort: the requester, operators and approvers (``members``)."""
    if not env.operators or user == requested_by or user in env.operators or user in (members or set()):
        return None
    return f"you are not an operator of {env.name} (see `operators` in the configuration)"


def evaluate(env: Environment, *, requested_by: str, votes: Iterable[dict[str, Any]],
             members: set[str], now: datetime | None = None, needed: int | None = None) -> ApprovalState:
    """Count the live votes that the policy accepts; expired approvals do not count.

    ``needed`` overrides the environment's ``required_approvals`` (a resolve needs one at most).
    """
    now = now or datetime.now(UTC)
    state = ApprovalState(needed=env.required_approvals if needed is None else needed)
    expiry = timedelta(seconds=env.approval_expiry)
    for vote in votes:
        if may_vote(env, requested_by=requested_by, user=vote["user"], members=members):
            continue
        if vote["decision"] == "reject":
            state.rejections.append(vote)
        elif now - datetime.fromisoformat(vote["at"]) > expiry:
            state.expired.append(vote)
        else:
            state.approvals.append(vote)
    return state
