#include "client/client_int.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "client/framing.h"
#include "proto/cmproto.h"
#include "proto/route.h"
#include "proto/stream.h"
#include "session/csi.h"
#include "session/sm.h"
#include "transport/proxy.h"
#include "util/alloc.h"
#include "xcm/error.h"
#include "xcm/proto.h"

#define NS_TLS "urn:ietf:params:xml:ns:xmpp-tls"
#define NS_SASL "urn:ietf:params:xml:ns:xmpp-sasl"
#define NS_COMPRESS "http://jabber.org/protocol/compress"
#define NS_IQ_AUTH "jabber:iq:auth"
#define NS_IQ_REGISTER "jabber:iq:register"

static const xcm_xml_callbacks reader_cb;
static void on_timer_closed(uv_handle_t *h);

size_t xcm__cl_max_stanza(const xcm_client *c) {
  return (c->flags & F_AUTHED) ? c->cfg->max_stanza
                               : c->cfg->max_stanza_preauth;
}

void xcm__cl_apply_limits(xcm_client *c) {
  xcm_xml_limits l;

  l.max_stanza = xcm__cl_max_stanza(c);
  l.max_depth = c->cfg->max_depth;
  /* Trees are built only for what the CM must read itself (pre-auth
   * iqs, <compress>, bind); none of those is anywhere near this, and the
   * cap keeps a hostile one from costing more than its size allows. */
  l.max_tree = 16384;
  xcm__xml_reader_set_limits(c->reader, &l);
}

/* ---- the end of a client ------------------------------------------------ */

static void maybe_free(xcm_client *c) {
  if (c->handles > 0)
    return;
  xcm__xml_reader_free(c->reader);
  xcm__req_clear(&c->req, c->ctx->alloc);
  xcm__free(c->ctx->alloc, c->proxy);
  xcm__free(c->ctx->alloc, c->peer);
  xcm__sm_free(c->ctx->alloc, c->sm);
  xcm__free(c->ctx->alloc, c->authid);
  xcm__client_moved_free(c->moving);
  xcm__csi_free(c->ctx->alloc, c->csi);
  if (c->msg != NULL)
    xcm__buf_free(&c->msg->q);
  xcm__free(c->ctx->alloc, c->msg);
  xcm__free(c->ctx->alloc, c);
}

static const xcm_framing *framing(const xcm_client *c) {
  return c->msg != NULL ? &xcm__framing_messages : &xcm__framing_bytes;
}

/* Whether the transport can still be written to. */
static int live(const xcm_client *c) {
  return c->stream != NULL || (c->msg != NULL && !c->msg->closed);
}

static void csi_end(xcm_client *c);
static void csi_to_sm(xcm_client *c);

static void notify(xcm_client *c, xcm_cond cond, int err, const char *text) {
  xcm_client_end end;

  if (c->flags & F_NOTIFIED)
    return;
  c->flags |= F_NOTIFIED | F_CLOSING;
  /* A dropped connection of a resumable session leaves its state to the
   * session, which waits for the client to come back. Otherwise, however
   * the client ends, what it did not acknowledge goes back now, while the
   * owner still has its upstream session. */
  if (c->flags & F_DROPPED) {
    csi_to_sm(c);
    xcm__cl_sm_detach(c);
  }
  xcm__cl_sm_return_all(c);
  csi_end(c);
  end.cond = cond;
  end.err = err;
  end.text = text;
  uv_close((uv_handle_t *)&c->timer, on_timer_closed);
  c->cb->closed(c->ud, &end);
}

static void msg_close(xcm_client *c, int graceful);

static void close_stream(xcm_client *c, int graceful) {
  if (c->msg != NULL)
    msg_close(c, graceful);
  if (c->stream == NULL)
    return;
  if (graceful)
    xcm__stream_close(c->stream);
  else
    xcm__stream_abort(c->stream);
  c->stream = NULL;
}

static int start_header(xcm_client *c, xcm_buf *b) {
  const char *lang = c->lang[0] ? c->lang : NULL;
  int err = 0;

  if (!(c->flags & F_HEADER_SENT)) {
    xcm_frame_open a;

    a.from = c->cfg->domain;
    a.id = c->sid;
    a.lang = lang;
    a.version_1 = (c->flags & F_V1) != 0;
    err = framing(c)->open(b, &a);
    if (err == 0)
      c->flags |= F_HEADER_SENT;
  }
  return err;
}

/* What one step of the stream says, unit by unit (client/framing.h): a
 * bytes framing writes the units of a step together, a messages framing
 * sends each as one message. */
typedef struct units {
  size_t cut[4]; /* where each ends in the buffer */
  unsigned n;
} units;

static void unit_end(units *u, const xcm_buf *b) {
  if (b->len > (u->n ? u->cut[u->n - 1] : 0) && u->n < 4)
    u->cut[u->n++] = b->len;
}

static int msg_write(xcm_client *c, const char *data, size_t len, int record,
                     int force);

/* Write the units in b. force: past max_out, and on a byte stream
 * without the owner hearing of an overflow (the stream is ending). */
static int send_units(xcm_client *c, const xcm_buf *b, const units *u,
                      int force) {
  size_t at = 0;
  unsigned i;
  int err = 0;

  if (c->msg == NULL) {
    if (force)
      return xcm__stream_write(c->stream, b->data, b->len);
    return xcm__cl_write_out(c, b->data, b->len);
  }
  for (i = 0; i < u->n && err == 0; i++) {
    err = msg_write(c, b->data + at, u->cut[i] - at, 0, force);
    at = u->cut[i];
  }
  return err;
}

/* End with a stream error: cond and text, or (raw not NULL) the whole
 * <stream:error> element in raw, for one with an application-specific
 * condition. */
void xcm__cl_fail_raw(xcm_client *c, xcm_cond cond, const char *text,
                      const char *raw, size_t raw_len) {
  xcm_buf *b = &c->ctx->scratch;
  const xcm_framing *fr = framing(c);
  units u = {{0}, 0};

  if (c->flags & F_CLOSING)
    return;
  c->flags |= F_CLOSING;
  if (cond != XCM_COND_NONE)
    c->flags |= F_ERROR;
  xcm__buf_reset(b);
  /* RFC 6120 4.9.1.1: an error before our header still needs one. */
  start_header(c, b);
  unit_end(&u, b);
  if (raw != NULL)
    fr->server_error(b, raw, raw_len);
  else
    fr->error(b, cond, text);
  unit_end(&u, b);
  fr->close(b);
  unit_end(&u, b);
  if (live(c) && !(c->flags & F_ENDED))
    send_units(c, b, &u, 1);
  xcm__buf_reset(b);
  /* A peer that stopped reading would hold a graceful close forever. */
  close_stream(c, !(c->flags & F_ENDED));
  notify(c, cond, 0, text);
}

void xcm__client_fail(xcm_client *c, xcm_cond cond, const char *text) {
  xcm__cl_fail_raw(c, cond, text, NULL, 0);
}

/* ---- writing ------------------------------------------------------------ */

/* Whether an element the server routed is a message, by its name: the
 * route's reader found where the element starts, so its name is the
 * first thing in its bytes. */
static int is_message(const char *bytes, size_t len) {
  return xcm__xml_qname_length(bytes, len) == 7 &&
         memcmp(bytes + 1, "message", 7) == 0;
}

static void return_record(void *ud, const char *data, size_t len) {
  xcm_client *c = ud;

  c->cb->undelivered(c->ud, data, len);
}

/* Give back every message still queued for the client and not handed
 * to the kernel at all. Each was written as a record: the stream knows
 * where it starts and how long it is, so nothing in the bytes (text a
 * sender chose included) is read again. */
static void msg_return_kept(xcm_client *c);

static void return_unsent(xcm_client *c) {
  /* What the transport queued is older than what the client keeps. */
  if (c->msg != NULL && c->msg->t.take_unsent != NULL && !c->msg->closed)
    c->msg->t.take_unsent(c->msg->t.ud);
  if (c->msg != NULL)
    msg_return_kept(c);
  if (c->stream != NULL)
    xcm__stream_unsent_records(c->stream, return_record, c);
}

/* A client that does not read cannot have more queued for it without
 * bound: what it was not given goes back to the server (the messages
 * still queued, then the one that did not fit), and the client is
 * dropped. */
static void overflow(xcm_client *c, const char *data, size_t len, int message) {
  if (c->cb->undelivered != NULL) {
    return_unsent(c);
    if (message)
      c->cb->undelivered(c->ud, data, len);
  }
  c->flags |= F_ENDED | F_DROPPED; /* it would not read the error either */
  xcm__client_fail(c, XCM_COND_POLICY_VIOLATION,
                   "output buffer full: the client does not read");
}

