/* In front of an Openfire cluster (xcm_options.upstream_servers): two
 * testkits on loopback stand for two nodes, one on IPv4 and one on IPv6.
 * The CM spreads its links over both, its sessions over both; one node
 * stops (crashes, or announces system-shutdown) while every client is
 * exchanging messages, and exactly the sessions on it end, with
 * remote-connection-failed, while the others go on with nothing lost;
 * new logins meanwhile land on the live node; the node comes back on its
 * port, its links return and new sessions go to it again.
 *
 * Nothing sleeps: every wait is for an event (a message back, a stream
 * error, a node event) with a generous bound. Each client plays
 * ping-pong with itself (one message in flight, sent when the last came
 * back), so a lost or reordered message shows as a gap in its numbers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "harness.h"
#include "rawclient.h"
#include "world.h"
#include "xcm/testkit.h"
#include "xcm/xcm.h"

#define LINKS 2  /* per node */
#define FIRST 8  /* clients logged in before the outage */
#define DURING 4 /* during it */
#define AFTER 4  /* once the node is back */
#define CLIENTS (FIRST + DURING + AFTER)
#define ROUNDS 30 /* messages each client exchanges per phase */
/* The node stops once this many messages came back, all clients
 * together: every one is then mid-exchange. */
#define STOP_AT (FIRST * 5)
/* The CM reconnects with backoff (up to 30 s between attempts): a
 * bound for the node's return, not an expected time. */
#define RETURN_MS 40000

typedef struct cluster cluster;

typedef struct client {
  xcm_raw raw;
  cluster *c;
  int idx;
  char jid[64];
  int node;      /* the kit that bound it */
  unsigned sent; /* messages sent */
  unsigned got;  /* messages back, in order */
  unsigned bad;  /* messages back out of order (or lost before) */
  unsigned target;
  size_t scan; /* where the next message may start in raw.in */
  int live;    /* logged in and not ended */
} client;

struct cluster {
  uv_loop_t loop;
  xcm_testkit *kit[2];
  int kit_port[2];
  int kit_down[2];
  xcm_cm *cm;
  int cm_port;
  int cm_down;
  client cl[CLIENTS];
  unsigned nclients;
  unsigned total_got;
  int stop_node;     /* the node to stop at STOP_AT, -1: none */
  int stop_shutdown; /* by system-shutdown rather than a crash */
  unsigned got_at_stop[CLIENTS];
  /* Node events, as heard. */
  unsigned node_up_events[2], node_down_events[2];
  uint64_t lost_in_event[2];
};

static const char *const users[] = {"alice", "bob", NULL};

/* ---- the nodes ----------------------------------------------------------- */

static void kit_closed(void *ud, xcm_testkit *kit) {
  (void)kit;
  *(int *)ud = 1;
}

static void kit_start(cluster *c, int n, int port) {
  xcm_testkit_options ko;
  const char *const *u;
  char err[256];

  xcm_testkit_options_init(&ko, sizeof ko);
  ko.host = n == 0 ? "127.0.0.1" : "::1";
  ko.port = port;
  if (xcm_testkit_new(&c->kit[n], &c->loop, &ko, err, sizeof err) != 0)
    xcm_test_note("testkit %d: %s", n, err);
  REQUIRE(c->kit[n] != NULL);
  for (u = users; *u != NULL; u++)
    xcm_testkit_add_account(c->kit[n], *u, *u);
  c->kit_port[n] = xcm_testkit_port(c->kit[n]);
  c->kit_down[n] = 0;
}

/* Close node n's testkit (a crash: every connection aborted), check its
 * witness and free it. */
static void kit_end(cluster *c, int n) {
  xcm_testkit_close(c->kit[n], kit_closed, &c->kit_down[n]);
  while (!c->kit_down[n])
    uv_run(&c->loop, UV_RUN_ONCE);
  CHECK(xcm_test_kit_clean(c->kit[n]));
  xcm_testkit_free(c->kit[n]);
  c->kit[n] = NULL;
}

