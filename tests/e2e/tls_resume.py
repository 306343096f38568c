"""A returning client resumes its TLS session with the ticket it was given.

usage: tls_resume.py PORT CA

Python's ssl (OpenSSL) as the client, against a direct-TLS listener:
the first connection does a full handshake and receives a session
ticket; the second presents it and must be resumed (no certificate, no
key exchange); a third without one gets a full handshake again. Prints
TAP."""
import socket
import ssl
import sys


def connect(port, ctx, session=None):
    raw = socket.create_connection(('127.0.0.1', port), timeout=5)
    s = ctx.wrap_socket(raw, server_hostname='localhost', session=session)
    # A TLS 1.2 ticket comes within the handshake; reading nothing more
    # is needed. Close without waiting for the XMPP stream.
    sess, reused = s.session, s.session_reused
    s.close()
    return sess, reused


def main():
    port, ca = int(sys.argv[1]), sys.argv[2]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    print('1..3')
    first, reused = connect(port, ctx)
    ok = first is not None and first.has_ticket and not reused
    print(f'{"ok" if ok else "not ok"} 1 - a full handshake gives a ticket '
          f'(ticket: {first.has_ticket if first else None}, '
          f'reused: {reused})')
    second, reused = connect(port, ctx, first)
    print(f'{"ok" if reused else "not ok"} 2 - the ticket resumes the '
          f'session')
    third, reused = connect(port, ctx)
    print(f'{"ok" if third is not None and not reused else "not ok"} 3 - '
          f'without a ticket the handshake is full')
    return 0


if __name__ == '__main__':
    sys.exit(main())
