#include "session/session_int.h"

#include <string.h>

#include "client/authid.h"
#include "proto/route.h"
#include "session/group.h"
#include "session/sm.h"
#include "util/alloc.h"
#include "xml/element.h"
#include "xcm/error.h"

void xcm__sessions_init(xcm_sessions *t, xcm_ctx *ctx, xcm_counters *counters) {
  memset(t, 0, sizeof(*t));
  t->ctx = ctx;
  t->counters = counters;
  t->max_clients = t->max_per_address = XCM__OFF;
  xcm__map_init(&t->per_address, ctx->alloc);
  xcm__map_init(&t->by_sid, ctx->alloc);
  xcm__map_init(&t->by_resume, ctx->alloc);
}

xcm_session *xcm__sessions_find(const xcm_sessions *t, const char *sid) {
  return sid != NULL ? (xcm_session *)xcm__map_get(&t->by_sid, sid, strlen(sid))
                     : NULL;
}

void xcm__session_view(const xcm_session *s, xcm_session_view *out) {
  memset(out, 0, sizeof(*out));
  out->link = s->up != NULL ? xcm__up_session_link(s->up) : -1;
  out->data = s->data;
  out->jid = s->jid;
  if (s->client == NULL) {
    out->sid = s->r->sid;
    out->peer = "";
    out->authenticated = 1;
    out->detached = 1;
    return;
  }
  out->sid = xcm__client_sid(s->client);
  out->peer = xcm__client_peer(s->client);
  out->jid = s->jid;
  out->authenticated = xcm__client_authenticated(s->client);
  out->tls = xcm__client_secured(s->client);
  out->compressed = xcm__client_compressed(s->client);
}

void xcm__session_set_data(xcm_session *s, void *data) {
  s->data = data;
}

void *xcm__session_data(const xcm_session *s) {
  return s->data;
}

void xcm__session_close(xcm_session *s, xcm_cond cond, const char *text) {
  if (s->client == NULL)
    xcm__ses_end_detached(s, XCM_ECLOSED, text);
  else
    xcm__client_fail(s->client, cond, text);
}

static void free_count(xcm_map_entry *e, void *ud) {
  xcm_sessions *t = ud;

  xcm__map_remove(&t->per_address, e);
  xcm__free(t->ctx->alloc, e);
}

void xcm__sessions_free(xcm_sessions *t) {
  xcm__map_each(&t->per_address, free_count, t);
  xcm__map_free(&t->per_address);
  xcm__map_free(&t->by_sid);
  xcm__map_free(&t->by_resume);
}

/* ---- the stanza hook ----------------------------------------------------- */

static const xcm_xml_nsdecl client_context[] = {{"stream", XCM_NS_STREAMS},
                                                {"", XCM_NS_CLIENT}};

/* What a replacement is read for: the session, and the client's stream
 * context it is read in. */
typedef struct one_element {
  xcm_session *s;
  const xcm_xml_nsdecl *decls;
  size_t ndecls;
} one_element;

/* A hook's replacement must be exactly one well-formed element in the
 * client's namespace context, or it could break the route framing. */
static int read_replacement(xcm_session *s, const xcm_xml_nsdecl *decls,
                            size_t ndecls, const char *bytes, size_t len,
                            int (*fn)(void *, const xcm_xml_stanza *)) {
  one_element o = {s, decls, ndecls};

  return xcm__xml_read_element(s->table->ctx->xml, bytes, len, decls, ndecls,
                               64, 0, NULL, fn, &o);
}

static enum xcm_hook_verdict ask_hook(xcm_session *s, int to_client,
                                      const char *name, const char *bytes,
                                      size_t len, const char **rep,
                                      size_t *rep_len) {
  *rep = NULL;
  *rep_len = 0;
  return s->table->hook(s->table->hook_ud, s, to_client, name, bytes, len, rep,
                        rep_len);
}

/* ---- the upstream side -------------------------------------------------- */

/* What the server routes goes to the client, or while it is away into
 * the state its resume will send again. */
static void to_client(xcm_session *s, const xcm_route *r) {
  if (s->client != NULL)
    xcm__client_deliver(s->client, r);
  else
    xcm__ses_hold(s, r);
}

