/* BOSH sessions: see bosh.h.
 *
 * Three kinds of object. A session (sid, the agreed numbers, its client,
 * what the client sent that no answer has carried yet, the answers kept
 * for a repeated rid). A request (one POST: its rid, its state, its
 * answer once made), on two lists: its session's, by rid, while it is
 * queued (early: a rid before it is missing) or held (processed, waiting
 * for data); and its HTTP connection's, in arrival order, until its
 * answer is handed to the HTTP layer. A connection record (the second
 * list's head), hung on the HTTP connection while it has requests here.
 *
 * Reentrancy. The client calls into the transport (tr_send, tr_pause,
 * tr_close) from inside xcm__client_* calls, ours included: those only
 * note what happened and, when no request is being processed, arm the
 * session's timer for now. Answers are made from the request handler
 * and from the timer, never from inside a client call. */
#include "web/bosh.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "client/framing.h"
#include "proto/cmproto.h"
#include "proto/route.h"
#include "proto/stream.h"
#include "util/alloc.h"
#include "util/dec.h"
#include "util/hex.h"
#include "util/map.h"
#include "web/body.h"
#include "web/web.h"
#include "xcm/error.h"
#include "xml/writer.h"

#define SID_BYTES 16
#define MAX_CACHE 8 /* answers kept for repeated rids; >= requests */
#define CTYPE "text/xml; charset=utf-8"
#define BODY_OPEN                                                              \
  "<body xmlns=\"" XCM_NS_HTTPBIND "\" xmlns:xmpp=\"" XCM_NS_XBOSH             \
  "\" xmlns:stream=\"" XCM_NS_STREAMS "\""
#define BODY_OPEN_LEN (sizeof BODY_OPEN - 1)
#define EMPTY_BODY "<body xmlns=\"" XCM_NS_HTTPBIND "\"/>"
/* The largest rid XEP-0124 allows: 2^53 - 1. */
#define RID_MAX 9007199254740991ull
/* A key of XEP-0124 section 15: a SHA-1 digest in hexadecimal. */
#define KEY_LEN 40

typedef struct session session;
typedef struct breq breq;
typedef struct bconn bconn;

enum { R_QUEUED, R_HELD, R_READY };

/* A held request is what a waiting client always has, so it keeps only
 * its links and numbers: the body lives from its arrival until it is
 * processed, the answer from when it is made until the HTTP layer has
 * it (memory follows activity). */
struct breq {
  breq *next;  /* the session's list, by rid */
  breq *cnext; /* the connection's, in arrival order */
  bconn *bc;
  session *s; /* while on the session's list */
  uint64_t rid;
  uint64_t at;         /* when it came */
  xcm_bosh_body *body; /* until processed */
  char *answer;        /* once ready, until handed on */
  size_t answer_len;
  int status;            /* once ready */
  unsigned state : 2;    /* R_QUEUED, R_HELD, R_READY */
  unsigned creation : 1; /* its answer creates the session */
  char *key;             /* the key it carried; NULL: none, or not one */
};

struct bconn {
  xcm_bosh *b;
  xcm_http_conn *conn;
  breq *head, *tail;
  int flushing, gone;
};

typedef struct cached {
  uint64_t rid;
  char *data; /* NULL: a free slot */
  size_t len;
  char *key; /* its request's, after data in its block; NULL: none */
} cached;

typedef struct addr_count {
  xcm_map_entry e;
  unsigned n;
  char key[46];
} addr_count;

/* What tr_send keeps, before each unit's bytes. */
typedef struct unit_hdr {
  size_t len;
  int error; /* a <stream:error> */
} unit_hdr;

struct session {
  xcm_map_entry e;
  char sid[2 * SID_BYTES + 1];
  xcm_bosh *b;
  xcm_client *client; /* NULL once its close() came */
  uv_timer_t timer;
  breq *reqs; /* queued and held, by rid */
  unsigned nheld, nqueued;
  uint64_t last_rid; /* the highest processed */
  uint64_t last_req; /* when the last request was processed */
  uint64_t idle_since;
  unsigned wait, hold, requests, pause_ms;
  int legacy, acks, secure;
  char authid[32]; /* the client's stream id (22 characters) */
  /* XEP-0124 15: what the next request's key must hash to, the last
   * key (or newkey) the client sent; NULL when it asked for no keys (as
   * most clients do: they pay a pointer). */
  char *key;
  xcm_buf out; /* units for the next answer */
  size_t out_units;
  /* Answers kept for a repeated rid: s->requests slots, allocated while
   * one is kept (memory follows activity). */
  cached *cache;
  addr_count *addr;
  unsigned busy;          /* processing a request: answers wait */
  unsigned blocked : 1;   /* tr_send said XCM_EAGAIN */
  unsigned paused : 1;    /* the client asked us to stop delivering */
  unsigned flush_due : 1; /* the timer runs now */
  unsigned closed : 1;    /* the client is done (tr_close came) */
  unsigned failed : 1;    /* ... with an error */
  unsigned ended : 1;     /* off the map; the timer is closing */
  unsigned pausing : 1;   /* answer every held request now */
  char to[];              /* the domain the client asked for */
};

struct xcm_bosh {
  xcm_ctx *ctx;
  xcm_bosh_cfg cfg;
  xcm_bosh_attach_fn attach;
  void *attach_ud;
  xcm_map sessions;
  xcm_map per_address;
  xcm_bosh_counters counters;
  unsigned timers; /* session timers not yet closed */
  int closing;
  void (*done)(void *ud);
  void *done_ud;
};

static void session_end(session *s, const char *cond, int err);
static void answer_pending(session *s);
static void arm(session *s);

static uint64_t now(const xcm_bosh *b) {
  return uv_now(b->ctx->loop);
}

/* ---- connections: answers in the order their requests came ------------- */

static void bconn_free(bconn *bc) {
  if (!bc->gone)
    xcm__http_conn_set_data(bc->conn, NULL);
  xcm__free(bc->b->ctx->alloc, bc);
}

static void body_drop(xcm_bosh *b, breq *r) {
  if (r->body == NULL)
    return;
  xcm__bosh_body_free(r->body);
  xcm__free(b->ctx->alloc, r->body);
  r->body = NULL;
}

