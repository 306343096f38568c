#!/usr/bin/python3
"""XEP-0198 resumption through the xcmd binary, with slixmpp's own
xep_0198 plugin (Debian's python3-slixmpp) as the client.

xcm-upstream (the testkit as a process, standing in for Openfire) and
real xcmd processes with [stream_management] enable = yes and resume on.
The resuming client (alice) reaches xcmd through a relay inside the test
that the test cuts from outside: both sockets closed with SO_LINGER 0, a
reset each way, no </stream:stream>. It can also hold a direction after
a given number of messages (what it read after that is never
forwarded), keep new connections waiting, or stop reading from xcmd.
The other client (bob) connects directly.

Checked, each time as the exact list of bodies received (every message
once, in order, none lost):
1. cut mid-burst while bob keeps sending (some in flight at the cut, some
   sent while the session waits): slixmpp reconnects and resumes
   (session_resumed, <resumed/> on the wire);
2. cut while alice's own burst is queued in the relay: after the resume
   the CM's h tells alice what to resend, and bob gets each message once;
3. alice stops reading: the CM's ack_timeout drops her connection, the
   session waits, she comes back and resumes;
4. alice never comes back: once `resume` (2s) expires, what she had not
   acknowledged is returned and stored offline by xcm-upstream, and
   delivered at her next login;
5. xcmd with workers = 2: alice is cut and resumes 50 times, on whichever
   worker her new connection reaches; the debug log shows where each new
   connection landed (w1, w2) and where it resumed, both workers took
   new connections and some resumes crossed to the other worker.
Each case prints a "# table fault" line for the README's fault table
(tests/readme-table.py). Every wait is on an event or a condition,
bounded by a generous deadline.

slixmpp 1.8.3 empties its unacked queue when it sends <resume/> (its
outgoing filter treats <resume/> as <enable/>), so it would resend
nothing; the test's client keeps the queue across <resume/>, as XEP-0198
section 5 asks of a client.

usage: resume_slix_test.py XCMD XCM_UPSTREAM
Prints TAP; run with Debian's /usr/bin/python3.
"""
import asyncio
import logging
import os
import re
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from xcmd_harness import (Procs, Relay, Tap, metrics,  # noqa: E402
                          read, wait_for)

try:
    import slixmpp
    from slixmpp.plugins.xep_0198 import stanza as sm_stanza
except ImportError:
    print("1..0 # SKIP python3-slixmpp is not installed")
    sys.exit(0)

DOMAIN = "example.test"
SECRET = "cmsecret"
PLAN = 27
CYCLES = 50
TLS_CYCLES = 20
CERTS = os.environ.get("XCM_CERTS_DIR", "")

XCMD_CONF = """
[server]
domain = {domain}
[upstream]
port = {up}
name = {name}
secret = {secret}
connections = 2
tls = off
wait = 10s
[listener]
host = 127.0.0.1
port = {{port}}
{tls_lines}
[stream_management]
enable = yes
ack_every = 10
ack_quiet = 200ms
resume = {resume}
ack_timeout = {ack_timeout}
[daemon]
workers = {workers}
[log]
level = debug
[metrics]
port = {{mport}}
"""


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, addr, reconnect=True, tls=False):
        super().__init__(jid, password, sasl_mech="PLAIN")
        self.addr = addr
        self.tls = tls
        if tls:
            self.ca_certs = os.path.join(CERTS, "ca.pem")
        self.reconnect_on_loss = reconnect
        self.messages = []
        self.started = asyncio.Event()
        self.resumed = 0
        self.sm_failed = 0
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("session_resumed", self.on_resumed)
        self.add_event_handler("sm_failed", self.on_sm_failed)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("disconnected", self.on_disconnected)
        self.register_plugin("xep_0198")
        self["feature_mechanisms"].unencrypted_plain = True
        sm = self.plugin["xep_0198"]
        plain = sm._handle_outgoing

        # See the docstring: keep what is unacknowledged across <resume/>.
        def outgoing(st):
            if isinstance(st, sm_stanza.Resume):
                sm.enabled_out = True
                return st
            return plain(st)
        self.del_filter("out_sync", plain)
        self.add_filter("out_sync", outgoing)

    def start(self):
        if self.tls:
            self.connect(self.addr, force_starttls=True)
        else:
            self.connect(self.addr, force_starttls=False,
                         disable_starttls=True)

    def on_start(self, _):
        self.send_presence()
        self.started.set()

    def on_resumed(self, _):
        self.resumed += 1

    def on_sm_failed(self, _):
        self.sm_failed += 1

    def on_message(self, msg):
        if msg["type"] in ("chat", "normal"):
            self.messages.append(msg["body"])

    async def on_disconnected(self, _):
        if self.reconnect_on_loss:
            # As slixmpp's own reconnect(): after the other handlers.
            await asyncio.sleep(0)
            self.start()

    def sm(self):
        return self.plugin["xep_0198"]

    def ready(self):
        sm = self.sm()
        return self.started.is_set() and sm.enabled_in and sm.enabled_out

    def send_to(self, other, body):
        self.send_message(mto=other.boundjid, mbody=body, mtype="chat")

    def acked_all(self):
        sm = self.sm()
        return sm.enabled_out and len(sm.unacked_queue) == 0


