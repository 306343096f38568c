/* The intrusive string map. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "util/map.h"

typedef struct item {
  xcm_map_entry e;
  char key[32];
  int value;
} item;

static void count_each(xcm_map_entry *e, void *ud) {
  (void)e;
  (*(int *)ud)++;
}

static void remove_odd(xcm_map_entry *e, void *ud) {
  item *it = (item *)e;

  if (it->value % 2)
    xcm__map_remove(ud, e);
}

static void test_put_get_remove(void) {
  enum { N = 5000 };
  item *items = calloc(N, sizeof(*items));
  xcm_map m;
  int i, seen = 0;

  REQUIRE(items != NULL);
  xcm__map_init(&m, NULL);
  CHECK(xcm__map_get(&m, "x", 1) == NULL);
  for (i = 0; i < N; i++) {
    snprintf(items[i].key, sizeof items[i].key, "sid-%d", i);
    items[i].e.key = items[i].key;
    items[i].value = i;
    REQUIRE(xcm__map_put(&m, &items[i].e) == 0);
  }
  CHECK_INT(m.count, N);
  for (i = 0; i < N; i++) {
    item *it = (item *)xcm__map_get(&m, items[i].key, strlen(items[i].key));
    if (!CHECK(it == &items[i]))
      break;
  }
  /* Lookups take a length: a prefix of a key is not the key. */
  CHECK(xcm__map_get(&m, "sid-12", 4) == NULL);
  CHECK(xcm__map_get(&m, "sid-12", 5) == &items[1].e);
  CHECK(xcm__map_get(&m, "sid-1x", 6) == NULL);
  xcm__map_each(&m, remove_odd, &m);
  CHECK_INT(m.count, N / 2);
  xcm__map_each(&m, count_each, &seen);
  CHECK_INT(seen, N / 2);
  CHECK(xcm__map_get(&m, "sid-3", 5) == NULL);
  CHECK(xcm__map_get(&m, "sid-4", 5) == &items[4].e);
  xcm__map_free(&m);
  free(items);
}

static void test_seeds_differ(void) {
  xcm_map a, b;

  xcm__map_init(&a, NULL);
  xcm__map_init(&b, NULL);
  /* Peers must not be able to predict bucket placement. */
  CHECK(a.seed != b.seed);
  xcm__map_free(&a);
  xcm__map_free(&b);
}

static const xcm_test tests[] = {
    {"put_get_remove", test_put_get_remove},
    {"seeds_differ", test_seeds_differ},
};

int main(int argc, char **argv) {
  return xcm_test_main(argc, argv, XCM_TESTS(tests));
}
