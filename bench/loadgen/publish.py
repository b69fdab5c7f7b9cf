"""Publishers for the end-to-end workloads: events in over HTTP, out through the sockets.

The same events go to every target, batched: TaskSync's `POST /v1/events` (a JSON array), its
Dapr bulk route (a bulk envelope of CloudEvents, byte for byte what the Dapr sidecar sends), and
Centrifugo's HTTP API (`/api/batch` of publish commands to each user's personal channel, with
the event id as idempotency key, as TaskSync dedupes by id). Each event is stamped when its
batch is built, right before the request, so latency covers ingest, fan-out and the socket.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import Callable
from typing import Any

import httpx

from ..shape import Mode, compact_json, task, users

Request = tuple[str, bytes, dict[str, str]]

_ids = itertools.count()
# Event ids are unique across every run that shares a broker (the Redis workloads).
_run = secrets.token_hex(4)


def next_id() -> str:
    return f"{_run}-{next(_ids)}"


def payload(user: str, n: int) -> dict[str, Any]:
    return {"id": next_id(), "event": "task.updated", "user_id": user, "task": task(n)}


def tasksync_http(base: str, events: list[dict[str, Any]]) -> Request:
    return f"{base}/v1/events", compact_json(events).encode(), {"content-type": "application/json"}


def tasksync_dapr(base: str, events: list[dict[str, Any]]) -> Request:
    entries = [
        {
            "entryId": str(index),
            "event": {
                "specversion": "1.0",
                "id": event["id"],
                "source": "bench",
                "type": "com.dapr.event.sent",
                "datacontenttype": "application/json",
                "topic": "task-events",
                "pubsubname": "pubsub",
                "data": event,
            },
            "contentType": "application/cloudevents+json",
            "metadata": {},
        }
        for index, event in enumerate(events)
    ]
    envelope = {
        "id": next_id(),
        "type": "com.dapr.event.sent.bulk",
        "pubsubname": "pubsub",
        "topic": "task-events",
        "metadata": {},
        "entries": entries,
    }
    return f"{base}/dapr/task-events", compact_json(envelope).encode(), {"content-type": "application/json"}


def centrifugo_batch(api_key: str) -> Callable[[str, list[dict[str, Any]]], Request]:
    def build(base: str, events: list[dict[str, Any]]) -> Request:
        commands = [
            {"publish": {"channel": f"personal:#{event['user_id']}", "data": event, "idempotency_key": event["id"]}}
            for event in events
        ]
        headers = {"content-type": "application/json", "x-api-key": api_key}
        return f"{base}/api/batch", compact_json({"commands": commands}).encode(), headers

    return build


def accepted(target: str, response: httpx.Response, size: int) -> bool:
    """Whether every event of the batch was taken."""
    if target == "tasksync-http":
        return response.status_code == 202
    if target == "tasksync-dapr":
        return response.status_code == 200 and response.content.count(b'"SUCCESS"') == size
    return response.status_code == 200 and b'"error"' not in response.content


async def publish(command: dict[str, Any]) -> dict[str, Any]:
    """Publish `events` events round-robin over the users of (`mode`, `sockets`), `batch` per
    request, over `concurrency` connections, alternating between `urls` (replicas).

    `rate` None sends as fast as the server answers (saturation); otherwise batches leave on a
    fixed schedule of `rate` events per second, and the concurrency only bounds what is in flight."""
    target: str = command["target"]
    mode: Mode = command.get("mode", "routed")
    targets = users(mode, command["sockets"])
    total: int = command["events"]
    batch: int = command["batch"]
    rate: float | None = command.get("rate")
    urls: list[str] = command["urls"]
    build = {
        "tasksync-http": tasksync_http,
        "tasksync-dapr": tasksync_dapr,
        "centrifugo": centrifugo_batch(command.get("api_key", "")),
    }[target]
    batches = (total + batch - 1) // batch
    concurrency = command.get("concurrency", 4)
    limit = asyncio.Semaphore(concurrency)
    errors: list[str] = []
    sent = 0

    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency * len(urls)), timeout=60) as client:

        async def send(k: int) -> None:
            nonlocal sent
            first = k * batch
            size = min(batch, total - first)
            events = [payload(targets[(first + i) % len(targets)], first + i) for i in range(size)]
            url, body, headers = build(urls[k % len(urls)], events)
            try:
                response = await client.post(url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                return
            finally:
                limit.release()
            if accepted(target, response, size):
                sent += size
            else:
                errors.append(f"HTTP {response.status_code}: {response.text[:200]}")

        started = time.monotonic_ns()
        tasks = []
        for k in range(batches):
            if rate:
                ahead = started + k * batch * 1e9 / rate - time.monotonic_ns()
                if ahead > 0:
                    await asyncio.sleep(ahead / 1e9)
            await limit.acquire()
            tasks.append(asyncio.create_task(send(k)))
        await asyncio.gather(*tasks)
    return {
        "published": sent,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "start_ns": started,
        "end_ns": time.monotonic_ns(),
    }
