#!/usr/bin/env bash
# Builds the later passes' folders of scripts/test.sh one after another, without running their
# tests: test.sh starts this in the background at the lowest CPU priority once the normal build
# is done, so these builds use what the test phases leave idle (a test waits on processes,
# sockets and timers much of its time) and never slow a test down.
#   usage: scripts/build_passes.sh LOG_DIR PASS...    PASS: fuzz emulated sanitized
# For each pass it writes LOG_DIR/PASS.log (the build's output) and then LOG_DIR/PASS.rc (its
# exit code), which test.sh waits for before that pass's tests.
set -uo pipefail
cd "$(dirname "$0")/.."
LOGS=$1
shift
for pass in "$@"; do
  case $pass in
    fuzz) MOE_BUILD_ONLY=1 bash scripts/fuzz.sh "${MOE_FUZZ_SECONDS:-15}" ;;
    emulated) MOE_BUILD_ONLY=1 bash scripts/test_emulated.sh ;;
    sanitized) MOE_BUILD_ONLY=1 bash scripts/test_sanitized.sh ;;
    *) echo "build_passes.sh: unknown pass '$pass' (expected fuzz, emulated or sanitized)"; false ;;
  esac >"$LOGS/$pass.log" 2>&1
  echo $? >"$LOGS/$pass.rc"
done
