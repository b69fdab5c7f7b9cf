"""The `tasksync` command: serve, publish, tail."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from typing import Any

import msgspec

from .settings import ENV_PREFIX, load_settings, setting_docs


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per setting, generated from the Settings Struct so help and code never drift."""
    for doc in setting_docs():
        flag = "--" + doc.name.replace("_", "-")
        env = ENV_PREFIX + doc.name.upper()
        default = ",".join(doc.default) if isinstance(doc.default, list) else doc.default
        text = f"{doc.description} [env {env}; default {default!r}]"
        if doc.type is bool:
            parser.add_argument(flag, dest=doc.name, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif doc.type == list[str]:
            parser.add_argument(flag, dest=doc.name, default=None, help=text, type=lambda v: [k for k in v.split(",") if k])
        else:
            parser.add_argument(flag, dest=doc.name, default=None, help=text, type=doc.type)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tasksync", description="Real-time task sync over WebSockets.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve",
        help="run the service",
        description="Run the TaskSync service. Precedence: flags > TASKSYNC_* environment > config file > defaults.",
    )
    serve.add_argument("--config", help=f"YAML, JSON or TOML file of settings [env {ENV_PREFIX}CONFIG]")
    _add_setting_flags(serve)

    publish = commands.add_parser("publish", help="send one event to a running service (POST /v1/events)")
    publish.add_argument("event", choices=["task.created", "task.updated", "task.completed", "task.deleted"])
    publish.add_argument("--user-id", required=True)
    publish.add_argument("--task", required=True, help='the task as JSON, e.g. \'{"id": 1, "title": "x"}\'')
    publish.add_argument("--id", dest="event_id", help="event id (default: random); reuse it to test dedupe")
    publish.add_argument("--url", default="http://127.0.0.1:8005", help="service base URL")
    publish.add_argument("--api-key", help=f"API key (default: ${ENV_PREFIX}API_KEY)")

    tail = commands.add_parser("tail", help="connect as a user and print every frame")
    tail.add_argument("--url", default="ws://127.0.0.1:8005/ws")
    tail.add_argument("--user-id", help="development auth: the user to connect as")
    tail.add_argument("--token", help="bearer token, sent as the bearer.<token> subprotocol")
    tail.add_argument("--since", type=int, help="resume after this seq (with --epoch)")
    tail.add_argument("--epoch")
    tail.add_argument("--no-reconnect", action="store_true", help="exit when the connection closes")
    return parser


def serve(args: argparse.Namespace) -> int:
    from .server import run

    overrides = {doc.name: getattr(args, doc.name) for doc in setting_docs()}
    try:
        settings = load_settings(overrides, config_file=args.config)
    except (ValueError, OSError) as exc:
        print(f"tasksync: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run(settings)
    except (RuntimeError, ValueError) as exc:
        print(f"tasksync: {exc}", file=sys.stderr)
        return 2
    return 0


async def _publish(args: argparse.Namespace) -> int:
    import os

    from .publisher import PublishError, Publisher

    try:
        task: Any = json.loads(args.task)
    except json.JSONDecodeError as exc:
        print(f"tasksync: --task is not JSON: {exc}", file=sys.stderr)
        return 2
    api_key = args.api_key or os.environ.get(ENV_PREFIX + "API_KEY")
    async with Publisher.for_http(args.url, api_key=api_key, retries=2) as publisher:
        try:
            event_id = await publisher.publish(args.event, user_id=args.user_id, task=task, event_id=args.event_id)
        except PublishError as exc:
            print(f"tasksync: {exc}", file=sys.stderr)
            return 1
    print(event_id)
    return 0


async def _tail(args: argparse.Namespace) -> int:
    from .client import ClientClosed, SyncClient

    client = SyncClient(args.url, user_id=args.user_id, token=args.token, reconnect=not args.no_reconnect)
    if args.since is not None:
        client.last_seq, client.epoch = args.since, args.epoch
    try:
        connected = await client.connect()
        print(msgspec.json.encode(connected).decode(), flush=True)
        async for frame in client:
            print(msgspec.json.encode(frame).decode(), flush=True)
    except ClientClosed as closed:
        print(f"tasksync: {closed}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"tasksync: cannot connect to {args.url}: {exc}", file=sys.stderr)
        return 1
    print(f"tasksync: closed: code={client.close_code} reason={client.close_reason!r}", file=sys.stderr)
    return 0 if client.close_code == 1000 else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    runner = _publish if args.command == "publish" else _tail
    try:
        return asyncio.run(runner(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
