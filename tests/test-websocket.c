/* WebSocket clients end to end (RFC 6455, RFC 7395): an HTTP listener
 * of a CM in front of the testkit, and clients over real loopback
 * sockets that upgrade, frame by hand (masked, as a browser does), log
 * in with SASL PLAIN and chat with a TCP client. The framing itself is
 * test-ws.c's and the HTTP server test-http.c's; here is what joins
 * them to the sessions (lib/web/websocket.c). */
#define _GNU_SOURCE /* memmem */
#include <linux/sockios.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "harness.h"
#include "rawclient.h"
#include "world.h"

#include "core/ctx.h"
#include "transport/stream.h"
#include "transport/tls.h"
#include "util/buf.h"
#include "xcm/error.h"

#define WAIT_MS 5000
#define FR "urn:ietf:params:xml:ns:xmpp-framing"
#define OPEN "<open xmlns='" FR "' to='example.test' version='1.0'/>"
#define CLOSE "<close xmlns='" FR "'/>"
#define AUTH_ALICE                                                             \
  "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "                            \
  "mechanism='PLAIN'>AGFsaWNlAGFsaWNl</auth>"

/* ---- a counting allocator for the CM: footprints ------------------------- */

static long long heap_live;

static void *count_realloc(void *ud, void *ptr, size_t size) {
  char *p = ptr ? (char *)ptr - 16 : NULL;
  size_t old = p ? *(size_t *)p : 0;
  char *q;

  (void)ud;
  if (size == 0) {
    if (p != NULL)
      heap_live -= (long long)old;
    free(p);
    return NULL;
  }
  q = realloc(p, size + 16);
  if (q == NULL)
    return NULL;
  heap_live += (long long)size - (long long)old;
  *(size_t *)q = size;
  return q + 16;
}

static const xcm_allocator counting = {sizeof(xcm_allocator), count_realloc,
                                       NULL};

/* ---- the world: the testkit's CM and its HTTP listeners ------------------ */

typedef struct world {
  xcm_test_world w;
  xcm_ctx ctx; /* the clients' streams */
  int ctx_closed;
  int http_port;   /* listener 1: plain, any origin */
  int strict_port; /* listener 2: only https://good.example */
  int wss_port;    /* listener 3: TLS */
  xcm_tls_config *client_tls;
} world;

/* Small only for the tests that need them so. */
static size_t max_client_out = 1024 * 1024;
static unsigned rate = 200, burst = 1000;
static unsigned rate_bytes = 262144, burst_bytes = 1048576;
static int sm_enable;

static void tune(xcm_options *o, void *ud) {
  (void)ud;
  o->alloc = &counting;
  o->max_stanza = 65536;
  o->max_client_out = max_client_out;
  o->rate = rate;
  o->burst = burst;
  o->rate_bytes = rate_bytes;
  o->burst_bytes = burst_bytes;
  o->sm_enable = sm_enable;
}

static void world_start(world *w) {
  xcm_test_world_setup s = {.seed = 11, .tune = tune};
  xcm_listen_options lo;
  xcm_tls_options to;
  char err[512];

  memset(w, 0, sizeof *w);
  xcm_test_world_start(&w->w, &s);
  xcm_listen_options_init(&lo, sizeof lo);
  lo.host = "127.0.0.1";
  lo.http = 1;
  REQUIRE(xcm_cm_listen(w->w.cm, &lo, err, sizeof err) == 0);
  w->http_port = xcm_cm_listener_port(w->w.cm, 1);
  lo.http_origins = "https://good.example";
  REQUIRE(xcm_cm_listen(w->w.cm, &lo, err, sizeof err) == 0);
  w->strict_port = xcm_cm_listener_port(w->w.cm, 2);
  xcm_listen_options_init(&lo, sizeof lo);
  lo.host = "127.0.0.1";
  lo.http = 1;
  lo.cert_file = xcm_test_cert("server.pem");
  lo.key_file = xcm_test_cert("server-key.pem");
  if (xcm_cm_listen(w->w.cm, &lo, err, sizeof err) != 0)
    xcm_test_note("%s", err);
  w->wss_port = xcm_cm_listener_port(w->w.cm, 3);
  REQUIRE(w->wss_port > 0);
  REQUIRE(xcm__ctx_init(&w->ctx, &w->w.loop, NULL) == 0);
  memset(&to, 0, sizeof to);
  to.ca_file = xcm_test_cert("ca.pem");
  to.verify = 1;
  to.alpn = "http/1.1";
  REQUIRE(xcm__tls_config_new(&w->client_tls, &w->ctx, 0, &to, err,
                              sizeof err) == 0);
}

static void ctx_closed(xcm_ctx *ctx) {
  world *w = (world *)((char *)ctx - offsetof(world, ctx));

  w->ctx_closed = 1;
}

static int is_set(void *ud) {
  return *(int *)ud;
}

static void world_stop(world *w) {
  xcm__tls_config_unref(w->client_tls);
  xcm__ctx_close(&w->ctx, ctx_closed);
  CHECK(xcm_test_run_until(&w->w.loop, is_set, &w->ctx_closed, WAIT_MS));
  xcm_test_world_stop(&w->w, 1000);
}

static xcm_stats stats(world *w) {
  xcm_stats st;

  xcm_cm_stats(w->w.cm, &st, sizeof st);
  return st;
}

/* ---- a WebSocket client, framing by hand -------------------------------- */

static const char *bfind(const xcm_buf *b, const char *needle) {
  if (b->data == NULL)
    return NULL;
  return memmem(b->data, b->len, needle, strlen(needle));
}

typedef struct wsc {
  world *w;
  xcm_stream *s;
  xcm_buf in;   /* every byte received */
  size_t hdr;   /* the end of the HTTP response in in, once seen */
  size_t off;   /* frames decoded up to here */
  xcm_buf msgs; /* the text of every message, each followed by '\n' */
  int nmsgs;
  int close_seen;
  unsigned close_status;
  int ended, closed, tls_done;
} wsc;

static void c_read(void *ud, const char *data, size_t len) {
  wsc *c = ud;

  REQUIRE(xcm__buf_append(&c->in, data, len) == 0);
}

static void c_end(void *ud, int err) {
  wsc *c = ud;

  (void)err;
  c->ended = 1;
  xcm__stream_close(c->s);
}

