/* xcm-load: an XMPP load generator for the connection manager.
 *
 * Opens N client connections (spread over 127.0.0.x source addresses
 * when asked), logs each in (stream, SASL PLAIN or ANONYMOUS, restart,
 * bind, session) at a given rate, then runs one scenario:
 *
 *   idle     hold every session for --duration seconds;
 *   flood    clients in pairs send each other messages as fast as they
 *            can, with --window messages outstanding per sender;
 *   latency  messages at a fixed total --rate, each carrying its send
 *            time; reports percentiles of the end-to-end delay;
 *   half     no login: after the stream features each client sends half
 *            of its SASL <auth/> element and stops, holding the
 *            connection for --duration seconds (what a login left
 *            waiting mid-stanza costs the CM; "ready" counts those
 *            waiting).
 *
 * With --websocket PATH every client speaks RFC 7395 instead: an HTTP
 * upgrade to PATH with the xmpp subprotocol, then one masked text frame
 * per element (<open/> for the stream header) and one message per
 * element back; the messages go to the same stream reader behind a
 * stream header of its own (scenarios idle, flood and latency).
 *
 * With --bosh PATH every client speaks BOSH (XEP-0124, XEP-0206) on one
 * keep-alive HTTP connection: each element goes in a request of its own
 * (<body/> with its rid and sid; the creation and the restart are
 * requests without a child), and whenever no request is under way the
 * client sends an empty one, which the CM holds until there is
 * something for it or its wait (60 s) is over: an idle session is a
 * held request. The children of each answer go to the stream reader
 * behind a header of its own, as for --websocket (scenario idle; the
 * others work but pay a request per message).
 *
 * Prints one JSON line of results. Everything runs on one libuv loop in
 * one thread; it parses with libxcm's own stream reader. */
#define _GNU_SOURCE /* memmem */
#include <errno.h>
#include <signal.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <uv.h>

#include "proto/stream.h"
#include "util/buf.h"
#include "xcm/error.h"
#include "xml/reader.h"

typedef struct opts {
  const char *host;
  int port;
  const char *domain;
  int clients;
  int login_rate;   /* per second; 0: as fast as possible */
  const char *mech; /* PLAIN or ANONYMOUS */
  const char *user_prefix;
  const char *scenario;
  double duration;
  int window;
  int msg_rate;
  int spread;             /* use 127.0.0.x source addresses */
  int tap;                /* also print a TAP line: every client logged in and,
                             unless idle, every one received messages */
  int body;               /* body bytes per message */
  const char *ready_file; /* created once every client is logged in */
  const char *ws_path;    /* RFC 7395 over a WebSocket at this path */
  const char *bosh_path;  /* BOSH at this path */
} opts;

enum cstate {
  C_CONNECTING,
  C_UPGRADE, /* --websocket: the 101 not read yet */
  C_STREAM1,
  C_AUTH,
  C_STREAM2,
  C_BIND,
  C_SESSION,
  C_READY,
  C_DEAD
};

typedef struct client client;
struct client {
  uv_tcp_t tcp;
  xcm_xml_reader *reader;
  int index;
  enum cstate state;
  client *peer;
  char jid[256];
  int outstanding;
  uint64_t sent, received;
  uv_connect_t connect;
  xcm_buf out;        /* queued this loop turn, written before the next poll */
  client *next_dirty; /* on B.dirty while out holds bytes */
  int dirty;
  xcm_buf in; /* --websocket: a frame or response not whole yet */
  /* --bosh: the session, the next rid, requests under way, and whether
   * the next answer opens a stream (the creation, a restart). */
  char sid[64];
  uint64_t rid;
  int requests;
  int open_next;
};

typedef struct bench {
  opts o;
  uv_loop_t *loop;
  xcm_xml_pool *pool;
  client *clients;
  int started;
  int ready;
  int dead;
  int closed;
  uint64_t t_start, t_ready, t_run_start, t_run_end;
  uint64_t delivered;
  uint64_t *lat; /* microseconds, latency scenario */
  size_t nlat, cap_lat;
  uv_timer_t login_timer;
  uv_timer_t run_timer;
  uv_timer_t rate_timer;
  uv_prepare_t flusher;
  client *dirty;
  int running;
  int done;
  xcm_buf out;
  char errors[256];
} bench;

static bench B;

