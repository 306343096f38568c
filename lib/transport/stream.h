/* One byte stream, whatever carries it: TCP, with TLS (mbedTLS) and zlib
 * (XEP-0138) layered on when the XMPP stream negotiates them. The layers
 * above see plaintext in and plaintext out and never ask which it is, as
 * Redis's connection type does for TCP and TLS. Later transports (BOSH,
 * WebSocket, a gateway's own) plug in behind the same calls.
 *
 * Reading: bytes arrive through cb.read, in a buffer that is only lent
 * for the call. Writing: xcm__stream_write() copies into the stream's
 * output, which the context flushes before the loop next polls (see
 * core/ctx.h). A stream holds buffers only while it has bytes in
 * flight: an idle plain stream costs its struct and its uv_tcp_t (384
 * bytes on x86-64). An idle TLS stream adds mbedTLS's two record
 * buffers (~37 KiB in all with 2.28's fixed 16 KiB records), zlib adds
 * ~54 KiB (the peer's 32 KiB inflate window most of it), measured by
 * tests/test-stream.c.
 *
 * The process must ignore SIGPIPE, as any libuv program that writes to
 * sockets: a write to a reset connection is then an error code.
 *
 * Lifetime: xcm__stream_close() starts closing; cb.closed runs when the
 * handle is closed, and the stream's memory goes right after it returns.
 * Every other callback may call xcm__stream_close(). Once close or abort
 * has been called, only cb.closed runs.
 *
 * The callback table is not copied: it must outlive the stream (a static
 * const table, as every owner has). */
#ifndef XCM_TRANSPORT_STREAM_H
#define XCM_TRANSPORT_STREAM_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/ctx.h"
#include "xcm/transport.h"

typedef struct xcm_tls_config xcm_tls_config;

typedef struct xcm_stream_cb {
  /* Plaintext arrived (after TLS and inflate). data is lent for the
   * call. The callee may pause, write, start TLS/zlib, or close. */
  void (*read)(void *ud, const char *data, size_t len);
  /* The stream ended: err is UV_EOF for an orderly close by the peer,
   * another negative code (an xcm_error or libuv code) for a failure.
   * Reported once; the owner should then call xcm__stream_close(). After
   * UV_EOF the stream can still be written to (the peer only closed its
   * half): write the answer, then close. Records not yet sent can still
   * be taken back here (xcm__stream_unsent_records), after a failed
   * write too: the queue is dropped only once end returns. */
  void (*end)(void *ud, int err);
  /* The TLS handshake finished (err 0) or failed (then end follows
   * with the same code unless the owner closes). A connection lost
   * during the handshake is reported through end only. May be NULL. */
  void (*tls_done)(void *ud, int err);
  /* Output fell to the low-water mark after being above the high one.
   * May be NULL. */
  void (*drain)(void *ud);
  /* The handle is closed; the stream is freed once this returns. */
  void (*closed)(void *ud);
} xcm_stream_cb;

/* Every limit: 0 means none. A NULL limits pointer means all zero. */
typedef struct xcm_stream_limits {
  /* Output queued beyond this is refused: xcm__stream_write() returns
   * XCM_ELIMIT. 0: unlimited (for links whose writer bounds itself). */
  size_t max_out;
  /* Above high_water, xcm__stream_over() says so; drain fires when the
   * queue falls back to low_water. With high_water 0 there is no drain. */
  size_t high_water;
  size_t low_water;
  /* The most bytes one socket read may inflate to before the stream fails
   * with XCM_ELIMIT, so a zlib bomb is cut off early without the stream
   * allocating anything for it. It is counted per read, not per stanza
   * (the transport knows no stanzas): set it to at least the largest
   * stanza allowed, and let the XML reader's stanza limit catch a bomb
   * spread over many reads. */
  size_t max_inflate;
} xcm_stream_limits;

/* Adopt an accepted (or connected) TCP handle: the stream takes ownership
 * of tcp, which must have been allocated with the context's allocator and
 * initialised on its loop. Reading starts at once. On failure the handle
 * stays the caller's, to close. */
int xcm__stream_from_tcp(xcm_stream **out, xcm_ctx *ctx, uv_tcp_t *tcp,
                         const xcm_stream_cb *cb, void *ud,
                         const xcm_stream_limits *limits);

/* A stream over the caller's own transport (copied): output goes to
 * t->write, t->close runs when the stream is done, input comes through
 * xcm__stream_input(). peer names the other end for logs and limits. */
