"""The listening socket, opened before the application is loaded.

A restarted process takes about half a second to import the application and start it (the
service, its broker, the plugins). Listening only at the end of that, as uvicorn does, refuses
every client that reconnects meanwhile, and each refused client then waits out its backoff
(1 s, then 2 s: the web client's) although the server is up long before. Listening first lets
the kernel complete their TCP handshakes into the accept queue, where their upgrade requests
wait until the application starts and answers them in arrival order.
"""

from __future__ import annotations

import errno
import socket

# Connections the kernel completes and holds for the application (capped by the kernel's
# net.core.somaxconn, 4096 on current Linux). A pod's clients all reconnect within a second of
# a restart; past this many, the kernel drops their final handshake packets and they retry
# the handshake about a second later.
LISTEN_BACKLOG = 4096


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to `host`:`port` and listening. Opened before anything starts, so a port
    in use is one plain error instead of a bind failure after the application has started."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise RuntimeError(
                f"port {port} on {host} is already in use (another TaskSync or another server); "
                f"pick another port: make demo PORT={port + 1}, or tasksync serve --port {port + 1}"
            ) from None
        raise RuntimeError(f"cannot listen on {host} port {port}: {exc.strerror or exc}") from None
    sock.listen(LISTEN_BACKLOG)
    return sock
