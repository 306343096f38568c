/* A validating scanner for the common shape of one depth-1 element, the
 * reader's fast path around expat.
 *
 * expat spends about 80 instructions per byte on an XMPP stanza; most
 * stanzas use a small subset of XML: unprefixed names in ASCII, quoted
 * attributes, text with the predefined entities and character
 * references, and a default namespace at most. The scanner checks an
 * element of that subset for well-formedness in one pass and builds the
 * same tree the reader would. Anything outside the subset (comments,
 * CDATA, processing instructions, a prefix other than xml:, an incomplete
 * element, a limit reached) is declined, never refused: the reader then
 * gives the bytes to expat, which accepts or refuses them as it always
 * did. An element declined only because the input ended first is told
 * apart (xcm__xml_scan_incomplete), so the reader can keep its few bytes
 * and scan again when more come instead of lending it a parser. So an element
 * the scanner accepts is one expat accepts with the same extent and tree;
 * fuzz/fuzz-scan.c checks exactly that.
 *
 * The scratch (nodes, attributes, strings) is one per reader pool and
 * used only during one scan and the callback that receives its tree.
 */
#ifndef XCM_XML_SCAN_H
#define XCM_XML_SCAN_H

#include <stddef.h>

#include "xcm/alloc.h"
#include "xml/reader.h"

typedef struct xcm_xml_scan xcm_xml_scan;

int xcm__xml_scan_new(xcm_xml_scan **out, const xcm_allocator *alloc);
void xcm__xml_scan_free(xcm_xml_scan *sc);

/* Look at the element starting at p[0] == '<'. Returns its length when
 * it is complete, no longer than max_len, no deeper than max_depth (the
 * element itself is depth 1) and inside the subset; 0 to decline. */
size_t xcm__xml_scan_element(xcm_xml_scan *sc, const char *p, size_t len,
                             size_t max_len, unsigned max_depth);

/* After a scan (of an element or a header) that returned 0: 1 if it
 * declined only because the input ended before the element did, with len <=
 * max_len and every byte so far a prefix of an element the subset allows (a
 * cut-off reference or UTF-8 character included), so that expat could not
 * refuse these bytes yet and the same scan with more bytes appended may take
 * the element; 0 if it declined for anything else (the element is expat's). */
int xcm__xml_scan_incomplete(const xcm_xml_scan *sc);

/* After a scan that returned non-zero: the element's local name
 * (NUL-terminated) and namespace, default_ns being the namespace in scope
 * around it ("" for none). Valid until the next scan. */
const char *xcm__xml_scan_name(xcm_xml_scan *sc);
const char *xcm__xml_scan_ns(xcm_xml_scan *sc, const char *default_ns);

/* Fill st for the element scanned last (p and n as given to and returned
 * by the scan), with a tree of levels levels (the reader's stanza_start
 * result, XCM_XML_BARE_LAST included). Returns 0, or 1 when the scan did
 * not record enough of the element for that many levels (the caller then
 * lets expat read it). */
int xcm__xml_scan_build(xcm_xml_scan *sc, const char *p, size_t n, int levels,
                        const char *default_ns, xcm_xml_stanza *st);

/* A stream header at p: an optional XML declaration of the usual form
 * (version 1.0, UTF-8 if any encoding), white space, and the root's start
 * tag, whose prefix (if any) and namespace declarations (at most
 * max_decls, into decls) are on the tag itself. Returns the bytes it
 * takes, within max_len, and fills h and *qname (the root's name as
 * written); 0 to decline. Valid until the next scan. */
size_t xcm__xml_scan_header(xcm_xml_scan *sc, const char *p, size_t len,
                            size_t max_len, xcm_xml_header *h,
                            xcm_xml_nsdecl *decls, size_t max_decls,
                            const char **qname);

#endif
