/* XEP-0198 resumption within one instance, over loopback with scripted
 * raw clients (tests/smclient.h) and the in-process testkit upstream.
 *
 * Each case counts exactly: what reached the client on the wire across
 * its two connections (the first h messages of the old one, then all of
 * the new one after <resumed/>, must be every message once, in order),
 * and what the testkit stored offline (nothing, or exactly what the
 * session never delivered). Waits are on events (stats, session events,
 * bytes on the wire), never on time; the timeouts are failure guards.
 *
 * The resumed session must stay the same session upstream: a watcher
 * (carol, a local client of the testkit subscribed to bob's presence)
 * would see an unavailable presence if it ended, and the testkit's
 * events show which sessions closed. */
#include <mbedtls/base64.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "attach.h"
#include "client/authid.h"
#include "harness.h"
#include "rawclient.h"
#include "smclient.h"
#include "util/buf.h"
#include "world.h"
#include "xcm/error.h"
#include "xcm/testkit.h"
#include "xcm/xcm.h"

#define NS XCM_SMC_NS
#define BOB "bob@example.test/phone"
#define FAILED_NOT_FOUND                                                       \
  "<failed xmlns=\"" NS "\"><item-not-found "                                  \
  "xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/></failed>"

/* ---- what the test watches ---------------------------------------------- */

enum { MAX_CLOSED = 16 };

typedef struct watch {
  /* The testkit: sessions closed (sid, and whether bound). */
  unsigned closed;
  char closed_sid[MAX_CLOSED][64];
  int closed_bound[MAX_CLOSED];
  /* The CM's session events, by type, and bob's stream id once bound. */
  unsigned ev[8];
  char bob_sid[64];
  /* carol's stanzas (a local client of the testkit). */
  xcm_buf carol;
} watch;

static watch W;

static void on_kit_event(void *ud, xcm_testkit *kit,
                         const xcm_testkit_event *ev) {
  watch *wa = ud;

  (void)kit;
  if (ev->type != XCM_TESTKIT_SESSION_CLOSED || ev->cm == NULL)
    return;
  if (wa->closed < MAX_CLOSED) {
    snprintf(wa->closed_sid[wa->closed], sizeof wa->closed_sid[0], "%s",
             ev->sid != NULL ? ev->sid : "");
    wa->closed_bound[wa->closed] = ev->jid != NULL;
  }
  wa->closed++;
}

static void on_session(void *ud, xcm_session_event ev,
                       const xcm_session_info *info) {
  watch *wa = ud;

  if ((unsigned)ev < 8)
    wa->ev[ev]++;
  if (ev == XCM_SESSION_BOUND && info->jid != NULL &&
      strcmp(info->jid, BOB) == 0)
    snprintf(wa->bob_sid, sizeof wa->bob_sid, "%s", info->sid);
}

static void on_carol(void *ud, xcm_testkit *kit, const char *jid,
                     const char *stanza, size_t len) {
  (void)kit;
  (void)jid;
  xcm__buf_append(&((watch *)ud)->carol, stanza, len);
  xcm__buf_reserve(&((watch *)ud)->carol, 1);
  ((watch *)ud)->carol.data[((watch *)ud)->carol.len] = '\0';
}

static xcm_smc_knobs knobs(void) {
  xcm_smc_knobs k = xcm_smc_on();

  /* Requests only where a case asks for them. */
  k.every = 1000;
  k.quiet_ms = XCM_UNLIMITED;
  k.on_event = on_kit_event;
  k.on_session = on_session;
  k.ud = &W;
  return k;
}

static void start(xcm_test_world *w, const xcm_smc_knobs *k) {
  xcm__buf_free(&W.carol);
  memset(&W, 0, sizeof W);
  xcm__buf_init(&W.carol, NULL);
  xcm_smc_start(w, k);
}

static void stop(xcm_test_world *w) {
  xcm_test_world_stop(w, 1000);
  xcm__buf_free(&W.carol);
}

/* carol, connected to the server directly, follows bob's presence (and
 * bob does not follow hers: nothing of hers reaches him). Before bob
 * logs in. */
static void carol_watches_bob(xcm_test_world *w) {
  static const char avail[] = "<presence/>";

  REQUIRE(xcm_testkit_add_roster_item(w->kit, "bob", "carol@example.test", NULL,
                                      "from") == 0);
  REQUIRE(xcm_testkit_add_roster_item(w->kit, "carol", "bob@example.test", NULL,
                                      "to") == 0);
  REQUIRE(xcm_testkit_local_login(w->kit, "carol@example.test/watch", on_carol,
                                  &W) == 0);
  REQUIRE(xcm_testkit_local_send(w->kit, "carol@example.test/watch", avail,
                                 sizeof avail - 1) == 0);
}

static int carol_saw_bob_available(void *ud) {
  (void)ud;
  return W.carol.data != NULL &&
         strstr(W.carol.data, "from=\"" BOB "\"") != NULL;
}

/* bob's session never ended upstream: carol saw no unavailable presence,
 * the testkit closed no session of his and still has him available. */
static void bob_never_left(xcm_test_world *w, const char *bob_sid) {
  unsigned i;

  CHECK(W.carol.data == NULL ||
        strstr(W.carol.data, "type=\"unavailable\"") == NULL);
  CHECK_INT(xcm_testkit_jid_state(w->kit, BOB), 2);
  for (i = 0; i < W.closed && i < MAX_CLOSED; i++)
    CHECK(strcmp(W.closed_sid[i], bob_sid) != 0);
}

/* A counter of the CM's stats reached want. */
typedef struct stat_wait {
  xcm_test_world *w;
  size_t off; /* offsetof(xcm_stats, field) */
  uint64_t want;
} stat_wait;

static int stat_reached(void *ud) {
  stat_wait *sw = ud;
  xcm_stats st;
  uint64_t v;

  xcm_smc_stats(sw->w, &st);
  memcpy(&v, (const char *)&st + sw->off, sizeof v);
  return v >= sw->want;
}

#define WAIT_STAT(w, field, n)                                                 \
  do {                                                                         \
    stat_wait sw_ = {(w), offsetof(xcm_stats, field), (n)};                    \
    CHECK(xcm_test_run_until(&(w)->loop, stat_reached, &sw_, 5000));           \
  } while (0)

