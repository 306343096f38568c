/* What the client and session layers count, in their own terms: the
 * instance (xcm.c) turns these into the public xcm_stats, so that the
 * public struct can change without the inner layers knowing it. */
#ifndef XCM_SESSION_COUNTERS_H
#define XCM_SESSION_COUNTERS_H

#include <stdint.h>

#include "xcm/condition.h"
#include "xcm/transport.h"

typedef struct xcm_counters {
  uint64_t clients_accepted;
  uint64_t clients_refused; /* over a limit, or no memory */
  uint64_t clients_refused_total_limit;
  uint64_t clients_refused_address_limit;
  uint64_t clients_now;
  uint64_t clients_tls_now;
  uint64_t sessions_authenticated;
  uint64_t stanzas_in, stanzas_out; /* client -> server, server -> client */
  uint64_t bytes_in, bytes_out;
  uint64_t stream_errors[XCM_COND_COUNT_]; /* sent to clients */
  uint64_t failed_returned; /* messages given back with <failed/> */
  uint64_t sessions_lost;   /* to the loss of every upstream link */
  uint64_t hook_dropped;    /* stanzas the hook dropped or replaced badly */
  uint64_t header_timeouts; /* no stream header in time */
  uint64_t auth_timeouts;   /* not authenticated in time */
  uint64_t reads_shaped;    /* times a client's reads paused for its rate */
  uint64_t proxy_headers_refused; /* no valid PROXY header */
  uint64_t proxy_untrusted;       /* a PROXY listener's untrusted peer */
  /* clients_now by what carries them (xcm_transport_kind). */
  uint64_t clients_kind_now[XCM_TRANSPORT_KIND_COUNT_];
  /* XEP-0198 acknowledgements (session/sm.h). */
  uint64_t sm_now;            /* clients with them on now */
  uint64_t sm_acks_requested; /* <r/> sent */
  uint64_t sm_acks_received;  /* <a/> received */
  uint64_t sm_returned;       /* unacknowledged stanzas given back at an end */
  uint64_t sm_return_errors;  /* ... that could not be (logged) */
  uint64_t sm_bad_h;          /* ended for acknowledging more than was sent */
  uint64_t sm_overflows;      /* ended for too much unacknowledged */
  uint64_t sm_ack_timeouts;   /* dropped for leaving an <r/> unanswered */
  /* Resumption (session/session.c). */
  uint64_t sm_detached_now;     /* sessions waiting for their client */
  uint64_t sm_detached;         /* connections dropped that left one waiting */
  uint64_t sm_resumed;          /* <resumed/> */
  uint64_t sm_resume_failed;    /* <resume/> answered <failed/> */
  uint64_t sm_expired;          /* sessions that waited in vain */
  uint64_t sm_expired_returned; /* stanzas returned as those ended */
  /* XEP-0352 client state indication (session/csi.h). */
  uint64_t csi_now;        /* clients inactive now */
  uint64_t csi_held;       /* stanzas held for an inactive client */
  uint64_t csi_superseded; /* ... dropped for a newer presence */
  uint64_t csi_flushed;    /* ... written once something made them go */
  uint64_t csi_overflows;  /* flushes for a queue at its bound */
  uint64_t csi_returned;   /* held messages given back at an end */
  uint64_t csi_dropped;    /* held presences dropped at an end */
} xcm_counters;

#endif
