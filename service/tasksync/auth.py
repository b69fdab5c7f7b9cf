"""The values authentication works with: a handshake in, a principal or a refusal out.

Authenticators themselves are plugins (hookspecs.tasksync_authenticate; the built-in ones are
in plugins/tasksync_plugins/).
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from .protocol import CLOSE_UNAUTHENTICATED


class Handshake(msgspec.Struct, frozen=True, kw_only=True):
    """What an authenticator may look at: nothing it could use to touch the socket."""

    query: Mapping[str, str]
    # By lower-case name, decoded as UTF-8; a header sent more than once has its values joined
    # with ", ".
    headers: Mapping[str, str]
    # The (lower-case) names of the headers sent more than once. A header that names the user
    # must be refused when repeated, not read joined: one copy may be the client's own.
    repeated: frozenset[str] = frozenset()
    client_host: str | None
    # The bearer token: from the `bearer.<token>` subprotocol entry, a first `auth` frame, a
    # refresh, or (only where enabled) the `token` query parameter.
    token: str | None = None


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


class TokenRequired(AuthRefused):
    """The handshake carries no token; the client may still send one in a first `auth` frame."""

    def __init__(self, message: str = "no token: send it as the bearer.<token> subprotocol or in a first auth frame"):
        super().__init__("missing_token", message, CLOSE_UNAUTHENTICATED)
