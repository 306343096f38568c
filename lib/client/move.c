/* Moving a client to another instance of its resume group
 * (session/group.h): its connection (transport/stream.h's move), its
 * stream's state and the <resume/> it sent, as plain memory that may
 * cross threads, and the client built again from them there. */
#include <string.h>

#include "client/client_int.h"
#include "proto/stream.h"
#include "session/group.h"
#include "util/alloc.h"
#include "xcm/error.h"
#include "xml/writer.h"

static char *header_text(const xcm_client *c);

/* A client on its way to another instance (client.h). */
struct xcm_client_moved {
  xcm_group_item item; /* first: what an inbox links */
  const xcm_allocator *alloc;
  xcm_stream_moved *stream;
  unsigned flags;
  unsigned listener;
  uint32_t h;
  char lang[16];
  char previd[XCM_RESUME_ID_SIZE];
  char *authid;
  char *peer;
  /* The client's stream header, as our reader must see it again: its
   * namespace declarations, with the stream element's prefix. */
  char *header;
};

/* The <resume/> to take along, noted before the connection moves, with
 * the stream header as the reader knows it now (the restart that stops
 * the reader at <resume/> forgets it). */
int xcm__cl_move_note(xcm_client *c, const char *previd, uint32_t h) {
  const char *peer = xcm__client_peer(c);
  xcm_client_moved *m;

  if (strlen(previd) >= sizeof m->previd)
    return XCM_EINVAL;
  m = xcm__calloc(c->ctx->alloc, sizeof(*m));
  if (m == NULL)
    return XCM_ENOMEM;
  m->alloc = c->ctx->alloc;
  m->h = h;
  m->listener = c->cfg->listener;
  memcpy(m->previd, previd, strlen(previd) + 1);
  /* Both now, not once the connection is off the loop: the reader
   * forgets the header when it stops for the move (XCM_XML_RESTART resets
   * its document), and a socket that moved names no peer. */
  m->peer = xcm__strndup(c->ctx->alloc, peer, strlen(peer));
  m->header = header_text(c);
  if (m->peer == NULL || m->header == NULL) {
    xcm__client_moved_free(m);
    return XCM_ENOMEM;
  }
  xcm__client_moved_free(c->moving);
  c->moving = m;
  return 0;
}

/* The client's stream header as our reader knows it: the stream element
 * under the client's prefix, with every namespace it declared. NULL
 * without memory, or without a streams prefix (a reader that never saw
 * the header cannot be moving). */
static char *header_text(const xcm_client *c) {
  size_t n, i;
  const xcm_xml_nsdecl *d = xcm__xml_reader_decls(c->reader, &n);
  const char *sp = NULL;
  xcm_buf b;
  char *out = NULL;
  int err = 0;

  for (i = 0; i < n; i++)
    if (strcmp(d[i].uri, XCM_NS_STREAMS) == 0)
      sp = d[i].prefix;
  if (sp == NULL)
    return NULL;
  xcm__buf_init(&b, c->ctx->alloc);
  err |= xcm__buf_append(&b, "<", 1);
  if (sp[0] != '\0') {
    err |= xcm__buf_append(&b, sp, strlen(sp));
    err |= xcm__buf_append(&b, ":", 1);
  }
  err |= xcm__buf_append(&b, "stream", 6);
  for (i = 0; i < n && err == 0; i++) {
    err |= xcm__buf_append(&b, d[i].prefix[0] ? " xmlns:" : " xmlns",
                           d[i].prefix[0] ? 7 : 6);
    err |= xcm__buf_append(&b, d[i].prefix, strlen(d[i].prefix));
    err |= xcm__buf_append(&b, "=\"", 2);
    err |= xcm__xml_escape_attr(&b, d[i].uri, strlen(d[i].uri));
    err |= xcm__buf_append(&b, "\"", 1);
  }
  err |= xcm__buf_append(&b, ">", 2); /* with its NUL */
  if (err == 0)
    out = xcm__strndup(c->ctx->alloc, b.data, b.len - 1);
  xcm__buf_free(&b);
  return out;
}