static void fail_client(client *c, const char *why) {
  if (c->state == C_DEAD)
    return;
  if (B.errors[0] == '\0')
    snprintf(B.errors, sizeof B.errors, "client %d: %s", c->index, why);
  c->state = C_DEAD;
  B.dead++;
  uv_read_stop((uv_stream_t *)&c->tcp);
}

static void on_written(uv_write_t *w, int status) {
  (void)status;
  free(w);
}

/* What a client sends in one loop turn goes out in one write, as a real
 * client's would: a system call per message made the generator, not the
 * CM, the limit of the flood. */
static void send_raw(client *c, const char *s, size_t len) {
  if (xcm__buf_append(&c->out, s, len) != 0) {
    fail_client(c, "out of memory");
    return;
  }
  if (!c->dirty) {
    c->dirty = 1;
    c->next_dirty = B.dirty;
    B.dirty = c;
  }
}

/* One BOSH request on the client's connection: attrs (may be NULL) on
 * the <body/>, with one child (may be NULL). */
static void bosh_post(client *c, const char *attrs, const char *child,
                      size_t len) {
  char head[512], body[512];
  int hn, bn;

  bn = snprintf(body, sizeof body,
                "<body xmlns='http://jabber.org/protocol/httpbind' "
                "rid='%" PRIu64 "'%s%s%s %s",
                c->rid++, c->sid[0] ? " sid='" : "", c->sid,
                c->sid[0] ? "'" : "", attrs != NULL ? attrs : "");
  hn = snprintf(head, sizeof head,
                "POST %s HTTP/1.1\r\nHost: %s:%d\r\n"
                "Content-Type: text/xml; charset=utf-8\r\n"
                "Content-Length: %zu\r\n\r\n",
                B.o.bosh_path, B.o.host, B.o.port,
                (size_t)bn + (child != NULL ? 1 + len + 7 : 2));
  send_raw(c, head, (size_t)hn);
  send_raw(c, body, (size_t)bn);
  if (child != NULL) {
    send_raw(c, ">", 1);
    send_raw(c, child, len);
    send_raw(c, "</body>", 7);
  } else {
    send_raw(c, "/>", 2);
  }
  c->requests++;
}

/* One unit of the stream: as it is on TCP, one masked text frame on a
 * WebSocket (a fixed mask: the server only checks that there is one). */
static void send_str(client *c, const char *s, size_t len) {
  static const unsigned char key[4] = {0x12, 0x34, 0x56, 0x78};
  unsigned char h[14];
  size_t n = 0, i, at;

  if (B.o.bosh_path != NULL) {
    bosh_post(c, NULL, s, len);
    return;
  }
  if (B.o.ws_path == NULL) {
    send_raw(c, s, len);
    return;
  }
  h[n++] = 0x81;
  if (len < 126) {
    h[n++] = (unsigned char)(0x80 | len);
  } else if (len < 65536) {
    h[n++] = 0x80 | 126;
    h[n++] = (unsigned char)(len >> 8);
    h[n++] = (unsigned char)len;
  } else {
    h[n++] = 0x80 | 127;
    for (i = 0; i < 8; i++)
      h[n++] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
  }
  memcpy(h + n, key, 4);
  n += 4;
  send_raw(c, (const char *)h, n);
  at = c->out.len;
  send_raw(c, s, len);
  if (c->out.len == at + len)
    for (i = 0; i < len; i++)
      c->out.data[at + i] ^= (char)key[i % 4];
}

/* Stanzas on a WebSocket are documents of their own: they name their
 * namespace. */
static const char *ns(void) {
  return B.o.ws_path != NULL || B.o.bosh_path != NULL ? " xmlns='jabber:client'"
                                                      : "";
}

static void flush_client(client *c) {
  uv_buf_t buf = uv_buf_init(c->out.data, (unsigned)c->out.len);
  int n = uv_try_write((uv_stream_t *)&c->tcp, &buf, 1);

  if (n == UV_EAGAIN)
    n = 0;
  if (n < 0) {
    fail_client(c, uv_strerror(n));
  } else if ((size_t)n < c->out.len) {
    /* The rest waits in a request of its own, behind any earlier one. */
    size_t left = c->out.len - (size_t)n;
    uv_write_t *w = malloc(sizeof(*w) + left);

    if (w == NULL) {
      fail_client(c, "out of memory");
    } else {
      memcpy(w + 1, c->out.data + n, left);
      buf = uv_buf_init((char *)(w + 1), (unsigned)left);
      if (uv_write(w, (uv_stream_t *)&c->tcp, &buf, 1, on_written) != 0)
        free(w);
    }
  }
  xcm__buf_reset(&c->out);
}

