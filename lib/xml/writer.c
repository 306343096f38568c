#include "xml/writer.h"

#include <stdint.h>
#include <string.h>

#include "xcm/error.h"

/* Byte classes for ASCII: 0 copies the byte, BAD refuses it, anything
 * else is an index into entities[]. Bytes from 0x80 up are checked as
 * UTF-8 instead. Tables rather than a switch because the scan runs over
 * every stanza attribute the CM writes. */
enum { BAD = 9 };

static const char *const entities[] = {
    "", "&amp;", "&lt;", "&gt;", "&quot;", "&apos;", "&#9;", "&#10;", "&#13;",
};
static const unsigned char entity_len[] = {0, 5, 4, 4, 6, 6, 4, 5, 5};

/* clang-format off */
static const unsigned char text_class[128] = {
  BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, 0,   0,   BAD, BAD, 8,   BAD, BAD,
  BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD,
  0,   0,   0,   0,   0,   0,   1,   0,   0,   0,   0,   0,   0,   0,   0,   0,
  0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   2,   0,   3,   0,
};

static const unsigned char attr_class[128] = {
  BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, 6,   7,   BAD, BAD, 8,   BAD, BAD,
  BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD,
  0,   0,   4,   0,   0,   0,   1,   5,   0,   0,   0,   0,   0,   0,   0,   0,
  0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   2,   0,   3,   0,
};
/* clang-format on */

/* The length of the UTF-8 sequence at p if it encodes an XML 1.0 Char,
 * else 0. Overlong forms are refused as well: a parser rejects them, and
 * they are the classic way to smuggle a '<' past a byte scan. */
static size_t utf8_char(const unsigned char *p, size_t avail) {
  uint32_t cp;
  size_t n, i;

  if (p[0] < 0xc2)
    return 0; /* a stray continuation byte or an overlong 2-byte lead */
  if (p[0] < 0xe0) {
    n = 2;
    cp = p[0] & 0x1f;
  } else if (p[0] < 0xf0) {
    n = 3;
    cp = p[0] & 0x0f;
  } else if (p[0] < 0xf5) {
    n = 4;
    cp = p[0] & 0x07;
  } else {
    return 0;
  }
  if (avail < n)
    return 0;
  for (i = 1; i < n; i++) {
    if ((p[i] & 0xc0) != 0x80)
      return 0;
    cp = cp << 6 | (p[i] & 0x3f);
  }
  if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff)
    return 0;
  if ((cp >= 0xd800 && cp <= 0xdfff) || cp == 0xfffe || cp == 0xffff)
    return 0;
  return n;
}

/* First pass: refuse what cannot be written and count the bytes the
 * entities add, so the second pass needs one reservation and no undo. */
static int measure(const unsigned char *p, size_t len, const unsigned char *cls,
                   size_t *extra) {
  size_t i = 0, n, add = 0;

  while (i < len) {
    /* Most of what the CM writes is plain ASCII: skip it in a tight loop. */
    while (i < len && p[i] < 0x80 && cls[p[i]] == 0)
      i++;
    if (i == len)
      break;
    if (p[i] >= 0x80) {
      n = utf8_char(p + i, len - i);
      if (n == 0)
        return XCM_EINVAL;
      i += n;
      continue;
    }
    if (cls[p[i]] == BAD)
      return XCM_EINVAL;
    add += entity_len[cls[p[i]]] ? entity_len[cls[p[i]]] - 1u : 0u;
    i++;
  }
  *extra = add;
  return 0;
}

static int escape(xcm_buf *b, const char *s, size_t len,
                  const unsigned char *cls) {
  const unsigned char *p = (const unsigned char *)s;
  size_t extra, i, run;
  char *out;
  int err;

  err = measure(p, len, cls, &extra);
  if (err != 0)
    return err;
  if (extra == 0)
    return xcm__buf_append(b, s, len);
  if (extra > (size_t)-1 - len)
    return XCM_ENOMEM;
  err = xcm__buf_reserve(b, len + extra);
  if (err != 0)
    return err;

  out = b->data + b->len;
  run = 0;
  for (i = 0; i < len; i++) {
    unsigned k;

    if (p[i] >= 0x80 || (k = cls[p[i]]) == 0)
      continue;
    memcpy(out, s + run, i - run);
    out += i - run;
    memcpy(out, entities[k], entity_len[k]);
    out += entity_len[k];
    run = i + 1;
  }
  memcpy(out, s + run, len - run);
  b->len += len + extra;
  return 0;
}

int xcm__xml_escape_text(xcm_buf *b, const char *s, size_t len) {
  return escape(b, s, len, text_class);
}

int xcm__xml_escape_attr(xcm_buf *b, const char *s, size_t len) {
  return escape(b, s, len, attr_class);
}

int xcm__xml_attr(xcm_buf *b, const char *name, const char *value) {
  size_t mark = b->len;
  int err;

  if ((err = xcm__buf_append_char(b, ' ')) != 0 ||
      (err = xcm__buf_append_str(b, name)) != 0 ||
      (err = xcm__buf_append(b, "=\"", 2)) != 0 ||
      (err = xcm__xml_escape_attr(b, value, strlen(value))) != 0 ||
      (err = xcm__buf_append_char(b, '"')) != 0) {
    b->len = mark;
    return err;
  }
  return 0;
}

int xcm__xml_chars_valid(const char *s, size_t len) {
  size_t extra;

  return measure((const unsigned char *)s, len, text_class, &extra) == 0;
}
