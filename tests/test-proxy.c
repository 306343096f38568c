/* The PROXY protocol parser (lib/transport/proxy.c): v1 and v2, every
 * byte split, and what a stranger might send instead. */
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "transport/proxy.h"
#include "xcm/error.h"

/* Feed in one piece, then split at every byte boundary into two pieces,
 * then one byte at a time: each way must give the same verdict, take
 * the same bytes and name the same addresses. */
static int feed_split(const char *in, size_t len, size_t cut,
                      xcm_proxy_header *h, size_t *taken) {
  xcm_proxy p;
  size_t used, at = 0;
  int r = 0;

  *taken = 0;
  xcm__proxy_init(&p);
  while (at < len) {
    size_t n = cut == 0 ? len - at : (at < cut ? cut - at : len - at);

    r = xcm__proxy_feed(&p, in + at, n, &used, h);
    at += used;
    if (r != 0)
      break;
    if (used != n)
      return -99; /* took less without a verdict */
  }
  *taken = at;
  return r;
}

static int feed_bytewise(const char *in, size_t len, xcm_proxy_header *h,
                         size_t *taken) {
  xcm_proxy p;
  size_t used, at;
  int r = 0;

  *taken = 0;
  xcm__proxy_init(&p);
  for (at = 0; at < len && r == 0; at += used) {
    r = xcm__proxy_feed(&p, in + at, 1, &used, h);
    if (r == 0 && used != 1)
      return -99;
  }
  *taken = at;
  return r;
}

/* Every way of feeding `in` gives `want` (1 or an error), the header
 * ending at `hlen`, and the addresses of `want_h`. */
static int all_splits(const char *in, size_t len, int want, size_t hlen,
                      const xcm_proxy_header *want_h) {
  xcm_proxy_header h;
  size_t taken = 0, cut;
  int ok = 1, r;

  for (cut = 0; cut <= len && ok; cut++) {
    memset(&h, 0xAA, sizeof h);
    r = feed_split(in, len, cut, &h, &taken);
    ok &= CHECK_INT(r, want);
    if (want == 1) {
      ok &= CHECK_INT(taken, hlen);
      ok &= CHECK_INT(h.local, want_h->local);
      ok &= CHECK_INT(h.version, want_h->version);
      if (!want_h->local) {
        ok &= CHECK_STR(h.src, want_h->src);
        ok &= CHECK_STR(h.dst, want_h->dst);
        ok &= CHECK_INT(h.src_port, want_h->src_port);
        ok &= CHECK_INT(h.dst_port, want_h->dst_port);
      }
    }
  }
  r = feed_bytewise(in, len, &h, &taken);
  ok &= CHECK_INT(r, want);
  if (want == 1)
    ok &= CHECK_INT(taken, hlen) && CHECK_STR(h.src, want_h->src);
  return ok;
}

static xcm_proxy_header hdr(int version, int local, const char *src,
                            unsigned sp, const char *dst, unsigned dp) {
  xcm_proxy_header h;

  memset(&h, 0, sizeof h);
  h.version = version;
  h.local = local;
  snprintf(h.src, sizeof h.src, "%s", src);
  snprintf(h.dst, sizeof h.dst, "%s", dst);
  h.src_port = sp;
  h.dst_port = dp;
  return h;
}

/* What follows the header is the client's and is not taken. */
#define AFTER "<?xml version='1.0'?>"

