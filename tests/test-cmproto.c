/* The CM's builders: byte-exact against the Openfire captures, handshake
 * digests against every handshake in them, well-formed output whatever
 * the caller's strings hold, and the snprintf contract of the public
 * wrappers. */
#include <expat.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "proto/cmproto.h"
#include "transcript.h"
#include "util/buf.h"
#include "xcm/error.h"
#include "xcm/proto.h"

#define NS_CMP "http://jabber.org/protocol/connectionmanager"

/* Strings that would break out of an attribute or an element if any
 * escaping were missing. */
static const char *const hostile[] = {
    "\"/><route streamid=\"victim\" to=\"example.test\">",
    "'/><iq type='set'>",
    "</route>",
    "a&b<c>d",
    "&amp;&#60;",
    "x\r\ny\tz",
    "]]>",
    "\xc3\xbc\xe2\x98\x83",
};
#define NHOSTILE (sizeof(hostile) / sizeof(hostile[0]))

/* 1 if the capture holds a chunk sent by the scripted CM with exactly
 * these bytes: ties each expected string below to the wire. */
static int sent_in_capture(const char *name, const char *bytes) {
  xcm_transcript t;
  size_t i;
  int found = 0;

  if (xcm_transcript_load_named(name, &t) != 0) {
    xcm_test_note("%s", t.error);
    return 0;
  }
  for (i = 0; i < t.nchunks && !found; i++)
    found = t.chunks[i].is_send && t.chunks[i].len == strlen(bytes) &&
            memcmp(t.chunks[i].bytes, bytes, t.chunks[i].len) == 0;
  xcm_transcript_free(&t);
  return found;
}

/* Runs an internal builder's output through expat and records each
 * element and attribute as "\x01name@attr=value", \x01 being a byte no
 * XML document can hold. */
typedef struct parsed {
  xcm_buf log;
  int elements;
  int ok;
} parsed;

static void XMLCALL p_start(void *ud, const XML_Char *name,
                            const XML_Char **atts) {
  parsed *p = ud;
  size_t i;

  p->elements++;
  xcm__buf_append_char(&p->log, '\x01');
  xcm__buf_append_str(&p->log, name);
  for (i = 0; atts[i] != NULL; i += 2) {
    xcm__buf_append_char(&p->log, '\x01');
    xcm__buf_append_str(&p->log, name);
    xcm__buf_append_char(&p->log, '@');
    xcm__buf_append_str(&p->log, atts[i]);
    xcm__buf_append_char(&p->log, '=');
    xcm__buf_append_str(&p->log, atts[i + 1]);
  }
}

static void XMLCALL p_chars(void *ud, const XML_Char *s, int len) {
  parsed *p = ud;

  xcm__buf_append_char(&p->log, '\x01');
  xcm__buf_append_str(&p->log, "#text=");
  xcm__buf_append(&p->log, s, (size_t)len);
}

static void parse(parsed *p, const char *doc, size_t len) {
  XML_Parser x = XML_ParserCreate("UTF-8");

  xcm__buf_init(&p->log, NULL);
  p->elements = 0;
  XML_SetUserData(x, p);
  XML_SetElementHandler(x, p_start, NULL);
  XML_SetCharacterDataHandler(x, p_chars);
  p->ok = XML_Parse(x, doc, (int)len, 1) == XML_STATUS_OK;
  if (!p->ok)
    xcm_test_note("expat: %s in \"%.*s\"", XML_ErrorString(XML_GetErrorCode(x)),
                  (int)len, doc);
  XML_ParserFree(x);
  xcm__buf_append_char(&p->log, '\x01');
  xcm__buf_append_char(&p->log, '\0');
}

static int logged(const parsed *p, const char *elem, const char *attr,
                  const char *value) {
  xcm_buf want;
  int found;

  xcm__buf_init(&want, NULL);
  xcm__buf_append_char(&want, '\x01');
  xcm__buf_append_str(&want, elem);
  xcm__buf_append_char(&want, '@');
  xcm__buf_append_str(&want, attr);
  xcm__buf_append_char(&want, '=');
  xcm__buf_append_str(&want, value);
  xcm__buf_append_char(&want, '\x01');
  xcm__buf_append_char(&want, '\0');
  found = strstr(p->log.data, want.data) != NULL;
  xcm__buf_free(&want);
  return found;
}

/* Byte-exact ------------------------------------------------------------ */

static void test_stream_open(void) {
  static const char want[] =
      "<stream:stream xmlns:stream=\"http://etherx.jabber.org/streams\" "
      "xmlns=\"jabber:connectionmanager\" to=\"cm1/worker-1\" version=\"1.0\">";
  char out[256];

  CHECK(sent_in_capture("transcript-cm.txt", want));
  CHECK_INT(xcm_cm_stream_open(out, sizeof(out), "cm1/worker-1"), strlen(want));
  CHECK_STR(out, want);
  CHECK_INT(xcm_cm_stream_open(out, sizeof(out), ""), XCM_EINVAL);
  CHECK_INT(xcm_cm_stream_open(out, sizeof(out), NULL), XCM_EINVAL);
}

