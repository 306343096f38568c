#include "upstream/pool.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/cmproto.h"
#include "proto/route.h"
#include "proto/stream.h"
#include "transport/stream.h"
#include "upstream/link.h"
#include "upstream/servers.h"
#include "util/alloc.h"
#include "util/map.h"
#include "xml/element.h"
#include "xcm/error.h"

enum session_state { S_CREATING, S_OPEN, S_CLOSING };
enum request_kind { R_CREATE, R_CLOSE, R_FAILED };

typedef struct request request;
struct request {
  xcm_map_entry e;
  enum request_kind kind;
  xcm_up_session *s; /* create and close; NULL once detached */
  uint64_t deadline;
  request *prev, *next; /* oldest first, for the timeouts */
  char id[32];
};

struct xcm_up_session {
  xcm_map_entry e;
  xcm_pool *pool;
  int link; /* index of the pinned link, -1 for none */
  xcm_up_session *lprev, *lnext;
  const xcm_up_session_cb *cb;
  void *ud;
  enum session_state state;
  int paused;
  request *req;                /* the pending create or close */
  xcm_buf *hold;               /* stanzas sent before the create result */
  uint64_t close_at;           /* while lingering: when to send the close */
  xcm_up_session *linger_next; /* in the pool's linger queue */
  int lingering; /* 0, or the spells of linger_ms so far (linger_more) */
  char sid[];
};

typedef struct link_slot {
  xcm_link *link;
  xcm_up_session *head;
  size_t count;
  int congested;
  int up;
  unsigned failures; /* consecutive, for the backoff */
  unsigned node;
} link_slot;

/* One server: the pool's only one, or a node of a cluster. Its links
 * are first .. first + opt.connections - 1. */
typedef struct node_slot {
  const char *host; /* in the pool's strings */
  int port;
  const char *label; /* "host:port" */
  unsigned first;
  unsigned links_up;
  /* It announced system-shutdown: its sessions are gone, and it takes
   * none until one of its links comes up again. */
  int shutdown;
  int was_up; /* as the owner last heard (node events) */
  uint64_t losses;
  uint64_t sessions_lost;
} node_slot;

struct xcm_pool {
  xcm_ctx *ctx;
  xcm_pool_options opt;
  char *strings; /* the copied option strings */
  xcm_pool_events ev;
  void *ud;
  xcm_tls_config *tls;
  link_slot *links;
  unsigned nlinks;
  /* <failed/> returns the server has not answered yet (on_linger). */
  size_t failed_pending;
  unsigned up;
  node_slot *nodes;
  unsigned nnodes;
  xcm_map sessions;
  xcm_map requests;
  request *req_head, *req_tail;
  uint64_t next_id;
  uint32_t id_tag; /* random: ids of two pools never meet */
  /* Answers to another pool's requests (foreign_answer), and when the
   * last one was logged. */
  uint64_t foreign_answers;
  uint64_t foreign_logged_at;
  xcm_policy policy;
  int have_policy;
  xcm_pool_stats stats;
  uv_timer_t timer;
  /* Sessions whose client left, oldest first: their close waits a
   * moment so that what the server routes to them meanwhile can still
   * be returned through a session it knows. */
  uv_timer_t linger_timer;
  xcm_up_session *linger_head, *linger_tail;
  /* Sessions closed by us and not yet freed: only routes to those need
   * their payload's attributes (to return or answer it). */
  unsigned nclosing;
  int always_bare;  /* tests: see xcm__pool_set_bare_payloads */
  int open_handles; /* timers and links, while closing */
  int closing;
  void (*close_cb)(void *ud);
  void *close_ud;
  xcm_buf scratch;
  xcm_buf tmp;
  unsigned char pin[32]; /* opt.pin_sha256 points here */
  /* Certificates refused and reported, by SHA-256: each is reported
   * once, not at every attempt of every link; a link that comes up
   * clears them. */
  unsigned char told[8][32];
  unsigned ntold, told_next;
};

static const xcm_link_cb link_cb;

/* ---- options ----------------------------------------------------------- */

static const char *keep_str(char **cursor, const char *s) {
  char *p = *cursor;
  size_t n = strlen(s) + 1;

  memcpy(p, s, n);
  *cursor += n;
  return p;
}

/* Each node's host and label, and the links' total. */
static int copy_nodes(xcm_pool *p, const xcm_server_ref *refs, unsigned n,
                      char **cursor) {
  unsigned i;

  p->nodes = xcm__calloc(p->ctx->alloc, n * sizeof(*p->nodes));
  if (p->nodes == NULL)
    return XCM_ENOMEM;
  p->nnodes = n;
  for (i = 0; i < n; i++) {
    node_slot *nd = &p->nodes[i];

    nd->host = *cursor;
    memcpy(*cursor, refs[i].host, refs[i].len);
    (*cursor)[refs[i].len] = '\0';
    *cursor += refs[i].len + 1;
    nd->port = refs[i].port;
    nd->label = *cursor;
    xcm__server_label(&refs[i], *cursor, refs[i].len + 10);
    *cursor += strlen(*cursor) + 1;
    nd->first = i * p->opt.connections;
  }
  return 0;
}

static int copy_options(xcm_pool *p, const xcm_pool_options *o) {
  const char *host = o->host;
  const char *prefix = o->resource_prefix;
  const char *ca = o->ca_file ? o->ca_file : "";
  xcm_server_ref refs[XCM_SERVERS_MAX];
  size_t size, hosts = 0;
  char *cursor;
  int n = 1, i, err;

  if (o->domain == NULL || o->name == NULL || o->secret == NULL ||
      (host == NULL && o->servers == NULL) || prefix == NULL ||
      o->connections == 0 || o->domain[0] == '\0' || o->name[0] == '\0' ||
      strlen(o->name) + strlen(prefix) + 24 > XCM_POOL_MAX_JID)
    return XCM_EINVAL;
  if (o->servers != NULL) {
    n = xcm__servers_parse(o->servers, refs, NULL, 0);
    if (n < 0)
      return XCM_EINVAL;
  } else {
    refs[0].host = host;
    refs[0].len = strlen(host);
    refs[0].port = o->port;
  }
  if ((unsigned)n * o->connections > XCM_SERVERS_MAX_LINKS)
    return XCM_EINVAL;
  /* Each host twice: as given, and in its label with brackets and port. */
  for (i = 0; i < n; i++)
    hosts += 2 * refs[i].len + 12;
  size = hosts + strlen(prefix) + strlen(ca) + strlen(o->domain) +
         strlen(o->name) + strlen(o->secret) + 6;
  p->strings = xcm__alloc(p->ctx->alloc, size);
  if (p->strings == NULL)
    return XCM_ENOMEM;
  p->opt = *o;
  p->opt.servers = NULL;
  cursor = p->strings;
  if ((err = copy_nodes(p, refs, (unsigned)n, &cursor)) != 0)
    return err;
  /* The first node stands for "the server" where one is named. */
  p->opt.host = p->nodes[0].host;
  p->opt.port = p->nodes[0].port;
  p->opt.resource_prefix = keep_str(&cursor, prefix);
  p->opt.ca_file = o->ca_file ? keep_str(&cursor, ca) : NULL;
  p->opt.domain = keep_str(&cursor, o->domain);
  p->opt.name = keep_str(&cursor, o->name);
  p->opt.secret = keep_str(&cursor, o->secret);
  if (o->pin_sha256 != NULL) {
    memcpy(p->pin, o->pin_sha256, sizeof p->pin);
    p->opt.pin_sha256 = p->pin;
  }
  return 0;
}

