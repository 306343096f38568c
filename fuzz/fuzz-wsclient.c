/* libFuzzer target for what a WebSocket client's messages reach once
 * the frames are read (lib/web/websocket.c hands each text message to
 * xcm__client_msg_input as it is): one client of a real instance, with
 * the in-process Openfire behind it, over a message transport of the
 * fuzzer's own, attached as the WebSocket layer attaches its clients
 * (xcm__cm_attach_msg). fuzz-ws covers the frames; this covers RFC 7395's
 * messages, <open/>, <close/>, the restart after SASL, the allow-list
 * and the limits behind them, with the transport's backpressure.
 *
 * Layout: byte 0 holds flags (bit 0: send() answers XCM_EAGAIN every
 * other time, and the transport calls xcm__client_writable between
 * messages; bit 1: the transport pauses delivery while the client asks
 * it to, holding messages until it may go on; bit 2: the input ends
 * with the transport's end). A client still open at the end is failed
 * with system-shutdown, as a shutdown would. The rest is messages
 * separated by 0xff bytes (never valid UTF-8, so never inside a real
 * message).
 *
 * Checked: the CM stays within the protocol upstream (the testkit's
 * witness), close() comes exactly once and nothing calls into the
 * transport after it, every message sent is non-empty and well inside
 * the stanza limit plus its framing; nothing leaks (ASan). */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "attach.h"
#include "client/client.h"
#include "xcm/error.h"
#include "xcm/testkit.h"
#include "xcm/xcm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uv_loop_t loop;
static xcm_testkit *kit;
static xcm_cm *cm;

typedef struct peer {
  unsigned flags;
  unsigned sends;
  int closed; /* close() calls */
  int paused;
  int full; /* said XCM_EAGAIN, writable not yet called */
} peer;

static int t_send(void *ud, const char *d, size_t len) {
  peer *p = ud;

  (void)d;
  if (p->closed || len == 0 || len > 65536)
    abort();
  p->sends++;
  if ((p->flags & 1) && (p->sends & 1)) {
    p->full = 1;
    return XCM_EAGAIN;
  }
  return 0;
}

static void t_pause(void *ud, int paused) {
  peer *p = ud;

  if (p->closed)
    abort();
  p->paused = paused;
}

static void t_close(void *ud, int failed) {
  peer *p = ud;

  (void)failed;
  if (p->closed++)
    abort();
}

static void setup(void) {
  xcm_testkit_options ko;
  xcm_options o;
  xcm_listen_options lo;
  char err[256];
  int i;

  uv_loop_init(&loop);
  xcm_testkit_options_init(&ko, sizeof ko);
  ko.seed = 1;
  ko.open_accounts = 1;
  if (xcm_testkit_new(&kit, &loop, &ko, err, sizeof err) != 0)
    abort();
  xcm_testkit_add_account(kit, "alice", "alice");
  xcm_options_init(&o, sizeof o);
  o.domain = "example.test";
  o.server_port = xcm_testkit_port(kit);
  o.name = "fuzz";
  o.secret = "cmsecret";
  o.connections = 1;
  o.upstream_tls = XCM_UPSTREAM_TLS_OFF;
  o.max_stanza_preauth = 4096;
  o.max_stanza = 16384;
  o.max_depth = 16;
  if (xcm_cm_new(&cm, &loop, &o, err, sizeof err) != 0)
    abort();
  xcm_listen_options_init(&lo, sizeof lo);
  lo.http = 1;
  if (xcm_cm_listen(cm, &lo, err, sizeof err) != 0 || xcm_cm_start(cm) != 0)
    abort();
  for (i = 0; i < 10000 && xcm_cm_policy(cm) == NULL; i++)
    uv_run(&loop, UV_RUN_ONCE);
  if (xcm_cm_policy(cm) == NULL)
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  xcm_msg_transport t;
  xcm_client *c;
  peer p;
  size_t off = 1;
  int i;

  if (cm == NULL)
    setup();
  if (size < 1)
    return 0;
  memset(&p, 0, sizeof p);
  p.flags = data[0];
  memset(&t, 0, sizeof t);
  t.send = t_send;
  t.pause = t_pause;
  t.close = t_close;
  t.ud = &p;
  t.kind = XCM_TRANSPORT_WEBSOCKET;
  if (xcm__cm_attach_msg(cm, 0, &t, "fuzzer", &c) != 0)
    return 0;
  while (off <= size && !p.closed) {
    const uint8_t *end = memchr(data + off, 0xff, size - off);
    size_t n = end != NULL ? (size_t)(end - (data + off)) : size - off;

    /* A paused transport holds its messages: let the upstream answer
     * until the client asks for more, or give up on this input. */
    for (i = 0; i < 1000 && (p.flags & 2) && p.paused && !p.closed; i++)
      uv_run(&loop, UV_RUN_NOWAIT);
    if (p.closed || ((p.flags & 2) && p.paused))
      break;
    xcm__client_msg_input(c, (const char *)data + off, n);
    off += n + 1;
    if (p.full && !p.closed) {
      p.full = 0;
      xcm__client_writable(c);
    }
    /* Let the upstream answer (SASL, bind) between messages. */
    uv_run(&loop, UV_RUN_NOWAIT);
  }
  if (!p.closed && (p.flags & 4))
    xcm__client_msg_end(c, UV_EOF);
  /* End it as a shutdown would, so that no session outlives its input. */
  if (!p.closed)
    xcm__client_fail(c, XCM_COND_SYSTEM_SHUTDOWN, NULL);
  for (i = 0; i < 1000 && !p.closed; i++) {
    if (p.full) {
      p.full = 0;
      xcm__client_writable(c);
    }
    uv_run(&loop, UV_RUN_NOWAIT);
  }
  if (p.closed != 1)
    abort();
  /* The client is freed on the next loop turn after its close. */
  uv_run(&loop, UV_RUN_NOWAIT);
  if (xcm_testkit_first_violation(kit) != NULL) {
    fprintf(stderr, "fuzz-wsclient: the CM broke the protocol upstream: %s\n",
            xcm_testkit_first_violation(kit));
    abort();
  }
  return 0;
}
