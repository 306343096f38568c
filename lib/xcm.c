/* The public face: one connection manager on one loop. */
#define _GNU_SOURCE /* accept4 */
#include "xcm/xcm.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "attach.h"
#include "core/ctx.h"
#include "http/http.h"
#include "web/bosh.h"
#include "options.h"
#include "session/group.h"
#include "session/session.h"
#include "transport/stream.h"
#include "transport/tls.h"
#include "upstream/pool.h"
#include "util/alloc.h"
#include "util/sized.h"
#include "web/web.h"
#include "xml/reader.h"

_Static_assert(XCM_COND_COUNT_ <= XCM_STATS_MAX_COND,
               "xcm_stats.stream_errors has no room for every xcm_cond");

#define MAX_LISTENERS 16

/* Out of file descriptors at accept time: stop accepting (and logging
 * about it) for this many ms. */
#define ACCEPT_BACKOFF_MS 100
/* Connections accepted per wakeup, so that a flood of them shares the
 * loop with the clients already in. */
#define ACCEPT_BATCH 64
/* A drain ends its due sessions this often (or at every turn of a
 * shorter period). */
#define DRAIN_TICK_MS 100

typedef struct listener {
  xcm_cm *cm;
  uv_tcp_t tcp;   /* owns the listening socket */
  uv_poll_t poll; /* readable: connections to accept */
  uv_timer_t backoff;
  xcm_client_cfg cfg;
  xcm_tls_config *tls;
  char *cert_file; /* kept for xcm_cm_reload_certs() */
  char *key_file;
  char *sni_cert[16]; /* more certificates, by name */
  char *sni_key[16];
  unsigned nsni;
  int port;
  int paused;
  /* An HTTP listener (xcm_listen_options.http): its settings and its
   * connections; NULL on an XMPP one. */
  xcm_http_cfg *http_cfg;
  xcm_http_server *http;
  char *public_url;
  xcm_web_listener web; /* the ud of its web layers' handlers */
} listener;

struct xcm_cm {
  xcm_ctx ctx;
  xcm_options opt;
  char *strings;
  xcm_pool *pool;
  xcm_sessions sessions;
  xcm_counters counters; /* the session layer's, for xcm_cm_stats */
  xcm_session_fn session_events;
  void *session_events_ud;
  xcm_stanza_hook hook;
  void *hook_ud;
  listener *listeners[MAX_LISTENERS];
  unsigned nlisteners;
  int started;
  int stopping;
  int open_handles; /* listeners' handles, the two timers, the pool, and
                       the holds of web connections (attach.h) */
  uv_timer_t drain;
  unsigned drain_ms;
  xcm_shutdown_fn shutdown_cb;
  xcm_link_fn link_events;
  void *link_events_ud;
  xcm_node_fn node_events;
  void *node_events_ud;
  unsigned nlinks, nnodes; /* the pool's, readable after it is gone */
  void *shutdown_ud;
  /* xcm_cm_drain: listeners closed, sessions ended on a schedule. */
  int draining;
  int listeners_closed;
  uv_timer_t tick;
  uint64_t drain_start; /* uv_now at xcm_cm_drain */
  unsigned drain_period;
  size_t drain_total; /* sessions when the drain began */
  uint64_t sessions_drained;
  xcm_drain_fn drain_cb;
  void *drain_ud;
  /* xcm_options.resume_group: connections moved here to resume a session
   * of this instance arrive through inbox (session/group.h). */
  uv_async_t inbox;
  int in_group;
};

static void drop_moved(xcm_group_item *it) {
  xcm__client_moved_free((xcm_client_moved *)it);
}

/* Connections moved here from other instances of the group. */
static void on_inbox(uv_async_t *a) {
  xcm_cm *cm = a->data;
  xcm_group_item *it, *next;

  if (!cm->in_group)
    return;
  for (it = xcm__group_take(cm->sessions.group, cm->sessions.group_index);
       it != NULL; it = next) {
    next = it->next;
    xcm__sessions_adopt(&cm->sessions, (xcm_client_moved *)it);
  }
}

static const xcm_client_cfg *listener_cfg(void *ud, unsigned i) {
  xcm_cm *cm = ud;

  return i < cm->nlisteners && cm->listeners[i]->http == NULL
             ? &cm->listeners[i]->cfg
             : NULL;
}

static void errmsg(char *buf, size_t len, const char *fmt, const char *arg) {
  if (buf != NULL && len > 0)
    snprintf(buf, len, fmt, arg);
}

static const char *keep(char **cursor, const char *s) {
  char *p = *cursor;
  size_t n;

  if (s == NULL)
    return NULL;
  n = strlen(s) + 1;
  memcpy(p, s, n);
  *cursor += n;
  return p;
}

static size_t slen(const char *s) {
  return s ? strlen(s) + 1 : 0;
}

static int copy_options(xcm_cm *cm, const xcm_options *o) {
  char *cursor;
  size_t size = slen(o->domain) + slen(o->server_host) + slen(o->name) +
                slen(o->secret) + slen(o->resource_prefix) +
                slen(o->upstream_ca_file) + slen(o->upstream_fingerprint) +
                slen(o->upstream_servers) + slen(o->csi_hold_ns) +
                slen(o->csi_urgent_ns);

  cm->strings = xcm__alloc(o->alloc, size);
  if (cm->strings == NULL)
    return XCM_ENOMEM;
  cm->opt = *o;
  cursor = cm->strings;
  cm->opt.domain = keep(&cursor, o->domain);
  cm->opt.server_host = keep(&cursor, o->server_host);
  cm->opt.name = keep(&cursor, o->name);
  cm->opt.secret = keep(&cursor, o->secret);
  cm->opt.resource_prefix = keep(&cursor, o->resource_prefix);
  cm->opt.upstream_ca_file = keep(&cursor, o->upstream_ca_file);
  cm->opt.upstream_fingerprint = keep(&cursor, o->upstream_fingerprint);
  cm->opt.upstream_servers = keep(&cursor, o->upstream_servers);
  cm->opt.csi_hold_ns = keep(&cursor, o->csi_hold_ns);
  cm->opt.csi_urgent_ns = keep(&cursor, o->csi_urgent_ns);
  return 0;
}

/* What clients are offered, or NULL while no upstream node takes
 * sessions (no link up, or only links of a node shutting down): a
 * policy remembered from a link that died would only lead them to a
 * session that cannot be created. */
static const xcm_policy *current_policy(void *ud) {
  xcm_cm *cm = ud;

  if (cm->pool == NULL || xcm__pool_nodes_up(cm->pool) == 0)
    return NULL;
  return xcm__pool_policy(cm->pool);
}

