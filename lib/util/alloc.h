/* Internal allocation helpers over the public xcm_allocator hook. A NULL
 * allocator means the C library's. */
#ifndef XCM_UTIL_ALLOC_H
#define XCM_UTIL_ALLOC_H

#include <stddef.h>

#include "xcm/alloc.h"

void *xcm__alloc(const xcm_allocator *a, size_t size);
void *xcm__calloc(const xcm_allocator *a, size_t size);
void *xcm__realloc(const xcm_allocator *a, void *ptr, size_t size);
void xcm__free(const xcm_allocator *a, void *ptr);

/* A copy of s[0..len) with a terminating NUL, or NULL. */
char *xcm__strndup(const xcm_allocator *a, const char *s, size_t len);

#endif
