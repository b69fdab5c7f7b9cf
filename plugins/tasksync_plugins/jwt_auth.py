"""`jwt`: bearer JWTs, HS256 with a shared secret and RS256/ES256 from a JWKS URL.

Settings (environment): TASKSYNC_JWT_SECRET, TASKSYNC_JWT_JWKS_URL (at least one),
TASKSYNC_JWT_AUDIENCE, TASKSYNC_JWT_ISSUER (checked when set), TASKSYNC_JWT_USER_CLAIM ("sub"),
TASKSYNC_JWT_LEEWAY (30 s of clock skew), TASKSYNC_JWT_JWKS_MIN_REFRESH (30 s between JWKS
fetches, so a flood of tokens with made-up key ids cannot make us hammer the key server),
TASKSYNC_JWT_MAX_TOKEN_BYTES (8192), TASKSYNC_JWT_CACHE_SIZE (10000 verified tokens kept until
they expire; 0 turns the cache off).

The algorithm decides the key, never the other way round: HS256 is verified only with the
secret and RS256/ES256 only with a JWKS key of that type, so `alg: none` and HS/RS confusion
(an HS256 token "signed" with the public key) are refused. `exp` is required.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from typing import Any

import httpx
import jwt
import msgspec

from tasksync import hookimpl
from tasksync.auth import AuthRefused, Handshake, Principal, TokenRequired
from tasksync.plugins import PluginContext, PluginError

log = logging.getLogger("tasksync.jwt")
STASH = "jwt"
SECRET_ALGORITHMS = ("HS256",)
JWKS_ALGORITHMS = ("RS256", "ES256")


class JwtSettings(msgspec.Struct, kw_only=True):
    secret: str = ""
    jwks_url: str = ""
    audience: str = ""
    issuer: str = ""
    user_claim: str = "sub"
    leeway: float = 30.0
    jwks_min_refresh: float = 30.0
    max_token_bytes: int = 8192
    cache_size: int = 10_000


class VerifiedTokens:
    """Tokens that verified, with the principal they named, until they expire.

    A client that reconnects (a dropped network, a restarted replica, a reconnect storm)
    presents the same token again, and verifying it is the largest single cost of its
    handshake. A hit is exactly as valid as a fresh verification would be: the settings that
    were checked (key, audience, issuer) are fixed for the process, `nbf` has already passed,
    and the entry is gone once the token's `exp` plus the leeway is. Bounded to `size`
    entries; the oldest goes first."""

    def __init__(self, size: int, clock=time.time) -> None:
        self.size = size
        self._clock = clock
        self._principals: dict[str, Principal] = {}

    def get(self, token: str) -> Principal | None:
        principal = self._principals.get(token)
        if principal is not None and principal.expires_at is not None and principal.expires_at <= self._clock():
            del self._principals[token]
            return None
        return principal

    def put(self, token: str, principal: Principal) -> None:
        if self.size <= 0:
            return
        if len(self._principals) >= self.size:
            del self._principals[next(iter(self._principals))]
        self._principals[token] = principal


class KeySet:
    """JWKS keys by `kid`, fetched on demand and refreshed on an unknown `kid` at most once per
    `min_refresh` seconds."""

    def __init__(self, url: str, min_refresh: float) -> None:
        self.url = url
        self.min_refresh = min_refresh
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._client = httpx.AsyncClient(timeout=5)

    def known(self, kid: str | None) -> jwt.PyJWK | None:
        """The key of `kid` if it has been fetched already."""
        return self._keys.get(kid) if kid is not None else None

    async def key(self, kid: str | None) -> jwt.PyJWK | None:
        if kid in self._keys:
            return self._keys[kid]
        if time.monotonic() - self._fetched_at >= self.min_refresh:
            await self._fetch()
        return self.known(kid)

    async def _fetch(self) -> None:
        self._fetched_at = time.monotonic()
        try:
            response = await self._client.get(self.url)
            response.raise_for_status()
            keys = jwt.PyJWKSet.from_dict(response.json()).keys
        except (httpx.HTTPError, ValueError, jwt.PyJWKSetError) as exc:
            log.warning("cannot fetch JWKS from %s: %s", self.url, exc)
            return
        self._keys = {key.key_id: key for key in keys if key.key_id}

    async def close(self) -> None:
        await self._client.aclose()


class Verifier:
    def __init__(self, settings: JwtSettings) -> None:
        self.settings = settings
        self.keys = KeySet(settings.jwks_url, settings.jwks_min_refresh) if settings.jwks_url else None
        self.verified = VerifiedTokens(settings.cache_size)

    def verify_at_once(self, token: str) -> Principal | None:
        """The principal of a token that can be verified without waiting: one cached, signed
        with the secret, or signed with a JWKS key already fetched. None when its key has to be
        fetched first (`verify`). Raises AuthRefused."""
        s = self.settings
        if len(token) > s.max_token_bytes:
            raise AuthRefused("oversized", f"token longer than {s.max_token_bytes} bytes")
        principal = self.verified.get(token)
        if principal is None:
            if self.keys is None:
                principal = self._verify_with_secret(token)
            else:
                header = self._header(token)
                key = self._key_at_once(header)
                if key is None:
                    return None
                principal = self._decode(token, header["alg"], key)
            self.verified.put(token, principal)
        return principal

    async def verify(self, token: str) -> Principal:
        principal = self.verify_at_once(token)
        if principal is None:
            header = self._header(token)
            assert self.keys is not None, "only a JWKS key is ever fetched"
            key = self._checked_jwk(header, await self.keys.key(header.get("kid")))
            principal = self._decode(token, header["alg"], key)
            self.verified.put(token, principal)
        return principal

    def _verify_with_secret(self, token: str) -> Principal:
        """With the secret as the only key, `jwt.decode` checks the header and its algorithm
        itself, so a valid token is parsed once. A refused one is looked at again to be refused
        for the same reason, in the same order, as where keys are chosen by the header: a
        malformed or rejected header, then the algorithm, then the token."""
        try:
            return self._decode(token, SECRET_ALGORITHMS[0], self.settings.secret)
        except AuthRefused:
            self._key_at_once(self._header(token))
            raise

    @staticmethod
    def _header(token: str) -> dict[str, Any]:
        try:
            return jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise AuthRefused("malformed", "token is not a JWT") from None
        except jwt.InvalidTokenError as exc:
            # A header PyJWT refuses before any key is involved (a `kid` that is not a string, a
            # `crit` it does not support): the token is invalid, whoever sent it.
            raise AuthRefused("invalid_token", f"token header rejected: {exc}") from None

    def _key_at_once(self, header: dict[str, Any]) -> Any:
        """The key the header's algorithm calls for; None when it is a JWKS key not fetched
        yet. Raises AuthRefused for an algorithm that is not accepted."""
        algorithm = header.get("alg")
        if algorithm in SECRET_ALGORITHMS and self.settings.secret:
            return self.settings.secret
        if algorithm in JWKS_ALGORITHMS and self.keys is not None:
            jwk = self.keys.known(header.get("kid"))
            return None if jwk is None else self._checked_jwk(header, jwk)
        raise AuthRefused("alg_not_allowed", f"algorithm {algorithm!r} is not accepted")

    @staticmethod
    def _checked_jwk(header: dict[str, Any], jwk: jwt.PyJWK | None) -> Any:
        if jwk is None:
            raise AuthRefused("unknown_key", "token signed with an unknown key id")
        if jwk.algorithm_name != header["alg"]:
            raise AuthRefused("alg_not_allowed", f"key {header.get('kid')!r} is not a {header['alg']} key")
        return jwk.key

    def _decode(self, token: str, algorithm: str, key: Any) -> Principal:
        s = self.settings
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=s.audience or None,
                issuer=s.issuer or None,
                leeway=s.leeway,
                options={"require": ["exp"], "verify_aud": bool(s.audience)},
            )
        except jwt.ExpiredSignatureError:
            raise AuthRefused("expired", "token expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthRefused("not_yet_valid", "token not valid yet (nbf/iat)") from None
        except jwt.InvalidAudienceError:
            raise AuthRefused("wrong_audience", "token audience does not match") from None
        except jwt.InvalidIssuerError:
            raise AuthRefused("wrong_issuer", "token issuer does not match") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthRefused("missing_claim", f"token has no {exc.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise AuthRefused("bad_signature", "token signature does not verify") from None
        except jwt.InvalidTokenError as exc:
            raise AuthRefused("invalid_token", f"token rejected: {type(exc).__name__}") from None
        user = claims.get(s.user_claim)
        if isinstance(user, int) and not isinstance(user, bool):
            user = str(user)
        if not isinstance(user, str) or not user:
            raise AuthRefused("missing_claim", f"token has no {s.user_claim!r} claim")
        # The leeway that admitted the token also extends its life: both absorb the same skew.
        return Principal(user_id=user, expires_at=float(claims["exp"]) + s.leeway)


@hookimpl
def tasksync_startup(ctx: PluginContext) -> None:
    settings = ctx.plugin_settings("TASKSYNC_JWT_", JwtSettings)
    if not settings.secret and not settings.jwks_url:
        raise PluginError("jwt auth needs TASKSYNC_JWT_SECRET (HS256) or TASKSYNC_JWT_JWKS_URL (RS256/ES256)")
    ctx.stash[STASH] = Verifier(settings)


@hookimpl
async def tasksync_shutdown(ctx: PluginContext) -> None:
    verifier = ctx.stash.pop(STASH)
    if verifier.keys is not None:
        await verifier.keys.close()


@hookimpl
def tasksync_authenticate(ctx: PluginContext, handshake: Handshake) -> Principal | Awaitable[Principal]:
    if handshake.token is None:
        raise TokenRequired()
    verifier: Verifier = ctx.stash[STASH]
    # A plain answer whenever nothing has to be fetched: an awaitable one is time-boxed, which
    # arms and cancels a timer on every handshake.
    principal = verifier.verify_at_once(handshake.token)
    return principal if principal is not None else verifier.verify(handshake.token)
