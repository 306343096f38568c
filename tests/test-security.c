/* Findings of the outside security review, each replayed over loopback
 * against libxcm in front of the in-process Openfire: one hostile client
 * must not cost anyone else their session. */
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

#define HDR                                                                    \
  "<?xml version='1.0'?><stream:stream "                                       \
  "xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client' "     \
  "to='example.test' version='1.0'>"
#define AUTH_ALICE                                                             \
  "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "                            \
  "mechanism='PLAIN'>AGFsaWNlAGFsaWNl</auth>"

typedef struct world {
  uv_loop_t loop;
  xcm_testkit *kit;
  xcm_cm *cm;
  int port;
  int closed;
  unsigned links_down; /* the CM's link events */
  unsigned conns_down; /* the testkit's */
} world;

static void on_link(void *ud, unsigned i, const char *resource, int up,
                    const char *why, const xcm_policy *policy) {
  world *w = ud;

  (void)i;
  (void)policy;
  if (!up) {
    w->links_down++;
    xcm_test_note("link %s down: %s", resource ? resource : "?",
                  why ? why : "");
  }
}

static void on_kit_event(void *ud, xcm_testkit *kit,
                         const xcm_testkit_event *ev) {
  world *w = ud;

  (void)kit;
  if (ev->type == XCM_TESTKIT_CONN_DOWN)
    w->conns_down++;
}

static int links_up(void *ud) {
  world *w = ud;
  xcm_stats st;

  xcm_cm_stats(w->cm, &st);
  return xcm_cm_policy(w->cm) != NULL &&
         st.upstream_links_up == xcm_cm_upstream_links(w->cm);
}

/* One upstream link, so that the attacker's session and the victim's
 * share it, as they do on any busy CM. */
static void world_start(world *w, int expat_only) {
  xcm_testkit_options ko;
  xcm_options o;
  xcm_listen_options lo;
  char err[256];

  memset(w, 0, sizeof(*w));
  REQUIRE(uv_loop_init(&w->loop) == 0);
  xcm_testkit_options_init(&ko);
  ko.seed = 7;
  ko.on_event = on_kit_event;
  ko.event_ud = w;
  REQUIRE(xcm_testkit_new(&w->kit, &w->loop, &ko, err, sizeof err) == 0);
  xcm_testkit_add_account(w->kit, "alice", "alice");
  xcm_testkit_add_account(w->kit, "bob", "bob");
  memset(&o, 0, sizeof o);
  o.domain = "example.test";
  o.server_port = xcm_testkit_port(w->kit);
  o.name = "cm1";
  o.secret = "cmsecret";
  o.connections = 1;
  o.upstream_tls = XCM_UPSTREAM_TLS_OFF;
  o.expat_only = expat_only;
  if (xcm_cm_new(&w->cm, &w->loop, &o, err, sizeof err) != 0)
    xcm_test_note("xcm_cm_new: %s", err);
  REQUIRE(w->cm != NULL);
  xcm_cm_set_link_events(w->cm, on_link, w);
  memset(&lo, 0, sizeof lo);
  lo.host = "127.0.0.1";
  REQUIRE(xcm_cm_listen(w->cm, &lo, err, sizeof err) == 0);
  w->port = xcm_cm_listener_port(w->cm, 0);
  REQUIRE(xcm_cm_start(w->cm) == 0);
  REQUIRE(xcm_test_run_until(&w->loop, links_up, w, 5000));
}

static void world_stop(world *w) {
  xcm_cm_set_link_events(w->cm, NULL, NULL);
  xcm_test_cm_shutdown(w->cm, 1000, &w->closed);
  xcm_test_world_end(&w->loop, w->cm, w->kit, &w->closed);
}

/* The logged-in client routes a message to itself through the link. */
static int still_works(xcm_raw *good, int n) {
  char buf[256], want[64];

  snprintf(want, sizeof want, "still %d", n);
  snprintf(buf, sizeof buf,
           "<message to='alice@example.test/good' type='chat'><body>%s</body>"
           "</message>",
           want);
  xcm_raw_sends(good, buf);
  return xcm_raw_wait(good, want, 3000);
}

