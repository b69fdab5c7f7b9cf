"""An HTTP front for the test API server that can hide API groups from discovery.

A Kubernetes client pointed at it talks plain HTTP; it forwards every request to the API server
(TLS, with the caller's own bearer token) and streams the answer back, watches included. While a
group is hidden, discovery says it does not exist: it is left out of `GET /apis`, and
`GET /apis/<group>` and `GET /apis/<group>/<version>` answer 404, although the group's resources
are served. That is what clients see while the API server's discovery lags a CRD that is already
Established, held for as long as the test needs instead of a few racy milliseconds.
"""

from __future__ import annotations

import ssl
import time
from pathlib import Path
from types import TracebackType

import aiohttp
from aiohttp import web

from tests.support.servers import free_port

# Per connection, or recomputed by aiohttp; forwarding them would corrupt the relayed stream.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "host"}
)

NOT_FOUND = {
    "kind": "Status",
    "apiVersion": "v1",
    "metadata": {},
    "status": "Failure",
    "message": "the server could not find the requested resource",
    "reason": "NotFound",
    "code": 404,
}


def discovery_group(path: str) -> str | None:
    """The group a discovery document is about: /apis/<group> or /apis/<group>/<version>."""
    parts = path.strip("/").split("/")
    if parts[0] == "apis" and len(parts) in (2, 3):
        return parts[1]
    return None


class DiscoveryProxy:
    def __init__(self, upstream: str, ca_path: Path) -> None:
        self.upstream = upstream
        self.ca_path = ca_path
        self.port = free_port()
        self.hidden: set[str] = set()
        # (time.monotonic(), path) of every discovery answer that hid something.
        self.hiding_answers: list[tuple[float, str]] = []
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answers_since(self, since: float, path: str) -> int:
        return sum(1 for at, answered in self.hiding_answers if at >= since and answered == path)

    async def __aenter__(self) -> DiscoveryProxy:
        context = ssl.create_default_context(cafile=str(self.ca_path))
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context), timeout=aiohttp.ClientTimeout(total=None)
        )
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        # Nothing to drain at the end of a test: whatever still streams is cut.
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Upstream first: that ends the relayed watches, which the server would otherwise wait for.
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        if request.method == "GET" and discovery_group(request.path) in self.hidden:
            self.hiding_answers.append((time.monotonic(), request.path))
            return web.json_response(NOT_FOUND, status=404)
        headers = {key: value for key, value in request.headers.items() if key.lower() not in HOP_BY_HOP}
        body = await request.read()
        async with self._session.request(
            request.method, self.upstream + str(request.rel_url), headers=headers, data=body or None
        ) as upstream:
            if request.method == "GET" and request.path == "/apis" and self.hidden and upstream.ok:
                return web.json_response(self._without_hidden(await upstream.json(content_type=None)))
            response = web.StreamResponse(
                status=upstream.status,
                headers={k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP},
            )
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            except (ConnectionResetError, aiohttp.ClientConnectionError):
                return response  # one side went away mid-stream (a watch closed)
            await response.write_eof()
            return response

    def _without_hidden(self, listing: dict[str, object]) -> dict[str, object]:
        self.hiding_answers.append((time.monotonic(), "/apis"))
        # APIGroupList ("groups") or aggregated discovery ("items"), whichever was asked for.
        if isinstance(listing.get("groups"), list):
            listing["groups"] = [g for g in listing["groups"] if g.get("name") not in self.hidden]
        if isinstance(listing.get("items"), list):
            listing["items"] = [
                g for g in listing["items"] if g.get("metadata", {}).get("name") not in self.hidden
            ]
        return listing
