/* The byte stream over real loopback sockets: echo on IPv4 and IPv6,
 * batched writes, flow control, pause and resume, half close, EOF and
 * reset, close and abort; TLS (certificate checks at load, verification,
 * SNI, ALPN, STARTTLS with early bytes, stalls and resets mid-handshake);
 * zlib (random splits, over TLS, a bomb); records (writes whose extent
 * the stream remembers, for taking back what was never sent) over TCP,
 * TLS, zlib and a custom transport; and the memory an idle stream holds
 * with each layer. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <malloc.h>
#include <stdint.h>
#include <zlib.h>

#include <mbedtls/sha256.h>
#include <mbedtls/x509_crt.h>

#include "core/ctx.h"
#include "harness.h"
#include "transport/stream.h"
#include "transport/tls.h"
#include "util/buf.h"
#include "xcm/error.h"

/* ---- a counting allocator: leaks and footprints are checked against it */

typedef struct counter {
  long long live;  /* bytes */
  long long count; /* blocks */
  long long peak;  /* most live bytes since reset */
  int fail_in;     /* > 0: the fail_in-th allocation from now fails */
} counter;

static counter heap;

static void *count_realloc(void *ud, void *ptr, size_t size) {
  counter *c = ud;
  /* A 16-byte header keeps the caller's alignment and remembers the size. */
  char *p = ptr ? (char *)ptr - 16 : NULL;
  size_t old = p ? *(size_t *)p : 0;
  char *q;

  if (size == 0) {
    if (p != NULL) {
      c->live -= (long long)old;
      c->count--;
    }
    free(p);
    return NULL;
  }
  if (c->fail_in > 0 && --c->fail_in == 0)
    return NULL;
  q = realloc(p, size + 16);
  if (q == NULL)
    return NULL;
  if (p == NULL)
    c->count++;
  c->live += (long long)size - (long long)old;
  if (c->live > c->peak)
    c->peak = c->live;
  *(size_t *)q = size;
  return q + 16;
}

static const xcm_allocator counting = {sizeof(xcm_allocator), count_realloc,
                                       &heap};

/* ---- fixture: one loop, one context, a listener and two ends --------- */

typedef struct fixture fixture;

typedef struct peer {
  fixture *f;
  xcm_stream *s;
  xcm_buf got;
  int reads;
  int ends;
  int end_err;
  int closed;
  int drains;
  int connected;
  int tls_dones;
  int tls_err;
  /* replaces the default read behaviour when set */
  void (*hook)(struct peer *p, const char *data, size_t len);
  size_t early_len; /* what the hook passed to a new layer */
  /* behaviour */
  int echo;
  int pause_after_first;
  int close_in_read; /* write reply, then close, in the read cb */
  const char *reply; /* written by close_in_read or on EOF */
  int reply_on_eof;
  int close_on_end;
  struct got_recs *end_recs; /* collect the unsent records in end */
} peer;

struct fixture {
  uv_loop_t loop;
  xcm_ctx ctx;
  uv_tcp_t listener;
  int listening;
  struct sockaddr_storage addr;
  peer srv, cli;
  xcm_stream_limits srv_lim;
  int srv_start_paused;
  xcm_tls_config *srv_tls;   /* direct TLS on accept */
  xcm_tls_config *hook_tls;  /* for a hook that starts TLS later */
  size_t srv_send_on_accept; /* write this many pattern bytes, then... */
  int srv_close_on_accept;   /* 1: close, 2: abort */
  long long heap_base;
  uv_timer_t timer;
  int timed_out;
  uv_timer_t tick;
  int no_tick;
  xcm_buf log;
};

static void peer_read(void *ud, const char *data, size_t len) {
  peer *p = ud;

  p->reads++;
  if (p->hook != NULL) {
    p->hook(p, data, len);
    return;
  }
  CHECK(xcm__buf_append(&p->got, data, len) == 0);
  if (p->echo)
    CHECK_INT(xcm__stream_write(p->s, data, len), 0);
  if (p->pause_after_first)
    xcm__stream_pause(p->s);
  if (p->close_in_read) {
    if (p->reply != NULL)
      CHECK_INT(xcm__stream_write(p->s, p->reply, strlen(p->reply)), 0);
    xcm__stream_close(p->s);
  }
}

struct got_recs;
static void unsent_of(xcm_stream *s, struct got_recs *g);

static void peer_end(void *ud, int err) {
  peer *p = ud;

  p->ends++;
  p->end_err = err;
  if (p->end_recs != NULL)
    unsent_of(p->s, p->end_recs);
  if (p->reply_on_eof && err == UV_EOF && p->reply != NULL)
    CHECK_INT(xcm__stream_write(p->s, p->reply, strlen(p->reply)), 0);
  if (p->close_on_end)
    xcm__stream_close(p->s);
}

static void peer_drain(void *ud) {
  peer *p = ud;

  p->drains++;
}

static void peer_closed(void *ud) {
  peer *p = ud;

  p->closed++;
  p->s = NULL;
}

static void peer_tls_done(void *ud, int err) {
  peer *p = ud;

  p->tls_dones++;
  p->tls_err = err;
}

static void peer_connected(void *ud) {
  peer *p = ud;

  p->connected++;
}

static const xcm_stream_cb peer_cb = {peer_read, peer_end, peer_tls_done,
                                      peer_drain, peer_closed};

static void fill_pattern(char *buf, size_t off, size_t len) {
  size_t i;

  for (i = 0; i < len; i++)
    buf[i] = (char)('a' + (off + i) % 23);
}

static int check_pattern(const char *buf, size_t len) {
  size_t i;

  for (i = 0; i < len; i++)
    if (buf[i] != (char)('a' + i % 23))
      return 0;
  return 1;
}

static void write_pattern(xcm_stream *s, size_t total) {
  char chunk[8192];
  size_t off = 0, n;

  while (off < total) {
    n = total - off < sizeof chunk ? total - off : sizeof chunk;
    fill_pattern(chunk, off, n);
    REQUIRE(xcm__stream_write(s, chunk, n) == 0);
    off += n;
  }
}

static void on_connection(uv_stream_t *server, int status) {
  fixture *f = server->data;
  uv_tcp_t *tcp;

  REQUIRE(status == 0);
  REQUIRE(f->srv.s == NULL && f->srv.closed == 0);
  /* The stream frees the handle through the context's allocator. */
  tcp = count_realloc(&heap, NULL, sizeof(*tcp));
  REQUIRE(tcp != NULL);
  REQUIRE(uv_tcp_init(&f->loop, tcp) == 0);
  REQUIRE(uv_accept(server, (uv_stream_t *)tcp) == 0);
  REQUIRE(xcm__stream_from_tcp(&f->srv.s, &f->ctx, tcp, &peer_cb, &f->srv,
                               &f->srv_lim) == 0);
  if (f->srv_tls != NULL)
    REQUIRE(xcm__stream_start_tls(f->srv.s, f->srv_tls, 1, NULL, NULL, 0) == 0);
  if (f->srv_start_paused)
    xcm__stream_pause(f->srv.s);
  if (f->srv_send_on_accept)
    write_pattern(f->srv.s, f->srv_send_on_accept);
  if (f->srv_close_on_accept == 1)
    xcm__stream_close(f->srv.s);
  else if (f->srv_close_on_accept == 2)
    xcm__stream_abort(f->srv.s);
}

static void log_line(void *ud, int level, const char *msg) {
  fixture *f = ud;

  (void)level;
  xcm__buf_append(&f->log, msg, strlen(msg));
  /* One byte: a NUL in the middle would hide every later line from
   * logged(). */
  xcm__buf_append(&f->log, "\n", 1);
  if (getenv("XCM_TEST_LOG") != NULL)
    xcm_test_note("log: %s", msg);
}

/* Whether the log holds text; the log stays a C string. */
static int logged(fixture *f, const char *text) {
  if (f->log.len == 0 || xcm__buf_reserve(&f->log, 1) != 0)
    return 0;
  f->log.data[f->log.len] = '\0';
  return strstr(f->log.data, text) != NULL;
}

static int fx_init(fixture *f, const char *ip) {
  int len = sizeof f->addr;

  memset(f, 0, sizeof(*f));
  f->srv.f = f->cli.f = f;
  xcm__buf_init(&f->srv.got, NULL);
  xcm__buf_init(&f->cli.got, NULL);
  xcm__buf_init(&f->log, NULL);
  REQUIRE(uv_loop_init(&f->loop) == 0);
  REQUIRE(xcm__ctx_init(&f->ctx, &f->loop, &counting) == 0);
  f->ctx.log = log_line;
  f->ctx.log_ud = f;
  f->ctx.log_level = XCM_LOG_DEBUG;
  f->heap_base = heap.live;
  REQUIRE(uv_timer_init(&f->loop, &f->timer) == 0);
  REQUIRE(uv_timer_init(&f->loop, &f->tick) == 0);
  f->timer.data = f;
  REQUIRE(uv_tcp_init(&f->loop, &f->listener) == 0);
  f->listener.data = f;
  if (strchr(ip, ':') != NULL)
    REQUIRE(uv_ip6_addr(ip, 0, (struct sockaddr_in6 *)&f->addr) == 0);
  else
    REQUIRE(uv_ip4_addr(ip, 0, (struct sockaddr_in *)&f->addr) == 0);
  if (uv_tcp_bind(&f->listener, (struct sockaddr *)&f->addr, 0) != 0 ||
      uv_listen((uv_stream_t *)&f->listener, 16, on_connection) != 0)
    return -1;
  f->listening = 1;
  REQUIRE(uv_tcp_getsockname(&f->listener, (struct sockaddr *)&f->addr, &len) ==
          0);
  return 0;
}

static void on_timeout(uv_timer_t *t) {
  fixture *f = t->data;

  f->timed_out = 1;
}

static void on_tick(uv_timer_t *t) {
  (void)t;
}

/* Run the loop until cond(f) holds or ms pass; returns cond(f). The
 * condition may come true in the flusher, before the loop polls; a tick
 * keeps that poll short (except where a test counts iterations). */
static int run_until(fixture *f, int (*cond)(fixture *), unsigned ms) {
  f->timed_out = 0;
  uv_timer_start(&f->timer, on_timeout, ms, 0);
  if (!f->no_tick)
    uv_timer_start(&f->tick, on_tick, 1, 1);
  while (!cond(f) && !f->timed_out)
    uv_run(&f->loop, UV_RUN_ONCE);
  uv_timer_stop(&f->timer);
  uv_timer_stop(&f->tick);
  return cond(f);
}

static int never(fixture *f) {
  (void)f;
  return 0;
}

static void run_for(fixture *f, unsigned ms) {
  run_until(f, never, ms);
}

static int both_closed(fixture *f) {
  return f->srv.s == NULL && f->cli.s == NULL;
}

static void ctx_closed(xcm_ctx *ctx) {
  (void)ctx;
}

static void close_handle(uv_handle_t *h) {
  if (!uv_is_closing(h))
    uv_close(h, NULL);
}

static void fx_free(fixture *f) {
  if (f->srv.s != NULL)
    xcm__stream_abort(f->srv.s);
  if (f->cli.s != NULL)
    xcm__stream_abort(f->cli.s);
  CHECK(run_until(f, both_closed, 2000));
  close_handle((uv_handle_t *)&f->listener);
  close_handle((uv_handle_t *)&f->timer);
  close_handle((uv_handle_t *)&f->tick);
  xcm__ctx_close(&f->ctx, ctx_closed);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  CHECK_INT(uv_loop_close(&f->loop), 0);
  CHECK_INT(heap.live, 0);
  CHECK_INT(heap.count, 0);
  xcm__buf_free(&f->srv.got);
  xcm__buf_free(&f->cli.got);
  xcm__buf_free(&f->log);
}

