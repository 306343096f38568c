/* The upstream pool against the in-process Openfire, over real loopback
 * sockets: handshake, configuration, pinning, migration, loss of every
 * link, server closes, failed delivery, flow control. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "core/ctx.h"
#include "proto/stream.h"
#include "harness.h"
#include "options.h"
#include "upstream/pool.h"
#include "xcm/error.h"
#include "world.h"
#include "xcm/testkit.h"

#define NS_SASL "urn:ietf:params:xml:ns:xmpp-sasl"

/* ---- a test bench: one loop, one testkit, one pool ---------------------- */

typedef struct bench {
  uv_loop_t loop;
  xcm_ctx ctx;
  xcm_testkit *kit;
  xcm_pool *pool;
  xcm_pool_options opt;
  int links_up_events, links_down_events, policies;
  xcm_policy policy;
  char last_down_why[256];
  int closed;
} bench;

static void on_link(void *ud, unsigned index, const char *resource, int up,
                    int err, const char *why) {
  bench *b = ud;

  (void)index;
  (void)resource;
  (void)err;
  if (up) {
    b->links_up_events++;
  } else {
    b->links_down_events++;
    snprintf(b->last_down_why, sizeof b->last_down_why, "%s", why ? why : "");
  }
}

static void on_policy(void *ud, const xcm_policy *p) {
  bench *b = ud;

  b->policy = *p;
  b->policies++;
}

static const xcm_pool_events events = {on_link, on_policy, NULL};

static int run_until(bench *b, int (*pred)(void *), void *ud,
                     unsigned timeout_ms) {
  return xcm_test_run_until(&b->loop, pred, ud, timeout_ms);
}

static void run_for(bench *b, unsigned ms) {
  xcm_test_run_for(&b->loop, ms);
}

static int all_up(void *ud) {
  bench *b = ud;

  return xcm__pool_links_up(b->pool) == b->opt.connections && b->policies > 0;
}

static void bench_start(bench *b, const xcm_testkit_options *ko,
                        void (*tune)(xcm_pool_options *)) {
  xcm_testkit_options kopt;
  char err[256];

  memset(b, 0, sizeof(*b));
  REQUIRE(uv_loop_init(&b->loop) == 0);
  REQUIRE(xcm__ctx_init(&b->ctx, &b->loop, NULL) == 0);
  if (ko == NULL) {
    xcm_testkit_options_init(&kopt, sizeof kopt);
    kopt.seed = 42;
    ko = &kopt;
  }
  if (xcm_testkit_new(&b->kit, &b->loop, ko, err, sizeof err) != 0)
    xcm_test_note("testkit: %s", err);
  REQUIRE(b->kit != NULL);
  xcm_testkit_add_account(b->kit, "alice", "alice");
  xcm_testkit_add_account(b->kit, "bob", "bob");
  xcm_testkit_add_account(b->kit, "carol", "carol");
  xcm_testkit_add_roster_item(b->kit, "alice", "bob@example.test", "Bob",
                              "both");
  xcm_testkit_add_roster_item(b->kit, "bob", "alice@example.test", "Alice",
                              "both");
  xcm__pool_options_defaults(&b->opt);
  b->opt.host = "127.0.0.1";
  b->opt.port = xcm_testkit_port(b->kit);
  b->opt.domain = "example.test";
  b->opt.name = "cm1";
  b->opt.secret = "cmsecret";
  b->opt.connections = 5;
  b->opt.tls = XCM_UP_TLS_OFF;
  b->opt.backoff_min_ms = 20;
  b->opt.backoff_max_ms = 200;
  b->opt.request_timeout_ms = 5000;
  if (tune != NULL)
    tune(&b->opt);
  REQUIRE(xcm__pool_new(&b->pool, &b->ctx, &b->opt, &events, b) == 0);
  REQUIRE(xcm__pool_start(b->pool) == 0);
}

static void pool_closed(void *ud) {
  ((bench *)ud)->closed++;
}

static void kit_closed(void *ud, xcm_testkit *kit) {
  (void)kit;
  ((bench *)ud)->closed++;
}

static void ctx_closed(xcm_ctx *ctx) {
  (void)ctx;
}

static void bench_stop(bench *b) {
  xcm__pool_close(b->pool, pool_closed, b);
  xcm_testkit_close(b->kit, kit_closed, b);
  while (b->closed < 2)
    uv_run(&b->loop, UV_RUN_ONCE);
  CHECK(xcm_test_kit_clean(b->kit));
  xcm_testkit_free(b->kit);
  xcm__ctx_close(&b->ctx, ctx_closed);
  uv_run(&b->loop, UV_RUN_DEFAULT);
  CHECK_INT(uv_loop_close(&b->loop), 0);
}

/* ---- a scripted client session through the pool ------------------------ */

typedef struct sess {
  bench *b;
  xcm_up_session *up;
  char sid[32];
  int created; /* 1 ok, -1 failed */
  int create_err;
  int closed, lost, paused, route_errors;
  xcm_buf got; /* everything delivered, concatenated */
  int deliveries;
  int refuse_messages; /* return every message with failed */
  char closed_error[256];
  /* In-order accounting of numbered messages "n <i>". */
  long next_seq;
  long out_of_order;
  long received_seq;
} sess;

static void s_created(void *ud, int err) {
  sess *s = ud;

  s->created = err == 0 ? 1 : -1;
  s->create_err = err;
  if (err != 0)
    s->up = NULL;
}

