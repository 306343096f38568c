/* The HTTP listener (lib/http/): requests over real loopback sockets,
 * plain, TLS and behind a PROXY header; host-meta, CORS, the WebSocket
 * handshake and the hand-over of its stream, pipelining, keep-alive,
 * every limit and timeout, and malformed requests (each counted as a
 * hostile input: malformed-http). Timeouts are short and driven by the
 * loop's timers: the test waits for the event, never sleeps. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "http/http.h"
#include "rawclient.h"
#include "tlsclient.h"
#include "transport/stream.h"
#include "util/alloc.h"
#include "xcm/xcm.h"

#define WAIT_MS 5000

typedef struct fixture {
  uv_loop_t loop;
  xcm_ctx ctx;
  uv_tcp_t listen;
  xcm_http_cfg cfg;
  xcm_http_server *srv;
  int port;
  int srv_closed;
  int ctx_closed;
  /* The handlers' side. */
  int ws_calls, bosh_calls, gone_calls;
  xcm_http_conn *bosh_conn;
  char bosh_body[256];
  char bosh_peer[64];
  char ws_origin[128];
  int detach; /* the websocket handler takes the stream */
  xcm_stream *echo;
  int echo_closed;
} fixture;

static fixture *F;

static void on_connection(uv_stream_t *server, int status) {
  fixture *f = server->data;
  uv_tcp_t *tcp;

  if (status != 0)
    return;
  tcp = xcm__alloc(f->ctx.alloc, sizeof(*tcp));
  REQUIRE(tcp != NULL);
  uv_tcp_init(&f->loop, tcp);
  if (uv_accept(server, (uv_stream_t *)tcp) != 0) {
    uv_close((uv_handle_t *)tcp, (uv_close_cb)free);
    return;
  }
  xcm__http_accept(f->srv, tcp);
}

/* ---- the owner's handlers: BOSH held until the test answers, WebSocket
 * taken over and echoed ---------------------------------------------------- */

static void echo_read(void *ud, const char *data, size_t len) {
  fixture *f = ud;

  xcm__stream_write(f->echo, data, len);
}

static void echo_end(void *ud, int err) {
  fixture *f = ud;

  (void)err;
  xcm__stream_close(f->echo);
}

static void echo_closed(void *ud) {
  fixture *f = ud;

  f->echo = NULL;
  f->echo_closed++;
}

static const xcm_stream_cb echo_cb = {echo_read, echo_end, NULL, NULL,
                                      echo_closed};

static void h_websocket(void *ud, xcm_http_conn *conn,
                        const xcm_http_request *req) {
  fixture *f = ud;
  const char *early;
  size_t early_len;

  f->ws_calls++;
  snprintf(f->ws_origin, sizeof f->ws_origin, "%s",
           req->origin ? req->origin : "");
  if (!f->detach)
    return;
  f->echo = xcm__http_conn_detach(conn, &early, &early_len);
  REQUIRE(f->echo != NULL);
  xcm__stream_set_cb(f->echo, &echo_cb, f);
  if (early_len > 0)
    xcm__stream_write(f->echo, early, early_len);
}

static void h_bosh(void *ud, xcm_http_conn *conn, const xcm_http_request *req,
                   const char *body, size_t len) {
  fixture *f = ud;

  (void)req;
  f->bosh_calls++;
  f->bosh_conn = conn;
  snprintf(f->bosh_body, sizeof f->bosh_body, "%.*s", (int)len, body);
  snprintf(f->bosh_peer, sizeof f->bosh_peer, "%s", xcm__http_conn_peer(conn));
}

static void h_gone(void *ud, xcm_http_conn *conn) {
  fixture *f = ud;

  if (f->bosh_conn == conn)
    f->bosh_conn = NULL;
  f->gone_calls++;
}

/* ---- set-up -------------------------------------------------------------- */

static void limits(xcm_http_cfg *cfg);

static void defaults(xcm_http_cfg *cfg) {
  memset(cfg, 0, sizeof *cfg);
  REQUIRE(xcm__http_cfg_parse(cfg, NULL, "/http-bind/", "/ws/, /xmpp-websocket",
                              NULL, NULL, 0) == 0);
  limits(cfg);
}

static void limits(xcm_http_cfg *cfg) {
  cfg->max_header = 8192;
  cfg->max_body = 4096;
  cfg->max_connections = 100;
  cfg->max_per_address = 100;
  cfg->header_timeout_ms = 10000;
  cfg->idle_timeout_ms = 60000;
}