static void on_link(void *ud, unsigned index, const char *resource, int up,
                    int err, const char *why) {
  xcm_cm *cm = ud;

  (void)err;
  if (cm->link_events != NULL)
    cm->link_events(cm->link_events_ud, index, resource, up, why, NULL);
  if (up && xcm__pool_links_up(cm->pool) == 1)
    xcm__sessions_retry(&cm->sessions);
  if (up)
    xcm__log(&cm->ctx, XCM_LOG_INFO, "upstream %s is up%s%s", resource,
             xcm__pool_link_tls(cm->pool, index) ? " (TLS)" : "",
             xcm__pool_link_zlib(cm->pool, index) ? " (zlib)" : "");
  else
    xcm__log(&cm->ctx, XCM_LOG_WARN, "upstream %s is down: %s", resource,
             why ? why : "");
}

static void on_policy(void *ud, const xcm_policy *p) {
  xcm_cm *cm = ud;
  char text[512];

  if (cm->link_events != NULL)
    cm->link_events(cm->link_events_ud, 0, NULL, 1, NULL, p);
  xcm_policy_describe(text, sizeof text, p);
  xcm__log(&cm->ctx, XCM_LOG_INFO, "client policy from the server: %s", text);
  /* On a first start the policy comes just after the link: clients that
   * were waiting for it can go on now. */
  xcm__sessions_retry(&cm->sessions);
}

static void node_info(const xcm_cm *cm, unsigned i, xcm_node_info *info) {
  xcm_pool_node_view v;

  memset(info, 0, sizeof *info);
  if (cm->pool == NULL || xcm__pool_node(cm->pool, i, &v) != 0) {
    info->first_link = i * cm->opt.connections;
    info->links = cm->opt.connections;
    return;
  }
  info->server = v.label;
  info->first_link = v.first_link;
  info->links = v.links;
  info->links_up = v.links_up;
  info->up = v.up;
  info->sessions = v.sessions;
  info->losses = v.losses;
  info->sessions_lost = v.sessions_lost;
}

static void on_node(void *ud, unsigned i, int up, size_t lost) {
  xcm_cm *cm = ud;
  xcm_node_info info;

  node_info(cm, i, &info);
  /* One server's links say it all already (on_link). */
  if (cm->nnodes > 1 && up)
    xcm__log(&cm->ctx, XCM_LOG_INFO,
             "upstream node %s is up: %u of %u nodes take sessions",
             info.server, xcm__pool_nodes_up(cm->pool), cm->nnodes);
  else if (cm->nnodes > 1)
    xcm__log(&cm->ctx, XCM_LOG_WARN,
             "upstream node %s went away: its %zu session%s closed with "
             "remote-connection-failed (clients reconnect to the others); "
             "%u of %u nodes take sessions",
             info.server, lost, lost == 1 ? " was" : "s were",
             xcm__pool_nodes_up(cm->pool), cm->nnodes);
  if (cm->node_events != NULL)
    cm->node_events(cm->node_events_ud, i, up, &info);
  /* The first node to take sessions again (after its shutdown, links
   * may have been up all along): clients waiting for one go on. */
  if (up && xcm__pool_nodes_up(cm->pool) == 1)
    xcm__sessions_retry(&cm->sessions);
}

static const xcm_pool_events pool_events = {on_link, on_policy, on_node};

static void free_failed(xcm_ctx *ctx) {
  xcm_cm *cm = (xcm_cm *)ctx;
  const xcm_allocator *alloc = cm->opt.alloc;

  xcm__free(alloc, cm->strings);
  xcm__free(alloc, cm);
}

/* upstream_fingerprint: well-formed, and not set beside what it
 * replaces. */
int xcm_cm_new(xcm_cm **out, uv_loop_t *loop, const xcm_options *opt,
               char *errbuf, size_t errlen) {
  xcm_cm *cm;
  xcm_options o;
  xcm_pool_options po;
  unsigned char pin[32];
  int err;

  *out = NULL;
  err = xcm__options_resolve(&o, opt, errbuf, errlen);
  if (err != 0)
    return err;
  cm = xcm__calloc(o.alloc, sizeof(*cm));
  if (cm == NULL)
    return XCM_ENOMEM;
  err = copy_options(cm, &o);
  if (err == 0)
    err = xcm__ctx_init(&cm->ctx, loop, o.alloc);
  if (err != 0) {
    xcm__free(o.alloc, cm->strings);
    xcm__free(o.alloc, cm);
    return err;
  }
  cm->ctx.log = o.log;
  cm->ctx.log_ud = o.log_ud;
  xcm__xml_pool_set_scan(cm->ctx.xml, !o.expat_only);
  cm->ctx.log_level = o.log_level;

  /* Strings from the instance's own copy. */
  xcm__pool_options_from(&po, &cm->opt);
  if (cm->opt.upstream_fingerprint != NULL) {
    /* Checked by xcm__options_resolve; the pool copies the bytes. */
    xcm__tls_parse_fingerprint(cm->opt.upstream_fingerprint, pin);
    po.pin_sha256 = pin;
    /* Optional TLS would let anyone in the path strip STARTTLS from the
     * features and meet no pin at all. */
    po.tls = XCM_UP_TLS_REQUIRED;
  }
  err = xcm__pool_new(&cm->pool, &cm->ctx, &po, &pool_events, cm);
  if (err != 0) {
    errmsg(errbuf, errlen, "cannot set up the upstream pool: %s",
           xcm_strerror(err));
    /* The context's handle closes on the next loop turn; the instance
     * is freed then. */
    xcm__ctx_close(&cm->ctx, free_failed);
    return err;
  }
  xcm__sessions_init(&cm->sessions, &cm->ctx, &cm->counters);
  cm->sessions.pool = cm->pool;
  cm->nlinks = xcm__pool_links(cm->pool);
  cm->nnodes = xcm__pool_nodes(cm->pool);
  cm->sessions.max_clients = o.max_clients;
  cm->sessions.max_per_address = o.max_per_address;
  cm->sessions.resume_ms = o.sm_enable ? o.sm_resume_ms : 0;
  cm->sessions.sm_max_unacked = o.sm_max_unacked;
  cm->sessions.sm_max_unacked_bytes = o.sm_max_unacked_bytes;
  uv_timer_init(loop, &cm->drain);
  cm->drain.data = cm;
  uv_timer_init(loop, &cm->tick);
  cm->tick.data = cm;
  if (o.resume_group != NULL) {
    uv_async_init(loop, &cm->inbox, on_inbox);
    cm->inbox.data = cm;
    if (xcm__group_join(o.resume_group, &cm->inbox,
                        &cm->sessions.group_index) == 0) {
      cm->in_group = 1;
      cm->sessions.group = o.resume_group;
      cm->sessions.listener_cfg = listener_cfg;
      cm->sessions.listener_cfg_ud = cm;
    } else {
      /* The shutdown closes the handle all the same. */
      xcm__log(&cm->ctx, XCM_LOG_ERROR,
               "resume_group: the group holds %d instances already; this "
               "one resumes only its own sessions",
               XCM_GROUP_MAX);
    }
  }
  *out = cm;
  return 0;
}

