/* The byte stream over TCP: reads into the context's shared buffer,
 * writes batched per loop iteration, flow control, close and reset.
 *
 * Output path. xcm__stream_write() appends to `wire`, a buffer that exists
 * only while the stream has bytes to send, and puts the stream on the
 * context's flush list. The flusher (a uv_prepare handle, see core/ctx.h)
 * runs before the loop polls: for each stream it tries a plain write
 * (uv_try_write), and only what the kernel did not take goes to uv_write,
 * with the buffer handed over to the request until its callback. New
 * writes meanwhile go to a fresh `wire` buffer, never to the one in
 * flight. When everything is sent the buffers are freed, so an idle
 * stream holds none. */
#include "transport/stream.h"

#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "util/alloc.h"
#include "util/buf.h"
#include "xcm/error.h"

/* Output state, allocated while the stream has bytes to send. */
typedef struct out_state {
  xcm_buf wire;         /* bytes for the socket, not yet given to it */
  uv_write_t *inflight; /* the one uv_write under way, or NULL */
  char *inflight_data;  /* its buffer, owned by the request */
  size_t inflight_cap;
} out_state;

/* A uv_connect_t with the success callback, so that the stream does not
 * carry a pointer it needs only once. */
typedef struct connect_req {
  uv_connect_t req;
  void (*connected)(void *ud);
} connect_req;

struct xcm_stream {
  uv_tcp_t *tcp;
  xcm_ctx *ctx;
  const xcm_stream_cb *cb;
  void *ud;
  /* The context's flush list: pprev points at whatever points at us, so
   * unlinking a closing stream costs nothing. NULL when not listed. */
  xcm_stream *flush_next;
  xcm_stream **flush_pprev;
  out_state *out;
  xcm_stream_limits limits;
  unsigned long write_calls;
  unsigned paused : 1;
  unsigned connecting : 1;
  unsigned ended : 1;    /* cb.end has run (or must not run any more) */
  unsigned failed : 1;   /* a write failed: nothing more can be sent */
  unsigned closing : 1;  /* the owner called close or abort */
  unsigned shutting : 1; /* uv_shutdown under way */
  unsigned over : 1;     /* went above high water; drain owed */
  unsigned quiet : 1;    /* never adopted: close without callbacks */
};

static void flush_cb(uv_prepare_t *h);
static void finish_close(xcm_stream *s);

/* Buffers that grew past this during a burst are not worth keeping. */
#define KEEP_MAX 65536

static const xcm_allocator *salloc(const xcm_stream *s) {
  return s->ctx->alloc;
}

/* ---- flush list ---------------------------------------------------- */

static void unlink_flush(xcm_stream *s) {
  if (s->flush_pprev == NULL)
    return;
  *s->flush_pprev = s->flush_next;
  if (s->flush_next != NULL)
    s->flush_next->flush_pprev = s->flush_pprev;
  s->flush_next = NULL;
  s->flush_pprev = NULL;
}

static void schedule_flush(xcm_stream *s) {
  xcm_ctx *ctx = s->ctx;

  if (s->flush_pprev == NULL) {
    s->flush_next = ctx->flush_head;
    if (ctx->flush_head != NULL)
      ctx->flush_head->flush_pprev = &s->flush_next;
    ctx->flush_head = s;
    s->flush_pprev = &ctx->flush_head;
  }
  if (!uv_is_active((uv_handle_t *)&ctx->flusher))
    uv_prepare_start(&ctx->flusher, flush_cb);
}

/* ---- output -------------------------------------------------------- */

static size_t queued(const xcm_stream *s) {
  if (s->out == NULL)
    return 0;
  return s->out->wire.len +
         uv_stream_get_write_queue_size((const uv_stream_t *)s->tcp);
}

static int out_get(xcm_stream *s) {
  if (s->out != NULL)
    return 0;
  s->out = xcm__alloc(salloc(s), sizeof(*s->out));
  if (s->out == NULL)
    return XCM_ENOMEM;
  xcm__buf_init(&s->out->wire, salloc(s));
  s->out->inflight = NULL;
  s->out->inflight_data = NULL;
  s->out->inflight_cap = 0;
  return 0;
}

