"""What the Redis broker shows on /metrics: the lag from ingest on one replica to receipt on
another, and what waits for Redis."""

from __future__ import annotations

from tasksync.client import SyncClient
from tests.service.test_delivery import next_update, publish_http
from tests.support.events import payload
from tests.support.metrics import samples, value

EVENTS = 5


async def test_the_lag_of_events_from_another_replica_is_observed_and_nothing_waits_at_rest(
    start_service, redis_server
):
    a, b = (start_service("--dev", "--broker", redis_server.url) for _ in range(2))
    async with SyncClient(b.ws, user_id="lou") as lou:
        for n in range(EVENTS):
            await publish_http(a, payload("lou", n=n))
        for _ in range(EVENTS):
            await next_update(lou)
    lag = samples(b)
    assert lag[("tasksync_broker_lag_seconds_count", ())] == EVENTS
    assert lag[("tasksync_broker_lag_seconds_bucket", (("le", "+Inf"),))] == EVENTS
    assert 0 < lag[("tasksync_broker_lag_seconds_sum", ())] < 60
    # a publishes to a channel no socket of a's watches: it received nothing.
    assert value(a, "tasksync_broker_lag_seconds_count") == 0
    assert value(a, "tasksync_broker_waiting") == value(b, "tasksync_broker_waiting") == 0
