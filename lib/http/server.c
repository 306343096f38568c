/* HTTP/1.1 connections of one listener: see http.h.
 *
 * A connection reads requests one at a time (http/request.h: http-parser
 * stops at the end of each), so that each is dispatched before the next
 * byte is looked at. What a request needs (its target and the few
 * headers the CM reads) is kept in one allocation, a reading, made at
 * the request's first byte and freed once it is dispatched. Every request
 * gets an `exchange`, in arrival order; answers are written in that
 * order, so an answer made early (a 404 behind a held BOSH request)
 * waits in its exchange. */
#include <http_parser.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "http/http.h"
#include "http/request.h"
#include "util/alloc.h"
#include "util/map.h"
#include "xcm/error.h"

/* Output queued for a client that does not read before the connection
 * stops reading requests, and when it reads them again. */
#define HIGH_WATER 65536
#define LOW_WATER 16384
/* Far more than any answer here: a safety net, not a limit in use. */
#define MAX_OUT (8u << 20)

typedef xcm_http_reading reading;

typedef struct exchange {
  struct exchange *next;
  int bosh;        /* the owner's to answer */
  int close_after; /* close once written */
  int answered;
  xcm_buf out;
} exchange;

struct xcm_http_conn {
  xcm_http_server *srv;
  xcm_http_conn *prev, *next;
  xcm_stream *stream;
  uv_timer_t *timer; /* NULL while the owner holds a request: see arm() */
  reading *rd;
  xcm_proxy *proxy;
  char *peer; /* the PROXY header's client, or NULL */
  struct addr_count *addr;
  exchange *head, *tail;
  unsigned nex; /* exchanges not yet written */
  char *held;   /* input read but not parsed yet (reading is stopped) */
  size_t held_len;
  uint64_t created, last;
  unsigned requests;
  unsigned handles; /* the stream, and the timer while it is allocated */
  unsigned flags;
  void *data;
  const char *early;
  size_t early_len;
};

enum {
  CF_CLOSING = 1,
  CF_STOPPED = 2,  /* not reading requests: pipeline full, output high */
  CF_KICK = 4,     /* go on with held input from the timer */
  CF_DETACHED = 8, /* the stream is the WebSocket layer's */
  CF_REFUSED = 16, /* answered with a refusal; reads nothing more */
  CF_COUNTED = 32  /* counts in the server's connections */
};

typedef struct addr_count {
  xcm_map_entry e;
  unsigned n;
  char key[46];
} addr_count;

struct xcm_http_server {
  xcm_ctx *ctx;
  const xcm_http_cfg *cfg;
  xcm_http_handlers h;
  xcm_http_counters counters;
  xcm_http_conn *head;
  unsigned open; /* connections not yet freed, refused ones too */
  xcm_map per_address;
  int closing;
  void (*done)(void *ud);
  void *done_ud;
};

static void conn_close(xcm_http_conn *c);
static void conn_drop(xcm_http_conn *c);
static void reading_free(xcm_http_conn *c);
static void on_head(void *ud, reading *rd);
static void feed(xcm_http_conn *c, const char *data, size_t len);
static void arm(xcm_http_conn *c);

static uint64_t now(const xcm_http_conn *c) {
  return uv_now(c->srv->ctx->loop);
}

/* ---- per-address counts ------------------------------------------------- */

static addr_count *count_address(xcm_http_server *srv, const char *key,
                                 int *over) {
  addr_count *a;
  size_t n = strlen(key);

  *over = 0;
  if (srv->cfg->max_per_address == XCM__OFF || n >= sizeof a->key)
    return NULL;
  a = (addr_count *)xcm__map_get(&srv->per_address, key, n);
  if (a == NULL) {
    a = xcm__calloc(srv->ctx->alloc, sizeof(*a));
    if (a == NULL)
      return NULL;
    memcpy(a->key, key, n + 1);
    a->e.key = a->key;
    if (xcm__map_put(&srv->per_address, &a->e) != 0) {
      xcm__free(srv->ctx->alloc, a);
      return NULL;
    }
  }
  if (a->n >= srv->cfg->max_per_address) {
    *over = 1;
    if (a->n == 0) {
      xcm__map_remove(&srv->per_address, &a->e);
      xcm__free(srv->ctx->alloc, a);
    }
    return NULL;
  }
  a->n++;
  return a;
}

static void uncount_address(xcm_http_server *srv, addr_count *a) {
  if (a != NULL && --a->n == 0) {
    xcm__map_remove(&srv->per_address, &a->e);
    xcm__free(srv->ctx->alloc, a);
  }
}

/* ---- answers ------------------------------------------------------------ */

static int is_bosh(const xcm_http_conn *c, const char *path) {
  return c->srv->cfg->bosh_path[0] != '\0' &&
         strcmp(path, c->srv->cfg->bosh_path) == 0;
}

static int append_header(xcm_buf *b, const char *name, const char *value) {
  return xcm__buf_append_str(b, name) || xcm__buf_append_str(b, ": ") ||
         xcm__buf_append_str(b, value) || xcm__buf_append_str(b, "\r\n");
}

/* Build an answer into b: the status line, the headers the layer owns
 * (Content-Length, Connection, CORS for an allowed origin), extra (whole
 * "Name: value\r\n" lines, or NULL), and the body. */
