"""Run the application under uvicorn with TaskSync's graceful drain on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
from types import FrameType
from typing import Any

import uvicorn

from .app import create_app
from .forwarded import forwarded_headers
from .listener import LISTEN_BACKLOG
from .plugins import PluginError
from .service import Service
from .settings import Settings
from .transport import RequestBounds, http_protocol, quiet_client_protocol_errors, websocket_protocol

log = logging.getLogger("tasksync.server")

# How often the shutdown looks whether the last connection and task are gone.
SHUTDOWN_POLL = 0.01
# uvicorn's main loop period (`on_tick` counts ten of them to a second).
MAIN_LOOP_TICK = 0.1


class DrainingServer(uvicorn.Server):
    """uvicorn closes every WebSocket at once with 1012 when told to exit. On the first SIGTERM
    this server drains first (see Service.drain), then lets uvicorn finish; a second signal
    exits at once. In development mode the drain window is 0 unless set (see load_settings)."""

    def __init__(self, config: uvicorn.Config, service: Service) -> None:
        super().__init__(config)
        self.service = service
        self._drain_task: asyncio.Task[None] | None = None
        self._drained = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            # Last of the startup lines, so the address is on screen once it answers.
            log.info("%s", listening_message(self.service.settings, self.servers[0].sockets[0].getsockname()[1]))

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and self._drain_task is None and not self.should_exit:
            loop = asyncio.get_event_loop()
            loop.call_soon_threadsafe(self._start_drain)
            return
        super().handle_exit(sig, frame)

    def _start_drain(self) -> None:
        self._drain_task = asyncio.get_running_loop().create_task(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        try:
            await self.service.drain()
        finally:
            self.should_exit = True
            self._drained.set()

    async def main_loop(self) -> None:
        """uvicorn's main loop (its once-a-second housekeeping is `on_tick`), except that the end
        of the drain wakes it at once: on its own it looks at `should_exit` every 0.1 s."""
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(MAIN_LOOP_TICK):
                    await self._drained.wait()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's shutdown, paced by what is still open rather than by a clock: uvicorn
        sleeps 0.1 s after asking connections to close and then looks every 0.1 s, which kept
        an exiting process 0.15-0.3 s after its drain (the reconnect storm's old process), while
        a restarting pod's clients wait for the new one. Same steps, same bound
        (`timeout_graceful_shutdown`), same order."""
        log.info("shutting down")
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        state = self.server_state
        for connection in list(state.connections):
            connection.shutdown()
        try:
            async with asyncio.timeout(self.config.timeout_graceful_shutdown):
                while (state.connections or state.tasks) and not self.force_exit:
                    await asyncio.sleep(SHUTDOWN_POLL)
                for server in self.servers:
                    await server.wait_closed()
        except TimeoutError:
            log.error("cancelling %d running task(s): graceful shutdown timed out", len(state.tasks))
            for task in state.tasks:
                task.cancel(msg="graceful shutdown timed out")
        if not self.force_exit:
            await self.lifespan.shutdown()


def uvicorn_config(service: Service, **overrides: Any) -> uvicorn.Config:
    """How TaskSync runs under uvicorn. `overrides` replace single options (the benchmarks
    compare uvicorn's other WebSocket implementations and loops this way)."""
    settings = service.settings
    metrics = service.metrics
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "ssl_certfile": settings.tls_certfile or None,
        "ssl_keyfile": settings.tls_keyfile or None,
        # uvicorn's own ceiling; the service applies the (reloadable) frame limit below it.
        "ws_max_size": max(1 << 20, settings.max_frame_bytes),
        "lifespan": "on",
        # uvicorn listens again on the socket listener.py opened: the same queue length.
        "backlog": LISTEN_BACKLOG,
        # Said rather than guessed: uvicorn tells ASGI 2 from 3 by whether the app's __call__ is a
        # coroutine function, and forwarded.py's outermost layer returns the app's coroutine.
        "interface": "asgi3",
        "ws": websocket_protocol(
            settings.send_timeout,
            metrics.transport_cutoffs.labels("write_stalled").inc,
            metrics.transport_cutoffs.labels("keepalive_timeout").inc,
        ),
        # uvicorn's own WebSocket pings; None turns them off.
        "ws_ping_interval": settings.keepalive_interval or None,
        "ws_ping_timeout": settings.keepalive_timeout,
        # Browsers always offer permessage-deflate and uvicorn accepts by default: every socket
        # then holds a zlib compressor and decompressor (about 37 KiB idle) and compresses each
        # frame on its own, for JSON frames of a few hundred bytes. Off, one encoded frame serves
        # every socket.
        "ws_per_message_deflate": False,
        "http": http_protocol(
            RequestBounds(
                head_timeout=settings.handshake_timeout,
                max_head_bytes=settings.max_request_head_bytes,
                body_timeout=settings.body_timeout,
                on_head_timeout=metrics.handshakes_refused.labels("handshake_timeout").inc,
                on_head_too_large=metrics.handshakes_refused.labels("head_too_large").inc,
                on_body_timeout=metrics.transport_cutoffs.labels("body_timeout").inc,
            )
        ),
        # After the drain, whatever is left gets a moment to finish before uvicorn cuts it.
        "timeout_graceful_shutdown": 5,
        # uvicorn's own proxy-header handling is on by default for 127.0.0.1 (or whatever
        # FORWARDED_ALLOW_IPS says) and loses the peer address that header auth must check;
        # forwarded_headers() applies it for the configured forwarders only and keeps the peer.
        "proxy_headers": False,
        # Not uvicorn's own handlers and format: its loggers propagate to the root logger, which
        # `tasksync serve` configures, so every line has one format.
        "log_config": None,
    }
    options.update(overrides)
    app = forwarded_headers(create_app(service=service), settings.forwarded_allow_ips)
    return uvicorn.Config(app, **options)


def listening_message(settings: Settings, port: int) -> str:
    scheme = "https" if settings.tls_certfile else "http"
    # A wildcard address is not one to open; the machine itself is.
    host = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(settings.host, settings.host)
    host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    if settings.dev:
        return (
            f"TaskSync demo: {scheme}://{host}:{port}/?user_id=alice "
            "(open it in two tabs; ?user_id=bob is another user; Ctrl-C stops)"
        )
    return f"TaskSync listening on {scheme}://{host}:{port}"


def run(settings: Settings, sock: socket.socket) -> None:
    """Serve on `sock` (listener.py) until a signal stops the server; `sock` is closed on return."""
    try:
        service = Service(settings)
    except PluginError as exc:
        sock.close()
        raise RuntimeError(str(exc)) from exc
    quiet_client_protocol_errors()
    DrainingServer(uvicorn_config(service), service).run(sockets=[sock])
    # The process is about to exit: Python's shutdown runs several full collections, which would
    # walk what is left for nothing (0.1-0.3 s after a drain of 5,000 sockets, while a restarting
    # pod's clients wait). Frozen objects are left to the exit.
    gc.freeze()
