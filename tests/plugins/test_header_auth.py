"""Header auth behind an authenticating proxy."""

from __future__ import annotations

import msgspec
from websockets.asyncio.client import connect
from websockets.datastructures import HeadersLike

from tests.support.metrics import value

# Where the authenticating proxy connects from in the spoofing tests; the tests never do.
PROXY = "10.0.0.1"


async def first_frame_or_close(
    url: str, headers: HeadersLike, source: str = "127.0.0.1"
) -> tuple[str | None, int | None]:
    """The user the service admits, or the close code it refuses with. `source` is the local
    address the connection comes from: any 127.x.y.z address reaches a loopback service."""
    async with connect(url, additional_headers=headers, local_addr=(source, 0)) as ws:
        try:
            return msgspec.json.decode(await ws.recv())["user_id"], None
        except Exception:
            return None, ws.close_code


async def test_user_header_is_trusted_from_a_trusted_proxy_address(start_service):
    service = start_service("--auth", "header", env={"TASKSYNC_HEADER_AUTH_TRUSTED_PROXIES": "127.0.0.0/8"})
    assert await first_frame_or_close(service.ws, {"X-Forwarded-User": "pat"}) == ("pat", None)
    assert await first_frame_or_close(service.ws, {}) == (None, 4001)
    assert value(service, "tasksync_auth_failures_total", reason="missing_user_header") == 1
    # A proxy that adds its user header instead of replacing the client's lets both through.
    both = [("X-Forwarded-User", "mallory"), ("X-Forwarded-User", "pat")]
    assert await first_frame_or_close(service.ws, both) == (None, 4001)
    assert value(service, "tasksync_auth_failures_total", reason="repeated_user_header") == 1


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


# Every way a client can name an address in a header, each naming the trusted proxy. A header
# is the client's word: only the TCP peer address proves where a connection comes from.
SPOOFED_PROXY_ADDRESSES: dict[str, list[tuple[str, str]]] = {
    "X-Forwarded-For: the proxy": [("X-Forwarded-For", PROXY)],
    "X-Forwarded-For: a chain ending at the proxy": [("X-Forwarded-For", f"1.2.3.4, {PROXY}")],
    "X-Forwarded-For twice, the proxy last": [("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-For", PROXY)],
    "X-Forwarded-For: the proxy with a port": [("X-Forwarded-For", f"{PROXY}:4711")],
    "X-Real-IP: the proxy": [("X-Real-IP", PROXY)],
    "Forwarded: for=the proxy": [("Forwarded", f"for={PROXY};proto=https")],
}


async def test_no_forwarding_header_makes_a_loopback_client_the_trusted_proxy(start_service):
    service = start_service("--auth", "header", env={"TASKSYNC_HEADER_AUTH_TRUSTED_PROXIES": f"{PROXY}/32"})
    outcomes = {
        name: await first_frame_or_close(service.ws, [*spoof, ("X-Forwarded-User", "mallory")])
        for name, spoof in SPOOFED_PROXY_ADDRESSES.items()
    }
    assert outcomes == dict.fromkeys(SPOOFED_PROXY_ADDRESSES, (None, 4001))
    assert value(service, "tasksync_auth_failures_total", reason="untrusted_proxy") == len(SPOOFED_PROXY_ADDRESSES)


async def test_a_loopback_peer_that_is_not_the_proxy_cannot_claim_the_proxy_address(start_service):
    # The proxy is a sidecar on 127.0.0.1; another local process connects from 127.0.0.2. Container
    # images often set uvicorn's own FORWARDED_ALLOW_IPS=*: it must not matter either.
    env = {"TASKSYNC_HEADER_AUTH_TRUSTED_PROXIES": "127.0.0.1/32", "FORWARDED_ALLOW_IPS": "*"}
    service = start_service("--auth", "header", env=env)
    for spoof in ([("X-Forwarded-For", "127.0.0.1")], [("X-Real-IP", "127.0.0.1")], [("Forwarded", "for=127.0.0.1")]):
        headers = [*spoof, ("X-Forwarded-User", "mallory")]
        assert await first_frame_or_close(service.ws, headers, source="127.0.0.2") == (None, 4001), spoof
    # The proxy itself is admitted.
    assert await first_frame_or_close(service.ws, {"X-Forwarded-User": "pat"}) == ("pat", None)


async def test_listed_forwarders_name_the_client_in_logs_but_the_peer_address_decides_auth(start_service):
    # Every loopback address forwards (for logging), only 127.0.0.1 is the authenticating proxy.
    service = start_service(
        "--auth", "header", "--forwarded-allow-ips", "127.0.0.0/8",
        env={"TASKSYNC_HEADER_AUTH_TRUSTED_PROXIES": "127.0.0.1/32"},
    )
    # The proxy passes on its client's address: the user is admitted, the client is what is logged.
    proxied = [("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-User", "pat")]
    assert await first_frame_or_close(service.ws, proxied) == ("pat", None)
    assert '203.0.113.7:0 - "WebSocket /ws" [accepted]' in service.log()
    # A listed forwarder that is not the proxy names the proxy: refused all the same.
    spoofed = [("X-Forwarded-For", "127.0.0.1"), ("X-Forwarded-User", "mallory")]
    assert await first_frame_or_close(service.ws, spoofed, source="127.0.0.2") == (None, 4001)
    assert value(service, "tasksync_auth_failures_total", reason="untrusted_proxy") == 1


def test_a_forwarder_that_is_not_an_address_refuses_to_start(start_service):
    service = start_service("--forwarded-allow-ips", "proxy.internal", wait_ready=False)
    assert service.process.wait(20) == 2
    assert "forwarded_allow_ips" in service.log()
