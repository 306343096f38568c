#include "client/request.h"

#include <string.h>

#include "proto/cmproto.h"
#include "proto/stream.h"
#include "util/alloc.h"
#include "xcm/error.h"
#include "xml/element.h"

#define NS_SASL "urn:ietf:params:xml:ns:xmpp-sasl"
#define NS_IQ_AUTH "jabber:iq:auth"

/* Deep enough for an error that echoes a client's request (which the
 * client's own depth limit bounds) with the error inside it. */
#define ANSWER_DEPTH 256

typedef struct request {
  xcm_req_kind kind; /* 0: a free slot */
  char *id;          /* NULL for SASL, which has none */
} request;

struct xcm_requests {
  request r[XCM_REQ_MAX];
  unsigned n;
};

static int eq(const char *a, const char *b) {
  return a != NULL && b != NULL && strcmp(a, b) == 0;
}

/* The pending request with this id, or NULL. */
static request *by_id(xcm_requests *t, const char *id) {
  unsigned i;

  if (t == NULL || id == NULL)
    return NULL;
  for (i = 0; i < XCM_REQ_MAX; i++)
    if (t->r[i].kind != 0 && t->r[i].id != NULL && strcmp(t->r[i].id, id) == 0)
      return &t->r[i];
  return NULL;
}

static request *by_kind(xcm_requests *t, xcm_req_kind kind) {
  unsigned i;

  if (t == NULL)
    return NULL;
  for (i = 0; i < XCM_REQ_MAX; i++)
    if (t->r[i].kind == kind)
      return &t->r[i];
  return NULL;
}

static void drop(xcm_requests **t, const xcm_allocator *a, request *r) {
  xcm__free(a, r->id);
  r->id = NULL;
  r->kind = 0;
  /* The table lives only while something is pending. */
  if (--(*t)->n == 0) {
    xcm__free(a, *t);
    *t = NULL;
  }
}

static int add(xcm_requests **t, const xcm_allocator *a, xcm_req_kind kind,
               const char *id) {
  request *r;
  unsigned i;

  if (*t == NULL) {
    *t = xcm__calloc(a, sizeof(**t));
    if (*t == NULL)
      return XCM_ENOMEM;
  }
  /* Full: refusing the client is the only safe answer. Dropping the
   * oldest record would leave the CM blind to its answer, and a client
   * could make that happen at will. */
  if ((*t)->n == XCM_REQ_MAX)
    return XCM_ELIMIT;
  for (i = 0; (*t)->r[i].kind != 0; i++)
    ;
  r = &(*t)->r[i];
  if (id != NULL) {
    r->id = xcm__strndup(a, id, strlen(id));
    if (r->id == NULL) {
      if ((*t)->n == 0) {
        xcm__free(a, *t);
        *t = NULL;
      }
      return XCM_ENOMEM;
    }
  }
  r->kind = kind;
  (*t)->n++;
  return 0;
}

int xcm__req_note(xcm_requests **t, const xcm_allocator *a,
                  const xcm_xml_stanza *s, unsigned state) {
  const xcm_xml_node *q;
  const char *id, *type;

  if (strcmp(s->ns, NS_SASL) == 0) {
    /* Each <auth/> waits for its <success/> or <failure/>; an <abort/>
     * is answered with a <failure/>, which ends the exchange it aborts. */
    if (strcmp(s->name, "auth") == 0 && !(state & XCM_REQ_AUTHED))
      return add(t, a, XCM_REQ_SASL, NULL);
    return 0;
  }
  if (strcmp(s->ns, XCM_NS_CLIENT) != 0 || strcmp(s->name, "iq") != 0 ||
      s->root == NULL)
    return 0;
  id = xcm__xml_node_attr(s->root, "id");
  /* A second iq with a pending request's id could get the answer that
   * the CM takes for the first one's. */
  if (by_id(*t, id) != NULL)
    return XCM_EBUSY;
  type = xcm__xml_node_attr(s->root, "type");
  q = s->root->children;
  if (!eq(type, "set") || q == NULL)
    return 0;
  /* The server picks its handler by the first child's namespace
   * (Openfire: getChildElement(), then the namespace), whatever the
   * child's name: so does this, or a request the server takes for a
   * login would go unwatched. Registration (jabber:iq:register) is
   * relayed but needs no record: the CM does not act on its answers,
   * whatever they say. */
  if (!(state & XCM_REQ_AUTHED) && strcmp(q->ns, NS_IQ_AUTH) == 0)
    return id != NULL ? add(t, a, XCM_REQ_LEGACY, id) : XCM_EINVAL;
  if ((state & XCM_REQ_AUTHED) && strcmp(q->ns, XCM_NS_BIND) == 0)
    return id != NULL ? add(t, a, XCM_REQ_BIND, id) : XCM_EINVAL;
  return 0;
}

unsigned xcm__req_pending(const xcm_requests *t, xcm_req_kind kind) {
  unsigned i, n = 0;

  if (t == NULL)
    return 0;
  for (i = 0; i < XCM_REQ_MAX; i++)
    if (t->r[i].kind == kind)
      n++;
  return n;
}

