/* The XML stream reader: events, byte ranges, splits, restarts, restricted
 * XML, limits, and memory that follows activity. */
#include <dirent.h>
#include <malloc.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "util/buf.h"
#include "xcm/error.h"
#include "proto/stream.h"
#include "xml/element.h"
#include "xml/reader.h"

#define STREAM_HDR                                                             \
  "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' "            \
  "xmlns='jabber:client' to='example.test' version='1.0'>"

typedef struct log_ctx {
  xcm_buf log;
  xcm_xml_reader *r;
  int tree_levels;
  const char *restart_on; /* element name that ends the document */
  int stanzas;
  int ends;
} log_ctx;

/* The log stays NUL-terminated so tests can search it. */
static void log_mem(log_ctx *c, const char *s, size_t len) {
  xcm__buf_append(&c->log, s, len);
  if (xcm__buf_reserve(&c->log, 1) == 0)
    c->log.data[c->log.len] = '\0';
}

static void log_str(log_ctx *c, const char *s) {
  log_mem(c, s, strlen(s));
}

static int cb_header(void *ud, const xcm_xml_header *h) {
  log_ctx *c = ud;
  size_t i;

  log_str(c, "H{");
  log_str(c, h->ns);
  log_str(c, "}");
  log_str(c, h->name);
  for (i = 0; i < h->nattrs; i++) {
    log_str(c, " ");
    log_str(c, h->attrs[i].name);
    log_str(c, "=");
    log_str(c, h->attrs[i].value);
  }
  for (i = 0; i < h->ndecls; i++) {
    log_str(c, " ns:");
    log_str(c, h->decls[i].prefix);
    log_str(c, "=");
    log_str(c, h->decls[i].uri);
  }
  log_str(c, "\n");
  return 0;
}

static int cb_stanza_start(void *ud, const char *ns, const char *name) {
  log_ctx *c = ud;

  (void)ns;
  (void)name;
  return c->tree_levels;
}

static void log_node(log_ctx *c, const xcm_xml_stanza *s,
                     const xcm_xml_node *n) {
  const xcm_xml_node *k;
  size_t i;

  log_str(c, "(");
  log_str(c, n->name);
  for (i = 0; i < n->nattrs; i++) {
    log_str(c, " ");
    log_str(c, n->attrs[i].name);
    log_str(c, "=");
    log_str(c, n->attrs[i].value);
  }
  if (n->text_len) {
    log_str(c, " '");
    log_mem(c, n->text, n->text_len);
    log_str(c, "'");
  }
  /* The node's byte range must be exactly its element. */
  if (n->off + n->len > s->len || s->bytes[n->off] != '<' ||
      s->bytes[n->off + n->len - 1] != '>')
    log_str(c, " BADRANGE");
  for (k = n->children; k != NULL; k = k->next)
    log_node(c, s, k);
  log_str(c, ")");
}

static int cb_stanza(void *ud, const xcm_xml_stanza *s) {
  log_ctx *c = ud;
  char num[64];

  c->stanzas++;
  /* Names and URIs whole: a fixed buffer here would hide long ones. */
  log_str(c, "S{");
  log_str(c, s->ns);
  log_str(c, "}");
  log_str(c, s->name);
  snprintf(num, sizeof num, " d%d u%u [", s->declares_default,
           (unsigned)s->header_prefixes_used);
  log_str(c, num);
  log_mem(c, s->bytes, s->len);
  log_str(c, "]");
  if (s->root != NULL)
    log_node(c, s, s->root);
  log_str(c, "\n");
  if (c->restart_on != NULL && strcmp(s->name, c->restart_on) == 0) {
    log_str(c, "RESTART\n");
    return XCM_XML_RESTART;
  }
  return 0;
}

static void cb_end(void *ud) {
  log_ctx *c = ud;

  c->ends++;
  log_str(c, "E\n");
}

static const xcm_xml_callbacks callbacks = {cb_header, cb_stanza_start,
                                            cb_stanza, cb_end};

typedef struct fixture {
  xcm_xml_pool *pool;
  log_ctx ctx;
} fixture;

/* Whether fixtures made from now on let the scanner read first. */
static int fx_scan;

static void fx_init(fixture *f, const xcm_xml_limits *limits) {
  memset(f, 0, sizeof(*f));
  REQUIRE(xcm__xml_pool_new(&f->pool, NULL, 4) == 0);
  xcm__buf_init(&f->ctx.log, NULL);
  REQUIRE(xcm__xml_reader_new(&f->ctx.r, f->pool, &callbacks, &f->ctx,
                              limits) == 0);
  REQUIRE(xcm__xml_reader_set_scan(f->ctx.r, fx_scan) == 0);
}

static void fx_free(fixture *f) {
  xcm__xml_reader_free(f->ctx.r);
  CHECK_INT(xcm__xml_pool_busy(f->pool), 0);
  xcm__xml_pool_free(f->pool);
  xcm__buf_free(&f->ctx.log);
}

/* Feed data in the given pieces (sizes cycle through split(); 0 means
 * whole), following restarts, and return the reader's final result. */
static int feed_split(fixture *f, const char *data, size_t len,
                      size_t (*split)(size_t left)) {
  size_t off = 0, consumed, n;
  int err;

  while (off < len) {
    n = split ? split(len - off) : len - off;
    err = xcm__xml_reader_feed(f->ctx.r, data + off, n, &consumed);
    off += consumed;
    if (err != 0)
      return err;
    if (f->ctx.ends > 0)
      return 0; /* the stream ended; the rest is not ours */
  }
  return 0;
}

static size_t split_one(size_t left) {
  (void)left;
  return 1;
}

static size_t split_random(size_t left) {
  size_t n = 1 + xcm_test_rand() % 37;
  return n < left ? n : left;
}

static size_t split_large(size_t left) {
  size_t n = 1 + xcm_test_rand() % 5000;
  return n < left ? n : left;
}

/* Parse data whole, at random, and byte by byte: all three must give the
 * same events. Returns the whole-feed log (caller frees). */
static char *events_all_ways_limited(const char *data, int tree_levels,
                                     const char *restart_on,
                                     const xcm_xml_limits *limits,
                                     int *result) {
  size_t (*splits[])(size_t) = {NULL, split_random, split_one, split_large};
  enum { NSPLITS = sizeof(splits) / sizeof(splits[0]) };
  char *first = NULL;
  int first_err = 0, scan_was = fx_scan;
  size_t i;

  /* Each split with expat alone, then with the scanner first: a stanza
   * cut off by a split is kept as bytes, scanned again, or handed to
   * expat, and none of that may show. */
  for (i = 0; i < 2 * NSPLITS; i++) {
    fixture f;
    int err;

    fx_scan = i >= NSPLITS;
    fx_init(&f, limits);
    f.ctx.tree_levels = tree_levels;
    f.ctx.restart_on = restart_on;
    err = feed_split(&f, data, strlen(data), splits[i % NSPLITS]);
    if (err != 0) {
      char line[128];
      snprintf(line, sizeof line, "ERR %s %s\n",
               xcm_cond_name(xcm__xml_reader_condition(f.ctx.r)),
               xcm_err_name(err));
      log_str(&f.ctx, line);
    }
    log_str(&f.ctx, "");
    if (i == 0) {
      first = strdup(f.ctx.log.data);
      first_err = err;
    } else if (!CHECK_STR(f.ctx.log.data, first)) {
      xcm_test_note("split strategy %zu differs", i);
    }
    fx_free(&f);
  }
  fx_scan = scan_was;
  *result = first_err;
  return first;
}

static char *events_all_ways(const char *data, int tree_levels,
                             const char *restart_on, int *result) {
  return events_all_ways_limited(data, tree_levels, restart_on, NULL, result);
}

static void test_header_and_stanzas(void) {
  int err;
  char *log = events_all_ways(
      "<?xml version='1.0'?>" STREAM_HDR "<message to='a@b'><body>hi</body>"
      "</message> \n<presence/><iq type='get' id='1'><query "
      "xmlns='jabber:iq:roster'/></iq></stream:stream>",
      0, NULL, &err);

  CHECK_INT(err, 0);
  CHECK_STR(log, "H{http://etherx.jabber.org/streams}stream to=example.test "
                 "version=1.0 ns:stream=http://etherx.jabber.org/streams "
                 "ns:=jabber:client\n"
                 "S{jabber:client}message d0 u0 [<message "
                 "to='a@b'><body>hi</body></message>]\n"
                 "S{jabber:client}presence d0 u0 [<presence/>]\n"
                 "S{jabber:client}iq d0 u0 [<iq type='get' id='1'><query "
                 "xmlns='jabber:iq:roster'/></iq>]\n"
                 "E\n");
  free(log);
}

static void test_tree(void) {
  int err;
  char *log = events_all_ways(
      STREAM_HDR "<message from='x&amp;y' to=\"&lt;z&gt;\">a<body>h&#233;llo "
                 "&lt;b&gt; \xe2\x98\x83</body>b<x xmlns='urn:x'><y "
                 "k='v'/></x>c</message>",
      2, NULL, &err);

  CHECK_INT(err, 0);
  CHECK_STR(log, "H{http://etherx.jabber.org/streams}stream to=example.test "
                 "version=1.0 ns:stream=http://etherx.jabber.org/streams "
                 "ns:=jabber:client\n"
                 "S{jabber:client}message d0 u0 [<message from='x&amp;y' "
                 "to=\"&lt;z&gt;\">a<body>h&#233;llo &lt;b&gt; "
                 "\xe2\x98\x83</body>b<x xmlns='urn:x'><y "
                 "k='v'/></x>c</message>](message from=x&y to=<z> "
                 "'abc'(body 'h\xc3\xa9llo <b> \xe2\x98\x83')(x))\n");
  free(log);
}

