#!/bin/bash
# Drives the xcmd binary: version, bad configs and their messages, a
# manager.xml, a start-up error, then a running daemon (two workers, a TLS
# listener, the Openfire stand-in as upstream) that reloads its
# certificate on SIGHUP and drains on SIGTERM, and the demo reached by a
# real client. Prints TAP.
#
# usage: xcmd_test.sh XCMD XCM_UPSTREAM CERTDIR SRCDIR XCMD_DEMO
set -u
xcmd=$1 upstream=$2 certs=$3 src=$4 xcmd_demo=$5
py=/usr/bin/python3
tmp=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done; rm -rf "$tmp"' EXIT
n=0 failed=0
check() {
  n=$((n + 1))
  if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else
    echo "not ok $n - $2"; failed=$((failed + 1)); [ -n "${3:-}" ] && echo "# $3"; fi
}
echo "1..33"

"$xcmd" --version | grep -q '^xcmd [0-9]'
check $? "--version"

cat >"$tmp/bad.conf" <<CONF
[server]
domain = example.test
[upstream]
name = cm1
secret = s
[limits]
idle_timeout = 5x
[listener]
port = 5222
CONF
out=$("$xcmd" --check-config "$tmp/bad.conf" 2>&1); rc=$?
[ $rc -ne 0 ] && echo "$out" | grep -q "bad.conf:7: key 'idle_timeout' in \[limits\]"
check $? "a bad value is named by file, line and key" "$out"

sed -i 's/^secret = s$//; s/^idle_timeout = 5x$//' "$tmp/bad.conf"
out=$("$xcmd" --check-config "$tmp/bad.conf" 2>&1); rc=$?
[ $rc -ne 0 ] && echo "$out" | grep -q "secret"
check $? "a missing secret is refused" "$out"

# The package's /etc/xcmd/xcmd.conf before the operator fills it in:
# exit 6 ("not configured") from the check and from a start, naming keys.
out=$("$xcmd" --check-config "$src/debian/xcmd.conf" 2>&1); rc=$?
out2=$(timeout 10 "$xcmd" -c "$src/debian/xcmd.conf" 2>&1); rc2=$?
[ $rc -eq 6 ] && [ $rc2 -eq 6 ] &&
  echo "$out" | grep -q "\[upstream\] host.*\[upstream\] secret are still the placeholders from the package" &&
  echo "$out2" | grep -q "secret are still the placeholders"
check $? "the packaged config is refused (exit 6) until filled in, naming the keys" "$rc $rc2 $out"

out=$("$xcmd" --check-config "$src/tests/data/manager.xml" --cert "$certs/server.pem" --key "$certs/server-key.pem" 2>&1); rc=$?
[ $rc -eq 0 ] && echo "$out" | grep -q "warning"
check $? "the Java CM's manager.xml is accepted, with warnings" "$out"

"$upstream" "$tmp/up" example.test cmsecret >"$tmp/up.out" &
pids+=($!); uppid=$!
for _ in $(seq 100); do [ -s "$tmp/up" ] && break; sleep 0.05; done
# Below the ephemeral range (32768 up), where clients' own ports are.
port=$((20000 + RANDOM % 10000))
mport=$((port + 1))
cp "$certs/server.pem" "$tmp/cert.pem"; cp "$certs/server-key.pem" "$tmp/key.pem"
cat >"$tmp/xcmd.conf" <<CONF
[server]
domain = example.test
[upstream]
port = $(cat "$tmp/up")
name = cm1
secret = cmsecret
connections = 2
tls = off
[listener]
port = $port
cert = /nonexistent/cert.pem
key = $tmp/key.pem
[daemon]
workers = 2
pid_file = $tmp/xcmd.pid
[metrics]
port = $mport
CONF
out=$(timeout 10 "$xcmd" -c "$tmp/xcmd.conf" 2>&1); rc=$?
[ $rc -ne 0 ] && echo "$out" | grep -q "/nonexistent/cert.pem"
check $? "a missing certificate stops the start, named" "$out"

