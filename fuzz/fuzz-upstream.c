/* libFuzzer target for what the server side can send the CM: the
 * upstream stream read as a link reads it, every route unwrapped, every
 * iq looked at as a configuration, and route inners scanned the way the
 * client side scans them (SASL success, xmlns).
 *
 * The first byte picks the piece size the stream is fed in; the rest is
 * the stream, after an assumed upstream header. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/policy.h"
#include "proto/route.h"
#include "xml/reader.h"

static int levels(void *ud, const char *ns, const char *name) {
  (void)ud;
  (void)ns;
  if (strcmp(name, "route") == 0)
    return 2;
  if (strcmp(name, "iq") == 0)
    return 6;
  return 3;
}

static int on_stanza(void *ud, const xcm_xml_stanza *s) {
  xcm_route r;
  xcm_policy p;
  const char *why, *v, *q;
  size_t vl, ql;

  (void)ud;
  if (s->root == NULL)
    return 0;
  if (strcmp(s->name, "route") == 0 && xcm__route_unwrap(s, &r, &why) == 0) {
    if (r.inner != NULL) {
      /* The inner bytes must lie within the stanza's. */
      if (r.inner < s->bytes || r.inner + r.inner_len > s->bytes + s->len)
        abort();
      xcm__xml_start_tag(r.inner, r.inner_len, "xmlns", &v, &vl, &q, &ql);
      xcm__xml_declares_default(r.inner, r.inner_len);
    }
  }
  if (strcmp(s->name, "iq") == 0)
    xcm__policy_from_config(s->root, &p);
  return 0;
}

static const xcm_xml_callbacks cb = {NULL, levels, on_stanza, NULL};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  xcm_xml_limits lim = {16384, 16, 0};
  xcm_xml_pool *pool;
  xcm_xml_reader *r;
  size_t piece, off = 1, consumed;

  if (size < 1)
    return 0;
  piece = (size_t)data[0] + 1;
  if (xcm__xml_pool_new(&pool, NULL, 1) != 0)
    return 0;
  if (xcm__xml_reader_new(&r, pool, &cb, NULL, &lim) == 0 &&
      xcm__xml_reader_assume_header(r, &xcm__stream_cm) == 0) {
    while (off < size) {
      size_t n = size - off < piece ? size - off : piece;
      if (xcm__xml_reader_feed(r, (const char *)data + off, n, &consumed) !=
              0 ||
          consumed < n)
        break;
      off += n;
      xcm__xml_reader_shrink(r);
    }
  }
  xcm__xml_reader_free(r);
  xcm__xml_pool_free(pool);
  return 0;
}
