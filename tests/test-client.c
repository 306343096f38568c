/* The client side end to end: libxcm (public API) in front of the
 * in-process Openfire, driven by raw clients over loopback so that every
 * byte on the wire can be checked. A well-behaved client stays logged in
 * through every hostile case and must keep working. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "core/ctx.h"
#include "harness.h"
#include "rawclient.h"
#include "world.h"
#include "transport/stream.h"
#include "util/buf.h"
#include "xcm/testkit.h"
#include "xcm/xcm.h"

typedef xcm_test_world world;

/* Set by a test before world_start: listeners with a certificate. */
static int want_tls;

typedef xcm_raw raw;

/* ---- the world ----------------------------------------------------------- */

static int run_until(world *w, int (*pred)(void *), void *ud, unsigned ms) {
  return xcm_test_run_until(&w->loop, pred, ud, ms);
}

static int policy_known(void *ud) {
  world *w = ud;
  xcm_stats st;

  xcm_cm_stats(w->cm, &st, sizeof st);
  return xcm_cm_policy(w->cm) != NULL && st.upstream_links_up >= 1;
}

static void tune_options(xcm_options *o, void *ud) {
  void (*const *tune)(xcm_options *) = ud;

  if (*tune != NULL)
    (*tune)(o);
}

static void world_start(world *w, void (*tune)(xcm_options *)) {
  xcm_test_world_setup s = {.seed = 5,
                            .roster = 1,
                            .tune = tune_options,
                            .ud = &tune,
                            .direct_tls = want_tls};

  xcm_test_world_start(w, &s);
}

static void world_stop(world *w) {
  xcm_test_world_stop(w, 1000);
}

/* ---- a raw client ------------------------------------------------------ */

static void raw_open_port(world *w, raw *r, int reading, int port) {
  REQUIRE(xcm_raw_open(r, &w->loop, "127.0.0.1", port, reading));
}

static void raw_open(world *w, raw *r, int reading) {
  raw_open_port(w, r, reading, w->port);
}

/* Log in with SASL PLAIN, bind resource, establish the session. */
static int raw_login(raw *r, const char *auth, const char *resource) {
  return xcm_raw_login(r, XCM_RAW_HDR, auth, resource);
}

/* ---- tests ----------------------------------------------------------- */

static void test_login_and_chat(void) {
  world w;
  raw a;

  world_start(&w, NULL);
  raw_open(&w, &a, 1);
  xcm_raw_sends(&a, XCM_RAW_HDR);
  CHECK(xcm_raw_wait(&a, "</stream:features>", 3000));
  /* Our header, with our stream id, and the server's mechanisms; no
   * STARTTLS without a certificate, no compression outside TLS. */
  CHECK(strstr(a.in.data, "from=\"example.test\"") != NULL);
  CHECK(strstr(a.in.data, "<mechanism>PLAIN</mechanism>") != NULL);
  CHECK(strstr(a.in.data, "starttls") == NULL);
  CHECK(strstr(a.in.data, "compression") == NULL);
  xcm__buf_reset(&a.in);
  xcm_raw_sends(&a, XCM_RAW_AUTH_ALICE);
  CHECK(xcm_raw_wait(&a, "<success", 3000));
  xcm__buf_reset(&a.in);
  xcm_raw_sends(&a, XCM_RAW_HDR);
  CHECK(xcm_raw_wait(&a, "</stream:features>", 3000));
  CHECK(strstr(a.in.data, "xmpp-bind") != NULL);
  CHECK(strstr(a.in.data, "mechanism") == NULL);
  xcm_raw_sends(&a, "<iq type='set' id='b1'><bind "
                    "xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>good"
                    "</resource></bind></iq>");
  CHECK(xcm_raw_wait(&a, "<jid>alice@example.test/good</jid>", 3000));
  xcm_raw_sends(&a, "<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/>"
                    "</iq><presence/>");
  CHECK(xcm_raw_wait(&a, "bob@example.test", 3000));
  CHECK(xcm_raw_still_works(&a, 1));
  xcm_raw_sends(&a, "</stream:stream>");
  CHECK(xcm_raw_wait(&a, "</stream:stream>", 3000));
  CHECK(run_until(&w, xcm_raw_is_eof, &a, 3000));
  xcm_raw_free(&a);
  world_stop(&w);
}

static unsigned parsers_busy(world *w) {
  xcm_stats st;

  xcm_cm_stats(w->cm, &st, sizeof st);
  return st.xml_parsers_busy;
}

static int every_link_up(void *ud) {
  world *w = ud;
  xcm_stats st;

  xcm_cm_stats(w->cm, &st, sizeof st);
  return st.upstream_links_up == xcm_cm_upstream_links(w->cm);
}

/* The scanner reads a usual login without an expat parser. A header it
 * declines is expat's: the client then keeps that parser while it logs in
 * (re-priming one at every read would cost a third of a login) and gives
 * it back once bound. An idle session holds none. */
static void test_parsers_follow_activity(void) {
  world w;
  raw a, b;
  unsigned base;

  world_start(&w, NULL);
  REQUIRE(run_until(&w, every_link_up, &w, 5000));
  base = parsers_busy(&w); /* the upstream links' own, if any */
  raw_open(&w, &a, 1);
  /* standalone is outside the scanner's subset. */
  xcm_raw_sends(&a, "<?xml version='1.0' standalone='yes'?>"
                    "<stream:stream "
                    "xmlns:stream='http://etherx.jabber.org/streams' "
                    "xmlns='jabber:client' to='example.test' version='1.0'>");
  CHECK(xcm_raw_wait(&a, "</stream:features>", 3000));
  CHECK_INT(parsers_busy(&w), base + 1);

  raw_open(&w, &b, 1);
  CHECK(raw_login(&b, XCM_RAW_AUTH_BOB, "idle"));
  CHECK_INT(parsers_busy(&w), base + 1);

  xcm_raw_sends(&a, XCM_RAW_AUTH_ALICE);
  CHECK(xcm_raw_wait(&a, "<success", 3000));
  xcm__buf_reset(&a.in);
  xcm_raw_sends(&a, XCM_RAW_HDR);
  CHECK(xcm_raw_wait(&a, "urn:ietf:params:xml:ns:xmpp-bind", 3000));
  xcm_raw_sends(&a, "<iq type='set' id='b1'><bind "
                    "xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>good"
                    "</resource></bind></iq>");
  CHECK(xcm_raw_wait(&a, "<jid>alice@example.test/good</jid>", 3000));
  CHECK_INT(parsers_busy(&w), base);
  CHECK(xcm_raw_still_works(&a, 1));
  CHECK_INT(parsers_busy(&w), base);
  xcm_raw_free(&a);
  xcm_raw_free(&b);
  world_stop(&w);
}

/* A client that sends half of its SASL auth and waits (the security
 * report: 10,000 such cost 16 KB each) holds no parser while it waits,
 * only the bytes; the rest of the stanza completes its login. */
static void test_half_stanza_holds_no_parser(void) {
  static const char auth[] = XCM_RAW_AUTH_ALICE;
  const size_t half = sizeof auth / 2;
  world w;
  raw a;
  unsigned base;

  world_start(&w, NULL);
  REQUIRE(run_until(&w, every_link_up, &w, 5000));
  base = parsers_busy(&w);
  raw_open(&w, &a, 1);
  xcm_raw_sends(&a, XCM_RAW_HDR);
  CHECK(xcm_raw_wait(&a, "</stream:features>", 3000));
  xcm_raw_send(&a, auth, half);
  /* Nothing comes back: give the CM time to read the half. */
  CHECK(!xcm_raw_wait(&a, "<failure", 300));
  CHECK_INT(parsers_busy(&w), base);
  xcm_raw_sends(&a, auth + half);
  CHECK(xcm_raw_wait(&a, "<success", 3000));
  xcm_raw_free(&a);
  world_stop(&w);
}

static void expat_only(xcm_options *o) {
  o->expat_only = 1;
}

/* With the scanner switched off a usual login is read by expat: the
 * client holds a parser until bound, and everything still works. */
static void test_expat_only_reads_everything(void) {
  world w;
  raw a;
  unsigned base;

  world_start(&w, expat_only);
  REQUIRE(run_until(&w, every_link_up, &w, 5000));
  base = parsers_busy(&w);
  raw_open(&w, &a, 1);
  xcm_raw_sends(&a, XCM_RAW_HDR);
  CHECK(xcm_raw_wait(&a, "</stream:features>", 3000));
  CHECK_INT(parsers_busy(&w), base + 1);
  xcm_raw_free(&a);
  raw_open(&w, &a, 1);
  CHECK(raw_login(&a, XCM_RAW_AUTH_ALICE, "good"));
  CHECK(xcm_raw_still_works(&a, 1));
  xcm_raw_free(&a);
  world_stop(&w);
}

