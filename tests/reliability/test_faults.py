"""Faults under load: a replica killed with SIGKILL, Redis killed and restarted, the network to
Redis cut, a plugin that hangs, an unreadable limits file. For each: what the user sees, what
the metrics show, and that nothing acknowledged to a publisher is lost."""

from __future__ import annotations

import asyncio
import signal

import httpx

from tasksync.client import SyncClient
from tasksync.protocol import ResyncRequired, TaskUpdate
from tests.support.metrics import value
from tests.support.publishing import RetryingPublisher
from tests.support.redis_server import RedisServer
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import eventually

USERS = [f"fault-{n}" for n in range(4)]
FAST_BACKOFF = (0.05, 0.1, 0.2, 0.4)
# An outage lasts until the publisher has been refused this many times (about a second at its
# retry delay): it ends only once it has certainly landed in the stream, however slow the machine.
OUTAGE_REFUSALS = 20


class Stream:
    """Clients of every user, a steady publish stream, and the bookkeeping to check it."""

    def __init__(self, ws_urls: list[str], http_urls: list[str], events: int) -> None:
        self.events = events
        self.clients = [
            (user, SyncClient(ws_urls[i % len(ws_urls):] + ws_urls[: i % len(ws_urls)], user_id=user,
                              reconnect=True, backoff=FAST_BACKOFF, max_attempts=200))
            for i, user in enumerate(USERS * 2)
        ]
        self.publisher = RetryingPublisher(http_urls)
        self.acknowledged: dict[str, list[int]] = {user: [] for user in USERS}
        self.received: dict[int, list[int]] = {id(c): [] for _, c in self.clients}
        self.resyncs = 0
        self.published = 0

    async def start(self) -> None:
        for _, client in self.clients:
            await client.connect()
        self._readers = [asyncio.create_task(self._read(user, c)) for user, c in self.clients]
        self._publishing = asyncio.create_task(self._publish())

    async def _read(self, user: str, client: SyncClient) -> None:
        while True:
            frame = await client.receive()
            if isinstance(frame, TaskUpdate):
                self.received[id(client)].append(frame.task["n"])
            elif isinstance(frame, ResyncRequired):
                self.resyncs += 1

    async def _publish(self) -> None:
        for n in range(self.events):
            user = USERS[n % len(USERS)]
            await self.publisher.publish(
                {"id": f"fault-{n}", "event": "task.updated", "user_id": user, "task": {"n": n}}
            )
            self.acknowledged[user].append(n)
            self.published += 1
            await asyncio.sleep(0.01)  # a steady stream for the fault to land in

    async def finish(self) -> dict[str, int]:
        await asyncio.wait_for(self._publishing, timeout=120)

        def caught_up() -> bool:
            return all(len(self.received[id(c)]) >= len(self.acknowledged[u]) for u, c in self.clients)

        try:
            await eventually(caught_up, timeout=60, what="every client caught up")
        except AssertionError:
            missing = {
                f"{u}#{i}": sorted(set(self.acknowledged[u]) - set(self.received[id(c)]))[:10]
                for i, (u, c) in enumerate(self.clients)
            }
            crashed = [repr(t.exception()) for t in self._readers if t.done() and t.exception()]
            raise AssertionError(f"not caught up; missing per client: {missing}; readers crashed: {crashed}") from None
        for task in self._readers:
            task.cancel()
        lost = duplicated = 0
        for user, client in self.clients:
            got = self.received[id(client)]
            lost += len(set(self.acknowledged[user]) - set(got))
            duplicated += len(got) - len(set(got))
            assert got == self.acknowledged[user], f"{user}: not exactly the acknowledged events, in order"
            await client.close()
        await self.publisher.aclose()
        return {
            "lost": lost,
            "duplicated": duplicated,
            "reconnects": sum(c.connections - 1 for _, c in self.clients),
            "retries": self.publisher.retries,
        }


async def refused_during_outage(publisher: RetryingPublisher) -> None:
    before = publisher.retries
    await eventually(
        lambda: publisher.retries >= before + OUTAGE_REFUSALS, timeout=30, what="publishers refused during the outage"
    )


async def ready(service) -> bool:
    # Async: the Redis proxy of the network-cut test runs on this event loop, and a blocking
    # probe would starve the very PING that readiness waits for.
    try:
        async with httpx.AsyncClient(timeout=2) as http:
            return (await http.get(service.http + "/health/ready")).status_code == 200
    except httpx.HTTPError:
        return False


async def unready(*services) -> bool:
    return not any([await ready(s) for s in services])


async def all_ready(*services) -> bool:
    return all([await ready(s) for s in services])


async def test_sigkill_of_a_replica_under_load_loses_nothing_acknowledged(start_service, redis_server, report):
    flags = ("--dev", "--broker", redis_server.url)
    a, b = start_service(*flags), start_service(*flags)
    stream = Stream([a.ws, b.ws], [a.http, b.http], events=300)
    await stream.start()
    await eventually(lambda: stream.published >= 80, what="load before the kill")
    a.process.send_signal(signal.SIGKILL)  # no drain, no goodbye
    a.process.wait(10)
    counts = await stream.finish()
    assert counts["lost"] == 0 and counts["duplicated"] == 0 and stream.resyncs == 0
    assert counts["reconnects"] >= len(USERS)  # the clients that were on A moved to B
    report.record(
        "replica killed with SIGKILL (two replicas, Redis)",
        **{
            "load held": f"{len(stream.clients)} sockets, 300 events at ~100/s",
            "faults injected": "SIGKILL of one replica mid-stream",
            "inputs tried": "300 events",
            "events lost": counts["lost"],
            "cross-user frames": 0,
            "notes": f"users see their sockets drop (1006) and reconnect to the survivor, resuming: "
            f"{counts['reconnects']} reconnects; publisher retried {counts['retries']} times; "
            f"survivor metrics show tasksync_reconnects_total {value(b, 'tasksync_reconnects_total'):.0f}",
        },
    )


