/* The upstream pool: N connections ("links") to one Openfire server that
 * together carry every client session of this CM; or N links to each
 * node of an Openfire cluster.
 *
 * Each session is pinned to one link so that its stanzas keep their
 * order; it moves to another live link only when its link dies. Openfire
 * keeps a CM's sessions while at least one of its connections lives, so
 * moving needs no message. When the last link dies every session is gone
 * on the server: each is reported lost, and the pool keeps reconnecting
 * with exponential backoff and jitter.
 *
 * Requests (session create, close, failed) are matched pool-wide by id,
 * since Openfire answers an iq on whichever connection it likes.
 *
 * In front of a cluster, a session lives on the node that created it
 * (Openfire keeps a CM's client sessions in the node they were created
 * through), so it moves only among the links of its node; when the
 * node's last link dies (or the node announces system-shutdown) only
 * its sessions are lost, and new sessions go to the nodes that are up.
 * Routes are still found pool-wide by stream id: a cluster may route a
 * session's stanza through another node's link.
 *
 * All on the caller's loop; no threads. */
#ifndef XCM_UPSTREAM_POOL_H
#define XCM_UPSTREAM_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "core/ctx.h"
#include "xcm/policy.h"
#include "xcm/route.h"
#include "xml/reader.h"

typedef struct xcm_pool xcm_pool;
typedef struct xcm_up_session xcm_up_session;

/* The most bytes of a link's upstream address NAME/PREFIXn-m and its
 * NUL: longer names and prefixes are refused when the pool is made. */
#define XCM_POOL_MAX_JID 256

enum xcm_pool_tls { XCM_UP_TLS_OFF, XCM_UP_TLS_OPTIONAL, XCM_UP_TLS_REQUIRED };

/* Every field holds its value: options.c has the defaults
 * (xcm__pool_options_defaults). */
typedef struct xcm_pool_options {
  const char *host; /* name or address; resolved at each connect */
  int port;
  /* The nodes of a cluster as a list (upstream/servers.h), instead of
   * host and port; NULL: host and port, one node. Checked before. */
  const char *servers;
  const char *domain; /* the server's XMPP domain */
  const char *name;   /* this CM's name; links are NAME/RESOURCE */
  const char *secret;
  const char *resource_prefix; /* workers make it unique */
  unsigned connections;        /* links to each node */
  enum xcm_pool_tls tls;       /* optional: used when offered */
  const char *ca_file;         /* for verifying the server's certificate */
  int accept_self_signed;      /* skip verification; logged loudly */
  /* The SHA-256 of the server's certificate (32 bytes, copied), or
   * NULL: trusted instead of ca_file and the host name. */
  const unsigned char *pin_sha256;
  int zlib;               /* compress the links when offered */
  unsigned keepalive_ms;  /* of our silence: a space */
  unsigned dead_after_ms; /* of the server's silence */
  unsigned backoff_min_ms;
  unsigned backoff_max_ms;
  unsigned request_timeout_ms; /* create/close answers */
  size_t high_water; /* a link's queued bytes: stop its clients' reads */
  size_t low_water;  /* ... and resume them here (at most high_water) */
  size_t max_out;    /* hard bound of one link's queue */
  size_t hold_max;   /* bytes a session may send before its create result */
  /* How long a session whose client left stays open upstream before its
   * close is sent: what the server routes to it meanwhile goes
   * back as <failed/> or an iq error, which Openfire would refuse for a
   * session already closed. */
  unsigned linger_ms;
} xcm_pool_options;

enum xcm_link_state {
  XCM_LINK_IDLE,       /* waiting to (re)connect */
  XCM_LINK_CONNECTING, /* DNS, TCP, stream, TLS, compression */
  XCM_LINK_HANDSHAKE,  /* handshake sent */
  XCM_LINK_UP          /* authenticated: carries sessions */
};

/* What the pool tells whoever owns it (the CM). */
typedef struct xcm_pool_events {
  /* A link came up or went down (err says why). */
  void (*link)(void *ud, unsigned index, const char *resource, int up, int err,
               const char *why);
  /* A configuration iq arrived: the policy for clients. */
  void (*policy)(void *ud, const xcm_policy *p);
  /* A node came up (its first link, after none or after its shutdown)
   * or went away (its last link, or system-shutdown): lost is how many
   * sessions went with it, each already told. May be NULL. */
  void (*node)(void *ud, unsigned node, int up, size_t lost);
} xcm_pool_events;

/* What the pool tells the owner of one session (the client's side). */
typedef struct xcm_up_session_cb {
  /* The create was answered: 0, or an error (XCM_EAUTH for not-allowed,
   * XCM_ETIMEDOUT, XCM_ECLOSED when no link came up in time). */
  void (*created)(void *ud, int err);
  /* A stanza (or raw text) the server routed to this client. */
  void (*deliver)(void *ud, const xcm_route *r);
  /* The server ended the session. error holds the <stream:error> bytes
   * when the close carried one (current Openfire), else NULL: Openfire
   * 4.1.6 routes the error first, through deliver. */
  void (*closed)(void *ud, const char *error, size_t error_len);
  /* The session is gone on the server: the last link died. */
  void (*lost)(void *ud);
  /* The server refused a stanza of ours for this session (a route of
   * type error): the session is out of step with the server. */
  void (*route_error)(void *ud, const char *inner, size_t len);
  /* Stop and resume reading from the client: its link is congested. */
  void (*pause)(void *ud);
  void (*resume)(void *ud);
} xcm_up_session_cb;

