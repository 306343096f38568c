/* The XMPP server behind the routes: sessions, resource binding, the
 * server's own iqs, presence, message and iq routing, offline storage.
 *
 * Stanzas are forwarded as the client wrote them, with from stamped (and
 * to, for presence broadcasts) the way Openfire's serializer does (see
 * tag.c), and without the xmlns="jabber:client" a CM puts on routed
 * stanzas: Openfire's routes carry none (captures). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proto/cmproto.h"
#include "testkit/testkit.h"
#include "util/alloc.h"
#include "xcm/error.h"
#include "xml/writer.h"

#define NS_ROSTER "jabber:iq:roster"
#define NS_PING "urn:xmpp:ping"
#define NS_IQ_AUTH "jabber:iq:auth"
#define NS_IQ_REGISTER "jabber:iq:register"
#define NS_DELAY "urn:xmpp:delay"

static const xcm_tk_error E_BAD_REQUEST = {"bad-request", "400", "modify",
                                           NULL};
static const xcm_tk_error E_NOT_AUTHORIZED = {"not-authorized", "401", "auth",
                                              NULL};
static const xcm_tk_error E_NOT_ALLOWED = {"not-allowed", "405", "cancel",
                                           NULL};
static const xcm_tk_error E_NOT_ACCEPTABLE = {"not-acceptable", "406", "modify",
                                              NULL};
static const xcm_tk_error E_CONFLICT = {"conflict", "409", "cancel", NULL};
static const xcm_tk_error E_INTERNAL = {"internal-server-error", "500", "wait",
                                        NULL};
static const xcm_tk_error E_NOT_IMPLEMENTED = {"feature-not-implemented", "501",
                                               "cancel", NULL};
static const xcm_tk_error E_UNAVAILABLE = {"service-unavailable", "503",
                                           "cancel", NULL};
static const xcm_tk_error E_NO_REMOTE = {"remote-server-not-found", "404",
                                         "cancel", NULL};

static const char *addr_of(const xcm_tk_session *s) {
  return s->full != NULL ? s->full : s->addr;
}

static int eq(const char *a, const char *b) {
  return a != NULL && b != NULL && strcmp(a, b) == 0;
}

/* ---- sessions ------------------------------------------------------ */

int xcm__tk_session_new(xcm_testkit *kit, xcm_tk_group *g, const char *sid,
                        xcm_tk_session **out) {
  const xcm_allocator *a = kit->ctx.alloc;
  xcm_tk_session *s = xcm__calloc(a, sizeof(*s));
  size_t dlen = strlen(kit->domain), slen = strlen(sid);

  if (s == NULL)
    return XCM_ENOMEM;
  s->kit = kit;
  s->group = g;
  s->refs = 1;
  s->sid = xcm__strndup(a, sid, slen);
  s->addr = xcm__alloc(a, dlen + slen + 2);
  xcm__buf_init(&s->presence, a);
  xcm__buf_init(&s->sasl_msg, a);
  if (s->sid == NULL || s->addr == NULL) {
    xcm__free(a, s->sid);
    xcm__free(a, s->addr);
    xcm__free(a, s);
    return XCM_ENOMEM;
  }
  memcpy(s->addr, kit->domain, dlen);
  s->addr[dlen] = '/';
  memcpy(s->addr + dlen + 1, sid, slen + 1);
  if (g != NULL) {
    s->by_sid.key = s->sid;
    if (xcm__map_put(&g->sessions, &s->by_sid) != 0) {
      xcm__free(a, s->sid);
      xcm__free(a, s->addr);
      xcm__free(a, s);
      return XCM_ENOMEM;
    }
  }
  s->knext = kit->sessions;
  if (kit->sessions != NULL)
    kit->sessions->kprev = s;
  kit->sessions = s;
  kit->nsessions++;
  *out = s;
  return 0;
}

void xcm__tk_session_hold(xcm_tk_session *s) {
  s->refs++;
}

void xcm__tk_session_release(xcm_tk_session *s) {
  xcm_testkit *kit = s->kit;
  const xcm_allocator *a = kit->ctx.alloc;

  if (--s->refs > 0)
    return;
  xcm__tk_sasl_reset(s);
  xcm__buf_free(&s->presence);
  if (s->user != NULL)
    xcm__tk_user_unref(kit, s->user);
  xcm__free(a, s->sid);
  xcm__free(a, s->addr);
  xcm__free(a, s->full);
  xcm__free(a, s);
}

void xcm__tk_session_unlink(xcm_tk_session *s) {
  xcm_testkit *kit = s->kit;

  if (s->dead)
    return;
  s->dead = 1;
  if (s->group != NULL) {
    xcm__map_remove(&s->group->sessions, &s->by_sid);
    xcm__tk_group_gc(kit, s->group);
    s->group = NULL;
  }
  if (s->full != NULL) {
    xcm__map_remove(&kit->jids, &s->by_jid);
    if (s->uprev != NULL)
      s->uprev->unext = s->unext;
    else
      s->user->sessions = s->unext;
    if (s->unext != NULL)
      s->unext->uprev = s->uprev;
    s->unext = s->uprev = NULL;
  }
  if (s->kprev != NULL)
    s->kprev->knext = s->knext;
  else
    kit->sessions = s->knext;
  if (s->knext != NULL)
    s->knext->kprev = s->kprev;
  s->knext = s->kprev = NULL;
  kit->nsessions--;
  xcm__tk_session_release(s);
}

/* Openfire frames what it sends through its raw-text path (SASL answers,
 * stream errors) as from/to/streamid, and stanzas as streamid/from/to
 * (captures). */
