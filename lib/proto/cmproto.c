#include "proto/cmproto.h"

#include <limits.h>
#include <string.h>

#include <mbedtls/sha1.h>
#include <mbedtls/version.h>

#include "xcm/error.h"
#include "xml/reader.h"
#include "xml/writer.h"

/* Builders write through a sticky error: after the first failure every
 * further step is skipped and done() puts the buffer back to its length
 * at the start, so each builder reads as the element it writes. */
typedef struct writer {
  xcm_buf *b;
  size_t mark;
  int err;
} writer;

static writer start(xcm_buf *b) {
  writer w = {b, b->len, 0};
  return w;
}

static void lit(writer *w, const char *s) {
  if (w->err == 0)
    w->err = xcm__buf_append_str(w->b, s);
}

static void attr(writer *w, const char *name, const char *value) {
  if (w->err == 0 && value != NULL)
    w->err = xcm__xml_attr(w->b, name, value);
}

static void text(writer *w, const char *s) {
  if (w->err == 0)
    w->err = xcm__xml_escape_text(w->b, s, strlen(s));
}

static void raw(writer *w, const char *s, size_t len) {
  if (w->err == 0)
    w->err = xcm__buf_append(w->b, s, len);
}

static int done(writer *w) {
  if (w->err != 0)
    w->b->len = w->mark;
  return w->err;
}

/* An empty id, address or session id would reach Openfire as a key that
 * matches nothing, or everything that also lacks one. */
static int given(const char *s) {
  return s != NULL && s[0] != '\0';
}

/* Upstream ------------------------------------------------------------ */

int xcm__cm_stream_open(xcm_buf *b, const char *cm_jid) {
  writer w = start(b);

  if (!given(cm_jid))
    return XCM_EINVAL;
  lit(&w, "<stream:stream xmlns:stream=\"" XCM_NS_STREAMS
          "\" xmlns=\"" XCM_NS_CM "\"");
  attr(&w, "to", cm_jid);
  lit(&w, " version=\"1.0\">");
  return done(&w);
}

/* mbedTLS 3 dropped the _ret suffixes that 2.x (Debian 12 ships 2.28)
 * needs to report errors; both return 0 on success. */
static int sha1_parts(const char *a, size_t alen, const char *b, size_t blen,
                      unsigned char digest[20]) {
  mbedtls_sha1_context ctx;
  int err;

  mbedtls_sha1_init(&ctx);
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
  err = mbedtls_sha1_starts(&ctx);
  if (err == 0)
    err = mbedtls_sha1_update(&ctx, (const unsigned char *)a, alen);
  if (err == 0)
    err = mbedtls_sha1_update(&ctx, (const unsigned char *)b, blen);
  if (err == 0)
    err = mbedtls_sha1_finish(&ctx, digest);
#else
  err = mbedtls_sha1_starts_ret(&ctx);
  if (err == 0)
    err = mbedtls_sha1_update_ret(&ctx, (const unsigned char *)a, alen);
  if (err == 0)
    err = mbedtls_sha1_update_ret(&ctx, (const unsigned char *)b, blen);
  if (err == 0)
    err = mbedtls_sha1_finish_ret(&ctx, digest);
#endif
  mbedtls_sha1_free(&ctx);
  return err;
}

int xcm__cm_handshake_digest(char hex[41], const char *stream_id, size_t id_len,
                             const char *secret, size_t secret_len) {
  static const char digits[] = "0123456789abcdef";
  unsigned char digest[20];
  int i;

  hex[0] = '\0';
  if (sha1_parts(stream_id, id_len, secret, secret_len, digest) != 0)
    return XCM_EINVAL;
  for (i = 0; i < 20; i++) {
    hex[2 * i] = digits[digest[i] >> 4];
    hex[2 * i + 1] = digits[digest[i] & 0xf];
  }
  hex[40] = '\0';
  return 0;
}

int xcm__cm_handshake(xcm_buf *b, const char *stream_id, size_t id_len,
                      const char *secret, size_t secret_len) {
  writer w = start(b);
  char hex[41];

  w.err = xcm__cm_handshake_digest(hex, stream_id, id_len, secret, secret_len);
  lit(&w, "<handshake>");
  lit(&w, hex);
  lit(&w, "</handshake>");
  return done(&w);
}

