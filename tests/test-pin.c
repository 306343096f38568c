/* First contact with a stock Openfire: its CM port offers STARTTLS with a
 * self-signed certificate. Over loopback against the testkit with such a
 * certificate: the refusal is reported once per certificate with its
 * fingerprint and the ways out, a pin (upstream_fingerprint) lets the
 * links up and a client log in, a wrong pin is refused naming both
 * fingerprints, and a malformed pin is refused by xcm_cm_new. Every
 * fingerprint a test expects is computed here, from the PEM file. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include <mbedtls/sha256.h>
#include <mbedtls/x509_crt.h>

#include "harness.h"
#include "rawclient.h"
#include "transport/stream.h"
#include "world.h"
#include "xcm/testkit.h"
#include "xcm/xcm.h"

/* ---- fingerprints, computed independently of the library ------------- */

typedef struct fp {
  char colons_upper[7 + 32 * 3]; /* sha256:AB:CD:... */
  char plain_lower[7 + 64 + 1];  /* sha256:abcd... */
  char mixed[7 + 32 * 3];        /* Sha256:aB:Cd:... with colons */
} fp;

static void fingerprint_of(const char *pem, fp *out) {
  mbedtls_x509_crt crt;
  unsigned char sha[32];
  size_t i;

  mbedtls_x509_crt_init(&crt);
  REQUIRE(mbedtls_x509_crt_parse_file(&crt, xcm_test_cert(pem)) == 0);
  REQUIRE(mbedtls_sha256_ret(crt.raw.p, crt.raw.len, sha, 0) == 0);
  mbedtls_x509_crt_free(&crt);
  strcpy(out->colons_upper, "sha256:");
  strcpy(out->plain_lower, "sha256:");
  strcpy(out->mixed, "Sha256:");
  for (i = 0; i < 32; i++) {
    char up[4], lo[3], mix[4];

    snprintf(up, sizeof up, "%s%02X", i ? ":" : "", sha[i]);
    snprintf(lo, sizeof lo, "%02x", sha[i]);
    /* The high digit in lower case, the low one in upper case. */
    snprintf(mix, sizeof mix, "%s%c%c", i ? ":" : "", lo[0], up[i ? 2 : 1]);
    strcat(out->colons_upper, up);
    strcat(out->plain_lower, lo);
    strcat(out->mixed, mix);
  }
}

/* ---- a CM in front of a testkit with a certificate on its CM port ---- */

#define MAX_LINES 256

typedef struct bench {
  uv_loop_t loop;
  xcm_testkit *kit;
  xcm_cm *cm;
  int port;
  int down;     /* shutdown callbacks */
  unsigned ups; /* link events */
  unsigned downs;
  char *lines[MAX_LINES]; /* log lines down to INFO, "E ", "W " or "I " */
  unsigned nlines;
} bench;

static void on_log(void *ud, int level, const char *msg) {
  bench *b = ud;

  if (level > XCM_LOG_INFO)
    return;
  /* Lines past the record's end would go uncounted: a failure, not a
   * silent stop. */
  REQUIRE(b->nlines < MAX_LINES);
  b->lines[b->nlines] = malloc(strlen(msg) + 8);
  REQUIRE(b->lines[b->nlines] != NULL);
  sprintf(b->lines[b->nlines++], "%s %s",
          level == XCM_LOG_ERROR  ? "E"
          : level == XCM_LOG_WARN ? "W"
                                  : "I",
          msg);
}

static void on_link(void *ud, unsigned i, const char *resource, int up,
                    const char *why, const xcm_policy *policy) {
  bench *b = ud;

  (void)i;
  (void)why;
  if (policy != NULL || resource == NULL)
    return;
  if (up)
    b->ups++;
  else
    b->downs++;
}

static void kit_start(bench *b, const char *cert, int port) {
  xcm_testkit_options ko;
  char err[256], key[64];

  xcm_testkit_options_init(&ko, sizeof ko);
  ko.seed = 15;
  ko.port = port;
  ko.link_tls = XCM_TESTKIT_LINK_TLS_OFFER;
  snprintf(key, sizeof key, "%.*s-key.pem", (int)(strlen(cert) - 4), cert);
  ko.cert_file = xcm_test_cert(cert);
  ko.key_file = xcm_test_cert(key);
  if (xcm_testkit_new(&b->kit, &b->loop, &ko, err, sizeof err) != 0)
    xcm_test_note("testkit: %s", err);
  REQUIRE(b->kit != NULL);
  xcm_testkit_add_account(b->kit, "alice", "alice");
  b->port = xcm_testkit_port(b->kit);
}

