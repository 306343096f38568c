/* The testkit against Openfire 4.1.6's own wire bytes: a scripted CM,
 * written here over plain libuv TCP, replays the CM side of every
 * capture in tests/transcripts/ over loopback and checks that the
 * testkit answers as Openfire did, byte for byte once stream ids, iq ids
 * and timestamps are normalised, and on the connection Openfire used
 * (iq answers may come on any connection of the CM, as Openfire picks
 * one at random). Then the XMPP side (SASL, binding, presence, routing,
 * offline storage), heartbeats, every fault control, and two testkits on
 * two loops at once. */
#define _GNU_SOURCE /* memmem */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/base64.h>
#include <mbedtls/md.h>
#include <mbedtls/pkcs5.h>
#include <uv.h>

#include "core/ctx.h"
#include "harness.h"
#include "proto/cmproto.h"
#include "transport/stream.h"
#include "transcript.h"
#include "world.h"
#include "xcm/error.h"
#include "xcm/testkit.h"

#define WAIT_MS 10000
#define MAX_CONNS 16
#define MAX_INBOX 16
#define MAX_STANZAS 128

/* ---- a scripted CM: connections and what they received -------------- */

typedef struct env env;

typedef struct conn {
  env *e;
  uv_tcp_t tcp;
  uv_connect_t creq;
  char label[16];
  char cm[64];        /* the CM name its header asked for */
  char stream_id[64]; /* from the testkit's header */
  int connected, eof, closed, closing;
  xcm_stream *stream; /* set when it speaks through libxcm's stream (TLS) */
  char *in;           /* bytes not yet split into units */
  size_t in_len;
  size_t sent;  /* bytes handed to conn_send() */
  char **units; /* complete top-level units, not yet consumed */
  size_t nunits;
  unsigned spaces; /* whitespace between units: heartbeats */
} conn;

typedef struct inbox {
  char jid[160];
  char *stanzas[MAX_STANZAS];
  size_t n;
} inbox;

struct env {
  uv_loop_t loop;
  uv_timer_t timer;
  int timed_out;
  xcm_testkit *kit;
  int kit_closed;
  conn *conns[MAX_CONNS];
  size_t nconns;
  inbox inboxes[MAX_INBOX];
  size_t ninboxes;
  unsigned events[16];
  char last_event_jid[160];
  xcm_ctx ctx; /* for TLS connections, when a test needs them */
  int ctx_on, ctx_closed;
  int close_on; /* close the testkit from inside this event */
  /* Protocol violations the test sends on purpose; env_stop() checks
   * the witness counted exactly these, and that the first says this. */
  unsigned violations;
  const char *first;
};

static char *dupn(const char *s, size_t n) {
  char *d = malloc(n + 1);

  memcpy(d, s, n);
  d[n] = '\0';
  return d;
}

static int is_space(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Past the '>' of the tag starting at p[0] == '<' (quotes respected), or
 * 0 if it is not complete. */
static size_t tag_end(const char *p, size_t n) {
  size_t i;
  char q = 0;

  for (i = 1; i < n; i++) {
    if (q != 0) {
      if (p[i] == q)
        q = 0;
    } else if (p[i] == '"' || p[i] == '\'') {
      q = p[i];
    } else if (p[i] == '>') {
      return i + 1;
    }
  }
  return 0;
}

/* The length of the complete top-level unit at p (an XML declaration,
 * a stream header, a closing stream tag, or an element), or 0. */
static size_t unit_len(const char *p, size_t n) {
  size_t i = 0, end;
  int depth = 0;

  if (n >= 2 && p[1] == '?') {
    const char *q = memmem(p, n, "?>", 2);
    return q != NULL ? (size_t)(q - p) + 2 : 0;
  }
  if ((n >= 14 && memcmp(p, "<stream:stream", 14) == 0) ||
      (n >= 2 && p[1] == '/'))
    return tag_end(p, n);
  while (i < n) {
    if (p[i] != '<') {
      i++;
      continue;
    }
    end = tag_end(p + i, n - i);
    if (end == 0)
      return 0;
    if (p[i + 1] == '/')
      depth--;
    else if (p[i + end - 2] != '/')
      depth++;
    i += end;
    if (depth == 0)
      return i;
  }
  return 0;
}

static void add_unit(conn *c, const char *p, size_t n) {
  char *u = dupn(p, n);
  const char *id;

  if (strncmp(u, "<stream:stream", 14) == 0 &&
      (id = strstr(u, " id=\"")) != NULL)
    snprintf(c->stream_id, sizeof(c->stream_id), "%.*s",
             (int)strcspn(id + 5, "\""), id + 5);
  c->units = realloc(c->units, (c->nunits + 1) * sizeof(char *));
  c->units[c->nunits++] = u;
}

static void split_units(conn *c) {
  size_t off = 0, n;

  while (off < c->in_len) {
    if (is_space(c->in[off])) {
      c->spaces++;
      off++;
      continue;
    }
    n = unit_len(c->in + off, c->in_len - off);
    if (n == 0)
      break;
    add_unit(c, c->in + off, n);
    off += n;
  }
  memmove(c->in, c->in + off, c->in_len - off);
  c->in_len -= off;
}

static void on_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  (void)h;
  buf->base = malloc(size);
  buf->len = size;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  conn *c = s->data;

  if (n > 0) {
    c->in = realloc(c->in, c->in_len + (size_t)n);
    memcpy(c->in + c->in_len, buf->base, (size_t)n);
    c->in_len += (size_t)n;
    split_units(c);
  } else if (n < 0) {
    c->eof = 1;
    uv_read_stop(s);
  }
  free(buf->base);
}

static void on_connect(uv_connect_t *req, int status) {
  conn *c = req->data;

  if (status == 0) {
    c->connected = 1;
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  } else {
    c->eof = 1;
  }
}

static void on_timer(uv_timer_t *t) {
  env *e = t->data;

  e->timed_out = 1;
}

typedef int (*pred_fn)(env *e, void *ud);

/* Run the loop until pred holds or ms pass. */
static int run_until(env *e, pred_fn pred, void *ud, unsigned ms) {
  int ok;

  e->timed_out = 0;
  uv_timer_start(&e->timer, on_timer, ms, 0);
  while (!(ok = pred(e, ud)) && !e->timed_out)
    uv_run(&e->loop, UV_RUN_ONCE);
  uv_timer_stop(&e->timer);
  return ok;
}

static int never(env *e, void *ud) {
  (void)e;
  (void)ud;
  return 0;
}

/* Let the loop turn for ms. */
static void settle(env *e, unsigned ms) {
  run_until(e, never, NULL, ms);
}

static int conn_ready(env *e, void *ud) {
  conn *c = ud;

  (void)e;
  return c->connected || c->eof;
}

static conn *conn_open(env *e, const char *label) {
  struct sockaddr_in sa;
  conn *c = calloc(1, sizeof(*c));

  c->e = e;
  snprintf(c->label, sizeof(c->label), "%s", label);
  uv_tcp_init(&e->loop, &c->tcp);
  c->tcp.data = c;
  c->creq.data = c;
  uv_ip4_addr("127.0.0.1", xcm_testkit_port(e->kit), &sa);
  uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&sa, on_connect);
  e->conns[e->nconns++] = c;
  run_until(e, conn_ready, c, WAIT_MS);
  REQUIRE(c->connected);
  return c;
}

static conn *conn_find(env *e, const char *label) {
  size_t i;

  for (i = 0; i < e->nconns; i++)
    if (strcmp(e->conns[i]->label, label) == 0)
      return e->conns[i];
  return NULL;
}

static void on_written(uv_write_t *req, int status) {
  (void)status;
  free(req);
}

static void conn_send(conn *c, const char *data, size_t len) {
  uv_write_t *req = malloc(sizeof(*req) + len);
  uv_buf_t buf;
  const char *to;

  c->sent += len;
  if (c->stream != NULL) {
    free(req);
    xcm__stream_write(c->stream, data, len);
    return;
  }
  memcpy(req + 1, data, len);
  buf = uv_buf_init((char *)(req + 1), (unsigned)len);
  if (c->cm[0] == '\0' && strncmp(data, "<stream:stream", 14) == 0 &&
      (to = strstr(data, " to=\"")) != NULL)
    snprintf(c->cm, sizeof(c->cm), "%.*s", (int)strcspn(to + 5, "/\""), to + 5);
  if (uv_write(req, (uv_stream_t *)&c->tcp, &buf, 1, on_written) != 0)
    free(req);
}

static void conn_sends(conn *c, const char *s) {
  conn_send(c, s, strlen(s));
}

static void on_conn_closed(uv_handle_t *h) {
  conn *c = h->data;

  c->closed = 1;
}

