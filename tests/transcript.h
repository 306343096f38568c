/* A loader for the wire captures in tests/transcripts/ (protocol document,
 * section 7), so tests can replay what a real Openfire sent and received.
 *
 * A capture is a text file of chunks. Each chunk is a header line
 *
 *   [   +0.125s] CM1 SEND 128B
 *
 * followed by exactly that many bytes and a newline. Lines starting with
 * '#' are comments. A payload that is all whitespace is followed by a line
 * "    repr: b' '" (Python's repr of the bytes) so a reader can tell what the
 * invisible bytes were; the loader checks it against the payload.
 *
 * The loader reads the file into one buffer and points the chunks into
 * it: nothing is allocated per chunk. */
#ifndef XCM_TESTS_TRANSCRIPT_H
#define XCM_TESTS_TRANSCRIPT_H

#include <stddef.h>

typedef struct xcm_transcript_chunk {
  const char *conn;  /* connection label, e.g. "CM1", "C1b"; NUL-terminated */
  int is_send;       /* 1: the scripted CM sent it; 0: Openfire sent it */
  double time;       /* seconds since the capture started */
  const char *bytes; /* the payload, exactly; a NUL follows it */
  size_t len;
} xcm_transcript_chunk;

typedef struct xcm_transcript {
  xcm_transcript_chunk *chunks;
  size_t nchunks;
  char *data; /* the file, rewritten in place; chunks point into it */
  /* After a failed load: "path:line: what was wrong". */
  char error[512];
} xcm_transcript;

/* Load a capture. Returns 0, or a negative errno value (-ENOENT, -ENOMEM,
 * -EINVAL for a malformed file) with out->error set. On failure out needs
 * no xcm_transcript_free(), though calling it is harmless. */
int xcm_transcript_load(const char *path, xcm_transcript *out);
void xcm_transcript_free(xcm_transcript *t);

/* Load tests/transcripts/<name> from xcm_transcript_dir(). */
int xcm_transcript_load_named(const char *name, xcm_transcript *out);

/* The captures' directory: $XCM_TRANSCRIPTS (tests/meson.build sets it),
 * else the source tree's tests/transcripts as configured at build time. */
const char *xcm_transcript_dir(void);

#endif