void xcm__tk_deliver(xcm_tk_session *s, const char *bytes, size_t len,
                     int raw) {
  xcm_testkit *kit = s->kit;
  xcm_tk_conn *c;
  xcm_buf b;
  int err;

  if (s->dead)
    return;
  if (s->group == NULL) {
    if (s->cb == NULL) {
      kit->stats.local_undelivered++;
      return;
    }
    xcm__tk_session_hold(s);
    s->cb(s->cb_ud, kit, addr_of(s), bytes, len);
    xcm__tk_session_release(s);
    return;
  }
  c = xcm__tk_group_pick(s->group, s->sid);
  if (c == NULL)
    return;
  xcm__buf_init(&b, kit->ctx.alloc);
  err = xcm__buf_append_str(&b, "<route");
  if (err == 0 && !raw)
    err = xcm__xml_attr(&b, "streamid", s->sid);
  if (err == 0)
    err = xcm__xml_attr(&b, "from", kit->domain);
  if (err == 0)
    err = xcm__xml_attr(&b, "to", s->group->name);
  if (err == 0 && raw)
    err = xcm__xml_attr(&b, "streamid", s->sid);
  if (err == 0)
    err = xcm__buf_append_char(&b, '>');
  if (err == 0)
    err = xcm__buf_append(&b, bytes, len);
  if (err == 0)
    err = xcm__buf_append_str(&b, "</route>");
  if (err == 0 && xcm__tk_conn_write(c, b.data, b.len) == 0)
    kit->stats.routes_out++;
  xcm__buf_free(&b);
}

static void deliver_buf(xcm_tk_session *s, const xcm_buf *b) {
  if (b->len > 0)
    xcm__tk_deliver(s, b->data, b->len, 0);
}

/* ---- JIDs and recipients ------------------------------------------- */

typedef struct jid_parts {
  const char *node, *domain, *res;
  size_t node_len, domain_len, res_len;
} jid_parts;

static void jid_split(const char *s, jid_parts *j) {
  const char *slash = strchr(s, '/');
  size_t n = slash != NULL ? (size_t)(slash - s) : strlen(s);
  const char *at = memchr(s, '@', n);

  memset(j, 0, sizeof(*j));
  if (at != NULL) {
    j->node = s;
    j->node_len = (size_t)(at - s);
    j->domain = at + 1;
    j->domain_len = n - j->node_len - 1;
  } else {
    j->domain = s;
    j->domain_len = n;
  }
  if (slash != NULL) {
    j->res = slash + 1;
    j->res_len = strlen(slash + 1);
  }
}

static int jid_local(const xcm_testkit *kit, const jid_parts *j) {
  return j->domain_len == strlen(kit->domain) &&
         memcmp(j->domain, kit->domain, j->domain_len) == 0;
}

static xcm_tk_session *by_full(const xcm_testkit *kit, const char *full) {
  xcm_map_entry *e = xcm__map_get(&kit->jids, full, strlen(full));

  return e != NULL
             ? (xcm_tk_session *)((char *)e - offsetof(xcm_tk_session, by_jid))
             : NULL;
}

/* Whether to is the server itself or the sender's own bare JID: what
 * the server answers for the client. */
static int to_server(const xcm_tk_session *s, const char *to) {
  const xcm_testkit *kit = s->kit;
  jid_parts j;

  if (to == NULL || strcmp(to, kit->domain) == 0)
    return 1;
  if (s->user == NULL)
    return 0;
  jid_split(to, &j);
  return j.res == NULL && jid_local(kit, &j) &&
         j.node_len == strlen(s->user->name) &&
         memcmp(j.node, s->user->name, j.node_len) == 0;
}

static int bare_of(const xcm_tk_session *s, xcm_buf *b) {
  int err = xcm__buf_append_str(b, s->user->name);

  if (err == 0)
    err = xcm__buf_append_char(b, '@');
  if (err == 0)
    err = xcm__buf_append_str(b, s->kit->domain);
  if (err == 0)
    err = xcm__buf_append_char(b, '\0');
  return err;
}

/* A snapshot of recipients: each held until the snapshot is released,
 * because delivering to one may run a callback that ends another. */
typedef struct rcpt {
  xcm_tk_session *s;
  int to_full; /* address it by full JID, else by bare JID */
} rcpt;

static void snap_add(xcm_buf *snap, xcm_tk_session *t, int to_full) {
  rcpt r = {t, to_full};

  if (xcm__buf_append(snap, &r, sizeof(r)) == 0)
    xcm__tk_session_hold(t);
}

static size_t snap_count(const xcm_buf *snap) {
  return snap->len / sizeof(rcpt);
}

static rcpt snap_at(const xcm_buf *snap, size_t i) {
  rcpt r;

  memcpy(&r, snap->data + i * sizeof(r), sizeof(r));
  return r;
}

static void snap_free(xcm_buf *snap) {
  size_t i;

  for (i = 0; i < snap_count(snap); i++)
    xcm__tk_session_release(snap_at(snap, i).s);
  xcm__buf_free(snap);
}

static int sub_has(const char *sub, const char *dir) {
  return strcmp(sub, "both") == 0 || strcmp(sub, dir) == 0;
}

/* The available sessions presence of s goes to ("from": contacts who
 * see s) or comes from ("to": contacts s sees), then s's own other
 * available resources, then s itself if asked. */
static void collect(xcm_tk_session *s, const char *dir, int self_too,
                    xcm_buf *snap) {
  xcm_testkit *kit = s->kit;
  xcm_tk_item *it;
  xcm_tk_session *t;

  for (it = s->user->roster; it != NULL; it = it->next) {
    xcm_tk_user *u;
    jid_parts j;

    if (!sub_has(it->sub, dir))
      continue;
    jid_split(it->jid, &j);
    if (j.node == NULL || !jid_local(kit, &j))
      continue;
    u = xcm__tk_user(kit, j.node, j.node_len);
    if (u == NULL || u == s->user)
      continue;
    for (t = u->sessions; t != NULL; t = t->unext)
      if (t->available)
        snap_add(snap, t, 0);
  }
  for (t = s->user->sessions; t != NULL; t = t->unext)
    if (t != s && t->available)
      snap_add(snap, t, 1);
  if (self_too)
    snap_add(snap, s, 1);
}

/* bytes with to set to t's full or bare JID, delivered to t. */
static void deliver_to(xcm_tk_session *t, int to_full, const char *bytes,
                       size_t len) {
  xcm_buf b, bare;
  xcm_tk_attr_op op = {"to", NULL, NULL, 0};

  if (t->dead)
    return;
  xcm__buf_init(&b, t->kit->ctx.alloc);
  xcm__buf_init(&bare, t->kit->ctx.alloc);
  if (to_full) {
    op.value = t->full;
  } else if (bare_of(t, &bare) == 0) {
    op.value = bare.data;
  }
  if (op.value != NULL && xcm__tk_rewrite(&b, bytes, len, &op, 1) == 0)
    deliver_buf(t, &b);
  xcm__buf_free(&b);
  xcm__buf_free(&bare);
}