static void c_tls(void *ud, int err) {
  ((wsc *)ud)->tls_done = err == 0 ? 1 : -1;
}

static void c_closed(void *ud) {
  ((wsc *)ud)->closed = 1;
}

static const xcm_stream_cb c_cb = {c_read, c_end, c_tls, NULL, c_closed};

/* One client frame, masked unless unmasked. */
static void frame_ex(xcm_buf *b, int fin, int op, const void *data, size_t len,
                     int unmasked) {
  unsigned char h[14], key[4] = {0x5a, 0x13, 0xc7, 0x02};
  const unsigned char *d = data;
  size_t n = 0, i;

  h[n++] = (unsigned char)((fin ? 0x80 : 0) | (op & 0xf));
  if (len < 126) {
    h[n++] = (unsigned char)((unmasked ? 0 : 0x80) | len);
  } else if (len < 65536) {
    h[n++] = (unsigned char)((unmasked ? 0 : 0x80) | 126);
    h[n++] = (unsigned char)(len >> 8);
    h[n++] = (unsigned char)len;
  } else {
    h[n++] = (unsigned char)((unmasked ? 0 : 0x80) | 127);
    for (i = 0; i < 8; i++)
      h[n++] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
  }
  if (!unmasked) {
    memcpy(h + n, key, 4);
    n += 4;
  }
  REQUIRE(xcm__buf_append(b, h, n) == 0);
  REQUIRE(xcm__buf_reserve(b, len) == 0);
  for (i = 0; i < len; i++)
    b->data[b->len + i] = (char)(unmasked ? d[i] : d[i] ^ key[i % 4]);
  b->len += len;
}

static void c_frame(wsc *c, int fin, int op, const void *data, size_t len,
                    int unmasked) {
  xcm_buf b;

  xcm__buf_init(&b, NULL);
  frame_ex(&b, fin, op, data, len, unmasked);
  xcm__stream_write(c->s, b.data, b.len);
  xcm__buf_free(&b);
}

static void c_text(wsc *c, const char *s) {
  c_frame(c, 1, 1, s, strlen(s), 0);
}

/* Decode what came since the last call: text messages into msgs, a
 * Close into close_seen/close_status. */
static void decode(wsc *c) {
  for (;;) {
    const unsigned char *p = (const unsigned char *)c->in.data + c->off;
    size_t avail = c->in.len - c->off, hl = 2, i;
    uint64_t len;

    if (c->hdr == 0 || avail < 2)
      return;
    len = p[1] & 0x7f;
    if (len == 126) {
      if (avail < 4)
        return;
      len = (uint64_t)p[2] << 8 | p[3];
      hl = 4;
    } else if (len == 127) {
      if (avail < 10)
        return;
      for (len = 0, i = 0; i < 8; i++)
        len = len << 8 | p[2 + i];
      hl = 10;
    }
    if (avail < hl + len)
      return;
    CHECK((p[1] & 0x80) == 0); /* a server never masks */
    if ((p[0] & 0xf) == 8) {
      c->close_seen = 1;
      c->close_status = len >= 2 ? (unsigned)(p[hl] << 8 | p[hl + 1]) : 1005;
    } else if ((p[0] & 0xf) == 1 || (p[0] & 0xf) == 0) {
      REQUIRE(xcm__buf_append(&c->msgs, p + hl, (size_t)len) == 0);
      if (p[0] & 0x80) {
        REQUIRE(xcm__buf_append(&c->msgs, "\n", 2) == 0);
        c->msgs.len--;
        c->nmsgs++;
      }
    }
    c->off += hl + (size_t)len;
  }
}

typedef struct want {
  wsc *c;
  const char *needle;
} want;

static int has_http(void *ud) {
  wsc *c = ud;

  return c->ended || bfind(&c->in, "\r\n\r\n") != NULL;
}

/* Whether needle is in the messages (or the connection ended). */
static int has_msg(void *ud) {
  want *wt = ud;

  decode(wt->c);
  return (wt->c->msgs.data && strstr(wt->c->msgs.data, wt->needle)) ||
         wt->c->ended;
}

static int wait_msg(wsc *c, const char *needle) {
  want wt = {c, needle};

  xcm_test_run_until(&c->w->w.loop, has_msg, &wt, WAIT_MS);
  return c->msgs.data != NULL && strstr(c->msgs.data, needle) != NULL;
}

static int has_close(void *ud) {
  wsc *c = ud;

  decode(c);
  return c->close_seen || c->ended;
}

/* Wait for the server's Close: its status, or 0 if none came. */
static unsigned wait_close(wsc *c) {
  xcm_test_run_until(&c->w->w.loop, has_close, c, WAIT_MS);
  return c->close_seen ? c->close_status : 0;
}

static int tls_ready(void *ud) {
  return ((wsc *)ud)->tls_done != 0 || ((wsc *)ud)->ended;
}

/* Connect and send an upgrade to path with protocol and origin (either
 * may be NULL); the response's status, 0 if none came. */
static int c_open_ex(wsc *c, world *w, int port, int tls, const char *path,
                     const char *protocol, const char *origin) {
  struct sockaddr_in sa;
  char req[1024];
  int n, status = 0;

  memset(c, 0, sizeof *c);
  c->w = w;
  xcm__buf_init(&c->in, NULL);
  xcm__buf_init(&c->msgs, NULL);
  uv_ip4_addr("127.0.0.1", port, &sa);
  REQUIRE(xcm__stream_connect(&c->s, &w->ctx, (struct sockaddr *)&sa, &c_cb,
                              NULL, c, NULL) == 0);
  if (tls) {
    REQUIRE(xcm__stream_start_tls(c->s, w->client_tls, 0, "example.test", NULL,
                                  0) == 0);
    REQUIRE(xcm_test_run_until(&w->w.loop, tls_ready, c, WAIT_MS));
    REQUIRE(c->tls_done == 1);
  }
  n = snprintf(req, sizeof req,
               "GET %s HTTP/1.1\r\nHost: example.test\r\n"
               "Upgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\n",
               path);
  if (protocol != NULL)
    n += snprintf(req + n, sizeof req - (size_t)n,
                  "Sec-WebSocket-Protocol: %s\r\n", protocol);
  if (origin != NULL)
    n += snprintf(req + n, sizeof req - (size_t)n, "Origin: %s\r\n", origin);
  n += snprintf(req + n, sizeof req - (size_t)n, "\r\n");
  xcm__stream_write(c->s, req, (size_t)n);
  xcm_test_run_until(&w->w.loop, has_http, c, WAIT_MS);
  if (c->in.len >= 12 && memcmp(c->in.data, "HTTP/1.1 ", 9) == 0)
    status = atoi(c->in.data + 9);
  {
    const char *e = bfind(&c->in, "\r\n\r\n");

    if (e != NULL)
      c->hdr = c->off = (size_t)(e - c->in.data) + 4;
  }
  return status;
}

