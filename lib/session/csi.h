/* XEP-0352 Client State Indication at the CM: while a client says it is
 * <inactive/>, what the server routes to it that it does not need at
 * once waits here, and goes out, in order, as soon as something it does
 * need comes, when it says <active/> again, or when too much waits.
 * Plain bookkeeping with no I/O of its own, like session/sm.h: the
 * client (client/client.c) takes the elements, passes every routed
 * stanza through xcm__csi_route() and writes what this layer hands to
 * its write() as it would have written it.
 *
 * What waits (xcm__csi_classify):
 * - a presence without a type or of type unavailable: it states where a
 *   contact is now, and only the latest one per sender ('from', exactly
 *   as routed) is worth sending. A newer one drops the older from its
 *   place in the queue and joins at the end, so the queue stays in
 *   arrival order: a client never sees a sender's presence before
 *   something that sender's contact sent earlier (counted superseded);
 * - a message without a <body/> and without an encrypted payload that
 *   carries a chat state (XEP-0085), or any message or presence with a
 *   child in one of the operator's hold namespaces.
 * Everything else is urgent and goes at once, after everything that
 * waited: a message with a body or an encrypted payload (OMEMO, legacy
 * OpenPGP, OX), every iq (someone waits for its answer, and an iq cannot
 * be given back), a presence of any other type (subscription requests
 * and errors), a stanza with a child in one of the operator's urgent
 * namespaces, and anything that cannot be read (it is written as is).
 *
 * When the client ends with stanzas waiting, messages go back to the
 * server as undelivered ones do (<failed/>: stored offline or sent to
 * another resource), and presences are dropped: they are state the
 * server sends again at the next login.
 *
 * Memory follows activity: an active client holds a NULL pointer; an
 * inactive one with nothing waiting holds sizeof(xcm_csi) (40 bytes on
 * 64-bit); a queue holds its stanzas' bytes, up to the bounds. */
#ifndef XCM_SESSION_CSI_H
#define XCM_SESSION_CSI_H

#include <stddef.h>
#include <stdint.h>

#include "session/counters.h"
#include "xcm/alloc.h"
#include "xml/reader.h"

#define XCM_NS_CSI "urn:xmpp:csi:0"

/* Namespaces in each of the operator's lists, at most. */
#define XCM_CSI_MAX_NS 16
/* A routed stanza longer than this is urgent without being read: it is
 * neither a presence nor a chat state, and reading it costs a tree of
 * its children. */
#define XCM_CSI_MAX_READ 16384

/* The operator's rules, parsed from two comma-separated lists. Each
 * entry points into the list's string, which must outlive the rules. */
typedef struct xcm_csi_ns {
  const char *ns; /* not NUL-terminated */
  size_t len;
} xcm_csi_ns;

typedef struct xcm_csi_rules {
  xcm_csi_ns hold[XCM_CSI_MAX_NS];
  xcm_csi_ns urgent[XCM_CSI_MAX_NS];
  unsigned nhold, nurgent;
} xcm_csi_rules;

/* What a client's listener says of CSI (client/client.h's cfg). */
typedef struct xcm_csi_cfg {
  int enable;            /* offer it, take <inactive/> and <active/> */
  unsigned max_held;     /* stanzas waiting, at most */
  size_t max_held_bytes; /* ... and their bytes */
  xcm_csi_rules rules;
} xcm_csi_cfg;

/* Parse hold and urgent (each NULL, "" or namespaces separated by commas,
 * white space around each ignored) into *out (may be NULL: check only).
 * 0, or XCM_EINVAL with why saying which list and what is wrong: an
 * empty entry, white space or one of <>"'& inside a namespace, more than
 * XCM_CSI_MAX_NS, one namespace in both lists, or one of the
 * namespaces this layer decides itself (chat states and the encrypted
 * payloads). which names the lists in why: which[0] for hold,
 * which[1] for urgent. */
int xcm__csi_rules_parse(xcm_csi_rules *out, const char *hold,
                         const char *urgent, const char *const which[2],
                         char *why, size_t whylen);

typedef enum xcm_csi_kind {
  XCM_CSI_URGENT = 0,    /* deliver now, after what waits */
  XCM_CSI_HOLD = 1,      /* wait */
  XCM_CSI_SUPERSEDE = 2, /* wait, replacing what waits from the same key */
} xcm_csi_kind;

/* What a routed stanza is (bytes: one element as the server routed it,
 * read in the client stream's namespaces). For XCM_CSI_SUPERSEDE, its
 * key (the 'from', unescaped) is copied to key (*key_len bytes, not
 * NUL-terminated); a 'from' missing or longer than keycap makes it a
 * plain XCM_CSI_HOLD. *message says whether it is a <message/> (what
 * goes back to the server at an end). Linear in len; anything it cannot
 * read is urgent. */