static void connect_cli(fixture *f, const xcm_stream_limits *lim) {
  REQUIRE(xcm__stream_connect(&f->cli.s, &f->ctx, (struct sockaddr *)&f->addr,
                              &peer_cb, peer_connected, &f->cli, lim) == 0);
}

static int cli_connected(fixture *f) {
  return f->cli.connected > 0 && f->srv.s != NULL;
}

/* ---- cases --------------------------------------------------------- */

static int cli_got_11(fixture *f) {
  return f->cli.got.len >= 11;
}

static int srv_closed(fixture *f) {
  return f->srv.closed > 0;
}

static int srv_ended(fixture *f) {
  return f->srv.ends > 0;
}

static void echo_on(const char *ip, const char *want_peer) {
  fixture f;

  if (fx_init(&f, ip) != 0) {
    xcm_test_note("cannot listen on %s: skipped", ip);
    fx_free(&f);
    return;
  }
  f.srv.echo = 1;
  connect_cli(&f, NULL);
  REQUIRE(run_until(&f, cli_connected, 2000));
  CHECK_STR(xcm__stream_peer(f.cli.s), want_peer);
  CHECK_STR(xcm__stream_peer(f.srv.s), want_peer);
  CHECK_INT(xcm__stream_write(f.cli.s, "hello world", 11), 0);
  CHECK(run_until(&f, cli_got_11, 2000));
  CHECK_MEM(f.cli.got.data, f.cli.got.len, "hello world", 11);
  /* An orderly close reaches the other end as UV_EOF. */
  xcm__stream_close(f.cli.s);
  CHECK(run_until(&f, srv_ended, 2000));
  CHECK_INT(f.srv.end_err, UV_EOF);
  CHECK_INT(f.cli.ends, 0);
  xcm__stream_close(f.srv.s);
  CHECK(run_until(&f, both_closed, 2000));
  CHECK_INT(f.cli.closed, 1);
  CHECK_INT(f.srv.closed, 1);
  fx_free(&f);
}

static void test_echo_ipv4(void) {
  echo_on("127.0.0.1", "127.0.0.1");
}

static void test_echo_ipv6(void) {
  echo_on("::1", "::1");
}

static size_t want_len;

static int srv_got_all(fixture *f) {
  return f->srv.got.len >= want_len;
}

/* A thousand stanzas written in one callback leave in one system call;
 * after they are sent the stream holds no buffer. */
static void test_writes_are_batched(void) {
  fixture f;
  char stanza[64];
  size_t idle, i, n;
  unsigned calls;

  fx_init(&f, "127.0.0.1");
  connect_cli(&f, NULL);
  REQUIRE(run_until(&f, cli_connected, 2000));
  idle = xcm__stream_footprint(f.cli.s);
  calls = xcm__stream_write_calls(f.cli.s);
  CHECK_INT(calls, 0);
  want_len = 0;
  for (i = 0; i < 1000; i++) {
    n = (size_t)snprintf(stanza, sizeof stanza,
                         "<message to='u%zu@example.test'/>", i);
    REQUIRE(xcm__stream_write(f.cli.s, stanza, n) == 0);
    want_len += n;
  }
  CHECK_INT(xcm__stream_queued(f.cli.s), want_len);
  CHECK(xcm__stream_footprint(f.cli.s) > idle + want_len);
  CHECK(run_until(&f, srv_got_all, 2000));
  CHECK_INT(f.srv.got.len, want_len);
  calls = xcm__stream_write_calls(f.cli.s);
  xcm_test_note("1000 writes (%zu bytes) took %u write calls", want_len, calls);
  CHECK(calls >= 1 && calls <= 2);
  CHECK_INT(xcm__stream_queued(f.cli.s), 0);
  CHECK_INT(xcm__stream_footprint(f.cli.s), idle);
  fx_free(&f);
}

static void test_idle_footprint(void) {
  fixture f;
  size_t fc, fs;

  fx_init(&f, "127.0.0.1");
  connect_cli(&f, NULL);
  REQUIRE(run_until(&f, cli_connected, 2000));
  CHECK_INT(xcm__stream_write(f.cli.s, "x", 1), 0);
  want_len = 1;
  CHECK(run_until(&f, srv_got_all, 2000));
  run_for(&f, 10);
  fc = xcm__stream_footprint(f.cli.s);
  fs = xcm__stream_footprint(f.srv.s);
  xcm_test_note("idle TCP stream: %zu bytes (uv_tcp_t %zu)", fs,
                sizeof(uv_tcp_t));
  CHECK(fs < 512);
  CHECK_INT(fc, fs);
  /* The footprint is all the heap the two streams hold. */
  CHECK_INT(heap.live - f.heap_base, fc + fs);
  fx_free(&f);
}

static void test_write_before_connect(void) {
  fixture f;

  fx_init(&f, "127.0.0.1");
  connect_cli(&f, NULL);
  CHECK_INT(xcm__stream_write(f.cli.s, "early bird", 10), 0);
  want_len = 10;
  CHECK(run_until(&f, srv_got_all, 2000));
  CHECK_MEM(f.srv.got.data, f.srv.got.len, "early bird", 10);
  fx_free(&f);
}

static int cli_ended(fixture *f) {
  return f->cli.ends > 0;
}

static void test_connect_refused(void) {
  fixture f;

  fx_init(&f, "127.0.0.1");
  /* Nothing listens once the listener is gone. */
  uv_close((uv_handle_t *)&f.listener, NULL);
  run_for(&f, 1);
  connect_cli(&f, NULL);
  CHECK_INT(xcm__stream_write(f.cli.s, "lost", 4), 0);
  CHECK(run_until(&f, cli_ended, 2000));
  CHECK_INT(f.cli.end_err, UV_ECONNREFUSED);
  CHECK_INT(f.cli.connected, 0);
  xcm__stream_close(f.cli.s);
  CHECK(run_until(&f, both_closed, 2000));
  CHECK_INT(f.cli.closed, 1);
  fx_free(&f);
}

static int cli_closed(fixture *f) {
  return f->cli.closed > 0;
}

/* A close while connecting cancels the connect: closed runs, end not. */
static void test_close_while_connecting(void) {
  fixture f;

  fx_init(&f, "127.0.0.1");
  connect_cli(&f, NULL);
  xcm__stream_close(f.cli.s);
  CHECK(run_until(&f, cli_closed, 2000));
  CHECK_INT(f.cli.closed, 1);
  CHECK_INT(f.cli.ends, 0);
  CHECK_INT(f.cli.connected, 0);
  fx_free(&f);
}

/* The writer feeds a reader that does not read: writes are refused at
 * max_out, never queued past it; once the reader reads, everything
 * arrives in order and drain fires. */
typedef struct feeder {
  fixture *f;
  uv_timer_t t;
  size_t sent;
  int refused;
} feeder;

static void feed(uv_timer_t *t) {
  feeder *fd = t->data;
  xcm_stream *s = fd->f->cli.s;
  char chunk[16384];
  int err;

  for (;;) {
    fill_pattern(chunk, fd->sent, sizeof chunk);
    err = xcm__stream_write(s, chunk, sizeof chunk);
    if (err == XCM_ELIMIT) {
      fd->refused++;
      return;
    }
    REQUIRE(err == 0);
    fd->sent += sizeof chunk;
    if (xcm__stream_over(s))
      return;
  }
}

static feeder *the_feeder;

static int feeder_refused(fixture *f) {
  (void)f;
  return the_feeder->refused > 0;
}

static int srv_got_fed(fixture *f) {
  return f->srv.got.len >= the_feeder->sent && f->cli.drains > 0;
}

static void test_slow_reader_hits_max_out(void) {
  fixture f;
  feeder fd;
  xcm_stream_limits lim = {256 * 1024, 128 * 1024, 32 * 1024, 0};
  size_t q;

  fx_init(&f, "127.0.0.1");
  f.srv_start_paused = 1;
  connect_cli(&f, &lim);
  REQUIRE(run_until(&f, cli_connected, 2000));
  memset(&fd, 0, sizeof fd);
  fd.f = &f;
  the_feeder = &fd;
  uv_timer_init(&f.loop, &fd.t);
  fd.t.data = &fd;
  uv_timer_start(&fd.t, feed, 0, 1);
  CHECK(run_until(&f, feeder_refused, 10000));
  q = xcm__stream_queued(f.cli.s);
  xcm_test_note("refused after %zu bytes; %zu queued, footprint %zu", fd.sent,
                q, xcm__stream_footprint(f.cli.s));
  CHECK(q <= lim.max_out);
  CHECK(q > lim.high_water);
  CHECK(xcm__stream_over(f.cli.s));
  /* The in-flight buffer and the one filling behind it may each have
   * grown to a power of two: memory stays under twice the bound. */
  CHECK(xcm__stream_footprint(f.cli.s) < 2 * lim.max_out + 4096);
  CHECK_INT(f.srv.reads, 0);
  /* Drains fired while the kernel's buffers were taking the bytes. */
  f.cli.drains = 0;
  /* One write larger than the whole bound is refused outright. */
  {
    char *big = calloc(1, lim.max_out + 1);
    CHECK_INT(xcm__stream_write(f.cli.s, big, lim.max_out + 1), XCM_ELIMIT);
    free(big);
  }
  uv_timer_stop(&fd.t);
  xcm__stream_resume(f.srv.s);
  CHECK(run_until(&f, srv_got_fed, 10000));
  CHECK_INT(f.srv.got.len, fd.sent);
  CHECK(check_pattern(f.srv.got.data, f.srv.got.len));
  CHECK_INT(f.cli.drains, 1);
  CHECK(!xcm__stream_over(f.cli.s));
  uv_close((uv_handle_t *)&fd.t, NULL);
  fx_free(&f);
}

static int srv_read_once(fixture *f) {
  return f->srv.reads > 0;
}

static void test_pause_resume(void) {
  fixture f;

  fx_init(&f, "127.0.0.1");
  f.srv.pause_after_first = 1;
  connect_cli(&f, NULL);
  REQUIRE(run_until(&f, cli_connected, 2000));
  CHECK_INT(xcm__stream_write(f.cli.s, "first", 5), 0);
  CHECK(run_until(&f, srv_read_once, 2000));
  CHECK_INT(xcm__stream_write(f.cli.s, "second", 6), 0);
  run_for(&f, 50);
  CHECK_MEM(f.srv.got.data, f.srv.got.len, "first", 5);
  CHECK_INT(f.srv.reads, 1);
  /* Pausing twice and resuming once resumes: pause is a state. */
  xcm__stream_pause(f.srv.s);
  f.srv.pause_after_first = 0;
  xcm__stream_resume(f.srv.s);
  want_len = 11;
  CHECK(run_until(&f, srv_got_all, 2000));
  CHECK_MEM(f.srv.got.data, f.srv.got.len, "firstsecond", 11);
  fx_free(&f);
}

/* A raw libuv client, to half-close and reset at will. */
typedef struct raw {
  uv_tcp_t tcp;
  uv_connect_t creq;
  uv_write_t wreq;
  uv_shutdown_t sreq;
  xcm_buf got;
  int connected;
  int eof;
  int err;
  int closed;
} raw;

