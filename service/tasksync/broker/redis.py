"""The Redis broker: offsets, history and dedupe in Redis, fan-out over Redis pub/sub.

Data model (one Redis, Sentinel, or Redis Cluster). Every key and the channel of a user carry
the user's hash tag (`{user}`, with `%`, `{` and `}` percent-encoded: `redis_layout.user_tag`),
so they share one hash slot and every script touches one slot:

- `{prefix}:{user}:head`: a hash, `epoch` and `seq`: the user's epoch and last offset. Never
  expires once the user has an event, so offsets never repeat within an epoch unless Redis loses
  writes, which changes the epoch. A user read before any event gets a head at `seq` 0 that
  expires after `history_ttl`. If Redis loses the head, a new epoch starts at `seq` 1; if it
  loses only the user's last writes (see "Lost writes" below) a replica replaces the epoch and
  offsets go on. Either way the user's clients are told to resync: on resuming, or on their live
  socket (see `_catch_up`). Epochs are per user: a loss costs only the users it touched.
- `{prefix}:{user}:history`: a Redis Stream whose entry ids are `<seq>-0`, so a replay is one
  XRANGE from `since+1`. Each entry holds the `task_update` frame in two halves (`h`, `x`:
  everything but the offset and epoch, see `protocol.task_update_halves`), the event id (`i`),
  the store time in ms (`t`) and the epoch it was stored in (`p`). Trimmed to `history_size`
  entries; expires `history_ttl` after its last event; entries older than `history_ttl` are
  treated as gone.
- `{prefix}:{user}:dedupe:{event id}`: SET NX with the dedupe window as TTL. Dedupe is per
  (user, event id).
- channel `{prefix}:{user}:events` (sharded pub/sub on Redis Cluster): every event, published by
  the same script that stored it, so per-user publish order is offset order. The message is the
  ready frame behind a short header (`redis_layout.PUBLISH_SCRIPT`): a replica hands it to its
  hub without decoding the event. A replica subscribes to the channels of the users it holds
  connections of.

All of a publish happens in one Lua script, so no replica ever sees a half-stored event. The
events of one batch (`publish_many`) go to Redis as one pipeline per node: one round trip.

Subscriptions. No lock serializes watch and unwatch: each enqueues its user and awaits; a
subscriber task takes everything pending, subscribes the new users' channels with one command
(on a cluster, one SSUBSCRIBE per hash slot, all sent at once) on their shard's connection,
reads their heads in one pipeline, and releases the waiters. A shard is one pub/sub connection:
to the Redis, or to one master of a cluster, for the users whose slots it serves; when it fails,
its users move to the node serving them now and are caught up from history.

Pub/sub is not durable: a message sent while the listener's connection is down is gone. History
is: whenever a user's channel may have missed something, a catch-up reads it from the stream.

A deployment that ran an older TaskSync on the single-Redis layout (`{prefix}:epoch`,
`{prefix}:seq:{user}`, ...) finds no head for any user under the new keys: each user's first
read or publish starts a new epoch, so a client resuming with its old epoch is told
`resync_required` (`epoch_changed`), never given a silent gap. The old keys are no longer read.

Lost writes. Redis can come back with only part of its data (`appendfsync everysec` and a
crash, a failover to a replica that lagged): a user's head survives but its offset goes back,
and new events would reuse offsets clients already hold. Two checks turn that into an epoch
change for the user, so no client skips the reused offsets as duplicates:
- every script takes the (epoch, seq) this replica last saw for the user (`_seen`: the users
  it published to or read lately, and the marks of the users it watches) and, if Redis is still
  in that epoch with a lower seq, replaces the epoch before it does anything else. Redis loses a
  suffix of its writes, so this catches any loss of a user's write this replica stored or read;
- a catch-up checks that history still holds, at the offset of the newest event the hub was
  given for the user, that same event (`_Mark`); if the offset is gone or holds another event,
  the epoch is replaced with a compare-and-set, so replicas that find it together agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Collection, Coroutine, Sequence
from typing import Any, NamedTuple

from redis.asyncio.cluster import ClusterNode
from redis.crc import key_slot
from redis.exceptions import ClusterDownError, NoScriptError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..events import TaskEvent
from ..protocol import join_task_update, task_update_halves
from .base import Broker, BrokerUnavailable, Delivery, Position, Replay
from .redis_client import (
    HEALTH_CHECK_INTERVAL,
    MAX_CALLS,
    SOCKET_TIMEOUT,
    UNREACHABLE,
    is_cluster_url,
    node_redis,
    redis_cluster,
    single_redis,
)
from .redis_layout import PUBLISH_SCRIPT, READ_SCRIPT, REPLACE_EPOCH_SCRIPT, user_keys
from .redis_pipeline import execute, execute_on_cluster
from .redis_pubsub import PubSubConnection

log = logging.getLogger("tasksync.broker.redis")

# The first wait before the listener reconnects or a failed catch-up is tried again; each
# failure doubles it, up to the broker's `reconnect_max_delay`.
FIRST_RETRY_DELAY = 0.1
# Catch-ups read history this many users at a time: a reconnect with thousands of users watched
# is caught up in a few hundred round trips, with at most this many Redis connections busy.
CATCH_UP_BATCH = 32
# Users whose last seen head is remembered beyond those watched (the lost-writes check): the
# most recently published to or read.
SEEN_USERS = 100_000
# How long a watch waits for its subscription to be confirmed before it goes on without it (the
# listener subscribes the user again when it reconnects, and catches up from the head read).
SUBSCRIBE_TIMEOUT = 5.0
# On a cluster, a failed publish has the slot map read again at most this often (seconds). A
# master that is down fails every call of its users until its failover, and redis-py 8.1 marks
# every connection to every node for a reconnect on each reading. (A pub/sub connection lost
# has it read every time: nothing else would move its users.)
SLOTS_REREAD_INTERVAL = 0.1

# What a call to Redis raises when its connection fails. redis-py's cluster client, writing on
# a connection whose node just died, also raises RuntimeError (uvloop: "the handler is closed")
# and AttributeError (a writer already gone): the call did not complete either way.
_CONNECTION_FAILURES = (*UNREACHABLE, RuntimeError, AttributeError)
# A cluster call's failure that says its master is gone or moving, not that the call is wrong: its
# connection failed, or a node answered that the cluster is down (a failover in progress). The
# map of the slots is read again and the call tried once more (`_pipeline`).
_MASTER_LOST = (
    RedisConnectionError,
    RedisTimeoutError,
    ClusterDownError,
    OSError,
    TimeoutError,
    RuntimeError,
    AttributeError,
)

_TASK_UPDATE_PREFIX = b'{"type":"task_update",'


class _Script(NamedTuple):
    text: str
    sha: str


class _Call(NamedTuple):
    """One script call in a pipeline."""

    script: _Script
    keys: list[str]
    args: list[str | int]


class _Mark(NamedTuple):
    """The newest event this replica handed to the hub for a user (or the head when it began
    watching): later events continue from it, and a catch-up checks that Redis still holds it."""

    epoch: str
    seq: int
    # None when the offset had no event left in history (none yet, or expired).
    event_id: str | None


class ReplicasMissing(RedisError):
    """Fewer Redis replicas than `wait_replicas` confirmed a publish within `wait_timeout`."""


class UndecodableMessage(Exception):
    """A message on a user's channel that is not a TaskSync event of this version."""