def exactly(got, want):
    """(delivered once, duplicated, lost, in order) of want in got."""
    seen = {}
    for b in got:
        seen[b] = seen.get(b, 0) + 1
    once = sum(1 for b in want if seen.get(b) == 1)
    dup = sum(1 for b in want if seen.get(b, 0) > 1)
    lost = sum(1 for b in want if b not in seen)
    return once, dup, lost, got == want


def describe(got, want):
    once, dup, lost, ordered = exactly(got, want)
    extra = [b for b in got if b not in set(want)]
    return (f"got {len(got)} of {len(want)}: once={once} twice+={dup} "
            f"lost={lost} in order={ordered} extra={extra[:5]} "
            f"first lost={[b for b in want if b not in set(got)][:5]}")


def table(tap, case, sent, delivered, failed):
    tap.note(f"table fault {case} sent={sent} delivered={delivered} "
             f"failed={failed} lost={sent - delivered - failed} "
             f"inflight_bound=0")


async def pair_up(tap, procs, name, users, resume, ack_timeout="60s",
                  workers=1, reconnect=True, tls=False):
    """An xcmd, a relay in front of it, alice through the relay and bob
    direct, both with stream management on. Returns (alice, bob, relay,
    mport, log) or None."""
    tls_lines = (f"cert = {CERTS}/server.pem\nkey = {CERTS}/server-key.pem"
                 if tls else "")
    conf = XCMD_CONF.format(domain=DOMAIN, up=procs.up_port, name=name,
                            secret=SECRET, resume=resume,
                            ack_timeout=ack_timeout, workers=workers,
                            tls_lines=tls_lines)
    port, mport, log, up = await procs.start_xcmd(name, conf)
    if not up:
        tap.note(f"{name} did not come up: {read(log)[-1500:]}")
        return None
    relay = Relay(port)
    await relay.start()
    alice = Client(f"{users[0]}@{DOMAIN}/phone", users[0],
                   ("127.0.0.1", relay.port), reconnect=reconnect, tls=tls)
    bob = Client(f"{users[1]}@{DOMAIN}/phone", users[1], ("127.0.0.1", port),
                 reconnect=False, tls=tls)
    alice.start()
    bob.start()
    if not await wait_for(lambda: alice.ready() and bob.ready() and
                          alice.sm().sm_id is not None):
        tap.note(f"{name}: alice ready={alice.ready()} "
                 f"id={alice.sm().sm_id} bob ready={bob.ready()}")
        return None
    procs.clients += [alice, bob]
    return alice, bob, relay, mport, log


async def send_acked(sender, other, bodies):
    """Sends and waits until the CM acknowledged all of it. slixmpp
    counts a stanza (and queues it unacked) when its send task writes it,
    a loop turn or more after send_message: wait for that first."""
    sm = sender.sm()
    seq = sm.seq
    for b in bodies:
        sender.send_to(other, b)
    if not await wait_for(lambda: (sm.seq - seq) % 2**32 >= len(bodies)):
        return False
    sm.request_ack()
    return await wait_for(sender.acked_all)


def m(mport, name):
    return metrics(mport).get(name, 0)


# ---- 1 and 2: cut mid-burst, both directions ----------------------------

