/* Internals of the testkit (include/xcm/testkit.h), shared by its files:
 *
 *   kit.c    lifecycle, the listener, heartbeats, accounts, local
 *            clients, fault controls and observation;
 *   link.c   one CM connection: header, handshake, configuration iq,
 *            session iqs, routes, and which connection carries what;
 *   xmpp.c   the XMPP server behind the routes: binding, rosters,
 *            presence, message and iq routing, offline storage;
 *   sasl.c   PLAIN, ANONYMOUS and SCRAM-SHA-1;
 *   tag.c    rewriting start tags the way Openfire's serializer does;
 *   witness.c an independent strict reading of everything a CM sends.
 *
 * Re-entrancy. Event callbacks and local clients' stanza callbacks run
 * in the middle of routing and may call back into the testkit. So:
 * connections are only ever dropped at the top of the call stack (a drop
 * asked for inside is marked and done by xcm__tk_leave()); sessions are
 * reference-counted, and one that ends while someone holds it is
 * unlinked at once but freed when the last hold goes; and every loop over
 * several recipients first takes a snapshot of them, holding each. */
#ifndef XCM_TESTKIT_TESTKIT_H
#define XCM_TESTKIT_TESTKIT_H

#include <stddef.h>
#include <stdint.h>

#include "core/ctx.h"
#include "transport/stream.h"
#include "util/buf.h"
#include "util/map.h"
#include "xcm/testkit.h"
#include "xml/reader.h"

#define XCM_TK_ID_LEN 10 /* Openfire's stream ids: 10 base-36 digits */

typedef struct xcm_tk_conn xcm_tk_conn;
typedef struct xcm_tk_group xcm_tk_group;
typedef struct xcm_tk_session xcm_tk_session;
typedef struct xcm_tk_user xcm_tk_user;
typedef struct xcm_tk_item xcm_tk_item;
typedef struct xcm_tk_offline xcm_tk_offline;
typedef struct xcm_tk_witness xcm_tk_witness;

enum xcm_tk_conn_state {
  XCM_TK_HEADER, /* waiting for the CM's stream header */
  XCM_TK_OPEN,   /* header answered; waiting for the handshake */
  XCM_TK_UP,     /* handshaken */
  XCM_TK_DEAD    /* dropped; waiting for the stream's closed callback */
};

enum xcm_tk_drop { XCM_TK_ABORT = 1, XCM_TK_FLUSH };

struct xcm_tk_conn {
  xcm_testkit *kit;
  xcm_stream *stream;
  xcm_xml_reader *reader;
  xcm_tk_witness *witness; /* NULL when the option is off */
  uint64_t number;         /* in order of acceptance, for messages */
  enum xcm_tk_conn_state state;
  char id[XCM_TK_ID_LEN + 1];
  char *addr;          /* "CM/RES" as the header's to gave it */
  int32_t addr_hash;   /* Java's hash of addr */
  xcm_tk_group *group; /* once the header named one */
  int registered;      /* in group's list: Openfire routes to it */
  uint64_t reg_seq;    /* order of registration, for ties in a bucket */
  uint64_t up_seq;     /* order of handshakes, for observation */
  int peer_gone;       /* the CM closed or reset it: not counted as dropped */
  int tls_on;
  int tls_pending; /* <proceed/> written: start TLS after this feed */
  int zlib_on;
  int zlib_pending; /* <compressed/> written: start zlib after this feed */
  enum xcm_tk_drop drop_pending;
  xcm_tk_conn *next, *prev;   /* every connection with a live stream */
  xcm_tk_conn *gnext, *gprev; /* the group's registered connections */
};

/* The connections and sessions of one CM (the domain part of CM/RES). */
struct xcm_tk_group {
  xcm_map_entry entry; /* in kit->groups, keyed by name */
  char *name;
  xcm_tk_conn *head, *tail; /* registered, in registration order */
  unsigned nconns;
  unsigned refs;    /* connections pointing here, registered or not */
  xcm_map sessions; /* xcm_tk_session.by_sid */
};

