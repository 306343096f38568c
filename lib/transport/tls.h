/* TLS for the stream layer, on mbedTLS 2.28.
 *
 * A configuration (declared in stream.h) holds what streams share: the
 * mbedtls_ssl_config, the certificates and keys, the trust anchors and
 * the random generator. It is reference-counted so that a reload can swap
 * it while live streams keep the old one.
 *
 * Per stream, an xcm_tls holds the mbedtls_ssl_context. It does no I/O of
 * its own: the stream gives it two functions, one that appends records
 * to the stream's output and one that hands over bytes of the socket read
 * being processed. mbedTLS keeps an input and an output record buffer of
 * about 16.7 KiB each per connection (fixed at build time in 2.28), which
 * is most of what a TLS stream costs; the handshake state is freed once
 * the handshake ends. */
#ifndef XCM_TRANSPORT_TLS_H
#define XCM_TRANSPORT_TLS_H

#include <stddef.h>

#include "transport/stream.h"

typedef struct xcm_tls xcm_tls;

/* send: take len bytes of records; 0, or a negative code to fail the
 * connection. recv: copy up to len bytes of input into buf; the count, or
 * 0 when nothing is available now. */
typedef int (*xcm_tls_send_fn)(void *ud, const char *buf, size_t len);
typedef size_t (*xcm_tls_recv_fn)(void *ud, char *buf, size_t len);

/* As xcm__tls_config_new (stream.h), with the validity dates of cert_file
 * checked only when check_dates is set: tests need a server presenting an
 * expired certificate to see a client refuse it. */
int xcm__tls_config_load(xcm_tls_config **out, xcm_ctx *ctx, int is_server,
                         const xcm_tls_options *opt, int check_dates,
                         char *errbuf, size_t errlen);

/* hostname: for a client, the name to send by SNI and check the server's
 * certificate against; required when the configuration verifies. */
int xcm__tls_new(xcm_tls **out, xcm_tls_config *cfg, int is_server,
                 const char *hostname, xcm_tls_send_fn send,
                 xcm_tls_recv_fn recv, void *ud);
/* Frees through the configuration's allocator, so on any thread. */
void xcm__tls_free(xcm_tls *t);

/* Hand the connection to another owner (a stream moved to another
 * instance): send and recv are called with ud from now on. */
void xcm__tls_set_io(xcm_tls *t, xcm_tls_send_fn send, xcm_tls_recv_fn recv,
                     void *ud);

/* Use cfg from now on: a reference is taken on it and the old one's is
 * dropped (perhaps the last: configurations may be released on any
 * thread). Only after the handshake, and for a configuration of the same
 * role: XCM_EINVAL otherwise. Used by a moved stream, whose new instance
 * has its own configuration for the same listener: from then on the
 * connection draws its random numbers from that one's generator, on
 * that instance's thread. */
int xcm__tls_set_config(xcm_tls *t, xcm_tls_config *cfg);

/* Advance the handshake with the input available: 0 when it is done,
 * UV_EAGAIN while it needs more, XCM_ETLS when it failed (logged, naming
 * peer; any alert is already sent through send). */
int xcm__tls_handshake(xcm_tls *t, const char *peer);
int xcm__tls_handshake_done(const xcm_tls *t);

/* Decrypt into buf: bytes (> 0), UV_EAGAIN for more input, UV_EOF on the
 * peer's close_notify, XCM_ETLS on a bad record (logged). */
int xcm__tls_read(xcm_tls *t, char *buf, size_t len, const char *peer);

/* Encrypt all of data into records through send: 0, XCM_ENOMEM or
 * XCM_ETLS. */
int xcm__tls_write(xcm_tls *t, const char *data, size_t len);

/* Queue a close_notify alert through send. */
int xcm__tls_close_notify(xcm_tls *t);

/* Decrypted bytes, or a partial record, held inside mbedTLS: a paused
 * stream must come back for them on resume. */
int xcm__tls_has_pending(const xcm_tls *t);

/* Whether the handshake failed on the peer's certificate, reported
 * through the configuration's refused function. */
int xcm__tls_refused(const xcm_tls *t);

/* The ALPN protocol agreed on, or NULL. */
const char *xcm__tls_alpn(const xcm_tls *t);

/* Heap bytes this connection's TLS state holds, as far as mbedTLS's
 * structures show them (the record buffers, the session and the keys). */
size_t xcm__tls_footprint(const xcm_tls *t);

#endif
