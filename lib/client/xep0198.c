/* XEP-0198 stream management at the client: what the client sends
 * (<enable/>, <r/>, <a/>, <resume/>), the unacked queue around each
 * stanza written (session/sm.h keeps it), the requests for acks, and
 * the state's way out when the client ends: to a session that waits for
 * a resume, or back to the server. */
#include <stdio.h>
#include <string.h>

#include "client/authid.h"
#include "client/client_int.h"
#include "proto/cmproto.h"
#include "proto/route.h"
#include "proto/stream.h"
#include "session/sm.h"
#include "util/alloc.h"
#include "util/dec.h"
#include "xcm/error.h"
#include "xcm/proto.h"

/* An <auth/> on its way to the server: who it names, trusted once the
 * server's <success/> answers it (client/authid.h). With another <auth/>
 * still pending, a <success/> could answer either: nobody is named. */
void xcm__cl_note_authid(xcm_client *c, const xcm_xml_stanza *s) {
  xcm__free(c->ctx->alloc, c->authid);
  c->authid = NULL;
  if (xcm__req_pending(c->req, XCM_REQ_SASL) > 0) {
    c->flags |= F_NO_AUTHID;
    return;
  }
  if (c->cfg->sm_resume_ms == 0 || s->root == NULL)
    return;
  c->authid = xcm__authid_from_auth(
      c->ctx->alloc, xcm__xml_node_attr(s->root, "mechanism"), s->root->text,
      s->root->text_len, c->cfg->domain);
}

static int sm_failed(xcm_client *c, const char *cond) {
  char f[160];
  int n = snprintf(f, sizeof f,
                   "<failed xmlns=\"" XCM_NS_SM "\"><%s xmlns=\"" XCM_NS_STANZAS
                   "\"/></failed>",
                   cond);

  return xcm__cl_write_out(c, f, (size_t)n) != 0 ? XCM_ECLOSED : 0;
}

/* <enable/>: only once, and only once a resource is bound (XEP-0198
 * section 3). With resume='true' (or '1') and resumption configured,
 * the owner makes the session resumable and names its id; if it cannot,
 * the client is enabled without it. */
static int sm_enable(xcm_client *c, const xcm_xml_stanza *s) {
  const char *r =
      s->root != NULL ? xcm__xml_node_attr(s->root, "resume") : NULL;
  char id[XCM_RESUME_ID_SIZE], e[160];
  xcm_sm *sm;
  int n;

  if (!c->cfg->sm)
    return sm_failed(c, "feature-not-implemented");
  if (!(c->flags & F_BOUND) || c->sm != NULL)
    return sm_failed(c, "unexpected-request");
  sm = xcm__sm_new(c->ctx->alloc, c->cfg->sm_start);
  if (sm == NULL)
    return sm_failed(c, "resource-constraint");
  if (r != NULL && (strcmp(r, "true") == 0 || strcmp(r, "1") == 0) &&
      c->cfg->sm_resume_ms != 0 && c->cb->resumable != NULL &&
      c->cb->resumable(c->ud, id) == 0)
    n = snprintf(e, sizeof e,
                 "<enabled xmlns=\"" XCM_NS_SM
                 "\" id=\"%s\" resume=\"true\" max=\"%u\"/>",
                 id, (c->cfg->sm_resume_ms + 999) / 1000);
  else
    n = snprintf(e, sizeof e, "<enabled xmlns=\"" XCM_NS_SM "\"/>");
  if (xcm__cl_write_out(c, e, (size_t)n) != 0) {
    xcm__sm_free(c->ctx->alloc, sm);
    return XCM_ECLOSED;
  }
  /* Counting starts after <enabled/>, both ways. */
  c->sm = sm;
  if (c->cfg->counters != NULL)
    c->cfg->counters->sm_now++;
  return 0;
}