static void flush_all(uv_prepare_t *p) {
  (void)p;
  while (B.dirty != NULL) {
    client *c = B.dirty;

    B.dirty = c->next_dirty;
    c->dirty = 0;
    if (c->state != C_DEAD && !uv_is_closing((uv_handle_t *)&c->tcp))
      flush_client(c);
    else
      xcm__buf_reset(&c->out);
  }
}

static void send_header(client *c) {
  char h[512];
  int n;

  if (B.o.bosh_path != NULL) {
    /* The creation, or a restart: the answer opens a stream. */
    n = snprintf(
        h, sizeof h, "to='%s' xmlns:xmpp='urn:xmpp:xbosh' xmpp:version='1.0'%s",
        B.o.domain,
        c->sid[0] ? " xmpp:restart='true'" : " wait='60' hold='1' ver='1.6'");
    c->open_next = 1;
    bosh_post(c, h, NULL, 0);
    return;
  }
  if (B.o.ws_path != NULL) {
    n = snprintf(h, sizeof h,
                 "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='%s' "
                 "version='1.0'/>",
                 B.o.domain);
    send_str(c, h, (size_t)n);
    return;
  }
  n = snprintf(h, sizeof h,
               "<?xml version='1.0'?><stream:stream "
               "xmlns:stream='http://etherx.jabber.org/streams' "
               "xmlns='jabber:client' to='%s' version='1.0'>",
               B.o.domain);
  send_str(c, h, (size_t)n);
}

