/* The bytes the CM writes: upstream to Openfire (connection-manager
 * protocol) and downstream to its clients (stream headers, features,
 * stream errors).
 *
 * Every builder writes into the caller's buffer with snprintf semantics:
 * it returns the length of the complete output, excluding the NUL. When
 * that length is >= cap nothing usable is written (out gets "" if cap > 0,
 * never a truncated element); call again with a buffer of at least the
 * returned length plus one. On a negative return (an xcm_error) out is
 * likewise "".
 *
 * Arguments are NUL-terminated UTF-8. Every one of them is escaped, so
 * values taken from clients (stream ids, JIDs, xml:lang) can never add
 * markup; input no XML document can carry (control characters, invalid
 * UTF-8) gives XCM_EINVAL. Arguments documented as required must be
 * non-NULL and non-empty, else XCM_EINVAL. In the upstream builders the
 * first arguments are always, in this order: cm_jid, this connection's
 * own address "CM/RES"; domain, the server's XMPP domain; id, the iq id.
 */
#ifndef XCM_PROTO_H
#define XCM_PROTO_H

#include "xcm/export.h"

#include <stddef.h>

#include "xcm/condition.h"
#include "xcm/policy.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Upstream ------------------------------------------------------------ */

/* The stream header opening an upstream connection. */
XCM_EXTERN int xcm_cm_stream_open(char *out, size_t cap, const char *cm_jid);

/* The XEP-0114 handshake digest: lowercase hex SHA-1 of the upstream
 * stream id (as received, unescaped) followed by the shared secret.
 * hex receives 40 digits and a NUL. Returns 0 or a negative error. */
XCM_EXTERN int xcm_cm_handshake_digest(char hex[41], const char *stream_id,
                                       const char *secret);

/* <handshake>digest</handshake> for stream_id and secret. */
XCM_EXTERN int xcm_cm_handshake(char *out, size_t cap, const char *stream_id,
                                const char *secret);

/* An empty iq result, from cm_jid to domain: the answer to the
 * configuration iq and to a server-initiated session close. */
XCM_EXTERN int xcm_cm_iq_result(char *out, size_t cap, const char *cm_jid,
                                const char *domain, const char *id);

/* Session requests for client session sid. create: host_name and
 * host_addr (the client's address, checked by Openfire against its
 * allow and block lists) are each optional; with neither, no <host/>. */
XCM_EXTERN int xcm_cm_session_create(char *out, size_t cap, const char *cm_jid,
                                     const char *domain, const char *id,
                                     const char *sid, const char *host_name,
                                     const char *host_addr);
XCM_EXTERN int xcm_cm_session_close(char *out, size_t cap, const char *cm_jid,
                                    const char *domain, const char *id,
                                    const char *sid);

/* Returns one undeliverable stanza to the server (it stores a message
 * offline). stanza is inserted as is: exactly one complete element,
 * carrying its own xmlns="jabber:client". */
XCM_EXTERN int xcm_cm_session_failed(char *out, size_t cap, const char *cm_jid,
                                     const char *domain, const char *id,
                                     const char *sid, const char *stanza,
                                     size_t stanza_len);

/* The item-not-found error answering a server's close (or failed) for a
 * session sid the CM does not know. */
XCM_EXTERN int xcm_cm_session_not_found(char *out, size_t cap,
                                        const char *cm_jid, const char *domain,
                                        const char *id, const char *sid);

/* The error a gone client would have given to an iq get or set sent to
 * it: unexpected-request, type wait. id, from and to are the original
 * iq's attributes (each may be NULL when it had none); the answer goes
 * back from the original to, to the original from. The caller routes it
 * to the server on the client's behalf. */
XCM_EXTERN int xcm_cm_iq_bounce(char *out, size_t cap, const char *id,
                                const char *from, const char *to);

/* Client side ---------------------------------------------------------- */

/* The CM's stream header towards a client: an XML declaration, then the
 * root with from=domain and id=sid (both required), version="1.0" when
 * version_1 (the client asked for an RFC 6120 stream) and xml:lang when
 * lang is not NULL. */
XCM_EXTERN int xcm_client_stream_open(char *out, size_t cap, const char *domain,
                                      const char *sid, const char *lang,
                                      int version_1);

enum xcm_feature_flags {
  XCM_FEATURE_STARTTLS = 1u << 0,
  XCM_FEATURE_STARTTLS_REQUIRED = 1u << 1, /* implies STARTTLS */
  XCM_FEATURE_COMPRESSION = 1u << 2,       /* XEP-0138, method zlib */
  XCM_FEATURE_IQ_AUTH = 1u << 3,           /* XEP-0078 */
  XCM_FEATURE_IQ_REGISTER = 1u << 4,       /* XEP-0077 */
  XCM_FEATURE_BIND = 1u << 5,
  XCM_FEATURE_SESSION = 1u << 6, /* RFC 3921 session, marked optional */
  /* XEP-0198 stream management (urn:xmpp:sm:3): never set by
   * xcm_features_from_policy (Openfire's policy does not carry it); the
   * CM adds it after authentication when xcm_options.sm_enable is set. */
  XCM_FEATURE_SM = 1u << 7,
  /* XEP-0352 client state indication (urn:xmpp:csi:0): likewise, after
   * authentication when xcm_options.csi_enable is set. */
  XCM_FEATURE_CSI = 1u << 8
};

/* One <stream:features> element. mechanisms are borrowed; none means no
 * <mechanisms/> element. */
typedef struct xcm_features {
  unsigned flags;
  unsigned nmechanisms;
  const char *mechanisms[XCM_POLICY_MAX_MECHANISMS];
} xcm_features;

/* Where a client stream stands, for xcm_features_from_policy(). */
enum xcm_stream_state {
  XCM_STREAM_SECURED = 1u << 0,
  XCM_STREAM_COMPRESSED = 1u << 1,
  XCM_STREAM_AUTHENTICATED = 1u << 2
};

/* The features to offer on a client stream in state (xcm_stream_state
 * bits) under policy p. f borrows p's mechanism names: p must outlive f
 * and stay unchanged while f is in use.
 *
 * Before authentication: STARTTLS when the policy has TLS and the stream
 * is not secured yet, and if TLS is required, nothing else until it is
 * (RFC 6120 section 5.3.1); then the mechanisms, iq-auth and iq-register.
 * After authentication: bind and session, and compression if the stream
 * is not compressed yet. Compression waits for authentication as XEP-0170
 * recommends: offered to anybody, it lets an unauthenticated peer make the
 * CM inflate large amounts of data cheaply. */
XCM_EXTERN void xcm_features_from_policy(xcm_features *f, const xcm_policy *p,
                                         unsigned state);

XCM_EXTERN int xcm_client_features(char *out, size_t cap,
                                   const xcm_features *f);

/* A stream error (cond must be a condition, not XCM_COND_NONE), with a
 * <text/> child when text is not NULL. Written with the stream: prefix
 * the CM's own header binds. */
XCM_EXTERN int xcm_stream_error(char *out, size_t cap, xcm_cond cond,
                                const char *text);

/* </stream:stream> */
XCM_EXTERN int xcm_stream_close(char *out, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
