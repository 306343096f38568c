/* HTTP/1.1 for web clients: one server per HTTP listener, holding its
 * connections; each connection an xcm_stream (TCP, TLS, a PROXY header
 * first: transport/stream.h and proxy.h) with requests parsed by
 * http-parser (Debian's libhttp-parser, 2.9), never by hand.
 *
 * The server answers what is its own: XEP-0156 discovery (host-meta and
 * host-meta.json), CORS preflights to the BOSH path, 404 for other
 * paths, and every refusal (400, 403, 405, 408, 413, 414, 426, 431,
 * 503), after which the connection is closed. Two kinds of request go
 * to the owner's handlers (http_handlers): a valid WebSocket upgrade
 * (after the 101 is queued the owner takes the stream over with
 * xcm__http_conn_detach) and a POST to the BOSH path (the owner answers
 * later with xcm__http_respond).
 *
 * Requests may be pipelined: they are answered in the order they came,
 * whatever order the owner answers in (the owner answers the oldest
 * first, as HTTP/1.1 has it). At most HTTP_MAX_PIPELINE requests wait
 * for answers on one connection; beyond that it is not read until one
 * is answered.
 *
 * Memory follows activity: a connection between requests holds its
 * struct, its stream and its timer, and no parser and no buffer (the
 * parser and the header strings are allocated at a request's first byte
 * and freed once it is read: xcm__http_conn_footprint, measured by
 * tests/test-http.c); while the owner holds a request (a waiting BOSH
 * client) it holds no timer either. */
#ifndef XCM_HTTP_HTTP_H
#define XCM_HTTP_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "core/ctx.h"
#include "transport/proxy.h"
#include "transport/stream.h"

#define HTTP_MAX_PIPELINE 8
#define HTTP_MAX_WS_PATHS 4
#define HTTP_MAX_ORIGINS 32

typedef struct xcm_http_server xcm_http_server;
typedef struct xcm_http_conn xcm_http_conn;

/* What the handlers see of a request; every string NUL-terminated, NULL
 * when the header was absent, lent for the handler's call. */
typedef struct xcm_http_request {
  const char *method; /* "GET", "POST", ... */
  const char *path;   /* the target without its query */
  const char *host;
  const char *origin;
  const char *content_type;
  const char *ws_key;      /* Sec-WebSocket-Key */
  const char *ws_protocol; /* Sec-WebSocket-Protocol (repeats joined) */
  int http_minor;          /* 1 for HTTP/1.1, 0 for 1.0 */
  int keep_alive;          /* the connection may carry another request */
} xcm_http_request;

typedef struct xcm_http_handlers {
  /* A valid upgrade to the "xmpp" subprotocol on a WebSocket path: the
   * 101 is queued on the stream. Call xcm__http_conn_detach() within
   * this call to take the stream; a handler that does not closes the
   * connection. */
  void (*websocket)(void *ud, xcm_http_conn *conn, const xcm_http_request *req);
  /* A POST to the BOSH path from an allowed Origin; body is lent for the
   * call. Answer it, now or later, with xcm__http_respond(). */
  void (*bosh)(void *ud, xcm_http_conn *conn, const xcm_http_request *req,
               const char *body, size_t len);
  /* conn closes with BOSH requests not yet answered: it must not be used
   * after this returns. May be NULL. */
  void (*gone)(void *ud, xcm_http_conn *conn);
  void *ud;
} xcm_http_handlers;

/* A listener's settings, filled by its owner (xcm.c, from
 * xcm_listen_options) and read while the server runs: tls may be
 * swapped by a reload (new connections take the new one). */
typedef struct xcm_http_cfg {
  xcm_tls_config *tls; /* NULL: plain HTTP */
  int proxy_protocol;
  xcm_proxy_net trusted[XCM_PROXY_MAX_TRUSTED];
  unsigned ntrusted;
  char bosh_path[128]; /* "" for none */
  char ws_paths[HTTP_MAX_WS_PATHS][128];
  unsigned nws;
  /* Allowed origins; any_origin when "*" or not set. */
  int any_origin;
  char *origins[HTTP_MAX_ORIGINS]; /* the owner's */
  unsigned norigins;
  const char *public_url; /* the owner's, or NULL */
  size_t max_header;
  size_t max_body;
  unsigned max_connections; /* XCM__OFF: none */
  unsigned max_per_address; /* XCM__OFF: none */
  unsigned header_timeout_ms;
  unsigned idle_timeout_ms;
} xcm_http_cfg;