sed -i "s|^cert = .*|cert = $tmp/cert.pem|" "$tmp/xcmd.conf"
"$xcmd" -c "$tmp/xcmd.conf" 2>"$tmp/xcmd.log" &
xpid=$!; pids+=($xpid)
for _ in $(seq 100); do grep -q "started" "$tmp/xcmd.log" && break; sleep 0.05; done
sleep 0.5
[ "$(cat "$tmp/xcmd.pid" 2>/dev/null)" = "$xpid" ]
check $? "runs, with its pid file"

$py "$src/tests/e2e/waiter.py" 127.0.0.1 $port example.test "$tmp/w1" >"$tmp/w1.out" 2>&1 &
w1=$!
$py "$src/tests/e2e/waiter.py" 127.0.0.1 $port example.test "$tmp/w2" >"$tmp/w2.out" 2>&1 &
w2=$!
for _ in $(seq 100); do [ -s "$tmp/w1" ] && [ -s "$tmp/w2" ] && break; sleep 0.05; done
[ -s "$tmp/w1" ] && [ -s "$tmp/w2" ]
check $? "clients log in through xcmd" "$(cat "$tmp/w1.out" "$tmp/xcmd.log")"

sleep 0.4
metrics=$($py -c "import urllib.request,sys; print(urllib.request.urlopen('http://127.0.0.1:$mport/metrics', timeout=5).read().decode())" 2>&1)
echo "$metrics" | grep -q '^xcm_connections{transport="plain"} 2$' &&
  echo "$metrics" | grep -q '^xcm_sessions_authenticated_total 2$' &&
  echo "$metrics" | grep -q '^xcm_stanzas_total{direction="to_server"} 4$' &&
  echo "$metrics" | grep -q '^xcm_stanzas_total{direction="to_client"} 4$' &&
  [ "$(echo "$metrics" | grep -c '^xcm_upstream_link_up{.*} 1$')" -eq 4 ] &&
  echo "$metrics" | grep -q "^xcm_upstream_node_links_up{node=\"127.0.0.1:$(cat "$tmp/up")\"} 4\$" &&
  echo "$metrics" | grep -q "^xcm_upstream_node_sessions{node=\"127.0.0.1:$(cat "$tmp/up")\"} 2\$" &&
  echo "$metrics" | grep -q "^xcm_upstream_node_losses_total{node=\"127.0.0.1:$(cat "$tmp/up")\"} 0\$" &&
  echo "$metrics" | grep -q '^xcm_xml_parsers_busy 0$' &&
  echo "$metrics" | grep -q '^xcm_clients_refused_by_limit_total{limit="max_per_address"} 0$' &&
  echo "$metrics" | grep -q '^xcm_client_timeouts_total{timeout="header"} 0$' &&
  echo "$metrics" | grep -q '^xcm_client_reads_shaped_total 0$' &&
  echo "$metrics" | grep -q '^xcm_proxy_headers_refused_total 0$' &&
  echo "$metrics" | grep -q '^xcm_proxy_untrusted_total 0$'
check $? "the metrics endpoint matches the traffic" "$(echo "$metrics" | head -30 | tr '\n' '|')"

cp "$certs/other.pem" "$tmp/cert.pem"; cp "$certs/other-key.pem" "$tmp/key.pem"
kill -HUP $xpid
sleep 0.5
[ "$(grep -c 'reloaded the certificates of 1 listener' "$tmp/xcmd.log")" -eq 2 ]
check $? "SIGHUP reloads the certificate in every worker" "$(cat "$tmp/xcmd.log")"

# Traffic when SIGTERM comes: pairs flooding each other.
"$(dirname "$upstream")/xcm-load" --port $port --domain example.test \
  --clients 20 --scenario flood --duration 5 --window 4 >/dev/null 2>&1 &
sleep 0.5
kill -TERM $xpid
wait $xpid; rc=$?
check $rc "SIGTERM during traffic drains and exits 0"
wait $w1 $w2
grep -q "system-shutdown" "$tmp/w1.out" && grep -q "system-shutdown" "$tmp/w2.out"
check $? "clients receive system-shutdown" "$(cat "$tmp/w1.out")"
sleep 0.3
kill -TERM $uppid; wait $uppid
check $? "the upstream saw no protocol violation (exit 0)" "$(cat "$tmp/up.out")"
grep -q "closes_from_cm=22" "$tmp/up.out"
check $? "the upstream saw every session closed" "$(cat "$tmp/up.out")"

