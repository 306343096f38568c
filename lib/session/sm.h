/* XEP-0198 acknowledgements held at the CM: one session's two counters
 * and its unacked queue, as plain bookkeeping with no I/O (the client
 * speaks the protocol, client/client.c).
 *
 * Every stanza delivered to a client with acknowledgements on is in
 * exactly one place from the moment it is written until the client
 * acknowledges it: this queue. The client writes it to its transport as
 * plain bytes (never as a record the transport would give back), so
 * whatever the transport still holds, whatever the kernel took, and
 * whatever the client read but did not acknowledge are all here and
 * only here. When the connection ends, the owner returns what is left,
 * oldest first, exactly once.
 *
 * The struct is its own allocation, made on <enable/>, so that a later
 * resumption can move it from the dying connection to the session that
 * outlives it (issue #14 item 2): nothing in it points at the client.
 *
 * Memory follows activity: while nothing is unacknowledged the queue
 * holds no buffer, and the whole costs sizeof(xcm_sm) (56 bytes on
 * 64-bit) beside the client's pointer to it. */
#ifndef XCM_SESSION_SM_H
#define XCM_SESSION_SM_H

#include <stddef.h>
#include <stdint.h>

#include "xcm/alloc.h"

typedef struct xcm_sm {
  /* Unacknowledged stanzas, oldest first from head: each a uint32_t
   * length and its bytes. NULL while empty. */
  char *q;
  uint32_t head, len, cap; /* bytes of q */
  uint32_t count;          /* stanzas in q */
  /* The XEP's counters, modulo 2^32: stanzas from the client handled
   * (the h we answer <r/> with), and stanzas sent to it (the last of
   * which is number h_out; the oldest in q is h_out - count + 1). */
  uint32_t h_in;
  uint32_t h_out;
  /* h_out at our last <r/>, and bytes sent since then. */
  uint32_t asked;
  uint32_t since_bytes;
  uint64_t last_out; /* loop time of the last stanza sent (ms) */
  /* Loop time of the oldest <r/> not answered yet (or of the last <a/>,
   * when that answered an older <r/> than our last), 0 when none: a
   * client that never answers is gone (sm_ack_timeout_ms). */
  uint64_t r_at;
} xcm_sm;

/* A new, empty state with both counters at start (0 but in tests). */
xcm_sm *xcm__sm_new(const xcm_allocator *a, uint32_t start);
/* Free it and whatever it still holds. */
void xcm__sm_free(const xcm_allocator *a, xcm_sm *sm);

/* A stanza was sent: its bytes (copied) join the queue and h_out counts
 * it. XCM_ELIMIT when max_count stanzas or max_bytes bytes would be
 * passed (XCM__OFF: no bound), XCM_ENOMEM; either way nothing changed. */
int xcm__sm_push(const xcm_allocator *a, xcm_sm *sm, const char *data,
                 size_t len, uint32_t max_count, size_t max_bytes);

/* The client acknowledged h: what it covers leaves the queue (and the
 * buffer goes once it is empty). 0, or XCM_EPROTO when h acknowledges
 * more than was sent (nothing changes). */
int xcm__sm_ack(const xcm_allocator *a, xcm_sm *sm, uint32_t h);

/* Call fn, oldest first, with each stanza still unacknowledged (bytes
 * lent for the call), then empty the queue. fn must not use sm. Returns
 * how many. */
size_t xcm__sm_drain(const xcm_allocator *a, xcm_sm *sm,
                     void (*fn)(void *ud, const char *data, size_t len),
                     void *ud);

/* Call fn, oldest first, with each stanza still unacknowledged (bytes
 * lent for the call), keeping them: a resumed session sends them again.
 * fn must not change sm. Returns how many. */
size_t xcm__sm_each(const xcm_sm *sm,
                    void (*fn)(void *ud, const char *data, size_t len),
                    void *ud);

/* Bytes of the queue's stanzas now (for the bound and tests). */
size_t xcm__sm_bytes(const xcm_sm *sm);
/* What the state holds in memory. */
size_t xcm__sm_footprint(const xcm_sm *sm);

#endif