/* ---- answers to the client ----------------------------------------- */

/* The stanza back to its sender as an error: type and id, from and to
 * swapped, the original content, the error (never for an error). */
static void bounce(xcm_tk_session *s, const xcm_xml_node *el, const char *bytes,
                   size_t len, const xcm_tk_error *e) {
  const char *id = xcm__xml_node_attr(el, "id");
  const char *to = xcm__xml_node_attr(el, "to");
  const char *content;
  size_t content_len;
  xcm_buf b;
  int err;

  if (eq(xcm__xml_node_attr(el, "type"), "error"))
    return;
  xcm__tk_content(bytes, len, &content, &content_len);
  xcm__buf_init(&b, s->kit->ctx.alloc);
  err = xcm__buf_append_char(&b, '<');
  if (err == 0)
    err = xcm__buf_append_str(&b, el->name);
  if (err == 0)
    err = xcm__buf_append_str(&b, " type=\"error\"");
  if (err == 0 && id != NULL)
    err = xcm__xml_attr(&b, "id", id);
  if (err == 0 && to != NULL)
    err = xcm__xml_attr(&b, "from", to);
  if (err == 0)
    err = xcm__xml_attr(&b, "to", addr_of(s));
  if (err == 0)
    err = xcm__buf_append_char(&b, '>');
  if (err == 0)
    err = xcm__buf_append(&b, content, content_len);
  if (err == 0)
    err = xcm__tk_put_error(&b, e);
  if (err == 0)
    err = xcm__buf_append_str(&b, "</");
  if (err == 0)
    err = xcm__buf_append_str(&b, el->name);
  if (err == 0)
    err = xcm__buf_append_char(&b, '>');
  if (err == 0)
    deliver_buf(s, &b);
  xcm__buf_free(&b);
}

/* An iq result to the client, as the captures' bind, session and roster
 * answers: type, id, from only when the request had a to, then to. */
static void iq_result(xcm_tk_session *s, const xcm_xml_node *el, const char *to,
                      const char *payload, size_t plen) {
  const char *id = xcm__xml_node_attr(el, "id");
  const char *req_to = xcm__xml_node_attr(el, "to");
  xcm_buf b;
  int err;

  xcm__buf_init(&b, s->kit->ctx.alloc);
  err = xcm__buf_append_str(&b, "<iq type=\"result\"");
  if (err == 0 && id != NULL)
    err = xcm__xml_attr(&b, "id", id);
  if (err == 0 && req_to != NULL)
    err = xcm__xml_attr(&b, "from", req_to);
  if (err == 0)
    err = xcm__xml_attr(&b, "to", to);
  if (err == 0 && payload == NULL)
    err = xcm__buf_append_str(&b, "/>");
  if (err == 0 && payload != NULL) {
    err = xcm__buf_append_char(&b, '>');
    if (err == 0)
      err = xcm__buf_append(&b, payload, plen);
    if (err == 0)
      err = xcm__buf_append_str(&b, "</iq>");
  }
  if (err == 0)
    deliver_buf(s, &b);
  xcm__buf_free(&b);
}

/* A client stanza as it is forwarded: from stamped with the sender's
 * full JID, and no xmlns="jabber:client". */
static int stamp(const xcm_tk_session *s, const char *bytes, size_t len,
                 const char *from, xcm_buf *out) {
  xcm_tk_attr_op ops[2] = {{"xmlns", XCM_NS_CLIENT, NULL, 0},
                           {"from", NULL, from != NULL ? from : s->full, 0}};

  return xcm__tk_rewrite(out, bytes, len, ops, 2);
}

/* ---- ending sessions ----------------------------------------------- */

static void broadcast_unavailable(xcm_tk_session *s, int self_too) {
  xcm_testkit *kit = s->kit;
  xcm_buf snap, b;
  size_t i;

  xcm__buf_init(&snap, kit->ctx.alloc);
  xcm__buf_init(&b, kit->ctx.alloc);
  collect(s, "from", self_too, &snap);
  s->available = 0;
  xcm__buf_reset(&s->presence);
  if (xcm__buf_append_str(&b, "<presence type=\"unavailable\"") == 0 &&
      xcm__xml_attr(&b, "from", s->full) == 0 &&
      xcm__buf_append_str(&b, "/>") == 0) {
    for (i = 0; i < snap_count(&snap); i++) {
      rcpt r = snap_at(&snap, i);

      deliver_to(r.s, r.to_full, b.data, b.len);
    }
  }
  xcm__buf_free(&b);
  snap_free(&snap);
}

void xcm__tk_session_end(xcm_tk_session *s, int self_too) {
  if (s->dead)
    return;
  xcm__tk_session_hold(s);
  /* Openfire sends it for a session that is available, and for one that
   * never was (capture f), but not again after an explicit one. */
  if (s->full != NULL && (s->available || !s->was_available))
    broadcast_unavailable(s, self_too);
  if (!s->dead) {
    xcm__log(&s->kit->ctx, XCM_LOG_DEBUG, "testkit: session %s (%s) closed",
             s->sid, addr_of(s));
    xcm__tk_event(s->kit, XCM_TESTKIT_SESSION_CLOSED, NULL, s);
  }
  xcm__tk_session_unlink(s);
  xcm__tk_session_release(s);
}

