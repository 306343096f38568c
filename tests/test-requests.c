/* The server's answers count only as answers to the client's own pending
 * requests (lib/client/request.h): libxcm in front of the in-process
 * Openfire, driven by raw clients over loopback. What the CM believes is
 * read through the public API (session events and look-up, statistics),
 * what the server saw through the testkit's counters. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "client/request.h"
#include "harness.h"
#include "proto/stream.h"
#include "rawclient.h"
#include "util/buf.h"
#include "world.h"
#include "xcm/error.h"
#include "xcm/testkit.h"
#include "xcm/xcm.h"

#define NS_BIND "urn:ietf:params:xml:ns:xmpp-bind"

typedef struct world {
  xcm_test_world base;
  /* Session events: "EV:JID:AUTH;" per event, and the last stream id. */
  char log[4096];
  char sid[64];
} world;

static void on_session(void *ud, xcm_session_event ev,
                       const xcm_session_info *info) {
  world *w = ud;
  char line[512];

  snprintf(line, sizeof line, "%d:%s:%s;", (int)ev, info->jid ? info->jid : "-",
           info->authenticated ? "auth" : "-");
  strncat(w->log, line, sizeof w->log - strlen(w->log) - 1);
  snprintf(w->sid, sizeof w->sid, "%s", info->sid);
}

typedef struct policy_wait {
  world *w;
  xcm_policy want;
} policy_wait;

static int policy_is(void *ud) {
  policy_wait *p = ud;
  const xcm_policy *cur = xcm_cm_policy(p->w->base.cm);

  return cur != NULL && cur->tls == p->want.tls &&
         cur->legacy_auth == p->want.legacy_auth &&
         cur->registration == p->want.registration;
}

static void one_link(xcm_options *o, void *ud) {
  (void)ud;
  o->connections = 1;
}

/* A CM (with a certificate when tls) in front of the testkit, the
 * testkit's policy changed by set (may be NULL). */
static void world_start(world *w, int tls, void (*set)(xcm_policy *p)) {
  static const char *const accounts[] = {"alice", NULL};
  xcm_test_world_setup s = {
      .seed = 7, .accounts = accounts, .tune = one_link, .tls = tls};
  policy_wait pw;

  memset(w, 0, sizeof(*w));
  xcm_test_world_start(&w->base, &s);
  xcm_cm_set_session_events(w->base.cm, on_session, w);
  if (set != NULL) {
    pw.w = w;
    pw.want = *xcm_cm_policy(w->base.cm);
    set(&pw.want);
    REQUIRE(xcm_testkit_set_policy(w->base.kit, &pw.want) == 0);
    REQUIRE(xcm_test_run_until(&w->base.loop, policy_is, &pw, 3000));
  }
}

static void world_stop(world *w) {
  xcm_cm_set_session_events(w->base.cm, NULL, NULL);
  xcm_test_world_stop(&w->base, 1000);
}

/* A raw client on w's listener, past its header: the features read. */
static void open_at_features(world *w, xcm_raw *r) {
  REQUIRE(xcm_raw_open(r, &w->base.loop, "127.0.0.1", w->base.port, 1));
  xcm_raw_sends(r, XCM_RAW_HDR);
  REQUIRE(xcm_raw_wait(r, "</stream:features>", 3000));
}

static void legacy_on(xcm_policy *p) {
  p->legacy_auth = 1;
}

static void tls_required(xcm_policy *p) {
  p->tls = XCM_TLS_REQUIRED;
  p->registration = 1;
}

static int authenticated_now(world *w) {
  xcm_session_info info;

  return xcm_cm_session(w->base.cm, w->sid, &info, sizeof info) == 0 &&
         info.authenticated;
}

/* Finding 3: a legacy auth set answered with an error is over. A later
 * iq get with the same id, answered result, is not its answer: the
 * client stays unauthenticated, and SASL is still open to it. */