static int kit_closed_at_least(void *ud) {
  return W.closed >= *(unsigned *)ud;
}

/* The stream id in the last stream header of r (the CM's), into out. */
static int header_id(const xcm_raw *r, char *out, size_t cap) {
  const char *p = NULL, *q = r->in.data, *e;

  while (q != NULL && (q = strstr(q, "<stream:stream")) != NULL)
    p = q++;
  if (p == NULL || (p = strstr(p, " id=")) == NULL)
    return 0;
  p += 5;
  e = strchr(p, p[-1]);
  if (e == NULL || (size_t)(e - p) >= cap)
    return 0;
  memcpy(out, p, (size_t)(e - p));
  out[e - p] = '\0';
  return 1;
}

/* Open r and authenticate as user with PLAIN, ready to bind or resume;
 * in is cleared then, and sid gets the stream's id. */
static int open_authed(xcm_test_world *w, xcm_raw *r, const char *user,
                       char *sid, size_t cap) {
  char auth[320];

  xcm_smc_auth_plain(auth, sizeof auth, user);
  if (!xcm_raw_open(r, &w->loop, "127.0.0.1", w->port, 1) ||
      !xcm_raw_sasl(r, XCM_RAW_HDR, auth) ||
      !xcm_raw_wait(r, "</stream:features>", 3000))
    return 0;
  if (sid != NULL && !header_id(r, sid, cap))
    return 0;
  xcm__buf_reset(&r->in);
  return 1;
}

static void send_resume(xcm_raw *r, const char *id, uint32_t h) {
  char e[160];

  snprintf(e, sizeof e, "<resume xmlns='" NS "' previd='%s' h='%u'/>", id,
           (unsigned)h);
  xcm_raw_sends(r, e);
}

/* user, authenticated on a new connection, resumes id with h: whether
 * it got <failed/> with item-not-found. */
static int resume_refused(xcm_test_world *w, const char *user, const char *id,
                          uint32_t h) {
  xcm_raw r;
  int ok;

  if (!open_authed(w, &r, user, NULL, 0))
    return 0;
  send_resume(&r, id, h);
  ok = xcm_raw_wait(&r, FAILED_NOT_FOUND, 3000);
  xcm_raw_free(&r);
  return ok;
}

static int resumed_with(xcm_raw *r, const char *id, uint32_t h_in) {
  char want[160];

  snprintf(want, sizeof want,
           "<resumed xmlns=\"" NS "\" previd=\"%s\" h=\"%u\"/>", id,
           (unsigned)h_in);
  return xcm_raw_wait(r, want, 5000);
}

/* alice sends bob n messages from `from` on, and waits until the
 * testkit routed them all. */
static void alice_sends(xcm_test_world *w, xcm_raw *alice, unsigned from,
                        unsigned n, size_t pad) {
  xcm_testkit_stats ks;
  xcm_smc_routed_wait rw;
  unsigned i;

  xcm_testkit_get_stats(w->kit, &ks, sizeof ks);
  for (i = 0; i < n; i++)
    xcm_smc_send_to(alice, BOB, from + i, pad);
  rw.w = w;
  rw.want = ks.routes_in + n;
  REQUIRE(xcm_test_run_until(&w->loop, xcm_smc_routed, &rw, 5000));
}

static void wait_handled(xcm_test_world *w, xcm_smc_acker *a, uint32_t want) {
  xcm_smc_handled_wait hw = {a, want};

  CHECK(xcm_test_run_until(&w->loop, xcm_smc_handled_at_least, &hw, 5000));
}

enum { MAX_MSGS = 512 };

/* What bob got across two connections: the first h1 messages of the
 * old one (those it reported handled), then every message after
 * <resumed/> on the new one, must be 0 .. n-1, each once, in order. */
static int delivered_once_in_order(const char *old, unsigned h1,
                                   const xcm_raw *neu, unsigned n) {
  unsigned got[2 * MAX_MSGS], k, i;
  const char *after = strstr(neu->in.data, "<resumed");
  int ok;

  k = h1 > 0 ? xcm_smc_numbers(old, h1, got, MAX_MSGS) : 0;
  if (k != h1)
    xcm_test_note("the old connection shows %u whole messages, not %u", k, h1);
  if (after != NULL)
    k += xcm_smc_numbers(after, 0, got + k, MAX_MSGS);
  ok = k == n;
  for (i = 0; ok && i < n; i++)
    ok = got[i] == i;
  if (!ok) {
    xcm_test_note("delivered %u (want %u):", k, n);
    for (i = 0; i < k; i++)
      if (i >= n || got[i] != i)
        xcm_test_note("  #%u is n=%u", i, got[i]);
  }
  return ok;
}

/* ---- the cases ---------------------------------------------------------- */

/* bob's connection is cut (a reset, no </stream:stream>) in the middle
 * of alice's burst, while she goes on; bob resumes on a new connection
 * with the h of what he read whole. Every message reaches him once, in
 * order; nothing is stored offline; his session stays the same upstream
 * (no unavailable presence) and only the new connection's own session
 * closes there, never bound. */
