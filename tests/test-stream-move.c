/* Moving a connection to another context (xcm__stream_move_out and
 * xcm__stream_move_in) over real loopback sockets and real TLS.
 *
 * A client on loop A talks to a server stream on loop A ("src"). The
 * client pipelines, in one write, lines, a marker and more lines; src's
 * owner hands the bytes after the marker back as unread from inside
 * cb.read, writes its last bytes and moves the connection to a context on
 * loop B ("dst"), in the same thread or on another one. Then data flows
 * both ways again. Each side must see every byte once and in order: src
 * the lines up to the marker, dst the rest, the client what src wrote
 * then what dst wrote. With TLS and zlib, either, or none; with several
 * MB still queued when the move starts; with a reset while it waits; and
 * the refusals, the failures of move_in and a discarded package, none of
 * which may leak (every block is counted, from both threads). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ctx.h"
#include "harness.h"
#include "transport/stream.h"
#include "transport/tls.h"
#include "util/buf.h"
#include "xcm/error.h"

/* ---- a counting allocator, shared by both contexts and threads ------ */

static long long live, blocks;
static int fail_in; /* > 0: the fail_in-th allocation from now fails */

static void *count_realloc(void *ud, void *ptr, size_t size) {
  char *p = ptr ? (char *)ptr - 16 : NULL;
  size_t old = p ? *(size_t *)p : 0;
  char *q;

  (void)ud;
  if (size == 0) {
    if (p != NULL) {
      __atomic_sub_fetch(&live, (long long)old, __ATOMIC_RELAXED);
      __atomic_sub_fetch(&blocks, 1, __ATOMIC_RELAXED);
    }
    free(p);
    return NULL;
  }
  if (fail_in > 0 && __atomic_sub_fetch(&fail_in, 1, __ATOMIC_RELAXED) == 0)
    return NULL;
  q = realloc(p, size + 16);
  if (q == NULL)
    return NULL;
  if (p == NULL)
    __atomic_add_fetch(&blocks, 1, __ATOMIC_RELAXED);
  __atomic_add_fetch(&live, (long long)size - (long long)old, __ATOMIC_RELAXED);
  *(size_t *)q = size;
  return q + 16;
}

static const xcm_allocator counting = {sizeof(xcm_allocator), count_realloc,
                                       NULL};

/* ---- the world: two loops, two contexts, three owners ---------------- */

typedef struct world world;

typedef struct owner {
  world *w;
  xcm_stream *s;
  xcm_buf got;
  int ends, end_err, end_seq, closed, tls_done;
} owner;

enum { TLS = 1, ZLIB = 2, THREAD = 4, BIG = 8, KEEP = 16, HOP = 32 };

struct world {
  int opt;
  uv_loop_t a, b;
  xcm_ctx ca, cb;
  uv_tcp_t listener;
  struct sockaddr_storage addr;
  xcm_tls_config *tls_a, *tls_b;
  owner cli, src, dst; /* dst's fields are under mu (thread B) */
  owner hop;           /* HOP: src -> hop (B) -> dst (A) */
  /* What each side writes, made up front. */
  xcm_buf c2s, c2s_late, s2c_a, s2c_a2, s2c_hop, s2c_b;
  size_t marker_end; /* where the marker ends in c2s */
  int seq, dones, done_err, done_seq, cli_paused, moving;
  unsigned calls_at_move; /* src's write calls when it moved */
  size_t carried;
  xcm_stream_moved *kept; /* KEEP: the package, for the test */
  uv_timer_t guard, tick;
  int timed_out;
  uv_thread_t thread;
  uv_async_t wake_a, wake_b;
  uv_mutex_t mu;
  xcm_stream_moved *box; /* to thread B */
  int quit;
};

static const char marker[] = "MOVE\n";

static void lines(xcm_buf *b, const char *fmt, int n) {
  char line[64];
  int i;

  for (i = 0; i < n; i++)
    REQUIRE(xcm__buf_append(b, line,
                            (size_t)snprintf(line, sizeof line, fmt, i)) == 0);
}

