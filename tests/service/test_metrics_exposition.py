"""/metrics carries what an operator expects of any service: the process, the Python runtime
and which TaskSync version is running."""

from __future__ import annotations

from importlib.metadata import version

from tests.support.metrics import samples


def test_metrics_expose_process_python_and_build_info(dev_service):
    exposed = samples(dev_service)
    names = {name for name, _ in exposed}
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"} <= names
    assert "python_info" in names
    assert any(name.startswith("python_gc_") for name in names)
    assert exposed[("tasksync_build_info", (("version", version("tasksync")),))] == 1.0
    assert exposed[("process_open_fds", ())] > 0

