/* One WebSocket client (RFC 7395): the bridge between an xcm_ws
 * (transport/ws.h, the frames) and a message client (client/client.h,
 * the XMPP stream, framed by client/framing_messages.c).
 *
 * Each side ends the other:
 * - the client is done (t.close): an orderly close is a WebSocket
 *   Close 1000; after a stream error (the error element and <close/>
 *   were sent already, RFC 7395 section 3.6) or a refusal, 1008. The
 *   frames queued before are written first, as wslay queues the Close
 *   behind them.
 * - the WebSocket ended (cb.end: the peer's Close, a broken frame, the
 *   TCP stream gone): xcm__client_msg_end, which gives what the client
 *   did not get back to the server (<failed/>) and calls t.close. When
 *   the connection was lost, cb.unsent has given back just before what
 *   the xcm_ws had queued and never wrote (xcm__client_msg_unsent).
 * The bridge is freed when the xcm_ws is closed (cb.closed), which
 * always comes after t.close: the client never calls into a freed
 * bridge, and the bridge never calls into a closed client (client is
 * NULL from t.close on).
 *
 * Backpressure: out, xcm__ws_send's XCM_EBUSY is the client's
 * XCM_EAGAIN and cb.drain its xcm__client_writable; in, the client's
 * pause() pauses the xcm_ws, which stops reading its socket. */
#include <stdio.h>
#include <string.h>

#include "attach.h"
#include "transport/ws.h"
#include "util/alloc.h"
#include "web/web.h"
#include "xcm/error.h"

/* The output queued in the WebSocket's stream (what the kernel did not
 * take yet) above which the client is told to wait, and where it may go
 * on: a few large stanzas, so that a reader at socket speed never sees
 * it and a stalled one costs no more than this plus what the client
 * keeps (max_out). If the connection is lost (reset, gone, cut by the
 * close timeout, or dropped as a slow reader), the messages in this
 * queue that no byte of reached the kernel come back from the xcm_ws
 * (cb.unsent: the stream keeps each payload as a record) and go to the
 * server as <failed/> before those the client keeps, in the order they
 * were sent; the queue is then dropped, not sent. Only what the kernel
 * took is lost, as on TCP. */
#define WS_HIGH_WATER (64 * 1024)
#define WS_LOW_WATER (16 * 1024)

/* RFC 6455 section 7.4.1 has no code for "full, come back later"; 1013
 * (Try Again Later) is IANA's, which browsers report as it is. */
#define WS_TRY_AGAIN 1013

typedef struct wsc {
  xcm_cm *cm; /* held (xcm__cm_hold) until the xcm_ws is closed */
  xcm_ctx *ctx;
  xcm_ws *ws;
  xcm_client *client; /* NULL before attach and after t.close */
} wsc;

/* ---- the client's transport ---------------------------------------------- */

static int t_send(void *ud, const char *data, size_t len) {
  wsc *w = ud;
  int err = xcm__ws_send(w->ws, data, len);

  if (err == XCM_EBUSY)
    return XCM_EAGAIN;
  return err;
}

static void t_pause(void *ud, int paused) {
  wsc *w = ud;

  if (paused)
    xcm__ws_pause(w->ws);
  else
    xcm__ws_resume(w->ws);
}

/* The client drops a slow reader: what it queued here comes back. */
static void t_take_unsent(void *ud) {
  wsc *w = ud;

  xcm__ws_take_unsent(w->ws);
}

static void t_close(void *ud, int failed) {
  wsc *w = ud;

  w->client = NULL;
  /* After cb.end the xcm_ws is closing by itself: this is a no-op. */
  xcm__ws_close(w->ws, failed ? XCM_WS_POLICY : XCM_WS_NORMAL, NULL);
}

/* ---- the WebSocket's callbacks ------------------------------------------- */

static void ws_message(void *ud, const char *data, size_t len) {
  wsc *w = ud;

  if (w->client != NULL)
    xcm__client_msg_input(w->client, data, len);
}

static void ws_end(void *ud, int err, unsigned status) {
  wsc *w = ud;

  (void)status;
  if (w->client != NULL)
    xcm__client_msg_end(w->client, err == 0 ? UV_EOF : err);
}

