#!/usr/bin/env bash
# The static checks (make lint; make test runs them first): ruff and mypy on the Python code, as
# configured in pyproject.toml, and the web client's ESLint and tsc. Each check runs even when an
# earlier one fails, so that one run shows every finding; the last lines name the failed checks.
# Expects .venv and clients/web/node_modules in place (make lint sees to both).
set -uo pipefail
cd "$(dirname "$0")/.."

failed=()

check() {
  local name=$1
  shift
  echo "--- $name"
  "$@" || failed+=("$name")
}

web() {
  (cd clients/web && npm run --silent "$@")
}

check "ruff" .venv/bin/ruff check .
check "mypy" .venv/bin/mypy
check "eslint (clients/web: npm run lint)" web lint
check "tsc (clients/web: npm run typecheck)" web typecheck

if ((${#failed[@]})); then
  for name in "${failed[@]}"; do
    echo "make lint: $name failed" >&2
  done
  exit 1
fi
echo "make lint: ruff, mypy, eslint and tsc found nothing"
