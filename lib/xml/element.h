/* One element from bytes that stand alone: a hook's replacement, a
 * server's answer the CM must read, a payload whose attributes were not
 * kept. The bytes are read as the only content of a stream whose header
 * declared decls, so a stanza sees the namespaces it would have seen on
 * its stream. */
#ifndef XCM_XML_ELEMENT_H
#define XCM_XML_ELEMENT_H

#include "xml/reader.h"

/* Read bytes as exactly one complete element (white space around it
 * allowed), calling levels (may be NULL: no tree) and then fn with it,
 * as a reader's stanza_start and stanza callbacks would be called; the
 * element is no longer than len, nested at most max_depth deep. scan
 * lets the validating scanner try first. Returns 0 when they were;
 * XCM_EXML when they hold no element, a second one, or one cut short;
 * the reader's error when it refused them (not well-formed, too deep,
 * out of memory); or the negative value fn returned. After any error fn
 * may still have run for a first element: act on what it saw only on
 * success. */
int xcm__xml_read_element(
    xcm_xml_pool *pool, const char *bytes, size_t len,
    const xcm_xml_nsdecl *decls, size_t ndecls, unsigned max_depth, int scan,
    int (*levels)(void *ud, const char *ns, const char *name),
    int (*fn)(void *ud, const xcm_xml_stanza *s), void *ud);

#endif
