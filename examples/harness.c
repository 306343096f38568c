/* A test of your own, with libxcm and the in-process Openfire in one
 * program: no server to install, no ports to configure. It starts the
 * testkit and a CM on one libuv loop, logs a client in through a
 * transport of its own (xcm_cm_attach: no socket needed on the client's
 * side either), sends a message to itself, and checks it comes back.
 * Exits 0 when it does. */
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "xcm/testkit.h"
#include "xcm/xcm.h"

#define HDR                                                                    \
  "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' "            \
  "xmlns='jabber:client' to='example.test' version='1.0'>"

typedef struct client {
  char got[65536];
  size_t len;
  int closed;
} client;

static int on_bytes(void *ud, const char *data, size_t len) {
  client *c = ud;

  if (c->len + len >= sizeof c->got)
    return -1;
  memcpy(c->got + c->len, data, len);
  c->len += len;
  c->got[c->len] = '\0';
  return 0;
}

static void on_close(void *ud) {
  ((client *)ud)->closed = 1;
}

static void on_timer(uv_timer_t *t) {
  *(int *)t->data = 1;
}

/* Turn the loop until the client has received needle, or 5 s pass. */
static int wait_for(uv_loop_t *loop, client *c, const char *needle) {
  uv_timer_t t;
  int expired = 0;

  uv_timer_init(loop, &t);
  t.data = &expired;
  uv_timer_start(&t, on_timer, 5000, 0);
  while (strstr(c->got, needle) == NULL && !expired)
    uv_run(loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
  return strstr(c->got, needle) != NULL;
}

static void kit_closed(void *ud, xcm_testkit *kit) {
  (void)kit;
  (void)ud;
}

static void cm_closed(void *ud, xcm_cm *cm) {
  (void)cm;
  xcm_testkit_close(ud, kit_closed, NULL);
}

int main(void) {
  uv_loop_t *loop = uv_default_loop();
  xcm_testkit *kit;
  xcm_cm *cm;
  xcm_conn *conn;
  xcm_options o;
  xcm_listen_options lo;
  xcm_transport t;
  client c;
  char err[256];
  int ok;

  /* The server: Openfire's side of the CM protocol, accounts included. */
  if (xcm_testkit_new(&kit, loop, NULL, err, sizeof err) != 0) {
    fprintf(stderr, "testkit: %s\n", err);
    return 1;
  }
  xcm_testkit_add_account(kit, "alice", "alice");

  /* The CM under test, pointed at it. */
  xcm_options_init(&o, sizeof o);
  o.domain = "example.test";
  o.server_port = xcm_testkit_port(kit);
  o.name = "harness";
  o.secret = "cmsecret";
  o.connections = 1;
  o.upstream_wait_ms = 5000; /* let the client wait for the link */
  if (xcm_cm_new(&cm, loop, &o, err, sizeof err) != 0) {
    fprintf(stderr, "cm: %s\n", err);
    return 1;
  }
  xcm_listen_options_init(&lo, sizeof lo);
  lo.port = 0;
  xcm_cm_listen(cm, &lo, err, sizeof err);
  xcm_cm_start(cm);

  /* A client on a transport of our own. */
  memset(&c, 0, sizeof c);
  t.size = sizeof t;
  t.write = on_bytes;
  t.close = on_close;
  t.ud = &c;
  xcm_cm_attach(cm, 0, &t, "harness", &conn);
  xcm_conn_input(conn, HDR, strlen(HDR));
  ok = wait_for(loop, &c, "</stream:features>");
  if (ok) {
    static const char auth[] = "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl'"
                               " mechanism='PLAIN'>AGFsaWNlAGFsaWNl</auth>";
    xcm_conn_input(conn, auth, sizeof auth - 1);
    ok = wait_for(loop, &c, "<success");
  }
  if (ok) {
    static const char rest[] =
        "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'"
        "><resource>h</resource></bind></iq><message to='alice@example.test/"
        "h'><body>hello, harness</body></message>";
    xcm_conn_input(conn, HDR, strlen(HDR));
    xcm_conn_input(conn, rest, sizeof rest - 1);
    ok = wait_for(loop, &c, "hello, harness");
  }
  if (!ok)
    fprintf(stderr, "received: %s\n", c.got);
  printf("%s - a message through libxcm and the in-process Openfire\n",
         ok ? "ok 1" : "not ok 1");
  xcm_cm_shutdown(cm, 1000, cm_closed, kit);
  uv_run(loop, UV_RUN_DEFAULT);
  xcm_cm_free(cm);
  /* The testkit also judged every byte the CM sent upstream. */
  if (xcm_testkit_first_violation(kit) != NULL) {
    printf("not ok 2 - the CM broke the protocol upstream: %s\n",
           xcm_testkit_first_violation(kit));
    ok = 0;
  } else {
    printf("ok 2 - the CM kept to the protocol upstream\n");
  }
  xcm_testkit_free(kit);
  return ok ? 0 : 1;
}
