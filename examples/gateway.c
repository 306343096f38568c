/* A custom gateway embedding libxcm: a connection manager with a stanza
 * filter and its own logging, in front of an Openfire.
 *
 * usage: gateway OPENFIRE_HOST OPENFIRE_PORT SECRET DOMAIN PORTFILE [WORD]
 *
 * Messages whose body contains WORD (default "spam") are dropped on their
 * way to the server; every routed stanza is counted by direction and
 * kind, each session's stanzas are counted on the session itself (its
 * user data), and the counts are printed when the gateway stops (SIGTERM
 * or SIGINT). The client port is chosen by the system and written to
 * PORTFILE. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "xcm/xcm.h"

typedef struct gateway {
  xcm_cm *cm;
  const char *word;
  unsigned long seen[2][4]; /* direction x message/presence/iq/other */
  unsigned long dropped;
  unsigned long sessions, most; /* sessions ended; most stanzas of one */
  uv_signal_t term, intr;
} gateway;

/* Hung on each session with xcm_cm_session_set_data. */
typedef struct per_session {
  unsigned long stanzas;
} per_session;

static int kind(const char *name) {
  if (strcmp(name, "message") == 0)
    return 0;
  if (strcmp(name, "presence") == 0)
    return 1;
  return strcmp(name, "iq") == 0 ? 2 : 3;
}

/* strstr within len bytes: a stanza's bytes are not NUL-terminated. */
static const char *find(const char *hay, size_t len, const char *needle) {
  size_t n = strlen(needle), i;

  for (i = 0; i + n <= len; i++)
    if (memcmp(hay + i, needle, n) == 0)
      return hay + i;
  return NULL;
}

/* Looks at each stanza both ways: counts it, and keeps the word out. */
static xcm_verdict filter(void *ud, const xcm_stanza_info *st,
                          const char **replacement, size_t *len) {
  gateway *g = ud;
  const char *body, *end, *w;

  (void)replacement;
  (void)len;
  g->seen[st->dir][kind(st->name)]++;
  if (st->session_data != NULL)
    ((per_session *)st->session_data)->stanzas++;
  if (st->dir != XCM_TO_SERVER || kind(st->name) != 0)
    return XCM_PASS;
  body = find(st->bytes, st->len, "<body>");
  end =
      body ? find(body, st->len - (size_t)(body - st->bytes), "</body>") : NULL;
  w = end ? find(body, (size_t)(end - body), g->word) : NULL;
  if (w != NULL) {
    g->dropped++;
    return XCM_DROP;
  }
  return XCM_PASS;
}

static void on_session(void *ud, xcm_session_event ev,
                       const xcm_session_info *info) {
  gateway *g = ud;
  per_session *ps = info->data;

  if (ev == XCM_SESSION_OPENED) {
    ps = calloc(1, sizeof *ps);
    if (ps != NULL && xcm_cm_session_set_data(g->cm, info->sid, ps) != 0)
      free(ps);
  } else if (ev == XCM_SESSION_CLOSED && ps != NULL) {
    g->sessions++;
    if (ps->stanzas > g->most)
      g->most = ps->stanzas;
    /* The closed event is the session's last: libxcm never frees it. */
    free(ps);
  }
}

static void log_line(void *ud, int level, const char *msg) {
  (void)ud;
  fprintf(stderr, "[gateway %s] %s\n",
          level <= XCM_LOG_ERROR  ? "error"
          : level <= XCM_LOG_WARN ? "warning"
                                  : "note",
          msg);
}

static void stopped(void *ud, xcm_cm *cm) {
  gateway *g = ud;

  (void)cm;
  printf("to server: %lu messages, %lu presences, %lu iqs, %lu other; "
         "dropped %lu\n",
         g->seen[0][0], g->seen[0][1], g->seen[0][2], g->seen[0][3],
         g->dropped);
  printf("to clients: %lu messages, %lu presences, %lu iqs, %lu other\n",
         g->seen[1][0], g->seen[1][1], g->seen[1][2], g->seen[1][3]);
  printf("sessions: %lu, most stanzas in one: %lu\n", g->sessions, g->most);
}

static void on_signal(uv_signal_t *s, int signum) {
  gateway *g = s->data;

  (void)signum;
  uv_close((uv_handle_t *)&g->term, NULL);
  uv_close((uv_handle_t *)&g->intr, NULL);
  xcm_cm_shutdown(g->cm, 2000, stopped, g);
}

int main(int argc, char **argv) {
  static gateway g;
  uv_loop_t *loop = uv_default_loop();
  xcm_options o;
  xcm_listen_options lo;
  char err[512];
  FILE *f;

  if (argc < 6) {
    fprintf(stderr,
            "usage: %s OPENFIRE_HOST OPENFIRE_PORT SECRET DOMAIN "
            "PORTFILE [WORD]\n",
            argv[0]);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  g.word = argc > 6 ? argv[6] : "spam";
  xcm_options_init(&o, sizeof o);
  o.server_host = argv[1];
  o.server_port = atoi(argv[2]);
  o.secret = argv[3];
  o.domain = argv[4];
  o.name = "gateway";
  o.upstream_tls = XCM_UPSTREAM_TLS_OFF;
  /* A gateway in front of machines, not people: its own clients may be
   * fast and many behind one address. */
  o.rate = 100000;
  o.burst = 100000;
  o.rate_bytes = XCM_UNLIMITED;
  o.max_per_address = XCM_UNLIMITED;
  o.log = log_line;
  if (xcm_cm_new(&g.cm, loop, &o, err, sizeof err) != 0) {
    fprintf(stderr, "gateway: %s\n", err);
    return 1;
  }
  xcm_cm_set_stanza_hook(g.cm, filter, &g);
  xcm_cm_set_session_events(g.cm, on_session, &g);
  xcm_listen_options_init(&lo, sizeof lo);
  lo.host = "127.0.0.1";
  lo.port = 0;
  if (xcm_cm_listen(g.cm, &lo, err, sizeof err) != 0 ||
      xcm_cm_start(g.cm) != 0) {
    fprintf(stderr, "gateway: %s\n", err);
    return 1;
  }
  f = fopen(argv[5], "w");
  if (f == NULL)
    return 1;
  fprintf(f, "%d\n", xcm_cm_listener_port(g.cm, 0));
  fclose(f);
  uv_signal_init(loop, &g.term);
  uv_signal_init(loop, &g.intr);
  g.term.data = g.intr.data = &g;
  uv_signal_start(&g.term, on_signal, SIGTERM);
  uv_signal_start(&g.intr, on_signal, SIGINT);
  uv_run(loop, UV_RUN_DEFAULT);
  xcm_cm_free(g.cm);
  return 0;
}
