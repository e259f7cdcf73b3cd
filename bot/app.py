"""Wiring: the Bolt ``AsyncApp``, the workflow behind it, and the HTTP endpoint.

    app, wf = build_app(config, store, token="xoxb-…", signing_secret="…")
    web = http_application(app, wf)   # aiohttp app: /slack/events and /healthz
"""

from __future__ import annotations

import logging
import os
from typing import Any

from aiohttp import web
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot import scheduler
from bot.config import Config
from bot.redact import register_secret
from bot.runs import recovery, scheduled
from bot.runs.registry import EXECUTORS
from bot.slack_out import SlackOut
from bot.workflow import Workflow
from handlers import register_all
from state import runs
from state.store import Store

log = logging.getLogger(__name__)


class MissingSecret(Exception):
    """A Slack token or secret the chosen mode needs is not set."""


def slack_env(name: str, why: str) -> str:
    """A Slack secret from the environment (they never live in the configuration file)."""
    value = os.environ.get(name, "").strip()
    if not value:
        raise MissingSecret(f"{name} is not set; {why}. Export it (see README: Creating the Slack app)")
    register_secret(value)
    return value


def build_app(config: Config, store: Store, *, token: str, signing_secret: str | None,
              api_url: str | None = None, update_interval: float = 0.3) -> tuple[AsyncApp, Workflow]:
    register_secret(token)
    register_secret(signing_secret)
    app = AsyncApp(client=_client(token, api_url), signing_secret=signing_secret,
                   request_verification_enabled=signing_secret is not None,
                   process_before_response=False, raise_error_for_unhandled_request=False)
    # the workflow's own client: it lives on the worker loop, Bolt's on the serving loop
    wf = Workflow(config, store, SlackOut(_client(token, api_url)), update_interval=update_interval,
                  executors=EXECUTORS)
    register_all(app, wf)
    return app, wf


def _client(token: str, api_url: str | None) -> AsyncWebClient:
    return AsyncWebClient(token=token, base_url=api_url) if api_url else AsyncWebClient(token=token)


def http_application(app: AsyncApp, wf: Workflow, path: str = "/slack/events") -> web.Application:
    """Slack's one endpoint (commands, interactivity, events) plus ``/healthz``."""
    web_app = app.web_app(path=path)

    async def healthz(_request: web.Request) -> web.Response:
        try:
            wf.store.ping()
        except Exception as exc:
            return web.json_response({"ok": False, "error": f"state database: {exc}"}, status=503)
        return web.json_response({"ok": True, "environments": wf.config.environment_names(),
                                  "open_runs": runs.count_open(wf.store)})

    web_app.router.add_get("/healthz", healthz)
    return web_app


async def start_background(wf: Workflow) -> Any:
    """What runs beside the listeners: restart recovery, then the scheduler and the scheduled run starts."""
    await wf.run(recovery.recover(wf))
    started = await wf.run(scheduler.start(wf))  # its jobs then run on the worker loop too
    await wf.run(scheduled.restore_run_starts(wf))
    return started
