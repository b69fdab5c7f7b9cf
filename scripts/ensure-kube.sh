#!/usr/bin/env bash
# Make the binaries the operator tests run against available, and print where they are.
#
#   etcd            Debian's etcd-server package, installed with apt-get when missing.
#   kube-apiserver  built from k8s.io/kubernetes through the wrapper module in
#                   scripts/kube-apiserver/, into ${TASKSYNC_CACHE:-$HOME/.cache/tasksync}/bin/.
#
# Idempotent and cheap once done: the build is stamped with a hash of the wrapper's go.mod and
# go.sum, so later runs reuse the binary and only a version bump rebuilds it. The first build
# takes minutes; it runs under `nice` with limited parallelism so a small machine stays usable.
#
# Output: progress on stderr, then exactly two lines on stdout that callers (the pytest fixture)
# parse:
#   ETCD=/path/to/etcd
#   KUBE_APISERVER=/path/to/kube-apiserver
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
module_dir="$here/kube-apiserver"
cache="${TASKSYNC_CACHE:-$HOME/.cache/tasksync}"
bin="$cache/bin"
mkdir -p "$bin"

log() { echo "ensure-kube: $*" >&2; }

# shellcheck source=scripts/debian-packages.sh
source "$(dirname "${BASH_SOURCE[0]}")/debian-packages.sh"

ensure_etcd() {
    if command -v etcd >/dev/null 2>&1; then
        return
    fi
    log "etcd not found, installing Debian's etcd-server"
    install_server_package etcd-server etcd
}

ensure_kube_apiserver() {
    local target="$bin/kube-apiserver"
    local stamp="$target.stamp"
    local want
    want="$(cat "$module_dir/go.mod" "$module_dir/go.sum" | sha256sum | cut -d' ' -f1)"
    if [ -x "$target" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        return
    fi
    # Two test sessions starting at once must not build twice or race on the output file.
    exec 9>"$bin/.kube-apiserver.lock"
    flock 9
    if [ -x "$target" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        return
    fi
    command -v go >/dev/null 2>&1 || { log "Go is required to build kube-apiserver"; exit 1; }
    local version
    version="$(awk '$1 == "k8s.io/kubernetes" { print $2 }' "$module_dir/go.mod")"
    log "building kube-apiserver $version into $bin (first run only; takes several minutes)"
    local started=$SECONDS
    # The version ldflags mirror the official build so /version reports the real release.
    local pkg=k8s.io/component-base/version
    local minor="${version#v1.}"
    minor="${minor%%.*}"
    (
        cd "$module_dir"
        GOFLAGS="${GOFLAGS:--p=2}" CGO_ENABLED=0 nice -n 10 go build -trimpath \
            -ldflags "-s -w -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean" \
            -o "$target.tmp" k8s.io/kubernetes/cmd/kube-apiserver
    )
    mv "$target.tmp" "$target"
    echo "$want" >"$stamp"
    log "built kube-apiserver in $((SECONDS - started))s"
}

ensure_etcd
ensure_kube_apiserver
echo "ETCD=$(command -v etcd)"
echo "KUBE_APISERVER=$bin/kube-apiserver"
