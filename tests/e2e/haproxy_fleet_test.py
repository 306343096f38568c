#!/usr/bin/python3
"""Two xcmd behind the real HAProxy, in front of one Openfire stand-in.

The deployment of doc/operator-guide.md, "Several instances behind a
load balancer", on loopback: xcm-upstream (the testkit as a process of
its own, standing in for Openfire) and two real xcmd processes, each
with its own config file and its own name (cm-a, cm-b), both CMs of that
one upstream. Debian's HAProxy in TCP mode balances over them, with
health checks, through two frontends: one with send-proxy-v2, one with
send-proxy (v1). Every client connects from an address of its own
(127.0.0.2, 127.0.0.3, ...; Linux routes all of 127/8 to lo) and speaks
XMPP over a raw socket, so that what each one sees is exact.

Checked:
- a copy of cm-a's config on "another machine" (only the port changed)
  is refused by the upstream with conflict, says so, and never joins
  cm-a's pool (lib/upstream/link.c);
- clients are spread over both instances; on each, the PROXY line, the
  session events in xcmd's log and the session create the upstream
  received carry the client's own address and never HAProxy's; each
  session is created at the upstream under the name of the instance that
  holds its connection; stream ids are distinct over both instances (a
  sample of 40 more through the balancer) and of 22 base64url characters;
- max_per_address (1 here) counts the client's address, not HAProxy's:
  a dozen clients all reach the instances through HAProxy's one
  address, and the third connection from one address is refused;
- SIGUSR2 drains cm-a: HAProxy's check takes it out, every client on it
  gets system-shutdown, logs in again through HAProxy, lands on cm-b and
  exchanges messages; cm-b's clients never notice; cm-a exits 0;
- cm-a restarted under its own name (a rolling upgrade) comes back
  without a conflict, HAProxy takes it in again; then the same, shorter,
  through the send-proxy (v1) frontend: cm-b drained, its clients (of
  both frontends) move to cm-a.
Every wait is on an event, bounded by a generous deadline. The untrusted
sources are tested by haproxy_test.py and xcmd_test.sh.

usage: haproxy_fleet_test.py XCMD XCM_UPSTREAM
Prints TAP; run with Debian's /usr/bin/python3.
"""
import asyncio
import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

DOMAIN = "example.test"
SECRET = "cmsecret"
PLAN = 32
# Generous: the suite must pass with a CPU hog on every core.
LONG = 30.0

NS_STREAMS = "http://etherx.jabber.org/streams"
HEADER = (f"<?xml version='1.0'?><stream:stream xmlns:stream='{NS_STREAMS}' "
          f"xmlns='jabber:client' to='{DOMAIN}' version='1.0'>").encode()
SID_RE = re.compile(rb"<stream:stream\b[^>]*?\sid=['\"]([^'\"]+)['\"]")


class Tap:
    def __init__(self):
        self.n = 0
        self.failed = 0

    def check(self, ok, name, detail=""):
        self.n += 1
        print(f"{'ok' if ok else 'not ok'} {self.n} - {name}", flush=True)
        if not ok:
            self.failed += 1
            if detail:
                for line in str(detail).splitlines()[:40]:
                    print(f"# {line}", flush=True)
        return ok


async def wait_for(pred, timeout=LONG):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        await asyncio.sleep(0.02)
    return pred()


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port):
    want = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1] == want and fields[3] == "0A":
                return True
    return False


