/* One client's XMPP stream, terminated at the CM: header checks, stream
 * features, STARTTLS, compression, the restarts, the closed list of what a
 * client may send, limits and timeouts, and every stream error. Stanzas
 * the server must see (SASL, iq, message, presence) go to the owner, who
 * routes them; what the server sends back comes in through
 * xcm__client_deliver(), which also watches, while the client logs in,
 * for the answers to its own requests that authenticate the stream (SASL
 * success, legacy auth result) and bind it (client/request.h).
 *
 * The client knows nothing of the pool: the owner (session/) joins the
 * two. */
#ifndef XCM_CLIENT_CLIENT_H
#define XCM_CLIENT_CLIENT_H

#include <stdint.h>

#include "core/ctx.h"
#include "transport/proxy.h"
#include "transport/stream.h"
#include "xcm/condition.h"
#include "xcm/policy.h"
#include "session/counters.h"
#include "session/csi.h"
#include "xcm/route.h"
#include "xcm/transport.h"
#include "xml/reader.h"

typedef struct xcm_client xcm_client;
typedef struct xcm_sm xcm_sm;                     /* session/sm.h */
typedef struct xcm_client_moved xcm_client_moved; /* below */

/* Shared by every client of a listener; owned by the instance. Every
 * field holds its value (options.c has the defaults: xcm__client_cfg_from
 * and _defaults); XCM__OFF switches a timeout, rate or limit off where
 * the API allows it. */
typedef struct xcm_client_cfg {
  const char *domain;
  size_t max_stanza_preauth;
  size_t max_stanza;
  unsigned max_depth;
  unsigned header_timeout_ms; /* to send the stream header */
  unsigned auth_timeout_ms;   /* to authenticate */
  unsigned idle_timeout_ms;   /* without a byte (whitespace counts) */
  size_t max_out;             /* queued for a client that does not read */
  unsigned rate;              /* stanzas per second, sustained */
  unsigned burst;             /* ... and in a burst */
  unsigned rate_bytes;        /* bytes per second, sustained */
  unsigned burst_bytes;       /* ... and in a burst */
  int compression;            /* offer zlib (after TLS) when the server does */
  xcm_tls_config *tls;        /* NULL: no STARTTLS here */
  int direct_tls;             /* XEP-0368: TLS from the first byte */
  int proxy_protocol;         /* a PROXY header first (transport/proxy.h) */
  /* ... taken only from these sources: a peer elsewhere is closed at
   * accept (session.c). */
  xcm_proxy_net trusted[XCM_PROXY_MAX_TRUSTED];
  unsigned ntrusted;
  /* While no upstream link is up, a new client waits this long for one
   * before remote-connection-failed; 0 refuses at once. */
  unsigned upstream_wait_ms;
  /* The server's current policy, or NULL while no link is up. */
  const xcm_policy *(*policy)(void *ud);
  void *policy_ud;
  /* Where timeouts and shaped reads are counted; may be NULL. */
  xcm_counters *counters;
  /* XEP-0198 acknowledgements (session/sm.h): <sm/> offered after
   * authentication, <enable/> taken after bind. */
  int sm;
  unsigned sm_max_unacked;     /* stanzas unacknowledged; XCM__OFF: none */
  size_t sm_max_unacked_bytes; /* ... their bytes; XCM__OFF: none */
  /* Ask for an ack (<r/>) after this many stanzas or bytes sent since
   * the last request, or this long after the last one sent when more
   * followed no request; XCM__OFF: never for that reason. */
  unsigned sm_ack_every;
  unsigned sm_ack_every_bytes;
  unsigned sm_ack_quiet_ms;
  /* Both counters start here instead of 0: for tests of the wrap. */
  uint32_t sm_start;
  /* XEP-0198 resumption: <enable resume/> is granted with this max (ms;
   * sent in seconds), and a dropped connection's session waits that
   * long for a <resume/>. 0: no resumption. */
  unsigned sm_resume_ms;
  /* A client that leaves an <r/> unanswered this long is taken for
   * gone: its connection drops (and a resumable session waits).
   * XCM__OFF: never. */
  unsigned sm_ack_timeout_ms;
  /* The listener's number in its instance: a connection moved to another
   * instance to resume a session there takes that instance's listener
   * of the same number (session/group.h). */
  unsigned listener;
  /* XEP-0352 client state indication (session/csi.h). */
  xcm_csi_cfg csi;
} xcm_client_cfg;

