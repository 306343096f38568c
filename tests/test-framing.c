/* The transport seam (lib/client/framing.h): a client on the RFC 7395
 * message framing, driven over the internal message-transport API
 * (xcm__cm_attach_msg) against the testkit, as the WebSocket layer will
 * drive it; and the public custom byte transport's secure flag and
 * backpressure (XCM_EAGAIN, xcm_conn_writable). Every wait is on an
 * event; every byte the CM sends upstream is checked by the witness. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "attach.h"
#include "client/client.h"
#include "client/framing.h"
#include "harness.h"
#include "session/session.h"
#include "transport/stream.h"
#include "world.h"
#include "xcm/error.h"
#include "xcm/testkit.h"
#include "xcm/xcm.h"

#define FR "urn:ietf:params:xml:ns:xmpp-framing"
#define OPEN "<open xmlns='" FR "' to='example.test' version='1.0'/>"
#define CLOSE "<close xmlns='" FR "'/>"
/* \0alice\0alice */
#define AUTH_ALICE                                                             \
  "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "                            \
  "mechanism='PLAIN'>AGFsaWNlAGFsaWNl</auth>"
#define BIND                                                                   \
  "<iq xmlns='jabber:client' type='set' id='b1'><bind "                        \
  "xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>web</resource></bind>"   \
  "</iq>"
#define ALICE "alice@example.test/web"
#define BOB "bob@example.test/desk"

/* One message client: what it was sent, one message each. */
typedef struct peer {
  xcm_test_world *w;
  xcm_client *c;
  char **msgs;
  size_t n, cap;
  int answer;  /* what send() returns */
  int paused;  /* the last pause() */
  int closed;  /* close() calls */
  int failed;  /* its argument */
  size_t seen; /* messages looked at by the test */
} peer;

static int p_send(void *ud, const char *data, size_t len) {
  peer *p = ud;
  char *m = malloc(len + 1);

  REQUIRE(m != NULL);
  CHECK(p->closed == 0);
  memcpy(m, data, len);
  m[len] = '\0';
  if (p->n == p->cap) {
    p->cap = p->cap ? p->cap * 2 : 64;
    p->msgs = realloc(p->msgs, p->cap * sizeof(*p->msgs));
    REQUIRE(p->msgs != NULL);
  }
  p->msgs[p->n++] = m;
  return p->answer;
}

static void p_pause(void *ud, int paused) {
  ((peer *)ud)->paused = paused;
}

static void p_close(void *ud, int failed) {
  peer *p = ud;

  p->closed++;
  p->failed = failed;
  p->c = NULL;
}

static void peer_free(peer *p) {
  size_t i;

  for (i = 0; i < p->n; i++)
    free(p->msgs[i]);
  free(p->msgs);
  memset(p, 0, sizeof *p);
}

static void attach(peer *p, xcm_test_world *w, int secure) {
  xcm_msg_transport t;

  memset(p, 0, sizeof *p);
  memset(&t, 0, sizeof t); /* fields added later stay NULL */
  p->w = w;
  t.send = p_send;
  t.pause = p_pause;
  t.close = p_close;
  t.ud = p;
  t.secure = secure;
  REQUIRE(xcm__cm_attach_msg(w->cm, 0, &t, "127.0.0.1", &p->c) == 0);
}

static void input(peer *p, const char *msg) {
  REQUIRE(p->c != NULL);
  xcm__client_msg_input(p->c, msg, strlen(msg));
}

typedef struct want {
  peer *p;
  const char *needle;
  size_t at; /* the message found */
} want;

static int has_msg(void *ud) {
  want *w = ud;
  size_t i;

  for (i = w->p->seen; i < w->p->n; i++)
    if (strstr(w->p->msgs[i], w->needle) != NULL) {
      w->at = i;
      return 1;
    }
  return 0;
}

/* Wait for a message holding needle, after those seen; it is seen
 * then. Returns it, or NULL. */
static const char *expect(peer *p, const char *needle) {
  want w = {p, needle, 0};

  if (!xcm_test_run_until(&p->w->loop, has_msg, &w, 5000)) {
    xcm_test_note("no message with %s among %zu", needle, p->n - p->seen);
    return NULL;
  }
  p->seen = w.at + 1;
  return p->msgs[w.at];
}

