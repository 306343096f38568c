#include "proto/stream.h"

#include <string.h>

#include "xml/element.h"

static const xcm_xml_nsdecl client_decls[] = {{"stream", XCM_NS_STREAMS},
                                              {"", XCM_NS_CLIENT}};
static const xcm_xml_nsdecl cm_decls[] = {{"stream", XCM_NS_STREAMS},
                                          {"", XCM_NS_CM}};

const xcm_xml_context xcm__stream_client = {"stream:stream", client_decls, 2};
const xcm_xml_context xcm__stream_cm = {"stream:stream", cm_decls, 2};

int xcm__xml_read_element(
    xcm_xml_pool *pool, const char *bytes, size_t len,
    const xcm_xml_nsdecl *decls, size_t ndecls, unsigned max_depth, int scan,
    int (*levels)(void *ud, const char *ns, const char *name),
    int (*fn)(void *ud, const xcm_xml_stanza *s), void *ud) {
  xcm_xml_context ctx = {"stream", decls, ndecls};
  size_t i;

  /* Stream-level elements can only be written with the prefix if it is
   * bound; otherwise a plain root serves. */
  for (i = 0; i < ndecls; i++)
    if (strcmp(decls[i].prefix, "stream") == 0)
      ctx.root = "stream:stream";
  return xcm__xml_read_standalone(pool, &ctx, bytes, len, max_depth, scan,
                                  levels, fn, ud);
}