void xcm__tk_session_kick(xcm_tk_session *s, xcm_cond cond) {
  xcm_testkit *kit = s->kit;
  xcm_tk_conn *c;
  xcm_buf b;
  char id[32];
  int err;

  if (s->dead)
    return;
  xcm__tk_session_hold(s);
  xcm__buf_init(&b, kit->ctx.alloc);
  err = xcm__buf_append_str(&b, "<stream:error xmlns:stream=\"" XCM_NS_STREAMS
                                "\"><");
  if (err == 0)
    err = xcm__buf_append_str(&b, xcm_cond_name(cond));
  if (err == 0)
    err = xcm__buf_append_str(&b, " xmlns=\"" XCM_NS_STREAM_ERRORS
                                  "\"/></stream:error>");
  if (err == 0)
    xcm__tk_deliver(s, b.data, b.len, 1);
  if (s->group != NULL && !s->dead &&
      (c = xcm__tk_group_pick(s->group, s->sid)) != NULL) {
    xcm__buf_reset(&b);
    xcm__tk_iq_id(kit, id, sizeof(id));
    err = xcm__buf_append_str(&b, "<iq type=\"set\"");
    if (err == 0)
      err = xcm__xml_attr(&b, "id", id);
    if (err == 0)
      err = xcm__xml_attr(&b, "from", kit->domain);
    if (err == 0)
      err = xcm__xml_attr(&b, "to", s->group->name);
    if (err == 0)
      err =
          xcm__buf_append_str(&b, "><session xmlns=\"" XCM_NS_CM_PROTOCOL "\"");
    if (err == 0)
      err = xcm__xml_attr(&b, "id", s->sid);
    if (err == 0)
      err = xcm__buf_append_str(&b, "><close/></session></iq>");
    if (err == 0 && xcm__tk_conn_write(c, b.data, b.len) == 0)
      kit->stats.closes_from_server++;
  }
  xcm__buf_free(&b);
  /* Openfire still routes the unavailable presence to the closed session
   * after the close iq (capture c). */
  xcm__tk_session_end(s, 1);
  xcm__tk_session_release(s);
}

/* ---- authentication and binding ------------------------------------ */

xcm_tk_user *xcm__tk_check_password(xcm_testkit *kit, const char *name,
                                    size_t len, const char *password,
                                    size_t plen) {
  xcm_tk_user *u = xcm__tk_user(kit, name, len);
  char *n;

  if (u == NULL && kit->opt.open_accounts && len > 0 && len < 1024 &&
      memchr(password, '\0', plen) == NULL) {
    n = xcm__strndup(kit->ctx.alloc, name, len);
    if (n != NULL && strpbrk(n, "\"&'/:<>@ \t\r\n") == NULL &&
        xcm__xml_chars_valid(n, len)) {
      char *p = xcm__strndup(kit->ctx.alloc, password, plen);

      if (p != NULL && xcm__tk_user_add(kit, n, p, 0, &u) != 0)
        u = NULL;
      xcm__free(kit->ctx.alloc, p);
    }
    xcm__free(kit->ctx.alloc, n);
    return u;
  }
  if (u == NULL || u->anonymous || u->password == NULL ||
      strlen(u->password) != plen || memcmp(u->password, password, plen) != 0)
    return NULL;
  return u;
}

void xcm__tk_authed(xcm_tk_session *s, xcm_tk_user *u) {
  s->authed = 1;
  s->user = u;
  u->refs++;
  s->kit->stats.auth_ok++;
}

int xcm__tk_bind(xcm_tk_session *s, const char *resource, size_t len) {
  xcm_testkit *kit = s->kit;
  const xcm_allocator *a = kit->ctx.alloc;
  char gen[XCM_TK_ID_LEN + 1];
  xcm_tk_session *old;
  size_t ulen, dlen;
  char *full;

  if (s->full != NULL || s->user == NULL)
    return XCM_EBUSY;
  while (len > 0 && (*resource == ' ' || *resource == '\t' ||
                     *resource == '\n' || *resource == '\r')) {
    resource++;
    len--;
  }
  while (len > 0 && (resource[len - 1] == ' ' || resource[len - 1] == '\t' ||
                     resource[len - 1] == '\n' || resource[len - 1] == '\r'))
    len--;
  if (len == 0) {
    xcm__tk_random_id(kit, gen, XCM_TK_ID_LEN);
    resource = gen;
    len = XCM_TK_ID_LEN;
  }
  if (len > 1023 || memchr(resource, '\0', len) != NULL ||
      !xcm__xml_chars_valid(resource, len))
    return XCM_EINVAL;
  ulen = strlen(s->user->name);
  dlen = strlen(kit->domain);
  full = xcm__alloc(a, ulen + dlen + len + 3);
  if (full == NULL)
    return XCM_ENOMEM;
  snprintf(full, ulen + dlen + len + 3, "%s@%s/%.*s", s->user->name,
           kit->domain, (int)len, resource);
  /* Openfire's default: the newcomer wins and the older session is
   * closed with a conflict stream error (capture c). */
  old = by_full(kit, full);
  if (old != NULL && old != s)
    xcm__tk_session_kick(old, XCM_COND_CONFLICT);
  if (s->dead || by_full(kit, full) != NULL) {
    xcm__free(a, full);
    return XCM_EBUSY;
  }
  s->full = full;
  s->by_jid.key = full;
  if (xcm__map_put(&kit->jids, &s->by_jid) != 0) {
    s->full = NULL;
    xcm__free(a, full);
    return XCM_ENOMEM;
  }
  s->unext = s->user->sessions;
  if (s->unext != NULL)
    s->unext->uprev = s;
  s->uprev = NULL;
  s->user->sessions = s;
  xcm__tk_event(kit, XCM_TESTKIT_SESSION_BOUND, NULL, s);
  return 0;
}

static void on_bind(xcm_tk_session *s, const xcm_xml_node *el,
                    const char *bytes, size_t len, const xcm_xml_node *bind) {
  const xcm_xml_node *res = xcm__xml_node_child(bind, NULL, "resource");
  char *to = xcm__strndup(s->kit->ctx.alloc, s->addr, strlen(s->addr));
  xcm_buf b;
  int err;

  if (to == NULL) {
    bounce(s, el, bytes, len, &E_INTERNAL);
    return;
  }
  err = xcm__tk_bind(s, res != NULL ? res->text : "",
                     res != NULL ? res->text_len : 0);
  if (err == XCM_EINVAL)
    bounce(s, el, bytes, len, &E_BAD_REQUEST);
  else if (err == XCM_EBUSY)
    bounce(s, el, bytes, len, s->full != NULL ? &E_NOT_ALLOWED : &E_CONFLICT);
  else if (err != 0)
    bounce(s, el, bytes, len, &E_INTERNAL);
  if (err != 0) {
    xcm__free(s->kit->ctx.alloc, to);
    return;
  }
  xcm__buf_init(&b, s->kit->ctx.alloc);
  err = xcm__buf_append_str(&b, "<bind xmlns=\"" XCM_NS_BIND "\"><jid>");
  if (err == 0)
    err = xcm__xml_escape_text(&b, s->full, strlen(s->full));
  if (err == 0)
    err = xcm__buf_append_str(&b, "</jid></bind>");
  /* Addressed to DOMAIN/SID, as Openfire does before the bind. */
  if (err == 0)
    iq_result(s, el, to, b.data, b.len);
  xcm__buf_free(&b);
  xcm__free(s->kit->ctx.alloc, to);
}