static void conn_close(conn *c) {
  if (c->closing)
    return;
  c->closing = 1;
  if (c->stream != NULL)
    xcm__stream_close(c->stream);
  else
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void drop_unit(conn *c, size_t i) {
  free(c->units[i]);
  memmove(c->units + i, c->units + i + 1, (c->nunits - i - 1) * sizeof(char *));
  c->nunits--;
}

/* ---- normalising ----------------------------------------------------- */

/* Stream ids, Openfire-style iq ids ("922-123") and delay stamps vary
 * from run to run; everything else must match exactly. */
static char *normalise(const char *s) {
  size_t n = strlen(s), i = 0, o = 0;
  char *out = malloc(n + 1);
  int header = strncmp(s, "<stream:stream", 14) == 0;

  while (i < n) {
    const char *rest = s + i;
    size_t skip = 0;

    if (strncmp(rest, " id=\"", 5) == 0) {
      const char *v = rest + 5;
      size_t vl = strcspn(v, "\"");
      size_t d1 = strspn(v, "0123456789");

      if (header ||
          (d1 > 0 && v[d1] == '-' &&
           d1 + 1 + strspn(v + d1 + 1, "0123456789") == vl && vl > d1 + 1)) {
        memcpy(out + o, header ? " id=\"ID\"" : " id=\"N-N\"", header ? 8 : 9);
        o += header ? 8 : 9;
        skip = 5 + vl + 1;
      }
    } else if (strncmp(rest, " stamp=\"", 8) == 0) {
      size_t vl = strcspn(rest + 8, "\"");

      memcpy(out + o, " stamp=\"T\"", 10);
      o += 10;
      skip = 8 + vl + 1;
    }
    if (skip == 0)
      out[o++] = s[i++];
    else
      i += skip;
  }
  out[o] = '\0';
  return out;
}

static int same(const char *a, const char *b) {
  char *na = normalise(a), *nb = normalise(b);
  int r = strcmp(na, nb) == 0;

  free(na);
  free(nb);
  return r;
}

/* ---- local clients and events --------------------------------------- */

static inbox *inbox_for(env *e, const char *jid) {
  size_t i;

  for (i = 0; i < e->ninboxes; i++)
    if (strcmp(e->inboxes[i].jid, jid) == 0)
      return &e->inboxes[i];
  REQUIRE(e->ninboxes < MAX_INBOX);
  snprintf(e->inboxes[e->ninboxes].jid, sizeof(e->inboxes[0].jid), "%s", jid);
  return &e->inboxes[e->ninboxes++];
}

static void on_local(void *ud, xcm_testkit *kit, const char *jid,
                     const char *stanza, size_t len) {
  env *e = ud;
  inbox *b = inbox_for(e, jid);

  (void)kit;
  if (b->n < MAX_STANZAS)
    b->stanzas[b->n++] = dupn(stanza, len);
}

/* Whether jid received stanza (normalised), consuming it. */
static int got(env *e, const char *jid, const char *stanza) {
  inbox *b = inbox_for(e, jid);
  size_t i;

  for (i = 0; i < b->n; i++) {
    if (same(b->stanzas[i], stanza)) {
      free(b->stanzas[i]);
      memmove(b->stanzas + i, b->stanzas + i + 1,
              (b->n - i - 1) * sizeof(char *));
      b->n--;
      return 1;
    }
  }
  return 0;
}

typedef struct want_local {
  const char *jid, *stanza;
} want_local;

static int local_has(env *e, void *ud) {
  want_local *w = ud;
  inbox *b = inbox_for(e, w->jid);
  size_t i;

  for (i = 0; i < b->n; i++)
    if (same(b->stanzas[i], w->stanza))
      return 1;
  return 0;
}

/* Wait until jid has received stanza, and take it. */
static int wait_local(env *e, const char *jid, const char *stanza) {
  want_local w = {jid, stanza};

  if (!run_until(e, local_has, &w, WAIT_MS)) {
    inbox *b = inbox_for(e, jid);
    size_t i;

    xcm_test_note("%s never received %s; it has:", jid, stanza);
    for (i = 0; i < b->n; i++)
      xcm_test_note("  %s", b->stanzas[i]);
    return 0;
  }
  return got(e, jid, stanza);
}

static void on_kit_closed(void *ud, xcm_testkit *kit) {
  env *e = ud;

  (void)kit;
  e->kit_closed = 1;
}

static void on_event(void *ud, xcm_testkit *kit, const xcm_testkit_event *ev) {
  env *e = ud;

  if ((unsigned)ev->type < 16)
    e->events[ev->type]++;
  if (ev->jid != NULL)
    snprintf(e->last_event_jid, sizeof(e->last_event_jid), "%s", ev->jid);
  if (e->close_on != 0 && (int)ev->type == e->close_on)
    xcm_testkit_close(kit, on_kit_closed, e);
}

/* ---- environments ---------------------------------------------------- */

/* Errors only: every protocol violation the witness saw, in order. */
static void on_log(void *ud, int level, const char *msg) {
  (void)ud;
  if (level <= XCM_LOG_ERROR)
    xcm_test_note("%s", msg);
}

static void env_start(env *e, xcm_testkit_options *opt) {
  xcm_testkit_options defaults;
  char err[256] = "";
  int rc;

  memset(e, 0, sizeof(*e));
  REQUIRE(uv_loop_init(&e->loop) == 0);
  uv_timer_init(&e->loop, &e->timer);
  e->timer.data = e;
  if (opt == NULL) {
    xcm_testkit_options_init(&defaults, sizeof defaults);
    opt = &defaults;
  }
  opt->on_event = on_event;
  opt->event_ud = e;
  if (opt->log == NULL)
    opt->log = on_log;
  if (opt->seed == 0)
    opt->seed = 42;
  rc = xcm_testkit_new(&e->kit, &e->loop, opt, err, sizeof(err));
  if (rc != 0)
    xcm_test_note("xcm_testkit_new: %s (%s)", xcm_strerror(rc), err);
  REQUIRE(rc == 0);
  REQUIRE(xcm_testkit_port(e->kit) > 0);
}

static int all_closed(env *e, void *ud) {
  size_t i;

  (void)ud;
  if (!e->kit_closed)
    return 0;
  for (i = 0; i < e->nconns; i++)
    if (!e->conns[i]->closed)
      return 0;
  return 1;
}

static void env_stop(env *e) {
  size_t i, j;

  for (i = 0; i < e->nconns; i++)
    conn_close(e->conns[i]);
  xcm_testkit_close(e->kit, on_kit_closed, e);
  CHECK(run_until(e, all_closed, NULL, WAIT_MS));
  if (e->violations == 0) {
    CHECK(xcm_test_kit_clean(e->kit));
  } else {
    xcm_testkit_stats st;

    xcm_testkit_get_stats(e->kit, &st, sizeof st);
    if (!CHECK_INT(st.violations, e->violations) && st.violations > 0)
      xcm_test_note("the first: %s", xcm_testkit_first_violation(e->kit));
    if (e->first != NULL && st.violations > 0 &&
        !CHECK(strstr(xcm_testkit_first_violation(e->kit), e->first) != NULL))
      xcm_test_note("want %s in the first: %s", e->first,
                    xcm_testkit_first_violation(e->kit));
  }
  xcm_testkit_free(e->kit);
  if (e->ctx_on) {
    xcm__ctx_close(&e->ctx, NULL);
    uv_run(&e->loop, UV_RUN_DEFAULT);
  }
  uv_close((uv_handle_t *)&e->timer, NULL);
  uv_run(&e->loop, UV_RUN_DEFAULT);
  CHECK_INT(uv_loop_close(&e->loop), 0);
  for (i = 0; i < e->nconns; i++) {
    conn *c = e->conns[i];

    for (j = 0; j < c->nunits; j++)
      free(c->units[j]);
    free(c->units);
    free(c->in);
    free(c);
  }
  for (i = 0; i < e->ninboxes; i++)
    for (j = 0; j < e->inboxes[i].n; j++)
      free(e->inboxes[i].stanzas[j]);
}

static void accounts(env *e) {
  REQUIRE(xcm_testkit_add_account(e->kit, "alice", "alice") == 0);
  REQUIRE(xcm_testkit_add_account(e->kit, "bob", "bob") == 0);
  REQUIRE(xcm_testkit_add_account(e->kit, "carol", "carol") == 0);
  REQUIRE(xcm_testkit_add_roster_item(e->kit, "alice", "bob@example.test",
                                      "Bob", "both") == 0);
  REQUIRE(xcm_testkit_add_roster_item(e->kit, "bob", "alice@example.test", NULL,
                                      "both") == 0);
}

static void local_send(env *e, const char *jid, const char *stanza) {
  REQUIRE(xcm_testkit_local_send(e->kit, jid, stanza, strlen(stanza)) == 0);
}

static void login_local(env *e, const char *jid, const char *presence) {
  REQUIRE(xcm_testkit_local_login(e->kit, jid, on_local, e) == 0);
  inbox_for(e, jid);
  if (presence != NULL)
    REQUIRE(xcm_testkit_local_send(e->kit, jid, presence, strlen(presence)) ==
            0);
}

/* ---- replaying a capture --------------------------------------------- */

enum hook_kind {
  H_LOGIN,    /* jid logs in directly and sends arg (may be NULL) */
  H_LOGOUT,   /* jid disconnects */
  H_SEND,     /* jid sends arg */
  H_GOT,      /* jid must have received arg (waits for it) */
  H_CLOSE,    /* the CM closes connection jid (a label), no stream end */
  H_PRE_CLOSE /* as H_CLOSE, and wait until the testkit noticed */
};

typedef struct hook {
  const char *match; /* fire before the first chunk containing this */
  int on_send;       /* ... sent by the CM (1) or received (0) */
  enum hook_kind kind;
  const char *jid;
  const char *arg;
  const char *label; /* only for a chunk of this connection (NULL: any) */
} hook;

typedef struct replay {
  const char *file;
  const hook *hooks;
  size_t nhooks;
  const char *eof;  /* labels the server must close, comma-separated */
  const char *skip; /* a direct client's connection in the capture */
} replay;

typedef struct want_unit {
  conn *c;
  const char *unit;
  int any; /* an iq answer: any connection of the same CM will do */
  conn *found;
} want_unit;

static int is_iq(const char *u) {
  return strncmp(u, "<iq ", 4) == 0;
}

/* The first pending unit of c that fits: for an iq answer any pending iq
 * (Openfire writes them on a random connection, so their order against
 * other traffic is not the capture's), else the first non-iq one. */
static int match_on(conn *c, const char *unit, int iq) {
  size_t i;

  for (i = 0; i < c->nunits; i++) {
    if (iq != is_iq(c->units[i]))
      continue;
    if (same(c->units[i], unit)) {
      drop_unit(c, i);
      return 1;
    }
    if (!iq)
      return 0;
  }
  return 0;
}

static int unit_arrived(env *e, void *ud) {
  want_unit *w = ud;
  size_t i;

  if (!w->any)
    return match_on(w->c, w->unit, is_iq(w->unit)) ? (w->found = w->c, 1) : 0;
  for (i = 0; i < e->nconns; i++) {
    conn *c = e->conns[i];

    if (c->closing || strcmp(c->cm, w->c->cm) != 0)
      continue;
    if (match_on(c, w->unit, 1)) {
      w->found = c;
      return 1;
    }
  }
  return 0;
}

static void show_pending(env *e) {
  size_t i, j;

  for (i = 0; i < e->nconns; i++)
    for (j = 0; j < e->conns[i]->nunits; j++)
      xcm_test_note("  %s has: %s", e->conns[i]->label, e->conns[i]->units[j]);
}

static int expect_unit(env *e, conn *c, const char *unit) {
  want_unit w = {c, unit, is_iq(unit), NULL};

  if (run_until(e, unit_arrived, &w, WAIT_MS))
    return 1;
  xcm_test_note("%s never received %s", c->label, unit);
  show_pending(e);
  return 0;
}

/* A handshake chunk carries a digest of the capture's stream id: work it
 * out again for this run's, keeping the capture's case (g5) and its
 * deliberate mistakes (g1). */
static void send_chunk(conn *c, const xcm_transcript_chunk *ch) {
  char hex[41], *buf;
  size_t i;
  int upper = 0;

  if (ch->len != 63 || strncmp(ch->bytes, "<handshake>", 11) != 0 ||
      strspn(ch->bytes + 11, "0") == 40) {
    conn_send(c, ch->bytes, ch->len);
    return;
  }
  for (i = 11; i < 51; i++)
    if (ch->bytes[i] >= 'A' && ch->bytes[i] <= 'F')
      upper = 1;
  REQUIRE(xcm__cm_handshake_digest(hex, c->stream_id, strlen(c->stream_id),
                                   "cmsecret", 8) == 0);
  buf = dupn(ch->bytes, ch->len);
  for (i = 0; i < 40; i++)
    buf[11 + i] = upper && hex[i] >= 'a' ? (char)(hex[i] - 32) : hex[i];
  conn_send(c, buf, ch->len);
  free(buf);
}

static int conns_down(env *e, void *ud) {
  unsigned *want = ud;

  return e->events[XCM_TESTKIT_CONN_DOWN] >= *want;
}

static void run_hook(env *e, const hook *h) {
  conn *c;

  switch (h->kind) {
  case H_LOGIN:
    login_local(e, h->jid, h->arg);
    break;
  case H_LOGOUT:
    REQUIRE(xcm_testkit_local_logout(e->kit, h->jid) == 0);
    break;
  case H_SEND:
    REQUIRE(xcm_testkit_local_send(e->kit, h->jid, h->arg, strlen(h->arg)) ==
            0);
    break;
  case H_GOT:
    CHECK(wait_local(e, h->jid, h->arg));
    break;
  case H_CLOSE:
  case H_PRE_CLOSE: {
    unsigned want = e->events[XCM_TESTKIT_CONN_DOWN] + 1;

    c = conn_find(e, h->jid);
    REQUIRE(c != NULL);
    conn_close(c);
    if (h->kind == H_PRE_CLOSE)
      CHECK(run_until(e, conns_down, &want, WAIT_MS));
    break;
  }
  }
}

static int saw_eof(env *e, void *ud) {
  conn *c = ud;

  (void)e;
  return c->eof;
}

static void play(env *e, const replay *r) {
  xcm_transcript t;
  char *fired = calloc(r->nhooks + 1, 1);
  size_t i, k;
  int rc = xcm_transcript_load_named(r->file, &t);

  if (rc != 0)
    xcm_test_note("%s", t.error);
  REQUIRE(rc == 0);
  for (i = 0; i < t.nchunks; i++) {
    const xcm_transcript_chunk *ch = &t.chunks[i];
    conn *c = conn_find(e, ch->conn);

    if (r->skip != NULL && strcmp(r->skip, ch->conn) == 0)
      continue;
    for (k = 0; k < r->nhooks; k++) {
      if (!fired[k] && r->hooks[k].on_send == ch->is_send &&
          (r->hooks[k].label == NULL ||
           strcmp(r->hooks[k].label, ch->conn) == 0) &&
          strstr(ch->bytes, r->hooks[k].match) != NULL) {
        fired[k] = 1;
        run_hook(e, &r->hooks[k]);
      }
    }
    if (ch->is_send) {
      if (c == NULL)
        c = conn_open(e, ch->conn);
      send_chunk(c, ch);
      continue;
    }
    REQUIRE(c != NULL);
    /* Heartbeats are tested on their own; replays run without. */
    if (strspn(ch->bytes, " \t\r\n") == ch->len)
      continue;
    {
      size_t off = 0, n;

      while (off < ch->len) {
        char *unit;

        if (is_space(ch->bytes[off])) {
          off++;
          continue;
        }
        n = unit_len(ch->bytes + off, ch->len - off);
        REQUIRE(n > 0);
        unit = dupn(ch->bytes + off, n);
        if (!expect_unit(e, c, unit)) {
          xcm_test_note("at %s chunk %zu (+%.3fs)", r->file, i, ch->time);
          CHECK(0);
          free(unit);
          free(fired);
          xcm_transcript_free(&t);
          return;
        }
        free(unit);
        off += n;
      }
    }
  }
  for (k = 0; k < r->nhooks; k++) {
    if (!fired[k]) {
      xcm_test_note("hook never fired: %s", r->hooks[k].match);
      CHECK(0);
    }
  }
  if (r->eof != NULL) {
    const char *p = r->eof;

    while (*p != '\0') {
      char label[16];
      size_t n = strcspn(p, ",");
      conn *c;

      snprintf(label, sizeof(label), "%.*s", (int)n, p);
      c = conn_find(e, label);
      CHECK(c != NULL);
      if (c != NULL && !run_until(e, saw_eof, c, WAIT_MS)) {
        xcm_test_note("%s: the testkit did not close it", label);
        CHECK(0);
      }
      p += n + (p[n] == ',');
    }
  }
  /* Nothing more than Openfire sent. */
  settle(e, 50);
  for (i = 0; i < e->nconns; i++) {
    if (e->conns[i]->nunits != 0) {
      show_pending(e);
      CHECK_INT(e->conns[i]->nunits, 0);
      break;
    }
  }
  free(fired);
  xcm_transcript_free(&t);
}

static void replay_opts(xcm_testkit_options *o) {
  xcm_testkit_options_init(o, sizeof *o);
  o->link_tls = XCM_TESTKIT_LINK_TLS_OFFER; /* as the captures' server */
  o->heartbeat_ms = 0;
}

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* The main flow, with the presences of other clients that happened to be
 * online during the capture replayed as local clients. */
static const hook main_hooks[] = {
    {"to=\"cm1/worker-1\"", 1, H_LOGIN, "bob@example.test/cmtest-bob",
     "<presence id=\"f75ddcc5b87a4242abecdaf8d69ea3fa\" xml:lang=\"en\"/>",
     NULL},
    {"hi alice", 0, H_GOT, "bob@example.test/cmtest-bob",
     "<presence from=\"alice@example.test/cm\" to=\"bob@example.test\"/>",
     NULL},
    {"hi alice", 0, H_GOT, "bob@example.test/cmtest-bob",
     "<message to=\"bob@example.test/cmtest-bob\" type=\"chat\" id=\"m1\" "
     "from=\"alice@example.test/cm\"><body>hello bob, from alice via "
     "CM</body></message>",
     NULL},
    {"hi alice", 0, H_SEND, "bob@example.test/cmtest-bob",
     "<message type=\"chat\" to=\"alice@example.test/cm\" "
     "id=\"1f42448152d348f18fe71ba9f82d8e4f\" xml:lang=\"en\"><body>hi alice "
     "&lt;b&gt;&amp;amp; \"quoted\" 'apos' &gt; \xc3\xbcmlaut "
     "\xe2\x98\x83</body></message>",
     NULL},
    {"jabber:iq:version\"/></iq>", 0, H_SEND, "bob@example.test/cmtest-bob",
     "<iq id=\"deb2c27d1cac4d78b0887de82acd776e\" type=\"get\" "
     "to=\"alice@example.test/cm\"><query xmlns=\"jabber:iq:version\"/></iq>",
     NULL},
    {"7bfb0caea3164c8ea2817e9edc2c257c", 0, H_GOT,
     "bob@example.test/cmtest-bob",
     "<iq type=\"result\" id=\"deb2c27d1cac4d78b0887de82acd776e\" "
     "to=\"bob@example.test/cmtest-bob\" from=\"alice@example.test/cm\"><query "
     "xmlns=\"jabber:iq:version\"><name>cmprobe</name><version>0</version></"
     "query></iq>",
     NULL},
    {"7bfb0caea3164c8ea2817e9edc2c257c", 0, H_LOGIN,
     "alice@example.test/guard-0a127bb0f0",
     "<presence id=\"7bfb0caea3164c8ea2817e9edc2c257c\" xml:lang=\"en\"/>",
     NULL},
    {"c586503836f84e8788a8e244006ace90", 0, H_LOGIN,
     "bob@example.test/guard-31987235a0",
     "<presence id=\"c586503836f84e8788a8e244006ace90\" xml:lang=\"en\"/>",
     NULL},
    {"<presence from=\"alice@example.test/z-b2749b6bb9\"", 0, H_LOGIN,
     "alice@example.test/z-b2749b6bb9", "<presence/>", NULL},
    {"b8f858bd479b43b49de3de59e67ba13f", 0, H_LOGIN,
     "bob@example.test/obs-29c8792772",
     "<presence id=\"b8f858bd479b43b49de3de59e67ba13f\" xml:lang=\"en\"/>",
     NULL},
    {"unavailable\" from=\"alice@example.test/z-b2749b6bb9", 0, H_LOGOUT,
     "alice@example.test/z-b2749b6bb9", NULL, NULL},
    {"unavailable\" from=\"bob@example.test/obs-29c8792772", 0, H_LOGOUT,
     "bob@example.test/obs-29c8792772", NULL, NULL},
    {"58206d04d82b4b379e9788ae0bd55589", 0, H_LOGIN,
     "alice@example.test/tls-9200f19f95",
     "<presence id=\"58206d04d82b4b379e9788ae0bd55589\" xml:lang=\"en\"/>",
     NULL},
    {"9a460c0a9e094e8fa38ba7beb9ef6c36", 0, H_LOGIN,
     "bob@example.test/obs-525e40dba1",
     "<presence id=\"9a460c0a9e094e8fa38ba7beb9ef6c36\" xml:lang=\"en\"/>",
     NULL},
    {"unavailable\" from=\"bob@example.test/obs-525e40dba1", 0, H_LOGOUT,
     "bob@example.test/obs-525e40dba1", NULL, NULL},
    {"unavailable\" from=\"alice@example.test/tls-9200f19f95", 0, H_LOGOUT,
     "alice@example.test/tls-9200f19f95", NULL, NULL},
    {"af42f53c7e7249eb94d722105f835288", 0, H_LOGIN,
     "bob@example.test/obs-848d6a9b80",
     "<presence id=\"af42f53c7e7249eb94d722105f835288\" xml:lang=\"en\"/>",
     NULL},
    {"<presence from=\"alice@example.test/strophe-01f34e19ee\"", 0, H_LOGIN,
     "alice@example.test/strophe-01f34e19ee", "<presence/>", NULL},
    {"unavailable\" from=\"alice@example.test/strophe-01f34e19ee", 0, H_LOGOUT,
     "alice@example.test/strophe-01f34e19ee", NULL, NULL},
    {"unavailable\" from=\"bob@example.test/obs-848d6a9b80", 0, H_LOGOUT,
     "bob@example.test/obs-848d6a9b80", NULL, NULL},
    {"unavailable\" from=\"bob@example.test/guard-31987235a0", 0, H_LOGOUT,
     "bob@example.test/guard-31987235a0", NULL, NULL},
    {"unavailable\" from=\"alice@example.test/guard-0a127bb0f0", 0, H_LOGOUT,
     "alice@example.test/guard-0a127bb0f0", NULL, NULL},
    {"d4b0dfb543d24dba87dd57e80596ed9d", 0, H_LOGIN, "alice@example.test/setup",
     "<presence id=\"d4b0dfb543d24dba87dd57e80596ed9d\" xml:lang=\"en\"/>",
     NULL},
    {"001580046697470eaf703f11a2e786b5", 0, H_LOGIN, "bob@example.test/setup",
     "<presence id=\"001580046697470eaf703f11a2e786b5\" xml:lang=\"en\"/>",
     NULL},
    {"unavailable\" from=\"bob@example.test/setup", 0, H_LOGOUT,
     "bob@example.test/setup", NULL, NULL},
    {"unavailable\" from=\"alice@example.test/setup", 0, H_LOGOUT,
     "alice@example.test/setup", NULL, NULL},
    {"728fb25f2e1f4f63897679bca342aa59", 0, H_LOGIN,
     "bob@example.test/obs-4baf93e9ec",
     "<presence id=\"728fb25f2e1f4f63897679bca342aa59\" xml:lang=\"en\"/>",
     NULL},
    {"unavailable\" from=\"bob@example.test/obs-4baf93e9ec", 0, H_LOGOUT,
     "bob@example.test/obs-4baf93e9ec", NULL, NULL},
};

static void test_replay_main(void) {
  xcm_testkit_options o;
  replay r = {.file = "transcript-cm.txt",
              .hooks = main_hooks,
              .nhooks = N(main_hooks),
              .eof = "CM1"};
  env e;

  replay_opts(&o);
  env_start(&e, &o);
  accounts(&e);
  play(&e, &r);
  CHECK(wait_local(&e, "bob@example.test/cmtest-bob",
                   "<presence type=\"unavailable\" "
                   "from=\"alice@example.test/cm\" to=\"bob@example.test\"/>"));
  CHECK_INT(xcm_testkit_sessions(e.kit), 1); /* bob */
  env_stop(&e);
}

static void test_replay_a(void) {
  xcm_testkit_options o;
  replay r = {.file = "transcript-probe-a-dup-names.txt", .eof = "C1,C2"};
  env e;

  replay_opts(&o);
  o.conflict = XCM_TESTKIT_CONFLICT_TAKEOVER;
  env_start(&e, &o);
  accounts(&e);
  play(&e, &r);
  env_stop(&e);
}

static const hook b_hooks[] = {
    {"to=\"cm1/worker-1\"", 1, H_LOGIN, "bob@example.test/probe-b-bob",
     "<presence id=\"7a0f8221c7944e5fbb6590115f4e646c\" xml:lang=\"en\"/>",
     NULL},
    {"7a0f8221c7944e5fbb6590115f4e646c", 0, H_GOT,
     "bob@example.test/probe-b-bob",
     "<presence from=\"alice@example.test/cmb\" to=\"bob@example.test\"/>",
     NULL},
    /* b1: the CM's only connection goes: the session with it. */
    {"<stream:stream", 1, H_PRE_CLOSE, "C1", NULL, "C1b"},
    {"create-b2", 1, H_GOT, "bob@example.test/probe-b-bob",
     "<presence type=\"unavailable\" from=\"alice@example.test/cmb\" "
     "to=\"bob@example.test\"/>",
     NULL},
    /* b2: one of two goes; the session moves to the other. */
    {"still there?", 0, H_PRE_CLOSE, "C1b", NULL, NULL},
    {"still there?", 0, H_SEND, "bob@example.test/probe-b-bob",
     "<message type=\"chat\" to=\"alice@example.test/cmb2\" "
     "id=\"c31642fda949410f9aa4526141167880\" xml:lang=\"en\"><body>still "
     "there?</body></message>",
     NULL},
};

static void test_replay_b(void) {
  xcm_testkit_options o;
  replay r = {.file = "transcript-probe-b-cm-tcp-close.txt",
              .hooks = b_hooks,
              .nhooks = N(b_hooks)};
  env e;

  replay_opts(&o);
  env_start(&e, &o);
  accounts(&e);
  play(&e, &r);
  CHECK(wait_local(&e, "bob@example.test/probe-b-bob",
                   "<presence from=\"alice@example.test/cmb2\" "
                   "to=\"bob@example.test\"/>"));
  /* ... then the last one goes too. */
  conn_close(conn_find(&e, "C2b"));
  CHECK(
      wait_local(&e, "bob@example.test/probe-b-bob",
                 "<presence type=\"unavailable\" "
                 "from=\"alice@example.test/cmb2\" to=\"bob@example.test\"/>"));
  CHECK_INT(xcm_testkit_sessions(e.kit), 1);
  env_stop(&e);
}

static const hook c_hooks[] = {
    {"to=\"cm1/worker-1\"", 1, H_LOGIN, "bob@example.test/probe-c-bob",
     "<presence id=\"3666860543ec4552b7e21108977b38ff\" xml:lang=\"en\"/>",
     NULL},
    /* alice logs in directly with the CM session's resource. */
    {"<conflict", 0, H_LOGIN, "alice@example.test/cmc",
     "<presence id=\"c8b0c7c42276428088a1ab2264c3cc94\" xml:lang=\"en\"/>",
     NULL},
    {"after conflict", 1, H_GOT, "bob@example.test/probe-c-bob",
     "<presence type=\"unavailable\" from=\"alice@example.test/cmc\" "
     "to=\"bob@example.test\"/>",
     NULL},
    {"after conflict", 1, H_GOT, "bob@example.test/probe-c-bob",
     "<presence id=\"c8b0c7c42276428088a1ab2264c3cc94\" xml:lang=\"en\" "
     "from=\"alice@example.test/cmc\" to=\"bob@example.test\"/>",
     NULL},
    {"</stream:stream>", 1, H_LOGOUT, "alice@example.test/cmc", NULL, NULL},
    {"</stream:stream>", 1, H_GOT, "bob@example.test/probe-c-bob",
     "<presence type=\"unavailable\" from=\"alice@example.test/cmc\" "
     "to=\"bob@example.test\"/>",
     NULL},
};

static void test_replay_c(void) {
  xcm_testkit_options o;
  replay r = {.file = "transcript-probe-c-server-closes-client.txt",
              .hooks = c_hooks,
              .nhooks = N(c_hooks),
              .eof = "C1"};
  env e;

  replay_opts(&o);
  env_start(&e, &o);
  accounts(&e);
  play(&e, &r);
  CHECK_INT(e.events[XCM_TESTKIT_SESSION_CLOSED], 2);
  env_stop(&e);
}

static void test_replay_d(void) {
  xcm_testkit_options o;
  replay r = {.file = "transcript-probe-d-failed.txt", .eof = "C1"};
  const char *m;
  size_t len = 0;
  env e;

  replay_opts(&o);
  env_start(&e, &o);
  accounts(&e);
  play(&e, &r);
  /* The probe's failed for an unknown session. */
  e.violations = 1;
  e.first = "a session close or failed for a session this CM never created";
  /* Stored, in the wrong namespace, as Openfire does. */
  CHECK_INT(xcm_testkit_offline_count(e.kit, "carol"), 1);
  m = xcm_testkit_offline_message(e.kit, "carol", 0, &len);
  REQUIRE(m != NULL);
  CHECK_MEM(m, len,
            "<message xmlns=\"http://jabber.org/protocol/connectionmanager\" "
            "to=\"carol@example.test\" from=\"bob@example.test/x\"><body>x</"
            "body></message>",
            strlen("<message xmlns=\"http://jabber.org/protocol/"
                   "connectionmanager\" to=\"carol@example.test\" "
                   "from=\"bob@example.test/x\"><body>x</body></message>"));
  env_stop(&e);
}

static void test_replay_d2(void) {
  xcm_testkit_options o;
  replay r = {.file = "transcript-probe-d2-failed-offline.txt",
              .eof = "C1",
              .skip = "CAROL"};
  env e;

  replay_opts(&o);
  env_start(&e, &o);
  accounts(&e);
  play(&e, &r);
  CHECK_INT(xcm_testkit_offline_count(e.kit, "carol"), 2);
  /* carol logs in directly: what the capture's raw client received. */
  login_local(&e, "carol@example.test/raw", "<presence/>");
  CHECK(got(&e, "carol@example.test/raw",
            "<message xmlns=\"http://jabber.org/protocol/connectionmanager\" "
            "to=\"carol@example.test\" from=\"alice@example.test/cmd2\" "
            "type=\"chat\" id=\"lost1\"><body>x</body><delay "
            "xmlns=\"urn:xmpp:delay\" from=\"example.test\" "
            "stamp=\"2026-11-23T19:27:12.616Z\"/></message>"));
  CHECK(got(&e, "carol@example.test/raw",
            "<message to=\"carol@example.test\" "
            "from=\"alice@example.test/cmd2\" type=\"chat\" "
            "id=\"lost2\"><body>x2</body><delay xmlns=\"urn:xmpp:delay\" "
            "from=\"example.test\" "
            "stamp=\"2026-11-23T19:27:12.617Z\"/></message>"));
  CHECK_INT(xcm_testkit_offline_count(e.kit, "carol"), 0);
  env_stop(&e);
}

static void test_replay_e(void) {
  xcm_testkit_options o;
  replay r = {.file = "transcript-probe-e-unknown-stream.txt", .eof = "C1"};
  env e;

  replay_opts(&o);
  env_start(&e, &o);
  play(&e, &r);
  /* The probe's routes for two unknown sessions, a close of one, and a
   * message outside a route. */
  e.violations = 4;
  e.first = "a route for streamid 'nosuch', which CM cm1 never created";
  env_stop(&e);
}

static void test_replay_e2(void) {
  xcm_testkit_options o;
  replay r = {.file = "transcript-probe-e2-no-streamid.txt", .eof = "C1"};
  env e;

  replay_opts(&o);
  env_start(&e, &o);
  play(&e, &r);
  e.violations = 1; /* the probe's route without streamid */
  e.first = "a route without streamid";
  env_stop(&e);
}

static const hook f_hooks[] = {
    {"to=\"cm1/worker-1\"", 1, H_LOGIN, "bob@example.test/probe-f-bob",
     "<presence/>", NULL},
    {"<route streamid=\"f1\" to=\"example.test\" from=\"cm1/worker-1\"/>", 1,
     H_GOT, "bob@example.test/probe-f-bob",
     "<message to=\"bob@example.test/probe-f-bob\" id=\"one\" "
     "from=\"alice@example.test/cmf\"><body>one</body></message>",
     NULL},
};

static void test_replay_f(void) {
  xcm_testkit_options o;
  replay r = {.file = "transcript-probe-f-two-stanzas.txt",
              .hooks = f_hooks,
              .nhooks = N(f_hooks),
              .eof = "C1"};
  env e;

  replay_opts(&o);
  env_start(&e, &o);
  accounts(&e);
  play(&e, &r);
  e.violations = 2; /* the probe's routes with two stanzas and none */
  e.first = "a route with 2 elements, not one";
  /* The second stanza of the route was dropped; the session went with
   * the connection, and its unavailable presence although it never sent
   * one (Openfire: "!wasAvailable"). */
  CHECK(
      wait_local(&e, "bob@example.test/probe-f-bob",
                 "<presence type=\"unavailable\" "
                 "from=\"alice@example.test/cmf\" to=\"bob@example.test\"/>"));
  CHECK_INT(inbox_for(&e, "bob@example.test/probe-f-bob")->n, 0);
  env_stop(&e);
}

static void test_replay_g(void) {
  xcm_testkit_options o;
  replay r = {.file = "transcript-probe-g-handshake.txt",
              .eof = "G1,G2,G3,G4,G5"};
  xcm_testkit_stats st;
  env e;

  replay_opts(&o);
  env_start(&e, &o);
  play(&e, &r);
  /* The probe's route (for an unknown session) and iq before the
   * handshake, a header without to, one in the wrong namespace (and
   * without CM/RES) and an upper-case handshake. A wrong digest is no
   * violation: the protocol answers it. */
  e.violations = 7;
  e.first = "a route before the handshake";
  xcm_testkit_get_stats(e.kit, &st, sizeof st);
  CHECK_INT(st.handshakes, 1);
  CHECK_INT(st.handshakes_failed, 1);
  CHECK_INT(st.refused, 2);
  env_stop(&e);
}

/* ---- a scripted CM for the rest -------------------------------------- */

#define HDR                                                                    \
  "<stream:stream xmlns:stream=\"http://etherx.jabber.org/streams\" "          \
  "xmlns=\"jabber:connectionmanager\" to=\"%s\" version=\"1.0\">"

typedef struct want_take {
  conn *c; /* NULL: any connection of cm */
  const char *cm;
  const char *needle;
  char *found;
  conn *where;
} want_take;

static int take_ready(env *e, void *ud) {
  want_take *w = ud;
  size_t i, j;

  for (i = 0; i < e->nconns; i++) {
    conn *c = e->conns[i];

    if (w->c != NULL ? c != w->c : strcmp(c->cm, w->cm) != 0)
      continue;
    for (j = 0; j < c->nunits; j++) {
      if (strstr(c->units[j], w->needle) != NULL) {
        w->found = c->units[j];
        w->where = c;
        memmove(c->units + j, c->units + j + 1,
                (c->nunits - j - 1) * sizeof(char *));
        c->nunits--;
        return 1;
      }
    }
  }
  return 0;
}

/* The first unit on c containing needle, taken off its queue (the caller
 * frees it), or NULL after a wait. */
static char *take(env *e, conn *c, const char *needle) {
  want_take w = {c, NULL, needle, NULL, NULL};

  if (!run_until(e, take_ready, &w, WAIT_MS)) {
    xcm_test_note("%s: nothing with %s", c->label, needle);
    show_pending(e);
  }
  return w.found;
}

/* The same on any connection of c's CM: iq answers. */
static char *take_any(env *e, conn *c, const char *needle) {
  want_take w = {NULL, c->cm, needle, NULL, NULL};

  if (!run_until(e, take_ready, &w, WAIT_MS)) {
    xcm_test_note("%s: nothing with %s", c->cm, needle);
    show_pending(e);
  }
  return w.found;
}

/* Take a unit and compare it, normalised, with want. */
static int take_is(env *e, conn *c, const char *needle, const char *want) {
  char *u = take(e, c, needle);
  int ok = u != NULL && same(u, want);

  if (u != NULL && !ok)
    xcm_test_note("got  %s\n# want %s", u, want);
  free(u);
  return ok;
}

static int nothing_with(env *e, conn *c, const char *needle, unsigned ms) {
  size_t j;

  settle(e, ms);
  for (j = 0; j < c->nunits; j++)
    if (strstr(c->units[j], needle) != NULL)
      return 0;
  return 1;
}

static void sendf(conn *c, const char *fmt, ...) {
  va_list ap;
  char *buf;
  int n;

  va_start(ap, fmt);
  n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  REQUIRE(n > 0);
  buf = malloc((size_t)n + 1);
  va_start(ap, fmt);
  vsnprintf(buf, (size_t)n + 1, fmt, ap);
  va_end(ap);
  conn_send(c, buf, (size_t)n);
  free(buf);
}

/* A CM connection through header, handshake and configuration. */
static conn *cm_up(env *e, const char *label, const char *addr) {
  conn *c = conn_open(e, label);
  char hex[41], *u;

  sendf(c, HDR, addr);
  u = take(e, c, "<?xml");
  REQUIRE(u != NULL);
  free(u);
  u = take(e, c, "<stream:stream");
  REQUIRE(u != NULL);
  free(u);
  u = take(e, c, "<stream:features");
  REQUIRE(u != NULL);
  free(u);
  REQUIRE(xcm__cm_handshake_digest(hex, c->stream_id, strlen(c->stream_id),
                                   "cmsecret", 8) == 0);
  sendf(c, "<handshake>%s</handshake>", hex);
  u = take(e, c, "<handshake>");
  REQUIRE(u != NULL && strcmp(u, "<handshake></handshake>") == 0);
  free(u);
  u = take(e, c, "<configuration");
  REQUIRE(u != NULL);
  free(u);
  return c;
}

static void cm_create(env *e, conn *c, const char *sid) {
  char needle[96], *u;

  sendf(c,
        "<iq type=\"set\" id=\"cr-%s\" to=\"example.test\" "
        "from=\"cm1/%s\"><session "
        "xmlns=\"http://jabber.org/protocol/connectionmanager\" "
        "id=\"%s\"><create/></session></iq>",
        sid, c->label, sid);
  snprintf(needle, sizeof(needle), "id=\"cr-%s\"", sid);
  u = take_any(e, c, needle);
  REQUIRE(u != NULL);
  CHECK(strncmp(u, "<iq type=\"result\"", 17) == 0);
  free(u);
}

static void cm_route(conn *c, const char *sid, const char *stanza) {
  /* The test's CMs are all "cm1/<label>". */
  sendf(c,
        "<route streamid=\"%s\" to=\"example.test\" from=\"cm1/%s\">%s</route>",
        sid, c->label, stanza);
}

/* A route for sid holding exactly inner (normalised), on c, or with
 * anywhere set on any connection of c's CM. Openfire frames stanzas as
 * streamid/from/to, and what goes through its raw-text path (SASL
 * answers, stream errors) as from/to/streamid. */
static int route_check(env *e, conn *c, const char *sid, const char *inner,
                       int raw, int anywhere) {
  char want[8192], needle[128], *u;
  int ok;

  snprintf(needle, sizeof(needle), "streamid=\"%s\"", sid);
  if (raw)
    snprintf(want, sizeof(want),
             "<route from=\"example.test\" to=\"cm1\" "
             "streamid=\"%s\">%s</route>",
             sid, inner);
  else
    snprintf(want, sizeof(want),
             "<route streamid=\"%s\" from=\"example.test\" "
             "to=\"cm1\">%s</route>",
             sid, inner);
  u = anywhere ? take_any(e, c, needle) : take(e, c, needle);
  ok = u != NULL && same(u, want);
  if (u != NULL && !ok)
    xcm_test_note("got  %s\n# want %s", u, want);
  free(u);
  return ok;
}

static int routed(env *e, conn *c, const char *sid, const char *inner) {
  return route_check(e, c, sid, inner, 0, 0);
}

static int routed_raw(env *e, conn *c, const char *sid, const char *inner) {
  return route_check(e, c, sid, inner, 1, 0);
}

static void b64(const char *in, size_t len, char *out, size_t cap) {
  size_t olen = 0;

  REQUIRE(mbedtls_base64_encode((unsigned char *)out, cap, &olen,
                                (const unsigned char *)in, len) == 0);
}

#define SASL_NS "urn:ietf:params:xml:ns:xmpp-sasl"
#define SUCCESS "<success xmlns=\"" SASL_NS "\"/>"

static void cm_plain(conn *c, const char *sid, const char *user,
                     const char *pass) {
  char raw[256], enc[512], st[1024];
  size_t n = (size_t)snprintf(raw, sizeof(raw), "%c%s%c%s", 0, user, 0, pass);

  b64(raw, n, enc, sizeof(enc));
  snprintf(st, sizeof(st),
           "<auth xmlns=\"" SASL_NS "\" mechanism=\"PLAIN\">%s</auth>", enc);
  cm_route(c, sid, st);
}

/* create, PLAIN, bind, session: the captures' login. */
static void cm_login(env *e, conn *c, const char *sid, const char *user,
                     const char *res) {
  char st[512], want[512];

  cm_create(e, c, sid);
  cm_plain(c, sid, user, user);
  REQUIRE(route_check(e, c, sid, SUCCESS, 1, 1));
  snprintf(st, sizeof(st),
           "<iq type=\"set\" id=\"b1\"><bind "
           "xmlns=\"urn:ietf:params:xml:ns:xmpp-bind\"><resource>%s</resource>"
           "</bind></iq>",
           res);
  cm_route(c, sid, st);
  snprintf(want, sizeof(want),
           "<iq type=\"result\" id=\"b1\" to=\"example.test/%s\"><bind "
           "xmlns=\"urn:ietf:params:xml:ns:xmpp-bind\"><jid>%s@example.test/"
           "%s</jid></bind></iq>",
           sid, user, res);
  REQUIRE(route_check(e, c, sid, want, 0, 1));
  cm_route(c, sid,
           "<iq type=\"set\" id=\"s1\"><session "
           "xmlns=\"urn:ietf:params:xml:ns:xmpp-session\"/></iq>");
  snprintf(want, sizeof(want),
           "<iq type=\"result\" id=\"s1\" to=\"%s@example.test/%s\"/>", user,
           res);
  REQUIRE(route_check(e, c, sid, want, 0, 1));
}

/* ---- SASL -------------------------------------------------------------- */

static void test_sasl_plain(void) {
  env e;
  conn *c;

  env_start(&e, NULL);
  accounts(&e);
  c = cm_up(&e, "w1", "cm1/w1");
  cm_create(&e, c, "p1");
  cm_plain(c, "p1", "alice", "wrong");
  CHECK(routed_raw(&e, c, "p1",
                   "<failure xmlns=\"" SASL_NS
                   "\"><not-authorized/></failure>"));
  cm_plain(c, "p1", "nobody", "nobody");
  CHECK(routed_raw(&e, c, "p1",
                   "<failure xmlns=\"" SASL_NS
                   "\"><not-authorized/></failure>"));
  /* An authorization identity other than the user's own. */
  cm_route(c, "p1",
           "<auth xmlns=\"" SASL_NS
           "\" mechanism=\"PLAIN\">Ym9iQGV4YW1wbGUudGVzdABhbGljZQBhbGljZQ==</"
           "auth>");
  CHECK(routed_raw(&e, c, "p1",
                   "<failure xmlns=\"" SASL_NS
                   "\"><invalid-authzid/></failure>"));
  cm_route(c, "p1",
           "<auth xmlns=\"" SASL_NS "\" mechanism=\"PLAIN\">!!!</auth>");
  CHECK(routed_raw(&e, c, "p1",
                   "<failure xmlns=\"" SASL_NS
                   "\"><incorrect-encoding/></failure>"));
  /* No initial response: an empty challenge asks for it. */
  cm_route(c, "p1", "<auth xmlns=\"" SASL_NS "\" mechanism=\"PLAIN\"/>");
  CHECK(routed_raw(&e, c, "p1", "<challenge xmlns=\"" SASL_NS "\"/>"));
  cm_route(c, "p1",
           "<response xmlns=\"" SASL_NS
           "\">YWxpY2VAZXhhbXBsZS50ZXN0AGFsaWNlAGFsaWNl</response>");
  CHECK(routed_raw(&e, c, "p1", SUCCESS));
  env_stop(&e);
}

static void hmac_sha1(const unsigned char *key, size_t klen, const char *data,
                      size_t len, unsigned char out[20]) {
  mbedtls_md_hmac(mbedtls_md_info_from_type(MBEDTLS_MD_SHA1), key, klen,
                  (const unsigned char *)data, len, out);
}

/* One SCRAM-SHA-1 exchange as a client would do it (RFC 5802); returns
 * whether the server's signature checked out after its success. */
static int scram_login(env *e, conn *c, const char *sid, const char *user,
                       const char *pass) {
  const char *cnonce = "fyko+d2lbbFgONRv9qkxdawL";
  char first[256], enc[1024], st[2048], sfirst[512], final[1200];
  char auth[2048], *u, *p;
  unsigned char salt[64], salted[20], ckey[20], stored[20], sig[20], proof[20];
  unsigned char skey[20], ssig[20], v[128];
  size_t olen = 0, slen = 0, i;
  int iter, ok;
  mbedtls_md_context_t md;

  snprintf(first, sizeof(first), "n,,n=%s,r=%s", user, cnonce);
  b64(first, strlen(first), enc, sizeof(enc));
  snprintf(st, sizeof(st),
           "<auth xmlns=\"" SASL_NS "\" mechanism=\"SCRAM-SHA-1\">%s</auth>",
           enc);
  cm_route(c, sid, st);
  u = take(e, c, "<challenge");
  if (u == NULL)
    return 0;
  p = strstr(strstr(u, "<challenge"), "\">") + 2;
  *strchr(p, '<') = '\0';
  CHECK(mbedtls_base64_decode((unsigned char *)sfirst, sizeof(sfirst) - 1,
                              &olen, (unsigned char *)p, strlen(p)) == 0);
  sfirst[olen] = '\0';
  free(u);
  /* r=<cnonce><snonce>,s=<salt>,i=<n> */
  CHECK(strncmp(sfirst + 2, cnonce, strlen(cnonce)) == 0);
  p = strstr(sfirst, ",s=") + 3;
  CHECK(mbedtls_base64_decode(salt, sizeof(salt), &slen, (unsigned char *)p,
                              strcspn(p, ",")) == 0);
  iter = atoi(strstr(sfirst, ",i=") + 3);
  CHECK_INT(iter, 4096);
  mbedtls_md_init(&md);
  mbedtls_md_setup(&md, mbedtls_md_info_from_type(MBEDTLS_MD_SHA1), 1);
  mbedtls_pkcs5_pbkdf2_hmac(&md, (const unsigned char *)pass, strlen(pass),
                            salt, slen, (unsigned)iter, 20, salted);
  mbedtls_md_free(&md);
  snprintf(final, sizeof(final), "c=biws,r=%.*s", (int)strcspn(sfirst + 2, ","),
           sfirst + 2);
  snprintf(auth, sizeof(auth), "%s,%s,%s", first + 3, sfirst, final);
  hmac_sha1(salted, 20, "Client Key", 10, ckey);
  mbedtls_md(mbedtls_md_info_from_type(MBEDTLS_MD_SHA1), ckey, 20, stored);
  hmac_sha1(stored, 20, auth, strlen(auth), sig);
  for (i = 0; i < 20; i++)
    proof[i] = ckey[i] ^ sig[i];
  b64((const char *)proof, 20, enc, sizeof(enc));
  snprintf(final + strlen(final), sizeof(final) - strlen(final), ",p=%s", enc);
  b64(final, strlen(final), enc, sizeof(enc));
  snprintf(st, sizeof(st), "<response xmlns=\"" SASL_NS "\">%s</response>",
           enc);
  cm_route(c, sid, st);
  u = take(e, c, "xmlns=\"" SASL_NS "\"");
  if (u == NULL || strstr(u, "<success") == NULL) {
    free(u);
    return 0;
  }
  /* v=<server signature> */
  p = strstr(strstr(u, "<success"), "\">") + 2;
  *strchr(p, '<') = '\0';
  CHECK(mbedtls_base64_decode(v, sizeof(v) - 1, &olen, (unsigned char *)p,
                              strlen(p)) == 0);
  v[olen] = '\0';
  hmac_sha1(salted, 20, "Server Key", 10, skey);
  hmac_sha1(skey, 20, auth, strlen(auth), ssig);
  b64((const char *)ssig, 20, enc, sizeof(enc));
  ok = strncmp((char *)v, "v=", 2) == 0 && strcmp((char *)v + 2, enc) == 0;
  free(u);
  return ok;
}

static void test_sasl_scram(void) {
  env e;
  conn *c;
  char *u;

  env_start(&e, NULL);
  accounts(&e);
  REQUIRE(xcm_testkit_add_account(e.kit, "dave,=x", "pencil") == 0);
  c = cm_up(&e, "w1", "cm1/w1");
  cm_create(&e, c, "s1");
  CHECK(scram_login(&e, c, "s1", "alice", "alice"));
  cm_create(&e, c, "s2");
  CHECK(!scram_login(&e, c, "s2", "alice", "wrong"));
  /* A name with ',' and '=' travels escaped. */
  cm_create(&e, c, "s3");
  CHECK(scram_login(&e, c, "s3", "dave=2C=3Dx", "pencil"));
  /* Channel binding is not offered. */
  cm_create(&e, c, "s4");
  cm_route(c, "s4",
           "<auth xmlns=\"" SASL_NS
           "\" mechanism=\"SCRAM-SHA-1\">cD10bHMtdW5pcXVlLCxuPWFsaWNlLHI9eA==</"
           "auth>");
  u = take(&e, c, "streamid=\"s4\"");
  CHECK(u != NULL && strstr(u, "<not-authorized/>") != NULL);
  free(u);
  env_stop(&e);
}

static void test_sasl_anonymous(void) {
  xcm_testkit_options o;
  env e;
  conn *c;

  xcm_testkit_options_init(&o, sizeof o);
  env_start(&e, &o);
  c = cm_up(&e, "w1", "cm1/w1");
  cm_create(&e, c, "anon1");
  cm_route(c, "anon1", "<auth xmlns=\"" SASL_NS "\" mechanism=\"ANONYMOUS\"/>");
  CHECK(routed_raw(&e, c, "anon1", SUCCESS));
  /* Named after the stream id, as Openfire names anonymous users. */
  cm_route(c, "anon1",
           "<iq type=\"set\" id=\"b\"><bind "
           "xmlns=\"urn:ietf:params:xml:ns:xmpp-bind\"><resource>r</"
           "resource></bind></iq>");
  CHECK(routed(&e, c, "anon1",
               "<iq type=\"result\" id=\"b\" to=\"example.test/anon1\"><bind "
               "xmlns=\"urn:ietf:params:xml:ns:xmpp-bind\"><jid>anon1@"
               "example.test/r</jid></bind></iq>"));
  /* Announced as Openfire does, never implemented. */
  cm_create(&e, c, "d1");
  cm_route(c, "d1", "<auth xmlns=\"" SASL_NS "\" mechanism=\"DIGEST-MD5\"/>");
  CHECK(routed_raw(&e, c, "d1",
                   "<failure xmlns=\"" SASL_NS
                   "\"><invalid-mechanism/></failure>"));
  cm_route(c, "d1", "<auth xmlns=\"" SASL_NS "\" mechanism=\"X-OTHER\"/>");
  CHECK(routed_raw(&e, c, "d1",
                   "<failure xmlns=\"" SASL_NS
                   "\"><invalid-mechanism/></failure>"));
  /* The anonymous user goes with its session. */
  sendf(
      c,
      "<iq type=\"set\" id=\"cl\" to=\"example.test\" from=\"cm1/w1\"><session "
      "xmlns=\"http://jabber.org/protocol/connectionmanager\" "
      "id=\"anon1\"><close/></session></iq>");
  free(take_any(&e, c, "id=\"cl\""));
  CHECK(xcm_testkit_local_login(e.kit, "anon1@example.test/x", NULL, NULL) ==
        XCM_ENOTFOUND);
  env_stop(&e);
}

/* ---- binding and presence --------------------------------------------- */

static void test_bind_conflict(void) {
  env e;
  conn *c;
  char *u;

  env_start(&e, NULL);
  accounts(&e);
  c = cm_up(&e, "w1", "cm1/w1");
  cm_login(&e, c, "s1", "alice", "same");
  cm_route(c, "s1", "<presence/>");
  cm_create(&e, c, "s2");
  cm_plain(c, "s2", "alice", "alice");
  REQUIRE(routed_raw(&e, c, "s2", SUCCESS));
  cm_route(c, "s2",
           "<iq type=\"set\" id=\"b2\"><bind "
           "xmlns=\"urn:ietf:params:xml:ns:xmpp-bind\"><resource>same</"
           "resource></bind></iq>");
  /* The older session goes as capture c shows. */
  CHECK(
      routed_raw(&e, c, "s1",
                 "<stream:error "
                 "xmlns:stream=\"http://etherx.jabber.org/streams\"><conflict "
                 "xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/></"
                 "stream:error>"));
  CHECK(take_is(&e, c, "<close/>",
                "<iq type=\"set\" id=\"1-1\" from=\"example.test\" "
                "to=\"cm1\"><session "
                "xmlns=\"http://jabber.org/protocol/connectionmanager\" "
                "id=\"s1\"><close/></session></iq>"));
  CHECK(routed(&e, c, "s1",
               "<presence type=\"unavailable\" "
               "from=\"alice@example.test/same\" "
               "to=\"alice@example.test/same\"/>"));
  CHECK(routed(&e, c, "s2",
               "<iq type=\"result\" id=\"b2\" to=\"example.test/s2\"><bind "
               "xmlns=\"urn:ietf:params:xml:ns:xmpp-bind\"><jid>alice@"
               "example.test/same</jid></bind></iq>"));
  CHECK_INT(xcm_testkit_sessions(e.kit), 1);
  /* The server picks a resource when none is asked for. */
  cm_create(&e, c, "s3");
  cm_plain(c, "s3", "bob", "bob");
  REQUIRE(routed_raw(&e, c, "s3", SUCCESS));
  cm_route(c, "s3",
           "<iq type=\"set\" id=\"b3\"><bind "
           "xmlns=\"urn:ietf:params:xml:ns:xmpp-bind\"/></iq>");
  u = take(&e, c, "streamid=\"s3\"");
  CHECK(u != NULL && strstr(u, "<jid>bob@example.test/") != NULL);
  free(u);
  /* Stanzas before binding end the session. */
  cm_create(&e, c, "s4");
  cm_route(c, "s4",
           "<message to=\"bob@example.test\"><body>x</body></message>");
  CHECK(
      routed_raw(&e, c, "s4",
                 "<stream:error "
                 "xmlns:stream=\"http://etherx.jabber.org/streams\"><not-"
                 "authorized xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/></"
                 "stream:error>"));
  free(take(&e, c, "id=\"s4\"><close/>"));
  /* Not a stanza at all: the route is refused. */
  cm_route(c, "s2", "<foo xmlns=\"urn:x\"/>");
  CHECK(
      take_is(&e, c, "type=\"error\"",
              "<route streamid=\"s2\" from=\"example.test\" to=\"cm1/w1\" "
              "type=\"error\"><error code=\"400\" type=\"modify\"><bad-request "
              "xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/><unknown-stanza "
              "xmlns=\"http://jabber.org/protocol/connectionmanager#errors\"/>"
              "</error></route>"));
  env_stop(&e);
}

static void test_presence(void) {
  env e;
  conn *c;

  env_start(&e, NULL);
  accounts(&e);
  c = cm_up(&e, "w1", "cm1/w1");
  cm_login(&e, c, "a", "alice", "pc");
  cm_login(&e, c, "b", "bob", "phone");
  cm_route(c, "a", "<presence><priority>1</priority></presence>");
  /* bob is not available yet: he gets nothing; alice sees nobody. */
  CHECK(nothing_with(&e, c, "<presence", 20));
  cm_route(c, "b",
           "<presence xmlns=\"jabber:client\"><show>away</show></presence>");
  CHECK(routed(&e, c, "a",
               "<presence from=\"bob@example.test/phone\" "
               "to=\"alice@example.test\"><show>away</show></presence>"));
  CHECK(routed(&e, c, "b",
               "<presence from=\"alice@example.test/pc\" "
               "to=\"bob@example.test/phone\"><priority>1</priority></"
               "presence>"));
  /* A second resource of alice's sees the first and is seen by it. */
  login_local(&e, "alice@example.test/home", "<presence/>");
  CHECK(routed(&e, c, "a",
               "<presence from=\"alice@example.test/home\" "
               "to=\"alice@example.test/pc\"/>"));
  CHECK(routed(&e, c, "b",
               "<presence from=\"alice@example.test/home\" "
               "to=\"bob@example.test\"/>"));
  CHECK(got(&e, "alice@example.test/home",
            "<presence from=\"alice@example.test/pc\" "
            "to=\"alice@example.test/home\"><priority>1</priority></"
            "presence>"));
  CHECK(got(&e, "alice@example.test/home",
            "<presence from=\"bob@example.test/phone\" "
            "to=\"alice@example.test/home\"><show>away</show></presence>"));
  /* Unavailable explicitly, then no second one at the close. */
  cm_route(c, "b", "<presence type=\"unavailable\"/>");
  CHECK(routed(&e, c, "a",
               "<presence type=\"unavailable\" "
               "from=\"bob@example.test/phone\" to=\"alice@example.test\"/>"));
  CHECK(wait_local(&e, "alice@example.test/home",
                   "<presence type=\"unavailable\" "
                   "from=\"bob@example.test/phone\" "
                   "to=\"alice@example.test\"/>"));
  sendf(
      c,
      "<iq type=\"set\" id=\"cl\" to=\"example.test\" from=\"cm1/w1\"><session "
      "xmlns=\"http://jabber.org/protocol/connectionmanager\" "
      "id=\"b\"><close/></session></iq>");
  free(take_any(&e, c, "id=\"cl\""));
  CHECK(nothing_with(&e, c, "unavailable", 30));
  CHECK_INT(xcm_testkit_jid_state(e.kit, "alice@example.test/pc"), 2);
  CHECK_INT(xcm_testkit_jid_state(e.kit, "bob@example.test/phone"), 0);
  env_stop(&e);
}

/* ---- routing and offline storage --------------------------------------- */

static void test_messages(void) {
  env e;
  conn *c;

  env_start(&e, NULL);
  accounts(&e);
  c = cm_up(&e, "w1", "cm1/w1");
  cm_login(&e, c, "a", "alice", "pc");
  login_local(&e, "bob@example.test/r1",
              "<presence><priority>1</priority></presence>");
  login_local(&e, "bob@example.test/r2",
              "<presence><priority>5</priority></presence>");
  login_local(&e, "bob@example.test/r3",
              "<presence><priority>-1</priority></presence>");
  /* Bare JID: the highest priority. */
  cm_route(c, "a",
           "<message xmlns=\"jabber:client\" to=\"bob@example.test\" "
           "id=\"m1\"><body>1</body></message>");
  CHECK(wait_local(&e, "bob@example.test/r2",
                   "<message to=\"bob@example.test\" id=\"m1\" "
                   "from=\"alice@example.test/pc\"><body>1</body></message>"));
  /* Full JID: that resource, whatever its priority. */
  cm_route(
      c, "a",
      "<message to=\"bob@example.test/r3\" id=\"m2\"><body>2</body></message>");
  CHECK(wait_local(&e, "bob@example.test/r3",
                   "<message to=\"bob@example.test/r3\" id=\"m2\" "
                   "from=\"alice@example.test/pc\"><body>2</body></message>"));
  /* A resource that is not online: like the bare JID for a chat. */
  cm_route(c, "a",
           "<message type=\"chat\" to=\"bob@example.test/gone\" "
           "id=\"m3\"><body>3</body></message>");
  CHECK(wait_local(&e, "bob@example.test/r2",
                   "<message type=\"chat\" to=\"bob@example.test/gone\" "
                   "id=\"m3\" from=\"alice@example.test/pc\"><body>3</body>"
                   "</message>"));
  /* Equal priorities: the one that became available last. */
  local_send(&e, "bob@example.test/r1",
             "<presence><priority>5</priority></presence>");
  cm_route(c, "a", "<message to=\"bob@example.test\" id=\"m4\"/>");
  CHECK(wait_local(&e, "bob@example.test/r1",
                   "<message to=\"bob@example.test\" id=\"m4\" "
                   "from=\"alice@example.test/pc\"/>"));
  /* Nobody of that name, and another server. */
  cm_route(
      c, "a",
      "<message to=\"nobody@example.test\" id=\"m5\"><body>?</body></message>");
  CHECK(routed(&e, c, "a",
               "<message type=\"error\" id=\"m5\" from=\"nobody@example.test\" "
               "to=\"alice@example.test/pc\"><body>?</body><error code=\"503\" "
               "type=\"cancel\"><service-unavailable "
               "xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/></error>"
               "</message>"));
  cm_route(c, "a", "<message to=\"x@elsewhere.test\" id=\"m6\"/>");
  CHECK(routed(&e, c, "a",
               "<message type=\"error\" id=\"m6\" from=\"x@elsewhere.test\" "
               "to=\"alice@example.test/pc\"><error code=\"404\" "
               "type=\"cancel\"><remote-server-not-found "
               "xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/></error>"
               "</message>"));
  /* iq between sessions, both ways, from stamped. */
  cm_route(c, "a",
           "<iq type=\"get\" id=\"v1\" to=\"bob@example.test/r1\"><query "
           "xmlns=\"jabber:iq:version\"/></iq>");
  CHECK(wait_local(&e, "bob@example.test/r1",
                   "<iq type=\"get\" id=\"v1\" to=\"bob@example.test/r1\" "
                   "from=\"alice@example.test/pc\"><query "
                   "xmlns=\"jabber:iq:version\"/></iq>"));
  local_send(&e, "bob@example.test/r1",
             "<iq type=\"result\" id=\"v1\" to=\"alice@example.test/pc\"/>");
  CHECK(routed(&e, c, "a",
               "<iq type=\"result\" id=\"v1\" to=\"alice@example.test/pc\" "
               "from=\"bob@example.test/r1\"/>"));
  cm_route(c, "a",
           "<iq type=\"get\" id=\"v2\" to=\"bob@example.test/gone\"><query "
           "xmlns=\"jabber:iq:version\"/></iq>");
  CHECK(routed(&e, c, "a",
               "<iq type=\"error\" id=\"v2\" from=\"bob@example.test/gone\" "
               "to=\"alice@example.test/pc\"><query "
               "xmlns=\"jabber:iq:version\"/><error code=\"503\" "
               "type=\"cancel\"><service-unavailable "
               "xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/></error></iq>"));
  /* The server's own: roster and ping. */
  cm_route(
      c, "a",
      "<iq type=\"get\" id=\"r\"><query xmlns=\"jabber:iq:roster\"/></iq>");
  CHECK(
      routed(&e, c, "a",
             "<iq type=\"result\" id=\"r\" to=\"alice@example.test/pc\"><query "
             "xmlns=\"jabber:iq:roster\"><item jid=\"bob@example.test\" "
             "name=\"Bob\" subscription=\"both\"/></query></iq>"));
  cm_route(c, "a",
           "<iq type=\"get\" id=\"p\" to=\"example.test\"><ping "
           "xmlns=\"urn:xmpp:ping\"/></iq>");
  CHECK(routed(&e, c, "a",
               "<iq type=\"result\" id=\"p\" from=\"example.test\" "
               "to=\"alice@example.test/pc\"/>"));
  env_stop(&e);
}

static int inbox_has_n(env *e, void *ud) {
  return inbox_for(e, ud)->n > 0;
}

/* A route around a client's largest stanza still fits (Openfire reads up
 * to 1 MiB). */
static void test_big_stanza(void) {
  size_t body = 300 * 1024, n;
  char *st = malloc(body + 128);
  inbox *b;
  env e;
  conn *c;

  env_start(&e, NULL);
  accounts(&e);
  c = cm_up(&e, "w1", "cm1/w1");
  cm_login(&e, c, "a", "alice", "a");
  login_local(&e, "bob@example.test/x", NULL);
  n = (size_t)sprintf(st, "<message to=\"bob@example.test/x\"><body>");
  memset(st + n, 'y', body);
  strcpy(st + n + body, "</body></message>");
  cm_route(c, "a", st);
  CHECK(run_until(&e, inbox_has_n, "bob@example.test/x", WAIT_MS));
  b = inbox_for(&e, "bob@example.test/x");
  CHECK(b->n == 1 && strlen(b->stanzas[0]) ==
                         strlen(st) + strlen(" from=\"alice@example.test/a\""));
  CHECK(!c->eof);
  free(st);
  env_stop(&e);
}

static void test_offline(void) {
  xcm_testkit_options o;
  xcm_testkit_stats st;
  env e;
  conn *c;
  char *u;
  int i;

  xcm_testkit_options_init(&o, sizeof o);
  o.offline_max = 3;
  env_start(&e, &o);
  accounts(&e);
  c = cm_up(&e, "w1", "cm1/w1");
  cm_login(&e, c, "a", "alice", "pc");
  for (i = 0; i < 3; i++)
    cm_route(c, "a",
             "<message to=\"bob@example.test\" "
             "type=\"chat\"><body>later</body></message>");
  /* Headlines are not kept; a full store bounces. */
  cm_route(c, "a", "<message to=\"bob@example.test\" type=\"headline\"/>");
  cm_route(c, "a", "<message to=\"bob@example.test\" id=\"full\"/>");
  u = take(&e, c, "id=\"full\"");
  CHECK(u != NULL && strstr(u, "<service-unavailable") != NULL);
  free(u);
  CHECK_INT(xcm_testkit_offline_count(e.kit, "bob"), 3);
  CHECK_INT(e.events[XCM_TESTKIT_OFFLINE_STORED], 3);
  cm_login(&e, c, "b", "bob", "phone");
  CHECK_INT(xcm_testkit_offline_count(e.kit, "bob"), 3);
  /* Delivered at the initial presence, with a delay, then gone. */
  cm_route(c, "b", "<presence/>");
  for (i = 0; i < 3; i++) {
    const char *stamp;

    u = take(&e, c, "streamid=\"b\"");
    REQUIRE(u != NULL);
    CHECK(same(u, "<route streamid=\"b\" from=\"example.test\" "
                  "to=\"cm1\"><message to=\"bob@example.test\" type=\"chat\" "
                  "from=\"alice@example.test/pc\"><body>later</body><delay "
                  "xmlns=\"urn:xmpp:delay\" from=\"example.test\" "
                  "stamp=\"T\"/></message></route>"));
    /* XEP-0082, UTC, milliseconds: 2026-11-23T19:27:12.616Z */
    stamp = strstr(u, "stamp=\"");
    CHECK(stamp != NULL && strlen(stamp) > 31 && stamp[11] == '-' &&
          stamp[17] == 'T' && stamp[26] == '.' && stamp[30] == 'Z');
    free(u);
  }
  CHECK_INT(xcm_testkit_offline_count(e.kit, "bob"), 0);
  xcm_testkit_get_stats(e.kit, &st, sizeof st);
  CHECK_INT(st.offline_stored, 3);
  CHECK_INT(st.offline_delivered, 3);
  env_stop(&e);
}

static void test_legacy_and_register(void) {
  xcm_testkit_options o;
  env e;
  conn *c;

  xcm_testkit_options_init(&o, sizeof o);
  o.client_policy.legacy_auth = 1;
  env_start(&e, &o);
  accounts(&e);
  c = cm_up(&e, "w1", "cm1/w1");
  CHECK(strstr(xcm_testkit_last_configuration(e.kit, NULL),
               "<auth xmlns=\"http://jabber.org/features/iq-auth\"/><register "
               "xmlns=\"http://jabber.org/features/iq-register\"/>") != NULL);
  cm_create(&e, c, "l1");
  cm_route(c, "l1",
           "<iq type=\"get\" id=\"a1\"><query "
           "xmlns=\"jabber:iq:auth\"><username>alice</username></query></iq>");
  CHECK(routed(&e, c, "l1",
               "<iq type=\"result\" id=\"a1\" to=\"example.test/l1\"><query "
               "xmlns=\"jabber:iq:auth\"><username>alice</username><password/>"
               "<resource/></query></iq>"));
  cm_route(c, "l1",
           "<iq type=\"set\" id=\"a2\"><query "
           "xmlns=\"jabber:iq:auth\"><username>alice</username><password>bad</"
           "password><resource>old</resource></query></iq>");
  CHECK(routed(&e, c, "l1",
               "<iq type=\"error\" id=\"a2\" to=\"example.test/l1\"><query "
               "xmlns=\"jabber:iq:auth\"><username>alice</username><password>"
               "bad</password><resource>old</resource></query><error "
               "code=\"401\" type=\"auth\"><not-authorized "
               "xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/></error></iq>"));
  cm_route(
      c, "l1",
      "<iq type=\"set\" id=\"a3\"><query "
      "xmlns=\"jabber:iq:auth\"><username>alice</username><password>alice</"
      "password><resource>old</resource></query></iq>");
  CHECK(
      routed(&e, c, "l1",
             "<iq type=\"result\" id=\"a3\" to=\"alice@example.test/old\"/>"));
  CHECK_INT(xcm_testkit_jid_state(e.kit, "alice@example.test/old"), 1);
  /* In-band registration, then a login with the new account. */
  cm_create(&e, c, "r1");
  cm_route(
      c, "r1",
      "<iq type=\"get\" id=\"g\"><query xmlns=\"jabber:iq:register\"/></iq>");
  CHECK(routed(&e, c, "r1",
               "<iq type=\"result\" id=\"g\" to=\"example.test/r1\"><query "
               "xmlns=\"jabber:iq:register\"><username/><password/></query>"
               "</iq>"));
  cm_route(c, "r1",
           "<iq type=\"set\" id=\"s\"><query "
           "xmlns=\"jabber:iq:register\"><username>erin</"
           "username><password>secret</password></query></iq>");
  CHECK(routed(&e, c, "r1",
               "<iq type=\"result\" id=\"s\" to=\"example.test/r1\"/>"));
  cm_route(c, "r1",
           "<iq type=\"set\" id=\"s2\"><query "
           "xmlns=\"jabber:iq:register\"><username>erin</"
           "username><password>other</password></query></iq>");
  CHECK(take_is(&e, c, "streamid=\"r1\"",
                "<route streamid=\"r1\" from=\"example.test\" to=\"cm1\"><iq "
                "type=\"error\" id=\"s2\" to=\"example.test/r1\"><query "
                "xmlns=\"jabber:iq:register\"><username>erin</username>"
                "<password>other</password></query><error code=\"409\" "
                "type=\"cancel\"><conflict "
                "xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/></error></iq>"
                "</route>"));
  cm_plain(c, "r1", "erin", "secret");
  CHECK(routed_raw(&e, c, "r1", SUCCESS));
  /* Off: refused. */
  o.client_policy.registration = 0;
  o.client_policy.legacy_auth = 0;
  REQUIRE(xcm_testkit_set_policy(e.kit, &o.client_policy) == 0);
  free(take(&e, c, "<configuration"));
  cm_create(&e, c, "r2");
  cm_route(
      c, "r2",
      "<iq type=\"get\" id=\"g\"><query xmlns=\"jabber:iq:register\"/></iq>");
  CHECK(routed(&e, c, "r2",
               "<iq type=\"error\" id=\"g\" to=\"example.test/r2\"><query "
               "xmlns=\"jabber:iq:register\"/><error code=\"405\" "
               "type=\"cancel\"><not-allowed "
               "xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/></error></iq>"));
  cm_route(c, "r2",
           "<iq type=\"get\" id=\"a\"><query xmlns=\"jabber:iq:auth\"/></iq>");
  CHECK(routed(&e, c, "r2",
               "<iq type=\"error\" id=\"a\" to=\"example.test/r2\"><query "
               "xmlns=\"jabber:iq:auth\"/><error code=\"503\" "
               "type=\"cancel\"><service-unavailable "
               "xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/></error></iq>"));
  /* Mechanisms outside the policy are refused too. */
  cm_route(c, "r2", "<auth xmlns=\"" SASL_NS "\" mechanism=\"X\"/>");
  CHECK(routed_raw(&e, c, "r2",
                   "<failure xmlns=\"" SASL_NS
                   "\"><invalid-mechanism/></failure>"));
  env_stop(&e);
}

/* ---- the CM link: heartbeats, conflicts, configuration --------------- */

static int spaces(env *e, void *ud) {
  conn *c = ud;

  (void)e;
  return c->spaces >= 3;
}

static void test_heartbeat(void) {
  xcm_testkit_options o;
  xcm_testkit_stats st;
  unsigned before;
  env e;
  conn *c;

  xcm_testkit_options_init(&o, sizeof o);
  o.heartbeat_ms = 20;
  env_start(&e, &o);
  c = cm_up(&e, "w1", "cm1/w1");
  CHECK(run_until(&e, spaces, c, WAIT_MS));
  CHECK_INT(c->nunits, 0); /* a space, nothing else */
  xcm_testkit_get_stats(e.kit, &st, sizeof st);
  CHECK(st.heartbeats >= 3);
  /* A stalled server sends nothing. */
  xcm_testkit_stall(e.kit, 1);
  settle(&e, 30);
  before = c->spaces;
  settle(&e, 100);
  CHECK_INT(c->spaces, before);
  xcm_testkit_stall(e.kit, 0);
  c->spaces = 0;
  CHECK(run_until(&e, spaces, c, WAIT_MS));
  env_stop(&e);
}

static void test_conflict_refused(void) {
  xcm_testkit_options o;
  env e;
  conn *c1, *c2;

  xcm_testkit_options_init(&o, sizeof o);
  env_start(&e, &o);
  c1 = cm_up(&e, "w1", "cm1/w1");
  c2 = conn_open(&e, "w1b");
  sendf(c2, HDR, "cm1/w1");
  CHECK(take_is(
      &e, c2, "<stream:stream",
      "<stream:stream xmlns:stream=\"http://etherx.jabber.org/streams\" "
      "xmlns=\"jabber:connectionmanager\" from=\"cm1/w1\" "
      "version=\"1.0\">"));
  CHECK(take_is(&e, c2, "<stream:error",
                "<stream:error "
                "xmlns:stream=\"http://etherx.jabber.org/streams\"><conflict "
                "xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/></"
                "stream:error>"));
  CHECK(run_until(&e, saw_eof, c2, WAIT_MS));
  CHECK(!c1->eof);
  CHECK_INT(xcm_testkit_connections(e.kit), 1);
  env_stop(&e);
}

static void test_policy_push(void) {
  xcm_testkit_options o;
  xcm_policy p;
  env e;
  conn *c1, *c2;
  const char *cfg;
  size_t len = 0;

  xcm_testkit_options_init(&o, sizeof o);
  env_start(&e, &o);
  c1 = cm_up(&e, "w1", "cm1/w1");
  c2 = cm_up(&e, "w2", "cm1/w2");
  memset(&p, 0, sizeof(p));
  p.tls = XCM_TLS_REQUIRED;
  p.nmechanisms = 1;
  strcpy(p.mechanisms[0], "SCRAM-SHA-1");
  REQUIRE(xcm_testkit_set_policy(e.kit, &p) == 0);
  CHECK(take_is(
      &e, c1, "<configuration",
      "<iq type=\"set\" id=\"1-1\"><configuration "
      "xmlns=\"http://jabber.org/protocol/connectionmanager\"><starttls "
      "xmlns=\"urn:ietf:params:xml:ns:xmpp-tls\"><required/></"
      "starttls><mechanisms "
      "xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"><mechanism>SCRAM-"
      "SHA-1</mechanism></mechanisms></configuration></iq>"));
  free(take(&e, c2, "<configuration"));
  cfg = xcm_testkit_last_configuration(e.kit, &len);
  CHECK_INT(strlen(cfg), len);
  CHECK(cfg != NULL &&
        same(cfg, "<iq type=\"set\" id=\"1-1\"><configuration "
                  "xmlns=\"http://jabber.org/protocol/"
                  "connectionmanager\"><starttls "
                  "xmlns=\"urn:ietf:params:xml:ns:xmpp-tls\"><required/"
                  "></starttls><mechanisms "
                  "xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"><"
                  "mechanism>SCRAM-SHA-1</mechanism></mechanisms></"
                  "configuration></iq>"));
  env_stop(&e);
}

/* ---- STARTTLS on the CM link ------------------------------------------ */

#ifdef XCM_CERTS_DIR
static void tls_read(void *ud, const char *data, size_t len) {
  conn *c = ud;

  c->in = realloc(c->in, c->in_len + len);
  memcpy(c->in + c->in_len, data, len);
  c->in_len += len;
  split_units(c);
}

static void tls_end(void *ud, int err) {
  conn *c = ud;

  (void)err;
  c->eof = 1;
}

static void tls_closed(void *ud) {
  conn *c = ud;

  c->closed = 1;
  c->stream = NULL;
}

static void tls_connected(void *ud) {
  conn *c = ud;

  c->connected = 1;
}

static const xcm_stream_cb tls_cb = {tls_read, tls_end, NULL, NULL, tls_closed};

/* A CM connection over libxcm's stream, which can start TLS. */
static conn *stream_open(env *e, const char *label) {
  struct sockaddr_in sa;
  conn *c = calloc(1, sizeof(*c));

  if (!e->ctx_on) {
    REQUIRE(xcm__ctx_init(&e->ctx, &e->loop, NULL) == 0);
    e->ctx_on = 1;
  }
  c->e = e;
  snprintf(c->label, sizeof(c->label), "%s", label);
  uv_ip4_addr("127.0.0.1", xcm_testkit_port(e->kit), &sa);
  REQUIRE(xcm__stream_connect(&c->stream, &e->ctx, (const struct sockaddr *)&sa,
                              &tls_cb, tls_connected, c, NULL) == 0);
  e->conns[e->nconns++] = c;
  run_until(e, conn_ready, c, WAIT_MS);
  REQUIRE(c->connected);
  return c;
}

static void tls_options(xcm_testkit_options *o, xcm_testkit_link_tls mode) {
  xcm_testkit_options_init(o, sizeof *o);
  o->link_tls = mode;
  o->cert_file = XCM_CERTS_DIR "/server.pem";
  o->key_file = XCM_CERTS_DIR "/server-key.pem";
}

static void test_link_tls(void) {
  xcm_testkit_options o;
  xcm_tls_options to;
  xcm_tls_config *cfg = NULL;
  char hex[41], err[256], *u;
  const char *id;
  env e;
  conn *c;

  tls_options(&o, XCM_TESTKIT_LINK_TLS_REQUIRE);
  env_start(&e, &o);
  c = stream_open(&e, "w1");
  sendf(c, HDR, "cm1/w1");
  free(take(&e, c, "<?xml"));
  free(take(&e, c, "<stream:stream"));
  CHECK(take_is(&e, c, "<stream:features",
                "<stream:features><starttls "
                "xmlns=\"urn:ietf:params:xml:ns:xmpp-tls\"><required/></"
                "starttls></stream:features>"));
  id = strdup(c->stream_id);
  conn_sends(c, "<starttls xmlns=\"urn:ietf:params:xml:ns:xmpp-tls\"/>");
  CHECK(take_is(&e, c, "<proceed",
                "<proceed xmlns=\"urn:ietf:params:xml:ns:xmpp-tls\"/>"));
  memset(&to, 0, sizeof(to));
  to.ca_file = XCM_CERTS_DIR "/ca.pem";
  to.verify = 1;
  REQUIRE(xcm__tls_config_new(&cfg, &e.ctx, 0, &to, err, sizeof(err)) == 0);
  REQUIRE(xcm__stream_start_tls(c->stream, cfg, 0, "example.test", NULL, 0) ==
          0);
  xcm__tls_config_unref(cfg);
  /* The restarted stream: same id, no STARTTLS left to offer. */
  sendf(c, HDR, "cm1/w1");
  free(take(&e, c, "<?xml"));
  u = take(&e, c, "<stream:stream");
  CHECK(u != NULL && strstr(u, id) != NULL);
  free(u);
  CHECK(take_is(&e, c, "<stream:features",
                "<stream:features></stream:features>"));
  REQUIRE(xcm__cm_handshake_digest(hex, c->stream_id, strlen(c->stream_id),
                                   "cmsecret", 8) == 0);
  sendf(c, "<handshake>%s</handshake>", hex);
  CHECK(take_is(&e, c, "<handshake>", "<handshake></handshake>"));
  free(take(&e, c, "<configuration"));
  CHECK_INT(xcm_testkit_connections(e.kit), 1);
  free((char *)id);
  /* Without TLS, the handshake is refused when it is required. */
  c = conn_open(&e, "w2");
  sendf(c, HDR, "cm1/w2");
  free(take(&e, c, "<stream:features"));
  REQUIRE(xcm__cm_handshake_digest(hex, c->stream_id, strlen(c->stream_id),
                                   "cmsecret", 8) == 0);
  sendf(c, "<handshake>%s</handshake>", hex);
  CHECK(take_is(&e, c, "<stream:error",
                "<stream:error "
                "xmlns:stream=\"http://etherx.jabber.org/streams\"><policy-"
                "violation xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/></"
                "stream:error>"));
  CHECK(run_until(&e, saw_eof, c, WAIT_MS));
  env_stop(&e);
}

/* Offered as in the captures but with no certificate: <failure/>. */
static void test_link_tls_without_cert(void) {
  xcm_testkit_options o;
  env e;
  conn *c;

  xcm_testkit_options_init(&o, sizeof o);
  o.link_tls = XCM_TESTKIT_LINK_TLS_OFFER;
  env_start(&e, &o);
  c = conn_open(&e, "w1");
  sendf(c, HDR, "cm1/w1");
  CHECK(take_is(&e, c, "<stream:features",
                "<stream:features><starttls "
                "xmlns=\"urn:ietf:params:xml:ns:xmpp-tls\"></starttls></"
                "stream:features>"));
  conn_sends(c, "<starttls xmlns=\"urn:ietf:params:xml:ns:xmpp-tls\"/>");
  CHECK(take_is(&e, c, "<failure",
                "<failure xmlns=\"urn:ietf:params:xml:ns:xmpp-tls\"/>"));
  CHECK(take_is(&e, c, "</stream", "</stream:stream>"));
  CHECK(run_until(&e, saw_eof, c, WAIT_MS));
  env_stop(&e);
}

/* A certificate that does not load is an error naming the file. */
static void test_bad_cert(void) {
  xcm_testkit_options o;
  xcm_testkit *kit = NULL;
  uv_loop_t loop;
  char err[256] = "";

  REQUIRE(uv_loop_init(&loop) == 0);
  tls_options(&o, XCM_TESTKIT_LINK_TLS_AUTO);
  o.cert_file = XCM_CERTS_DIR "/expired.pem";
  o.key_file = XCM_CERTS_DIR "/expired-key.pem";
  CHECK(xcm_testkit_new(&kit, &loop, &o, err, sizeof(err)) != 0);
  CHECK(strstr(err, "expired.pem") != NULL);
  CHECK(kit == NULL);
  uv_run(&loop, UV_RUN_DEFAULT); /* the half-made testkit frees itself */
  CHECK_INT(uv_loop_close(&loop), 0);
}
#endif

/* ---- fault controls --------------------------------------------------- */

static int sessions_are(env *e, void *ud) {
  return xcm_testkit_sessions(e->kit) == *(unsigned *)ud;
}

static void test_drop(void) {
  env e;
  conn *w1, *w2;
  unsigned zero = 0;

  env_start(&e, NULL);
  accounts(&e);
  w1 = cm_up(&e, "worker-1", "cm1/worker-1");
  w2 = cm_up(&e, "worker-2", "cm1/worker-2");
  CHECK_INT(xcm_testkit_connections(e.kit), 2);
  CHECK_STR(xcm_testkit_connection_jid(e.kit, 0), "cm1/worker-1");
  CHECK_STR(xcm_testkit_connection_jid(e.kit, 1), "cm1/worker-2");
  CHECK(xcm_testkit_connection_jid(e.kit, 2) == NULL);
  /* As in captures a and b: Openfire's list of the CM's connections has
   * worker-2 first (its hash bucket comes first), and "dupA" hashes to
   * index 0, "dupB" to 1. */
  cm_login(&e, w1, "dupA", "alice", "a");
  cm_create(&e, w1, "dupB");
  login_local(&e, "bob@example.test/x", "<presence/>");
  local_send(&e, "bob@example.test/x",
             "<message to=\"alice@example.test/a\"/>");
  CHECK(routed(&e, w2, "dupA",
               "<message to=\"alice@example.test/a\" "
               "from=\"bob@example.test/x\"/>"));
  /* worker-2 goes: the session lives on and its traffic moves. */
  REQUIRE(xcm_testkit_drop_connection(e.kit, 1) == 0);
  CHECK(run_until(&e, saw_eof, w2, WAIT_MS));
  CHECK_INT(xcm_testkit_connections(e.kit), 1);
  CHECK_INT(e.events[XCM_TESTKIT_CONN_DOWN], 1);
  local_send(&e, "bob@example.test/x",
             "<message to=\"alice@example.test/a\"/>");
  CHECK(routed(&e, w1, "dupA",
               "<message to=\"alice@example.test/a\" "
               "from=\"bob@example.test/x\"/>"));
  /* The last one goes: so do the sessions. */
  CHECK_INT(xcm_testkit_drop_connection_jid(e.kit, "cm1/none"), XCM_ENOTFOUND);
  REQUIRE(xcm_testkit_drop_connection_jid(e.kit, "cm1/worker-1") == 0);
  CHECK(run_until(&e, saw_eof, w1, WAIT_MS));
  /* alice never sent presence: Openfire still says she left. */
  CHECK(wait_local(&e, "bob@example.test/x",
                   "<presence type=\"unavailable\" "
                   "from=\"alice@example.test/a\" to=\"bob@example.test\"/>"));
  CHECK_INT(xcm_testkit_sessions(e.kit), 1);
  CHECK_INT(xcm_testkit_jid_state(e.kit, "alice@example.test/a"), 0);
  CHECK_INT(e.events[XCM_TESTKIT_SESSION_CLOSED], 2);
  /* drop_all */
  w1 = cm_up(&e, "w3", "cm1/w3");
  w2 = cm_up(&e, "w4", "cm2/w4");
  cm_create(&e, w1, "z");
  xcm_testkit_drop_all(e.kit);
  CHECK(run_until(&e, saw_eof, w1, WAIT_MS));
  CHECK(run_until(&e, saw_eof, w2, WAIT_MS));
  CHECK_INT(xcm_testkit_connections(e.kit), 0);
  REQUIRE(xcm_testkit_local_logout(e.kit, "bob@example.test/x") == 0);
  CHECK(run_until(&e, sessions_are, &zero, WAIT_MS));
  env_stop(&e);
}

static void test_refuse_and_close(void) {
  xcm_testkit_stats st;
  env e;
  conn *c;

  env_start(&e, NULL);
  accounts(&e);
  c = cm_up(&e, "w1", "cm1/w1");
  xcm_testkit_refuse_creates(e.kit, 1);
  sendf(
      c,
      "<iq type=\"set\" id=\"cr\" to=\"example.test\" from=\"cm1/w1\"><session "
      "xmlns=\"http://jabber.org/protocol/connectionmanager\" "
      "id=\"x\"><create><host name=\"h\" address=\"127.0.0.1\"/></create></"
      "session></iq>");
  CHECK(
      take_is(&e, c, "id=\"cr\"",
              "<iq type=\"error\" id=\"cr\" from=\"example.test\" "
              "to=\"cm1/w1\"><session "
              "xmlns=\"http://jabber.org/protocol/connectionmanager\" "
              "id=\"x\"><create><host name=\"h\" "
              "address=\"127.0.0.1\"/></create></session><error code=\"405\" "
              "type=\"cancel\"><not-allowed "
              "xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/></error></iq>"));
  xcm_testkit_refuse_creates(e.kit, 0);
  cm_login(&e, c, "k", "alice", "k");
  cm_route(c, "k", "<presence/>");
  settle(&e, 20);
  CHECK_INT(xcm_testkit_close_session(e.kit, "nope", XCM_COND_CONFLICT),
            XCM_ENOTFOUND);
  REQUIRE(xcm_testkit_close_session(e.kit, "k", XCM_COND_POLICY_VIOLATION) ==
          0);
  CHECK(routed_raw(&e, c, "k",
                   "<stream:error "
                   "xmlns:stream=\"http://etherx.jabber.org/streams\"><policy-"
                   "violation xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/></"
                   "stream:error>"));
  CHECK(take_is(&e, c, "<close/>",
                "<iq type=\"set\" id=\"1-1\" from=\"example.test\" "
                "to=\"cm1\"><session "
                "xmlns=\"http://jabber.org/protocol/connectionmanager\" "
                "id=\"k\"><close/></session></iq>"));
  CHECK(routed(&e, c, "k",
               "<presence type=\"unavailable\" from=\"alice@example.test/k\" "
               "to=\"alice@example.test/k\"/>"));
  /* The CM's answer to the close is ignored; the session is gone. */
  sendf(c,
        "<iq type=\"result\" id=\"x\" to=\"example.test\" from=\"cm1/w1\"/>");
  cm_route(c, "k", "<presence/>");
  CHECK(take_is(
      &e, c, "<item-not-found",
      "<route streamid=\"k\" from=\"example.test\" to=\"cm1/w1\" "
      "type=\"error\"><error code=\"404\" "
      "type=\"cancel\"><item-not-found "
      "xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/></error></route>"));
  /* By full JID too. */
  cm_login(&e, c, "k2", "alice", "k2");
  REQUIRE(xcm_testkit_close_jid(e.kit, "alice@example.test/k2",
                                XCM_COND_CONFLICT) == 0);
  CHECK(
      routed_raw(&e, c, "k2",
                 "<stream:error "
                 "xmlns:stream=\"http://etherx.jabber.org/streams\"><conflict "
                 "xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/></"
                 "stream:error>"));
  xcm_testkit_get_stats(e.kit, &st, sizeof st);
  CHECK_INT(st.closes_from_server, 2);
  CHECK_INT(st.creates_refused, 1);
  env_stop(&e);
}

static void test_shutdown(void) {
  env e;
  conn *c;

  env_start(&e, NULL);
  accounts(&e);
  c = cm_up(&e, "w1", "cm1/w1");
  cm_login(&e, c, "s", "alice", "s");
  xcm_testkit_system_shutdown(e.kit);
  CHECK(take_is(&e, c, "<stream:error",
                "<stream:error "
                "xmlns:stream=\"http://etherx.jabber.org/streams\"><system-"
                "shutdown xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/></"
                "stream:error>"));
  CHECK(take_is(&e, c, "</stream", "</stream:stream>"));
  CHECK(run_until(&e, saw_eof, c, WAIT_MS));
  CHECK_INT(xcm_testkit_sessions(e.kit), 0);
  /* A restarted server: the same port takes a new connection. */
  c = cm_up(&e, "w2", "cm1/w2");
  cm_login(&e, c, "s", "alice", "s");
  env_stop(&e);
}

static void test_stall(void) {
  env e;
  conn *c;

  env_start(&e, NULL);
  accounts(&e);
  c = cm_up(&e, "w1", "cm1/w1");
  xcm_testkit_stall(e.kit, 1);
  sendf(
      c,
      "<iq type=\"set\" id=\"cr\" to=\"example.test\" from=\"cm1/w1\"><session "
      "xmlns=\"http://jabber.org/protocol/connectionmanager\" "
      "id=\"x\"><create/></session></iq>");
  CHECK(nothing_with(&e, c, "id=\"cr\"", 100));
  CHECK_INT(xcm_testkit_sessions(e.kit), 0);
  xcm_testkit_stall(e.kit, 0);
  free(take(&e, c, "id=\"cr\""));
  CHECK_INT(xcm_testkit_sessions(e.kit), 1);
  env_stop(&e);
}

/* A CM that reads nothing: the testkit holds at most max_out for it,
 * then cuts it. */
static void test_slow_cm(void) {
  xcm_testkit_options o;
  xcm_testkit_stats st;
  char msg[1200];
  env e;
  conn *c;
  int i;

  xcm_testkit_options_init(&o, sizeof o);
  o.max_out = 16384;
  env_start(&e, &o);
  accounts(&e);
  c = cm_up(&e, "w1", "cm1/w1");
  cm_login(&e, c, "a", "alice", "a");
  login_local(&e, "bob@example.test/x", NULL);
  uv_read_stop((uv_stream_t *)&c->tcp);
  memset(msg, 0, sizeof(msg));
  strcpy(msg, "<message to=\"alice@example.test/a\"><body>");
  memset(msg + strlen(msg), 'x', 1000);
  strcat(msg, "</body></message>");
  for (i = 0; i < 5000 && xcm_testkit_connections(e.kit) > 0; i++) {
    xcm_testkit_local_send(e.kit, "bob@example.test/x", msg, strlen(msg));
    if (i % 50 == 0)
      settle(&e, 1);
  }
  xcm_testkit_get_stats(e.kit, &st, sizeof st);
  CHECK_INT(xcm_testkit_connections(e.kit), 0);
  CHECK_INT(st.dropped, 1);
  CHECK(i < 5000);
  env_stop(&e);
}

/* ---- events and two testkits ------------------------------------------ */

static void test_events(void) {
  env e;
  conn *c;

  env_start(&e, NULL);
  accounts(&e);
  c = cm_up(&e, "w1", "cm1/w1");
  CHECK_INT(e.events[XCM_TESTKIT_CONN_UP], 1);
  cm_login(&e, c, "a", "alice", "a");
  CHECK_INT(e.events[XCM_TESTKIT_SESSION_CREATED], 1);
  CHECK_INT(e.events[XCM_TESTKIT_SESSION_BOUND], 1);
  CHECK_STR(e.last_event_jid, "alice@example.test/a");
  cm_route(c, "a", "<presence/>");
  settle(&e, 20);
  CHECK_INT(e.events[XCM_TESTKIT_SESSION_AVAILABLE], 1);
  conn_close(c);
  settle(&e, 20);
  CHECK_INT(e.events[XCM_TESTKIT_SESSION_CLOSED], 1);
  CHECK_INT(e.events[XCM_TESTKIT_CONN_DOWN], 1);
  env_stop(&e);
}

static int kit_gone(env *e, void *ud) {
  (void)ud;
  return e->kit_closed;
}

/* Closing from inside the testkit's own callback, in the middle of
 * routing a stanza, waits until the stack unwinds. */
static void test_close_from_callback(void) {
  env e;
  conn *c;

  env_start(&e, NULL);
  accounts(&e);
  c = cm_up(&e, "w1", "cm1/w1");
  login_local(&e, "bob@example.test/x", "<presence/>");
  cm_login(&e, c, "a", "alice", "a");
  e.close_on = XCM_TESTKIT_SESSION_AVAILABLE;
  cm_route(c, "a", "<presence/>");
  CHECK(run_until(&e, kit_gone, NULL, WAIT_MS));
  CHECK(run_until(&e, saw_eof, c, WAIT_MS));
  env_stop(&e);
}

/* A port that is taken: an error naming it, nothing left behind. */
static void test_port_taken(void) {
  xcm_testkit_options o;
  xcm_testkit *kit = NULL;
  env e;
  char err[256] = "";

  env_start(&e, NULL);
  xcm_testkit_options_init(&o, sizeof o);
  o.port = xcm_testkit_port(e.kit);
  CHECK(xcm_testkit_new(&kit, &e.loop, &o, err, sizeof(err)) != 0);
  CHECK(kit == NULL);
  CHECK(strstr(err, "cannot listen") != NULL);
  o.port = 0;
  o.client_policy.nmechanisms = 99;
  CHECK_INT(xcm_testkit_new(&kit, &e.loop, &o, err, sizeof(err)), XCM_EINVAL);
  env_stop(&e);
}

/* Every allocation of the testkit goes through the caller's allocator,
 * and all of it comes back. */
typedef struct counting {
  long long live, blocks, total;
} counting;

static void *count_realloc(void *ud, void *ptr, size_t size) {
  counting *c = ud;
  size_t *p = ptr != NULL ? (size_t *)ptr - 2 : NULL, old = p ? *p : 0;
  size_t *q;

  if (size == 0) {
    if (p != NULL) {
      c->live -= (long long)old;
      c->blocks--;
      free(p);
    }
    return NULL;
  }
  q = realloc(p, size + 2 * sizeof(size_t));
  if (q == NULL)
    return NULL;
  if (p == NULL) {
    c->blocks++;
    c->total++;
  }
  c->live += (long long)size - (long long)old;
  *q = size;
  return q + 2;
}

static void test_allocator(void) {
  counting heap = {0, 0, 0};
  xcm_allocator a = {sizeof a, count_realloc, &heap};
  xcm_testkit_options o;
  env e;
  conn *c;

  xcm_testkit_options_init(&o, sizeof o);
  o.alloc = &a;
  env_start(&e, &o);
  accounts(&e);
  c = cm_up(&e, "w1", "cm1/w1");
  cm_login(&e, c, "a", "alice", "a");
  cm_route(c, "a", "<presence/>");
  cm_route(c, "a",
           "<message to=\"carol@example.test\"><body>hi</body></message>");
  login_local(&e, "bob@example.test/x", "<presence/>");
  CHECK(wait_local(&e, "bob@example.test/x",
                   "<presence from=\"alice@example.test/a\" "
                   "to=\"bob@example.test\"/>"));
  CHECK(routed(&e, c, "a",
               "<presence from=\"bob@example.test/x\" "
               "to=\"alice@example.test/a\"/>"));
  cm_create(&e, c, "a2");
  CHECK(scram_login(&e, c, "a2", "bob", "bob"));
  CHECK(heap.live > 0);
  env_stop(&e);
  CHECK(heap.total > 50);
  CHECK_INT(heap.live, 0);
  CHECK_INT(heap.blocks, 0);
}

/* Each thread: its own loop and testkit, a CM, twenty logins. Nothing is
 * shared between the two. */
static void *side(void *arg) {
  int *result = arg;
  char sid[16], res[16];
  env e;
  conn *c;
  int i;

  env_start(&e, NULL);
  accounts(&e);
  c = cm_up(&e, "w1", "cm1/w1");
  for (i = 0; i < 20; i++) {
    snprintf(sid, sizeof(sid), "s%d", i);
    snprintf(res, sizeof(res), "r%d", i);
    cm_login(&e, c, sid, i % 2 ? "alice" : "bob", res);
  }
  *result = (int)xcm_testkit_sessions(e.kit);
  env_stop(&e);
  return NULL;
}

/* ---- the witness --------------------------------------------------------
 *
 * Whatever a CM sends is read a second time by the testkit's witness, a
 * strict namespace-aware expat of its own. Each case below sends one
 * thing the protocol does not allow from a handshaken CM with a created
 * session, and checks that exactly one violation is counted, that its
 * text names the connection, the byte offset (within the bad bytes) and
 * the fault, and that the testkit reacts as Openfire does (drops the
 * link on bad XML, reads on past what it tolerates). */

static int violations_reach(env *e, void *ud) {
  xcm_testkit_stats st;

  xcm_testkit_get_stats(e->kit, &st, sizeof st);
  return st.violations >= *(unsigned *)ud;
}

typedef struct witness_case {
  const char *bytes; /* sent after header, handshake and create of s1 */
  const char *want;  /* in the violation's text */
  int dropped;       /* the testkit ends the connection for it */
} witness_case;

/* One CM, "cm1/w1", up with session s1 created; a second CM "cm2/x1"
 * with session s2 when two_cms. */
static void run_witness_case(const witness_case *wc, int two_cms, int witness) {
  xcm_testkit_options o;
  unsigned one = 1;
  unsigned long long at = 0;
  const char *v, *b;
  char start[24];
  size_t before;
  unsigned failures = xcm_test_failures();
  env e;
  conn *c;

  xcm_testkit_options_init(&o, sizeof o);
  o.witness = witness;
  env_start(&e, &o);
  c = cm_up(&e, "w1", "cm1/w1");
  cm_create(&e, c, "s1");
  if (two_cms)
    cm_create(&e, cm_up(&e, "x1", "cm2/x1"), "s2");
  CHECK(xcm_testkit_first_violation(e.kit) == NULL);
  before = c->sent;
  conn_sends(c, wc->bytes);
  CHECK(run_until(&e, violations_reach, &one, WAIT_MS));
  settle(&e, 50);
  v = xcm_testkit_first_violation(e.kit);
  REQUIRE(v != NULL);
  if (!CHECK(strstr(v, wc->want) != NULL))
    xcm_test_note("want %s in: %s", wc->want, v);
  CHECK(strncmp(v, "CM connection #1 (cm1/w1): byte ", 32) == 0);
  b = strstr(v, "byte ");
  CHECK(b != NULL && sscanf(b, "byte %llu", &at) == 1);
  if (!CHECK(at >= before && at < c->sent))
    xcm_test_note("byte %llu is not within [%zu, %zu)", at, before, c->sent);
  /* The offending bytes, quoted from their start. */
  snprintf(start, sizeof(start), ": '%.12s", wc->bytes);
  CHECK(strstr(v, start) != NULL);
  if (wc->dropped)
    CHECK(run_until(&e, saw_eof, c, WAIT_MS));
  else
    CHECK(!c->eof);
  e.violations = 1;
  env_stop(&e);
  xcm_test_tried("upstream-witness", failures);
}

#define ROUTE_S1 "<route streamid=\"s1\" to=\"example.test\" from=\"cm1/w1\">"

/* The reader refuses these too (the scanner declines a repeat, expat
 * refuses it), and the link goes as Openfire's parser would end it. */
static void test_witness_dup_attr(void) {
  witness_case wc = {ROUTE_S1 "<message xmlns=\"jabber:client\" "
                              "to=\"a@example.test\" to=\"b@example.test\">"
                              "<body>x</body></message></route>",
                     "not well-formed: duplicate attribute", 1};

  run_witness_case(&wc, 0, 1);
}

/* What the outside review found the CM could send. */
static void test_witness_dup_xmlns(void) {
  witness_case wc = {ROUTE_S1 "<message xmlns=\"jabber:client\" "
                              "xmlns=\"jabber:client\" to=\"a@example.test\">"
                              "<body>x</body></message></route>",
                     "not well-formed: duplicate attribute", 1};

  run_witness_case(&wc, 0, 1);
}

/* Two prefixes bound to one namespace: a:k and b:k are one name. */
static void test_witness_dup_expanded(void) {
  witness_case wc = {ROUTE_S1 "<message xmlns=\"jabber:client\" "
                              "xmlns:a=\"urn:x\" xmlns:b=\"urn:x\" a:k=\"1\" "
                              "b:k=\"2\"/></route>",
                     "not well-formed: duplicate attribute", 1};

  run_witness_case(&wc, 0, 1);
}

/* Openfire reads the first and drops the rest silently (capture f): the
 * testkit does too, and only the witness sees it. */
static void test_witness_two_elements(void) {
  witness_case wc = {ROUTE_S1 "<presence xmlns=\"jabber:client\"/>"
                              "<presence xmlns=\"jabber:client\"/></route>",
                     "a route with 2 elements, not one", 0};

  run_witness_case(&wc, 0, 1);
}

static void test_witness_no_element(void) {
  witness_case wc = {ROUTE_S1 "</route>", "a route with 0 elements, not one",
                     1};

  run_witness_case(&wc, 0, 1);
}

static void test_witness_text_beside(void) {
  witness_case wc = {ROUTE_S1 "hello<presence xmlns=\"jabber:client\"/>"
                              "</route>",
                     "a route with text beside its element", 0};

  run_witness_case(&wc, 0, 1);
}

/* cm2's session, routed by cm1: Openfire answers item-not-found (the
 * sessions of each CM are apart), the witness names the owner. */
static void test_witness_other_cm_sid(void) {
  witness_case wc = {"<route streamid=\"s2\" to=\"example.test\" "
                     "from=\"cm1/w1\"><presence xmlns=\"jabber:client\"/>"
                     "</route>",
                     "streamid 's2', a session of another CM (cm2)", 0};

  run_witness_case(&wc, 1, 1);
}

static void test_witness_not_well_formed(void) {
  witness_case wc = {ROUTE_S1 "<message xmlns=\"jabber:client\"></route>",
                     "not well-formed: mismatched tag", 1};

  run_witness_case(&wc, 0, 1);
}

/* Well-formed, but no XMPP stream carries text between stanzas. */
static void test_witness_stray_text(void) {
  witness_case wc = {"stray" ROUTE_S1 "<presence xmlns=\"jabber:client\"/>"
                     "</route>",
                     "text between stanzas", 1};

  run_witness_case(&wc, 0, 1);
}

/* Without the witness the testkit's reader still counts what it refuses:
 * its own path (the scanner declines a repeated name or a prefix, expat
 * refuses) is strict about duplicate attributes, duplicate xmlns,
 * expanded duplicates and bad XML, and drops the link. */
static void test_witness_off_reader(void) {
  static const char *const bad[] = {
      ROUTE_S1 "<message xmlns=\"jabber:client\" to=\"a@example.test\" "
               "to=\"b@example.test\"/></route>",
      ROUTE_S1 "<message xmlns=\"jabber:client\" "
               "xmlns=\"jabber:client\"/></route>",
      ROUTE_S1 "<message xmlns=\"jabber:client\" xmlns:a=\"urn:x\" "
               "xmlns:b=\"urn:x\" a:k=\"1\" b:k=\"2\"/></route>",
      ROUTE_S1 "<message xmlns=\"jabber:client\"></route>"};
  size_t i;

  for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    witness_case wc = {bad[i], "the testkit's reader refused it", 1};

    run_witness_case(&wc, 0, 0);
  }
}

