/* A small test harness: each tests/test-<feature>.c lists its cases in a
 * table and hands it to xcm_test_main(), which runs them and prints TAP
 * (meson runs the executables with protocol 'tap').
 *
 * CHECK() records a failure and carries on; REQUIRE() records it and ends
 * the case. Both need the file and line, so they are macros. */
#ifndef XCM_TESTS_HARNESS_H
#define XCM_TESTS_HARNESS_H

#include <stddef.h>
#include <uv.h>

typedef struct xcm_test {
  const char *name;
  void (*fn)(void);
} xcm_test;

int xcm_test_main(int argc, char **argv, const xcm_test *tests, size_t n);

int xcm_test_check(int ok, const char *expr, const char *file, int line);
void xcm_test_require(int ok, const char *expr, const char *file, int line);
/* Compare strings/bytes and print both on mismatch. */
int xcm_test_check_str(const char *got, const char *want, const char *expr,
                       const char *file, int line);
int xcm_test_check_mem(const void *got, size_t got_len, const void *want,
                       size_t want_len, const char *expr, const char *file,
                       int line);
int xcm_test_check_int(long long got, long long want, const char *expr,
                       const char *file, int line);
/* Print a diagnostic line (TAP comment). */
void xcm_test_note(const char *fmt, ...);

/* Hostile inputs, counted for the README's hardening table
 * (tests/readme-table.py). A test notes the failure count before it tries
 * one bad input and hands it to xcm_test_tried() afterwards, which counts
 * the input in its class only if no check failed in between:
 *
 *   unsigned before = xcm_test_failures();
 *   ... feed the input, CHECK the outcome ...
 *   xcm_test_tried("malformed-xml", before);
 *
 * A REQUIRE that fails leaves the case before the count. After the last
 * case, xcm_test_main() prints "# table hostile <class> tried=N" for
 * every class tried, in the order first seen. Class names are literals
 * (the pointer is kept), lower case with dashes. */
unsigned xcm_test_failures(void);
void xcm_test_tried(const char *cls, unsigned failures_before);
/* For an input that one check decides: counts it if ok, e.g.
 * TRIED("bad-configs", CHECK_INT(parse(bad), XCM_EINVAL)). */
void xcm_test_tried_if(const char *cls, int ok);
#define TRIED(cls, check) xcm_test_tried_if((cls), (check))

/* A deterministic pseudo-random sequence for split tests, seeded per case
 * (XCM_TEST_SEED overrides; the seed is printed on failure). */
unsigned xcm_test_rand(void);

/* The generated test certificates: the directory ($XCM_CERTS_DIR, which
 * meson sets, else "."), and name's path in it. A path stays valid for
 * the next three calls. */
const char *xcm_test_cert_dir(void);
const char *xcm_test_cert(const char *name);

/* Run loop until pred(ud) holds or ms milliseconds pass; returns
 * pred(ud). Tests wait for what they expect instead of sleeping. */
int xcm_test_run_until(uv_loop_t *loop, int (*pred)(void *), void *ud,
                       unsigned ms);
/* Run loop for ms milliseconds. */
void xcm_test_run_for(uv_loop_t *loop, unsigned ms);

#define CHECK(c) xcm_test_check(!!(c), #c, __FILE__, __LINE__)
#define REQUIRE(c) xcm_test_require(!!(c), #c, __FILE__, __LINE__)
#define CHECK_STR(got, want)                                                   \
  xcm_test_check_str((got), (want), #got, __FILE__, __LINE__)
#define CHECK_MEM(got, glen, want, wlen)                                       \
  xcm_test_check_mem((got), (glen), (want), (wlen), #got, __FILE__, __LINE__)
#define CHECK_INT(got, want)                                                   \
  xcm_test_check_int((long long)(got), (long long)(want), #got, __FILE__,      \
                     __LINE__)
#define XCM_TESTS(arr) (arr), (sizeof(arr) / sizeof((arr)[0]))

#endif