static void test_digest_known(void) {
  static const struct {
    const char *id, *hex;
  } v[] = {
      {"auzdi7yser", "48a8507412937508f3ca63365c2a9a5aa807bd4d"},
      {"4he7nrrdbh", "62686bf026e117530e00a7b5ab3178266501ee2d"},
      {"935ew1me9c", "51326253250206057a26591c18197c1362606323"},
      {"7t9xwusmh3", "8eeedd9778b14e0bb552536fd29d4268e2fd1dd1"},
      {"mx21cwt25", "1948e1337589ca37dccf132ef14714c86df1b0d5"},
      {"axbxmua0vv", "9b331255ef5ea34f490ad6bcf5df889c633ba7ce"},
      {"2u71wu5sbv", "ec978d077cb211244c93afaea791902b41ae4440"},
      {"9rv28ai6c6", "67eb1b082babae7f29713dab13907903f20848bb"},
  };
  char hex[41], out[128], want[128];
  size_t i;

  for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
    CHECK_INT(xcm_cm_handshake_digest(hex, v[i].id, "cmsecret"), 0);
    CHECK_STR(hex, v[i].hex);
    strcpy(want, "<handshake>");
    strcat(want, v[i].hex);
    strcat(want, "</handshake>");
    CHECK_INT(xcm_cm_handshake(out, sizeof(out), v[i].id, "cmsecret"), 63);
    CHECK_STR(out, want);
  }
  /* SHA-1("") and SHA-1("abc"): the split between id and secret does not
   * matter, only the concatenation. */
  CHECK_INT(xcm_cm_handshake_digest(hex, "", ""), 0);
  CHECK_STR(hex, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
  CHECK_INT(xcm_cm_handshake_digest(hex, "a", "bc"), 0);
  CHECK_STR(hex, "a9993e364706816aba3e25717850c26c9cd0d89d");
  CHECK_INT(xcm_cm_handshake_digest(hex, NULL, "x"), XCM_EINVAL);
}

/* Every handshake in every capture: the stream id comes from the server's
 * header on that connection; an accepted handshake must equal ours (the
 * server compares case-insensitively, ours is lowercase), a refused one
 * must not. */
static void test_digest_all_captures(void) {
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
  size_t f, i, j, accepted = 0, refused = 0;

  for (f = 0; f < sizeof(names) / sizeof(names[0]); f++) {
    xcm_transcript t;

    if (!CHECK(xcm_transcript_load_named(names[f], &t) == 0)) {
      xcm_test_note("%s", t.error);
      continue;
    }
    for (i = 0; i < t.nchunks; i++) {
      const xcm_transcript_chunk *c = &t.chunks[i];
      char id[64] = "", sent[41], hex[41];
      const char *p, *q;

      if (!c->is_send || c->len != 63 ||
          memcmp(c->bytes, "<handshake>", 11) != 0)
        continue;
      /* The stream id: the latest header received on this connection. */
      for (j = i; j-- > 0;) {
        const xcm_transcript_chunk *h = &t.chunks[j];
        if (h->is_send || strcmp(h->conn, c->conn) != 0 ||
            (p = strstr(h->bytes, "<stream:stream ")) == NULL ||
            (p = strstr(p, " id=\"")) == NULL)
          continue;
        p += 5;
        q = strchr(p, '"');
        if (q != NULL && (size_t)(q - p) < sizeof(id)) {
          memcpy(id, p, (size_t)(q - p));
          id[q - p] = '\0';
        }
        break;
      }
      if (!CHECK(id[0] != '\0'))
        continue;
      for (j = 0; j < 40; j++)
        sent[j] = (char)((c->bytes[11 + j] >= 'A' && c->bytes[11 + j] <= 'F')
                             ? c->bytes[11 + j] - 'A' + 'a'
                             : c->bytes[11 + j]);
      sent[40] = '\0';
      CHECK_INT(xcm_cm_handshake_digest(hex, id, "cmsecret"), 0);
      /* The server's verdict is the next chunk it sends on this
       * connection. */
      for (j = i + 1; j < t.nchunks; j++)
        if (!t.chunks[j].is_send && strcmp(t.chunks[j].conn, c->conn) == 0)
          break;
      if (j < t.nchunks &&
          strcmp(t.chunks[j].bytes, "<handshake></handshake>") == 0) {
        CHECK_STR(hex, sent);
        accepted++;
      } else {
        CHECK(strcmp(hex, sent) != 0);
        refused++;
      }
    }
    xcm_transcript_free(&t);
  }
  xcm_test_note("%zu accepted and %zu refused handshakes checked", accepted,
                refused);
  CHECK(accepted >= 13);
  CHECK_INT(refused, 1);
}

