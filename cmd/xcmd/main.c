/* xcmd: the connection manager daemon, a thin program over libxcm.
 *
 * The main thread owns the signals; each worker thread runs its own
 * libuv loop with its own xcm_cm (listeners bound with SO_REUSEPORT, an
 * upstream pool whose resources carry the worker's number). Listeners
 * are bound before privileges are dropped and before the workers start,
 * so a port in use or a bad certificate stops the daemon at once with a
 * message that names it. */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "config.h"
#include "demo.h"
#include "metrics.h"
#include "xcm/xcm.h"

#define MAX_WORKERS 64

typedef struct worker {
  unsigned index;
  uv_loop_t loop;
  uv_thread_t thread;
  uv_async_t stop;
  uv_async_t reload;
  uv_async_t drain; /* SIGUSR2 */
  xcm_cm *cm;
  xcmd_demo *demo; /* --demo only */
  xcmd_metrics_worker metrics;
  char prefix[16];
  char name[16];
  char cm_name[256];
  int done;
} worker;

typedef struct daemon_state {
  xcmd_config cfg;
  int demo;
  worker workers[MAX_WORKERS];
  unsigned nworkers;
  uv_loop_t *main_loop;
  uv_signal_t sigterm, sigint, sighup, sigusr2;
  xcmd_metrics metrics;
  xcmd_metrics_worker *metric_workers[MAX_WORKERS];
  int stopping;
  int draining;
  unsigned stopped;
  /* A worker is done (its instance shut down): after a drain the main
   * loop waits for every one of them, with its signals still watched. */
  uv_async_t worker_done;
  int main_closed;
  /* With several workers: they resume each other's sessions. */
  xcm_resume_group *resume_group;
} daemon_state;

/* ---- logging ------------------------------------------------------------ */

static const char *level_name(int level) {
  switch (level) {
  case XCM_LOG_ERROR:
    return "error";
  case XCM_LOG_WARN:
    return "warn";
  case XCM_LOG_INFO:
    return "info";
  default:
    return "debug";
  }
}

static xcmd_log_target log_target = XCMD_LOG_STDERR;

static void log_line(const char *who, int level, const char *msg) {
  char stamp[32];
  time_t t = time(NULL);
  struct tm tm;

  if (log_target == XCMD_LOG_SYSLOG) {
    int prio = level == XCM_LOG_ERROR  ? LOG_ERR
               : level == XCM_LOG_WARN ? LOG_WARNING
               : level == XCM_LOG_INFO ? LOG_INFO
                                       : LOG_DEBUG;
    syslog(prio, "%s: %s", who, msg);
    return;
  }
  gmtime_r(&t, &tm);
  strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
  /* One write per line, so lines of several workers do not mix. */
  fprintf(stderr, "%s %s %s: %s\n", stamp, who, level_name(level), msg);
}

static void worker_log(void *ud, int level, const char *msg) {
  log_line(((worker *)ud)->name, level, msg);
}

/* [log] bodies: every stanza routed, either way, into the debug log,
 * cut at BODY_LOG_MAX bytes. Only ever installed when asked for: it puts
 * users' messages into the log. */
enum { BODY_LOG_MAX = 4096 };

static xcm_verdict log_stanza(void *ud, const xcm_stanza_info *st,
                              const char **replacement, size_t *len) {
  char line[BODY_LOG_MAX + 128];
  size_t n = st->len < BODY_LOG_MAX ? st->len : BODY_LOG_MAX;

  (void)replacement;
  (void)len;
  snprintf(line, sizeof line, "%s %s: %.*s%s",
           st->dir == XCM_TO_SERVER ? "from client" : "to client", st->sid,
           (int)n, st->bytes, n < st->len ? " [cut]" : "");
  log_line(((worker *)ud)->name, XCM_LOG_DEBUG, line);
  return XCM_PASS;
}

/* At debug level, each session's life with the client's address (the
 * one a PROXY header named, behind a balancer) and its stream id, so
 * that a user's complaint can be followed to the instance and the
 * session at Openfire (which knows it by the stream id). */
