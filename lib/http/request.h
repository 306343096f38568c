/* One HTTP request read by http-parser (Debian's libhttp-parser 2.9),
 * bounded: the request line and headers within max_header bytes (the
 * few headers the CM reads kept, NUL-terminated, in one arena of that
 * size), a body within max_body. Allocated at a request's first byte
 * and freed once it is dispatched (http/server.c), so that a
 * connection between requests holds none of it.
 *
 * The parser is paused at the end of each request: nothing after it is
 * read until the owner feeds it to the next reading. */
#ifndef XCM_HTTP_REQUEST_H
#define XCM_HTTP_REQUEST_H

#include <http_parser.h>
#include <stddef.h>
#include <stdint.h>

#include "util/buf.h"
#include "xcm/alloc.h"

/* The headers kept. */
enum {
  H_HOST,
  H_ORIGIN,
  H_CONNECTION,
  H_UPGRADE,
  H_WS_KEY,
  H_WS_VERSION,
  H_WS_PROTOCOL,
  H_CONTENT_TYPE,
  H_EXPECT,
  H_COUNT
};

typedef struct xcm_http_reading xcm_http_reading;

/* Called once the headers are read and found within the limits (the
 * connection sends a 100 Continue, moves to the idle timeout). */
typedef void (*xcm_http_head_fn)(void *ud, xcm_http_reading *rd);

struct xcm_http_reading {
  http_parser p;
  size_t max_body;
  xcm_http_head_fn head;
  void *ud;
  const xcm_allocator *alloc;
  uint64_t start; /* the owner's: when its first byte came */
  int status;     /* a refusal decided while reading, or 0 */
  int headers_done;
  int done;
  size_t hbytes; /* header bytes so far */
  char field[32];
  size_t field_len;
  int which; /* the header whose value is being read, or -1 */
  int in_value;
  size_t url; /* offsets into arena, or (size_t)-1 */
  size_t val[H_COUNT];
  xcm_buf body;
  size_t cap, used;
  char arena[];
};

xcm_http_reading *xcm__http_reading_new(const xcm_allocator *a,
                                        size_t max_header, size_t max_body,
                                        xcm_http_head_fn head, void *ud);
void xcm__http_reading_free(xcm_http_reading *rd);
/* Feed bytes: 1 when the request is complete (*used: the bytes it took;
 * the rest belong to the next request, or to the new protocol after an
 * upgrade), 0 when it needs more (all of data taken), or the HTTP
 * status to refuse it with (400, 413, 414, 431, 503). After 1 or a
 * status, feed no more. */
int xcm__http_reading_feed(xcm_http_reading *rd, const char *data, size_t len,
                           size_t *used);
/* A kept header's value, or NULL when absent. */
const char *xcm__http_reading_header(const xcm_http_reading *rd, int h);
/* The request target, NUL-terminated (the owner may cut it). */
char *xcm__http_reading_target(xcm_http_reading *rd);
/* Bytes held now. */
size_t xcm__http_reading_footprint(const xcm_http_reading *rd);

#endif
