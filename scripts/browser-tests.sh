#!/usr/bin/env bash
# Headless-browser tests for the demo page, run against a real hub.
#
#   scripts/browser-tests.sh
#
# Environment:
#   HERALD_BIN               use this hub binary instead of building target/debug/herald
#   HERALD_REQUIRE_SERVICES  when 1, a missing Chromium is an error instead of a skip
set -euo pipefail

# A relative HERALD_BIN is relative to the caller's directory.
if [[ -n "${HERALD_BIN:-}" && "$HERALD_BIN" == */* && "$HERALD_BIN" != /* ]]; then
  HERALD_BIN="$PWD/$HERALD_BIN"
fi

cd "$(dirname "${BASH_SOURCE[0]}")/.."

CHROMIUM=/usr/bin/chromium

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  if [[ "${HERALD_REQUIRE_SERVICES:-}" == "1" ]]; then
    echo "FAIL browser tests: Node.js and npm are needed (https://nodejs.org)" >&2
    exit 1
  fi
  echo "SKIP browser tests: Node.js and npm not installed (https://nodejs.org)"
  exit 0
fi

if [[ ! -x "$CHROMIUM" ]]; then
  if [[ "$(id -u)" -eq 0 ]]; then
    echo "==> installing chromium"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
  elif [[ "${HERALD_REQUIRE_SERVICES:-}" == "1" ]]; then
    echo "FAIL browser tests: chromium not installed (apt-get install chromium)" >&2
    exit 1
  else
    echo "SKIP browser tests: chromium not installed (apt-get install chromium)"
    exit 0
  fi
fi

export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

echo "==> npm ci (tests/browser)"
npm ci --prefix tests/browser --no-audit --no-fund

if [[ -z "${HERALD_BIN:-}" ]]; then
  echo "==> cargo build -p herald --bin herald"
  cargo build -p herald --bin herald
  target_dir="${CARGO_TARGET_DIR:-target}"
  [[ "$target_dir" == /* ]] || target_dir="$PWD/$target_dir"
  HERALD_BIN="$target_dir/debug/herald"
fi
export HERALD_BIN

echo "==> browser tests (hub: $HERALD_BIN)"
# Node 20 walks a directory argument for *.test.js files; Node 21+ takes glob
# patterns instead and would try to load the directory as a module.
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if (( node_major >= 21 )); then
  test_args=(tests/browser/*.test.js)
else
  test_args=(tests/browser/)
fi
status=0
node --test --test-reporter=spec "${test_args[@]}" || status=$?
exit "$status"
