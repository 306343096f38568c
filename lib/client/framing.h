/* The transport seam of a client: how one XMPP stream is framed on what
 * carries it. The client state machine (client.c) decides what to say
 * (a stream opened, its features, an element, a stream error, an orderly
 * close); the framing decides how that looks on this transport and in
 * how many units it goes out; the transport says whether it is already
 * encrypted and pushes back when it is full.
 *
 *   framing   carried by                      units
 *   bytes     TCP, TLS, zlib, a caller's      one byte stream: the units
 *             own byte transport (xcm/          of one call are written
 *             transport.h)                     together
 *   messages  WebSocket (RFC 7395), and       one transport message per
 *             BOSH (XEP-0124/0206)            unit, each a standalone,
 *                                             well-formed element
 *
 * What each says, for the bytes framing (RFC 6120) and the messages
 * framing (RFC 7395):
 *
 *   open      <?xml?><stream:stream ...      <open xmlns=XCM_NS_FRAMING
 *             from id version xml:lang>       from id version xml:lang/>
 *   features  <stream:features>...           <stream:features xmlns:stream
 *                                             =...>...</stream:features>
 *   element   its bytes as routed            its bytes, with xmlns=
 *                                             "jabber:client" added when
 *                                             the element relied on the
 *                                             stream's default namespace
 *   error     <stream:error>...</stream:     <stream:error xmlns:stream=
 *             error></stream:stream>          ...>...</stream:error>, then
 *                                             <close xmlns=XCM_NS_FRAMING/>
 *   close     </stream:stream>               <close xmlns=XCM_NS_FRAMING/>
 *   restart   the client's new header        the client's new <open/>
 *             (after STARTTLS, zlib, SASL)    (after SASL only)
 *   STARTTLS  offered when the listener      never: the transport is
 *             has a certificate and the       encrypted or it is not
 *             stream is not secure yet        (HTTPS/WSS count as TLS)
 *   zlib      offered after TLS if allowed   never
 *
 * BOSH (lib/web/bosh.c) fits the messages framing with a transport that
 * batches: the session-creation response carries what open says
 * (from -> from, id -> authid, version -> xmpp:version, and the
 * transport adds sid, wait, hold, requests, inactivity, polling, ver);
 * the creation and a restart (the client's <body xmpp:restart='true'/>)
 * are given to the client as an <open/>, a terminate as a <close/>;
 * features and elements are units that the transport holds until a
 * request waits and then sends together in one <body/>; an error unit
 * becomes <body type='terminate' condition='remote-stream-error'> with
 * the <stream:error> inside, close an empty terminate. The BOSH
 * transport's send() takes a unit and returns XCM_EAGAIN when no
 * request waits for it or it holds more than its high water (the client
 * then keeps what follows, up to max_out, as for a slow socket, until
 * the next request makes it writable); a unit it took and could not
 * deliver before the session ended goes back with
 * xcm__client_msg_unsent.
 *
 * Input. A bytes framing feeds whatever arrives to the client's stream
 * reader (xml/reader.h), which finds the headers, the elements and the
 * end tag itself, and restarts after STARTTLS, zlib and SASL. A
 * messages framing reads each message on its own
 * (xcm__client_msg_input): white space around it is dropped, and what
 * is left must be exactly one complete, well-formed element (else
 * not-well-formed; over the stanza limit, policy-violation), read as a
 * document of its own, so a stanza must declare xmlns='jabber:client'
 * itself. <open/> opens the stream (and again after SASL success only),
 * <close/> ends it, anything else goes through the same allow-list,
 * limits and requests as a stanza read off a stream.
 *
 * Backpressure, both ways. Out: a bytes framing queues in the stream up
 * to max_out (transport/stream.h); a messages transport's send() may
 * answer XCM_EAGAIN ("taken, but no more for now") and later call
 * xcm__client_writable(); meanwhile the client keeps what follows in
 * its own queue, up to max_out, and a client over it is dropped with its
 * messages given back to the server (<failed/>), as a socket's are. In:
 * the client pauses reading when the upstream asks (xcm__client_pause)
 * or the client is over its rate; a bytes stream stops reading, a
 * messages transport is asked to through its pause() (a message
 * delivered meanwhile is still taken). */
#ifndef XCM_CLIENT_FRAMING_H
#define XCM_CLIENT_FRAMING_H

#include <stddef.h>

#include "util/buf.h"
#include "xcm/condition.h"
#include "xcm/proto.h"

#define XCM_NS_FRAMING "urn:ietf:params:xml:ns:xmpp-framing"

/* What a stream open (or restart) tells the client. */
typedef struct xcm_frame_open {
  const char *from; /* the domain */
  const char *id;   /* the stream id */
  const char *lang; /* xml:lang, or NULL */
  int version_1;    /* version='1.0' */
} xcm_frame_open;

enum {
  XCM_FRAMING_STARTTLS = 1u << 0, /* STARTTLS can be offered */
  XCM_FRAMING_ZLIB = 1u << 1,     /* compression can be offered */
  XCM_FRAMING_MESSAGES = 1u << 2  /* one unit per transport message */
};

/* Every function appends one unit to b and returns 0, or XCM_ENOMEM
 * with b as it was. A framing is a static const table. */
typedef struct xcm_framing {
  const char *name; /* "bytes", "messages", for logs */
  unsigned caps;
  int (*open)(xcm_buf *b, const xcm_frame_open *a);
  int (*features)(xcm_buf *b, const xcm_features *f);
  /* A stream error we raise; text may be NULL. close follows. */
  int (*error)(xcm_buf *b, xcm_cond cond, const char *text);
  /* A <stream:error> the server wrote (its bytes as routed); close
   * follows. */
  int (*server_error)(xcm_buf *b, const char *bytes, size_t len);
  /* The end of the stream, orderly or after an error. */
  int (*close)(xcm_buf *b);
  /* An element routed by the server (bytes as the route held them), or
   * NULL when the bytes go out as they are: the hot path of the bytes
   * framing copies nothing. */
  int (*element)(xcm_buf *b, const char *bytes, size_t len);
} xcm_framing;

extern const xcm_framing xcm__framing_bytes;
extern const xcm_framing xcm__framing_messages;

/* What a message carrying one element holds, for the messages framing's
 * input: the RFC 7395 <open/>, <close/>, or any other element. */
enum { XCM_FRAME_ELEMENT, XCM_FRAME_OPEN, XCM_FRAME_CLOSE };
int xcm__framing_kind(const char *ns, const char *name);

#endif
