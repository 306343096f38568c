/* A byte-level transport of the caller's own, for gateways that carry
 * XMPP over something libxcm does not know: libxcm gives the bytes to
 * send through write() and says when it is done through close(); the
 * caller gives it the bytes received through xcm_conn_input(). TLS and
 * compression, when negotiated, run inside libxcm as on a socket. */
#ifndef XCM_TRANSPORT_H
#define XCM_TRANSPORT_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Filled by the caller with .size = sizeof it (it is copied). */
typedef struct xcm_transport {
  size_t size; /* sizeof the caller's struct */
  /* Bytes for the peer: take them all (send or copy) before returning.
   * Return 0, or a negative error to end the connection. */
  int (*write)(void *ud, const char *data, size_t len);
  /* libxcm is done with the connection: no more write() calls, and the
   * xcm_conn is gone once the loop turns. */
  void (*close)(void *ud);
  void *ud;
} xcm_transport;

#ifdef __cplusplus
}
#endif
#endif
