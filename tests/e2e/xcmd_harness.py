"""Shared pieces of the tests that drive the xcmd binary from outside:
TAP output, waits on conditions, xcm-upstream and xcmd as processes, the
metrics endpoint, and a TCP relay the test can cut.

Every wait is on a condition, polled, bounded by a generous deadline
(the suite must pass with a CPU hog on every core); none stands for an
event the test could not otherwise see.
"""
import asyncio
import os
import re
import signal
import socket
import struct
import subprocess
import time
import urllib.request

LONG = 30.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


async def wait_for(pred, timeout=LONG):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        await asyncio.sleep(0.02)
    return pred()


class Tap:
    def __init__(self, plan):
        self.n = 0
        self.plan = plan
        self.failed = 0
        print(f"1..{plan}", flush=True)

    def check(self, ok, name, detail=""):
        self.n += 1
        print(f"{'ok' if ok else 'not ok'} {self.n} - {name}", flush=True)
        if not ok:
            self.failed += 1
            if detail:
                for line in str(detail).splitlines():
                    print(f"# {line}", flush=True)
        return ok

    def note(self, text):
        print(f"# {text}", flush=True)

    def finish(self):
        while self.n < self.plan:
            self.check(False, "not reached")


def metrics(port, prefix="xcm_sm"):
    """{name{labels}: value} of the families starting with prefix, or {}
    while the endpoint does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                    timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(" + prefix + r"\w*(?:\{[^}]*\})?) (\d+)$", line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


class Procs:
    """xcm-upstream and xcmd processes, all stopped by stop_all()."""

    def __init__(self, xcmd, upstream, tmp, domain, secret):
        self.xcmd, self.upstream = xcmd, upstream
        self.tmp, self.domain, self.secret = tmp, domain, secret
        self.procs = []

    def path(self, name):
        return os.path.join(self.tmp, name)

    def start(self, argv, log):
        f = open(self.path(log), "w")
        p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT)
        f.close()
        self.procs.append(p)
        return p

    async def start_upstream(self):
        """The upstream's port, or None."""
        port_file = self.path("up.port")
        self.start([self.upstream, port_file, self.domain, self.secret],
                   "upstream.log")
        if not await wait_for(lambda: read(port_file).strip() != ""):
            return None
        return int(read(port_file))

    async def start_xcmd(self, name, conf_text):
        """Writes name.conf from conf_text (with {port} and {mport}
        filled in), starts xcmd and waits until it is up and its metrics
        answer. Returns (port, metrics port, log path, up)."""
        port, mport = free_port(), free_port()
        conf = self.path(name + ".conf")
        with open(conf, "w") as f:
            f.write(conf_text.format(port=port, mport=mport))
        log = self.path(name + ".log")
        self.start([self.xcmd, "-c", conf], name + ".log")
        up = await wait_for(lambda: "is up" in read(log) and
                            metrics(mport) != {})
        return port, mport, log, up

    def stop_all(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


# ---- a relay the test can cut -------------------------------------------

END_MESSAGE = b"</message>"


class Pair:
    """One client connection through the relay and its own connection to
    the target. Each direction ("c2s", "s2c") forwards what it reads
    unless held; a held direction keeps reading and keeps what it read in
    held[d], never forwarded."""

    def __init__(self, relay, creader, cwriter):
        self.relay = relay
        self.creader, self.cwriter = creader, cwriter
        self.ureader = self.uwriter = None
        self.local = None  # our address towards the target
        self.seen = {"c2s": 0, "s2c": 0}  # </message> read
        self.forwarded = {"c2s": 0, "s2c": 0}  # </message> forwarded
        self.budget = {"c2s": None, "s2c": None}  # None: no limit
        self.held = {"c2s": bytearray(), "s2c": bytearray()}
        self.reading = {"c2s": asyncio.Event(), "s2c": asyncio.Event()}
        self.text = {"c2s": bytearray(), "s2c": bytearray()}
        self.closed = False
        for e in self.reading.values():
            e.set()

    def hold_after(self, direction, n):
        """Forward n more messages in that direction, then hold."""
        self.budget[direction] = n

    def pause_reading(self, direction):
        self.reading[direction].clear()

    async def pump(self, direction, reader, writer):
        carry = b""
        try:
            while True:
                await self.reading[direction].wait()
                data = await reader.read(65536)
                if not data:
                    break
                # A pause that came while the read was under way holds
                # what it brought too: nothing goes on once paused (a
                # loaded machine lets a whole burst arrive in that read).
                await self.reading[direction].wait()
                # What a match needs across reads: the end of the last.
                buf = carry + data
                ends = [m.end() - len(carry)
                        for m in re.finditer(re.escape(END_MESSAGE), buf)
                        if m.end() > len(carry)]
                carry = buf[-(len(END_MESSAGE) - 1):]
                self.seen[direction] += len(ends)
                if self.relay.keep_text:
                    self.text[direction] += data
                cut = len(data)
                if self.held[direction]:
                    cut = 0
                elif self.budget[direction] is not None:
                    left = self.budget[direction]
                    if len(ends) >= left:
                        cut = ends[left - 1] if left > 0 else 0
                        self.budget[direction] = 0
                        n = left
                    else:
                        self.budget[direction] -= len(ends)
                        n = len(ends)
                    self.forwarded[direction] += n
                else:
                    self.forwarded[direction] += len(ends)
                if cut > 0:
                    writer.write(data[:cut])
                if cut < len(data):
                    self.held[direction] += data[cut:]
        except (ConnectionError, OSError):
            pass
        # The other side went: so does this pair, at once (a reset).
        self.cut()

    def cut(self):
        """Both sockets closed with SO_LINGER 0: a reset each way, nothing
        of what was held or queued goes out, no </stream:stream>."""
        if self.closed:
            return
        self.closed = True
        for w in (self.cwriter, self.uwriter):
            if w is None:
                continue
            sock = w.get_extra_info("socket")
            try:
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    struct.pack("ii", 1, 0))
            except OSError:
                pass
            w.transport.abort()
        if self in self.relay.live:
            self.relay.live.remove(self)


class Relay:
    """Listens on a port of its own; each connection gets one of its own
    to the target. gate: new connections wait while it is clear."""

    def __init__(self, target_port, keep_text=True):
        self.target = target_port
        self.keep_text = keep_text
        self.pairs = []  # every pair, in the order they connected
        self.live = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.server = None
        self.port = None

    async def start(self):
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    async def _accept(self, creader, cwriter):
        pair = Pair(self, creader, cwriter)
        self.pairs.append(pair)
        self.live.append(pair)
        await self.gate.wait()
        # Each from an address of its own (Linux routes 127/8 to lo), so
        # that the target's log tells the connections apart.
        k = len(self.pairs) - 1
        local = (f"127.0.{1 + k // 250}.{1 + k % 250}", 0)
        try:
            pair.ureader, pair.uwriter = await asyncio.open_connection(
                "127.0.0.1", self.target, local_addr=local)
        except OSError:
            pair.cut()
            return
        if pair.closed:
            pair.cut()
            return
        pair.local = pair.uwriter.get_extra_info("sockname")[0]
        await asyncio.gather(
            pair.pump("c2s", creader, pair.uwriter),
            pair.pump("s2c", pair.ureader, cwriter))

    def current(self):
        return self.live[-1] if self.live else None

    def cut_all(self):
        for p in list(self.live):
            p.cut()

    def close(self):
        self.cut_all()
        if self.server is not None:
            self.server.close()