static void test_v1(void) {
  static const char tcp4[] = "PROXY TCP4 192.0.2.7 10.0.0.1 56324 5222\r\n";
  static const char tcp6[] =
      "PROXY TCP6 2001:db8::7 2001:db8::1 40000 5223\r\n";
  static const char mapped[] =
      "PROXY TCP6 ::ffff:192.0.2.9 ::ffff:10.0.0.1 1 5222\r\n";
  static const char unknown[] = "PROXY UNKNOWN\r\n";
  static const char unknown_more[] =
      "PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n";
  xcm_proxy_header h;
  char buf[256];

  h = hdr(1, 0, "192.0.2.7", 56324, "10.0.0.1", 5222);
  snprintf(buf, sizeof buf, "%s%s", tcp4, AFTER);
  CHECK(all_splits(buf, strlen(buf), 1, strlen(tcp4), &h));
  h = hdr(1, 0, "2001:db8::7", 40000, "2001:db8::1", 5223);
  snprintf(buf, sizeof buf, "%s%s", tcp6, AFTER);
  CHECK(all_splits(buf, strlen(buf), 1, strlen(tcp6), &h));
  /* An IPv4-mapped address is counted as the IPv4 one. */
  h = hdr(1, 0, "192.0.2.9", 1, "10.0.0.1", 5222);
  CHECK(all_splits(mapped, strlen(mapped), 1, strlen(mapped), &h));
  h = hdr(1, 1, "", 0, "", 0);
  snprintf(buf, sizeof buf, "%s%s", unknown, AFTER);
  CHECK(all_splits(buf, strlen(buf), 1, strlen(unknown), &h));
  CHECK(all_splits(unknown_more, strlen(unknown_more), 1, strlen(unknown_more),
                   &h));
}

static void test_v1_longest(void) {
  /* The specification's worst case is 107 bytes, CRLF included. */
  static const char longest[] =
      "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
      "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
  static const char tcp6[] =
      "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
      "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe 65535 65535\r\n";
  char over[160];
  xcm_proxy_header h = hdr(1, 1, "", 0, "", 0);
  unsigned before;

  CHECK_INT(strlen(longest), 107);
  CHECK(all_splits(longest, strlen(longest), 1, 107, &h));
  h = hdr(1, 0, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535,
          "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", 65535);
  CHECK(all_splits(tcp6, strlen(tcp6), 1, strlen(tcp6), &h));
  /* One byte more is refused, without waiting for the LF. */
  before = xcm_test_failures();
  snprintf(over, sizeof over, "PROXY UNKNOWN %s\r\n",
           "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
           "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 655356");
  CHECK_INT(strlen(over), 108);
  CHECK(all_splits(over, strlen(over), XCM_EPROTO, 0, NULL));
  {
    /* A line that never ends: refused at its 107th byte. */
    char endless[4096];
    xcm_proxy p;
    size_t used;

    memset(endless, 'A', sizeof endless);
    memcpy(endless, "PROXY UNKNOWN ", 14);
    xcm__proxy_init(&p);
    CHECK_INT(xcm__proxy_feed(&p, endless, sizeof endless, &used, &h),
              XCM_EPROTO);
    CHECK(used <= 107);
  }
  xcm_test_tried("proxy-headers", before);
}

/* A NUL inside the line (strlen would stop at it). */
#define NUL_LINE "PROXY TCP4 192.0.2.7 10.0.0.1 56324 5\00022\r\n"

static void test_v1_malformed(void) {
  static const char *bad[] = {
      "PROXY TCP4 192.0.2.7 10.0.0.1 56324 5222\n", /* LF alone */
      "PROXY TCP4 192.0.2.7 10.0.0.1 56324 5222\r\r\n",
      "PROXY TCP4 192.0.2.7 10.0.0.1 56324\r\n", /* a field missing */
      "PROXY TCP4 192.0.2.7 10.0.0.1 56324 5222 1\r\n",
      "PROXY TCP4  192.0.2.7 10.0.0.1 56324 5222\r\n", /* two spaces */
      "PROXY TCP4 192.0.2.7 10.0.0.1 56324 5222 \r\n",
      "PROXY TCP4 192.0.2.256 10.0.0.1 56324 5222\r\n",
      "PROXY TCP4 2001:db8::7 10.0.0.1 56324 5222\r\n",  /* v6 in TCP4 */
      "PROXY TCP6 192.0.2.7 2001:db8::1 56324 5222\r\n", /* v4 in TCP6 */
      "PROXY TCP4 192.0.2.7 10.0.0.1 65536 5222\r\n",
      "PROXY TCP4 192.0.2.7 10.0.0.1 056324 5222\r\n",
      "PROXY TCP4 192.0.2.7 10.0.0.1 -1 5222\r\n",
      "PROXY TCP4 192.0.2.7 10.0.0.1 +80 5222\r\n",
      "PROXY TCP4 192.0.2.7 10.0.0.1 56324 0x50\r\n",
      "PROXY TCP5 192.0.2.7 10.0.0.1 56324 5222\r\n",
      "PROXY tcp4 192.0.2.7 10.0.0.1 56324 5222\r\n",
      "PROXY UNKNOWNX\r\n",
      "PROXY \r\n",
      "PROXY\r\n",
      "PROXZ TCP4 192.0.2.7 10.0.0.1 56324 5222\r\n",
      "PROXY TCP4 192.0.2.7\t10.0.0.1 56324 5222\r\n",
      "PROXY TCP4 192.0.2.7 10.0.0.1 56324 5222\r\x80\n",
      NUL_LINE,
  };
  size_t i;

  for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    unsigned before = xcm_test_failures();
    size_t len = strlen(bad[i]);

    if (i == sizeof bad / sizeof bad[0] - 1)
      len = sizeof NUL_LINE - 1;
    if (!CHECK(all_splits(bad[i], len, XCM_EPROTO, 0, NULL)))
      xcm_test_note("refused line %zu: %s", i, bad[i]);
    xcm_test_tried("proxy-headers", before);
  }
}