typedef struct bad_case {
  const char *cls; /* for the README's table */
  const char *name;
  const char
      *send; /* after our XCM_RAW_HDR unless it starts with '<?' or '<s' */
  const char *cond;
  int authenticate_first;
} bad_case;

static void tiny_limits(xcm_options *o) {
  o->max_stanza_preauth = 1024;
  o->max_stanza = 4096;
  o->rate = 50;
  o->burst = 100;
}

static void test_stream_errors_on_the_wire(void) {
  static char big[2048], bigger[6000], deep[2000];
  static const bad_case cases[] = {
      {"bad-stream-headers", "wrong host",
       "<?xml version='1.0'?><stream:stream "
       "xmlns:stream='http://etherx.jabber.org/streams' "
       "xmlns='jabber:client' to='other.test' version='1.0'>",
       "host-unknown", 0},
      {"bad-stream-headers", "wrong namespace",
       "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' "
       "xmlns='jabber:server' to='example.test' version='1.0'>",
       "invalid-namespace", 0},
      {"bad-stream-headers", "wrong stream namespace",
       "<stream:stream xmlns:stream='urn:wrong' xmlns='jabber:client' "
       "to='example.test' version='1.0'>",
       "invalid-namespace", 0},
      {"bad-stream-headers", "version 2",
       "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' "
       "xmlns='jabber:client' to='example.test' version='2.0'>",
       "unsupported-version", 0},
      {"malformed-xml", "garbage", "<message><<</message>", "not-well-formed",
       0},
      {"restricted-xml", "comment", "<!-- x -->", "restricted-xml", 0},
      {"restricted-xml", "doctype mid-stream", "<!DOCTYPE x><x/>",
       "not-well-formed", 0},
      {"restricted-xml", "doctype before the header",
       "<!DOCTYPE stream:stream><stream:stream "
       "xmlns:stream='http://etherx.jabber.org/streams' "
       "xmlns='jabber:client' to='example.test' version='1.0'>",
       "restricted-xml", 0},
      {"restricted-xml", "entity", "<message>&foo;</message>", "restricted-xml",
       0},
      {"unbound-prefixes", "unbound prefix", "<message><x:y/></message>",
       "not-well-formed", 0},
      {"before-auth", "message before auth", "<message to='bob@example.test'/>",
       "not-authorized", 0},
      {"before-auth", "presence before auth", "<presence/>", "not-authorized",
       0},
      {"before-auth", "roster before auth",
       "<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>",
       "not-authorized", 0},
      {"before-auth", "bind before auth",
       "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
       "<resource>x</resource></bind></iq>",
       "not-authorized", 0},
      {"before-auth", "empty iq before auth", "<iq type='get' id='e'/>",
       "not-authorized", 0},
      {"before-auth", "iq:auth hidden behind a second child",
       "<iq type='set' id='a'><query xmlns='jabber:iq:roster'/><query "
       "xmlns='jabber:iq:auth'/></iq>",
       "not-authorized", 0},
      {"not-allowed-elements", "unknown element", "<foo xmlns='urn:foo'/>",
       "unsupported-stanza-type", 0},
      {"smuggling", "route smuggled", "<route streamid='x'><message/></route>",
       "unsupported-stanza-type", 0},
      {"smuggling", "handshake smuggled", "<handshake>00</handshake>",
       "unsupported-stanza-type", 0},
      {"unbound-prefixes", "stream-level prefix", "<stream:features/>",
       "unsupported-stanza-type", 0},
      {"oversized", "too big before auth", big, "policy-violation", 0},
      {"oversized", "too big after auth", bigger, "policy-violation", 1},
      {"deep-nesting", "too deep", deep, "policy-violation", 1},
      {"invalid-utf8", "invalid utf-8", "<message>\xff\xfe</message>",
       "not-well-formed", 1},
  };
  world w;
  raw good;
  size_t i;

  snprintf(big, sizeof big, "<iq type='get' id='x'><query xmlns='%0*d'/></iq>",
           1500, 0);
  snprintf(bigger, sizeof bigger,
           "<message to='bob@example.test'><body>%0*d</body></message>", 5000,
           0);
  strcpy(deep, "<message>");
  for (i = 0; i < 40; i++)
    strcat(deep, "<x>");
  world_start(&w, tiny_limits);
  raw_open(&w, &good, 1);
  REQUIRE(raw_login(&good, XCM_RAW_AUTH_ALICE, "good"));
  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    unsigned before = xcm_test_failures();
    raw r;
    char want[128];
    int own_header = strncmp(cases[i].send, "<?", 2) == 0 ||
                     strncmp(cases[i].send, "<!DOCTYPE stream", 16) == 0 ||
                     strncmp(cases[i].send, "<stream:stream", 14) == 0;

    raw_open(&w, &r, 1);
    if (cases[i].authenticate_first) {
      REQUIRE(raw_login(&r, XCM_RAW_AUTH_BOB, "bad"));
      xcm__buf_reset(&r.in);
    } else if (!own_header) {
      xcm_raw_sends(&r, XCM_RAW_HDR);
    }
    xcm_raw_sends(&r, cases[i].send);
    snprintf(want, sizeof want,
             "<%s xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"",
             cases[i].cond);
    if (!CHECK(xcm_raw_wait(&r, want, 3000)))
      xcm_test_note("case '%s' got: %s", cases[i].name,
                    r.in.data ? r.in.data : "(nothing)");
    /* The error, then the end of the stream, then the connection. */
    CHECK(xcm_raw_wait(&r, "</stream:stream>", 3000));
    CHECK(run_until(&w, xcm_raw_is_eof, &r, 3000));
    xcm_raw_free(&r);
    if (!CHECK(xcm_raw_still_works(&good, (int)i)))
      xcm_test_note("the good client broke after '%s'", cases[i].name);
    xcm_test_tried(cases[i].cls, before);
  }
  xcm_raw_free(&good);
  world_stop(&w);
}

/* The stream id in the first header r received, into out (23 bytes):
 * 0, or -1 if there is none. */
static int header_id(const raw *r, char *out) {
  const char *p = r->in.data ? strstr(r->in.data, "<stream:stream") : NULL;
  const char *end = p ? strchr(p, '>') : NULL;
  size_t n;

  out[0] = '\0';
  if (end == NULL)
    return -1;
  for (; p < end; p++)
    if ((p[0] == ' ' || p[0] == '\n') && strncmp(p + 1, "id=", 3) == 0)
      break;
  if (p >= end)
    return -1;
  p += 5; /* the space, id=, the quote */
  n = strcspn(p, "'\"");
  if (n > 22)
    return -1;
  memcpy(out, p, n);
  out[n] = '\0';
  return 0;
}

static int cmp_ids(const void *a, const void *b) {
  return strcmp((const char *)a, (const char *)b);
}

/* Stream ids cannot be guessed: each is 128 random bits, 22 characters
 * of base64url whose last one carries 2 bits. Many ids from as many
 * connections are all distinct and every one of the 128 bits varies
 * (about half of the ids have it set: out of 256, between 64 and 192,
 * which a fair bit misses with a chance below 1e-15). And while a session
 * is live, ids near its own (one character changed, cut short, one more)
 * find nothing through the session API. */
