/* Allocator hook.
 *
 * Every object libxcm creates takes an optional allocator; NULL means the
 * C library's. One function does all three jobs, as in Lua: with size 0 it
 * frees ptr and returns NULL; otherwise it behaves as realloc(ptr, size)
 * and returns NULL on failure, leaving ptr untouched. Tests use it to inject
 * allocation failures at every site.
 *
 * Not routed through it: expat's and mbedTLS's own internal allocations
 * (their hooks take no user pointer and would need a global). Their
 * failures still surface as clean errors.
 */
#ifndef XCM_ALLOC_H
#define XCM_ALLOC_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Filled by the caller with .size = sizeof it, and kept alive (it is
 * used by pointer) for as long as the object it was given to. */
typedef struct xcm_allocator {
  size_t size; /* sizeof the caller's struct */
  void *(*realloc)(void *ud, void *ptr, size_t size);
  void *ud;
} xcm_allocator;

#ifdef __cplusplus
}
#endif
#endif
