/* An intrusive hash map keyed by NUL-terminated strings. The entry lives
 * inside the caller's struct and its key points at the caller's own copy
 * of the string, so a lookup allocates nothing and an entry costs two
 * words. Buckets double as the map grows. The seed comes from the system
 * random source so that keys chosen by a peer cannot pile into one
 * bucket. */
#ifndef XCM_UTIL_MAP_H
#define XCM_UTIL_MAP_H

#include <stddef.h>
#include <stdint.h>

#include "xcm/alloc.h"

typedef struct xcm_map_entry xcm_map_entry;
struct xcm_map_entry {
  xcm_map_entry *next;
  const char *key; /* borrowed from the containing struct */
};

typedef struct xcm_map {
  xcm_map_entry **buckets;
  size_t nbuckets; /* a power of two, or 0 */
  size_t count;
  uint64_t seed;
  const xcm_allocator *alloc;
} xcm_map;

void xcm__map_init(xcm_map *m, const xcm_allocator *alloc);
void xcm__map_free(xcm_map *m); /* entries stay the caller's */

/* Insert e (e->key set by the caller). The key must not be present. */
int xcm__map_put(xcm_map *m, xcm_map_entry *e);
xcm_map_entry *xcm__map_get(const xcm_map *m, const char *key, size_t len);
void xcm__map_remove(xcm_map *m, xcm_map_entry *e);

/* Visit every entry; fn may remove the entry it is given. */
void xcm__map_each(xcm_map *m, void (*fn)(xcm_map_entry *e, void *ud),
                   void *ud);

#endif