/* ---- requests ---------------------------------------------------------- */

static uint64_t now(const xcm_pool *p) {
  return uv_now(p->ctx->loop);
}

static request *request_new(xcm_pool *p, enum request_kind kind,
                            xcm_up_session *s) {
  request *r = xcm__calloc(p->ctx->alloc, sizeof(*r));

  if (r == NULL)
    return NULL;
  r->kind = kind;
  r->s = s;
  if (kind == R_FAILED)
    p->failed_pending++;
  r->deadline = now(p) + p->opt.request_timeout_ms;
  /* Ids only need to be unique among this pool's pending requests; the
   * prefix keeps them apart from anything the server makes up. */
  snprintf(r->id, sizeof r->id, "x%08x-%llx", (unsigned)p->id_tag,
           (unsigned long long)++p->next_id);
  r->e.key = r->id;
  if (xcm__map_put(&p->requests, &r->e) != 0) {
    xcm__free(p->ctx->alloc, r);
    return NULL;
  }
  r->prev = p->req_tail;
  if (p->req_tail != NULL)
    p->req_tail->next = r;
  else
    p->req_head = r;
  p->req_tail = r;
  return r;
}

static void request_free(xcm_pool *p, request *r) {
  if (r->kind == R_FAILED)
    p->failed_pending--;
  xcm__map_remove(&p->requests, &r->e);
  if (r->prev != NULL)
    r->prev->next = r->next;
  else
    p->req_head = r->next;
  if (r->next != NULL)
    r->next->prev = r->prev;
  else
    p->req_tail = r->prev;
  if (r->s != NULL && r->s->req == r)
    r->s->req = NULL;
  xcm__free(p->ctx->alloc, r);
}

/* ---- links and pinning -------------------------------------------------- */

static void list_add(link_slot *ls, xcm_up_session *s) {
  s->lprev = NULL;
  s->lnext = ls->head;
  if (ls->head != NULL)
    ls->head->lprev = s;
  ls->head = s;
  ls->count++;
}

static void list_remove(link_slot *ls, xcm_up_session *s) {
  if (s->lprev != NULL)
    s->lprev->lnext = s->lnext;
  else
    ls->head = s->lnext;
  if (s->lnext != NULL)
    s->lnext->lprev = s->lprev;
  s->lprev = s->lnext = NULL;
  ls->count--;
}

static int node_up(const node_slot *nd) {
  return nd->links_up > 0 && !nd->shutdown;
}

/* The live link with the fewest sessions among those of node (or of
 * every node that takes sessions, with node -1), or -1. */
static int pick_link_in(const xcm_pool *p, int node, int except) {
  int best = -1;
  unsigned i;

  for (i = 0; i < p->nlinks; i++) {
    if ((int)i == except || xcm__link_state(p->links[i].link) != XCM_LINK_UP)
      continue;
    if (node >= 0 ? p->links[i].node != (unsigned)node
                  : !node_up(&p->nodes[p->links[i].node]))
      continue;
    if (best < 0 || p->links[i].count < p->links[best].count)
      best = (int)i;
  }
  return best;
}

static int pick_link(const xcm_pool *p, int except) {
  return pick_link_in(p, -1, except);
}

static void set_paused(xcm_up_session *s, int paused) {
  if (s->paused == paused || s->cb == NULL)
    return;
  s->paused = paused;
  if (paused && s->cb->pause != NULL)
    s->cb->pause(s->ud);
  else if (!paused && s->cb->resume != NULL)
    s->cb->resume(s->ud);
}

static void pin(xcm_pool *p, xcm_up_session *s, int link) {
  if (s->link >= 0)
    list_remove(&p->links[s->link], s);
  s->link = link;
  if (link >= 0) {
    list_add(&p->links[link], s);
    set_paused(s, p->links[link].congested);
  }
}

/* After a write: stop the link's clients once its queue passes the
 * high-water mark; on_link_drain lets them go again. */
static void check_congestion(xcm_pool *p, int link) {
  link_slot *ls = &p->links[link];
  xcm_up_session *s;

  if (ls->congested || !xcm__link_congested(ls->link))
    return;
  ls->congested = 1;
  for (s = ls->head; s != NULL; s = s->lnext)
    set_paused(s, 1);
}

static int send_on(xcm_pool *p, int link, const char *data, size_t len) {
  int err;

  if (link < 0)
    return XCM_ECLOSED;
  err = xcm__link_send(p->links[link].link, data, len);
  if (err == 0)
    check_congestion(p, link);
  return err;
}

static const char *link_jid(const xcm_pool *p, int link) {
  return xcm__link_jid(p->links[link >= 0 ? link : 0].link);
}

static int send_create(xcm_pool *p, xcm_up_session *s, const char *host,
                       const char *addr) {
  request *r = request_new(p, R_CREATE, s);
  int err;

  if (r == NULL)
    return XCM_ENOMEM;
  err = xcm__cm_session_create(&p->scratch, link_jid(p, s->link), p->opt.domain,
                               r->id, s->sid, host, addr);
  if (err == 0)
    err = send_on(p, s->link, p->scratch.data, p->scratch.len);
  xcm__buf_reset(&p->scratch);
  if (err != 0) {
    request_free(p, r);
    return err;
  }
  if (s->req != NULL)
    request_free(p, s->req);
  s->req = r;
  return 0;
}

/* Queue s at the tail, to be closed at its close_at (on_linger). */
static void linger_append(xcm_pool *p, xcm_up_session *s) {
  s->linger_next = NULL;
  if (p->linger_tail != NULL)
    p->linger_tail->linger_next = s;
  else
    p->linger_head = s;
  p->linger_tail = s;
}

static void unlinger(xcm_pool *p, xcm_up_session *s) {
  xcm_up_session **link = &p->linger_head, *prev = NULL;

  if (!s->lingering)
    return;
  while (*link != NULL && *link != s) {
    prev = *link;
    link = &(*link)->linger_next;
  }
  if (*link == s) {
    *link = s->linger_next;
    if (p->linger_tail == s)
      p->linger_tail = prev;
  }
  s->lingering = 0;
  s->linger_next = NULL;
}

