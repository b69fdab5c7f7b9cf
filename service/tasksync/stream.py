"""Opening, resuming and catching up a connection's event stream: the replay/live seam.

The connection is registered with the hub in replay mode (live deliveries held back), history is
read, the replay is queued, and the held deliveries newer than the replay are released. Nothing
is awaited between the last two steps, so no event is lost or sent twice at the seam.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .broker import Delivery
from .hub import Connection
from .protocol import Connected, ResyncRequired, encode

if TYPE_CHECKING:
    from .service import Service


class ReplayOverBudget(Exception):
    """A client's resume would replay more events than its user's replay budget allows now."""


async def open_stream(
    conn: Connection, service: Service, resume: tuple[int, str] | None, *, first: bool, client_resume: bool = True
) -> None:
    """Queue `connected` (first time only), then any resync notice and the replay, then release
    what was held. `client_resume` is False for the server's own catch-ups, which are neither
    counted as client resumes nor charged to the replay budget. Raises ReplayOverBudget (and
    BrokerUnavailable)."""
    broker = service.broker
    replayed: list[Delivery] = []
    resync = None
    if resume is None:
        position = await broker.position(conn.user_id)
    else:
        replay = await broker.replay(conn.user_id, *resume)
        position, resync, replayed = replay.position, replay.resync, replay.deliveries
        # Charged by what it replays, before anything is queued: one frame asks for up to a
        # whole history, and an over-budget resume sends none of it.
        if client_resume and not service.admit_replay(conn.user_id, len(replayed)):
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
                    heartbeat_interval=service.settings.heartbeat_interval,
                    resumed=resume is not None and resync is None,
                )
            )
        )
    if resume is not None and client_resume:
        service.metrics.resume_outcomes.labels("resync" if resync else "recovered").inc()
    if resync is not None:
        conn.offer(encode(ResyncRequired(reason=resync, seq=position.seq, epoch=position.epoch)))
    replayed_up_to = replayed[-1].seq if replayed else position.seq
    ok = all(conn.offer(d) for d in replayed)
    if not (conn.end_replay(replayed_up_to) and ok):
        service.hub.close_slow_consumer(conn)