/* A SASL <auth> whose start tag declares ndecls unused prefixes and,
 * after the first at of them, the default namespace (and, with stream,
 * the stream prefix too). */
static char *hostile_auth(size_t ndecls, size_t at, int stream) {
  xcm_buf b;
  char tmp[64];
  size_t i;

  xcm__buf_init(&b, NULL);
  xcm__buf_append_str(&b, "<auth");
  for (i = 0; i <= ndecls; i++) {
    if (i == at) {
      xcm__buf_append_str(&b, " xmlns='urn:ietf:params:xml:ns:xmpp-sasl'");
      if (stream)
        xcm__buf_append_str(&b,
                            " xmlns:stream='http://etherx.jabber.org/streams'");
    }
    if (i == ndecls)
      break;
    snprintf(tmp, sizeof tmp, " xmlns:p%zu='urn:p%zu'", i, i);
    xcm__buf_append_str(&b, tmp);
  }
  /* bob's PLAIN credentials */
  xcm__buf_append_str(&b, " mechanism='PLAIN'>AGJvYgBib2I=</auth>");
  xcm__buf_append_char(&b, '\0');
  return b.data;
}

/* Finding 1: more than 16 namespace declarations on one start tag, the
 * default namespace redeclared after the 16th, made the route framing
 * write xmlns twice; Openfire dropped the shared link with every session
 * on it. Sent before login by a client nobody knows, while another
 * client chats, with the scanner on and with expat alone. */
static void check_many_declarations(int expat_only) {
  static const struct {
    size_t ndecls, at;
    int stream;
  } shapes[] = {{17, 16, 0}, {17, 17, 0}, {40, 30, 1}, {16, 16, 1}};
  world w;
  xcm_raw good;
  xcm_testkit_stats ks;
  size_t i;

  world_start(&w, expat_only);
  REQUIRE(xcm_raw_open(&good, &w.loop, "127.0.0.1", w.port, 1));
  REQUIRE(xcm_raw_login(&good, HDR, AUTH_ALICE, "good"));
  CHECK(still_works(&good, 0));
  for (i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
    unsigned before = xcm_test_failures();
    char *auth = hostile_auth(shapes[i].ndecls, shapes[i].at, shapes[i].stream);
    xcm_raw bad;

    REQUIRE(xcm_raw_open(&bad, &w.loop, "127.0.0.1", w.port, 1));
    xcm_raw_sends(&bad, HDR);
    CHECK(xcm_raw_wait(&bad, "</stream:features>", 3000));
    xcm_raw_sends(&bad, auth);
    /* Openfire read the <auth> as it was meant, and answered it. */
    if (!CHECK(xcm_raw_wait(&bad, "<success", 3000)))
      xcm_test_note("shape %zu got: %s", i, bad.in.data ? bad.in.data : "");
    CHECK(still_works(&good, (int)i + 1));
    xcm_testkit_get_stats(w.kit, &ks);
    CHECK_INT(ks.dropped, 0);
    CHECK_INT(w.links_down, 0);
    CHECK_INT(w.conns_down, 0);
    CHECK(strstr(good.in.data, "remote-connection-failed") == NULL);
    xcm_raw_free(&bad);
    free(auth);
    if (xcm_test_failures() != before)
      xcm_test_note("shape %zu, expat_only %d", i, expat_only);
    xcm_test_tried("namespace-declarations", before);
  }
  xcm_raw_free(&good);
  world_stop(&w);
}

static void test_many_declarations_scanner(void) {
  check_many_declarations(0);
}

static void test_many_declarations_expat(void) {
  check_many_declarations(1);
}

static const xcm_test tests[] = {
    {"many_declarations_scanner", test_many_declarations_scanner},
    {"many_declarations_expat", test_many_declarations_expat},
};

int main(int argc, char **argv) {
  return xcm_test_main(argc, argv, XCM_TESTS(tests));
}