static int c_open(wsc *c, world *w, const char *path) {
  return c_open_ex(c, w, w->http_port, 0, path, "xmpp", NULL);
}

static void c_free(wsc *c) {
  if (!c->closed) {
    if (!c->ended)
      xcm__stream_close(c->s);
    CHECK(xcm_test_run_until(&c->w->w.loop, is_set, &c->closed, WAIT_MS));
  }
  xcm__buf_free(&c->in);
  xcm__buf_free(&c->msgs);
}

/* SASL PLAIN, the restart, bind of resource and a session: 1 when done. */
static int ws_login(wsc *c, const char *auth, const char *resource) {
  char buf[512];

  c_text(c, OPEN);
  if (!wait_msg(c, "</stream:features>"))
    return 0;
  c_text(c, auth);
  if (!wait_msg(c, "<success"))
    return 0;
  c_text(c, OPEN);
  if (!wait_msg(c, "urn:ietf:params:xml:ns:xmpp-bind"))
    return 0;
  snprintf(buf, sizeof buf,
           "<iq xmlns='jabber:client' type='set' id='b1'><bind "
           "xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>%s</resource>"
           "</bind></iq>",
           resource);
  c_text(c, buf);
  c_text(c, "<iq xmlns='jabber:client' type='set' id='s1'><session "
            "xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>");
  c_text(c, "<presence xmlns='jabber:client'/>");
  return wait_msg(c, "s1");
}

/* ---- the cases ------------------------------------------------------------
 */

static void test_login_chat_close(void) {
  world w;
  wsc c;
  xcm_raw bob;
  xcm_stats st;

  world_start(&w);
  REQUIRE(c_open(&c, &w, "/ws/") == 101);
  CHECK(bfind(&c.in, "Sec-WebSocket-Protocol: xmpp") != NULL);
  REQUIRE(ws_login(&c, AUTH_ALICE, "web"));
  /* The first <open/> answered with an <open/> and no STARTTLS on a
   * plain listener without a certificate. */
  CHECK(strstr(c.msgs.data, "<open ") != NULL);
  CHECK(strstr(c.msgs.data, "starttls") == NULL);
  REQUIRE(xcm_raw_open(&bob, &w.w.loop, "127.0.0.1", w.w.port, 1));
  REQUIRE(xcm_raw_login(&bob, XCM_RAW_HDR, XCM_RAW_AUTH_BOB, "tcp"));
  st = stats(&w);
  CHECK_INT(st.sessions_websocket_now, 1);
  CHECK_INT(st.sessions_tcp_now, 1);
  CHECK_INT(st.sessions_bosh_now, 0);
  CHECK_INT(st.sessions_custom_now, 0);
  CHECK_INT(st.clients_now, 2);
  CHECK_INT(st.clients_tls_now, 0);
  /* TCP to WebSocket: one message per element, xmlns on it. */
  xcm_raw_sends(&bob, "<message to='alice@example.test/web' type='chat'>"
                      "<body>h\xc3\xa9llo &amp; &lt;ws&gt;</body></message>");
  CHECK(wait_msg(&c, "h\xc3\xa9llo &amp; &lt;ws&gt;"));
  CHECK(strstr(c.msgs.data, "jabber:client") != NULL);
  /* WebSocket to TCP. */
  c_text(&c, "<message xmlns='jabber:client' to='bob@example.test/tcp' "
             "type='chat'><body>from the browser</body></message>");
  CHECK(xcm_raw_wait(&bob, "from the browser", WAIT_MS));
  /* 200 in a row, in order. */
  for (int i = 0; i < 200; i++) {
    char m[160];

    snprintf(m, sizeof m,
             "<message to='alice@example.test/web' type='chat'>"
             "<body>n%03d</body></message>",
             i);
    xcm_raw_sends(&bob, m);
  }
  CHECK(wait_msg(&c, "n199"));
  {
    const char *prev = c.msgs.data;
    int ok = 1;

    for (int i = 0; i < 200; i++) {
      char m[8];
      const char *at;

      snprintf(m, sizeof m, "n%03d", i);
      at = strstr(prev, m);
      ok = ok && at != NULL;
      if (at != NULL)
        prev = at;
    }
    CHECK(ok);
  }
  /* <close/>: ours comes back, then the Close 1000. */
  c_text(&c, CLOSE);
  CHECK(wait_msg(&c, "<close xmlns=\"" FR "\"/>"));
  CHECK_INT(wait_close(&c), 1000);
  c_free(&c);
  xcm_raw_free(&bob);
  st = stats(&w);
  CHECK_INT(st.sessions_websocket_now, 0);
  CHECK_INT(st.websocket_upgrades, 1);
  world_stop(&w);
}

/* The other path, and a message split over three frames. */
static void test_fragments(void) {
  world w;
  wsc c;
  const char *open = OPEN;
  size_t n = strlen(open);

  world_start(&w);
  REQUIRE(c_open(&c, &w, "/xmpp-websocket") == 101);
  c_frame(&c, 0, 1, open, 10, 0);
  c_frame(&c, 0, 0, open + 10, 20, 0);
  c_frame(&c, 1, 0, open + 30, n - 30, 0);
  CHECK(wait_msg(&c, "</stream:features>"));
  CHECK(bfind(&c.msgs, "<open ") != NULL);
  c_free(&c);
  world_stop(&w);
}

static void test_wrong_subprotocol(void) {
  world w;
  wsc c;
  unsigned before = xcm_test_failures();
  int status;

  world_start(&w);
  status = c_open_ex(&c, &w, w.http_port, 0, "/ws/", "chat", NULL);
  CHECK(status != 101 && status >= 400);
  c_free(&c);
  status = c_open_ex(&c, &w, w.http_port, 0, "/ws/", NULL, NULL);
  CHECK(status != 101 && status >= 400);
  c_free(&c);
  CHECK_INT(stats(&w).clients_now, 0);
  xcm_test_tried("malformed-http", before);
  world_stop(&w);
}

