/* XMPP stream error conditions (RFC 6120, section 4.9.3). */
#ifndef XCM_CONDITION_H
#define XCM_CONDITION_H

#include "xcm/export.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum xcm_cond {
  XCM_COND_NONE = 0,
  XCM_COND_BAD_FORMAT,
  XCM_COND_BAD_NAMESPACE_PREFIX,
  XCM_COND_CONFLICT,
  XCM_COND_CONNECTION_TIMEOUT,
  XCM_COND_HOST_GONE,
  XCM_COND_HOST_UNKNOWN,
  XCM_COND_IMPROPER_ADDRESSING,
  XCM_COND_INTERNAL_SERVER_ERROR,
  XCM_COND_INVALID_FROM,
  XCM_COND_INVALID_NAMESPACE,
  XCM_COND_INVALID_XML,
  XCM_COND_NOT_AUTHORIZED,
  XCM_COND_NOT_WELL_FORMED,
  XCM_COND_POLICY_VIOLATION,
  XCM_COND_REMOTE_CONNECTION_FAILED,
  XCM_COND_RESET,
  XCM_COND_RESOURCE_CONSTRAINT,
  XCM_COND_RESTRICTED_XML,
  XCM_COND_SEE_OTHER_HOST,
  XCM_COND_SYSTEM_SHUTDOWN,
  XCM_COND_UNDEFINED_CONDITION,
  XCM_COND_UNSUPPORTED_ENCODING,
  XCM_COND_UNSUPPORTED_FEATURE,
  XCM_COND_UNSUPPORTED_STANZA_TYPE,
  XCM_COND_UNSUPPORTED_VERSION,
  XCM_COND_COUNT_ /* number of conditions; not a condition */
} xcm_cond;

/* The element name of cond as written on the wire, e.g. "not-well-formed";
 * "" for XCM_COND_NONE or an out-of-range value. */
XCM_EXTERN const char *xcm_cond_name(xcm_cond cond);

/* The condition whose element name is name (len bytes), or XCM_COND_NONE. */
XCM_EXTERN xcm_cond xcm_cond_from_name(const char *name, unsigned long len);

#ifdef __cplusplus
}
#endif
#endif