static void test_namespaces_of_stanza(void) {
  int err;
  char *log = events_all_ways(
      "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' "
      "xmlns='jabber:client' xmlns:foo='urn:foo' xmlns:bar='urn:bar'>"
      "<message xmlns='jabber:client'/>"
      "<message><foo:x/></message>"
      "<message xmlns:foo='urn:other'><foo:x/></message>"
      "<message><x bar:a='1'/><stream:error/></message>",
      0, NULL, &err);

  CHECK_INT(err, 0);
  /* decls are indexed stream=0, ''=1, foo=2, bar=3 */
  CHECK(strstr(log, "S{jabber:client}message d1 u0 [<message "
                    "xmlns='jabber:client'/>]") != NULL);
  CHECK(strstr(log, "d0 u4 [<message><foo:x/></message>]") != NULL);
  CHECK(strstr(log, "d0 u0 [<message xmlns:foo='urn:other'>") != NULL);
  CHECK(strstr(log, "d0 u9 [<message><x bar:a='1'/>") != NULL);
  free(log);
}

/* Past any number of declarations on a stanza's start tag the reader
 * still knows exactly whether the default namespace was declared there
 * and which header prefixes were redeclared: the route framing adds
 * what is missing, and adding one twice breaks the upstream link. */
static void test_namespaces_many_decls(void) {
  static const struct {
    const char *redecl, *body, *want;
  } cases[] = {
      {" xmlns='urn:ietf:params:xml:ns:xmpp-sasl'", "/>",
       "S{urn:ietf:params:xml:ns:xmpp-sasl}auth d1 u0 ["},
      {" xmlns:foo='urn:other'", "><foo:x bar:a='1'/></auth>",
       "S{jabber:client}auth d0 u8 ["},
      {" xmlns:bar='urn:bar' xmlns='' xmlns:foo='urn:foo'",
       "><foo:x bar:a='1'/></auth>", "S{}auth d1 u0 ["},
      {"", "><foo:x/></auth>", "S{jabber:client}auth d0 u4 ["},
  };
  static const size_t counts[] = {16, 17, 33};
  size_t i, c, k, at;

  for (fx_scan = 0; fx_scan <= 1; fx_scan++)
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++)
      for (c = 0; c < sizeof counts / sizeof counts[0]; c++)
        for (at = 14; at <= counts[c]; at += 3) {
          xcm_buf in;
          char tmp[64];
          char *log;
          int err;

          xcm__buf_init(&in, NULL);
          xcm__buf_append_str(&in,
                              "<stream:stream "
                              "xmlns:stream='http://etherx.jabber.org/streams' "
                              "xmlns='jabber:client' xmlns:foo='urn:foo' "
                              "xmlns:bar='urn:bar'><auth");
          for (k = 0; k <= counts[c]; k++) {
            if (k == at)
              xcm__buf_append_str(&in, cases[i].redecl);
            if (k == counts[c])
              break;
            snprintf(tmp, sizeof tmp, " xmlns:p%zu='urn:p'", k);
            xcm__buf_append_str(&in, tmp);
          }
          xcm__buf_append_str(&in, cases[i].body);
          xcm__buf_append_char(&in, '\0');
          log = events_all_ways(in.data, 2, NULL, &err);
          if (!CHECK_INT(err, 0) || !CHECK(strstr(log, cases[i].want) != NULL))
            xcm_test_note("scan %d case %zu, %zu declarations at %zu: %s",
                          fx_scan, i, counts[c], at, log);
          free(log);
          xcm__buf_free(&in);
        }
  fx_scan = 0;
}

static void test_restart_mid_buffer(void) {
  int err;
  char *log = events_all_ways(
      STREAM_HDR
      "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"
      "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>" STREAM_HDR
      "<iq type='set' id='b'/></stream:stream>",
      0, "success", &err);

  CHECK_INT(err, 0);
  CHECK_STR(log, "H{http://etherx.jabber.org/streams}stream to=example.test "
                 "version=1.0 ns:stream=http://etherx.jabber.org/streams "
                 "ns:=jabber:client\n"
                 "S{urn:ietf:params:xml:ns:xmpp-sasl}auth d1 u0 [<auth "
                 "xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>]\n"
                 "S{urn:ietf:params:xml:ns:xmpp-sasl}success d1 u0 [<success "
                 "xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>]\nRESTART\n"
                 "H{http://etherx.jabber.org/streams}stream to=example.test "
                 "version=1.0 ns:stream=http://etherx.jabber.org/streams "
                 "ns:=jabber:client\n"
                 "S{jabber:client}iq d0 u0 [<iq type='set' id='b'/>]\nE\n");
  free(log);
}

static void test_restart_consumed(void) {
  fixture f;
  const char *d =
      STREAM_HDR "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\x16\x03";
  size_t consumed;

  fx_init(&f, NULL);
  f.ctx.restart_on = "proceed";
  CHECK_INT(xcm__xml_reader_feed(f.ctx.r, d, strlen(d), &consumed), 0);
  /* The TLS bytes after <proceed/> are left for the caller. */
  CHECK_INT(consumed, strlen(d) - 2);
  CHECK(!xcm__xml_reader_in_stream(f.ctx.r));
  CHECK_INT(xcm__xml_pool_busy(f.pool), 0);
  fx_free(&f);
}

typedef struct bad_case {
  const char *cls; /* for the README's table */
  const char *name;
  const char *input;
  xcm_cond cond;
} bad_case;

static void test_restricted_xml(void) {
  static const bad_case cases[] = {
      {"restricted-xml", "doctype", "<!DOCTYPE stream:stream>" STREAM_HDR,
       XCM_COND_RESTRICTED_XML},
      {"restricted-xml", "entity decl",
       "<!DOCTYPE s [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b "
       "'&a;&a;&a;'>]>" STREAM_HDR "<message>&b;</message>",
       XCM_COND_RESTRICTED_XML},
      {"restricted-xml", "comment before", "<!-- hi -->" STREAM_HDR,
       XCM_COND_RESTRICTED_XML},
      {"restricted-xml", "comment in stanza",
       STREAM_HDR "<message><!-- hi --></message>", XCM_COND_RESTRICTED_XML},
      {"restricted-xml", "comment between", STREAM_HDR "<presence/><!-- hi -->",
       XCM_COND_RESTRICTED_XML},
      {"restricted-xml", "pi", STREAM_HDR "<message><?php echo 1; ?></message>",
       XCM_COND_RESTRICTED_XML},
      {"restricted-xml", "pi before header", "<?foo bar?>" STREAM_HDR,
       XCM_COND_RESTRICTED_XML},
      {"restricted-xml", "undefined entity",
       STREAM_HDR "<message>&nbsp;</message>", XCM_COND_RESTRICTED_XML},
      {"unbound-prefixes", "unbound prefix",
       STREAM_HDR "<message><x:body/></message>", XCM_COND_NOT_WELL_FORMED},
      {"unbound-prefixes", "unbound attr prefix",
       STREAM_HDR "<message x:a='1'/>", XCM_COND_NOT_WELL_FORMED},
      {"unbound-prefixes", "unbound stanza prefix", STREAM_HDR "<db:result/>",
       XCM_COND_NOT_WELL_FORMED},
      {"malformed-xml", "mismatched tag", STREAM_HDR "<message></presence>",
       XCM_COND_NOT_WELL_FORMED},
      {"malformed-xml", "bad char", STREAM_HDR "<message>\x01</message>",
       XCM_COND_NOT_WELL_FORMED},
      {"invalid-utf8", "invalid utf-8",
       STREAM_HDR "<message>\xc3\x28</message>", XCM_COND_NOT_WELL_FORMED},
      {"invalid-utf8", "overlong utf-8",
       STREAM_HDR "<message>\xc0\xaf</message>", XCM_COND_NOT_WELL_FORMED},
      {"malformed-xml", "latin1 declared",
       "<?xml version='1.0' encoding='ISO-8859-1'?>" STREAM_HDR,
       XCM_COND_UNSUPPORTED_ENCODING},
      {"malformed-xml", "text at depth 1", STREAM_HDR "hello",
       XCM_COND_BAD_FORMAT},
      {"malformed-xml", "duplicate attribute",
       STREAM_HDR "<message to='a' to='b'/>", XCM_COND_NOT_WELL_FORMED},
      {"malformed-xml", "xml decl later", STREAM_HDR "<?xml version='1.0'?>",
       XCM_COND_NOT_WELL_FORMED},
      {"malformed-xml", "junk after end", STREAM_HDR "</stream:stream><x/>",
       XCM_COND_NONE},
  };
  size_t i;

  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    unsigned before = xcm_test_failures();
    int err;
    char *log = events_all_ways(cases[i].input, 0, NULL, &err);
    char want[128];

    if (cases[i].cond == XCM_COND_NONE) {
      CHECK_INT(err, 0);
    } else {
      snprintf(want, sizeof want, "ERR %s ", xcm_cond_name(cases[i].cond));
      if (!CHECK(strstr(log, want) != NULL))
        xcm_test_note("case '%s' gave: %s", cases[i].name, log);
      CHECK(err < 0);
    }
    free(log);
    xcm_test_tried(cases[i].cls, before);
  }
}