# The daemon an operator installs carries no testkit: --demo is refused
# with a pointer to the demo build.
out=$("$xcmd" --demo 2>&1); rc=$?
[ $rc -eq 2 ] && echo "$out" | grep -q "built without the demo upstream.*cmd/demo"
check $? "xcmd (no testkit) refuses --demo and names cmd/demo" "$out"

dport=$((20000 + RANDOM % 10000))
"$xcmd_demo" --demo --port $dport 2>"$tmp/demo.log" &
dpid=$!; pids+=($dpid)
for _ in $(seq 100); do grep -q "is up" "$tmp/demo.log" && break; sleep 0.05; done
out=$($py "$src/tests/e2e/slix_chat.py" --port $dport --domain localhost --tls none --mech PLAIN 2>&1); rc=$?
check $rc "--demo is reached by a real client (slixmpp)" "$(echo "$out" | grep 'not ok')"
kill -TERM $dpid; wait $dpid
! grep -q "protocol violation\|broke the protocol" "$tmp/demo.log"
check $? "--demo's upstream saw no protocol violation" "$(grep -m3 'violation\|broke' "$tmp/demo.log")"

# [log] bodies: stanzas in the debug log only when asked for.
"$upstream" "$tmp/up2" example.test cmsecret >/dev/null &
up2=$!; pids+=($up2)
for _ in $(seq 100); do [ -s "$tmp/up2" ] && break; sleep 0.05; done
for bodies in yes no; do
  # Below the ephemeral range (32768 up), where clients' own ports are.
  bport=$((20000 + RANDOM % 10000))
  cat >"$tmp/bodies.conf" <<CONF
[server]
domain = example.test
[upstream]
port = $(cat "$tmp/up2")
name = cmb
secret = cmsecret
tls = off
# Clients may come before the link is up: hold them rather than refuse.
wait = 5s
[listener]
port = $bport
[listener]
port = $((bport + 1))
proxy_protocol = yes
proxy_trusted = 127.0.0.1, ::1
[log]
level = debug
bodies = $bodies
CONF
  "$xcmd" -c "$tmp/bodies.conf" 2>"$tmp/bodies-$bodies.log" &
  bpid=$!; pids+=($bpid)
  for _ in $(seq 100); do grep -q "started" "$tmp/bodies-$bodies.log" && break; sleep 0.05; done
  "$(dirname "$upstream")/xcm-load" --port $bport --domain example.test \
    --clients 2 --scenario latency --rate 20 --duration 1 \
    >"$tmp/bodies-$bodies.load" 2>&1
  echo "load exit $?" >>"$tmp/bodies-$bodies.load"
  $py "$src/tests/e2e/proxy_client.py" $((bport + 1)) >"$tmp/proxy-$bodies.out" 2>&1
  echo "proxy exit $?" >>"$tmp/proxy-$bodies.out"
  kill -TERM $bpid; wait $bpid
done
kill -TERM $up2; wait $up2
check $? "the second upstream saw no protocol violation (exit 0)"
grep -q 'from client .*<message .*<body>' "$tmp/bodies-yes.log" &&
  grep -q 'to client .*<message .*<body>' "$tmp/bodies-yes.log"
check $? "bodies = yes puts the stanzas both ways into the debug log" "$(tail -5 "$tmp/bodies-yes.log")"
! grep -q '<body>' "$tmp/bodies-no.log" &&
  grep -q 'load exit 0' "$tmp/bodies-no.load"
check $? "bodies = no keeps them out of it, at level debug too" "$(grep -m3 '<body>' "$tmp/bodies-no.log"; cat "$tmp/bodies-no.load")"
grep -q 'proxy exit 0' "$tmp/proxy-no.out" &&
  grep -q 'PROXY v1: client 192.0.2.7 port 40000 (through 127.0.0.1)' "$tmp/bodies-no.log" &&
  grep -q 'listening on 127.0.0.1 port .* (PROXY protocol required)' "$tmp/bodies-no.log"