/* r's answer is data (len bytes, copied), after prefix when not NULL. */
static int set_answer(xcm_bosh *b, breq *r, const char *prefix,
                      const char *data, size_t len) {
  size_t pn = prefix != NULL ? strlen(prefix) : 0;

  xcm__free(b->ctx->alloc, r->answer);
  r->answer = NULL;
  r->answer_len = 0;
  if (pn + len == 0)
    return 0;
  r->answer = xcm__alloc(b->ctx->alloc, pn + len);
  if (r->answer == NULL)
    return XCM_ENOMEM;
  if (pn > 0)
    memcpy(r->answer, prefix, pn);
  if (len > 0)
    memcpy(r->answer + pn, data, len);
  r->answer_len = pn + len;
  return 0;
}

static void breq_free(xcm_bosh *b, breq *r) {
  body_drop(b, r);
  xcm__free(b->ctx->alloc, r->answer);
  xcm__free(b->ctx->alloc, r->key);
  xcm__free(b->ctx->alloc, r);
}

/* Hand the answers at the head of the connection's list to the HTTP
 * layer, which may close the connection (and call bosh_gone) from
 * inside xcm__http_respond. */
static void conn_flush(bconn *bc) {
  xcm_bosh *b = bc->b;

  if (bc->flushing)
    return;
  bc->flushing = 1;
  while (!bc->gone && bc->head != NULL && bc->head->state == R_READY) {
    breq *r = bc->head;

    bc->head = r->cnext;
    if (bc->head == NULL)
      bc->tail = NULL;
    xcm__http_respond(bc->conn, r->status, r->answer_len ? CTYPE : NULL,
                      r->answer, r->answer_len);
    breq_free(b, r);
  }
  bc->flushing = 0;
  if (bc->gone || bc->head == NULL)
    bconn_free(bc);
}

/* ---- a session's requests ----------------------------------------------- */

static void unlink_req(breq *r) {
  session *s = r->s;
  breq **pp;

  if (s == NULL)
    return;
  for (pp = &s->reqs; *pp != NULL; pp = &(*pp)->next)
    if (*pp == r) {
      *pp = r->next;
      break;
    }
  if (r->state == R_HELD)
    s->nheld--;
  else
    s->nqueued--;
  r->next = NULL;
  r->s = NULL;
  if (s->nheld == 0)
    s->idle_since = now(s->b);
}

/* r's answer is made: out of its session's lists and to its connection
 * (which may be gone already: the answer then only stays in the cache). */
static void ready_after(xcm_bosh *b, breq *r, int status, const char *prefix,
                        const char *data, size_t len) {
  unlink_req(r);
  body_drop(b, r);
  r->state = R_READY;
  r->status = status;
  if (set_answer(b, r, prefix, data, len) != 0)
    r->status = 500;
  if (r->bc != NULL)
    conn_flush(r->bc);
}

static void ready(xcm_bosh *b, breq *r, int status, const char *data,
                  size_t len) {
  ready_after(b, r, status, NULL, data, len);
}

static void cache_put(session *s, uint64_t rid, const char *key,
                      const char *data, size_t len) {
  const xcm_allocator *a = s->b->ctx->alloc;
  cached *slot;
  unsigned i;

  if (s->cache == NULL &&
      (s->cache = xcm__calloc(a, s->requests * sizeof(cached))) == NULL)
    return; /* a repeated rid then gets an empty answer */
  slot = &s->cache[0];
  /* A free slot, else the one with the lowest rid. */
  for (i = 0; i < s->requests; i++)
    if (s->cache[i].data == NULL) {
      slot = &s->cache[i];
      break;
    } else if (s->cache[i].rid < slot->rid) {
      slot = &s->cache[i];
    }
  xcm__free(a, slot->data);
  /* The key, if any, after the answer, in the same block. */
  slot->data = xcm__alloc(a, len + (key != NULL ? KEY_LEN + 1 : 0) + 1);
  slot->len = slot->data != NULL ? len : 0;
  slot->rid = rid;
  slot->key = NULL;
  if (slot->data == NULL)
    return;
  memcpy(slot->data, data, len);
  slot->data[len] = '\0';
  if (key != NULL) {
    slot->key = slot->data + len + 1;
    memcpy(slot->key, key, KEY_LEN + 1);
  }
}

static const cached *cache_get(const session *s, uint64_t rid) {
  unsigned i;

  for (i = 0; s->cache != NULL && i < s->requests; i++)
    if (s->cache[i].data != NULL && s->cache[i].rid == rid)
      return &s->cache[i];
  return NULL;
}

/* Forget the answers the client says it has (ack), and those too old
 * to be asked for again. */
static void cache_trim(session *s, uint64_t ack) {
  unsigned i, kept = 0;

  if (s->cache == NULL)
    return;
  for (i = 0; i < s->requests; i++) {
    if (s->cache[i].data != NULL &&
        (s->cache[i].rid <= ack ||
         s->cache[i].rid + s->requests <= s->last_rid)) {
      xcm__free(s->b->ctx->alloc, s->cache[i].data);
      s->cache[i].data = NULL;
    }
    kept += s->cache[i].data != NULL;
  }
  if (kept == 0) {
    xcm__free(s->b->ctx->alloc, s->cache);
    s->cache = NULL;
  }
}

/* ---- answers ------------------------------------------------------------ */

static int put_uint(xcm_buf *b, const char *name, unsigned long long v) {
  char num[32];

  snprintf(num, sizeof num, "%llu", v);
  return xcm__xml_attr(b, name, num);
}

/* The attributes that create a session (XEP-0124 7.1, XEP-0206 4). */
static int creation_attrs(session *s, xcm_buf *b, uint64_t rid) {
  const xcm_bosh_cfg *c = &s->b->cfg;
  int err = xcm__xml_attr(b, "sid", s->sid);

  if (err == 0)
    err = put_uint(b, "wait", s->wait);
  if (err == 0)
    err = put_uint(b, "requests", s->requests);
  if (err == 0)
    err = put_uint(b, "hold", s->hold);
  if (err == 0)
    err = put_uint(b, "inactivity", c->inactivity);
  if (err == 0)
    err = put_uint(b, "polling", c->polling);
  if (err == 0 && c->maxpause > 0)
    err = put_uint(b, "maxpause", c->maxpause);
  if (err == 0)
    err = xcm__xml_attr(b, "ver", "1.11");
  if (err == 0)
    err = xcm__xml_attr(b, "from", s->to);
  if (err == 0)
    err = xcm__xml_attr(b, "authid", s->authid);
  if (err == 0)
    err = xcm__xml_attr(b, "secure", s->secure ? "true" : "false");
  if (err == 0)
    err = xcm__buf_append_str(
        b, " xmpp:version=\"1.0\" xmpp:restartlogic=\"true\"");
  if (err == 0 && s->acks)
    err = put_uint(b, "ack", rid);
  return err;
}

