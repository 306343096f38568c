/* xcmd's configuration: our format (every type and unit, every error
 * message word for word, defaults, quoting, comments, CRLF, the shipped
 * example) and the Java CM's manager.xml (mapping and warnings). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "harness.h"
#include "xcm/error.h"

#define NAME "xcmd.conf"
/* Lines 1-6; a test's own lines start at 7, inside the [listener]. */
#define MINIMAL                                                                \
  "[server]\n"                                                                 \
  "domain = example.test\n"                                                    \
  "[upstream]\n"                                                               \
  "name = cm1\n"                                                               \
  "secret = s3cret\n"                                                          \
  "[listener]\n"

static int parse(const char *text, xcmd_config *cfg, char *err, size_t errlen) {
  return xcmd_config_parse(text, strlen(text), NAME, cfg, err, errlen);
}

/* text must fail with exactly want, and leave nothing behind. */
/* Every bad config goes into the README's hardening table. */
static void expect_error_len(const char *text, size_t len, const char *want) {
  unsigned before = xcm_test_failures();
  xcmd_config cfg;
  char err[512];
  int rc;

  memset(err, 'x', sizeof(err));
  rc = xcmd_config_parse(text, len, NAME, &cfg, err, sizeof(err));
  if (!CHECK_INT(rc, XCM_ECONFIG))
    xcm_test_note("for: %s", text);
  if (!CHECK_STR(err, want))
    xcm_test_note("for: %s", text);
  CHECK(cfg.opt.domain == NULL && cfg.nlisteners == 0 && cfg.owned_ == NULL);
  xcmd_config_free(&cfg);
  xcm_test_tried("bad-configs", before);
}

static void expect_error(const char *text, const char *want) {
  expect_error_len(text, strlen(text), want);
}

/* Parse MINIMAL followed by extra, which must succeed. */
static int parse_ok(const char *extra, xcmd_config *cfg) {
  char text[4096], err[512];
  int rc;

  snprintf(text, sizeof(text), "%s%s", MINIMAL, extra);
  rc = parse(text, cfg, err, sizeof(err));
  if (!CHECK_INT(rc, 0))
    xcm_test_note("%s", err);
  return rc;
}

static char *read_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  char *buf;
  long n;

  *len = 0;
  if (f == NULL)
    return NULL;
  fseek(f, 0, SEEK_END);
  n = ftell(f);
  fseek(f, 0, SEEK_SET);
  buf = malloc((size_t)n + 1);
  if (buf != NULL && fread(buf, 1, (size_t)n, f) != (size_t)n) {
    free(buf);
    buf = NULL;
  }
  fclose(f);
  if (buf != NULL)
    buf[n] = '\0';
  *len = (size_t)n;
  return buf;
}

static void test_defaults(void) {
  xcmd_config cfg;
  const xcm_options *o = &cfg.opt;

  REQUIRE(parse_ok("", &cfg) == 0);
  CHECK_STR(o->domain, "example.test");
  CHECK_STR(o->name, "cm1");
  CHECK_STR(o->secret, "s3cret");
  CHECK_STR(o->server_host, "127.0.0.1");
  CHECK_INT(o->server_port, 5262);
  CHECK_STR(o->resource_prefix, "w");
  CHECK_INT(o->connections, 5);
  CHECK_INT(o->upstream_tls, XCM_UPSTREAM_TLS_OPTIONAL);
  CHECK(o->upstream_ca_file == NULL);
  CHECK_INT(o->upstream_accept_self_signed, 0);
  CHECK_INT(o->upstream_zlib, 0);
  CHECK_INT(o->keepalive_ms, 30000);
  CHECK_INT(o->dead_after_ms, 300000);
  CHECK_INT(o->upstream_wait_ms, 0);
  CHECK_INT(o->max_stanza_preauth, 8192);
  CHECK_INT(o->max_stanza, 262144);
  CHECK_INT(o->max_depth, 32);
  CHECK_INT(o->header_timeout_ms, 10000);
  CHECK_INT(o->auth_timeout_ms, 30000);
  CHECK_INT(o->idle_timeout_ms, 600000);
  CHECK_INT(o->max_client_out, 1048576);
  CHECK_INT(o->rate, 200);
  CHECK_INT(o->burst, 1000);
  CHECK_INT(o->rate_bytes, 262144);
  CHECK_INT(o->burst_bytes, 1048576);
  CHECK_INT(o->max_clients, 10000);
  CHECK_INT(o->max_per_address, 100);
  CHECK_INT(o->compression, 0);
  CHECK_INT(o->expat_only, 0);
  CHECK(o->log == NULL && o->log_ud == NULL && o->alloc == NULL);
  CHECK_INT(o->log_level, XCM_LOG_INFO);

  CHECK_INT(cfg.nlisteners, 1);
  CHECK_STR(cfg.listeners[0].host, "127.0.0.1");
  CHECK_INT(cfg.listeners[0].port, 5222);
  CHECK(cfg.listeners[0].cert_file == NULL);
  CHECK(cfg.listeners[0].key_file == NULL);
  CHECK_INT(cfg.listeners[0].direct_tls, 0);
  CHECK_INT(cfg.listeners[0].reuseport, 0);
  CHECK_INT(cfg.listeners[0].proxy_protocol, 0);
  CHECK_INT(cfg.cert_wanted, 0);

  CHECK_INT(cfg.workers, 0);
  CHECK_INT(cfg.log_target, XCMD_LOG_STDERR);
  CHECK_INT(cfg.log_level, XCM_LOG_INFO);
  CHECK_INT(cfg.log_bodies, 0);
  CHECK(cfg.metrics_host == NULL);
  CHECK_INT(cfg.metrics_port, 0);
  CHECK(cfg.pid_file == NULL && cfg.user == NULL && cfg.group == NULL);
  CHECK_INT(cfg.drain_ms, 5000);
  CHECK_INT(cfg.drain_period_ms, 60000);
  CHECK_INT(cfg.from_manager_xml, 0);
  CHECK_INT(cfg.nwarnings, 0);
  xcmd_config_free(&cfg);
  /* Free leaves a zeroed struct, and freeing that again is harmless. */
  CHECK(cfg.opt.domain == NULL && cfg.owned_ == NULL);
  xcmd_config_free(&cfg);
}

static void test_sizes(void) {
  static const struct {
    const char *text;
    size_t bytes;
  } sizes[] = {
      {"1024", 1024},    {"2048b", 2048},    {"2048B", 2048},
      {"1k", 1024},      {"1K", 1024},       {"1kb", 1024},
      {"1KB", 1024},     {"1KiB", 1024},     {"8 KiB", 8192},
      {"256k", 262144},  {"256KiB", 262144}, {"1m", 1048576},
      {"1M", 1048576},   {"1 mb", 1048576},  {"1MiB", 1048576},
      {"64m", 67108864}, {"\"16k\"", 16384},
  };
  xcmd_config cfg;
  char extra[256];
  size_t i;

  for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
    snprintf(extra, sizeof(extra),
             "[limits]\nmax_stanza_preauth = 1k\nmax_stanza = %s\n",
             sizes[i].text);
    if (parse_ok(extra, &cfg) != 0)
      continue;
    if (!CHECK_INT(cfg.opt.max_stanza, sizes[i].bytes))
      xcm_test_note("for %s", sizes[i].text);
    xcmd_config_free(&cfg);
  }
  REQUIRE(parse_ok("[limits]\nmax_client_out = 1g\nmax_stanza_preauth = 1m\n"
                   "max_stanza = 1MiB\n",
                   &cfg) == 0);
  CHECK_INT(cfg.opt.max_client_out, 1073741824);
  CHECK_INT(cfg.opt.max_stanza_preauth, 1048576);
  xcmd_config_free(&cfg);
  REQUIRE(parse_ok("[limits]\nmax_client_out = 1GiB\n", &cfg) == 0);
  CHECK_INT(cfg.opt.max_client_out, 1073741824);
  xcmd_config_free(&cfg);
  REQUIRE(parse_ok("[limits]\nmax_client_out = 1 GB\n", &cfg) == 0);
  CHECK_INT(cfg.opt.max_client_out, 1073741824);
  xcmd_config_free(&cfg);
}

static void test_durations(void) {
  static const struct {
    const char *text;
    unsigned ms;
  } durations[] = {
      {"1500ms", 1500}, {"1s", 1000},        {"30s", 30000},
      {"30 s", 30000},  {"5m", 300000},      {"2h", 7200000},
      {"1d", 86400000}, {"24d", 2073600000}, {"90m", 5400000},
  };
  xcmd_config cfg;
  char extra[256];
  size_t i;

  for (i = 0; i < sizeof(durations) / sizeof(durations[0]); i++) {
    snprintf(extra, sizeof(extra), "[limits]\nidle_timeout = %s\n",
             durations[i].text);
    if (parse_ok(extra, &cfg) != 0)
      continue;
    if (!CHECK_INT(cfg.opt.idle_timeout_ms, durations[i].ms))
      xcm_test_note("for %s", durations[i].text);
    xcmd_config_free(&cfg);
  }
  REQUIRE(parse_ok("[daemon]\ndrain = 0ms\n", &cfg) == 0);
  CHECK_INT(cfg.drain_ms, 0);
  xcmd_config_free(&cfg);
  REQUIRE(parse_ok("[daemon]\ndrain = 500ms\n", &cfg) == 0);
  CHECK_INT(cfg.drain_ms, 500);
  xcmd_config_free(&cfg);
  REQUIRE(parse_ok("[daemon]\ndrain_period = 0ms\n", &cfg) == 0);
  CHECK_INT(cfg.drain_period_ms, 0);
  CHECK_INT(cfg.drain_ms, 5000);
  xcmd_config_free(&cfg);
  REQUIRE(parse_ok("[daemon]\ndrain_period = 10m\n", &cfg) == 0);
  CHECK_INT(cfg.drain_period_ms, 600000);
  xcmd_config_free(&cfg);
}

static void test_booleans(void) {
  static const struct {
    const char *text;
    int value;
  } bools[] = {{"yes", 1},  {"no", 0},    {"true", 1}, {"false", 0},
               {"on", 1},   {"off", 0},   {"YES", 1},  {"Off", 0},
               {"True", 1}, {"\"on\"", 1}};
  xcmd_config cfg;
  char extra[256];
  size_t i;

  for (i = 0; i < sizeof(bools) / sizeof(bools[0]); i++) {
    snprintf(extra, sizeof(extra), "reuseport = %s\n", bools[i].text);
    if (parse_ok(extra, &cfg) != 0)
      continue;
    if (!CHECK_INT(cfg.listeners[0].reuseport, bools[i].value))
      xcm_test_note("for %s", bools[i].text);
    xcmd_config_free(&cfg);
  }
}

/* proxy_protocol is per listener: a balancer's port beside a direct
 * one. */
static void test_proxy_protocol(void) {
  xcmd_config cfg;

  if (parse_ok("port = 5222\n"
               "[listener]\n"
               "port = 5300\n"
               "proxy_protocol = yes\n"
               "proxy_trusted = 127.0.0.1, 10.0.0.0/8  # the balancers\n",
               &cfg) != 0)
    return;
  CHECK_INT(cfg.nlisteners, 2);
  CHECK_INT(cfg.listeners[0].proxy_protocol, 0);
  CHECK(cfg.listeners[0].proxy_trusted == NULL);
  CHECK_INT(cfg.listeners[1].proxy_protocol, 1);
  CHECK_STR(cfg.listeners[1].proxy_trusted, "127.0.0.1, 10.0.0.0/8");
  CHECK_INT(cfg.listeners[1].port, 5300);
  xcmd_config_free(&cfg);
  expect_error(MINIMAL "proxy_protocol = maybe\n",
               "xcmd.conf:7: key 'proxy_protocol' in [listener]: 'maybe' is "
               "not a boolean (use yes or no)");
}