static int build(xcm_buf *b, int status, const char *ctype, const char *body,
                 size_t len, const char *extra, const char *cors_origin,
                 int close_after, int head_only) {
  char line[96];
  int err;

  snprintf(line, sizeof line, "HTTP/1.1 %d %s\r\n", status,
           xcm__http_reason(status));
  err = xcm__buf_append_str(b, line);
  if (ctype != NULL)
    err = err || append_header(b, "Content-Type", ctype);
  snprintf(line, sizeof line, "%zu", len);
  err = err || append_header(b, "Content-Length", line);
  if (close_after)
    err = err || append_header(b, "Connection", "close");
  if (cors_origin != NULL)
    err = err || append_header(b, "Access-Control-Allow-Origin", cors_origin) ||
          append_header(b, "Vary", "Origin");
  err = err || (extra != NULL && xcm__buf_append_str(b, extra)) ||
        xcm__buf_append_str(b, "\r\n") ||
        (!head_only && len > 0 && xcm__buf_append(b, body, len));
  return err ? XCM_ENOMEM : 0;
}

static exchange *enqueue(xcm_http_conn *c) {
  exchange *x = xcm__calloc(c->srv->ctx->alloc, sizeof(*x));

  if (x == NULL)
    return NULL;
  xcm__buf_init(&x->out, c->srv->ctx->alloc);
  if (c->tail != NULL)
    c->tail->next = x;
  else
    c->head = x;
  c->tail = x;
  c->nex++;
  return x;
}

static void free_exchange(xcm_http_conn *c, exchange *x) {
  xcm__buf_free(&x->out);
  xcm__free(c->srv->ctx->alloc, x);
}

/* Go on reading from the timer, outside whatever call got us here (the
 * owner's xcm__http_respond, a drain), so that no handler is entered
 * from inside another. */
static void kick(xcm_http_conn *c) {
  if (c->flags & (CF_CLOSING | CF_DETACHED | CF_REFUSED))
    return;
  c->flags |= CF_KICK;
  arm(c);
}

/* Write the answers at the head of the queue, in order. */
static void flush(xcm_http_conn *c) {
  while (c->head != NULL && c->head->answered && !(c->flags & CF_CLOSING)) {
    exchange *x = c->head;
    int close_after = x->close_after;

    if (xcm__stream_write(c->stream, x->out.data, x->out.len) != 0)
      close_after = 1;
    c->head = x->next;
    if (c->head == NULL)
      c->tail = NULL;
    c->nex--;
    free_exchange(c, x);
    if (close_after) {
      conn_close(c);
      return;
    }
  }
  if ((c->flags & CF_STOPPED) && c->nex < HTTP_MAX_PIPELINE &&
      !xcm__stream_over(c->stream))
    kick(c);
  arm(c);
}

static void answer(xcm_http_conn *c, exchange *x, int status, const char *ctype,
                   const char *body, size_t len, const char *extra,
                   const char *cors, int close_after, int head_only) {
  if (build(&x->out, status, ctype, body, len, extra, cors, close_after,
            head_only) != 0) {
    xcm__buf_reset(&x->out);
    close_after = 1;
  }
  x->answered = 1;
  x->close_after = close_after;
  flush(c);
}

/* A refusal ends the connection: nothing after it is read. */
static void refuse(xcm_http_conn *c, int status, const char *extra) {
  exchange *x;
  char body[128];
  int n;

  if (c->flags & (CF_REFUSED | CF_CLOSING))
    return;
  c->flags |= CF_REFUSED;
  if (status >= 400 && status < 500 && status != 408)
    c->srv->counters.errors++;
  reading_free(c);
  xcm__stream_pause(c->stream);
  xcm__free(c->srv->ctx->alloc, c->held);
  c->held = NULL;
  c->held_len = 0;
  x = enqueue(c);
  if (x == NULL) {
    conn_close(c);
    return;
  }
  n = snprintf(body, sizeof body, "%d %s\n", status, xcm__http_reason(status));
  answer(c, x, status, "text/plain; charset=utf-8", body, (size_t)n, extra,
         NULL, 1, 0);
}

int xcm__http_respond(xcm_http_conn *c, int status, const char *content_type,
                      const char *body, size_t len) {
  exchange *x;

  if (c->flags & (CF_CLOSING | CF_DETACHED))
    return XCM_ECLOSED;
  for (x = c->head; x != NULL; x = x->next)
    if (x->bosh && !x->answered)
      break;
  if (x == NULL)
    return XCM_EINVAL;
  /* The CORS origin was decided when the request came: it is kept in
   * out until now (see dispatch_bosh). */
  {
    xcm_buf cors = x->out;

    xcm__buf_init(&x->out, c->srv->ctx->alloc);
    if (build(&x->out, status, content_type, body, len, NULL,
              cors.len > 0 ? cors.data : NULL, x->close_after, 0) != 0) {
      xcm__buf_reset(&x->out);
      x->close_after = 1;
    }
    xcm__buf_free(&cors);
  }
  x->answered = 1;
  flush(c);
  return 0;
}

/* ---- requests ----------------------------------------------------------- */

static const char *hval(const reading *rd, int h) {
  return xcm__http_reading_header(rd, h);
}