static void raw_alloc(uv_handle_t *h, size_t n, uv_buf_t *buf) {
  static char space[65536];

  (void)h;
  (void)n;
  *buf = uv_buf_init(space, sizeof space);
}

static void raw_read(uv_stream_t *h, ssize_t n, const uv_buf_t *buf) {
  raw *r = h->data;

  if (n > 0)
    xcm__buf_append(&r->got, buf->base, (size_t)n);
  else if (n == UV_EOF)
    r->eof = 1;
  else if (n < 0)
    r->err = (int)n;
}

static void raw_connected(uv_connect_t *req, int status) {
  raw *r = req->data;

  REQUIRE(status == 0);
  r->connected = 1;
  uv_read_start((uv_stream_t *)&r->tcp, raw_alloc, raw_read);
}

static void raw_open(raw *r, fixture *f) {
  memset(r, 0, sizeof(*r));
  xcm__buf_init(&r->got, NULL);
  uv_tcp_init(&f->loop, &r->tcp);
  r->tcp.data = r;
  r->creq.data = r;
  REQUIRE(uv_tcp_connect(&r->creq, &r->tcp, (struct sockaddr *)&f->addr,
                         raw_connected) == 0);
}

static void raw_send(raw *r, const char *text) {
  uv_buf_t b = uv_buf_init((char *)text, (unsigned)strlen(text));

  REQUIRE(uv_write(&r->wreq, (uv_stream_t *)&r->tcp, &b, 1, NULL) == 0);
}

static void raw_closed(uv_handle_t *h) {
  raw *r = h->data;

  r->closed = 1;
}

static raw *the_raw;

static int raw_done(fixture *f) {
  (void)f;
  return the_raw->eof || the_raw->err;
}

static int raw_is_closed(fixture *f) {
  (void)f;
  return the_raw->closed;
}

static int raw_ready(fixture *f) {
  return the_raw->connected && f->srv.s != NULL;
}

/* The peer closes its half: we get UV_EOF, can still answer, and the
 * answer arrives before our FIN. */
static void test_half_close(void) {
  fixture f;
  raw r;

  fx_init(&f, "127.0.0.1");
  f.srv.reply = "pong";
  f.srv.reply_on_eof = 1;
  f.srv.close_on_end = 1;
  raw_open(&r, &f);
  the_raw = &r;
  REQUIRE(run_until(&f, raw_ready, 2000));
  raw_send(&r, "ping");
  REQUIRE(uv_shutdown(&r.sreq, (uv_stream_t *)&r.tcp, NULL) == 0);
  CHECK(run_until(&f, raw_done, 2000));
  CHECK_MEM(f.srv.got.data, f.srv.got.len, "ping", 4);
  CHECK_INT(f.srv.end_err, UV_EOF);
  CHECK_INT(f.srv.ends, 1);
  CHECK_MEM(r.got.data, r.got.len, "pong", 4);
  CHECK_INT(r.eof, 1);
  CHECK_INT(r.err, 0);
  uv_close((uv_handle_t *)&r.tcp, raw_closed);
  CHECK(run_until(&f, raw_is_closed, 2000));
  xcm__buf_free(&r.got);
  fx_free(&f);
}

static void test_reset_reported(void) {
  fixture f;
  raw r;

  fx_init(&f, "127.0.0.1");
  raw_open(&r, &f);
  the_raw = &r;
  REQUIRE(run_until(&f, raw_ready, 2000));
  raw_send(&r, "x");
  run_for(&f, 20);
  REQUIRE(uv_tcp_close_reset(&r.tcp, raw_closed) == 0);
  CHECK(run_until(&f, srv_ended, 2000));
  CHECK_INT(f.srv.end_err, UV_ECONNRESET);
  CHECK_MEM(f.srv.got.data, f.srv.got.len, "x", 1);
  CHECK(run_until(&f, raw_is_closed, 2000));
  /* After end, writes still queue; they fail on the dead socket. */
  xcm__stream_write(f.srv.s, "late", 4);
  run_for(&f, 10);
  xcm__stream_close(f.srv.s);
  CHECK(run_until(&f, both_closed, 2000));
  CHECK_INT(f.srv.ends, 1);
  xcm__buf_free(&r.got);
  fx_free(&f);
}

/* A close right after a large write sends it all, then FIN. */
static void test_close_flushes(void) {
  fixture f;

  fx_init(&f, "127.0.0.1");
  f.srv_send_on_accept = 4u << 20;
  f.srv_close_on_accept = 1;
  want_len = f.srv_send_on_accept;
  connect_cli(&f, NULL);
  CHECK(run_until(&f, cli_ended, 5000));
  CHECK_INT(f.cli.got.len, want_len);
  CHECK(check_pattern(f.cli.got.data, f.cli.got.len));
  CHECK_INT(f.cli.end_err, UV_EOF);
  CHECK_INT(f.srv.ends, 0);
  CHECK(run_until(&f, srv_closed, 2000));
  /* The client may still answer after EOF. */
  CHECK_INT(xcm__stream_write(f.cli.s, "x", 1), 0);
  fx_free(&f);
}

/* An abort drops what is queued and resets. */
static void test_abort_discards(void) {
  fixture f;

  fx_init(&f, "127.0.0.1");
  f.srv_send_on_accept = 16u << 20;
  f.srv_close_on_accept = 2;
  connect_cli(&f, NULL);
  CHECK(run_until(&f, cli_ended, 5000));
  xcm_test_note("abort: peer got %zu of %u bytes, then %s", f.cli.got.len,
                16u << 20, xcm_err_name(f.cli.end_err));
  CHECK(f.cli.got.len < (16u << 20));
  CHECK_INT(f.srv.closed, 1);
  fx_free(&f);
}

/* Replying and closing from inside the read callback. */
static void test_close_in_read(void) {
  fixture f;

  fx_init(&f, "127.0.0.1");
  f.srv.close_in_read = 1;
  f.srv.reply = "bye";
  connect_cli(&f, NULL);
  REQUIRE(run_until(&f, cli_connected, 2000));
  CHECK_INT(xcm__stream_write(f.cli.s, "</stream:stream>", 16), 0);
  CHECK(run_until(&f, cli_ended, 2000));
  CHECK_MEM(f.cli.got.data, f.cli.got.len, "bye", 3);
  CHECK_INT(f.cli.end_err, UV_EOF);
  CHECK_INT(f.srv.closed, 1);
  CHECK_INT(f.srv.ends, 0);
  fx_free(&f);
}

static void test_api_edges(void) {
  fixture f;

  fx_init(&f, "127.0.0.1");
  connect_cli(&f, NULL);
  REQUIRE(run_until(&f, cli_connected, 2000));
  CHECK_INT(xcm__stream_write(f.cli.s, "", 0), 0);
  CHECK_INT(xcm__stream_queued(f.cli.s), 0);
  CHECK(!xcm__stream_over(f.cli.s));
  CHECK(!xcm__stream_is_tls(f.cli.s));
  CHECK(!xcm__stream_is_zlib(f.cli.s));
  xcm__stream_close(f.cli.s);
  CHECK_INT(xcm__stream_write(f.cli.s, "x", 1), XCM_ECLOSED);
  xcm__stream_close(f.cli.s);
  xcm__stream_abort(f.cli.s);
  xcm__stream_pause(f.srv.s);
  xcm__stream_resume(f.srv.s);
  xcm__stream_resume(f.srv.s);
  run_for(&f, 20);
  CHECK_INT(f.cli.closed, 1);
  CHECK(xcm__stream_alpn(f.srv.s) == NULL);
  CHECK_INT(xcm__stream_start_tls(f.srv.s, NULL, 1, NULL, NULL, 0), XCM_EINVAL);
  fx_free(&f);
}

/* ---- TLS ------------------------------------------------------------ */

static const char *cert(const char *name) {
  static char paths[8][1024];
  static unsigned next;
  char *p = paths[next++ % 8];

  snprintf(p, sizeof paths[0], "%s/%s", XCM_CERTS_DIR, name);
  return p;
}

static xcm_tls_config *server_cfg(fixture *f, const char *crt, const char *key,
                                  int dates) {
  xcm_tls_options o;
  xcm_tls_config *c = NULL;
  char err[512];
  int r;

  memset(&o, 0, sizeof o);
  o.cert_file = cert(crt);
  o.key_file = cert(key);
  r = xcm__tls_config_load(&c, &f->ctx, 1, &o, dates, err, sizeof err);
  if (r != 0)
    xcm_test_note("server config: %s", err);
  REQUIRE(r == 0);
  return c;
}

static xcm_tls_config *client_cfg(fixture *f, int verify, const char *alpn) {
  xcm_tls_options o;
  xcm_tls_config *c = NULL;
  char err[512];
  int r;

  memset(&o, 0, sizeof o);
  o.ca_file = cert("ca.pem");
  o.verify = verify;
  o.alpn = alpn;
  r = xcm__tls_config_new(&c, &f->ctx, 0, &o, err, sizeof err);
  if (r != 0)
    xcm_test_note("client config: %s", err);
  REQUIRE(r == 0);
  return c;
}

/* Connect a client that starts TLS at once (direct TLS, XEP-0368). */
static void connect_tls(fixture *f, xcm_tls_config *ccfg, const char *host,
                        const xcm_stream_limits *lim) {
  connect_cli(f, lim);
  /* Even before the connection is up: the ClientHello waits for it. */
  REQUIRE(xcm__stream_start_tls(f->cli.s, ccfg, 0, host, NULL, 0) == 0);
  xcm__tls_config_unref(ccfg);
}

static int both_tls_done(fixture *f) {
  return (f->cli.tls_dones > 0 && f->srv.tls_dones > 0) || f->cli.ends > 0 ||
         f->srv.ends > 0;
}

static xcm_tls_config *pending_ccfg;

static void fx_free_tls(fixture *f) {
  xcm__tls_config_unref(f->srv_tls);
  xcm__tls_config_unref(f->hook_tls);
  xcm__tls_config_unref(pending_ccfg);
  f->srv_tls = f->hook_tls = pending_ccfg = NULL;
  fx_free(f);
}

static int write_file(const char *path, const char *text) {
  FILE *fp = fopen(path, "w");

  if (fp == NULL)
    return -1;
  fputs(text, fp);
  return fclose(fp);
}

static int config_err(fixture *f, int is_server, const char *crt,
                      const char *key, const char *ca, int verify, char *err,
                      size_t len) {
  xcm_tls_options o;
  xcm_tls_config *c = NULL;
  int r;

  memset(&o, 0, sizeof o);
  o.cert_file = crt ? cert(crt) : NULL;
  o.key_file = key ? cert(key) : NULL;
  o.ca_file = ca ? cert(ca) : NULL;
  o.verify = verify;
  err[0] = '\0';
  r = xcm__tls_config_new(&c, &f->ctx, is_server, &o, err, len);
  if (r == 0)
    xcm__tls_config_unref(c);
  else
    xcm_test_note("config error: %s", err);
  return r;
}

/* A bad TLS configuration: counted for the README's table. */
#define CHECK_ERR(call, text)                                                  \
  do {                                                                         \
    unsigned before_ = xcm_test_failures();                                    \
    CHECK_INT(call, XCM_ECONFIG);                                              \
    if (!CHECK(strstr(err, text) != NULL))                                     \
      xcm_test_note("want \"%s\" in \"%s\"", text, err);                       \
    xcm_test_tried("bad-configs", before_);                                    \
  } while (0)