/* Give the output state back once nothing is left in it. */
static void out_trim(xcm_stream *s) {
  out_state *o = s->out;

  if (o == NULL)
    return;
  if (o->wire.len == 0 && o->wire.cap > KEEP_MAX)
    xcm__buf_free(&o->wire);
  if (o->wire.len != 0 || o->inflight != NULL)
    return;
  xcm__buf_free(&o->wire);
  xcm__free(salloc(s), o);
  s->out = NULL;
}

static void report_end(xcm_stream *s, int err) {
  if (s->ended || s->closing)
    return;
  s->ended = 1;
  uv_read_stop((uv_stream_t *)s->tcp);
  s->cb->end(s->ud, err);
}

/* The socket refused our bytes: nothing more can be sent, so drop what
 * is queued and say so once. */
static void write_failed(xcm_stream *s, int err) {
  s->failed = 1;
  if (s->out != NULL)
    s->out->wire.len = 0;
  out_trim(s);
  if (s->closing)
    finish_close(s);
  else
    report_end(s, err);
}

/* After output made progress: free what is empty, owe a drain, finish a
 * close that waited for the queue. */
static void after_progress(xcm_stream *s) {
  size_t q = queued(s);

  out_trim(s);
  if (s->over && q <= s->limits.low_water) {
    s->over = 0;
    if (s->cb->drain != NULL && !s->closing && !s->failed)
      s->cb->drain(s->ud);
  }
  if (s->closing && queued(s) == 0)
    finish_close(s);
}

static void write_cb(uv_write_t *req, int status) {
  xcm_stream *s = req->data;
  out_state *o = s->out;

  xcm__free(salloc(s), o->inflight_data);
  xcm__free(salloc(s), req);
  o->inflight = NULL;
  o->inflight_data = NULL;
  /* A reset (abort) cancels the write; the stream is going away. */
  if (status == UV_ECANCELED || uv_is_closing((uv_handle_t *)s->tcp))
    return;
  if (status < 0) {
    write_failed(s, status);
    return;
  }
  /* What was written meanwhile goes out with the next flush, together
   * with whatever else this iteration adds. */
  if (o->wire.len != 0)
    schedule_flush(s);
  after_progress(s);
}

/* Hand wire to the socket: what the kernel takes now costs no request;
 * the rest goes to uv_write in the buffer it is already in. */
static void send_wire(xcm_stream *s) {
  out_state *o = s->out;
  uv_buf_t b = uv_buf_init(o->wire.data, (unsigned)o->wire.len);
  uv_write_t *req;
  int n, err;

  n = uv_try_write((uv_stream_t *)s->tcp, &b, 1);
  s->write_calls++;
  if (n == UV_EAGAIN)
    n = 0;
  if (n < 0) {
    write_failed(s, n);
    return;
  }
  if ((size_t)n == o->wire.len) {
    o->wire.len = 0;
    return;
  }
  req = xcm__alloc(salloc(s), sizeof(*req));
  if (req == NULL) {
    /* Keep the rest and try again on the next iteration. */
    xcm__buf_consume(&o->wire, (size_t)n);
    schedule_flush(s);
    return;
  }
  req->data = s;
  b = uv_buf_init(o->wire.data + n, (unsigned)(o->wire.len - (size_t)n));
  err = uv_write(req, (uv_stream_t *)s->tcp, &b, 1, write_cb);
  s->write_calls++;
  if (err != 0) {
    xcm__free(salloc(s), req);
    write_failed(s, err);
    return;
  }
  o->inflight = req;
  o->inflight_data = o->wire.data;
  o->inflight_cap = o->wire.cap;
  xcm__buf_init(&o->wire, salloc(s));
}

static void flush_one(xcm_stream *s) {
  if (s->out == NULL || s->connecting || s->failed ||
      uv_is_closing((uv_handle_t *)s->tcp))
    return;
  if (s->out->wire.len != 0 && s->out->inflight == NULL)
    send_wire(s);
  if (!s->failed)
    after_progress(s);
}

/* Streams are taken off the list one at a time, not as a batch: a
 * callback run while flushing (drain, end) may write to any stream, which
 * puts it back, and it must still be sent before the loop polls. */
