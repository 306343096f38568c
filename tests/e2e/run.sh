#!/bin/bash
# Runs one real-client test: starts e2e-server, waits until it reports
# its ports (upstream up), runs the client with @PLAIN@, @TLS@ and @CA@
# replaced, then stops the server. Fails if the client or the server
# fails (a sanitizer report in the server counts).
#
# usage: run.sh SERVER CERTDIR MECHANISMS COMPRESSION -- CLIENT [ARGS...]
set -u
server=$1 certs=$2 mechs=$3 comp=$4
shift 4
[ "${1:-}" = "--" ] && shift
tmp=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
"$server" "$tmp/ports" "$certs/server.pem" "$certs/server-key.pem" \
  "$mechs" "$comp" 2>"$tmp/server.log" &
pid=$!
for _ in $(seq 200); do
  [ -s "$tmp/ports" ] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.05
done
if [ ! -s "$tmp/ports" ]; then
  echo "Bail out! e2e-server did not come up"
  sed 's/^/# /' "$tmp/server.log"
  exit 1
fi
read -r plain tls <"$tmp/ports"
args=()
for a in "$@"; do
  a=${a//@PLAIN@/$plain}
  a=${a//@TLS@/$tls}
  a=${a//@CA@/$certs/ca.pem}
  args+=("$a")
done
"${args[@]}"
rc=$?
kill -TERM "$pid"
wait "$pid"
src=$?
pid=
if [ "$src" -ne 0 ]; then
  echo "# e2e-server exited with status $src"
  sed 's/^/# /' "$tmp/server.log"
  rc=1
fi
exit "$rc"