int xcm__cm_iq_result(xcm_buf *b, const char *cm_jid, const char *domain,
                      const char *id) {
  writer w = start(b);

  if (!given(cm_jid) || !given(domain) || !given(id))
    return XCM_EINVAL;
  lit(&w, "<iq type=\"result\"");
  attr(&w, "id", id);
  attr(&w, "from", cm_jid);
  attr(&w, "to", domain);
  lit(&w, "/>");
  return done(&w);
}

/* The envelope of a session request up to the action element, in the
 * attribute order of the captures. */
static void session_open(writer *w, const char *cm_jid, const char *domain,
                         const char *id, const char *sid) {
  lit(w, "<iq type=\"set\"");
  attr(w, "id", id);
  attr(w, "to", domain);
  attr(w, "from", cm_jid);
  lit(w, "><session xmlns=\"" XCM_NS_CM_PROTOCOL "\"");
  attr(w, "id", sid);
  lit(w, ">");
}

static int session_args_ok(const char *cm_jid, const char *domain,
                           const char *id, const char *sid) {
  return given(cm_jid) && given(domain) && given(id) && given(sid);
}

int xcm__cm_session_create(xcm_buf *b, const char *cm_jid, const char *domain,
                           const char *id, const char *sid,
                           const char *host_name, const char *host_addr) {
  writer w = start(b);

  if (!session_args_ok(cm_jid, domain, id, sid))
    return XCM_EINVAL;
  session_open(&w, cm_jid, domain, id, sid);
  if (host_name == NULL && host_addr == NULL) {
    lit(&w, "<create/>");
  } else {
    lit(&w, "<create><host");
    attr(&w, "name", host_name);
    attr(&w, "address", host_addr);
    lit(&w, "/></create>");
  }
  lit(&w, "</session></iq>");
  return done(&w);
}

int xcm__cm_session_close(xcm_buf *b, const char *cm_jid, const char *domain,
                          const char *id, const char *sid) {
  writer w = start(b);

  if (!session_args_ok(cm_jid, domain, id, sid))
    return XCM_EINVAL;
  session_open(&w, cm_jid, domain, id, sid);
  lit(&w, "<close/></session></iq>");
  return done(&w);
}

int xcm__cm_session_failed(xcm_buf *b, const char *cm_jid, const char *domain,
                           const char *id, const char *sid, const char *stanza,
                           size_t stanza_len) {
  writer w = start(b);

  if (!session_args_ok(cm_jid, domain, id, sid))
    return XCM_EINVAL;
  /* Not a parse, only a guard against the obvious mistakes (nothing, or
   * text): the caller hands over an element its reader delimited. */
  if (stanza == NULL || stanza_len < 3 || stanza[0] != '<' ||
      stanza[stanza_len - 1] != '>')
    return XCM_EINVAL;
  session_open(&w, cm_jid, domain, id, sid);
  lit(&w, "<failed>");
  raw(&w, stanza, stanza_len);
  lit(&w, "</failed></session></iq>");
  return done(&w);
}

/* The session is echoed without its action and payload: enough for the
 * server's log to tell which session, and a failed message is not worth
 * sending back twice. */
int xcm__cm_session_not_found(xcm_buf *b, const char *cm_jid,
                              const char *domain, const char *id,
                              const char *sid) {
  writer w = start(b);

  if (!session_args_ok(cm_jid, domain, id, sid))
    return XCM_EINVAL;
  lit(&w, "<iq type=\"error\"");
  attr(&w, "id", id);
  attr(&w, "from", cm_jid);
  attr(&w, "to", domain);
  lit(&w, "><session xmlns=\"" XCM_NS_CM_PROTOCOL "\"");
  attr(&w, "id", sid);
  lit(&w, "/><error code=\"404\" type=\"cancel\"><item-not-found "
          "xmlns=\"" XCM_NS_STANZAS "\"/></error></iq>");
  return done(&w);
}

