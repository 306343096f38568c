/* The client policy read from Openfire's configuration iq: hand-built
 * trees for every branch, then the captured bytes through the reader. */
#include <string.h>

#include "harness.h"
#include "proto/policy.h"
#include "transcript.h"
#include "xcm/error.h"
#include "xcm/policy.h"
#include "proto/stream.h"
#include "xml/reader.h"

#define NS_CMP "http://jabber.org/protocol/connectionmanager"
#define NS_TLS "urn:ietf:params:xml:ns:xmpp-tls"
#define NS_SASL "urn:ietf:params:xml:ns:xmpp-sasl"
#define NS_COMPRESS "http://jabber.org/features/compress"

/* Hand-built trees: nodes come from a fixed pool, cleared per case. */
typedef struct tree {
  xcm_xml_node nodes[64];
  size_t n;
} tree;

static xcm_xml_node *add(tree *t, xcm_xml_node *parent, const char *ns,
                         const char *name, const char *text) {
  xcm_xml_node *n, **link;

  if (t->n == sizeof(t->nodes) / sizeof(t->nodes[0]))
    return NULL;
  n = &t->nodes[t->n++];
  memset(n, 0, sizeof(*n));
  n->ns = ns;
  n->name = name;
  n->text = text != NULL ? text : "";
  n->text_len = strlen(n->text);
  n->parent = parent;
  if (parent != NULL) {
    for (link = &parent->children; *link != NULL; link = &(*link)->next)
      ;
    *link = n;
    parent->nchildren++;
  }
  return n;
}

static const xcm_xml_attr set_attrs[] = {{"", "type", "set"},
                                         {"", "id", "868-16"}};
static const xcm_xml_attr result_attrs[] = {{"", "type", "result"},
                                            {"", "id", "868-16"}};

/* <iq type="set"><configuration/></iq>, returning the configuration. */
static xcm_xml_node *config_iq(tree *t, xcm_xml_node **iq) {
  t->n = 0;
  *iq = add(t, NULL, "jabber:connectionmanager", "iq", NULL);
  (*iq)->attrs = set_attrs;
  (*iq)->nattrs = 2;
  return add(t, *iq, NS_CMP, "configuration", NULL);
}

static void add_mechs(tree *t, xcm_xml_node *config, const char *const *names,
                      size_t n) {
  xcm_xml_node *m = add(t, config, NS_SASL, "mechanisms", NULL);
  size_t i;

  for (i = 0; i < n; i++)
    add(t, m, NS_SASL, "mechanism", names[i]);
}

static void test_full(void) {
  static const char *const mechs[] = {"PLAIN", "ANONYMOUS", "SCRAM-SHA-1",
                                      "DIGEST-MD5"};
  tree t;
  xcm_xml_node *iq, *config, *tls, *comp;
  xcm_policy p;
  char desc[256];

  config = config_iq(&t, &iq);
  tls = add(&t, config, NS_TLS, "starttls", NULL);
  add(&t, tls, NS_TLS, "required", NULL);
  add_mechs(&t, config, mechs, 4);
  comp = add(&t, config, NS_COMPRESS, "compression", NULL);
  add(&t, comp, NS_COMPRESS, "method", "zlib");
  add(&t, config, "http://jabber.org/features/iq-auth", "auth", NULL);
  add(&t, config, "http://jabber.org/features/iq-register", "register", NULL);

  memset(&p, 0xa5, sizeof(p));
  CHECK_INT(xcm__policy_from_config(iq, &p), 0);
  CHECK_INT(p.tls, XCM_TLS_REQUIRED);
  CHECK_INT(p.nmechanisms, 4);
  CHECK_STR(p.mechanisms[0], "PLAIN");
  CHECK_STR(p.mechanisms[3], "DIGEST-MD5");
  CHECK(p.compression_zlib);
  CHECK(p.legacy_auth);
  CHECK(p.registration);
  CHECK(xcm_policy_has_mechanism(&p, "SCRAM-SHA-1", 11));
  CHECK(!xcm_policy_has_mechanism(&p, "SCRAM-SHA", 9));
  CHECK(!xcm_policy_has_mechanism(&p, "EXTERNAL", 8));
  CHECK(xcm_policy_describe(desc, sizeof(desc), &p) > 0);
  CHECK_STR(desc, "tls=required "
                  "mechanisms=PLAIN,ANONYMOUS,SCRAM-SHA-1,DIGEST-MD5 "
                  "compression=zlib auth=yes register=yes");
}

