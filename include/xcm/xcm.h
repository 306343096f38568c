/* libxcm: an XMPP connection manager for Openfire, as a library.
 *
 * One xcm_cm is one connection manager on one caller-supplied libuv loop:
 * client listeners, the client streams, and a pool of upstream
 * connections to Openfire that carries every session. It creates no
 * threads and touches no globals; two instances on two loops run side by
 * side (a multi-threaded daemon runs one per thread).
 *
 * Lifecycle: xcm_cm_new(), xcm_cm_listen() for each listener,
 * xcm_cm_start(), ... xcm_cm_shutdown() (graceful, with a callback),
 * then xcm_cm_free() once the callback ran.
 *
 * What the process must provide (libxcm sets nothing process-wide):
 * - SIGPIPE ignored (signal(SIGPIPE, SIG_IGN)), as in any libuv program
 *   that writes to sockets: a peer that closes first would otherwise
 *   kill the process.
 * - Every call on the loop's thread (the instance is not thread-safe;
 *   run one instance per loop per thread instead).
 * - Descriptors: one per client and per upstream link, plus listeners;
 *   RLIMIT_NOFILE above max_clients + connections + some.
 * - Under a strict C standard (-std=c99/c11/c17 rather than gnu*), a
 *   POSIX feature macro before the first #include, because libuv's
 *   uv.h needs POSIX types: -D_POSIX_C_SOURCE=200112L (or later). */
#ifndef XCM_XCM_H
#define XCM_XCM_H

#include "xcm/export.h"

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#if defined(__STRICT_ANSI__) && !defined(__cplusplus) &&                       \
    !defined(_POSIX_C_SOURCE) && !defined(_XOPEN_SOURCE) &&                    \
    !defined(_GNU_SOURCE) && !defined(_DEFAULT_SOURCE)
#error                                                                         \
    "libxcm (through libuv's uv.h) needs POSIX: compile with -D_POSIX_C_SOURCE=200112L, or with -std=gnu11"
#endif
#include <uv.h>

#include "xcm/alloc.h"
#include "xcm/condition.h"
#include "xcm/error.h"
#include "xcm/log.h"
#include "xcm/policy.h"
#include "xcm/transport.h"
#include "xcm/version.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct xcm_cm xcm_cm;
typedef struct xcm_resume_group xcm_resume_group;
typedef struct xcm_conn xcm_conn; /* a connection over xcm_transport */

typedef enum xcm_upstream_tls {
  XCM_UPSTREAM_TLS_OFF = 0,
  XCM_UPSTREAM_TLS_OPTIONAL, /* use it when the server offers it */
  XCM_UPSTREAM_TLS_REQUIRED
} xcm_upstream_tls;

/* A limit or timeout set to XCM_UNLIMITED is switched off. The fields
 * that accept it say so. */
#define XCM_UNLIMITED UINT_MAX

/* Options of an instance. Fill with xcm_options_init(&opt, sizeof opt),
 * which sets size and every field to the default given in brackets, then
 * change what the caller needs: a field holds its real value, and zero
 * is a value, never "the default" (xcm_cm_new refuses a zero where it
 * means nothing, naming the field and its range). Strings are copied.
 * The defaults suit a server that faces strangers. The struct grows at
 * its end only (doc/abi.md, "Structs that grow"). */
