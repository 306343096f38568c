/* The server side of a WebSocket connection (RFC 6455) as RFC 7395 uses
 * it: text messages in and out over a byte stream that an HTTP
 * connection handed over after its 101 response. Frames are read and
 * written by wslay (Debian's libwslay), never by hand; this layer
 * bridges wslay's pull model to the stream's push model and enforces
 * what RFC 7395 adds: text only (a binary message is closed with 1003),
 * client frames masked (1002), valid UTF-8 (1007, checked by wslay),
 * one message at most max_message bytes, fragments included (1009,
 * refused from its frame headers before its bytes are kept).
 *
 * Memory follows activity: between messages, with nothing half read and
 * nothing queued in wslay, the wslay context (about 8.6 KB: two 4 KiB
 * frame buffers) is freed and the next byte or send makes a new one. An
 * idle connection holds this struct and its stream (xcm__ws_footprint).
 *
 * Lifetime: xcm__ws_close() (or a failure) starts closing; cb.closed
 * runs once the stream and the timer are closed, and the xcm_ws is
 * freed right after it returns. The callback table is not copied: it
 * must outlive the xcm_ws (a static const table). */
#ifndef XCM_TRANSPORT_WS_H
#define XCM_TRANSPORT_WS_H

#include <stddef.h>

#include "core/ctx.h"
#include "transport/stream.h"

typedef struct xcm_ws xcm_ws;

/* RFC 6455 section 7.4.1 status codes this layer sends or reports. */
enum {
  XCM_WS_NORMAL = 1000,
  XCM_WS_GOING_AWAY = 1001,
  XCM_WS_PROTOCOL_ERROR = 1002,
  XCM_WS_UNSUPPORTED_DATA = 1003,
  XCM_WS_NO_STATUS = 1005, /* the peer's Close carried no code */
  XCM_WS_ABNORMAL = 1006,  /* no Close at all: the TCP stream ended */
  XCM_WS_INVALID_DATA = 1007,
  XCM_WS_POLICY = 1008,
  XCM_WS_TOO_BIG = 1009,
  XCM_WS_INTERNAL = 1011
};

typedef struct xcm_ws_limits {
  /* The largest message accepted, fragments together. 0: 65536. */
  size_t max_message;
  /* Output above high_water makes xcm__ws_send() say XCM_EBUSY; drain
   * fires once it is back at low_water. high_water 0: no backpressure. */
  size_t high_water;
  size_t low_water;
  /* How long a close may take: the peer's Close after ours, and the
   * flush of our last frames. 0: 5000 ms. */
  unsigned close_timeout_ms;
} xcm_ws_limits;

typedef struct xcm_ws_cb {
  /* One complete text message, valid UTF-8; data is lent for the call.
   * The callee may send, pause, or close. */
  void (*message)(void *ud, const char *data, size_t len);
  /* The WebSocket ended without the owner asking: err 0 when the peer
   * closed (status is its code, XCM_WS_NO_STATUS if none; our answering
   * Close is sent); XCM_EPROTO when the peer broke RFC 6455 or 7395
   * (status is the code we closed with: 1002, 1003 or 1007);
   * XCM_ELIMIT for a message over max_message (status 1009); a stream
   * error (UV_EOF and others) when the TCP stream ended or failed
   * (status 1006). Reported once, never after xcm__ws_close(); the
   * xcm_ws is closing by itself then (sends fail with XCM_ECLOSED) and
   * closed follows. */
  void (*end)(void *ud, int err, unsigned status);
  /* Output fell to low_water after xcm__ws_send() said XCM_EBUSY. May
   * be NULL. */
  void (*drain)(void *ud);
  /* The stream is closed; the xcm_ws is freed once this returns. */
  void (*closed)(void *ud);
  /* One message sent earlier that never reached the kernel, given back
   * (data lent for the call), oldest first, each at most once: when the
   * connection is lost (the stream ended or failed, or the close
   * timeout cut an owner that was still paused), just before end; or
   * from inside xcm__ws_take_unsent(). What was given back is never
   * sent. Must not call into the xcm_ws. May be NULL. */
  void (*unsent)(void *ud, const char *data, size_t len);
} xcm_ws_cb;

/* Take over s (its callbacks now come here; the stream is ours to close
 * from now on, also on failure) and serve a WebSocket on it. early holds
 * the bytes the HTTP layer read past the upgrade request (copied; may be
 * NULL); they are read before anything else, from the loop, never from
 * inside this call. lim may be NULL (defaults). On failure (XCM_ENOMEM)
 * the stream stays the caller's. */
int xcm__ws_new(xcm_ws **out, xcm_ctx *ctx, xcm_stream *s, const char *early,
                size_t early_len, const xcm_ws_limits *lim, const xcm_ws_cb *cb,
                void *ud);

/* Send one text message (copied; the owner vouches for its UTF-8).
 * Returns 0; XCM_EBUSY when output is now over high_water (the message
 * was still taken: wait for drain before sending more); XCM_ECLOSED once
 * closing; XCM_ENOMEM or the stream's error. */
int xcm__ws_send(xcm_ws *ws, const char *data, size_t len);

/* Start the close handshake: send a Close with status and reason (UTF-8,
 * at most 123 bytes, may be NULL), drop whatever the peer still sends
 * but its Close, then close the stream when that Close arrives, or after
 * close_timeout_ms. Safe to call twice and from any callback. */
void xcm__ws_close(xcm_ws *ws, unsigned status, const char *reason);

/* Stop and resume delivering messages (flow control). Paused, nothing
 * more is read from the socket and no message is delivered; what was
 * read already waits (at most one wslay buffer and one message) and is
 * delivered after resume, from the loop. A Close or a broken rule read
 * meanwhile is reported by end after those messages; an owner still
 * paused after close_timeout_ms gets end without them. */
void xcm__ws_pause(xcm_ws *ws);
void xcm__ws_resume(xcm_ws *ws);

/* The owner gives up on this connection (its reader is too slow): every
 * message not yet handed to the kernel goes back through cb.unsent, now,
 * and nothing queued is sent any more; sends fail with XCM_ECLOSED. The
 * owner then calls xcm__ws_close(), which closes without a Close frame
 * (it could not follow what was dropped). Once only; not after end or
 * xcm__ws_close(). */
void xcm__ws_take_unsent(xcm_ws *ws);

/* Bytes of memory this connection holds right now, its stream's
 * included. */
size_t xcm__ws_footprint(const xcm_ws *ws);

/* Whether wslay's context is allocated now (for tests). */
int xcm__ws_has_frames(const xcm_ws *ws);

/* The bytes one wslay event context holds (measured by the tests). */
#define XCM_WS_WSLAY_BYTES 8704

#endif
