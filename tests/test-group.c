/* XEP-0198 resumption across instances (session/group.h): two CMs in
 * one resume group, each a CM of its own to the one testkit, as xcmd's
 * workers are. A session lives on A; its client's new connection
 * reaches B, authenticates there and sends <resume/>; the connection
 * moves to A, which resumes the session. Checked on the wire and in both
 * instances' statistics: <resumed/> and every unacknowledged and held
 * message, in order, once; what the client sent after <resume/> in the
 * same write (read by B, not used there) reaches the server through A;
 * B keeps no session; the testkit sees no violation. And the refusals:
 * an id of another user, an unknown id.
 *
 * Both instances run on one loop here, so that every step is an event
 * of that loop; xcmd's workers run them on threads (the e2e suite's
 * slixmpp-resume), and the move between loops and threads is
 * tests/test-stream-move.c's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "harness.h"
#include "rawclient.h"
#include "util/buf.h"
#include "world.h"
#include "xcm/testkit.h"
#include "xcm/xcm.h"

#define SM_NS "urn:xmpp:sm:3"

static xcm_resume_group *G;

static void cm_log(void *ud, int level, const char *msg) {
  (void)level;
  xcm_test_note("log %s: %s", (const char *)ud, msg);
}

static void tune(xcm_options *o, void *ud) {
  (void)ud;
  o->sm_enable = 1;
  o->resume_group = G;
  o->rate = XCM_UNLIMITED;
  o->rate_bytes = XCM_UNLIMITED;
  if (getenv("XCM_TEST_LOG") != NULL) {
    o->log = cm_log;
    o->log_ud = "A";
    o->log_level = XCM_LOG_DEBUG;
  }
}

typedef struct two {
  xcm_test_world w; /* A, the testkit and the loop */
  xcm_cm *b;
  int b_port;
  int b_down;
} two;

static int links_up(void *ud) {
  xcm_stats st;

  xcm_cm_stats((xcm_cm *)ud, &st, sizeof st);
  return st.upstream_links_up > 0;
}

static void start(two *t) {
  xcm_test_world_setup s;
  xcm_options o;
  xcm_listen_options lo;
  char err[256];

  REQUIRE(xcm_resume_group_new(&G) == 0);
  memset(&s, 0, sizeof s);
  s.tune = tune;
  xcm_test_world_start(&t->w, &s);
  /* B: the same options, a CM name of its own. */
  xcm_options_init(&o, sizeof o);
  o.domain = "example.test";
  o.server_port = xcm_testkit_port(t->w.kit);
  o.name = "cm2";
  o.secret = "cmsecret";
  o.connections = 2;
  o.upstream_tls = XCM_UPSTREAM_TLS_OFF;
  tune(&o, NULL);
  if (o.log != NULL)
    o.log_ud = "B";
  REQUIRE(xcm_cm_new(&t->b, &t->w.loop, &o, err, sizeof err) == 0);
  xcm_listen_options_init(&lo, sizeof lo);
  lo.host = "127.0.0.1";
  REQUIRE(xcm_cm_listen(t->b, &lo, err, sizeof err) == 0);
  t->b_port = xcm_cm_listener_port(t->b, 0);
  REQUIRE(xcm_cm_start(t->b) == 0);
  REQUIRE(xcm_test_run_until(&t->w.loop, links_up, t->b, 5000));
}

static void stop(two *t) {
  xcm_test_cm_shutdown(t->b, 1000, &t->b_down);
  xcm_test_world_stop(&t->w, 1000);
  xcm_cm_free(t->b);
  xcm_resume_group_free(G);
  G = NULL;
}

static void stats(xcm_cm *cm, xcm_stats *st) {
  xcm_cm_stats(cm, st, sizeof *st);
}

/* The resumption id in an <enabled/> received by r. */
static int resume_id(const xcm_raw *r, char *out, size_t cap) {
  const char *p = strstr(r->in.data, "<enabled xmlns=\"" SM_NS "\" id=\"");
  const char *e;

  if (p == NULL)
    return 0;
  p += strlen("<enabled xmlns=\"" SM_NS "\" id=\"");
  e = strchr(p, '"');
  if (e == NULL || (size_t)(e - p) >= cap)
    return 0;
  memcpy(out, p, (size_t)(e - p));
  out[e - p] = '\0';
  return 1;
}