static int is_closed(void *ud) {
  return ((peer *)ud)->closed != 0;
}

/* Open, authenticate with SASL PLAIN, open again, bind: the client is
 * alice@example.test/web, available. */
static int login(peer *p) {
  const char *m;

  input(p, OPEN);
  m = expect(p, "<open ");
  if (m == NULL)
    return 0;
  CHECK(strstr(m, "xmlns=\"" FR "\"") != NULL);
  CHECK(strstr(m, "from=\"example.test\"") != NULL);
  CHECK(strstr(m, "version=\"1.0\"") != NULL);
  CHECK(strstr(m, " id=\"") != NULL);
  m = expect(p, "<stream:features");
  if (m == NULL)
    return 0;
  CHECK(strncmp(m,
                "<stream:features xmlns:stream=\"http://etherx.jabber.org/"
                "streams\">",
                64) == 0);
  CHECK(strstr(m, "PLAIN") != NULL);
  CHECK(strstr(m, "starttls") == NULL);
  CHECK(strstr(m, "compression") == NULL);
  input(p, AUTH_ALICE);
  if (expect(p, "<success") == NULL)
    return 0;
  input(p, OPEN);
  if (expect(p, "<open ") == NULL)
    return 0;
  m = expect(p, "<stream:features");
  if (m == NULL)
    return 0;
  CHECK(strstr(m, "<bind") != NULL);
  input(p, BIND);
  m = expect(p, "<jid>" ALICE "</jid>");
  if (m == NULL)
    return 0;
  CHECK(strstr(m, "xmlns=\"jabber:client\"") != NULL ||
        strstr(m, "xmlns='jabber:client'") != NULL);
  input(p, "<presence xmlns='jabber:client'/>");
  return 1;
}

/* ---- bob, a local client of the testkit -----------------------------------
 */

typedef struct inbox {
  char *all; /* every stanza for bob, concatenated */
  size_t len;
  unsigned n;
} inbox;

static void bob_got(void *ud, xcm_testkit *kit, const char *jid,
                    const char *stanza, size_t len) {
  inbox *b = ud;

  (void)kit;
  (void)jid;
  b->all = realloc(b->all, b->len + len + 1);
  memcpy(b->all + b->len, stanza, len);
  b->len += len;
  b->all[b->len] = '\0';
  if (len > 8 && memcmp(stanza, "<message", 8) == 0)
    b->n++;
}

typedef struct count_wait {
  inbox *b;
  unsigned n;
} count_wait;

static int bob_has(void *ud) {
  count_wait *cw = ud;

  return cw->b->n >= cw->n;
}

static int alice_available(void *ud) {
  return xcm_testkit_jid_state(((xcm_test_world *)ud)->kit, ALICE) == 2;
}

static void start(xcm_test_world *w, void (*tune)(xcm_options *, void *),
                  int tls) {
  xcm_test_world_setup s;

  memset(&s, 0, sizeof s);
  s.tune = tune;
  s.tls = tls;
  s.roster = 1;
  xcm_test_world_start(w, &s);
}

static void bob_send(xcm_test_world *w, const char *body_xml) {
  char *m = malloc(strlen(body_xml) + 128);

  sprintf(m, "<message to='" ALICE "' type='chat'><body>%s</body></message>",
          body_xml);
  CHECK(xcm_testkit_local_send(w->kit, BOB, m, strlen(m)) == 0);
  free(m);
}

/* ---- the cases ------------------------------------------------------------
 */