static void on_node(void *ud, unsigned i, int up, const xcm_node_info *info) {
  cluster *c = ud;

  REQUIRE(i < 2);
  CHECK_INT(info->up, up);
  if (up) {
    c->node_up_events[i]++;
  } else {
    c->node_down_events[i]++;
    c->lost_in_event[i] = info->sessions_lost;
  }
}

static void cm_start(cluster *c) {
  xcm_options o;
  xcm_listen_options lo;
  char servers[128], err[256];

  snprintf(servers, sizeof servers, "127.0.0.1:%d, [::1]:%d", c->kit_port[0],
           c->kit_port[1]);
  xcm_options_init(&o, sizeof o);
  o.domain = "example.test";
  o.name = "cm1";
  o.secret = "cmsecret";
  o.upstream_servers = servers;
  o.connections = LINKS;
  o.upstream_tls = XCM_UPSTREAM_TLS_OFF;
  if (xcm_cm_new(&c->cm, &c->loop, &o, err, sizeof err) != 0)
    xcm_test_note("xcm_cm_new: %s", err);
  REQUIRE(c->cm != NULL);
  xcm_cm_set_node_events(c->cm, on_node, c);
  xcm_listen_options_init(&lo, sizeof lo);
  REQUIRE(xcm_cm_listen(c->cm, &lo, err, sizeof err) == 0);
  c->cm_port = xcm_cm_listener_port(c->cm, 0);
  REQUIRE(xcm_cm_start(c->cm) == 0);
}

static int node_is(cluster *c, unsigned n, int up) {
  xcm_node_info ni;

  return xcm_cm_upstream_node(c->cm, n, &ni, sizeof ni) == 0 && ni.up == up &&
         ni.links_up == (up ? LINKS : 0);
}

static int both_nodes_up(void *ud) {
  cluster *c = ud;
  xcm_stats st;

  xcm_cm_stats(c->cm, &st, sizeof st);
  return st.upstream_links_up == 2 * LINKS && st.upstream_nodes_up == 2 &&
         xcm_cm_policy(c->cm) != NULL;
}

static void world_start(cluster *c) {
  memset(c, 0, sizeof *c);
  c->stop_node = -1;
  REQUIRE(uv_loop_init(&c->loop) == 0);
  kit_start(c, 0, 0);
  kit_start(c, 1, 0);
  cm_start(c);
  REQUIRE(xcm_test_run_until(&c->loop, both_nodes_up, c, 10000));
}

static void world_stop(cluster *c) {
  unsigned i;
  int n;

  for (i = 0; i < c->nclients; i++)
    if (!c->cl[i].raw.closed)
      xcm_raw_free(&c->cl[i].raw);
  xcm_test_cm_shutdown(c->cm, 2000, &c->cm_down);
  while (!c->cm_down)
    uv_run(&c->loop, UV_RUN_ONCE);
  for (n = 0; n < 2; n++)
    if (c->kit[n] != NULL)
      kit_end(c, n);
  xcm_cm_free(c->cm);
  uv_run(&c->loop, UV_RUN_DEFAULT);
  CHECK_INT(uv_loop_close(&c->loop), 0);
}

/* ---- clients: ping-pong with oneself ---------------------------------------
 */

static void send_next(client *cl) {
  char buf[200];

  cl->sent++;
  snprintf(buf, sizeof buf,
           "<message to='%s' type='chat'><body>c%d-%u</body></message>",
           cl->jid, cl->idx, cl->sent);
  xcm_raw_sends(&cl->raw, buf);
}

static void stop_node(cluster *c);

