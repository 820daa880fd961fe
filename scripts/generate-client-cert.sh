#!/usr/bin/env bash
# Issues a device certificate (CN = DEVICE_ID) and writes its bundle to certs/bundles/DEVICE_ID.tar.gz.
# usage: scripts/generate-client-cert.sh DEVICE_ID [--days N] [--renew [--revoke-old]]   (certs/, or CERTS_DIR from the environment or .env)
# --revoke-old: the device's earlier certificates revoked at once (a key that may have been copied)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tsx="$here/../node_modules/.bin/tsx"
[ -x "$tsx" ] || { echo "error: run 'npm ci' in $(dirname "$here") first" >&2; exit 69; }
exec "$tsx" "$here/pki.ts" client "$@"
