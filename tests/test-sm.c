/* XEP-0198 acknowledgements held at the CM, over loopback with scripted
 * raw clients and the in-process testkit upstream.
 *
 * The protocol cases (enable before and after bind, twice, with resume
 * asked; <r/> and <a/> before enable; the r/a exchange; counters that
 * wrap at 2^32; a bad h; the unacked queue's bound) each check the bytes
 * on the wire and the statistics. The loss cases (a connection cut in
 * the middle of a burst; clients that stop reading, one and several at
 * once) check that every message a client did not acknowledge reaches
 * the testkit's offline store exactly once, and that the store then
 * holds exactly the messages after the client's last ack: nothing lost,
 * nothing stored twice. A client acknowledges only the stanzas it read
 * whole (it counts end tags), so what it acknowledged it has. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "attach.h"
#include "harness.h"
#include "session/sm.h"
#include "xcm/error.h"
#include "rawclient.h"
#include "util/buf.h"
#include "world.h"
#include "xcm/testkit.h"
#include "xcm/xcm.h"

#define SM_NS "urn:xmpp:sm:3"
#define ENABLE "<enable xmlns='" SM_NS "'/>"
#define ENABLED "<enabled xmlns=\"" SM_NS "\"/>"
#define R_ELEM "<r xmlns=\"" SM_NS "\"/>"

/* ---- the world --------------------------------------------------------- */

typedef struct knobs {
  int sm;
  unsigned max_unacked;
  size_t max_unacked_bytes;
  unsigned every, every_bytes, quiet_ms;
  size_t max_client_out;
} knobs;

static knobs K;

static void cm_log(void *ud, int level, const char *msg) {
  (void)ud;
  (void)level;
  xcm_test_note("log: %s", msg);
}

static void tune(xcm_options *o, void *ud) {
  (void)ud;
  if (getenv("XCM_TEST_LOG") != NULL) {
    o->log = cm_log;
    o->log_level = XCM_LOG_DEBUG;
  }
  o->sm_enable = K.sm;
  if (K.max_unacked)
    o->sm_max_unacked = K.max_unacked;
  if (K.max_unacked_bytes)
    o->sm_max_unacked_bytes = K.max_unacked_bytes;
  if (K.every)
    o->sm_ack_every = K.every;
  if (K.every_bytes)
    o->sm_ack_every_bytes = K.every_bytes;
  if (K.quiet_ms)
    o->sm_ack_quiet_ms = K.quiet_ms;
  if (K.max_client_out)
    o->max_client_out = K.max_client_out;
  /* The senders flood on purpose: they are not what is tested. */
  o->rate = XCM_UNLIMITED;
  o->rate_bytes = XCM_UNLIMITED;
}

static const char *const accounts[] = {"alice", "bob",  "carol",
                                       "dave",  "erin", NULL};

static void start(xcm_test_world *w, const knobs *k) {
  xcm_test_world_setup s;

  memset(&s, 0, sizeof s);
  s.seed = 198;
  s.offline_max = 100000;
  s.accounts = accounts;
  s.tune = tune;
  K = *k;
  xcm_test_world_start(w, &s);
}

static knobs sm_on(void) {
  knobs k;

  memset(&k, 0, sizeof k);
  k.sm = 1;
  return k;
}

static void stats(xcm_test_world *w, xcm_stats *st) {
  xcm_cm_stats(w->cm, st, sizeof *st);
}

