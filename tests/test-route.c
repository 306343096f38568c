/* Route framing: wrap, unwrap, round trips that keep namespaces, and
 * client bytes that try to break out of their route. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "proto/route.h"
#include "transcript.h"
#include "util/buf.h"
#include "xcm/error.h"
#include "xcm/route.h"
#include "xml/reader.h"

#define CLIENT_HDR                                                             \
  "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' "            \
  "xmlns='jabber:client' to='example.test' version='1.0'>"
#define CLIENT_HDR_PREFIXES                                                    \
  "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' "            \
  "xmlns='jabber:client' xmlns:foo='urn:foo' xmlns:bar='urn:bar' "             \
  "to='example.test' version='1.0'>"
#define SERVER_HDR                                                             \
  "<stream:stream xmlns:stream=\"http://etherx.jabber.org/streams\" "          \
  "xmlns=\"jabber:connectionmanager\" from=\"cm1/worker-1\" id=\"x\" "         \
  "version=\"1.0\">"

/* Canonical text of a tree: what a stanza means, whatever prefixes and
 * declarations spell it. */
static void canon(xcm_buf *b, const xcm_xml_node *n) {
  const xcm_xml_node *c;
  size_t i;

  xcm__buf_append_str(b, "{");
  xcm__buf_append_str(b, n->ns);
  xcm__buf_append_str(b, "}");
  xcm__buf_append_str(b, n->name);
  for (i = 0; i < n->nattrs; i++) {
    xcm__buf_append_str(b, " {");
    xcm__buf_append_str(b, n->attrs[i].ns);
    xcm__buf_append_str(b, "}");
    xcm__buf_append_str(b, n->attrs[i].name);
    xcm__buf_append_str(b, "=");
    xcm__buf_append_str(b, n->attrs[i].value);
  }
  xcm__buf_append_str(b, " '");
  xcm__buf_append(b, n->text, n->text_len);
  xcm__buf_append_str(b, "'(");
  for (c = n->children; c != NULL; c = c->next)
    canon(b, c);
  xcm__buf_append_str(b, ")");
}

/* Reads a stream, keeping for each stanza its canonical meaning and, for
 * routes, the canonical meaning of the first child. */
typedef struct reading {
  xcm_xml_reader *r;
  xcm_buf canon;   /* of the last stanza (or of a route's child) */
  xcm_buf wrapped; /* wrap output, when wrapping */
  const char *sid;
  int server; /* read routes: keep the meaning of their child */
  int stanzas;
  int children; /* of the last route */
  char streamid[128];
} reading;

static int deep(void *ud, const char *ns, const char *name) {
  (void)ud;
  (void)ns;
  (void)name;
  return 64;
}

static int on_stanza(void *ud, const xcm_xml_stanza *s) {
  reading *rd = ud;
  const xcm_xml_nsdecl *decls;
  size_t ndecls;

  rd->stanzas++;
  xcm__buf_reset(&rd->canon);
  if (rd->server && s->root->children != NULL) {
    const char *sid = xcm__xml_node_attr(s->root, "streamid");
    snprintf(rd->streamid, sizeof rd->streamid, "%s", sid ? sid : "");
    rd->children = (int)s->root->nchildren;
    canon(&rd->canon, s->root->children);
  } else {
    canon(&rd->canon, s->root);
  }
  if (rd->sid != NULL) {
    decls = xcm__xml_reader_decls(rd->r, &ndecls);
    if (xcm__route_wrap(&rd->wrapped, s, decls, ndecls, rd->sid, "example.test",
                        "cm1/worker-1") != 0)
      return XCM_ENOMEM;
  }
  return 0;
}

static const xcm_xml_callbacks reading_cb = {NULL, deep, on_stanza, NULL};