/* No memory to queue what the client must get: it cannot be served
 * without a gap, so it goes, and a message goes back to the server. */
static void out_of_memory(xcm_client *c, const char *data, size_t len,
                          int message) {
  if (c->cb->undelivered != NULL && message)
    c->cb->undelivered(c->ud, data, len);
  xcm__client_fail(c, XCM_COND_RESOURCE_CONSTRAINT, NULL);
}

/* Queue bytes for the client; a message is written as a record, so
 * that it can be given back if the client never gets it. */
static int write_as(xcm_client *c, const char *data, size_t len, int message) {
  int err;

  if (c->msg != NULL)
    err = msg_write(c, data, len, message, 0);
  else if (c->stream == NULL)
    return XCM_ECLOSED;
  else
    err = message ? xcm__stream_write_record(c->stream, data, len)
                  : xcm__stream_write(c->stream, data, len);
  if (err == XCM_ELIMIT)
    overflow(c, data, len, message);
  else if (err == XCM_ENOMEM)
    out_of_memory(c, data, len, message);
  return err;
}

int xcm__cl_write_out(xcm_client *c, const char *data, size_t len) {
  return write_as(c, data, len, 0);
}

/* ---- a message transport (client/framing.h) ----------------------------- */

static void msg_failed(xcm_client *c, int err, const char *data, size_t len);

/* Keep a message while the transport is full; force keeps it past
 * max_out (what ends the stream). */
static int msg_keep(xcm_client *c, const char *data, size_t len, int record,
                    int force) {
  msg_side *m = c->msg;
  size_t max = c->cfg->max_out, need = len + sizeof(kept_hdr);
  kept_hdr h;
  int err;

  if (!force && max != 0 && (m->kept > max || need > max - m->kept))
    return XCM_ELIMIT;
  h.len = len;
  h.record = record;
  err = xcm__buf_reserve(&m->q, need);
  if (err != 0)
    return err;
  xcm__buf_append(&m->q, &h, sizeof h);
  xcm__buf_append(&m->q, data, len);
  m->kept += need;
  return 0;
}

/* One unit to the transport, or kept while it is full. */
static int msg_write(xcm_client *c, const char *data, size_t len, int record,
                     int force) {
  msg_side *m = c->msg;
  int err;

  if (m->closed)
    return XCM_ECLOSED;
  if (m->blocked || m->head < m->q.len)
    return msg_keep(c, data, len, record, force);
  err = m->t.send(m->t.ud, data, len);
  if (err == XCM_EAGAIN) {
    m->blocked = 1;
    return 0;
  }
  if (err < 0) {
    msg_failed(c, err, record ? data : NULL, len);
    return XCM_ECLOSED;
  }
  return 0;
}

static void msg_forget_kept(msg_side *m) {
  xcm__buf_free(&m->q);
  m->head = m->kept = 0;
}

/* Send what was kept, oldest first, until the transport is full again
 * (or, ignoring that, everything: the stream is ending). */
static void msg_send_kept(xcm_client *c, int all) {
  msg_side *m = c->msg;
  kept_hdr h;
  const char *data;
  int err;

  while (m->head < m->q.len && (all || !m->blocked) && !m->closed) {
    memcpy(&h, m->q.data + m->head, sizeof h);
    data = m->q.data + m->head + sizeof h;
    m->head += sizeof h + h.len;
    m->kept -= sizeof h + h.len;
    err = m->t.send(m->t.ud, data, h.len);
    if (err == XCM_EAGAIN) {
      m->blocked = 1;
    } else if (err < 0) {
      msg_failed(c, err, h.record ? data : NULL, h.len);
      return;
    }
  }
  if (m->head >= m->q.len)
    msg_forget_kept(m);
}

/* Give back every message kept and never handed to the transport. */
static void msg_return_kept(xcm_client *c) {
  msg_side *m = c->msg;
  size_t at = m->head;
  kept_hdr h;

  while (at < m->q.len) {
    memcpy(&h, m->q.data + at, sizeof h);
    if (h.record)
      c->cb->undelivered(c->ud, m->q.data + at + sizeof h, h.len);
    at += sizeof h + h.len;
  }
  msg_forget_kept(m);
}

/* The transport refused a unit (data, when it was a message the server
 * must get back): the client ends as if its connection broke. */
static void msg_failed(xcm_client *c, int err, const char *data, size_t len) {
  c->flags |= F_ENDED | F_CLOSING | F_DROPPED;
  if (c->cb->undelivered != NULL && !(c->flags & F_NOTIFIED)) {
    if (data != NULL)
      c->cb->undelivered(c->ud, data, len);
    msg_return_kept(c);
  }
  close_stream(c, 0);
  notify(c, XCM_COND_NONE, err, NULL);
}

/* The end: what was kept goes first unless the end is abrupt, then the
 * transport hears it is done. */
static void msg_close(xcm_client *c, int graceful) {
  msg_side *m = c->msg;

  if (m->closed)
    return;
  if (graceful)
    msg_send_kept(c, 1);
  if (m->closed)
    return;
  m->closed = 1;
  msg_forget_kept(m);
  m->t.close(m->t.ud, !graceful || (c->flags & F_ERROR) != 0);
}

void xcm__client_writable(xcm_client *c) {
  msg_side *m = c->msg;

  if (m == NULL || m->closed)
    return;
  m->blocked = 0;
  msg_send_kept(c, 0);
}

size_t xcm__client_kept(const xcm_client *c) {
  const msg_side *m = c->msg;
  size_t at, n = 0;
  kept_hdr h;

  if (m == NULL)
    return 0;
  for (at = m->head; at < m->q.len; at += sizeof h + h.len, n++)
    memcpy(&h, m->q.data + at, sizeof h);
  return n;
}

/* Reading: pause and resume whatever carries the client's input. */
static void in_pause(xcm_client *c) {
  if (c->stream != NULL)
    xcm__stream_pause(c->stream);
  else if (c->msg != NULL && !c->msg->closed && c->msg->t.pause != NULL)
    c->msg->t.pause(c->msg->t.ud, 1);
}

static void in_resume(xcm_client *c) {
  if (c->stream != NULL)
    xcm__stream_resume(c->stream);
  else if (c->msg != NULL && !c->msg->closed && c->msg->t.pause != NULL)
    c->msg->t.pause(c->msg->t.ud, 0);
}

/* ---- the stream header and features ------------------------------------- */

static int features(xcm_client *c, const xcm_policy *p, xcm_buf *b) {
  xcm_features f;
  unsigned state = 0;

  if (c->flags & F_SECURED)
    state |= XCM_STREAM_SECURED;
  if (c->flags & F_COMPRESSED)
    state |= XCM_STREAM_COMPRESSED;
  if (c->flags & F_AUTHED)
    state |= XCM_STREAM_AUTHENTICATED;
  xcm_features_from_policy(&f, p, state);
  if (c->cfg->tls == NULL || !(framing(c)->caps & XCM_FRAMING_STARTTLS))
    f.flags &=
        ~(unsigned)(XCM_FEATURE_STARTTLS | XCM_FEATURE_STARTTLS_REQUIRED);
  /* Compression only inside TLS: compressing before encryption on a
   * clear stream gains little and leaks much. */
  f.flags &= ~(unsigned)XCM_FEATURE_COMPRESSION;
  if (c->cfg->compression && p->compression_zlib && (c->flags & F_SECURED) &&
      !(c->flags & F_COMPRESSED) && (framing(c)->caps & XCM_FRAMING_ZLIB))
    f.flags |= XCM_FEATURE_COMPRESSION;
  /* XEP-0198 section 2: offered once authenticated, enabled after bind. */
  if (c->cfg->sm && (c->flags & F_AUTHED))
    f.flags |= XCM_FEATURE_SM;
  if (c->cfg->csi.enable && (c->flags & F_AUTHED))
    f.flags |= XCM_FEATURE_CSI;
  return framing(c)->features(b, &f);
}

static int header_error(xcm_client *c, xcm_cond cond, const char *text) {
  xcm__client_fail(c, cond, text);
  return XCM_ECLOSED;
}

static int finish_header(xcm_client *c, const xcm_policy *p);
static int stream_opened(xcm_client *c, const char *to, const char *version);

#define NS_XML "http://www.w3.org/XML/1998/namespace"

/* A stream opens (or restarts): note what our answer must repeat. */
static void note_open(xcm_client *c, const char *version, const char *lang) {
  c->flags &= ~(unsigned)F_HEADER_SENT;
  if (version != NULL && version[0] >= '1' && version[0] <= '9')
    c->flags |= F_V1;
  else
    c->flags &= ~(unsigned)F_V1;
  if (lang != NULL && strlen(lang) < sizeof c->lang)
    memcpy(c->lang, lang, strlen(lang) + 1);
}