/* The options every test starts from: upstream TLS as a fresh xcmd
 * has it (optional, verified), to 127.0.0.1, which none of the test
 * certificates names. */
static void base_options(bench *b, xcm_options *o) {
  xcm_options_init(o, sizeof *o);
  o->domain = "example.test";
  o->server_host = "127.0.0.1";
  o->server_port = b->port;
  o->name = "cm1";
  o->secret = "cmsecret";
  o->connections = 2;
  o->upstream_tls = XCM_UPSTREAM_TLS_OPTIONAL;
  o->log = on_log;
  o->log_ud = b;
  o->log_level = XCM_LOG_INFO;
}

static void bench_start(bench *b, const char *cert, const char *pin) {
  xcm_options o;
  xcm_listen_options lo;
  char err[512];

  memset(b, 0, sizeof(*b));
  REQUIRE(uv_loop_init(&b->loop) == 0);
  kit_start(b, cert, 0);
  base_options(b, &o);
  o.upstream_fingerprint = pin;
  if (xcm_cm_new(&b->cm, &b->loop, &o, err, sizeof err) != 0)
    xcm_test_note("xcm_cm_new: %s", err);
  REQUIRE(b->cm != NULL);
  xcm_cm_set_link_events(b->cm, on_link, b);
  xcm_listen_options_init(&lo, sizeof lo);
  lo.host = "127.0.0.1";
  REQUIRE(xcm_cm_listen(b->cm, &lo, err, sizeof err) == 0);
  REQUIRE(xcm_cm_start(b->cm) == 0);
}

static void bench_stop(bench *b) {
  unsigned i;

  xcm_test_cm_shutdown(b->cm, 500, &b->down);
  xcm_test_world_end(&b->loop, b->cm, b->kit, &b->down);
  for (i = 0; i < b->nlines; i++)
    free(b->lines[i]);
}

/* Log lines holding every one of the NULL-terminated needles. */
/* A needle that starts with a level and a space ("E ", "W TLS ...") is
 * anchored at the start of the line, where on_log puts the level: a
 * fingerprint in the middle of a line can hold "E " too. */
static int line_has(const char *line, const char *needle) {
  if (strchr("EWI", needle[0]) != NULL && needle[0] != '\0' && needle[1] == ' ')
    return strncmp(line, needle, strlen(needle)) == 0;
  return strstr(line, needle) != NULL;
}

static unsigned count_lines(const bench *b, ...) {
  unsigned i, n = 0;

  for (i = 0; i < b->nlines; i++) {
    const char *needle;
    int all = 1;
    va_list ap;

    va_start(ap, b);
    while ((needle = va_arg(ap, const char *)) != NULL)
      if (!line_has(b->lines[i], needle))
        all = 0;
    va_end(ap);
    n += all;
  }
  return n;
}

static void print_lines(const bench *b) {
  unsigned i;

  for (i = 0; i < b->nlines; i++)
    xcm_test_note("log: %s", b->lines[i]);
}

typedef struct downs_wait {
  bench *b;
  unsigned n;
} downs_wait;

static int downs_reached(void *ud) {
  const downs_wait *w = ud;

  return w->b->downs >= w->n;
}

/* Wait for n more link failures: reconnect attempts of both links. */
static int wait_downs(bench *b, unsigned n) {
  downs_wait w = {b, b->downs + n};

  return xcm_test_run_until(&b->loop, downs_reached, &w, 20000);
}

static int every_link_up(void *ud) {
  bench *b = ud;
  xcm_stats st;

  xcm_cm_stats(b->cm, &st, sizeof st);
  return xcm_cm_policy(b->cm) != NULL && st.upstream_links_up == 2;
}

/* ---- tests ------------------------------------------------------------- */

/* (a) A fresh CM in front of Openfire's self-signed certificate: the
 * links fail, and the report says why in words, shows the fingerprint
 * and subject, and gives the config lines, once. */
