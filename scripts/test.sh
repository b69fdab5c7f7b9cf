#!/usr/bin/env bash
# Run every test, installing whatever the tests need first (idempotent: fast when all is there).
# Arguments are passed to pytest; with none, the web client's own suites run too.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure-test-deps.sh

if (($# == 0)); then
  (cd clients/web && npm test && npm run typecheck && npm run test:e2e)
fi

# pytest last: its summary is the closing line CI reads.
.venv/bin/python -m pytest "$@"