check $? "a proxy_protocol listener: the header's client in the log, none refused" "$(cat "$tmp/proxy-no.out"; grep -m3 PROXY "$tmp/bodies-no.log")"
grep -q '127.0.0.2: not a trusted PROXY source (proxy_trusted): closed' "$tmp/bodies-no.log" &&
  ! grep -q '192.0.2.8' "$tmp/bodies-no.log"
check $? "proxy_trusted: a header from 127.0.0.2 is closed unread" "$(grep -m3 'trusted' "$tmp/bodies-no.log")"
# SIGUSR2: drain for a rolling upgrade. The port is refused at once,
# the two clients get system-shutdown over drain_period, xcmd exits 0.
"$upstream" "$tmp/up3" example.test cmsecret >"$tmp/up3.out" &
up3=$!; pids+=($up3)
for _ in $(seq 100); do [ -s "$tmp/up3" ] && break; sleep 0.05; done
gport=$((20000 + RANDOM % 10000))
cat >"$tmp/drain.conf" <<CONF
[server]
domain = example.test
[upstream]
port = $(cat "$tmp/up3")
name = cmd
secret = cmsecret
tls = off
wait = 5s
[listener]
port = $gport
[daemon]
workers = 1
drain_period = 4s
[metrics]
port = $((gport + 1))
CONF
"$xcmd" -c "$tmp/drain.conf" 2>"$tmp/drain.log" &
gpid=$!; pids+=($gpid)
for _ in $(seq 100); do grep -q "is up" "$tmp/drain.log" && break; sleep 0.05; done
$py "$src/tests/e2e/waiter.py" 127.0.0.1 $gport example.test "$tmp/g1" >"$tmp/g1.out" 2>&1 &
g1=$!
$py "$src/tests/e2e/waiter.py" 127.0.0.1 $gport example.test "$tmp/g2" >"$tmp/g2.out" 2>&1 &
g2=$!
for _ in $(seq 200); do [ -s "$tmp/g1" ] && [ -s "$tmp/g2" ] && break; sleep 0.05; done
kill -USR2 $gpid
# Waits for the event (a refused connection), bounded generously.
refused=$($py - $gport <<'PY'
import socket, sys, time
end = time.time() + 20
while time.time() < end:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2).close()
    except ConnectionRefusedError:
        print("refused"); break
    time.sleep(0.02)
