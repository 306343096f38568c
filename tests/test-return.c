/* Messages given back for a client that will never read them.
 *
 * A client that stops reading is dropped once its output queue passes
 * max_client_out, and the messages still queued for it go back to the
 * server as <failed/>, which stores them offline. The server passes a
 * sender's CDATA through as CDATA (Openfire may; the testkit does, as it
 * leaves everything after a start tag byte for byte), so a message body
 * can hold text that reads as another message, with a to and a from of
 * the sender's choosing. Whatever is given back must be exactly the
 * messages the CM queued, never something found by reading the queued
 * bytes again.
 *
 * forged_message_in_cdata drives one client directly over loopback and
 * decides the outcome without depending on the kernel's buffer sizes;
 * slow_reader_gets_exactly_its_messages goes through the CM and the
 * testkit with two logged-in clients. */
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "client/client.h"
#include "core/ctx.h"
#include "options.h"
#include "harness.h"
#include "rawclient.h"
#include "transport/stream.h"
#include "util/alloc.h"
#include "util/buf.h"
#include "world.h"
#include "xcm/error.h"
#include "xcm/testkit.h"
#include "xcm/xcm.h"

/* What a forged message starts with, wherever it would be stored. */
#define FORGED_TO "<message to='carol@example.test'"

/* Message n from alice to bob: a counter, pad bytes of padding, then a
 * CDATA section that holds a whole message of its own to carol "from"
 * admin. Read from the forged start tag on, the bytes are one
 * well-formed message: the inner CDATA opener makes the outer section's
 * end its own, and the real message's end tags close it. */
static void make_message(xcm_buf *b, const char *attrs, unsigned n,
                         size_t pad) {
  char head[256];
  size_t at;

  xcm__buf_reset(b);
  snprintf(head, sizeof head,
           "<message %s type='chat' id='m%05u'><body>n=%05u ", attrs, n, n);
  REQUIRE(xcm__buf_append_str(b, head) == 0);
  at = b->len;
  REQUIRE(xcm__buf_reserve(b, pad) == 0);
  memset(b->data + at, 'p', pad);
  b->len += pad;
  snprintf(head, sizeof head,
           "<![CDATA[" FORGED_TO " from='admin@example.test' type='chat'>"
           "<body><![CDATA[forged %05u]]></body></message>",
           n);
  REQUIRE(xcm__buf_append_str(b, head) == 0);
}

/* ---- one client, driven directly ---------------------------------------- */

typedef struct unit {
  uv_loop_t loop;
  xcm_ctx ctx;
  uv_tcp_t listener;
  xcm_client_cfg cfg;
  xcm_client *c;
  xcm_buf back; /* the messages given back, one after the other */
  xcm_buf lens; /* and each one's length (size_t) */
  size_t nback;
  int closed;
  xcm_cond cond;
} unit;

static const xcm_policy *no_policy(void *ud) {
  (void)ud;
  return NULL;
}

static int u_open(void *ud, const char *sid, const char *address) {
  (void)ud;
  (void)sid;
  (void)address;
  return XCM_EINVAL;
}

static int u_stanza(void *ud, const xcm_xml_stanza *s,
                    const xcm_xml_nsdecl *decls, size_t ndecls) {
  (void)ud;
  (void)s;
  (void)decls;
  (void)ndecls;
  return XCM_EINVAL;
}

static void u_authenticated(void *ud) {
  (void)ud;
}

static void u_undelivered(void *ud, const char *msg, size_t len) {
  unit *u = ud;

  CHECK(xcm__buf_append(&u->back, msg, len) == 0);
  CHECK(xcm__buf_append(&u->lens, &len, sizeof len) == 0);
  u->nback++;
}

static void u_closed(void *ud, const xcm_client_end *end) {
  unit *u = ud;

  u->closed++;
  u->cond = end->cond;
  u->c = NULL;
}

static const xcm_client_cb u_cb = {.open = u_open,
                                   .stanza = u_stanza,
                                   .authenticated = u_authenticated,
                                   .undelivered = u_undelivered,
                                   .closed = u_closed};

