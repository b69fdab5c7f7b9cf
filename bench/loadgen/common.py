"""Small pieces every load-generator mode uses."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from picows import WSError, WSListener, WSTransport, ws_connect

# Spreading client sockets over many loopback source addresses multiplies the ports available
# per server port, so back-to-back runs of 10,000 sockets never run out while earlier
# connections sit in TIME_WAIT.
SOURCE_ADDRESSES = 200


def source_address(index: int) -> tuple[str, int]:
    return (f"127.0.0.{2 + index % SOURCE_ADDRESSES}", 0)


async def open_websocket(
    listener_factory: Callable[[], WSListener], url: str, index: int, failures: list[str], **options: Any
) -> tuple[WSTransport, WSListener] | None:
    """Open client socket `index` (from its own source address); None, with the reason added to
    `failures`, when the server refused it or dropped it before the upgrade."""
    try:
        transport, listener = await ws_connect(listener_factory, url, local_addr=source_address(index), **options)
    except (TimeoutError, OSError, WSError) as exc:
        failures.append(f"{type(exc).__name__}: {exc}")
        return None
    if transport.is_disconnected:
        # picows returns without calling the listener when the server drops the connection
        # before answering the upgrade.
        failures.append("closed before upgrade")
        return None
    return transport, listener


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentiles_ms(latencies_ns) -> dict[str, float] | None:
    """p50/p90/p99/max in milliseconds, or None without samples."""
    if not len(latencies_ns):
        return None
    values = np.frombuffer(latencies_ns, dtype=np.int64) if not isinstance(latencies_ns, np.ndarray) else latencies_ns
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"p50": p50 / 1e6, "p90": p90 / 1e6, "p99": p99 / 1e6, "max": float(values.max()) / 1e6}


def now_ns() -> int:
    return time.monotonic_ns()