typedef struct xcm_options {
  size_t size;        /* sizeof the caller's struct, set by xcm_options_init */
  const char *domain; /* the XMPP domain Openfire serves; required [NULL] */

  /* The upstream: Openfire's connection-manager port. */
  const char *server_host; /* ["127.0.0.1"]; names are resolved (v4/v6) */
  int server_port;         /* [5262]; 1 to 65535 */
  const char *name;        /* this CM's name; required [NULL] */
  const char *secret;      /* xmpp.multiplex.defaultSecret; required [NULL] */
  const char *resource_prefix; /* ["w"]: upstream resources NAME/w1-1 */
  /* Links to the server, or to each server of upstream_servers [5]; 1 to
   * 64 (and at most 256 over all servers). */
  unsigned connections;
  xcm_upstream_tls upstream_tls; /* [XCM_UPSTREAM_TLS_OPTIONAL] */
  const char *upstream_ca_file;  /* trust for the server's certificate
                                    [NULL: the system's CA bundle] */
  /* Trust exactly the server certificate whose DER has this SHA-256,
   * instead of a CA and the host name (dates are not checked either):
   * "sha256:" and 64 hex digits, any case, with or without ':' between
   * byte pairs, as openssl and keytool print it. Makes upstream TLS
   * required, whatever upstream_tls says; excludes upstream_ca_file and
   * upstream_accept_self_signed. [NULL] */
  const char *upstream_fingerprint;
  int upstream_accept_self_signed; /* skip verification (logged loudly) [0] */
  int upstream_zlib;               /* compress upstream links if offered [0] */
  unsigned keepalive_ms;           /* [30000]; at least 1 */
  unsigned dead_after_ms;          /* [300000]; at least 1 */

  /* Clients. */
  size_t max_stanza_preauth; /* [8192]; at least 1 */
  size_t max_stanza;         /* [262144]; at least 1 */
  unsigned max_depth;        /* [32]; at least 1 */
  /* A client that has not sent its stream header (after its TLS
   * handshake, on a direct TLS port) this long after connecting is
   * closed with connection-timeout. [10000]; at least 1, or
   * XCM_UNLIMITED. */
  unsigned header_timeout_ms;
  /* To authenticate, from connecting [30000]; at least 1, or
   * XCM_UNLIMITED. */
  unsigned auth_timeout_ms;
  unsigned idle_timeout_ms; /* [600000]; at least 1, or XCM_UNLIMITED */
  size_t max_client_out;    /* [1048576] queued for one client; at least 1 */
  /* Each client's input is shaped by two token buckets, stanzas and
   * bytes: a read is always handled whole, and a client whose bucket is
   * then in debt has its reads paused until the debt is repaid
   * (stats.reads_shaped). Nobody is disconnected for rate. A rate of
   * XCM_UNLIMITED switches its bucket off; the rest are at least 1. */
  unsigned rate;        /* [200] stanzas/s per client, sustained */
  unsigned burst;       /* [1000] stanzas */
  unsigned rate_bytes;  /* [262144] bytes/s per client, sustained */
  unsigned burst_bytes; /* [1048576] bytes */
  /* Connections at once, in all and from one address (IPv4 or exact
   * IPv6 address); one over is closed at accept and counted in
   * stats.clients_refused_total_limit / _address_limit. At least 1, or
   * XCM_UNLIMITED. */
  unsigned max_clients;     /* [10000] */
  unsigned max_per_address; /* [100] */
  /* While no upstream link is up (or only links of servers that
   * announced system-shutdown), a new client waits this long for one;
   * then (or at once, with 0) it gets remote-connection-failed. [0] */
  unsigned upstream_wait_ms;
  int compression; /* offer zlib to clients (inside TLS) [0] */
  /* Read all XML with expat, without the validating scanner in front of
   * it (same results, about four times the instructions per routed
   * message): a switch for diagnosis. [0] */
  int expat_only;

  xcm_log_fn log; /* [NULL: nothing is logged] */
  void *log_ud;   /* [NULL] */
  int log_level;  /* [XCM_LOG_INFO]; XCM_LOG_ERROR to XCM_LOG_DEBUG */

  const xcm_allocator *alloc; /* [NULL: the C library's] */

  /* The nodes of an Openfire cluster, instead of server_host and
   * server_port: "host:port" entries separated by commas, e.g. "of1:5262,
   * of2:5262, [fd00::3]:5262" (a port left out is 5262; an IPv6 address
   * in brackets; names are resolved at each connect, as server_host is;
   * at most 16). Each node gets `connections` links, numbered on over
   * the nodes (node 1 w1..w5, node 2 w6..w10), so that every resource is
   * unique in the cluster. A session stays on the node that created it;
   * when a node goes away (its last link lost, or system-shutdown) only
   * its sessions end, with remote-connection-failed, and new sessions go
   * to the nodes that are up (xcm_cm_upstream_node). Set with
   * server_host or server_port changed from its default, xcm_cm_new
   * refuses it unless the list is just that server. [NULL: server_host
   * and server_port, one node] */
  const char *upstream_servers;

  /* XEP-0198 stream management. With sm_enable, <sm xmlns='urn:xmpp:sm:3'/> is
   * offered after authentication and <enable/> is taken after bind; the CM then
   * counts stanzas both ways, answers <r/>, asks the client for acks and holds
   * each stanza it sent until the client acknowledges it. When the
   * connection ends in any way, what the client had not acknowledged
   * goes back to the server: messages as <failed/> (stored offline), iq
   * get/set answered with an error on the client's behalf
   * (stats.sm_returned). [0] */
  int sm_enable;
  /* The unacked queue's bounds; a client past either is ended with
   * policy-violation (stats.sm_overflows) and all of it goes back. At
   * least 1, or XCM_UNLIMITED. [1000] stanzas, [1048576] bytes */
  unsigned sm_max_unacked;
  size_t sm_max_unacked_bytes;
  /* Ask for an ack (<r/>) after this many stanzas or bytes sent since the
   * last request ([50], [65536]), and this long after the last stanza
   * sent when no request followed it ([2000] ms). At least 1, or
   * XCM_UNLIMITED for never on that account. */
  unsigned sm_ack_every;
  unsigned sm_ack_every_bytes;
  unsigned sm_ack_quiet_ms;
  /* Resumption (XEP-0198 section 5), with sm_enable: <enable
   * resume='true'/> gets an id of 128 random bits and max (this, in
   * seconds, rounded up). When such a client's connection drops (it
   * fails, is cut without </stream:stream>, stops reading or answering
   * acks), its session stays open upstream this long, holding what the
   * server sends it within the unacked queue's bounds
   * (XCM_SESSION_DETACHED). A new connection that authenticates as the
   * same user (SASL PLAIN or SCRAM, whose initial response names the
   * user) and sends <resume previd h/> takes it over: <resumed/>, then
   * everything unacknowledged, in order (XCM_SESSION_RESUMED); its own
   * session, authenticated and never bound, closes upstream without a
   * trace. A session not resumed in time ends as any other: messages go
   * back as <failed/>, iq get/set are answered with an error
   * (stats.sm_expired_returned). At most max_clients sessions wait at
   * once (a connection that drops beyond that ends its session). 0: no
   * resumption. [300000], at most 86400000 */
  unsigned sm_resume_ms;
  /* A client that leaves an <r/> unanswered this long is taken for gone:
   * its connection drops (a resumable session then waits for it). At
   * least 1, or XCM_UNLIMITED. [60000] */
  unsigned sm_ack_timeout_ms;
  /* Instances that resume each other's sessions: one per worker thread
   * of a daemon behind SO_REUSEPORT, where a client's new connection
   * reaches any worker (see xcm_resume_group_new). Every instance of the
   * group must have the same listeners, added in the same order. [NULL:
   * only this instance's sessions are resumed here] */
  xcm_resume_group *resume_group;

  /* XEP-0352 client state indication. With csi_enable, <csi
   * xmlns='urn:xmpp:csi:0'/> is offered after authentication, and a
   * bound client may say <inactive/> (its app is in the background) and
   * <active/>. While it is inactive, what it does not need at once waits
   * at the CM: presences (only the latest from each sender is kept;
   * older ones are dropped, stats.csi_superseded), chat states without a
   * body, and stanzas with a child in a namespace of csi_hold_ns. The
   * first stanza that matters now (a message with a body or an
   * encrypted payload, any iq, a subscription request, a child in a
   * namespace of csi_urgent_ns) goes out at once, right after everything
   * that waited, in order; so does everything at <active/>, and when the
   * queue would pass a bound (stats.csi_overflows). When the connection
   * ends, messages that waited go back to the server (<failed/>: stored
   * offline), presences are dropped. [0] */
  int csi_enable;
  /* What waits for one client, at most: 1 to 100000 stanzas [100], 1 to
   * 16777216 bytes [65536]. */
  unsigned csi_max_held;
  size_t csi_max_held_bytes;
  /* Namespaces, separated by commas, of children that make a message or
   * presence wait (hold) or go at once (urgent), e.g.
   * "urn:xmpp:receipts" to hold delivery receipts; urgent wins when a
   * stanza has both. At most 16 in each, none in both; chat states and
   * encrypted payloads are decided by the CM. [NULL: none] */
  const char *csi_hold_ns;
  const char *csi_urgent_ns;
} xcm_options;

