"""Brokers: where offsets, history and cross-replica fan-out live (see base.Broker)."""

from __future__ import annotations

from .base import Broker, BrokerUnavailable, Delivery, Position, Replay
from .memory import MemoryBroker

__all__ = ["Broker", "BrokerUnavailable", "Delivery", "MemoryBroker", "Position", "Replay", "create_broker"]


def create_broker(
    url: str,
    *,
    history_size: int,
    history_ttl: float,
    dedupe_window: float,
    redis_wait_replicas: int = 0,
    redis_wait_timeout: float = 0.5,
) -> Broker:
    """The broker a `TASKSYNC_BROKER` value names: `memory`, or a Redis URL (`redis://`,
    `rediss://`, `unix://`, `redis+cluster://`, `rediss+cluster://`: see broker/redis_client.py)."""
    if url == "memory":
        return MemoryBroker(history_size=history_size, history_ttl=history_ttl, dedupe_window=dedupe_window)
    if url.startswith(("redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://")):
        # Imported here so the embedded default works without the redis extra installed.
        from .redis import RedisBroker

        return RedisBroker(
            url,
            history_size=history_size,
            history_ttl=history_ttl,
            dedupe_window=dedupe_window,
            wait_replicas=redis_wait_replicas,
            wait_timeout=redis_wait_timeout,
        )
    raise ValueError(f"unknown broker {url!r}: expected 'memory', a redis:// or a redis+cluster:// URL")