async def test_redis_killed_and_restarted_under_load_with_two_replicas(start_service, redis_server, report):
    flags = ("--dev", "--broker", redis_server.url)
    a, b = start_service(*flags), start_service(*flags)
    stream = Stream([a.ws, b.ws], [a.http, b.http], events=200)
    await stream.start()
    await eventually(lambda: stream.published >= 50, what="load before the fault")
    redis_server.kill()
    await eventually(lambda: unready(a, b), timeout=10, what="both replicas unready")
    await refused_during_outage(stream.publisher)
    redis_server.restart()
    await eventually(lambda: all_ready(a, b), timeout=20, what="both replicas ready again")
    counts = await stream.finish()
    refusals = sum(value(s, "tasksync_ingest_errors_total", source="http", reason="broker_unavailable") for s in (a, b))
    assert counts["lost"] == 0 and counts["reconnects"] == 0  # sockets survived the outage
    report.record(
        "Redis killed and restarted (two replicas)",
        **{
            "load held": f"{len(stream.clients)} sockets, 200 events",
            "faults injected": (
                f"SIGKILL of Redis, restart once publishers were refused {OUTAGE_REFUSALS} times (AOF persistence)"
            ),
            "inputs tried": "200 events",
            "events lost": counts["lost"],
            "cross-user frames": 0,
            "notes": f"users see a pause, no disconnect; /health/ready 503 on both replicas during the outage; "
            f"publishers get 503 + Retry-After ({refusals:.0f} refusals counted as "
            f"tasksync_ingest_errors_total{{reason=broker_unavailable}}), retried {counts['retries']} times",
        },
    )


async def test_network_to_redis_cut_and_restored(start_service, report):
    redis_server = RedisServer().start()
    proxy = await TcpProxy(redis_server.port).start()
    try:
        url = f"redis://127.0.0.1:{proxy.port}/0"
        a, b = start_service("--dev", "--broker", url), start_service("--dev", "--broker", url)
        stream = Stream([a.ws, b.ws], [a.http, b.http], events=200)
        await stream.start()
        await eventually(lambda: stream.published >= 50, what="load before the cut")
        await proxy.cut()
        await eventually(lambda: unready(a, b), timeout=15, what="both replicas unready")
        async with httpx.AsyncClient() as http:
            dapr = await http.post(a.http + "/dapr/task-events", json={"specversion": "1.0", "id": "cut-1",
                                   "data": {"event": "task.created", "user_id": USERS[0], "task": {"n": -1}}})
        assert dapr.json() == {"status": "RETRY"}
        await refused_during_outage(stream.publisher)
        await proxy.restore()
        await eventually(lambda: all_ready(a, b), timeout=30, what="both replicas ready again")
        counts = await stream.finish()
        assert counts["lost"] == 0 and counts["reconnects"] == 0
        report.record(
            "network to Redis cut and restored (two replicas)",
            **{
                "load held": f"{len(stream.clients)} sockets, 200 events",
                "faults injected": (
                    "every Redis connection dropped, new ones refused until publishers were refused "
                    f"{OUTAGE_REFUSALS} times"
                ),
                "inputs tried": "200 events",
                "events lost": counts["lost"],
                "cross-user frames": 0,
                "notes": "users see a pause, no disconnect; Dapr gets RETRY, HTTP publishers 503; readiness 503 "
                f"until the pub/sub listener reconnects and catches up; publisher retried {counts['retries']} times",
            },
        )
    finally:
        await proxy.cut()
        redis_server.cleanup()


async def test_a_hanging_plugin_and_an_unreadable_limits_file(start_service, tmp_path, report, third_party_plugins):
    limits = tmp_path / "limits.yaml"
    limits.write_text("apiVersion: tasksync.io/limits/v1\ngeneration: 3\nlimits: {}\n")
    service = start_service("--dev", "--notifiers", "hang,toast", "--plugin-timeout", "0.2",
                            "--limits-file", str(limits), "--limits-poll-interval", "0.1")
    limits.unlink()
    limits.mkdir()  # the limits "disk" unreadable
    await eventually(lambda: value(service, "tasksync_limits_reloads_total", outcome="unreadable") == 1,
                     what="the unreadable file counted")
    async with SyncClient(service.ws, user_id="patient") as client, httpx.AsyncClient() as http:
        await http.post(service.http + "/v1/events", json={"event": "task.created", "user_id": "patient",
                                                           "task": {"title": "still delivered"}})
        async with asyncio.timeout(5):
            while not isinstance(frame := await client.receive(), TaskUpdate):
                pass
        ready = await http.get(service.http + "/health/ready")
    assert frame.task["title"] == "still delivered" and frame.notification.title == "Task created"
    assert ready.json()["limits_generation"] == 3
    timeouts = value(
        service, "tasksync_plugin_errors_total", plugin="hang", hook="tasksync_notification", kind="timeout"
    )
    assert timeouts == 1
    report.record(
        "a plugin that hangs; the limits file unreadable",
        **{
            "load held": "1 socket",
            "faults injected": "notifier that never answers; limits file replaced by something unreadable",
            "inputs tried": "1 event",
            "events lost": 0,
            "cross-user frames": 0,
            "notes": "users get the event within the plugin time box, with the next notifier's toast; "
            "tasksync_plugin_errors_total{plugin=hang,kind=timeout} 1, tasksync_limits_reloads_total"
            "{outcome=unreadable} 1, limits generation 3 stays in force",
        },
    )
