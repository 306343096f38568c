/* The running library's version: the macros of the headers it was
 * built with. */
#include "xcm/version.h"

#define STR_(x) #x
#define STR(x) STR_(x)

unsigned xcm_version(void) {
  return XCM_VERSION_HEX;
}

const char *xcm_version_string(void) {
  return STR(XCM_VERSION_MAJOR) "." STR(XCM_VERSION_MINOR) "." STR(
      XCM_VERSION_PATCH);
}