/* ---- listeners ---------------------------------------------------------- */

static void on_readable(uv_poll_t *p, int status, int events);

static void free_handle(uv_handle_t *h) {
  xcm_cm *cm = h->data;

  xcm__free(cm->ctx.alloc, h);
}

static void resume_accept(uv_timer_t *t) {
  listener *l = t->data;

  l->paused = 0;
  if (!l->cm->stopping)
    uv_poll_start(&l->poll, UV_READABLE, on_readable);
}

/* Out of descriptors (or kernel memory). The listener accepts by itself
 * because libuv's accept, on EMFILE, sheds the waiting connections with
 * a spare descriptor and says nothing (and, without that spare, retries
 * in a busy loop). Here the listener says so once and stops accepting
 * for ACCEPT_BACKOFF_MS: the socket stays readable, so polling it
 * meanwhile would spin; the clients wait in the backlog instead. */
static void out_of_descriptors(listener *l, int err) {
  xcm__log(&l->cm->ctx, XCM_LOG_WARN,
           "accept: %s: not accepting clients for %d ms; raise the file "
           "limit",
           uv_strerror(err), ACCEPT_BACKOFF_MS);
  l->paused = 1;
  uv_poll_stop(&l->poll);
  uv_timer_start(&l->backoff, resume_accept, ACCEPT_BACKOFF_MS, 0);
}

static void on_readable(uv_poll_t *p, int status, int events) {
  listener *l = p->data;
  xcm_cm *cm = l->cm;
  uv_os_fd_t lfd;
  int i;

  (void)events;
  if (status != 0 || cm->stopping ||
      uv_fileno((uv_handle_t *)&l->tcp, &lfd) != 0)
    return;
  for (i = 0; i < ACCEPT_BATCH; i++) {
    /* Close-on-exec and non-blocking from the start: two system calls
     * fewer per client. */
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    uv_tcp_t *tcp;

    if (fd < 0) {
      int e = errno;

      if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
        out_of_descriptors(l, uv_translate_sys_error(e));
        return;
      }
      if (e == EAGAIN || e == EWOULDBLOCK)
        return;
      continue; /* aborted, or a network error of that connection */
    }
    tcp = xcm__alloc(cm->ctx.alloc, sizeof(*tcp));
    if (tcp == NULL) {
      close(fd);
      continue;
    }
    uv_tcp_init(cm->ctx.loop, tcp);
    if (uv_tcp_open(tcp, fd) != 0) {
      close(fd);
      tcp->data = cm;
      uv_close((uv_handle_t *)tcp, free_handle);
      continue;
    }
    if (l->http != NULL)
      xcm__http_accept(l->http, tcp);
    else
      xcm__session_accept(&cm->sessions, &l->cfg, tcp); /* TCP_NODELAY */
  }
}

/* Bind at once, so that a port in use is reported now (libuv's bind
 * leaves that error for uv_listen, which the listener does not use). */
static int bind_now(listener *l, const struct sockaddr_storage *ss) {
  socklen_t len = ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                            : sizeof(struct sockaddr_in);
  uv_os_fd_t fd;
  int on = 1, err = uv_fileno((uv_handle_t *)&l->tcp, &fd);

  if (err != 0)
    return err;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  if (bind(fd, (const struct sockaddr *)ss, len) != 0)
    return uv_translate_sys_error(errno);
  return 0;
}

static int start_accepting(listener *l) {
  uv_os_fd_t fd;
  int err = uv_fileno((uv_handle_t *)&l->tcp, &fd);

  if (err == 0 && listen(fd, 511) != 0)
    err = uv_translate_sys_error(errno);
  if (err == 0)
    err = uv_poll_start(&l->poll, UV_READABLE, on_readable);
  return err;
}

static void http_free(listener *l) {
  const xcm_allocator *a = l->cm->ctx.alloc;

  xcm__http_server_free(l->http);
  xcm__bosh_free(l->web.bosh);
  if (l->http_cfg != NULL)
    xcm__http_cfg_free(l->http_cfg, a);
  xcm__free(a, l->http_cfg);
  xcm__free(a, l->public_url);
}

/* A BOSH session's client, served with its listener's settings. */
static int bosh_attach(void *ud, const xcm_msg_transport *t, const char *peer,
                       xcm_client **out) {
  listener *l = ud;
  unsigned i;

  for (i = 0; i < l->cm->nlisteners; i++)
    if (l->cm->listeners[i] == l)
      return xcm__cm_attach_msg(l->cm, i, t, peer, out);
  return XCM_ECLOSED;
}

/* BOSH on an HTTP listener (lib/web/bosh.h), from lo's bosh_* fields
 * (checked by xcm__listen_options_resolve). */
static int bosh_init(xcm_cm *cm, listener *l, const xcm_listen_options *lo) {
  xcm_bosh_cfg bc;

  memset(&bc, 0, sizeof bc);
  bc.wait = lo->bosh_wait;
  bc.hold = lo->bosh_hold;
  bc.requests = lo->bosh_requests;
  bc.inactivity = lo->bosh_inactivity;
  bc.polling = lo->bosh_polling;
  bc.maxpause = lo->bosh_maxpause == XCM_UNLIMITED ? 0 : lo->bosh_maxpause;
  bc.max_per_address = lo->bosh_max_per_address;
  bc.max_child = cm->opt.max_stanza;
  bc.max_depth = l->cfg.max_depth + 1;
  return xcm__bosh_new(&l->web.bosh, &cm->ctx, &bc, bosh_attach, l);
}

/* The HTTP side of a listener (lib/http/): settings from lo, checked
 * already by xcm__listen_options_resolve. */