static void test_empty(void) {
  tree t;
  xcm_xml_node *iq;
  xcm_policy p;
  char desc[256];

  config_iq(&t, &iq);
  memset(&p, 0xa5, sizeof(p));
  CHECK_INT(xcm__policy_from_config(iq, &p), 0);
  CHECK_INT(p.tls, XCM_TLS_OFF);
  CHECK_INT(p.nmechanisms, 0);
  CHECK(!p.compression_zlib);
  CHECK(!p.legacy_auth);
  CHECK(!p.registration);
  CHECK(xcm_policy_describe(desc, sizeof(desc), &p) > 0);
  CHECK_STR(desc, "tls=off mechanisms=none compression=none auth=no "
                  "register=no");
}

static void test_not_a_config(void) {
  tree t;
  xcm_xml_node *iq, *config;
  xcm_policy p, before;

  memset(&before, 0x5a, sizeof(before));
  p = before;

  config = config_iq(&t, &iq);
  iq->attrs = result_attrs;
  TRIED("hostile-upstream",
        CHECK_INT(xcm__policy_from_config(iq, &p), XCM_EPROTO));
  iq->nattrs = 0;
  TRIED("hostile-upstream",
        CHECK_INT(xcm__policy_from_config(iq, &p), XCM_EPROTO));
  iq->attrs = set_attrs;
  iq->nattrs = 2;

  config->ns = "jabber:client";
  TRIED("hostile-upstream",
        CHECK_INT(xcm__policy_from_config(iq, &p), XCM_EPROTO));
  config->ns = NS_CMP;
  config->name = "session";
  TRIED("hostile-upstream",
        CHECK_INT(xcm__policy_from_config(iq, &p), XCM_EPROTO));
  config->name = "configuration";

  iq->ns = "jabber:client";
  TRIED("hostile-upstream",
        CHECK_INT(xcm__policy_from_config(iq, &p), XCM_EPROTO));
  iq->ns = "jabber:connectionmanager";
  iq->name = "route";
  TRIED("hostile-upstream",
        CHECK_INT(xcm__policy_from_config(iq, &p), XCM_EPROTO));
  TRIED("hostile-upstream",
        CHECK_INT(xcm__policy_from_config(NULL, &p), XCM_EPROTO));

  /* A refused push leaves the policy in force alone. */
  CHECK(memcmp(&p, &before, sizeof(p)) == 0);

  /* The configuration need not be the first child. */
  t.n = 0;
  iq = add(&t, NULL, "jabber:connectionmanager", "iq", NULL);
  iq->attrs = set_attrs;
  iq->nattrs = 2;
  add(&t, iq, "urn:example", "note", NULL);
  config = add(&t, iq, NS_CMP, "configuration", NULL);
  add(&t, config, "http://jabber.org/features/iq-register", "register", NULL);
  CHECK_INT(xcm__policy_from_config(iq, &p), 0);
  CHECK(p.registration);
}

static void test_mechanism_filter(void) {
  static const char *const mechs[] = {
      "PLAIN",
      "",                      /* empty */
      "scram-sha-1",           /* lowercase */
      "SCRAM SHA",             /* space */
      "X<Y",                   /* markup */
      "ABCDEFGHIJKLMNOPQRSTU", /* 21 characters */
      "ABCDEFGHIJKLMNOPQRST",  /* 20: fine */
      "PLAIN",                 /* repeat */
      "  EXTERNAL\n",          /* surrounding whitespace is not the name */
      "GS2-KRB5_PLUS",
      "\xc3\x9c",
  };
  tree t;
  xcm_xml_node *iq, *config, *m;
  xcm_policy p;
  char name[8];
  int i;

  config = config_iq(&t, &iq);
  add_mechs(&t, config, mechs, sizeof(mechs) / sizeof(mechs[0]));
  /* Foreign children of <mechanisms/> are not mechanisms. */
  add(&t, config->children, "urn:other", "mechanism", "OTHER");
  /* The seven bad names and the repeat are counted as left out. */
  CHECK_INT(xcm__policy_from_config(iq, &p), 7);
  CHECK_INT(p.nmechanisms, 4);
  CHECK_STR(p.mechanisms[0], "PLAIN");
  CHECK_STR(p.mechanisms[1], "ABCDEFGHIJKLMNOPQRST");
  CHECK_STR(p.mechanisms[2], "EXTERNAL");
  CHECK_STR(p.mechanisms[3], "GS2-KRB5_PLUS");

  /* At most XCM_POLICY_MAX_MECHANISMS, the first ones. */
  config = config_iq(&t, &iq);
  m = add(&t, config, NS_SASL, "mechanisms", NULL);
  {
    static char names[20][8];

    for (i = 0; i < 20; i++) {
      strcpy(names[i], "M-");
      names[i][2] = (char)('A' + i);
      names[i][3] = '\0';
      add(&t, m, NS_SASL, "mechanism", names[i]);
    }
  }
  /* ... and the rest are counted, so that the link can say so. */
  CHECK_INT(xcm__policy_from_config(iq, &p), 20 - XCM_POLICY_MAX_MECHANISMS);
  CHECK_INT(p.nmechanisms, XCM_POLICY_MAX_MECHANISMS);
  strcpy(name, "M-P");
  CHECK_STR(p.mechanisms[XCM_POLICY_MAX_MECHANISMS - 1], name);
}