xcm_csi_kind xcm__csi_classify(xcm_xml_pool *pool, const xcm_csi_rules *rules,
                               const char *bytes, size_t len, char *key,
                               size_t keycap, size_t *key_len, int *message);

/* ---- the queue ---------------------------------------------------------- */

typedef struct xcm_csi {
  /* Waiting stanzas, oldest first from head: each an entry header, its
   * bytes and its key. Entries superseded stay until the dead bytes
   * outgrow the live ones. NULL while empty. */
  char *q;
  uint32_t head, len, cap; /* bytes of q */
  uint32_t count;          /* stanzas waiting (superseded ones aside) */
  uint32_t bytes;          /* ... their bytes */
  uint32_t dead;           /* bytes of q held by superseded entries */
  /* Inside xcm__csi_flush: the client may end from a write, and
   * xcm__csi_end then leaves the freeing to the flush. */
  unsigned flushing : 1;
  unsigned ended : 1;
} xcm_csi;

xcm_csi *xcm__csi_new(const xcm_allocator *a);
void xcm__csi_free(const xcm_allocator *a, xcm_csi *csi);

/* Hold bytes (copied): message says what xcm__csi_drain tells of it;
 * with key, the entry waiting with the same key leaves first (*superseded
 * set to 1). XCM_ELIMIT when max_count stanzas or max_bytes bytes would
 * be passed then (XCM__OFF: no bound), XCM_ENOMEM; either way nothing
 * changed. */
int xcm__csi_push(const xcm_allocator *a, xcm_csi *csi, const char *bytes,
                  size_t len, int message, const char *key, size_t key_len,
                  uint32_t max_count, size_t max_bytes, int *superseded);
/* Take the oldest stanza out: its bytes stay valid until the next push,
 * drain or free. 0 when empty. urgent: it was pushed by xcm__csi_route
 * to go out after what waited, not held. */
int xcm__csi_pop(xcm_csi *csi, const char **bytes, size_t *len, int *urgent);
/* Call fn, oldest first, with each stanza waiting and whether it is a
 * message, then empty the queue. Returns how many. */
size_t xcm__csi_drain(const xcm_allocator *a, xcm_csi *csi,
                      void (*fn)(void *ud, const char *bytes, size_t len,
                                 int message),
                      void *ud);
/* What the state holds in memory. */
size_t xcm__csi_footprint(const xcm_csi *csi);

/* ---- the protocol, for the client --------------------------------------- */

/* How the client writes and gives back for this layer. */
typedef struct xcm_csi_out {
  /* Write one stanza now, exactly as delivery would have (XEP-0198 counts
   * it then). 0, or nonzero once the client ended: nothing more is
   * written. */
  int (*write)(void *ud, const char *bytes, size_t len);
  /* A message the client will never get (it ended): back to the server.
   * Called only from xcm__csi_end. */
  void (*give_back)(void *ud, const char *bytes, size_t len);
  void *ud;
} xcm_csi_out;

/* <inactive/>: the state is made if there is none. 0, or XCM_ENOMEM
 * (the client stays active). st may be NULL. */
int xcm__csi_inactive(xcm_csi **p, const xcm_allocator *a, xcm_counters *st);
/* <active/>: what waits goes out, and the state goes. 0, or XCM_ECLOSED
 * when the client ended meanwhile. */
int xcm__csi_active(xcm_csi **p, const xcm_allocator *a, xcm_counters *st,
                    const xcm_csi_out *out);
/* What the server routed to an inactive client (*p not NULL): one
 * element, or (element 0) text the route carries instead, which is
 * written as it comes (after what waits, unless it is white space). 1
 * when this layer took it (it waits, or it went out through write()
 * after what waited, or the client ended meanwhile: either way the
 * caller is done with it); 0 when the caller delivers it now, as if the
 * client were active. Not from inside write(). */
int xcm__csi_route(xcm_csi **p, const xcm_allocator *a, const xcm_csi_cfg *cfg,
                   xcm_counters *st, xcm_xml_pool *pool, const char *bytes,
                   size_t len, int element, const xcm_csi_out *out);
/* Whether a flush is writing: the client's write path must not route
 * into this layer again. */
int xcm__csi_flushing(const xcm_csi *csi);
/* The client ends: messages waiting go back through give_back(), the
 * rest is dropped, and the state goes (from inside a flush, once the
 * flush is over). */
void xcm__csi_end(xcm_csi **p, const xcm_allocator *a, xcm_counters *st,
                  const xcm_csi_out *out);

#endif
