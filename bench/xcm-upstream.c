/* xcm-upstream: the in-process Openfire stand-in as a process of its own,
 * so that a benchmark can give it a CPU apart from the CM under test.
 * Anyone may log in (accounts are made on first login; ANONYMOUS works).
 *
 * usage: xcm-upstream PORTFILE [DOMAIN [SECRET]]
 * Writes the port it listens on to PORTFILE; runs until SIGTERM, then
 * prints its counters and exits 3 if the CM broke the protocol (the
 * testkit's witness; XCM_TESTKIT_WITNESS=0 turns it off, to measure what
 * it costs). XCM_UPSTREAM_LOG=info or debug logs the testkit to stderr
 * (debug: each session create with the client address the CM sent). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "xcm/testkit.h"

static void closed(void *ud, xcm_testkit *kit) {
  (void)kit;
  (void)ud;
}

static void log_fn(void *ud, int level, const char *msg) {
  (void)ud;
  (void)level;
  fprintf(stderr, "xcm-upstream: %s\n", msg);
}

static void on_term(uv_signal_t *s, int signum) {
  xcm_testkit_stats st;

  (void)signum;
  /* What the CM did, for tests that drive xcmd from outside. */
  xcm_testkit_get_stats(s->data, &st, sizeof st);
  printf("creates=%llu closes_from_cm=%llu routes_in=%llu violations=%llu\n",
         (unsigned long long)st.creates, (unsigned long long)st.closes_from_cm,
         (unsigned long long)st.routes_in, (unsigned long long)st.violations);
  if (st.violations > 0)
    printf("first violation: %s\n", xcm_testkit_first_violation(s->data));
  fflush(stdout);
  uv_close((uv_handle_t *)s, NULL);
  xcm_testkit_close(s->data, closed, NULL);
}

int main(int argc, char **argv) {
  xcm_testkit_options o;
  xcm_testkit *kit;
  uv_signal_t term;
  xcm_testkit_stats st;
  char err[256];
  FILE *f;

  if (argc < 2) {
    fprintf(stderr, "usage: %s PORTFILE [DOMAIN [SECRET]]\n", argv[0]);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  xcm_testkit_options_init(&o, sizeof o);
  o.domain = argc > 2 ? argv[2] : "bench.test";
  o.secret = argc > 3 ? argv[3] : "bench";
  o.open_accounts = 1;
  o.max_sessions = 2000000;
  o.max_out = 64u << 20;
  if (getenv("XCM_TESTKIT_WITNESS") != NULL &&
      strcmp(getenv("XCM_TESTKIT_WITNESS"), "0") == 0)
    o.witness = 0;
  if (getenv("XCM_UPSTREAM_LOG") != NULL) {
    o.log = log_fn;
    o.log_level = strcmp(getenv("XCM_UPSTREAM_LOG"), "debug") == 0
                      ? XCM_LOG_DEBUG
                      : XCM_LOG_INFO;
  }
  if (xcm_testkit_new(&kit, uv_default_loop(), &o, err, sizeof err) != 0) {
    fprintf(stderr, "xcm-upstream: %s\n", err);
    return 1;
  }
  f = fopen(argv[1], "w");
  if (f == NULL)
    return 1;
  fprintf(f, "%d\n", xcm_testkit_port(kit));
  fclose(f);
  uv_signal_init(uv_default_loop(), &term);
  term.data = kit;
  uv_signal_start(&term, on_term, SIGTERM);
  uv_run(uv_default_loop(), UV_RUN_DEFAULT);
  xcm_testkit_get_stats(kit, &st, sizeof st);
  xcm_testkit_free(kit);
  /* A benchmark of a CM that breaks the protocol measures nothing. */
  return st.violations > 0 ? 3 : 0;
}
