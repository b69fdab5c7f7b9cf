"""Hook specifications: every hook a TaskSync plugin can implement, with its contract.

A plugin is a plain module (or any object) with functions named after these hooks, marked with
`tasksync.hookimpl`, made known through a Python entry point in the group `tasksync`:

    [project.entry-points.tasksync]
    toast-fr = "tasksync_toast_fr"

and enabled by name in settings (`TASKSYNC_AUTH=jwt`, `TASKSYNC_NOTIFIERS=toast,webhook`). Only
enabled plugins are loaded. Implementations may be plain functions or coroutine functions;
TaskSync awaits what they return. Every call is time-boxed (`TASKSYNC_PLUGIN_TIMEOUT`): a plugin
that raises or hangs is logged with its name and counted in `tasksync_plugin_errors_total`, and
the service goes on (what "goes on" means is said per hook). docs/plugins.md has a complete example.

pluggy registers plugins and checks each implementation's signature against its spec here, but
`plugins.Plugins` calls the implementations itself, one at a time, rather than through
`pm.hook.<name>(...)`: pluggy's caller cannot await a coroutine, time-box one implementation,
or tell which plugin failed, and it runs implementations newest-first where TaskSync runs them
in the configured order. So the "first non-None answer wins" rule of `tasksync_authenticate` and
`tasksync_notification` is kept by `Plugins`, and the specs carry no pluggy call options.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .auth import Handshake, Principal
    from .events import Notification, TaskEvent
    from .plugins import PluginContext

PROJECT = "tasksync"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def tasksync_startup(ctx: PluginContext) -> Any:
    """Called once at service start, before any connection or event.

    Read your settings with `ctx.plugin_settings(prefix, StructType)`, open clients, start
    workers, and keep per-service state in `ctx.stash` under a key of your own. Raise
    `PluginError` to refuse to start (a missing secret, development-only code outside
    development mode): the service exits with the message. Not time-boxed.
    """


@hookspec
def tasksync_shutdown(ctx: PluginContext) -> Any:
    """Called once at shutdown: flush, close clients, stop workers. Errors are logged."""


@hookspec
def tasksync_authenticate(ctx: PluginContext, handshake: Handshake) -> Principal | None:
    """Turn a handshake into the principal (the user id, and when its credential expires).

    Only the plugin named by `TASKSYNC_AUTH` is enabled for this. Return a `Principal`, raise
    `AuthRefused(reason, message, code)` to refuse (the message becomes the close reason: never
    put the credential in it), or raise `TokenRequired` when the handshake carries no token
    and the client may still send one in a first `auth` frame. Called again with the new token
    when a live connection refreshes it; the principal must then name the same user.
    An error or a timeout refuses the handshake with close code 1011.
    """


@hookspec
def tasksync_notification(ctx: PluginContext, event: TaskEvent) -> Notification | None:
    """The toast to show for an event (`notification` in the task_update frame), or None.

    Called once per event at ingest, before it is stored, in the order plugins are listed in
    `TASKSYNC_NOTIFIERS`; the first non-None answer wins. An error or a timeout leaves the
    event without a notification; it is delivered all the same.
    """


@hookspec
def tasksync_offline_event(ctx: PluginContext, event: TaskEvent) -> None:
    """An event whose user has no live connection on any replica.

    Every enabled notifier implementing it is called, after the event was stored (so it stays
    replayable). Return quickly: hand slow work (HTTP calls with retries) to a worker of your
    own started in `tasksync_startup`. Errors and timeouts are counted and logged.
    """