static void test_error_is_sticky(void) {
  fixture f;
  const char *d = STREAM_HDR "<!-- x -->";
  size_t consumed;

  fx_init(&f, NULL);
  CHECK_INT(xcm__xml_reader_feed(f.ctx.r, d, strlen(d), &consumed), XCM_EXML);
  CHECK_INT(xcm__xml_reader_condition(f.ctx.r), XCM_COND_RESTRICTED_XML);
  CHECK_STR(xcm__xml_reader_error_text(f.ctx.r), "comments are not allowed");
  CHECK_INT(xcm__xml_reader_feed(f.ctx.r, "<presence/>", 11, &consumed),
            XCM_EXML);
  CHECK_INT(xcm__xml_pool_busy(f.pool), 0);
  fx_free(&f);
}

/* Builds a stream whose one stanza is exactly size bytes. */
static void stanza_of_size(char *out, size_t size) {
  size_t fill = size - strlen("<message><body></body></message>");

  strcpy(out, STREAM_HDR "<message><body>");
  memset(out + strlen(out), 'x', fill);
  strcpy(out + strlen(STREAM_HDR "<message><body>") + fill,
         "</body></message>");
}

static void test_stanza_limit(void) {
  xcm_xml_limits lim = {200, 8, 0};
  fixture f;
  char big[600];
  unsigned before;
  int err;

  /* Exactly at the limit passes, in any split. */
  fx_init(&f, &lim);
  stanza_of_size(big, 200);
  CHECK_INT(strlen(big) - strlen(STREAM_HDR), 200);
  CHECK_INT(feed_split(&f, big, strlen(big), split_random), 0);
  CHECK_INT(f.ctx.stanzas, 1);
  fx_free(&f);

  /* One byte more fails, in any split. */
  before = xcm_test_failures();
  fx_init(&f, &lim);
  stanza_of_size(big, 201);
  err = feed_split(&f, big, strlen(big), split_random);
  CHECK_INT(err, XCM_ELIMIT);
  CHECK_INT(xcm__xml_reader_condition(f.ctx.r), XCM_COND_POLICY_VIOLATION);
  CHECK_INT(f.ctx.stanzas, 0);
  fx_free(&f);
  xcm_test_tried("oversized", before);

  before = xcm_test_failures();
  fx_init(&f, &lim);
  err = feed_split(&f, big, strlen(big), NULL);
  CHECK_INT(err, XCM_ELIMIT);
  fx_free(&f);
  xcm_test_tried("oversized", before);
}

/* n copies of c, NUL-terminated (caller frees). */
static char *repeat(char c, size_t n) {
  char *p = malloc(n + 1);

  REQUIRE(p != NULL);
  memset(p, c, n);
  p[n] = '\0';
  return p;
}

/* Stanza is one whole feed; want is a substring of the log of events (the
 * stanza and its tree, or "ERR <cond> "). Counted as one hostile input of
 * the class "length-extremes" if every split agrees and want is there. */
static void try_extreme(const char *what, const char *stanza, const char *want,
                        int want_err) {
  xcm_xml_limits lim = {8192, 8, 0};
  unsigned before = xcm_test_failures();
  xcm_buf in;
  char *log;
  int err;

  xcm__buf_init(&in, NULL);
  xcm__buf_append_str(&in, STREAM_HDR);
  xcm__buf_append_str(&in, stanza);
  REQUIRE(xcm__buf_reserve(&in, 1) == 0);
  in.data[in.len] = '\0';
  log = events_all_ways_limited(in.data, 1, NULL, &lim, &err);
  CHECK_INT(err, want_err);
  if (!CHECK(strstr(log, want) != NULL))
    xcm_test_note("%s: %.300s", what, log);
  free(log);
  xcm__buf_free(&in);
  xcm_test_tried("length-extremes", before);
}

/* Names, attributes, prefixes and namespace URIs of extreme lengths: long
 * ones within the stanza limit come through whole (no fixed buffer cuts
 * them), past it they are refused, and empty or missing ones are not
 * well-formed. The limit is 8,192 bytes. */
static void test_length_extremes(void) {
  char *name = repeat('n', 7000), *big = repeat('n', 9000);
  char *val = repeat('v', 7000), *uri = repeat('u', 6000);
  char *pfx = repeat('p', 3000);
  char *stanza = malloc(20000), *want = malloc(20000);
  char *many;
  size_t i, n;

  REQUIRE(stanza != NULL && want != NULL);

  /* Element name: long, then past the limit. */
  snprintf(stanza, 20000, "<%s/>", name);
  snprintf(want, 20000, "S{jabber:client}%s d0 u0 [<%s/>](%s)", name, name,
           name);
  try_extreme("long element name", stanza, want, 0);
  snprintf(stanza, 20000, "<%s/>", big);
  try_extreme("element name past the limit", stanza, "ERR policy-violation ",
              XCM_ELIMIT);
  /* Inside the stanza, a long child name. */
  snprintf(stanza, 20000, "<message><%s/></message>", name);
  try_extreme("long child name", stanza, name, 0);

  /* Attribute name and value: long, past the limit, empty. */
  snprintf(stanza, 20000, "<message %s='1'/>", name);
  snprintf(want, 20000, "(message %s=1)", name);
  try_extreme("long attribute name", stanza, want, 0);
  snprintf(stanza, 20000, "<message a='%s'/>", val);
  snprintf(want, 20000, "(message a=%s)", val);
  try_extreme("long attribute value", stanza, want, 0);
  snprintf(stanza, 20000, "<message a='%s'/>", big);
  try_extreme("attribute value past the limit", stanza, "ERR policy-violation ",
              XCM_ELIMIT);
  try_extreme("empty attribute value", "<message a=''/>", "(message a=)", 0);
  try_extreme("one-letter names", "<m a='b'><c/></m>",
              "S{jabber:client}m d0 u0 [<m a='b'><c/></m>](m a=b)", 0);
  try_extreme("empty attribute name", "<message ='x'/>", "ERR not-well-formed ",
              XCM_EXML);
  try_extreme("empty element name", "< a='x'/>", "ERR not-well-formed ",
              XCM_EXML);
  try_extreme("empty end tag", "<message></>", "ERR not-well-formed ",
              XCM_EXML);

  /* Many attributes: 700 distinct ones in one element. */
  n = 0;
  n += (size_t)snprintf(stanza + n, 20000 - n, "<message");
  for (i = 0; i < 700; i++)
    n += (size_t)snprintf(stanza + n, 20000 - n, " a%zu='%zu'", i, i);
  snprintf(stanza + n, 20000 - n, "/>");
  try_extreme("700 attributes", stanza, " a699=699)", 0);

  /* A long prefix and a long namespace URI on the stanza. */
  snprintf(stanza, 20000, "<message xmlns:%s='urn:x'><%s:x/></message>", pfx,
           pfx);
  try_extreme("long prefix", stanza, "S{jabber:client}message d0 u0 [", 0);
  snprintf(stanza, 20000, "<message xmlns='%s'/>", uri);
  snprintf(want, 20000, "S{%s}message d1 u0", uri);
  try_extreme("long namespace URI", stanza, want, 0);
  snprintf(stanza, 20000, "<message xmlns='%s%s'/>", uri, pfx);
  try_extreme("namespace URI past the limit", stanza, "ERR policy-violation ",
              XCM_ELIMIT);
  try_extreme("empty prefix declaration", "<message xmlns:p=''/>",
              "ERR not-well-formed ", XCM_EXML);

  /* The header: 16 prefixes pass, a 17th is refused. */
  many = malloc(4096);
  REQUIRE(many != NULL);
  for (i = 16; i <= 17; i++) {
    xcm_xml_limits lim = {8192, 8, 0};
    unsigned before = xcm_test_failures();
    size_t k;
    int err;
    char *log;

    n = (size_t)snprintf(many, 4096,
                         "<stream:stream xmlns:stream='http://etherx.jabber."
                         "org/streams' xmlns='jabber:client'");
    /* stream and the default count: i - 2 more. */
    for (k = 0; k + 2 < i; k++)
      n += (size_t)snprintf(many + n, 4096 - n, " xmlns:p%zu='urn:%zu'", k, k);
    snprintf(many + n, 4096 - n, "><presence/>");
    log = events_all_ways_limited(many, 0, NULL, &lim, &err);
    if (i == 16) {
      CHECK_INT(err, 0);
      CHECK(strstr(log, "[<presence/>]") != NULL);
    } else {
      CHECK_INT(err, XCM_ELIMIT);
      if (!CHECK(strstr(log, "ERR policy-violation ") != NULL))
        xcm_test_note("17 header prefixes: %s", log);
    }
    free(log);
    xcm_test_tried("length-extremes", before);
  }
  free(many);
  free(stanza);
  free(want);
  free(name);
  free(big);
  free(val);
  free(uri);
  free(pfx);
}

/* A start tag that never ends must not make the reader (or expat) buffer
 * without bound. */
static void test_endless_start_tag(void) {
  xcm_xml_limits lim = {1000, 8, 0};
  fixture f;
  char chunk[512];
  size_t consumed, total = 0;
  unsigned before = xcm_test_failures();
  int err = 0, i;

  fx_init(&f, &lim);
  REQUIRE(xcm__xml_reader_feed(f.ctx.r, STREAM_HDR "<message to='",
                               strlen(STREAM_HDR "<message to='"),
                               &consumed) == 0);
  memset(chunk, 'a', sizeof chunk);
  for (i = 0; i < 100 && err == 0; i++) {
    err = xcm__xml_reader_feed(f.ctx.r, chunk, sizeof chunk, &consumed);
    total += sizeof chunk;
  }
  CHECK_INT(err, XCM_ELIMIT);
  CHECK(total <= 1024 + 512);
  CHECK_INT(xcm__xml_reader_condition(f.ctx.r), XCM_COND_POLICY_VIOLATION);
  fx_free(&f);
  xcm_test_tried("oversized", before);
}

