#!/bin/sh
# Renders the internal Prometheus's configuration: TEMPLATE (prometheus.yml) with the environment
# (render-config.sh), then JOB_TEMPLATE (dmz-federate.yml) once per DMZ server, each a scrape job of
# its own that labels that server's series dmz_server=host:port. The jobs are written into the one
# file because Debian's Prometheus 2.42, which the tests run, has no scrape_config_files; the same
# way render-bridges.sh renders one MQTT bridge per DMZ broker. docs/monitoring.md.
# usage: render-prometheus.sh [--dmz-prometheus-on-broker-hosts] TEMPLATE JOB_TEMPLATE OUTPUT
#   DMZ_PROMETHEUS_HOSTS  every DMZ server's Prometheus, "host1:9091,host2:9091" (port
#                         DMZ_PROMETHEUS_PORT, default 9091, when left out); or, when it is empty,
#   DMZ_PROMETHEUS_HOST   the one DMZ server's, with DMZ_PROMETHEUS_PORT (default 9091), as before.
#                         Refused while DMZ_BROKER_HOSTS lists more than one DMZ broker: one DMZ
#                         Prometheus would leave the other servers' gateways unwatched.
#   --dmz-prometheus-on-broker-hosts  (compose, where each DMZ server runs its DMZ Prometheus) with
#                         both empty: the host of each DMZ_BROKER_HOSTS entry, else DMZ_BROKER_HOST,
#                         on port DMZ_PROMETHEUS_PORT (default 9091). Without it (Kubernetes, where
#                         the DMZ Prometheus has an address of its own) both empty is refused.
#   RENDER_CONFIG         the template renderer (default: render-config.sh on the PATH)
# No DMZ Prometheus named, a malformed or repeated entry: exit 78 (EX_CONFIG).
set -euf   # -f: the lists are split on blanks, never globbed
on_brokers=no
if [ "${1:-}" = --dmz-prometheus-on-broker-hosts ]; then on_brokers=yes; shift; fi
[ $# -eq 3 ] || { echo "usage: $0 [--dmz-prometheus-on-broker-hosts] TEMPLATE JOB_TEMPLATE OUTPUT" >&2; exit 64; }
render=${RENDER_CONFIG:-render-config.sh}
fail() { echo "render-prometheus: $*" >&2; exit 78; }
port=${DMZ_PROMETHEUS_PORT:-9091}
# Split as render-bridges.sh splits DMZ_BROKER_HOSTS (commas and blanks), so both count alike.
brokers=$(printf '%s' "${DMZ_BROKER_HOSTS:-}" | tr ',' ' ')
nbrokers=$(set -- $brokers; echo $#)
if [ -n "${DMZ_PROMETHEUS_HOSTS:-}" ]; then
  setting=DMZ_PROMETHEUS_HOSTS list=$DMZ_PROMETHEUS_HOSTS
elif [ -n "${DMZ_PROMETHEUS_HOST:-}" ]; then
  [ "$nbrokers" -le 1 ] || fail "DMZ_BROKER_HOSTS lists $nbrokers DMZ brokers but DMZ_PROMETHEUS_HOST names one DMZ Prometheus: list each DMZ server's in DMZ_PROMETHEUS_HOSTS (host:port,...)"
  setting=DMZ_PROMETHEUS_HOST list="$DMZ_PROMETHEUS_HOST:$port"
elif [ $on_brokers = yes ] && [ "$nbrokers" -gt 0 ]; then
  setting=DMZ_BROKER_HOSTS list=''
  for entry in $brokers; do list="$list ${entry%:*}:$port"; done
elif [ $on_brokers = yes ] && [ -n "${DMZ_BROKER_HOST:-}" ]; then
  setting=DMZ_BROKER_HOST list="$DMZ_BROKER_HOST:$port"
else
  fail "set DMZ_PROMETHEUS_HOSTS (host:port,...) or DMZ_PROMETHEUS_HOST"
fi
tmp="$3.tmp.$$"
trap 'rm -f "$tmp" "$tmp.job"' EXIT
"$render" "$1" "$tmp"
n=0 seen=' '
for entry in $(printf '%s' "$list" | tr ',' ' '); do
  n=$((n + 1))
  case $entry in
    *:*) host=${entry%:*} p=${entry##*:} ;;
    *) host=$entry p=$port ;;
  esac
  # The host and port go into the YAML and into a label value: a name or an address, nothing else.
  case $p in ''|0*|*[!0-9]*|??????*) fail "bad port in \"$entry\" ($setting)" ;; esac
  [ "$p" -le 65535 ] || fail "bad port in \"$entry\" ($setting)"
  case $host in ''|*[!A-Za-z0-9._-]*) fail "bad host in \"$entry\" ($setting): a name or an IPv4 address" ;; esac
  target=$host:$p
  # Two jobs of one target would write the same series (job="dmz-federate", the same dmz_server).
  case $seen in *" $target "*) fail "\"$target\" is listed twice ($setting)" ;; esac
  seen="$seen$target "
  if [ $n -eq 1 ]; then job=dmz-federate; else job=dmz-federate-$n; fi
  DMZ_FEDERATE_JOB=$job DMZ_FEDERATE_TARGET=$target "$render" "$2" "$tmp.job"
  { echo; cat "$tmp.job"; } >> "$tmp"
done
[ $n -gt 0 ] || fail "$setting lists no DMZ Prometheus"
rm -f "$tmp.job"
mv "$tmp" "$3"