static void s_deliver(void *ud, const xcm_route *r) {
  sess *s = ud;
  const char *p;

  s->deliveries++;
  if (r->inner == NULL) {
    xcm__buf_append(&s->got, r->text, r->text_len);
    return;
  }
  if (s->refuse_messages && r->inner_len > 8 &&
      memcmp(r->inner, "<message", 8) == 0) {
    xcm__pool_session_failed(s->up, r->inner, r->inner_len);
    return;
  }
  xcm__buf_append(&s->got, r->inner, r->inner_len);
  /* Numbered bodies: <body>n 123</body>. */
  if (r->inner_len > 8 && memcmp(r->inner, "<message", 8) == 0) {
    for (p = r->inner; p + 8 < r->inner + r->inner_len; p++)
      if (memcmp(p, "<body>n ", 8) == 0) {
        long n = strtol(p + 8, NULL, 10);
        if (n < s->next_seq)
          s->out_of_order++;
        s->next_seq = n + 1;
        s->received_seq++;
        break;
      }
  }
}

static void s_closed(void *ud, const char *error, size_t len) {
  sess *s = ud;

  s->closed = 1;
  s->up = NULL;
  if (error != NULL)
    snprintf(s->closed_error, sizeof s->closed_error, "%.*s", (int)len, error);
}

static void s_lost(void *ud) {
  sess *s = ud;

  s->lost = 1;
  s->up = NULL;
}

static void s_route_error(void *ud, const char *inner, size_t len) {
  (void)inner;
  (void)len;
  ((sess *)ud)->route_errors++;
}

static void s_pause(void *ud) {
  ((sess *)ud)->paused = 1;
}

static void s_resume(void *ud) {
  ((sess *)ud)->paused = 0;
}

static const xcm_up_session_cb sess_cb = {
    s_created, s_deliver, s_closed, s_lost, s_route_error, s_pause, s_resume};

static int sess_open(bench *b, sess *s, const char *sid) {
  memset(s, 0, sizeof(*s));
  s->b = b;
  snprintf(s->sid, sizeof s->sid, "%s", sid);
  xcm__buf_init(&s->got, NULL);
  return xcm__pool_session_open(b->pool, s->sid, "localhost", "127.0.0.1",
                                &sess_cb, s, &s->up);
}

static void sess_free(sess *s) {
  xcm__buf_free(&s->got);
}

/* Send client bytes (one or more stanzas as a client would write them on
 * its jabber:client stream) through the pool. */
typedef struct sender {
  sess *s;
  xcm_xml_reader *r;
  int err;
} sender;

static int send_stanza(void *ud, const xcm_xml_stanza *st) {
  sender *x = ud;
  const xcm_xml_nsdecl *d;
  size_t n;

  d = xcm__xml_reader_decls(x->r, &n);
  x->err = xcm__pool_session_send(x->s->up, st, d, n);
  return x->err;
}

static int sess_send(sess *s, const char *bytes) {
  static const xcm_xml_callbacks cb = {NULL, NULL, send_stanza, NULL};
  sender x = {s, NULL, 0};
  size_t consumed;
  int err;

  if (s->up == NULL)
    return XCM_ECLOSED;
  REQUIRE(xcm__xml_reader_new(&x.r, s->b->ctx.xml, &cb, &x, NULL) == 0);
  xcm__xml_reader_assume_header(x.r, &xcm__stream_client);
  err = xcm__xml_reader_feed(x.r, bytes, strlen(bytes), &consumed);
  xcm__xml_reader_free(x.r);
  return err != 0 ? (x.err ? x.err : err) : 0;
}

static int got_has(sess *s, const char *needle) {
  size_t n = strlen(needle), i;

  for (i = 0; i + n <= s->got.len; i++)
    if (memcmp(s->got.data + i, needle, n) == 0)
      return 1;
  return 0;
}

typedef struct wait_str {
  sess *s;
  const char *needle;
} wait_str;

static int pred_got(void *ud) {
  wait_str *w = ud;
  return got_has(w->s, w->needle);
}

static int wait_got(sess *s, const char *needle, unsigned ms) {
  wait_str w = {s, needle};
  return run_until(s->b, pred_got, &w, ms);
}

static int pred_created(void *ud) {
  return ((sess *)ud)->created != 0;
}

/* Create, SASL PLAIN, bind, session, presence. */
static int sess_login(bench *b, sess *s, const char *sid, const char *user,
                      const char *resource) {
  static const char *plain[] = {"alice", "AGFsaWNlAGFsaWNl",
                                "bob",   "AGJvYgBib2I=",
                                "carol", "AGNhcm9sAGNhcm9s"};
  char buf[512];
  const char *b64 = NULL;
  int i;

  for (i = 0; i < 6; i += 2)
    if (strcmp(plain[i], user) == 0)
      b64 = plain[i + 1];
  if (b64 == NULL || sess_open(b, s, sid) != 0)
    return 0;
  snprintf(buf, sizeof buf,
           "<auth xmlns='" NS_SASL "' mechanism='PLAIN'>%s</auth>", b64);
  /* Sent before the create result: the pool holds it. */
  if (sess_send(s, buf) != 0)
    return 0;
  if (!run_until(b, pred_created, s, 3000) || s->created != 1)
    return 0;
  if (!wait_got(s, "<success", 3000))
    return 0;
  snprintf(buf, sizeof buf,
           "<iq type='set' id='b1'><bind "
           "xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>%s</resource>"
           "</bind></iq><iq type='set' id='s1'><session "
           "xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq><presence/>",
           resource);
  if (sess_send(s, buf) != 0)
    return 0;
  return wait_got(s, "id=\"s1\"", 3000) || wait_got(s, "id='s1'", 100);
}