/* proxy_trusted: required with proxy_protocol, refused without it, and
 * each bad entry named with its line, whichever listener it is in. */
static void test_proxy_trusted(void) {
  xcmd_config cfg;

  if (parse_ok("proxy_protocol = yes\n"
               "proxy_trusted = ::1, fd00::/8,192.0.2.0/24\n"
               "[listener]\n"
               "port = 5300\n",
               &cfg) != 0)
    return;
  CHECK_STR(cfg.listeners[0].proxy_trusted, "::1, fd00::/8,192.0.2.0/24");
  CHECK(cfg.listeners[1].proxy_trusted == NULL);
  xcmd_config_free(&cfg);
  expect_error(MINIMAL "proxy_protocol = yes\n",
               "xcmd.conf:7: key 'proxy_protocol' in [listener]: needs "
               "'proxy_trusted', the load balancers' addresses (e.g. "
               "proxy_trusted = 10.0.0.5, fd00::/8)");
  expect_error(MINIMAL "proxy_trusted = 127.0.0.1\n",
               "xcmd.conf:7: key 'proxy_trusted' in [listener]: set without "
               "'proxy_protocol = yes'");
  expect_error(MINIMAL "proxy_protocol = yes\nproxy_trusted = 10.0.0.1/8\n",
               "xcmd.conf:8: key 'proxy_trusted' in [listener]: '10.0.0.1/8' "
               "has address bits set past its prefix length");
  expect_error(MINIMAL "proxy_trusted = ::1, balancer.example\n"
                       "proxy_protocol = yes\n",
               "xcmd.conf:7: key 'proxy_trusted' in [listener]: "
               "'balancer.example' is not an IPv4 or IPv6 address or "
               "network (no host names, no zone ids)");
  expect_error(MINIMAL "proxy_protocol = yes\nproxy_trusted = 10.0.0.0/33\n"
                       "[listener]\nport = 5300\n",
               "xcmd.conf:8: key 'proxy_trusted' in [listener]: "
               "'10.0.0.0/33' has a prefix length over 32");
  expect_error(MINIMAL "proxy_protocol = yes\nproxy_trusted = 10.0.0.1,\n",
               "xcmd.conf:8: key 'proxy_trusted' in [listener]: entry 2 is "
               "empty");
}

/* [upstream] servers: the nodes of a cluster, instead of host and port,
 * read as libxcm reads it; each bad list named with its line. */
#define UPSTREAM_AT_5                                                          \
  "[server]\n"                                                                 \
  "domain = example.test\n"                                                    \
  "[listener]\n"                                                               \
  "[upstream]\n"                                                               \
  "name = cm1\n"                                                               \
  "secret = s3cret\n"

static void test_servers(void) {
  const char *text = UPSTREAM_AT_5 "servers = of1:5262, [fd00::3]:5270, of3\n"
                                   "connections = 3\n";
  xcmd_config cfg;
  char err[512];

  if (!CHECK_INT(parse(text, &cfg, err, sizeof err), 0)) {
    xcm_test_note("%s", err);
    return;
  }
  CHECK_STR(cfg.opt.upstream_servers, "of1:5262, [fd00::3]:5270, of3");
  CHECK_INT(cfg.opt.connections, 3);
  /* host and port stay at the library's defaults, unused. */
  CHECK_STR(cfg.opt.server_host, "127.0.0.1");
  xcmd_config_free(&cfg);
  expect_error(UPSTREAM_AT_5 "host = of1\nservers = of1:5262, of2:5262\n",
               "xcmd.conf:8: key 'servers' in [upstream]: cannot be set with "
               "'host' (line 7): list every node in servers, as host:port, "
               "and remove host and port");
  expect_error(UPSTREAM_AT_5 "servers = of1:5262, of2:5262\nport = 5263\n",
               "xcmd.conf:7: key 'servers' in [upstream]: cannot be set with "
               "'port' (line 8): list every node in servers, as host:port, "
               "and remove host and port");
  expect_error(UPSTREAM_AT_5 "servers = of1:5262,, of2:5262\n",
               "xcmd.conf:7: key 'servers' in [upstream]: entry 2 is empty "
               "(write host:port entries separated by ',', e.g. \"of1:5262, "
               "of2:5262\")");
  expect_error(UPSTREAM_AT_5 "servers = fd00::3:5262\n",
               "xcmd.conf:7: key 'servers' in [upstream]: \"fd00::3:5262\" "
               "looks like an IPv6 address: write it in brackets, e.g. "
               "[::1]:5262");
  expect_error(UPSTREAM_AT_5 "servers = of1:99999\n",
               "xcmd.conf:7: key 'servers' in [upstream]: \"of1:99999\" has "
               "no valid port (1 to 65535)");
  expect_error(UPSTREAM_AT_5 "servers = of1, of2:5262, OF1:5262\n",
               "xcmd.conf:7: key 'servers' in [upstream]: \"OF1:5262\" is "
               "listed twice");
  expect_error(UPSTREAM_AT_5 "servers = a, b, c, d, e\nconnections = 64\n",
               "xcmd.conf:7: key 'servers' in [upstream]: "
               "5 servers with connections = 64 each make 320 links: at "
               "most 256 in all");
}

static void test_words(void) {
  static const char *const levels[] = {"error", "warn", "info", "debug"};
  xcmd_config cfg;
  char extra[256];
  int i;

  for (i = 0; i < 4; i++) {
    snprintf(extra, sizeof(extra), "[log]\nlevel = %s\n", levels[i]);
    if (parse_ok(extra, &cfg) != 0)
      continue;
    CHECK_INT(cfg.log_level, XCM_LOG_ERROR + i);
    CHECK_INT(cfg.opt.log_level, XCM_LOG_ERROR + i);
    xcmd_config_free(&cfg);
  }
  REQUIRE(parse_ok("[log]\ntarget = syslog\nlevel = debug\nbodies = yes\n",
                   &cfg) == 0);
  CHECK_INT(cfg.log_target, XCMD_LOG_SYSLOG);
  CHECK_INT(cfg.log_bodies, 1);
  xcmd_config_free(&cfg);
  REQUIRE(parse_ok("[log]\ntarget = stderr\n", &cfg) == 0);
  CHECK_INT(cfg.log_target, XCMD_LOG_STDERR);
  xcmd_config_free(&cfg);

  REQUIRE(parse("[server]\ndomain = d\n[upstream]\nname = n\nsecret = s\n"
                "tls = off\n[listener]\n",
                &cfg, NULL, 0) == 0);
  CHECK_INT(cfg.opt.upstream_tls, XCM_UPSTREAM_TLS_OFF);
  xcmd_config_free(&cfg);
  REQUIRE(parse("[server]\ndomain = d\n[upstream]\nname = n\nsecret = s\n"
                "tls = required\n[listener]\n",
                &cfg, NULL, 0) == 0);
  CHECK_INT(cfg.opt.upstream_tls, XCM_UPSTREAM_TLS_REQUIRED);
  xcmd_config_free(&cfg);
  REQUIRE(parse("[server]\ndomain = d\n[upstream]\nname = n\nsecret = s\n"
                "tls = optional\n[listener]\n",
                &cfg, NULL, 0) == 0);
  CHECK_INT(cfg.opt.upstream_tls, XCM_UPSTREAM_TLS_OPTIONAL);
  xcmd_config_free(&cfg);
}

/* "unlimited" switches a limit off: XCM_UNLIMITED, which xcm.h says
 * the library reads as no limit (zero would mean the default). */
static void test_unlimited(void) {
  xcmd_config cfg;

  REQUIRE(parse_ok("[limits]\nmax_clients = unlimited\n"
                   "max_per_address = unlimited\nheader_timeout = unlimited\n"
                   "auth_timeout = unlimited\nidle_timeout = unlimited\n"
                   "rate = unlimited\nrate_bytes = unlimited\n",
                   &cfg) == 0);
  CHECK_INT(cfg.opt.max_clients, XCM_UNLIMITED);
  CHECK_INT(cfg.opt.max_per_address, XCM_UNLIMITED);
  CHECK_INT(cfg.opt.header_timeout_ms, XCM_UNLIMITED);
  CHECK_INT(cfg.opt.auth_timeout_ms, XCM_UNLIMITED);
  CHECK_INT(cfg.opt.idle_timeout_ms, XCM_UNLIMITED);
  CHECK_INT(cfg.opt.rate, XCM_UNLIMITED);
  CHECK_INT(cfg.opt.rate_bytes, XCM_UNLIMITED);
  /* Bursts are left as they were. */
  CHECK_INT(cfg.opt.burst, 1000);
  CHECK_INT(cfg.opt.burst_bytes, 1048576);
  xcmd_config_free(&cfg);
}

/* [csi]: XEP-0352 client state indication, off by default; the
 * namespace lists are read as libxcm reads them, and an error names the
 * key whose list it is about. */
static void test_csi(void) {
  xcmd_config cfg;

  REQUIRE(parse_ok("", &cfg) == 0);
  CHECK_INT(cfg.opt.csi_enable, 0);
  CHECK_INT(cfg.opt.csi_max_held, 100);
  CHECK_INT(cfg.opt.csi_max_held_bytes, 65536);
  CHECK(cfg.opt.csi_hold_ns == NULL);
  CHECK(cfg.opt.csi_urgent_ns == NULL);
  xcmd_config_free(&cfg);
  REQUIRE(parse_ok("[csi]\nenable = yes\nmax_held = 20\n"
                   "max_held_bytes = 16k\n"
                   "hold_ns = urn:xmpp:receipts, urn:xmpp:chat-markers:0\n"
                   "urgent_ns = http://jabber.org/protocol/muc#user\n",
                   &cfg) == 0);
  CHECK_INT(cfg.opt.csi_enable, 1);
  CHECK_INT(cfg.opt.csi_max_held, 20);
  CHECK_INT(cfg.opt.csi_max_held_bytes, 16384);
  CHECK_STR(cfg.opt.csi_hold_ns, "urn:xmpp:receipts, urn:xmpp:chat-markers:0");
  CHECK_STR(cfg.opt.csi_urgent_ns, "http://jabber.org/protocol/muc#user");
  CHECK(xcm_options_check(&cfg.opt, NULL, 0) == 0);
  xcmd_config_free(&cfg);
  expect_error(MINIMAL "[csi]\nmax_held = 0\n",
               "xcmd.conf:8: key 'max_held' in [csi]: '0' is out of range "
               "(1 to 100000)");
  expect_error(MINIMAL "[csi]\nmax_held_bytes = 32m\n",
               "xcmd.conf:8: key 'max_held_bytes' in [csi]: '32m' is out of "
               "range (1k to 16m)");
  expect_error(MINIMAL "[csi]\nhold_ns = urn:a,,urn:b\n",
               "xcmd.conf:8: key 'hold_ns' in [csi]: an empty entry: "
               "namespaces separated by commas");
  expect_error(MINIMAL "[csi]\nhold_ns = urn:a\nurgent_ns = urn:b, urn:a\n",
               "xcmd.conf:9: key 'urgent_ns' in [csi]: also in the other "
               "list (\"urn:a\")");
  expect_error(MINIMAL "[csi]\nurgent_ns = urn:xmpp:omemo:2\n",
               "xcmd.conf:8: key 'urgent_ns' in [csi]: chat states and "
               "encrypted payloads are decided by the CM, not by a rule "
               "(\"urn:xmpp:omemo:2\")");
}

