#include "scandiff.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/stream.h"
#include "xml/reader.h"
#include "xml/scan.h"

#define MAX_STANZA 8192
#define MAX_DEPTH 16

static const xcm_xml_nsdecl ctx_client[] = {{"stream", XCM_NS_STREAMS},
                                            {"", XCM_NS_CLIENT}};
static const xcm_xml_nsdecl ctx_cm[] = {{"stream", XCM_NS_STREAMS},
                                        {"", XCM_NS_CM}};
static const xcm_xml_nsdecl ctx_more[] = {{"stream", XCM_NS_STREAMS},
                                          {"", XCM_NS_CLIENT},
                                          {"db", "jabber:server:dialback"},
                                          {"x", "urn:example:x"}};

static const xcm_xml_nsdecl *context_decls(int context, size_t *n) {
  switch (context % XCM_SCANDIFF_CONTEXTS) {
  case 4:
  case 2:
    *n = 0;
    return NULL;
  case 0:
    *n = 2;
    return ctx_client;
  case 1:
    *n = 2;
    return ctx_cm;
  default:
    *n = 4;
    return ctx_more;
  }
}

/* ---- canonical dumps ---------------------------------------------------- */

typedef struct dump {
  char *data;
  size_t len, cap;
  int oom;
} dump;

static void put(dump *d, const char *s, size_t n) {
  if (d->len + n + 1 > d->cap) {
    size_t cap = d->cap ? d->cap : 1024;
    char *p;

    while (d->len + n + 1 > cap)
      cap *= 2;
    p = realloc(d->data, cap);
    if (p == NULL) {
      d->oom = 1;
      return;
    }
    d->data = p;
    d->cap = cap;
  }
  memcpy(d->data + d->len, s, n);
  d->len += n;
  d->data[d->len] = '\0';
}

static void puts_(dump *d, const char *s) {
  put(d, s, strlen(s));
}

static void putf(dump *d, const char *fmt, size_t a, size_t b) {
  char tmp[64];

  snprintf(tmp, sizeof tmp, fmt, a, b);
  puts_(d, tmp);
}

static void dump_node(dump *d, const xcm_xml_node *n) {
  const xcm_xml_node *c;
  size_t i, count = 0;

  puts_(d, "<");
  puts_(d, n->ns);
  puts_(d, "|");
  puts_(d, n->name);
  putf(d, " @%zu+%zu", n->off, n->len);
  for (i = 0; i < n->nattrs; i++) {
    puts_(d, " ");
    puts_(d, n->attrs[i].ns);
    puts_(d, "|");
    puts_(d, n->attrs[i].name);
    puts_(d, "=");
    puts_(d, n->attrs[i].value);
  }
  putf(d, " text%zu:", n->text_len, 0);
  put(d, n->text, n->text_len);
  if (n->text_len > 0 && n->text[n->text_len] != '\0')
    puts_(d, "(unterminated)");
  for (c = n->children; c != NULL; c = c->next) {
    if (c->parent != n)
      puts_(d, "(bad parent)");
    dump_node(d, c);
    count++;
  }
  if (count != n->nchildren)
    puts_(d, "(bad child count)");
  puts_(d, ">");
}

static void dump_stanza(dump *d, const xcm_xml_stanza *st) {
  puts_(d, "S ");
  puts_(d, st->ns);
  puts_(d, "|");
  puts_(d, st->name);
  putf(d, " q%zu d%zu", st->qname_len, (size_t)st->declares_default);
  putf(d, " p%zu len%zu ", (size_t)st->header_prefixes_used, st->len);
  put(d, st->bytes, st->len);
  puts_(d, " ");
  if (st->root != NULL)
    dump_node(d, st->root);
  puts_(d, "\n");
}

/* ---- one reader --------------------------------------------------------- */

typedef struct side {
  xcm_xml_pool *pool;
  xcm_xml_reader *r;
  int levels;
  dump log;
  size_t stanzas;
  int done; /* failed or ended: no more input */
} side;