static void test_legacy_error_is_final(void) {
  unsigned before = xcm_test_failures();
  xcm_stats st;
  world w;
  xcm_raw r;

  world_start(&w, 0, legacy_on);
  open_at_features(&w, &r);
  xcm__buf_reset(&r.in);
  xcm_raw_sends(&r, "<iq type='set' id='x1'><query xmlns='jabber:iq:auth'>"
                    "<username>alice</username><password>wrong</password>"
                    "<resource>r</resource></query></iq>");
  CHECK(xcm_raw_wait(&r, "type=\"error\"", 3000));
  xcm__buf_reset(&r.in);
  xcm_raw_sends(&r, "<iq type='get' id='x1'><query xmlns='jabber:iq:auth'>"
                    "<username>alice</username></query></iq>");
  CHECK(xcm_raw_wait(&r, "type=\"result\"", 3000));
  /* Let anything the result set off run its course. */
  xcm_test_run_for(&w.base.loop, 50);
  CHECK(!authenticated_now(&w));
  CHECK(strstr(w.log, "2:") == NULL);
  xcm_cm_stats(w.base.cm, &st, sizeof st);
  CHECK_INT(st.sessions_authenticated, 0);
  /* Not authenticated, so SASL is still on offer and works. */
  xcm__buf_reset(&r.in);
  xcm_raw_sends(&r, XCM_RAW_AUTH_ALICE);
  if (!CHECK(xcm_raw_wait(&r, "<success", 3000)))
    xcm_test_note("got: %s", r.in.data);
  CHECK(authenticated_now(&w));
  xcm_cm_stats(w.base.cm, &st, sizeof st);
  CHECK_INT(st.sessions_authenticated, 1);
  xcm_test_tried("forged-answers", before);
  xcm_raw_free(&r);
  world_stop(&w);
}

/* Finding 4: registration carries a password; on a clear stream where
 * the policy requires TLS it is refused like SASL and legacy auth, and
 * the server never sees it. */
static void test_register_needs_tls(void) {
  unsigned before = xcm_test_failures();
  xcm_testkit_stats ks0, ks1;
  world w;
  xcm_raw r;

  world_start(&w, 1, tls_required);
  open_at_features(&w, &r);
  CHECK(strstr(r.in.data, "<required/>") != NULL);
  xcm_testkit_get_stats(w.base.kit, &ks0, sizeof ks0);
  xcm_raw_sends(&r, "<iq type='set' id='r1'><query "
                    "xmlns='jabber:iq:register'><username>mallory</username>"
                    "<password>secret</password></query></iq>");
  if (!CHECK(xcm_raw_wait(&r, "<policy-violation ", 3000)))
    xcm_test_note("got: %s", r.in.data);
  CHECK(strstr(r.in.data, "TLS is required before registration") != NULL);
  CHECK(xcm_test_run_until(&w.base.loop, xcm_raw_is_eof, &r, 3000));
  xcm_test_run_for(&w.base.loop, 50);
  xcm_testkit_get_stats(w.base.kit, &ks1, sizeof ks1);
  CHECK_INT(ks1.routes_in, ks0.routes_in);
  xcm_test_tried("before-tls", before);
  xcm_raw_free(&r);
  world_stop(&w);
}

/* Finding 5: a bind refused by the server, whose error echoes the
 * client's request with a <jid/> of the client's own, binds nothing. A
 * genuine bind then reports the JID from the result's <jid/>, unescaped
 * (xcm.h: the bound full JID). */
static void test_bind_jid_from_result_only(void) {
  unsigned before = xcm_test_failures();
  xcm_session_info info;
  char *req;
  size_t n;
  world w;
  xcm_raw r;

  world_start(&w, 0, NULL);
  REQUIRE(xcm_raw_open(&r, &w.base.loop, "127.0.0.1", w.base.port, 1));
  REQUIRE(xcm_raw_sasl(&r, XCM_RAW_HDR, XCM_RAW_AUTH_ALICE));
  /* A resource over the server's 1023 bytes: bad-request, echoed. */
  req = malloc(2048);
  REQUIRE(req != NULL);
  n = (size_t)snprintf(
      req, 2048, "<iq type='set' id='b1'><bind xmlns='" NS_BIND "'><resource>");
  memset(req + n, 'x', 1100);
  n += 1100;
  snprintf(req + n, 2048 - n,
           "</resource><jid>admin@example.test/console</jid></bind></iq>");
  xcm__buf_reset(&r.in);
  xcm_raw_sends(&r, req);
  free(req);
  CHECK(xcm_raw_wait(&r, "bad-request", 3000));
  /* The echo reached the client, forged JID and all. */
  CHECK(strstr(r.in.data, "admin@example.test/console") != NULL);
  xcm_test_run_for(&w.base.loop, 50);
  CHECK(strstr(w.log, "admin@example.test/console") == NULL);
  CHECK(strstr(w.log, "3:") == NULL);
  REQUIRE(xcm_cm_session(w.base.cm, w.sid, &info, sizeof info) == 0);
  CHECK(info.jid == NULL);
  /* The genuine bind: the JID as the server wrote it, unescaped. */
  xcm__buf_reset(&r.in);
  xcm_raw_sends(&r, "<iq type='set' id='b2'><bind xmlns='" NS_BIND
                    "'><resource>good&amp;co</resource></bind></iq>");
  CHECK(xcm_raw_wait(&r, "</jid>", 3000));
  CHECK(strstr(w.log, "3:alice@example.test/good&co:auth;") != NULL);
  REQUIRE(xcm_cm_session(w.base.cm, w.sid, &info, sizeof info) == 0);
  CHECK(info.jid != NULL &&
        strcmp(info.jid, "alice@example.test/good&co") == 0);
  xcm_test_tried("forged-answers", before);
  xcm_raw_free(&r);
  world_stop(&w);
}