/* A route reached a session that lingers: the server still sends to it,
 * and a <failed/> sent after our close would be refused (the session
 * gone: item-not-found) and the message lost. The close waits for a
 * quiet spell of linger_ms again, LINGER_MAX spells at most (at least
 * LINGER_MAX * linger_ms / 2 in all), so that a sender that never stops
 * cannot keep the session open. lingering counts the spells. The queue is not
 * reordered (O(1) per route): a session behind one that waits longer has its
 * close held back as long, LINGER_MAX * linger_ms at worst, and keeps returning
 * what reaches it meanwhile. */
enum { LINGER_MAX = 50 };

static void linger_more(xcm_pool *p, xcm_up_session *s) {
  uint64_t n = now(p);

  /* A spell counts once it is half gone: a burst of routes is one. */
  if (s->lingering == 0 || s->lingering >= LINGER_MAX ||
      s->close_at > n + p->opt.linger_ms / 2)
    return;
  s->close_at = n + p->opt.linger_ms;
  s->lingering++;
}

static void session_free(xcm_pool *p, xcm_up_session *s) {
  if (s->state == S_CLOSING)
    p->nclosing--;
  unlinger(p, s);
  if (s->req != NULL) {
    s->req->s = NULL;
    s->req = NULL;
  }
  if (s->link >= 0)
    list_remove(&p->links[s->link], s);
  xcm__map_remove(&p->sessions, &s->e);
  if (s->hold != NULL) {
    xcm__buf_free(s->hold);
    xcm__free(p->ctx->alloc, s->hold);
  }
  xcm__free(p->ctx->alloc, s);
}

/* ---- link events ------------------------------------------------------- */

/* The owner hears of a node that changed, once per change. */
static void tell_node(xcm_pool *p, unsigned n, size_t lost) {
  node_slot *nd = &p->nodes[n];
  int up = node_up(nd);

  if (up == nd->was_up)
    return;
  nd->was_up = up;
  if (!up)
    nd->losses++;
  if (p->ev.node != NULL)
    p->ev.node(p->ud, n, up, lost);
}

static void on_link_up(void *ud, xcm_link *l) {
  xcm_pool *p = ud;
  unsigned i = xcm__link_index(l);
  node_slot *nd = &p->nodes[p->links[i].node];

  p->links[i].failures = 0;
  p->links[i].congested = 0;
  p->links[i].up = 1;
  p->up++;
  nd->links_up++;
  /* A link after a shutdown is the node restarted. */
  nd->shutdown = 0;
  p->ntold = 0;
  if (p->ev.link != NULL)
    p->ev.link(p->ud, i, xcm__link_jid(l), 1, 0, NULL);
  tell_node(p, p->links[i].node, 0);
}

/* The session is gone on the server: forget it and tell its owner. 1
 * when it counts as lost (it was not closing already). */
static int lose_one(xcm_pool *p, xcm_up_session *s) {
  const xcm_up_session_cb *cb = s->cb;
  void *owner = s->ud;
  int was_creating = s->state == S_CREATING;
  int counted = s->state != S_CLOSING;

  if (counted) {
    p->stats.sessions_lost++;
    if (s->link >= 0)
      p->nodes[p->links[s->link].node].sessions_lost++;
  }
  session_free(p, s);
  if (cb == NULL)
    return counted;
  if (was_creating && cb->created != NULL)
    cb->created(owner, XCM_ECLOSED);
  else if (!was_creating && cb->lost != NULL)
    cb->lost(owner);
  return counted;
}

typedef struct lose_ctx {
  xcm_pool *pool;
  size_t lost;
} lose_ctx;

static void lose_entry(xcm_map_entry *e, void *ud) {
  lose_ctx *c = ud;

  c->lost += (size_t)lose_one(c->pool, (xcm_up_session *)e);
}

/* Every session is gone on the server: tell every owner. */
static size_t lose_all(xcm_pool *p) {
  lose_ctx c = {p, 0};

  while (p->req_head != NULL)
    request_free(p, p->req_head);
  xcm__map_each(&p->sessions, lose_entry, &c);
  return c.lost;
}

/* Node n went away: the sessions pinned to its links are gone with it.
 * When no node is left, that is every session, and no request can be
 * answered any more either. */
static size_t lose_node(xcm_pool *p, unsigned n) {
  node_slot *nd = &p->nodes[n];
  size_t lost = 0;
  unsigned i, k;
  xcm_up_session *s;

  for (k = 0; k < p->nnodes && !node_up(&p->nodes[k]); k++)
    ;
  if (k == p->nnodes)
    return lose_all(p);
  for (i = nd->first; i < nd->first + p->opt.connections; i++)
    while ((s = p->links[i].head) != NULL)
      lost += (size_t)lose_one(p, s);
  return lost;
}

/* Move the dead link's sessions to live links of its node (a session
 * lives on the node that created it). A session still waiting for its
 * create result may have lost the create with the connection: Openfire
 * answers a repeated create with a result, so send it again. */
static void migrate(xcm_pool *p, unsigned dead) {
  xcm_up_session *s;
  int to;

  while ((s = p->links[dead].head) != NULL) {
    to = pick_link_in(p, (int)p->links[dead].node, (int)dead);
    pin(p, s, to);
    if (s->state == S_CREATING && send_create(p, s, NULL, NULL) != 0)
      xcm__log(p->ctx, XCM_LOG_WARN,
               "upstream: could not resend the create of session %s", s->sid);
  }
}

static uint64_t backoff(xcm_pool *p, unsigned failures) {
  uint64_t d = p->opt.backoff_min_ms;
  uint32_t r = 0;
  unsigned i;

  for (i = 0; i < failures && d < p->opt.backoff_max_ms; i++)
    d *= 2;
  if (d > p->opt.backoff_max_ms)
    d = p->opt.backoff_max_ms;
  /* Jitter between half and the whole delay, so that many CMs (or many
   * links) that lost the server together do not return together. */
  xcm__random(&r, sizeof r);
  return d / 2 + (d / 2 ? r % (d / 2 + 1) : 0);
}

static void on_link_down(void *ud, xcm_link *l, int err, const char *why) {
  xcm_pool *p = ud;
  unsigned i = xcm__link_index(l);
  link_slot *ls = &p->links[i];
  node_slot *nd = &p->nodes[ls->node];

  if (ls->up) {
    ls->up = 0;
    p->up--;
    nd->links_up--;
  }
  p->stats.lost_in_flight += xcm__link_queued(l);
  ls->congested = 0;
  if (p->ev.link != NULL)
    p->ev.link(p->ud, i, xcm__link_jid(l), 0, err, why);
  if (node_up(nd))
    migrate(p, i);
  else
    tell_node(p, ls->node, lose_node(p, ls->node));
  if (p->closing)
    return;
  ls->failures++;
  p->stats.reconnects++;
  xcm__link_connect_later(l, backoff(p, ls->failures - 1));
}

