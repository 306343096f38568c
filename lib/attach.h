/* Internal ways into an instance for the layers that carry clients over
 * something other than a socket or a public custom transport: the
 * WebSocket and BOSH layers (lib/web/, client/framing.h). lib/xcm.c
 * implements them; the session layer below does not see xcm_cm. */
#ifndef XCM_ATTACH_H
#define XCM_ATTACH_H

#include "client/client.h"
#include "xcm/xcm.h"

/* A client over a message transport (t is copied), served with the
 * settings of listener i, as xcm_cm_attach does for a byte transport:
 * the same limits on clients in all and per address (peer). *out is the
 * client to give its messages to (xcm__client_msg_input), valid until
 * t->close() has been called. XCM_ECLOSED while the instance stops or
 * drains, XCM_EINVAL for no listener i, XCM_EBUSY over a limit. */
int xcm__cm_attach_msg(xcm_cm *cm, unsigned i, const xcm_msg_transport *t,
                       const char *peer, xcm_client **out);

/* A connection the instance does not see as a handle (a WebSocket
 * closing after its client is gone) holds it: a shutdown closes the
 * context only once every hold is released. Release exactly once, from
 * the loop, after the connection's last handle is closed. */
void xcm__cm_hold(xcm_cm *cm);
void xcm__cm_release(xcm_cm *cm);

/* Bytes the BOSH session sid holds now on any listener, its client and
 * the requests it holds with their HTTP connections included; 0 for no
 * such session. For tests and the benchmark (lib/web/bosh.h). */
size_t xcm__cm_bosh_footprint(const xcm_cm *cm, const char *sid);
/* For tests of XEP-0198's 32-bit counters: both counters of every
 * stream management enabled from now on, on every listener open now,
 * start at start instead of 0. */
void xcm__cm_sm_start(xcm_cm *cm, uint32_t start);

#endif
