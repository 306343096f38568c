/* The byte stream: TCP, with TLS and zlib layered on.
 *
 *   socket <-> TLS <-> zlib <-> application
 *
 * Output. xcm__stream_write() appends plaintext to `app` (or straight to
 * `wire` when no layer is on), buffers that exist only while the stream
 * has bytes to send, and puts the stream on the context's flush list. The
 * flusher (a uv_prepare handle, see core/ctx.h) runs before the loop
 * polls: for each stream it deflates `app` with one sync flush, encrypts
 * it into records, and tries a plain write (uv_try_write) of `wire`; only
 * what the kernel did not take goes to uv_write, with the buffer handed
 * to the request until its callback. New bytes meanwhile go to a fresh
 * `wire`, never to the one in flight. When everything is sent the
 * buffers are freed, so an idle stream holds none.
 *
 * Input. A socket read lends the context's read buffer; the bytes are
 * pumped up through the layers before the read callback returns: TLS
 * decrypts into the context's plain buffer, zlib inflates into it in
 * chunks, and each chunk goes to cb.read. Only when the owner pauses
 * mid-read, or starts a layer with `early` bytes, does input wait in the
 * stream, in heap buffers that go once they are used:
 *
 *   plain  plaintext a moved connection brought (see move_out); oldest
 *   mid    bytes out of TLS (or the socket) not yet inflated
 *   raw    socket bytes not yet through TLS (or zlib); then the current
 *          read's rest, then the next read.
 *
 * Between mid and raw in age come the bytes inside the layers: zlib's
 * output not yet taken, and TLS's decrypted bytes and partial records.
 *
 * Both are pumped by the flusher when the owner resumes or starts a
 * layer outside a read callback; the flusher also drives a client's
 * first handshake message. */
#include "transport/stream.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "transport/tls.h"
#include "transport/zlib.h"
#include "util/alloc.h"
#include "util/buf.h"
#include "xcm/error.h"

/* Input waiting in the stream (see above); allocated while it waits. */
typedef struct in_state {
  xcm_buf plain;
  xcm_buf mid;
  xcm_buf raw;
} in_state;

/* A connection on its way to another context (see stream.h). While the
 * source waits for its output to drain, only unread (in plain), done and
 * ud are set; the rest is taken from the stream when the package is
 * made, and done and ud are cleared. */
struct xcm_stream_moved {
  const xcm_allocator *alloc; /* the source's, the same as the target's */
  int fd;                     /* a dup of the socket, or -1 */
  xcm_tls *tls;
  xcm_zlib *zlib;
  in_state in;
  xcm_stream_moved_fn done;
  void *ud;
};

/* One pass of input through the layers: the stream, the socket read
 * being handled (lent; NULL when the flusher pumps waiting input) and what
 * it has inflated so far, for max_inflate. On the C stack of the pump. */
typedef struct frame {
  xcm_stream *s;
  const char *cur;
  size_t len;
  size_t inflated;
} frame;

/* The pass under way on this thread. Passes never nest: cb.read may
 * resume or start a layer on any stream, but that input is pumped later,
 * by the flusher. So the stream needs no pointer of its own for it. */
static _Thread_local frame *pumping;

/* A write the owner marked as a record: where it starts in the
 * plaintext written since the output state was allocated, and its
 * length. */
typedef struct out_rec {
  uint64_t at;
  size_t len;
} out_rec;

/* Output state, allocated while the stream has bytes to send.
 *
 * Records. Plaintext positions count every byte written since the state
 * was allocated; `end` is the next one. The plaintext still unsent and
 * unencoded is the tail [end - n, end): with TLS or zlib n is app.len;
 * without, n is wire.len plus what libuv has not yet written of the
 * request in flight (whose buffer holds the plaintext just before
 * wire's). That start only moves forward, so a record that begins
 * before it is sent (or partly sent) for good and is dropped whenever
 * the array would otherwise grow. Each record still kept counts
 * sizeof(out_rec) against max_out, beside the bytes. */
typedef struct out_state {
  xcm_buf app;          /* plaintext for TLS or zlib, not yet encoded */
  xcm_buf wire;         /* bytes for the socket, not yet given to it */
  uv_write_t *inflight; /* the one uv_write under way, or NULL */
  char *inflight_data;  /* its buffer, owned by the request */
  size_t inflight_cap;
  size_t inflight_len; /* bytes in that buffer, the first ones written */
  uint64_t end;        /* plaintext position after the last byte written */
  out_rec *recs;       /* records, oldest first; NULL until the first */
  size_t nrecs, recs_cap;
} out_state;

/* A uv_connect_t with the success callback, so that the stream does not
 * carry a pointer it needs only once. */
typedef struct connect_req {
  uv_connect_t req;
  void (*connected)(void *ud);
} connect_req;

struct xcm_stream {
  uv_tcp_t *tcp;      /* NULL for a custom transport */
  xcm_transport *ops; /* a copy; with the peer's name after it */
  xcm_ctx *ctx;
  const xcm_stream_cb *cb;
  void *ud;
  /* The context's flush list: pprev points at whatever points at us, so
   * unlinking a closing stream costs nothing. NULL when not listed. */
  xcm_stream *flush_next;
  xcm_stream **flush_pprev;
  out_state *out;
  in_state *in;
  xcm_tls *tls;
  xcm_zlib *zlib;
  xcm_stream_moved *move; /* move_out waiting for the output to drain */
  xcm_stream_limits limits;
  const char *peer_name; /* the owner's name for the peer, or NULL */
  unsigned write_calls;  /* wraps; a statistic */
  unsigned paused : 1;
  unsigned connecting : 1;
  unsigned ended : 1;         /* cb.end has run (or must not run any more) */
  unsigned failed : 1;        /* a write failed: nothing more can be sent */
  unsigned closing : 1;       /* the owner called close or abort */
  unsigned shutting : 1;      /* uv_shutdown under way */
  unsigned over : 1;          /* went above high water; drain owed */
  unsigned quiet : 1;         /* never adopted: close without callbacks */
  unsigned need_pump : 1;     /* the flusher should pump waiting input */
  unsigned flushing : 1;      /* flush_one is running for this stream */
  unsigned notified : 1;      /* TLS close_notify queued */
  unsigned custom_closed : 1; /* ops->close has run */
  unsigned no_reset : 1;      /* xcm__stream_drop: abort with a plain close */
  unsigned blocked : 1;       /* the custom transport said XCM_EAGAIN: wait */
  unsigned moved_in : 1;      /* read the socket after the first pump */
};