async def cut_and_resume(tap, procs):
    s = await pair_up(tap, procs, "cm-cut", ("alice", "bob"), "60s")
    if not tap.check(s is not None, "alice (through the relay) and bob log "
                     "in and enable stream management with resumption"):
        return
    alice, bob, relay, mport, log = s
    want = [f"b{i}" for i in range(300)]

    # Bob's first 100: the relay forwards 40 of them to alice, then holds.
    first = relay.current()
    first.hold_after("s2c", 40)
    ok = await send_acked(bob, alice, want[:100])
    ok = ok and await wait_for(lambda: len(alice.messages) >= 40)
    relay.gate.clear()
    first.cut()
    in_flight = 100 - len(alice.messages)
    # The CM sees the reset; the session waits for alice. Bob goes on.
    ok = ok and await wait_for(lambda: m(mport, "xcm_sm_detached_now") == 1)
    ok = ok and await send_acked(bob, alice, want[100:200])
    tap.check(ok and in_flight > 0, "cut mid-burst: 100 sent, "
              f"{100 - in_flight} through, the session waits; bob sends 100 "
              "more to it", f"alice got {len(alice.messages)}; "
              f"{metrics(mport)}")
    relay.gate.set()
    ok = await wait_for(lambda: alice.resumed == 1 and alice.ready())
    second = relay.current()
    tap.check(ok and second is not first and
              b"<resumed" in bytes(second.text["s2c"]) and
              alice.sm_failed == 0,
              "slixmpp reconnects and resumes (session_resumed, <resumed/> "
              "on the wire)", f"resumed={alice.resumed} "
              f"failed={alice.sm_failed} s2c={bytes(second.text['s2c'])[:600]}")
    ok = await send_acked(bob, alice, want[200:])
    ok = ok and await wait_for(lambda: len(alice.messages) >= len(want))
    # Give a duplicate the chance to show: alice acknowledges all she got.
    await wait_for(lambda: alice.sm().handled >= len(want) and
                   alice.acked_all(), 10)
    once, dup, lost, ordered = exactly(alice.messages, want)
    tap.check(ok and ordered, "300 messages to alice, each once, in order, "
              "none lost, across the cut", describe(alice.messages, want))
    table(tap, "resume-connection-cut", len(want), once, 0)

    # 2: alice's own burst, cut after the relay forwarded 20 of 100.
    mine = [f"a{i}" for i in range(100)]
    pair = relay.current()
    pair.hold_after("c2s", 20)
    relay.gate.clear()
    seq0 = alice.sm().seq
    for b in mine:
        alice.send_to(bob, b)
    # Every one left slixmpp (counted, queued unacked) and reached the
    # relay, which forwarded 20 and holds the rest.
    ok = await wait_for(lambda: pair.seen["c2s"] == 100 and
                        alice.sm().seq - seq0 >= 100)
    ok = ok and await wait_for(lambda: len(bob.messages) >= 20)
    pair.cut()
    tap.check(ok and pair.forwarded["c2s"] == 20 and len(bob.messages) == 20,
              "alice sends 100; the relay forwards 20 and is cut with 80 "
              "queued", f"seen={pair.seen} forwarded={pair.forwarded} "
              f"bob got {len(bob.messages)}")
    relay.gate.set()
    ok = await wait_for(lambda: alice.resumed == 2 and alice.ready())
    ok = ok and await wait_for(lambda: len(bob.messages) >= len(mine))
    # slixmpp resends without asking for an ack: ask.
    alice.sm().request_ack()
    ok = ok and await wait_for(alice.acked_all)
    third = relay.current()
    once, dup, lost, ordered = exactly(bob.messages, mine)
    tap.check(ok and ordered and third.forwarded["c2s"] == 80,
              "after the resume alice resends exactly the 80 the CM's h "
              "did not cover; bob gets each of the 100 once, in order",
              describe(bob.messages, mine) +
              f" resent={third.forwarded['c2s']}")
    table(tap, "resume-cut-with-client-output-queued", len(mine), once, 0)
    await wait_for(lambda: m(mport, "xcm_sm_resumed_total") >= 2)
    mt = metrics(mport)
    tap.check(mt.get("xcm_sm_resumed_total") == 2 and
              mt.get("xcm_sm_detached_total") == 2 and
              mt.get("xcm_sm_resume_failed_total") == 0 and
              mt.get("xcm_sm_expired_total") == 0 and
              mt.get("xcm_sm_returned_total") == 0,
              "the metrics count 2 detached, 2 resumed, nothing refused, "
              "expired or returned", str(mt))


# ---- 3: the client stops reading ---------------------------------------