static void test_bad_origin(void) {
  world w;
  wsc c;
  unsigned before = xcm_test_failures();

  world_start(&w);
  CHECK_INT(c_open_ex(&c, &w, w.strict_port, 0, "/ws/", "xmpp",
                      "https://evil.example"),
            403);
  c_free(&c);
  xcm_test_tried("malformed-http", before);
  CHECK_INT(c_open_ex(&c, &w, w.strict_port, 0, "/ws/", "xmpp",
                      "https://good.example"),
            101);
  c_text(&c, OPEN);
  CHECK(wait_msg(&c, "</stream:features>"));
  c_free(&c);
  world_stop(&w);
}

/* A broken frame closes the WebSocket with its code; the session goes. */
static void broken(int op, const void *data, size_t len, int unmasked,
                   unsigned want_status) {
  world w;
  wsc c;
  unsigned before = xcm_test_failures();

  world_start(&w);
  REQUIRE(c_open(&c, &w, "/ws/") == 101);
  c_text(&c, OPEN);
  REQUIRE(wait_msg(&c, "</stream:features>"));
  CHECK_INT(stats(&w).sessions_websocket_now, 1);
  c_frame(&c, 1, op, data, len, unmasked);
  CHECK_INT(wait_close(&c), want_status);
  c_free(&c);
  CHECK_INT(stats(&w).sessions_websocket_now, 0);
  CHECK_INT(stats(&w).clients_now, 0);
  xcm_test_tried("websocket-frames", before);
  world_stop(&w);
}

static void test_unmasked(void) {
  broken(1, "<presence xmlns='jabber:client'/>", 33, 1, 1002);
}

static void test_oversized(void) {
  size_t n = 200000;
  char *big = malloc(n);

  REQUIRE(big != NULL);
  memset(big, 'a', n);
  broken(1, big, n, 0, 1009);
  free(big);
}

static void test_invalid_utf8(void) {
  broken(1, "<message xmlns='jabber:client'><body>\xc3\x28</body></message>",
         53, 0, 1007);
}

static void test_binary(void) {
  broken(2, "<presence/>", 11, 0, 1003);
}

/* RFC 7395 section 3.6: the error element, then <close/>, then the
 * WebSocket's Close, in that order. */
static void test_stream_error(void) {
  world w;
  wsc c;
  const char *e, *cl;
  unsigned before = xcm_test_failures();

  world_start(&w);
  REQUIRE(c_open(&c, &w, "/ws/") == 101);
  c_text(&c, OPEN);
  REQUIRE(wait_msg(&c, "</stream:features>"));
  c_text(&c, "<message xmlns='jabber:client'><body>unclosed</message>");
  CHECK(wait_close(&c) != 0);
  CHECK(c.close_status != 1000);
  e = strstr(c.msgs.data, "<stream:error");
  cl = strstr(c.msgs.data, "<close xmlns=\"" FR "\"/>");
  CHECK(e != NULL && strstr(e, "not-well-formed") != NULL);
  CHECK(e != NULL && cl != NULL && e < cl);
  c_free(&c);
  CHECK_INT(stats(&w).stream_errors[XCM_COND_NOT_WELL_FORMED], 1);
  xcm_test_tried("malformed-xml", before);
  world_stop(&w);
}

/* Over TLS (WSS): secure from the first byte, so no STARTTLS, and it
 * counts in clients_tls_now, in and out. */
static void test_wss_secure(void) {
  world w;
  wsc c;

  world_start(&w);
  REQUIRE(c_open_ex(&c, &w, w.wss_port, 1, "/ws/", "xmpp", NULL) == 101);
  c_text(&c, OPEN);
  REQUIRE(wait_msg(&c, "</stream:features>"));
  CHECK(strstr(c.msgs.data, "starttls") == NULL);
  CHECK(strstr(c.msgs.data, "PLAIN") != NULL);
  CHECK_INT(stats(&w).clients_tls_now, 1);
  CHECK_INT(stats(&w).sessions_websocket_now, 1);
  c_text(&c, CLOSE);
  CHECK_INT(wait_close(&c), 1000);
  c_free(&c);
  CHECK_INT(stats(&w).clients_tls_now, 0);
  CHECK_INT(stats(&w).clients_now, 0);
  world_stop(&w);
}

/* A WebSocket client that stops reading while a TCP client floods it:
 * the WebSocket's output fills (XCM_EBUSY, the client keeps what
 * follows), the client goes over max_client_out and is dropped, and
 * what it did not get goes back to the server as <failed/>; the sender
 * is not harmed. */
static int returned(void *ud) {
  world *w = ud;

  return stats(w).failed_returned > 0 && stats(w).sessions_websocket_now == 0;
}

static void test_backpressure_out(void) {
  world w;
  wsc c;
  xcm_raw bob;
  char body[4096 + 1], m[4300];
  unsigned before = xcm_test_failures();
  int i;

  max_client_out = 64 * 1024;
  world_start(&w);
  REQUIRE(c_open(&c, &w, "/ws/") == 101);
  REQUIRE(ws_login(&c, AUTH_ALICE, "slow"));
  REQUIRE(xcm_raw_open(&bob, &w.w.loop, "127.0.0.1", w.w.port, 1));
  REQUIRE(xcm_raw_login(&bob, XCM_RAW_HDR, XCM_RAW_AUTH_BOB, "fast"));
  xcm__stream_pause(c.s);
  memset(body, 'x', sizeof body - 1);
  body[sizeof body - 1] = '\0';
  /* Far more than the socket buffers, the WebSocket's queue and
   * max_client_out together hold: 4 MiB. */
  for (i = 0; i < 1024; i++) {
    snprintf(m, sizeof m,
             "<message to='alice@example.test/slow' type='chat'>"
             "<body>%d %s</body></message>",
             i, body);
    xcm_raw_sends(&bob, m);
  }
  CHECK(xcm_test_run_until(&w.w.loop, returned, &w, 20000));
  CHECK(stats(&w).stream_errors[XCM_COND_POLICY_VIOLATION] +
            stats(&w).stream_errors[XCM_COND_RESOURCE_CONSTRAINT] >=
        1);
  CHECK(!bob.eof);
  CHECK_INT(stats(&w).sessions_tcp_now, 1);
  xcm_test_tried("slow-reader", before);
  xcm_raw_free(&bob);
  c_free(&c);
  world_stop(&w);
  max_client_out = 1024 * 1024;
}