static void flush_cb(uv_prepare_t *h);
static void finish_close(xcm_stream *s);
static void move_failed(xcm_stream *s, int err);
static void move_finish_if_sent(xcm_stream *s);
static int start_reading(xcm_stream *s);

/* Buffers that grew past this during a burst are not worth keeping. */
#define KEEP_MAX 65536

/* With TLS and zlib both on, the plain buffer is split: records are
 * decrypted into its first part (a record holds at most 16 KiB), and
 * inflated into the rest. */
#define TLS_PART 16384

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
  return s->out->app.len + s->out->wire.len +
         (s->tcp != NULL
              ? uv_stream_get_write_queue_size((const uv_stream_t *)s->tcp)
              : 0);
}

static int tls_ready(const xcm_stream *s) {
  return s->tls != NULL && xcm__tls_handshake_done(s->tls);
}

/* A closing stream is done when everything is with the kernel, a TLS
 * close_notify included. */
static int all_sent(const xcm_stream *s) {
  return queued(s) == 0 && (!tls_ready(s) || s->notified || s->failed);
}

static int out_get(xcm_stream *s) {
  if (s->out != NULL)
    return 0;
  s->out = xcm__alloc(salloc(s), sizeof(*s->out));
  if (s->out == NULL)
    return XCM_ENOMEM;
  xcm__buf_init(&s->out->app, salloc(s));
  xcm__buf_init(&s->out->wire, salloc(s));
  s->out->inflight = NULL;
  s->out->inflight_data = NULL;
  s->out->inflight_cap = 0;
  s->out->inflight_len = 0;
  s->out->end = 0;
  s->out->recs = NULL;
  s->out->nrecs = s->out->recs_cap = 0;
  return 0;
}

static void out_free(xcm_stream *s) {
  out_state *o = s->out;

  xcm__buf_free(&o->app);
  xcm__buf_free(&o->wire);
  xcm__free(salloc(s), o->recs);
  xcm__free(salloc(s), o);
  s->out = NULL;
}

/* Give the output state back once nothing is left in it. */
static void out_trim(xcm_stream *s) {
  out_state *o = s->out;

  if (o == NULL)
    return;
  if (o->wire.len == 0 && o->wire.cap > KEEP_MAX)
    xcm__buf_free(&o->wire);
  if (o->app.len == 0 && o->app.cap > KEEP_MAX)
    xcm__buf_free(&o->app);
  if (o->app.len != 0 || o->wire.len != 0 || o->inflight != NULL)
    return;
  out_free(s);
}

static void report_end(xcm_stream *s, int err) {
  if (s->ended || s->closing)
    return;
  /* A move under way fails first, so that the owner hears of the move
   * before the end; it may close the stream in done. */
  if (s->move != NULL) {
    move_failed(s, err);
    if (s->closing)
      return;
  }
  s->ended = 1;
  if (s->tcp != NULL)
    uv_read_stop((uv_stream_t *)s->tcp);
  s->cb->end(s->ud, err);
}

/* The socket refused our bytes: nothing more can be sent, so drop what
 * is queued and say so once. */
static void write_failed(xcm_stream *s, int err) {
  int closing = s->closing;

  s->failed = 1;
  /* The owner hears of it before the queue goes, so that it can still
   * take back its records (the stream lives until its handle closes). */
  if (!closing)
    report_end(s, err);
  if (s->out != NULL)
    s->out->app.len = s->out->wire.len = 0;
  out_trim(s);
  if (closing)
    finish_close(s);
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
  if (s->closing && all_sent(s))
    finish_close(s);
  move_finish_if_sent(s);
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

  if (s->ops != NULL) {
    /* A custom transport takes everything at once, but may then ask for
     * a pause: what follows waits in wire (against max_out) until
     * xcm__stream_writable(). */
    if (s->blocked)
      return;
    err = s->ops->write(s->ops->ud, o->wire.data, o->wire.len);
    s->write_calls++;
    if (err == XCM_EAGAIN) {
      s->blocked = 1;
      err = 0;
    }
    if (err < 0)
      write_failed(s, err);
    else
      o->wire.len = 0;
    return;
  }
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
  o->inflight_len = o->wire.len;
  xcm__buf_init(&o->wire, salloc(s));
}

static void pump(xcm_stream *s, const char *data, size_t len);
static void fail_stream(xcm_stream *s, int err);

static int emit_tls(void *ud, const char *data, size_t len) {
  xcm_stream *s = ud;

  return xcm__tls_write(s->tls, data, len);
}

/* Turn the plaintext in app into bytes for the socket, through zlib and
 * TLS, in one sync flush and as few records as the size allows. Waits
 * while a TLS handshake is under way. */
