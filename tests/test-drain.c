/* Draining an instance for a rolling upgrade (xcm_cm_drain): the
 * listeners close at once, the sessions end a batch at a time over the
 * period with system-shutdown, each closed upstream, and the callback
 * comes once the last is gone. The schedule is checked against the
 * loop's own clock (uv_now) at each session's end, never by sleeping:
 * a loaded machine only makes the drain slower, never the checks fail. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "harness.h"
#include "rawclient.h"
#include "world.h"
#include "xcm/testkit.h"
#include "xcm/xcm.h"

#define CLIENTS 20
/* The library's tick: the most one turn of the schedule ends is
 * ceil(CLIENTS * tick / period). */
#define TICK_MS 100

typedef struct drain_watch {
  xcm_test_world w;
  xcm_raw raw[CLIENTS];
  unsigned period;
  uint64_t start;  /* uv_now when the drain began */
  unsigned closed; /* sessions ended with system-shutdown */
  unsigned over;   /* ends seen ahead of the schedule */
  uint64_t last;   /* loop time of the last end */
  unsigned times;  /* distinct loop times at which sessions ended */
  int drained;     /* drain callbacks */
  int stop_at;     /* shut down from the event of this end (0: never) */
} drain_watch;

static drain_watch dw;

static uint64_t div_up(uint64_t a, uint64_t b) {
  return (a + b - 1) / b;
}

/* The most sessions the drain may have ended elapsed ms into it: the
 * schedule's ceil(n * elapsed / period) plus one turn of it. */
static uint64_t allowed(const drain_watch *d, uint64_t elapsed) {
  uint64_t batch, due;

  if (d->period == 0)
    return CLIENTS;
  batch = div_up((uint64_t)CLIENTS * TICK_MS, d->period);
  due = elapsed >= d->period ? CLIENTS
                             : div_up((uint64_t)CLIENTS * elapsed, d->period);
  return due + batch;
}

static void on_session(void *ud, xcm_session_event ev,
                       const xcm_session_info *info) {
  drain_watch *d = ud;
  uint64_t now;

  /* The drain's ends, not a shutdown's. */
  if (ev != XCM_SESSION_CLOSED || info->cond != XCM_COND_SYSTEM_SHUTDOWN ||
      info->text == NULL || strstr(info->text, "draining") == NULL)
    return;
  now = uv_now(&d->w.loop);
  if (d->closed == 0 || now != d->last)
    d->times++;
  d->last = now;
  d->closed++;
  if (d->stop_at != 0 && d->closed == (unsigned)d->stop_at)
    xcm_test_cm_shutdown(d->w.cm, 1000, &d->w.closed);
  if (d->closed > allowed(d, now - d->start)) {
    d->over++;
    xcm_test_note("%u sessions ended %llu ms into a %u ms drain", d->closed,
                  (unsigned long long)(now - d->start), d->period);
  }
}

static void on_drained(void *ud, xcm_cm *cm) {
  drain_watch *d = ud;
  xcm_stats st;

  /* Every session is gone by now. */
  xcm_cm_stats(cm, &st, sizeof st);
  CHECK_INT(st.clients_now, 0);
  d->drained++;
}

static int drained(void *ud) {
  return ((drain_watch *)ud)->drained > 0;
}

typedef struct closes_wait {
  xcm_testkit *kit;
  uint64_t n;
} closes_wait;

static int closes_reached(void *ud) {
  closes_wait *c = ud;
  xcm_testkit_stats st;

  xcm_testkit_get_stats(c->kit, &st, sizeof st);
  return st.closes_from_cm >= c->n;
}

static int all_eof(void *ud) {
  drain_watch *d = ud;
  unsigned i;

  for (i = 0; i < CLIENTS; i++)
    if (!d->raw[i].eof)
      return 0;
  return 1;
}

/* A world with CLIENTS clients logged in as alice, each with a resource
 * of its own, and the session events watched. */
static void start(drain_watch *d) {
  xcm_test_world_setup s = {.seed = 7};
  unsigned i;

  memset(d, 0, sizeof(*d));
  xcm_test_world_start(&d->w, &s);
  xcm_cm_set_session_events(d->w.cm, on_session, d);
  for (i = 0; i < CLIENTS; i++) {
    char res[16];

    snprintf(res, sizeof res, "r%u", i);
    REQUIRE(xcm_raw_open(&d->raw[i], &d->w.loop, "127.0.0.1", d->w.port, 1));
    REQUIRE(xcm_raw_login(&d->raw[i], XCM_RAW_HDR, XCM_RAW_AUTH_ALICE, res));
  }
}

