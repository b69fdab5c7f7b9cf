#!/usr/bin/env bash
# Build the TaskSync image from the Containerfile with podman (scripts/image/podman.sh), on a
# machine with or without a container registry. `make image` runs it.
#
#   scripts/image/build.sh                 ghcr.io/tasksync/tasksync:<version>, built unless up to date
#   scripts/image/build.sh --oci-archive   the same, also saved as an OCI archive for containerd
#                                          (`ctr -n k8s.io images import <archive>`)
#
# The base is $TASKSYNC_BASE_IMAGE (default: the official Python image the Containerfile names)
# when podman has it or can pull it; the build is then the ordinary one, pip inside it reaching
# the package index. With no registry to pull from:
#   1. a Debian base (bookworm's python3) is bootstrapped with mmdebstrap and imported; the
#      tarball is cached, keyed by what goes into it;
#   2. the image's Python packages are downloaded on the host into a wheelhouse (a pip inside
#      the build would not trust this machine's CA bundle), at the versions of
#      requirements/lock.txt (which constrains them), and
#      resolved by the host's Debian python3, the very Python of the base, so that markers such
#      as `python_full_version < "3.11.3"` and wheel tags are those of the image;
#   3. the Containerfile is built on that base with the wheelhouse and no network at all.
# The image carries a hash of everything it is built from (label io.tasksync.image.inputs); a
# run that finds the same hash builds nothing. Missing Debian packages (podman, runc,
# mmdebstrap) are installed first. Caches live in ${TASKSYNC_CACHE:-$HOME/.cache/tasksync}.
#
# Output: progress on stderr, then on stdout, for callers to parse:
#   IMAGE=ghcr.io/tasksync/tasksync:0.1.0
#   ARCHIVE=/root/.cache/tasksync/image/tasksync-0.1.0.oci.tar     (with --oci-archive)
set -euo pipefail
shopt -s inherit_errexit

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cache="${TASKSYNC_CACHE:-$HOME/.cache/tasksync}/image"
podman="$repo/scripts/image/podman.sh"
python="$repo/.venv/bin/python"
context_wheelhouse="$repo/scripts/image/wheelhouse"
default_base="$(sed -n 's/^ARG BASE_IMAGE=//p' "$repo/Containerfile")"
base_image="${TASKSYNC_BASE_IMAGE:-$default_base}"
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/pyproject.toml" | head -n 1)"
image="ghcr.io/tasksync/tasksync:$version"
# Labels and names of what this script keeps in podman's storage.
inputs_label=io.tasksync.image.inputs
debian_base_repository=localhost/tasksync-debian-base
build_stage_tag=localhost/tasksync-build-stage:latest

# The Debian base: the official image's Debian release with its essential packages only (no
# apt: nothing installs packages into a running image, and its root file system is read-only),
# Python with its venv module, CA certificates (JWKS, webhooks) and /etc/services. No time zone
# data: nothing here resolves a zone, and Python's zoneinfo would find the tzdata wheel. Left
# out too: documentation (copyright files excepted), manual pages, translations and glibc's
# iconv modules (Python's codecs are its own). Every megabyte counts against the image's budget
# of 250 MB.
debian_suite=bookworm
debian_packages=python3,python3-venv,ca-certificates,netbase
debian_mirror="${TASKSYNC_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
debian_security_mirror="${TASKSYNC_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
mmdebstrap_options=(
    --variant=essential
    --include="$debian_packages"
    # /bin, /lib and /sbin as symbolic links into /usr, set up directly: the usrmerge package
    # that would otherwise do it pulls perl in (50 MB).
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
    --dpkgopt='path-exclude=/usr/share/doc/*'
    --dpkgopt='path-include=/usr/share/doc/*/copyright'
    --dpkgopt='path-exclude=/usr/share/man/*'
    --dpkgopt='path-exclude=/usr/share/info/*'
    --dpkgopt='path-exclude=/usr/share/locale/*'
    --dpkgopt='path-exclude=/usr/share/lintian/*'
    --dpkgopt='path-exclude=/usr/lib/*/gconv/*'
)

oci_archive=false
case "${1:-}" in
    "") ;;
    --oci-archive) oci_archive=true ;;
    *) echo "usage: $0 [--oci-archive]" >&2; exit 2 ;;
