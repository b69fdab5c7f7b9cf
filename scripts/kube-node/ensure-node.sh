#!/usr/bin/env bash
# Make what a Kubernetes node of the cluster tests runs on available, and print where it is.
#
#   containerd, ctr   Debian's containerd package (1.6); the tests run a containerd of their own
#                     with a private config, so a system service the install starts is stopped
#                     (scripts/debian-packages.sh: a containerd the machine ran before is left).
#   runc              Debian's runc package.
#   CNI plugins       Debian's containernetworking-plugins (bridge, host-local, loopback, portmap).
#   test images       OCI archives of two static C programs, built here with gcc into
#                     ${TASKSYNC_CACHE:-$HOME/.cache/tasksync}/kube-node/: the pod sandbox's pause
#                     process and a tiny HTTP server for the smoke test.
#   redis image       Debian's redis-server with the libraries it links, packed the same way
#                     (when redis-server is installed: the test dependencies install it).
#   coredns           the cluster's DNS, built from the wrapper module in coredns/ (a few
#                     plugins only) into ${TASKSYNC_CACHE:-$HOME/.cache/tasksync}/bin/.
#
# Idempotent and cheap once done: packages are installed only when missing, and the images and
# CoreDNS are rebuilt only when their sources change (stamped with a hash of them).
#
# Output: progress on stderr, then KEY=VALUE lines on stdout that the cluster fixture parses:
#   CONTAINERD, CTR, RUNC, CNI_BIN_DIR, COREDNS,
#   PAUSE_IMAGE, PAUSE_IMAGE_ARCHIVE, HELLO_IMAGE, HELLO_IMAGE_ARCHIVE,
#   REDIS_IMAGE, REDIS_IMAGE_ARCHIVE (empty without redis-server)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${TASKSYNC_CACHE:-$HOME/.cache/tasksync}/kube-node"
bin="${TASKSYNC_CACHE:-$HOME/.cache/tasksync}/bin"
cni_bin_dir=/usr/lib/cni
cni_plugins=(bridge host-local loopback portmap)
pause_image=localhost/tasksync/pause:1
hello_image=localhost/tasksync/hello-http:1
redis_image=localhost/tasksync/redis:1
mkdir -p "$cache" "$bin"

log() { echo "ensure-node: $*" >&2; }

# shellcheck source=scripts/debian-packages.sh
source "$here/../debian-packages.sh"

ensure_packages() {
    if ! command -v containerd >/dev/null 2>&1 || ! command -v ctr >/dev/null 2>&1; then
        log "containerd not found, installing Debian's containerd"
        install_server_package containerd containerd
    fi
    if ! command -v runc >/dev/null 2>&1; then
        log "runc not found, installing Debian's runc"
        install_packages runc
    fi
    local plugin
    for plugin in "${cni_plugins[@]}"; do
        if ! [ -x "$cni_bin_dir/$plugin" ]; then
            log "CNI plugin $plugin not found, installing Debian's containernetworking-plugins"
            install_packages containernetworking-plugins
            break
        fi
    done
}

ensure_images() {
    local sources=("$here/pause.c" "$here/hello_http.c" "$here/oci_image.py")
    local want
    want="$(cat "${sources[@]}" | sha256sum | cut -d' ' -f1)"
    local stamp="$cache/images.stamp"
    if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        return
    fi
    exec 8>"$cache/.images.lock"
    flock 8
    if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        return
    fi
    command -v gcc >/dev/null 2>&1 || { log "gcc (with libc6-dev for -static) is required to build the test images"; exit 1; }
    log "building the test images into $cache"
    local build
    build="$(mktemp -d)"
    gcc -static -O2 -s -Wall -Wextra -Werror -o "$build/pause" "$here/pause.c"
    gcc -static -O2 -s -Wall -Wextra -Werror -o "$build/hello-http" "$here/hello_http.c"
    python3 "$here/oci_image.py" "$cache/pause.oci.tar" "$pause_image" /pause "$build/pause=/pause"
    python3 "$here/oci_image.py" "$cache/hello-http.oci.tar" "$hello_image" /hello-http \
        "$build/hello-http=/hello-http"
    rm -rf "$build"
    echo "$want" >"$stamp"
}

# Debian's redis-server in an image of its own: the binary (named redis-server: it is
# redis-check-rdb, and picks its role from argv[0]), the dynamic loader and every library ldd
# lists, at their paths on this machine.
ensure_redis_image() {
    local server
    server="$(readlink -f "$(command -v redis-server)")"
    local libraries
    mapfile -t libraries < <(ldd "$server" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
    local want
    want="$(cat "$server" "${libraries[@]}" "$here/oci_image.py" | sha256sum | cut -d' ' -f1)"
    local stamp="$cache/redis.stamp"
    if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        return
    fi
    exec 8>"$cache/.images.lock"
    flock 8
    log "packing Debian's redis-server into $cache/redis.oci.tar"
    local files=("$server=/redis-server") library
    for library in "${libraries[@]}"; do
        files+=("$library=$library")
    done
    python3 "$here/oci_image.py" "$cache/redis.oci.tar" "$redis_image" /redis-server "${files[@]}"
    echo "$want" >"$stamp"
}

ensure_coredns() {
    local module="$here/coredns" target="$bin/coredns"
    local want
    want="$(cat "$module/go.mod" "$module/go.sum" "$module/main.go" | sha256sum | cut -d' ' -f1)"
    if [ -x "$target" ] && [ "$(cat "$target.stamp" 2>/dev/null)" = "$want" ]; then
        return
    fi
    exec 7>"$bin/.coredns.lock"
    flock 7
    if [ -x "$target" ] && [ "$(cat "$target.stamp" 2>/dev/null)" = "$want" ]; then
        return
    fi
    command -v go >/dev/null 2>&1 || { log "Go is required to build CoreDNS"; exit 1; }
    local version
    version="$(awk '$1 == "require" && $2 == "github.com/coredns/coredns" { print $3 }' "$module/go.mod")"
    log "building CoreDNS $version into $bin (first run only; takes a few minutes)"
    local started=$SECONDS
    (
        cd "$module"
        GOFLAGS="${GOFLAGS:--p=2}" CGO_ENABLED=0 nice -n 10 go build -trimpath -ldflags "-s -w" \
            -o "$target.tmp" .
    )
    mv "$target.tmp" "$target"
    echo "$want" >"$target.stamp"
    log "built CoreDNS in $((SECONDS - started))s"
}

ensure_packages
ensure_images
ensure_coredns
if command -v redis-server >/dev/null 2>&1; then
    ensure_redis_image
    echo "REDIS_IMAGE=$redis_image"
    echo "REDIS_IMAGE_ARCHIVE=$cache/redis.oci.tar"
else
    echo "REDIS_IMAGE="
    echo "REDIS_IMAGE_ARCHIVE="
fi
echo "CONTAINERD=$(command -v containerd)"
echo "CTR=$(command -v ctr)"
echo "RUNC=$(command -v runc)"
echo "CNI_BIN_DIR=$cni_bin_dir"
echo "COREDNS=$bin/coredns"
echo "PAUSE_IMAGE=$pause_image"
echo "PAUSE_IMAGE_ARCHIVE=$cache/pause.oci.tar"
echo "HELLO_IMAGE=$hello_image"
echo "HELLO_IMAGE_ARCHIVE=$cache/hello-http.oci.tar"