/* What Openfire tolerates, the testkit's reader tolerates too: without
 * the witness nobody would count these. */
static void test_witness_off_tolerates(void) {
  static const char *const quiet[] = {
      /* Parenthesised: each is one string made of several literals. */
      (ROUTE_S1 "<presence xmlns=\"jabber:client\"/>"
                "<presence xmlns=\"jabber:client\"/></route>"),
      (ROUTE_S1 "hello<presence xmlns=\"jabber:client\"/></route>"),
      ("<route streamid=\"s2\" to=\"example.test\" from=\"cm1/w1\">"
       "<presence xmlns=\"jabber:client\"/></route>")};
  xcm_testkit_options o;
  xcm_testkit_stats st;
  size_t i;
  env e;
  conn *c;

  xcm_testkit_options_init(&o, sizeof o);
  o.witness = 0;
  env_start(&e, &o);
  c = cm_up(&e, "w1", "cm1/w1");
  cm_create(&e, c, "s1");
  cm_create(&e, cm_up(&e, "x1", "cm2/x1"), "s2");
  for (i = 0; i < sizeof(quiet) / sizeof(quiet[0]); i++)
    conn_sends(c, quiet[i]);
  /* The last one gets item-not-found: everything was read. */
  free(take_any(&e, c, "item-not-found"));
  xcm_testkit_get_stats(e.kit, &st, sizeof st);
  CHECK_INT(st.violations, 0);
  CHECK(!c->eof);
  env_stop(&e);
}

