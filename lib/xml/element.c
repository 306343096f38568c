#include "xml/element.h"

#include "xcm/error.h"

typedef struct one {
  int (*levels)(void *ud, const char *ns, const char *name);
  int (*fn)(void *ud, const xcm_xml_stanza *s);
  void *ud;
  int count;
} one;

static int one_levels(void *ud, const char *ns, const char *name) {
  one *o = ud;

  return o->levels != NULL ? o->levels(o->ud, ns, name) : 0;
}

static int one_stanza(void *ud, const xcm_xml_stanza *s) {
  one *o = ud;

  /* A second element is refused before anyone sees it. */
  if (++o->count > 1)
    return XCM_EXML;
  return o->fn(o->ud, s);
}

int xcm__xml_read_standalone(
    xcm_xml_pool *pool, const xcm_xml_context *ctx, const char *bytes,
    size_t len, unsigned max_depth, int scan,
    int (*levels)(void *ud, const char *ns, const char *name),
    int (*fn)(void *ud, const xcm_xml_stanza *s), void *ud) {
  static const xcm_xml_callbacks cb = {NULL, one_levels, one_stanza, NULL};
  one o = {levels, fn, ud, 0};
  xcm_xml_limits lim = {len + 1, max_depth, 0};
  xcm_xml_reader *r;
  size_t consumed;
  int err;

  err = xcm__xml_reader_new(&r, pool, &cb, &o, &lim);
  if (err != 0)
    return err;
  if (scan)
    err = xcm__xml_reader_set_scan(r, 1);
  if (err == 0)
    err = xcm__xml_reader_assume_header(r, ctx);
  if (err == 0)
    err = xcm__xml_reader_feed(r, bytes, len, &consumed);
  /* Nothing, or an element cut short, is not one element either: the
   * reader keeps a cut element's bytes, so it cannot give its slot back. */
  if (err == 0 && (o.count != 1 || xcm__xml_reader_shrink(r) != 1))
    err = XCM_EXML;
  xcm__xml_reader_free(r);
  return err;
}