static void test_stream_ids(void) {
  enum { N = 256 };
  static const char abc[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  static char ids[N][23];
  unsigned ones[128];
  xcm_session_info info;
  char live[23], guess[32];
  world w;
  raw a;
  size_t i, k;

  memset(ones, 0, sizeof ones);
  world_start(&w, NULL);
  for (i = 0; i < N; i++) {
    unsigned before = xcm_test_failures();
    raw r;

    raw_open(&w, &r, 1);
    xcm_raw_sends(&r, XCM_RAW_HDR);
    CHECK(xcm_raw_wait(&r, "</stream:features>", 3000));
    if (CHECK_INT(header_id(&r, ids[i]), 0) && CHECK_INT(strlen(ids[i]), 22) &&
        CHECK(strspn(ids[i], abc) == 22) &&
        CHECK(strchr("AQgw", ids[i][21]) != NULL)) {
      /* The 128 bits: 21 characters of 6, and 2 from the last. */
      for (k = 0; k < 128; k++) {
        unsigned v = (unsigned)(strchr(abc, ids[i][k / 6]) - abc);

        if ((v >> (5 - k % 6)) & 1)
          ones[k]++;
      }
    }
    xcm_raw_free(&r);
    xcm_test_tried("stream-id-randomness", before);
  }
  qsort(ids, N, sizeof ids[0], cmp_ids);
  for (i = 1; i < N; i++)
    if (!CHECK(strcmp(ids[i - 1], ids[i]) != 0))
      xcm_test_note("stream id %s given twice", ids[i]);
  for (k = 0; k < 128; k++)
    if (!CHECK(ones[k] >= N / 4 && ones[k] <= 3 * N / 4))
      xcm_test_note("bit %zu set in %u of %d stream ids", k, ones[k], N);

  /* Guesses near a live session's id. */
  raw_open(&w, &a, 1);
  REQUIRE(raw_login(&a, XCM_RAW_AUTH_ALICE, "good"));
  REQUIRE(header_id(&a, live) == 0);
  REQUIRE(xcm_cm_session(w.cm, live, &info, sizeof info) == 0);
  for (i = 0; i < 22 + 3; i++) {
    unsigned before = xcm_test_failures();

    strcpy(guess, live);
    if (i < 22) /* one character changed */
      guess[i] = guess[i] == 'A' ? 'B' : 'A';
    else if (i == 22) /* cut short */
      guess[21] = '\0';
    else if (i == 23) /* one more */
      strcat(guess, "A");
    else /* nothing */
      guess[0] = '\0';
    CHECK_INT(xcm_cm_session(w.cm, guess, &info, sizeof info), XCM_ENOTFOUND);
    CHECK_INT(xcm_cm_close_session(w.cm, guess, XCM_COND_CONFLICT, "guess"),
              XCM_ENOTFOUND);
    xcm_test_tried("guessed-stream-ids", before);
  }
  CHECK(xcm_raw_still_works(&a, 1));
  CHECK_INT(xcm_cm_session(w.cm, live, &info, sizeof info), 0);
  xcm_raw_free(&a);
  world_stop(&w);
}

static void short_auth(xcm_options *o) {
  o->auth_timeout_ms = 300;
}

static void test_auth_timeout(void) {
  world w;
  raw r;

  world_start(&w, short_auth);
  raw_open(&w, &r, 1);
  xcm_raw_sends(&r, XCM_RAW_HDR);
  CHECK(xcm_raw_wait(&r, "connection-timeout", 3000));
  CHECK(run_until(&w, xcm_raw_is_eof, &r, 3000));
  xcm_raw_free(&r);
  world_stop(&w);
}

typedef struct kit_count {
  world *w;
  uint64_t closes;
} kit_count;

static int closes_reached(void *ud) {
  kit_count *k = ud;
  xcm_testkit_stats st;

  xcm_testkit_get_stats(k->w->kit, &st, sizeof st);
  return st.closes_from_cm >= k->closes;
}

static void test_client_gone_closes_session(void) {
  world w;
  raw r;
  kit_count k;

  world_start(&w, NULL);
  raw_open(&w, &r, 1);
  REQUIRE(raw_login(&r, XCM_RAW_AUTH_BOB, "gone"));
  CHECK_INT(xcm_testkit_jid_state(w.kit, "bob@example.test/gone"), 2);
  /* Dropped without </stream:stream>: the server hears of it. */
  xcm_raw_reset(&r);
  k.w = &w;
  k.closes = 1;
  CHECK(run_until(&w, closes_reached, &k, 3000));
  CHECK_INT(xcm_testkit_jid_state(w.kit, "bob@example.test/gone"), 0);
  xcm__buf_free(&r.in);
  world_stop(&w);
}

static void test_server_closes_client(void) {
  world w;
  raw r, good;

  world_start(&w, NULL);
  raw_open(&w, &good, 1);
  REQUIRE(raw_login(&good, XCM_RAW_AUTH_ALICE, "good"));
  raw_open(&w, &r, 1);
  REQUIRE(raw_login(&r, XCM_RAW_AUTH_BOB, "kicked"));
  REQUIRE(xcm_testkit_close_jid(w.kit, "bob@example.test/kicked",
                                XCM_COND_CONFLICT) == 0);
  CHECK(xcm_raw_wait(&r, "<conflict", 3000));
  CHECK(xcm_raw_wait(&r, "</stream:stream>", 3000));
  CHECK(run_until(&w, xcm_raw_is_eof, &r, 3000));
  CHECK(strstr(good.in.data, "<conflict") == NULL);
  CHECK(xcm_raw_still_works(&good, 1));
  xcm_raw_free(&r);
  xcm_raw_free(&good);
  world_stop(&w);
}

static void test_upstream_lost(void) {
  world w;
  raw r;

  world_start(&w, NULL);
  raw_open(&w, &r, 1);
  REQUIRE(raw_login(&r, XCM_RAW_AUTH_BOB, "lost"));
  xcm_testkit_drop_all(w.kit);
  CHECK(xcm_raw_wait(&r, "remote-connection-failed", 3000));
  CHECK(run_until(&w, xcm_raw_is_eof, &r, 3000));
  xcm_raw_free(&r);
  /* Served again once the links are back. */
  CHECK(run_until(&w, policy_known, &w, 5000));
  raw_open(&w, &r, 1);
  CHECK(raw_login(&r, XCM_RAW_AUTH_BOB, "back"));
  xcm_raw_free(&r);
  world_stop(&w);
}

static void small_out(xcm_options *o) {
  o->max_client_out = 32 * 1024;
}

static int offline_some(void *ud) {
  world *w = ud;
  return xcm_testkit_offline_count(w->kit, "bob") > 0;
}

/* A client that stops reading is dropped, and what it did not get goes
 * back to the server to be stored offline. */
static void test_slow_reader(void) {
  world w;
  raw slow;
  char msg[2200], body[2000];
  xcm_stats st;
  int i;

  world_start(&w, small_out);
  raw_open(&w, &slow, 1);
  REQUIRE(raw_login(&slow, XCM_RAW_AUTH_BOB, "slow"));
  uv_read_stop((uv_stream_t *)&slow.tcp);
  REQUIRE(xcm_testkit_local_login(w.kit, "alice@example.test/direct", NULL,
                                  NULL) == 0);
  memset(body, 'z', sizeof body - 1);
  body[sizeof body - 1] = '\0';
  for (i = 0; i < 2000; i++) {
    int n = snprintf(msg, sizeof msg,
                     "<message to='bob@example.test/slow' type='chat'>"
                     "<body>%d %s</body></message>",
                     i, body);
    xcm_testkit_local_send(w.kit, "alice@example.test/direct", msg, (size_t)n);
    if (i % 50 == 0)
      uv_run(&w.loop, UV_RUN_NOWAIT);
  }
  CHECK(run_until(&w, offline_some, &w, 5000));
  xcm_cm_stats(w.cm, &st, sizeof st);
  xcm_test_note("returned with failed: %llu; stored offline: %u",
                (unsigned long long)st.failed_returned,
                xcm_testkit_offline_count(w.kit, "bob"));
  /* Not only the message that did not fit: those still queued too. */
  CHECK(st.failed_returned > 1);
  CHECK(st.stream_errors[XCM_COND_POLICY_VIOLATION] >= 1);
  xcm_raw_free(&slow);
  world_stop(&w);
}

static void test_shutdown_tells_clients(void) {
  world w;
  raw r;
  kit_count k;

  world_start(&w, NULL);
  raw_open(&w, &r, 1);
  REQUIRE(raw_login(&r, XCM_RAW_AUTH_BOB, "bye"));
  xcm_test_cm_shutdown(w.cm, 2000, &w.closed);
  CHECK(xcm_raw_wait(&r, "system-shutdown", 3000));
  k.w = &w;
  k.closes = 1;
  CHECK(run_until(&w, closes_reached, &k, 3000));
  xcm_raw_free(&r);
  xcm_test_world_end(&w.loop, w.cm, w.kit, &w.closed);
}

/* ---- TLS, compression, limits ------------------------------------------ */

static void test_bad_certificates(void) {
  static const struct {
    const char *cert, *key, *want;
  } cases[] = {
      {"expired.pem", "expired-key.pem", "expired"},
      {"future.pem", "future-key.pem", "not valid before"},
      {"server.pem", "stray-key.pem", "match"},
      {"missing.pem", "server-key.pem", "missing.pem"},
  };
  world w;
  size_t i;

  world_start(&w, NULL);
  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    xcm_listen_options lo;
    char err[512] = "";

    xcm_listen_options_init(&lo, sizeof lo);
    lo.host = "127.0.0.1";
    lo.cert_file = xcm_test_cert(cases[i].cert);
    lo.key_file = xcm_test_cert(cases[i].key);
    CHECK(xcm_cm_listen(w.cm, &lo, err, sizeof err) != 0);
    /* The message names the file and the problem. */
    if (!CHECK(strstr(err, cases[i].want) != NULL))
      xcm_test_note("%s: %s", cases[i].cert, err);
  }
  world_stop(&w);
}

