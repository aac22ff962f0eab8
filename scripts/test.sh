#!/usr/bin/env bash
# Runs every test of the project: Rust unit and integration tests, then the
# demo app's browser tests and the TypeScript client's tests in headless
# Chromium. Installs what the browser tests need.
#
# Tests that need a service or a tool that is missing are skipped with a
# visible reason; with HERALD_REQUIRE_SERVICES=1 they fail instead.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust from https://rustup.rs" >&2
  exit 1
fi

echo "== Rust tests"
cargo test --workspace --all-targets

# The integration tests built the hub binary; the browser tests use that one
# rather than building it again with other features.
if [[ -z "${HERALD_BIN:-}" ]]; then
  target_dir="${CARGO_TARGET_DIR:-target}"
  [[ "$target_dir" == /* ]] || target_dir="$PWD/$target_dir"
  export HERALD_BIN="$target_dir/debug/herald"
fi

echo "== Demo app browser tests"
bash scripts/browser-tests.sh

echo "== TypeScript client tests"
bash scripts/client-tests.sh