/* Whether the comma-separated list holds token (case-insensitive). */
static int has_token(const char *list, const char *token) {
  size_t n = strlen(token);

  while (list != NULL && *list != '\0') {
    const char *end = strchr(list, ','), *e;

    if (end == NULL)
      end = list + strlen(list);
    while (list < end && (*list == ' ' || *list == '\t'))
      list++;
    e = end;
    while (e > list && (e[-1] == ' ' || e[-1] == '\t'))
      e--;
    if ((size_t)(e - list) == n && strncasecmp(list, token, n) == 0)
      return 1;
    list = *end ? end + 1 : end;
  }
  return 0;
}

/* A Host that may go into host-meta as it is: host characters only. */
static int good_host(const char *h) {
  if (h == NULL || *h == '\0' || strlen(h) > 255)
    return 0;
  for (; *h; h++)
    if (!((*h >= 'a' && *h <= 'z') || (*h >= 'A' && *h <= 'Z') ||
          (*h >= '0' && *h <= '9') || *h == '.' || *h == '-' || *h == ':' ||
          *h == '[' || *h == ']'))
      return 0;
  return 1;
}

static void serve_host_meta(xcm_http_conn *c, exchange *x, const reading *rd,
                            int json, int head_only, int close_after) {
  const xcm_http_cfg *cfg = c->srv->cfg;
  char http[320], ws[320];
  xcm_buf b;

  if (cfg->public_url != NULL) {
    const char *rest = strstr(cfg->public_url, "://");
    int tls = strncasecmp(cfg->public_url, "https", 5) == 0;

    snprintf(http, sizeof http, "%s", cfg->public_url);
    snprintf(ws, sizeof ws, "%s%s", tls ? "wss" : "ws", rest ? rest : "");
  } else {
    const char *host = hval(rd, H_HOST);
    int tls = cfg->tls != NULL;

    if (!good_host(host)) {
      c->srv->counters.errors++;
      answer(c, x, 400, "text/plain", "400 Bad Request\n", 16, NULL, NULL, 1,
             0);
      return;
    }
    snprintf(http, sizeof http, "%s://%s", tls ? "https" : "http", host);
    snprintf(ws, sizeof ws, "%s://%s", tls ? "wss" : "ws", host);
  }
  /* The base may end in '/', the paths begin with one. */
  if (http[0] && http[strlen(http) - 1] == '/')
    http[strlen(http) - 1] = '\0';
  if (ws[0] && ws[strlen(ws) - 1] == '/')
    ws[strlen(ws) - 1] = '\0';
  xcm__buf_init(&b, c->srv->ctx->alloc);
  if (xcm__http_host_meta(&b, cfg, http, ws, json) != 0) {
    xcm__buf_free(&b);
    answer(c, x, 500, NULL, NULL, 0, NULL, NULL, 1, 0);
    return;
  }
  /* XEP-0156: host-meta is fetched by pages on other origins. */
  answer(c, x, 200, json ? "application/json" : "application/xrd+xml", b.data,
         b.len, NULL, "*", close_after, head_only);
  xcm__buf_free(&b);
}

static void dispatch_ws(xcm_http_conn *c, exchange *x, reading *rd,
                        const xcm_http_request *req) {
  xcm_http_server *srv = c->srv;
  const char *version = hval(rd, H_WS_VERSION);
  char accept[29], head[160];
  const char *early = c->early;
  size_t early_len = c->early_len;

  if (srv->h.websocket == NULL) {
    answer(c, x, 404, "text/plain", "404 Not Found\n", 14, NULL, NULL, 1, 0);
    return;
  }
  if (strcmp(req->method, "GET") != 0) {
    c->srv->counters.errors++;
    answer(c, x, 405, "text/plain", "405 Method Not Allowed\n", 23,
           "Allow: GET\r\n", NULL, 1, 0);
    return;
  }
  if (!has_token(hval(rd, H_UPGRADE), "websocket") ||
      !has_token(hval(rd, H_CONNECTION), "upgrade")) {
    c->srv->counters.errors++;
    answer(c, x, 426, "text/plain", "426 WebSocket only here\n", 24,
           "Upgrade: websocket\r\nConnection: Upgrade\r\n", NULL, 1, 0);
    return;
  }
  if (version == NULL || strcmp(version, "13") != 0) {
    c->srv->counters.errors++;
    answer(c, x, 426, "text/plain", "426 WebSocket version 13 only\n", 30,
           "Sec-WebSocket-Version: 13\r\n", NULL, 1, 0);
    return;
  }
  if (req->ws_key == NULL || xcm__http_ws_accept(req->ws_key, accept) != 0) {
    c->srv->counters.errors++;
    answer(c, x, 400, "text/plain", "400 Bad Sec-WebSocket-Key\n", 26, NULL,
           NULL, 1, 0);
    return;
  }
  if (!xcm__http_origin_ok(srv->cfg, req->origin)) {
    c->srv->counters.errors++;
    answer(c, x, 403, "text/plain", "403 Origin not allowed\n", 23, NULL, NULL,
           1, 0);
    return;
  }
  /* RFC 7395 section 3.1: the xmpp subprotocol, or no handshake. */
  if (!has_token(req->ws_protocol, "xmpp")) {
    c->srv->counters.errors++;
    answer(c, x, 400, "text/plain", "400 Subprotocol xmpp required\n", 30, NULL,
           NULL, 1, 0);
    return;
  }
  /* An upgrade behind requests still waiting for their answers would
   * have to wait for them; browsers never send one so. */
  if (c->nex > 1) {
    c->srv->counters.errors++;
    answer(c, x, 400, "text/plain", "400 Upgrade behind pending requests\n", 36,
           NULL, NULL, 1, 0);
    return;
  }
  snprintf(head, sizeof head,
           "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n"
           "Sec-WebSocket-Protocol: xmpp\r\n\r\n",
           accept);
  c->head = c->tail = NULL;
  c->nex = 0;
  free_exchange(c, x);
  if (xcm__stream_write(c->stream, head, strlen(head)) != 0) {
    conn_close(c);
    return;
  }
  srv->counters.upgrades++;
  c->early = early;
  c->early_len = early_len;
  srv->h.websocket(srv->h.ud, c, req);
  if (!(c->flags & CF_DETACHED))
    conn_close(c);
}

