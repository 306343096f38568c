/* One CM connection, from Openfire's side: the stream header and
 * features, STARTTLS, the handshake and the configuration iq, the CM's
 * session iqs (create, close, failed), and routes. Every answer has the
 * shape, the attribute order and the connection that Openfire 4.1.6
 * gives it in the captures. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "proto/cmproto.h"
#include "proto/stream.h"
#include "testkit/testkit.h"
#include "util/alloc.h"
#include "xcm/error.h"
#include "xml/writer.h"

#define NS_CM_ERRORS XCM_NS_CM_PROTOCOL "#errors"

static const char xml_decl[] = "<?xml version='1.0' encoding='UTF-8'?>";

/* ---- which connection ---------------------------------------------- */

/* Java's String.hashCode over the UTF-16 code units of s. Openfire picks
 * a session's connection with it (ConnectionMultiplexerManager), and
 * orders connections by the hash map that holds them. */
int32_t xcm__tk_java_hash(const char *s, size_t len) {
  const unsigned char *p = (const unsigned char *)s, *end = p + len;
  uint32_t h = 0;

  while (p < end) {
    uint32_t cp = *p++;
    int more = cp >= 0xf0 ? 3 : cp >= 0xe0 ? 2 : cp >= 0xc0 ? 1 : 0;

    if (more > 0)
      cp &= 0x3fu >> more;
    while (more-- > 0 && p < end)
      cp = (cp << 6) | (*p++ & 0x3fu);
    if (cp >= 0x10000) {
      cp -= 0x10000;
      h = h * 31 + (0xd800 + (cp >> 10));
      h = h * 31 + (0xdc00 + (cp & 0x3ff));
    } else {
      h = h * 31 + cp;
    }
  }
  return (int32_t)h;
}

/* The bucket of c's address in the ConcurrentHashMap (keyed by "CM/RES")
 * whose iteration order gives Openfire's list of a CM's connections: the
 * captures' worker-2 comes before worker-1 because of it. */
static unsigned bucket(const xcm_testkit *kit, const xcm_tk_conn *c) {
  uint32_t h = (uint32_t)c->addr_hash;

  h = (h ^ (h >> 16)) & 0x7fffffffu;
  return h & ((1u << kit->table_bits) - 1);
}

/* Whether a comes before b in that order: by bucket, then by insertion
 * (a bucket's chain is appended to). Resizes are taken to keep insertion
 * order within a bucket, which Java's transfer does not quite. */
static int before(const xcm_testkit *kit, const xcm_tk_conn *a,
                  const xcm_tk_conn *b) {
  unsigned ba = bucket(kit, a), bb = bucket(kit, b);

  return ba != bb ? ba < bb : a->reg_seq < b->reg_seq;
}

/* The i-th registered connection of g in Java's order. */
static xcm_tk_conn *nth(xcm_tk_group *g, unsigned i) {
  xcm_testkit *kit = g->head->kit;
  xcm_tk_conn *c, *best, *prev = NULL;
  unsigned k;

  for (k = 0;; k++) {
    best = NULL;
    for (c = g->head; c != NULL; c = c->gnext)
      if ((prev == NULL || before(kit, prev, c)) &&
          (best == NULL || before(kit, c, best)))
        best = c;
    if (best == NULL || k == i)
      return best;
    prev = best;
  }
}

xcm_tk_conn *xcm__tk_group_pick(xcm_tk_group *g, const char *sid) {
  int32_t h;
  uint32_t idx;

  if (g == NULL || g->nconns == 0)
    return NULL;
  if (g->nconns == 1)
    return g->head;
  h = xcm__tk_java_hash(sid, strlen(sid));
  /* Math.abs(Integer.MIN_VALUE) stays negative and Java would fail on
   * the index; 0 is as good a connection as any. */
  idx = h == INT32_MIN ? 0 : (uint32_t)(h < 0 ? -h : h) % g->nconns;
  return nth(g, idx);
}

xcm_tk_conn *xcm__tk_group_any(xcm_tk_group *g) {
  if (g == NULL || g->nconns == 0)
    return NULL;
  return nth(g, (unsigned)(xcm__tk_rand(g->head->kit) % g->nconns));
}

/* Where Openfire answers c's own iqs and its routing errors. */
static xcm_tk_conn *answer_conn(xcm_tk_conn *c) {
  xcm_tk_conn *any = NULL;

  if (c->kit->opt.iq_any_connection)
    any = xcm__tk_group_any(c->group);
  return any != NULL ? any : c;
}

static xcm_tk_group *group_get(xcm_testkit *kit, const char *name, size_t len) {
  xcm_map_entry *e = xcm__map_get(&kit->groups, name, len);
  xcm_tk_group *g;

  if (e != NULL)
    return (xcm_tk_group *)e;
  g = xcm__calloc(kit->ctx.alloc, sizeof(*g));
  if (g == NULL)
    return NULL;
  g->name = xcm__strndup(kit->ctx.alloc, name, len);
  g->entry.key = g->name;
  xcm__map_init(&g->sessions, kit->ctx.alloc);
  if (g->name == NULL || xcm__map_put(&kit->groups, &g->entry) != 0) {
    xcm__free(kit->ctx.alloc, g->name);
    xcm__free(kit->ctx.alloc, g);
    return NULL;
  }
  return g;
}

void xcm__tk_group_unref(xcm_testkit *kit, xcm_tk_group *g) {
  if (g->refs > 0)
    g->refs--;
  xcm__tk_group_gc(kit, g);
}

void xcm__tk_group_gc(xcm_testkit *kit, xcm_tk_group *g) {
  if (g->refs == 0 && g->nconns == 0 && g->sessions.count == 0) {
    xcm__map_remove(&kit->groups, &g->entry);
    xcm__map_free(&g->sessions);
    xcm__free(kit->ctx.alloc, g->name);
    xcm__free(kit->ctx.alloc, g);
  }
}