/* ---- the tests ----------------------------------------------------------- */

static void test_handshake_and_policy(void) {
  xcm_testkit_options ko;
  bench b;
  const char *resources[5];
  unsigned i, j;

  xcm_testkit_options_init(&ko, sizeof ko);
  ko.seed = 7;
  ko.client_policy.tls = XCM_TLS_REQUIRED;
  ko.client_policy.legacy_auth = 1;
  ko.client_policy.registration = 0;
  bench_start(&b, &ko, NULL);
  CHECK(run_until(&b, all_up, &b, 5000));
  CHECK_INT(xcm_testkit_connections(b.kit), 5);
  /* Five connections, five distinct resources. */
  for (i = 0; i < 5; i++) {
    resources[i] = xcm_testkit_connection_jid(b.kit, i);
    REQUIRE(resources[i] != NULL);
    CHECK(strncmp(resources[i], "cm1/", 4) == 0);
    for (j = 0; j < i; j++)
      CHECK(strcmp(resources[i], resources[j]) != 0);
  }
  /* The configuration iq reached the policy. */
  REQUIRE(xcm__pool_policy(b.pool) != NULL);
  CHECK_INT(b.policy.tls, XCM_TLS_REQUIRED);
  CHECK_INT(b.policy.legacy_auth, 1);
  CHECK_INT(b.policy.registration, 0);
  CHECK(xcm_policy_has_mechanism(&b.policy, "SCRAM-SHA-1", 11));
  bench_stop(&b);
}

static void bad_secret(xcm_pool_options *o) {
  o->secret = "wrong";
  o->connections = 2;
}

static int some_failed(void *ud) {
  bench *b = ud;
  xcm_testkit_stats st;

  xcm_testkit_get_stats(b->kit, &st, sizeof st);
  return st.handshakes_failed >= 2 && b->links_down_events >= 2;
}

static void test_bad_secret(void) {
  bench b;

  bench_start(&b, NULL, bad_secret);
  CHECK(run_until(&b, some_failed, &b, 5000));
  CHECK_INT(xcm__pool_links_up(b.pool), 0);
  CHECK(xcm__pool_policy(b.pool) == NULL);
  if (!CHECK(strstr(b.last_down_why, "not-authorized") != NULL))
    xcm_test_note("why: %s", b.last_down_why);
  /* No session can be opened while nothing is up. */
  {
    sess s;
    CHECK_INT(sess_open(&b, &s, "x1"), XCM_EBUSY);
    sess_free(&s);
  }
  bench_stop(&b);
}

typedef struct many {
  sess *s;
  int n;
} many;

static int all_created(void *ud) {
  many *m = ud;
  int i;

  for (i = 0; i < m->n; i++)
    if (m->s[i].created == 0)
      return 0;
  return 1;
}

static void test_thousand_sessions(void) {
  enum { N = 1000 };
  bench b;
  many m;
  int i, ok = 0, per_link[5] = {0};
  xcm_testkit_stats st;

  bench_start(&b, NULL, NULL);
  REQUIRE(run_until(&b, all_up, &b, 5000));
  m.s = calloc(N, sizeof(*m.s));
  m.n = N;
  REQUIRE(m.s != NULL);
  for (i = 0; i < N; i++) {
    char sid[32];
    snprintf(sid, sizeof sid, "s%04d", i);
    REQUIRE(sess_open(&b, &m.s[i], sid) == 0);
    per_link[xcm__up_session_link(m.s[i].up)]++;
  }
  CHECK(run_until(&b, all_created, &m, 10000));
  for (i = 0; i < N; i++)
    ok += m.s[i].created == 1;
  CHECK_INT(ok, N);
  xcm_testkit_get_stats(b.kit, &st, sizeof st);
  CHECK_INT(st.creates, N);
  /* Spread evenly over the five links. */
  for (i = 0; i < 5; i++)
    CHECK_INT(per_link[i], N / 5);
  CHECK_INT(xcm__pool_session_count(b.pool), N);
  for (i = 0; i < N; i++)
    sess_free(&m.s[i]);
  free(m.s);
  bench_stop(&b);
}

/* A local (direct) client collecting what it receives. */
typedef struct local {
  long next_seq, received, out_of_order;
  xcm_buf got;
} local;

static void local_stanza(void *ud, xcm_testkit *kit, const char *jid,
                         const char *stanza, size_t len) {
  local *l = ud;
  const char *p;

  (void)kit;
  (void)jid;
  xcm__buf_append(&l->got, stanza, len);
  for (p = stanza; p + 8 < stanza + len; p++)
    if (memcmp(p, "<body>n ", 8) == 0) {
      long n = strtol(p + 8, NULL, 10);
      if (n < l->next_seq)
        l->out_of_order++;
      l->next_seq = n + 1;
      l->received++;
      break;
    }
}

typedef struct flow {
  bench *b;
  sess *s;
  local *l;
  long sent, total;
  int drops_done;
  long drop_at[2];
  /* Messages in flight when a connection died: from the tick before the
   * drop (written, not yet read by the server: timers run before the
   * loop polls) until the pool saw the link go. */
  long last_tick_start, tick_start;
  long sent_at_drop;
  int downs_at_drop;
  long unnoticed;
  uv_timer_t t;
  int done;
} flow;

