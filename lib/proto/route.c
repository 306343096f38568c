#include "proto/route.h"

#include <stdlib.h>
#include <string.h>

#include "util/alloc.h"
#include "xcm/error.h"
#include "xml/writer.h"

static int is_space(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* The length of the element name at bytes[1..]: the bytes are one
 * well-formed element, so the name ends at white space, '/' or '>'. */
static size_t qname_length(const char *bytes, size_t len) {
  size_t i = 1;

  while (i < len && !is_space(bytes[i]) && bytes[i] != '/' && bytes[i] != '>')
    i++;
  return i - 1;
}

size_t xcm__xml_qname_length(const char *bytes, size_t len) {
  return len > 0 ? qname_length(bytes, len) : 0;
}

static int put_decl(xcm_buf *b, const char *prefix, const char *uri) {
  int err;

  if (prefix[0] == '\0')
    return xcm__xml_attr(b, "xmlns", uri);
  err = xcm__buf_append_str(b, " xmlns:");
  if (err == 0)
    err = xcm__buf_append_str(b, prefix);
  if (err == 0)
    err = xcm__buf_append_str(b, "=\"");
  if (err == 0)
    err = xcm__xml_escape_attr(b, uri, strlen(uri));
  if (err == 0)
    err = xcm__buf_append_char(b, '"');
  return err;
}

int xcm__route_put_element(xcm_buf *b, const char *bytes, size_t len,
                           size_t qname_len, const char *default_ns,
                           const xcm_xml_nsdecl *decls, size_t ndecls,
                           uint32_t mask) {
  size_t start = b->len, i, head;
  int err;

  if (len < 3 || bytes[0] != '<')
    return XCM_EINVAL;
  if (qname_len == 0)
    qname_len = qname_length(bytes, len);
  head = 1 + qname_len;
  err = xcm__buf_reserve(b, len + 64);
  if (err == 0)
    err = xcm__buf_append(b, bytes, head);
  if (err == 0 && default_ns != NULL)
    err = put_decl(b, "", default_ns);
  for (i = 0; i < ndecls && err == 0; i++)
    if (mask & ((uint32_t)1 << i))
      err = put_decl(b, decls[i].prefix, decls[i].uri);
  if (err == 0)
    err = xcm__buf_append(b, bytes + head, len - head);
  if (err != 0)
    b->len = start;
  return err;
}

/* Attribute order as the captures show the CM writing it. */
static int open_route(xcm_buf *b, const char *streamid, const char *to,
                      const char *from) {
  int err = xcm__buf_append_str(b, "<route");

  if (err == 0)
    err = xcm__xml_attr(b, "streamid", streamid);
  if (err == 0 && to != NULL)
    err = xcm__xml_attr(b, "to", to);
  if (err == 0 && from != NULL)
    err = xcm__xml_attr(b, "from", from);
  if (err == 0)
    err = xcm__buf_append_char(b, '>');
  return err;
}

int xcm__route_wrap_bytes(xcm_buf *b, const char *bytes, size_t len,
                          const char *streamid, const char *to,
                          const char *from) {
  size_t start = b->len;
  int err = open_route(b, streamid, to, from);

  if (err == 0)
    err = xcm__buf_append(b, bytes, len);
  if (err == 0)
    err = xcm__buf_append_str(b, "</route>");
  if (err != 0)
    b->len = start;
  return err;
}

/* The bytes passed through expat, so a simple walk over the start tag's
 * attributes is exact: a value cannot hold its own quote character. */
int xcm__xml_start_tag(const char *bytes, size_t len, const char *name,
                       const char **value, size_t *value_len,
                       const char **qname, size_t *qname_len) {
  size_t nlen = strlen(name), i, at, at_end, vstart;
  char q;

  if (len < 2 || bytes[0] != '<')
    return 0;
  *qname = bytes + 1;
  *qname_len = qname_length(bytes, len);
  i = 1 + *qname_len;
  for (;;) {
    while (i < len && is_space(bytes[i]))
      i++;
    if (i >= len || bytes[i] == '>' || bytes[i] == '/')
      return 0;
    at = i;
    while (i < len && bytes[i] != '=' && !is_space(bytes[i]))
      i++;
    at_end = i;
    while (i < len && bytes[i] != '\'' && bytes[i] != '"')
      i++;
    if (i >= len)
      return 0;
    q = bytes[i++];
    vstart = i;
    while (i < len && bytes[i] != q)
      i++;
    if (i >= len)
      return 0;
    if (at_end - at == nlen && memcmp(bytes + at, name, nlen) == 0) {
      *value = bytes + vstart;
      *value_len = i - vstart;
      return 1;
    }
    i++;
  }
}

int xcm__xml_declares_default(const char *bytes, size_t len) {
  const char *v, *q;
  size_t vl, ql;

  return xcm__xml_start_tag(bytes, len, "xmlns", &v, &vl, &q, &ql);
}

int xcm__route_wrap(xcm_buf *b, const xcm_xml_stanza *s,
                    const xcm_xml_nsdecl *decls, size_t ndecls,
                    const char *streamid, const char *to, const char *from) {
  const char *default_ns = NULL;
  uint32_t mask = 0;
  size_t start = b->len, i;
  int err;

  for (i = 0; i < ndecls && i < 32; i++) {
    if (decls[i].prefix[0] == '\0') {
      /* The stanza relied on the stream's default namespace. An empty
       * URI undeclares it; nothing to carry then. */
      if (!s->declares_default && decls[i].uri[0] != '\0')
        default_ns = decls[i].uri;
    } else if (s->header_prefixes_used & ((uint32_t)1 << i)) {
      mask |= (uint32_t)1 << i;
    }
  }
  err = open_route(b, streamid, to, from);
  if (err == 0)
    err = xcm__route_put_element(b, s->bytes, s->len, s->qname_len, default_ns,
                                 decls, ndecls, mask);
  if (err == 0)
    err = xcm__buf_append_str(b, "</route>");
  if (err != 0)
    b->len = start;
  return err;
}

static int all_space(const char *s, size_t len) {
  size_t i;

  for (i = 0; i < len; i++)
    if (!is_space(s[i]))
      return 0;
  return 1;
}

int xcm__route_unwrap(const xcm_xml_stanza *s, xcm_route *out,
                      const char **why) {
  const xcm_xml_node *n = s->root, *child;
  int has_text;

  memset(out, 0, sizeof(*out));
  if (n == NULL || strcmp(n->name, "route") != 0) {
    *why = "not a route";
    return XCM_EPROTO;
  }
  out->streamid = xcm__xml_node_attr(n, "streamid");
  out->type = xcm__xml_node_attr(n, "type");
  out->from = xcm__xml_node_attr(n, "from");
  out->to = xcm__xml_node_attr(n, "to");
  if (out->streamid == NULL) {
    *why = "route without streamid";
    return XCM_EPROTO;
  }
  has_text = !all_space(n->text, n->text_len);
  if (n->nchildren > 1) {
    *why = "route with more than one element";
    return XCM_EPROTO;
  }
  if (n->nchildren == 1 && has_text) {
    *why = "route with both text and an element";
    return XCM_EPROTO;
  }
  if (n->nchildren == 0 && !has_text) {
    *why = "empty route";
    return XCM_EPROTO;
  }
  if (n->nchildren == 1) {
    child = n->children;
    out->inner = s->bytes + child->off;
    out->inner_len = child->len;
  } else {
    out->text = n->text;
    out->text_len = n->text_len;
  }
  return 0;
}

/* ---- the public functions over bytes ---------------------------------- */

typedef struct one_element {
  int count;
  int err;
  xcm_buf *out; /* wrap: where the route goes */
  const char *streamid, *to, *from;
  xcm_xml_reader *r;
  xcm_route *route; /* unwrap: the copy made */
  const char *why;
} one_element;

static int want_tree(void *ud, const char *ns, const char *name) {
  (void)ud;
  (void)ns;
  (void)name;
  return 2;
}

static int wrap_one(void *ud, const xcm_xml_stanza *s) {
  one_element *o = ud;
  const xcm_xml_nsdecl *decls;
  size_t ndecls;

  if (++o->count > 1)
    return XCM_EXML;
  decls = xcm__xml_reader_decls(o->r, &ndecls);
  o->err =
      xcm__route_wrap(o->out, s, decls, ndecls, o->streamid, o->to, o->from);
  return o->err;
}

static char *copy_into(char **cursor, const char *s, size_t len) {
  char *p = *cursor;

  memcpy(p, s, len);
  p[len] = '\0';
  *cursor += len + 1;
  return p;
}

static size_t opt_len(const char *s) {
  return s != NULL ? strlen(s) + 1 : 0;
}

static int unwrap_one(void *ud, const xcm_xml_stanza *s) {
  one_element *o = ud;
  xcm_route view, *copy;
  size_t size;
  char *cursor;

  if (++o->count > 1)
    return XCM_EXML;
  o->err = xcm__route_unwrap(s, &view, &o->why);
  if (o->err != 0)
    return o->err;
  size = sizeof(view) + opt_len(view.streamid) + opt_len(view.type) +
         opt_len(view.from) + opt_len(view.to) + view.inner_len + 1 +
         view.text_len + 1;
  copy = xcm__alloc(NULL, size);
  if (copy == NULL)
    return o->err = XCM_ENOMEM;
  memset(copy, 0, sizeof(*copy));
  cursor = (char *)(copy + 1);
  copy->streamid = copy_into(&cursor, view.streamid, strlen(view.streamid));
  if (view.type != NULL)
    copy->type = copy_into(&cursor, view.type, strlen(view.type));
  if (view.from != NULL)
    copy->from = copy_into(&cursor, view.from, strlen(view.from));
  if (view.to != NULL)
    copy->to = copy_into(&cursor, view.to, strlen(view.to));
  if (view.inner != NULL) {
    copy->inner = copy_into(&cursor, view.inner, view.inner_len);
    copy->inner_len = view.inner_len;
  } else {
    copy->text = copy_into(&cursor, view.text, view.text_len);
    copy->text_len = view.text_len;
  }
  o->route = copy;
  return 0;
}

/* Run bytes through a reader in the given stream context and require
 * exactly one element. */
static int read_one(one_element *o, const xcm_xml_callbacks *cb,
                    const xcm_xml_context *context, const char *bytes,
                    size_t len) {
  xcm_xml_pool *pool;
  xcm_xml_limits limits = {len + 1, 256, 0};
  size_t consumed;
  int err;

  err = xcm__xml_pool_new(&pool, NULL, 0);
  if (err != 0)
    return err;
  err = xcm__xml_reader_new(&o->r, pool, cb, o, &limits);
  if (err == 0)
    err = xcm__xml_reader_assume_header(o->r, context);
  if (err == 0)
    err = xcm__xml_reader_feed(o->r, bytes, len, &consumed);
  /* Anything left unparsed (half an element) means not exactly one. */
  if (err == 0 && (o->count != 1 || xcm__xml_reader_shrink(o->r) != 1))
    err = XCM_EXML;
  if (err != 0 && o->err != 0)
    err = o->err;
  xcm__xml_reader_free(o->r);
  xcm__xml_pool_free(pool);
  return err;
}

static int to_caller(char *out, size_t cap, const xcm_buf *b) {
  if (cap == 0)
    return (int)b->len;
  if (b->len >= cap) {
    out[0] = '\0';
  } else {
    memcpy(out, b->data, b->len);
    out[b->len] = '\0';
  }
  return (int)b->len;
}

int xcm_route_wrap(char *out, size_t cap, const char *stanza, size_t len,
                   const char *streamid, const char *to, const char *from) {
  static const xcm_xml_callbacks cb = {NULL, NULL, wrap_one, NULL};
  one_element o;
  xcm_buf b;
  int err;

  if (cap > 0)
    out[0] = '\0';
  if (stanza == NULL || streamid == NULL || len > (size_t)0x7fffffff / 2)
    return XCM_EINVAL;
  memset(&o, 0, sizeof(o));
  xcm__buf_init(&b, NULL);
  o.out = &b;
  o.streamid = streamid;
  o.to = to;
  o.from = from;
  err = read_one(&o, &cb, &xcm__stream_client, stanza, len);
  if (err == 0)
    err = to_caller(out, cap, &b);
  xcm__buf_free(&b);
  return err;
}

int xcm_route_unwrap(const char *bytes, size_t len, xcm_route **out) {
  static const xcm_xml_callbacks cb = {NULL, want_tree, unwrap_one, NULL};
  one_element o;
  int err;

  *out = NULL;
  if (bytes == NULL)
    return XCM_EINVAL;
  memset(&o, 0, sizeof(o));
  err = read_one(&o, &cb, &xcm__stream_cm, bytes, len);
  if (err != 0) {
    xcm_route_free(o.route);
    return err;
  }
  *out = o.route;
  return 0;
}

void xcm_route_free(xcm_route *route) {
  xcm__free(NULL, route);
}

int xcm__xml_is_stanza(const char *bytes, size_t len) {
  size_t n = xcm__xml_qname_length(bytes, len);

  return (n == 7 && memcmp(bytes + 1, "message", 7) == 0) ||
         (n == 8 && memcmp(bytes + 1, "presence", 8) == 0) ||
         (n == 2 && memcmp(bytes + 1, "iq", 2) == 0);
}
