#include "upstream/link.h"

#include <stdio.h>
#include <string.h>

#include "proto/cmproto.h"
#include "proto/policy.h"
#include "proto/stream.h"
#include "transport/stream.h"
#include "util/alloc.h"
#include "xcm/error.h"

enum phase {
  P_IDLE,
  P_RESOLVING,
  P_CONNECTING,
  P_STREAM,    /* header sent, waiting for the server's header and features */
  P_TLS,       /* <starttls/> sent */
  P_ZLIB,      /* <compress/> sent */
  P_HANDSHAKE, /* <handshake/> sent */
  P_UP,
  P_CLOSED /* xcm__link_close was called */
};

enum action { A_NONE, A_TLS, A_ZLIB };

struct xcm_link {
  xcm_ctx *ctx;
  const xcm_pool_options *opt;
  const char *host; /* its server's (a node of a cluster), borrowed */
  int port;
  xcm_tls_config *tls;
  unsigned index;
  unsigned generation;
  /* The server refused this address with a conflict: someone else
   * holds it. Until a connection under it is up, each new one asks for
   * the same address rather than a fresh one, which would join that
   * someone's pool. */
  int keep_generation;
  const xcm_link_cb *cb;
  void *ud;

  enum phase phase;
  enum action action;
  int tls_on;
  int zlib_on;
  xcm_stream *stream;
  xcm_xml_reader *reader;
  int streams_alive;

  uv_getaddrinfo_t dns;
  int dns_busy;
  struct addrinfo *addrs;
  struct addrinfo *next_addr;

  uv_timer_t timer;
  int timer_open;
  uint64_t last_read;
  uint64_t last_write;
  uint64_t phase_since;

  /* Why a reader callback wants the connection dropped: acted on once
   * the reader has returned, never from inside it. */
  int fail_err;
  const char *fail_why;
  char why_buf[256];

  char jid[XCM_POOL_MAX_JID]; /* the pool refuses names that do not fit */
  char stream_id[128];        /* a longer one is refused (on_header) */
  xcm_buf scratch;
};

static uint64_t now(const xcm_link *l) {
  return uv_now(l->ctx->loop);
}

static void set_phase(xcm_link *l, enum phase p) {
  l->phase = p;
  l->phase_since = now(l);
}

enum xcm_link_state xcm__link_state(const xcm_link *l) {
  switch (l->phase) {
  case P_IDLE:
  case P_CLOSED:
    return XCM_LINK_IDLE;
  case P_HANDSHAKE:
    return XCM_LINK_HANDSHAKE;
  case P_UP:
    return XCM_LINK_UP;
  default:
    return XCM_LINK_CONNECTING;
  }
}

int xcm__link_is_tls(const xcm_link *l) {
  return l->tls_on;
}

int xcm__link_is_zlib(const xcm_link *l) {
  return l->zlib_on;
}

unsigned xcm__link_index(const xcm_link *l) {
  return l->index;
}

const char *xcm__link_jid(const xcm_link *l) {
  return l->jid;
}

static void maybe_closed(xcm_link *l) {
  if (l->phase == P_CLOSED && !l->dns_busy && !l->timer_open &&
      l->streams_alive == 0 && l->cb->closed != NULL)
    l->cb->closed(l->ud, l);
}

/* ---- sending ----------------------------------------------------------- */

static int send_scratch(xcm_link *l) {
  int err = xcm__stream_write(l->stream, l->scratch.data, l->scratch.len);

  xcm__buf_reset(&l->scratch);
  if (err == 0)
    l->last_write = now(l);
  return err;
}

int xcm__link_send(xcm_link *l, const char *data, size_t len) {
  int err;

  if (l->phase != P_UP)
    return XCM_ECLOSED;
  err = xcm__stream_write(l->stream, data, len);
  if (err == 0)
    l->last_write = now(l);
  return err;
}

int xcm__link_congested(const xcm_link *l) {
  return l->phase == P_UP && xcm__stream_over(l->stream);
}

size_t xcm__link_queued(const xcm_link *l) {
  return l->stream != NULL ? xcm__stream_queued(l->stream) : 0;
}

static int send_header(xcm_link *l) {
  int err = xcm__cm_stream_open(&l->scratch, l->jid);

  return err != 0 ? err : send_scratch(l);
}

/* ---- dropping ---------------------------------------------------------- */

