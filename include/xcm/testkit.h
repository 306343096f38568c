/* The testkit: an in-process Openfire, as seen from a connection manager.
 *
 * It listens on a TCP port and plays the server side of Openfire's
 * connection-manager protocol the way Openfire 4.1.6 does on the wire
 * (the captures in tests/transcripts/ are its specification): the
 * stream header and features, the XEP-0114 handshake, the configuration
 * iq, session create/close/failed, routes, whitespace heartbeats. Behind
 * the routes it is a small XMPP server: SASL PLAIN, SCRAM-SHA-1 and
 * ANONYMOUS against an in-memory account table, resource binding,
 * rosters, presence, message and iq routing, offline storage, and
 * optionally XEP-0078 and XEP-0077.
 *
 * Tests drive it with fault controls (drop connections, refuse sessions,
 * kick a session with a stream error, system-shutdown, stall) and watch
 * it through counters and an event callback, so they wait for something
 * to happen instead of sleeping. "Local" clients stand for clients
 * connected to the server directly, like the captures' bob.
 *
 * Every byte a CM sends is read twice: by the testkit, which reacts as
 * Openfire would, and by a witness, a strict namespace-aware expat
 * parser of its own that counts whatever the protocol does not allow
 * (xcm_testkit_stats.violations, xcm_testkit_first_violation()). A
 * test that ends with violations != 0 found a CM bug even if everything
 * else went well.
 *
 * Like Openfire, it counts a connection among the CM's as soon as its
 * stream header is read: routes for a session (picked by the session
 * id's Java hash modulo the CM's connections) and iq answers (picked at
 * random) may reach a connection before its handshake is answered, and
 * a new connection can move a session's traffic to another one.
 *
 * Everything runs on the caller's libuv loop; there are no globals and
 * no threads, so two testkits on two loops work side by side. Functions
 * must be called on the loop's thread. Lifecycle: xcm_testkit_new(),
 * ... xcm_testkit_close() (asynchronous), then xcm_testkit_free() once
 * its callback ran. */
#ifndef XCM_TESTKIT_H
#define XCM_TESTKIT_H

#include "xcm/export.h"

#include <stddef.h>
#include <stdint.h>
#include "xcm/xcm.h" /* and uv.h, checked there */

#include "xcm/alloc.h"
#include "xcm/condition.h"
#include "xcm/log.h"
#include "xcm/policy.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct xcm_testkit xcm_testkit;

/* Two CM connections asking for the same address "CM/RES". */
typedef enum xcm_testkit_conflict {
  /* Current Openfire: the newcomer gets its stream header, then a
   * conflict stream error, and is closed. */
  XCM_TESTKIT_CONFLICT_REFUSE = 0,
  /* Openfire 4.1.6: the newcomer takes the address as soon as its header
   * is read, handshake or not, and the older connection silently stops
   * receiving anything (capture a). */
  XCM_TESTKIT_CONFLICT_TAKEOVER
} xcm_testkit_conflict;

/* STARTTLS on the CM's own connection (not the clients'). */
typedef enum xcm_testkit_link_tls {
  /* Offered when cert_file is set (as Openfire offers it when it has a
   * certificate), else not. */
  XCM_TESTKIT_LINK_TLS_AUTO = 0,
  XCM_TESTKIT_LINK_TLS_OFF,
  /* Always offered, as in the captures. Without cert_file a CM that
   * takes it up gets <failure/> and is closed. */
  XCM_TESTKIT_LINK_TLS_OFFER,
  /* Offered with <required/>; a handshake on a clear stream gets a
   * policy-violation stream error (Openfire itself does not check). */
  XCM_TESTKIT_LINK_TLS_REQUIRE
} xcm_testkit_link_tls;

typedef enum xcm_testkit_event_type {
  XCM_TESTKIT_CONN_UP = 1, /* a CM connection passed the handshake */
  XCM_TESTKIT_CONN_DOWN,   /* a handshaken CM connection is gone */
  XCM_TESTKIT_SESSION_CREATED,
  XCM_TESTKIT_SESSION_BOUND,     /* a resource was bound: jid is set */
  XCM_TESTKIT_SESSION_AVAILABLE, /* initial presence */
  XCM_TESTKIT_SESSION_CLOSED,
  XCM_TESTKIT_OFFLINE_STORED /* jid is the bare JID it was stored for */
} xcm_testkit_event_type;

