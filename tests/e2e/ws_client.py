#!/usr/bin/python3
"""A WebSocket XMPP client (RFC 6455 framing, RFC 7395) on a raw socket,
for xcmd's end-to-end test: upgrades with the xmpp subprotocol, logs in
with SASL PLAIN, binds, sends a message to its own full JID and waits
for it to come back, optionally reads a metrics URL while logged in
(printing its xcm_sessions lines), then closes with <close/> and expects
the server's <close/> and a Close frame with status 1000. Prints TAP.

usage: ws_client.py HOST PORT PATH DOMAIN USER [METRICS_URL]"""
import base64
import os
import socket
import struct
import sys
import time
import urllib.request

host, port, path, domain, user = sys.argv[1:6]
metrics = sys.argv[6] if len(sys.argv) > 6 else None
FR = "urn:ietf:params:xml:ns:xmpp-framing"
n = 0
failed = 0


def check(ok, what, detail=""):
    global n, failed
    n += 1
    print(("ok %d - %s" if ok else "not ok %d - %s") % (n, what))
    if not ok:
        failed += 1
        if detail:
            print("# " + detail.replace("\n", "\n# "))


s = socket.create_connection((host, int(port)), timeout=10)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
           "Sec-WebSocket-Protocol: xmpp\r\n\r\n").encode())
buf = b""
while b"\r\n\r\n" not in buf:
    chunk = s.recv(4096)
    if not chunk:
        break
    buf += chunk
head, _, buf = buf.partition(b"\r\n\r\n")
check(head.startswith(b"HTTP/1.1 101") and b"Sec-WebSocket-Protocol: xmpp" in head,
      "the upgrade is accepted with the xmpp subprotocol", head.decode(errors="replace"))


def send(text, op=1):
    data = text.encode()
    mask = os.urandom(4)
    h = bytes([0x80 | op])
    if len(data) < 126:
        h += bytes([0x80 | len(data)])
    elif len(data) < 65536:
        h += bytes([0x80 | 126]) + struct.pack(">H", len(data))
    else:
        h += bytes([0x80 | 127]) + struct.pack(">Q", len(data))
    s.sendall(h + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))


close_status = None


def frame():
    """The next frame: (opcode, payload), or None at the end."""
    global buf
    while True:
        if len(buf) >= 2:
            ln, hl = buf[1] & 0x7f, 2
            if ln == 126 and len(buf) >= 4:
                ln, hl = struct.unpack(">H", buf[2:4])[0], 4
            elif ln == 127 and len(buf) >= 10:
                ln, hl = struct.unpack(">Q", buf[2:10])[0], 10
            if ln < 126 or hl > 2:
                if len(buf) >= hl + ln:
                    op, data = buf[0] & 0xf, buf[hl:hl + ln]
                    buf = buf[hl + ln:]
                    return op, data
        chunk = s.recv(65536)
        if not chunk:
            return None
        buf += chunk


def until(needle):
    """Messages up to the one holding needle; None if the stream ended."""
    global close_status
    seen = []
    while True:
        f = frame()
        if f is None:
            return None
        op, data = f
        if op == 8:
            close_status = struct.unpack(">H", data[:2])[0] if len(data) >= 2 else 1005
            return None
        if op == 1:
            text = data.decode()
            seen.append(text)
            if needle in text:
                return "\n".join(seen)


OPEN = f"<open xmlns='{FR}' to='{domain}' version='1.0'/>"
send(OPEN)
got = until("</stream:features>")
check(got is not None and "<open " in got and "PLAIN" in got,
      "<open/> is answered with <open/> and features offering PLAIN", str(got))
plain = base64.b64encode(f"\0{user}\0{user}".encode()).decode()
send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{plain}</auth>")
got = until("<success")
check(got is not None, "SASL PLAIN succeeds", str(got))
send(OPEN)
got = until("</stream:features>")
check(got is not None and "xmpp-bind" in got, "the restart after SASL offers bind", str(got))
send("<iq xmlns='jabber:client' type='set' id='b1'><bind "
     "xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>ws</resource></bind></iq>")
got = until("</jid>")
jid = got.split("<jid>")[1].split("</jid>")[0] if got else ""
check(jid == f"{user}@{domain}/ws", "bound", str(got))
send(f"<message xmlns='jabber:client' to='{jid}' type='chat'>"
     "<body>w\u00e9bsocket &amp; back</body></message>")
got = until("w\u00e9bsocket &amp; back")
check(got is not None, "a message to itself comes back over the WebSocket", str(got))
if metrics:
    # Each worker publishes its statistics now and then: poll until this
    # session shows, with a deadline.
    want = 'xcm_sessions{transport="websocket"} 1'
    deadline = time.monotonic() + 10
    text = ""
    while time.monotonic() < deadline:
        text = urllib.request.urlopen(metrics, timeout=5).read().decode()
        if want in text.splitlines():
            break
        time.sleep(0.1)
    check(want in text.splitlines(), "the metrics count this WebSocket session",
          "\n".join(l for l in text.splitlines() if l.startswith("xcm_sessions")))
send(f"<close xmlns='{FR}'/>")
got = until("<close ")
check(got is not None, "<close/> is answered with <close/>", str(got))
until("never")
check(close_status == 1000, "then the WebSocket closes with 1000", str(close_status))
print(f"1..{n}")
sys.exit(1 if failed else 0)
