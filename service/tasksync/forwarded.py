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
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any, cast

from uvicorn._types import ASGI3Application
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

# Any ASGI application: Litestar's and uvicorn's type their scopes and messages differently.
AsgiApp = Callable[[Any, Any, Any], Awaitable[None]]

PEER_HOST_KEY = "tasksync.peer_host"


def forwarded_headers(app: AsgiApp, forwarded_allow_ips: list[str]) -> AsgiApp:
    """`app` with X-Forwarded-For/-Proto applied to the scope's client and scheme for requests
    whose peer is in `forwarded_allow_ips`, the peer itself kept under PEER_HOST_KEY."""
    # uvicorn takes an entry without a prefix length as one address and silently ignores an
    # entry it cannot parse; as networks, "10.0.0.1" and "10.0.0.0/8" both mean what they say.
    networks = [str(ipaddress.ip_network(entry, strict=False)) for entry in forwarded_allow_ips]
    inner = ProxyHeadersMiddleware(cast(ASGI3Application, app), trusted_hosts=networks) if networks else app
    return _KeepPeer(inner)


class _KeepPeer:
    """Records the TCP peer before anything inside can rewrite the scope's client."""

    def __init__(self, app: AsgiApp) -> None:
        self.app = app

    # Returns the app's coroutine rather than awaiting it: a coroutine frame of its own would
    # stay on every WebSocket's stack for the connection's whole life.
    def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> Awaitable[None]:
        client = scope.get("client")
        if scope["type"] != "lifespan" and client:
            scope[PEER_HOST_KEY] = client[0]
        return self.app(scope, receive, send)


def peer_host(scope: Mapping[str, Any]) -> str | None:
    """The address the connection comes from at the TCP level, whatever a header says. Without
    `forwarded_headers()` around the app (an app built in-process, as some tests do), the client
    is the peer the server reported."""
    if PEER_HOST_KEY in scope:
        return scope[PEER_HOST_KEY]
    client = scope.get("client")
    return client[0] if client else None