static void on_link_policy(void *ud, xcm_link *l, const xcm_policy *pol) {
  xcm_pool *p = ud;
  int changed = !p->have_policy || memcmp(&p->policy, pol, sizeof(*pol)) != 0;

  (void)l;
  /* Every link receives it; the latest one wins. Owners hear only of a
   * change. */
  p->policy = *pol;
  p->have_policy = 1;
  if (changed && p->ev.policy != NULL)
    p->ev.policy(p->ud, pol);
}

static void on_link_shutdown(void *ud, xcm_link *l) {
  xcm_pool *p = ud;
  unsigned n = p->links[xcm__link_index(l)].node;
  node_slot *nd = &p->nodes[n];

  /* Openfire is going down: its sessions go with it, whatever links are
   * left for a moment, and it takes no new ones meanwhile. Another node
   * of a cluster keeps its own. */
  if (p->nnodes == 1)
    xcm__log(p->ctx, XCM_LOG_WARN,
             "upstream: the server is shutting down; all sessions are lost");
  else if (!nd->shutdown)
    xcm__log(p->ctx, XCM_LOG_WARN,
             "upstream: node %s is shutting down; its sessions are lost",
             nd->label);
  nd->shutdown = 1;
  tell_node(p, n, lose_node(p, n));
}

static void on_link_drain(void *ud, xcm_link *l) {
  xcm_pool *p = ud;
  link_slot *ls = &p->links[xcm__link_index(l)];
  xcm_up_session *s;

  if (!ls->congested)
    return;
  ls->congested = 0;
  for (s = ls->head; s != NULL; s = s->lnext)
    set_paused(s, 0);
}

/* ---- the server's stanzas ---------------------------------------------- */

static xcm_up_session *find(xcm_pool *p, const char *sid) {
  return sid ? (xcm_up_session *)xcm__map_get(&p->sessions, sid, strlen(sid))
             : NULL;
}

/* Return a message to the server, to be stored offline. */
static int send_failed(xcm_pool *p, xcm_up_session *s, const char *msg,
                       size_t len) {
  request *r;
  int err;

  xcm__buf_reset(&p->tmp);
  err = xcm__route_put_element(
      &p->tmp, msg, len, 0,
      xcm__xml_declares_default(msg, len) ? NULL : XCM_NS_CLIENT, NULL, 0, 0);
  if (err != 0)
    return err;
  r = request_new(p, R_FAILED, NULL);
  if (r == NULL)
    return XCM_ENOMEM;
  err = xcm__cm_session_failed(&p->scratch, link_jid(p, s->link), p->opt.domain,
                               r->id, s->sid, p->tmp.data, p->tmp.len);
  if (err == 0)
    err = send_on(p, s->link >= 0 ? s->link : pick_link(p, -1), p->scratch.data,
                  p->scratch.len);
  xcm__buf_reset(&p->scratch);
  if (err != 0) {
    request_free(p, r);
    return err;
  }
  p->stats.failed_sent++;
  return 0;
}

/* Answer an iq get or set on behalf of a client that is gone. */
static int send_bounce(xcm_pool *p, xcm_up_session *s, const char *id,
                       const char *from, const char *to) {
  int err;

  xcm__buf_reset(&p->tmp);
  err = xcm__cm_iq_bounce(&p->tmp, id, from, to);
  if (err != 0)
    return err;
  err = xcm__route_wrap_bytes(&p->scratch, p->tmp.data, p->tmp.len, s->sid,
                              p->opt.domain, link_jid(p, s->link));
  if (err == 0)
    err = send_on(p, s->link >= 0 ? s->link : pick_link(p, -1), p->scratch.data,
                  p->scratch.len);
  xcm__buf_reset(&p->scratch);
  if (err == 0)
    p->stats.bounced++;
  return err;
}

/* A route's payload the session can no longer take: a message goes back
 * to be stored offline (unless it is an error), an iq get or set is
 * answered with an error. inner has its attributes. */
static int undeliverable_node(xcm_pool *p, xcm_up_session *s,
                              const xcm_xml_node *inner, const xcm_route *r) {
  const char *type = xcm__xml_node_attr(inner, "type");
  int err = 0;

  if (strcmp(inner->name, "message") == 0 &&
      (type == NULL || strcmp(type, "error") != 0)) {
    err = send_failed(p, s, r->inner, r->inner_len);
    if (err == 0)
      err = XCM__RETURNED_MESSAGE;
  } else if (strcmp(inner->name, "iq") == 0 && type != NULL &&
             (strcmp(type, "get") == 0 || strcmp(type, "set") == 0)) {
    err = send_bounce(p, s, xcm__xml_node_attr(inner, "id"),
                      xcm__xml_node_attr(inner, "from"),
                      xcm__xml_node_attr(inner, "to"));
    if (err == 0)
      err = XCM__RETURNED_IQ;
  }
  if (err < 0)
    xcm__log(p->ctx, XCM_LOG_WARN,
             "upstream: could not return an undeliverable <%s/> for %s: %s",
             inner->name, s->sid, xcm_strerror(err));
  return err;
}

typedef struct payload_read {
  xcm_pool *p;
  xcm_up_session *s;
  const xcm_route *r;
  int result; /* undeliverable_node's */
} payload_read;

static int payload_levels(void *ud, const char *ns, const char *name) {
  (void)ud, (void)ns, (void)name;
  return 1;
}

static int payload_stanza(void *ud, const xcm_xml_stanza *st) {
  payload_read *pr = ud;

  pr->result = undeliverable_node(pr->p, pr->s, st->root, pr->r);
  return 0;
}

/* The payload is usually read without its attributes (see
 * on_link_payload_attrs); one whose route began before its session
 * closed still is. Its attributes are then read from its bytes as an
 * element, in the upstream stream's namespaces: rare, so the cost does
 * not matter, and exact where a walk over the start tag would have to
 * cap and unescape by hand. The route held exactly this one element. */
static void undeliverable(xcm_pool *p, xcm_up_session *s,
                          const xcm_xml_stanza *st, const xcm_route *r) {
  const xcm_xml_node *inner = st->root->children;
  payload_read pr = {p, s, r, 0};
  int err;

  if (inner == NULL || r->inner == NULL)
    return;
  if (inner->nattrs > 0) {
    undeliverable_node(p, s, inner, r);
    return;
  }
  err = xcm__xml_read_standalone(p->ctx->xml, &xcm__stream_cm, r->inner,
                                 r->inner_len, 64, 0, payload_levels,
                                 payload_stanza, &pr);
  if (err != 0)
    xcm__log(p->ctx, XCM_LOG_WARN,
             "upstream: could not read an undeliverable <%s/> for %s: %s",
             inner->name, s->sid, xcm_strerror(err));
}