static int on_header(void *ud, const xcm_xml_header *h) {
  side *s = ud;
  size_t i, nd;

  (void)xcm__xml_reader_decls(s->r, &nd);

  puts_(&s->log, "H ");
  puts_(&s->log, h->ns);
  puts_(&s->log, "|");
  puts_(&s->log, h->name);
  for (i = 0; i < h->nattrs; i++) {
    puts_(&s->log, " ");
    puts_(&s->log, h->attrs[i].ns);
    puts_(&s->log, "|");
    puts_(&s->log, h->attrs[i].name);
    puts_(&s->log, "=");
    puts_(&s->log, h->attrs[i].value);
  }
  for (i = 0; i < h->ndecls; i++) {
    puts_(&s->log, " decl ");
    puts_(&s->log, h->decls[i].prefix);
    puts_(&s->log, "=");
    puts_(&s->log, h->decls[i].uri);
  }
  /* What the reader keeps for the stream must match the event. */
  if (nd != h->ndecls)
    puts_(&s->log, " (kept decls differ)");
  puts_(&s->log, "\n");
  return 0;
}

static int on_start(void *ud, const char *ns, const char *name) {
  side *s = ud;

  (void)ns;
  (void)name;
  return s->levels;
}

static int on_stanza(void *ud, const xcm_xml_stanza *st) {
  side *s = ud;

  s->stanzas++;
  dump_stanza(&s->log, st);
  if (strcmp(st->name, "proceed") == 0 || strcmp(st->name, "success") == 0 ||
      strcmp(st->name, "compressed") == 0) {
    puts_(&s->log, "R\n");
    return XCM_XML_RESTART;
  }
  return 0;
}

static void on_end(void *ud) {
  puts_(&((side *)ud)->log, "E\n");
}

static const xcm_xml_callbacks callbacks = {on_header, on_start, on_stanza,
                                            on_end};

static int side_open(side *s, int context, int levels, int scan) {
  xcm_xml_limits lim = {MAX_STANZA, MAX_DEPTH, 0};
  xcm_xml_context ctx;

  memset(s, 0, sizeof(*s));
  s->levels = levels;
  ctx.decls = context_decls(context, &ctx.ndecls);
  /* The root as the CM names the root of a stream it assumes
   * (proto/stream.c): "stream:stream" where the prefix is bound. */
  ctx.root = ctx.ndecls > 0 ? "stream:stream" : "stream";
  if (xcm__xml_pool_new(&s->pool, NULL, 1) != 0)
    return -1;
  if (xcm__xml_reader_new(&s->r, s->pool, &callbacks, s, &lim) != 0 ||
      xcm__xml_reader_set_scan(s->r, scan) != 0)
    return -1;
  if (context % XCM_SCANDIFF_CONTEXTS != 4 &&
      xcm__xml_reader_assume_header(s->r, &ctx) != 0)
    return -1;
  return 0;
}

static void side_close(side *s) {
  xcm__xml_reader_free(s->r);
  xcm__xml_pool_free(s->pool);
  free(s->log.data);
}

/* Feed one piece as a connection would: after a restart the rest starts
 * a new document; after the end the next feed reports XCM_ECLOSED, which
 * is logged like any error, and nothing more is read. */
static void side_feed(side *s, const char *p, size_t len) {
  while (len > 0 && !s->done) {
    size_t used = 0;
    int err = xcm__xml_reader_feed(s->r, p, len, &used);

    if (used > len) {
      puts_(&s->log, "(consumed more than given)\n");
      s->done = 1;
      return;
    }
    p += used;
    len -= used;
    if (err != 0) {
      putf(&s->log, "X err%zu cond%zu\n", (size_t)-err,
           (size_t)xcm__xml_reader_condition(s->r));
      s->done = 1;
    } else if (used == 0) {
      puts_(&s->log, "(no progress)\n");
      s->done = 1;
    }
  }
}

/* ---- the checks --------------------------------------------------------- */

/* Every proper prefix of an element the scanner took must be declined as
 * cut off, never as anything else: the reader keeps such bytes and scans
 * again rather than lend them a parser. All prefixes of a small element,
 * some of a large one (the scan of each costs its length). */
static const char *prefixes_incomplete(xcm_xml_scan *sc, const char *data,
                                       size_t n) {
  size_t p, step = n <= 512 ? 1 : n / 97;

  for (p = 1; p < n; p += p + 8 >= n ? 1 : step)
    if (xcm__xml_scan_element(sc, data, p, MAX_STANZA, MAX_DEPTH) != 0 ||
        !xcm__xml_scan_incomplete(sc)) {
      fprintf(stderr, "prefix of %zu bytes: %.*s\n", p, (int)p, data);
      return "a prefix of a taken element was not incomplete";
    }
  return NULL;
}

