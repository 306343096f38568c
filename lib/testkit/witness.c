/* The witness: a second, independent reading of every byte a CM sends,
 * held to the strictest rules the protocol allows.
 *
 * The testkit's own reader is the project's reader (xml/reader.c, with
 * its fast scanner), the same code the CM under test uses. A bug there
 * could hide a bug in the CM, so the witness reads the same bytes again
 * with a plain namespace-aware expat parser of its own and checks:
 *
 *   - well-formed XML with namespaces: expat refuses a duplicate
 *     attribute, a duplicate xmlns, two prefixed attributes that expand
 *     to the same name, an unbound prefix;
 *   - restricted XML (RFC 6120 section 11.1): no comment, processing
 *     instruction or document type declaration; no text between stanzas
 *     but white space;
 *   - the header: <stream:stream> in the streams namespace, default
 *     namespace jabber:connectionmanager, to="CM/RES", version="1.0";
 *   - the handshake: once, 40 lowercase hex digits, nothing else in it;
 *     no route or iq before it;
 *   - depth 1 holds only handshake, route and iq in the CM namespace,
 *     starttls and compress (before the handshake);
 *   - a route has a streamid, exactly one element and no text but white
 *     space beside it, and its streamid is a session this CM (the domain
 *     of CM/RES, over all its connections) asked to create, not one of
 *     another CM's;
 *   - a session close or failed names a session this CM created.
 *
 * Every violation goes to xcm__tk_violation(). The witness only watches:
 * what the testkit does with the bytes is the reader's business. It is
 * fed exactly the bytes the reader consumed, and restarted where the
 * reader restarts (STARTTLS, compression). */
#include <expat.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "xcm_config.h"
#include "proto/cmproto.h"
#include "testkit/testkit.h"
#include "util/alloc.h"
#include "xcm/error.h"

/* Cannot occur in XML 1.0, so no namespace name can hold it. */
#define SEP '\x01'
#define QUOTE_MAX 160
#define HS_MAX 64

#define NS_TLS "urn:ietf:params:xml:ns:xmpp-tls"
#define NS_COMPRESS "http://jabber.org/protocol/compress"

enum kind { K_NONE, K_HANDSHAKE, K_ROUTE, K_IQ, K_OTHER };

struct xcm_tk_witness {
  xcm_testkit *kit;
  XML_Parser p;
  char name[96]; /* how messages name the connection */
  char *to;      /* the first header's to */
  char *cm;      /* its domain: the CM's name */
  uint64_t base; /* bytes fed before the current document */
  uint64_t fed;
  unsigned depth;
  int dead; /* expat failed: nothing more can be read */
  unsigned violations;
  int default_ns_ok; /* the current header declared xmlns=CM */
  int handshake_seen;
  int stream_text; /* text at depth 1 already reported */

  /* The depth-1 element being read. */
  enum kind kind;
  uint64_t el_off;
  char quote[QUOTE_MAX];
  size_t qlen;
  int quoting;
  unsigned children; /* route: elements; handshake: any child */
  int text;          /* route: non-space text beside the element */
  char hs[HS_MAX];   /* handshake text */
  size_t hs_len;
  int iq_set;
  int in_session; /* iq: inside <session/> */
  char *sid;      /* route streamid, or iq session id */
  int create, action;
};

/* ---- violations ---------------------------------------------------- */

static void quote_into(char *out, size_t cap, const char *b, size_t len,
                       int more) {
  size_t o = 0, i;

  for (i = 0; i < len && o + 8 < cap; i++) {
    unsigned char ch = (unsigned char)b[i];

    if (ch == '\'' || ch == '\\') {
      out[o++] = '\\';
      out[o++] = (char)ch;
    } else if (ch < 0x20 || ch == 0x7f) {
      o += (size_t)snprintf(out + o, cap - o, "\\x%02x", ch);
    } else {
      out[o++] = (char)ch;
    }
  }
  if (i < len || more) {
    memcpy(out + o, "...", 3);
    o += 3;
  }
  out[o] = '\0';
}

