#!/usr/bin/env bash
# Runs the whole suite (unit, integration, interop). Tests that need /dev/kvm skip with a message where
# the machine has none. Extra arguments go to ctest (e.g. -R qcow2).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f build/build.ninja ] || { echo "test: run ./scripts/setup.sh first" >&2; exit 1; }
cmake --build build -j"$(nproc)"
ctest --test-dir build --output-on-failure -j"$(nproc)" "$@"
