/* The metrics endpoint: Prometheus text over a minimal HTTP listener on
 * the main thread. Workers own their statistics; each copies them into a
 * snapshot under its mutex every SNAPSHOT_MS, and a scrape sums the
 * snapshots, so no thread reads another's live state. */
#include "metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SNAPSHOT_MS 250
#define REQUEST_MAX 4096

typedef struct request {
  uv_tcp_t tcp;
  uv_write_t write;
  xcmd_metrics *m;
  char in[REQUEST_MAX];
  size_t len;
  char *out;
} request;

/* ---- the workers' side --------------------------------------------------- */

static void take_snapshot(uv_timer_t *t) {
  xcmd_metrics_worker *w = t->data;
  xcm_stats st;
  unsigned i, n;

  xcm_cm_stats(w->cm, &st, sizeof st);
  n = xcm_cm_upstream_links(w->cm);
  if (n > XCMD_METRICS_LINKS)
    n = XCMD_METRICS_LINKS;
  uv_mutex_lock(&w->lock);
  w->stats = st;
  w->nlinks = n;
  for (i = 0; i < n; i++) {
    xcm_link_info li;

    if (xcm_cm_upstream_link(w->cm, i, &li, sizeof li) == 0) {
      w->links[i].up = li.up;
      snprintf(w->links[i].resource, sizeof w->links[i].resource, "%s",
               li.resource ? li.resource : "");
    }
  }
  n = xcm_cm_upstream_nodes(w->cm);
  w->nnodes = n < XCMD_METRICS_NODES ? n : XCMD_METRICS_NODES;
  for (i = 0; i < w->nnodes; i++) {
    xcm_node_info ni;

    if (xcm_cm_upstream_node(w->cm, i, &ni, sizeof ni) != 0)
      continue;
    snprintf(w->nodes[i].server, sizeof w->nodes[i].server, "%s",
             ni.server ? ni.server : "");
    w->nodes[i].links_up = ni.links_up;
    w->nodes[i].sessions = ni.sessions;
    w->nodes[i].losses = ni.losses;
    w->nodes[i].sessions_lost = ni.sessions_lost;
  }
  uv_mutex_unlock(&w->lock);
}

int xcmd_metrics_worker_init(xcmd_metrics_worker *w, uv_loop_t *loop,
                             xcm_cm *cm) {
  memset(w, 0, sizeof(*w));
  w->cm = cm;
  if (uv_mutex_init(&w->lock) != 0)
    return -1;
  uv_timer_init(loop, &w->timer);
  w->timer.data = w;
  uv_timer_start(&w->timer, take_snapshot, 0, SNAPSHOT_MS);
  w->active = 1;
  return 0;
}

void xcmd_metrics_worker_stop(xcmd_metrics_worker *w) {
  if (w->active)
    uv_close((uv_handle_t *)&w->timer, NULL);
  w->active = 0;
}

/* ---- the scrape -----------------------------------------------------------
 */

static long resident_bytes(void) {
  long pages = 0, rss = 0;
  FILE *f = fopen("/proc/self/statm", "r");

  if (f == NULL)
    return 0;
  if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
    rss = 0;
  fclose(f);
  return rss * 4096;
}