static void flow_tick(uv_timer_t *t) {
  flow *f = t->data;
  char buf[256];
  int i;

  if (f->sent_at_drop >= 0 && f->b->links_down_events > f->downs_at_drop) {
    f->unnoticed += f->sent - f->sent_at_drop;
    f->sent_at_drop = -1;
  }
  f->last_tick_start = f->tick_start;
  f->tick_start = f->sent;
  for (i = 0; i < 100 && f->sent < f->total; i++) {
    if (f->drops_done < 2 && f->sent == f->drop_at[f->drops_done] &&
        f->sent_at_drop < 0) {
      /* Drop the link the sender is pinned to, then another one. */
      const char *jid = NULL;
      int link = xcm__up_session_link(f->s->up);
      xcm__pool_link_state(f->b->pool, (unsigned)(link >= 0 ? link : 0), &jid);
      if (f->drops_done == 0 && jid != NULL)
        xcm_testkit_drop_connection_jid(f->b->kit, jid);
      else
        xcm_testkit_drop_connection(f->b->kit, 0);
      f->drops_done++;
      f->sent_at_drop = f->last_tick_start;
      f->downs_at_drop = f->b->links_down_events;
    }
    snprintf(buf, sizeof buf,
             "<message to='bob@example.test/direct' type='chat'>"
             "<body>n %ld</body></message>",
             f->sent);
    if (sess_send(f->s, buf) != 0)
      break;
    f->sent++;
  }
  if (f->sent >= f->total) {
    uv_timer_stop(t);
    f->done = 1;
  }
}

static int flow_done(void *ud) {
  flow *f = ud;
  return f->done && f->sent_at_drop < 0 && f->l->next_seq == f->total;
}

static void test_order_across_link_loss(void) {
  bench b;
  sess s;
  local bob;
  flow f;
  xcm_pool_stats ps;

  bench_start(&b, NULL, NULL);
  REQUIRE(run_until(&b, all_up, &b, 5000));
  memset(&bob, 0, sizeof bob);
  xcm__buf_init(&bob.got, NULL);
  REQUIRE(xcm_testkit_local_login(b.kit, "bob@example.test/direct",
                                  local_stanza, &bob) == 0);
  xcm_testkit_local_send(b.kit, "bob@example.test/direct", "<presence/>", 11);
  REQUIRE(sess_login(&b, &s, "order1", "alice", "cm"));
  memset(&f, 0, sizeof f);
  f.b = &b;
  f.s = &s;
  f.l = &bob;
  f.total = 10000;
  f.drop_at[0] = 3000;
  f.drop_at[1] = 6000;
  f.sent_at_drop = -1;
  uv_timer_init(&b.loop, &f.t);
  f.t.data = &f;
  uv_timer_start(&f.t, flow_tick, 1, 1);
  CHECK(run_until(&b, flow_done, &f, 30000));
  uv_close((uv_handle_t *)&f.t, NULL);
  xcm__pool_stats(b.pool, &ps);
  xcm_test_note("sent %ld, received %ld; in flight on dropped connections: "
                "%ld messages; queued unwritten on them: %llu bytes",
                f.sent, bob.received, f.unnoticed,
                (unsigned long long)ps.lost_in_flight);
  CHECK_INT(f.sent, 10000);
  /* Order is kept: nothing arrives after a later message. */
  CHECK_INT(bob.out_of_order, 0);
  /* Nothing is lost but what was in flight on a connection that died. */
  CHECK(bob.received + f.unnoticed >= f.total);
  /* The pool notices a dead link within a few loop turns. */
  CHECK(f.unnoticed <= 1000);
  /* The session moved and carried on; the links came back. */
  CHECK(s.up != NULL && !s.lost);
  CHECK(run_until(&b, all_up, &b, 5000));
  CHECK(b.links_down_events >= 2);
  xcm__buf_free(&bob.got);
  sess_free(&s);
  bench_stop(&b);
}

typedef struct lostall {
  sess *s;
  int n;
} lostall;

static int all_lost(void *ud) {
  lostall *l = ud;
  int i;

  for (i = 0; i < l->n; i++)
    if (!l->s[i].lost)
      return 0;
  return 1;
}

static void test_all_links_lost(void) {
  bench b;
  sess s[20], again;
  lostall la = {s, 20};
  xcm_pool_stats ps;
  int i;

  bench_start(&b, NULL, NULL);
  REQUIRE(run_until(&b, all_up, &b, 5000));
  for (i = 0; i < 20; i++) {
    char sid[16];
    snprintf(sid, sizeof sid, "l%d", i);
    REQUIRE(sess_open(&b, &s[i], sid) == 0);
  }
  {
    many m = {s, 20};
    REQUIRE(run_until(&b, all_created, &m, 5000));
  }
  xcm_testkit_drop_all(b.kit);
  /* Every session is reported lost, once. */
  CHECK(run_until(&b, all_lost, &la, 5000));
  xcm__pool_stats(b.pool, &ps);
  CHECK_INT(ps.sessions_lost, 20);
  CHECK_INT(xcm__pool_session_count(b.pool), 0);
  /* The pool reconnects with backoff and serves new sessions again. */
  CHECK(run_until(&b, all_up, &b, 5000));
  xcm__pool_stats(b.pool, &ps);
  CHECK(ps.reconnects >= 5);
  CHECK(sess_login(&b, &again, "after1", "alice", "again"));
  /* System shutdown: everything gone, then back. */
  xcm_testkit_system_shutdown(b.kit);
  {
    lostall one = {&again, 1};
    CHECK(run_until(&b, all_lost, &one, 5000));
  }
  CHECK(run_until(&b, all_up, &b, 5000));
  for (i = 0; i < 20; i++)
    sess_free(&s[i]);
  sess_free(&again);
  bench_stop(&b);
}