int xcm__stream_custom(xcm_stream **out, xcm_ctx *ctx, const xcm_transport *t,
                       const char *peer, const xcm_stream_cb *cb, void *ud,
                       const xcm_stream_limits *limits);
/* Bytes that arrived on a custom transport; not from inside a libxcm
 * callback. */
void xcm__stream_input(xcm_stream *s, const char *data, size_t len);
/* The custom transport can take bytes again after its write() answered
 * XCM_EAGAIN: what waited goes out with the next flush. */
void xcm__stream_writable(xcm_stream *s);
/* The custom transport's peer closed: cb.end(UV_EOF). */
void xcm__stream_input_end(xcm_stream *s);

/* Connect to addr; cb.end(UV_E...) reports a failure to connect, and
 * connected(ud) success (connected may be NULL). Writes made before then
 * are queued and sent once connected. On failure *out is NULL and no
 * callback runs. */
int xcm__stream_connect(xcm_stream **out, xcm_ctx *ctx,
                        const struct sockaddr *addr, const xcm_stream_cb *cb,
                        void (*connected)(void *ud), void *ud,
                        const xcm_stream_limits *limits);

/* Queue len bytes (copied). Returns 0, XCM_ELIMIT when the output bound
 * (bytes queued, and records kept: see below) would be passed (nothing
 * is queued then), XCM_ECLOSED, or XCM_ENOMEM. */
int xcm__stream_write(xcm_stream *s, const void *data, size_t len);

/* The same, and remember where these bytes start and how long they
 * are (a stanza the owner may have to take back). Fails as a whole: if
 * the record cannot be kept (XCM_ENOMEM), nothing is queued. Each record
 * still kept counts sizeof(a record), 16 bytes on 64-bit, against
 * max_out beside the bytes. An empty write keeps nothing. */
int xcm__stream_write_record(xcm_stream *s, const void *data, size_t len);

/* Call fn, oldest first, with the bytes of every record not yet handed
 * to the kernel at all: queued plaintext, including what libuv still
 * holds in a write under way on plain TCP; with TLS or zlib, only what
 * is not encoded yet. A record partly sent is not given. The bytes are
 * lent for the call; fn must not use s. Returns how many were given. */
typedef void (*xcm_stream_record_fn)(void *ud, const char *data, size_t len);
size_t xcm__stream_unsent_records(const xcm_stream *s, xcm_stream_record_fn fn,
                                  void *ud);

/* Bytes queued and not yet handed to the kernel. */
size_t xcm__stream_queued(const xcm_stream *s);
int xcm__stream_over(const xcm_stream *s);
/* Write system calls made so far (uv_try_write and uv_write), to show
 * that writes are batched. */
unsigned xcm__stream_write_calls(const xcm_stream *s);

/* Stop and resume delivering reads (flow control). Paused, the stream
 * reads nothing more from the socket; what was read already (the rest of
 * a read, bytes inside TLS or zlib) waits in the stream and is delivered
 * in order after resume, from the flusher. Both may be called from any
 * callback; pause takes effect before cb.read is called again. */
void xcm__stream_pause(xcm_stream *s);
void xcm__stream_resume(xcm_stream *s);

/* Begin TLS now: bytes already queued go out in clear first (the
 * <proceed/>), everything after is encrypted; writes made before the
 * handshake ends wait for it. For a client, hostname is sent by SNI and
 * checked against the server's certificate (unless the config says not
 * to: then it may be NULL; else NULL is XCM_EINVAL). Bytes the peer sent
 * after its last clear element (the start of its handshake) are passed in
 * early/early_len; they are copied. TLS cannot start twice, nor under
 * zlib (XCM_EINVAL). The stream holds a reference to cfg. */
int xcm__stream_start_tls(xcm_stream *s, xcm_tls_config *cfg, int is_server,
                          const char *hostname, const char *early,
                          size_t early_len);

/* Begin zlib both ways, as XEP-0138 asks after <compressed/>: bytes
 * already queued go out uncompressed first (the <compressed/>), so write
 * the new stream header after this call. early as above. With TLS on,
 * its handshake must be done (XCM_EINVAL otherwise). */
int xcm__stream_start_zlib(xcm_stream *s, const char *early, size_t early_len);

int xcm__stream_is_tls(const xcm_stream *s);
int xcm__stream_is_zlib(const xcm_stream *s);
/* The ALPN protocol agreed in the TLS handshake, or NULL. */
const char *xcm__stream_alpn(const xcm_stream *s);
/* The handshake failed because the server's certificate was refused
 * (and reported through xcm_tls_options.refused). */
int xcm__stream_tls_refused(const xcm_stream *s);