/* Nothing lost without a <failed/>: a WebSocket client stops reading
 * while a TCP client sends it FLOOD_N messages of 16 KB (more than the
 * kernel's buffers, the WebSocket's queue and max_client_out hold
 * together); it is dropped past max_client_out. Then it reads again
 * what reached its socket, to the end. Every message is either read by
 * it or stored offline from a <failed/> (the testkit's Openfire), each
 * exactly once: the first ones read, in order, the rest given back, in
 * order. The drop sends no reset, so the kernel's share reaches the
 * client; the one message the drop may cut in the middle (partly in
 * the kernel) is the only one allowed in neither. */
#define FLOOD_N 900
#define FLOOD_BODY 16000

typedef struct tally {
  world *w;
  wsc *c;
  int n;              /* messages sent */
  char seen[FLOOD_N]; /* 1: read by the client, 2: failed, 3+: twice */
  int read, failed, twice, read_order, failed_order;
} tally;

/* The number after "<body>" in each message from p on, in order. */
static void count_bodies(tally *t, const char *p, size_t len, int how) {
  const char *end = p + len;
  int last = -1;

  while ((p = memmem(p, (size_t)(end - p), "<body>", 6)) != NULL) {
    int id = atoi(p + 6);

    p += 6;
    if (id < 0 || id >= FLOOD_N)
      continue;
    if (t->seen[id] != 0)
      t->twice++;
    t->seen[id] = (char)(t->seen[id] + how);
    if (how == 1) {
      t->read++;
      t->read_order += id != last + 1;
    } else {
      t->failed++;
      t->failed_order += id <= last;
    }
    last = id;
  }
}

static void tally_now(tally *t) {
  unsigned i, n = xcm_testkit_offline_count(t->w->w.kit, "alice");
  int last = -1;

  memset(t->seen, 0, sizeof t->seen);
  t->read = t->failed = t->twice = t->read_order = t->failed_order = 0;
  decode(t->c);
  if (t->c->msgs.data != NULL)
    count_bodies(t, t->c->msgs.data, t->c->msgs.len, 1);
  for (i = 0; i < n; i++) {
    size_t len;
    const char *m = xcm_testkit_offline_message(t->w->w.kit, "alice", i, &len);
    const char *b = m != NULL ? memmem(m, len, "<body>", 6) : NULL;
    int id = b != NULL ? atoi(b + 6) : -1;

    if (id < 0 || id >= FLOOD_N)
      continue;
    if (t->seen[id] != 0)
      t->twice++;
    t->seen[id] = (char)(t->seen[id] + 2);
    t->failed++;
    t->failed_order += id <= last;
    last = id;
  }
}

/* The client read to its end, and the last message came back. */
static int flood_settled(void *ud) {
  tally *t = ud;

  if (!t->c->ended)
    return 0;
  tally_now(t);
  return t->seen[t->n - 1] != 0 && t->read + t->failed >= t->n - 1;
}

/* The last message came back. */
static int flood_settled_failed(void *ud) {
  tally *t = ud;

  tally_now(t);
  return t->seen[t->n - 1] != 0;
}

/* The testkit has read all that bob sent. */
static int kit_has(void *ud) {
  tally *t = ud;
  xcm_testkit_stats ks;

  xcm_testkit_get_stats(t->w->w.kit, &ks, sizeof ks);
  return ks.routes_in >= (uint64_t)t->n;
}

static void test_slow_reader_nothing_lost(void) {
  world w;
  wsc c;
  xcm_raw bob;
  static tally t;
  static char body[FLOOD_BODY + 1], m[FLOOD_BODY + 200];
  unsigned before = xcm_test_failures();
  int i, first_failed = FLOOD_N;
  uint64_t base;

  max_client_out = 256 * 1024;
  rate = burst = 100000;
  rate_bytes = burst_bytes = 1u << 30;
  world_start(&w);
  REQUIRE(c_open(&c, &w, "/ws/") == 101);
  REQUIRE(ws_login(&c, AUTH_ALICE, "slow"));
  REQUIRE(xcm_raw_open(&bob, &w.w.loop, "127.0.0.1", w.w.port, 1));
  REQUIRE(xcm_raw_login(&bob, XCM_RAW_HDR, XCM_RAW_AUTH_BOB, "fast"));
  /* Forget what the login read: only the flood is counted. */
  decode(&c);
  c.msgs.len = 0;
  xcm__stream_pause(c.s);
  memset(body, 'x', sizeof body - 1);
  memset(&t, 0, sizeof t);
  t.w = &w;
  t.c = &c;
  {
    xcm_testkit_stats ks;

    xcm_testkit_get_stats(w.w.kit, &ks, sizeof ks);
    base = ks.routes_in;
  }
  /* In rounds of 20, each read by the testkit before the next, until
   * the client is dropped: no message is then still on its way from
   * bob when alice's session ends (the testkit would route those to a
   * session the CM closed, which is not this case's subject). */
  for (i = 0; i < FLOOD_N && !returned(&w); i++) {
    snprintf(m, sizeof m,
             "<message to='alice@example.test/slow' type='chat'>"
             "<body>%d %s</body></message>",
             i, body);
    xcm_raw_sends(&bob, m);
    if (i % 20 == 19) {
      t.n = (int)base + i + 1;
      REQUIRE(xcm_test_run_until(&w.w.loop, kit_has, &t, 20000));
    }
  }
  t.n = i;
  CHECK(xcm_test_run_until(&w.w.loop, returned, &w, 20000));
  /* It reads again: what reached its socket is its own. */
  xcm__stream_resume(c.s);
  CHECK(xcm_test_run_until(&w.w.loop, flood_settled, &t, 20000));
  tally_now(&t);
  for (i = 0; i < t.n; i++)
    if (t.seen[i] == 2 && i < first_failed)
      first_failed = i;
  xcm_test_note("%d sent: read %d, failed %d (from #%d), lost %d, twice %d",
                t.n, t.read, t.failed, first_failed, t.n - t.read - t.failed,
                t.twice);
  CHECK_INT(t.twice, 0);
  CHECK_INT(t.read_order, 0);
  CHECK_INT(t.failed_order, 0);
  /* The WebSocket's queue held some when it was dropped: the messages
   * it gave back come right after the last one read, or after the one
   * the drop cut. */
  CHECK(t.failed > 0);
  CHECK(first_failed == t.read || first_failed == t.read + 1);
  CHECK(t.n - t.read - t.failed <= 1);
  CHECK(stats(&w).stream_errors[XCM_COND_POLICY_VIOLATION] >= 1);
  CHECK(!bob.eof);
  xcm_test_tried("slow-reader", before);
  xcm_raw_free(&bob);
  c_free(&c);
  world_stop(&w);
  max_client_out = 1024 * 1024;
  rate = 200;
  burst = 1000;
  rate_bytes = 262144;
  burst_bytes = 1048576;
}

