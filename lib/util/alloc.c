#include "util/alloc.h"

#include <stdlib.h>
#include <string.h>

void *xcm__realloc(const xcm_allocator *a, void *ptr, size_t size) {
  if (a != NULL && a->realloc != NULL)
    return a->realloc(a->ud, ptr, size);
  if (size == 0) {
    free(ptr);
    return NULL;
  }
  return realloc(ptr, size);
}

void *xcm__alloc(const xcm_allocator *a, size_t size) {
  /* A zero-size request still yields a distinct pointer, as malloc may. */
  return xcm__realloc(a, NULL, size ? size : 1);
}

void *xcm__calloc(const xcm_allocator *a, size_t size) {
  void *p = xcm__alloc(a, size);
  if (p != NULL)
    memset(p, 0, size);
  return p;
}

void xcm__free(const xcm_allocator *a, void *ptr) {
  if (ptr != NULL)
    xcm__realloc(a, ptr, 0);
}

char *xcm__strndup(const xcm_allocator *a, const char *s, size_t len) {
  char *p = xcm__alloc(a, len + 1);
  if (p == NULL)
    return NULL;
  memcpy(p, s, len);
  p[len] = '\0';
  return p;
}
