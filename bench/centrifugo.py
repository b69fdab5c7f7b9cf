"""Centrifugo v6, the Go peer of workloads 2, 3 and 6: built from the Go module proxy into the
cache outside the repository, and configured like TaskSync: each user subscribed on connect to a
personal channel that keeps history for recovery (1,000 publications for an hour, as TaskSync
keeps per user), publishing through the HTTP API with idempotency keys (TaskSync dedupes by id).
On a Redis (workload 6) it runs its Redis engine, as TaskSync's replicas run its Redis broker.
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


def config(port: int, redis_url: str | None = None) -> dict:
    """Centrifugo's settings; with `redis_url`, its Redis engine: publications, history, idempotency
    keys and the nodes' control messages all go through that Redis, so nodes sharing it deliver
    each other's publications."""
    settings = {
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
    if redis_url is not None:
        settings["engine"] = {"type": "redis", "redis": {"address": [redis_url]}}
    return settings


def child(log_dir: Path, redis_url: str | None = None) -> tuple[Child, int]:
    """A Centrifugo process (not started) on a free port, with its config file in `log_dir`; on
    the Redis at `redis_url` if given, else on its memory engine."""
    binary = ensure_binary()
    port = free_port()
    path = log_dir / f"centrifugo-{port}.json"
    path.write_text(json.dumps(config(port, redis_url), indent=2))
    return Child(f"centrifugo-{port}", [str(binary), "--config", str(path)], log_dir), port


if __name__ == "__main__":
    # scripts/ensure-test-deps.sh builds it ahead of the tests, where minutes would time out.
    print(ensure_binary())