def metric(port, name):
    """The sum of every sample of a metric on xcmd's endpoint."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                  timeout=10).read().decode()
    total = 0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


class Client:
    """One XMPP client on a raw socket, from its own source address."""

    def __init__(self, user, src):
        self.user = user
        self.src = src
        self.jid = None
        self.sid = None
        self.port = None
        self.buf = b""
        self.eof = False
        self.writer = None
        self.pump_task = None

    async def _pump(self, reader):
        while True:
            try:
                data = await reader.read(65536)
            except (ConnectionError, OSError):
                data = b""
            if not data:
                self.eof = True
                return
            self.buf += data

    async def _until(self, pred, timeout=LONG):
        ok = await wait_for(lambda: pred(self.buf) or self.eof, timeout)
        if not ok or not pred(self.buf):
            raise RuntimeError(f"{self.user}: stopped at {self.buf[-300:]!r}"
                               f" (eof={self.eof})")

    async def open(self, port):
        reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port,
                                    local_addr=(self.src, 0)), LONG)
        self.port = self.writer.get_extra_info("sockname")[1]
        self.buf = b""
        self.eof = False
        self.pump_task = asyncio.ensure_future(self._pump(reader))

    def send(self, data):
        self.writer.write(data if isinstance(data, bytes) else data.encode())

    async def login(self, port):
        """Connect and log in (SASL PLAIN, bind, presence)."""
        await self.open(port)
        self.send(HEADER)
        await self._until(lambda b: b"</stream:features>" in b)
        self.sid = SID_RE.search(self.buf).group(1).decode()
        cred = base64.b64encode(f"\0{self.user}\0{self.user}".encode())
        self.buf = b""
        self.send(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
                  b"mechanism='PLAIN'>" + cred + b"</auth>")
        await self._until(lambda b: b"<success" in b)
        self.buf = b""
        self.send(HEADER)
        await self._until(lambda b: b"</stream:features>" in b)
        self.buf = b""
        self.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:"
                  "ns:xmpp-bind'><resource>fleet</resource></bind></iq>")
        await self._until(lambda b: b"</jid>" in b)
        self.jid = re.search(rb"<jid>([^<]+)</jid>", self.buf).group(1)
        self.jid = self.jid.decode()
        self.send("<presence/>")
        self.buf = b""

    async def login_retrying(self, port, deadline):
        """As a real client after a stream error: try again until in."""
        last = None
        while time.monotonic() < deadline:
            try:
                await self.login(port)
                return None
            except (RuntimeError, OSError, asyncio.TimeoutError) as e:
                last = e
                self.close()
                await asyncio.sleep(0.1)
        return last

    def message(self, to, body):
        self.send(f"<message to='{to}' type='chat'><body>{body}</body>"
                  f"</message>")

    def got(self, body):
        return f"<body>{body}</body>".encode() in self.buf

    def stream_error(self):
        return b"<stream:error" in self.buf

    def close(self):
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception:
                pass
        if self.pump_task is not None:
            self.pump_task.cancel()
        self.writer = self.pump_task = None


async def header_only(port, src):
    """Send a stream header through port from src; the stream id that
    came back, or None if the connection closed without a byte."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, local_addr=(src, 0))
    writer.write(HEADER)
    buf = b""
    end = time.monotonic() + LONG
    try:
        while SID_RE.search(buf) is None and time.monotonic() < end:
            data = await asyncio.wait_for(reader.read(4096), LONG)
            if not data:
                break
            buf += data
    finally:
        writer.close()
    m = SID_RE.search(buf)
    return m.group(1).decode() if m else None


XCMD_CONF = """
[server]
domain = {domain}
[limits]
max_per_address = 1
[upstream]
port = {up}
name = {name}
secret = {secret}
connections = 2
tls = off
wait = 10s
[listener]
host = 127.0.0.1
port = {port}
proxy_protocol = yes
proxy_trusted = 127.0.0.1
[daemon]
workers = 1
drain_period = 1s
[log]
level = debug
[metrics]
port = {mport}
"""

HAPROXY_CFG = """
global
    maxconn 256
    log stderr format raw local0
defaults
    mode tcp
    log global
    option tcplog
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    timeout check 5s
    retries 3
    option redispatch
frontend fe_v2
    bind 127.0.0.1:{v2}
    default_backend be_v2
backend be_v2
    balance roundrobin
    server a 127.0.0.1:{a} send-proxy-v2 check inter 200ms fall 1 rise 1
    server b 127.0.0.1:{b} send-proxy-v2 check inter 200ms fall 1 rise 1
frontend fe_v1
    bind 127.0.0.1:{v1}
    default_backend be_v1
backend be_v1
    balance roundrobin
    server a 127.0.0.1:{a} send-proxy check inter 200ms fall 1 rise 1
    server b 127.0.0.1:{b} send-proxy check inter 200ms fall 1 rise 1
"""