static void test_login_and_messages(void) {
  xcm_test_world w;
  peer p;
  inbox b = {NULL, 0, 0};
  count_wait cw = {&b, 0};
  const char *m;
  char *big, *msg, line[160];
  size_t i;

  start(&w, NULL, 0);
  REQUIRE(xcm_testkit_local_login(w.kit, BOB, bob_got, &b) == 0);
  attach(&p, &w, 0);
  REQUIRE(login(&p));
  REQUIRE(xcm_test_run_until(&w.loop, alice_available, &w, 5000));

  /* From the server: one standalone element, in jabber:client, with
   * what it said intact. */
  bob_send(&w, "gr\xc3\xbc\xc3\x9f &lt;b&gt; &amp; &apos;q&apos; \xe2\x82\xac");
  m = expect(&p, "<message");
  REQUIRE(m != NULL);
  CHECK(strstr(m, "xmlns=\"jabber:client\"") != NULL ||
        strstr(m, "xmlns='jabber:client'") != NULL);
  CHECK(strstr(m, "gr\xc3\xbc\xc3\x9f &lt;b&gt; &amp;") != NULL);
  CHECK(strstr(m, "\xe2\x82\xac</body>") != NULL);
  CHECK(strncmp(m, "<message", 8) == 0);
  CHECK(m[strlen(m) - 1] == '>');

  /* To the server. */
  input(&p, "<message xmlns='jabber:client' to='" BOB
            "' type='chat'><body>\xc3\xa9t\xc3\xa9 &lt;&amp;&gt; "
            "\"x\"</body></message>");
  cw.n = 1;
  REQUIRE(xcm_test_run_until(&w.loop, bob_has, &cw, 5000));
  CHECK(strstr(b.all, "\xc3\xa9t\xc3\xa9 &lt;&amp;&gt;") != NULL);

  /* A 60 KB body, both ways. */
  big = malloc(60 * 1024 + 1);
  memset(big, 'x', 60 * 1024);
  big[60 * 1024] = '\0';
  bob_send(&w, big);
  m = expect(&p, "xxxxxxxx</body>");
  REQUIRE(m != NULL);
  CHECK(strlen(m) > 60 * 1024);
  msg = malloc(60 * 1024 + 256);
  sprintf(msg,
          "<message xmlns='jabber:client' to='" BOB
          "' type='chat'><body>%s</body></message>",
          big);
  input(&p, msg);
  cw.n = 2;
  REQUIRE(xcm_test_run_until(&w.loop, bob_has, &cw, 5000));
  CHECK(b.len > 60 * 1024);
  free(msg);
  free(big);

  /* 200 in a row, in order, both ways. */
  for (i = 0; i < 200; i++) {
    snprintf(line, sizeof line, "n%03zu", i);
    bob_send(&w, line);
  }
  for (i = 0; i < 200; i++) {
    snprintf(line, sizeof line, "<body>n%03zu</body>", i);
    m = expect(&p, "<message");
    REQUIRE(m != NULL);
    if (!CHECK(strstr(m, line) != NULL))
      break;
  }
  for (i = 0; i < 200; i++) {
    snprintf(line, sizeof line,
             "<message xmlns='jabber:client' to='" BOB
             "'><body>a%03zu</body></message>",
             i);
    input(&p, line);
  }
  cw.n = 202;
  REQUIRE(xcm_test_run_until(&w.loop, bob_has, &cw, 5000));
  {
    const char *at = b.all;

    for (i = 0; i < 200 && at != NULL; i++) {
      snprintf(line, sizeof line, "<body>a%03zu</body>", i);
      at = strstr(at, line);
    }
    CHECK(at != NULL);
  }

  /* Presence from a contact reaches it as one element too. */
  CHECK(xcm_testkit_local_send(w.kit, BOB, "<presence/>", 11) == 0);
  m = expect(&p, "<presence");
  REQUIRE(m != NULL);
  CHECK(strstr(m, "jabber:client") != NULL);

  /* The client's <close/>: ours, then the transport closes in order. */
  input(&p, CLOSE);
  CHECK(expect(&p, "<close xmlns=\"" FR "\"/>") != NULL);
  CHECK(xcm_test_run_until(&w.loop, is_closed, &p, 5000));
  CHECK_INT(p.closed, 1);
  CHECK_INT(p.failed, 0);
  xcm_testkit_local_logout(w.kit, BOB);
  xcm_test_world_stop(&w, 1000);
  peer_free(&p);
  free(b.all);
}

/* The server ends the session: its error, declared to stand alone,
 * then <close/>, then the transport's close. */
static void test_server_close(void) {
  xcm_test_world w;
  peer p;
  const char *m;

  start(&w, NULL, 0);
  attach(&p, &w, 0);
  REQUIRE(login(&p));
  REQUIRE(xcm_test_run_until(&w.loop, alice_available, &w, 5000));
  REQUIRE(xcm_testkit_close_jid(w.kit, ALICE, XCM_COND_CONFLICT) == 0);
  m = expect(&p, "<stream:error");
  REQUIRE(m != NULL);
  CHECK(strstr(m, "xmlns:stream=\"http://etherx.jabber.org/streams\"") !=
            NULL ||
        strstr(m, "xmlns:stream='http://etherx.jabber.org/streams'") != NULL);
  CHECK(strstr(m, "conflict") != NULL);
  CHECK(expect(&p, "<close xmlns=\"" FR "\"/>") != NULL);
  CHECK(xcm_test_run_until(&w.loop, is_closed, &p, 5000));
  CHECK_INT(p.closed, 1);
  xcm_test_world_stop(&w, 1000);
  peer_free(&p);
}

