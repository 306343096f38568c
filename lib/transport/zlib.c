/* XEP-0138 compression on zlib, with zlib's memory drawn from the
 * context's allocator and counted. */
#include "transport/zlib.h"

#include <limits.h>
/* next_in is then const, as our input is. */
#define ZLIB_CONST
#include <zlib.h>

#include "util/alloc.h"
#include "xcm/error.h"

/* Deflate settings, chosen for memory held per idle stream. zlib's
 * deflate needs (1 << (windowBits + 2)) + (1 << (memLevel + 9)) bytes
 * beside its ~5.8 KiB state: windowBits 10 (a 1 KiB window) and memLevel 3
 * make that 8 KiB, against 256 KiB for the defaults (15, 8). A stanza's
 * repeats (element names, namespaces, the JIDs) are near each other, so
 * the ratio on XMPP traffic drops by a few percent only. Level 6 is
 * zlib's default; with so small a window the lazy matching costs
 * little. */
#define DEFLATE_WINDOW_BITS 10
#define DEFLATE_MEM_LEVEL 3
#define DEFLATE_LEVEL 6

/* The inflater takes whatever window the peer's header announces. */
#define INFLATE_WINDOW_BITS 15

/* zlib's counts are uInt: feed larger inputs in slices. */
#define SLICE (1u << 30)

struct xcm_zlib {
  z_stream inf;
  z_stream def;
  const xcm_allocator *alloc;
  size_t mem;
  int inf_ended;
  int inf_held; /* the last inflate filled its output */
};

/* Each block carries its size in front, so frees can be counted too; 16
 * bytes keep the alignment malloc would give. */
#define HDR 16

static voidpf z_alloc(voidpf opaque, uInt items, uInt size) {
  xcm_zlib *z = opaque;
  size_t n;
  char *p;

  if (size != 0 && items > ((size_t)-1 - HDR) / size)
    return Z_NULL;
  n = (size_t)items * size;
  p = xcm__alloc(z->alloc, n + HDR);
  if (p == NULL)
    return Z_NULL;
  *(size_t *)p = n;
  z->mem += n;
  return p + HDR;
}

static void z_free(voidpf opaque, voidpf addr) {
  xcm_zlib *z = opaque;
  char *p;

  if (addr == Z_NULL)
    return;
  p = (char *)addr - HDR;
  z->mem -= *(size_t *)p;
  xcm__free(z->alloc, p);
}

int xcm__zlib_new(xcm_zlib **out, const xcm_allocator *alloc) {
  xcm_zlib *z;
  int r;

  *out = NULL;
  z = xcm__calloc(alloc, sizeof(*z));
  if (z == NULL)
    return XCM_ENOMEM;
  z->alloc = alloc;
  z->inf.zalloc = z->def.zalloc = z_alloc;
  z->inf.zfree = z->def.zfree = z_free;
  z->inf.opaque = z->def.opaque = z;
  r = inflateInit2(&z->inf, INFLATE_WINDOW_BITS);
  if (r != Z_OK) {
    xcm__free(alloc, z);
    return r == Z_MEM_ERROR ? XCM_ENOMEM : XCM_EZLIB;
  }
  r = deflateInit2(&z->def, DEFLATE_LEVEL, Z_DEFLATED, DEFLATE_WINDOW_BITS,
                   DEFLATE_MEM_LEVEL, Z_DEFAULT_STRATEGY);
  if (r != Z_OK) {
    inflateEnd(&z->inf);
    xcm__free(alloc, z);
    return r == Z_MEM_ERROR ? XCM_ENOMEM : XCM_EZLIB;
  }
  *out = z;
  return 0;
}

void xcm__zlib_free(xcm_zlib *z) {
  if (z == NULL)
    return;
  inflateEnd(&z->inf);
  deflateEnd(&z->def);
  xcm__free(z->alloc, z);
}

int xcm__zlib_inflate(xcm_zlib *z, const char **in, size_t *in_len, char *out,
                      size_t cap, size_t *produced) {
  uInt avail = *in_len > SLICE ? SLICE : (uInt)*in_len;
  size_t used;
  int r;

  *produced = 0;
  if (z->inf_ended)
    return *in_len > 0 ? XCM_EZLIB : 0;
  if (cap > SLICE)
    cap = SLICE;
  z->inf.next_in = (const Bytef *)*in;
  z->inf.avail_in = avail;
  z->inf.next_out = (Bytef *)out;
  z->inf.avail_out = (uInt)cap;
  r = inflate(&z->inf, Z_SYNC_FLUSH);
  used = avail - z->inf.avail_in;
  *in += used;
  *in_len -= used;
  *produced = cap - z->inf.avail_out;
  z->inf_held = r == Z_OK && cap > 0 && z->inf.avail_out == 0;
  switch (r) {
  case Z_OK:
  case Z_BUF_ERROR: /* no progress possible: needs input or room */
    return 0;
  case Z_STREAM_END:
    /* XEP-0138 streams do not end; bytes after an end are not zlib. */
    z->inf_ended = 1;
    return *in_len > 0 ? XCM_EZLIB : 0;
  case Z_MEM_ERROR:
    return XCM_ENOMEM;
  default:
    return XCM_EZLIB;
  }
}

int xcm__zlib_inflate_held(const xcm_zlib *z) {
  return z->inf_held;
}

void xcm__zlib_set_alloc(xcm_zlib *z, const xcm_allocator *a) {
  z->alloc = a;
}

int xcm__zlib_deflate(xcm_zlib *z, const char *data, size_t len, char *chunk,
                      size_t cap, int (*emit)(void *ud, const char *, size_t),
                      void *ud) {
  size_t have;
  uInt slice;
  int r, err;

  if (cap > SLICE)
    cap = SLICE;
  do {
    slice = len > SLICE ? SLICE : (uInt)len;
    z->def.next_in = (const Bytef *)data;
    z->def.avail_in = slice;
    /* A sync flush is complete once deflate leaves room in the output;
     * until then it has more to give. */
    do {
      z->def.next_out = (Bytef *)chunk;
      z->def.avail_out = (uInt)cap;
      r = deflate(&z->def, Z_SYNC_FLUSH);
      if (r == Z_STREAM_ERROR)
        return XCM_EZLIB;
      have = cap - z->def.avail_out;
      if (have > 0 && (err = emit(ud, chunk, have)) != 0)
        return err;
    } while (z->def.avail_out == 0);
    data += slice;
    len -= slice;
  } while (len > 0);
  return 0;
}

int xcm__zlib_deflate_buf(xcm_zlib *z, const char *data, size_t len,
                          xcm_buf *out) {
  size_t room;
  uInt slice;
  int r, err;

  do {
    slice = len > SLICE ? SLICE : (uInt)len;
    z->def.next_in = (const Bytef *)data;
    z->def.avail_in = slice;
    do {
      /* deflateBound does not cover a flush's trailer; a little more
       * and the loop cover the rest. */
      err = xcm__buf_reserve(out, slice / 2 + 64);
      if (err != 0)
        return err;
      room = out->cap - out->len;
      if (room > SLICE)
        room = SLICE;
      z->def.next_out = (Bytef *)out->data + out->len;
      z->def.avail_out = (uInt)room;
      r = deflate(&z->def, Z_SYNC_FLUSH);
      if (r == Z_STREAM_ERROR)
        return XCM_EZLIB;
      out->len += room - z->def.avail_out;
    } while (z->def.avail_out == 0);
    data += slice;
    len -= slice;
  } while (len > 0);
  return 0;
}

size_t xcm__zlib_footprint(const xcm_zlib *z) {
  return sizeof(*z) + z->mem;
}