static void base64(const unsigned char *in, size_t len, char *out) {
  static const char t[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t i, o = 0;

  for (i = 0; i + 2 < len; i += 3) {
    out[o++] = t[in[i] >> 2];
    out[o++] = t[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
    out[o++] = t[((in[i + 1] & 15) << 2) | (in[i + 2] >> 6)];
    out[o++] = t[in[i + 2] & 63];
  }
  if (len - i == 1) {
    out[o++] = t[in[i] >> 2];
    out[o++] = t[(in[i] & 3) << 4];
    out[o++] = '=';
    out[o++] = '=';
  } else if (len - i == 2) {
    out[o++] = t[in[i] >> 2];
    out[o++] = t[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
    out[o++] = t[(in[i + 1] & 15) << 2];
    out[o++] = '=';
  }
  out[o] = '\0';
}

static void send_auth(client *c) {
  char buf[1024], user[128], raw[300], b64[420];
  int n;

  if (strcmp(B.o.mech, "ANONYMOUS") == 0) {
    n = snprintf(buf, sizeof buf,
                 "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
                 "mechanism='ANONYMOUS'/>");
  } else {
    size_t ul;

    snprintf(user, sizeof user, "%s%d", B.o.user_prefix, c->index);
    ul = strlen(user);
    /* authzid \0 authcid \0 password: the password is the user name. */
    raw[0] = '\0';
    memcpy(raw + 1, user, ul);
    raw[1 + ul] = '\0';
    memcpy(raw + 2 + ul, user, ul);
    base64((unsigned char *)raw, 2 + 2 * ul, b64);
    n = snprintf(buf, sizeof buf,
                 "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
                 "mechanism='PLAIN'>%s</auth>",
                 b64);
  }
  send_str(c, buf, (size_t)n);
}

static void send_message(client *c) {
  char head[600];
  int n;

  xcm__buf_reset(&B.out);
  n = snprintf(head, sizeof head,
               "<message%s to='%s' type='chat'><body>%" PRIu64 " ", ns(),
               c->peer->jid, uv_hrtime());
  xcm__buf_append(&B.out, head, (size_t)n);
  for (n = 0; n < B.o.body; n++)
    xcm__buf_append_char(&B.out, 'x');
  xcm__buf_append_str(&B.out, "</body></message>");
  send_str(c, B.out.data, B.out.len);
  c->sent++;
  c->outstanding++;
}

static void start_run(void);

static void became_ready(client *c) {
  c->state = C_READY;
  B.ready++;
  if (B.ready + B.dead == B.o.clients) {
    B.t_ready = uv_hrtime();
    start_run();
  }
}

/* ---- reading ------------------------------------------------------------ */

static int levels(void *ud, const char *ns, const char *name) {
  (void)ud;
  (void)ns;
  return strcmp(name, "iq") == 0 || strcmp(name, "features") == 0 ? 3 : 0;
}

static const char *body_of(const xcm_xml_stanza *s) {
  const char *b = NULL;
  size_t i;

  for (i = 0; i + 6 < s->len; i++)
    if (memcmp(s->bytes + i, "<body>", 6) == 0) {
      b = s->bytes + i + 6;
      break;
    }
  return b;
}

static void on_message(client *c, const xcm_xml_stanza *s) {
  const char *b = body_of(s);
  client *sender = c->peer;

  c->received++;
  B.delivered++;
  if (b != NULL && strcmp(B.o.scenario, "latency") == 0) {
    uint64_t t = strtoull(b, NULL, 10), now = uv_hrtime();
    if (B.nlat == B.cap_lat) {
      B.cap_lat = B.cap_lat ? 2 * B.cap_lat : 65536;
      B.lat = realloc(B.lat, B.cap_lat * sizeof(*B.lat));
    }
    if (B.lat != NULL && now > t)
      B.lat[B.nlat++] = (now - t) / 1000;
  }
  if (sender->outstanding > 0)
    sender->outstanding--;
  if (B.running && strcmp(B.o.scenario, "flood") == 0 &&
      sender->state == C_READY)
    send_message(sender);
}

static int on_stanza(void *ud, const xcm_xml_stanza *s) {
  client *c = ud;
  const xcm_xml_node *n = s->root;

  switch (c->state) {
  case C_STREAM1:
    if (strcmp(s->name, "features") == 0 && strcmp(B.o.scenario, "half") == 0) {
      /* Cut off inside the element, as a stalled login would be. */
      static const char half[] = "<auth xmlns='urn:ietf:params:xml:ns:"
                                 "xmpp-sasl' mechanism='PLAIN'>AGFsa";
      send_str(c, half, sizeof half - 1);
      became_ready(c);
    } else if (strcmp(s->name, "features") == 0) {
      c->state = C_AUTH;
      send_auth(c);
    }
    return 0;
  case C_AUTH:
    if (strcmp(s->name, "success") == 0) {
      c->state = C_STREAM2;
      send_header(c);
      return XCM_XML_RESTART;
    }
    fail_client(c, "authentication failed");
    return XCM_ECLOSED;
  case C_STREAM2:
    if (strcmp(s->name, "features") == 0) {
      char bind[160];
      int len = snprintf(bind, sizeof bind,
                         "<iq%s type='set' id='b'><bind "
                         "xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>",
                         ns());
      c->state = C_BIND;
      send_str(c, bind, (size_t)len);
    }
    return 0;
  case C_BIND: {
    const xcm_xml_node *bind = n ? xcm__xml_node_child(n, NULL, "bind") : NULL;
    const xcm_xml_node *jid =
        bind ? xcm__xml_node_child(bind, NULL, "jid") : NULL;
    char sess[160];
    int len = snprintf(sess, sizeof sess,
                       "<iq%s type='set' id='s'><session "
                       "xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>",
                       ns());

    if (jid == NULL || jid->text_len >= sizeof c->jid) {
      fail_client(c, "bind failed");
      return XCM_ECLOSED;
    }
    memcpy(c->jid, jid->text, jid->text_len);
    c->jid[jid->text_len] = '\0';
    c->state = C_SESSION;
    send_str(c, sess, (size_t)len);
    return 0;
  }
  case C_SESSION:
    if (strcmp(s->name, "iq") == 0)
      became_ready(c);
    return 0;
  case C_READY:
    if (strcmp(s->name, "message") == 0)
      on_message(c, s);
    return 0;
  default:
    return 0;
  }
}

static void on_end(void *ud) {
  fail_client(ud, "the server closed the stream");
}

static const xcm_xml_callbacks reader_cb = {NULL, levels, on_stanza, on_end};

static void on_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  static char shared[65536];

  (void)h;
  (void)size;
  *buf = uv_buf_init(shared, sizeof shared);
}

static void feed(client *c, const char *p, size_t left) {
  size_t consumed;

  while (left > 0 && c->state != C_DEAD) {
    if (xcm__xml_reader_feed(c->reader, p, left, &consumed) != 0) {
      fail_client(c, xcm__xml_reader_error_text(c->reader));
      return;
    }
    p += consumed;
    left -= consumed;
  }
}

/* The server's header as the reader knows it from TCP: each RFC 7395
 * <open/> stands for one, and the elements after it read as its
 * children. */
static void feed_header(client *c) {
  static const char hdr[] =
      "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' "
      "xmlns='jabber:client' version='1.0'>";

  feed(c, hdr, sizeof hdr - 1);
}

static void send_upgrade(client *c) {
  char req[512];
  int n = snprintf(req, sizeof req,
                   "GET %s HTTP/1.1\r\nHost: %s:%d\r\n"
                   "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   "Sec-WebSocket-Version: 13\r\n"
                   "Sec-WebSocket-Protocol: xmpp\r\n\r\n",
                   B.o.ws_path, B.o.host, B.o.port);

  send_raw(c, req, (size_t)n);
}

/* BOSH input: whole HTTP answers, each body's children to the reader
 * (behind a header when the answer opens a stream); with no request
 * left under way, an empty one to be held. */
static void bosh_input(client *c, const char *data, size_t len) {
  size_t off = 0;

  if (xcm__buf_append(&c->in, data, len) != 0) {
    fail_client(c, "out of memory");
    return;
  }
  while (c->state != C_DEAD) {
    const char *h = c->in.data + off, *e, *cl, *b, *gt, *end;
    size_t avail = c->in.len - off, blen;

    e = memmem(h, avail, "\r\n\r\n", 4);
    if (e == NULL)
      break;
    cl = memmem(h, (size_t)(e - h), "Content-Length: ", 16);
    blen = cl != NULL ? strtoul(cl + 16, NULL, 10) : 0;
    if ((size_t)(e + 4 - h) + blen > avail)
      break;
    off += (size_t)(e + 4 - h) + blen;
    c->requests--;
    if (avail < 12 || memcmp(h, "HTTP/1.1 200", 12) != 0) {
      fail_client(c, "a BOSH request was refused");
      break;
    }
    b = e + 4;
    if (memmem(b, blen, "type=\"terminate\"", 16) != NULL) {
      fail_client(c, "the server ended the BOSH session");
      break;
    }
    if (c->sid[0] == '\0') {
      const char *sp = memmem(b, blen, "sid=\"", 5), *q;

      q = sp != NULL ? memchr(sp + 5, '"', blen - (size_t)(sp + 5 - b)) : NULL;
      if (q == NULL || (size_t)(q - sp - 5) >= sizeof c->sid) {
        fail_client(c, "no sid in the creation answer");
        break;
      }
      memcpy(c->sid, sp + 5, (size_t)(q - sp - 5));
      c->sid[q - sp - 5] = '\0';
    }
    gt = memchr(b, '>', blen);
    end = blen >= 7 ? b + blen - 7 : NULL;
    if (gt != NULL && gt[-1] != '/' && end != NULL &&
        memcmp(end, "</body>", 7) == 0 && end > gt + 1) {
      if (c->open_next) {
        c->open_next = 0;
        feed_header(c);
      }
      feed(c, gt + 1, (size_t)(end - gt - 1));
    }
  }
  xcm__buf_consume(&c->in, off);
  if (c->in.len == 0)
    xcm__buf_free(&c->in);
  if (c->state != C_DEAD && c->requests == 0)
    bosh_post(c, NULL, NULL, 0);
}

/* WebSocket input: the 101 first, then whole frames, each text message
 * to the reader. What is not whole yet waits in c->in. */
static void ws_input(client *c, const char *data, size_t len) {
  size_t off = 0;

  if (xcm__buf_append(&c->in, data, len) != 0) {
    fail_client(c, "out of memory");
    return;
  }
  if (c->state == C_UPGRADE) {
    const char *e = memmem(c->in.data, c->in.len, "\r\n\r\n", 4);

    if (e == NULL)
      return;
    if (c->in.len < 12 || memcmp(c->in.data, "HTTP/1.1 101", 12) != 0) {
      fail_client(c, "the WebSocket upgrade was refused");
      return;
    }
    off = (size_t)(e - c->in.data) + 4;
    c->state = C_STREAM1;
    send_header(c);
  }
  while (c->state != C_DEAD) {
    const unsigned char *p = (const unsigned char *)c->in.data + off;
    size_t avail = c->in.len - off, hl = 2, i;
    uint64_t flen;

    if (avail < 2)
      break;
    flen = p[1] & 0x7f;
    if (flen == 126) {
      if (avail < 4)
        break;
      flen = (uint64_t)p[2] << 8 | p[3];
      hl = 4;
    } else if (flen == 127) {
      if (avail < 10)
        break;
      for (flen = 0, i = 0; i < 8; i++)
        flen = flen << 8 | p[2 + i];
      hl = 10;
    }
    if (avail < hl + flen)
      break;
    off += hl + (size_t)flen;
    if ((p[0] & 0xf) == 8) {
      fail_client(c, "the server closed the WebSocket");
      break;
    }
    if ((p[0] & 0xf) != 1)
      continue;
    if (flen >= 5 && memcmp(p + hl, "<open", 5) == 0)
      feed_header(c);
    else if (flen >= 6 && memcmp(p + hl, "<close", 6) == 0)
      fail_client(c, "the server closed the stream");
    else
      feed(c, (const char *)p + hl, (size_t)flen);
  }
  xcm__buf_consume(&c->in, off);
  if (c->in.len == 0)
    xcm__buf_free(&c->in);
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf) {
  client *c = st->data;
  const char *p = buf->base;
  size_t left, consumed;

  if (n < 0) {
    fail_client(c, uv_strerror((int)n));
    return;
  }
  if (B.o.ws_path != NULL) {
    ws_input(c, p, (size_t)n);
    xcm__xml_reader_shrink(c->reader);
    return;
  }
  if (B.o.bosh_path != NULL) {
    bosh_input(c, p, (size_t)n);
    xcm__xml_reader_shrink(c->reader);
    return;
  }
  left = (size_t)n;
  while (left > 0 && c->state != C_DEAD) {
    if (xcm__xml_reader_feed(c->reader, p, left, &consumed) != 0) {
      fail_client(c, xcm__xml_reader_error_text(c->reader));
      return;
    }
    p += consumed;
    left -= consumed;
  }
  xcm__xml_reader_shrink(c->reader);
}

static void on_connected(uv_connect_t *req, int status) {
  client *c = req->data;

  if (status != 0) {
    fail_client(c, uv_strerror(status));
    if (B.ready + B.dead == B.o.clients) {
      B.t_ready = uv_hrtime();
      start_run();
    }
    return;
  }
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  if (B.o.ws_path != NULL) {
    c->state = C_UPGRADE;
    send_upgrade(c);
    return;
  }
  c->rid = 1000 + (uint64_t)c->index;
  c->state = C_STREAM1;
  send_header(c);
}

static void start_client(client *c) {
  struct sockaddr_in to, from;

  uv_tcp_init(B.loop, &c->tcp);
  c->tcp.data = c;
  c->connect.data = c;
  xcm__xml_reader_new(&c->reader, B.pool, &reader_cb, c, NULL);
  /* The CM's usual header: a thousand idle clients hold no copy of it. */
  xcm__xml_reader_set_usual(c->reader, &xcm__stream_client);
  xcm__xml_reader_set_scan(c->reader, 1);
  uv_ip4_addr(B.o.host, B.o.port, &to);
  if (B.o.spread) {
    /* 127.0.0.0/8 is all loopback: many sources give many port ranges. */
    char src[32];
    snprintf(src, sizeof src, "127.0.%d.%d", (c->index / 250) % 250,
             2 + c->index % 250);
    uv_ip4_addr(src, 0, &from);
    uv_tcp_bind(&c->tcp, (struct sockaddr *)&from, 0);
  }
  uv_tcp_nodelay(&c->tcp, 1);
  if (uv_tcp_connect(&c->connect, &c->tcp, (struct sockaddr *)&to,
                     on_connected) != 0)
    fail_client(c, "connect failed");
}

static void login_tick(uv_timer_t *t) {
  int per_tick = B.o.login_rate ? (B.o.login_rate + 99) / 100 : 500;

  (void)t;
  while (per_tick-- > 0 && B.started < B.o.clients)
    start_client(&B.clients[B.started++]);
  if (B.started == B.o.clients)
    uv_timer_stop(&B.login_timer);
}

/* ---- scenarios ---------------------------------------------------------- */

static void stop_all(void);

static void run_over(uv_timer_t *t) {
  (void)t;
  B.running = 0;
  B.t_run_end = uv_hrtime();
  stop_all();
}

static void rate_tick(uv_timer_t *t) {
  /* Spread the messages of one tick over the ready senders, up to
   * BATCH each (one write): at high rates a message per client per tick
   * would make the generator's system calls, not the CM, the limit. */
  enum { BATCH = 8 };
  static int next;
  int per_tick = B.o.msg_rate / 1000 ? B.o.msg_rate / 1000 : 1;
  int per_client = (per_tick + B.o.clients - 1) / B.o.clients, k;

  (void)t;
  if (per_client < BATCH)
    per_client = per_tick < BATCH ? per_tick : BATCH;
  while (per_tick > 0 && B.running) {
    client *c = &B.clients[next];

    next = (next + 1) % B.o.clients;
    if (c->state != C_READY || c->peer == NULL || c->peer->state != C_READY) {
      per_tick--; /* a dead pair does not stall the tick */
      continue;
    }
    for (k = 0; k < per_client && per_tick > 0; k++, per_tick--)
      send_message(c);
  }
}

static void start_run(void) {
  int i, w;

  /* A script sampling the CM's CPU and memory for the logins alone waits
   * for this file. */
  if (B.o.ready_file != NULL) {
    FILE *f = fopen(B.o.ready_file, "w");

    if (f != NULL)
      fclose(f);
  }
  B.running = 1;
  B.t_run_start = uv_hrtime();
  for (i = 0; i + 1 < B.o.clients; i += 2) {
    B.clients[i].peer = &B.clients[i + 1];
    B.clients[i + 1].peer = &B.clients[i];
  }
  if (strcmp(B.o.scenario, "flood") == 0) {
    for (i = 0; i < B.o.clients; i++) {
      client *c = &B.clients[i];
      if (c->state != C_READY || c->peer == NULL || c->peer->state != C_READY)
        continue;
      for (w = 0; w < B.o.window; w++)
        send_message(c);
    }
  } else if (strcmp(B.o.scenario, "latency") == 0) {
    uv_timer_start(&B.rate_timer, rate_tick, 1, 1);
  }
  uv_timer_start(&B.run_timer, run_over, (uint64_t)(B.o.duration * 1000), 0);
}

static void on_closed(uv_handle_t *h) {
  client *c = h->data;

  xcm__xml_reader_free(c->reader);
  c->reader = NULL;
  xcm__buf_free(&c->out);
  B.closed++;
}

static void stop_all(void) {
  int i;

  uv_timer_stop(&B.rate_timer);
  flush_all(NULL);
  uv_close((uv_handle_t *)&B.flusher, NULL);
  uv_close((uv_handle_t *)&B.login_timer, NULL);
  uv_close((uv_handle_t *)&B.run_timer, NULL);
  uv_close((uv_handle_t *)&B.rate_timer, NULL);
  for (i = 0; i < B.started; i++)
    uv_close((uv_handle_t *)&B.clients[i].tcp, on_closed);
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

  return x < y ? -1 : x > y;
}

static uint64_t pct(double p) {
  size_t i;

  if (B.nlat == 0)
    return 0;
  i = (size_t)(p * (double)(B.nlat - 1));
  return B.lat[i];
}

static void raise_fd_limit(int need) {
  struct rlimit r;

  if (getrlimit(RLIMIT_NOFILE, &r) != 0)
    return;
  if (r.rlim_cur < (rlim_t)need + 64) {
    r.rlim_cur = r.rlim_max;
    setrlimit(RLIMIT_NOFILE, &r);
  }
}

static void usage(void) {
  fprintf(stderr,
          "usage: xcm-load [--host H] [--port P] [--domain D] [--clients N]\n"
          "  [--login-rate R] [--mech PLAIN|ANONYMOUS] [--user-prefix U]\n"
          "  [--scenario idle|flood|latency|half] [--duration S] [--window W]\n"
          "  [--rate MSGS_PER_S] [--body BYTES] [--spread] [--tap]\n"
          "  [--ready-file PATH] [--websocket PATH] [--bosh PATH]\n");
  exit(2);
}

int main(int argc, char **argv) {
  double run_s, login_s;
  uint64_t sent = 0;
  int i, silent = 0, ok;

  B.o.host = "127.0.0.1";
  B.o.port = 5222;
  B.o.domain = "example.test";
  B.o.clients = 2;
  B.o.mech = "ANONYMOUS";
  B.o.user_prefix = "user";
  B.o.scenario = "idle";
  B.o.duration = 5;
  B.o.window = 16;
  B.o.msg_rate = 1000;
  B.o.body = 16;
  for (i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--spread") == 0) {
      B.o.spread = 1;
      continue;
    }
    if (strcmp(a, "--tap") == 0) {
      B.o.tap = 1;
      continue;
    }
    if (v == NULL)
      usage();
    i++;
    if (strcmp(a, "--host") == 0)
      B.o.host = v;
    else if (strcmp(a, "--ready-file") == 0)
      B.o.ready_file = v;
    else if (strcmp(a, "--port") == 0)
      B.o.port = atoi(v);
    else if (strcmp(a, "--domain") == 0)
      B.o.domain = v;
    else if (strcmp(a, "--clients") == 0)
      B.o.clients = atoi(v);
    else if (strcmp(a, "--login-rate") == 0)
      B.o.login_rate = atoi(v);
    else if (strcmp(a, "--mech") == 0)
      B.o.mech = v;
    else if (strcmp(a, "--user-prefix") == 0)
      B.o.user_prefix = v;
    else if (strcmp(a, "--scenario") == 0)
      B.o.scenario = v;
    else if (strcmp(a, "--duration") == 0)
      B.o.duration = atof(v);
    else if (strcmp(a, "--window") == 0)
      B.o.window = atoi(v);
    else if (strcmp(a, "--rate") == 0)
      B.o.msg_rate = atoi(v);
    else if (strcmp(a, "--body") == 0)
      B.o.body = atoi(v);
    else if (strcmp(a, "--websocket") == 0)
      B.o.ws_path = v;
    else if (strcmp(a, "--bosh") == 0)
      B.o.bosh_path = v;
    else
      usage();
  }
  if (B.o.clients < 1)
    usage();
  /* A server that ends a stream must show up as a failed client, not
   * kill the generator. */
  signal(SIGPIPE, SIG_IGN);
  raise_fd_limit(B.o.clients);
  B.loop = uv_default_loop();
  B.clients = calloc((size_t)B.o.clients, sizeof(*B.clients));
  if (B.clients == NULL || xcm__xml_pool_new(&B.pool, NULL, 64) != 0)
    return 1;
  xcm__buf_init(&B.out, NULL);
  for (i = 0; i < B.o.clients; i++) {
    B.clients[i].index = i;
    xcm__buf_init(&B.clients[i].out, NULL);
    xcm__buf_init(&B.clients[i].in, NULL);
  }
  uv_prepare_init(B.loop, &B.flusher);
  uv_prepare_start(&B.flusher, flush_all);
  uv_unref((uv_handle_t *)&B.flusher);
  uv_timer_init(B.loop, &B.login_timer);
  uv_timer_init(B.loop, &B.run_timer);
  uv_timer_init(B.loop, &B.rate_timer);
  B.t_start = uv_hrtime();
  uv_timer_start(&B.login_timer, login_tick, 0, 10);
  uv_run(B.loop, UV_RUN_DEFAULT);

  for (i = 0; i < B.o.clients; i++) {
    sent += B.clients[i].sent;
    if (B.clients[i].state == C_READY && B.clients[i].peer != NULL &&
        B.clients[i].received == 0)
      silent++;
  }
  login_s = (double)(B.t_ready - B.t_start) / 1e9;
  run_s = (double)(B.t_run_end - B.t_run_start) / 1e9;
  if (B.nlat > 0)
    qsort(B.lat, B.nlat, sizeof(*B.lat), cmp_u64);
  if (B.o.tap)
    printf("# "); /* the figures, as a TAP comment */
  printf("{\"scenario\":\"%s\",\"clients\":%d,\"ready\":%d,\"failed\":%d,"
         "\"login_s\":%.3f,\"logins_per_s\":%.0f,\"run_s\":%.3f,"
         "\"sent\":%" PRIu64 ",\"delivered\":%" PRIu64 ","
         "\"msgs_per_s\":%.0f,\"p50_us\":%" PRIu64 ",\"p90_us\":%" PRIu64
         ",\"p99_us\":%" PRIu64 ",\"p999_us\":%" PRIu64 ",\"error\":\"%s\"}\n",
         B.o.scenario, B.o.clients, B.ready, B.dead, login_s,
         login_s > 0 ? B.ready / login_s : 0, run_s, sent, B.delivered,
         run_s > 0 ? (double)B.delivered / run_s : 0, pct(0.5), pct(0.9),
         pct(0.99), pct(0.999), B.errors);
  ok = B.dead == 0 && B.ready == B.o.clients &&
       (strcmp(B.o.scenario, "idle") == 0 ||
        strcmp(B.o.scenario, "half") == 0 || silent == 0);
  if (B.o.tap)
    printf("1..1\n%s 1 - %d clients %s, %d failed, %d received nothing\n",
           ok ? "ok" : "not ok", B.o.clients, B.o.scenario, B.dead, silent);
  xcm__xml_pool_free(B.pool);
  xcm__buf_free(&B.out);
  free(B.clients);
  free(B.lat);
  return ok ? 0 : 1;
}