/* 96 KiB each side of the marker: more than one 64 KiB read inflates
 * to, so that zlib holds output when src stops. */
static void make_data(world *w) {
  size_t i;

  lines(&w->c2s, "c2s before %06d\n", 6000);
  REQUIRE(xcm__buf_append(&w->c2s, marker, sizeof marker - 1) == 0);
  w->marker_end = w->c2s.len;
  lines(&w->c2s, "c2s after %06d\n", 6000);
  lines(&w->c2s_late, "c2s late %06d\n", 100);
  lines(&w->s2c_a, "s2c from A %06d\n", 10);
  REQUIRE(xcm__buf_append(&w->s2c_a2, "bye from A\n", 11) == 0);
  /* Random bytes, so that neither zlib nor the kernel can shrink them. */
  for (i = 0; (w->opt & BIG) && i < 4 * 1024 * 1024; i++)
    REQUIRE(xcm__buf_append_char(&w->s2c_a2, (char)xcm_test_rand()) == 0);
  if (w->opt & HOP)
    lines(&w->s2c_hop, "s2c via B %06d\n", 100);
  lines(&w->s2c_b, "s2c from B %06d\n", 1000);
}

static void lock(world *w) {
  uv_mutex_lock(&w->mu);
}

static void unlock(world *w) {
  uv_mutex_unlock(&w->mu);
}

/* ---- owners' callbacks ----------------------------------------------- */

static void on_end(void *ud, int err) {
  owner *o = ud;

  lock(o->w);
  o->ends++;
  o->end_err = err;
  o->end_seq = ++o->w->seq;
  unlock(o->w);
  xcm__stream_close(o->s);
}

static void on_closed(void *ud) {
  owner *o = ud;

  lock(o->w);
  o->closed++;
  o->s = NULL;
  unlock(o->w);
  if (o == &o->w->dst && (o->w->opt & THREAD))
    uv_async_send(&o->w->wake_a);
}

static void on_tls_done(void *ud, int err) {
  owner *o = ud;

  CHECK_INT(err, 0);
  o->tls_done = 1;
}

static void cli_read(void *ud, const char *data, size_t len) {
  owner *o = ud;

  REQUIRE(xcm__buf_append(&o->got, data, len) == 0);
  /* Once src's first lines are in, until the test resumes. */
  if (o->w->cli_paused && o->got.len >= o->w->s2c_a.len)
    xcm__stream_pause(o->s);
}

static void dst_read(void *ud, const char *data, size_t len) {
  owner *o = ud;

  lock(o->w);
  REQUIRE(xcm__buf_append(&o->got, data, len) == 0);
  unlock(o->w);
  if (o->w->opt & THREAD)
    uv_async_send(&o->w->wake_a);
}

static const xcm_stream_cb cli_cb = {cli_read, on_end, on_tls_done, NULL,
                                     on_closed};
static const xcm_stream_cb dst_cb = {dst_read, on_end, on_tls_done, NULL,
                                     on_closed};

static void hop_read(void *ud, const char *data, size_t len) {
  (void)ud;
  (void)data;
  (void)len;
  CHECK(!"a stream moved out before its first pump reads nothing");
}

static const xcm_stream_cb hop_cb = {hop_read, on_end, NULL, NULL, on_closed};

/* Adopt the package and write at once. */
static void adopt_in(world *w, xcm_stream_moved *m, xcm_ctx *ctx,
                     xcm_tls_config *tls) {
  owner *o = &w->dst;

  REQUIRE(xcm__stream_move_in(&o->s, ctx, m, tls, &dst_cb, o, NULL) == 0);
  CHECK_INT(xcm__stream_is_tls(o->s), !!(w->opt & TLS));
  CHECK_INT(xcm__stream_is_zlib(o->s), !!(w->opt & ZLIB));
  CHECK_INT(xcm__stream_write(o->s, w->s2c_b.data, w->s2c_b.len), 0);
}

