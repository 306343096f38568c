#include "harness.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int case_failed;
static unsigned failed_checks;
static jmp_buf case_jmp;
static uv_thread_t main_thread; /* the only one that may longjmp */
static unsigned rand_state;
static unsigned case_seed;

static void fail_line(const char *expr, const char *file, int line) {
  case_failed = 1;
  failed_checks++;
  printf("# FAILED %s:%d: %s\n", file, line, expr);
}

int xcm_test_check(int ok, const char *expr, const char *file, int line) {
  if (!ok)
    fail_line(expr, file, line);
  return ok;
}

void xcm_test_require(int ok, const char *expr, const char *file, int line) {
  if (ok)
    return;
  fail_line(expr, file, line);
  /* case_jmp belongs to the main thread's stack: from another thread a
   * longjmp would be undefined, so the run ends here instead. */
  if (!uv_thread_equal(&main_thread, &(uv_thread_t){uv_thread_self()})) {
    printf("Bail out! a REQUIRE failed outside the main thread\n");
    fflush(stdout);
    exit(1);
  }
  longjmp(case_jmp, 1);
}

static void print_escaped(const char *label, const void *p, size_t len) {
  const unsigned char *s = p;
  size_t i;

  printf("#   %s (%zu bytes): \"", label, len);
  for (i = 0; i < len && i < 2000; i++) {
    if (s[i] == '\n')
      printf("\\n");
    else if (s[i] < 0x20 || s[i] == 0x7f)
      printf("\\x%02x", s[i]);
    else
      putchar(s[i]);
  }
  printf("%s\"\n", len > 2000 ? "..." : "");
}

int xcm_test_check_mem(const void *got, size_t got_len, const void *want,
                       size_t want_len, const char *expr, const char *file,
                       int line) {
  if (got != NULL && got_len == want_len &&
      (want_len == 0 || memcmp(got, want, want_len) == 0))
    return 1;
  fail_line(expr, file, line);
  if (got == NULL)
    printf("#   got NULL\n");
  else
    print_escaped("got ", got, got_len);
  print_escaped("want", want, want_len);
  return 0;
}

int xcm_test_check_str(const char *got, const char *want, const char *expr,
                       const char *file, int line) {
  return xcm_test_check_mem(got, got ? strlen(got) : 0, want, strlen(want),
                            expr, file, line);
}

int xcm_test_check_int(long long got, long long want, const char *expr,
                       const char *file, int line) {
  if (got == want)
    return 1;
  fail_line(expr, file, line);
  printf("#   got %lld, want %lld\n", got, want);
  return 0;
}

void xcm_test_note(const char *fmt, ...) {
  va_list ap;

  printf("# ");
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  printf("\n");
}

enum { MAX_CLASSES = 32 };
static struct {
  const char *name;
  unsigned tried;
} classes[MAX_CLASSES];
static size_t nclasses;

unsigned xcm_test_failures(void) {
  return failed_checks;
}

void xcm_test_tried(const char *cls, unsigned failures_before) {
  size_t i;

  for (i = 0; i < nclasses; i++)
    if (strcmp(classes[i].name, cls) == 0)
      break;
  if (i == nclasses) {
    /* A table too small is the test's bug: fail loudly, not undercount. */
    if (!xcm_test_check(nclasses < MAX_CLASSES, "hostile classes fit", __FILE__,
                        __LINE__))
      return;
    classes[nclasses].name = cls;
    classes[nclasses].tried = 0;
    nclasses++;
  }
  if (failed_checks == failures_before)
    classes[i].tried++;
}

void xcm_test_tried_if(const char *cls, int ok) {
  /* A failed check has been counted already: make before differ. */
  xcm_test_tried(cls, ok ? failed_checks : failed_checks + 1);
}

static void print_tried(void) {
  size_t i;

  for (i = 0; i < nclasses; i++)
    printf("# table hostile %s tried=%u\n", classes[i].name, classes[i].tried);
}

const char *xcm_test_cert_dir(void) {
  const char *dir = getenv("XCM_CERTS_DIR");

  return dir != NULL ? dir : ".";
}

const char *xcm_test_cert(const char *name) {
  static char path[4][1100];
  static int i;

  i = (i + 1) % 4;
  snprintf(path[i], sizeof path[i], "%s/%s", xcm_test_cert_dir(), name);
  return path[i];
}

unsigned xcm_test_rand(void) {
  /* xorshift32: reproducible across libcs, unlike rand(). */
  rand_state ^= rand_state << 13;
  rand_state ^= rand_state >> 17;
  rand_state ^= rand_state << 5;
  return rand_state;
}

static void on_timeout(uv_timer_t *t) {
  *(int *)t->data = 1;
}

int xcm_test_run_until(uv_loop_t *loop, int (*pred)(void *), void *ud,
                       unsigned ms) {
  uv_timer_t t;
  int expired = 0, ok;

  uv_timer_init(loop, &t);
  t.data = &expired;
  uv_timer_start(&t, on_timeout, ms, 0);
  while (!(ok = pred(ud)) && !expired)
    uv_run(loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
  return ok;
}

static int never(void *ud) {
  (void)ud;
  return 0;
}

void xcm_test_run_for(uv_loop_t *loop, unsigned ms) {
  xcm_test_run_until(loop, never, NULL, ms);
}

/* setjmp lives in its own frame so no local of the caller can be
 * clobbered by the longjmp of a failed REQUIRE. */
static void run_case(void (*fn)(void)) {
  if (setjmp(case_jmp) == 0)
    fn();
}

int xcm_test_main(int argc, char **argv, const xcm_test *tests, size_t n) {
  const char *only = argc > 1 ? argv[1] : NULL;
  const char *seed_env = getenv("XCM_TEST_SEED");
  unsigned base_seed = seed_env ? (unsigned)strtoul(seed_env, NULL, 0) : 1u;
  size_t i, run = 0;
  int failures = 0;

  main_thread = uv_thread_self();

  setvbuf(stdout, NULL, _IOLBF, 0);
  /* A peer that resets must give an error, not kill the test. */
  signal(SIGPIPE, SIG_IGN);
  for (i = 0; i < n; i++)
    if (only == NULL || strcmp(only, tests[i].name) == 0)
      run++;
  printf("1..%zu\n", run);
  run = 0;
  for (i = 0; i < n; i++) {
    if (only != NULL && strcmp(only, tests[i].name) != 0)
      continue;
    case_failed = 0;
    case_seed = base_seed + (unsigned)i * 2654435761u;
    rand_state = case_seed ? case_seed : 1;
    run_case(tests[i].fn);
    run++;
    if (case_failed) {
      failures++;
      printf("not ok %zu - %s (seed %u)\n", run, tests[i].name, case_seed);
    } else {
      printf("ok %zu - %s\n", run, tests[i].name);
    }
  }
  print_tried();
  return failures ? 1 : 0;
}
