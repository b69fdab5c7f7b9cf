"""The hook specs promise nothing that pluggy's caller would do, because TaskSync calls hooks itself."""

from __future__ import annotations

import pluggy

from tasksync import hookspecs

CALL_OPTIONS = ("firstresult", "historic")


def test_no_hookspec_carries_a_pluggy_call_option():
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    hooks = {name: getattr(manager.hook, name) for name in dir(hookspecs) if name.startswith("tasksync_")}
    assert len(hooks) >= 5, hooks
    with_options = {
        name: option for name, caller in hooks.items() for option in CALL_OPTIONS if caller.spec.opts.get(option)
    }
    # plugins.Plugins keeps "first non-None wins" itself; see docs/plugins.md, "The hooks".
    assert with_options == {}