/* Bad files are refused when loaded, with the file and the fault named. */
static void test_tls_config_errors(void) {
  fixture f;
  xcm_tls_config *c;
  char err[512];

  fx_init(&f, "127.0.0.1");
  REQUIRE(write_file(cert("junk.pem"), "hello\n") == 0);
  REQUIRE(write_file(cert("bad.pem"), "-----BEGIN CERTIFICATE-----\n"
                                      "bm90IGEgY2VydGlmaWNhdGU=\n"
                                      "-----END CERTIFICATE-----\n") == 0);
  CHECK_ERR(config_err(&f, 1, "missing.pem", "server-key.pem", NULL, 0, err,
                       sizeof err),
            "missing.pem: cannot read: No such file or directory");
  CHECK_ERR(
      config_err(&f, 1, "junk.pem", "server-key.pem", NULL, 0, err, sizeof err),
      "junk.pem: no PEM certificate in the file");
  CHECK_ERR(
      config_err(&f, 1, "bad.pem", "server-key.pem", NULL, 0, err, sizeof err),
      "bad.pem: bad PEM certificate: ");
  CHECK_ERR(
      config_err(&f, 1, "server.pem", "server.pem", NULL, 0, err, sizeof err),
      "server.pem: bad PEM private key: ");
  CHECK_ERR(config_err(&f, 1, "server.pem", "stray-key.pem", NULL, 0, err,
                       sizeof err),
            "stray-key.pem: the key does not match the certificate in ");
  CHECK_ERR(config_err(&f, 1, "expired.pem", "expired-key.pem", NULL, 0, err,
                       sizeof err),
            "expired.pem: certificate expired on 2021-01-01 00:00:00");
  CHECK_ERR(config_err(&f, 1, "future.pem", "future-key.pem", NULL, 0, err,
                       sizeof err),
            "future.pem: certificate is not valid before 2090-01-01 00:00:00");
  CHECK_ERR(config_err(&f, 1, NULL, NULL, NULL, 0, err, sizeof err),
            "a TLS server needs cert_file and key_file");
  /* A verifying client without ca_file trusts the system's CAs. */
  if (access("/etc/ssl/certs/ca-certificates.crt", R_OK) == 0)
    CHECK_INT(config_err(&f, 0, NULL, NULL, NULL, 1, err, sizeof err), 0);
  CHECK_ERR(config_err(&f, 0, NULL, NULL, "junk.pem", 1, err, sizeof err),
            "junk.pem: no PEM certificate");
  CHECK_INT(config_err(&f, 1, "server.pem", "server-key.pem", NULL, 0, err,
                       sizeof err),
            0);
  CHECK_INT(config_err(&f, 0, NULL, NULL, "ca.pem", 1, err, sizeof err), 0);
  CHECK(!logged(&f, "without certificate verification"));
  CHECK_INT(config_err(&f, 0, NULL, NULL, NULL, 0, err, sizeof err), 0);
  CHECK(logged(&f, "without certificate verification"));
  /* More certificates for SNI get the same checks. */
  c = server_cfg(&f, "server.pem", "server-key.pem", 1);
  CHECK_INT(xcm__tls_config_add_cert(c, cert("expired.pem"),
                                     cert("expired-key.pem"), err, sizeof err),
            XCM_ECONFIG);
  CHECK(strstr(err, "expired.pem: certificate expired on") != NULL);
  CHECK_INT(xcm__tls_config_add_cert(c, cert("second.pem"),
                                     cert("second-key.pem"), err, sizeof err),
            0);
  xcm__tls_config_unref(c);
  remove(cert("junk.pem"));
  remove(cert("bad.pem"));
  fx_free(&f);
}

static void test_tls_echo(void) {
  fixture f;

  fx_init(&f, "127.0.0.1");
  f.srv_tls = server_cfg(&f, "server.pem", "server-key.pem", 1);
  f.srv.echo = 1;
  connect_tls(&f, client_cfg(&f, 1, "xmpp-client"), "localhost", NULL);
  /* Written before the handshake: it waits, encrypted after. */
  CHECK_INT(xcm__stream_write(f.cli.s, "hello over tls", 14), 0);
  CHECK(run_until(&f, cli_got_11, 5000));
  CHECK_MEM(f.cli.got.data, f.cli.got.len, "hello over tls", 14);
  CHECK_INT(f.cli.tls_dones, 1);
  CHECK_INT(f.cli.tls_err, 0);
  CHECK_INT(f.srv.tls_dones, 1);
  CHECK_INT(f.srv.tls_err, 0);
  CHECK(xcm__stream_is_tls(f.cli.s) && xcm__stream_is_tls(f.srv.s));
  CHECK_STR(xcm__stream_alpn(f.cli.s), "xmpp-client");
  CHECK_STR(xcm__stream_alpn(f.srv.s), "xmpp-client");
  CHECK(logged(&f, "TLS with 127.0.0.1: TLSv1.2, TLS-ECDHE-ECDSA-WITH-AES-"));
  /* TLS twice, or zlib under TLS, are refused. */
  CHECK_INT(xcm__stream_start_tls(f.cli.s, f.srv_tls, 0, NULL, NULL, 0),
            XCM_EINVAL);
  /* A close sends close_notify: the peer sees an orderly end. */
  xcm__stream_close(f.cli.s);
  CHECK(run_until(&f, srv_ended, 2000));
  CHECK_INT(f.srv.end_err, UV_EOF);
  fx_free_tls(&f);
}

static void test_tls_alpn_none(void) {
  fixture f;

  fx_init(&f, "127.0.0.1");
  f.srv_tls = server_cfg(&f, "server.pem", "server-key.pem", 1);
  connect_tls(&f, client_cfg(&f, 1, NULL), "localhost", NULL);
  CHECK(run_until(&f, both_tls_done, 5000));
  CHECK_INT(f.cli.tls_err, 0);
  CHECK(xcm__stream_alpn(f.cli.s) == NULL);
  CHECK(xcm__stream_alpn(f.srv.s) == NULL);
  fx_free_tls(&f);
}

static int cli_failed_and_srv_ended(fixture *f) {
  return f->cli.ends > 0 && f->srv.ends > 0;
}

/* The client refuses the server's certificate: tls_done and end report
 * XCM_ETLS, the log says why, and the server hears the alert. */
static void verify_fails(const char *crt, const char *key, const char *host,
                         const char *why) {
  unsigned before = xcm_test_failures();
  fixture f;

  fx_init(&f, "127.0.0.1");
  f.srv_tls = server_cfg(&f, crt, key, 0);
  connect_tls(&f, client_cfg(&f, 1, NULL), host, NULL);
  CHECK(run_until(&f, cli_failed_and_srv_ended, 5000));
  CHECK_INT(f.cli.tls_dones, 1);
  CHECK_INT(f.cli.tls_err, XCM_ETLS);
  CHECK_INT(f.cli.end_err, XCM_ETLS);
  CHECK_INT(f.srv.tls_dones, 1);
  CHECK_INT(f.srv.tls_err, XCM_ETLS);
  if (!CHECK(logged(&f, why)))
    xcm_test_note("log: %.*s", (int)f.log.len, f.log.data);
  fx_free_tls(&f);
  xcm_test_tried("bad-certificates", before);
}

static void test_tls_verify_wrong_host(void) {
  verify_fails("server.pem", "server-key.pem", "wrong.test",
               "Common Name (CN) does not match");
}

static void test_tls_verify_expired(void) {
  verify_fails("expired.pem", "expired-key.pem", "localhost",
               "validity has expired");
}

static void test_tls_verify_not_yet_valid(void) {
  verify_fails("future.pem", "future-key.pem", "localhost",
               "validity starts in the future");
}

static void test_tls_verify_untrusted(void) {
  verify_fails("self.pem", "self-key.pem", "localhost",
               "not correctly signed by the trusted CA");
}

/* A client that pins the server's certificate by its SHA-256. */
typedef struct pin_seen {
  int refusals;
  xcm_tls_refusal last;
  char why[256];
} pin_seen;

static void on_pin_refused(void *ud, const xcm_tls_refusal *r) {
  pin_seen *ps = ud;

  ps->refusals++;
  ps->last = *r;
  snprintf(ps->why, sizeof ps->why, "%s", r->why);
}

static void sha256_of(const char *pem, unsigned char sha[32]) {
  mbedtls_x509_crt crt;

  mbedtls_x509_crt_init(&crt);
  REQUIRE(mbedtls_x509_crt_parse_file(&crt, cert(pem)) == 0);
  REQUIRE(mbedtls_sha256_ret(crt.raw.p, crt.raw.len, sha, 0) == 0);
  mbedtls_x509_crt_free(&crt);
}

static xcm_tls_config *pinned_cfg(fixture *f, const unsigned char pin[32],
                                  pin_seen *ps) {
  xcm_tls_options o;
  xcm_tls_config *c = NULL;
  char err[512];

  memset(&o, 0, sizeof o);
  o.verify = 1; /* the pin replaces it */
  o.pin_sha256 = pin;
  o.refused = on_pin_refused;
  o.refused_ud = ps;
  if (xcm__tls_config_new(&c, &f->ctx, 0, &o, err, sizeof err) != 0)
    xcm_test_note("client config: %s", err);
  REQUIRE(c != NULL);
  return c;
}

/* The pinned certificate is trusted past its dates (and for any name),
 * with one warning per configuration, not per connection. */
static void test_tls_pin_expired(void) {
  unsigned char pin[32];
  xcm_tls_config *ccfg;
  pin_seen ps;
  fixture f;
  const char *at;

  memset(&ps, 0, sizeof ps);
  sha256_of("expired.pem", pin);
  fx_init(&f, "127.0.0.1");
  f.srv_tls = server_cfg(&f, "expired.pem", "expired-key.pem", 0);
  ccfg = pinned_cfg(&f, pin, &ps);
  connect_tls(&f, ccfg, "wrong.test", NULL);
  CHECK(run_until(&f, both_tls_done, 5000));
  CHECK_INT(f.cli.tls_err, 0);
  CHECK_INT(f.srv.tls_err, 0);
  CHECK_INT(ps.refusals, 0);
  CHECK(logged(&f, "the pinned certificate expired on 2021-01-01 00:00:00; it "
                   "is still trusted because it is pinned"));
  at = strstr(f.log.data, "pinned certificate expired");
  CHECK(at != NULL && strstr(at + 1, "pinned certificate expired") == NULL);
  fx_free_tls(&f);
}

/* Any other certificate, even one a CA would vouch for, is refused
 * through the refused function, with both fingerprints, and the stream
 * says it was a refusal. */
static void test_tls_pin_mismatch(void) {
  unsigned before = xcm_test_failures();
  unsigned char pin[32], seen[32];
  pin_seen ps;
  fixture f;

  memset(&ps, 0, sizeof ps);
  sha256_of("self.pem", pin);
  sha256_of("server.pem", seen);
  fx_init(&f, "127.0.0.1");
  f.srv_tls = server_cfg(&f, "server.pem", "server-key.pem", 1);
  connect_tls(&f, pinned_cfg(&f, pin, &ps), "localhost", NULL);
  CHECK(run_until(&f, cli_failed_and_srv_ended, 5000));
  CHECK_INT(f.cli.tls_err, XCM_ETLS);
  CHECK_INT(ps.refusals, 1);
  CHECK(ps.last.pin != NULL && memcmp(ps.last.pin, pin, 32) == 0);
  CHECK(memcmp(ps.last.sha256, seen, 32) == 0);
  CHECK_STR(ps.why, "not the pinned certificate");
  /* Reported through the function only, not as a warning too. */
  CHECK(!logged(&f, "X509"));
  fx_free_tls(&f);
  xcm_test_tried("bad-certificates", before);
}

