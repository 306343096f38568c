/* The public API's promises (doc/abi.md): option structs that grow,
 * defaults from the initialisers and checks with their messages,
 * out-structs written to the caller's size, per-session user data, and
 * every getter valid from xcm_cm_new until xcm_cm_free, the shutdown
 * callback included. Over loopback against the testkit, with a raw
 * client as the client side's tests use. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "harness.h"
#include "rawclient.h"
#include "world.h"
#include "xcm/testkit.h"
#include "xcm/xcm.h"

typedef xcm_test_world world;

/* ---- options ------------------------------------------------------------ */

static void count_down(void *ud, xcm_cm *cm) {
  (void)cm;
  ++*(int *)ud;
}

/* xcm_cm_new on a loop of its own; an instance made is shut down (twice:
 * the second is refused) and freed. */
static int try_new(const xcm_options *o, char *err, size_t errlen) {
  uv_loop_t loop;
  xcm_cm *cm = NULL;
  int rc, down = 0;

  err[0] = '\0';
  REQUIRE(uv_loop_init(&loop) == 0);
  rc = xcm_cm_new(&cm, &loop, o, err, errlen);
  if (cm != NULL) {
    CHECK_INT(xcm_cm_shutdown(cm, 0, count_down, &down), 0);
    CHECK_INT(xcm_cm_shutdown(cm, 0, count_down, &down), XCM_ECLOSED);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_INT(down, 1);
    xcm_cm_free(cm);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(uv_loop_close(&loop), 0);
  return rc;
}

static void required(xcm_options *o) {
  o->domain = "example.test";
  o->name = "cm1";
  o->secret = "cmsecret";
}

static void test_options_init(void) {
  xcm_options o;
  xcm_listen_options lo;
  char err[256];

  CHECK_INT(xcm_options_init(&o, 0), XCM_EINVAL);
  CHECK_INT(xcm_options_init(&o, sizeof(size_t)), XCM_EINVAL);
  CHECK_INT(xcm_options_init(NULL, sizeof o), XCM_EINVAL);
  REQUIRE(xcm_options_init(&o, sizeof o) == 0);
  CHECK_INT(o.size, sizeof o);
  CHECK(o.domain == NULL && o.name == NULL && o.secret == NULL);
  CHECK_STR(o.server_host, "127.0.0.1");
  CHECK_INT(o.server_port, 5262);
  CHECK_STR(o.resource_prefix, "w");
  CHECK_INT(o.connections, 5);
  CHECK_INT(o.upstream_tls, XCM_UPSTREAM_TLS_OPTIONAL);
  CHECK_INT(o.keepalive_ms, 30000);
  CHECK_INT(o.dead_after_ms, 300000);
  CHECK_INT(o.max_stanza_preauth, 8192);
  CHECK_INT(o.max_stanza, 262144);
  CHECK_INT(o.max_depth, 32);
  CHECK_INT(o.header_timeout_ms, 10000);
  CHECK_INT(o.auth_timeout_ms, 30000);
  CHECK_INT(o.idle_timeout_ms, 600000);
  CHECK_INT(o.max_client_out, 1 << 20);
  CHECK_INT(o.rate, 200);
  CHECK_INT(o.burst, 1000);
  CHECK_INT(o.rate_bytes, 262144);
  CHECK_INT(o.burst_bytes, 1 << 20);
  CHECK_INT(o.max_clients, 10000);
  CHECK_INT(o.max_per_address, 100);
  CHECK_INT(o.upstream_wait_ms, 0);
  CHECK_INT(o.log_level, XCM_LOG_INFO);
  CHECK(o.log == NULL && o.alloc == NULL);
  REQUIRE(xcm_listen_options_init(&lo, sizeof lo) == 0);
  CHECK_INT(lo.size, sizeof lo);
  CHECK_STR(lo.host, "127.0.0.1");
  CHECK_INT(lo.port, 0);
  CHECK(lo.cert_file == NULL && lo.key_file == NULL && !lo.direct_tls);

  /* The required fields are required. */
  CHECK_INT(try_new(&o, err, sizeof err), XCM_EINVAL);
  CHECK(strstr(err, "domain") != NULL);
  required(&o);
  CHECK_INT(try_new(&o, err, sizeof err), 0);

  /* A struct never initialised. */
  memset(&o, 0, sizeof o);
  required(&o);
  CHECK_INT(try_new(&o, err, sizeof err), XCM_EINVAL);
  CHECK_STR(err, "xcm_options not initialised: call "
                 "xcm_options_init(&opt, sizeof opt)");
}

/* Zero is a value: where it means nothing, xcm_cm_new names the field
 * and its range; XCM_UNLIMITED switches a limit off; where zero means
 * something (upstream_wait_ms: refuse at once) it is accepted. */
static void test_options_checked(void) {
  static const struct {
    const char *field;
    size_t offset;
  } zero_invalid[] = {
      {"connections", offsetof(xcm_options, connections)},
      {"keepalive_ms", offsetof(xcm_options, keepalive_ms)},
      {"dead_after_ms", offsetof(xcm_options, dead_after_ms)},
      {"max_depth", offsetof(xcm_options, max_depth)},
      {"header_timeout_ms", offsetof(xcm_options, header_timeout_ms)},
      {"auth_timeout_ms", offsetof(xcm_options, auth_timeout_ms)},
      {"idle_timeout_ms", offsetof(xcm_options, idle_timeout_ms)},
      {"rate", offsetof(xcm_options, rate)},
      {"burst", offsetof(xcm_options, burst)},
      {"rate_bytes", offsetof(xcm_options, rate_bytes)},
      {"burst_bytes", offsetof(xcm_options, burst_bytes)},
      {"max_clients", offsetof(xcm_options, max_clients)},
      {"max_per_address", offsetof(xcm_options, max_per_address)},
  };
  xcm_options o;
  char err[256];
  size_t i;

  for (i = 0; i < sizeof zero_invalid / sizeof zero_invalid[0]; i++) {
    unsigned zero = 0;

    xcm_options_init(&o, sizeof o);
    required(&o);
    memcpy((char *)&o + zero_invalid[i].offset, &zero, sizeof zero);
    CHECK_INT(try_new(&o, err, sizeof err), XCM_EINVAL);
    CHECK(strstr(err, zero_invalid[i].field) != NULL);
    CHECK(strstr(err, "1 to") != NULL);
  }
  xcm_options_init(&o, sizeof o);
  required(&o);
  o.max_stanza = 0;
  CHECK_INT(try_new(&o, err, sizeof err), XCM_EINVAL);
  CHECK(strstr(err, "xcm_options.max_stanza ") != NULL);
  xcm_options_init(&o, sizeof o);
  required(&o);
  o.log_level = 0;
  CHECK_INT(try_new(&o, err, sizeof err), XCM_EINVAL);
  CHECK(strstr(err, "log_level") != NULL);
  xcm_options_init(&o, sizeof o);
  required(&o);
  o.server_port = 0;
  CHECK_INT(try_new(&o, err, sizeof err), XCM_EINVAL);
  CHECK(strstr(err, "server_port") != NULL);
  xcm_options_init(&o, sizeof o);
  required(&o);
  o.connections = 65;
  CHECK_INT(try_new(&o, err, sizeof err), XCM_EINVAL);
  /* A limit switched off, and zero where it means something. */
  xcm_options_init(&o, sizeof o);
  required(&o);
  o.rate = o.rate_bytes = o.max_clients = o.max_per_address = XCM_UNLIMITED;
  o.header_timeout_ms = o.auth_timeout_ms = o.idle_timeout_ms = XCM_UNLIMITED;
  o.upstream_wait_ms = 0;
  CHECK_INT(try_new(&o, err, sizeof err), 0);
  /* Not a limit: "unlimited" keepalive is refused. */
  o.keepalive_ms = XCM_UNLIMITED;
  CHECK_INT(try_new(&o, err, sizeof err), XCM_EINVAL);
}

/* A caller built against an older header: its struct ends earlier, and
 * whatever lies beyond it is not the library's to read; the fields it
 * lacks take their defaults. */
static void test_options_older_caller(void) {
  const size_t old = offsetof(xcm_options, log);
  xcm_options o;
  char err[256];
  size_t i;

  memset(&o, 0xab, sizeof o);
  REQUIRE(xcm_options_init(&o, old) == 0);
  CHECK_INT(o.size, old);
  CHECK_INT(o.max_depth, 32);
  /* Nothing written past the caller's size. */
  for (i = old; i < sizeof o; i++)
    if (((unsigned char *)&o)[i] != 0xab)
      break;
  CHECK_INT(i, sizeof o);
  required(&o);
  /* Read past its size, log_level and alloc would be garbage. */
  CHECK_INT(try_new(&o, err, sizeof err), 0);
  /* Too short to have been initialised. */
  o.size = offsetof(xcm_options, domain);
  CHECK_INT(try_new(&o, err, sizeof err), XCM_EINVAL);
  CHECK(strstr(err, "not initialised") != NULL);
}

/* A caller built against a newer header: fields this library does not
 * know are zeroed by the init and must stay zero. */
static void test_options_newer_caller(void) {
  struct {
    xcm_options o;
    uint64_t later[2];
  } big;
  char err[256];

  memset(&big, 0xcd, sizeof big);
  REQUIRE(xcm_options_init(&big.o, sizeof big) == 0);
  CHECK_INT(big.o.size, sizeof big);
  CHECK(big.later[0] == 0 && big.later[1] == 0);
  required(&big.o);
  CHECK_INT(try_new(&big.o, err, sizeof err), 0);
  big.later[1] = 7;
  CHECK_INT(try_new(&big.o, err, sizeof err), XCM_EINVAL);
  CHECK(strstr(err, "newer header") != NULL);
}

static void test_allocator_and_testkit_sizes(void) {
  xcm_allocator a;
  xcm_options o;
  xcm_testkit_options ko;
  xcm_testkit *kit = NULL;
  uv_loop_t loop;
  char err[256];

  /* An allocator table without its size. */
  memset(&a, 0, sizeof a);
  xcm_options_init(&o, sizeof o);
  required(&o);
  o.alloc = &a;
  CHECK_INT(try_new(&o, err, sizeof err), XCM_EINVAL);
  CHECK(strstr(err, "xcm_allocator") != NULL);

  CHECK_INT(xcm_testkit_options_init(&ko, 0), XCM_EINVAL);
  REQUIRE(xcm_testkit_options_init(&ko, sizeof ko) == 0);
  CHECK_INT(ko.size, sizeof ko);
  CHECK_INT(ko.heartbeat_ms, 30000);
  REQUIRE(uv_loop_init(&loop) == 0);
  memset(&ko, 0, sizeof ko);
  CHECK_INT(xcm_testkit_new(&kit, &loop, &ko, err, sizeof err), XCM_EINVAL);
  CHECK(strstr(err, "xcm_testkit_options not initialised") != NULL);
  CHECK(kit == NULL);
  xcm_testkit_options_init(&ko, sizeof ko);
  ko.alloc = &a; /* its size is still 0 */
  CHECK_INT(xcm_testkit_new(&kit, &loop, &ko, err, sizeof err), XCM_EINVAL);
  CHECK(kit == NULL);
  /* Zero is a value there too. */
  xcm_testkit_options_init(&ko, sizeof ko);
  ko.offline_max = 0;
  CHECK_INT(xcm_testkit_new(&kit, &loop, &ko, err, sizeof err), XCM_EINVAL);
  xcm_testkit_options_init(&ko, sizeof ko);
  ko.domain = NULL;
  CHECK_INT(xcm_testkit_new(&kit, &loop, &ko, err, sizeof err), XCM_EINVAL);
  CHECK(kit == NULL);
  CHECK_INT(uv_loop_close(&loop), 0);
}

/* ---- per-session user data --------------------------------------------- */

typedef struct tagged {
  int which; /* 1: set when the session opened; 2: by the hook */
} tagged;

typedef struct data_test {
  xcm_cm *cm;
  int opened, bound, closed;
  int events_with_data; /* events after OPENED whose data was as set */
  int hook_first, hook_second;
  int freed_which;
} data_test;

static void data_events(void *ud, xcm_session_event ev,
                        const xcm_session_info *info) {
  data_test *d = ud;
  tagged *t = info->data;
  void *got = NULL;

  switch (ev) {
  case XCM_SESSION_OPENED:
    d->opened++;
    CHECK(info->data == NULL);
    /* From inside an event function. */
    t = calloc(1, sizeof *t);
    REQUIRE(t != NULL);
    t->which = 1;
    CHECK_INT(xcm_cm_session_set_data(d->cm, info->sid, t), 0);
    CHECK_INT(xcm_cm_session_get_data(d->cm, info->sid, &got), 0);
    CHECK(got == t);
    break;
  case XCM_SESSION_DETACHED:
  case XCM_SESSION_RESUMED:
  case XCM_SESSION_AUTHENTICATED:
  case XCM_SESSION_BOUND:
    if (ev == XCM_SESSION_BOUND)
      d->bound++;
    if (t != NULL && t->which == 1)
      d->events_with_data++;
    break;
  case XCM_SESSION_CLOSED:
    d->closed++;
    /* The last chance to free it: libxcm never does. */
    d->freed_which = t != NULL ? t->which : 0;
    free(t);
    break;
  }
}

static xcm_verdict data_hook(void *ud, const xcm_stanza_info *st,
                             const char **rep, size_t *len) {
  data_test *d = ud;
  tagged *t = st->session_data;
  char b[128];

  (void)rep;
  (void)len;
  snprintf(b, sizeof b, "%.*s", (int)(st->len < 127 ? st->len : 127),
           st->bytes);
  if (strcmp(st->name, "message") != 0 || t == NULL)
    return XCM_PASS;
  if (st->dir == XCM_TO_SERVER && strstr(b, ">swap<") != NULL &&
      t->which == 1) {
    tagged *n = malloc(sizeof *n);

    REQUIRE(n != NULL);
    n->which = 2;
    d->hook_first++;
    /* From inside the hook: the old data is the caller's to free. */
    CHECK_INT(xcm_cm_session_set_data(d->cm, st->sid, n), 0);
    free(t);
  } else if (st->dir == XCM_TO_CLIENT && strstr(b, ">swap<") != NULL &&
             t->which == 2) {
    d->hook_second++;
  }
  return XCM_PASS;
}

static void data_hooks(xcm_cm *cm, void *ud) {
  data_test *d = ud;

  d->cm = cm;
  xcm_cm_set_session_events(cm, data_events, d);
  xcm_cm_set_stanza_hook(cm, data_hook, d);
}

static int data_closed(void *ud) {
  return ((data_test *)ud)->closed > 0;
}

static void test_session_data(void) {
  data_test d;
  xcm_test_world_setup s = {.seed = 7, .roster = 1};
  xcm_session_info info;
  xcm_raw r;
  world w;
  char sid[64] = "";
  void *got = (void *)&got;

  memset(&d, 0, sizeof d);
  s.hooks = data_hooks;
  s.ud = &d;
  xcm_test_world_start(&w, &s);
  REQUIRE(xcm_raw_open(&r, &w.loop, "127.0.0.1", w.port, 1));
  REQUIRE(xcm_raw_login(&r, XCM_RAW_HDR, XCM_RAW_AUTH_ALICE, "data"));
  CHECK_INT(d.opened, 1);
  CHECK_INT(d.bound, 1);
  CHECK_INT(d.events_with_data, 2);
  /* The stream id, from the stream header the CM sent. */
  {
    const char *p = strstr(r.in.data, " id='");
    size_t n = 0;

    if (p == NULL)
      p = strstr(r.in.data, " id=\"");
    REQUIRE(p != NULL);
    p += 5;
    while (p[n] != '\'' && p[n] != '"' && n < sizeof sid - 1)
      n++;
    memcpy(sid, p, n);
    sid[n] = '\0';
  }
  REQUIRE(xcm_cm_session(w.cm, sid, &info, sizeof info) == 0);
  REQUIRE(info.data != NULL);
  CHECK_INT(((tagged *)info.data)->which, 1);
  REQUIRE(xcm_cm_session_get_data(w.cm, sid, &got) == 0);
  CHECK(got == info.data);
  xcm_raw_sends(&r, "<message to='alice@example.test/data'><body>swap</body>"
                    "</message>");
  CHECK(xcm_raw_wait(&r, ">swap<", 3000));
  CHECK_INT(d.hook_first, 1);
  CHECK_INT(d.hook_second, 1);
  REQUIRE(xcm_cm_session_get_data(w.cm, sid, &got) == 0);
  CHECK_INT(((tagged *)got)->which, 2);
  CHECK_INT(xcm_cm_close_session(w.cm, sid, XCM_COND_POLICY_VIOLATION, NULL),
            0);
  CHECK(xcm_test_run_until(&w.loop, data_closed, &d, 3000));
  CHECK_INT(d.freed_which, 2);
  got = (void *)&got;
  CHECK_INT(xcm_cm_session_get_data(w.cm, sid, &got), XCM_ENOTFOUND);
  CHECK(got == NULL);
  CHECK_INT(xcm_cm_session_set_data(w.cm, sid, &d), XCM_ENOTFOUND);
  CHECK_INT(xcm_cm_session_set_data(w.cm, "nosuch", &d), XCM_ENOTFOUND);
  xcm_raw_free(&r);
  xcm_test_world_stop(&w, 1000);
}

/* ---- lifetimes ------------------------------------------------------------
 */

/* What every getter says, with the session and the links that existed
 * before the shutdown. */
typedef struct getters {
  world *w;
  char sid[64];
  unsigned links;
  int calls; /* times each_getter ran */
  int in_callback;
} getters;

static void each_getter(getters *g, xcm_cm *cm) {
  xcm_stats st;
  xcm_session_info info;
  xcm_link_info li;
  xcm_node_info ni;
  void *data = (void *)&data;
  unsigned i;

  g->calls++;
  CHECK_INT(xcm_cm_stats(cm, &st, sizeof st), 0);
  CHECK_INT(st.clients_now, 0);
  CHECK_INT(st.upstream_links_up, 0);
  CHECK_INT(st.xml_parsers_busy, 0);
  CHECK(st.clients_accepted >= 1);
  CHECK_INT(xcm_cm_session(cm, g->sid, &info, sizeof info), XCM_ENOTFOUND);
  CHECK_INT(xcm_cm_session_get_data(cm, g->sid, &data), XCM_ENOTFOUND);
  CHECK(data == NULL);
  CHECK_INT(xcm_cm_upstream_links(cm), g->links);
  for (i = 0; i < g->links; i++) {
    memset(&li, 0xee, sizeof li);
    CHECK_INT(xcm_cm_upstream_link(cm, i, &li, sizeof li), 0);
    CHECK(!li.up && li.queued == 0);
  }
  CHECK_INT(xcm_cm_upstream_link(cm, g->links, &li, sizeof li), XCM_EINVAL);
  /* The one server, node 0: down, with its links, and nameless once the
   * pool is gone. */
  CHECK_INT(st.upstream_nodes_up, 0);
  CHECK_INT(xcm_cm_upstream_nodes(cm), 1);
  memset(&ni, 0xee, sizeof ni);
  CHECK_INT(xcm_cm_upstream_node(cm, 0, &ni, sizeof ni), 0);
  CHECK(!ni.up && ni.links_up == 0 && ni.links == g->links &&
        ni.server == NULL && ni.sessions == 0);
  CHECK_INT(xcm_cm_upstream_node(cm, 1, &ni, sizeof ni), XCM_EINVAL);
  CHECK(xcm_cm_policy(cm) == NULL);
  CHECK(xcm_cm_listener_port(cm, 0) == g->w->port);
  CHECK_INT(xcm_cm_listener_port(cm, 1), XCM_EINVAL);
}

static void getters_down(void *ud, xcm_cm *cm) {
  getters *g = ud;

  g->in_callback = 1;
  each_getter(g, cm);
  g->in_callback = 0;
  g->w->closed++;
}

static void sid_event(void *ud, xcm_session_event ev,
                      const xcm_session_info *info) {
  getters *g = ud;

  if (ev == XCM_SESSION_OPENED)
    snprintf(g->sid, sizeof g->sid, "%s", info->sid);
}

static void getters_hooks(xcm_cm *cm, void *ud) {
  xcm_cm_set_session_events(cm, sid_event, ud);
}

static void test_getters_until_free(void) {
  xcm_test_world_setup s = {.seed = 9, .every_link = 1};
  unsigned char buf[sizeof(xcm_stats) + 16];
  xcm_listen_options bad;
  xcm_session_info info;
  xcm_link_info li;
  getters g;
  xcm_raw r;
  world w;
  char err[256];
  size_t part = offsetof(xcm_stats, clients_now), i;

  memset(&g, 0, sizeof g);
  g.w = &w;
  s.hooks = getters_hooks;
  s.ud = &g;
  xcm_test_world_start(&w, &s);
  g.links = xcm_cm_upstream_links(w.cm);
  CHECK_INT(g.links, 2);
  REQUIRE(xcm_raw_open(&r, &w.loop, "127.0.0.1", w.port, 1));
  REQUIRE(xcm_raw_login(&r, XCM_RAW_HDR, XCM_RAW_AUTH_ALICE, "life"));
  REQUIRE(g.sid[0] != '\0');
  REQUIRE(xcm_cm_session(w.cm, g.sid, &info, sizeof info) == 0);
  REQUIRE(xcm_cm_upstream_link(w.cm, 0, &li, sizeof li) == 0);
  CHECK(li.up);
  CHECK(xcm_cm_policy(w.cm) != NULL);

  /* Out-structs: no more than the caller's size is written, and a
   * newer caller's tail is zeroed. */
  memset(buf, 0x5a, sizeof buf);
  CHECK_INT(xcm_cm_stats(w.cm, (xcm_stats *)(void *)buf, part), 0);
  for (i = part; i < sizeof buf; i++)
    if (buf[i] != 0x5a)
      break;
  CHECK_INT(i, sizeof buf);
  CHECK(((xcm_stats *)(void *)buf)->clients_accepted >= 1);
  memset(buf, 0x5a, sizeof buf);
  CHECK_INT(xcm_cm_stats(w.cm, (xcm_stats *)(void *)buf, sizeof buf), 0);
  for (i = sizeof(xcm_stats); i < sizeof buf; i++)
    if (buf[i] != 0)
      break;
  CHECK_INT(i, sizeof buf);
  CHECK_INT(xcm_cm_stats(w.cm, NULL, sizeof(xcm_stats)), XCM_EINVAL);

  /* A listener's options never initialised. */
  memset(&bad, 0, sizeof bad);
  CHECK_INT(xcm_cm_listen(w.cm, &bad, err, sizeof err), XCM_EINVAL);
  CHECK_STR(err, "xcm_listen_options not initialised: call "
                 "xcm_listen_options_init(&lo, sizeof lo)");

  REQUIRE(xcm_cm_shutdown(w.cm, 1000, getters_down, &g) == 0);
  CHECK_INT(xcm_cm_shutdown(w.cm, 1000, getters_down, &g), XCM_ECLOSED);
  while (w.closed < 1)
    uv_run(&w.loop, UV_RUN_ONCE);
  CHECK_INT(g.calls, 1);
  /* After the callback, before xcm_cm_free. */
  each_getter(&g, w.cm);
  CHECK_INT(g.calls, 2);
  xcm_raw_free(&r);
  xcm_test_world_end(&w.loop, w.cm, w.kit, &w.closed);
}

static const xcm_test tests[] = {
    {"options_init", test_options_init},
    {"options_checked", test_options_checked},
    {"options_older_caller", test_options_older_caller},
    {"options_newer_caller", test_options_newer_caller},
    {"allocator_and_testkit_sizes", test_allocator_and_testkit_sizes},
    {"session_data", test_session_data},
    {"getters_until_free", test_getters_until_free},
};

int main(int argc, char **argv) {
  return xcm_test_main(argc, argv, XCM_TESTS(tests));
}