static int http_init(xcm_cm *cm, listener *l, const xcm_listen_options *lo,
                     char *errbuf, size_t errlen) {
  const xcm_allocator *a = cm->ctx.alloc;
  xcm_http_cfg *hc = xcm__calloc(a, sizeof(*hc));
  xcm_http_handlers h;
  int err;

  l->http_cfg = hc;
  if (hc == NULL)
    return XCM_ENOMEM;
  err = xcm__http_cfg_parse(hc, a, lo->http_bosh_path, lo->http_ws_paths,
                            lo->http_origins, errbuf, errlen);
  if (err != 0)
    return err;
  if (lo->http_public_url != NULL) {
    l->public_url =
        xcm__strndup(a, lo->http_public_url, strlen(lo->http_public_url));
    if (l->public_url == NULL)
      return XCM_ENOMEM;
  }
  hc->public_url = l->public_url;
  hc->tls = l->tls;
  hc->proxy_protocol = lo->proxy_protocol;
  hc->ntrusted =
      (unsigned)xcm__proxy_trust_parse(lo->proxy_trusted, hc->trusted, NULL, 0);
  hc->max_header = lo->http_max_header;
  /* A BOSH body carries one stanza at most, in its <body/> envelope. */
  hc->max_body =
      lo->http_max_body != 0 ? lo->http_max_body : cm->opt.max_stanza + 1024;
  hc->max_connections = lo->http_max_connections;
  hc->max_per_address = lo->http_max_per_address;
  hc->header_timeout_ms = lo->http_header_timeout_ms;
  hc->idle_timeout_ms = lo->http_idle_timeout_ms;
  err = xcm__http_server_new(&l->http, &cm->ctx, hc);
  if (err != 0)
    return err;
  /* The web layers (lib/web/), each with its handlers; the listener
   * joins the instance as listener cm->nlisteners. */
  l->web.cm = cm;
  l->web.ctx = &cm->ctx;
  l->web.index = cm->nlisteners;
  l->web.max_stanza = cm->opt.max_stanza;
  l->web.max_out = cm->opt.max_client_out;
  memset(&h, 0, sizeof h);
  h.ud = &l->web;
  h.websocket = xcm__web_websocket; /* web/websocket.c */
  if (hc->bosh_path[0] != '\0') {
    err = bosh_init(cm, l, lo);
    if (err != 0)
      return err;
    h.bosh = xcm__web_bosh; /* web/bosh.c */
    h.gone = xcm__web_bosh_gone;
  }
  xcm__http_server_set_handlers(l->http, &h);
  return 0;
}

/* A listener that never joined the instance. */
static void orphan_free(listener *l) {
  http_free(l);
  xcm__free(l->cm->ctx.alloc, l->cert_file);
  xcm__free(l->cm->ctx.alloc, l->key_file);
  if (l->tls != NULL)
    xcm__tls_config_unref(l->tls);
  xcm__free(l->cm->ctx.alloc, l);
}

static void orphan_closed(uv_handle_t *h) {
  orphan_free(h->data);
}

int xcm_cm_listen(xcm_cm *cm, const xcm_listen_options *in, char *errbuf,
                  size_t errlen) {
  struct sockaddr_storage ss;
  xcm_listen_options opts;
  const xcm_listen_options *lo = &opts;
  const char *host;
  int port;
  listener *l;
  int err, namelen;

  if (cm->stopping || cm->draining)
    return XCM_ECLOSED;
  err = xcm__listen_options_resolve(&opts, in, errbuf, errlen);
  if (err != 0)
    return err;
  host = lo->host;
  port = lo->port;
  if (cm->nlisteners == MAX_LISTENERS)
    return XCM_ELIMIT;
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
      uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0) {
    errmsg(errbuf, errlen, "listen: '%s' is not an IPv4 or IPv6 address", host);
    return XCM_EINVAL;
  }
  l = xcm__calloc(cm->ctx.alloc, sizeof(*l));
  if (l == NULL)
    return XCM_ENOMEM;
  l->cm = cm;
  if (lo->cert_file != NULL) {
    xcm_tls_options to;

    memset(&to, 0, sizeof to);
    to.cert_file = lo->cert_file;
    to.key_file = lo->key_file;
    /* Browsers offer h2 and http/1.1 by ALPN: agree on the second. */
    to.alpn = lo->http ? "http/1.1" : NULL;
    err = xcm__tls_config_new(&l->tls, &cm->ctx, 1, &to, errbuf, errlen);
    if (err != 0) {
      xcm__free(cm->ctx.alloc, l);
      return err;
    }
    l->cert_file =
        xcm__strndup(cm->ctx.alloc, lo->cert_file, strlen(lo->cert_file));
    l->key_file = xcm__strndup(cm->ctx.alloc, lo->key_file,
                               lo->key_file ? strlen(lo->key_file) : 0);
    if (l->cert_file == NULL || l->key_file == NULL) {
      xcm__free(cm->ctx.alloc, l->cert_file);
      xcm__free(cm->ctx.alloc, l->key_file);
      xcm__tls_config_unref(l->tls);
      xcm__free(cm->ctx.alloc, l);
      return XCM_ENOMEM;
    }
  }
  xcm__client_cfg_from(&l->cfg, &cm->opt);
  l->cfg.listener = cm->nlisteners;
  l->cfg.counters = &cm->counters;
  l->cfg.tls = l->tls;
  l->cfg.direct_tls = lo->direct_tls;
  l->cfg.proxy_protocol = lo->proxy_protocol;
  /* Checked by xcm__listen_options_resolve. */
  l->cfg.ntrusted = (unsigned)xcm__proxy_trust_parse(lo->proxy_trusted,
                                                     l->cfg.trusted, NULL, 0);
  l->cfg.policy = current_policy;
  l->cfg.policy_ud = cm;
  if (lo->http && (err = http_init(cm, l, lo, errbuf, errlen)) != 0) {
    orphan_free(l);
    return err;
  }
  err = uv_tcp_init_ex(cm->ctx.loop, &l->tcp, ss.ss_family);
  if (err == 0) {
    uv_os_fd_t fd;

    uv_fileno((uv_handle_t *)&l->tcp, &fd);
    err = uv_poll_init_socket(cm->ctx.loop, &l->poll, fd);
    if (err != 0) {
      l->tcp.data = l;
      uv_close((uv_handle_t *)&l->tcp, orphan_closed);
      errmsg(errbuf, errlen, "listen: %s", uv_strerror(err));
      return err;
    }
  }
  if (err != 0) {
    orphan_free(l);
    errmsg(errbuf, errlen, "listen: cannot make a socket: %s",
           uv_strerror(err));
    return err;
  }
  l->tcp.data = l;
  l->poll.data = l;
  uv_timer_init(cm->ctx.loop, &l->backoff);
  l->backoff.data = l;
  cm->listeners[cm->nlisteners++] = l;
  if (lo->reuseport) {
    uv_os_fd_t fd;
    int on = 1;

    if (uv_fileno((uv_handle_t *)&l->tcp, &fd) == 0)
      setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on);
  }
  /* Bind now so that a port in use is reported at once; accepting waits
   * for xcm_cm_start(). */
  err = bind_now(l, &ss);
  if (err != 0) {
    char what[128];

    snprintf(what, sizeof what, "%s port %d", host, port);
    if (errbuf != NULL)
      snprintf(errbuf, errlen, "cannot listen on %s: %s", what,
               uv_strerror(err));
    return err;
  }
  /* A listener added to a running instance starts at once. */
  if (cm->started && (err = start_accepting(l)) != 0) {
    if (errbuf != NULL)
      snprintf(errbuf, errlen, "cannot listen on %s port %d: %s", host, port,
               uv_strerror(err));
    return err;
  }
  namelen = sizeof ss;
  uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&ss, &namelen);
  l->port =
      ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                     : ((struct sockaddr_in *)&ss)->sin_port);
  xcm__log(&cm->ctx, XCM_LOG_INFO, "listening on %s port %d%s%s", host, l->port,
           l->http != NULL  ? (l->tls ? " (HTTPS)" : " (HTTP)")
           : lo->direct_tls ? " (direct TLS)"
           : l->tls         ? " (STARTTLS)"
                            : "",
           lo->proxy_protocol ? " (PROXY protocol required)" : "");
  return 0;
}