static void test_compression_and_tls_variants(void) {
  tree t;
  xcm_xml_node *iq, *config, *comp, *tls;
  xcm_policy p;

  /* Only other methods: no compression. */
  config = config_iq(&t, &iq);
  comp = add(&t, config, NS_COMPRESS, "compression", NULL);
  add(&t, comp, NS_COMPRESS, "method", "lzw");
  add(&t, comp, "urn:other", "method", "zlib");
  CHECK_INT(xcm__policy_from_config(iq, &p), 0);
  CHECK(!p.compression_zlib);
  add(&t, comp, NS_COMPRESS, "method", " zlib ");
  CHECK_INT(xcm__policy_from_config(iq, &p), 0);
  CHECK(p.compression_zlib);

  /* starttls without required; a required in another namespace does not
   * count; elements in the wrong namespace are not features. */
  config = config_iq(&t, &iq);
  tls = add(&t, config, NS_TLS, "starttls", NULL);
  add(&t, tls, "urn:other", "required", NULL);
  add(&t, config, "urn:other", "auth", NULL);
  add(&t, config, "urn:other", "register", NULL);
  CHECK_INT(xcm__policy_from_config(iq, &p), 0);
  CHECK_INT(p.tls, XCM_TLS_OPTIONAL);
  CHECK(!p.legacy_auth);
  CHECK(!p.registration);
}

static void test_describe_contract(void) {
  xcm_policy p;
  char small[10];
  int n;

  memset(&p, 0, sizeof(p));
  p.tls = XCM_TLS_OPTIONAL;
  strcpy(p.mechanisms[0], "PLAIN");
  p.nmechanisms = 1;
  n = xcm_policy_describe(NULL, 0, &p);
  CHECK_INT(n, strlen("tls=optional mechanisms=PLAIN compression=none "
                      "auth=no register=no"));
  CHECK_INT(xcm_policy_describe(small, sizeof(small), &p), n);
  CHECK_STR(small, "tls=optio");
}

/* The configuration iq of every capture, through the reader. */
typedef struct cfg_ctx {
  xcm_policy policy;
  int result;
  int configs;
} cfg_ctx;

static int cfg_stanza_start(void *ud, const char *ns, const char *name) {
  (void)ud;
  /* iq, configuration, mechanisms, mechanism: four levels. */
  return strcmp(name, "iq") == 0 && strcmp(ns, XCM_NS_CM) == 0 ? 4 : 0;
}

static int cfg_stanza(void *ud, const xcm_xml_stanza *s) {
  cfg_ctx *c = ud;

  if (s->root == NULL)
    return 0;
  c->result = xcm__policy_from_config(s->root, &c->policy);
  if (c->result >= 0)
    c->configs++;
  return 0;
}

static int parse_config(const char *bytes, size_t len, cfg_ctx *c) {
  xcm_xml_callbacks cb;
  xcm_xml_pool *pool;
  xcm_xml_reader *r;
  size_t consumed;
  int err;

  memset(&cb, 0, sizeof(cb));
  cb.stanza_start = cfg_stanza_start;
  cb.stanza = cfg_stanza;
  memset(c, 0, sizeof(*c));
  c->result = 1;
  if (xcm__xml_pool_new(&pool, NULL, 1) != 0)
    return XCM_ENOMEM;
  err = xcm__xml_reader_new(&r, pool, &cb, c, NULL);
  if (err == 0) {
    err = xcm__xml_reader_assume_header(r, &xcm__stream_cm);
    if (err == 0)
      err = xcm__xml_reader_feed(r, bytes, len, &consumed);
    xcm__xml_reader_free(r);
  }
  xcm__xml_pool_free(pool);
  return err;
}