static void test_cut_mid_burst(void) {
  enum { N = 200, ROUND = 10, CUT_AT = 80, AFTER = 20 };
  xcm_test_world w;
  xcm_raw alice, bob, bob2;
  xcm_smc_acker a, a2;
  xcm_smc_knobs k = knobs();
  xcm_smc_acks_wait aw;
  xcm_stats st;
  char id[64], sid2[64];
  unsigned sent = 0, h, closed_want;
  int cut = 0;

  k.every = 7;
  k.quiet_ms = 50;
  start(&w, &k);
  carol_watches_bob(&w);
  REQUIRE(xcm_smc_login(&w, &alice, "alice", "desk"));
  REQUIRE(xcm_smc_login_resumable(&w, &bob, &a, "bob", "phone", id, sizeof id));
  CHECK(xcm_test_run_until(&w.loop, carol_saw_bob_available, NULL, 3000));
  REQUIRE(W.ev[XCM_SESSION_BOUND] == 2 && W.bob_sid[0] != '\0');
  while (sent < N) {
    alice_sends(&w, &alice, sent, ROUND, 200);
    sent += ROUND;
    if (!cut && sent >= CUT_AT + ROUND) {
      wait_handled(&w, &a, CUT_AT);
      a.acking = 0;
      aw.w = &w;
      aw.want = a.acks;
      CHECK(xcm_test_run_until(&w.loop, xcm_smc_acks_arrived, &aw, 5000));
      xcm_raw_reset(&bob);
      WAIT_STAT(&w, sm_detached, 1);
      cut = 1;
    }
  }
  h = a.handled;
  xcm_test_note("bob read %u whole, acknowledged %u, before the cut", h,
                a.last_h);
  CHECK(h >= CUT_AT && h < N);
  xcm_smc_stats(&w, &st);
  CHECK_INT(st.sm_detached_now, 1);
  CHECK_INT(st.clients_now, 1);
  CHECK_INT(W.ev[XCM_SESSION_DETACHED], 1);
  CHECK_INT(W.ev[XCM_SESSION_CLOSED], 0);
  CHECK_INT(xcm_testkit_jid_state(w.kit, BOB), 2);
  /* The new connection: its own session upstream, authenticated. */
  REQUIRE(open_authed(&w, &bob2, "bob", sid2, sizeof sid2));
  closed_want = W.closed + 1;
  send_resume(&bob2, id, h);
  CHECK(resumed_with(&bob2, id, 0));
  xcm_smc_acker_attach(&a2, &bob2, h, 1);
  a2.scan = 0;
  /* What was left, then more after the resume. */
  alice_sends(&w, &alice, N, AFTER, 200);
  wait_handled(&w, &a2, N + AFTER);
  CHECK(delivered_once_in_order(bob.in.data, h, &bob2, N + AFTER));
  CHECK(xcm_test_run_until(&w.loop, kit_closed_at_least, &closed_want, 3000));
  CHECK_INT(W.closed, 1);
  CHECK_STR(W.closed_sid[0], sid2);
  CHECK_INT(W.closed_bound[0], 0);
  bob_never_left(&w, W.bob_sid);
  xcm_smc_stats(&w, &st);
  CHECK_INT(st.sm_resumed, 1);
  CHECK_INT(st.sm_resume_failed, 0);
  CHECK_INT(st.sm_detached_now, 0);
  CHECK_INT(st.sm_returned, 0);
  CHECK_INT(st.clients_now, 2);
  CHECK_INT(W.ev[XCM_SESSION_RESUMED], 1);
  /* The new connection's own session, never bound: the one close. */
  CHECK_INT(W.ev[XCM_SESSION_CLOSED], 1);
  CHECK_INT(xcm_testkit_offline_count(w.kit, "bob"), 0);
  xcm_raw_free(&bob2);
  xcm_raw_free(&bob);
  xcm_raw_free(&alice);
  stop(&w);
}

/* Both counters start at 2^32 - 2 (the test hook): bob's h in <resume/>
 * and the CM's in <resumed/> are taken modulo 2^32, across the wrap. */
static void test_counters_wrap(void) {
  const uint32_t start0 = 0xfffffffeu;
  char *old;
  xcm_test_world w;
  xcm_raw alice, bob, bob2;
  xcm_smc_acker a, a2;
  xcm_smc_knobs k = knobs();
  xcm_stats st;
  char id[64];
  unsigned i;

  start(&w, &k);
  xcm__cm_sm_start(w.cm, start0);
  REQUIRE(xcm_smc_login(&w, &alice, "alice", "desk"));
  REQUIRE(xcm_smc_login_resumable(&w, &bob, &a, "bob", "phone", id, sizeof id));
  a.acking = 0;
  a.handled = start0;
  /* bob sends 3 (his h, the CM's h_in: 2^32 - 2 + 3 = 1) ... */
  for (i = 0; i < 3; i++)
    xcm_smc_send_to(&bob, "alice@example.test/desk", i, 10);
  CHECK(xcm_raw_wait(&alice, "n=00002", 3000));
  /* ... and reads one (h 2^32 - 1); three more wait while he is away. */
  alice_sends(&w, &alice, 0, 1, 10);
  wait_handled(&w, &a, start0 + 1);
  old = strdup(bob.in.data);
  REQUIRE(old != NULL);
  xcm_raw_free(&bob); /* a FIN without </stream:stream> */
  WAIT_STAT(&w, sm_detached, 1);
  alice_sends(&w, &alice, 1, 3, 10);
  REQUIRE(open_authed(&w, &bob2, "bob", NULL, 0));
  send_resume(&bob2, id, 0xffffffffu);
  CHECK(resumed_with(&bob2, id, 1));
  xcm_smc_acker_attach(&a2, &bob2, 0xffffffffu, 0);
  a2.scan = 0;
  wait_handled(&w, &a2, 2); /* three more: 2^32 - 1 + 3 = 2 */
  CHECK(delivered_once_in_order(old, 1, &bob2, 4));
  free(old);
  /* The CM counts on from there both ways. */
  xcm_raw_sends(&bob2, "<a xmlns='" NS "' h='2'/>");
  xcm_smc_send_to(&bob2, "alice@example.test/desk", 3, 10);
  xcm__buf_reset(&bob2.in);
  a2.scan = 0;
  xcm_raw_sends(&bob2, "<r xmlns='" NS "'/>");
  CHECK(xcm_raw_wait(&bob2, "<a xmlns=\"" NS "\" h=\"2\"/>", 3000));
  CHECK(xcm_raw_wait(&alice, "n=00003", 3000));
  xcm_raw_sends(&bob2, "</stream:stream>");
  CHECK(xcm_test_run_until(&w.loop, xcm_raw_is_eof, &bob2, 3000));
  xcm_smc_stats(&w, &st);
  CHECK_INT(st.sm_resumed, 1);
  CHECK_INT(st.sm_bad_h, 0);
  CHECK_INT(st.sm_returned, 0);
  CHECK_INT(xcm_testkit_offline_count(w.kit, "bob"), 0);
  xcm_raw_free(&bob2);
  xcm_raw_free(&alice);
  stop(&w);
}