static void test_header_limit(void) {
  xcm_xml_limits lim = {200, 8, 0};
  fixture f;
  char hdr[1024];
  size_t n;
  unsigned before = xcm_test_failures();
  int err;

  fx_init(&f, &lim);
  strcpy(hdr, "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' "
              "to='");
  n = strlen(hdr);
  memset(hdr + n, 'a', 600);
  strcpy(hdr + n + 600, "'>");
  err = feed_split(&f, hdr, strlen(hdr), split_random);
  CHECK_INT(err, XCM_ELIMIT);
  fx_free(&f);
  xcm_test_tried("oversized", before);
  /* In one piece too: the check is exact, not only between pieces. */
  before = xcm_test_failures();
  fx_init(&f, &lim);
  err = feed_split(&f, hdr, strlen(hdr), NULL);
  CHECK_INT(err, XCM_ELIMIT);
  fx_free(&f);
  xcm_test_tried("oversized", before);
}

static void test_depth_limit(void) {
  xcm_xml_limits lim = {10000, 4, 0};
  unsigned before;
  int err;
  fixture f;

  fx_init(&f, &lim);
  err = feed_split(&f, STREAM_HDR "<a><b><c><d/></c></b></a>",
                   strlen(STREAM_HDR "<a><b><c><d/></c></b></a>"), NULL);
  CHECK_INT(err, 0);
  CHECK_INT(f.ctx.stanzas, 1);
  fx_free(&f);

  before = xcm_test_failures();
  fx_init(&f, &lim);
  err = feed_split(&f, STREAM_HDR "<a><b><c><d><e/></d></c></b></a>",
                   strlen(STREAM_HDR "<a><b><c><d><e/></d></c></b></a>"),
                   split_one);
  CHECK_INT(err, XCM_ELIMIT);
  CHECK_INT(xcm__xml_reader_condition(f.ctx.r), XCM_COND_POLICY_VIOLATION);
  CHECK_INT(f.ctx.stanzas, 0);
  fx_free(&f);
  xcm_test_tried("deep-nesting", before);
}

static void test_deep_nesting_attack(void) {
  xcm_xml_limits lim = {1 << 20, 32, 0};
  fixture f;
  xcm_buf b;
  unsigned before = xcm_test_failures();
  int i, err;

  xcm__buf_init(&b, NULL);
  xcm__buf_append_str(&b, STREAM_HDR);
  for (i = 0; i < 100000; i++)
    xcm__buf_append_str(&b, "<a>");
  fx_init(&f, &lim);
  err = feed_split(&f, b.data, b.len, split_large);
  CHECK_INT(err, XCM_ELIMIT);
  CHECK_INT(xcm__xml_reader_condition(f.ctx.r), XCM_COND_POLICY_VIOLATION);
  fx_free(&f);
  xcm__buf_free(&b);
  xcm_test_tried("deep-nesting", before);
}

/* The stanza is handed over on its last byte, not when more arrive. */
static void test_no_deferral(void) {
  fixture f;
  const char *d = STREAM_HDR "<message><body>x</body></message>";
  size_t i, consumed, hdr = strlen(STREAM_HDR);

  fx_init(&f, NULL);
  for (i = 0; i < strlen(d); i++) {
    REQUIRE(xcm__xml_reader_feed(f.ctx.r, d + i, 1, &consumed) == 0);
    if (i + 1 < strlen(d))
      CHECK_INT(f.ctx.stanzas, 0);
    if (i + 1 == hdr)
      CHECK(strstr(f.ctx.log.data ? f.ctx.log.data : "", "H{") != NULL);
  }
  CHECK_INT(f.ctx.stanzas, 1);
  fx_free(&f);
}

static void test_shrink_and_resume(void) {
  fixture f;
  const char *hdr = "<stream:stream xmlns:stream='http://etherx.jabber.org/"
                    "streams' xmlns='jabber:client' xmlns:x='urn:x'>";
  size_t consumed;

  fx_init(&f, NULL);
  REQUIRE(xcm__xml_reader_feed(f.ctx.r, hdr, strlen(hdr), &consumed) == 0);
  CHECK_INT(xcm__xml_pool_busy(f.pool), 1);
  CHECK_INT(xcm__xml_reader_shrink(f.ctx.r), 1);
  CHECK_INT(xcm__xml_pool_busy(f.pool), 0);
  CHECK_INT(xcm__xml_pool_idle(f.pool), 1);

  /* After the slot went back, the header's prefixes are still bound. */
  REQUIRE(xcm__xml_reader_feed(f.ctx.r, "<message><x:y/></message>  ", 27,
                               &consumed) == 0);
  CHECK_INT(f.ctx.stanzas, 1);
  CHECK(strstr(f.ctx.log.data, "u4 [<message><x:y/></message>]") != NULL);
  CHECK_INT(xcm__xml_reader_shrink(f.ctx.r), 1);

  /* Mid-stanza the slot must stay. */
  REQUIRE(xcm__xml_reader_feed(f.ctx.r, "<message><bo", 12, &consumed) == 0);
  CHECK_INT(xcm__xml_reader_shrink(f.ctx.r), 0);
  REQUIRE(xcm__xml_reader_feed(f.ctx.r, "dy/></message>", 14, &consumed) == 0);
  CHECK_INT(f.ctx.stanzas, 2);
  CHECK(strstr(f.ctx.log.data, "[<message><body/></message>]") != NULL);
  /* A partial start tag also keeps it. */
  REQUIRE(xcm__xml_reader_feed(f.ctx.r, "<pres", 5, &consumed) == 0);
  CHECK_INT(xcm__xml_reader_shrink(f.ctx.r), 0);
  REQUIRE(xcm__xml_reader_feed(f.ctx.r, "ence/>", 6, &consumed) == 0);
  CHECK_INT(xcm__xml_reader_shrink(f.ctx.r), 1);
  REQUIRE(xcm__xml_reader_feed(f.ctx.r, "</stream:stream>", 16, &consumed) ==
          0);
  CHECK_INT(f.ctx.ends, 1);
  CHECK_INT(xcm__xml_reader_feed(f.ctx.r, "<a/>", 4, &consumed), XCM_ECLOSED);
  fx_free(&f);
}

static void test_unusual_header_context(void) {
  fixture f;
  const char *hdr = "<s:stream xmlns:s='http://etherx.jabber.org/streams' "
                    "xmlns='jabber:client' xmlns:q='urn:&quot;q&amp;'>";
  size_t consumed, n;
  const xcm_xml_nsdecl *d;

  fx_init(&f, NULL);
  REQUIRE(xcm__xml_reader_feed(f.ctx.r, hdr, strlen(hdr), &consumed) == 0);
  d = xcm__xml_reader_decls(f.ctx.r, &n);
  REQUIRE(n == 3);
  CHECK_STR(d[2].uri, "urn:\"q&");
  CHECK_INT(xcm__xml_reader_shrink(f.ctx.r), 1);
  /* Priming must re-escape the URI or this would fail. */
  REQUIRE(xcm__xml_reader_feed(f.ctx.r, "<q:m/><s:error/>", 16, &consumed) ==
          0);
  CHECK_INT(f.ctx.stanzas, 2);
  CHECK(strstr(f.ctx.log.data, "S{urn:\"q&}m d0 u4 [<q:m/>]") != NULL);
  CHECK(strstr(f.ctx.log.data,
               "S{http://etherx.jabber.org/streams}error d0 u1 [<s:error/>]") !=
        NULL);
  fx_free(&f);
}

static void test_assume_header(void) {
  fixture f;
  const char *d = "<route streamid='a'><message/></route>";
  size_t consumed;

  fx_init(&f, NULL);
  f.ctx.tree_levels = 2;
  REQUIRE(xcm__xml_reader_assume_header(f.ctx.r, &xcm__stream_cm) == 0);
  REQUIRE(xcm__xml_reader_feed(f.ctx.r, d, strlen(d), &consumed) == 0);
  CHECK_STR(f.ctx.log.data ? f.ctx.log.data : "",
            "S{jabber:connectionmanager}route d0 u0 [<route "
            "streamid='a'><message/></route>](route streamid=a(message))\n");
  fx_free(&f);
}

/* The reader treats no namespace specially on its own: a context that is
 * not XMPP's reads the same way, with both parsers. */
static void test_owner_context(void) {
  static const xcm_xml_nsdecl decls[] = {{"r", "urn:r"}, {"", "urn:d"}};
  static const xcm_xml_context doc = {"r:doc", decls, 2};
  const char *d = "<a/><r:b xmlns='urn:e'><r:c/></r:b></r:doc>";
  int scan;

  for (scan = 0; scan <= 1; scan++) {
    fixture f;
    size_t consumed;

    fx_scan = scan;
    fx_init(&f, NULL);
    REQUIRE(xcm__xml_reader_assume_header(f.ctx.r, &doc) == 0);
    REQUIRE(xcm__xml_reader_shrink(f.ctx.r) == 1);
    REQUIRE(xcm__xml_reader_feed(f.ctx.r, d, strlen(d), &consumed) == 0);
    CHECK_INT(consumed, strlen(d));
    CHECK_STR(f.ctx.log.data ? f.ctx.log.data : "",
              "S{urn:d}a d0 u0 [<a/>]\n"
              "S{urn:r}b d1 u1 [<r:b xmlns='urn:e'><r:c/></r:b>]\n"
              "E\n");
    fx_free(&f);
  }
  fx_scan = 0;
}

