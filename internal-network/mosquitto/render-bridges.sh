#!/bin/sh
# Renders the bridge template (bridge.conf) once per DMZ broker into a folder the internal broker's
# configuration includes (include_dir), so the internal broker dials out to every DMZ server.
# usage: render-bridges.sh TEMPLATE OUTPUT_DIR
#   DMZ_BROKER_HOSTS  "host1:8883,host2:8883" (port 8883 when left out), or, for one DMZ server,
#   DMZ_BROKER_HOST and DMZ_BROKER_PORT (default 8883) as before
#   BRIDGE_CLIENT_ID  the first bridge's client id (default fieldstream-bridge); the n-th gets "-n" appended
#   BRIDGE_STATE_TOKEN  16 to 128 letters, digits, "_" or "-", known on the internal side only: each
#                     bridge's state is published as $SYS/broker/connection/<client id>-<token>/state
#                     (unset: .../<client id>/state, which a compromised DMZ can forge)
#   RENDER_CONFIG     the template renderer (default: render-config.sh on the PATH)
# Neither DMZ_BROKER_HOSTS nor DMZ_BROKER_HOST set, or a malformed entry: exit 78 (EX_CONFIG).
set -eu
[ $# -eq 2 ] || { echo "usage: $0 TEMPLATE OUTPUT_DIR" >&2; exit 64; }
render=${RENDER_CONFIG:-render-config.sh}
if [ -n "${DMZ_BROKER_HOSTS:-}" ]; then
  list=$DMZ_BROKER_HOSTS
elif [ -n "${DMZ_BROKER_HOST:-}" ]; then
  list="$DMZ_BROKER_HOST:${DMZ_BROKER_PORT:-8883}"
else
  echo "render-bridges: set DMZ_BROKER_HOSTS (host:port,...) or DMZ_BROKER_HOST" >&2
  exit 78
fi
token=${BRIDGE_STATE_TOKEN:-}
if [ -n "$token" ]; then
  case $token in *[!A-Za-z0-9_-]*) echo "render-bridges: BRIDGE_STATE_TOKEN must be 16 to 128 letters, digits, \"_\" or \"-\"" >&2; exit 78 ;; esac
  [ ${#token} -ge 16 ] && [ ${#token} -le 128 ] || { echo "render-bridges: BRIDGE_STATE_TOKEN must be 16 to 128 letters, digits, \"_\" or \"-\"" >&2; exit 78; }
fi
mkdir -p "$2"
rm -f "$2"/bridge-*.conf
base=${BRIDGE_CLIENT_ID:-fieldstream-bridge}
n=0
for entry in $(printf '%s' "$list" | tr ',' ' '); do
  n=$((n + 1))
  case $entry in
    *:*) host=${entry%:*} port=${entry##*:} ;;
    *) host=$entry port=8883 ;;
  esac
  case $port in ''|*[!0-9]*) echo "render-bridges: bad port in \"$entry\" (DMZ_BROKER_HOSTS)" >&2; exit 78 ;; esac
  [ -n "$host" ] || { echo "render-bridges: no host in \"$entry\" (DMZ_BROKER_HOSTS)" >&2; exit 78; }
  # The first bridge keeps the single-server names (connection "dmz", client id $base), so an
  # upgrade keeps its persistent sessions on both brokers.
  if [ $n -eq 1 ]; then name=dmz id=$base; else name=dmz$n id=$base-$n; fi
  state=$id
  [ -z "$token" ] || state=$id-$token
  DMZ_BROKER_HOST=$host DMZ_BROKER_PORT=$port BRIDGE_NAME=$name BRIDGE_CLIENT_ID=$id BRIDGE_STATE_NAME=$state "$render" "$1" "$2/bridge-$n.conf"
done
[ $n -gt 0 ] || { echo "render-bridges: DMZ_BROKER_HOSTS lists no broker" >&2; exit 78; }