PY
)
[ "$refused" = refused ]
check $? "SIGUSR2 closes the listener: new connections are refused" "$(cat "$tmp/drain.log")"
metrics=$($py -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$((gport + 1))/metrics', timeout=5).read().decode())" 2>&1)
echo "$metrics" | grep -Eq '^xcm_sessions_drained_total [0-2]$'
check $? "the metrics endpoint stays up while draining, with the drained count" "$(echo "$metrics" | grep drained)"
wait $gpid; rc=$?
check $rc "SIGUSR2 drains and exits 0" "$(cat "$tmp/drain.log")"
wait $g1 $g2
grep -q "system-shutdown" "$tmp/g1.out" && grep -q "draining" "$tmp/g1.out" &&
  grep -q "system-shutdown" "$tmp/g2.out" && grep -q "draining" "$tmp/g2.out" &&
  grep -q "drained: every session has ended, 2 of them by the drain" "$tmp/drain.log"
check $? "drained clients got system-shutdown saying to reconnect" "$(cat "$tmp/g1.out" "$tmp/drain.log")"
kill -TERM $up3; wait $up3; rc=$?
[ $rc -eq 0 ] && grep -q "closes_from_cm=2" "$tmp/up3.out"
check $? "the upstream saw both sessions closed, no violation" "$(cat "$tmp/up3.out")"

# Web clients: a WebSocket client (tests/e2e/ws_client.py, RFC 7395 on a
# raw socket) reaches the sessions through an HTTP listener of an
# xcmd.conf, then through a manager.xml's xmpp.httpbind ports.
"$upstream" "$tmp/up4" example.test cmsecret >"$tmp/up4.out" &
up4=$!; pids+=($up4)
for _ in $(seq 100); do [ -s "$tmp/up4" ] && break; sleep 0.05; done
wport=$((20000 + RANDOM % 10000))
cat >"$tmp/web.conf" <<CONF
[server]
domain = example.test
[upstream]
port = $(cat "$tmp/up4")
name = cmweb
secret = cmsecret
tls = off
wait = 5s
[listener]
host = 127.0.0.1
port = $wport
[listener]
host = 127.0.0.1
port = $((wport + 1))
http = yes
http_ws_paths = /xmpp-websocket
[daemon]
workers = 2
[metrics]
port = $((wport + 2))
CONF
"$xcmd" -c "$tmp/web.conf" 2>"$tmp/web.log" &
wpid=$!; pids+=($wpid)
for _ in $(seq 100); do grep -q "is up" "$tmp/web.log" && break; sleep 0.05; done
out=$($py "$src/tests/e2e/ws_client.py" 127.0.0.1 $((wport + 1)) /xmpp-websocket example.test alice "http://127.0.0.1:$((wport + 2))/metrics" 2>&1); rc=$?
check $rc "xcmd.conf: a WebSocket client logs in, chats and closes through http = yes" "$(echo "$out" | grep -A3 'not ok'; tail -5 "$tmp/web.log")"
out=$($py "$src/tests/e2e/bosh_client.py" --fresh 127.0.0.1 $((wport + 1)) /http-bind/ example.test bob "http://127.0.0.1:$((wport + 2))/metrics" 2>&1); rc=$?
check $rc "xcmd.conf, two workers: a BOSH client logs in, chats and terminates through http = yes, each request on a new connection" "$(echo "$out" | grep -A3 'not ok'; tail -5 "$tmp/web.log")"
kill -TERM $wpid; wait $wpid
check $? "xcmd with an HTTP listener stops cleanly"

hport=$((20000 + RANDOM % 10000))
cat >"$tmp/manager.xml" <<XML
<?xml version="1.0" encoding="UTF-8"?>
<jive>
  <xmpp>
    <domain>example.test</domain>
    <hostname>127.0.0.1</hostname>
    <port>$(cat "$tmp/up4")</port>
    <password>cmsecret</password>
    <manager><name>cmxml</name><connections>1</connections></manager>
    <socket>
      <network><interface>127.0.0.1</interface></network>
      <default><active>true</active><port>$hport</port></default>
      <ssl><active>false</active></ssl>
    </socket>
    <httpbind>
      <enabled>true</enabled>
      <port><plain>$((hport + 1))</plain><secure>$((hport + 2))</secure></port>
      <client><idle>30</idle><requests><wait>20</wait></requests></client>
      <scriptSyntax><enabled>false</enabled></scriptSyntax>
    </httpbind>
  </xmpp>
</jive>
XML
"$xcmd" -c "$tmp/manager.xml" --cert "$certs/server.pem" --key "$certs/server-key.pem" 2>"$tmp/xml.log" &
mpid=$!; pids+=($mpid)
for _ in $(seq 100); do grep -q "is up" "$tmp/xml.log" && break; sleep 0.05; done
out=$($py "$src/tests/e2e/ws_client.py" 127.0.0.1 $((hport + 1)) /ws/ example.test bob 2>&1); rc=$?
grep -q "xmpp.httpbind.scriptSyntax.enabled: not translated" "$tmp/xml.log" &&
  ! grep -q "xmpp.httpbind.client.idle: not translated" "$tmp/xml.log" &&
  grep -q "port $((hport + 2))" "$tmp/xml.log"
check $? "manager.xml: httpbind becomes HTTP listeners (plain and HTTPS) with its BOSH settings, the rest named in a warning" "$(head -20 "$tmp/xml.log")"
check $rc "manager.xml: a WebSocket client logs in, chats and closes on xmpp.httpbind.port.plain" "$(echo "$out" | grep -A3 'not ok'; tail -5 "$tmp/xml.log")"
out=$($py "$src/tests/e2e/bosh_client.py" 127.0.0.1 $((hport + 1)) /http-bind/ example.test alice 2>&1); rc=$?
check $rc "manager.xml: a BOSH client logs in, chats and terminates on xmpp.httpbind.port.plain" "$(echo "$out" | grep -A3 'not ok'; tail -5 "$tmp/xml.log")"
kill -TERM $mpid; wait $mpid
kill -TERM $up4; wait $up4
[ $failed -eq 0 ]