static void end_connection(xcm_link *l, int graceful) {
  if (l->reader != NULL) {
    xcm__xml_reader_free(l->reader);
    l->reader = NULL;
  }
  if (l->stream != NULL) {
    if (graceful && l->phase == P_UP) {
      xcm__stream_write(l->stream, "</stream:stream>", 16);
      xcm__stream_close(l->stream);
    } else {
      xcm__stream_abort(l->stream);
    }
    l->stream = NULL;
  }
  if (l->addrs != NULL) {
    uv_freeaddrinfo(l->addrs);
    l->addrs = l->next_addr = NULL;
  }
  l->tls_on = l->zlib_on = 0;
  l->action = A_NONE;
}

void xcm__link_drop(xcm_link *l, int err, const char *why) {
  if (l->phase == P_IDLE || l->phase == P_CLOSED)
    return;
  if (l->dns_busy)
    uv_cancel((uv_req_t *)&l->dns);
  end_connection(l, 0);
  set_phase(l, P_IDLE);
  uv_timer_stop(&l->timer);
  l->cb->down(l->ud, l, err, why);
}

static int fail(xcm_link *l, int err, const char *fmt, const char *arg) {
  snprintf(l->why_buf, sizeof l->why_buf, fmt, arg ? arg : "");
  l->fail_err = err;
  l->fail_why = l->why_buf;
  return err;
}

/* ---- the server's stream ---------------------------------------------- */

static int on_header(void *ud, const xcm_xml_header *h) {
  xcm_link *l = ud;
  const char *id = xcm__xml_header_attr(h, "", "id");

  if (strcmp(h->ns, XCM_NS_STREAMS) != 0 || strcmp(h->name, "stream") != 0)
    return fail(l, XCM_EPROTO, "the server's stream header is not a stream%s",
                NULL);
  /* Openfire refuses a connection (bad-format, conflict) with a header
   * without an id followed by the stream error: read on, so that the
   * error, not the missing id, is what the operator is told. Anything
   * else without an id is refused in on_stanza. */
  l->stream_id[0] = '\0';
  if (id == NULL || id[0] == '\0')
    return 0;
  /* Cut, the id would make a handshake digest the server cannot match. */
  if (strlen(id) >= sizeof l->stream_id)
    return fail(l, XCM_EPROTO,
                "the server's stream id is longer than 127 bytes%s", NULL);
  memcpy(l->stream_id, id, strlen(id) + 1);
  return 0;
}

static int levels_for(void *ud, const char *ns, const char *name) {
  const xcm_link *l = ud;

  (void)ns;
  /* Copying a payload's attributes costs about 3% of a routed message
   * and is only needed for a session we closed. */
  if (strcmp(name, "route") == 0)
    return l->cb->payload_attrs == NULL || l->cb->payload_attrs(l->ud)
               ? 2
               : 2 | XCM_XML_BARE_LAST;
  if (strcmp(name, "iq") == 0)
    return 6;
  if (strcmp(name, "features") == 0 || strcmp(name, "error") == 0)
    return 3;
  return 1;
}

static const xcm_xml_node *child_ns(const xcm_xml_node *n, const char *ns,
                                    const char *name) {
  return n != NULL ? xcm__xml_node_child(n, ns, name) : NULL;
}

static int has_zlib(const xcm_xml_node *compression) {
  const xcm_xml_node *m;

  for (m = compression->children; m != NULL; m = m->next)
    if (strcmp(m->name, "method") == 0 &&
        strncmp(m->text, "zlib", m->text_len) == 0 && m->text_len == 4)
      return 1;
  return 0;
}

static int send_handshake(xcm_link *l) {
  int err = xcm__cm_handshake(&l->scratch, l->stream_id, strlen(l->stream_id),
                              l->opt->secret, strlen(l->opt->secret));
  if (err == 0)
    err = send_scratch(l);
  if (err == 0)
    set_phase(l, P_HANDSHAKE);
  return err;
}

