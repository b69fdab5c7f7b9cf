#!/usr/bin/env bash
# Regenerate the lock files from pyproject.toml's ranges (make lock; make lock-upgrade for the
# newest versions the ranges allow, which `make lock` leaves alone while they still fit):
#   requirements/lock.txt    the newest versions: what `make venv` installs, CI and the image too
#   requirements/lowest.txt  each direct dependency at its floor: what the lowest-versions run
#                            of `make test` installs (scripts/test-lowest.sh)
# Both for Python 3.11 on Linux, with the hashes of every file of each pinned version (pip then
# refuses anything else). uv resolves them: it is one wheel from PyPI, and unlike pip-compile it
# can resolve to the floors (--resolution lowest-direct).
set -euo pipefail
cd "$(dirname "$0")/.."

uv_version=0.13.9
tools="${TASKSYNC_CACHE:-$HOME/.cache/tasksync}/uv-$uv_version"
if [ ! -x "$tools/bin/uv" ]; then
    python3 -m venv "$tools"
    "$tools/bin/pip" install -q "uv==$uv_version"
fi

compile() {
    "$tools/bin/uv" pip compile pyproject.toml --extra test --python-version 3.11 \
        --python-platform x86_64-unknown-linux-gnu --generate-hashes --quiet "$@"
}
compile --custom-compile-command "make lock" -o requirements/lock.txt "$@"
compile --custom-compile-command "make lock" --resolution lowest-direct -o requirements/lowest.txt "$@"