static int encode(xcm_stream *s) {
  out_state *o = s->out;
  char chunk[TLS_PART];
  int err;

  if (o == NULL || o->app.len == 0 || (s->tls != NULL && !tls_ready(s)))
    return 0;
  if (s->zlib != NULL && s->tls != NULL)
    err = xcm__zlib_deflate(s->zlib, o->app.data, o->app.len, chunk,
                            sizeof chunk, emit_tls, s);
  else if (s->zlib != NULL)
    err = xcm__zlib_deflate_buf(s->zlib, o->app.data, o->app.len, &o->wire);
  else if (s->tls != NULL)
    err = xcm__tls_write(s->tls, o->app.data, o->app.len);
  else
    err = xcm__buf_append(&o->wire, o->app.data, o->app.len);
  o->app.len = 0;
  return err;
}

static void destroy(xcm_stream *s);

static int handle_closing(const xcm_stream *s) {
  return s->tcp != NULL ? uv_is_closing((uv_handle_t *)s->tcp)
                        : s->custom_closed;
}

static void flush_one(xcm_stream *s) {
  int err;

  /* A custom stream is freed from here, after the call that closed it
   * returned, as a socket's is from its close callback. */
  if (s->ops != NULL && s->custom_closed) {
    destroy(s);
    return;
  }
  if (s->need_pump) {
    s->need_pump = 0;
    pump(s, NULL, 0);
  }
  if (s->moved_in && !s->closing) {
    /* What the package brought is delivered (or waits for a resume):
     * the socket's bytes come after it. */
    s->moved_in = 0;
    err = start_reading(s);
    if (err != 0)
      report_end(s, err);
  }
  if (s->connecting || s->failed || handle_closing(s))
    return;
  s->flushing = 1;
  err = encode(s);
  if (err == 0 && s->closing && tls_ready(s) && !s->notified) {
    s->notified = 1;
    err = xcm__tls_close_notify(s->tls);
  }
  s->flushing = 0;
  if (err != 0) {
    /* The layers' state is lost with the bytes: the stream cannot go
     * on. */
    if (s->out != NULL)
      s->out->app.len = 0;
    fail_stream(s, err);
    if (s->closing)
      finish_close(s);
    return;
  }
  if (s->out == NULL) {
    move_finish_if_sent(s);
    return;
  }
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

static int layered(const xcm_stream *s) {
  return s->tls != NULL || s->zlib != NULL;
}

/* What libuv has not written yet of the request in flight: the end of
 * its buffer. */
static size_t inflight_pending(const xcm_stream *s) {
  const out_state *o = s->out;
  size_t pending;

  if (o->inflight == NULL || s->tcp == NULL)
    return 0;
  pending = uv_stream_get_write_queue_size((const uv_stream_t *)s->tcp);
  return pending < o->inflight_len ? pending : o->inflight_len;
}

/* The plaintext position where what is neither encoded nor handed to
 * the kernel begins (see out_state). With TLS or zlib on, wire holds
 * encoded bytes: only app is still plaintext. */
static uint64_t unsent_from(const xcm_stream *s) {
  const out_state *o = s->out;

  if (layered(s))
    return o->end - o->app.len;
  return o->end - o->wire.len - inflight_pending(s);
}

/* Forget the records that begin before the unsent tail: they are sent,
 * or partly sent, for good. They are the oldest, so a prefix. */
static void recs_prune(xcm_stream *s) {
  out_state *o = s->out;
  uint64_t from = unsent_from(s);
  size_t i = 0;

  while (i < o->nrecs && o->recs[i].at < from)
    i++;
  if (i == 0)
    return;
  memmove(o->recs, o->recs + i, (o->nrecs - i) * sizeof(*o->recs));
  o->nrecs -= i;
}

/* A free slot for one more record: drop the sent ones before growing. */
static int recs_reserve(xcm_stream *s) {
  out_state *o = s->out;
  out_rec *r;
  size_t cap;

  if (o->nrecs < o->recs_cap)
    return 0;
  recs_prune(s);
  if (o->nrecs < o->recs_cap)
    return 0;
  cap = o->recs_cap != 0 ? 2 * o->recs_cap : 8;
  r = xcm__realloc(salloc(s), o->recs, cap * sizeof(*r));
  if (r == NULL)
    return XCM_ENOMEM;
  o->recs = r;
  o->recs_cap = cap;
  return 0;
}

/* What counts against max_out: the bytes queued and the records kept. */
static size_t limit_used(const xcm_stream *s) {
  return queued(s) + (s->out != NULL ? s->out->nrecs * sizeof(out_rec) : 0);
}

/* Whether len more bytes (and a record) fit under max_out. Records
 * already sent may still be counted: drop them before refusing. */
static int has_room(xcm_stream *s, size_t len, int record) {
  size_t max = s->limits.max_out, need = len + (record ? sizeof(out_rec) : 0);

  if (max == 0)
    return 1;
  if (need > max)
    return 0;
  if (limit_used(s) <= max - need)
    return 1;
  if (s->out == NULL || s->out->nrecs == 0)
    return 0;
  recs_prune(s);
  return limit_used(s) <= max - need;
}

static int queue_write(xcm_stream *s, const void *data, size_t len,
                       int record) {
  out_state *o;
  size_t q;
  int err;

  if (s->closing || s->failed)
    return XCM_ECLOSED;
  if (len == 0)
    return 0;
  if (!has_room(s, len, record))
    return XCM_ELIMIT;
  q = queued(s);
  err = out_get(s);
  /* The slot first: a record that could not be kept must not leave its
   * bytes queued without it. */
  if (err == 0 && record)
    err = recs_reserve(s);
  if (err == 0)
    err = xcm__buf_append(layered(s) ? &s->out->app : &s->out->wire, data, len);
  if (err != 0) {
    out_trim(s);
    return err;
  }
  o = s->out;
  if (record) {
    o->recs[o->nrecs].at = o->end;
    o->recs[o->nrecs].len = len;
    o->nrecs++;
  }
  o->end += len;
  if (s->limits.high_water != 0 && q + len > s->limits.high_water)
    s->over = 1;
  schedule_flush(s);
  return 0;
}

int xcm__stream_write(xcm_stream *s, const void *data, size_t len) {
  return queue_write(s, data, len, 0);
}

int xcm__stream_write_record(xcm_stream *s, const void *data, size_t len) {
  return queue_write(s, data, len, 1);
}

/* Where a record's bytes are: in app with TLS or zlib; else in wire, or
 * in the buffer of the request in flight, which ends where wire
 * begins. A record never straddles the two: wire goes to a request
 * whole. */
static const char *rec_data(const xcm_stream *s, const out_rec *r) {
  const out_state *o = s->out;
  uint64_t wire_at;

  if (layered(s))
    return o->app.data + (r->at - (o->end - o->app.len));
  wire_at = o->end - o->wire.len;
  if (r->at >= wire_at)
    return o->wire.data + (r->at - wire_at);
  return o->inflight_data + (r->at - (wire_at - o->inflight_len));
}

size_t xcm__stream_unsent_records(const xcm_stream *s, xcm_stream_record_fn fn,
                                  void *ud) {
  const out_state *o = s->out;
  uint64_t from;
  size_t i, n = 0;

  if (o == NULL || o->nrecs == 0)
    return 0;
  from = unsent_from(s);
  for (i = 0; i < o->nrecs; i++) {
    if (o->recs[i].at < from)
      continue;
    fn(ud, rec_data(s, &o->recs[i]), o->recs[i].len);
    n++;
  }
  return n;
}

size_t xcm__stream_queued(const xcm_stream *s) {
  return queued(s);
}

int xcm__stream_over(const xcm_stream *s) {
  return s->limits.high_water != 0 && queued(s) > s->limits.high_water;
}

unsigned xcm__stream_write_calls(const xcm_stream *s) {
  return s->write_calls;
}

/* ---- input through the layers ------------------------------------ */

static int stopped(const xcm_stream *s) {
  return s->paused || s->closing || s->ended || s->failed || s->move != NULL;
}

static int in_get(xcm_stream *s) {
  if (s->in != NULL)
    return 0;
  s->in = xcm__alloc(salloc(s), sizeof(*s->in));
  if (s->in == NULL)
    return XCM_ENOMEM;
  xcm__buf_init(&s->in->plain, salloc(s));
  xcm__buf_init(&s->in->mid, salloc(s));
  xcm__buf_init(&s->in->raw, salloc(s));
  return 0;
}

static size_t in_len(const in_state *in) {
  return in->plain.len + in->mid.len + in->raw.len;
}

static void in_free(in_state *in) {
  xcm__buf_free(&in->plain);
  xcm__buf_free(&in->mid);
  xcm__buf_free(&in->raw);
}

static void in_trim(xcm_stream *s) {
  if (s->in == NULL || in_len(s->in) != 0)
    return;
  in_free(s->in);
  xcm__free(salloc(s), s->in);
  s->in = NULL;
}

/* Put bytes in front of b: they are older than what it holds. */
static int buf_prepend(xcm_buf *b, const char *data, size_t len) {
  int err;

  if (len == 0)
    return 0;
  err = xcm__buf_reserve(b, len);
  if (err != 0)
    return err;
  memmove(b->data + len, b->data, b->len);
  memcpy(b->data, data, len);
  b->len += len;
  return 0;
}

/* Keep input for later, in front of (older than) what waits already. */
static int keep_input(xcm_stream *s, int mid, const char *data, size_t len) {
  int err = in_get(s);

  if (err == 0)
    err = buf_prepend(mid ? &s->in->mid : &s->in->raw, data, len);
  return err;
}

/* The stream cannot go on. A handshake under way hears it first. */
static void fail_stream(xcm_stream *s, int err) {
  if (s->ended || s->closing)
    return;
  if (s->tls != NULL && !tls_ready(s) && s->cb->tls_done != NULL) {
    s->cb->tls_done(s->ud, err);
    if (s->closing)
      return;
  }
  report_end(s, err);
}

/* Inflate data and hand each chunk to cb.read, until the input is used
 * up or the owner pauses or closes. Returns the bytes of data used. The
 * chunk is cut so that the byte that would pass max_inflate is never
 * produced: a bomb costs this read's time and nothing else. */
static size_t inflate_deliver(xcm_stream *s, frame *f, const char *data,
                              size_t len) {
  xcm_ctx *ctx = s->ctx;
  char *out = ctx->plain_buf + (s->tls != NULL ? TLS_PART : 0);
  size_t room = XCM_READ_BUF - (s->tls != NULL ? TLS_PART : 0);
  size_t max = s->limits.max_inflate, cap, produced;
  const char *p = data, *before;
  int err;

  while (!stopped(s)) {
    before = p;
    cap = room;
    if (max != 0 && cap > max - f->inflated + 1)
      cap = max - f->inflated + 1;
    err = xcm__zlib_inflate(s->zlib, &p, &len, out, cap, &produced);
    if (err != 0) {
      xcm__log(ctx, XCM_LOG_INFO, "compressed stream from %s is corrupt",
               xcm__stream_peer(s));
      fail_stream(s, err);
      break;
    }
    f->inflated += produced;
    if (max != 0 && f->inflated > max) {
      xcm__log(ctx, XCM_LOG_WARN,
               "compressed input from %s inflates past %zu bytes: cut off",
               xcm__stream_peer(s), max);
      fail_stream(s, XCM_ELIMIT);
      break;
    }
    if (produced > 0)
      s->cb->read(s->ud, out, produced);
    /* Output that did not fill the chunk means zlib holds no more; a
     * call that neither used nor made anything cannot be repeated. */
    if ((produced < cap && len == 0) || (produced == 0 && p == before))
      break;
  }
  return (size_t)(p - data);
}

/* Bytes past TLS (or straight from the socket): inflate or deliver. */
static size_t deliver_mid(xcm_stream *s, frame *f, const char *data,
                          size_t len) {
  if (s->zlib != NULL)
    return inflate_deliver(s, f, data, len);
  s->cb->read(s->ud, data, len);
  return len;
}

/* Hand the waiting buffer to the layers. It is taken out of the stream
 * first: what cb.read does (start a layer with early bytes) may put new
 * bytes in its place, in front of what is left here. */
static void pump_waiting(xcm_stream *s, frame *f, int mid) {
  xcm_buf *slot = mid ? &s->in->mid : &s->in->raw;
  xcm_buf b = *slot;
  size_t used;

  xcm__buf_init(slot, salloc(s));
  used = deliver_mid(s, f, b.data, b.len);
  if (used < b.len && keep_input(s, 1, b.data + used, b.len - used) != 0)
    fail_stream(s, XCM_ENOMEM);
  xcm__buf_free(&b);
}

/* Plaintext a moved connection brought: the owner gets it whole, as it
 * would a read. Taken out first, as in pump_waiting. */
static void pump_plain(xcm_stream *s) {
  xcm_buf b = s->in->plain;

  xcm__buf_init(&s->in->plain, salloc(s));
  s->cb->read(s->ud, b.data, b.len);
  xcm__buf_free(&b);
}

static void handshake_done(xcm_stream *s) {
  if (s->out != NULL && s->out->app.len != 0)
    schedule_flush(s);
  if (s->cb->tls_done != NULL)
    s->cb->tls_done(s->ud, 0);
}

/* One step of the pump: returns 0 when nothing more can be done now. */
static int pump_step(xcm_stream *s, frame *f) {
  char *buf = s->ctx->plain_buf;
  const char *p;
  size_t n, used;
  int r;

  if (s->in != NULL && s->in->plain.len != 0) {
    pump_plain(s);
    return 1;
  }
  /* Output zlib still holds is older than anything waiting. */
  if (s->zlib != NULL && xcm__zlib_inflate_held(s->zlib)) {
    inflate_deliver(s, f, "", 0);
    return 1;
  }
  if (s->in != NULL && s->in->mid.len != 0 && s->zlib != NULL) {
    pump_waiting(s, f, 1);
    return 1;
  }
  if (s->tls != NULL) {
    if (!tls_ready(s)) {
      r = xcm__tls_handshake(s->tls, xcm__stream_peer(s));
      if (r == UV_EAGAIN)
        return 0;
      if (r != 0) {
        fail_stream(s, r);
        return 0;
      }
      handshake_done(s);
      return 1;
    }
    r = xcm__tls_read(s->tls, buf, s->zlib != NULL ? TLS_PART : XCM_READ_BUF,
                      xcm__stream_peer(s));
    if (r == UV_EAGAIN)
      return 0;
    if (r == UV_EOF) {
      report_end(s, UV_EOF);
      return 0;
    }
    if (r < 0) {
      fail_stream(s, r);
      return 0;
    }
    used = deliver_mid(s, f, buf, (size_t)r);
    if (used < (size_t)r && keep_input(s, 1, buf + used, (size_t)r - used) != 0)
      fail_stream(s, XCM_ENOMEM);
    return 1;
  }
  if (s->in != NULL && s->in->raw.len != 0) {
    pump_waiting(s, f, 0);
    return 1;
  }
  if (f->len == 0)
    return 0;
  /* The frame is advanced before cb.read runs: early bytes it passes to
   * a new layer come first, then whatever of this read is left. */
  p = f->cur;
  n = f->len;
  if (s->zlib == NULL) {
    f->len = 0;
    s->cb->read(s->ud, p, n);
    return 1;
  }
  used = inflate_deliver(s, f, p, n);
  f->cur += used;
  f->len -= used;
  return 1;
}

static void pump(xcm_stream *s, const char *data, size_t len) {
  frame f;

  f.s = s;
  f.cur = data;
  f.len = len;
  f.inflated = 0;
  pumping = &f;
  while (!stopped(s) && pump_step(s, &f))
    ;
  pumping = NULL;
  /* Paused with part of this read unused: it waits, behind what waited
   * already. */
  if (f.len > 0 && !s->closing && !s->ended && !s->failed) {
    if (in_get(s) != 0 || xcm__buf_append(&s->in->raw, f.cur, f.len) != 0)
      fail_stream(s, XCM_ENOMEM);
  }
  if (s->closing || s->ended) {
    if (s->in != NULL)
      s->in->plain.len = s->in->mid.len = s->in->raw.len = 0;
  }
  in_trim(s);
}

/* TLS's input: waiting raw bytes first, then the current read's. */
static size_t tls_recv(void *ud, char *buf, size_t len) {
  xcm_stream *s = ud;
  frame *f = pumping != NULL && pumping->s == s ? pumping : NULL;
  size_t n;

  if (s->in != NULL && s->in->raw.len != 0) {
    n = s->in->raw.len < len ? s->in->raw.len : len;
    memcpy(buf, s->in->raw.data, n);
    xcm__buf_consume(&s->in->raw, n);
    return n;
  }
  if (f == NULL || f->len == 0)
    return 0;
  n = f->len < len ? f->len : len;
  memcpy(buf, f->cur, n);
  f->cur += n;
  f->len -= n;
  return n;
}

/* TLS's output: records go to the socket buffer, behind anything queued
 * in clear before TLS started. */
static int tls_send(void *ud, const char *data, size_t len) {
  xcm_stream *s = ud;
  int err = out_get(s);

  if (err == 0)
    err = xcm__buf_append(&s->out->wire, data, len);
  if (err != 0)
    return err;
  if (!s->flushing)
    schedule_flush(s);
  return 0;
}

/* Input to pump on resume: waiting bytes, bytes inside mbedTLS, or a
 * handshake that a paused client has yet to begin. */
static int has_waiting_input(const xcm_stream *s) {
  return (s->in != NULL && in_len(s->in) != 0) ||
         (s->zlib != NULL && xcm__zlib_inflate_held(s->zlib)) ||
         (s->tls != NULL && (!tls_ready(s) || xcm__tls_has_pending(s->tls)));
}

/* ---- input from the socket ----------------------------------------- */

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

  if (nread > 0)
    pump(s, buf->base, (size_t)nread);
  else if (nread < 0)
    report_end(s, nread == UV_ENOBUFS ? XCM_ENOMEM : (int)nread);
  release_buf(s->ctx, buf);
}