/* SASL PLAIN for user, whose password is its name. */
static void auth_for(char *out, size_t cap, const char *user) {
  static const char b64[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  unsigned char raw[128];
  size_t n = 0, i, o;
  char enc[176];

  raw[n++] = 0;
  memcpy(raw + n, user, strlen(user));
  n += strlen(user);
  raw[n++] = 0;
  memcpy(raw + n, user, strlen(user));
  n += strlen(user);
  for (i = 0, o = 0; i < n; i += 3) {
    unsigned v = (unsigned)raw[i] << 16;

    if (i + 1 < n)
      v |= (unsigned)raw[i + 1] << 8;
    if (i + 2 < n)
      v |= raw[i + 2];
    enc[o++] = b64[(v >> 18) & 63];
    enc[o++] = b64[(v >> 12) & 63];
    enc[o++] = i + 1 < n ? b64[(v >> 6) & 63] : '=';
    enc[o++] = i + 2 < n ? b64[v & 63] : '=';
  }
  enc[o] = '\0';
  snprintf(out, cap,
           "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
           "mechanism='PLAIN'>%s</auth>",
           enc);
}

static int login(xcm_test_world *w, xcm_raw *r, const char *user,
                 const char *resource) {
  char auth[320];

  auth_for(auth, sizeof auth, user);
  if (!xcm_raw_open(r, &w->loop, "127.0.0.1", w->port, 1))
    return 0;
  return xcm_raw_login(r, XCM_RAW_HDR, auth, resource);
}

/* ---- a client that acknowledges what it read whole ---------------------- */

typedef struct acker {
  xcm_raw *r;
  size_t scan;       /* where the next look starts in r->in */
  uint32_t handled;  /* stanzas read whole since <enabled/> */
  uint32_t last_h;   /* the h of our last <a/> */
  unsigned acks;     /* <a/> sent */
  unsigned requests; /* <r/> seen */
  int acking;
} acker;

/* The earliest of the patterns in s, or NULL. */
static const char *first_of(const char *s, int *which) {
  static const char *const pat[] = {"</message>", "<presence", "<iq ", R_ELEM};
  const char *best = NULL;
  int i;

  for (i = 0; i < 4; i++) {
    const char *p = strstr(s, pat[i]);

    if (p != NULL && (best == NULL || p < best)) {
      best = p;
      *which = i;
    }
  }
  return best;
}

static void acker_read(xcm_raw *r, int eof) {
  acker *a = r->ud;
  const char *p;
  int which = 0;
  char ans[96];

  if (eof || r->in.len == 0)
    return;
  if (a->scan > r->in.len) /* the test cleared what was read */
    a->scan = 0;
  while ((p = first_of(r->in.data + a->scan, &which)) != NULL) {
    a->scan = (size_t)(p - r->in.data) + 4;
    if (which < 3) {
      a->handled++;
      continue;
    }
    a->requests++;
    if (!a->acking)
      continue;
    snprintf(ans, sizeof ans, "<a xmlns='" SM_NS "' h='%u'/>",
             (unsigned)a->handled);
    xcm_raw_sends(r, ans);
    a->last_h = a->handled;
    a->acks++;
  }
  /* A pattern cut by the read's end is found again next time. */
  if (r->in.len > a->scan + 16)
    a->scan = r->in.len - 16;
}

/* Log user in, enable acknowledgements, and acknowledge from then on. */
static int login_acking(xcm_test_world *w, xcm_raw *r, acker *a,
                        const char *user, const char *resource) {
  memset(a, 0, sizeof *a);
  if (!login(w, r, user, resource))
    return 0;
  xcm__buf_reset(&r->in);
  xcm_raw_sends(r, ENABLE);
  if (!xcm_raw_wait(r, ENABLED, 3000))
    return 0;
  xcm__buf_reset(&r->in);
  a->r = r;
  a->acking = 1;
  r->ud = a;
  r->on_data = acker_read;
  return 1;
}

typedef struct acks_wait {
  xcm_test_world *w;
  uint64_t want;
} acks_wait;

static int acks_arrived(void *ud) {
  acks_wait *aw = ud;
  xcm_stats st;

  stats(aw->w, &st);
  return st.sm_acks_received >= aw->want;
}

/* ---- the queue alone --------------------------------------------------- */

typedef struct drained {
  char all[64];
  size_t len;
  unsigned n;
} drained;

static void collect(void *ud, const char *data, size_t len) {
  drained *d = ud;

  if (d->len + len < sizeof d->all) {
    memcpy(d->all + d->len, data, len);
    d->len += len;
  }
  d->n++;
}

static void test_queue(void) {
  xcm_sm *sm = xcm__sm_new(NULL, 0xfffffffeu);
  drained d;

  REQUIRE(sm != NULL);
  CHECK_INT(xcm__sm_footprint(sm), sizeof(xcm_sm));
  CHECK_INT(xcm__sm_push(NULL, sm, "<a/>", 4, 3, 100), 0);
  CHECK_INT(xcm__sm_push(NULL, sm, "<bb/>", 5, 3, 100), 0);
  CHECK_INT(xcm__sm_push(NULL, sm, "<ccc/>", 6, 3, 100), 0);
  /* Count bound, then byte bound: nothing changes. */
  CHECK_INT(xcm__sm_push(NULL, sm, "<d/>", 4, 3, 100), XCM_ELIMIT);
  CHECK_INT(xcm__sm_push(NULL, sm, "<d/>", 4, 4, 17), XCM_ELIMIT);
  CHECK_INT(sm->h_out, 1);
  CHECK_INT(sm->count, 3);
  CHECK_INT(xcm__sm_bytes(sm), 15);
  /* Across the wrap: 0 covers two of three; 2 is past what was sent. */
  CHECK_INT(xcm__sm_ack(NULL, sm, 0), 0);
  CHECK_INT(sm->count, 1);
  CHECK_INT(xcm__sm_ack(NULL, sm, 2), XCM_EPROTO);
  CHECK_INT(xcm__sm_ack(NULL, sm, 0xfffffffdu), XCM_EPROTO);
  CHECK_INT(xcm__sm_ack(NULL, sm, 0), 0);
  CHECK_INT(sm->count, 1);
  /* The acknowledged front is reused before the buffer grows. */
  CHECK_INT(xcm__sm_push(NULL, sm, "<e/>", 4, 3, 100), 0);
  memset(&d, 0, sizeof d);
  CHECK_INT(xcm__sm_drain(NULL, sm, collect, &d), 2);
  CHECK_MEM(d.all, d.len, "<ccc/><e/>", 10);
  CHECK_INT(sm->count, 0);
  CHECK(sm->q == NULL);
  CHECK_INT(xcm__sm_footprint(sm), sizeof(xcm_sm));
  /* All acknowledged: the buffer goes. */
  CHECK_INT(xcm__sm_push(NULL, sm, "<f/>", 4, 3, 100), 0);
  CHECK_INT(xcm__sm_ack(NULL, sm, sm->h_out), 0);
  CHECK(sm->q == NULL);
  xcm__sm_free(NULL, sm);
}

/* ---- the protocol ------------------------------------------------------ */

static void test_offered_only_when_enabled(void) {
  xcm_test_world w;
  xcm_raw r;
  knobs k;

  memset(&k, 0, sizeof k);
  start(&w, &k);
  REQUIRE(xcm_raw_open(&r, &w.loop, "127.0.0.1", w.port, 1));
  REQUIRE(xcm_raw_sasl(&r, XCM_RAW_HDR, XCM_RAW_AUTH_BOB));
  CHECK(xcm_raw_wait(&r, "</stream:features>", 3000));
  CHECK(strstr(r.in.data, SM_NS) == NULL);
  xcm_raw_sends(&r, "<iq type='set' id='b1'><bind "
                    "xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>");
  CHECK(xcm_raw_wait(&r, "id=\"b1\"", 3000));
  xcm_raw_sends(&r, ENABLE);
  CHECK(xcm_raw_wait(&r, "<failed xmlns=\"" SM_NS "\"><feature-not-implemented",
                     3000));
  xcm_raw_free(&r);
  xcm_test_world_stop(&w, 1000);

  k = sm_on();
  start(&w, &k);
  REQUIRE(xcm_raw_open(&r, &w.loop, "127.0.0.1", w.port, 1));
  xcm_raw_sends(&r, XCM_RAW_HDR);
  CHECK(xcm_raw_wait(&r, "</stream:features>", 3000));
  /* Not before authentication (XEP-0198 section 2). */
  CHECK(strstr(r.in.data, SM_NS) == NULL);
  xcm_raw_free(&r);
  REQUIRE(xcm_raw_open(&r, &w.loop, "127.0.0.1", w.port, 1));
  REQUIRE(xcm_raw_sasl(&r, XCM_RAW_HDR, XCM_RAW_AUTH_BOB));
  CHECK(xcm_raw_wait(&r, "</stream:features>", 3000));
  CHECK(strstr(r.in.data, "<sm xmlns=\"" SM_NS "\"/>") != NULL);
  xcm_raw_free(&r);
  xcm_test_world_stop(&w, 1000);
}

static void test_enable_before_and_after_bind(void) {
  xcm_test_world w;
  xcm_raw r;
  xcm_stats st;
  knobs k = sm_on();

  start(&w, &k);
  REQUIRE(xcm_raw_open(&r, &w.loop, "127.0.0.1", w.port, 1));
  REQUIRE(xcm_raw_sasl(&r, XCM_RAW_HDR, XCM_RAW_AUTH_BOB));
  xcm__buf_reset(&r.in);
  /* Before bind: failed, and the stream goes on. */
  xcm_raw_sends(&r, ENABLE);
  CHECK(xcm_raw_wait(&r, "<failed xmlns=\"" SM_NS "\"><unexpected-request",
                     3000));
  xcm_raw_sends(&r, "<iq type='set' id='b1'><bind "
                    "xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>");
  CHECK(xcm_raw_wait(&r, "id=\"b1\"", 3000));
  xcm__buf_reset(&r.in);
  /* After bind, with resume asked: enabled, resumable for the default
   * 300 s, with an id of 128 bits (22 base64url characters). */
  xcm_raw_sends(&r, "<enable xmlns='" SM_NS "' resume='true'/>");
  CHECK(xcm_raw_wait(&r, "resume=\"true\" max=\"300\"/>", 3000));
  {
    const char *id = strstr(r.in.data, "<enabled xmlns=\"" SM_NS "\" id=\"");
    const char *end;

    REQUIRE(id != NULL);
    id += strlen("<enabled xmlns=\"" SM_NS "\" id=\"");
    end = strchr(id, '"');
    REQUIRE(end != NULL);
    CHECK_INT(end - id, 22);
  }
  stats(&w, &st);
  CHECK_INT(st.sm_sessions_now, 1);
  /* Twice: failed again, the first still holds. */
  xcm__buf_reset(&r.in);
  xcm_raw_sends(&r, ENABLE);
  CHECK(xcm_raw_wait(&r, "<failed xmlns=\"" SM_NS "\"><unexpected-request",
                     3000));
  xcm_raw_sends(&r, "<r xmlns='" SM_NS "'/>");
  CHECK(xcm_raw_wait(&r, "<a xmlns=\"" SM_NS "\" h=\"0\"/>", 3000));
  /* A resume on a bound stream: failed, unexpected-request. */
  xcm__buf_reset(&r.in);
  xcm_raw_sends(&r, "<resume xmlns='" SM_NS "' previd='x' h='0'/>");
  CHECK(xcm_raw_wait(&r, "<failed xmlns=\"" SM_NS "\"><unexpected-request",
                     3000));
  CHECK(!r.eof);
  xcm_raw_free(&r);
  xcm_test_world_stop(&w, 1000);
}

static int sm_gone(void *ud) {
  xcm_stats st;

  stats(ud, &st);
  return st.sm_sessions_now == 0 && st.clients_now == 0;
}

/* No client with acknowledgements left (others may stay). */
static int sm_off(void *ud) {
  xcm_stats st;

  stats(ud, &st);
  return st.sm_sessions_now == 0;
}

/* <r/> or <a/> before <enable/>: unsupported-stanza-type. */
static void test_r_before_enable(void) {
  static const char *const elems[] = {"<r xmlns='" SM_NS "'/>",
                                      "<a xmlns='" SM_NS "' h='0'/>"};
  xcm_test_world w;
  xcm_raw r;
  knobs k = sm_on();
  unsigned i;

  start(&w, &k);
  for (i = 0; i < 2; i++) {
    REQUIRE(login(&w, &r, "bob", "phone"));
    xcm__buf_reset(&r.in);
    xcm_raw_sends(&r, elems[i]);
    CHECK(xcm_raw_wait(&r, "<unsupported-stanza-type", 3000));
    CHECK(xcm_test_run_until(&w.loop, xcm_raw_is_eof, &r, 3000));
    xcm_raw_free(&r);
  }
  CHECK(xcm_test_run_until(&w.loop, sm_gone, &w, 3000));
  xcm_test_world_stop(&w, 1000);
}

static void send_to(xcm_raw *from, const char *to, unsigned n, size_t pad) {
  char head[160];
  xcm_buf b;

  xcm__buf_init(&b, NULL);
  snprintf(head, sizeof head,
           "<message to='%s' type='chat' id='m%05u'><body>n=%05u ", to, n, n);
  REQUIRE(xcm__buf_append_str(&b, head) == 0);
  REQUIRE(xcm__buf_reserve(&b, pad) == 0);
  memset(b.data + b.len, 'p', pad);
  b.len += pad;
  REQUIRE(xcm__buf_append_str(&b, "</body></message>") == 0);
  xcm_raw_send(from, b.data, b.len);
  xcm__buf_free(&b);
}

typedef struct handled_wait {
  acker *a;
  uint32_t want;
} handled_wait;

static int handled_at_least(void *ud) {
  handled_wait *h = ud;

  return h->a->handled >= h->want;
}

/* The exchange both ways, with requests after N stanzas and when the
 * connection goes quiet. */
static void test_r_a_exchange(void) {
  xcm_test_world w;
  xcm_raw alice, bob;
  acker a;
  xcm_stats st;
  knobs k = sm_on();
  handled_wait hw;
  acks_wait aw;
  unsigned i;

  k.every = 5;
  k.quiet_ms = 100;
  start(&w, &k);
  REQUIRE(login(&w, &alice, "alice", "desk"));
  REQUIRE(login_acking(&w, &bob, &a, "bob", "phone"));
  /* Our h: stanzas bob sent that the CM passed on. */
  for (i = 0; i < 3; i++)
    send_to(&bob, "alice@example.test/desk", i, 10);
  xcm_raw_sends(&bob, "<r xmlns='" SM_NS "'/>");
  CHECK(xcm_raw_wait(&bob, "<a xmlns=\"" SM_NS "\" h=\"3\"/>", 3000));
  CHECK(xcm_raw_wait(&alice, "n=00002", 3000));
  /* 12 to bob: requests after 5 and 10, then the quiet one for the last
   * two. */
  for (i = 0; i < 12; i++)
    send_to(&alice, "bob@example.test/phone", i, 10);
  hw.a = &a;
  hw.want = 12;
  CHECK(xcm_test_run_until(&w.loop, handled_at_least, &hw, 3000));
  aw.w = &w;
  aw.want = 3;
  CHECK(xcm_test_run_until(&w.loop, acks_arrived, &aw, 3000));
  CHECK_INT(a.requests, 3);
  CHECK_INT(a.last_h, 12);
  stats(&w, &st);
  CHECK_INT(st.sm_acks_requested, 3);
  CHECK_INT(st.sm_acks_received, 3);
  /* Quiet once all is acknowledged: no more requests. */
  xcm_test_run_for(&w.loop, 300);
  CHECK_INT(a.requests, 3);
  /* Everything was acknowledged: nothing goes back at the end. */
  xcm_raw_reset(&bob);
  CHECK(xcm_test_run_until(&w.loop, sm_off, &w, 3000));
  stats(&w, &st);
  CHECK_INT(st.sm_returned, 0);
  CHECK_INT(st.sm_sessions_now, 0);
  CHECK_INT(xcm_testkit_offline_count(w.kit, "bob"), 0);
  xcm_raw_free(&bob);
  xcm_raw_free(&alice);
  xcm_test_world_stop(&w, 1000);
}

/* Both counters start at 2^32 - 2 (the test hook), so they wrap after
 * two stanzas each way. */
static void test_counters_wrap(void) {
  xcm_test_world w;
  xcm_raw alice, bob;
  acker a;
  xcm_stats st;
  knobs k = sm_on();
  handled_wait hw;
  unsigned i;

  k.every = 1000;
  k.quiet_ms = XCM_UNLIMITED;
  start(&w, &k);
  xcm__cm_sm_start(w.cm, 0xfffffffeu);
  REQUIRE(login(&w, &alice, "alice", "desk"));
  REQUIRE(login_acking(&w, &bob, &a, "bob", "phone"));
  a.acking = 0;
  for (i = 0; i < 3; i++)
    send_to(&bob, "alice@example.test/desk", i, 10);
  xcm_raw_sends(&bob, "<r xmlns='" SM_NS "'/>");
  CHECK(xcm_raw_wait(&bob, "<a xmlns=\"" SM_NS "\" h=\"1\"/>", 3000));
  for (i = 0; i < 3; i++)
    send_to(&alice, "bob@example.test/phone", i, 10);
  hw.a = &a;
  hw.want = 3;
  CHECK(xcm_test_run_until(&w.loop, handled_at_least, &hw, 3000));
  /* 2^32 - 2 + 3 = 1 (mod 2^32): h='0' acknowledges two, h='1' all. */
  xcm_raw_sends(&bob, "<a xmlns='" SM_NS "' h='0'/>");
  xcm_raw_sends(&bob, "<a xmlns='" SM_NS "' h='1'/>");
  xcm__buf_reset(&bob.in);
  xcm_raw_sends(&bob, "<r xmlns='" SM_NS "'/>");
  CHECK(xcm_raw_wait(&bob, "<a xmlns=\"" SM_NS "\" h=\"1\"/>", 3000));
  stats(&w, &st);
  CHECK_INT(st.sm_bad_h, 0);
  CHECK_INT(st.sm_acks_received, 2);
  /* One past what was sent, across the wrap. */
  xcm_raw_sends(&bob, "<a xmlns='" SM_NS "' h='2'/>");
  CHECK(xcm_raw_wait(&bob, "h=\"2\" send-count=\"1\"", 3000));
  CHECK(xcm_test_run_until(&w.loop, xcm_raw_is_eof, &bob, 3000));
  CHECK(xcm_test_run_until(&w.loop, sm_off, &w, 3000));
  stats(&w, &st);
  CHECK_INT(st.sm_bad_h, 1);
  CHECK_INT(st.sm_returned, 0);
  xcm_raw_free(&bob);
  xcm_raw_free(&alice);
  xcm_test_world_stop(&w, 1000);
}

typedef struct stored_wait {
  xcm_test_world *w;
  const char *user;
  unsigned want;
} stored_wait;

static int stored_at_least(void *ud) {
  stored_wait *s = ud;

  return xcm_testkit_offline_count(s->w->kit, s->user) >= s->want;
}

/* What the testkit stores for user: each counter n=... once, and they
 * run exactly from `from` to `to` (inclusive). */
static int stored_exactly(xcm_test_world *w, const char *user, unsigned from,
                          unsigned to) {
  unsigned n = xcm_testkit_offline_count(w->kit, user), i, c;
  unsigned char *seen = calloc(to + 2, 1);
  int ok = seen != NULL && n == to + 1 - from;

  for (i = 0; ok && i < n; i++) {
    size_t len;
    const char *m = xcm_testkit_offline_message(w->kit, user, i, &len);
    const char *b = m != NULL ? strstr(m, "<body>n=") : NULL;

    if (b == NULL || sscanf(b, "<body>n=%u", &c) != 1 || c < from || c > to ||
        seen[c]++)
      ok = 0;
  }
  if (!ok) {
    xcm_test_note("%s: %u stored, expected %u to %u", user, n, from, to);
    memset(seen, 0, to + 2);
    for (i = 0; i < n; i++) {
      size_t len;
      const char *m = xcm_testkit_offline_message(w->kit, user, i, &len);
      const char *b = m != NULL ? strstr(m, "<body>n=") : NULL;

      if (b != NULL && sscanf(b, "<body>n=%u", &c) == 1 && c <= to)
        seen[c]++;
    }
    for (c = from; c <= to; c++)
      if (seen[c] != 1)
        xcm_test_note("  n=%u stored %u times", c, seen[c]);
  }
  free(seen);
  return ok;
}

/* An h past what was sent: undefined-condition with the XEP's
 * <handled-count-too-high/>, and what was not acknowledged goes back. */
static void test_bad_h(void) {
  xcm_test_world w;
  xcm_raw alice, bob;
  acker a;
  xcm_stats st;
  knobs k = sm_on();
  handled_wait hw;
  stored_wait sw;
  unsigned i;

  k.every = 1000;
  k.quiet_ms = XCM_UNLIMITED;
  start(&w, &k);
  REQUIRE(login(&w, &alice, "alice", "desk"));
  REQUIRE(login_acking(&w, &bob, &a, "bob", "phone"));
  a.acking = 0;
  for (i = 0; i < 2; i++)
    send_to(&alice, "bob@example.test/phone", i, 10);
  hw.a = &a;
  hw.want = 2;
  CHECK(xcm_test_run_until(&w.loop, handled_at_least, &hw, 3000));
  xcm_raw_sends(&bob, "<a xmlns='" SM_NS "' h='5'/>");
  CHECK(xcm_raw_wait(
      &bob,
      "<stream:error><undefined-condition "
      "xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/><handled-count-too-high "
      "xmlns=\"" SM_NS "\" h=\"5\" send-count=\"2\"/>",
      3000));
  CHECK(xcm_raw_wait(&bob,
                     "You acknowledged 5 stanzas, but I only sent you "
                     "2 so far.</text></stream:error></stream:stream>",
                     3000));
  sw.w = &w;
  sw.user = "bob";
  sw.want = 2;
  CHECK(xcm_test_run_until(&w.loop, stored_at_least, &sw, 3000));
  CHECK(stored_exactly(&w, "bob", 0, 1));
  stats(&w, &st);
  CHECK_INT(st.sm_bad_h, 1);
  CHECK_INT(st.sm_returned, 2);
  CHECK_INT(st.stream_errors[XCM_COND_UNDEFINED_CONDITION], 1);
  xcm_raw_free(&bob);
  xcm_raw_free(&alice);
  xcm_test_world_stop(&w, 1000);
}

/* A client that reads and never acknowledges passes the queue's bound:
 * policy-violation, and everything goes back, the one that did not fit
 * last. */
static void test_overflow(void) {
  xcm_test_world w;
  xcm_raw alice, bob;
  acker a;
  xcm_stats st;
  knobs k = sm_on();
  stored_wait sw;
  unsigned i;

  k.max_unacked = 5;
  k.every = 2;
  start(&w, &k);
  REQUIRE(login(&w, &alice, "alice", "desk"));
  REQUIRE(login_acking(&w, &bob, &a, "bob", "phone"));
  a.acking = 0;
  for (i = 0; i < 6; i++)
    send_to(&alice, "bob@example.test/phone", i, 10);
  CHECK(xcm_raw_wait(&bob, "<policy-violation", 3000));
  CHECK(xcm_raw_wait(&bob, "too many stanzas not acknowledged", 3000));
  sw.w = &w;
  sw.user = "bob";
  sw.want = 6;
  CHECK(xcm_test_run_until(&w.loop, stored_at_least, &sw, 3000));
  CHECK(stored_exactly(&w, "bob", 0, 5));
  stats(&w, &st);
  CHECK_INT(st.sm_overflows, 1);
  CHECK_INT(st.sm_returned, 6);
  CHECK_INT(st.sm_return_errors, 0);
  /* The store reaches bob at his next login. */
  xcm_raw_free(&bob);
  REQUIRE(login(&w, &bob, "bob", "phone"));
  CHECK(xcm_raw_wait(&bob, "n=00005", 3000));
  xcm_raw_free(&bob);
  xcm_raw_free(&alice);
  xcm_test_world_stop(&w, 1000);
}

/* An orderly close (</stream:stream>) with stanzas unacknowledged: they
 * go back as for a cut. */
static void test_orderly_close_with_unacked(void) {
  xcm_test_world w;
  xcm_raw alice, bob;
  acker a;
  xcm_stats st;
  knobs k = sm_on();
  handled_wait hw;
  stored_wait sw;
  unsigned i;

  k.every = 1000;
  k.quiet_ms = XCM_UNLIMITED;
  start(&w, &k);
  REQUIRE(login(&w, &alice, "alice", "desk"));
  REQUIRE(login_acking(&w, &bob, &a, "bob", "phone"));
  a.acking = 0;
  for (i = 0; i < 4; i++)
    send_to(&alice, "bob@example.test/phone", i, 10);
  hw.a = &a;
  hw.want = 4;
  CHECK(xcm_test_run_until(&w.loop, handled_at_least, &hw, 3000));
  /* Two acknowledged, two not. */
  xcm_raw_sends(&bob, "<a xmlns='" SM_NS "' h='2'/></stream:stream>");
  CHECK(xcm_test_run_until(&w.loop, xcm_raw_is_eof, &bob, 3000));
  sw.w = &w;
  sw.user = "bob";
  sw.want = 2;
  CHECK(xcm_test_run_until(&w.loop, stored_at_least, &sw, 3000));
  CHECK(stored_exactly(&w, "bob", 2, 3));
  CHECK(xcm_test_run_until(&w.loop, sm_off, &w, 3000));
  stats(&w, &st);
  CHECK_INT(st.sm_returned, 2);
  CHECK_INT(st.sm_acks_received, 1);
  xcm_raw_free(&bob);
  xcm_raw_free(&alice);
  xcm_test_world_stop(&w, 1000);
}

/* An iq get the client read but never acknowledged is answered for it
 * when its connection is cut, so the asker is not left waiting; a
 * presence is dropped. */
static void test_iq_answered_when_cut(void) {
  xcm_test_world w;
  xcm_raw alice, bob;
  acker a;
  xcm_stats st;
  knobs k = sm_on();
  handled_wait hw;

  k.every = 1000;
  k.quiet_ms = XCM_UNLIMITED;
  start(&w, &k);
  REQUIRE(login(&w, &alice, "alice", "desk"));
  REQUIRE(login_acking(&w, &bob, &a, "bob", "phone"));
  a.acking = 0;
  xcm__buf_reset(&alice.in);
  xcm_raw_sends(&alice, "<iq type='get' id='v1' to='bob@example.test/phone'>"
                        "<query xmlns='jabber:iq:version'/></iq>");
  hw.a = &a;
  hw.want = 1;
  CHECK(xcm_test_run_until(&w.loop, handled_at_least, &hw, 3000));
  CHECK(strstr(bob.in.data, "id=\"v1\"") != NULL ||
        strstr(bob.in.data, "id='v1'") != NULL);
  xcm_raw_reset(&bob);
  CHECK(xcm_raw_wait(&alice, "type=\"error\"", 3000));
  CHECK(strstr(alice.in.data, "v1") != NULL);
  CHECK(xcm_test_run_until(&w.loop, sm_off, &w, 3000));
  stats(&w, &st);
  CHECK_INT(st.sm_returned, 1);
  CHECK_INT(st.failed_returned, 0);
  xcm_raw_free(&bob);
  xcm_raw_free(&alice);
  xcm_test_world_stop(&w, 1000);
}

/* ---- nothing lost ------------------------------------------------------ */

typedef struct routed_wait {
  xcm_test_world *w;
  uint64_t want;
} routed_wait;

static int routed(void *ud) {
  routed_wait *r = ud;
  xcm_testkit_stats ks;

  xcm_testkit_get_stats(r->w->kit, &ks, sizeof ks);
  return ks.routes_in >= r->want;
}

/* alice sends bob 200 messages in rounds of 10; bob acknowledges as he
 * reads until the 80th, then stops, and his connection is cut (a reset,
 * no </stream:stream>) while alice goes on. The store must then hold
 * exactly the messages after bob's last ack: those the CM held for him
 * (<failed/>), those routed to him while his session closed, those sent
 * after. */
static void test_cut_mid_burst(void) {
  enum { N = 200, ROUND = 10, CUT_AT = 80 };
  xcm_test_world w;
  xcm_raw alice, bob;
  acker a;
  xcm_stats st;
  xcm_testkit_stats ks;
  knobs k = sm_on();
  handled_wait hw;
  acks_wait aw;
  routed_wait rw;
  stored_wait sw;
  unsigned sent = 0, i, h;
  int cut = 0;
  const char *p;
  unsigned got = 0, stored;

  k.every = 7;
  k.quiet_ms = 50;
  start(&w, &k);
  REQUIRE(login(&w, &alice, "alice", "desk"));
  REQUIRE(login_acking(&w, &bob, &a, "bob", "phone"));
  rw.w = &w;
  while (sent < N) {
    xcm_testkit_get_stats(w.kit, &ks, sizeof ks);
    for (i = 0; i < ROUND; i++)
      send_to(&alice, "bob@example.test/phone", sent++, 200);
    rw.want = ks.routes_in + ROUND;
    REQUIRE(xcm_test_run_until(&w.loop, routed, &rw, 5000));
    if (!cut && sent >= CUT_AT + ROUND) {
      hw.a = &a;
      hw.want = CUT_AT;
      CHECK(xcm_test_run_until(&w.loop, handled_at_least, &hw, 5000));
      a.acking = 0;
      aw.w = &w;
      aw.want = a.acks;
      CHECK(xcm_test_run_until(&w.loop, acks_arrived, &aw, 5000));
      xcm_raw_reset(&bob);
      cut = 1;
    }
  }
  h = a.last_h;
  xcm_test_note("bob read %u, acknowledged %u; cut at alice's %u", a.handled, h,
                CUT_AT + ROUND);
  CHECK(h > 0 && h < N);
  sw.w = &w;
  sw.user = "bob";
  sw.want = N - h;
  CHECK(xcm_test_run_until(&w.loop, stored_at_least, &sw, 5000));
  xcm_test_run_until(&w.loop, sm_gone, &w, 1000);
  CHECK(stored_exactly(&w, "bob", h, N - 1));
  stored = xcm_testkit_offline_count(w.kit, "bob");
  stats(&w, &st);
  xcm_test_note("returned by the CM: %llu", (unsigned long long)st.sm_returned);
  CHECK(st.sm_returned >= 1);
  CHECK_INT(st.sm_return_errors, 0);
  /* At his next login, bob gets all of it. */
  xcm_raw_free(&bob);
  REQUIRE(login(&w, &bob, "bob", "phone"));
  CHECK(xcm_raw_wait(&bob, "n=00199", 5000));
  for (p = bob.in.data; (p = strstr(p, "<body>n=")) != NULL; p++)
    got++;
  CHECK_INT(got, N - h);
  xcm_test_note("table fault acks-connection-cut sent=%u delivered=%u "
                "failed=%u lost=%u inflight_bound=0",
                N, h, stored, N - h - stored);
  xcm_raw_free(&bob);
  xcm_raw_free(&alice);
  xcm_test_world_stop(&w, 1000);
}

/* Clients with acknowledgements stop reading while messages keep coming:
 * each is ended (its unacked queue or its output passes a bound), and
 * what it had not acknowledged, the kernel's share included, is stored
 * exactly once. nreaders at once, under load. */
enum { ROUNDS_AFTER = 45 };

static void run_stops_reading(unsigned nreaders, unsigned per_round, size_t pad,
                              const char *row) {
  static const char *const users[] = {"bob", "carol", "dave", "erin"};
  xcm_test_world w;
  xcm_raw alice, r[4];
  acker a[4];
  xcm_stats st;
  xcm_testkit_stats ks;
  knobs k = sm_on();
  routed_wait rw;
  acks_wait aw;
  unsigned sent[4] = {0}, i, j, total = 0, acked = 0, stored = 0;
  unsigned dropped_at = 0;
  uint64_t acks = 0;
  char to[64];

  k.every = 16;
  k.quiet_ms = 50;
  start(&w, &k);
  REQUIRE(login(&w, &alice, "alice", "desk"));
  for (j = 0; j < nreaders; j++)
    REQUIRE(login_acking(&w, &r[j], &a[j], users[j], "phone"));
  rw.w = &w;
  /* A few rounds read and acknowledged, then nobody reads. */
  for (i = 0; i < 4; i++) {
    xcm_testkit_get_stats(w.kit, &ks, sizeof ks);
    for (j = 0; j < nreaders; j++) {
      unsigned m;

      snprintf(to, sizeof to, "%s@example.test/phone", users[j]);
      for (m = 0; m < per_round; m++)
        send_to(&alice, to, sent[j]++, pad);
    }
    rw.want = ks.routes_in + (uint64_t)nreaders * per_round;
    REQUIRE(xcm_test_run_until(&w.loop, routed, &rw, 10000));
  }
  for (j = 0; j < nreaders; j++) {
    a[j].acking = 0;
    xcm_raw_set_reading(&r[j], 0);
    acks += a[j].acks;
  }
  aw.w = &w;
  aw.want = acks;
  CHECK(xcm_test_run_until(&w.loop, acks_arrived, &aw, 5000));
  /* A fixed number of rounds (the README's table wants sent exact), by
   * far enough for every reader to pass its unacked queue's bound (1 MiB)
   * with rounds to spare after. */
  for (i = 1; i <= ROUNDS_AFTER; i++) {
    xcm_testkit_get_stats(w.kit, &ks, sizeof ks);
    for (j = 0; j < nreaders; j++) {
      unsigned m;

      snprintf(to, sizeof to, "%s@example.test/phone", users[j]);
      for (m = 0; m < per_round; m++)
        send_to(&alice, to, sent[j]++, pad);
    }
    rw.want = ks.routes_in + (uint64_t)nreaders * per_round;
    REQUIRE(xcm_test_run_until(&w.loop, routed, &rw, 10000));
    stats(&w, &st);
    if (getenv("XCM_TEST_LOG") != NULL)
      xcm_test_note("round to %u at %llu: sm sessions %llu, clients %llu",
                    sent[0], (unsigned long long)uv_now(&w.loop),
                    (unsigned long long)st.sm_sessions_now,
                    (unsigned long long)st.clients_now);
    if (dropped_at == 0 && st.sm_sessions_now == 0)
      dropped_at = i;
  }
  xcm_test_note("every reader dropped by round %u of %u after it stopped",
                dropped_at, ROUNDS_AFTER);
  CHECK(dropped_at > 0 && dropped_at + 4 <= ROUNDS_AFTER);
  for (j = 0; j < nreaders; j++) {
    stored_wait sw = {&w, users[j], sent[j] - a[j].last_h};

    CHECK(xcm_test_run_until(&w.loop, stored_at_least, &sw, 10000));
    CHECK(stored_exactly(&w, users[j], a[j].last_h, sent[j] - 1));
    total += sent[j];
    acked += a[j].last_h;
    stored += xcm_testkit_offline_count(w.kit, users[j]);
  }
  stats(&w, &st);
  xcm_test_note("%u readers: sent %u, acknowledged %u, stored %u; the CM "
                "returned %llu (%llu errors), overflows %llu",
                nreaders, total, acked, stored,
                (unsigned long long)st.sm_returned,
                (unsigned long long)st.sm_return_errors,
                (unsigned long long)st.sm_overflows);
  CHECK_INT(st.sm_return_errors, 0);
  CHECK_INT(acked + stored, total);
  xcm_test_note("table fault %s sent=%u delivered=%u failed=%u lost=%u "
                "inflight_bound=0",
                row, total, acked, stored, total - acked - stored);
  for (j = 0; j < nreaders; j++)
    xcm_raw_free(&r[j]);
  xcm_raw_free(&alice);
  xcm_test_world_stop(&w, 1000);
}

static void test_stops_reading(void) {
  run_stops_reading(1, 8, 4000, "acks-client-stops-reading");
}

static void test_stops_reading_four_under_load(void) {
  run_stops_reading(4, 16, 2000, "acks-four-stop-reading");
}

static const xcm_test tests[] = {
    {"queue", test_queue},
    {"offered_only_when_enabled", test_offered_only_when_enabled},
    {"enable_before_and_after_bind", test_enable_before_and_after_bind},
    {"r_before_enable", test_r_before_enable},
    {"r_a_exchange", test_r_a_exchange},
    {"counters_wrap", test_counters_wrap},
    {"bad_h", test_bad_h},
    {"overflow", test_overflow},
    {"orderly_close_with_unacked", test_orderly_close_with_unacked},
    {"iq_answered_when_cut", test_iq_answered_when_cut},
    {"cut_mid_burst", test_cut_mid_burst},
    {"stops_reading", test_stops_reading},
    {"stops_reading_four_under_load", test_stops_reading_four_under_load},
};

int main(int argc, char **argv) {
  return xcm_test_main(argc, argv, XCM_TESTS(tests));
}