static void test_iq_result(void) {
  static const char want[] =
      "<iq type=\"result\" id=\"922-123\" from=\"cm1/worker-1\" "
      "to=\"example.test\"/>";
  char out[256];

  CHECK(sent_in_capture("transcript-cm.txt", want));
  CHECK_INT(xcm_cm_iq_result(out, sizeof(out), "cm1/worker-1", "example.test",
                             "922-123"),
            strlen(want));
  CHECK_STR(out, want);
  CHECK_INT(
      xcm_cm_iq_result(out, sizeof(out), "cm1/worker-1", "example.test", ""),
      XCM_EINVAL);
  CHECK_STR(out, "");
}

static void test_session_create(void) {
  static const char want[] =
      "<iq type=\"set\" id=\"s1\" to=\"example.test\" from=\"cm1/worker-1\">"
      "<session xmlns=\"" NS_CMP "\" id=\"abc123\"><create><host "
      "name=\"localhost\" address=\"127.0.0.1\"/></create></session></iq>";
  static const char want_bare[] =
      "<iq type=\"set\" id=\"g2\" to=\"example.test\" from=\"cm1/worker-1\">"
      "<session xmlns=\"" NS_CMP "\" id=\"x\"><create/></session></iq>";
  static const char want_b1[] =
      "<iq type=\"set\" id=\"create-b1\" to=\"example.test\" "
      "from=\"cm1/worker-1\"><session xmlns=\"" NS_CMP "\" id=\"b1\"><create>"
      "<host name=\"localhost\" address=\"127.0.0.1\"/></create></session>"
      "</iq>";
  char out[512];

  CHECK(sent_in_capture("transcript-cm.txt", want));
  CHECK_INT(xcm_cm_session_create(out, sizeof(out), "cm1/worker-1",
                                  "example.test", "s1", "abc123", "localhost",
                                  "127.0.0.1"),
            strlen(want));
  CHECK_STR(out, want);

  CHECK(sent_in_capture("transcript-probe-g-handshake.txt", want_bare));
  CHECK_INT(xcm_cm_session_create(out, sizeof(out), "cm1/worker-1",
                                  "example.test", "g2", "x", NULL, NULL),
            strlen(want_bare));
  CHECK_STR(out, want_bare);

  CHECK(sent_in_capture("transcript-probe-b-cm-tcp-close.txt", want_b1));
  CHECK_INT(xcm_cm_session_create(out, sizeof(out), "cm1/worker-1",
                                  "example.test", "create-b1", "b1",
                                  "localhost", "127.0.0.1"),
            strlen(want_b1));
  CHECK_STR(out, want_b1);

  /* Either half of the host alone. */
  CHECK(xcm_cm_session_create(out, sizeof(out), "cm1/w", "d", "i", "s", NULL,
                              "::1") > 0);
  CHECK(strstr(out, "<create><host address=\"::1\"/></create>") != NULL);
  CHECK(xcm_cm_session_create(out, sizeof(out), "cm1/w", "d", "i", "s", "h",
                              NULL) > 0);
  CHECK(strstr(out, "<create><host name=\"h\"/></create>") != NULL);

  CHECK_INT(xcm_cm_session_create(out, sizeof(out), "cm1/w", "d", "i", "", NULL,
                                  NULL),
            XCM_EINVAL);
  CHECK_INT(
      xcm_cm_session_create(out, sizeof(out), NULL, "d", "i", "s", NULL, NULL),
      XCM_EINVAL);
  CHECK_INT(xcm_cm_session_create(out, sizeof(out), "cm1/w", NULL, "i", "s",
                                  NULL, NULL),
            XCM_EINVAL);
}

static void test_session_close(void) {
  static const char want[] =
      "<iq type=\"set\" id=\"c1\" to=\"example.test\" from=\"cm1/worker-1\">"
      "<session xmlns=\"" NS_CMP "\" id=\"abc123\"><close/></session></iq>";
  static const char want_a[] =
      "<iq type=\"set\" id=\"cl-dupA\" to=\"example.test\" "
      "from=\"cm1/worker-1\"><session xmlns=\"" NS_CMP
      "\" id=\"dupA\"><close/></session></iq>";
  char out[512];

  CHECK(sent_in_capture("transcript-cm.txt", want));
  CHECK_INT(xcm_cm_session_close(out, sizeof(out), "cm1/worker-1",
                                 "example.test", "c1", "abc123"),
            strlen(want));
  CHECK_STR(out, want);
  CHECK(sent_in_capture("transcript-probe-a-dup-names.txt", want_a));
  CHECK_INT(xcm_cm_session_close(out, sizeof(out), "cm1/worker-1",
                                 "example.test", "cl-dupA", "dupA"),
            strlen(want_a));
  CHECK_STR(out, want_a);
}

