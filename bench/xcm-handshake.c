/* xcm-handshake: direct-TLS handshakes against a listener, as fast as it
 * takes them, to measure what a TLS login costs the CM on top of a plain
 * one. Each connection does the handshake (mbedTLS, ALPN xmpp-client,
 * no certificate check: the cost measured is the server's) and closes.
 *
 * usage: xcm-handshake [--host H] [--port P] [--count N] [--parallel C]
 *                      [--tap]
 * Prints one JSON line: handshakes done, failures, seconds; or, with
 * --tap, one TAP result (the test suite's smoke run). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "core/ctx.h"
#include "transport/stream.h"

typedef struct run {
  xcm_ctx ctx;
  xcm_tls_config *tls;
  struct sockaddr_storage addr;
  int left;   /* connections still to start */
  int active; /* connections open now */
  int done;   /* handshakes that finished */
  int failed; /* connections that ended without one */
  const char *first_error;
} run;

typedef struct conn {
  run *r;
  xcm_stream *s;
} conn;

static void start_one(run *r);

static void on_read(void *ud, const char *data, size_t len) {
  (void)ud;
  (void)data;
  (void)len;
}

static void on_end(void *ud, int err) {
  conn *c = ud;

  c->r->failed++;
  if (c->r->first_error == NULL)
    c->r->first_error = err < -4000 ? "TLS or stream error" : uv_strerror(err);
  xcm__stream_close(c->s);
}

static void on_tls_done(void *ud, int err) {
  conn *c = ud;

  if (err == 0) {
    c->r->done++;
    xcm__stream_close(c->s);
  }
  /* On failure, end follows. */
}

static void on_closed(void *ud) {
  conn *c = ud;
  run *r = c->r;

  free(c);
  r->active--;
  start_one(r);
}

static const xcm_stream_cb conn_cb = {on_read, on_end, on_tls_done, NULL,
                                      on_closed};

static void on_connected(void *ud) {
  conn *c = ud;

  if (xcm__stream_start_tls(c->s, c->r->tls, 0, NULL, NULL, 0) != 0)
    on_end(c, UV_EPROTO);
}

static void start_one(run *r) {
  conn *c;

  if (r->left == 0)
    return;
  r->left--;
  c = calloc(1, sizeof(*c));
  if (c == NULL) {
    r->failed++;
    return;
  }
  c->r = r;
  if (xcm__stream_connect(&c->s, &r->ctx, (const struct sockaddr *)&r->addr,
                          &conn_cb, on_connected, c, NULL) != 0) {
    r->failed++;
    free(c);
    return;
  }
  r->active++;
}

int main(int argc, char **argv) {
  const char *host = "127.0.0.1";
  int port = 5223, count = 2000, parallel = 32, tap = 0, i;
  xcm_tls_options opt;
  char err[256];
  uint64_t t0;
  run r;

  for (i = 1; i < argc; i += 2) {
    if (strcmp(argv[i], "--tap") == 0) {
      tap = 1;
      i--;
    } else if (i + 1 == argc)
      break;
    else if (strcmp(argv[i], "--host") == 0)
      host = argv[i + 1];
    else if (strcmp(argv[i], "--port") == 0)
      port = atoi(argv[i + 1]);
    else if (strcmp(argv[i], "--count") == 0)
      count = atoi(argv[i + 1]);
    else if (strcmp(argv[i], "--parallel") == 0)
      parallel = atoi(argv[i + 1]);
    else
      break;
  }
  if (i != argc || count <= 0 || parallel <= 0) {
    fprintf(stderr, "usage: xcm-handshake [--host H] [--port P] [--count N] "
                    "[--parallel C] [--tap]\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  memset(&r, 0, sizeof r);
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)&r.addr) != 0 &&
      uv_ip6_addr(host, port, (struct sockaddr_in6 *)&r.addr) != 0) {
    fprintf(stderr, "xcm-handshake: '%s' is not an IP address\n", host);
    return 2;
  }
  if (xcm__ctx_init(&r.ctx, uv_default_loop(), NULL) != 0) {
    fprintf(stderr, "xcm-handshake: out of memory\n");
    return 1;
  }
  memset(&opt, 0, sizeof opt);
  opt.alpn = "xmpp-client";
  if (xcm__tls_config_new(&r.tls, &r.ctx, 0, &opt, err, sizeof err) != 0) {
    fprintf(stderr, "xcm-handshake: %s\n", err);
    return 1;
  }
  r.left = count;
  t0 = uv_hrtime();
  for (i = 0; i < parallel; i++)
    start_one(&r);
  uv_run(uv_default_loop(), UV_RUN_DEFAULT);
  if (tap)
    printf("1..1\n%s 1 - %d TLS handshakes, %d failed%s%s\n",
           r.done == count && r.failed == 0 ? "ok" : "not ok", r.done, r.failed,
           r.first_error ? ": " : "", r.first_error ? r.first_error : "");
  else
    printf(
        "{\"handshakes\":%d,\"failed\":%d,\"seconds\":%.3f,\"error\":\"%s\"}\n",
        r.done, r.failed, (double)(uv_hrtime() - t0) / 1e9,
        r.first_error ? r.first_error : "");
  xcm__tls_config_unref(r.tls);
  xcm__ctx_close(&r.ctx, NULL);
  uv_run(uv_default_loop(), UV_RUN_DEFAULT);
  return r.done == count && r.failed == 0 ? 0 : 1;
}