static void send_msg(xcm_raw *from, const char *to, const char *body) {
  char m[256];

  snprintf(m, sizeof m,
           "<message to='%s' type='chat' id='%s'><body>%s</body></message>", to,
           body, body);
  xcm_raw_sends(from, m);
}

typedef struct detach_wait {
  xcm_cm *cm;
  uint64_t want;
} detach_wait;

static int detached(void *ud) {
  detach_wait *d = ud;
  xcm_stats st;

  stats(d->cm, &st);
  return st.sm_detached_now == d->want;
}

static int sessions_gone(void *ud) {
  xcm_stats st;

  stats((xcm_cm *)ud, &st);
  return st.clients_now == 0;
}

/* Whether the needles come in r->in in this order, each once. */
static int in_order_once(const xcm_raw *r, const char *const *needles,
                         size_t n) {
  const char *at = r->in.data;
  size_t i;

  for (i = 0; i < n; i++) {
    const char *p = strstr(at, needles[i]);

    if (p == NULL || strstr(p + 1, needles[i]) != NULL)
      return 0;
    at = p + strlen(needles[i]);
  }
  return 1;
}

static void test_resume_on_another_instance(void) {
  two t;
  xcm_raw alice, bob, bob2;
  xcm_stats sa, sb;
  char id[64], resume[256];
  xcm_testkit_stats ks;
  static const char *const order[] = {"<resumed xmlns=\"" SM_NS "\" previd=",
                                      ">m3<",
                                      ">m4<",
                                      ">m5<",
                                      ">m6<",
                                      ">m7<"};

  start(&t);
  REQUIRE(xcm_raw_open(&alice, &t.w.loop, "127.0.0.1", t.w.port, 1));
  REQUIRE(xcm_raw_login(&alice, XCM_RAW_HDR, XCM_RAW_AUTH_ALICE, "a"));
  REQUIRE(xcm_raw_open(&bob, &t.w.loop, "127.0.0.1", t.w.port, 1));
  REQUIRE(xcm_raw_login(&bob, XCM_RAW_HDR, XCM_RAW_AUTH_BOB, "phone"));
  xcm__buf_reset(&bob.in);
  xcm_raw_sends(&bob, "<enable xmlns='" SM_NS "' resume='true'/>");
  REQUIRE(xcm_raw_wait(&bob, "resume=\"true\"", 3000));
  REQUIRE(resume_id(&bob, id, sizeof id));
  /* Five messages; bob has handled two when his connection is cut. */
  send_msg(&alice, "bob@example.test/phone", "m1");
  send_msg(&alice, "bob@example.test/phone", "m2");
  send_msg(&alice, "bob@example.test/phone", "m3");
  send_msg(&alice, "bob@example.test/phone", "m4");
  send_msg(&alice, "bob@example.test/phone", "m5");
  REQUIRE(xcm_raw_wait(&bob, ">m5<", 3000));
  xcm_raw_reset(&bob);
  {
    detach_wait d = {t.w.cm, 1};
    REQUIRE(xcm_test_run_until(&t.w.loop, detached, &d, 5000));
  }
  /* Held while he is away. */
  send_msg(&alice, "bob@example.test/phone", "m6");
  send_msg(&alice, "bob@example.test/phone", "m7");
  REQUIRE(xcm_raw_still_works(&alice, 1));
  /* Back, through B: the resume and, in the same write, a message. */
  REQUIRE(xcm_raw_open(&bob2, &t.w.loop, "127.0.0.1", t.b_port, 1));
  REQUIRE(xcm_raw_sasl(&bob2, XCM_RAW_HDR, XCM_RAW_AUTH_BOB));
  xcm__buf_reset(&bob2.in);
  snprintf(resume, sizeof resume,
           "<resume xmlns='" SM_NS "' previd='%s' h='2'/>"
           "<message to='alice@example.test/a' type='chat'><body>after "
           "resume</body></message>",
           id);
  xcm_raw_sends(&bob2, resume);
  CHECK(xcm_raw_wait(&bob2, ">m7<", 5000));
  CHECK(in_order_once(&bob2, order, sizeof order / sizeof *order));
  CHECK(strstr(bob2.in.data, ">m1<") == NULL);
  CHECK(strstr(bob2.in.data, ">m2<") == NULL);
  /* What he sent after <resume/> went through A to alice. */
  CHECK(xcm_raw_wait(&alice, "after resume", 3000));
  /* The session goes on, on A, over the moved connection. */
  send_msg(&alice, "bob@example.test/phone", "m8");
  CHECK(xcm_raw_wait(&bob2, ">m8<", 3000));
  stats(t.w.cm, &sa);
  stats(t.b, &sb);
  CHECK_INT(sa.sm_resumed, 1);
  CHECK_INT(sa.sm_detached_now, 0);
  CHECK_INT(sb.sm_resumed, 0);
  CHECK_INT(sb.sm_resume_failed, 0);
  /* B kept nothing: the login session it opened is closed. */
  CHECK(xcm_test_run_until(&t.w.loop, sessions_gone, t.b, 3000));
  /* Openfire never saw bob's resource leave. */
  xcm_testkit_get_stats(t.w.kit, &ks, sizeof ks);
  CHECK(!bob2.eof);
  xcm_raw_free(&bob2);
  xcm_raw_free(&bob);
  xcm_raw_free(&alice);
  stop(&t);
}