/* [stream_management]: XEP-0198 acknowledgements, off by default. */
static void test_stream_management(void) {
  xcmd_config cfg;

  REQUIRE(parse_ok("", &cfg) == 0);
  CHECK_INT(cfg.opt.sm_enable, 0);
  CHECK_INT(cfg.opt.sm_max_unacked, 1000);
  CHECK_INT(cfg.opt.sm_max_unacked_bytes, 1048576);
  CHECK_INT(cfg.opt.sm_ack_every, 50);
  CHECK_INT(cfg.opt.sm_ack_every_bytes, 65536);
  CHECK_INT(cfg.opt.sm_ack_quiet_ms, 2000);
  xcmd_config_free(&cfg);
  REQUIRE(parse_ok("[stream_management]\nenable = yes\nmax_unacked = 200\n"
                   "max_unacked_bytes = 256k\nack_every = 5\n"
                   "ack_every_bytes = 4k\nack_quiet = 500ms\n",
                   &cfg) == 0);
  CHECK_INT(cfg.opt.sm_enable, 1);
  CHECK_INT(cfg.opt.sm_max_unacked, 200);
  CHECK_INT(cfg.opt.sm_max_unacked_bytes, 262144);
  CHECK_INT(cfg.opt.sm_ack_every, 5);
  CHECK_INT(cfg.opt.sm_ack_every_bytes, 4096);
  CHECK_INT(cfg.opt.sm_ack_quiet_ms, 500);
  CHECK(xcm_options_check(&cfg.opt, NULL, 0) == 0);
  xcmd_config_free(&cfg);
  REQUIRE(parse_ok("[stream_management]\nmax_unacked = unlimited\n"
                   "ack_every = unlimited\nack_every_bytes = unlimited\n"
                   "ack_quiet = unlimited\n",
                   &cfg) == 0);
  CHECK_INT(cfg.opt.sm_max_unacked, XCM_UNLIMITED);
  CHECK_INT(cfg.opt.sm_ack_every, XCM_UNLIMITED);
  CHECK_INT(cfg.opt.sm_ack_every_bytes, XCM_UNLIMITED);
  CHECK_INT(cfg.opt.sm_ack_quiet_ms, XCM_UNLIMITED);
  xcmd_config_free(&cfg);
  expect_error(MINIMAL "[stream_management]\nmax_unacked = 0\n",
               "xcmd.conf:8: key 'max_unacked' in [stream_management]: '0' "
               "is not a limit: write 'unlimited' to switch it off");
  expect_error(MINIMAL "[stream_management]\nack_quiet = 5ms\n",
               "xcmd.conf:8: key 'ack_quiet' in [stream_management]: '5ms' "
               "is out of range (10ms to 1h)");
  expect_error(MINIMAL "[stream_management]\nmax_unacked_bytes = unlimited\n",
               "xcmd.conf:8: key 'max_unacked_bytes' in [stream_management]: "
               "'unlimited' is not a size (use e.g. 8k, 256k, 1m)");
  expect_error(MINIMAL "[stream_management]\nenable = maybe\n",
               "xcmd.conf:8: key 'enable' in [stream_management]: 'maybe' is "
               "not a boolean (use yes or no)");
}

/* Every key with a value other than its default. */
static void test_every_key(void) {
  const char *text = "[server]\n"
                     "domain = chat.example.org\n"
                     "compression = yes\n"
                     "expat_only = yes\n"
                     "[upstream]\n"
                     "host = of.example.org\n"
                     "port = 15262\n"
                     "name = edge7\n"
                     "secret = hunter2\n"
                     "resource_prefix = t\n"
                     "connections = 64\n"
                     "tls = required\n"
                     "ca_file = /etc/ca.pem\n"
                     "accept_self_signed = yes\n"
                     "zlib = yes\n"
                     "keepalive = 1h\n"
                     "dead_after = 1d\n"
                     "wait = 1m\n"
                     "[listener]\n"
                     "host = 0.0.0.0\n"
                     "port = 65535\n"
                     "cert = /c.pem\n"
                     "key = /k.pem\n"
                     "direct_tls = yes\n"
                     "reuseport = yes\n"
                     "[limits]\n"
                     "max_stanza_preauth = 1k\n"
                     "max_stanza = 1k\n"
                     "max_depth = 256\n"
                     "header_timeout = 1h\n"
                     "auth_timeout = 1s\n"
                     "idle_timeout = 1s\n"
                     "max_client_out = 4k\n"
                     "rate = 1000000\n"
                     "burst = 1\n"
                     "rate_bytes = 1g\n"
                     "burst_bytes = 1k\n"
                     "max_clients = 10000000\n"
                     "max_per_address = 3\n"
                     "[log]\n"
                     "target = syslog\n"
                     "level = debug\n"
                     "bodies = on\n"
                     "[metrics]\n"
                     "port = 9100\n"
                     "[daemon]\n"
                     "workers = 256\n"
                     "pid_file = /run/x.pid\n"
                     "user = nobody\n"
                     "group = nogroup\n"
                     "drain = 1h\n"
                     "drain_period = 1d\n";
  xcmd_config cfg;
  const xcm_options *o = &cfg.opt;
  char err[512];

  if (!CHECK_INT(parse(text, &cfg, err, sizeof(err)), 0)) {
    xcm_test_note("%s", err);
    return;
  }
  CHECK_STR(o->domain, "chat.example.org");
  CHECK_INT(o->compression, 1);
  CHECK_INT(o->expat_only, 1);
  CHECK_STR(o->server_host, "of.example.org");
  CHECK_INT(o->server_port, 15262);
  CHECK_STR(o->name, "edge7");
  CHECK_STR(o->secret, "hunter2");
  CHECK_STR(o->resource_prefix, "t");
  CHECK_INT(o->connections, 64);
  CHECK_INT(o->upstream_tls, XCM_UPSTREAM_TLS_REQUIRED);
  CHECK_STR(o->upstream_ca_file, "/etc/ca.pem");
  CHECK_INT(o->upstream_accept_self_signed, 1);
  CHECK_INT(o->upstream_zlib, 1);
  CHECK_INT(o->keepalive_ms, 3600000);
  CHECK_INT(o->dead_after_ms, 86400000);
  CHECK_INT(o->upstream_wait_ms, 60000);
  CHECK_STR(cfg.listeners[0].host, "0.0.0.0");
  CHECK_INT(cfg.listeners[0].port, 65535);
  CHECK_STR(cfg.listeners[0].cert_file, "/c.pem");
  CHECK_STR(cfg.listeners[0].key_file, "/k.pem");
  CHECK_INT(cfg.listeners[0].direct_tls, 1);
  CHECK_INT(cfg.listeners[0].reuseport, 1);
  CHECK_INT(o->max_stanza_preauth, 1024);
  CHECK_INT(o->max_stanza, 1024);
  CHECK_INT(o->max_depth, 256);
  CHECK_INT(o->header_timeout_ms, 3600000);
  CHECK_INT(o->auth_timeout_ms, 1000);
  CHECK_INT(o->idle_timeout_ms, 1000);
  CHECK_INT(o->max_client_out, 4096);
  CHECK_INT(o->rate, 1000000);
  CHECK_INT(o->burst, 1);
  CHECK_INT(o->rate_bytes, 1073741824u);
  CHECK_INT(o->burst_bytes, 1024);
  CHECK_INT(o->max_clients, 10000000);
  CHECK_INT(o->max_per_address, 3);
  CHECK_INT(cfg.log_target, XCMD_LOG_SYSLOG);
  CHECK_INT(cfg.log_level, XCM_LOG_DEBUG);
  CHECK_INT(o->log_level, XCM_LOG_DEBUG);
  CHECK_INT(cfg.log_bodies, 1);
  /* The metrics listener stays on the loopback unless told otherwise. */
  CHECK_STR(cfg.metrics_host, "127.0.0.1");
  CHECK_INT(cfg.metrics_port, 9100);
  CHECK_INT(cfg.workers, 256);
  CHECK_STR(cfg.pid_file, "/run/x.pid");
  CHECK_STR(cfg.user, "nobody");
  CHECK_STR(cfg.group, "nogroup");
  CHECK_INT(cfg.drain_ms, 3600000);
  CHECK_INT(cfg.drain_period_ms, 86400000);
  xcmd_config_free(&cfg);
}

static void test_quoting(void) {
  xcmd_config cfg;

  REQUIRE(parse_ok("cert = \"/etc/my certs/a # b \\\"q\\\" \\\\ end\"  "
                   "# comment\nkey = k\n",
                   &cfg) == 0);
  CHECK_STR(cfg.listeners[0].cert_file, "/etc/my certs/a # b \"q\" \\ end");
  xcmd_config_free(&cfg);
  /* Bare values: '#' starts a comment only after white space. */
  REQUIRE(parse_ok("cert = /a#b\nkey = /k # the key\n", &cfg) == 0);
  CHECK_STR(cfg.listeners[0].cert_file, "/a#b");
  CHECK_STR(cfg.listeners[0].key_file, "/k");
  xcmd_config_free(&cfg);
  /* Inner spaces stay, outer ones and tabs go; quotes keep them. */
  REQUIRE(parse_ok("cert =\t /my  cert.pem \t\nkey = \" /k \"\n", &cfg) == 0);
  CHECK_STR(cfg.listeners[0].cert_file, "/my  cert.pem");
  CHECK_STR(cfg.listeners[0].key_file, " /k ");
  xcmd_config_free(&cfg);
  /* No space around '=' is fine; a value may hold '='. */
  REQUIRE(parse("[server]\ndomain=example.test\n[upstream]\nname=cm1\n"
                "secret=a=b=c\n[listener]\n",
                &cfg, NULL, 0) == 0);
  CHECK_STR(cfg.opt.secret, "a=b=c");
  xcmd_config_free(&cfg);
}

static void test_comments(void) {
  const char *text = "# leading comment\n"
                     "\n"
                     "   # indented comment\n"
                     "[server]   # after a header\n"
                     "\t domain = example.test\n"
                     "[ upstream ]\n"
                     "name = cm1 # trailing\n"
                     "secret = \"s # t\" # trailing\n"
                     "\n"
                     "[listener]\n"
                     "# the end\n";
  xcmd_config cfg;
  char err[512];

  REQUIRE(parse(text, &cfg, err, sizeof(err)) == 0);
  CHECK_STR(cfg.opt.domain, "example.test");
  CHECK_STR(cfg.opt.name, "cm1");
  CHECK_STR(cfg.opt.secret, "s # t");
  xcmd_config_free(&cfg);
  /* A UTF-8 byte order mark is no part of the first line. */
  REQUIRE(xcmd_config_parse("\xef\xbb\xbf" MINIMAL, strlen(MINIMAL) + 3, NAME,
                            &cfg, err, sizeof(err)) == 0);
  xcmd_config_free(&cfg);
  /* No newline at the end of the last line. */
  REQUIRE(parse(MINIMAL "port = 5299", &cfg, err, sizeof(err)) == 0);
  CHECK_INT(cfg.listeners[0].port, 5299);
  xcmd_config_free(&cfg);
}

static void test_crlf(void) {
  const char *text = "[server]\r\ndomain = example.test\r\n"
                     "[upstream]\r\nname = cm1\r\nsecret = \"s3cret\"\r\n"
                     "[listener]\r\nport = 5299  # c\r\n";
  xcmd_config cfg;
  char err[512];

  REQUIRE(parse(text, &cfg, err, sizeof(err)) == 0);
  CHECK_STR(cfg.opt.domain, "example.test");
  CHECK_STR(cfg.opt.secret, "s3cret");
  CHECK_INT(cfg.listeners[0].port, 5299);
  xcmd_config_free(&cfg);
  /* Lines still count right, and a CR alone is not a line end. */
  expect_error("[server]\r\ndomain = example.test\r\n[upstream]\r\n"
               "name = cm1\r\nsecret = s\r\n[listener]\r\nport = x\r\n",
               "xcmd.conf:7: key 'port' in [listener]: 'x' is not a number");
  expect_error(MINIMAL "port = 1\rhost = x\n",
               "xcmd.conf:7: control character (byte 0x0d)");
}

