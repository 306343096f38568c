/* Web clients on an HTTP listener (lib/http/http.h hands them over):
 * each layer here turns what the HTTP server gives it into a client of
 * the instance's sessions with xcm__cm_attach_msg (lib/attach.h).
 *
 *   websocket.c  one RFC 7395 WebSocket (transport/ws.h) per client
 *   bosh.c       BOSH sessions (XEP-0124, XEP-0206), their requests
 *                read by body.c
 *
 * xcm.c registers the handlers of each layer on the listener's HTTP
 * server (http_init) with an xcm_web_listener as their ud. */
#ifndef XCM_WEB_WEB_H
#define XCM_WEB_WEB_H

#include <stddef.h>

#include "core/ctx.h"
#include "http/http.h"
#include "xcm/xcm.h"

/* Which listener a web client belongs to: owned by the listener (xcm.c)
 * and valid as long as its HTTP server is. */
typedef struct xcm_web_listener {
  xcm_cm *cm;
  xcm_ctx *ctx;
  unsigned index;        /* the listener's, for xcm__cm_attach_msg */
  size_t max_stanza;     /* the instance's, after authentication */
  size_t max_out;        /* the most kept for a client that does not read */
  struct xcm_bosh *bosh; /* its BOSH sessions (web/bosh.h), or NULL */
} xcm_web_listener;

/* The xcm_http_handlers.websocket of a listener (ud: its
 * xcm_web_listener): takes the connection over as a WebSocket and
 * attaches a client to it. A client that cannot be attached (over a
 * limit, the instance stopping) gets the WebSocket closed with 1013 or
 * 1001. */
void xcm__web_websocket(void *ud, xcm_http_conn *conn,
                        const xcm_http_request *req);

/* The xcm_http_handlers.bosh and .gone of a listener with a BOSH path
 * (ud: its xcm_web_listener, whose bosh is set): web/bosh.c. */
void xcm__web_bosh(void *ud, xcm_http_conn *conn, const xcm_http_request *req,
                   const char *body, size_t len);
void xcm__web_bosh_gone(void *ud, xcm_http_conn *conn);

#endif