static void test_wrong_signature(void) {
  static const char *bad[] = {
      "<?xml version='1.0'?><stream:stream>", /* a client without one */
      "\x16\x03\x01\x02\x00",                 /* a TLS ClientHello */
      "GET / HTTP/1.1\r\n",
      "\r\n\r\n\r\n", /* v2's signature broken at its 5th byte */
      "\r\n\r\n\0\r\nQUIX\n",
      " PROXY TCP4 192.0.2.7 10.0.0.1 1 2\r\n",
  };
  size_t lens[] = {0, 5, 0, 6, 12, 0};
  size_t i;

  for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    unsigned before = xcm_test_failures();
    size_t len = lens[i] ? lens[i] : strlen(bad[i]);

    CHECK(all_splits(bad[i], len, XCM_EPROTO, 0, NULL));
    xcm_test_tried("proxy-headers", before);
  }
  {
    /* Refused at the first byte: nothing is buffered for a stranger. */
    xcm_proxy p;
    xcm_proxy_header h;
    size_t used;

    xcm__proxy_init(&p);
    CHECK_INT(xcm__proxy_feed(&p, "<", 1, &used, &h), XCM_EPROTO);
  }
}

/* A v2 header: command, family byte, address block, then tlv bytes. */
static size_t v2(unsigned char *out, unsigned ver_cmd, unsigned fam,
                 const unsigned char *addr, size_t alen, size_t tlv) {
  static const unsigned char sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                        0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
  size_t n = alen + tlv;

  memcpy(out, sig, 12);
  out[12] = (unsigned char)ver_cmd;
  out[13] = (unsigned char)fam;
  out[14] = (unsigned char)(n >> 8);
  out[15] = (unsigned char)n;
  memcpy(out + 16, addr, alen);
  /* A NOOP TLV's bytes, as HAProxy pads with: any content. */
  memset(out + 16 + alen, 0x04, tlv);
  return 16 + n;
}

static const unsigned char a4[12] = {192, 0, 2,    7,    10,   0,
                                     0,   1, 0xDC, 0x04, 0x14, 0x66};
static const unsigned char a6[36] = {
    0x20, 0x01, 0x0d, 0xb8, 0,    0,    0,    0,    0,    0,    0,    0,
    0,    0,    0,    7,    0x20, 0x01, 0x0d, 0xb8, 0,    0,    0,    0,
    0,    0,    0,    0,    0,    0,    0,    1,    0x9C, 0x40, 0x14, 0x67};

