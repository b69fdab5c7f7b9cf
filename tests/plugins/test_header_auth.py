"""Header auth behind an authenticating proxy."""

from __future__ import annotations

import msgspec
from websockets.asyncio.client import connect

from tests.support.metrics import value


async def first_frame_or_close(url: str, headers: dict[str, str]) -> tuple[str | None, int | None]:
    async with connect(url, additional_headers=headers) as ws:
        try:
            return msgspec.json.decode(await ws.recv())["user_id"], None
        except Exception:
            return None, ws.close_code


async def test_user_header_is_trusted_from_a_trusted_proxy_address(start_service):
    service = start_service("--auth", "header", env={"TASKSYNC_HEADER_AUTH_TRUSTED_PROXIES": "127.0.0.0/8"})
    assert await first_frame_or_close(service.ws, {"X-Forwarded-User": "pat"}) == ("pat", None)
    assert await first_frame_or_close(service.ws, {}) == (None, 4001)
    assert value(service, "tasksync_auth_failures_total", reason="missing_user_header") == 1


async def test_user_header_from_anywhere_else_is_refused_unless_the_secret_matches(start_service):
    env = {"TASKSYNC_HEADER_AUTH_TRUSTED_PROXIES": "10.0.0.0/8", "TASKSYNC_HEADER_AUTH_SECRET": "proxy-secret"}
    service = start_service("--auth", "header", env=env)
    assert await first_frame_or_close(service.ws, {"X-Forwarded-User": "pat"}) == (None, 4001)
    assert await first_frame_or_close(
        service.ws, {"X-Forwarded-User": "pat", "X-TaskSync-Proxy-Secret": "wrong"}
    ) == (None, 4001)
    assert await first_frame_or_close(
        service.ws, {"X-Forwarded-User": "pat", "X-TaskSync-Proxy-Secret": "proxy-secret"}
    ) == ("pat", None)
    assert value(service, "tasksync_auth_failures_total", reason="untrusted_proxy") == 2


def test_header_auth_without_any_check_refuses_to_start(start_service):
    service = start_service("--auth", "header", wait_ready=False)
    assert service.process.wait(20) != 0
    assert "TRUSTED_PROXIES" in service.log()