void xcm__tk_violation(xcm_testkit *kit, const char *conn, uint64_t off,
                       const char *what, const char *bytes, size_t len,
                       int more) {
  char q[QUOTE_MAX * 4 + 8], msg[QUOTE_MAX * 4 + 512];
  int n;

  quote_into(q, sizeof(q), bytes, len, more);
  n = snprintf(msg, sizeof(msg), "%s: byte %" PRIu64 ": %s: '%s'", conn, off,
               what, q);
  kit->stats.violations++;
  xcm__log(&kit->ctx, XCM_LOG_ERROR, "testkit: protocol violation: %s", msg);
  if (kit->first_violation == NULL && n > 0)
    kit->first_violation =
        xcm__strndup(kit->ctx.alloc, msg, strlen(msg)); /* NULL: still 0 */
}

static void violation(xcm_tk_witness *w, uint64_t off, const char *what,
                      const char *bytes, size_t len, int more) {
  w->violations++;
  xcm__tk_violation(w->kit, w->name, off, what, bytes, len, more);
}

/* About the depth-1 element being read: quote its start. */
static void el_violation(xcm_tk_witness *w, const char *what) {
  violation(w, w->el_off, what, w->quote, w->qlen, w->quoting);
}

/* About the current event: quote from it. */
static void here_violation(xcm_tk_witness *w, const char *what) {
  int off = 0, size = 0;
  const char *ctx = XML_GetInputContext(w->p, &off, &size);
  uint64_t at = w->base + (uint64_t)XML_GetCurrentByteIndex(w->p);
  size_t n = 0;

  if (ctx != NULL && off >= 0 && size >= off) {
    ctx += off;
    n = (size_t)(size - off);
  }
  violation(w, at, what, ctx, n < QUOTE_MAX ? n : QUOTE_MAX, n > QUOTE_MAX);
}

/* ---- the sessions each CM created ---------------------------------- */

typedef struct sid_rec sid_rec;
struct sid_rec {
  xcm_map_entry e; /* in kit->witness_sids, by sid */
  sid_rec *also;   /* the same sid created by another CM */
  char *cm;
  char sid[];
};

static sid_rec *sid_get(xcm_testkit *kit, const char *sid) {
  return (sid_rec *)xcm__map_get(&kit->witness_sids, sid, strlen(sid));
}

static const char *sid_owner(xcm_testkit *kit, const char *sid,
                             const char *cm) {
  sid_rec *r;

  for (r = sid_get(kit, sid); r != NULL; r = r->also)
    if (strcmp(r->cm, cm) == 0)
      return r->cm;
  r = sid_get(kit, sid);
  return r != NULL ? r->cm : NULL;
}

static void sid_add(xcm_testkit *kit, const char *sid, const char *cm) {
  size_t n = strlen(sid);
  sid_rec *head = sid_get(kit, sid), *r;

  if (head != NULL && strcmp(sid_owner(kit, sid, cm), cm) == 0)
    return;
  r = xcm__calloc(kit->ctx.alloc, sizeof(*r) + n + 1);
  if (r == NULL)
    return;
  r->cm = xcm__strndup(kit->ctx.alloc, cm, strlen(cm));
  if (r->cm == NULL) {
    xcm__free(kit->ctx.alloc, r);
    return;
  }
  memcpy(r->sid, sid, n + 1);
  if (head != NULL) {
    r->also = head->also;
    head->also = r;
    return;
  }
  r->e.key = r->sid;
  if (xcm__map_put(&kit->witness_sids, &r->e) != 0) {
    xcm__free(kit->ctx.alloc, r->cm);
    xcm__free(kit->ctx.alloc, r);
  }
}

static void sid_free_one(xcm_map_entry *e, void *ud) {
  xcm_testkit *kit = ud;
  sid_rec *r = (sid_rec *)e, *next;

  xcm__map_remove(&kit->witness_sids, e);
  for (; r != NULL; r = next) {
    next = r->also;
    xcm__free(kit->ctx.alloc, r->cm);
    xcm__free(kit->ctx.alloc, r);
  }
}

void xcm__tk_witness_forget(xcm_testkit *kit) {
  xcm__map_each(&kit->witness_sids, sid_free_one, kit);
  xcm__map_free(&kit->witness_sids);
}

/* ---- names and attributes ------------------------------------------ */

/* Whether expat's "uri SEP local" (or "local") is {ns}local. */
static int is(const char *name, const char *ns, const char *local) {
  const char *sep = strchr(name, SEP);
  size_t nl = strlen(ns);

  if (sep == NULL)
    return ns[0] == '\0' && strcmp(name, local) == 0;
  return (size_t)(sep - name) == nl && memcmp(name, ns, nl) == 0 &&
         strcmp(sep + 1, local) == 0;
}

