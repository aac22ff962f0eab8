#!/usr/bin/env bash
# Tests of the browser client package (clients/js): typecheck, build, unit tests,
# then end-to-end tests in headless Chromium against a real hub (the demo app's
# tests, in the same folder, are run by scripts/browser-tests.sh).
#
#   scripts/client-tests.sh
#
# Environment:
#   HERALD_BIN               use this hub binary instead of building it with cargo
#   CARGO_TARGET_DIR         where cargo builds (default: target)
#   HERALD_REQUIRE_SERVICES  when 1, a missing Node.js/npm or Chromium is an error instead of a skip
set -euo pipefail

# A relative HERALD_BIN is relative to the caller's directory.
if [[ -n "${HERALD_BIN:-}" && "$HERALD_BIN" == */* && "$HERALD_BIN" != /* ]]; then
  HERALD_BIN="$PWD/$HERALD_BIN"
fi

cd "$(dirname "${BASH_SOURCE[0]}")/.."

CHROMIUM=/usr/bin/chromium
PKG=clients/js

skip_or_fail() {
  if [[ "${HERALD_REQUIRE_SERVICES:-}" == "1" ]]; then
    echo "FAIL client tests: $1" >&2
    exit 1
  fi
  echo "SKIP client tests: $1"
  exit 0
}

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  skip_or_fail "Node.js and npm not installed (https://nodejs.org)"
fi
if [[ ! -x "$CHROMIUM" ]]; then
  skip_or_fail "chromium not installed at $CHROMIUM (apt-get install chromium)"
fi

# Playwright drives the system Chromium; it must never download a browser.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

echo "==> npm ci ($PKG)"
npm ci --prefix "$PKG" --no-audit --no-fund

echo "==> build ($PKG)"
npm run --prefix "$PKG" build

echo "==> typecheck ($PKG)"
npm run --prefix "$PKG" typecheck

echo "==> unit tests ($PKG)"
npm run --prefix "$PKG" test

if [[ -z "${HERALD_BIN:-}" ]]; then
  echo "==> cargo build -p herald --bin herald"
  cargo build -p herald --bin herald
  target_dir="${CARGO_TARGET_DIR:-target}"
  [[ "$target_dir" == /* ]] || target_dir="$PWD/$target_dir"
  HERALD_BIN="$target_dir/debug/herald"
fi
export HERALD_BIN

echo "==> end-to-end tests ($PKG, hub: $HERALD_BIN)"
npm run --prefix "$PKG" test:e2e
