"""Origins, connection limits, rate limits and the hot-reloaded limits file, over real sockets."""

from __future__ import annotations

import asyncio

import httpx
import msgspec
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tasksync.client import SyncClient
from tasksync.limits import Limits, LimitsFile, encode_limits_file
from tasksync.protocol import Pong, ResyncRequired, TaskUpdate
from tests.service.test_delivery import next_update, publish_http
from tests.support.events import payload
from tests.support.metrics import value
from tests.support.waiting import eventually


def write_limits(path, generation: int, **limits) -> None:
    # Written to a temp file and renamed, as a ConfigMap update swaps files atomically.
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(encode_limits_file(LimitsFile(generation=generation, limits=Limits(**limits))))
    tmp.replace(path)


def ready(service) -> dict:
    return httpx.get(service.http + "/health/ready").json()


# -- origins ---------------------------------------------------------------------------------


async def test_handshakes_from_other_origins_are_refused_with_403_before_upgrade(start_service):
    service = start_service("--dev", "--allowed-origins", "https://app.example.com,https://*.example.org")
    url = f"{service.ws}?user_id=u"
    for allowed in ("https://app.example.com", "https://eu.tasks.example.org", None):
        async with connect(url, origin=allowed) as ws:
            assert msgspec.json.decode(await ws.recv())["type"] == "connected"
    for forbidden in ("https://evil.example.net", "https://example.org", "http://app.example.com"):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, origin=forbidden):
                pass
        assert refused.value.response.status_code == 403
    assert value(service, "tasksync_handshakes_refused_total", reason="origin") == 3


# -- connection limits -----------------------------------------------------------------------


async def test_per_user_limit_refuses_the_newest_connection_with_4029(start_service, tmp_path):
    limits = tmp_path / "limits.yaml"
    write_limits(limits, 1, max_connections_per_user=2)
    service = start_service("--dev", "--limits-file", str(limits))
    async with SyncClient(service.ws, user_id="u") as first, SyncClient(service.ws, user_id="u"):
        async with connect(f"{service.ws}?user_id=u") as third:
            await third.wait_closed()
            assert third.close_code == 4029 and "limit 2" in third.close_reason
        # Another user is not affected, and the first two stay connected.
        async with SyncClient(service.ws, user_id="v"):
            pass
        await publish_http(service, payload("u", title="still served"))
        assert (await next_update(first)).task["title"] == "still served"
    assert value(service, "tasksync_handshakes_refused_total", reason="user_limit") == 1


async def test_per_process_limit_refuses_with_1013_and_turns_readiness_false(start_service, tmp_path):
    limits = tmp_path / "limits.yaml"
    write_limits(limits, 1, max_connections_per_user=2, max_connections_per_process=2)
    service = start_service("--dev", "--limits-file", str(limits))
    async with SyncClient(service.ws, user_id="a"), SyncClient(service.ws, user_id="b"):
        async with httpx.AsyncClient() as http:
            response = await http.get(service.http + "/health/ready")
        assert response.status_code == 503 and response.json()["full"] is True
        async with connect(f"{service.ws}?user_id=c") as refused:
            await refused.wait_closed()
            assert refused.close_code == 1013
    await eventually(lambda: httpx.get(service.http + "/health/ready").status_code == 200, what="ready again")


# -- rate limits -----------------------------------------------------------------------------


async def test_inbound_messages_past_the_burst_close_4029(start_service, tmp_path):
    limits = tmp_path / "limits.yaml"
    write_limits(limits, 1, inbound_messages_per_second=2, inbound_burst=5)
    service = start_service("--dev", "--limits-file", str(limits))
    async with SyncClient(service.ws, user_id="chatty") as client:
        for _ in range(20):
            await client.send(Pong())
        code, reason = await client.wait_closed()
    assert code == 4029 and "too many messages" in reason
    assert value(service, "tasksync_rate_limited_total", direction="inbound") == 1