static void log_session(void *ud, xcm_session_event ev,
                        const xcm_session_info *info) {
  char line[1024];

  switch (ev) {
  case XCM_SESSION_OPENED:
    /* Marked, so that the close of a connection that never became a
     * session (a balancer's health check) is not logged. */
    xcm_cm_session_set_data(((worker *)ud)->cm, info->sid, ud);
    snprintf(line, sizeof line, "session %s opened: client %s%s", info->sid,
             info->peer, info->tls ? " (TLS)" : "");
    break;
  case XCM_SESSION_BOUND:
    snprintf(line, sizeof line, "session %s bound: %s, client %s", info->sid,
             info->jid ? info->jid : "?", info->peer);
    break;
  case XCM_SESSION_CLOSED:
    if (info->data == NULL)
      return;
    snprintf(
        line, sizeof line, "session %s closed (%s%s%s): client %s", info->sid,
        info->cond == XCM_COND_NONE ? "no error" : xcm_cond_name(info->cond),
        info->text ? ": " : "", info->text ? info->text : "", info->peer);
    break;
  case XCM_SESSION_DETACHED:
    snprintf(line, sizeof line,
             "session %s detached (%s%s%s): %s waits to be resumed", info->sid,
             info->cond == XCM_COND_NONE ? "no error"
                                         : xcm_cond_name(info->cond),
             info->text ? ": " : "", info->text ? info->text : "",
             info->jid ? info->jid : "?");
    break;
  case XCM_SESSION_RESUMED:
    snprintf(line, sizeof line, "session %s resumed: %s, client %s%s",
             info->sid, info->jid ? info->jid : "?", info->peer,
             info->tls ? " (TLS)" : "");
    break;
  default:
    return;
  }
  log_line(((worker *)ud)->name, XCM_LOG_DEBUG, line);
}

