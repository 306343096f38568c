/* Resumption across instances (XEP-0198 section 5): xcmd runs one
 * instance per worker thread behind SO_REUSEPORT, so a phone's new
 * connection usually reaches another worker than the session it
 * resumes. The session cannot move: Openfire knows it under its
 * worker's CM name. So the connection moves to the session.
 *
 * The group is what the instances share, and the only thing they share:
 * a table of live resumption ids (whose session, on which instance),
 * and one inbox per instance for the connections moving to it. Both sit
 * behind one mutex; everything else stays on each instance's own loop.
 * An inbox is a list and a uv_async_t of its instance's loop, which
 * libuv lets any thread signal.
 *
 * The hand-over, for a <resume/> whose id is in the table under another
 * instance (A) and whose user is the one the new connection (on B)
 * authenticated as:
 *   B: closes the connection's own unbound session upstream, lifts the
 *      socket, its TLS and zlib state and the bytes read past <resume/>
 *      off its loop (xcm__client_move_out), and posts them to A.
 *   A: builds a client on its own loop from them and resumes the
 *      session as for a local <resume/>: <resumed/>, then everything
 *      unacknowledged.
 * The session's own checks (h, still live) are made on A; a session
 * that ended in between ends the moved connection with a stream error,
 * as a resume that lost a race with an expiry. */
#ifndef XCM_SESSION_GROUP_H
#define XCM_SESSION_GROUP_H

#include <uv.h>

#include "xcm/xcm.h"

/* Instances in one group, at most. */
#define XCM_GROUP_MAX 256

/* What an inbox holds: the caller's struct begins with this. */
typedef struct xcm_group_item {
  struct xcm_group_item *next;
} xcm_group_item;

/* Join g with inbox, an initialised uv_async_t on the instance's loop
 * that the instance closes only after xcm__group_leave. *index receives
 * the instance's number in the group. XCM_ELIMIT when it is full. */
int xcm__group_join(xcm_resume_group *g, uv_async_t *inbox, unsigned *index);
/* Leave it: what was posted and not taken is freed with drop (called
 * under the group's lock: it must not call back into the group), and
 * nothing is posted here any more. */
void xcm__group_leave(xcm_resume_group *g, unsigned index,
                      void (*drop)(xcm_group_item *it));

/* A resumable session on instance index, of user jid (its bound JID):
 * 0, or XCM_ENOMEM. id is unique (128 random bits). */
int xcm__group_add(xcm_resume_group *g, const char *id, unsigned index,
                   const char *jid);
void xcm__group_remove(xcm_resume_group *g, const char *id);
/* The instance holding id's session for the user authid (a bare JID,
 * client/authid.h): 0 and *index, or XCM_ENOTFOUND (no such id, or
 * another user's). */
int xcm__group_find(xcm_resume_group *g, const char *id, const char *authid,
                    unsigned *index);

/* Post it to instance index's inbox (its loop wakes): 0, or XCM_ECLOSED
 * when that instance has left (it stays the caller's). */
int xcm__group_post(xcm_resume_group *g, unsigned index, xcm_group_item *it);
/* Everything in index's inbox, oldest first, now the caller's. */
xcm_group_item *xcm__group_take(xcm_resume_group *g, unsigned index);

#endif
