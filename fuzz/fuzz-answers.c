/* libFuzzer target for the server's answers to a client in the middle of
 * its login (lib/client/request.h). One client of lib/client, over a
 * transport of the target's own, makes its requests; the input then
 * supplies the elements the server routes back to it, and the target
 * checks after each one:
 *
 *   the client is authenticated only by a genuine answer to a request of
 *   its own still pending (a SASL <success/> to its <auth/>, a result
 *   with its legacy auth set's id), and bound only with the text of the
 *   <jid/> of a genuine result to its bind set.
 *
 * "Genuine" is decided here by expat alone, independently of the
 * library's reader, with a model of what is pending. Where expat and the
 * library's restricted XML may disagree (comments, processing
 * instructions, CDATA, an XML declaration, a doctype, great depth) the
 * model no longer knows exactly what is pending, and the check falls
 * back to "a genuine answer to a request the client made".
 *
 * Input: byte 0 picks the login (bits 0-1: 0 SASL, 1 legacy auth, 2 bind
 * after a SASL success, 3 registration with a SASL <auth/> beside it);
 * bit 2 delivers a genuine answer after the input's, which must then
 * count if its request is still pending. The rest is the answers, one
 * element each, separated by NUL bytes (which XML never contains). */
#include <expat.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "client/client.h"
#include "core/ctx.h"
#include "options.h"
#include "transport/stream.h"
#include "xcm/route.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NS_SASL "urn:ietf:params:xml:ns:xmpp-sasl"
#define NS_BIND "urn:ietf:params:xml:ns:xmpp-bind"
#define HDR                                                                    \
  "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' "            \
  "xmlns='jabber:client' to='example.test' version='1.0'>"
#define AUTH                                                                   \
  "<auth xmlns='" NS_SASL "' mechanism='PLAIN'>AGFsaWNlAGFsaWNl</auth>"

enum { S_SASL, S_LEGACY, S_BIND, S_REGISTER };

static uv_loop_t loop;
static xcm_ctx ctx;
static xcm_client_cfg cfg;
static xcm_policy policy;

/* What the client's owner heard. */
typedef struct heard {
  int authenticated;
  int bound;
  char jid[4096];
  size_t jid_len;
  int closed;
} heard;

static const xcm_policy *get_policy(void *ud) {
  (void)ud;
  return &policy;
}

static int t_write(void *ud, const char *d, size_t len) {
  (void)ud;
  (void)d;
  (void)len;
  return 0;
}

static void t_close(void *ud) {
  (void)ud;
}

static int c_open(void *ud, const char *sid, const char *address) {
  (void)ud;
  (void)sid;
  (void)address;
  return 0;
}

static int c_stanza(void *ud, const xcm_xml_stanza *s,
                    const xcm_xml_nsdecl *decls, size_t ndecls) {
  (void)ud;
  (void)s;
  (void)decls;
  (void)ndecls;
  return 0;
}

static void c_authenticated(void *ud) {
  ((heard *)ud)->authenticated++;
}

static void c_bound(void *ud, const char *jid, size_t len) {
  heard *h = ud;

  h->bound++;
  if (len >= sizeof h->jid)
    abort(); /* longer than any answer this target delivers */
  memcpy(h->jid, jid, len);
  h->jid[len] = '\0';
  h->jid_len = len;
}

static void c_closed(void *ud, const xcm_client_end *end) {
  (void)end;
  ((heard *)ud)->closed = 1;
}

static const xcm_client_cb client_cb = {.open = c_open,
                                        .stanza = c_stanza,
                                        .authenticated = c_authenticated,
                                        .bound = c_bound,
                                        .closed = c_closed};

static void setup(void) {
  uv_loop_init(&loop);
  if (xcm__ctx_init(&ctx, &loop, NULL) != 0)
    abort();
  memset(&policy, 0, sizeof policy);
  policy.tls = XCM_TLS_OPTIONAL;
  policy.nmechanisms = 1;
  strcpy(policy.mechanisms[0], "PLAIN");
  policy.legacy_auth = 1;
  policy.registration = 1;
  xcm__client_cfg_defaults(&cfg);
  cfg.domain = "example.test";
  cfg.policy = get_policy;
}

/* ---- the oracle: expat and a model of what is pending ------------------- */

