/* XEP-0198 resumption: the sessions that wait for their client after a
 * connection dropped (one list in the order they expire, one timer), the
 * resume that moves a new connection into one, on this instance or from
 * another of the resume group (group.h), and the end of one that waited
 * in vain. */
#include <string.h>

#include "client/authid.h"
#include "proto/route.h"
#include "session/group.h"
#include "session/session_int.h"
#include "util/alloc.h"
#include "xcm/error.h"

/* The orphan table: a connection whose session another connection
 * resumed is ended through it, and nobody hears of it any more. */
static int orphan_open(void *ud, const char *sid, const char *address) {
  (void)ud;
  (void)sid;
  (void)address;
  return XCM_ECLOSED;
}

static int orphan_stanza(void *ud, const xcm_xml_stanza *st,
                         const xcm_xml_nsdecl *decls, size_t ndecls) {
  (void)ud;
  (void)st;
  (void)decls;
  (void)ndecls;
  return XCM_ECLOSED;
}

static void orphan_closed(void *ud, const xcm_client_end *end) {
  (void)ud;
  (void)end;
}

static const xcm_client_cb orphan_cb = {
    .open = orphan_open, .stanza = orphan_stanza, .closed = orphan_closed};

int xcm__ses_resumable(void *ud, char *id) {
  xcm_session *s = ud;
  xcm_sessions *t = s->table;
  resumable *r;
  const char *sid = xcm__client_sid(s->client);

  if (t->resume_ms == 0 || s->r != NULL || strlen(sid) >= sizeof r->sid)
    return XCM_EINVAL;
  r = xcm__calloc(t->ctx->alloc, sizeof(*r));
  if (r == NULL)
    return XCM_ENOMEM;
  if (xcm__random_token(r->id) != 0) {
    xcm__free(t->ctx->alloc, r);
    return XCM_EINVAL;
  }
  r->s = s;
  r->e.key = r->id;
  if (xcm__map_put(&t->by_resume, &r->e) != 0) {
    xcm__free(t->ctx->alloc, r);
    return XCM_ENOMEM;
  }
  /* The other instances of the group find it by its id too. */
  if (t->group != NULL &&
      (s->jid == NULL ||
       xcm__group_add(t->group, r->id, t->group_index, s->jid) != 0)) {
    xcm__map_remove(&t->by_resume, &r->e);
    xcm__free(t->ctx->alloc, r);
    return XCM_ENOMEM;
  }
  /* The same key bytes, in memory that stays when the client goes. */
  memcpy(r->sid, sid, strlen(sid) + 1);
  s->e.key = r->sid;
  s->r = r;
  memcpy(id, r->id, strlen(r->id) + 1);
  return 0;
}

static void wait_timer_closed(uv_handle_t *h) {
  xcm__free((const xcm_allocator *)h->data, h);
}

static void on_wait_timer(uv_timer_t *h);

/* The timer runs while any session waits, due when the oldest expires. */
static void wait_arm(xcm_sessions *t) {
  uint64_t n = uv_now(t->ctx->loop);

  if (t->wait_head == NULL) {
    if (t->wait_timer != NULL) {
      t->wait_timer->data = (void *)t->ctx->alloc;
      uv_close((uv_handle_t *)t->wait_timer, wait_timer_closed);
      t->wait_timer = NULL;
    }
    return;
  }
  if (t->wait_timer == NULL) {
    t->wait_timer = xcm__alloc(t->ctx->alloc, sizeof(*t->wait_timer));
    if (t->wait_timer == NULL)
      return; /* on_wait_timer's next run, or the next detach, retries */
    uv_timer_init(t->ctx->loop, t->wait_timer);
  }
  t->wait_timer->data = t;
  uv_timer_start(t->wait_timer, on_wait_timer,
                 t->wait_head->expires > n ? t->wait_head->expires - n : 0, 0);
}

static void wait_unlink(xcm_sessions *t, resumable *r) {
  if (r->wprev != NULL)
    r->wprev->wnext = r->wnext;
  else
    t->wait_head = r->wnext;
  if (r->wnext != NULL)
    r->wnext->wprev = r->wprev;
  else
    t->wait_tail = r->wprev;
  r->wprev = r->wnext = NULL;
  t->counters->sm_detached_now--;
  xcm__ses_clients_now(t);
}

int xcm__ses_detach(void *ud, xcm_sm *sm) {
  xcm_session *s = ud;
  xcm_sessions *t = s->table;
  resumable *r = s->r;

  /* Only a session the server still has, on an instance that goes on.
   * Waiting sessions hold no descriptor, but memory: as many may wait as
   * may be connected, no more. */
  if (r == NULL || s->up == NULL || t->closing || t->resume_ms == 0)
    return XCM_ECLOSED;
  if (t->max_clients != XCM__OFF &&
      t->counters->sm_detached_now >= t->max_clients)
    return XCM_ELIMIT;
  r->sm = sm;
  r->expires = uv_now(t->ctx->loop) + t->resume_ms;
  r->wprev = t->wait_tail;
  r->wnext = NULL;
  if (t->wait_tail != NULL)
    t->wait_tail->wnext = r;
  else
    t->wait_head = r;
  t->wait_tail = r;
  t->counters->sm_detached_now++;
  xcm__ses_clients_now(t);
  t->counters->sm_detached++;
  s->detaching = 1;
  if (t->wait_head == r)
    wait_arm(t);
  return 0;
}

