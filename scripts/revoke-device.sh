#!/usr/bin/env bash
# Revokes a device: every certificate issued to it goes into the CRL (certs/ca.crl) and the
# gateways' revoked list (certs/dmz/revocation/revoked-serials.txt), and its signing key leaves the internal
# registry. With --superseded, only the certificates of the device a renewal superseded (its newest and
# its signing key stay). usage: scripts/revoke-device.sh DEVICE_ID [--superseded]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tsx="$here/../node_modules/.bin/tsx"
[ -x "$tsx" ] || { echo "error: run 'npm ci' in $(dirname "$here") first" >&2; exit 69; }
exec "$tsx" "$here/pki.ts" revoke "$@"
