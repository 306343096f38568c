/* One element from bytes that stand alone, outside the document they
 * belong to (an element handed in by someone else, one taken out of
 * another element). The bytes are read as the only content of a document
 * whose root start tag set ctx, so the element sees the namespaces it
 * would have seen there. */
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
int xcm__xml_read_standalone(
    xcm_xml_pool *pool, const xcm_xml_context *ctx, const char *bytes,
    size_t len, unsigned max_depth, int scan,
    int (*levels)(void *ud, const char *ns, const char *name),
    int (*fn)(void *ud, const xcm_xml_stanza *s), void *ud);

#endif
