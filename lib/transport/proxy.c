/* The PROXY protocol header, v1 and v2 (see proxy.h and HAProxy's
 * doc/proxy-protocol.txt). */
#include "transport/proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "xcm/error.h"

static const unsigned char v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                         0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* v2's fixed part and the largest address block kept (two IPv6
 * addresses and two ports). */
#define V2_FIXED 16
#define V2_INET6 36

void xcm__proxy_init(xcm_proxy *p) {
  memset(p, 0, sizeof(*p));
}

/* An address as the rest of the CM writes it: an IPv4-mapped IPv6
 * address as IPv4, so that the per-address limit counts one client
 * once whichever way the balancer spelled it. */
static void name(int family, const void *addr, char *out) {
  const unsigned char *a = addr;

  if (family == 6 && IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)addr))
    inet_ntop(AF_INET, a + 12, out, 46);
  else
    inet_ntop(family == 6 ? AF_INET6 : AF_INET, addr, out, 46);
}

/* ---- v1 ------------------------------------------------------------ */

/* A decimal port, 0 to 65535, without a sign or leading zeros (the
 * specification's words). */
static int port(const char *s, size_t n, unsigned *out) {
  unsigned v = 0;
  size_t i;

  if (n == 0 || n > 5 || (s[0] == '0' && n > 1))
    return -1;
  for (i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9')
      return -1;
    v = v * 10 + (unsigned)(s[i] - '0');
  }
  if (v > 65535)
    return -1;
  *out = v;
  return 0;
}

static int address(int family, const char *s, size_t n, char *out) {
  char text[46];
  unsigned char bin[16];

  if (n == 0 || n >= sizeof text)
    return -1;
  memcpy(text, s, n);
  text[n] = '\0';
  if (inet_pton(family == 6 ? AF_INET6 : AF_INET, text, bin) != 1)
    return -1;
  name(family, bin, out);
  return 0;
}

/* The line without its CRLF: "PROXY " already checked. */
static int parse_v1(const xcm_proxy *p, size_t n, xcm_proxy_header *out) {
  const char *line = (const char *)p->buf, *f[4];
  size_t flen[4], at = 6, k;
  int family;

  memset(out, 0, sizeof(*out));
  out->version = 1;
  /* UNKNOWN: whatever follows it up to the CRLF is to be ignored. */
  if (n - at >= 7 && memcmp(line + at, "UNKNOWN", 7) == 0 &&
      (n - at == 7 || line[at + 7] == ' ')) {
    out->local = 1;
    return 1;
  }
  if (n - at < 5 || (memcmp(line + at, "TCP4 ", 5) != 0 &&
                     memcmp(line + at, "TCP6 ", 5) != 0))
    return XCM_EPROTO;
  family = line[at + 3] == '4' ? 4 : 6;
  at += 5;
  /* Four fields, one space between each. */
  for (k = 0; k < 4; k++) {
    const char *sp;

    f[k] = line + at;
    sp = memchr(line + at, ' ', n - at);
    if (k < 3 && sp == NULL)
      return XCM_EPROTO;
    if (k == 3 && sp != NULL)
      return XCM_EPROTO;
    flen[k] = sp != NULL ? (size_t)(sp - (line + at)) : n - at;
    at += flen[k] + 1;
  }
  if (address(family, f[0], flen[0], out->src) != 0 ||
      address(family, f[1], flen[1], out->dst) != 0 ||
      port(f[2], flen[2], &out->src_port) != 0 ||
      port(f[3], flen[3], &out->dst_port) != 0)
    return XCM_EPROTO;
  out->family = family;
  return 1;
}

static int feed_v1(xcm_proxy *p, const char *data, size_t len, size_t *used,
                   xcm_proxy_header *out) {
  size_t i = 0;

  while (i < len) {
    unsigned char ch = (unsigned char)data[i++];

    if (p->len < 6 && ch != (unsigned char)"PROXY "[p->len])
      return XCM_EPROTO;
    if (ch == '\n') {
      *used = i;
      if (p->buf[p->len - 1] != '\r')
        return XCM_EPROTO;
      return parse_v1(p, (size_t)p->len - 1, out);
    }
    /* The 107th byte can only be the LF; a CR is only ever followed by
     * one; the rest is printable ASCII. */
    if (p->len >= XCM_PROXY_V1_MAX - 1 ||
        (p->len > 0 && p->buf[p->len - 1] == '\r') ||
        (ch != '\r' && (ch < 0x20 || ch > 0x7e)))
      return XCM_EPROTO;
    p->buf[p->len++] = ch;
  }
  *used = i;
  return 0;
}

/* ---- v2 ------------------------------------------------------------ */

