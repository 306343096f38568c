/* The server side of the real-client tests: libxcm (public API) with a
 * STARTTLS listener and a direct-TLS listener, in front of the
 * in-process Openfire. Writes "PLAIN_PORT TLS_PORT\n" to the port file
 * once both are listening and the upstream is up, and runs until SIGTERM.
 *
 * usage: e2e-server PORTFILE CERT KEY [MECHANISMS] [compression]
 *   MECHANISMS: comma-separated list the server announces (default
 *   PLAIN,SCRAM-SHA-1). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "xcm/testkit.h"
#include "xcm/xcm.h"

typedef struct state {
  uv_loop_t *loop;
  xcm_testkit *kit;
  xcm_cm *cm;
  const char *port_file;
  uv_timer_t poll;
  uv_signal_t term;
  int written;
} state;

static void log_fn(void *ud, int level, const char *msg) {
  (void)ud;
  if (level <= XCM_LOG_WARN || getenv("XCM_E2E_DEBUG") ||
      (getenv("XCM_E2E_PROXY") &&
       (strncmp(msg, "PROXY", 5) == 0 ||
        strstr(msg, "not a trusted PROXY source") != NULL)))
    fprintf(stderr, "e2e-server: %s\n", msg);
}

/* Behind HAProxy (tests/e2e/haproxy_test.py): each session's peer, as
 * the API reports it. */
static void on_session(void *ud, xcm_session_event ev,
                       const xcm_session_info *info) {
  (void)ud;
  if (ev == XCM_SESSION_OPENED)
    fprintf(stderr, "e2e-server: session opened peer=%s\n", info->peer);
}

static void kit_closed(void *ud, xcm_testkit *kit) {
  (void)kit;
  (void)ud;
}

static void cm_closed(void *ud, xcm_cm *cm) {
  state *s = ud;

  (void)cm;
  xcm_testkit_close(s->kit, kit_closed, s);
}

static void on_term(uv_signal_t *h, int signum) {
  state *s = h->data;

  (void)signum;
  uv_close((uv_handle_t *)&s->term, NULL);
  uv_close((uv_handle_t *)&s->poll, NULL);
  xcm_cm_shutdown(s->cm, 1000, cm_closed, s);
}

/* Tell the test the ports only once clients can log in. */
static void on_poll(uv_timer_t *t) {
  state *s = t->data;
  FILE *f;

  if (s->written || xcm_cm_policy(s->cm) == NULL)
    return;
  f = fopen(s->port_file, "w");
  if (f == NULL)
    return;
  fprintf(f, "%d %d\n", xcm_cm_listener_port(s->cm, 0),
          xcm_cm_listener_port(s->cm, 1));
  fclose(f);
  s->written = 1;
}

static void set_mechanisms(xcm_policy *p, const char *list) {
  char copy[256], *tok, *save = NULL;

  p->nmechanisms = 0;
  snprintf(copy, sizeof copy, "%s", list);
  for (tok = strtok_r(copy, ",", &save);
       tok != NULL && p->nmechanisms < XCM_POLICY_MAX_MECHANISMS;
       tok = strtok_r(NULL, ",", &save))
    snprintf(p->mechanisms[p->nmechanisms++], sizeof p->mechanisms[0], "%s",
             tok);
}

int main(int argc, char **argv) {
  static state s;
  xcm_testkit_options ko;
  xcm_options o;
  xcm_listen_options lo;
  xcm_testkit_stats st;
  char err[512];

  if (argc < 4) {
    fprintf(stderr, "usage: %s PORTFILE CERT KEY [MECHANISMS] [compression]\n",
            argv[0]);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  s.loop = uv_default_loop();
  s.port_file = argv[1];
  xcm_testkit_options_init(&ko, sizeof ko);
  set_mechanisms(&ko.client_policy, argc > 4 ? argv[4] : "PLAIN,SCRAM-SHA-1");
  ko.client_policy.compression_zlib = 1;
  ko.log = log_fn;
  if (xcm_testkit_new(&s.kit, s.loop, &ko, err, sizeof err) != 0) {
    fprintf(stderr, "e2e-server: %s\n", err);
    return 1;
  }
  xcm_testkit_add_account(s.kit, "alice", "alice");
  xcm_testkit_add_account(s.kit, "bob", "bob");
  xcm_testkit_add_roster_item(s.kit, "alice", "bob@example.test", "Bob",
                              "both");
  xcm_testkit_add_roster_item(s.kit, "bob", "alice@example.test", "Alice",
                              "both");
  xcm_options_init(&o, sizeof o);
  o.domain = "example.test";
  o.server_port = xcm_testkit_port(s.kit);
  o.name = "cm-e2e";
  o.secret = "cmsecret";
  o.connections = 2;
  o.upstream_tls = XCM_UPSTREAM_TLS_OFF;
  o.compression = argc > 5 && strcmp(argv[5], "compression") == 0;
  if (getenv("XCM_E2E_BENCH") != NULL) {
    /* Load runs flood on purpose, with many clients from one address. */
    o.rate = XCM_UNLIMITED;
    o.rate_bytes = XCM_UNLIMITED;
    o.max_clients = XCM_UNLIMITED;
    o.max_per_address = XCM_UNLIMITED;
  }
  o.log = log_fn;
  /* XCM_E2E_PROXY: both listeners behind a balancer (PROXY protocol),
   * taking headers from the sources it lists (proxy_trusted). */
  if (getenv("XCM_E2E_PROXY") != NULL)
    o.log_level = XCM_LOG_DEBUG;
  if (xcm_cm_new(&s.cm, s.loop, &o, err, sizeof err) != 0) {
    fprintf(stderr, "e2e-server: %s\n", err);
    return 1;
  }
  if (getenv("XCM_E2E_PROXY") != NULL)
    xcm_cm_set_session_events(s.cm, on_session, NULL);
  xcm_listen_options_init(&lo, sizeof lo);
  lo.proxy_protocol = getenv("XCM_E2E_PROXY") != NULL;
  lo.proxy_trusted = getenv("XCM_E2E_PROXY");
  lo.host = "127.0.0.1";
  lo.cert_file = argv[2];
  lo.key_file = argv[3];
  if (xcm_cm_listen(s.cm, &lo, err, sizeof err) != 0) {
    fprintf(stderr, "e2e-server: %s\n", err);
    return 1;
  }
  lo.direct_tls = 1;
  if (xcm_cm_listen(s.cm, &lo, err, sizeof err) != 0) {
    fprintf(stderr, "e2e-server: %s\n", err);
    return 1;
  }
  xcm_cm_start(s.cm);
  uv_timer_init(s.loop, &s.poll);
  s.poll.data = &s;
  uv_timer_start(&s.poll, on_poll, 10, 10);
  uv_signal_init(s.loop, &s.term);
  s.term.data = &s;
  uv_signal_start(&s.term, on_term, SIGTERM);
  uv_run(s.loop, UV_RUN_DEFAULT);
  xcm_cm_free(s.cm);
  xcm_testkit_get_stats(s.kit, &st, sizeof st);
  /* The clients' tests pass or fail on what the clients saw; what the CM
   * sent upstream is judged here. */
  if (st.violations > 0)
    fprintf(stderr,
            "e2e-server: the testkit saw %llu protocol violation(s) from the "
            "CM; the first: %s\n",
            (unsigned long long)st.violations,
            xcm_testkit_first_violation(s.kit));
  xcm_testkit_free(s.kit);
  return st.violations > 0 ? 3 : 0;
}
