/* PROXY protocol listeners over loopback (issue 16): a raw client plays
 * the load balancer, sends a v1 or v2 header and logs in; the session's
 * peer is the address in the header, the per-address limit counts that
 * address and not the socket's, and a connection without a valid header
 * is closed before a byte of XMPP. Headers are taken only from the
 * listener's proxy_trusted: a stranger is closed before its first byte
 * is read, however good its header. */
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "harness.h"
#include "rawclient.h"
#include "util/buf.h"
#include "world.h"
#include "xcm/xcm.h"

typedef xcm_test_world world;
typedef xcm_raw raw;

/* What the session events said, for the last session opened. */
typedef struct seen {
  char peer[64];
  char sid[64];
  unsigned opened;
} seen;

static seen last;
static int proxy_port, proxy_tls_port, strict_port;

static void on_session(void *ud, xcm_session_event ev,
                       const xcm_session_info *info) {
  (void)ud;
  if (ev != XCM_SESSION_OPENED)
    return;
  snprintf(last.peer, sizeof last.peer, "%s", info->peer);
  snprintf(last.sid, sizeof last.sid, "%s", info->sid);
  last.opened++;
}

/* The CM's log lines about PROXY headers, the last one kept. */
static char proxy_line[256];
static char untrusted_line[256];

static void on_log(void *ud, int level, const char *msg) {
  (void)ud;
  (void)level;
  if (strncmp(msg, "PROXY", 5) == 0)
    snprintf(proxy_line, sizeof proxy_line, "%s", msg);
  if (strstr(msg, "not a trusted PROXY source") != NULL)
    snprintf(untrusted_line, sizeof untrusted_line, "%s", msg);
}

/* Short only for the test that waits for it: elsewhere a loaded machine
 * must not turn a slow login into a timeout. */
static unsigned header_timeout_ms = 30000;

static void tune(xcm_options *o, void *ud) {
  (void)ud;
  o->log = on_log;
  o->log_level = XCM_LOG_DEBUG;
  o->max_per_address = 2;
  o->header_timeout_ms = header_timeout_ms;
}

static void hooks(xcm_cm *cm, void *ud) {
  (void)ud;
  xcm_cm_set_session_events(cm, on_session, NULL);
}

/* The world's own plain listener, and three that require the header:
 * one plain (listener 1) and one direct TLS (listener 2) trusting
 * 127.0.0.1, and one plain (listener 3) trusting only 127.0.0.2. */
static void world_start(world *w) {
  xcm_test_world_setup s = {.seed = 7, .tune = tune, .hooks = hooks};
  xcm_listen_options lo;
  char err[256];

  memset(&last, 0, sizeof last);
  xcm_test_world_start(w, &s);
  xcm_listen_options_init(&lo, sizeof lo);
  lo.host = "127.0.0.1";
  lo.proxy_protocol = 1;
  lo.proxy_trusted = "192.0.2.0/24, 127.0.0.1";
  REQUIRE(xcm_cm_listen(w->cm, &lo, err, sizeof err) == 0);
  proxy_port = xcm_cm_listener_port(w->cm, 1);
  lo.cert_file = xcm_test_cert("server.pem");
  lo.key_file = xcm_test_cert("server-key.pem");
  lo.direct_tls = 1;
  REQUIRE(xcm_cm_listen(w->cm, &lo, err, sizeof err) == 0);
  proxy_tls_port = xcm_cm_listener_port(w->cm, 2);
  xcm_listen_options_init(&lo, sizeof lo);
  lo.proxy_protocol = 1;
  lo.proxy_trusted = "::1, 127.0.0.2";
  REQUIRE(xcm_cm_listen(w->cm, &lo, err, sizeof err) == 0);
  strict_port = xcm_cm_listener_port(w->cm, 3);
}

static void world_stop(world *w) {
  xcm_test_world_stop(w, 1000);
}

static void raw_open(world *w, raw *r, int port) {
  REQUIRE(xcm_raw_open(r, &w->loop, "127.0.0.1", port, 1));
}

/* Each login binds a resource of its own, so none replaces another. */
static int login(raw *r) {
  static unsigned n;
  char res[16];

  snprintf(res, sizeof res, "px%u", n++);
  return xcm_raw_login(r, XCM_RAW_HDR, XCM_RAW_AUTH_ALICE, res);
}

