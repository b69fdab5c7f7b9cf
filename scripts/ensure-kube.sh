#!/usr/bin/env bash
# Make the binaries the operator and cluster tests run available, and print where they are.
#
#   etcd                     Debian's etcd-server package, installed with apt-get when missing.
#   kube-apiserver,          built from k8s.io/kubernetes through the wrapper module in
#   kube-controller-manager, scripts/kubernetes/, into ${TASKSYNC_CACHE:-$HOME/.cache/tasksync}/bin/.
#   kube-scheduler, kubelet,
#   kube-proxy
#   the node runtime         containerd, runc, CNI plugins, CoreDNS and the test images: see
#                            scripts/kube-node/ensure-node.sh, which this runs.
#
# Idempotent and cheap once done: each binary is stamped with a hash of the wrapper's go.mod and
# go.sum, so later runs reuse it and only a version bump rebuilds. The first build takes minutes;
# it runs under `nice` with limited parallelism so a small machine stays usable.
#
# Output: progress on stderr, then KEY=VALUE lines on stdout that callers (the pytest fixtures)
# parse:
#   ETCD=/path/to/etcd
#   KUBE_APISERVER=/path/to/kube-apiserver
#   KUBE_CONTROLLER_MANAGER=..., KUBE_SCHEDULER=..., KUBELET=..., KUBE_PROXY=...
#   and the lines of scripts/kube-node/ensure-node.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
module_dir="$here/kubernetes"
cache="${TASKSYNC_CACHE:-$HOME/.cache/tasksync}"
bin="$cache/bin"
mkdir -p "$bin"

# Every command the wrapper module builds, in the order they are printed.
components=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)

log() { echo "ensure-kube: $*" >&2; }

# shellcheck source=scripts/debian-packages.sh
source "$here/debian-packages.sh"

ensure_etcd() {
    if command -v etcd >/dev/null 2>&1; then
        return
    fi
    log "etcd not found, installing Debian's etcd-server"
    install_server_package etcd-server etcd
}

# The components whose binary is absent or was built from another go.mod/go.sum.
stale_components() {
    local want=$1 name
    for name in "${components[@]}"; do
        if ! [ -x "$bin/$name" ] || [ "$(cat "$bin/$name.stamp" 2>/dev/null)" != "$want" ]; then
            echo "$name"
        fi
    done
}

ensure_kubernetes() {
    local want
    want="$(cat "$module_dir/go.mod" "$module_dir/go.sum" | sha256sum | cut -d' ' -f1)"
    if [ -z "$(stale_components "$want")" ]; then
        return
    fi
    # Two test sessions starting at once must not build twice or race on the output files.
    exec 9>"$bin/.kubernetes.lock"
    flock 9
    local stale
    mapfile -t stale < <(stale_components "$want")
    if ((${#stale[@]} == 0)); then
        return
    fi
    command -v go >/dev/null 2>&1 || { log "Go is required to build ${stale[*]}"; exit 1; }
    local version
    version="$(awk '$1 == "k8s.io/kubernetes" { print $2 }' "$module_dir/go.mod")"
    log "building ${stale[*]} $version into $bin (first run only; takes several minutes)"
    local started=$SECONDS
    # The version ldflags mirror the official build so /version and the node report the release.
    local pkg=k8s.io/component-base/version
    local minor="${version#v1.}"
    minor="${minor%%.*}"
    local out="$bin/.build"
    rm -rf "$out"
    mkdir -p "$out"
    local name packages=()
    for name in "${stale[@]}"; do
        packages+=("k8s.io/kubernetes/cmd/$name")
    done
    # One `go build` for all of them: the packages they share compile once.
    (
        cd "$module_dir"
        GOFLAGS="${GOFLAGS:--p=2}" CGO_ENABLED=0 nice -n 10 go build -trimpath \
            -ldflags "-s -w -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean" \
            -o "$out/" "${packages[@]}"
    )
    for name in "${stale[@]}"; do
        mv "$out/$name" "$bin/$name"
        echo "$want" >"$bin/$name.stamp"
    done
    rmdir "$out"
    log "built ${stale[*]} in $((SECONDS - started))s"
}

ensure_etcd
ensure_kubernetes
node_runtime="$(bash "$here/kube-node/ensure-node.sh")"
echo "ETCD=$(command -v etcd)"
for name in "${components[@]}"; do
    key="${name^^}"
    echo "${key//-/_}=$bin/$name"
done
echo "$node_runtime"