static int start_reading(xcm_stream *s) {
  if (s->paused || s->ended || s->closing || s->connecting || s->tcp == NULL ||
      s->move != NULL || s->moved_in)
    return 0;
  return uv_read_start((uv_stream_t *)s->tcp, alloc_cb, read_cb);
}

void xcm__stream_pause(xcm_stream *s) {
  if (s->paused)
    return;
  s->paused = 1;
  if (!s->connecting && !s->closing && s->tcp != NULL)
    uv_read_stop((uv_stream_t *)s->tcp);
}

void xcm__stream_resume(xcm_stream *s) {
  int err;

  if (!s->paused)
    return;
  s->paused = 0;
  err = start_reading(s);
  if (err != 0) {
    report_end(s, err);
    return;
  }
  /* What waited is pumped by the flusher, not here: resume may be called
   * from another stream's read callback, with the shared buffers lent. */
  if (has_waiting_input(s)) {
    s->need_pump = 1;
    schedule_flush(s);
  }
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
  destroy(h->data);
}

static void destroy(xcm_stream *s) {
  const xcm_allocator *a = salloc(s);

  unlink_flush(s);
  if (!s->quiet)
    s->cb->closed(s->ud);
  /* uv_close has run every write callback by now. */
  if (s->out != NULL)
    out_free(s);
  if (s->in != NULL) {
    in_free(s->in);
    xcm__free(a, s->in);
  }
  xcm__stream_moved_free(s->move);
  xcm__tls_free(s->tls);
  xcm__zlib_free(s->zlib);
  xcm__free(a, s->tcp);
  xcm__free(a, s->ops);
  xcm__free(a, s);
}

