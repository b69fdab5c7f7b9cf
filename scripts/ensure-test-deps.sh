#!/usr/bin/env bash
# Install what the test suite needs when it is missing. Safe to run again: each step checks first.
# Slow builds are cached outside the repository (in $TASKSYNC_CACHE, default ~/.cache/tasksync).
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=()
command -v redis-server >/dev/null || apt_packages+=(redis-server)
if ((${#apt_packages[@]})); then
  echo "installing Debian packages: ${apt_packages[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${apt_packages[@]}" >/dev/null
fi

make -s venv
# The web client's packages, the demo build and Debian's chromium for the browser test.
bash scripts/ensure-web-deps.sh --browser
# etcd and a kube-apiserver built from source (cached) for the operator tests.
bash scripts/ensure-kube.sh >/dev/null
# helm (built from source, cached), promtool and prometheus for the chart tests.
bash scripts/ensure-chart-tools.sh >/dev/null
# The container image for tests/image/ (podman, and on a machine with no registry a Debian base
# bootstrapped with mmdebstrap: minutes once, cached; seconds when nothing changed).
bash scripts/image/build.sh >/dev/null
