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
#include "smclient.h"
#include "util/buf.h"
#include "world.h"
#include "xcm/testkit.h"
#include "xcm/xcm.h"

#define SM_NS XCM_SMC_NS
#define ENABLE XCM_SMC_ENABLE
#define ENABLED XCM_SMC_ENABLED

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
  xcm_smc_knobs k;

  memset(&k, 0, sizeof k);
  xcm_smc_start(&w, &k);
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

  k = xcm_smc_on();
  xcm_smc_start(&w, &k);
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
  xcm_smc_knobs k = xcm_smc_on();

  xcm_smc_start(&w, &k);
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
  xcm_smc_stats(&w, &st);
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

  xcm_smc_stats(ud, &st);
  return st.sm_sessions_now == 0 && st.clients_now == 0;
}

/* No client with acknowledgements left (others may stay). */
static int sm_off(void *ud) {
  xcm_stats st;

  xcm_smc_stats(ud, &st);
  return st.sm_sessions_now == 0;
}

/* <r/> or <a/> before <enable/>: unsupported-stanza-type. */
static void test_r_before_enable(void) {
  static const char *const elems[] = {"<r xmlns='" SM_NS "'/>",
                                      "<a xmlns='" SM_NS "' h='0'/>"};
  xcm_test_world w;
  xcm_raw r;
  xcm_smc_knobs k = xcm_smc_on();
  unsigned i;

  xcm_smc_start(&w, &k);
  for (i = 0; i < 2; i++) {
    REQUIRE(xcm_smc_login(&w, &r, "bob", "phone"));
    xcm__buf_reset(&r.in);
    xcm_raw_sends(&r, elems[i]);
    CHECK(xcm_raw_wait(&r, "<unsupported-stanza-type", 3000));
    CHECK(xcm_test_run_until(&w.loop, xcm_raw_is_eof, &r, 3000));
    xcm_raw_free(&r);
  }
  CHECK(xcm_test_run_until(&w.loop, sm_gone, &w, 3000));
  xcm_test_world_stop(&w, 1000);
}

/* The exchange both ways, with requests after N stanzas and when the
 * connection goes quiet. */
static void test_r_a_exchange(void) {
  xcm_test_world w;
  xcm_raw alice, bob;
  xcm_smc_acker a;
  xcm_stats st;
  xcm_smc_knobs k = xcm_smc_on();
  xcm_smc_handled_wait hw;
  xcm_smc_acks_wait aw;
  unsigned i;

  k.every = 5;
  k.quiet_ms = 100;
  xcm_smc_start(&w, &k);
  REQUIRE(xcm_smc_login(&w, &alice, "alice", "desk"));
  REQUIRE(xcm_smc_login_acking(&w, &bob, &a, "bob", "phone"));
  /* Our h: stanzas bob sent that the CM passed on. */
  for (i = 0; i < 3; i++)
    xcm_smc_send_to(&bob, "alice@example.test/desk", i, 10);
  xcm_raw_sends(&bob, "<r xmlns='" SM_NS "'/>");
  CHECK(xcm_raw_wait(&bob, "<a xmlns=\"" SM_NS "\" h=\"3\"/>", 3000));
  CHECK(xcm_raw_wait(&alice, "n=00002", 3000));
  /* 12 to bob: requests after 5 and 10, then the quiet one for the last
   * two. */
  for (i = 0; i < 12; i++)
    xcm_smc_send_to(&alice, "bob@example.test/phone", i, 10);
  hw.a = &a;
  hw.want = 12;
  CHECK(xcm_test_run_until(&w.loop, xcm_smc_handled_at_least, &hw, 3000));
  aw.w = &w;
  aw.want = 3;
  CHECK(xcm_test_run_until(&w.loop, xcm_smc_acks_arrived, &aw, 3000));
  CHECK_INT(a.requests, 3);
  CHECK_INT(a.last_h, 12);
  xcm_smc_stats(&w, &st);
  CHECK_INT(st.sm_acks_requested, 3);
  CHECK_INT(st.sm_acks_received, 3);
  /* Quiet once all is acknowledged: no more requests. */
  xcm_test_run_for(&w.loop, 300);
  CHECK_INT(a.requests, 3);
  /* Everything was acknowledged: nothing goes back at the end. */
  xcm_raw_reset(&bob);
  CHECK(xcm_test_run_until(&w.loop, sm_off, &w, 3000));
  xcm_smc_stats(&w, &st);
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
  xcm_smc_acker a;
  xcm_stats st;
  xcm_smc_knobs k = xcm_smc_on();
  xcm_smc_handled_wait hw;
  unsigned i;

  k.every = 1000;
  k.quiet_ms = XCM_UNLIMITED;
  xcm_smc_start(&w, &k);
  xcm__cm_sm_start(w.cm, 0xfffffffeu);
  REQUIRE(xcm_smc_login(&w, &alice, "alice", "desk"));
  REQUIRE(xcm_smc_login_acking(&w, &bob, &a, "bob", "phone"));
  a.acking = 0;
  for (i = 0; i < 3; i++)
    xcm_smc_send_to(&bob, "alice@example.test/desk", i, 10);
  xcm_raw_sends(&bob, "<r xmlns='" SM_NS "'/>");
  CHECK(xcm_raw_wait(&bob, "<a xmlns=\"" SM_NS "\" h=\"1\"/>", 3000));
  for (i = 0; i < 3; i++)
    xcm_smc_send_to(&alice, "bob@example.test/phone", i, 10);
  hw.a = &a;
  hw.want = 3;
  CHECK(xcm_test_run_until(&w.loop, xcm_smc_handled_at_least, &hw, 3000));
  /* 2^32 - 2 + 3 = 1 (mod 2^32): h='0' acknowledges two, h='1' all. */
  xcm_raw_sends(&bob, "<a xmlns='" SM_NS "' h='0'/>");
  xcm_raw_sends(&bob, "<a xmlns='" SM_NS "' h='1'/>");
  xcm__buf_reset(&bob.in);
  xcm_raw_sends(&bob, "<r xmlns='" SM_NS "'/>");
  CHECK(xcm_raw_wait(&bob, "<a xmlns=\"" SM_NS "\" h=\"1\"/>", 3000));
  xcm_smc_stats(&w, &st);
  CHECK_INT(st.sm_bad_h, 0);
  CHECK_INT(st.sm_acks_received, 2);
  /* One past what was sent, across the wrap. */
  xcm_raw_sends(&bob, "<a xmlns='" SM_NS "' h='2'/>");
  CHECK(xcm_raw_wait(&bob, "h=\"2\" send-count=\"1\"", 3000));
  CHECK(xcm_test_run_until(&w.loop, xcm_raw_is_eof, &bob, 3000));
  CHECK(xcm_test_run_until(&w.loop, sm_off, &w, 3000));
  xcm_smc_stats(&w, &st);
  CHECK_INT(st.sm_bad_h, 1);
  CHECK_INT(st.sm_returned, 0);
  xcm_raw_free(&bob);
  xcm_raw_free(&alice);
  xcm_test_world_stop(&w, 1000);
}

