"""The `tasksync` command: serve, publish, tail.

Expected failures (a bad flag, a server that is not running, a refusal) end in one line on stderr
and a non-zero exit: 2 for a command line to fix, 1 for a failure at run time, 130 for Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import msgspec

from .listener import listening_socket
from .settings import ENV_PREFIX, load_settings, setting_docs

if TYPE_CHECKING:
    from .client import SyncClient
    from .protocol import Connected

# Only what `serve` needs before it listens is imported at the top: each module imported before
# the listen keeps a restarting server's clients refused for that much longer (listener.py).
# `publish` and `tail` import what they need when they run (asyncio, websockets and the client
# made `import tasksync.cli` take 0.2 s instead of 0.06 s).

DEFAULT_URL = "http://127.0.0.1:8005"
NOT_RUNNING_HINT = "is the server running? (make demo)"
# One format for every log line of `tasksync serve`: uvicorn's and Litestar's loggers propagate
# to the root logger configured with it.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Handshake answers of a proxy whose TaskSync is not up yet: worth waiting for.
STARTING_STATUSES = frozenset({502, 503, 504})


class CommandError(Exception):
    """An expected failure: printed as one line `tasksync <command>: <message>`."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class VersionAction(argparse.Action):
    """`--version`, reading the installed version only when asked (importlib.metadata is one of
    the imports `serve` leaves until after the listen)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="show the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        from importlib.metadata import version

        print(f"tasksync {version('tasksync')}")
        parser.exit()


class OneLineParser(argparse.ArgumentParser):
    """argparse, with a usage error as one line that points at --help."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


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
            parser.add_argument(
                flag, dest=doc.name, default=None, help=text, type=lambda v: [k for k in v.split(",") if k]
            )
        else:
            parser.add_argument(flag, dest=doc.name, default=None, help=text, type=doc.type)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="tasksync", description="Real-time task sync over WebSockets.")
    parser.add_argument("--version", action=VersionAction)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve",
        help="run the service",
        description="Run the TaskSync service. Precedence: flags > TASKSYNC_* environment > config file > defaults.",
    )
    serve.add_argument("--config", help=f"YAML, JSON or TOML file of settings [env {ENV_PREFIX}CONFIG]")
    _add_setting_flags(serve)

    url_help = f"the service's base URL, the same for publish and tail (default: {DEFAULT_URL})"
    publish = commands.add_parser(
        "publish",
        help="send one event to a running service (POST /v1/events)",
        description="Send one task event to a running service through POST <url>/v1/events.",
    )
    publish.add_argument("event", choices=["task.created", "task.updated", "task.completed", "task.deleted"])
    publish.add_argument("--user-id", required=True, help="the user whose tabs and devices receive the event")
    publish.add_argument(
        "--task", required=True, help='the task as a JSON object with an "id", e.g. \'{"id": 1, "title": "x"}\''
    )
    publish.add_argument("--id", dest="event_id", help="event id (default: random); reuse it to test dedupe")
    publish.add_argument("--url", default=DEFAULT_URL, help=url_help)
    publish.add_argument("--api-key", help=f"API key (default: ${ENV_PREFIX}API_KEY)")

    tail = commands.add_parser(
        "tail",
        help="connect as a user and print every frame",
        description="Connect to <url>/ws as a user and print every frame as a JSON line. Until the first "
        "connection succeeds, and after the connection drops, it retries with backoff.",
    )
    tail.add_argument("--url", default=DEFAULT_URL, help=url_help)
    tail.add_argument("--user-id", help="development mode: the user to connect as")
    tail.add_argument("--token", help="bearer token (JWT auth), sent as the bearer.<token> subprotocol")
    tail.add_argument("--since", type=int, help="resume after this seq; needs --epoch")
    tail.add_argument("--epoch", help="the epoch --since belongs to (from a connected or task_update frame)")
    tail.add_argument("--no-reconnect", action="store_true", help="exit when the connection closes or fails")
    return parser


def base_url(raw: str) -> str:
    """--url as the service's base URL (scheme, host, port and an optional path prefix)."""
    parts = urlsplit(raw)
    try:
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port that is not a number from 1 to 65535
        valid = False
    if not valid or parts.query or parts.fragment:
        raise CommandError(f"--url {raw!r} is not the service's base URL; give one like {DEFAULT_URL}", 2)
    return raw.rstrip("/")


def websocket_url(base: str) -> str:
    parts = urlsplit(base)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit(parts._replace(scheme=scheme, path=parts.path.rstrip("/") + "/ws"))


def _non_empty_user(user_id: str) -> str:
    if not user_id.strip():
        raise CommandError("--user-id is empty; give the user's id", 2)
    return user_id