/* The most bytes the kernel lets one TCP socket hold for sending. */
static long kernel_send_max(void) {
  FILE *f = fopen("/proc/sys/net/ipv4/tcp_wmem", "r");
  long lo, def, max = 4 << 20;

  if (f != NULL) {
    if (fscanf(f, "%ld %ld %ld", &lo, &def, &max) != 3)
      max = 4 << 20;
    fclose(f);
  }
  return max;
}

/* The bytes the kernel holds between the CM and the one WebSocket client
 * on port: what the CM's socket has not sent yet (SIOCOUTQNSD: sent but
 * not acknowledged is already in the client's queue) and what the
 * client's has not read (FIONREAD). Both sockets are in this process:
 * found among its descriptors by their addresses. -1 if not found. */
static long kernel_holds(int port) {
  long out = -1, in = -1;
  int fd, cport = -1;

  for (int pass = 0; pass < 2; pass++) {
    for (fd = 3; fd < 1024; fd++) {
      struct sockaddr_in me, peer;
      socklen_t ml = sizeof me, pl = sizeof peer;
      int v;

      if (getsockname(fd, (struct sockaddr *)&me, &ml) != 0 ||
          getpeername(fd, (struct sockaddr *)&peer, &pl) != 0 ||
          me.sin_family != AF_INET)
        continue;
      if (pass == 0 && ntohs(peer.sin_port) == port &&
          ioctl(fd, FIONREAD, &v) == 0) {
        in = v;
        cport = ntohs(me.sin_port);
      } else if (pass == 1 && ntohs(me.sin_port) == port &&
                 ntohs(peer.sin_port) == cport &&
                 ioctl(fd, SIOCOUTQNSD, &v) == 0) {
        out = v;
      }
    }
  }
  return in < 0 || out < 0 ? -1 : in + out;
}

static int all_routed(void *ud) {
  tally *t = ud;

  return stats(t->w).stanzas_out >= (uint64_t)t->n;
}

/* The same flood, but the client is not dropped (max_client_out is far
 * above it): every message reaches the client layer, and what the
 * kernel does not take waits in the WebSocket's queue and in what the
 * client keeps. Then the WebSocket client resets. What the queue and
 * the client held comes back, each once and in order, the queue's
 * first: the messages given back are exactly the last ones sent. Lost:
 * the first ones, which the kernel held (the reset discards them), at
 * most what its buffers hold (the server's send buffer, tcp_wmem's
 * maximum, and the client's receive buffer, bounded here at 4 MiB). */
static void test_reset_nothing_lost(void) {
  world w;
  wsc c;
  xcm_raw bob;
  static tally t;
  static char body[FLOOD_BODY + 1], m[FLOOD_BODY + 200];
  unsigned before = xcm_test_failures();
  int i, n, first_failed = -1, suffix = 1;
  uint64_t out0;
  long held, frame = 0, acc;
  int turns;

  n = (int)(kernel_send_max() / FLOOD_BODY) + 64;
  if (n > FLOOD_N)
    n = FLOOD_N;
  max_client_out = 64u << 20;
  rate = burst = 100000;
  rate_bytes = burst_bytes = 1u << 30;
  world_start(&w);
  REQUIRE(c_open(&c, &w, "/ws/") == 101);
  REQUIRE(ws_login(&c, AUTH_ALICE, "slow"));
  REQUIRE(xcm_raw_open(&bob, &w.w.loop, "127.0.0.1", w.w.port, 1));
  REQUIRE(xcm_raw_login(&bob, XCM_RAW_HDR, XCM_RAW_AUTH_BOB, "fast"));
  memset(body, 'x', sizeof body - 1);
  /* One like those of the flood, to learn the size of their frames. */
  snprintf(m, sizeof m,
           "<message to='alice@example.test/slow' type='chat'>"
           "<body>100 %s</body></message>",
           body);
  xcm_raw_sends(&bob, m);
  REQUIRE(wait_msg(&c, "<body>100 "));
  {
    const char *b = strstr(c.msgs.data, "<body>100 ");
    const char *a = b, *z = strstr(b, "</message>");

    while (a > c.msgs.data && a[-1] != '\n')
      a--;
    REQUIRE(z != NULL);
    frame = (long)(z + 10 - a) + 4; /* a 16-bit length: 4 header bytes */
  }
  decode(&c);
  c.msgs.len = 0;
  xcm__stream_pause(c.s);
  memset(&t, 0, sizeof t);
  t.w = &w;
  t.c = &c;
  out0 = stats(&w).stanzas_out;
  for (i = 0; i < n; i++) {
    snprintf(m, sizeof m,
             "<message to='alice@example.test/slow' type='chat'>"
             "<body>%d %s</body></message>",
             i, body);
    xcm_raw_sends(&bob, m);
  }
  t.n = (int)out0 + n;
  REQUIRE(xcm_test_run_until(&w.w.loop, all_routed, &t, 20000));
  CHECK_INT(stats(&w).failed_returned, 0);
  /* Let the kernel take what it will: turns of the loop until what it
   * holds reads the same three times running (bytes on their way from
   * one socket to the other between the two readings count in
   * neither). */
  for (i = 0, held = -2, turns = 0; i < 3 && turns < 100000; turns++) {
    long h;

    uv_run(&w.w.loop, UV_RUN_NOWAIT);
    h = kernel_holds(w.http_port);
    i = h == held ? i + 1 : 0;
    held = h;
  }
  /* Reset: what the client socket holds is discarded with it. */
  xcm__stream_abort(c.s);
  c.ended = 1; /* it reads nothing more */
  t.n = n;
  CHECK(xcm_test_run_until(&w.w.loop, flood_settled_failed, &t, 20000));
  tally_now(&t);
  for (i = 0; i < n; i++) {
    if (t.seen[i] == 2 && first_failed < 0)
      first_failed = i;
    if (first_failed >= 0 && t.seen[i] != 2)
      suffix = 0;
  }
  xcm_test_note("%d sent: read %d, failed %d (from #%d), lost %d, twice %d", n,
                t.read, t.failed, first_failed, n - t.read - t.failed, t.twice);
  CHECK_INT(t.twice, 0);
  CHECK_INT(t.failed_order, 0);
  CHECK_INT(t.read, 0);
  CHECK(t.failed > 0);
  CHECK(suffix);
  CHECK((long)(n - t.failed) * FLOOD_BODY <= kernel_send_max() + (4l << 20));
  /* Exactly the messages the kernel had a byte of are lost: the
   * frames from the first on, each as long as the probe's less the
   * digits its number lacks, until held bytes are covered. */
  for (i = 0, acc = 0; i < n && acc < held; i++)
    acc += frame - (i < 10 ? 2 : i < 100 ? 1 : 0);
  xcm_test_note("the kernel held %ld bytes: %d frames", held, i);
  CHECK(held >= 0);
  CHECK_INT(n - t.failed, i);
  CHECK_INT(stats(&w).sessions_websocket_now, 0);
  CHECK(!bob.eof);
  xcm_test_tried("slow-reader", before);
  xcm_raw_free(&bob);
  c_free(&c);
  world_stop(&w);
  max_client_out = 1024 * 1024;
  rate = 200;
  burst = 1000;
  rate_bytes = 262144;
  burst_bytes = 1048576;
}

