"""The CLI side of the one policy (bot/rules/policy.py): what `deploy`, `restore` and `resolve` must have.

    need = requirements(env, KINDS["migrate"])
    gate = open_gate(args, config, env, need, staging_problem=problem)   # CliError listing every refusal
    ...                                                                  # run the procedure
    gate.finish(succeeded=True, summary="3 applied")                     # audit; the Slack run, if any

Where an environment requires approvals, the CLI runs only a Slack run that was approved
(``--run ID``), or with ``--break-glass "REASON"``, which is written to the audit log with the
reason and the OS user, and announced in the environment's channel when Slack is configured
(``SLACK_BOT_TOKEN``). Where a typed confirmation is set, the environment's name (or RESTORE) is
asked on a terminal, or given with ``--confirm`` in scripts.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from bot.cli import CliError
from bot.config import Config, Environment
from bot.redact import redact
from bot.rules.approval_policy import approver_ids
from bot.rules.policy import Requirements, cli_refusals
from bot.rules.run_view import load_run_view
from state import audit, runs
from state.runs import Run, RunStatus
from state.store import Store, open_store

log = logging.getLogger(__name__)


def os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (a container with a random uid): still say something true
        return f"uid {os.getuid()}"


@dataclass
class Gate:
    """An open permission to run: the Slack run carried out (if any) and the audit trail."""

    config: Config
    env: Environment
    need: Requirements
    what: str
    break_glass: str | None = None
    run: Run | None = None
    store: Store | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def actor(self) -> str:
        return f"cli:{os_user()}"

    def _audit(self, action: str, detail: str) -> None:
        store = self.store or open_store(self.config.state_target)
        try:
            audit.record(store, self.actor, action, env=self.env.name, run_id=self.run["id"] if self.run else None,
                         detail=detail)
        finally:
            if store is not self.store:
                store.close()

    def finish(self, *, succeeded: bool, summary: str) -> None:
        """Record how it ended: the Slack run's status (it frees the environment) and the audit line."""
        if self.run is not None and self.store is not None:
            status = RunStatus.SUCCEEDED if succeeded else RunStatus.FAILED
            fields: dict[str, Any] = {"result": {"summary": summary}} if succeeded else {"error": summary}
            runs.transition(self.store, self.run["id"], status, only_from=[RunStatus.RUNNING], **fields)
        self._audit("cli_" + ("succeeded" if succeeded else "failed"), f"{self.what}: {summary}")
        if self.store is not None:
            self.store.close()


def open_gate(args: argparse.Namespace, config: Config, env: Environment, need: Requirements, *, what: str,
              staging_problem: str | None = None, plan_names: list[str] | None = None,
              expect_plan: dict[str, Any] | None = None) -> Gate:
    """Check the policy for this command; CliError naming every refusal, or an open :class:`Gate`.

    With ``--run ID`` the Slack run must be of this kind and environment, approved, and about the
    same thing: ``plan_names`` (the migrations pending now) or ``expect_plan`` (keys of its plan).
    """
    break_glass = (getattr(args, "break_glass", None) or "").strip() or None
    if getattr(args, "break_glass", None) is not None and break_glass is None:
        raise CliError("--break-glass needs a reason: --break-glass \"why this cannot wait for approvals\"")
    gate = Gate(config=config, env=env, need=need, what=what, break_glass=break_glass)
    run_id = getattr(args, "run", None)
    approved = False
    if run_id is not None:
        gate.store = open_store(config.state_target)
        gate.run, approved = _approved_run(gate.store, env, need, run_id, plan_names, expect_plan or {})
    refusals = cli_refusals(need, approved_run=approved, break_glass=break_glass,
                            no_backup=bool(getattr(args, "no_backup", False)), staging_problem=staging_problem)
    if refusals:
        gate_close(gate)
        raise CliError("refused:\n  - " + "\n  - ".join(refusals))
    _confirm(args, env, need, what)
    if gate.run is not None and gate.store is not None:
        if not runs.transition(gate.store, gate.run["id"], RunStatus.RUNNING, current_step="cli"):
            gate_close(gate)
            raise CliError(f"run #{gate.run['id']} is no longer waiting to start (someone started or ended it)")
    if break_glass:
        gate._audit("break_glass", f"{what}; reason: {break_glass}; by OS user {os_user()}")
        gate.notes.append(announce(config, env, f":rotating_light: *Break-glass* on *{env.name}* from the CLI by "
                                                f"OS user `{os_user()}`: {what}. Reason: {break_glass}"))
    else:
        gate._audit("cli_start", what + (f" (Slack run #{gate.run['id']})" if gate.run else ""))
    return gate


