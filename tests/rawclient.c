#include "rawclient.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static void on_alloc(uv_handle_t *h, size_t n, uv_buf_t *b) {
  static char buf[65536];

  (void)h;
  (void)n;
  *b = uv_buf_init(buf, sizeof buf);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  xcm_raw *r = s->data;

  if (n < 0) {
    r->eof = 1;
    uv_read_stop(s);
    if (r->on_data != NULL)
      r->on_data(r, 1);
    return;
  }
  xcm__buf_append(&r->in, b->base, (size_t)n);
  xcm__buf_reserve(&r->in, 1);
  r->in.data[r->in.len] = '\0';
  if (r->on_data != NULL)
    r->on_data(r, 0);
}

static void on_connected(uv_connect_t *c, int status) {
  xcm_raw *r = c->data;

  r->connected = status == 0 ? 1 : -1;
  if (status == 0 && r->reading)
    uv_read_start((uv_stream_t *)&r->tcp, on_alloc, on_read);
}

void xcm_raw_set_reading(xcm_raw *r, int on) {
  r->reading = on;
  if (on)
    uv_read_start((uv_stream_t *)&r->tcp, on_alloc, on_read);
  else
    uv_read_stop((uv_stream_t *)&r->tcp);
}

static int is_connected(void *ud) {
  return ((xcm_raw *)ud)->connected != 0;
}

int xcm_raw_open(xcm_raw *r, uv_loop_t *loop, const char *host, int port,
                 int reading) {
  return xcm_raw_open_from(r, loop, NULL, host, port, reading);
}

int xcm_raw_open_from(xcm_raw *r, uv_loop_t *loop, const char *source,
                      const char *host, int port, int reading) {
  struct sockaddr_storage a;

  memset(r, 0, sizeof(*r));
  r->loop = loop;
  r->reading = reading;
  xcm__buf_init(&r->in, NULL);
  uv_tcp_init(loop, &r->tcp);
  r->tcp.data = r;
  r->conn.data = r;
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)&a) != 0 &&
      uv_ip6_addr(host, port, (struct sockaddr_in6 *)&a) != 0)
    return 0;
  if (source != NULL) {
    struct sockaddr_storage from;

    if ((uv_ip4_addr(source, 0, (struct sockaddr_in *)&from) != 0 &&
         uv_ip6_addr(source, 0, (struct sockaddr_in6 *)&from) != 0) ||
        uv_tcp_bind(&r->tcp, (struct sockaddr *)&from, 0) != 0)
      return 0;
  }
  uv_tcp_connect(&r->conn, &r->tcp, (struct sockaddr *)&a, on_connected);
  return xcm_test_run_until(loop, is_connected, r, 3000) && r->connected == 1;
}

static void on_written(uv_write_t *req, int status) {
  (void)status;
  free(req);
}

void xcm_raw_send(xcm_raw *r, const char *data, size_t len) {
  uv_write_t *req = malloc(sizeof(*req) + len);
  uv_buf_t b;

  if (req == NULL)
    return;
  memcpy(req + 1, data, len);
  b = uv_buf_init((char *)(req + 1), (unsigned)len);
  if (uv_write(req, (uv_stream_t *)&r->tcp, &b, 1, on_written) != 0)
    free(req);
}

void xcm_raw_sends(xcm_raw *r, const char *s) {
  xcm_raw_send(r, s, strlen(s));
}

typedef struct wait_in {
  xcm_raw *r;
  const char *needle;
} wait_in;

static int in_has(void *ud) {
  wait_in *w = ud;

  return w->r->in.len > 0 && strstr(w->r->in.data, w->needle) != NULL;
}

int xcm_raw_wait(xcm_raw *r, const char *needle, unsigned ms) {
  wait_in w = {r, needle};

  return xcm_test_run_until(r->loop, in_has, &w, ms);
}

int xcm_raw_is_eof(void *ud) {
  return ((xcm_raw *)ud)->eof;
}

static void on_closed(uv_handle_t *h) {
  ((xcm_raw *)h->data)->closed = 1;
}

void xcm_raw_free(xcm_raw *r) {
  if (!uv_is_closing((uv_handle_t *)&r->tcp))
    uv_close((uv_handle_t *)&r->tcp, on_closed);
  while (!r->closed)
    uv_run(r->loop, UV_RUN_ONCE);
  xcm__buf_free(&r->in);
}

void xcm_raw_reset(xcm_raw *r) {
  if (!uv_is_closing((uv_handle_t *)&r->tcp))
    uv_tcp_close_reset(&r->tcp, on_closed);
  while (!r->closed)
    uv_run(r->loop, UV_RUN_ONCE);
}

int xcm_raw_sasl(xcm_raw *r, const char *header, const char *auth) {
  xcm_raw_sends(r, header);
  if (!xcm_raw_wait(r, "</stream:features>", 3000))
    return 0;
  xcm_raw_sends(r, auth);
  if (!xcm_raw_wait(r, "<success", 3000))
    return 0;
  xcm__buf_reset(&r->in);
  xcm_raw_sends(r, header);
  return xcm_raw_wait(r, "urn:ietf:params:xml:ns:xmpp-bind", 3000);
}

int xcm_raw_login(xcm_raw *r, const char *header, const char *auth,
                  const char *resource) {
  char buf[512];

  if (!xcm_raw_sasl(r, header, auth))
    return 0;
  snprintf(buf, sizeof buf,
           "<iq type='set' id='b1'><bind "
           "xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>%s</resource>"
           "</bind></iq><iq type='set' id='s1'><session "
           "xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq><presence/>",
           resource);
  xcm_raw_sends(r, buf);
  return xcm_raw_wait(r, "id=\"s1\"", 3000);
}

int xcm_raw_still_works(xcm_raw *good, int n) {
  char buf[256], want[64];

  snprintf(want, sizeof want, "still %d", n);
  snprintf(buf, sizeof buf,
           "<message to='alice@example.test/good' type='chat'><body>%s</body>"
           "</message>",
           want);
  xcm_raw_sends(good, buf);
  return xcm_raw_wait(good, want, 3000);
}

/* A TLS 1.2 ClientHello: ECDHE and RSA suites, P-256, SHA-256
 * signatures. The server answers with its hello and certificate and
 * waits for the client's key exchange. */
const unsigned char
    xcm_raw_client_hello
        [] =
            {
                0x16, 0x03, 0x01, 0x00, 0x4f, /* record */
                0x01, 0x00, 0x00, 0x4b,       /* ClientHello */
                0x03, 0x03,                   /* TLS 1.2 */
                1,    2,    3,    4,    5,    6,    7,    8,    9,
                10,   11,   12,   13,   14,   15,   16,   17,   18,
                19,   20,   21,   22,   23,   24,   25,   26,   27,
                28,   29,   30,   31,   32, /* random */
                0x00,                       /* session id */
                0x00, 0x0a, 0xc0, 0x2b, 0xc0, 0x2f, 0x00, 0x9c, 0x00,
                0x2f, 0x00, 0xff, /* suites */
                0x01, 0x00,       /* compression: null */
                0x00, 0x18,       /* extensions */
                0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x17, /* groups: P-256
                                                                 */
                0x00, 0x0b, 0x00, 0x02, 0x01, 0x00, /* point formats */
                0x00, 0x0d, 0x00, 0x06, 0x00, 0x04, 0x04, 0x01, 0x04,
                0x03, /* signature
                         algorithms
                       */
};
const size_t xcm_raw_client_hello_len = sizeof xcm_raw_client_hello;
