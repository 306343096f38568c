/* A bare TCP client for tests: connects to a loopback port, sends
 * bytes as given and keeps everything it receives, so a test can speak
 * XMPP by hand, misbehave at will, and wait for what it expects. */
#ifndef XCM_TESTS_RAWCLIENT_H
#define XCM_TESTS_RAWCLIENT_H

#include <stddef.h>
#include <uv.h>

#include "util/buf.h"

/* A client's stream header to example.test, and SASL PLAIN as the
 * testkit's alice and bob (each one's password is the name). */
#define XCM_RAW_HDR                                                            \
  "<?xml version='1.0'?><stream:stream "                                       \
  "xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client' "     \
  "to='example.test' version='1.0'>"
#define XCM_RAW_AUTH_ALICE                                                     \
  "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "                            \
  "mechanism='PLAIN'>AGFsaWNlAGFsaWNl</auth>"
#define XCM_RAW_AUTH_BOB                                                       \
  "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "                            \
  "mechanism='PLAIN'>AGJvYgBib2I=</auth>"

typedef struct xcm_raw xcm_raw;
struct xcm_raw {
  uv_loop_t *loop;
  uv_tcp_t tcp;
  uv_connect_t conn;
  xcm_buf in;    /* everything received, NUL-terminated */
  int connected; /* 0 not yet, 1 connected, -1 refused */
  int reading;   /* read once connected */
  int eof;       /* the other end closed, or the connection failed */
  int closed;    /* our handle is closed */
  /* After each read (eof 0, bytes appended to in) and at the end of the
   * stream (eof 1). May be NULL. */
  void (*on_data)(xcm_raw *r, int eof);
  void *ud; /* the test's */
};

/* Connect r (any contents: it is cleared) to host (an IPv4 or IPv6
 * address) and port on loop and wait up to 3 s: 1 when connected. With reading
 * 0 nothing is read (a client that does not read). Set on_data and ud after
 * this. r must not move while open. */
int xcm_raw_open(xcm_raw *r, uv_loop_t *loop, const char *host, int port,
                 int reading);
/* The same from the local address source (e.g. 127.0.0.2: Linux routes
 * all of 127/8 to lo), or from any with NULL. */
int xcm_raw_open_from(xcm_raw *r, uv_loop_t *loop, const char *source,
                      const char *host, int port, int reading);
/* Stop or start reading (a client that stops reading, then reads again). */
void xcm_raw_set_reading(xcm_raw *r, int on);
/* Queue bytes (copied). */
void xcm_raw_send(xcm_raw *r, const char *data, size_t len);
void xcm_raw_sends(xcm_raw *r, const char *s);
/* Run the loop until needle has been received (anywhere in in) or ms
 * pass: whether it was. */
int xcm_raw_wait(xcm_raw *r, const char *needle, unsigned ms);
/* For xcm_test_run_until: the stream ended. ud is the xcm_raw. */
int xcm_raw_is_eof(void *ud);
/* Close and wait for the handle; frees in. */
void xcm_raw_free(xcm_raw *r);
/* Drop the connection with a reset (no FIN) and wait for the handle; in
 * stays until xcm_raw_free. */
void xcm_raw_reset(xcm_raw *r);
/* Header, then auth (a SASL element), the restart: 1 when the features
 * after it (bind) came, ready to bind. in is cleared after the SASL
 * success. */
int xcm_raw_sasl(xcm_raw *r, const char *header, const char *auth);
/* Log in: header, then auth (a SASL element), the restart, bind of
 * resource, a session and initial presence; 1 when the session result
 * came. in is cleared after the SASL success. */
int xcm_raw_login(xcm_raw *r, const char *header, const char *auth,
                  const char *resource);
/* A logged-in alice@example.test/good routes a message to herself: 1
 * when "still n" came back. */
int xcm_raw_still_works(xcm_raw *good, int n);

/* A TLS 1.2 ClientHello (ECDHE and RSA suites, P-256, SHA-256
 * signatures): the server answers with its hello and certificate and
 * waits for the client's key exchange. */
extern const unsigned char xcm_raw_client_hello[];
extern const size_t xcm_raw_client_hello_len;

#endif