def serve(args: argparse.Namespace) -> int:
    overrides = {doc.name: getattr(args, doc.name) for doc in setting_docs()}
    try:
        settings = load_settings(overrides, config_file=args.config)
    except (ValueError, OSError) as exc:
        print(f"tasksync: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
    try:
        # Listening before the application is even imported: see listener.py.
        sock = listening_socket(settings.host, settings.port)
        from .server import run

        run(settings, sock)
    except (RuntimeError, ValueError) as exc:
        print(f"tasksync: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Ctrl-C outside development mode: uvicorn has shut down and re-raised the signal.
        return 130
    return 0


async def _publish(args: argparse.Namespace) -> int:
    from .publisher import Publisher, PublishError

    url, user_id = base_url(args.url), _non_empty_user(args.user_id)
    try:
        task: Any = json.loads(args.task)
    except json.JSONDecodeError as exc:
        raise CommandError(f"--task is not JSON: {exc}", 2) from None
    if not isinstance(task, dict) or task.get("id") in (None, ""):
        raise CommandError('--task must be a JSON object with an "id", e.g. \'{"id": 1, "title": "x"}\'', 2)
    api_key = args.api_key or os.environ.get(ENV_PREFIX + "API_KEY")
    async with Publisher.for_http(url, api_key=api_key, retries=2) as publisher:
        try:
            event_id = await publisher.publish(args.event, user_id=user_id, task=task, event_id=args.event_id)
        except PublishError as exc:
            if exc.__cause__ is not None:
                raise CommandError(f"cannot reach {url}: {_reason(exc.__cause__)}; {NOT_RUNNING_HINT}") from None
            raise CommandError(f"{url}: {exc}") from None
    print(event_id)
    return 0


def _reason(exc: BaseException) -> str:
    """An exception as a short phrase: the OS's words for a socket error."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


async def _first_connection(client: SyncClient, url: str) -> Connected:
    """The first `connected` frame. While nothing answers yet, keep trying on the client's
    reconnect schedule: a tail started before its server connects once the server is up."""
    import asyncio

    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

    from .client import backoff_delay

    attempt = 0
    while True:
        try:
            return await client.connect()
        except (TimeoutError, ConnectionRefusedError, ConnectionResetError) as exc:
            failure: BaseException = exc
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status not in STARTING_STATUSES:
                hint = "; is --url the service's base URL?" if status in (403, 404) else ""
                raise CommandError(
                    f"{websocket_url(url)} refused the WebSocket handshake: HTTP {status}{hint}"
                ) from None
            failure = exc
        except ConnectionClosed as closed:
            received = closed.rcvd
            code, reason = (received.code, received.reason) if received else (1006, "")
            raise CommandError(f"the server closed the connection: code={code} reason={reason!r}") from None
        except InvalidHandshake as exc:
            raise CommandError(f"{url} did not answer as a WebSocket server: {exc}") from None
        except OSError as exc:
            raise CommandError(f"cannot connect to {url}: {_reason(exc)}") from None
        attempt += 1
        if not client.reconnect or attempt > client.max_attempts:
            raise CommandError(f"cannot connect to {url}: {_reason(failure)}; {NOT_RUNNING_HINT}")
        if attempt == 1:
            print(f"tasksync tail: nothing answers at {url} yet ({NOT_RUNNING_HINT}); retrying", file=sys.stderr)
        await asyncio.sleep(backoff_delay(attempt, client.backoff, client.jitter))


async def _tail(args: argparse.Namespace) -> int:
    url = base_url(args.url)
    if args.user_id is None and args.token is None:
        raise CommandError("say who to connect as: --user-id USER (development mode) or --token TOKEN", 2)
    user_id = None if args.user_id is None else _non_empty_user(args.user_id)
    if (args.since is None) != (args.epoch is None):
        raise CommandError("--since and --epoch go together (both from a connected or task_update frame)", 2)
    from .client import SyncClient

    client = SyncClient(websocket_url(url), user_id=user_id, token=args.token, reconnect=not args.no_reconnect)
    if args.since is not None:
        client.last_seq, client.epoch = args.since, args.epoch
    try:
        connected = await _first_connection(client, url)
        print(msgspec.json.encode(connected).decode(), flush=True)
        async for frame in client:
            print(msgspec.json.encode(frame).decode(), flush=True)
    except msgspec.DecodeError as exc:
        raise CommandError(f"{url} does not speak TaskSync's protocol: {exc}") from None
    print(f"tasksync tail: closed: code={client.close_code} reason={client.close_reason!r}", file=sys.stderr)
    return 0 if client.close_code == 1000 else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    import asyncio

    runner = _publish if args.command == "publish" else _tail
    try:
        return asyncio.run(runner(args))
    except CommandError as error:
        print(f"tasksync {args.command}: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
