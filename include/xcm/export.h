/* XCM_EXTERN marks the public API.
 *
 * libxcm is built with hidden visibility: only what is marked here is
 * exported from the shared library, so an internal change cannot become
 * an ABI change (doc/abi.md). For callers the mark is harmless. */
#ifndef XCM_EXPORT_H
#define XCM_EXPORT_H

#if defined(__GNUC__) && __GNUC__ >= 4
#define XCM_EXTERN __attribute__((visibility("default")))
#else
#define XCM_EXTERN /* nothing */
#endif

#endif