static void test_v2(void) {
  unsigned char buf[2048];
  unsigned char zero[216] = {0};
  xcm_proxy_header h;
  size_t n;

  h = hdr(2, 0, "192.0.2.7", 56324, "10.0.0.1", 5222);
  n = v2(buf, 0x21, 0x11, a4, sizeof a4, 0);
  memcpy(buf + n, AFTER, strlen(AFTER));
  CHECK(all_splits((char *)buf, n + strlen(AFTER), 1, n, &h));
  /* TLVs are skipped, whatever they hold. */
  n = v2(buf, 0x21, 0x11, a4, sizeof a4, 300);
  memcpy(buf + n, AFTER, strlen(AFTER));
  CHECK(all_splits((char *)buf, n + strlen(AFTER), 1, n, &h));
  h = hdr(2, 0, "2001:db8::7", 40000, "2001:db8::1", 5223);
  n = v2(buf, 0x21, 0x21, a6, sizeof a6, 7);
  memcpy(buf + n, AFTER, strlen(AFTER));
  CHECK(all_splits((char *)buf, n + strlen(AFTER), 1, n, &h));
  /* LOCAL (a health check), with or without an address block: the
   * socket's address stays. */
  h = hdr(2, 1, "", 0, "", 0);
  n = v2(buf, 0x20, 0x00, a4, 0, 0);
  memcpy(buf + n, AFTER, strlen(AFTER));
  CHECK(all_splits((char *)buf, n + strlen(AFTER), 1, n, &h));
  n = v2(buf, 0x20, 0x11, a4, sizeof a4, 0);
  CHECK(all_splits((char *)buf, n, 1, n, &h));
  /* PROXY with UNSPEC or UNIX: nothing to count by, the socket's stays. */
  n = v2(buf, 0x21, 0x00, a4, 0, 0);
  CHECK(all_splits((char *)buf, n, 1, n, &h));
  n = v2(buf, 0x21, 0x31, zero, sizeof zero, 0);
  CHECK(all_splits((char *)buf, n, 1, n, &h));
  /* The longest allowed. */
  h = hdr(2, 0, "192.0.2.7", 56324, "10.0.0.1", 5222);
  n = v2(buf, 0x21, 0x11, a4, sizeof a4, XCM_PROXY_V2_MAX_LEN - sizeof a4);
  CHECK(all_splits((char *)buf, n, 1, n, &h));
}

static void test_v2_malformed(void) {
  unsigned char buf[2048];
  struct {
    unsigned ver_cmd, fam;
    const unsigned char *addr;
    size_t alen, tlv;
    const char *why;
  } bad[] = {
      {0x11, 0x11, a4, 12, 0, "version 1 in a v2 header"},
      {0x31, 0x11, a4, 12, 0, "version 3"},
      {0x22, 0x11, a4, 12, 0, "command 2"},
      {0x21, 0x41, a4, 12, 0, "family 4"},
      {0x21, 0x13, a4, 12, 0, "transport 3"},
      {0x21, 0x12, a4, 12, 0, "an IPv4 datagram"},
      {0x21, 0x10, a4, 12, 0, "an IPv4 client of unknown transport"},
      {0x21, 0x11, a4, 11, 0, "an IPv4 block too short"},
      {0x21, 0x21, a6, 35, 0, "an IPv6 block too short"},
      {0x21, 0x21, a4, 12, 0, "IPv6 with an IPv4 block"},
      {0x21, 0x31, a6, 36, 0, "a UNIX block too short"},
      {0x21, 0x11, a4, 12, XCM_PROXY_V2_MAX_LEN - 11, "too long"},
  };
  size_t i;

  for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    unsigned before = xcm_test_failures();
    size_t n = v2(buf, bad[i].ver_cmd, bad[i].fam, bad[i].addr, bad[i].alen,
                  bad[i].tlv);

    if (!CHECK(all_splits((char *)buf, n, XCM_EPROTO, 0, NULL)))
      xcm_test_note("v2: %s", bad[i].why);
    xcm_test_tried("proxy-headers", before);
  }
  {
    /* The largest length a header can claim is refused at its 16th
     * byte, before any of it is read. */
    xcm_proxy p;
    xcm_proxy_header h;
    size_t used;

    v2(buf, 0x21, 0x11, a4, 12, 0);
    buf[14] = buf[15] = 0xFF;
    xcm__proxy_init(&p);
    CHECK_INT(xcm__proxy_feed(&p, (char *)buf, 16, &used, &h), XCM_EPROTO);
  }
}