static void test_transcripts_through_reader(void) {
  static const char *const names[] = {
      "transcript-cm.txt",
      "transcript-probe-a-dup-names.txt",
      "transcript-probe-b-cm-tcp-close.txt",
      "transcript-probe-c-server-closes-client.txt",
      "transcript-probe-d-failed.txt",
      "transcript-probe-d2-failed-offline.txt",
      "transcript-probe-e-unknown-stream.txt",
      "transcript-probe-e2-no-streamid.txt",
      "transcript-probe-f-two-stanzas.txt",
      "transcript-probe-g-handshake.txt",
  };
  size_t f, i, seen = 0;

  for (f = 0; f < sizeof(names) / sizeof(names[0]); f++) {
    xcm_transcript t;

    if (!CHECK(xcm_transcript_load_named(names[f], &t) == 0)) {
      xcm_test_note("%s", t.error);
      continue;
    }
    for (i = 0; i < t.nchunks; i++) {
      const xcm_transcript_chunk *c = &t.chunks[i];
      cfg_ctx ctx;

      if (c->is_send || strstr(c->bytes, "<configuration ") == NULL)
        continue;
      seen++;
      CHECK_INT(parse_config(c->bytes, c->len, &ctx), 0);
      CHECK_INT(ctx.result, 0);
      CHECK_INT(ctx.configs, 1);
      CHECK_INT(ctx.policy.tls, XCM_TLS_OPTIONAL);
      CHECK_INT(ctx.policy.nmechanisms, 4);
      CHECK_STR(ctx.policy.mechanisms[0], "PLAIN");
      CHECK_STR(ctx.policy.mechanisms[1], "ANONYMOUS");
      CHECK_STR(ctx.policy.mechanisms[2], "SCRAM-SHA-1");
      CHECK_STR(ctx.policy.mechanisms[3], "DIGEST-MD5");
      CHECK(ctx.policy.compression_zlib);
      CHECK(ctx.policy.registration);
      CHECK(!ctx.policy.legacy_auth);
    }
    xcm_transcript_free(&t);
  }
  xcm_test_note("%zu configuration iqs read", seen);
  CHECK(seen >= 10);
}

static void test_variants_through_reader(void) {
  static const char required[] =
      "<iq type=\"set\" id=\"1-1\"><configuration xmlns=\"" NS_CMP "\">"
      "<starttls xmlns=\"" NS_TLS "\"><required/></starttls>"
      "<mechanisms xmlns=\"" NS_SASL "\">\n  <mechanism> PLAIN </mechanism>"
      "<mechanism>EXTERNAL</mechanism></mechanisms>"
      "<auth xmlns=\"http://jabber.org/features/iq-auth\"/>"
      "</configuration></iq>";
  static const char nothing[] =
      "<iq type=\"set\" id=\"1-2\"><configuration xmlns=\"" NS_CMP "\"/></iq>";
  static const char result[] =
      "<iq type=\"result\" id=\"1-3\"><configuration xmlns=\"" NS_CMP
      "\"/></iq>";
  cfg_ctx ctx;

  CHECK_INT(parse_config(required, strlen(required), &ctx), 0);
  CHECK_INT(ctx.result, 0);
  CHECK_INT(ctx.policy.tls, XCM_TLS_REQUIRED);
  CHECK_INT(ctx.policy.nmechanisms, 2);
  CHECK_STR(ctx.policy.mechanisms[0], "PLAIN");
  CHECK_STR(ctx.policy.mechanisms[1], "EXTERNAL");
  CHECK(!ctx.policy.compression_zlib);
  CHECK(ctx.policy.legacy_auth);
  CHECK(!ctx.policy.registration);

  CHECK_INT(parse_config(nothing, strlen(nothing), &ctx), 0);
  CHECK_INT(ctx.result, 0);
  CHECK_INT(ctx.policy.tls, XCM_TLS_OFF);
  CHECK_INT(ctx.policy.nmechanisms, 0);
  CHECK(!ctx.policy.compression_zlib && !ctx.policy.legacy_auth &&
        !ctx.policy.registration);

  CHECK_INT(parse_config(result, strlen(result), &ctx), 0);
  CHECK_INT(ctx.result, XCM_EPROTO);
}

static const xcm_test tests[] = {
    {"full", test_full},
    {"empty", test_empty},
    {"not_a_config", test_not_a_config},
    {"mechanism_filter", test_mechanism_filter},
    {"compression_and_tls_variants", test_compression_and_tls_variants},
    {"describe_contract", test_describe_contract},
    {"transcripts_through_reader", test_transcripts_through_reader},
    {"variants_through_reader", test_variants_through_reader},
};

int main(int argc, char **argv) {
  return xcm_test_main(argc, argv, XCM_TESTS(tests));
}