static xcm_stats stats(world *w) {
  xcm_stats st;

  xcm_cm_stats(w->cm, &st, sizeof st);
  return st;
}

/* A v2 header: PROXY over TCP, IPv4 or IPv6, with a NOOP TLV. */
static size_t v2_header(unsigned char *out, int cmd, const unsigned char *a,
                        size_t alen) {
  static const unsigned char sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                        0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
  size_t n = alen + 4;

  memcpy(out, sig, 12);
  out[12] = (unsigned char)(0x20 | cmd);
  out[13] = alen == 12 ? 0x11 : alen == 36 ? 0x21 : 0x00;
  out[14] = 0;
  out[15] = (unsigned char)n;
  if (alen > 0)
    memcpy(out + 16, a, alen);
  memcpy(out + 16 + alen, "\x04\x00\x01\x00", 4); /* PP2_TYPE_NOOP */
  return 16 + n;
}

static const unsigned char v6_block[36] = {
    0x20, 0x01, 0x0d, 0xb8, 0,    0,    0,    0,    0,    0,    0,    0,
    0,    0,    0,    0x42, 0x20, 0x01, 0x0d, 0xb8, 0,    0,    0,    0,
    0,    0,    0,    0,    0,    0,    0,    1,    0x9C, 0x40, 0x14, 0x66};
static const unsigned char v4_block[12] = {198, 51, 100,  23,   127,  0,
                                           0,   1,  0xDC, 0x04, 0x14, 0x66};

static int session_peer_is(world *w, const char *want) {
  xcm_session_info info;

  return CHECK_STR(last.peer, want) &&
         CHECK_INT(xcm_cm_session(w->cm, last.sid, &info, sizeof info), 0) &&
         CHECK_STR(info.peer, want);
}

/* ---- tests ----------------------------------------------------------- */

static void test_v1_login(void) {
  world w;
  raw r;

  world_start(&w);
  raw_open(&w, &r, proxy_port);
  xcm_raw_sends(&r, "PROXY TCP4 192.0.2.7 127.0.0.1 56324 5222\r\n");
  CHECK(login(&r));
  CHECK(session_peer_is(&w, "192.0.2.7"));
  CHECK_STR(proxy_line, "PROXY v1: client 192.0.2.7 port 56324 (through "
                        "127.0.0.1), to 127.0.0.1 port 5222");
  CHECK_INT(stats(&w).proxy_headers_refused, 0);
  xcm_raw_free(&r);
  world_stop(&w);
}

static void test_v2_login(void) {
  world w;
  raw r;
  unsigned char h[64];
  size_t n;

  world_start(&w);
  raw_open(&w, &r, proxy_port);
  n = v2_header(h, 1, v6_block, sizeof v6_block);
  xcm_raw_send(&r, (const char *)h, n);
  CHECK(login(&r));
  CHECK(session_peer_is(&w, "2001:db8::42"));
  xcm_raw_free(&r);
  raw_open(&w, &r, proxy_port);
  n = v2_header(h, 1, v4_block, sizeof v4_block);
  xcm_raw_send(&r, (const char *)h, n);
  CHECK(login(&r));
  CHECK(session_peer_is(&w, "198.51.100.23"));
  xcm_raw_free(&r);
  /* LOCAL (a balancer's health check): the socket's address stays. */
  raw_open(&w, &r, proxy_port);
  n = v2_header(h, 0, NULL, 0);
  xcm_raw_send(&r, (const char *)h, n);
  CHECK(login(&r));
  CHECK(session_peer_is(&w, "127.0.0.1"));
  xcm_raw_free(&r);
  world_stop(&w);
}

/* Every byte of the header and the stream header in its own write,
 * each read by the CM before the next is sent. */
static int got_header_back(void *ud) {
  return strstr(((raw *)ud)->in.data ? ((raw *)ud)->in.data : "",
                "</stream:features>") != NULL;
}

