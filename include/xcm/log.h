/* Logging: libxcm never writes to stderr or syslog itself; it hands one
 * line at a time to the caller's function. Secrets (the shared secret,
 * SASL payloads) and message bodies are never logged. */
#ifndef XCM_LOG_H
#define XCM_LOG_H

#ifdef __cplusplus
extern "C" {
#endif

enum xcm_log_level {
  XCM_LOG_ERROR = 1,
  XCM_LOG_WARN = 2,
  XCM_LOG_INFO = 3,
  XCM_LOG_DEBUG = 4
};

/* msg is one line without a newline, valid during the call. */
typedef void (*xcm_log_fn)(void *ud, int level, const char *msg);

#ifdef __cplusplus
}
#endif
#endif