static void dispatch_bosh(xcm_http_conn *c, exchange *x, reading *rd,
                          const xcm_http_request *req) {
  xcm_http_server *srv = c->srv;
  int allowed = xcm__http_origin_ok(srv->cfg, req->origin);
  const char *cors = req->origin == NULL ? NULL
                     : srv->cfg->any_origin && srv->cfg->norigins == 0
                         ? "*"
                         : req->origin;

  if (strcmp(req->method, "OPTIONS") == 0) {
    /* A CORS preflight: answered here. */
    if (!allowed) {
      srv->counters.errors++;
      answer(c, x, 403, "text/plain", "403 Origin not allowed\n", 23, NULL,
             NULL, 1, 0);
      return;
    }
    answer(c, x, 200, NULL, NULL, 0,
           "Access-Control-Allow-Methods: POST, OPTIONS\r\n"
           "Access-Control-Allow-Headers: Content-Type\r\n"
           "Access-Control-Max-Age: 86400\r\n",
           cors, !req->keep_alive, 0);
    return;
  }
  if (strcmp(req->method, "POST") != 0) {
    srv->counters.errors++;
    answer(c, x, 405, "text/plain", "405 Method Not Allowed\n", 23,
           "Allow: POST, OPTIONS\r\n", NULL, 1, 0);
    return;
  }
  if (!allowed) {
    srv->counters.errors++;
    answer(c, x, 403, "text/plain", "403 Origin not allowed\n", 23, NULL, NULL,
           1, 0);
    return;
  }
  if (srv->h.bosh == NULL) {
    answer(c, x, 404, "text/plain", "404 Not Found\n", 14, NULL, NULL,
           !req->keep_alive, 0);
    return;
  }
  x->bosh = 1;
  x->close_after = !req->keep_alive;
  /* Keep the CORS origin for the answer in out until then. */
  if (cors != NULL && xcm__buf_append(&x->out, cors, strlen(cors) + 1) != 0) {
    answer(c, x, 500, NULL, NULL, 0, NULL, NULL, 1, 0);
    return;
  }
  srv->h.bosh(srv->h.ud, c, req, rd->body.data != NULL ? rd->body.data : "",
              rd->body.len);
}

/* A whole request was read: answer it or hand it on. rd is freed by the
 * caller afterwards. */
static void dispatch(xcm_http_conn *c, reading *rd) {
  xcm_http_request req;
  const xcm_http_cfg *cfg = c->srv->cfg;
  char *path = xcm__http_reading_target(rd), *q;
  exchange *x;
  int head_only;

  memset(&req, 0, sizeof req);
  c->requests++;
  req.method = http_method_str((enum http_method)rd->p.method);
  req.http_minor = rd->p.http_minor;
  /* http-parser reads nothing after a request it took for an upgrade
   * (Connection: upgrade): whatever the answer, it is the last. */
  req.keep_alive = http_should_keep_alive(&rd->p) && !rd->p.upgrade;
  req.host = hval(rd, H_HOST);
  req.origin = hval(rd, H_ORIGIN);
  req.content_type = hval(rd, H_CONTENT_TYPE);
  req.ws_key = hval(rd, H_WS_KEY);
  req.ws_protocol = hval(rd, H_WS_PROTOCOL);
  /* The target without its query; an absolute form is not served. */
  q = strchr(path, '?');
  if (q != NULL)
    *q = '\0';
  req.path = path;
  /* RFC 7230 5.4: a 1.1 request without Host is refused. */
  if (path[0] != '/' ||
      (rd->p.http_major == 1 && rd->p.http_minor >= 1 && req.host == NULL)) {
    refuse(c, 400, NULL);
    return;
  }
  x = enqueue(c);
  if (x == NULL) {
    conn_close(c);
    return;
  }
  head_only = strcmp(req.method, "HEAD") == 0;
  if (strcmp(path, "/.well-known/host-meta") == 0 ||
      strcmp(path, "/.well-known/host-meta.json") == 0) {
    if (strcmp(req.method, "GET") != 0 && !head_only) {
      c->srv->counters.errors++;
      answer(c, x, 405, "text/plain", "405 Method Not Allowed\n", 23,
             "Allow: GET, HEAD\r\n", NULL, 1, 0);
      return;
    }
    serve_host_meta(c, x, rd, path[22] == '.', head_only, !req.keep_alive);
    return;
  }
  if (is_bosh(c, path)) {
    dispatch_bosh(c, x, rd, &req);
    return;
  }
  for (unsigned i = 0; i < cfg->nws; i++)
    if (strcmp(path, cfg->ws_paths[i]) == 0) {
      dispatch_ws(c, x, rd, &req);
      return;
    }
  answer(c, x, 404, "text/plain", "404 Not Found\n", 14, NULL, NULL,
         !req.keep_alive, head_only);
}