static int on_header(void *ud, const xcm_xml_header *h) {
  xcm_client *c = ud;
  const char *version, *ns;

  /* The header of a client moved here: read already on its old
   * instance, and answered there. */
  if (c->flags & F_MOVED_IN)
    return 0;
  version = xcm__xml_header_attr(h, "", "version");
  note_open(c, version, xcm__xml_header_attr(h, NS_XML, "lang"));
  if (strcmp(h->ns, XCM_NS_STREAMS) != 0 || strcmp(h->name, "stream") != 0)
    return header_error(c, XCM_COND_INVALID_NAMESPACE,
                        "the stream element is not in the streams namespace");
  ns = xcm__xml_header_default_ns(h);
  if (ns == NULL || strcmp(ns, XCM_NS_CLIENT) != 0)
    return header_error(c, XCM_COND_INVALID_NAMESPACE,
                        "the default namespace must be jabber:client");
  return stream_opened(c, xcm__xml_header_attr(h, "", "to"), version);
}

/* What every transport checks of a stream's opening, once its own
 * framing was found right. */
static int stream_opened(xcm_client *c, const char *to, const char *version) {
  const xcm_policy *p;

  if (to == NULL || strcasecmp(to, c->cfg->domain) != 0)
    return header_error(c, XCM_COND_HOST_UNKNOWN,
                        "this server does not serve that domain");
  if (version != NULL &&
      (version[0] < '0' || version[0] > '1' ||
       (version[0] == '1' && version[1] != '.' && version[1] != '\0')))
    return header_error(c, XCM_COND_UNSUPPORTED_VERSION,
                        "only XMPP 1.0 streams are supported");
  p = c->cfg->policy(c->cfg->policy_ud);
  if (p == NULL && c->cfg->upstream_wait_ms > 0 && !(c->flags & F_OPENED)) {
    /* The upstream may be back soon: answer the header then. */
    c->flags |= F_WAITING;
    return 0;
  }
  return finish_header(c, p);
}

static int finish_header(xcm_client *c, const xcm_policy *p) {
  xcm_buf *b = &c->ctx->scratch;
  units u = {{0}, 0};
  int err;

  if (p == NULL)
    return header_error(c, XCM_COND_REMOTE_CONNECTION_FAILED,
                        "no connection to the XMPP server; try again later");
  if (!(c->flags & F_OPENED)) {
    err = c->cb->open(c->ud, c->sid, xcm__client_peer(c));
    if (err == XCM_ENOMEM)
      return header_error(c, XCM_COND_RESOURCE_CONSTRAINT, NULL);
    if (err != 0)
      return header_error(c, XCM_COND_REMOTE_CONNECTION_FAILED,
                          "the XMPP server cannot take the session now");
    c->flags |= F_OPENED;
  }
  xcm__buf_reset(b);
  err = start_header(c, b);
  unit_end(&u, b);
  if (err == 0 && (c->flags & F_V1))
    err = features(c, p, b);
  unit_end(&u, b);
  if (err != 0) {
    /* Out of memory: none of it was sent. */
    xcm__buf_reset(b);
    c->flags &= ~(unsigned)F_HEADER_SENT;
    return header_error(c, XCM_COND_RESOURCE_CONSTRAINT, NULL);
  }
  err = send_units(c, b, &u, 0);
  xcm__buf_reset(b);
  return err;
}

/* ---- what a client may send --------------------------------------------- */

int xcm__cl_refuse(xcm_client *c, xcm_cond cond, const char *text) {
  xcm__client_fail(c, cond, text);
  return XCM_ECLOSED;
}

static int levels(void *ud, const char *ns, const char *name) {
  xcm_client *c = ud;

  /* Until the login is over, look one level into an iq: before
   * authentication it may only be legacy auth or registration, and a
   * legacy auth or bind set is a request whose answer we act on
   * (client/request.h). A bound session pays nothing. Only flags decide,
   * so the scanner and expat get the same answer for one element. */
  if (!(c->flags & F_BOUND) && strcmp(name, "iq") == 0 &&
      strcmp(ns, XCM_NS_CLIENT) == 0)
    return 2;
  if (strcmp(ns, NS_COMPRESS) == 0)
    return 2;
  /* <auth mechanism/> and its initial response: who it names
   * (client/authid.h). */
  if (strcmp(ns, NS_SASL) == 0 && strcmp(name, "auth") == 0 &&
      !(c->flags & F_AUTHED))
    return 1;
  /* <enable resume/>, <a h/>: their attributes. */
  if (strcmp(ns, XCM_NS_SM) == 0)
    return 1;
  return 0;
}

/* ---- shaping ------------------------------------------------------------ */

/* Two token buckets, stanzas and bytes, in thousandths so that a rate
 * of a few per second still refills a little every millisecond. A read
 * is taken whole even if it leaves a bucket in debt (a stanza is never
 * cut off half-way); then the client's reads pause until the debt is
 * repaid. So a flood costs the flooder its own time, and nobody is
 * disconnected for sending fast. */
static unsigned stanza_rate(const xcm_client *c) {
  return c->cfg->rate;
}

static unsigned byte_rate(const xcm_client *c) {
  return c->cfg->rate_bytes;
}

static int64_t refill(int64_t t, uint64_t ms, unsigned rate, unsigned burst) {
  int64_t cap = (int64_t)burst * 1000;

  /* A long quiet spell fills the bucket without overflowing the sum. */
  if (t >= cap || ms >= (uint64_t)(cap - t) / rate + 1)
    return cap;
  return t + (int64_t)(ms * rate);
}

static void refill_buckets(xcm_client *c) {
  uint64_t n = xcm__cl_now(c), ms = n - c->bucket_at;

  c->bucket_at = n;
  if (stanza_rate(c) != XCM__OFF)
    c->tokens = refill(c->tokens, ms, stanza_rate(c), c->cfg->burst);
  if (byte_rate(c) != XCM__OFF)
    c->byte_tokens =
        refill(c->byte_tokens, ms, byte_rate(c), c->cfg->burst_bytes);
}

static void take_stanza(xcm_client *c) {
  if (stanza_rate(c) != XCM__OFF)
    c->tokens -= 1000;
}

static void take_bytes(xcm_client *c, size_t len) {
  if (byte_rate(c) != XCM__OFF)
    c->byte_tokens -= (int64_t)len * 1000;
}

static uint64_t debt_ms(int64_t t, unsigned rate) {
  return t >= 0 ? 0 : ((uint64_t)-t + rate - 1) / rate;
}

/* Milliseconds until both buckets are out of debt (as of the last
 * refill), 0 if neither is in debt. */
static uint64_t shape_wait(const xcm_client *c) {
  uint64_t a = 0, b = 0;

  if (stanza_rate(c) != XCM__OFF)
    a = debt_ms(c->tokens, stanza_rate(c));
  if (byte_rate(c) != XCM__OFF)
    b = debt_ms(c->byte_tokens, byte_rate(c));
  return a > b ? a : b;
}

static void on_timer(uv_timer_t *t);

/* After a read: over the budget, stop reading until the timer finds the
 * debt repaid. The stream's pause is shared with the upstream's flow
 * control (F_PAUSED): each side resumes it only if the other does not
 * hold it. */
static void shape(xcm_client *c) {
  uint64_t wait = shape_wait(c), due;

  if (wait == 0 || !live(c) || (c->flags & F_CLOSING))
    return;
  if (!(c->flags & F_SHAPED) && c->cfg->counters != NULL)
    c->cfg->counters->reads_shaped++;
  c->flags |= F_SHAPED;
  in_pause(c);
  /* Sooner than a timeout the timer waits for already, or that one
   * would be late. */
  due = uv_timer_get_due_in(&c->timer);
  if (!uv_is_active((uv_handle_t *)&c->timer) || due > wait)
    uv_timer_start(&c->timer, on_timer, wait, 0);
}

static int relay(xcm_client *c, const xcm_xml_stanza *s) {
  const xcm_xml_nsdecl *decls;
  size_t n;
  int err;

  if (c->msg != NULL) {
    /* Each message stands alone: it declares what it uses, and a
     * stanza without its own xmlns was refused. */
    decls = NULL;
    n = 0;
  } else {
    decls = xcm__xml_reader_decls(c->reader, &n);
  }
  err = c->cb->stanza(c->ud, s, decls, n);
  if (err == XCM_ELIMIT)
    return xcm__cl_refuse(c, XCM_COND_POLICY_VIOLATION,
                          "too much sent before the server answered");
  if (err == XCM_ENOMEM)
    return xcm__cl_refuse(c, XCM_COND_RESOURCE_CONSTRAINT, NULL);
  if (err != 0)
    return xcm__cl_refuse(c, XCM_COND_INTERNAL_SERVER_ERROR,
                          "could not pass the stanza on");
  return 0;
}