/* Start a server with f->cfg (filled by the caller from defaults()). */
static void start(fixture *f) {
  struct sockaddr_in sa;
  struct sockaddr_storage ss;
  int len = sizeof ss;
  xcm_http_handlers h = {h_websocket, h_bosh, h_gone, f};

  F = f;
  REQUIRE(uv_loop_init(&f->loop) == 0);
  REQUIRE(xcm__ctx_init(&f->ctx, &f->loop, NULL) == 0);
  REQUIRE(xcm__http_server_new(&f->srv, &f->ctx, &f->cfg) == 0);
  xcm__http_server_set_handlers(f->srv, &h);
  f->detach = 1;
  uv_tcp_init(&f->loop, &f->listen);
  f->listen.data = f;
  uv_ip4_addr("127.0.0.1", 0, &sa);
  REQUIRE(uv_tcp_bind(&f->listen, (struct sockaddr *)&sa, 0) == 0);
  REQUIRE(uv_listen((uv_stream_t *)&f->listen, 64, on_connection) == 0);
  uv_tcp_getsockname(&f->listen, (struct sockaddr *)&ss, &len);
  f->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void set_closed(void *ud) {
  ((fixture *)ud)->srv_closed = 1;
}

static int is_set(void *ud) {
  return *(int *)ud;
}

static void ctx_closed(xcm_ctx *ctx) {
  (void)ctx;
  F->ctx_closed = 1;
}

static void stop(fixture *f) {
  if (f->echo != NULL)
    xcm__stream_close(f->echo);
  xcm__http_server_close(f->srv, set_closed, f);
  CHECK(xcm_test_run_until(&f->loop, is_set, &f->srv_closed, WAIT_MS));
  CHECK(xcm_test_run_until(&f->loop, is_set, &f->echo_closed, 200) ||
        f->echo == NULL);
  xcm__http_server_free(f->srv);
  uv_close((uv_handle_t *)&f->listen, NULL);
  xcm__ctx_close(&f->ctx, ctx_closed);
  CHECK(xcm_test_run_until(&f->loop, is_set, &f->ctx_closed, WAIT_MS));
  uv_run(&f->loop, UV_RUN_DEFAULT);
  xcm__http_cfg_free(&f->cfg, NULL);
  CHECK_INT(uv_loop_close(&f->loop), 0);
}

static void open_raw(fixture *f, xcm_raw *r) {
  REQUIRE(xcm_raw_open(r, &f->loop, "127.0.0.1", f->port, 1));
}

/* Wait until the connection is closed by the server. */
static int closed_by_server(xcm_raw *r) {
  return xcm_test_run_until(r->loop, xcm_raw_is_eof, r, WAIT_MS);
}

static const char *in(const xcm_raw *r) {
  return r->in.data != NULL ? r->in.data : "";
}

static int count(const char *hay, const char *needle) {
  int n = 0;

  for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
    n++;
  return n;
}

/* One request on a fresh connection; the answer's status line must be
 * want, and the server must close. For the refusals. */
static int refused(fixture *f, const char *req, size_t len, const char *want) {
  xcm_raw r;
  int ok;

  open_raw(f, &r);
  xcm_raw_send(&r, req, len);
  ok = CHECK(xcm_raw_wait(&r, want, WAIT_MS)) &&
       CHECK(strncmp(in(&r), want, strlen(want)) == 0) &&
       CHECK(closed_by_server(&r)) &&
       CHECK(strstr(in(&r), "Connection: close\r\n") != NULL);
  if (!ok)
    xcm_test_note("got: %s", in(&r));
  xcm_raw_free(&r);
  return ok;
}

typedef struct counting {
  xcm_raw *r;
  const char *needle;
  int n;
} counting;

static int has_count(void *ud) {
  counting *c = ud;

  return count(in(c->r), c->needle) >= c->n || c->r->eof;
}

/* Wait until n answers (status lines) came. */
static int wait_answers(xcm_raw *r, int n) {
  counting c = {r, "HTTP/1.1 ", n};

  return xcm_test_run_until(r->loop, has_count, &c, WAIT_MS) &&
         count(in(r), "HTTP/1.1 ") >= n;
}

typedef struct at_least_t {
  int *v;
  int n;
} at_least_t;

static int at_least(void *ud) {
  at_least_t *a = ud;

  return *a->v >= a->n;
}

#define REFUSED(f, req, want) refused((f), (req), sizeof(req) - 1, (want))

/* ---- the cases ------------------------------------------------------------
 */

static void test_host_meta(void) {
  fixture f;
  xcm_raw r;

  memset(&f, 0, sizeof f);
  defaults(&f.cfg);
  start(&f);
  open_raw(&f, &r);
  xcm_raw_sends(&r, "GET /.well-known/host-meta HTTP/1.1\r\n"
                    "Host: example.test:5280\r\n\r\n");
  REQUIRE(xcm_raw_wait(&r, "</XRD>", WAIT_MS));
  CHECK(strncmp(in(&r), "HTTP/1.1 200 OK\r\n", 17) == 0);
  CHECK(strstr(in(&r), "Content-Type: application/xrd+xml\r\n") != NULL);
  CHECK(strstr(in(&r), "Access-Control-Allow-Origin: *\r\n") != NULL);
  CHECK(strstr(in(&r), "<Link rel='urn:xmpp:alt-connections:xbosh' "
                       "href='http://example.test:5280/http-bind/'/>") != NULL);
  CHECK(strstr(in(&r), "<Link rel='urn:xmpp:alt-connections:websocket' "
                       "href='ws://example.test:5280/ws/'/>") != NULL);
  CHECK(strstr(in(&r), "href='ws://example.test:5280/xmpp-websocket'") != NULL);
  /* Keep-alive: the same connection serves the JSON next. */
  xcm__buf_reset(&r.in);
  xcm_raw_sends(&r, "GET /.well-known/host-meta.json HTTP/1.1\r\n"
                    "Host: example.test\r\n\r\n");
  REQUIRE(xcm_raw_wait(&r, "]}", WAIT_MS));
  CHECK(strstr(in(&r), "Content-Type: application/json\r\n") != NULL);
  CHECK(strstr(in(&r),
               "{\"links\":[{\"rel\":\"urn:xmpp:alt-connections:xbosh\","
               "\"href\":\"http://example.test/http-bind/\"},"
               "{\"rel\":\"urn:xmpp:alt-connections:websocket\","
               "\"href\":\"ws://example.test/ws/\"},") != NULL);
  CHECK(!r.eof);
  /* A Host that would inject markup is refused. */
  xcm__buf_reset(&r.in);
  xcm_raw_sends(&r, "GET /.well-known/host-meta HTTP/1.1\r\n"
                    "Host: a'/><x y='\r\n\r\n");
  CHECK(xcm_raw_wait(&r, "HTTP/1.1 400 ", WAIT_MS));
  CHECK(closed_by_server(&r));
  xcm_raw_free(&r);
  stop(&f);
}

static void test_host_meta_public_url(void) {
  fixture f;
  xcm_raw r;

  memset(&f, 0, sizeof f);
  defaults(&f.cfg);
  f.cfg.public_url = "https://chat.example.org/xmpp/";
  start(&f);
  open_raw(&f, &r);
  /* Behind a proxy the Host may be the CM's own: the public URL wins. */
  xcm_raw_sends(&r, "GET /.well-known/host-meta HTTP/1.1\r\n"
                    "Host: 10.0.0.5:5280\r\n\r\n");
  REQUIRE(xcm_raw_wait(&r, "</XRD>", WAIT_MS));
  CHECK(strstr(in(&r), "href='https://chat.example.org/xmpp/http-bind/'") !=
        NULL);
  CHECK(strstr(in(&r), "href='wss://chat.example.org/xmpp/ws/'") != NULL);
  CHECK(strstr(in(&r), "10.0.0.5") == NULL);
  xcm_raw_free(&r);
  stop(&f);
}

static void test_not_found_keep_alive(void) {
  fixture f;
  xcm_raw r;

  memset(&f, 0, sizeof f);
  defaults(&f.cfg);
  start(&f);
  open_raw(&f, &r);
  xcm_raw_sends(&r, "GET /nothing HTTP/1.1\r\nHost: a\r\n\r\n");
  REQUIRE(xcm_raw_wait(&r, "404 Not Found\n", WAIT_MS));
  CHECK(strncmp(in(&r), "HTTP/1.1 404 Not Found\r\n", 24) == 0);
  CHECK(strstr(in(&r), "Connection: close") == NULL);
  xcm__buf_reset(&r.in);
  xcm_raw_sends(&r, "HEAD /nothing?x=1 HTTP/1.1\r\nHost: a\r\n\r\n");
  REQUIRE(xcm_raw_wait(&r, "\r\n\r\n", WAIT_MS));
  CHECK(strncmp(in(&r), "HTTP/1.1 404", 12) == 0);
  /* HTTP/1.0 without keep-alive: answered, then closed. */
  xcm__buf_reset(&r.in);
  xcm_raw_sends(&r, "GET /nothing HTTP/1.0\r\n\r\n");
  CHECK(xcm_raw_wait(&r, "404 Not Found\n", WAIT_MS));
  CHECK(closed_by_server(&r));
  xcm_raw_free(&r);
  stop(&f);
}

static void test_cors(void) {
  fixture f;
  xcm_raw r;

  memset(&f, 0, sizeof f);
  defaults(&f.cfg);
  xcm__http_cfg_free(&f.cfg, NULL);
  memset(&f.cfg, 0, sizeof f.cfg);
  REQUIRE(xcm__http_cfg_parse(&f.cfg, NULL, "/http-bind/", "/ws/",
                              "https://web.example.org, http://localhost:8080",
                              NULL, 0) == 0);
  limits(&f.cfg);
  start(&f);
  open_raw(&f, &r);
  /* The preflight is the HTTP layer's. */
  xcm_raw_sends(&r, "OPTIONS /http-bind/ HTTP/1.1\r\nHost: a\r\n"
                    "Origin: https://web.example.org\r\n"
                    "Access-Control-Request-Method: POST\r\n"
                    "Access-Control-Request-Headers: content-type\r\n\r\n");
  REQUIRE(xcm_raw_wait(&r, "\r\n\r\n", WAIT_MS));
  CHECK(strncmp(in(&r), "HTTP/1.1 200 OK\r\n", 17) == 0);
  CHECK(strstr(in(&r), "Access-Control-Allow-Origin: https://web.example.org"
                       "\r\n") != NULL);
  CHECK(strstr(in(&r), "Access-Control-Allow-Methods: POST, OPTIONS\r\n") !=
        NULL);
  CHECK(strstr(in(&r), "Access-Control-Allow-Headers: Content-Type\r\n") !=
        NULL);
  CHECK(strstr(in(&r), "Vary: Origin\r\n") != NULL);
  CHECK_INT(f.bosh_calls, 0);
  /* A POST goes to the owner, whose answer gets the CORS headers. */
  xcm__buf_reset(&r.in);
  xcm_raw_sends(&r, "POST /http-bind/ HTTP/1.1\r\nHost: a\r\n"
                    "Origin: https://web.example.org\r\n"
                    "Content-Type: text/xml; charset=utf-8\r\n"
                    "Content-Length: 12\r\n\r\n<body rid/>\n");
  REQUIRE(xcm_test_run_until(&f.loop, is_set, &f.bosh_calls, WAIT_MS));
  CHECK_STR(f.bosh_body, "<body rid/>\n");
  REQUIRE(f.bosh_conn != NULL);
  CHECK_INT(xcm__http_respond(f.bosh_conn, 200, "text/xml; charset=utf-8",
                              "<body/>", 7),
            0);
  CHECK_INT(xcm__http_respond(f.bosh_conn, 200, "text/xml", "<x/>", 4),
            XCM_EINVAL);
  REQUIRE(xcm_raw_wait(&r, "<body/>", WAIT_MS));
  CHECK(strstr(in(&r), "Access-Control-Allow-Origin: https://web.example.org"
                       "\r\n") != NULL);
  CHECK(strstr(in(&r), "Content-Length: 7\r\n") != NULL);
  xcm_raw_free(&r);
  {
    unsigned before = xcm_test_failures();

    /* Another origin: the preflight and the POST are refused. */
    REFUSED(&f,
            "OPTIONS /http-bind/ HTTP/1.1\r\nHost: a\r\n"
            "Origin: https://evil.example\r\n\r\n",
            "HTTP/1.1 403 ");
    REFUSED(&f,
            "POST /http-bind/ HTTP/1.1\r\nHost: a\r\n"
            "Origin: https://evil.example\r\nContent-Length: 2\r\n\r\nhi",
            "HTTP/1.1 403 ");
    REFUSED(&f, "GET /http-bind/ HTTP/1.1\r\nHost: a\r\n\r\n", "HTTP/1.1 405 ");
    CHECK_INT(f.bosh_calls, 1);
    xcm_test_tried("malformed-http", before);
  }
  stop(&f);
}

static const char upgrade_head[] =
    "GET /ws/ HTTP/1.1\r\nHost: example.test\r\n"
    "Upgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n";

static void test_websocket_upgrade(void) {
  fixture f;
  xcm_raw r;
  char req[512];

  memset(&f, 0, sizeof f);
  defaults(&f.cfg);
  start(&f);
  /* RFC 6455's own example, section 1.3. */
  {
    char acc[29];

    CHECK_INT(xcm__http_ws_accept("dGhlIHNhbXBsZSBub25jZQ==", acc), 0);
    CHECK_STR(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    CHECK_INT(xcm__http_ws_accept("short", acc), XCM_EINVAL);
  }
  open_raw(&f, &r);
  /* The first frame's bytes come in the same write as the request: they
   * reach the new owner as early bytes. */
  snprintf(req, sizeof req,
           "%sOrigin: https://web.example.org\r\n"
           "Sec-WebSocket-Protocol: chat, xmpp\r\n\r\nearly",
           upgrade_head);
  xcm_raw_sends(&r, req);
  REQUIRE(xcm_raw_wait(&r, "early", WAIT_MS));
  CHECK(strncmp(in(&r), "HTTP/1.1 101 Switching Protocols\r\n", 34) == 0);
  CHECK(strstr(in(&r),
               "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n") !=
        NULL);
  CHECK(strstr(in(&r), "Sec-WebSocket-Protocol: xmpp\r\n") != NULL);
  CHECK(strstr(in(&r), "Upgrade: websocket\r\n") != NULL);
  CHECK_INT(f.ws_calls, 1);
  CHECK_STR(f.ws_origin, "https://web.example.org");
  CHECK_INT(xcm__http_server_counters(f.srv)->now, 0);
  /* The stream is the test's now: it echoes. */
  xcm__buf_reset(&r.in);
  xcm_raw_sends(&r, "GET / HTTP/1.1\r\n\r\n");
  CHECK(xcm_raw_wait(&r, "GET / HTTP/1.1\r\n\r\n", WAIT_MS));
  CHECK(strstr(in(&r), "HTTP/1.1 4") == NULL);
  xcm_raw_free(&r);
  CHECK(xcm_test_run_until(&f.loop, is_set, &f.echo_closed, WAIT_MS));
  /* A handler that does not take the stream: the connection closes. */
  f.detach = 0;
  open_raw(&f, &r);
  snprintf(req, sizeof req, "%sSec-WebSocket-Protocol: xmpp\r\n\r\n",
           upgrade_head);
  xcm_raw_sends(&r, req);
  CHECK(closed_by_server(&r));
  CHECK_INT(f.ws_calls, 2);
  xcm_raw_free(&r);
  stop(&f);
}

static void test_websocket_refused(void) {
  fixture f;
  char req[768];
  unsigned before;

  memset(&f, 0, sizeof f);
  defaults(&f.cfg);
  xcm__http_cfg_free(&f.cfg, NULL);
  memset(&f.cfg, 0, sizeof f.cfg);
  REQUIRE(xcm__http_cfg_parse(&f.cfg, NULL, "/http-bind/",
                              "/ws/, /xmpp-websocket",
                              "https://web.example.org", NULL, 0) == 0);
  limits(&f.cfg);
  start(&f);
  before = xcm_test_failures();
  /* No xmpp among the subprotocols (RFC 7395 section 3.1), or none. */
  snprintf(req, sizeof req, "%sSec-WebSocket-Protocol: chat, xmpp2\r\n\r\n",
           upgrade_head);
  refused(&f, req, strlen(req), "HTTP/1.1 400 ");
  snprintf(req, sizeof req, "%s\r\n", upgrade_head);
  refused(&f, req, strlen(req), "HTTP/1.1 400 ");
  /* An Origin not allowed. */
  snprintf(req, sizeof req,
           "%sOrigin: https://evil.example\r\n"
           "Sec-WebSocket-Protocol: xmpp\r\n\r\n",
           upgrade_head);
  refused(&f, req, strlen(req), "HTTP/1.1 403 ");
  /* No key; a key that is not 16 bytes; two keys. */
  REFUSED(&f,
          "GET /ws/ HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
          "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
          "Sec-WebSocket-Protocol: xmpp\r\n\r\n",
          "HTTP/1.1 400 ");
  REFUSED(&f,
          "GET /ws/ HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
          "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
          "Sec-WebSocket-Key: c2hvcnQ=\r\n"
          "Sec-WebSocket-Protocol: xmpp\r\n\r\n",
          "HTTP/1.1 400 ");
  snprintf(req, sizeof req,
           "%sSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           "Sec-WebSocket-Protocol: xmpp\r\n\r\n",
           upgrade_head);
  refused(&f, req, strlen(req), "HTTP/1.1 400 ");
  /* Another version: 426 naming the one served. */
  {
    xcm_raw r;

    open_raw(&f, &r);
    xcm_raw_sends(&r, "GET /ws/ HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Version: 8\r\n"
                      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      "Sec-WebSocket-Protocol: xmpp\r\n\r\n");
    CHECK(xcm_raw_wait(&r, "HTTP/1.1 426 ", WAIT_MS));
    CHECK(strstr(in(&r), "Sec-WebSocket-Version: 13\r\n") != NULL);
    CHECK(closed_by_server(&r));
    xcm_raw_free(&r);
  }
  /* Not an upgrade at all, and not a GET. */
  REFUSED(&f, "GET /xmpp-websocket HTTP/1.1\r\nHost: a\r\n\r\n",
          "HTTP/1.1 426 ");
  REFUSED(&f, "POST /ws/ HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
          "HTTP/1.1 405 ");
  CHECK_INT(f.ws_calls, 0);
  xcm_test_tried("malformed-http", before);
  stop(&f);
}

static void test_pipelined(void) {
  fixture f;
  xcm_raw r;
  const char *a, *b, *c;

  memset(&f, 0, sizeof f);
  defaults(&f.cfg);
  start(&f);
  open_raw(&f, &r);
  /* Three in one write: answered in order. */
  xcm_raw_sends(&r,
                "GET /one HTTP/1.1\r\nHost: a\r\n\r\n"
                "GET /.well-known/host-meta.json HTTP/1.1\r\nHost: a\r\n\r\n"
                "GET /three HTTP/1.1\r\nHost: a\r\n\r\n");
  REQUIRE(wait_answers(&r, 3));
  CHECK(xcm_raw_wait(&r, "]}", WAIT_MS));
  CHECK_INT(count(in(&r), "HTTP/1.1 "), 3);
  a = strstr(in(&r), "HTTP/1.1 404");
  b = strstr(in(&r), "HTTP/1.1 200");
  c = a ? strstr(a + 1, "HTTP/1.1 404") : NULL;
  CHECK(a != NULL && b != NULL && c != NULL && a < b && b < c);
  /* A BOSH request held by the owner: the 404 behind it waits for it. */
  xcm__buf_reset(&r.in);
  xcm_raw_sends(&r, "POST /http-bind/ HTTP/1.1\r\nHost: a\r\n"
                    "Content-Length: 7\r\n\r\n<body/>"
                    "GET /four HTTP/1.1\r\nHost: a\r\n\r\n");
  REQUIRE(xcm_test_run_until(&f.loop, is_set, &f.bosh_calls, WAIT_MS));
  xcm_test_run_until(&f.loop, is_set, &r.eof, 100); /* time to go wrong */
  CHECK_INT(r.in.len, 0);
  CHECK_INT(xcm__http_respond(f.bosh_conn, 200, "text/xml", "<held/>", 7), 0);
  REQUIRE(xcm_raw_wait(&r, "404 Not Found\n", WAIT_MS));
  a = strstr(in(&r), "<held/>");
  b = strstr(in(&r), "HTTP/1.1 404");
  CHECK(a != NULL && b != NULL && a < b);
  /* The client leaves with a request held: the owner hears of it. */
  xcm_raw_sends(&r, "POST /http-bind/ HTTP/1.1\r\nHost: a\r\n"
                    "Content-Length: 7\r\n\r\n<body/>");
  {
    at_least_t two = {&f.bosh_calls, 2};

    REQUIRE(xcm_test_run_until(&f.loop, at_least, &two, WAIT_MS));
  }
  xcm_raw_free(&r);
  CHECK(xcm_test_run_until(&f.loop, is_set, &f.gone_calls, WAIT_MS));
  CHECK(f.bosh_conn == NULL);
  stop(&f);
}

static int idle_conn_held(void *ud) {
  fixture *f = ud;

  return f->bosh_conn != NULL;
}

/* Memory follows activity: between requests a connection holds no
 * parser and no buffer. */
static void test_idle_footprint(void) {
  fixture f;
  xcm_raw r;
  size_t idle, busy;

  memset(&f, 0, sizeof f);
  defaults(&f.cfg);
  start(&f);
  open_raw(&f, &r);
  xcm_raw_sends(&r, "POST /http-bind/ HTTP/1.1\r\nHost: a\r\n"
                    "Content-Length: 7\r\n\r\n<body/>");
  REQUIRE(xcm_test_run_until(&f.loop, idle_conn_held, &f, WAIT_MS));
  CHECK_INT(xcm__http_respond(f.bosh_conn, 200, "text/xml", "<body/>", 7), 0);
  REQUIRE(xcm_raw_wait(&r, "<body/>", WAIT_MS));
  idle = xcm__http_conn_footprint(f.bosh_conn);
  xcm_raw_sends(&r, "GET /x HTTP/1.1\r\nHo");
  xcm_test_run_for(&f.loop, 50);
  busy = xcm__http_conn_footprint(f.bosh_conn);
  xcm_test_note("an idle keep-alive connection: %zu bytes (stream "
                "included); reading a request: %zu",
                idle, busy);
  CHECK(idle < 1024);
  CHECK(busy > idle + f.cfg.max_header);
  xcm_raw_free(&r);
  stop(&f);
}

static void test_body_limit(void) {
  fixture f;
  char *req;
  size_t n;
  unsigned before;

  memset(&f, 0, sizeof f);
  defaults(&f.cfg);
  f.cfg.max_body = 100;
  start(&f);
  before = xcm_test_failures();
  /* Said in Content-Length: refused before a byte of it is read. */
  REFUSED(&f,
          "POST /http-bind/ HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n",
          "HTTP/1.1 413 ");
  REFUSED(&f,
          "POST /http-bind/ HTTP/1.1\r\nHost: a\r\n"
          "Content-Length: 99999999999999999999999\r\n\r\n",
          "HTTP/1.1 400 ");
  /* Chunked: counted as it comes. */
  req = malloc(4096);
  REQUIRE(req != NULL);
  n = (size_t)snprintf(req, 4096,
                       "POST /http-bind/ HTTP/1.1\r\nHost: a\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n64\r\n%0100d\r\n"
                       "1\r\nx\r\n0\r\n\r\n",
                       0);
  refused(&f, req, n, "HTTP/1.1 413 ");
  free(req);
  CHECK_INT(f.bosh_calls, 0);
  xcm_test_tried("oversized", before);
  /* curl's Expect: the interim 100, then the request is read. */
  {
    xcm_raw r;

    open_raw(&f, &r);
    xcm_raw_sends(&r, "POST /http-bind/ HTTP/1.1\r\nHost: a\r\n"
                      "Expect: 100-continue\r\nContent-Length: 7\r\n\r\n");
    CHECK(xcm_raw_wait(&r, "HTTP/1.1 100 Continue\r\n\r\n", WAIT_MS));
    xcm_raw_sends(&r, "<body/>");
    CHECK(xcm_test_run_until(&f.loop, is_set, &f.bosh_calls, WAIT_MS));
    CHECK_STR(f.bosh_body, "<body/>");
    f.bosh_calls = 0;
    xcm_raw_free(&r);
  }
  /* At the limit: served. */
  {
    xcm_raw r;
    char body[101];

    memset(body, 'b', 100);
    body[100] = '\0';
    open_raw(&f, &r);
    xcm_raw_sends(&r, "POST /http-bind/ HTTP/1.1\r\nHost: a\r\n"
                      "Content-Length: 100\r\n\r\n");
    xcm_raw_sends(&r, body);
    CHECK(xcm_test_run_until(&f.loop, is_set, &f.bosh_calls, WAIT_MS));
    CHECK_INT(strlen(f.bosh_body), 100);
    xcm_raw_free(&r);
  }
  stop(&f);
}

static void test_header_limit(void) {
  fixture f;
  char *req;
  size_t n = 0;
  unsigned before;

  memset(&f, 0, sizeof f);
  defaults(&f.cfg);
  f.cfg.max_header = 1024;
  start(&f);
  before = xcm_test_failures();
  req = malloc(8192);
  REQUIRE(req != NULL);
  /* A long target: 414. */
  n = (size_t)snprintf(req, 8192, "GET /%01200d HTTP/1.1\r\nHost: a\r\n\r\n",
                       0);
  refused(&f, req, n, "HTTP/1.1 414 ");
  /* Many headers, of a kind the CM does not keep: 431. */
  n = (size_t)snprintf(req, 8192, "GET / HTTP/1.1\r\nHost: a\r\n");
  for (int i = 0; i < 60; i++)
    n += (size_t)snprintf(req + n, 8192 - n, "X-Filler-%d: %020d\r\n", i, i);
  n += (size_t)snprintf(req + n, 8192 - n, "\r\n");
  refused(&f, req, n, "HTTP/1.1 431 ");
  /* One long kept header: 431. */
  n = (size_t)snprintf(req, 8192,
                       "GET / HTTP/1.1\r\nHost: a\r\nOrigin: http://%01100d\r\n"
                       "\r\n",
                       0);
  refused(&f, req, n, "HTTP/1.1 431 ");
  free(req);
  xcm_test_tried("oversized", before);
  stop(&f);
}

static void test_slow_header(void) {
  fixture f;
  xcm_raw r;
  unsigned before;

  memset(&f, 0, sizeof f);
  defaults(&f.cfg);
  f.cfg.header_timeout_ms = 100;
  f.cfg.idle_timeout_ms = 150;
  start(&f);
  before = xcm_test_failures();
  /* Headers that never end: 408 from the loop's timer. */
  open_raw(&f, &r);
  xcm_raw_sends(&r, "GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ");
  CHECK(xcm_raw_wait(&r, "HTTP/1.1 408 Request Timeout\r\n", WAIT_MS));
  CHECK(closed_by_server(&r));
  xcm_raw_free(&r);
  /* A connection that says nothing: the header timeout too. */
  open_raw(&f, &r);
  CHECK(xcm_raw_wait(&r, "HTTP/1.1 408 ", WAIT_MS));
  CHECK(closed_by_server(&r));
  xcm_raw_free(&r);
  CHECK_INT(xcm__http_server_counters(f.srv)->header_timeouts, 2);
  xcm_test_tried("silent-connections", before);
  stop(&f);
  /* Idle between requests: closed without a word. The header timeout is
   * long here, so that a slow machine's request is not late for it. */
  memset(&f, 0, sizeof f);
  defaults(&f.cfg);
  f.cfg.idle_timeout_ms = 150;
  start(&f);
  open_raw(&f, &r);
  xcm_raw_sends(&r, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n");
  REQUIRE(xcm_raw_wait(&r, "404 Not Found\n", WAIT_MS));
  xcm__buf_reset(&r.in);
  CHECK(closed_by_server(&r));
  CHECK_INT(r.in.len, 0);
  CHECK_INT(xcm__http_server_counters(f.srv)->idle_timeouts, 1);
  xcm_raw_free(&r);
  stop(&f);
}

static int one_open(void *ud) {
  return xcm__http_server_counters(((fixture *)ud)->srv)->now == 1;
}

static void test_connection_limits(void) {
  fixture f;
  xcm_raw r[3], s;
  unsigned before;

  memset(&f, 0, sizeof f);
  defaults(&f.cfg);
  f.cfg.max_connections = 2;
  f.cfg.max_per_address = XCM__OFF;
  start(&f);
  before = xcm_test_failures();
  for (int i = 0; i < 3; i++)
    open_raw(&f, &r[i]);
  CHECK(xcm_raw_wait(&r[2], "HTTP/1.1 503 Service Unavailable\r\n", WAIT_MS));
  CHECK(closed_by_server(&r[2]));
  CHECK_INT(xcm__http_server_counters(f.srv)->refused_total, 1);
  /* The two within the limit are served. */
  for (int i = 0; i < 2; i++) {
    xcm_raw_sends(&r[i], "GET /x HTTP/1.1\r\nHost: a\r\n\r\n");
    CHECK(xcm_raw_wait(&r[i], "404 Not Found\n", WAIT_MS));
  }
  xcm_raw_free(&r[0]);
  /* One left once the server has seen the close: room for another. */
  CHECK(xcm_test_run_until(&f.loop, one_open, &f, WAIT_MS));
  open_raw(&f, &s);
  xcm_raw_sends(&s, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n");
  CHECK(xcm_raw_wait(&s, "404 Not Found\n", WAIT_MS));
  xcm_raw_free(&s);
  xcm_raw_free(&r[1]);
  xcm_raw_free(&r[2]);
  xcm_test_tried("connection-limits", before);
  stop(&f);
  /* Per address. */
  memset(&f, 0, sizeof f);
  defaults(&f.cfg);
  f.cfg.max_per_address = 1;
  start(&f);
  before = xcm_test_failures();
  open_raw(&f, &r[0]);
  open_raw(&f, &r[1]);
  CHECK(xcm_raw_wait(&r[1], "HTTP/1.1 503 ", WAIT_MS));
  CHECK(closed_by_server(&r[1]));
  CHECK_INT(xcm__http_server_counters(f.srv)->refused_address, 1);
  /* Another address is not counted with it. */
  REQUIRE(
      xcm_raw_open_from(&r[2], &f.loop, "127.0.0.2", "127.0.0.1", f.port, 1));
  xcm_raw_sends(&r[2], "GET /x HTTP/1.1\r\nHost: a\r\n\r\n");
  CHECK(xcm_raw_wait(&r[2], "404 Not Found\n", WAIT_MS));
  for (int i = 0; i < 3; i++)
    xcm_raw_free(&r[i]);
  xcm_test_tried("connection-limits", before);
  stop(&f);
}

static void test_malformed(void) {
  static const char *const bad[] = {
      "GARBAGE\r\n\r\n",
      "GET\r\n\r\n",
      "GET / HTTP/1.1\r\n\r\n", /* no Host */
      "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
      "POST /http-bind/ HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
      "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      "POST /http-bind/ HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
      "Content-Length: 6\r\n\r\nhello!",
      "POST /http-bind/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
      "\r\nzz\r\n",
      "GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n",
      "GET / HTTP/1.1\r\nHost\r\n\r\n",
      "GET http://other.example/ HTTP/1.1\r\nHost: a\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a\x01\r\n\r\n",
      "GET / HTTP/1.1\nHost: a\r\n\r\n\r\n\x7f",
      "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nGET / HTTP/1.1\r\n\r\n",
  };
  fixture f;

  memset(&f, 0, sizeof f);
  defaults(&f.cfg);
  start(&f);
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    unsigned before = xcm_test_failures();

    if (!refused(&f, bad[i], strlen(bad[i]), "HTTP/1.1 40"))
      xcm_test_note("case %zu", i);
    xcm_test_tried("malformed-http", before);
  }
  CHECK_INT(f.bosh_calls, 0);
  CHECK_INT(f.ws_calls, 0);
  {
    /* An upgrade to something else: answered as if there were none, once,
     * and the connection closed (nothing after it is HTTP). */
    xcm_raw r;
    unsigned before = xcm_test_failures();

    open_raw(&f, &r);
    xcm_raw_sends(&r, "GET /x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
                      "Upgrade: h2c\r\n\r\nGET /y HTTP/1.1\r\n\r\n");
    CHECK(xcm_raw_wait(&r, "404 Not Found\n", WAIT_MS));
    CHECK(closed_by_server(&r));
    CHECK_INT(count(in(&r), "HTTP/1.1 "), 1);
    CHECK(strstr(in(&r), "Connection: close\r\n") != NULL);
    xcm_raw_free(&r);
    xcm_test_tried("malformed-http", before);
  }
  stop(&f);
}

/* ---- TLS ------------------------------------------------------------------
 */

static void test_tls(void) {
  fixture f;
  tls_client t;
  xcm_tls_options o;
  xcm_tls_config *ccfg = NULL;
  struct sockaddr_in sa;
  char err[512];
  tc_wait w;
  char req[512];

  memset(&f, 0, sizeof f);
  defaults(&f.cfg);
  start(&f);
  memset(&o, 0, sizeof o);
  o.cert_file = xcm_test_cert("server.pem");
  o.key_file = xcm_test_cert("server-key.pem");
  o.alpn = "http/1.1";
  if (xcm__tls_config_new(&f.cfg.tls, &f.ctx, 1, &o, err, sizeof err) != 0)
    xcm_test_note("%s", err);
  REQUIRE(f.cfg.tls != NULL);
  memset(&o, 0, sizeof o);
  o.ca_file = xcm_test_cert("ca.pem");
  o.verify = 1;
  o.alpn = "http/1.1";
  REQUIRE(xcm__tls_config_new(&ccfg, &f.ctx, 0, &o, err, sizeof err) == 0);
  memset(&t, 0, sizeof t);
  xcm__buf_init(&t.in, NULL);
  uv_ip4_addr("127.0.0.1", f.port, &sa);
  REQUIRE(xcm__stream_connect(&t.s, &f.ctx, (struct sockaddr *)&sa, &tc_cb,
                              NULL, &t, NULL) == 0);
  REQUIRE(xcm__stream_start_tls(t.s, ccfg, 0, "example.test", NULL, 0) == 0);
  xcm__tls_config_unref(ccfg);
  snprintf(req, sizeof req,
           "GET /.well-known/host-meta HTTP/1.1\r\n"
           "Host: example.test\r\n\r\n");
  xcm__stream_write(t.s, req, strlen(req));
  w.t = &t;
  w.needle = "</XRD>";
  if (!xcm_test_run_until(&f.loop, tc_has, &w, WAIT_MS) || t.ended)
    xcm_test_note("done %d ended %d got %s", t.done, t.ended,
                  t.in.data ? t.in.data : "");
  REQUIRE(!t.ended && t.in.data != NULL);
  CHECK_INT(t.done, 1);
  CHECK(strstr(t.in.data, "HTTP/1.1 200 OK\r\n") == t.in.data);
  CHECK(strstr(t.in.data, "href='https://example.test/http-bind/'") != NULL);
  CHECK(strstr(t.in.data, "href='wss://example.test/ws/'") != NULL);
  CHECK_STR(xcm__stream_alpn(t.s), "http/1.1");
  /* The WebSocket handshake inside TLS, and the echo after it. */
  xcm__buf_reset(&t.in);
  snprintf(req, sizeof req, "%sSec-WebSocket-Protocol: xmpp\r\n\r\nearly!",
           upgrade_head);
  xcm__stream_write(t.s, req, strlen(req));
  w.needle = "early!";
  REQUIRE(xcm_test_run_until(&f.loop, tc_has, &w, WAIT_MS));
  CHECK(strstr(t.in.data,
               "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") != NULL);
  CHECK_INT(f.ws_calls, 1);
  xcm__stream_close(t.s);
  CHECK(xcm_test_run_until(&f.loop, is_set, &t.closed, WAIT_MS));
  xcm__buf_free(&t.in);
  stop(&f);
  /* The server's config goes once the context's streams are gone. */
  xcm__tls_config_unref(f.cfg.tls);
}

/* ---- PROXY ----------------------------------------------------------------
 */

static void test_proxy(void) {
  fixture f;
  xcm_raw r;
  unsigned before;

  memset(&f, 0, sizeof f);
  defaults(&f.cfg);
  f.cfg.proxy_protocol = 1;
  f.cfg.ntrusted =
      (unsigned)xcm__proxy_trust_parse("127.0.0.1", f.cfg.trusted, NULL, 0);
  f.cfg.max_per_address = 1;
  start(&f);
  open_raw(&f, &r);
  xcm_raw_sends(&r, "PROXY TCP4 192.0.2.7 192.0.2.1 40000 80\r\n"
                    "POST /http-bind/ HTTP/1.1\r\nHost: a\r\n"
                    "Content-Length: 7\r\n\r\n<body/>");
  REQUIRE(xcm_test_run_until(&f.loop, is_set, &f.bosh_calls, WAIT_MS));
  CHECK_STR(f.bosh_peer, "192.0.2.7");
  /* v2 from another client of the same balancer: counted apart. */
  {
    static const char v2[] = "\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c"
                             "\xc0\x00\x02\x08\xc0\x00\x02\x01\x9c\x40\x00\x50"
                             "GET /x HTTP/1.1\r\nHost: a\r\n\r\n";
    xcm_raw s;

    open_raw(&f, &s);
    xcm_raw_send(&s, v2, sizeof v2 - 1);
    CHECK(xcm_raw_wait(&s, "404 Not Found\n", WAIT_MS));
    xcm_raw_free(&s);
  }
  before = xcm_test_failures();
  /* The same client again: over its limit of one. */
  REFUSED(&f,
          "PROXY TCP4 192.0.2.7 192.0.2.1 40001 80\r\n"
          "GET /x HTTP/1.1\r\nHost: a\r\n\r\n",
          "HTTP/1.1 503 ");
  xcm_test_tried("connection-limits", before);
  /* No PROXY header: closed without a word. */
  before = xcm_test_failures();
  {
    xcm_raw s;

    open_raw(&f, &s);
    xcm_raw_sends(&s, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n");
    CHECK(closed_by_server(&s));
    CHECK_INT(s.in.len, 0);
    xcm_raw_free(&s);
  }
  CHECK_INT(xcm__http_server_counters(f.srv)->proxy_refused, 1);
  xcm_test_tried("proxy-headers", before);
  xcm_raw_free(&r);
  stop(&f);
  /* A source not trusted: closed before a byte is read. */
  memset(&f, 0, sizeof f);
  defaults(&f.cfg);
  f.cfg.proxy_protocol = 1;
  f.cfg.ntrusted =
      (unsigned)xcm__proxy_trust_parse("10.0.0.0/8", f.cfg.trusted, NULL, 0);
  start(&f);
  before = xcm_test_failures();
  open_raw(&f, &r);
  xcm_raw_sends(&r, "PROXY TCP4 192.0.2.7 192.0.2.1 40000 80\r\n");
  CHECK(closed_by_server(&r));
  CHECK_INT(r.in.len, 0);
  CHECK_INT(xcm__http_server_counters(f.srv)->proxy_untrusted, 1);
  xcm_raw_free(&r);
  xcm_test_tried("proxy-headers", before);
  stop(&f);
}

/* ---- through the public API ------------------------------------------------
 */

static void cm_down(void *ud, xcm_cm *cm) {
  (void)cm;
  *(int *)ud = 1;
}

static void test_public_listener(void) {
  uv_loop_t loop;
  xcm_options o;
  xcm_listen_options lo;
  xcm_cm *cm = NULL;
  xcm_raw r;
  char err[256];
  int down = 0;

  REQUIRE(uv_loop_init(&loop) == 0);
  xcm_options_init(&o, sizeof o);
  o.domain = "example.test";
  o.name = "cm1";
  o.secret = "cmsecret";
  o.server_port = 9; /* nobody: the HTTP side needs no upstream */
  REQUIRE(xcm_cm_new(&cm, &loop, &o, err, sizeof err) == 0);
  xcm_listen_options_init(&lo, sizeof lo);
  lo.http = 1;
  CHECK_STR(lo.http_bosh_path, "/http-bind/");
  CHECK_STR(lo.http_ws_paths, "/ws/, /xmpp-websocket");
  /* Checks with clear errors. */
  lo.http_bosh_path = "http-bind";
  CHECK_INT(xcm_listen_options_check(&lo, err, sizeof err), XCM_EINVAL);
  CHECK(strstr(err, "http_bosh_path") != NULL);
  lo.http_bosh_path = "/bosh";
  lo.http_origins = "https://a.example/path";
  CHECK_INT(xcm_listen_options_check(&lo, err, sizeof err), XCM_EINVAL);
  CHECK(strstr(err, "http_origins") != NULL);
  lo.http_origins = "https://a.example";
  lo.http_public_url = "ftp://x";
  CHECK_INT(xcm_listen_options_check(&lo, err, sizeof err), XCM_EINVAL);
  CHECK(strstr(err, "http_public_url") != NULL);
  lo.http_public_url = NULL;
  lo.http_max_header = 10;
  CHECK_INT(xcm_listen_options_check(&lo, err, sizeof err), XCM_EINVAL);
  CHECK(strstr(err, "http_max_header") != NULL);
  lo.http_max_header = 0;
  CHECK_INT(xcm_listen_options_check(&lo, err, sizeof err), 0);
  REQUIRE(xcm_cm_listen(cm, &lo, err, sizeof err) == 0);
  REQUIRE(xcm_cm_start(cm) == 0);
  REQUIRE(xcm_raw_open(&r, &loop, "127.0.0.1", xcm_cm_listener_port(cm, 0), 1));
  xcm_raw_sends(&r, "GET /.well-known/host-meta HTTP/1.1\r\n"
                    "Host: chat.example.test\r\n\r\n");
  CHECK(xcm_raw_wait(&r, "</XRD>", WAIT_MS));
  CHECK(strstr(in(&r), "href='http://chat.example.test/bosh'") != NULL);
  /* The BOSH layer has it (lib/web/): a body without a rid is a bad
   * request, and a legacy one (no ver) hears it as HTTP 400. */
  xcm__buf_reset(&r.in);
  xcm_raw_sends(&r, "POST /bosh HTTP/1.1\r\nHost: a\r\n"
                    "Content-Length: 7\r\n\r\n<body/>");
  CHECK(xcm_raw_wait(&r, "HTTP/1.1 400 ", WAIT_MS));
  {
    xcm_stats st;
    xcm_raw bad;

    REQUIRE(
        xcm_raw_open(&bad, &loop, "127.0.0.1", xcm_cm_listener_port(cm, 0), 1));
    xcm_raw_sends(&bad, "GET / HTTP/1.1\r\n\r\n");
    CHECK(closed_by_server(&bad));
    xcm_raw_free(&bad);
    CHECK_INT(xcm_cm_stats(cm, &st, sizeof st), 0);
    CHECK_INT(st.http_connections_now, 1);
    CHECK_INT(st.http_requests_refused, 1);
    CHECK_INT(st.clients_now, 0);
  }
  /* HTTPS: the same certificate options as an XMPP listener, with SNI
   * and reload. */
  xcm_listen_options_init(&lo, sizeof lo);
  lo.http = 1;
  lo.cert_file = xcm_test_cert("server.pem");
  lo.key_file = xcm_test_cert("server-key.pem");
  REQUIRE(xcm_cm_listen(cm, &lo, err, sizeof err) == 0);
  CHECK_INT(xcm_cm_listen_add_cert(cm, 1, xcm_test_cert("second.pem"),
                                   xcm_test_cert("second-key.pem"), err,
                                   sizeof err),
            0);
  CHECK_INT(xcm_cm_reload_certs(cm, err, sizeof err), 1);
  {
    xcm_ctx *cctx = calloc(1, sizeof *cctx);
    tls_client t;
    xcm_tls_options to;
    xcm_tls_config *ccfg = NULL;
    struct sockaddr_in sa;
    tc_wait w = {&t, "</XRD>"};
    static const char get[] = "GET /.well-known/host-meta HTTP/1.1\r\n"
                              "Host: second.test\r\n\r\n";

    REQUIRE(cctx != NULL && xcm__ctx_init(cctx, &loop, NULL) == 0);
    memset(&to, 0, sizeof to);
    to.ca_file = xcm_test_cert("ca.pem");
    to.verify = 1;
    REQUIRE(xcm__tls_config_new(&ccfg, cctx, 0, &to, err, sizeof err) == 0);
    memset(&t, 0, sizeof t);
    xcm__buf_init(&t.in, NULL);
    uv_ip4_addr("127.0.0.1", xcm_cm_listener_port(cm, 1), &sa);
    REQUIRE(xcm__stream_connect(&t.s, cctx, (struct sockaddr *)&sa, &tc_cb,
                                NULL, &t, NULL) == 0);
    /* SNI picks the second certificate, which names second.test. */
    REQUIRE(xcm__stream_start_tls(t.s, ccfg, 0, "second.test", NULL, 0) == 0);
    xcm__tls_config_unref(ccfg);
    xcm__stream_write(t.s, get, sizeof get - 1);
    CHECK(xcm_test_run_until(&loop, tc_has, &w, WAIT_MS));
    CHECK_INT(t.done, 1);
    CHECK(t.in.data != NULL &&
          strstr(t.in.data, "href='https://second.test/http-bind/'") != NULL);
    xcm__stream_close(t.s);
    CHECK(xcm_test_run_until(&loop, is_set, &t.closed, WAIT_MS));
    xcm__buf_free(&t.in);
    F = calloc(1, sizeof *F);
    xcm__ctx_close(cctx, ctx_closed);
    CHECK(xcm_test_run_until(&loop, is_set, &F->ctx_closed, WAIT_MS));
    free(F);
    F = NULL;
    free(cctx);
  }
  /* A shutdown ends the connection left open. */
  CHECK_INT(xcm_cm_shutdown(cm, 0, cm_down, &down), 0);
  CHECK(closed_by_server(&r));
  xcm_raw_free(&r);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(down, 1);
  xcm_cm_free(cm);
  CHECK_INT(uv_loop_close(&loop), 0);
}

static const xcm_test tests[] = {
    {"host_meta", test_host_meta},
    {"host_meta_public_url", test_host_meta_public_url},
    {"not_found_keep_alive", test_not_found_keep_alive},
    {"cors", test_cors},
    {"websocket_upgrade", test_websocket_upgrade},
    {"websocket_refused", test_websocket_refused},
    {"pipelined", test_pipelined},
    {"idle_footprint", test_idle_footprint},
    {"body_limit", test_body_limit},
    {"header_limit", test_header_limit},
    {"slow_header", test_slow_header},
    {"connection_limits", test_connection_limits},
    {"malformed", test_malformed},
    {"tls", test_tls},
    {"proxy", test_proxy},
    {"public_listener", test_public_listener},
};

int main(int argc, char **argv) {
  return xcm_test_main(argc, argv, XCM_TESTS(tests));
}