static const char *child_text(const xcm_xml_node *n, const char *name,
                              size_t *len) {
  const xcm_xml_node *c = xcm__xml_node_child(n, NULL, name);

  if (c == NULL)
    return NULL;
  *len = c->text_len;
  return c->text;
}

/* XEP-0078 with a plaintext password; authentication and binding in one
 * step. */
static void on_iq_auth(xcm_tk_session *s, const xcm_xml_node *el,
                       const char *bytes, size_t len, const xcm_xml_node *q) {
  xcm_testkit *kit = s->kit;
  const char *type = xcm__xml_node_attr(el, "type");
  const char *user, *pass, *res;
  size_t ulen = 0, plen = 0, rlen = 0;
  xcm_tk_user *u;
  xcm_buf b;
  int err;

  if (!kit->opt.client_policy.legacy_auth) {
    bounce(s, el, bytes, len, &E_UNAVAILABLE);
    return;
  }
  if (s->authed) {
    bounce(s, el, bytes, len, &E_NOT_ALLOWED);
    return;
  }
  user = child_text(q, "username", &ulen);
  if (eq(type, "get")) {
    xcm__buf_init(&b, kit->ctx.alloc);
    err = xcm__buf_append_str(&b, "<query xmlns=\"" NS_IQ_AUTH "\">");
    if (err == 0 && user != NULL && ulen > 0) {
      err = xcm__buf_append_str(&b, "<username>");
      if (err == 0)
        err = xcm__xml_escape_text(&b, user, ulen);
      if (err == 0)
        err = xcm__buf_append_str(&b, "</username>");
    } else if (err == 0) {
      err = xcm__buf_append_str(&b, "<username/>");
    }
    if (err == 0)
      err = xcm__buf_append_str(&b, "<password/><resource/></query>");
    if (err == 0)
      iq_result(s, el, s->addr, b.data, b.len);
    xcm__buf_free(&b);
    return;
  }
  pass = child_text(q, "password", &plen);
  res = child_text(q, "resource", &rlen);
  if (user == NULL || pass == NULL || res == NULL || ulen == 0 || rlen == 0) {
    bounce(s, el, bytes, len, &E_NOT_ACCEPTABLE);
    return;
  }
  u = xcm__tk_check_password(kit, user, ulen, pass, plen);
  if (u == NULL) {
    kit->stats.auth_failed++;
    bounce(s, el, bytes, len, &E_NOT_AUTHORIZED);
    return;
  }
  xcm__tk_authed(s, u);
  err = xcm__tk_bind(s, res, rlen);
  if (err != 0)
    bounce(s, el, bytes, len, err == XCM_EINVAL ? &E_BAD_REQUEST : &E_CONFLICT);
  else
    iq_result(s, el, s->full, NULL, 0);
}

/* XEP-0077: a new account before authentication, a new password after. */
static void on_register(xcm_tk_session *s, const xcm_xml_node *el,
                        const char *bytes, size_t len, const xcm_xml_node *q) {
  xcm_testkit *kit = s->kit;
  const char *user, *pass;
  size_t ulen = 0, plen = 0;
  xcm_tk_user *u;
  xcm_buf b;
  char *n, *p;
  int err;

  if (!kit->opt.client_policy.registration) {
    bounce(s, el, bytes, len, &E_NOT_ALLOWED);
    return;
  }
  if (eq(xcm__xml_node_attr(el, "type"), "get")) {
    xcm__buf_init(&b, kit->ctx.alloc);
    err = xcm__buf_append_str(&b, "<query xmlns=\"" NS_IQ_REGISTER "\">");
    if (err == 0 && s->user != NULL) {
      err = xcm__buf_append_str(&b, "<registered/><username>");
      if (err == 0)
        err = xcm__xml_escape_text(&b, s->user->name, strlen(s->user->name));
      if (err == 0)
        err = xcm__buf_append_str(&b, "</username>");
    } else if (err == 0) {
      err = xcm__buf_append_str(&b, "<username/>");
    }
    if (err == 0)
      err = xcm__buf_append_str(&b, "<password/></query>");
    if (err == 0)
      iq_result(s, el, addr_of(s), b.data, b.len);
    xcm__buf_free(&b);
    return;
  }
  if (xcm__xml_node_child(q, NULL, "remove") != NULL) {
    bounce(s, el, bytes, len, &E_NOT_IMPLEMENTED);
    return;
  }
  user = child_text(q, "username", &ulen);
  pass = child_text(q, "password", &plen);
  if (user == NULL || pass == NULL || ulen == 0 || plen == 0) {
    bounce(s, el, bytes, len, &E_NOT_ACCEPTABLE);
    return;
  }
  n = xcm__strndup(kit->ctx.alloc, user, ulen);
  p = xcm__strndup(kit->ctx.alloc, pass, plen);
  if (n == NULL || p == NULL || strlen(n) != ulen || strlen(p) != plen) {
    err = XCM_EINVAL;
  } else if (s->user != NULL) {
    err = strcmp(n, s->user->name) != 0 ? XCM_EAUTH
                                        : xcm_testkit_add_account(kit, n, p);
  } else {
    u = xcm__tk_user(kit, n, ulen);
    err = u != NULL ? XCM_EBUSY : xcm_testkit_add_account(kit, n, p);
  }
  xcm__free(kit->ctx.alloc, n);
  xcm__free(kit->ctx.alloc, p);
  if (err == XCM_EBUSY)
    bounce(s, el, bytes, len, &E_CONFLICT);
  else if (err == XCM_EAUTH)
    bounce(s, el, bytes, len, &E_NOT_ALLOWED);
  else if (err != 0)
    bounce(s, el, bytes, len, &E_NOT_ACCEPTABLE);
  else
    iq_result(s, el, addr_of(s), NULL, 0);
}