static void flush_cb(uv_prepare_t *h) {
  xcm_ctx *ctx = h->data;
  xcm_stream *s;

  while ((s = ctx->flush_head) != NULL) {
    unlink_flush(s);
    flush_one(s);
  }
  uv_prepare_stop(h);
}

int xcm__stream_write(xcm_stream *s, const void *data, size_t len) {
  size_t q, max = s->limits.max_out;
  int err;

  if (s->closing || s->failed)
    return XCM_ECLOSED;
  if (len == 0)
    return 0;
  q = queued(s);
  if (max != 0 && (len > max || q > max - len))
    return XCM_ELIMIT;
  err = out_get(s);
  if (err == 0)
    err = xcm__buf_append(&s->out->wire, data, len);
  if (err != 0) {
    out_trim(s);
    return err;
  }
  if (s->limits.high_water != 0 && q + len > s->limits.high_water)
    s->over = 1;
  schedule_flush(s);
  return 0;
}

size_t xcm__stream_queued(const xcm_stream *s) {
  return queued(s);
}

int xcm__stream_over(const xcm_stream *s) {
  return s->limits.high_water != 0 && queued(s) > s->limits.high_water;
}

unsigned long xcm__stream_write_calls(const xcm_stream *s) {
  return s->write_calls;
}

/* ---- input --------------------------------------------------------- */

/* Every stream of a context reads into the one shared buffer: data is
 * handed on before the read callback returns, so one buffer serves all.
 * Should a read ever arrive while the buffer is lent (libuv does not do
 * this today), it gets a buffer of its own. */
static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  xcm_stream *s = h->data;
  xcm_ctx *ctx = s->ctx;

  (void)suggested;
  if (!ctx->read_buf_busy) {
    ctx->read_buf_busy = 1;
    *buf = uv_buf_init(ctx->read_buf, XCM_READ_BUF);
    return;
  }
  buf->base = xcm__alloc(ctx->alloc, XCM_READ_BUF);
  buf->len = buf->base != NULL ? XCM_READ_BUF : 0;
}

static void release_buf(xcm_ctx *ctx, const uv_buf_t *buf) {
  if (buf->base == ctx->read_buf)
    ctx->read_buf_busy = 0;
  else
    xcm__free(ctx->alloc, buf->base);
}

static void read_cb(uv_stream_t *h, ssize_t nread, const uv_buf_t *buf) {
  xcm_stream *s = h->data;

  if (nread > 0 && !s->closing && !s->ended)
    s->cb->read(s->ud, buf->base, (size_t)nread);
  else if (nread < 0)
    report_end(s, nread == UV_ENOBUFS ? XCM_ENOMEM : (int)nread);
  release_buf(s->ctx, buf);
}

static int start_reading(xcm_stream *s) {
  if (s->paused || s->ended || s->closing || s->connecting)
    return 0;
  return uv_read_start((uv_stream_t *)s->tcp, alloc_cb, read_cb);
}

void xcm__stream_pause(xcm_stream *s) {
  if (s->paused)
    return;
  s->paused = 1;
  if (!s->connecting && !s->closing)
    uv_read_stop((uv_stream_t *)s->tcp);
}

void xcm__stream_resume(xcm_stream *s) {
  int err;

  if (!s->paused)
    return;
  s->paused = 0;
  err = start_reading(s);
  if (err != 0)
    report_end(s, err);
}

/* ---- lifecycle ----------------------------------------------------- */

static xcm_stream *stream_new(xcm_ctx *ctx, uv_tcp_t *tcp,
                              const xcm_stream_cb *cb, void *ud,
                              const xcm_stream_limits *limits) {
  xcm_stream *s = xcm__calloc(ctx->alloc, sizeof(*s));

  if (s == NULL)
    return NULL;
  s->tcp = tcp;
  s->ctx = ctx;
  s->cb = cb;
  s->ud = ud;
  if (limits != NULL)
    s->limits = *limits;
  return s;
}

