"""What every route module shares: how it finds the Service and how it reads a bounded body."""

from __future__ import annotations

import hmac

from litestar import Request
from litestar.exceptions.http_exceptions import RequestEntityTooLarge

from ..service import Service


def service_of(request: Request) -> Service:
    return request.app.state.service


async def read_body(request: Request) -> bytes | None:
    """The request body, or None when it exceeds the configured limit."""
    try:
        return await request.body()
    except RequestEntityTooLarge:
        return None


def same_secret(given: str | None, expected: str) -> bool:
    """Constant-time comparison, so a caller cannot learn a secret byte by byte from timing."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())
