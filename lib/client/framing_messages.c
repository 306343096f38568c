/* The messages framing (RFC 7395): every unit is one standalone,
 * well-formed element, so each declares the namespaces it would have
 * inherited from a <stream:stream> header. */
#include "client/framing.h"

#include <string.h>

#include "proto/cmproto.h"
#include "proto/route.h"
#include "proto/stream.h"
#include "xml/writer.h"

#define DECL_STREAM " xmlns:stream=\"" XCM_NS_STREAMS "\""

/* Declare the stream prefix on the element that starts at b->data + at
 * and whose start tag begins with the name of name_len bytes: for a
 * <stream:features> or <stream:error> written as on a stream. */
static int declare_stream(xcm_buf *b, size_t at, size_t name_len) {
  size_t pos = at + 1 + name_len, n = sizeof DECL_STREAM - 1;
  int err = xcm__buf_reserve(b, n);

  if (err != 0) {
    b->len = at;
    return err;
  }
  memmove(b->data + pos + n, b->data + pos, b->len - pos);
  memcpy(b->data + pos, DECL_STREAM, n);
  b->len += n;
  return 0;
}

static int msg_open(xcm_buf *b, const xcm_frame_open *a) {
  size_t at = b->len;
  int err = xcm__buf_append_str(b, "<open xmlns=\"" XCM_NS_FRAMING "\"");

  if (err == 0)
    err = xcm__xml_attr(b, "from", a->from);
  if (err == 0)
    err = xcm__xml_attr(b, "id", a->id);
  /* RFC 7395 3.3.2: the version is always 1.0 here. */
  if (err == 0)
    err = xcm__buf_append_str(b, " version=\"1.0\"");
  if (err == 0 && a->lang != NULL)
    err = xcm__xml_attr(b, "xml:lang", a->lang);
  if (err == 0)
    err = xcm__buf_append_str(b, "/>");
  if (err != 0)
    b->len = at;
  return err;
}

static int msg_features(xcm_buf *b, const xcm_features *f) {
  size_t at = b->len;
  int err = xcm__client_features(b, f);

  return err != 0 ? err : declare_stream(b, at, strlen("stream:features"));
}

static int msg_error(xcm_buf *b, xcm_cond cond, const char *text) {
  size_t at = b->len;
  int err = xcm__stream_error(b, cond, text);

  return err != 0 ? err : declare_stream(b, at, strlen("stream:error"));
}

static int msg_server_error(xcm_buf *b, const char *bytes, size_t len) {
  const char *v, *q;
  size_t vlen, qlen, at = b->len;
  int err = xcm__buf_append(b, bytes, len);

  if (err != 0)
    return err;
  /* The server wrote it for a stream that declared the prefix. */
  if (!xcm__xml_start_tag(bytes, len, "xmlns:stream", &v, &vlen, &q, &qlen) &&
      qlen > 7 && memcmp(q, "stream:", 7) == 0)
    return declare_stream(b, at, qlen);
  return 0;
}

static int msg_close(xcm_buf *b) {
  return xcm__buf_append_str(b, "<close xmlns=\"" XCM_NS_FRAMING "\"/>");
}

static const xcm_xml_nsdecl stream_decl[] = {{"stream", XCM_NS_STREAMS}};

static int msg_element(xcm_buf *b, const char *bytes, size_t len) {
  size_t qlen = xcm__xml_qname_length(bytes, len);
  int prefixed = qlen > 7 && memcmp(bytes + 1, "stream:", 7) == 0;
  const char *v, *q;
  size_t vlen;

  if (prefixed &&
      xcm__xml_start_tag(bytes, len, "xmlns:stream", &v, &vlen, &q, &qlen))
    prefixed = 0;
  /* On a stream, a stanza without its own xmlns is in jabber:client:
   * standing alone it must say so. */
  return xcm__route_put_element(
      b, bytes, len, qlen,
      prefixed || xcm__xml_declares_default(bytes, len) ? NULL : XCM_NS_CLIENT,
      stream_decl, 1, prefixed ? 1u : 0u);
}

const xcm_framing xcm__framing_messages = {
    "messages", XCM_FRAMING_MESSAGES, msg_open,  msg_features,
    msg_error,  msg_server_error,     msg_close, msg_element};

int xcm__framing_kind(const char *ns, const char *name) {
  if (strcmp(ns, XCM_NS_FRAMING) != 0)
    return XCM_FRAME_ELEMENT;
  if (strcmp(name, "open") == 0)
    return XCM_FRAME_OPEN;
  if (strcmp(name, "close") == 0)
    return XCM_FRAME_CLOSE;
  return XCM_FRAME_ELEMENT;
}
