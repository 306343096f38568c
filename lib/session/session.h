/* Sessions: where a client stream and its upstream session meet. Each
 * accepted connection becomes one session; the client side hands its
 * stanzas to the pool, the pool hands the server's routes to the client,
 * and whichever side ends first ends the other. The table also enforces
 * the limits on connections, overall and per source address. */
#ifndef XCM_SESSION_SESSION_H
#define XCM_SESSION_SESSION_H

#include "client/client.h"
#include "upstream/pool.h"
#include "util/map.h"
#include "xcm/xcm.h"

typedef struct xcm_session xcm_session;

typedef struct xcm_sessions {
  xcm_ctx *ctx;
  xcm_pool *pool;
  xcm_stats *stats; /* the instance's, borrowed */
  xcm_session *head;
  size_t count;
  xcm_map per_address;
  xcm_map by_sid;
  xcm_session_fn events; /* NULL: none */
  void *events_ud;
  unsigned max_clients;     /* XCM__OFF: none */
  unsigned max_per_address; /* XCM__OFF: none */
  xcm_stanza_hook hook;     /* NULL: none */
  void *hook_ud;
  /* Called when the last session is gone (for the shutdown). */
  void (*empty)(void *ud);
  void *empty_ud;
} xcm_sessions;

void xcm__sessions_init(xcm_sessions *t, xcm_ctx *ctx, xcm_stats *stats);
void xcm__sessions_free(xcm_sessions *t);

/* A connection was accepted on tcp (allocated with the context's
 * allocator, initialised, owned by the session from now on). Refuses it
 * (closing tcp) when a limit is reached. */
int xcm__session_accept(xcm_sessions *t, const xcm_client_cfg *cfg,
                        uv_tcp_t *tcp);

/* The session of stream id sid, or NULL. */
xcm_session *xcm__sessions_find(const xcm_sessions *t, const char *sid);
/* What a session is now; strings valid until it changes or ends. */
void xcm__session_info(const xcm_session *s, xcm_session_info *out);
/* The owner's data for the session (NULL until set); never freed here. */
void xcm__session_set_data(xcm_session *s, void *data);
void *xcm__session_data(const xcm_session *s);
/* End it with a stream error (text static or the caller's until return:
 * it is written at once). */
void xcm__session_close(xcm_session *s, xcm_cond cond, const char *text);

/* Clients waiting for an upstream link try again. */
void xcm__sessions_retry(xcm_sessions *t);

/* A connection over the caller's transport (copied): *stream receives
 * the stream to feed its input to. */
int xcm__session_attach(xcm_sessions *t, const xcm_client_cfg *cfg,
                        const xcm_transport *tr, const char *peer,
                        xcm_stream **stream);

/* End every session with a stream error (system-shutdown on a graceful
 * stop). The upstream sessions are closed as each client goes. */
void xcm__sessions_fail_all(xcm_sessions *t, xcm_cond cond, const char *text);

#endif