/* Strings are valid during the callback only; absent ones are NULL. */
typedef struct xcm_testkit_event {
  xcm_testkit_event_type type;
  const char *conn; /* CONN_*: the connection's address "CM/RES" */
  const char *cm;   /* SESSION_*: the CM's name; NULL for a local client */
  const char *sid;  /* SESSION_*: the session's stream id */
  const char *jid;  /* full JID once bound */
} xcm_testkit_event;

/* Called from inside the testkit: it may call any testkit function,
 * xcm_testkit_close() included. */
typedef void (*xcm_testkit_event_fn)(void *ud, xcm_testkit *kit,
                                     const xcm_testkit_event *ev);

/* A stanza for a local client: its exact bytes, valid during the call. */
typedef void (*xcm_testkit_stanza_fn)(void *ud, xcm_testkit *kit,
                                      const char *jid, const char *stanza,
                                      size_t len);

/* Fill with xcm_testkit_options_init(&opt, sizeof opt), which sets
 * size and the defaults in brackets (those of the captures), then change
 * what the test needs. Strings and the policy are copied by
 * xcm_testkit_new(). The struct grows at its end only (doc/abi.md). */
typedef struct xcm_testkit_options {
  size_t size;        /* sizeof the caller's struct, set by the init */
  const char *domain; /* ["example.test"] */
  const char *secret; /* ["cmsecret"] */
  const char *host;   /* ["127.0.0.1"] */
  int port;           /* [0]: a free port, see xcm_testkit_port() */

  /* What the configuration iq tells the CM to offer its clients, and
   * what the server then accepts: mechanisms outside the list, XEP-0078
   * and XEP-0077 when off, are refused. [TLS optional; PLAIN, ANONYMOUS,
   * SCRAM-SHA-1, DIGEST-MD5 (announced as Openfire does, always failed
   * with invalid-mechanism); zlib; no legacy auth; registration] */
  xcm_policy client_policy;

  xcm_testkit_link_tls link_tls; /* [AUTO] */
  /* [0] Offer XEP-0138 zlib on the CM's connection too (Openfire can be
   * set up so; the captures' server did not). */
  int link_zlib;
  const char *cert_file; /* PEM chain for the link's TLS */
  const char *key_file;

  unsigned heartbeat_ms;         /* [30000]; 0: no heartbeats */
  xcm_testkit_conflict conflict; /* [REFUSE] */
  /* Openfire answers a CM's iqs (session results and errors, route
   * errors) on a random connection of that CM, so a CM must match
   * answers pool-wide. [1]; 0 answers on the asking connection. */
  int iq_any_connection;
  uint64_t seed;         /* [0: from the system]: stream ids, iq ids and
                            the random connection; SCRAM nonces always
                            come from the system */
  unsigned offline_max;  /* [1000] messages stored per user; at least 1 */
  unsigned max_sessions; /* [100000] client sessions over all CMs; at
                            least 1 */
  size_t max_out;        /* [4 MiB] queued for one CM connection; a CM
                            that lets more pile up is dropped; at least 1 */
  /* [0] Unknown users may log in with SASL PLAIN (or XEP-0078) and get
   * an account with the password they gave (demos, load tests). SCRAM
   * cannot: the server must know the password before the exchange. */
  int open_accounts;
  /* [1] The witness: read every byte a CM sends a second time with a
   * strict namespace-aware expat parser of its own and count anything
   * the protocol does not allow (see xcm_testkit_first_violation()).
   * 0 only to measure what it costs. */
  int witness;

  xcm_testkit_event_fn on_event; /* [none] */
  void *event_ud;
  xcm_log_fn log; /* [none] */
  void *log_ud;
  int log_level;              /* [XCM_LOG_INFO] */
  const xcm_allocator *alloc; /* [the C library's] */
} xcm_testkit_options;

