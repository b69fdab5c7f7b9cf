#!/usr/bin/env bash
# Podman with this repository's settings, for building and running the TaskSync image:
# scripts/image/containers.conf, and images, containers and state of its own under
# ${TASKSYNC_CACHE:-$HOME/.cache/tasksync}/podman/, so no global container storage or
# configuration is read for them or written. Every argument goes to podman:
#
#   scripts/image/podman.sh images
#   scripts/image/podman.sh run --rm ghcr.io/tasksync/tasksync:0.1.0 tasksync-operator --help
#
# Run it as root, as `make image` and the tests do on the test machines.
# TASKSYNC_PODMAN_STORAGE_DRIVER picks the storage driver: overlay (the default; layers are
# differences) or vfs (every layer a full copy, for file systems that cannot hold overlays).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
driver="${TASKSYNC_PODMAN_STORAGE_DRIVER:-overlay}"
# One storage per driver: a storage directory is bound to the driver that created it.
state="${TASKSYNC_CACHE:-$HOME/.cache/tasksync}/podman/$driver"
mkdir -p "$state/networks"

export CONTAINERS_CONF="$here/containers.conf"
exec podman \
    --root "$state/storage" \
    --runroot "$state/run" \
    --tmpdir "$state/run/libpod" \
    --network-config-dir "$state/networks" \
    --storage-driver "$driver" \
    "$@"