typedef struct model {
  unsigned sasl;      /* SASL exchanges pending */
  const char *legacy; /* id of the pending legacy auth set, or NULL */
  const char *bind;   /* id of the pending bind set, or NULL */
  int sasl_asked, legacy_asked, bind_asked;
  int unsure; /* the model may differ from the library's view */
} model;

/* What expat makes of one answer. */
typedef struct reading {
  int depth;
  int elements;   /* complete depth-1 elements */
  int first_done; /* the first one is complete */
  int bad;        /* error, text at depth 1, or more than one element */
  int bad_before; /* ... already before the first one was complete */
  int unsure;     /* something the two parsers may judge differently */
  /* The first element. */
  int is_sasl_success, is_sasl_failure, is_iq_answer, is_result;
  char id[256];
  int id_set, id_long;
  /* Its bind (first <bind/> in the bind namespace) and that bind's first
   * <jid/>: the text directly inside, and whether it has children. */
  int in_bind, bind_seen, jid_seen, in_jid, jid_children;
  char jid[4096];
  size_t jid_len;
  int jid_long;
} reading;

static void x_start(void *ud, const XML_Char *name, const XML_Char **atts) {
  reading *r = ud;
  const char *sep = strchr(name, '\x01');
  size_t nsl = sep ? (size_t)(sep - name) : 0;
  const char *local = sep ? sep + 1 : name;
  int i;

  r->depth++;
  if (r->depth > 100)
    r->unsure = 1;
  if (r->depth == 2 && r->elements == 0) {
    if (nsl == strlen(NS_SASL) && memcmp(name, NS_SASL, nsl) == 0) {
      r->is_sasl_success = strcmp(local, "success") == 0;
      r->is_sasl_failure = strcmp(local, "failure") == 0;
    }
    if (nsl == 13 && memcmp(name, "jabber:client", 13) == 0 &&
        strcmp(local, "iq") == 0) {
      for (i = 0; atts[i] != NULL; i += 2) {
        if (strcmp(atts[i], "type") == 0) {
          r->is_iq_answer = strcmp(atts[i + 1], "result") == 0 ||
                            strcmp(atts[i + 1], "error") == 0;
          r->is_result = strcmp(atts[i + 1], "result") == 0;
        }
        if (strcmp(atts[i], "id") == 0) {
          r->id_set = 1;
          if (strlen(atts[i + 1]) >= sizeof r->id)
            r->id_long = 1;
          else
            strcpy(r->id, atts[i + 1]);
        }
      }
    }
    return;
  }
  if (r->elements != 0)
    return;
  if (r->in_jid)
    r->jid_children = 1;
  if (r->depth == 3 && !r->bind_seen && nsl == strlen(NS_BIND) &&
      memcmp(name, NS_BIND, nsl) == 0 && strcmp(local, "bind") == 0) {
    r->bind_seen = r->in_bind = 1;
  } else if (r->depth == 4 && r->in_bind && !r->jid_seen &&
             nsl == strlen(NS_BIND) && memcmp(name, NS_BIND, nsl) == 0 &&
             strcmp(local, "jid") == 0) {
    r->jid_seen = r->in_jid = 1;
  }
}

static void x_end(void *ud, const XML_Char *name) {
  reading *r = ud;

  (void)name;
  if (r->depth == 4 && r->in_jid)
    r->in_jid = 0;
  if (r->depth == 3 && r->in_bind)
    r->in_bind = 0;
  if (r->depth == 2) {
    r->elements++;
    if (r->elements == 1)
      r->first_done = 1;
    else
      r->bad = 1;
  }
  r->depth--;
}

static void x_text(void *ud, const XML_Char *s, int len) {
  reading *r = ud;
  int i;

  if (r->depth == 1) {
    for (i = 0; i < len; i++)
      if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n') {
        r->bad = 1;
        if (!r->first_done)
          r->bad_before = 1;
      }
    return;
  }
  /* Only the <jid/> element's own text, not its children's. */
  if (r->in_jid && r->depth == 4 && r->elements == 0) {
    if (r->jid_len + (size_t)len >= sizeof r->jid)
      r->jid_long = 1;
    else {
      memcpy(r->jid + r->jid_len, s, (size_t)len);
      r->jid_len += (size_t)len;
    }
  }
}

static void x_unsure(void *ud) {
  ((reading *)ud)->unsure = 1;
}

static void x_comment(void *ud, const XML_Char *d) {
  (void)d;
  x_unsure(ud);
}

