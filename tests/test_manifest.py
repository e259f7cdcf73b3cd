"""app_manifest.yml is what a user pastes into Slack: it must be valid and declare everything the bot uses."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
import yaml

from tests.conftest import ROOT, shared_path

MANIFEST = ROOT / "app_manifest.yml"
PLANNED_COMMANDS = {"/migrate", "/rollback", "/db"}


@pytest.fixture(scope="module")
def manifest() -> dict:
    return yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))


def test_manifest_is_valid_against_slacks_schema(manifest):
    schema = json.loads(shared_path("slack-manifest-schema", "manifest.schema.1.0.0.json").read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(manifest), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_manifest_enables_socket_mode_interactivity_and_reaction_events(manifest):
    settings = manifest["settings"]
    assert settings["socket_mode_enabled"] is True
    assert settings["interactivity"]["is_enabled"] is True
    assert {"reaction_added", "reaction_removed"} <= set(settings["event_subscriptions"]["bot_events"])
    assert manifest["features"]["bot_user"]["display_name"]


def test_manifest_has_the_scopes_the_bot_calls_need_and_no_more(manifest):
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    # commands; chat.postMessage/update/postEphemeral; posting in public channels; approvals by
    # reaction; approver user groups (usergroups.users.list); user names; conversations.info on
    # channels, private channels, DMs and group DMs; conversations.join of a public channel it posts in
    needed = {"commands", "chat:write", "chat:write.public", "reactions:read", "usergroups:read", "users:read",
              "channels:read", "groups:read", "im:read", "mpim:read", "channels:join"}
    assert needed <= scopes, f"missing scopes: {sorted(needed - scopes)}"
    # a scope the bot does not use makes the install screen ask for more than it needs
    assert scopes <= needed, f"scopes nothing uses: {sorted(scopes - needed)} (add them here when code needs them)"


def test_every_slash_command_has_a_description_and_usage_hint(manifest):
    commands = {c["command"]: c for c in manifest["features"]["slash_commands"]}
    assert set(commands) >= PLANNED_COMMANDS
    for name, command in commands.items():
        assert command["description"].strip(), name
        assert command["usage_hint"].strip(), name
    for word in ("plan", "status", "history", "abort", "resolve", "schedule", "ENV"):
        assert word in commands["/migrate"]["usage_hint"]
    assert "last" in commands["/rollback"]["usage_hint"]
    for word in ("report", "health", "blockers"):
        assert word in commands["/db"]["usage_hint"]


class _RecordingApp:
    """Stands in for Bolt's AsyncApp while the handlers register: records the slash commands."""

    def __init__(self) -> None:
        self.commands: set[str] = set()

    def command(self, name: str) -> Any:
        self.commands.add(name)
        return lambda listener: listener

    def __getattr__(self, _name: str) -> Any:  # action, view, view_closed, event
        return lambda *args, **kwargs: (lambda listener: listener)


def _commands_registered_in_code() -> set[str]:
    """Slash commands the handlers really register on the app."""
    from handlers import register_all

    app = _RecordingApp()
    register_all(app, wf=None)
    return app.commands


def test_every_command_the_bot_handles_is_declared(manifest):
    declared = {c["command"] for c in manifest["features"]["slash_commands"]}
    registered = _commands_registered_in_code()
    assert registered >= {"/migrate", "/rollback", "/db"}
    undeclared = registered - declared
    assert not undeclared, f"handled in code but not declared in app_manifest.yml: {sorted(undeclared)}"