static void conn_register(xcm_tk_conn *c) {
  xcm_testkit *kit = c->kit;
  xcm_tk_group *g = c->group;

  c->gprev = g->tail;
  c->gnext = NULL;
  if (g->tail != NULL)
    g->tail->gnext = c;
  else
    g->head = c;
  g->tail = c;
  g->nconns++;
  c->registered = 1;
  c->reg_seq = ++kit->conn_seq;
  /* Java's map doubles once it is three quarters full, and never
   * shrinks. */
  kit->registered++;
  while (kit->registered >= (3u << kit->table_bits) / 4)
    kit->table_bits++;
}

/* Openfire 4.1.6 with a second connection for an address: the newcomer
 * replaces the old entry of its map, in place and without changing its
 * size; the old connection stays open and is sent nothing any more. */
static void conn_replace(xcm_tk_conn *old, xcm_tk_conn *c) {
  xcm_tk_group *g = old->group;

  c->gprev = old->gprev;
  c->gnext = old->gnext;
  if (c->gprev != NULL)
    c->gprev->gnext = c;
  else
    g->head = c;
  if (c->gnext != NULL)
    c->gnext->gprev = c;
  else
    g->tail = c;
  c->reg_seq = old->reg_seq;
  c->registered = 1;
  old->gnext = old->gprev = NULL;
  old->registered = 0;
}

/* Ends every session of g: Openfire forgets a CM's clients when its last
 * connection goes (multiplexerUnavailable). */
static void end_group_sessions(xcm_testkit *kit, xcm_tk_group *g);

static void conn_unregister(xcm_tk_conn *c) {
  xcm_tk_group *g = c->group;

  if (!c->registered)
    return;
  if (c->gprev != NULL)
    c->gprev->gnext = c->gnext;
  else
    g->head = c->gnext;
  if (c->gnext != NULL)
    c->gnext->gprev = c->gprev;
  else
    g->tail = c->gprev;
  c->gnext = c->gprev = NULL;
  c->registered = 0;
  g->nconns--;
  c->kit->registered--;
  if (g->nconns == 0)
    end_group_sessions(c->kit, g);
}

static void collect(xcm_map_entry *e, void *ud) {
  xcm_buf *b = ud;
  xcm_tk_session *s = (xcm_tk_session *)e;

  if (xcm__buf_append(b, &s, sizeof(s)) == 0)
    xcm__tk_session_hold(s);
}

static void end_group_sessions(xcm_testkit *kit, xcm_tk_group *g) {
  xcm_buf snap;
  size_t i, n;

  xcm__buf_init(&snap, kit->ctx.alloc);
  xcm__map_each(&g->sessions, collect, &snap);
  n = snap.len / sizeof(xcm_tk_session *);
  for (i = 0; i < n; i++) {
    xcm_tk_session *s;

    memcpy(&s, snap.data + i * sizeof(s), sizeof(s));
    xcm__tk_session_end(s, 0);
    xcm__tk_session_release(s);
  }
  xcm__buf_free(&snap);
  /* A session that could not be held (no memory for the snapshot) still
   * has to go. */
  while (g->sessions.count > 0) {
    xcm_buf one;

    xcm__buf_init(&one, kit->ctx.alloc);
    xcm__map_each(&g->sessions, collect, &one);
    if (one.len == 0) {
      xcm__buf_free(&one);
      break;
    }
    for (i = 0; i < one.len / sizeof(xcm_tk_session *); i++) {
      xcm_tk_session *s;

      memcpy(&s, one.data + i * sizeof(s), sizeof(s));
      xcm__tk_session_unlink(s);
      xcm__tk_session_release(s);
    }
    xcm__buf_free(&one);
  }
}

/* ---- writing and dropping ------------------------------------------ */

int xcm__tk_conn_write(xcm_tk_conn *c, const char *data, size_t len) {
  int err;

  if (c->state == XCM_TK_DEAD || c->drop_pending)
    return XCM_ECLOSED;
  err = xcm__stream_write(c->stream, data, len);
  if (err != 0) {
    /* A CM that does not read what it is sent would make the testkit
     * hold an unbounded backlog; Openfire's write timeout closes such a
     * connection too. */
    xcm__log(&c->kit->ctx, XCM_LOG_WARN, "testkit: %s: write failed (%s)",
             c->addr != NULL ? c->addr : "?", xcm_strerror(err));
    xcm__tk_conn_drop(c, XCM_TK_ABORT);
  }
  return err;
}

static int write_buf(xcm_tk_conn *c, xcm_buf *b) {
  return xcm__tk_conn_write(c, b->data, b->len);
}

void xcm__tk_conn_drop(xcm_tk_conn *c, enum xcm_tk_drop how) {
  if (c->state == XCM_TK_DEAD || c->drop_pending)
    return;
  c->drop_pending = how;
}

void xcm__tk_conn_do_drop(xcm_tk_conn *c) {
  xcm_testkit *kit = c->kit;
  int was_up = c->state == XCM_TK_UP;

  if (c->state == XCM_TK_DEAD)
    return;
  c->state = XCM_TK_DEAD;
  if (!c->peer_gone)
    kit->stats.dropped++;
  if (c->registered)
    conn_unregister(c);
  if (c->reader != NULL) {
    xcm__xml_reader_free(c->reader);
    c->reader = NULL;
  }
  if (c->drop_pending == XCM_TK_FLUSH)
    xcm__stream_close(c->stream);
  else
    xcm__stream_abort(c->stream);
  if (was_up) {
    xcm__log(&kit->ctx, XCM_LOG_INFO, "testkit: %s: down (%s)", c->addr,
             c->peer_gone ? "closed by the CM" : "dropped");
    xcm__tk_event(kit, XCM_TESTKIT_CONN_DOWN, c->addr, NULL);
  }
  if (c->group != NULL) {
    xcm__tk_group_unref(kit, c->group);
    c->group = NULL;
  }
}

/* ---- the CM's stream header ---------------------------------------- */