static void on_data(xcm_raw *r, int eof) {
  client *cl = r->ud;
  cluster *c = cl->c;
  char prefix[32];
  const char *at, *end;
  size_t plen;

  if (eof) {
    cl->live = 0;
    return;
  }
  plen = (size_t)snprintf(prefix, sizeof prefix, "<body>c%d-", cl->idx);
  while ((at = strstr(r->in.data + cl->scan, prefix)) != NULL &&
         (end = strstr(at, "</body>")) != NULL) {
    unsigned n = (unsigned)strtoul(at + plen, NULL, 10);

    if (n != cl->got + 1)
      cl->bad++;
    cl->got = n;
    c->total_got++;
    cl->scan = (size_t)(end - r->in.data);
  }
  if (cl->live && cl->got == cl->sent && cl->sent < cl->target)
    send_next(cl);
  if (c->stop_node >= 0 && c->total_got >= STOP_AT)
    stop_node(c);
}

/* Log client i in as alice/ri (bob for odd i), and find the node that
 * bound it. */
static void login(cluster *c, unsigned i) {
  client *cl = &c->cl[i];
  int n;

  memset(cl, 0, sizeof *cl);
  cl->c = c;
  cl->idx = (int)i;
  cl->node = -1;
  snprintf(cl->jid, sizeof cl->jid, "%s@example.test/r%u",
           i % 2 ? "bob" : "alice", i);
  REQUIRE(xcm_raw_open(&cl->raw, &c->loop, "127.0.0.1", c->cm_port, 1));
  {
    char res[16];

    snprintf(res, sizeof res, "r%u", i);
    REQUIRE(xcm_raw_login(&cl->raw, XCM_RAW_HDR,
                          i % 2 ? XCM_RAW_AUTH_BOB : XCM_RAW_AUTH_ALICE, res));
  }
  cl->scan = cl->raw.in.len;
  cl->raw.ud = cl;
  cl->raw.on_data = on_data;
  cl->live = 1;
  for (n = 0; n < 2; n++)
    if (c->kit[n] != NULL && xcm_testkit_jid_state(c->kit[n], cl->jid) > 0) {
      CHECK(cl->node < 0); /* bound on one node only */
      cl->node = n;
    }
  CHECK(cl->node >= 0);
  if (i >= c->nclients)
    c->nclients = i + 1;
}

/* Every live client exchanges up to `more` further messages. */
static void play(cluster *c, unsigned from, unsigned to, unsigned more) {
  unsigned i;

  for (i = from; i < to; i++) {
    client *cl = &c->cl[i];

    if (!cl->live)
      continue;
    cl->target = cl->sent + more;
    if (cl->got == cl->sent)
      send_next(cl);
  }
}

typedef struct range {
  cluster *c;
  unsigned from, to;
  int node; /* -1: any */
} range;

/* Every live client of the range (on node, if not -1) is done. */
static int played(void *ud) {
  const range *rg = ud;
  unsigned i;

  for (i = rg->from; i < rg->to; i++) {
    const client *cl = &rg->c->cl[i];

    if (rg->node >= 0 && cl->node != rg->node)
      continue;
    if (!cl->live || cl->got < cl->target)
      return 0;
  }
  return 1;
}

/* Every client of the range on node has ended. */
static int ended(void *ud) {
  const range *rg = ud;
  unsigned i;

  for (i = rg->from; i < rg->to; i++)
    if (rg->c->cl[i].node == rg->node && rg->c->cl[i].live)
      return 0;
  return 1;
}

static unsigned on_node_count(const cluster *c, unsigned from, unsigned to,
                              int node) {
  unsigned i, n = 0;

  for (i = from; i < to; i++)
    n += c->cl[i].node == node ? 1u : 0u;
  return n;
}

static void stop_node(cluster *c) {
  int n = c->stop_node;
  unsigned i;

  c->stop_node = -1;
  for (i = 0; i < c->nclients; i++)
    c->got_at_stop[i] = c->cl[i].got;
  if (c->stop_shutdown) {
    /* Its listener stays open: stalled, it takes the CM's new links
     * without answering them, so that the node stays away (a restarting
     * Openfire) until the test lets it back. */
    xcm_testkit_system_shutdown(c->kit[n]);
    xcm_testkit_stall(c->kit[n], 1);
  } else {
    /* From inside a client's read: the testkit closes on its own. */
    xcm_testkit_close(c->kit[n], kit_closed, &c->kit_down[n]);
  }
}

