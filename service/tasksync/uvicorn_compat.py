"""The uvicorn internals TaskSync's transports (transport.py) and server (server.py) build on,
checked on import.

transport.py subclasses uvicorn's sans-I/O WebSocket protocol and its httptools HTTP protocol,
overrides their callbacks and reads their state; server.py replaces `Server.main_loop` and
`Server.shutdown`, which read the server's state. None of that is uvicorn's public API, so a
uvicorn outside the tested range may lack a part of it. Checked here, such a uvicorn fails at
startup with a message naming the supported versions, instead of an AttributeError on the
first connection or, worse, flow control that silently never engages: before 0.52.1 uvicorn's
WebSocket protocol never clears `writable`, so a slow client is never closed (1013), a stalled
one never aborted, and their write buffers grow without bound.

The ranges are pyproject.toml's (tests/unit/test_dependencies.py keeps the two in step).
"""

from __future__ import annotations

import dis
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version

SUPPORTED_UVICORN = "uvicorn[standard]>=0.52.1,<0.55"
SUPPORTED_WEBSOCKETS = "websockets>=17.0,<18"


class UnsupportedUvicorn(ImportError):
    """The installed uvicorn (or its websockets) lacks a part TaskSync's transports rely on."""


def _installed(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "not installed"


def _unsupported(missing: Iterable[str]) -> UnsupportedUvicorn:
    return UnsupportedUvicorn(
        f"TaskSync supports {SUPPORTED_UVICORN} with {SUPPORTED_WEBSOCKETS}; installed are "
        f"uvicorn {_installed('uvicorn')} and websockets {_installed('websockets')}, which lack "
        f"{', '.join(missing)}. Install a supported version: pip install '{SUPPORTED_UVICORN}'"
    )


try:
    from uvicorn.logging import TRACE_LOG_LEVEL
    from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    from uvicorn.server import Server, ServerState
    from websockets.http11 import Request
    from websockets.protocol import Protocol
    from websockets.server import ServerProtocol
except ImportError as exc:  # uvicorn before 0.35 has no sans-I/O protocol; without [standard], no httptools
    raise _unsupported([f"a module ({exc})"]) from exc

__all__ = ["STATUS_LINE", "TRACE_LOG_LEVEL", "HttpToolsProtocol", "UnsupportedUvicorn", "WebSocketsSansIOProtocol"]


def _assigned_attributes(cls: type) -> set[str]:
    """The instance attributes `cls`'s own methods (and its bases') assign: most of the state
    transport.py reads is only set in `__init__` or `connection_made`, so it cannot be looked
    up on the class. Read from the byte code, which is there even where sources are not."""
    names: set[str] = set()
    for klass in cls.__mro__:
        for member in vars(klass).values():
            code = getattr(member, "__code__", None)
            if code is not None:
                names.update(i.argval for i in dis.get_instructions(code) if i.opname == "STORE_ATTR")
    return names


# What transport.py and server.py use, per class: the methods they override or call, the
# attributes they read.
# `handshake_complete` and `close_sent` are also intercepted where uvicorn assigns them (they are
# properties on WebSocketProtocol), so they must be plain assignments in uvicorn, as checked here.
_METHODS: dict[type, tuple[str, ...]] = {
    WebSocketsSansIOProtocol: (
        "send", "receive", "pause_writing", "resume_writing", "connection_lost", "data_received", "handle_connect",
        "keepalive_timeout",
    ),
    HttpToolsProtocol: (
        "connection_made", "data_received", "connection_lost", "on_message_begin", "on_headers_complete",
        "on_message_complete", "handle_websocket_upgrade",
    ),
    ServerProtocol: ("data_to_send", "send_text", "accept"),
    # The frame parser a handshake handed over already parsed (`WebSocketProtocol.upgrade`) runs.
    Protocol: ("parse",),
    Server: ("main_loop", "on_tick", "shutdown"),
}
_ATTRIBUTES: dict[type, tuple[str, ...]] = {
    WebSocketsSansIOProtocol: (
        "queue", "writable", "read_paused", "handshake_complete", "close_sent", "request", "response",
        "conn", "transport", "loop", "scope",
    ),
    HttpToolsProtocol: (
        "transport", "loop", "cycle", "pipeline", "server_state", "config", "app_state", "connections", "logger",
        "client", "scope", "url", "ws_protocol_class",
    ),
    RequestResponseCycle: ("response_started", "response_complete", "disconnected", "message_event"),
    ServerState: ("default_headers", "connections", "tasks"),
    Server: ("config", "server_state", "servers", "force_exit", "lifespan"),
    ServerProtocol: ("handshake_exc", "extensions", "parser"),
}
# The answers transport.py writes itself, by status line.
_STATUS_LINES = (408, 431)
# The `Transport` methods transport.py adds to uvicorn's WebSocket protocol: a uvicorn that
# defines one of them itself would have its own calls land in TaskSync's.
_ADDED_METHODS = ("write_now", "send_text", "send_close", "abort")


def _missing_parts() -> list[str]:
    missing = [
        f"{cls.__name__}.{name}()"
        for cls, names in _METHODS.items()
        for name in names
        if not callable(getattr(cls, name, None))
    ]
    for cls, names in _ATTRIBUTES.items():
        assigned = _assigned_attributes(cls)
        missing += [f"{cls.__name__}.{name}" for name in names if name not in assigned]
    # Write flow control: the protocol's own pause_writing() clearing `writable`, which every
    # send waits on (asyncio.Protocol's is a no-op, and uvicorn's first one is in 0.52.1).
    pause_writing = vars(WebSocketsSansIOProtocol).get("pause_writing")
    if pause_writing is None or "writable" not in pause_writing.__code__.co_names:
        missing.append("write flow control (WebSocketsSansIOProtocol.pause_writing clearing `writable`)")
    missing += [f"STATUS_LINE[{status}]" for status in _STATUS_LINES if status not in STATUS_LINE]
    # `handshake_request()` builds a Request with the method and protocol it was sent with.
    fields = getattr(Request, "__dataclass_fields__", {})
    missing += [f"Request.{name}" for name in ("path", "headers", "method", "protocol") if name not in fields]
    missing += [
        f"room for WebSocketsSansIOProtocol.{name}() (uvicorn defines its own)"
        for name in _ADDED_METHODS
        if hasattr(WebSocketsSansIOProtocol, name)
    ]
    return missing


def require_supported_uvicorn() -> None:
    """Raise UnsupportedUvicorn, naming the supported versions, when a part is missing."""
    missing = _missing_parts()
    if missing:
        raise _unsupported(missing)


require_supported_uvicorn()