/* A detached session with bob's connection gone, 2 messages sent and
 * none acknowledged; *h is what he read. */
static void detached_bob(xcm_test_world *w, xcm_raw *alice, char *id,
                         size_t cap, unsigned nmsg, uint32_t *h) {
  xcm_raw bob;
  xcm_smc_acker a;
  xcm_stats st;

  xcm_smc_stats(w, &st);
  REQUIRE(xcm_smc_login(w, alice, "alice", "desk"));
  REQUIRE(xcm_smc_login_resumable(w, &bob, &a, "bob", "phone", id, cap));
  a.acking = 0;
  alice_sends(w, alice, 0, nmsg, 10);
  wait_handled(w, &a, nmsg);
  *h = a.handled;
  xcm_raw_free(&bob);
  WAIT_STAT(w, sm_detached, st.sm_detached + 1);
}

/* An h in <resume/> past what the session sent: the stream error of
 * XEP-0198 section 4, and the session still waits for a resume with a
 * right h. */
static void test_bad_h(void) {
  xcm_test_world w;
  xcm_raw alice, bob2, bob3;
  xcm_smc_knobs k = knobs();
  xcm_stats st;
  char id[64];
  uint32_t h;

  start(&w, &k);
  detached_bob(&w, &alice, id, sizeof id, 2, &h);
  CHECK_INT(h, 2);
  REQUIRE(open_authed(&w, &bob2, "bob", NULL, 0));
  send_resume(&bob2, id, 5);
  CHECK(xcm_raw_wait(&bob2,
                     "<stream:error><undefined-condition "
                     "xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/>"
                     "<handled-count-too-high xmlns=\"" NS
                     "\" h=\"5\" send-count=\"2\"/>",
                     3000));
  CHECK(xcm_test_run_until(&w.loop, xcm_raw_is_eof, &bob2, 3000));
  xcm_smc_stats(&w, &st);
  CHECK_INT(st.sm_resume_failed, 1);
  CHECK_INT(st.sm_detached_now, 1);
  CHECK_INT(st.sm_returned, 0);
  CHECK_INT(xcm_testkit_offline_count(w.kit, "bob"), 0);
  /* One of two acknowledged: the other comes again. */
  REQUIRE(open_authed(&w, &bob3, "bob", NULL, 0));
  send_resume(&bob3, id, 1);
  CHECK(resumed_with(&bob3, id, 0));
  CHECK(xcm_raw_wait(&bob3, "n=00001", 3000));
  CHECK(strstr(bob3.in.data, "n=00000") == NULL);
  xcm_smc_stats(&w, &st);
  CHECK_INT(st.sm_resumed, 1);
  CHECK_INT(st.sm_detached_now, 0);
  xcm_raw_free(&bob3);
  xcm_raw_free(&bob2);
  xcm_raw_free(&alice);
  stop(&w);
}

/* carol asks for bob's session: item-not-found, as for an id nobody
 * has, and she binds her own as usual; bob's, attached or detached, is
 * untouched. */
static void test_other_users_id(void) {
  xcm_test_world w;
  xcm_raw alice, bob, carol, bob2;
  xcm_smc_acker a;
  xcm_smc_knobs k = knobs();
  xcm_stats st;
  char id[64];
  uint32_t h;

  start(&w, &k);
  REQUIRE(xcm_smc_login(&w, &alice, "alice", "desk"));
  REQUIRE(xcm_smc_login_resumable(&w, &bob, &a, "bob", "phone", id, sizeof id));
  REQUIRE(open_authed(&w, &carol, "carol", NULL, 0));
  send_resume(&carol, id, 0);
  CHECK(xcm_raw_wait(&carol, FAILED_NOT_FOUND, 3000));
  xcm_raw_sends(&carol, "<iq type='set' id='b1'><bind "
                        "xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>"
                        "x</resource></bind></iq>");
  CHECK(xcm_raw_wait(&carol, "carol@example.test/x", 3000));
  CHECK(!carol.eof);
  /* An unknown id, the same. */
  xcm_raw_free(&carol);
  REQUIRE(open_authed(&w, &carol, "carol", NULL, 0));
  send_resume(&carol, "AAAAAAAAAAAAAAAAAAAAAA", 0);
  CHECK(xcm_raw_wait(&carol, FAILED_NOT_FOUND, 3000));
  /* bob did not notice. */
  alice_sends(&w, &alice, 0, 1, 10);
  CHECK(xcm_raw_wait(&bob, "n=00000", 3000));
  CHECK(!bob.eof);
  xcm_smc_stats(&w, &st);
  CHECK_INT(st.sm_resume_failed, 2);
  CHECK_INT(st.sm_resumed, 0);
  /* Detached, the same: then bob himself resumes. */
  xcm_raw_free(&bob);
  WAIT_STAT(&w, sm_detached, 1);
  xcm_raw_free(&carol);
  REQUIRE(open_authed(&w, &carol, "carol", NULL, 0));
  send_resume(&carol, id, 1);
  CHECK(xcm_raw_wait(&carol, FAILED_NOT_FOUND, 3000));
  xcm_smc_stats(&w, &st);
  CHECK_INT(st.sm_resume_failed, 3);
  CHECK_INT(st.sm_detached_now, 1);
  h = 1;
  REQUIRE(open_authed(&w, &bob2, "bob", NULL, 0));
  send_resume(&bob2, id, h);
  CHECK(resumed_with(&bob2, id, 0));
  xcm_smc_stats(&w, &st);
  CHECK_INT(st.sm_resumed, 1);
  CHECK_INT(xcm_testkit_offline_count(w.kit, "bob"), 0);
  xcm_raw_free(&bob2);
  xcm_raw_free(&carol);
  xcm_raw_free(&alice);
  stop(&w);
}

/* A session not resumed in sm_resume_ms ends: the messages bob did not
 * acknowledge and those held for him since are stored offline exactly
 * once, the iq get held for him is answered with an error to alice, and
 * the id is unknown from then on. */