/* The owner's usual header is pointed at, any other copied. */
static void test_usual_header(void) {
  static const xcm_xml_nsdecl decls[] = {{"", "urn:d"}, {"p", "urn:p"}};
  static const xcm_xml_context usual = {"doc", decls, 2};
  static const char *const hdrs[] = {
      "<doc xmlns:p='urn:p' xmlns='urn:d'>",   /* the same, in another order */
      "<doc xmlns='urn:d'>",                   /* fewer declarations */
      "<p:doc xmlns:p='urn:p' xmlns='urn:d'>", /* another root name */
  };
  size_t i;

  for (i = 0; i < sizeof hdrs / sizeof hdrs[0]; i++) {
    fixture f;
    size_t consumed, n;
    const xcm_xml_nsdecl *got;

    fx_init(&f, NULL);
    xcm__xml_reader_set_usual(f.ctx.r, &usual);
    REQUIRE(xcm__xml_reader_feed(f.ctx.r, hdrs[i], strlen(hdrs[i]),
                                 &consumed) == 0);
    got = xcm__xml_reader_decls(f.ctx.r, &n);
    CHECK_INT(got == decls, i == 0);
    /* Shared or copied, the context primes the same: read on without a
     * parser in between. */
    REQUIRE(xcm__xml_reader_shrink(f.ctx.r) == 1);
    REQUIRE(xcm__xml_reader_feed(f.ctx.r, "<p:x/>", 6, &consumed) ==
            (i == 1 ? XCM_EXML : 0));
    fx_free(&f);
  }
}

static int count_stanzas(void *ud, const xcm_xml_stanza *s) {
  int *n = ud;

  (void)s;
  (*n)++;
  return 0;
}

/* Many readers share few parsers: idle readers hold none. */
static void test_pool_sharing(void) {
  static const xcm_xml_callbacks cb = {NULL, NULL, count_stanzas, NULL};
  xcm_xml_pool *pool;
  xcm_xml_reader *r[50];
  size_t consumed;
  int n = 0, i;

  REQUIRE(xcm__xml_pool_new(&pool, NULL, 2) == 0);
  for (i = 0; i < 50; i++) {
    REQUIRE(xcm__xml_reader_new(&r[i], pool, &cb, &n, NULL) == 0);
    REQUIRE(xcm__xml_reader_feed(r[i], STREAM_HDR, strlen(STREAM_HDR),
                                 &consumed) == 0);
    CHECK_INT(xcm__xml_reader_shrink(r[i]), 1);
  }
  CHECK_INT(xcm__xml_pool_busy(pool), 0);
  CHECK(xcm__xml_pool_idle(pool) <= 2);
  for (i = 0; i < 50; i++) {
    REQUIRE(xcm__xml_reader_feed(r[i], "<presence/>", 11, &consumed) == 0);
    CHECK_INT(xcm__xml_reader_shrink(r[i]), 1);
  }
  CHECK_INT(n, 50);
  for (i = 0; i < 50; i++)
    xcm__xml_reader_free(r[i]);
  xcm__xml_pool_free(pool);
}

static size_t heap_in_use(void) {
  struct mallinfo2 mi = mallinfo2();

  return mi.uordblks + mi.hblkhd;
}

/* The budget rests on this: a reader between stanzas holds no parser.
 * Measured as heap growth over many readers, so malloc's own overhead
 * counts too. */
static void test_memory_per_reader(void) {
  enum { N = 2000 };
  static const xcm_xml_callbacks cb = {NULL, NULL, count_stanzas, NULL};
  xcm_xml_pool *pool;
  xcm_xml_reader **r = calloc(N, sizeof(*r));
  size_t before, idle, live, consumed;
  int n = 0, i;

  REQUIRE(r != NULL);
  REQUIRE(xcm__xml_pool_new(&pool, NULL, 0) == 0);
  before = heap_in_use();
  for (i = 0; i < N; i++) {
    REQUIRE(xcm__xml_reader_new(&r[i], pool, &cb, &n, NULL) == 0);
    /* As the client layer sets it: the usual header is not copied. */
    xcm__xml_reader_set_usual(r[i], &xcm__stream_client);
    REQUIRE(xcm__xml_reader_feed(r[i], STREAM_HDR "<presence/>",
                                 strlen(STREAM_HDR "<presence/>"),
                                 &consumed) == 0);
    REQUIRE(xcm__xml_reader_shrink(r[i]) == 1);
  }
  idle = (heap_in_use() - before) / N;
  /* Now hold a parser each: half a stanza keeps it. */
  for (i = 0; i < N; i++)
    REQUIRE(xcm__xml_reader_feed(r[i], "<message><bo", 12, &consumed) == 0);
  live = (heap_in_use() - before) / N;
  xcm_test_note("heap per idle reader: %zu bytes; with a live expat parser: "
                "%zu bytes",
                idle, live);
  if (live == 0) {
    /* Sanitizers and valgrind replace malloc: glibc sees nothing. */
    xcm_test_note("heap figures unavailable under this allocator; skipped");
  } else {
    CHECK(idle <= 256);
    CHECK(live > 4 * idle);
  }
  for (i = 0; i < N; i++)
    xcm__xml_reader_free(r[i]);
  xcm__xml_pool_free(pool);
  free(r);
}

/* ---- cut-off elements kept as bytes ------------------------------------ */

/* What bench/xcm-load.c --scenario half sends after the header: half of
 * a SASL auth, and then nothing. */
#define HALF_AUTH                                                              \
  "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNl"
#define REST_AUTH "AHNlY3JldA==</auth>"

/* Feed data[0, len) in the pieces that cuts (ascending, inside the data)
 * make, following restarts; after every piece, *busy_after gets or'ed
 * with the pool's busy count. */
static int feed_cuts(fixture *f, const char *data, size_t len,
                     const size_t *cuts, size_t ncuts, size_t *busy_after) {
  size_t k, a = 0, consumed;
  int err;

  for (k = 0; k <= ncuts; k++) {
    size_t b = k < ncuts ? cuts[k] : len;

    while (a < b) {
      err = xcm__xml_reader_feed(f->ctx.r, data + a, b - a, &consumed);
      a += consumed;
      if (err != 0)
        return err;
      if (f->ctx.ends > 0)
        return 0;
    }
    *busy_after |= xcm__xml_pool_busy(f->pool);
  }
  return 0;
}

/* A stranger that sends half a stanza and waits holds no parser, only
 * the bytes; the rest completes the stanza as if it had come whole. */
static void test_half_stanza_holds_no_parser(void) {
  enum { N = 2000 };
  static const xcm_xml_callbacks cb = {NULL, NULL, count_stanzas, NULL};
  const char *whole = STREAM_HDR HALF_AUTH REST_AUTH;
  xcm_xml_pool *pool;
  xcm_xml_reader **rs = calloc(N, sizeof(*rs));
  size_t consumed, before, idle, waiting;
  fixture f;
  char *want;
  int n = 0, i, off;

  /* Whole, with expat alone: the event to match. */
  fx_scan = 0;
  fx_init(&f, NULL);
  REQUIRE(xcm__xml_reader_feed(f.ctx.r, whole, strlen(whole), &consumed) == 0);
  want = strdup(f.ctx.log.data);
  fx_free(&f);

  for (off = 0; off <= 1; off++) {
    fx_scan = 1;
    fx_init(&f, NULL);
    REQUIRE(xcm__xml_reader_feed(f.ctx.r, STREAM_HDR HALF_AUTH,
                                 strlen(STREAM_HDR HALF_AUTH), &consumed) == 0);
    CHECK_INT(consumed, strlen(STREAM_HDR HALF_AUTH));
    CHECK_INT(xcm__xml_pool_busy(f.pool), 0);
    CHECK_INT(f.ctx.stanzas, 0);
    /* Mid-element: nothing to give back, and it says so. */
    CHECK_INT(xcm__xml_reader_shrink(f.ctx.r), 0);
    /* The second time, the scanner is turned off while the bytes wait:
     * expat takes them and reads on. */
    if (off)
      REQUIRE(xcm__xml_reader_set_scan(f.ctx.r, 0) == 0);
    REQUIRE(xcm__xml_reader_feed(f.ctx.r, REST_AUTH, strlen(REST_AUTH),
                                 &consumed) == 0);
    CHECK_INT(consumed, strlen(REST_AUTH));
    CHECK_STR(f.ctx.log.data, want);
    /* Done with: nothing kept, no parser. */
    CHECK_INT(xcm__xml_reader_shrink(f.ctx.r), 1);
    fx_free(&f);
  }
  fx_scan = 0;
  free(want);

  /* What a waiting reader costs, as memory_per_reader measures it. */
  REQUIRE(rs != NULL);
  REQUIRE(xcm__xml_pool_new(&pool, NULL, 0) == 0);
  before = heap_in_use();
  for (i = 0; i < N; i++) {
    REQUIRE(xcm__xml_reader_new(&rs[i], pool, &cb, &n, NULL) == 0);
    xcm__xml_reader_set_usual(rs[i], &xcm__stream_client);
    REQUIRE(xcm__xml_reader_set_scan(rs[i], 1) == 0);
    REQUIRE(xcm__xml_reader_feed(rs[i], STREAM_HDR, strlen(STREAM_HDR),
                                 &consumed) == 0);
  }
  idle = (heap_in_use() - before) / N;
  for (i = 0; i < N; i++)
    REQUIRE(xcm__xml_reader_feed(rs[i], HALF_AUTH, strlen(HALF_AUTH),
                                 &consumed) == 0);
  waiting = (heap_in_use() - before) / N;
  CHECK_INT(xcm__xml_pool_busy(pool), 0);
  xcm_test_note("heap per reader waiting on half a stanza (%zu bytes): %zu "
                "bytes (idle: %zu)",
                strlen(HALF_AUTH), waiting, idle);
  if (waiting != 0)
    CHECK(waiting <= idle + strlen(HALF_AUTH) + 64);
  for (i = 0; i < N; i++)
    xcm__xml_reader_free(rs[i]);
  xcm__xml_pool_free(pool);
  free(rs);
}

