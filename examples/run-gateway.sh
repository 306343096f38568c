#!/bin/bash
# Runs the gateway example in front of the Openfire stand-in with a few
# load-generator clients, then stops it. Prints TAP.
# usage: run-gateway.sh GATEWAY XCM_UPSTREAM XCM_LOAD
set -u
gw=$1 up=$2 load=$3
tmp=$(mktemp -d)
trap 'kill $upid $gpid 2>/dev/null; rm -rf "$tmp"' EXIT
# Their own output is notes to TAP: each line prefixed with "# ".
"$up" "$tmp/up" example.test secret > >(sed 's/^/# /') &
upid=$!
for _ in $(seq 600); do [ -s "$tmp/up" ] && break; sleep 0.05; done
"$gw" 127.0.0.1 "$(cat "$tmp/up")" secret example.test "$tmp/gw" 2>"$tmp/log" \
  > >(sed 's/^/# /') &
gpid=$!
for _ in $(seq 600); do [ -s "$tmp/gw" ] && break; sleep 0.05; done
"$load" --port "$(cat "$tmp/gw")" --domain example.test --clients 20 \
  --scenario flood --duration 1 --window 4 --tap
rc=$?
kill -TERM $gpid
wait $gpid
echo "# $(tr '\n' ' ' <"$tmp/log" | head -c 300)"
exit $rc