/* Why a client went away. */
typedef struct xcm_client_end {
  xcm_cond cond; /* the stream error sent, or NONE for an orderly close */
  int err;       /* transport error (UV_EOF for a peer's close), or 0 */
  const char *text;
} xcm_client_end;

typedef struct xcm_client_cb {
  /* The first stream header was accepted: sid is the stream id given to
   * the client. Return 0, or an error to refuse the client
   * (remote-connection-failed). */
  int (*open)(void *ud, const char *sid, const char *address);
  /* A stanza for the server, with the namespaces of the client's stream
   * header (for the route framing). Return 0 or an error (the client is
   * failed with policy-violation for XCM_ELIMIT). */
  int (*stanza)(void *ud, const xcm_xml_stanza *s, const xcm_xml_nsdecl *decls,
                size_t ndecls);
  /* The stream is now authenticated (SASL success or legacy auth). */
  void (*authenticated)(void *ud);
  /* The server bound a resource: the full JID (len bytes, NUL-terminated,
   * the text of the bind result's <jid/>, unescaped). May be NULL. */
  void (*bound)(void *ud, const char *jid, size_t len);
  /* TLS is established. May be NULL. */
  void (*secured)(void *ud);
  /* A message the client will not receive (it stopped reading): return
   * it to the server. May be NULL. */
  void (*undelivered)(void *ud, const char *msg, size_t len);
  /* The client is gone; the owner must not use c after this returns. */
  void (*closed)(void *ud, const xcm_client_end *end);
  /* On a proxy_protocol listener, the PROXY header named the client's
   * address (NULL: it kept the socket's, a LOCAL or UNKNOWN header).
   * Return 0, or an error to refuse the client (closed at once, without a
   * word: it has not spoken XMPP yet). May be NULL. */
  int (*proxied)(void *ud, const char *address);
  /* A stanza delivered with acknowledgements on that the client never
   * acknowledged, its bytes as the server routed them: called for each,
   * oldest first, exactly once, when the client ends (or from inside a
   * stream error it is ended with). The owner returns it to the server
   * (a message as <failed/>, an iq get or set answered with an error).
   * May be NULL. */
  void (*unacked)(void *ud, const char *data, size_t len);
  /* XEP-0198 resumption (session/session.c holds the sessions that wait).
   * May all be NULL: no resumption.
   *
   * <enable resume='true'/>: make the session resumable and write its
   * resumption id, NUL-terminated, into id (XCM_RESUME_ID_SIZE bytes).
   * 0, or an error: the client is then enabled without resumption. */
  int (*resumable)(void *ud, char *id);
  /* The connection dropped (it failed, was cut without
   * </stream:stream>, stopped reading or answering acks) while the
   * session is resumable: take sm (ownership moves; what it holds is
   * unacknowledged) and keep the session waiting. Returns 0 when taken;
   * otherwise the client returns sm's stanzas as at any end. Called just
   * before closed(). */
  int (*detach)(void *ud, xcm_sm *sm);
  /* <resume previd h/> from this client, authenticated as authid (a bare
   * JID, client/authid.h; NULL when unknown). Return 0 once
   * xcm__client_resumed() was called on c (from inside this call, or
   * later for a session on another instance: the client reads nothing
   * meanwhile); XCM_ENOTFOUND for an id that is not live or not
   * authid's (the client answers <failed/> with item-not-found and may
   * bind); XCM_EPROTO when h acknowledges more than the session sent,
   * *sent set to what it sent (a stream error); XCM_EAGAIN when the
   * session is on another instance and the client can move there
   * (xcm__client_movable): the client reads nothing more, lifts its
   * connection off the loop and hands it over through moved(). */
  int (*resume)(void *ud, const char *previd, uint32_t h, const char *authid,
                uint32_t *sent);
  /* The client's connection is lifted off the loop, to resume a session
   * on another instance: m is the owner's now (xcm__client_move_in
   * takes it there, xcm__client_moved_free drops it). The client is
   * over: closed() does not follow, and c must not be used after this
   * returns. May be NULL only if resume never says XCM_EAGAIN. */
  void (*moved)(void *ud, xcm_client_moved *m);
} xcm_client_cb;