static int on_features(xcm_link *l, const xcm_xml_node *f) {
  const xcm_xml_node *tls = child_ns(f, XCM_NS_TLS, "starttls");
  const xcm_xml_node *comp =
      child_ns(f, XCM_NS_COMPRESS_FEATURE, "compression");
  static const char starttls[] =
      "<starttls xmlns=\"urn:ietf:params:xml:ns:xmpp-tls\"/>";
  static const char compress[] =
      "<compress xmlns=\"http://jabber.org/protocol/compress\">"
      "<method>zlib</method></compress>";
  int err;

  if (!l->tls_on && tls != NULL && l->opt->tls != XCM_UP_TLS_OFF) {
    if (l->tls == NULL)
      return fail(l, XCM_ETLS, "TLS is wanted but not configured%s", NULL);
    xcm__buf_append(&l->scratch, starttls, sizeof starttls - 1);
    set_phase(l, P_TLS);
    return send_scratch(l);
  }
  if (!l->tls_on && l->opt->tls == XCM_UP_TLS_REQUIRED)
    return fail(l, XCM_ETLS,
                "the server does not offer STARTTLS and TLS is required; "
                "not sending the secret in clear%s",
                NULL);
  if (!l->tls_on && tls != NULL && child_ns(tls, XCM_NS_TLS, "required"))
    return fail(l, XCM_ETLS,
                "the server requires TLS; configure TLS for the upstream%s",
                NULL);
  if (!l->zlib_on && comp != NULL && l->opt->zlib && has_zlib(comp)) {
    xcm__buf_append(&l->scratch, compress, sizeof compress - 1);
    set_phase(l, P_ZLIB);
    return send_scratch(l);
  }
  err = send_handshake(l);
  return err;
}

static int on_config(xcm_link *l, const xcm_xml_node *iq) {
  xcm_policy p;
  const char *id = xcm__xml_node_attr(iq, "id");
  int err, skipped = xcm__policy_from_config(iq, &p);

  if (skipped < 0)
    return 0;
  if (skipped > 0)
    xcm__log(l->ctx, XCM_LOG_WARN,
             "upstream: the server's configuration lists %d SASL mechanism(s) "
             "that clients will not be offered (malformed, repeated, or "
             "beyond the first %d)",
             skipped, XCM_POLICY_MAX_MECHANISMS);
  err = xcm__cm_iq_result(&l->scratch, l->jid, l->opt->domain,
                          id != NULL && id[0] ? id : "config");
  if (err == 0)
    err = send_scratch(l);
  if (l->cb->policy != NULL)
    l->cb->policy(l->ud, l, &p);
  return err;
}

static int is_config(const xcm_xml_stanza *s) {
  const xcm_xml_node *n = s->root;
  const char *type;

  if (n == NULL || strcmp(s->name, "iq") != 0)
    return 0;
  type = xcm__xml_node_attr(n, "type");
  return type != NULL && strcmp(type, "set") == 0 &&
         xcm__xml_node_child(n, XCM_NS_CM_PROTOCOL, "configuration") != NULL;
}

/* Openfire keys a CM's sessions by its name and spreads them over every
 * connection under that name: a second CM process with the same name
 * would receive the first one's traffic. Our own resources are fresh per
 * connection, so a conflict means another process holds this address:
 * most likely two instances (or two copies of one config file) with the
 * same name. Say so, and ask for the same address again (after the
 * pool's backoff) instead of a fresh one that Openfire would accept into
 * the other process's pool. (Openfire 4.1.6 does not refuse: the
 * newcomer silently takes the address over; only distinct names help.) */
static int on_conflict(xcm_link *l) {
  l->keep_generation = 1;
  xcm__log(l->ctx, XCM_LOG_ERROR,
           "upstream %s: Openfire refused this address (conflict): another "
           "connection manager is connected under the same name. Give each "
           "instance (each xcmd, each config file) its own name ([upstream] "
           "name, xcm_options.name); retrying the same address",
           l->jid);
  return fail(l, XCM_EPROTO,
              "the server sent a stream error: conflict (another CM uses "
              "this name)%s",
              NULL);
}

static int on_stream_error(xcm_link *l, const xcm_xml_node *e) {
  const xcm_xml_node *c;

  for (c = e->children; c != NULL; c = c->next) {
    if (strcmp(c->ns, XCM_NS_STREAM_ERRORS) != 0 ||
        strcmp(c->name, "text") == 0)
      continue;
    if (strcmp(c->name, "system-shutdown") == 0 && l->cb->shutdown != NULL)
      l->cb->shutdown(l->ud, l);
    if (strcmp(c->name, "conflict") == 0)
      return on_conflict(l);
    return fail(l, XCM_EPROTO, "the server sent a stream error: %s", c->name);
  }
  return fail(l, XCM_EPROTO, "the server sent a stream error%s", NULL);
}

