/* The parts of a client (lib/client/): the struct they share and the
 * calls they make of each other. client.c is the stream (header,
 * features, what a client may send, limits, timers, both framings);
 * xep0198.c is stream management (acknowledgements and resumption);
 * move.c lifts a client off its instance's loop to resume a session on
 * another (session/group.h). Nothing outside lib/client/ includes this. */
#ifndef XCM_CLIENT_CLIENT_INT_H
#define XCM_CLIENT_CLIENT_INT_H

#include <stdint.h>

#include "client/client.h"
#include "client/request.h"
#include "session/csi.h"
#include "util/buf.h"

/* Parsers kept between reads by clients still logging in, at most (see
 * on_read): about 15 KB each. A login takes about six reads; a client
 * that is not bound after LOGIN_READS is treated as logged in. */
enum { WARM_MAX = 128, LOGIN_READS = 8 };

enum {
  F_HEADER_SENT = 1u << 0, /* our header for the current stream */
  F_SECURED = 1u << 1,
  F_COMPRESSED = 1u << 2,
  F_AUTHED = 1u << 3,
  F_V1 = 1u << 4,        /* the client's stream has version 1.0 */
  F_OPENED = 1u << 5,    /* the owner accepted the session */
  F_CLOSING = 1u << 6,   /* no more input: an end is under way */
  F_NOTIFIED = 1u << 7,  /* the owner heard of the end */
  F_PAUSED = 1u << 8,    /* the upstream asked us to stop reading */
  F_ENDED = 1u << 9,     /* the stream ended (EOF or error) */
  F_WAITING = 1u << 10,  /* header read; waiting for an upstream link */
  F_BOUND = 1u << 11,    /* a resource was bound (or legacy auth passed) */
  F_FEEDING = 1u << 12,  /* inside the reader: its parser is in use */
  F_SHAPED = 1u << 13,   /* over its rate: reads paused until repaid */
  F_ERROR = 1u << 14,    /* it ends with a stream error */
  F_MSG_OPEN = 1u << 15, /* messages: the client's <open/> for this stream */
  /* The connection dropped rather than ended: it failed, was cut without
   * </stream:stream>, stopped reading or answering acks. A resumable
   * session waits for the client (XEP-0198). */
  F_DROPPED = 1u << 16,
  /* The SASL exchange that authenticated the stream names nobody we can
   * trust (two <auth/> at once): the client cannot resume. */
  F_NO_AUTHID = 1u << 17,
  F_RESUMING = 1u << 18, /* <resume/> asked; the owner's answer pending */
  F_TCP = 1u << 19,      /* over a socket of its own (it can move) */
  F_MOVED_IN = 1u << 20  /* the header fed to the reader is our own */
};

/* The side of a client over a message transport (client/framing.h):
 * the transport's table, what the client keeps while the transport is
 * full, and the peer's name. A byte client has none. */
typedef struct msg_side {
  xcm_msg_transport t;
  /* Messages kept while the transport is full, oldest first from head:
   * each a kept_hdr and its bytes. Freed when empty. */
  xcm_buf q;
  size_t head;
  size_t kept;          /* what counts against max_out */
  unsigned blocked : 1; /* send() said XCM_EAGAIN; no writable() yet */
  unsigned closed : 1;  /* close() has run */
  char peer[];
} msg_side;

typedef struct kept_hdr {
  size_t len;
  int record;
} kept_hdr;

enum action { A_NONE, A_TLS, A_ZLIB, A_MOVE };

