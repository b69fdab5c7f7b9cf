"""Where a connection comes from: the TCP peer, and the client a trusted proxy names.

uvicorn's proxy-header handling replaces the ASGI scope's `client` with the address an
X-Forwarded-For header names, when the peer is a listed forwarder. That is the address worth
logging, and the wrong one for any decision that trusts the network: a forwarder passes on
whatever its own client sent, so only the TCP peer proves where a connection comes from.
`forwarded_headers()` applies uvicorn's handling for the listed forwarders only and keeps the
peer in the scope; `peer_host()` reads it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from uvicorn._types import ASGI3Application, ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

PEER_HOST_KEY = "tasksync.peer_host"


def forwarded_headers(app: ASGI3Application, forwarded_allow_ips: list[str]) -> ASGI3Application:
    """`app` with X-Forwarded-For/-Proto applied to the scope's client and scheme for requests
    whose peer is in `forwarded_allow_ips`, the peer itself kept under PEER_HOST_KEY."""
    # uvicorn takes an entry without a prefix length as one address and silently ignores an
    # entry it cannot parse; as networks, "10.0.0.1" and "10.0.0.0/8" both mean what they say.
    networks = [str(ipaddress.ip_network(entry, strict=False)) for entry in forwarded_allow_ips]
    return _KeepPeer(ProxyHeadersMiddleware(app, trusted_hosts=networks) if networks else app)


class _KeepPeer:
    """Records the TCP peer before anything inside can rewrite the scope's client."""

    def __init__(self, app: ASGI3Application) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] != "lifespan" and scope.get("client"):
            scope[PEER_HOST_KEY] = scope["client"][0]  # type: ignore[typeddict-unknown-key]
        await self.app(scope, receive, send)


def peer_host(scope: Mapping[str, Any]) -> str | None:
    """The address the connection comes from at the TCP level, whatever a header says. Without
    `forwarded_headers()` around the app (an app built in-process, as some tests do), the client
    is the peer the server reported."""
    if PEER_HOST_KEY in scope:
        return scope[PEER_HOST_KEY]
    client = scope.get("client")
    return client[0] if client else None