/* verify = 0 connects to anything (and said so when loaded). */
static void test_tls_no_verify(void) {
  fixture f;

  fx_init(&f, "127.0.0.1");
  f.srv_tls = server_cfg(&f, "self.pem", "self-key.pem", 1);
  connect_tls(&f, client_cfg(&f, 0, NULL), NULL, NULL);
  CHECK(run_until(&f, both_tls_done, 5000));
  CHECK_INT(f.cli.tls_err, 0);
  CHECK_INT(f.srv.tls_err, 0);
  CHECK(logged(&f, "without certificate verification"));
  fx_free_tls(&f);
}

/* The server picks among its certificates by SNI; the client's check of
 * the name proves which one it got. */
static void sni_case(const char *host, int ok) {
  fixture f;
  char err[256];

  fx_init(&f, "127.0.0.1");
  f.srv_tls = server_cfg(&f, "server.pem", "server-key.pem", 1);
  REQUIRE(xcm__tls_config_add_cert(f.srv_tls, cert("second.pem"),
                                   cert("second-key.pem"), err,
                                   sizeof err) == 0);
  connect_tls(&f, client_cfg(&f, 1, NULL), host, NULL);
  CHECK(run_until(&f, both_tls_done, 5000));
  if (!CHECK_INT(f.cli.tls_err, ok ? 0 : XCM_ETLS))
    xcm_test_note("SNI name %s", host);
  fx_free_tls(&f);
}

static void test_tls_sni(void) {
  sni_case("second.test", 1);
  sni_case("SECOND.test", 1);
  sni_case("localhost", 1);
  sni_case("example.test", 1);
  sni_case("other.test", 0);
}

/* STARTTLS as XMPP does it: <proceed/> goes out in clear, then TLS. The
 * server also passes on, as early bytes, whatever followed <starttls/>
 * in its read: a pipelining client's ClientHello. */
static void starttls_server_hook(peer *p, const char *data, size_t len) {
  static const char tag[] = "<starttls/>";
  const char *at;

  if (xcm__stream_is_tls(p->s)) {
    CHECK(xcm__buf_append(&p->got, data, len) == 0);
    CHECK_INT(xcm__stream_write(p->s, data, len), 0);
    return;
  }
  REQUIRE(len >= sizeof tag - 1);
  at = data + sizeof tag - 1;
  CHECK_MEM(data, sizeof tag - 1, tag, sizeof tag - 1);
  if (!p->f->cli.early_len) /* the client waits for <proceed/> */
    CHECK_INT(xcm__stream_write(p->s, "<proceed/>", 10), 0);
  p->early_len = len - (size_t)(at - data);
  CHECK_INT(
      xcm__stream_start_tls(p->s, p->f->hook_tls, 1, NULL, at, p->early_len),
      0);
}

static void starttls_client_hook(peer *p, const char *data, size_t len) {
  if (xcm__stream_is_tls(p->s)) {
    CHECK(xcm__buf_append(&p->got, data, len) == 0);
    return;
  }
  CHECK_MEM(data, len, "<proceed/>", 10);
  CHECK_INT(xcm__stream_start_tls(p->s, pending_ccfg, 0, "example.test",
                                  data + 10, len - 10),
            0);
  xcm__tls_config_unref(pending_ccfg);
  pending_ccfg = NULL;
  CHECK_INT(xcm__stream_write(p->s, "<stream:stream>", 15), 0);
}

static int cli_got_15(fixture *f) {
  return f->cli.got.len >= 15 || f->cli.ends > 0;
}

static void test_starttls(void) {
  fixture f;

  fx_init(&f, "127.0.0.1");
  f.hook_tls = server_cfg(&f, "server.pem", "server-key.pem", 1);
  f.srv.hook = starttls_server_hook;
  f.cli.hook = starttls_client_hook;
  pending_ccfg = client_cfg(&f, 1, NULL);
  connect_cli(&f, NULL);
  REQUIRE(run_until(&f, cli_connected, 2000));
  CHECK_INT(xcm__stream_write(f.cli.s, "<starttls/>", 11), 0);
  CHECK(run_until(&f, cli_got_15, 5000));
  CHECK_MEM(f.cli.got.data, f.cli.got.len, "<stream:stream>", 15);
  CHECK_INT(f.srv.early_len, 0);
  CHECK_INT(f.cli.tls_err, 0);
  CHECK_INT(f.srv.tls_err, 0);
  fx_free_tls(&f);
}

static void test_starttls_early_bytes(void) {
  fixture f;
  xcm_tls_config *ccfg;

  fx_init(&f, "127.0.0.1");
  f.hook_tls = server_cfg(&f, "server.pem", "server-key.pem", 1);
  f.srv.hook = starttls_server_hook;
  f.cli.early_len = 1; /* tells the server hook not to write <proceed/> */
  ccfg = client_cfg(&f, 1, NULL);
  connect_cli(&f, NULL);
  REQUIRE(run_until(&f, cli_connected, 2000));
  /* <starttls/> and the ClientHello leave in one write: the server's
   * read holds both. */
  CHECK_INT(xcm__stream_write(f.cli.s, "<starttls/>", 11), 0);
  REQUIRE(xcm__stream_start_tls(f.cli.s, ccfg, 0, "localhost", NULL, 0) == 0);
  xcm__tls_config_unref(ccfg);
  CHECK_INT(xcm__stream_write(f.cli.s, "<stream:stream>", 15), 0);
  CHECK(run_until(&f, cli_got_15, 5000));
  CHECK_MEM(f.cli.got.data, f.cli.got.len, "<stream:stream>", 15);
  xcm_test_note("early bytes passed to the server's TLS: %zu", f.srv.early_len);
  CHECK(f.srv.early_len > 0);
  CHECK_INT(xcm__stream_write_calls(f.cli.s) >= 2, 1);
  fx_free_tls(&f);
}

/* A loop iteration counter: a stream that waits must not spin. */
static unsigned long iterations;

static void count_iteration(uv_check_t *h) {
  (void)h;
  iterations++;
}

/* A client that sends half a ClientHello and stops: the server waits,
 * costing nothing, until the peer resets. */
static void test_tls_stall_then_reset(void) {
  fixture f;
  raw r;
  uv_check_t spin;
  static const char partial[] = "\x16\x03\x01\x00\xc8\x01\x00\x00\xc4\x03\x03";

  fx_init(&f, "127.0.0.1");
  f.srv_tls = server_cfg(&f, "server.pem", "server-key.pem", 1);
  raw_open(&r, &f);
  the_raw = &r;
  REQUIRE(run_until(&f, raw_ready, 2000));
  raw_send(&r, partial);
  uv_check_init(&f.loop, &spin);
  uv_check_start(&spin, count_iteration);
  uv_unref((uv_handle_t *)&spin);
  run_for(&f, 20);
  f.no_tick = 1;
  iterations = 0;
  run_for(&f, 300);
  f.no_tick = 0;
  xcm_test_note("loop iterations in 300 ms of a stalled handshake: %lu",
                iterations);
  CHECK(iterations < 10);
  CHECK_INT(f.srv.ends, 0);
  CHECK_INT(f.srv.tls_dones, 0);
  xcm_test_note("footprint of a stream stalled in its handshake: %zu",
                xcm__stream_footprint(f.srv.s));
  REQUIRE(uv_tcp_close_reset(&r.tcp, raw_closed) == 0);
  CHECK(run_until(&f, srv_ended, 2000));
  CHECK_INT(f.srv.end_err, UV_ECONNRESET);
  CHECK_INT(f.srv.tls_dones, 0);
  CHECK(run_until(&f, raw_is_closed, 2000));
  uv_close((uv_handle_t *)&spin, NULL);
  xcm__buf_free(&r.got);
  fx_free_tls(&f);
}

/* Not TLS at all: the handshake fails and says so. */
static void test_tls_garbage(void) {
  unsigned before = xcm_test_failures();
  fixture f;
  raw r;

  fx_init(&f, "127.0.0.1");
  f.srv_tls = server_cfg(&f, "server.pem", "server-key.pem", 1);
  raw_open(&r, &f);
  the_raw = &r;
  REQUIRE(run_until(&f, raw_ready, 2000));
  raw_send(&r, "<?xml version='1.0'?><stream:stream to='example.test'>");
  CHECK(run_until(&f, srv_ended, 2000));
  CHECK_INT(f.srv.tls_dones, 1);
  CHECK_INT(f.srv.tls_err, XCM_ETLS);
  CHECK_INT(f.srv.end_err, XCM_ETLS);
  CHECK(logged(&f, "TLS handshake with 127.0.0.1 failed"));
  uv_close((uv_handle_t *)&r.tcp, raw_closed);
  CHECK(run_until(&f, raw_is_closed, 2000));
  xcm__buf_free(&r.got);
  fx_free_tls(&f);
  xcm_test_tried("tls-garbage", before);
}

/* An OpenSSL client (Python's ssl module) against our server: the
 * suites and curves chosen must suit the clients XMPP users have. */
static const char openssl_client[] =
    "import socket, ssl, sys\n"
    "ctx = ssl.create_default_context(cafile=sys.argv[2])\n"
    "ctx.set_alpn_protocols(['xmpp-client'])\n"
    "raw = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n"
    "s = ctx.wrap_socket(raw, server_hostname='example.test')\n"
    "s.sendall(b'<presence/>')\n"
    "got = b''\n"
    "while len(got) < 11:\n"
    "    got += s.recv(100)\n"
    "assert got == b'<presence/>', got\n"
    "print('# %s %s %s %s' % (ssl.OPENSSL_VERSION, s.version(),\n"
    "      s.cipher()[0], s.selected_alpn_protocol()))\n"
    "s.close()\n";

static int64_t child_status = -1;

static void child_exited(uv_process_t *p, int64_t status, int sig) {
  child_status = sig ? 128 + sig : status;
  uv_close((uv_handle_t *)p, NULL);
}

static int child_done(fixture *f) {
  (void)f;
  return child_status >= 0;
}

static void test_tls_openssl_client(void) {
  fixture f;
  uv_process_t proc;
  uv_process_options_t opt;
  uv_stdio_container_t stdio[3];
  char port[16];
  char *args[6];
  int err;

  fx_init(&f, "127.0.0.1");
  f.srv_tls = server_cfg(&f, "server.pem", "server-key.pem", 1);
  f.srv.echo = 1;
  snprintf(port, sizeof port, "%d",
           ntohs(((struct sockaddr_in *)&f.addr)->sin_port));
  args[0] = "python3";
  args[1] = "-c";
  args[2] = (char *)openssl_client;
  args[3] = port;
  args[4] = (char *)cert("ca.pem");
  args[5] = NULL;
  memset(&opt, 0, sizeof opt);
  opt.file = "python3";
  opt.args = args;
  opt.exit_cb = child_exited;
  opt.stdio_count = 3;
  stdio[0].flags = UV_IGNORE;
  stdio[1].flags = UV_INHERIT_FD;
  stdio[1].data.fd = 1;
  stdio[2].flags = UV_INHERIT_FD;
  stdio[2].data.fd = 2;
  opt.stdio = stdio;
  child_status = -1;
  err = uv_spawn(&f.loop, &proc, &opt);
  if (err != 0) {
    xcm_test_note("no python3 (%s): skipped", uv_err_name(err));
    uv_close((uv_handle_t *)&proc, NULL);
    fx_free_tls(&f);
    return;
  }
  CHECK(run_until(&f, child_done, 10000));
  CHECK_INT(child_status, 0);
  CHECK_MEM(f.srv.got.data, f.srv.got.len, "<presence/>", 11);
  CHECK_INT(f.srv.tls_err, 0);
  CHECK_STR(xcm__stream_alpn(f.srv.s), "xmpp-client");
  fx_free_tls(&f);
}