/* A stream error the CM raises: the error element, <close/>, then the
 * transport closes as failed. */
static void check_error(peer *p, const char *cond) {
  const char *m = expect(p, "<stream:error");
  char tag[96];

  REQUIRE(m != NULL);
  CHECK(strncmp(m,
                "<stream:error xmlns:stream=\"http://etherx.jabber.org/"
                "streams\">",
                61) == 0);
  snprintf(tag, sizeof tag, "<%s ", cond);
  if (!CHECK(strstr(m, tag) != NULL))
    xcm_test_note("got %s", m);
  CHECK(expect(p, "<close xmlns=\"" FR "\"/>") != NULL);
  CHECK(xcm_test_run_until(&p->w->loop, is_closed, p, 5000));
  CHECK_INT(p->failed, 1);
  CHECK_INT(p->seen, p->n); /* nothing after the close */
}

static void test_stream_errors(void) {
  static const struct {
    const char *cls, *open, *msg, *cond;
  } cases[] = {
      {"malformed-messages", OPEN, "<a xmlns='jabber:client'/><b/>",
       "not-well-formed"},
      {"malformed-messages", OPEN, "just text", "not-well-formed"},
      {"malformed-messages", OPEN, "<message xmlns='jabber:client'><body>",
       "not-well-formed"},
      {"malformed-messages", OPEN,
       "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' "
       "xmlns='jabber:client' to='example.test' version='1.0'>",
       "not-well-formed"},
      {"malformed-messages", OPEN, "text<presence xmlns='jabber:client'/>",
       "not-well-formed"},
      {"malformed-messages", OPEN, "<presence xmlns='jabber:client'/>tail",
       "not-well-formed"},
      {"malformed-messages", OPEN, "<a><b></a></b>", "not-well-formed"},
      /* Before authentication only SASL and its kin. */
      {"before-auth", OPEN,
       "<message xmlns='jabber:client' to='bob@example.test'/>",
       "not-authorized"},
      {"malformed-messages", NULL, "<presence xmlns='jabber:client'/>",
       "bad-format"},
      {"bad-stream-headers",
       "<open xmlns='" FR "' to='elsewhere.test' version='1.0'/>", NULL,
       "host-unknown"},
      {"malformed-messages", OPEN, OPEN, "bad-format"},
  };
  xcm_test_world w;
  size_t i;

  start(&w, NULL, 0);
  for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    unsigned before = xcm_test_failures();
    peer p;

    attach(&p, &w, 0);
    if (cases[i].open != NULL)
      input(&p, cases[i].open);
    if (cases[i].msg != NULL && p.c != NULL && p.closed == 0)
      input(&p, cases[i].msg);
    check_error(&p, cases[i].cond);
    if (xcm_test_failures() != before)
      xcm_test_note("case %zu: %s", i, cases[i].msg ? cases[i].msg : "");
    xcm_test_tried(cases[i].cls, before);
    peer_free(&p);
  }
  xcm_test_world_stop(&w, 1000);
}

static void small_stanzas(xcm_options *o, void *ud) {
  (void)ud;
  o->max_stanza_preauth = 1024;
}