static int read_stream(reading *rd, xcm_xml_pool *pool, const char *hdr,
                       const char *body, size_t body_len) {
  size_t consumed;
  int err;

  xcm__buf_init(&rd->canon, NULL);
  xcm__buf_init(&rd->wrapped, NULL);
  if (xcm__xml_reader_new(&rd->r, pool, &reading_cb, rd, NULL) != 0)
    return XCM_ENOMEM;
  err = xcm__xml_reader_feed(rd->r, hdr, strlen(hdr), &consumed);
  if (err == 0)
    err = xcm__xml_reader_feed(rd->r, body, body_len, &consumed);
  return err;
}

static void reading_free(reading *rd) {
  xcm__xml_reader_free(rd->r);
  xcm__buf_free(&rd->canon);
  xcm__buf_free(&rd->wrapped);
}

/* Wrap stanza as sent on a client stream with header hdr, then read the
 * result as the server would: it must be exactly one route, for sid, with
 * exactly one element in it that means what the client sent. */
static void check_round_trip(const char *hdr, const char *stanza,
                             const char *sid) {
  xcm_xml_pool *pool;
  reading client, server;
  int err;

  memset(&client, 0, sizeof client);
  memset(&server, 0, sizeof server);
  REQUIRE(xcm__xml_pool_new(&pool, NULL, 2) == 0);
  client.sid = sid;
  server.server = 1;
  err = read_stream(&client, pool, hdr, stanza, strlen(stanza));
  REQUIRE(err == 0);
  REQUIRE(client.stanzas == 1);
  err = read_stream(&server, pool, SERVER_HDR, client.wrapped.data,
                    client.wrapped.len);
  if (!CHECK_INT(err, 0))
    xcm_test_note("upstream could not read: %.*s", (int)client.wrapped.len,
                  client.wrapped.data);
  CHECK_INT(server.stanzas, 1);
  CHECK_INT(server.children, 1);
  CHECK_STR(server.streamid, sid);
  CHECK_MEM(server.canon.data, server.canon.len, client.canon.data,
            client.canon.len);
  reading_free(&client);
  reading_free(&server);
  xcm__xml_pool_free(pool);
}

/* Like check_round_trip, with the client's reader in one mode (scanner
 * on or expat alone) and the stanza fed in two pieces split at split
 * (0: in one piece). The server reads with expat, which refuses a
 * repeated attribute or namespace declaration. */
static void check_round_trip_split(const char *hdr, const char *stanza,
                                   int scan, size_t split) {
  xcm_xml_pool *pool;
  reading client, server;
  size_t consumed, len = strlen(stanza);
  int err;

  memset(&client, 0, sizeof client);
  memset(&server, 0, sizeof server);
  REQUIRE(xcm__xml_pool_new(&pool, NULL, 2) == 0);
  client.sid = "abc123";
  server.server = 1;
  xcm__buf_init(&client.canon, NULL);
  xcm__buf_init(&client.wrapped, NULL);
  REQUIRE(xcm__xml_reader_new(&client.r, pool, &reading_cb, &client, NULL) ==
          0);
  REQUIRE(xcm__xml_reader_set_scan(client.r, scan) == 0);
  err = xcm__xml_reader_feed(client.r, hdr, strlen(hdr), &consumed);
  if (err == 0 && split > 0)
    err = xcm__xml_reader_feed(client.r, stanza, split, &consumed);
  if (err == 0)
    err =
        xcm__xml_reader_feed(client.r, stanza + split, len - split, &consumed);
  REQUIRE(err == 0);
  REQUIRE(client.stanzas == 1);
  err = read_stream(&server, pool, SERVER_HDR, client.wrapped.data,
                    client.wrapped.len);
  if (!CHECK_INT(err, 0))
    xcm_test_note("scan %d split %zu: upstream could not read: %.*s", scan,
                  split, (int)client.wrapped.len, client.wrapped.data);
  CHECK_INT(server.stanzas, 1);
  CHECK_INT(server.children, 1);
  CHECK_MEM(server.canon.data, server.canon.len, client.canon.data,
            client.canon.len);
  reading_free(&client);
  reading_free(&server);
  xcm__xml_pool_free(pool);
}

