/* xcm-million: a million sessions in one process, without sockets.
 *
 * The testkit (the in-process Openfire) and a CM run on one libuv loop;
 * N clients log in through the custom transport (xcm_cm_attach), each a
 * small state machine: stream header, SASL PLAIN or ANONYMOUS, restart
 * and bind, then presence (unless --no-presence). Logins are pipelined
 * with at most --window in flight. Every session is then held.
 *
 * At each checkpoint (10,000, 100,000, 1,000,000 and N, up to N) the
 * logins in flight are let finish, then it measures:
 *   - resident memory per session: VmRSS minus the baseline read before
 *     the first session, over the sessions held; and, split, the heap
 *     each side holds through its allocator hook (malloc_usable_size of
 *     every live block: libxcm's CM, the testkit). The rest of the RSS
 *     is the C library's own overhead and what the hooks do not see;
 *   - the login rate over the interval since the previous checkpoint;
 *   - the median round trip of a message between two held sessions,
 *     through the CM and the testkit and back (--pings round trips);
 *   - the mean time of xcm_cm_session() by stream id, over --lookups
 *     lookups of random held sessions.
 *
 * usage: xcm-million [--smoke] [--mech PLAIN|ANONYMOUS] [--window W]
 *                    [--no-presence] [--sm] [--resume] [--pings P]
 *                    [--lookups L] [N]
 *   N defaults to 1,000,000; --smoke is N = 2,000 with TAP output
 *   (correctness only: every session logged in, a message routed both
 *   ways, every session found by its stream id, the testkit's witness
 *   saw no violation) and a full shutdown at the end.
 *   --resume: --sm with resumption asked (<enable resume='true'/>); after
 *   the last checkpoint every connection is cut (its end of the custom
 *   transport, without </stream:stream>), so that every session waits
 *   to be resumed, and the CM's heap per waiting session is measured:
 *   what a phone that lost its network costs while the CM waits.
 *
 * Exits 0 when all is well, 1 otherwise. */
#define _GNU_SOURCE
#include <inttypes.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "xcm/testkit.h"
#include "xcm/xcm.h"

#define DOMAIN "bench.test"
#define HDR                                                                    \
  "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' "            \
  "xmlns='jabber:client' to='" DOMAIN "' version='1.0'>"
#define TAIL 17 /* strlen("</stream:features>") - 1 */

enum cstate {
  C_FREE = 0, /* not started */
  C_FEATURES, /* header sent, waiting for the features */
  C_AUTH,     /* <auth/> sent */
  C_BIND,     /* restart and bind sent */
  C_READY,    /* held */
  C_PING,     /* held, waiting for a message */
  C_DEAD
};

/* One client: kept small, as all of them are allocated (and touched)
 * before the baseline is read. */
typedef struct client {
  xcm_conn *conn;
  uint32_t next_pending; /* index + 1 on the pending list, 0: end */
  uint8_t state;
  uint8_t pending; /* has a step to send on the next flush */
  uint8_t tail_len;
  char tail[TAIL];
  char sid[23]; /* the stream id, from the OPENED event */
} client;

typedef struct heap {
  size_t live; /* usable bytes of the blocks handed out and not freed */
} heap;

static struct {
  uv_loop_t *loop;
  xcm_cm *cm;
  xcm_testkit *kit;
  client *c;
  uint32_t n;            /* clients allocated */
  uint32_t started;      /* attached so far */
  uint32_t ready;        /* logged in and bound */
  uint32_t dead;         /* closed or failed: a bench failure */
  uint32_t opened;       /* OPENED events */
  uint32_t pending_head; /* index + 1, 0: empty */
  uint32_t pending_tail;
  uint64_t presences; /* presences sent */
  uint64_t available; /* testkit's SESSION_AVAILABLE events */
  uint64_t pong_at;   /* uv_hrtime of the last message received in C_PING */
  uint32_t pong_by;   /* the client that received it, + 1 */
  int anonymous;
  int presence;
  int sm;     /* --sm: XEP-0198 acknowledgements enabled after bind */
  int resume; /* --resume: ... with resumption, then every client cut */
  int smoke;
  int closing; /* shutting down: closes are expected */
  heap cm_heap, kit_heap;
  const char *first_failure;
} B;

