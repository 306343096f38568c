/* Builders for what the CM writes, appending to an xcm_buf: the hot paths
 * keep one buffer per connection and reuse it. The public wrappers in
 * include/xcm/proto.h document each element and its arguments; these take
 * the same arguments with the output buffer first.
 *
 * Each returns 0 or a negative error. On error b is as it was: nothing of
 * the element is left behind, so a caller can append several elements to
 * one write buffer and stop at the first failure. */
#ifndef XCM_PROTO_CMPROTO_H
#define XCM_PROTO_CMPROTO_H

#include <stddef.h>

#include "proto/stream.h"
#include "util/buf.h"
#include "xcm/condition.h"
#include "xcm/proto.h"

#define XCM_NS_CM_PROTOCOL "http://jabber.org/protocol/connectionmanager"
#define XCM_NS_STANZAS "urn:ietf:params:xml:ns:xmpp-stanzas"
#define XCM_NS_STREAM_ERRORS "urn:ietf:params:xml:ns:xmpp-streams"
#define XCM_NS_TLS "urn:ietf:params:xml:ns:xmpp-tls"
#define XCM_NS_SASL "urn:ietf:params:xml:ns:xmpp-sasl"
#define XCM_NS_COMPRESS_FEATURE "http://jabber.org/features/compress"
#define XCM_NS_IQ_AUTH_FEATURE "http://jabber.org/features/iq-auth"
#define XCM_NS_IQ_REGISTER_FEATURE "http://jabber.org/features/iq-register"
#define XCM_NS_BIND "urn:ietf:params:xml:ns:xmpp-bind"
#define XCM_NS_SESSION "urn:ietf:params:xml:ns:xmpp-session"
#define XCM_NS_SM "urn:xmpp:sm:3"

/* Upstream. */
int xcm__cm_stream_open(xcm_buf *b, const char *cm_jid);
/* hex: 40 lowercase digits and a NUL. */
int xcm__cm_handshake_digest(char hex[41], const char *stream_id, size_t id_len,
                             const char *secret, size_t secret_len);
int xcm__cm_handshake(xcm_buf *b, const char *stream_id, size_t id_len,
                      const char *secret, size_t secret_len);
int xcm__cm_iq_result(xcm_buf *b, const char *cm_jid, const char *domain,
                      const char *id);
int xcm__cm_session_create(xcm_buf *b, const char *cm_jid, const char *domain,
                           const char *id, const char *sid,
                           const char *host_name, const char *host_addr);
int xcm__cm_session_close(xcm_buf *b, const char *cm_jid, const char *domain,
                          const char *id, const char *sid);
int xcm__cm_session_failed(xcm_buf *b, const char *cm_jid, const char *domain,
                           const char *id, const char *sid, const char *stanza,
                           size_t stanza_len);
int xcm__cm_session_not_found(xcm_buf *b, const char *cm_jid,
                              const char *domain, const char *id,
                              const char *sid);
int xcm__cm_iq_bounce(xcm_buf *b, const char *id, const char *from,
                      const char *to);

/* Client side. */
int xcm__client_stream_open(xcm_buf *b, const char *domain, const char *sid,
                            const char *lang, int version_1);
int xcm__client_features(xcm_buf *b, const xcm_features *f);
int xcm__stream_error(xcm_buf *b, xcm_cond cond, const char *text);
int xcm__stream_close_tag(xcm_buf *b);

#endif
