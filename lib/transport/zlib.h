/* zlib stream compression (XEP-0138) for the stream layer: one inflater
 * and one deflater per stream, both allocated through the context's
 * allocator so that their memory is counted and can fail cleanly.
 *
 * Inflate uses windowBits 15: the window size is the peer's choice, sent
 * in the zlib header, and must be honoured (zlib allocates the window
 * lazily, sized as the header says). Deflate uses a small window and few
 * hash chains (see zlib.c): XMPP stanzas repeat their tags and
 * namespaces within a few hundred bytes, so a large window buys little
 * and would be held by every idle compressed stream. */
#ifndef XCM_TRANSPORT_ZLIB_H
#define XCM_TRANSPORT_ZLIB_H

#include <stddef.h>

#include "util/buf.h"
#include "xcm/alloc.h"

typedef struct xcm_zlib xcm_zlib;

int xcm__zlib_new(xcm_zlib **out, const xcm_allocator *alloc);
void xcm__zlib_free(xcm_zlib *z);

/* Inflate from *in (advanced past what was used) into out, at most cap
 * bytes; *produced says how many. 0, or XCM_EZLIB for corrupt data or
 * data after the end of the zlib stream. With *in_len 0 it returns
 * output still held inside zlib, if any. */
int xcm__zlib_inflate(xcm_zlib *z, const char **in, size_t *in_len, char *out,
                      size_t cap, size_t *produced);

/* Whether the last inflate filled its output: zlib may then hold more
 * output that needs no more input (a reader that stopped there must come
 * back for it). */
int xcm__zlib_inflate_held(const xcm_zlib *z);

/* Allocate and free through a from now on (a stream moved to another
 * instance, whose allocator must be the same one: blocks allocated
 * through the old are freed through it). */
void xcm__zlib_set_alloc(xcm_zlib *z, const xcm_allocator *a);

/* Compress all of data and end with a sync flush, so that the peer can
 * inflate every byte given so far. Output goes to chunk (cap bytes) and
 * each full or final chunk is handed to emit; emit returns 0 or an error
 * that stops the deflate and is returned. */
int xcm__zlib_deflate(xcm_zlib *z, const char *data, size_t len, char *chunk,
                      size_t cap, int (*emit)(void *ud, const char *, size_t),
                      void *ud);

/* Compress all of data with a sync flush, appending to out. */
int xcm__zlib_deflate_buf(xcm_zlib *z, const char *data, size_t len,
                          xcm_buf *out);

/* Bytes zlib has allocated for this stream, plus the struct. */
size_t xcm__zlib_footprint(const xcm_zlib *z);

#endif
