#!/usr/bin/env bash
# The test command of the README (`npm test`): type-check, then every test file with node's test runner.
# Real components only; certificates are generated at test time. `npm test -- FILE...` runs some files.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
node_modules/.bin/tsc --noEmit -p tsconfig.json
if [ "$#" -eq 0 ]; then set -- test/unit/*.test.ts test/e2e/*.test.ts; fi
# One file at a time: the end-to-end files start real servers, and the machine has two cores.
# --test-force-exit: a file whose test failed before it closed its servers must not hold the run.
# --test-timeout (ms, per test): a test that hangs fails instead of holding the run for ever.
exec node --import tsx --test --test-concurrency=1 --test-force-exit --test-timeout=300000 "$@"
