#!/usr/bin/python3
"""Logs in (SASL ANONYMOUS) over a plain stream, writes READY to the file
given, then prints everything the server sends until it closes."""
import socket
import sys

host, port, domain, ready = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
hdr = ("<stream:stream xmlns:stream='http://etherx.jabber.org/streams' "
       f"xmlns='jabber:client' to='{domain}' version='1.0'>").encode()
s = socket.create_connection((host, port), timeout=10)


def until(needle):
    data = b""
    while needle not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise SystemExit("closed before " + needle.decode())
        data += chunk
    return data


s.sendall(hdr)
until(b"</stream:features>")
s.sendall(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='ANONYMOUS'/>")
until(b"<success")
s.sendall(hdr)
until(b"</stream:features>")
s.sendall(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
until(b"</iq>")
open(ready, "w").write("READY\n")
s.settimeout(30)
rest = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    rest += chunk
print(rest.decode(errors="replace"))