/* <r/>: how many of its stanzas we handled. */
static int sm_answer(xcm_client *c) {
  char a[64];
  int n = snprintf(a, sizeof a, "<a xmlns=\"" XCM_NS_SM "\" h=\"%u\"/>",
                   (unsigned)c->sm->h_in);

  return xcm__cl_write_out(c, a, (size_t)n) != 0 ? XCM_ECLOSED : 0;
}

/* An h past what was sent: the XEP's undefined-condition with
 * <handled-count-too-high/> (section 4). */
static int sm_too_high(xcm_client *c, uint32_t h, uint32_t sent) {
  char e[512];
  int n;

  if (c->cfg->counters != NULL)
    c->cfg->counters->sm_bad_h++;
  n = snprintf(
      e, sizeof e,
      "<stream:error><undefined-condition xmlns=\"" XCM_NS_STREAM_ERRORS
      "\"/><handled-count-too-high xmlns=\"" XCM_NS_SM
      "\" h=\"%u\" send-count=\"%u\"/><text xmlns=\"" XCM_NS_STREAM_ERRORS
      "\">You acknowledged %u stanzas, but I only sent you %u so "
      "far.</text></stream:error>",
      (unsigned)h, (unsigned)sent, (unsigned)h, (unsigned)sent);
  xcm__cl_fail_raw(c, XCM_COND_UNDEFINED_CONDITION, "handled-count-too-high", e,
                   (size_t)n);
  return XCM_ECLOSED;
}

/* h, the XEP schema's unsignedInt. */
static int sm_h(const xcm_xml_stanza *s, uint32_t *h) {
  uint64_t v;

  if (s->root == NULL ||
      xcm__parse_dec(xcm__xml_node_attr(s->root, "h"), UINT32_MAX, &v) != 0)
    return XCM_EINVAL;
  *h = (uint32_t)v;
  return 0;
}

/* <a h/>: what it covers leaves the queue. */
static int sm_acked(xcm_client *c, const xcm_xml_stanza *s) {
  uint32_t h;

  if (sm_h(s, &h) != 0)
    return xcm__cl_refuse(c, XCM_COND_BAD_FORMAT,
                          "<a/> needs h, a number from 0 to 4294967295");
  if (c->cfg->counters != NULL)
    c->cfg->counters->sm_acks_received++;
  /* An <a/> may answer an older <r/> than our last (we asked again before
   * its answer came, as a burst does every ack_every stanzas): the last
   * one is still open, and clearing the wait would let a client that
   * stops reading right after never be taken for gone. The wait starts
   * over instead (the client just showed it reads); only an h covering
   * our last request ends it. */
  if ((int32_t)(c->sm->asked - h) <= 0)
    c->sm->r_at = 0;
  else if (c->sm->r_at != 0)
    c->sm->r_at = xcm__cl_now(c);
  if (xcm__sm_ack(c->ctx->alloc, c->sm, h) == 0)
    return 0;
  return sm_too_high(c, h, c->sm->h_out);
}

/* <resume previd h/> (XEP-0198 section 5): only in place of a bind, on
 * a stream the server authenticated. The owner finds the session and,
 * if it is this user's, moves the client into it
 * (xcm__client_resumed). */
static int sm_resume(xcm_client *c, const xcm_xml_stanza *s) {
  const char *previd = s->root ? xcm__xml_node_attr(s->root, "previd") : NULL;
  uint32_t h, sent = 0;
  int err;

  if (c->cfg->sm_resume_ms == 0 || c->cb->resume == NULL)
    return sm_failed(c, "feature-not-implemented");
  if (!(c->flags & F_AUTHED) || (c->flags & (F_BOUND | F_RESUMING)) ||
      c->sm != NULL)
    return sm_failed(c, "unexpected-request");
  if (previd == NULL || sm_h(s, &h) != 0)
    return xcm__cl_refuse(c, XCM_COND_BAD_FORMAT,
                          "<resume/> needs previd and h, a number from 0 to "
                          "4294967295");
  c->flags |= F_RESUMING;
  err = c->cb->resume(c->ud, previd, h,
                      (c->flags & F_NO_AUTHID) ? NULL : c->authid, &sent);
  if (err == 0)
    return 0;
  if (err == XCM_EAGAIN && xcm__client_movable(c) &&
      xcm__cl_move_note(c, previd, h) == 0) {
    /* The rest of the read goes with the connection (on_read). */
    c->action = A_MOVE;
    return XCM_XML_RESTART;
  }
  c->flags &= ~(unsigned)F_RESUMING;
  if (c->flags & F_CLOSING)
    return XCM_ECLOSED;
  if (err == XCM_EPROTO)
    return sm_too_high(c, h, sent);
  return sm_failed(c, "item-not-found");
}

