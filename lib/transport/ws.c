/* WebSocket framing over a stream, with wslay's event API.
 *
 * wslay pulls: wslay_event_recv() calls our recv callback until it says
 * "would block". The stream pushes: cb.read lends us a buffer. So a read
 * is parked in (in, in_len), wslay_event_recv() drains it through
 * recv_cb, and whatever is left when it returns (we were paused) is
 * copied to `held` and fed later from the timer. Sends never block:
 * send_cb copies into the stream's output, so wslay's own queues are
 * empty whenever none of its calls is running. Each text message's
 * payload goes in as a stream record: when the connection is lost, the
 * messages no byte of which reached the kernel are given back to the
 * owner (cb.unsent) rather than lost with the queue.
 *
 * Messages are reassembled here, not in wslay (no-buffering mode): the
 * buffer comes from the context's allocator, is sized from the frame
 * headers (so a message over max_message is refused before its bytes
 * are kept), and is freed when the connection goes quiet.
 *
 * Idle: when every byte fed to wslay belongs to a frame it has finished
 * and no message is half read, wslay's context is in the state of a new
 * one, so it is freed and made again on the next byte. Frame sizes are
 * counted from the headers wslay reports (it refuses non-minimal length
 * encodings, and a server's frames are always masked), so a header cut
 * off inside wslay's buffer keeps the context alive. */
#include "transport/ws.h"

#include <string.h>
#include <wslay/wslay.h>

#include "util/alloc.h"
#include "xcm/error.h"

#define DEFAULT_MAX_MESSAGE 65536
#define DEFAULT_CLOSE_MS 5000

struct xcm_ws {
  xcm_ctx *ctx;
  xcm_stream *s; /* NULL once closed */
  const xcm_ws_cb *cb;
  void *ud;
  xcm_ws_limits lim;
  wslay_event_context_ptr wc; /* NULL while idle */
  const char *in;             /* the read wslay is pulling from */
  size_t in_len;
  xcm_buf held;      /* read but not fed yet: early bytes, a paused read */
  xcm_buf msg;       /* the text message being reassembled */
  xcm_buf later;     /* whole messages read while paused: size_t, bytes */
  uint64_t fed;      /* bytes handed to wslay since wc was made */
  uint64_t framed;   /* bytes of the frames whose headers wslay read */
  uv_timer_t *timer; /* feeding later, close timeout; only while needed */
  uint64_t deadline; /* loop time when closing gives up; 0: none */
  size_t rec_len;    /* the payload send_cb is to write as a record */
  int write_err;     /* the stream refused a write */
  int end_err;       /* what end will say, once later is delivered */
  unsigned end_status;
  unsigned violation;   /* the status we closed with for a broken rule */
  unsigned peer_status; /* the peer's Close */
  unsigned cur_op : 4;  /* opcode of the frame being read */
  unsigned in_msg : 1;  /* a text message is under way */
  unsigned in_recv : 1; /* inside wslay_event_recv */
  unsigned paused : 1;
  unsigned owner_closing : 1; /* xcm__ws_close was called */
  unsigned peer_closed : 1;   /* the peer's Close arrived */
  unsigned end_owed : 1;      /* end is to be reported */
  unsigned ended : 1;         /* end reported, or must not be */
  unsigned s_closing : 1;     /* xcm__stream_close or drop called */
  unsigned feeding : 1;       /* feed_later is running */
  unsigned timer_closing : 1; /* the timer handle is being closed */
  unsigned rec_header : 1;    /* send_cb saw the header of rec_len's frame */
  unsigned taken : 1;         /* unsent messages handed back: none goes out */
  unsigned dropped : 1;       /* xcm__stream_drop called */
};

static const xcm_allocator *walloc(const xcm_ws *ws) {
  return ws->ctx->alloc;
}

/* ---- wslay callbacks ------------------------------------------------- */