static void test_self_signed_reported(void) {
  unsigned before = xcm_test_failures();
  char line[160];
  bench b;
  fp f;

  fingerprint_of("self.pem", &f);
  bench_start(&b, "self.pem", NULL);
  REQUIRE(wait_downs(&b, 4));
  CHECK_INT(b.ups, 0);
  CHECK_INT(count_lines(&b, "E ", "certificate verification failed",
                        "127.0.0.1", "self-signed", "name mismatch", NULL),
            1);
  CHECK_INT(count_lines(&b, "E ", f.colons_upper, NULL), 2);
  CHECK_INT(count_lines(&b, "E ", f.colons_upper, "subject \"CN=localhost\"",
                        "issuer \"CN=localhost\"", NULL),
            1);
  snprintf(line, sizeof line, "[upstream] fingerprint = %s", f.colons_upper);
  CHECK_INT(count_lines(&b, "E ", line, "keytool -list -v", NULL), 1);
  CHECK_INT(count_lines(&b, "E ", "[upstream] ca_file = /path/to/ca.pem", NULL),
            1);
  CHECK_INT(count_lines(&b, "E ", "[upstream] accept_self_signed = yes",
                        "not recommended", NULL),
            1);
  /* The library's own names too. */
  CHECK_INT(count_lines(&b, "E ", "xcm_options.upstream_fingerprint", NULL), 1);
  /* Each attempt's own warning points at the report, and no other
   * warning repeats the reasons. */
  CHECK(count_lines(&b, "W ",
                    "is down: TLS: the server's certificate was refused",
                    NULL) >= 4);
  CHECK_INT(count_lines(&b, "W TLS handshake", NULL), 0);
  /* The report as an operator reads it, in the test log. */
  print_lines(&b);
  xcm_test_tried("bad-certificates", before);
  bench_stop(&b);
}

static void kit_closed(void *ud, xcm_testkit *kit) {
  (void)kit;
  *(int *)ud = 1;
}

static int second_report(void *ud) {
  return count_lines(ud, "certificate verification failed", NULL) >= 2;
}

/* (e) Many attempts of both links, one report; a new certificate on the
 * same port is reported again, with its own fingerprint and reason. */
static void test_reported_once_per_certificate(void) {
  unsigned before = xcm_test_failures();
  int port, down = 0;
  bench b;
  fp self, other;

  fingerprint_of("self.pem", &self);
  fingerprint_of("other.pem", &other);
  bench_start(&b, "self.pem", NULL);
  REQUIRE(wait_downs(&b, 6)); /* three attempts of each link */
  CHECK_INT(count_lines(&b, "certificate verification failed", NULL), 1);
  CHECK_INT(count_lines(&b, "E ", self.colons_upper, NULL), 2);

  /* Openfire restarts with another certificate (by a CA the CM does not
   * know), on the same port. */
  port = b.port;
  xcm_testkit_close(b.kit, kit_closed, &down);
  while (!down)
    uv_run(&b.loop, UV_RUN_ONCE);
  CHECK(xcm_test_kit_clean(b.kit));
  xcm_testkit_free(b.kit);
  kit_start(&b, "other.pem", port);
  REQUIRE(xcm_test_run_until(&b.loop, second_report, &b, 20000));
  REQUIRE(wait_downs(&b, 2));
  CHECK_INT(count_lines(&b, "certificate verification failed", NULL), 2);
  CHECK_INT(
      count_lines(&b, "certificate verification failed", "unknown CA", NULL),
      1);
  CHECK_INT(count_lines(&b, "E ", other.colons_upper, NULL), 2);
  CHECK_INT(count_lines(&b, "E ", self.colons_upper, NULL), 2);
  if (xcm_test_failures() != before)
    print_lines(&b);
  bench_stop(&b);
}