static void on_hopped(void *ud, xcm_stream_moved *m, int err) {
  world *w = ud;

  CHECK_INT(err, 0);
  REQUIRE(m != NULL);
  adopt_in(w, m, &w->ca, w->tls_a);
}

/* HOP: moved in, written to and moved out again at once, before the
 * flusher delivered what the package brought: all of it goes on, after
 * what was written here. */
static void hop(world *w, xcm_stream_moved *m) {
  xcm_stream *s;

  REQUIRE(xcm__stream_move_in(&w->hop.s, &w->cb, m, w->tls_b, &hop_cb, &w->hop,
                              NULL) == 0);
  s = w->hop.s;
  CHECK_INT(xcm__stream_write(s, w->s2c_hop.data, w->s2c_hop.len), 0);
  CHECK_INT(xcm__stream_move_out(s, NULL, 0, on_hopped, w), 0);
}

static void adopt(world *w, xcm_stream_moved *m) {
  if (w->opt & HOP)
    hop(w, m);
  else
    adopt_in(w, m, &w->cb, w->tls_b);
}

static void on_moved(void *ud, xcm_stream_moved *m, int err) {
  world *w = ud;

  w->dones++;
  w->done_err = err;
  w->done_seq = ++w->seq;
  if (m == NULL)
    return;
  CHECK_INT(err, 0);
  /* Everything src wrote is with the kernel. */
  CHECK_INT(xcm__stream_queued(w->src.s), 0);
  w->carried = xcm__stream_moved_input(m);
  if (w->opt & KEEP) {
    w->kept = m;
  } else if (w->opt & THREAD) {
    lock(w);
    w->box = m;
    unlock(w);
    uv_async_send(&w->wake_b);
  } else {
    adopt(w, m);
  }
}

static void src_hello(world *w) {
  CHECK_INT(xcm__stream_write(w->src.s, w->s2c_a.data, w->s2c_a.len), 0);
}

/* The marker arrived: keep what follows it for dst, write the last bytes
 * and move. */
static void src_move(world *w, const char *unread, size_t len) {
  xcm_stream *s = w->src.s;
  const char *tail = "written after move_out\n";

  CHECK_INT(xcm__stream_write(s, w->s2c_a2.data, w->s2c_a2.len), 0);
  w->calls_at_move = xcm__stream_write_calls(s);
  w->moving = 1;
  CHECK_INT(xcm__stream_move_out(s, unread, len, on_moved, w), 0);
  CHECK_INT(xcm__stream_move_out(s, NULL, 0, on_moved, w), XCM_EINVAL);
  if (!(w->opt & ZLIB))
    CHECK_INT(xcm__stream_start_zlib(s, NULL, 0), XCM_EINVAL);
  /* Written before the package is made: still sent from here. */
  CHECK_INT(xcm__stream_write(s, tail, strlen(tail)), 0);
  REQUIRE(xcm__buf_append(&w->s2c_a2, tail, strlen(tail)) == 0);
}

static void src_read(void *ud, const char *data, size_t len) {
  owner *o = ud;
  world *w = o->w;
  size_t before = o->got.len, at;
  const char *p;

  /* Not a byte after move_out, not even of the same read. */
  CHECK(!w->moving);
  if ((w->opt & ZLIB) && !xcm__stream_is_zlib(o->s)) {
    CHECK(data[0] == 'Z');
    CHECK_INT(xcm__stream_start_zlib(o->s, data + 1, len - 1), 0);
    src_hello(w);
    return;
  }
  REQUIRE(xcm__buf_append(&o->got, data, len) == 0);
  if (o->got.len < w->marker_end)
    return;
  /* The marker ends in this read: the rest is not src's. */
  at = w->marker_end - before;
  p = data + at;
  o->got.len = w->marker_end;
  src_move(w, p, len - at);
}

static const xcm_stream_cb src_cb = {src_read, on_end, on_tls_done, NULL,
                                     on_closed};