int xcm__stream_from_tcp(xcm_stream **out, xcm_ctx *ctx, uv_tcp_t *tcp,
                         const xcm_stream_cb *cb, void *ud,
                         const xcm_stream_limits *limits) {
  xcm_stream *s;
  int err;

  *out = NULL;
  s = stream_new(ctx, tcp, cb, ud, limits);
  if (s == NULL)
    return XCM_ENOMEM;
  tcp->data = s;
  /* Writes are batched here, so Nagle would only add delay. */
  uv_tcp_nodelay(tcp, 1);
  err = start_reading(s);
  if (err != 0) {
    tcp->data = NULL;
    xcm__free(ctx->alloc, s);
    return err;
  }
  *out = s;
  return 0;
}

static void connect_cb(uv_connect_t *req, int status) {
  connect_req *cr = (connect_req *)req;
  xcm_stream *s = req->handle->data;
  void (*connected)(void *) = cr->connected;
  int err;

  xcm__free(salloc(s), cr);
  s->connecting = 0;
  if (status == UV_ECANCELED || s->closing)
    return;
  if (status < 0) {
    /* Bytes queued for a connection that never was are dropped. */
    write_failed(s, status);
    return;
  }
  uv_tcp_nodelay(s->tcp, 1);
  err = start_reading(s);
  if (err != 0) {
    report_end(s, err);
    return;
  }
  if (s->out != NULL)
    schedule_flush(s);
  if (connected != NULL)
    connected(s->ud);
}

static void close_cb(uv_handle_t *h) {
  xcm_stream *s = h->data;
  const xcm_allocator *a = salloc(s);

  unlink_flush(s);
  if (!s->quiet)
    s->cb->closed(s->ud);
  if (s->out != NULL) {
    /* uv_close has run every write callback by now. */
    xcm__buf_free(&s->out->wire);
    xcm__free(a, s->out);
  }
  xcm__free(a, s->tcp);
  xcm__free(a, s);
}

int xcm__stream_connect(xcm_stream **out, xcm_ctx *ctx,
                        const struct sockaddr *addr, const xcm_stream_cb *cb,
                        void (*connected)(void *ud), void *ud,
                        const xcm_stream_limits *limits) {
  uv_tcp_t *tcp;
  connect_req *cr;
  xcm_stream *s;
  int err;

  *out = NULL;
  tcp = xcm__alloc(ctx->alloc, sizeof(*tcp));
  cr = xcm__alloc(ctx->alloc, sizeof(*cr));
  s = stream_new(ctx, tcp, cb, ud, limits);
  if (tcp == NULL || cr == NULL || s == NULL) {
    xcm__free(ctx->alloc, tcp);
    xcm__free(ctx->alloc, cr);
    xcm__free(ctx->alloc, s);
    return XCM_ENOMEM;
  }
  err = uv_tcp_init(ctx->loop, tcp);
  if (err != 0) {
    xcm__free(ctx->alloc, tcp);
    xcm__free(ctx->alloc, cr);
    xcm__free(ctx->alloc, s);
    return err;
  }
  tcp->data = s;
  cr->connected = connected;
  err = uv_tcp_connect(&cr->req, tcp, addr, connect_cb);
  if (err != 0) {
    /* The handle exists now and can only go through uv_close; the owner
     * never saw the stream, so it closes without callbacks. */
    xcm__free(ctx->alloc, cr);
    s->quiet = 1;
    s->closing = 1;
    uv_close((uv_handle_t *)tcp, close_cb);
    return err;
  }
  s->connecting = 1;
  *out = s;
  return 0;
}

static void shutdown_cb(uv_shutdown_t *req, int status) {
  xcm_stream *s = req->data;

  (void)status;
  xcm__free(salloc(s), req);
  if (!uv_is_closing((uv_handle_t *)s->tcp))
    uv_close((uv_handle_t *)s->tcp, close_cb);
}

/* Everything queued is with the kernel: send FIN after it, then close.
 * A socket that cannot shut down (reset, never connected) just closes. */
static void finish_close(xcm_stream *s) {
  uv_shutdown_t *req;

  if (s->shutting || uv_is_closing((uv_handle_t *)s->tcp))
    return;
  unlink_flush(s);
  req = s->failed || s->connecting ? NULL : xcm__alloc(salloc(s), sizeof(*req));
  if (req != NULL) {
    req->data = s;
    if (uv_shutdown(req, (uv_stream_t *)s->tcp, shutdown_cb) == 0) {
      s->shutting = 1;
      return;
    }
    xcm__free(salloc(s), req);
  }
  uv_close((uv_handle_t *)s->tcp, close_cb);
}

