#include "core/ctx.h"

#include <stdio.h>
#include <string.h>

#include "util/alloc.h"
#include "xcm/error.h"

/* Parsers kept idle per context: enough for the connections that read in
 * one loop iteration without holding one per idle connection. */
#define XML_POOL_KEEP 64

int xcm__ctx_init(xcm_ctx *ctx, uv_loop_t *loop, const xcm_allocator *alloc) {
  int err;

  memset(ctx, 0, sizeof(*ctx));
  ctx->loop = loop;
  ctx->alloc = alloc;
  ctx->log_level = XCM_LOG_INFO;
  xcm__buf_init(&ctx->scratch, alloc);
  err = xcm__xml_pool_new(&ctx->xml, alloc, XML_POOL_KEEP);
  if (err != 0)
    return err;
  ctx->read_buf = xcm__alloc(alloc, XCM_READ_BUF);
  ctx->plain_buf = xcm__alloc(alloc, XCM_READ_BUF);
  if (ctx->read_buf == NULL || ctx->plain_buf == NULL) {
    xcm__free(alloc, ctx->read_buf);
    xcm__free(alloc, ctx->plain_buf);
    xcm__xml_pool_free(ctx->xml);
    return XCM_ENOMEM;
  }
  /* The stream layer starts the flusher when it has output to send and
   * stops it when all is sent, so an idle loop can still end. */
  uv_prepare_init(loop, &ctx->flusher);
  ctx->flusher.data = ctx;
  return 0;
}

static void flusher_closed(uv_handle_t *h) {
  xcm_ctx *ctx = h->data;
  void (*cb)(xcm_ctx *) = (void (*)(xcm_ctx *))ctx->close_cb;

  xcm__free(ctx->alloc, ctx->read_buf);
  xcm__free(ctx->alloc, ctx->plain_buf);
  xcm__xml_pool_free(ctx->xml);
  xcm__buf_free(&ctx->scratch);
  ctx->read_buf = ctx->plain_buf = NULL;
  ctx->xml = NULL;
  if (cb != NULL)
    cb(ctx);
}

void xcm__ctx_close(xcm_ctx *ctx, void (*close_cb)(xcm_ctx *ctx)) {
  if (ctx->closing)
    return;
  ctx->closing = 1;
  ctx->close_cb = (void (*)(void))close_cb;
  uv_close((uv_handle_t *)&ctx->flusher, flusher_closed);
}

void xcm__log(xcm_ctx *ctx, int level, const char *fmt, ...) {
  char msg[1024];
  va_list ap;

  if (ctx->log == NULL || level > ctx->log_level)
    return;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  ctx->log(ctx->log_ud, level, msg);
}

int xcm__random(void *buf, size_t len) {
  return uv_random(NULL, NULL, buf, len, 0, NULL);
}

int xcm__random_token(char *out) {
  static const char abc[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  unsigned char raw[16];
  unsigned acc = 0, bits = 0;
  size_t i, o = 0;
  int err = xcm__random(raw, sizeof raw);

  if (err != 0)
    return err;
  for (i = 0; i < sizeof raw; i++) {
    acc = (acc << 8) | raw[i];
    bits += 8;
    while (bits >= 6) {
      out[o++] = abc[(acc >> (bits - 6)) & 63];
      bits -= 6;
    }
  }
  /* 128 = 21 * 6 + 2: the last two bits make the 22nd character. */
  out[o++] = abc[(acc << (6 - bits)) & 63];
  out[o] = '\0';
  return 0;
}