static int on_stanza(void *ud, const xcm_xml_stanza *s) {
  xcm_link *l = ud;

  if (strcmp(s->ns, XCM_NS_STREAMS) == 0 && strcmp(s->name, "error") == 0)
    return on_stream_error(l, s->root);
  if (l->stream_id[0] == '\0')
    return fail(l, XCM_EPROTO, "the server's stream header has no id%s", NULL);
  /* Openfire 4.1.6 counts a connection as the CM's once its header is
   * read: routes and iq answers may come before <handshake/>. They are
   * the pool's like any other. */
  if (l->phase != P_UP && (strcmp(s->name, "route") == 0 ||
                           (strcmp(s->name, "iq") == 0 && !is_config(s)))) {
    l->cb->stanza(l->ud, l, s);
    return 0;
  }
  switch (l->phase) {
  case P_STREAM:
    if (strcmp(s->name, "features") == 0)
      return on_features(l, s->root);
    break;
  case P_TLS:
    if (strcmp(s->name, "proceed") == 0) {
      l->action = A_TLS;
      return XCM_XML_RESTART;
    }
    return fail(l, XCM_ETLS, "the server refused STARTTLS (<%s/>)", s->name);
  case P_ZLIB:
    if (strcmp(s->name, "compressed") == 0) {
      l->action = A_ZLIB;
      return XCM_XML_RESTART;
    }
    /* Compression refused: carry on without it. */
    return send_handshake(l);
  case P_HANDSHAKE:
    if (strcmp(s->name, "handshake") == 0) {
      set_phase(l, P_UP);
      /* Ours now: the next connection takes a fresh address again. Kept
       * until then, so that a failure of another kind after a conflict
       * (Openfire briefly unreachable) does not step past the taken
       * address into the other CM's pool. */
      l->keep_generation = 0;
      l->cb->up(l->ud, l);
      return 0;
    }
    break;
  case P_UP:
    if (is_config(s))
      return on_config(l, s->root);
    l->cb->stanza(l->ud, l, s);
    return 0;
  default:
    break;
  }
  return fail(l, XCM_EPROTO, "unexpected <%s/> while connecting", s->name);
}

static void on_end(void *ud) {
  xcm_link *l = ud;

  fail(l, UV_EOF, "the server ended the stream%s", NULL);
}

static const xcm_xml_callbacks reader_cb = {on_header, levels_for, on_stanza,
                                            on_end};

/* ---- the connection ---------------------------------------------------- */

static void on_read(void *ud, const char *data, size_t len) {
  xcm_link *l = ud;
  size_t consumed;
  int err;

  l->last_read = now(l);
  while (len > 0 && l->reader != NULL) {
    l->fail_err = 0;
    err = xcm__xml_reader_feed(l->reader, data, len, &consumed);
    data += consumed;
    len -= consumed;
    if (err != 0 || l->fail_err != 0) {
      if (l->fail_err == 0)
        fail(l, XCM_EPROTO, "malformed stream from the server: %s",
             xcm__xml_reader_error_text(l->reader));
      xcm__link_drop(l, l->fail_err, l->fail_why);
      return;
    }
    if (l->action == A_TLS) {
      l->action = A_NONE;
      err = xcm__stream_start_tls(l->stream, l->tls, 0, l->host, data, len);
      if (err != 0)
        xcm__link_drop(l, err, "could not start TLS");
      return;
    }
    if (l->action == A_ZLIB) {
      l->action = A_NONE;
      l->zlib_on = 1;
      set_phase(l, P_STREAM);
      /* The new header is the first compressed byte: start zlib first. */
      err = xcm__stream_start_zlib(l->stream, data, len);
      if (err == 0)
        err = send_header(l);
      if (err != 0)
        xcm__link_drop(l, err, "could not start compression");
      return;
    }
  }
  /* The scanner reads what Openfire usually sends; a parser borrowed for
   * anything else goes back once it sits between stanzas. */
  if (l->reader != NULL)
    xcm__xml_reader_shrink(l->reader);
}

static void on_stream_end(void *ud, int err) {
  xcm_link *l = ud;

  xcm__link_drop(l, err,
                 err == UV_EOF ? "the server closed the connection"
                               : "the connection to the server failed");
}