async def stops_reading(tap, procs):
    s = await pair_up(tap, procs, "cm-stall", ("carol", "dave"), "60s",
                      ack_timeout="1s")
    if not tap.check(s is not None, "carol (through the relay) and dave log "
                     "in; ack_timeout = 1s"):
        return
    carol, dave, relay, mport, log = s
    want = [f"d{i}" for i in range(150)]
    stalled = relay.current()
    stalled.pause_reading("s2c")
    ok = await send_acked(dave, carol, want[:100])
    ok = ok and await wait_for(
        lambda: m(mport, "xcm_sm_ack_timeouts_total") == 1 and
        m(mport, "xcm_sm_detached_now") == 1)
    tap.check(ok and len(carol.messages) < 100,
              "carol stops reading: her <r/> goes unanswered, the CM drops "
              "the connection after ack_timeout and the session waits",
              f"carol got {len(carol.messages)}; {metrics(mport)}")
    ok = await send_acked(dave, carol, want[100:])
    relay.gate.clear()
    stalled.cut()
    relay.gate.set()
    ok = ok and await wait_for(lambda: carol.resumed == 1 and carol.ready())
    ok = ok and await wait_for(lambda: len(carol.messages) >= len(want))
    await wait_for(lambda: carol.sm().handled >= len(want) and
                   carol.acked_all(), 10)
    once, dup, lost, ordered = exactly(carol.messages, want)
    tap.check(ok and ordered and carol.sm_failed == 0,
              "she resumes and gets all 150 (50 sent while the session "
              "waited) once, in order", describe(carol.messages, want))
    table(tap, "resume-client-stops-reading", len(want), once, 0)


# ---- 4: the client never comes back ------------------------------------

async def never_returns(tap, procs):
    s = await pair_up(tap, procs, "cm-gone", ("erin", "frank"), "2s",
                      reconnect=False)
    if not tap.check(s is not None, "erin (through the relay) and frank log "
                     "in; resume = 2s"):
        return
    erin, frank, relay, mport, log = s
    want = [f"f{i}" for i in range(120)]
    pair = relay.current()
    pair.hold_after("s2c", 40)
    ok = await send_acked(frank, erin, want[:100])
    ok = ok and await wait_for(lambda: len(erin.messages) == 40)
    # Erin acknowledges her 40 and asks for the CM's count: its answer
    # (held by the relay) comes after the CM took her <a/>.
    mark = len(pair.held["s2c"])
    erin.sm().send_ack()
    erin.sm().request_ack()
    ok = ok and await wait_for(
        lambda: re.search(rb"<a [^>]*h=", bytes(pair.held["s2c"][mark:]))
        is not None)
    pair.cut()
    ok = ok and await wait_for(lambda: m(mport, "xcm_sm_detached_now") == 1)
    ok = ok and await send_acked(frank, erin, want[100:])
    tap.check(ok, "erin takes 40 of 100 and acknowledges them, is cut and "
              "never comes back; frank sends 20 more to the waiting "
              "session", f"erin got {len(erin.messages)}; {metrics(mport)}")
    ok = await wait_for(lambda: m(mport, "xcm_sm_expired_total") == 1 and
                        m(mport, "xcm_sm_detached_now") == 0)
    mt = metrics(mport)
    returned = mt.get("xcm_sm_expired_returned_total", 0)
    tap.check(ok and returned >= 80 and
              mt.get("xcm_sm_return_errors_total") == 0,
              "after resume (2s) the session expires and returns what erin "
              "had not acknowledged", str(mt))
    # Her next login, a new session: the offline store, in order.
    again = Client(f"erin@{DOMAIN}/phone", "erin",
                   ("127.0.0.1", relay.port), reconnect=False)
    procs.clients.append(again)
    again.start()
    ok = await wait_for(lambda: again.ready() and
                        len(again.messages) >= len(want) - 40)
    got = erin.messages + again.messages
    once, dup, lost, ordered = exactly(got, want)
    tap.check(ok and ordered and erin.messages == want[:40],
              "at her next login she gets the other 80 from the offline "
              "store: all 120 once, in order", describe(got, want))
    table(tap, "resume-client-never-returns", len(want),
          len(erin.messages), len(again.messages))


# ---- 5: two workers -----------------------------------------------------

LINE = re.compile(r"^\S+ (w\d+) debug: session (\S+) (opened|resumed): "
                  r"(?:[^,\n]*, )?client (\S+)(?: \(TLS\))?$", re.M)