/* The fixed part is in: check it and learn the whole length. */
static int check_v2(xcm_proxy *p) {
  unsigned cmd = p->buf[12] & 0x0F, fam = p->buf[13] >> 4,
           proto = p->buf[13] & 0x0F;
  unsigned n = (unsigned)p->buf[14] << 8 | p->buf[15];

  if ((p->buf[12] >> 4) != 2 || cmd > 1 || fam > 3 || proto > 2 ||
      n > XCM_PROXY_V2_MAX_LEN)
    return XCM_EPROTO;
  /* A proxied connection's address block must be all there. */
  if (cmd == 1 && ((fam == 1 && n < 12) || (fam == 2 && n < V2_INET6) ||
                   (fam == 3 && n < 216)))
    return XCM_EPROTO;
  /* An IP client of a TCP listener came over a stream. */
  if (cmd == 1 && (fam == 1 || fam == 2) && proto != 1)
    return XCM_EPROTO;
  p->total = (uint16_t)(V2_FIXED + n);
  return 0;
}

static int parse_v2(const xcm_proxy *p, xcm_proxy_header *out) {
  const unsigned char *a = p->buf + V2_FIXED;
  unsigned fam = p->buf[13] >> 4;

  memset(out, 0, sizeof(*out));
  out->version = 2;
  /* LOCAL: the balancer's own connection (a health check); UNSPEC and
   * UNIX: nothing an IP limit can use. Both keep the socket's address. */
  if ((p->buf[12] & 0x0F) == 0 || (fam != 1 && fam != 2)) {
    out->local = 1;
    return 1;
  }
  if (fam == 1) {
    out->family = 4;
    name(4, a, out->src);
    name(4, a + 4, out->dst);
    out->src_port = (unsigned)a[8] << 8 | a[9];
    out->dst_port = (unsigned)a[10] << 8 | a[11];
  } else {
    out->family = 6;
    name(6, a, out->src);
    name(6, a + 16, out->dst);
    out->src_port = (unsigned)a[32] << 8 | a[33];
    out->dst_port = (unsigned)a[34] << 8 | a[35];
  }
  return 1;
}

static int feed_v2(xcm_proxy *p, const char *data, size_t len, size_t *used,
                   xcm_proxy_header *out) {
  size_t i = 0;

  while (i < len) {
    if (p->len < V2_FIXED) {
      unsigned char ch = (unsigned char)data[i++];

      if (p->len < sizeof v2_sig && ch != v2_sig[p->len])
        return XCM_EPROTO;
      p->buf[p->len++] = ch;
      if (p->len == V2_FIXED && check_v2(p) != 0)
        return XCM_EPROTO;
    } else {
      /* Keep the address block, skip the rest (TLVs) unread. */
      size_t keep =
          p->total < V2_FIXED + V2_INET6 ? p->total : V2_FIXED + V2_INET6;
      size_t seen = (size_t)p->len + p->skip;
      size_t n = len - i, want = p->total - seen;

      if (n > want)
        n = want;
      if (p->len < keep) {
        if (n > keep - p->len)
          n = keep - p->len;
        memcpy(p->buf + p->len, data + i, n);
        p->len = (uint16_t)(p->len + n);
      } else {
        p->skip = (uint16_t)(p->skip + n);
      }
      i += n;
    }
    if (p->len >= V2_FIXED && (size_t)p->len + p->skip == p->total) {
      *used = i;
      return parse_v2(p, out);
    }
  }
  *used = i;
  return 0;
}

int xcm__proxy_feed(xcm_proxy *p, const char *data, size_t len, size_t *used,
                    xcm_proxy_header *out) {
  *used = 0;
  if (len == 0)
    return 0;
  if (p->version == 0) {
    if (data[0] == 'P')
      p->version = 1;
    else if (data[0] == 0x0D)
      p->version = 2;
    else
      return XCM_EPROTO;
  }
  return p->version == 1 ? feed_v1(p, data, len, used, out)
                         : feed_v2(p, data, len, used, out);
}

/* ---- trusted sources ------------------------------------------------- */

static void map_v4(const unsigned char v4[4], unsigned char out[16]) {
  memset(out, 0, 10);
  out[10] = out[11] = 0xFF;
  memcpy(out + 12, v4, 4);
}

static int match(const xcm_proxy_net *net, const unsigned char a[16]) {
  unsigned full = net->prefix / 8, rest = net->prefix % 8;

  if (memcmp(net->addr, a, full) != 0)
    return 0;
  return rest == 0 || ((net->addr[full] ^ a[full]) &
                       (unsigned char)(0xFF << (8 - rest))) == 0;
}

static int trust_fail(char *errbuf, size_t errlen, const char *entry, size_t n,
                      const char *why) {
  if (errbuf != NULL && errlen > 0)
    snprintf(errbuf, errlen, "'%.*s' %s", (int)(n > 64 ? 64 : n), entry, why);
  return XCM_EINVAL;
}

