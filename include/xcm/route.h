/* Route framing as plain functions over bytes, for gateways and test
 * harnesses that hold stanzas of their own.
 *
 * Upstream, every client stanza travels as
 *   <route streamid="SID" to="DOMAIN" from="CM/RES">STANZA</route>
 * and comes back as <route from="DOMAIN" to="CM" streamid="SID">...</route>.
 * The framing is exact: whatever a client sends, the server reads one
 * route with one stanza in it, carrying the namespaces it had on the
 * client's stream. */
#ifndef XCM_ROUTE_H
#define XCM_ROUTE_H

#include "xcm/export.h"

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct xcm_route {
  const char *streamid; /* NUL-terminated, unescaped */
  const char *type;     /* NULL when absent; "error" for routing errors */
  const char *from;     /* NULL when absent */
  const char *to;       /* NULL when absent */
  /* The one element inside, exactly as it came (NULL when the route
   * carries text instead). */
  const char *inner;
  size_t inner_len;
  /* Unescaped text the route carries instead of an element (Openfire's
   * raw-text delivery: XML to write to the client as is). */
  const char *text;
  size_t text_len;
} xcm_route;

/* Wrap one client stanza, as it appeared on a client stream with the
 * usual header (default namespace jabber:client, prefix stream). Writes
 * with snprintf semantics (see xcm/proto.h): returns the full length; if
 * that is >= cap, out holds "". Returns XCM_EXML if stanza is not exactly
 * one well-formed element, XCM_EINVAL for unusable attribute values. */
XCM_EXTERN int xcm_route_wrap(char *out, size_t cap, const char *stanza,
                              size_t len, const char *streamid, const char *to,
                              const char *from);

/* Parse one <route> element from bytes. On success *out is a new route
 * owned by the caller (free it with xcm_route_free); its strings are
 * copies. Returns XCM_EXML for malformed XML and XCM_EPROTO for a route
 * that must not be forwarded (no streamid, no element, several). */
XCM_EXTERN int xcm_route_unwrap(const char *bytes, size_t len, xcm_route **out);
XCM_EXTERN void xcm_route_free(xcm_route *route);

#ifdef __cplusplus
}
#endif
#endif
