"""`python -m bench.instructions A [B ...]`: user-space instructions per handshake of versions of
the service, counted by callgrind.

The CPU time a handshake takes moves by up to 60 % with this machine's load, and a workload's
rate with it; the number of instructions the server executes per handshake repeats within 0.2 %.
So a change to the handshake path is judged by this count (docs/performance.md, "Handshakes:
spread thin"), and the workload's rate says what users get.

Each version (a git revision, or WORKTREE, as for `bench.ab`) runs `tasksync serve` under
`valgrind --tool=callgrind`, about 50 times slower than natively. The load generator of workload
4 makes `--warm-up` handshakes (imports, caches), the counters are zeroed, it makes `--count`
more, and once the server has no connection left the counters are dumped: the count covers each
handshake, its close, and whatever the server's periodic tasks did meanwhile. The kernel's share
(accept, reads, writes, close: 90-100 µs of a handshake here) is not counted. The versions are
measured in turns, the order alternating as in `bench.ab`.

    .venv/bin/python -m bench.instructions --auth jwt HEAD~1 WORKTREE

Needs Debian's valgrind (`apt-get install valgrind`) and the `bench` extra.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from .ab import service_tree, turn_order
from .loadgen.handshakes import handshakes
from .procs import REPO, Child, free_port, python_module
from .workloads.handshakes import JWT_SECRET, command

# callgrind runs the server about 50 times slower: four handshakes at a time keep each well within
# the load generator's handshake timeout.
CONCURRENCY = 4
START_TIMEOUT = 300.0
DRAIN_TIMEOUT = 120.0
ACTIVE = re.compile(r"^tasksync_connections_active (\S+)$", re.MULTILINE)
TOTAL = re.compile(r"^(?:summary|totals): (\d+)$", re.MULTILINE)


def instructions_in(dump: str) -> int:
    """The instructions a callgrind dump counts (its `summary:` line, or `totals:`)."""
    found = TOTAL.search(dump)
    if found is None:
        raise ValueError("not a callgrind dump: no summary or totals line")
    return int(found.group(1))


def active_connections(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        found = ACTIVE.search(response.read().decode())
    if found is None:
        raise RuntimeError("/metrics has no tasksync_connections_active")
    return float(found.group(1))


def make_handshakes(port: int, auth: str, count: int, *, all_needed: bool = True) -> None:
    done = asyncio.run(handshakes({**command(port, auth, count), "concurrency": CONCURRENCY}))
    if all_needed and done["completed"] != count:
        raise RuntimeError(f"{done['failed']} of {count} handshakes failed, the first with {done['first_failure']}")


def per_handshake(tree: Path, auth: str, count: int, warm_up: int, work: Path) -> float:
    """Instructions per handshake of the `tasksync` in `tree`."""
    port = free_port()
    dumps = work / f"callgrind-{port}"
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={dumps}.%p"]
    auth_args = ["--dev"] if auth == "dev" else ["--auth", "jwt"]
    serve = python_module("tasksync.cli", "serve", *auth_args, "--port", str(port), "--log-level", "warning")
    env = {"PYTHONPATH": f"{tree}:{REPO}", "TASKSYNC_JWT_SECRET": JWT_SECRET}
    server = Child(f"tasksync-callgrind-{port}", valgrind + serve, work, env=env).start()
    try:
        server.wait_for_port(port, timeout=START_TIMEOUT)
        # A warm-up handshake may time out while the server's first imports run.
        make_handshakes(port, auth, warm_up, all_needed=False)
        subprocess.run(["callgrind_control", "--zero", str(server.pid)], check=True, capture_output=True)
        make_handshakes(port, auth, count)
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while active_connections(port) > 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"connections still open {DRAIN_TIMEOUT:g}s after the last handshake")
            time.sleep(0.5)
        subprocess.run(["callgrind_control", "--dump", str(server.pid)], check=True, capture_output=True)
        dump = Path(f"{dumps}.{server.pid}.1")
        return instructions_in(dump.read_text()) / count
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.instructions", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("versions", nargs="+", help="git revisions, or WORKTREE")
    parser.add_argument("--auth", choices=("dev", "jwt"), default="dev", help="JWT: each token new (default dev)")
    parser.add_argument("--count", type=int, default=1000, help="handshakes counted (default 1000)")
    parser.add_argument("--warm-up", type=int, default=300, help="handshakes before counting (default 300)")
    parser.add_argument("--turns", type=int, default=2, help="each version this many times (default 2)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tasksync-instructions-") as scratch:
        work = Path(scratch)
        trees = {version: service_tree(version, work / f"tree-{index}") for index, version in enumerate(args.versions)}
        counts: dict[str, list[float]] = {version: [] for version in args.versions}
        for turn in range(1, args.turns + 1):
            for version in turn_order(args.versions, turn):
                print(f"bench.instructions: turn {turn}, {version} ...", file=sys.stderr, flush=True)
                counts[version].append(per_handshake(trees[version], args.auth, args.count, args.warm_up, work))
    print(f"| version | {args.auth} handshake, instructions (each turn) |")
    print("|---|---|")
    for version, values in counts.items():
        print(f"| {version} | {' / '.join(f'{value / 1e6:.3f} M' for value in values)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