static void *count_realloc(void *ud, void *p, size_t n) {
  heap *h = ud;
  void *q;

  if (n == 0) {
    if (p != NULL)
      h->live -= malloc_usable_size(p);
    free(p);
    return NULL;
  }
  if (p != NULL)
    h->live -= malloc_usable_size(p);
  q = realloc(p, n);
  if (q == NULL) {
    if (p != NULL)
      h->live += malloc_usable_size(p);
    return NULL;
  }
  h->live += malloc_usable_size(q);
  return q;
}

static long rss_kib(void) {
  char line[256];
  long kb = -1;
  FILE *f = fopen("/proc/self/status", "r");

  if (f == NULL)
    return -1;
  while (fgets(line, sizeof line, f) != NULL)
    if (strncmp(line, "VmRSS:", 6) == 0)
      kb = strtol(line + 6, NULL, 10);
  fclose(f);
  return kb;
}

static void fail(uint32_t i, const char *why) {
  if (B.first_failure == NULL)
    B.first_failure = why;
  if (B.c[i].state != C_DEAD) {
    B.c[i].state = C_DEAD;
    B.dead++;
  }
}

/* Queue client i's next step: libxcm may not be fed from inside its own
 * callbacks, so the step is sent on the next flush. */
static void push_pending(uint32_t i) {
  client *c = &B.c[i];

  if (c->pending)
    return;
  c->pending = 1;
  c->next_pending = 0;
  if (B.pending_tail != 0)
    B.c[B.pending_tail - 1].next_pending = i + 1;
  else
    B.pending_head = i + 1;
  B.pending_tail = i + 1;
}

/* Whether needle is in the bytes received: the tail of the previous
 * write(s) followed by data. */
static int seen(const client *c, const char *data, size_t len,
                const char *needle) {
  size_t nl = strlen(needle), k;
  char join[2 * TAIL];

  if (memmem(data, len, needle, nl) != NULL)
    return 1;
  k = len < TAIL ? len : TAIL;
  memcpy(join, c->tail, c->tail_len);
  memcpy(join + c->tail_len, data, k);
  return memmem(join, c->tail_len + k, needle, nl) != NULL;
}

static void keep_tail(client *c, const char *data, size_t len) {
  char join[2 * TAIL];
  size_t all;

  if (len >= TAIL) {
    memcpy(c->tail, data + len - TAIL, TAIL);
    c->tail_len = TAIL;
    return;
  }
  memcpy(join, c->tail, c->tail_len);
  memcpy(join + c->tail_len, data, len);
  all = c->tail_len + len;
  if (all > TAIL) {
    memmove(join, join + all - TAIL, TAIL);
    all = TAIL;
  }
  memcpy(c->tail, join, all);
  c->tail_len = (uint8_t)all;
}

static int on_write(void *ud, const char *data, size_t len) {
  client *c = ud;
  uint32_t i = (uint32_t)(c - B.c);
  int next = 0;

  switch (c->state) {
  case C_FEATURES:
    next = seen(c, data, len, "</stream:features>");
    break;
  case C_AUTH:
    if (seen(c, data, len, "<failure")) {
      fail(i, "SASL failure");
      return 0;
    }
    next = seen(c, data, len, "<success");
    break;
  case C_BIND:
    if (seen(c, data, len, "type='error'") ||
        seen(c, data, len, "type=\"error\"")) {
      fail(i, "bind error");
      return 0;
    }
    next = seen(c, data, len, "</jid>");
    break;
  case C_PING:
    if (seen(c, data, len, "</message>")) {
      B.pong_at = uv_hrtime();
      B.pong_by = i + 1;
      c->state = C_READY;
      c->tail_len = 0;
      return 0;
    }
    break;
  default:
    return 0;
  }
  if (c->state != C_DEAD && seen(c, data, len, "<stream:error")) {
    fail(i, "stream error");
    return 0;
  }
  if (next) {
    c->tail_len = 0;
    if (c->state == C_BIND) {
      c->state = C_READY;
      B.ready++;
    }
    push_pending(i);
  } else {
    keep_tail(c, data, len);
  }
  return 0;
}

static void on_close(void *ud) {
  client *c = ud;

  c->conn = NULL;
  if (c->state != C_DEAD)
    fail((uint32_t)(c - B.c), "connection closed by the CM");
}

