/* XEP-0198 clients for tests: a world with stream management on, SASL
 * PLAIN and SCRAM-SHA-1 logins, a scripted client that acknowledges only
 * what it read whole, and the checks that count what reached a client
 * and what the testkit stored offline ("nothing lost, nothing twice").
 * Shared by tests/test-sm.c (acknowledgements) and tests/test-resume.c
 * (resumption). One world at a time: the knobs live in this file. */
#ifndef XCM_TESTS_SMCLIENT_H
#define XCM_TESTS_SMCLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "rawclient.h"
#include "world.h"

#define XCM_SMC_NS "urn:xmpp:sm:3"
#define XCM_SMC_ENABLE "<enable xmlns='" XCM_SMC_NS "'/>"
#define XCM_SMC_ENABLED "<enabled xmlns=\"" XCM_SMC_NS "\"/>"
#define XCM_SMC_R "<r xmlns=\"" XCM_SMC_NS "\"/>"

/* What a world differs in; zero is the CM's default for each, but sm. */
typedef struct xcm_smc_knobs {
  int sm;
  unsigned max_unacked;
  size_t max_unacked_bytes;
  unsigned every, every_bytes, quiet_ms;
  size_t max_client_out;
  unsigned resume_ms;      /* 0: the default */
  unsigned ack_timeout_ms; /* 0: the default */
  int roster;              /* alice and bob see each other */
  /* The CM logs everything (debug level) into a sink that drops it: every
   * message is formatted, whatever state it speaks of. */
  int log_all;
  /* The testkit's events and the CM's session events (may be NULL),
   * both given ud. */
  xcm_testkit_event_fn on_event;
  xcm_session_fn on_session;
  void *ud;
} xcm_smc_knobs;

/* Knobs with stream management on and everything else the default. */
xcm_smc_knobs xcm_smc_on(void);

/* Start w (accounts alice, bob, carol, dave, erin, each one's password
 * its name; offline store 100000 deep; no rate limits) as k says. k is
 * copied. XCM_TEST_LOG in the environment logs the CM at debug level. */
void xcm_smc_start(xcm_test_world *w, const xcm_smc_knobs *k);

void xcm_smc_stats(xcm_test_world *w, xcm_stats *st);

/* The <auth/> element of SASL PLAIN for user (password: its name),
 * into out. */
void xcm_smc_auth_plain(char *out, size_t cap, const char *user);

/* Open r and log user in with SASL PLAIN, bind resource, a session and
 * initial presence: 1 when done. */
int xcm_smc_login(xcm_test_world *w, xcm_raw *r, const char *user,
                  const char *resource);

/* Open r and authenticate as user with SASL SCRAM-SHA-1 (the whole
 * exchange, checking the server's signature), then restart the stream:
 * 1 when the features after it (bind) came. in is cleared after the
 * success. */
int xcm_smc_scram(xcm_test_world *w, xcm_raw *r, const char *user);

/* ---- a client that acknowledges what it read whole ------------------ */

typedef struct xcm_smc_acker {
  xcm_raw *r;
  size_t scan;       /* where the next look starts in r->in */
  uint32_t handled;  /* stanzas read whole since <enabled/> (or resumed) */
  uint32_t last_h;   /* the h of our last <a/> */
  unsigned acks;     /* <a/> sent */
  unsigned requests; /* <r/> seen */
  int acking;
} xcm_smc_acker;

/* From now on a counts r's stanzas from handled (the h a resume named,
 * else 0) and, if acking, answers each <r/> with what it read whole. */
void xcm_smc_acker_attach(xcm_smc_acker *a, xcm_raw *r, uint32_t handled,
                          int acking);

/* Log user in (PLAIN), enable acknowledgements and acknowledge from
 * then on; in is cleared after <enabled/>. The second asks for
 * resumption too, and copies the id it got into id (idcap bytes). */
int xcm_smc_login_acking(xcm_test_world *w, xcm_raw *r, xcm_smc_acker *a,
                         const char *user, const char *resource);
int xcm_smc_login_resumable(xcm_test_world *w, xcm_raw *r, xcm_smc_acker *a,
                            const char *user, const char *resource, char *id,
                            size_t idcap);

/* For xcm_test_run_until: a->handled reached want. */
typedef struct xcm_smc_handled_wait {
  xcm_smc_acker *a;
  uint32_t want;
} xcm_smc_handled_wait;
int xcm_smc_handled_at_least(void *ud);

/* For xcm_test_run_until: the CM received want acks in all. */
typedef struct xcm_smc_acks_wait {
  xcm_test_world *w;
  uint64_t want;
} xcm_smc_acks_wait;
int xcm_smc_acks_arrived(void *ud);

/* For xcm_test_run_until: the testkit received want routes in all. */
typedef struct xcm_smc_routed_wait {
  xcm_test_world *w;
  uint64_t want;
} xcm_smc_routed_wait;
int xcm_smc_routed(void *ud);

/* A chat message from `from` to `to` whose body is "n=NNNNN " and pad
 * bytes. */
void xcm_smc_send_to(xcm_raw *from, const char *to, unsigned n, size_t pad);

/* ---- the offline store ---------------------------------------------- */

typedef struct xcm_smc_stored_wait {
  xcm_test_world *w;
  const char *user;
  unsigned want;
} xcm_smc_stored_wait;
int xcm_smc_stored_at_least(void *ud);

/* The testkit stores for user each counter n=... once, exactly from
 * `from` to `to` (inclusive); from > to: nothing. Notes what differs. */
int xcm_smc_stored_exactly(xcm_test_world *w, const char *user, unsigned from,
                           unsigned to);

/* The counters n=... of the whole messages in s (each up to its
 * "</message>"), in order, of the first max messages (0: all), into out
 * (cap entries): how many. */
unsigned xcm_smc_numbers(const char *s, unsigned max, unsigned *out,
                         unsigned cap);

#endif
