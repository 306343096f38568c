/* The version of libxcm.
 *
 * The macros give the version of the headers a program was compiled
 * with; xcm_version() and xcm_version_string() that of the library it
 * runs with. The two may differ within one soname (doc/abi.md): a
 * program built against 1.0 runs with any 1.x. */
#ifndef XCM_VERSION_H
#define XCM_VERSION_H

#include "xcm/export.h"

#ifdef __cplusplus
extern "C" {
#endif

#define XCM_VERSION_MAJOR 1
#define XCM_VERSION_MINOR 0
#define XCM_VERSION_PATCH 0

/* 0xMMmmpp: compare with >= to test for a feature. */
#define XCM_VERSION_HEX                                                        \
  ((XCM_VERSION_MAJOR << 16) | (XCM_VERSION_MINOR << 8) | XCM_VERSION_PATCH)

/* The running library's version, as XCM_VERSION_HEX. */
XCM_EXTERN unsigned xcm_version(void);
/* The running library's version as "MAJOR.MINOR.PATCH"; static. */
XCM_EXTERN const char *xcm_version_string(void);

#ifdef __cplusplus
}
#endif
#endif
