/* A growable byte buffer. Appends never fail silently: every append
 * returns 0 or XCM_ENOMEM, and a buffer whose append failed stays as it
 * was. The buffer keeps its capacity across xcm__buf_reset() so a
 * connection can reuse it for every stanza; xcm__buf_free() gives the
 * memory back when the connection goes idle. */
#ifndef XCM_UTIL_BUF_H
#define XCM_UTIL_BUF_H

#include <stddef.h>

#include "xcm/alloc.h"

typedef struct xcm_buf {
  char *data;
  size_t len;
  size_t cap;
  const xcm_allocator *alloc; /* borrowed; may be NULL */
} xcm_buf;

void xcm__buf_init(xcm_buf *b, const xcm_allocator *alloc);
void xcm__buf_free(xcm_buf *b);
void xcm__buf_reset(xcm_buf *b);

/* Make room for at least extra more bytes. */
int xcm__buf_reserve(xcm_buf *b, size_t extra);
int xcm__buf_append(xcm_buf *b, const void *data, size_t len);
int xcm__buf_append_str(xcm_buf *b, const char *s);
int xcm__buf_append_char(xcm_buf *b, char c);

/* Drop the first n bytes (n <= len). */
void xcm__buf_consume(xcm_buf *b, size_t n);

#endif