/* A whole session, sent a byte at a time: nothing to report. */
static void test_witness_split(void) {
  static const char stanzas[] =
      ROUTE_S1 "<presence xmlns=\"jabber:client\"><status>a &amp; "
               "\xc3\xbc</status></presence></route>" ROUTE_S1
               "<message xmlns=\"jabber:client\" to=\"bob@example.test\"><body>"
               "<![CDATA[x]]></body></message></route>";
  env e;
  conn *c;
  size_t i;

  env_start(&e, NULL);
  c = cm_up(&e, "w1", "cm1/w1");
  cm_create(&e, c, "s1");
  for (i = 0; i < sizeof(stanzas) - 1; i++) {
    conn_send(c, stanzas + i, 1);
    if (i % 16 == 0)
      settle(&e, 1);
  }
  conn_sends(c, "<iq type=\"set\" id=\"cl\" to=\"example.test\" "
                "from=\"cm1/w1\"><session xmlns=\"" XCM_NS_CM_PROTOCOL
                "\" id=\"s1\"><close/></session></iq>");
  free(take_any(&e, c, "id=\"cl\""));
  env_stop(&e);
}

static void test_two_loops(void) {
  pthread_t a, b;
  int ra = 0, rb = 0;

  REQUIRE(pthread_create(&a, NULL, side, &ra) == 0);
  REQUIRE(pthread_create(&b, NULL, side, &rb) == 0);
  pthread_join(a, NULL);
  pthread_join(b, NULL);
  CHECK_INT(ra, 20);
  CHECK_INT(rb, 20);
}

