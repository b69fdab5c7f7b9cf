#!/usr/bin/env bash
# The transport, slow-consumer and stall tests at the lowest versions pyproject.toml allows
# (requirements/lowest.txt): the tests of what TaskSync borrows from uvicorn's internals, where
# an old version breaks silently rather than on import. Run by `make test` next to the locked
# run of everything. Their venv is cached outside the repository and built again only when
# requirements/lowest.txt changes. Arguments are passed to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${TASKSYNC_CACHE:-$HOME/.cache/tasksync}"
key="$({ cat requirements/lowest.txt; pwd; python3 --version; } | sha256sum | cut -c1-16)"
venv="$cache/venv-lowest-$key"
if [ ! -f "$venv/.installed" ]; then
    echo "installing the lowest allowed versions (requirements/lowest.txt) into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r requirements/lowest.txt
    # The build backend (hatchling, editables) is pinned in requirements/lowest.txt.
    "$venv/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
    "$venv/bin/pip" check
    touch "$venv/.installed"
    find "$cache" -maxdepth 1 -name 'venv-lowest-*' ! -name "${venv##*/}" -exec rm -rf {} +
fi

"$venv/bin/python" -m pytest -p no:cacheprovider \
    tests/unit/test_transport.py tests/delivery/test_slow_consumer.py tests/reliability/test_floods.py "$@"