/* Room for a resumption id and its NUL: 128 random bits
 * (xcm__random_token). A longer previd names no session of ours. */
#define XCM_RESUME_ID_SIZE XCM__TOKEN_SIZE

/* Take over an accepted TCP handle (allocated with ctx's allocator). On
 * failure the handle is closed and freed all the same. */
int xcm__client_new(xcm_client **out, xcm_ctx *ctx, const xcm_client_cfg *cfg,
                    uv_tcp_t *tcp, const xcm_client_cb *cb, void *ud);

/* The same over the caller's own transport (copied); peer names the
 * other end. */
int xcm__client_new_custom(xcm_client **out, xcm_ctx *ctx,
                           const xcm_client_cfg *cfg, const xcm_transport *t,
                           const char *peer, const xcm_client_cb *cb, void *ud);
/* A transport that carries whole messages, each one element (RFC 7395
 * WebSocket, and BOSH: see client/framing.h): the web layers (lib/web/)
 * implement it and attaches a client with xcm__client_new_msg(). The
 * table is copied; zero it before filling it in, so that optional
 * fields added later are NULL.
 *
 * Calls into the transport may come from inside any xcm__client_* call
 * (xcm__client_msg_input included) and from the loop. */
typedef struct xcm_msg_transport {
  /* One message for the peer: one complete element, len bytes, lent for
   * the call (copy it). Return 0; XCM_EAGAIN when it was taken but the
   * transport is over its high water: the client then sends nothing
   * more until xcm__client_writable(); or a negative error: the client
   * ends (its messages go back to the server) and close() follows. */
  int (*send)(void *ud, const char *data, size_t len);
  /* Stop (paused 1) or go on (0) delivering input: the upstream asked
   * the client to wait, or the client is over its rate. A message
   * delivered while paused is still taken. May be NULL. */
  void (*pause)(void *ud, int paused);
  /* The client is done: no more calls into the transport, and the
   * transport must not call in with this client any more (it is freed
   * once the loop turns). failed: the stream ended with an error (the
   * error and <close/> were sent already, unless the transport itself
   * ended), or without a word (the client was refused before it spoke):
   * the transport closes its connection with an error status; 0: an
   * orderly close. Called exactly once. */
  void (*close)(void *ud, int failed);
  void *ud;
  /* Already encrypted (WSS, HTTPS): counts as TLS for the policy's
   * `required`, and STARTTLS is not offered. */
  int secure;
  /* XCM_TRANSPORT_WEBSOCKET or XCM_TRANSPORT_BOSH, for the per-transport
   * counts (xcm_stats.sessions_*_now); any other value counts as
   * custom. */
  xcm_transport_kind kind;
  /* The client drops a reader too slow for max_out: give back now,
   * through xcm__client_msg_unsent() and oldest first, every message
   * sent that has not reached the peer's kernel, and send nothing
   * queued any more (close() follows). May be NULL: then what the
   * transport queued is lost with the connection. */
  void (*take_unsent)(void *ud);
} xcm_msg_transport;

/* A client over a message transport (copied), framed as RFC 7395 says.
 * peer names the other end (its address, for logs and limits). On
 * failure close() is not called and *out is NULL. On success *out is
 * valid until t->close() has been called. */
int xcm__client_new_msg(xcm_client **out, xcm_ctx *ctx,
                        const xcm_client_cfg *cfg, const xcm_msg_transport *t,
                        const char *peer, const xcm_client_cb *cb, void *ud);
/* One whole message from the peer (data lent for the call). Not from
 * inside a call into the transport. */
void xcm__client_msg_input(xcm_client *c, const char *data, size_t len);
/* The transport ended (err: UV_EOF for the peer's orderly close, or a
 * negative error): what the client did not get goes back to the server,
 * and close() follows (from inside this call). */
void xcm__client_msg_end(xcm_client *c, int err);
/* A unit sent earlier (data lent for the call) that the transport took
 * (send() said 0 or XCM_EAGAIN) and will never deliver: what a
 * WebSocket had queued and never wrote, a BOSH session that ends before
 * a request comes to carry it. A message goes back to the server
 * (<failed/>) as the ones the client keeps do; anything else is
 * dropped. Call it oldest first, before xcm__client_msg_end() (what the
 * transport queued is older than what the client keeps), or from inside
 * take_unsent(); not from inside another call into the transport. */
