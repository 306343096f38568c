/* libFuzzer target for the PROXY protocol parser (lib/transport/proxy.h).
 *
 * Layout: byte 0 picks a piece size (1 to 256), the rest is what a
 * stranger sends first on a proxy listener. The bytes are fed in one
 * piece and in pieces of that size; both must give the same verdict, take
 * the same bytes and name the same addresses. On top of that: never more
 * than the input taken, a v1 header at most 107 bytes, a v2 one at most
 * 16 + XCM_PROXY_V2_MAX_LEN, and a proxied address that reads back as an
 * address of its family. */
#include <arpa/inet.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "transport/proxy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int feed(const char *in, size_t len, size_t piece, size_t *taken,
                xcm_proxy_header *h) {
  xcm_proxy p;
  size_t at = 0, used;
  int r = 0;

  xcm__proxy_init(&p);
  while (at < len) {
    size_t n = len - at < piece ? len - at : piece;

    r = xcm__proxy_feed(&p, in + at, n, &used, h);
    if (used > n)
      abort();
    at += used;
    if (r != 0)
      break;
    if (used != n) /* took less, and said nothing */
      abort();
  }
  *taken = at;
  return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  xcm_proxy_header a, b;
  size_t ta, tb, piece;
  int ra, rb;
  unsigned char bin[16];

  if (size < 1)
    return 0;
  piece = (size_t)data[0] + 1;
  data++;
  size--;
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  ra = feed((const char *)data, size, size ? size : 1, &ta, &a);
  rb = feed((const char *)data, size, piece, &tb, &b);
  if (ra != rb || (ra == 1 && ta != tb))
    abort();
  if (ra < 0 || ra > 1)
    if (ra >= 0)
      abort();
  if (ra != 1)
    return 0;
  if (memcmp(&a, &b, sizeof a) != 0)
    abort();
  if (a.version == 1 && ta > XCM_PROXY_V1_MAX)
    abort();
  if (a.version == 2 && ta > 16 + XCM_PROXY_V2_MAX_LEN)
    abort();
  if (a.version != 1 && a.version != 2)
    abort();
  if (!a.local) {
    int af = a.family == 6 ? AF_INET6 : AF_INET;

    if (a.family != 4 && a.family != 6)
      abort();
    if (memchr(a.src, '\0', sizeof a.src) == NULL ||
        memchr(a.dst, '\0', sizeof a.dst) == NULL)
      abort();
    /* A mapped address comes out as IPv4. */
    if (inet_pton(af, a.src, bin) != 1 && inet_pton(AF_INET, a.src, bin) != 1)
      abort();
    if (a.src_port > 65535 || a.dst_port > 65535)
      abort();
  }
  return 0;
}