typedef struct kit_closes {
  bench *b;
  uint64_t n;
} kit_closes;

static int closes_seen(void *ud) {
  kit_closes *k = ud;
  xcm_testkit_stats st;

  xcm_testkit_get_stats(k->b->kit, &st, sizeof st);
  return st.closes_from_cm >= k->n;
}

static int some_down(void *ud) {
  return ((bench *)ud)->links_down_events > 0;
}

static int closed_pred(void *ud) {
  return ((sess *)ud)->closed;
}

static void test_server_close(void) {
  bench b;
  sess a, c;

  bench_start(&b, NULL, NULL);
  REQUIRE(run_until(&b, all_up, &b, 5000));
  REQUIRE(sess_login(&b, &a, "sa", "alice", "one"));
  REQUIRE(sess_login(&b, &c, "sc", "carol", "two"));
  REQUIRE(xcm_testkit_close_session(b.kit, "sa", XCM_COND_CONFLICT) == 0);
  CHECK(run_until(&b, closed_pred, &a, 3000));
  /* The stream error was routed to that client first (4.1.6 style). */
  CHECK(got_has(&a, "<conflict"));
  CHECK(!c.closed && !got_has(&c, "<conflict"));
  /* The other session still works. */
  sess_send(&c,
            "<iq type='get' id='r9'><query xmlns='jabber:iq:roster'/></iq>");
  CHECK(wait_got(&c, "r9", 3000));
  sess_free(&a);
  sess_free(&c);
  bench_stop(&b);
}

typedef struct offline_wait {
  bench *b;
  const char *user;
  unsigned n;
} offline_wait;

static int offline_pred(void *ud) {
  offline_wait *w = ud;
  return xcm_testkit_offline_count(w->b->kit, w->user) >= w->n;
}

static void test_failed_goes_offline(void) {
  bench b;
  sess carol;
  offline_wait w;
  const char *stored;
  size_t len;
  xcm_pool_stats ps;
  static const char msg[] = "<message to='carol@example.test/gone' "
                            "type='chat'><body>keep me</body></message>";

  bench_start(&b, NULL, NULL);
  REQUIRE(run_until(&b, all_up, &b, 5000));
  REQUIRE(xcm_testkit_local_login(b.kit, "bob@example.test/direct", NULL,
                                  NULL) == 0);
  REQUIRE(sess_login(&b, &carol, "sg", "carol", "gone"));
  /* Carol's client can no longer receive: whatever comes for her goes
   * back with <failed/>, and the server stores it offline. */
  carol.refuse_messages = 1;
  xcm_testkit_local_send(b.kit, "bob@example.test/direct", msg, sizeof msg - 1);
  w.b = &b;
  w.user = "carol";
  w.n = 1;
  CHECK(run_until(&b, offline_pred, &w, 3000));
  xcm__pool_stats(b.pool, &ps);
  CHECK_INT(ps.failed_sent, 1);
  stored = xcm_testkit_offline_message(b.kit, "carol", 0, &len);
  REQUIRE(stored != NULL);
  /* In the right namespace, which Openfire needs the explicit xmlns for. */
  CHECK(strstr(stored, "connectionmanager") == NULL);
  CHECK(strstr(stored, "keep me") != NULL);
  sess_free(&carol);
  bench_stop(&b);
}

static void small_water(xcm_pool_options *o) {
  o->connections = 1;
  o->high_water = 64 * 1024;
  o->low_water = 16 * 1024;
  o->max_out = 1024 * 1024;
}

static int not_paused(void *ud) {
  return !((sess *)ud)->paused;
}

static void test_flow_control_when_stalled(void) {
  bench b;
  sess s;
  local bob;
  char buf[1200], body[1000];
  size_t max_queued = 0;
  long sent = 0;
  int i, rounds;
  xcm_testkit_stats st;

  bench_start(&b, NULL, small_water);
  REQUIRE(run_until(&b, all_up, &b, 5000));
  memset(&bob, 0, sizeof bob);
  xcm__buf_init(&bob.got, NULL);
  REQUIRE(xcm_testkit_local_login(b.kit, "bob@example.test/direct",
                                  local_stanza, &bob) == 0);
  xcm_testkit_local_send(b.kit, "bob@example.test/direct", "<presence/>", 11);
  REQUIRE(sess_login(&b, &s, "fc", "alice", "fc"));
  memset(body, 'x', sizeof body - 1);
  body[sizeof body - 1] = '\0';
  xcm_testkit_stall(b.kit, 1);
  /* A well-behaved client stops when told to: send while not paused. */
  for (rounds = 0; rounds < 400; rounds++) {
    for (i = 0; i < 50 && !s.paused; i++) {
      snprintf(buf, sizeof buf,
               "<message to='bob@example.test/direct'><body>n %ld %s</body>"
               "</message>",
               sent, body);
      if (sess_send(&s, buf) != 0)
        break;
      sent++;
    }
    run_for(&b, 2);
    if (xcm__pool_link_queued(b.pool, 0) > max_queued)
      max_queued = xcm__pool_link_queued(b.pool, 0);
  }
  xcm_test_note("stalled: sent %ld, paused %d, most queued %zu bytes", sent,
                s.paused, max_queued);
  CHECK(s.paused);
  /* Memory stays flat: the queue stops near the high-water mark, far
   * below the hard bound. */
  CHECK(max_queued < 64 * 1024 + 50 * 1200 + 4096);
  xcm_testkit_stall(b.kit, 0);
  CHECK(run_until(&b, not_paused, &s, 5000));
  xcm_testkit_get_stats(b.kit, &st, sizeof st);
  CHECK(st.routes_in > 0);
  xcm__buf_free(&bob.got);
  sess_free(&s);
  bench_stop(&b);
}