static void b64(const unsigned char *in, size_t n, char *out) {
  static const char abc[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t i, o = 0;

  for (i = 0; i < n; i += 3) {
    unsigned v = (unsigned)in[i] << 16;
    if (i + 1 < n)
      v |= (unsigned)in[i + 1] << 8;
    if (i + 2 < n)
      v |= in[i + 2];
    out[o++] = abc[(v >> 18) & 63];
    out[o++] = abc[(v >> 12) & 63];
    out[o++] = i + 1 < n ? abc[(v >> 6) & 63] : '=';
    out[o++] = i + 2 < n ? abc[v & 63] : '=';
  }
  out[o] = '\0';
}

/* Send client i's next step: the one that follows what it just got. */
static void step(uint32_t i) {
  client *c = &B.c[i];
  char buf[512];
  int n;

  if (c->conn == NULL || c->state == C_DEAD)
    return;
  switch (c->state) {
  case C_FEATURES:
    if (B.anonymous) {
      n = snprintf(buf, sizeof buf,
                   "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
                   "mechanism='ANONYMOUS'/>");
    } else {
      unsigned char raw[64];
      char enc[100];
      int k = snprintf((char *)raw + 1, sizeof raw - 1, "u%" PRIu32, i);
      raw[0] = '\0';
      raw[k + 1] = '\0';
      memcpy(raw + k + 2, "pw", 2);
      b64(raw, (size_t)k + 4, enc);
      n = snprintf(buf, sizeof buf,
                   "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
                   "mechanism='PLAIN'>%s</auth>",
                   enc);
    }
    c->state = C_AUTH;
    xcm_conn_input(c->conn, buf, (size_t)n);
    break;
  case C_AUTH:
    n = snprintf(buf, sizeof buf,
                 "%s<iq type='set' id='b'><bind "
                 "xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>r</"
                 "resource></bind></iq>",
                 HDR);
    c->state = C_BIND;
    xcm_conn_input(c->conn, buf, (size_t)n);
    break;
  case C_READY:
    /* Just bound. */
    if (B.resume) {
      static const char e[] = "<enable xmlns='urn:xmpp:sm:3' resume='true'/>";
      xcm_conn_input(c->conn, e, sizeof e - 1);
    } else if (B.sm) {
      static const char e[] = "<enable xmlns='urn:xmpp:sm:3'/>";
      xcm_conn_input(c->conn, e, sizeof e - 1);
    }
    if (B.presence) {
      static const char p[] = "<presence/>";
      B.presences++;
      xcm_conn_input(c->conn, p, sizeof p - 1);
    }
    break;
  default:
    break;
  }
}

static void flush(void) {
  while (B.pending_head != 0) {
    uint32_t i = B.pending_head - 1;

    B.pending_head = B.c[i].next_pending;
    if (B.pending_head == 0)
      B.pending_tail = 0;
    B.c[i].pending = 0;
    step(i);
  }
}

static void start(uint32_t i) {
  client *c = &B.c[i];
  xcm_transport t;
  char peer[32];

  /* A peer like a client's address, and the client's index in it. */
  snprintf(peer, sizeof peer, "10.%u.%u.%u", (i >> 16) & 255, (i >> 8) & 255,
           i & 255);
  t.size = sizeof t;
  t.write = on_write;
  t.close = on_close;
  t.ud = c;
  c->state = C_FEATURES;
  B.started++;
  if (xcm_cm_attach(B.cm, 0, &t, peer, &c->conn) != 0) {
    fail(i, "xcm_cm_attach failed");
    return;
  }
  xcm_conn_input(c->conn, HDR, sizeof HDR - 1);
}

static void on_session(void *ud, xcm_session_event ev,
                       const xcm_session_info *info) {
  unsigned a, b, d;
  uint32_t i;

  (void)ud;
  if (ev != XCM_SESSION_OPENED && ev != XCM_SESSION_CLOSED)
    return;
  if (info->peer == NULL || sscanf(info->peer, "10.%u.%u.%u", &a, &b, &d) != 3)
    return;
  i = (a << 16) | (b << 8) | d;
  if (i >= B.n)
    return;
  if (ev == XCM_SESSION_OPENED) {
    snprintf(B.c[i].sid, sizeof B.c[i].sid, "%s", info->sid);
    B.opened++;
  } else if (B.c[i].state != C_DEAD && !B.closing) {
    fail(i, "session closed");
  }
}

static void on_kit_event(void *ud, xcm_testkit *kit,
                         const xcm_testkit_event *ev) {
  (void)ud;
  (void)kit;
  if (ev->type == XCM_TESTKIT_SESSION_AVAILABLE)
    B.available++;
}

/* Send the queued steps and turn the loop once, never blocking: libxcm
 * hands a client its bytes from a prepare handle, which runs just before
 * the loop polls, so a blocking turn would sit in the poll (up to the
 * next timer, a second) with the answer already written to us. The
 * benchmark spins instead: its figures are wall-clock time with one core
 * busy. */
static void turn(void) {
  flush();
  uv_run(B.loop, UV_RUN_NOWAIT);
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

  return x < y ? -1 : x > y;
}

/* Send a message from client a to client b (bound as jid_b). */
static void send_msg(uint32_t a, const char *jid_b) {
  char buf[512];
  int n = snprintf(buf, sizeof buf,
                   "<message to='%s' type='chat'><body>ping</body></message>",
                   jid_b);

  xcm_conn_input(B.c[a].conn, buf, (size_t)n);
}

/* Median round trip a -> b -> a in microseconds, over k trips; -1 when
 * a message got lost (the session closed). */
static double ping(uint32_t a, uint32_t b, unsigned k, unsigned *done) {
  xcm_session_info ia, ib;
  char ja[256], jb[256];
  uint64_t *rtt = calloc(k, sizeof *rtt);
  unsigned t;
  double med;

  *done = 0;
  if (rtt == NULL || xcm_cm_session(B.cm, B.c[a].sid, &ia, sizeof ia) != 0 ||
      xcm_cm_session(B.cm, B.c[b].sid, &ib, sizeof ib) != 0 || ia.jid == NULL ||
      ib.jid == NULL) {
    free(rtt);
    return -1;
  }
  snprintf(ja, sizeof ja, "%s", ia.jid);
  snprintf(jb, sizeof jb, "%s", ib.jid);
  for (t = 0; t < k; t++) {
    uint64_t t0 = uv_hrtime();

    B.c[b].state = C_PING;
    B.c[b].tail_len = 0;
    B.pong_by = 0;
    send_msg(a, jb);
    while (B.pong_by != b + 1 && B.c[b].state != C_DEAD)
      turn();
    if (B.c[b].state == C_DEAD)
      break;
    B.c[a].state = C_PING;
    B.c[a].tail_len = 0;
    B.pong_by = 0;
    send_msg(b, ja);
    while (B.pong_by != a + 1 && B.c[a].state != C_DEAD)
      turn();
    if (B.c[a].state == C_DEAD)
      break;
    rtt[t] = B.pong_at - t0;
    (*done)++;
  }
  if (*done == 0) {
    free(rtt);
    return -1;
  }
  qsort(rtt, *done, sizeof *rtt, cmp_u64);
  med = rtt[*done / 2] / 1e3;
  free(rtt);
  return med;
}

static uint64_t rnd_state = 88172645463325252ull;

static uint64_t rnd(void) {
  rnd_state ^= rnd_state << 13;
  rnd_state ^= rnd_state >> 7;
  rnd_state ^= rnd_state << 17;
  return rnd_state;
}

/* Mean ns per xcm_cm_session() over k lookups of random sessions among
 * the first n; *missed counts those not found. */
static double lookups(uint32_t n, unsigned k, unsigned *missed) {
  xcm_session_info info;
  uint64_t t0, sum = 0;
  unsigned j;

  *missed = 0;
  t0 = uv_hrtime();
  for (j = 0; j < k; j++) {
    uint32_t i = (uint32_t)(rnd() % n);

    if (xcm_cm_session(B.cm, B.c[i].sid, &info, sizeof info) != 0)
      (*missed)++;
    else
      sum += (uintptr_t)info.sid[0];
  }
  t0 = uv_hrtime() - t0;
  if (sum == 42) /* keeps the loop from being optimised away */
    fputc(' ', stderr);
  return (double)t0 / k;
}

/* Every one of the first n sessions found, with its own peer. */
static unsigned lookup_all(uint32_t n) {
  xcm_session_info info;
  unsigned missed = 0;
  uint32_t i;
  char peer[32];

  for (i = 0; i < n; i++) {
    snprintf(peer, sizeof peer, "10.%u.%u.%u", (i >> 16) & 255, (i >> 8) & 255,
             i & 255);
    if (xcm_cm_session(B.cm, B.c[i].sid, &info, sizeof info) != 0 ||
        info.peer == NULL || strcmp(info.peer, peer) != 0 || info.jid == NULL)
      missed++;
  }
  return missed;
}

static void kit_closed(void *ud, xcm_testkit *kit) {
  (void)kit;
  *(int *)ud = 1;
}

static void cm_closed(void *ud, xcm_cm *cm) {
  (void)cm;
  *(int *)ud = 1;
}

/* Cut every client's connection without a word: each session waits to
 * be resumed, holding no connection, TLS state or parser. What the CM's
 * heap holds then, per session, against cm0 (before the first). */
static int cut_all(size_t cm0, unsigned *tap) {
  size_t attached = B.cm_heap.live;
  uint32_t i, n = B.ready;
  xcm_stats st;
  int ok;

  B.closing = 1;
  for (i = 0; i < B.n; i++)
    if (B.c[i].conn != NULL) {
      xcm_conn *conn = B.c[i].conn;

      B.c[i].state = C_DEAD; /* closes are expected now */
      xcm_conn_input_end(conn);
    }
  do {
    turn();
    xcm_cm_stats(B.cm, &st, sizeof st);
  } while (st.sm_detached_now + st.sm_expired < n && st.clients_now > 0);
  /* The connections' handles go on the loop's next turns. */
  for (i = 0; i < 4; i++)
    turn();
  xcm_cm_stats(B.cm, &st, sizeof st);
  ok = st.sm_detached_now == n && st.clients_now == 0;
  printf("# %u sessions waiting to be resumed: CM heap %.0f B each "
         "(attached, with acknowledgements: %.0f)\n",
         (unsigned)st.sm_detached_now,
         (double)(B.cm_heap.live - cm0) / (n ? n : 1),
         (double)(attached - cm0) / (n ? n : 1));
  if (B.smoke)
    printf("%s %u - every cut session waits to be resumed (%" PRIu64
           " of %u, %" PRIu64 " clients left)\n",
           ok ? "ok" : "not ok", ++*tap, st.sm_detached_now, n, st.clients_now);
  return ok;
}

static void usage(void) {
  fprintf(stderr, "usage: xcm-million [--smoke] [--mech PLAIN|ANONYMOUS] "
                  "[--window W] [--no-presence] [--sm] [--resume] [--pings P] "
                  "[--lookups L] "
                  "[N]\n");
  exit(2);
}

int main(int argc, char **argv) {
  static const xcm_allocator cm_alloc = {sizeof cm_alloc, count_realloc,
                                         &B.cm_heap};
  static const xcm_allocator kit_alloc = {sizeof kit_alloc, count_realloc,
                                          &B.kit_heap};
  static const uint32_t marks[] = {10000, 100000, 1000000};
  xcm_testkit_options ko;
  xcm_options o;
  xcm_listen_options lo;
  xcm_testkit_stats ks;
  xcm_stats st;
  char err[256];
  uint32_t n = 1000000, window = 2000, prev = 0, next_mark;
  unsigned pings = 300, nlookups = 1000000, m = 0, tap = 0;
  long rss0;
  size_t cm0, kit0;
  uint64_t t_prev;
  int ok = 1, i;

  for (i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--smoke") == 0) {
      B.smoke = 1;
      n = 2000;
    } else if (strcmp(argv[i], "--mech") == 0 && i + 1 < argc) {
      i++;
      if (strcmp(argv[i], "ANONYMOUS") == 0)
        B.anonymous = 1;
      else if (strcmp(argv[i], "PLAIN") != 0)
        usage();
    } else if (strcmp(argv[i], "--window") == 0 && i + 1 < argc) {
      window = (uint32_t)strtoul(argv[++i], NULL, 10);
    } else if (strcmp(argv[i], "--sm") == 0) {
      B.sm = 1;
    } else if (strcmp(argv[i], "--resume") == 0) {
      B.sm = B.resume = 1;
    } else if (strcmp(argv[i], "--no-presence") == 0) {
      B.presence = -1;
    } else if (strcmp(argv[i], "--pings") == 0 && i + 1 < argc) {
      pings = (unsigned)strtoul(argv[++i], NULL, 10);
    } else if (strcmp(argv[i], "--lookups") == 0 && i + 1 < argc) {
      nlookups = (unsigned)strtoul(argv[++i], NULL, 10);
    } else if (argv[i][0] != '-') {
      n = (uint32_t)strtoul(argv[i], NULL, 10);
    } else {
      usage();
    }
  }
  B.presence = B.presence == 0;
  if (n < 2 || n > (1u << 24) || window < 1 || pings < 1 || nlookups < 1)
    usage();
  signal(SIGPIPE, SIG_IGN);
  B.loop = uv_default_loop();
  B.n = n;
  /* Every client's few bytes now, touched, so that the baseline holds
   * them and the figures hold only what the CM and the testkit add. */
  B.c = malloc((size_t)n * sizeof *B.c);
  if (B.c == NULL) {
    fprintf(stderr, "xcm-million: no memory for %u clients\n", n);
    return 1;
  }
  memset(B.c, 0, (size_t)n * sizeof *B.c);

  xcm_testkit_options_init(&ko, sizeof ko);
  ko.domain = DOMAIN;
  ko.secret = "bench";
  ko.open_accounts = 1;
  ko.max_sessions = n + 1000;
  ko.max_out = 256u << 20;
  ko.on_event = on_kit_event;
  ko.alloc = &kit_alloc;
  if (xcm_testkit_new(&B.kit, B.loop, &ko, err, sizeof err) != 0) {
    fprintf(stderr, "xcm-million: testkit: %s\n", err);
    return 1;
  }
  xcm_options_init(&o, sizeof o);
  o.domain = DOMAIN;
  o.server_port = xcm_testkit_port(B.kit);
  o.name = "million";
  o.secret = "bench";
  o.upstream_tls = XCM_UPSTREAM_TLS_OFF;
  o.sm_enable = B.sm;
  o.sm_resume_ms = 3600000;
  /* A benchmark holds every session from one process: no shaping, no
   * connection limits, no timeouts. */
  o.rate = XCM_UNLIMITED;
  o.rate_bytes = XCM_UNLIMITED;
  o.max_clients = XCM_UNLIMITED;
  o.max_per_address = XCM_UNLIMITED;
  o.header_timeout_ms = XCM_UNLIMITED;
  o.auth_timeout_ms = XCM_UNLIMITED;
  o.idle_timeout_ms = XCM_UNLIMITED;
  o.upstream_wait_ms = 60000;
  o.log_level = XCM_LOG_ERROR;
  o.alloc = &cm_alloc;
  if (xcm_cm_new(&B.cm, B.loop, &o, err, sizeof err) != 0) {
    fprintf(stderr, "xcm-million: cm: %s\n", err);
    return 1;
  }
  xcm_listen_options_init(&lo, sizeof lo);
  if (xcm_cm_listen(B.cm, &lo, err, sizeof err) != 0) {
    fprintf(stderr, "xcm-million: listen: %s\n", err);
    return 1;
  }
  xcm_cm_set_session_events(B.cm, on_session, NULL);
  xcm_cm_start(B.cm);
  /* Every upstream link up before the baseline. */
  do {
    uv_run(B.loop, UV_RUN_ONCE);
    xcm_cm_stats(B.cm, &st, sizeof st);
  } while (st.upstream_links_up < o.connections);
  rss0 = rss_kib();
  cm0 = B.cm_heap.live;
  kit0 = B.kit_heap.live;

  printf("# xcm-million: %u sessions, SASL %s, %s, window %u\n", n,
         B.anonymous ? "ANONYMOUS" : "PLAIN",
         B.presence ? "with presence" : "no presence", window);
  printf("# baseline: RSS %ld KiB (the bench's %zu bytes per client "
         "included), heap CM %zu, testkit %zu bytes\n",
         rss0, sizeof *B.c, cm0, kit0);
  printf("# %9s %10s %9s %9s %9s %10s %10s %10s\n", "sessions", "logins/s",
         "RSS B/s", "CM B/s", "kit B/s", "RSS MiB", "route us", "lookup ns");
  fflush(stdout);

  t_prev = uv_hrtime();
  while (m < sizeof marks / sizeof *marks && marks[m] < prev + 1)
    m++;
  next_mark = m < sizeof marks / sizeof *marks && marks[m] < n ? marks[m] : n;
  for (;;) {
    double rate, route_us, lookup_ns;
    unsigned done, missed;
    long rss;
    uint64_t now;

    /* Up to the checkpoint, with at most window logins in flight. */
    while (B.ready + B.dead < next_mark) {
      while (B.started < next_mark && B.started - B.ready - B.dead < window)
        start(B.started);
      turn();
    }
    /* The last steps sent (the newest bound client's enable and
     * presence wait for a flush), and presences accounted for too. */
    while ((B.pending_head != 0 || B.available < B.presences) && B.dead == 0)
      turn();
    now = uv_hrtime();
    rate = (double)(B.ready - prev) / ((double)(now - t_prev) / 1e9);
    if (B.dead > 0) {
      printf("# %u sessions failed, the first: %s\n", B.dead, B.first_failure);
      ok = 0;
      break;
    }
    rss = rss_kib();
    route_us = ping(0, B.ready - 1, pings, &done);
    lookup_ns = lookups(B.ready, nlookups, &missed);
    printf("# %9u %10.0f %9.0f %9.0f %9.0f %10.1f %10.1f %10.1f\n", B.ready,
           rate, (double)(rss - rss0) * 1024 / B.ready,
           (double)(B.cm_heap.live - cm0) / B.ready,
           (double)(B.kit_heap.live - kit0) / B.ready, rss / 1024.0, route_us,
           lookup_ns);
    fflush(stdout);
    if (done < pings || missed > 0) {
      printf("# %u of %u round trips, %u lookups missed\n", done, pings,
             missed);
      ok = 0;
    }
    if (B.smoke) {
      unsigned all = lookup_all(B.ready);
      printf("%s %u - %u sessions logged in and bound (%u opened)\n",
             B.ready == n && B.opened == n ? "ok" : "not ok", ++tap, B.ready,
             B.opened);
      printf("%s %u - %u round trips of a message between two sessions\n",
             done == pings ? "ok" : "not ok", ++tap, done);
      printf("%s %u - every session found by its stream id (%u missed)\n",
             all == 0 && missed == 0 ? "ok" : "not ok", ++tap, all + missed);
      if (B.ready != n || B.opened != n || done != pings || all != 0)
        ok = 0;
    }
    prev = B.ready;
    if (prev >= n)
      break;
    while (m < sizeof marks / sizeof *marks && marks[m] <= prev)
      m++;
    next_mark = m < sizeof marks / sizeof *marks && marks[m] < n ? marks[m] : n;
    t_prev = uv_hrtime();
  }

  if (B.resume && ok && !cut_all(cm0, &tap))
    ok = 0;
  xcm_cm_stats(B.cm, &st, sizeof st);
  xcm_testkit_get_stats(B.kit, &ks, sizeof ks);
  printf("# CM: %" PRIu64 " clients, %" PRIu64 " stanzas in, %" PRIu64
         " out; testkit: %" PRIu64 " creates, %" PRIu64 " routes in, %" PRIu64
         " violations\n",
         st.clients_now, st.stanzas_in, st.stanzas_out, ks.creates,
         ks.routes_in, ks.violations);
  if (B.smoke) {
    int cm_done = 0, kit_done = 0;

    /* A full shutdown: every session closed upstream, judged by the
     * witness too. */
    B.closing = 1;
    xcm_cm_shutdown(B.cm, 5000, cm_closed, &cm_done);
    while (!cm_done)
      uv_run(B.loop, UV_RUN_ONCE);
    xcm_testkit_get_stats(B.kit, &ks, sizeof ks);
    printf("%s %u - the testkit's witness saw no violation%s%s\n",
           ks.violations == 0 ? "ok" : "not ok", ++tap,
           ks.violations == 0 ? "" : ": ",
           ks.violations == 0 ? "" : xcm_testkit_first_violation(B.kit));
    printf("1..%u\n", tap);
    if (ks.violations != 0)
      ok = 0;
    xcm_testkit_close(B.kit, kit_closed, &kit_done);
    uv_run(B.loop, UV_RUN_DEFAULT);
    xcm_cm_free(B.cm);
    xcm_testkit_free(B.kit);
    uv_loop_close(B.loop);
    free(B.c);
  } else if (ks.violations != 0) {
    printf("# first violation: %s\n", xcm_testkit_first_violation(B.kit));
    ok = 0;
  }
  /* Without --smoke the process just ends: freeing a million sessions
   * one by one measures nothing. */
  return ok ? 0 : 1;
}