enum xcm_tk_sasl {
  XCM_TK_SASL_NONE = 0,
  XCM_TK_SASL_PLAIN_WAIT, /* empty challenge sent, response expected */
  XCM_TK_SASL_SCRAM_FIRST_WAIT,
  XCM_TK_SASL_SCRAM_FINAL_WAIT
};

struct xcm_tk_session {
  xcm_map_entry by_sid; /* in group->sessions (CM-hosted only) */
  xcm_map_entry by_jid; /* in kit->jids once bound */
  xcm_testkit *kit;
  xcm_tk_group *group; /* NULL: a local client */
  char *sid;
  /* Where the server addresses it: "DOMAIN/SID" before binding (as the
   * captures' bind result shows), the full JID after. */
  char *addr;
  char *full; /* the full JID once bound, else NULL */
  xcm_tk_user *user;
  xcm_tk_session *unext, *uprev; /* user's bound sessions */
  xcm_tk_session *knext, *kprev; /* kit->sessions */
  unsigned refs;
  int dead;
  int authed;
  int available;
  int was_available; /* sent available presence at some point */
  int priority;
  uint64_t avail_seq; /* when it last became available */
  xcm_buf presence;   /* its last broadcast presence, from stamped */

  enum xcm_tk_sasl sasl;
  xcm_buf sasl_msg;       /* SCRAM: client-first-bare "," server-first */
  char *sasl_gs2;         /* SCRAM: the gs2 header, for the c= check */
  char *sasl_nonce;       /* SCRAM: client and server nonce */
  xcm_tk_user *sasl_user; /* SCRAM: who is authenticating */
  unsigned char salted[20];

  xcm_testkit_stanza_fn cb; /* local clients */
  void *cb_ud;
};

struct xcm_tk_item {
  xcm_tk_item *next;
  char *jid; /* bare */
  char *name;
  char sub[8]; /* none, to, from, both */
};

struct xcm_tk_offline {
  xcm_tk_offline *next;
  char stamp[32]; /* XEP-0082, UTC with milliseconds */
  size_t len;
  char bytes[]; /* the message as stored */
};

struct xcm_tk_user {
  xcm_map_entry entry; /* in kit->users */
  char *name;
  char *password; /* NULL for anonymous users */
  unsigned char salt[16];
  int anonymous;
  unsigned refs; /* sessions authenticated as this user */
  xcm_tk_item *roster;
  xcm_tk_offline *offline, *offline_tail;
  unsigned noffline;
  xcm_tk_session *sessions; /* bound ones */
};

struct xcm_testkit {
  xcm_ctx ctx;
  xcm_testkit_options opt; /* strings point into the copies below */
  char *domain, *secret, *host, *cert_file, *key_file;
  xcm_tls_config *tls;

  uv_tcp_t listener;
  uv_timer_t heartbeat;
  int port;
  unsigned handles_open;
  unsigned streams_open;

  xcm_tk_conn *conns;
  xcm_map groups;
  uint64_t conn_seq;
  unsigned registered; /* over every group: the size of Openfire's map */
  unsigned table_bits; /* of the Java map whose order we follow */
  xcm_map users;
  xcm_map jids; /* bound sessions by full JID */
  xcm_tk_session *sessions;
  unsigned nsessions;
  uint64_t seq;

  uint64_t rng; /* xorshift state */
  unsigned iq_prefix;
  unsigned iq_counter;

  xcm_buf config; /* the last configuration iq sent */
  int refuse_creates;
  int stalled;

  int busy;
  int close_pending;
  int closing;
  int finishing;
  int listening;
  int self_free; /* xcm_testkit_new failed: free on the last close */
  xcm_testkit_close_fn close_cb;
  void *close_ud;