static int put_stream_error(xcm_buf *b, const char *cond) {
  int err = xcm__buf_append_str(
      b, "<stream:error xmlns:stream=\"" XCM_NS_STREAMS "\"><");

  if (err == 0)
    err = xcm__buf_append_str(b, cond);
  if (err == 0)
    err = xcm__buf_append_str(b, " xmlns=\"" XCM_NS_STREAM_ERRORS
                                 "\"/></stream:error>");
  return err;
}

/* A stream error, then TCP closed without </stream:stream>, as Openfire
 * closes after a failed handshake (capture g1). */
static void fail_stream(xcm_tk_conn *c, xcm_buf *b, const char *cond) {
  if (put_stream_error(b, cond) == 0)
    write_buf(c, b);
  xcm__tk_conn_drop(c, XCM_TK_FLUSH);
}

/* Openfire's answer to a header it refuses: a header without id and
 * without the space before '>' (capture g3), then the error. */
static void refuse_header(xcm_tk_conn *c, const char *from, const char *cond) {
  xcm_buf b;
  int err;

  xcm__buf_init(&b, c->kit->ctx.alloc);
  err = xcm__buf_append_str(&b, xml_decl);
  if (err == 0)
    err =
        xcm__buf_append_str(&b, "<stream:stream xmlns:stream=\"" XCM_NS_STREAMS
                                "\" xmlns=\"" XCM_NS_CM "\"");
  if (err == 0)
    err = xcm__xml_attr(&b, "from", from);
  if (err == 0)
    err = xcm__buf_append_str(&b, " version=\"1.0\">");
  if (err == 0)
    fail_stream(c, &b, cond);
  else
    xcm__tk_conn_drop(c, XCM_TK_ABORT);
  c->kit->stats.refused++;
  xcm__buf_free(&b);
}

/* A client stream on the CM port (capture g4): Openfire answers with a
 * header in another attribute order, echoing the namespace. */
static void refuse_namespace(xcm_tk_conn *c, const char *ns) {
  xcm_testkit *kit = c->kit;
  xcm_buf b;
  int err;

  xcm__tk_random_id(kit, c->id, XCM_TK_ID_LEN);
  xcm__buf_init(&b, kit->ctx.alloc);
  err = xcm__buf_append_str(&b, xml_decl);
  if (err == 0)
    err = xcm__buf_append_str(&b, "<stream:stream");
  if (err == 0)
    err = xcm__xml_attr(&b, "from", kit->domain);
  if (err == 0)
    err = xcm__xml_attr(&b, "id", c->id);
  if (err == 0)
    err = xcm__xml_attr(&b, "xmlns", ns);
  if (err == 0)
    err = xcm__buf_append_str(&b, " xmlns:stream=\"" XCM_NS_STREAMS
                                  "\" version=\"1.0\">");
  if (err == 0)
    fail_stream(c, &b, "invalid-namespace");
  else
    xcm__tk_conn_drop(c, XCM_TK_ABORT);
  kit->stats.refused++;
  xcm__buf_free(&b);
}

static int send_header(xcm_tk_conn *c) {
  xcm_testkit *kit = c->kit;
  xcm_buf b;
  int err;

  xcm__buf_init(&b, kit->ctx.alloc);
  err = xcm__buf_append_str(&b, xml_decl);
  if (err == 0)
    err =
        xcm__buf_append_str(&b, "<stream:stream xmlns:stream=\"" XCM_NS_STREAMS
                                "\" xmlns=\"" XCM_NS_CM "\"");
  if (err == 0)
    err = xcm__xml_attr(&b, "from", c->addr);
  if (err == 0)
    err = xcm__xml_attr(&b, "id", c->id);
  /* Openfire writes a space before '>' here, and only here. */
  if (err == 0)
    err = xcm__buf_append_str(&b, " version=\"1.0\" ><stream:features>");
  if (err == 0 && xcm__tk_link_tls_offered(kit) && !c->tls_on)
    err = xcm__buf_append_str(
        &b, kit->opt.link_tls == XCM_TESTKIT_LINK_TLS_REQUIRE
                ? "<starttls xmlns=\"" XCM_NS_TLS "\"><required/></starttls>"
                : "<starttls xmlns=\"" XCM_NS_TLS "\"></starttls>");
  if (err == 0 && kit->opt.link_zlib && !c->zlib_on)
    err =
        xcm__buf_append_str(&b, "<compression xmlns=\"" XCM_NS_COMPRESS_FEATURE
                                "\"><method>zlib</method></compression>");
  if (err == 0)
    err = xcm__buf_append_str(&b, "</stream:features>");
  if (err == 0)
    err = write_buf(c, &b);
  xcm__buf_free(&b);
  return err;
}

/* The header's default namespace, "" for none. */
static const char *default_ns(const xcm_xml_header *h) {
  const char *ns = xcm__xml_header_default_ns(h);

  return ns != NULL ? ns : "";
}

/* The CM's name: the domain of the JID "CM/RES". */
static void cm_name(const char *addr, const char **name, size_t *len) {
  const char *slash = strchr(addr, '/'), *at;
  size_t n = slash != NULL ? (size_t)(slash - addr) : strlen(addr);

  at = memchr(addr, '@', n);
  if (at != NULL) {
    n -= (size_t)(at + 1 - addr);
    addr = at + 1;
  }
  *name = addr;
  *len = n;
}

static xcm_tk_conn *registered_as(xcm_tk_group *g, const char *addr) {
  xcm_tk_conn *c;

  for (c = g->head; c != NULL; c = c->gnext)
    if (strcmp(c->addr, addr) == 0)
      return c;
  return NULL;
}

