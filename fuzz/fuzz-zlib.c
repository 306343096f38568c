/* libFuzzer target for the zlib layer (XEP-0138): arbitrary bytes are
 * inflated in pieces (corrupt data must give XCM_EZLIB, never a crash or
 * unbounded output), and the input deflated then inflated must come back
 * exactly. The first byte picks the piece size. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "transport/zlib.h"
#include "util/buf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Inflate in pieces of `piece` bytes; collect up to `limit` bytes. */
static int inflate_all(xcm_zlib *z, const char *in, size_t len, size_t piece,
                       xcm_buf *out, size_t limit) {
  char chunk[4096];

  while (len > 0) {
    size_t n = len < piece ? len : piece, produced;
    const char *p = in;
    size_t left = n;

    do {
      int err = xcm__zlib_inflate(z, &p, &left, chunk, sizeof chunk, &produced);
      if (err != 0)
        return err;
      if (out->len + produced > limit)
        return 1; /* a bomb: the caller's limit would stop it here */
      xcm__buf_append(out, chunk, produced);
    } while (left > 0 || produced == sizeof chunk);
    in += n;
    len -= n;
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  xcm_zlib *z, *back;
  xcm_buf out, packed;
  size_t piece;

  if (size < 1)
    return 0;
  piece = (size_t)data[0] + 1;
  data++;
  size--;
  if (xcm__zlib_new(&z, NULL) != 0)
    return 0;
  xcm__buf_init(&out, NULL);
  inflate_all(z, (const char *)data, size, piece, &out, 1u << 20);
  xcm__zlib_free(z);
  xcm__buf_free(&out);

  /* Round trip. */
  if (xcm__zlib_new(&z, NULL) != 0)
    return 0;
  if (xcm__zlib_new(&back, NULL) != 0) {
    xcm__zlib_free(z);
    return 0;
  }
  xcm__buf_init(&packed, NULL);
  xcm__buf_init(&out, NULL);
  if (xcm__zlib_deflate_buf(z, (const char *)data, size, &packed) == 0 &&
      inflate_all(back, packed.data, packed.len, piece, &out, size + 1) == 0 &&
      (out.len != size || (size > 0 && memcmp(out.data, data, size) != 0)))
    abort();
  xcm__buf_free(&packed);
  xcm__buf_free(&out);
  xcm__zlib_free(z);
  xcm__zlib_free(back);
  return 0;
}