class Fleet:
    def __init__(self, xcmd, upstream, tmp, tap):
        self.xcmd = xcmd
        self.upstream = upstream
        self.tmp = tmp
        self.tap = tap
        self.procs = {}
        self.ports = {}
        self.mports = {}

    def path(self, name):
        return os.path.join(self.tmp, name)

    def start(self, key, argv, env=None, log=None):
        out = open(self.path(log or key + ".log"), "a")
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                             env=env)
        self.procs[key] = p
        return p

    def write_conf(self, name, port, mport, file=None):
        conf = self.path(file or name + ".conf")
        with open(conf, "w") as f:
            f.write(XCMD_CONF.format(domain=DOMAIN, up=self.up_port,
                                     name=name, secret=SECRET, port=port,
                                     mport=mport))
        return conf

    def start_xcmd(self, name, conf, log):
        return self.start(name, [self.xcmd, "-c", conf], log=log)

    def log(self, name):
        return read(self.path(name + ".log"))

    def up_log(self):
        return read(self.path("upstream.log"))

    def creates(self):
        """sid -> (connection address "CM/RES", client address), as the
        upstream received each session create."""
        out = {}
        for conn, sid, addr in re.findall(
                r"testkit: (\S+): session (\S+) created for host \S+ "
                r"address (\S+)", self.up_log()):
            out[sid] = (conn, addr)
        return out

    def opened(self, name):
        """sid -> client address, from the instance's session events."""
        return dict(re.findall(r"session (\S+) opened: client (\S+)",
                               self.log(name)))

    def stop_all(self):
        for key in ("haproxy", "cm-a", "cm-b", "dup"):
            p = self.procs.get(key)
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for key in ("haproxy", "cm-a", "cm-b", "dup"):
            p = self.procs.get(key)
            if p is not None:
                try:
                    p.wait(timeout=LONG)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def where(fleet, client):
    """The instance whose log has the client's PROXY line (its address
    and its own source port), or None."""
    line = f"client {client.src} port {client.port} (through 127.0.0.1)"
    found = [n for n in ("cm-a", "cm-b") if line in fleet.log(n)]
    return found[0] if len(found) == 1 else None


async def main(xcmd, upstream, tmp, tap):
    f = Fleet(xcmd, upstream, tmp, tap)
    try:
        await scenario(f, tap)
    finally:
        for c in list(ALL):
            c.close()
        f.stop_all()
        up = f.procs.get("upstream")
        if up is not None:
            up.send_signal(signal.SIGTERM)
            try:
                rc = up.wait(timeout=LONG)
            except subprocess.TimeoutExpired:
                up.kill()
                rc = -1
            tap.check(rc == 0 and "violations=0" in f.up_log(),
                      "the upstream saw no protocol violation from either "
                      "instance", f.up_log()[-1500:])


ALL = []


def clients(users, first_src):
    out = []
    for i, u in enumerate(users):
        c = Client(u, f"127.0.{first_src[0]}.{first_src[1] + i}")
        out.append(c)
        ALL.append(c)
    return out


async def exchange(tap, pairs, tag, what):
    """Each (x, y): x writes to y and y back to x; all must arrive."""
    for i, (x, y) in enumerate(pairs):
        x.message(y.jid, f"{tag}-{i}-there")
        y.message(x.jid, f"{tag}-{i}-back")
    ok = await wait_for(lambda: all(
        y.got(f"{tag}-{i}-there") and x.got(f"{tag}-{i}-back")
        for i, (x, y) in enumerate(pairs)))
    missing = [f"{x.user}<->{y.user}" for i, (x, y) in enumerate(pairs)
               if not (y.got(f"{tag}-{i}-there") and x.got(f"{tag}-{i}-back"))]
    tap.check(ok, what, f"not exchanged: {missing}")