static void begin(drain_watch *d, unsigned period) {
  d->period = period;
  d->start = uv_now(&d->w.loop);
  REQUIRE(xcm_cm_drain(d->w.cm, period, on_drained, d) == 0);
}

static void free_clients(drain_watch *d) {
  unsigned i;

  for (i = 0; i < CLIENTS; i++)
    xcm_raw_free(&d->raw[i]);
}

/* What every drained client got, and what the server saw. */
static void check_ends(drain_watch *d, unsigned drained_n) {
  closes_wait c = {d->w.kit, CLIENTS};
  xcm_stats st;
  unsigned i, told = 0;

  CHECK(xcm_test_run_until(&d->w.loop, all_eof, d, 10000));
  for (i = 0; i < CLIENTS; i++)
    if (strstr(d->raw[i].in.data, "<system-shutdown") != NULL &&
        strstr(d->raw[i].in.data, "draining") != NULL &&
        strstr(d->raw[i].in.data, "</stream:stream>") != NULL)
      told++;
  CHECK_INT(told, drained_n);
  /* Every session closed upstream, as in a shutdown. */
  CHECK(xcm_test_run_until(&d->w.loop, closes_reached, &c, 10000));
  xcm_cm_stats(d->w.cm, &st, sizeof st);
  CHECK_INT(st.sessions_drained, drained_n);
  CHECK_INT(st.stream_errors[XCM_COND_SYSTEM_SHUTDOWN], CLIENTS);
}

static int no_write(void *ud, const char *data, size_t len) {
  (void)ud;
  (void)data;
  (void)len;
  return 0;
}

static void no_close(void *ud) {
  (void)ud;
}

/* Over a period: the listener refuses at once, the ends follow the
 * schedule, and the callback comes once. */
static void test_spread(void) {
  drain_watch *d = &dw;
  xcm_raw late;
  xcm_conn *conn;
  xcm_listen_options lo;
  uv_tcp_t *tcp;
  xcm_transport t = {.size = sizeof t, .write = no_write, .close = no_close};

  start(d);
  begin(d, 2000);
  /* The port is closed before any session ends. */
  CHECK(!xcm_raw_open(&late, &d->w.loop, "127.0.0.1", d->w.port, 1));
  CHECK_INT(late.connected, -1);
  xcm_raw_free(&late);
  REQUIRE(xcm_test_run_until(&d->w.loop, drained, d, 60000));
  CHECK_INT(d->closed, CLIENTS);
  CHECK_INT(d->over, 0);
  /* Spread: the last end came no earlier than the schedule allows. */
  CHECK(d->last - d->start >=
        (uint64_t)(CLIENTS - 1 - div_up(CLIENTS * TICK_MS, d->period)) *
            d->period / CLIENTS);
  xcm_test_note("%u sessions ended at %u distinct loop times, the last %llu "
                "ms into the drain",
                d->closed, d->times, (unsigned long long)(d->last - d->start));
  check_ends(d, CLIENTS);
  /* No way in any more, and a second drain is refused. */
  CHECK_INT(xcm_cm_attach(d->w.cm, 0, &t, "peer", &conn), XCM_ECLOSED);
  tcp = malloc(sizeof(*tcp));
  REQUIRE(tcp != NULL);
  uv_tcp_init(&d->w.loop, tcp);
  CHECK_INT(xcm_cm_adopt(d->w.cm, 0, tcp), XCM_ECLOSED); /* closed, freed */
  xcm_listen_options_init(&lo, sizeof lo);
  CHECK_INT(xcm_cm_listen(d->w.cm, &lo, NULL, 0), XCM_ECLOSED);
  CHECK_INT(xcm_cm_start(d->w.cm), 0); /* started before: nothing to do */
  CHECK_INT(xcm_cm_drain(d->w.cm, 0, on_drained, d), XCM_ECLOSED);
  xcm_test_run_for(&d->w.loop, 50);
  CHECK_INT(d->drained, 1);
  free_clients(d);
  xcm_test_world_stop(&d->w, 1000);
  CHECK_INT(d->drained, 1);
}

