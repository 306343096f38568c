/* Reading a BOSH request's <body/>: see body.h. */
#include "web/body.h"

#include <string.h>

#include "proto/route.h"
#include "proto/stream.h"
#include "xcm/error.h"

#define NS_XML "http://www.w3.org/XML/1998/namespace"

typedef struct parse {
  xcm_bosh_body *b;
  xcm_xml_reader *r;
  int header; /* the <body/> start tag was read */
  int ended;  /* ... and its end tag */
  int err;    /* what a callback refused with */
} parse;

static const struct {
  const char *ns, *name;
} known[XCM_BA_COUNT] = {
    [XCM_BA_SID] = {"", "sid"},
    [XCM_BA_RID] = {"", "rid"},
    [XCM_BA_TYPE] = {"", "type"},
    [XCM_BA_TO] = {"", "to"},
    [XCM_BA_LANG] = {NS_XML, "lang"},
    [XCM_BA_VER] = {"", "ver"},
    [XCM_BA_WAIT] = {"", "wait"},
    [XCM_BA_HOLD] = {"", "hold"},
    [XCM_BA_ACK] = {"", "ack"},
    [XCM_BA_PAUSE] = {"", "pause"},
    [XCM_BA_XMPP_VERSION] = {XCM_NS_XBOSH, "version"},
    [XCM_BA_RESTART] = {XCM_NS_XBOSH, "restart"},
    [XCM_BA_KEY] = {"", "key"},
    [XCM_BA_NEWKEY] = {"", "newkey"},
};

static int on_header(void *ud, const xcm_xml_header *h) {
  parse *p = ud;
  size_t i;
  int k;

  if (strcmp(h->ns, XCM_NS_HTTPBIND) != 0 || strcmp(h->name, "body") != 0) {
    xcm__xml_reader_fail(p->r, XCM_COND_BAD_FORMAT,
                         "not a <body/> in the httpbind namespace");
    return p->err = XCM_EXML;
  }
  p->header = 1;
  for (i = 0; i < h->nattrs; i++)
    for (k = 0; k < XCM_BA_COUNT; k++) {
      if (p->b->attr[k] != 0 || strcmp(h->attrs[i].ns, known[k].ns) != 0 ||
          strcmp(h->attrs[i].name, known[k].name) != 0)
        continue;
      p->b->attr[k] = p->b->strings.len + 1;
      if (xcm__buf_append(&p->b->strings, h->attrs[i].value,
                          strlen(h->attrs[i].value) + 1) != 0)
        return p->err = XCM_ENOMEM;
    }
  return 0;
}

static int on_stanza(void *ud, const xcm_xml_stanza *s) {
  parse *p = ud;
  xcm_buf *c = &p->b->children;
  const xcm_xml_nsdecl *decls;
  size_t n, at = c->len, len = 0;
  int err;

  decls = xcm__xml_reader_decls(p->r, &n);
  err = xcm__buf_append(c, &len, sizeof len);
  /* Standalone: what the body's start tag gave the child is declared on
   * its own (body.h). */
  if (err == 0)
    err = xcm__route_put_element(c, s->bytes, s->len, s->qname_len,
                                 s->declares_default ? NULL : XCM_NS_CLIENT,
                                 decls, n, s->header_prefixes_used);
  if (err != 0) {
    c->len = at;
    return p->err = XCM_ENOMEM;
  }
  len = c->len - at - sizeof len;
  memcpy(c->data + at, &len, sizeof len);
  p->b->nchildren++;
  return 0;
}

static void on_end(void *ud) {
  parse *p = ud;

  p->ended = 1;
}

static const xcm_xml_callbacks body_cb = {on_header, NULL, on_stanza, on_end};

static int is_space(char ch) {
  return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

int xcm__bosh_body_parse(xcm_bosh_body *out, xcm_xml_pool *pool,
                         const xcm_allocator *alloc, const char *data,
                         size_t len, size_t max_child, unsigned max_depth) {
  xcm_xml_limits lim;
  parse p;
  size_t used = 0;
  int err;

  memset(out, 0, sizeof(*out));
  xcm__buf_init(&out->strings, alloc);
  xcm__buf_init(&out->children, alloc);
  memset(&p, 0, sizeof p);
  p.b = out;
  memset(&lim, 0, sizeof lim);
  lim.max_stanza = max_child;
  lim.max_depth = max_depth;
  err = xcm__xml_reader_new(&p.r, pool, &body_cb, &p, &lim);
  if (err != 0)
    return err;
  xcm__xml_reader_set_scan(p.r, 1);
  err = xcm__xml_reader_feed(p.r, data, len, &used);
  xcm__xml_reader_free(p.r);
  if (p.err != 0)
    return p.err;
  if (err == XCM_ENOMEM || err == XCM_ELIMIT)
    return err;
  if (err != 0 || !p.ended)
    return XCM_EXML;
  /* Nothing but white space after </body>. */
  for (; used < len; used++)
    if (!is_space(data[used]))
      return XCM_EXML;
  return 0;
}

const char *xcm__bosh_body_attr(const xcm_bosh_body *b, int which) {
  if (which < 0 || which >= XCM_BA_COUNT || b->attr[which] == 0)
    return NULL;
  return b->strings.data + b->attr[which] - 1;
}

const char *xcm__bosh_body_child(const xcm_bosh_body *b, size_t *at,
                                 size_t *len) {
  const char *p;

  if (*at + sizeof(size_t) > b->children.len)
    return NULL;
  memcpy(len, b->children.data + *at, sizeof(size_t));
  p = b->children.data + *at + sizeof(size_t);
  *at += sizeof(size_t) + *len;
  return p;
}

void xcm__bosh_body_free(xcm_bosh_body *b) {
  xcm__buf_free(&b->strings);
  xcm__buf_free(&b->children);
  b->nchildren = 0;
}