static void test_expired(void) {
  xcm_test_world w;
  xcm_raw alice, bob, bob2;
  xcm_smc_acker a;
  xcm_smc_knobs k = knobs();
  xcm_smc_stored_wait sw;
  xcm_stats st;
  char id[64];
  unsigned closed_want;

  k.resume_ms = 200;
  start(&w, &k);
  REQUIRE(xcm_smc_login(&w, &alice, "alice", "desk"));
  REQUIRE(xcm_smc_login_resumable(&w, &bob, &a, "bob", "phone", id, sizeof id));
  a.acking = 0;
  alice_sends(&w, &alice, 0, 3, 10);
  wait_handled(&w, &a, 3);
  /* One acknowledged, two not. */
  xcm_raw_sends(&bob, "<a xmlns='" NS "' h='1'/>");
  WAIT_STAT(&w, sm_acks_received, 1);
  xcm_raw_reset(&bob);
  WAIT_STAT(&w, sm_detached, 1);
  /* Held while he is away: two messages and an iq get. */
  alice_sends(&w, &alice, 3, 2, 10);
  xcm__buf_reset(&alice.in);
  xcm_raw_sends(&alice, "<iq type='get' id='v1' to='" BOB "'>"
                        "<query xmlns='jabber:iq:version'/></iq>");
  WAIT_STAT(&w, sm_expired, 1);
  CHECK(xcm_raw_wait(&alice, "type=\"error\"", 3000));
  CHECK(strstr(alice.in.data, "id=\"v1\"") != NULL);
  sw.w = &w;
  sw.user = "bob";
  sw.want = 4;
  CHECK(xcm_test_run_until(&w.loop, xcm_smc_stored_at_least, &sw, 3000));
  CHECK(xcm_smc_stored_exactly(&w, "bob", 1, 4));
  closed_want = 1;
  CHECK(xcm_test_run_until(&w.loop, kit_closed_at_least, &closed_want, 3000));
  CHECK_INT(W.closed_bound[0], 1);
  CHECK_STR(W.closed_sid[0], W.bob_sid);
  CHECK_INT(xcm_testkit_jid_state(w.kit, BOB), 0);
  xcm_smc_stats(&w, &st);
  CHECK_INT(st.sm_expired, 1);
  CHECK_INT(st.sm_expired_returned, 5);
  CHECK_INT(st.sm_detached_now, 0);
  CHECK_INT(st.sm_return_errors, 0);
  CHECK_INT(W.ev[XCM_SESSION_CLOSED], 1);
  /* Gone: bob binds anew. */
  REQUIRE(open_authed(&w, &bob2, "bob", NULL, 0));
  send_resume(&bob2, id, 3);
  CHECK(xcm_raw_wait(&bob2, FAILED_NOT_FOUND, 3000));
  xcm_raw_sends(&bob2, "<iq type='set' id='b1'><bind "
                       "xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>"
                       "phone</resource></bind></iq>");
  CHECK(xcm_raw_wait(&bob2, BOB, 3000));
  xcm_smc_stats(&w, &st);
  CHECK_INT(st.sm_resume_failed, 1);
  CHECK_INT(xcm_testkit_offline_count(w.kit, "bob"), 4);
  xcm_raw_free(&bob2);
  xcm_raw_free(&bob);
  xcm_raw_free(&alice);
  stop(&w);
}

/* Resumes that end with both connections open: which owns the
 * session. */
static int owns(const xcm_raw *r) {
  return !r->eof && strstr(r->in.data, "<resumed") != NULL;
}

static int answered(const xcm_raw *r) {
  return r->eof || strstr(r->in.data, "<resumed") != NULL ||
         strstr(r->in.data, "<failed") != NULL;
}

typedef struct pair {
  xcm_raw *x, *y;
} pair;

static int both_answered(void *ud) {
  pair *p = ud;

  return answered(p->x) && answered(p->y) &&
         (p->x->eof || p->y->eof || strstr(p->x->in.data, "<failed") ||
          strstr(p->y->in.data, "<failed"));
}

/* Two connections send <resume/> for one session back to back: one ends
 * up owning it (the other gets <failed/> or a conflict stream error),
 * and what comes after reaches the owner only. */
static void test_two_resumes_at_once(void) {
  xcm_test_world w;
  xcm_raw alice, b2, b3, *owner, *other;
  xcm_smc_knobs k = knobs();
  xcm_stats st;
  pair p;
  char id[64];
  uint32_t h;

  start(&w, &k);
  detached_bob(&w, &alice, id, sizeof id, 2, &h);
  REQUIRE(open_authed(&w, &b2, "bob", NULL, 0));
  REQUIRE(open_authed(&w, &b3, "bob", NULL, 0));
  send_resume(&b2, id, 0);
  send_resume(&b3, id, 0);
  p.x = &b2;
  p.y = &b3;
  CHECK(xcm_test_run_until(&w.loop, both_answered, &p, 5000));
  CHECK_INT(owns(&b2) + owns(&b3), 1);
  owner = owns(&b2) ? &b2 : &b3;
  other = owner == &b2 ? &b3 : &b2;
  CHECK(other->eof ? strstr(other->in.data, "<conflict") != NULL
                   : strstr(other->in.data, FAILED_NOT_FOUND) != NULL);
  xcm_test_note("owner: the %s; the other got %s",
                owner == &b2 ? "first" : "second",
                other->eof ? "a conflict" : "failed");
  CHECK(xcm_raw_wait(owner, "n=00001", 3000));
  xcm__buf_reset(&other->in);
  alice_sends(&w, &alice, 2, 1, 10);
  CHECK(xcm_raw_wait(owner, "n=00002", 3000));
  CHECK(other->in.len == 0 || strstr(other->in.data, "n=00002") == NULL);
  xcm_smc_stats(&w, &st);
  CHECK_INT(st.sm_detached_now, 0);
  CHECK_INT(st.sm_returned, 0);
  CHECK_INT(xcm_testkit_offline_count(w.kit, "bob"), 0);
  xcm_raw_free(&b3);
  xcm_raw_free(&b2);
  xcm_raw_free(&alice);
  stop(&w);
}

