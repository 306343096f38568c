#!/usr/bin/python3
"""The TCP side of the browser tests: one slixmpp client, scripted by
tests/web/browser_test.mjs over its stdin and stdout, one JSON object a
line each way.

Commands (stdin):
  {"op": "send", "to": JID, "body": TEXT}
  {"op": "send_many", "to": JID, "prefix": P, "count": N}
      N messages "P0" .. "P<N-1>", in that order
  {"op": "quit"}   close the stream, wait for the server to close, exit

Events (stdout):
  {"ev": "ready", "jid": FULL, "roster": [BARE...]}  logged in, roster
      fetched, initial presence sent
  {"ev": "message", "from": FULL, "type": T, "body": TEXT}
  {"ev": "presence", "from": FULL, "type": "available"|"unavailable"}
  {"ev": "sent", "op": OP, "count": N}  a command's stanzas are written
  {"ev": "failed", "why": TEXT}  login failed or the stream broke
  {"ev": "closed"}

Run with Debian's /usr/bin/python3 (python3-slixmpp). The server has no
TLS on loopback in these tests: PLAIN in clear is allowed, nothing else.
"""
import argparse
import asyncio
import json
import logging
import sys

import slixmpp


def emit(obj):
    sys.stdout.write(json.dumps(obj, ensure_ascii=True) + "\n")
    sys.stdout.flush()


class Peer(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password, sasl_mech="PLAIN")
        self["feature_mechanisms"].unencrypted_plain = True
        self.done = asyncio.Event()
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("presence_available", self.on_presence)
        self.add_event_handler("presence_unavailable", self.on_presence)
        self.add_event_handler("failed_auth", self.on_failed)
        self.add_event_handler("connection_failed", self.on_failed)
        self.add_event_handler("disconnected", self.on_disconnected)

    async def on_start(self, _):
        await self.get_roster()
        self.send_presence()
        emit({"ev": "ready", "jid": str(self.boundjid),
              "roster": sorted(str(j) for j in self.client_roster.keys())})

    def on_message(self, msg):
        emit({"ev": "message", "from": str(msg["from"]),
              "type": msg["type"], "body": msg["body"]})

    def on_presence(self, pres):
        kind = "unavailable" if pres["type"] == "unavailable" else "available"
        emit({"ev": "presence", "from": str(pres["from"]), "type": kind})

    def on_failed(self, why):
        emit({"ev": "failed", "why": str(why)})
        self.done.set()

    def on_disconnected(self, _):
        emit({"ev": "closed"})
        self.done.set()


async def commands(peer):
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                 sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            break
        cmd = json.loads(line)
        op = cmd["op"]
        if op == "send":
            peer.send_message(mto=cmd["to"], mbody=cmd["body"], mtype="chat")
            emit({"ev": "sent", "op": op, "count": 1})
        elif op == "send_many":
            for i in range(cmd["count"]):
                peer.send_message(mto=cmd["to"], mbody=f'{cmd["prefix"]}{i}',
                                  mtype="chat")
            emit({"ev": "sent", "op": op, "count": cmd["count"]})
        elif op == "quit":
            break
    # End the stream the polite way; the server's </stream:stream> ends
    # the connection ("disconnected" then sets done).
    peer.disconnect()
    await peer.done.wait()


async def main(args):
    user, password = args.user.split(":", 1)
    peer = Peer(f"{user}@{args.domain}/tcp-peer", password)
    peer.connect((args.host, args.port), force_starttls=False,
                 disable_starttls=True)
    await commands(peer)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--domain", required=True)
    p.add_argument("--user", required=True, help="NAME:PASSWORD")
    p.add_argument("--debug", action="store_true")
    a = p.parse_args()
    logging.basicConfig(level=logging.DEBUG if a.debug else logging.CRITICAL,
                        stream=sys.stderr)
    asyncio.run(main(a))