/* Counted by the server, for tests and statistics. */
typedef struct xcm_http_counters {
  uint64_t accepted;
  uint64_t refused_total;   /* at max_connections */
  uint64_t refused_address; /* at max_per_address */
  uint64_t proxy_untrusted; /* a source not in proxy_trusted */
  uint64_t proxy_refused;   /* a missing, malformed or oversized header */
  uint64_t header_timeouts;
  uint64_t idle_timeouts;
  uint64_t errors; /* requests refused with a 4xx status */
  uint64_t upgrades;
  unsigned now; /* open connections */
} xcm_http_counters;

/* cfg is the owner's and must outlive the server; the Origin lists and
 * paths are parsed into it by xcm__http_cfg_parse. */
int xcm__http_server_new(xcm_http_server **out, xcm_ctx *ctx,
                         const xcm_http_cfg *cfg);
void xcm__http_server_set_handlers(xcm_http_server *srv,
                                   const xcm_http_handlers *h);
const xcm_http_counters *xcm__http_server_counters(const xcm_http_server *srv);
/* Serve an accepted connection: the server owns tcp from now on, even
 * on failure. */
int xcm__http_accept(xcm_http_server *srv, uv_tcp_t *tcp);
/* The same over the caller's own transport (copied; see
 * xcm__stream_custom): *out is the stream to give its input to
 * (xcm__stream_input), valid until t->close has run. peer names the
 * other end (a balancer's address on a proxy_protocol listener). For
 * the fuzz target, and gateways. */
int xcm__http_attach(xcm_http_server *srv, const xcm_transport *t,
                     const char *peer, xcm_stream **out);
/* Close every connection (a shutdown); done(ud) runs once the last one
 * is closed, from the loop, or at once when there are none. Nothing is
 * accepted afterwards. */
void xcm__http_server_close(xcm_http_server *srv, void (*done)(void *ud),
                            void *ud);
/* Only once closed (or never having served). */
void xcm__http_server_free(xcm_http_server *srv);

/* Answer the oldest BOSH request of conn not yet answered. The HTTP
 * layer adds the status line, Content-Length, CORS and keep-alive
 * headers. body is copied. XCM_EINVAL when none is waiting. */
int xcm__http_respond(xcm_http_conn *conn, int status, const char *content_type,
                      const char *body, size_t len);
/* From the websocket handler only: take the stream (NULL when out of
 * memory: not taken), with the bytes the client sent after its request (lent
 * for the handler's call: copy them, or feed them to the new owner's reader
 * now). The caller sets its callbacks with xcm__stream_set_cb() before the
 * handler returns; conn is freed after the handler returns. */
xcm_stream *xcm__http_conn_detach(xcm_http_conn *conn, const char **early,
                                  size_t *early_len);
/* The client's address (the PROXY header's behind a balancer), and
 * whether it came over TLS. */
const char *xcm__http_conn_peer(const xcm_http_conn *conn);
int xcm__http_conn_secure(const xcm_http_conn *conn);
void xcm__http_conn_set_data(xcm_http_conn *conn, void *data);
void *xcm__http_conn_data(const xcm_http_conn *conn);
/* Bytes this connection holds now, its stream included. */
size_t xcm__http_conn_footprint(const xcm_http_conn *conn);

/* ---- pieces, in lib/http/reply.c ---------------------------------------- */

/* Sec-WebSocket-Accept for key (RFC 6455 section 4.2.2): SHA-1 of the
 * key and the GUID, in base64: out holds at least 29 bytes. 0 or
 * XCM_EINVAL for a key that is not 16 bytes in base64. */
int xcm__http_ws_accept(const char *key, char out[29]);
/* The reason phrase of a status. */
const char *xcm__http_reason(int status);
/* Parse the listener's strings into cfg: paths (checked), origins (kept
 * as pointers into a copy the caller frees with xcm__http_cfg_free).
 * XCM_EINVAL with errbuf naming the field. */
int xcm__http_cfg_parse(xcm_http_cfg *cfg, const xcm_allocator *a,
                        const char *bosh_path, const char *ws_paths,
                        const char *origins, char *errbuf, size_t errlen);
void xcm__http_cfg_free(xcm_http_cfg *cfg, const xcm_allocator *a);
/* Whether origin (as sent) is allowed by cfg. */
int xcm__http_origin_ok(const xcm_http_cfg *cfg, const char *origin);
/* Append host-meta (json 0: XRD, 1: JSON) naming the BOSH and WebSocket
 * URLs of cfg under base ("https://host" or a public URL) to b. */
int xcm__http_host_meta(xcm_buf *b, const xcm_http_cfg *cfg, const char *http,
                        const char *ws, int json);

#endif