/* Relay s, noting it first if it is a request whose answer we will act
 * on (client/request.h); only while logging in. */
static int relay_request(xcm_client *c, const xcm_xml_stanza *s) {
  unsigned state = (c->flags & F_AUTHED) ? XCM_REQ_AUTHED : 0;
  int err = xcm__req_note(&c->req, c->ctx->alloc, s, state);

  if (err == XCM_EBUSY)
    return xcm__cl_refuse(c, XCM_COND_POLICY_VIOLATION,
                          "an iq reuses the id of a request still pending");
  if (err == XCM_ELIMIT)
    return xcm__cl_refuse(c, XCM_COND_POLICY_VIOLATION,
                          "too many requests pending");
  if (err == XCM_EINVAL)
    return xcm__cl_refuse(c, XCM_COND_POLICY_VIOLATION,
                          "an authentication or bind request needs an id");
  if (err != 0)
    return xcm__cl_refuse(c, XCM_COND_RESOURCE_CONSTRAINT, NULL);
  return relay(c, s);
}

static int starttls(xcm_client *c) {
  static const char proceed[] = "<proceed xmlns=\"" NS_TLS "\"/>";
  static const char failure[] = "<failure xmlns=\"" NS_TLS "\"/>";

  if (c->cfg->tls == NULL || !(framing(c)->caps & XCM_FRAMING_STARTTLS) ||
      (c->flags & (F_SECURED | F_AUTHED))) {
    /* RFC 6120 5.4.2.2: failure, then the stream ends. */
    xcm__cl_write_out(c, failure, sizeof failure - 1);
    c->flags |= F_HEADER_SENT;
    return xcm__cl_refuse(c, XCM_COND_POLICY_VIOLATION,
                          "STARTTLS not possible now");
  }
  if (xcm__cl_write_out(c, proceed, sizeof proceed - 1) != 0)
    return XCM_ECLOSED;
  c->action = A_TLS;
  return XCM_XML_RESTART;
}

static int compress(xcm_client *c, const xcm_xml_stanza *s) {
  static const char done[] = "<compressed xmlns=\"" NS_COMPRESS "\"/>";
  static const char setup[] =
      "<failure xmlns=\"" NS_COMPRESS "\"><setup-failed/></failure>";
  static const char method[] =
      "<failure xmlns=\"" NS_COMPRESS "\"><unsupported-method/></failure>";
  const xcm_policy *p = c->cfg->policy(c->cfg->policy_ud);
  const xcm_xml_node *m =
      s->root ? xcm__xml_node_child(s->root, NS_COMPRESS, "method") : NULL;

  if (strcmp(s->name, "compress") != 0)
    return xcm__cl_refuse(c, XCM_COND_UNSUPPORTED_STANZA_TYPE, NULL);
  if (p == NULL || !p->compression_zlib || !c->cfg->compression ||
      !(c->flags & F_SECURED) || (c->flags & F_COMPRESSED) ||
      !(framing(c)->caps & XCM_FRAMING_ZLIB))
    return xcm__cl_write_out(c, setup, sizeof setup - 1);
  if (m == NULL || m->text_len != 4 || memcmp(m->text, "zlib", 4) != 0)
    return xcm__cl_write_out(c, method, sizeof method - 1);
  if (xcm__cl_write_out(c, done, sizeof done - 1) != 0)
    return XCM_ECLOSED;
  c->action = A_ZLIB;
  return XCM_XML_RESTART;
}

/* Legacy auth and registration are the only iqs before authentication. */
static int preauth_iq(xcm_client *c, const xcm_xml_stanza *s) {
  const xcm_policy *p = c->cfg->policy(c->cfg->policy_ud);
  const xcm_xml_node *q = s->root ? s->root->children : NULL;
  int reg;

  if (p == NULL || q == NULL || q->next != NULL)
    return xcm__cl_refuse(c, XCM_COND_NOT_AUTHORIZED, "authenticate first");
  reg = strcmp(q->ns, NS_IQ_REGISTER) == 0 && p->registration;
  if (!reg && (strcmp(q->ns, NS_IQ_AUTH) != 0 || !p->legacy_auth))
    return xcm__cl_refuse(c, XCM_COND_NOT_AUTHORIZED, "authenticate first");
  /* A registration carries a password as much as legacy auth does. */
  if (p->tls == XCM_TLS_REQUIRED && !(c->flags & F_SECURED))
    return xcm__cl_refuse(c, XCM_COND_POLICY_VIOLATION,
                          reg ? "TLS is required before registration"
                              : "TLS is required before authentication");
  return relay_request(c, s);
}

/* ---- moving to another instance (session/group.h) --------------------- */

/* ---- stream management: what the client sends (XEP-0198) ------------- */

/* ---- client state indication (XEP-0352, session/csi.h) ---------------- */

/* A held stanza goes out through the usual path (the CSI layer is
 * flushing, so the path passes it by): XEP-0198 counts it now, and a
 * message the client cannot take goes back as any would. */
static int csi_write(void *ud, const char *bytes, size_t len) {
  xcm_client *c = ud;
  xcm_route r;

  memset(&r, 0, sizeof r);
  r.inner = bytes;
  r.inner_len = len;
  xcm__client_deliver(c, &r);
  return (c->flags & F_CLOSING) ? XCM_ECLOSED : 0;
}

static void csi_give_back(void *ud, const char *bytes, size_t len) {
  xcm_client *c = ud;

  if (c->cb->undelivered != NULL)
    c->cb->undelivered(c->ud, bytes, len);
}

static xcm_csi_out csi_out(xcm_client *c) {
  xcm_csi_out o = {csi_write, csi_give_back, c};

  return o;
}

/* <inactive/> and <active/>: nonzas, never counted in XEP-0198's h, and
 * only once a resource is bound (before, nothing is routed to hold). A
 * client that cannot get the state (no memory) stays active. */
static int csi_element(xcm_client *c, const xcm_xml_stanza *s) {
  xcm_csi_out o = csi_out(c);

  if (!c->cfg->csi.enable)
    return xcm__cl_refuse(c, XCM_COND_UNSUPPORTED_STANZA_TYPE, NULL);
  if (!(c->flags & F_BOUND))
    return xcm__cl_refuse(
        c, XCM_COND_UNSUPPORTED_STANZA_TYPE,
        "client state indication only after resource binding");
  if (strcmp(s->name, "inactive") == 0) {
    xcm__csi_inactive(&c->csi, c->ctx->alloc, c->cfg->counters);
    return 0;
  }
  if (strcmp(s->name, "active") == 0)
    return xcm__csi_active(&c->csi, c->ctx->alloc, c->cfg->counters, &o) != 0
               ? XCM_ECLOSED
               : 0;
  return xcm__cl_refuse(c, XCM_COND_UNSUPPORTED_STANZA_TYPE, NULL);
}

static void held_to_sm(void *ud, const char *bytes, size_t len, int message) {
  xcm_client *c = ud;

  /* Unbounded here: the CSI queue's own bound held it. */
  if (xcm__sm_push(c->ctx->alloc, c->sm, bytes, len, XCM__OFF, XCM__OFF) != 0 &&
      message && c->cb->undelivered != NULL)
    c->cb->undelivered(c->ud, bytes, len);
}

/* The connection dropped with acknowledgements on: what waited for an
 * inactive client joins the unacked queue as if sent, after what was, so
 * that a resumed session sends it too, in order (and an end that does
 * not resume returns it with the rest). */
static void csi_to_sm(xcm_client *c) {
  size_t n;

  if (c->sm == NULL || c->csi == NULL || xcm__csi_flushing(c->csi))
    return;
  n = xcm__csi_drain(c->ctx->alloc, c->csi, held_to_sm, c);
  if (c->cfg->counters != NULL)
    c->cfg->counters->csi_flushed += n;
}

static void csi_end(xcm_client *c) {
  xcm_csi_out o = csi_out(c);

  xcm__csi_end(&c->csi, c->ctx->alloc, c->cfg->counters, &o);
}