static int got_iq_error(void *ud) {
  local *l = ud;
  return l->got.len > 0 &&
         memmem(l->got.data, l->got.len, "unexpected-request", 18) != NULL;
}

/* A client that left: its session lingers upstream, so what the server
 * routes to it meanwhile still goes back through a session it knows. */
static void linger_returns_and_bounces(int bare) {
  bench b;
  sess carol;
  local bob;
  offline_wait w;
  kit_closes kc;
  xcm_pool_stats ps;
  /* An id with an entity in it and longer than any fixed buffer: the
   * answer must carry it exactly, bare payload or not. */
  char iq[600], id[400];

  memcpy(id, "v1&amp;", 7);
  memset(id + 7, 'x', 300);
  id[307] = '\0';
  snprintf(iq, sizeof iq,
           "<iq type='get' id='%s' to='carol@example.test/gone'>"
           "<query xmlns='jabber:iq:version'/></iq>",
           id);
  static const char msg[] = "<message to='carol@example.test/gone' "
                            "type='chat'><body>while leaving</body></message>";

  bench_start(&b, NULL, NULL);
  REQUIRE(run_until(&b, all_up, &b, 5000));
  xcm__pool_set_bare_payloads(b.pool, bare);
  memset(&bob, 0, sizeof bob);
  xcm__buf_init(&bob.got, NULL);
  REQUIRE(xcm_testkit_local_login(b.kit, "bob@example.test/direct",
                                  local_stanza, &bob) == 0);
  REQUIRE(sess_login(&b, &carol, "lg", "carol", "gone"));
  xcm__pool_session_close(carol.up);
  carol.up = NULL;
  xcm_testkit_local_send(b.kit, "bob@example.test/direct", iq, strlen(iq));
  xcm_testkit_local_send(b.kit, "bob@example.test/direct", msg, sizeof msg - 1);
  /* The iq is answered on the gone client's behalf ... */
  CHECK(run_until(&b, got_iq_error, &bob, 3000));
  CHECK(memmem(bob.got.data, bob.got.len, id, strlen(id)) != NULL);
  /* ... the message is stored offline ... */
  w.b = &b;
  w.user = "carol";
  w.n = 1;
  CHECK(run_until(&b, offline_pred, &w, 3000));
  /* ... and then the close goes, and carol is gone on the server. */
  kc.b = &b;
  kc.n = 1;
  CHECK(run_until(&b, closes_seen, &kc, 3000));
  CHECK_INT(xcm_testkit_jid_state(b.kit, "carol@example.test/gone"), 0);
  xcm__pool_stats(b.pool, &ps);
  CHECK_INT(ps.bounced, 1);
  CHECK_INT(ps.failed_sent, 1);
  xcm__buf_free(&bob.got);
  sess_free(&carol);
  bench_stop(&b);
}

static void test_linger_returns_and_bounces(void) {
  linger_returns_and_bounces(0);
}

/* A route that began before its session closed carries its payload
 * without attributes: the type, id, from and to come from the start tag. */
static void test_linger_with_bare_payloads(void) {
  linger_returns_and_bounces(1);
}

static xcm_testkit_options tls_kit(xcm_testkit_link_tls mode) {
  xcm_testkit_options ko;

  xcm_testkit_options_init(&ko, sizeof ko);
  ko.seed = 9;
  ko.link_tls = mode;
  ko.cert_file = xcm_test_cert("server.pem");
  ko.key_file = xcm_test_cert("server-key.pem");
  return ko;
}

static void tls_verified(xcm_pool_options *o) {
  o->host = "localhost";
  o->connections = 2;
  o->tls = XCM_UP_TLS_REQUIRED;
  o->ca_file = xcm_test_cert("ca.pem");
}

static void test_link_tls_verified(void) {
  xcm_testkit_options ko = tls_kit(XCM_TESTKIT_LINK_TLS_REQUIRE);
  bench b;
  sess s;

  bench_start(&b, &ko, tls_verified);
  CHECK(run_until(&b, all_up, &b, 5000));
  CHECK(xcm__pool_link_tls(b.pool, 0) && xcm__pool_link_tls(b.pool, 1));
  CHECK(sess_login(&b, &s, "t1", "alice", "tls"));
  sess_free(&s);
  bench_stop(&b);
}

static void tls_wrong_ca(xcm_pool_options *o) {
  tls_verified(o);
  o->ca_file = xcm_test_cert("self.pem");
}

static void test_link_tls_untrusted(void) {
  xcm_testkit_options ko = tls_kit(XCM_TESTKIT_LINK_TLS_REQUIRE);
  bench b;

  bench_start(&b, &ko, tls_wrong_ca);
  CHECK(run_until(&b, some_down, &b, 5000));
  CHECK_INT(xcm__pool_links_up(b.pool), 0);
  if (!CHECK(strstr(b.last_down_why, "TLS") != NULL))
    xcm_test_note("why: %s", b.last_down_why);
  bench_stop(&b);
}

static void tls_self_signed(xcm_pool_options *o) {
  tls_verified(o);
  o->ca_file = NULL;
  o->host = "127.0.0.1";
  o->accept_self_signed = 1;
}

static void test_link_tls_accept_self_signed(void) {
  xcm_testkit_options ko = tls_kit(XCM_TESTKIT_LINK_TLS_OFFER);
  bench b;

  bench_start(&b, &ko, tls_self_signed);
  CHECK(run_until(&b, all_up, &b, 5000));
  CHECK(xcm__pool_link_tls(b.pool, 0));
  bench_stop(&b);
}