static void test_session_failed(void) {
  static const char msg1[] = "<message to=\"carol@example.test\" "
                             "from=\"bob@example.test/x\"><body>x</body>"
                             "</message>";
  static const char want1[] =
      "<iq type=\"set\" id=\"f1\" to=\"example.test\" from=\"cm1/worker-1\">"
      "<session xmlns=\"" NS_CMP "\" id=\"d1\"><failed><message "
      "to=\"carol@example.test\" from=\"bob@example.test/x\"><body>x</body>"
      "</message></failed></session></iq>";
  static const char msg2[] =
      "<message xmlns=\"jabber:client\" to=\"carol@example.test\" "
      "from=\"alice@example.test/cmd2\" type=\"chat\" id=\"lost2\">"
      "<body>x2</body></message>";
  static const char want2[] =
      "<iq type=\"set\" id=\"f2\" to=\"example.test\" from=\"cm1/worker-1\">"
      "<session xmlns=\"" NS_CMP "\" id=\"d2\"><failed><message "
      "xmlns=\"jabber:client\" to=\"carol@example.test\" "
      "from=\"alice@example.test/cmd2\" type=\"chat\" id=\"lost2\">"
      "<body>x2</body></message></failed></session></iq>";
  char out[512];

  CHECK(sent_in_capture("transcript-probe-d-failed.txt", want1));
  CHECK_INT(xcm_cm_session_failed(out, sizeof(out), "cm1/worker-1",
                                  "example.test", "f1", "d1", msg1,
                                  strlen(msg1)),
            strlen(want1));
  CHECK_STR(out, want1);
  CHECK(sent_in_capture("transcript-probe-d2-failed-offline.txt", want2));
  CHECK_INT(xcm_cm_session_failed(out, sizeof(out), "cm1/worker-1",
                                  "example.test", "f2", "d2", msg2,
                                  strlen(msg2)),
            strlen(want2));
  CHECK_STR(out, want2);
  /* The length is the caller's: bytes after it are not part of it. */
  CHECK_INT(xcm_cm_session_failed(out, sizeof(out), "cm1/worker-1",
                                  "example.test", "f2", "d2",
                                  "<message/>trailing", 10),
            strstr(want2, "<message") - want2 + 10 +
                strlen("</failed></session></iq>"));
  CHECK(strstr(out, "<failed><message/></failed>") != NULL);
  CHECK_INT(
      xcm_cm_session_failed(out, sizeof(out), "c/r", "d", "i", "s", "", 0),
      XCM_EINVAL);
  CHECK_INT(
      xcm_cm_session_failed(out, sizeof(out), "c/r", "d", "i", "s", "text", 4),
      XCM_EINVAL);
  CHECK_INT(
      xcm_cm_session_failed(out, sizeof(out), "c/r", "d", "i", "s", NULL, 0),
      XCM_EINVAL);
}

static void test_session_not_found(void) {
  /* Openfire's own answer to an unknown close, from probe-e, for shape:
   * <iq type="error" id="e4" from="example.test" to="cm1/worker-1">
   * <session ... id="nosuch"><close/></session><error code="404"
   * type="cancel"><item-not-found .../></error></iq> */
  static const char want[] =
      "<iq type=\"error\" id=\"569-151\" from=\"cm1/worker-1\" "
      "to=\"example.test\"><session xmlns=\"" NS_CMP "\" id=\"c1\"/>"
      "<error code=\"404\" type=\"cancel\"><item-not-found "
      "xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/></error></iq>";
  char out[512];
  parsed p;

  CHECK_INT(xcm_cm_session_not_found(out, sizeof(out), "cm1/worker-1",
                                     "example.test", "569-151", "c1"),
            strlen(want));
  CHECK_STR(out, want);
  parse(&p, out, strlen(out));
  CHECK(p.ok);
  CHECK_INT(p.elements, 4);
  xcm__buf_free(&p.log);
}

static void test_iq_bounce(void) {
  /* The iq version get bob sent to alice in transcript-cm.txt. */
  static const char want[] =
      "<iq xmlns=\"jabber:client\" type=\"error\" "
      "id=\"deb2c27d1cac4d78b0887de82acd776e\" from=\"alice@example.test/cm\" "
      "to=\"bob@example.test/cmtest-bob\"><error type=\"wait\">"
      "<unexpected-request xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/>"
      "</error></iq>";
  char out[512];

  CHECK_INT(
      xcm_cm_iq_bounce(out, sizeof(out), "deb2c27d1cac4d78b0887de82acd776e",
                       "bob@example.test/cmtest-bob", "alice@example.test/cm"),
      strlen(want));
  CHECK_STR(out, want);
  /* A server-originated iq may lack from: the answer then lacks to. */
  CHECK(xcm_cm_iq_bounce(out, sizeof(out), "r1", NULL,
                         "alice@example.test/cm") > 0);
  CHECK_STR(out, "<iq xmlns=\"jabber:client\" type=\"error\" id=\"r1\" "
                 "from=\"alice@example.test/cm\"><error type=\"wait\">"
                 "<unexpected-request "
                 "xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/></error>"
                 "</iq>");
  CHECK(xcm_cm_iq_bounce(out, sizeof(out), NULL, NULL, NULL) > 0);
  CHECK(strncmp(out, "<iq xmlns=\"jabber:client\" type=\"error\"><error", 45) ==
        0);
}

