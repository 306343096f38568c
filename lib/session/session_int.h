/* The parts of the session table (lib/session/): session.c joins each
 * client to its upstream session, counts and limits connections, and
 * ends sessions; resume.c keeps the sessions that wait for their client
 * (XEP-0198 resumption) and moves clients into them, on this instance
 * or from another of its resume group (group.h). This header is what
 * they share; nothing outside lib/session/ includes it. */
#ifndef XCM_SESSION_SESSION_INT_H
#define XCM_SESSION_SESSION_INT_H

#include "session/session.h"
#include "session/sm.h"

struct xcm_session {
  xcm_map_entry e; /* by the client's stream id */
  xcm_sessions *table;
  char *jid;          /* once bound */
  xcm_client *client; /* NULL while detached */
  xcm_up_session *up;
  xcm_session *prev, *next;
  struct addr_count *addr;
  void *data;          /* the owner's (xcm_cm_session_set_data) */
  struct resumable *r; /* once the client enabled resumption */
  xcm_transport_kind kind;
  unsigned char detaching; /* the client is leaving its state to us */
  unsigned char up_paused; /* the upstream asked us to wait */
};

/* A session its client may resume (XEP-0198 section 5): found by its
 * id, and while detached (no client: the connection dropped) on the
 * table's waiting list. Every session waits as long, so the list is in
 * the order they expire in, and one timer serves them all. A detached
 * session holds no socket, TLS state or parser: this, its sm state, and
 * its upstream session. */
typedef struct resumable {
  xcm_map_entry e; /* by id, in by_resume */
  xcm_session *s;
  xcm_sm *sm;       /* while detached: unacked, then what arrived since */
  uint64_t expires; /* loop time, while detached */
  struct resumable *wprev, *wnext;
  char id[XCM_RESUME_ID_SIZE];
  /* The session's stream id: the by_sid key once the client that named
   * it may go (a copy of the same bytes, so the key's hash holds). */
  char sid[XCM__TOKEN_SIZE];
} resumable;

/* Connections from one source address. */
typedef struct addr_count {
  xcm_map_entry e;
  unsigned n;
  char key[46]; /* INET6_ADDRSTRLEN */
} addr_count;

/* ---- session.c ----------------------------------------------------------- */

/* The client callbacks every session's client has. */
extern const xcm_client_cb xcm__ses_client_cb;
/* Tell the owner's session-event function, if any. */
void xcm__ses_event(xcm_session *s, enum xcm_session_ev ev,
                    const xcm_client_end *end);
/* A stanza the client never acknowledged goes back upstream (ud: s). */
void xcm__ses_unacked(void *ud, const char *data, size_t len);
/* The connection's counts go (by transport, TLS, its address). */
void xcm__ses_conn_release(xcm_session *s);
/* stats.clients_now: connections, not the sessions that wait. */
void xcm__ses_clients_now(xcm_sessions *t);
/* The session is over (its connection released already): the owner
 * hears it last, the upstream session closes, everything goes. */
void xcm__ses_free(xcm_session *s, const xcm_client_end *end);
/* key's connection count, one more unless at max_per_address (*over). */
addr_count *xcm__ses_count_key(xcm_sessions *t, const char *key, int *over);

/* ---- resume.c ------------------------------------------------------------ */

/* The client callbacks of resumption (xcm_client_cb). */
int xcm__ses_resumable(void *ud, char *id);
int xcm__ses_detach(void *ud, xcm_sm *sm);
int xcm__ses_resume(void *ud, const char *previd, uint32_t h,
                    const char *authid, uint32_t *sent);
void xcm__ses_moved(void *ud, xcm_client_moved *m);
/* What the server routes to a session that waits. */
void xcm__ses_hold(xcm_session *s, const xcm_route *r);
/* A session that waits ends: everything goes back upstream. */
void xcm__ses_end_detached(xcm_session *s, int err, const char *text);

#endif