static void ws_unsent(void *ud, const char *data, size_t len) {
  wsc *w = ud;

  if (w->client != NULL)
    xcm__client_msg_unsent(w->client, data, len);
}

static void ws_drain(void *ud) {
  wsc *w = ud;

  if (w->client != NULL)
    xcm__client_writable(w->client);
}

static void ws_closed(void *ud) {
  wsc *w = ud;

  /* The WebSocket went without cb.end (a close we asked for while the
   * client was still on it cannot happen: only t.close asks). Kept for
   * safety: the client must not outlive its transport. */
  xcm_cm *cm = w->cm;

  if (w->client != NULL)
    xcm__client_msg_end(w->client, XCM_ECLOSED);
  xcm__free(w->ctx->alloc, w);
  /* Last: a shutdown may close the context now. */
  xcm__cm_release(cm);
}

static const xcm_ws_cb ws_cb = {ws_message, ws_end, ws_drain, ws_closed,
                                ws_unsent};

/* ---- the upgrade -----------------------------------------------------------
 */

/* A stream no xcm_ws could take: it holds the instance until closed. */
static void orphan_closed(void *ud) {
  xcm__cm_release(ud);
}

static const xcm_stream_cb orphan_cb = {NULL, NULL, NULL, NULL, orphan_closed};

void xcm__web_websocket(void *ud, xcm_http_conn *conn,
                        const xcm_http_request *req) {
  const xcm_web_listener *wl = ud;
  xcm_msg_transport t;
  xcm_ws_limits lim;
  const char *early;
  size_t early_len;
  char peer[64];
  xcm_stream *s;
  wsc *w;
  int err;

  (void)req;
  /* conn is freed once this returns: keep what is needed of it. */
  snprintf(peer, sizeof peer, "%s", xcm__http_conn_peer(conn));
  memset(&t, 0, sizeof t);
  t.secure = xcm__http_conn_secure(conn);
  w = xcm__calloc(wl->ctx->alloc, sizeof(*w));
  if (w == NULL)
    return; /* not detached: the HTTP layer closes the connection */
  w->ctx = wl->ctx;
  s = xcm__http_conn_detach(conn, &early, &early_len);
  if (s == NULL) {
    xcm__free(wl->ctx->alloc, w);
    return; /* no memory for the HTTP layer's timer: it closes */
  }
  memset(&lim, 0, sizeof lim);
  /* A message a little over the stanza limit is the client's to refuse
   * with policy-violation, as on a socket; only far over it is the
   * frame refused (1009) before its bytes are kept. */
  lim.max_message = wl->max_stanza + 1024;
  lim.high_water = WS_HIGH_WATER;
  lim.low_water = WS_LOW_WATER;
  /* The WebSocket may outlive its client (the close handshake waits for
   * the peer's Close): the instance's context must outlive it. */
  w->cm = wl->cm;
  xcm__cm_hold(w->cm);
  err = xcm__ws_new(&w->ws, wl->ctx, s, early, early_len, &lim, &ws_cb, w);
  if (err != 0) {
    xcm__stream_set_cb(s, &orphan_cb, wl->cm);
    xcm__stream_close(s);
    xcm__free(wl->ctx->alloc, w);
    return;
  }
  t.send = t_send;
  t.pause = t_pause;
  t.close = t_close;
  t.take_unsent = t_take_unsent;
  t.ud = w;
  t.kind = XCM_TRANSPORT_WEBSOCKET;
  /* The early bytes are read from the loop, after this: no message can
   * come before the client is attached. */
  err = xcm__cm_attach_msg(wl->cm, wl->index, &t, peer, &w->client);
  if (err != 0) {
    xcm__log(wl->ctx, XCM_LOG_DEBUG, "%s: WebSocket client refused: %s", peer,
             xcm_strerror(err));
    w->client = NULL;
    xcm__ws_close(w->ws, err == XCM_ECLOSED ? XCM_WS_GOING_AWAY : WS_TRY_AGAIN,
                  err == XCM_ECLOSED ? "shutting down" : "over a limit");
  }
}