/* Answer r with what the session holds for the client (take 1) or with
 * nothing; terminate: the session ends (cond may be NULL). */
static void answer(session *s, breq *r, int take, int terminate,
                   const char *cond) {
  xcm_buf *b = &s->b->ctx->scratch;
  size_t at = 0, nchild = 0;
  int err, error_unit = 0;
  unit_hdr h;

  xcm__buf_reset(b);
  err = xcm__buf_append_str(b, BODY_OPEN);
  if (err == 0 && r->creation)
    err = creation_attrs(s, b, r->rid);
  else if (err == 0 && s->acks && r->rid != s->last_rid)
    /* XEP-0124 9.1: the highest rid received in order, when it is not
     * the one answered. */
    err = put_uint(b, "ack", s->last_rid);
  if (take)
    for (at = 0; at < s->out.len; at += sizeof h + h.len) {
      memcpy(&h, s->out.data + at, sizeof h);
      error_unit |= h.error;
      nchild++;
    }
  if (err == 0 && (terminate || error_unit)) {
    err = xcm__buf_append_str(b, " type=\"terminate\"");
    if (err == 0 && (error_unit || cond != NULL))
      err = xcm__xml_attr(b, "condition",
                          error_unit ? "remote-stream-error" : cond);
  }
  if (err == 0 && nchild == 0)
    err = xcm__buf_append_str(b, "/>");
  else if (err == 0) {
    err = xcm__buf_append_str(b, ">");
    for (at = 0; err == 0 && at < s->out.len; at += sizeof h + h.len) {
      memcpy(&h, s->out.data + at, sizeof h);
      err = xcm__buf_append(b, s->out.data + at + sizeof h, h.len);
    }
    if (err == 0)
      err = xcm__buf_append_str(b, "</body>");
  }
  if (err != 0) {
    xcm__buf_reset(b);
    ready(s->b, r, 500, NULL, 0);
    return;
  }
  if (take) {
    xcm__buf_free(&s->out);
    s->out_units = 0;
  }
  /* Kept for a repeated rid, unless it says nothing that an empty
   * answer made afresh would not (bosh.h); without the BODY_OPEN every
   * answer begins with, which a repeat puts back. */
  if (nchild > 0 || terminate)
    cache_put(s, r->rid, r->key, b->data + BODY_OPEN_LEN,
              b->len - BODY_OPEN_LEN);
  if (nchild == 0 && !terminate && !r->creation)
    s->b->counters.empty++;
  {
    /* ready() may flush into the HTTP layer, which never uses scratch. */
    ready(s->b, r, 200, b->data, b->len);
  }
  xcm__buf_reset(b);
}

/* A broken rule, for a request outside any session or for a session's:
 * legacy clients get the HTTP status (bosh.h). */
static void refuse_req(xcm_bosh *b, breq *r, int legacy, const char *cond) {
  char body[256];
  int status = 200, n;

  b->counters.errors++;
  if (legacy) {
    status = strcmp(cond, "item-not-found") == 0     ? 404
             : strcmp(cond, "policy-violation") == 0 ? 403
             : strcmp(cond, "bad-request") == 0      ? 400
                                                     : 200;
  }
  if (status != 200) {
    ready(b, r, status, NULL, 0);
    return;
  }
  n = snprintf(body, sizeof body,
               "<body xmlns=\"" XCM_NS_HTTPBIND "\" type=\"terminate\" "
               "condition=\"%s\"/>",
               cond);
  ready(b, r, 200, body, (size_t)n);
}

/* ---- the transport the client sees -------------------------------------- */

static int is_framing(const char *data, size_t len, const char *name) {
  const char *v, *q;
  size_t vl, ql, n = strlen(name);

  return xcm__xml_qname_length(data, len) == n &&
         memcmp(data + 1, name, n) == 0 &&
         xcm__xml_start_tag(data, len, "xmlns", &v, &vl, &q, &ql) &&
         vl == strlen(XCM_NS_FRAMING) && memcmp(v, XCM_NS_FRAMING, vl) == 0;
}

static void flush_soon(session *s) {
  if (s->busy || s->ended)
    return;
  s->flush_due = 1;
  arm(s);
}

static int tr_send(void *ud, const char *data, size_t len) {
  session *s = ud;
  const char *v, *q;
  size_t vl, ql;
  unit_hdr h;
  int err;

  if (is_framing(data, len, "open")) {
    /* Its attributes are the creation answer's (client/framing.h). */
    if (xcm__xml_start_tag(data, len, "id", &v, &vl, &q, &ql) &&
        vl < sizeof s->authid) {
      memcpy(s->authid, v, vl);
      s->authid[vl] = '\0';
    }
    return 0;
  }
  if (is_framing(data, len, "close"))
    return 0; /* tr_close follows: the answer says terminate */
  h.len = len;
  h.error = xcm__xml_qname_length(data, len) == 12 &&
            memcmp(data + 1, "stream:error", 12) == 0;
  err = xcm__buf_reserve(&s->out, sizeof h + len);
  if (err != 0)
    return err;
  xcm__buf_append(&s->out, &h, sizeof h);
  xcm__buf_append(&s->out, data, len);
  s->out_units++;
  if (s->nheld > 0)
    flush_soon(s);
  /* No request to carry more, or enough for one answer: the client
   * keeps the rest (client/framing.h) until xcm__client_writable. */
  if (s->nheld == 0 || s->out.len > s->b->cfg.high_water) {
    s->blocked = 1;
    return XCM_EAGAIN;
  }
  return 0;
}

static void tr_pause(void *ud, int paused) {
  session *s = ud;

  s->paused = paused != 0;
  if (!paused)
    flush_soon(s);
}