/* ---- the cases -------------------------------------------------------------
 */

/* Links: LINKS on each node, numbered on over the nodes, each resource
 * on the node it belongs to. */
static void check_links(cluster *c) {
  unsigned i, n;

  CHECK_INT(xcm_cm_upstream_nodes(c->cm), 2);
  CHECK_INT(xcm_cm_upstream_links(c->cm), 2 * LINKS);
  for (n = 0; n < 2; n++) {
    xcm_node_info ni;
    char want[64];

    REQUIRE(xcm_cm_upstream_node(c->cm, n, &ni, sizeof ni) == 0);
    snprintf(want, sizeof want, n == 0 ? "127.0.0.1:%d" : "[::1]:%d",
             c->kit_port[n]);
    CHECK_STR(ni.server, want);
    CHECK_INT(ni.first_link, n * LINKS);
    CHECK_INT(ni.links, LINKS);
    CHECK_INT(ni.links_up, LINKS);
    CHECK(ni.up);
    CHECK_INT(xcm_testkit_connections(c->kit[n]), LINKS);
  }
  for (i = 0; i < 2 * LINKS; i++) {
    xcm_link_info li;
    char want[32];
    unsigned k, seen = 0;

    REQUIRE(xcm_cm_upstream_link(c->cm, i, &li, sizeof li) == 0);
    CHECK(li.up);
    CHECK_INT(li.node, i / LINKS);
    snprintf(want, sizeof want, "cm1/w%u-", i + 1);
    CHECK(li.resource != NULL && strncmp(li.resource, want, strlen(want)) == 0);
    /* The node it belongs to holds it; the other does not. */
    for (k = 0; k < LINKS; k++) {
      const char *a = xcm_testkit_connection_jid(c->kit[li.node], k);
      seen += a != NULL && li.resource != NULL && strcmp(a, li.resource) == 0;
    }
    CHECK_INT(seen, 1);
  }
  CHECK(xcm_cm_upstream_node(c->cm, 2, NULL, 0) == XCM_EINVAL);
}

static void check_node(cluster *c, unsigned n, int up, size_t sessions,
                       uint64_t losses, uint64_t lost) {
  xcm_node_info ni;

  REQUIRE(xcm_cm_upstream_node(c->cm, n, &ni, sizeof ni) == 0);
  CHECK_INT(ni.up, up);
  CHECK_INT(ni.sessions, sessions);
  CHECK_INT(ni.losses, losses);
  CHECK_INT(ni.sessions_lost, lost);
}

/* The node's clients got remote-connection-failed, and nothing else
 * ended. */
static void check_ends(cluster *c, unsigned to, int gone) {
  unsigned i, flowing[2] = {0, 0};

  for (i = 0; i < to; i++) {
    client *cl = &c->cl[i];

    if (cl->node >= 0 && cl->node < 2)
      flowing[cl->node] += c->got_at_stop[i];
    if (cl->node == gone) {
      CHECK(!cl->live);
      CHECK(strstr(cl->raw.in.data, "<remote-connection-failed") != NULL);
      /* It was mid-exchange when its node went. */
      CHECK(c->got_at_stop[i] < ROUNDS);
    } else {
      CHECK(cl->live);
      CHECK(strstr(cl->raw.in.data, "stream:error") == NULL);
    }
    CHECK_INT(cl->bad, 0);
  }
  /* Messages had come back on both nodes when one stopped. */
  CHECK(flowing[0] > 0 && flowing[1] > 0);
}

static int node0_back(void *ud) {
  cluster *c = ud;

  return node_is(c, 0, 1) && c->node_up_events[0] == 2;
}