static int on_header(void *ud, const xcm_xml_header *h) {
  xcm_tk_conn *c = ud;
  xcm_testkit *kit = c->kit;
  const char *to = xcm__xml_header_attr(h, "", "to"), *name;
  xcm_tk_group *g;
  xcm_tk_conn *old;
  size_t len;

  if (strcmp(h->ns, XCM_NS_STREAMS) != 0 || strcmp(h->name, "stream") != 0) {
    xcm__tk_conn_drop(c, XCM_TK_ABORT);
    return XCM_EPROTO;
  }
  if (c->state == XCM_TK_OPEN && (c->tls_on || c->zlib_on))
    return send_header(c) == 0 ? 0 : XCM_ECLOSED; /* after TLS or zlib */
  if (c->state != XCM_TK_HEADER) {
    xcm__tk_conn_drop(c, XCM_TK_ABORT);
    return XCM_EPROTO;
  }
  if (strcmp(default_ns(h), XCM_NS_CM) != 0) {
    refuse_namespace(c, default_ns(h));
    return XCM_EPROTO;
  }
  if (to == NULL || to[0] == '\0') {
    refuse_header(c, "null", "bad-format");
    return XCM_EPROTO;
  }
  cm_name(to, &name, &len);
  g = group_get(kit, name, len);
  c->addr = xcm__strndup(kit->ctx.alloc, to, strlen(to));
  c->addr_hash = xcm__tk_java_hash(to, strlen(to));
  if (g == NULL || c->addr == NULL) {
    if (g != NULL)
      xcm__tk_group_gc(kit, g);
    xcm__tk_conn_drop(c, XCM_TK_ABORT);
    return XCM_ENOMEM;
  }
  old = registered_as(g, to);
  if (old != NULL)
    /* Silent in Openfire 4.1.6 (a takeover); said here, so that two CMs
     * under one name show in a test's log. */
    xcm__log(&kit->ctx, XCM_LOG_WARN,
             "testkit: %s: a second connection for this address (two CMs "
             "with one name?): %s",
             to,
             kit->opt.conflict == XCM_TESTKIT_CONFLICT_REFUSE
                 ? "refused with conflict"
                 : "it takes the address over");
  if (old != NULL && kit->opt.conflict == XCM_TESTKIT_CONFLICT_REFUSE) {
    refuse_header(c, to, "conflict");
    return XCM_EPROTO;
  }
  c->group = g;
  g->refs++;
  /* Openfire registers the connection when it reads the header, before
   * any handshake: from now on it may carry routes (capture a). */
  if (old != NULL)
    conn_replace(old, c);
  else
    conn_register(c);
  xcm__tk_random_id(kit, c->id, XCM_TK_ID_LEN);
  c->state = XCM_TK_OPEN;
  return send_header(c) == 0 ? 0 : XCM_ECLOSED;
}

/* ---- handshake and STARTTLS ---------------------------------------- */

static void on_handshake(xcm_tk_conn *c, const xcm_xml_node *n) {
  xcm_testkit *kit = c->kit;
  const char *text = n->text;
  size_t len = n->text_len;
  char hex[41];
  xcm_buf b;

  if (c->state == XCM_TK_UP)
    return;
  xcm__buf_init(&b, kit->ctx.alloc);
  if (kit->opt.link_tls == XCM_TESTKIT_LINK_TLS_REQUIRE && !c->tls_on) {
    fail_stream(c, &b, "policy-violation");
    kit->stats.refused++;
    xcm__buf_free(&b);
    return;
  }
  while (len > 0 &&
         (*text == ' ' || *text == '\n' || *text == '\t' || *text == '\r')) {
    text++;
    len--;
  }
  while (len > 0 && (text[len - 1] == ' ' || text[len - 1] == '\n' ||
                     text[len - 1] == '\t' || text[len - 1] == '\r'))
    len--;
  if (xcm__cm_handshake_digest(hex, c->id, strlen(c->id), kit->secret,
                               strlen(kit->secret)) != 0 ||
      len != 40 || strncasecmp(text, hex, 40) != 0) {
    /* Openfire compares ignoring case (capture g5). */
    fail_stream(c, &b, "not-authorized");
    kit->stats.handshakes_failed++;
    xcm__log(&kit->ctx, XCM_LOG_WARN, "testkit: %s: wrong handshake", c->addr);
    xcm__buf_free(&b);
    return;
  }
  c->state = XCM_TK_UP;
  c->up_seq = ++kit->conn_seq;
  kit->stats.handshakes++;
  if (xcm__buf_append_str(&b, "<handshake></handshake>") == 0 &&
      xcm__tk_build_config(kit, &b) == 0)
    write_buf(c, &b);
  else
    xcm__tk_conn_drop(c, XCM_TK_ABORT);
  xcm__buf_free(&b);
  if (!c->drop_pending) {
    xcm__log(&kit->ctx, XCM_LOG_INFO, "testkit: %s: up", c->addr);
    xcm__tk_event(kit, XCM_TESTKIT_CONN_UP, c->addr, NULL);
  }
}

static int on_starttls(xcm_tk_conn *c) {
  static const char proceed[] = "<proceed xmlns=\"" XCM_NS_TLS "\"/>";
  static const char failure[] =
      "<failure xmlns=\"" XCM_NS_TLS "\"/></stream:stream>";
  xcm_testkit *kit = c->kit;

  if (c->state != XCM_TK_OPEN || c->tls_on)
    return 0;
  if (kit->tls == NULL || !xcm__tk_link_tls_offered(kit)) {
    xcm__tk_conn_write(c, failure, sizeof(failure) - 1);
    xcm__tk_conn_drop(c, XCM_TK_FLUSH);
    return XCM_ECLOSED;
  }
  if (xcm__tk_conn_write(c, proceed, sizeof(proceed) - 1) != 0)
    return XCM_ECLOSED;
  c->tls_on = 1;
  c->tls_pending = 1;
  return XCM_XML_RESTART;
}

static int on_compress(xcm_tk_conn *c, const xcm_xml_stanza *st) {
  static const char done[] =
      "<compressed xmlns=\"http://jabber.org/protocol/compress\"/>";
  static const char failure[] =
      "<failure xmlns=\"http://jabber.org/protocol/compress\">"
      "<setup-failed/></failure>";
  const xcm_xml_node *m =
      st->root ? xcm__xml_node_child(st->root, NULL, "method") : NULL;

  if (c->state != XCM_TK_OPEN || c->zlib_on || !c->kit->opt.link_zlib ||
      m == NULL || m->text_len != 4 || memcmp(m->text, "zlib", 4) != 0)
    return xcm__tk_conn_write(c, failure, sizeof(failure) - 1) != 0
               ? XCM_ECLOSED
               : 0;
  if (xcm__tk_conn_write(c, done, sizeof(done) - 1) != 0)
    return XCM_ECLOSED;
  c->zlib_on = 1;
  c->zlib_pending = 1;
  return XCM_XML_RESTART;
}