static void expect_refused(world *w, xcm_raw *r, const char *text) {
  if (!CHECK(xcm_raw_wait(r, "<policy-violation ", 3000)))
    xcm_test_note("got: %s", r->in.data);
  if (!CHECK(strstr(r->in.data, text) != NULL))
    xcm_test_note("got: %s", r->in.data);
  CHECK(xcm_test_run_until(&w->base.loop, xcm_raw_is_eof, r, 3000));
}

/* While a request is pending, an iq with its id could get the answer the
 * CM takes for the request's: it is refused, before authentication
 * (legacy auth) and after (bind). */
static void test_pending_id_reused(void) {
  unsigned before = xcm_test_failures();
  xcm_testkit_stats ks0, ks1;
  world w;
  xcm_raw r;

  world_start(&w, 0, legacy_on);
  open_at_features(&w, &r);
  xcm_testkit_get_stats(w.base.kit, &ks0, sizeof ks0);
  /* One write: the server cannot have answered the first in between. */
  xcm_raw_sends(&r, "<iq type='set' id='dup'><query xmlns='jabber:iq:auth'>"
                    "<username>alice</username><password>wrong</password>"
                    "<resource>r</resource></query></iq>"
                    "<iq type='get' id='dup'><query xmlns='jabber:iq:auth'>"
                    "<username>alice</username></query></iq>");
  expect_refused(&w, &r, "reuses the id of a request still pending");
  xcm_testkit_get_stats(w.base.kit, &ks1, sizeof ks1);
  /* The set went up, the get did not. */
  CHECK_INT(ks1.routes_in, ks0.routes_in + 1);
  xcm_test_tried("forged-answers", before);
  xcm_raw_free(&r);

  before = xcm_test_failures();
  REQUIRE(xcm_raw_open(&r, &w.base.loop, "127.0.0.1", w.base.port, 1));
  REQUIRE(xcm_raw_sasl(&r, XCM_RAW_HDR, XCM_RAW_AUTH_ALICE));
  xcm_raw_sends(&r, "<iq type='set' id='b1'><bind xmlns='" NS_BIND
                    "'><resource>one</resource></bind></iq>"
                    "<iq type='set' id='b1'><bind xmlns='" NS_BIND
                    "'><resource>two</resource></bind></iq>");
  expect_refused(&w, &r, "reuses the id of a request still pending");
  xcm_test_tried("forged-answers", before);
  xcm_raw_free(&r);
  world_stop(&w);
}

/* The table is small and fixed: one request more than it holds ends the
 * stream; no record is ever dropped to make room. */
static void test_too_many_pending(void) {
  unsigned before = xcm_test_failures();
  xcm_buf b;
  world w;
  xcm_raw r;
  int i;

  world_start(&w, 0, legacy_on);
  open_at_features(&w, &r);
  xcm__buf_init(&b, NULL);
  for (i = 0; i < 5; i++) {
    char one[256];

    snprintf(one, sizeof one,
             "<iq type='set' id='m%d'><query xmlns='jabber:iq:auth'>"
             "<username>alice</username><password>wrong</password>"
             "<resource>r</resource></query></iq>",
             i);
    REQUIRE(xcm__buf_append_str(&b, one) == 0);
  }
  xcm_raw_send(&r, b.data, b.len);
  xcm__buf_free(&b);
  expect_refused(&w, &r, "too many requests pending");
  CHECK(!authenticated_now(&w));
  xcm_test_tried("forged-answers", before);
  xcm_raw_free(&r);
  world_stop(&w);
}

/* The usual logins still work: SASL then bind, with the session after
 * it, and legacy auth. */