static const char *local_of(const char *name) {
  const char *sep = strchr(name, SEP);

  return sep != NULL ? sep + 1 : name;
}

/* An attribute without a namespace. */
static const char *attr(const char **atts, const char *name) {
  for (; atts[0] != NULL; atts += 2)
    if (strcmp(atts[0], name) == 0)
      return atts[1];
  return NULL;
}

static int all_space(const char *s, size_t n) {
  size_t i;

  for (i = 0; i < n; i++)
    if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
      return 0;
  return 1;
}

static char *dup_str(xcm_tk_witness *w, const char *s) {
  return s != NULL ? xcm__strndup(w->kit->ctx.alloc, s, strlen(s)) : NULL;
}

/* ---- expat's events ------------------------------------------------ */

static void on_header(xcm_tk_witness *w, const char *name, const char **atts) {
  const char *to = attr(atts, "to"), *version = attr(atts, "version");
  const char *slash, *at;

  if (!is(name, XCM_NS_STREAMS, "stream"))
    here_violation(w, "the stream header is not <stream:stream> in the "
                      "streams namespace");
  if (!w->default_ns_ok)
    here_violation(w, "the stream header does not declare "
                      "xmlns='" XCM_NS_CM "'");
  if (version == NULL || strcmp(version, "1.0") != 0)
    here_violation(w, "the stream header lacks version='1.0'");
  slash = to != NULL ? strchr(to, '/') : NULL;
  if (to == NULL || slash == NULL || slash == to || slash[1] == '\0') {
    here_violation(w, "the stream header's to is not CM/RES");
    return;
  }
  if (w->to != NULL) {
    if (strcmp(w->to, to) != 0)
      here_violation(w, "a restarted stream names another CM/RES");
    return;
  }
  w->to = dup_str(w, to);
  at = memchr(to, '@', (size_t)(slash - to));
  if (at != NULL)
    to = at + 1;
  w->cm = xcm__strndup(w->kit->ctx.alloc, to, (size_t)(slash - to));
  snprintf(w->name + strlen(w->name), sizeof(w->name) - strlen(w->name),
           " (%.60s)", w->to);
}

static void el_begin(xcm_tk_witness *w, const char *name, const char **atts) {
  int off = 0, size = 0;
  const char *ctx = XML_GetInputContext(w->p, &off, &size);

  w->el_off = w->base + (uint64_t)XML_GetCurrentByteIndex(w->p);
  w->qlen = 0;
  w->quoting = 1;
  if (ctx != NULL && off >= 0 && size >= off) {
    w->qlen =
        (size_t)(size - off) < QUOTE_MAX ? (size_t)(size - off) : QUOTE_MAX;
    memcpy(w->quote, ctx + off, w->qlen);
  }
  w->stream_text = 0;
  w->children = 0;
  w->text = 0;
  w->hs_len = 0;
  w->iq_set = 0;
  w->in_session = 0;
  w->create = w->action = 0;
  xcm__free(w->kit->ctx.alloc, w->sid);
  w->sid = NULL;

  if (is(name, XCM_NS_CM, "handshake")) {
    w->kind = K_HANDSHAKE;
    if (w->handshake_seen)
      el_violation(w, "a second handshake");
    if (atts[0] != NULL)
      el_violation(w, "the handshake has attributes");
    w->handshake_seen = 1;
  } else if (is(name, XCM_NS_CM, "route")) {
    w->kind = K_ROUTE;
    if (!w->handshake_seen)
      el_violation(w, "a route before the handshake");
    w->sid = dup_str(w, attr(atts, "streamid"));
    if (attr(atts, "streamid") == NULL)
      el_violation(w, "a route without streamid");
  } else if (is(name, XCM_NS_CM, "iq")) {
    const char *type = attr(atts, "type");

    w->kind = K_IQ;
    if (!w->handshake_seen)
      el_violation(w, "an iq before the handshake");
    w->iq_set = type != NULL && strcmp(type, "set") == 0;
  } else if (is(name, NS_TLS, "starttls") ||
             is(name, NS_COMPRESS, "compress")) {
    w->kind = K_OTHER;
    if (w->handshake_seen)
      el_violation(w, "STARTTLS or compression after the handshake");
  } else {
    w->kind = K_OTHER;
    el_violation(w, strcmp(local_of(name), "message") == 0 ||
                            strcmp(local_of(name), "presence") == 0
                        ? "a stanza outside a route"
                        : "an element the CM protocol has no place for");
  }
}