static void u_accept(uv_stream_t *server, int status) {
  unit *u = server->data;
  uv_tcp_t *tcp;
  int sndbuf = 8192;

  REQUIRE(status == 0);
  /* The client's stream frees it with the context's allocator. */
  tcp = xcm__alloc(u->ctx.alloc, sizeof(*tcp));
  REQUIRE(tcp != NULL);
  REQUIRE(uv_tcp_init(&u->loop, tcp) == 0);
  REQUIRE(uv_accept(server, (uv_stream_t *)tcp) == 0);
  /* A small send buffer, so that the kernel takes far less than the
   * first message and the cut falls inside it. */
  uv_send_buffer_size((uv_handle_t *)tcp, &sndbuf);
  REQUIRE(xcm__client_new(&u->c, &u->ctx, &u->cfg, tcp, &u_cb, u) == 0);
}

static int u_has_client(void *ud) {
  return ((unit *)ud)->c != NULL;
}

/* The first message is partly with the kernel, the rest of it in a
 * write under way. */
static size_t first_len;

static int u_cut(void *ud) {
  unit *u = ud;
  xcm_stream *s = xcm__client_stream(u->c);
  size_t q = xcm__stream_queued(s);

  return xcm__stream_write_calls(s) >= 2 && q > 0 && q < first_len;
}

static int u_closed_p(void *ud) {
  return ((unit *)ud)->closed > 0;
}

static void u_deliver(unit *u, const xcm_buf *b) {
  xcm_route r;

  memset(&r, 0, sizeof r);
  r.streamid = xcm__client_sid(u->c);
  r.inner = b->data;
  r.inner_len = b->len;
  xcm__client_deliver(u->c, &r);
}

static void ctx_closed(xcm_ctx *ctx) {
  (void)ctx;
}

/* bob's first message is cut by the kernel before its forged part; two
 * more and a presence are queued behind it; then one that does not fit
 * drops him. Given back: the two queued messages and the one that did
 * not fit, exactly; not the forged one, nor the cut one. The code that
 * scanned the queue for "<message" found the forged start tag in the
 * cut message's rest and gave it back, to be stored for carol. */
static void test_forged_message_in_cdata(void) {
  const char *bob = "from='alice@example.test/a' to='bob@example.test/b'";
  struct sockaddr_in addr;
  int alen = sizeof addr;
  xcm_buf m[4], presence;
  xcm_raw peer;
  unit u;
  size_t i, off, len;
  unsigned before = xcm_test_failures();

  memset(&u, 0, sizeof u);
  xcm__buf_init(&u.back, NULL);
  xcm__buf_init(&u.lens, NULL);
  for (i = 0; i < 4; i++)
    xcm__buf_init(&m[i], NULL);
  xcm__buf_init(&presence, NULL);
  REQUIRE(uv_loop_init(&u.loop) == 0);
  REQUIRE(xcm__ctx_init(&u.ctx, &u.loop, NULL) == 0);
  xcm__client_cfg_defaults(&u.cfg);
  u.cfg.domain = "example.test";
  u.cfg.max_out = 2u << 20;
  u.cfg.policy = no_policy;
  REQUIRE(uv_tcp_init(&u.loop, &u.listener) == 0);
  u.listener.data = &u;
  REQUIRE(uv_ip4_addr("127.0.0.1", 0, &addr) == 0);
  REQUIRE(uv_tcp_bind(&u.listener, (struct sockaddr *)&addr, 0) == 0);
  REQUIRE(uv_listen((uv_stream_t *)&u.listener, 4, u_accept) == 0);
  REQUIRE(uv_tcp_getsockname(&u.listener, (struct sockaddr *)&addr, &alen) ==
          0);
  REQUIRE(xcm_raw_open(&peer, &u.loop, "127.0.0.1", ntohs(addr.sin_port), 0));
  REQUIRE(xcm_test_run_until(&u.loop, u_has_client, &u, 3000));

  make_message(&m[0], bob, 1, 1u << 20);
  first_len = m[0].len;
  u_deliver(&u, &m[0]);
  REQUIRE(xcm_test_run_until(&u.loop, u_cut, &u, 3000));
  xcm_test_note("the kernel took %zu bytes of the first message's %zu",
                first_len - xcm__stream_queued(xcm__client_stream(u.c)),
                first_len);
  make_message(&m[1], bob, 2, 100);
  make_message(&m[2], bob, 3, 100);
  REQUIRE(xcm__buf_append_str(&presence,
                              "<presence from='alice@example.test/a'/>") == 0);
  u_deliver(&u, &m[1]);
  u_deliver(&u, &presence);
  u_deliver(&u, &m[2]);
  CHECK_INT(u.nback, 0);
  /* Passes max_out whatever the kernel took. */
  make_message(&m[3], bob, 4, u.cfg.max_out);
  u_deliver(&u, &m[3]);
  CHECK(xcm_test_run_until(&u.loop, u_closed_p, &u, 3000));
  CHECK_INT(u.cond, XCM_COND_POLICY_VIOLATION);

  CHECK_INT(u.nback, 3);
  for (i = 0, off = 0; i < u.nback; i++) {
    memcpy(&len, u.lens.data + i * sizeof len, sizeof len);
    if (len > strlen(FORGED_TO) &&
        !CHECK(memcmp(u.back.data + off, FORGED_TO, strlen(FORGED_TO)) != 0))
      xcm_test_note("given back: %.*s", (int)(len < 200 ? len : 200),
                    u.back.data + off);
    if (i < 3)
      CHECK_MEM(u.back.data + off, len, m[i + 1].data, m[i + 1].len);
    off += len;
  }

  xcm_raw_free(&peer);
  uv_close((uv_handle_t *)&u.listener, NULL);
  uv_run(&u.loop, UV_RUN_DEFAULT);
  xcm__ctx_close(&u.ctx, ctx_closed);
  uv_run(&u.loop, UV_RUN_DEFAULT);
  CHECK_INT(uv_loop_close(&u.loop), 0);
  for (i = 0; i < 4; i++)
    xcm__buf_free(&m[i]);
  xcm__buf_free(&presence);
  xcm__buf_free(&u.back);
  xcm__buf_free(&u.lens);
  xcm_test_tried("forged-queued-messages", before);
}