static void test_logins_still_work(void) {
  xcm_session_info info;
  world w;
  xcm_raw r;

  world_start(&w, 0, legacy_on);
  REQUIRE(xcm_raw_open(&r, &w.base.loop, "127.0.0.1", w.base.port, 1));
  CHECK(xcm_raw_login(&r, XCM_RAW_HDR, XCM_RAW_AUTH_ALICE, "web"));
  CHECK(strstr(w.log, "3:alice@example.test/web:auth;") != NULL);
  xcm_raw_free(&r);
  w.log[0] = '\0';
  open_at_features(&w, &r);
  xcm_raw_sends(&r, "<iq type='set' id='la'><query xmlns='jabber:iq:auth'>"
                    "<username>alice</username><password>alice</password>"
                    "<resource>old</resource></query></iq>");
  CHECK(xcm_raw_wait(&r, "type=\"result\"", 3000));
  xcm_test_run_for(&w.base.loop, 50);
  CHECK(authenticated_now(&w));
  REQUIRE(xcm_cm_session(w.base.cm, w.sid, &info, sizeof info) == 0);
  /* Past the pre-auth limit (8 KiB) now. */
  {
    char *big = malloc(12000);

    REQUIRE(big != NULL);
    memset(big, 0, 12000);
    strcpy(big, "<message to='alice@example.test/old'><body>");
    memset(big + strlen(big), 'y', 10000);
    strcat(big, "big</body></message>");
    xcm__buf_reset(&r.in);
    xcm_raw_sends(&r, big);
    free(big);
    CHECK(xcm_raw_wait(&r, "yybig</body>", 3000));
  }
  xcm_raw_free(&r);
  world_stop(&w);
}

/* ---- the table itself ---------------------------------------------------- */

typedef struct noting {
  xcm_requests **t;
  unsigned state;
  int err;
} noting;

static int note_levels(void *ud, const char *ns, const char *name) {
  (void)ud;
  (void)ns;
  return strcmp(name, "iq") == 0 ? 2 : 0;
}

static int note_stanza(void *ud, const xcm_xml_stanza *s) {
  noting *n = ud;

  n->err = xcm__req_note(n->t, NULL, s, n->state);
  return 0;
}

/* What xcm__req_note says of bytes, one client element. */
static int note(xcm_xml_pool *pool, xcm_requests **t, unsigned state,
                const char *bytes) {
  static const xcm_xml_callbacks cb = {NULL, note_levels, note_stanza, NULL};
  noting n = {t, state, 1};
  xcm_xml_reader *r;
  size_t consumed;

  REQUIRE(xcm__xml_reader_new(&r, pool, &cb, &n, NULL) == 0);
  REQUIRE(xcm__xml_reader_assume_header(r, &xcm__stream_client) == 0);
  REQUIRE(xcm__xml_reader_feed(r, bytes, strlen(bytes), &consumed) == 0);
  xcm__xml_reader_free(r);
  return n.err;
}

static xcm_answer_kind answer(xcm_xml_pool *pool, xcm_requests **t,
                              const char *bytes, char *jid, size_t cap) {
  xcm_answer a;

  REQUIRE(xcm__req_answer(t, NULL, pool, bytes, strlen(bytes), &a) == 0);
  if (jid != NULL)
    snprintf(jid, cap, "%s", a.jid != NULL ? a.jid : "");
  free(a.jid);
  return a.kind;
}

#define LEGACY(id)                                                             \
  "<iq type='set' id='" id "'><query xmlns='jabber:iq:auth'>"                  \
  "<username>a</username></query></iq>"
#define BIND_SET(id)                                                           \
  "<iq type='set' id='" id "'><bind xmlns='" NS_BIND "'/></iq>"

/* The matching rules, without a network: the right element, namespace,
 * type and id; one element only; the JID as the <jid/> element's text. */