/* ---- answers to the CM's iqs --------------------------------------- */

static const xcm_tk_error E_BAD_REQUEST = {"bad-request", "400", "modify",
                                           NULL};
static const xcm_tk_error E_ID_REQUIRED = {"bad-request", "400", "modify",
                                           "id-required"};
static const xcm_tk_error E_INVALID_PAYLOAD = {"bad-request", "400", "modify",
                                               "invalid-payload"};
static const xcm_tk_error E_UNKNOWN_STANZA = {"bad-request", "400", "modify",
                                              "unknown-stanza"};
static const xcm_tk_error E_NOT_FOUND = {"item-not-found", "404", "cancel",
                                         NULL};
static const xcm_tk_error E_NOT_ALLOWED = {"not-allowed", "405", "cancel",
                                           NULL};
static const xcm_tk_error E_NOT_AUTHORIZED = {"not-authorized", "401", "auth",
                                              NULL};

int xcm__tk_put_error(xcm_buf *b, const xcm_tk_error *e) {
  int err = xcm__buf_append_str(b, "<error");

  if (err == 0)
    err = xcm__xml_attr(b, "code", e->code);
  if (err == 0)
    err = xcm__xml_attr(b, "type", e->type);
  if (err == 0)
    err = xcm__buf_append_str(b, "><");
  if (err == 0)
    err = xcm__buf_append_str(b, e->cond);
  if (err == 0)
    err = xcm__buf_append_str(b, " xmlns=\"" XCM_NS_STANZAS "\"/>");
  if (err == 0 && e->extra != NULL) {
    err = xcm__buf_append_char(b, '<');
    if (err == 0)
      err = xcm__buf_append_str(b, e->extra);
    if (err == 0)
      err = xcm__buf_append_str(b, " xmlns=\"" NS_CM_ERRORS "\"/>");
  }
  if (err == 0)
    err = xcm__buf_append_str(b, "</error>");
  return err;
}

/* IQ.createResultIQ: type and id, then from and to swapped from the
 * request; the request's child echoed (echo may be NULL); an error when
 * e is set. */
static void answer_iq(xcm_tk_conn *c, const xcm_xml_node *iq, const char *echo,
                      size_t echo_len, const xcm_tk_error *e) {
  xcm_testkit *kit = c->kit;
  const char *id = xcm__xml_node_attr(iq, "id");
  const char *to = xcm__xml_node_attr(iq, "to");
  const char *from = xcm__xml_node_attr(iq, "from");
  xcm_buf b;
  int err;

  xcm__buf_init(&b, kit->ctx.alloc);
  err = xcm__buf_append_str(&b, e != NULL ? "<iq type=\"error\""
                                          : "<iq type=\"result\"");
  if (err == 0 && id != NULL)
    err = xcm__xml_attr(&b, "id", id);
  if (err == 0 && to != NULL)
    err = xcm__xml_attr(&b, "from", to);
  if (err == 0 && from != NULL)
    err = xcm__xml_attr(&b, "to", from);
  if (err == 0)
    err = xcm__buf_append_char(&b, '>');
  if (err == 0 && echo != NULL)
    err = xcm__buf_append(&b, echo, echo_len);
  if (err == 0 && e != NULL)
    err = xcm__tk_put_error(&b, e);
  if (err == 0)
    err = xcm__buf_append_str(&b, "</iq>");
  if (err == 0)
    write_buf(answer_conn(c), &b);
  if (e != NULL)
    kit->stats.iq_errors++;
  xcm__buf_free(&b);
}

/* Before the handshake Openfire answers on the same connection with a
 * copy of the request: to and from swapped in place, type set to error,
 * the route's content dropped but the iq's kept (capture g2). */
static void answer_unauthorized(xcm_tk_conn *c, const xcm_xml_stanza *st,
                                int keep_content) {
  const xcm_xml_node *n = st->root;
  const char *to = xcm__xml_node_attr(n, "to");
  const char *from = xcm__xml_node_attr(n, "from");
  xcm_tk_attr_op ops[3] = {
      {"to", NULL, from, 0}, {"from", NULL, to, 0}, {"type", NULL, "error", 0}};
  const char *content;
  size_t content_len, tag_len;
  int self_closing, err;
  xcm_buf b;

  xcm__buf_init(&b, c->kit->ctx.alloc);
  tag_len = xcm__tk_start_tag(st->bytes, st->len, &self_closing);
  err = xcm__tk_rewrite(&b, st->bytes, tag_len, ops, 3);
  if (err == 0 && self_closing) {
    b.len -= 2; /* "/>" */
    err = xcm__buf_append_char(&b, '>');
  }
  xcm__tk_content(st->bytes, st->len, &content, &content_len);
  if (err == 0 && keep_content)
    err = xcm__buf_append(&b, content, content_len);
  if (err == 0)
    err = xcm__tk_put_error(&b, &E_NOT_AUTHORIZED);
  if (err == 0)
    err = xcm__buf_append_str(&b, "</");
  if (err == 0)
    err = xcm__buf_append_str(&b, st->name);
  if (err == 0)
    err = xcm__buf_append_char(&b, '>');
  if (err == 0)
    write_buf(c, &b);
  xcm__buf_free(&b);
}

static xcm_tk_session *find_session(xcm_tk_conn *c, const char *sid) {
  xcm_map_entry *e;

  if (c->group == NULL)
    return NULL;
  e = xcm__map_get(&c->group->sessions, sid, strlen(sid));
  return e != NULL ? (xcm_tk_session *)e : NULL;
}