class _Message(NamedTuple):
    seq: int
    epoch: str
    sent_ms: int
    event_id: str
    frame: str


def _decode_message(data: bytes) -> _Message:
    """A channel message, `<seq> <epoch> <sent ms> <event id bytes>\\n<event id><frame>`.
    Raises UndecodableMessage."""
    try:
        header, _, rest = data.partition(b"\n")
        seq_text, epoch, sent_ms, id_bytes = header.split(b" ")
        id_length = int(id_bytes)
        frame = rest[id_length:]
        if not frame.startswith(_TASK_UPDATE_PREFIX):
            raise ValueError("not a task_update frame")
        return _Message(int(seq_text), epoch.decode(), int(sent_ms), rest[:id_length].decode(), frame.decode())
    except ValueError as exc:  # UnicodeDecodeError included
        raise UndecodableMessage(str(exc)) from exc


def _fields(entry: list[Any]) -> dict[bytes, bytes]:
    """A stream entry as a Lua script returns it, [id, [k1, v1, k2, v2, ...]], as a dict."""
    flat = entry[1]
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _entry_seq(entry: list[Any]) -> int:
    return int(entry[0].split(b"-")[0])


def _entry_event_id(entry: list[Any]) -> str:
    return _fields(entry)[b"i"].decode()


def _candidate_epoch() -> str:
    """An epoch for a user whose head Redis lacks or has lost writes of. One serves every user
    of a batch: epochs are told apart per user, and each batch draws a new one."""
    return "r-" + secrets.token_hex(6)


class _Shard:
    """One pub/sub connection (to the Redis, or to one master of a cluster) and the users whose
    channels it carries."""

    def __init__(self, name: str, host: str, port: int) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.users: set[str] = set()
        self.client: Any = None
        self.pubsub: PubSubConnection | None = None
        self.listening = asyncio.Event()
        self.confirmations: dict[str, asyncio.Future[None]] = {}
        self.task: asyncio.Task[None] | None = None