static void up_created(void *ud, int err) {
  xcm_session *s = ud;

  if (err == 0)
    return;
  /* The pool has forgotten the session already. */
  s->up = NULL;
  if (err == XCM_EAUTH)
    xcm__client_fail(s->client, XCM_COND_POLICY_VIOLATION,
                     "the server does not accept sessions from here");
  else
    xcm__client_fail(s->client, XCM_COND_REMOTE_CONNECTION_FAILED,
                     "the XMPP server did not answer");
}

static int deliver_replacement(void *ud, const xcm_xml_stanza *st) {
  const one_element *o = ud;
  xcm_session *s = o->s;
  xcm_route r;

  memset(&r, 0, sizeof r);
  r.inner = st->bytes;
  r.inner_len = st->len;
  to_client(s, &r);
  return 0;
}

static void up_deliver(void *ud, const xcm_route *r) {
  xcm_session *s = ud;

  if (s->table->hook != NULL && r->inner != NULL) {
    const char *rep;
    size_t rep_len, ql = xcm__xml_qname_length(r->inner, r->inner_len);
    const char *local = r->inner + 1, *colon = memchr(local, ':', ql);
    char buf[64], *name = buf;
    enum xcm_hook_verdict verdict;

    /* The local name, as the hook gets it for what clients send ("message"
     * for <c:message/>), and whole however long. */
    if (colon != NULL) {
      ql -= (size_t)(colon + 1 - local);
      local = colon + 1;
    }
    if (ql >= sizeof buf) {
      name = xcm__strndup(s->table->ctx->alloc, local, ql);
      if (name == NULL) {
        s->table->counters->hook_dropped++;
        return;
      }
    } else {
      memcpy(buf, local, ql);
      buf[ql] = '\0';
    }
    verdict = ask_hook(s, 1, name, r->inner, r->inner_len, &rep, &rep_len);
    if (name != buf)
      xcm__free(s->table->ctx->alloc, name);
    if (verdict == XCM__HOOK_DROP) {
      s->table->counters->hook_dropped++;
      return;
    }
    if (verdict == XCM__HOOK_REPLACE) {
      if (rep == NULL || read_replacement(s, client_context, 2, rep, rep_len,
                                          deliver_replacement) != 0)
        s->table->counters->hook_dropped++;
      else
        s->table->counters->stanzas_out++;
      return;
    }
  }
  s->table->counters->stanzas_out++;
  s->table->counters->bytes_out += r->inner ? r->inner_len : r->text_len;
  to_client(s, r);
}

static void up_closed(void *ud, const char *error, size_t len) {
  xcm_session *s = ud;

  s->up = NULL;
  if (s->client == NULL)
    xcm__ses_end_detached(s, XCM_ECLOSED, "closed by the server");
  else
    xcm__client_server_closed(s->client, error, len);
}

static void up_lost(void *ud) {
  xcm_session *s = ud;

  s->up = NULL;
  s->table->counters->sessions_lost++;
  if (s->client == NULL)
    xcm__ses_end_detached(s, XCM_ECLOSED,
                          "the connection to the XMPP server was lost");
  else
    xcm__client_fail(s->client, XCM_COND_REMOTE_CONNECTION_FAILED,
                     "the connection to the XMPP server was lost");
}

static void up_route_error(void *ud, const char *inner, size_t len) {
  xcm_session *s = ud;

  (void)inner;
  (void)len;
  /* The server no longer knows this session (or refused our framing):
   * the client must start over. */
  if (s->client == NULL)
    xcm__ses_end_detached(s, XCM_ECLOSED, "the server lost this session");
  else
    xcm__client_fail(s->client, XCM_COND_UNDEFINED_CONDITION,
                     "the server lost this session");
}

static void up_pause(void *ud) {
  xcm_session *s = ud;

  s->up_paused = 1;
  if (s->client != NULL)
    xcm__client_pause(s->client);
}

static void up_resume(void *ud) {
  xcm_session *s = ud;

  s->up_paused = 0;
  if (s->client != NULL)
    xcm__client_resume(s->client);
}

static const xcm_up_session_cb up_cb = {up_created, up_deliver,     up_closed,
                                        up_lost,    up_route_error, up_pause,
                                        up_resume};

/* ---- the client side ---------------------------------------------------- */

static int cl_open(void *ud, const char *sid, const char *address) {
  xcm_session *s = ud;
  int err;

  if (s->table->pool == NULL)
    return XCM_EBUSY;
  err = xcm__pool_session_open(s->table->pool, sid, address, address, &up_cb, s,
                               &s->up);
  if (err == 0)
    xcm__ses_event(s, XCM__SESSION_OPENED, NULL);
  return err;
}