void xcm__client_msg_unsent(xcm_client *c, const char *data, size_t len);
/* The transport can take messages again after XCM_EAGAIN: the client
 * sends what it kept. */
void xcm__client_writable(xcm_client *c);
/* Messages a message client keeps while its transport is full (0 for
 * any other): for tests and statistics. */
size_t xcm__client_kept(const xcm_client *c);

/* The client's stream, for feeding a custom transport's input. */
xcm_stream *xcm__client_stream(const xcm_client *c);

/* Write what the server routed to this client. */
void xcm__client_deliver(xcm_client *c, const xcm_route *r);

/* End the stream with a stream error (and </stream:stream>). text may be
 * NULL; it must be static. */
void xcm__client_fail(xcm_client *c, xcm_cond cond, const char *text);

/* The server ended the session: error holds the <stream:error> bytes to
 * write first, or NULL when one was already routed (Openfire 4.1.6). */
void xcm__client_server_closed(xcm_client *c, const char *error, size_t len);

/* Flow control from the upstream side. */
void xcm__client_pause(xcm_client *c);
void xcm__client_resume(xcm_client *c);

const char *xcm__client_sid(const xcm_client *c);
int xcm__client_authenticated(const xcm_client *c);
int xcm__client_secured(const xcm_client *c);
int xcm__client_compressed(const xcm_client *c);
/* The peer's address ("" once the connection is gone). */
const char *xcm__client_peer(const xcm_client *c);
/* Bytes this client holds now, its stream included. */
size_t xcm__client_footprint(const xcm_client *c);

/* An upstream link may be up again: a client waiting for one goes on. */
void xcm__client_retry(xcm_client *c);

/* Stream management (XEP-0198) for tests: whether it is on, and the
 * counters (handled from the client, sent to it) and stanzas not yet
 * acknowledged. 0 when it is off. */
int xcm__client_sm(const xcm_client *c, uint32_t *h_in, uint32_t *h_out,
                   uint32_t *unacked);

/* Resumption (see xcm_client_cb.resume): the client takes over sm
 * (ownership moves, and h from the <resume/> is applied already) for the
 * session of stream id sid, answers <resumed previd/> and sends again,
 * oldest first, everything sm holds. Returns 0, or an error when the
 * client ended meanwhile (sm is then returned as at any end). */
int xcm__client_resumed(xcm_client *c, xcm_sm *sm, const char *sid,
                        const char *previd);
/* Take c's acknowledgement state away (NULL when it has none): for a
 * session that another connection resumes while c still holds it. The
 * caller owns it. */
xcm_sm *xcm__client_release_sm(xcm_client *c);
/* Hand c to another owner (cb and ud as for xcm__client_new): the
 * session that a resume moved it into, or a table that ignores a
 * connection being ended. */
void xcm__client_set_owner(xcm_client *c, const xcm_client_cb *cb, void *ud);

/* A client lifted off one instance's loop with its connection (socket,
 * TLS, zlib, the bytes it read past <resume/>) and its stream's state,
 * on its way to resume a session on another (session/group.h). Plain
 * memory, tied to no loop: it may cross threads. */
/* Whether c's connection can move to another instance (a socket of its
 * own: not a WebSocket, BOSH or custom transport). */
int xcm__client_movable(const xcm_client *c);
/* The <resume/> m carries: previd, h, and the user the connection
 * authenticated as (NULL: unknown); valid while m is. */
const char *xcm__client_moved_previd(const xcm_client_moved *m);
uint32_t xcm__client_moved_h(const xcm_client_moved *m);
const char *xcm__client_moved_authid(const xcm_client_moved *m);
unsigned xcm__client_moved_listener(const xcm_client_moved *m);
/* Build a client on ctx's loop from m (taken, on failure too), under
 * cfg (the same listener's), owned by cb/ud, still waiting for its
 * resume: the owner completes it with xcm__client_resumed, or ends it
 * (xcm__client_fail). What the client sent after <resume/> is read only
 * after that. */
int xcm__client_move_in(xcm_client **out, xcm_ctx *ctx,
                        const xcm_client_cfg *cfg, xcm_client_moved *m,
                        const xcm_client_cb *cb, void *ud);
void xcm__client_moved_free(xcm_client_moved *m);

/* Give the parser back to the pool if the client sits between stanzas. */
void xcm__client_shrink(xcm_client *c);

#endif