static void tr_close(void *ud, int failed) {
  session *s = ud;

  s->client = NULL;
  s->closed = 1;
  s->failed = failed != 0;
  flush_soon(s);
}

/* ---- keys (XEP-0124 15) ------------------------------------------------- */

/* A client that sent newkey at creation proves with every request that
 * it is the one that did: it made a sequence K(n) .. K(1), each key the
 * hexadecimal SHA-1 of the one after it, sent K(n) as newkey and sends
 * the keys down from K(n-1), one per request (and, at K(1), a new
 * sequence's first as newkey). Whoever saw only the sid cannot find the
 * next key. A request whose key does not fit ends the session with
 * item-not-found, as the XEP says, and is not processed; that gives an
 * attacker who knows the sid nothing that a rid out of the window did
 * not already give (the session's end), and neither payload nor answer
 * to read. */

static int key_valid(const char *k) {
  size_t i;

  if (k == NULL || strlen(k) != KEY_LEN)
    return 0;
  for (i = 0; i < KEY_LEN; i++)
    if (xcm__hex_digit((unsigned char)k[i]) < 0)
      return 0;
  return 1;
}

/* out: hex(SHA-1(key)), the key sent before key in its sequence. The
 * upstream handshake's digest of (key, nothing) is exactly that. */
static int key_before(char out[KEY_LEN + 1], const char *key) {
  return xcm__cm_handshake_digest(out, key, strlen(key), "", 0);
}

static int key_same(const char *a, const char *b) {
  return strcasecmp(a, b) == 0; /* hexadecimal, of either case */
}

/* Whether key is the one for the next request or one up to `requests`
 * ahead (requests may overtake each other): hashed that many times at
 * most, it gives the session's key, or the newkey of a request queued
 * before it (a switch of sequence not yet processed). */
static int key_ahead(const session *s, const char *key) {
  char h[2][KEY_LEN + 1];
  const breq *q;
  const char *nk;
  unsigned i;

  memcpy(h[0], key, sizeof h[0]);
  for (i = 0; i < s->requests; i++) {
    if (key_before(h[(i + 1) & 1], h[i & 1]) != 0)
      return 0;
    if (key_same(h[(i + 1) & 1], s->key))
      return 1;
    for (q = s->reqs; q != NULL; q = q->next)
      if (q->state == R_QUEUED &&
          (nk = xcm__bosh_body_attr(q->body, XCM_BA_NEWKEY)) != NULL &&
          key_same(h[(i + 1) & 1], nk))
        return 1;
  }
  return 0;
}

/* Whether key is one sent before, for a repeated rid whose answer was
 * not kept: the session's key hashed fewer than `requests` times. */
static int key_behind(const session *s, const char *key) {
  char h[2][KEY_LEN + 1];
  unsigned i;

  memcpy(h[0], s->key, sizeof h[0]);
  for (i = 0; i < s->requests; i++) {
    if (key_same(h[i & 1], key))
      return 1;
    if (key_before(h[(i + 1) & 1], h[i & 1]) != 0)
      return 0;
  }
  return 0;
}

/* Whether r, for keyed session s, may be looked at at all: before it can
 * displace a request, be answered from the cache, carry the end or be
 * queued. Its own turn checks it exactly (process). */
static int key_admits(const session *s, const breq *r) {
  const breq *old;
  const cached *c;

  if (r->key == NULL)
    return 0;
  /* The same rid again: the same request, so the same key (14.3). */
  for (old = s->reqs; old != NULL && old->rid != r->rid; old = old->next)
    ;
  if (old != NULL)
    return old->key != NULL && strcmp(old->key, r->key) == 0;
  if (r->rid <= s->last_rid) {
    c = cache_get(s, r->rid);
    return c != NULL ? c->key != NULL && strcmp(c->key, r->key) == 0
                     : key_behind(s, r->key);
  }
  return key_ahead(s, r->key);
}

/* ---- processing, in rid order ------------------------------------------- */

static int is_true(const char *v) {
  return v != NULL && (strcmp(v, "true") == 0 || strcmp(v, "1") == 0);
}

/* Feed the client an RFC 7395 <open/> for the session's domain: the
 * creation and every xmpp:restart (client/framing.h). */
static void feed_open(session *s, const char *lang) {
  xcm_buf *b = &s->b->ctx->scratch;

  xcm__buf_reset(b);
  if (xcm__buf_append_str(b, "<open xmlns=\"" XCM_NS_FRAMING "\"") == 0 &&
      xcm__xml_attr(b, "to", s->to) == 0 &&
      xcm__buf_append_str(b, " version=\"1.0\"") == 0 &&
      (lang == NULL || xcm__xml_attr(b, "xml:lang", lang) == 0) &&
      xcm__buf_append_str(b, "/>") == 0) {
    /* The client may use scratch: give it a copy. */
    char *copy = xcm__strndup(s->b->ctx->alloc, b->data, b->len);
    size_t len = b->len;

    xcm__buf_reset(b);
    if (copy != NULL) {
      xcm__client_msg_input(s->client, copy, len);
      xcm__free(s->b->ctx->alloc, copy);
      return;
    }
  }
  xcm__buf_reset(b);
  xcm__client_fail(s->client, XCM_COND_RESOURCE_CONSTRAINT, NULL);
}

/* Give the client what r carries. Returns a condition when r breaks a
 * rule (the session ends), else NULL. */
