/* The scanner (lib/xml/scan.h) against expat, for the unit test and the
 * fuzz target: both hand bytes to these and fail on a non-NULL answer.
 *
 * An element the scanner accepts must be one expat accepts, with the same
 * extent, name, namespace and tree; and a reader that scans must give the
 * same events and the same verdict as one that does not, however the
 * bytes are split. */
#ifndef XCM_TESTS_SCANDIFF_H
#define XCM_TESTS_SCANDIFF_H

#include <stddef.h>

/* The stream contexts the checks run in: the client's, the CM's, none,
 * one with extra prefixes, and (stream checks only; none for elements)
 * no header assumed: the data begins the document. */
enum { XCM_SCANDIFF_CONTEXTS = 5 };

/* One element at the front of data. levels is what stanza_start answers
 * (XCM_XML_BARE_LAST allowed). *accepted says whether the scanner took it.
 * Returns NULL when the two agree, else what differs (static text). */
const char *xcm_scandiff_element(const char *data, size_t len, int context,
                                 int levels, int *accepted);

/* A stream body (stanzas after the header, which is assumed) fed in
 * pieces of the given sizes, cycling, to a reader with the scanner and to
 * one without. Returns NULL when the events and the outcome agree. *scanned
 * (may be NULL) gets the number of stanzas the scanner handed over. */
const char *xcm_scandiff_stream(const char *data, size_t len, int context,
                                int levels, const unsigned char *splits,
                                size_t nsplits, size_t *scanned);

#endif
