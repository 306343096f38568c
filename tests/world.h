/* Starting and ending a test world: a CM in front of the testkit on one
 * loop, as the end-to-end suites run them. In ending one the order
 * matters: the CM drains and closes its sessions upstream while the
 * testkit still answers, then the testkit closes, then both are freed
 * and the loop runs dry. */
#ifndef XCM_TESTS_WORLD_H
#define XCM_TESTS_WORLD_H

#include <stdint.h>
#include <uv.h>

#include "xcm/testkit.h"
#include "xcm/xcm.h"

/* A CM in front of the testkit on one loop, the CM listening on
 * loopback. A suite's own world starts with one (or is one). */
typedef struct xcm_test_world {
  uv_loop_t loop;
  xcm_testkit *kit;
  xcm_cm *cm;
  int port;     /* plain, with STARTTLS when the listener has a certificate */
  int tls_port; /* direct TLS, when asked for */
  int closed;   /* for xcm_test_cm_shutdown and xcm_test_world_end */
} xcm_test_world;

/* What one suite's world differs in; zero is the usual. */
typedef struct xcm_test_world_setup {
  /* The testkit: xcm_testkit_options_init's, but for these. */
  uint64_t seed;
  unsigned offline_max;          /* 0: the testkit's default */
  xcm_testkit_event_fn on_event; /* given ud */
  /* Its accounts, NULL-terminated, each one's password its name; NULL:
   * alice and bob. With roster, alice and bob have each other in their
   * rosters (both ways). */
  const char *const *accounts;
  int roster;
  /* The CM's options are example.test's, as cm1 with two links and no
   * upstream TLS; tune (may be NULL) changes them. hooks (may be NULL)
   * sees the CM made, before it listens: its event hooks. */
  void (*tune)(xcm_options *o, void *ud);
  void (*hooks)(xcm_cm *cm, void *ud);
  void *ud;
  /* tls: the listener has the test certificate (STARTTLS); direct_tls:
   * so has it, and a second listener, for TLS from the first byte. */
  int tls, direct_tls;
  /* Wait for every upstream link to be up, not just one. */
  int every_link;
} xcm_test_world_setup;

/* Set w up (any contents: it is cleared) as s says, start the CM and
 * wait up to 5 s for its policy and its links; a test that cannot get
 * so far ends there (REQUIRE). */
void xcm_test_world_start(xcm_test_world *w, const xcm_test_world_setup *s);

/* Start cm's graceful shutdown; *down counts up when it is done. */
void xcm_test_cm_shutdown(xcm_cm *cm, unsigned drain_ms, int *down);

/* After xcm_test_cm_shutdown(cm, ..., down): wait for it, close kit,
 * check that the testkit saw no protocol violation, free both and check
 * that loop closes cleanly. */
void xcm_test_world_end(uv_loop_t *loop, xcm_cm *cm, xcm_testkit *kit,
                        int *down);

/* Whether kit's witness saw no protocol violation from any CM; if it
 * did, says how many and prints the first. Every test that ends a
 * testkit CHECKs it (or, sending bad bytes on purpose, checks the
 * count it expects). */
int xcm_test_kit_clean(const xcm_testkit *kit);

/* Both of the above for a world: shut its CM down (drain_ms), end it. */
void xcm_test_world_stop(xcm_test_world *w, unsigned drain_ms);

#endif