static const char *process(session *s, breq *r) {
  const xcm_bosh_body *body = r->body;
  const char *type = xcm__bosh_body_attr(body, XCM_BA_TYPE);
  const char *v;
  uint64_t n;
  size_t at = 0, len;
  const char *child;
  int empty = body->nchildren == 0;
  uint64_t t = now(s->b);

  if (s->key != NULL) {
    /* In rid order, the key is exactly the one after the last (15). */
    char h[KEY_LEN + 1];

    if (r->key == NULL || key_before(h, r->key) != 0 || !key_same(h, s->key))
      return "item-not-found";
    v = xcm__bosh_body_attr(body, XCM_BA_NEWKEY);
    if (v != NULL && !key_valid(v))
      return "bad-request";
    memcpy(s->key, v != NULL ? v : r->key, KEY_LEN + 1);
  }
  if ((v = xcm__bosh_body_attr(body, XCM_BA_ACK)) != NULL &&
      xcm__parse_dec(v, RID_MAX, &n) == 0)
    cache_trim(s, n);
  else
    cache_trim(s, 0);
  s->pause_ms = 0;
  if ((v = xcm__bosh_body_attr(body, XCM_BA_PAUSE)) != NULL) {
    /* XEP-0124 10: a pause longer than maxpause is a broken rule. */
    if (s->b->cfg.maxpause == 0 ||
        xcm__parse_dec(v, s->b->cfg.maxpause, &n) != 0)
      return "policy-violation";
    s->pause_ms = (unsigned)n * 1000u;
    s->pausing = 1;
    empty = 0;
  }
  /* XEP-0124 11, 12: as many requests under way as allowed, the newest
   * empty and too soon after the one before: polling too often. */
  if (empty && type == NULL &&
      !is_true(xcm__bosh_body_attr(body, XCM_BA_RESTART)) &&
      s->nheld + s->nqueued >= s->requests && s->b->cfg.polling > 0 &&
      t - s->last_req < (uint64_t)s->b->cfg.polling * 1000)
    return "policy-violation";
  s->last_req = t;
  if (is_true(xcm__bosh_body_attr(body, XCM_BA_RESTART)))
    feed_open(s, xcm__bosh_body_attr(body, XCM_BA_LANG));
  while (s->client != NULL &&
         (child = xcm__bosh_body_child(body, &at, &len)) != NULL)
    xcm__client_msg_input(s->client, child, len);
  /* An empty request is a keepalive, as white space on a stream. */
  if (s->client != NULL && body->nchildren == 0)
    xcm__client_msg_input(s->client, " ", 1);
  if (s->client != NULL && type != NULL && strcmp(type, "terminate") == 0) {
    static const char close[] = "<close xmlns=\"" XCM_NS_FRAMING "\"/>";

    xcm__client_msg_input(s->client, close, sizeof close - 1);
  }
  return NULL;
}

/* Process the queued requests whose turn it is. */
static void process_ready(session *s) {
  breq *r;
  const char *cond;

  while (!s->paused && !s->closed && !s->ended) {
    for (r = s->reqs; r != NULL; r = r->next)
      if (r->state == R_QUEUED && r->rid == s->last_rid + 1)
        break;
    if (r == NULL)
      return;
    s->last_rid = r->rid;
    r->state = R_HELD;
    s->nqueued--;
    s->nheld++;
    s->busy++;
    cond = process(s, r);
    s->busy--;
    body_drop(s->b, r);
    if (cond != NULL) {
      refuse_req(s->b, r, s->legacy, cond);
      session_end(s, cond, XCM_EPROTO);
      return;
    }
  }
}

/* Answer what can be answered now: data for the oldest held request,
 * the end, a pause, more held than hold allows. */
static void answer_pending(session *s) {
  breq *r;

  if (s->ended)
    return;
  if (s->closed) {
    /* The client is done: the end goes to the first request there is,
     * with whatever was left for it (bosh.h). */
    for (r = s->reqs; r != NULL; r = r->next)
      if (r->state == R_HELD)
        break;
    if (r == NULL && s->reqs == NULL) {
      arm(s);
      return;
    }
    if (r == NULL)
      r = s->reqs;
    answer(s, r, 1, 1, NULL);
    session_end(s, NULL, 0);
    return;
  }
  for (;;) {
    r = s->reqs;
    while (r != NULL && r->state != R_HELD)
      r = r->next;
    if (r == NULL)
      break;
    if (s->blocked && s->client != NULL) {
      /* A request waits: the client sends what it kept meanwhile (up to
       * the high water), so that it all goes in this one answer. */
      s->blocked = 0;
      s->busy++;
      xcm__client_writable(s->client);
      s->busy--;
      if (s->closed) {
        answer_pending(s);
        return;
      }
    }
    if (s->out_units > 0) {
      answer(s, r, 1, 0, NULL);
      continue;
    }
    if (s->pausing || s->nheld > s->hold) {
      answer(s, r, 0, 0, NULL);
      continue;
    }
    break;
  }
  s->pausing = 0;
  arm(s);
}

/* ---- the timer ---------------------------------------------------------- */

static void on_timer(uv_timer_t *t);

static void arm(session *s) {
  uint64_t due = UINT64_MAX, n = now(s->b);
  breq *r;

  if (s->ended)
    return;
  if (s->flush_due) {
    due = n;
  } else {
    for (r = s->reqs; r != NULL; r = r->next)
      if (r->state == R_HELD && r->at + (uint64_t)s->wait * 1000 < due)
        due = r->at + (uint64_t)s->wait * 1000;
    if (s->nheld == 0)
      due = s->idle_since +
            (s->pause_ms ? s->pause_ms : (uint64_t)s->b->cfg.inactivity * 1000);
  }
  uv_timer_start(&s->timer, on_timer, due > n ? due - n : 0, 0);
}

static void on_timer(uv_timer_t *t) {
  session *s = t->data;
  uint64_t n = now(s->b);
  breq *r, *next;

  if (s->ended)
    return;
  s->flush_due = 0;
  process_ready(s);
  if (s->ended)
    return;
  answer_pending(s);
  if (s->ended)
    return;
  /* Held past wait: an empty answer (the client sends another). */
  for (r = s->reqs; r != NULL; r = next) {
    next = r->next;
    if (r->state == R_HELD && n >= r->at + (uint64_t)s->wait * 1000)
      answer(s, r, 0, 0, NULL);
  }
  if (s->nheld == 0 &&
      n >= s->idle_since + (s->pause_ms
                                ? s->pause_ms
                                : (uint64_t)s->b->cfg.inactivity * 1000)) {
    s->b->counters.inactive++;
    session_end(s, NULL, XCM_ETIMEDOUT);
    return;
  }
  arm(s);
}

/* ---- sessions ----------------------------------------------------------- */

static void timer_closed(uv_handle_t *h) {
  session *s = h->data;
  xcm_bosh *b = s->b;
  unsigned i;

  for (i = 0; s->cache != NULL && i < s->requests; i++)
    xcm__free(b->ctx->alloc, s->cache[i].data);
  xcm__free(b->ctx->alloc, s->cache);
  xcm__buf_free(&s->out);
  xcm__free(b->ctx->alloc, s->key);
  xcm__free(b->ctx->alloc, s);
  if (--b->timers == 0 && b->closing && b->done != NULL) {
    void (*done)(void *) = b->done;

    b->done = NULL;
    done(b->done_ud);
  }
}