static void test_bytewise(void) {
  static const char hdr[] = "PROXY TCP6 2001:db8::9 ::1 1 5222\r\n" XCM_RAW_HDR;
  world w;
  raw r;
  size_t i;

  world_start(&w);
  raw_open(&w, &r, proxy_port);
  for (i = 0; i < sizeof hdr - 1; i++) {
    xcm_raw_send(&r, hdr + i, 1);
    uv_run(&w.loop, UV_RUN_NOWAIT);
  }
  CHECK(xcm_test_run_until(&w.loop, got_header_back, &r, 3000));
  CHECK_STR(last.peer, "2001:db8::9");
  xcm_raw_free(&r);
  world_stop(&w);
}

/* max_per_address (2 here) counts the header's address: a third
 * connection from 192.0.2.50 is refused, while one from 192.0.2.51 and
 * a third, fourth and fifth from the socket's 127.0.0.1 are served. */
static void test_address_limit(void) {
  world w;
  raw r[5];
  xcm_stats st;
  int i;

  world_start(&w);
  for (i = 0; i < 5; i++) {
    raw_open(&w, &r[i], proxy_port);
    xcm_raw_sends(&r[i], i < 3 ? "PROXY TCP4 192.0.2.50 127.0.0.1 1 2\r\n"
                               : "PROXY TCP4 192.0.2.51 127.0.0.1 1 2\r\n");
    if (i == 2)
      CHECK(xcm_test_run_until(&w.loop, xcm_raw_is_eof, &r[i], 3000));
    else
      CHECK(login(&r[i]));
  }
  CHECK_INT(r[2].in.len, 0); /* closed without a word */
  st = stats(&w);
  CHECK_INT(st.clients_refused_address_limit, 1);
  CHECK_INT(st.clients_refused, 1);
  CHECK_INT(st.clients_now, 4);
  /* The count goes down as they leave: 192.0.2.50 may come back. */
  xcm_raw_free(&r[0]);
  xcm_raw_free(&r[2]);
  raw_open(&w, &r[2], proxy_port);
  xcm_raw_sends(&r[2], "PROXY TCP4 192.0.2.50 127.0.0.1 1 2\r\n");
  CHECK(login(&r[2]));
  for (i = 1; i < 5; i++)
    xcm_raw_free(&r[i]);
  world_stop(&w);
}

static void test_no_header_refused(void) {
  static const char *bad[] = {
      XCM_RAW_HDR,
      "PROXY TCP4 192.0.2.7 127.0.0.1 56324\r\n" XCM_RAW_HDR,
      "PROXY TCP4 192.0.2.7 127.0.0.1 56324 5222\n" XCM_RAW_HDR,
      "\r\n\r\n\0\r\nQUIT\n\x11\x11\0\0",
  };
  static const size_t lens[] = {0, 0, 0, 16};
  world w;
  raw r;
  size_t i;

  world_start(&w);
  for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    unsigned before = xcm_test_failures();

    raw_open(&w, &r, proxy_port);
    xcm_raw_send(&r, bad[i], lens[i] ? lens[i] : strlen(bad[i]));
    CHECK(xcm_test_run_until(&w.loop, xcm_raw_is_eof, &r, 3000));
    CHECK_INT(r.in.len, 0);
    CHECK_INT(stats(&w).proxy_headers_refused, i + 1);
    xcm_raw_free(&r);
    xcm_test_tried("proxy-headers", before);
  }
  /* The plain listener beside it is unaffected, and takes no header:
   * one there is refused as XML. */
  raw_open(&w, &r, w.port);
  CHECK(login(&r));
  CHECK_STR(last.peer, "127.0.0.1");
  xcm_raw_free(&r);
  CHECK_INT(stats(&w).clients_refused, 0);
  CHECK_INT(stats(&w).stream_errors[XCM_COND_NONE], 0);
  world_stop(&w);
}

/* A header cut short and never finished: the header timeout (1.5 s
 * here) closes it, counted as a header timeout. */
static void test_header_timeout(void) {
  world w;
  raw r;
  xcm_stats st;
  unsigned before = xcm_test_failures();

  header_timeout_ms = 1500;
  world_start(&w);
  header_timeout_ms = 30000;
  raw_open(&w, &r, proxy_port);
  xcm_raw_sends(&r, "PROXY TCP4 192.0.2.7 ");
  CHECK(xcm_test_run_until(&w.loop, xcm_raw_is_eof, &r, 20000));
  CHECK_INT(r.in.len, 0);
  st = stats(&w);
  CHECK_INT(st.header_timeouts, 1);
  CHECK_INT(st.proxy_headers_refused, 0);
  CHECK_INT(st.clients_now, 0);
  xcm_raw_free(&r);
  xcm_test_tried("silent-connections", before);
  world_stop(&w);
}

