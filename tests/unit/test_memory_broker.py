"""The embedded broker's offsets, history, replay and dedupe."""

from __future__ import annotations

import msgspec

from tasksync.broker import Delivery, MemoryBroker
from tasksync.events import TaskEvent
from tests.support.waiting import eventually


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def event(user: str, n: int) -> TaskEvent:
    return TaskEvent(id=f"{user}-{n}", user_id=user, event="task.updated", task={"n": n}, occurred_at="t")


def collecting(broker: MemoryBroker) -> list[Delivery]:
    seen: list[Delivery] = []
    broker.set_sink(seen.append)
    return seen


async def test_offsets_start_at_one_and_grow_per_user():
    broker = MemoryBroker()
    seen = collecting(broker)
    for n in range(3):
        await broker.publish(event("a", n))
    await broker.publish(event("b", 0))
    assert [(d.user_id, d.seq) for d in seen] == [("a", 1), ("a", 2), ("a", 3), ("b", 1)]
    assert all(d.epoch == broker.epoch for d in seen)
    assert (await broker.position("a")).seq == 3
    assert (await broker.position("nobody")).seq == 0


async def test_delivery_frame_is_encoded_once_with_offset_and_epoch():
    broker = MemoryBroker()
    delivery = await broker.publish(event("a", 1))
    frame = msgspec.json.decode(delivery.frame)
    assert (frame["seq"], frame["epoch"], frame["id"]) == (1, broker.epoch, "a-1")


async def test_each_broker_start_has_a_new_epoch():
    assert MemoryBroker().epoch != MemoryBroker().epoch


def replayed(replay) -> list[tuple[int, str, int]]:
    """Each replayed delivery's offset and user, and the offset its frame carries."""
    return [(d.seq, d.user_id, msgspec.json.decode(d.frame)["seq"]) for d in replay.deliveries]


async def test_replay_returns_exactly_what_followed_since():
    broker = MemoryBroker()
    live = collecting(broker)
    for n in range(5):
        await broker.publish(event("a", n))
    replay = await broker.replay("a", 2, broker.epoch)
    assert replay.resync is None
    assert replayed(replay) == [(3, "a", 3), (4, "a", 4), (5, "a", 5)]
    assert [d.frame for d in replay.deliveries] == [d.frame for d in live[2:]]
    assert all(d.epoch == broker.epoch for d in replay.deliveries)
    assert (await broker.replay("a", 5, broker.epoch)).deliveries == []


async def test_replay_beyond_history_or_epoch_asks_for_resync():
    broker = MemoryBroker(history_size=3)
    for n in range(6):
        await broker.publish(event("a", n))
    assert (await broker.replay("a", 2, broker.epoch)).resync == "history_gap"
    assert replayed(await broker.replay("a", 3, broker.epoch)) == [(4, "a", 4), (5, "a", 5), (6, "a", 6)]
    assert replayed(await broker.replay("a", 4, broker.epoch)) == [(5, "a", 5), (6, "a", 6)]
    assert (await broker.replay("a", 3, "m-other")).resync == "epoch_changed"
    assert (await broker.replay("a", 99, broker.epoch)).resync == "history_gap"


async def test_history_expires_by_age():
    clock = Clock()
    broker = MemoryBroker(history_ttl=60, clock=clock)
    await broker.publish(event("a", 1))
    clock.now += 61
    await broker.publish(event("a", 2))
    assert (await broker.replay("a", 0, broker.epoch)).resync == "history_gap"
    assert [d.seq for d in (await broker.replay("a", 1, broker.epoch)).deliveries] == [2]


