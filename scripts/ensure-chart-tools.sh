#!/usr/bin/env bash
# Make the tools the chart tests run available, and print where they are.
#
#   helm                 built with `go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION` into
#                        ${TASKSYNC_CACHE:-$HOME/.cache/tasksync}/bin/ (the Go module proxy is
#                        the only source these machines may download from).
#   promtool, prometheus Debian's prometheus package, installed with apt-get when missing.
#   kubernetes-validate  the PyPI package (it carries the Kubernetes schemas offline),
#                        installed when missing into the repository's .venv, or into the
#                        environment of $TASKSYNC_PYTHON (the test session passes its own).
#
# Idempotent and cheap once done: helm is rebuilt only when the pinned version changes. The
# first build takes a few minutes; it runs under `nice` with limited parallelism so a small
# shared machine stays usable.
#
# Output: progress on stderr, then exactly three lines on stdout that callers (the pytest
# fixtures in tests/chart/) parse:
#   HELM=/path/to/helm
#   PROMTOOL=/path/to/promtool
#   PROMETHEUS=/path/to/prometheus
set -euo pipefail

HELM_VERSION=v3.22.0

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${TASKSYNC_CACHE:-$HOME/.cache/tasksync}"
bin="$cache/bin"
python="${TASKSYNC_PYTHON:-$repo/.venv/bin/python}"
mkdir -p "$bin"

log() { echo "ensure-chart-tools: $*" >&2; }

# shellcheck source=scripts/debian-packages.sh
source "$(dirname "${BASH_SOURCE[0]}")/debian-packages.sh"

helm_current() {
    [ -x "$bin/helm" ] && "$bin/helm" version --template '{{.Version}}' 2>/dev/null
}

ensure_helm() {
    if [ "$(helm_current)" = "$HELM_VERSION" ]; then
        return
    fi
    # Two test sessions starting at once must not build twice or race on the output file.
    exec 9>"$bin/.helm.lock"
    flock 9
    if [ "$(helm_current)" = "$HELM_VERSION" ]; then
        return
    fi
    command -v go >/dev/null 2>&1 || { log "Go is required to install helm"; exit 1; }
    log "installing helm $HELM_VERSION into $bin (first run only; takes a few minutes)"
    local started=$SECONDS
    # The ldflags mirror helm's own release build (its Makefile): `helm version` reports the
    # release (the check above relies on it), and the default Kubernetes version that
    # `helm template` and lint's deprecation check assume follows the client-go helm is built
    # with (client-go v0.N is Kubernetes 1.N) instead of the source's fallback, 1.20.
    local gomod minor
    gomod="$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
    minor="$(awk '$1 == "k8s.io/client-go" { split($2, v, "."); print v[2] }' "$gomod")"
    local ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
    local pkg
    for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
        ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$minor"
    done
    GOBIN="$bin" GOFLAGS="${GOFLAGS:--p=2}" CGO_ENABLED=0 nice -n 10 go install -trimpath \
        -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
    log "installed helm in $((SECONDS - started))s"
}

ensure_prometheus() {
    if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
        return
    fi
    log "promtool or prometheus not found, installing Debian's prometheus"
    install_server_package prometheus prometheus
}

ensure_kubernetes_validate() {
    if "$python" -c 'import kubernetes_validate' >/dev/null 2>&1; then
        return
    fi
    log "installing kubernetes-validate into $("$python" -c 'import sys; print(sys.prefix)')"
    "$python" -m pip install -q 'kubernetes-validate>=1.31' >&2
}

ensure_helm
ensure_prometheus
ensure_kubernetes_validate
echo "HELM=$bin/helm"
echo "PROMTOOL=$(command -v promtool)"
echo "PROMETHEUS=$(command -v prometheus)"