static void outage(int by_shutdown) {
  cluster c;
  range rg;
  xcm_stats st;
  unsigned i;

  world_start(&c);
  check_links(&c);
  CHECK_INT(c.node_up_events[0], 1);
  CHECK_INT(c.node_up_events[1], 1);

  /* Logged in on both: the links with the fewest sessions take the next,
   * so the nodes take turns. */
  for (i = 0; i < FIRST; i++)
    login(&c, i);
  CHECK_INT(on_node_count(&c, 0, FIRST, 0), FIRST / 2);
  CHECK_INT(on_node_count(&c, 0, FIRST, 1), FIRST / 2);
  check_node(&c, 0, 1, FIRST / 2, 0, 0);
  check_node(&c, 1, 1, FIRST / 2, 0, 0);

  /* Messages flowing on both nodes; node 0 stops in their midst. */
  c.stop_node = 0;
  c.stop_shutdown = by_shutdown;
  play(&c, 0, FIRST, ROUNDS);
  rg.c = &c;
  rg.from = 0;
  rg.to = FIRST;
  rg.node = 1;
  REQUIRE(xcm_test_run_until(&c.loop, played, &rg, 20000));
  rg.node = 0;
  REQUIRE(xcm_test_run_until(&c.loop, ended, &rg, 20000));
  CHECK(c.stop_node < 0); /* it did stop */
  check_ends(&c, FIRST, 0);
  CHECK_INT(c.node_down_events[0], 1);
  CHECK_INT(c.node_down_events[1], 0);
  CHECK_INT(c.lost_in_event[0], FIRST / 2);
  check_node(&c, 0, 0, 0, 1, FIRST / 2);
  check_node(&c, 1, 1, FIRST / 2, 0, 0);
  xcm_cm_stats(c.cm, &st, sizeof st);
  CHECK_INT(st.sessions_lost, FIRST / 2);
  CHECK_INT(st.upstream_nodes_up, 1);
  CHECK_INT(st.stream_errors[XCM_COND_REMOTE_CONNECTION_FAILED], FIRST / 2);

  /* New logins meanwhile land on the live node, and work. */
  for (i = FIRST; i < FIRST + DURING; i++)
    login(&c, i);
  CHECK_INT(on_node_count(&c, FIRST, FIRST + DURING, 1), DURING);
  play(&c, 0, FIRST + DURING, ROUNDS);
  rg.from = 0;
  rg.to = FIRST + DURING;
  rg.node = 1;
  REQUIRE(xcm_test_run_until(&c.loop, played, &rg, 20000));

  /* The node comes back on its port (after a crash, a new server; after
   * system-shutdown the same listener answers the links again). */
  if (by_shutdown) {
    CHECK(node_is(&c, 0, 0));
    xcm_testkit_stall(c.kit[0], 0);
  } else {
    while (!c.kit_down[0])
      uv_run(&c.loop, UV_RUN_ONCE);
    CHECK(xcm_test_kit_clean(c.kit[0]));
    xcm_testkit_free(c.kit[0]);
    c.kit[0] = NULL;
    kit_start(&c, 0, c.kit_port[0]);
  }
  REQUIRE(xcm_test_run_until(&c.loop, node0_back, &c, RETURN_MS));
  CHECK_INT(xcm_testkit_connections(c.kit[0]), LINKS);
  xcm_cm_stats(c.cm, &st, sizeof st);
  CHECK_INT(st.upstream_nodes_up, 2);
  CHECK_INT(st.upstream_links_up, 2 * LINKS);

  /* New sessions go to it again: its links have the fewest. */
  for (i = FIRST + DURING; i < CLIENTS; i++)
    login(&c, i);
  CHECK_INT(on_node_count(&c, FIRST + DURING, CLIENTS, 0), AFTER);
  check_node(&c, 0, 1, AFTER, 1, FIRST / 2);
  check_node(&c, 1, 1, FIRST / 2 + DURING, 0, 0);

  /* Everyone still here exchanges another round, on both nodes. */
  play(&c, 0, CLIENTS, ROUNDS);
  rg.from = 0;
  rg.to = CLIENTS;
  rg.node = -1;
  for (i = 0; i < CLIENTS; i++)
    if (!c.cl[i].live)
      c.cl[i].node = -2; /* ended: not waited for */
  rg.node = 1;
  REQUIRE(xcm_test_run_until(&c.loop, played, &rg, 20000));
  rg.node = 0;
  REQUIRE(xcm_test_run_until(&c.loop, played, &rg, 20000));
  for (i = 0; i < CLIENTS; i++)
    CHECK_INT(c.cl[i].bad, 0);
  xcm_cm_stats(c.cm, &st, sizeof st);
  CHECK_INT(st.sessions_lost, FIRST / 2);
  world_stop(&c);
}