/* Stanzas cut at every one and every pair of places: the same events as
 * whole, with expat alone and with the scanner, which never needs a
 * parser for them. */
static void test_kept_stanza_every_split(void) {
  static const char *const bodies[] = {
      HALF_AUTH REST_AUTH "<iq type='set' id='b1'><bind xmlns='urn:ietf:"
                          "params:xml:ns:xmpp-bind'><resource>r&amp;"
                          "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80</resource>"
                          "</bind></iq> <presence/>",
      "<message to='a@b' x='&#x1F600;&lt;'><body>x ]] > y&#65;</body>"
      "</message>\n<m a = \"1\" ></m > </stream:stream \n>",
  };
  int levels[] = {0, 1, 2, 2 | XCM_XML_BARE_LAST};
  size_t b, l, i, j, hdr = strlen(STREAM_HDR);
  char doc[512];

  for (b = 0; b < sizeof bodies / sizeof bodies[0]; b++)
    for (l = 0; l < sizeof levels / sizeof levels[0]; l++) {
      unsigned before = xcm_test_failures();
      char *want = NULL;
      size_t len;

      snprintf(doc, sizeof doc, "%s%s", STREAM_HDR, bodies[b]);
      len = strlen(doc);
      for (fx_scan = 0; fx_scan <= 1; fx_scan++)
        for (i = hdr; i < len; i++)
          for (j = i; j < len; j++) {
            size_t cuts[3] = {hdr, i, j}, busy = 0;
            fixture f;

            fx_init(&f, NULL);
            f.ctx.tree_levels = levels[l];
            CHECK_INT(feed_cuts(&f, doc, len, cuts, 3, &busy), 0);
            if (want == NULL)
              want = strdup(f.ctx.log.data);
            else if (!CHECK_STR(f.ctx.log.data, want))
              xcm_test_note("scan %d, cuts at %zu and %zu", fx_scan, i, j);
            if (fx_scan)
              CHECK_INT(busy, 0);
            fx_free(&f);
            if (xcm_test_failures() != before)
              goto next;
          }
    next:
      fx_scan = 0;
      free(want);
    }
}

/* A stream header cut anywhere, with or without an XML declaration:
 * kept as bytes too, and read as if whole. */
static void test_kept_header_every_split(void) {
  static const char *const docs[] = {
      "<?xml version='1.0' encoding='UTF-8'?>\n" STREAM_HDR "<presence/>",
      " " STREAM_HDR "<presence/>",
      ("<s:stream xmlns:s='http://etherx.jabber.org/streams' xmlns:x='urn:x'"
       " xmlns='jabber:client' xml:lang='en'><x:y/>"),
  };
  size_t d, i, j;

  for (d = 0; d < sizeof docs / sizeof docs[0]; d++) {
    char *want = NULL;
    size_t len = strlen(docs[d]);

    for (fx_scan = 0; fx_scan <= 1; fx_scan++)
      for (i = 1; i < len; i++)
        for (j = i; j < len; j += 7) {
          size_t cuts[2] = {i, j}, busy = 0;
          fixture f;

          fx_init(&f, NULL);
          CHECK_INT(feed_cuts(&f, docs[d], len, cuts, 2, &busy), 0);
          if (want == NULL)
            want = strdup(f.ctx.log.data);
          else if (!CHECK_STR(f.ctx.log.data, want))
            xcm_test_note("doc %zu, scan %d, cuts at %zu, %zu", d, fx_scan, i,
                          j);
          /* The last one uses a prefix: expat's. */
          if (fx_scan && d < 2 && !CHECK_INT(busy, 0))
            xcm_test_note("doc %zu, cuts at %zu, %zu", d, i, j);
          fx_free(&f);
        }
    fx_scan = 0;
    free(want);
  }
}

/* Past KEEP_MAX (2 KiB) a cut-off element is expat's: the byte after the
 * cap lends it a parser, and it still comes out as whole. */
static void test_kept_stanza_cap(void) {
  xcm_buf d;
  fixture f;
  size_t i, hdr = strlen(STREAM_HDR), consumed, busy_at = 0;
  char *want;

  xcm__buf_init(&d, NULL);
  xcm__buf_append_str(&d, STREAM_HDR "<message><body>");
  for (i = 0; i < 3000; i++)
    xcm__buf_append_char(&d, (char)('a' + i % 26));
  xcm__buf_append_str(&d, "</body></message><presence/>");

  fx_scan = 0;
  fx_init(&f, NULL);
  REQUIRE(xcm__xml_reader_feed(f.ctx.r, d.data, d.len, &consumed) == 0);
  want = strdup(f.ctx.log.data);
  fx_free(&f);

  fx_scan = 1;
  fx_init(&f, NULL);
  REQUIRE(xcm__xml_reader_feed(f.ctx.r, d.data, hdr, &consumed) == 0);
  for (i = hdr; i < d.len; i++) {
    REQUIRE(xcm__xml_reader_feed(f.ctx.r, d.data + i, 1, &consumed) == 0);
    if (busy_at == 0 && xcm__xml_pool_busy(f.pool) > 0)
      busy_at = i + 1 - hdr;
  }
  /* 2048 bytes kept, the 2049th goes to expat with them. */
  CHECK_INT(busy_at, 2049);
  CHECK_STR(f.ctx.log.data, want);
  CHECK_INT(f.ctx.stanzas, 2);
  fx_free(&f);

  /* A large piece after a small one: the same. */
  fx_init(&f, NULL);
  REQUIRE(xcm__xml_reader_feed(f.ctx.r, d.data, hdr + 100, &consumed) == 0);
  CHECK_INT(xcm__xml_pool_busy(f.pool), 0);
  REQUIRE(xcm__xml_reader_feed(f.ctx.r, d.data + hdr + 100, 2500, &consumed) ==
          0);
  CHECK_INT(xcm__xml_pool_busy(f.pool), 1);
  REQUIRE(xcm__xml_reader_feed(f.ctx.r, d.data + hdr + 2600, d.len - hdr - 2600,
                               &consumed) == 0);
  CHECK_STR(f.ctx.log.data, want);
  fx_free(&f);
  fx_scan = 0;
  free(want);
  xcm__buf_free(&d);
}

/* Fed one byte at a time: the index of the byte whose feed failed (or
 * -1), and the condition. */
static long error_byte(const char *doc, const xcm_xml_limits *lim, int levels,
                       int scan, xcm_cond *cond) {
  fixture f;
  size_t i, consumed;
  long at = -1;

  fx_scan = scan;
  fx_init(&f, lim);
  f.ctx.tree_levels = levels;
  for (i = 0; doc[i] != '\0'; i++)
    if (xcm__xml_reader_feed(f.ctx.r, doc + i, 1, &consumed) != 0) {
      at = (long)i;
      break;
    }
  *cond = xcm__xml_reader_condition(f.ctx.r);
  fx_free(&f);
  fx_scan = 0;
  return at;
}

/* Limits refuse a kept element at the very byte expat alone refuses it,
 * and so do errors of form. */