async def test_history_knows_when_frames_were_stored_to_the_second_and_never_frees_one_early():
    clock = Clock()  # 1000.0
    broker = MemoryBroker(history_ttl=60, clock=clock)
    for n, at in enumerate((1000.0, 1000.5, 1001.2), 1):
        clock.now = at
        await broker.publish(event("a", n))

    async def replay_from(since: int) -> list[int] | str | None:
        replay = await broker.replay("a", since, broker.epoch)
        return replay.resync or [seq for seq, _, _ in replayed(replay)]

    clock.now = 1060.4  # every frame is younger than 60 s
    assert await replay_from(0) == [1, 2, 3]
    clock.now = 1060.9  # 1 and 2 are older, but their second began less than 61 s ago
    assert await replay_from(0) == [1, 2, 3]
    clock.now = 1061.0  # their second is over by 60 s: both go, 3 (stored in the next one) stays
    assert await replay_from(0) == "history_gap"
    assert await replay_from(2) == [3]
    assert broker.held_events == 1
    clock.now = 1062.2
    assert await replay_from(2) == "history_gap"
    assert broker.held_events == 0


async def test_a_second_whose_frames_the_size_limit_freed_does_not_free_later_ones():
    clock = Clock()
    broker = MemoryBroker(history_size=2, history_ttl=60, clock=clock)
    for n, at in enumerate((1000.0, 1000.1, 1030.0, 1030.1), 1):  # the first second's go by size
        clock.now = at
        await broker.publish(event("a", n))
    clock.now = 1089.0  # the first second is past its time; the second's frames are not
    assert replayed(await broker.replay("a", 2, broker.epoch)) == [(3, "a", 3), (4, "a", 4)]


async def test_duplicate_event_ids_are_delivered_once_within_the_window():
    clock = Clock()
    broker = MemoryBroker(dedupe_window=10, clock=clock)
    seen = collecting(broker)
    assert await broker.publish(event("a", 1)) is not None
    assert await broker.publish(event("a", 1)) is None
    clock.now += 11
    assert await broker.publish(event("a", 1)) is not None
    assert [d.seq for d in seen] == [1, 2]


async def test_an_id_past_the_window_is_new_even_before_the_sweep_removes_it():
    clock = Clock()
    broker = MemoryBroker(dedupe_window=10, clock=clock)
    assert await broker.publish(event("a", 1)) is not None
    clock.now += 9.9  # a sweep runs here; "a" is still inside the window and stays
    assert await broker.publish(event("a", 2)) is not None
    clock.now += 0.6  # the next sweep is not due yet, but "a" was seen 10.5 s ago
    assert await broker.publish(event("a", 1)) is not None
    assert await broker.publish(event("a", 2)) is None  # seen 0.6 s ago


async def test_idle_users_history_is_freed_after_its_time_to_live_without_their_activity():
    clock = Clock()
    broker = MemoryBroker(history_ttl=60, clock=clock)
    for n in range(3):
        for user in ("idle-1", "idle-2", "busy"):
            await broker.publish(event(user, n))
    assert broker.held_events == 9
    clock.now += 50
    await broker.publish(event("busy", 3))
    clock.now += 11  # idle-1 and idle-2 last published 61 s ago; busy 11 s ago
    broker.expire(clock())
    assert broker.held_events == 4  # busy's three old events go at its next trim, the fresh one stays
    assert broker._recent == {"busy": None}
    assert broker._logs["idle-1"].held is None
    # The offset counter stays: the next event continues the sequence, and a resume from before
    # the expiry is told to resync rather than handed a reused offset.
    await broker.publish(event("idle-1", 9))
    assert (await broker.position("idle-1")).seq == 4
    assert (await broker.replay("idle-1", 2, broker.epoch)).resync == "history_gap"
    assert [d.seq for d in (await broker.replay("idle-1", 3, broker.epoch)).deliveries] == [4]


async def test_the_running_broker_sweeps_on_its_own():
    broker = MemoryBroker(history_ttl=0.05)
    await broker.start()
    try:
        for user in range(100):
            await broker.publish(event(f"user-{user}", 0))
        assert broker.held_events == 100
        await eventually(lambda: broker.held_events == 0, timeout=10, what="the sweep to free expired history")
    finally:
        await broker.stop()