static void reading_free(xcm_http_conn *c) {
  xcm__http_reading_free(c->rd);
  c->rd = NULL;
}

/* A request's headers are in and within the limits. */
static void on_head(void *ud, reading *rd) {
  xcm_http_conn *c = ud;
  const char *expect = xcm__http_reading_header(rd, H_EXPECT);

  /* curl asks before it sends a body over 1 KiB: say go on, unless
   * answers to earlier requests must come first (then it sends the body
   * after its own wait). */
  if (expect != NULL && c->nex == 0 && strcasecmp(expect, "100-continue") == 0)
    xcm__stream_write(c->stream, "HTTP/1.1 100 Continue\r\n\r\n", 25);
  arm(c); /* from the header timeout to the idle one */
}

/* Stop reading requests; keep what was read and not parsed. */
static void hold(xcm_http_conn *c, const char *data, size_t len) {
  c->flags |= CF_STOPPED;
  xcm__stream_pause(c->stream);
  if (len == 0)
    return;
  {
    char *h = xcm__alloc(c->srv->ctx->alloc, len);

    if (h == NULL) {
      conn_close(c);
      return;
    }
    memcpy(h, data, len);
    c->held = h;
    c->held_len = len;
  }
}

static void feed(xcm_http_conn *c, const char *data, size_t len) {
  while (len > 0) {
    reading *rd;
    size_t n;
    int r, upgrade;

    if (c->flags & (CF_CLOSING | CF_DETACHED | CF_REFUSED))
      return;
    if (c->nex >= HTTP_MAX_PIPELINE || xcm__stream_over(c->stream)) {
      hold(c, data, len);
      return;
    }
    if (c->rd == NULL) {
      c->rd = xcm__http_reading_new(c->srv->ctx->alloc, c->srv->cfg->max_header,
                                    c->srv->cfg->max_body, on_head, c);
      if (c->rd == NULL) {
        refuse(c, 503, NULL);
        return;
      }
      c->rd->start = now(c);
      arm(c);
    }
    rd = c->rd;
    r = xcm__http_reading_feed(rd, data, len, &n);
    if (r >= 400) {
      refuse(c, r, NULL);
      return;
    }
    data += n;
    len -= n;
    if (r == 0)
      continue;
    /* The bytes after an upgrade request are the new protocol's. */
    upgrade = rd->p.upgrade;
    c->early = data;
    c->early_len = len;
    dispatch(c, rd);
    reading_free(c);
    if (c->flags & CF_DETACHED)
      return;
    /* After an upgrade request not taken (see dispatch), nothing more
     * is read: its answer closes the connection. */
    if (upgrade && !(c->flags & CF_CLOSING)) {
      c->flags |= CF_REFUSED;
      xcm__stream_pause(c->stream);
      return;
    }
    arm(c);
  }
}

/* ---- the stream --------------------------------------------------------- */

static const char *peer_of(const xcm_http_conn *c) {
  return c->peer != NULL ? c->peer : xcm__stream_peer(c->stream);
}

/* Read the PROXY header from the front of what arrived (proxy.h), as
 * the XMPP listeners do (client/client.c). Returns 1 with *data, *len
 * past it when the request may follow in clear. */
static int read_proxy(xcm_http_conn *c, const char **data, size_t *len) {
  xcm_http_server *srv = c->srv;
  xcm_proxy_header h;
  size_t used;
  int over, r = xcm__proxy_feed(c->proxy, *data, *len, &used, &h);

  if (r == 0)
    return 0;
  xcm__free(srv->ctx->alloc, c->proxy);
  c->proxy = NULL;
  if (r < 0) {
    srv->counters.proxy_refused++;
    xcm__log(srv->ctx, XCM_LOG_DEBUG, "%s: no valid PROXY header: closed",
             peer_of(c));
    conn_drop(c);
    return 0;
  }
  *data += used;
  *len -= used;
  if (!h.local) {
    c->peer = xcm__strndup(srv->ctx->alloc, h.src, strlen(h.src));
    if (c->peer == NULL) {
      conn_close(c);
      return 0;
    }
    xcm__stream_set_peer(c->stream, c->peer);
  }
  c->addr = count_address(srv, peer_of(c), &over);
  if (over) {
    srv->counters.refused_address++;
    refuse(c, 503, NULL);
    return 0;
  }
  if (srv->cfg->tls != NULL) {
    if (xcm__stream_start_tls(c->stream, srv->cfg->tls, 1, NULL, *data, *len) !=
        0)
      conn_close(c);
    return 0;
  }
  return 1;
}

static void on_read(void *ud, const char *data, size_t len) {
  xcm_http_conn *c = ud;

  c->last = now(c);
  if (c->flags & (CF_CLOSING | CF_REFUSED))
    return;
  if (c->proxy != NULL && !read_proxy(c, &data, &len))
    return;
  feed(c, data, len);
  if (!(c->flags & (CF_CLOSING | CF_DETACHED)))
    arm(c);
}

