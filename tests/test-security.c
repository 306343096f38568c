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

typedef struct world {
  xcm_test_world base;
  int expat_only;
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

static void one_link(xcm_options *o, void *ud) {
  world *w = ud;

  o->connections = 1;
  o->expat_only = w->expat_only;
}

static void link_events(xcm_cm *cm, void *ud) {
  xcm_cm_set_link_events(cm, on_link, ud);
}

/* One upstream link, so that the attacker's session and the victim's
 * share it, as they do on any busy CM. */
static void world_start(world *w, int expat_only) {
  xcm_test_world_setup s = {.seed = 7,
                            .on_event = on_kit_event,
                            .tune = one_link,
                            .hooks = link_events,
                            .ud = w,
                            .every_link = 1};

  memset(w, 0, sizeof(*w));
  w->expat_only = expat_only;
  xcm_test_world_start(&w->base, &s);
}

static void world_stop(world *w) {
  xcm_cm_set_link_events(w->base.cm, NULL, NULL);
  xcm_test_world_stop(&w->base, 1000);
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
  REQUIRE(xcm_raw_open(&good, &w.base.loop, "127.0.0.1", w.base.port, 1));
  REQUIRE(xcm_raw_login(&good, XCM_RAW_HDR, XCM_RAW_AUTH_ALICE, "good"));
  CHECK(xcm_raw_still_works(&good, 0));
  for (i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
    unsigned before = xcm_test_failures();
    char *auth = hostile_auth(shapes[i].ndecls, shapes[i].at, shapes[i].stream);
    xcm_raw bad;

    REQUIRE(xcm_raw_open(&bad, &w.base.loop, "127.0.0.1", w.base.port, 1));
    xcm_raw_sends(&bad, XCM_RAW_HDR);
    CHECK(xcm_raw_wait(&bad, "</stream:features>", 3000));
    xcm_raw_sends(&bad, auth);
    /* Openfire read the <auth> as it was meant, and answered it. */
    if (!CHECK(xcm_raw_wait(&bad, "<success", 3000)))
      xcm_test_note("shape %zu got: %s", i, bad.in.data ? bad.in.data : "");
    CHECK(xcm_raw_still_works(&good, (int)i + 1));
    xcm_testkit_get_stats(w.base.kit, &ks, sizeof ks);
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

/* The review's second finding: a tree mixing text with children, or
 * with tens of thousands of siblings, cost time and memory quadratic in
 * its size, and <compress> (answered with setup-failed, the stream left
 * open) could ask for one again and again after login. The CM builds
 * trees only for what it must read and caps them (max_tree): such an
 * element ends its own stream at once, and nobody else notices. */
static void check_tree_shapes(int expat_only) {
  static const struct {
    const char *unit;
    size_t times;
  } shapes[] = {{"tttttttt<a>u</a>", 15000}, {"<a/>", 60000}};
  world w;
  xcm_raw good;
  xcm_buf b;
  size_t i, k;

  world_start(&w, expat_only);
  REQUIRE(xcm_raw_open(&good, &w.base.loop, "127.0.0.1", w.base.port, 1));
  REQUIRE(xcm_raw_login(&good, XCM_RAW_HDR, XCM_RAW_AUTH_ALICE, "good"));
  for (i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
    unsigned before = xcm_test_failures();
    xcm_raw bad;

    xcm__buf_init(&b, NULL);
    REQUIRE(xcm__buf_append_str(
                &b, "<compress xmlns='http://jabber.org/protocol/compress'>"
                    "<method>zlib</method>") == 0);
    for (k = 0; k < shapes[i].times; k++)
      REQUIRE(xcm__buf_append_str(&b, shapes[i].unit) == 0);
    REQUIRE(xcm__buf_append_str(&b, "</compress>") == 0);
    REQUIRE(xcm_raw_open(&bad, &w.base.loop, "127.0.0.1", w.base.port, 1));
    REQUIRE(xcm_raw_login(&bad, XCM_RAW_HDR, XCM_RAW_AUTH_BOB, "bad"));
    xcm_raw_send(&bad, b.data, b.len);
    if (!CHECK(
            xcm_raw_wait(&bad, "element too large for the CM to read", 5000)))
      xcm_test_note("shape %zu got: %.300s", i, bad.in.data ? bad.in.data : "");
    CHECK(xcm_raw_wait(&bad, "<policy-violation", 1000));
    CHECK(strstr(bad.in.data, "setup-failed") == NULL);
    CHECK(xcm_raw_still_works(&good, (int)i));
    CHECK_INT(w.links_down, 0);
    xcm_raw_free(&bad);
    xcm__buf_free(&b);
    if (xcm_test_failures() != before)
      xcm_test_note("shape %zu, expat_only %d", i, expat_only);
    xcm_test_tried("tree-shapes", before);
  }
  xcm_raw_free(&good);
  world_stop(&w);
}

static void test_tree_shapes_scanner(void) {
  check_tree_shapes(0);
}

static void test_tree_shapes_expat(void) {
  check_tree_shapes(1);
}

static const xcm_test tests[] = {
    {"tree_shapes_scanner", test_tree_shapes_scanner},
    {"tree_shapes_expat", test_tree_shapes_expat},
    {"many_declarations_scanner", test_many_declarations_scanner},
    {"many_declarations_expat", test_many_declarations_expat},
};

int main(int argc, char **argv) {
  return xcm_test_main(argc, argv, XCM_TESTS(tests));
}