/* bob resumes while his old connection is still open and attached: the
 * old one gets a conflict stream error, the new one the session with
 * what the old one did not acknowledge, and nothing goes offline. */
static void test_resume_races_old_connection(void) {
  xcm_test_world w;
  xcm_raw alice, bob, bob2;
  xcm_smc_acker a, a2;
  xcm_smc_knobs k = knobs();
  xcm_stats st;
  char id[64];

  start(&w, &k);
  carol_watches_bob(&w);
  REQUIRE(xcm_smc_login(&w, &alice, "alice", "desk"));
  REQUIRE(xcm_smc_login_resumable(&w, &bob, &a, "bob", "phone", id, sizeof id));
  a.acking = 0;
  alice_sends(&w, &alice, 0, 4, 10);
  wait_handled(&w, &a, 4);
  REQUIRE(open_authed(&w, &bob2, "bob", NULL, 0));
  send_resume(&bob2, id, 2);
  CHECK(resumed_with(&bob2, id, 0));
  CHECK(xcm_raw_wait(&bob, "<conflict", 3000));
  CHECK(xcm_test_run_until(&w.loop, xcm_raw_is_eof, &bob, 3000));
  xcm_smc_acker_attach(&a2, &bob2, 2, 1);
  a2.scan = 0;
  alice_sends(&w, &alice, 4, 3, 10);
  wait_handled(&w, &a2, 7);
  CHECK(delivered_once_in_order(bob.in.data, 2, &bob2, 7));
  xcm_smc_stats(&w, &st);
  CHECK_INT(st.sm_resumed, 1);
  CHECK_INT(st.sm_detached, 0);
  CHECK_INT(st.sm_returned, 0);
  CHECK_INT(st.stream_errors[XCM_COND_CONFLICT], 0); /* not the session's */
  CHECK_INT(xcm_testkit_offline_count(w.kit, "bob"), 0);
  bob_never_left(&w, W.bob_sid);
  xcm_raw_free(&bob2);
  xcm_raw_free(&bob);
  xcm_raw_free(&alice);
  stop(&w);
}

/* More arrives for a detached session than its unacked queue holds: the
 * session ends and everything goes back, each message once. */
static void test_overflow_while_detached(void) {
  xcm_test_world w;
  xcm_raw alice;
  xcm_smc_knobs k = knobs();
  xcm_smc_stored_wait sw;
  xcm_stats st;
  char id[64];
  uint32_t h;

  k.max_unacked = 5;
  start(&w, &k);
  detached_bob(&w, &alice, id, sizeof id, 2, &h);
  alice_sends(&w, &alice, 2, 4, 10);
  WAIT_STAT(&w, sm_overflows, 1);
  sw.w = &w;
  sw.user = "bob";
  sw.want = 6;
  CHECK(xcm_test_run_until(&w.loop, xcm_smc_stored_at_least, &sw, 3000));
  CHECK(xcm_smc_stored_exactly(&w, "bob", 0, 5));
  xcm_smc_stats(&w, &st);
  CHECK_INT(st.sm_detached_now, 0);
  CHECK_INT(st.sm_expired, 0);
  CHECK_INT(st.sm_returned, 6);
  CHECK_INT(st.sm_return_errors, 0);
  CHECK_INT(W.ev[XCM_SESSION_CLOSED], 1);
  CHECK(resume_refused(&w, "bob", id, h));
  xcm_raw_free(&alice);
  stop(&w);
}

/* A client that leaves an <r/> unanswered sm_ack_timeout_ms is taken for
 * gone (connection-timeout), and its session waits to be resumed. */
static void test_ack_timeout(void) {
  xcm_test_world w;
  xcm_raw alice, bob, bob2;
  xcm_smc_acker a, a2;
  xcm_smc_knobs k = knobs();
  xcm_stats st;
  char id[64];

  k.every = 2;
  k.ack_timeout_ms = 200;
  start(&w, &k);
  REQUIRE(xcm_smc_login(&w, &alice, "alice", "desk"));
  REQUIRE(xcm_smc_login_resumable(&w, &bob, &a, "bob", "phone", id, sizeof id));
  a.acking = 0;
  alice_sends(&w, &alice, 0, 3, 10);
  wait_handled(&w, &a, 3);
  CHECK(a.requests >= 1);
  WAIT_STAT(&w, sm_detached, 1);
  CHECK(xcm_raw_wait(&bob, "<connection-timeout", 3000));
  xcm_smc_stats(&w, &st);
  CHECK_INT(st.sm_ack_timeouts, 1);
  CHECK_INT(st.sm_detached_now, 1);
  REQUIRE(open_authed(&w, &bob2, "bob", NULL, 0));
  send_resume(&bob2, id, a.handled);
  CHECK(resumed_with(&bob2, id, 0));
  xcm_smc_acker_attach(&a2, &bob2, a.handled, 1);
  a2.scan = 0;
  alice_sends(&w, &alice, 3, 2, 10);
  wait_handled(&w, &a2, 5);
  CHECK(delivered_once_in_order(bob.in.data, a.handled, &bob2, 5));
  xcm_smc_stats(&w, &st);
  CHECK_INT(st.sm_resumed, 1);
  CHECK_INT(st.sm_ack_timeouts, 1);
  CHECK_INT(xcm_testkit_offline_count(w.kit, "bob"), 0);
  xcm_raw_free(&bob2);
  xcm_raw_free(&bob);
  xcm_raw_free(&alice);
  stop(&w);
}

/* The server ends a detached session (as an admin's kick would): it is
 * gone at once, what it held cannot go back to a session the server
 * closed and is counted as such, and the id is unknown from then on.
 * The CM logs everything meanwhile: the messages about a session
 * without a connection must not look for one. */