static void on_end(void *ud, int err) {
  xcm_http_conn *c = ud;

  (void)err;
  /* A client that half-closed after its last request still gets the
   * answers already made: the close sends what is queued. */
  conn_close(c);
}

static void on_drain(void *ud) {
  xcm_http_conn *c = ud;

  if (c->flags & CF_STOPPED)
    flush(c);
}

static void handle_gone(xcm_http_conn *c);
static void timer_drop(xcm_http_conn *c);

static void on_closed(void *ud) {
  xcm_http_conn *c = ud;

  c->stream = NULL;
  timer_drop(c);
  handle_gone(c);
}

static const xcm_stream_cb stream_cb = {on_read, on_end, NULL, on_drain,
                                        on_closed};

/* ---- timers ------------------------------------------------------------- */

static void on_timer(uv_timer_t *t);

/* The timer is allocated while a deadline may be armed, and given back
 * while the owner holds a request (a waiting BOSH client always has
 * one): that connection then holds no timer (memory follows activity).
 * Each allocated timer counts as a handle of the connection, so that
 * the connection outlives the timer's close. */
static int timer_get(xcm_http_conn *c) {
  if (c->timer != NULL)
    return 0;
  c->timer = xcm__alloc(c->srv->ctx->alloc, sizeof(*c->timer));
  if (c->timer == NULL)
    return XCM_ENOMEM;
  uv_timer_init(c->srv->ctx->loop, c->timer);
  c->timer->data = c;
  c->handles++;
  return 0;
}

static void timer_closed(uv_handle_t *h) {
  xcm_http_conn *c = h->data;

  xcm__free(c->srv->ctx->alloc, h);
  handle_gone(c);
}

static void timer_drop(xcm_http_conn *c) {
  if (c->timer == NULL)
    return;
  uv_close((uv_handle_t *)c->timer, timer_closed);
  c->timer = NULL;
}

/* The next deadline: the header timeout while a request's line and
 * headers are being read (or before the first request), the idle
 * timeout while nothing is under way or a body is being read; none while
 * the owner holds a request. */
static void arm(xcm_http_conn *c) {
  const xcm_http_cfg *cfg = c->srv->cfg;
  uint64_t due = 0, n = now(c);
  int have = 1;
  unsigned ms;

  if (c->flags & (CF_CLOSING | CF_DETACHED | CF_REFUSED)) {
    if (!(c->flags & (CF_CLOSING | CF_DETACHED)) && c->timer != NULL)
      uv_timer_stop(c->timer);
    return;
  }
  if (c->flags & CF_KICK)
    due = n;
  else if (c->proxy != NULL || (c->rd != NULL && !c->rd->headers_done) ||
           (c->rd == NULL && c->nex == 0 && c->requests == 0))
    due =
        (c->requests == 0 ? c->created : c->rd->start) + cfg->header_timeout_ms;
  else if (c->rd != NULL || c->nex == 0)
    due = c->last + cfg->idle_timeout_ms;
  else
    have = 0; /* the owner holds a request */
  if (!have) {
    timer_drop(c);
    return;
  }
  if (timer_get(c) != 0) {
    conn_drop(c);
    return;
  }
  ms = due > n ? (unsigned)(due - n) : 0;
  uv_timer_start(c->timer, on_timer, ms, 0);
}

static void on_timer(uv_timer_t *t) {
  xcm_http_conn *c = t->data;
  uint64_t n = now(c);
  const xcm_http_cfg *cfg = c->srv->cfg;

  if (c->flags & (CF_CLOSING | CF_DETACHED))
    return;
  if (c->flags & CF_KICK) {
    char *held = c->held;
    size_t len = c->held_len;

    c->flags &= ~(unsigned)(CF_KICK | CF_STOPPED);
    c->held = NULL;
    c->held_len = 0;
    if (c->nex < HTTP_MAX_PIPELINE && !xcm__stream_over(c->stream)) {
      xcm__stream_resume(c->stream);
      if (held != NULL)
        feed(c, held, len);
      xcm__free(c->srv->ctx->alloc, held);
    } else {
      c->flags |= CF_STOPPED;
      c->held = held;
      c->held_len = len;
    }
    arm(c);
    return;
  }
  if (c->proxy != NULL || (c->rd != NULL && !c->rd->headers_done) ||
      (c->rd == NULL && c->nex == 0 && c->requests == 0)) {
    uint64_t start =
        c->requests == 0 || c->rd == NULL ? c->created : c->rd->start;

    if (n < start + cfg->header_timeout_ms) {
      arm(c);
      return;
    }
    c->srv->counters.header_timeouts++;
    if (c->proxy != NULL) {
      conn_drop(c);
    } else {
      refuse(c, 408, NULL);
    }
    return;
  }
  if (n < c->last + cfg->idle_timeout_ms) {
    arm(c);
    return;
  }
  c->srv->counters.idle_timeouts++;
  if (c->rd != NULL)
    refuse(c, 408, NULL);
  else
    conn_close(c);
}

/* ---- a connection's life ------------------------------------------------ */