static int send_replacement(void *ud, const xcm_xml_stanza *st) {
  const one_element *o = ud;

  return xcm__pool_session_send(o->s->up, st, o->decls, o->ndecls);
}

static int cl_stanza(void *ud, const xcm_xml_stanza *st,
                     const xcm_xml_nsdecl *decls, size_t ndecls) {
  xcm_session *s = ud;

  if (s->up == NULL)
    return XCM_ECLOSED;
  if (s->table->hook != NULL) {
    const char *rep;
    size_t rep_len;
    enum xcm_hook_verdict v =
        ask_hook(s, 0, st->name, st->bytes, st->len, &rep, &rep_len);

    if (v == XCM__HOOK_DROP) {
      s->table->counters->hook_dropped++;
      return 0;
    }
    if (v == XCM__HOOK_REPLACE) {
      int err;

      err = rep == NULL ? XCM_EXML
                        : read_replacement(s, decls, ndecls, rep, rep_len,
                                           send_replacement);
      if (err == XCM_EXML || err == XCM_ELIMIT) {
        s->table->counters->hook_dropped++;
        return 0;
      }
      if (err == 0)
        s->table->counters->stanzas_in++;
      return err;
    }
  }
  s->table->counters->stanzas_in++;
  s->table->counters->bytes_in += st->len;
  return xcm__pool_session_send(s->up, st, decls, ndecls);
}

/* Tell the owner's session-xcm__ses_event function, if any. */
void xcm__ses_event(xcm_session *s, enum xcm_session_ev ev,
                    const xcm_client_end *end) {
  if (s->table->events != NULL)
    s->table->events(s->table->events_ud, ev, s, end);
}

static void cl_authenticated(void *ud) {
  xcm_session *s = ud;

  s->table->counters->sessions_authenticated++;
  xcm__ses_event(s, XCM__SESSION_AUTHENTICATED, NULL);
}

static void cl_secured(void *ud) {
  xcm_session *s = ud;

  s->table->counters->clients_tls_now++;
}

static void cl_bound(void *ud, const char *jid, size_t len) {
  xcm_session *s = ud;

  xcm__free(s->table->ctx->alloc, s->jid);
  s->jid = xcm__strndup(s->table->ctx->alloc, jid, len);
  if (s->jid == NULL) {
    /* Bound without a JID the API could show: not a session to keep. */
    xcm__client_fail(s->client, XCM_COND_RESOURCE_CONSTRAINT, NULL);
    return;
  }
  xcm__ses_event(s, XCM__SESSION_BOUND, NULL);
}

static void cl_undelivered(void *ud, const char *msg, size_t len) {
  xcm_session *s = ud;

  if (s->up != NULL && xcm__pool_session_failed(s->up, msg, len) == 0)
    s->table->counters->failed_returned++;
}

/* A stanza the client never acknowledged (XEP-0198): it goes back as
 * any undelivered stanza does. One that cannot be returned is counted
 * in sm_return_errors: with the upstream session gone (the server ended
 * it, or every link was lost) there is nobody to return it to, and it is
 * logged at debug level only; a return that failed (the link's output
 * full, no memory) is logged at warn. */
void xcm__ses_unacked(void *ud, const char *data, size_t len) {
  xcm_session *s = ud;
  xcm_counters *c = s->table->counters;
  int r =
      s->up != NULL ? xcm__pool_session_return(s->up, data, len) : XCM_ECLOSED;

  if (r == XCM__RETURNED_MESSAGE)
    c->failed_returned++;
  if (r > 0) {
    c->sm_returned++;
  } else if (r < 0) {
    c->sm_return_errors++;
    xcm__log(s->table->ctx, s->up != NULL ? XCM_LOG_WARN : XCM_LOG_DEBUG,
             "%s: an unacknowledged stanza could not be returned: %s",
             s->client != NULL ? xcm__client_sid(s->client) : s->r->sid,
             xcm_strerror(r));
  }
}

/* What the session's connection held goes with it: the counts by
 * transport and TLS, and its place in its address's count. */
void xcm__ses_conn_release(xcm_session *s) {
  xcm_sessions *t = s->table;

  if (xcm__client_secured(s->client))
    t->counters->clients_tls_now--;
  t->counters->clients_kind_now[s->kind]--;
  if (s->addr != NULL && --s->addr->n == 0) {
    xcm__map_remove(&t->per_address, &s->addr->e);
    xcm__free(t->ctx->alloc, s->addr);
  }
  s->addr = NULL;
}