def test_publish_requests_past_the_burst_per_api_key_get_429(start_service, tmp_path):
    limits = tmp_path / "limits.yaml"
    write_limits(limits, 1, publish_requests_per_second_per_key=1, publish_burst_per_key=3)
    service = start_service("--dev", "--limits-file", str(limits), env={"TASKSYNC_API_KEYS": "one,two"})
    url = service.http + "/v1/events"
    bearer = {"authorization": "Bearer one"}
    statuses = [httpx.post(url, json=payload("u"), headers=bearer).status_code for _ in range(5)]
    assert statuses[:3] == [202, 202, 202] and 429 in statuses[3:]
    limited = httpx.post(url, json=payload("u"), headers=bearer)
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    # Another key has a bucket of its own.
    assert httpx.post(url, json=payload("u"), headers={"authorization": "Bearer two"}).status_code == 202


# -- the limits file -------------------------------------------------------------------------


async def test_limits_file_is_hot_reloaded_and_a_bad_file_keeps_the_previous_limits(start_service, tmp_path):
    limits = tmp_path / "limits.yaml"
    write_limits(limits, 1, max_connections_per_user=5)
    service = start_service("--dev", "--limits-file", str(limits), "--limits-poll-interval", "0.1")
    assert ready(service)["limits_generation"] == 1
    assert value(service, "tasksync_limits_generation") == 1

    write_limits(limits, 2, max_connections_per_user=1)
    await eventually(lambda: ready(service)["limits_generation"] == 2, what="generation 2 in force")
    async with SyncClient(service.ws, user_id="u"), connect(f"{service.ws}?user_id=u") as second:
        await second.wait_closed()
        assert second.close_code == 4029  # the reloaded limit is enforced

    for bad in (b"apiVersion: tasksync.io/limits/v1\ngeneration: 3\nlimits: {max_connections_per_user: 0}\n",
                b"generation: [not, a, number",
                b"apiVersion: tasksync.io/limits/v9\ngeneration: 3\n"):
        rejected_before = value(service, "tasksync_limits_reloads_total", outcome="rejected")
        limits.write_bytes(bad)
        await eventually(
            lambda before=rejected_before: value(service, "tasksync_limits_reloads_total", outcome="rejected")
            == before + 1,
            what="the bad file rejected",
        )
        assert ready(service)["limits_generation"] == 2
    assert "rejected" in service.log() and "keeping the limits in force" in service.log()


async def test_an_unreadable_limits_file_keeps_the_previous_limits(start_service, tmp_path):
    limits = tmp_path / "limits.yaml"
    write_limits(limits, 4)
    service = start_service("--dev", "--limits-file", str(limits), "--limits-poll-interval", "0.1")
    limits.unlink()
    limits.mkdir()  # a directory where the file was: exists, but cannot be read as a file
    await eventually(lambda: value(service, "tasksync_limits_reloads_total", outcome="unreadable") == 1,
                     what="the unreadable file counted")
    assert ready(service)["limits_generation"] == 4


async def test_outbound_flood_is_deferred_and_caught_up_in_order_without_a_reconnect(start_service, tmp_path):
    limits = tmp_path / "limits.yaml"
    write_limits(limits, 1, outbound_events_per_second_per_user=2, outbound_burst_per_user=3)
    service = start_service("--dev", "--limits-file", str(limits))
    async with SyncClient(service.ws, user_id="flood") as client:
        await publish_http(service, [payload("flood", n=n) for n in range(12)])
        received = []
        async with asyncio.timeout(10):
            while len(received) < 12:
                frame = await client.receive()
                assert not isinstance(frame, ResyncRequired)
                if isinstance(frame, TaskUpdate):
                    received.append(frame.seq)
        assert received == list(range(1, 13))
        assert client.connections == 1
    assert value(service, "tasksync_rate_limited_total", direction="outbound") == 9