static void test_answers_read_as_elements(void) {
  xcm_requests *t = NULL;
  xcm_xml_pool *pool;
  char jid[128];
  int i;

  REQUIRE(xcm__xml_pool_new(&pool, NULL, 4) == 0);
  /* Legacy auth: only a result or error with its id answers it. */
  CHECK_INT(note(pool, &t, 0, LEGACY("a1")), 0);
  CHECK_INT(xcm__req_pending(t, XCM_REQ_LEGACY), 1);
  CHECK_INT(answer(pool, &t, "<iq type='result' id='a2'/>", NULL, 0),
            XCM_ANSWER_NONE);
  CHECK_INT(answer(pool, &t, "<iq type='get' id='a1'/>", NULL, 0),
            XCM_ANSWER_NONE);
  CHECK_INT(answer(pool, &t, "<message type='result' id='a1'/>", NULL, 0),
            XCM_ANSWER_NONE);
  CHECK_INT(note(pool, &t, 0, "<iq type='get' id='a1'/>"), XCM_EBUSY);
  CHECK_INT(answer(pool, &t, "<iq type='error' id='a1'/>", NULL, 0),
            XCM_ANSWER_LEGACY_FAIL);
  CHECK(t == NULL);
  CHECK_INT(answer(pool, &t, "<iq type='result' id='a1'/>", NULL, 0),
            XCM_ANSWER_NONE);
  /* Registration is never recorded; a request needs an id. */
  CHECK_INT(note(pool, &t, 0,
                 "<iq type='set' id='r1'><query "
                 "xmlns='jabber:iq:register'/></iq>"),
            0);
  CHECK(t == NULL);
  CHECK_INT(
      note(pool, &t, 0, "<iq type='set'><query xmlns='jabber:iq:auth'/></iq>"),
      XCM_EINVAL);
  /* Bind: a prefixed iq is an iq; the JID is unescaped text. */
  CHECK_INT(note(pool, &t, XCM_REQ_AUTHED, BIND_SET("b1")), 0);
  CHECK_INT(answer(pool, &t,
                   "<c:iq xmlns:c='jabber:client' type='result' id='b1'>"
                   "<bind xmlns='" NS_BIND "'><jid>a@b/c&amp;d</jid></bind>"
                   "</c:iq>",
                   jid, sizeof jid),
            XCM_ANSWER_BOUND);
  CHECK_STR(jid, "a@b/c&d");
  CHECK(t == NULL);
  /* An element inside <jid/>, or no <jid/> in the bind namespace. */
  CHECK_INT(note(pool, &t, XCM_REQ_AUTHED, BIND_SET("b2")), 0);
  CHECK_INT(answer(pool, &t,
                   "<iq type='result' id='b2'><bind xmlns='" NS_BIND
                   "'><jid>a<x/>b</jid></bind></iq>",
                   NULL, 0),
            XCM_ANSWER_BIND_FAIL);
  CHECK_INT(note(pool, &t, XCM_REQ_AUTHED, BIND_SET("b3")), 0);
  CHECK_INT(answer(pool, &t,
                   "<iq type='result' id='b3'><bind xmlns='other'><jid>x@y/z"
                   "</jid></bind></iq>",
                   NULL, 0),
            XCM_ANSWER_BIND_FAIL);
  /* SASL: the element in its namespace; a challenge goes on; two
   * elements are no answer. */
  CHECK_INT(note(pool, &t, 0,
                 "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
                 "mechanism='PLAIN'/>"),
            0);
  CHECK_INT(answer(pool, &t, "<success xmlns='jabber:client'/>", NULL, 0),
            XCM_ANSWER_NONE);
  CHECK_INT(answer(pool, &t,
                   "<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
                   NULL, 0),
            XCM_ANSWER_NONE);
  CHECK_INT(answer(pool, &t,
                   "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/><x/>",
                   NULL, 0),
            XCM_ANSWER_SASL_FAIL);
  CHECK(t == NULL);
  CHECK_INT(note(pool, &t, 0,
                 "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
                 "mechanism='PLAIN'/>"),
            0);
  CHECK_INT(answer(pool, &t,
                   "<s:success xmlns:s='urn:ietf:params:xml:ns:xmpp-sasl'/>",
                   NULL, 0),
            XCM_ANSWER_SASL_OK);
  CHECK(t == NULL);
  /* Full is full. */
  for (i = 0; i < XCM_REQ_MAX; i++) {
    char one[128];

    snprintf(one, sizeof one, LEGACY("f%d"), i);
    CHECK_INT(note(pool, &t, 0, one), 0);
  }
  CHECK_INT(note(pool, &t, 0, LEGACY("f9")), XCM_ELIMIT);
  CHECK_INT(xcm__req_pending(t, XCM_REQ_LEGACY), XCM_REQ_MAX);
  xcm__req_clear(&t, NULL);
  CHECK(t == NULL);
  xcm__xml_pool_free(pool);
}

static const xcm_test tests[] = {
    {"answers_read_as_elements", test_answers_read_as_elements},
    {"legacy_error_is_final", test_legacy_error_is_final},
    {"register_needs_tls", test_register_needs_tls},
    {"bind_jid_from_result_only", test_bind_jid_from_result_only},
    {"pending_id_reused", test_pending_id_reused},
    {"too_many_pending", test_too_many_pending},
    {"logins_still_work", test_logins_still_work},
};

int main(int argc, char **argv) {
  return xcm_test_main(argc, argv, XCM_TESTS(tests));
}
