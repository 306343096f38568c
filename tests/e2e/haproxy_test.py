#!/usr/bin/python3
"""Real clients through the real HAProxy to libxcm's PROXY listeners.

Starts e2e-server with XCM_E2E_PROXY=127.0.0.1 (both its listeners
require a PROXY header, taken from 127.0.0.1 alone: proxy_trusted), then Debian's haproxy on loopback in TCP mode with two
frontends: one to the STARTTLS listener with send-proxy (v1), one to the
direct TLS listener with send-proxy-v2. Two slixmpp clients log in
through them and chat. The CM must report each client as the address and
source port the client has, not HAProxy's own connection to it: every
process here is on 127.0.0.1, so the ports tell them apart. A connection
straight to the CM without a header is refused without a byte, and one
from 127.0.0.2, not trusted, with a valid header is closed unread.

usage: haproxy_test.py E2E_SERVER CERTDIR
Prints TAP; run with Debian's /usr/bin/python3 (python3-slixmpp).
"""
import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from slix_chat import Client, Tap  # noqa: E402


STREAM_HEADER = (b"<?xml version='1.0'?><stream:stream "
                 b"xmlns:stream='http://etherx.jabber.org/streams' "
                 b"xmlns='jabber:client' to='example.test' version='1.0'>")


def send_unheard(port, prefix, source="127.0.0.1"):
    """Connect straight to the CM from source, send prefix and a stream
    header, and return what came back before the close (b"" expected)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5,
                                  source_address=(source, 0)) as s:
        s.sendall(prefix + STREAM_HEADER)
        try:
            return s.recv(100)
        except ConnectionResetError:
            return b""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port):
    """Whether something listens on 127.0.0.1:port (from /proc/net/tcp)."""
    want = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1] == want and fields[3] == "0A":
                return True
    return False


async def wait_for(pred, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        await asyncio.sleep(0.02)
    return pred()


def local_port(client):
    return client.transport.get_extra_info("sockname")[1]


HAPROXY_CFG = """
global
    maxconn 64
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend v1
    bind 127.0.0.1:{v1}
    default_backend cm_v1
backend cm_v1
    server cm 127.0.0.1:{plain} send-proxy
frontend v2
    bind 127.0.0.1:{v2}
    default_backend cm_v2
backend cm_v2
    server cm 127.0.0.1:{tls} send-proxy-v2
