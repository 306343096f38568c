/* libFuzzer target for the HTTP listener (lib/http/) as a stranger
 * reaches it: each input is one connection, over a transport of the
 * fuzzer's own, to a server with small limits whose owner holds BOSH
 * requests and takes WebSocket streams, as the real owners do.
 *
 * Layout: byte 0 picks a piece size (1 to 256); byte 1's bit 0 sends
 * the connection to a listener that requires a PROXY header first, bit
 * 1 has the owner answer BOSH requests at once (else at the end, or
 * never if the client leaves first), bit 2 sends it instead to a
 * listener whose BOSH requests reach the real BOSH layer (lib/web/:
 * body.c reads each <body/>, bosh.c keeps the sessions, every session a
 * real client of lib/client with a fixed policy and no server behind
 * it; the sid is always "fuzz" so that inputs can name it). The rest is
 * what the client sends.
 *
 * Checks: every answer the server writes begins with a status line;
 * what the owner is given is bounded by the limits (a body within
 * max_body, a path that begins with '/'); after the client's end the
 * connection is closed and the server holds nothing for it.
 *
 * Built with -DXCM_FUZZ_STANDALONE (tests/meson.build) it is a plain
 * program that replays the files named on its command line, or every
 * file of the directories named, so that gcc builds and the unit suite
 * run the corpus too. */
#include <dirent.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "client/client.h"
#include "http/http.h"
#include "options.h"
#include "transport/stream.h"
#include "util/buf.h"
#include "web/bosh.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_BODY 2048

static uv_loop_t loop;
static xcm_ctx ctx;
static xcm_http_cfg cfg[3];
static xcm_http_server *srv[3];
static xcm_client_cfg client_cfg;
static xcm_policy policy = {XCM_TLS_OFF, 1, {"PLAIN"}, 0, 0, 0};
static xcm_bosh *bosh;
static int bosh_done;

typedef struct peer {
  xcm_buf out;
  int closed;
  int answer_now;
  xcm_http_conn *held;
  xcm_stream *ws;
} peer;

static peer cur;

static int on_write(void *ud, const char *d, size_t len) {
  peer *p = ud;

  /* The first bytes ever written are a status line (or nothing). */
  if (p->out.len == 0 && len > 0 && (len < 9 || memcmp(d, "HTTP/1.1 ", 9)))
    abort();
  xcm__buf_append(&p->out, d, len);
  return 0;
}

static void on_close(void *ud) {
  ((peer *)ud)->closed = 1;
}

static void ws_read(void *ud, const char *data, size_t len) {
  (void)ud;
  (void)data;
  (void)len;
}

static void ws_end(void *ud, int err) {
  peer *p = ud;

  (void)err;
  xcm__stream_close(p->ws);
}

static void ws_closed(void *ud) {
  ((peer *)ud)->ws = NULL;
}

static const xcm_stream_cb ws_cb = {ws_read, ws_end, NULL, NULL, ws_closed};

static void h_websocket(void *ud, xcm_http_conn *conn,
                        const xcm_http_request *req) {
  peer *p = ud;
  const char *early;
  size_t early_len;

  if (req->path[0] != '/' || req->ws_key == NULL || req->ws_protocol == NULL)
    abort();
  p->ws = xcm__http_conn_detach(conn, &early, &early_len);
  if (p->ws == NULL)
    abort();
  xcm__stream_set_cb(p->ws, &ws_cb, p);
}

static void h_bosh(void *ud, xcm_http_conn *conn, const xcm_http_request *req,
                   const char *body, size_t len) {
  peer *p = ud;

  if (req->path[0] != '/' || len > MAX_BODY || body == NULL)
    abort();
  if (p->answer_now)
    xcm__http_respond(conn, 200, "text/xml", "<body/>", 7);
  else
    p->held = conn;
}

static void h_gone(void *ud, xcm_http_conn *conn) {
  peer *p = ud;

  if (p->held == conn)
    p->held = NULL;
}

/* ---- the BOSH mode: a real session layer, clients with no server --------- */

static const xcm_policy *get_policy(void *ud) {
  (void)ud;
  return &policy;
}

static int c_open(void *ud, const char *sid, const char *address) {
  (void)ud;
  (void)sid;
  (void)address;
  return 0;
}

static int c_stanza(void *ud, const xcm_xml_stanza *st,
                    const xcm_xml_nsdecl *decls, size_t ndecls) {
  (void)ud;
  (void)decls;
  (void)ndecls;
  /* Each message stood alone: one element, within the limit. */
  if (st->len == 0 || st->len > MAX_BODY)
    abort();
  return 0;
}

static void c_authenticated(void *ud) {
  (void)ud;
}

static void c_closed(void *ud, const xcm_client_end *end) {
  (void)ud;
  (void)end;
}

static const xcm_client_cb client_cb = {
    .open = c_open,
    .stanza = c_stanza,
    .authenticated = c_authenticated,
    .closed = c_closed,
};

static int bosh_attach(void *ud, const xcm_msg_transport *t, const char *from,
                       xcm_client **out) {
  (void)ud;
  return xcm__client_new_msg(out, &ctx, &client_cfg, t, from, &client_cb, NULL);
}

static void bosh_closed(void *ud) {
  (void)ud;
  bosh_done = 1;
}