static void on_connection(uv_stream_t *server, int status) {
  world *w = server->data;
  uv_tcp_t *tcp = count_realloc(NULL, NULL, sizeof(*tcp));
  int buf = 65536;

  REQUIRE(status == 0 && tcp != NULL && w->src.s == NULL);
  REQUIRE(uv_tcp_init(&w->a, tcp) == 0);
  REQUIRE(uv_accept(server, (uv_stream_t *)tcp) == 0);
  /* A small send buffer, so that several MB cannot all be in the kernel
   * while the client does not read. */
  if (w->opt & BIG)
    REQUIRE(uv_send_buffer_size((uv_handle_t *)tcp, &buf) == 0);
  REQUIRE(xcm__stream_from_tcp(&w->src.s, &w->ca, tcp, &src_cb, &w->src,
                               NULL) == 0);
  if (w->opt & TLS) {
    REQUIRE(xcm__stream_start_tls(w->src.s, w->tls_a, 1, NULL, NULL, 0) == 0);
    /* Not in the middle of a handshake. */
    CHECK_INT(xcm__stream_move_out(w->src.s, NULL, 0, on_moved, w), XCM_EINVAL);
  }
  if (!(w->opt & ZLIB))
    src_hello(w);
}

/* ---- thread B ------------------------------------------------------ */

static void b_closed(xcm_ctx *ctx) {
  (void)ctx;
}

static void on_wake_b(uv_async_t *h) {
  world *w = h->data;
  xcm_stream_moved *m;
  int quit;

  lock(w);
  m = w->box;
  w->box = NULL;
  quit = w->quit;
  unlock(w);
  if (m != NULL)
    adopt(w, m);
  if (!quit)
    return;
  if (w->dst.s != NULL)
    xcm__stream_abort(w->dst.s);
  uv_close((uv_handle_t *)h, NULL);
  xcm__ctx_close(&w->cb, b_closed);
}

static void b_main(void *arg) {
  world *w = arg;

  uv_run(&w->b, UV_RUN_DEFAULT);
}

static void on_wake_a(uv_async_t *h) {
  (void)h;
}

/* ---- running ------------------------------------------------------- */

static void on_guard(uv_timer_t *t) {
  world *w = t->data;

  w->timed_out = 1;
}

static void on_tick(uv_timer_t *t) {
  (void)t;
}

/* Run until cond holds. With both loops on this thread, B turns after
 * each turn of A, and a tick keeps A's poll short for it; the guard
 * only ends a run that went wrong. */
static int run_until(world *w, int (*cond)(world *)) {
  int ok;

  w->timed_out = 0;
  uv_timer_start(&w->guard, on_guard, 60000, 0);
  if (!(w->opt & THREAD))
    uv_timer_start(&w->tick, on_tick, 1, 1);
  for (;;) {
    lock(w);
    ok = cond(w);
    unlock(w);
    if (ok || w->timed_out)
      break;
    uv_run(&w->a, UV_RUN_ONCE);
    if (!(w->opt & THREAD))
      uv_run(&w->b, UV_RUN_NOWAIT);
  }
  uv_timer_stop(&w->guard);
  uv_timer_stop(&w->tick);
  return ok;
}

static xcm_tls_config *tls_config(xcm_ctx *ctx, int is_server) {
  xcm_tls_options o;
  xcm_tls_config *c = NULL;
  char err[256];

  memset(&o, 0, sizeof o);
  if (is_server) {
    o.cert_file = xcm_test_cert("server.pem");
    o.key_file = xcm_test_cert("server-key.pem");
  } else {
    o.ca_file = xcm_test_cert("ca.pem");
    o.verify = 1;
  }
  if (xcm__tls_config_new(&c, ctx, is_server, &o, err, sizeof err) != 0)
    xcm_test_note("TLS config: %s", err);
  REQUIRE(c != NULL);
  return c;
}