/* A message over the stanza limit ends the stream, whatever it holds. */
static void test_over_the_limit(void) {
  xcm_test_world w;
  peer p;
  char msg[1200];
  unsigned before = xcm_test_failures();

  start(&w, small_stanzas, 0);
  attach(&p, &w, 0);
  input(&p, OPEN);
  memset(msg, 'x', sizeof msg - 1);
  msg[sizeof msg - 1] = '\0';
  memcpy(msg, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>", 47);
  memcpy(msg + sizeof msg - 8, "</auth>", 7);
  input(&p, msg);
  check_error(&p, "policy-violation");
  xcm_test_tried("oversized", before);
  xcm_test_world_stop(&w, 1000);
  peer_free(&p);
}

typedef struct policy_wait {
  xcm_test_world *w;
  xcm_tls_policy tls;
} policy_wait;

static int policy_is(void *ud) {
  policy_wait *pw = ud;
  const xcm_policy *cur = xcm_cm_policy(pw->w->cm);

  return cur != NULL && cur->tls == pw->tls;
}

/* TLS required by the server: a secure transport (WSS) satisfies it and
 * is offered no STARTTLS even though the listener has a certificate; an
 * insecure one is offered nothing it can use, and may not authenticate. */
static void test_secure_flag(void) {
  xcm_test_world w;
  xcm_policy pol;
  policy_wait pw;
  peer p;
  const char *m;

  start(&w, NULL, 1);
  pol = *xcm_cm_policy(w.cm);
  pol.tls = XCM_TLS_REQUIRED;
  REQUIRE(xcm_testkit_set_policy(w.kit, &pol) == 0);
  pw.w = &w;
  pw.tls = XCM_TLS_REQUIRED;
  REQUIRE(xcm_test_run_until(&w.loop, policy_is, &pw, 5000));

  attach(&p, &w, 1);
  CHECK(xcm__client_secured(p.c));
  CHECK(login(&p)); /* checks: no starttls, no compression, PLAIN */
  input(&p, CLOSE);
  CHECK(xcm_test_run_until(&w.loop, is_closed, &p, 5000));
  peer_free(&p);

  attach(&p, &w, 0);
  input(&p, OPEN);
  m = expect(&p, "<stream:features");
  REQUIRE(m != NULL);
  CHECK(strstr(m, "starttls") == NULL);
  CHECK(strstr(m, "PLAIN") == NULL);
  input(&p, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
  CHECK(expect(&p, "<failure xmlns=\"urn:ietf:params:xml:ns:xmpp-tls\"/>") !=
        NULL);
  check_error(&p, "policy-violation");
  peer_free(&p);

  attach(&p, &w, 0);
  input(&p, OPEN);
  input(&p, AUTH_ALICE);
  check_error(&p, "policy-violation");
  peer_free(&p);
  xcm_test_world_stop(&w, 1000);
}

static void small_out(xcm_options *o, void *ud) {
  (void)ud;
  o->max_client_out = 4096;
}

static int kept4(void *ud) {
  return xcm__client_kept(((peer *)ud)->c) == 4;
}

typedef struct offline_wait {
  xcm_test_world *w;
  unsigned n;
} offline_wait;

static int offline_has(void *ud) {
  offline_wait *o = ud;

  return xcm_testkit_offline_count(o->w->kit, "alice") >= o->n;
}

static int has_n(void *ud) {
  peer *p = ud;

  return p->n >= p->seen;
}

/* The transport says it is full: the client keeps what follows, in
 * order, until writable; its pause reaches the transport when the
 * upstream asks. One that never becomes writable overflows max_out and
 * is dropped; its messages go back to the server as <failed/>, which
 * stores them offline. */
static void test_backpressure(void) {
  xcm_test_world w;
  peer p;
  size_t before, i;
  char line[300];
  unsigned offline;
  offline_wait ow = {NULL, 40};

  start(&w, small_out, 0);
  ow.w = &w;
  REQUIRE(xcm_testkit_local_login(w.kit, BOB, NULL, NULL) == 0);
  attach(&p, &w, 0);
  REQUIRE(login(&p));
  REQUIRE(xcm_test_run_until(&w.loop, alice_available, &w, 5000));

  /* Pause and resume from the upstream side reach the transport. */
  xcm__client_pause(p.c);
  CHECK_INT(p.paused, 1);
  xcm__client_resume(p.c);
  CHECK_INT(p.paused, 0);

  p.answer = XCM_EAGAIN;
  before = p.n;
  bob_send(&w, "m0");
  p.seen = before + 1;
  REQUIRE(xcm_test_run_until(&w.loop, has_n, &p, 5000));
  for (i = 1; i < 5; i++) {
    snprintf(line, sizeof line, "m%zu", i);
    bob_send(&w, line);
  }
  /* The rest is kept, none sent. */
  REQUIRE(xcm_test_run_until(&w.loop, kept4, &p, 5000));
  CHECK_INT(p.n, before + 1);
  p.answer = 0;
  xcm__client_writable(p.c);
  CHECK_INT(p.n, before + 5);
  for (i = 0; i < 5 && p.n == before + 5; i++) {
    snprintf(line, sizeof line, "<body>m%zu</body>", i);
    CHECK(strstr(p.msgs[before + i], line) != NULL);
  }
  p.seen = p.n;

  /* Never writable again: over max_out (4 KB) it goes. */
  p.answer = XCM_EAGAIN;
  bob_send(&w, "first");
  for (i = 0; i < 40; i++) {
    snprintf(line, sizeof line, "k%02zu-%0200d", i, 0);
    bob_send(&w, line);
  }
  CHECK(xcm_test_run_until(&w.loop, is_closed, &p, 5000));
  CHECK_INT(p.failed, 1);
  /* Those the client never got (all but the one the transport took)
   * are stored offline, as <failed/> asks. */
  CHECK(xcm_test_run_until(&w.loop, offline_has, &ow, 5000));
  offline = xcm_testkit_offline_count(w.kit, "alice");
  if (!CHECK(offline >= 40))
    xcm_test_note("offline: %u", offline);
  xcm_testkit_local_logout(w.kit, BOB);
  xcm_test_world_stop(&w, 1000);
  peer_free(&p);
}

/* What a message framing cannot do: compression is never offered nor
 * started (setup-failed, and the stream goes on), and the client's
 * xml:lang comes back on our <open/>. */
static void with_compression(xcm_options *o, void *ud) {
  (void)ud;
  o->compression = 1;
}

static void test_no_compression(void) {
  xcm_test_world w;
  peer p;
  const char *m;

  /* The server allows zlib and so does the CM: a secure byte stream
   * would be offered it (test-client). */
  start(&w, with_compression, 1);
  attach(&p, &w, 1);
  input(&p, "<open xmlns='" FR "' to='example.test' version='1.0' "
            "xml:lang='de'/>");
  m = expect(&p, "<open ");
  REQUIRE(m != NULL);
  CHECK(strstr(m, "xml:lang=\"de\"") != NULL);
  m = expect(&p, "<stream:features");
  REQUIRE(m != NULL);
  CHECK(strstr(m, "compression") == NULL);
  input(&p, "<compress xmlns='http://jabber.org/protocol/compress'>"
            "<method>zlib</method></compress>");
  CHECK(expect(&p, "<setup-failed/>") != NULL);
  CHECK_INT(p.closed, 0);
  input(&p, CLOSE);
  CHECK(xcm_test_run_until(&w.loop, is_closed, &p, 5000));
  CHECK_INT(p.failed, 0);
  xcm_test_world_stop(&w, 1000);
  peer_free(&p);
}

/* A transport that fails a send: the client ends at once, closed as
 * failed, and the message it could not take goes back to the server. */
static void test_send_fails(void) {
  xcm_test_world w;
  peer p;
  offline_wait ow = {NULL, 1};

  start(&w, NULL, 0);
  ow.w = &w;
  REQUIRE(xcm_testkit_local_login(w.kit, BOB, NULL, NULL) == 0);
  attach(&p, &w, 0);
  REQUIRE(login(&p));
  REQUIRE(xcm_test_run_until(&w.loop, alice_available, &w, 5000));
  p.answer = XCM_ECLOSED;
  bob_send(&w, "lost?");
  CHECK(xcm_test_run_until(&w.loop, is_closed, &p, 5000));
  CHECK_INT(p.failed, 1);
  CHECK(xcm_test_run_until(&w.loop, offline_has, &ow, 5000));
  xcm_testkit_local_logout(w.kit, BOB);
  xcm_test_world_stop(&w, 1000);
  peer_free(&p);
}

/* ---- the public custom byte transport --------------------------------------
 */

typedef struct custom {
  xcm_conn *conn;
  char out[65536];
  size_t len;
  int answer;
  unsigned writes;
  int closed;
} custom;

static int c_write(void *ud, const char *data, size_t len) {
  custom *k = ud;

  if (len > sizeof k->out - 1 - k->len)
    len = sizeof k->out - 1 - k->len;
  memcpy(k->out + k->len, data, len);
  k->len += len;
  k->out[k->len] = '\0';
  k->writes++;
  return k->answer;
}

static void c_close(void *ud) {
  ((custom *)ud)->closed = 1;
}

typedef struct out_wait {
  custom *k;
  const char *needle;
} out_wait;

static int out_has(void *ud) {
  out_wait *o = ud;

  return strstr(o->k->out, o->needle) != NULL;
}

static int c_expect(xcm_test_world *w, custom *k, const char *needle) {
  out_wait o = {k, needle};

  return xcm_test_run_until(&w->loop, out_has, &o, 5000);
}

static void c_input(custom *k, const char *s) {
  xcm_conn_input(k->conn, s, strlen(s));
}

#define HEADER                                                                 \
  "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' "            \
  "xmlns='jabber:client' to='example.test' version='1.0'>"

/* secure: TLS below the transport counts for `required`, and STARTTLS
 * is not offered although the listener has a certificate. */
static void test_custom_secure(void) {
  xcm_test_world w;
  xcm_policy pol;
  policy_wait pw;
  static custom k;
  xcm_transport t;

  start(&w, NULL, 1);
  pol = *xcm_cm_policy(w.cm);
  pol.tls = XCM_TLS_REQUIRED;
  REQUIRE(xcm_testkit_set_policy(w.kit, &pol) == 0);
  pw.w = &w;
  pw.tls = XCM_TLS_REQUIRED;
  REQUIRE(xcm_test_run_until(&w.loop, policy_is, &pw, 5000));

  memset(&k, 0, sizeof k);
  memset(&t, 0, sizeof t);
  t.size = sizeof t;
  t.write = c_write;
  t.close = c_close;
  t.ud = &k;
  t.secure = 1;
  REQUIRE(xcm_cm_attach(w.cm, 0, &t, "127.0.0.1", &k.conn) == 0);
  c_input(&k, HEADER);
  REQUIRE(c_expect(&w, &k, "</stream:features>"));
  CHECK(strstr(k.out, "starttls") == NULL);
  CHECK(strstr(k.out, "PLAIN") != NULL);
  c_input(&k, AUTH_ALICE);
  CHECK(c_expect(&w, &k, "<success"));
  c_input(&k, "</stream:stream>");
  CHECK(c_expect(&w, &k, "</stream:stream>"));

  /* Without the flag, the same listener offers STARTTLS, required. */
  memset(&k, 0, sizeof k);
  t.secure = 0;
  REQUIRE(xcm_cm_attach(w.cm, 0, &t, "127.0.0.1", &k.conn) == 0);
  c_input(&k, HEADER);
  REQUIRE(c_expect(&w, &k, "</stream:features>"));
  CHECK(strstr(k.out, "<starttls") != NULL);
  CHECK(strstr(k.out, "<required/>") != NULL);
  c_input(&k, "</stream:stream>");
  CHECK(c_expect(&w, &k, "</stream:stream>"));
  xcm_test_world_stop(&w, 1000);
}

typedef struct queued_wait {
  custom *k;
  size_t over;
} queued_wait;

/* Bytes wait in the stream, more than over: what the transport was not
 * given. */
static int queued_over(void *ud) {
  queued_wait *q = ud;

  return xcm__stream_queued((xcm_stream *)q->k->conn) > q->over;
}

static int custom_closed(void *ud) {
  return ((custom *)ud)->closed;
}

/* XCM_EAGAIN from write(): nothing more is written until
 * xcm_conn_writable(), then what waited goes in order; a transport that
 * never takes more overflows max_out and the messages it did not get go
 * back as <failed/>. */
static void test_custom_backpressure(void) {
  xcm_test_world w;
  static custom k;
  xcm_transport t;
  char line[300];
  unsigned writes, i, offline;
  queued_wait qw = {&k, 0};
  offline_wait ow = {NULL, 40};

  start(&w, small_out, 0);
  REQUIRE(xcm_testkit_local_login(w.kit, BOB, NULL, NULL) == 0);
  memset(&k, 0, sizeof k);
  memset(&t, 0, sizeof t);
  t.size = sizeof t;
  t.write = c_write;
  t.close = c_close;
  t.ud = &k;
  REQUIRE(xcm_cm_attach(w.cm, 0, &t, "127.0.0.1", &k.conn) == 0);
  c_input(&k, HEADER);
  REQUIRE(c_expect(&w, &k, "</stream:features>"));
  c_input(&k, AUTH_ALICE);
  REQUIRE(c_expect(&w, &k, "<success"));
  c_input(&k, HEADER);
  c_input(&k, BIND);
  REQUIRE(c_expect(&w, &k, "<jid>" ALICE "</jid>"));
  c_input(&k, "<presence/>");
  REQUIRE(xcm_test_run_until(&w.loop, alice_available, &w, 5000));

  k.answer = XCM_EAGAIN;
  bob_send(&w, "q0");
  REQUIRE(c_expect(&w, &k, "<body>q0</body>"));
  writes = k.writes;
  bob_send(&w, "q1");
  qw.over = 0;
  REQUIRE(xcm_test_run_until(&w.loop, queued_over, &qw, 5000));
  qw.over = xcm__stream_queued((xcm_stream *)k.conn);
  bob_send(&w, "q2");
  REQUIRE(xcm_test_run_until(&w.loop, queued_over, &qw, 5000));
  CHECK_INT(k.writes, writes);
  CHECK(strstr(k.out, "q1") == NULL);
  k.answer = 0;
  xcm_conn_writable(k.conn);
  CHECK(c_expect(&w, &k, "<body>q2</body>"));
  CHECK(strstr(k.out, "<body>q1</body>") < strstr(k.out, "<body>q2</body>"));

  k.answer = XCM_EAGAIN;
  bob_send(&w, "c0");
  REQUIRE(c_expect(&w, &k, "<body>c0</body>"));
  for (i = 0; i < 40; i++) {
    snprintf(line, sizeof line, "k%02u-%0200d", i, 0);
    bob_send(&w, line);
  }
  CHECK(xcm_test_run_until(&w.loop, custom_closed, &k, 5000));
  ow.w = &w;
  CHECK(xcm_test_run_until(&w.loop, offline_has, &ow, 5000));
  offline = xcm_testkit_offline_count(w.kit, "alice");
  if (!CHECK(offline >= 40))
    xcm_test_note("offline: %u", offline);
  xcm_testkit_local_logout(w.kit, BOB);
  xcm_test_world_stop(&w, 1000);
}

/* The framing's own output, unit by unit. */
static void test_units(void) {
  xcm_buf b;
  xcm_frame_open a = {"example.test", "abc", "en", 1};

  xcm__buf_init(&b, NULL);
  CHECK(xcm__framing_messages.open(&b, &a) == 0);
#define WANT_OPEN                                                              \
  "<open xmlns=\"" FR "\" from=\"example.test\" id=\"abc\" version=\"1.0\" "   \
  "xml:lang=\"en\"/>"
  CHECK_MEM(b.data, b.len, WANT_OPEN, strlen(WANT_OPEN));
  xcm__buf_reset(&b);
  CHECK(xcm__framing_messages.close(&b) == 0);
  CHECK_MEM(b.data, b.len, "<close xmlns=\"" FR "\"/>",
            strlen("<close xmlns=\"" FR "\"/>"));
  xcm__buf_reset(&b);
  CHECK(xcm__framing_messages.element(&b, "<message to='x'/>", 17) == 0);
  CHECK_MEM(b.data, b.len, "<message xmlns=\"jabber:client\" to='x'/>",
            strlen("<message xmlns=\"jabber:client\" to='x'/>"));
  xcm__buf_reset(&b);
  CHECK(xcm__framing_messages.server_error(
            &b, "<stream:error><conflict/></stream:error>", 40) == 0);
  CHECK_MEM(b.data, b.len,
            "<stream:error xmlns:stream=\"http://etherx.jabber.org/streams\">"
            "<conflict/></stream:error>",
            strlen("<stream:error xmlns:stream=\"http://etherx.jabber.org/"
                   "streams\"><conflict/></stream:error>"));
  xcm__buf_free(&b);
}

int main(int argc, char **argv) {
  static const xcm_test tests[] = {
      {"units", test_units},
      {"login-and-messages", test_login_and_messages},
      {"server-close", test_server_close},
      {"stream-errors", test_stream_errors},
      {"over-the-limit", test_over_the_limit},
      {"secure-flag", test_secure_flag},
      {"backpressure", test_backpressure},
      {"no-compression", test_no_compression},
      {"send-fails", test_send_fails},
      {"custom-secure", test_custom_secure},
      {"custom-backpressure", test_custom_backpressure},
  };

  return xcm_test_main(argc, argv, XCM_TESTS(tests));
}