/* The peer's address as text (IPv4 or IPv6, no port; an IPv4-mapped IPv6
 * address is shown as IPv4); "" if unknown, e.g. after a reset. It is
 * computed on each call into a per-thread buffer, valid until the next
 * call, so that an idle stream does not carry 46 bytes for it. */
const char *xcm__stream_peer(const xcm_stream *s);
/* Name the peer otherwise from now on (the client a PROXY header named,
 * in place of the balancer): name is the owner's and must outlive the
 * stream; NULL goes back to the socket's address. */
void xcm__stream_set_peer(xcm_stream *s, const char *name);
/* Hand the stream to another owner (an HTTP connection upgraded to
 * WebSocket): later callbacks go to cb with ud. cb must outlive the
 * stream, as at creation. Call it from one of the old owner's callbacks
 * or outside any; input not yet delivered goes to the new owner. */
void xcm__stream_set_cb(xcm_stream *s, const xcm_stream_cb *cb, void *ud);

/* Change the high and low water marks (the new owner's, after a hand
 * over). Output already above the new high mark owes a drain. */
void xcm__stream_set_water(xcm_stream *s, size_t high_water, size_t low_water);

/* Send what is queued (and a TLS close_notify), then close. A close with
 * nothing queued closes at once. Safe to call twice. A peer that never
 * reads keeps a closing stream open: the owner's timeout should then
 * call xcm__stream_abort(). */
void xcm__stream_close(xcm_stream *s);

/* Close without sending what is queued, with a TCP reset. Safe after
 * xcm__stream_close(). */
void xcm__stream_abort(xcm_stream *s);

/* Close at once without sending what is queued here, but without a
 * reset: what the kernel already holds still reaches a peer that reads
 * (one that half-closed, say). */
void xcm__stream_drop(xcm_stream *s);

/* ---- moving a connection to another instance ----------------------
 *
 * A connection can leave this context for another one, on another loop
 * and perhaps another thread, mid-stream and with its TLS and zlib
 * state: xcmd's workers each run an instance, and a client resuming a
 * session (XEP-0198) may connect to a worker other than the one that
 * holds it. No byte is lost or repeated either way: what this side
 * wrote reaches the kernel before the connection leaves, and what it
 * read but did not use travels with it, to be read first on the other
 * side.
 *
 * The package (xcm_stream_moved) holds a dup() of the socket, the TLS
 * and zlib state and the input not yet used. It points at nothing of the
 * source's loop or context, so it may cross threads (hand it over with
 * the usual synchronisation: a mutex, a uv_async). It is allocated
 * through the source context's allocator and freed through the target's:
 * both contexts must use the same allocator (xcmd's workers use the C
 * library's). Its TLS state keeps a reference to the source's TLS
 * configuration until move_in replaces it; configurations may be
 * released on any thread. */
typedef struct xcm_stream_moved xcm_stream_moved;

/* done(ud, m, 0) hands over the package, which the callee then owns
 * (move it in, or free it). done(ud, NULL, err) says the move failed.
 * It runs from the loop (the flusher, or a write callback), never from
 * within move_out. */
typedef void (*xcm_stream_moved_fn)(void *ud, xcm_stream_moved *m, int err);

/* Move s out of this context. Only a TCP stream (XCM_EINVAL for a
 * custom transport, one still connecting or in its TLS handshake, and
 * while a move is under way), not once it ended or the owner closed it
 * (XCM_ECLOSED). On an error nothing changed.
 *
 * Reading stops at once: no cb.read follows the call, and called from
 * cb.read the rest of that read is kept for the package. unread (copied)
 * is plaintext the owner was given and did not use, the bytes after the
 * last element it handled: it is delivered first on the other side.
 *
 * Bytes written before the package is made, during this call's wait
 * too, are sent from here, encrypted and compressed as usual. Once the
 * kernel holds all of them, the package is made, s's handle is closed
 * without a word to the peer (no FIN, no close_notify, no reset: the
 * socket lives on in the package's descriptor), done(ud, m, 0) runs and
 * then, as for any close, cb.closed.
 *
 * The wait ends early if the connection fails (a write meets a reset):
 * then done(ud, NULL, err), then cb.end(err) unless the owner closed the
 * stream in done, and the stream ends as usual. A peer that never reads
 * keeps the move waiting: the owner's timeout may close or abort the
 * stream, which cancels the move without calling done (as with any
 * close, only cb.closed runs after it). */
int xcm__stream_move_out(xcm_stream *s, const char *unread, size_t unread_len,
                         xcm_stream_moved_fn done, void *ud);