static void on_tls_done(void *ud, int err) {
  xcm_link *l = ud;

  if (err != 0) {
    xcm__link_drop(l, err,
                   xcm__stream_tls_refused(l->stream)
                       ? "TLS: the server's certificate was refused (told at "
                         "error level once per certificate)"
                       : "TLS handshake with the server failed");
    return;
  }
  l->tls_on = 1;
  set_phase(l, P_STREAM);
  err = send_header(l);
  if (err != 0)
    xcm__link_drop(l, err, "could not write to the server");
}

static void on_drain(void *ud) {
  xcm_link *l = ud;

  if (l->phase == P_UP && l->cb->drain != NULL)
    l->cb->drain(l->ud, l);
}

static void on_stream_closed(void *ud) {
  xcm_link *l = ud;

  l->streams_alive--;
  maybe_closed(l);
}

static void try_next_address(xcm_link *l);

static void on_connected(void *ud) {
  xcm_link *l = ud;
  xcm_xml_limits lim = {2u << 20, 64, 0};
  int err;

  uv_freeaddrinfo(l->addrs);
  l->addrs = l->next_addr = NULL;
  err = xcm__xml_reader_new(&l->reader, l->ctx->xml, &reader_cb, l, &lim);
  if (err == 0)
    xcm__xml_reader_set_usual(l->reader, &xcm__stream_cm);
  /* Openfire writes every stanza in the scanner's subset. */
  if (err == 0)
    err = xcm__xml_reader_set_scan(l->reader, 1);
  if (err == 0) {
    set_phase(l, P_STREAM);
    l->last_read = now(l);
    err = send_header(l);
  }
  if (err != 0)
    xcm__link_drop(l, err, "out of memory");
}

/* A connect failure before on_connected comes through end. */
static void on_connect_end(void *ud, int err) {
  xcm_link *l = ud;

  if (l->phase != P_CONNECTING) {
    on_stream_end(ud, err);
    return;
  }
  xcm__stream_close(l->stream);
  l->stream = NULL;
  snprintf(l->why_buf, sizeof l->why_buf, "cannot connect to %s:%d: %s",
           l->host, l->port, uv_strerror(err));
  if (l->next_addr != NULL) {
    try_next_address(l);
    return;
  }
  xcm__link_drop(l, err, l->why_buf);
}

static void try_next_address(xcm_link *l) {
  static const xcm_stream_cb connect_cb = {on_read, on_connect_end, on_tls_done,
                                           on_drain, on_stream_closed};
  xcm_stream_limits lim;
  struct addrinfo *a = l->next_addr;
  int err;

  l->next_addr = a->ai_next;
  memset(&lim, 0, sizeof lim);
  lim.max_out = l->opt->max_out;
  lim.high_water = l->opt->high_water;
  lim.low_water = l->opt->low_water;
  lim.max_inflate = 4u << 20;
  err = xcm__stream_connect(&l->stream, l->ctx, a->ai_addr, &connect_cb,
                            on_connected, l, &lim);
  if (err != 0) {
    l->stream = NULL;
    if (l->next_addr != NULL) {
      try_next_address(l);
      return;
    }
    xcm__link_drop(l, err, "cannot open a socket");
    return;
  }
  l->streams_alive++;
}

static void on_resolved(uv_getaddrinfo_t *req, int status,
                        struct addrinfo *res) {
  xcm_link *l = req->data;

  l->dns_busy = 0;
  if (l->phase == P_CLOSED) {
    if (res != NULL)
      uv_freeaddrinfo(res);
    maybe_closed(l);
    return;
  }
  if (l->phase != P_RESOLVING) {
    if (res != NULL)
      uv_freeaddrinfo(res);
    return;
  }
  if (status != 0 || res == NULL) {
    snprintf(l->why_buf, sizeof l->why_buf, "cannot resolve %s: %s", l->host,
             uv_strerror(status));
    xcm__link_drop(l, status ? status : UV_EAI_NONAME, l->why_buf);
    return;
  }
  l->addrs = l->next_addr = res;
  set_phase(l, P_CONNECTING);
  try_next_address(l);
}

static void on_timer(uv_timer_t *t);

/* One timer per link checks the negotiation deadline, the keepalive and
 * the server's silence, often enough for the smallest of them. */
static uint64_t tick_ms(const xcm_link *l) {
  uint64_t t = 1000;

  if (l->opt->keepalive_ms / 4 + 1 < t)
    t = l->opt->keepalive_ms / 4 + 1;
  if (l->opt->dead_after_ms / 4 + 1 < t)
    t = l->opt->dead_after_ms / 4 + 1;
  return t;
}