static int got_bytes(void *ud) {
  return ((raw *)ud)->in.len > 0;
}

/* On a direct TLS listener the header comes before the ClientHello, and
 * a ClientHello without one is refused. */
static void test_direct_tls(void) {
  world w;
  raw r;
  unsigned char h[64];
  size_t n;
  int round;

  world_start(&w);
  for (round = 0; round < 2; round++) {
    raw_open(&w, &r, proxy_tls_port);
    if (round == 0) {
      n = v2_header(h, 1, v4_block, sizeof v4_block);
      xcm_raw_send(&r, (const char *)h, n);
    }
    xcm_raw_send(&r, (const char *)xcm_raw_client_hello,
                 xcm_raw_client_hello_len);
    if (round == 0) {
      /* A handshake record back: the header was taken off the front. */
      CHECK(xcm_test_run_until(&w.loop, got_bytes, &r, 3000));
      CHECK(r.in.len > 5 && (unsigned char)r.in.data[0] == 0x16);
    } else {
      CHECK(xcm_test_run_until(&w.loop, xcm_raw_is_eof, &r, 3000));
      CHECK_INT(r.in.len, 0);
      CHECK_INT(stats(&w).proxy_headers_refused, 1);
    }
    xcm_raw_free(&r);
  }
  world_stop(&w);
}

/* Listener 3 trusts 127.0.0.2 alone: from there a header is taken as
 * anywhere; from 127.0.0.1 the same header and stream header get the
 * connection closed before a byte is read, nothing written back, counted
 * and logged, and the CM never hears of it as a client. */
static void test_trusted_source(void) {
  static const char hdr[] = "PROXY TCP4 198.51.100.9 127.0.0.1 40000 5222\r\n";
  world w;
  raw r;
  xcm_stats st;
  int i;

  world_start(&w);
  REQUIRE(
      xcm_raw_open_from(&r, &w.loop, "127.0.0.2", "127.0.0.1", strict_port, 1));
  xcm_raw_sends(&r, hdr);
  CHECK(login(&r));
  CHECK(session_peer_is(&w, "198.51.100.9"));
  CHECK_STR(proxy_line, "PROXY v1: client 198.51.100.9 port 40000 (through "
                        "127.0.0.2), to 127.0.0.1 port 5222");
  xcm_raw_free(&r);
  for (i = 0; i < 2; i++) {
    unsigned before = xcm_test_failures();
    unsigned char h[64];
    size_t n;

    proxy_line[0] = '\0';
    raw_open(&w, &r, strict_port);
    if (i == 0) {
      xcm_raw_sends(&r, hdr);
    } else {
      n = v2_header(h, 1, v4_block, sizeof v4_block);
      xcm_raw_send(&r, (const char *)h, n);
    }
    xcm_raw_sends(&r, XCM_RAW_HDR);
    CHECK(xcm_test_run_until(&w.loop, xcm_raw_is_eof, &r, 3000));
    CHECK_INT(r.in.len, 0);
    st = stats(&w);
    CHECK_INT(st.proxy_untrusted, i + 1);
    CHECK_INT(st.proxy_headers_refused, 0);
    CHECK_INT(st.clients_refused, 0);
    CHECK_INT(st.clients_accepted, 1);
    CHECK_STR(proxy_line, ""); /* never read */
    CHECK_STR(untrusted_line, "127.0.0.1: not a trusted PROXY source "
                              "(proxy_trusted): closed");
    xcm_raw_free(&r);
    xcm_test_tried("proxy-headers", before);
  }
  /* Listener 1 trusts 127.0.0.1, and counts nothing of this. */
  raw_open(&w, &r, proxy_port);
  xcm_raw_sends(&r, hdr);
  CHECK(login(&r));
  CHECK(session_peer_is(&w, "198.51.100.9"));
  xcm_raw_free(&r);
  CHECK_INT(stats(&w).proxy_untrusted, 2);
  world_stop(&w);
}