static void on_route(xcm_pool *p, const xcm_xml_stanza *st) {
  xcm_route r;
  const char *why;
  xcm_up_session *s;

  if (xcm__route_unwrap(st, &r, &why) != 0) {
    p->stats.routes_refused++;
    xcm__log(p->ctx, XCM_LOG_WARN, "upstream: refused a route: %s", why);
    return;
  }
  p->stats.routes_in++;
  s = find(p, r.streamid);
  if (s == NULL) {
    /* After a close (ours or the server's) Openfire may still route a
     * last unavailable presence: nobody to give it to. */
    p->stats.routes_unknown++;
    return;
  }
  if (r.type != NULL && strcmp(r.type, "error") == 0) {
    p->stats.route_errors++;
    if (s->state != S_CLOSING && s->cb->route_error != NULL)
      s->cb->route_error(s->ud, r.inner ? r.inner : r.text,
                         r.inner ? r.inner_len : r.text_len);
    return;
  }
  if (s->state == S_CLOSING) {
    undeliverable(p, s, st, &r);
    linger_more(p, s);
    return;
  }
  s->cb->deliver(s->ud, &r);
}

static void flush_hold(xcm_pool *p, xcm_up_session *s) {
  xcm_buf *h = s->hold;
  int err;

  if (h == NULL)
    return;
  s->hold = NULL;
  err = send_on(p, s->link, h->data, h->len);
  if (err == 0)
    p->stats.routes_out++;
  xcm__buf_free(h);
  xcm__free(p->ctx->alloc, h);
}

/* Our requests' ids carry this pool's random tag ("x%08x-", new_request).
 * An answer with another tag was asked for by another CM process that
 * Openfire counts as this one: two instances under one name (with
 * different resource prefixes, or on Openfire 4.1.6, which refuses
 * neither), whose sessions Openfire then mixes. Nothing else shows it:
 * say so, at error level, at most once a minute. */
static void foreign_answer(xcm_pool *p, const char *id) {
  unsigned long tag;
  char *end;
  int i;

  if (id[0] != 'x' || strlen(id) < 10 || id[9] != '-')
    return;
  for (i = 1; i < 9; i++)
    if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
      return;
  tag = strtoul(id + 1, &end, 16);
  if (end != id + 9 || tag == p->id_tag)
    return;
  p->foreign_answers++;
  if (p->foreign_answers > 1 && now(p) - p->foreign_logged_at < 60000)
    return;
  p->foreign_logged_at = now(p);
  xcm__log(p->ctx, XCM_LOG_ERROR,
           "upstream: Openfire sent %s an answer to another connection "
           "manager's request (id %s; %llu so far): another CM is connected "
           "under the same name, and Openfire mixes the sessions of the two. "
           "Give each instance its own name ([upstream] name, "
           "xcm_options.name)",
           p->opt.name, id, (unsigned long long)p->foreign_answers);
}

static void on_answer(xcm_pool *p, const xcm_xml_stanza *st, const char *id,
                      int ok) {
  request *r = (request *)xcm__map_get(&p->requests, id, strlen(id));
  xcm_up_session *s;

  (void)st;
  if (r == NULL) {
    foreign_answer(p, id);
    return;
  }
  s = r->s;
  switch (r->kind) {
  case R_CREATE:
    request_free(p, r);
    if (s == NULL || s->state != S_CREATING)
      return;
    if (ok) {
      s->state = S_OPEN;
      flush_hold(p, s);
      s->cb->created(s->ud, 0);
    } else {
      const xcm_up_session_cb *cb = s->cb;
      void *owner = s->ud;

      session_free(p, s);
      cb->created(owner, XCM_EAUTH);
    }
    return;
  case R_CLOSE:
    request_free(p, r);
    if (s != NULL)
      session_free(p, s);
    return;
  case R_FAILED:
    if (!ok)
      xcm__log(p->ctx, XCM_LOG_WARN,
               "upstream: the server refused a returned message (%s)", id);
    request_free(p, r);
    return;
  }
}

/* The server ends a session: resource conflict, kick, account gone. */
static void on_server_close(xcm_pool *p, int link, const xcm_xml_stanza *st,
                            const xcm_xml_node *session, const char *id) {
  const char *sid = xcm__xml_node_attr(session, "id");
  const xcm_xml_node *close = xcm__xml_node_child(session, NULL, "close");
  const xcm_xml_node *err_node = NULL, *c;
  xcm_up_session *s = find(p, sid);
  const char *jid = xcm__link_jid(p->links[link].link);
  int err;

  if (s == NULL || sid == NULL) {
    err = xcm__cm_session_not_found(&p->scratch, jid, p->opt.domain,
                                    id ? id : "", sid ? sid : "");
  } else {
    err = xcm__cm_iq_result(&p->scratch, jid, p->opt.domain, id ? id : "");
  }
  if (err == 0)
    send_on(p, link, p->scratch.data, p->scratch.len);
  xcm__buf_reset(&p->scratch);
  if (s == NULL)
    return;
  for (c = close ? close->children : NULL; c != NULL; c = c->next)
    if (strcmp(c->ns, XCM_NS_STREAMS) == 0 && strcmp(c->name, "error") == 0)
      err_node = c;
  if (s->state == S_CLOSING) {
    session_free(p, s);
  } else {
    const xcm_up_session_cb *cb = s->cb;
    void *owner = s->ud;

    session_free(p, s);
    if (err_node != NULL)
      cb->closed(owner, st->bytes + err_node->off, err_node->len);
    else
      cb->closed(owner, NULL, 0);
  }
}

static void on_iq(xcm_pool *p, int link, const xcm_xml_stanza *st) {
  const xcm_xml_node *iq = st->root;
  const char *type = xcm__xml_node_attr(iq, "type");
  const char *id = xcm__xml_node_attr(iq, "id");
  const xcm_xml_node *session;

  if (type == NULL)
    return;
  if (strcmp(type, "result") == 0 || strcmp(type, "error") == 0) {
    if (id != NULL)
      on_answer(p, st, id, type[0] == 'r');
    return;
  }
  session = xcm__xml_node_child(iq, XCM_NS_CM_PROTOCOL, "session");
  if (strcmp(type, "set") == 0 && session != NULL &&
      xcm__xml_node_child(session, NULL, "close") != NULL)
    on_server_close(p, link, st, session, id);
}

static void on_link_stanza(void *ud, xcm_link *l, const xcm_xml_stanza *st) {
  xcm_pool *p = ud;

  if (strcmp(st->name, "route") == 0)
    on_route(p, st);
  else if (strcmp(st->name, "iq") == 0)
    on_iq(p, (int)xcm__link_index(l), st);
  else
    xcm__log(p->ctx, XCM_LOG_DEBUG, "upstream: ignored <%s/> from the server",
             st->name);
}

static void on_link_closed(void *ud, xcm_link *l);

static int on_link_payload_attrs(void *ud) {
  const xcm_pool *p = ud;

  return p->nclosing > 0 && !p->always_bare;
}

void xcm__pool_set_bare_payloads(xcm_pool *p, int always) {
  p->always_bare = always;
}

