"""The embedded broker: offsets, history and dedupe in this process's memory.

The default, for one replica and for development. Its epoch is new at every start, because a
restart forgets every offset: clients that resume across a restart are told to resync.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from ..events import TaskEvent
from ..protocol import encode_task_update
from .base import Broker, Delivery, Position, Replay


@dataclass(slots=True)
class _UserLog:
    seq: int = 0
    # (monotonic seconds, delivery), oldest first
    history: deque[tuple[float, Delivery]] = field(default_factory=deque)


class DedupeWindow:
    """Event ids seen within the last `window` seconds, bounded to `max_ids` entries."""

    # Expired ids are swept at most this often: a sweep per event would cost every publish a
    # look at the oldest entry. Between sweeps an expired id is recognised by its own time.
    SWEEP_INTERVAL = 1.0

    def __init__(self, window: float, max_ids: int) -> None:
        self.window = window
        self.max_ids = max_ids
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._next_sweep = float("-inf")

    def first_sighting(self, event_id: str, now: float) -> bool:
        """Record `event_id`; False if it was already seen inside the window."""
        if now >= self._next_sweep:
            self._sweep(now)
        seen_at = self._seen.get(event_id)
        if seen_at is not None:
            if seen_at >= now - self.window:
                return False
            del self._seen[event_id]
        self._seen[event_id] = now
        if len(self._seen) > self.max_ids:
            self._seen.popitem(last=False)
        return True

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + self.SWEEP_INTERVAL
        horizon = now - self.window
        while self._seen:
            oldest_id, seen_at = next(iter(self._seen.items()))
            if seen_at >= horizon:
                break
            del self._seen[oldest_id]


class MemoryBroker(Broker):
    name = "memory"

    def __init__(
        self,
        *,
        history_size: int = 1000,
        history_ttl: float = 3600.0,
        dedupe_window: float = 600.0,
        dedupe_max_ids: int = 100_000,
        clock=time.monotonic,
    ) -> None:
        super().__init__()
        self.epoch = "m-" + secrets.token_hex(6)
        self.history_size = history_size
        self.history_ttl = history_ttl
        self._clock = clock
        self._logs: dict[str, _UserLog] = {}
        self._dedupe = DedupeWindow(dedupe_window, dedupe_max_ids)

    async def publish(self, event: TaskEvent) -> Delivery | None:
        now = self._clock()
        if not self._dedupe.first_sighting(event.id, now):
            return None
        log = self._logs.get(event.user_id)
        if log is None:
            log = self._logs[event.user_id] = _UserLog()
        log.seq += 1
        delivery = Delivery(
            user_id=event.user_id,
            seq=log.seq,
            epoch=self.epoch,
            frame=encode_task_update(event, log.seq, self.epoch),
            event_id=event.id,
            received_ns=event.received_ns,
        )
        history = log.history
        history.append((now, delivery))
        if len(history) > self.history_size or history[0][0] < now - self.history_ttl:
            self._trim(log, now)
        delivery.listeners = self._emit(delivery)
        return delivery

    async def position(self, user_id: str) -> Position:
        log = self._logs.get(user_id)
        return Position(seq=log.seq if log else 0, epoch=self.epoch)

    async def replay(self, user_id: str, since: int, epoch: str) -> Replay:
        log = self._logs.get(user_id)
        head = Position(seq=log.seq if log else 0, epoch=self.epoch)
        if epoch != self.epoch:
            return Replay(deliveries=[], position=head, resync="epoch_changed")
        if since > head.seq:
            # The client has offsets this epoch never issued: nothing it holds can be trusted.
            return Replay(deliveries=[], position=head, resync="history_gap")
        if log is None or since == head.seq:
            return Replay(deliveries=[], position=head)
        self._trim(log, self._clock())
        oldest = log.history[0][1].seq if log.history else head.seq + 1
        if since + 1 < oldest:
            return Replay(deliveries=[], position=head, resync="history_gap")
        # Offsets are dense, so the first wanted entry sits at a known index.
        start = since + 1 - oldest
        missed = [
            Delivery(d.user_id, d.seq, d.epoch, d.frame, d.event_id)
            for _, d in list(log.history)[start:]
        ]
        return Replay(deliveries=missed, position=head)

    async def ready(self) -> bool:
        return True

    def _trim(self, log: _UserLog, now: float) -> None:
        history = log.history
        while len(history) > self.history_size:
            history.popleft()
        horizon = now - self.history_ttl
        while history and history[0][0] < horizon:
            history.popleft()