static int on_stanza(void *ud, const xcm_xml_stanza *s) {
  xcm_client *c = ud;
  const xcm_policy *p;
  int err;

  if (c->flags & F_CLOSING)
    return XCM_ECLOSED;
  if (c->flags & F_WAITING)
    return xcm__cl_refuse(c, XCM_COND_NOT_AUTHORIZED,
                          "wait for the stream features");
  take_stanza(c);
  if (strcmp(s->ns, XCM_NS_CLIENT) == 0 &&
      (strcmp(s->name, "message") == 0 || strcmp(s->name, "presence") == 0 ||
       strcmp(s->name, "iq") == 0)) {
    if (c->flags & F_AUTHED) {
      err = (c->flags & F_BOUND) ? relay(c, s) : relay_request(c, s);
      /* Handled: passed on to the server (XEP-0198's h). */
      if (err == 0 && c->sm != NULL)
        c->sm->h_in++;
      return err;
    }
    if (strcmp(s->name, "iq") == 0)
      return preauth_iq(c, s);
    return xcm__cl_refuse(c, XCM_COND_NOT_AUTHORIZED, "authenticate first");
  }
  if (strcmp(s->ns, NS_TLS) == 0 && strcmp(s->name, "starttls") == 0)
    return starttls(c);
  if (strcmp(s->ns, NS_COMPRESS) == 0)
    return compress(c, s);
  if (strcmp(s->ns, XCM_NS_SM) == 0)
    return xcm__cl_sm_element(c, s);
  if (strcmp(s->ns, XCM_NS_CSI) == 0)
    return csi_element(c, s);
  if (strcmp(s->ns, NS_SASL) == 0 && !(c->flags & F_AUTHED) &&
      (c->flags & F_V1) &&
      (strcmp(s->name, "auth") == 0 || strcmp(s->name, "response") == 0 ||
       strcmp(s->name, "abort") == 0)) {
    p = c->cfg->policy(c->cfg->policy_ud);
    if (p != NULL && p->tls == XCM_TLS_REQUIRED && !(c->flags & F_SECURED))
      return xcm__cl_refuse(c, XCM_COND_POLICY_VIOLATION,
                            "TLS is required before authentication");
    if (strcmp(s->name, "auth") == 0)
      xcm__cl_note_authid(c, s);
    return relay_request(c, s);
  }
  return xcm__cl_refuse(c, XCM_COND_UNSUPPORTED_STANZA_TYPE, NULL);
}

static void on_end(void *ud) {
  xcm_client *c = ud;
  xcm_buf *b = &c->ctx->scratch;
  units u = {{0}, 0};

  if (c->flags & F_CLOSING)
    return;
  c->flags |= F_CLOSING;
  xcm__buf_reset(b);
  start_header(c, b);
  unit_end(&u, b);
  framing(c)->close(b);
  unit_end(&u, b);
  send_units(c, b, &u, 0);
  xcm__buf_reset(b);
  close_stream(c, 1);
  notify(c, XCM_COND_NONE, 0, NULL);
}

static const xcm_xml_callbacks reader_cb = {on_header, levels, on_stanza,
                                            on_end};

/* ---- input from a message transport (RFC 7395) ------------------------- */

/* The message being read: its length without the white space around. */
typedef struct msg_read {
  xcm_client *c;
  size_t len;
} msg_read;

static int msg_levels(void *ud, const char *ns, const char *name) {
  msg_read *m = ud;

  /* The <open/>'s attributes are read from its tree. */
  if (xcm__framing_kind(ns, name) == XCM_FRAME_OPEN)
    return 1;
  return levels(m->c, ns, name);
}

static const char *node_attr_ns(const xcm_xml_node *n, const char *ns,
                                const char *name) {
  size_t i;

  for (i = 0; i < n->nattrs; i++)
    if (strcmp(n->attrs[i].ns, ns) == 0 && strcmp(n->attrs[i].name, name) == 0)
      return n->attrs[i].value;
  return NULL;
}

static int msg_open_stream(xcm_client *c, const xcm_xml_node *open) {
  const char *version = xcm__xml_node_attr(open, "version");

  if (c->flags & F_MSG_OPEN)
    return xcm__cl_refuse(c, XCM_COND_BAD_FORMAT,
                          "the stream is open already: <open/> comes once, and "
                          "again only after authentication");
  note_open(c, version, node_attr_ns(open, NS_XML, "lang"));
  c->flags |= F_MSG_OPEN;
  /* RFC 7395 3.3.2: version 1.0, always. */
  if (version == NULL)
    return xcm__cl_refuse(c, XCM_COND_UNSUPPORTED_VERSION,
                          "<open/> must say version='1.0'");
  return stream_opened(c, xcm__xml_node_attr(open, "to"), version);
}

static int msg_element(void *ud, const xcm_xml_stanza *s) {
  msg_read *m = ud;
  xcm_client *c = m->c;

  /* Exactly one element, or nothing of it counts: the element's bytes
   * are all of the message (white space aside) only if it is alone. */
  if (s->len != m->len)
    return XCM_EXML;
  switch (xcm__framing_kind(s->ns, s->name)) {
  case XCM_FRAME_OPEN:
    return msg_open_stream(c, s->root);
  case XCM_FRAME_CLOSE:
    on_end(c);
    return 0;
  default:
    if (!(c->flags & F_MSG_OPEN))
      return xcm__cl_refuse(c, XCM_COND_BAD_FORMAT,
                            "open the stream with <open/> first");
    return on_stanza(c, s);
  }
}