int xcm_cm_listen_add_cert(xcm_cm *cm, unsigned i, const char *cert_file,
                           const char *key_file, char *errbuf, size_t errlen) {
  listener *l;
  char *c, *k;
  int err;

  if (i >= cm->nlisteners || cm->listeners[i]->tls == NULL ||
      cert_file == NULL || key_file == NULL) {
    errmsg(errbuf, errlen, "%slistener %u has no certificate to add to", "");
    return XCM_EINVAL;
  }
  l = cm->listeners[i];
  if (l->nsni == sizeof l->sni_cert / sizeof l->sni_cert[0])
    return XCM_ELIMIT;
  c = xcm__strndup(cm->ctx.alloc, cert_file, strlen(cert_file));
  k = xcm__strndup(cm->ctx.alloc, key_file, strlen(key_file));
  err = c && k ? xcm__tls_config_add_cert(l->tls, cert_file, key_file, errbuf,
                                          errlen)
               : XCM_ENOMEM;
  if (err != 0) {
    xcm__free(cm->ctx.alloc, c);
    xcm__free(cm->ctx.alloc, k);
    return err;
  }
  l->sni_cert[l->nsni] = c;
  l->sni_key[l->nsni++] = k;
  return 0;
}

int xcm_cm_adopt(xcm_cm *cm, unsigned i, uv_tcp_t *tcp) {
  int closed = cm->stopping || cm->draining;

  if (i >= cm->nlisteners || closed) {
    tcp->data = cm;
    uv_close((uv_handle_t *)tcp, free_handle);
    return closed ? XCM_ECLOSED : XCM_EINVAL;
  }
  if (cm->listeners[i]->http != NULL)
    return xcm__http_accept(cm->listeners[i]->http, tcp);
  return xcm__session_accept(&cm->sessions, &cm->listeners[i]->cfg, tcp);
}

int xcm_cm_attach(xcm_cm *cm, unsigned i, const xcm_transport *in,
                  const char *peer, xcm_conn **out) {
  xcm_transport tr, *t = &tr;
  xcm_stream *s;
  int err;

  *out = NULL;
  /* The table is copied: read as much of it as the caller has. */
  memset(&tr, 0, sizeof tr);
  err = xcm__sized_read(&tr, sizeof tr, in,
                        offsetof(xcm_transport, write) + sizeof tr.write,
                        "xcm_transport", "it with .size = sizeof it", NULL, 0);
  if (err != 0 || tr.write == NULL || tr.close == NULL)
    return XCM_EINVAL;
  if (cm->stopping || cm->draining)
    return XCM_ECLOSED;
  if (i >= cm->nlisteners || cm->listeners[i]->http != NULL)
    return XCM_EINVAL;
  err = xcm__session_attach(&cm->sessions, &cm->listeners[i]->cfg, t, peer, &s);
  if (err == 0)
    *out = (xcm_conn *)s;
  return err;
}

void xcm__cm_sm_start(xcm_cm *cm, uint32_t start) {
  unsigned i;

  for (i = 0; i < cm->nlisteners; i++)
    cm->listeners[i]->cfg.sm_start = start;
}

int xcm__cm_attach_msg(xcm_cm *cm, unsigned i, const xcm_msg_transport *t,
                       const char *peer, xcm_client **out) {
  *out = NULL;
  if (cm->stopping || cm->draining)
    return XCM_ECLOSED;
  if (i >= cm->nlisteners || t == NULL)
    return XCM_EINVAL;
  return xcm__session_attach_msg(&cm->sessions, &cm->listeners[i]->cfg, t, peer,
                                 out);
}

size_t xcm__cm_bosh_footprint(const xcm_cm *cm, const char *sid) {
  size_t n = 0;
  unsigned i;

  for (i = 0; i < cm->nlisteners && n == 0; i++)
    if (cm->listeners[i]->web.bosh != NULL)
      n = xcm__bosh_session_footprint(cm->listeners[i]->web.bosh, sid);
  return n;
}

void xcm_conn_input(xcm_conn *c, const char *data, size_t len) {
  xcm__stream_input((xcm_stream *)c, data, len);
}

void xcm_conn_input_end(xcm_conn *c) {
  xcm__stream_input_end((xcm_stream *)c);
}

void xcm_conn_writable(xcm_conn *c) {
  xcm__stream_writable((xcm_stream *)c);
}

int xcm_cm_listener_port(const xcm_cm *cm, unsigned i) {
  return i < cm->nlisteners ? cm->listeners[i]->port : XCM_EINVAL;
}

int xcm_cm_start(xcm_cm *cm) {
  unsigned i;
  int err;

  if (cm->started)
    return 0;
  if (cm->stopping || cm->draining)
    return XCM_ECLOSED;
  cm->started = 1;
  for (i = 0; i < cm->nlisteners; i++) {
    err = start_accepting(cm->listeners[i]);
    if (err != 0) {
      xcm__log(&cm->ctx, XCM_LOG_ERROR, "cannot listen on port %d: %s",
               cm->listeners[i]->port, uv_strerror(err));
      return err;
    }
  }
  return xcm__pool_start(cm->pool);
}

/* ---- shutdown ----------------------------------------------------------- */

static void ctx_closed(xcm_ctx *ctx) {
  xcm_cm *cm = (xcm_cm *)ctx;

  if (cm->shutdown_cb != NULL)
    cm->shutdown_cb(cm->shutdown_ud, cm);
}

static void handle_closed(xcm_cm *cm) {
  /* A drain closes the listeners before any shutdown: their handles
   * count down here, and only a shutdown closes the context. */
  if (--cm->open_handles > 0 || !cm->stopping)
    return;
  xcm__ctx_close(&cm->ctx, ctx_closed);
}

void xcm__cm_hold(xcm_cm *cm) {
  cm->open_handles++;
}

void xcm__cm_release(xcm_cm *cm) {
  handle_closed(cm);
}

static void pool_closed(void *ud) {
  xcm_cm *cm = ud;

  cm->pool = NULL;
  cm->sessions.pool = NULL;
  handle_closed(cm);
}

static void uv_handle_closed(uv_handle_t *h) {
  handle_closed(h->data);
}