void xcm__ses_clients_now(xcm_sessions *t) {
  t->counters->clients_now = t->count - t->counters->sm_detached_now;
}

/* The session is over: the owner hears it last, then the upstream
 * session is closed and everything goes. Its connection is released
 * already. */
void xcm__ses_free(xcm_session *s, const xcm_client_end *end) {
  xcm_sessions *t = s->table;

  xcm__ses_event(s, XCM__SESSION_CLOSED, end);
  xcm__map_remove(&t->by_sid, &s->e);
  if (s->r != NULL) {
    xcm__map_remove(&t->by_resume, &s->r->e);
    if (t->group != NULL)
      xcm__group_remove(t->group, s->r->id);
    xcm__free(t->ctx->alloc, s->r);
  }
  xcm__free(t->ctx->alloc, s->jid);
  if (s->up != NULL)
    xcm__pool_session_close(s->up);
  if (s->prev != NULL)
    s->prev->next = s->next;
  else
    t->head = s->next;
  if (s->next != NULL)
    s->next->prev = s->prev;
  t->count--;
  xcm__ses_clients_now(t);
  xcm__free(t->ctx->alloc, s);
  if (t->count == 0 && t->empty != NULL)
    t->empty(t->empty_ud);
}

static void cl_closed(void *ud, const xcm_client_end *end) {
  xcm_session *s = ud;
  xcm_sessions *t = s->table;

  if (end->cond != XCM_COND_NONE && end->cond < XCM_COND_COUNT_)
    t->counters->stream_errors[end->cond]++;
  xcm__ses_conn_release(s);
  if (s->detaching) {
    /* The connection went; the session waits for its client. */
    s->detaching = 0;
    s->client = NULL;
    xcm__ses_clients_now(t); /* a waiting session holds no connection */
    xcm__ses_event(s, XCM__SESSION_DETACHED, end);
    return;
  }
  /* The owner's last look at the session still shows the client. */
  xcm__ses_free(s, end);
}

static int cl_proxied(void *ud, const char *address);

const xcm_client_cb xcm__ses_client_cb = {
    cl_open,          cl_stanza,          cl_authenticated, cl_bound,
    cl_secured,       cl_undelivered,     cl_closed,        cl_proxied,
    xcm__ses_unacked, xcm__ses_resumable, xcm__ses_detach,  xcm__ses_resume,
    xcm__ses_moved};

/* ---- accepting ---------------------------------------------------------- */

static void refused_closed(uv_handle_t *h) {
  xcm_sessions *t = h->data;

  xcm__free(t->ctx->alloc, h);
}

static void refuse(xcm_sessions *t, uv_tcp_t *tcp, uint64_t *reason) {
  t->counters->clients_refused++;
  if (reason != NULL)
    (*reason)++;
  tcp->data = t;
  uv_close((uv_handle_t *)tcp, refused_closed);
}

/* A proxy_protocol listener's peer must be one of its balancers
 * (proxy_trusted): anyone else is closed before a byte is read, so that
 * a header from a stranger is never even parsed. */
static int untrusted(xcm_sessions *t, const xcm_client_cfg *cfg,
                     uv_tcp_t *tcp) {
  struct sockaddr_storage ss;
  int len = sizeof ss;
  char name[46] = "?";

  if (!cfg->proxy_protocol)
    return 0;
  if (uv_tcp_getpeername(tcp, (struct sockaddr *)&ss, &len) != 0) {
    /* Reset before the accept: a balancer's health check (it connects
     * and resets), not a stranger. Closed, not counted. */
    xcm__log(t->ctx, XCM_LOG_DEBUG,
             "a connection reset before it was accepted: closed");
    tcp->data = t;
    uv_close((uv_handle_t *)tcp, refused_closed);
    return 1;
  }
  if (xcm__proxy_trusts(cfg->trusted, cfg->ntrusted, (struct sockaddr *)&ss))
    return 0;
  if (ss.ss_family == AF_INET6)
    uv_ip6_name((struct sockaddr_in6 *)&ss, name, sizeof name);
  else if (ss.ss_family == AF_INET)
    uv_ip4_name((struct sockaddr_in *)&ss, name, sizeof name);
  t->counters->proxy_untrusted++;
  xcm__log(t->ctx, XCM_LOG_DEBUG,
           "%s: not a trusted PROXY source (proxy_trusted): closed", name);
  tcp->data = t;
  uv_close((uv_handle_t *)tcp, refused_closed);
  return 1;
}

