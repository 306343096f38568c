/* The embedding test's program: built outside the tree from the
 * installed headers and .pc files only (tests/embed/run.sh), the way a
 * gateway's author would build it. It runs a CM and the testkit on its
 * own loop, lets a real client (slixmpp) log in, keeps per-session state
 * through the session events and the stanza hook, shuts down on SIGTERM,
 * reads the statistics in the shutdown callback, frees everything and
 * checks the loop is empty. Prints TAP; exits non-zero on a failure.
 *
 * usage: embed PORTFIFO */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include <xcm/testkit.h>
#include <xcm/xcm.h>

typedef struct per_session {
  unsigned long stanzas; /* seen by the hook */
  int bound;
} per_session;

typedef struct app {
  uv_loop_t loop;
  uv_signal_t term;
  xcm_testkit *kit;
  xcm_cm *cm;
  unsigned opened, freed, with_stanzas, data_mismatch, bound;
  xcm_stats at_shutdown;
  int shutdown_ran, kit_closed;
} app;

static int n, failed;

static void check(int ok, const char *what) {
  n++;
  if (!ok)
    failed++;
  printf("%s %d - %s\n", ok ? "ok" : "not ok", n, what);
  fflush(stdout);
}

static void on_session(void *ud, xcm_session_event ev,
                       const xcm_session_info *info) {
  app *a = ud;
  per_session *ps = info->data;

  switch (ev) {
  case XCM_SESSION_OPENED:
    /* State of the caller's own, per client, set from the event. */
    ps = calloc(1, sizeof *ps);
    if (ps == NULL || xcm_cm_session_set_data(a->cm, info->sid, ps) != 0) {
      free(ps);
      a->data_mismatch++;
      return;
    }
    a->opened++;
    break;
  case XCM_SESSION_BOUND:
    if (ps != NULL && info->jid != NULL) {
      ps->bound = 1;
      a->bound++;
    }
    break;
  case XCM_SESSION_CLOSED:
    /* The last word on a session: free what is ours. */
    if (ps != NULL) {
      if (ps->stanzas > 0)
        a->with_stanzas++;
      free(ps);
      a->freed++;
    }
    break;
  default:
    break;
  }
}

static xcm_verdict hook(void *ud, const xcm_stanza_info *st,
                        const char **replacement, size_t *len) {
  app *a = ud;
  per_session *ps = st->session_data;
  void *got = NULL;

  (void)replacement, (void)len;
  if (ps == NULL || xcm_cm_session_get_data(a->cm, st->sid, &got) != 0 ||
      got != ps) {
    a->data_mismatch++;
    return XCM_PASS;
  }
  ps->stanzas++;
  return XCM_PASS;
}

static void kit_closed(void *ud, xcm_testkit *kit) {
  (void)kit;
  ((app *)ud)->kit_closed = 1;
}

static void cm_down(void *ud, xcm_cm *cm) {
  app *a = ud;

  a->shutdown_ran = 1;
  /* Every getter stays valid until xcm_cm_free. */
  xcm_cm_stats(cm, &a->at_shutdown, sizeof a->at_shutdown);
  xcm_testkit_close(a->kit, kit_closed, a);
}

static void on_term(uv_signal_t *s, int signum) {
  app *a = s->data;

  (void)signum;
  uv_close((uv_handle_t *)s, NULL);
  xcm_cm_shutdown(a->cm, 2000, cm_down, a);
}

int main(int argc, char **argv) {
  static app a;
  xcm_testkit_options ko;
  xcm_options o;
  xcm_listen_options lo;
  char err[512];
  FILE *fifo;
  int port;

  if (argc != 2) {
    fprintf(stderr, "usage: embed PORTFIFO\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN); /* xcm.h: the process must */
  printf("1..9\n");
  check(xcm_version() >= XCM_VERSION_HEX &&
            strncmp(xcm_version_string(), "1.", 2) == 0,
        "the running library is at least the headers' version");
  if (uv_loop_init(&a.loop) != 0)
    return 1;

  xcm_testkit_options_init(&ko, sizeof ko);
  ko.domain = "example.test";
  ko.secret = "s3cret";
  if (xcm_testkit_new(&a.kit, &a.loop, &ko, err, sizeof err) != 0) {
    fprintf(stderr, "testkit: %s\n", err);
    return 1;
  }
  xcm_testkit_add_account(a.kit, "alice", "alice");
  xcm_testkit_add_account(a.kit, "bob", "bob");
  xcm_testkit_add_roster_item(a.kit, "alice", "bob@example.test", "Bob",
                              "both");
  xcm_testkit_add_roster_item(a.kit, "bob", "alice@example.test", "Alice",
                              "both");

  xcm_options_init(&o, sizeof o);
  o.domain = "example.test";
  o.name = "embed";
  o.secret = "s3cret";
  o.server_port = xcm_testkit_port(a.kit);
  o.connections = 2;
  o.upstream_tls = XCM_UPSTREAM_TLS_OFF;
  o.upstream_wait_ms = 10000; /* a client may come before the links */
  if (xcm_cm_new(&a.cm, &a.loop, &o, err, sizeof err) != 0) {
    fprintf(stderr, "xcm_cm_new: %s\n", err);
    return 1;
  }
  xcm_listen_options_init(&lo, sizeof lo);
  lo.port = 0;
  if (xcm_cm_listen(a.cm, &lo, err, sizeof err) != 0 ||
      xcm_cm_start(a.cm) != 0) {
    fprintf(stderr, "listen: %s\n", err);
    return 1;
  }
  xcm_cm_set_session_events(a.cm, on_session, &a);
  xcm_cm_set_stanza_hook(a.cm, hook, &a);
  port = xcm_cm_listener_port(a.cm, 0);
  check(port > 0, "the CM listens");
  check(xcm_cm_listener_port(a.cm, 7) == XCM_EINVAL,
        "a listener that does not exist is XCM_EINVAL");

  uv_signal_init(&a.loop, &a.term);
  a.term.data = &a;
  uv_signal_start(&a.term, on_term, SIGTERM);
  /* The test script reads the port from the fifo, runs the client, and
   * sends SIGTERM when it is done. */
  fifo = fopen(argv[1], "w");
  if (fifo == NULL)
    return 1;
  fprintf(fifo, "%d\n", port);
  fclose(fifo);

  uv_run(&a.loop, UV_RUN_DEFAULT);

  check(a.shutdown_ran && a.kit_closed, "shut down, callbacks ran");
  check(a.at_shutdown.sessions_authenticated >= 2 &&
            a.at_shutdown.stanzas_in > 0,
        "statistics read in the shutdown callback");
  check(a.opened >= 2 && a.bound >= 2, "per-session data set on open, "
                                       "seen on bind");
  check(a.data_mismatch == 0, "the hook saw each session's own data");
  check(a.freed == a.opened && a.with_stanzas >= 2,
        "every session's data came back on close, with its counts");
  xcm_cm_free(a.cm);
  xcm_testkit_free(a.kit);
  check(uv_loop_close(&a.loop) == 0, "nothing left on the loop");
  return failed > 0;
}