int xcm__cm_iq_bounce(xcm_buf *b, const char *id, const char *from,
                      const char *to) {
  writer w = start(b);

  /* The explicit namespace: a routed stanza keeps none from the client's
   * stream header, and Openfire would otherwise file it under
   * jabber:connectionmanager. */
  lit(&w, "<iq xmlns=\"" XCM_NS_CLIENT "\" type=\"error\"");
  attr(&w, "id", id);
  attr(&w, "from", to);
  attr(&w, "to", from);
  lit(&w, "><error type=\"wait\"><unexpected-request xmlns=\"" XCM_NS_STANZAS
          "\"/></error></iq>");
  return done(&w);
}

/* Client side ---------------------------------------------------------- */

int xcm__client_stream_open(xcm_buf *b, const char *domain, const char *sid,
                            const char *lang, int version_1) {
  writer w = start(b);

  if (!given(domain) || !given(sid))
    return XCM_EINVAL;
  lit(&w, "<?xml version='1.0'?><stream:stream xmlns:stream=\"" XCM_NS_STREAMS
          "\" xmlns=\"" XCM_NS_CLIENT "\"");
  attr(&w, "from", domain);
  attr(&w, "id", sid);
  if (version_1)
    lit(&w, " version=\"1.0\"");
  attr(&w, "xml:lang", lang);
  lit(&w, ">");
  return done(&w);
}

int xcm__client_features(xcm_buf *b, const xcm_features *f) {
  writer w = start(b);
  unsigned i;

  if (f->nmechanisms > XCM_POLICY_MAX_MECHANISMS)
    return XCM_EINVAL;
  for (i = 0; i < f->nmechanisms; i++)
    if (!given(f->mechanisms[i]))
      return XCM_EINVAL;

  lit(&w, "<stream:features>");
  /* Openfire writes an empty starttls with an end tag; so do we, to stay
   * byte-comparable with its captures. */
  if (f->flags & XCM_FEATURE_STARTTLS_REQUIRED)
    lit(&w, "<starttls xmlns=\"" XCM_NS_TLS "\"><required/></starttls>");
  else if (f->flags & XCM_FEATURE_STARTTLS)
    lit(&w, "<starttls xmlns=\"" XCM_NS_TLS "\"></starttls>");
  if (f->nmechanisms > 0) {
    lit(&w, "<mechanisms xmlns=\"" XCM_NS_SASL "\">");
    for (i = 0; i < f->nmechanisms; i++) {
      lit(&w, "<mechanism>");
      text(&w, f->mechanisms[i]);
      lit(&w, "</mechanism>");
    }
    lit(&w, "</mechanisms>");
  }
  if (f->flags & XCM_FEATURE_COMPRESSION)
    lit(&w, "<compression xmlns=\"" XCM_NS_COMPRESS_FEATURE
            "\"><method>zlib</method></compression>");
  if (f->flags & XCM_FEATURE_IQ_AUTH)
    lit(&w, "<auth xmlns=\"" XCM_NS_IQ_AUTH_FEATURE "\"/>");
  if (f->flags & XCM_FEATURE_IQ_REGISTER)
    lit(&w, "<register xmlns=\"" XCM_NS_IQ_REGISTER_FEATURE "\"/>");
  if (f->flags & XCM_FEATURE_BIND)
    lit(&w, "<bind xmlns=\"" XCM_NS_BIND "\"/>");
  if (f->flags & XCM_FEATURE_SESSION)
    lit(&w, "<session xmlns=\"" XCM_NS_SESSION "\"><optional/></session>");
  if (f->flags & XCM_FEATURE_SM)
    lit(&w, "<sm xmlns=\"" XCM_NS_SM "\"/>");
  if (f->flags & XCM_FEATURE_CSI)
    lit(&w, "<csi xmlns=\"urn:xmpp:csi:0\"/>");
  lit(&w, "</stream:features>");
  return done(&w);
}

int xcm__stream_error(xcm_buf *b, xcm_cond cond, const char *msg) {
  writer w = start(b);
  const char *name = xcm_cond_name(cond);

  if (name[0] == '\0')
    return XCM_EINVAL;
  lit(&w, "<stream:error><");
  lit(&w, name);
  lit(&w, " xmlns=\"" XCM_NS_STREAM_ERRORS "\"/>");
  if (msg != NULL) {
    lit(&w, "<text xmlns=\"" XCM_NS_STREAM_ERRORS "\">");
    text(&w, msg);
    lit(&w, "</text>");
  }
  lit(&w, "</stream:error>");
  return done(&w);
}