const char *xcm_scandiff_element(const char *data, size_t len, int context,
                                 int levels, int *accepted) {
  static char why[160];
  const xcm_xml_nsdecl *decls;
  const char *dns = "", *result = NULL;
  xcm_xml_scan *sc;
  xcm_xml_stanza st;
  dump want = {0};
  side ex;
  size_t n, nd, i, used = 0;

  *accepted = 0;
  if (context % XCM_SCANDIFF_CONTEXTS == 4)
    context = 2; /* an element needs a stream around it */
  decls = context_decls(context, &nd);
  for (i = 0; i < nd; i++)
    if (decls[i].prefix[0] == '\0')
      dns = decls[i].uri;
  if (xcm__xml_scan_new(&sc, NULL) != 0)
    return "out of memory";
  n = xcm__xml_scan_element(sc, data, len, MAX_STANZA, MAX_DEPTH);
  if (n == 0 || xcm__xml_scan_build(sc, data, n, levels, dns, &st) != 0) {
    xcm__xml_scan_free(sc);
    return NULL;
  }
  *accepted = 1;
  if (n > len)
    result = "the scanner claimed more bytes than it was given";
  else
    dump_stanza(&want, &st);
  if (result == NULL)
    result = prefixes_incomplete(sc, data, n);
  xcm__xml_scan_free(sc);
  if (result != NULL || want.oom) {
    free(want.data);
    return result ? result : "out of memory";
  }

  if (side_open(&ex, context, levels, 0) != 0) {
    result = "out of memory";
  } else if (xcm__xml_reader_feed(ex.r, data, n, &used) != 0) {
    snprintf(why, sizeof why, "expat refused what the scanner accepted: %s",
             xcm__xml_reader_error_text(ex.r));
    result = why;
  } else if (used != n || ex.stanzas != 1) {
    result = "expat saw a different extent";
  } else if (ex.log.oom || strncmp(ex.log.data, want.data, want.len) != 0 ||
             (ex.log.len != want.len &&
              strcmp(ex.log.data + want.len, "R\n") != 0)) {
    fprintf(stderr, "scanner: %sexpat:   %s", want.data,
            ex.log.data ? ex.log.data : "(nothing)\n");
    result = "the scanner's stanza differs from expat's";
  }
  side_close(&ex);
  free(want.data);
  return result;
}

const char *xcm_scandiff_stream(const char *data, size_t len, int context,
                                int levels, const unsigned char *splits,
                                size_t nsplits, size_t *scanned) {
  const char *result = NULL;
  side a, b;
  size_t off = 0, k = 0;

  if (scanned != NULL)
    *scanned = 0;
  if (side_open(&a, context, levels, 1) != 0 ||
      side_open(&b, context, levels, 0) != 0)
    return "out of memory";
  while (off < len) {
    size_t piece = nsplits ? (size_t)splits[k++ % nsplits] + 1 : len;

    if (piece > len - off)
      piece = len - off;
    side_feed(&a, data + off, piece);
    side_feed(&b, data + off, piece);
    off += piece;
  }
  if (a.log.oom || b.log.oom)
    result = "out of memory";
  else if ((a.log.data == NULL) != (b.log.data == NULL) ||
           (a.log.data != NULL && strcmp(a.log.data, b.log.data) != 0)) {
    fprintf(stderr, "with the scanner:\n%s\nwithout:\n%s\n",
            a.log.data ? a.log.data : "", b.log.data ? b.log.data : "");
    result = "a reader that scans differs from one that does not";
  } else if (!a.done &&
             xcm__xml_reader_offset(a.r) != xcm__xml_reader_offset(b.r)) {
    /* After an error the offsets may differ: a failed piece counts as
     * unread, but the scanner hands over its stanzas one by one. */
    result = "the readers consumed different amounts";
  }
  if (scanned != NULL)
    *scanned = (size_t)xcm__xml_pool_scanned(a.pool);
  side_close(&a);
  side_close(&b);
  return result;
}