/* An h past what was sent: undefined-condition with the XEP's
 * <handled-count-too-high/>, and what was not acknowledged goes back. */
static void test_bad_h(void) {
  xcm_test_world w;
  xcm_raw alice, bob;
  xcm_smc_acker a;
  xcm_stats st;
  xcm_smc_knobs k = xcm_smc_on();
  xcm_smc_handled_wait hw;
  xcm_smc_stored_wait sw;
  unsigned i;

  k.every = 1000;
  k.quiet_ms = XCM_UNLIMITED;
  xcm_smc_start(&w, &k);
  REQUIRE(xcm_smc_login(&w, &alice, "alice", "desk"));
  REQUIRE(xcm_smc_login_acking(&w, &bob, &a, "bob", "phone"));
  a.acking = 0;
  for (i = 0; i < 2; i++)
    xcm_smc_send_to(&alice, "bob@example.test/phone", i, 10);
  hw.a = &a;
  hw.want = 2;
  CHECK(xcm_test_run_until(&w.loop, xcm_smc_handled_at_least, &hw, 3000));
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
  CHECK(xcm_test_run_until(&w.loop, xcm_smc_stored_at_least, &sw, 3000));
  CHECK(xcm_smc_stored_exactly(&w, "bob", 0, 1));
  xcm_smc_stats(&w, &st);
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
  xcm_smc_acker a;
  xcm_stats st;
  xcm_smc_knobs k = xcm_smc_on();
  xcm_smc_stored_wait sw;
  unsigned i;

  k.max_unacked = 5;
  k.every = 2;
  xcm_smc_start(&w, &k);
  REQUIRE(xcm_smc_login(&w, &alice, "alice", "desk"));
  REQUIRE(xcm_smc_login_acking(&w, &bob, &a, "bob", "phone"));
  a.acking = 0;
  for (i = 0; i < 6; i++)
    xcm_smc_send_to(&alice, "bob@example.test/phone", i, 10);
  CHECK(xcm_raw_wait(&bob, "<policy-violation", 3000));
  CHECK(xcm_raw_wait(&bob, "too many stanzas not acknowledged", 3000));
  sw.w = &w;
  sw.user = "bob";
  sw.want = 6;
  CHECK(xcm_test_run_until(&w.loop, xcm_smc_stored_at_least, &sw, 3000));
  CHECK(xcm_smc_stored_exactly(&w, "bob", 0, 5));
  xcm_smc_stats(&w, &st);
  CHECK_INT(st.sm_overflows, 1);
  CHECK_INT(st.sm_returned, 6);
  CHECK_INT(st.sm_return_errors, 0);
  /* The store reaches bob at his next login. */
  xcm_raw_free(&bob);
  REQUIRE(xcm_smc_login(&w, &bob, "bob", "phone"));
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
  xcm_smc_acker a;
  xcm_stats st;
  xcm_smc_knobs k = xcm_smc_on();
  xcm_smc_handled_wait hw;
  xcm_smc_stored_wait sw;
  unsigned i;

  k.every = 1000;
  k.quiet_ms = XCM_UNLIMITED;
  xcm_smc_start(&w, &k);
  REQUIRE(xcm_smc_login(&w, &alice, "alice", "desk"));
  REQUIRE(xcm_smc_login_acking(&w, &bob, &a, "bob", "phone"));
  a.acking = 0;
  for (i = 0; i < 4; i++)
    xcm_smc_send_to(&alice, "bob@example.test/phone", i, 10);
  hw.a = &a;
  hw.want = 4;
  CHECK(xcm_test_run_until(&w.loop, xcm_smc_handled_at_least, &hw, 3000));
  /* Two acknowledged, two not. */
  xcm_raw_sends(&bob, "<a xmlns='" SM_NS "' h='2'/></stream:stream>");
  CHECK(xcm_test_run_until(&w.loop, xcm_raw_is_eof, &bob, 3000));
  sw.w = &w;
  sw.user = "bob";
  sw.want = 2;
  CHECK(xcm_test_run_until(&w.loop, xcm_smc_stored_at_least, &sw, 3000));
  CHECK(xcm_smc_stored_exactly(&w, "bob", 2, 3));
  CHECK(xcm_test_run_until(&w.loop, sm_off, &w, 3000));
  xcm_smc_stats(&w, &st);
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
  xcm_smc_acker a;
  xcm_stats st;
  xcm_smc_knobs k = xcm_smc_on();
  xcm_smc_handled_wait hw;

  k.every = 1000;
  k.quiet_ms = XCM_UNLIMITED;
  xcm_smc_start(&w, &k);
  REQUIRE(xcm_smc_login(&w, &alice, "alice", "desk"));
  REQUIRE(xcm_smc_login_acking(&w, &bob, &a, "bob", "phone"));
  a.acking = 0;
  xcm__buf_reset(&alice.in);
  xcm_raw_sends(&alice, "<iq type='get' id='v1' to='bob@example.test/phone'>"
                        "<query xmlns='jabber:iq:version'/></iq>");
  hw.a = &a;
  hw.want = 1;
  CHECK(xcm_test_run_until(&w.loop, xcm_smc_handled_at_least, &hw, 3000));
  CHECK(strstr(bob.in.data, "id=\"v1\"") != NULL ||
        strstr(bob.in.data, "id='v1'") != NULL);
  xcm_raw_reset(&bob);
  CHECK(xcm_raw_wait(&alice, "type=\"error\"", 3000));
  CHECK(strstr(alice.in.data, "v1") != NULL);
  CHECK(xcm_test_run_until(&w.loop, sm_off, &w, 3000));
  xcm_smc_stats(&w, &st);
  CHECK_INT(st.sm_returned, 1);
  CHECK_INT(st.failed_returned, 0);
  xcm_raw_free(&bob);
  xcm_raw_free(&alice);
  xcm_test_world_stop(&w, 1000);
}

