/* A byte-level transport of the caller's own, for gateways that carry
 * XMPP over something libxcm does not know: libxcm gives the bytes to
 * send through write() and says when it is done through close(); the
 * caller gives it the bytes received through xcm_conn_input(). TLS and
 * compression, when negotiated, run inside libxcm as on a socket.
 *
 * Backpressure: write() may answer XCM_EAGAIN, "taken, but no more for
 * now"; libxcm then keeps what follows (up to max_client_out, as
 * for a socket whose peer does not read) until the caller calls
 * xcm_conn_writable(); a close waits for what was kept to be written
 * before close() is called. A transport that is already encrypted sets
 * secure: it counts as TLS for a policy that requires TLS, and STARTTLS
 * is not offered on it. */
#ifndef XCM_TRANSPORT_H
#define XCM_TRANSPORT_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What carries a client's stream, for the statistics (xcm_stats'
 * sessions_*_now): a socket the instance accepted or was given
 * (xcm_cm_adopt), TLS and zlib included; a WebSocket (RFC 7395); a BOSH
 * session (XEP-0206); the caller's own transport (xcm_cm_attach). */
typedef enum xcm_transport_kind {
  XCM_TRANSPORT_TCP = 0,
  XCM_TRANSPORT_WEBSOCKET = 1,
  XCM_TRANSPORT_BOSH = 2,
  XCM_TRANSPORT_CUSTOM = 3,
  XCM_TRANSPORT_KIND_COUNT_ /* not a kind: how many there are */
} xcm_transport_kind;

/* Filled by the caller with .size = sizeof it (it is copied). */
typedef struct xcm_transport {
  size_t size; /* sizeof the caller's struct */
  /* Bytes for the peer: take them all (send or copy) before returning.
   * Return 0; XCM_EAGAIN when they were taken but no more can be for
   * now (then call xcm_conn_writable() when more can); or a negative
   * error to end the connection. */
  int (*write)(void *ud, const char *data, size_t len);
  /* libxcm is done with the connection: no more write() calls, and the
   * xcm_conn is gone once the loop turns. */
  void (*close)(void *ud);
  void *ud;
  /* Already encrypted (TLS below this transport): 1, else 0. */
  int secure;
} xcm_transport;

#ifdef __cplusplus
}
#endif
#endif