/* What the CM says of the client (its host name and address), for tests
 * that check the address reaches Openfire: the balancer's, or the one
 * its PROXY header named. */
static void log_create(xcm_tk_conn *c, const xcm_xml_node *iq,
                       const char *sid) {
  const xcm_xml_node *s = xcm__xml_node_child(iq, NULL, "session");
  const xcm_xml_node *cr = s ? xcm__xml_node_child(s, NULL, "create") : NULL;
  const xcm_xml_node *h = cr ? xcm__xml_node_child(cr, NULL, "host") : NULL;
  const char *name = h ? xcm__xml_node_attr(h, "name") : NULL;
  const char *addr = h ? xcm__xml_node_attr(h, "address") : NULL;

  xcm__log(&c->kit->ctx, XCM_LOG_DEBUG,
           "testkit: %s: session %s created for host %s address %s", c->addr,
           sid, name ? name : "(none)", addr ? addr : "(none)");
}

static void on_create(xcm_tk_conn *c, const xcm_xml_node *iq, const char *sid,
                      const char *echo, size_t echo_len) {
  xcm_testkit *kit = c->kit;
  xcm_tk_session *s = find_session(c, sid);

  if (s != NULL) {
    answer_iq(c, iq, echo, echo_len, NULL);
    return;
  }
  if (kit->refuse_creates || kit->nsessions >= kit->opt.max_sessions ||
      xcm__tk_session_new(kit, c->group, sid, &s) != 0) {
    kit->stats.creates_refused++;
    answer_iq(c, iq, echo, echo_len, &E_NOT_ALLOWED);
    return;
  }
  kit->stats.creates++;
  if (kit->opt.log_level >= XCM_LOG_DEBUG)
    log_create(c, iq, sid);
  answer_iq(c, iq, echo, echo_len, NULL);
  xcm__tk_event(kit, XCM_TESTKIT_SESSION_CREATED, NULL, s);
}

/* <failed/> holding one message: stored offline as Openfire 4.1.6 stores
 * it (capture d2). The message inherits the namespace of <session/>
 * unless it declares its own, so without xmlns="jabber:client" it is
 * stored, and later delivered, in the connectionmanager namespace; with
 * it, Openfire's echo shows the declaration rewritten to xmlns="". */
static void on_failed(xcm_tk_conn *c, const xcm_xml_stanza *st,
                      const xcm_xml_node *session, const xcm_xml_node *failed) {
  xcm_testkit *kit = c->kit;
  const xcm_xml_node *m = failed->children;
  const char *mb = st->bytes + m->off, *xmlns = NULL, *to;
  const char *echo = st->bytes + session->off;
  size_t xmlns_len = 0, echo_len = session->len;
  xcm_buf stored, echo_buf;
  xcm_tk_user *u;
  int err;

  if (failed->nchildren != 1 || m == NULL) {
    answer_iq(c, st->root, echo, echo_len, &E_INVALID_PAYLOAD);
    return;
  }
  if (strcmp(m->name, "message") != 0) {
    answer_iq(c, st->root, echo, echo_len, &E_UNKNOWN_STANZA);
    return;
  }
  xcm__buf_init(&stored, kit->ctx.alloc);
  xcm__buf_init(&echo_buf, kit->ctx.alloc);
  xcm__tk_attr_raw(mb, m->len, "xmlns", &xmlns, &xmlns_len);
  if (xmlns == NULL) {
    xcm_tk_attr_op op = {"xmlns", NULL, XCM_NS_CM_PROTOCOL, 1};

    err = xcm__tk_rewrite(&stored, mb, m->len, &op, 1);
  } else if (xmlns_len == strlen(XCM_NS_CLIENT) &&
             memcmp(xmlns, XCM_NS_CLIENT, xmlns_len) == 0) {
    xcm_tk_attr_op strip = {"xmlns", XCM_NS_CLIENT, NULL, 0};
    xcm_tk_attr_op blank = {"xmlns", XCM_NS_CLIENT, "", 0};
    size_t at = m->off - session->off;

    err = xcm__tk_rewrite(&stored, mb, m->len, &strip, 1);
    if (err == 0)
      err = xcm__buf_append(&echo_buf, echo, at);
    if (err == 0)
      err = xcm__tk_rewrite(&echo_buf, mb, m->len, &blank, 1);
    if (err == 0)
      err = xcm__buf_append(&echo_buf, echo + at + m->len,
                            echo_len - at - m->len);
    if (err == 0) {
      echo = echo_buf.data;
      echo_len = echo_buf.len;
    }
  } else {
    err = xcm__buf_append(&stored, mb, m->len);
  }
  to = xcm__xml_node_attr(m, "to");
  if (err == 0 && to != NULL) {
    size_t n = strcspn(to, "@/");

    u = to[n] == '@' ? xcm__tk_user(kit, to, n) : NULL;
    if (u != NULL && !u->anonymous)
      xcm__tk_offline_store(kit, u, stored.data, stored.len);
  }
  kit->stats.failed_received++;
  answer_iq(c, st->root, echo, echo_len, NULL);
  xcm__buf_free(&stored);
  xcm__buf_free(&echo_buf);
}