static void test_client_stream_open(void) {
  char out[512];

  CHECK(xcm_client_stream_open(out, sizeof(out), "example.test", "abc123", "en",
                               1) > 0);
  CHECK_STR(out, "<?xml version='1.0'?><stream:stream "
                 "xmlns:stream=\"http://etherx.jabber.org/streams\" "
                 "xmlns=\"jabber:client\" from=\"example.test\" "
                 "id=\"abc123\" version=\"1.0\" xml:lang=\"en\">");
  CHECK(xcm_client_stream_open(out, sizeof(out), "example.test", "abc123",
                               "de-CH", 0) > 0);
  CHECK_STR(out, "<?xml version='1.0'?><stream:stream "
                 "xmlns:stream=\"http://etherx.jabber.org/streams\" "
                 "xmlns=\"jabber:client\" from=\"example.test\" "
                 "id=\"abc123\" xml:lang=\"de-CH\">");
  CHECK(xcm_client_stream_open(out, sizeof(out), "example.test", "abc123", NULL,
                               1) > 0);
  CHECK_STR(out, "<?xml version='1.0'?><stream:stream "
                 "xmlns:stream=\"http://etherx.jabber.org/streams\" "
                 "xmlns=\"jabber:client\" from=\"example.test\" "
                 "id=\"abc123\" version=\"1.0\">");
  CHECK_INT(
      xcm_client_stream_open(out, sizeof(out), "example.test", "", "en", 1),
      XCM_EINVAL);
  CHECK_INT(xcm_client_stream_open(out, sizeof(out), NULL, "s", "en", 1),
            XCM_EINVAL);
}

/* What Openfire's own client port offered carol, after the header. */
static const char *features_of(const xcm_transcript *t, size_t nth) {
  size_t i;
  const char *p;

  for (i = 0; i < t->nchunks; i++)
    if (!t->chunks[i].is_send && strcmp(t->chunks[i].conn, "CAROL") == 0 &&
        (p = strstr(t->chunks[i].bytes, "<stream:features>")) != NULL &&
        nth-- == 0)
      return p;
  return NULL;
}

static void test_features_vs_capture(void) {
  xcm_transcript t;
  xcm_features f;
  const char *cap;
  char out[1024], want[1024], *sm;

  REQUIRE(xcm_transcript_load_named("transcript-probe-d2-failed-offline.txt",
                                    &t) == 0);
  memset(&f, 0, sizeof(f));
  f.flags =
      XCM_FEATURE_STARTTLS | XCM_FEATURE_COMPRESSION | XCM_FEATURE_IQ_REGISTER;
  f.mechanisms[0] = "PLAIN";
  f.mechanisms[1] = "ANONYMOUS";
  f.mechanisms[2] = "SCRAM-SHA-1";
  f.mechanisms[3] = "DIGEST-MD5";
  f.nmechanisms = 4;
  cap = features_of(&t, 0);
  REQUIRE(cap != NULL);
  CHECK_INT(xcm_client_features(out, sizeof(out), &f), strlen(cap));
  CHECK_STR(out, cap);

  /* After authentication Openfire also offers stream management, which
   * the CM does not (yet): compare without it. */
  cap = features_of(&t, 1);
  REQUIRE(cap != NULL && strlen(cap) < sizeof(want));
  strcpy(want, cap);
  sm = strstr(want, "<sm xmlns='urn:xmpp:sm:2'/><sm xmlns='urn:xmpp:sm:3'/>");
  REQUIRE(sm != NULL);
  memmove(sm, sm + 54, strlen(sm + 54) + 1);
  memset(&f, 0, sizeof(f));
  f.flags = XCM_FEATURE_COMPRESSION | XCM_FEATURE_BIND | XCM_FEATURE_SESSION;
  CHECK_INT(xcm_client_features(out, sizeof(out), &f), strlen(want));
  CHECK_STR(out, want);
  xcm_transcript_free(&t);
}