esac

log() { echo "build-image: $*" >&2; }
sha() { sha256sum | cut -c1-16; }

# shellcheck source=scripts/debian-packages.sh
source "$repo/scripts/debian-packages.sh"

# Install the Debian packages providing these commands, those that are missing.
#   ensure_commands COMMAND=PACKAGE...
ensure_commands() {
    local pair missing=()
    for pair in "$@"; do
        command -v "${pair%%=*}" >/dev/null 2>&1 || missing+=("${pair#*=}")
    done
    if ((${#missing[@]})); then
        install_packages "${missing[@]}"
    fi
}

image_id() { "$podman" image inspect --format '{{.Id}}' "$1" 2>/dev/null; }

# The Debian base as an image in podman's storage; prints its name.
ensure_debian_base() {
    local key tarball name
    key="$(printf '%s\n' "$debian_suite" "${mmdebstrap_options[@]}" | sha)"
    tarball="$cache/debian-base-$debian_suite-$key.tar"
    name="$debian_base_repository:$debian_suite-$key"
    if ! image_id "$name" >/dev/null; then
        if [ ! -f "$tarball" ]; then
            ensure_commands mmdebstrap=mmdebstrap
            log "bootstrapping a Debian $debian_suite base with mmdebstrap (cached as $tarball)"
            local started=$SECONDS
            # Sources are named explicitly: with none, mmdebstrap would read them from stdin. The
            # output's name must end in .tar, or mmdebstrap writes a directory.
            local partial="$cache/partial-${tarball##*/}" log="$cache/mmdebstrap.log"
            if ! mmdebstrap "${mmdebstrap_options[@]}" "$debian_suite" "$partial" \
                "deb $debian_mirror $debian_suite main" \
                "deb $debian_mirror $debian_suite-updates main" \
                "deb $debian_security_mirror $debian_suite-security main" </dev/null >"$log" 2>&1; then
                tail -n 30 "$log" >&2
                log "mmdebstrap failed; its log: $log"
                exit 1
            fi
            mv "$partial" "$tarball"
            find "$cache" -maxdepth 1 -name 'debian-base-*.tar' ! -name "${tarball##*/}" -delete
            log "bootstrapped in $((SECONDS - started)) s"
        fi
        # The official image's environment; an imported tarball has none.
        "$podman" import --quiet \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'ENV LANG=C.UTF-8' \
            "$tarball" "$name" >/dev/null
        local stale
        for stale in $("$podman" images --format '{{.Repository}}:{{.Tag}}' "$debian_base_repository"); do
            [ "$stale" = "$name" ] || "$podman" rmi "$stale" >/dev/null 2>&1 || true
        done
    fi
    echo "$name"
}

# The wheelhouse for the Debian base; prints its directory.
ensure_wheelhouse() {
    local base=$1 constraints requirements key dir
    # The lock's pins without their hashes and markers: as constraints, a pin of a package the
    # image does not install is ignored.
    constraints="$(sed -n 's/^\([A-Za-z0-9._-]*==[^ ;]*\).*/\1/p' "$repo/requirements/lock.txt")"
    requirements="$("$python" "$repo/scripts/image/requirements.py" "$repo/pyproject.toml" --build-backend)"
    key="$(printf '%s\n' "$base" "$requirements" "$constraints" | sha)"
    dir="$cache/wheelhouse-$key"
    if [ ! -f "$dir/.complete" ]; then
        local base_python host_python
        base_python="$("$podman" run --rm --network none "$base" python3 -c 'import platform; print(platform.python_version())')"
        host_python="$(/usr/bin/python3 -c 'import platform; print(platform.python_version())' 2>/dev/null || echo none)"
        if [ "$host_python" != "$base_python" ]; then
            log "the base has Python $base_python, but this machine's /usr/bin/python3 is $host_python;"
            log "the wheelhouse must be resolved by the base's own Python (a Debian $debian_suite host)"
            exit 1
        fi
        log "downloading the image's Python packages into $dir"
        rm -rf "$dir.partial"
        mkdir -p "$dir.partial"
        # The venv's pip, run by Debian's interpreter: pip carries all it needs inside itself.
        /usr/bin/python3 "$("$python" -c 'import os, pip; print(os.path.dirname(pip.__file__))')" download \
            --quiet --only-binary=:all: --dest "$dir.partial" \
            --requirement <(echo "$requirements") --constraint <(echo "$constraints") >&2
        touch "$dir.partial/.complete"
        rm -rf "$dir"
        mv "$dir.partial" "$dir"
        find "$cache" -maxdepth 1 -name 'wheelhouse-*' ! -name "${dir##*/}" -exec rm -rf {} +
    fi
    echo "$dir"
}

# A hash of everything the image is built from: the base, the wheels, the Containerfile and the
# files of the build context (the allow-list in .dockerignore).
inputs_hash() {
    local base=$1 wheelhouse=$2 revision=$3
    {
        echo "base $(image_id "$base") version $version revision $revision"
        if [ -n "$wheelhouse" ]; then (cd "$wheelhouse" && ls -- *.whl); fi
        cd "$repo"
        find Containerfile .dockerignore pyproject.toml README.md service operator plugins \
            scripts/image/requirements.py -type f ! -path '*/__pycache__/*' ! -name '*.py[cod]' -print0 \
            | sort -z | xargs -0 sha256sum
    } | sha
}

empty_context_wheelhouse() { find "$context_wheelhouse" -maxdepth 1 -name '*.whl' -delete; }

build() {
    local base=$1 wheelhouse=$2 revision=$3 inputs=$4 network=host
    empty_context_wheelhouse
    if [ -n "$wheelhouse" ]; then
        # Hard links where the file system allows: the wheels stay in the build context only
        # for this build, so an ordinary build later never picks up a stale set.
        cp --link "$wheelhouse"/*.whl "$context_wheelhouse/" 2>/dev/null || cp "$wheelhouse"/*.whl "$context_wheelhouse/"
        network=none
    fi
    trap empty_context_wheelhouse EXIT
    local common=(
        --file "$repo/Containerfile" --pull=never --network "$network"
        --build-arg "BASE_IMAGE=$base" --build-arg "VERSION=$version" --build-arg "REVISION=$revision"
    )
    "$podman" build "${common[@]}" --label "$inputs_label=$inputs" --tag "$image" "$repo" >&2
    # The build stage, tagged, keeps its layers (the installed dependencies) for the next build,
    # while the prune drops the images this build replaced.
    "$podman" build --quiet "${common[@]}" --target build --tag "$build_stage_tag" "$repo" >/dev/null
    "$podman" image prune --force >/dev/null
    empty_context_wheelhouse
    trap - EXIT
}

save_archive() {
    local archive="$cache/tasksync-$version.oci.tar" id
    id="$(image_id "$image")"
    if [ "$(cat "$archive.image-id" 2>/dev/null)" != "$id" ]; then
        log "saving $image as $archive"
        rm -f "$archive.partial"
        "$podman" save --quiet --format oci-archive --output "$archive.partial" "$image"
        mv "$archive.partial" "$archive"
        echo "$id" >"$archive.image-id"
    fi
    echo "ARCHIVE=$archive"
}

main() {
    mkdir -p "$cache"
    ensure_commands podman=podman runc=runc
    # Two builds at once (make image beside a test session) would race on the build context.
    exec 9>"$cache/.build.lock"
    flock 9

    local base wheelhouse="" revision inputs started=$SECONDS
    if image_id "$base_image" >/dev/null || timeout 300 "$podman" pull --quiet "$base_image" >/dev/null 2>&1; then
        base="$base_image"
    else
        log "cannot pull $base_image: building on a Debian base bootstrapped here"
        base="$(ensure_debian_base)"
        wheelhouse="$(ensure_wheelhouse "$base")"
    fi
    revision="$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)"
    inputs="$(inputs_hash "$base" "$wheelhouse" "$revision")"
    if [ "$("$podman" image inspect --format "{{index .Labels \"$inputs_label\"}}" "$image" 2>/dev/null)" != "$inputs" ]; then
        log "building $image on $base"
        build "$base" "$wheelhouse" "$revision" "$inputs"
        local size
        size="$("$podman" image inspect --format '{{.Size}}' "$image")"
        log "built in $((SECONDS - started)) s: $((size / 1000000)) MB"
    fi
    echo "IMAGE=$image"
    if $oci_archive; then
        save_archive
    fi
}

main