/* ---- zlib ----------------------------------------------------------- */

/* Stanza-like text, different each time, so that zlib has work to do. */
static void make_stanzas(xcm_buf *b, int n) {
  char line[256];
  unsigned user, res, a, b2;
  int i, len;

  for (i = 0; i < n; i++) {
    /* One call per statement: argument order is unspecified. */
    user = xcm_test_rand() % 50;
    res = xcm_test_rand() % 5;
    a = xcm_test_rand();
    b2 = xcm_test_rand();
    len = snprintf(line, sizeof line,
                   "<message to='user%u@example.test/res%u' id='m%d' "
                   "type='chat'><body>%08x %08x</body></message>",
                   user, res, i, a, b2);
    REQUIRE(xcm__buf_append(b, line, (size_t)len) == 0);
  }
}

/* Compress as a peer would: default window, a sync flush per stanza. */
static void peer_deflate(z_stream *z, const char *data, size_t len,
                         xcm_buf *out) {
  char chunk[4096];

  z->next_in = (Bytef *)(uintptr_t)data;
  z->avail_in = (uInt)len;
  do {
    z->next_out = (Bytef *)chunk;
    z->avail_out = sizeof chunk;
    REQUIRE(deflate(z, Z_SYNC_FLUSH) != Z_STREAM_ERROR);
    REQUIRE(xcm__buf_append(out, chunk, sizeof chunk - z->avail_out) == 0);
  } while (z->avail_out == 0);
}

static int peer_inflate(const char *data, size_t len, xcm_buf *out) {
  z_stream z;
  char chunk[4096];
  int r;

  memset(&z, 0, sizeof z);
  if (inflateInit(&z) != Z_OK)
    return -1;
  z.next_in = (Bytef *)(uintptr_t)data;
  z.avail_in = (uInt)len;
  do {
    z.next_out = (Bytef *)chunk;
    z.avail_out = sizeof chunk;
    r = inflate(&z, Z_SYNC_FLUSH);
    xcm__buf_append(out, chunk, sizeof chunk - z.avail_out);
  } while (r == Z_OK && (z.avail_in > 0 || z.avail_out == 0));
  inflateEnd(&z);
  return r == Z_OK || r == Z_BUF_ERROR ? 0 : -1;
}

/* XEP-0138 on the server side: <compress/> then zlib, with whatever
 * followed the element in the same read passed on as early bytes. */
static void compress_server_hook(peer *p, const char *data, size_t len) {
  static const char tag[] = "<compress/>";

  if (xcm__stream_is_zlib(p->s)) {
    CHECK(xcm__buf_append(&p->got, data, len) == 0);
    if (p->echo)
      CHECK_INT(xcm__stream_write(p->s, data, len), 0);
    if (p->pause_after_first)
      xcm__stream_pause(p->s);
    return;
  }
  REQUIRE(len >= sizeof tag - 1);
  CHECK_MEM(data, sizeof tag - 1, tag, sizeof tag - 1);
  p->early_len = len - (sizeof tag - 1);
  CHECK_INT(xcm__stream_start_zlib(p->s, data + sizeof tag - 1, p->early_len),
            0);
}

/* A raw socket sends pieces of random size, one batch per tick. */
typedef struct dribble {
  uv_timer_t t;
  raw *r;
  const char *data;
  size_t len, off;
} dribble;

static void dribble_tick(uv_timer_t *t) {
  dribble *d = t->data;
  size_t n = 1 + xcm_test_rand() % 97;
  uv_buf_t b;
  int w;

  if (n > d->len - d->off)
    n = d->len - d->off;
  b = uv_buf_init((char *)d->data + d->off, (unsigned)n);
  w = uv_try_write((uv_stream_t *)&d->r->tcp, &b, 1);
  if (w > 0)
    d->off += (size_t)w;
  if (d->off == d->len)
    uv_timer_stop(t);
}

static dribble *the_dribble;

static int dribble_done_and_got(fixture *f) {
  return (the_dribble->off == the_dribble->len && f->srv.got.len >= want_len) ||
         f->srv.ends > 0;
}

static int srv_sent_all(fixture *f) {
  return xcm__stream_queued(f->srv.s) == 0;
}

/* Compressed both ways, in random splits: the peer's zlib stream arrives
 * in pieces of 1 to 97 bytes; ours is read whole and must inflate to
 * what was written, in pieces of random size over many iterations. */
static void test_zlib_random_splits(void) {
  fixture f;
  raw r;
  dribble d;
  z_stream z;
  xcm_buf plain, wire, back;
  size_t off, n;
  int i;

  fx_init(&f, "127.0.0.1");
  f.srv.hook = compress_server_hook;
  xcm__buf_init(&plain, NULL);
  xcm__buf_init(&wire, NULL);
  xcm__buf_init(&back, NULL);
  make_stanzas(&plain, 300);
  memset(&z, 0, sizeof z);
  REQUIRE(deflateInit(&z, Z_DEFAULT_COMPRESSION) == Z_OK);
  REQUIRE(xcm__buf_append(&wire, "<compress/>", 11) == 0);
  for (off = 0; off < plain.len; off += n) {
    n = 1 + xcm_test_rand() % 300;
    if (n > plain.len - off)
      n = plain.len - off;
    peer_deflate(&z, plain.data + off, n, &wire);
  }
  deflateEnd(&z);
  xcm_test_note("%zu bytes of stanzas compressed to %zu", plain.len,
                wire.len - 11);
  raw_open(&r, &f);
  the_raw = &r;
  REQUIRE(run_until(&f, raw_ready, 2000));
  memset(&d, 0, sizeof d);
  d.r = &r;
  d.data = wire.data;
  d.len = wire.len;
  the_dribble = &d;
  uv_timer_init(&f.loop, &d.t);
  d.t.data = &d;
  uv_timer_start(&d.t, dribble_tick, 0, 1);
  want_len = plain.len;
  CHECK(run_until(&f, dribble_done_and_got, 20000));
  CHECK_INT(f.srv.ends, 0);
  CHECK(xcm__stream_is_zlib(f.srv.s));
  CHECK_MEM(f.srv.got.data, f.srv.got.len, plain.data, plain.len);
  /* Our side: random pieces, several writes per iteration. */
  for (off = 0, i = 0; off < plain.len; off += n, i++) {
    n = 1 + xcm_test_rand() % 400;
    if (n > plain.len - off)
      n = plain.len - off;
    CHECK_INT(xcm__stream_write(f.srv.s, plain.data + off, n), 0);
    if (i % 7 == 0)
      run_for(&f, 1);
  }
  CHECK(run_until(&f, srv_sent_all, 2000));
  run_for(&f, 20);
  xcm_test_note("%zu bytes went out compressed to %zu", plain.len, r.got.len);
  CHECK(r.got.len < plain.len);
  CHECK_INT(peer_inflate(r.got.data, r.got.len, &back), 0);
  CHECK_MEM(back.data, back.len, plain.data, plain.len);
  uv_close((uv_handle_t *)&d.t, NULL);
  uv_close((uv_handle_t *)&r.tcp, raw_closed);
  CHECK(run_until(&f, raw_is_closed, 2000));
  xcm__buf_free(&r.got);
  xcm__buf_free(&plain);
  xcm__buf_free(&wire);
  xcm__buf_free(&back);
  fx_free(&f);
}

/* Compression bomb: ~10 KiB that inflate to 10 MiB. The stream stops at
 * max_inflate with XCM_ELIMIT, having handed on no more than that and
 * allocated nothing for the rest. */
static void test_zlib_bomb(void) {
  unsigned before = xcm_test_failures();
  fixture f;
  raw r;
  z_stream z;
  xcm_buf wire;
  char *zeros;
  size_t bomb = 10u << 20;
  long long base;

  fx_init(&f, "127.0.0.1");
  f.srv.hook = compress_server_hook;
  f.srv_lim.max_inflate = 64 * 1024;
  xcm__buf_init(&wire, NULL);
  zeros = calloc(1, bomb);
  REQUIRE(zeros != NULL);
  memset(&z, 0, sizeof z);
  REQUIRE(deflateInit(&z, 9) == Z_OK);
  REQUIRE(xcm__buf_append(&wire, "<compress/>", 11) == 0);
  peer_deflate(&z, zeros, bomb, &wire);
  deflateEnd(&z);
  free(zeros);
  xcm_test_note("bomb: %zu bytes inflating to %zu", wire.len - 11, bomb);
  REQUIRE(wire.len < 60000);
  raw_open(&r, &f);
  the_raw = &r;
  REQUIRE(run_until(&f, raw_ready, 2000));
  base = heap.live;
  heap.peak = heap.live;
  {
    uv_buf_t b = uv_buf_init(wire.data, (unsigned)wire.len);
    REQUIRE(uv_try_write((uv_stream_t *)&r.tcp, &b, 1) == (int)wire.len);
  }
  CHECK(run_until(&f, srv_ended, 5000));
  CHECK_INT(f.srv.end_err, XCM_ELIMIT);
  xcm_test_note("bomb cut off after %zu bytes; heap peak %lld bytes above "
                "the idle stream",
                f.srv.got.len, heap.peak - base);
  CHECK(f.srv.got.len <= f.srv_lim.max_inflate);
  CHECK(heap.peak - base < 128 * 1024);
  CHECK(logged(&f, "inflates past 65536 bytes: cut off"));
  uv_close((uv_handle_t *)&r.tcp, raw_closed);
  CHECK(run_until(&f, raw_is_closed, 2000));
  xcm__buf_free(&r.got);
  xcm__buf_free(&wire);
  fx_free(&f);
  xcm_test_tried("zlib-bombs", before);
}

/* Garbage after <compress/> is a compression error, not a crash. */
static void test_zlib_corrupt(void) {
  unsigned before = xcm_test_failures();
  fixture f;
  raw r;

  fx_init(&f, "127.0.0.1");
  f.srv.hook = compress_server_hook;
  raw_open(&r, &f);
  the_raw = &r;
  REQUIRE(run_until(&f, raw_ready, 2000));
  raw_send(&r, "<compress/><stream:stream>");
  CHECK(run_until(&f, srv_ended, 2000));
  CHECK_INT(f.srv.end_err, XCM_EZLIB);
  uv_close((uv_handle_t *)&r.tcp, raw_closed);
  CHECK(run_until(&f, raw_is_closed, 2000));
  xcm__buf_free(&r.got);
  fx_free(&f);
  xcm_test_tried("corrupt-zlib", before);
}

/* ---- zlib over TLS, pause, and what idle streams cost ---------------- */

