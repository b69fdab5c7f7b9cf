"""The Redis broker: offsets, history and dedupe in Redis, fan-out over Redis pub/sub.

Data model (one Redis, or Sentinel; not Redis Cluster: the publish script touches a global key):

- `{prefix}:epoch`: the epoch string. If Redis loses all its data the key is gone and a new
  epoch is created; if it loses only its last writes (see "Lost writes" below) a replica replaces
  it. Either way every client is told to resync: on resuming, or on its live socket (see
  `_catch_up`).
- `{prefix}:seq:{user}`: the user's last offset (INCR). Never expires, so offsets never repeat
  within an epoch unless Redis loses writes, which changes the epoch.
- `{prefix}:writes`: how many events were ever stored (INCR), so a replica can tell that Redis
  went back to before a write it saw.
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

Lost writes. Redis can come back with only part of its data (`appendfsync everysec` and a
crash, a failover to a replica that lagged): the epoch key survives but offsets go back, and new
events would reuse offsets clients already hold. Two checks turn that into an epoch change, so
no client skips the reused offsets as duplicates:
- every script takes the (epoch, `writes`) this replica last saw and, if Redis is still in that
  epoch with fewer writes, replaces the epoch before it does anything else. Redis loses a suffix
  of its writes, so this catches any loss of a write this replica stored or read after;
- a catch-up checks that history still holds, at the offset of the newest event the hub was
  given for the user, that same event (`_Mark`); if the offset is gone or holds another event,
  the epoch is replaced with a compare-and-set, so replicas that find it together agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from typing import Any, NamedTuple

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

# Sets `epoch` to the epoch in effect: the stored one, unless Redis has none (it lost its data) or
# has fewer writes in the epoch the caller last saw than the caller saw (it lost its last ones);
# then the candidate. KEYS[1] is the epoch key; `writes` must be set, and `seen_epoch`,
# `seen_writes` and `candidate` hold the caller's ARGV.
ENSURE_EPOCH = """
local epoch = redis.call('GET', KEYS[1])
if not epoch or (epoch == seen_epoch and writes < tonumber(seen_writes)) then
  redis.call('SET', KEYS[1], candidate)
  epoch = candidate
end
"""

# KEYS: epoch, seq, history, dedupe, writes. ARGV: candidate epoch, dedupe ms, history size,
# history ttl ms, event json, now ms, channel, epoch seen, writes seen.
PUBLISH_SCRIPT = """
if redis.call('SET', KEYS[4], '1', 'NX', 'PX', ARGV[2]) == false then
  return false
end
local candidate, seen_epoch, seen_writes = ARGV[1], ARGV[8], ARGV[9]
local writes = tonumber(redis.call('GET', KEYS[5]) or '0')
""" + ENSURE_EPOCH + """
writes = redis.call('INCR', KEYS[5])
local seq = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[3], seq .. '-0', 'e', ARGV[5], 't', ARGV[6], 'p', epoch)
redis.call('PEXPIRE', KEYS[3], ARGV[4])
local listeners = redis.call('PUBLISH', ARGV[7], seq .. ' ' .. epoch .. ' ' .. ARGV[6] .. ' ' .. ARGV[5])
return {seq, epoch, listeners, writes}
"""

# KEYS: epoch, seq, history, writes. ARGV: candidate epoch, first wanted seq (0: the newest
# entry only), epoch seen, writes seen.
READ_SCRIPT = """
local candidate, seen_epoch, seen_writes = ARGV[1], ARGV[3], ARGV[4]
local writes = tonumber(redis.call('GET', KEYS[4]) or '0')
""" + ENSURE_EPOCH + """
local seq = tonumber(redis.call('GET', KEYS[2]) or '0')
local first = tonumber(ARGV[2])
if first == 0 then
  first = seq
end
local entries = {}
if first > 0 and first <= seq then
  entries = redis.call('XRANGE', KEYS[3], first .. '-0', '+')
end
return {epoch, seq, entries, writes}
"""

# KEYS: epoch. ARGV: the epoch found to have lost writes, its replacement. Returns the epoch in
# effect: the replacement, or the one another replica (or an empty Redis) put there first.
REPLACE_EPOCH_SCRIPT = """
local epoch = redis.call('GET', KEYS[1])
if not epoch or epoch == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return ARGV[2]
end
return epoch
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
    op_id: str | None = None


class _StoredId(msgspec.Struct, frozen=True):
    """Only the id of a stored event: what a catch-up compares with its mark."""

    id: str


