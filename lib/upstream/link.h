/* One upstream connection to Openfire's multiplexer port: DNS, TCP, the
 * stream header, optional STARTTLS and zlib, the XEP-0114 handshake, the
 * configuration iq, whitespace keepalive and the dead-peer timer. Once up,
 * every other stanza goes to the pool.
 *
 * A link object lives as long as the pool; its connections come and go.
 * Each connection uses a fresh resource (prefix, index, generation), so a
 * resource is never reused while an old connection might be alive;
 * except after a conflict, which says another process holds the address
 * (the same name twice): then the same one is asked for again. */
#ifndef XCM_UPSTREAM_LINK_H
#define XCM_UPSTREAM_LINK_H

#include "transport/stream.h"
#include "upstream/pool.h"
#include "util/buf.h"

typedef struct xcm_link xcm_link;

typedef struct xcm_link_cb {
  void (*up)(void *ud, xcm_link *l);
  /* The connection ended (or never came up). The link is idle again. */
  void (*down)(void *ud, xcm_link *l, int err, const char *why);
  void (*policy)(void *ud, xcm_link *l, const xcm_policy *p);
  /* A stanza from the server once up (not the configuration iq). */
  void (*stanza)(void *ud, xcm_link *l, const xcm_xml_stanza *s);
  /* The server announced system-shutdown. */
  void (*shutdown)(void *ud, xcm_link *l);
  /* The write queue fell back under the low-water mark. */
  void (*drain)(void *ud, xcm_link *l);
  /* Everything of this link is closed (after xcm__link_close). */
  void (*closed)(void *ud, xcm_link *l);
  /* Whether a route starting now needs its payload's attributes (the
   * payload's extent is always there). NULL: always. */
  int (*payload_attrs)(void *ud);
} xcm_link_cb;

/* opt, host and tls are borrowed for the link's lifetime (tls may be
 * NULL). host and port are its server's: the pool's own for one server,
 * a node's of a cluster; index is its place among all the pool's links,
 * so that its resource (PREFIXn-m) is unique over every node. */
int xcm__link_new(xcm_link **out, xcm_ctx *ctx, const xcm_pool_options *opt,
                  const char *host, int port, xcm_tls_config *tls,
                  unsigned index, const xcm_link_cb *cb, void *ud);
/* Start connecting now (IDLE only). */
void xcm__link_connect(xcm_link *l);
/* Connect after delay_ms (IDLE only). */
void xcm__link_connect_later(xcm_link *l, uint64_t delay_ms);
/* Queue bytes for the server (UP only). */
int xcm__link_send(xcm_link *l, const char *data, size_t len);
/* Above the high-water mark? */
int xcm__link_congested(const xcm_link *l);
/* Bytes queued and not yet written. */
size_t xcm__link_queued(const xcm_link *l);
/* End the current connection; down follows. */
void xcm__link_drop(xcm_link *l, int err, const char *why);
/* Close for good; closed follows, then the link may be freed. */
void xcm__link_close(xcm_link *l);
void xcm__link_free(xcm_link *l);

enum xcm_link_state xcm__link_state(const xcm_link *l);
unsigned xcm__link_index(const xcm_link *l);
int xcm__link_is_tls(const xcm_link *l);
int xcm__link_is_zlib(const xcm_link *l);
/* "NAME/RESOURCE" of the current (or last) connection. */
const char *xcm__link_jid(const xcm_link *l);

#endif
