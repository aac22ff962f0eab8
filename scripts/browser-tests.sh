#!/usr/bin/env bash
# Headless-browser tests of the demo app the hub serves at `/`, against a real hub.
# First checks that the committed bundle (assets/demo) is what clients/js/demo
# builds, so the page the binary embeds never goes stale.
#
#   scripts/browser-tests.sh
#
# Environment:
#   HERALD_BIN               use this hub binary instead of building target/debug/herald
#   CARGO_TARGET_DIR         where cargo builds (default: target)
#   HERALD_REQUIRE_SERVICES  when 1, a missing Node.js/npm, Chromium or Redis is an error instead of a skip
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
    echo "FAIL browser tests: $1" >&2
    exit 1
  fi
  echo "SKIP browser tests: $1"
  exit 0
}

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  skip_or_fail "Node.js and npm not installed (https://nodejs.org)"
fi

if [[ ! -x "$CHROMIUM" ]]; then
  if [[ "$(id -u)" -eq 0 ]]; then
    echo "==> installing chromium"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
  else
    skip_or_fail "chromium not installed at $CHROMIUM (apt-get install chromium)"
  fi
fi

# Playwright drives the system Chromium; it must never download a browser.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

echo "==> npm ci ($PKG)"
npm ci --prefix "$PKG" --no-audit --no-fund

echo "==> build ($PKG)"
# The test pages import the package by its name, which resolves to its build.
npm run --prefix "$PKG" build

echo "==> demo bundle ($PKG/demo -> assets/demo)"
npm run --prefix "$PKG" build:demo
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  untracked="$(git ls-files --others --exclude-standard -- assets/demo)"
  if ! git diff --exit-code --stat -- assets/demo || [[ -n "$untracked" ]]; then
    echo "FAIL: assets/demo differs from what $PKG/demo builds${untracked:+ (untracked: $untracked)}." >&2
    echo "      Run \`npm run build:demo\` in $PKG and commit assets/demo with the demo's source." >&2
    exit 1
  fi
else
  echo "SKIP bundle check: not a git checkout"
fi

if [[ -z "${HERALD_BIN:-}" ]]; then
  echo "==> cargo build -p herald --bin herald"
  cargo build -p herald --bin herald
  target_dir="${CARGO_TARGET_DIR:-target}"
  [[ "$target_dir" == /* ]] || target_dir="$PWD/$target_dir"
  HERALD_BIN="$target_dir/debug/herald"
fi
export HERALD_BIN

echo "==> demo app tests ($PKG/test/e2e/demo.e2e.test.ts, hub: $HERALD_BIN)"
npm run --prefix "$PKG" test:demo