/* Node 0 crashes (every connection aborted), then a new server starts on
 * its port. */
static void test_node_crash(void) {
  outage(0);
}

/* Node 0 announces system-shutdown on its links and closes them; its
 * listener stays, as a restarted server's, and answers again once the
 * test unstalls it. */
static void test_node_shutdown(void) {
  outage(1);
}

static int three_links_up(void *ud) {
  xcm_stats st;

  xcm_cm_stats(((cluster *)ud)->cm, &st, sizeof st);
  return st.upstream_links_up == 2 * LINKS - 1;
}

/* One link of a node breaks: its sessions move to the node's other link
 * (the node keeps them), none to the other node, none is lost. */
static void test_link_loss_stays_on_node(void) {
  cluster c;
  range rg;
  xcm_stats st;
  unsigned i;

  world_start(&c);
  for (i = 0; i < FIRST; i++)
    login(&c, i);
  play(&c, 0, FIRST, 3);
  rg.c = &c;
  rg.from = 0;
  rg.to = FIRST;
  rg.node = -1;
  REQUIRE(xcm_test_run_until(&c.loop, played, &rg, 20000));
  REQUIRE(xcm_testkit_drop_connection(c.kit[1], 0) == 0);
  REQUIRE(xcm_test_run_until(&c.loop, three_links_up, &c, 10000));
  check_node(&c, 0, 1, FIRST / 2, 0, 0);
  check_node(&c, 1, 1, FIRST / 2, 0, 0);
  CHECK_INT(c.node_down_events[1], 0);
  play(&c, 0, FIRST, ROUNDS);
  REQUIRE(xcm_test_run_until(&c.loop, played, &rg, 20000));
  for (i = 0; i < FIRST; i++) {
    CHECK(c.cl[i].live);
    CHECK_INT(c.cl[i].bad, 0);
  }
  xcm_cm_stats(c.cm, &st, sizeof st);
  CHECK_INT(st.sessions_lost, 0);
  world_stop(&c);
}

/* The list's syntax and its clash with server_host, as xcm_cm_new and
 * xcm_options_check see them. */