/* ---- through the CM and the testkit ------------------------------------- */

typedef struct world {
  xcm_test_world base;
  unsigned stored_bob;   /* OFFLINE_STORED events for bob */
  unsigned stored_other; /* ... for anyone else */
} world;

static void on_kit_event(void *ud, xcm_testkit *kit,
                         const xcm_testkit_event *ev) {
  world *w = ud;

  (void)kit;
  if (ev->type != XCM_TESTKIT_OFFLINE_STORED)
    return;
  if (ev->jid != NULL && strcmp(ev->jid, "bob@example.test") == 0)
    w->stored_bob++;
  else
    w->stored_other++;
}

static void cm_log(void *ud, int level, const char *msg) {
  (void)ud;
  (void)level;
  xcm_test_note("log: %s", msg);
}

static void tune(xcm_options *o, void *ud) {
  (void)ud;
  /* Above what one loop iteration can bring for bob (alice sends in
   * small rounds): he is dropped because he does not read, not because
   * of one burst. */
  o->max_client_out = 256 * 1024;
  /* alice floods on purpose: she is not what is tested. */
  o->rate = 1000000;
  o->burst = 1000000;
  if (getenv("XCM_TEST_LOG") != NULL) {
    o->log = cm_log;
    o->log_level = XCM_LOG_DEBUG;
  }
}

static void world_start(world *w) {
  /* The forged messages' addressees exist: stored, they would show. */
  static const char *const accounts[] = {"alice", "bob", "carol", "admin",
                                         NULL};
  xcm_test_world_setup s = {.seed = 11,
                            .offline_max = 100000,
                            .on_event = on_kit_event,
                            .accounts = accounts,
                            .tune = tune,
                            .ud = w};

  memset(w, 0, sizeof(*w));
  xcm_test_world_start(&w->base, &s);
}

static void world_stop(world *w) {
  xcm_test_world_stop(&w->base, 1000);
}

enum { PAD = 8000, BATCH = 4, MAX_MESSAGES = 4000 };

typedef struct round {
  world *w;
  uint64_t routes; /* the testkit's routes_in before alice's first */
  unsigned sent;
} round;