static void world_init(world *w, int opt) {
  int len = sizeof w->addr;

  memset(w, 0, sizeof(*w));
  w->opt = opt;
  w->cli.w = w->src.w = w->dst.w = w->hop.w = w;
  xcm__buf_init(&w->cli.got, NULL);
  xcm__buf_init(&w->src.got, NULL);
  xcm__buf_init(&w->dst.got, NULL);
  xcm__buf_init(&w->c2s, NULL);
  xcm__buf_init(&w->c2s_late, NULL);
  xcm__buf_init(&w->s2c_a, NULL);
  xcm__buf_init(&w->s2c_a2, NULL);
  xcm__buf_init(&w->s2c_hop, NULL);
  xcm__buf_init(&w->s2c_b, NULL);
  make_data(w);
  REQUIRE(uv_mutex_init(&w->mu) == 0);
  REQUIRE(uv_loop_init(&w->a) == 0 && uv_loop_init(&w->b) == 0);
  REQUIRE(xcm__ctx_init(&w->ca, &w->a, &counting) == 0);
  REQUIRE(xcm__ctx_init(&w->cb, &w->b, &counting) == 0);
  if (opt & TLS) {
    w->tls_a = tls_config(&w->ca, 1);
    w->tls_b = tls_config(&w->cb, 1);
  }
  uv_timer_init(&w->a, &w->guard);
  uv_timer_init(&w->a, &w->tick);
  w->guard.data = w;
  uv_async_init(&w->a, &w->wake_a, on_wake_a);
  uv_async_init(&w->b, &w->wake_b, on_wake_b);
  w->wake_b.data = w;
  REQUIRE(uv_tcp_init(&w->a, &w->listener) == 0);
  w->listener.data = w;
  REQUIRE(uv_ip4_addr("127.0.0.1", 0, (struct sockaddr_in *)&w->addr) == 0);
  REQUIRE(uv_tcp_bind(&w->listener, (struct sockaddr *)&w->addr, 0) == 0);
  REQUIRE(uv_listen((uv_stream_t *)&w->listener, 4, on_connection) == 0);
  REQUIRE(uv_tcp_getsockname(&w->listener, (struct sockaddr *)&w->addr, &len) ==
          0);
  if (opt & THREAD)
    REQUIRE(uv_thread_create(&w->thread, b_main, w) == 0);
}

static void a_closed(xcm_ctx *ctx) {
  (void)ctx;
}

static int all_closed(world *w) {
  return w->cli.s == NULL && w->src.s == NULL && w->dst.s == NULL &&
         w->hop.s == NULL;
}

/* Streams still open are aborted; everything must be freed. */
static void world_free(world *w) {
  if (w->cli.s != NULL)
    xcm__stream_abort(w->cli.s);
  if (w->src.s != NULL)
    xcm__stream_abort(w->src.s);
  if (w->opt & THREAD) {
    lock(w);
    w->quit = 1;
    unlock(w);
    uv_async_send(&w->wake_b);
    uv_thread_join(&w->thread);
  } else {
    if (w->dst.s != NULL)
      xcm__stream_abort(w->dst.s);
    CHECK(run_until(w, all_closed));
    uv_close((uv_handle_t *)&w->wake_b, NULL);
    xcm__ctx_close(&w->cb, b_closed);
    uv_run(&w->b, UV_RUN_DEFAULT);
  }
  CHECK(run_until(w, all_closed));
  xcm__stream_moved_free(w->kept);
  xcm__tls_config_unref(w->tls_a);
  xcm__tls_config_unref(w->tls_b);
  uv_close((uv_handle_t *)&w->listener, NULL);
  uv_close((uv_handle_t *)&w->guard, NULL);
  uv_close((uv_handle_t *)&w->tick, NULL);
  uv_close((uv_handle_t *)&w->wake_a, NULL);
  xcm__ctx_close(&w->ca, a_closed);
  uv_run(&w->a, UV_RUN_DEFAULT);
  CHECK_INT(uv_loop_close(&w->a), 0);
  CHECK_INT(uv_loop_close(&w->b), 0);
  uv_mutex_destroy(&w->mu);
  CHECK_INT(live, 0);
  CHECK_INT(blocks, 0);
  xcm__buf_free(&w->cli.got);
  xcm__buf_free(&w->src.got);
  xcm__buf_free(&w->dst.got);
  xcm__buf_free(&w->c2s);
  xcm__buf_free(&w->c2s_late);
  xcm__buf_free(&w->s2c_a);
  xcm__buf_free(&w->s2c_a2);
  xcm__buf_free(&w->s2c_hop);
  xcm__buf_free(&w->s2c_b);
}