int xcm__stream_close_tag(xcm_buf *b) {
  return xcm__buf_append_str(b, "</stream:stream>");
}

void xcm_features_from_policy(xcm_features *f, const xcm_policy *p,
                              unsigned state) {
  unsigned i, n;

  memset(f, 0, sizeof(*f));
  if (state & XCM_STREAM_AUTHENTICATED) {
    f->flags = XCM_FEATURE_BIND | XCM_FEATURE_SESSION;
    if (p->compression_zlib && !(state & XCM_STREAM_COMPRESSED))
      f->flags |= XCM_FEATURE_COMPRESSION;
    return;
  }
  if (p->tls != XCM_TLS_OFF && !(state & XCM_STREAM_SECURED)) {
    f->flags |= XCM_FEATURE_STARTTLS;
    if (p->tls == XCM_TLS_REQUIRED) {
      f->flags |= XCM_FEATURE_STARTTLS_REQUIRED;
      return;
    }
  }
  n = p->nmechanisms < XCM_POLICY_MAX_MECHANISMS ? p->nmechanisms
                                                 : XCM_POLICY_MAX_MECHANISMS;
  for (i = 0; i < n; i++)
    f->mechanisms[i] = p->mechanisms[i];
  f->nmechanisms = n;
  if (p->legacy_auth)
    f->flags |= XCM_FEATURE_IQ_AUTH;
  if (p->registration)
    f->flags |= XCM_FEATURE_IQ_REGISTER;
}

/* Public wrappers ------------------------------------------------------ */

/* Public builders first write straight into the caller's buffer through
 * an xcm_buf that may not grow; only when that overflows do they run
 * again into a heap buffer, to learn the size to report. The common case
 * allocates nothing. */
static void *no_growth(void *ud, void *ptr, size_t size) {
  return NULL;
}

static const xcm_allocator fixed_alloc = {sizeof(xcm_allocator), no_growth,
                                          NULL};

typedef struct outbuf {
  xcm_buf b;
  char *out;
  size_t cap;
  int measuring;
} outbuf;

static void ob_start(outbuf *o, char *out, size_t cap) {
  o->out = out;
  o->cap = out != NULL ? cap : 0;
  o->measuring = 0;
  o->b.data = out;
  o->b.len = 0;
  o->b.cap = o->cap > 0 ? o->cap - 1 : 0; /* room for the NUL */
  o->b.alloc = &fixed_alloc;
}

/* Takes the builder's result. Returns 1 with *ret set when the wrapper is
 * done, 0 when it must run the builder again into o->b. */
static int ob_finish(outbuf *o, int err, int *ret) {
  size_t len = o->b.len;

  if (!o->measuring) {
    if (err == 0 && len > INT_MAX)
      err = XCM_ETOOBIG;
    if (err == 0) {
      if (o->cap > 0)
        o->out[len] = '\0';
      *ret = (int)len;
      return 1;
    }
    if (o->cap > 0)
      o->out[0] = '\0';
    if (err != XCM_ENOMEM) {
      *ret = err;
      return 1;
    }
    o->measuring = 1;
    xcm__buf_init(&o->b, NULL);
    return 0;
  }
  xcm__buf_free(&o->b);
  if (err != 0)
    *ret = err;
  else
    *ret = len > INT_MAX ? XCM_ETOOBIG : (int)len;
  return 1;
}

int xcm_cm_stream_open(char *out, size_t cap, const char *cm_jid) {
  outbuf o;
  int ret;

  ob_start(&o, out, cap);
  while (!ob_finish(&o, xcm__cm_stream_open(&o.b, cm_jid), &ret))
    ;
  return ret;
}

int xcm_cm_handshake_digest(char hex[41], const char *stream_id,
                            const char *secret) {
  if (hex == NULL)
    return XCM_EINVAL;
  if (stream_id == NULL || secret == NULL) {
    hex[0] = '\0';
    return XCM_EINVAL;
  }
  return xcm__cm_handshake_digest(hex, stream_id, strlen(stream_id), secret,
                                  strlen(secret));
}