struct xcm_client {
  xcm_ctx *ctx;
  const xcm_client_cfg *cfg;
  xcm_stream *stream; /* NULL once gone, and for a message client */
  msg_side *msg;      /* a message client's side, else NULL */
  xcm_xml_reader *reader;
  const xcm_client_cb *cb;
  void *ud;
  uv_timer_t timer;
  uint64_t created;
  uint64_t last_active;
  uint64_t bucket_at;
  int64_t tokens;      /* thousandths of a stanza; below 0, in debt */
  int64_t byte_tokens; /* thousandths of a byte; below 0, in debt */
  unsigned flags;
  unsigned reads; /* counted up to LOGIN_READS */
  unsigned char action;
  unsigned char handles; /* stream and timer still open */
  xcm_requests *req;     /* requests whose answers we act on; NULL: none */
  xcm_proxy *proxy;      /* reading the PROXY header; NULL: none (any more) */
  char *peer;            /* the address a PROXY header named, or NULL */
  xcm_sm *sm;            /* XEP-0198 acknowledgements once enabled, else NULL */
  char *authid;          /* who SASL names, until bound (client/authid.h) */
  xcm_client_moved *moving;  /* a <resume/> to take to another instance */
  xcm_csi *csi;              /* XEP-0352 state while inactive, else NULL */
  char sid[XCM__TOKEN_SIZE]; /* 128 random bits (xcm__random_token) */
  char lang[16];
};

static inline uint64_t xcm__cl_now(const xcm_client *c) {
  return uv_now(c->ctx->loop);
}

/* ---- client.c ------------------------------------------------------------ */

/* The stream's callbacks, for a stream moved in (move.c). */
extern const xcm_stream_cb xcm__cl_stream_cb;

/* A client's struct and reader, before any connection; its limits. */
int xcm__cl_make(xcm_client **out, xcm_ctx *ctx, const xcm_client_cfg *cfg,
                 const xcm_client_cb *cb, void *ud);
size_t xcm__cl_max_stanza(const xcm_client *c);
void xcm__cl_apply_limits(xcm_client *c);
/* Its timer runs (the handles are counted by the caller). */
void xcm__cl_start_timer(xcm_client *c);
/* The timer fires within ms at the latest (XCM__OFF: no change). */
void xcm__cl_due(xcm_client *c, unsigned ms);
/* Over without an end of its own: its stream went elsewhere (move.c),
 * and the owner does not hear closed(). */
void xcm__cl_end_quietly(xcm_client *c);

/* Write bytes for the client; an element the server routed, as its
 * framing needs it (record: a message the transport may give back). 0,
 * or an error once the client ended. */
int xcm__cl_write_out(xcm_client *c, const char *data, size_t len);
int xcm__cl_write_element(xcm_client *c, const char *bytes, size_t len,
                          int record);
/* End with a stream error: cond and text, or raw, a whole
 * <stream:error> element. refuse() is that, returning XCM_ECLOSED for a
 * reader callback. */
void xcm__cl_fail_raw(xcm_client *c, xcm_cond cond, const char *text,
                      const char *raw, size_t raw_len);
int xcm__cl_refuse(xcm_client *c, xcm_cond cond, const char *text);
/* The login is over: bound, or resumed. */
void xcm__cl_logged_in(xcm_client *c);

/* ---- xep0198.c ----------------------------------------------------------- */

/* An element in urn:xmpp:sm:3 from the client. */
int xcm__cl_sm_element(xcm_client *c, const xcm_xml_stanza *s);
/* An <auth/> on its way to the server: who it names. */
void xcm__cl_note_authid(xcm_client *c, const xcm_xml_stanza *s);
/* A stanza about to be written joins the unacked queue (0), or the
 * client was ended; it was written (ask for an ack if due). */
int xcm__cl_sm_hold(xcm_client *c, const char *data, size_t len);
void xcm__cl_sm_sent(xcm_client *c);
/* Ask for an ack now. */
void xcm__cl_sm_request(xcm_client *c);
/* The client ends: the state goes to a resumable session (detach, for a
 * dropped connection), or back to the server with the rest. */
void xcm__cl_sm_detach(xcm_client *c);
void xcm__cl_sm_return_all(xcm_client *c);

/* ---- move.c -------------------------------------------------------------- */

/* Note the <resume/> to take along (0), before the reader's restart. */
int xcm__cl_move_note(xcm_client *c, const char *previd, uint32_t h);
/* Lift the connection off the loop, with rest, the bytes read past
 * <resume/>; the owner's moved() follows. */
void xcm__cl_move_out(xcm_client *c, const char *rest, size_t len);

#endif
