/* The installed xcmd has no demo upstream: the testkit stays out of
 * the daemon an operator runs. */
#include <stdio.h>

#include "demo.h"

const int xcmd_demo_available = 0;

int xcmd_demo_start(xcmd_demo **out, uv_loop_t *loop, xcm_options *o,
                    xcm_log_fn log, void *log_ud, char *err, size_t errlen) {
  (void)loop, (void)o, (void)log, (void)log_ud;
  *out = NULL;
  snprintf(err, errlen, "this xcmd has no demo upstream");
  return XCM_EINVAL;
}

void xcmd_demo_stop(xcmd_demo *d) {
  (void)d;
}

void xcmd_demo_free(xcmd_demo *d, xcm_log_fn log, void *log_ud) {
  (void)d, (void)log, (void)log_ud;
}
