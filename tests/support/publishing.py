"""A test publisher that behaves like Dapr: it retries an event until some replica takes it."""

from __future__ import annotations

import asyncio
import itertools

import httpx


class RetryingPublisher:
    """Publishes events one at a time over HTTP, retrying (with the same id) on refusal or a
    dead replica, moving on to the next replica each time, the way Dapr redelivers."""

    def __init__(
        self,
        bases: list[str],
        *,
        retry_delay: float = 0.05,
        give_up_after: float = 60.0,
        headers: dict[str, str] | None = None,
    ):
        self._bases = itertools.cycle(bases)
        self.retry_delay = retry_delay
        self.give_up_after = give_up_after
        self.retries = 0
        self._http = httpx.AsyncClient(timeout=5, headers=headers)

    async def publish(self, event: dict) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.give_up_after
        while True:
            try:
                response = await self._http.post(next(self._bases) + "/v1/events", json=event)
                if response.status_code == 202:
                    return
            except httpx.HTTPError:
                pass
            if loop.time() > deadline:
                raise AssertionError(f"event {event.get('id')} not accepted within {self.give_up_after}s")
            self.retries += 1
            await asyncio.sleep(self.retry_delay)

    async def aclose(self) -> None:
        await self._http.aclose()