static void uncount_address(xcm_bosh *b, addr_count *a) {
  if (a != NULL && --a->n == 0) {
    xcm__map_remove(&b->per_address, &a->e);
    xcm__free(b->ctx->alloc, a);
  }
}

/* The session ends: a client still there ends as if its connection
 * broke, and gets back (as <failed/>) what it was never sent; every
 * request still here is answered with the end. */
static void session_end(session *s, const char *cond, int err) {
  xcm_bosh *b = s->b;
  breq *r;

  if (s->ended)
    return;
  if (s->client != NULL) {
    xcm_client *c = s->client;
    size_t at;
    unit_hdr h;

    s->busy++;
    for (at = 0; at < s->out.len; at += sizeof h + h.len) {
      memcpy(&h, s->out.data + at, sizeof h);
      xcm__client_msg_unsent(c, s->out.data + at + sizeof h, h.len);
    }
    xcm__buf_free(&s->out);
    s->out_units = 0;
    xcm__client_msg_end(c, err != 0 ? err : XCM_ECLOSED);
    s->busy--;
  }
  s->ended = 1;
  while ((r = s->reqs) != NULL)
    answer(s, r, 0, 1, cond);
  xcm__map_remove(&b->sessions, &s->e);
  uncount_address(b, s->addr);
  b->counters.now--;
  uv_close((uv_handle_t *)&s->timer, timer_closed);
}

static addr_count *count_address(xcm_bosh *b, const char *peer, int *over) {
  size_t n = strlen(peer);
  addr_count *a;

  *over = 0;
  if (b->cfg.max_per_address == XCM__OFF || n >= sizeof a->key)
    return NULL;
  a = (addr_count *)xcm__map_get(&b->per_address, peer, n);
  if (a != NULL && a->n >= b->cfg.max_per_address) {
    *over = 1;
    return NULL;
  }
  if (a == NULL) {
    a = xcm__calloc(b->ctx->alloc, sizeof(*a));
    if (a == NULL)
      return NULL;
    memcpy(a->key, peer, n + 1);
    a->e.key = a->key;
    if (xcm__map_put(&b->per_address, &a->e) != 0) {
      xcm__free(b->ctx->alloc, a);
      return NULL;
    }
  }
  a->n++;
  return a;
}

static int make_sid(char *out) {
  static const char hex[] = "0123456789abcdef";
  unsigned char raw[SID_BYTES];
  int err = xcm__random(raw, sizeof raw), i;

  if (err != 0)
    return err;
  for (i = 0; i < SID_BYTES; i++) {
    out[2 * i] = hex[raw[i] >> 4];
    out[2 * i + 1] = hex[raw[i] & 15];
  }
  out[2 * SID_BYTES] = '\0';
  return 0;
}

static int is_legacy(const char *ver) {
  unsigned long major, minor = 0;
  char *end;

  if (ver == NULL)
    return 1;
  major = strtoul(ver, &end, 10);
  if (*end == '.')
    minor = strtoul(end + 1, NULL, 10);
  return major < 1 || (major == 1 && minor < 6);
}

/* A request without a sid: a new session, answered once the client has
 * opened its stream (its features then go in the same answer). */
static void create(xcm_bosh *b, breq *r, xcm_http_conn *conn) {
  const xcm_bosh_body *body = r->body;
  const char *to = xcm__bosh_body_attr(body, XCM_BA_TO);
  const char *ver = xcm__bosh_body_attr(body, XCM_BA_VER);
  const char *newkey = xcm__bosh_body_attr(body, XCM_BA_NEWKEY);
  const char *peer = xcm__http_conn_peer(conn);
  uint64_t wait, hold = 1;
  xcm_msg_transport t;
  session *s;
  addr_count *a = NULL;
  int legacy = is_legacy(ver), over = 0, err;

  if (b->closing) {
    refuse_req(b, r, 0, "system-shutdown");
    return;
  }
  if (to == NULL || strlen(to) > 1023 ||
      (newkey != NULL && !key_valid(newkey)) ||
      xcm__parse_dec(xcm__bosh_body_attr(body, XCM_BA_WAIT), 1u << 30, &wait) !=
          0 ||
      (xcm__bosh_body_attr(body, XCM_BA_HOLD) != NULL &&
       xcm__parse_dec(xcm__bosh_body_attr(body, XCM_BA_HOLD), 1u << 30,
                      &hold) != 0)) {
    refuse_req(b, r, legacy, "bad-request");
    return;
  }
  if (peer != NULL && (a = count_address(b, peer, &over), over)) {
    b->counters.refused_address++;
    refuse_req(b, r, legacy, "policy-violation");
    return;
  }
  s = xcm__calloc(b->ctx->alloc, sizeof(*s) + strlen(to) + 1);
  if (s != NULL && b->cfg.fixed_sid != NULL) {
    snprintf(s->sid, sizeof s->sid, "%s", b->cfg.fixed_sid);
    if (xcm__map_get(&b->sessions, s->sid, strlen(s->sid)) != NULL) {
      xcm__free(b->ctx->alloc, s);
      s = NULL;
    }
  }
  if (s == NULL || (b->cfg.fixed_sid == NULL && make_sid(s->sid) != 0)) {
    xcm__free(b->ctx->alloc, s);
    uncount_address(b, a);
    refuse_req(b, r, 0, "internal-server-error");
    return;
  }
  s->b = b;
  s->addr = a;
  s->legacy = legacy;
  s->acks = xcm__bosh_body_attr(body, XCM_BA_ACK) != NULL;
  if (newkey != NULL &&
      (s->key = xcm__strndup(b->ctx->alloc, newkey, KEY_LEN)) == NULL) {
    xcm__free(b->ctx->alloc, s);
    uncount_address(b, a);
    refuse_req(b, r, 0, "internal-server-error");
    return;
  }
  s->secure = xcm__http_conn_secure(conn);
  memcpy(s->to, to, strlen(to) + 1);
  s->wait = wait < b->cfg.wait ? (unsigned)wait : b->cfg.wait;
  s->requests = b->cfg.requests;
  s->hold = hold < b->cfg.hold ? (unsigned)hold : b->cfg.hold;
  if (s->hold >= s->requests)
    s->hold = s->requests - 1;
  s->last_rid = r->rid - 1;
  s->last_req = now(b) - (uint64_t)b->cfg.polling * 1000;
  s->idle_since = now(b);
  xcm__buf_init(&s->out, b->ctx->alloc);
  s->e.key = s->sid;
  memset(&t, 0, sizeof t);
  t.send = tr_send;
  t.pause = tr_pause;
  t.close = tr_close;
  t.ud = s;
  t.secure = s->secure;
  t.kind = XCM_TRANSPORT_BOSH;
  err = xcm__map_put(&b->sessions, &s->e);
  if (err == 0)
    err = b->attach(b->attach_ud, &t, peer, &s->client);
  if (err != 0) {
    if (s->e.key != NULL && xcm__map_get(&b->sessions, s->sid, strlen(s->sid)))
      xcm__map_remove(&b->sessions, &s->e);
    uncount_address(b, a);
    xcm__free(b->ctx->alloc, s);
    refuse_req(b, r, 0,
               err == XCM_EBUSY     ? "policy-violation"
               : err == XCM_ECLOSED ? "system-shutdown"
                                    : "internal-server-error");
    return;
  }
  uv_timer_init(b->ctx->loop, &s->timer);
  s->timer.data = s;
  b->timers++;
  b->counters.created++;
  b->counters.now++;
  snprintf(s->authid, sizeof s->authid, "%s", xcm__client_sid(s->client));
  /* The creation is processed as a request of its own: held, and
   * answered with the creation attributes. */
  r->creation = 1;
  r->s = s;
  r->state = R_HELD;
  s->reqs = r;
  s->nheld = 1;
  s->last_rid = r->rid;
  s->last_req = now(b);
  s->busy++;
  feed_open(s, xcm__bosh_body_attr(body, XCM_BA_LANG));
  s->busy--;
  body_drop(b, r);
  answer_pending(s);
}