static void return_one(void *ud, const char *data, size_t len) {
  xcm_session *s = ud;
  uint64_t before = s->table->counters->sm_returned;

  xcm__ses_unacked(s, data, len);
  if (s->table->counters->sm_returned != before)
    s->table->counters->sm_expired_returned++;
}

/* A detached session ends (it waited in vain, the server ended it, the
 * instance stops): what its client never acknowledged and what arrived
 * since goes back to the server, then the session closes upstream. */
void xcm__ses_end_detached(xcm_session *s, int err, const char *text) {
  xcm_sessions *t = s->table;
  resumable *r = s->r;
  xcm_client_end end = {XCM_COND_NONE, err, text};

  wait_unlink(t, r);
  xcm__sm_drain(t->ctx->alloc, r->sm, return_one, s);
  xcm__sm_free(t->ctx->alloc, r->sm);
  r->sm = NULL;
  xcm__ses_free(s, &end);
  wait_arm(t);
}

static void on_wait_timer(uv_timer_t *h) {
  xcm_sessions *t = h->data;
  uint64_t n = uv_now(t->ctx->loop);

  while (t->wait_head != NULL && t->wait_head->expires <= n) {
    t->counters->sm_expired++;
    xcm__ses_end_detached(
        t->wait_head->s, XCM_ETIMEDOUT,
        "not resumed in time: what it did not get went back to "
        "the server");
  }
  wait_arm(t);
}

/* What the server routes to a detached session waits in its state, in
 * order and counted as sent: the resume sends it with the rest. */
void xcm__ses_hold(xcm_session *s, const xcm_route *r) {
  xcm_sessions *t = s->table;
  xcm_sm *sm = s->r->sm;
  int err;

  if (r->inner == NULL)
    return; /* white space between stanzas */
  /* Only stanzas are counted and held, as a connected client counts
   * them (client.c): anything else the server routes (a stream error
   * before it closes the session) has no connection to go to. */
  if (!xcm__xml_is_stanza(r->inner, r->inner_len))
    return;
  err = xcm__sm_push(t->ctx->alloc, sm, r->inner, r->inner_len,
                     t->sm_max_unacked, t->sm_max_unacked_bytes);
  if (err == 0)
    return;
  /* Too much waits for a client that is not back: it all goes back,
   * this one last, and the session ends. */
  t->counters->sm_overflows++;
  xcm__ses_unacked(s, r->inner, r->inner_len);
  xcm__ses_end_detached(s, err,
                        "too much held for a client that did not come back");
}

/* The session of id for user authid, live, whose state h fits: 0 and
 * *out; XCM_ENOTFOUND; or XCM_EPROTO with *sent (h acknowledges more
 * than was sent). */
static int resumable_for(xcm_sessions *t, const char *id, const char *authid,
                         uint32_t h, xcm_session **out, uint32_t *sent) {
  resumable *r = (resumable *)xcm__map_get(&t->by_resume, id, strlen(id));
  xcm_session *s = r != NULL ? r->s : NULL;
  uint32_t h_in, h_out, unacked;

  if (s == NULL || s->up == NULL || s->jid == NULL ||
      !xcm__authid_matches(authid, s->jid))
    return XCM_ENOTFOUND;
  if (s->client != NULL) {
    if (!xcm__client_sm(s->client, &h_in, &h_out, &unacked))
      return XCM_ENOTFOUND;
  } else {
    h_out = r->sm->h_out;
    unacked = r->sm->count;
  }
  if ((uint32_t)(h - (h_out - unacked)) > unacked) {
    *sent = h_out;
    return XCM_EPROTO;
  }
  *out = s;
  return 0;
}

static void conn_take(xcm_session *s, xcm_client *c);

/* Client c takes session s over (resumable_for said yes): whoever held
 * it goes, c gets the state with h applied and sends it all again. The
 * connection's counts come from s2, the session it opened here (which
 * ends, authenticated and never bound: upstream it closes without a
 * trace), or (s2 NULL, a connection moved from another instance) are
 * taken now. */