int xcm__cl_sm_element(xcm_client *c, const xcm_xml_stanza *s) {
  if (strcmp(s->name, "enable") == 0)
    return sm_enable(c, s);
  if (strcmp(s->name, "resume") == 0)
    return sm_resume(c, s);
  /* XEP-0198 section 4: <r/> and <a/> only once it is enabled. */
  if (c->sm == NULL)
    return xcm__cl_refuse(c, XCM_COND_UNSUPPORTED_STANZA_TYPE,
                          "stream management is not enabled");
  if (strcmp(s->name, "r") == 0)
    return sm_answer(c);
  if (strcmp(s->name, "a") == 0)
    return sm_acked(c, s);
  return xcm__cl_refuse(c, XCM_COND_UNSUPPORTED_STANZA_TYPE, NULL);
}

static void sm_give_back(void *ud, const char *data, size_t len) {
  xcm_client *c = ud;

  c->cb->unacked(c->ud, data, len);
}

/* Everything unacknowledged goes back to the owner, oldest first; the
 * queue is then empty, so nothing can be given twice. */
static void sm_return_queue(xcm_client *c) {
  if (c->sm != NULL && c->cb->unacked != NULL)
    xcm__sm_drain(c->ctx->alloc, c->sm, sm_give_back, c);
}

/* The connection dropped: a resumable session takes the state and
 * waits for the client, the unacknowledged stanzas with it. */
void xcm__cl_sm_detach(xcm_client *c) {
  if (c->sm == NULL || c->cb->detach == NULL)
    return;
  if (c->cb->detach(c->ud, c->sm) != 0)
    return;
  c->sm = NULL;
  if (c->cfg->counters != NULL)
    c->cfg->counters->sm_now--;
}

/* The client ends: the queue goes back and the state goes. */
void xcm__cl_sm_return_all(xcm_client *c) {
  if (c->sm == NULL)
    return;
  sm_return_queue(c);
  xcm__sm_free(c->ctx->alloc, c->sm);
  c->sm = NULL;
  if (c->cfg->counters != NULL)
    c->cfg->counters->sm_now--;
}

/* Ask the client how much it has handled. */
void xcm__cl_sm_request(xcm_client *c) {
  static const char r[] = "<r xmlns=\"" XCM_NS_SM "\"/>";

  /* Noted first: a failed write ends the client and frees the state. */
  c->sm->asked = c->sm->h_out;
  c->sm->since_bytes = 0;
  if (c->sm->r_at == 0)
    c->sm->r_at = xcm__cl_now(c);
  if (c->cfg->counters != NULL)
    c->cfg->counters->sm_acks_requested++;
  if (xcm__cl_write_out(c, r, sizeof r - 1) != 0)
    return;
  xcm__cl_due(c, c->cfg->sm_ack_timeout_ms);
}

/* The unacked queue is full: the client takes stanzas and does not
 * acknowledge them. All of them go back, the one that did not fit last,
 * and the client is ended. */
static void sm_overflow(xcm_client *c, const char *data, size_t len,
                        xcm_cond cond, const char *text) {
  sm_return_queue(c);
  if (c->cb->unacked != NULL)
    c->cb->unacked(c->ud, data, len);
  xcm__client_fail(c, cond, text);
}

