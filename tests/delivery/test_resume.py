"""Resume after reconnect, over real sockets, on both brokers."""

from __future__ import annotations

from tasksync.client import SyncClient
from tasksync.protocol import ResyncRequired, TaskUpdate
from tests.service.test_delivery import next_update, publish_http
from tests.support.events import payload
from tests.support.metrics import value

K = 7


async def test_reconnect_with_seq_gets_exactly_the_missed_events_in_order(broker_service):
    service = broker_service()
    client = SyncClient(service.ws, user_id="yan")
    await client.connect()
    await publish_http(service, payload("yan", title="before"))
    assert (await next_update(client)).seq == 1
    await client.close()

    await publish_http(service, [payload("yan", title=f"missed {n}") for n in range(K)])
    connected = await client.connect()  # resumes from last_seq=1 in the handshake
    assert connected.resumed is True
    replayed = [await next_update(client) for _ in range(K)]
    assert [u.seq for u in replayed] == list(range(2, K + 2))
    assert [u.task["title"] for u in replayed] == [f"missed {n}" for n in range(K)]

    # Live events continue right after the replay, with no gap and no repeat.
    await publish_http(service, payload("yan", title="live"))
    live = await next_update(client)
    assert (live.seq, live.task["title"]) == (K + 2, "live")
    await client.close()
    assert value(service, "tasksync_resume_outcomes_total", outcome="recovered") == 1


async def test_history_overflow_gives_resync_required_then_live_events(broker_service):
    service = broker_service("--history-size", "3")
    client = SyncClient(service.ws, user_id="zed")
    await client.connect()
    await client.close()  # last_seq = 0
    await publish_http(service, [payload("zed") for _ in range(5)])
    connected = await client.connect()
    assert connected.resumed is False
    frame = await client.receive()
    assert isinstance(frame, ResyncRequired)
    assert (frame.reason, frame.seq) == ("history_gap", 5)
    await publish_http(service, payload("zed", title="live"))
    live = await next_update(client)
    assert isinstance(live, TaskUpdate) and live.seq == 6
    await client.close()
    assert value(service, "tasksync_resume_outcomes_total", outcome="resync") == 1


async def test_unknown_epoch_gives_resync_required(broker_service):
    service = broker_service()
    client = SyncClient(service.ws, user_id="abe")
    client.last_seq, client.epoch = 3, "m-from-another-life"
    await client.connect()
    frame = await client.receive()
    assert isinstance(frame, ResyncRequired) and frame.reason == "epoch_changed"
    await client.close()