  xcm_testkit_stats stats;
  char *first_violation; /* see xcm_testkit_first_violation() */
  xcm_map witness_sids;  /* every session id a CM asked to create */
};

/* kit.c */
void xcm__tk_enter(xcm_testkit *kit);
void xcm__tk_leave(xcm_testkit *kit);
uint64_t xcm__tk_rand(xcm_testkit *kit);
void xcm__tk_random_id(xcm_testkit *kit, char *out, size_t n);
/* "NNN-NNN", as Openfire's packet ids. out: at least 24 bytes. */
void xcm__tk_iq_id(xcm_testkit *kit, char *out, size_t cap);
void xcm__tk_event(xcm_testkit *kit, xcm_testkit_event_type type,
                   const char *conn, const xcm_tk_session *s);
xcm_tk_user *xcm__tk_user(const xcm_testkit *kit, const char *name, size_t len);
int xcm__tk_user_add(xcm_testkit *kit, const char *name, const char *password,
                     int anonymous, xcm_tk_user **out);
void xcm__tk_user_unref(xcm_testkit *kit, xcm_tk_user *u);
int xcm__tk_build_config(xcm_testkit *kit, xcm_buf *b);
int xcm__tk_link_tls_offered(const xcm_testkit *kit);
/* A connection's stream is closed and its memory gone. */
void xcm__tk_stream_closed(xcm_testkit *kit);

/* link.c */
int xcm__tk_conn_accept(xcm_testkit *kit, uv_tcp_t *tcp);
/* Mark for dropping; done by xcm__tk_leave(). */
void xcm__tk_conn_drop(xcm_tk_conn *c, enum xcm_tk_drop how);
void xcm__tk_conn_do_drop(xcm_tk_conn *c);
/* 0, or XCM_ELIMIT after which c is being dropped. */
int xcm__tk_conn_write(xcm_tk_conn *c, const char *data, size_t len);
/* The connection Openfire would use for sid, and the one it would pick
 * at random for an iq answer; NULL when the CM has none. */
xcm_tk_conn *xcm__tk_group_pick(xcm_tk_group *g, const char *sid);
xcm_tk_conn *xcm__tk_group_any(xcm_tk_group *g);
void xcm__tk_group_unref(xcm_testkit *kit, xcm_tk_group *g);
/* Free g if nothing refers to it any more. */
void xcm__tk_group_gc(xcm_testkit *kit, xcm_tk_group *g);
int32_t xcm__tk_java_hash(const char *s, size_t len);

/* A stanza error as Openfire words it: condition, legacy code, type, and
 * optionally an application condition in the CM protocol's errors
 * namespace. */
typedef struct xcm_tk_error {
  const char *cond;
  const char *code;
  const char *type;
  const char *extra; /* may be NULL */
} xcm_tk_error;

/* Appends the whole <error/> element for e to b. */
int xcm__tk_put_error(xcm_buf *b, const xcm_tk_error *e);

/* xmpp.c */
int xcm__tk_session_new(xcm_testkit *kit, xcm_tk_group *g, const char *sid,
                        xcm_tk_session **out);
void xcm__tk_session_hold(xcm_tk_session *s);
void xcm__tk_session_release(xcm_tk_session *s);
/* Gone at once, without a word to anybody (xcm_testkit_close). */
void xcm__tk_session_unlink(xcm_tk_session *s);
/* A stanza from the session's client: el is its tree, bytes its exact
 * text. Returns 0, or XCM_EPROTO for an element that is no stanza (the
 * caller answers unknown-stanza). */
int xcm__tk_session_input(xcm_tk_session *s, const xcm_xml_node *el,
                          const char *bytes, size_t len);
/* Deliver to the session's client: stanza bytes, or (raw) bytes Openfire
 * writes through its raw-text path (SASL answers, stream errors), which
 * it frames with the attributes in another order. */
