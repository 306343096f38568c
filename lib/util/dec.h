/* An unsigned decimal attribute value, as XML schemas' unsignedInt and
 * unsignedLong have it: digits only (no sign, no white space), at most
 * max. For XEP-0198's h (client/client.c) and XEP-0124's rid, wait,
 * hold and pause (web/bosh.c). */
#ifndef XCM_UTIL_DEC_H
#define XCM_UTIL_DEC_H

#include <stdint.h>

#include "xcm/error.h"

/* 0 with *out set, or XCM_EINVAL for NULL, "", a non-digit or a value
 * over max (found before it could overflow). */
static inline int xcm__parse_dec(const char *v, uint64_t max, uint64_t *out) {
  uint64_t n = 0;

  if (v == NULL || *v == '\0')
    return XCM_EINVAL;
  for (; *v != '\0'; v++) {
    uint64_t d = (uint64_t)(*v - '0');

    if (*v < '0' || *v > '9' || d > max || n > (max - d) / 10)
      return XCM_EINVAL;
    n = n * 10 + d;
  }
  *out = n;
  return 0;
}

#endif
