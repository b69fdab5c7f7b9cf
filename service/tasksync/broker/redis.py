"""The Redis broker: offsets, history and dedupe in Redis, fan-out over Redis pub/sub.

Data model (one Redis, or Sentinel; not Redis Cluster: the publish script touches a global key):

- `{prefix}:epoch`: the epoch string, created once. If Redis loses its data the key is gone, a
  new epoch is created, and every client is told to resync: on resuming, or on its live socket
  when the first event of the new epoch reaches it (see `_catch_up`).
- `{prefix}:seq:{user}`: the user's last offset (INCR). Never expires, so offsets never repeat
  within an epoch.
- `{prefix}:history:{user}`: a Redis Stream whose entry ids are `<seq>-0`, so a replay is one
  XRANGE from `since+1`. Trimmed to `history_size` entries; expires `history_ttl` after its last
  event; entries older than `history_ttl` are treated as gone.
- `{prefix}:dedupe:{event id}`: SET NX with the dedupe window as TTL.
- channel `{prefix}:user:{user}`: every event, published by the same script that stored it, so
  per-user publish order is offset order. A replica subscribes to the channels of the users it
  holds connections of.

All of a publish happens in one Lua script, so no replica ever sees a half-stored event.

Pub/sub is not durable: a message sent while the listener's connection is down is gone. History
is: whenever a user's channel may have missed something, a catch-up reads it from the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from typing import Any

import msgspec
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from ..events import TaskEvent
from ..protocol import encode_task_update
from .base import Broker, BrokerUnavailable, Delivery, Position, Replay

log = logging.getLogger("tasksync.broker.redis")

# The first wait before the listener reconnects or a failed catch-up is tried again; each
# failure doubles it, up to the broker's `reconnect_max_delay`.
FIRST_RETRY_DELAY = 0.1
# Catch-ups read history this many users at a time: a reconnect with thousands of users watched
# is caught up in a few hundred round trips, with at most this many Redis connections busy.
CATCH_UP_BATCH = 32

# KEYS: epoch, seq, history, dedupe. ARGV: candidate epoch, dedupe ms, history size,
# history ttl ms, event json, now ms, channel.
PUBLISH_SCRIPT = """
if redis.call('SET', KEYS[4], '1', 'NX', 'PX', ARGV[2]) == false then
  return false
end
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  redis.call('SET', KEYS[1], ARGV[1])
  epoch = ARGV[1]
end
local seq = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[3], seq .. '-0', 'e', ARGV[5], 't', ARGV[6], 'p', epoch)
redis.call('PEXPIRE', KEYS[3], ARGV[4])
local listeners = redis.call('PUBLISH', ARGV[7], seq .. ' ' .. epoch .. ' ' .. ARGV[6] .. ' ' .. ARGV[5])
return {seq, epoch, listeners}
"""

# KEYS: epoch, seq, history. ARGV: candidate epoch, first wanted seq.
READ_SCRIPT = """
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  redis.call('SET', KEYS[1], ARGV[1])
  epoch = ARGV[1]
end
local seq = tonumber(redis.call('GET', KEYS[2]) or '0')
local entries = {}
if tonumber(ARGV[2]) > 0 and tonumber(ARGV[2]) <= seq then
  entries = redis.call('XRANGE', KEYS[3], ARGV[2] .. '-0', '+')