static void take_over(xcm_session *s, xcm_client *c, uint32_t h,
                      xcm_session *s2) {
  xcm_sessions *t = s->table;
  resumable *r = s->r;
  xcm_client *old = s->client;
  xcm_client_end end = {XCM_COND_NONE, 0, "resumed another session"};
  xcm_sm *sm;

  if (old != NULL) {
    /* The old connection has not noticed it is gone, or a second resume
     * races the first: the newest connection wins, the other ends. */
    sm = xcm__client_release_sm(old);
    xcm__ses_conn_release(s);
    s->client = NULL;
    xcm__client_set_owner(old, &orphan_cb, NULL);
    xcm__client_fail(old, XCM_COND_CONFLICT,
                     "the session was resumed on another connection");
  } else {
    sm = r->sm;
    r->sm = NULL;
    wait_unlink(t, r);
    wait_arm(t);
  }
  xcm__sm_ack(t->ctx->alloc, sm, h);
  if (s2 != NULL) {
    s->kind = s2->kind;
    s->addr = s2->addr;
    s2->addr = NULL;
    xcm__ses_free(s2, &end);
  } else {
    conn_take(s, c);
  }
  s->client = c;
  xcm__client_set_owner(c, &xcm__ses_client_cb, s);
  t->counters->sm_resumed++;
  if (xcm__client_resumed(c, sm, r->sid, r->id) != 0)
    return; /* the client ended meanwhile: its end saw to sm */
  if (s->up_paused)
    xcm__client_pause(c);
  xcm__ses_event(s, XCM__SESSION_RESUMED, NULL);
}

int xcm__ses_resume(void *ud, const char *previd, uint32_t h,
                    const char *authid, uint32_t *sent) {
  xcm_session *s2 = ud, *s = NULL;
  xcm_sessions *t = s2->table;
  unsigned where;
  int err = resumable_for(t, previd, authid, h, &s, sent);

  if (err == XCM_ENOTFOUND && t->group != NULL &&
      xcm__client_movable(s2->client) &&
      xcm__group_find(t->group, previd, authid, &where) == 0 &&
      where != t->group_index) {
    /* On another instance: the connection goes there (xcm__ses_moved). Its
     * own session ends upstream now, so that nothing more is routed to
     * a client that is leaving. */
    if (s2->up != NULL)
      xcm__pool_session_close(s2->up);
    s2->up = NULL;
    return XCM_EAGAIN;
  }
  if (err != 0 || s == s2) {
    t->counters->sm_resume_failed++;
    return err != 0 ? err : XCM_ENOTFOUND;
  }
  take_over(s, s2->client, h, s2);
  return 0;
}

/* The connection left for the instance holding the session it resumes:
 * post it there, and end its own session. */
void xcm__ses_moved(void *ud, xcm_client_moved *m) {
  xcm_session *s2 = ud;
  xcm_sessions *t = s2->table;
  xcm_client_end end = {XCM_COND_NONE, 0,
                        "moved to the worker holding the session it resumes"};
  unsigned where;

  if (m != NULL &&
      (xcm__group_find(t->group, xcm__client_moved_previd(m),
                       xcm__client_moved_authid(m), &where) != 0 ||
       xcm__group_post(t->group, where, (xcm_group_item *)m) != 0)) {
    /* Gone meanwhile: the connection closes, the client logs in again. */
    t->counters->sm_resume_failed++;
    xcm__client_moved_free(m);
  }
  xcm__ses_conn_release(s2);
  xcm__ses_free(s2, &end);
}

/* A moved connection's counts, on the instance it reached. */
static void conn_take(xcm_session *s, xcm_client *c) {
  xcm_sessions *t = s->table;
  int over = 0;
  const char *peer = xcm__client_peer(c);

  s->kind = XCM_TRANSPORT_TCP;
  t->counters->clients_kind_now[s->kind]++;
  if (xcm__client_secured(c))
    t->counters->clients_tls_now++;
  /* Counted against its address, never refused: it was let in already. */
  if (t->max_per_address != XCM__OFF && peer[0] != '\0' &&
      strlen(peer) < sizeof s->addr->key) {
    s->addr = xcm__ses_count_key(t, peer, &over);
    if (over)
      s->addr->n++;
  }
}

void xcm__sessions_adopt(xcm_sessions *t, xcm_client_moved *m) {
  const xcm_client_cfg *cfg =
      t->listener_cfg(t->listener_cfg_ud, xcm__client_moved_listener(m));
  uint32_t h = xcm__client_moved_h(m), sent = 0;
  xcm_session *s = NULL;
  xcm_client *c;
  int err;

  if (cfg == NULL) {
    xcm__client_moved_free(m);
    return;
  }
  err = resumable_for(t, xcm__client_moved_previd(m),
                      xcm__client_moved_authid(m), h, &s, &sent);
  if (err != 0) {
    /* Ended, or a bad h: the client hears it, its connection ends. */
    t->counters->sm_resume_failed++;
    if (xcm__client_move_in(&c, t->ctx, cfg, m, &orphan_cb, NULL) == 0)
      xcm__client_fail(c, XCM_COND_UNDEFINED_CONDITION,
                       err == XCM_EPROTO
                           ? "the resume acknowledged more than was sent"
                           : "the session to resume ended meanwhile: log "
                             "in again");
    return;
  }
  if (xcm__client_move_in(&c, t->ctx, cfg, m, &orphan_cb, NULL) != 0)
    return;
  take_over(s, c, h, NULL);
}