"""


async def main(server, certs, tmp, tap):
    log_path = os.path.join(tmp, "server.log")
    ports_path = os.path.join(tmp, "ports")
    # HAProxy connects from 127.0.0.1: the only source trusted.
    env = dict(os.environ, XCM_E2E_PROXY="127.0.0.1")
    log = open(log_path, "w")
    srv = subprocess.Popen(
        [server, ports_path, os.path.join(certs, "server.pem"),
         os.path.join(certs, "server-key.pem"), "PLAIN,SCRAM-SHA-1", "none"],
        stderr=log, env=env)
    procs = [srv]
    try:
        ok = await wait_for(lambda: os.path.exists(ports_path) and
                            os.path.getsize(ports_path) > 0, 10)
        tap.check(ok, "e2e-server is up with PROXY listeners")
        if not ok:
            return
        with open(ports_path) as f:
            plain, tls = (int(x) for x in f.read().split())
        v1, v2 = free_port(), free_port()
        cfg = os.path.join(tmp, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(HAPROXY_CFG.format(v1=v1, v2=v2, plain=plain, tls=tls))
        hap = subprocess.Popen(["haproxy", "-db", "-f", cfg],
                               stdout=subprocess.DEVNULL,
                               stderr=open(os.path.join(tmp, "haproxy.log"),
                                           "w"))
        procs.append(hap)
        ok = await wait_for(lambda: listening(v1) and listening(v2), 10)
        tap.check(ok, "haproxy listens (send-proxy, send-proxy-v2)")
        if not ok:
            return

        ca = os.path.join(certs, "ca.pem")
        alice = Client("alice@example.test/hap", "alice", "SCRAM-SHA-1", ca)
        bob = Client("bob@example.test/hap", "bob", "PLAIN", ca)
        alice.connect(("127.0.0.1", v1), use_ssl=False, force_starttls=True,
                      disable_starttls=False)
        bob.connect(("127.0.0.1", v2), use_ssl=True, force_starttls=False,
                    disable_starttls=True)
        ok = await wait_for(lambda: alice.started.is_set() and
                            bob.started.is_set(), 15)
        tap.check(ok, "both log in through haproxy (v1 STARTTLS, v2 direct "
                  "TLS)", f"alice={alice.started.is_set()} "
                  f"bob={bob.started.is_set()}")
        if not ok:
            return
        alice.send_message(mto=bob.boundjid, mbody="through the balancer",
                           mtype="chat")
        ok = await wait_for(lambda: "through the balancer" in bob.messages, 5)
        tap.check(ok, "a message goes from one to the other")

        ap, bp = local_port(alice), local_port(bob)
        with open(log_path) as f:
            text = f.read()
        seen = re.findall(r"PROXY v(\d): client (\S+) port (\d+) "
                          r"\(through (\S+)\)", text)
        got = {(int(v), a, int(p)) for v, a, p, _ in seen}
        tap.check((1, "127.0.0.1", ap) in got,
                  "v1: the CM sees alice's own address and source port",
                  f"alice's port {ap}; the CM saw {sorted(got)}")
        tap.check((2, "127.0.0.1", bp) in got,
                  "v2: the CM sees bob's own address and source port",
                  f"bob's port {bp}; the CM saw {sorted(got)}")
        tap.check(len(seen) == 2 and all(t == "127.0.0.1" for *_, t in seen),
                  "exactly two proxied connections, both from haproxy",
                  str(seen))
        peers = re.findall(r"session opened peer=(\S+)", text)
        tap.check(peers == ["127.0.0.1", "127.0.0.1"],
                  "the session events carry the header's address", str(peers))

        # Straight to the CM, bypassing the balancer: refused unheard.
        data = send_unheard(plain, b"")
        tap.check(data == b"", "a client without a PROXY header is closed "
                  "before a byte of XMPP", repr(data[:60]))

        # A perfectly good header from a source not in proxy_trusted
        # (127.0.0.2: Linux routes all of 127/8 to lo): closed as soon as
        # it is accepted, the header never read.
        data = send_unheard(plain, b"PROXY TCP4 192.0.2.99 127.0.0.1 40000 "
                            b"5222\r\n", source="127.0.0.2")
        tap.check(data == b"", "a valid PROXY header from an untrusted "
                  "source is closed with nothing sent", repr(data[:60]))
        ok = await wait_for(lambda: "127.0.0.2: not a trusted PROXY source"
                            in open(log_path).read(), 5)
        text = open(log_path).read()
        tap.check(ok and "192.0.2.99" not in text,
                  "the untrusted source is logged, its header never read",
                  text[-600:].replace("\n", "|"))

        alice.disconnect()
        bob.disconnect()
        ok = await wait_for(lambda: not alice.is_connected() and
                            not bob.is_connected(), 5)
        tap.check(ok, "both close their streams")
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=10) for p in procs]
        log.close()
        tap.check(codes[0] == 0, "e2e-server stops cleanly",
                  open(log_path).read()[-2000:].replace("\n", "|"))


if __name__ == "__main__":
    if shutil.which("haproxy") is None:
        print("1..0 # SKIP haproxy is not installed "
              "(. .ci/packages.sh; need_packages haproxy)")
        sys.exit(0)
    tap = Tap()
    print("1..13", flush=True)
    tmp = tempfile.mkdtemp()
    try:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        loop.run_until_complete(asyncio.wait_for(
            main(sys.argv[1], sys.argv[2], tmp, tap), 60))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(1 if tap.failed or tap.n != 13 else 0)
