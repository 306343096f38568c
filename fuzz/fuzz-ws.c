/* libFuzzer target for the WebSocket layer (lib/transport/ws.h): the
 * input is what a client sends after the upgrade, fed to a WebSocket
 * over a custom-transport stream in pieces.
 *
 * Layout: byte 0 holds flags (bits 0-3: piece size is 1 << bits, capped
 * at 4 KiB; bit 4: the first piece is handed over as early bytes; bit
 * 5: echo every message; bit 6: pause after each message and resume
 * between pieces; bit 7: the owner closes after the second message);
 * byte 1 sets max_message to 64 * (byte + 1). The rest is the client's
 * bytes.
 *
 * Checked: every message delivered is valid UTF-8 and at most
 * max_message; no frame we send is masked; end is reported at most once
 * and never after the owner's close; the connection always closes once
 * the input ends; nothing leaks (ASan). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "core/ctx.h"
#include "transport/stream.h"
#include "transport/ws.h"
#include "xcm/transport.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct run {
  xcm_ws *ws;
  xcm_stream *s;
  size_t max;
  int echo, pause, close_after;
  int msgs, ends, closed, custom_closed, owner_closed;
  uint64_t out; /* bytes of output parsed so far, as frames */
  unsigned char hdr[14];
  size_t hdr_len;
  uint64_t payload_left;
} run;

static uv_loop_t loop;
static xcm_ctx ctx;
static int ready;

/* RFC 3629: no overlongs, no surrogates, nothing past U+10FFFF. */
static int utf8_ok(const unsigned char *p, size_t n) {
  size_t i = 0;

  while (i < n) {
    unsigned c = p[i], need, min, cp;

    if (c < 0x80) {
      i++;
      continue;
    }
    if (c >= 0xc2 && c <= 0xdf)
      need = 1, min = 0x80, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef)
      need = 2, min = 0x800, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4)
      need = 3, min = 0x10000, cp = c & 0x07;
    else
      return 0;
    if (n - i <= need)
      return 0;
    for (size_t k = 1; k <= need; k++) {
      if ((p[i + k] & 0xc0) != 0x80)
        return 0;
      cp = cp << 6 | (p[i + k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
      return 0;
    i += need + 1;
  }
  return 1;
}

static void on_message(void *ud, const char *d, size_t len) {
  run *r = ud;

  if (len > r->max || !utf8_ok((const unsigned char *)d, len) ||
      r->owner_closed || r->ends > 0)
    abort();
  r->msgs++;
  if (r->echo)
    (void)xcm__ws_send(r->ws, d, len);
  if (r->pause)
    xcm__ws_pause(r->ws);
  if (r->close_after && r->msgs == 2) {
    r->owner_closed = 1;
    xcm__ws_close(r->ws, 1000, "bye");
  }
}

static void on_end(void *ud, int err, unsigned status) {
  run *r = ud;

  (void)err;
  if (r->ends++ > 0 || r->owner_closed || status < 1000 || status > 4999)
    abort();
}

static void on_closed(void *ud) {
  run *r = ud;

  r->closed++;
  r->ws = NULL;
}

static const xcm_ws_cb cbs = {on_message, on_end, NULL, on_closed, NULL};

/* The server's frames, parsed as they are written: never masked. */
static int on_write(void *ud, const char *d, size_t len) {
  run *r = ud;
  const unsigned char *p = (const unsigned char *)d;

  while (len > 0) {
    if (r->payload_left > 0) {
      size_t n = len < r->payload_left ? len : (size_t)r->payload_left;

      r->payload_left -= n;
      p += n;
      len -= n;
      continue;
    }
    r->hdr[r->hdr_len++] = *p++;
    len--;
    if (r->hdr_len >= 2) {
      size_t need = 2;
      unsigned l7 = r->hdr[1] & 0x7f;

      if (r->hdr[1] & 0x80)
        abort(); /* a server must not mask */
      need += l7 == 126 ? 2 : l7 == 127 ? 8 : 0;
      if (r->hdr_len == need) {
        uint64_t pl = l7;

        if (l7 >= 126) {
          pl = 0;
          for (size_t k = 2; k < need; k++)
            pl = pl << 8 | r->hdr[k];
        }
        r->payload_left = pl;
        r->hdr_len = 0;
      }
    }
  }
  r->out += 1;
  return 0;
}

static void on_custom_close(void *ud) {
  run *r = ud;

  r->custom_closed++;
}

static void stream_closed(void *ud) {
  (void)ud;
}

static void ignore_read(void *ud, const char *d, size_t len) {
  (void)ud;
  (void)d;
  (void)len;
}

static void ignore_end(void *ud, int err) {
  (void)ud;
  (void)err;
}

/* The stream's first owner, until the WebSocket takes it. */
static const xcm_stream_cb first_owner = {ignore_read, ignore_end, NULL, NULL,
                                          stream_closed};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  run r;
  xcm_transport t;
  xcm_ws_limits lim;
  size_t piece, off = 0;
  int spins = 0;

  if (size < 2)
    return 0;
  if (!ready) {
    if (uv_loop_init(&loop) != 0 || xcm__ctx_init(&ctx, &loop, NULL) != 0)
      abort();
    ready = 1;
  }
  memset(&r, 0, sizeof r);
  piece = (size_t)1 << (data[0] & 0x0f);
  if (piece > 4096)
    piece = 4096;
  r.echo = (data[0] >> 5) & 1;
  r.pause = (data[0] >> 6) & 1;
  r.close_after = (data[0] >> 7) & 1;
  memset(&lim, 0, sizeof lim);
  lim.max_message = 64 * ((size_t)data[1] + 1);
  lim.high_water = 4096;
  lim.low_water = 1024;
  lim.close_timeout_ms = 1;
  r.max = lim.max_message;
  memset(&t, 0, sizeof t);
  t.size = sizeof t;
  t.write = on_write;
  t.close = on_custom_close;
  t.ud = &r;
  if (xcm__stream_custom(&r.s, &ctx, &t, "fuzz", &first_owner, &r, NULL) != 0)
    return 0;
  data += 2;
  size -= 2;
  if ((data[-2] >> 4) & 1) {
    size_t n = size < piece ? size : piece;

    if (xcm__ws_new(&r.ws, &ctx, r.s, (const char *)data, n, &lim, &cbs, &r) !=
        0)
      abort();
    off = n;
  } else if (xcm__ws_new(&r.ws, &ctx, r.s, NULL, 0, &lim, &cbs, &r) != 0) {
    abort();
  }
  uv_run(&loop, UV_RUN_NOWAIT);
  while (off < size && r.ws != NULL && r.custom_closed == 0) {
    size_t n = size - off < piece ? size - off : piece;

    xcm__stream_input(r.s, (const char *)data + off, n);
    off += n;
    uv_run(&loop, UV_RUN_NOWAIT);
    if (r.pause && r.ws != NULL)
      xcm__ws_resume(r.ws);
    uv_run(&loop, UV_RUN_NOWAIT);
  }
  if (r.ws != NULL && r.custom_closed == 0)
    xcm__stream_input_end(r.s);
  /* Whatever came, the connection closes (the close timeout is 1 ms). */
  while (r.closed == 0) {
    if (++spins > 100000)
      abort();
    uv_run(&loop, UV_RUN_ONCE);
  }
  return 0;
}
