#!/usr/bin/env bash
# Creates the FieldStream CA (once) and the certificates of every service.
# usage: scripts/generate-certificates.sh DOMAIN [--new-ca] [--renew] [--renew-dmz] [--renew-service NAME]... [--edge-host HOST]... [--dmz-broker-host HOST]... [--internal-broker-host HOST]...
# Output goes to certs/ (or CERTS_DIR, from the environment or .env). An existing CA is kept unless --new-ca is given, and existing
# service certificates are kept unless --renew is given. --renew-dmz, after a compromise of the DMZ server, issues the DMZ's
# certificates (edge, gateway, DMZ broker) again and revokes every earlier one; devices keep theirs
# (docs/operations.md, "Recovering from a DMZ compromise"). --renew-service NAME (bridge, distributor, command-api, consumer,
# console, monitor; once for each) issues that internal service's client certificate again and revokes every earlier one of it,
# for a leaked key; the brokers refuse the old one once restarted (docs/operations.md, "Revoking an internal service's certificate").
# If the kept certificates do not name DOMAIN and the hosts given (npm start's, made for localhost, say), nothing is changed and it
# exits 73 (PKI_NAMES_MISSING).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tsx="$here/../node_modules/.bin/tsx"
[ -x "$tsx" ] || { echo "error: run 'npm ci' in $(dirname "$here") first" >&2; exit 69; }
exec "$tsx" "$here/pki.ts" setup "$@"