/* ---- the roster ---------------------------------------------------- */

static void on_roster(xcm_tk_session *s, const xcm_xml_node *el,
                      const char *bytes, size_t len, const xcm_xml_node *q) {
  xcm_testkit *kit = s->kit;
  const xcm_xml_node *item;
  const xcm_tk_item *it;
  xcm_buf b;
  int err = 0;

  if (eq(xcm__xml_node_attr(el, "type"), "set")) {
    const char *jid, *sub;

    item = xcm__xml_node_child(q, NULL, "item");
    jid = item != NULL ? xcm__xml_node_attr(item, "jid") : NULL;
    if (jid == NULL) {
      bounce(s, el, bytes, len, &E_BAD_REQUEST);
      return;
    }
    sub = xcm__xml_node_attr(item, "subscription");
    if (eq(sub, "remove")) {
      xcm_tk_item **pp, *gone;

      for (pp = &s->user->roster; *pp != NULL; pp = &(*pp)->next) {
        if (strcmp((*pp)->jid, jid) == 0) {
          gone = *pp;
          *pp = gone->next;
          xcm__free(kit->ctx.alloc, gone->jid);
          xcm__free(kit->ctx.alloc, gone->name);
          xcm__free(kit->ctx.alloc, gone);
          break;
        }
      }
    } else {
      const char *cur = "none";

      for (it = s->user->roster; it != NULL; it = it->next)
        if (strcmp(it->jid, jid) == 0)
          cur = it->sub;
      /* A client names items; subscriptions are the server's. */
      err = xcm_testkit_add_roster_item(kit, s->user->name, jid,
                                        xcm__xml_node_attr(item, "name"), cur);
    }
    if (err != 0)
      bounce(s, el, bytes, len, &E_BAD_REQUEST);
    else
      iq_result(s, el, s->full, NULL, 0);
    return;
  }
  xcm__buf_init(&b, kit->ctx.alloc);
  err = xcm__buf_append_str(&b, "<query xmlns=\"" NS_ROSTER "\"");
  if (err == 0)
    err = xcm__buf_append_str(&b, s->user->roster != NULL ? ">" : "/>");
  for (it = s->user->roster; err == 0 && it != NULL; it = it->next) {
    err = xcm__buf_append_str(&b, "<item");
    if (err == 0)
      err = xcm__xml_attr(&b, "jid", it->jid);
    if (err == 0 && it->name != NULL)
      err = xcm__xml_attr(&b, "name", it->name);
    if (err == 0)
      err = xcm__xml_attr(&b, "subscription", it->sub);
    if (err == 0)
      err = xcm__buf_append_str(&b, "/>");
  }
  if (err == 0 && s->user->roster != NULL)
    err = xcm__buf_append_str(&b, "</query>");
  if (err == 0)
    iq_result(s, el, s->full, b.data, b.len);
  xcm__buf_free(&b);
}

/* ---- iq ------------------------------------------------------------ */

static int ns_is(const xcm_xml_node *n, const char *ns) {
  return n != NULL && strcmp(n->ns, ns) == 0;
}

/* What an unauthenticated or unbound session may do: XEP-0078,
 * XEP-0077 and, once authenticated, bind. Anything else ends the session
 * with not-authorized. */
static void iq_before_bind(xcm_tk_session *s, const xcm_xml_node *el,
                           const char *bytes, size_t len) {
  const xcm_xml_node *child = el->children;
  const char *type = xcm__xml_node_attr(el, "type");
  int req = eq(type, "get") || eq(type, "set");

  if (req && to_server(s, xcm__xml_node_attr(el, "to"))) {
    if (ns_is(child, NS_IQ_AUTH) && !s->authed) {
      on_iq_auth(s, el, bytes, len, child);
      return;
    }
    if (ns_is(child, NS_IQ_REGISTER)) {
      on_register(s, el, bytes, len, child);
      return;
    }
    if (s->authed && eq(type, "set") && ns_is(child, XCM_NS_BIND) &&
        strcmp(child->name, "bind") == 0) {
      on_bind(s, el, bytes, len, child);
      return;
    }
  }
  xcm__tk_session_kick(s, XCM_COND_NOT_AUTHORIZED);
}

static void on_iq(xcm_tk_session *s, const xcm_xml_node *el, const char *bytes,
                  size_t len) {
  xcm_testkit *kit = s->kit;
  const xcm_xml_node *child = el->children;
  const char *type = xcm__xml_node_attr(el, "type");
  const char *to = xcm__xml_node_attr(el, "to");
  int req = eq(type, "get") || eq(type, "set");
  xcm_tk_session *t;
  jid_parts j;

  if (s->full == NULL) {
    iq_before_bind(s, el, bytes, len);
    return;
  }
  if (!req && !eq(type, "result") && !eq(type, "error")) {
    bounce(s, el, bytes, len, &E_BAD_REQUEST);
    return;
  }
  if (to_server(s, to)) {
    if (!req)
      return; /* answers to the server go nowhere */
    if (child == NULL)
      bounce(s, el, bytes, len, &E_BAD_REQUEST);
    else if (ns_is(child, XCM_NS_SESSION) || ns_is(child, NS_PING))
      iq_result(s, el, s->full, NULL, 0);
    else if (ns_is(child, NS_ROSTER))
      on_roster(s, el, bytes, len, child);
    else if (ns_is(child, NS_IQ_REGISTER))
      on_register(s, el, bytes, len, child);
    else if (ns_is(child, XCM_NS_BIND) || ns_is(child, NS_IQ_AUTH))
      bounce(s, el, bytes, len, &E_NOT_ALLOWED);
    else
      bounce(s, el, bytes, len, &E_UNAVAILABLE);
    return;
  }
  jid_split(to, &j);
  t = j.res != NULL ? by_full(kit, to) : NULL;
  if (t != NULL) {
    xcm_buf b;

    xcm__buf_init(&b, kit->ctx.alloc);
    if (stamp(s, bytes, len, NULL, &b) == 0)
      deliver_buf(t, &b);
    xcm__buf_free(&b);
    return;
  }
  /* A bare JID is answered by the server on the user's behalf, and it
   * knows no namespace there; a full JID that is not online is gone. */
  if (req)
    bounce(s, el, bytes, len,
           jid_local(kit, &j) ? &E_UNAVAILABLE : &E_NO_REMOTE);
}