static void listener_closed(uv_handle_t *h) {
  listener *l = h->data;

  handle_closed(l->cm);
}

static void http_closed(void *ud) {
  handle_closed(ud);
}

/* The drain is over (every session answered, or time is up). */
static void finish(xcm_cm *cm) {
  uv_timer_stop(&cm->drain);
  cm->sessions.empty = NULL;
  if (cm->pool != NULL)
    xcm__pool_close(cm->pool, pool_closed, cm);
  uv_close((uv_handle_t *)&cm->drain, uv_handle_closed);
}

static void drain_timeout(uv_timer_t *t) {
  finish(t->data);
}

static void sessions_empty(void *ud) {
  xcm_cm *cm = ud;

  /* Give the closes a moment to reach the server and be answered, but
   * never longer than the caller's bound on the drain. */
  uv_timer_start(&cm->drain, drain_timeout,
                 cm->drain_ms < 200 ? cm->drain_ms : 200, 0);
}

/* Stop accepting for good. The handles count in open_handles, which a
 * shutdown waits for (those of a drain's close may still be pending). */
static void close_listeners(xcm_cm *cm) {
  unsigned i;

  if (cm->listeners_closed)
    return;
  cm->listeners_closed = 1;
  cm->open_handles += 3 * (int)cm->nlisteners;
  for (i = 0; i < cm->nlisteners; i++) {
    /* The poll first: it watches the socket the tcp handle closes. */
    uv_close((uv_handle_t *)&cm->listeners[i]->poll, listener_closed);
    uv_close((uv_handle_t *)&cm->listeners[i]->tcp, listener_closed);
    cm->listeners[i]->backoff.data = cm;
    uv_close((uv_handle_t *)&cm->listeners[i]->backoff, uv_handle_closed);
  }
}

int xcm_cm_shutdown(xcm_cm *cm, unsigned drain_ms, xcm_shutdown_fn cb,
                    void *ud) {
  if (cm->stopping)
    return XCM_ECLOSED;
  cm->stopping = 1;
  cm->shutdown_cb = cb;
  cm->shutdown_ud = ud;
  /* A drain under way ends here: its callback is not called. */
  cm->drain_cb = NULL;
  /* The drain and tick timers and the pool, then the listeners. */
  cm->open_handles += 3;
  uv_close((uv_handle_t *)&cm->tick, uv_handle_closed);
  if (cm->opt.resume_group != NULL) {
    /* Nothing moves here any more; what was on its way is dropped (its
     * connection closes, the client logs in again). */
    if (cm->in_group)
      xcm__group_leave(cm->sessions.group, cm->sessions.group_index,
                       drop_moved);
    cm->in_group = 0;
    cm->open_handles++;
    uv_close((uv_handle_t *)&cm->inbox, uv_handle_closed);
  }
  close_listeners(cm);
  /* BOSH sessions end with their connections: nothing could carry a
   * stream error to them. */
  for (unsigned i = 0; i < cm->nlisteners; i++)
    if (cm->listeners[i]->web.bosh != NULL) {
      cm->open_handles++;
      xcm__bosh_close(cm->listeners[i]->web.bosh, http_closed, cm);
    }
  /* HTTP connections not yet handed to a session end now. */
  for (unsigned i = 0; i < cm->nlisteners; i++)
    if (cm->listeners[i]->http != NULL) {
      cm->open_handles++;
      xcm__http_server_close(cm->listeners[i]->http, http_closed, cm);
    }
  cm->sessions.empty = sessions_empty;
  cm->sessions.empty_ud = cm;
  cm->drain_ms = drain_ms;
  uv_timer_start(&cm->drain, drain_timeout, cm->drain_ms, 0);
  if (cm->sessions.count == 0)
    sessions_empty(cm);
  else
    xcm__sessions_fail_all(&cm->sessions, XCM_COND_SYSTEM_SHUTDOWN,
                           "the connection manager is shutting down");
  return 0;
}

/* ---- draining ---------------------------------------------------------- */

static void drain_tick(uv_timer_t *t) {
  xcm_cm *cm = t->data;
  uint64_t elapsed = uv_now(cm->ctx.loop) - cm->drain_start;
  size_t n = cm->drain_total, due, gone, ended;
  xcm_drain_fn cb;

  /* ceil(n * elapsed / period) of the first n gone by now. */
  if (cm->drain_period == 0 || elapsed >= cm->drain_period)
    due = n;
  else
    due = (size_t)(((uint64_t)n * elapsed + cm->drain_period - 1) /
                   cm->drain_period);
  gone = n > cm->sessions.count ? n - cm->sessions.count : 0;
  if (due > gone) {
    ended = xcm__sessions_fail_some(
        &cm->sessions, due - gone, XCM_COND_SYSTEM_SHUTDOWN,
        "this server is draining for maintenance: reconnect");
    cm->sessions_drained += ended;
  }
  /* A session event may have shut the instance down, which ended the
   * rest and the drain with them. */
  if (cm->stopping || cm->sessions.count > 0)
    return;
  uv_timer_stop(&cm->tick);
  xcm__log(&cm->ctx, XCM_LOG_INFO,
           "drained: every session has ended, %llu of them by the drain",
           (unsigned long long)cm->sessions_drained);
  cb = cm->drain_cb;
  cm->drain_cb = NULL;
  if (cb != NULL)
    cb(cm->drain_ud, cm);
}

int xcm_cm_drain(xcm_cm *cm, unsigned period_ms, xcm_drain_fn cb, void *ud) {
  unsigned tick = period_ms < DRAIN_TICK_MS ? period_ms : DRAIN_TICK_MS;

  if (cm->stopping || cm->draining)
    return XCM_ECLOSED;
  cm->draining = 1;
  cm->drain_cb = cb;
  cm->drain_ud = ud;
  close_listeners(cm);
  cm->drain_start = uv_now(cm->ctx.loop);
  cm->drain_period = period_ms;
  cm->drain_total = cm->sessions.count;
  xcm__log(&cm->ctx, XCM_LOG_INFO,
           "draining: listeners closed; ending %llu session%s over %u ms",
           (unsigned long long)cm->drain_total, cm->drain_total == 1 ? "" : "s",
           period_ms);
  /* The first turn comes from the loop, even for a period of 0: the
   * callback and the session events never run inside this call. */
  uv_timer_start(&cm->tick, drain_tick, tick, tick > 0 ? tick : 1);
  return 0;
}

