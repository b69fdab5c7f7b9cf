"""JWT auth over real sockets: every accepted and refused case, both token forms, expiry."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time

import httpx
import jwt
import msgspec
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tasksync.auth import AuthRefused
from tasksync.client import SyncClient
from tasksync.protocol import Auth, TaskUpdate
from tasksync_plugins.jwt_auth import JwtSettings, VerifiedTokens, Verifier
from tests.service.test_delivery import next_update
from tests.support.events import payload
from tests.support.jwt_tokens import (
    SECRET,
    JwksServer,
    RsaKey,
    claims,
    hs256,
    jwt_env,
    rs256,
    unsigned,
)
from tests.support.metrics import value
from tests.support.waiting import eventually


@pytest.fixture(scope="module")
def rsa_key() -> RsaKey:
    return RsaKey("key-1")


@pytest.fixture
def jwt_service(start_service, rsa_key):
    with JwksServer([rsa_key]) as jwks:
        env = jwt_env(jwks, TASKSYNC_API_KEYS="backend-key")
        service = start_service("--auth", "jwt", "--auth-message-timeout", "1", env=env)
        service.jwks = jwks
        yield service


async def closed_with(url: str, token: str | None = None, **kwargs) -> tuple[int | None, str]:
    protocols = ["tasksync.v1"] + ([f"bearer.{token}"] if token else [])
    async with connect(url, subprotocols=protocols, **kwargs) as ws:
        try:
            async with asyncio.timeout(5):
                while True:
                    await ws.recv()
        except Exception:
            pass
        return ws.close_code, ws.close_reason


async def test_valid_hs256_token_in_the_subprotocol_connects_as_its_subject(jwt_service):
    client = SyncClient(jwt_service.ws, token=hs256(claims("alice")))
    connected = await client.connect()
    assert connected.user_id == "alice"
    assert client._ws.subprotocol == "tasksync.v1"  # the token is never echoed
    await client.close()


async def test_valid_rs256_token_from_the_jwks_server_connects(jwt_service, rsa_key):
    client = SyncClient(jwt_service.ws, token=rs256(claims("bob"), rsa_key))
    assert (await client.connect()).user_id == "bob"
    await client.close()


def _forged_rs256(rsa_key: RsaKey) -> str:
    return rs256(claims("mallory"), RsaKey(rsa_key.kid))  # same kid, another private key


def _hs_rs_confusion(rsa_key: RsaKey) -> str:
    # The classic attack: HS256 "signed" with the server's public key as the HMAC secret.
    header = {"alg": "HS256", "typ": "JWT", "kid": rsa_key.kid}
    signing_input = b".".join(
        jwt.utils.base64url_encode(msgspec.json.encode(part)) for part in (header, claims("mallory"))
    )
    signature = hmac.new(rsa_key.public_pem, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + jwt.utils.base64url_encode(signature)).decode()


REFUSED = [
    ("expired", lambda key: hs256(claims(ttl=-60))),
    ("not_yet_valid", lambda key: hs256(claims(nbf=time.time() + 600))),
    ("bad_signature", lambda key: hs256(claims(), secret="another-secret-of-sufficient-length!!")),
    ("bad_signature", _forged_rs256),
    ("alg_not_allowed", lambda key: unsigned(claims())),
    # With a secret configured, HS256 is checked against the secret only: the forgery fails.
    ("bad_signature", _hs_rs_confusion),
    ("wrong_audience", lambda key: hs256(claims(aud="someone-else"))),
    ("wrong_issuer", lambda key: hs256(claims(iss="https://evil.test"))),
    ("missing_claim", lambda key: hs256(claims(sub=None))),
    ("missing_claim", lambda key: hs256({k: v for k, v in claims().items() if k != "exp"})),
    ("malformed", lambda key: "not-a-jwt"),
]


@pytest.mark.parametrize(("reason", "make_token"), REFUSED, ids=[f"{r}-{i}" for i, (r, _) in enumerate(REFUSED)])
async def test_bad_tokens_are_refused_with_4001(jwt_service, rsa_key, reason, make_token):
    code, close_reason = await closed_with(jwt_service.ws, make_token(rsa_key))
    assert code == 4001, close_reason
    assert value(jwt_service, "tasksync_auth_failures_total", reason=reason) == 1
    assert "ey" not in close_reason  # the close reason never echoes a token


def _hs256_with_header(header: dict) -> str:
    """An HS256 token correctly signed with the secret, under a hand-made header."""
    signing_input = b".".join(
        jwt.utils.base64url_encode(msgspec.json.encode(part)) for part in (header, claims("mallory"))
    )
    signature = hmac.new(SECRET.encode(), signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + jwt.utils.base64url_encode(signature)).decode()


HOSTILE_HEADERS = [
    {"alg": "HS256", "typ": "JWT", "kid": 5},
    {"alg": "RS256", "typ": "JWT", "kid": {"nested": ["object"]}},
    {"alg": "HS256", "typ": "JWT", "crit": ["exp"]},
    {"alg": "HS256", "typ": "JWT", "crit": "not-a-list"},
]


async def test_a_token_header_pyjwt_refuses_is_an_invalid_token_not_a_server_error(jwt_service):
    for header in HOSTILE_HEADERS:
        code, close_reason = await closed_with(jwt_service.ws, _hs256_with_header(header))
        assert code == 4001, (header, close_reason)
    assert value(jwt_service, "tasksync_auth_failures_total", reason="invalid_token") == len(HOSTILE_HEADERS)
    errors = value(
        jwt_service, "tasksync_plugin_errors_total", plugin="jwt", hook="tasksync_authenticate", kind="error"
    )
    assert errors == 0
    assert "Traceback" not in jwt_service.log()


async def test_token_in_a_first_auth_frame(jwt_service):
    async with connect(jwt_service.ws, subprotocols=["tasksync.v1"]) as ws:
        await ws.send(msgspec.json.encode(Auth(token=hs256(claims("carol")))).decode())
        first = msgspec.json.decode(await ws.recv())
        assert first["type"] == "connected" and first["user_id"] == "carol"


async def test_oversized_tokens_are_refused_in_either_form(jwt_service):
    huge = hs256(claims(padding="x" * 9000))
    # In the handshake header: the WebSocket parser refuses header lines over 8 KiB.
    with pytest.raises(InvalidStatus) as refused:
        await closed_with(jwt_service.ws, huge)
    assert refused.value.response.status_code == 431
    # In a first auth frame: the plugin's own bound.
    async with connect(jwt_service.ws, subprotocols=["tasksync.v1"]) as ws:
        await ws.send(msgspec.json.encode(Auth(token=huge)).decode())
        await ws.wait_closed()
        assert ws.close_code == 4001
    assert value(jwt_service, "tasksync_auth_failures_total", reason="oversized") == 1


async def test_no_token_and_no_auth_frame_closes_4001_after_the_timeout(jwt_service):
    started = time.monotonic()
    code, reason = await closed_with(jwt_service.ws)
    assert code == 4001 and "no auth frame" in reason
    assert time.monotonic() - started < 4


async def test_user_id_in_the_query_is_ignored_with_jwt_auth(jwt_service):
    code, _ = await closed_with(jwt_service.ws + "?user_id=alice")
    assert code == 4001


async def test_token_query_parameter_is_refused_unless_enabled(jwt_service):
    code, _ = await closed_with(jwt_service.ws + "?token=" + hs256(claims("dan")))
    assert code == 4001


async def test_token_query_parameter_when_enabled_works_and_is_redacted_from_logs(start_service):
    service = start_service("--auth", "jwt", "--token-query-param", env={"TASKSYNC_JWT_SECRET": SECRET})
    token = hs256({"sub": "erin", "exp": time.time() + 300})
    async with connect(f"{service.ws}?token={token}") as ws:
        assert msgspec.json.decode(await ws.recv())["user_id"] == "erin"
    await eventually(lambda: "token=[redacted]" in service.log(), what="the access log line")
    assert token not in service.log()


async def test_no_spelling_of_a_credential_reaches_the_log_even_at_debug_level(start_service):
    service = start_service(
        "--auth", "jwt", "--token-query-param", "--log-level", "debug", env={"TASKSYNC_JWT_SECRET": SECRET}
    )
    tokens = [hs256({"sub": f"user{i}", "exp": time.time() + 300}) for i in range(3)]
    for query in (f"%74oken={tokens[0]}", f"tok%65n={tokens[1]}"):
        async with connect(f"{service.ws}?{query}") as ws:
            assert msgspec.json.decode(await ws.recv())["type"] == "connected"
    async with connect(service.ws, subprotocols=["tasksync.v1", f"bearer.{tokens[2]}"]) as ws:
        assert msgspec.json.decode(await ws.recv())["user_id"] == "user2"
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{service.http}/health?token={tokens[0]}")).status_code == 200
    await eventually(lambda: "GET /health?token=[redacted]" in service.log(), what="the access log line of /health")
    log = service.log()
    assert "bearer.[redacted]" in log  # the debug line of the handshake's headers is there, redacted
    assert not [token for token in tokens if token in log]
    assert "Traceback" not in log


async def test_live_connection_is_closed_4001_when_its_token_expires(jwt_service):
    client = SyncClient(jwt_service.ws, token=hs256(claims("fay", ttl=1.5)))
    await client.connect()
    started = time.monotonic()
    code, reason = await client.wait_closed()
    assert code == 4001 and "expired" in reason
    assert 0.5 < time.monotonic() - started < 5


async def test_in_band_refresh_keeps_the_connection_past_the_first_expiry(jwt_service):
    first_exp = time.time() + 1.5
    client = SyncClient(jwt_service.ws, token=hs256({**claims("gus"), "exp": first_exp}))
    await client.connect()
    await client.send(Auth(token=hs256(claims("gus", ttl=300))))
    await eventually(lambda: time.time() > first_exp + 1, timeout=10, what="the first token's expiry to pass")
    async with httpx.AsyncClient() as http:
        await http.post(jwt_service.http + "/v1/events", json=payload("gus", title="still here"),
                        headers={"authorization": "Bearer backend-key"})
    update = await next_update(client)
    assert isinstance(update, TaskUpdate) and update.task["title"] == "still here"
    await client.close()


async def test_refresh_naming_another_user_is_refused(jwt_service):
    client = SyncClient(jwt_service.ws, token=hs256(claims("hal")))
    await client.connect()
    await client.send(Auth(token=hs256(claims("ivy"))))
    code, reason = await client.wait_closed()
    assert code == 4001 and "another user" in reason
    assert value(jwt_service, "tasksync_auth_failures_total", reason="user_mismatch") == 1


async def test_unknown_kid_refreshes_the_jwks_but_not_more_often_than_the_floor(jwt_service, rsa_key):
    fetches_before = jwt_service.jwks.fetches
    for n in range(5):
        code, _ = await closed_with(jwt_service.ws, rs256(claims(), RsaKey(f"made-up-{n}")))
        assert code == 4001
    # The first unknown kid may trigger one fetch; the floor (30 s) stops the other four.
    assert jwt_service.jwks.fetches - fetches_before <= 1
    assert value(jwt_service, "tasksync_auth_failures_total", reason="unknown_key") == 5


async def test_hs_rs_confusion_without_a_secret_is_refused_by_algorithm(start_service, rsa_key):
    with JwksServer([rsa_key]) as jwks:
        service = start_service("--auth", "jwt", env={"TASKSYNC_JWT_JWKS_URL": jwks.url})
        code, _ = await closed_with(service.ws, _hs_rs_confusion(rsa_key))
        assert code == 4001
        assert value(service, "tasksync_auth_failures_total", reason="alg_not_allowed") == 1


async def test_rotated_key_is_picked_up_on_an_unknown_kid(start_service, rsa_key):
    new_key = RsaKey("key-2")
    with JwksServer([rsa_key]) as jwks:
        service = start_service(
            "--auth", "jwt", env={"TASKSYNC_JWT_JWKS_URL": jwks.url, "TASKSYNC_JWT_JWKS_MIN_REFRESH": "0"}
        )
        assert (await SyncClient(service.ws, token=rs256(claims("jo"), rsa_key)).connect()).user_id == "jo"
        jwks.keys = [rsa_key, new_key]
        assert (await SyncClient(service.ws, token=rs256(claims("kim"), new_key)).connect()).user_id == "kim"


class _CountingDecode:
    def __init__(self, monkeypatch) -> None:
        self.calls = 0
        real = jwt.decode

        def decode(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(jwt, "decode", decode)


async def test_a_token_presented_again_is_not_verified_again(monkeypatch):
    decode = _CountingDecode(monkeypatch)
    verifier = Verifier(JwtSettings(secret=SECRET))
    token = hs256(claims("alice"))
    first = await verifier.verify(token)
    again = await verifier.verify(token)
    assert first == again and again.user_id == "alice"
    assert decode.calls == 1


async def test_a_cached_token_is_verified_afresh_once_it_has_expired(monkeypatch):
    decode = _CountingDecode(monkeypatch)
    verifier = Verifier(JwtSettings(secret=SECRET, leeway=0))
    now = [time.time()]
    verifier.verified = VerifiedTokens(10, clock=lambda: now[0])
    token = hs256(claims("alice", ttl=60))
    principal = await verifier.verify(token)
    now[0] = principal.expires_at  # the instant it lapses, the cache no longer vouches for it
    await verifier.verify(token)
    assert decode.calls == 2


async def test_the_cache_is_bounded_and_can_be_turned_off(monkeypatch):
    decode = _CountingDecode(monkeypatch)
    verifier = Verifier(JwtSettings(secret=SECRET, cache_size=2))
    tokens = [hs256(claims(user)) for user in ("a", "b", "c")]
    for token in tokens:
        await verifier.verify(token)
    await verifier.verify(tokens[0])  # evicted by the third: verified again
    await verifier.verify(tokens[2])  # still cached
    assert decode.calls == 4
    off = Verifier(JwtSettings(secret=SECRET, cache_size=0))
    for _ in range(2):
        await off.verify(tokens[0])
    assert decode.calls == 6


async def test_a_refused_token_is_not_cached(monkeypatch):
    decode = _CountingDecode(monkeypatch)
    verifier = Verifier(JwtSettings(secret=SECRET))
    forged = hs256(claims("alice"), secret="another-secret-long-enough-for-hs256!!")
    for _ in range(2):
        with pytest.raises(AuthRefused):
            await verifier.verify(forged)
    assert decode.calls == 2
