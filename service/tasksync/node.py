"""The node: this process's part in delivery. It holds the hub (live connections) and the
broker (offsets, history, other replicas), registers connections with both, and opens, resumes
and catches up each connection's stream: the replay/live seam.

Opening a stream: the connection is registered with the hub replaying (live deliveries held
back), history is read, the replay is queued, and the held deliveries newer than the replay are
released. Nothing is awaited between the last two steps, so no event is lost or sent twice at
the seam.

The node knows nothing of settings files, plugins or HTTP: the service (service.py) builds it
and gives it what it needs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .background import BackgroundTasks
from .broker import Broker, BrokerUnavailable, Delivery
from .connection import SLOW_CONSUMER, CloseRequest, Connection
from .hub import Hub
from .metrics import Metrics
from .protocol import CLOSE_TRY_AGAIN_LATER, Connected, ResyncRequired, encode
from .ratelimit import BucketsByKey

# Asked of a connection whose stream cannot open or catch up without the broker's offsets: the
# client comes back with backoff and resumes, losing nothing.
BROKER_UNAVAILABLE = CloseRequest(CLOSE_TRY_AGAIN_LATER, "broker unavailable; try again later", "broker_unavailable")


class ReplayOverBudget(Exception):
    """A client's resume would replay more events than its user's replay budget allows now."""


class Node:
    def __init__(
        self,
        broker: Broker,
        metrics: Metrics,
        *,
        outbound: BucketsByKey,
        admit_replay: Callable[[str, int], bool],
        heartbeat_interval: float,
        send_timeout: float,
    ) -> None:
        self.broker = broker
        self.metrics = metrics
        self.hub = Hub(metrics, outbound, on_deferred=self._schedule_catch_up)
        # Charges a client's resume to its user's replay budget: True if it may replay that many
        # events now.
        self.admit_replay = admit_replay
        self.heartbeat_interval = heartbeat_interval
        self.send_timeout = send_timeout
        self.broker.set_sink(self.hub.deliver)
        self._background = BackgroundTasks()
        # Watches in flight, by user. Until a user's watch returns, the broker does not owe this
        # process the user's events: a second socket of the user that opened its stream meanwhile
        # would start at a head the watch may not cover, and miss what came between.
        self._watches: dict[str, asyncio.Future[None]] = {}
        # Set when the process starts draining to exit: its subscriptions end with it, and one
        # subscription round per departing user would only hold the drain up.
        self.draining = False

    async def start(self) -> None:
        await self.broker.start()
        self._background.spawn(self.hub.run_heartbeat(self.heartbeat_interval))
        self._background.spawn(self.hub.run_stall_watch(self.send_timeout))

    async def stop(self) -> None:
        await self._background.cancel_all()
        await self.broker.stop()

    async def register(self, conn: Connection) -> None:
        """Add a connection to the hub; the broker hears of its user's first one here. Returns
        once the broker watches the user, also for a connection that did not start the watch."""
        user_id = conn.user_id
        watch: asyncio.Future[None] | None
        if self.hub.add(conn):
            watch = asyncio.ensure_future(self.broker.watch(user_id))
            self._watches[user_id] = watch
            watch.add_done_callback(lambda done: self._watch_done(user_id, done))
        elif (watch := self._watches.get(user_id)) is None:
            return
        # Shielded: a session that goes away during its handshake must not cancel the watch that
        # its user's other sockets wait for.
        await asyncio.shield(watch)

    def _watch_done(self, user_id: str, watch: asyncio.Future[None]) -> None:
        if self._watches.get(user_id) is watch:
            del self._watches[user_id]
        if not watch.cancelled():
            # Retrieved here too, in case every socket that waited for it has gone away.
            watch.exception()

    async def unregister(self, conn: Connection) -> None:
        if self.hub.remove(conn) and not self.draining:
            await self.broker.unwatch(conn.user_id)

    async def open_stream(
        self, conn: Connection, resume: tuple[int, str] | None, *, first: bool, client_resume: bool = True
    ) -> None:
        """Queue `connected` (first time only), then any resync notice and the replay, then
        release what was held. `client_resume` is False for the server's own catch-ups, which
        are neither counted as client resumes nor charged to the replay budget. Raises
        ReplayOverBudget (and BrokerUnavailable)."""
        replayed: list[Delivery] = []
        resync = None
        if resume is None:
            position = await self.broker.position(conn.user_id)
        else:
            replay = await self.broker.replay(conn.user_id, *resume)
            position, resync, replayed = replay.position, replay.resync, replay.deliveries
            # Charged by what it replays, before anything is queued: one frame asks for up to a
            # whole history, and an over-budget resume sends none of it.
            if client_resume and not self.admit_replay(conn.user_id, len(replayed)):
                raise ReplayOverBudget
        conn.epoch = position.epoch
        # Where this stream now stands for the client: the point it resumed from, or the head
        # when it starts fresh or must resync. The writer moves it on as it takes deliveries.
        conn.last_taken_seq = position.seq if resume is None or resync is not None else resume[0]
        if first:
            conn.offer(
                encode(
                    Connected(
                        user_id=conn.user_id,
                        connection_id=conn.id,
                        seq=position.seq,
                        epoch=position.epoch,
                        heartbeat_interval=self.heartbeat_interval,
                        resumed=resume is not None and resync is None,
                    )
                )
            )
        if resume is not None and client_resume:
            self.metrics.resume_outcomes.labels("resync" if resync else "recovered").inc()
        if resync is not None:
            conn.offer(encode(ResyncRequired(reason=resync, seq=position.seq, epoch=position.epoch)))
        replayed_up_to = replayed[-1].seq if replayed else position.seq
        ok = all(conn.offer(d) for d in replayed)
        if not (conn.end_replay(replayed_up_to) and ok):
            conn.request_close(SLOW_CONSUMER)

    def _schedule_catch_up(self, user_id: str, delay: float) -> None:
        asyncio.get_running_loop().call_later(delay, lambda: self._background.spawn(self._catch_up(user_id)))

    async def _catch_up(self, user_id: str) -> None:
        """Deliver what the outbound rate limit deferred, from history, as one batch per
        connection. Every connection enters replay mode before the first await, so a live
        event arriving meanwhile waits behind the catch-up instead of overtaking it."""
        conns = self.hub.connections_of(user_id)
        self.hub.deferred.discard(user_id)
        for conn in conns:
            conn.begin_replay()
        for conn in conns:
            try:
                await self.open_stream(conn, (conn.last_taken_seq, conn.epoch), first=False, client_resume=False)
            except BrokerUnavailable:
                conn.request_close(BROKER_UNAVAILABLE)
