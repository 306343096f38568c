/* The byte stream over real loopback sockets: echo on IPv4 and IPv6,
 * batched writes, flow control, pause and resume, half close, EOF and
 * reset, close and abort, and the memory an idle stream holds. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ctx.h"
#include "harness.h"
#include "transport/stream.h"
#include "util/buf.h"
#include "xcm/error.h"

/* ---- a counting allocator: leaks and footprints are checked against it */

typedef struct counter {
  long long live;  /* bytes */
  long long count; /* blocks */
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
  q = realloc(p, size + 16);
  if (q == NULL)
    return NULL;
  if (p == NULL)
    c->count++;
  c->live += (long long)size - (long long)old;
  *(size_t *)q = size;
  return q + 16;
}

static const xcm_allocator counting = {count_realloc, &heap};

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
  /* behaviour */
  int echo;
  int pause_after_first;
  int close_in_read; /* write reply, then close, in the read cb */
  const char *reply; /* written by close_in_read or on EOF */
  int reply_on_eof;
  int close_on_end;
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
  size_t srv_send_on_accept; /* write this many pattern bytes, then... */
  int srv_close_on_accept;   /* 1: close, 2: abort */
  long long heap_base;
  uv_timer_t timer;
  int timed_out;
};

static void peer_read(void *ud, const char *data, size_t len) {
  peer *p = ud;

  p->reads++;
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

static void peer_end(void *ud, int err) {
  peer *p = ud;

  p->ends++;
  p->end_err = err;
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

static void peer_connected(void *ud) {
  peer *p = ud;

  p->connected++;
}

static const xcm_stream_cb peer_cb = {peer_read, peer_end, NULL, peer_drain,
                                      peer_closed};

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
  if (f->srv_start_paused)
    xcm__stream_pause(f->srv.s);
  if (f->srv_send_on_accept)
    write_pattern(f->srv.s, f->srv_send_on_accept);
  if (f->srv_close_on_accept == 1)
    xcm__stream_close(f->srv.s);
  else if (f->srv_close_on_accept == 2)
    xcm__stream_abort(f->srv.s);
}

static int fx_init(fixture *f, const char *ip) {
  int len = sizeof f->addr;

  memset(f, 0, sizeof(*f));
  f->srv.f = f->cli.f = f;
  xcm__buf_init(&f->srv.got, NULL);
  xcm__buf_init(&f->cli.got, NULL);
  REQUIRE(uv_loop_init(&f->loop) == 0);
  REQUIRE(xcm__ctx_init(&f->ctx, &f->loop, &counting) == 0);
  f->heap_base = heap.live;
  REQUIRE(uv_timer_init(&f->loop, &f->timer) == 0);
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

/* Run the loop until cond(f) holds or ms pass; returns cond(f). */
static int run_until(fixture *f, int (*cond)(fixture *), unsigned ms) {
  f->timed_out = 0;
  uv_timer_start(&f->timer, on_timeout, ms, 0);
  while (!cond(f) && !f->timed_out)
    uv_run(&f->loop, UV_RUN_ONCE);
  uv_timer_stop(&f->timer);
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
  xcm__ctx_close(&f->ctx, ctx_closed);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  CHECK_INT(uv_loop_close(&f->loop), 0);
  CHECK_INT(heap.live, 0);
  CHECK_INT(heap.count, 0);
  xcm__buf_free(&f->srv.got);
  xcm__buf_free(&f->cli.got);
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
  unsigned long calls;

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
  xcm_test_note("1000 writes (%zu bytes) took %lu write calls", want_len,
                calls);
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
  CHECK(run_until(&f, both_closed, 2000) || f.srv.s == NULL);
  CHECK_INT(f.srv.closed, 1);
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
  fx_free(&f);
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
};

int main(int argc, char **argv) {
  /* As in any program that writes to sockets: a peer's reset must be an
   * error code, not a signal. */
  signal(SIGPIPE, SIG_IGN);
  return xcm_test_main(argc, argv, XCM_TESTS(tests));
}
