/* Error codes shared by every libxcm function.
 *
 * Functions return 0 (or a non-negative count) on success and a negative
 * code on failure. System errors are passed through as libuv's codes
 * (negative errno values, UV_E*); libxcm's own codes live in a range of
 * their own so the two never collide. xcm_strerror() names either kind.
 */
#ifndef XCM_ERROR_H
#define XCM_ERROR_H

#include "xcm/export.h"

#ifdef __cplusplus
extern "C" {
#endif

enum xcm_error {
  XCM_OK = 0,
  XCM_ENOMEM = -4001,    /* an allocation failed */
  XCM_EINVAL = -4002,    /* an argument is out of range or malformed */
  XCM_EXML = -4003,      /* the peer sent XML that breaks the stream rules */
  XCM_ELIMIT = -4004,    /* a configured limit was exceeded */
  XCM_EPROTO = -4005,    /* the peer broke the XMPP or CM protocol */
  XCM_ECLOSED = -4006,   /* the stream or object is closed */
  XCM_ENOTFOUND = -4007, /* no such session, stream id or request */
  XCM_EAUTH = -4008,     /* authentication failed */
  XCM_ETLS = -4009,      /* TLS failure (handshake, certificate, record) */
  XCM_EZLIB = -4010,     /* compression failure */
  XCM_ETIMEDOUT = -4011, /* a deadline passed */
  XCM_EBUSY = -4012,     /* resource temporarily exhausted; retry later */
  XCM_ECONFIG = -4013,   /* invalid configuration */
  XCM_ETOOBIG = -4014,   /* output does not fit the buffer given */
  /* A transport took what it was given but can take no more for now: it
   * says when it can again (xcm_conn_writable). Not a failure. */
  XCM_EAGAIN = -4015
};

/* A static, human-readable description of err (an xcm_error or a libuv
 * code). Never NULL. */
XCM_EXTERN const char *xcm_strerror(int err);

/* The symbolic name of err, e.g. "XCM_ENOMEM" or "ECONNRESET". Never NULL. */
XCM_EXTERN const char *xcm_err_name(int err);

#ifdef __cplusplus
}
#endif
#endif