/* A group of instances, each on its own loop and thread, that resume
 * each other's sessions (XEP-0198): a <resume/> that reaches an
 * instance other than the session's moves its connection (socket, TLS
 * and zlib state, what the client sent past <resume/>) to the session's
 * instance, which resumes it there. The session itself never moves: the
 * server knows it under its instance's CM name. Works for clients on a
 * socket of their own (TCP, TLS, zlib); a WebSocket, BOSH or custom
 * transport client whose session is on another instance gets
 * <failed/> with item-not-found and binds a new session. The group is
 * thread-safe; set it as xcm_options.resume_group of each instance, and
 * free it after every instance in it is shut down and freed. The
 * instances must share an allocator (xcm_options.alloc): a connection's
 * memory moves with it. 0, XCM_EINVAL or XCM_ENOMEM. */
XCM_EXTERN int xcm_resume_group_new(xcm_resume_group **out);
XCM_EXTERN void xcm_resume_group_free(xcm_resume_group *g);

/* Set size and every field of *opt to its default. size is sizeof *opt
 * as the caller was compiled (xcm_options_init(&opt, sizeof opt)): a
 * library newer than the caller's header fills only what the caller
 * has. 0, or XCM_EINVAL for a size too small to be an xcm_options. */
XCM_EXTERN int xcm_options_init(xcm_options *opt, size_t size);
/* The checks xcm_cm_new makes of *opt (upstream_servers' syntax among
 * them), without an instance: 0, or XCM_EINVAL with errbuf naming the
 * field and what it accepts. For a program that validates its
 * configuration before it runs. */
XCM_EXTERN int xcm_options_check(const xcm_options *opt, char *errbuf,
                                 size_t errlen);

/* Options of a listener: fill with xcm_listen_options_init(&lo, sizeof
 * lo), like xcm_options. */
