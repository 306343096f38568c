/* libFuzzer target: the reader's scanner (lib/xml/scan.h) against expat.
 *
 * Input layout: byte 0 steers the run (bits 0-1 the stream context, bit
 * 5 no context at all: the data begins with a header; bits 2-4 the tree
 * depth asked for), bytes 1-8 are split sizes (pieces
 * of byte+1 bytes, cycling), the rest is XML.
 *
 * Two checks, both from tests/scandiff.c: the front of the input as one
 * element (what the scanner takes, expat must take with the same extent
 * and tree), and the whole input as a stream body fed in pieces to a
 * reader that scans and one that does not (same events, same verdict).
 * A disagreement aborts with what differed. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "scandiff.h"
#include "xml/reader.h"

#define PREFIX 9

static const int level_choices[8] = {0, 1, 2,  2 | XCM_XML_BARE_LAST,
                                     3, 4, 64, 1 | XCM_XML_BARE_LAST};

static void ensure(const char *why, const char *check) {
  if (why == NULL)
    return;
  fprintf(stderr, "fuzz-scan: %s check: %s\n", check, why);
  abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *xml = (const char *)data + PREFIX;
  size_t len;
  int context, levels, accepted;

  if (size < PREFIX)
    return 0;
  len = size - PREFIX;
  context = (data[0] & 0x20) ? 4 : data[0] & 3;
  levels = level_choices[(data[0] >> 2) & 7];
  ensure(xcm_scandiff_element(xml, len, context, levels, &accepted), "element");
  ensure(xcm_scandiff_stream(xml, len, context, levels, data + 1, 8, NULL),
         "stream");
  return 0;
}