/* ---- offline storage ----------------------------------------------- */

static void stamp_now(char out[32]) {
  uv_timeval64_t tv;
  struct tm tm;
  time_t t;
  size_t len;

  if (uv_gettimeofday(&tv) != 0)
    memset(&tv, 0, sizeof(tv));
  t = (time_t)tv.tv_sec;
  gmtime_r(&t, &tm);
  len = strftime(out, 24, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(out + len, 32 - len, ".%03dZ", (int)(tv.tv_usec / 1000) % 1000);
}

int xcm__tk_offline_store(xcm_testkit *kit, xcm_tk_user *u, const char *bytes,
                          size_t len) {
  xcm_testkit_event ev;
  xcm_tk_offline *m;
  xcm_buf bare;

  if (u->noffline >= kit->opt.offline_max)
    return XCM_ELIMIT;
  m = xcm__alloc(kit->ctx.alloc, sizeof(*m) + len + 1);
  if (m == NULL)
    return XCM_ENOMEM;
  m->next = NULL;
  stamp_now(m->stamp);
  m->len = len;
  memcpy(m->bytes, bytes, len);
  m->bytes[len] = '\0';
  if (u->offline_tail != NULL)
    u->offline_tail->next = m;
  else
    u->offline = m;
  u->offline_tail = m;
  u->noffline++;
  kit->stats.offline_stored++;
  if (kit->opt.on_event != NULL && !kit->closing) {
    xcm__buf_init(&bare, kit->ctx.alloc);
    if (xcm__buf_append_str(&bare, u->name) == 0 &&
        xcm__buf_append_char(&bare, '@') == 0 &&
        xcm__buf_append_str(&bare, kit->domain) == 0 &&
        xcm__buf_append_char(&bare, '\0') == 0) {
      memset(&ev, 0, sizeof(ev));
      ev.type = XCM_TESTKIT_OFFLINE_STORED;
      ev.jid = bare.data;
      kit->opt.on_event(kit->opt.event_ud, kit, &ev);
    }
    xcm__buf_free(&bare);
  }
  return 0;
}

/* Stored messages go out with a XEP-0203 delay as their last child, as
 * Openfire delivers them (capture d2). */
static void deliver_offline(xcm_tk_session *s) {
  xcm_testkit *kit = s->kit;
  xcm_tk_user *u = s->user;
  xcm_tk_offline *m = u->offline, *next;
  xcm_buf delay, b;

  /* Detached first: delivering runs callbacks that may store more. */
  u->offline = u->offline_tail = NULL;
  u->noffline = 0;
  xcm__buf_init(&delay, kit->ctx.alloc);
  xcm__buf_init(&b, kit->ctx.alloc);
  for (; m != NULL; m = next) {
    next = m->next;
    xcm__buf_reset(&delay);
    xcm__buf_reset(&b);
    if (xcm__buf_append_str(&delay, "<delay xmlns=\"" NS_DELAY "\"") == 0 &&
        xcm__xml_attr(&delay, "from", kit->domain) == 0 &&
        xcm__xml_attr(&delay, "stamp", m->stamp) == 0 &&
        xcm__buf_append_str(&delay, "/>") == 0 &&
        xcm__tk_add_child(&b, m->bytes, m->len, delay.data, delay.len) == 0) {
      deliver_buf(s, &b);
      kit->stats.offline_delivered++;
    }
    xcm__free(kit->ctx.alloc, m);
  }
  xcm__buf_free(&delay);
  xcm__buf_free(&b);
}

/* ---- messages ------------------------------------------------------ */

/* Where a message to a bare JID goes: the available resource of highest
 * (non-negative) priority, and among equals the one that became
 * available last. */
static xcm_tk_session *best_resource(const xcm_tk_user *u) {
  xcm_tk_session *t, *best = NULL;

  for (t = u->sessions; t != NULL; t = t->unext) {
    if (!t->available || t->priority < 0)
      continue;
    if (best == NULL || t->priority > best->priority ||
        (t->priority == best->priority && t->avail_seq > best->avail_seq))
      best = t;
  }
  return best;
}

static void on_message(xcm_tk_session *s, const xcm_xml_node *el,
                       const char *bytes, size_t len) {
  xcm_testkit *kit = s->kit;
  const char *to = xcm__xml_node_attr(el, "to");
  const char *type = xcm__xml_node_attr(el, "type");
  int storable = type == NULL || eq(type, "normal") || eq(type, "chat");
  xcm_tk_session *t = NULL;
  xcm_tk_user *u;
  xcm_buf b, own;
  jid_parts j;

  xcm__buf_init(&b, kit->ctx.alloc);
  xcm__buf_init(&own, kit->ctx.alloc);
  if (to == NULL) {
    /* No to: for the sender's own account. */
    if (bare_of(s, &own) != 0)
      goto done;
    to = own.data;
  }
  jid_split(to, &j);
  if (!jid_local(kit, &j)) {
    bounce(s, el, bytes, len, &E_NO_REMOTE);
    goto done;
  }
  u = j.node != NULL ? xcm__tk_user(kit, j.node, j.node_len) : NULL;
  if (u == NULL) {
    bounce(s, el, bytes, len, &E_UNAVAILABLE);
    goto done;
  }
  if (stamp(s, bytes, len, NULL, &b) != 0)
    goto done;
  if (j.res != NULL)
    t = by_full(kit, to);
  if (t == NULL && (j.res == NULL || storable))
    t = best_resource(u);
  if (t != NULL) {
    deliver_buf(t, &b);
  } else if (storable && !u->anonymous &&
             xcm__tk_offline_store(kit, u, b.data, b.len) == 0) {
    /* stored */
  } else if (storable || eq(type, "groupchat")) {
    bounce(s, el, bytes, len, &E_UNAVAILABLE);
  }
done:
  xcm__buf_free(&b);
  xcm__buf_free(&own);
}

/* ---- presence ------------------------------------------------------ */

static int parse_priority(const xcm_xml_node *el) {
  const xcm_xml_node *p = xcm__xml_node_child(el, NULL, "priority");
  char tmp[8];
  long v;

  if (p == NULL || p->text_len == 0 || p->text_len >= sizeof(tmp))
    return 0;
  memcpy(tmp, p->text, p->text_len);
  tmp[p->text_len] = '\0';
  v = strtol(tmp, NULL, 10);
  return v < -128 ? -128 : v > 127 ? 127 : (int)v;
}

/* A presence with a to: straight to that JID's resources. Subscription
 * requests carry the sender's bare JID (RFC 6121, 3.1.2). */
static void directed_presence(xcm_tk_session *s, const xcm_xml_node *el,
                              const char *bytes, size_t len, const char *to) {
  xcm_testkit *kit = s->kit;
  const char *type = xcm__xml_node_attr(el, "type");
  int subscription = eq(type, "subscribe") || eq(type, "subscribed") ||
                     eq(type, "unsubscribe") || eq(type, "unsubscribed");
  xcm_buf b, bare;
  xcm_tk_session *t;
  xcm_tk_user *u;
  jid_parts j;

  jid_split(to, &j);
  if (!jid_local(kit, &j) || j.node == NULL || eq(type, "probe"))
    return;
  xcm__buf_init(&b, kit->ctx.alloc);
  xcm__buf_init(&bare, kit->ctx.alloc);
  if (subscription && bare_of(s, &bare) != 0)
    goto done;
  if (stamp(s, bytes, len, subscription ? bare.data : NULL, &b) != 0)
    goto done;
  if (j.res != NULL) {
    t = by_full(kit, to);
    if (t != NULL)
      deliver_buf(t, &b);
  } else if ((u = xcm__tk_user(kit, j.node, j.node_len)) != NULL) {
    xcm_buf snap;
    size_t i;

    xcm__buf_init(&snap, kit->ctx.alloc);
    for (t = u->sessions; t != NULL; t = t->unext)
      if (t->available)
        snap_add(&snap, t, 1);
    for (i = 0; i < snap_count(&snap); i++)
      deliver_buf(snap_at(&snap, i).s, &b);
    snap_free(&snap);
  }
done:
  xcm__buf_free(&b);
  xcm__buf_free(&bare);
}

static void on_presence(xcm_tk_session *s, const xcm_xml_node *el,
                        const char *bytes, size_t len) {
  xcm_testkit *kit = s->kit;
  const char *type = xcm__xml_node_attr(el, "type");
  const char *to = xcm__xml_node_attr(el, "to");
  xcm_buf b, snap;
  size_t i;
  int initial;

  if (to != NULL) {
    directed_presence(s, el, bytes, len, to);
    return;
  }
  if (type != NULL && !eq(type, "unavailable"))
    return; /* probes, errors and subscriptions without a to */
  xcm__buf_init(&b, kit->ctx.alloc);
  xcm__buf_init(&snap, kit->ctx.alloc);
  if (stamp(s, bytes, len, NULL, &b) != 0)
    goto done;
  if (type != NULL) { /* unavailable */
    if (!s->available)
      goto done;
    collect(s, "from", 0, &snap);
    s->available = 0;
    xcm__buf_reset(&s->presence);
    for (i = 0; i < snap_count(&snap); i++) {
      rcpt r = snap_at(&snap, i);

      deliver_to(r.s, r.to_full, b.data, b.len);
    }
    goto done;
  }
  initial = !s->available;
  xcm__buf_reset(&s->presence);
  if (xcm__buf_append(&s->presence, b.data, b.len) != 0)
    goto done;
  s->available = 1;
  s->was_available = 1;
  s->priority = parse_priority(el);
  s->avail_seq = ++kit->seq;
  /* Openfire 4.1.6 does not echo the presence to the resource that sent
   * it (main capture). */
  collect(s, "from", 0, &snap);
  for (i = 0; i < snap_count(&snap); i++) {
    rcpt r = snap_at(&snap, i);

    deliver_to(r.s, r.to_full, b.data, b.len);
  }
  snap_free(&snap);
  xcm__buf_init(&snap, kit->ctx.alloc);
  if (!initial)
    goto done;
  /* The presence of everyone s sees, addressed to s's full JID. */
  collect(s, "to", 0, &snap);
  for (i = 0; i < snap_count(&snap) && !s->dead; i++) {
    rcpt r = snap_at(&snap, i);
    xcm_tk_attr_op op = {"to", NULL, s->full, 0};
    xcm_buf p;

    if (r.s->dead || !r.s->available || r.s->presence.len == 0)
      continue;
    xcm__buf_init(&p, kit->ctx.alloc);
    if (xcm__tk_rewrite(&p, r.s->presence.data, r.s->presence.len, &op, 1) == 0)
      deliver_buf(s, &p);
    xcm__buf_free(&p);
  }
  if (!s->dead && s->priority >= 0 && s->user->offline != NULL)
    deliver_offline(s);
  if (!s->dead)
    xcm__tk_event(kit, XCM_TESTKIT_SESSION_AVAILABLE, NULL, s);
done:
  xcm__buf_free(&b);
  snap_free(&snap);
}

/* ---- dispatch ------------------------------------------------------ */

int xcm__tk_session_input(xcm_tk_session *s, const xcm_xml_node *el,
                          const char *bytes, size_t len) {
  const char *name = el->name;

  if (s->dead)
    return 0;
  if (strcmp(el->ns, XCM_NS_SASL) == 0 &&
      (strcmp(name, "auth") == 0 || strcmp(name, "response") == 0 ||
       strcmp(name, "abort") == 0)) {
    if (s->group == NULL)
      return XCM_EPROTO;
    xcm__tk_session_hold(s);
    xcm__tk_sasl(s, el);
    xcm__tk_session_release(s);
    return 0;
  }
  if (strcmp(name, "message") != 0 && strcmp(name, "presence") != 0 &&
      strcmp(name, "iq") != 0)
    return XCM_EPROTO;
  xcm__tk_session_hold(s);
  if (strcmp(name, "iq") == 0)
    on_iq(s, el, bytes, len);
  else if (s->full == NULL)
    xcm__tk_session_kick(s, XCM_COND_NOT_AUTHORIZED);
  else if (strcmp(name, "message") == 0)
    on_message(s, el, bytes, len);
  else
    on_presence(s, el, bytes, len);
  xcm__tk_session_release(s);
  return 0;
}
