"""Authentication: turn a WebSocket handshake into a principal, or refuse it.

One small interface, so the plugin system can put any authenticator behind it. This module
ships only development auth; real authenticators (JWT, proxy header) arrive as plugins.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import msgspec

from .ingest import MAX_USER_ID_LENGTH
from .protocol import CLOSE_POLICY, CLOSE_UNAUTHENTICATED


class Handshake(msgspec.Struct, frozen=True, kw_only=True):
    """What an authenticator may look at: nothing it could use to touch the socket."""

    query: Mapping[str, str]
    headers: Mapping[str, str]
    client_host: str | None
    # A token from the `bearer.<token>` subprotocol entry, if the client offered one.
    subprotocol_token: str | None = None


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str
    # Unix time after which the credential is no longer valid (None: never expires).
    expires_at: float | None = None


class AuthRefused(Exception):
    """The handshake names no acceptable user. `reason` is a metric label; `message` goes into
    the close reason, so it must not echo a credential."""

    def __init__(self, reason: str, message: str, code: int = CLOSE_UNAUTHENTICATED):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.code = code


class Authenticator(Protocol):
    name: str

    async def authenticate(self, handshake: Handshake) -> Principal:
        """Return the principal, or raise AuthRefused."""
        ...


class DevAuthenticator:
    """Development auth: the user is whoever the `user_id` query parameter says.

    Anyone can claim any user with it, which is why the service refuses to build one outside
    development mode.
    """

    name = "dev"

    def __init__(self, *, dev_mode: bool) -> None:
        if not dev_mode:
            raise RuntimeError(
                "development auth takes the user from the query string and is refused outside "
                "development mode; start with --dev (TASKSYNC_DEV=1) or configure a real authenticator"
            )

    async def authenticate(self, handshake: Handshake) -> Principal:
        user_id = handshake.query.get("user_id", "")
        if not user_id:
            raise AuthRefused("missing_user", "handshake has no user: pass ?user_id=... (development auth)", CLOSE_POLICY)
        if len(user_id) > MAX_USER_ID_LENGTH or not user_id.isprintable():
            raise AuthRefused("invalid_user", "user_id must be printable and at most 256 characters", CLOSE_POLICY)
        return Principal(user_id=user_id)