static void x_pi(void *ud, const XML_Char *t, const XML_Char *d) {
  (void)t;
  (void)d;
  x_unsure(ud);
}

static void x_doctype(void *ud, const XML_Char *n, const XML_Char *s,
                      const XML_Char *p, int i) {
  (void)n;
  (void)s;
  (void)p;
  (void)i;
  x_unsure(ud);
}

static void x_xmldecl(void *ud, const XML_Char *v, const XML_Char *e, int s) {
  (void)v;
  (void)e;
  (void)s;
  x_unsure(ud);
}

static void read_answer(const char *bytes, size_t len, reading *r) {
  static const char head[] =
      "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' "
      "xmlns='jabber:client'>";
  XML_Parser p = XML_ParserCreateNS(NULL, '\x01');

  memset(r, 0, sizeof(*r));
  if (p == NULL)
    abort();
  XML_SetUserData(p, r);
  XML_SetElementHandler(p, x_start, x_end);
  XML_SetCharacterDataHandler(p, x_text);
  XML_SetCommentHandler(p, x_comment);
  XML_SetProcessingInstructionHandler(p, x_pi);
  XML_SetStartDoctypeDeclHandler(p, x_doctype);
  XML_SetXmlDeclHandler(p, x_xmldecl);
  XML_SetStartCdataSectionHandler(p, x_unsure);
  if (XML_Parse(p, head, sizeof head - 1, 0) != XML_STATUS_OK)
    abort();
  if (XML_Parse(p, bytes, (int)len, 0) != XML_STATUS_OK) {
    r->bad = 1;
    if (!r->first_done)
      r->bad_before = 1;
  } else if (r->depth > 1 ||
             XML_Parse(p, "</stream:stream>", 16, 1) != XML_STATUS_OK) {
    /* Something still open or pending at the end: the bytes are not one
     * element (the CM reads them with xcm__xml_read_element, which says
     * so). Ending the document makes expat judge what it held back. */
    r->bad = 1;
    if (!r->first_done)
      r->bad_before = 1;
  }
  XML_ParserFree(p);
}

/* ---- one answer, checked ------------------------------------------------ */

static void fail(const char *why, const char *bytes, size_t len) {
  fprintf(stderr, "fuzz-answers: %s\nanswer: %.*s\n", why, (int)len, bytes);
  abort();
}

static void deliver(xcm_client *c, heard *h, model *m, const char *bytes,
                    size_t len) {
  int authed = h->authenticated, bound = h->bound;
  xcm_route route;
  reading r;
  /* The answer (before this one changes the model) is one to a pending
   * request (or, unsure, to one the client made). */
  int sasl_ok, legacy_ok, bind_ok, jid_ok, whole;

  read_answer(bytes, len, &r);
  if (r.unsure)
    m->unsure = 1;
  whole = !r.bad && r.elements == 1 && !r.unsure;
  sasl_ok = r.is_sasl_success && (m->unsure ? m->sasl_asked : m->sasl > 0);
  legacy_ok = r.is_iq_answer && r.is_result && r.id_set && !r.id_long &&
              (m->unsure ? m->legacy_asked : m->legacy != NULL) &&
              strcmp(r.id, "a1") == 0;
  bind_ok = r.is_iq_answer && r.is_result && r.id_set && !r.id_long &&
            (m->unsure ? m->bind_asked : m->bind != NULL) &&
            strcmp(r.id, "b1") == 0;
  jid_ok =
      bind_ok && r.jid_seen && !r.jid_children && !r.jid_long && r.jid_len > 0;

  memset(&route, 0, sizeof route);
  route.streamid = xcm__client_sid(c);
  route.inner = bytes;
  route.inner_len = len;
  xcm__client_deliver(c, &route);

  if (h->authenticated > authed && !(sasl_ok || legacy_ok))
    fail("authenticated by what answers no pending request", bytes, len);
  if (h->authenticated > authed && r.bad && !m->unsure)
    fail("authenticated by bytes that are not one element", bytes, len);
  if (h->bound > bound) {
    if (!jid_ok)
      fail("bound by what is not a genuine bind result", bytes, len);
    if (h->jid_len != r.jid_len || memcmp(h->jid, r.jid, r.jid_len) != 0)
      fail("bound with a JID other than the result's <jid/> text", bytes, len);
  }
  /* And the other way: a genuine answer, with the model sure, counts. */
  if (!m->unsure && whole && !h->closed) {
    if ((sasl_ok || legacy_ok) && h->authenticated == authed)
      fail("a genuine authentication answer was not taken", bytes, len);
    if (jid_ok && h->bound == bound)
      fail("a genuine bind result was not taken", bytes, len);
  }
  /* The model: the first element, if an answer to something pending,
   * ends that request, error or not. */
  if (r.first_done && !r.bad_before) {
    if ((r.is_sasl_success || r.is_sasl_failure) && m->sasl > 0)
      m->sasl = r.is_sasl_success ? 0 : m->sasl - 1;
    if (r.is_iq_answer && r.id_set && m->legacy != NULL &&
        strcmp(r.id, m->legacy) == 0)
      m->legacy = NULL;
    if (r.is_iq_answer && r.id_set && m->bind != NULL &&
        strcmp(r.id, m->bind) == 0)
      m->bind = NULL;
  }
  /* A legacy success ends the login: nothing is watched after it. */
  if (h->authenticated > authed && legacy_ok)
    m->sasl = 0;
}