static ssize_t recv_cb(wslay_event_context_ptr wc, uint8_t *buf, size_t len,
                       int flags, void *ud) {
  xcm_ws *ws = ud;
  size_t n = len < ws->in_len ? len : ws->in_len;

  (void)flags;
  if (ws->paused || n == 0) {
    wslay_event_set_error(wc, WSLAY_ERR_WOULDBLOCK);
    return -1;
  }
  memcpy(buf, ws->in, n);
  ws->in += n;
  ws->in_len -= n;
  ws->fed += n;
  return (ssize_t)n;
}

/* A text message's payload is written as a stream record, so that it
 * can be taken back while no byte of it reached the kernel
 * (xcm__ws_take_unsent). wslay hands a frame over as its header (with
 * WSLAY_MSG_MORE) and then its payload in one piece; anything else
 * (control frames, a payload cut in two) is written as plain bytes. */
static ssize_t send_cb(wslay_event_context_ptr wc, const uint8_t *data,
                       size_t len, int flags, void *ud) {
  xcm_ws *ws = ud;
  int record = 0, err;

  if (ws->rec_len != 0) {
    if (!ws->rec_header && (flags & WSLAY_MSG_MORE)) {
      ws->rec_header = 1;
    } else {
      record = ws->rec_header && len == ws->rec_len;
      ws->rec_len = 0;
      ws->rec_header = 0;
    }
  }
  if (ws->s == NULL || ws->s_closing || ws->taken)
    err = XCM_ECLOSED;
  else if (record)
    err = xcm__stream_write_record(ws->s, data, len);
  else
    err = xcm__stream_write(ws->s, data, len);
  if (err != 0) {
    ws->write_err = err;
    wslay_event_set_error(wc, WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
  }
  return (ssize_t)len;
}

/* Refuse what the peer sent with status and read nothing more. */
static void violate(xcm_ws *ws, unsigned status) {
  if (ws->violation == 0)
    ws->violation = status;
  (void)wslay_event_queue_close(ws->wc, (uint16_t)status, NULL, 0);
  wslay_event_shutdown_read(ws->wc);
}

/* Bytes of a client frame's header: RFC 6455 5.2, lengths encoded in
 * the fewest bytes (wslay refuses others) and a masking key. */
static uint64_t header_len(uint64_t payload) {
  return 2 + (payload < 126 ? 0 : payload < 65536 ? 2 : 8) + 4;
}

static void frame_start_cb(wslay_event_context_ptr wc,
                           const struct wslay_event_on_frame_recv_start_arg *a,
                           void *ud) {
  xcm_ws *ws = ud;

  (void)wc;
  ws->framed += header_len(a->payload_length) + a->payload_length;
  ws->cur_op = a->opcode & 0xf;
  if (ws->violation != 0)
    return;
  if (a->opcode == WSLAY_BINARY_FRAME) {
    violate(ws, XCM_WS_UNSUPPORTED_DATA); /* RFC 7395 3.2: text only */
    return;
  }
  if (a->opcode != WSLAY_TEXT_FRAME && a->opcode != WSLAY_CONTINUATION_FRAME)
    return;
  if (a->opcode == WSLAY_TEXT_FRAME) {
    ws->in_msg = 1;
    ws->msg.len = 0;
  }
  /* wslay checks each frame (no-buffering mode); the sum is ours. */
  if (a->payload_length > ws->lim.max_message - ws->msg.len) {
    violate(ws, XCM_WS_TOO_BIG);
    return;
  }
  if (xcm__buf_reserve(&ws->msg, (size_t)a->payload_length) != 0)
    violate(ws, XCM_WS_INTERNAL);
}

static void frame_chunk_cb(wslay_event_context_ptr wc,
                           const struct wslay_event_on_frame_recv_chunk_arg *a,
                           void *ud) {
  xcm_ws *ws = ud;

  (void)wc;
  if (ws->violation != 0 || (ws->cur_op != WSLAY_TEXT_FRAME &&
                             ws->cur_op != WSLAY_CONTINUATION_FRAME))
    return;
  /* Room was reserved from the header: this cannot fail. */
  if (xcm__buf_append(&ws->msg, a->data, a->data_length) != 0)
    violate(ws, XCM_WS_INTERNAL);
}

static void keep_later(xcm_ws *ws) {
  size_t n = ws->msg.len;

  if (xcm__buf_reserve(&ws->later, sizeof n + n) != 0) {
    violate(ws, XCM_WS_INTERNAL);
    return;
  }
  (void)xcm__buf_append(&ws->later, &n, sizeof n);
  (void)xcm__buf_append(&ws->later, ws->msg.data, n);
}

static void flush(xcm_ws *ws);

static void msg_cb(wslay_event_context_ptr wc,
                   const struct wslay_event_on_msg_recv_arg *a, void *ud) {
  xcm_ws *ws = ud;

  (void)wc;
  switch (a->opcode) {
  case WSLAY_TEXT_FRAME:
    ws->in_msg = 0;
    if (ws->violation != 0 || ws->owner_closing || ws->ended) {
      ws->msg.len = 0;
      break;
    }
    if (ws->paused || ws->later.len > 0)
      keep_later(ws);
    else
      ws->cb->message(ws->ud, ws->msg.data != NULL ? ws->msg.data : "",
                      ws->msg.len);
    ws->msg.len = 0;
    break;
  case WSLAY_CONNECTION_CLOSE:
    ws->peer_closed = 1;
    ws->peer_status = a->status_code != 0 ? a->status_code : XCM_WS_NO_STATUS;
    break;
  default: /* a ping's pong is queued by wslay; a pong needs nothing */
    break;
  }
  /* Send the pong, the answering Close, and what the callee sent, now:
   * wslay sends a queued Close before anything else. */
  flush(ws);
}

static const struct wslay_event_callbacks wslay_cbs = {
    recv_cb, send_cb, NULL, frame_start_cb, frame_chunk_cb, NULL, msg_cb};

/* ---- the context, made on demand ------------------------------------ */

static int ensure_wc(xcm_ws *ws) {
  if (ws->wc != NULL)
    return 0;
  if (wslay_event_context_server_init(&ws->wc, &wslay_cbs, ws) != 0) {
    ws->wc = NULL;
    return XCM_ENOMEM;
  }
  wslay_event_config_set_no_buffering(ws->wc, 1);
  wslay_event_config_set_max_recv_msg_length(ws->wc, ws->lim.max_message);
  ws->fed = ws->framed = 0;
  return 0;
}

/* Between messages with nothing half read or queued: give it all back. */
static void maybe_release(xcm_ws *ws) {
  if (ws->in_recv)
    return;
  if (!ws->in_msg && ws->msg.len == 0)
    xcm__buf_free(&ws->msg);
  if (ws->held.len == 0)
    xcm__buf_free(&ws->held);
  if (ws->later.len == 0)
    xcm__buf_free(&ws->later);
  if (ws->wc == NULL || ws->in_msg || ws->fed != ws->framed ||
      ws->owner_closing || ws->peer_closed || ws->violation != 0 || ws->ended ||
      wslay_event_get_queued_msg_count(ws->wc) != 0)
    return;
  wslay_event_context_free(ws->wc);
  ws->wc = NULL;
}

/* ---- closing ------------------------------------------------------- */

static void rearm(xcm_ws *ws);

/* Close without sending what is queued: what the kernel holds still
 * reaches a peer that reads. */
static void drop_stream(xcm_ws *ws) {
  ws->s_closing = 1;
  if (ws->s != NULL && !ws->dropped) {
    ws->dropped = 1;
    xcm__stream_drop(ws->s);
  }
}

static void close_stream(xcm_ws *ws) {
  if (ws->taken) {
    /* What is queued was given back: it must not go out as well. */
    drop_stream(ws);
    return;
  }
  if (ws->s_closing || ws->s == NULL)
    return;
  ws->s_closing = 1;
  if (ws->deadline == 0)
    ws->deadline = uv_now(ws->ctx->loop) + ws->lim.close_timeout_ms;
  xcm__stream_close(ws->s);
  rearm(ws);
}

static void give_back(void *ud, const char *data, size_t len) {
  xcm_ws *ws = ud;

  ws->cb->unsent(ws->ud, data, len);
}

/* The connection is lost with messages still queued: give the owner
 * back, oldest first, every one of which no byte reached the kernel
 * (the stream kept each payload as a record; a message partly written
 * is the kernel's, as on TCP). From then on nothing queued goes out
 * (the stream is dropped, not flushed), so no message given back can
 * also reach the peer. Not once the owner closed or heard the end:
 * then there is no one to give them to, and the queue is flushed as
 * before. */
static void take_back(xcm_ws *ws) {
  if (ws->taken || ws->owner_closing || ws->ended)
    return;
  ws->taken = 1;
  if (ws->s != NULL && ws->cb->unsent != NULL)
    (void)xcm__stream_unsent_records(ws->s, give_back, ws);
}

/* Report end (once, and not after the owner's close) and close. */
static void finish(xcm_ws *ws, int err, unsigned status) {
  if (!ws->ended && !ws->owner_closing) {
    ws->ended = 1;
    ws->cb->end(ws->ud, err, status);
  }
  ws->ended = 1;
  close_stream(ws);
}

/* Report it once the messages read before it are delivered. */
static void owe_end(xcm_ws *ws, int err, unsigned status) {
  if (ws->end_owed || ws->ended)
    return;
  ws->end_owed = 1;
  ws->end_err = err;
  ws->end_status = status;
  /* An owner that stays paused does not hold the connection open. */
  if (ws->deadline == 0) {
    ws->deadline = uv_now(ws->ctx->loop) + ws->lim.close_timeout_ms;
    rearm(ws);
  }
}

static void settle(xcm_ws *ws) {
  if (ws->end_owed && (ws->later.len == 0 || ws->owner_closing)) {
    ws->end_owed = 0;
    finish(ws, ws->end_err, ws->end_status);
  }
}

static void flush(xcm_ws *ws) {
  if (ws->wc == NULL || ws->ended || ws->taken)
    return;
  if (wslay_event_send(ws->wc) != 0) {
    int err = ws->write_err != 0 ? ws->write_err : XCM_ENOMEM;

    /* The stream is full or gone: nothing more can reach the peer. */
    owe_end(ws, err, XCM_WS_ABNORMAL);
    ws->later.len = 0;
  }
}

/* wslay's frame layer found a broken header (a control frame over 125
 * bytes or fragmented, a length not in its shortest form): it queued an
 * empty Close and gave up. Nothing else is queued (flush runs after
 * every message), so a new context sends the Close with its code. */
static void frame_error(xcm_ws *ws) {
  wslay_event_context_free(ws->wc);
  ws->wc = NULL;
  if (ensure_wc(ws) != 0) {
    owe_end(ws, XCM_ENOMEM, XCM_WS_ABNORMAL);
    return;
  }
  ws->violation = XCM_WS_PROTOCOL_ERROR;
  if (!ws->owner_closing)
    violate(ws, XCM_WS_PROTOCOL_ERROR);
  wslay_event_shutdown_read(ws->wc);
  flush(ws);
}

/* After wslay read: answer what it saw. */
static void after_recv(xcm_ws *ws, int r) {
  if (r == WSLAY_ERR_CALLBACK_FAILURE)
    frame_error(ws);
  else if (r != 0)
    violate(ws, XCM_WS_INTERNAL); /* out of memory inside wslay */
  flush(ws);
  if (ws->wc == NULL)
    return; /* out of memory: owed already */
  if (ws->peer_closed) {
    owe_end(ws, 0, ws->peer_status);
  } else if (!wslay_event_get_read_enabled(ws->wc)) {
    unsigned st = ws->violation;

    if (st == 0)
      st = wslay_event_get_status_code_sent(ws->wc);
    owe_end(ws, st == XCM_WS_TOO_BIG ? XCM_ELIMIT : XCM_EPROTO, st);
  }
}

/* Hand len bytes to wslay; keep what it did not take (paused). Bytes
 * from held are taken out of it; bytes that can no longer be read (the
 * connection is ending) are dropped. */
static void feed(xcm_ws *ws, const char *data, size_t len, int from_held) {
  size_t left = 0;
  int r;

  if (len == 0 || ws->s_closing || ws->ended || ws->end_owed)
    goto done;
  if (ensure_wc(ws) != 0) {
    owe_end(ws, XCM_ENOMEM, XCM_WS_ABNORMAL);
    goto done;
  }
  if (!wslay_event_get_read_enabled(ws->wc))
    goto done; /* our Close is out; waiting for the stream to close */
  ws->in = data;
  ws->in_len = len;
  ws->in_recv = 1;
  r = wslay_event_recv(ws->wc);
  ws->in_recv = 0;
  after_recv(ws, r);
  if (!ws->end_owed && !ws->ended)
    left = ws->in_len;
  ws->in = NULL;
  ws->in_len = 0;
  if (from_held)
    xcm__buf_consume(&ws->held, len - left);
  else if (left > 0 && xcm__buf_append(&ws->held, data + len - left, left) != 0)
    owe_end(ws, XCM_ENOMEM, XCM_WS_ABNORMAL);
done:
  if (from_held && left == 0)
    ws->held.len = 0;
  settle(ws);
  maybe_release(ws);
  rearm(ws);
}

/* ---- the timer: feeding after resume, and the close timeout --------- */

static void timer_closed(uv_handle_t *h);
static void release(xcm_ws *ws);

/* Deliver messages kept while paused, then bytes not fed yet. */
static void feed_later(xcm_ws *ws) {
  size_t off = 0;

  ws->feeding = 1;
  while (off < ws->later.len && !ws->paused && !ws->owner_closing &&
         !ws->ended) {
    size_t n;

    memcpy(&n, ws->later.data + off, sizeof n);
    off += sizeof n;
    ws->cb->message(ws->ud, ws->later.data + off, n);
    off += n;
  }
  if (ws->owner_closing || ws->ended)
    off = ws->later.len;
  xcm__buf_consume(&ws->later, off);
  ws->feeding = 0;
  settle(ws);
  if (ws->later.len == 0 && ws->held.len > 0 && !ws->paused)
    feed(ws, ws->held.data, ws->held.len, 1);
  else {
    maybe_release(ws);
    rearm(ws);
  }
}

static void timer_cb(uv_timer_t *t) {
  xcm_ws *ws = t->data;

  if (ws->deadline != 0 && uv_now(ws->ctx->loop) >= ws->deadline) {
    ws->deadline = 0;
    if (ws->end_owed) {
      /* Still paused: what was kept for it goes with the connection,
       * and what waits to be sent goes back first. */
      ws->later.len = 0;
      take_back(ws);
      settle(ws);
    }
    /* The peer did not answer our Close, or does not read: cut. */
    drop_stream(ws);
    return; /* stream closed: s_closed releases the timer */
  }
  feed_later(ws);
}

static int want_feed(const xcm_ws *ws) {
  return (ws->later.len > 0 || ws->held.len > 0) && !ws->paused &&
         !ws->s_closing && !ws->feeding;
}

static void rearm(xcm_ws *ws) {
  uint64_t now, ms;

  if (ws->timer_closing)
    return;
  if (!want_feed(ws) && ws->deadline == 0) {
    if (ws->timer != NULL) {
      ws->timer_closing = 1;
      uv_close((uv_handle_t *)ws->timer, timer_closed);
    }
    return;
  }
  if (ws->timer == NULL) {
    ws->timer = xcm__alloc(walloc(ws), sizeof(*ws->timer));
    if (ws->timer == NULL) {
      /* Without a timer there is no timeout: cut now. */
      if (ws->s != NULL && !ws->s_closing) {
        ws->s_closing = 1;
        xcm__stream_abort(ws->s);
      }
      return;
    }
    uv_timer_init(ws->ctx->loop, ws->timer);
    ws->timer->data = ws;
  }
  now = uv_now(ws->ctx->loop);
  ms = want_feed(ws) ? 0 : ws->deadline > now ? ws->deadline - now : 0;
  uv_timer_start(ws->timer, timer_cb, ms, 0);
}

static void timer_closed(uv_handle_t *h) {
  xcm_ws *ws = h->data;

  xcm__free(walloc(ws), ws->timer);
  ws->timer = NULL;
  ws->timer_closing = 0;
  if (ws->s == NULL)
    release(ws);
  else
    rearm(ws); /* wanted again while it was closing */
}

static void release(xcm_ws *ws) {
  const xcm_ws_cb *cb = ws->cb;
  void *ud = ws->ud;

  if (ws->wc != NULL)
    wslay_event_context_free(ws->wc);
  xcm__buf_free(&ws->held);
  xcm__buf_free(&ws->msg);
  xcm__buf_free(&ws->later);
  xcm__free(walloc(ws), ws);
  cb->closed(ud);
}

/* ---- stream callbacks ----------------------------------------------- */

static void s_read(void *ud, const char *data, size_t len) {
  xcm_ws *ws = ud;

  if (ws->held.len > 0 || ws->later.len > 0) {
    /* Older bytes wait: keep the order. */
    if (xcm__buf_append(&ws->held, data, len) != 0) {
      owe_end(ws, XCM_ENOMEM, XCM_WS_ABNORMAL);
      settle(ws);
    }
    rearm(ws);
    return;
  }
  feed(ws, data, len, 0);
}

static void s_end(void *ud, int err) {
  xcm_ws *ws = ud;

  /* Messages kept while paused are dropped with the connection; what
   * was never written goes back to the owner before it hears the end. */
  ws->later.len = 0;
  ws->held.len = 0;
  take_back(ws);
  if (!ws->end_owed)
    owe_end(ws, err, XCM_WS_ABNORMAL);
  settle(ws);
}

static void s_drain(void *ud) {
  xcm_ws *ws = ud;

  if (ws->cb->drain != NULL && !ws->ended && !ws->owner_closing)
    ws->cb->drain(ws->ud);
}

static void s_closed(void *ud) {
  xcm_ws *ws = ud;

  ws->s = NULL;
  ws->s_closing = 1;
  ws->deadline = 0;
  if (ws->timer != NULL) {
    if (!ws->timer_closing) {
      ws->timer_closing = 1;
      uv_close((uv_handle_t *)ws->timer, timer_closed);
    }
    return;
  }
  release(ws);
}

static const xcm_stream_cb stream_cbs = {s_read, s_end, NULL, s_drain,
                                         s_closed};

/* ---- the API -------------------------------------------------------- */

int xcm__ws_new(xcm_ws **out, xcm_ctx *ctx, xcm_stream *s, const char *early,
                size_t early_len, const xcm_ws_limits *lim, const xcm_ws_cb *cb,
                void *ud) {
  xcm_ws *ws = xcm__calloc(ctx->alloc, sizeof(*ws));

  *out = NULL;
  if (ws == NULL)
    return XCM_ENOMEM;
  ws->ctx = ctx;
  ws->s = s;
  ws->cb = cb;
  ws->ud = ud;
  if (lim != NULL)
    ws->lim = *lim;
  if (ws->lim.max_message == 0)
    ws->lim.max_message = DEFAULT_MAX_MESSAGE;
  if (ws->lim.close_timeout_ms == 0)
    ws->lim.close_timeout_ms = DEFAULT_CLOSE_MS;
  xcm__buf_init(&ws->held, ctx->alloc);
  xcm__buf_init(&ws->msg, ctx->alloc);
  xcm__buf_init(&ws->later, ctx->alloc);
  if (early_len > 0 && xcm__buf_append(&ws->held, early, early_len) != 0) {
    xcm__free(ctx->alloc, ws);
    return XCM_ENOMEM;
  }
  xcm__stream_set_water(s, ws->lim.high_water, ws->lim.low_water);
  xcm__stream_set_cb(s, &stream_cbs, ws);
  *out = ws;
  rearm(ws);
  return 0;
}

int xcm__ws_send(xcm_ws *ws, const char *data, size_t len) {
  struct wslay_event_msg m;
  int err;

  if (ws->owner_closing || ws->ended || ws->end_owed || ws->s_closing ||
      ws->taken)
    return XCM_ECLOSED;
  err = ensure_wc(ws);
  if (err != 0)
    return err;
  m.opcode = WSLAY_TEXT_FRAME;
  m.msg = (const uint8_t *)data;
  m.msg_length = len;
  if (wslay_event_queue_msg(ws->wc, &m) != 0) {
    maybe_release(ws);
    return XCM_ENOMEM;
  }
  ws->write_err = 0;
  /* wslay sends queued control frames first; flush runs after every
   * read, so none is queued now and the next frame out is this one. */
  ws->rec_len = len;
  ws->rec_header = 0;
  flush(ws);
  ws->rec_len = 0;
  err = ws->write_err;
  if (!ws->in_recv) {
    settle(ws);
    maybe_release(ws);
  }
  if (err != 0)
    return err;
  return ws->s != NULL && xcm__stream_over(ws->s) ? XCM_EBUSY : 0;
}

void xcm__ws_close(xcm_ws *ws, unsigned status, const char *reason) {
  size_t rlen = reason != NULL ? strlen(reason) : 0;

  if (ws->owner_closing || ws->ended || ws->s_closing)
    return;
  ws->owner_closing = 1;
  ws->later.len = 0;
  if (ws->taken) {
    /* Its queue was given back: no Close can follow it out. */
    drop_stream(ws);
    return;
  }
  if (rlen > 123)
    rlen = 123;
  if (ensure_wc(ws) != 0) {
    close_stream(ws);
    return;
  }
  (void)wslay_event_queue_close(ws->wc, (uint16_t)status,
                                (const uint8_t *)reason, rlen);
  flush(ws);
  ws->deadline = uv_now(ws->ctx->loop) + ws->lim.close_timeout_ms;
  if (ws->peer_closed || ws->end_owed) {
    close_stream(ws);
    return;
  }
  /* Read on, for the peer's Close. */
  if (ws->paused) {
    ws->paused = 0;
    if (ws->s != NULL)
      xcm__stream_resume(ws->s);
  }
  rearm(ws);
}

void xcm__ws_pause(xcm_ws *ws) {
  if (ws->paused || ws->owner_closing)
    return;
  ws->paused = 1;
  if (ws->s != NULL)
    xcm__stream_pause(ws->s);
}

void xcm__ws_resume(xcm_ws *ws) {
  if (!ws->paused)
    return;
  ws->paused = 0;
  if (ws->s != NULL)
    xcm__stream_resume(ws->s);
  rearm(ws);
}

size_t xcm__ws_footprint(const xcm_ws *ws) {
  size_t n = sizeof(*ws) + ws->held.cap + ws->msg.cap + ws->later.cap;

  if (ws->wc != NULL)
    n += XCM_WS_WSLAY_BYTES;
  if (ws->timer != NULL)
    n += sizeof(*ws->timer);
  if (ws->s != NULL)
    n += xcm__stream_footprint(ws->s);
  return n;
}

void xcm__ws_take_unsent(xcm_ws *ws) {
  take_back(ws);
}

int xcm__ws_has_frames(const xcm_ws *ws) {
  return ws->wc != NULL;
}