/* What xcm_cm_listen says of proxy_trusted: required with
 * proxy_protocol, refused without it, each bad entry named. */
static void test_trusted_options(void) {
  static const struct {
    int proxy;
    const char *list, *err;
  } cases[] = {
      {1, NULL,
       "xcm_listen_options.proxy_trusted is not set: a "
       "proxy_protocol listener takes PROXY headers only from the "
       "balancers it lists (e.g. \"10.0.0.5, fd00::/8\")"},
      {1, " ", "xcm_listen_options.proxy_trusted is not set"},
      {0, "127.0.0.1",
       "xcm_listen_options.proxy_trusted is set without "
       "proxy_protocol: set both, or neither"},
      {1, "127.0.0.1, lb.example.net",
       "xcm_listen_options.proxy_trusted: 'lb.example.net' is not an IPv4 "
       "or IPv6 address or network (no host names, no zone ids)"},
      {1, "10.1.0.0/8",
       "xcm_listen_options.proxy_trusted: '10.1.0.0/8' "
       "has address bits set past its prefix length"},
      {1, "10.0.0.0/33", "'10.0.0.0/33' has a prefix length over 32"},
      {1, "::1,", "entry 2 is empty"},
  };
  world w;
  xcm_listen_options lo;
  char err[256];
  size_t i;

  world_start(&w);
  for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    xcm_listen_options_init(&lo, sizeof lo);
    lo.proxy_protocol = cases[i].proxy;
    lo.proxy_trusted = cases[i].list;
    err[0] = '\0';
    CHECK_INT(xcm_cm_listen(w.cm, &lo, err, sizeof err), XCM_EINVAL);
    if (!CHECK(strstr(err, cases[i].err) != NULL))
      fprintf(stderr, "# case %zu: %s\n", i, err);
    CHECK_INT(xcm_listen_options_check(&lo, err, sizeof err), XCM_EINVAL);
  }
  xcm_listen_options_init(&lo, sizeof lo);
  lo.proxy_protocol = 1;
  lo.proxy_trusted = "0.0.0.0/0, ::/0";
  CHECK_INT(xcm_listen_options_check(&lo, err, sizeof err), 0);
  CHECK_INT(xcm_cm_listen(w.cm, &lo, err, sizeof err), 0);
  world_stop(&w);
}

/* A balancer's TCP health check (HAProxy's `check`) connects and resets
 * at once; when the reset comes before the accept, the socket has no
 * peer any more. That is no stranger: it must not be counted or logged
 * as an untrusted source (operators watch that counter for someone
 * going around the balancer). */
static void test_reset_before_accept(void) {
  static const char hdr[] = "PROXY TCP4 198.51.100.9 127.0.0.1 40000 5222\r\n";
  struct sockaddr_in sa;
  struct linger lg = {1, 0};
  world w;
  raw r;
  int fd;

  world_start(&w);
  untrusted_line[0] = '\0';
  /* Connected by the kernel while the loop is not running, reset
   * before the CM accepts it. */
  fd = socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((unsigned short)strict_port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
  REQUIRE(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) == 0);
  close(fd);
  /* Accepted in order: once this one is in, the reset one was seen. */
  REQUIRE(
      xcm_raw_open_from(&r, &w.loop, "127.0.0.2", "127.0.0.1", strict_port, 1));
  xcm_raw_sends(&r, hdr);
  CHECK(login(&r));
  xcm_raw_free(&r);
  CHECK_INT(stats(&w).proxy_untrusted, 0);
  if (!CHECK_STR(untrusted_line, ""))
    xcm_test_note("logged: %s", untrusted_line);
  world_stop(&w);
}

static const xcm_test tests[] = {
    {"reset_before_accept", test_reset_before_accept},
    {"v1_login", test_v1_login},
    {"v2_login", test_v2_login},
    {"bytewise", test_bytewise},
    {"address_limit", test_address_limit},
    {"no_header_refused", test_no_header_refused},
    {"header_timeout", test_header_timeout},
    {"direct_tls", test_direct_tls},
    {"trusted_source", test_trusted_source},
    {"trusted_options", test_trusted_options},
};

int main(int argc, char **argv) {
  return xcm_test_main(argc, argv, XCM_TESTS(tests));
}
