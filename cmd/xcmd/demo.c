/* The demo upstream: the testkit, open to anyone. */
#include <stdio.h>
#include <stdlib.h>

#include "demo.h"
#include "xcm/testkit.h"

struct xcmd_demo {
  xcm_testkit *kit;
};

const int xcmd_demo_available = 1;

int xcmd_demo_start(xcmd_demo **out, uv_loop_t *loop, xcm_options *o,
                    xcm_log_fn log, void *log_ud, char *err, size_t errlen) {
  static const char *users[][2] = {{"alice", "alice"}, {"bob", "bob"}};
  xcm_testkit_options ko;
  xcmd_demo *d = calloc(1, sizeof *d);

  *out = NULL;
  if (d == NULL) {
    snprintf(err, errlen, "demo upstream: out of memory");
    return XCM_ENOMEM;
  }
  xcm_testkit_options_init(&ko, sizeof ko);
  ko.domain = o->domain;
  ko.secret = o->secret;
  ko.heartbeat_ms = 30000;
  /* Anyone may log in with any password the first time: the account is
   * made on the spot, so a newcomer needs to read nothing first. */
  ko.open_accounts = 1;
  ko.log = log;
  ko.log_ud = log_ud;
  if (xcm_testkit_new(&d->kit, loop, &ko, err, errlen) != 0) {
    free(d);
    return XCM_ECONFIG;
  }
  xcm_testkit_add_account(d->kit, users[0][0], users[0][1]);
  xcm_testkit_add_account(d->kit, users[1][0], users[1][1]);
  xcm_testkit_add_roster_item(d->kit, "alice", "bob@localhost", "Bob", "both");
  xcm_testkit_add_roster_item(d->kit, "bob", "alice@localhost", "Alice",
                              "both");
  o->server_host = "127.0.0.1";
  o->server_port = xcm_testkit_port(d->kit);
  *out = d;
  return 0;
}

static void kit_closed(void *ud, xcm_testkit *kit) {
  (void)kit;
  (void)ud;
}

void xcmd_demo_stop(xcmd_demo *d) {
  if (d != NULL)
    xcm_testkit_close(d->kit, kit_closed, NULL);
}

void xcmd_demo_free(xcmd_demo *d, xcm_log_fn log, void *log_ud) {
  xcm_testkit_stats st;

  if (d == NULL)
    return;
  /* The upstream logged each violation as it came (error level); say it
   * once more where nobody can miss it. A demo goes on. */
  xcm_testkit_get_stats(d->kit, &st, sizeof st);
  if (st.violations > 0) {
    char line[1024];

    snprintf(line, sizeof line,
             "demo upstream: the CM broke the protocol %llu time(s); the "
             "first: %s",
             (unsigned long long)st.violations,
             xcm_testkit_first_violation(d->kit));
    log(log_ud, XCM_LOG_ERROR, line);
  }
  xcm_testkit_free(d->kit);
  free(d);
}