typedef struct policy_wait {
  world *w;
  xcm_tls_policy tls;
} policy_wait;

static int policy_is(void *ud) {
  policy_wait *p = ud;
  const xcm_policy *cur = xcm_cm_policy(p->w->cm);
  return cur != NULL && cur->tls == p->tls;
}

static int legacy_on(void *ud) {
  world *w = ud;
  const xcm_policy *p = xcm_cm_policy(w->cm);
  return p != NULL && p->legacy_auth;
}

static void test_tls_required_cannot_be_bypassed(void) {
  static const char *tries[] = {XCM_RAW_AUTH_ALICE,
                                "<message to='bob@example.test'/>",
                                "<iq type='set' id='a'><query "
                                "xmlns='jabber:iq:auth'><username>alice"
                                "</username><password>alice</password>"
                                "</query></iq>"};
  static const char *conds[] = {"policy-violation", "not-authorized",
                                "not-authorized"};
  xcm_policy p;
  policy_wait pw;
  world w;
  size_t i;

  want_tls = 1;
  world_start(&w, NULL);
  want_tls = 0;
  p = *xcm_cm_policy(w.cm);
  p.tls = XCM_TLS_REQUIRED;
  REQUIRE(xcm_testkit_set_policy(w.kit, &p) == 0);
  pw.w = &w;
  pw.tls = XCM_TLS_REQUIRED;
  REQUIRE(run_until(&w, policy_is, &pw, 3000));
  for (i = 0; i < 3; i++) {
    unsigned before = xcm_test_failures();
    raw r;
    char want[96];

    raw_open(&w, &r, 1);
    xcm_raw_sends(&r, XCM_RAW_HDR);
    CHECK(xcm_raw_wait(&r, "</stream:features>", 3000));
    /* Only STARTTLS, marked required: no mechanisms to try. */
    CHECK(strstr(r.in.data, "<required/>") != NULL);
    CHECK(strstr(r.in.data, "mechanism") == NULL);
    xcm_raw_sends(&r, tries[i]);
    snprintf(want, sizeof want, "<%s ", conds[i]);
    if (!CHECK(xcm_raw_wait(&r, want, 3000)))
      xcm_test_note("got: %s", r.in.data);
    CHECK(run_until(&w, xcm_raw_is_eof, &r, 3000));
    xcm_raw_free(&r);
    xcm_test_tried("before-tls", before);
  }
  world_stop(&w);
}

static void quick_auth(xcm_options *o) {
  o->auth_timeout_ms = 300;
}

static void test_stalled_tls_handshake_times_out(void) {
  world w;
  raw r;
  uint64_t t0;

  want_tls = 1;
  world_start(&w, quick_auth);
  want_tls = 0;
  raw_open_port(&w, &r, 1, w.tls_port);
  t0 = uv_now(&w.loop);
  /* The start of a ClientHello, and then nothing. */
  xcm_raw_send(&r, "\x16\x03\x01\x00", 4);
  CHECK(run_until(&w, xcm_raw_is_eof, &r, 3000));
  CHECK(uv_now(&w.loop) - t0 < 2000);
  xcm_raw_free(&r);
  world_stop(&w);
}

static void two_per_address(xcm_options *o) {
  o->max_per_address = 2;
}

static void test_per_address_limit(void) {
  world w;
  raw r[3];
  xcm_stats st;
  int i;

  world_start(&w, two_per_address);
  for (i = 0; i < 3; i++)
    raw_open(&w, &r[i], 1);
  /* The third is closed at once; the first two are served. */
  CHECK(run_until(&w, xcm_raw_is_eof, &r[2], 3000));
  xcm_raw_sends(&r[0], XCM_RAW_HDR);
  CHECK(xcm_raw_wait(&r[0], "</stream:features>", 3000));
  xcm_cm_stats(w.cm, &st, sizeof st);
  CHECK_INT(st.clients_refused, 1);
  CHECK_INT(st.clients_refused_address_limit, 1);
  CHECK_INT(st.clients_refused_total_limit, 0);
  for (i = 0; i < 3; i++)
    xcm_raw_free(&r[i]);
  world_stop(&w);
}

static void quick_idle(xcm_options *o) {
  o->idle_timeout_ms = 400;
}

typedef struct pinger {
  raw *r;
  uv_timer_t t;
} pinger;

static void ping(uv_timer_t *t) {
  pinger *p = t->data;
  xcm_raw_sends(p->r, " ");
}

static void test_idle_timeout(void) {
  world w;
  raw idle, alive;
  pinger p;

  world_start(&w, quick_idle);
  raw_open(&w, &idle, 1);
  REQUIRE(raw_login(&idle, XCM_RAW_AUTH_ALICE, "idle"));
  raw_open(&w, &alive, 1);
  REQUIRE(raw_login(&alive, XCM_RAW_AUTH_BOB, "alive"));
  /* Whitespace counts as life. */
  p.r = &alive;
  uv_timer_init(&w.loop, &p.t);
  p.t.data = &p;
  uv_timer_start(&p.t, ping, 100, 100);
  CHECK(xcm_raw_wait(&idle, "connection-timeout", 3000));
  CHECK(run_until(&w, xcm_raw_is_eof, &idle, 3000));
  CHECK(!alive.eof && strstr(alive.in.data, "connection-timeout") == NULL);
  uv_close((uv_handle_t *)&p.t, NULL);
  xcm_raw_free(&idle);
  xcm_raw_free(&alive);
  world_stop(&w);
}

/* A scripted client on libxcm's own stream: STARTTLS, then XEP-0138
 * zlib, then SASL and a message to itself, all compressed inside TLS. */
typedef struct scripted {
  world *w;
  xcm_ctx ctx;
  xcm_stream *s;
  xcm_tls_config *tls;
  xcm_buf in;
  int connected, tls_done, ended, closed, ctx_closed;
} scripted;

static void sc_read(void *ud, const char *data, size_t len) {
  scripted *c = ud;

  xcm__buf_append(&c->in, data, len);
  xcm__buf_reserve(&c->in, 1);
  c->in.data[c->in.len] = '\0';
}

static void sc_end(void *ud, int err) {
  (void)err;
  ((scripted *)ud)->ended = 1;
}

static void sc_tls(void *ud, int err) {
  ((scripted *)ud)->tls_done = err == 0 ? 1 : -1;
}

static void sc_closed(void *ud) {
  ((scripted *)ud)->closed = 1;
}

static void sc_connected(void *ud) {
  ((scripted *)ud)->connected = 1;
}

static const xcm_stream_cb sc_cb = {sc_read, sc_end, sc_tls, NULL, sc_closed};

typedef struct sc_wait_ctx {
  scripted *c;
  const char *needle;
} sc_wait_ctx;

static int sc_has(void *ud) {
  sc_wait_ctx *x = ud;
  return x->c->in.len > 0 && strstr(x->c->in.data, x->needle) != NULL;
}

static int sc_wait(scripted *c, const char *needle) {
  sc_wait_ctx x = {c, needle};
  return run_until(c->w, sc_has, &x, 3000);
}

static void sc_send(scripted *c, const char *s) {
  xcm__stream_write(c->s, s, strlen(s));
}

static int sc_flag(void *ud) {
  return *(int *)ud != 0;
}

static void ctx_done(xcm_ctx *ctx) {
  (void)ctx;
}

static void compressed_on(xcm_options *o) {
  o->compression = 1;
}