def gate_close(gate: Gate) -> None:
    if gate.store is not None:
        gate.store.close()
        gate.store = None


def _approved_run(store: Store, env: Environment, need: Requirements, run_id: int,
                  plan_names: list[str] | None, expect_plan: dict[str, Any]) -> tuple[Run, bool]:
    run = runs.get(store, run_id)
    if run is None or run["env"] != env.name or run["kind"] != need.kind:
        raise CliError(f"run #{run_id} is not a {need.kind} run on {env.name} (see `/migrate history {env.name}`)")
    if run["status"] != RunStatus.AWAITING:
        raise CliError(f"run #{run_id} is {run['status']}, not waiting to start")
    users, groups = approver_ids(env)
    members = set(users) | _group_members(groups)
    view = load_run_view(store, env, run_id, members)
    if view is None:
        raise CliError(f"run #{run_id} does not exist")
    missing = [m for m in view.missing() if not m.startswith("approvals")]
    if missing:
        raise CliError(f"run #{run_id} is not ready: " + "; ".join(missing))
    differ = {k: run["plan"].get(k) for k, v in expect_plan.items() if run["plan"].get(k) != v}
    if differ:
        raise CliError(f"run #{run_id} is about something else ({differ}): request a run for this")
    planned = [m["name"] for m in run["plan"].get("migrations", [])]
    if plan_names is not None and planned and planned != plan_names:
        raise CliError(f"run #{run_id} was approved for {', '.join(planned)}, but pending now is "
                       f"{', '.join(plan_names) or 'nothing'}: request a new run")
    if groups and not os.environ.get("SLACK_BOT_TOKEN") and not view.approval.met:
        raise CliError(f"{env.name}'s approvers include user groups, which the CLI can read only with "
                       "SLACK_BOT_TOKEN set; set it, or approve from a listed user")
    return run, view.approval.met


def _group_members(groups: list[str]) -> set[str]:
    """The members of Slack user groups, when the CLI has Slack's token (else none)."""
    token = os.environ.get("SLACK_BOT_TOKEN")
    if not groups or not token:
        return set()
    # imported here: slack_sdk's client is needed only for user groups and announcements (start-up speed)
    from slack_sdk import WebClient

    client = WebClient(token=token, base_url=os.environ.get("MIGRABOT_SLACK_API_URL") or WebClient.BASE_URL)
    members: set[str] = set()
    for group in groups:
        try:
            members |= set(client.usergroups_users_list(usergroup=group).get("users") or [])
        except Exception as exc:  # the approval then does not count: say why in the log
            log.warning("cannot read user group %s: %s", group, redact(str(exc)))
    return members


def _confirm(args: argparse.Namespace, env: Environment, need: Requirements, what: str) -> None:
    word = need.typed_word
    if word is None:
        return
    typed = getattr(args, "confirm", None)
    print(redact(f"You are about to {what} on {env.name}."), file=sys.stderr)
    if typed is None:
        if not sys.stdin.isatty():
            raise CliError(f"this needs a typed confirmation: type {word} on a terminal, or pass --confirm {word}")
        typed = input(f"Type {word} to confirm: ")
    if typed != word:
        raise CliError(f"not confirmed: type {word} exactly (capital letters, no spaces); nothing was done")


def announce(config: Config, env: Environment, text: str) -> str:
    """Post ``text`` in the environment's channel when Slack is configured; what happened, in words."""
    token = os.environ.get("SLACK_BOT_TOKEN")
    if not token or not env.channel:
        return "not announced in Slack (no SLACK_BOT_TOKEN or no channel for this environment)"
    # imported here: slack_sdk's client is needed only for announcements (start-up speed)
    from slack_sdk import WebClient

    client = WebClient(token=token, base_url=os.environ.get("MIGRABOT_SLACK_API_URL") or WebClient.BASE_URL)
    try:
        client.chat_postMessage(channel=env.channel, text=text)
    except Exception as exc:
        log.warning("could not announce in %s: %s", env.channel, redact(str(exc)))
        return f"could not announce in Slack: {redact(str(exc))}"
    return f"announced in {env.channel}"
