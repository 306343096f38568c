#include "world.h"

#include "harness.h"

static void cm_down(xcm_cm *cm, void *ud) {
  (void)cm;
  ++*(int *)ud;
}

static void kit_down(xcm_testkit *kit, void *ud) {
  (void)kit;
  ++*(int *)ud;
}

void xcm_test_cm_shutdown(xcm_cm *cm, unsigned drain_ms, int *down) {
  xcm_cm_shutdown(cm, drain_ms, cm_down, down);
}

int xcm_test_kit_clean(const xcm_testkit *kit) {
  xcm_testkit_stats st;

  xcm_testkit_get_stats(kit, &st);
  if (st.violations == 0)
    return 1;
  xcm_test_note("the testkit saw %llu protocol violation(s); the first: %s",
                (unsigned long long)st.violations,
                xcm_testkit_first_violation(kit));
  return 0;
}

void xcm_test_world_end(uv_loop_t *loop, xcm_cm *cm, xcm_testkit *kit,
                        int *down) {
  while (*down < 1)
    uv_run(loop, UV_RUN_ONCE);
  xcm_testkit_close(kit, kit_down, down);
  while (*down < 2)
    uv_run(loop, UV_RUN_ONCE);
  CHECK(xcm_test_kit_clean(kit));
  xcm_cm_free(cm);
  xcm_testkit_free(kit);
  uv_run(loop, UV_RUN_DEFAULT);
  CHECK_INT(uv_loop_close(loop), 0);
}
