/* xcmd --demo: the testkit as xcmd's upstream, on the worker's loop.
 *
 * Only xcmd-demo (the source tree's cmd/demo) links it; the installed
 * xcmd is built with demo-none.c and so never carries the testkit. */
#ifndef XCMD_DEMO_H
#define XCMD_DEMO_H

#include <stddef.h>
#include <uv.h>

#include "xcm/xcm.h"

typedef struct xcmd_demo xcmd_demo;

/* Whether this build can run --demo. */
extern const int xcmd_demo_available;

/* Start an upstream on loop and point o at it. log gets its lines. */
int xcmd_demo_start(xcmd_demo **out, uv_loop_t *loop, xcm_options *o,
                    xcm_log_fn log, void *log_ud, char *err, size_t errlen);
/* Close it (asynchronously; the loop ends once it is closed). */
void xcmd_demo_stop(xcmd_demo *d);
/* After the loop ended: report any protocol violation the upstream saw
 * through log, and free it. */
void xcmd_demo_free(xcmd_demo *d, xcm_log_fn log, void *log_ud);

#endif