static void compress_client_upgrade(fixture *f) {
  CHECK_INT(xcm__stream_write(f->cli.s, "<compress/>", 11), 0);
  CHECK_INT(xcm__stream_start_zlib(f->cli.s, NULL, 0), 0);
}

static int srv_is_zlib(fixture *f) {
  return (f->srv.s != NULL && xcm__stream_is_zlib(f->srv.s)) || f->srv.ends > 0;
}

static int cli_got_want(fixture *f) {
  return f->cli.got.len >= want_len || f->cli.ends > 0 || f->srv.ends > 0;
}

/* Heap in use as glibc counts it: mbedTLS allocates with calloc, outside
 * our allocator. 0 where a sanitizer or valgrind replaces malloc. */
static long long libc_heap(void) {
  return (long long)mallinfo2().uordblks;
}

static void test_zlib_over_tls(void) {
  fixture f;
  xcm_buf plain;
  size_t off, n;

  fx_init(&f, "127.0.0.1");
  f.srv_tls = server_cfg(&f, "server.pem", "server-key.pem", 1);
  f.srv.hook = compress_server_hook;
  f.srv.echo = 1;
  xcm__buf_init(&plain, NULL);
  make_stanzas(&plain, 2000);
  connect_tls(&f, client_cfg(&f, 1, NULL), "localhost", NULL);
  CHECK(run_until(&f, both_tls_done, 5000));
  /* zlib cannot start before the handshake is over; now it can. */
  compress_client_upgrade(&f);
  CHECK(xcm__stream_is_zlib(f.cli.s));
  CHECK_INT(xcm__stream_start_zlib(f.cli.s, NULL, 0), XCM_EINVAL);
  CHECK_INT(xcm__stream_start_tls(f.cli.s, f.srv_tls, 0, NULL, NULL, 0),
            XCM_EINVAL);
  for (off = 0; off < plain.len; off += n) {
    n = 1 + xcm_test_rand() % 3000;
    if (n > plain.len - off)
      n = plain.len - off;
    CHECK_INT(xcm__stream_write(f.cli.s, plain.data + off, n), 0);
    if (xcm_test_rand() % 4 == 0)
      run_for(&f, 1);
  }
  want_len = plain.len;
  CHECK(run_until(&f, cli_got_want, 10000));
  CHECK_INT(f.srv.ends, 0);
  CHECK_INT(f.cli.ends, 0);
  CHECK_MEM(f.srv.got.data, f.srv.got.len, plain.data, plain.len);
  CHECK_MEM(f.cli.got.data, f.cli.got.len, plain.data, plain.len);
  xcm__buf_free(&plain);
  fx_free_tls(&f);
}

/* Pausing mid-read keeps the rest of the input, at whatever layer it
 * was, and delivers it in order on resume. */
static void pause_with_layers(int tls, int zlib) {
  fixture f;
  xcm_buf plain;

  fx_init(&f, "127.0.0.1");
  if (tls)
    f.srv_tls = server_cfg(&f, "server.pem", "server-key.pem", 1);
  f.srv.hook = zlib ? compress_server_hook : NULL;
  xcm__buf_init(&plain, NULL);
  make_stanzas(&plain, 3000);
  if (tls) {
    connect_tls(&f, client_cfg(&f, 1, NULL), "localhost", NULL);
    CHECK(run_until(&f, both_tls_done, 5000));
  } else {
    connect_cli(&f, NULL);
    REQUIRE(run_until(&f, cli_connected, 2000));
  }
  if (zlib) {
    compress_client_upgrade(&f);
    REQUIRE(run_until(&f, srv_is_zlib, 2000));
  }
  f.srv.pause_after_first = 1;
  CHECK_INT(xcm__stream_write(f.cli.s, plain.data, plain.len), 0);
  CHECK(run_until(&f, srv_read_once, 5000));
  run_for(&f, 50);
  CHECK_INT(f.srv.reads, zlib ? 2 : 1);
  CHECK(f.srv.got.len < plain.len);
  xcm_test_note("paused (tls %d, zlib %d) after %zu of %zu bytes; "
                "footprint %zu",
                tls, zlib, f.srv.got.len, plain.len,
                xcm__stream_footprint(f.srv.s));
  f.srv.pause_after_first = 0;
  xcm__stream_resume(f.srv.s);
  want_len = plain.len;
  CHECK(run_until(&f, srv_got_all, 5000));
  CHECK_MEM(f.srv.got.data, f.srv.got.len, plain.data, plain.len);
  xcm__buf_free(&plain);
  fx_free_tls(&f);
}

static void test_pause_tls(void) {
  pause_with_layers(1, 0);
}

static void test_pause_zlib(void) {
  pause_with_layers(0, 1);
}

static void test_pause_tls_zlib(void) {
  pause_with_layers(1, 1);
}

static int cli_gone(fixture *f) {
  return f->cli.s == NULL;
}

/* What an idle stream holds with each layer, as xcm__stream_footprint
 * reports it and as the C library's heap counts it. */
static void footprint_with_layers(int tls, int zlib, size_t budget) {
  fixture f;
  long long libc_base, libc_srv;
  size_t fp;

  fx_init(&f, "127.0.0.1");
  if (tls)
    f.srv_tls = server_cfg(&f, "server.pem", "server-key.pem", 1);
  f.srv.hook = zlib ? compress_server_hook : NULL;
  f.srv.echo = 1;
  libc_base = libc_heap();
  if (tls) {
    connect_tls(&f, client_cfg(&f, 1, NULL), "localhost", NULL);
    CHECK(run_until(&f, both_tls_done, 5000));
  } else {
    connect_cli(&f, NULL);
    REQUIRE(run_until(&f, cli_connected, 2000));
  }
  if (zlib) {
    compress_client_upgrade(&f);
    REQUIRE(run_until(&f, srv_is_zlib, 2000));
  }
  CHECK_INT(xcm__stream_write(f.cli.s, "<presence/>", 11), 0);
  want_len = 11;
  CHECK(run_until(&f, cli_got_want, 2000));
  run_for(&f, 10);
  /* Only the server's stream is left to measure once the client goes. */
  xcm__stream_abort(f.cli.s);
  CHECK(run_until(&f, cli_gone, 2000));
  run_for(&f, 10);
  fp = xcm__stream_footprint(f.srv.s);
  libc_srv = libc_heap() - libc_base;
  if (libc_heap() != 0)
    xcm_test_note("idle stream, tls %d zlib %d: footprint %zu bytes; "
                  "heap measured %lld bytes (incl. the test's buffers)",
                  tls, zlib, fp, libc_srv);
  else
    xcm_test_note("idle stream, tls %d zlib %d: footprint %zu bytes", tls, zlib,
                  fp);
  CHECK(fp < budget);
  fx_free_tls(&f);
}

static void test_footprint_tls(void) {
  footprint_with_layers(1, 0, 40 * 1024);
}

static void test_footprint_zlib(void) {
  footprint_with_layers(0, 1, 64 * 1024);
}

static void test_footprint_tls_zlib(void) {
  footprint_with_layers(1, 1, 96 * 1024);
}

/* ---- records ------------------------------------------------------- */

/* What xcm__stream_unsent_records gave, copied: the bytes one after the
 * other, and each record's length. */
typedef struct got_recs {
  xcm_buf all;
  xcm_buf lens; /* size_t each */
  size_t n;
} got_recs;

static void got_init(got_recs *g) {
  xcm__buf_init(&g->all, NULL);
  xcm__buf_init(&g->lens, NULL);
  g->n = 0;
}

static void got_free(got_recs *g) {
  xcm__buf_free(&g->all);
  xcm__buf_free(&g->lens);
}

static void collect(void *ud, const char *data, size_t len) {
  got_recs *g = ud;

  CHECK(xcm__buf_append(&g->all, data, len) == 0);
  CHECK(xcm__buf_append(&g->lens, &len, sizeof len) == 0);
  g->n++;
}

static size_t got_len(const got_recs *g, size_t i) {
  size_t len;

  memcpy(&len, g->lens.data + i * sizeof len, sizeof len);
  return len;
}

/* Collect what s would give back now; the count returned must match. */
static void unsent_of(xcm_stream *s, got_recs *g) {
  size_t n;

  xcm__buf_reset(&g->all);
  xcm__buf_reset(&g->lens);
  g->n = 0;
  n = xcm__stream_unsent_records(s, collect, g);
  CHECK_INT(n, g->n);
}

/* Two records with a plain write between them: both, and only they,
 * would be given back. */
static void write_two_records(xcm_stream *s, got_recs *g) {
  CHECK_INT(xcm__stream_write_record(s, "<m>1</m>", 8), 0);
  CHECK_INT(xcm__stream_write(s, "<x/>", 4), 0);
  CHECK_INT(xcm__stream_write_record(s, "<m>2</m>", 8), 0);
  unsent_of(s, g);
  CHECK_INT(g->n, 2);
  CHECK_MEM(g->all.data, g->all.len, "<m>1</m><m>2</m>", 16);
}

/* One loop iteration runs the flusher, which encrypts (or deflates) what
 * the client queued: nothing can be given back after it. */
static void flushed(fixture *f, got_recs *g) {
  uv_run(&f->loop, UV_RUN_NOWAIT);
  unsent_of(f->cli.s, g);
  CHECK_INT(g->n, 0);
}

/* Record i: numbered, with a filler that differs from one to the next. */
static void make_record(char *buf, size_t i, size_t len) {
  size_t j = (size_t)snprintf(buf, len, "<r n='%06zu'>", i);

  for (; j < len - 4; j++)
    buf[j] = (char)('a' + (i + j) % 23);
  memcpy(buf + len - 4, "</r>", 4);
}

enum { REC_LEN = 61, UNIT = 1 + REC_LEN };

/* Over TCP to a peer that does not read: one byte that is not a record,
 * then a record, again and again until max_out refuses. What the stream
 * gives back is exactly the records not handed to the kernel at all, in
 * order, from the one after the cut (a record partly written is not
 * given) to the last. Sent records do not count against max_out: the
 * queue fills with bytes, though the kernel took tens of thousands of
 * records. Once the peer reads everything, the stream is back to its
 * idle footprint. */