/* alice's messages so far have reached the testkit. */
static int arrived(void *ud) {
  round *r = ud;
  xcm_testkit_stats ks;

  xcm_testkit_get_stats(r->w->base.kit, &ks, sizeof ks);
  return ks.routes_in - r->routes >= r->sent;
}

/* The testkit answered the CM's close of a session since closes. */
typedef struct closed_wait {
  world *w;
  uint64_t closes;
} closed_wait;

static int closed_since(void *ud) {
  closed_wait *c = ud;
  xcm_testkit_stats ks;

  xcm_testkit_get_stats(c->w->base.kit, &ks, sizeof ks);
  return ks.closes_from_cm > c->closes;
}

static int bob_dropped(world *w) {
  xcm_stats st;

  xcm_cm_stats(w->base.cm, &st, sizeof st);
  return st.stream_errors[XCM_COND_POLICY_VIOLATION] > 0;
}

/* What the testkit holds offline for bob: the counters it saw, and
 * whether each message is intact (everything from <body> on as alice
 * wrote it; the start tag is the server's to stamp). */
typedef struct offline {
  unsigned n, min, max;
  int dups, broken;
  unsigned char *seen;
} offline;

static void read_offline(world *w, offline *o, unsigned sent) {
  xcm_buf want;
  unsigned i, c;

  xcm__buf_init(&want, NULL);
  memset(o->seen, 0, sent);
  o->n = xcm_testkit_offline_count(w->base.kit, "bob");
  o->min = sent;
  o->max = 0;
  o->dups = o->broken = 0;
  for (i = 0; i < o->n; i++) {
    size_t len;
    const char *m = xcm_testkit_offline_message(w->base.kit, "bob", i, &len);
    const char *body = m != NULL ? strstr(m, "<body>n=") : NULL;
    const char *wb;

    if (body == NULL || sscanf(body, "<body>n=%u", &c) != 1 || c >= sent) {
      o->broken++;
      continue;
    }
    make_message(&want, "to='bob@example.test/slow'", c, PAD);
    wb = strstr(want.data, "<body>");
    if ((size_t)(m + len - body) != want.len - (size_t)(wb - want.data) ||
        memcmp(body, wb, (size_t)(m + len - body)) != 0)
      o->broken++;
    if (o->seen[c]++)
      o->dups++;
    if (c < o->min)
      o->min = c;
    if (c > o->max)
      o->max = c;
  }
  xcm__buf_free(&want);
}

typedef struct settle {
  world *w;
  offline *o;
  unsigned sent;
} settle;

/* Everything alice sent after bob's drop has reached the store, and the
 * store holds one unbroken run up to her last message. */
static int settled(void *ud) {
  settle *s = ud;

  read_offline(s->w, s->o, s->sent);
  return s->o->n > 0 && s->o->max == s->sent - 1 &&
         s->o->n == s->o->max - s->o->min + 1;
}

/* bob stops reading; alice sends him messages with a forged message in
 * CDATA until the CM drops him, and a few more. What the server stores
 * for bob is every message from some point on, each intact, none twice:
 * those the CM still held for him (given back as <failed/>), those
 * routed to him while his session closed, those sent after. Nothing is
 * ever stored for carol, and bob never both received and got back the
 * same message. */
