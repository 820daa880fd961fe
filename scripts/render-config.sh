#!/bin/sh
# Renders a configuration template with the environment: ${NAME} and ${NAME:-default}.
# usage: render-config.sh TEMPLATE OUTPUT
# The same script renders the Mosquitto configurations inside the containers and for the local
# stack, so both run the very same files. An unset NAME without a default is an error (exit 78).
set -eu
[ $# -eq 2 ] || { echo "usage: $0 TEMPLATE OUTPUT" >&2; exit 64; }
tmp="$2.tmp.$$"
awk '
{
  line = $0; out = ""
  while (match(line, /\$\{[A-Z_][A-Z0-9_]*(:-[^}]*)?\}/)) {
    token = substr(line, RSTART + 2, RLENGTH - 3)
    name = token; def = ""; hasdef = 0
    i = index(token, ":-")
    if (i > 0) { name = substr(token, 1, i - 1); def = substr(token, i + 2); hasdef = 1 }
    if ((name in ENVIRON) && ENVIRON[name] != "") val = ENVIRON[name]
    else if (hasdef) val = def
    else { printf "render-config: %s is not set (%s line %d)\n", name, FILENAME, NR > "/dev/stderr"; failed = 1; exit 78 }
    out = out substr(line, 1, RSTART - 1) val
    line = substr(line, RSTART + RLENGTH)
  }
  print out line
}' "$1" > "$tmp" || { rm -f "$tmp"; exit 78; }
mv "$tmp" "$2"