static void tls_required(xcm_pool_options *o) {
  o->connections = 1;
  o->tls = XCM_UP_TLS_REQUIRED;
}

static void test_link_tls_required_not_offered(void) {
  xcm_testkit_options ko = tls_kit(XCM_TESTKIT_LINK_TLS_OFF);
  bench b;
  xcm_testkit_stats st;

  bench_start(&b, &ko, tls_required);
  CHECK(run_until(&b, some_down, &b, 5000));
  CHECK(strstr(b.last_down_why, "STARTTLS") != NULL);
  /* The secret never went out in clear. */
  xcm_testkit_get_stats(b.kit, &st, sizeof st);
  CHECK_INT(st.handshakes + st.handshakes_failed, 0);
  bench_stop(&b);
}

static void quick_dead(xcm_pool_options *o) {
  o->connections = 1;
  o->keepalive_ms = 100;
  o->dead_after_ms = 400;
}

static void test_silent_server_is_dead(void) {
  bench b;

  bench_start(&b, NULL, quick_dead);
  REQUIRE(run_until(&b, all_up, &b, 5000));
  xcm_testkit_stall(b.kit, 1);
  CHECK(run_until(&b, some_down, &b, 3000));
  CHECK(strstr(b.last_down_why, "silent") != NULL);
  xcm_testkit_stall(b.kit, 0);
  CHECK(run_until(&b, all_up, &b, 5000));
  bench_stop(&b);
}

static void zlib_links(xcm_pool_options *o) {
  o->connections = 2;
  o->zlib = 1;
}

static void test_link_zlib(void) {
  xcm_testkit_options ko;
  bench b;
  sess s;

  xcm_testkit_options_init(&ko, sizeof ko);
  ko.seed = 11;
  ko.link_zlib = 1;
  bench_start(&b, &ko, zlib_links);
  CHECK(run_until(&b, all_up, &b, 5000));
  CHECK(xcm__pool_link_zlib(b.pool, 0) && xcm__pool_link_zlib(b.pool, 1));
  CHECK(sess_login(&b, &s, "z1", "alice", "zlib"));
  sess_send(&s,
            "<iq type='get' id='rz'><query xmlns='jabber:iq:roster'/></iq>");
  CHECK(wait_got(&s, "bob@example.test", 3000));
  sess_free(&s);
  bench_stop(&b);
}

static void test_create_refused(void) {
  bench b;
  sess s;

  bench_start(&b, NULL, NULL);
  REQUIRE(run_until(&b, all_up, &b, 5000));
  xcm_testkit_refuse_creates(b.kit, 1);
  REQUIRE(sess_open(&b, &s, "no1") == 0);
  CHECK(run_until(&b, pred_created, &s, 3000));
  /* not-allowed: the owner is told, and the pool forgets the session. */
  CHECK_INT(s.created, -1);
  CHECK_INT(s.create_err, XCM_EAUTH);
  CHECK_INT(xcm__pool_session_count(b.pool), 0);
  sess_free(&s);
  bench_stop(&b);
}

static void ipv6(xcm_pool_options *o) {
  o->host = "::1";
  o->connections = 2;
}

static void test_ipv6(void) {
  xcm_testkit_options ko;
  bench b;

  xcm_testkit_options_init(&ko, sizeof ko);
  ko.host = "::1";
  bench_start(&b, &ko, ipv6);
  CHECK(run_until(&b, all_up, &b, 5000));
  bench_stop(&b);
}

/* The link's address NAME/PREFIXn-m has a fixed buffer: a name that
 * would not fit is refused, never cut (the server would see another
 * CM). */