static void test_slow_reader_gets_exactly_its_messages(void) {
  world w;
  xcm_raw alice, bob;
  xcm_buf msg;
  xcm_stats st;
  xcm_testkit_stats ks;
  offline off;
  settle s;
  round r;
  closed_wait cw;
  unsigned sent = 0, extra = 0, i, got_max = 0, got_any = 0;
  unsigned before = xcm_test_failures();
  const char *p;

  world_start(&w);
  xcm__buf_init(&msg, NULL);
  off.seen = calloc(MAX_MESSAGES + BATCH, 1);
  REQUIRE(off.seen != NULL);
  REQUIRE(xcm_raw_open(&alice, &w.base.loop, "127.0.0.1", w.base.port, 1));
  REQUIRE(xcm_raw_login(&alice, XCM_RAW_HDR, XCM_RAW_AUTH_ALICE, "a"));
  REQUIRE(xcm_raw_open(&bob, &w.base.loop, "127.0.0.1", w.base.port, 1));
  REQUIRE(xcm_raw_login(&bob, XCM_RAW_HDR, XCM_RAW_AUTH_BOB, "slow"));
  xcm__buf_reset(&bob.in);
  xcm_raw_set_reading(&bob, 0);

  xcm_testkit_get_stats(w.base.kit, &ks, sizeof ks);
  r.w = &w;
  r.routes = ks.routes_in;
  cw.w = &w;
  cw.closes = ks.closes_from_cm;
  /* In rounds, each on its way to bob before the next: the CM meets his
   * queue growing as a client that stops reading makes it grow. */
  while (extra < 4) {
    REQUIRE(sent < MAX_MESSAGES);
    for (i = 0; i < BATCH; i++, sent++) {
      make_message(&msg, "to='bob@example.test/slow'", sent, PAD);
      xcm_raw_send(&alice, msg.data, msg.len);
    }
    r.sent = sent;
    REQUIRE(xcm_test_run_until(&w.base.loop, arrived, &r, 10000));
    if (extra == 0 && bob_dropped(&w)) {
      /* The CM closes bob's session upstream once nothing has been
       * routed to it for a while, and what reached it meanwhile went
       * back. Send the rest after that close: a message the server
       * routed while the close was on its way would reach the CM for a
       * session the server has forgotten, where not even a <failed/>
       * can save it (the protocol's limit, not this case's subject). */
      REQUIRE(xcm_test_run_until(&w.base.loop, closed_since, &cw, 30000));
    }
    if (extra > 0 || bob_dropped(&w))
      extra++;
  }
  xcm_test_note("alice sent %u messages of %zu bytes", sent, msg.len);
  s.w = &w;
  s.o = &off;
  s.sent = sent;
  CHECK(xcm_test_run_until(&w.base.loop, settled, &s, 15000));
  xcm_cm_stats(w.base.cm, &st, sizeof st);
  xcm_testkit_get_stats(w.base.kit, &ks, sizeof ks);
  xcm_test_note("stored for bob: %u (from %u to %u); given back from his "
                "queue: %llu; failed received: %llu",
                off.n, off.min, off.max, (unsigned long long)st.failed_returned,
                (unsigned long long)ks.failed_received);
  CHECK(st.stream_errors[XCM_COND_POLICY_VIOLATION] >= 1);
  CHECK(st.failed_returned >= 1);
  CHECK_INT(off.broken, 0);
  CHECK_INT(off.dups, 0);
  CHECK_INT(off.max, sent - 1);
  CHECK_INT(off.n, sent - off.min);
  CHECK_INT(xcm_testkit_offline_count(w.base.kit, "carol"), 0);
  CHECK_INT(xcm_testkit_offline_count(w.base.kit, "admin"), 0);
  CHECK_INT(w.stored_other, 0);
  CHECK_INT(w.stored_bob, off.n);

  /* What reached bob whole, if the reset left him any of it, comes
   * before everything stored. */
  xcm_raw_set_reading(&bob, 1);
  xcm_test_run_until(&w.base.loop, xcm_raw_is_eof, &bob, 3000);
  for (p = bob.in.data; p != NULL && (p = strstr(p, "<body>n=")) != NULL; p++) {
    unsigned c;

    if (sscanf(p, "<body>n=%u", &c) == 1 && strstr(p, "</message>") != NULL) {
      got_any = 1;
      if (c > got_max)
        got_max = c;
    }
  }
  if (got_any)
    CHECK(got_max < off.min);
  xcm_test_note("bob read %zu bytes after the drop", bob.in.len);

  xcm_raw_free(&bob);
  xcm_raw_free(&alice);
  xcm__buf_free(&msg);
  free(off.seen);
  world_stop(&w);
  xcm_test_tried("forged-queued-messages", before);
}

static const xcm_test tests[] = {
    {"forged_message_in_cdata", test_forged_message_in_cdata},
    {"slow_reader_gets_exactly_its_messages",
     test_slow_reader_gets_exactly_its_messages},
};

int main(int argc, char **argv) {
  return xcm_test_main(argc, argv, XCM_TESTS(tests));
}