static void test_features_other(void) {
  xcm_features f;
  char out[1024];

  memset(&f, 0, sizeof(f));
  CHECK(xcm_client_features(out, sizeof(out), &f) > 0);
  CHECK_STR(out, "<stream:features></stream:features>");

  f.flags = XCM_FEATURE_STARTTLS | XCM_FEATURE_STARTTLS_REQUIRED;
  CHECK(xcm_client_features(out, sizeof(out), &f) > 0);
  CHECK_STR(out, "<stream:features><starttls "
                 "xmlns=\"urn:ietf:params:xml:ns:xmpp-tls\"><required/>"
                 "</starttls></stream:features>");
  /* REQUIRED alone implies STARTTLS. */
  f.flags = XCM_FEATURE_STARTTLS_REQUIRED;
  CHECK(xcm_client_features(out, sizeof(out), &f) > 0);
  CHECK(strstr(out, "<required/>") != NULL);

  f.flags = XCM_FEATURE_IQ_AUTH;
  f.mechanisms[0] = "X<&>";
  f.nmechanisms = 1;
  CHECK(xcm_client_features(out, sizeof(out), &f) > 0);
  CHECK_STR(out, "<stream:features><mechanisms "
                 "xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"><mechanism>"
                 "X&lt;&amp;&gt;</mechanism></mechanisms><auth "
                 "xmlns=\"http://jabber.org/features/iq-auth\"/>"
                 "</stream:features>");
  f.mechanisms[0] = NULL;
  CHECK_INT(xcm_client_features(out, sizeof(out), &f), XCM_EINVAL);
  f.mechanisms[0] = "";
  CHECK_INT(xcm_client_features(out, sizeof(out), &f), XCM_EINVAL);
  f.nmechanisms = XCM_POLICY_MAX_MECHANISMS + 1;
  CHECK_INT(xcm_client_features(out, sizeof(out), &f), XCM_EINVAL);
  CHECK_INT(xcm_client_features(out, sizeof(out), NULL), XCM_EINVAL);
}

static void test_features_from_policy(void) {
  xcm_policy p;
  xcm_features f;

  memset(&p, 0, sizeof(p));
  p.tls = XCM_TLS_OPTIONAL;
  strcpy(p.mechanisms[0], "PLAIN");
  strcpy(p.mechanisms[1], "SCRAM-SHA-1");
  p.nmechanisms = 2;
  p.compression_zlib = 1;
  p.registration = 1;
  p.legacy_auth = 1;

  xcm_features_from_policy(&f, &p, 0);
  CHECK_INT(f.flags, XCM_FEATURE_STARTTLS | XCM_FEATURE_IQ_AUTH |
                         XCM_FEATURE_IQ_REGISTER);
  CHECK_INT(f.nmechanisms, 2);
  CHECK(f.mechanisms[0] == p.mechanisms[0]);
  CHECK_STR(f.mechanisms[1], "SCRAM-SHA-1");

  xcm_features_from_policy(&f, &p, XCM_STREAM_SECURED);
  CHECK_INT(f.flags, XCM_FEATURE_IQ_AUTH | XCM_FEATURE_IQ_REGISTER);
  CHECK_INT(f.nmechanisms, 2);

  xcm_features_from_policy(&f, &p,
                           XCM_STREAM_SECURED | XCM_STREAM_AUTHENTICATED);
  CHECK_INT(f.flags,
            XCM_FEATURE_BIND | XCM_FEATURE_SESSION | XCM_FEATURE_COMPRESSION);
  CHECK_INT(f.nmechanisms, 0);
  xcm_features_from_policy(&f, &p,
                           XCM_STREAM_AUTHENTICATED | XCM_STREAM_COMPRESSED);
  CHECK_INT(f.flags, XCM_FEATURE_BIND | XCM_FEATURE_SESSION);

  p.tls = XCM_TLS_REQUIRED;
  xcm_features_from_policy(&f, &p, 0);
  CHECK_INT(f.flags, XCM_FEATURE_STARTTLS | XCM_FEATURE_STARTTLS_REQUIRED);
  CHECK_INT(f.nmechanisms, 0);
  xcm_features_from_policy(&f, &p, XCM_STREAM_SECURED);
  CHECK_INT(f.flags, XCM_FEATURE_IQ_AUTH | XCM_FEATURE_IQ_REGISTER);
  CHECK_INT(f.nmechanisms, 2);

  p.tls = XCM_TLS_OFF;
  p.legacy_auth = p.registration = 0;
  xcm_features_from_policy(&f, &p, 0);
  CHECK_INT(f.flags, 0);
  CHECK_INT(f.nmechanisms, 2);
}

static void test_stream_error(void) {
  char out[512];

  CHECK(xcm_stream_error(out, sizeof(out), XCM_COND_CONFLICT, NULL) > 0);
  CHECK_STR(out, "<stream:error><conflict "
                 "xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/>"
                 "</stream:error>");
  CHECK(xcm_stream_error(out, sizeof(out), XCM_COND_POLICY_VIOLATION,
                         "a <b> & c") > 0);
  CHECK_STR(out, "<stream:error><policy-violation "
                 "xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/><text "
                 "xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\">a &lt;b&gt; "
                 "&amp; c</text></stream:error>");
  CHECK_INT(xcm_stream_error(out, sizeof(out), XCM_COND_NONE, NULL),
            XCM_EINVAL);
  CHECK_INT(xcm_stream_error(out, sizeof(out), XCM_COND_COUNT_, NULL),
            XCM_EINVAL);
  CHECK_INT(xcm_stream_error(out, sizeof(out), (xcm_cond)-1, NULL), XCM_EINVAL);
  CHECK_INT(xcm_stream_close(out, sizeof(out)), 16);
  CHECK_STR(out, "</stream:stream>");
  CHECK(sent_in_capture("transcript-cm.txt", out));
}