static void test_listeners(void) {
  const char *text = MINIMAL "host = ::\n"
                             "[listener]\n"
                             "host = \"::\"\n"
                             "port = 5223\n"
                             "cert = /c.pem\n"
                             "key = /k.pem\n"
                             "direct_tls = yes\n"
                             "[listener]\n"
                             "host = 10.0.0.1\n"
                             "cert = /c2.pem\n"
                             "key = /k2.pem\n"
                             "[listener]\n"
                             "host = 10.0.0.2\n"
                             "direct_tls = yes\n"
                             "cert = /c.pem\n"
                             "key = /k.pem\n"
                             "reuseport = yes\n";
  xcmd_config cfg;
  char err[512];

  if (!CHECK_INT(parse(text, &cfg, err, sizeof(err)), 0)) {
    xcm_test_note("%s", err);
    return;
  }
  REQUIRE(cfg.nlisteners == 4);
  CHECK_STR(cfg.listeners[0].host, "::");
  CHECK_INT(cfg.listeners[0].port, 5222);
  CHECK(cfg.listeners[0].cert_file == NULL);
  CHECK_STR(cfg.listeners[1].host, "::");
  CHECK_INT(cfg.listeners[1].port, 5223);
  CHECK_INT(cfg.listeners[1].direct_tls, 1);
  CHECK_STR(cfg.listeners[1].cert_file, "/c.pem");
  /* STARTTLS on the default port. */
  CHECK_STR(cfg.listeners[2].host, "10.0.0.1");
  CHECK_INT(cfg.listeners[2].port, 5222);
  CHECK_INT(cfg.listeners[2].direct_tls, 0);
  CHECK_STR(cfg.listeners[2].key_file, "/k2.pem");
  /* direct_tls alone moves the default port to 5223. */
  CHECK_INT(cfg.listeners[3].port, 5223);
  CHECK_INT(cfg.listeners[3].reuseport, 1);
  CHECK_INT(cfg.listeners[3].direct_tls, 1);
  CHECK_INT(cfg.cert_wanted, 0);
  /* Our format names its own certificates: nothing for --cert. */
  CHECK_INT(xcmd_config_set_cert(&cfg, "/x.pem", "/y.pem"), 0);
  CHECK(cfg.listeners[0].cert_file == NULL);
  xcmd_config_free(&cfg);
}

/* HTTP listeners: web clients (BOSH, WebSocket) in xcmd's own format. */
static void test_http_listeners(void) {
  const char *text = MINIMAL "[listener]\n"
                             "http = yes\n"
                             "[listener]\n"
                             "http = yes\n"
                             "host = ::\n"
                             "cert = /c.pem\n"
                             "key = /k.pem\n"
                             "http_bosh_path = /bosh\n"
                             "http_ws_paths = /ws/\n"
                             "http_origins = https://chat.example.org\n"
                             "http_public_url = https://chat.example.org\n"
                             "http_max_header = 16k\n"
                             "http_max_body = 128k\n"
                             "http_max_connections = 500\n"
                             "http_max_per_address = unlimited\n"
                             "http_header_timeout = 5s\n"
                             "http_idle_timeout = 2m\n"
                             "bosh_wait = 30s\n"
                             "bosh_hold = 2\n"
                             "bosh_requests = 3\n"
                             "bosh_inactivity = 2m\n"
                             "bosh_polling = 5s\n"
                             "bosh_maxpause = 10m\n"
                             "bosh_max_per_address = unlimited\n";
  static const char *const bad[] = {
      MINIMAL "[listener]\nport = 5280\nhttp_ws_paths = /ws/\n",
      MINIMAL "[listener]\nhttp = yes\ncert = /c.pem\nkey = /k.pem\n"
              "direct_tls = yes\n",
      MINIMAL "[listener]\nhttp = yes\nhttp_max_header = 10\n",
      MINIMAL "[listener]\nhttp = maybe\n",
      MINIMAL "[listener]\nport = 5280\nbosh_wait = 30s\n",
      MINIMAL "[listener]\nhttp = yes\nbosh_wait = 1500ms\n",
      MINIMAL "[listener]\nhttp = yes\nbosh_requests = 9\n",
  };
  xcmd_config cfg;
  char err[512];
  unsigned i;

  if (!CHECK_INT(parse(text, &cfg, err, sizeof(err)), 0)) {
    xcm_test_note("%s", err);
    return;
  }
  REQUIRE(cfg.nlisteners == 3);
  CHECK_INT(cfg.listeners[1].http, 1);
  CHECK_INT(cfg.listeners[1].port, 5280);
  CHECK(cfg.listeners[1].cert_file == NULL);
  CHECK_INT(cfg.listeners[2].port, 5281);
  CHECK_STR(cfg.listeners[2].cert_file, "/c.pem");
  CHECK_STR(cfg.listeners[2].http_bosh_path, "/bosh");
  CHECK_STR(cfg.listeners[2].http_ws_paths, "/ws/");
  CHECK_STR(cfg.listeners[2].http_origins, "https://chat.example.org");
  CHECK_STR(cfg.listeners[2].http_public_url, "https://chat.example.org");
  CHECK_INT(cfg.listeners[2].http_max_header, 16384);
  CHECK_INT(cfg.listeners[2].http_max_body, 131072);
  CHECK_INT(cfg.listeners[2].http_max_connections, 500);
  CHECK_INT(cfg.listeners[2].http_max_per_address, XCM_UNLIMITED);
  CHECK_INT(cfg.listeners[2].http_header_timeout_ms, 5000);
  CHECK_INT(cfg.listeners[2].http_idle_timeout_ms, 120000);
  CHECK_INT(cfg.listeners[2].bosh_wait, 30);
  CHECK_INT(cfg.listeners[2].bosh_hold, 2);
  CHECK_INT(cfg.listeners[2].bosh_requests, 3);
  CHECK_INT(cfg.listeners[2].bosh_inactivity, 120);
  CHECK_INT(cfg.listeners[2].bosh_polling, 5);
  CHECK_INT(cfg.listeners[2].bosh_maxpause, 600);
  CHECK_INT(cfg.listeners[2].bosh_max_per_address, XCM_UNLIMITED);
  xcmd_config_free(&cfg);
  for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int ok = CHECK_INT(parse(bad[i], &cfg, err, sizeof(err)), XCM_ECONFIG);

    if (!ok)
      xcmd_config_free(&cfg);
    TRIED("bad-configs", ok);
  }
}

static void test_max_listeners(void) {
  char text[4096];
  size_t len;
  xcmd_config cfg;
  char err[512];
  int i;

  len = (size_t)snprintf(text, sizeof(text), "%s", MINIMAL);
  for (i = 1; i < XCMD_MAX_LISTENERS; i++)
    len += (size_t)snprintf(text + len, sizeof(text) - len,
                            "port = %d\n[listener]\n", 6000 + i);
  REQUIRE(parse(text, &cfg, err, sizeof(err)) == 0);
  CHECK_INT(cfg.nlisteners, XCMD_MAX_LISTENERS);
  CHECK_INT(cfg.listeners[0].port, 6001);
  CHECK_INT(cfg.listeners[15].port, 5222);
  xcmd_config_free(&cfg);
  /* Line 6 + 2 * 15 + 1 = 37 opens the 17th. */
  snprintf(text + len, sizeof(text) - len, "port = 7000\n[listener]\n");
  expect_error(text, "xcmd.conf:38: more than 16 [listener] sections");
}