static const xcm_link_cb link_cb = {
    on_link_up,       on_link_down,  on_link_policy, on_link_stanza,
    on_link_shutdown, on_link_drain, on_link_closed, on_link_payload_attrs};

/* ---- timeouts ------------------------------------------------------------ */

static void on_timer(uv_timer_t *t) {
  xcm_pool *p = t->data;
  uint64_t n = now(p);
  request *r;

  while ((r = p->req_head) != NULL && r->deadline <= n) {
    xcm_up_session *s = r->s;
    enum request_kind kind = r->kind;

    request_free(p, r);
    if (s == NULL)
      continue;
    if (kind == R_CREATE && s->state == S_CREATING) {
      const xcm_up_session_cb *cb = s->cb;
      void *owner = s->ud;

      session_free(p, s);
      cb->created(owner, XCM_ETIMEDOUT);
    } else if (kind == R_CLOSE) {
      session_free(p, s);
    }
  }
}

/* ---- the server's certificate refused ------------------------------------ */

/* Where Openfire keeps its certificate (the package's home), for the
 * command that shows its fingerprint on the Openfire host. */
#define OPENFIRE_KEYSTORE "/usr/share/openfire/resources/security/keystore"

/* Refused by the TLS layer: say what failed, what was seen and the ways
 * out, once per certificate. Several lines, so that each stays readable
 * in syslog. */
static void on_refused(void *ud, const xcm_tls_refusal *r) {
  xcm_pool *p = ud;
  xcm_ctx *ctx = p->ctx;
  char seen[112], pin[112], where[300];
  const char *effect = "no link comes up, and clients are refused";
  unsigned i;

  /* Which server: of a cluster, the node the link was for (by the name
   * it was verified against). */
  snprintf(where, sizeof where, "%s:%d", p->opt.host, p->opt.port);
  if (p->nnodes > 1) {
    effect = "no link to that node comes up, and it takes no sessions";
    snprintf(where, sizeof where, "%s", r->peer ? r->peer : "a node");
    for (i = 0; r->peer != NULL && i < p->nnodes; i++)
      if (strcmp(p->nodes[i].host, r->peer) == 0) {
        snprintf(where, sizeof where, "%s", p->nodes[i].label);
        break;
      }
  }
  for (i = 0; i < p->ntold; i++)
    if (memcmp(p->told[i], r->sha256, 32) == 0) {
      xcm__log(ctx, XCM_LOG_DEBUG,
               "upstream: %s: the certificate refused before, again: %s", where,
               r->why);
      return;
    }
  memcpy(p->told[p->told_next], r->sha256, 32);
  p->told_next = (p->told_next + 1) % 8;
  if (p->ntold < 8)
    p->ntold++;
  xcm__tls_format_fingerprint(r->sha256, seen, sizeof seen);
  if (r->pin != NULL) {
    xcm__tls_format_fingerprint(r->pin, pin, sizeof pin);
    xcm__log(ctx, XCM_LOG_ERROR,
             "upstream: the certificate of %s does not match the pinned "
             "fingerprint: pinned %s, seen %s; %s (told once per "
             "certificate)",
             where, pin, seen, effect);
  } else {
    xcm__log(ctx, XCM_LOG_ERROR,
             "upstream: certificate verification failed for %s: %s; %s "
             "(told once per certificate)",
             where, r->why, effect);
  }
  xcm__log(ctx, XCM_LOG_ERROR,
           "upstream: the certificate seen: %s, subject \"%s\", issuer "
           "\"%s\", valid %s to %s",
           seen, r->subject, r->issuer, r->valid_from, r->valid_to);
  /* Out of band: s_client cannot speak to the CM port itself (Openfire
   * refuses a jabber:client header there), so either the keystore or
   * the client port, which has the same certificate unless set apart,
   * from the Openfire host. */
  xcm__log(ctx, XCM_LOG_ERROR,
           "upstream: way out 1, pin this certificate once you know it is "
           "Openfire's: on the Openfire host, 'keytool -list -v "
           "-keystore " OPENFIRE_KEYSTORE
           " -storepass changeit' (or 'openssl s_client "
           "-connect 127.0.0.1:5222 -starttls xmpp -xmpphost %s </dev/null "
           "| openssl x509 -noout -fingerprint -sha256', the client port's "
           "certificate, the same unless set apart) must show this "
           "fingerprint; then set: [upstream] fingerprint = %s (manager.xml: "
           "xmpp.server.certificate.fingerprint; API: "
           "xcm_options.upstream_fingerprint)",
           p->opt.domain, seen);
  xcm__log(ctx, XCM_LOG_ERROR,
           "upstream: way out 2, trust the CA that issued it%s: [upstream] "
           "ca_file = /path/to/ca.pem (API: xcm_options.upstream_ca_file); "
           "or give Openfire a certificate from a CA this host trusts",
           r->pin != NULL ? " (instead of the pin)" : "");
  xcm__log(ctx, XCM_LOG_ERROR,
           "upstream: way out 3, not recommended (anyone in the path can "
           "then read the secret and every session): [upstream] "
           "accept_self_signed = yes (API: "
           "xcm_options.upstream_accept_self_signed)");
}

/* ---- the pool ------------------------------------------------------------ */