/* A start tag with n declarations of unused prefixes and, at position
 * at, the extra declarations in redecl: more than the reader ever kept
 * in a fixed record. */
static char *many_decls(const char *name, size_t n, size_t at,
                        const char *redecl, const char *body) {
  xcm_buf b;
  size_t i;
  char tmp[64];

  xcm__buf_init(&b, NULL);
  xcm__buf_append_str(&b, "<");
  xcm__buf_append_str(&b, name);
  for (i = 0; i <= n; i++) {
    if (i == at)
      xcm__buf_append_str(&b, redecl);
    if (i == n)
      break;
    snprintf(tmp, sizeof tmp, " xmlns:p%zu='urn:p%zu'", i, i);
    xcm__buf_append_str(&b, tmp);
  }
  xcm__buf_append_str(&b, body);
  xcm__buf_append_char(&b, '\0');
  return b.data;
}

/* The security review's stanza: past the 16th declaration the default
 * namespace (or a header prefix) is declared again, and the framing used
 * to add its own a second time, which broke the shared upstream link. */
static void test_wrap_many_declarations(void) {
  static const struct {
    const char *hdr, *name, *redecl, *body;
  } shapes[] = {
      {CLIENT_HDR, "auth", " xmlns='urn:ietf:params:xml:ns:xmpp-sasl'",
       " mechanism='PLAIN'>AGFsaWNlAGFsaWNl</auth>"},
      {CLIENT_HDR, "message", " xmlns='jabber:client'",
       " to='bob@example.test'><body>hi</body></message>"},
      {CLIENT_HDR_PREFIXES, "message", " xmlns:foo='urn:other'",
       "><foo:x bar:a='1'/></message>"},
      {CLIENT_HDR_PREFIXES, "message",
       " xmlns:bar='urn:bar' xmlns='urn:x' xmlns:foo='urn:foo'",
       "><foo:x bar:a='1'/></message>"},
      {CLIENT_HDR, "message", " xmlns:stream='urn:not-streams'",
       "><stream:x/></message>"},
  };
  static const size_t counts[] = {0, 15, 16, 17, 40};
  size_t i, c, at, split;
  int scan;

  for (i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
    for (c = 0; c < sizeof counts / sizeof counts[0]; c++)
      for (at = 0; at <= counts[c]; at += at < 18 ? 1 : 11) {
        char *st = many_decls(shapes[i].name, counts[c], at, shapes[i].redecl,
                              shapes[i].body);
        unsigned before = xcm_test_failures();

        for (scan = 0; scan <= 1; scan++) {
          check_round_trip_split(shapes[i].hdr, st, scan, 0);
          /* Every byte split where it matters most. */
          if (counts[c] == 17 && at == 17)
            for (split = 1; split < strlen(st); split++)
              check_round_trip_split(shapes[i].hdr, st, scan, split);
        }
        if (xcm_test_failures() != before)
          xcm_test_note("shape %zu, %zu declarations, redeclared at %zu", i,
                        counts[c], at);
        free(st);
        if (xcm_test_failures() != before)
          return;
        xcm_test_tried("namespace-declarations", before);
      }
}

static void test_wrap_exact(void) {
  char out[1024];
  const char *auth = "<auth xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\" "
                     "mechanism=\"PLAIN\">AGFsaWNlAGFsaWNl</auth>";
  const char *msg = "<message to=\"bob@example.test/cmtest-bob\" type=\"chat\" "
                    "id=\"m1\"><body>hello bob, from alice via CM</body>"
                    "</message>";
  int n;

  /* Byte for byte what transcript-cm.txt shows the CM sending. */
  n = xcm_route_wrap(out, sizeof out, auth, strlen(auth), "abc123",
                     "example.test", "cm1/worker-1");
  CHECK_INT(n, 159 - 0);
  CHECK_STR(out, "<route streamid=\"abc123\" to=\"example.test\" "
                 "from=\"cm1/worker-1\"><auth "
                 "xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\" "
                 "mechanism=\"PLAIN\">AGFsaWNlAGFsaWNl</auth></route>");
  /* A stanza that relied on the stream's default gets it explicitly. */
  n = xcm_route_wrap(out, sizeof out, msg, strlen(msg), "abc123",
                     "example.test", "cm1/worker-1");
  CHECK(n > 0);
  CHECK_STR(out, "<route streamid=\"abc123\" to=\"example.test\" "
                 "from=\"cm1/worker-1\"><message xmlns=\"jabber:client\" "
                 "to=\"bob@example.test/cmtest-bob\" type=\"chat\" "
                 "id=\"m1\"><body>hello bob, from alice via "
                 "CM</body></message></route>");
  n = xcm_route_wrap(out, sizeof out, "<presence/>", 11, "b1", "example.test",
                     "cm1/worker-1");
  CHECK_STR(out, "<route streamid=\"b1\" to=\"example.test\" "
                 "from=\"cm1/worker-1\"><presence "
                 "xmlns=\"jabber:client\"/></route>");
  /* Too small a buffer: the length, and no partial output. */
  CHECK_INT(xcm_route_wrap(out, 10, "<presence/>", 11, "b1", "example.test",
                           "cm1/worker-1"),
            n);
  CHECK_STR(out, "");
}

static void test_wrap_header_prefixes(void) {
  xcm_xml_pool *pool;
  reading rd;
  const char *st = "<message><foo:x bar:a='1'/></message>";

  memset(&rd, 0, sizeof rd);
  REQUIRE(xcm__xml_pool_new(&pool, NULL, 2) == 0);
  rd.sid = "s";
  REQUIRE(read_stream(&rd, pool, CLIENT_HDR_PREFIXES, st, strlen(st)) == 0);
  CHECK_MEM(rd.wrapped.data, rd.wrapped.len,
            "<route streamid=\"s\" to=\"example.test\" from=\"cm1/worker-1\">"
            "<message xmlns=\"jabber:client\" xmlns:foo=\"urn:foo\" "
            "xmlns:bar=\"urn:bar\"><foo:x bar:a='1'/></message></route>",
            strlen("<route streamid=\"s\" to=\"example.test\" "
                   "from=\"cm1/worker-1\"><message xmlns=\"jabber:client\" "
                   "xmlns:foo=\"urn:foo\" xmlns:bar=\"urn:bar\"><foo:x "
                   "bar:a='1'/></message></route>"));
  reading_free(&rd);
  xcm__xml_pool_free(pool);
}

static void test_round_trips(void) {
  static const char *cases[] = {
      "<message to='bob@example.test' type='chat'><body>hi</body></message>",
      "<message xmlns='jabber:client' to='bob@example.test'/>",
      "<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>",
      "<message><foo:x xmlns:foo='urn:own'/><y xmlns='urn:y'><z/></y>"
      "</message>",
      "<message><foo:x/><bar:y foo:attr='v'/></message>",
      "<message xmlns:foo='urn:redeclared'><foo:x/></message>",
      "<message to='a&amp;b' id='&quot;&apos;&lt;&gt;' "
      "x=\"tab&#9;nl&#10;\"><body>&lt;/route&gt; &amp;amp; "
      "\xc3\xbcml\xc3\xa4ut \xe2\x98\x83 \xf0\x9f\x98\x80</body></message>",
      "<message><body><![CDATA[</route><route streamid='victim'>]]></body>"
      "</message>",
      "<presence><stream:error/></presence>",
      "<message xml:lang='de'><body xml:lang='en'>x</body></message>",
      "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
      "AGFsaWNlAGFsaWNl</auth>",
  };
  size_t i;

  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    check_round_trip(CLIENT_HDR_PREFIXES, cases[i], "abc123");
    if (strstr(cases[i], "foo:") == NULL && strstr(cases[i], "bar:") == NULL)
      check_round_trip(CLIENT_HDR, cases[i], "abc123");
  }
}