int xcm__stream_custom(xcm_stream **out, xcm_ctx *ctx, const xcm_transport *t,
                       const char *peer, const xcm_stream_cb *cb, void *ud,
                       const xcm_stream_limits *limits) {
  size_t plen = peer != NULL ? strlen(peer) : 0;
  xcm_stream *s;

  *out = NULL;
  if (t == NULL || t->write == NULL || t->close == NULL)
    return XCM_EINVAL;
  s = stream_new(ctx, NULL, cb, ud, limits);
  if (s == NULL)
    return XCM_ENOMEM;
  s->ops = xcm__alloc(ctx->alloc, sizeof(*s->ops) + plen + 1);
  if (s->ops == NULL) {
    xcm__free(ctx->alloc, s);
    return XCM_ENOMEM;
  }
  *s->ops = *t;
  memcpy(s->ops + 1, plen ? peer : "", plen + 1);
  *out = s;
  return 0;
}

void xcm__stream_input(xcm_stream *s, const char *data, size_t len) {
  if (s->ops == NULL || s->closing || s->ended || len == 0)
    return;
  pump(s, data, len);
}

void xcm__stream_writable(xcm_stream *s) {
  if (s->ops == NULL || !s->blocked)
    return;
  s->blocked = 0;
  if (s->out != NULL && s->out->wire.len != 0)
    schedule_flush(s);
}