int xcm__pool_new(xcm_pool **out, xcm_ctx *ctx, const xcm_pool_options *opt,
                  const xcm_pool_events *ev, void *ud) {
  xcm_pool *p;
  unsigned i;
  int err;

  *out = NULL;
  p = xcm__calloc(ctx->alloc, sizeof(*p));
  if (p == NULL)
    return XCM_ENOMEM;
  p->ctx = ctx;
  if (ev != NULL)
    p->ev = *ev;
  p->ud = ud;
  xcm__map_init(&p->sessions, ctx->alloc);
  xcm__map_init(&p->requests, ctx->alloc);
  xcm__random(&p->id_tag, sizeof p->id_tag);
  xcm__buf_init(&p->scratch, ctx->alloc);
  xcm__buf_init(&p->tmp, ctx->alloc);
  err = copy_options(p, opt);
  if (err == 0 && p->opt.tls != XCM_UP_TLS_OFF) {
    xcm_tls_options to;
    char msg[256];

    memset(&to, 0, sizeof to);
    to.ca_file = p->opt.ca_file;
    to.verify = !p->opt.accept_self_signed;
    to.pin_sha256 = p->opt.pin_sha256;
    to.refused = on_refused;
    to.refused_ud = p;
    if (p->opt.accept_self_signed)
      xcm__log(ctx, XCM_LOG_WARN,
               "upstream: NOT verifying the server's certificate "
               "(accept_self_signed): anyone in the path can read the "
               "secret and every session");
    if (p->opt.pin_sha256 != NULL) {
      xcm__tls_format_fingerprint(p->opt.pin_sha256, msg, sizeof msg);
      xcm__log(ctx, XCM_LOG_INFO,
               "upstream: trusting only the server certificate %s (pinned)",
               msg);
    }
    err = xcm__tls_config_new(&p->tls, ctx, 0, &to, msg, sizeof msg);
    if (err != 0)
      xcm__log(ctx, XCM_LOG_ERROR, "upstream TLS: %s", msg);
  }
  if (err == 0) {
    p->nlinks = p->nnodes * p->opt.connections;
    p->links = xcm__calloc(ctx->alloc, p->nlinks * sizeof(*p->links));
    if (p->links == NULL)
      err = XCM_ENOMEM;
  }
  /* Node by node: a node's links are next to each other, and their
   * indexes (so their resources) run on over every node. */
  for (i = 0; err == 0 && i < p->nlinks; i++) {
    const node_slot *nd = &p->nodes[i / p->opt.connections];

    p->links[i].node = i / p->opt.connections;
    err = xcm__link_new(&p->links[i].link, ctx, &p->opt, nd->host, nd->port,
                        p->tls, i, &link_cb, p);
  }
  if (err != 0) {
    /* Links never connected hold no handle yet: free them now. */
    for (i = 0; p->links != NULL && i < p->nlinks; i++)
      xcm__link_free(p->links[i].link);
    xcm__free(ctx->alloc, p->links);
    xcm__free(ctx->alloc, p->nodes);
    if (p->tls != NULL)
      xcm__tls_config_unref(p->tls);
    xcm__free(ctx->alloc, p->strings);
    xcm__free(ctx->alloc, p);
    return err;
  }
  uv_timer_init(ctx->loop, &p->timer);
  p->timer.data = p;
  uv_timer_init(ctx->loop, &p->linger_timer);
  p->linger_timer.data = p;
  *out = p;
  return 0;
}

int xcm__pool_start(xcm_pool *p) {
  unsigned i;
  uint64_t tick = p->opt.request_timeout_ms / 4 + 1;

  uv_timer_start(&p->timer, on_timer, tick < 1000 ? tick : 1000,
                 tick < 1000 ? tick : 1000);
  for (i = 0; i < p->nlinks; i++)
    xcm__link_connect(p->links[i].link);
  return 0;
}

static void finish_close(xcm_pool *p) {
  unsigned i;
  void (*cb)(void *) = p->close_cb;
  void *ud = p->close_ud;

  if (--p->open_handles > 0)
    return;
  for (i = 0; i < p->nlinks; i++)
    xcm__link_free(p->links[i].link);
  xcm__free(p->ctx->alloc, p->links);
  xcm__free(p->ctx->alloc, p->nodes);
  xcm__map_free(&p->sessions);
  xcm__map_free(&p->requests);
  xcm__buf_free(&p->scratch);
  xcm__buf_free(&p->tmp);
  if (p->tls != NULL)
    xcm__tls_config_unref(p->tls);
  xcm__free(p->ctx->alloc, p->strings);
  xcm__free(p->ctx->alloc, p);
  if (cb != NULL)
    cb(ud);
}

static void on_link_closed(void *ud, xcm_link *l) {
  (void)l;
  finish_close(ud);
}

static void on_timer_closed(uv_handle_t *h) {
  finish_close(h->data);
}

static void drop_session(xcm_map_entry *e, void *ud) {
  session_free(ud, (xcm_up_session *)e);
}

static void send_close(xcm_pool *p, xcm_up_session *s);

void xcm__pool_close(xcm_pool *p, void (*cb)(void *ud), void *ud) {
  unsigned i;

  if (p->closing)
    return;
  p->closing = 1;
  p->close_cb = cb;
  p->close_ud = ud;
  /* Sessions still lingering get their close now, ahead of the end of
   * the stream: the server must hear of every session. */
  while (p->linger_head != NULL) {
    xcm_up_session *s = p->linger_head;

    p->linger_head = s->linger_next;
    s->lingering = 0;
    s->linger_next = NULL;
    send_close(p, s);
  }
  p->linger_tail = NULL;
  while (p->req_head != NULL)
    request_free(p, p->req_head);
  xcm__map_each(&p->sessions, drop_session, p);
  p->open_handles = 2 + (int)p->nlinks;
  uv_close((uv_handle_t *)&p->timer, on_timer_closed);
  uv_close((uv_handle_t *)&p->linger_timer, on_timer_closed);
  for (i = 0; i < p->nlinks; i++)
    xcm__link_close(p->links[i].link);
}

const xcm_policy *xcm__pool_policy(const xcm_pool *p) {
  return p->have_policy ? &p->policy : NULL;
}

unsigned xcm__pool_links_up(const xcm_pool *p) {
  return p->up;
}

enum xcm_link_state xcm__pool_link_state(const xcm_pool *p, unsigned i,
                                         const char **resource) {
  if (i >= p->nlinks)
    return XCM_LINK_IDLE;
  if (resource != NULL)
    *resource = xcm__link_jid(p->links[i].link);
  return xcm__link_state(p->links[i].link);
}

int xcm__pool_link_tls(const xcm_pool *p, unsigned i) {
  return i < p->nlinks && xcm__link_is_tls(p->links[i].link);
}

int xcm__pool_link_zlib(const xcm_pool *p, unsigned i) {
  return i < p->nlinks && xcm__link_is_zlib(p->links[i].link);
}

size_t xcm__pool_link_queued(const xcm_pool *p, unsigned i) {
  return i < p->nlinks ? xcm__link_queued(p->links[i].link) : 0;
}

void xcm__pool_stats(const xcm_pool *p, xcm_pool_stats *out) {
  *out = p->stats;
}

unsigned xcm__pool_links(const xcm_pool *p) {
  return p->nlinks;
}

unsigned xcm__pool_nodes(const xcm_pool *p) {
  return p->nnodes;
}

unsigned xcm__pool_nodes_up(const xcm_pool *p) {
  unsigned i, n = 0;

  for (i = 0; i < p->nnodes; i++)
    n += node_up(&p->nodes[i]) ? 1u : 0u;
  return n;
}

unsigned xcm__pool_link_node(const xcm_pool *p, unsigned i) {
  return i < p->nlinks ? p->links[i].node : 0;
}

int xcm__pool_node(const xcm_pool *p, unsigned i, xcm_pool_node_view *out) {
  const node_slot *nd;
  unsigned k;

  if (i >= p->nnodes)
    return XCM_EINVAL;
  nd = &p->nodes[i];
  memset(out, 0, sizeof *out);
  out->label = nd->label;
  out->first_link = nd->first;
  out->links = p->opt.connections;
  out->links_up = nd->links_up;
  out->up = node_up(nd);
  for (k = nd->first; k < nd->first + p->opt.connections; k++)
    out->sessions += p->links[k].count;
  out->losses = nd->losses;
  out->sessions_lost = nd->sessions_lost;
  return 0;
}

size_t xcm__pool_session_count(const xcm_pool *p) {
  return p->sessions.count;
}

