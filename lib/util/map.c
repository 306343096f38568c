#include "util/map.h"

#include <string.h>
#include <uv.h>

#include "util/alloc.h"
#include "xcm/error.h"

void xcm__map_init(xcm_map *m, const xcm_allocator *alloc) {
  memset(m, 0, sizeof(*m));
  m->alloc = alloc;
  if (uv_random(NULL, NULL, &m->seed, sizeof(m->seed), 0, NULL) != 0)
    m->seed = (uint64_t)(uintptr_t)m * 0x9e3779b97f4a7c15u;
}

void xcm__map_free(xcm_map *m) {
  xcm__free(m->alloc, m->buckets);
  m->buckets = NULL;
  m->nbuckets = 0;
  m->count = 0;
}

/* FNV-1a over the seed and the key, with a final mix. */
static uint64_t hash(const xcm_map *m, const char *key, size_t len) {
  uint64_t h = 0xcbf29ce484222325u ^ m->seed;
  size_t i;

  for (i = 0; i < len; i++) {
    h ^= (unsigned char)key[i];
    h *= 0x100000001b3u;
  }
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdu;
  h ^= h >> 33;
  return h;
}

static int grow(xcm_map *m) {
  size_t n = m->nbuckets ? m->nbuckets * 2 : 16, i;
  xcm_map_entry **b = xcm__calloc(m->alloc, n * sizeof(*b));
  xcm_map_entry *e, *next;

  if (b == NULL)
    return XCM_ENOMEM;
  for (i = 0; i < m->nbuckets; i++) {
    for (e = m->buckets[i]; e != NULL; e = next) {
      size_t at = hash(m, e->key, strlen(e->key)) & (n - 1);
      next = e->next;
      e->next = b[at];
      b[at] = e;
    }
  }
  xcm__free(m->alloc, m->buckets);
  m->buckets = b;
  m->nbuckets = n;
  return 0;
}

int xcm__map_put(xcm_map *m, xcm_map_entry *e) {
  size_t at;

  if (m->count >= m->nbuckets) {
    int err = grow(m);
    /* A full table still works, only slower: grow again next time. */
    if (err != 0 && m->nbuckets == 0)
      return err;
  }
  at = hash(m, e->key, strlen(e->key)) & (m->nbuckets - 1);
  e->next = m->buckets[at];
  m->buckets[at] = e;
  m->count++;
  return 0;
}

xcm_map_entry *xcm__map_get(const xcm_map *m, const char *key, size_t len) {
  xcm_map_entry *e;

  if (m->nbuckets == 0)
    return NULL;
  for (e = m->buckets[hash(m, key, len) & (m->nbuckets - 1)]; e != NULL;
       e = e->next)
    if (strncmp(e->key, key, len) == 0 && e->key[len] == '\0')
      return e;
  return NULL;
}

void xcm__map_remove(xcm_map *m, xcm_map_entry *e) {
  xcm_map_entry **link;

  if (m->nbuckets == 0)
    return;
  link = &m->buckets[hash(m, e->key, strlen(e->key)) & (m->nbuckets - 1)];
  while (*link != NULL && *link != e)
    link = &(*link)->next;
  if (*link == e) {
    *link = e->next;
    e->next = NULL;
    m->count--;
  }
}

void xcm__map_each(xcm_map *m, void (*fn)(xcm_map_entry *e, void *ud),
                   void *ud) {
  size_t i;
  xcm_map_entry *e, *next;

  for (i = 0; i < m->nbuckets; i++)
    for (e = m->buckets[i]; e != NULL; e = next) {
      next = e->next;
      fn(e, ud);
    }
}