async def two_workers(tap, procs, tls=False):
    """Cut and resume, CYCLES times over two workers; with tls, over
    STARTTLS, TLS_CYCLES times: a resume that reaches the other worker
    then moves the TLS session itself. The relay cannot read TLS, so there
    it cuts once the messages arrived rather than after the fifth."""
    cycles = TLS_CYCLES if tls else CYCLES
    how = "STARTTLS" if tls else "plain"
    s = await pair_up(tap, procs, "cm-two-tls" if tls else "cm-two",
                      ("ivy", "jack") if tls else ("gina", "hank"), "60s",
                      workers=2, tls=tls)
    if not tap.check(s is not None, f"xcmd with workers = 2, {how}: gina "
                     "(through the relay) and hank log in"):
        return
    gina, hank, relay, mport, log = s
    want, mine = [], []
    failures = []
    for k in range(cycles):
        batch = [f"h{k}.{i}" for i in range(10)]
        want += batch
        pair = relay.current()
        if not tls:
            pair.hold_after("s2c", 5)
        ok = await send_acked(hank, gina, batch)
        ok = ok and await wait_for(lambda: len(gina.messages) >= len(want) - 5)
        pair.cut()
        ok = ok and await wait_for(lambda: gina.resumed == k + 1 and
                                   gina.ready())
        out = [f"g{k}.{i}" for i in range(2)]
        mine += out
        ok = ok and await send_acked(gina, hank, out)
        ok = ok and await wait_for(lambda: len(gina.messages) >= len(want))
        if not ok or gina.sm_failed:
            failures.append(f"cycle {k}: resumed={gina.resumed} "
                            f"failed={gina.sm_failed} "
                            f"got {len(gina.messages)} of {len(want)}")
            break
    tap.check(not failures and gina.resumed == cycles,
              f"{how}: {cycles} cuts, each resumed (session_resumed)",
              "; ".join(failures) + f" {metrics(mport)}")
    once, dup, lost, ordered = exactly(gina.messages, want)
    tap.check(ordered, f"{len(want)} messages to gina, each once, in order",
              describe(gina.messages, want))
    await wait_for(lambda: len(hank.messages) >= len(mine))
    tap.check(hank.messages == mine, f"{len(mine)} messages from gina (sent "
              "right after each resume), each once, in order",
              describe(hank.messages, mine))
    table(tap, "resume-cut-20-times-two-workers-starttls" if tls else
          "resume-cut-50-times-two-workers", len(want), once, 0)
    # The workers' figures reach the endpoint on their next sample.
    await wait_for(lambda: m(mport, "xcm_sm_resumed_total") >= cycles)
    mt = metrics(mport)
    tap.check(mt.get("xcm_sm_resumed_total") == cycles and
              mt.get("xcm_sm_resume_failed_total") == 0,
              f"the metrics count {cycles} resumed, none refused", str(mt))

    # Where each of gina's connections landed and where it resumed, by the
    # relay's own address towards xcmd (the client address in the log).
    mine_addr = {p.local for p in relay.pairs[1:] if p.local}
    opened, resumed = {}, {}
    for w, sid, what, peer in LINE.findall(read(log)):
        if peer in mine_addr:
            (opened if what == "opened" else resumed)[peer] = w
    landed = set(opened.values())
    home = set(resumed.values())
    crossed = sum(1 for a in resumed if opened.get(a) != resumed[a])
    tap.note(f"new connections landed on {sorted(landed)}; "
             f"{len(resumed)} resumed on {sorted(home)}; {crossed} moved to "
             "the other worker")
    # One new connection a cut: a resume that failed would have shown as
    # a connection closed after <resume/> and another one.
    tap.check(len(relay.pairs) == cycles + 1 and len(resumed) == cycles and
              landed == {"w1", "w2"} and
              len(home) == 1 and crossed > 0,
              "both workers took gina's new connections; every resume "
              "happened on the worker holding her session, those that "
              "landed on the other one moved there",
              f"connections={len(relay.pairs)} opened={len(opened)} "
              f"resumed={len(resumed)} "
              f"landed={landed} home={home} crossed={crossed}")


async def scenario(tap, procs):
    procs.clients = []
    procs.up_port = await procs.start_upstream()
    if not tap.check(procs.up_port is not None,
                     "the upstream (xcm-upstream) is up"):
        return
    try:
        await cut_and_resume(tap, procs)
        await stops_reading(tap, procs)
        await never_returns(tap, procs)
        await two_workers(tap, procs)
        await two_workers(tap, procs, tls=True)
    finally:
        for c in procs.clients:
            c.reconnect_on_loss = False
            c.disconnect(wait=0)


def main():
    if len(sys.argv) != 3:
        print("usage: resume_slix_test.py XCMD XCM_UPSTREAM", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.CRITICAL)
    tap = Tap(PLAN)
    tmp = tempfile.mkdtemp(prefix="xcm-resume-")
    procs = Procs(sys.argv[1], sys.argv[2], tmp, DOMAIN, SECRET)
    try:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        loop.run_until_complete(
            asyncio.wait_for(scenario(tap, procs), 280))
    except asyncio.TimeoutError:
        tap.note("the whole test ran out of time")
    finally:
        procs.stop_all()
        tap.finish()
        if tap.failed:
            print(f"# logs kept in {tmp}", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 1 if tap.failed else 0


if __name__ == "__main__":
    sys.exit(main())