static void login_over_pin(const char *spelling) {
  unsigned before = xcm_test_failures();
  bench b;
  xcm_raw a;
  fp f;

  fingerprint_of("self.pem", &f);
  bench_start(&b, "self.pem", spelling);
  REQUIRE(xcm_test_run_until(&b.loop, every_link_up, &b, 5000));
  CHECK(xcm_cm_upstream_links(b.cm) == 2);
  {
    xcm_link_info li;

    CHECK(xcm_cm_upstream_link(b.cm, 0, &li, sizeof li) == 0 && li.tls);
  }
  REQUIRE(
      xcm_raw_open(&a, &b.loop, "127.0.0.1", xcm_cm_listener_port(b.cm, 0), 1));
  CHECK(xcm_raw_login(&a, XCM_RAW_HDR, XCM_RAW_AUTH_ALICE, "pinned"));
  CHECK(xcm_raw_still_works(&a, 1));
  xcm_raw_free(&a);
  CHECK_INT(count_lines(&b, "E ", NULL), 0);
  CHECK_INT(count_lines(&b, "W ", NULL), 0);
  CHECK_INT(count_lines(&b, "I upstream: trusting only the server certificate",
                        f.colons_upper, NULL),
            1);
  CHECK_INT(b.downs, 0);
  if (xcm_test_failures() != before)
    print_lines(&b);
  bench_stop(&b);
}

/* (b) The right pin, in each spelling: the links come up over TLS (the
 * certificate is self-signed and names localhost, not 127.0.0.1) and a
 * client logs in through them. */
static void test_pin_colons_upper(void) {
  fp f;

  fingerprint_of("self.pem", &f);
  login_over_pin(f.colons_upper);
}

static void test_pin_plain_lower(void) {
  fp f;

  fingerprint_of("self.pem", &f);
  login_over_pin(f.plain_lower);
}

static void test_pin_mixed_case(void) {
  fp f;

  fingerprint_of("self.pem", &f);
  login_over_pin(f.mixed);
}

/* (c) A pin for another certificate: refused, naming both, once. */
static void test_wrong_pin(void) {
  unsigned before = xcm_test_failures();
  bench b;
  fp seen, pinned;

  fingerprint_of("self.pem", &seen);
  fingerprint_of("server.pem", &pinned);
  bench_start(&b, "self.pem", pinned.plain_lower);
  REQUIRE(wait_downs(&b, 4));
  CHECK_INT(b.ups, 0);
  CHECK_INT(count_lines(&b, "E ", "does not match the pinned fingerprint",
                        pinned.colons_upper, seen.colons_upper, NULL),
            1);
  CHECK_INT(count_lines(&b, "E ",
                        "[upstream] fingerprint = ", seen.colons_upper, NULL),
            1);
  if (xcm_test_failures() != before)
    print_lines(&b);
  xcm_test_tried("bad-certificates", before);
  {
    xcm_testkit_stats st;

    /* The secret never went out. */
    xcm_testkit_get_stats(b.kit, &st, sizeof st);
    CHECK_INT(st.handshakes + st.handshakes_failed, 0);
  }
  bench_stop(&b);
}

/* A pin does not accept a server that drops STARTTLS. */
static void test_pin_needs_tls(void) {
  xcm_testkit_options ko;
  xcm_options o;
  xcm_listen_options lo;
  xcm_testkit_stats st;
  char err[256];
  bench b;
  fp f;

  fingerprint_of("self.pem", &f);
  memset(&b, 0, sizeof b);
  REQUIRE(uv_loop_init(&b.loop) == 0);
  xcm_testkit_options_init(&ko, sizeof ko);
  ko.link_tls = XCM_TESTKIT_LINK_TLS_OFF;
  REQUIRE(xcm_testkit_new(&b.kit, &b.loop, &ko, err, sizeof err) == 0);
  b.port = xcm_testkit_port(b.kit);
  base_options(&b, &o);
  o.upstream_fingerprint = f.plain_lower;
  REQUIRE(xcm_cm_new(&b.cm, &b.loop, &o, err, sizeof err) == 0);
  xcm_cm_set_link_events(b.cm, on_link, &b);
  xcm_listen_options_init(&lo, sizeof lo);
  REQUIRE(xcm_cm_listen(b.cm, &lo, err, sizeof err) == 0);
  REQUIRE(xcm_cm_start(b.cm) == 0);
  REQUIRE(wait_downs(&b, 2));
  xcm_testkit_get_stats(b.kit, &st, sizeof st);
  CHECK_INT(st.handshakes + st.handshakes_failed, 0);
  bench_stop(&b);
}

