"""`dev`: development auth. The user is whoever the `user_id` query parameter says.

Anyone can claim any user with it, so it refuses to start outside development mode.
"""

from __future__ import annotations

from tasksync import hookimpl
from tasksync.auth import AuthRefused, Handshake, Principal
from tasksync.plugins import PluginContext, PluginError
from tasksync.protocol import CLOSE_POLICY

MAX_USER_ID_LENGTH = 256


@hookimpl
def tasksync_startup(ctx: PluginContext) -> None:
    if not ctx.settings.dev:
        raise PluginError(
            "development auth takes the user from the query string and is refused outside "
            "development mode; start with --dev (TASKSYNC_DEV=1) or set TASKSYNC_AUTH to a real authenticator"
        )


@hookimpl
def tasksync_authenticate(ctx: PluginContext, handshake: Handshake) -> Principal:
    user_id = handshake.query.get("user_id", "")
    if not user_id:
        raise AuthRefused("missing_user", "handshake has no user: pass ?user_id=... (development auth)", CLOSE_POLICY)
    if len(user_id) > MAX_USER_ID_LENGTH or not user_id.isprintable():
        raise AuthRefused("invalid_user", "user_id must be printable and at most 256 characters", CLOSE_POLICY)
    return Principal(user_id=user_id)
