/* Ending a test world: a CM in front of the testkit on one loop, as the
 * client and fault suites run them. The order matters: the CM drains and
 * closes its sessions upstream while the testkit still answers, then the
 * testkit closes, then both are freed and the loop runs dry. */
#ifndef XCM_TESTS_WORLD_H
#define XCM_TESTS_WORLD_H

#include <uv.h>

#include "xcm/testkit.h"
#include "xcm/xcm.h"

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

#endif