static void bosh_start(void) {
  xcm_bosh_cfg bc;
  /* The handlers' ud is the BOSH layer's: no WebSocket here (404). */
  xcm_http_handlers h = {NULL, NULL, NULL, NULL};

  memset(&bc, 0, sizeof bc);
  bc.wait = 60;
  bc.hold = 1;
  bc.requests = 2;
  bc.inactivity = 60;
  bc.polling = 2;
  bc.maxpause = 120;
  bc.max_per_address = 2;
  bc.max_child = MAX_BODY;
  bc.max_depth = 8;
  bc.fixed_sid = "fuzz";
  if (xcm__bosh_new(&bosh, &ctx, &bc, bosh_attach, NULL) != 0)
    abort();
  xcm__bosh_handlers(bosh, &h);
  xcm__http_server_set_handlers(srv[2], &h);
}

static void bosh_stop(void) {
  bosh_done = 0;
  xcm__bosh_close(bosh, bosh_closed, NULL);
  for (int i = 0; i < 1000 && !bosh_done; i++)
    uv_run(&loop, UV_RUN_NOWAIT);
  if (!bosh_done)
    abort();
  /* The clients go once the loop turns. */
  for (int i = 0; i < 10; i++)
    uv_run(&loop, UV_RUN_NOWAIT);
  xcm__bosh_free(bosh);
  bosh = NULL;
}

static void setup(void) {
  xcm_http_handlers h = {h_websocket, h_bosh, h_gone, &cur};

  uv_loop_init(&loop);
  if (xcm__ctx_init(&ctx, &loop, NULL) != 0)
    abort();
  xcm__client_cfg_defaults(&client_cfg);
  client_cfg.domain = "example.test";
  client_cfg.max_stanza = MAX_BODY;
  client_cfg.max_stanza_preauth = MAX_BODY;
  client_cfg.policy = get_policy;
  for (int i = 0; i < 3; i++) {
    if (xcm__http_cfg_parse(&cfg[i], NULL, "/http-bind/",
                            "/ws/, /xmpp-websocket", "https://web.example.org",
                            NULL, 0) != 0)
      abort();
    cfg[i].max_header = 1024;
    cfg[i].max_body = MAX_BODY;
    cfg[i].max_connections = 4;
    cfg[i].max_per_address = 4;
    cfg[i].header_timeout_ms = 10000;
    cfg[i].idle_timeout_ms = 10000;
    if (xcm__http_server_new(&srv[i], &ctx, &cfg[i]) != 0)
      abort();
    xcm__http_server_set_handlers(srv[i], &h);
  }
  cfg[1].proxy_protocol = 1;
  cfg[1].ntrusted =
      (unsigned)xcm__proxy_trust_parse("127.0.0.1", cfg[1].trusted, NULL, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static int ready;
  xcm_transport t;
  xcm_stream *s;
  size_t piece, at = 0;
  int which;

  if (!ready) {
    setup();
    ready = 1;
  }
  if (size < 2)
    return 0;
  piece = (size_t)data[0] + 1;
  which = (data[1] & 4) ? 2 : data[1] & 1;
  if (which == 2)
    bosh_start();
  memset(&cur, 0, sizeof cur);
  xcm__buf_init(&cur.out, NULL);
  cur.answer_now = (data[1] & 2) != 0;
  data += 2;
  size -= 2;
  memset(&t, 0, sizeof t);
  t.size = sizeof t;
  t.write = on_write;
  t.close = on_close;
  t.ud = &cur;
  if (xcm__http_attach(srv[which], &t, "127.0.0.1", &s) != 0)
    abort();
  while (at < size && !cur.closed && cur.ws == NULL) {
    size_t n = size - at < piece ? size - at : piece;

    xcm__stream_input(s, (const char *)data + at, n);
    at += n;
    uv_run(&loop, UV_RUN_NOWAIT);
  }
  if (cur.held != NULL)
    xcm__http_respond(cur.held, 200, "text/xml", "<body/>", 7);
  if (cur.ws != NULL)
    xcm__stream_close(cur.ws);
  else if (!cur.closed)
    xcm__stream_input_end(s);
  /* The client is gone: the connection must close, and leave nothing. */
  for (int i = 0; i < 1000 && (!cur.closed || cur.ws != NULL); i++)
    uv_run(&loop, UV_RUN_NOWAIT);
  if (!cur.closed || xcm__http_server_counters(srv[which])->now != 0)
    abort();
  if (which == 2)
    bosh_stop();
  xcm__buf_free(&cur.out);
  return 0;
}

#ifdef XCM_FUZZ_STANDALONE
static int run_file(const char *path) {
  FILE *f = fopen(path, "rb");
  static char buf[1 << 20];
  size_t n;

  if (f == NULL)
    return 0;
  n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  LLVMFuzzerTestOneInput((const uint8_t *)buf, n);
  return 1;
}

int main(int argc, char **argv) {
  int runs = 0;

  for (int i = 1; i < argc; i++) {
    DIR *d = opendir(argv[i]);
    struct dirent *e;

    if (d == NULL) {
      runs += run_file(argv[i]);
      continue;
    }
    while ((e = readdir(d)) != NULL) {
      char path[4096];

      if (e->d_name[0] == '.')
        continue;
      snprintf(path, sizeof path, "%s/%s", argv[i], e->d_name);
      runs += run_file(path);
    }
    closedir(d);
  }
  /* TAP, for meson. */
  printf("1..1\nok 1 - %d inputs replayed\n", runs);
  return runs > 0 ? 0 : 1;
}
#endif
