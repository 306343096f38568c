/* What the CM knows of XMPP streams that the XML layer does not: their
 * namespaces, the stream headers as they usually come (as reader
 * contexts, see xml/reader.h), and reading a stanza that stands alone as
 * if it came on a stream. xml/ knows no namespace: everything XMPP about
 * a reader is handed to it from here. */
#ifndef XCM_PROTO_STREAM_H
#define XCM_PROTO_STREAM_H

#include <stddef.h>

#include "xml/reader.h"

#define XCM_NS_STREAMS "http://etherx.jabber.org/streams"
#define XCM_NS_CLIENT "jabber:client"
#define XCM_NS_CM "jabber:connectionmanager"

/* <stream:stream xmlns:stream=XCM_NS_STREAMS xmlns=...>: the header a
 * client writes (jabber:client) and the one both ends of a CM link write
 * (jabber:connectionmanager). A reader given one as its usual header
 * (xcm__xml_reader_set_usual) holds no copy of it. */
extern const xcm_xml_context xcm__stream_client;
extern const xcm_xml_context xcm__stream_cm;

/* xcm__xml_read_standalone (xml/element.h) for bytes that stand for a
 * stanza of a stream whose header declared decls: the root is
 * "stream:stream" when the header binds the stream prefix, else "stream",
 * so that stream-level elements read as they would on the stream. */
int xcm__xml_read_element(
    xcm_xml_pool *pool, const char *bytes, size_t len,
    const xcm_xml_nsdecl *decls, size_t ndecls, unsigned max_depth, int scan,
    int (*levels)(void *ud, const char *ns, const char *name),
    int (*fn)(void *ud, const xcm_xml_stanza *s), void *ud);

#endif
