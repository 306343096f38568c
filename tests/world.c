#include "world.h"

#include <string.h>

#include "harness.h"

/* The statistics must stay readable in the shutdown callback (and until
 * xcm_cm_free): every world reads them here, under the sanitizers and
 * valgrind too. */
static void cm_down(void *ud, xcm_cm *cm) {
  xcm_stats st;

  xcm_cm_stats(cm, &st, sizeof st);
  CHECK_INT(st.xml_parsers_busy, 0);
  CHECK_INT(st.upstream_links_up, 0);
  ++*(int *)ud;
}

static void kit_down(void *ud, xcm_testkit *kit) {
  (void)kit;
  ++*(int *)ud;
}

void xcm_test_cm_shutdown(xcm_cm *cm, unsigned drain_ms, int *down) {
  xcm_cm_shutdown(cm, drain_ms, cm_down, down);
}

int xcm_test_kit_clean(const xcm_testkit *kit) {
  xcm_testkit_stats st;

  xcm_testkit_get_stats(kit, &st, sizeof st);
  if (st.violations == 0)
    return 1;
  xcm_test_note("the testkit saw %llu protocol violation(s); the first: %s",
                (unsigned long long)st.violations,
                xcm_testkit_first_violation(kit));
  return 0;
}

void xcm_test_world_end(uv_loop_t *loop, xcm_cm *cm, xcm_testkit *kit,
                        int *down) {
  while (*down < 1)
    uv_run(loop, UV_RUN_ONCE);
  xcm_testkit_close(kit, kit_down, down);
  while (*down < 2)
    uv_run(loop, UV_RUN_ONCE);
  CHECK(xcm_test_kit_clean(kit));
  xcm_cm_free(cm);
  xcm_testkit_free(kit);
  uv_run(loop, UV_RUN_DEFAULT);
  CHECK_INT(uv_loop_close(loop), 0);
}

typedef struct links_wait {
  xcm_test_world *w;
  int every;
} links_wait;

/* The CM has its policy, and one link up (or every link). */
static int links_ready(void *ud) {
  const links_wait *lw = ud;
  xcm_stats st;

  xcm_cm_stats(lw->w->cm, &st, sizeof st);
  if (xcm_cm_policy(lw->w->cm) == NULL)
    return 0;
  if (lw->every)
    return st.upstream_links_up == xcm_cm_upstream_links(lw->w->cm);
  return st.upstream_links_up >= 1;
}

void xcm_test_world_start(xcm_test_world *w, const xcm_test_world_setup *s) {
  static const char *const alice_and_bob[] = {"alice", "bob", NULL};
  const char *const *user;
  xcm_testkit_options ko;
  xcm_options o;
  xcm_listen_options lo;
  char err[256];
  links_wait lw;

  memset(w, 0, sizeof(*w));
  REQUIRE(uv_loop_init(&w->loop) == 0);
  xcm_testkit_options_init(&ko, sizeof ko);
  ko.seed = s->seed;
  if (s->offline_max != 0)
    ko.offline_max = s->offline_max;
  if (s->on_event != NULL) {
    ko.on_event = s->on_event;
    ko.event_ud = s->ud;
  }
  REQUIRE(xcm_testkit_new(&w->kit, &w->loop, &ko, err, sizeof err) == 0);
  for (user = s->accounts ? s->accounts : alice_and_bob; *user != NULL; user++)
    xcm_testkit_add_account(w->kit, *user, *user);
  if (s->roster) {
    xcm_testkit_add_roster_item(w->kit, "alice", "bob@example.test", "Bob",
                                "both");
    xcm_testkit_add_roster_item(w->kit, "bob", "alice@example.test", "Alice",
                                "both");
  }
  xcm_options_init(&o, sizeof o);
  o.domain = "example.test";
  o.server_port = xcm_testkit_port(w->kit);
  o.name = "cm1";
  o.secret = "cmsecret";
  o.connections = 2;
  o.upstream_tls = XCM_UPSTREAM_TLS_OFF;
  if (s->tune != NULL)
    s->tune(&o, s->ud);
  if (xcm_cm_new(&w->cm, &w->loop, &o, err, sizeof err) != 0)
    xcm_test_note("xcm_cm_new: %s", err);
  REQUIRE(w->cm != NULL);
  if (s->hooks != NULL)
    s->hooks(w->cm, s->ud);
  xcm_listen_options_init(&lo, sizeof lo);
  lo.host = "127.0.0.1";
  if (s->tls || s->direct_tls) {
    lo.cert_file = xcm_test_cert("server.pem");
    lo.key_file = xcm_test_cert("server-key.pem");
  }
  if (xcm_cm_listen(w->cm, &lo, err, sizeof err) != 0)
    xcm_test_note("xcm_cm_listen: %s", err);
  REQUIRE(xcm_cm_listener_port(w->cm, 0) > 0);
  w->port = xcm_cm_listener_port(w->cm, 0);
  if (s->direct_tls) {
    lo.direct_tls = 1;
    REQUIRE(xcm_cm_listen(w->cm, &lo, err, sizeof err) == 0);
    w->tls_port = xcm_cm_listener_port(w->cm, 1);
  }
  REQUIRE(xcm_cm_start(w->cm) == 0);
  lw.w = w;
  lw.every = s->every_link;
  REQUIRE(xcm_test_run_until(&w->loop, links_ready, &lw, 5000));
}

void xcm_test_world_stop(xcm_test_world *w, unsigned drain_ms) {
  xcm_test_cm_shutdown(w->cm, drain_ms, &w->closed);
  xcm_test_world_end(&w->loop, w->cm, w->kit, &w->closed);
}
