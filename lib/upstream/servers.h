/* The upstream as a list of servers, the nodes of an Openfire cluster:
 * "host:port, host:port, [v6]:port" (xcm_options.upstream_servers).
 * One parser for the check at the API boundary (options.c) and for the
 * pool that connects to them, so that both read a list the same way. */
#ifndef XCM_UPSTREAM_SERVERS_H
#define XCM_UPSTREAM_SERVERS_H

#include <stddef.h>

/* The most servers in a list: a CM keeps `connections` links to each,
 * and a cluster of more nodes than this is not one a CM spreads over. */
#define XCM_SERVERS_MAX 16
/* The most links over all servers (servers × connections). */
#define XCM_SERVERS_MAX_LINKS 256
/* The port of an entry without one: Openfire's connection-manager port. */
#define XCM_SERVERS_DEFAULT_PORT 5262

/* One entry, pointing into the list it was read from (not
 * NUL-terminated); an IPv6 address without its brackets. */
typedef struct xcm_server_ref {
  const char *host;
  size_t len;
  int port;
} xcm_server_ref;

/* Read list into out: the number of servers (at least 1), or XCM_EINVAL
 * with why naming the entry and what is wrong with it (an empty entry, a
 * bad port, an IPv6 address without brackets, a server listed twice,
 * more than XCM_SERVERS_MAX). */
int xcm__servers_parse(const char *list, xcm_server_ref out[XCM_SERVERS_MAX],
                       char *why, size_t whylen);

/* "host:port", or "[host]:port" for an IPv6 address, into buf: as the
 * logs, the node events and the metrics name a server. */
void xcm__server_label(const xcm_server_ref *s, char *buf, size_t len);

#endif
