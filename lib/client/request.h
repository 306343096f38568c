/* The requests of one client whose answers the CM acts on, and the
 * matching of the server's answers to them.
 *
 * While a client logs in the CM watches for three answers: the SASL
 * <success/> that authenticates the stream, the result of a XEP-0078
 * legacy auth set (which authenticates and binds), and the result of a
 * resource bind (which names the bound JID). Each counts only as the
 * answer to a request this client made and that is still pending: the
 * right element (name, namespace, type), with the id of a pending request
 * of that kind. Looking for the answer's words anywhere in the server's
 * bytes is not enough: the server echoes a client's own request in its
 * errors, so a client could write the words the CM looks for.
 *
 * The table is small and fixed: a client that logs in has one or two
 * requests pending at a time; one that would have more is refused. It
 * exists only while a request is pending (NULL otherwise), so a bound
 * session carries nothing but the pointer. */
#ifndef XCM_CLIENT_REQUEST_H
#define XCM_CLIENT_REQUEST_H

#include <stddef.h>

#include "xcm/alloc.h"
#include "xml/reader.h"

/* Requests pending at once, over every kind. */
#define XCM_REQ_MAX 4

typedef struct xcm_requests xcm_requests;

typedef enum xcm_req_kind {
  XCM_REQ_SASL = 1, /* <auth/> until <success/> or <failure/> */
  XCM_REQ_LEGACY,   /* iq set, first child in jabber:iq:auth, by id */
  XCM_REQ_BIND      /* iq set, first child in the bind namespace, by id */
} xcm_req_kind;

/* What a client may have asked, given where its login stands. */
enum { XCM_REQ_AUTHED = 1 };

/* Note what s, from the client, asks of the server. state is 0 or
 * XCM_REQ_AUTHED. Returns 0 (noted, or nothing to note), XCM_EBUSY (an
 * iq whose id is that of a pending request), XCM_EINVAL (a request
 * without an id), XCM_ELIMIT (the table is full) or XCM_ENOMEM. s must
 * carry a tree of two levels for an iq. */
int xcm__req_note(xcm_requests **t, const xcm_allocator *a,
                  const xcm_xml_stanza *s, unsigned state);

/* How many requests of kind are pending. */
unsigned xcm__req_pending(const xcm_requests *t, xcm_req_kind kind);

/* Forget every request (the table is freed; *t becomes NULL). */
void xcm__req_clear(xcm_requests **t, const xcm_allocator *a);

typedef enum xcm_answer_kind {
  XCM_ANSWER_NONE = 0,  /* not an answer to a pending request */
  XCM_ANSWER_SASL_OK,   /* <success/> to a pending <auth/> */
  XCM_ANSWER_SASL_FAIL, /* <failure/> to it */
  XCM_ANSWER_LEGACY_OK, /* result of a pending legacy auth set */
  XCM_ANSWER_LEGACY_FAIL,
  XCM_ANSWER_BOUND,    /* result of a pending bind, with its <jid/> */
  XCM_ANSWER_BIND_FAIL /* an error, or a result without a usable jid */
} xcm_answer_kind;

typedef struct xcm_answer {
  xcm_answer_kind kind;
  /* XCM_ANSWER_BOUND: the JID, the <jid/> element's text unescaped and
   * NUL-terminated, allocated with the table's allocator: the caller
   * frees it. */
  char *jid;
  size_t jid_len;
} xcm_answer;

/* Read bytes (one element the server routed to the client) as the
 * client's stream reads it (default namespace jabber:client) and match it
 * against the table. A matched answer, error or not, removes its request.
 * Returns 0 (out says what it was) or XCM_ENOMEM. Call it only while
 * *t is not NULL: that is what keeps a bound session from paying. */
int xcm__req_answer(xcm_requests **t, const xcm_allocator *a,
                    xcm_xml_pool *pool, const char *bytes, size_t len,
                    xcm_answer *out);

#endif
