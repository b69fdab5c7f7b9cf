"""What one Redis spends per TaskSync user, event and subscription: the figures docs/scaling.md
extrapolates from.

Starts a throwaway redis-server (bench.procs.Redis, persistence as in production) and drives it
through the real RedisBroker, in process, in three steps:

1. store: `events` events over `users` users, in batches of 100 (`publish_many`, as POST
   /v1/events and Dapr bulk deliver them), with every user watched by one replica so each event
   is also published to a subscriber. Measured: the redis-server process's CPU per event (from
   /proc, so it includes pub/sub fan-out and persistence) and Redis' own usec per script call
   (INFO commandstats).
2. hold: Redis memory (INFO memory `used_memory`) per stored event, split into what history
   keeps (the streams) and what the dedupe window keeps (one key per event id until it expires),
   and per user (the head).
3. subscribe: memory and time per subscribed user channel, for `subscriptions` users watched at
   once (the batched SUBSCRIBE a reconnect storm causes).
4. replicate: with a replica attached (a second redis-server, `replicaof`), how far it trails
   the master while batches are stored (what a failover at that moment would lose without
   WAIT), and what `TASKSYNC_REDIS_WAIT_REPLICAS=1` costs a batch publish.

    .venv/bin/python -m bench.redis_capacity                # the sizes docs/scaling.md quotes
    .venv/bin/python -m bench.redis_capacity --events 2000  # quicker

Bounded in count and time; loopback only. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from redis import asyncio as aioredis

from tasksync.broker.redis import RedisBroker
from tasksync.events import TaskEvent

from .procs import Redis, cpu_seconds_of
from .shape import TIMESTAMP, task

BATCH = 100
# Batches in flight at once while replication is measured, as a replica's publish route has them.
PUBLISHERS = 4


async def _info(client: aioredis.Redis, section: str) -> dict[str, Any]:
    return await client.info(section)


async def _used_memory(client: aioredis.Redis) -> int:
    return int((await _info(client, "memory"))["used_memory"])


def _script_usec_per_call(stats: dict[str, Any]) -> float:
    calls = sum(int(v["calls"]) for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))
    usec = sum(float(v["usec"]) for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))
    return usec / calls if calls else 0.0


async def _publish(broker: RedisBroker, names: list[str], ids: itertools.count[int], events: int) -> None:
    users = len(names)
    for start in range(0, events, BATCH):
        batch = [
            TaskEvent(
                id=f"e-{next(ids)}",
                user_id=names[n % users],
                event="task.updated",
                task=task(n),
                occurred_at=TIMESTAMP,
                source="bench",
            )
            for n in range(start, min(events, start + BATCH))
        ]
        outcomes = await broker.publish_many(batch)
        if any(outcome is None or isinstance(outcome, Exception) for outcome in outcomes):
            raise RuntimeError(f"a publish failed or was taken for a duplicate: {outcomes[:3]}")


async def _memory_of(client: aioredis.Redis, pattern: str) -> tuple[int, int]:
    """How many keys match `pattern`, and the memory they use all told."""
    keys = [key async for key in client.scan_iter(match=pattern, count=1000)]
    return len(keys), sum([await client.memory_usage(key, samples=0) or 0 for key in keys])


async def measure(redis: Redis, *, users: int, events: int, subscriptions: int, history_size: int) -> dict[str, Any]:
    client = aioredis.Redis.from_url(redis.url)
    broker = RedisBroker(redis.url, history_size=history_size)
    broker.set_sink(lambda delivery: 1)
    await broker.start()
    try:
        names = [f"user-{i}" for i in range(users)]
        await asyncio.gather(*(broker.watch(name) for name in names))
        await client.config_resetstat()
        base_memory = await _used_memory(client)
        ids = itertools.count()
        cpu_before = cpu_seconds_of(redis.pid)
        started = time.monotonic()
        await _publish(broker, names, ids, events)
        elapsed = time.monotonic() - started
        redis_cpu = cpu_seconds_of(redis.pid) - cpu_before
        usec_per_script = _script_usec_per_call(await _info(client, "commandstats"))
        stored_memory = await _used_memory(client) - base_memory
        dedupe_keys, dedupe_memory = await _memory_of(client, "*:dedupe:*")
        head_keys, head_memory = await _memory_of(client, "*:head")
        # A stream costs a fixed amount per user plus an amount per entry: measured at two fills.
        _, history_first = await _memory_of(client, "*:history")
        await _publish(broker, names, ids, events)
        _, history_second = await _memory_of(client, "*:history")
        per_entry = (history_second - history_first) / events
        stored = {
            "events": events,
            "users": users,
            "seconds": round(elapsed, 2),
            "events_per_s_one_client": round(events / elapsed),
            "redis_cpu_us_per_event": round(redis_cpu / events * 1e6, 1),
            "redis_usec_per_script_call": round(usec_per_script, 1),
            "used_memory_bytes_per_event": round(stored_memory / events),
            "history_bytes_per_entry": round(per_entry),
            "history_bytes_per_user_fixed": round((history_first - events * per_entry) / users),
            "dedupe_bytes_per_event": round(dedupe_memory / max(1, dedupe_keys)),
            "head_bytes_per_user": round(head_memory / max(1, head_keys)),
        }
        # Subscriptions: a second broker, as another replica, watching many users at once.
        watcher = RedisBroker(redis.url, history_size=history_size)
        watcher.set_sink(lambda delivery: 1)
        await watcher.start()
        try:
            before = await _used_memory(client)
            started = time.monotonic()
            await asyncio.gather(*(watcher.watch(f"watched-{i}") for i in range(subscriptions)))
            took = time.monotonic() - started
            after = await _used_memory(client)
        finally:
            await watcher.stop()
        subscribed = {
            "subscriptions": subscriptions,
            "seconds": round(took, 2),
            "subscriptions_per_s": round(subscriptions / took),
            "used_memory_bytes_per_subscription": round((after - before) / subscriptions),
        }
        return {"store": stored, "subscribe": subscribed, "history_size": history_size}
    finally:
        await broker.stop()
        await client.aclose()


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _offset(client: aioredis.Redis) -> int:
    """How far into the replication stream a node is: the master's written offset, or what a
    replica has processed (the replica's own figure: the one the master shows is acknowledged
    only once a second)."""
    info = await _info(client, "replication")
    return int(info.get("slave_repl_offset", info["master_repl_offset"]))


async def _replicated_batches(
    client: aioredis.Redis, replica_client: aioredis.Redis, url: str, *, wait: int, batches: int
) -> dict[str, Any]:
    """`batches` batches stored by a broker asking `wait` replicas, `PUBLISHERS` at a time: their
    latency, and (sampled while they are in flight) how far the replica trails the master."""
    broker = RedisBroker(url, wait_replicas=wait, wait_timeout=1.0)
    broker.set_sink(lambda delivery: 1)
    await broker.start()
    names = [f"replicated-{wait}-{i}" for i in range(100)]
    ids = itertools.count()
    latencies: list[float] = []
    behind = [0]

    async def publisher(count: int) -> None:
        for _ in range(count):
            started = time.monotonic()
            await _publish(broker, names, ids, BATCH)
            latencies.append((time.monotonic() - started) * 1000)

    async def sampler() -> None:
        while True:
            written, replicated = await asyncio.gather(_offset(client), _offset(replica_client))
            behind.append(max(0, written - replicated))

    try:
        offset_before = await _offset(client)
        sampling = asyncio.create_task(sampler())
        await asyncio.gather(*(publisher(batches // PUBLISHERS) for _ in range(PUBLISHERS)))
        sampling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampling
        bytes_per_event = (await _offset(client) - offset_before) / len(latencies) / BATCH
    finally:
        await broker.stop()
    return {
        "batch_ms_p50": round(_percentile(latencies, 0.5), 2),
        "batch_ms_p99": round(_percentile(latencies, 0.99), 2),
        "replication_bytes_per_event": round(bytes_per_event),
        "replica_behind_bytes_max": max(behind),
        "replica_behind_events_max": round(max(behind) / bytes_per_event, 1),
    }


async def replicate(master: Redis, replica: Redis, *, batches: int) -> dict[str, Any]:
    client = aioredis.Redis.from_url(master.url)
    replica_client = aioredis.Redis.from_url(replica.url)
    try:
        async with asyncio.timeout(30):
            while (await _info(client, "replication")).get("slave0", {}).get("state") != "online":
                await asyncio.sleep(0.05)
        return {
            f"wait_replicas_{wait}": await _replicated_batches(
                client, replica_client, master.url, wait=wait, batches=batches
            )
            for wait in (0, 1)
        }
    finally:
        await client.aclose()
        await replica_client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--subscriptions", type=int, default=5_000)
    parser.add_argument("--history-size", type=int, default=1_000)
    parser.add_argument("--replicated-batches", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tasksync-redis-capacity-") as tmp:
        redis = Redis(Path(tmp), Path(tmp) / "data").start()
        try:
            result = asyncio.run(
                measure(
                    redis,
                    users=args.users,
                    events=args.events,
                    subscriptions=args.subscriptions,
                    history_size=args.history_size,
                )
            )
            replica = Redis(Path(tmp), Path(tmp) / "replica")
            replica.argv += ["--replicaof", "127.0.0.1", str(redis.port)]
            replica.start()
            try:
                result["replicate"] = asyncio.run(replicate(redis, replica, batches=args.replicated_batches))
            finally:
                replica.stop()
        finally:
            redis.stop()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
