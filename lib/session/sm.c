#include "session/sm.h"

#include <string.h>

#include "core/ctx.h"
#include "util/alloc.h"
#include "xcm/error.h"

/* Each stanza in the queue is its length, then its bytes. */
#define HDR sizeof(uint32_t)

xcm_sm *xcm__sm_new(const xcm_allocator *a, uint32_t start) {
  xcm_sm *sm = xcm__calloc(a, sizeof(*sm));

  if (sm != NULL)
    sm->h_in = sm->h_out = sm->asked = start;
  return sm;
}

static void forget(const xcm_allocator *a, xcm_sm *sm) {
  xcm__free(a, sm->q);
  sm->q = NULL;
  sm->head = sm->len = sm->cap = sm->count = 0;
}

void xcm__sm_free(const xcm_allocator *a, xcm_sm *sm) {
  if (sm == NULL)
    return;
  forget(a, sm);
  xcm__free(a, sm);
}

size_t xcm__sm_bytes(const xcm_sm *sm) {
  /* What the stanzas take, their length fields aside. */
  return (size_t)(sm->len - sm->head) - (size_t)sm->count * HDR;
}

size_t xcm__sm_footprint(const xcm_sm *sm) {
  return sm != NULL ? sizeof(*sm) + sm->cap : 0;
}

/* Room for need more bytes at the end: what was acknowledged at the
 * front is reused first, then the buffer doubles. */
static int room(const xcm_allocator *a, xcm_sm *sm, size_t need) {
  size_t used = sm->len - sm->head, cap;
  char *q;

  if (need > UINT32_MAX - used)
    return XCM_ELIMIT;
  if (sm->len + need <= sm->cap)
    return 0;
  if (sm->head > 0) {
    memmove(sm->q, sm->q + sm->head, used);
    sm->len = (uint32_t)used;
    sm->head = 0;
    if (used + need <= sm->cap)
      return 0;
  }
  cap = sm->cap ? sm->cap : 256;
  while (cap < used + need)
    cap = cap > UINT32_MAX / 2 ? UINT32_MAX : cap * 2;
  q = xcm__realloc(a, sm->q, cap);
  if (q == NULL)
    return XCM_ENOMEM;
  sm->q = q;
  sm->cap = (uint32_t)cap;
  return 0;
}

int xcm__sm_push(const xcm_allocator *a, xcm_sm *sm, const char *data,
                 size_t len, uint32_t max_count, size_t max_bytes) {
  uint32_t n;
  int err;

  if (max_count != XCM__OFF && sm->count >= max_count)
    return XCM_ELIMIT;
  if (max_bytes != XCM__OFF &&
      (len > max_bytes || xcm__sm_bytes(sm) > max_bytes - len))
    return XCM_ELIMIT;
  if (len > UINT32_MAX - HDR)
    return XCM_ELIMIT;
  err = room(a, sm, HDR + len);
  if (err != 0)
    return err;
  n = (uint32_t)len;
  memcpy(sm->q + sm->len, &n, HDR);
  memcpy(sm->q + sm->len + HDR, data, len);
  sm->len += (uint32_t)(HDR + len);
  sm->count++;
  sm->h_out++;
  sm->since_bytes =
      len > UINT32_MAX - sm->since_bytes ? UINT32_MAX : sm->since_bytes + n;
  return 0;
}

int xcm__sm_ack(const xcm_allocator *a, xcm_sm *sm, uint32_t h) {
  /* Counters wrap (XEP-0198 section 4): everything is modulo 2^32. The
   * oldest unacknowledged stanza is number acked + 1; h may cover up to
   * all of the queue, and never beyond what was sent. */
  uint32_t acked = sm->h_out - sm->count;
  uint32_t n = h - acked, len;

  if (n > sm->count)
    return XCM_EPROTO;
  while (n-- > 0) {
    memcpy(&len, sm->q + sm->head, HDR);
    sm->head += (uint32_t)HDR + len;
    sm->count--;
  }
  if (sm->count == 0)
    forget(a, sm);
  return 0;
}

size_t xcm__sm_each(const xcm_sm *sm,
                    void (*fn)(void *ud, const char *data, size_t len),
                    void *ud) {
  size_t n = 0;
  uint32_t at, len;

  for (at = sm->head; at < sm->len; at += (uint32_t)HDR + len, n++) {
    memcpy(&len, sm->q + at, HDR);
    fn(ud, sm->q + at + HDR, len);
  }
  return n;
}

size_t xcm__sm_drain(const xcm_allocator *a, xcm_sm *sm,
                     void (*fn)(void *ud, const char *data, size_t len),
                     void *ud) {
  size_t n = xcm__sm_each(sm, fn, ud);

  forget(a, sm);
  return n;
}
