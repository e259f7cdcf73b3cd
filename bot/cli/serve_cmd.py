"""``migrabot serve``: the bot itself, in Socket Mode (default) or over HTTP."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import signal
import sys
from typing import Any

from bot.cli import EXIT_OK, CliError, add_config_option, config_from_args
from bot.config import Config

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the Slack bot (Socket Mode by default)")
    add_config_option(p)
    p.add_argument("--http", action="store_true",
                   help="serve Slack's Events/Interactivity/Commands endpoint over HTTP instead of Socket Mode")
    p.add_argument("--host", default="0.0.0.0", help="HTTP listen address (default 0.0.0.0)")
    p.add_argument("--port", type=int, default=3000, help="HTTP port (default 3000)")
    p.add_argument("--grace", type=float, default=300.0, metavar="SECONDS",
                   help="on SIGTERM, how long running runs get to reach a safe stop (default 300)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # imported here, not at the top: `migrabot --version` and the other commands start fast
    from bot.app import MissingSecret, slack_env

    config = config_from_args(args)
    try:
        token = slack_env("SLACK_BOT_TOKEN", "the bot needs its xoxb- token to talk to Slack")
        if args.http:
            secret = slack_env("SLACK_SIGNING_SECRET", "HTTP mode verifies every request with it")
            app_token = None
        else:
            app_token = slack_env("SLACK_APP_TOKEN", "Socket Mode needs an app-level xapp- token "
                                  "with connections:write (or run with --http)")
            secret = None
    except MissingSecret as exc:
        raise CliError(str(exc)) from None
    try:
        asyncio.run(_serve(config, token, secret, app_token, args))
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
            raise CliError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}; choose another --port "
                           "or --host") from None
        raise CliError(f"cannot run the bot: {exc.strerror or exc} ({exc.filename or 'no file'})") from None
    return EXIT_OK  # stopped by SIGINT/SIGTERM


async def _serve(config: Config, token: str, secret: str | None, app_token: str | None,
                 args: argparse.Namespace) -> None:
    # imported here, not at the top: `migrabot --version` and the other commands start fast
    from aiohttp import web

    # imported here, not at the top: `migrabot --version` and the other commands start fast
    from bot.app import build_app, http_application, start_background
    from state.store import open_store

    # a StateVersionError (newer store, unreachable server) is reported by bot.cli.main as one sentence
    store = open_store(config.state_target, replica=os.environ.get("MIGRABOT_REPLICA") or None)
    print(f"migrabot: replica {store.replica}, state: {store.where}", flush=True)
    app, wf = build_app(config, store, token=token, signing_secret=secret,
                        api_url=os.environ.get("MIGRABOT_SLACK_API_URL"))
    replica = await start_background(wf)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if args.http:
        runner = web.AppRunner(http_application(app, wf))
        await runner.setup()
        await web.TCPSite(runner, args.host, args.port).start()
        print(f"migrabot: serving Slack requests on http://{args.host}:{args.port}/slack/events", flush=True)
        await _drain(wf, stop, args.grace)
        await runner.cleanup()
    else:
        # imported here, not at the top: `migrabot --version` and the other commands start fast
        from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

        handler = AsyncSocketModeHandler(app, app_token)
        await handler.connect_async()
        print("migrabot: connected to Slack in Socket Mode", flush=True)
        await _drain(wf, stop, args.grace)
        await handler.close_async()
    await wf.run(_shutdown(replica))  # the scheduler lives on the worker loop
    await wf.close()
    store.close()


async def _shutdown(replica: Any) -> None:
    await asyncio.to_thread(replica.shutdown)  # joins the heartbeat thread, then gives the lease up


async def _drain(wf: Any, stop: asyncio.Event, grace: float) -> None:
    """Wait for the stop signal, then let running runs reach a safe stop (a second signal: now)."""
    await stop.wait()
    stop.clear()
    if not wf.executing:
        return
    print(f"migrabot: stopping; running runs stop at their next safe point (up to {grace:g}s; "
          "signal again to stop now)", file=sys.stderr, flush=True)
    drain = asyncio.ensure_future(wf.drain(grace))
    again = asyncio.ensure_future(stop.wait())
    await asyncio.wait([drain, again], return_when=asyncio.FIRST_COMPLETED)
    again.cancel()
    left = drain.result() if drain.done() else list(wf.executing)
    if left:
        log.warning("stopping with runs still executing: %s (examined after the restart)", left)