/* (d) A malformed pin, or one beside what it replaces: xcm_cm_new says
 * which field and what form it wants. */
static void test_bad_pin_syntax(void) {
  static const char *const bad[] = {
      "",
      "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
      "sha1:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b",
      "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a0",
      "sha256:"
      "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a0800",
      "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a0g",
      "sha256:9F:86D0:81:88:4C:7D:65:9A:2F:EA:A0:C5:5A:D0:15:A3:BF:4F:1B:2B:0B:"
      "82:2C:D1:5D:6C:15:B0:F0:0A:08",
      "sha256:9F:86:D0:81:88:4C:7D:65:9A:2F:EA:A0:C5:5A:D0:15:A3:BF:4F:1B:2B:"
      "0B:"
      "82:2C:D1:5D:6C:15:B0:F0:0A:08:",
      "sha256: "
      "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
      "sha256:"
      "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 ",
  };
  static const char good[] =
      "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
  uv_loop_t loop;
  xcm_options o;
  xcm_cm *cm;
  char err[512];
  size_t i;
  bench b;

  memset(&b, 0, sizeof b);
  REQUIRE(uv_loop_init(&loop) == 0);
  b.port = 5262;
  for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    unsigned before = xcm_test_failures();

    base_options(&b, &o);
    o.upstream_fingerprint = bad[i];
    err[0] = '\0';
    CHECK_INT(xcm_cm_new(&cm, &loop, &o, err, sizeof err), XCM_EINVAL);
    CHECK(cm == NULL);
    CHECK(strstr(err, "upstream_fingerprint") != NULL);
    CHECK(strstr(err, "\"sha256:\" and 64 hex digits") != NULL);
    if (xcm_test_failures() != before)
      xcm_test_note("%s: %s", bad[i], err);
    xcm_test_tried("bad-configs", before);
  }
  base_options(&b, &o);
  o.upstream_fingerprint = good;
  o.upstream_accept_self_signed = 1;
  CHECK_INT(xcm_cm_new(&cm, &loop, &o, err, sizeof err), XCM_EINVAL);
  CHECK(strstr(err, "upstream_accept_self_signed") != NULL);
  base_options(&b, &o);
  o.upstream_fingerprint = good;
  o.upstream_ca_file = xcm_test_cert("ca.pem");
  CHECK_INT(xcm_cm_new(&cm, &loop, &o, err, sizeof err), XCM_EINVAL);
  CHECK(strstr(err, "upstream_ca_file") != NULL);
  CHECK_INT(uv_loop_close(&loop), 0);
}

/* The parser itself: every spelling the docs promise. */
static void test_parse_fingerprint(void) {
  unsigned char a[32], b[32];
  char text[112];
  fp f;

  fingerprint_of("self.pem", &f);
  REQUIRE(xcm__tls_parse_fingerprint(f.colons_upper, a) == 0);
  REQUIRE(xcm__tls_parse_fingerprint(f.plain_lower, b) == 0);
  CHECK(memcmp(a, b, 32) == 0);
  REQUIRE(xcm__tls_parse_fingerprint(f.mixed, b) == 0);
  CHECK(memcmp(a, b, 32) == 0);
  xcm__tls_format_fingerprint(a, text, sizeof text);
  CHECK_STR(text, f.colons_upper);
  CHECK_INT(xcm__tls_parse_fingerprint(NULL, a), XCM_EINVAL);
  CHECK_INT(xcm__tls_parse_fingerprint("SHA256:", a), XCM_EINVAL);
}

int main(int argc, char **argv) {
  static const xcm_test tests[] = {
      {"parse_fingerprint", test_parse_fingerprint},
      {"bad_pin_syntax", test_bad_pin_syntax},
      {"self_signed_reported", test_self_signed_reported},
      {"reported_once_per_certificate", test_reported_once_per_certificate},
      {"pin_colons_upper", test_pin_colons_upper},
      {"pin_plain_lower", test_pin_plain_lower},
      {"pin_mixed_case", test_pin_mixed_case},
      {"wrong_pin", test_wrong_pin},
      {"pin_needs_tls", test_pin_needs_tls},
  };

  return xcm_test_main(argc, argv, XCM_TESTS(tests));
}