/* ---- sessions ------------------------------------------------------------ */

int xcm__pool_session_open(xcm_pool *p, const char *sid, const char *host_name,
                           const char *address, const xcm_up_session_cb *cb,
                           void *ud, xcm_up_session **out) {
  size_t len = strlen(sid);
  xcm_up_session *s;
  int link, err;

  *out = NULL;
  if (p->closing)
    return XCM_ECLOSED;
  link = pick_link(p, -1);
  if (link < 0)
    return XCM_EBUSY;
  if (len == 0 || find(p, sid) != NULL)
    return XCM_EINVAL;
  s = xcm__calloc(p->ctx->alloc, sizeof(*s) + len + 1);
  if (s == NULL)
    return XCM_ENOMEM;
  memcpy(s->sid, sid, len + 1);
  s->e.key = s->sid;
  s->pool = p;
  s->cb = cb;
  s->ud = ud;
  s->link = -1;
  s->state = S_CREATING;
  if (xcm__map_put(&p->sessions, &s->e) != 0) {
    xcm__free(p->ctx->alloc, s);
    return XCM_ENOMEM;
  }
  pin(p, s, link);
  err = send_create(p, s, host_name, address);
  if (err != 0) {
    session_free(p, s);
    return err;
  }
  p->stats.sessions++;
  *out = s;
  return 0;
}

int xcm__pool_session_send(xcm_up_session *s, const xcm_xml_stanza *st,
                           const xcm_xml_nsdecl *decls, size_t ndecls) {
  xcm_pool *p = s->pool;
  int err;

  if (s->state == S_CLOSING || s->link < 0)
    return XCM_ECLOSED;
  if (s->state == S_CREATING) {
    /* Openfire refuses routes before the create is answered: hold them,
     * in order, within a bound. */
    if (s->hold == NULL) {
      s->hold = xcm__alloc(p->ctx->alloc, sizeof(*s->hold));
      if (s->hold == NULL)
        return XCM_ENOMEM;
      xcm__buf_init(s->hold, p->ctx->alloc);
    }
    if (s->hold->len + st->len > p->opt.hold_max)
      return XCM_ELIMIT;
    return xcm__route_wrap(s->hold, st, decls, ndecls, s->sid, p->opt.domain,
                           link_jid(p, s->link));
  }
  err = xcm__route_wrap(&p->scratch, st, decls, ndecls, s->sid, p->opt.domain,
                        link_jid(p, s->link));
  if (err == 0)
    err = send_on(p, s->link, p->scratch.data, p->scratch.len);
  xcm__buf_reset(&p->scratch);
  if (err == 0)
    p->stats.routes_out++;
  return err;
}

int xcm__pool_session_failed(xcm_up_session *s, const char *msg, size_t len) {
  return send_failed(s->pool, s, msg, len);
}

int xcm__pool_session_return(xcm_up_session *s, const char *bytes, size_t len) {
  xcm_pool *p = s->pool;
  xcm_route r;
  payload_read pr = {p, s, &r, 0};
  int err;

  memset(&r, 0, sizeof r);
  r.inner = bytes;
  r.inner_len = len;
  /* The bytes are what the server routed, read again in the upstream
   * stream's namespaces as a route's payload is (undeliverable()). */
  err = xcm__xml_read_standalone(p->ctx->xml, &xcm__stream_cm, bytes, len, 64,
                                 0, payload_levels, payload_stanza, &pr);
  return err != 0 ? err : pr.result;
}

static void send_close(xcm_pool *p, xcm_up_session *s) {
  request *r;
  int err;

  r = request_new(p, R_CLOSE, s);
  if (r == NULL) {
    session_free(p, s);
    return;
  }
  s->req = r;
  err = xcm__cm_session_close(&p->scratch, link_jid(p, s->link), p->opt.domain,
                              r->id, s->sid);
  if (err == 0)
    err = send_on(p, s->link, p->scratch.data, p->scratch.len);
  xcm__buf_reset(&p->scratch);
  if (err != 0) {
    /* No way to tell the server now; it learns when the link goes. */
    session_free(p, s);
  }
}

static void on_linger(uv_timer_t *t) {
  xcm_pool *p = t->data;
  uint64_t n = now(p);
  xcm_up_session *s;
  unsigned i;
  /* While returns are unanswered, or a link has output queued (its
   * clients' reads paused when it is congested), the server is behind:
   * what clients sent to a lingering session may not have reached it, a
   * close on a quieter link would overtake it, and the server would
   * route it to the session after closing it (a <failed/> then finds the
   * session gone). Seen with many clients dropped at once. */
  int congested = p->failed_pending > 0;

  for (i = 0; i < p->nlinks; i++)
    congested |=
        p->links[i].congested ||
        (p->links[i].link != NULL && xcm__link_queued(p->links[i].link) > 0);

  while ((s = p->linger_head) != NULL && s->close_at <= n) {
    p->linger_head = s->linger_next;
    if (p->linger_head == NULL)
      p->linger_tail = NULL;
    s->linger_next = NULL;
    /* Late by half a spell (the loop was busy, and routes for the
     * session may wait unread in a link's socket), or clients held back
     * by congestion: one more spell (within LINGER_MAX), at the tail, so
     * that what is on its way arrives before the close. */
    if ((congested || n - s->close_at > p->opt.linger_ms / 2) &&
        s->lingering < LINGER_MAX) {
      s->close_at = n + p->opt.linger_ms;
      s->lingering++;
      linger_append(p, s);
      continue;
    }
    s->lingering = 0;
    send_close(p, s);
  }
  if (p->linger_head != NULL)
    uv_timer_start(&p->linger_timer, on_linger, p->linger_head->close_at - n,
                   0);
}

void xcm__pool_session_close(xcm_up_session *s) {
  xcm_pool *p = s->pool;

  if (s->state == S_CLOSING)
    return;
  s->state = S_CLOSING;
  p->nclosing++;
  s->cb = NULL;
  s->ud = NULL;
  if (s->hold != NULL) {
    xcm__buf_free(s->hold);
    xcm__free(p->ctx->alloc, s->hold);
    s->hold = NULL;
  }
  if (s->req != NULL) {
    s->req->s = NULL;
    s->req = NULL;
  }
  if (p->closing) {
    send_close(p, s);
    return;
  }
  /* Openfire reads a CM's link in order: a <failed/> sent after the
   * close would find the session gone. Linger first. */
  s->close_at = now(p) + p->opt.linger_ms;
  s->lingering = 1;
  linger_append(p, s);
  if (!uv_is_active((uv_handle_t *)&p->linger_timer))
    uv_timer_start(&p->linger_timer, on_linger, p->opt.linger_ms, 0);
}

const char *xcm__up_session_sid(const xcm_up_session *s) {
  return s->sid;
}

int xcm__up_session_link(const xcm_up_session *s) {
  return s->link;
}
