#include "session/group.h"

#include <stdlib.h>
#include <string.h>

#include "client/authid.h"
#include "util/map.h"
#include "xcm/error.h"

/* A live resumption id. Allocated with the C library: the group belongs
 * to no instance, and instances may have allocators of their own. */
typedef struct entry {
  xcm_map_entry e;
  unsigned index;
  char *jid;
  char id[];
} entry;

typedef struct member {
  uv_async_t *inbox; /* NULL: a free slot, or an instance that left */
  xcm_group_item *head, *tail;
} member;

struct xcm_resume_group {
  uv_mutex_t mu;
  xcm_map ids;
  member m[XCM_GROUP_MAX];
};

int xcm_resume_group_new(xcm_resume_group **out) {
  xcm_resume_group *g;

  if (out == NULL)
    return XCM_EINVAL;
  *out = NULL;
  g = calloc(1, sizeof(*g));
  if (g == NULL)
    return XCM_ENOMEM;
  if (uv_mutex_init(&g->mu) != 0) {
    free(g);
    return XCM_ENOMEM;
  }
  xcm__map_init(&g->ids, NULL);
  *out = g;
  return 0;
}

static void free_entry(xcm_map_entry *e, void *ud) {
  xcm_resume_group *g = ud;
  entry *n = (entry *)e;

  xcm__map_remove(&g->ids, e);
  free(n->jid);
  free(n);
}

void xcm_resume_group_free(xcm_resume_group *g) {
  if (g == NULL)
    return;
  xcm__map_each(&g->ids, free_entry, g);
  xcm__map_free(&g->ids);
  uv_mutex_destroy(&g->mu);
  free(g);
}

int xcm__group_join(xcm_resume_group *g, uv_async_t *inbox, unsigned *index) {
  unsigned i;
  int err = XCM_ELIMIT;

  uv_mutex_lock(&g->mu);
  for (i = 0; i < XCM_GROUP_MAX; i++)
    if (g->m[i].inbox == NULL) {
      g->m[i].inbox = inbox;
      *index = i;
      err = 0;
      break;
    }
  uv_mutex_unlock(&g->mu);
  return err;
}

void xcm__group_leave(xcm_resume_group *g, unsigned index,
                      void (*drop)(xcm_group_item *it)) {
  xcm_group_item *it, *next;

  uv_mutex_lock(&g->mu);
  for (it = g->m[index].head; it != NULL; it = next) {
    next = it->next;
    drop(it);
  }
  g->m[index].head = g->m[index].tail = NULL;
  g->m[index].inbox = NULL;
  uv_mutex_unlock(&g->mu);
}

int xcm__group_add(xcm_resume_group *g, const char *id, unsigned index,
                   const char *jid) {
  size_t n = strlen(id);
  entry *e = calloc(1, sizeof(*e) + n + 1);
  int err;

  if (e == NULL)
    return XCM_ENOMEM;
  e->jid = strdup(jid);
  if (e->jid == NULL) {
    free(e);
    return XCM_ENOMEM;
  }
  memcpy(e->id, id, n + 1);
  e->e.key = e->id;
  e->index = index;
  uv_mutex_lock(&g->mu);
  err = xcm__map_put(&g->ids, &e->e);
  uv_mutex_unlock(&g->mu);
  if (err != 0) {
    free(e->jid);
    free(e);
  }
  return err;
}

void xcm__group_remove(xcm_resume_group *g, const char *id) {
  entry *e;

  uv_mutex_lock(&g->mu);
  e = (entry *)xcm__map_get(&g->ids, id, strlen(id));
  if (e != NULL)
    xcm__map_remove(&g->ids, &e->e);
  uv_mutex_unlock(&g->mu);
  if (e != NULL) {
    free(e->jid);
    free(e);
  }
}

int xcm__group_find(xcm_resume_group *g, const char *id, const char *authid,
                    unsigned *index) {
  entry *e;
  int err = XCM_ENOTFOUND;

  uv_mutex_lock(&g->mu);
  e = (entry *)xcm__map_get(&g->ids, id, strlen(id));
  if (e != NULL && xcm__authid_matches(authid, e->jid)) {
    *index = e->index;
    err = 0;
  }
  uv_mutex_unlock(&g->mu);
  return err;
}

int xcm__group_post(xcm_resume_group *g, unsigned index, xcm_group_item *it) {
  member *m = index < XCM_GROUP_MAX ? &g->m[index] : NULL;
  int err = XCM_ECLOSED;

  it->next = NULL;
  uv_mutex_lock(&g->mu);
  if (m != NULL && m->inbox != NULL) {
    if (m->tail != NULL)
      m->tail->next = it;
    else
      m->head = it;
    m->tail = it;
    /* Under the lock: the instance cannot leave and close it meanwhile. */
    uv_async_send(m->inbox);
    err = 0;
  }
  uv_mutex_unlock(&g->mu);
  return err;
}

xcm_group_item *xcm__group_take(xcm_resume_group *g, unsigned index) {
  xcm_group_item *it;

  uv_mutex_lock(&g->mu);
  it = g->m[index].head;
  g->m[index].head = g->m[index].tail = NULL;
  uv_mutex_unlock(&g->mu);
  return it;
}
