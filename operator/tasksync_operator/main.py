"""`tasksync-operator`: run the kopf operator with TaskSync's handlers.

    tasksync-operator                      # every namespace
    tasksync-operator -n team-a -n team-b  # only these namespaces (globs allowed: 'team-*')
    tasksync-operator --leader-elect-resource-name=tasksync-operator \\
        --leader-elect-resource-namespace=tasksync   # one of several replicas

Equivalent to `kopf run -m tasksync_operator.handlers --standalone ...`, plus JSON logs by
default and the operator's own flags. Without leader election it must run alone: a second
process would handle every object twice. With it, any number of replicas run and the one
holding the Lease works (tasksync_operator.leadership).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import logging
import signal
import sys
import threading
from collections.abc import Sequence

import kopf
import msgspec
from kubernetes_asyncio.client import ApiClient

from tasksync_operator import (
    handlers,  # noqa: F401  (registers the handlers with kopf)
    kube,
    leadership,
)
from tasksync_operator.config import OperatorConfig
from tasksync_operator.liveness import serve_standby_liveness

DEFAULT_LIVENESS = "http://0.0.0.0:8080/healthz"

Flag = asyncio.Event | threading.Event | concurrent.futures.Future[object]

logger = logging.getLogger(__name__)


class Options(argparse.Namespace):
    namespaces: list[str]
    liveness: str
    kubeconfig: str | None
    log_format: str
    verbose: bool
    debug: bool
    retry_max_delay: float
    resync_interval: float
    dapr_poll_interval: float
    leader_elect_resource_name: str | None
    leader_elect_resource_namespace: str | None
    leader_elect_lease_duration: float
    leader_elect_renew_deadline: float
    leader_elect_retry_period: float


def parse_args(argv: Sequence[str] | None = None) -> Options:
    defaults = OperatorConfig()
    election = {field.name: field.default for field in msgspec.structs.fields(leadership.ElectionSettings)}
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
        default=defaults.retry_max_delay,
        help="cap in seconds of the backoff when a TaskSyncSubscription cannot be reconciled",
    )
    parser.add_argument(
        "--resync-interval",
        type=float,
        default=defaults.resync_interval,
        help="seconds between two reconciliations of every TaskSyncSubscription (default %(default)s)",
    )
    parser.add_argument(
        "--dapr-poll-interval",
        type=float,
        default=defaults.dapr_poll_interval,
        help="seconds between two discovery checks while the Dapr Subscription API is not served "
        "(default %(default)s)",
    )
    group = parser.add_argument_group(
        "leader election", "run several replicas; the one holding a Lease works, the others stand by"
    )
    group.add_argument(
        "--leader-elect-resource-name", default=None, help="name of the Lease; enables leader election"
    )
    group.add_argument("--leader-elect-resource-namespace", default=None, help="namespace of the Lease")
    group.add_argument(
        "--leader-elect-lease-duration",
        type=float,
        default=election["lease_duration"],
        help="seconds a standby waits for a silent leader before taking over (default %(default)s)",
    )
    group.add_argument(
        "--leader-elect-renew-deadline",
        type=float,
        default=election["renew_deadline"],
        help="seconds the leader tries to renew before it stops leading (default %(default)s)",
    )
    group.add_argument(
        "--leader-elect-retry-period",
        type=float,
        default=election["retry_period"],
        help="seconds between two renewals, or two checks by a standby (default %(default)s)",
    )
    options = parser.parse_args(argv, namespace=Options())
    if options.leader_elect_resource_name and not options.leader_elect_resource_namespace:
        parser.error("--leader-elect-resource-name needs --leader-elect-resource-namespace")
    if options.leader_elect_resource_name:
        try:
            election_settings(options)
        except ValueError as exc:
            parser.error(str(exc))
    return options


def election_settings(options: Options) -> leadership.ElectionSettings | None:
    if not options.leader_elect_resource_name or not options.leader_elect_resource_namespace:
        return None
    return leadership.ElectionSettings(
        lease_name=options.leader_elect_resource_name,
        lease_namespace=options.leader_elect_resource_namespace,
        lease_duration=options.leader_elect_lease_duration,
        renew_deadline=options.leader_elect_renew_deadline,
        retry_period=options.leader_elect_retry_period,
    )


async def run(
    config: OperatorConfig,
    *,
    liveness: str | None = DEFAULT_LIVENESS,
    stop_flag: Flag | None = None,
    ready_flag: Flag | None = None,
) -> None:
    """Run kopf until `stop_flag` is set (or SIGINT/SIGTERM in the main thread)."""
    await kopf.operator(
        clusterwide=not config.namespaces,
        namespaces=list(config.namespaces),
        standalone=True,
        liveness_endpoint=liveness,
        memo=kopf.Memo(config=config),
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    )


async def run_elected(
    config: OperatorConfig,
    election: leadership.ElectionSettings,
    *,
    liveness: str | None = DEFAULT_LIVENESS,
    stop: asyncio.Event,
) -> None:
    """Stand by until this process holds the Lease, then `run` until `stop` is set (or kopf
    stops on a signal). Raises leadership.LeaseLost if the Lease cannot be renewed."""
    async with ApiClient(await kube.load_configuration(config.kubeconfig)) as api:
        elector = leadership.LeaseElector(api, election)
        async with serve_standby_liveness(liveness):
            if not await elector.acquire(until=stop):
                return
        # No stop flag for kopf: it stops on SIGTERM by itself, and a stop flag that is never set
        # would hold its shutdown for 5 seconds (kopf waits that long for the task awaiting it).
        await elector.lead(lambda: run(config, liveness=liveness), until=stop)


async def _main_elected(config: OperatorConfig, election: leadership.ElectionSettings, liveness: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Until kopf runs and installs its own handlers (which stop kopf, and then us).
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await run_elected(config, election, liveness=liveness, stop=stop)


def main(argv: Sequence[str] | None = None) -> None:
    options = parse_args(argv)
    kopf.configure(
        verbose=options.verbose,
        debug=options.debug,
        log_format=kopf.LogFormat[options.log_format.upper()],
    )
    config = OperatorConfig(
        kubeconfig=options.kubeconfig,
        namespaces=tuple(options.namespaces),
        retry_max_delay=options.retry_max_delay,
        resync_interval=options.resync_interval,
        dapr_poll_interval=options.dapr_poll_interval,
    )
    election = election_settings(options)
    if election is None:
        asyncio.run(run(config, liveness=options.liveness))
        return
    try:
        asyncio.run(_main_elected(config, election, options.liveness))
    except leadership.LeaseLost as exc:
        # Exit rather than queue again in this process: whatever kopf held in memory belongs
        # to a leadership that is over. The restarted container stands by afresh.
        logger.error("stopped leading: %s", exc)
        sys.exit(1)


if __name__ == "__main__":
    main()
