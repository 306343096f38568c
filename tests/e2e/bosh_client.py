#!/usr/bin/python3
"""A BOSH XMPP client (XEP-0124, XEP-0206) over http.client, for xcmd's
end-to-end test: creates a session, logs in with SASL PLAIN, restarts,
binds, sends a message to its own full JID and waits for it to come
back, optionally reads a metrics URL while logged in (printing its
xcm_sessions lines), then terminates and expects the terminate answer.
One request under way at a time: each is held until there is something
for it, and the client polls with an empty one while it waits. With
--fresh, each request goes over a new connection (a browser's requests
may come over any of its connections; behind SO_REUSEPORT each new one
may reach any xcmd worker). Prints TAP.

usage: bosh_client.py [--fresh] HOST PORT PATH DOMAIN USER [METRICS_URL]"""
import base64
import http.client
import random
import re
import sys
import time
import urllib.request

args = sys.argv[1:]
fresh = args[:1] == ["--fresh"]
if fresh:
    args = args[1:]
host, port, path, domain, user = args[0:5]
metrics = args[5] if len(args) > 5 else None
NS = "http://jabber.org/protocol/httpbind"
n = 0
failed = 0
rid = random.randint(1000, 1000000)
sid = None
conn = http.client.HTTPConnection(host, int(port), timeout=20)


def check(ok, what, detail=""):
    global n, failed
    n += 1
    print(("ok %d - %s" if ok else "not ok %d - %s") % (n, what))
    if not ok:
        failed += 1
        if detail:
            print("# " + detail.replace("\n", "\n# "))


def post(attrs="", children=""):
    """One request; its answer's status and body."""
    global rid
    body = f"<body xmlns='{NS}' rid='{rid}'"
    rid += 1
    if sid:
        body += f" sid='{sid}'"
    body += (" " + attrs if attrs else "")
    body += f">{children}</body>" if children else "/>"
    global conn
    if fresh:
        conn.close()
        conn = http.client.HTTPConnection(host, int(port), timeout=20)
    conn.request("POST", path, body.encode(),
                 {"Content-Type": "text/xml; charset=utf-8"})
    r = conn.getresponse()
    return r.status, r.read().decode()


def until(needle, attrs="", children=""):
    """Send, then poll until an answer holds needle; all answers joined."""
    seen = []
    status, text = post(attrs, children)
    deadline = time.monotonic() + 20
    while True:
        seen.append(text)
        if needle in text or status != 200 or "type=\"terminate\"" in text:
            break
        if time.monotonic() > deadline:
            break
        status, text = post()
    return "\n".join(seen)


got = until("</stream:features>",
            f"to='{domain}' wait='10' hold='1' ver='1.6' xml:lang='en' "
            "xmpp:version='1.0' xmlns:xmpp='urn:xmpp:xbosh'")
m = re.search(r'sid="([^"]+)"', got)
sid = m.group(1) if m else None
check(sid is not None and "PLAIN" in got,
      "the session is created, its answer with features offering PLAIN", got)
plain = base64.b64encode(f"\0{user}\0{user}".encode()).decode()
got = until("<success", children="<auth xmlns='urn:ietf:params:xml:ns:"
            f"xmpp-sasl' mechanism='PLAIN'>{plain}</auth>")
check("<success" in got, "SASL PLAIN succeeds", got)
got = until("</stream:features>",
            f"xmpp:restart='true' xmlns:xmpp='urn:xmpp:xbosh' to='{domain}'")
check("xmpp-bind" in got, "the restart after SASL offers bind", got)
got = until("</jid>", children="<iq xmlns='jabber:client' type='set' "
            "id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            "<resource>bosh</resource></bind></iq>")
jid = got.split("<jid>")[1].split("</jid>")[0] if "<jid>" in got else ""
check(jid == f"{user}@{domain}/bosh", "bound", got)
got = until("b\u00f6sh &amp; back",
            children=f"<message xmlns='jabber:client' to='{jid}' "
            "type='chat'><body>b\u00f6sh &amp; back</body></message>")
check("b\u00f6sh &amp; back" in got, "a message to itself comes back over BOSH",
      got)
if metrics:
    want = 'xcm_sessions{transport="bosh"} 1'
    deadline = time.monotonic() + 10
    text = ""
    while time.monotonic() < deadline:
        text = urllib.request.urlopen(metrics, timeout=5).read().decode()
        if want in text.splitlines():
            break
        time.sleep(0.1)
    check(want in text.splitlines(), "the metrics count this BOSH session",
          "\n".join(l for l in text.splitlines() if l.startswith("xcm_sessions")))
status, got = post("type='terminate'",
                   "<presence xmlns='jabber:client' type='unavailable'/>")
check(status == 200 and 'type="terminate"' in got,
      "the terminate is answered with terminate", f"{status} {got}")
status, got = post()
check(status == 404 or "item-not-found" in got,
      "the session is gone afterwards", f"{status} {got}")
print(f"1..{n}")
sys.exit(1 if failed else 0)