void xcm__stream_input_end(xcm_stream *s) {
  if (s->ops != NULL)
    report_end(s, UV_EOF);
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

  if (s->ops != NULL) {
    if (s->custom_closed)
      return;
    s->custom_closed = 1;
    s->ops->close(s->ops->ud);
    schedule_flush(s);
    return;
  }
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

/* A close cancels a move under way without a word (only cb.closed
 * follows a close). */
static void move_cancel(xcm_stream *s) {
  xcm__stream_moved_free(s->move);
  s->move = NULL;
}

void xcm__stream_close(xcm_stream *s) {
  if (s->closing)
    return;
  s->closing = 1;
  move_cancel(s);
  if (!s->connecting && s->tcp != NULL)
    uv_read_stop((uv_stream_t *)s->tcp);
  /* Plaintext written before the handshake ended can never be sent. */
  if (s->tls != NULL && !tls_ready(s) && s->out != NULL)
    s->out->app.len = 0;
  if (all_sent(s) || s->connecting || s->failed)
    finish_close(s);
  else
    schedule_flush(s);
}

void xcm__stream_drop(xcm_stream *s) {
  s->no_reset = 1;
  xcm__stream_abort(s);
}

void xcm__stream_abort(xcm_stream *s) {
  uv_handle_t *h = (uv_handle_t *)s->tcp;

  if (s->ops != NULL) {
    s->closing = 1;
    s->failed = 1;
    if (s->out != NULL)
      s->out->app.len = s->out->wire.len = 0;
    finish_close(s);
    return;
  }
  s->closing = 1;
  move_cancel(s);
  if (uv_is_closing(h))
    return;
  unlink_flush(s);
  /* A reset tells the peer that what it may still be waiting for will
   * not come. It cannot follow a shutdown; a plain close then. */
  if (s->shutting || s->connecting || s->no_reset ||
      uv_tcp_close_reset(s->tcp, close_cb) != 0)
    uv_close(h, close_cb);
}

/* ---- queries ------------------------------------------------------- */

int xcm__stream_is_tls(const xcm_stream *s) {
  return s->tls != NULL;
}

int xcm__stream_is_zlib(const xcm_stream *s) {
  return s->zlib != NULL;
}

const char *xcm__stream_alpn(const xcm_stream *s) {
  return s->tls != NULL ? xcm__tls_alpn(s->tls) : NULL;
}

int xcm__stream_tls_refused(const xcm_stream *s) {
  return s->tls != NULL && xcm__tls_refused(s->tls);
}

const char *xcm__stream_peer(const xcm_stream *s) {
  static _Thread_local char text[INET6_ADDRSTRLEN];
  struct sockaddr_storage ss;
  const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)&ss;
  struct sockaddr_in a4;
  int len = sizeof ss;

  text[0] = '\0';
  if (s->peer_name != NULL)
    return s->peer_name;
  if (s->ops != NULL)
    return (const char *)(s->ops + 1);
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
  size_t n = sizeof(*s) + (s->tcp != NULL ? sizeof(*s->tcp) : sizeof(*s->ops));
  const out_state *o = s->out;

  if (o != NULL) {
    n += sizeof(*o) + o->app.cap + o->wire.cap + o->recs_cap * sizeof(*o->recs);
    if (o->inflight != NULL)
      n += sizeof(*o->inflight) + o->inflight_cap;
  }
  if (s->in != NULL)
    n += sizeof(*s->in) + s->in->plain.cap + s->in->mid.cap + s->in->raw.cap;
  if (s->tls != NULL)
    n += xcm__tls_footprint(s->tls);
  if (s->zlib != NULL)
    n += xcm__zlib_footprint(s->zlib);
  return n;
}

