"""The broker interface: the one place that knows about offsets, history and other replicas.

Like Litestar's channels backends, a broker is small and interchangeable. The embedded
`MemoryBroker` serves one process; a Redis-backed broker implements the same interface for
many replicas. The hub never talks to another replica: it hands events to the broker and
receives `Delivery` values for the users it holds connections of.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import msgspec

from ..events import TaskEvent
from ..protocol import ResyncReason


class BrokerUnavailable(Exception):
    """The broker cannot take or serve events right now; the caller should retry later."""


class Delivery(msgspec.Struct, gc=False):
    """One event at its offset, with the frame already encoded for every socket.

    Untracked by the garbage collector (`gc=False`: its fields are strings and numbers, so it
    can never be part of a cycle). Histories hold hundreds of thousands of these; tracked,
    every full collection would walk them all."""

    user_id: str
    seq: int
    epoch: str
    frame: str
    # The event's id where a broker needs it to recognise the event again (the Redis broker,
    # at the seam between a resume's history and its pub/sub); None where nothing does (the
    # embedded broker's resumes, whose history holds only frames).
    event_id: str | None
    # Monotonic ingest instant in this process, or None when the event came from elsewhere
    # (another replica, history): latency is only measured where it can be measured honestly.
    received_ns: int | None = None
    # Sockets that still have to write this delivery; the last write observes latency.
    pending_writes: int = 0
    # At publish: how many listeners (connections here, or replicas for Redis) it reached;
    # 0 means the user is connected nowhere, which is what offline notifiers act on.
    listeners: int = 0


@dataclass(frozen=True, slots=True)
class Position:
    """The newest offset a broker holds for a user, in its epoch (0 before any event)."""

    seq: int
    epoch: str


@dataclass(frozen=True, slots=True)
class Replay:
    """The answer to "what followed `since`?": the missed deliveries, or why they cannot be had."""

    deliveries: list[Delivery]
    position: Position
    resync: ResyncReason | None = None


def _ignore(_: float) -> None:
    pass


# Queues a delivery on the local connections of its user; returns how many there were.
DeliverySink = Callable[[Delivery], int]


class Broker(abc.ABC):
    """Contract every broker keeps.

    - `publish` assigns the user's next offset, stores the event in the user's bounded history
      and hands a `Delivery` to the sink of every process holding that user's connections. It
      returns None for an event id already seen for that user within the dedupe window
      (nothing delivered). It raises BrokerUnavailable when the event could not be stored: the
      caller must not acknowledge it.
    - `publish_many` publishes a batch, in order, and answers each event as `publish` would,
      with the BrokerUnavailable in place of the raise: events after one that failed may still
      have been stored (a broker that pipelines sends them all at once).
    - Offsets per user start at 1 and grow by one per event within an epoch; a new epoch means
      offsets restarted and older offsets mean nothing.
    - `replay` returns the events after `since` in order, or a resync reason when history no
      longer holds all of them or the epoch differs.
    - `watch`/`unwatch` tell the broker this process holds (or no longer holds) connections of
      a user, so brokers that fan out across replicas only send what is wanted.
    """

    name: str
    # Events this process holds in memory for resume (0 where history lives elsewhere, as
    # with Redis): exported as a gauge, since history is most of an idle process's memory.
    held_events: int = 0

    def __init__(self) -> None:
        self._sink: DeliverySink | None = None
        # Told, in seconds, how long each event took from ingest on the replica that published
        # it to this process (brokers that carry events between replicas).
        self.observe_lag: Callable[[float], None] = _ignore

    @property
    def waiting(self) -> int:
        """Operations waiting for the broker's backing store (0 where there is none)."""
        return 0

    def set_sink(self, sink: DeliverySink) -> None:
        self._sink = sink

    async def start(self) -> None:  # noqa: B027 (optional: a broker may have nothing to do)
        """Connect and get ready; called once before the first request."""

    async def stop(self) -> None:  # noqa: B027 (optional: a broker may have nothing to do)
        """Release connections; called once at shutdown."""

    @abc.abstractmethod
    async def publish(self, event: TaskEvent) -> Delivery | None: ...

    async def publish_many(self, events: Sequence[TaskEvent]) -> list[Delivery | BrokerUnavailable | None]:
        """Each event's outcome: its Delivery, None (a duplicate), or why it was not stored."""
        outcomes: list[Delivery | BrokerUnavailable | None] = []
        for event in events:
            try:
                outcomes.append(await self.publish(event))
            except BrokerUnavailable as error:
                outcomes.append(error)
        return outcomes

    @abc.abstractmethod
    async def position(self, user_id: str) -> Position: ...

    @abc.abstractmethod
    async def replay(self, user_id: str, since: int, epoch: str) -> Replay: ...

    async def watch(self, user_id: str) -> None:  # noqa: B027 (optional: a broker may have nothing to do)
        """This process now holds a connection of `user_id`."""

    async def unwatch(self, user_id: str) -> None:  # noqa: B027 (optional: a broker may have nothing to do)
        """This process holds no connection of `user_id` any more."""

    @abc.abstractmethod
    async def ready(self) -> bool:
        """Whether publish and replay work right now (readiness)."""

    def _emit(self, delivery: Delivery) -> int:
        return self._sink(delivery) if self._sink is not None else 0