/* A request for session s (rid checked against its window here). */
static void session_request(session *s, breq *r) {
  xcm_bosh *b = s->b;
  breq *old, **pp;
  const cached *c;

  if (s->key != NULL && !key_admits(s, r)) {
    refuse_req(b, r, s->legacy, "item-not-found");
    session_end(s, "item-not-found", XCM_EPROTO);
    return;
  }
  if (s->closed) {
    /* The end waits for this request (answer_pending). */
    r->s = s;
    r->state = R_HELD;
    r->next = s->reqs;
    s->reqs = r;
    s->nheld++;
    answer_pending(s);
    return;
  }
  if (r->rid > s->last_rid + s->requests) {
    /* XEP-0124 14.2: beyond the window. */
    refuse_req(b, r, s->legacy, "item-not-found");
    session_end(s, "item-not-found", XCM_EPROTO);
    return;
  }
  /* The same rid again while the first is still here: the new one takes
   * its place, and the old connection hears an empty answer. */
  for (old = s->reqs; old != NULL && old->rid != r->rid; old = old->next)
    ;
  if (old != NULL) {
    b->counters.repeated++;
    r->state = old->state;
    r->at = old->at;
    r->creation = old->creation;
    body_drop(b, r);
    if (old->state == R_QUEUED) {
      /* The first copy is the one processed: the same rid carries the
       * same body (XEP-0124 14.3). */
      r->body = old->body;
      old->body = NULL;
    }
    for (pp = &s->reqs; *pp != old; pp = &(*pp)->next)
      ;
    *pp = r;
    r->next = old->next;
    r->s = s;
    old->next = NULL;
    old->s = NULL;
    old->state = R_READY;
    if (set_answer(b, old, NULL, EMPTY_BODY, strlen(EMPTY_BODY)) == 0)
      old->status = 200;
    else
      old->status = 500;
    if (old->bc != NULL)
      conn_flush(old->bc);
    answer_pending(s);
    return;
  }
  if (r->rid <= s->last_rid) {
    /* Answered before: the same answer (an empty one is made afresh);
     * older than the window, the session ends (14.3). */
    if ((c = cache_get(s, r->rid)) != NULL) {
      b->counters.repeated++;
      ready_after(b, r, 200, BODY_OPEN, c->data, c->len);
    } else if (r->rid + s->requests > s->last_rid) {
      b->counters.repeated++;
      r->s = NULL;
      ready(b, r, 200, EMPTY_BODY, strlen(EMPTY_BODY));
    } else {
      refuse_req(b, r, s->legacy, "item-not-found");
      session_end(s, "item-not-found", XCM_EPROTO);
    }
    return;
  }
  /* XEP-0124 11: more requests under way than `requests`. */
  if (s->nheld + s->nqueued + 1 > s->requests) {
    refuse_req(b, r, s->legacy, "policy-violation");
    session_end(s, "policy-violation", XCM_EPROTO);
    return;
  }
  r->s = s;
  r->state = R_QUEUED;
  for (pp = &s->reqs; *pp != NULL && (*pp)->rid < r->rid; pp = &(*pp)->next)
    ;
  r->next = *pp;
  *pp = r;
  s->nqueued++;
  process_ready(s);
  if (!s->ended)
    answer_pending(s);
}

/* ---- the HTTP side ------------------------------------------------------ */

