#!/usr/bin/python3
"""XEP-0198 acknowledgements through the xcmd binary, with slixmpp's own
xep_0198 plugin (Debian's python3-slixmpp) as the client.

xcm-upstream (the testkit as a process, standing in for Openfire) and a
real xcmd with [stream_management] enable = yes. Two slixmpp clients log
in, enable stream management (the plugin asks for resumption, and gets
an id: resume_slix_test.py resumes), exchange 200 messages each way and
request acks. Checked: every message arrives, in order; each client's
outgoing queue is acknowledged exactly (the CM's h equals the client's
count of stanzas sent, so nothing is left unacked and no h was refused);
each client's h, answered to the CM's <r/>, covers all that the CM sent
it (after a clean close the CM returned nothing: xcm_sm_returned_total
stays 0); the metrics show the sessions, the requests and the acks.
Every wait is on an event, bounded by a generous deadline.

usage: sm_slix_test.py XCMD XCM_UPSTREAM
Prints TAP; run with Debian's /usr/bin/python3.
"""
import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from xcmd_harness import Tap, free_port, metrics, read, wait_for  # noqa: E402

try:
    import slixmpp
except ImportError:
    print("1..0 # SKIP python3-slixmpp is not installed")
    sys.exit(0)

DOMAIN = "example.test"
SECRET = "cmsecret"
N = 200
PLAN = 10

XCMD_CONF = """
[server]
domain = {domain}
[upstream]
port = {up}
name = cm-sm
secret = {secret}
connections = 2
tls = off
wait = 10s
[listener]
host = 127.0.0.1
port = {port}
[stream_management]
enable = yes
ack_every = 10
ack_quiet = 200ms
[daemon]
workers = 1
[log]
level = info
[metrics]
port = {mport}
"""


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password, sasl_mech="PLAIN")
        self.messages = []
        self.started = asyncio.Event()
        self.acks_sent = []  # the h of each <a/> this client sent
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("message", self.on_message)
        self.register_plugin("xep_0198")
        self["feature_mechanisms"].unencrypted_plain = True
        sm = self.plugin["xep_0198"]
        send_ack = sm.send_ack

        def counted_ack():
            self.acks_sent.append(sm.handled)
            send_ack()
        sm.send_ack = counted_ack

    def on_start(self, _):
        self.send_presence()
        self.started.set()

    def on_message(self, msg):
        if msg["type"] in ("chat", "normal"):
            self.messages.append(msg["body"])

    def sm(self):
        return self.plugin["xep_0198"]