static void test_server_ends_detached(void) {
  xcm_test_world w;
  xcm_raw alice;
  xcm_smc_knobs k = knobs();
  xcm_stats st;
  char id[64];
  uint32_t h;
  unsigned closed_want = 1;

  k.log_all = 1;
  start(&w, &k);
  detached_bob(&w, &alice, id, sizeof id, 2, &h);
  alice_sends(&w, &alice, 2, 1, 10);
  REQUIRE(W.bob_sid[0] != '\0');
  REQUIRE(xcm_testkit_close_session(w.kit, W.bob_sid, XCM_COND_CONFLICT) == 0);
  CHECK(xcm_test_run_until(&w.loop, kit_closed_at_least, &closed_want, 3000));
  WAIT_STAT(&w, sm_return_errors, 3);
  xcm_smc_stats(&w, &st);
  CHECK_INT(st.sm_detached_now, 0);
  CHECK_INT(st.sm_expired, 0);
  /* The two bob read and the one held: no more (the stream error the
   * server routed before its close is not a stanza). */
  CHECK_INT(st.sm_return_errors, 3);
  CHECK_INT(W.ev[XCM_SESSION_CLOSED], 1);
  CHECK(resume_refused(&w, "bob", id, h));
  xcm_raw_free(&alice);
  stop(&w);
}

/* SCRAM-SHA-1 names the user in its first message (n=): a session
 * bound after SCRAM resumes after SCRAM, and after PLAIN. */
static void test_scram(void) {
  xcm_test_world w;
  xcm_raw alice, bob, bob2, bob3;
  xcm_smc_acker a;
  xcm_smc_knobs k = knobs();
  xcm_stats st;
  char id[64];
  const char *p, *e;

  start(&w, &k);
  REQUIRE(xcm_smc_login(&w, &alice, "alice", "desk"));
  REQUIRE(xcm_smc_scram(&w, &bob, "bob"));
  xcm_raw_sends(&bob, "<iq type='set' id='b1'><bind "
                      "xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>"
                      "phone</resource></bind></iq>");
  REQUIRE(xcm_raw_wait(&bob, BOB, 3000));
  xcm_raw_sends(&bob, "<enable xmlns='" NS "' resume='true'/>");
  REQUIRE(xcm_raw_wait(&bob, "resume=\"true\"", 3000));
  p = strstr(bob.in.data, " id=\"");
  REQUIRE(p != NULL);
  p = strstr(p + 1, "<enabled");
  REQUIRE(p != NULL && (p = strstr(p, " id=\"")) != NULL);
  p += 5;
  e = strchr(p, '"');
  REQUIRE(e != NULL && (size_t)(e - p) < sizeof id);
  memcpy(id, p, (size_t)(e - p));
  id[e - p] = '\0';
  xcm__buf_reset(&bob.in);
  xcm_smc_acker_attach(&a, &bob, 0, 0);
  alice_sends(&w, &alice, 0, 2, 10);
  wait_handled(&w, &a, 2);
  xcm_raw_free(&bob);
  WAIT_STAT(&w, sm_detached, 1);
  REQUIRE(xcm_smc_scram(&w, &bob2, "bob"));
  send_resume(&bob2, id, 1);
  CHECK(resumed_with(&bob2, id, 0));
  CHECK(xcm_raw_wait(&bob2, "n=00001", 3000));
  /* Once more, from a PLAIN login. */
  xcm_raw_free(&bob2);
  WAIT_STAT(&w, sm_detached, 2);
  REQUIRE(open_authed(&w, &bob3, "bob", NULL, 0));
  send_resume(&bob3, id, 2);
  CHECK(resumed_with(&bob3, id, 0));
  xcm_smc_stats(&w, &st);
  CHECK_INT(st.sm_resumed, 2);
  CHECK_INT(st.sm_resume_failed, 0);
  CHECK_INT(xcm_testkit_offline_count(w.kit, "bob"), 0);
  xcm_raw_free(&bob3);
  xcm_raw_free(&alice);
  stop(&w);
}

/* ---- lib/client/authid.c alone ------------------------------------------ */

static char *authid(const char *mech, const void *raw, size_t n) {
  char b64[2048];
  size_t olen = 0;

  REQUIRE(mbedtls_base64_encode((unsigned char *)b64, sizeof b64, &olen, raw,
                                n) == 0);
  return xcm__authid_from_auth(NULL, mech, b64, olen, "example.test");
}

/* Whether the claim of (mech, raw) is want (NULL: nobody). */
static int claims(const char *mech, const void *raw, size_t n,
                  const char *want) {
  char *got = authid(mech, raw, n);
  int ok = want == NULL ? got == NULL : got != NULL && strcmp(got, want) == 0;

  if (!ok)
    xcm_test_note("%s %.*s: got %s, want %s", mech, (int)n, (const char *)raw,
                  got != NULL ? got : "(nobody)",
                  want != NULL ? want : "(nobody)");
  free(got);
  return ok;
}

#define PLAIN(lit, want) claims("PLAIN", lit, sizeof lit - 1, want)
#define SCRAM(lit, want) claims("SCRAM-SHA-1", lit, sizeof lit - 1, want)