/* The CM's own iqs: MultiplexerPacketHandler's rules. */
static void on_iq(xcm_tk_conn *c, const xcm_xml_stanza *st) {
  const xcm_xml_node *iq = st->root, *child = iq->children, *action;
  const char *type = xcm__xml_node_attr(iq, "type"), *sid;
  const char *echo = child != NULL ? st->bytes + child->off : NULL;
  size_t echo_len = child != NULL ? child->len : 0;
  xcm_tk_session *s;

  if (c->state != XCM_TK_UP) {
    answer_unauthorized(c, st, 1);
    c->kit->stats.iq_errors++;
    return;
  }
  if (type != NULL && strcmp(type, "result") == 0)
    return;
  if (type != NULL && strcmp(type, "error") == 0) {
    xcm__log(&c->kit->ctx, XCM_LOG_WARN,
             "testkit: %s: the CM answered an iq with an error", c->addr);
    return;
  }
  if (type == NULL || strcmp(type, "set") != 0 || child == NULL) {
    answer_iq(c, iq, echo, echo_len, &E_BAD_REQUEST);
    return;
  }
  sid = xcm__xml_node_attr(child, "id");
  if (sid == NULL) {
    answer_iq(c, iq, echo, echo_len, &E_ID_REQUIRED);
    return;
  }
  if (strcmp(child->name, "session") != 0) {
    answer_iq(c, iq, echo, echo_len, &E_BAD_REQUEST);
    return;
  }
  if (xcm__xml_node_child(child, NULL, "create") != NULL) {
    on_create(c, iq, sid, echo, echo_len);
    return;
  }
  s = find_session(c, sid);
  if (s == NULL) {
    answer_iq(c, iq, echo, echo_len, &E_NOT_FOUND);
  } else if (xcm__xml_node_child(child, NULL, "close") != NULL) {
    c->kit->stats.closes_from_cm++;
    /* The unavailable presence goes out before the result (main
     * capture). */
    xcm__tk_session_end(s, 1);
    answer_iq(c, iq, echo, echo_len, NULL);
  } else if ((action = xcm__xml_node_child(child, NULL, "failed")) != NULL) {
    on_failed(c, st, child, action);
  } else {
    answer_iq(c, iq, echo, echo_len, &E_BAD_REQUEST);
  }
}

/* ---- routes -------------------------------------------------------- */

/* A Route error (MultiplexerPacketHandler.sendErrorPacket): streamid and
 * id first, then from and to swapped, then the type (captures e, c). */
static void route_error(xcm_tk_conn *c, const xcm_xml_node *route,
                        const xcm_tk_error *e) {
  xcm_testkit *kit = c->kit;
  const char *sid = xcm__xml_node_attr(route, "streamid");
  const char *id = xcm__xml_node_attr(route, "id");
  const char *to = xcm__xml_node_attr(route, "to");
  const char *from = xcm__xml_node_attr(route, "from");
  xcm_buf b;
  int err;

  xcm__buf_init(&b, kit->ctx.alloc);
  err = xcm__buf_append_str(&b, "<route");
  if (err == 0)
    err = xcm__xml_attr(&b, "streamid", sid);
  if (err == 0 && id != NULL)
    err = xcm__xml_attr(&b, "id", id);
  if (err == 0 && to != NULL)
    err = xcm__xml_attr(&b, "from", to);
  if (err == 0 && from != NULL)
    err = xcm__xml_attr(&b, "to", from);
  if (err == 0)
    err = xcm__buf_append_str(&b, " type=\"error\">");
  if (err == 0)
    err = xcm__tk_put_error(&b, e);
  if (err == 0)
    err = xcm__buf_append_str(&b, "</route>");
  if (err == 0)
    write_buf(answer_conn(c), &b);
  kit->stats.route_errors++;
  xcm__buf_free(&b);
}

static void on_route(xcm_tk_conn *c, const xcm_xml_stanza *st) {
  const xcm_xml_node *route = st->root, *inner = route->children;
  const char *sid = xcm__xml_node_attr(route, "streamid");
  xcm_tk_session *s;

  if (c->state != XCM_TK_UP) {
    answer_unauthorized(c, st, 0);
    c->kit->stats.route_errors++;
    return;
  }
  /* Openfire fails on these with an exception that closes the whole
   * connection, without a stream error (captures e2 and f). */
  if (sid == NULL || inner == NULL) {
    xcm__tk_conn_drop(c, XCM_TK_ABORT);
    return;
  }
  c->kit->stats.routes_in++;
  s = find_session(c, sid);
  if (s == NULL) {
    route_error(c, route, &E_NOT_FOUND);
    return;
  }
  /* Only the first child counts; the rest is dropped (capture f). */
  if (xcm__tk_session_input(s, inner, st->bytes + inner->off, inner->len) ==
      XCM_EPROTO)
    route_error(c, route, &E_UNKNOWN_STANZA);
}

/* ---- the reader and the stream ------------------------------------- */

static int on_stanza_start(void *ud, const char *ns, const char *name) {
  (void)ud;
  (void)ns;
  (void)name;
  return 64; /* the whole stanza: routed iqs are read to their depths */
}

static int on_stanza(void *ud, const xcm_xml_stanza *st) {
  xcm_tk_conn *c = ud;
  const char *name = st->name;

  if (c->drop_pending)
    return XCM_ECLOSED;
  if (strcmp(name, "handshake") == 0) {
    on_handshake(c, st->root);
  } else if (strcmp(name, "route") == 0) {
    on_route(c, st);
  } else if (strcmp(name, "iq") == 0) {
    on_iq(c, st);
  } else if (strcmp(name, "message") == 0 || strcmp(name, "presence") == 0) {
    /* Never accepted outside a route: connection closed (capture e). */
    xcm__tk_conn_drop(c, XCM_TK_ABORT);
  } else if (strcmp(name, "starttls") == 0 && strcmp(st->ns, XCM_NS_TLS) == 0) {
    return on_starttls(c);
  } else if (strcmp(name, "compress") == 0 &&
             strcmp(st->ns, "http://jabber.org/protocol/compress") == 0) {
    return on_compress(c, st);
  } else {
    xcm__log(&c->kit->ctx, XCM_LOG_DEBUG, "testkit: ignored <%s/>", name);
  }
  return c->drop_pending ? XCM_ECLOSED : 0;
}

/* The CM ended its stream: Openfire 4.1.6 closes TCP without answering
 * in kind. */
static void on_stream_end(void *ud) {
  xcm_tk_conn *c = ud;

  c->peer_gone = 1;
  xcm__tk_conn_drop(c, XCM_TK_FLUSH);
}

static const xcm_xml_callbacks reader_cb = {on_header, on_stanza_start,
                                            on_stanza, on_stream_end};

