#!/usr/bin/env bash
# The firewall of one FieldStream machine, from the table in docs/deployment.md ("Firewall rules").
#
# usage: setup-firewall.sh dmz|internal|field [options]     apply that machine's rules (root)
#        setup-firewall.sh [dmz|internal|field] --remove    take them away again (root)
#        setup-firewall.sh dmz|internal|field --dry-run     print the rules, apply nothing
# options (each also --name=VALUE; an option wins over the environment, which wins over .env):
#   --corp-egress-ip LIST  CORP_EGRESS_IP: where the internal server's traffic leaves the corporate network (dmz)
#   --dmz-server-ip LIST   DMZ_SERVER_IP: the DMZ server(s) (internal, field)
#   --operator-net LIST    OPERATOR_NET: operators' network, for 8080/8090/3000/9090 (internal; unset: closed)
#   --caddy-tls acme|files CADDY_TLS (dmz; acme opens 80 for the Let's Encrypt challenge)
#   --token-route on|off   CADDY_TOKEN_ROUTE (dmz; on opens CADDY_TOKEN_PORT, default 8444)
#   --gateway-port N       field: the DMZ port devices dial (default: the port of each URL of GATEWAY_URL, else 443)
#   --ssh-port N           default 22;  --ssh-from LIST: SSH only from there (default: from anywhere)
#   --no-ssh               no new SSH connections (an established one is never cut)
#   --env-file FILE        default ./.env (read as KEY=VALUE lines, never executed)
#   --backend nft|iptables FIREWALL_BACKEND; default nft when installed, else iptables
# LIST: IPv4/IPv6 addresses or CIDRs, comma-separated.
# exit: 0 done; 1 the firewall tool failed; 2 usage, a bad or missing address; 3 no firewall tool;
#       4 not root (applying and removing need root, --dry-run does not)
#
# Our rules live apart from anyone else's: nft table `inet fieldstream`, replaced atomically in one
# `nft -f`; or, with iptables, chains FIELDSTREAM-IN/-OUT/-FWD jumped to from the top of INPUT,
# OUTPUT and FORWARD. Docker publishes ports by DNAT, so those connections pass FORWARD, not INPUT:
# the forward rules judge them by their original port (`ct original proto-dst`, `--ctorigdstport`).
set -euo pipefail

readonly TABLE='inet fieldstream' PREFIX=FIELDSTREAM
readonly OPERATOR_PORTS='8080,8090,3000,9090'   # command API, console, Grafana, Prometheus (internal compose)

die() { echo "setup-firewall: $2" >&2; exit "$1"; }
warn() { echo "setup-firewall: warning: $*" >&2; }

# ---- arguments -----------------------------------------------------------------------------------
role='' mode=apply env_file=.env ssh=on
declare -A opt=()
while [ $# -gt 0 ]; do
  arg=$1; shift
  if [[ $arg == --*=* ]]; then set -- "${arg#*=}" "$@"; arg=${arg%%=*}; fi
  case $arg in
    dmz|internal|field) [ -z "$role" ] || die 2 "one machine only (got $role and $arg)"; role=$arg ;;
    --dry-run) [ "$mode" = apply ] || die 2 '--dry-run and --remove exclude each other'; mode=dry-run ;;
    --remove) [ "$mode" = apply ] || die 2 '--dry-run and --remove exclude each other'; mode=remove ;;
    --no-ssh) ssh=off ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --corp-egress-ip|--dmz-server-ip|--operator-net|--caddy-tls|--token-route|--gateway-port|--ssh-port|--ssh-from|--env-file|--backend)
      [ $# -gt 0 ] || die 2 "$arg needs a value"
      case $arg in
        --env-file) env_file=$1 ;;
        --backend) opt[FIREWALL_BACKEND]=$1 ;;
        --token-route) opt[CADDY_TOKEN_ROUTE]=$1 ;;
        *) name=${arg#--}; name=${name//-/_}; opt[${name^^}]=$1 ;;
      esac
      shift ;;
    *) die 2 "unknown argument: $arg (see --help)" ;;
  esac