typedef struct xcm_listen_options {
  size_t size;      /* sizeof the caller's struct, set by the init */
  const char *host; /* ["127.0.0.1"]; "::" or "0.0.0.0" for all */
  int port;         /* [0]: a free one (see xcm_cm_listener_port); 0 to 65535,
                       5222 or 5223 by custom */
  const char *cert_file; /* PEM chain: offers STARTTLS (or direct TLS)
                            [NULL: no TLS] */
  const char *key_file;  /* [NULL]; required with cert_file */
  int direct_tls;        /* XEP-0368: TLS from the first byte (port 5223) [0] */
  int reuseport; /* SO_REUSEPORT, for one listener per worker thread [0] */
  /* Behind a load balancer: every connection must begin with a PROXY
   * protocol header (HAProxy's, v1 or v2; before TLS on a direct TLS
   * listener), and the client address it names is the peer's for logs,
   * xcm_session_info.peer, the session create and max_per_address. A
   * connection without a valid one within header_timeout_ms is closed at
   * once (stats.proxy_headers_refused). There is no optional mode: it
   * would let anyone name any address. Off by default; requires
   * proxy_trusted. [0] */
  int proxy_protocol;
  /* The balancers a proxy_protocol listener takes PROXY headers from: a
   * comma-separated list of IPv4 and IPv6 addresses and networks,
   * "127.0.0.1, 10.0.0.0/8, ::1, fd00::/8" (an IPv4 entry also matches
   * the IPv4-mapped peers of a dual-stack socket; at most 64 entries).
   * A connection from any other address is closed as soon as it is
   * accepted, before a byte is read (stats.proxy_untrusted; through
   * xcm_cm_attach, peer must be such an address, or XCM_EPROTO). Required
   * with proxy_protocol, so that nobody trusts the world by leaving it
   * out ("0.0.0.0/0, ::/0" says so on purpose), and refused without it.
   * Read by xcm_cm_listen, not kept. [NULL] */
  const char *proxy_trusted;
  /* Speak HTTP/1.1 here in place of XMPP: BOSH, WebSocket and XEP-0156
   * discovery (host-meta) for web clients. With cert_file it is HTTPS,
   * TLS from the first byte (direct_tls need not be set), with the same
   * SNI certificates and reload as an XMPP listener; proxy_protocol
   * works as there. The fields below are read only when http is set. [0] */
  int http;
  /* The BOSH path ["/http-bind/"], and the WebSocket paths, comma-
   * separated ["/ws/, /xmpp-websocket"]; "" serves none. Each path
   * begins with '/', at most 4 WebSocket paths. */
  const char *http_bosh_path;
  const char *http_ws_paths;
  /* Origins web pages may call from, comma-separated, each as a browser
   * sends it ("https://chat.example.org, http://localhost:8080"), or "*"
   * for any. BOSH answers CORS for them (and refuses the rest with 403);
   * a WebSocket upgrade from another Origin is refused with 403. Clients
   * that send no Origin (not a browser) are served. [NULL: any] */
  const char *http_origins;
  /* The base URL clients reach this listener at, scheme and authority
   * with an optional path prefix ("https://chat.example.org"), for the
   * URLs host-meta names. Set it behind a proxy that terminates TLS or
   * rewrites paths. [NULL: this listener's scheme and the request's
   * Host] */
  const char *http_public_url;
  /* Limits on what a stranger can send; 0 takes the default:
   * - http_max_header: the request line and headers [8192 bytes; 431
   *   beyond, 414 for a longer request target];
   * - http_max_body: a request body [xcm_options.max_stanza + 1024, the
   *   BOSH envelope; 413 beyond];
   * - http_max_connections: open connections on this listener [10000;
   *   503 beyond; XCM_UNLIMITED for none];
   * - http_max_per_address: ... from one address (the PROXY header's
   *   behind a balancer) [100; 503 beyond; XCM_UNLIMITED for none];
   * - http_header_timeout_ms: to send a request's line and headers,
   *   from its first byte (from the accept for the first request)
   *   [10000; 408 after];
   * - http_idle_timeout_ms: a connection with no request under way
   *   [60000; closed without a word after]. */
  unsigned http_max_header;
  unsigned http_max_body;
  unsigned http_max_connections;
  unsigned http_max_per_address;
  unsigned http_header_timeout_ms;
  unsigned http_idle_timeout_ms;
  /* BOSH (XEP-0124 with XEP-0206) at http_bosh_path, in XEP-0124's
   * units (seconds); 0 takes the default:
   * - bosh_wait: the longest a request is held for data; a client asking
   *   for more gets this [60];
   * - bosh_hold: requests held at once; a client asking for more gets
   *   this [1];
   * - bosh_requests: requests under way at once, more is a
   *   policy-violation [2; 1 to 8, above bosh_hold];
   * - bosh_inactivity: with no request under way for this long, the
   *   session ends and the messages it did not get go back to the server
   *   (<failed/>) [60; at most 3600];
   * - bosh_polling: the shortest gap between two empty requests when as
   *   many as bosh_requests are under way (policy-violation) [2];
   * - bosh_maxpause: the longest pause a client may ask for [120;
   *   XCM_UNLIMITED: no pause];
   * - bosh_max_per_address: sessions from one address [16;
   *   XCM_UNLIMITED for none]. */
  unsigned bosh_wait;
  unsigned bosh_hold;
  unsigned bosh_requests;
  unsigned bosh_inactivity;
  unsigned bosh_polling;
  unsigned bosh_maxpause;
  unsigned bosh_max_per_address;
} xcm_listen_options;

/* Set size and every field of *lo to its default: as xcm_options_init. */
XCM_EXTERN int xcm_listen_options_init(xcm_listen_options *lo, size_t size);
/* The checks xcm_cm_listen makes of *lo before it opens a file or a
 * socket (proxy_trusted's syntax among them), without an instance: 0,
 * or XCM_EINVAL with errbuf naming the field and the bad value. For a
 * program that validates its configuration before it runs. */
XCM_EXTERN int xcm_listen_options_check(const xcm_listen_options *lo,
                                        char *errbuf, size_t errlen);