/* ---- the script ---------------------------------------------------- */

static int connected(world *w) {
  return w->src.s != NULL &&
         (!(w->opt & TLS) || (w->cli.tls_done && w->src.tls_done));
}

static int got_hello(world *w) {
  return w->cli.got.len >= w->s2c_a.len || w->cli.ends > 0;
}

static int moved(world *w) {
  return w->dones > 0 && w->src.closed > 0;
}

static int cli_got_all(world *w) {
  return w->cli.got.len >=
             w->s2c_a.len + w->s2c_a2.len + w->s2c_hop.len + w->s2c_b.len ||
         w->cli.ends > 0;
}

static int dst_got_all(world *w) {
  return w->dst.got.len >= w->c2s.len - w->marker_end + w->c2s_late.len ||
         w->dst.ends > 0;
}

/* The flusher tried a write after the move began, and the kernel did
 * not take it all: a uv_write is under way. */
static int uv_write_issued(world *w) {
  return w->dones > 0 || w->src.s == NULL ||
         (w->moving &&
          xcm__stream_write_calls(w->src.s) >= w->calls_at_move + 2);
}

static int src_closed(world *w) {
  return w->src.s == NULL;
}

/* Connect, agree on TLS and zlib, read src's first lines. */
static void start(world *w) {
  REQUIRE(xcm__stream_connect(&w->cli.s, &w->ca, (struct sockaddr *)&w->addr,
                              &cli_cb, NULL, &w->cli, NULL) == 0);
  if (w->opt & TLS) {
    xcm_tls_config *c = tls_config(&w->ca, 0);

    REQUIRE(xcm__stream_start_tls(w->cli.s, c, 0, "localhost", NULL, 0) == 0);
    xcm__tls_config_unref(c);
  }
  REQUIRE(run_until(w, connected));
  if (w->opt & ZLIB) {
    REQUIRE(xcm__stream_write(w->cli.s, "Z", 1) == 0);
    REQUIRE(xcm__stream_start_zlib(w->cli.s, NULL, 0) == 0);
  }
  REQUIRE(run_until(w, got_hello));
  /* Everything, the marker and what follows it, in one write. */
  REQUIRE(xcm__stream_write(w->cli.s, w->c2s.data, w->c2s.len) == 0);
}

/* What each side received, byte for byte. */
static void check_bytes(world *w) {
  xcm_buf want;

  xcm__buf_init(&want, NULL);
  CHECK_MEM(w->src.got.data, w->src.got.len, w->c2s.data, w->marker_end);
  REQUIRE(xcm__buf_append(&want, w->c2s.data + w->marker_end,
                          w->c2s.len - w->marker_end) == 0);
  REQUIRE(xcm__buf_append(&want, w->c2s_late.data, w->c2s_late.len) == 0);
  CHECK_MEM(w->dst.got.data, w->dst.got.len, want.data, want.len);
  want.len = 0;
  REQUIRE(xcm__buf_append(&want, w->s2c_a.data, w->s2c_a.len) == 0);
  REQUIRE(xcm__buf_append(&want, w->s2c_a2.data, w->s2c_a2.len) == 0);
  REQUIRE(xcm__buf_append(&want, w->s2c_hop.data, w->s2c_hop.len) == 0);
  REQUIRE(xcm__buf_append(&want, w->s2c_b.data, w->s2c_b.len) == 0);
  CHECK(w->cli.got.len == want.len &&
        memcmp(w->cli.got.data, want.data, want.len) == 0);
  if (w->cli.got.len != want.len)
    xcm_test_note("client got %zu bytes of %zu", w->cli.got.len, want.len);
  xcm__buf_free(&want);
}

