/* libFuzzer target: route framing of stanzas with namespace declarations
 * of every kind, read by the server as strictly as expat can.
 *
 * The input is a small program that writes a client stream header and one
 * stanza. Byte 0: bits 0-4 how many header prefixes h0, h1, ... the
 * header declares besides stream and the default jabber:client (past 16
 * the reader refuses it, which is fine), bits 5-7 the piece size the
 * stream is fed in (0: whole). Then pairs (op, arg), op % 8:
 *
 *   0  declare xmlns:pN on the stanza (N = arg % 24)
 *   1  (re)declare the default namespace: jabber:client, urn:x, '' or
 *      jabber:server
 *   2  redeclare a header prefix (h0.., or stream) with another URI or
 *      the same one
 *   3  an attribute with a prefix (pN, hN, stream or xml)
 *   4  an attribute without one
 *   5  a child element, prefixed or with its own default namespace
 *   6  text
 *   7  give the stanza element a prefix
 *
 * The stream is read with the reader, scanner on and expat alone; every
 * stanza it hands over is wrapped with xcm__route_wrap, and the framed
 * output is parsed with a namespace-aware expat inside a synthetic
 * <stream:stream xmlns='jabber:connectionmanager' ...>, which refuses a
 * repeated attribute or namespace declaration and an unbound prefix. Any
 * error aborts, as does a route without exactly one element in it or an
 * element whose namespace or name is not what the client's reader read. */
#include <expat.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/route.h"
#include "util/buf.h"
#include "xml/reader.h"

#define MAX_STANZAS 4

static const char upstream_hdr[] =
    "<stream:stream xmlns='jabber:connectionmanager' "
    "xmlns:stream='http://etherx.jabber.org/streams'>";

typedef struct wrap_run {
  xcm_xml_reader *r;
  xcm_buf out;
  int stanzas;
  char want[MAX_STANZAS][256]; /* "ns\x01name" of each stanza */
} wrap_run;

static void fail(const char *why, const wrap_run *w) {
  fprintf(stderr, "fuzz-wrap: %s\nframed: %.*s\n", why, (int)w->out.len,
          w->out.data != NULL ? w->out.data : "");
  abort();
}

static int on_stanza(void *ud, const xcm_xml_stanza *s) {
  wrap_run *w = ud;
  const xcm_xml_nsdecl *decls;
  size_t ndecls;

  if (w->stanzas == MAX_STANZAS)
    return 0;
  /* As expat names it: no separator without a namespace. */
  if (s->ns[0] == '\0')
    snprintf(w->want[w->stanzas], sizeof w->want[0], "%s", s->name);
  else
    snprintf(w->want[w->stanzas], sizeof w->want[0], "%s\x01%s", s->ns,
             s->name);
  w->stanzas++;
  decls = xcm__xml_reader_decls(w->r, &ndecls);
  if (xcm__route_wrap(&w->out, s, decls, ndecls, "sid", "example.test",
                      "cm1/w1") != 0)
    fail("wrap failed", w);
  return 0;
}

/* The upstream side. */
typedef struct check {
  const wrap_run *w;
  int depth;
  int routes;
  int inner; /* elements directly in the current route */
} check;

static void up_start(void *ud, const XML_Char *name, const XML_Char **atts) {
  check *c = ud;

  (void)atts;
  c->depth++;
  if (c->depth == 2) {
    if (strcmp(name, "jabber:connectionmanager\x01route") != 0)
      fail("not a route at depth 1", c->w);
    c->routes++;
    c->inner = 0;
  } else if (c->depth == 3) {
    c->inner++;
    if (c->routes > MAX_STANZAS || c->routes > c->w->stanzas ||
        strcmp(name, c->w->want[c->routes - 1]) != 0) {
      fprintf(stderr, "got %s, want %s\n", name,
              c->routes <= c->w->stanzas ? c->w->want[c->routes - 1] : "-");
      fail("the element in the route means something else", c->w);
    }
  }
}

static void up_end(void *ud, const XML_Char *name) {
  check *c = ud;

  (void)name;
  if (c->depth == 2 && c->inner != 1)
    fail("a route without exactly one element", c->w);
  c->depth--;
}

static void check_upstream(const wrap_run *w) {
  XML_Parser p = XML_ParserCreateNS(NULL, '\x01');
  check c = {w, 0, 0, 0};

  if (p == NULL)
    abort();
  XML_SetUserData(p, &c);
  XML_SetElementHandler(p, up_start, up_end);
  if (XML_Parse(p, upstream_hdr, (int)strlen(upstream_hdr), XML_FALSE) !=
          XML_STATUS_OK ||
      XML_Parse(p, w->out.data != NULL ? w->out.data : "", (int)w->out.len,
                XML_FALSE) != XML_STATUS_OK ||
      XML_Parse(p, "</stream:stream>", 16, XML_TRUE) != XML_STATUS_OK) {
    fprintf(stderr, "expat: %s\n", XML_ErrorString(XML_GetErrorCode(p)));
    fail("the server cannot read the framed stanza", w);
  }
  if (c.routes != (w->stanzas < MAX_STANZAS ? w->stanzas : MAX_STANZAS))
    fail("as many routes as stanzas", w);
  XML_ParserFree(p);
}

/* ---- the client's stream from the program ------------------------------ */

