"""Loading and calling plugins: entry points, time boxes, and error accounting.

The hooks themselves and their contracts are in hookspecs.py. This module is the only caller:
it awaits what implementations return, bounds every call by `plugin_timeout`, and turns a
plugin's exception into a log line and a metric instead of a failure of the service.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from collections.abc import Mapping, Sequence
from importlib.metadata import entry_points
from typing import Any, NoReturn, TypeVar

import msgspec
import pluggy

from . import hookspecs
from .auth import AuthRefused, Handshake, Principal
from .events import Notification, TaskEvent
from .metrics import Metrics
from .protocol import CLOSE_INTERNAL
from .settings import Settings, env_values

log = logging.getLogger("tasksync.plugins")

ENTRY_POINT_GROUP = "tasksync"
S = TypeVar("S", bound=msgspec.Struct)


class PluginError(Exception):
    """A plugin cannot work as configured; raised from `tasksync_startup` it stops the service."""


class PluginContext:
    """What a hook receives besides its arguments: settings, environment, metrics and a stash."""

    def __init__(self, settings: Settings, metrics: Metrics, environ: Mapping[str, str]) -> None:
        self.settings = settings
        self.metrics = metrics
        self.environ = environ
        # Per-service plugin state, under a key of each plugin's own (like pytest's config.stash).
        self.stash: dict[str, Any] = {}

    def plugin_settings(self, prefix: str, struct_type: type[S]) -> S:
        """A plugin's own settings from `<prefix><FIELD>` environment variables, e.g.
        TASKSYNC_JWT_SECRET for field `secret` with prefix TASKSYNC_JWT_. Lists are
        comma-separated. Raises PluginError naming the variable that is wrong."""
        try:
            return msgspec.convert(env_values(struct_type, self.environ, prefix), struct_type, strict=False)
        except msgspec.ValidationError as exc:
            raise PluginError(f"invalid {prefix}* setting: {exc}") from exc


def installed_plugins() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


class Plugins:
    def __init__(self, settings: Settings, metrics: Metrics, environ: Mapping[str, str] | None = None) -> None:
        self.ctx = PluginContext(settings, metrics, os.environ if environ is None else environ)
        self.metrics = metrics
        self.timeout = settings.plugin_timeout
        auth = settings.auth or ("dev" if settings.dev else "")
        if not auth:
            raise PluginError("no auth plugin configured: set TASKSYNC_AUTH (jwt, header, ...) or run with --dev")
        self.auth_name = auth
        self.order = [auth, *[n for n in settings.notifiers if n != auth]]
        self._ordered: dict[str, list[pluggy.HookImpl]] = {}
        self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs)
        available = installed_plugins()
        for name in self.order:
            if name not in available:
                known = ", ".join(sorted(available)) or "none"
                raise PluginError(f"unknown plugin {name!r}; installed plugins: {known}")
            self._pm.register(available[name].load(), name=name)
        # Asked for every event ingested; the plugins are all registered above, once.
        self.has_offline_notifiers = bool(self._impls("tasksync_offline_event"))

    # -- lifecycle -------------------------------------------------------------------------

    async def startup(self) -> None:
        for impl in self._impls("tasksync_startup"):
            result = impl.function(ctx=self.ctx)
            if inspect.isawaitable(result):
                await result
        log.info("plugins: auth=%s notifiers=%s", self.auth_name, ",".join(self.order[1:]) or "none")

    async def shutdown(self) -> None:
        for impl in self._impls("tasksync_shutdown"):
            await self._call(impl, "tasksync_shutdown", ctx=self.ctx)

    # -- hooks -----------------------------------------------------------------------------

    async def authenticate(self, handshake: Handshake) -> Principal:
        """The principal for a handshake; raises AuthRefused (or TokenRequired)."""
        for impl in self._impls("tasksync_authenticate"):
            try:
                result = await self._call(
                    impl, "tasksync_authenticate", raise_refusals=True, ctx=self.ctx, handshake=handshake
                )
            except _HookFailed:
                raise AuthRefused(
                    "plugin_error", "authentication is unavailable; try again later", CLOSE_INTERNAL
                ) from None
            if result is not None:
                return result
        raise AuthRefused("no_principal", "no auth plugin accepted the handshake")

    async def notification(self, event: TaskEvent) -> Notification | None:
        (answer,) = await self.notifications((event,))
        return answer

    async def notifications(self, events: Sequence[TaskEvent]) -> list[Notification | None]:
        """`notification` for each event of a batch, in order: one coroutine for the batch, and
        none for a synchronous notifier's answer (`_call` unrolled), as the built-in toast's."""
        impls = self._impls("tasksync_notification")
        answers: list[Notification | None] = []
        for event in events:
            answer = None
            for impl in impls:
                try:
                    result = self._call_now(impl, "tasksync_notification", False, {"ctx": self.ctx, "event": event})
                    if _awaitable(result):
                        result = await self._settle(impl, "tasksync_notification", False, result)
                except _HookFailed:
                    continue
                if result is not None:
                    answer = result
                    break
            answers.append(answer)
        return answers

    async def offline_event(self, event: TaskEvent) -> None:
        calls = [
            self._call(impl, "tasksync_offline_event", ctx=self.ctx, event=event)
            for impl in self._impls("tasksync_offline_event")
        ]
        if calls:
            await asyncio.gather(*calls, return_exceptions=True)

    # -- calling ---------------------------------------------------------------------------

    def _impls(self, hook: str) -> list[pluggy.HookImpl]:
        """Implementations in the order the plugins are configured (pluggy's own is LIFO).
        Plugins are registered once, in __init__, so the order is worked out once per hook."""
        impls = self._ordered.get(hook)
        if impls is None:
            found = getattr(self._pm.hook, hook).get_hookimpls()
            impls = self._ordered[hook] = sorted(found, key=lambda impl: self.order.index(impl.plugin_name))
        return impls

    async def _call(self, impl: pluggy.HookImpl, hook: str, *, raise_refusals: bool = False, **kwargs: Any) -> Any:
        result = self._call_now(impl, hook, raise_refusals, kwargs)
        if _awaitable(result):
            result = await self._settle(impl, hook, raise_refusals, result)
        return result

    def _call_now(self, impl: pluggy.HookImpl, hook: str, raise_refusals: bool, kwargs: dict[str, Any]) -> Any:
        """Call an implementation: its answer, or the awaitable that will give it."""
        try:
            return impl.function(**kwargs)
        except Exception as exc:  # a plugin's bug must not become the service's
            self._fail(impl, hook, raise_refusals, exc)

    async def _settle(self, impl: pluggy.HookImpl, hook: str, raise_refusals: bool, awaitable: Any) -> Any:
        """Await what an implementation returned, within the timeout. Only an awaitable can be
        abandoned: a synchronous hook has already returned, and arming a timer for it on every
        event costs more than the hook itself."""
        try:
            async with asyncio.timeout(self.timeout):
                return await awaitable
        except Exception as exc:  # a plugin's bug must not become the service's
            self._fail(impl, hook, raise_refusals, exc)

    def _fail(self, impl: pluggy.HookImpl, hook: str, raise_refusals: bool, exc: Exception) -> NoReturn:
        """Count and log a failed call and raise _HookFailed; or re-raise a refusal where one is
        the answer."""
        if isinstance(exc, AuthRefused):  # TokenRequired too
            if raise_refusals:
                raise exc
            self._failed(impl.plugin_name, hook, "error", "raised AuthRefused outside authentication")
        elif isinstance(exc, TimeoutError):
            self._failed(impl.plugin_name, hook, "timeout", f"no answer within {self.timeout}s")
        else:
            self._failed(impl.plugin_name, hook, "error", f"{type(exc).__name__}: {exc}", exc)
        raise _HookFailed from None

    def _failed(self, plugin: str, hook: str, kind: str, what: str, exc: BaseException | None = None) -> None:
        self.metrics.plugin_errors.labels(plugin, hook, kind).inc()
        log.error("plugin %r failed in %s: %s", plugin, hook, what, exc_info=exc)


def _awaitable(result: Any) -> bool:
    # None and a Notification, the answers of every event's notifier, are never awaitable:
    # telling so by their type is several times cheaper than asking inspect.
    return result is not None and type(result) is not Notification and inspect.isawaitable(result)


class _HookFailed(Exception):
    """A hook call that raised or timed out; already logged and counted."""