def _by_slot(channels: Collection[str]) -> list[list[str]]:
    """The channels grouped by hash slot."""
    groups: dict[int, list[str]] = {}
    for channel in channels:
        groups.setdefault(key_slot(channel.encode()), []).append(channel)
    return list(groups.values())


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
        wait_replicas: int = 0,
        wait_timeout: float = 0.5,
    ) -> None:
        super().__init__()
        if "{" in prefix or "}" in prefix:
            raise ValueError("the Redis key prefix may not contain '{' or '}': they would move the hash tag")
        self.url = url
        self.history_size = history_size
        self.history_ttl = history_ttl
        self.dedupe_window = dedupe_window
        self.prefix = prefix
        self.reconnect_max_delay = reconnect_max_delay
        self.wait_replicas = wait_replicas
        self.wait_timeout = wait_timeout
        self._cluster = is_cluster_url(url)
        self._slots_read_at = -math.inf
        self._redis: Any = redis_cluster(url) if self._cluster else single_redis(url)
        self._publish = self._script(PUBLISH_SCRIPT)
        self._read = self._script(READ_SCRIPT)
        self._replace_epoch = self._script(REPLACE_EPOCH_SCRIPT)
        # Sharded pub/sub on a cluster: a message stays on the node that owns its channel's slot
        # instead of crossing the cluster bus to every node.
        self._publish_command = "SPUBLISH" if self._cluster else "PUBLISH"
        # Per user, the epoch and the highest seq this replica has seen Redis hold (see "Lost
        # writes" above), most recently used last; every script checks Redis has not gone back.
        self._seen: OrderedDict[str, tuple[str, int]] = OrderedDict()
        # Users this process wants events of; the subscriber keeps the subscriptions equal to it.
        self._wanted: set[str] = set()
        self._subscribed: set[str] = set()
        # Users whose subscription is to be brought in line with `_wanted`, each with the future
        # its watch/unwatch calls await; the subscriber takes them all at once.
        self._sync_requests: dict[str, asyncio.Future[None]] = {}
        self._sync_requested = asyncio.Event()
        self._subscriber: asyncio.Task[None] | None = None
        # Users in the subscription round under way, and script calls awaiting Redis' replies:
        # with `_sync_requests`, what `waiting` reports.
        self._settling = 0
        self._calls_in_flight = 0
        # Pipelines running now: a burst of handshakes queues here rather than asking the client
        # for more connections than it holds (see `redis_client.MAX_CALLS`).
        self._call_slots = asyncio.Semaphore(MAX_CALLS)
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
        # The pub/sub connections (one, or one per cluster master) and the shard of each user.
        self._shards: dict[str, _Shard] = {}
        self._shard_of: dict[str, _Shard] = {}
        self._started = False
        self._tasks: set[asyncio.Task[None]] = set()

    def _script(self, text: str) -> _Script:
        return _Script(text, self._redis.register_script(text).sha)

    # -- keys ------------------------------------------------------------------------------

    def _channel(self, user_id: str) -> str:
        return user_keys(self.prefix, user_id).channel

    def _user_of_channel(self, channel: str) -> str | None:
        """The user whose channel this is, or None for another channel."""
        prefix, suffix = f"{self.prefix}:{{", "}:events"
        if not (channel.startswith(prefix) and channel.endswith(suffix)):
            return None
        tag = channel[len(prefix) : -len(suffix)]
        return tag.replace("%7D", "}").replace("%7B", "{").replace("%25", "%")

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._started = True
        if not self._cluster:
            self._shard("redis")
        self._catcher = asyncio.create_task(self._catch_up_forever())
        self._subscriber = asyncio.create_task(self._subscribe_forever())

    async def stop(self) -> None:
        listeners = [shard.task for shard in self._shards.values()]
        for task in (*listeners, *self._tasks, self._catcher, self._subscriber):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        with contextlib.suppress(*UNREACHABLE):
            if self._cluster:
                # redis-py's client closes its nodes' connections only once its own refresh has
                # run, which the broker does not use (`_read_slots`).
                await self._redis.aclose()
                await self._redis.nodes_manager.aclose()
                await self._redis.nodes_manager.aclose("startup_nodes")
            else:
                await self._redis.aclose(close_connection_pool=True)

    async def ready(self) -> bool:
        if self._cluster:
            return await self._cluster_answers()
        try:
            async with asyncio.timeout(1.0):
                return self._shard("redis").listening.is_set() and bool(await self._redis.ping())
        except (*_CONNECTION_FAILURES, TimeoutError):
            return False

    async def _cluster_answers(self) -> bool:
        """Whether any master answers: one node down costs only its users, so the replica stays
        ready for the others. Each is asked on a connection of its own node, not through
        redis-py's client, which would read the cluster again its own way (`_read_slots`)."""
        try:
            async with asyncio.timeout(1.0):
                await self._read_slots()
        except (*_CONNECTION_FAILURES, TimeoutError):
            return False
        return any(await asyncio.gather(*map(_answers, self._redis.get_primaries())))

    async def _read_slots(self, *, again: bool = False, unless_read_within: float = 0.0) -> None:
        """redis-py's map of the cluster's slots to their masters, read from any node that
        answers: the first time, and `again` after a master failed or moved, unless it was read
        less than `unless_read_within` seconds ago.

        Not through redis-py's `RedisCluster.initialize()`: besides the map, it asks its default
        node (the first master listed) for COMMAND, and when that fails it closes every
        connection to every node. While that one master is down, until its failover, every call
        made through it would fail, whatever master its keys are on."""
        now = time.monotonic()
        if self._redis.nodes_manager.slots_cache and not (again and now >= self._slots_read_at + unless_read_within):
            return
        self._slots_read_at = now
        await self._redis.nodes_manager.initialize()

    # -- pipelines -------------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        return self._calls_in_flight + len(self._sync_requests) + self._settling

    async def _run(self, calls: Sequence[_Call], *, wait: bool = False) -> list[Any]:
        """Each call's reply, or the exception it met, in one pipelined round trip per node
        (`wait`: a publish, followed by WAIT when replicas are asked for). A script Redis no
        longer holds (a restart, SCRIPT FLUSH) is loaded and its calls run again: a NOSCRIPT
        reply means the script did not run."""
        self._calls_in_flight += len(calls)
        try:
            async with self._call_slots:
                return await self._run_pipelines(calls, wait=wait)
        finally:
            self._calls_in_flight -= len(calls)

    async def _run_pipelines(self, calls: Sequence[_Call], *, wait: bool) -> list[Any]:
        replies = await self._pipeline(calls, wait=wait)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            try:
                await self._load_scripts([calls[i] for i in missing])
            except _CONNECTION_FAILURES as exc:
                for i in missing:
                    replies[i] = exc
                return replies
            again = await self._pipeline([calls[i] for i in missing], wait=wait)
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return replies

    async def _load_scripts(self, calls: Sequence[_Call]) -> None:
        """Load the calls' scripts again. On a cluster, on every master, each on its own: the
        master that answered NOSCRIPT may be one a redirection led to, and a master that is down
        costs only its own users (redis-py's `script_load` fails as a whole when one master does
        not answer); a call whose master did not load it fails again, with NOSCRIPT."""
        texts = {call.script.text for call in calls}
        if not self._cluster:
            for text in texts:
                await self._redis.script_load(text)
            return
        await self._read_slots()
        await asyncio.gather(
            *(_load(node, text) for node in self._redis.get_primaries() for text in texts),
        )

    async def _pipeline(self, calls: Sequence[_Call], *, wait: bool) -> list[Any]:
        """The calls as one pipeline per Redis node, run side by side: a node that fails fails
        only the calls of the users on its slots. On a cluster, the calls whose master was lost
        are tried once more where the map of the slots, read again, then says: a failover's new
        master, or the same one on a new connection. A call that may have run the first time
        is deduplicated by Redis (its event id)."""
        if not self._cluster:
            return await self._node_pipeline(calls, None, wait=wait)
        replies = await self._master_pipelines(calls, wait=wait)
        lost = [i for i, reply in enumerate(replies) if isinstance(reply, _MASTER_LOST)]
        if lost:
            # A call refused now is retried by its publisher: the map need not be read for each.
            with contextlib.suppress(*_CONNECTION_FAILURES):
                await self._read_slots(again=True, unless_read_within=SLOTS_REREAD_INTERVAL)
            again = await self._master_pipelines([calls[i] for i in lost], wait=wait)
            for i, reply in zip(lost, again, strict=True):
                replies[i] = reply
        return replies

    async def _master_pipelines(self, calls: Sequence[_Call], *, wait: bool) -> list[Any]:
        """Each call's reply, from one pipeline per master the slot map names, side by side."""
        replies: list[Any] = [None] * len(calls)
        try:
            await self._read_slots()
        except _CONNECTION_FAILURES as exc:
            return [exc] * len(calls)
        by_node: dict[str, tuple[ClusterNode, list[int]]] = {}
        for index, call in enumerate(calls):
            try:
                node = self._redis.get_node_from_key(call.keys[0])
            except _CONNECTION_FAILURES as exc:  # a slot no master serves
                replies[index] = exc
                continue
            by_node.setdefault(node.name, (node, []))[1].append(index)
        groups = list(by_node.values())
        answers = await asyncio.gather(
            *(self._node_pipeline([calls[i] for i in indexes], node, wait=wait) for node, indexes in groups)
        )
        for (_, indexes), got in zip(groups, answers, strict=True):
            for index, reply in zip(indexes, got, strict=True):
                replies[index] = reply
        return replies

    async def _node_pipeline(self, calls: Sequence[_Call], node: ClusterNode | None, *, wait: bool) -> list[Any]:
        """The calls in one pipeline to one node (None: the one Redis); with `wait` and
        `wait_replicas`, followed by a WAIT, and each stored reply turned into a failure when
        fewer replicas had it in time."""
        # Not `pipe.evalsha` on a cluster: redis-py's cluster pipeline refuses it by name, though
        # every call here touches one slot.
        commands: list[tuple[Any, ...]] = [
            ("EVALSHA", call.script.sha, len(call.keys), *call.keys, *call.args) for call in calls
        ]
        waits = wait and self.wait_replicas > 0
        if waits:
            commands.append(("WAIT", self.wait_replicas, int(self.wait_timeout * 1000)))
        timeout = SOCKET_TIMEOUT + (self.wait_timeout if waits else 0.0)
        redirected: list[int] = []
        try:
            if node is None:
                replies = await execute(self._redis.connection_pool, commands, timeout=timeout)
            else:
                replies, redirected = await execute_on_cluster(self._redis, node, commands, timeout=timeout)
        except _CONNECTION_FAILURES as exc:
            return [exc] * len(calls)
        if not waits:
            return replies
        replicas, replies = replies[-1], replies[:-1]
        if isinstance(replicas, Exception) or int(replicas) < self.wait_replicas:
            unreplicated = ReplicasMissing(f"{replicas} of {self.wait_replicas} replicas had the events in time")
            return [reply if isinstance(reply, Exception) else unreplicated for reply in replies]
        # The WAIT ran on `node`; a call redirected elsewhere is stored where it was not asked.
        unconfirmed = ReplicasMissing("the slot moved during the publish: its replicas were not asked")
        for i in redirected:
            if not isinstance(replies[i], Exception):
                replies[i] = unconfirmed
        return replies

    async def _run_one(self, call: _Call) -> Any:
        """The reply to one script call. Raises BrokerUnavailable."""
        (reply,) = await self._run([call])
        if isinstance(reply, Exception):
            raise BrokerUnavailable(f"redis: {reply}") from reply
        return reply

    # -- publish and read ------------------------------------------------------------------

    def _seen_head(self, user_id: str) -> tuple[str, int]:
        """The (epoch, seq) this replica last saw Redis hold for the user ("", 0: none)."""
        seen = self._seen.get(user_id)
        mark = self._delivered.get(user_id)
        if mark is not None and (seen is None or (seen[0] == mark.epoch and seen[1] < mark.seq)):
            return mark.epoch, mark.seq
        return seen or ("", 0)

    def _saw(self, user_id: str, epoch: str, seq: int) -> None:
        """Remember the user's head as a script answered."""
        seen = self._seen.pop(user_id, None)
        if seen is not None and seen[0] == epoch:
            seq = max(seq, seen[1])
        self._seen[user_id] = (epoch, seq)
        if len(self._seen) > SEEN_USERS:
            self._seen.popitem(last=False)

    def _publish_call(self, event: TaskEvent, now_ms: int, candidate: str) -> tuple[_Call, tuple[str, str]]:
        keys = user_keys(self.prefix, event.user_id)
        halves = task_update_halves(event)
        args: list[str | int] = [
            candidate,
            int(self.dedupe_window * 1000),
            self.history_size,
            int(self.history_ttl * 1000),
            *halves,
            event.id,
            now_ms,
            keys.channel,
            *self._seen_head(event.user_id),
            self._publish_command,
        ]
        return _Call(self._publish, [keys.head, keys.history, keys.dedupe(event.id)], args), halves

    async def publish(self, event: TaskEvent) -> Delivery | None:
        (outcome,) = await self.publish_many([event])
        if isinstance(outcome, BrokerUnavailable):
            raise outcome
        return outcome

    async def publish_many(self, events: Sequence[TaskEvent]) -> list[Delivery | BrokerUnavailable | None]:
        if not events:
            return []
        now_ms, candidate = int(time.time() * 1000), _candidate_epoch()
        prepared = [self._publish_call(event, now_ms, candidate) for event in events]
        replies = await self._run([call for call, _ in prepared], wait=True)
        outcomes: list[Delivery | BrokerUnavailable | None] = []
        for event, (_, (head, tail)), reply in zip(events, prepared, replies, strict=True):
            if isinstance(reply, Exception):
                outcomes.append(BrokerUnavailable(f"redis: {reply}"))
            elif reply is None:
                outcomes.append(None)
            else:
                seq, epoch, listeners = int(reply[0]), reply[1].decode(), int(reply[2])
                self._saw(event.user_id, epoch, seq)
                # The local hub gets this event through its channel like every other replica
                # does; `listeners` counts the replicas subscribed to the user's channel.
                frame = join_task_update(head, seq, epoch, tail)
                outcomes.append(Delivery(event.user_id, seq, epoch, frame, event.id, listeners=listeners))
        return outcomes

    def _read_call(self, user_id: str, first_wanted: int, candidate: str) -> _Call:
        keys = user_keys(self.prefix, user_id)
        args: list[str | int] = [
            candidate,
            first_wanted,
            *self._seen_head(user_id),
            int(self.history_ttl * 1000),
        ]
        return _Call(self._read, [keys.head, keys.history], args)

    def _read_reply(self, user_id: str, reply: list[Any]) -> tuple[str, int, list[Any]]:
        epoch, seq, entries = reply[0].decode(), int(reply[1]), reply[2]
        self._saw(user_id, epoch, seq)
        return epoch, seq, entries

    async def _read_state(self, user_id: str, first_wanted: int) -> tuple[str, int, list[Any]]:
        """The user's epoch in effect and head, and the history entries from `first_wanted` on
        (0: the head's entry only). Raises BrokerUnavailable."""
        call = self._read_call(user_id, first_wanted, _candidate_epoch())
        return self._read_reply(user_id, await self._run_one(call))

    async def position(self, user_id: str) -> Position:
        mark = self._delivered.get(user_id)
        if mark is not None:
            # Watched: every event after the mark reaches the hub (by the listener, or by a
            # catch-up from it), so the mark is a head as good as Redis' own, without a read.
            return Position(seq=mark.seq, epoch=mark.epoch)
        epoch, seq, _ = await self._read_state(user_id, 0)
        return Position(seq=seq, epoch=epoch)

    async def replay(self, user_id: str, since: int, epoch: str) -> Replay:
        mark = self._delivered.get(user_id)
        if mark is not None and mark.epoch == epoch and mark.seq == since:
            # The client has everything the hub was given, and the hub is owed every later
            # event (see `position`): nothing to read. A reconnect storm's usual resume.
            return Replay(deliveries=[], position=Position(seq=since, epoch=epoch))
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
            in_epoch = epoch or fields[b"p"].decode()
            frame = join_task_update(fields[b"h"].decode(), seq, in_epoch, fields[b"x"].decode())
            deliveries.append(Delivery(user_id, seq, in_epoch, frame, fields[b"i"].decode()))
        return deliveries

    # -- subscriptions ---------------------------------------------------------------------

    async def watch(self, user_id: str) -> None:
        self._wanted.add(user_id)
        if not self._cluster:
            # Normally the listener is up and the subscription is confirmed before this
            # returns. While it is (re)connecting, wait a little for it.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
                    await self._shard("redis").listening.wait()
        await self._request_sync(user_id)

    async def unwatch(self, user_id: str) -> None:
        self._wanted.discard(user_id)
        await self._request_sync(user_id)

    async def _request_sync(self, user_id: str) -> None:
        """Have the subscriber bring the user's subscription in line with `_wanted`, and wait
        until it has. A call made while the subscriber works on the user waits for its next
        round, so the subscription ends as the last call wants."""
        request = self._sync_requests.get(user_id)
        if request is None:
            request = self._sync_requests[user_id] = asyncio.get_running_loop().create_future()
            self._sync_requested.set()
        # Shielded: a caller that gives up must not cancel the round for everyone else.
        await asyncio.shield(request)

    async def _subscribe_forever(self) -> None:
        """Take every pending watch and unwatch at once and settle them in one round: the users
        whose sockets arrive together are subscribed together."""
        while True:
            await self._sync_requested.wait()
            self._sync_requested.clear()
            requests, self._sync_requests = self._sync_requests, {}
            self._settling = len(requests)
            try:
                await self._sync_subscriptions(list(requests))
            except Exception:  # a bug must not leave watchers waiting: they go on unsubscribed
                log.exception("subscription round failed")
            finally:
                self._settling = 0
                for request in requests.values():
                    if not request.done():
                        request.set_result(None)

    async def _sync_subscriptions(self, users: list[str]) -> None:
        """Make the subscriptions of `users` match `_wanted`.

        Before a watch returns, the point from which this process owes the user's connections
        every event is recorded in `_delivered`: the head read once the subscription is
        confirmed, or (with the user's listener down) the head now, which the listener catches
        up from once its channel is live. Either way the session's history read that follows
        cannot miss an event.
        """
        dropped = [u for u in users if u not in self._wanted and u in self._subscribed]
        unsubscribe: dict[_Shard, list[str]] = {}
        for user_id in dropped:
            self._subscribed.discard(user_id)
            self._delivered.pop(user_id, None)
            self._catch_ups_due.pop(user_id, None)
            self._catch_up_backoff.pop(user_id, None)
            if (shard := self._shard_of.pop(user_id, None)) is not None:
                shard.users.discard(user_id)
                unsubscribe.setdefault(shard, []).append(self._channel(user_id))
        for shard, channels in unsubscribe.items():
            if shard.listening.is_set() and (pubsub := shard.pubsub) is not None:
                with contextlib.suppress(*UNREACHABLE):
                    await self._send_unsubscribe(pubsub, channels)
        added = [u for u in users if u in self._wanted and u not in self._subscribed]
        if not added:
            return
        self._subscribed.update(added)
        by_shard: dict[_Shard, list[str]] = {}
        for user_id in added:
            if (shard := await self._place(user_id)) is not None:
                by_shard.setdefault(shard, []).append(user_id)
        # Only a shard's listener touches a connection it is still setting up (redis-py would
        # open a second one under it); it subscribes every user of its shard once connected.
        live = [(shard, shard_users) for shard, shard_users in by_shard.items() if shard.listening.is_set()]
        await asyncio.gather(*(self._subscribe(shard, shard_users) for shard, shard_users in live))
        candidate = _candidate_epoch()
        replies = await self._run([self._read_call(u, 0, candidate) for u in added])
        for user_id, reply in zip(added, replies, strict=True):
            if isinstance(reply, Exception) or user_id not in self._subscribed:
                continue
            epoch, seq, entries = self._read_reply(user_id, reply)
            held = bool(entries) and _entry_seq(entries[0]) == seq
            self._delivered.setdefault(user_id, _Mark(epoch, seq, _entry_event_id(entries[0]) if held else None))

    async def _place(self, user_id: str) -> _Shard | None:
        """Put the user on the shard whose node serves its channel now; None while the cluster
        cannot say (the user's head read fails too, and its socket is told to come back)."""
        try:
            shard = await self._shard_for(user_id)
        except UNREACHABLE as exc:
            log.warning("no node for %s's channel (%s)", user_id, exc)
            return None
        shard.users.add(user_id)
        self._shard_of[user_id] = shard
        return shard

    async def _shard_for(self, user_id: str) -> _Shard:
        if not self._cluster:
            return self._shard("redis")
        await self._read_slots()
        node = self._redis.get_node_from_key(self._channel(user_id))
        return self._shard(node.name, node.host, node.port)

    def _shard(self, name: str, host: str = "", port: int = 0) -> _Shard:
        shard = self._shards.get(name)
        if shard is None:
            shard = self._shards[name] = _Shard(name, host, port)
            if self._started:
                shard.task = asyncio.create_task(self._listen_forever(shard))
        return shard

    async def _subscribe(self, shard: _Shard, users: list[str]) -> None:
        """Subscribe to the users' channels on their shard and wait for every confirmation."""
        pubsub = shard.pubsub
        if pubsub is None:
            return  # the listener went down meanwhile: it subscribes them when it is back
        loop = asyncio.get_running_loop()
        channels = [self._channel(u) for u in users]
        confirmations = [shard.confirmations.setdefault(channel, loop.create_future()) for channel in channels]
        try:
            await self._send_subscribe(pubsub, channels)
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
                await asyncio.gather(*confirmations)
        except (*UNREACHABLE, TimeoutError):
            log.warning("subscriptions of %d users not confirmed; they are retried on reconnect", len(users))
        finally:
            for channel in channels:
                shard.confirmations.pop(channel, None)

    async def _send_subscribe(self, pubsub: PubSubConnection, channels: Collection[str]) -> None:
        """Subscribe to the channels, all sent without waiting for the replies."""
        for batch in self._per_call(channels):
            await pubsub.subscribe(batch, sharded=self._cluster)

    async def _send_unsubscribe(self, pubsub: PubSubConnection, channels: Collection[str]) -> None:
        for batch in self._per_call(channels):
            await pubsub.unsubscribe(batch, sharded=self._cluster)

    def _per_call(self, channels: Collection[str]) -> list[Collection[str]]:
        """The channels one (S)SUBSCRIBE or (S)UNSUBSCRIBE each: all of them on one Redis, those
        of one hash slot on a cluster (Redis takes one slot per sharded call)."""
        if not channels:
            return []
        return list(_by_slot(channels)) if self._cluster else [channels]

    # -- the listeners ---------------------------------------------------------------------

    async def _listen_forever(self, shard: _Shard) -> None:
        delay = FIRST_RETRY_DELAY
        while True:
            try:
                await self._listen_once(shard)
                delay = FIRST_RETRY_DELAY
            except asyncio.CancelledError:
                raise
            except UNREACHABLE as exc:
                log.warning("redis pub/sub connection lost (%s); reconnecting in %.1fs", exc, delay)
            except Exception:  # a bug must not end fan-out for good: reconnecting catches up
                log.exception("redis pub/sub listener failed; reconnecting in %.1fs", delay)
            finally:
                shard.listening.clear()
                if shard.pubsub is not None:
                    with contextlib.suppress(*UNREACHABLE):
                        await shard.pubsub.close()
                    shard.pubsub = None
                if shard.client is not None:
                    with contextlib.suppress(*UNREACHABLE):
                        await shard.client.aclose()
                    shard.client = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.reconnect_max_delay)
            if self._cluster:
                # The node may have failed over or given its slots away: its users go to the
                # node serving their channel now.
                try:
                    await self._replace_users(list(shard.users), refresh=True)
                except Exception:  # as above: this listener is its users' only way in
                    log.exception("moving the users of a lost pub/sub connection failed; retrying")
                if not shard.users:
                    self._shards.pop(shard.name, None)
                    return

    async def _replace_users(self, users: list[str], *, refresh: bool) -> None:
        """Move users to the shard that serves their channel now (on a cluster, after a failover
        or a slot migration), and catch them up: their channel was down."""
        if refresh:
            with contextlib.suppress(*UNREACHABLE):
                await self._read_slots(again=True)
        moved: dict[_Shard, list[str]] = {}
        for user_id in users:
            old = self._shard_of.get(user_id)
            if old is None or user_id not in self._subscribed:
                continue
            try:
                new = await self._shard_for(user_id)
            except UNREACHABLE:
                continue  # stays where it is: its listener tries again
            self._owe_catch_up(user_id)
            if new is old:
                continue
            old.users.discard(user_id)
            new.users.add(user_id)
            self._shard_of[user_id] = new
            moved.setdefault(new, []).append(user_id)
        for shard, shard_users in moved.items():
            if shard.listening.is_set() and (pubsub := shard.pubsub) is not None:
                with contextlib.suppress(*UNREACHABLE):
                    await self._send_subscribe(pubsub, [self._channel(u) for u in shard_users])

    async def _listen_once(self, shard: _Shard) -> None:
        if self._cluster:
            shard.client = node_redis(self.url, shard.host, shard.port)
        pubsub = PubSubConnection(shard.client or self._redis, idle_timeout=HEALTH_CHECK_INTERVAL)
        shard.pubsub = pubsub
        await pubsub.open()
        snapshot = set(shard.users)
        # The control channel comes last: Redis confirms subscriptions in order, so once it is
        # confirmed every channel of the snapshot is live. It also keeps the connection
        # subscribed while no user is watched. It is a plain channel on a cluster too (sharded
        # pub/sub has no slot-less channel): SUBSCRIBE works on every node.
        control = f"{self.prefix}:control".encode()
        await self._send_subscribe(pubsub, [self._channel(u) for u in snapshot])
        await pubsub.subscribe([control], sharded=False)
        async for replies in pubsub.replies():
            for reply in replies:
                if not isinstance(reply, list):
                    continue  # the answer to a liveness PING
                kind = reply[0]
                if kind == b"message" or kind == b"smessage":
                    user_id = self._user_of_channel(reply[1].decode())
                    if user_id is None:
                        continue
                    try:
                        self._on_message(user_id, reply[2])
                    except UndecodableMessage as exc:
                        # Not ours, or from another version of TaskSync: skipped. If it was an
                        # event, history has it, and a catch-up delivers it in its place.
                        log.warning("undecodable message on the channel of %s skipped (%s)", user_id, exc)
                        if user_id in self._subscribed:
                            self._owe_catch_up(user_id)
                elif kind == b"subscribe" or kind == b"ssubscribe":
                    channel = reply[1]
                    if channel == control:
                        # Users put on this shard while this connection was being set up, until
                        # none is left: the subscriber leaves the users it places to this
                        # listener until `listening` is set, including those placed while these
                        # are being sent.
                        while late := shard.users - snapshot:
                            snapshot |= late
                            await self._send_subscribe(pubsub, [self._channel(u) for u in late])
                        shard.listening.set()
                    elif (confirmed := shard.confirmations.get(channel.decode())) is not None and not confirmed.done():
                        confirmed.set_result(None)
                    elif (user_id := self._user_of_channel(channel.decode())) is not None:
                        # The channel was down, so pub/sub may have dropped some of its events.
                        self._owe_catch_up(user_id)
                elif kind == b"sunsubscribe":
                    user_id = self._user_of_channel(reply[1].decode())
                    if user_id is not None and user_id in shard.users:
                        # Not asked for: Redis moved the channel's slot to another node.
                        self._background(self._replace_users([user_id], refresh=True))

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_message(self, user_id: str, data: bytes) -> None:
        """Hand on a live event of `user_id` (whose channel carried it) if it follows the newest
        one handed on; otherwise leave it to a catch-up. Raises UndecodableMessage."""
        message = _decode_message(data)
        if user_id not in self._subscribed:
            return
        if user_id in self._catch_ups_due or user_id in self._catching_up:
            # The catch-up may yet find that Redis lost writes, and this offset means nothing
            # to the user's tabs; it reads after this moment, so it delivers this event.
            self._owe_catch_up(user_id)
            return
        seq, epoch = message.seq, message.epoch
        known = self._delivered.get(user_id)
        if known is not None and (epoch, seq) != (known.epoch, known.seq + 1):
            if epoch != known.epoch or seq > known.seq or (seq == known.seq and message.event_id != known.event_id):
                # A gap, an epoch not yet read from Redis, or another event at an offset already
                # handed on (Redis lost writes). History already holds this event (the script
                # stores before it publishes) and whatever the gap hides, so the catch-up, which
                # reads after this moment, delivers it in order or finds the loss.
                self._owe_catch_up(user_id)
            return  # otherwise already delivered by a catch-up
        # Convert the publisher's wall-clock ingest time to this process's monotonic clock, so
        # latency is measured from ingest on whichever replica it happened.
        lag_ns = max(0, time.time_ns() - message.sent_ms * 1_000_000)
        self.observe_lag(lag_ns / 1e9)
        received_ns = time.monotonic_ns() - lag_ns
        self._delivered[user_id] = _Mark(epoch, seq, message.event_id)
        self._emit(Delivery(user_id, seq, epoch, message.frame, message.event_id, received_ns))

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
        from there on may be reused. Replace the user's epoch (unless another replica did first)
        and return the one in effect. Raises BrokerUnavailable."""
        keys = user_keys(self.prefix, user_id)
        call = _Call(self._replace_epoch, [keys.head, keys.history], [mark.epoch, _candidate_epoch()])
        epoch = (await self._run_one(call)).decode()
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


async def _answers(node: ClusterNode) -> bool:
    """Whether a cluster node answers a PING within half a second."""
    with contextlib.suppress(*_CONNECTION_FAILURES, TimeoutError):
        async with asyncio.timeout(0.5):
            return bool(await node.execute_command("PING"))
    return False


async def _load(node: ClusterNode, text: str) -> None:
    """Load a script on a cluster node, if it answers."""
    with contextlib.suppress(*_CONNECTION_FAILURES):
        await node.execute_command("SCRIPT", "LOAD", text)
