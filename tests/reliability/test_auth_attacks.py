"""Auth attacks against one JWT-protected service: every one refused with its documented code,
and no token ever appears in the service's log."""

from __future__ import annotations

import asyncio
import time

import httpx
import jwt
import msgspec
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tasksync.client import SyncClient
from tasksync.protocol import Auth, TaskUpdate
from tests.plugins.test_jwt_auth import _hs_rs_confusion
from tests.support.jwt_tokens import JwksServer, RsaKey, claims, hs256, jwt_env, rs256, unsigned
from tests.support.waiting import eventually

ORIGIN = "https://app.example.com"


@pytest.fixture(scope="module")
def rsa_key() -> RsaKey:
    return RsaKey("attack-key")


@pytest.fixture
def guarded(start_service, rsa_key):
    with JwksServer([rsa_key]) as jwks:
        env = jwt_env(jwks, TASKSYNC_ALLOWED_ORIGINS=ORIGIN, TASKSYNC_API_KEYS="backend")
        yield start_service("--auth", "jwt", "--auth-message-timeout", "1", env=env)


async def outcome(url: str, token: str | None = None, origin: str | None = ORIGIN, frame_token: str | None = None):
    """The close code the handshake ends with, or the HTTP status it was refused with."""
    protocols = ["tasksync.v1"] + ([f"bearer.{token}"] if token else [])
    try:
        async with connect(url, subprotocols=protocols, origin=origin) as ws:
            if frame_token:
                await ws.send(msgspec.json.encode(Auth(token=frame_token)).decode())
            async with asyncio.timeout(5):
                try:
                    while True:
                        frame = msgspec.json.decode(await ws.recv())
                        if frame["type"] == "connected":
                            return ("connected", frame["user_id"])
                except Exception:
                    return ("closed", ws.close_code)
    except InvalidStatus as refused:
        return ("http", refused.response.status_code)


async def test_every_attack_is_refused_and_no_token_reaches_the_log(guarded, rsa_key, report):
    url = guarded.ws
    attacker = RsaKey("attack-key")  # same kid as the real key, different private key
    tokens: dict[str, str] = {
        "forged signature (HS256)": hs256(claims("alice"), secret="not-the-secret-but-long-enough!!"),
        "forged signature (RS256, same kid)": rs256(claims("alice"), attacker),
        "expired": hs256(claims("alice", ttl=-5)),
        "alg none": unsigned(claims("alice")),
        "wrong audience": hs256(claims("alice", aud="other")),
        "wrong issuer": hs256(claims("alice", iss="https://evil.test")),
        "no subject": hs256(claims(None)),
    }
    results: dict[str, tuple] = {}
    for name, token in tokens.items():
        results[name] = await outcome(url, token)
    # HS/RS key confusion, crafted as tests/plugins/test_jwt_auth.py does.
    confusion = _hs_rs_confusion(rsa_key)
    tokens["HS/RS key confusion"] = confusion
    results["HS/RS key confusion"] = await outcome(url, confusion)
    # Oversized: in the header (HTTP 431 before any plugin) and in a first frame (4001).
    huge = hs256(claims("alice", pad="x" * 9000))
    tokens["oversized"] = huge
    results["oversized token in the handshake"] = await outcome(url, huge)
    results["oversized token in a first frame"] = await outcome(url, frame_token=huge)
    # Query-string forms: a token there is ignored (the option is off), a user id too.
    good = hs256(claims("alice"))
    tokens["valid"] = good
    results["token in the query string (option off)"] = await outcome(f"{url}?token={good}")
    results["user id in the query with JWT on"] = await outcome(f"{url}?user_id=alice")
    # A cross-origin page, even holding a valid token.
    results["cross-origin handshake"] = await outcome(url, good, origin="https://evil.example.net")

    expected = {name: ("closed", 4001) for name in tokens if name not in ("oversized", "valid")}
    expected.update({
        "oversized token in the handshake": ("http", 431),
        "oversized token in a first frame": ("closed", 4001),
        "token in the query string (option off)": ("closed", 4001),
        "user id in the query with JWT on": ("closed", 4001),
        "cross-origin handshake": ("http", 403),
    })
    assert results == expected

    # Replayed after expiry: a token that worked is refused once expired.
    # A whole second: PyJWT compares `int(exp)` with the time, so `time.time() + 1` would leave
    # anything from a second to nothing (refused at once when made just before a second ends).
    short = hs256({**claims("alice"), "exp": int(time.time()) + 2})
    tokens["short-lived"] = short
    assert await outcome(url, short) == ("connected", "alice")
    expires = jwt.decode(short, options={"verify_signature": False})["exp"]
    await eventually(lambda: time.time() > expires + 0.2, what="the token's expiry to pass")
    assert await outcome(url, short) == ("closed", 4001)

    # Another user's valid token grants that user only: it never sees alice's events, and a
    # live connection cannot switch to it.
    bob = hs256(claims("bob"))
    tokens["bob"] = bob
    async with SyncClient(url, token=good) as alice_socket, SyncClient(url, token=bob) as bob_socket:
        async with httpx.AsyncClient() as http:
            await http.post(guarded.http + "/v1/events", headers={"authorization": "Bearer backend"},
                            json=[{"event": "task.created", "user_id": "alice", "task": {"secret": 1}},
                                  {"event": "task.created", "user_id": "bob", "task": {"marker": 1}}])
        async with asyncio.timeout(5):
            while not isinstance(frame := await bob_socket.receive(), TaskUpdate):
                pass
        assert frame.task == {"marker": 1}  # bob's first event is his own marker, not alice's task
        await alice_socket.send(Auth(token=bob))
        code, _ = await alice_socket.wait_closed()
        assert code == 4001

    log = guarded.log()
    leaked = [name for name, token in tokens.items() if token in log]
    assert leaked == []
    report.record(
        "auth attacks (JWT, origin allowlist)",
        **{
            "inputs tried": f"{len(results) + 2} attacks",
            "events lost": 0,
            "cross-user frames": 0,
            "notes": "refused: " + "; ".join(f"{name} -> {kind} {code}" for name, (kind, code) in results.items())
            + "; replay after expiry -> 4001; switch to another user's token -> 4001; tokens in the log: 0",
        },
    )