/* One entry, blanks already trimmed: ADDRESS or ADDRESS/PREFIX. */
static int trust_entry(const char *s, size_t n, xcm_proxy_net *out,
                       char *errbuf, size_t errlen) {
  const char *slash = memchr(s, '/', n);
  size_t alen = slash != NULL ? (size_t)(slash - s) : n;
  char text[46];
  unsigned char bin[16];
  unsigned prefix = 0, max, i, v4;

  if (alen == 0 || alen >= sizeof text)
    return trust_fail(errbuf, errlen, s, n,
                      "is not an IPv4 or IPv6 address or network");
  memcpy(text, s, alen);
  text[alen] = '\0';
  v4 = inet_pton(AF_INET, text, bin) == 1;
  if (v4) {
    map_v4(bin, out->addr);
  } else if (inet_pton(AF_INET6, text, out->addr) != 1) {
    return trust_fail(errbuf, errlen, s, n,
                      "is not an IPv4 or IPv6 address or network (no host "
                      "names, no zone ids)");
  }
  max = v4 ? 32 : 128;
  if (slash == NULL) {
    prefix = max;
  } else {
    const char *d = slash + 1;
    size_t dn = n - alen - 1;

    if (dn == 0 || dn > 3 || (d[0] == '0' && dn > 1))
      return trust_fail(errbuf, errlen, s, n, "has a bad prefix length");
    for (i = 0; i < dn; i++) {
      if (d[i] < '0' || d[i] > '9')
        return trust_fail(errbuf, errlen, s, n, "has a bad prefix length");
      prefix = prefix * 10 + (unsigned)(d[i] - '0');
    }
    if (prefix > max)
      return trust_fail(errbuf, errlen, s, n,
                        v4 ? "has a prefix length over 32"
                           : "has a prefix length over 128");
  }
  out->prefix = (unsigned char)(v4 ? prefix + 96 : prefix);
  /* "10.1.0.0/8" is more likely a typing error than a way to write
   * 10.0.0.0/8: refuse it rather than guess. */
  memcpy(bin, out->addr, 16);
  for (i = out->prefix; i < 128; i++)
    bin[i / 8] &= (unsigned char)~(0x80u >> (i % 8));
  if (memcmp(bin, out->addr, 16) != 0)
    return trust_fail(errbuf, errlen, s, n,
                      "has address bits set past its prefix length");
  return 0;
}

static int blank(char c) {
  return c == ' ' || c == '\t';
}

int xcm__proxy_trust_parse(const char *list, xcm_proxy_net *nets, char *errbuf,
                           size_t errlen) {
  xcm_proxy_net scratch;
  const char *p = list;
  int count = 0, err;

  if (list == NULL)
    return 0;
  while (blank(*p))
    p++;
  if (*p == '\0')
    return 0;
  for (;;) {
    const char *end = strchr(p, ','), *a = p, *b;

    if (end == NULL)
      end = p + strlen(p);
    b = end;
    while (a < b && blank(*a))
      a++;
    while (b > a && blank(b[-1]))
      b--;
    if (a == b) {
      if (errbuf != NULL && errlen > 0)
        snprintf(errbuf, errlen, "entry %d is empty", count + 1);
      return XCM_EINVAL;
    }
    if (count == XCM_PROXY_MAX_TRUSTED) {
      if (errbuf != NULL && errlen > 0)
        snprintf(errbuf, errlen,
                 "more than %d entries: give networks (CIDR) instead",
                 XCM_PROXY_MAX_TRUSTED);
      return XCM_EINVAL;
    }
    err = trust_entry(a, (size_t)(b - a),
                      nets != NULL ? &nets[count] : &scratch, errbuf, errlen);
    if (err != 0)
      return err;
    count++;
    if (*end == '\0')
      return count;
    p = end + 1;
  }
}

static int trusts(const xcm_proxy_net *nets, unsigned n,
                  const unsigned char a[16]) {
  unsigned i;

  for (i = 0; i < n; i++)
    if (match(&nets[i], a))
      return 1;
  return 0;
}

/* Read through memcpy: sa may be a sockaddr_in, _in6 or _storage, and a
 * field read through another struct type is one the compiler may assume
 * unwritten (strict aliasing). */
int xcm__proxy_trusts(const xcm_proxy_net *nets, unsigned n,
                      const struct sockaddr *sa) {
  const char *p = (const char *)sa;
  unsigned char a[16], v4[4];
  sa_family_t family;

  memcpy(&family, p + offsetof(struct sockaddr, sa_family), sizeof family);
  if (family == AF_INET) {
    memcpy(v4, p + offsetof(struct sockaddr_in, sin_addr), 4);
    map_v4(v4, a);
  } else if (family == AF_INET6) {
    memcpy(a, p + offsetof(struct sockaddr_in6, sin6_addr), 16);
  } else {
    return 0;
  }
  return trusts(nets, n, a);
}

int xcm__proxy_trusts_text(const xcm_proxy_net *nets, unsigned n,
                           const char *addr) {
  unsigned char a[16], v4[4];

  if (addr == NULL)
    return 0;
  if (inet_pton(AF_INET, addr, v4) == 1)
    map_v4(v4, a);
  else if (inet_pton(AF_INET6, addr, a) != 1)
    return 0;
  return trusts(nets, n, a);
}