/* A stanza about to be written joins the unacked queue first, so that
 * it is in exactly one place whatever the write does: if the write
 * fails, the client's end returns it with the rest. */
int xcm__cl_sm_hold(xcm_client *c, const char *data, size_t len) {
  int err = xcm__sm_push(c->ctx->alloc, c->sm, data, len,
                         c->cfg->sm_max_unacked, c->cfg->sm_max_unacked_bytes);

  if (err == XCM_ELIMIT) {
    if (c->cfg->counters != NULL)
      c->cfg->counters->sm_overflows++;
    sm_overflow(c, data, len, XCM_COND_POLICY_VIOLATION,
                "too many stanzas not acknowledged");
  } else if (err != 0) {
    sm_overflow(c, data, len, XCM_COND_RESOURCE_CONSTRAINT, NULL);
  }
  return err;
}

/* A held stanza was written: ask for an ack past a threshold, else make
 * sure a quiet spell will. */
void xcm__cl_sm_sent(xcm_client *c) {
  xcm_sm *sm = c->sm;
  const xcm_client_cfg *cfg = c->cfg;

  if (sm == NULL || (c->flags & F_CLOSING))
    return;
  sm->last_out = xcm__cl_now(c);
  if ((cfg->sm_ack_every != XCM__OFF &&
       sm->h_out - sm->asked >= cfg->sm_ack_every) ||
      (cfg->sm_ack_every_bytes != XCM__OFF &&
       sm->since_bytes >= cfg->sm_ack_every_bytes))
    xcm__cl_sm_request(c);
  else
    xcm__cl_due(c, cfg->sm_ack_quiet_ms);
}

static void resend(void *ud, const char *data, size_t len) {
  xcm_client *c = ud;

  /* A write that fails ends the client: what is left goes back with the
   * state it is in, so the rest are not written. */
  if (!(c->flags & F_CLOSING))
    xcm__cl_write_element(c, data, len, 0);
}

int xcm__client_resumed(xcm_client *c, xcm_sm *sm, const char *sid,
                        const char *previd) {
  char e[128];
  int n;

  c->flags &= ~(unsigned)F_RESUMING;
  c->sm = sm;
  if (c->cfg->counters != NULL)
    c->cfg->counters->sm_now++;
  if (c->flags & F_NOTIFIED) {
    /* Over already: what the state holds goes back now. */
    xcm__cl_sm_return_all(c);
    return XCM_ECLOSED;
  }
  if (c->flags & F_CLOSING)
    return XCM_ECLOSED; /* its end (notify) sees to the state */
  /* From now on this is that session's stream (the route's streamid). */
  snprintf(c->sid, sizeof c->sid, "%s", sid);
  xcm__cl_logged_in(c);
  sm->r_at = 0;
  n = snprintf(e, sizeof e,
               "<resumed xmlns=\"" XCM_NS_SM "\" previd=\"%s\" h=\"%u\"/>",
               previd, (unsigned)sm->h_in);
  if (n < 0 || (size_t)n >= sizeof e || xcm__cl_write_out(c, e, (size_t)n) != 0)
    return XCM_ECLOSED;
  /* Everything unacknowledged, oldest first, then ask how far the
   * client got. */
  xcm__sm_each(sm, resend, c);
  if (c->flags & F_CLOSING)
    return XCM_ECLOSED;
  if (sm->count > 0)
    xcm__cl_sm_request(c);
  return 0;
}

xcm_sm *xcm__client_release_sm(xcm_client *c) {
  xcm_sm *sm = c->sm;

  if (sm != NULL && c->cfg->counters != NULL)
    c->cfg->counters->sm_now--;
  c->sm = NULL;
  return sm;
}

int xcm__client_sm(const xcm_client *c, uint32_t *h_in, uint32_t *h_out,
                   uint32_t *unacked) {
  if (c->sm == NULL)
    return 0;
  *h_in = c->sm->h_in;
  *h_out = c->sm->h_out;
  *unacked = c->sm->count;
  return 1;
}
