"""Operator-wide knobs the handlers read from kopf's memo."""

from __future__ import annotations

import msgspec


class OperatorConfig(msgspec.Struct, frozen=True, kw_only=True):
    kubeconfig: str | None = None
    """A kubeconfig file to use; None: in-cluster service account, else $KUBECONFIG."""
    namespaces: tuple[str, ...] = ()
    """The namespaces watched (names or globs); empty: all of them."""
    retry_initial_delay: float = 1.0
    """First wait before retrying a TaskSyncSubscription that cannot be reconciled yet."""
    retry_max_delay: float = 300.0
    """Cap of the doubling retry delay (Dapr not installed, a conflicting Subscription, ...)."""
    resync_interval: float = 300.0
    """Every TaskSyncSubscription is reconciled this often, whether or not anything announced
    a change: the safety net behind the watches."""
    dapr_poll_interval: float = 5.0
    """While the Dapr Subscription API is not served, discovery is asked again this often."""

    def retry_delay(self, retry: int) -> float:
        """Exponential backoff: initial, 2x, 4x, ... capped at retry_max_delay."""
        # The exponent is capped too: kopf retries forever and 2**retry would overflow a float.
        return min(self.retry_max_delay, self.retry_initial_delay * 2 ** min(retry, 32))
