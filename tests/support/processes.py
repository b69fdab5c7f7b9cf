"""Start a real server process and wait until it answers; stop it. Every peer the tests run as a
process (tasksync, Redis, Prometheus) goes through these two functions, so each fails the same
way: at once, with its log, when it exits before it is ready."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from .waiting import wait_until


class ProcessExited(Exception):
    """The process ended before it was ready. Not an AssertionError, so `wait_until` stops
    waiting at once instead of polling a dead process until its deadline."""


def start_until_ready(
    argv: Sequence[str],
    *,
    name: str,
    ready: Callable[[], bool] | None,
    log_path: Path,
    timeout: float,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start `argv` with its output appended to `log_path`, then wait up to `timeout` seconds for
    `ready()` to be true (an OSError from it counts as not yet). With `ready=None` return at
    once: the caller watches the start itself (one that must fail, say)."""
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
    if ready is None:
        return process

    def started() -> bool:
        if process.poll() is not None:
            raise ProcessExited(f"{name} exited with {process.returncode}:\n{read_log(log_path)}")
        return ready()

    try:
        wait_until(started, timeout=timeout, what=f"{name} (log: {log_path})")
    except BaseException:
        stop_process(process, name=name)
        raise
    return process


def stop_process(
    process: subprocess.Popen[bytes] | None, *, name: str, sig: int = signal.SIGTERM, timeout: float = 20
) -> int | None:
    """Signal `process` and wait for it; kill it if it is still there after `timeout` seconds.
    The exit status, or None when there was no process."""
    if process is None:
        return None
    if process.poll() is not None:
        return process.returncode
    process.send_signal(sig)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        # Shown with the test's output if it fails: a server that ignores its signal is a bug.
        print(f"{name} did not exit {timeout}s after signal {sig}; killed")
        return process.wait(5)


def read_log(log_path: Path | None) -> str:
    return log_path.read_text(errors="replace") if log_path is not None and log_path.exists() else ""