/* Adopt a moved connection in ctx, with callbacks and limits as for
 * xcm__stream_from_tcp. Takes m in every case: on failure it is freed and
 * its socket closed (the peer sees the connection end). tls is this
 * instance's configuration for the listener the connection came
 * through; it is needed (XCM_EINVAL otherwise) when the connection has
 * TLS, and the stream takes a reference on it; without TLS it is
 * ignored.
 *
 * Writing works at once. What the package carries (the unread bytes, then
 * the input not yet through TLS or zlib) is delivered through cb.read
 * from the flusher, never from within this call; reading from the socket
 * begins after it. The owner may pause the stream first. */
int xcm__stream_move_in(xcm_stream **out, xcm_ctx *ctx, xcm_stream_moved *m,
                        xcm_tls_config *tls, const xcm_stream_cb *cb, void *ud,
                        const xcm_stream_limits *limits);

/* Discard a package: its socket is closed (the peer sees the connection
 * end) and its state freed. Any thread; NULL is ignored. */
void xcm__stream_moved_free(xcm_stream_moved *m);

/* Input bytes the package carries, the unread ones included (not what
 * is held inside TLS or zlib), for logs. */
size_t xcm__stream_moved_input(const xcm_stream_moved *m);

/* Bytes of memory this stream holds right now, for the budget tests. */
size_t xcm__stream_footprint(const xcm_stream *s);

/* What a client saw of a server certificate it refused. */
typedef struct xcm_tls_refusal {
  const char *peer;         /* the host name asked for */
  unsigned char sha256[32]; /* of the leaf certificate's DER */
  const char *subject;      /* distinguished names, as text */
  const char *issuer;
  const char *valid_from; /* "YYYY-MM-DD hh:mm:ss" (UTC) */
  const char *valid_to;
  int self_signed;          /* issued by itself */
  uint32_t flags;           /* MBEDTLS_X509_BADCERT_*; 0 for a pin mismatch */
  const char *why;          /* the reasons in words, "; "-separated */
  const unsigned char *pin; /* the pinned SHA-256 it did not match, or NULL */
} xcm_tls_refusal;

/* "sha256:" and 64 hex digits, optionally with ':' between byte pairs,
 * in either case: 0 with the 32 bytes in out, or XCM_EINVAL. */
int xcm__tls_parse_fingerprint(const char *s, unsigned char out[32]);
/* The canonical spelling: "sha256:AB:CD:..." (uppercase, colons), as
 * openssl and keytool print it; buf holds at least 103 bytes. */
void xcm__tls_format_fingerprint(const unsigned char sha[32], char *buf,
                                 size_t len);

/* TLS configuration, shared by many streams. */
typedef struct xcm_tls_options {
  const char *cert_file; /* PEM chain (server); optional for a client */
  const char *key_file;  /* PEM key */
  const char *ca_file;   /* client: trust anchors for the server's cert;
                          * NULL with verify: the system's CA bundle */
  int verify;            /* client: check the chain and host name */
  /* client: the SHA-256 of the one leaf certificate (its DER) trusted,
   * 32 bytes, or NULL. It replaces verify: a match is trusted whatever
   * its issuer, host name or dates; anything else is refused. */
  const unsigned char *pin_sha256;
  /* client: called when the server's certificate is refused (not
   * trusted, or not the pinned one), in place of the usual warning. */
  void (*refused)(void *ud, const struct xcm_tls_refusal *r);
  void *refused_ud;
  /* ALPN protocol: a client offers it (NULL: none); a server accepts
   * only it (NULL: "xmpp-client", XEP-0368) from clients that offer
   * any. */
  const char *alpn;
} xcm_tls_options;

/* errbuf receives a message naming the file and the problem (expired,
 * not yet valid, key does not match, unreadable). */
int xcm__tls_config_new(xcm_tls_config **out, xcm_ctx *ctx, int is_server,
                        const xcm_tls_options *opt, char *errbuf,
                        size_t errlen);
/* Add another certificate chosen by SNI (server). */
int xcm__tls_config_add_cert(xcm_tls_config *cfg, const char *cert_file,
                             const char *key_file, char *errbuf, size_t errlen);
/* Configs are reference-counted (atomically): streams hold one while
 * alive, so a reload can swap in a new one without touching live
 * sessions. A config allocates and logs through its context, for itself
 * and its streams; it frees through the context's allocator, which it
 * keeps, so that the last reference may go on any thread, even after
 * the context closed (a moved connection's package holds its source's
 * configuration until move_in replaces it). */
void xcm__tls_config_unref(xcm_tls_config *cfg);

#endif