static void feed(xcm_client *c, heard *h, const char *s) {
  if (!h->closed)
    xcm__stream_input(xcm__client_stream(c), s, strlen(s));
  uv_run(&loop, UV_RUN_NOWAIT);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const char *genuine[] = {
      "<success xmlns='" NS_SASL "'/>",
      "<iq type='result' id='a1'/>",
      "<iq type='result' id='b1'><bind xmlns='" NS_BIND
      "'><jid>alice@example.test/r</jid></bind></iq>",
      "<success xmlns='" NS_SASL "'/>",
  };
  xcm_transport t = {.size = sizeof t, .write = t_write, .close = t_close};
  xcm_client *c;
  heard h;
  model m;
  size_t off, end;
  int scenario, i;

  if (ctx.loop == NULL)
    setup();
  if (size < 1)
    return 0;
  scenario = data[0] & 3;
  memset(&h, 0, sizeof h);
  memset(&m, 0, sizeof m);
  if (xcm__client_new_custom(&c, &ctx, &cfg, &t, "fuzzer", &client_cb, &h) != 0)
    return 0;
  feed(c, &h, HDR);
  switch (scenario) {
  case S_SASL:
    feed(c, &h, AUTH);
    m.sasl = 1;
    m.sasl_asked = 1;
    break;
  case S_LEGACY:
    feed(c, &h,
         "<iq type='set' id='a1'><query xmlns='jabber:iq:auth'>"
         "<username>alice</username><password>alice</password>"
         "<resource>r</resource></query></iq>");
    m.legacy = "a1";
    m.legacy_asked = 1;
    break;
  case S_BIND: {
    static const char ok[] = "<success xmlns='" NS_SASL "'/>";
    xcm_route route;

    feed(c, &h, AUTH);
    memset(&route, 0, sizeof route);
    route.inner = ok;
    route.inner_len = sizeof ok - 1;
    xcm__client_deliver(c, &route);
    if (h.authenticated != 1)
      abort();
    feed(c, &h, HDR);
    feed(c, &h,
         "<iq type='set' id='b1'><bind xmlns='" NS_BIND
         "'><resource>r</resource></bind></iq>");
    m.bind = "b1";
    m.bind_asked = 1;
    break;
  }
  default:
    /* A registration's answers count for nothing, whatever they say;
     * a SASL exchange runs beside it so that the CM is watching. */
    feed(c, &h,
         "<iq type='set' id='r1'><query xmlns='jabber:iq:register'>"
         "<username>eve</username><password>eve</password></query>"
         "</iq>");
    feed(c, &h, AUTH);
    m.sasl = 1;
    m.sasl_asked = 1;
    break;
  }
  if (h.closed)
    abort(); /* the login itself is well-behaved */
  for (off = 1; off < size && !h.closed; off = end + 1) {
    for (end = off; end < size && data[end] != 0; end++)
      ;
    if (end > off)
      deliver(c, &h, &m, (const char *)data + off, end - off);
  }
  if ((data[0] & 4) && !h.closed)
    deliver(c, &h, &m, genuine[scenario], strlen(genuine[scenario]));
  if (!h.closed)
    xcm__stream_input_end(xcm__client_stream(c));
  for (i = 0; i < 4; i++)
    uv_run(&loop, UV_RUN_NOWAIT);
  return 0;
}
