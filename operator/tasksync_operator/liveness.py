"""The liveness endpoint of a standby replica.

kopf serves the liveness endpoint while it runs, which with leader election is only on the
leader. A standby answers the same URL itself, or the kubelet would restart it for failing its
livenessProbe; it stops before kopf starts, which then binds the same address.
"""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import AsyncIterator

from aiohttp import web


async def _standing_by(_: web.Request) -> web.Response:
    return web.json_response({"role": "standby"})


@contextlib.asynccontextmanager
async def serve_standby_liveness(url: str | None) -> AsyncIterator[None]:
    """Answer 200 at `url` (kopf's --liveness format, e.g. http://0.0.0.0:8080/healthz)."""
    if url is None:
        yield
        return
    parsed = urllib.parse.urlsplit(url)
    app = web.Application()
    app.router.add_get(parsed.path or "/", _standing_by)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, parsed.hostname, parsed.port).start()
        yield
    finally:
        await runner.cleanup()