/* Whatever a client writes, the server reads one route for the client's
 * own stream id with one element in it; what cannot be framed safely is
 * refused before anything is written. */
static void test_smuggling(void) {
  static const char *framed[] = {
      "<message><body>&lt;/route&gt;&lt;route "
      "streamid='victim'&gt;</body></message>",
      "<message><body><![CDATA[</route><route streamid=\"victim\">"
      "<message/></route>]]></body></message>",
      "<route streamid='victim' to='example.test'><message/></route>",
      "<handshake>0000000000000000000000000000000000000000</handshake>",
      "<iq type='set' id='x'><session "
      "xmlns='http://jabber.org/protocol/connectionmanager' "
      "id='victim'><close/></session></iq>",
      "<message to='x\"&gt;&lt;/route&gt;'/>",
  };
  static const char *refused[] = {
      "<message></route><route streamid='victim'><message/></message>",
      "<message><x:y/></message>",
      "<message x:a='1'/>",
      "<message/></route><route streamid='victim'><message/>",
      "<message/><message/>",
      "<message>",
      "</route>",
      "<!-- --><message/>",
      "<message>&ent;</message>",
      "",
  };
  char out[2048];
  size_t i;

  unsigned before;

  for (i = 0; i < sizeof(framed) / sizeof(framed[0]); i++) {
    before = xcm_test_failures();
    check_round_trip(CLIENT_HDR, framed[i], "mine");
    xcm_test_tried("smuggling", before);
  }
  for (i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
    int n;

    before = xcm_test_failures();
    n = xcm_route_wrap(out, sizeof out, refused[i], strlen(refused[i]), "mine",
                       "example.test", "cm1/worker-1");
    if (!CHECK(n < 0))
      xcm_test_note("wrapped: %s", out);
    CHECK_STR(out, "");
    xcm_test_tried("smuggling", before);
  }
  /* Hostile stream ids and addresses are escaped, never markup. */
  before = xcm_test_failures();
  check_round_trip(CLIENT_HDR, "<presence/>",
                   "a\" to=\"x\"><evil/><route x=\"");
  xcm_test_tried("smuggling", before);
  before = xcm_test_failures();
  check_round_trip(CLIENT_HDR, "<presence/>", "&lt;'<>&");
  xcm_test_tried("smuggling", before);
  before = xcm_test_failures();
  CHECK_INT(xcm_route_wrap(out, sizeof out, "<presence/>", 11, "bad\x01",
                           "example.test", "cm1/worker-1"),
            XCM_EINVAL);
  xcm_test_tried("smuggling", before);
}