/* Filled by xcm_cm_stats, which writes as much of it as the caller's
 * size holds: it grows at its end only. */
/* The length of xcm_stats.stream_errors: more than XCM_COND_COUNT_. */
#define XCM_STATS_MAX_COND 48

typedef struct xcm_stats {
  uint64_t clients_accepted;
  uint64_t clients_refused; /* over a limit, or no memory */
  uint64_t clients_now;
  uint64_t clients_tls_now; /* of those, in TLS */
  uint64_t sessions_authenticated;
  uint64_t stanzas_in, stanzas_out; /* client -> server, server -> client */
  uint64_t bytes_in, bytes_out;
  /* Stream errors sent to clients, by xcm_cond. The array has room for
   * conditions yet to come, so that a new one moves no field. */
  uint64_t stream_errors[XCM_STATS_MAX_COND];
  uint64_t failed_returned; /* messages given back with <failed/> */
  uint64_t sessions_lost;   /* to the loss of every upstream link, or of
                               the node they were on (upstream_servers) */
  uint64_t hook_dropped;    /* stanzas a hook dropped or replaced badly */
  unsigned upstream_links_up;
  /* expat parsers in use (about 15 KB each), by streams in the middle of
   * an element the scanner declined and by clients with such input while
   * they log in; usually 0, and an idle session holds none. */
  unsigned xml_parsers_busy;
  /* Of clients_refused: refused at max_clients, at max_per_address. */
  uint64_t clients_refused_total_limit;
  uint64_t clients_refused_address_limit;
  /* Clients closed with connection-timeout for sending no stream header
   * within header_timeout_ms, for not authenticating within
   * auth_timeout_ms. */
  uint64_t header_timeouts;
  uint64_t auth_timeouts;
  /* Times a client's reads were paused for being over its rate. */
  uint64_t reads_shaped;
  /* Connections closed on a proxy_protocol listener for a missing,
   * malformed or oversized PROXY header (a header timeout counts in
   * header_timeouts). */
  uint64_t proxy_headers_refused;
  /* Sessions ended by xcm_cm_drain with system-shutdown (not those that
   * left by themselves meanwhile). */
  uint64_t sessions_drained;
  /* Connections closed on a proxy_protocol listener, as soon as they were
   * accepted, for coming from an address not in proxy_trusted. */
  uint64_t proxy_untrusted;
  /* Upstream nodes taking new sessions (xcm_cm_upstream_node: up); 1 or
   * 0 for a single server. */
  unsigned upstream_nodes_up;
  /* HTTP listeners (xcm_listen_options.http), all of them: connections
   * open now (not those handed to a WebSocket session), refused at
   * http_max_connections and at http_max_per_address (with 503), closed
   * for a slow request line and headers (408) or idle between requests,
   * requests refused with a 4xx status (malformed, a bad Origin, a bad
   * WebSocket handshake, over a size limit), and WebSocket upgrades
   * accepted. PROXY header refusals count in proxy_headers_refused and
   * proxy_untrusted above, as for XMPP listeners. */
  uint64_t http_connections_now;
  uint64_t http_refused_total_limit;
  uint64_t http_refused_address_limit;
  uint64_t http_header_timeouts;
  uint64_t http_idle_timeouts;
  uint64_t http_requests_refused;
  uint64_t websocket_upgrades;
  /* clients_now by what carries them (xcm_transport_kind): a socket
   * (TLS and zlib included), a WebSocket, a BOSH session, the caller's
   * own transport (xcm_cm_attach). They add up to clients_now. */
  uint64_t sessions_tcp_now;
  uint64_t sessions_websocket_now;
  uint64_t sessions_bosh_now;
  uint64_t sessions_custom_now;
  /* BOSH sessions, all HTTP listeners: open now and created; requests
   * read; answered empty after wait; a repeated rid answered again;
   * sessions ended by inactivity (the client stopped polling); requests
   * refused (unknown sid, rid out of the window, a body that is not one,
   * too many at once, polling too often); creations refused at
   * bosh_max_per_address. */
  uint64_t bosh_sessions_now;
  uint64_t bosh_sessions_created;
  uint64_t bosh_requests;
  uint64_t bosh_empty_answers;
  uint64_t bosh_repeated_rids;
  uint64_t bosh_inactivity_ends;
  uint64_t bosh_requests_refused;
  uint64_t bosh_refused_address_limit;
  /* XEP-0198 acknowledgements (xcm_options.sm_enable): clients with them
   * enabled now; <r/> sent to clients and <a/> received from them;
   * unacknowledged stanzas given back when a client ended (messages as
   * <failed/>, also counted in failed_returned; iq get/set answered);
   * those that could not be (no upstream session left: the server ended
   * it or every link was lost, logged at debug; or a return that failed,
   * logged at warn); clients ended for acknowledging more than
   * was sent (undefined-condition with <handled-count-too-high/>) and for
   * an unacked queue over its bound (policy-violation). */
  uint64_t sm_sessions_now;
  uint64_t sm_acks_requested;
  uint64_t sm_acks_received;
  uint64_t sm_returned;
  uint64_t sm_return_errors;
  uint64_t sm_bad_h;
  uint64_t sm_overflows;
  /* Clients whose connection dropped for leaving an <r/> unanswered
   * sm_ack_timeout_ms. Resumption (sm_resume_ms): sessions waiting for
   * their client now; connections dropped that left one waiting;
   * sessions resumed; <resume/> refused (unknown or expired id, another
   * user's, an h past what was sent); sessions that were not resumed in
   * time, and the stanzas they returned to the server then. */
  uint64_t sm_ack_timeouts;
  uint64_t sm_detached_now;
  uint64_t sm_detached;
  uint64_t sm_resumed;
  uint64_t sm_resume_failed;
  uint64_t sm_expired;
  uint64_t sm_expired_returned;
  /* XEP-0352 client state indication (xcm_options.csi_enable): clients
   * inactive now; stanzas held for inactive clients; of those, presences
   * dropped for a newer one from the same sender, stanzas written once
   * something made them go, messages given back to the server when the
   * client ended (also in failed_returned) and presences dropped then;
   * and flushes because a queue reached its bound. */
  uint64_t csi_inactive_now;
  uint64_t csi_held;
  uint64_t csi_superseded;
  uint64_t csi_flushed;
  uint64_t csi_returned;
  uint64_t csi_dropped;
  uint64_t csi_overflows;
} xcm_stats;

