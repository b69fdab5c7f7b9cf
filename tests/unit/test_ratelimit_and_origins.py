"""Token buckets and the origin policy, without sockets."""

from __future__ import annotations

import pytest

from tasksync.origins import OriginPolicy
from tasksync.ratelimit import BucketsByKey, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_the_burst_then_the_rate():
    clock = Clock()
    bucket = TokenBucket(rate=2, burst=4, clock=clock)
    assert [bucket.allow() for _ in range(5)] == [True, True, True, True, False]
    assert bucket.retry_after() == pytest.approx(0.5)
    clock.now += 0.5
    assert bucket.allow() and not bucket.allow()
    clock.now += 100
    assert sum(bucket.allow() for _ in range(10)) == 4  # never more than the burst


def test_reconfigure_does_not_refill():
    clock = Clock()
    bucket = TokenBucket(rate=1, burst=10, clock=clock)
    for _ in range(10):
        bucket.allow()
    bucket.reconfigure(rate=1, burst=100)
    assert not bucket.allow()


def test_buckets_by_key_are_independent_and_pruned_when_full():
    clock = Clock()
    buckets = BucketsByKey(rate=1, burst=1, clock=clock)
    assert buckets.allow("a") and not buckets.allow("a") and buckets.allow("b")
    clock.now += 120  # both refilled: nothing worth keeping
    buckets.allow("c")
    assert len(buckets) == 1


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://app.example.com", True),
        ("https://APP.example.com/", True),
        ("https://eu.example.org", True),
        ("https://a.b.example.org", True),
        ("https://example.org", False),
        ("http://eu.example.org", False),
        ("https://evilexample.org", False),
        ("https://app.example.com.evil.net", False),
        ("null", False),
        (None, True),
    ],
)
def test_origin_policy(origin, allowed):
    policy = OriginPolicy(["https://app.example.com", "https://*.example.org"])
    assert policy.allows(origin) is allowed


def test_empty_policy_allows_everything_and_bad_entries_are_refused():
    assert OriginPolicy([]).allows("https://anything.test")
    with pytest.raises(ValueError, match="must look like"):
        OriginPolicy(["example.com"])