async def scenario(f, tap):
    env = dict(os.environ, XCM_UPSTREAM_LOG="debug")
    f.start("upstream", [f.upstream, f.path("up.port"), DOMAIN, SECRET],
            env=env)
    ok = await wait_for(lambda: read(f.path("up.port")).strip() != "")
    if not tap.check(ok, "the upstream (xcm-upstream) is up"):
        return
    f.up_port = int(read(f.path("up.port")))

    for name in ("cm-a", "cm-b"):
        f.ports[name], f.mports[name] = free_port(), free_port()
    confs = {n: f.write_conf(n, f.ports[n], f.mports[n])
             for n in ("cm-a", "cm-b")}
    for n in ("cm-a", "cm-b"):
        f.start_xcmd(n, confs[n], n + ".log")

    def ready(name):
        text = f.log(name)
        return text.count(f"upstream {name}/") >= 2 and \
            len(re.findall(rf"upstream {name}/\S+ is up", text)) >= 2 and \
            listening(f.ports[name])

    ok = await wait_for(lambda: ready("cm-a") and ready("cm-b"))
    if not tap.check(ok, "two xcmd up, each its own CM (cm-a, cm-b) with "
                     "two links to the one upstream",
                     f.log("cm-a")[-800:] + f.log("cm-b")[-800:]):
        return

    # Another machine with a copy of cm-a's config: only the port differs.
    f.write_conf("cm-a", free_port(), free_port(), "dup.conf")
    f.start_xcmd("dup", f.path("dup.conf"), "dup.log")
    conflict = ("Openfire refused this address (conflict): another "
                "connection manager is connected under the same name")
    ok = await wait_for(lambda: f.log("dup").count(conflict) >= 4)
    tap.check(ok, "a second instance with cm-a's name is refused with "
              "conflict and says why (two retries per link)",
              f.log("dup")[-1500:])
    dup = f.procs["dup"]
    dup.send_signal(signal.SIGTERM)
    dup.wait(timeout=LONG)
    pool_a = re.findall(r"testkit: (cm-a/\S+): up", f.up_log())
    tap.check(" is up" not in f.log("dup") and
              sorted(pool_a) == ["cm-a/w1-1-1", "cm-a/w1-2-1"] and
              "a second connection for this address (two CMs with one "
              "name?): refused with conflict" in f.up_log(),
              "it never joined cm-a's pool at the upstream: only cm-a's "
              "own two links are up under that name", str(pool_a))

    v2, v1 = free_port(), free_port()
    with open(f.path("haproxy.cfg"), "w") as cf:
        cf.write(HAPROXY_CFG.format(v2=v2, v1=v1, a=f.ports["cm-a"],
                                    b=f.ports["cm-b"]))
    f.start("haproxy", ["haproxy", "-db", "-f", f.path("haproxy.cfg")])
    ok = await wait_for(lambda: listening(v2) and listening(v1))
    if not tap.check(ok, "haproxy listens (send-proxy-v2 and send-proxy "
                     "frontends, checks on both instances)",
                     f.log("haproxy")):
        return

    # ---- PROXY v2: six clients, one address each --------------------
    users = [f"u{i}" for i in range(6)]
    cs = clients(users, (0, 2))  # 127.0.0.2 .. 127.0.0.7
    errors = []
    for c in cs:
        try:
            await c.login(v2)
        except (RuntimeError, OSError, asyncio.TimeoutError) as e:
            errors.append(str(e))
    if not tap.check(not errors, "six clients from six addresses log in "
                     "through haproxy (send-proxy-v2)", "\n".join(errors)):
        return
    place = {c.user: where(f, c) for c in cs}
    on_a = [c for c in cs if place[c.user] == "cm-a"]
    on_b = [c for c in cs if place[c.user] == "cm-b"]
    tap.check(len(on_a) + len(on_b) == 6 and on_a and on_b,
              "each client's own address and source port in exactly one "
              "instance's PROXY v2 line; both instances have clients",
              str(place))
    ok = await wait_for(lambda: all(c.sid in f.opened(place[c.user])
                                    for c in cs if place[c.user]) and
                        all(c.sid in f.creates() for c in cs))
    opened = {**f.opened("cm-a"), **f.opened("cm-b")}
    creates = f.creates()
    tap.check(ok and all(opened.get(c.sid) == c.src for c in cs),
              "the session events in xcmd's log carry each client's own "
              "address", str({c.src: opened.get(c.sid) for c in cs}))
    tap.check(ok and all(creates[c.sid][1] == c.src and
                         creates[c.sid][0].startswith(place[c.user] + "/")
                         for c in cs if c.sid in creates),
              "the upstream's session create names the client's own "
              "address, from the instance that holds its connection",
              str({c.src: creates.get(c.sid) for c in cs}) + f" {place}")
    tap.check(not any(a == "127.0.0.1" for _, a in creates.values()),
              "no session create names haproxy's address",
              str(creates))

    # Stream ids: 40 more through the balancer, from 40 more addresses.
    sids = [c.sid for c in cs]
    for i in range(40):
        sid = await header_only(v2, f"127.0.1.{i + 1}")
        sids.append(sid)
    spread = await wait_for(lambda: len(f.opened("cm-a")) >= 10 and
                            len(f.opened("cm-b")) >= 10)
    sid_ok = all(s is not None and re.fullmatch(r"[A-Za-z0-9_-]{22}", s)
                 for s in sids)
    tap.check(spread and sid_ok and len(set(sids)) == len(sids),
              "46 stream ids over both instances: all distinct, 22 "
              "base64url characters (128 random bits) each",
              f"{sids} a={len(f.opened('cm-a'))} b={len(f.opened('cm-b'))}")

    # max_per_address = 1 on each instance: three connections from one
    # address (127.0.0.9) through haproxy, which spreads them 2 and 1.
    held = clients(["p0", "p1", "p2"], (0, 9))
    for c in held:
        c.src = "127.0.0.9"
    got = []
    for c in held:
        await c.open(v2)
        c.send(HEADER)
        await wait_for(lambda: SID_RE.search(c.buf) is not None or c.eof)
        got.append(SID_RE.search(c.buf) is not None)
    by_limit = 'xcm_clients_refused_by_limit_total{limit="max_per_address"}'
    # Each worker publishes its counters every 250 ms.
    await wait_for(lambda: metric(f.mports["cm-a"], by_limit) +
                   metric(f.mports["cm-b"], by_limit) >= 1)
    refused_a = metric(f.mports["cm-a"], by_limit)
    refused_b = metric(f.mports["cm-b"], by_limit)
    # Closed right after the connect, the refused one may look like a
    # failed connect to a loaded HAProxy, which then tries it again on
    # either instance (retries 3): 1 to 4 refusals, all of 127.0.0.9's
    # third connection.
    tap.check(sorted(got) == [False, True, True] and
              1 <= refused_a + refused_b <= 4,
              "max_per_address counts the client's address: the third "
              "connection from 127.0.0.9 is refused, while the 46 before it, "
              "all from haproxy's one address, were not",
              f"accepted={got} refused a={refused_a} b={refused_b}\n" +
              "\n".join(line for line in f.log("haproxy").splitlines()
                        if "127.0.0.9" in line))
    for c in held:
        c.close()
        ALL.remove(c)
    # HAProxy's checks (every 200 ms) connect and reset; some resets
    # beat the accept. None of them is a stranger.
    untrusted = [metric(f.mports[n], "xcm_proxy_untrusted_total")
                 for n in ("cm-a", "cm-b")]
    checks = len(re.findall(r"a connection reset before it was accepted",
                            f.log("cm-a") + f.log("cm-b")))
    tap.check(untrusted == [0, 0], "haproxy's health checks are not counted "
              "as untrusted PROXY sources",
              f"xcm_proxy_untrusted_total {untrusted}; {checks} checks reset "
              "before the accept")

    pairs = [(x, y) for x, y in zip(cs, cs[1:] + cs[:1])]
    await exchange(tap, pairs, "pre", "messages go between all six, across "
                   "the two instances")

    # ---- drain cm-a ---------------------------------------------------
    for c in cs:
        c.buf = b""
    f.procs["cm-a"].send_signal(signal.SIGUSR2)
    hap_down = await wait_for(lambda: re.search(
        r"Server be_v2/a is DOWN", f.log("haproxy")) is not None)
    tap.check(hap_down, "haproxy's check takes the drained cm-a out",
              f.log("haproxy")[-1000:])
    ok = await wait_for(lambda: all(c.eof for c in on_a))
    tap.check(ok and all(b"system-shutdown" in c.buf and
                         b"draining" in c.buf for c in on_a),
              f"every client on cm-a ({len(on_a)}) gets system-shutdown "
              "and is closed", str({c.user: c.buf[-200:] for c in on_a}))
    rc = await asyncio.get_event_loop().run_in_executor(
        None, lambda: f.procs["cm-a"].wait(timeout=LONG))
    tap.check(rc == 0 and "drained: every session has ended" in
              f.log("cm-a"), "cm-a drains and exits 0",
              f.log("cm-a")[-1000:])

    deadline = time.monotonic() + LONG
    errors = []
    for c in on_a:
        e = await c.login_retrying(v2, deadline)
        if e is not None:
            errors.append(f"{c.user}: {e}")
    moved = {c.user: where(f, c) for c in on_a}
    tap.check(not errors and all(v == "cm-b" for v in moved.values()),
              "each of them logs in again through haproxy and lands on cm-b",
              f"{errors} {moved}")
    ok = await wait_for(lambda: all(c.sid in f.creates() for c in on_a))
    creates = f.creates()
    tap.check(ok and all(creates[c.sid][0].startswith("cm-b/") and
                         creates[c.sid][1] == c.src for c in on_a),
              "their new sessions are cm-b's at the upstream, with their "
              "own addresses", str({c.user: creates.get(c.sid)
                                    for c in on_a}))
    tap.check(not any(c.eof or c.stream_error() for c in on_b),
              f"the clients on cm-b ({len(on_b)}) noticed nothing",
              str({c.user: c.buf[-200:] for c in on_b}))
    pairs = [(x, y) for x, y in zip(on_a, on_b + on_b)]
    pairs += [(x, y) for x, y in zip(on_b, on_b[1:] + on_b[:1])
              if x is not y]
    await exchange(tap, pairs, "post", "the moved clients and cm-b's own "
                   "exchange messages")

    # ---- rolling upgrade: cm-a back under its name; PROXY v1 ----------
    f.start_xcmd("cm-a", f.path("cm-a.conf"), "cm-a2.log")
    ok = await wait_for(lambda: len(re.findall(
        r"upstream cm-a/\S+ is up", read(f.path("cm-a2.log")))) >= 2 and
        re.search(r"Server be_v1/a is UP", f.log("haproxy")) is not None)
    tap.check(ok and "conflict" not in read(f.path("cm-a2.log")),
              "cm-a restarted under its own name comes up without a "
              "conflict and haproxy takes it back",
              read(f.path("cm-a2.log"))[-800:] + f.log("haproxy")[-500:])

    def where2(c):
        line = f"PROXY v1: client {c.src} port {c.port} (through 127.0.0.1)"
        a, b = line in read(f.path("cm-a2.log")), line in f.log("cm-b")
        return "cm-a" if a and not b else "cm-b" if b and not a else None

    v1s = clients([f"v{i}" for i in range(4)], (0, 20))  # 127.0.0.20..23
    errors = []
    for c in v1s:
        try:
            await c.login(v1)
        except (RuntimeError, OSError, asyncio.TimeoutError) as e:
            errors.append(str(e))
    place1 = {c.user: where2(c) for c in v1s}
    tap.check(not errors and None not in place1.values(),
              "four clients log in through send-proxy (v1), each seen at "
              "its own address and port", f"{errors} {place1}")
    ok = await wait_for(lambda: all(c.sid in f.creates() for c in v1s))
    creates = f.creates()
    tap.check(ok and all(creates[c.sid][1] == c.src and
                         creates[c.sid][0].startswith(place1[c.user] + "/")
                         for c in v1s),
              "v1: each session create names the client's own address, "
              "from the instance that holds it",
              str({c.src: creates.get(c.sid) for c in v1s}))

    # Drain cm-b: its clients of both frontends move to the new cm-a.
    new_a = [c for c in v1s if place1[c.user] == "cm-a"]
    leaving = cs + [c for c in v1s if place1[c.user] == "cm-b"]
    for c in cs + v1s:
        c.buf = b""
    f.procs["cm-b"].send_signal(signal.SIGUSR2)
    ok = await wait_for(lambda: all(c.eof for c in leaving))
    tap.check(ok and all(b"system-shutdown" in c.buf for c in leaving),
              f"draining cm-b ends its {len(leaving)} clients with "
              "system-shutdown", str({c.user: (c.eof, c.buf[-120:])
                                      for c in leaving}))
    deadline = time.monotonic() + LONG
    errors = []
    for c in leaving:
        e = await c.login_retrying(v1 if c in v1s else v2, deadline)
        if e is not None:
            errors.append(f"{c.user}: {e}")
    ok = await wait_for(lambda: all(c.sid in f.creates() for c in leaving))
    creates = f.creates()
    tap.check(not errors and ok and
              all(creates[c.sid][0].startswith("cm-a/") and
                  creates[c.sid][1] == c.src for c in leaving),
              "they all log in again and land on cm-a (upstream: cm-a's, "
              "own addresses)", f"{errors} " +
              str({c.user: creates.get(c.sid) for c in leaving}))
    tap.check(not any(c.eof or c.stream_error() for c in new_a),
              f"cm-a's own v1 clients ({len(new_a)}) noticed nothing")
    everyone = cs + v1s
    pairs = list(zip(everyone, everyone[1:] + everyone[:1]))
    await exchange(tap, pairs, "last", "all ten exchange messages on cm-a")
    rc = await asyncio.get_event_loop().run_in_executor(
        None, lambda: f.procs["cm-b"].wait(timeout=LONG))
    tap.check(rc == 0, "cm-b drains and exits 0", f.log("cm-b")[-800:])

    for c in everyone:
        c.send("</stream:stream>")
    ok = await wait_for(lambda: all(c.eof for c in everyone))
    tap.check(ok, "every client's stream closes cleanly")
    a = f.procs["cm-a"]
    a.send_signal(signal.SIGTERM)
    rc = await asyncio.get_event_loop().run_in_executor(
        None, lambda: a.wait(timeout=LONG))
    tap.check(rc == 0, "cm-a stops on SIGTERM, exit 0",
              read(f.path("cm-a2.log"))[-800:])


if __name__ == "__main__":
    if shutil.which("haproxy") is None:
        print("1..0 # SKIP haproxy is not installed "
              "(. .ci/packages.sh; need_packages haproxy)")
        sys.exit(0)
    tap = Tap()
    print(f"1..{PLAN}", flush=True)
    tmp = tempfile.mkdtemp(prefix="xcm-fleet-")
    keep = os.environ.get("XCM_FLEET_KEEP")
    try:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        loop.run_until_complete(asyncio.wait_for(
            main(sys.argv[1], sys.argv[2], tmp, tap), 240))
    finally:
        if keep:
            print(f"# logs kept in {tmp}", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(1 if tap.failed or tap.n != PLAN else 0)