void xcm__req_clear(xcm_requests **t, const xcm_allocator *a) {
  unsigned i;

  if (*t == NULL)
    return;
  for (i = 0; i < XCM_REQ_MAX; i++)
    xcm__free(a, (*t)->r[i].id);
  xcm__free(a, *t);
  *t = NULL;
}

/* ---- reading an answer -------------------------------------------------- */

typedef struct matching {
  xcm_requests **t;
  const xcm_allocator *a;
  xcm_answer *out;
  int err;
} matching;

/* Only the element's kind decides, never the table (which the stanza
 * callback changes): the scanner and then expat may both ask. */
static int answer_levels(void *ud, const char *ns, const char *name) {
  (void)ud;
  /* iq > bind > jid, and a level below so that a <jid/> with an element
   * inside shows its child (the deepest level built has none). */
  if (strcmp(ns, XCM_NS_CLIENT) == 0 && strcmp(name, "iq") == 0)
    return 4 | XCM_XML_BARE_LAST;
  if (strcmp(ns, NS_SASL) == 0)
    return 1;
  return 0;
}

static void bound(matching *m, const xcm_xml_node *iq) {
  const xcm_xml_node *b = xcm__xml_node_child(iq, XCM_NS_BIND, "bind");
  const xcm_xml_node *j =
      b != NULL ? xcm__xml_node_child(b, XCM_NS_BIND, "jid") : NULL;

  m->out->kind = XCM_ANSWER_BIND_FAIL;
  /* The JID is the <jid/> element's own text: nothing else in the
   * answer, which may echo what the client wrote. */
  if (j == NULL || j->text_len == 0 || j->nchildren != 0 ||
      memchr(j->text, '\0', j->text_len) != NULL)
    return;
  m->out->jid = xcm__strndup(m->a, j->text, j->text_len);
  if (m->out->jid == NULL) {
    m->err = XCM_ENOMEM;
    return;
  }
  m->out->jid_len = j->text_len;
  m->out->kind = XCM_ANSWER_BOUND;
}

static void match(matching *m, const xcm_xml_stanza *s) {
  const char *type;
  request *r;

  if (strcmp(s->ns, NS_SASL) == 0) {
    int ok = strcmp(s->name, "success") == 0;

    if (!ok && strcmp(s->name, "failure") != 0)
      return; /* a challenge: the exchange goes on */
    r = by_kind(*m->t, XCM_REQ_SASL);
    if (r == NULL)
      return;
    m->out->kind = ok ? XCM_ANSWER_SASL_OK : XCM_ANSWER_SASL_FAIL;
    drop(m->t, m->a, r);
    return;
  }
  if (strcmp(s->ns, XCM_NS_CLIENT) != 0 || strcmp(s->name, "iq") != 0 ||
      s->root == NULL)
    return;
  type = xcm__xml_node_attr(s->root, "type");
  if (!eq(type, "result") && !eq(type, "error"))
    return; /* a request from the server, not an answer */
  r = by_id(*m->t, xcm__xml_node_attr(s->root, "id"));
  if (r == NULL)
    return;
  if (r->kind == XCM_REQ_LEGACY)
    m->out->kind =
        eq(type, "result") ? XCM_ANSWER_LEGACY_OK : XCM_ANSWER_LEGACY_FAIL;
  else if (eq(type, "result"))
    bound(m, s->root);
  else
    m->out->kind = XCM_ANSWER_BIND_FAIL;
  drop(m->t, m->a, r);
}

static int answer_stanza(void *ud, const xcm_xml_stanza *s) {
  matching *m = ud;

  match(m, s);
  return m->err;
}

int xcm__req_answer(xcm_requests **t, const xcm_allocator *a,
                    xcm_xml_pool *pool, const char *bytes, size_t len,
                    xcm_answer *out) {
  matching m = {t, a, out, 0};
  int err;

  memset(out, 0, sizeof(*out));
  if (*t == NULL)
    return 0;
  /* A route carries one element; anything else is no answer. The bytes
   * are read as the client reads them, in its stream's context. */
  err = xcm__xml_read_standalone(pool, &xcm__stream_client, bytes, len,
                                 ANSWER_DEPTH, 1, answer_levels, answer_stanza,
                                 &m);
  if (m.err == XCM_ENOMEM || err == XCM_ENOMEM) {
    xcm__free(a, out->jid);
    memset(out, 0, sizeof(*out));
    return XCM_ENOMEM;
  }
  /* What did not read as one element was no answer; a request it matched
   * before the bytes went wrong stays matched (and removed): the client
   * will see the same broken bytes. */
  if (err != 0 && out->kind == XCM_ANSWER_BOUND) {
    xcm__free(a, out->jid);
    out->jid = NULL;
    out->jid_len = 0;
    out->kind = XCM_ANSWER_BIND_FAIL;
  }
  if (err != 0 &&
      (out->kind == XCM_ANSWER_SASL_OK || out->kind == XCM_ANSWER_LEGACY_OK))
    out->kind = out->kind == XCM_ANSWER_SASL_OK ? XCM_ANSWER_SASL_FAIL
                                                : XCM_ANSWER_LEGACY_FAIL;
  return 0;
}