static void test_unwrap(void) {
  xcm_route *r;
  const char *cases[] = {
      "<route from=\"example.test\" to=\"cm1\" streamid=\"abc123\"><success "
      "xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"/></route>",
      "<route streamid=\"c1\" from=\"example.test\" to=\"cm1/worker-1\" "
      "type=\"error\"><error code=\"404\" type=\"cancel\"><item-not-found "
      "xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/></error></route>",
      "<route streamid='t'>\n  <presence/>\n</route>",
      "<route streamid='raw'>&lt;stream:error&gt;&lt;conflict "
      "xmlns='urn:ietf:params:xml:ns:xmpp-streams'/&gt;&lt;/stream:error&gt;"
      "</route>",
  };

  REQUIRE(xcm_route_unwrap(cases[0], strlen(cases[0]), &r) == 0);
  CHECK_STR(r->streamid, "abc123");
  CHECK(r->type == NULL);
  CHECK_STR(r->to, "cm1");
  CHECK_STR(r->inner, "<success xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"/>");
  CHECK(r->text == NULL);
  xcm_route_free(r);

  REQUIRE(xcm_route_unwrap(cases[1], strlen(cases[1]), &r) == 0);
  CHECK_STR(r->type, "error");
  CHECK_STR(r->streamid, "c1");
  CHECK(strncmp(r->inner, "<error code=\"404\"", 17) == 0);
  xcm_route_free(r);

  REQUIRE(xcm_route_unwrap(cases[2], strlen(cases[2]), &r) == 0);
  CHECK_STR(r->inner, "<presence/>");
  xcm_route_free(r);

  REQUIRE(xcm_route_unwrap(cases[3], strlen(cases[3]), &r) == 0);
  CHECK(r->inner == NULL);
  CHECK_MEM(r->text, r->text_len,
            "<stream:error><conflict "
            "xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
            strlen("<stream:error><conflict "
                   "xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
                   "</stream:error>"));
  xcm_route_free(r);
}

static void test_unwrap_refused(void) {
  static const struct {
    const char *in;
    int err;
  } cases[] = {
      {"<route to=\"example.test\" from=\"cm1/worker-1\"><presence/></route>",
       XCM_EPROTO},
      {"<route streamid=\"f1\" to=\"example.test\" from=\"cm1/worker-1\"/>",
       XCM_EPROTO},
      {"<route streamid='f1'>  </route>", XCM_EPROTO},
      {"<route streamid=\"f1\"><message id=\"one\"/><message "
       "id=\"two\"/></route>",
       XCM_EPROTO},
      {"<route streamid='f1'>text<presence/></route>", XCM_EPROTO},
      {"<message streamid='f1'><presence/></message>", XCM_EPROTO},
      {"<route streamid='f1'><presence></route>", XCM_EXML},
      {"<route streamid='f1'><p:x/></route>", XCM_EXML},
      {"<route streamid='a'><presence/></route><route streamid='b'/>",
       XCM_EXML},
  };
  size_t i;

  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    xcm_route *r = (xcm_route *)&r;
    unsigned before = xcm_test_failures();

    if (!CHECK_INT(xcm_route_unwrap(cases[i].in, strlen(cases[i].in), &r),
                   cases[i].err))
      xcm_test_note("case %zu", i);
    CHECK(r == NULL);
    xcm_test_tried("hostile-upstream", before);
  }
}

