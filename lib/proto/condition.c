#include "xcm/condition.h"

#include <string.h>

static const char *const names[XCM_COND_COUNT_] = {
    [XCM_COND_NONE] = "",
    [XCM_COND_BAD_FORMAT] = "bad-format",
    [XCM_COND_BAD_NAMESPACE_PREFIX] = "bad-namespace-prefix",
    [XCM_COND_CONFLICT] = "conflict",
    [XCM_COND_CONNECTION_TIMEOUT] = "connection-timeout",
    [XCM_COND_HOST_GONE] = "host-gone",
    [XCM_COND_HOST_UNKNOWN] = "host-unknown",
    [XCM_COND_IMPROPER_ADDRESSING] = "improper-addressing",
    [XCM_COND_INTERNAL_SERVER_ERROR] = "internal-server-error",
    [XCM_COND_INVALID_FROM] = "invalid-from",
    [XCM_COND_INVALID_NAMESPACE] = "invalid-namespace",
    [XCM_COND_INVALID_XML] = "invalid-xml",
    [XCM_COND_NOT_AUTHORIZED] = "not-authorized",
    [XCM_COND_NOT_WELL_FORMED] = "not-well-formed",
    [XCM_COND_POLICY_VIOLATION] = "policy-violation",
    [XCM_COND_REMOTE_CONNECTION_FAILED] = "remote-connection-failed",
    [XCM_COND_RESET] = "reset",
    [XCM_COND_RESOURCE_CONSTRAINT] = "resource-constraint",
    [XCM_COND_RESTRICTED_XML] = "restricted-xml",
    [XCM_COND_SEE_OTHER_HOST] = "see-other-host",
    [XCM_COND_SYSTEM_SHUTDOWN] = "system-shutdown",
    [XCM_COND_UNDEFINED_CONDITION] = "undefined-condition",
    [XCM_COND_UNSUPPORTED_ENCODING] = "unsupported-encoding",
    [XCM_COND_UNSUPPORTED_FEATURE] = "unsupported-feature",
    [XCM_COND_UNSUPPORTED_STANZA_TYPE] = "unsupported-stanza-type",
    [XCM_COND_UNSUPPORTED_VERSION] = "unsupported-version",
};

const char *xcm_cond_name(xcm_cond cond) {
  if ((int)cond < 0 || cond >= XCM_COND_COUNT_)
    return "";
  return names[cond];
}

xcm_cond xcm_cond_from_name(const char *name, unsigned long len) {
  int i;

  for (i = 1; i < XCM_COND_COUNT_; i++)
    if (strlen(names[i]) == len && memcmp(names[i], name, len) == 0)
      return (xcm_cond)i;
  return XCM_COND_NONE;
}
