#!/usr/bin/env bash
# Run every test, installing whatever the tests need first (idempotent: fast when all is there).
# Arguments are passed to pytest; with none, the static checks (make lint) run first, then the
# web client's own suites and the transport tests at the lowest allowed versions
# (scripts/test-lowest.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure-test-deps.sh

if (($# == 0)); then
  # Seconds, before the minutes of tests: a lint or type error fails the run at once.
  make --no-print-directory lint
  (cd clients/web && npm test && npm run test:e2e)
  # What TaskSync borrows from uvicorn's internals, at the lowest versions pyproject.toml allows
  # (the run below is at the locked ones).
  bash scripts/test-lowest.sh -q
fi

# pytest last: its summary is the closing line CI reads.
.venv/bin/python -m pytest "$@"