void xcm__tk_deliver(xcm_tk_session *s, const char *bytes, size_t len, int raw);
/* The CM closed the session: unavailable presence (to itself too, as
 * Openfire does), then it is gone. */
void xcm__tk_session_end(xcm_tk_session *s, int self_too);
/* The server ends it: stream error, close iq, unavailable presence. */
void xcm__tk_session_kick(xcm_tk_session *s, xcm_cond cond);
int xcm__tk_bind(xcm_tk_session *s, const char *resource, size_t len);
/* Store a message for user; 0 or XCM_ELIMIT when the store is full. */
int xcm__tk_offline_store(xcm_testkit *kit, xcm_tk_user *u, const char *bytes,
                          size_t len);
/* The account name[0..len) if password is right; with open_accounts an
 * unknown name gets an account. NULL otherwise. */
xcm_tk_user *xcm__tk_check_password(xcm_testkit *kit, const char *name,
                                    size_t len, const char *password,
                                    size_t plen);
/* Authenticated as u (SASL or XEP-0078). */
void xcm__tk_authed(xcm_tk_session *s, xcm_tk_user *u);

/* sasl.c */
void xcm__tk_sasl(xcm_tk_session *s, const xcm_xml_node *el);
void xcm__tk_sasl_reset(xcm_tk_session *s);

/* tag.c: attribute edits on the start tag of one well-formed element. */
typedef struct xcm_tk_attr_op {
  const char *name;  /* as written, e.g. "from", "xml:lang", "xmlns" */
  const char *match; /* only when the raw value equals this; NULL: any */
  const char *value; /* new value (escaped here); NULL removes */
  int first;         /* when appended: put it first, not last */
} xcm_tk_attr_op;

/* Append bytes to b with ops applied to its start tag: an attribute that
 * is there gets its new value in place (dom4j keeps attribute order), a
 * missing one is appended (unless match is set). */
int xcm__tk_rewrite(xcm_buf *b, const char *bytes, size_t len,
                    const xcm_tk_attr_op *ops, size_t nops);
/* Append bytes to b with child inserted as its last child. */
int xcm__tk_add_child(xcm_buf *b, const char *bytes, size_t len,
                      const char *child, size_t child_len);
/* The bytes between the start and end tags ("" for an empty element). */
void xcm__tk_content(const char *bytes, size_t len, const char **content,
                     size_t *content_len);
/* The length of the start tag, and whether it closes the element. */
size_t xcm__tk_start_tag(const char *bytes, size_t len, int *self_closing);
/* The raw value of attribute name on the start tag, or 0. */
int xcm__tk_attr_raw(const char *bytes, size_t len, const char *name,
                     const char **value, size_t *vlen);

/* witness.c */
/* number: the connection's, for messages. */
int xcm__tk_witness_new(xcm_tk_witness **out, xcm_testkit *kit,
                        uint64_t number);
void xcm__tk_witness_free(xcm_tk_witness *w);
/* Exactly the bytes the connection's reader consumed, in order. */
void xcm__tk_witness_feed(xcm_tk_witness *w, const char *data, size_t len);
/* Where the reader restarts the stream (STARTTLS, compression). */
void xcm__tk_witness_restart(xcm_tk_witness *w);
/* Violations it reported, and how it names its connection. */
unsigned xcm__tk_witness_count(const xcm_tk_witness *w);
const char *xcm__tk_witness_name(const xcm_tk_witness *w);
/* The witness's record of created sessions, at xcm_testkit_free(). */
void xcm__tk_witness_forget(xcm_testkit *kit);
/* Count, log at error level and, if it is the first, keep: conn names
 * the connection, off the byte offset in what it sent, bytes[0..len)
 * the offending bytes (quoted, escaped; more: they go on). */
void xcm__tk_violation(xcm_testkit *kit, const char *conn, uint64_t off,
                       const char *what, const char *bytes, size_t len,
                       int more);

#endif