void xcm_cm_free(xcm_cm *cm) {
  unsigned i;
  const xcm_allocator *alloc;

  if (cm == NULL)
    return;
  alloc = cm->ctx.alloc;
  for (i = 0; i < cm->nlisteners; i++) {
    if (cm->listeners[i]->tls != NULL)
      xcm__tls_config_unref(cm->listeners[i]->tls);
    http_free(cm->listeners[i]);
    xcm__free(alloc, cm->listeners[i]->cert_file);
    xcm__free(alloc, cm->listeners[i]->key_file);
    for (unsigned k = 0; k < cm->listeners[i]->nsni; k++) {
      xcm__free(alloc, cm->listeners[i]->sni_cert[k]);
      xcm__free(alloc, cm->listeners[i]->sni_key[k]);
    }
    xcm__free(alloc, cm->listeners[i]);
  }
  xcm__sessions_free(&cm->sessions);
  xcm__free(alloc, cm->strings);
  xcm__free(alloc, cm);
}

int xcm_cm_stats(const xcm_cm *cm, xcm_stats *out, size_t size) {
  const xcm_counters *c = &cm->counters;
  xcm_stats st;

  if (out == NULL)
    return XCM_EINVAL;
  memset(&st, 0, sizeof st);
  st.clients_accepted = c->clients_accepted;
  st.clients_refused = c->clients_refused;
  st.clients_now = c->clients_now;
  st.clients_tls_now = c->clients_tls_now;
  st.sessions_authenticated = c->sessions_authenticated;
  st.stanzas_in = c->stanzas_in;
  st.stanzas_out = c->stanzas_out;
  st.bytes_in = c->bytes_in;
  st.bytes_out = c->bytes_out;
  memcpy(st.stream_errors, c->stream_errors, sizeof c->stream_errors);
  st.failed_returned = c->failed_returned;
  st.sessions_lost = c->sessions_lost;
  st.hook_dropped = c->hook_dropped;
  st.clients_refused_total_limit = c->clients_refused_total_limit;
  st.clients_refused_address_limit = c->clients_refused_address_limit;
  st.header_timeouts = c->header_timeouts;
  st.auth_timeouts = c->auth_timeouts;
  st.reads_shaped = c->reads_shaped;
  st.proxy_headers_refused = c->proxy_headers_refused;
  st.sessions_drained = cm->sessions_drained;
  st.proxy_untrusted = c->proxy_untrusted;
  st.sessions_tcp_now = c->clients_kind_now[XCM_TRANSPORT_TCP];
  st.sessions_websocket_now = c->clients_kind_now[XCM_TRANSPORT_WEBSOCKET];
  st.sessions_bosh_now = c->clients_kind_now[XCM_TRANSPORT_BOSH];
  st.sessions_custom_now = c->clients_kind_now[XCM_TRANSPORT_CUSTOM];
  st.sm_sessions_now = c->sm_now;
  st.sm_acks_requested = c->sm_acks_requested;
  st.sm_acks_received = c->sm_acks_received;
  st.sm_returned = c->sm_returned;
  st.sm_return_errors = c->sm_return_errors;
  st.sm_bad_h = c->sm_bad_h;
  st.sm_overflows = c->sm_overflows;
  st.sm_ack_timeouts = c->sm_ack_timeouts;
  st.sm_detached_now = c->sm_detached_now;
  st.sm_detached = c->sm_detached;
  st.sm_resumed = c->sm_resumed;
  st.sm_resume_failed = c->sm_resume_failed;
  st.sm_expired = c->sm_expired;
  st.sm_expired_returned = c->sm_expired_returned;
  st.csi_inactive_now = c->csi_now;
  st.csi_held = c->csi_held;
  st.csi_superseded = c->csi_superseded;
  st.csi_flushed = c->csi_flushed;
  st.csi_returned = c->csi_returned;
  st.csi_dropped = c->csi_dropped;
  st.csi_overflows = c->csi_overflows;
  for (unsigned i = 0; i < cm->nlisteners; i++) {
    const xcm_http_counters *h;

    if (cm->listeners[i]->http == NULL)
      continue;
    h = xcm__http_server_counters(cm->listeners[i]->http);
    st.proxy_headers_refused += h->proxy_refused;
    st.proxy_untrusted += h->proxy_untrusted;
    st.http_connections_now += h->now;
    st.http_refused_total_limit += h->refused_total;
    st.http_refused_address_limit += h->refused_address;
    st.http_header_timeouts += h->header_timeouts;
    st.http_idle_timeouts += h->idle_timeouts;
    st.http_requests_refused += h->errors;
    if (cm->listeners[i]->web.bosh != NULL) {
      const xcm_bosh_counters *b =
          xcm__bosh_counters(cm->listeners[i]->web.bosh);

      st.bosh_sessions_now += b->now;
      st.bosh_sessions_created += b->created;
      st.bosh_requests += b->requests;
      st.bosh_empty_answers += b->empty;
      st.bosh_repeated_rids += b->repeated;
      st.bosh_inactivity_ends += b->inactive;
      st.bosh_requests_refused += b->errors;
      st.bosh_refused_address_limit += b->refused_address;
    }
    st.websocket_upgrades += h->upgrades;
  }
  st.upstream_links_up = cm->pool ? xcm__pool_links_up(cm->pool) : 0;
  st.upstream_nodes_up = cm->pool ? xcm__pool_nodes_up(cm->pool) : 0;
  /* The parser pool goes before the shutdown callback runs; the
   * statistics stay readable until xcm_cm_free, as libuv's handles do. */
  st.xml_parsers_busy =
      cm->ctx.xml != NULL ? (unsigned)xcm__xml_pool_busy(cm->ctx.xml) : 0;
  xcm__sized_write(out, size, &st, sizeof st);
  return 0;
}

int xcm_cm_reload_certs(xcm_cm *cm, char *errbuf, size_t errlen) {
  xcm_tls_config *fresh[MAX_LISTENERS] = {NULL};
  unsigned i, n = 0;
  int err = 0;

  /* All or nothing: a bad file leaves every listener as it was. */
  for (i = 0; i < cm->nlisteners && err == 0; i++) {
    listener *l = cm->listeners[i];
    xcm_tls_options to;

    if (l->tls == NULL)
      continue;
    memset(&to, 0, sizeof to);
    to.cert_file = l->cert_file;
    to.key_file = l->key_file;
    to.alpn = l->http != NULL ? "http/1.1" : NULL;
    err = xcm__tls_config_new(&fresh[i], &cm->ctx, 1, &to, errbuf, errlen);
    for (unsigned k = 0; err == 0 && k < l->nsni; k++)
      err = xcm__tls_config_add_cert(fresh[i], l->sni_cert[k], l->sni_key[k],
                                     errbuf, errlen);
  }
  for (i = 0; i < cm->nlisteners; i++) {
    listener *l = cm->listeners[i];

    if (fresh[i] == NULL)
      continue;
    if (err != 0) {
      xcm__tls_config_unref(fresh[i]);
      continue;
    }
    /* Connections already in TLS hold the old configuration until they
     * end; new ones get the new certificate. */
    xcm__tls_config_unref(l->tls);
    l->tls = fresh[i];
    l->cfg.tls = fresh[i];
    if (l->http_cfg != NULL)
      l->http_cfg->tls = fresh[i];
    n++;
  }
  if (err == 0)
    xcm__log(&cm->ctx, XCM_LOG_INFO,
             "reloaded the certificates of %u "
             "listener%s",
             n, n == 1 ? "" : "s");
  return err == 0 ? (int)n : err;
}