static void test_options(void) {
  static const struct {
    const char *list;
    const char *host;
    int port;
    unsigned connections;
    const char *why; /* NULL: accepted */
  } cases[] = {
      {"of1:5262, of2:5262", NULL, 0, 5, NULL},
      {"of1, [fd00::3]:5270,10.0.0.1:1", NULL, 0, 5, NULL},
      {"of1:5262", "of1", 5262, 5, NULL},
      {"OF1:5262", "of1", 5262, 5, NULL},
      {"of1:5262, of2:5262", "of1", 5262, 5, "both name the upstream"},
      {"of1:5262", "of2", 5262, 5, "both name the upstream"},
      {"of1:5262", NULL, 5263, 5, "both name the upstream"},
      {"", NULL, 0, 5, "entry 1 is empty"},
      {"of1,,of2", NULL, 0, 5, "entry 2 is empty"},
      {"of1,", NULL, 0, 5, "entry 2 is empty"},
      {"of1:0", NULL, 0, 5, "no valid port"},
      {"of1:65536", NULL, 0, 5, "no valid port"},
      {"of1:52x", NULL, 0, 5, "no valid port"},
      {"of1:", NULL, 0, 5, "no valid port"},
      {"::1", NULL, 0, 5, "in brackets"},
      {"fd00::3:5262", NULL, 0, 5, "in brackets"},
      {"[::1", NULL, 0, 5, "no ']'"},
      {"[::1]5262", NULL, 0, 5, "text after ']'"},
      {"[]:5262", NULL, 0, 5, "no host"},
      {":5262", NULL, 0, 5, "no host"},
      {"of1 of2", NULL, 0, 5, "a space in the host"},
      {"of1\"x:5262", NULL, 0, 5, "no host name or address has"},
      {"of/1:5262", NULL, 0, 5, "no host name or address has"},
      {"of1:5262, OF1:5262", NULL, 0, 5, "listed twice"},
      {"a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p", NULL, 0, 16, NULL},
      {"a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q", NULL, 0, 1, "more than 16"},
      {"a,b,c,d,e", NULL, 0, 64, "at most 256"},
  };
  unsigned i;
  char why[256];

  CHECK_INT(xcm_options_check(NULL, why, sizeof why), XCM_EINVAL);
  for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    unsigned before = xcm_test_failures();
    xcm_options o;
    char err[512] = "";
    int rc;

    xcm_options_init(&o, sizeof o);
    o.domain = "example.test";
    o.name = "cm1";
    o.secret = "s";
    o.upstream_servers = cases[i].list;
    o.connections = cases[i].connections;
    if (cases[i].host != NULL)
      o.server_host = cases[i].host;
    if (cases[i].port != 0)
      o.server_port = cases[i].port;
    rc = xcm_options_check(&o, err, sizeof err);
    if (cases[i].why == NULL) {
      if (!CHECK_INT(rc, 0))
        xcm_test_note("\"%s\": %s", cases[i].list, err);
    } else {
      CHECK_INT(rc, XCM_EINVAL);
      if (!CHECK(strstr(err, cases[i].why) != NULL))
        xcm_test_note("\"%s\": %s", cases[i].list, err);
      CHECK(strstr(err, "upstream_servers") != NULL);
      xcm_test_tried("bad-configs", before);
    }
  }
}

/* Without upstream_servers, the one server is node 0 with every link. */
static void test_one_server_is_one_node(void) {
  xcm_test_world w;
  xcm_test_world_setup s;
  xcm_node_info ni;
  xcm_link_info li;
  xcm_stats st;
  char want[32];

  memset(&s, 0, sizeof s);
  s.every_link = 1;
  xcm_test_world_start(&w, &s);
  CHECK_INT(xcm_cm_upstream_nodes(w.cm), 1);
  REQUIRE(xcm_cm_upstream_node(w.cm, 0, &ni, sizeof ni) == 0);
  snprintf(want, sizeof want, "127.0.0.1:%d", xcm_testkit_port(w.kit));
  CHECK_STR(ni.server, want);
  CHECK_INT(ni.links, 2);
  CHECK_INT(ni.links_up, 2);
  CHECK(ni.up);
  REQUIRE(xcm_cm_upstream_link(w.cm, 1, &li, sizeof li) == 0);
  CHECK_INT(li.node, 0);
  xcm_cm_stats(w.cm, &st, sizeof st);
  CHECK_INT(st.upstream_nodes_up, 1);
  xcm_test_world_stop(&w, 1000);
}

int main(int argc, char **argv) {
  static const xcm_test tests[] = {
      {"options", test_options},
      {"one_server_is_one_node", test_one_server_is_one_node},
      {"link_loss_stays_on_node", test_link_loss_stays_on_node},
      {"node_crash", test_node_crash},
      {"node_shutdown", test_node_shutdown},
  };

  return xcm_test_main(argc, argv, XCM_TESTS(tests));
}
