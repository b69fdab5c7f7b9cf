"""`header`: trust a user header set by an authenticating proxy (oauth2-proxy style).

Settings (environment): TASKSYNC_HEADER_AUTH_USER_HEADER ("x-forwarded-user"),
TASKSYNC_HEADER_AUTH_TRUSTED_PROXIES (addresses or CIDRs the proxy connects from),
TASKSYNC_HEADER_AUTH_SECRET with TASKSYNC_HEADER_AUTH_SECRET_HEADER ("x-tasksync-proxy-secret").
At least one of the two checks must be configured: a header anyone can send proves nothing
unless it provably came through the proxy.

The address checked is the TCP peer's (`Handshake.client_host`), never one that X-Forwarded-For,
X-Real-IP or Forwarded name: those are whatever the client or a forwarder wrote. The proxy
must replace the user header on every request it forwards; a user header that arrives more
than once means a client's copy got through next to the proxy's, and is refused (not joined: a
user id may itself contain a comma). The user header is read as UTF-8, as user ids are
everywhere else.
"""

from __future__ import annotations

import hmac
import ipaddress

import msgspec

from tasksync import hookimpl
from tasksync.auth import AuthRefused, Handshake, Principal
from tasksync.plugins import PluginContext, PluginError

STASH = "header_auth"


class HeaderAuthSettings(msgspec.Struct, kw_only=True):
    user_header: str = "x-forwarded-user"
    trusted_proxies: list[str] = []
    secret: str = ""
    secret_header: str = "x-tasksync-proxy-secret"


class _Checker:
    def __init__(self, settings: HeaderAuthSettings) -> None:
        self.settings = settings
        try:
            self.networks = [ipaddress.ip_network(entry, strict=False) for entry in settings.trusted_proxies]
        except ValueError as exc:
            raise PluginError(f"TASKSYNC_HEADER_AUTH_TRUSTED_PROXIES: {exc}") from exc

    def from_proxy(self, handshake: Handshake) -> bool:
        s = self.settings
        if s.secret:
            given = handshake.headers.get(s.secret_header.lower(), "")
            if hmac.compare_digest(given.encode(), s.secret.encode()):
                return True
        if self.networks and handshake.client_host:
            try:
                address = ipaddress.ip_address(handshake.client_host)
            except ValueError:
                return False
            return any(address in network for network in self.networks)
        return False


@hookimpl
def tasksync_startup(ctx: PluginContext) -> None:
    settings = ctx.plugin_settings("TASKSYNC_HEADER_AUTH_", HeaderAuthSettings)
    if not settings.trusted_proxies and not settings.secret:
        raise PluginError("header auth needs TASKSYNC_HEADER_AUTH_TRUSTED_PROXIES or TASKSYNC_HEADER_AUTH_SECRET")
    ctx.stash[STASH] = _Checker(settings)


@hookimpl
def tasksync_authenticate(ctx: PluginContext, handshake: Handshake) -> Principal:
    checker: _Checker = ctx.stash[STASH]
    if not checker.from_proxy(handshake):
        raise AuthRefused("untrusted_proxy", "identity headers are only accepted from the authenticating proxy")
    header = checker.settings.user_header.lower()
    if header in handshake.repeated:
        raise AuthRefused(
            "repeated_user_header", f"{checker.settings.user_header} arrived more than once: the proxy must replace it"
        )
    user = handshake.headers.get(header, "").strip()
    if not user:
        raise AuthRefused("missing_user_header", f"the proxy sent no {checker.settings.user_header} header")
    return Principal(user_id=user)