static void test_compression_inside_tls(void) {
  static const char compress[] =
      "<compress xmlns='http://jabber.org/protocol/compress'>"
      "<method>zlib</method></compress>";
  xcm_tls_options to;
  struct sockaddr_in a;
  scripted c;
  world w;
  char err[256];

  want_tls = 1;
  world_start(&w, compressed_on);
  want_tls = 0;
  memset(&c, 0, sizeof c);
  c.w = &w;
  xcm__buf_init(&c.in, NULL);
  REQUIRE(xcm__ctx_init(&c.ctx, &w.loop, NULL) == 0);
  memset(&to, 0, sizeof to);
  to.ca_file = xcm_test_cert("ca.pem");
  to.verify = 1;
  REQUIRE(xcm__tls_config_new(&c.tls, &c.ctx, 0, &to, err, sizeof err) == 0);
  uv_ip4_addr("127.0.0.1", w.port, &a);
  REQUIRE(xcm__stream_connect(&c.s, &c.ctx, (struct sockaddr *)&a, &sc_cb,
                              sc_connected, &c, NULL) == 0);
  REQUIRE(run_until(&w, sc_flag, &c.connected, 3000));
  sc_send(&c, XCM_RAW_HDR);
  REQUIRE(sc_wait(&c, "</stream:features>"));
  /* No compression offered on a clear stream. */
  CHECK(strstr(c.in.data, "compression") == NULL);
  sc_send(&c, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
  REQUIRE(sc_wait(&c, "<proceed"));
  xcm__buf_reset(&c.in);
  REQUIRE(xcm__stream_start_tls(c.s, c.tls, 0, "example.test", NULL, 0) == 0);
  REQUIRE(run_until(&w, sc_flag, &c.tls_done, 3000) && c.tls_done == 1);
  sc_send(&c, XCM_RAW_HDR);
  REQUIRE(sc_wait(&c, "</stream:features>"));
  CHECK(strstr(c.in.data, "<method>zlib</method>") != NULL);
  sc_send(&c, compress);
  REQUIRE(sc_wait(&c, "<compressed"));
  xcm__buf_reset(&c.in);
  REQUIRE(xcm__stream_start_zlib(c.s, NULL, 0) == 0);
  sc_send(&c, XCM_RAW_HDR);
  REQUIRE(sc_wait(&c, "</stream:features>"));
  CHECK(strstr(c.in.data, "compression") == NULL);
  sc_send(&c, XCM_RAW_AUTH_ALICE);
  REQUIRE(sc_wait(&c, "<success"));
  xcm__buf_reset(&c.in);
  sc_send(&c, XCM_RAW_HDR);
  REQUIRE(sc_wait(&c, "xmpp-bind"));
  sc_send(&c, "<iq type='set' id='b1'><bind "
              "xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>z"
              "</resource></bind></iq><message to='alice@example.test/z'>"
              "<body>squeezed \xe2\x98\x83</body></message>");
  CHECK(sc_wait(&c, "squeezed \xe2\x98\x83"));
  CHECK(xcm__stream_is_tls(c.s) && xcm__stream_is_zlib(c.s));
  xcm__stream_close(c.s);
  run_until(&w, sc_flag, &c.closed, 3000);
  xcm__tls_config_unref(c.tls);
  xcm__ctx_close(&c.ctx, ctx_done);
  xcm__buf_free(&c.in);
  world_stop(&w);
}

static int upstream_down(void *ud) {
  world *w = ud;
  xcm_stats st;

  xcm_cm_stats(w->cm, &st, sizeof st);
  return st.upstream_links_up == 0;
}

static void wait_two_seconds(xcm_options *o) {
  o->upstream_wait_ms = 2000;
}

/* While no upstream link is up, a new client is refused at once, or,
 * when configured, waits for one and goes on. */
static void test_wait_for_upstream(void) {
  world w;
  raw r;

  world_start(&w, NULL);
  xcm_testkit_stall(w.kit, 1);
  xcm_testkit_drop_all(w.kit);
  REQUIRE(run_until(&w, upstream_down, &w, 3000));
  raw_open(&w, &r, 1);
  xcm_raw_sends(&r, XCM_RAW_HDR);
  CHECK(xcm_raw_wait(&r, "remote-connection-failed", 1000));
  xcm_raw_free(&r);
  xcm_testkit_stall(w.kit, 0);
  world_stop(&w);

  world_start(&w, wait_two_seconds);
  xcm_testkit_stall(w.kit, 1);
  xcm_testkit_drop_all(w.kit);
  REQUIRE(run_until(&w, upstream_down, &w, 3000));
  raw_open(&w, &r, 1);
  xcm_raw_sends(&r, XCM_RAW_HDR);
  run_until(&w, xcm_raw_is_eof, &r, 300);
  CHECK(!r.eof && r.in.len == 0);
  xcm_testkit_stall(w.kit, 0);
  CHECK(xcm_raw_wait(&r, "</stream:features>", 3000));
  xcm__buf_reset(&r.in);
  xcm_raw_sends(&r, XCM_RAW_AUTH_ALICE);
  CHECK(xcm_raw_wait(&r, "<success", 3000));
  xcm_raw_free(&r);
  world_stop(&w);
}

static int copy_file(const char *from, const char *to) {
  char buf[8192];
  size_t n;
  FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
  int ok = in != NULL && out != NULL;

  while (ok && (n = fread(buf, 1, sizeof buf, in)) > 0)
    ok = fwrite(buf, 1, n, out) == n;
  if (in != NULL)
    fclose(in);
  if (out != NULL)
    fclose(out);
  return ok;
}

/* STARTTLS to port, verifying the server as example.test: 1 if the
 * handshake succeeds, -1 if it fails. */
static void scripted_ctx_done(xcm_ctx *ctx) {
  scripted *c = (scripted *)((char *)ctx - offsetof(scripted, ctx));

  c->ctx_closed = 1;
}

static int try_starttls_as(world *w, int port, const char *name);

static int try_starttls(world *w, int port) {
  return try_starttls_as(w, port, "example.test");
}

/* STARTTLS verifying the server as name (sent as SNI). */
static int try_starttls_as(world *w, int port, const char *name) {
  xcm_tls_options to;
  struct sockaddr_in a;
  scripted c;
  char err[256];
  int result;

  memset(&c, 0, sizeof c);
  c.w = w;
  xcm__buf_init(&c.in, NULL);
  REQUIRE(xcm__ctx_init(&c.ctx, &w->loop, NULL) == 0);
  memset(&to, 0, sizeof to);
  to.ca_file = xcm_test_cert("ca.pem");
  to.verify = 1;
  REQUIRE(xcm__tls_config_new(&c.tls, &c.ctx, 0, &to, err, sizeof err) == 0);
  uv_ip4_addr("127.0.0.1", port, &a);
  REQUIRE(xcm__stream_connect(&c.s, &c.ctx, (struct sockaddr *)&a, &sc_cb,
                              sc_connected, &c, NULL) == 0);
  REQUIRE(run_until(w, sc_flag, &c.connected, 3000));
  sc_send(&c, XCM_RAW_HDR);
  REQUIRE(sc_wait(&c, "</stream:features>"));
  sc_send(&c, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
  REQUIRE(sc_wait(&c, "<proceed"));
  REQUIRE(xcm__stream_start_tls(c.s, c.tls, 0, name, NULL, 0) == 0);
  run_until(w, sc_flag, &c.tls_done, 3000);
  result = c.tls_done;
  if (c.closed == 0) {
    xcm__stream_abort(c.s);
    run_until(w, sc_flag, &c.closed, 3000);
  }
  xcm__tls_config_unref(c.tls);
  /* The context lives on this stack: wait until its handle is closed. */
  xcm__ctx_close(&c.ctx, scripted_ctx_done);
  run_until(w, sc_flag, &c.ctx_closed, 3000);
  xcm__buf_free(&c.in);
  return result;
}

static void test_cert_reload(void) {
  char dir[] = "/tmp/xcm-reload-XXXXXX", certf[64], keyf[64], err[512];
  xcm_listen_options lo;
  world w;
  int port;

  REQUIRE(mkdtemp(dir) != NULL);
  snprintf(certf, sizeof certf, "%s/cert.pem", dir);
  snprintf(keyf, sizeof keyf, "%s/key.pem", dir);
  REQUIRE(copy_file(xcm_test_cert("server.pem"), certf));
  REQUIRE(copy_file(xcm_test_cert("server-key.pem"), keyf));
  world_start(&w, NULL);
  xcm_listen_options_init(&lo, sizeof lo);
  lo.host = "127.0.0.1";
  lo.cert_file = certf;
  lo.key_file = keyf;
  REQUIRE(xcm_cm_listen(w.cm, &lo, err, sizeof err) == 0);
  port = xcm_cm_listener_port(w.cm, 1);
  CHECK_INT(try_starttls(&w, port), 1);
  /* A certificate for another name, reloaded without a restart: new
   * connections get it (and this client, checking example.test, says
   * no). */
  REQUIRE(copy_file(xcm_test_cert("other.pem"), certf));
  REQUIRE(copy_file(xcm_test_cert("other-key.pem"), keyf));
  CHECK_INT(xcm_cm_reload_certs(w.cm, err, sizeof err), 1);
  CHECK_INT(try_starttls(&w, port), -1);
  /* A bad one is refused, naming the problem, and changes nothing. */
  REQUIRE(copy_file(xcm_test_cert("expired.pem"), certf));
  REQUIRE(copy_file(xcm_test_cert("expired-key.pem"), keyf));
  CHECK(xcm_cm_reload_certs(w.cm, err, sizeof err) < 0);
  CHECK(strstr(err, "expired") != NULL);
  REQUIRE(copy_file(xcm_test_cert("server.pem"), certf));
  REQUIRE(copy_file(xcm_test_cert("server-key.pem"), keyf));
  CHECK_INT(xcm_cm_reload_certs(w.cm, err, sizeof err), 1);
  CHECK_INT(try_starttls(&w, port), 1);
  world_stop(&w);
  unlink(certf);
  unlink(keyf);
  rmdir(dir);
}

/* A gateway that accepts connections itself hands them to libxcm. */
typedef struct own_listener {
  world *w;
  uv_tcp_t server;
  int adopted;
} own_listener;

static void own_accept(uv_stream_t *server, int status) {
  own_listener *o = server->data;
  uv_tcp_t *tcp = malloc(sizeof(*tcp));

  if (status != 0 || tcp == NULL)
    return;
  uv_tcp_init(&o->w->loop, tcp);
  if (uv_accept(server, (uv_stream_t *)tcp) == 0 &&
      xcm_cm_adopt(o->w->cm, 0, tcp) == 0)
    o->adopted++;
}

static void test_adopt_accepted_stream(void) {
  struct sockaddr_in a;
  struct sockaddr_storage ss;
  own_listener o;
  world w;
  raw r;
  int len = sizeof ss;

  world_start(&w, NULL);
  memset(&o, 0, sizeof o);
  o.w = &w;
  uv_tcp_init(&w.loop, &o.server);
  o.server.data = &o;
  uv_ip4_addr("127.0.0.1", 0, &a);
  REQUIRE(uv_tcp_bind(&o.server, (struct sockaddr *)&a, 0) == 0);
  REQUIRE(uv_listen((uv_stream_t *)&o.server, 8, own_accept) == 0);
  uv_tcp_getsockname(&o.server, (struct sockaddr *)&ss, &len);
  raw_open_port(&w, &r, 1, ntohs(((struct sockaddr_in *)&ss)->sin_port));
  CHECK(raw_login(&r, XCM_RAW_AUTH_ALICE, "adopted"));
  CHECK_INT(o.adopted, 1);
  CHECK(xcm_raw_still_works(&r, 1));
  xcm_raw_free(&r);
  uv_close((uv_handle_t *)&o.server, NULL);
  world_stop(&w);
}

/* A stream without version: no features, as the historical CM did;
 * XEP-0078 legacy authentication when the server allows it. */
static void test_pre_1_0_stream(void) {
  xcm_policy p;
  policy_wait pw;
  world w;
  raw r;

  world_start(&w, NULL);
  p = *xcm_cm_policy(w.cm);
  p.legacy_auth = 1;
  REQUIRE(xcm_testkit_set_policy(w.kit, &p) == 0);
  pw.w = &w;
  pw.tls = p.tls;
  REQUIRE(run_until(&w, policy_is, &pw, 3000));
  REQUIRE(run_until(&w, legacy_on, &w, 3000));
  raw_open(&w, &r, 1);
  xcm_raw_sends(&r, "<stream:stream xmlns:stream='http://etherx.jabber.org/"
                    "streams' xmlns='jabber:client' to='example.test'>");
  CHECK(xcm_raw_wait(&r, "<stream:stream", 3000));
  run_until(&w, xcm_raw_is_eof, &r, 200);
  CHECK(strstr(r.in.data, "version=\"1.0\"") == NULL);
  CHECK(strstr(r.in.data, "features") == NULL);
  xcm_raw_sends(&r, "<iq type='set' id='la1'><query xmlns='jabber:iq:auth'>"
                    "<username>alice</username><password>alice</password>"
                    "<resource>good</resource></query></iq>");
  CHECK(xcm_raw_wait(&r, "la1", 3000));
  CHECK(strstr(r.in.data, "type=\"result\"") != NULL);
  CHECK(xcm_raw_still_works(&r, 7));
  xcm_raw_free(&r);
  world_stop(&w);
}

/* Several certificates on one listener, picked by the name the client
 * asks for. */
static void test_sni(void) {
  xcm_listen_options lo;
  char err[512];
  world w;
  int port;

  world_start(&w, NULL);
  xcm_listen_options_init(&lo, sizeof lo);
  lo.host = "127.0.0.1";
  lo.cert_file = xcm_test_cert("server.pem");
  lo.key_file = xcm_test_cert("server-key.pem");
  REQUIRE(xcm_cm_listen(w.cm, &lo, err, sizeof err) == 0);
  REQUIRE(xcm_cm_listen_add_cert(w.cm, 1, xcm_test_cert("second.pem"),
                                 xcm_test_cert("second-key.pem"), err,
                                 sizeof err) == 0);
  CHECK(xcm_cm_listen_add_cert(w.cm, 1, xcm_test_cert("expired.pem"),
                               xcm_test_cert("expired-key.pem"), err,
                               sizeof err) < 0);
  port = xcm_cm_listener_port(w.cm, 1);
  CHECK_INT(try_starttls_as(&w, port, "example.test"), 1);
  CHECK_INT(try_starttls_as(&w, port, "second.test"), 1);
  CHECK_INT(try_starttls_as(&w, port, "other.test"), -1);
  /* A reload keeps the extra certificate. */
  CHECK_INT(xcm_cm_reload_certs(w.cm, err, sizeof err), 1);
  CHECK_INT(try_starttls_as(&w, port, "second.test"), 1);
  world_stop(&w);
}

/* A gateway with a transport of its own: bytes in through
 * xcm_conn_input, bytes out through its write function. */
typedef struct gateway {
  xcm_conn *conn;
  xcm_buf out;
  int closed;
} gateway;

static int gw_write(void *ud, const char *data, size_t len) {
  gateway *g = ud;

  xcm__buf_append(&g->out, data, len);
  xcm__buf_reserve(&g->out, 1);
  g->out.data[g->out.len] = '\0';
  return 0;
}

static void gw_close(void *ud) {
  ((gateway *)ud)->closed = 1;
}

typedef struct gw_wait {
  gateway *g;
  const char *needle;
} gw_wait;

static int gw_has(void *ud) {
  gw_wait *x = ud;
  return x->g->out.len > 0 && strstr(x->g->out.data, x->needle) != NULL;
}

static int gw_expect(world *w, gateway *g, const char *needle) {
  gw_wait x = {g, needle};
  return run_until(w, gw_has, &x, 3000);
}

static void test_custom_transport(void) {
  static const char bind[] =
      "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
      "<resource>gw</resource></bind></iq><message "
      "to='alice@example.test/gw'><body>through the gateway</body></message>";
  const char *hdr = XCM_RAW_HDR;
  xcm_transport t;
  gateway g;
  world w;
  size_t i;

  world_start(&w, NULL);
  memset(&g, 0, sizeof g);
  xcm__buf_init(&g.out, NULL);
  t.size = sizeof t;
  t.write = gw_write;
  t.close = gw_close;
  t.ud = &g;
  REQUIRE(xcm_cm_attach(w.cm, 0, &t, "gateway-7", &g.conn) == 0);
  /* Any split will do: the header a byte at a time. */
  for (i = 0; i < strlen(hdr); i++)
    xcm_conn_input(g.conn, hdr + i, 1);
  CHECK(gw_expect(&w, &g, "</stream:features>"));
  xcm_conn_input(g.conn, XCM_RAW_AUTH_ALICE, strlen(XCM_RAW_AUTH_ALICE));
  CHECK(gw_expect(&w, &g, "<success"));
  xcm_conn_input(g.conn, XCM_RAW_HDR, strlen(XCM_RAW_HDR));
  CHECK(gw_expect(&w, &g, "xmpp-bind\"/>"));
  xcm_conn_input(g.conn, bind, sizeof bind - 1);
  CHECK(gw_expect(&w, &g, "through the gateway"));
  xcm_conn_input(g.conn, "</stream:stream>", 16);
  CHECK(run_until(&w, sc_flag, &g.closed, 3000));
  CHECK(strstr(g.out.data, "</stream:stream>") != NULL);
  run_until(&w, sc_flag, &g.closed, 50);
  xcm__buf_free(&g.out);
  world_stop(&w);
}

static void two_clients(xcm_options *o) {
  o->max_clients = 2;
}

static void test_max_clients(void) {
  world w;
  raw r[3];
  xcm_stats st;
  int i;

  world_start(&w, two_clients);
  for (i = 0; i < 3; i++)
    raw_open(&w, &r[i], 1);
  CHECK(run_until(&w, xcm_raw_is_eof, &r[2], 3000));
  xcm_raw_sends(&r[1], XCM_RAW_HDR);
  CHECK(xcm_raw_wait(&r[1], "</stream:features>", 3000));
  xcm_cm_stats(w.cm, &st, sizeof st);
  CHECK_INT(st.clients_refused, 1);
  CHECK_INT(st.clients_refused_total_limit, 1);
  CHECK_INT(st.clients_refused_address_limit, 0);
  for (i = 0; i < 3; i++)
    xcm_raw_free(&r[i]);
  world_stop(&w);
}

/* A listener on IPv6 loopback, reached over IPv6. */
static void test_ipv6_listener(void) {
  xcm_listen_options lo;
  char err[256];
  world w;
  raw r;

  world_start(&w, NULL);
  xcm_listen_options_init(&lo, sizeof lo);
  lo.host = "::1";
  REQUIRE(xcm_cm_listen(w.cm, &lo, err, sizeof err) == 0);
  REQUIRE(xcm_raw_open(&r, &w.loop, "::1", xcm_cm_listener_port(w.cm, 1), 1));
  CHECK(raw_login(&r, XCM_RAW_AUTH_ALICE, "v6"));
  xcm_raw_free(&r);
  world_stop(&w);
}

typedef struct events {
  char log[1024];
  char sid[64];
} events;

static void on_session(void *ud, xcm_session_event ev,
                       const xcm_session_info *info) {
  events *e = ud;
  char line[256];

  snprintf(line, sizeof line, "%d:%s:%s:%s;", (int)ev,
           info->jid ? info->jid : "-", info->authenticated ? "auth" : "-",
           ev == XCM_SESSION_CLOSED ? xcm_cond_name(info->cond) : "");
  strncat(e->log, line, sizeof e->log - strlen(e->log) - 1);
  snprintf(e->sid, sizeof e->sid, "%s", info->sid);
}

static int has_closed_event(void *ud) {
  return strstr(((events *)ud)->log, "4:") != NULL;
}

/* The public view of sessions and links: events, look-up by stream id,
 * closing one with a reason, the pool's links. */
typedef struct link_log {
  int up, down, policies;
} link_log;

static void on_link_event(void *ud, unsigned i, const char *resource, int up,
                          const char *why, const xcm_policy *policy) {
  link_log *l = ud;

  (void)i;
  (void)resource;
  (void)why;
  if (policy != NULL)
    l->policies++;
  else if (up)
    l->up++;
  else
    l->down++;
}

static int both_links_up(void *ud) {
  world *w = ud;
  xcm_stats st;

  xcm_cm_stats(w->cm, &st, sizeof st);
  return st.upstream_links_up == 2;
}

static int links_back(void *ud) {
  link_log *l = ud;
  return l->down >= 2 && l->up >= 2;
}

static void test_session_api(void) {
  xcm_session_info info;
  xcm_link_info li;
  events e;
  world w;
  raw r;

  world_start(&w, NULL);
  memset(&e, 0, sizeof e);
  xcm_cm_set_session_events(w.cm, on_session, &e);
  raw_open(&w, &r, 1);
  REQUIRE(raw_login(&r, XCM_RAW_AUTH_ALICE, "api"));
  CHECK_STR(e.log, "1:-:-:;2:-:auth:;3:alice@example.test/api:auth:;");
  REQUIRE(xcm_cm_session(w.cm, e.sid, &info, sizeof info) == 0);
  CHECK_STR(info.jid, "alice@example.test/api");
  CHECK_STR(info.peer, "127.0.0.1");
  CHECK(info.authenticated && !info.tls && info.link >= 0);
  CHECK_INT(xcm_cm_session(w.cm, "nosuch", &info, sizeof info), XCM_ENOTFOUND);
  CHECK_INT(xcm_cm_close_session(w.cm, e.sid, XCM_COND_POLICY_VIOLATION,
                                 "kicked by the operator"),
            0);
  CHECK(xcm_raw_wait(&r, "kicked by the operator", 3000));
  CHECK(run_until(&w, has_closed_event, &e, 3000));
  CHECK(strstr(e.log, "4:alice@example.test/api:auth:policy-violation;") !=
        NULL);
  CHECK_INT(xcm_cm_session(w.cm, e.sid, &info, sizeof info), XCM_ENOTFOUND);
  CHECK_INT(xcm_cm_upstream_links(w.cm), 2);
  /* The world waits for one link, enough to log in: wait for both. */
  REQUIRE(run_until(&w, both_links_up, &w, 5000));
  REQUIRE(xcm_cm_upstream_link(w.cm, 0, &li, sizeof li) == 0);
  CHECK(li.up && strncmp(li.resource, "cm1/", 4) == 0);
  {
    link_log ll;

    memset(&ll, 0, sizeof ll);
    REQUIRE(run_until(&w, both_links_up, &w, 5000));
    xcm_cm_set_link_events(w.cm, on_link_event, &ll);
    xcm_testkit_drop_all(w.kit);
    CHECK(run_until(&w, links_back, &ll, 5000));
    xcm_cm_set_link_events(w.cm, NULL, NULL);
  }
  xcm_raw_free(&r);
  world_stop(&w);
}

/* A hook that drops "secret" going up, rewrites "old" to "new" going up,
 * rewrites "ping" to "pong" coming down, and offers a broken replacement
 * for "broken". */
static xcm_verdict hook(void *ud, const xcm_stanza_info *st, const char **rep,
                        size_t *len) {
  static const char up[] = "<message to='alice@example.test/hk'><body>new"
                           "</body></message>";
  static const char down[] = "<message to='alice@example.test/hk' "
                             "from='x@example.test'><body>pong</body>"
                             "</message>";
  static const char broken[] = "<message><body>no end";
  char b[256];

  (void)ud;
  /* The bytes are not NUL-terminated: look at a bounded copy. */
  snprintf(b, sizeof b, "%.*s", (int)(st->len < 255 ? st->len : 255),
           st->bytes);
  if (strcmp(st->name, "message") != 0)
    return XCM_PASS;
  if (st->dir == XCM_TO_SERVER && strstr(b, ">secret<") != NULL)
    return XCM_DROP;
  if (st->dir == XCM_TO_SERVER && strstr(b, ">old<") != NULL) {
    *rep = up;
    *len = sizeof up - 1;
    return XCM_REPLACE;
  }
  if (st->dir == XCM_TO_SERVER && strstr(b, ">broken<") != NULL) {
    *rep = broken;
    *len = sizeof broken - 1;
    return XCM_REPLACE;
  }
  if (st->dir == XCM_TO_CLIENT && strstr(b, ">ping<") != NULL) {
    *rep = down;
    *len = sizeof down - 1;
    return XCM_REPLACE;
  }
  return XCM_PASS;
}

static void test_stanza_hook(void) {
  world w;
  raw r;
  xcm_stats st;

  world_start(&w, NULL);
  xcm_cm_set_stanza_hook(w.cm, hook, NULL);
  raw_open(&w, &r, 1);
  REQUIRE(raw_login(&r, XCM_RAW_AUTH_ALICE, "hk"));
  xcm_raw_sends(&r, "<message to='alice@example.test/hk'><body>secret</body>"
                    "</message><message to='alice@example.test/hk'><body>broken"
                    "</body></message><message to='alice@example.test/hk'>"
                    "<body>old</body></message><message "
                    "to='alice@example.test/hk'><body>ping</body></message>");
  /* old became new on the way up; ping became pong on the way down. */
  CHECK(xcm_raw_wait(&r, "<body>new</body>", 3000));
  CHECK(xcm_raw_wait(&r, "<body>pong</body>", 3000));
  /* A prefixed stanza from the server: the hook gets its local name, as
   * for what clients send. */
  xcm_raw_sends(&r, "<c:message xmlns:c='jabber:client' "
                    "to='alice@example.test/hk'><c:body>ping</c:body>"
                    "</c:message><message to='alice@example.test/hk'>"
                    "<body>last</body></message>");
  CHECK(xcm_raw_wait(&r, ">last<", 3000));
  {
    const char *p = r.in.data;
    int pongs = 0;

    while ((p = strstr(p, ">pong<")) != NULL) {
      pongs++;
      p++;
    }
    CHECK_INT(pongs, 2);
  }
  CHECK(strstr(r.in.data, ">secret<") == NULL);
  CHECK(strstr(r.in.data, ">old<") == NULL);
  CHECK(strstr(r.in.data, ">ping<") == NULL);
  CHECK(strstr(r.in.data, "no end") == NULL);
  xcm_cm_stats(w.cm, &st, sizeof st);
  /* The drop, and the broken replacement refused. */
  CHECK_INT(st.hook_dropped, 2);
  xcm_cm_set_stanza_hook(w.cm, NULL, NULL);
  xcm_raw_free(&r);
  world_stop(&w);
}

static void short_header(xcm_options *o) {
  o->header_timeout_ms = 300;
  o->auth_timeout_ms = 20000;
}

/* A client that connects and says nothing is closed after the header
 * timeout with connection-timeout; one that sent its header is not. The
 * one with a header connects first, so its header deadline has passed
 * (and its timer fired first) by the time the silent one is closed. */
static void test_header_timeout(void) {
  world w;
  raw talker, silent;
  xcm_stats st;
  unsigned before = xcm_test_failures();

  world_start(&w, short_header);
  raw_open(&w, &talker, 1);
  xcm_raw_sends(&talker, XCM_RAW_HDR);
  CHECK(xcm_raw_wait(&talker, "</stream:features>", 3000));
  raw_open(&w, &silent, 1);
  CHECK(xcm_raw_wait(&silent, "<connection-timeout", 5000));
  CHECK(xcm_raw_wait(&silent, "no stream header in time", 1000));
  CHECK(run_until(&w, xcm_raw_is_eof, &silent, 3000));
  CHECK(!talker.eof);
  CHECK(strstr(talker.in.data, "connection-timeout") == NULL);
  xcm_cm_stats(w.cm, &st, sizeof st);
  CHECK_INT(st.header_timeouts, 1);
  CHECK_INT(st.auth_timeouts, 0);
  CHECK_INT(st.stream_errors[XCM_COND_CONNECTION_TIMEOUT], 1);
  /* The one with a header still logs in. */
  xcm_raw_sends(&talker, XCM_RAW_AUTH_ALICE);
  CHECK(xcm_raw_wait(&talker, "<success", 3000));
  xcm_raw_free(&silent);
  xcm_raw_free(&talker);
  world_stop(&w);
  xcm_test_tried("silent-connections", before);
}

/* A low rate, so that a flood is far above it in either unit. */
static void shaped_limits(xcm_options *o) {
  o->rate = 50;
  o->burst = 10;
  o->rate_bytes = 8192;
  o->burst_bytes = 2048;
}

typedef struct flood_case {
  const char *name;
  int n;       /* stanzas in the one write */
  int padding; /* body bytes beyond the sequence number */
  int presence;
} flood_case;

/* Whether r received bodies "<tag>0<" ... "<tag>(n-1)<" in that order
 * (and so each of them). */
static int in_order(const raw *r, const char *tag, int n) {
  const char *p = r->in.data ? r->in.data : "";
  char want[64];
  int i;

  for (i = 0; i < n; i++) {
    snprintf(want, sizeof want, ">%s%d<", tag, i);
    p = strstr(p, want);
    if (p == NULL)
      return 0;
  }
  return 1;
}

/* A client that writes far above its rate (stanzas/s or bytes/s) in one
 * go is shaped, not disconnected: each read is handled whole, then its
 * reads pause until its budget refills, so all it sent arrives, in
 * order; another client is served meanwhile. Waits are on what arrives;
 * the caps only end a broken run. */
static void test_flood_is_shaped(void) {
  static const flood_case cases[] = {
      {"message flood", 60, 0, 0},
      {"presence flood", 60, 0, 1},
      {"byte flood", 8, 2000, 0},
  };
  world w;
  raw good, bad;
  xcm_buf out;
  size_t i;
  int k;

  world_start(&w, shaped_limits);
  raw_open(&w, &good, 1);
  REQUIRE(raw_login(&good, XCM_RAW_AUTH_ALICE, "good"));
  raw_open(&w, &bad, 1);
  REQUIRE(raw_login(&bad, XCM_RAW_AUTH_BOB, "bad"));
  xcm__buf_init(&out, NULL);
  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const flood_case *fc = &cases[i];
    unsigned before = xcm_test_failures();
    xcm_stats st0, st;
    char tag[8], buf[3000], end[64];

    snprintf(tag, sizeof tag, "f%zu-", i);
    xcm__buf_reset(&out);
    xcm__buf_reset(&good.in);
    xcm_cm_stats(w.cm, &st0, sizeof st0);
    for (k = 0; k < fc->n; k++) {
      if (fc->presence)
        snprintf(buf, sizeof buf, "<presence><status>%s%d</status></presence>",
                 tag, k);
      else
        snprintf(buf, sizeof buf,
                 "<message to='alice@example.test/good' type='chat'>"
                 "<body>%s%d</body><x xmlns='urn:pad'>%0*d</x></message>",
                 tag, k, fc->padding, 0);
      xcm__buf_append(&out, buf, strlen(buf));
    }
    xcm_raw_send(&bad, out.data, out.len);
    /* The other client is served while the flooder waits. */
    CHECK(xcm_raw_still_works(&good, (int)i));
    snprintf(end, sizeof end, ">%s%d<", tag, fc->n - 1);
    if (!CHECK(xcm_raw_wait(&good, end, 30000)))
      xcm_test_note("case '%s': the last stanza did not arrive", fc->name);
    CHECK(in_order(&good, tag, fc->n));
    CHECK(!bad.eof);
    xcm_cm_stats(w.cm, &st, sizeof st);
    CHECK(st.reads_shaped > st0.reads_shaped);
    CHECK_INT(st.stream_errors[XCM_COND_POLICY_VIOLATION], 0);
    xcm_test_tried("rate-flood", before);
  }
  /* And the flooder is still a client like any other. */
  xcm_raw_sends(&bad, "<message to='alice@example.test/good' "
                      "type='chat'><body>after the floods</body></message>");
  CHECK(xcm_raw_wait(&good, "after the floods", 30000));
  xcm__buf_free(&out);
  xcm_raw_free(&bad);
  xcm_raw_free(&good);
  world_stop(&w);
}

static void no_address_limit(xcm_options *o) {
  o->max_per_address = XCM_UNLIMITED;
}

/* By default one address may hold 100 connections: the 101st is
 * refused and counted under its limit. XCM_UNLIMITED switches the limit
 * off (zero would mean the default). */
static void test_default_address_limit(void) {
  enum { N = 101 };
  static raw r[N];
  world w;
  xcm_stats st;
  int i, pass;
  unsigned before = xcm_test_failures();

  for (pass = 0; pass < 2; pass++) {
    world_start(&w, pass == 0 ? NULL : no_address_limit);
    for (i = 0; i < N; i++)
      raw_open(&w, &r[i], 1);
    if (pass == 0) {
      CHECK(run_until(&w, xcm_raw_is_eof, &r[N - 1], 3000));
    } else {
      xcm_raw_sends(&r[N - 1], XCM_RAW_HDR);
      CHECK(xcm_raw_wait(&r[N - 1], "</stream:features>", 3000));
    }
    xcm_cm_stats(w.cm, &st, sizeof st);
    CHECK_INT(st.clients_refused_address_limit, pass == 0 ? 1 : 0);
    CHECK_INT(st.clients_refused, pass == 0 ? 1 : 0);
    for (i = 0; i < N; i++)
      xcm_raw_free(&r[i]);
    world_stop(&w);
    if (pass == 0)
      xcm_test_tried("connection-limits", before);
  }
}

static const xcm_test tests[] = {
    {"header_timeout", test_header_timeout},
    {"default_address_limit", test_default_address_limit},
    {"flood_is_shaped", test_flood_is_shaped},
    {"stanza_hook", test_stanza_hook},
    {"session_api", test_session_api},
    {"max_clients", test_max_clients},
    {"ipv6_listener", test_ipv6_listener},
    {"custom_transport", test_custom_transport},
    {"sni", test_sni},
    {"adopt_accepted_stream", test_adopt_accepted_stream},
    {"pre_1_0_stream", test_pre_1_0_stream},
    {"cert_reload", test_cert_reload},
    {"wait_for_upstream", test_wait_for_upstream},
    {"bad_certificates", test_bad_certificates},
    {"tls_required_cannot_be_bypassed", test_tls_required_cannot_be_bypassed},
    {"stalled_tls_handshake_times_out", test_stalled_tls_handshake_times_out},
    {"per_address_limit", test_per_address_limit},
    {"idle_timeout", test_idle_timeout},
    {"compression_inside_tls", test_compression_inside_tls},
    {"login_and_chat", test_login_and_chat},
    {"parsers_follow_activity", test_parsers_follow_activity},
    {"half_stanza_holds_no_parser", test_half_stanza_holds_no_parser},
    {"expat_only_reads_everything", test_expat_only_reads_everything},
    {"stream_errors_on_the_wire", test_stream_errors_on_the_wire},
    {"stream_ids", test_stream_ids},
    {"auth_timeout", test_auth_timeout},
    {"client_gone_closes_session", test_client_gone_closes_session},
    {"server_closes_client", test_server_closes_client},
    {"upstream_lost", test_upstream_lost},
    {"slow_reader", test_slow_reader},
    {"shutdown_tells_clients", test_shutdown_tells_clients},
};

int main(int argc, char **argv) {
  return xcm_test_main(argc, argv, XCM_TESTS(tests));
}