static addr_count *count_address(xcm_sessions *t, uv_tcp_t *tcp, int *over) {
  struct sockaddr_storage ss;
  int len = sizeof ss;
  char key[46] = "";

  *over = 0;
  if (uv_tcp_getpeername(tcp, (struct sockaddr *)&ss, &len) != 0)
    return NULL;
  if (ss.ss_family == AF_INET6)
    uv_ip6_name((struct sockaddr_in6 *)&ss, key, sizeof key);
  else
    uv_ip4_name((struct sockaddr_in *)&ss, key, sizeof key);
  return xcm__ses_count_key(t, key, over);
}

addr_count *xcm__ses_count_key(xcm_sessions *t, const char *key, int *over) {
  addr_count *a;

  *over = 0;
  a = (addr_count *)xcm__map_get(&t->per_address, key, strlen(key));
  if (a == NULL) {
    a = xcm__calloc(t->ctx->alloc, sizeof(*a));
    if (a == NULL)
      return NULL;
    memcpy(a->key, key, strlen(key) + 1);
    a->e.key = a->key;
    if (xcm__map_put(&t->per_address, &a->e) != 0) {
      xcm__free(t->ctx->alloc, a);
      return NULL;
    }
  }
  if (a->n >= t->max_per_address) {
    *over = 1;
    return a;
  }
  a->n++;
  return a;
}

static int link_session(xcm_sessions *t, xcm_session *s) {
  int err;

  s->e.key = xcm__client_sid(s->client);
  /* Stream ids are 128 random bits: a clash is not a case to handle. */
  err = xcm__map_put(&t->by_sid, &s->e);
  s->next = t->head;
  if (t->head != NULL)
    t->head->prev = s;
  t->head = s;
  t->count++;
  t->counters->clients_accepted++;
  xcm__ses_clients_now(t);
  t->counters->clients_kind_now[s->kind]++;
  /* A transport encrypted below the client (WSS, HTTPS, a secure custom
   * one) is secured from the start: cl_secured never runs for it, and
   * cl_closed counts it out all the same. */
  if (xcm__client_secured(s->client))
    t->counters->clients_tls_now++;
  /* A session the API cannot find could not be closed through it. */
  if (err != 0)
    xcm__client_fail(s->client, XCM_COND_RESOURCE_CONSTRAINT, NULL);
  return 0;
}

int xcm__session_attach(xcm_sessions *t, const xcm_client_cfg *cfg,
                        const xcm_transport *tr, const char *peer,
                        xcm_stream **stream) {
  xcm_session *s;
  int err;

  *stream = NULL;
  if (cfg->proxy_protocol &&
      !xcm__proxy_trusts_text(cfg->trusted, cfg->ntrusted, peer)) {
    t->counters->proxy_untrusted++;
    xcm__log(t->ctx, XCM_LOG_DEBUG,
             "%s: not a trusted PROXY source (proxy_trusted): refused",
             peer != NULL ? peer : "(no peer)");
    return XCM_EPROTO;
  }
  if (t->count - t->counters->sm_detached_now >= t->max_clients) {
    t->counters->clients_refused++;
    t->counters->clients_refused_total_limit++;
    return XCM_EBUSY;
  }
  s = xcm__calloc(t->ctx->alloc, sizeof(*s));
  if (s == NULL)
    return XCM_ENOMEM;
  s->table = t;
  s->kind = XCM_TRANSPORT_CUSTOM;
  err = xcm__client_new_custom(&s->client, t->ctx, cfg, tr, peer,
                               &xcm__ses_client_cb, s);
  if (err != 0) {
    xcm__free(t->ctx->alloc, s);
    return err;
  }
  *stream = xcm__client_stream(s->client);
  return link_session(t, s);
}