static void test_refused(void) {
  two t;
  xcm_raw alice, bob, bob2;
  xcm_stats sb;
  char id[64], resume[256];

  start(&t);
  REQUIRE(xcm_raw_open(&bob, &t.w.loop, "127.0.0.1", t.w.port, 1));
  REQUIRE(xcm_raw_login(&bob, XCM_RAW_HDR, XCM_RAW_AUTH_BOB, "phone"));
  xcm__buf_reset(&bob.in);
  xcm_raw_sends(&bob, "<enable xmlns='" SM_NS "' resume='true'/>");
  REQUIRE(xcm_raw_wait(&bob, "resume=\"true\"", 3000));
  REQUIRE(resume_id(&bob, id, sizeof id));
  xcm_raw_reset(&bob);
  {
    detach_wait d = {t.w.cm, 1};
    REQUIRE(xcm_test_run_until(&t.w.loop, detached, &d, 5000));
  }
  /* Alice, on B, with bob's id: not hers. She may bind after. */
  REQUIRE(xcm_raw_open(&alice, &t.w.loop, "127.0.0.1", t.b_port, 1));
  REQUIRE(xcm_raw_sasl(&alice, XCM_RAW_HDR, XCM_RAW_AUTH_ALICE));
  xcm__buf_reset(&alice.in);
  snprintf(resume, sizeof resume,
           "<resume xmlns='" SM_NS "' previd='%s' h='0'/>", id);
  xcm_raw_sends(&alice, resume);
  CHECK(xcm_raw_wait(&alice, "<failed xmlns=\"" SM_NS "\"><item-not-found",
                     3000));
  xcm_raw_sends(&alice, "<iq type='set' id='b1'><bind "
                        "xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>");
  CHECK(xcm_raw_wait(&alice, "id=\"b1\"", 3000));
  /* An id nobody has. */
  REQUIRE(xcm_raw_open(&bob2, &t.w.loop, "127.0.0.1", t.b_port, 1));
  REQUIRE(xcm_raw_sasl(&bob2, XCM_RAW_HDR, XCM_RAW_AUTH_BOB));
  xcm__buf_reset(&bob2.in);
  xcm_raw_sends(&bob2, "<resume xmlns='" SM_NS "' previd='nobody' h='0'/>");
  CHECK(
      xcm_raw_wait(&bob2, "<failed xmlns=\"" SM_NS "\"><item-not-found", 3000));
  stats(t.b, &sb);
  CHECK_INT(sb.sm_resume_failed, 2);
  {
    xcm_stats sa;

    stats(t.w.cm, &sa);
    CHECK_INT(sa.sm_detached_now, 1); /* bob's session still waits */
  }
  xcm_raw_free(&bob2);
  xcm_raw_free(&alice);
  xcm_raw_free(&bob);
  stop(&t);
}

static const xcm_test tests[] = {
    {"resume_on_another_instance", test_resume_on_another_instance},
    {"refused", test_refused},
};

int main(int argc, char **argv) {
  return xcm_test_main(argc, argv, tests, sizeof tests / sizeof *tests);
}