async def scenario(tap, xcmd, upstream, tmp, procs):
    up_port_file = os.path.join(tmp, "up.port")
    up_log = open(os.path.join(tmp, "upstream.log"), "w")
    procs.append(subprocess.Popen([upstream, up_port_file, DOMAIN, SECRET],
                                  stdout=up_log, stderr=subprocess.STDOUT))
    ok = await wait_for(lambda: read(up_port_file).strip() != "")
    if not tap.check(ok, "the upstream (xcm-upstream) is up"):
        return
    port, mport = free_port(), free_port()
    conf = os.path.join(tmp, "xcmd.conf")
    with open(conf, "w") as f:
        f.write(XCMD_CONF.format(domain=DOMAIN,
                                 up=int(read(up_port_file)), secret=SECRET,
                                 port=port, mport=mport))
    xlog_path = os.path.join(tmp, "xcmd.log")
    xlog = open(xlog_path, "w")
    procs.append(subprocess.Popen([xcmd, "-c", conf], stdout=xlog,
                                  stderr=subprocess.STDOUT))
    ok = await wait_for(lambda: "is up" in read(xlog_path) and
                        metrics(mport) != {})
    if not tap.check(ok, "xcmd is up with stream management on",
                     read(xlog_path)[-2000:]):
        return

    alice = Client(f"alice@{DOMAIN}/phone", "alice")
    bob = Client(f"bob@{DOMAIN}/phone", "bob")
    for c in (alice, bob):
        c.connect(("127.0.0.1", port), force_starttls=False,
                  disable_starttls=True)
    ok = await wait_for(lambda: all(c.started.is_set() and c.sm().enabled_in
                                    and c.sm().enabled_out
                                    for c in (alice, bob)))
    tap.check(ok, "both log in and enable stream management",
              f"alice in={alice.sm().enabled_in} bob in={bob.sm().enabled_in}")
    tap.check(alice.sm().sm_id is not None and bob.sm().sm_id is not None,
              "enabled with resumption (resume is on by default): an id "
              "each (resume_slix_test.py resumes)")
    # The workers' figures reach the endpoint on their next sample.
    ok = await wait_for(lambda: metrics(mport).get("xcm_sm_sessions") == 2)
    tap.check(ok, "the metrics count 2 sessions", str(metrics(mport)))

    for i in range(N):
        alice.send_message(mto=bob.boundjid, mbody=f"a{i}", mtype="chat")
        bob.send_message(mto=alice.boundjid, mbody=f"b{i}", mtype="chat")
    ok = await wait_for(lambda: len(alice.messages) >= N and
                        len(bob.messages) >= N)
    tap.check(ok and bob.messages == [f"a{i}" for i in range(N)] and
              alice.messages == [f"b{i}" for i in range(N)],
              f"{N} messages each way arrive, in order, once",
              f"alice got {len(alice.messages)}, bob {len(bob.messages)}")

    # Our side: the CM acknowledges exactly what each client sent.
    for c in (alice, bob):
        c.sm().request_ack()
    ok = await wait_for(lambda: all(len(c.sm().unacked_queue) == 0 and
                                    c.sm().last_ack == c.sm().seq
                                    for c in (alice, bob)))
    tap.check(ok, "the CM acknowledged every stanza each client sent "
              "(its h equals the client's count)",
              "; ".join(f"{c.boundjid}: seq={c.sm().seq} "
                        f"last_ack={c.sm().last_ack} "
                        f"unacked={len(c.sm().unacked_queue)}"
                        for c in (alice, bob)))
    # The CM's side: once it goes quiet it asks, and each client's h
    # covers everything the CM sent it.
    ok = await wait_for(lambda: all(c.acks_sent and
                                    c.acks_sent[-1] == c.sm().handled
                                    and c.sm().handled >= N
                                    for c in (alice, bob)))
    tap.check(ok, "the CM asked for acks and each client acknowledged "
              "all it handled",
              "; ".join(f"{c.boundjid}: handled={c.sm().handled} "
                        f"acks={c.acks_sent[-3:]}" for c in (alice, bob)))
    acks_before = metrics(mport).get('xcm_sm_acks_total{kind="received"}', 0)
    ok = await wait_for(lambda: metrics(mport).get(
        'xcm_sm_acks_total{kind="received"}', 0) >=
        sum(len(c.acks_sent) for c in (alice, bob)))
    m = metrics(mport)
    tap.check(ok and m.get('xcm_sm_acks_total{kind="requested"}', 0) >= 2,
              "the metrics count the requests and acks",
              f"{m} (acks sent by clients: "
              f"{sum(len(c.acks_sent) for c in (alice, bob))}, before "
              f"{acks_before})")

    for c in (alice, bob):
        c.disconnect()
    ok = await wait_for(lambda: metrics(mport).get("xcm_sm_sessions") == 0)
    m = metrics(mport)
    tap.check(ok and m.get("xcm_sm_returned_total") == 0 and
              m.get('xcm_sm_clients_ended_total{reason="bad_h"}') == 0 and
              m.get("xcm_sm_return_errors_total") == 0,
              "after a clean close nothing was unacknowledged, no h refused",
              str(m))


def main():
    if len(sys.argv) != 3:
        print("usage: sm_slix_test.py XCMD XCM_UPSTREAM", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.CRITICAL)
    tap = Tap(PLAN)
    tmp = tempfile.mkdtemp(prefix="xcm-sm-")
    procs = []
    try:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        loop.run_until_complete(
            scenario(tap, sys.argv[1], sys.argv[2], tmp, procs))
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        if tap.failed:
            print(f"# logs kept in {tmp}", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    while tap.n < PLAN:
        tap.check(False, "not reached")
    return 1 if tap.failed else 0


if __name__ == "__main__":
    sys.exit(main())