static int is_space(char ch) {
  return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

void xcm__client_msg_input(xcm_client *c, const char *data, size_t len) {
  msg_read m;
  size_t a = 0, z = len;
  int err;

  if (c->msg == NULL || (c->flags & F_CLOSING))
    return;
  c->last_active = xcm__cl_now(c);
  refill_buckets(c);
  take_bytes(c, len);
  while (a < z && is_space(data[a]))
    a++;
  while (z > a && is_space(data[z - 1]))
    z--;
  /* Only white space: a keepalive, as between stanzas on a stream. */
  if (a == z)
    return;
  if (z - a > xcm__cl_max_stanza(c)) {
    xcm__client_fail(c, XCM_COND_POLICY_VIOLATION,
                     "message larger than the stanza size limit");
    return;
  }
  m.c = c;
  m.len = z - a;
  c->flags |= F_FEEDING;
  err =
      xcm__xml_read_element(c->ctx->xml, data + a, z - a, NULL, 0,
                            c->cfg->max_depth, 1, msg_levels, msg_element, &m);
  c->flags &= ~(unsigned)F_FEEDING;
  if (err != 0 && !(c->flags & F_CLOSING)) {
    /* RFC 7395 3.3.3: each message is one complete, well-formed
     * element. */
    if (err == XCM_ENOMEM)
      xcm__client_fail(c, XCM_COND_RESOURCE_CONSTRAINT, NULL);
    else if (err == XCM_ELIMIT)
      xcm__client_fail(c, XCM_COND_POLICY_VIOLATION, "element nested too deep");
    else
      xcm__client_fail(c, XCM_COND_NOT_WELL_FORMED,
                       "a message must hold exactly one complete element");
    return;
  }
  shape(c);
}

void xcm__client_msg_unsent(xcm_client *c, const char *data, size_t len) {
  /* Units are whole elements as the framing wrote them: a routed
   * <message> starts with its own name, as on delivery. */
  if (c->msg == NULL || c->msg->closed || c->cb->undelivered == NULL ||
      (c->flags & F_NOTIFIED) || !is_message(data, len))
    return;
  /* With acknowledgements on, the unacked queue holds it already. */
  if (c->sm != NULL)
    return;
  c->cb->undelivered(c->ud, data, len);
}

void xcm__client_msg_end(xcm_client *c, int err) {
  if (c->msg == NULL || c->msg->closed)
    return;
  c->flags |= F_ENDED | F_CLOSING | F_DROPPED;
  /* What was kept for it goes back to the server. */
  if (c->cb->undelivered != NULL && !(c->flags & F_NOTIFIED))
    msg_return_kept(c);
  close_stream(c, 0);
  notify(c, XCM_COND_NONE, err, NULL);
}

/* ---- the PROXY header ---------------------------------------------------- */

/* Closed before a word of XMPP: a balancer (or a stranger) that cannot
 * say who the client is gets no stream error, only a reset. */
static void refuse_proxied(xcm_client *c, const char *why) {
  c->flags |= F_CLOSING | F_ENDED;
  close_stream(c, 0);
  notify(c, XCM_COND_NONE, XCM_EPROTO, why);
}

/* Read the PROXY header from the front of what arrived (transport/
 * proxy.h). Returns 1 with *data and *len moved past it once it is
 * complete and the client may go on in clear, 0 when it is not complete
 * yet or the client went on into TLS or was refused. */
static int read_proxy(xcm_client *c, const char **data, size_t *len) {
  xcm_proxy_header h;
  size_t used;
  int r = xcm__proxy_feed(c->proxy, *data, *len, &used, &h);
  int err;

  if (r == 0)
    return 0;
  xcm__free(c->ctx->alloc, c->proxy);
  c->proxy = NULL;
  if (r < 0) {
    if (c->cfg->counters != NULL)
      c->cfg->counters->proxy_headers_refused++;
    xcm__log(c->ctx, XCM_LOG_DEBUG, "%s: no valid PROXY header: closed",
             xcm__client_peer(c));
    refuse_proxied(c, "no valid PROXY header");
    return 0;
  }
  *data += used;
  *len -= used;
  if (!h.local) {
    xcm__log(c->ctx, XCM_LOG_DEBUG,
             "PROXY v%d: client %s port %u (through %s), to %s port %u",
             h.version, h.src, h.src_port, xcm__client_peer(c), h.dst,
             h.dst_port);
    c->peer = xcm__strndup(c->ctx->alloc, h.src, strlen(h.src));
    if (c->peer == NULL) {
      refuse_proxied(c, "out of memory");
      return 0;
    }
    /* The stream's own logs (a TLS handshake that fails) name it too. */
    xcm__stream_set_peer(c->stream, c->peer);
  }
  if (c->cb->proxied != NULL && c->cb->proxied(c->ud, c->peer) != 0) {
    refuse_proxied(c, "over the limit of connections from its address");
    return 0;
  }
  if (c->cfg->direct_tls && c->cfg->tls != NULL) {
    /* The rest is the client's TLS handshake: it comes back as
     * plaintext through on_read. */
    err = xcm__stream_start_tls(c->stream, c->cfg->tls, 1, NULL, *data, *len);
    if (err != 0)
      refuse_proxied(c, "could not start TLS");
    return 0;
  }
  return 1;
}

/* ---- the transport ------------------------------------------------------ */

static void on_read(void *ud, const char *data, size_t len) {
  xcm_client *c = ud;
  size_t consumed;
  int err;

  c->last_active = xcm__cl_now(c);
  if (c->reads < LOGIN_READS)
    c->reads++;
  refill_buckets(c);
  take_bytes(c, len);
  if (c->proxy != NULL && !read_proxy(c, &data, &len))
    return;
  while (len > 0 && !(c->flags & F_CLOSING)) {
    c->flags |= F_FEEDING;
    err = xcm__xml_reader_feed(c->reader, data, len, &consumed);
    c->flags &= ~(unsigned)F_FEEDING;
    data += consumed;
    len -= consumed;
    if (err != 0) {
      if (!(c->flags & F_CLOSING))
        xcm__client_fail(c, xcm__xml_reader_condition(c->reader),
                         xcm__xml_reader_error_text(c->reader));
      return;
    }
    if (c->action == A_TLS) {
      c->action = A_NONE;
      c->flags &= ~(unsigned)F_HEADER_SENT;
      err = xcm__stream_start_tls(c->stream, c->cfg->tls, 1, NULL, data, len);
      if (err != 0)
        xcm__client_fail(c,
                         err == XCM_ENOMEM ? XCM_COND_RESOURCE_CONSTRAINT
                                           : XCM_COND_INTERNAL_SERVER_ERROR,
                         "could not start TLS");
      return;
    }
    if (c->action == A_MOVE) {
      c->action = A_NONE;
      xcm__cl_move_out(c, data, len);
      return;
    }
    if (c->action == A_ZLIB) {
      c->action = A_NONE;
      c->flags |= F_COMPRESSED;
      c->flags &= ~(unsigned)F_HEADER_SENT;
      err = xcm__stream_start_zlib(c->stream, data, len);
      if (err != 0)
        xcm__client_fail(c,
                         err == XCM_ENOMEM ? XCM_COND_RESOURCE_CONSTRAINT
                                           : XCM_COND_INTERNAL_SERVER_ERROR,
                         "could not start compression");
      return;
    }
  }
  /* Between stanzas the parser goes back to the context's pool: an idle
   * client keeps only its stream's namespace context. A client still
   * logging in will be back within a round trip, and giving the parser
   * back means resetting and re-priming one at each of its reads (about
   * a third of a login's instructions); it keeps it while few do. */
  if (!(c->flags & F_CLOSING) &&
      ((c->flags & F_BOUND) || c->reads == LOGIN_READS ||
       xcm__xml_pool_busy(c->ctx->xml) > WARM_MAX))
    xcm__xml_reader_shrink(c->reader);
  shape(c);
}

static void on_stream_end(void *ud, int err) {
  xcm_client *c = ud;

  c->flags |= F_ENDED | F_CLOSING | F_DROPPED;
  /* What was queued for it and never written goes back to the server. */
  if (c->cb->undelivered != NULL)
    return_unsent(c);
  /* A client that only half-closed may still read what the kernel holds
   * for it: no reset. */
  if (err == UV_EOF && c->stream != NULL) {
    xcm__stream_drop(c->stream);
    c->stream = NULL;
  }
  close_stream(c, 0);
  notify(c, XCM_COND_NONE, err, NULL);
}

static void on_tls_done(void *ud, int err) {
  xcm_client *c = ud;

  if (err != 0) {
    c->flags |= F_ENDED;
    xcm__client_fail(c, XCM_COND_NONE, "TLS handshake failed");
    return;
  }
  c->flags |= F_SECURED;
  if (c->cb->secured != NULL)
    c->cb->secured(c->ud);
}

static void on_stream_closed(void *ud) {
  xcm_client *c = ud;

  c->handles--;
  maybe_free(c);
}

const xcm_stream_cb xcm__cl_stream_cb = {on_read, on_stream_end, on_tls_done,
                                         NULL, on_stream_closed};

/* ---- timers ------------------------------------------------------------- */

/* When a timeout of ms (0: dflt) from `from` runs out; never for
 * XCM__OFF. */
static uint64_t deadline(uint64_t from, unsigned ms) {
  return ms == XCM__OFF ? UINT64_MAX : from + ms;
}

static void on_timer(uv_timer_t *t) {
  xcm_client *c = t->data;
  xcm_counters *st = c->cfg->counters;
  uint64_t n = xcm__cl_now(c), next, wait;
  /* A header that was read either opened the session or waits for an
   * upstream link; a refused one ended the client. */
  uint64_t header_at = (c->flags & (F_OPENED | F_WAITING))
                           ? UINT64_MAX
                           : deadline(c->created, c->cfg->header_timeout_ms);
  uint64_t auth_at = (c->flags & F_AUTHED)
                         ? UINT64_MAX
                         : deadline(c->created, c->cfg->auth_timeout_ms);
  uint64_t idle_at = deadline(c->last_active, c->cfg->idle_timeout_ms);
  uint64_t wait_at = (c->flags & F_WAITING)
                         ? c->created + c->cfg->upstream_wait_ms
                         : UINT64_MAX;
  /* Stanzas sent since our last <r/>, and then quiet: ask for an ack. */
  uint64_t ack_at = (c->sm != NULL && c->sm->h_out != c->sm->asked &&
                     c->cfg->sm_ack_quiet_ms != XCM__OFF)
                        ? c->sm->last_out + c->cfg->sm_ack_quiet_ms
                        : UINT64_MAX;
  /* An <r/> unanswered this long: the client is gone. */
  uint64_t r_due = (c->sm != NULL && c->sm->r_at != 0)
                       ? deadline(c->sm->r_at, c->cfg->sm_ack_timeout_ms)
                       : UINT64_MAX;

  if (n >= wait_at) {
    xcm__client_fail(c, XCM_COND_REMOTE_CONNECTION_FAILED,
                     "no connection to the XMPP server; try again later");
    return;
  }
  if (n >= header_at) {
    if (st != NULL)
      st->header_timeouts++;
    if (c->proxy != NULL) {
      refuse_proxied(c, "no PROXY header in time");
      return;
    }
    xcm__client_fail(c, XCM_COND_CONNECTION_TIMEOUT,
                     "no stream header in time");
    return;
  }
  if (n >= auth_at) {
    if (st != NULL)
      st->auth_timeouts++;
    xcm__client_fail(c, XCM_COND_CONNECTION_TIMEOUT,
                     "authentication took too long");
    return;
  }
  if (n >= r_due) {
    if (st != NULL)
      st->sm_ack_timeouts++;
    c->flags |= F_DROPPED;
    xcm__client_fail(c, XCM_COND_CONNECTION_TIMEOUT,
                     "no answer to a request for an acknowledgement");
    return;
  }
  if (n >= idle_at) {
    c->flags |= F_DROPPED;
    xcm__client_fail(c, XCM_COND_CONNECTION_TIMEOUT, "idle for too long");
    return;
  }
  /* A shaped client reads again once its debt is repaid. */
  if (c->flags & F_SHAPED) {
    refill_buckets(c);
    if (shape_wait(c) == 0) {
      c->flags &= ~(unsigned)F_SHAPED;
      if (!(c->flags & F_PAUSED) && live(c))
        in_resume(c);
    }
  }
  if (n >= ack_at) {
    xcm__cl_sm_request(c);
    if (c->flags & F_CLOSING)
      return;
    ack_at = UINT64_MAX;
  }
  /* Reads only note the time; the timer re-arms itself lazily, so an
   * active client costs no timer operations. */
  next = idle_at;
  if (ack_at < next)
    next = ack_at;
  if (r_due < next)
    next = r_due;
  if (header_at < next)
    next = header_at;
  if (auth_at < next)
    next = auth_at;
  if (wait_at < next)
    next = wait_at;
  wait = (c->flags & F_SHAPED) ? shape_wait(c) : 0;
  if (wait != 0 && n + wait < next)
    next = n + wait;
  /* With every timeout switched off there is nothing to wait for. */
  if (next != UINT64_MAX)
    uv_timer_start(&c->timer, on_timer, next - n, 0);
}

static void on_timer_closed(uv_handle_t *h) {
  xcm_client *c = h->data;

  c->handles--;
  maybe_free(c);
}

void xcm__cl_start_timer(xcm_client *c) {
  uv_timer_init(c->ctx->loop, &c->timer);
  c->timer.data = c;
  on_timer(&c->timer);
}

/* The timer re-arms itself lazily (on_timer works out what is due): a
 * deadline sooner than the one it waits for moves it. */
void xcm__cl_due(xcm_client *c, unsigned ms) {
  if (ms == XCM__OFF)
    return;
  if (!uv_is_active((uv_handle_t *)&c->timer) ||
      uv_timer_get_due_in(&c->timer) > ms)
    uv_timer_start(&c->timer, on_timer, ms, 0);
}

void xcm__cl_end_quietly(xcm_client *c) {
  /* The stream closes by itself (on_stream_closed counts it out). */
  c->stream = NULL;
  c->flags |= F_CLOSING | F_ENDED | F_NOTIFIED;
  uv_close((uv_handle_t *)&c->timer, on_timer_closed);
}

/* ---- public face -------------------------------------------------------- */

static void free_tcp(uv_handle_t *h) {
  xcm_ctx *ctx = h->data;

  xcm__free(ctx->alloc, h);
}

/* A connection we could not take on is closed here, so the caller's
 * handle never leaks whatever failed. */
static void close_tcp(xcm_ctx *ctx, uv_tcp_t *tcp) {
  tcp->data = ctx;
  uv_close((uv_handle_t *)tcp, free_tcp);
}

/* A message client's side, with the transport's table and the peer's
 * name. */
static int msg_side_new(xcm_client *c, const xcm_msg_transport *mt,
                        const char *peer) {
  size_t plen = peer != NULL ? strlen(peer) : 0;
  msg_side *m = xcm__calloc(c->ctx->alloc, sizeof(*m) + plen + 1);

  if (m == NULL)
    return XCM_ENOMEM;
  m->t = *mt;
  xcm__buf_init(&m->q, c->ctx->alloc);
  memcpy(m->peer, plen ? peer : "", plen + 1);
  c->msg = m;
  return 0;
}

/* A client's struct and reader, before any connection. */
int xcm__cl_make(xcm_client **out, xcm_ctx *ctx, const xcm_client_cfg *cfg,
                 const xcm_client_cb *cb, void *ud) {
  xcm_client *c = xcm__calloc(ctx->alloc, sizeof(*c));
  int err;

  *out = NULL;
  if (c == NULL)
    return XCM_ENOMEM;
  c->ctx = ctx;
  c->cfg = cfg;
  c->cb = cb;
  c->ud = ud;
  c->created = c->last_active = c->bucket_at = uv_now(ctx->loop);
  c->tokens = (int64_t)cfg->burst * 1000;
  c->byte_tokens = (int64_t)cfg->burst_bytes * 1000;
  err = xcm__random_token(c->sid);
  if (err == 0)
    err = xcm__xml_reader_new(&c->reader, ctx->xml, &reader_cb, c, NULL);
  /* Clients' headers mostly bind the same two namespaces: an idle client
   * then holds no copy of them. */
  if (err == 0)
    xcm__xml_reader_set_usual(c->reader, &xcm__stream_client);
  /* The scanner takes what it can prove well-formed and leaves the rest,
   * hostile input included, to expat (xml/scan.h). */
  if (err == 0)
    err = xcm__xml_reader_set_scan(c->reader, 1);
  if (err != 0) {
    xcm__xml_reader_free(c->reader);
    xcm__free(ctx->alloc, c);
    return err;
  }
  *out = c;
  return 0;
}

/* One constructor for every kind of connection: over tcp, or (tcp NULL)
 * over the caller's byte transport t, or (both NULL) over a message
 * transport mt. */
static int client_new(xcm_client **out, xcm_ctx *ctx, const xcm_client_cfg *cfg,
                      uv_tcp_t *tcp, const xcm_transport *t,
                      const xcm_msg_transport *mt, const char *peer,
                      const xcm_client_cb *cb, void *ud) {
  xcm_client *c;
  xcm_stream_limits lim;
  int err;

  *out = NULL;
  err = xcm__cl_make(&c, ctx, cfg, cb, ud);
  if (err != 0) {
    if (tcp != NULL)
      close_tcp(ctx, tcp);
    return err;
  }
  xcm__cl_apply_limits(c);
  memset(&lim, 0, sizeof lim);
  lim.max_out = cfg->max_out;
  lim.max_inflate =
      xcm__cl_max_stanza(c) > 262144 ? xcm__cl_max_stanza(c) : 262144;
  if (mt != NULL)
    err = msg_side_new(c, mt, peer);
  else if (tcp != NULL)
    err =
        xcm__stream_from_tcp(&c->stream, ctx, tcp, &xcm__cl_stream_cb, c, &lim);
  else
    err = xcm__stream_custom(&c->stream, ctx, t, peer, &xcm__cl_stream_cb, c,
                             &lim);
  if (err != 0) {
    xcm__xml_reader_free(c->reader);
    xcm__free(ctx->alloc, c);
    if (tcp != NULL)
      close_tcp(ctx, tcp);
    return err;
  }
  /* A transport encrypted below us counts as TLS (client/framing.h). */
  if ((mt != NULL && mt->secure) || (t != NULL && t->secure))
    c->flags |= F_SECURED;
  if (tcp != NULL)
    c->flags |= F_TCP;
  c->handles = mt != NULL ? 1 : 2;
  xcm__cl_start_timer(c);
  /* The PROXY header comes before anything else, TLS included; a
   * message transport has neither. */
  if (mt != NULL) {
    /* nothing more */
  } else if (cfg->proxy_protocol) {
    c->proxy = xcm__alloc(ctx->alloc, sizeof(*c->proxy));
    if (c->proxy == NULL) {
      c->flags |= F_NOTIFIED | F_CLOSING | F_ENDED;
      close_stream(c, 0);
      uv_close((uv_handle_t *)&c->timer, on_timer_closed);
      return XCM_ENOMEM;
    }
    xcm__proxy_init(c->proxy);
  } else if (cfg->direct_tls && cfg->tls != NULL) {
    err = xcm__stream_start_tls(c->stream, cfg->tls, 1, NULL, NULL, 0);
    if (err != 0) {
      /* The owner never hears of this client: it frees itself once its
       * handles are closed. */
      c->flags |= F_NOTIFIED | F_CLOSING | F_ENDED;
      close_stream(c, 0);
      uv_close((uv_handle_t *)&c->timer, on_timer_closed);
      return err;
    }
  }
  *out = c;
  return 0;
}

/* The login is over: the table goes, and so does the parser kept for
 * the login. */
void xcm__cl_logged_in(xcm_client *c) {
  c->flags |= F_BOUND;
  xcm__req_clear(&c->req, c->ctx->alloc);
  xcm__free(c->ctx->alloc, c->authid);
  c->authid = NULL;
  if (!(c->flags & (F_FEEDING | F_CLOSING)))
    xcm__xml_reader_shrink(c->reader);
}

/* The server accepted a SASL exchange (a new stream follows) or a legacy
 * auth, which binds the resource in the same step (XEP-0078). */
static void authenticated(xcm_client *c, int sasl) {
  c->flags |= F_AUTHED;
  if (sasl) {
    /* RFC 6120 6.4.6: after success the client opens a new stream. What
     * was pending before it (another <auth/>, a legacy auth) is moot. */
    xcm__xml_reader_restart(c->reader);
    c->flags &= ~(unsigned)(F_HEADER_SENT | F_MSG_OPEN);
    xcm__req_clear(&c->req, c->ctx->alloc);
  } else {
    xcm__cl_logged_in(c);
  }
  xcm__cl_apply_limits(c);
  if (c->cb->authenticated != NULL)
    c->cb->authenticated(c->ud);
}

/* While the client has requests pending, read what the server sends it
 * as elements and act only on the answers to those requests
 * (client/request.h); a bound session never gets here. */
static void watch_answers(xcm_client *c, const char *bytes, size_t len) {
  xcm_answer a;

  if (xcm__req_answer(&c->req, c->ctx->alloc, c->ctx->xml, bytes, len, &a) !=
      0) {
    /* Whether it answered a request is unknown: we cannot go on. */
    xcm__client_fail(c, XCM_COND_RESOURCE_CONSTRAINT, NULL);
    return;
  }
  if (a.kind == XCM_ANSWER_SASL_OK && !(c->flags & F_AUTHED))
    authenticated(c, 1);
  else if (a.kind == XCM_ANSWER_LEGACY_OK && !(c->flags & F_AUTHED))
    authenticated(c, 0);
  else if (a.kind == XCM_ANSWER_BOUND && !(c->flags & F_BOUND)) {
    xcm__cl_logged_in(c);
    if (c->cb->bound != NULL)
      c->cb->bound(c->ud, a.jid, a.jid_len);
  }
  xcm__free(c->ctx->alloc, a.jid);
}

/* An element that must be rewritten for its framing (a namespace it
 * inherited on a stream declared on it). Its own buffer: the owner's
 * undelivered() may use the context's scratch. */
static int deliver_element(xcm_client *c, const char *bytes, size_t len,
                           int message) {
  xcm_buf b;
  int err;

  xcm__buf_init(&b, c->ctx->alloc);
  err = framing(c)->element(&b, bytes, len);
  if (err != 0) {
    out_of_memory(c, bytes, len, message);
    return err;
  }
  err = write_as(c, b.data, b.len, message);
  xcm__buf_free(&b);
  return err;
}

/* ---- stream management: acknowledgements (XEP-0198) ----------------- */

/* A quiet spell after the last stanza sent asks for an ack: the timer
 * fires by then at the latest (on_timer works out what is due). */
static void on_timer(uv_timer_t *t);

/* Write one element the server routed, as its framing needs it; record:
 * a message the transport may give back. 0, or an error when the client
 * ended. */
int xcm__cl_write_element(xcm_client *c, const char *bytes, size_t len,
                          int record) {
  if (c->msg != NULL && framing(c)->element != NULL &&
      !xcm__xml_declares_default(bytes, len))
    return deliver_element(c, bytes, len, record);
  return write_as(c, bytes, len, record);
}

void xcm__client_deliver(xcm_client *c, const xcm_route *r) {
  int message = r->inner != NULL && is_message(r->inner, r->inner_len);
  int counted;

  if (c->flags & F_CLOSING) {
    if (message && c->cb->undelivered != NULL && !(c->flags & F_NOTIFIED))
      c->cb->undelivered(c->ud, r->inner, r->inner_len);
    return;
  }
  /* XEP-0352: an inactive client's stanza may wait (session/csi.h). */
  if (c->csi != NULL && !xcm__csi_flushing(c->csi)) {
    xcm_csi_out o = csi_out(c);
    int element = r->inner != NULL;

    if (xcm__csi_route(&c->csi, c->ctx->alloc, &c->cfg->csi, c->cfg->counters,
                       c->ctx->xml, element ? r->inner : r->text,
                       element ? r->inner_len : r->text_len, element, &o))
      return;
  }
  if (r->inner == NULL) {
    /* Text between elements: a message holds one element or nothing. */
    if (c->msg == NULL)
      xcm__cl_write_out(c, r->text, r->text_len);
    return;
  }
  /* With acknowledgements on, a stanza is held in the unacked queue (as
   * routed: what goes back upstream) and written as plain bytes, never
   * as a record the transport would give back too. */
  counted = c->sm != NULL && xcm__xml_is_stanza(r->inner, r->inner_len);
  if (counted && xcm__cl_sm_hold(c, r->inner, r->inner_len) != 0)
    return;
  if (xcm__cl_write_element(c, r->inner, r->inner_len, message && !counted) !=
      0)
    return;
  if (counted)
    xcm__cl_sm_sent(c);
  if (c->req != NULL)
    watch_answers(c, r->inner, r->inner_len);
}

/* ---- stream management: resumption (XEP-0198 section 5) -------------- */

void xcm__client_set_owner(xcm_client *c, const xcm_client_cb *cb, void *ud) {
  c->cb = cb;
  c->ud = ud;
}

void xcm__client_server_closed(xcm_client *c, const char *error, size_t len) {
  xcm_buf *b = &c->ctx->scratch;
  const xcm_framing *fr = framing(c);
  units u = {{0}, 0};

  if (c->flags & F_CLOSING)
    return;
  c->flags |= F_CLOSING;
  if (error != NULL)
    c->flags |= F_ERROR;
  xcm__buf_reset(b);
  start_header(c, b);
  unit_end(&u, b);
  if (error != NULL)
    fr->server_error(b, error, len);
  unit_end(&u, b);
  fr->close(b);
  unit_end(&u, b);
  if (live(c))
    send_units(c, b, &u, 1);
  xcm__buf_reset(b);
  close_stream(c, 1);
  notify(c, XCM_COND_NONE, 0, "closed by the server");
}

void xcm__client_pause(xcm_client *c) {
  c->flags |= F_PAUSED;
  if (live(c))
    in_pause(c);
}

void xcm__client_resume(xcm_client *c) {
  c->flags &= ~(unsigned)F_PAUSED;
  /* Shaping holds the pause too, until its timer. */
  if (live(c) && !(c->flags & F_SHAPED))
    in_resume(c);
}

void xcm__client_retry(xcm_client *c) {
  const xcm_policy *p;

  if (!(c->flags & F_WAITING) || (c->flags & F_CLOSING))
    return;
  p = c->cfg->policy(c->cfg->policy_ud);
  if (p == NULL)
    return;
  c->flags &= ~(unsigned)F_WAITING;
  finish_header(c, p);
}

int xcm__client_new(xcm_client **out, xcm_ctx *ctx, const xcm_client_cfg *cfg,
                    uv_tcp_t *tcp, const xcm_client_cb *cb, void *ud) {
  return client_new(out, ctx, cfg, tcp, NULL, NULL, NULL, cb, ud);
}

int xcm__client_new_custom(xcm_client **out, xcm_ctx *ctx,
                           const xcm_client_cfg *cfg, const xcm_transport *t,
                           const char *peer, const xcm_client_cb *cb,
                           void *ud) {
  return client_new(out, ctx, cfg, NULL, t, NULL, peer, cb, ud);
}

int xcm__client_new_msg(xcm_client **out, xcm_ctx *ctx,
                        const xcm_client_cfg *cfg, const xcm_msg_transport *t,
                        const char *peer, const xcm_client_cb *cb, void *ud) {
  if (t == NULL || t->send == NULL || t->close == NULL) {
    *out = NULL;
    return XCM_EINVAL;
  }
  return client_new(out, ctx, cfg, NULL, NULL, t, peer, cb, ud);
}

xcm_stream *xcm__client_stream(const xcm_client *c) {
  return c->stream;
}

const char *xcm__client_sid(const xcm_client *c) {
  return c->sid;
}

int xcm__client_secured(const xcm_client *c) {
  return (c->flags & F_SECURED) != 0;
}

int xcm__client_compressed(const xcm_client *c) {
  return (c->flags & F_COMPRESSED) != 0;
}

const char *xcm__client_peer(const xcm_client *c) {
  if (c->peer != NULL)
    return c->peer;
  if (c->msg != NULL)
    return c->msg->peer;
  return c->stream != NULL ? xcm__stream_peer(c->stream) : "";
}

int xcm__client_authenticated(const xcm_client *c) {
  return (c->flags & F_AUTHED) != 0;
}

size_t xcm__client_footprint(const xcm_client *c) {
  size_t n = sizeof(*c) + (c->stream ? xcm__stream_footprint(c->stream) : 0) +
             xcm__sm_footprint(c->sm) + xcm__csi_footprint(c->csi);

  if (c->msg != NULL)
    n += sizeof(*c->msg) + strlen(c->msg->peer) + 1 + c->msg->q.cap;
  return n;
}

void xcm__client_shrink(xcm_client *c) {
  xcm__xml_reader_shrink(c->reader);
}
