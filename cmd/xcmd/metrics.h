/* xcmd's metrics endpoint (Prometheus text format over HTTP). */
#ifndef XCMD_METRICS_H
#define XCMD_METRICS_H

#include <uv.h>

#include "xcm/xcm.h"

/* As many as libxcm allows: 16 nodes, 256 links in all. */
#define XCMD_METRICS_LINKS 256
#define XCMD_METRICS_NODES 16

/* One per worker: its loop's timer copies its statistics here. */
typedef struct xcmd_metrics_worker {
  xcm_cm *cm;
  uv_timer_t timer;
  uv_mutex_t lock;
  xcm_stats stats;
  struct {
    char resource[128];
    int up;
  } links[XCMD_METRICS_LINKS];
  unsigned nlinks;
  struct {
    char server[272]; /* "host:port" */
    unsigned links_up;
    uint64_t sessions, losses, sessions_lost;
  } nodes[XCMD_METRICS_NODES];
  unsigned nnodes;
  int active;
} xcmd_metrics_worker;

typedef struct xcmd_metrics {
  uv_tcp_t server;
  xcmd_metrics_worker **workers;
  unsigned nworkers;
  int listening;
} xcmd_metrics;

/* On the worker's loop, before it runs. */
int xcmd_metrics_worker_init(xcmd_metrics_worker *w, uv_loop_t *loop,
                             xcm_cm *cm);
/* On the worker's loop, when it stops. */
void xcmd_metrics_worker_stop(xcmd_metrics_worker *w);

/* On the main loop. err names the problem. */
int xcmd_metrics_start(xcmd_metrics *m, uv_loop_t *loop, const char *host,
                       int port, char *err, size_t errlen);
void xcmd_metrics_stop(xcmd_metrics *m);

#endif