/* Over its rate a WebSocket client is shaped, not cut: the client
 * pauses the WebSocket (it stops reading its socket) until the budget
 * refills, and every message arrives, in order. */
static void test_backpressure_in(void) {
  world w;
  wsc c;
  xcm_raw bob;
  unsigned before = xcm_test_failures();
  int i, ok = 1;
  const char *prev;

  rate = 50;
  burst = 10;
  world_start(&w);
  REQUIRE(c_open(&c, &w, "/ws/") == 101);
  REQUIRE(ws_login(&c, AUTH_ALICE, "fast"));
  REQUIRE(xcm_raw_open(&bob, &w.w.loop, "127.0.0.1", w.w.port, 1));
  REQUIRE(xcm_raw_login(&bob, XCM_RAW_HDR, XCM_RAW_AUTH_BOB, "tcp"));
  for (i = 0; i < 60; i++) {
    char m[200];

    snprintf(m, sizeof m,
             "<message xmlns='jabber:client' to='bob@example.test/tcp' "
             "type='chat'><body>r%02d</body></message>",
             i);
    c_text(&c, m);
  }
  CHECK(xcm_raw_wait(&bob, "r59", 20000));
  for (i = 0, prev = bob.in.data; i < 60 && prev != NULL; i++) {
    char m[8];

    snprintf(m, sizeof m, "r%02d<", i);
    prev = strstr(prev, m);
    ok = ok && prev != NULL;
  }
  CHECK(ok);
  CHECK(stats(&w).reads_shaped >= 1);
  CHECK_INT(stats(&w).sessions_websocket_now, 1);
  xcm_test_tried("rate-flood", before);
  xcm_raw_free(&bob);
  c_free(&c);
  world_stop(&w);
  rate = 200;
  burst = 1000;
}

/* A shutdown with a WebSocket client that never answers the Close: the
 * client gets system-shutdown, <close/> and the Close; the instance's
 * shutdown completes only once that WebSocket is closed (after its
 * close timeout), never while its stream is still on the context. */
typedef struct shut {
  wsc *c;
  int *down;
} shut;

static int ended_or_down(void *ud) {
  shut *sd = ud;

  return sd->c->ended || *sd->down;
}

static void test_shutdown_silent_client(void) {
  world w;
  wsc c;
  shut sd;
  int down = 0;

  world_start(&w);
  REQUIRE(c_open(&c, &w, "/ws/") == 101);
  REQUIRE(ws_login(&c, AUTH_ALICE, "silent"));
  xcm_test_cm_shutdown(w.w.cm, 1000, &down);
  CHECK(wait_close(&c) != 0);
  CHECK(strstr(c.msgs.data, "system-shutdown") != NULL);
  CHECK(strstr(c.msgs.data, "<close xmlns=\"" FR "\"/>") != NULL);
  /* Our client reads on and never sends its Close: the server closes
   * the connection after its close timeout, and only then may the
   * shutdown finish (its context closes a turn of the loop later). */
  sd.c = &c;
  sd.down = &down;
  CHECK(xcm_test_run_until(&w.w.loop, ended_or_down, &sd, 15000));
  CHECK(c.ended);
  CHECK_INT(down, 0);
  c_free(&c);
  xcm__tls_config_unref(w.client_tls);
  xcm__ctx_close(&w.ctx, ctx_closed);
  CHECK(xcm_test_run_until(&w.w.loop, is_set, &w.ctx_closed, WAIT_MS));
  xcm_test_world_end(&w.w.loop, w.w.cm, w.w.kit, &down);
}

/* What an idle, logged-in session costs the CM, over WebSocket and over
 * TCP: the heap of the instance (its allocator) divided by sessions. */
#define IDLE_N 20

static void test_idle_footprint(void) {
  world w;
  static wsc cs[IDLE_N];
  static xcm_raw rs[IDLE_N];
  long long base, ws_each, tcp_each;
  int ok = 1;

  world_start(&w);
  base = heap_live;
  for (int i = 0; i < IDLE_N && ok; i++) {
    char res[16];

    snprintf(res, sizeof res, "w%d", i);
    ok = c_open(&cs[i], &w, "/ws/") == 101 && ws_login(&cs[i], AUTH_ALICE, res);
  }
  REQUIRE(ok);
  CHECK_INT(stats(&w).sessions_websocket_now, IDLE_N);
  ws_each = (heap_live - base) / IDLE_N;
  base = heap_live;
  for (int i = 0; i < IDLE_N && ok; i++) {
    char res[16];

    snprintf(res, sizeof res, "t%d", i);
    ok = xcm_raw_open(&rs[i], &w.w.loop, "127.0.0.1", w.w.port, 1) &&
         xcm_raw_login(&rs[i], XCM_RAW_HDR, XCM_RAW_AUTH_ALICE, res);
  }
  REQUIRE(ok);
  tcp_each = (heap_live - base) / IDLE_N;
  xcm_test_note("footprint websocket=%lld tcp=%lld bytes per idle session",
                ws_each, tcp_each);
  /* No frame buffers and no parser held between messages. */
  CHECK(ws_each < 8192);
  CHECK(ws_each < tcp_each + 4096);
  for (int i = 0; i < IDLE_N; i++) {
    c_free(&cs[i]);
    xcm_raw_free(&rs[i]);
  }
  world_stop(&w);
}

