"""The Redis broker's key layout: one hash tag per user, whatever the user id holds, shared by
every key and the channel of that user (one slot on a Redis Cluster)."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from tasksync.broker.redis import RedisBroker
from tasksync.broker.redis_layout import user_keys, user_tag

AWKWARD = ["ann", "{", "}", "{}", "%", "%7B", "{ann}", "a}b{c", "a b", "ü" * 256, "x" * 256, "}{%"]


@pytest.mark.parametrize("user", AWKWARD)
def test_every_key_and_the_channel_of_a_user_share_the_slot_of_one_non_empty_tag(user):
    tag = user_tag(user)
    assert tag.startswith("{") and tag.endswith("}") and len(tag) > 2
    assert "{" not in tag[1:-1] and "}" not in tag[1:-1]
    keys = user_keys("tasksync", user)
    slot = key_slot(tag[1:-1].encode())
    for key in (keys.head, keys.history, keys.dedupe("evt-1"), keys.dedupe("{evt}"), keys.channel):
        assert key_slot(key.encode()) == slot, key


def test_different_user_ids_never_share_a_tag():
    assert len({user_tag(user) for user in AWKWARD}) == len(AWKWARD)


def test_the_broker_reads_the_user_back_from_the_name_of_their_channel():
    broker = RedisBroker("redis://127.0.0.1:1/0")
    for user in AWKWARD:
        assert broker._user_of_channel(user_keys("tasksync", user).channel) == user
    assert broker._user_of_channel("tasksync:control") is None