/* ---- nothing lost ------------------------------------------------------ */

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
  xcm_smc_acker a;
  xcm_stats st;
  xcm_testkit_stats ks;
  xcm_smc_knobs k = xcm_smc_on();
  xcm_smc_handled_wait hw;
  xcm_smc_acks_wait aw;
  xcm_smc_routed_wait rw;
  xcm_smc_stored_wait sw;
  unsigned sent = 0, i, h;
  int cut = 0;
  const char *p;
  unsigned got = 0, stored;

  k.every = 7;
  k.quiet_ms = 50;
  xcm_smc_start(&w, &k);
  REQUIRE(xcm_smc_login(&w, &alice, "alice", "desk"));
  REQUIRE(xcm_smc_login_acking(&w, &bob, &a, "bob", "phone"));
  rw.w = &w;
  while (sent < N) {
    xcm_testkit_get_stats(w.kit, &ks, sizeof ks);
    for (i = 0; i < ROUND; i++)
      xcm_smc_send_to(&alice, "bob@example.test/phone", sent++, 200);
    rw.want = ks.routes_in + ROUND;
    REQUIRE(xcm_test_run_until(&w.loop, xcm_smc_routed, &rw, 5000));
    if (!cut && sent >= CUT_AT + ROUND) {
      hw.a = &a;
      hw.want = CUT_AT;
      CHECK(xcm_test_run_until(&w.loop, xcm_smc_handled_at_least, &hw, 5000));
      a.acking = 0;
      aw.w = &w;
      aw.want = a.acks;
      CHECK(xcm_test_run_until(&w.loop, xcm_smc_acks_arrived, &aw, 5000));
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
  CHECK(xcm_test_run_until(&w.loop, xcm_smc_stored_at_least, &sw, 5000));
  xcm_test_run_until(&w.loop, sm_gone, &w, 1000);
  CHECK(xcm_smc_stored_exactly(&w, "bob", h, N - 1));
  stored = xcm_testkit_offline_count(w.kit, "bob");
  xcm_smc_stats(&w, &st);
  xcm_test_note("returned by the CM: %llu", (unsigned long long)st.sm_returned);
  CHECK(st.sm_returned >= 1);
  CHECK_INT(st.sm_return_errors, 0);
  /* At his next login, bob gets all of it. */
  xcm_raw_free(&bob);
  REQUIRE(xcm_smc_login(&w, &bob, "bob", "phone"));
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
  xcm_smc_acker a[4];
  xcm_stats st;
  xcm_testkit_stats ks;
  xcm_smc_knobs k = xcm_smc_on();
  xcm_smc_routed_wait rw;
  xcm_smc_acks_wait aw;
  unsigned sent[4] = {0}, i, j, total = 0, acked = 0, stored = 0;
  unsigned dropped_at = 0;
  uint64_t acks = 0;
  char to[64];

  k.every = 16;
  k.quiet_ms = 50;
  xcm_smc_start(&w, &k);
  REQUIRE(xcm_smc_login(&w, &alice, "alice", "desk"));
  for (j = 0; j < nreaders; j++)
    REQUIRE(xcm_smc_login_acking(&w, &r[j], &a[j], users[j], "phone"));
  rw.w = &w;
  /* A few rounds read and acknowledged, then nobody reads. */
  for (i = 0; i < 4; i++) {
    xcm_testkit_get_stats(w.kit, &ks, sizeof ks);
    for (j = 0; j < nreaders; j++) {
      unsigned m;

      snprintf(to, sizeof to, "%s@example.test/phone", users[j]);
      for (m = 0; m < per_round; m++)
        xcm_smc_send_to(&alice, to, sent[j]++, pad);
    }
    rw.want = ks.routes_in + (uint64_t)nreaders * per_round;
    REQUIRE(xcm_test_run_until(&w.loop, xcm_smc_routed, &rw, 10000));
  }
  for (j = 0; j < nreaders; j++) {
    a[j].acking = 0;
    xcm_raw_set_reading(&r[j], 0);
    acks += a[j].acks;
  }
  aw.w = &w;
  aw.want = acks;
  CHECK(xcm_test_run_until(&w.loop, xcm_smc_acks_arrived, &aw, 5000));
  /* A fixed number of rounds (the README's table wants sent exact), by
   * far enough for every reader to pass its unacked queue's bound (1 MiB)
   * with rounds to spare after. */
  for (i = 1; i <= ROUNDS_AFTER; i++) {
    xcm_testkit_get_stats(w.kit, &ks, sizeof ks);
    for (j = 0; j < nreaders; j++) {
      unsigned m;

      snprintf(to, sizeof to, "%s@example.test/phone", users[j]);
      for (m = 0; m < per_round; m++)
        xcm_smc_send_to(&alice, to, sent[j]++, pad);
    }
    rw.want = ks.routes_in + (uint64_t)nreaders * per_round;
    REQUIRE(xcm_test_run_until(&w.loop, xcm_smc_routed, &rw, 10000));
    xcm_smc_stats(&w, &st);
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
    xcm_smc_stored_wait sw = {&w, users[j], sent[j] - a[j].last_h};

    CHECK(xcm_test_run_until(&w.loop, xcm_smc_stored_at_least, &sw, 10000));
    CHECK(xcm_smc_stored_exactly(&w, users[j], a[j].last_h, sent[j] - 1));
    total += sent[j];
    acked += a[j].last_h;
    stored += xcm_testkit_offline_count(w.kit, users[j]);
  }
  xcm_smc_stats(&w, &st);
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
