#include "session/csi.h"

#include <stdio.h>
#include <string.h>

#include "core/ctx.h"
#include "proto/route.h"
#include "proto/stream.h"
#include "util/alloc.h"
#include "xcm/error.h"

#define NS_CLIENT "jabber:client"
#define NS_CHATSTATES "http://jabber.org/protocol/chatstates"

/* Payloads a client must decrypt to know what they say: always urgent,
 * like a body. */
static const char *const encrypted_ns[] = {
    "eu.siacs.conversations.axolotl", /* OMEMO 0.3 (Conversations) */
    "urn:xmpp:omemo:2",               /* OMEMO */
    "jabber:x:encrypted",             /* legacy OpenPGP (XEP-0027) */
    "urn:xmpp:openpgp:0",             /* OX (XEP-0373) */
};

#define NELEMS(a) (sizeof(a) / sizeof((a)[0]))

/* ---- the operator's rules ---------------------------------------------- */

static int is_space(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* A namespace this layer decides itself, which no rule may move. */
static int builtin(const char *ns, size_t len) {
  size_t i;

  if (len == strlen(NS_CHATSTATES) && memcmp(ns, NS_CHATSTATES, len) == 0)
    return 1;
  for (i = 0; i < NELEMS(encrypted_ns); i++)
    if (len == strlen(encrypted_ns[i]) && memcmp(ns, encrypted_ns[i], len) == 0)
      return 1;
  return 0;
}

static int fail(char *why, size_t whylen, const char *list, const char *what,
                const char *ns, size_t len) {
  if (why != NULL && whylen > 0)
    snprintf(why, whylen, "%s: %s%s%.*s%s", list, what, ns ? " (\"" : "",
             ns ? (int)(len > 80 ? 80 : len) : 0, ns ? ns : "",
             ns ? "\")" : "");
  return XCM_EINVAL;
}

/* One list into its entries; none may repeat one of other's. */
static int parse_list(const char *s, const char *list, xcm_csi_ns *out,
                      unsigned *n, const xcm_csi_ns *other, unsigned nother,
                      char *why, size_t whylen) {
  const char *p = s, *a, *z;
  size_t len;
  unsigned i;

  *n = 0;
  if (s == NULL)
    return 0;
  while (is_space(*p))
    p++;
  if (*p == '\0')
    return 0;
  for (;;) {
    a = p;
    while (*p != '\0' && *p != ',')
      p++;
    z = p;
    while (a < z && is_space(*a))
      a++;
    while (z > a && is_space(z[-1]))
      z--;
    len = (size_t)(z - a);
    if (len == 0)
      return fail(why, whylen, list,
                  "an empty entry: namespaces separated by commas", NULL, 0);
    for (const char *c = a; c < z; c++)
      if ((unsigned char)*c <= ' ' || *c == '<' || *c == '>' || *c == '"' ||
          *c == '\'' || *c == '&')
        return fail(why, whylen, list,
                    "white space, a control character or one of <>\"'& in a "
                    "namespace",
                    a, len);
    if (builtin(a, len))
      return fail(why, whylen, list,
                  "chat states and encrypted payloads are decided by the CM, "
                  "not by a rule",
                  a, len);
    for (i = 0; i < nother; i++)
      if (other[i].len == len && memcmp(other[i].ns, a, len) == 0)
        return fail(why, whylen, list, "also in the other list", a, len);
    for (i = 0; i < *n; i++)
      if (out[i].len == len && memcmp(out[i].ns, a, len) == 0)
        return fail(why, whylen, list, "named twice", a, len);
    if (*n == XCM_CSI_MAX_NS)
      return fail(why, whylen, list, "more than 16 namespaces", NULL, 0);
    out[*n].ns = a;
    out[*n].len = len;
    (*n)++;
    if (*p == '\0')
      return 0;
    p++;
  }
}

int xcm__csi_rules_parse(xcm_csi_rules *out, const char *hold,
                         const char *urgent, const char *const which[2],
                         char *why, size_t whylen) {
  xcm_csi_rules tmp;
  xcm_csi_rules *r = out != NULL ? out : &tmp;
  int err;

  memset(r, 0, sizeof *r);
  err = parse_list(hold, which[0], r->hold, &r->nhold, NULL, 0, why, whylen);
  if (err == 0)
    err = parse_list(urgent, which[1], r->urgent, &r->nurgent, r->hold,
                     r->nhold, why, whylen);
  if (err != 0)
    memset(r, 0, sizeof *r);
  return err;
}

/* ---- the classifier ----------------------------------------------------- */

static int in_rules(const char *ns, const xcm_csi_ns *list, unsigned n) {
  size_t len = strlen(ns);
  unsigned i;

  for (i = 0; i < n; i++)
    if (list[i].len == len && memcmp(list[i].ns, ns, len) == 0)
      return 1;
  return 0;
}

static int encrypted(const char *ns) {
  size_t i;

  for (i = 0; i < NELEMS(encrypted_ns); i++)
    if (strcmp(ns, encrypted_ns[i]) == 0)
      return 1;
  return 0;
}

typedef struct classify {
  const xcm_csi_rules *rules;
  char *key;
  size_t keycap, key_len;
  int message;
  xcm_csi_kind kind;
} classify;

/* The stanza and its children's names, namespaces and text; the
 * children's attributes are never read. */
static int levels(void *ud, const char *ns, const char *name) {
  (void)ud;
  (void)ns;
  (void)name;
  return 2 | XCM_XML_BARE_LAST;
}

static xcm_csi_kind message_kind(const classify *c, const xcm_xml_node *m) {
  const char *type = xcm__xml_node_attr(m, "type");
  const xcm_xml_node *ch;
  int holdable = 0;

  /* An error tells the sender something failed: it matters now. */
  if (type != NULL && strcmp(type, "error") == 0)
    return XCM_CSI_URGENT;
  for (ch = m->children; ch != NULL; ch = ch->next) {
    if ((strcmp(ch->name, "body") == 0 && strcmp(ch->ns, NS_CLIENT) == 0) ||
        encrypted(ch->ns) ||
        in_rules(ch->ns, c->rules->urgent, c->rules->nurgent))
      return XCM_CSI_URGENT;
    if (strcmp(ch->ns, NS_CHATSTATES) == 0 ||
        in_rules(ch->ns, c->rules->hold, c->rules->nhold))
      holdable = 1;
  }
  return holdable ? XCM_CSI_HOLD : XCM_CSI_URGENT;
}

static xcm_csi_kind presence_kind(classify *c, const xcm_xml_node *p) {
  const char *type = xcm__xml_node_attr(p, "type");
  const char *from = xcm__xml_node_attr(p, "from");
  const xcm_xml_node *ch;
  size_t n;

  for (ch = p->children; ch != NULL; ch = ch->next)
    if (in_rules(ch->ns, c->rules->urgent, c->rules->nurgent))
      return XCM_CSI_URGENT;
  /* Subscription requests and answers, and errors: someone waits. */
  if (type != NULL && strcmp(type, "unavailable") != 0)
    return XCM_CSI_URGENT;
  n = from != NULL ? strlen(from) : 0;
  if (from == NULL || n > c->keycap)
    return XCM_CSI_HOLD;
  memcpy(c->key, from, n);
  c->key_len = n;
  return XCM_CSI_SUPERSEDE;
}

static int classify_one(void *ud, const xcm_xml_stanza *s) {
  classify *c = ud;

  if (s->root == NULL || strcmp(s->ns, NS_CLIENT) != 0)
    return 0;
  if (strcmp(s->name, "message") == 0) {
    c->message = 1;
    c->kind = message_kind(c, s->root);
  } else if (strcmp(s->name, "presence") == 0) {
    c->kind = presence_kind(c, s->root);
  }
  return 0;
}

xcm_csi_kind xcm__csi_classify(xcm_xml_pool *pool, const xcm_csi_rules *rules,
                               const char *bytes, size_t len, char *key,
                               size_t keycap, size_t *key_len, int *message) {
  static const xcm_xml_nsdecl client_decls[] = {{"stream", XCM_NS_STREAMS},
                                                {"", NS_CLIENT}};
  classify c;
  int err;

  memset(&c, 0, sizeof c);
  c.rules = rules;
  c.key = key;
  c.keycap = keycap;
  c.kind = XCM_CSI_URGENT;
  *key_len = 0;
  *message = 0;
  if (len > XCM_CSI_MAX_READ) {
    /* Urgent unread; whether it is a message still counts at an end. */
    *message = xcm__xml_qname_length(bytes, len) == 7 &&
               memcmp(bytes + 1, "message", 7) == 0;
    return XCM_CSI_URGENT;
  }
  /* Read as the client will read it: in its stream's namespaces. */
  err = xcm__xml_read_element(pool, bytes, len, client_decls, 2, 64, 1, levels,
                              classify_one, &c);
  *message = c.message;
  if (err != 0)
    return XCM_CSI_URGENT;
  *key_len = c.key_len;
  return c.kind;
}

/* ---- the queue ---------------------------------------------------------- */

enum { E_DEAD = 1, E_MESSAGE = 2, E_KEYED = 4, E_URGENT = 8 };

/* Before each stanza in q: its length, its key's (after the stanza's
 * bytes), and flags. */
typedef struct ent {
  uint32_t len;
  uint16_t key_len;
  uint16_t flags;
} ent;

#define HDR sizeof(ent)

xcm_csi *xcm__csi_new(const xcm_allocator *a) {
  return xcm__calloc(a, sizeof(xcm_csi));
}

static void forget(const xcm_allocator *a, xcm_csi *csi) {
  xcm__free(a, csi->q);
  csi->q = NULL;
  csi->head = csi->len = csi->cap = csi->count = csi->bytes = csi->dead = 0;
}

void xcm__csi_free(const xcm_allocator *a, xcm_csi *csi) {
  if (csi == NULL)
    return;
  forget(a, csi);
  xcm__free(a, csi);
}

size_t xcm__csi_footprint(const xcm_csi *csi) {
  return csi != NULL ? sizeof(*csi) + csi->cap : 0;
}

static ent ent_at(const xcm_csi *csi, uint32_t at) {
  ent e;

  memcpy(&e, csi->q + at, HDR);
  return e;
}

static uint32_t ent_size(const ent *e) {
  return (uint32_t)HDR + e->len + e->key_len;
}

/* Superseded entries go once they take more room than the live ones:
 * each byte is moved at most once for every byte that died, so the cost
 * stays linear in what was held. */
static void compact(xcm_csi *csi) {
  uint32_t at, to = 0, n;
  ent e;

  for (at = csi->head; at < csi->len; at += n) {
    e = ent_at(csi, at);
    n = ent_size(&e);
    if (e.flags & E_DEAD)
      continue;
    memmove(csi->q + to, csi->q + at, n);
    to += n;
  }
  csi->head = 0;
  csi->len = to;
  csi->dead = 0;
}

/* Room for need more bytes at the end. */
static int room(const xcm_allocator *a, xcm_csi *csi, size_t need) {
  size_t used = csi->len - csi->head, cap;
  char *q;

  if (need > UINT32_MAX / 2 - used)
    return XCM_ELIMIT;
  if (csi->len + need <= csi->cap)
    return 0;
  if (csi->head > 0) {
    memmove(csi->q, csi->q + csi->head, used);
    csi->len = (uint32_t)used;
    csi->head = 0;
    if (used + need <= csi->cap)
      return 0;
  }
  cap = csi->cap ? csi->cap : 512;
  while (cap < used + need)
    cap *= 2;
  q = xcm__realloc(a, csi->q, cap);
  if (q == NULL)
    return XCM_ENOMEM;
  csi->q = q;
  csi->cap = (uint32_t)cap;
  return 0;
}

/* Where the live entry with this key waits, as an offset from head, or
 * -1. */
static long find_key(const xcm_csi *csi, const char *key, size_t key_len) {
  uint32_t at;
  ent e;

  for (at = csi->head; at < csi->len; at += ent_size(&e)) {
    e = ent_at(csi, at);
    if ((e.flags & (E_KEYED | E_DEAD)) == E_KEYED && e.key_len == key_len &&
        memcmp(csi->q + at + HDR + e.len, key, key_len) == 0)
      return (long)(at - csi->head);
  }
  return -1;
}

static int push(const xcm_allocator *a, xcm_csi *csi, const char *bytes,
                size_t len, unsigned flags, const char *key, size_t key_len,
                uint32_t max_count, size_t max_bytes, int *superseded) {
  long old = key != NULL ? find_key(csi, key, key_len) : -1;
  uint32_t count = csi->count, held = csi->bytes;
  ent e, o;
  int err;

  *superseded = 0;
  if (key == NULL)
    key_len = 0;
  if (key_len > UINT16_MAX || len > UINT32_MAX / 4)
    return XCM_ELIMIT;
  if (old >= 0) {
    o = ent_at(csi, csi->head + (uint32_t)old);
    count--;
    held -= o.len;
  }
  if (max_count != XCM__OFF && count >= max_count)
    return XCM_ELIMIT;
  if (max_bytes != XCM__OFF && (len > max_bytes || held > max_bytes - len))
    return XCM_ELIMIT;
  err = room(a, csi, HDR + len + key_len);
  if (err != 0)
    return err;
  if (old >= 0) {
    /* room() may have moved the queue to the front: old is from head. */
    uint32_t at = csi->head + (uint32_t)old;

    o = ent_at(csi, at);
    o.flags |= E_DEAD;
    memcpy(csi->q + at, &o, HDR);
    csi->dead += ent_size(&o);
    *superseded = 1;
  }
  e.len = (uint32_t)len;
  e.key_len = (uint16_t)key_len;
  e.flags = (uint16_t)(flags | (key != NULL ? E_KEYED : 0));
  memcpy(csi->q + csi->len, &e, HDR);
  memcpy(csi->q + csi->len + HDR, bytes, len);
  if (key_len > 0)
    memcpy(csi->q + csi->len + HDR + len, key, key_len);
  csi->len += ent_size(&e);
  csi->count = count + 1;
  csi->bytes = held + (uint32_t)len;
  if (csi->dead > csi->len - csi->head - csi->dead)
    compact(csi);
  return 0;
}

int xcm__csi_push(const xcm_allocator *a, xcm_csi *csi, const char *bytes,
                  size_t len, int message, const char *key, size_t key_len,
                  uint32_t max_count, size_t max_bytes, int *superseded) {
  return push(a, csi, bytes, len, message ? E_MESSAGE : 0, key, key_len,
              max_count, max_bytes, superseded);
}

int xcm__csi_pop(xcm_csi *csi, const char **bytes, size_t *len, int *urgent) {
  ent e;

  while (csi->head < csi->len) {
    e = ent_at(csi, csi->head);
    *bytes = csi->q + csi->head + HDR;
    *len = e.len;
    csi->head += ent_size(&e);
    if (e.flags & E_DEAD) {
      csi->dead -= ent_size(&e);
      continue;
    }
    csi->count--;
    csi->bytes -= e.len;
    if (urgent != NULL)
      *urgent = (e.flags & E_URGENT) != 0;
    return 1;
  }
  return 0;
}

/* Call fn with each live entry from head on, oldest first. */
static size_t walk(const xcm_csi *csi,
                   void (*fn)(void *ud, const char *bytes, size_t len,
                              unsigned flags),
                   void *ud) {
  size_t n = 0;
  uint32_t at;
  ent e;

  for (at = csi->head; at < csi->len; at += ent_size(&e)) {
    e = ent_at(csi, at);
    if (e.flags & E_DEAD)
      continue;
    fn(ud, csi->q + at + HDR, e.len, e.flags);
    n++;
  }
  return n;
}

typedef struct drain_ctx {
  void (*fn)(void *ud, const char *bytes, size_t len, int message);
  void *ud;
} drain_ctx;

static void drain_one(void *ud, const char *bytes, size_t len, unsigned flags) {
  drain_ctx *d = ud;

  d->fn(d->ud, bytes, len, (flags & E_MESSAGE) != 0);
}

size_t xcm__csi_drain(const xcm_allocator *a, xcm_csi *csi,
                      void (*fn)(void *ud, const char *bytes, size_t len,
                                 int message),
                      void *ud) {
  drain_ctx d = {fn, ud};
  size_t n = walk(csi, drain_one, &d);

  forget(a, csi);
  return n;
}

/* ---- the protocol ------------------------------------------------------- */

int xcm__csi_flushing(const xcm_csi *csi) {
  return csi != NULL && csi->flushing;
}

int xcm__csi_inactive(xcm_csi **p, const xcm_allocator *a, xcm_counters *st) {
  if (*p != NULL)
    return 0;
  *p = xcm__csi_new(a);
  if (*p == NULL)
    return XCM_ENOMEM;
  if (st != NULL)
    st->csi_now++;
  return 0;
}

static void gone(xcm_csi **p, const xcm_allocator *a, xcm_counters *st) {
  xcm__csi_free(a, *p);
  *p = NULL;
  if (st != NULL)
    st->csi_now--;
}

/* Everything waiting goes out, oldest first. A write may end the client:
 * then xcm__csi_end (from inside it) gave back what was left, and the
 * state goes here. 0, or XCM_ECLOSED when the client ended. */
static int flush(xcm_csi **p, const xcm_allocator *a, xcm_counters *st,
                 const xcm_csi_out *out) {
  xcm_csi *csi = *p;
  const char *bytes;
  size_t len;
  int urgent, err = 0;

  csi->flushing = 1;
  while (!csi->ended && xcm__csi_pop(csi, &bytes, &len, &urgent)) {
    if (!urgent && st != NULL)
      st->csi_flushed++;
    if (out->write(out->ud, bytes, len) != 0) {
      err = XCM_ECLOSED;
      break;
    }
  }
  csi->flushing = 0;
  if (csi->ended) {
    gone(p, a, st);
    return XCM_ECLOSED;
  }
  /* Memory follows activity: an empty queue holds no buffer. (After a
   * failed write what is left stays for xcm__csi_end.) */
  if (csi->count == 0)
    forget(a, csi);
  return err;
}

int xcm__csi_active(xcm_csi **p, const xcm_allocator *a, xcm_counters *st,
                    const xcm_csi_out *out) {
  int err;

  if (*p == NULL)
    return 0;
  err = flush(p, a, st, out);
  if (err == 0)
    gone(p, a, st);
  return err;
}

/* Something must go out now. While stanzas wait, it joins them at the
 * end first, so that it is in one place whatever the flush does: if a
 * write ends the client, it goes back with the rest. 1: taken; 0: the
 * caller writes it (nothing waited, or no memory to queue it: then what
 * waited went first). */
static int flush_with(xcm_csi **p, const xcm_allocator *a, xcm_counters *st,
                      const char *bytes, size_t len, int message,
                      const xcm_csi_out *out) {
  int superseded;

  if ((*p)->count == 0)
    return 0;
  if (bytes != NULL &&
      push(a, *p, bytes, len, E_URGENT | (message ? E_MESSAGE : 0), NULL, 0,
           XCM__OFF, XCM__OFF, &superseded) == 0) {
    flush(p, a, st, out);
    return 1;
  }
  return flush(p, a, st, out) != 0;
}

int xcm__csi_route(xcm_csi **p, const xcm_allocator *a, const xcm_csi_cfg *cfg,
                   xcm_counters *st, xcm_xml_pool *pool, const char *bytes,
                   size_t len, int element, const xcm_csi_out *out) {
  char key[3072]; /* a JID's longest (RFC 7622: 1023 + 1 + 1023 + 1 + 1023) */
  size_t key_len;
  int message, superseded, err;
  xcm_csi_kind kind;

  if (!element) {
    size_t i = 0;

    /* White space (a keepalive) can pass what waits; other text may be
     * stanzas and keeps its place. */
    while (i < len && is_space(bytes[i]))
      i++;
    return i == len ? 0 : flush_with(p, a, st, NULL, 0, 0, out);
  }
  kind = xcm__csi_classify(pool, &cfg->rules, bytes, len, key, sizeof key,
                           &key_len, &message);
  if (kind == XCM_CSI_URGENT)
    return flush_with(p, a, st, bytes, len, message, out);
  err = xcm__csi_push(a, *p, bytes, len, message,
                      kind == XCM_CSI_SUPERSEDE ? key : NULL,
                      kind == XCM_CSI_SUPERSEDE ? key_len : 0, cfg->max_held,
                      cfg->max_held_bytes, &superseded);
  if (err == 0) {
    if (st != NULL) {
      st->csi_held++;
      st->csi_superseded += (unsigned)superseded;
    }
    return 1;
  }
  /* Over a bound (or out of memory): everything goes, this one last. */
  if (st != NULL && err == XCM_ELIMIT)
    st->csi_overflows++;
  return flush_with(p, a, st, bytes, len, message, out);
}

typedef struct end_ctx {
  const xcm_csi_out *out;
  xcm_counters *st;
} end_ctx;

/* What waited when the client ended: a message goes back, the rest is
 * dropped. One pushed only to go out after the others (E_URGENT) was
 * never held: it is not counted as held stanzas are. */
static void end_one(void *ud, const char *bytes, size_t len, unsigned flags) {
  end_ctx *e = ud;
  int held = !(flags & E_URGENT);

  if (flags & E_MESSAGE) {
    if (held && e->st != NULL)
      e->st->csi_returned++;
    e->out->give_back(e->out->ud, bytes, len);
  } else if (held && e->st != NULL) {
    e->st->csi_dropped++;
  }
}

void xcm__csi_end(xcm_csi **p, const xcm_allocator *a, xcm_counters *st,
                  const xcm_csi_out *out) {
  xcm_csi *csi = *p;
  end_ctx e = {out, st};

  if (csi == NULL || csi->ended)
    return;
  walk(csi, end_one, &e);
  if (csi->flushing) {
    /* The entry being written was taken out already: the write path
     * answers for it as for any stanza it writes. Its bytes lie in the
     * buffer, which stays until the flush is over. */
    csi->ended = 1;
    csi->head = csi->len;
    csi->count = csi->bytes = csi->dead = 0;
    return;
  }
  gone(p, a, st);
}