/* Filled by xcm_testkit_get_stats: it grows at its end only. */
typedef struct xcm_testkit_stats {
  uint64_t accepted;          /* TCP connections on the CM port */
  uint64_t handshakes;        /* accepted handshakes */
  uint64_t handshakes_failed; /* wrong digest */
  uint64_t refused;           /* header errors, conflicts, policy */
  uint64_t dropped;           /* connections the testkit cut */
  uint64_t creates;           /* session creates answered result */
  uint64_t creates_refused;
  uint64_t closes_from_cm; /* closes answered result */
  uint64_t closes_from_server;
  uint64_t failed_received; /* failed iqs answered result */
  uint64_t routes_in, routes_out;
  uint64_t route_errors; /* route errors sent */
  uint64_t iq_errors;    /* errors answering the CM's own iqs */
  uint64_t heartbeats;   /* single spaces written */
  uint64_t auth_ok, auth_failed;
  uint64_t offline_stored, offline_delivered;
  uint64_t local_undelivered; /* stanzas for local clients without a
                                 callback */
  /* What a CM sent that the protocol does not allow: XML that is not
   * well-formed with namespaces (a duplicate attribute or xmlns
   * included), restricted XML, a stream header or handshake other than
   * the protocol's, an element with no place at depth 1, a route
   * without exactly one element (or with text beside it) or whose
   * streamid is not a session its CM created. Each is also logged at
   * error level. Tests check it is 0 when they end. */
  uint64_t violations;
} xcm_testkit_stats;

/* Set size and every field of *opt to its default; size is sizeof *opt
 * as the caller was compiled. 0, or XCM_EINVAL for a size too small. */
XCM_EXTERN int xcm_testkit_options_init(xcm_testkit_options *opt, size_t size);

/* Listen on host:port right away (the port is known on return). opt NULL
 * means the defaults; otherwise it must come from
 * xcm_testkit_options_init (XCM_EINVAL). errbuf (may be NULL) receives a
 * message naming the problem. */
XCM_EXTERN int xcm_testkit_new(xcm_testkit **out, uv_loop_t *loop,
                               const xcm_testkit_options *opt, char *errbuf,
                               size_t errlen);

/* Stop listening and abort every connection without a word (as a
 * crashed server would), then call cb (may be NULL) once every handle
 * is closed. Safe to call from an event callback. 0, or XCM_ECLOSED when
 * a close is already under way (cb is not called twice). */
typedef void (*xcm_testkit_close_fn)(void *ud, xcm_testkit *kit);
XCM_EXTERN int xcm_testkit_close(xcm_testkit *kit, xcm_testkit_close_fn cb,
                                 void *ud);
/* After the close callback ran. */
XCM_EXTERN void xcm_testkit_free(xcm_testkit *kit);

XCM_EXTERN int xcm_testkit_port(const xcm_testkit *kit);
XCM_EXTERN const char *xcm_testkit_domain(const xcm_testkit *kit);

/* Accounts and rosters ---------------------------------------------- */

/* Add user (the local part, no domain) or change its password. */
XCM_EXTERN int xcm_testkit_add_account(xcm_testkit *kit, const char *user,
                                       const char *password);

/* Put contact (a bare JID) on owner's roster, or update the item. name
 * may be NULL; subscription is "none", "to", "from" or "both". Presence
 * follows RFC 6121: owner's presence goes to contacts of subscription
 * "from" or "both", and owner receives the presence of "to" or "both"
 * contacts. Tests add both directions for two users who see each other. */
XCM_EXTERN int xcm_testkit_add_roster_item(xcm_testkit *kit, const char *owner,
                                           const char *contact,
                                           const char *name,
                                           const char *subscription);

/* Change the client policy and push a new configuration iq on every
 * handshaken CM connection. */
XCM_EXTERN int xcm_testkit_set_policy(xcm_testkit *kit, const xcm_policy *p);

/* Local clients: connected to the server directly -------------------- */

/* Log full_jid in ("user@domain/resource"; the account must exist) and
 * bind it, closing an older session with that full JID as Openfire does
 * (conflict). Stanzas for it go to cb (NULL: dropped and counted in
 * local_undelivered). It is not available until it sends presence. */
XCM_EXTERN int xcm_testkit_local_login(xcm_testkit *kit, const char *full_jid,
                                       xcm_testkit_stanza_fn cb, void *ud);
