#!/usr/bin/python3
"""Two slixmpp clients chat through libxcm and the in-process upstream.

Run by the test suite with Debian's /usr/bin/python3 (python3-slixmpp).
Prints TAP. Accounts alice/alice and bob/bob must exist, each on the
other's roster.
"""
import argparse
import asyncio
import logging
import ssl
import sys
import time

import slixmpp

SPECIAL = "<b>&amp; \"quoted\" 'apos' > \u00fcmlaut \u2603 \U0001F600"


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, mech, ca):
        super().__init__(jid, password, sasl_mech=mech)
        self.messages = []
        self.available = set()
        self.unavailable = {}
        self.got_message = asyncio.Event()
        self.started = asyncio.Event()
        self.failed = asyncio.Event()
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("presence_available", self.on_available)
        self.add_event_handler("presence_unavailable", self.on_unavailable)
        self.add_event_handler("failed_auth", lambda _: self.failed.set())
        self.register_plugin("xep_0199")
        ctx = ssl.create_default_context(cafile=ca) if ca else \
            ssl.create_default_context()
        if not ca:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        self.ssl_context = ctx

    async def on_start(self, _):
        await self.get_roster()
        self.send_presence()
        self.started.set()

    def on_message(self, msg):
        if msg["type"] in ("chat", "normal"):
            self.messages.append(msg["body"])
            self.got_message.set()

    def on_available(self, pres):
        self.available.add(pres["from"].bare)

    def on_unavailable(self, pres):
        self.unavailable[pres["from"].bare] = time.monotonic()


class Tap:
    def __init__(self):
        self.n = 0
        self.failed = 0

    def check(self, ok, name, detail=""):
        self.n += 1
        if ok:
            print(f"ok {self.n} - {name}", flush=True)
        else:
            self.failed += 1
            print(f"not ok {self.n} - {name}", flush=True)
            if detail:
                print(f"# {detail}", flush=True)


async def wait_for(pred, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        await asyncio.sleep(0.02)
    return pred()


async def main(args):
    tap = Tap()
    print("1..9", flush=True)
    direct = args.tls == "direct"
    clear = args.tls == "none"
    alice = Client(f"alice@{args.domain}/slix", "alice", args.mech, args.ca)
    bob = Client(f"bob@{args.domain}/slix", "bob", args.mech, args.ca)
    for c in (alice, bob):
        if clear:
            # The demo has no TLS: allow PLAIN in clear, on loopback only.
            c["feature_mechanisms"].unencrypted_plain = True
            c.connect((args.host, args.port), force_starttls=False,
                      disable_starttls=True)
        else:
            c.connect((args.host, args.port), use_ssl=direct,
                      force_starttls=not direct, disable_starttls=direct)
    ok = await wait_for(lambda: alice.started.is_set() and bob.started.is_set(),
                        10)
    tap.check(ok, f"both log in ({args.mech}, {args.tls})",
              f"alice={alice.started.is_set()} bob={bob.started.is_set()}")
    if not ok:
        return tap
    tap.check("bob@" + args.domain in alice.client_roster.keys(),
              "alice's roster lists bob", str(list(alice.client_roster.keys())))
    ok = await wait_for(lambda: "bob@" + args.domain in alice.available and
                        "alice@" + args.domain in bob.available, 5)
    tap.check(ok, "each sees the other's presence",
              f"{alice.available} {bob.available}")

    alice.send_message(mto=bob.boundjid, mbody=SPECIAL, mtype="chat")
    ok = await wait_for(lambda: SPECIAL in bob.messages, 5)
    tap.check(ok, "non-ASCII and escaped characters arrive intact",
              repr(bob.messages[-1:]))

    big = "".join(chr(0x41 + i % 26) for i in range(60000))
    bob.send_message(mto=alice.boundjid, mbody=big, mtype="chat")
    ok = await wait_for(lambda: big in alice.messages, 10)
    tap.check(ok, "a 60 KB body arrives whole")

    bob.messages.clear()
    for i in range(500):
        alice.send_message(mto=bob.boundjid, mbody=f"seq {i}", mtype="chat")
    ok = await wait_for(lambda: len(bob.messages) >= 500, 20)
    tap.check(ok and bob.messages[:500] == [f"seq {i}" for i in range(500)],
              "500 messages in a row arrive in order",
              f"got {len(bob.messages)}")

    # A message to a bare JID reaches the available resource.
    bob.messages.clear()
    alice.send_message(mto=f"bob@{args.domain}", mbody="bare", mtype="chat")
    ok = await wait_for(lambda: "bare" in bob.messages, 5)
    tap.check(ok, "a message to the bare JID arrives")

    # Drop alice without </stream:stream>: bob must see her go.
    t0 = time.monotonic()
    alice.transport.abort()
    ok = await wait_for(lambda: "alice@" + args.domain in bob.unavailable, 3)
    took = bob.unavailable.get("alice@" + args.domain, t0 + 99) - t0
    tap.check(ok and took < 1.0,
              "a dropped client shows as unavailable within a second",
              f"took {took:.3f}s")
    bob.disconnect()
    ok = await wait_for(lambda: not bob.is_connected(), 5)
    tap.check(ok, "bob closes his stream cleanly")
    return tap


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--domain", default="example.test")
    p.add_argument("--mech", default="PLAIN")
    p.add_argument("--tls", choices=["starttls", "direct", "none"],
                   default="starttls")
    p.add_argument("--ca", default=None)
    p.add_argument("--debug", action="store_true")
    a = p.parse_args()
    logging.basicConfig(level=logging.DEBUG if a.debug else logging.CRITICAL)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    result = loop.run_until_complete(asyncio.wait_for(main(a), 60))
    sys.exit(1 if result.failed else 0)
