#include "util/buf.h"

#include <string.h>

#include "util/alloc.h"
#include "xcm/error.h"

void xcm__buf_init(xcm_buf *b, const xcm_allocator *alloc) {
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
  b->alloc = alloc;
}

void xcm__buf_free(xcm_buf *b) {
  xcm__free(b->alloc, b->data);
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
}

void xcm__buf_reset(xcm_buf *b) {
  b->len = 0;
}

int xcm__buf_reserve(xcm_buf *b, size_t extra) {
  size_t need, cap;
  char *p;

  if (extra > (size_t)-1 - b->len)
    return XCM_ENOMEM;
  need = b->len + extra;
  if (need <= b->cap)
    return 0;
  cap = b->cap ? b->cap : 256;
  while (cap < need)
    cap = cap > (size_t)-1 / 2 ? need : cap * 2;
  p = xcm__realloc(b->alloc, b->data, cap);
  if (p == NULL)
    return XCM_ENOMEM;
  b->data = p;
  b->cap = cap;
  return 0;
}

int xcm__buf_append(xcm_buf *b, const void *data, size_t len) {
  int err;

  if (len == 0)
    return 0;
  /* The common case, room already there, without the call. */
  if (b->cap - b->len < len && (err = xcm__buf_reserve(b, len)) != 0)
    return err;
  memcpy(b->data + b->len, data, len);
  b->len += len;
  return 0;
}

int xcm__buf_append_str(xcm_buf *b, const char *s) {
  return xcm__buf_append(b, s, strlen(s));
}

int xcm__buf_append_char(xcm_buf *b, char c) {
  return xcm__buf_append(b, &c, 1);
}

void xcm__buf_consume(xcm_buf *b, size_t n) {
  if (n >= b->len) {
    b->len = 0;
    return;
  }
  memmove(b->data, b->data + n, b->len - n);
  b->len -= n;
}
