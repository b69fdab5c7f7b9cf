#!/usr/bin/env bash
# Run every test, installing whatever the tests need first (idempotent: fast when all is there).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure-test-deps.sh

.venv/bin/python -m pytest "$@"