static void prefix(xcm_buf *b, unsigned arg, unsigned nhdr) {
  char tmp[16];

  switch (arg % 4) {
  case 0:
    snprintf(tmp, sizeof tmp, "p%u", (arg / 4) % 24);
    break;
  case 1:
    snprintf(tmp, sizeof tmp, "h%u", nhdr ? (arg / 4) % nhdr : 0);
    break;
  case 2:
    snprintf(tmp, sizeof tmp, "stream");
    break;
  default:
    snprintf(tmp, sizeof tmp, "xml");
  }
  xcm__buf_append_str(b, tmp);
}

static void make_stream(xcm_buf *b, const uint8_t *data, size_t size) {
  static const char *const defaults[] = {"jabber:client", "urn:x", "",
                                         "jabber:server"};
  unsigned nhdr = data[0] & 31, i;
  xcm_buf tag, body;
  char tmp[96];
  size_t k;
  int has_prefix = 0;
  char name_prefix[16] = "";

  xcm__buf_append_str(b, "<stream:stream "
                         "xmlns:stream='http://etherx.jabber.org/streams' "
                         "xmlns='jabber:client'");
  for (i = 0; i < nhdr; i++) {
    snprintf(tmp, sizeof tmp, " xmlns:h%u='urn:h%u'", i, i);
    xcm__buf_append_str(b, tmp);
  }
  xcm__buf_append_str(b, " to='example.test' version='1.0'>");

  xcm__buf_init(&tag, NULL);
  xcm__buf_init(&body, NULL);
  for (k = 1; k + 1 < size; k += 2) {
    unsigned op = data[k] % 8, arg = data[k + 1];

    switch (op) {
    case 0:
      snprintf(tmp, sizeof tmp, " xmlns:p%u='urn:p%u'", arg % 24, arg % 24);
      xcm__buf_append_str(&tag, tmp);
      break;
    case 1:
      snprintf(tmp, sizeof tmp, " xmlns='%s'", defaults[arg % 4]);
      xcm__buf_append_str(&tag, tmp);
      break;
    case 2:
      if (nhdr == 0 || arg % 5 == 0)
        snprintf(tmp, sizeof tmp, " xmlns:stream='%s'",
                 arg & 1 ? "http://etherx.jabber.org/streams" : "urn:s");
      else
        snprintf(tmp, sizeof tmp, " xmlns:h%u='urn:%s%u'", arg % nhdr,
                 arg & 1 ? "h" : "other", arg % nhdr);
      xcm__buf_append_str(&tag, tmp);
      break;
    case 3:
      xcm__buf_append_char(&tag, ' ');
      prefix(&tag, arg, nhdr);
      snprintf(tmp, sizeof tmp, ":a%u='v'", arg % 3);
      xcm__buf_append_str(&tag, tmp);
      break;
    case 4:
      snprintf(tmp, sizeof tmp, " a%u='v'", arg % 3);
      xcm__buf_append_str(&tag, tmp);
      break;
    case 5:
      if (arg & 0x80) {
        snprintf(tmp, sizeof tmp, "<c xmlns='%s'/>", defaults[arg % 4]);
        xcm__buf_append_str(&body, tmp);
      } else {
        xcm__buf_append_char(&body, '<');
        prefix(&body, arg, nhdr);
        xcm__buf_append_str(&body, ":c/>");
      }
      break;
    case 6:
      snprintf(tmp, sizeof tmp, "t%u", arg);
      xcm__buf_append_str(&body, tmp);
      break;
    default: {
      xcm_buf p;

      xcm__buf_init(&p, NULL);
      prefix(&p, arg, nhdr);
      snprintf(name_prefix, sizeof name_prefix, "%.*s:", (int)p.len, p.data);
      xcm__buf_free(&p);
      has_prefix = 1;
    }
    }
  }
  snprintf(tmp, sizeof tmp, "<%smessage", has_prefix ? name_prefix : "");
  xcm__buf_append_str(b, tmp);
  xcm__buf_append(b, tag.data, tag.len);
  xcm__buf_append_char(b, '>');
  xcm__buf_append(b, body.data, body.len);
  snprintf(tmp, sizeof tmp, "</%smessage>", has_prefix ? name_prefix : "");
  xcm__buf_append_str(b, tmp);
  xcm__buf_free(&tag);
  xcm__buf_free(&body);
}

static void run(const char *s, size_t len, int scan, size_t piece) {
  static const xcm_xml_callbacks cb = {NULL, NULL, on_stanza, NULL};
  xcm_xml_pool *pool;
  wrap_run w;
  size_t off = 0, consumed;
  int err = 0;

  memset(&w, 0, sizeof w);
  xcm__buf_init(&w.out, NULL);
  if (xcm__xml_pool_new(&pool, NULL, 1) != 0 ||
      xcm__xml_reader_new(&w.r, pool, &cb, &w, NULL) != 0 ||
      xcm__xml_reader_set_scan(w.r, scan) != 0)
    abort();
  while (err == 0 && off < len) {
    size_t n = piece == 0 || len - off < piece ? len - off : piece;

    err = xcm__xml_reader_feed(w.r, s + off, n, &consumed);
    off += consumed;
    if (consumed == 0)
      break;
  }
  check_upstream(&w);
  xcm__xml_reader_free(w.r);
  xcm__xml_pool_free(pool);
  xcm__buf_free(&w.out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const size_t pieces[8] = {0, 1, 2, 3, 7, 16, 61, 500};
  xcm_buf s;

  if (size < 1 || size > 4096)
    return 0;
  xcm__buf_init(&s, NULL);
  make_stream(&s, data, size);
  run(s.data, s.len, 1, pieces[data[0] >> 5]);
  run(s.data, s.len, 0, pieces[data[0] >> 5]);
  xcm__buf_free(&s);
  return 0;
}