/* Every route Openfire sent in the captures unwraps: the stream id
 * matches the attribute in the raw text, and the inner bytes are the
 * text between the route's tags. */
typedef struct unwrap_ctx {
  int routes, errors;
  const char *last_why;
} unwrap_ctx;

static int contains(const char *hay, size_t len, const char *needle) {
  size_t n = strlen(needle), i;

  for (i = 0; i + n <= len; i++)
    if (memcmp(hay + i, needle, n) == 0)
      return 1;
  return 0;
}

static int want_two(void *ud, const char *ns, const char *name) {
  (void)ud;
  (void)ns;
  return strcmp(name, "route") == 0 ? 2 : 0;
}

static int check_route(void *ud, const xcm_xml_stanza *s) {
  unwrap_ctx *u = ud;
  xcm_route r;
  const char *why = NULL, *open_end, *close;
  char attr[160];

  if (strcmp(s->name, "route") != 0)
    return 0;
  u->routes++;
  if (xcm__route_unwrap(s, &r, &why) != 0) {
    u->errors++;
    u->last_why = why;
    return 0;
  }
  snprintf(attr, sizeof attr, "streamid=\"%s\"", r.streamid);
  CHECK(contains(s->bytes, s->len, attr));
  open_end = memchr(s->bytes, '>', s->len);
  close = s->bytes + s->len - strlen("</route>");
  REQUIRE(open_end != NULL);
  CHECK(r.inner != NULL);
  if (r.inner != NULL)
    CHECK_MEM(r.inner, r.inner_len, open_end + 1,
              (size_t)(close - (open_end + 1)));
  return 0;
}