/* The timer is made on first use, so that a link never connected (its
 * pool failed half-built) holds no handle and is freed at once. */
static void ensure_timer(xcm_link *l) {
  if (l->timer_open)
    return;
  uv_timer_init(l->ctx->loop, &l->timer);
  l->timer.data = l;
  l->timer_open = 1;
}

void xcm__link_connect(xcm_link *l) {
  struct addrinfo hints;
  char port[16];
  int err;

  if (l->phase != P_IDLE)
    return;
  ensure_timer(l);
  if (l->dns_busy) {
    /* A cancelled look-up has not called back yet: its request is still
     * in use. */
    xcm__link_connect_later(l, 50);
    return;
  }
  if (!l->keep_generation)
    l->generation++;
  snprintf(l->jid, sizeof l->jid, "%s/%s%u-%u", l->opt->name,
           l->opt->resource_prefix, l->index + 1, l->generation);
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  snprintf(port, sizeof port, "%d", l->port);
  set_phase(l, P_RESOLVING);
  /* The negotiation as a whole must finish in time, or it starts over. */
  uv_timer_start(&l->timer, on_timer, tick_ms(l), tick_ms(l));
  l->dns.data = l;
  err =
      uv_getaddrinfo(l->ctx->loop, &l->dns, on_resolved, l->host, port, &hints);
  if (err != 0) {
    xcm__link_drop(l, err, "cannot start resolving the server's name");
    return;
  }
  l->dns_busy = 1;
}

void xcm__link_connect_later(xcm_link *l, uint64_t delay_ms) {
  if (l->phase != P_IDLE)
    return;
  ensure_timer(l);
  uv_timer_start(&l->timer, on_timer, delay_ms, 0);
}

static void on_timer(uv_timer_t *t) {
  xcm_link *l = t->data;
  uint64_t n = now(l);

  switch (l->phase) {
  case P_IDLE:
    xcm__link_connect(l);
    return;
  case P_UP:
    if (n - l->last_read >= l->opt->dead_after_ms) {
      snprintf(l->why_buf, sizeof l->why_buf, "the server was silent for %u ms",
               l->opt->dead_after_ms);
      xcm__link_drop(l, XCM_ETIMEDOUT, l->why_buf);
      return;
    }
    if (n - l->last_write >= l->opt->keepalive_ms &&
        xcm__stream_write(l->stream, " ", 1) == 0)
      l->last_write = n;
    return;
  case P_CLOSED:
    return;
  default:
    if (n - l->phase_since >= l->opt->request_timeout_ms)
      xcm__link_drop(l, XCM_ETIMEDOUT,
                     "the server did not complete the connection in time");
    return;
  }
}

static void on_timer_closed(uv_handle_t *h) {
  xcm_link *l = h->data;

  l->timer_open = 0;
  maybe_closed(l);
}

int xcm__link_new(xcm_link **out, xcm_ctx *ctx, const xcm_pool_options *opt,
                  const char *host, int port, xcm_tls_config *tls,
                  unsigned index, const xcm_link_cb *cb, void *ud) {
  xcm_link *l = xcm__calloc(ctx->alloc, sizeof(*l));

  *out = NULL;
  if (l == NULL)
    return XCM_ENOMEM;
  l->ctx = ctx;
  l->opt = opt;
  l->host = host;
  l->port = port;
  l->tls = tls;
  l->index = index;
  l->cb = cb;
  l->ud = ud;
  l->phase = P_IDLE;
  xcm__buf_init(&l->scratch, ctx->alloc);
  snprintf(l->jid, sizeof l->jid, "%s/%s%u-0", opt->name, opt->resource_prefix,
           index + 1);
  *out = l;
  return 0;
}

void xcm__link_close(xcm_link *l) {
  if (l->phase == P_CLOSED)
    return;
  if (l->dns_busy)
    uv_cancel((uv_req_t *)&l->dns);
  end_connection(l, 1);
  l->phase = P_CLOSED;
  if (l->timer_open)
    uv_close((uv_handle_t *)&l->timer, on_timer_closed);
  else
    maybe_closed(l);
}

void xcm__link_free(xcm_link *l) {
  if (l == NULL)
    return;
  xcm__buf_free(&l->scratch);
  xcm__free(l->ctx->alloc, l);
}