/* The stanza hook sees every stanza routed either way. */
typedef enum xcm_direction {
  XCM_TO_SERVER = 0, /* from a client, about to be routed upstream */
  XCM_TO_CLIENT = 1  /* from the server, about to be written to a client */
} xcm_direction;

typedef enum xcm_verdict {
  XCM_PASS = 0,   /* route it as it is */
  XCM_DROP = 1,   /* forget it */
  XCM_REPLACE = 2 /* route *replacement instead */
} xcm_verdict;

/* Handed to the stanza hook; it grows at its end only. */
typedef struct xcm_stanza_info {
  xcm_direction dir;
  const char *sid;   /* the client's stream id */
  const char *name;  /* "message", "presence", "iq", "auth", ... */
  const char *bytes; /* the element exactly as it travels: len bytes,
                        not NUL-terminated */
  size_t len;
  /* The session's user data (xcm_cm_session_set_data), or NULL. */
  void *session_data;
} xcm_stanza_info;

/* Return a verdict. For XCM_REPLACE set *replacement and *len to one
 * complete element (valid until the hook returns; it is copied). It is
 * read with the client's stream namespaces, like what the client sends,
 * and refused (the original is dropped and the drop counted) unless it is
 * exactly one well-formed element. Runs on the loop: keep it short. */
typedef xcm_verdict (*xcm_stanza_hook)(void *ud, const xcm_stanza_info *st,
                                       const char **replacement, size_t *len);

/* Create an instance on loop. errbuf (may be NULL) receives a message
 * naming the problem. On failure *out is NULL and there is nothing to
 * free, but a failure to set up the upstream pool (no memory, a bad CA
 * file) leaves a handle that closes, and frees the rest, on the next
 * turn of the loop: run it before uv_loop_close(). */
XCM_EXTERN int xcm_cm_new(xcm_cm **out, uv_loop_t *loop, const xcm_options *opt,
                          char *errbuf, size_t errlen);

/* Add a listener. Certificates are checked now: an expired, not yet
 * valid or mismatched one is an error naming the file. The address is
 * bound now too, so a port in use is an error here (accepting starts
 * with xcm_cm_start). */
XCM_EXTERN int xcm_cm_listen(xcm_cm *cm, const xcm_listen_options *lo,
                             char *errbuf, size_t errlen);
/* Give TLS listener i another certificate, chosen when a client asks for
 * its name (SNI); the listener's own stays the default. Checked now like
 * the first; reloaded with it. At most 16 per listener. */
XCM_EXTERN int xcm_cm_listen_add_cert(xcm_cm *cm, unsigned i,
                                      const char *cert_file,
                                      const char *key_file, char *errbuf,
                                      size_t errlen);

/* Run a client connection the caller accepted itself (a gateway with its
 * own listening socket): tcp must be initialised on the instance's loop
 * and allocated with the instance's allocator (malloc by default); libxcm
 * owns it from now on, and closes and frees it, even on failure. It is
 * served with the settings of listener i (its certificate for STARTTLS;
 * direct TLS if that listener is direct TLS). */
XCM_EXTERN int xcm_cm_adopt(xcm_cm *cm, unsigned i, uv_tcp_t *tcp);

/* Run a client connection over the caller's own transport (t is
 * copied), with the settings of listener i; peer names the other end for
 * logs and limits. *out is the connection to give received bytes to; it
 * is valid until t->close has run. */
XCM_EXTERN int xcm_cm_attach(xcm_cm *cm, unsigned i, const xcm_transport *t,
                             const char *peer, xcm_conn **out);
/* Bytes received from the peer. Not from inside a libxcm callback. */
XCM_EXTERN void xcm_conn_input(xcm_conn *c, const char *data, size_t len);
/* The peer closed its side. */
XCM_EXTERN void xcm_conn_input_end(xcm_conn *c);
/* The transport can take bytes again after its write() answered
 * XCM_EAGAIN: what waited is written when the loop turns. Not from
 * inside write() itself. */