void xcm_cm_set_link_events(xcm_cm *cm, xcm_link_fn fn, void *ud) {
  cm->link_events = fn;
  cm->link_events_ud = ud;
}

static void session_info(const xcm_session *s, xcm_session_info *info) {
  xcm_session_view v;

  xcm__session_view(s, &v);
  memset(info, 0, sizeof *info);
  info->sid = v.sid;
  info->peer = v.peer;
  info->jid = v.jid;
  info->authenticated = v.authenticated;
  info->tls = v.tls;
  info->compressed = v.compressed;
  info->link = v.link;
  info->data = v.data;
  info->detached = v.detached;
}

_Static_assert(XCM__SESSION_OPENED == (int)XCM_SESSION_OPENED &&
                   XCM__SESSION_AUTHENTICATED ==
                       (int)XCM_SESSION_AUTHENTICATED &&
                   XCM__SESSION_BOUND == (int)XCM_SESSION_BOUND &&
                   XCM__SESSION_CLOSED == (int)XCM_SESSION_CLOSED &&
                   XCM__SESSION_DETACHED == (int)XCM_SESSION_DETACHED &&
                   XCM__SESSION_RESUMED == (int)XCM_SESSION_RESUMED,
               "the session layer's events are the public ones");

static void on_session_event(void *ud, enum xcm_session_ev ev,
                             const xcm_session *s, const xcm_client_end *end) {
  xcm_cm *cm = ud;
  xcm_session_info info;

  session_info(s, &info);
  if (end != NULL) {
    info.cond = end->cond;
    info.text = end->text;
  }
  /* The session layer's events are the public ones, in the same order. */
  cm->session_events(cm->session_events_ud, (xcm_session_event)ev, &info);
}

void xcm_cm_set_session_events(xcm_cm *cm, xcm_session_fn fn, void *ud) {
  cm->session_events = fn;
  cm->session_events_ud = ud;
  cm->sessions.events = fn != NULL ? on_session_event : NULL;
  cm->sessions.events_ud = cm;
}

int xcm_cm_session(const xcm_cm *cm, const char *sid, xcm_session_info *out,
                   size_t size) {
  const xcm_session *s = xcm__sessions_find(&cm->sessions, sid);
  xcm_session_info info;

  if (s == NULL)
    return XCM_ENOTFOUND;
  session_info(s, &info);
  xcm__sized_write(out, size, &info, sizeof info);
  return 0;
}

int xcm_cm_session_set_data(xcm_cm *cm, const char *sid, void *data) {
  xcm_session *s = xcm__sessions_find(&cm->sessions, sid);

  if (s == NULL)
    return XCM_ENOTFOUND;
  xcm__session_set_data(s, data);
  return 0;
}

int xcm_cm_session_get_data(const xcm_cm *cm, const char *sid, void **out) {
  const xcm_session *s = xcm__sessions_find(&cm->sessions, sid);

  *out = s != NULL ? xcm__session_data(s) : NULL;
  return s != NULL ? 0 : XCM_ENOTFOUND;
}

int xcm_cm_close_session(xcm_cm *cm, const char *sid, xcm_cond cond,
                         const char *text) {
  xcm_session *s = xcm__sessions_find(&cm->sessions, sid);

  if (s == NULL)
    return XCM_ENOTFOUND;
  xcm__session_close(s, cond, text);
  return 0;
}

unsigned xcm_cm_upstream_links(const xcm_cm *cm) {
  return cm->nlinks;
}

int xcm_cm_upstream_link(const xcm_cm *cm, unsigned i, xcm_link_info *out,
                         size_t size) {
  xcm_link_info info;

  if (i >= cm->nlinks)
    return XCM_EINVAL;
  memset(&info, 0, sizeof info);
  info.node = i / cm->opt.connections;
  /* After the shutdown the pool is gone: its links read as down until
   * xcm_cm_free, as libuv's handles stay readable until freed. */
  if (cm->pool != NULL) {
    info.up = xcm__pool_link_state(cm->pool, i, &info.resource) == XCM_LINK_UP;
    info.tls = xcm__pool_link_tls(cm->pool, i);
    info.compressed = xcm__pool_link_zlib(cm->pool, i);
    info.queued = xcm__pool_link_queued(cm->pool, i);
  }
  xcm__sized_write(out, size, &info, sizeof info);
  return 0;
}

void xcm_cm_set_node_events(xcm_cm *cm, xcm_node_fn fn, void *ud) {
  cm->node_events = fn;
  cm->node_events_ud = ud;
}

unsigned xcm_cm_upstream_nodes(const xcm_cm *cm) {
  return cm->nnodes;
}

int xcm_cm_upstream_node(const xcm_cm *cm, unsigned i, xcm_node_info *out,
                         size_t size) {
  xcm_node_info info;

  if (i >= cm->nnodes)
    return XCM_EINVAL;
  node_info(cm, i, &info);
  xcm__sized_write(out, size, &info, sizeof info);
  return 0;
}

static enum xcm_hook_verdict on_hook(void *ud, const xcm_session *s,
                                     int to_client, const char *name,
                                     const char *bytes, size_t len,
                                     const char **rep, size_t *rep_len) {
  xcm_cm *cm = ud;
  xcm_stanza_info info;
  xcm_session_view v;

  xcm__session_view(s, &v);
  memset(&info, 0, sizeof info);
  info.dir = to_client ? XCM_TO_CLIENT : XCM_TO_SERVER;
  info.sid = v.sid;
  info.name = name;
  info.bytes = bytes;
  info.len = len;
  info.session_data = v.data;
  switch (cm->hook(cm->hook_ud, &info, rep, rep_len)) {
  case XCM_DROP:
    return XCM__HOOK_DROP;
  case XCM_REPLACE:
    return XCM__HOOK_REPLACE;
  default:
    return XCM__HOOK_PASS; /* XCM_PASS, or no verdict at all */
  }
}

void xcm_cm_set_stanza_hook(xcm_cm *cm, xcm_stanza_hook hook, void *ud) {
  cm->hook = hook;
  cm->hook_ud = ud;
  cm->sessions.hook = hook != NULL ? on_hook : NULL;
  cm->sessions.hook_ud = cm;
}

const xcm_policy *xcm_cm_policy(const xcm_cm *cm) {
  return current_policy((void *)cm);
}