/* Hostile strings ------------------------------------------------------- */

static void test_hostile_upstream(void) {
  xcm_buf b;
  parsed p;
  size_t i;

  xcm__buf_init(&b, NULL);
  for (i = 0; i < NHOSTILE; i++) {
    const char *h = hostile[i];
    unsigned before = xcm_test_failures();

    xcm__buf_reset(&b);
    REQUIRE(xcm__cm_stream_open(&b, h) == 0);
    REQUIRE(xcm__buf_append_str(&b, "</stream:stream>") == 0);
    parse(&p, b.data, b.len);
    CHECK(p.ok);
    CHECK_INT(p.elements, 1);
    CHECK(logged(&p, "stream:stream", "to", h));
    xcm__buf_free(&p.log);

    xcm__buf_reset(&b);
    REQUIRE(xcm__cm_session_create(&b, h, h, h, h, h, h) == 0);
    parse(&p, b.data, b.len);
    CHECK(p.ok);
    CHECK_INT(p.elements, 4);
    CHECK(logged(&p, "iq", "id", h));
    CHECK(logged(&p, "iq", "to", h));
    CHECK(logged(&p, "iq", "from", h));
    CHECK(logged(&p, "session", "id", h));
    CHECK(logged(&p, "host", "name", h));
    CHECK(logged(&p, "host", "address", h));
    xcm__buf_free(&p.log);

    xcm__buf_reset(&b);
    REQUIRE(xcm__cm_session_close(&b, h, h, h, h) == 0);
    REQUIRE(xcm__cm_session_failed(&b, h, h, h, h, "<message/>", 10) == 0);
    REQUIRE(xcm__cm_session_not_found(&b, h, h, h, h) == 0);
    REQUIRE(xcm__cm_iq_result(&b, h, h, h) == 0);
    REQUIRE(xcm__cm_iq_bounce(&b, h, h, h) == 0);
    /* One document needs one root. */
    REQUIRE(xcm__buf_append_str(&b, "</r>") == 0);
    {
      xcm_buf doc;

      xcm__buf_init(&doc, NULL);
      xcm__buf_append_str(&doc, "<r>");
      xcm__buf_append(&doc, b.data, b.len);
      parse(&p, doc.data, doc.len);
      CHECK(p.ok);
      /* r; iq session close; iq session failed message; iq session
       * error item-not-found; iq; iq error unexpected-request. */
      CHECK_INT(p.elements, 1 + 3 + 4 + 4 + 1 + 3);
      CHECK(logged(&p, "session", "id", h));
      CHECK(logged(&p, "iq", "id", h));
      xcm__buf_free(&p.log);
      xcm__buf_free(&doc);
    }
    xcm_test_tried("markup-injection", before);
  }
  xcm__buf_free(&b);
}

static void test_hostile_client(void) {
  xcm_buf b;
  parsed p;
  size_t i;

  xcm__buf_init(&b, NULL);
  for (i = 0; i < NHOSTILE; i++) {
    const char *h = hostile[i];
    unsigned before = xcm_test_failures();
    xcm_features f;

    memset(&f, 0, sizeof(f));
    f.mechanisms[0] = h;
    f.nmechanisms = 1;
    xcm__buf_reset(&b);
    REQUIRE(xcm__client_stream_open(&b, h, h, h, 1) == 0);
    REQUIRE(xcm__client_features(&b, &f) == 0);
    REQUIRE(xcm__stream_error(&b, XCM_COND_BAD_FORMAT, h) == 0);
    REQUIRE(xcm__stream_close_tag(&b) == 0);
    parse(&p, b.data, b.len);
    CHECK(p.ok);
    /* stream; features mechanisms mechanism; error cond text */
    CHECK_INT(p.elements, 1 + 3 + 3);
    CHECK(logged(&p, "stream:stream", "id", h));
    CHECK(logged(&p, "stream:stream", "from", h));
    CHECK(logged(&p, "stream:stream", "xml:lang", h));
    xcm__buf_free(&p.log);
    xcm_test_tried("markup-injection", before);
  }
  xcm__buf_free(&b);
}

static void test_unwritable_input(void) {
  char out[256];
  unsigned before = xcm_test_failures();

  strcpy(out, "junk");
  CHECK_INT(xcm_cm_session_close(out, sizeof(out), "cm1/w", "d", "i", "s\x01"),
            XCM_EINVAL);
  CHECK_STR(out, "");
  xcm_test_tried("markup-injection", before);
  before = xcm_test_failures();
  CHECK_INT(xcm_client_stream_open(out, sizeof(out), "d", "s", "\xc0\xbc", 1),
            XCM_EINVAL);
  xcm_test_tried("markup-injection", before);
  before = xcm_test_failures();
  CHECK_INT(xcm_stream_error(out, sizeof(out), XCM_COND_RESET, "\xff"),
            XCM_EINVAL);
  xcm_test_tried("markup-injection", before);
}

