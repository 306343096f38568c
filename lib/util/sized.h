/* Structs that grow (doc/abi.md): every struct a caller hands in starts
 * with its size_t size, the sizeof the caller was compiled with, and
 * every struct the library fills for a caller comes with the caller's
 * size. These two helpers are the only places that reconcile the
 * caller's size with the library's own, so that a caller built against
 * an older or a newer header is read and written the same way
 * everywhere. */
#ifndef XCM_UTIL_SIZED_H
#define XCM_UTIL_SIZED_H

#include <stddef.h>

/* Read a caller's struct into out (own bytes, already holding the
 * library's defaults): the first min(size, own) bytes of in are copied
 * over them, so fields past the caller's size keep their defaults. min
 * is the least size accepted (the end of the first field after size).
 * XCM_EINVAL with errbuf filled when in is NULL or its size is below
 * min (never initialised), or when it is larger than own and a byte the
 * library does not know is not zero (a newer caller asked for something
 * this library cannot do). what names the struct and init its
 * initialiser, for the message. On success out's size is own. */
int xcm__sized_read(void *out, size_t own, const void *in, size_t min,
                    const char *what, const char *init, char *errbuf,
                    size_t errlen);

/* Write the library's struct in (own bytes) into the caller's out of
 * size bytes: min(size, own) bytes are written, and a caller's tail
 * beyond own (a newer header) is zeroed. */
void xcm__sized_write(void *out, size_t size, const void *in, size_t own);

/* Fill a caller's struct of size bytes from the library's defaults (own
 * bytes): as xcm__sized_write, then the size field set to size.
 * XCM_EINVAL when out is NULL or size < min. */
int xcm__sized_init(void *out, size_t size, const void *defaults, size_t own,
                    size_t min);

#endif