/* After the move: the client reads what dst wrote and writes more; dst
 * gets it after what the package brought. */
static void finish(world *w) {
  CHECK(run_until(w, cli_got_all));
  CHECK_INT(xcm__stream_write(w->cli.s, w->c2s_late.data, w->c2s_late.len), 0);
  CHECK(run_until(w, dst_got_all));
  CHECK_INT(w->cli.ends + w->dst.ends, 0);
  check_bytes(w);
  xcm_test_note("the package carried %zu bytes of input", w->carried);
  /* An orderly end from the client reaches dst as EOF. */
  xcm__stream_close(w->cli.s);
  CHECK(run_until(w, all_closed));
  CHECK_INT(w->dst.end_err, UV_EOF);
}

static void move_case(int opt) {
  world w;

  world_init(&w, opt);
  start(&w);
  CHECK(run_until(&w, moved));
  CHECK_INT(w.done_err, 0);
  CHECK_INT(w.src.ends, 0);
  finish(&w);
  world_free(&w);
}

static void test_tls_zlib(void) {
  move_case(TLS | ZLIB);
}

static void test_tls_zlib_thread(void) {
  move_case(TLS | ZLIB | THREAD);
}

static void test_plain(void) {
  move_case(0);
}

static void test_tls(void) {
  move_case(TLS);
}

static void test_zlib(void) {
  move_case(ZLIB);
}

static void test_plain_thread(void) {
  move_case(THREAD);
}

static void test_hop(void) {
  move_case(TLS | ZLIB | HOP);
}

/* 4 MB queued when the move starts, and a client that does not read:
 * the package waits until they are all with the kernel. */
static void test_big_write(void) {
  world w;

  world_init(&w, TLS | BIG);
  w.cli_paused = 1;
  start(&w);
  REQUIRE(run_until(&w, uv_write_issued));
  CHECK_INT(w.dones, 0);
  CHECK(xcm__stream_queued(w.src.s) > 0);
  w.cli_paused = 0;
  xcm__stream_resume(w.cli.s);
  CHECK(run_until(&w, moved));
  finish(&w);
  world_free(&w);
}

/* The client resets while src waits to send: done hears the error first,
 * then cb.end; nothing is left. */
static void test_reset_while_waiting(void) {
  world w;

  world_init(&w, TLS | BIG);
  w.cli_paused = 1;
  start(&w);
  REQUIRE(run_until(&w, uv_write_issued));
  CHECK_INT(w.dones, 0);
  xcm__stream_abort(w.cli.s);
  CHECK(run_until(&w, all_closed));
  CHECK_INT(w.dones, 1);
  CHECK(w.done_err < 0);
  CHECK_INT(w.src.ends, 1);
  CHECK_INT(w.src.end_err, w.done_err);
  CHECK(w.done_seq < w.src.end_seq);
  xcm_test_note("done and end: %s", xcm_err_name(w.done_err));
  CHECK(w.dst.s == NULL && w.dst.closed == 0);
  world_free(&w);
}

/* The owner gives up (its timeout): a close cancels the move without
 * done. */
static void test_abort_while_waiting(void) {
  world w;

  world_init(&w, BIG);
  w.cli_paused = 1;
  start(&w);
  REQUIRE(run_until(&w, uv_write_issued));
  xcm__stream_abort(w.src.s);
  CHECK(run_until(&w, src_closed));
  CHECK_INT(w.dones, 0);
  CHECK_INT(w.src.closed, 1);
  world_free(&w);
}

static int cli_ended(world *w) {
  return w->cli.ends > 0;
}

enum { CFG_NONE, CFG_SERVER, CFG_CLIENT };

/* A package move_in refuses, or cannot take, is freed with its socket:
 * the client sees the connection end. */