/* A period of 0 ends every session in one turn of the loop. */
static void test_at_once(void) {
  drain_watch *d = &dw;

  start(d);
  begin(d, 0);
  /* Not from inside the call. */
  CHECK_INT(d->closed, 0);
  CHECK_INT(d->drained, 0);
  REQUIRE(xcm_test_run_until(&d->w.loop, drained, d, 10000));
  CHECK_INT(d->closed, CLIENTS);
  CHECK_INT(d->times, 1);
  check_ends(d, CLIENTS);
  free_clients(d);
  xcm_test_world_stop(&d->w, 1000);
  CHECK_INT(d->drained, 1);
}

static int some_closed(void *ud) {
  return ((drain_watch *)ud)->closed > 0;
}

/* A drain during a drain is refused; a shutdown during one ends the
 * rest at once, and the drain's callback never comes. */
static void test_shutdown_during(void) {
  drain_watch *d = &dw;
  closes_wait c;
  xcm_stats st;
  unsigned i, told = 0;

  start(d);
  begin(d, 600000);
  CHECK_INT(xcm_cm_drain(d->w.cm, 0, on_drained, d), XCM_ECLOSED);
  REQUIRE(xcm_test_run_until(&d->w.loop, some_closed, d, 10000));
  CHECK(d->closed < CLIENTS);
  xcm_test_cm_shutdown(d->w.cm, 1000, &d->w.closed);
  CHECK_INT(xcm_cm_drain(d->w.cm, 0, on_drained, d), XCM_ECLOSED);
  CHECK(xcm_test_run_until(&d->w.loop, all_eof, d, 10000));
  for (i = 0; i < CLIENTS; i++)
    told += strstr(d->raw[i].in.data, "<system-shutdown") != NULL;
  CHECK_INT(told, CLIENTS);
  c.kit = d->w.kit;
  c.n = CLIENTS;
  CHECK(xcm_test_run_until(&d->w.loop, closes_reached, &c, 10000));
  xcm_cm_stats(d->w.cm, &st, sizeof st);
  CHECK(st.sessions_drained >= 1 && st.sessions_drained < CLIENTS);
  CHECK_INT(st.sessions_drained, d->closed);
  CHECK_INT(d->over, 0);
  CHECK_INT(st.stream_errors[XCM_COND_SYSTEM_SHUTDOWN], CLIENTS);
  free_clients(d);
  xcm_test_world_end(&d->w.loop, d->w.cm, d->w.kit, &d->w.closed);
  CHECK_INT(d->drained, 0);
}

/* A shutdown from inside a session event of the drain: the rest end at
 * once with the shutdown's text, and the drain's callback never comes. */
static void test_shutdown_from_event(void) {
  drain_watch *d = &dw;
  xcm_stats st;
  unsigned i, told = 0;

  start(d);
  d->stop_at = 1;
  begin(d, 0);
  CHECK(xcm_test_run_until(&d->w.loop, all_eof, d, 10000));
  for (i = 0; i < CLIENTS; i++)
    told += strstr(d->raw[i].in.data, "<system-shutdown") != NULL;
  CHECK_INT(told, CLIENTS);
  xcm_cm_stats(d->w.cm, &st, sizeof st);
  CHECK_INT(st.sessions_drained, 1);
  CHECK_INT(d->closed, 1);
  free_clients(d);
  xcm_test_world_end(&d->w.loop, d->w.cm, d->w.kit, &d->w.closed);
  CHECK_INT(d->drained, 0);
}

/* With no session the callback still comes, from the loop. */
static void test_empty(void) {
  drain_watch *d = &dw;
  xcm_test_world_setup s = {.seed = 7};

  memset(d, 0, sizeof(*d));
  xcm_test_world_start(&d->w, &s);
  REQUIRE(xcm_cm_drain(d->w.cm, 5000, on_drained, d) == 0);
  CHECK_INT(d->drained, 0);
  CHECK(xcm_test_run_until(&d->w.loop, drained, d, 10000));
  CHECK_INT(xcm_cm_drain(d->w.cm, 5000, on_drained, d), XCM_ECLOSED);
  xcm_test_world_stop(&d->w, 1000);
  CHECK_INT(d->drained, 1);
}

int main(int argc, char **argv) {
  static const xcm_test tests[] = {
      {"spread", test_spread},
      {"at_once", test_at_once},
      {"shutdown_during", test_shutdown_during},
      {"shutdown_from_event", test_shutdown_from_event},
      {"empty", test_empty},
  };

  return xcm_test_main(argc, argv, XCM_TESTS(tests));
}