XCM_EXTERN void xcm_conn_writable(xcm_conn *c);

/* The port of listener i (in the order added), or XCM_EINVAL when there
 * is no listener i. */
XCM_EXTERN int xcm_cm_listener_port(const xcm_cm *cm, unsigned i);

/* Start accepting clients and connect upstream. Clients that open a
 * stream before the first upstream link is up wait for it up to
 * upstream_wait_ms, and are then refused with remote-connection-failed
 * (at once with the default 0). */
XCM_EXTERN int xcm_cm_start(xcm_cm *cm);

typedef void (*xcm_shutdown_fn)(void *ud, xcm_cm *cm);

/* Stop accepting, send system-shutdown to every client, close every
 * session upstream, wait up to drain_ms for the server's answers (0: do
 * not wait), close the upstream links, then call cb (may be NULL). 0, or
 * XCM_ECLOSED when a shutdown is already under way (cb is not called
 * twice). */
XCM_EXTERN int xcm_cm_shutdown(xcm_cm *cm, unsigned drain_ms,
                               xcm_shutdown_fn cb, void *ud);

typedef void (*xcm_drain_fn)(void *ud, xcm_cm *cm);

/* Drain the instance for a rolling upgrade: close every listener at once
 * (new clients are refused, and a load balancer's health check fails, so
 * they go to another instance), then end the sessions a few at a time,
 * spread evenly over period_ms: by a time t into the period at most
 * ceil(n * t / period_ms) of the n sessions open at the start have been
 * ended (those that leave by themselves count), each with the stream
 * error system-shutdown (a text saying to reconnect) and its session
 * closed upstream, as in a shutdown. 0 ends them all at once. cb (may be
 * NULL) runs once, from the loop, when the last session is gone; the
 * instance then stays up with no listener and no session, its upstream
 * links open, until the caller calls xcm_cm_shutdown (from cb, say).
 * xcm_cm_shutdown during the drain ends the remaining sessions at once,
 * and cb is then not called. From the call on, xcm_cm_listen,
 * xcm_cm_adopt and xcm_cm_attach return XCM_ECLOSED. 0, or XCM_ECLOSED
 * when a drain or a shutdown is already under way. */
XCM_EXTERN int xcm_cm_drain(xcm_cm *cm, unsigned period_ms, xcm_drain_fn cb,
                            void *ud);

/* After the shutdown callback. Every getter (statistics, sessions,
 * links, the policy, listener ports) may be called from xcm_cm_new until
 * this, the shutdown callback and after it included, as libuv's handles
 * may be read until they are freed. */
XCM_EXTERN void xcm_cm_free(xcm_cm *cm);

/* Copy the statistics into out, as much as size (sizeof *out as the
 * caller was compiled) holds. 0, or XCM_EINVAL for a NULL out. */
XCM_EXTERN int xcm_cm_stats(const xcm_cm *cm, xcm_stats *out, size_t size);

/* Read every TLS listener's certificate and key files again and use them
 * for new connections; connections already in TLS keep theirs. All or
 * nothing: if one file is bad (unreadable, expired, not matching its
 * key), errbuf names it and nothing changes. Returns the number of
 * listeners reloaded, or a negative error. */
XCM_EXTERN int xcm_cm_reload_certs(xcm_cm *cm, char *errbuf, size_t errlen);

/* Sessions ---------------------------------------------------------- */

typedef enum xcm_session_event {
  XCM_SESSION_OPENED = 1,    /* header accepted; session created upstream */
  XCM_SESSION_AUTHENTICATED, /* SASL success or legacy auth */
  XCM_SESSION_BOUND,         /* a resource was bound: jid is set */
  XCM_SESSION_CLOSED,        /* gone: cond and text say why */
  /* XEP-0198 resumption (xcm_options.sm_resume_ms): the connection
   * dropped and the session waits for its client (cond and text say how
   * the connection ended; peer is ""); a new connection resumed it (peer
   * and tls are the new connection's). A session that is never resumed
   * ends with XCM_SESSION_CLOSED as any other. */
  XCM_SESSION_DETACHED,
  XCM_SESSION_RESUMED
} xcm_session_event;

/* Strings are valid during the call (or until the session changes).
 * Handed to callbacks and filled by xcm_cm_session: it grows at its end
 * only. */
typedef struct xcm_session_info {
  const char *sid;  /* the stream id */
  const char *peer; /* the client's address */
  /* The bound full JID, or NULL: the text of the server's bind result
   * (XML escapes resolved), never anything the client wrote. */
  const char *jid;
  int authenticated;
  int tls;
  int compressed;
  int link; /* index of the upstream link carrying it, or -1 */
  /* XCM_SESSION_CLOSED: the stream error sent to the client, NONE for an
   * orderly end or a lost connection. */
  xcm_cond cond;
  const char *text;
  /* The session's user data (xcm_cm_session_set_data), or NULL. On
   * XCM_SESSION_CLOSED it is the last chance to free it: libxcm never
   * does. */
  void *data;
  /* Waiting for its client to resume it (XCM_SESSION_DETACHED). */
  int detached;
} xcm_session_info;