/* The reader refused data[0..len) somewhere, or a callback of the
 * testkit's own ended the connection (on a route without streamid, say).
 * The witness reads the whole rest (it stops at its first error); a
 * refusal by the reader that it did not explain itself (a limit, or no
 * witness) is a violation of its own. */
static void reader_failed(xcm_tk_conn *c, const char *data, size_t len) {
  xcm_testkit *kit = c->kit;
  unsigned before = xcm__tk_witness_count(c->witness);
  char what[256], name[96];

  if (c->witness != NULL)
    xcm__tk_witness_feed(c->witness, data, len);
  if (c->drop_pending || xcm__tk_witness_count(c->witness) > before)
    return; /* the testkit's own decision, or explained */
  snprintf(what, sizeof(what), "the testkit's reader refused it: %s",
           xcm__xml_reader_error_text(c->reader) != NULL
               ? xcm__xml_reader_error_text(c->reader)
               : "(no reason)");
  if (c->witness != NULL)
    snprintf(name, sizeof(name), "%s", xcm__tk_witness_name(c->witness));
  else
    snprintf(name, sizeof(name), "CM connection #%llu (%s)",
             (unsigned long long)c->number,
             c->addr != NULL ? c->addr : "no header yet");
  xcm__tk_violation(kit, name, xcm__xml_reader_offset(c->reader), what, data,
                    len < 160 ? len : 160, len > 160);
}

static void on_read(void *ud, const char *data, size_t len) {
  xcm_tk_conn *c = ud;
  xcm_testkit *kit = c->kit;

  if (c->state == XCM_TK_DEAD || c->drop_pending)
    return;
  xcm__tk_enter(kit);
  while (len > 0 && !c->drop_pending) {
    size_t used = 0;
    int err = xcm__xml_reader_feed(c->reader, data, len, &used);

    if (err != 0) {
      reader_failed(c, data, len);
      /* Malformed XML: Openfire's parser throws and the connection
       * closes. */
      xcm__tk_conn_drop(c, XCM_TK_ABORT);
      break;
    }
    if (c->witness != NULL)
      xcm__tk_witness_feed(c->witness, data, used);
    data += used;
    len -= used;
    if ((c->tls_pending || c->zlib_pending) && c->witness != NULL)
      xcm__tk_witness_restart(c->witness);
    if (c->tls_pending) {
      c->tls_pending = 0;
      if (xcm__stream_start_tls(c->stream, kit->tls, 1, NULL, data, len) != 0)
        xcm__tk_conn_drop(c, XCM_TK_ABORT);
      break;
    }
    if (c->zlib_pending) {
      c->zlib_pending = 0;
      if (xcm__stream_start_zlib(c->stream, data, len) != 0)
        xcm__tk_conn_drop(c, XCM_TK_ABORT);
      break;
    }
    if (used == 0)
      break;
  }
  if (!c->drop_pending && c->reader != NULL)
    xcm__xml_reader_shrink(c->reader);
  xcm__tk_leave(kit);
}

static void on_end(void *ud, int err) {
  xcm_tk_conn *c = ud;

  (void)err;
  xcm__tk_enter(c->kit);
  c->peer_gone = 1;
  xcm__tk_conn_drop(c, XCM_TK_ABORT);
  xcm__tk_leave(c->kit);
}

static void on_tls_done(void *ud, int err) {
  xcm_tk_conn *c = ud;

  if (err == 0)
    return;
  xcm__tk_enter(c->kit);
  xcm__tk_conn_drop(c, XCM_TK_ABORT);
  xcm__tk_leave(c->kit);
}

static void on_closed(void *ud) {
  xcm_tk_conn *c = ud;
  xcm_testkit *kit = c->kit;

  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    kit->conns = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  xcm__tk_witness_free(c->witness);
  xcm__free(kit->ctx.alloc, c->addr);
  xcm__free(kit->ctx.alloc, c);
  xcm__tk_stream_closed(kit);
}

static const xcm_stream_cb stream_cb = {on_read, on_end, on_tls_done, NULL,
                                        on_closed};

int xcm__tk_conn_accept(xcm_testkit *kit, uv_tcp_t *tcp) {
  xcm_stream_limits lim;
  xcm_xml_limits xl;
  xcm_tk_conn *c = xcm__calloc(kit->ctx.alloc, sizeof(*c));
  int err;

  if (c == NULL)
    return XCM_ENOMEM;
  c->kit = kit;
  c->state = XCM_TK_HEADER;
  memset(&lim, 0, sizeof(lim));
  memset(&xl, 0, sizeof(xl));
  lim.max_out = kit->opt.max_out;
  lim.high_water = kit->opt.max_out / 2;
  lim.low_water = kit->opt.max_out / 4;
  err = xcm__stream_from_tcp(&c->stream, &kit->ctx, tcp, &stream_cb, c, &lim);
  if (err != 0) {
    xcm__free(kit->ctx.alloc, c);
    return err;
  }
  c->next = kit->conns;
  if (kit->conns != NULL)
    kit->conns->prev = c;
  kit->conns = c;
  kit->streams_open++;
  kit->stats.accepted++;
  c->number = kit->stats.accepted;
  /* Openfire reads stanzas up to xmpp.parser.buffer.size, 1 MiB by
   * default; a route holding a client's largest stanza must fit, one
   * level deeper than the client's own limit. */
  xl.max_stanza = 1u << 20;
  xl.max_depth = 64;
  /* The CM's header is the usual one: the reader holds no copy of it. */
  if (xcm__xml_reader_new(&c->reader, kit->ctx.xml, &reader_cb, c, &xl) == 0)
    xcm__xml_reader_set_usual(c->reader, &xcm__stream_cm);
  if (c->reader == NULL || xcm__xml_reader_set_scan(c->reader, 1) != 0 ||
      (kit->opt.witness &&
       xcm__tk_witness_new(&c->witness, kit, c->number) != 0))
    xcm__tk_conn_drop(c, XCM_TK_ABORT);
  else if (kit->stalled)
    xcm__stream_pause(c->stream);
  return 0;
}
