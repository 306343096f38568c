#include "util/sized.h"

#include <stdio.h>
#include <string.h>

#include "xcm/error.h"

static void say(char *errbuf, size_t errlen, const char *fmt, const char *a,
                const char *b) {
  if (errbuf != NULL && errlen > 0)
    snprintf(errbuf, errlen, fmt, a, b);
}

int xcm__sized_read(void *out, size_t own, const void *in, size_t min,
                    const char *what, const char *init, char *errbuf,
                    size_t errlen) {
  size_t size;

  if (in == NULL) {
    say(errbuf, errlen, "%s is NULL: call %s", what, init);
    return XCM_EINVAL;
  }
  memcpy(&size, in, sizeof size);
  if (size < min) {
    say(errbuf, errlen, "%s not initialised: call %s", what, init);
    return XCM_EINVAL;
  }
  /* A newer caller's fields this library does not have: only their
   * zero (the value a newer library gives them by default, by the rule
   * in doc/abi.md) can be ignored safely. */
  for (size_t i = own; i < size; i++)
    if (((const unsigned char *)in)[i] != 0) {
      say(errbuf, errlen,
          "%s has fields this libxcm does not know (set beyond its %s): "
          "built against a newer header?",
          what, "size");
      return XCM_EINVAL;
    }
  memcpy(out, in, size < own ? size : own);
  memcpy(out, &own, sizeof own);
  return 0;
}

void xcm__sized_write(void *out, size_t size, const void *in, size_t own) {
  memcpy(out, in, size < own ? size : own);
  if (size > own)
    memset((char *)out + own, 0, size - own);
}

int xcm__sized_init(void *out, size_t size, const void *defaults, size_t own,
                    size_t min) {
  if (out == NULL || size < min)
    return XCM_EINVAL;
  xcm__sized_write(out, size, defaults, own);
  memcpy(out, &size, sizeof size);
  return 0;
}