static void say(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void say(int level, const char *fmt, ...) {
  char msg[1024];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  log_line("xcmd", level, msg);
}

/* ---- workers ------------------------------------------------------------ */

static void worker_stopped(void *ud, xcm_cm *cm) {
  worker *w = ud;
  daemon_state *d = w->loop.data;

  (void)cm;
  __atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
  xcmd_metrics_worker_stop(&w->metrics);
  uv_close((uv_handle_t *)&w->stop, NULL);
  uv_close((uv_handle_t *)&w->reload, NULL);
  uv_close((uv_handle_t *)&w->drain, NULL);
  uv_async_send(&d->worker_done);
  /* The demo's upstream lives on this loop too; with the CM drained it
   * can go, and the loop ends. */
  xcmd_demo_stop(w->demo);
}

static void on_stop(uv_async_t *a) {
  worker *w = a->data;
  daemon_state *d = w->stop.loop->data;

  xcm_cm_shutdown(w->cm, d->cfg.drain_ms, worker_stopped, w);
}

/* The last session is gone: shut down as on SIGTERM. */
static void worker_drained(void *ud, xcm_cm *cm) {
  worker *w = ud;
  daemon_state *d = w->loop.data;

  xcm_cm_shutdown(cm, d->cfg.drain_ms, worker_stopped, w);
}

static void on_drain(uv_async_t *a) {
  worker *w = a->data;
  daemon_state *d = w->loop.data;

  /* XCM_ECLOSED: a SIGTERM's shutdown came first, and ends it all. */
  xcm_cm_drain(w->cm, d->cfg.drain_period_ms, worker_drained, w);
}

static void on_reload(uv_async_t *a) {
  worker *w = a->data;
  char err[512];
  int n = xcm_cm_reload_certs(w->cm, err, sizeof err);

  if (n < 0)
    log_line(w->name, XCM_LOG_ERROR, err);
}

static void worker_main(void *arg) {
  worker *w = arg;

  uv_run(&w->loop, UV_RUN_DEFAULT);
  xcmd_demo_free(w->demo, worker_log, w);
}

/* The XMPP listeners on every worker (SO_REUSEPORT shares their
 * connections out), first and in the same order everywhere, as the
 * resume group needs; the HTTP ones after them, on the first worker
 * only. A BOSH session is many requests over several connections, each
 * of which SO_REUSEPORT would send to any worker, and only the one
 * holding the session can answer them; so web clients, WebSocket ones
 * too, all live on one worker. */
static int listen_all(daemon_state *d, worker *w) {
  char err[512];
  unsigned i;
  int http;

  for (http = 0; http <= 1; http++)
    for (i = 0; i < d->cfg.nlisteners; i++) {
      xcm_listen_options lo = d->cfg.listeners[i];

      if ((lo.http != 0) != http || (http && w->index > 0))
        continue;
      lo.reuseport = lo.reuseport || d->nworkers > 1;
      if (xcm_cm_listen(w->cm, &lo, err, sizeof err) != 0) {
        say(XCM_LOG_ERROR, "%s", err);
        return -1;
      }
    }
  return 0;
}

static int worker_init(daemon_state *d, worker *w, unsigned index) {
  xcm_options o = d->cfg.opt;
  char err[512];

  w->index = index;
  snprintf(w->name, sizeof w->name, "w%u", index + 1);
  /* Upstream resources must differ between workers: NAME/w2-1-3. */
  snprintf(w->prefix, sizeof w->prefix, "%s%u-",
           o.resource_prefix ? o.resource_prefix : "w", index + 1);
  o.resource_prefix = w->prefix;
  /* Openfire treats every connection of one CM name as one pool: it
   * answers on any of them and routes a session by a hash over all of
   * them. Workers keep sessions apart, so each is a CM of its own. */
  if (d->nworkers > 1) {
    snprintf(w->cm_name, sizeof w->cm_name, "%s-w%u", o.name, index + 1);
    o.name = w->cm_name;
  }
  /* Descriptors are counted per process: max_clients is the daemon's,
   * shared out between the workers. (max_per_address stays per worker:
   * one address's connections spread over workers by SO_REUSEPORT's
   * hash, unevenly.) */
  if (d->nworkers > 1 && o.max_clients != 0 && o.max_clients != XCM_UNLIMITED)
    o.max_clients = (o.max_clients + d->nworkers - 1) / d->nworkers;
  o.log = worker_log;
  o.log_ud = w;
  /* A client's new connection reaches any worker (SO_REUSEPORT's hash):
   * it moves to the worker holding the session it resumes. */
  o.resume_group = d->resume_group;
  if (uv_loop_init(&w->loop) != 0)
    return -1;
  w->loop.data = d;
  if (d->demo && xcmd_demo_start(&w->demo, &w->loop, &o, worker_log, w, err,
                                 sizeof err) != 0) {
    say(XCM_LOG_ERROR, "%s", err);
    return -1;
  }
  if (xcm_cm_new(&w->cm, &w->loop, &o, err, sizeof err) != 0) {
    say(XCM_LOG_ERROR, "%s", err);
    return -1;
  }
  if (listen_all(d, w) != 0)
    return -1;
  if (d->cfg.log_bodies)
    xcm_cm_set_stanza_hook(w->cm, log_stanza, w);
  if (d->cfg.log_level >= XCM_LOG_DEBUG)
    xcm_cm_set_session_events(w->cm, log_session, w);
  uv_async_init(&w->loop, &w->stop, on_stop);
  w->stop.data = w;
  uv_async_init(&w->loop, &w->reload, on_reload);
  w->reload.data = w;
  uv_async_init(&w->loop, &w->drain, on_drain);
  w->drain.data = w;
  if (d->cfg.metrics_port != 0 &&
      xcmd_metrics_worker_init(&w->metrics, &w->loop, w->cm) != 0)
    return -1;
  return 0;
}

/* ---- signals ------------------------------------------------------------ */

/* The main loop's own handles: once they are closed it ends, and main()
 * joins the workers. The signals go first (a second SIGTERM then ends
 * the process at once, as before); the rest when every worker is done. */
static void close_signals(daemon_state *d) {
  if (uv_is_closing((uv_handle_t *)&d->sigterm))
    return;
  uv_close((uv_handle_t *)&d->sigterm, NULL);
  uv_close((uv_handle_t *)&d->sigint, NULL);
  uv_close((uv_handle_t *)&d->sighup, NULL);
  uv_close((uv_handle_t *)&d->sigusr2, NULL);
}

static void on_worker_done(uv_async_t *a) {
  daemon_state *d = a->data;
  unsigned i;

  for (i = 0; i < d->nworkers; i++)
    if (!__atomic_load_n(&d->workers[i].done, __ATOMIC_ACQUIRE))
      return;
  if (d->main_closed)
    return;
  d->main_closed = 1;
  close_signals(d);
  xcmd_metrics_stop(&d->metrics);
  /* Unreferenced rather than closed: another worker's send may still be
   * on its way, and must find a live handle. */
  uv_unref((uv_handle_t *)&d->worker_done);
}

static void stop_all(daemon_state *d, const char *why) {
  unsigned i;

  if (d->stopping)
    return;
  d->stopping = 1;
  say(XCM_LOG_INFO, "%s: draining (up to %u ms), then exiting", why,
      d->cfg.drain_ms);
  /* A worker done after a drain has closed its handles. One that ends
   * between the check and the send has too, but its loop lives until
   * main() joins it, so the send then does nothing. */
  for (i = 0; i < d->nworkers; i++)
    if (!__atomic_load_n(&d->workers[i].done, __ATOMIC_ACQUIRE))
      uv_async_send(&d->workers[i].stop);
  close_signals(d);
  xcmd_metrics_stop(&d->metrics);
}

/* SIGUSR2: a rolling upgrade's drain. The listeners close at once (a
 * load balancer sees the port refused and sends new clients elsewhere),
 * the sessions end spread over [daemon] drain_period, then xcmd shuts
 * down and exits 0. SIGTERM meanwhile ends the rest at once. */
static void drain_all(daemon_state *d) {
  unsigned i;

  if (d->stopping || d->draining) {
    say(XCM_LOG_INFO, "SIGUSR2: already %s",
        d->stopping ? "stopping" : "draining");
    return;
  }
  d->draining = 1;
  say(XCM_LOG_INFO,
      "SIGUSR2: draining for an upgrade: listeners closed, sessions ended "
      "over %u ms, then exiting",
      d->cfg.drain_period_ms);
  for (i = 0; i < d->nworkers; i++)
    uv_async_send(&d->workers[i].drain);
}

static void on_signal(uv_signal_t *s, int signum) {
  daemon_state *d = s->data;

  if (signum == SIGHUP) {
    unsigned i;

    /* Certificates change live; everything else in the file is read
     * only at start. */
    say(XCM_LOG_INFO, "SIGHUP: reloading the listeners' certificates; "
                      "other settings need a restart");
    for (i = 0; i < d->nworkers; i++)
      uv_async_send(&d->workers[i].reload);
    return;
  }
  if (signum == SIGUSR2) {
    drain_all(d);
    return;
  }
  stop_all(d, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* ---- start-up ----------------------------------------------------------- */

static int drop_privileges(const xcmd_config *c) {
  struct passwd *pw;
  struct group *gr;
  gid_t gid;

  if (c->user == NULL)
    return 0;
  pw = getpwnam(c->user);
  if (pw == NULL) {
    say(XCM_LOG_ERROR, "[daemon] user '%s' does not exist", c->user);
    return -1;
  }
  gid = pw->pw_gid;
  if (c->group != NULL) {
    gr = getgrnam(c->group);
    if (gr == NULL) {
      say(XCM_LOG_ERROR, "[daemon] group '%s' does not exist", c->group);
      return -1;
    }
    gid = gr->gr_gid;
  }
  if (setgroups(0, NULL) != 0 || setgid(gid) != 0 || setuid(pw->pw_uid) != 0) {
    say(XCM_LOG_ERROR, "cannot drop privileges to %s: %s", c->user,
        strerror(errno));
    return -1;
  }
  say(XCM_LOG_INFO, "running as %s", c->user);
  return 0;
}

static int write_pid_file(const char *path) {
  FILE *f;

  if (path == NULL)
    return 0;
  f = fopen(path, "w");
  if (f == NULL) {
    say(XCM_LOG_ERROR, "cannot write the pid file %s: %s", path,
        strerror(errno));
    return -1;
  }
  fprintf(f, "%ld\n", (long)getpid());
  fclose(f);
  return 0;
}

static void usage(FILE *out) {
  fprintf(out,
          "usage: xcmd -c FILE [--cert FILE --key FILE]\n"
          "       xcmd --check-config FILE [--cert FILE --key FILE]\n"
          "       xcmd --demo [--port PORT] [--http-port PORT]\n"
          "       xcmd --version | --help\n"
          "\n"
          "An XMPP connection manager in front of Openfire.\n"
          "  -c FILE           run with FILE: xcmd's own format (see the\n"
          "                    xcmd(8) page and doc/config.md) or the Java\n"
          "                    connection manager's manager.xml\n"
          "  --check-config F  validate F and exit (0: valid)\n"
          "  --cert, --key     PEM certificate and key for listeners whose\n"
          "                    manager.xml names a Java keystore\n"
          "  --demo            run on a built-in Openfire stand-in: point any\n"
          "                    XMPP client at localhost, domain localhost\n"
          "  --port PORT       with --demo, the client port (default 5222)\n"
          "  --http-port PORT  with --demo, the port for web clients: BOSH\n"
          "                    at /http-bind/, WebSocket at /ws/ and\n"
          "                    /xmpp-websocket (default 5280)\n");
}

/* The demo: XMPP on loopback, and HTTP for browser clients next to it,
 * open to pages from any origin (a page opened from a file or another
 * port): fine on loopback for a demo, never for a real listener. */
static int demo_config(xcmd_config *c, int port, int http_port) {
  static const char text[] = "[server]\ndomain = localhost\n"
                             "[upstream]\nname = xcmd-demo\n"
                             "secret = demo\nconnections = 2\ntls = off\n"
                             "[listener]\nhost = 127.0.0.1\nport = 5222\n"
                             "[listener]\nhost = 127.0.0.1\nport = 5280\n"
                             "http = yes\nhttp_origins = *\n"
                             "[daemon]\nworkers = 1\n";
  char err[512];

  if (xcmd_config_parse(text, sizeof text - 1, "(demo)", c, err, sizeof err) !=
      0) {
    say(XCM_LOG_ERROR, "%s", err);
    return -1;
  }
  c->listeners[0].port = port;
  c->listeners[1].port = http_port;
  return 0;
}

int main(int argc, char **argv) {
  static daemon_state d;
  const char *file = NULL, *cert = NULL, *key = NULL;
  int check = 0, port = 5222, http_port = 5280, i, err;
  char msg[1024];
  unsigned n;

  for (i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;

    if (strcmp(a, "--version") == 0) {
      printf("xcmd %s (libxcm)\n", xcm_version_string());
      return 0;
    } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage(stdout);
      return 0;
    } else if (strcmp(a, "--demo") == 0) {
      if (!xcmd_demo_available) {
        fprintf(stderr, "xcmd: --demo: this xcmd was built without the demo "
                        "upstream (the testkit); run cmd/demo from the "
                        "source tree, which builds xcmd-demo\n");
        return 2;
      }
      d.demo = 1;
    } else if ((strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) && v) {
      file = v;
      i++;
    } else if (strcmp(a, "--check-config") == 0 && v) {
      file = v;
      check = 1;
      i++;
    } else if (strcmp(a, "--cert") == 0 && v) {
      cert = v;
      i++;
    } else if (strcmp(a, "--key") == 0 && v) {
      key = v;
      i++;
    } else if (strcmp(a, "--port") == 0 && v) {
      port = atoi(v);
      i++;
    } else if (strcmp(a, "--http-port") == 0 && v) {
      http_port = atoi(v);
      i++;
    } else {
      fprintf(stderr, "xcmd: unknown or incomplete option '%s'\n", a);
      usage(stderr);
      return 2;
    }
  }
  if (d.demo) {
    if (demo_config(&d.cfg, port, http_port) != 0)
      return 1;
  } else if (file == NULL) {
    usage(stderr);
    return 2;
  } else if ((err = xcmd_config_load(file, &d.cfg, msg, sizeof msg)) != 0) {
    fprintf(stderr, "xcmd: %s\n", msg);
    /* A packaged file not filled in yet: "not configured", which the
     * packaged unit does not restart on. */
    return err == XCMD_EPLACEHOLDER ? XCMD_EXIT_PLACEHOLDER : 1;
  }
  if ((cert != NULL) != (key != NULL)) {
    fprintf(stderr, "xcmd: --cert and --key go together\n");
    return 1;
  }
  if (cert != NULL && xcmd_config_set_cert(&d.cfg, cert, key) < 0) {
    fprintf(stderr, "xcmd: cannot use --cert/--key\n");
    return 1;
  }
  if (d.cfg.cert_wanted && cert == NULL) {
    fprintf(stderr,
            "xcmd: %s names a Java keystore for TLS listeners, which "
            "xcmd cannot read: give the certificate and key in PEM "
            "with --cert FILE --key FILE\n",
            file);
    return 1;
  }
  for (n = 0; n < d.cfg.nwarnings; n++)
    fprintf(stderr, "xcmd: warning: %s\n", d.cfg.warnings[n]);
  if (check) {
    printf("%s: valid (%u listener%s)\n", file, d.cfg.nlisteners,
           d.cfg.nlisteners == 1 ? "" : "s");
    xcmd_config_free(&d.cfg);
    return 0;
  }

  log_target = d.cfg.log_target;
  if (log_target == XCMD_LOG_SYSLOG)
    openlog("xcmd", LOG_PID, LOG_DAEMON);
  signal(SIGPIPE, SIG_IGN);
  d.nworkers =
      d.cfg.workers ? d.cfg.workers : (unsigned)uv_available_parallelism();
  if (d.demo || d.nworkers == 0)
    d.nworkers = 1;
  if (d.nworkers > MAX_WORKERS)
    d.nworkers = MAX_WORKERS;
  d.main_loop = uv_default_loop();
  if (d.nworkers > 1 && d.cfg.opt.sm_enable &&
      xcm_resume_group_new(&d.resume_group) != 0) {
    say(XCM_LOG_ERROR, "out of memory");
    return 1;
  }
  for (n = 0; n < d.nworkers; n++)
    if (worker_init(&d, &d.workers[n], n) != 0)
      return 1;
  if (drop_privileges(&d.cfg) != 0 || write_pid_file(d.cfg.pid_file) != 0)
    return 1;
  if (d.cfg.metrics_port != 0) {
    d.metrics.workers = d.metric_workers;
    d.metrics.nworkers = d.nworkers;
    for (n = 0; n < d.nworkers; n++)
      d.metric_workers[n] = &d.workers[n].metrics;
    if (xcmd_metrics_start(&d.metrics, d.main_loop,
                           d.cfg.metrics_host ? d.cfg.metrics_host
                                              : "127.0.0.1",
                           d.cfg.metrics_port, msg, sizeof msg) != 0) {
      say(XCM_LOG_ERROR, "%s", msg);
      return 1;
    }
  }
  uv_signal_init(d.main_loop, &d.sigterm);
  uv_signal_init(d.main_loop, &d.sigint);
  uv_signal_init(d.main_loop, &d.sighup);
  uv_signal_init(d.main_loop, &d.sigusr2);
  d.sigterm.data = d.sigint.data = d.sighup.data = d.sigusr2.data = &d;
  uv_signal_start(&d.sigterm, on_signal, SIGTERM);
  uv_signal_start(&d.sigint, on_signal, SIGINT);
  uv_signal_start(&d.sighup, on_signal, SIGHUP);
  uv_signal_start(&d.sigusr2, on_signal, SIGUSR2);
  uv_async_init(d.main_loop, &d.worker_done, on_worker_done);
  d.worker_done.data = &d;
  for (n = 0; n < d.nworkers; n++) {
    err = xcm_cm_start(d.workers[n].cm);
    if (err == 0)
      err = uv_thread_create(&d.workers[n].thread, worker_main, &d.workers[n]);
    if (err != 0) {
      say(XCM_LOG_ERROR, "cannot start worker %u: %s", n + 1,
          xcm_strerror(err));
      return 1;
    }
  }
  say(XCM_LOG_INFO, "xcmd %s started: %u worker%s, domain %s",
      xcm_version_string(), d.nworkers, d.nworkers == 1 ? "" : "s",
      d.cfg.opt.domain);
  for (n = 0; n < d.cfg.nlisteners; n++)
    if (d.cfg.listeners[n].http && d.nworkers > 1) {
      say(XCM_LOG_INFO, "web clients (BOSH, WebSocket) are served by worker "
                        "1 only: a BOSH session's requests must all reach "
                        "the worker that holds it");
      break;
    }
  if (d.demo)
    say(XCM_LOG_INFO,
        "demo: point an XMPP client at 127.0.0.1 port %d and log in as "
        "alice@localhost (password alice) or bob@localhost (password bob); "
        "any other name works too. No TLS in the demo: allow plaintext in "
        "the client. Browser clients: WebSocket at "
        "ws://127.0.0.1:%d/xmpp-websocket, BOSH at "
        "http://127.0.0.1:%d/http-bind/. Ctrl-C stops.",
        port, http_port, http_port);
  uv_run(d.main_loop, UV_RUN_DEFAULT);
  for (n = 0; n < d.nworkers; n++)
    uv_thread_join(&d.workers[n].thread);
  for (n = 0; n < d.nworkers; n++) {
    xcm_cm_free(d.workers[n].cm);
    uv_loop_close(&d.workers[n].loop);
  }
  xcm_resume_group_free(d.resume_group);
  if (d.cfg.pid_file != NULL)
    unlink(d.cfg.pid_file);
  say(XCM_LOG_INFO, "stopped");
  xcmd_config_free(&d.cfg);
  return 0;
}