done
[ -n "$role" ] || [ "$mode" = remove ] || die 2 'which machine? usage: setup-firewall.sh dmz|internal|field [--dry-run|--remove] (see --help)'

# ---- settings: option, then environment, then .env -----------------------------------------------
declare -A dotenv=()
if [ -f "$env_file" ] || [ "$env_file" = /dev/null ]; then
  # Parsed, never sourced: a .env is data, and a value like $(...) must stay text.
  while IFS= read -r line || [ -n "$line" ]; do
    line=${line%$'\r'}
    [[ $line =~ ^[[:space:]]*(export[[:space:]]+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] || continue
    key=${BASH_REMATCH[2]} val=${BASH_REMATCH[3]}
    if [[ $val =~ ^\"([^\"]*)\" ]] || [[ $val =~ ^\'([^\']*)\' ]]; then val=${BASH_REMATCH[1]}
    else val=${val%%[[:space:]]#*}; val=${val%"${val##*[![:space:]]}"}; fi
    dotenv[$key]=$val
  done < "$env_file"
elif [ "$env_file" != .env ]; then
  die 2 "no such env file: $env_file"
fi
setting() { # NAME [DEFAULT]
  if [ -n "${opt[$1]+x}" ]; then printf '%s' "${opt[$1]}"
  elif [ -n "${!1:-}" ]; then printf '%s' "${!1}"
  elif [ -n "${dotenv[$1]:-}" ]; then printf '%s' "${dotenv[$1]}"
  else printf '%s' "${2-}"; fi
}

# ---- validation ----------------------------------------------------------------------------------
is_ipv4() {
  [[ $1 =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$ ]] || return 1
  local o; for o in "${BASH_REMATCH[@]:1}"; do [ $((10#$o)) -le 255 ] || return 1; done
}
is_ipv6() {
  local a=$1 g n=0 groups
  [[ $a =~ ^[0-9A-Fa-f:]+$ && $a == *:* && $a != *:::* && $a != *::*::* ]] || return 1
  [[ $a == :* && $a != ::* ]] && return 1
  [[ $a == *: && $a != *:: ]] && return 1
  IFS=: read -ra groups <<< "$a"
  for g in "${groups[@]}"; do
    [ -z "$g" ] && continue
    [[ $g =~ ^[0-9A-Fa-f]{1,4}$ ]] || return 1; n=$((n + 1))
  done
  if [[ $a == *::* ]]; then [ "$n" -le 7 ]; else [ "$n" -eq 8 ]; fi
}
is_port() { [[ $1 =~ ^[0-9]{1,5}$ ]] && [ $((10#$1)) -ge 1 ] && [ $((10#$1)) -le 65535 ]; }

# split_addrs NAME VALUE: fills V4 and V6 (comma-joined) or exits 2 naming the bad entry.
split_addrs() {
  local name=$1 item addr prefix max; V4='' V6=''
  local -a items; IFS=',' read -ra items <<< "$2"
  for item in "${items[@]}"; do
    item=${item//[[:space:]]/}; [ -n "$item" ] || continue
    addr=${item%/*} prefix=''; [[ $item == */* ]] && prefix=${item#*/}
    if is_ipv4 "$addr"; then max=32; elif is_ipv6 "$addr"; then max=128
    else die 2 "$name: '$item' is not an IPv4/IPv6 address or CIDR"; fi
    if [ -n "$prefix" ]; then
      [[ $prefix =~ ^[0-9]{1,3}$ ]] && [ $((10#$prefix)) -le $max ] || die 2 "$name: '$item' has a bad prefix length"
      # A /0 would be "from everyone": exactly what a restricted port must never become.
      [ $((10#$prefix)) -gt 0 ] || die 2 "$name: '$item' means every address; give the real network"
    fi
    if [ $max = 32 ]; then [[ ,$V4, == *,$item,* ]] || V4=${V4:+$V4,}$item
    else [[ ,$V6, == *,$item,* ]] || V6=${V6:+$V6,}$item; fi
  done
}
required_addrs() { # NAME OPTION -> V4/V6, refusing an empty list
  local v; v=$(setting "$1")
  [ -n "${v//[[:space:],]/}" ] || die 2 "$1 is not set (--$2 or $1 in $env_file): refusing to open the port to everyone"
  split_addrs "$1" "$v"
}
port_setting() { # NAME DEFAULT
  local v; v=$(setting "$1" "$2"); is_port "$v" || die 2 "$1: '$v' is not a port"; printf '%s' $((10#$v))
}
option_port() { # NAME DEFAULT: options only (GATEWAY_PORT in a .env is the gateway's own port)
  local v=${opt[$1]:-$2} n=${1,,}; is_port "$v" || die 2 "--${n//_/-}: '$v' is not a port"; printf '%s' $((10#$v))
}

# ---- backend -------------------------------------------------------------------------------------
backend=$(setting FIREWALL_BACKEND auto)
case $backend in
  auto) if command -v nft >/dev/null; then backend=nft
        elif command -v iptables >/dev/null; then backend=iptables
        else die 3 'neither nft (nftables) nor iptables is installed: apt-get install nftables'; fi ;;
  nft|iptables) command -v "$backend" >/dev/null || die 3 "FIREWALL_BACKEND=$backend but $backend is not installed" ;;
  *) die 2 "FIREWALL_BACKEND: '$backend' is not nft, iptables or auto" ;;
esac
has_ip6tables=1
if [ "$backend" = iptables ] && ! command -v ip6tables >/dev/null; then
  has_ip6tables=0; warn 'ip6tables is missing: IPv6 traffic is left unfiltered'
fi

# ---- rule emitters: one call, both backends --------------------------------------------------------
# nft: lines per chain of our table. iptables: commands; "accept" there is RETURN, so that, as with
# our own nft table, an accepted packet still meets the host's other rules (Docker's among them).
NFT_IN=() NFT_OUT=() NFT_FWD=() IPT=()
declare -A CH=([in]=IN [out]=OUT [fwd]=FWD)
nft_add() { local -n a="NFT_${1^^}"; a+=("$2"); }
ipt4() { IPT+=("iptables -w $*"); }
ipt6() { [ "$has_ip6tables" = 0 ] || IPT+=("ip6tables -w $*"); }
ipt46() { ipt4 "$@"; ipt6 "$@"; }
note() { local c; for c in "$@"; do nft_add "$c" "# $NOTE"; done; IPT+=("# $NOTE"); }
nset() { if [[ $1 == *,* ]]; then printf '{ %s }' "${1//,/, }"; else printf '%s' "$1"; fi; }
ipt_ports() { if [[ $1 == *,* ]]; then printf -- '-m multiport --dports %s' "$1"; else printf -- '--dport %s' "$1"; fi; }

# allow CHAIN PROTO PORTS V4 V6 [VERDICT]: V4=any for every source/destination; both empty emits nothing
allow() {
  local c=$1 p=$2 ports=$3 v4=$4 v6=$5 verdict=${6:-accept} dir=saddr flag=-s ipv
  [ "$c" = in ] || { dir=daddr; flag=-d; }
  ipv=RETURN; [ "$verdict" = drop ] && ipv=DROP
  if [ "$v4" = any ]; then
    nft_add "$c" "$p dport $(nset "$ports") $verdict"
    ipt46 -A "$PREFIX-${CH[$c]}" -p "$p" "$(ipt_ports "$ports")" -j "$ipv"
    return
  fi
  [ -z "$v4" ] || { nft_add "$c" "ip $dir $(nset "$v4") $p dport $(nset "$ports") $verdict"
                    ipt4 -A "$PREFIX-${CH[$c]}" -p "$p" "$flag" "$v4" "$(ipt_ports "$ports")" -j "$ipv"; }
  [ -z "$v6" ] || { nft_add "$c" "ip6 $dir $(nset "$v6") $p dport $(nset "$ports") $verdict"
                    ipt6 -A "$PREFIX-${CH[$c]}" -p "$p" "$flag" "$v6" "$(ipt_ports "$ports")" -j "$ipv"; }
}
# allow_in PROTO PORTS V4 V6: the host's own port (input) and the same port published by Docker
# (forward, matched on the port before DNAT: the DMZ Prometheus is 9091 outside, 9090 inside).
allow_in() {
  local p=$1 port v4=$3 v6=$4; local -a ports; IFS=',' read -ra ports <<< "$2"
  allow in "$p" "$2" "$v4" "$v6"
  for port in "${ports[@]}"; do
    local m="ct status dnat meta l4proto $p ct original proto-dst $port" x="-p $p -m conntrack --ctstate DNAT --ctproto $p --ctorigdstport $port"
    if [ "$v4" = any ]; then nft_add fwd "$m accept"; ipt46 -A "$PREFIX-FWD" "$x" -j RETURN; continue; fi
    [ -z "$v4" ] || { nft_add fwd "ip saddr $(nset "$v4") $m accept"; ipt4 -A "$PREFIX-FWD" -s "$v4" "$x" -j RETURN; }
    [ -z "$v6" ] || { nft_add fwd "ip6 saddr $(nset "$v6") $m accept"; ipt6 -A "$PREFIX-FWD" -s "$v6" "$x" -j RETURN; }
  done
}
established() { # CHAIN...
  local c; for c in "$@"; do
    nft_add "$c" 'ct state established,related accept'
    ipt46 -A "$PREFIX-${CH[$c]}" -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN
  done
}
# Loopback, and ICMP (path MTU discovery, IPv6 neighbour discovery: without it IPv6 stops working).
basics() { # CHAIN in|out
  local c=$1 i=iif o=-i; [ "$2" = out ] && { i=oif; o=-o; }
  nft_add "$c" "$i \"lo\" accept"; ipt46 -A "$PREFIX-${CH[$c]}" "$o" lo -j RETURN
  nft_add "$c" 'meta l4proto { icmp, ipv6-icmp } accept'
  ipt4 -A "$PREFIX-${CH[$c]}" -p icmp -j RETURN; ipt6 -A "$PREFIX-${CH[$c]}" -p ipv6-icmp -j RETURN
}
# Traffic to Docker's bridges: from the host itself (output), or forwarded from one container to
# another. A connection from outside reaches a container only through a port Docker publishes
# (DNAT, judged above by its original port): one routed to a container's own address by a
# neighbour of this network (the DMZ server, for the internal one) is dropped, as Docker's own
# rules accept it on any port it publishes, whatever address the port is published on.
to_containers() { # CHAIN
  local i o
  if [ "$1" = out ]; then
    nft_add out 'oifname "docker0" accept'; nft_add out 'oifname "br-*" accept'
    ipt46 -A "$PREFIX-OUT" -o docker0 -j RETURN; ipt46 -A "$PREFIX-OUT" -o br-+ -j RETURN
    return
  fi
  NOTE='containers: from one another; routed to from outside (no published port), dropped'; note fwd
  for i in docker0 br-; do for o in docker0 br-; do
    nft_add fwd "iifname \"${i/%-/-*}\" oifname \"${o/%-/-*}\" accept"
    ipt46 -A "$PREFIX-FWD" -i "${i/%-/-+}" -o "${o/%-/-+}" -j RETURN
  done; done
  nft_add fwd 'oifname "docker0" drop'; nft_add fwd 'oifname "br-*" drop'
  ipt46 -A "$PREFIX-FWD" -o docker0 -j DROP; ipt46 -A "$PREFIX-FWD" -o br-+ -j DROP
}
dnat_drop() { nft_add fwd 'ct status dnat drop'; ipt46 -A "$PREFIX-FWD" -m conntrack --ctstate DNAT -j DROP; }
ssh_rules() {
  [ "$ssh" = on ] || { NOTE='SSH: no new connections (--no-ssh); established ones stay'; note in; return; }
  local port from; port=$(option_port SSH_PORT 22); from=${opt[SSH_FROM]:-}
  if [ -n "$from" ]; then split_addrs SSH_FROM "$from"; NOTE="SSH from $from"; note in; allow in tcp "$port" "$V4" "$V6"
  else
    [ "$mode" = remove ] || warn "SSH ($port/tcp) is open to every address; --ssh-from CIDR narrows it (or --no-ssh)"
    NOTE='SSH from anywhere (--ssh-from narrows it)'; note in; allow in tcp "$port" any ''
  fi
}

# ---- the machines (docs/deployment.md, "Firewall rules") ----------------------------------------
POL_IN=drop POL_OUT=accept POL_FWD=accept
inbound_head() { # [V4 V6: sources refused anything new, SSH included]
  NOTE='never cut an established connection (an SSH session among them)'; note in fwd
  established in fwd; nft_add in 'ct state invalid drop'; ipt46 -A "$PREFIX-IN" -m conntrack --ctstate INVALID -j DROP
  basics in in
  if [ -n "${1:-}${2:-}" ]; then
    NOTE="nothing new from the DMZ server(s) ($1${1:+${2:+,}}$2), SSH included: the internal side dials them"; note in
    [ -z "${1:-}" ] || { nft_add in "ip saddr $(nset "$1") drop"; ipt4 -A "$PREFIX-IN" -s "$1" -j DROP; }
    [ -z "${2:-}" ] || { nft_add in "ip6 saddr $(nset "$2") drop"; ipt6 -A "$PREFIX-IN" -s "$2" -j DROP; }
  fi
  ssh_rules; }

rules_dmz() {
  local corp4 corp6 prom tls token tport
  required_addrs CORP_EGRESS_IP corp-egress-ip; corp4=$V4 corp6=$V6
  prom=$(port_setting DMZ_PROMETHEUS_PORT 9091); tls=$(setting CADDY_TLS files)
  token=$(setting CADDY_TOKEN_ROUTE off); tport=$(port_setting CADDY_TOKEN_PORT 8444)
  case $tls in acme|files) ;; *) die 2 "CADDY_TLS: '$tls' is not acme or files" ;; esac
  case $token in on|off) ;; *) die 2 "CADDY_TOKEN_ROUTE: '$token' is not on or off" ;; esac
  POL_OUT=drop POL_FWD=drop
  inbound_head
  NOTE='devices: 443 from anywhere'; note in fwd; allow_in tcp 443 any ''
  if [ "$tls" = acme ]; then NOTE="Let's Encrypt HTTP challenge (CADDY_TLS=acme)"; note in fwd; allow_in tcp 80 any ''; fi
  if [ "$token" = on ]; then NOTE='token route (CADDY_TOKEN_ROUTE=on)'; note in fwd; allow_in tcp "$tport" any ''; fi
  NOTE="the bridge (8883) and the DMZ Prometheus ($prom) from the corporate egress only"; note in fwd
  allow_in tcp "8883,$prom" "$corp4" "$corp6"
  NOTE='every other port published by Docker: dropped, as on the host'; note fwd; dnat_drop
  # A DMZ server taken (the gateway's container, Caddy) opens no connection into the corporate
  # network: the DMZ needs nothing inside (the internal side dials it).
  NOTE="outbound (the host and its containers): HTTP(S) (Let's Encrypt, packages), DNS, NTP, DHCP(v6); nothing else"
  note out fwd; established out; basics out out; to_containers out; to_containers fwd
  local c; for c in out fwd; do
    allow "$c" tcp 80,443 any ''
    allow "$c" udp 53 any ''; allow "$c" tcp 53 any ''; allow "$c" udp 123 any ''
  done
  allow out udp 67,547 any ''   # DHCP, DHCPv6
}

# add_list_ports VAR SETTING: adds to VAR (a port list) the port of each entry of a host[:port],...
# list (DMZ_BROKER_HOSTS, DMZ_PROMETHEUS_HOSTS: one entry per DMZ server) that names one; an entry
# without a port uses VAR's first. Hosts are names or IPv4 addresses there (render-bridges.sh,
# render-prometheus.sh). Not in a $(...): a bad port stops the script, not a subshell.
add_list_ports() {
  local -n ports=$1; local list e p; local -a entries; list=$(setting "$2")
  IFS=', ' read -ra entries <<< "$list"
  for e in "${entries[@]}"; do
    [[ -n $e && $e == *:* ]] || continue
    p=${e##*:}
    is_port "$p" || die 2 "$2: '$e' has a bad port"
    p=$((10#$p)); [[ ,$ports, == *,$p,* ]] || ports=$ports,$p
  done
}

rules_internal() {
  local dmz4 dmz6 broker prom net
  required_addrs DMZ_SERVER_IP dmz-server-ip; dmz4=$V4 dmz6=$V6
  broker=$(port_setting DMZ_BROKER_PORT 8883); prom=$(port_setting DMZ_PROMETHEUS_PORT 9091)
  # Several DMZ servers: each entry of DMZ_BROKER_HOSTS and DMZ_PROMETHEUS_HOSTS may name a port of
  # its own, which is narrowed to the DMZ servers as the settings' ports are.
  add_list_ports broker DMZ_BROKER_HOSTS; add_list_ports prom DMZ_PROMETHEUS_HOSTS
  inbound_head "$dmz4" "$dmz6"
  net=$(setting OPERATOR_NET)
  if [ -n "$net" ]; then split_addrs OPERATOR_NET "$net"
    NOTE="operators ($net): command API, console, Grafana, Prometheus"; note in fwd; allow_in tcp "$OPERATOR_PORTS" "$V4" "$V6"
  else NOTE='OPERATOR_NET unset: the operator ports take nothing from outside'; note in; fi
  NOTE='nothing else inbound, Docker-published or not'; note fwd; dnat_drop
  # Outbound: only what the table restricts. A default-deny here would break apt, NTP, InfluxDB...
  NOTE="the bridge ($broker) and the federation ($prom) dial the DMZ server(s) only"; note out fwd
  # Loopback first: the internal broker listens on 8883 too, and its local clients must reach it.
  basics out out
  to_containers out; to_containers fwd
  allow out tcp "$broker,$prom" "$dmz4" "$dmz6"; allow fwd tcp "$broker,$prom" "$dmz4" "$dmz6"
  allow out tcp "$broker,$prom" any '' drop; allow fwd tcp "$broker,$prom" any '' drop
}

rules_field() {
  local dmz4 dmz6 gw url
  required_addrs DMZ_SERVER_IP dmz-server-ip; dmz4=$V4 dmz6=$V6
  url=$(setting GATEWAY_URL); gw=''
  # Every URL of GATEWAY_URL (several DMZ servers, tried in turn: docs/deployment.md) has its port
  # opened, 443 where it names none; only the first's cut the device off the servers it fails over to.
  local u p; local -a urls; IFS=',' read -ra urls <<< "$url"
  for u in "${urls[@]}"; do
    u=${u//[[:space:]]/}; [ -n "$u" ] || continue
    p=443; [[ $u =~ ^wss?://(\[[^]]*\]|[^/:]*):([0-9]+) ]] && p=${BASH_REMATCH[2]}
    is_port "$p" || die 2 "GATEWAY_URL: '$u' has a bad port"
    p=$((10#$p)); [[ ,$gw, == *,$p,* ]] || gw=${gw:+$gw,}$p
  done
  if [ -n "${opt[GATEWAY_PORT]+x}" ] || [ -z "$gw" ]; then gw=$(option_port GATEWAY_PORT 443); fi
  POL_OUT=drop POL_FWD=drop
  inbound_head
  NOTE='nothing published by Docker takes connections from outside'; note fwd; dnat_drop
  NOTE='outbound (the host and its containers): the gateway on the DMZ server(s), DNS, NTP, DHCP(v6); nothing else'
  note out fwd; established out; basics out out; to_containers out; to_containers fwd
  local c; for c in out fwd; do
    allow "$c" tcp "$gw" "$dmz4" "$dmz6"
    allow "$c" udp 53 any ''; allow "$c" tcp 53 any ''; allow "$c" udp 123 any ''
  done
  allow out udp 67,547 any ''   # DHCP, DHCPv6
}

# ---- output ----------------------------------------------------------------------------------------
nft_chain() { # in|out|fwd HOOK: a base chain, left out when it would accept everything
  local -n lines="NFT_${1^^}"; local pol="POL_${1^^}"
  [ "${#lines[@]}" -gt 0 ] || [ "${!pol}" != accept ] || return 0
  printf '\tchain %s {\n\t\ttype filter hook %s priority filter; policy %s;\n' "$2" "$2" "${!pol}"
  [ "${#lines[@]}" -eq 0 ] || printf '\t\t%s\n' "${lines[@]}"
  printf '\t}\n'
}
nft_script() {
  # "table; delete table; table {...}" in one nft -f: one transaction, whether the table exists or not.
  printf 'table %s\ndelete table %s\ntable %s {\n' "$TABLE" "$TABLE" "$TABLE"
  nft_chain in input; nft_chain out output; nft_chain fwd forward
  printf '}\n'
}
ipt_script() {
  local t c b ts=(iptables); [ "$has_ip6tables" = 0 ] || ts+=(ip6tables)
  for t in "${ts[@]}"; do
    for c in IN OUT FWD; do printf '%s -w -N %s-%s 2>/dev/null || true\n%s -w -F %s-%s\n' "$t" "$PREFIX" "$c" "$t" "$PREFIX" "$c"; done
  done
  printf '%s\n' "${IPT[@]}"
  for t in "${ts[@]}"; do
    # The nft chains' "policy drop": our chain's last rule.
    for c in IN OUT FWD; do b=POL_$c; [ "${!b}" = accept ] || printf '%s -w -A %s-%s -j DROP\n' "$t" "$PREFIX" "$c"; done
    for c in IN:INPUT OUT:OUTPUT FWD:FORWARD; do b=${c#*:} c=$PREFIX-${c%:*}
      printf '%s -w -C %s -j %s 2>/dev/null || %s -w -I %s 1 -j %s\n' "$t" "$b" "$c" "$t" "$b" "$c"
    done
  done
}
remove_script() {
  local t c b
  if [ "$backend" = nft ]; then printf 'nft list table %s >/dev/null 2>&1 && nft delete table %s || true\n' "$TABLE" "$TABLE"; fi
  for t in iptables ip6tables; do
    command -v "$t" >/dev/null || continue
    [ "$backend" = iptables ] || "$t" -w -S "$PREFIX-IN" >/dev/null 2>&1 || continue
    for c in IN:INPUT OUT:OUTPUT FWD:FORWARD; do b=${c#*:} c=$PREFIX-${c%:*}
      printf 'while %s -w -C %s -j %s 2>/dev/null; do %s -w -D %s -j %s; done\n' "$t" "$b" "$c" "$t" "$b" "$c"
      printf '%s -w -F %s 2>/dev/null && %s -w -X %s || true\n' "$t" "$c" "$t" "$c"
    done
  done
}

if [ "$mode" = remove ]; then
  [ "$(id -u)" = 0 ] || die 4 'removing the rules needs root (sudo)'
  bash -e -o pipefail -c "$(remove_script)" || die 1 'removing the rules failed'
  echo "setup-firewall: FieldStream rules removed ($backend)"; exit 0
fi
"rules_$role"
if [ "$backend" = nft ]; then script=$(nft_script); else script=$(ipt_script); fi
if [ "$mode" = dry-run ]; then printf '%s\n' "$script"; exit 0; fi
[ "$(id -u)" = 0 ] || die 4 'applying the rules needs root (sudo); --dry-run shows them without'
if [ "$backend" = nft ]; then
  printf '%s\n' "$script" | nft -f - || die 1 'nft refused the rules (nothing was changed)'
else
  bash -e -o pipefail -c "$script" || die 1 'iptables failed part way; run again, or --remove'
fi
echo "setup-firewall: $role rules applied ($backend)"