static void test_authid(void) {
  unsigned char big[1100];
  char *got;

  /* PLAIN: authcid, or the authzid when there is one. */
  CHECK(PLAIN("\0bob\0secret", "bob@example.test"));
  CHECK(PLAIN("\0BoB\0secret", "bob@example.test"));
  CHECK(PLAIN("carol\0bob\0secret", "carol@example.test"));
  CHECK(PLAIN("Carol@Other.Test\0bob\0x", "carol@other.test"));
  CHECK(PLAIN("\0bob@example.test\0x", "bob@example.test"));
  CHECK(PLAIN("\0bob\0", "bob@example.test"));
  CHECK(PLAIN("bob", NULL));          /* no NUL */
  CHECK(PLAIN("\0bob", NULL));        /* no password part */
  CHECK(PLAIN("\0\0secret", NULL));   /* nobody */
  CHECK(PLAIN("\0bob/res\0x", NULL)); /* not a bare JID */
  CHECK(PLAIN("a/b\0bob\0x", NULL));
  /* SCRAM: n=, or a= when given; =2C and =3D are ',' and '='. */
  CHECK(SCRAM("n,,n=bob,r=abc", "bob@example.test"));
  CHECK(SCRAM("y,,n=BOB,r=abc", "bob@example.test"));
  CHECK(SCRAM("n,a=carol,n=bob,r=abc", "carol@example.test"));
  CHECK(SCRAM("n,a=Carol@Example.Test,n=bob,r=abc", "carol@example.test"));
  CHECK(SCRAM("n,,n=b=2Co=3Db,r=abc", "b,o=b@example.test"));
  CHECK(SCRAM("n,a=x=2Cy,n=bob,r=abc", "x,y@example.test"));
  CHECK(SCRAM("n,,n=b=2Xob,r=abc", NULL)); /* a bad escape */
  CHECK(SCRAM("n,,n=bob=,r=abc", NULL));
  CHECK(SCRAM("n,,n=bob=2,r=abc", NULL));
  CHECK(SCRAM("n,,n=bob", NULL)); /* nothing after the name */
  CHECK(SCRAM("n,,m=bob,r=abc", NULL));
  CHECK(SCRAM("n,x=y,n=bob,r=abc", NULL));
  CHECK(SCRAM("n,a=,n=bob,r=abc", NULL));
  CHECK(SCRAM("n,,n=,r=abc", NULL));
  CHECK(SCRAM("n", NULL));
  CHECK(SCRAM("n,", NULL));
  CHECK(SCRAM("n,,", NULL));
  CHECK(SCRAM("n,,n", NULL));
  CHECK(claims("SCRAM-SHA-1", "n,,n=b\0b,r=abc", 14, NULL));
  CHECK(claims("SCRAM-SHA-256", "n,,n=bob,r=abc", 14, "bob@example.test"));
  /* Mechanisms that name nobody we can read. */
  CHECK(claims("DIGEST-MD5", "\0bob\0bob", 8, NULL));
  CHECK(claims("EXTERNAL", "bob", 3, NULL));
  CHECK(claims("ANONYMOUS", "bob", 3, NULL));
  CHECK(claims("plain", "\0bob\0bob", 8, NULL)); /* names are exact */
  /* Not base64, empty, too long, missing. */
  CHECK(xcm__authid_from_auth(NULL, "PLAIN", "!!!!", 4, "example.test") ==
        NULL);
  CHECK(xcm__authid_from_auth(NULL, "PLAIN", "", 0, "example.test") == NULL);
  CHECK(xcm__authid_from_auth(NULL, "PLAIN", "=", 1, "example.test") == NULL);
  memset(big, 'b', sizeof big);
  big[0] = 0;
  big[4] = 0;
  CHECK(claims("PLAIN", big, sizeof big, NULL));
  CHECK(claims("SCRAM-SHA-1", big, sizeof big, NULL));
  CHECK(xcm__authid_from_auth(NULL, NULL, "AGJvYgBib2I=", 12, "x") == NULL);
  CHECK(xcm__authid_from_auth(NULL, "PLAIN", NULL, 0, "x") == NULL);
  CHECK(xcm__authid_from_auth(NULL, "PLAIN", "AGJvYgBib2I=", 12, NULL) == NULL);
  got =
      xcm__authid_from_auth(NULL, "PLAIN", "AGJvYgBib2I=", 12, "example.test");
  CHECK_STR(got, "bob@example.test");
  free(got);
  /* Matching a bound JID: the bare part, ASCII case folded. */
  CHECK(xcm__authid_matches("bob@example.test", "bob@example.test/phone"));
  CHECK(xcm__authid_matches("bob@example.test", "Bob@Example.TEST/Phone"));
  CHECK(xcm__authid_matches("bob@example.test", "bob@example.test"));
  CHECK(!xcm__authid_matches("bob@example.test", "bob@example.testx/r"));
  CHECK(!xcm__authid_matches("bob@example.test", "bob@example.tes"));
  CHECK(!xcm__authid_matches("bob@example.test", "bobby@example.test/r"));
  CHECK(!xcm__authid_matches("bob@example.test", "carol@example.test/r"));
  CHECK(!xcm__authid_matches(NULL, "bob@example.test/r"));
  CHECK(!xcm__authid_matches("bob@example.test", NULL));
}

static int id_ok(const char *id) {
  size_t i;

  if (strlen(id) != 22)
    return 0;
  for (i = 0; id[i] != '\0'; i++)
    if (!((id[i] >= 'A' && id[i] <= 'Z') || (id[i] >= 'a' && id[i] <= 'z') ||
          (id[i] >= '0' && id[i] <= '9') || id[i] == '-' || id[i] == '_'))
      return 0;
  return 1;
}

/* The resumption id: 128 random bits as 22 characters of base64url, a
 * new one for every session. */
static void test_ids(void) {
  xcm_test_world w;
  xcm_raw r[3];
  xcm_smc_acker a[3];
  xcm_smc_knobs k = knobs();
  char id[3][64];
  unsigned i;

  start(&w, &k);
  REQUIRE(xcm_smc_login_resumable(&w, &r[0], &a[0], "bob", "a", id[0], 64));
  REQUIRE(xcm_smc_login_resumable(&w, &r[1], &a[1], "bob", "b", id[1], 64));
  REQUIRE(xcm_smc_login_resumable(&w, &r[2], &a[2], "carol", "a", id[2], 64));
  for (i = 0; i < 3; i++) {
    CHECK(id_ok(id[i]));
    xcm_test_note("id %s", id[i]);
  }
  CHECK(strcmp(id[0], id[1]) != 0);
  CHECK(strcmp(id[0], id[2]) != 0);
  CHECK(strcmp(id[1], id[2]) != 0);
  for (i = 0; i < 3; i++)
    xcm_raw_free(&r[i]);
  stop(&w);
}

static const xcm_test tests[] = {
    {"authid", test_authid},
    {"ids", test_ids},
    {"cut_mid_burst", test_cut_mid_burst},
    {"counters_wrap", test_counters_wrap},
    {"bad_h", test_bad_h},
    {"other_users_id", test_other_users_id},
    {"expired", test_expired},
    {"two_resumes_at_once", test_two_resumes_at_once},
    {"resume_races_old_connection", test_resume_races_old_connection},
    {"overflow_while_detached", test_overflow_while_detached},
    {"ack_timeout", test_ack_timeout},
    {"scram", test_scram},
    {"server_ends_detached", test_server_ends_detached},
};

int main(int argc, char **argv) {
  return xcm_test_main(argc, argv, XCM_TESTS(tests));
}
