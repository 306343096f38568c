/* BOSH (XEP-0124) carrying XMPP (XEP-0206): the sessions of one HTTP
 * listener. Each session is a client of the messages framing
 * (client/framing.h) over a transport that batches: the elements a
 * request's <body/> holds are given to the client one by one, in rid
 * order; what the client sends is held until a request waits, then all
 * of it goes out in one <body/>.
 *
 *   session   a sid (16 bytes from the system's random source, in hex),
 *             found in a map; wait, hold, requests, inactivity, polling,
 *             maxpause and ver agreed at creation (the lower of what the
 *             client asks and the listener allows)
 *   rids      requests are processed in rid order: one that comes early
 *             (up to `requests` ahead) waits for the ones before it; a
 *             repeated rid gets the same answer again (the last
 *             `requests` answers are kept); a rid out of the window ends
 *             the session with item-not-found
 *   holding   at most `hold` processed requests wait for data; a newer
 *             one answers the oldest; after `wait` seconds a request is
 *             answered empty
 *   keys      a client that sent newkey at creation sends the next key
 *             of its sequence (XEP-0124 15) with every request: checked
 *             on arrival before the request touches anything, and
 *             exactly in rid order; a wrong or missing one ends the
 *             session (item-not-found) unprocessed. route, accept and
 *             charsets are ignored (one server, UTF-8, no compression)
 *   answers   in the order the requests came on each HTTP connection
 *             (HTTP/1.1 pipelining), whatever order they are made in
 *   ends      the client's terminate, the server's (a stream error, as
 *             remote-stream-error with the error inside), a broken rule
 *             (policy-violation for too many requests at once, polling
 *             too often or a pause over maxpause, item-not-found,
 *             bad-request), and inactivity:
 *             no request for `inactivity` seconds (or the client's
 *             pause), after which the client ends as if its connection
 *             broke: the messages it did not get go back to the server
 *             (<failed/>)
 *
 * Memory follows activity: a session between requests holds its struct,
 * its timer and the client; no HTTP buffer and no parser (the body is
 * read when its request comes, and the answers kept for a repeated rid
 * are only non-empty ones not yet acknowledged).
 *
 * Legacy clients (no ver, or one below 1.6) hear of a broken rule as an
 * HTTP status (400, 403, 404), as XEP-0124 section 16 has it; newer ones
 * get a terminate <body/> with the condition. */
#ifndef XCM_WEB_BOSH_H
#define XCM_WEB_BOSH_H

#include <stddef.h>
#include <stdint.h>

#include "client/client.h"
#include "core/ctx.h"
#include "http/http.h"

typedef struct xcm_bosh xcm_bosh;

/* A listener's BOSH settings: maxima for what a client asks, and what
 * the CM sets itself. Seconds, as XEP-0124 counts them. */
typedef struct xcm_bosh_cfg {
  unsigned wait;            /* longest wait granted */
  unsigned hold;            /* most requests held at once */
  unsigned requests;        /* most requests under way at once (> hold) */
  unsigned inactivity;      /* no request for this long ends a session */
  unsigned polling;         /* shortest gap between two empty polls */
  unsigned maxpause;        /* longest pause granted (0: no pause) */
  unsigned max_per_address; /* sessions from one address (XCM__OFF: any) */
  size_t max_child;         /* one element in a body: the stanza limit */
  unsigned max_depth;
  size_t high_water; /* held for a session before the client is told
                        to keep the rest itself */
  /* For the fuzz target only: every session gets this sid (one at a
   * time), so that its inputs can name it. NULL: random. */
  const char *fixed_sid;
} xcm_bosh_cfg;

/* Counted by the layer, for statistics and tests. */
typedef struct xcm_bosh_counters {
  uint64_t created;         /* sessions created */
  uint64_t requests;        /* requests read */
  uint64_t empty;           /* answered empty after wait (or displaced) */
  uint64_t repeated;        /* a repeated rid answered again */
  uint64_t inactive;        /* sessions ended by inactivity */
  uint64_t errors;          /* requests refused: sid, rid, body, rules */
  uint64_t refused_address; /* creations refused at max_per_address */
  unsigned now;             /* sessions open */
} xcm_bosh_counters;

/* A new session's client: as xcm__cm_attach_msg (attach.h). */
typedef int (*xcm_bosh_attach_fn)(void *ud, const xcm_msg_transport *t,
                                  const char *peer, xcm_client **out);

/* cfg is copied. */
int xcm__bosh_new(xcm_bosh **out, xcm_ctx *ctx, const xcm_bosh_cfg *cfg,
                  xcm_bosh_attach_fn attach, void *attach_ud);
/* The HTTP server's handlers for this layer: bosh, gone and ud set, the
 * rest left as they are. */
void xcm__bosh_handlers(xcm_bosh *b, xcm_http_handlers *h);
const xcm_bosh_counters *xcm__bosh_counters(const xcm_bosh *b);
/* End every session (a shutdown: their clients end as if their
 * connections broke) and take no new one; done(ud) runs from the loop
 * once every session's timer is closed, or at once when there are
 * none. */
void xcm__bosh_close(xcm_bosh *b, void (*done)(void *ud), void *ud);
/* Only once closed (or never having served). */
void xcm__bosh_free(xcm_bosh *b);
/* Bytes one session holds now, its client included, for the benchmark
 * and tests: the session with this sid, or 0. */
size_t xcm__bosh_session_footprint(const xcm_bosh *b, const char *sid);

#endif
