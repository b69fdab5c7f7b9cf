"""`tasksync-operator`: run the kopf operator with TaskSync's handlers.

    tasksync-operator                      # every namespace
    tasksync-operator -n team-a -n team-b  # only these namespaces (globs allowed: 'team-*')

Equivalent to `kopf run -m tasksync_operator.handlers --standalone ...`, plus JSON logs by
default and the operator's own flags. One replica: it runs standalone (no kopf peering), so
a second replica would handle every object twice.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import threading
from collections.abc import Sequence

import kopf

from tasksync_operator import handlers  # noqa: F401  (registers the handlers with kopf)
from tasksync_operator.config import OperatorConfig

DEFAULT_LIVENESS = "http://0.0.0.0:8080/healthz"

Flag = asyncio.Event | threading.Event | concurrent.futures.Future[object]


class Options(argparse.Namespace):
    namespaces: list[str]
    liveness: str
    kubeconfig: str | None
    log_format: str
    verbose: bool
    debug: bool
    retry_max_delay: float


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="tasksync-operator", description=__doc__.split("\n")[0])
    parser.add_argument(
        "-n",
        "--namespace",
        dest="namespaces",
        action="append",
        default=[],
        help="watch only this namespace (repeatable; glob patterns allowed); default: all",
    )
    parser.add_argument(
        "--liveness",
        default=DEFAULT_LIVENESS,
        help=f"liveness endpoint URL the operator serves (default {DEFAULT_LIVENESS})",
    )
    parser.add_argument(
        "--kubeconfig", default=None, help="kubeconfig file (default: in-cluster, else $KUBECONFIG)"
    )
    parser.add_argument("--log-format", choices=["json", "full", "plain"], default="json")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--debug", action="store_true")
    parser.add_argument(
        "--retry-max-delay",
        type=float,
        default=OperatorConfig().retry_max_delay,
        help="cap in seconds of the backoff when a TaskSyncSubscription cannot be reconciled",
    )
    return parser.parse_args(argv, namespace=Options())


async def run(
    config: OperatorConfig,
    *,
    namespaces: Sequence[str] = (),
    liveness: str | None = DEFAULT_LIVENESS,
    stop_flag: Flag | None = None,
    ready_flag: Flag | None = None,
) -> None:
    """Run until `stop_flag` is set (or SIGINT/SIGTERM in the main thread)."""
    await kopf.operator(
        clusterwide=not namespaces,
        namespaces=list(namespaces),
        standalone=True,
        liveness_endpoint=liveness,
        memo=kopf.Memo(config=config),
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    )


def main(argv: Sequence[str] | None = None) -> None:
    options = parse_args(argv)
    kopf.configure(
        verbose=options.verbose,
        debug=options.debug,
        log_format=kopf.LogFormat[options.log_format.upper()],
    )
    config = OperatorConfig(kubeconfig=options.kubeconfig, retry_max_delay=options.retry_max_delay)
    asyncio.run(run(config, namespaces=options.namespaces, liveness=options.liveness))


if __name__ == "__main__":
    main()