/* Contracts ------------------------------------------------------------- */

static void test_snprintf_contract(void) {
  static const char want[] =
      "<iq type=\"result\" id=\"922-123\" from=\"cm1/worker-1\" "
      "to=\"example.test\"/>";
  size_t n = strlen(want);
  char out[256];
  int big_len;
  char *big;

  /* Measuring only. */
  CHECK_INT(
      xcm_cm_iq_result(NULL, 0, "cm1/worker-1", "example.test", "922-123"), n);
  /* Too small by one: nothing but "". */
  memset(out, 'x', sizeof(out));
  CHECK_INT(xcm_cm_iq_result(out, n, "cm1/worker-1", "example.test", "922-123"),
            n);
  CHECK_STR(out, "");
  CHECK_INT(xcm_cm_iq_result(out, 1, "cm1/worker-1", "example.test", "922-123"),
            n);
  CHECK_STR(out, "");
  /* Exactly enough. */
  memset(out, 'x', sizeof(out));
  CHECK_INT(
      xcm_cm_iq_result(out, n + 1, "cm1/worker-1", "example.test", "922-123"),
      n);
  CHECK_STR(out, want);
  CHECK(out[n + 1] == 'x');

  /* Output longer than the 256 bytes an xcm_buf starts with, into a
   * buffer that fits it without a byte to spare. */
  big = malloc(4000);
  REQUIRE(big != NULL);
  memset(big, '&', 999);
  big[999] = '\0';
  big_len = xcm_stream_error(NULL, 0, XCM_COND_RESET, big);
  CHECK(big_len > 5000);
  free(big);
  big = malloc(1000);
  REQUIRE(big != NULL);
  memset(big, 'a', 599);
  big[599] = '\0';
  big_len = xcm_stream_error(NULL, 0, XCM_COND_RESET, big);
  CHECK(big_len > 600);
  {
    char *dst = malloc((size_t)big_len + 1);

    REQUIRE(dst != NULL);
    CHECK_INT(xcm_stream_error(dst, (size_t)big_len + 1, XCM_COND_RESET, big),
              big_len);
    CHECK_INT(strlen(dst), big_len);
    CHECK_INT(xcm_stream_error(dst, (size_t)big_len, XCM_COND_RESET, big),
              big_len);
    CHECK_STR(dst, "");
    free(dst);
  }
  free(big);
}

static void test_internal_append_and_undo(void) {
  xcm_buf b;

  xcm__buf_init(&b, NULL);
  REQUIRE(xcm__cm_stream_open(&b, "cm1/worker-1") == 0);
  REQUIRE(xcm__cm_handshake(&b, "auzdi7yser", 10, "cmsecret", 8) == 0);
  {
    size_t len = b.len;
    char *copy = malloc(len);

    REQUIRE(copy != NULL);
    memcpy(copy, b.data, len);
    /* Fails late, after the envelope was already appended. */
    CHECK_INT(
        xcm__cm_session_create(&b, "cm1/w1", "d", "i", "s", "h", "bad\x02"),
        XCM_EINVAL);
    CHECK_MEM(b.data, b.len, copy, len);
    CHECK_INT(xcm__stream_error(&b, XCM_COND_NONE, NULL), XCM_EINVAL);
    CHECK_MEM(b.data, b.len, copy, len);
    free(copy);
  }
  CHECK(b.len > 128 && memcmp(b.data + 128,
                              "<handshake>48a8507412937508f3ca63365c2a9a5aa807"
                              "bd4d</handshake>",
                              63) == 0);
  xcm__buf_free(&b);
}

static const xcm_test tests[] = {
    {"stream_open", test_stream_open},
    {"digest_known", test_digest_known},
    {"digest_all_captures", test_digest_all_captures},
    {"iq_result", test_iq_result},
    {"session_create", test_session_create},
    {"session_close", test_session_close},
    {"session_failed", test_session_failed},
    {"session_not_found", test_session_not_found},
    {"iq_bounce", test_iq_bounce},
    {"client_stream_open", test_client_stream_open},
    {"features_vs_capture", test_features_vs_capture},
    {"features_other", test_features_other},
    {"features_from_policy", test_features_from_policy},
    {"stream_error", test_stream_error},
    {"hostile_upstream", test_hostile_upstream},
    {"hostile_client", test_hostile_client},
    {"unwritable_input", test_unwritable_input},
    {"snprintf_contract", test_snprintf_contract},
    {"internal_append_and_undo", test_internal_append_and_undo},
};

int main(int argc, char **argv) {
  return xcm_test_main(argc, argv, XCM_TESTS(tests));
}
