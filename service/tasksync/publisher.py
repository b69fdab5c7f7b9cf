"""Publish task events from a task backend: through the Dapr sidecar, or straight to TaskSync.

    publisher = Publisher.for_dapr()                       # sidecar on localhost:3500
    publisher = Publisher.for_http("http://tasksync:8005", api_key="...")
    await publisher.publish("task.updated", user_id="42", task=task_dict)

Every event gets an id before the first attempt and keeps it across retries, so TaskSync's
dedupe turns an at-least-once retry into exactly one delivery.
"""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from typing import Any, Literal

import httpx
import msgspec

from .protocol import utc_now_iso

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class PublishError(Exception):
    """The event was refused for good (a 4xx) or every retry failed."""


class Publisher:
    def __init__(
        self,
        mode: Literal["dapr", "http"],
        url: str,
        *,
        headers: dict[str, str] | None = None,
        retries: int = 5,
        backoff: float = 0.2,
        timeout: float = 10.0,
    ) -> None:
        self.mode = mode
        self.url = url
        self.retries = retries
        self.backoff = backoff
        self._client = httpx.AsyncClient(headers=headers or {}, timeout=timeout)

    @classmethod
    def for_dapr(
        cls,
        *,
        pubsub: str = "pubsub",
        topic: str = "task-events",
        dapr_url: str | None = None,
        dapr_api_token: str | None = None,
        **kwargs: Any,
    ) -> Publisher:
        """Publish through the sidecar's API: POST /v1.0/publish/<pubsub>/<topic>."""
        dapr_url = dapr_url or f"http://localhost:{os.environ.get('DAPR_HTTP_PORT', '3500')}"
        token = dapr_api_token or os.environ.get("DAPR_API_TOKEN")
        headers = {"dapr-api-token": token} if token else {}
        return cls("dapr", f"{dapr_url.rstrip('/')}/v1.0/publish/{pubsub}/{topic}", headers=headers, **kwargs)

    @classmethod
    def for_http(cls, base_url: str, *, api_key: str | None = None, **kwargs: Any) -> Publisher:
        """Publish to TaskSync's POST /v1/events."""
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        return cls("http", f"{base_url.rstrip('/')}/v1/events", headers=headers, **kwargs)

    async def publish(
        self,
        event: str,
        *,
        user_id: str,
        task: dict[str, Any],
        event_id: str | None = None,
        occurred_at: str | None = None,
        op_id: str | None = None,
    ) -> str:
        """Publish one event; returns its id. Raises PublishError. `op_id` is the operation id
        of the user action that caused the event, when the client sent one (docs/protocol.md,
        "Operation ids"): the tab that acted then raises no toast for its own change."""
        event_id = event_id or uuid.uuid4().hex
        payload: dict[str, Any] = {
            "event": event,
            "user_id": user_id,
            "task": task,
            "occurred_at": occurred_at or utc_now_iso(),
        }
        if op_id is not None:
            payload["op_id"] = op_id
        if self.mode == "dapr":
            # A structured CloudEvent of our own, so the id survives Dapr's envelope.
            body = {
                "specversion": "1.0",
                "id": event_id,
                "source": "tasksync-publisher",
                "type": event,
                "datacontenttype": "application/json",
                "data": payload,
            }
            content_type = "application/cloudevents+json"
        else:
            body = {**payload, "id": event_id}
            content_type = "application/json"
        await self._post(msgspec.json.encode(body), content_type)
        return event_id

    async def _post(self, body: bytes, content_type: str) -> None:
        last_error = "no attempt made"
        # The cause of the final PublishError when the last attempt did not reach the server, so a
        # caller can tell "not reachable" from "refused".
        unreachable: httpx.TransportError | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1) * random.uniform(0.8, 1.2))
            try:
                response = await self._client.post(self.url, content=body, headers={"content-type": content_type})
            except httpx.TransportError as exc:
                last_error, unreachable = f"{type(exc).__name__}: {exc}", exc
                continue
            unreachable = None
            if response.status_code < 300:
                return
            last_error = f"HTTP {response.status_code}: {response.text[:200]}"
            if response.status_code not in RETRYABLE_STATUS:
                raise PublishError(f"publish refused: {last_error}")
        raise PublishError(f"publish failed after {self.retries + 1} attempts: {last_error}") from unreachable

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