/* ---- starting layers ----------------------------------------------- */

/* Early bytes are pumped at once when a read of this stream is being
 * handled (the pump carries on with the new layer when cb.read returns),
 * else by the flusher: this may run inside another stream's read, whose
 * bytes sit in the shared buffers. */
static void pump_soon(xcm_stream *s) {
  if (pumping != NULL && pumping->s == s)
    return;
  s->need_pump = 1;
  schedule_flush(s);
}

int xcm__stream_start_tls(xcm_stream *s, xcm_tls_config *cfg, int is_server,
                          const char *hostname, const char *early,
                          size_t early_len) {
  int err;

  if (s->closing || s->failed)
    return XCM_ECLOSED;
  /* XEP-0138 compresses inside TLS, never the other way round. */
  if (cfg == NULL || s->tls != NULL || s->zlib != NULL || s->move != NULL)
    return XCM_EINVAL;
  err = xcm__tls_new(&s->tls, cfg, is_server, hostname, tls_send, tls_recv, s);
  if (err != 0)
    return err;
  /* Bytes queued so far are in wire already: they go out in clear. */
  err = keep_input(s, 0, early, early_len);
  if (err != 0) {
    xcm__tls_free(s->tls);
    s->tls = NULL;
    return err;
  }
  pump_soon(s);
  return 0;
}

int xcm__stream_start_zlib(xcm_stream *s, const char *early, size_t early_len) {
  int err;

  if (s->closing || s->failed)
    return XCM_ECLOSED;
  if (s->zlib != NULL || (s->tls != NULL && !tls_ready(s)) || s->move != NULL)
    return XCM_EINVAL;
  /* What was written before (the <compressed/>) goes out uncompressed,
   * encrypted if TLS is on. */
  err = encode(s);
  if (err != 0)
    return err;
  err = xcm__zlib_new(&s->zlib, salloc(s));
  if (err != 0)
    return err;
  if (early_len > 0) {
    err = keep_input(s, 1, early, early_len);
    if (err != 0)
      return err;
    pump_soon(s);
  }
  return 0;
}

void xcm__stream_set_peer(xcm_stream *s, const char *name) {
  s->peer_name = name;
}

void xcm__stream_set_water(xcm_stream *s, size_t high_water, size_t low_water) {
  s->limits.high_water = high_water;
  s->limits.low_water = low_water;
  s->over = high_water != 0 && queued(s) > high_water;
}

void xcm__stream_set_cb(xcm_stream *s, const xcm_stream_cb *cb, void *ud) {
  s->cb = cb;
  s->ud = ud;
}

/* ---- moving to another context ------------------------------------- */

static xcm_stream_moved *moved_new(const xcm_allocator *a) {
  xcm_stream_moved *m = xcm__calloc(a, sizeof(*m));

  if (m == NULL)
    return NULL;
  m->alloc = a;
  m->fd = -1;
  xcm__buf_init(&m->in.plain, a);
  xcm__buf_init(&m->in.mid, a);
  xcm__buf_init(&m->in.raw, a);
  return m;
}

void xcm__stream_moved_free(xcm_stream_moved *m) {
  if (m == NULL)
    return;
  if (m->fd >= 0)
    close(m->fd);
  xcm__tls_free(m->tls);
  xcm__zlib_free(m->zlib);
  in_free(&m->in);
  xcm__free(m->alloc, m);
}

size_t xcm__stream_moved_input(const xcm_stream_moved *m) {
  return in_len(&m->in);
}

/* Move a buffer's bytes to another owner, whose allocator frees them. */
static void buf_take(xcm_buf *to, xcm_buf *from, const xcm_allocator *a) {
  *to = *from;
  to->alloc = a;
  xcm__buf_init(from, from->alloc);
}