typedef void (*xcm_session_fn)(void *ud, xcm_session_event ev,
                               const xcm_session_info *info);

/* Install (or, with NULL, remove) the session-event function. */
XCM_EXTERN void xcm_cm_set_session_events(xcm_cm *cm, xcm_session_fn fn,
                                          void *ud);
/* The session with stream id sid, into out as much as size (sizeof *out
 * as the caller was compiled) holds: 0, or XCM_ENOTFOUND. */
XCM_EXTERN int xcm_cm_session(const xcm_cm *cm, const char *sid,
                              xcm_session_info *out, size_t size);
/* Attach the caller's data to a session (replacing what was there; NULL
 * clears it), read back with xcm_cm_session_get_data and handed to every
 * session event and to the stanza hook. Works from inside the hook and
 * the event functions. libxcm never frees it: free it on
 * XCM_SESSION_CLOSED. 0, or XCM_ENOTFOUND. */
XCM_EXTERN int xcm_cm_session_set_data(xcm_cm *cm, const char *sid, void *data);
/* *out receives the session's data (NULL when none was set): 0, or
 * XCM_ENOTFOUND (and *out NULL). */
XCM_EXTERN int xcm_cm_session_get_data(const xcm_cm *cm, const char *sid,
                                       void **out);
/* End a session with a stream error (text may be NULL). */
XCM_EXTERN int xcm_cm_close_session(xcm_cm *cm, const char *sid, xcm_cond cond,
                                    const char *text);

/* The upstream pool ------------------------------------------------- */

/* Filled by xcm_cm_upstream_link: it grows at its end only. */
typedef struct xcm_link_info {
  const char *resource; /* "NAME/RESOURCE" of the current connection */
  int up;
  int tls;
  int compressed;
  size_t queued; /* bytes waiting to be written */
  unsigned node; /* the upstream node it goes to (0 for one server) */
} xcm_link_info;

/* Link i came up (up 1) or went down (up 0, why says why); policy is
 * the client policy Openfire sent, when it changed (else NULL). Its
 * node is xcm_cm_upstream_link(cm, i, ...).node, already up to date. */
typedef void (*xcm_link_fn)(void *ud, unsigned i, const char *resource, int up,
                            const char *why, const xcm_policy *policy);

/* Install (or, with NULL, remove) the upstream event function. */
XCM_EXTERN void xcm_cm_set_link_events(xcm_cm *cm, xcm_link_fn fn, void *ud);

/* How many links the pool has (xcm_options.connections, times the
 * nodes of upstream_servers). */
XCM_EXTERN unsigned xcm_cm_upstream_links(const xcm_cm *cm);
/* The state of link i, into out as much as size (sizeof *out as the
 * caller was compiled) holds: 0, or XCM_EINVAL when there is no link i.
 * Once the pool is closed (shutdown) every link reads as down. */
XCM_EXTERN int xcm_cm_upstream_link(const xcm_cm *cm, unsigned i,
                                    xcm_link_info *out, size_t size);

/* The upstream nodes: the servers of upstream_servers, or server_host
 * alone as node 0. Filled by xcm_cm_upstream_node: it grows at its end
 * only. */
typedef struct xcm_node_info {
  const char *server;  /* "host:port" ("[v6]:port"); NULL once the pool is
                          closed (shutdown) */
  unsigned first_link; /* its links: first_link .. first_link + links - 1 */
  unsigned links;      /* xcm_options.connections */
  unsigned links_up;
  /* Takes new sessions: a link up, and no system-shutdown since. */
  int up;
  size_t sessions; /* on its links now */
  /* Times it went away (from up to down), and the sessions that ended
   * with it (each client got remote-connection-failed). */
  uint64_t losses;
  uint64_t sessions_lost;
} xcm_node_info;

/* Node i came up (up 1: its first link after none, or after a
 * system-shutdown) or went away (up 0): its sessions are closed by then,
 * and info->sessions_lost counts them. */
typedef void (*xcm_node_fn)(void *ud, unsigned i, int up,
                            const xcm_node_info *info);

/* Install (or, with NULL, remove) the upstream node event function. */
XCM_EXTERN void xcm_cm_set_node_events(xcm_cm *cm, xcm_node_fn fn, void *ud);
/* How many nodes the upstream has (1 without upstream_servers). */
XCM_EXTERN unsigned xcm_cm_upstream_nodes(const xcm_cm *cm);
/* The state of node i, into out as much as size (sizeof *out as the
 * caller was compiled) holds: 0, or XCM_EINVAL when there is no node i.
 * Once the pool is closed (shutdown) every node reads as down, with no
 * counts. */
XCM_EXTERN int xcm_cm_upstream_node(const xcm_cm *cm, unsigned i,
                                    xcm_node_info *out, size_t size);

/* Install (or, with NULL, remove) the stanza hook. */
XCM_EXTERN void xcm_cm_set_stanza_hook(xcm_cm *cm, xcm_stanza_hook hook,
                                       void *ud);

/* The policy the server gave (NULL before the first link is up). */
XCM_EXTERN const xcm_policy *xcm_cm_policy(const xcm_cm *cm);

#ifdef __cplusplus
}
#endif
#endif
