/* What the CM offers its clients.
 *
 * Openfire pushes this policy over every upstream connection right after
 * the handshake (the configuration iq); the latest one wins. A zeroed
 * struct offers nothing: no TLS, no SASL mechanism, no compression. */
#ifndef XCM_POLICY_H
#define XCM_POLICY_H

#include "xcm/export.h"

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
  XCM_POLICY_MAX_MECHANISMS = 16,
  /* RFC 4422 section 3.1: at most 20 characters of [A-Z0-9-_]. */
  XCM_MECHANISM_MAX_LEN = 20
};

typedef enum xcm_tls_policy {
  XCM_TLS_OFF = 0,
  XCM_TLS_OPTIONAL,
  XCM_TLS_REQUIRED
} xcm_tls_policy;

typedef struct xcm_policy {
  xcm_tls_policy tls;
  /* SASL mechanisms to announce, in the server's order, NUL-terminated. */
  unsigned nmechanisms;
  char mechanisms[XCM_POLICY_MAX_MECHANISMS][XCM_MECHANISM_MAX_LEN + 1];
  int compression_zlib; /* XEP-0138 */
  int legacy_auth;      /* XEP-0078 */
  int registration;     /* XEP-0077 */
} xcm_policy;

/* A one-line summary for logs, e.g. "tls=optional
 * mechanisms=PLAIN,SCRAM-SHA-1 compression=zlib auth=no register=yes".
 * snprintf semantics: returns the length of the whole summary; out gets as
 * much of it as fits, always NUL-terminated when cap > 0. */
XCM_EXTERN int xcm_policy_describe(char *out, size_t cap, const xcm_policy *p);

/* 1 if p announces the SASL mechanism name (len bytes), else 0. */
XCM_EXTERN int xcm_policy_has_mechanism(const xcm_policy *p, const char *name,
                                        size_t len);

#ifdef __cplusplus
}
#endif
#endif
