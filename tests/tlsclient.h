/* A TLS client for tests, on the library's own stream (transport/
 * stream.h): it keeps everything it reads, NUL-terminated, and notes the
 * handshake's outcome, the end and the close. test-http and test-bosh
 * speak HTTPS through it. */
#ifndef XCM_TESTS_TLSCLIENT_H
#define XCM_TESTS_TLSCLIENT_H

#include "transport/stream.h"
#include "util/buf.h"

typedef struct tls_client {
  xcm_stream *s;
  xcm_buf in;
  int ended, closed, done; /* done: 1 handshake ok, -1 failed */
} tls_client;

/* The stream callbacks, ud the tls_client. */
extern const xcm_stream_cb tc_cb;

/* For xcm_test_run_until: needle was read, or the stream ended. */
typedef struct tc_wait {
  tls_client *t;
  const char *needle;
} tc_wait;
int tc_has(void *ud);

#endif