static void route_end(xcm_tk_witness *w) {
  const char *owner;
  char what[256];

  if (w->children != 1) {
    snprintf(what, sizeof(what), "a route with %u elements, not one",
             w->children);
    el_violation(w, what);
  }
  if (w->text)
    el_violation(w, "a route with text beside its element");
  if (w->sid == NULL || w->cm == NULL)
    return;
  owner = sid_owner(w->kit, w->sid, w->cm);
  if (owner == NULL) {
    snprintf(what, sizeof(what),
             "a route for streamid '%.64s', which CM %.64s never created",
             w->sid, w->cm);
    el_violation(w, what);
  } else if (strcmp(owner, w->cm) != 0) {
    snprintf(what, sizeof(what),
             "a route for streamid '%.64s', a session of another CM (%.64s)",
             w->sid, owner);
    el_violation(w, what);
  }
}

static int is_lower_hex(const char *s, size_t n) {
  size_t i;

  for (i = 0; i < n; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
      return 0;
  return 1;
}

static void el_end(xcm_tk_witness *w) {
  w->quoting = 0;
  switch (w->kind) {
  case K_HANDSHAKE:
    if (w->children > 0 || w->hs_len != 40 || !is_lower_hex(w->hs, 40))
      el_violation(w, "the handshake is not 40 lowercase hex digits");
    break;
  case K_ROUTE:
    route_end(w);
    break;
  case K_IQ:
    if (w->iq_set && w->sid != NULL && w->cm != NULL) {
      const char *owner;

      if (w->create)
        sid_add(w->kit, w->sid, w->cm);
      else if (w->action &&
               ((owner = sid_owner(w->kit, w->sid, w->cm)) == NULL ||
                strcmp(owner, w->cm) != 0))
        el_violation(w, "a session close or failed for a session this CM "
                        "never created");
    }
    break;
  default:
    break;
  }
  w->kind = K_NONE;
}

static void XMLCALL on_start(void *ud, const char *name, const char **atts) {
  xcm_tk_witness *w = ud;
  unsigned d = w->depth++;

  if (d == 0) {
    on_header(w, name, atts);
  } else if (d == 1) {
    el_begin(w, name, atts);
  } else if (d == 2) {
    w->children++;
    if (w->kind == K_IQ && is(name, XCM_NS_CM_PROTOCOL, "session")) {
      w->in_session = 1;
      xcm__free(w->kit->ctx.alloc, w->sid);
      w->sid = dup_str(w, attr(atts, "id"));
    }
  } else if (d == 3 && w->in_session) {
    const char *l = local_of(name);

    if (strcmp(l, "create") == 0)
      w->create = 1;
    else if (strcmp(l, "close") == 0 || strcmp(l, "failed") == 0)
      w->action = 1;
  }
}

static void XMLCALL on_end(void *ud, const char *name) {
  xcm_tk_witness *w = ud;

  (void)name;
  w->depth--;
  if (w->depth == 2)
    w->in_session = 0;
  else if (w->depth == 1)
    el_end(w);
}

static void XMLCALL on_text(void *ud, const char *s, int len) {
  xcm_tk_witness *w = ud;
  size_t n = (size_t)len;

  if (w->depth == 1) {
    if (!w->stream_text && !all_space(s, n)) {
      w->stream_text = 1;
      here_violation(w, "text between stanzas");
    }
  } else if (w->depth == 2) {
    if (w->kind == K_ROUTE && !all_space(s, n))
      w->text = 1;
    if (w->kind == K_HANDSHAKE) {
      if (w->hs_len + n > HS_MAX)
        n = HS_MAX - w->hs_len;
      memcpy(w->hs + w->hs_len, s, n);
      w->hs_len += n;
      if ((size_t)len > n)
        w->hs_len = HS_MAX; /* too long either way */
    }
  }
}

static void XMLCALL on_ns(void *ud, const char *prefix, const char *uri) {
  xcm_tk_witness *w = ud;

  if (w->depth == 0 && prefix == NULL)
    w->default_ns_ok = uri != NULL && strcmp(uri, XCM_NS_CM) == 0;
}

static void XMLCALL on_comment(void *ud, const char *data) {
  (void)data;
  here_violation(ud, "a comment (restricted XML)");
}

static void XMLCALL on_pi(void *ud, const char *target, const char *data) {
  (void)target;
  (void)data;
  here_violation(ud, "a processing instruction (restricted XML)");
}

static void XMLCALL on_doctype(void *ud, const char *name, const char *sysid,
                               const char *pubid, int has_internal) {
  (void)name;
  (void)sysid;
  (void)pubid;
  (void)has_internal;
  here_violation(ud, "a document type declaration (restricted XML)");
}

static void setup(xcm_tk_witness *w) {
  XML_SetUserData(w->p, w);
#if HAVE_XML_SETREPARSEDEFERRALENABLED
  XML_SetReparseDeferralEnabled(w->p, XML_FALSE);
#endif
  XML_SetElementHandler(w->p, on_start, on_end);
  XML_SetCharacterDataHandler(w->p, on_text);
  XML_SetStartNamespaceDeclHandler(w->p, on_ns);
  XML_SetCommentHandler(w->p, on_comment);
  XML_SetProcessingInstructionHandler(w->p, on_pi);
  XML_SetStartDoctypeDeclHandler(w->p, on_doctype);
  XML_SetParamEntityParsing(w->p, XML_PARAM_ENTITY_PARSING_NEVER);
  w->depth = 0;
  w->default_ns_ok = 0;
  w->kind = K_NONE;
  w->quoting = 0;
}

/* ---- the connection's side ----------------------------------------- */

int xcm__tk_witness_new(xcm_tk_witness **out, xcm_testkit *kit,
                        uint64_t number) {
  xcm_tk_witness *w = xcm__calloc(kit->ctx.alloc, sizeof(*w));

  *out = NULL;
  if (w == NULL)
    return XCM_ENOMEM;
  w->kit = kit;
  w->p = XML_ParserCreateNS("UTF-8", SEP);
  if (w->p == NULL) {
    xcm__free(kit->ctx.alloc, w);
    return XCM_ENOMEM;
  }
  snprintf(w->name, sizeof(w->name), "CM connection #%" PRIu64, number);
  setup(w);
  *out = w;
  return 0;
}

void xcm__tk_witness_free(xcm_tk_witness *w) {
  if (w == NULL)
    return;
  XML_ParserFree(w->p);
  xcm__free(w->kit->ctx.alloc, w->sid);
  xcm__free(w->kit->ctx.alloc, w->to);
  xcm__free(w->kit->ctx.alloc, w->cm);
  xcm__free(w->kit->ctx.alloc, w);
}

void xcm__tk_witness_feed(xcm_tk_witness *w, const char *data, size_t len) {
  while (len > 0 && !w->dead) {
    /* expat takes an int. */
    size_t piece = len < (1u << 30) ? len : (1u << 30);

    if (w->quoting && w->qlen < QUOTE_MAX) {
      size_t n = QUOTE_MAX - w->qlen < piece ? QUOTE_MAX - w->qlen : piece;

      memcpy(w->quote + w->qlen, data, n);
      w->qlen += n;
    }
    if (XML_Parse(w->p, data, (int)piece, XML_FALSE) == XML_STATUS_ERROR) {
      char what[160];
      uint64_t at = w->base + (uint64_t)XML_GetCurrentByteIndex(w->p);

      snprintf(what, sizeof(what), "not well-formed: %s",
               XML_ErrorString(XML_GetErrorCode(w->p)));
      if (w->depth >= 2 && w->kind != K_NONE) {
        /* Inside a stanza: quote it from its start, where the reader of
         * the message can see what it was. */
        snprintf(what + strlen(what), sizeof(what) - strlen(what),
                 " (in the element from byte %" PRIu64 ")", w->el_off);
        violation(w, at, what, w->quote, w->qlen, 1);
      } else {
        here_violation(w, what);
      }
      w->dead = 1;
    }
    w->fed += piece;
    data += piece;
    len -= piece;
  }
}

void xcm__tk_witness_restart(xcm_tk_witness *w) {
  if (w->dead)
    return;
  XML_ParserReset(w->p, "UTF-8");
  setup(w);
  w->base = w->fed;
}

unsigned xcm__tk_witness_count(const xcm_tk_witness *w) {
  return w != NULL ? w->violations : 0;
}

const char *xcm__tk_witness_name(const xcm_tk_witness *w) {
  return w->name;
}