/* Send stanzas as full_jid: len bytes of one or more complete stanzas
 * in jabber:client; from is stamped as the server does. */
XCM_EXTERN int xcm_testkit_local_send(xcm_testkit *kit, const char *full_jid,
                                      const char *stanza, size_t len);
/* End the session (unavailable presence if it was available). */
XCM_EXTERN int xcm_testkit_local_logout(xcm_testkit *kit, const char *full_jid);

/* Fault controls ---------------------------------------------------- */

/* Cut a CM connection without a stream error: i counts handshaken
 * connections in the order of xcm_testkit_connection_jid(); by address
 * "CM/RES" for the second form. XCM_ENOTFOUND if there is none. */
XCM_EXTERN int xcm_testkit_drop_connection(xcm_testkit *kit, unsigned i);
XCM_EXTERN int xcm_testkit_drop_connection_jid(xcm_testkit *kit,
                                               const char *addr);
XCM_EXTERN void xcm_testkit_drop_all(xcm_testkit *kit);

/* While on, session creates are answered not-allowed. */
XCM_EXTERN void xcm_testkit_refuse_creates(xcm_testkit *kit, int on);

/* End a session from the server side, as Openfire 4.1.6 does (capture
 * c): the stream error routed to the client, the close iq, then the
 * unavailable presence. By session id (over every CM) or full JID. */
XCM_EXTERN int xcm_testkit_close_session(xcm_testkit *kit, const char *sid,
                                         xcm_cond cond);
XCM_EXTERN int xcm_testkit_close_jid(xcm_testkit *kit, const char *full_jid,
                                     xcm_cond cond);

/* <stream:error><system-shutdown/></stream:error></stream:stream> on
 * every CM connection, then close them all: every session is gone. The
 * listener stays open, as a restarted server's would. */
XCM_EXTERN void xcm_testkit_system_shutdown(xcm_testkit *kit);

/* While on, the testkit reads nothing from CM connections and sends no
 * heartbeats: a server that hangs with its sockets open. */
XCM_EXTERN void xcm_testkit_stall(xcm_testkit *kit, int on);

/* Observation ------------------------------------------------------- */

/* Handshaken CM connections, and the address of the i-th (in handshake
 * order; NULL past the end; valid until the connection goes). */
XCM_EXTERN unsigned xcm_testkit_connections(const xcm_testkit *kit);
XCM_EXTERN const char *xcm_testkit_connection_jid(const xcm_testkit *kit,
                                                  unsigned i);

/* Live client sessions, CM-hosted and local. */
XCM_EXTERN unsigned xcm_testkit_sessions(const xcm_testkit *kit);
/* 1 if full_jid is bound, 2 if it is also available, else 0. */
XCM_EXTERN int xcm_testkit_jid_state(const xcm_testkit *kit,
                                     const char *full_jid);

/* Copy the counters into out, as much as size (sizeof *out as the
 * caller was compiled) holds. 0, or XCM_EINVAL for a NULL out. */
XCM_EXTERN int xcm_testkit_get_stats(const xcm_testkit *kit,
                                     xcm_testkit_stats *out, size_t size);

/* The first violation (see xcm_testkit_stats.violations) as text: the
 * connection ("CM connection #N (CM/RES)"), the byte offset in what it
 * sent, what was wrong, and the offending bytes quoted and truncated.
 * NULL while there is none. Valid until xcm_testkit_free(). */
XCM_EXTERN const char *xcm_testkit_first_violation(const xcm_testkit *kit);

/* Messages stored offline for user (the local part), oldest first, and
 * the bytes of the i-th as stored (without the delay element delivery
 * adds); NULL past the end. Valid until the store changes. */
XCM_EXTERN unsigned xcm_testkit_offline_count(const xcm_testkit *kit,
                                              const char *user);
XCM_EXTERN const char *xcm_testkit_offline_message(const xcm_testkit *kit,
                                                   const char *user, unsigned i,
                                                   size_t *len);

/* The last configuration iq sent, NUL-terminated (NULL before the
 * first). */
XCM_EXTERN const char *xcm_testkit_last_configuration(const xcm_testkit *kit,
                                                      size_t *len);

#ifdef __cplusplus
}
#endif
#endif