static void conn_free(xcm_http_conn *c) {
  xcm_http_server *srv = c->srv;

  while (c->head != NULL) {
    exchange *x = c->head;

    c->head = x->next;
    free_exchange(c, x);
  }
  reading_free(c);
  xcm__free(srv->ctx->alloc, c->proxy);
  xcm__free(srv->ctx->alloc, c->held);
  xcm__free(srv->ctx->alloc, c->peer);
  xcm__free(srv->ctx->alloc, c);
  srv->open--;
  if (srv->closing && srv->open == 0 && srv->done != NULL) {
    void (*done)(void *) = srv->done;

    srv->done = NULL;
    done(srv->done_ud);
  }
}

static void handle_gone(xcm_http_conn *c) {
  if (--c->handles == 0)
    conn_free(c);
}

/* Leave the server's list and counts; the memory goes once both handles
 * (or the timer alone, after a detach) are closed. */
static void unlink_conn(xcm_http_conn *c) {
  xcm_http_server *srv = c->srv;
  exchange *x;

  for (x = c->head; x != NULL; x = x->next)
    if (x->bosh && !x->answered)
      break;
  if (x != NULL && srv->h.gone != NULL)
    srv->h.gone(srv->h.ud, c);
  if (c->prev != NULL)
    c->prev->next = c->next;
  else if (srv->head == c)
    srv->head = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  c->prev = c->next = NULL;
  if (c->flags & CF_COUNTED) {
    srv->counters.now--;
    c->flags &= ~(unsigned)CF_COUNTED;
  }
  uncount_address(srv, c->addr);
  c->addr = NULL;
}

/* A closing stream sends what is queued first (after the TLS handshake,
 * for a refusal at accept): a client that never reads it, or never
 * shakes hands, is cut off after the header timeout. */
static void linger(uv_timer_t *t) {
  xcm_http_conn *c = t->data;

  if (c->stream != NULL)
    xcm__stream_abort(c->stream);
}

static void conn_end(xcm_http_conn *c, int drop) {
  if (c->flags & (CF_CLOSING | CF_DETACHED))
    return;
  c->flags |= CF_CLOSING;
  unlink_conn(c);
  /* Without a timer (no memory for one) the close goes on unguarded. */
  if (timer_get(c) == 0)
    uv_timer_start(c->timer, linger, c->srv->cfg->header_timeout_ms, 0);
  if (drop)
    xcm__stream_drop(c->stream);
  else
    xcm__stream_close(c->stream);
}

static void conn_close(xcm_http_conn *c) {
  conn_end(c, 0);
}

static void conn_drop(xcm_http_conn *c) {
  conn_end(c, 1);
}

xcm_stream *xcm__http_conn_detach(xcm_http_conn *c, const char **early,
                                  size_t *early_len) {
  xcm_stream *s = c->stream;

  if (c->flags & (CF_CLOSING | CF_DETACHED))
    return NULL;
  /* The timer's close is what frees the connection after the caller is
   * done with it (a connection with an upgrade under way has one: it
   * holds no request of the owner's). */
  if (timer_get(c) != 0)
    return NULL;
  *early = c->early;
  *early_len = c->early_len;
  c->flags |= CF_DETACHED;
  unlink_conn(c);
  c->stream = NULL;
  c->handles--; /* the stream's, now the new owner's */
  timer_drop(c);
  return s;
}

/* ---- the server --------------------------------------------------------- */

int xcm__http_server_new(xcm_http_server **out, xcm_ctx *ctx,
                         const xcm_http_cfg *cfg) {
  xcm_http_server *srv = xcm__calloc(ctx->alloc, sizeof(*srv));

  *out = NULL;
  if (srv == NULL)
    return XCM_ENOMEM;
  srv->ctx = ctx;
  srv->cfg = cfg;
  xcm__map_init(&srv->per_address, ctx->alloc);
  *out = srv;
  return 0;
}

void xcm__http_server_set_handlers(xcm_http_server *srv,
                                   const xcm_http_handlers *h) {
  if (h != NULL)
    srv->h = *h;
  else
    memset(&srv->h, 0, sizeof srv->h);
}

const xcm_http_counters *xcm__http_server_counters(const xcm_http_server *srv) {
  return &srv->counters;
}

static int start(xcm_http_server *srv, uv_tcp_t *tcp, const xcm_transport *t,
                 const char *peer, xcm_stream **out);

static void tcp_closed(uv_handle_t *h) {
  xcm_http_server *srv = h->data;

  xcm__free(srv->ctx->alloc, h);
}

static void close_tcp(xcm_http_server *srv, uv_tcp_t *tcp) {
  tcp->data = srv;
  uv_close((uv_handle_t *)tcp, tcp_closed);
}

int xcm__http_accept(xcm_http_server *srv, uv_tcp_t *tcp) {
  const xcm_http_cfg *cfg = srv->cfg;

  if (srv->closing) {
    close_tcp(srv, tcp);
    return XCM_ECLOSED;
  }
  /* A balancer's listener hears only its balancers (as session.c). */
  if (cfg->proxy_protocol) {
    struct sockaddr_storage ss;
    int len = sizeof ss;

    if (uv_tcp_getpeername(tcp, (struct sockaddr *)&ss, &len) != 0 ||
        !xcm__proxy_trusts(cfg->trusted, cfg->ntrusted,
                           (struct sockaddr *)&ss)) {
      srv->counters.proxy_untrusted++;
      close_tcp(srv, tcp);
      return XCM_EPROTO;
    }
  }
  return start(srv, tcp, NULL, NULL, NULL);
}