int xcm__stream_move_out(xcm_stream *s, const char *unread, size_t unread_len,
                         xcm_stream_moved_fn done, void *ud) {
  xcm_stream_moved *m;
  int err;

  if (s->tcp == NULL || s->connecting || s->move != NULL || done == NULL ||
      (s->tls != NULL && !tls_ready(s)))
    return XCM_EINVAL;
  if (s->closing || s->ended || s->failed)
    return XCM_ECLOSED;
  m = moved_new(salloc(s));
  if (m == NULL)
    return XCM_ENOMEM;
  /* unread first: the owner was given it, while the stream's own
   * plaintext (from a move in, not yet pumped) never was. */
  err = xcm__buf_append(&m->in.plain, unread, unread_len);
  if (err == 0 && s->in != NULL)
    err = xcm__buf_append(&m->in.plain, s->in->plain.data, s->in->plain.len);
  if (err != 0) {
    xcm__stream_moved_free(m);
    return err;
  }
  if (s->in != NULL) {
    xcm__buf_free(&s->in->plain);
    in_trim(s);
  }
  m->done = done;
  m->ud = ud;
  s->move = m;
  uv_read_stop((uv_stream_t *)s->tcp);
  /* The flusher sends what is queued and makes the package once the
   * kernel has it all: at once if nothing is queued. */
  schedule_flush(s);
  return 0;
}

/* Everything written is with the kernel: package what is left and let
 * the handle go. Closing our descriptor sends nothing while the dup
 * holds the socket open, and libuv takes it out of this loop's epoll
 * set before closing it. */
static void move_finish(xcm_stream *s) {
  xcm_stream_moved *m = s->move;
  xcm_stream_moved_fn done = m->done;
  void *ud = m->ud;
  uv_os_fd_t fd;
  int err;

  err = uv_fileno((uv_handle_t *)s->tcp, &fd);
  if (err == 0) {
    m->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (m->fd < 0)
      err = uv_translate_sys_error(errno);
  }
  if (err != 0) {
    report_end(s, err);
    return;
  }
  s->move = NULL;
  m->done = NULL;
  m->ud = NULL;
  if (s->in != NULL) {
    buf_take(&m->in.mid, &s->in->mid, m->alloc);
    buf_take(&m->in.raw, &s->in->raw, m->alloc);
    in_trim(s);
  }
  m->tls = s->tls;
  s->tls = NULL;
  if (m->tls != NULL)
    xcm__tls_set_io(m->tls, NULL, NULL, NULL);
  m->zlib = s->zlib;
  s->zlib = NULL;
  s->closing = 1;
  unlink_flush(s);
  uv_close((uv_handle_t *)s->tcp, close_cb);
  done(ud, m, 0);
}

/* Not from inside a pump of s: the rest of its read is yet to be kept. A
 * write still in flight is with the kernel once its callback ran. */
static void move_finish_if_sent(xcm_stream *s) {
  if (s->move == NULL || s->closing || s->failed || queued(s) != 0 ||
      (s->out != NULL && s->out->inflight != NULL) ||
      (pumping != NULL && pumping->s == s))
    return;
  move_finish(s);
}

static void move_failed(xcm_stream *s, int err) {
  xcm_stream_moved *m = s->move;
  xcm_stream_moved_fn done = m->done;
  void *ud = m->ud;

  s->move = NULL;
  xcm__stream_moved_free(m);
  done(ud, NULL, err);
}

/* The package's state becomes the stream's; the package itself is
 * freed. Only the input state is allocated, first, so that a failure
 * leaves the package whole. */
static int moved_attach(xcm_stream *s, xcm_stream_moved *m) {
  if (in_len(&m->in) != 0) {
    if (in_get(s) != 0)
      return XCM_ENOMEM;
    buf_take(&s->in->plain, &m->in.plain, salloc(s));
    buf_take(&s->in->mid, &m->in.mid, salloc(s));
    buf_take(&s->in->raw, &m->in.raw, salloc(s));
  }
  s->tls = m->tls;
  m->tls = NULL;
  if (s->tls != NULL)
    xcm__tls_set_io(s->tls, tls_send, tls_recv, s);
  s->zlib = m->zlib;
  m->zlib = NULL;
  if (s->zlib != NULL)
    xcm__zlib_set_alloc(s->zlib, salloc(s));
  m->fd = -1;
  xcm__stream_moved_free(m);
  return 0;
}

int xcm__stream_move_in(xcm_stream **out, xcm_ctx *ctx, xcm_stream_moved *m,
                        xcm_tls_config *tls, const xcm_stream_cb *cb, void *ud,
                        const xcm_stream_limits *limits) {
  uv_tcp_t *tcp;
  xcm_stream *s = NULL;
  int fd = m->fd, err = 0;

  *out = NULL;
  if (m->tls != NULL)
    err = xcm__tls_set_config(m->tls, tls);
  tcp = err == 0 ? xcm__alloc(ctx->alloc, sizeof(*tcp)) : NULL;
  if (tcp != NULL)
    s = stream_new(ctx, tcp, cb, ud, limits);
  if (err == 0 && (s == NULL || moved_attach(s, m) != 0))
    err = XCM_ENOMEM;
  if (err != 0) {
    xcm__free(ctx->alloc, s);
    xcm__free(ctx->alloc, tcp);
    xcm__stream_moved_free(m);
    return err;
  }
  /* The stream owns what the package held, and the descriptor. */
  s->quiet = 1;
  err = uv_tcp_init(ctx->loop, tcp);
  if (err != 0) {
    close(fd);
    destroy(s);
    return err;
  }
  tcp->data = s;
  err = uv_tcp_open(tcp, fd);
  if (err != 0) {
    close(fd);
    s->closing = 1;
    uv_close((uv_handle_t *)tcp, close_cb);
    return err;
  }
  s->quiet = 0;
  uv_tcp_nodelay(tcp, 1);
  /* What the package brought goes first, from the flusher; the socket
   * is read after it (flush_one). */
  s->moved_in = 1;
  s->need_pump = 1;
  schedule_flush(s);
  *out = s;
  return 0;
}