static void test_records_plain(void) {
  fixture f;
  xcm_stream_limits lim = {256 * 1024, 0, 0, 0};
  char rec[REC_LEN];
  xcm_buf sent;
  got_recs g;
  size_t idle, i, n, first, total, unsent, at, off;
  int err;

  fx_init(&f, "127.0.0.1");
  f.srv_start_paused = 1;
  xcm__buf_init(&sent, NULL);
  got_init(&g);
  connect_cli(&f, &lim);
  REQUIRE(run_until(&f, cli_connected, 2000));
  idle = xcm__stream_footprint(f.cli.s);
  /* Whether the bytes or the record was refused, total counts what went
   * in and n the records. */
  for (n = 0;; n++) {
    REQUIRE(n < 2000000);
    if (n % 64 == 0)
      uv_run(&f.loop, UV_RUN_NOWAIT);
    if (xcm__stream_write(f.cli.s, "\n", 1) != 0)
      break;
    REQUIRE(xcm__buf_append(&sent, "\n", 1) == 0);
    make_record(rec, n, sizeof rec);
    err = xcm__stream_write_record(f.cli.s, rec, sizeof rec);
    if (err != 0) {
      CHECK_INT(err, XCM_ELIMIT);
      break;
    }
    REQUIRE(xcm__buf_append(&sent, rec, sizeof rec) == 0);
  }
  total = sent.len;
  unsent = xcm__stream_queued(f.cli.s);
  REQUIRE(unsent <= total);
  /* Record i starts at i * UNIT + 1; the first given back is the first
   * that starts at or after the first unsent byte. */
  first = 0;
  while (first < n && first * UNIT + 1 < total - unsent)
    first++;
  at = total - unsent;
  xcm_test_note("%zu records (%zu bytes) written, %zu bytes unsent; the cut "
                "is %s",
                n, total, unsent,
                at % UNIT > 1 ? "inside a record" : "between records");
  CHECK(unsent > lim.max_out / 2);
  unsent_of(f.cli.s, &g);
  CHECK_INT(g.n, n - first);
  off = 0;
  for (i = 0; i < g.n; i++) {
    make_record(rec, first + i, sizeof rec);
    CHECK_MEM(g.all.data + off, got_len(&g, i), rec, sizeof rec);
    off += got_len(&g, i);
  }
  /* The peer reads: everything arrives in order, nothing is left. */
  want_len = total;
  xcm__stream_resume(f.srv.s);
  CHECK(run_until(&f, srv_got_all, 10000));
  CHECK_MEM(f.srv.got.data, f.srv.got.len, sent.data, sent.len);
  run_for(&f, 10);
  unsent_of(f.cli.s, &g);
  CHECK_INT(g.n, 0);
  CHECK_INT(xcm__stream_footprint(f.cli.s), idle);
  got_free(&g);
  xcm__buf_free(&sent);
  fx_free(&f);
}

/* With TLS only plaintext not yet encrypted can be given back: records
 * written before the handshake ends wait for it and are given; once the
 * flusher has encrypted them they are not, though they may still be
 * queued. */
static void test_records_tls(void) {
  fixture f;
  got_recs g;
  size_t idle;

  fx_init(&f, "127.0.0.1");
  got_init(&g);
  f.srv_tls = server_cfg(&f, "server.pem", "server-key.pem", 1);
  connect_tls(&f, client_cfg(&f, 1, NULL), "localhost", NULL);
  write_two_records(f.cli.s, &g);
  CHECK(run_until(&f, both_tls_done, 5000));
  want_len = 20;
  CHECK(run_until(&f, srv_got_all, 5000));
  CHECK_MEM(f.srv.got.data, f.srv.got.len, "<m>1</m><x/><m>2</m>", 20);
  run_for(&f, 10);
  unsent_of(f.cli.s, &g);
  CHECK_INT(g.n, 0);
  idle = xcm__stream_footprint(f.cli.s);
  CHECK_INT(xcm__stream_write_record(f.cli.s, "<m>3</m>", 8), 0);
  CHECK_INT(xcm__stream_write_record(f.cli.s, "<m>4</m>", 8), 0);
  unsent_of(f.cli.s, &g);
  CHECK_INT(g.n, 2);
  CHECK_MEM(g.all.data, g.all.len, "<m>3</m><m>4</m>", 16);
  flushed(&f, &g);
  want_len = 36;
  CHECK(run_until(&f, srv_got_all, 5000));
  run_for(&f, 10);
  CHECK_INT(xcm__stream_footprint(f.cli.s), idle);
  got_free(&g);
  fx_free_tls(&f);
}

/* The same with zlib: records are given back until they are deflated. */
static void test_records_zlib(void) {
  fixture f;
  got_recs g;
  size_t idle;

  fx_init(&f, "127.0.0.1");
  got_init(&g);
  f.srv.hook = compress_server_hook;
  connect_cli(&f, NULL);
  REQUIRE(run_until(&f, cli_connected, 2000));
  compress_client_upgrade(&f);
  REQUIRE(run_until(&f, srv_is_zlib, 2000));
  CHECK_INT(xcm__stream_write(f.cli.s, "<a/>", 4), 0);
  want_len = 4;
  CHECK(run_until(&f, srv_got_all, 2000));
  run_for(&f, 10);
  idle = xcm__stream_footprint(f.cli.s);
  write_two_records(f.cli.s, &g);
  flushed(&f, &g);
  want_len = 24;
  CHECK(run_until(&f, srv_got_all, 2000));
  CHECK_MEM(f.srv.got.data, f.srv.got.len, "<a/><m>1</m><x/><m>2</m>", 24);
  run_for(&f, 10);
  CHECK_INT(xcm__stream_footprint(f.cli.s), idle);
  got_free(&g);
  fx_free(&f);
}

typedef struct sink {
  xcm_buf got;
  int closed;
  int fail; /* refuse the next write with UV_EPIPE */
} sink;

static int sink_write(void *ud, const char *data, size_t len) {
  sink *k = ud;

  if (k->fail) {
    k->fail = 0;
    return UV_EPIPE;
  }
  return xcm__buf_append(&k->got, data, len);
}

static void sink_close(void *ud) {
  sink *k = ud;

  k->closed++;
}

/* Over a custom transport: a record that cannot be kept fails the write
 * as a whole; records count against max_out (16 bytes each beside their
 * bytes), so a flood of tiny ones stays bounded; everything goes once
 * the transport has taken it. */
static void test_records_custom(void) {
  fixture f;
  xcm_transport t = {
      .size = sizeof t, .write = sink_write, .close = sink_close};
  xcm_stream_limits lim = {16 * 1024, 0, 0, 0};
  sink k;
  got_recs g;
  size_t idle, n, per = 1 + 2 * sizeof(size_t);

  fx_init(&f, "127.0.0.1");
  got_init(&g);
  memset(&k, 0, sizeof k);
  xcm__buf_init(&k.got, NULL);
  t.ud = &k;
  REQUIRE(xcm__stream_custom(&f.cli.s, &f.ctx, &t, "gw", &peer_cb, &f.cli,
                             &lim) == 0);
  idle = xcm__stream_footprint(f.cli.s);
  /* The second allocation is the record array, the third the buffer:
   * either failing queues nothing. */
  heap.fail_in = 2;
  CHECK_INT(xcm__stream_write_record(f.cli.s, "<m/>", 4), XCM_ENOMEM);
  CHECK_INT(xcm__stream_queued(f.cli.s), 0);
  CHECK_INT(xcm__stream_footprint(f.cli.s), idle);
  heap.fail_in = 3;
  CHECK_INT(xcm__stream_write_record(f.cli.s, "<m/>", 4), XCM_ENOMEM);
  CHECK_INT(xcm__stream_queued(f.cli.s), 0);
  CHECK_INT(xcm__stream_footprint(f.cli.s), idle);
  heap.fail_in = 0;
  CHECK_INT(xcm__stream_write_record(f.cli.s, "", 0), 0);
  write_two_records(f.cli.s, &g);
  uv_run(&f.loop, UV_RUN_NOWAIT);
  CHECK_MEM(k.got.data, k.got.len, "<m>1</m><x/><m>2</m>", 20);
  unsent_of(f.cli.s, &g);
  CHECK_INT(g.n, 0);
  CHECK_INT(xcm__stream_footprint(f.cli.s), idle);
  /* One-byte records until refused, the loop never turning. */
  for (n = 0; xcm__stream_write_record(f.cli.s, "x", 1) == 0; n++)
    REQUIRE(n < lim.max_out);
  xcm_test_note("%zu one-byte records fit in max_out %zu; footprint %zu", n,
                lim.max_out, xcm__stream_footprint(f.cli.s));
  CHECK(n * per <= lim.max_out && (n + 1) * per > lim.max_out);
  CHECK(xcm__stream_footprint(f.cli.s) <= idle + 2 * lim.max_out);
  unsent_of(f.cli.s, &g);
  CHECK_INT(g.n, n);
  uv_run(&f.loop, UV_RUN_NOWAIT);
  CHECK_INT(k.got.len, 20 + n);
  CHECK_INT(xcm__stream_footprint(f.cli.s), idle);
  /* A write that fails: the owner hears of it while it can still take
   * its records back. */
  k.fail = 1;
  f.cli.end_recs = &g;
  f.cli.close_on_end = 1;
  CHECK_INT(xcm__stream_write_record(f.cli.s, "<m>5</m>", 8), 0);
  CHECK_INT(xcm__stream_write(f.cli.s, "<x/>", 4), 0);
  CHECK_INT(xcm__stream_write_record(f.cli.s, "<m>6</m>", 8), 0);
  uv_run(&f.loop, UV_RUN_NOWAIT);
  CHECK_INT(f.cli.ends, 1);
  CHECK_INT(f.cli.end_err, UV_EPIPE);
  CHECK_INT(g.n, 2);
  CHECK_MEM(g.all.data, g.all.len, "<m>5</m><m>6</m>", 16);
  got_free(&g);
  xcm__buf_free(&k.got);
  fx_free(&f);
  CHECK_INT(k.closed, 1);
}

static const xcm_test tests[] = {
    {"echo_ipv4", test_echo_ipv4},
    {"echo_ipv6", test_echo_ipv6},
    {"writes_are_batched", test_writes_are_batched},
    {"idle_footprint", test_idle_footprint},
    {"write_before_connect", test_write_before_connect},
    {"connect_refused", test_connect_refused},
    {"close_while_connecting", test_close_while_connecting},
    {"slow_reader_hits_max_out", test_slow_reader_hits_max_out},
    {"pause_resume", test_pause_resume},
    {"half_close", test_half_close},
    {"reset_reported", test_reset_reported},
    {"close_flushes", test_close_flushes},
    {"abort_discards", test_abort_discards},
    {"close_in_read", test_close_in_read},
    {"api_edges", test_api_edges},
    {"tls_config_errors", test_tls_config_errors},
    {"tls_echo", test_tls_echo},
    {"tls_alpn_none", test_tls_alpn_none},
    {"tls_verify_wrong_host", test_tls_verify_wrong_host},
    {"tls_verify_expired", test_tls_verify_expired},
    {"tls_pin_expired", test_tls_pin_expired},
    {"tls_pin_mismatch", test_tls_pin_mismatch},
    {"tls_verify_not_yet_valid", test_tls_verify_not_yet_valid},
    {"tls_verify_untrusted", test_tls_verify_untrusted},
    {"tls_no_verify", test_tls_no_verify},
    {"tls_sni", test_tls_sni},
    {"starttls", test_starttls},
    {"starttls_early_bytes", test_starttls_early_bytes},
    {"tls_stall_then_reset", test_tls_stall_then_reset},
    {"tls_garbage", test_tls_garbage},
    {"tls_openssl_client", test_tls_openssl_client},
    {"zlib_random_splits", test_zlib_random_splits},
    {"zlib_bomb", test_zlib_bomb},
    {"zlib_corrupt", test_zlib_corrupt},
    {"zlib_over_tls", test_zlib_over_tls},
    {"pause_tls", test_pause_tls},
    {"pause_zlib", test_pause_zlib},
    {"pause_tls_zlib", test_pause_tls_zlib},
    {"footprint_tls", test_footprint_tls},
    {"footprint_zlib", test_footprint_zlib},
    {"footprint_tls_zlib", test_footprint_tls_zlib},
    {"records_plain", test_records_plain},
    {"records_tls", test_records_tls},
    {"records_zlib", test_records_zlib},
    {"records_custom", test_records_custom},
};

int main(int argc, char **argv) {
  /* As in any program that writes to sockets: a peer's reset must be an
   * error code, not a signal. */
  signal(SIGPIPE, SIG_IGN);
  return xcm_test_main(argc, argv, XCM_TESTS(tests));
}
