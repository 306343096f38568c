/* The <body/> wrapper of a BOSH request (XEP-0124, XEP-0206): its
 * attributes, and the elements inside it, each made standalone so that
 * the client layer can read it as one message of the messages framing
 * (client/framing.h).
 *
 * The body is read by the stream reader (xml/reader.h) as a document
 * whose root is <body/>: expat (or the validating scanner in front of
 * it) with the restricted-XML rules of RFC 6120 (no DTD, comments,
 * processing instructions, entities), a bound on each child's size and
 * on nesting, one pass, linear in the body. A child keeps its exact
 * bytes; what it relied on from the body's start tag is declared on its
 * own start tag: xmlns='jabber:client' when it did not declare a default
 * namespace (XEP-0206: the body's default namespace stands for
 * jabber:client there), and each prefix of the body's it uses
 * (xmlns:stream, xmlns:xmpp). */
#ifndef XCM_WEB_BODY_H
#define XCM_WEB_BODY_H

#include <stddef.h>

#include "util/buf.h"
#include "xml/reader.h"

#define XCM_NS_HTTPBIND "http://jabber.org/protocol/httpbind"
#define XCM_NS_XBOSH "urn:xmpp:xbosh"

/* The attributes the CM reads. */
enum {
  XCM_BA_SID,
  XCM_BA_RID,
  XCM_BA_TYPE,
  XCM_BA_TO,
  XCM_BA_LANG, /* xml:lang */
  XCM_BA_VER,
  XCM_BA_WAIT,
  XCM_BA_HOLD,
  XCM_BA_ACK,
  XCM_BA_PAUSE,
  XCM_BA_XMPP_VERSION, /* xmpp:version */
  XCM_BA_RESTART,      /* xmpp:restart */
  XCM_BA_KEY,          /* XEP-0124 15: the key sequence */
  XCM_BA_NEWKEY,
  XCM_BA_COUNT
};

typedef struct xcm_bosh_body {
  /* Where each attribute's value (unescaped, NUL-terminated) starts in
   * strings, plus one; 0 when the attribute is absent. */
  size_t attr[XCM_BA_COUNT];
  xcm_buf strings;
  /* The children, one after another, each a size_t length and its
   * bytes. */
  xcm_buf children;
  size_t nchildren;
} xcm_bosh_body;

/* Read data (len bytes, a request's whole body) into *out (any
 * contents: it is set up here; free it with xcm__bosh_body_free, also
 * after an error). max_child bounds one child's bytes and max_depth the
 * nesting below <body/>. Returns 0; XCM_EXML when data is not one
 * well-formed <body/> in the httpbind namespace (white space aside) or
 * breaks the restricted-XML rules; XCM_ELIMIT for a child over
 * max_child or nested too deep; XCM_ENOMEM. */
int xcm__bosh_body_parse(xcm_bosh_body *out, xcm_xml_pool *pool,
                         const xcm_allocator *alloc, const char *data,
                         size_t len, size_t max_child, unsigned max_depth);

/* An attribute's value, or NULL when absent; valid until the body is
 * freed. */
const char *xcm__bosh_body_attr(const xcm_bosh_body *b, int which);

/* The child at *at (start with 0): its bytes and length, *at moved to
 * the next; NULL after the last. */
const char *xcm__bosh_body_child(const xcm_bosh_body *b, size_t *at,
                                 size_t *len);

void xcm__bosh_body_free(xcm_bosh_body *b);

#endif
