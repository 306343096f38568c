/* The runtime context of one libxcm instance (a CM, or a testkit
 * upstream) on one caller-supplied libuv loop. Everything that would be
 * a global elsewhere lives here: the allocator, the pool of XML parsers,
 * the shared read buffer, the list of streams with output to flush, the
 * logger. Two contexts on two loops know nothing of each other.
 *
 * Writes are not sent at once: they are appended to the stream and
 * flushed from a uv_prepare handle just before the loop polls again (as
 * Redis does before sleeping), so a burst of stanzas for one connection
 * costs one write system call, and one TLS record or zlib flush. It is a
 * prepare rather than a check handle because a check runs only after a
 * poll: a write made in a timer or close callback (a keepalive) would
 * then wait for the poll to return, forever on a quiet loop. Before the
 * poll, every phase's writes are sent. */
#ifndef XCM_CORE_CTX_H
#define XCM_CORE_CTX_H

#include <stdarg.h>
#include <stddef.h>
#include <uv.h>

#include "util/buf.h"
#include "xcm/alloc.h"
#include "xcm/log.h"
#include "xml/reader.h"

typedef struct xcm_stream xcm_stream;

/* A limit or timeout switched off: the inner layers' name for the API's
 * XCM_UNLIMITED (options.c checks that they agree). */
#define XCM__OFF 0xffffffffu

/* Size of the read buffer shared by every stream of a context. */
#define XCM_READ_BUF 65536

typedef struct xcm_ctx {
  uv_loop_t *loop; /* borrowed */
  const xcm_allocator *alloc;
  xcm_xml_pool *xml;
  char *read_buf; /* XCM_READ_BUF bytes, lent to one read at a time */
  int read_buf_busy;
  char *plain_buf; /* XCM_READ_BUF bytes: TLS and zlib output */
  /* For building a short message and writing it at once; never held
   * across a call that could use it too. */
  xcm_buf scratch;
  uv_prepare_t flusher;   /* the stream layer's; see above */
  xcm_stream *flush_head; /* streams with output waiting */
  xcm_log_fn log;
  void *log_ud;
  int log_level;
  int closing;
  void (*close_cb)(void); /* xcm__ctx_close's callback, type-erased */
} xcm_ctx;

int xcm__ctx_init(xcm_ctx *ctx, uv_loop_t *loop, const xcm_allocator *alloc);
/* Stops the flusher; close_cb runs once its handle is closed, after which
 * the context may be freed. Every stream must be closed first. */
void xcm__ctx_close(xcm_ctx *ctx, void (*close_cb)(xcm_ctx *ctx));

void xcm__log(xcm_ctx *ctx, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Fill buf with len bytes from the system's random source. */
int xcm__random(void *buf, size_t len);
/* 128 random bits as 22 characters of base64url and a NUL, into out
 * (XCM__TOKEN_SIZE bytes): stream ids and resumption ids, which nobody
 * may guess. 0, or an error from xcm__random. */
#define XCM__TOKEN_SIZE 23
int xcm__random_token(char *out);

#endif
