#!/usr/bin/env bash
# Install what the test suite needs when it is missing. Safe to run again: each step checks first.
# Slow builds are cached outside the repository (in $TASKSYNC_CACHE, default ~/.cache/tasksync).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/debian-packages.sh
source scripts/debian-packages.sh

if ! command -v redis-server >/dev/null; then
  install_server_package redis-server redis-server
fi

# callgrind, for bench/instructions.py and its test.
install_packages valgrind

make -s venv
# Centrifugo, the Go peer the benchmark smoke starts (tests/bench), from the Go module proxy:
# minutes once, cached.
.venv/bin/python -m bench.centrifugo >/dev/null
# The web client's packages, the demo build and Debian's chromium for the browser test.
bash scripts/ensure-web-deps.sh --browser
# etcd and a kube-apiserver built from source (cached) for the operator tests.
bash scripts/ensure-kube.sh >/dev/null
# helm (built from source, cached), promtool and prometheus for the chart tests.
bash scripts/ensure-chart-tools.sh >/dev/null
# The container image for tests/image/ (podman, and on a machine with no registry a Debian base
# bootstrapped with mmdebstrap: minutes once, cached; seconds when nothing changed).
bash scripts/image/build.sh >/dev/null