typedef struct xcm_pool_stats {
  uint64_t sessions;
  uint64_t sessions_lost; /* to the death of the last link */
  uint64_t routes_out, routes_in;
  uint64_t route_errors;   /* type="error" routes from the server */
  uint64_t routes_unknown; /* for no session we know: dropped, counted */
  uint64_t routes_refused; /* malformed routes from the server */
  uint64_t failed_sent;    /* messages returned with <failed/> */
  uint64_t bounced;        /* iq errors sent for gone clients */
  uint64_t lost_in_flight; /* stanzas queued on links that died */
  uint64_t reconnects;
} xcm_pool_stats;

int xcm__pool_new(xcm_pool **out, xcm_ctx *ctx, const xcm_pool_options *opt,
                  const xcm_pool_events *ev, void *ud);
/* Connect every link. */
int xcm__pool_start(xcm_pool *pool);
/* Close every link (sessions are reported lost) and free the pool once
 * all handles are closed; cb may be NULL. */
void xcm__pool_close(xcm_pool *pool, void (*cb)(void *ud), void *ud);

/* The policy of the latest configuration iq, or NULL before the first. */
const xcm_policy *xcm__pool_policy(const xcm_pool *pool);
unsigned xcm__pool_links_up(const xcm_pool *pool);
enum xcm_link_state xcm__pool_link_state(const xcm_pool *pool, unsigned i,
                                         const char **resource);
void xcm__pool_stats(const xcm_pool *pool, xcm_pool_stats *out);

/* Links in all (nodes × connections), and nodes. */
unsigned xcm__pool_links(const xcm_pool *pool);
unsigned xcm__pool_nodes(const xcm_pool *pool);
/* Nodes that take new sessions: a link up, and no shutdown since. */
unsigned xcm__pool_nodes_up(const xcm_pool *pool);
/* The node link i belongs to. */
unsigned xcm__pool_link_node(const xcm_pool *pool, unsigned i);

typedef struct xcm_pool_node_view {
  const char *label; /* "host:port", "[v6]:port"; the pool's */
  unsigned first_link, links, links_up;
  int up;          /* takes new sessions */
  size_t sessions; /* pinned to its links now */
  uint64_t losses; /* times it went away */
  uint64_t sessions_lost;
} xcm_pool_node_view;
/* 0, or XCM_EINVAL when there is no node i. */
int xcm__pool_node(const xcm_pool *pool, unsigned i, xcm_pool_node_view *out);

/* For tests: build routes' payloads without attributes even while a
 * session is closing, as a route that began before the close is, so that
 * the path reading them from the start tag is exercised. */
void xcm__pool_set_bare_payloads(xcm_pool *pool, int always);
/* Whether link i runs over TLS, and compressed. */
int xcm__pool_link_tls(const xcm_pool *pool, unsigned i);
int xcm__pool_link_zlib(const xcm_pool *pool, unsigned i);
/* Bytes queued on link i and not yet written. */
size_t xcm__pool_link_queued(const xcm_pool *pool, unsigned i);
size_t xcm__pool_session_count(const xcm_pool *pool);

/* Open a session for client stream id sid (copied) and send its create,
 * with the client's host name and address (either may be NULL). The
 * owner hears back through cb with ud. Fails with XCM_EBUSY when no link
 * is up (the owner decides whether to wait and retry). */
int xcm__pool_session_open(xcm_pool *pool, const char *sid,
                           const char *host_name, const char *address,
                           const xcm_up_session_cb *cb, void *ud,
                           xcm_up_session **out);

/* Route one client stanza: wrapped with the namespaces of the client's
 * stream (decls from its reader). Held in order until the create result.
 * XCM_ELIMIT when the hold or the link's queue is full. */
int xcm__pool_session_send(xcm_up_session *s, const xcm_xml_stanza *st,
                           const xcm_xml_nsdecl *decls, size_t ndecls);

/* Return a message the client can no longer receive (its exact bytes as
 * routed to it): sent as <failed/> with xmlns="jabber:client". */
int xcm__pool_session_failed(xcm_up_session *s, const char *msg, size_t len);

/* Return a stanza a client with acknowledgements on never acknowledged
 * (its bytes as routed to it): a message goes back as <failed/>, an iq
 * get or set is answered with an error on the client's behalf, anything
 * else (presence, an iq result, a message of type error) is dropped.
 * XCM__RETURNED_MESSAGE, XCM__RETURNED_IQ, 0 for dropped, or a negative
 * error (logged). */
enum { XCM__RETURNED_MESSAGE = 1, XCM__RETURNED_IQ = 2 };
int xcm__pool_session_return(xcm_up_session *s, const char *bytes, size_t len);

/* The client is gone: the close follows after linger_ms. Until then, and
 * until the server answers the close, messages routed to the session go
 * back as <failed/> and iq get/set are answered on its behalf. The
 * owner's callbacks are not called again. */
void xcm__pool_session_close(xcm_up_session *s);

const char *xcm__up_session_sid(const xcm_up_session *s);
/* Index of the link the session is pinned to, or -1. */
int xcm__up_session_link(const xcm_up_session *s);

#endif
