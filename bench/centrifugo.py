"""Centrifugo v6, the Go peer of workloads 2 and 3: built from the Go module proxy into the cache
outside the repository, and configured like TaskSync: each user subscribed on connect to a
personal channel that keeps history for recovery (1,000 publications for an hour, as TaskSync
keeps per user), publishing through the HTTP API with idempotency keys (TaskSync dedupes by id).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from .procs import Child, free_port

VERSION = "v6.9.1"
MODULE = "github.com/centrifugal/centrifugo/v6"
SECRET = "bench-secret-for-hs256-connection-tokens"
API_KEY = "bench-api-key"


def cache_bin() -> Path:
    return Path(os.environ.get("TASKSYNC_CACHE", Path.home() / ".cache" / "tasksync")) / "bin"


def ensure_binary() -> Path:
    """The centrifugo binary of VERSION, built with `go install` on first use (a few minutes,
    under `nice` with one compile job so a shared machine stays usable). Raises RuntimeError when
    it cannot be had, which fails the workloads that compare with it."""
    binary = cache_bin() / "centrifugo"
    stamp = cache_bin() / "centrifugo.version"
    if binary.exists() and stamp.exists() and stamp.read_text().strip() == VERSION:
        return binary
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("Go is not installed: cannot build Centrifugo")
    cache_bin().mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOBIN": str(cache_bin()), "GOFLAGS": "-p=1"}
    done = subprocess.run(
        ["nice", "-n", "10", go, "install", f"{MODULE}@{VERSION}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        raise RuntimeError(f"go install {MODULE}@{VERSION} failed:\n{done.stderr[-2000:]}")
    stamp.write_text(VERSION + "\n")
    return binary


def config(port: int) -> dict:
    return {
        "http_server": {"address": "127.0.0.1", "port": port},
        "log": {"level": "error"},
        "usage_stats": {"disabled": True},
        "client": {
            "token": {"hmac_secret_key": SECRET},
            "allowed_origins": ["*"],
            "subscribe_to_user_personal_channel": {"enabled": True, "personal_channel_namespace": "personal"},
        },
        "channel": {
            "namespaces": [{"name": "personal", "history_size": 1000, "history_ttl": "3600s", "force_recovery": True}]
        },
        "http_api": {"key": API_KEY},
    }


def child(log_dir: Path) -> tuple[Child, int]:
    """A Centrifugo process (not started) on a free port, with its config file in `log_dir`."""
    binary = ensure_binary()
    port = free_port()
    path = log_dir / f"centrifugo-{port}.json"
    path.write_text(json.dumps(config(port), indent=2))
    return Child(f"centrifugo-{port}", [str(binary), "--config", str(path)], log_dir), port


if __name__ == "__main__":
    # scripts/ensure-test-deps.sh builds it ahead of the tests, where minutes would time out.
    print(ensure_binary())