end
return {epoch, seq, entries}
"""


class _StoredEvent(msgspec.Struct, frozen=True):
    """What the history stream and the channel carry: the event without its offset."""

    id: str
    user_id: str
    event: str
    task: dict[str, Any]
    occurred_at: str
    source: str
    notification: Any = None


_stored_encoder = msgspec.json.Encoder()
_stored_decoder = msgspec.json.Decoder(_StoredEvent)


def _to_task_event(stored: _StoredEvent) -> TaskEvent:
    return msgspec.convert(msgspec.to_builtins(stored), TaskEvent)


def _fields(entry: list[Any]) -> dict[bytes, bytes]:
    """A stream entry as a Lua script returns it, [id, [k1, v1, k2, v2, ...]], as a dict."""
    flat = entry[1]
    return dict(zip(flat[::2], flat[1::2], strict=True))


class RedisBroker(Broker):
    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        history_size: int = 1000,
        history_ttl: float = 3600.0,
        dedupe_window: float = 600.0,
        prefix: str = "tasksync",
        reconnect_max_delay: float = 5.0,
    ) -> None:
        super().__init__()
        self.url = url
        self.history_size = history_size
        self.history_ttl = history_ttl
        self.dedupe_window = dedupe_window
        self.prefix = prefix
        self.reconnect_max_delay = reconnect_max_delay
        self._redis = aioredis.Redis.from_url(
            url, socket_connect_timeout=1.0, socket_timeout=2.0, health_check_interval=5
        )
        self._publish = self._redis.register_script(PUBLISH_SCRIPT)
        self._read = self._redis.register_script(READ_SCRIPT)
        # Users this process wants events of; the listener keeps the subscriptions equal to it.
        self._wanted: set[str] = set()
        self._subscribed: set[str] = set()
        self._confirmations: dict[str, asyncio.Future[None]] = {}
        # Per user, the newest (epoch, seq) handed to the hub: later messages continue from here.
        self._delivered: dict[str, tuple[str, int]] = {}
        # Users whose channel may have missed events, with the loop time at which their catch-up
        # from history is next due. A user leaves only when a catch-up succeeds or it is no
        # longer watched, so no gap is forgotten however often Redis refuses the read.
        self._catch_ups_due: dict[str, float] = {}
        # Users whose last catch-up failed: the wait after their next failure.
        self._catch_up_backoff: dict[str, float] = {}
        self._catch_ups_changed = asyncio.Event()
        self._catcher: asyncio.Task[None] | None = None
        self._pubsub: Any = None
        self._listener: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self._sync_lock = asyncio.Lock()

    # -- keys ------------------------------------------------------------------------------

    def _keys(self, user_id: str) -> list[str]:
        p = self.prefix
        return [f"{p}:epoch", f"{p}:seq:{user_id}", f"{p}:history:{user_id}"]

    def _channel(self, user_id: str) -> str:
        return f"{self.prefix}:user:{user_id}"

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._listener = asyncio.create_task(self._listen_forever())
        self._catcher = asyncio.create_task(self._catch_up_forever())

    async def stop(self) -> None:
        for task in (self._listener, self._catcher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        with contextlib.suppress(RedisError, OSError):
            await self._redis.aclose()

    async def ready(self) -> bool:
        if not self._listening.is_set():
            return False
        try:
            async with asyncio.timeout(1.0):
                return bool(await self._redis.ping())
        except (RedisError, OSError, TimeoutError):
            return False

    # -- publish and read ------------------------------------------------------------------

    async def publish(self, event: TaskEvent) -> Delivery | None:
        stored = _stored_encoder.encode(
            _StoredEvent(event.id, event.user_id, event.event, event.task, event.occurred_at, event.source, event.notification)
        ).decode()
        keys = [*self._keys(event.user_id), f"{self.prefix}:dedupe:{event.id}"]
        args = [
            "r-" + secrets.token_hex(6),
            int(self.dedupe_window * 1000),
            self.history_size,
            int(self.history_ttl * 1000),
            stored,
            int(time.time() * 1000),
            self._channel(event.user_id),
        ]
        try:
            result = await self._publish(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"redis: {exc}") from exc
        if result is None:
            return None
        seq, epoch, listeners = int(result[0]), result[1].decode(), int(result[2])
        # The local hub gets this event through its channel like every other replica does;
        # `listeners` counts the replicas subscribed to the user's channel.
        return Delivery(event.user_id, seq, epoch, encode_task_update(event, seq, epoch), event.id, listeners=listeners)

    async def _read_state(self, user_id: str, first_wanted: int) -> tuple[str, int, list[Any]]:
        try:
            epoch, seq, entries = await self._read(keys=self._keys(user_id), args=["r-" + secrets.token_hex(6), first_wanted])
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"redis: {exc}") from exc
        return epoch.decode(), int(seq), entries

    async def position(self, user_id: str) -> Position:
        epoch, seq, _ = await self._read_state(user_id, 0)
        return Position(seq=seq, epoch=epoch)

    async def replay(self, user_id: str, since: int, epoch: str) -> Replay:
        current_epoch, head, entries = await self._read_state(user_id, since + 1)
        position = Position(seq=head, epoch=current_epoch)
        if epoch != current_epoch:
            return Replay(deliveries=[], position=position, resync="epoch_changed")
        if since > head:
            return Replay(deliveries=[], position=position, resync="history_gap")
        if since == head:
            return Replay(deliveries=[], position=position)
        deliveries = self._entries_to_deliveries(user_id, entries)
        horizon_ms = (time.time() - self.history_ttl) * 1000
        if not deliveries or deliveries[0].seq != since + 1 or self._oldest_ms(entries) < horizon_ms:
            return Replay(deliveries=[], position=position, resync="history_gap")
        return Replay(deliveries=deliveries, position=position)

    @staticmethod
    def _oldest_ms(entries: list[Any]) -> float:
        return float(_fields(entries[0])[b"t"]) if entries else 0.0

    @staticmethod
    def _entries_to_deliveries(user_id: str, entries: list[Any]) -> list[Delivery]:
        deliveries = []
        for entry in entries:
            fields = _fields(entry)
            seq = int(entry[0].split(b"-")[0])
            epoch = fields[b"p"].decode()
            event = _to_task_event(_stored_decoder.decode(fields[b"e"]))
            deliveries.append(Delivery(user_id, seq, epoch, encode_task_update(event, seq, epoch), event.id))
        return deliveries

    # -- fan-out ---------------------------------------------------------------------------

    async def watch(self, user_id: str) -> None:
        self._wanted.add(user_id)
        # Normally the listener is up and the subscription is confirmed before this returns.
        # While it is (re)connecting, wait a little for it, outside the lock.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await self._listening.wait()
        await self._sync_subscription(user_id)

    async def unwatch(self, user_id: str) -> None:
        self._wanted.discard(user_id)
        await self._sync_subscription(user_id)

    async def _sync_subscription(self, user_id: str) -> None:
        """Make the subscription match `_wanted`, whatever order watch/unwatch calls came in.

        Before a watch returns, the point from which this process owes the user's connections
        every event is recorded in `_delivered`: at the confirmed subscription, or (with the
        listener down) at the head now, which the listener catches up from once its channel is
        live. Either way the session's history read that follows cannot miss an event.
        """
        async with self._sync_lock:
            wanted = user_id in self._wanted
            if wanted == (user_id in self._subscribed):
                return
            channel = self._channel(user_id)
            if not wanted:
                self._subscribed.discard(user_id)
                self._delivered.pop(user_id, None)
                self._catch_ups_due.pop(user_id, None)
                self._catch_up_backoff.pop(user_id, None)
                if self._listening.is_set():
                    with contextlib.suppress(RedisError, OSError):
                        await self._pubsub.unsubscribe(channel)
                return
            self._subscribed.add(user_id)
            if not self._listening.is_set():
                # Only the listener touches a connection it is still setting up (redis-py would
                # open a second one under it); it subscribes every user in `_subscribed`.
                with contextlib.suppress(BrokerUnavailable):
                    epoch, seq, _ = await self._read_state(user_id, 0)
                    self._delivered.setdefault(user_id, (epoch, seq))
                return
            confirmed = asyncio.get_running_loop().create_future()
            self._confirmations[channel] = confirmed
            try:
                await self._pubsub.subscribe(channel)
                async with asyncio.timeout(5):
                    await confirmed
                epoch, seq, _ = await self._read_state(user_id, 0)
                self._delivered.setdefault(user_id, (epoch, seq))
            except (RedisError, OSError, TimeoutError, BrokerUnavailable):
                log.warning("subscription for %s not confirmed; it is retried on reconnect", user_id)
            finally:
                self._confirmations.pop(channel, None)

    async def _listen_forever(self) -> None:
        delay = FIRST_RETRY_DELAY
        while True:
            try:
                await self._listen_once()
                delay = FIRST_RETRY_DELAY
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("redis pub/sub connection lost (%s); reconnecting in %.1fs", exc, delay)
            finally:
                self._listening.clear()
                if self._pubsub is not None:
                    with contextlib.suppress(RedisError, OSError):
                        await self._pubsub.aclose()
                    self._pubsub = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.reconnect_max_delay)

    async def _listen_once(self) -> None:
        pubsub = self._redis.pubsub()
        self._pubsub = pubsub
        snapshot = set(self._subscribed)
        # The control channel comes last: Redis confirms subscriptions in order, so once it is
        # confirmed every channel of the snapshot is live. It also keeps the connection
        # subscribed (and readable) while no user is watched.
        control = f"{self.prefix}:control"
        await pubsub.subscribe(*(self._channel(u) for u in snapshot), control)
        async for message in pubsub.listen():
            kind = message["type"]
            if kind == "subscribe":
                channel = message["channel"].decode()
                if channel == control:
                    # Users watched while this connection was being set up.
                    if late := self._subscribed - snapshot:
                        await pubsub.subscribe(*(self._channel(u) for u in late))
                    self._listening.set()
                elif (confirmed := self._confirmations.get(channel)) is not None and not confirmed.done():
                    confirmed.set_result(None)
                else:
                    # The channel was down, so pub/sub may have dropped some of its events.
                    self._owe_catch_up(channel.removeprefix(f"{self.prefix}:user:"))
            elif kind == "message":
                await self._on_message(message["data"])

    async def _on_message(self, data: bytes) -> None:
        seq_text, epoch_b, sent_ms, stored = data.split(b" ", 3)
        seq, epoch = int(seq_text), epoch_b.decode()
        event = _to_task_event(_stored_decoder.decode(stored))
        user_id = event.user_id
        if user_id not in self._subscribed:
            return
        known = self._delivered.get(user_id)
        if known is not None and (epoch, seq) != (known[0], known[1] + 1):
            if epoch != known[0] or seq > known[1]:
                # A gap, or an epoch not yet read from Redis. History already holds this event
                # (the script stores before it publishes) and whatever the gap hides, so the
                # catch-up, which reads after this moment, delivers it in order.
                self._owe_catch_up(user_id)
            return  # otherwise already delivered by a catch-up
        # Convert the publisher's wall-clock ingest time to this process's monotonic clock, so
        # latency is measured from ingest on whichever replica it happened.
        received_ns = time.monotonic_ns() - max(0, time.time_ns() - int(sent_ms) * 1_000_000)
        self._delivered[user_id] = (epoch, seq)
        self._emit(Delivery(user_id, seq, epoch, encode_task_update(event, seq, epoch), event.id, received_ns))

    # -- catch-ups -------------------------------------------------------------------------

    def _owe_catch_up(self, user_id: str) -> None:
        """Schedule a catch-up of the user from history: now, unless one is already waiting out
        a backoff (it reads everything missed so far when it runs)."""
        if user_id not in self._catch_ups_due:
            self._catch_ups_due[user_id] = 0.0
            self._catch_ups_changed.set()

    async def _catch_up_forever(self) -> None:
        """Run due catch-ups a batch at a time, off the listener (which goes on delivering every
        other user meanwhile). Each user's catch-up is independent: one that fails is tried
        again after its own backoff, and the others go on."""
        loop = asyncio.get_running_loop()
        while True:
            self._catch_ups_changed.clear()
            now = loop.time()
            batch = list(itertools.islice((u for u, due in self._catch_ups_due.items() if due <= now), CATCH_UP_BATCH))
            if not batch:
                next_due = min(self._catch_ups_due.values(), default=None)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(next_due):
                        await self._catch_ups_changed.wait()
                continue
            for user_id in batch:
                # Taken off before the read: a message that needs a catch-up while it runs
                # schedules another, which then reads what this one may have missed.
                del self._catch_ups_due[user_id]
            failures = [f for f in await asyncio.gather(*(self._try_catch_up(u) for u in batch)) if f is not None]
            if failures:
                log.warning(
                    "catch-up from history failed for %d of %d users (%s); each is retried after its backoff",
                    len(failures), len(batch), failures[0],
                )

    async def _try_catch_up(self, user_id: str) -> Exception | None:
        """Catch the user up; on failure schedule the next try and return the error."""
        try:
            await self._catch_up(user_id)
        except Exception as error:  # whatever failed, dropping the catch-up would lose events
            if user_id in self._subscribed:
                backoff = self._catch_up_backoff.get(user_id, FIRST_RETRY_DELAY)
                self._catch_up_backoff[user_id] = min(backoff * 2, self.reconnect_max_delay)
                self._catch_ups_due[user_id] = asyncio.get_running_loop().time() + backoff
            return error
        self._catch_up_backoff.pop(user_id, None)
        return None

    async def _catch_up(self, user_id: str) -> None:
        """Deliver from history every event after the newest one the hub was given. When Redis
        has another epoch (it lost its data), the user's stream starts over: every event of the
        new epoch still held, from the first, and each of the user's connections announces the
        epoch change to its client with `resync_required` before the first of them (see
        `Connection.enqueue`). Raises BrokerUnavailable."""
        known = self._delivered.get(user_id)
        if known is None:
            return
        epoch, after = known
        current_epoch, _, entries = await self._read_state(user_id, after + 1)
        if current_epoch != epoch:
            _, _, entries = await self._read_state(user_id, 1)
        for delivery in self._entries_to_deliveries(user_id, entries):
            # Live messages may have moved the user on while history was read, or the user may
            # be unwatched by now: hand on only what follows the newest delivered.
            known = self._delivered.get(user_id)
            if known is None:
                return
            if delivery.epoch == known[0] and delivery.seq <= known[1]:
                continue
            self._delivered[user_id] = (delivery.epoch, delivery.seq)
            self._emit(delivery)
