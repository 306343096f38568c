/* Sessions: where a client stream and its upstream session meet. Each
 * accepted connection becomes one session; the client side hands its
 * stanzas to the pool, the pool hands the server's routes to the client,
 * and whichever side ends first ends the other. The table also enforces
 * the limits on connections, overall and per source address. */
#ifndef XCM_SESSION_SESSION_H
#define XCM_SESSION_SESSION_H

#include "client/client.h"
#include "session/counters.h"
#include "upstream/pool.h"
#include "util/map.h"

typedef struct xcm_resume_group xcm_resume_group; /* session/group.h */

/* The layer knows nothing of the public API (xcm/xcm.h): the instance
 * (xcm.c) turns its events, its hook calls and its counters into the
 * public ones. */

typedef struct xcm_session xcm_session;

/* What happened to a session, in the order it happens. */
enum xcm_session_ev {
  XCM__SESSION_OPENED = 1, /* header accepted; session created upstream */
  XCM__SESSION_AUTHENTICATED,
  XCM__SESSION_BOUND,  /* the JID is known */
  XCM__SESSION_CLOSED, /* the last event; end says why */
  /* XEP-0198 resumption: the connection dropped and the session waits
   * for its client (end says how the connection ended); a new
   * connection took the session over. */
  XCM__SESSION_DETACHED,
  XCM__SESSION_RESUMED
};
typedef void (*xcm_session_event_fn)(void *ud, enum xcm_session_ev ev,
                                     const xcm_session *s,
                                     const xcm_client_end *end);

/* The owner's say on a stanza routed either way. */
enum xcm_hook_verdict {
  XCM__HOOK_PASS,
  XCM__HOOK_DROP,
  XCM__HOOK_REPLACE /* *rep, *rep_len: one element, copied */
};
typedef enum xcm_hook_verdict (*xcm_session_hook_fn)(
    void *ud, const xcm_session *s, int to_client, const char *name,
    const char *bytes, size_t len, const char **rep, size_t *rep_len);

/* What a session is now, for the owner; strings valid until it changes
 * or ends. */
typedef struct xcm_session_view {
  const char *sid;
  const char *peer;
  const char *jid; /* NULL until bound */
  int authenticated;
  int tls;
  int compressed;
  int link; /* the upstream link carrying it, or -1 */
  void *data;
  int detached; /* waiting for its client to resume it (XEP-0198) */
} xcm_session_view;

typedef struct xcm_sessions {
  xcm_ctx *ctx;
  xcm_pool *pool;
  xcm_counters *counters; /* the instance's, borrowed */
  xcm_session *head;
  size_t count;
  xcm_map per_address;
  xcm_map by_sid;
  xcm_session_event_fn events; /* NULL: none */
  void *events_ud;
  unsigned max_clients;     /* XCM__OFF: none */
  unsigned max_per_address; /* XCM__OFF: none */
  xcm_session_hook_fn hook; /* NULL: none */
  void *hook_ud;
  /* Called when the last session is gone (for the shutdown). */
  void (*empty)(void *ud);
  void *empty_ud;
  /* XEP-0198 resumption: how long a dropped session waits (ms; 0: none
   * waits), and what it holds meanwhile at most (stanzas, bytes;
   * XCM__OFF: no bound), as the unacked queue's bounds. */
  unsigned resume_ms;
  unsigned sm_max_unacked;
  size_t sm_max_unacked_bytes;
  xcm_map by_resume;           /* resumable sessions, by resumption id */
  struct resumable *wait_head; /* detached sessions, oldest first */
  struct resumable *wait_tail;
  uv_timer_t *wait_timer; /* while any waits */
  int closing;            /* fail_all under way: nothing detaches */
  /* Instances that resume each other's sessions (session/group.h), and
   * this one's number in it; NULL: none. */
  xcm_resume_group *group;
  unsigned group_index;
  /* The listeners' configurations by number, for clients moved here. */
  const xcm_client_cfg *(*listener_cfg)(void *ud, unsigned i);
  void *listener_cfg_ud;
} xcm_sessions;

void xcm__sessions_init(xcm_sessions *t, xcm_ctx *ctx, xcm_counters *counters);
void xcm__sessions_free(xcm_sessions *t);

/* A connection was accepted on tcp (allocated with the context's
 * allocator, initialised, owned by the session from now on). Refuses it
 * (closing tcp) when a limit is reached, and on a proxy_protocol listener
 * when the peer is not one of cfg->trusted (XCM_EPROTO). */
int xcm__session_accept(xcm_sessions *t, const xcm_client_cfg *cfg,
                        uv_tcp_t *tcp);

/* The session of stream id sid, or NULL. */
xcm_session *xcm__sessions_find(const xcm_sessions *t, const char *sid);
/* What a session is now. */
void xcm__session_view(const xcm_session *s, xcm_session_view *out);
/* The owner's data for the session (NULL until set); never freed here. */
void xcm__session_set_data(xcm_session *s, void *data);
void *xcm__session_data(const xcm_session *s);
/* End it with a stream error (text static or the caller's until return:
 * it is written at once). */
void xcm__session_close(xcm_session *s, xcm_cond cond, const char *text);

/* A client moved here from another instance of the group to resume a
 * session of this one (session/group.h): m is taken. */
void xcm__sessions_adopt(xcm_sessions *t, xcm_client_moved *m);

/* Clients waiting for an upstream link try again. */
void xcm__sessions_retry(xcm_sessions *t);

/* A connection over the caller's transport (copied): *stream receives
 * the stream to feed its input to. */
int xcm__session_attach(xcm_sessions *t, const xcm_client_cfg *cfg,
                        const xcm_transport *tr, const char *peer,
                        xcm_stream **stream);

/* A connection over a message transport (WebSocket, BOSH; copied):
 * *client receives the client to feed its messages to
 * (xcm__client_msg_input), valid until tr->close() has been called.
 * The same checks as for an accepted socket: the total of clients and,
 * with max_per_address, the connections from peer's address. */
int xcm__session_attach_msg(xcm_sessions *t, const xcm_client_cfg *cfg,
                            const xcm_msg_transport *tr, const char *peer,
                            xcm_client **client);

/* End every session with a stream error (system-shutdown on a graceful
 * stop). The upstream sessions are closed as each client goes. */
void xcm__sessions_fail_all(xcm_sessions *t, xcm_cond cond, const char *text);
/* End up to n sessions that are not already ending, in no particular
 * order, as xcm__sessions_fail_all does (each is gone on return): how
 * many were ended. */
size_t xcm__sessions_fail_some(xcm_sessions *t, size_t n, xcm_cond cond,
                               const char *text);

#endif
