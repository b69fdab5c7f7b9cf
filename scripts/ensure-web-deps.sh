#!/usr/bin/env bash
# Make the web client ready: its npm packages installed and the demo app built, and with
# --browser also Debian's chromium for the real-browser test. Safe to run again: each step
# checks first, so a run with nothing to do takes a moment.
#
#   scripts/ensure-web-deps.sh            npm packages + demo build (what `make demo` needs)
#   scripts/ensure-web-deps.sh --browser  the same, plus /usr/bin/chromium (what the tests need)
set -euo pipefail
cd "$(dirname "$0")/.."

browser=false
case "${1:-}" in
  "") ;;
  --browser) browser=true ;;
  *) echo "usage: $0 [--browser]" >&2; exit 2 ;;
esac

web=clients/web

if ! command -v npm >/dev/null; then
  echo "ensure-web-deps: npm not found; install Node.js $(sed -n 's/.*"node": "\(.*\)".*/\1/p' "$web/package.json")" >&2
  exit 1
fi

# Two runs at once (make demo beside make test) would run npm ci into the same folder.
exec 9>"${TMPDIR:-/tmp}/tasksync-ensure-web-deps.lock"
flock 9

# npm ci when node_modules is missing or was installed from another package-lock.json. The hash,
# not the file time, decides: a checkout touches the lock file without changing it.
lock_hash=$(sha256sum "$web/package-lock.json" | cut -d' ' -f1)
stamp="$web/node_modules/.tasksync-package-lock.sha256"
if [[ ! -f $stamp || $(<"$stamp") != "$lock_hash" ]]; then
  echo "ensure-web-deps: npm ci in $web"
  (cd "$web" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$lock_hash" >"$stamp"
fi

# Build the demo when it is missing or any of its inputs (its own sources and the library it
# imports from src/) changed since the last build.
built="$web/demo/dist/index.html"
inputs=("$web/demo/src" "$web/demo/index.html" "$web/demo/vite.config.ts" "$web/src"
        "$web/package.json" "$web/package-lock.json" "$web/tsconfig.base.json")
if [[ ! -f $built ]] || [[ -n $(find "${inputs[@]}" -newer "$built" -print -quit) ]]; then
  echo "ensure-web-deps: building the demo app into $web/demo/dist"
  (cd "$web" && npm run --silent build:demo -- --logLevel warn)
fi

if $browser && [[ ! -x /usr/bin/chromium ]]; then
  echo "ensure-web-deps: /usr/bin/chromium not found; the browser test needs Debian's chromium"
  # shellcheck source=scripts/debian-packages.sh
  source scripts/debian-packages.sh
  install_packages chromium
fi
