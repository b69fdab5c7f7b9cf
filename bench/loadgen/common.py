"""Small pieces every load-generator mode uses."""

from __future__ import annotations

import resource
import time

import numpy as np

# Spreading client sockets over many loopback source addresses multiplies the ports available
# per server port, so back-to-back runs of 10,000 sockets never run out while earlier
# connections sit in TIME_WAIT.
SOURCE_ADDRESSES = 200


def source_address(index: int) -> tuple[str, int]:
    return (f"127.0.0.{2 + index % SOURCE_ADDRESSES}", 0)


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
