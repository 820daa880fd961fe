#!/usr/bin/env bash
# The test command of the README (`npm test`): type-check, then every test file with node's test runner.
# Real components only; certificates are generated at test time.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
node_modules/.bin/tsc --noEmit -p tsconfig.json
# One file at a time: the end-to-end files start real servers, and the machine has two cores.
exec node --import tsx --test --test-concurrency=1 "${@:-test/unit/ test/e2e/}"