int xcm__session_attach_msg(xcm_sessions *t, const xcm_client_cfg *cfg,
                            const xcm_msg_transport *tr, const char *peer,
                            xcm_client **client) {
  xcm_session *s;
  addr_count *a = NULL;
  int over = 0, err;

  *client = NULL;
  if (t->count - t->counters->sm_detached_now >= t->max_clients) {
    t->counters->clients_refused++;
    t->counters->clients_refused_total_limit++;
    return XCM_EBUSY;
  }
  /* The peer is the client's address (the HTTP layer read any
   * forwarding header it trusts), so it counts as a socket's does. */
  if (t->max_per_address != XCM__OFF && peer != NULL && peer[0] != '\0' &&
      strlen(peer) < sizeof a->key) {
    a = xcm__ses_count_key(t, peer, &over);
    if (over) {
      t->counters->clients_refused++;
      t->counters->clients_refused_address_limit++;
      return XCM_EBUSY;
    }
  }
  s = xcm__calloc(t->ctx->alloc, sizeof(*s));
  if (s == NULL) {
    if (a != NULL)
      a->n--;
    return XCM_ENOMEM;
  }
  s->table = t;
  s->addr = a;
  s->kind =
      tr->kind == XCM_TRANSPORT_WEBSOCKET || tr->kind == XCM_TRANSPORT_BOSH
          ? tr->kind
          : XCM_TRANSPORT_CUSTOM;
  err = xcm__client_new_msg(&s->client, t->ctx, cfg, tr, peer,
                            &xcm__ses_client_cb, s);
  if (err != 0) {
    if (a != NULL)
      a->n--;
    xcm__free(t->ctx->alloc, s);
    return err;
  }
  *client = s->client;
  return link_session(t, s);
}

int xcm__session_accept(xcm_sessions *t, const xcm_client_cfg *cfg,
                        uv_tcp_t *tcp) {
  xcm_session *s;
  addr_count *a = NULL;
  int over = 0, err;

  if (untrusted(t, cfg, tcp))
    return XCM_EPROTO;
  if (t->count - t->counters->sm_detached_now >= t->max_clients) {
    refuse(t, tcp, &t->counters->clients_refused_total_limit);
    return XCM_EBUSY;
  }
  /* Behind a balancer the address to count comes with the PROXY header
   * (cl_proxied); the socket's is the balancer's. */
  if (t->max_per_address != XCM__OFF && !cfg->proxy_protocol) {
    a = count_address(t, tcp, &over);
    if (over) {
      refuse(t, tcp, &t->counters->clients_refused_address_limit);
      return XCM_EBUSY;
    }
  }
  s = xcm__calloc(t->ctx->alloc, sizeof(*s));
  if (s == NULL) {
    if (a != NULL)
      a->n--;
    refuse(t, tcp, NULL);
    return XCM_ENOMEM;
  }
  s->table = t;
  s->addr = a;
  err = xcm__client_new(&s->client, t->ctx, cfg, tcp, &xcm__ses_client_cb, s);
  if (err != 0) {
    if (a != NULL)
      a->n--;
    xcm__free(t->ctx->alloc, s);
    return err;
  }
  return link_session(t, s);
}

void xcm__sessions_retry(xcm_sessions *t) {
  xcm_session *s, *next;

  for (s = t->head; s != NULL; s = next) {
    next = s->next;
    if (s->client != NULL)
      xcm__client_retry(s->client);
  }
}

void xcm__sessions_fail_all(xcm_sessions *t, xcm_cond cond, const char *text) {
  xcm_session *s, *next;

  /* Shutting down: no session waits for a client that will not find
   * this instance. */
  t->closing = 1;
  for (s = t->head; s != NULL; s = next) {
    next = s->next;
    xcm__session_close(s, cond, text);
  }
}

/* A PROXY header named the client's address: count the connection
 * against it now. NULL (a LOCAL or UNKNOWN header) counts the socket's
 * address, the balancer's own. */
static int cl_proxied(void *ud, const char *address) {
  xcm_session *s = ud;
  xcm_sessions *t = s->table;
  int over = 0;

  if (t->max_per_address == XCM__OFF || s->addr != NULL)
    return 0;
  s->addr = xcm__ses_count_key(
      t, address != NULL ? address : xcm__client_peer(s->client), &over);
  if (over) {
    s->addr = NULL;
    t->counters->clients_refused++;
    t->counters->clients_refused_address_limit++;
    return XCM_EBUSY;
  }
  return 0;
}

size_t xcm__sessions_fail_some(xcm_sessions *t, size_t n, xcm_cond cond,
                               const char *text) {
  xcm_session *s = t->head;
  size_t done = 0;

  while (done < n && s != NULL) {
    size_t before = t->count;

    xcm__session_close(s, cond, text);
    if (t->count < before) {
      /* s is gone, and the owner's xcm__ses_event function may have ended
       * others (s->next among them): start again from the head. */
      done++;
      s = t->head;
    } else {
      s = s->next; /* already ending: nothing was called */
    }
  }
  return done;
}