int xcm__http_attach(xcm_http_server *srv, const xcm_transport *t,
                     const char *peer, xcm_stream **out) {
  const xcm_http_cfg *cfg = srv->cfg;

  *out = NULL;
  if (srv->closing)
    return XCM_ECLOSED;
  if (cfg->proxy_protocol &&
      !xcm__proxy_trusts_text(cfg->trusted, cfg->ntrusted, peer)) {
    srv->counters.proxy_untrusted++;
    return XCM_EPROTO;
  }
  return start(srv, NULL, t, peer, out);
}

/* A connection over tcp, or over the caller's transport t. */
static int start(xcm_http_server *srv, uv_tcp_t *tcp, const xcm_transport *t,
                 const char *peer, xcm_stream **out) {
  const xcm_http_cfg *cfg = srv->cfg;
  xcm_stream_limits lim;
  xcm_http_conn *c;
  int err, over = 0, full;

  c = xcm__calloc(srv->ctx->alloc, sizeof(*c));
  if (c == NULL) {
    if (tcp != NULL)
      close_tcp(srv, tcp);
    return XCM_ENOMEM;
  }
  memset(&lim, 0, sizeof lim);
  lim.max_out = MAX_OUT;
  lim.high_water = HIGH_WATER;
  lim.low_water = LOW_WATER;
  c->srv = srv;
  err = tcp != NULL ? xcm__stream_from_tcp(&c->stream, srv->ctx, tcp,
                                           &stream_cb, c, &lim)
                    : xcm__stream_custom(&c->stream, srv->ctx, t, peer,
                                         &stream_cb, c, &lim);
  if (err != 0) {
    xcm__free(srv->ctx->alloc, c);
    if (tcp != NULL)
      close_tcp(srv, tcp);
    return err;
  }
  if (tcp != NULL)
    uv_tcp_nodelay(tcp, 1);
  else
    *out = c->stream;
  srv->open++;
  srv->counters.accepted++;
  c->handles = 1; /* the stream; arm() adds the timer */
  c->created = c->last = now(c);
  c->next = srv->head;
  if (srv->head != NULL)
    srv->head->prev = c;
  srv->head = c;
  full = cfg->max_connections != XCM__OFF &&
         srv->counters.now >= cfg->max_connections;
  if (!full) {
    c->flags |= CF_COUNTED;
    srv->counters.now++;
  }
  if (cfg->proxy_protocol) {
    c->proxy = xcm__alloc(srv->ctx->alloc, sizeof(*c->proxy));
    if (c->proxy == NULL) {
      conn_close(c);
      return XCM_ENOMEM;
    }
    xcm__proxy_init(c->proxy);
  } else {
    c->addr = count_address(srv, xcm__stream_peer(c->stream), &over);
    if (cfg->tls != NULL &&
        xcm__stream_start_tls(c->stream, cfg->tls, 1, NULL, NULL, 0) != 0) {
      conn_close(c);
      return XCM_ENOMEM;
    }
  }
  /* Over a limit: said in HTTP (after the TLS handshake, on HTTPS),
   * then closed. */
  if (full) {
    srv->counters.refused_total++;
    xcm__free(srv->ctx->alloc, c->proxy);
    c->proxy = NULL;
    refuse(c, 503, NULL);
    return XCM_EBUSY;
  }
  if (over) {
    srv->counters.refused_address++;
    refuse(c, 503, NULL);
    return XCM_EBUSY;
  }
  arm(c);
  return 0;
}

void xcm__http_server_close(xcm_http_server *srv, void (*done)(void *ud),
                            void *ud) {
  xcm_http_conn *c;

  srv->closing = 1;
  srv->done = done;
  srv->done_ud = ud;
  while ((c = srv->head) != NULL) {
    conn_close(c);
    /* A shutdown does not wait for clients to read. */
    if (c->stream != NULL && xcm__stream_queued(c->stream) > 0)
      xcm__stream_abort(c->stream);
  }
  if (srv->open == 0 && srv->done != NULL) {
    srv->done = NULL;
    done(ud);
  }
}

void xcm__http_server_free(xcm_http_server *srv) {
  if (srv == NULL)
    return;
  xcm__map_free(&srv->per_address);
  xcm__free(srv->ctx->alloc, srv);
}

const char *xcm__http_conn_peer(const xcm_http_conn *c) {
  return c->stream != NULL ? peer_of(c) : (c->peer ? c->peer : "");
}

int xcm__http_conn_secure(const xcm_http_conn *c) {
  return c->srv->cfg->tls != NULL;
}

void xcm__http_conn_set_data(xcm_http_conn *c, void *data) {
  c->data = data;
}

void *xcm__http_conn_data(const xcm_http_conn *c) {
  return c->data;
}

size_t xcm__http_conn_footprint(const xcm_http_conn *c) {
  size_t n = sizeof(*c) + c->held_len;

  if (c->timer != NULL)
    n += sizeof(*c->timer);
  if (c->stream != NULL)
    n += xcm__stream_footprint(c->stream);
  if (c->rd != NULL)
    n += xcm__http_reading_footprint(c->rd);
  if (c->proxy != NULL)
    n += sizeof(*c->proxy);
  for (const exchange *x = c->head; x != NULL; x = x->next)
    n += sizeof(*x) + x->out.cap;
  return n;
}