_stored_encoder = msgspec.json.Encoder()
_stored_decoder = msgspec.json.Decoder(_StoredEvent)
_stored_id_decoder = msgspec.json.Decoder(_StoredId)


class _Mark(NamedTuple):
    """The newest event this replica handed to the hub for a user (or the head when it began
    watching): later events continue from it, and a catch-up checks that Redis still holds it."""

    epoch: str
    seq: int
    # None when the offset had no event left in history (none yet, or expired).
    event_id: str | None


class UndecodableMessage(Exception):
    """A message on a user's channel that is not a TaskSync event of this version."""


def _to_task_event(stored: _StoredEvent) -> TaskEvent:
    return msgspec.convert(msgspec.to_builtins(stored), TaskEvent)


def _decode_message(data: bytes) -> tuple[int, str, int, TaskEvent]:
    """A channel message, `<seq> <epoch> <sent ms> <event json>`, as (seq, epoch, sent ms,
    event). Raises UndecodableMessage."""
    try:
        seq_text, epoch, sent_ms, stored = data.split(b" ", 3)
        return int(seq_text), epoch.decode(), int(sent_ms), _to_task_event(_stored_decoder.decode(stored))
    except (ValueError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise UndecodableMessage(str(exc)) from exc


def _fields(entry: list[Any]) -> dict[bytes, bytes]:
    """A stream entry as a Lua script returns it, [id, [k1, v1, k2, v2, ...]], as a dict."""
    flat = entry[1]
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _entry_seq(entry: list[Any]) -> int:
    return int(entry[0].split(b"-")[0])


def _entry_event_id(entry: list[Any]) -> str:
    return _stored_id_decoder.decode(_fields(entry)[b"e"]).id


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
        self._replace_epoch = self._redis.register_script(REPLACE_EPOCH_SCRIPT)
        # The epoch and the most `writes` this replica has seen Redis hold in it (see "Lost
        # writes" above); every script checks Redis has not gone back before it.
        self._seen: tuple[str, int] = ("", 0)
        # Users this process wants events of; the listener keeps the subscriptions equal to it.
        self._wanted: set[str] = set()
        self._subscribed: set[str] = set()
        self._confirmations: dict[str, asyncio.Future[None]] = {}
        # Per user, the newest event handed to the hub: later messages continue from here.
        self._delivered: dict[str, _Mark] = {}
        # Users whose channel may have missed events, with the loop time at which their catch-up
        # from history is next due. A user leaves only when a catch-up succeeds or it is no
        # longer watched, so no gap is forgotten however often Redis refuses the read.
        self._catch_ups_due: dict[str, float] = {}
        # Users whose catch-up is reading history now: their live messages wait for another.
        self._catching_up: set[str] = set()
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
            _StoredEvent(
                event.id,
                event.user_id,
                event.event,
                event.task,
                event.occurred_at,
                event.source,
                event.notification,
                event.op_id,
            )
        ).decode()
        keys = [*self._keys(event.user_id), f"{self.prefix}:dedupe:{event.id}", f"{self.prefix}:writes"]
        args: list[str | int] = [
            "r-" + secrets.token_hex(6),
            int(self.dedupe_window * 1000),
            self.history_size,
            int(self.history_ttl * 1000),
            stored,
            int(time.time() * 1000),
            self._channel(event.user_id),
            *self._seen,
        ]
        try:
            result = await self._publish(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"redis: {exc}") from exc
        if result is None:
            return None
        seq, epoch, listeners = int(result[0]), result[1].decode(), int(result[2])
        self._saw(epoch, int(result[3]))
        # The local hub gets this event through its channel like every other replica does;
        # `listeners` counts the replicas subscribed to the user's channel.
        return Delivery(event.user_id, seq, epoch, encode_task_update(event, seq, epoch), event.id, listeners=listeners)

    def _saw(self, epoch: str, writes: int) -> None:
        """Remember how many writes Redis held in `epoch`, as a script answered."""
        seen_epoch, seen_writes = self._seen
        self._seen = (epoch, max(writes, seen_writes) if epoch == seen_epoch else writes)

    async def _read_state(self, user_id: str, first_wanted: int) -> tuple[str, int, list[Any]]:
        """The epoch in effect, the user's head, and the history entries from `first_wanted` on
        (0: the head's entry only). Raises BrokerUnavailable."""
        keys = [*self._keys(user_id), f"{self.prefix}:writes"]
        try:
            epoch, seq, entries, writes = await self._read(
                keys=keys, args=["r-" + secrets.token_hex(6), first_wanted, *self._seen]
            )
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"redis: {exc}") from exc
        self._saw(epoch.decode(), int(writes))
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
        # Entries stored before the epoch was replaced (lost writes) go on in it: a client was
        # told the new epoch starts at or before them.
        deliveries = self._entries_to_deliveries(user_id, entries, current_epoch)
        horizon_ms = (time.time() - self.history_ttl) * 1000
        if not deliveries or deliveries[0].seq != since + 1 or self._oldest_ms(entries) < horizon_ms:
            return Replay(deliveries=[], position=position, resync="history_gap")
        return Replay(deliveries=deliveries, position=position)

    @staticmethod
    def _oldest_ms(entries: list[Any]) -> float:
        return float(_fields(entries[0])[b"t"]) if entries else 0.0

    @staticmethod
    def _entries_to_deliveries(user_id: str, entries: list[Any], epoch: str | None = None) -> list[Delivery]:
        """History entries as deliveries, in the epoch each was stored in, or in `epoch`."""
        deliveries = []
        for entry in entries:
            fields = _fields(entry)
            seq = _entry_seq(entry)
            event = _to_task_event(_stored_decoder.decode(fields[b"e"]))
            in_epoch = epoch or fields[b"p"].decode()
            deliveries.append(Delivery(user_id, seq, in_epoch, encode_task_update(event, seq, in_epoch), event.id))
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
                    self._delivered.setdefault(user_id, await self._head_mark(user_id))
                return
            confirmed = asyncio.get_running_loop().create_future()
            self._confirmations[channel] = confirmed
            try:
                await self._pubsub.subscribe(channel)
                async with asyncio.timeout(5):
                    await confirmed
                self._delivered.setdefault(user_id, await self._head_mark(user_id))
            except (RedisError, OSError, TimeoutError, BrokerUnavailable):
                log.warning("subscription for %s not confirmed; it is retried on reconnect", user_id)
            finally:
                self._confirmations.pop(channel, None)

    async def _head_mark(self, user_id: str) -> _Mark:
        epoch, seq, entries = await self._read_state(user_id, 0)
        held = bool(entries) and _entry_seq(entries[0]) == seq
        return _Mark(epoch, seq, _entry_event_id(entries[0]) if held else None)

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
            except Exception:  # a bug must not end fan-out for good: reconnecting catches up
                log.exception("redis pub/sub listener failed; reconnecting in %.1fs", delay)
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
                user_id = message["channel"].decode().removeprefix(f"{self.prefix}:user:")
                try:
                    await self._on_message(user_id, message["data"])
                except UndecodableMessage as exc:
                    # Not ours, or from another version of TaskSync: skipped. If it was an event,
                    # history has it, and a catch-up delivers it in its place.
                    log.warning("undecodable message on the channel of %s skipped (%s)", user_id, exc)
                    if user_id in self._subscribed:
                        self._owe_catch_up(user_id)

    async def _on_message(self, user_id: str, data: bytes) -> None:
        """Hand on a live event of `user_id` (whose channel carried it) if it follows the newest
        one handed on; otherwise leave it to a catch-up. Raises UndecodableMessage."""
        seq, epoch, sent_ms, event = _decode_message(data)
        if event.user_id != user_id:
            # The publish script only ever puts a user's events on that user's channel: anything
            # else was written by someone else, and must not reach the user the JSON names.
            raise UndecodableMessage(f"it names another user ({event.user_id[:64]!r})")
        if user_id not in self._subscribed:
            return
        if user_id in self._catch_ups_due or user_id in self._catching_up:
            # The catch-up may yet find that Redis lost writes, and this offset means nothing
            # to the user's tabs; it reads after this moment, so it delivers this event.
            self._owe_catch_up(user_id)
            return
        known = self._delivered.get(user_id)
        if known is not None and (epoch, seq) != (known.epoch, known.seq + 1):
            if epoch != known.epoch or seq > known.seq or (seq == known.seq and event.id != known.event_id):
                # A gap, an epoch not yet read from Redis, or another event at an offset already
                # handed on (Redis lost writes). History already holds this event (the script
                # stores before it publishes) and whatever the gap hides, so the catch-up, which
                # reads after this moment, delivers it in order or finds the loss.
                self._owe_catch_up(user_id)
            return  # otherwise already delivered by a catch-up
        # Convert the publisher's wall-clock ingest time to this process's monotonic clock, so
        # latency is measured from ingest on whichever replica it happened.
        received_ns = time.monotonic_ns() - max(0, time.time_ns() - sent_ms * 1_000_000)
        self._delivered[user_id] = _Mark(epoch, seq, event.id)
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
                    len(failures),
                    len(batch),
                    failures[0],
                )

    async def _try_catch_up(self, user_id: str) -> Exception | None:
        """Catch the user up; on failure schedule the next try and return the error."""
        self._catching_up.add(user_id)
        try:
            await self._catch_up(user_id)
        except Exception as error:  # whatever failed, dropping the catch-up would lose events
            if user_id in self._subscribed:
                backoff = self._catch_up_backoff.get(user_id, FIRST_RETRY_DELAY)
                self._catch_up_backoff[user_id] = min(backoff * 2, self.reconnect_max_delay)
                self._catch_ups_due[user_id] = asyncio.get_running_loop().time() + backoff
            return error
        finally:
            self._catching_up.discard(user_id)
        self._catch_up_backoff.pop(user_id, None)
        return None

    async def _catch_up(self, user_id: str) -> None:
        """Deliver from history every event after the newest one the hub was given (the mark),
        once Redis is known still to hold the mark. Raises BrokerUnavailable.

        When Redis is in another epoch, or lost the mark (it lost writes; the epoch is then
        replaced here), the user's stream starts over in the epoch in effect (`_start_over`),
        and each of the user's connections announces it to its client with `resync_required`
        before the first delivery of it (see `Connection.enqueue`)."""
        mark = self._delivered.get(user_id)
        if mark is None:
            return
        epoch, head, entries = await self._read_state(user_id, max(mark.seq, 1))
        at_mark = entries[0] if entries and _entry_seq(entries[0]) == mark.seq else None
        # The mark's event is still in history. Nothing is to be checked before the first event;
        # an absent entry (trimmed, or expired) is no proof either way.
        held = mark.seq == 0 or (at_mark is not None and _entry_event_id(at_mark) == mark.event_id)
        lost = head < mark.seq or (at_mark is not None and not held)
        if epoch == mark.epoch and lost:
            epoch = await self._replace_lost_epoch(user_id, mark, head)
        if epoch == mark.epoch:
            deliveries = self._entries_to_deliveries(user_id, entries, epoch)
        elif held:
            # The epoch was replaced elsewhere, but what this replica handed on still stands:
            # the rest of the old epoch, then the new one.
            deliveries = self._entries_to_deliveries(user_id, entries)
        else:
            deliveries = await self._start_over(user_id)
        for delivery in deliveries:
            # The user may be unwatched by now, or an earlier delivery already handed on.
            known = self._delivered.get(user_id)
            if known is None:
                return
            if delivery.epoch == known.epoch and delivery.seq <= known.seq:
                continue
            self._delivered[user_id] = _Mark(delivery.epoch, delivery.seq, delivery.event_id)
            self._emit(delivery)

    async def _replace_lost_epoch(self, user_id: str, mark: _Mark, head: int) -> str:
        """Redis no longer holds an event this replica handed on: it lost writes, and offsets
        from there on may be reused. Replace the epoch (unless another replica did first) and
        return the one in effect. Raises BrokerUnavailable."""
        candidate = "r-" + secrets.token_hex(6)
        try:
            epoch = (await self._replace_epoch(keys=[f"{self.prefix}:epoch"], args=[mark.epoch, candidate])).decode()
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"redis: {exc}") from exc
        log.warning(
            "redis lost writes: %s's event %s at seq %d of epoch %s is gone (head now %d); epoch %s from here on",
            user_id,
            mark.event_id,
            mark.seq,
            mark.epoch,
            head,
            epoch,
        )
        return epoch

    async def _start_over(self, user_id: str) -> list[Delivery]:
        """The user's stream in the epoch in effect, from its first event. With none stored yet,
        the newest event in history handed on again in that epoch, so every connection is told
        now rather than at the user's next event (events reusing offsets before the epoch was
        replaced are only covered by the client's refetch); with no event at all, nothing: the
        first event of the epoch announces it. Raises BrokerUnavailable."""
        epoch, head, entries = await self._read_state(user_id, 1)
        first = next((i for i, entry in enumerate(entries) if _fields(entry)[b"p"].decode() == epoch), None)
        if first is not None:
            return self._entries_to_deliveries(user_id, entries[first:])
        if entries and _entry_seq(entries[-1]) == head:
            return self._entries_to_deliveries(user_id, entries[-1:], epoch)
        return []