static void bosh_request(void *ud, xcm_http_conn *conn,
                         const xcm_http_request *req, const char *data,
                         size_t len) {
  xcm_bosh *b = ud;
  bconn *bc = xcm__http_conn_data(conn);
  breq *r;
  const char *sid, *rid;
  uint64_t n;
  session *s;
  int err;

  (void)req;
  b->counters.requests++;
  if (bc == NULL) {
    bc = xcm__calloc(b->ctx->alloc, sizeof(*bc));
    if (bc == NULL) {
      xcm__http_respond(conn, 500, NULL, NULL, 0);
      return;
    }
    bc->b = b;
    bc->conn = conn;
    xcm__http_conn_set_data(conn, bc);
  }
  r = xcm__calloc(b->ctx->alloc, sizeof(*r));
  if (r == NULL) {
    if (bc->head == NULL)
      bconn_free(bc);
    xcm__http_respond(conn, 500, NULL, NULL, 0);
    return;
  }
  r->bc = bc;
  r->at = now(b);
  if (bc->tail != NULL)
    bc->tail->cnext = r;
  else
    bc->head = r;
  bc->tail = r;
  r->body = xcm__alloc(b->ctx->alloc, sizeof(*r->body));
  err = r->body == NULL
            ? XCM_ENOMEM
            : xcm__bosh_body_parse(r->body, b->ctx->xml, b->ctx->alloc, data,
                                   len, b->cfg.max_child, b->cfg.max_depth);
  if (err == XCM_ENOMEM) {
    b->counters.errors++;
    ready(b, r, 500, NULL, 0);
    return;
  }
  if (err != 0 || (rid = xcm__bosh_body_attr(r->body, XCM_BA_RID)) == NULL ||
      xcm__parse_dec(rid, RID_MAX, &n) != 0 || n == 0) {
    /* Without a readable body or rid there is no telling which session
     * it is for: it ends none. */
    refuse_req(b, r,
               err != 0 || is_legacy(xcm__bosh_body_attr(r->body, XCM_BA_VER)),
               "bad-request");
    return;
  }
  r->rid = n;
  if (key_valid(xcm__bosh_body_attr(r->body, XCM_BA_KEY)))
    r->key = xcm__strndup(b->ctx->alloc,
                          xcm__bosh_body_attr(r->body, XCM_BA_KEY), KEY_LEN);
  sid = xcm__bosh_body_attr(r->body, XCM_BA_SID);
  if (sid == NULL) {
    create(b, r, conn);
    return;
  }
  s = (session *)xcm__map_get(&b->sessions, sid, strlen(sid));
  if (s == NULL) {
    refuse_req(b, r, is_legacy(xcm__bosh_body_attr(r->body, XCM_BA_VER)),
               "item-not-found");
    return;
  }
  session_request(s, r);
}

/* The connection closes with requests of ours unanswered: they are
 * dropped (a client that still wants one sends its rid again). */
static void bosh_gone(void *ud, xcm_http_conn *conn) {
  xcm_bosh *b = ud;
  bconn *bc = xcm__http_conn_data(conn);
  breq *r;

  if (bc == NULL)
    return;
  bc->gone = 1;
  while ((r = bc->head) != NULL) {
    session *s = r->s;

    bc->head = r->cnext;
    unlink_req(r);
    breq_free(b, r);
    if (s != NULL && !s->ended)
      arm(s);
  }
  bc->tail = NULL;
  if (!bc->flushing)
    bconn_free(bc);
}

void xcm__web_bosh(void *ud, xcm_http_conn *conn, const xcm_http_request *req,
                   const char *body, size_t len) {
  bosh_request(((xcm_web_listener *)ud)->bosh, conn, req, body, len);
}

void xcm__web_bosh_gone(void *ud, xcm_http_conn *conn) {
  bosh_gone(((xcm_web_listener *)ud)->bosh, conn);
}

/* ---- the layer ---------------------------------------------------------- */

int xcm__bosh_new(xcm_bosh **out, xcm_ctx *ctx, const xcm_bosh_cfg *cfg,
                  xcm_bosh_attach_fn attach, void *attach_ud) {
  xcm_bosh *b = xcm__calloc(ctx->alloc, sizeof(*b));

  *out = NULL;
  if (b == NULL)
    return XCM_ENOMEM;
  b->ctx = ctx;
  b->cfg = *cfg;
  if (b->cfg.requests < 1)
    b->cfg.requests = 1;
  if (b->cfg.requests > MAX_CACHE)
    b->cfg.requests = MAX_CACHE;
  if (b->cfg.wait == 0)
    b->cfg.wait = 1;
  if (b->cfg.inactivity == 0)
    b->cfg.inactivity = 1;
  if (b->cfg.high_water == 0)
    b->cfg.high_water = 65536;
  b->attach = attach;
  b->attach_ud = attach_ud;
  xcm__map_init(&b->sessions, ctx->alloc);
  xcm__map_init(&b->per_address, ctx->alloc);
  *out = b;
  return 0;
}

void xcm__bosh_handlers(xcm_bosh *b, xcm_http_handlers *h) {
  h->bosh = bosh_request;
  h->gone = bosh_gone;
  h->ud = b;
}

const xcm_bosh_counters *xcm__bosh_counters(const xcm_bosh *b) {
  return &b->counters;
}

static void end_one(xcm_map_entry *e, void *ud) {
  (void)ud;
  session_end((session *)e, "system-shutdown", XCM_ECLOSED);
}

void xcm__bosh_close(xcm_bosh *b, void (*done)(void *ud), void *ud) {
  b->closing = 1;
  b->done = done;
  b->done_ud = ud;
  xcm__map_each(&b->sessions, end_one, NULL);
  if (b->timers == 0 && b->done != NULL) {
    b->done = NULL;
    done(ud);
  }
}

void xcm__bosh_free(xcm_bosh *b) {
  if (b == NULL)
    return;
  xcm__map_free(&b->sessions);
  xcm__map_free(&b->per_address);
  xcm__free(b->ctx->alloc, b);
}

size_t xcm__bosh_session_footprint(const xcm_bosh *b, const char *sid) {
  const session *s =
      (const session *)xcm__map_get(&b->sessions, sid, strlen(sid));
  const breq *r;
  size_t n;
  unsigned i;

  if (s == NULL)
    return 0;
  n = sizeof(*s) + s->out.cap;
  n += strlen(s->to) + 1;
  if (s->cache != NULL)
    n += s->requests * sizeof(cached);
  for (i = 0; s->cache != NULL && i < s->requests; i++)
    if (s->cache[i].data != NULL)
      n += s->cache[i].len + 1;
  for (r = s->reqs; r != NULL; r = r->next) {
    n += sizeof(*r) + r->answer_len;
    if (r->body != NULL)
      n += sizeof(*r->body) + r->body->strings.cap + r->body->children.cap;
    if (r->bc != NULL)
      n += sizeof(*r->bc) + xcm__http_conn_footprint(r->bc->conn);
  }
  if (s->client != NULL)
    n += xcm__client_footprint(s->client);
  return n;
}