static void test_kept_stanza_refused_in_time(void) {
  static const struct {
    xcm_xml_limits lim;
    int levels;
    size_t size; /* a stanza_of_size() of this size, or 0 for xml */
    const char *xml;
  } cases[] = {
      {{200, 8, 0}, 0, 201, NULL},
      {{3000, 8, 0}, 0, 3001, NULL},
      {{0, 0, 500}, 2, 600, NULL},
      {{0, 0, 500}, 0, 600, NULL}, /* no tree: no cap */
      {{10000, 4, 0}, 0, 0, "<a><b><c><d><e/></d></c></b></a>"},
      {{1000, 8, 0}, 0, 0, "<message to='aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},
      {{0, 0, 0}, 0, 0, "<message><body>hi</bodx></message>"},
      {{0, 0, 0}, 0, 0, "<message><!-- c --></message>"},
      {{0, 0, 0}, 0, 0, "<message a='1' a='2'/>"},
      {{0, 0, 0}, 0, 0, "<message>&#0;</message>"},
      {{0, 0, 0}, 0, 0, "<message>\xc3\x28</message>"},
  };
  static char doc[8192];
  size_t c;

  for (c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    unsigned before = xcm_test_failures();
    xcm_cond ce, cs;
    long ae, as;

    if (cases[c].size != 0) {
      stanza_of_size(doc, cases[c].size);
    } else {
      size_t n =
          (size_t)snprintf(doc, sizeof doc, "%s%s", STREAM_HDR, cases[c].xml);

      /* An attribute value that never ends: on past the limit. */
      if (cases[c].lim.max_stanza == 1000) {
        memset(doc + n, 'a', 1500);
        doc[n + 1500] = '\0';
      }
    }
    ae = error_byte(doc, &cases[c].lim, cases[c].levels, 0, &ce);
    as = error_byte(doc, &cases[c].lim, cases[c].levels, 1, &cs);
    if (cases[c].levels == 0 && cases[c].lim.max_tree != 0)
      CHECK_INT(ae, -1);
    else
      CHECK(ae > (long)strlen(STREAM_HDR));
    CHECK_INT(as, ae);
    CHECK_INT(cs, ce);
    if (xcm_test_failures() != before)
      xcm_test_note("case %zu: expat at %ld (%s), scanner at %ld (%s)", c, ae,
                    xcm_cond_name(ce), as, xcm_cond_name(cs));
    xcm_test_tried(cases[c].size != 0 ? "oversized" : "malformed-xml", before);
  }
}

/* Every capture, read from the server's side: each connection's received
 * bytes parse as one stream, in the pieces they arrived in, and give as
 * many route elements as the captures contain. */
#include "transcript.h"

static void test_transcripts_server_side(void) {
  const char *names[] = {"transcript-cm.txt",
                         "transcript-probe-a-dup-names.txt",
                         "transcript-probe-b-cm-tcp-close.txt",
                         "transcript-probe-c-server-closes-client.txt",
                         "transcript-probe-d-failed.txt",
                         "transcript-probe-d2-failed-offline.txt",
                         "transcript-probe-e-unknown-stream.txt",
                         "transcript-probe-e2-no-streamid.txt",
                         "transcript-probe-f-two-stanzas.txt",
                         "transcript-probe-g-handshake.txt"};
  size_t t;

  for (t = 0; t < sizeof(names) / sizeof(names[0]); t++) {
    xcm_transcript tr;
    size_t i, j, consumed;
    const char *conns[16];
    size_t nconns = 0;

    REQUIRE(xcm_transcript_load_named(names[t], &tr) == 0);
    for (i = 0; i < tr.nchunks; i++) {
      for (j = 0; j < nconns; j++)
        if (strcmp(conns[j], tr.chunks[i].conn) == 0)
          break;
      if (j == nconns && nconns < 16 && strcmp(tr.chunks[i].conn, "CAROL") != 0)
        conns[nconns++] = tr.chunks[i].conn;
    }
    for (j = 0; j < nconns; j++) {
      fixture f;
      size_t routes_in_text = 0;
      const char *p;
      int err = 0;

      fx_init(&f, NULL);
      f.ctx.tree_levels = 2;
      for (i = 0; i < tr.nchunks && err == 0; i++) {
        if (tr.chunks[i].is_send || strcmp(tr.chunks[i].conn, conns[j]) != 0)
          continue;
        for (p = tr.chunks[i].bytes; (p = strstr(p, "<route ")) != NULL &&
                                     p < tr.chunks[i].bytes + tr.chunks[i].len;
             p++)
          routes_in_text++;
        err = xcm__xml_reader_feed(f.ctx.r, tr.chunks[i].bytes,
                                   tr.chunks[i].len, &consumed);
        CHECK_INT(consumed, tr.chunks[i].len);
        CHECK(xcm__xml_reader_shrink(f.ctx.r) == 1);
      }
      if (!CHECK_INT(err, 0))
        xcm_test_note("%s %s: %s", names[t], conns[j],
                      xcm__xml_reader_error_text(f.ctx.r));
      {
        size_t routes_seen = 0;
        for (p = f.ctx.log.data; p && (p = strstr(p, "S{jabber:connection"
                                                     "manager}route")) != NULL;
             p++)
          routes_seen++;
        CHECK_INT(routes_seen, routes_in_text);
      }
      CHECK(f.ctx.log.data == NULL ||
            strstr(f.ctx.log.data, "BADRANGE") == NULL);
      fx_free(&f);
    }
    xcm_transcript_free(&tr);
  }
}

/* Inputs that once crashed a fuzz target stay here for good: each must
 * now be read to an event or a clean error, in any split. */
static void test_regressions(void) {
  const char *dir = getenv("XCM_REGRESS");
  struct dirent *e;
  DIR *d;
  int replayed = 0;

  if (dir == NULL)
    dir = "tests/regress";
  d = opendir(dir);
  if (d == NULL) {
    xcm_test_note("no regression directory %s", dir);
    return;
  }
  while ((e = readdir(d)) != NULL) {
    char path[1024];
    FILE *f;
    char *data;
    long len;
    fixture fx;

    if (strncmp(e->d_name, "reader-", 7) != 0)
      continue;
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    f = fopen(path, "rb");
    if (f == NULL)
      continue;
    fseek(f, 0, SEEK_END);
    len = ftell(f);
    fseek(f, 0, SEEK_SET);
    data = malloc((size_t)len + 1);
    if (data != NULL && fread(data, 1, (size_t)len, f) == (size_t)len) {
      unsigned before = xcm_test_failures();

      fx_init(&fx, NULL);
      fx.ctx.tree_levels = 3;
      feed_split(&fx, data, (size_t)len, split_random);
      fx_free(&fx);
      replayed++;
      xcm_test_tried("fuzz-regressions", before);
    }
    free(data);
    fclose(f);
  }
  closedir(d);
  xcm_test_note("replayed %d regression inputs", replayed);
}

/* ---- trees cost what their element is worth ---------------------------- */

/* Counts our allocations (expat's own do not come through the hook):
 * calls, bytes outstanding and the peak of those. */
typedef struct counted {
  unsigned long calls;
  long long bytes, peak;
} counted;

typedef union counted_block {
  size_t size;
  max_align_t align;
} counted_block;

static void *counted_realloc(void *ud, void *ptr, size_t size) {
  counted *a = ud;
  counted_block *b = ptr != NULL ? (counted_block *)ptr - 1 : NULL, *nb;
  size_t old = b != NULL ? b->size : 0;

  if (size == 0) {
    if (b != NULL) {
      a->bytes -= (long long)old;
      free(b);
    }
    return NULL;
  }
  a->calls++;
  nb = realloc(b, sizeof(*nb) + size);
  if (nb == NULL)
    return NULL;
  a->bytes += (long long)size - (long long)old;
  if (a->bytes > a->peak)
    a->peak = a->bytes;
  nb->size = size;
  return nb + 1;
}

enum { SHAPE_PLAIN, SHAPE_MIXED, SHAPE_SIBLINGS, SHAPE_DEEP, SHAPE_COUNT };

static const char *const shape_names[] = {"plain", "mixed text",
                                          "<a/> siblings", "deep nesting"};

/* One stanza of exactly size bytes in the shape: plain text in a body;
 * text mixed with children (tttttttt<a>u</a>...); empty siblings;
 * nesting 30 deep with text at every level, over and over. */
static char *tree_shape(int shape, size_t size) {
  static const char head[] = "<message>", tail[] = "</message>";
  char *b = malloc(size + 1), *p = b, *end = b + size - (sizeof tail - 1);
  size_t i;

  memcpy(p, head, sizeof head - 1);
  p += sizeof head - 1;
  switch (shape) {
  case SHAPE_PLAIN:
    memcpy(p, "<body>", 6);
    p += 6;
    memset(p, 't', (size_t)(end - 7 - p));
    p = end - 7;
    memcpy(p, "</body>", 7);
    p += 7;
    break;
  case SHAPE_MIXED:
    while (end - p >= 16) {
      memcpy(p, "tttttttt<a>u</a>", 16);
      p += 16;
    }
    break;
  case SHAPE_SIBLINGS:
    while (end - p >= 4) {
      memcpy(p, "<a/>", 4);
      p += 4;
    }
    break;
  case SHAPE_DEEP:
    while (end - p >= 30 * 9) {
      for (i = 0; i < 30; i++, p += 4)
        memcpy(p, "<a>t", 4);
      for (i = 0; i < 30; i++, p += 5)
        memcpy(p, "</a>t", 5);
    }
    break;
  }
  memset(p, 't', (size_t)(end - p)); /* text of the stanza itself */
  memcpy(end, tail, sizeof tail);
  return b;
}

typedef struct tree_count {
  size_t nodes, text;
  int stanzas;
} tree_count;

static int two_levels(void *ud, const char *ns, const char *name) {
  (void)ud;
  (void)ns;
  (void)name;
  return 2;
}

static int count_tree(void *ud, const xcm_xml_stanza *s) {
  tree_count *t = ud;
  const xcm_xml_node *c;

  t->stanzas++;
  t->nodes = 1;
  t->text = s->root->text_len;
  for (c = s->root->children; c != NULL; c = c->next) {
    t->nodes++;
    t->text += c->text_len;
  }
  return 0;
}

/* Read the shape's stanza with a two-level tree, in reads of 4 KB as
 * from a socket, into *a; returns the reader's result. */
static int read_shape(int shape, size_t size, int scan,
                      const xcm_xml_limits *lim, counted *a, tree_count *t,
                      char *why, size_t why_len) {
  static const xcm_xml_callbacks cb = {NULL, two_levels, count_tree, NULL};
  const xcm_allocator alloc = {sizeof alloc, counted_realloc, a};
  xcm_xml_pool *pool;
  xcm_xml_reader *r;
  char *st = tree_shape(shape, size);
  size_t off = 0, consumed;
  int err;

  memset(a, 0, sizeof(*a));
  memset(t, 0, sizeof(*t));
  REQUIRE(xcm__xml_pool_new(&pool, &alloc, 1) == 0);
  REQUIRE(xcm__xml_reader_new(&r, pool, &cb, t, lim) == 0);
  REQUIRE(xcm__xml_reader_set_scan(r, scan) == 0);
  err = xcm__xml_reader_feed(r, STREAM_HDR, strlen(STREAM_HDR), &consumed);
  while (err == 0 && off < size) {
    size_t n = size - off < 4096 ? size - off : 4096;

    err = xcm__xml_reader_feed(r, st + off, n, &consumed);
    off += n;
  }
  snprintf(why, why_len, "%s: %s", xcm_cond_name(xcm__xml_reader_condition(r)),
           xcm__xml_reader_error_text(r));
  xcm__xml_reader_free(r);
  xcm__xml_pool_free(pool);
  free(st);
  return err;
}

/* The review's second finding: text mixed with children re-copied the
 * parent's text at every run, and each child walked its siblings, so one
 * 256 KB stanza cost a gigabyte and seconds. Now a tree is linear in its
 * element: at the largest stanza, the worst shapes cost within a small
 * factor of a plain stanza of the same size, plus the public nodes
 * themselves, and twice the element costs twice as much. Counted, not
 * timed; in both reader modes. */
static void test_tree_cost_linear(void) {
  enum { SIZE = 262144 };
  const size_t node = sizeof(xcm_xml_node) + 64;
  counted plain, a, half;
  tree_count t, th;
  char why[160];
  int scan, shape;

  for (scan = 0; scan <= 1; scan++) {
    REQUIRE(read_shape(SHAPE_PLAIN, SIZE, scan, NULL, &plain, &t, why,
                       sizeof why) == 0);
    CHECK_INT(t.stanzas, 1);
    for (shape = SHAPE_MIXED; shape < SHAPE_COUNT; shape++) {
      unsigned before = xcm_test_failures();

      if (!CHECK_INT(
              read_shape(shape, SIZE, scan, NULL, &a, &t, why, sizeof why), 0))
        xcm_test_note("%s", why);
      CHECK_INT(t.stanzas, 1);
      REQUIRE(read_shape(shape, SIZE / 2, scan, NULL, &half, &th, why,
                         sizeof why) == 0);
      xcm_test_note("scan %d, %s: %zu nodes, %zu bytes of text; peak %lld "
                    "bytes in %lu allocations (plain: %lld in %lu; half the "
                    "size: %lld in %lu)",
                    scan, shape_names[shape], t.nodes, t.text, a.peak, a.calls,
                    plain.peak, plain.calls, half.peak, half.calls);
      CHECK(a.calls <= 4 * plain.calls);
      CHECK(a.peak <= 4 * plain.peak + (long long)(t.nodes * node));
      /* Linear: quadratic growth would quadruple. */
      CHECK(a.peak <= 5 * half.peak / 2);
      CHECK(a.calls <= 2 * half.calls + 8);
      if (xcm_test_failures() != before)
        xcm_test_note("scan %d, shape %s", scan, shape_names[shape]);
      xcm_test_tried("tree-shapes", before);
    }
  }
}

/* max_tree: a tree is built only for an element no larger than that;
 * a larger one is a policy violation, found before its bytes pile up. */
static void test_tree_cap(void) {
  xcm_xml_limits lim = {0, 0, 16384};
  counted a, at_cap;
  tree_count t;
  char why[160];
  int scan, shape;

  for (scan = 0; scan <= 1; scan++)
    for (shape = SHAPE_PLAIN; shape < SHAPE_COUNT; shape++) {
      unsigned before = xcm_test_failures();

      /* At the cap it is read. */
      CHECK_INT(
          read_shape(shape, 16384, scan, &lim, &at_cap, &t, why, sizeof why),
          0);
      CHECK_INT(t.stanzas, 1);
      CHECK_INT(read_shape(shape, 262144, scan, &lim, &a, &t, why, sizeof why),
                XCM_ELIMIT);
      CHECK_STR(why, "policy-violation: element too large for the CM to read");
      CHECK_INT(t.stanzas, 0);
      /* What the refusal cost is bounded by the cap, not by the
       * element: one more read's worth (4 KB) past it. */
      if (!CHECK(a.peak <= 2 * at_cap.peak))
        xcm_test_note("scan %d, %s: peak %lld, %lld at the cap", scan,
                      shape_names[shape], a.peak, at_cap.peak);
      xcm_test_tried("tree-shapes", before);
    }
}

typedef struct nested {
  xcm_xml_pool *pool;
  int inner_ok, outer_ok, calls;
} nested;

static int nested_levels(void *ud, const char *ns, const char *name) {
  (void)ud, (void)ns, (void)name;
  return 2;
}

static int nested_inner(void *ud, const xcm_xml_stanza *s) {
  nested *n = ud;

  n->inner_ok = s->root != NULL && strcmp(s->root->name, "iq") == 0 &&
                s->root->children != NULL &&
                strcmp(s->root->children->name, "bind") == 0;
  return 0;
}

/* Inside the outer stanza's callback, read other bytes as the client
 * layer reads a server's answer; the outer tree must still be whole. */
static int nested_outer(void *ud, const xcm_xml_stanza *s) {
  static const char answer[] =
      "<iq type='result' id='b1'><bind xmlns='urn:ietf:params:xml:ns:"
      "xmpp-bind'><jid>a@b/c</jid></bind></iq>";
  nested *n = ud;
  uint64_t before = xcm__xml_pool_scanned(n->pool);

  n->calls++;
  CHECK_INT(xcm__xml_read_standalone(n->pool, &xcm__stream_client, answer,
                                     sizeof answer - 1, 8, 1, nested_levels,
                                     nested_inner, n),
            0);
  /* Scanned, not handed to expat: a second scanner serves it. */
  CHECK_INT(xcm__xml_pool_scanned(n->pool), before + 1);
  CHECK_INT(xcm__xml_pool_busy(n->pool), 0);
  n->outer_ok = s->root != NULL && strcmp(s->root->name, "message") == 0 &&
                s->root->children != NULL &&
                strcmp(s->root->children->name, "body") == 0 &&
                s->root->children->text_len == 2 &&
                memcmp(s->root->children->text, "hi", 2) == 0;
  return 0;
}

/* The review's fix reads the server's answers during login with a reader
 * of their own, inside the upstream link's scanned callback: the scanner
 * must serve both, so that a login costs no expat parser. */
static void test_nested_scan(void) {
  static const char doc[] = STREAM_HDR "<message><body>hi</body></message>";
  static const xcm_xml_callbacks cb = {NULL, nested_levels, nested_outer, NULL};
  nested n;
  xcm_xml_reader *r;
  size_t consumed;

  memset(&n, 0, sizeof n);
  REQUIRE(xcm__xml_pool_new(&n.pool, NULL, 1) == 0);
  REQUIRE(xcm__xml_reader_new(&r, n.pool, &cb, &n, NULL) == 0);
  REQUIRE(xcm__xml_reader_set_scan(r, 1) == 0);
  CHECK_INT(xcm__xml_reader_feed(r, doc, sizeof doc - 1, &consumed), 0);
  CHECK_INT(n.calls, 1);
  CHECK(n.inner_ok);
  CHECK(n.outer_ok);
  CHECK_INT(xcm__xml_pool_scanned(n.pool), 3); /* header, outer, inner */
  xcm__xml_reader_free(r);
  xcm__xml_pool_free(n.pool);
}

static const xcm_test tests[] = {
    {"nested_scan", test_nested_scan},
    {"regressions", test_regressions},
    {"header_and_stanzas", test_header_and_stanzas},
    {"tree", test_tree},
    {"namespaces_of_stanza", test_namespaces_of_stanza},
    {"namespaces_many_decls", test_namespaces_many_decls},
    {"restart_mid_buffer", test_restart_mid_buffer},
    {"restart_consumed", test_restart_consumed},
    {"restricted_xml", test_restricted_xml},
    {"error_is_sticky", test_error_is_sticky},
    {"stanza_limit", test_stanza_limit},
    {"endless_start_tag", test_endless_start_tag},
    {"header_limit", test_header_limit},
    {"depth_limit", test_depth_limit},
    {"deep_nesting_attack", test_deep_nesting_attack},
    {"length_extremes", test_length_extremes},
    {"no_deferral", test_no_deferral},
    {"shrink_and_resume", test_shrink_and_resume},
    {"unusual_header_context", test_unusual_header_context},
    {"assume_header", test_assume_header},
    {"owner_context", test_owner_context},
    {"usual_header", test_usual_header},
    {"pool_sharing", test_pool_sharing},
    {"memory_per_reader", test_memory_per_reader},
    {"half_stanza_holds_no_parser", test_half_stanza_holds_no_parser},
    {"kept_stanza_every_split", test_kept_stanza_every_split},
    {"kept_header_every_split", test_kept_header_every_split},
    {"kept_stanza_cap", test_kept_stanza_cap},
    {"kept_stanza_refused_in_time", test_kept_stanza_refused_in_time},
    {"tree_cost_linear", test_tree_cost_linear},
    {"tree_cap", test_tree_cap},
    {"transcripts_server_side", test_transcripts_server_side},
};

int main(int argc, char **argv) {
  return xcm_test_main(argc, argv, XCM_TESTS(tests));
}
