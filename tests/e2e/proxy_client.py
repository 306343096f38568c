#!/usr/bin/python3
"""Plays a load balancer against one PROXY listener of xcmd: a v1 header
naming 192.0.2.7 port 40000, then a stream header, until the features
come; then a connection without a header, which must be closed without a
byte; then the same good header from 127.0.0.2, a source the listener
does not trust (proxy_trusted), which must be closed without a byte too.
Exit 0 when all three went so.

usage: proxy_client.py PORT
"""
import socket
import sys

HDR = (b"<?xml version='1.0'?><stream:stream "
       b"xmlns:stream='http://etherx.jabber.org/streams' "
       b"xmlns='jabber:client' to='example.test' version='1.0'>")


def read_all(s, until=None):
    got = b""
    while until is None or until not in got:
        try:
            d = s.recv(4096)
        except ConnectionResetError:
            break
        if not d:
            break
        got += d
    return got


port = int(sys.argv[1])
with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
    s.sendall(b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 5222\r\n" + HDR)
    got = read_all(s, b"</stream:features>")
    if b"</stream:features>" not in got:
        print("no features after a PROXY header:", got[:200])
        sys.exit(1)
with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
    s.sendall(HDR)
    got = read_all(s)
    if got:
        print("without a header, the CM answered:", got[:200])
        sys.exit(1)
with socket.create_connection(("127.0.0.1", port), timeout=10,
                              source_address=("127.0.0.2", 0)) as s:
    s.sendall(b"PROXY TCP4 192.0.2.8 127.0.0.1 40000 5222\r\n" + HDR)
    got = read_all(s)
    if got:
        print("from an untrusted source, the CM answered:", got[:200])
        sys.exit(1)
sys.exit(0)