static void refused_in(int opt, int cfg, int fail_at, int want) {
  xcm_tls_config *c = NULL;
  world w;

  world_init(&w, opt | KEEP);
  start(&w);
  REQUIRE(run_until(&w, moved));
  REQUIRE(w.kept != NULL);
  if (cfg == CFG_SERVER)
    c = w.tls_b;
  else if (cfg == CFG_CLIENT)
    c = tls_config(&w.cb, 0);
  fail_in = fail_at;
  CHECK_INT(
      xcm__stream_move_in(&w.dst.s, &w.cb, w.kept, c, &dst_cb, &w.dst, NULL),
      want);
  fail_in = 0;
  w.kept = NULL;
  if (cfg == CFG_CLIENT)
    xcm__tls_config_unref(c);
  CHECK(w.dst.s == NULL);
  CHECK(run_until(&w, cli_ended));
  world_free(&w);
}

static void test_move_in_failures(void) {
  /* A TLS connection needs this instance's configuration, for the same
   * role. */
  refused_in(TLS | ZLIB, CFG_NONE, 0, XCM_EINVAL);
  refused_in(TLS, CFG_CLIENT, 0, XCM_EINVAL);
  /* Out of memory for the handle, the stream, or the input state. */
  refused_in(TLS | ZLIB, CFG_SERVER, 1, XCM_ENOMEM);
  refused_in(ZLIB, CFG_NONE, 2, XCM_ENOMEM);
  refused_in(ZLIB, CFG_NONE, 3, XCM_ENOMEM);
}

/* A discarded package closes its socket and frees its state. */
static void test_moved_free(void) {
  world w;

  world_init(&w, TLS | ZLIB | KEEP);
  start(&w);
  REQUIRE(run_until(&w, moved));
  REQUIRE(w.kept != NULL);
  CHECK(xcm__stream_moved_input(w.kept) > 0);
  xcm__stream_moved_free(w.kept);
  w.kept = NULL;
  CHECK(run_until(&w, cli_ended));
  xcm__stream_moved_free(NULL);
  world_free(&w);
}

static int custom_write(void *ud, const char *data, size_t len) {
  (void)ud;
  (void)data;
  (void)len;
  return 0;
}

static void custom_close(void *ud) {
  (void)ud;
}

/* Only a TCP stream moves, and not once closed. */
static void test_refusals(void) {
  xcm_transport t = {sizeof t, custom_write, custom_close, NULL, 0};
  xcm_stream *s;
  world w;

  world_init(&w, 0);
  REQUIRE(xcm__stream_custom(&s, &w.ca, &t, "peer", &dst_cb, &w.dst, NULL) ==
          0);
  CHECK_INT(xcm__stream_move_out(s, NULL, 0, on_moved, &w), XCM_EINVAL);
  xcm__stream_abort(s);
  start(&w);
  CHECK_INT(xcm__stream_move_out(w.src.s, NULL, 0, NULL, &w), XCM_EINVAL);
  xcm__stream_close(w.src.s);
  CHECK_INT(xcm__stream_move_out(w.src.s, NULL, 0, on_moved, &w), XCM_ECLOSED);
  CHECK(run_until(&w, cli_ended));
  CHECK_INT(w.dones, 0);
  world_free(&w);
}

static const xcm_test tests[] = {
    {"tls_zlib", test_tls_zlib},
    {"tls_zlib_thread", test_tls_zlib_thread},
    {"plain", test_plain},
    {"plain_thread", test_plain_thread},
    {"tls", test_tls},
    {"zlib", test_zlib},
    {"hop", test_hop},
    {"big_write", test_big_write},
    {"reset_while_waiting", test_reset_while_waiting},
    {"abort_while_waiting", test_abort_while_waiting},
    {"move_in_failures", test_move_in_failures},
    {"moved_free", test_moved_free},
    {"refusals", test_refusals},
};

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  return xcm_test_main(argc, argv, XCM_TESTS(tests));
}
