/* The PROXY protocol (HAProxy's, versions 1 and 2), receiving side: the
 * header a load balancer writes before the client's first byte, naming
 * the client's address. A listener that expects it reads it before
 * anything else (before TLS on a direct TLS port), and everything in it
 * comes from a stranger until checked, so every part is bounded:
 *
 * - v1 (text): "PROXY TCP4|TCP6|UNKNOWN ...\r\n", at most 107 bytes with
 *   the CRLF, as the specification says.
 * - v2 (binary): the 12-byte signature, version and command, family,
 *   and a length of at most XCM_PROXY_V2_MAX_LEN after the 16 fixed
 *   bytes. Only the address block is kept; TLVs are skipped unread.
 *
 * The parser is incremental: bytes may arrive one at a time, and it
 * never reads past the header's last byte, so whatever follows (a TLS
 * ClientHello, a stream header) is left to the caller. It holds at most
 * XCM_PROXY_KEEP bytes and allocates nothing. */
#ifndef XCM_TRANSPORT_PROXY_H
#define XCM_TRANSPORT_PROXY_H

#include <stddef.h>
#include <stdint.h>

#define XCM_PROXY_V1_MAX 107
/* Address block and TLVs of a v2 header, at most: the largest address
 * block is 216 bytes (AF_UNIX); HAProxy's TLVs (ALPN, authority, unique
 * id, SSL facts) fit well within the rest. */
#define XCM_PROXY_V2_MAX_LEN 1024
/* Bytes kept while reading: a whole v1 line, or v2's fixed part and the
 * IPv6 address block (16 + 36). */
#define XCM_PROXY_KEEP XCM_PROXY_V1_MAX

typedef struct xcm_proxy {
  unsigned char buf[XCM_PROXY_KEEP];
  uint16_t len;          /* bytes kept in buf */
  uint16_t skip;         /* v2: bytes still to skip (TLVs) after buf is full */
  uint16_t total;        /* v2: the header's whole length, once known */
  unsigned char version; /* 0 until the first byte tells */
} xcm_proxy;

/* What a complete header said. */
typedef struct xcm_proxy_header {
  int version; /* 1 or 2 */
  /* 1: the balancer speaks for itself (v2 LOCAL: a health check), or the
   * family is unknown (v1 UNKNOWN, v2 UNSPEC or UNIX): keep the socket's
   * own address, as the specification says. */
  int local;
  int family;   /* 4 or 6 when not local */
  char src[46]; /* the client's address, as text (INET6_ADDRSTRLEN) */
  char dst[46]; /* the address the client connected to */
  unsigned src_port, dst_port;
} xcm_proxy_header;

void xcm__proxy_init(xcm_proxy *p);

/* Feed len bytes. Returns 1 once the header is complete (*out filled,
 * *used the bytes of data it took: the rest is the client's), 0 when it
 * needs more (all of data taken), or XCM_EPROTO for anything that is not
 * a well-formed header: a wrong signature (said at the first byte that
 * cannot be one), a v1 line over 107 bytes or malformed, a v2 header of
 * another version or command, a length over XCM_PROXY_V2_MAX_LEN or
 * shorter than its address block. After 1 or an error, feed no more. */
int xcm__proxy_feed(xcm_proxy *p, const char *data, size_t len, size_t *used,
                    xcm_proxy_header *out);

/* ---- trusted sources ----------------------------------------------------
 *
 * A listener that reads PROXY headers takes them only from the sources
 * it trusts (xcm_listen_options.proxy_trusted): a list of addresses and
 * networks, "127.0.0.1, 10.0.0.0/8, ::1, fd00::/8". Both families are
 * held as IPv6, an IPv4 network as its IPv4-mapped form (a.b.c.d/n as
 * ::ffff:a.b.c.d/96+n), so that one comparison also serves the mapped
 * peers of a dual-stack socket. */

/* The most entries in one list: networks cover the rest. */
#define XCM_PROXY_MAX_TRUSTED 64

typedef struct xcm_proxy_net {
  unsigned char addr[16]; /* bits past prefix are zero */
  unsigned char prefix;   /* 0 to 128 */
} xcm_proxy_net;

/* Parse list into nets (room for XCM_PROXY_MAX_TRUSTED; NULL to check
 * only): the number of entries, 0 for NULL or a blank list, or
 * XCM_EINVAL with errbuf naming the bad entry (no prefix of the field's
 * name: the caller adds it). Entries are separated by commas, blanks
 * around them ignored; an address alone is a /32 or /128; bits set past
 * a network's prefix are refused as a likely typing error. */
int xcm__proxy_trust_parse(const char *list, xcm_proxy_net *nets, char *errbuf,
                           size_t errlen);

/* Whether the address (as a struct sockaddr: AF_INET or AF_INET6) or
 * its text is in one of n nets. Text that is no address is not. */
struct sockaddr;
int xcm__proxy_trusts(const xcm_proxy_net *nets, unsigned n,
                      const struct sockaddr *sa);
int xcm__proxy_trusts_text(const xcm_proxy_net *nets, unsigned n,
                           const char *addr);

#endif
