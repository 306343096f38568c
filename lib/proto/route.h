/* Route framing: a client's stanza into <route> for the server, and a
 * server's <route> back into what its client should get. These are the
 * zero-copy versions the CM uses on its hot path; include/xcm/route.h has
 * the same for callers holding only bytes. */
#ifndef XCM_PROTO_ROUTE_H
#define XCM_PROTO_ROUTE_H

#include <stdint.h>

#include "proto/stream.h"
#include "util/buf.h"
#include "xcm/route.h"
#include "xml/reader.h"

/* Append <route streamid to from>STANZA</route>. The stanza's bytes are
 * copied as the client sent them, with the namespaces it had from the
 * client's stream header (decls, from xcm__xml_reader_decls) declared on
 * its start tag: xmlns when it did not declare its own default, and each
 * header prefix it uses. The reader guarantees s is one well-formed,
 * balanced element, so nothing in it can close the route early. On error
 * b is unchanged. */
int xcm__route_wrap(xcm_buf *b, const xcm_xml_stanza *s,
                    const xcm_xml_nsdecl *decls, size_t ndecls,
                    const char *streamid, const char *to, const char *from);

/* Append one element's bytes with namespace declarations added to its
 * start tag: xmlns="default_ns" when default_ns is not NULL, and the
 * decls whose bit is set in mask. qname_len is the length of the
 * element's name as written; 0 means: find it. */
int xcm__route_put_element(xcm_buf *b, const char *bytes, size_t len,
                           size_t qname_len, const char *default_ns,
                           const xcm_xml_nsdecl *decls, size_t ndecls,
                           uint32_t mask);

/* Append <route streamid to from>ELEMENT</route> for bytes that already
 * carry their namespaces (an element the CM wrote itself). */
int xcm__route_wrap_bytes(xcm_buf *b, const char *bytes, size_t len,
                          const char *streamid, const char *to,
                          const char *from);

/* The length of the element's name as written (bytes[1..]). */
size_t xcm__xml_qname_length(const char *bytes, size_t len);

/* Whether the element in bytes is one of the three stanzas (message,
 * presence, iq), by its name as written: what XEP-0198 counts.
 * Stream-level elements (SASL, features, errors) are not. */
int xcm__xml_is_stanza(const char *bytes, size_t len);

/* Whether the start tag of the well-formed element in bytes declares the
 * default namespace (xmlns="..."). */
int xcm__xml_declares_default(const char *bytes, size_t len);

/* Find attribute name on the start tag of the well-formed element in
 * bytes: 1 with *value and *value_len set to its raw (still escaped)
 * value, else 0. *qname and *qname_len get the element's name. */
int xcm__xml_start_tag(const char *bytes, size_t len, const char *name,
                       const char **value, size_t *value_len,
                       const char **qname, size_t *qname_len);

/* Read a server's route from s, a depth-1 element read with a tree of at
 * least two levels. Pointers in out point into s and its tree: valid
 * during the stanza callback. Returns 0, or XCM_EPROTO with *why saying
 * what is wrong (a static string): not a route, no streamid, no element,
 * several elements, or text mixed with an element. */
int xcm__route_unwrap(const xcm_xml_stanza *s, xcm_route *out,
                      const char **why);

#endif
