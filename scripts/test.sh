#!/usr/bin/env bash
# The test command of the README (`npm test`): type-check, then every test file with node's test runner.
# Real components only; certificates are generated at test time. `npm test -- FILE...` runs some files,
# one at a time; `npm run test:bench` the benchmark's other modes (test/bench/, not part of `npm test`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
node_modules/.bin/tsc --noEmit -p tsconfig.json
# --test-force-exit: a file whose test failed before it closed its servers must not hold the run.
# --test-timeout (ms, per test): a test that hangs fails instead of holding the run for ever.
run() { node --import tsx --test --test-force-exit --test-timeout=300000 "$@"; }
# A certificate set made once for the run, each test file's first one a copy (test/helpers/pki.ts).
FIELDSTREAM_TEST_PKI_CACHE="$(mktemp -d "${TMPDIR:-/tmp}/fieldstream-test-pki-XXXXXX")"
export FIELDSTREAM_TEST_PKI_CACHE
trap 'rm -rf "$FIELDSTREAM_TEST_PKI_CACHE"' EXIT
if [ "$#" -gt 0 ]; then run --test-concurrency=1 "$@"; exit 0; fi
# The unit files two at a time (the machine has two cores, and each file spends much of its time in
# one process: key generation, a script, a single server); then the end-to-end files two at a time:
# each starts its own servers (ports picked at run time, folders of its own) and mostly waits on them,
# so a pair takes 60 % of the time of the two in turn (docs/testing.md). Both sets run, whatever the
# first gives.
# Each stage's report is kept too: a failure far up a long log is repeated at its end, where a reader
# of the log's last lines (a CI excerpt) finds it.
reports="$(mktemp -d "${TMPDIR:-/tmp}/fieldstream-test-reports-XXXXXX")"
trap 'rm -rf "$FIELDSTREAM_TEST_PKI_CACHE" "$reports"' EXIT
status=0
run --test-concurrency=2 test/unit/*.test.ts | tee "$reports/unit.tap" || status=$?
run --test-concurrency=2 test/e2e/*.test.ts | tee "$reports/e2e.tap" || status=$?
if [ "$status" -ne 0 ]; then
  echo "# FAILED: each failing test and its diagnostics, repeated from above (at most 200 lines)"
  # A TAP "not ok" line, then its YAML block up to the "..." that ends it.
  awk '/^ *not ok /{show=1} show{print} show && /^ *\.\.\.$/{show=0}' "$reports/unit.tap" "$reports/e2e.tap" | head -n 200 || true
fi
exit "$status"