int xcm_cm_handshake(char *out, size_t cap, const char *stream_id,
                     const char *secret) {
  outbuf o;
  int ret;

  ob_start(&o, out, cap);
  if (stream_id == NULL || secret == NULL) {
    ob_finish(&o, XCM_EINVAL, &ret);
    return ret;
  }
  while (!ob_finish(&o,
                    xcm__cm_handshake(&o.b, stream_id, strlen(stream_id),
                                      secret, strlen(secret)),
                    &ret))
    ;
  return ret;
}

int xcm_cm_iq_result(char *out, size_t cap, const char *cm_jid,
                     const char *domain, const char *id) {
  outbuf o;
  int ret;

  ob_start(&o, out, cap);
  while (!ob_finish(&o, xcm__cm_iq_result(&o.b, cm_jid, domain, id), &ret))
    ;
  return ret;
}

int xcm_cm_session_create(char *out, size_t cap, const char *cm_jid,
                          const char *domain, const char *id, const char *sid,
                          const char *host_name, const char *host_addr) {
  outbuf o;
  int ret;

  ob_start(&o, out, cap);
  while (!ob_finish(&o,
                    xcm__cm_session_create(&o.b, cm_jid, domain, id, sid,
                                           host_name, host_addr),
                    &ret))
    ;
  return ret;
}

int xcm_cm_session_close(char *out, size_t cap, const char *cm_jid,
                         const char *domain, const char *id, const char *sid) {
  outbuf o;
  int ret;

  ob_start(&o, out, cap);
  while (!ob_finish(&o, xcm__cm_session_close(&o.b, cm_jid, domain, id, sid),
                    &ret))
    ;
  return ret;
}

int xcm_cm_session_failed(char *out, size_t cap, const char *cm_jid,
                          const char *domain, const char *id, const char *sid,
                          const char *stanza, size_t stanza_len) {
  outbuf o;
  int ret;

  ob_start(&o, out, cap);
  while (!ob_finish(
      &o,
      xcm__cm_session_failed(&o.b, cm_jid, domain, id, sid, stanza, stanza_len),
      &ret))
    ;
  return ret;
}

int xcm_cm_session_not_found(char *out, size_t cap, const char *cm_jid,
                             const char *domain, const char *id,
                             const char *sid) {
  outbuf o;
  int ret;

  ob_start(&o, out, cap);
  while (!ob_finish(
      &o, xcm__cm_session_not_found(&o.b, cm_jid, domain, id, sid), &ret))
    ;
  return ret;
}

int xcm_cm_iq_bounce(char *out, size_t cap, const char *id, const char *from,
                     const char *to) {
  outbuf o;
  int ret;

  ob_start(&o, out, cap);
  while (!ob_finish(&o, xcm__cm_iq_bounce(&o.b, id, from, to), &ret))
    ;
  return ret;
}

int xcm_client_stream_open(char *out, size_t cap, const char *domain,
                           const char *sid, const char *lang, int version_1) {
  outbuf o;
  int ret;

  ob_start(&o, out, cap);
  while (!ob_finish(
      &o, xcm__client_stream_open(&o.b, domain, sid, lang, version_1), &ret))
    ;
  return ret;
}

int xcm_client_features(char *out, size_t cap, const xcm_features *f) {
  outbuf o;
  int ret;

  ob_start(&o, out, cap);
  if (f == NULL) {
    ob_finish(&o, XCM_EINVAL, &ret);
    return ret;
  }
  while (!ob_finish(&o, xcm__client_features(&o.b, f), &ret))
    ;
  return ret;
}

int xcm_stream_error(char *out, size_t cap, xcm_cond cond, const char *text) {
  outbuf o;
  int ret;

  ob_start(&o, out, cap);
  while (!ob_finish(&o, xcm__stream_error(&o.b, cond, text), &ret))
    ;
  return ret;
}

int xcm_stream_close(char *out, size_t cap) {
  outbuf o;
  int ret;

  ob_start(&o, out, cap);
  while (!ob_finish(&o, xcm__stream_close_tag(&o.b), &ret))
    ;
  return ret;
}