void xcm__stream_close(xcm_stream *s) {
  if (s->closing)
    return;
  s->closing = 1;
  if (!s->connecting)
    uv_read_stop((uv_stream_t *)s->tcp);
  if (queued(s) == 0 || s->connecting || s->failed)
    finish_close(s);
  else
    schedule_flush(s);
}

void xcm__stream_abort(xcm_stream *s) {
  uv_handle_t *h = (uv_handle_t *)s->tcp;

  s->closing = 1;
  if (uv_is_closing(h))
    return;
  unlink_flush(s);
  /* A reset tells the peer that what it may still be waiting for will
   * not come. It cannot follow a shutdown; a plain close then. */
  if (s->shutting || s->connecting || uv_tcp_close_reset(s->tcp, close_cb) != 0)
    uv_close(h, close_cb);
}

/* ---- queries ------------------------------------------------------- */

int xcm__stream_is_tls(const xcm_stream *s) {
  (void)s;
  return 0;
}

int xcm__stream_is_zlib(const xcm_stream *s) {
  (void)s;
  return 0;
}

const char *xcm__stream_peer(const xcm_stream *s) {
  static _Thread_local char text[INET6_ADDRSTRLEN];
  struct sockaddr_storage ss;
  const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)&ss;
  struct sockaddr_in a4;
  int len = sizeof ss;

  text[0] = '\0';
  if (uv_tcp_getpeername(s->tcp, (struct sockaddr *)&ss, &len) != 0)
    return text;
  if (ss.ss_family == AF_INET) {
    uv_ip4_name((const struct sockaddr_in *)&ss, text, sizeof text);
  } else if (ss.ss_family == AF_INET6) {
    /* A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d; logs and
     * per-address limits want the address the client has. */
    if (IN6_IS_ADDR_V4MAPPED(&a6->sin6_addr)) {
      memset(&a4, 0, sizeof a4);
      a4.sin_family = AF_INET;
      memcpy(&a4.sin_addr, a6->sin6_addr.s6_addr + 12, 4);
      uv_ip4_name(&a4, text, sizeof text);
    } else {
      uv_ip6_name(a6, text, sizeof text);
    }
  }
  return text;
}

size_t xcm__stream_footprint(const xcm_stream *s) {
  size_t n = sizeof(*s) + sizeof(*s->tcp);
  const out_state *o = s->out;

  if (o != NULL) {
    n += sizeof(*o) + o->wire.cap;
    if (o->inflight != NULL)
      n += sizeof(*o->inflight) + o->inflight_cap;
  }
  return n;
}

/* ---- TLS and zlib: not yet ----------------------------------------- */

int xcm__stream_start_tls(xcm_stream *s, xcm_tls_config *cfg, int is_server,
                          const char *hostname, const char *early,
                          size_t early_len) {
  (void)s;
  (void)cfg;
  (void)is_server;
  (void)hostname;
  (void)early;
  (void)early_len;
  return XCM_EINVAL;
}

int xcm__stream_start_zlib(xcm_stream *s, const char *early, size_t early_len) {
  (void)s;
  (void)early;
  (void)early_len;
  return XCM_EINVAL;
}

int xcm__tls_config_new(xcm_tls_config **out, xcm_ctx *ctx, int is_server,
                        const xcm_tls_options *opt, char *errbuf,
                        size_t errlen) {
  (void)ctx;
  (void)is_server;
  (void)opt;
  *out = NULL;
  if (errlen > 0)
    snprintf(errbuf, errlen, "TLS is not built yet");
  return XCM_ECONFIG;
}

int xcm__tls_config_add_cert(xcm_tls_config *cfg, const char *cert_file,
                             const char *key_file, char *errbuf,
                             size_t errlen) {
  (void)cfg;
  (void)cert_file;
  (void)key_file;
  if (errlen > 0)
    snprintf(errbuf, errlen, "TLS is not built yet");
  return XCM_ECONFIG;
}

void xcm__tls_config_unref(xcm_tls_config *cfg) {
  (void)cfg;
}