static void test_errors_values(void) {
  char big[6000];

  expect_error(MINIMAL "[limits]\nidle_timeout = 5x\n",
               "xcmd.conf:8: key 'idle_timeout' in [limits]: '5x' is not a "
               "duration (use e.g. 30s, 5m)");
  expect_error(MINIMAL "[limits]\nidle_timeout = 30\n",
               "xcmd.conf:8: key 'idle_timeout' in [limits]: '30' is not a "
               "duration (use e.g. 30s, 5m)");
  expect_error(MINIMAL "[limits]\nidle_timeout = 5M\n",
               "xcmd.conf:8: key 'idle_timeout' in [limits]: '5M' is not a "
               "duration (use e.g. 30s, 5m)");
  expect_error(MINIMAL "[limits]\nauth_timeout = 2h\n",
               "xcmd.conf:8: key 'auth_timeout' in [limits]: '2h' is out of "
               "range (1s to 1h)");
  expect_error(MINIMAL "[limits]\nidle_timeout = 999ms\n",
               "xcmd.conf:8: key 'idle_timeout' in [limits]: '999ms' is out "
               "of range (1s to 24d)");
  expect_error(MINIMAL "[limits]\nidle_timeout = 99999999999999999999d\n",
               "xcmd.conf:8: key 'idle_timeout' in [limits]: "
               "'99999999999999999999d' is out of range (1s to 24d)");
  expect_error(MINIMAL "[limits]\nmax_stanza = 12q\n",
               "xcmd.conf:8: key 'max_stanza' in [limits]: '12q' is not a "
               "size (use e.g. 8k, 256k, 1m)");
  expect_error(MINIMAL "[limits]\nmax_stanza = k\n",
               "xcmd.conf:8: key 'max_stanza' in [limits]: 'k' is not a size "
               "(use e.g. 8k, 256k, 1m)");
  expect_error(MINIMAL "[limits]\nmax_stanza = 1.5m\n",
               "xcmd.conf:8: key 'max_stanza' in [limits]: '1.5m' is not a "
               "size (use e.g. 8k, 256k, 1m)");
  expect_error(MINIMAL "[limits]\nmax_stanza = 128m\n",
               "xcmd.conf:8: key 'max_stanza' in [limits]: '128m' is out of "
               "range (1k to 64m)");
  expect_error(MINIMAL "[limits]\nmax_client_out = 2047\n",
               "xcmd.conf:8: key 'max_client_out' in [limits]: '2047' is out "
               "of range (4k to 1g)");
  expect_error(MINIMAL "[limits]\nrate = fast\n",
               "xcmd.conf:8: key 'rate' in [limits]: 'fast' is not a number");
  expect_error(MINIMAL "[limits]\nrate = -5\n",
               "xcmd.conf:8: key 'rate' in [limits]: '-5' is not a number");
  expect_error(MINIMAL "[limits]\nrate = 0x10\n",
               "xcmd.conf:8: key 'rate' in [limits]: '0x10' is not a number");
  expect_error(MINIMAL "[limits]\nrate = 0\n",
               "xcmd.conf:8: key 'rate' in [limits]: '0' is not a limit: "
               "write 'unlimited' to switch it off");
  expect_error(MINIMAL "[limits]\nmax_clients = 0\n",
               "xcmd.conf:8: key 'max_clients' in [limits]: '0' is not a "
               "limit: write 'unlimited' to switch it off");
  expect_error(MINIMAL "[limits]\nburst = unlimited\n",
               "xcmd.conf:8: key 'burst' in [limits]: 'unlimited' is not a "
               "number");
  expect_error(MINIMAL "[limits]\nrate_bytes = 100\n",
               "xcmd.conf:8: key 'rate_bytes' in [limits]: '100' is out of "
               "range (1k to 1g)");
  expect_error(MINIMAL "[limits]\nrate = 99999999999999999999999\n",
               "xcmd.conf:8: key 'rate' in [limits]: '99999999999999999999999'"
               " is out of range (1 to 1000000)");
  expect_error(MINIMAL "[limits]\nmax_depth = 3\n",
               "xcmd.conf:8: key 'max_depth' in [limits]: '3' is out of range "
               "(4 to 256)");
  expect_error(MINIMAL "reuseport = maybe\n",
               "xcmd.conf:7: key 'reuseport' in [listener]: 'maybe' is not a "
               "boolean (use yes or no)");
  expect_error(MINIMAL "reuseport = 1\n",
               "xcmd.conf:7: key 'reuseport' in [listener]: '1' is not a "
               "boolean (use yes or no)");
  expect_error(MINIMAL "[log]\nlevel = loud\n",
               "xcmd.conf:8: key 'level' in [log]: 'loud' is not a level (use "
               "error, warn, info or debug)");
  expect_error(MINIMAL "[log]\nlevel = INFO\n",
               "xcmd.conf:8: key 'level' in [log]: 'INFO' is not a level (use "
               "error, warn, info or debug)");
  expect_error(MINIMAL "[log]\ntarget = file\n",
               "xcmd.conf:8: key 'target' in [log]: 'file' is not a log "
               "target (use stderr or syslog)");
  expect_error("[upstream]\ntls = maybe\n",
               "xcmd.conf:2: key 'tls' in [upstream]: 'maybe' is not a TLS "
               "mode (use off, optional or required)");
  expect_error(MINIMAL "port = 70000\n",
               "xcmd.conf:7: key 'port' in [listener]: '70000' is out of range "
               "(1 to 65535)");
  expect_error(MINIMAL "port = 0\n",
               "xcmd.conf:7: key 'port' in [listener]: '0' is out of range (1 "
               "to 65535)");
  expect_error("[upstream]\nport = 65536\n",
               "xcmd.conf:2: key 'port' in [upstream]: '65536' is out of range "
               "(1 to 65535)");
  expect_error("[upstream]\nconnections = 0\n",
               "xcmd.conf:2: key 'connections' in [upstream]: '0' is out of "
               "range (1 to 64)");
  expect_error("[upstream]\nconnections = 65\n",
               "xcmd.conf:2: key 'connections' in [upstream]: '65' is out of "
               "range (1 to 64)");
  expect_error("[upstream]\nkeepalive = 500ms\n",
               "xcmd.conf:2: key 'keepalive' in [upstream]: '500ms' is out of "
               "range (1s to 1h)");
  expect_error(MINIMAL "[daemon]\nworkers = 300\n",
               "xcmd.conf:8: key 'workers' in [daemon]: '300' is out of range "
               "(0 to 256)");
  expect_error("[server]\ndomain = example.test\n[upstream]\nname = cm1\n"
               "secret = s3cret\nwait = 2m\n[listener]\n",
               "xcmd.conf:6: key 'wait' in [upstream]: '2m' is out of range "
               "(0ms to 1m)");
  expect_error(MINIMAL "[daemon]\ndrain = 2h\n",
               "xcmd.conf:8: key 'drain' in [daemon]: '2h' is out of range "
               "(0ms to 1h)");
  expect_error(MINIMAL "[daemon]\ndrain_period = 2d\n",
               "xcmd.conf:8: key 'drain_period' in [daemon]: '2d' is out of "
               "range (0ms to 1d)");
  expect_error(MINIMAL "[daemon]\ndrain_period = soon\n",
               "xcmd.conf:8: key 'drain_period' in [daemon]: 'soon' is not a "
               "duration (use e.g. 30s, 5m)");
  expect_error(MINIMAL "[daemon]\ndrain_period = 1m\ndrain_period = 2m\n",
               "xcmd.conf:9: key 'drain_period' in [daemon]: already set on "
               "line 8");
  expect_error(MINIMAL "[metrics]\nport = 99999\n",
               "xcmd.conf:8: key 'port' in [metrics]: '99999' is out of range "
               "(1 to 65535)");
  /* What a message shows of a value is bounded and printable. */
  {
    char text[512], xs[101];
    memset(xs, 'x', 100);
    xs[100] = '\0';
    snprintf(text, sizeof(text), MINIMAL "[limits]\nrate = 1%s\n", xs);
    expect_error(text, "xcmd.conf:8: key 'rate' in [limits]: "
                       "'1xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                       "xxxxxxx...' is not a number");
  }
  expect_error(MINIMAL "[limits]\nrate = 5\t\xc3\xa9\n",
               "xcmd.conf:8: key 'rate' in [limits]: '5?\xc3\xa9' is not a "
               "number");
  /* Values are bounded. */
  memset(big, 'a', sizeof(big));
  memcpy(big, MINIMAL "cert = ", strlen(MINIMAL "cert = "));
  big[sizeof(big) - 2] = '\n';
  big[sizeof(big) - 1] = '\0';
  expect_error(big, "xcmd.conf:7: key 'cert' in [listener]: value longer than "
                    "4095 bytes");
  memcpy(big, MINIMAL "cert = \"", strlen(MINIMAL "cert = \""));
  big[sizeof(big) - 3] = '"';
  expect_error(big, "xcmd.conf:7: key 'cert' in [listener]: value longer than "
                    "4095 bytes");
}

static void test_errors_syntax(void) {
  static const char nul[] = MINIMAL "host = a\0b\n";

  expect_error(MINIMAL "[bogus]\n", "xcmd.conf:7: unknown section [bogus]");
  expect_error(MINIMAL "[]\n", "xcmd.conf:7: unknown section []");
  expect_error(MINIMAL "colour = blue\n",
               "xcmd.conf:7: unknown key 'colour' in [listener]");
  expect_error(MINIMAL "Port = 1\n",
               "xcmd.conf:7: unknown key 'Port' in [listener]");
  expect_error(MINIMAL "port = 5222\nport = 5223\n",
               "xcmd.conf:8: key 'port' in [listener]: already set on line 7");
  expect_error(MINIMAL "[server]\n",
               "xcmd.conf:7: section [server] appears twice (first on line 1; "
               "only [listener] repeats)");
  expect_error(MINIMAL "[limits]\n[log]\n[limits]\n",
               "xcmd.conf:9: section [limits] appears twice (first on line 7; "
               "only [listener] repeats)");
  expect_error("domain = example.test\n[server]\n",
               "xcmd.conf:1: key 'domain' before any [section]");
  expect_error(MINIMAL "just words\n",
               "xcmd.conf:7: expected 'key = value' or '[section]'");
  expect_error(MINIMAL "= value\n",
               "xcmd.conf:7: expected 'key = value' or '[section]'");
  expect_error(MINIMAL "port 5222\n",
               "xcmd.conf:7: expected 'key = value' or '[section]'");
  expect_error(MINIMAL "[server\n",
               "xcmd.conf:7: malformed section header (use [name])");
  expect_error(MINIMAL "[server] junk\n",
               "xcmd.conf:7: malformed section header (use [name])");
  expect_error(MINIMAL "host = \"abc\n",
               "xcmd.conf:7: key 'host' in [listener]: unterminated quoted "
               "value");
  expect_error(MINIMAL "host = \"abc\\\"\n",
               "xcmd.conf:7: key 'host' in [listener]: unterminated quoted "
               "value");
  expect_error(MINIMAL "host = \"abc\" def\n",
               "xcmd.conf:7: key 'host' in [listener]: text after the closing "
               "quote");
  expect_error(MINIMAL "host = \"a\\nb\"\n",
               "xcmd.conf:7: key 'host' in [listener]: unknown escape in a "
               "quoted value (only \\\" and \\\\)");
  expect_error(MINIMAL "host = \"a\\\n",
               "xcmd.conf:7: key 'host' in [listener]: unknown escape in a "
               "quoted value (only \\\" and \\\\)");
  expect_error(MINIMAL "host =\n",
               "xcmd.conf:7: key 'host' in [listener]: no value");
  expect_error(MINIMAL "host = \"\"\n",
               "xcmd.conf:7: key 'host' in [listener]: no value");
  expect_error(MINIMAL "host = # just a comment\n",
               "xcmd.conf:7: key 'host' in [listener]: no value");
  expect_error(MINIMAL "host = a\x01"
                       "b\n",
               "xcmd.conf:7: control character (byte 0x01)");
  expect_error(MINIMAL "# a comment is no excuse \x7f\n",
               "xcmd.conf:7: control character (byte 0x7f)");
  expect_error_len(nul, sizeof(nul) - 1,
                   "xcmd.conf:7: control character (byte 0x00)");
  expect_error(MINIMAL "[so\x1b[31mred]\n",
               "xcmd.conf:7: control character (byte 0x1b)");
}

static void test_errors_cross(void) {
  expect_error(MINIMAL "cert = /etc/x.pem\n",
               "xcmd.conf:7: key 'cert' in [listener]: set without 'key'");
  expect_error(MINIMAL "port = 1\nkey = /etc/x.key\n[log]\n",
               "xcmd.conf:8: key 'key' in [listener]: set without 'cert'");
  expect_error(MINIMAL "port = 1\ndirect_tls = yes\n",
               "xcmd.conf:8: key 'direct_tls' in [listener]: needs 'cert' and "
               "'key'");
  expect_error(MINIMAL "[listener]\n",
               "xcmd.conf:7: [listener] 127.0.0.1 port 5222 is already used by "
               "the [listener] on line 6");
  expect_error(MINIMAL "host = ::\nport = 5300\n[listener]\nport = 5300\n"
                       "[listener]\nhost = ::\nport = 5300\n",
               "xcmd.conf:11: [listener] :: port 5300 is already used by the "
               "[listener] on line 6");
  expect_error("[upstream]\nname = cm1\nsecret = s\n[listener]\n",
               "xcmd.conf: key 'domain' in [server] is required");
  expect_error("[server]\ndomain = d\n[upstream]\nsecret = s\n[listener]\n",
               "xcmd.conf: key 'name' in [upstream] is required");
  expect_error("[server]\ndomain = d\n[upstream]\nname = n\n[listener]\n",
               "xcmd.conf: key 'secret' in [upstream] is required");
  expect_error("", "xcmd.conf: key 'domain' in [server] is required");
  expect_error("[server]\ndomain = d\n[upstream]\nname = n\nsecret = s\n",
               "xcmd.conf: at least one [listener] is required");
  expect_error(MINIMAL "[limits]\nmax_stanza_preauth = 512k\n",
               "xcmd.conf:8: key 'max_stanza_preauth' in [limits]: 512k is "
               "larger than max_stanza (256k)");
  expect_error(MINIMAL "[limits]\nmax_stanza = 4k\n",
               "xcmd.conf:8: key 'max_stanza' in [limits]: 4k is smaller than "
               "max_stanza_preauth (8k)");
  expect_error("[server]\ndomain = d\n[upstream]\nname = n\nsecret = s\n"
               "dead_after = 20s\n[listener]\n",
               "xcmd.conf:6: key 'dead_after' in [upstream]: 20s must be "
               "longer than keepalive (30s)");
  expect_error("[server]\ndomain = d\n[upstream]\nname = n\nsecret = s\n"
               "keepalive = 10m\n[listener]\n",
               "xcmd.conf:6: key 'keepalive' in [upstream]: 10m must be "
               "shorter than dead_after (5m)");
  expect_error(MINIMAL "[log]\nbodies = yes\n",
               "xcmd.conf:8: key 'bodies' in [log]: needs level = debug");
  expect_error(MINIMAL "[metrics]\nhost = 0.0.0.0\n",
               "xcmd.conf:8: key 'host' in [metrics]: set without 'port'");
}

#define FP_PLAIN                                                               \
  "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
#define FP_COLONS                                                              \
  "SHA256:9F:86:D0:81:88:4C:7D:65:9A:2F:EA:A0:C5:5A:D0:15:A3:BF:4F:1B:2B:0B:"  \
  "82:2C:D1:5D:6C:15:B0:F0:0A:08"
#define FP_FORM                                                                \
  " (use sha256: and 64 hex digits, with or without ':' between byte pairs, "  \
  "as 'openssl x509 -noout -fingerprint -sha256' or keytool prints it)"

/* [upstream] fingerprint: Openfire's certificate pinned, in either
 * spelling; anything else, or a pin beside what it replaces, is an error
 * on its line. */
static void test_fingerprint(void) {
  xcmd_config cfg;

  REQUIRE(xcmd_config_parse(
              "[server]\ndomain = d\n[upstream]\nname = n\n"
              "secret = s\nfingerprint = " FP_PLAIN "\n[listener]\n",
              strlen("[server]\ndomain = d\n[upstream]\nname = "
                     "n\nsecret = s\nfingerprint = " FP_PLAIN "\n[listener]\n"),
              NAME, &cfg, NULL, 0) == 0);
  CHECK_STR(cfg.opt.upstream_fingerprint, FP_PLAIN);
  xcmd_config_free(&cfg);
  REQUIRE(
      xcmd_config_parse("[server]\ndomain = d\n[upstream]\nname = n\n"
                        "secret = s\ntls = required\nfingerprint = \"" FP_COLONS
                        "\"\n[listener]\n",
                        strlen("[server]\ndomain = d\n[upstream]\nname = "
                               "n\nsecret = s\ntls = required\n"
                               "fingerprint = \"" FP_COLONS "\"\n[listener]\n"),
                        NAME, &cfg, NULL, 0) == 0);
  CHECK_STR(cfg.opt.upstream_fingerprint, FP_COLONS);
  xcmd_config_free(&cfg);

  expect_error("[server]\ndomain = d\n[upstream]\nname = n\nsecret = s\n"
               "fingerprint = 9f86d081\n[listener]\n",
               "xcmd.conf:6: key 'fingerprint' in [upstream]: '9f86d081' is "
               "not a SHA-256 fingerprint" FP_FORM);
  expect_error("[server]\ndomain = d\n[upstream]\nname = n\nsecret = s\n"
               "fingerprint = sha256:9F:86D0:81\n[listener]\n",
               "xcmd.conf:6: key 'fingerprint' in [upstream]: "
               "'sha256:9F:86D0:81' is not a SHA-256 fingerprint" FP_FORM);
  expect_error("[server]\ndomain = d\n[upstream]\nname = n\nsecret = s\n"
               "fingerprint = " FP_PLAIN "0\n[listener]\n",
               "xcmd.conf:6: key 'fingerprint' in [upstream]: '" FP_PLAIN
               "0' is not a SHA-256 fingerprint" FP_FORM);
  expect_error("[server]\ndomain = d\n[upstream]\nname = n\nsecret = s\n"
               "fingerprint = " FP_PLAIN "\naccept_self_signed = yes\n"
               "[listener]\n",
               "xcmd.conf:6: key 'fingerprint' in [upstream]: cannot be set "
               "with accept_self_signed = yes (a pin trusts one certificate; "
               "accept_self_signed any): set one of them");
  expect_error("[server]\ndomain = d\n[upstream]\nname = n\nsecret = s\n"
               "ca_file = /etc/ca.pem\nfingerprint = " FP_PLAIN
               "\n[listener]\n",
               "xcmd.conf:7: key 'fingerprint' in [upstream]: cannot be set "
               "with ca_file (the pin replaces the CA): set one of them");
  expect_error("[server]\ndomain = d\n[upstream]\nname = n\nsecret = s\n"
               "tls = off\nfingerprint = " FP_PLAIN "\n[listener]\n",
               "xcmd.conf:7: key 'fingerprint' in [upstream]: needs TLS, and "
               "tls is off (with a fingerprint, TLS is required)");
}

static void test_example_file(void) {
  const char *path = XCMD_SOURCE_ROOT "/doc/xcmd.conf.example";
  xcmd_config cfg;
  const xcm_options *o = &cfg.opt;
  char err[512];
  int rc;

  rc = xcmd_config_load(path, &cfg, err, sizeof(err));
  if (!CHECK_INT(rc, 0)) {
    xcm_test_note("%s", err);
    return;
  }
  CHECK_INT(cfg.from_manager_xml, 0);
  CHECK_STR(o->domain, "example.com");
  CHECK_STR(o->server_host, "openfire.internal.example.com");
  CHECK_STR(o->name, "cm-fra-1");
  CHECK_STR(o->secret, "change me: a long random string");
  CHECK_INT(o->upstream_tls, XCM_UPSTREAM_TLS_REQUIRED);
  CHECK_STR(o->upstream_ca_file, "/etc/xcmd/openfire-ca.pem");
  CHECK_INT(o->max_stanza, 262144);
  CHECK_INT(o->rate, 200);
  CHECK_INT(o->max_clients, 50000);
  CHECK_INT(o->max_per_address, 200);
  REQUIRE(cfg.nlisteners == 4);
  CHECK_STR(cfg.listeners[0].host, "::");
  CHECK_INT(cfg.listeners[0].port, 5222);
  CHECK_INT(cfg.listeners[1].direct_tls, 1);
  CHECK_INT(cfg.listeners[1].port, 5223);
  CHECK_STR(cfg.listeners[1].key_file, "/etc/xcmd/tls/example.com.key");
  CHECK_INT(cfg.listeners[2].http, 1);
  CHECK_INT(cfg.listeners[2].port, 5281);
  CHECK_STR(cfg.listeners[2].http_origins, "https://chat.example.com");
  CHECK_STR(cfg.listeners[3].host, "127.0.0.1");
  CHECK_INT(cfg.listeners[3].port, 15222);
  CHECK_INT(cfg.log_target, XCMD_LOG_SYSLOG);
  CHECK_INT(cfg.metrics_port, 9322);
  CHECK_STR(cfg.pid_file, "/run/xcmd/xcmd.pid");
  CHECK_STR(cfg.user, "xcmd");
  CHECK_INT(cfg.drain_ms, 5000);
  xcmd_config_free(&cfg);
}

/* text must fail with XCMD_EPLACEHOLDER and exactly want. Not counted in
 * the hardening table: these are the package's own file, not attacks. */
static void expect_placeholder(const char *text, const char *want) {
  xcmd_config cfg;
  char err[1024];
  int rc;

  memset(err, 'x', sizeof(err));
  rc = xcmd_config_parse(text, strlen(text), NAME, &cfg, err, sizeof(err));
  if (!CHECK_INT(rc, XCMD_EPLACEHOLDER))
    xcm_test_note("for: %s", text);
  if (!CHECK_STR(err, want))
    xcm_test_note("for: %s", text);
  CHECK(cfg.opt.domain == NULL && cfg.nlisteners == 0 && cfg.owned_ == NULL);
  xcmd_config_free(&cfg);
}

/* The file the package installs as /etc/xcmd/xcmd.conf is valid but for
 * its CHANGE-ME values, and the refusal names each of them; filled in, it
 * loads. */
static void test_package_file(void) {
  const char *path = XCMD_SOURCE_ROOT "/debian/xcmd.conf";
  xcmd_config cfg;
  char err[1024], *text, *p;
  size_t len;
  int rc;

  rc = xcmd_config_load(path, &cfg, err, sizeof(err));
  CHECK_INT(rc, XCMD_EPLACEHOLDER);
  CHECK_STR(err, XCMD_SOURCE_ROOT
            "/debian/xcmd.conf: [server] domain, [upstream] host, "
            "[upstream] name and [upstream] secret are still the "
            "placeholders from the package (CHANGE-ME): set them to your "
            "XMPP domain, your Openfire's address, a name for this CM that "
            "no other CM of your Openfire uses and your Openfire's "
            "connection-manager secret (xmpp.multiplex.defaultSecret)");
  CHECK(cfg.opt.domain == NULL && cfg.owned_ == NULL);

  text = read_all(path, &len);
  REQUIRE(text != NULL);
  /* Same length, so the rest of the file stays as it is. */
  while ((p = strstr(text, "= CHANGE-ME")) != NULL)
    memcpy(p, "= value-set", 11);
  rc = xcmd_config_parse(text, len, NAME, &cfg, err, sizeof(err));
  if (CHECK_INT(rc, 0)) {
    CHECK_STR(cfg.opt.domain, "value-set");
    CHECK_STR(cfg.opt.server_host, "value-set");
    CHECK_STR(cfg.opt.name, "value-set");
    CHECK_STR(cfg.opt.secret, "value-set");
    CHECK_INT(cfg.opt.server_port, 5262);
    CHECK_INT(cfg.nlisteners, 1);
    CHECK_STR(cfg.listeners[0].host, "::");
    /* systemd runs it as _xcmd: no privilege drop, no pid file. */
    CHECK(cfg.user == NULL && cfg.group == NULL && cfg.pid_file == NULL);
    CHECK_INT(cfg.log_target, XCMD_LOG_STDERR);
    xcmd_config_free(&cfg);
  } else {
    xcm_test_note("%s", err);
  }
  free(text);
}

static void test_placeholders(void) {
  xcmd_config cfg;
  char err[512];

  /* One key: singular. */
  expect_placeholder("[server]\ndomain = example.test\n[upstream]\n"
                     "name = cm1\nsecret = CHANGE-ME\n[listener]\n",
                     "xcmd.conf: [upstream] secret is still the placeholder "
                     "from the package (CHANGE-ME): set it to your Openfire's "
                     "connection-manager secret "
                     "(xmpp.multiplex.defaultSecret)");
  /* Two, in the order of the file; quoted counts the same. */
  expect_placeholder("[upstream]\nsecret = \"CHANGE-ME\"\nname = cm1\n"
                     "host = CHANGE-ME # Openfire\n[server]\n"
                     "domain = example.test\n[listener]\n",
                     "xcmd.conf: [upstream] secret and [upstream] host are "
                     "still the placeholders from the package (CHANGE-ME): "
                     "set them to your Openfire's connection-manager secret "
                     "(xmpp.multiplex.defaultSecret) and your Openfire's "
                     "address");
  /* Any string key; a [listener] key is named once however many
   * listeners carry it. */
  expect_placeholder(MINIMAL "cert = CHANGE-ME\nkey = /k\n[listener]\n"
                             "port = 5223\ncert = CHANGE-ME\nkey = /k\n",
                     "xcmd.conf: [listener] cert is still the placeholder "
                     "from the package (CHANGE-ME): set it to your value for "
                     "[listener] cert");
  /* Only the exact word. */
  REQUIRE(parse_ok("[daemon]\nuser = change-me\ngroup = CHANGE-ME-2\n", &cfg) ==
          0);
  CHECK_STR(cfg.user, "change-me");
  xcmd_config_free(&cfg);
  /* A real error comes first: a placeholder means "valid but for". */
  memset(err, 0, sizeof(err));
  CHECK_INT(parse("[server]\ndomain = CHANGE-ME\n[upstream]\nname = cm1\n"
                  "secret = s\n",
                  &cfg, err, sizeof(err)),
            XCM_ECONFIG);
  CHECK_STR(err, "xcmd.conf: at least one [listener] is required");
  xcmd_config_free(&cfg);
  /* Not a string key: the usual error. */
  memset(err, 0, sizeof(err));
  CHECK_INT(parse(MINIMAL "port = CHANGE-ME\n", &cfg, err, sizeof(err)),
            XCM_ECONFIG);
  CHECK_STR(err, "xcmd.conf:7: key 'port' in [listener]: 'CHANGE-ME' is not a "
                 "number");
  xcmd_config_free(&cfg);
}

static void test_load_errors(void) {
  xcmd_config cfg;
  char err[512];

  CHECK_INT(xcmd_config_load("/nonexistent/xcmd.conf", &cfg, err, sizeof(err)),
            -ENOENT);
  CHECK_STR(err, "/nonexistent/xcmd.conf: No such file or directory");
  CHECK(cfg.opt.domain == NULL);
  CHECK_INT(xcmd_config_load(XCMD_SOURCE_ROOT "/doc", &cfg, err, sizeof(err)),
            -EISDIR);
  CHECK_STR(err, XCMD_SOURCE_ROOT "/doc: Is a directory");
  xcmd_config_free(&cfg);
  /* A NULL message buffer is allowed. */
  CHECK_INT(parse("[nope]\n", &cfg, NULL, 0), XCM_ECONFIG);
  /* A short one gets a truncated message. */
  CHECK_INT(parse("[nope]\n", &cfg, err, 10), XCM_ECONFIG);
  CHECK_STR(err, "xcmd.conf");
}

static const char *const manager_xml_warnings[] = {
    "manager.xml:15: xmpp.manager.incoming.threads: not translated: xcmd has "
    "no thread pools; each worker thread runs one event loop (workers in "
    "[daemon])",
    "manager.xml:23: xmpp.server.certificate.verify.root: not translated: "
    "xcmd checks all of Openfire's certificate or none of it; verification "
    "stays on",
    "manager.xml:44: xmpp.socket.ssl.keystore: a Java keystore cannot be "
    "read; the listeners take the PEM certificate and key given with --cert "
    "and --key",
    "manager.xml:46: xmpp.socket.ssl.truststore: a Java keystore cannot be "
    "read; to verify Openfire's certificate give its CA as PEM (ca_file in "
    "[upstream] of an xcmd.conf) or pin it "
    "(xmpp.server.certificate.fingerprint)",
    "manager.xml:58: xmpp.socket.tcp-nodelay: not translated: xcmd does not "
    "set TCP_NODELAY itself",
    "manager.xml:74: xmpp.httpbind.scriptSyntax.enabled: not translated: the "
    "HTTP listeners "
    "keep xcmd's defaults (http_* keys of [listener] in an xcmd.conf)",
    "manager.xml:85: xmpp.audit.active: unknown property, ignored",
};

static void test_manager_xml(void) {
  const char *path = XCMD_SOURCE_ROOT "/tests/data/manager.xml";
  const unsigned nwant =
      sizeof(manager_xml_warnings) / sizeof(manager_xml_warnings[0]);
  xcmd_config cfg;
  const xcm_options *o = &cfg.opt;
  char err[512], *text;
  size_t len;
  unsigned i;
  int rc;

  text = read_all(path, &len);
  REQUIRE(text != NULL);
  rc = xcmd_config_parse_manager_xml(text, len, "manager.xml", &cfg, err,
                                     sizeof(err));
  free(text);
  if (!CHECK_INT(rc, 0)) {
    xcm_test_note("%s", err);
    return;
  }
  CHECK_INT(cfg.from_manager_xml, 1);
  CHECK_STR(o->domain, "example.test");
  CHECK_STR(o->server_host, "openfire.internal.example.test");
  CHECK_INT(o->server_port, 5262);
  CHECK_STR(o->secret, "s3cret-shared");
  CHECK_STR(o->name, "cm-berlin");
  CHECK_INT(o->connections, 3);
  CHECK_INT(o->upstream_tls, XCM_UPSTREAM_TLS_OPTIONAL);
  CHECK_INT(o->upstream_accept_self_signed, 0);
  CHECK_INT(o->upstream_zlib, 1);
  CHECK_INT(o->idle_timeout_ms, 900000);
  CHECK_INT(cfg.workers, 4);
  CHECK_INT(cfg.log_level, XCM_LOG_DEBUG);
  CHECK_INT(o->log_level, XCM_LOG_DEBUG);
  REQUIRE(cfg.nlisteners == 4);
  CHECK_STR(cfg.listeners[0].host, "192.0.2.10");
  CHECK_INT(cfg.listeners[0].port, 5222);
  CHECK_INT(cfg.listeners[0].direct_tls, 0);
  CHECK_STR(cfg.listeners[1].host, "192.0.2.10");
  CHECK_INT(cfg.listeners[1].port, 5223);
  CHECK_INT(cfg.listeners[1].direct_tls, 1);
  /* xmpp.httpbind: plain HTTP on 7070, HTTPS (--cert) on 7443. */
  CHECK_STR(cfg.listeners[2].host, "192.0.2.10");
  CHECK_INT(cfg.listeners[2].port, 7070);
  CHECK_INT(cfg.listeners[2].http, 1);
  CHECK_INT(cfg.listeners[3].port, 7443);
  CHECK_INT(cfg.listeners[3].http, 1);
  CHECK_INT(cfg.listeners[3].direct_tls, 0);
  /* The BOSH settings that map, on both. */
  for (i = 2; i < 4; i++) {
    CHECK_INT(cfg.listeners[i].bosh_polling, 5);
    CHECK_INT(cfg.listeners[i].bosh_requests, 2);
    CHECK_INT(cfg.listeners[i].bosh_inactivity, 30);
  }
  CHECK_INT(cfg.cert_wanted, 1 | 2 | 8);
  CHECK(cfg.listeners[1].cert_file == NULL);

  CHECK_INT(cfg.nwarnings, nwant);
  for (i = 0; i < cfg.nwarnings && i < nwant; i++)
    CHECK_STR(cfg.warnings[i], manager_xml_warnings[i]);
  for (i = 0; i < cfg.nwarnings; i++)
    if (strstr(cfg.warnings[i], "changeit") != NULL ||
        strstr(cfg.warnings[i], "s3cret") != NULL)
      CHECK(!"a warning shows a password");

  CHECK_INT(xcmd_config_set_cert(&cfg, NULL, "/k.pem"), XCM_EINVAL);
  CHECK_INT(xcmd_config_set_cert(&cfg, "/c.pem", ""), XCM_EINVAL);
  CHECK_INT(xcmd_config_set_cert(&cfg, "/c.pem", "/k.pem"), 3);
  CHECK_STR(cfg.listeners[0].cert_file, "/c.pem");
  CHECK_STR(cfg.listeners[0].key_file, "/k.pem");
  CHECK_STR(cfg.listeners[1].cert_file, "/c.pem");
  CHECK_STR(cfg.listeners[1].key_file, "/k.pem");
  /* The plain HTTP port stays plain; the secure one is HTTPS. */
  CHECK(cfg.listeners[2].cert_file == NULL);
  CHECK_STR(cfg.listeners[3].cert_file, "/c.pem");
  xcmd_config_free(&cfg);

  /* The load function tells the formats apart by the first character. */
  rc = xcmd_config_load(path, &cfg, err, sizeof(err));
  if (!CHECK_INT(rc, 0))
    xcm_test_note("%s", err);
  CHECK_INT(cfg.from_manager_xml, 1);
  CHECK_INT(cfg.nwarnings, nwant);
  if (cfg.nwarnings > 0)
    CHECK(strncmp(cfg.warnings[0], path, strlen(path)) == 0);
  xcmd_config_free(&cfg);
}

static int xml(const char *text, xcmd_config *cfg, char *err) {
  return xcmd_config_parse_manager_xml(text, strlen(text), "manager.xml", cfg,
                                       err, 512);
}

#define XML_REQUIRED                                                           \
  "<domain>example.test</domain><password>pw</password>"                       \
  "<manager><name>cm1</name></manager>"

/* The file the Java CM shipped, filled in: only what cannot be carried
 * over is warned about, and its defaults come across. */
static void test_manager_xml_stock(void) {
  const char *text =
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<!-- comment -->\n"
      "<jive>\n"
      "  <xmpp>\n"
      "    <domain> example.test </domain>\n"
      "    <port>5262</port>\n"
      "    <password>pw</password>\n"
      "    <manager><name>cm1</name><connections>1</connections>\n"
      "      <incoming><threads>5</threads></incoming></manager>\n"
      "    <server><certificate><verify>true</verify>\n"
      "      <verify><chain>true</chain><root>true</root>\n"
      "        <validity>true</validity></verify>\n"
      "      <accept-selfsigned>false</accept-selfsigned>\n"
      "    </certificate></server>\n"
      "    <client><idle>1800000</idle></client>\n"
      "    <socket>\n"
      "      <default><active>true</active><port>5222</port></default>\n"
      "      <ssl><active>true</active><port>5223</port>\n"
      "        <storeType>jks</storeType></ssl>\n"
      "      <backlog>50</backlog>\n"
      "      <buffer><receive>-1</receive><send>-1</send></buffer>\n"
      "      <linger>-1</linger>\n"
      "    </socket>\n"
      "    <httpbind><enabled>false</enabled>\n"
      "      <port><plain>7070</plain><secure>7443</secure></port>\n"
      "    </httpbind>\n"
      "  </xmpp>\n"
      "  <log><debug><enabled>false</enabled></debug></log>\n"
      "</jive>\n";
  xcmd_config cfg;
  char err[512];

  if (!CHECK_INT(xml(text, &cfg, err), 0)) {
    xcm_test_note("%s", err);
    return;
  }
  CHECK_STR(cfg.opt.domain, "example.test");
  CHECK_STR(cfg.opt.server_host, "example.test");
  CHECK_INT(cfg.opt.connections, 1);
  CHECK_INT(cfg.opt.idle_timeout_ms, 1800000);
  CHECK_INT(cfg.opt.upstream_zlib, 0);
  CHECK_INT(cfg.log_level, XCM_LOG_INFO);
  CHECK_INT(cfg.workers, 0);
  REQUIRE(cfg.nlisteners == 2);
  CHECK_STR(cfg.listeners[0].host, "::");
  CHECK_INT(cfg.listeners[0].port, 5222);
  CHECK_STR(cfg.listeners[1].host, "::");
  CHECK_INT(cfg.listeners[1].port, 5223);
  REQUIRE(cfg.nwarnings == 3);
  CHECK_STR(cfg.warnings[0],
            "manager.xml: xmpp.hostname is not set: the Java CM looked up "
            "the domain's DNS SRV records; xcmd connects to 'example.test' "
            "itself");
  CHECK_STR(cfg.warnings[1],
            "manager.xml: xmpp.socket.ssl.keystore: a Java keystore cannot be "
            "read; the listeners take the PEM certificate and key given with "
            "--cert and --key");
  CHECK_STR(cfg.warnings[2],
            "manager.xml: xmpp.socket.ssl.truststore: a Java keystore cannot "
            "be read; to verify Openfire's certificate give its CA as PEM "
            "(ca_file in [upstream] of an xcmd.conf) or pin it "
            "(xmpp.server.certificate.fingerprint)");
  xcmd_config_free(&cfg);

  /* The least a Java CM ran with. */
  REQUIRE(xml("<jive><xmpp>" XML_REQUIRED "</xmpp></jive>", &cfg, err) == 0);
  CHECK_INT(cfg.opt.server_port, 5262);
  CHECK_INT(cfg.opt.connections, 5);
  CHECK_INT(cfg.opt.idle_timeout_ms, 1800000);
  CHECK_INT(cfg.nlisteners, 2);
  CHECK_INT(cfg.nwarnings, 3);
  xcmd_config_free(&cfg);
}

static void test_manager_xml_variants(void) {
  xcmd_config cfg;
  char err[512];

  /* Verification off: no trust to carry over, no truststore warning. */
  REQUIRE(xml("<jive><xmpp>" XML_REQUIRED "<hostname>of</hostname>"
              "<server><certificate><verify>false</verify><verify><root>false"
              "</root></verify></certificate></server></xmpp></jive>",
              &cfg, err) == 0);
  CHECK_INT(cfg.opt.upstream_accept_self_signed, 1);
  REQUIRE(cfg.nwarnings == 1);
  CHECK_STR(cfg.warnings[0],
            "manager.xml: xmpp.socket.ssl.keystore: a Java keystore cannot be "
            "read; the listeners take the PEM certificate and key given with "
            "--cert and --key");
  xcmd_config_free(&cfg);

  /* accept-selfsigned turns into more than it was. */
  REQUIRE(xml("<jive><xmpp>" XML_REQUIRED "<hostname>of</hostname>\n"
              "<server><certificate><accept-selfsigned>TRUE</accept-selfsigned>"
              "</certificate></server></xmpp></jive>",
              &cfg, err) == 0);
  CHECK_INT(cfg.opt.upstream_accept_self_signed, 1);
  REQUIRE(cfg.nwarnings == 2);
  CHECK_STR(cfg.warnings[1],
            "manager.xml:2: xmpp.server.certificate.accept-selfsigned: xcmd "
            "cannot accept only self-signed certificates; it skips verifying "
            "Openfire's certificate altogether");
  xcmd_config_free(&cfg);

  /* The older port name wins; no idle limit becomes the longest. */
  REQUIRE(xml("<jive><xmpp>" XML_REQUIRED "<hostname>of</hostname>\n"
              "<socket><plain><port>5300</port></plain>\n"
              "<default><port>5222</port></default>\n"
              "<ssl><active>false</active></ssl></socket>\n"
              "<client><idle>-1</idle></client>\n"
              "<port>5262</port>\n"
              "<port>5999</port>\n"
              "</xmpp></jive>",
              &cfg, err) == 0);
  REQUIRE(cfg.nlisteners == 1);
  CHECK_INT(cfg.listeners[0].port, 5300);
  CHECK_INT(cfg.listeners[0].direct_tls, 0);
  CHECK_INT(cfg.cert_wanted, 1);
  CHECK_INT(cfg.opt.idle_timeout_ms, 2073600000u);
  CHECK_INT(cfg.opt.server_port, 5262);
  REQUIRE(cfg.nwarnings == 5);
  CHECK_STR(cfg.warnings[2],
            "manager.xml:3: xmpp.socket.default.port: ignored: "
            "xmpp.socket.plain.port is set and wins, as in the Java CM");
  CHECK_STR(cfg.warnings[3], "manager.xml:5: xmpp.client.idle: -1 meant no "
                             "idle limit; xcmd closes clients idle for 24d");
  CHECK_STR(cfg.warnings[4],
            "manager.xml:7: xmpp.port: set again (first on line 6); the first "
            "value is used, as the Java CM did");
  xcmd_config_free(&cfg);

  /* Only the direct TLS port, and a processor count. */
  REQUIRE(xml("<jive><xmpp>" XML_REQUIRED "<hostname>of</hostname>"
              "<socket><default><active>false</active></default></socket>"
              "<processor><count>2</count></processor>"
              "<server><compression><policy>disabled</policy></compression>"
              "</server><setup>true</setup></xmpp><setup>true</setup></jive>",
              &cfg, err) == 0);
  REQUIRE(cfg.nlisteners == 1);
  CHECK_INT(cfg.listeners[0].port, 5223);
  CHECK_INT(cfg.listeners[0].direct_tls, 1);
  CHECK_INT(cfg.workers, 2);
  CHECK_INT(cfg.opt.upstream_zlib, 0);
  /* <jive><setup> is the Java CM's own; <xmpp><setup> is not known. */
  REQUIRE(cfg.nwarnings == 3);
  CHECK_STR(cfg.warnings[2],
            "manager.xml:1: xmpp.setup: unknown property, ignored");
  xcmd_config_free(&cfg);
}

static void expect_xml_error(const char *text, const char *want) {
  unsigned before = xcm_test_failures();
  xcmd_config cfg;
  char err[512];

  if (!CHECK_INT(xml(text, &cfg, err), XCM_ECONFIG))
    xcm_test_note("for: %s", text);
  if (!CHECK_STR(err, want))
    xcm_test_note("for: %s", text);
  CHECK(cfg.opt.domain == NULL && cfg.nwarnings == 0 && cfg.owned_ == NULL);
  xcmd_config_free(&cfg);
  xcm_test_tried("bad-configs", before);
}

static void test_manager_xml_errors(void) {
  char deep[1024], longname[1024];
  int i, n;

  expect_xml_error("<?xml version=\"1.0\"?>\n<!DOCTYPE jive [\n"
                   "<!ENTITY a \"aaaaaaaaaa\">]>\n<jive/>",
                   "manager.xml:2: doctype declarations are not accepted");
  expect_xml_error("<config><domain>x</domain></config>",
                   "manager.xml:1: the root element is <config>, not <jive>: "
                   "not a manager.xml");
  expect_xml_error("<jive><xmpp><domain>x</xmpp></jive>",
                   "manager.xml:1: not well-formed XML: mismatched tag");
  expect_xml_error("<jive>\n<xmpp>&bogus;</xmpp></jive>",
                   "manager.xml:2: not well-formed XML: undefined entity");
  expect_xml_error("", "manager.xml:1: not well-formed XML: no element found");
  expect_xml_error("<jive><xmpp><password>p</password>"
                   "<manager><name>n</name></manager></xmpp></jive>",
                   "manager.xml: xmpp.domain is not set "
                   "(<jive><xmpp><domain>)");
  expect_xml_error("<jive><xmpp><domain></domain></xmpp></jive>",
                   "manager.xml: xmpp.domain is not set "
                   "(<jive><xmpp><domain>)");
  expect_xml_error("<jive><xmpp><domain>d</domain>"
                   "<manager><name>n</name></manager></xmpp></jive>",
                   "manager.xml: xmpp.password is not set "
                   "(<jive><xmpp><password>)");
  expect_xml_error("<jive><xmpp><domain>d</domain><password>p</password>"
                   "</xmpp></jive>",
                   "manager.xml: xmpp.manager.name is not set "
                   "(<jive><xmpp><manager><name>): the Java CM made up a "
                   "random name at every start; xcmd needs a fixed one");
  expect_xml_error("<jive><xmpp>" XML_REQUIRED "\n<port>abc</port>"
                   "</xmpp></jive>",
                   "manager.xml:2: xmpp.port: 'abc' is not a number");
  expect_xml_error("<jive><xmpp>" XML_REQUIRED "\n<port>70000</port>"
                   "</xmpp></jive>",
                   "manager.xml:2: xmpp.port: '70000' is out of range (1 to "
                   "65535)");
  expect_xml_error("<jive><xmpp>" XML_REQUIRED
                   "<manager><connections>0</connections></manager>"
                   "</xmpp></jive>",
                   "manager.xml:1: xmpp.manager.connections: '0' is out of "
                   "range (1 to 64)");
  expect_xml_error("<jive><xmpp>" XML_REQUIRED
                   "<socket><ssl><active>yes</active></ssl></socket>"
                   "</xmpp></jive>",
                   "manager.xml:1: xmpp.socket.ssl.active: 'yes' is not true "
                   "or false");
  expect_xml_error("<jive><xmpp>" XML_REQUIRED
                   "<server><compression><policy>zlib</policy></compression>"
                   "</server></xmpp></jive>",
                   "manager.xml:1: xmpp.server.compression.policy: 'zlib' is "
                   "not optional or disabled");
  expect_xml_error("<jive><xmpp>" XML_REQUIRED
                   "<socket>\n<ssl><port>5222</port></ssl></socket>"
                   "</xmpp></jive>",
                   "manager.xml:2: xmpp.socket.ssl.port: port 5222 is the "
                   "plain port too");
  expect_xml_error("<jive><xmpp>" XML_REQUIRED
                   "<socket><ssl><active>false</active></ssl>"
                   "<default><active>false</active></default></socket>"
                   "</xmpp></jive>",
                   "manager.xml: no client listener: xmpp.socket.default."
                   "active and xmpp.socket.ssl.active are both false");
  n = snprintf(deep, sizeof(deep), "<jive>");
  for (i = 0; i < 16; i++)
    n += snprintf(deep + n, sizeof(deep) - (size_t)n, "<a>");
  expect_xml_error(deep, "manager.xml:1: elements nest deeper than 16");
  n = snprintf(longname, sizeof(longname), "<jive><");
  for (i = 0; i < 256; i++)
    longname[n++] = 'x';
  snprintf(longname + n, sizeof(longname) - (size_t)n, ">1</x></jive>");
  expect_xml_error(longname,
                   "manager.xml:1: property name longer than 255 bytes");
}

/* manager.xml carries the pin as xcmd's own property beside the Java
 * CM's xmpp.server.certificate.* ones. */
static void test_manager_xml_fingerprint(void) {
  xcmd_config cfg;
  char err[512];
  unsigned i;

  REQUIRE(xml("<jive><xmpp>" XML_REQUIRED "<hostname>of</hostname>"
              "<server><certificate><fingerprint>" FP_COLONS
              "</fingerprint></certificate></server></xmpp></jive>",
              &cfg, err) == 0);
  CHECK_STR(cfg.opt.upstream_fingerprint, FP_COLONS);
  CHECK_INT(cfg.opt.upstream_accept_self_signed, 0);
  /* No truststore warning: the pin is the trust. */
  for (i = 0; i < cfg.nwarnings; i++)
    CHECK(strstr(cfg.warnings[i], "truststore") == NULL);
  xcmd_config_free(&cfg);
  expect_xml_error("<jive><xmpp>" XML_REQUIRED "<hostname>of</hostname>\n"
                   "<server><certificate><fingerprint>sha256:abc"
                   "</fingerprint></certificate></server></xmpp></jive>",
                   "manager.xml:2: xmpp.server.certificate.fingerprint: "
                   "'sha256:abc' is not a SHA-256 fingerprint" FP_FORM);
  expect_xml_error(
      "<jive><xmpp>" XML_REQUIRED "<hostname>of</hostname>\n"
      "<server><certificate><verify>false</verify><fingerprint>" FP_PLAIN
      "</fingerprint></certificate></server></xmpp>"
      "</jive>",
      "manager.xml:2: xmpp.server.certificate.fingerprint: cannot "
      "be set while verification is off (verify false or "
      "accept-selfsigned true): a pin trusts one certificate");
}

static const xcm_test tests[] = {
    {"defaults", test_defaults},
    {"sizes", test_sizes},
    {"durations", test_durations},
    {"booleans", test_booleans},
    {"proxy_protocol", test_proxy_protocol},
    {"proxy_trusted", test_proxy_trusted},
    {"servers", test_servers},
    {"words", test_words},
    {"every_key", test_every_key},
    {"unlimited", test_unlimited},
    {"stream_management", test_stream_management},
    {"csi", test_csi},
    {"quoting", test_quoting},
    {"comments", test_comments},
    {"crlf", test_crlf},
    {"listeners", test_listeners},
    {"http_listeners", test_http_listeners},
    {"max_listeners", test_max_listeners},
    {"errors_values", test_errors_values},
    {"errors_syntax", test_errors_syntax},
    {"errors_cross", test_errors_cross},
    {"example_file", test_example_file},
    {"package_file", test_package_file},
    {"placeholders", test_placeholders},
    {"load_errors", test_load_errors},
    {"fingerprint", test_fingerprint},
    {"manager_xml_fingerprint", test_manager_xml_fingerprint},
    {"manager_xml", test_manager_xml},
    {"manager_xml_stock", test_manager_xml_stock},
    {"manager_xml_variants", test_manager_xml_variants},
    {"manager_xml_errors", test_manager_xml_errors},
};

int main(int argc, char **argv) {
  return xcm_test_main(argc, argv, XCM_TESTS(tests));
}
