"""Load the limits file at start and reload it when it changes, without a restart.

Kubernetes updates a mounted ConfigMap by swapping a symlink, so the file is polled by content
signature (inode, size, mtime of the resolved path) rather than watched with inotify, which
misses symlink swaps. A file that does not parse or validate is rejected with a log line and a
metric, and the limits in force stay as they were.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

from .limits import LimitsFile, decode_limits_file
from .metrics import Metrics

log = logging.getLogger("tasksync.limits")


class LimitsWatcher:
    def __init__(self, path: str, apply: Callable[[LimitsFile], None], metrics: Metrics) -> None:
        self.path = Path(path)
        self.apply = apply
        self.metrics = metrics
        self._signature: tuple[int, int, int] | None = None

    def _current_signature(self) -> tuple[int, int, int] | None:
        try:
            stat = os.stat(self.path)  # follows symlinks: the ConfigMap's ..data swap shows here
        except OSError:
            return None
        return (stat.st_ino, stat.st_size, stat.st_mtime_ns)

    def check(self) -> bool | None:
        """Reload if the file changed. True: applied; False: rejected; None: nothing to do."""
        signature = self._current_signature()
        if signature is None or signature == self._signature:
            return None
        self._signature = signature
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            self.metrics.limits_reloads.labels("unreadable").inc()
            log.error("limits file %s is unreadable (%s); keeping the limits in force", self.path, exc)
            return False
        try:
            limits_file = decode_limits_file(raw)
        except ValueError as exc:
            self.metrics.limits_reloads.labels("rejected").inc()
            log.error("limits file %s rejected: %s; keeping the limits in force", self.path, exc)
            return False
        self.apply(limits_file)
        self.metrics.limits_reloads.labels("applied").inc()
        log.info("limits generation %d applied from %s", limits_file.generation, self.path)
        return True

    async def run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.check()