/* The connection is off the loop (or, m NULL, it ended first: then the
 * stream's end ends the client as usual). */
static void moved(void *ud, xcm_stream_moved *sm, int err) {
  xcm_client *c = ud;
  xcm_client_moved *m = c->moving;

  (void)err;
  if (sm == NULL)
    return;
  c->moving = NULL;
  m->stream = sm;
  m->flags = c->flags & (F_SECURED | F_COMPRESSED | F_AUTHED | F_V1);
  memcpy(m->lang, c->lang, sizeof m->lang);
  if (!(c->flags & F_NO_AUTHID)) {
    m->authid = c->authid;
    c->authid = NULL;
  }
  xcm__cl_end_quietly(c);
  c->cb->moved(c->ud, m);
}

/* Lift the connection off the loop, with rest, the bytes read past
 * <resume/>. */
void xcm__cl_move_out(xcm_client *c, const char *rest, size_t len) {
  if (xcm__stream_move_out(c->stream, rest, len, moved, c) == 0)
    return;
  c->flags &= ~(unsigned)F_RESUMING;
  xcm__client_fail(c, XCM_COND_INTERNAL_SERVER_ERROR,
                   "could not move the connection to resume its session");
}

int xcm__client_movable(const xcm_client *c) {
  return (c->flags & F_TCP) && c->stream != NULL && c->proxy == NULL &&
         c->cb->moved != NULL;
}

const char *xcm__client_moved_previd(const xcm_client_moved *m) {
  return m->previd;
}

uint32_t xcm__client_moved_h(const xcm_client_moved *m) {
  return m->h;
}

const char *xcm__client_moved_authid(const xcm_client_moved *m) {
  return m->authid;
}

unsigned xcm__client_moved_listener(const xcm_client_moved *m) {
  return m->listener;
}

void xcm__client_moved_free(xcm_client_moved *m) {
  if (m == NULL)
    return;
  if (m->stream != NULL)
    xcm__stream_moved_free(m->stream);
  xcm__free(m->alloc, m->authid);
  xcm__free(m->alloc, m->peer);
  xcm__free(m->alloc, m->header);
  xcm__free(m->alloc, m);
}

int xcm__client_move_in(xcm_client **out, xcm_ctx *ctx,
                        const xcm_client_cfg *cfg, xcm_client_moved *m,
                        const xcm_client_cb *cb, void *ud) {
  xcm_client *c;
  xcm_stream_limits lim;
  size_t used;
  int err;

  *out = NULL;
  err = xcm__cl_make(&c, ctx, cfg, cb, ud);
  if (err != 0) {
    xcm__client_moved_free(m);
    return err;
  }
  c->flags = m->flags | F_OPENED | F_HEADER_SENT | F_RESUMING | F_TCP;
  memcpy(c->lang, m->lang, sizeof c->lang);
  c->authid = m->authid;
  m->authid = NULL;
  c->peer = m->peer;
  m->peer = NULL;
  xcm__cl_apply_limits(c);
  /* The reader takes the client's header again, without an answer. */
  c->flags |= F_MOVED_IN;
  err = xcm__xml_reader_feed(c->reader, m->header, strlen(m->header), &used);
  c->flags &= ~(unsigned)F_MOVED_IN;
  memset(&lim, 0, sizeof lim);
  lim.max_out = cfg->max_out;
  lim.max_inflate =
      xcm__cl_max_stanza(c) > 262144 ? xcm__cl_max_stanza(c) : 262144;
  if (err == 0)
    err = xcm__stream_move_in(&c->stream, ctx, m->stream, cfg->tls,
                              &xcm__cl_stream_cb, c, &lim);
  m->stream = NULL; /* taken, on failure too */
  xcm__client_moved_free(m);
  if (err != 0) {
    xcm__xml_reader_free(c->reader);
    xcm__free(ctx->alloc, c->authid);
    xcm__free(ctx->alloc, c->peer);
    xcm__free(ctx->alloc, c);
    return err;
  }
  c->handles = 2;
  xcm__cl_start_timer(c);
  *out = c;
  return 0;
}