static void test_truncated(void) {
  static const char tcp4[] = "PROXY TCP4 192.0.2.7 10.0.0.1 56324 5222\r\n";
  unsigned char buf[128];
  size_t n = v2(buf, 0x21, 0x11, a4, sizeof a4, 5), k;
  xcm_proxy_header h;

  /* Every prefix waits for more; none is a verdict. */
  for (k = 0; k < strlen(tcp4); k++) {
    size_t taken;

    if (!CHECK_INT(feed_split(tcp4, k, 0, &h, &taken), 0))
      break;
  }
  for (k = 0; k < n; k++) {
    size_t taken;

    if (!CHECK_INT(feed_split((char *)buf, k, 0, &h, &taken), 0))
      break;
  }
}

/* ---- trusted sources ---------------------------------------------- */

static int trusts(const char *list, const char *addr) {
  xcm_proxy_net nets[XCM_PROXY_MAX_TRUSTED];
  int n = xcm__proxy_trust_parse(list, nets, NULL, 0);

  return n < 0 ? -1 : xcm__proxy_trusts_text(nets, (unsigned)n, addr);
}

static void test_trust_parse(void) {
  static const struct {
    const char *list;
    int n;
  } good[] = {
      {NULL, 0},
      {"", 0},
      {" \t ", 0},
      {"127.0.0.1", 1},
      {"127.0.0.1, 10.0.0.0/8, ::1, fd00::/8", 4},
      {"\t10.0.0.0/8 ,192.168.0.0/16\t", 2},
      {"0.0.0.0/0, ::/0", 2},
      {"10.1.2.3/32, 2001:db8::1/128, 2001:db8::/32", 3},
      {"::ffff:10.0.0.0/104", 1},
  };
  static const struct {
    const char *list, *err;
  } bad[] = {
      {",", "entry 1 is empty"},
      {"127.0.0.1,,::1", "entry 2 is empty"},
      {"127.0.0.1, ", "entry 2 is empty"},
      {"localhost", "'localhost' is not an IPv4 or IPv6 address"},
      {"fe80::1%eth0", "'fe80::1%eth0' is not an IPv4 or IPv6 address"},
      {"10.0.0", "'10.0.0' is not an IPv4"},
      {"10.0.0.256", "'10.0.0.256' is not"},
      {"10.0.0.0/", "'10.0.0.0/' has a bad prefix length"},
      {"10.0.0.0/8/8", "'10.0.0.0/8/8' has a bad prefix length"},
      {"10.0.0.0/-8", "'10.0.0.0/-8' has a bad prefix length"},
      {"10.0.0.0/08", "'10.0.0.0/08' has a bad prefix length"},
      {"10.0.0.0/1000", "'10.0.0.0/1000' has a bad prefix length"},
      {"10.0.0.0/33", "'10.0.0.0/33' has a prefix length over 32"},
      {"::/129", "'::/129' has a prefix length over 128"},
      {"10.0.0.1/8", "'10.0.0.1/8' has address bits set past its prefix"},
      {"fd00::1/8", "'fd00::1/8' has address bits set past its prefix"},
      {"/8", "'/8' is not an IPv4 or IPv6 address or network"},
      {"10.0.0.0 /8", "'10.0.0.0 /8' is not"},
  };
  char list[64 * 12 + 16], err[160];
  size_t i;
  int k;

  for (i = 0; i < sizeof good / sizeof good[0]; i++)
    if (!CHECK_INT(xcm__proxy_trust_parse(good[i].list, NULL, NULL, 0),
                   good[i].n))
      fprintf(stderr, "# %s\n", good[i].list);
  for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    err[0] = '\0';
    CHECK_INT(xcm__proxy_trust_parse(bad[i].list, NULL, err, sizeof err),
              XCM_EINVAL);
    if (!CHECK(strncmp(err, bad[i].err, strlen(bad[i].err)) == 0))
      fprintf(stderr, "# %s: %s\n", bad[i].list, err);
  }
  /* At most XCM_PROXY_MAX_TRUSTED entries. */
  list[0] = '\0';
  for (k = 0; k < XCM_PROXY_MAX_TRUSTED; k++)
    snprintf(list + strlen(list), sizeof list - strlen(list), "%s10.0.0.%d",
             k ? "," : "", k);
  CHECK_INT(xcm__proxy_trust_parse(list, NULL, NULL, 0), XCM_PROXY_MAX_TRUSTED);
  strcat(list, ",::1");
  CHECK_INT(xcm__proxy_trust_parse(list, NULL, err, sizeof err), XCM_EINVAL);
  CHECK_STR(err, "more than 64 entries: give networks (CIDR) instead");
}