static const xcm_test tests[] = {
    {"replay_main", test_replay_main},
    {"replay_a", test_replay_a},
    {"replay_b", test_replay_b},
    {"replay_c", test_replay_c},
    {"replay_d", test_replay_d},
    {"replay_d2", test_replay_d2},
    {"replay_e", test_replay_e},
    {"replay_e2", test_replay_e2},
    {"replay_f", test_replay_f},
    {"replay_g", test_replay_g},
    {"sasl_plain", test_sasl_plain},
    {"sasl_scram", test_sasl_scram},
    {"sasl_anonymous", test_sasl_anonymous},
    {"bind_conflict", test_bind_conflict},
    {"presence", test_presence},
    {"messages", test_messages},
    {"big_stanza", test_big_stanza},
    {"offline", test_offline},
    {"legacy_and_register", test_legacy_and_register},
    {"heartbeat", test_heartbeat},
    {"conflict_refused", test_conflict_refused},
    {"policy_push", test_policy_push},
    {"drop", test_drop},
    {"refuse_and_close", test_refuse_and_close},
    {"shutdown", test_shutdown},
    {"stall", test_stall},
    {"slow_cm", test_slow_cm},
    {"events", test_events},
    {"witness_dup_attr", test_witness_dup_attr},
    {"witness_dup_xmlns", test_witness_dup_xmlns},
    {"witness_dup_expanded", test_witness_dup_expanded},
    {"witness_two_elements", test_witness_two_elements},
    {"witness_no_element", test_witness_no_element},
    {"witness_text_beside", test_witness_text_beside},
    {"witness_other_cm_sid", test_witness_other_cm_sid},
    {"witness_not_well_formed", test_witness_not_well_formed},
    {"witness_stray_text", test_witness_stray_text},
    {"witness_off_reader", test_witness_off_reader},
    {"witness_off_tolerates", test_witness_off_tolerates},
    {"witness_split", test_witness_split},
    {"two_loops", test_two_loops},
    {"close_from_callback", test_close_from_callback},
    {"allocator", test_allocator},
    {"port_taken", test_port_taken},
#ifdef XCM_CERTS_DIR
    {"link_tls", test_link_tls},
    {"link_tls_without_cert", test_link_tls_without_cert},
    {"bad_cert", test_bad_cert},
#endif
};

int main(int argc, char **argv) {
  return xcm_test_main(argc, argv, XCM_TESTS(tests));
}