static void test_unwrap_transcripts(void) {
  static const char *names[] = {"transcript-cm.txt",
                                "transcript-probe-a-dup-names.txt",
                                "transcript-probe-b-cm-tcp-close.txt",
                                "transcript-probe-c-server-closes-client.txt",
                                "transcript-probe-e-unknown-stream.txt",
                                "transcript-probe-f-two-stanzas.txt",
                                "transcript-probe-g-handshake.txt"};
  static const xcm_xml_callbacks cb = {NULL, want_two, check_route, NULL};
  xcm_xml_pool *pool;
  size_t t, i, consumed;
  int total = 0;

  REQUIRE(xcm__xml_pool_new(&pool, NULL, 2) == 0);
  for (t = 0; t < sizeof(names) / sizeof(names[0]); t++) {
    xcm_transcript tr;

    REQUIRE(xcm_transcript_load_named(names[t], &tr) == 0);
    for (i = 0; i < tr.nchunks; i++) {
      const xcm_transcript_chunk *c = &tr.chunks[i];
      const char *p = c->bytes;
      unwrap_ctx u = {0, 0, NULL};
      xcm_xml_reader *r;

      if (c->is_send || strstr(c->bytes, "<route") == NULL)
        continue;
      /* Each received chunk holding routes is a sequence of whole
       * elements in the captures; read it in the server's context. */
      REQUIRE(xcm__xml_reader_new(&r, pool, &cb, &u, NULL) == 0);
      REQUIRE(xcm__xml_reader_assume_header(r, &xcm__stream_cm) == 0);
      CHECK_INT(xcm__xml_reader_feed(r, c->bytes, c->len, &consumed), 0);
      xcm__xml_reader_free(r);
      while ((p = strstr(p, "<route")) != NULL) {
        total++;
        p++;
      }
      CHECK(u.routes > 0);
      if (!CHECK_INT(u.errors, 0))
        xcm_test_note("%s chunk %zu: %s", names[t], i, u.last_why);
    }
    xcm_transcript_free(&tr);
  }
  if (!CHECK(total >= 50))
    xcm_test_note("only %d routes", total);
  xcm__xml_pool_free(pool);
}

static void test_start_tag(void) {
  const char *v, *q;
  size_t vl, ql;
  const char *t1 = "<success xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"/>";
  const char *t2 = "<iq id='a\"xmlns=\"x' type = 'result'><q xmlns='n'/></iq>";
  const char *t3 = "<message\tto='a'\n xmlns:xmlns2='y'>";

  CHECK(xcm__xml_start_tag(t1, strlen(t1), "xmlns", &v, &vl, &q, &ql));
  CHECK_MEM(q, ql, "success", 7);
  CHECK_MEM(v, vl, "urn:ietf:params:xml:ns:xmpp-sasl", 32);
  /* A value holding the other quote and a look-alike is not a match. */
  CHECK(!xcm__xml_start_tag(t2, strlen(t2), "xmlns", &v, &vl, &q, &ql));
  CHECK(xcm__xml_start_tag(t2, strlen(t2), "type", &v, &vl, &q, &ql));
  CHECK_MEM(v, vl, "result", 6);
  CHECK(xcm__xml_start_tag(t2, strlen(t2), "id", &v, &vl, &q, &ql));
  CHECK_MEM(v, vl, "a\"xmlns=\"x", 10);
  /* Attributes on children do not count; prefixed names are not xmlns. */
  CHECK(!xcm__xml_declares_default(t2, strlen(t2)));
  CHECK(!xcm__xml_declares_default(t3, strlen(t3)));
  CHECK(xcm__xml_declares_default(t1, strlen(t1)));
  CHECK(!xcm__xml_start_tag("<a/>", 4, "b", &v, &vl, &q, &ql));
  CHECK(!xcm__xml_start_tag("", 0, "b", &v, &vl, &q, &ql));
}

static const xcm_test tests[] = {
    {"start_tag", test_start_tag},
    {"wrap_exact", test_wrap_exact},
    {"wrap_header_prefixes", test_wrap_header_prefixes},
    {"round_trips", test_round_trips},
    {"wrap_many_declarations", test_wrap_many_declarations},
    {"smuggling", test_smuggling},
    {"unwrap", test_unwrap},
    {"unwrap_refused", test_unwrap_refused},
    {"unwrap_transcripts", test_unwrap_transcripts},
};

int main(int argc, char **argv) {
  return xcm_test_main(argc, argv, XCM_TESTS(tests));
}