static void test_trust_match(void) {
  /* Addresses and prefix lengths, at and across their edges. */
  CHECK_INT(trusts("127.0.0.1", "127.0.0.1"), 1);
  CHECK_INT(trusts("127.0.0.1", "127.0.0.2"), 0);
  CHECK_INT(trusts("10.0.0.0/8", "10.255.255.255"), 1);
  CHECK_INT(trusts("10.0.0.0/8", "11.0.0.0"), 0);
  CHECK_INT(trusts("10.0.0.0/8", "9.255.255.255"), 0);
  CHECK_INT(trusts("192.168.4.0/22", "192.168.7.200"), 1);
  CHECK_INT(trusts("192.168.4.0/22", "192.168.8.1"), 0);
  CHECK_INT(trusts("192.168.4.0/22", "192.168.3.255"), 0);
  CHECK_INT(trusts("0.0.0.0/0", "203.0.113.1"), 1);
  CHECK_INT(trusts("0.0.0.0/0", "2001:db8::1"), 0); /* IPv4 only */
  CHECK_INT(trusts("::/0", "2001:db8::1"), 1);
  CHECK_INT(trusts("fd00::/8", "fdff:1::1"), 1);
  CHECK_INT(trusts("fd00::/8", "fc00::1"), 0);
  CHECK_INT(trusts("2001:db8::/33", "2001:db8:7fff::1"), 1);
  CHECK_INT(trusts("2001:db8::/33", "2001:db8:8000::1"), 0);
  CHECK_INT(trusts("::1", "::1"), 1);
  CHECK_INT(trusts("::1", "127.0.0.1"), 0);
  CHECK_INT(trusts("127.0.0.1, ::1", "::1"), 1);
  /* IPv4-mapped IPv6: a dual-stack socket's IPv4 peer matches the IPv4
   * entry, and an entry written mapped matches the IPv4 address. */
  CHECK_INT(trusts("10.0.0.0/8", "::ffff:10.1.2.3"), 1);
  CHECK_INT(trusts("10.0.0.0/8", "::ffff:11.1.2.3"), 0);
  CHECK_INT(trusts("::ffff:10.0.0.0/104", "10.9.9.9"), 1);
  CHECK_INT(trusts("::ffff:127.0.0.1", "127.0.0.1"), 1);
  CHECK_INT(trusts("::ffff:0:0/96", "198.51.100.1"), 1);
  CHECK_INT(trusts("::ffff:0:0/96", "2001:db8::1"), 0);
  /* Not an address: never trusted. */
  CHECK_INT(trusts("0.0.0.0/0, ::/0", "fuzzer"), 0);
  CHECK_INT(trusts("0.0.0.0/0, ::/0", ""), 0);
  CHECK_INT(trusts("0.0.0.0/0, ::/0", NULL), 0);
  CHECK_INT(trusts("", "127.0.0.1"), 0);
}

static const xcm_test tests[] = {
    {"v1", test_v1},
    {"v1_longest", test_v1_longest},
    {"v1_malformed", test_v1_malformed},
    {"wrong_signature", test_wrong_signature},
    {"v2", test_v2},
    {"v2_malformed", test_v2_malformed},
    {"truncated", test_truncated},
    {"trust_parse", test_trust_parse},
    {"trust_match", test_trust_match},
};

int main(int argc, char **argv) {
  return xcm_test_main(argc, argv, XCM_TESTS(tests));
}