static void test_name_too_long(void) {
  xcm_pool_options o;
  xcm_pool *pool = NULL;
  xcm_ctx ctx;
  uv_loop_t loop;
  char name[XCM_POOL_MAX_JID];

  REQUIRE(uv_loop_init(&loop) == 0);
  REQUIRE(xcm__ctx_init(&ctx, &loop, NULL) == 0);
  memset(name, 'n', sizeof name - 1);
  name[sizeof name - 1] = '\0';
  xcm__pool_options_defaults(&o);
  o.domain = "example.test";
  o.name = name;
  o.secret = "cmsecret";
  CHECK_INT(xcm__pool_new(&pool, &ctx, &o, &events, NULL), XCM_EINVAL);
  CHECK(pool == NULL);
  xcm__ctx_close(&ctx, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(uv_loop_close(&loop), 0);
}

/* Two CMs under one name: the second one's connections are refused with
 * conflict, and it must keep asking for the same addresses rather than
 * take fresh resources, which Openfire would accept into the first one's
 * pool (its sessions' traffic then spread over both processes). */
static void two_links(xcm_pool_options *o) {
  o->connections = 2;
}

static int twin_refused(void *ud) {
  bench *twin = ud;

  return twin->links_down_events >= 6;
}

static void test_same_name_twice(void) {
  bench b, twin;
  xcm_testkit_stats st;
  unsigned i;

  bench_start(&b, NULL, two_links);
  CHECK(run_until(&b, all_up, &b, 5000));
  memset(&twin, 0, sizeof twin);
  twin.opt = b.opt;
  REQUIRE(xcm__pool_new(&twin.pool, &b.ctx, &twin.opt, &events, &twin) == 0);
  REQUIRE(xcm__pool_start(twin.pool) == 0);
  /* Three refusals per link: two retries each after the first. */
  CHECK(run_until(&b, twin_refused, &twin, 10000));
  if (!CHECK(strstr(twin.last_down_why, "conflict (another CM uses this "
                                        "name)") != NULL))
    xcm_test_note("why: %s", twin.last_down_why);
  CHECK_INT(xcm__pool_links_up(twin.pool), 0);
  CHECK_INT(twin.links_up_events, 0);
  /* Openfire's pool for cm1 still holds the first CM's two, and only. */
  CHECK_INT(xcm_testkit_connections(b.kit), 2);
  for (i = 0; i < 2; i++) {
    const char *jid = xcm_testkit_connection_jid(b.kit, i);

    CHECK(jid != NULL &&
          (strcmp(jid, "cm1/w1-1") == 0 || strcmp(jid, "cm1/w2-1") == 0));
  }
  xcm_testkit_get_stats(b.kit, &st, sizeof st);
  CHECK(st.refused >= 6);
  CHECK_INT(xcm__pool_links_up(b.pool), 2);
  xcm__pool_close(twin.pool, pool_closed, &twin);
  while (twin.closed < 1)
    uv_run(&b.loop, UV_RUN_ONCE);
  bench_stop(&b);
}

/* Two CMs under one name with different resource prefixes: nothing
 * refuses the second, and Openfire answers either one's requests on any
 * connection under the name. The one that receives the other's answers
 * must say so (once, at error level): nothing else would show it. */
static char twin_error[512];
static int twin_errors;

static void twin_log(void *ud, int level, const char *msg) {
  (void)ud;
  if (level != XCM_LOG_ERROR)
    return;
  twin_errors++;
  snprintf(twin_error, sizeof twin_error, "%s", msg);
}

static int twin_warned(void *ud) {
  (void)ud;
  return twin_errors > 0;
}

static int all_settled(void *ud) {
  sess *s = ud;
  int i;

  for (i = 0; i < 30; i++)
    if (s[i].created == 0)
      return 0;
  return 1;
}

static void ctx_done(xcm_ctx *ctx) {
  (void)ctx;
}

static void test_same_name_other_prefix(void) {
  enum { N = 30 };
  static sess s[N];
  bench b, twin;
  xcm_ctx tctx;
  char sid[16];
  int i, failed = 0;

  twin_errors = 0;
  twin_error[0] = '\0';
  bench_start(&b, NULL, two_links);
  CHECK(run_until(&b, all_up, &b, 5000));
  REQUIRE(xcm__ctx_init(&tctx, &b.loop, NULL) == 0);
  tctx.log = twin_log;
  tctx.log_level = XCM_LOG_DEBUG;
  memset(&twin, 0, sizeof twin);
  twin.opt = b.opt;
  twin.opt.resource_prefix = "z";
  REQUIRE(xcm__pool_new(&twin.pool, &tctx, &twin.opt, &events, &twin) == 0);
  REQUIRE(xcm__pool_start(twin.pool) == 0);
  CHECK(run_until(&b, all_up, &twin, 5000));
  CHECK_INT(xcm_testkit_connections(b.kit), 4);
  /* Each answer goes to one of the four connections at random: with 30
   * creates, some reach the twin (all 30 missing it: 2^-30). */
  for (i = 0; i < N; i++) {
    snprintf(sid, sizeof sid, "mix%d", i);
    REQUIRE(sess_open(&b, &s[i], sid) == 0);
  }
  CHECK(run_until(&b, twin_warned, NULL, 10000));
  if (!CHECK(strstr(twin_error, "Openfire sent cm1 an answer to another "
                                "connection manager's request") != NULL))
    xcm_test_note("logged: %s", twin_error);
  /* The first CM's creates answered on the twin never come back. */
  CHECK(run_until(&b, all_settled, s, 15000));
  for (i = 0; i < N; i++)
    failed += s[i].created < 0;
  CHECK(failed > 0);
  CHECK_INT(twin_errors, 1); /* once a minute at most */
  for (i = 0; i < N; i++)
    sess_free(&s[i]);
  xcm__pool_close(twin.pool, pool_closed, &twin);
  while (twin.closed < 1)
    uv_run(&b.loop, UV_RUN_ONCE);
  xcm__ctx_close(&tctx, ctx_done);
  bench_stop(&b);
}

static const xcm_test tests[] = {
    {"same_name_other_prefix", test_same_name_other_prefix},
    {"same_name_twice", test_same_name_twice},
    {"name_too_long", test_name_too_long},
    {"ipv6", test_ipv6},
    {"link_zlib", test_link_zlib},
    {"create_refused", test_create_refused},
    {"linger_returns_and_bounces", test_linger_returns_and_bounces},
    {"linger_with_bare_payloads", test_linger_with_bare_payloads},
    {"link_tls_verified", test_link_tls_verified},
    {"link_tls_untrusted", test_link_tls_untrusted},
    {"link_tls_accept_self_signed", test_link_tls_accept_self_signed},
    {"link_tls_required_not_offered", test_link_tls_required_not_offered},
    {"silent_server_is_dead", test_silent_server_is_dead},
    {"handshake_and_policy", test_handshake_and_policy},
    {"bad_secret", test_bad_secret},
    {"thousand_sessions", test_thousand_sessions},
    {"order_across_link_loss", test_order_across_link_loss},
    {"all_links_lost", test_all_links_lost},
    {"server_close", test_server_close},
    {"failed_goes_offline", test_failed_goes_offline},
    {"flow_control_when_stalled", test_flow_control_when_stalled},
};

int main(int argc, char **argv) {
  return xcm_test_main(argc, argv, XCM_TESTS(tests));
}