static void put(char **p, size_t *left, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void put(char **p, size_t *left, const char *fmt, ...) {
  va_list ap;
  int n;

  va_start(ap, fmt);
  n = vsnprintf(*p, *left, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= *left)
    n = (int)(*left > 0 ? *left - 1 : 0);
  *p += n;
  *left -= (size_t)n;
}

static void counter(char **p, size_t *left, const char *name, const char *help,
                    const char *type, uint64_t v) {
  put(p, left, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", name, help, name, type,
      name, (unsigned long long)v);
}

/* Per upstream node (the servers of [upstream] servers, or the one
 * host), summed over the workers: each worker is a CM of its own with
 * links to every node. Workers list the same nodes in the same order. */
static void nodes(xcmd_metrics *m, char **p, size_t *left) {
  static const struct {
    const char *name, *help, *type;
  } fam[] = {
      {"xcm_upstream_node_links_up",
       "Upstream links up to the node, over all workers.", "gauge"},
      {"xcm_upstream_node_sessions", "Sessions on the node's links now.",
       "gauge"},
      {"xcm_upstream_node_losses_total",
       "Times the node went away (its last link lost, or system-shutdown), "
       "summed over workers.",
       "counter"},
      {"xcm_upstream_node_sessions_lost_total",
       "Sessions closed because their node went away.", "counter"},
  };
  uint64_t v[XCMD_METRICS_NODES][4];
  char server[XCMD_METRICS_NODES][272];
  unsigned n = 0, i, k, f;

  memset(v, 0, sizeof v);
  memset(server, 0, sizeof server);
  for (i = 0; i < m->nworkers; i++) {
    xcmd_metrics_worker *w = m->workers[i];

    uv_mutex_lock(&w->lock);
    for (k = 0; k < w->nnodes; k++) {
      if (server[k][0] == '\0')
        memcpy(server[k], w->nodes[k].server, sizeof server[k]);
      v[k][0] += w->nodes[k].links_up;
      v[k][1] += w->nodes[k].sessions;
      v[k][2] += w->nodes[k].losses;
      v[k][3] += w->nodes[k].sessions_lost;
    }
    if (w->nnodes > n)
      n = w->nnodes;
    uv_mutex_unlock(&w->lock);
  }
  for (f = 0; f < 4; f++) {
    put(p, left, "# HELP %s %s\n# TYPE %s %s\n", fam[f].name, fam[f].help,
        fam[f].name, fam[f].type);
    for (k = 0; k < n; k++)
      put(p, left, "%s{node=\"%s\"} %llu\n", fam[f].name, server[k],
          (unsigned long long)v[k][f]);
  }
}

/* Returns a malloc'ed page; the caller frees it. */
static char *render(xcmd_metrics *m, size_t *len) {
  size_t cap = 65536 + (size_t)m->nworkers * XCMD_METRICS_LINKS * 256, left;
  char *page = malloc(cap), *p = page;
  xcm_stats sum;
  unsigned i, k;
  int c;

  if (page == NULL)
    return NULL;
  left = cap;
  memset(&sum, 0, sizeof sum);
  for (i = 0; i < m->nworkers; i++) {
    xcmd_metrics_worker *w = m->workers[i];

    uv_mutex_lock(&w->lock);
    sum.clients_accepted += w->stats.clients_accepted;
    sum.clients_refused += w->stats.clients_refused;
    sum.clients_refused_total_limit += w->stats.clients_refused_total_limit;
    sum.clients_refused_address_limit += w->stats.clients_refused_address_limit;
    sum.header_timeouts += w->stats.header_timeouts;
    sum.auth_timeouts += w->stats.auth_timeouts;
    sum.reads_shaped += w->stats.reads_shaped;
    sum.proxy_headers_refused += w->stats.proxy_headers_refused;
    sum.proxy_untrusted += w->stats.proxy_untrusted;
    sum.http_connections_now += w->stats.http_connections_now;
    sum.http_refused_total_limit += w->stats.http_refused_total_limit;
    sum.http_refused_address_limit += w->stats.http_refused_address_limit;
    sum.http_header_timeouts += w->stats.http_header_timeouts;
    sum.http_idle_timeouts += w->stats.http_idle_timeouts;
    sum.http_requests_refused += w->stats.http_requests_refused;
    sum.websocket_upgrades += w->stats.websocket_upgrades;
    sum.bosh_sessions_created += w->stats.bosh_sessions_created;
    sum.bosh_requests += w->stats.bosh_requests;
    sum.bosh_empty_answers += w->stats.bosh_empty_answers;
    sum.bosh_repeated_rids += w->stats.bosh_repeated_rids;
    sum.bosh_inactivity_ends += w->stats.bosh_inactivity_ends;
    sum.bosh_requests_refused += w->stats.bosh_requests_refused;
    sum.bosh_refused_address_limit += w->stats.bosh_refused_address_limit;
    sum.clients_now += w->stats.clients_now;
    sum.clients_tls_now += w->stats.clients_tls_now;
    sum.sessions_tcp_now += w->stats.sessions_tcp_now;
    sum.sessions_websocket_now += w->stats.sessions_websocket_now;
    sum.sessions_bosh_now += w->stats.sessions_bosh_now;
    sum.sessions_custom_now += w->stats.sessions_custom_now;
    sum.sessions_authenticated += w->stats.sessions_authenticated;
    sum.stanzas_in += w->stats.stanzas_in;
    sum.stanzas_out += w->stats.stanzas_out;
    sum.bytes_in += w->stats.bytes_in;
    sum.bytes_out += w->stats.bytes_out;
    sum.failed_returned += w->stats.failed_returned;
    sum.sessions_lost += w->stats.sessions_lost;
    sum.sessions_drained += w->stats.sessions_drained;
    sum.hook_dropped += w->stats.hook_dropped;
    sum.xml_parsers_busy += w->stats.xml_parsers_busy;
    sum.sm_sessions_now += w->stats.sm_sessions_now;
    sum.sm_acks_requested += w->stats.sm_acks_requested;
    sum.sm_acks_received += w->stats.sm_acks_received;
    sum.sm_returned += w->stats.sm_returned;
    sum.sm_return_errors += w->stats.sm_return_errors;
    sum.sm_bad_h += w->stats.sm_bad_h;
    sum.sm_overflows += w->stats.sm_overflows;
    sum.csi_inactive_now += w->stats.csi_inactive_now;
    sum.csi_held += w->stats.csi_held;
    sum.csi_superseded += w->stats.csi_superseded;
    sum.csi_flushed += w->stats.csi_flushed;
    sum.csi_returned += w->stats.csi_returned;
    sum.csi_dropped += w->stats.csi_dropped;
    sum.csi_overflows += w->stats.csi_overflows;
    sum.sm_ack_timeouts += w->stats.sm_ack_timeouts;
    sum.sm_detached_now += w->stats.sm_detached_now;
    sum.sm_detached += w->stats.sm_detached;
    sum.sm_resumed += w->stats.sm_resumed;
    sum.sm_resume_failed += w->stats.sm_resume_failed;
    sum.sm_expired += w->stats.sm_expired;
    sum.sm_expired_returned += w->stats.sm_expired_returned;
    for (c = 0; c < XCM_COND_COUNT_; c++)
      sum.stream_errors[c] += w->stats.stream_errors[c];
    uv_mutex_unlock(&w->lock);
  }
  put(&p, &left,
      "# HELP xcm_connections Client connections now, by transport.\n"
      "# TYPE xcm_connections gauge\n"
      "xcm_connections{transport=\"plain\"} %llu\n"
      "xcm_connections{transport=\"tls\"} %llu\n",
      (unsigned long long)(sum.clients_now - sum.clients_tls_now),
      (unsigned long long)sum.clients_tls_now);
  put(&p, &left,
      "# HELP xcm_sessions Client sessions now, by what carries them (a "
      "TCP socket, TLS included; a WebSocket; a BOSH session; a custom "
      "transport).\n"
      "# TYPE xcm_sessions gauge\n"
      "xcm_sessions{transport=\"tcp\"} %llu\n"
      "xcm_sessions{transport=\"websocket\"} %llu\n"
      "xcm_sessions{transport=\"bosh\"} %llu\n"
      "xcm_sessions{transport=\"custom\"} %llu\n",
      (unsigned long long)sum.sessions_tcp_now,
      (unsigned long long)sum.sessions_websocket_now,
      (unsigned long long)sum.sessions_bosh_now,
      (unsigned long long)sum.sessions_custom_now);
  counter(&p, &left, "xcm_clients_accepted_total", "Client connections taken.",
          "counter", sum.clients_accepted);
  counter(&p, &left, "xcm_clients_refused_total",
          "Client connections refused at accept (a limit, or no memory).",
          "counter", sum.clients_refused);
  put(&p, &left,
      "# HELP xcm_clients_refused_by_limit_total Client connections "
      "refused at accept, by the limit reached.\n"
      "# TYPE xcm_clients_refused_by_limit_total counter\n"
      "xcm_clients_refused_by_limit_total{limit=\"max_clients\"} %llu\n"
      "xcm_clients_refused_by_limit_total{limit=\"max_per_address\"} %llu\n",
      (unsigned long long)sum.clients_refused_total_limit,
      (unsigned long long)sum.clients_refused_address_limit);
  put(&p, &left,
      "# HELP xcm_client_timeouts_total Clients closed with "
      "connection-timeout before logging in, by what they had not done.\n"
      "# TYPE xcm_client_timeouts_total counter\n"
      "xcm_client_timeouts_total{timeout=\"header\"} %llu\n"
      "xcm_client_timeouts_total{timeout=\"auth\"} %llu\n",
      (unsigned long long)sum.header_timeouts,
      (unsigned long long)sum.auth_timeouts);
  counter(&p, &left, "xcm_client_reads_shaped_total",
          "Times a client's reads were paused for sending above its rate "
          "(stanzas or bytes per second).",
          "counter", sum.reads_shaped);
  counter(&p, &left, "xcm_proxy_headers_refused_total",
          "Connections closed on a proxy_protocol listener for a missing, "
          "malformed or oversized PROXY header.",
          "counter", sum.proxy_headers_refused);
  counter(&p, &left, "xcm_proxy_untrusted_total",
          "Connections closed on a proxy_protocol listener at accept for "
          "coming from an address not in proxy_trusted.",
          "counter", sum.proxy_untrusted);
  put(&p, &left,
      "# HELP xcm_http_connections HTTP connections now (not those handed "
      "to a WebSocket session).\n"
      "# TYPE xcm_http_connections gauge\n"
      "xcm_http_connections %llu\n"
      "# HELP xcm_http_refused_by_limit_total HTTP connections refused "
      "with 503, by the limit reached.\n"
      "# TYPE xcm_http_refused_by_limit_total counter\n"
      "xcm_http_refused_by_limit_total{limit=\"http_max_connections\"} "
      "%llu\n"
      "xcm_http_refused_by_limit_total{limit=\"http_max_per_address\"} "
      "%llu\n"
      "# HELP xcm_http_timeouts_total HTTP connections closed for a slow "
      "request head (408) or idle between requests.\n"
      "# TYPE xcm_http_timeouts_total counter\n"
      "xcm_http_timeouts_total{timeout=\"header\"} %llu\n"
      "xcm_http_timeouts_total{timeout=\"idle\"} %llu\n",
      (unsigned long long)sum.http_connections_now,
      (unsigned long long)sum.http_refused_total_limit,
      (unsigned long long)sum.http_refused_address_limit,
      (unsigned long long)sum.http_header_timeouts,
      (unsigned long long)sum.http_idle_timeouts);
  counter(&p, &left, "xcm_http_requests_refused_total",
          "HTTP requests refused with a 4xx status (malformed, over a size "
          "limit, a bad Origin or WebSocket handshake).",
          "counter", sum.http_requests_refused);
  counter(&p, &left, "xcm_websocket_upgrades_total",
          "WebSocket handshakes accepted (101).", "counter",
          sum.websocket_upgrades);
  counter(&p, &left, "xcm_bosh_sessions_created_total",
          "BOSH sessions created (xcm_sessions{transport=\"bosh\"} has "
          "those open now).",
          "counter", sum.bosh_sessions_created);
  counter(&p, &left, "xcm_bosh_requests_total", "BOSH requests read.",
          "counter", sum.bosh_requests);
  counter(&p, &left, "xcm_bosh_empty_answers_total",
          "BOSH requests answered empty after wait (or displaced by a "
          "newer one beyond hold).",
          "counter", sum.bosh_empty_answers);
  counter(&p, &left, "xcm_bosh_repeated_rids_total",
          "BOSH requests that repeated a rid, answered again.", "counter",
          sum.bosh_repeated_rids);
  counter(&p, &left, "xcm_bosh_inactivity_ends_total",
          "BOSH sessions ended because their client stopped sending "
          "requests (bosh_inactivity).",
          "counter", sum.bosh_inactivity_ends);
  counter(&p, &left, "xcm_bosh_requests_refused_total",
          "BOSH requests refused: unknown sid, rid out of the window, not a "
          "body, too many at once, polling too often, over "
          "bosh_max_per_address (also counted apart).",
          "counter", sum.bosh_requests_refused);
  counter(&p, &left, "xcm_bosh_refused_address_limit_total",
          "BOSH sessions refused at bosh_max_per_address.", "counter",
          sum.bosh_refused_address_limit);
  counter(&p, &left, "xcm_sessions_authenticated_total",
          "Sessions that authenticated.", "counter",
          sum.sessions_authenticated);
  counter(&p, &left, "xcm_sessions_lost_total",
          "Sessions lost with every upstream link, or with their node of a "
          "cluster.",
          "counter", sum.sessions_lost);
  counter(&p, &left, "xcm_sessions_drained_total",
          "Sessions ended by a drain (SIGUSR2) with system-shutdown.",
          "counter", sum.sessions_drained);
  put(&p, &left,
      "# HELP xcm_stanzas_total Stanzas routed.\n"
      "# TYPE xcm_stanzas_total counter\n"
      "xcm_stanzas_total{direction=\"to_server\"} %llu\n"
      "xcm_stanzas_total{direction=\"to_client\"} %llu\n"
      "# HELP xcm_stanza_bytes_total Bytes of stanzas routed.\n"
      "# TYPE xcm_stanza_bytes_total counter\n"
      "xcm_stanza_bytes_total{direction=\"to_server\"} %llu\n"
      "xcm_stanza_bytes_total{direction=\"to_client\"} %llu\n",
      (unsigned long long)sum.stanzas_in, (unsigned long long)sum.stanzas_out,
      (unsigned long long)sum.bytes_in, (unsigned long long)sum.bytes_out);
  counter(&p, &left, "xcm_failed_returned_total",
          "Messages returned to the server with <failed/>.", "counter",
          sum.failed_returned);
  counter(&p, &left, "xcm_sm_sessions",
          "Clients with XEP-0198 acknowledgements enabled now.", "gauge",
          sum.sm_sessions_now);
  put(&p, &left,
      "# HELP xcm_sm_acks_total XEP-0198 acknowledgements: <r/> sent "
      "to clients, <a/> received from them.\n"
      "# TYPE xcm_sm_acks_total counter\n"
      "xcm_sm_acks_total{kind=\"requested\"} %llu\n"
      "xcm_sm_acks_total{kind=\"received\"} %llu\n",
      (unsigned long long)sum.sm_acks_requested,
      (unsigned long long)sum.sm_acks_received);
  counter(&p, &left, "xcm_sm_returned_total",
          "Unacknowledged stanzas returned to the server when a client "
          "ended (messages as <failed/>, iq get/set answered).",
          "counter", sum.sm_returned);
  counter(&p, &left, "xcm_sm_return_errors_total",
          "Unacknowledged stanzas that could not be returned (logged).",
          "counter", sum.sm_return_errors);
  put(&p, &left,
      "# HELP xcm_sm_clients_ended_total Clients ended for stream "
      "management: an h past what was sent, an unacked queue over its "
      "bound.\n"
      "# TYPE xcm_sm_clients_ended_total counter\n"
      "xcm_sm_clients_ended_total{reason=\"bad_h\"} %llu\n"
      "xcm_sm_clients_ended_total{reason=\"overflow\"} %llu\n",
      (unsigned long long)sum.sm_bad_h, (unsigned long long)sum.sm_overflows);
  counter(&p, &left, "xcm_csi_inactive_clients",
          "Clients that said they are inactive (XEP-0352) now.", "gauge",
          sum.csi_inactive_now);
  put(&p, &left,
      "# HELP xcm_csi_stanzas_total Stanzas held for inactive clients "
      "(XEP-0352), and what became of them: dropped for a newer presence "
      "from the same sender, written once something made them go, "
      "messages returned to the server and presences dropped when the "
      "client ended.\n"
      "# TYPE xcm_csi_stanzas_total counter\n"
      "xcm_csi_stanzas_total{outcome=\"held\"} %llu\n"
      "xcm_csi_stanzas_total{outcome=\"superseded\"} %llu\n"
      "xcm_csi_stanzas_total{outcome=\"flushed\"} %llu\n"
      "xcm_csi_stanzas_total{outcome=\"returned\"} %llu\n"
      "xcm_csi_stanzas_total{outcome=\"dropped\"} %llu\n",
      (unsigned long long)sum.csi_held, (unsigned long long)sum.csi_superseded,
      (unsigned long long)sum.csi_flushed, (unsigned long long)sum.csi_returned,
      (unsigned long long)sum.csi_dropped);
  counter(&p, &left, "xcm_csi_overflows_total",
          "Flushes of an inactive client's held stanzas because they "
          "reached csi max_held or max_held_bytes.",
          "counter", sum.csi_overflows);
  counter(&p, &left, "xcm_sm_ack_timeouts_total",
          "Client connections dropped for leaving an <r/> unanswered "
          "[stream_management] ack_timeout.",
          "counter", sum.sm_ack_timeouts);
  counter(&p, &left, "xcm_sm_detached_now",
          "Sessions waiting now for their client to resume them.", "gauge",
          sum.sm_detached_now);
  counter(&p, &left, "xcm_sm_detached_total",
          "Client connections that dropped and left a session waiting to "
          "be resumed.",
          "counter", sum.sm_detached);
  counter(&p, &left, "xcm_sm_resumed_total", "Sessions resumed.", "counter",
          sum.sm_resumed);
  counter(&p, &left, "xcm_sm_resume_failed_total",
          "<resume/> refused: an unknown or expired id, another user's, an "
          "h past what was sent.",
          "counter", sum.sm_resume_failed);
  counter(&p, &left, "xcm_sm_expired_total",
          "Sessions not resumed within [stream_management] resume.", "counter",
          sum.sm_expired);
  counter(&p, &left, "xcm_sm_expired_returned_total",
          "Unacknowledged stanzas those sessions returned to the server.",
          "counter", sum.sm_expired_returned);
  put(&p, &left,
      "# HELP xcm_stream_errors_total Stream errors sent to "
      "clients, by condition.\n"
      "# TYPE xcm_stream_errors_total counter\n");
  for (c = 1; c < XCM_COND_COUNT_; c++)
    if (sum.stream_errors[c] != 0)
      put(&p, &left, "xcm_stream_errors_total{condition=\"%s\"} %llu\n",
          xcm_cond_name((xcm_cond)c), (unsigned long long)sum.stream_errors[c]);
  put(&p, &left,
      "# HELP xcm_upstream_link_up Upstream connections, 1 when "
      "up.\n# TYPE xcm_upstream_link_up gauge\n");
  for (i = 0; i < m->nworkers; i++) {
    xcmd_metrics_worker *w = m->workers[i];

    uv_mutex_lock(&w->lock);
    for (k = 0; k < w->nlinks; k++)
      put(&p, &left,
          "xcm_upstream_link_up{worker=\"%u\",link=\"%u\",resource=\"%s\"} "
          "%d\n",
          i + 1, k + 1, w->links[k].resource, w->links[k].up);
    uv_mutex_unlock(&w->lock);
  }
  nodes(m, &p, &left);
  counter(&p, &left, "xcm_xml_parsers_busy",
          "XML parsers in use (about 15 KB each): upstream links, clients "
          "mid-stanza or logging in.",
          "gauge", sum.xml_parsers_busy);
  counter(&p, &left, "xcm_resident_memory_bytes", "Resident memory of xcmd.",
          "gauge", (uint64_t)resident_bytes());
  *len = (size_t)(p - page);
  return page;
}

static void request_closed(uv_handle_t *h) {
  request *r = h->data;

  free(r->out);
  free(r);
}

static void written(uv_write_t *w, int status) {
  request *r = w->data;

  (void)status;
  uv_close((uv_handle_t *)&r->tcp, request_closed);
}

static void respond(request *r) {
  static const char not_found[] = "HTTP/1.1 404 Not Found\r\nContent-Length: "
                                  "0\r\nConnection: close\r\n\r\n";
  size_t body_len = 0, head_len;
  char head[256], *body;
  uv_buf_t b;

  uv_read_stop((uv_stream_t *)&r->tcp);
  if (strncmp(r->in, "GET /metrics ", 13) != 0) {
    r->out = malloc(sizeof not_found);
    memcpy(r->out, not_found, sizeof not_found);
    b = uv_buf_init(r->out, sizeof not_found - 1);
  } else {
    body = render(r->m, &body_len);
    head_len = (size_t)snprintf(
        head, sizeof head,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
        "Content-Length: %zu\r\nConnection: close\r\n\r\n",
        body_len);
    r->out = malloc(head_len + body_len);
    if (r->out == NULL || body == NULL) {
      free(body);
      uv_close((uv_handle_t *)&r->tcp, request_closed);
      return;
    }
    memcpy(r->out, head, head_len);
    memcpy(r->out + head_len, body, body_len);
    free(body);
    b = uv_buf_init(r->out, (unsigned)(head_len + body_len));
  }
  r->write.data = r;
  if (uv_write(&r->write, (uv_stream_t *)&r->tcp, &b, 1, written) != 0)
    uv_close((uv_handle_t *)&r->tcp, request_closed);
}

static void on_alloc(uv_handle_t *h, size_t n, uv_buf_t *buf) {
  request *r = h->data;

  (void)n;
  *buf = uv_buf_init(r->in + r->len, (unsigned)(REQUEST_MAX - 1 - r->len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  request *r = s->data;

  (void)buf;
  if (n < 0 || (n == 0 && r->len == REQUEST_MAX - 1)) {
    uv_close((uv_handle_t *)&r->tcp, request_closed);
    return;
  }
  r->len += (size_t)n;
  r->in[r->len] = '\0';
  /* The request line is all we need; headers are read to their end only
   * so the client is not reset mid-send. */
  if (strstr(r->in, "\r\n\r\n") != NULL || r->len == REQUEST_MAX - 1)
    respond(r);
}

static void on_connection(uv_stream_t *server, int status) {
  xcmd_metrics *m = server->data;
  request *r;

  if (status != 0)
    return;
  r = calloc(1, sizeof(*r));
  if (r == NULL)
    return;
  r->m = m;
  uv_tcp_init(server->loop, &r->tcp);
  r->tcp.data = r;
  if (uv_accept(server, (uv_stream_t *)&r->tcp) != 0 ||
      uv_read_start((uv_stream_t *)&r->tcp, on_alloc, on_read) != 0)
    uv_close((uv_handle_t *)&r->tcp, request_closed);
}

int xcmd_metrics_start(xcmd_metrics *m, uv_loop_t *loop, const char *host,
                       int port, char *err, size_t errlen) {
  struct sockaddr_storage ss;
  int e;

  if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
      uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0) {
    snprintf(err, errlen, "[metrics] host '%s' is not an address", host);
    return -1;
  }
  uv_tcp_init(loop, &m->server);
  m->server.data = m;
  e = uv_tcp_bind(&m->server, (struct sockaddr *)&ss, 0);
  if (e == 0)
    e = uv_listen((uv_stream_t *)&m->server, 16, on_connection);
  if (e != 0) {
    snprintf(err, errlen, "cannot serve metrics on %s port %d: %s", host, port,
             uv_strerror(e));
    uv_close((uv_handle_t *)&m->server, NULL);
    return -1;
  }
  m->listening = 1;
  return 0;
}

void xcmd_metrics_stop(xcmd_metrics *m) {
  if (m->listening)
    uv_close((uv_handle_t *)&m->server, NULL);
  m->listening = 0;
}