static int one_detached(void *ud) {
  return stats(ud).sm_detached_now == 1;
}

static int acked(void *ud) {
  return stats(ud).sm_acks_received == 1;
}

static uint64_t out0;

static int routed_one_more(void *ud) {
  return stats(ud).stanzas_out == out0 + 1;
}

/* XEP-0198 over WebSocket: acknowledgements, a connection reset, and a
 * resume on a new WebSocket; every message once, in order. */
static void test_sm_resume(void) {
  world w;
  wsc c, c2;
  xcm_raw bob;
  char id[64], buf[256];
  const char *p, *e;
  int i;

  sm_enable = 1;
  world_start(&w);
  sm_enable = 0;
  REQUIRE(c_open(&c, &w, "/ws/") == 101);
  REQUIRE(ws_login(&c, AUTH_ALICE, "web"));
  c_text(&c, "<enable xmlns='urn:xmpp:sm:3' resume='true'/>");
  REQUIRE(wait_msg(&c, "resume=\"true\""));
  p = strstr(c.msgs.data, "<enabled ");
  REQUIRE(p != NULL);
  p = strstr(p, " id=\"");
  REQUIRE(p != NULL);
  p += 5;
  e = strchr(p, '"');
  REQUIRE(e != NULL && (size_t)(e - p) < sizeof id);
  memcpy(id, p, (size_t)(e - p));
  id[e - p] = '\0';
  REQUIRE(xcm_raw_open(&bob, &w.w.loop, "127.0.0.1", w.w.port, 1));
  REQUIRE(xcm_raw_login(&bob, XCM_RAW_HDR, XCM_RAW_AUTH_BOB, "tcp"));
  for (i = 1; i <= 5; i++) {
    snprintf(buf, sizeof buf,
             "<message to='alice@example.test/web' type='chat'>"
             "<body>s%d</body></message>",
             i);
    xcm_raw_sends(&bob, buf);
  }
  REQUIRE(wait_msg(&c, "s5"));
  c_text(&c, "<a xmlns='urn:xmpp:sm:3' h='2'/>");
  CHECK(xcm_test_run_until(&w.w.loop, acked, &w, WAIT_MS));
  xcm__stream_abort(c.s);
  c.ended = 1;
  CHECK(xcm_test_run_until(&w.w.loop, is_set, &c.closed, WAIT_MS));
  CHECK(xcm_test_run_until(&w.w.loop, one_detached, &w, WAIT_MS));
  out0 = stats(&w).stanzas_out;
  xcm_raw_sends(&bob, "<message to='alice@example.test/web' type='chat'>"
                      "<body>s6</body></message>");
  CHECK(xcm_test_run_until(&w.w.loop, routed_one_more, &w, WAIT_MS));
  /* Back on a new WebSocket: SASL, the restart, then resume. */
  REQUIRE(c_open(&c2, &w, "/ws/") == 101);
  c_text(&c2, OPEN);
  REQUIRE(wait_msg(&c2, "</stream:features>"));
  c_text(&c2, AUTH_ALICE);
  REQUIRE(wait_msg(&c2, "<success"));
  c_text(&c2, OPEN);
  REQUIRE(wait_msg(&c2, "urn:xmpp:sm:3"));
  snprintf(buf, sizeof buf, "<resume xmlns='urn:xmpp:sm:3' previd='%s' h='2'/>",
           id);
  c_text(&c2, buf);
  CHECK(wait_msg(&c2, "s6"));
  p = strstr(c2.msgs.data, "<resumed xmlns=\"urn:xmpp:sm:3\"");
  CHECK(p != NULL);
  if (p != NULL) {
    const char *at = p;

    for (i = 3; i <= 6; i++) {
      char m[8];

      snprintf(m, sizeof m, ">s%d<", i);
      at = strstr(at, m);
      CHECK(at != NULL);
      if (at == NULL)
        break;
      CHECK(strstr(at + 1, m) == NULL); /* once */
    }
    CHECK(strstr(c2.msgs.data, ">s1<") == NULL);
    CHECK(strstr(c2.msgs.data, ">s2<") == NULL);
  }
  /* The session goes on over the new WebSocket. */
  xcm_raw_sends(&bob, "<message to='alice@example.test/web' type='chat'>"
                      "<body>s7</body></message>");
  CHECK(wait_msg(&c2, "s7"));
  CHECK_INT(stats(&w).sm_resumed, 1);
  CHECK_INT(stats(&w).sessions_websocket_now, 1);
  c_free(&c2);
  c_free(&c);
  xcm_raw_free(&bob);
  world_stop(&w);
}

static const xcm_test tests[] = {
    {"login_chat_close", test_login_chat_close},
    {"fragments", test_fragments},
    {"wrong_subprotocol", test_wrong_subprotocol},
    {"bad_origin", test_bad_origin},
    {"unmasked", test_unmasked},
    {"oversized", test_oversized},
    {"invalid_utf8", test_invalid_utf8},
    {"binary", test_binary},
    {"stream_error", test_stream_error},
    {"wss_secure", test_wss_secure},
    {"backpressure_out", test_backpressure_out},
    {"slow_reader_nothing_lost", test_slow_reader_nothing_lost},
    {"reset_nothing_lost", test_reset_nothing_lost},
    {"backpressure_in", test_backpressure_in},
    {"shutdown_silent_client", test_shutdown_silent_client},
    {"idle_footprint", test_idle_footprint},
    {"sm_resume", test_sm_resume},
};

int main(int argc, char **argv) {
  return xcm_test_main(argc, argv, XCM_TESTS(tests));
}
