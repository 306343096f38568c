#include "xml/scan.h"

#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "util/alloc.h"
#include "util/buf.h"
#include "xcm/error.h"
#include "util/hex.h"

/* Elements recorded for a tree, open elements tracked for end-tag
 * matching, attributes on one start tag and in one tree. Past any of
 * these the scanner declines and expat reads the element. */
#define MAX_NODES 64
#define MAX_STACK 64
#define MAX_TAG_ATTRS 16
#define MAX_ATTRS 256

/* Strings that grew past this for one large element are given back. */
#define KEEP_STRINGS_MAX 65536

#define NS_XML "http://www.w3.org/XML/1998/namespace"
#define NS_XMLNS "http://www.w3.org/2000/xmlns/"

/* Byte classes. */
enum {
  C_TEXT = 1,   /* ends a run of plain character data */
  C_ATTR = 2,   /* ends a run of plain attribute value */
  C_START = 4,  /* may start a name (ASCII only) */
  C_NAME = 8,   /* may continue a name (ASCII only, no ':') */
  C_SPACE = 16, /* XML white space */
};

/* One element as the scan found it: offsets into the element's bytes. */
typedef struct rec {
  size_t start;       /* its '<' */
  size_t tag_end;     /* just after its start tag */
  size_t content_end; /* its end tag's '<' (tag_end when empty) */
  size_t end;         /* just after its end */
  size_t name_len;
  size_t xmlns_off; /* its default namespace declaration's value, if any */
  size_t xmlns_len;
  int has_xmlns;
  unsigned depth; /* 1 for the element itself */
  int parent;     /* index into recs, -1 for the element itself */
} rec;

/* One attribute of a start tag: offsets of its name, of the ':' in it (0
 * for none) and of its value between the quotes. */
typedef struct hattr {
  size_t a0, alen, colon, v0, v1;
} hattr;

struct xcm_xml_scan {
  const xcm_allocator *alloc;
  unsigned char cls[256];
  rec recs[MAX_NODES];
  size_t nrecs;
  unsigned unrecorded; /* shallowest depth not recorded, 0 if none */
  xcm_xml_node nodes[MAX_NODES];
  int node_of[MAX_NODES];              /* node index per rec, -1 if not built */
  xcm_xml_node *last_child[MAX_NODES]; /* per node, while building */
  xcm_xml_attr attrs[MAX_ATTRS];
  xcm_buf strings;
  const char *name; /* the element's local name, in strings */
  const char *ns;
  /* The last scan declined only because the input ended first: set by
   * more(), where the bytes so far are a prefix of an element the
   * subset allows and expat could not yet refuse. */
  int ran_out;
  int incomplete; /* ran_out, and the input was not cut at max_len */
};

int xcm__xml_scan_new(xcm_xml_scan **out, const xcm_allocator *alloc) {
  xcm_xml_scan *sc;
  int c;

  *out = NULL;
  sc = xcm__calloc(alloc, sizeof(*sc));
  if (sc == NULL)
    return XCM_ENOMEM;
  sc->alloc = alloc;
  xcm__buf_init(&sc->strings, alloc);
  for (c = 0; c < 256; c++) {
    unsigned char k = 0;

    if (c < 0x20 && c != '\t' && c != '\n' && c != '\r')
      k |= C_TEXT | C_ATTR;
    if (c >= 0x80 || c == '<' || c == '&')
      k |= C_TEXT | C_ATTR;
    if (c == ']')
      k |= C_TEXT;
    if (c == '"' || c == '\'')
      k |= C_ATTR;
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_')
      k |= C_START | C_NAME;
    if ((c >= '0' && c <= '9') || c == '-' || c == '.')
      k |= C_NAME;
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
      k |= C_SPACE;
    sc->cls[c] = k;
  }
  *out = sc;
  return 0;
}

void xcm__xml_scan_free(xcm_xml_scan *sc) {
  if (sc == NULL)
    return;
  xcm__buf_free(&sc->strings);
  xcm__free(sc->alloc, sc);
}

/* ---- characters -------------------------------------------------------- */

static int is_xml_char(uint32_t c) {
  return c == 0x9 || c == 0xA || c == 0xD || (c >= 0x20 && c <= 0xD7FF) ||
         (c >= 0xE000 && c <= 0xFFFD) || (c >= 0x10000 && c <= 0x10FFFF);
}

static int is_cont(unsigned char c) {
  return (c & 0xC0) == 0x80;
}

/* The length of the UTF-8 sequence at u[0] (>= 0x80) if it encodes an XML
 * character in shortest form, else 0 (also when it is cut off). */
static size_t utf8_char(const unsigned char *u, size_t n, uint32_t *cp) {
  unsigned char c = u[0];

  if (c < 0xC2)
    return 0;
  if (c < 0xE0) {
    if (n < 2 || !is_cont(u[1]))
      return 0;
    *cp = ((uint32_t)(c & 0x1F) << 6) | (u[1] & 0x3F);
    return 2;
  }
  if (c < 0xF0) {
    if (n < 3 || !is_cont(u[1]) || !is_cont(u[2]))
      return 0;
    *cp = ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(u[1] & 0x3F) << 6) |
          (u[2] & 0x3F);
    return *cp >= 0x800 && is_xml_char(*cp) ? 3 : 0;
  }
  if (c < 0xF5) {
    if (n < 4 || !is_cont(u[1]) || !is_cont(u[2]) || !is_cont(u[3]))
      return 0;
    *cp = ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(u[1] & 0x3F) << 12) |
          ((uint32_t)(u[2] & 0x3F) << 6) | (u[3] & 0x3F);
    return *cp >= 0x10000 && *cp <= 0x10FFFF ? 4 : 0;
  }
  return 0;
}

/* The length of a predefined entity or character reference at u[0] ==
 * '&', with the character it stands for; 0 for anything else. */
static size_t reference(const unsigned char *u, size_t n, uint32_t *cp) {
  static const struct {
    const char *text;
    size_t len;
    char c;
  } named[] = {{"&lt;", 4, '<'},
               {"&gt;", 4, '>'},
               {"&amp;", 5, '&'},
               {"&quot;", 6, '"'},
               {"&apos;", 6, '\''}};
  size_t i, digits = 0;
  uint32_t v = 0;

  if (n >= 3 && u[1] == '#') {
    int hex = u[2] == 'x';

    /* Eight digits reach past U+10FFFF; more are refused as too large. */
    for (i = hex ? 3 : 2; i < n && digits <= 8; i++, digits++) {
      int d = hex                            ? xcm__hex_digit(u[i])
              : (u[i] >= '0' && u[i] <= '9') ? u[i] - '0'
                                             : -1;
      if (d < 0)
        break;
      v = v * (hex ? 16 : 10) + (uint32_t)d;
    }
    if (digits == 0 || digits > 8 || i >= n || u[i] != ';' || !is_xml_char(v))
      return 0;
    *cp = v;
    return i + 1;
  }
  for (i = 0; i < sizeof named / sizeof named[0]; i++)
    if (n >= named[i].len && memcmp(u, named[i].text, named[i].len) == 0) {
      *cp = (uint32_t)named[i].c;
      return named[i].len;
    }
  return 0;
}

/* Whether the n bytes at u[0] == '&', cut off by the end of the input,
 * begin a reference reference() would take: expat waits for the rest of
 * such a one rather than refusing it. */
static int reference_prefix(const unsigned char *u, size_t n) {
  static const char *const named[] = {"&lt;", "&gt;", "&amp;", "&quot;",
                                      "&apos;"};
  size_t i, digits = 0;

  if (n < 2)
    return 1;
  if (u[1] == '#') {
    int hex = n > 2 && u[2] == 'x';

    for (i = hex ? 3 : 2; i < n; i++, digits++)
      if (hex ? xcm__hex_digit(u[i]) < 0 : !(u[i] >= '0' && u[i] <= '9'))
        return 0;
    return digits <= 8;
  }
  for (i = 0; i < sizeof named / sizeof named[0]; i++)
    if (n < strlen(named[i]) && memcmp(u, named[i], n) == 0)
      return 1;
  return 0;
}

/* Whether the n bytes at u[0] (>= 0x80), cut off by the end of the input,
 * begin a UTF-8 sequence: a lead byte and continuation bytes, fewer than
 * it announces. expat waits for a partial character before judging it;
 * utf8_char() judges it whole once it is there. */
static int utf8_prefix(const unsigned char *u, size_t n) {
  size_t need, i;

  if (u[0] >= 0xC2 && u[0] < 0xE0)
    need = 2;
  else if (u[0] >= 0xE0 && u[0] < 0xF0)
    need = 3;
  else if (u[0] >= 0xF0 && u[0] < 0xF5)
    need = 4;
  else
    return 0;
  if (n >= need)
    return 0;
  for (i = 1; i < n; i++)
    if (!is_cont(u[i]))
      return 0;
  return 1;
}

/* ---- the scan ---------------------------------------------------------- */

/* Decline because the input ended before the element did. */
static size_t more(xcm_xml_scan *sc) {
  sc->ran_out = 1;
  return 0;
}

/* Past the run of bytes at u[i] that need no closer look: for text
 * (quotes == 0) anything but '<', '&', ']', control characters and
 * non-ASCII; in an attribute value also the quotes. Tab, newline and
 * carriage return are plain too. Most of a stanza is such runs, so
 * they are skipped 16 bytes at a time where the CPU allows. */
static size_t skip_plain(const xcm_xml_scan *sc, const unsigned char *u,
                         size_t i, size_t len, int quotes) {
  unsigned char stop = quotes ? C_ATTR : C_TEXT;
#if defined(__SSE2__)
  const __m128i lt = _mm_set1_epi8('<'), amp = _mm_set1_epi8('&');
  const __m128i third = _mm_set1_epi8(quotes ? '"' : ']');
  const __m128i fourth = _mm_set1_epi8(quotes ? '\'' : ']');
  const __m128i space = _mm_set1_epi8(0x20);

  while (i + 16 <= len) {
    __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(u + i));
    /* Signed: bytes from 0x80 up compare below 0x20 as well. */
    __m128i m = _mm_or_si128(
        _mm_or_si128(_mm_cmpeq_epi8(v, lt), _mm_cmpeq_epi8(v, amp)),
        _mm_or_si128(
            _mm_or_si128(_mm_cmpeq_epi8(v, third), _mm_cmpeq_epi8(v, fourth)),
            _mm_cmplt_epi8(v, space)));
    unsigned bits = (unsigned)_mm_movemask_epi8(m);

    if (bits == 0) {
      i += 16;
      continue;
    }
    i += (size_t)__builtin_ctz(bits);
    if (sc->cls[u[i]] & stop)
      return i;
    i++; /* white space below 0x20 */
  }
#endif
  while (i < len && !(sc->cls[u[i]] & stop))
    i++;
  return i;
}

static size_t skip_space(const xcm_xml_scan *sc, const unsigned char *u,
                         size_t i, size_t len) {
  while (i < len && (sc->cls[u[i]] & C_SPACE))
    i++;
  return i;
}

static size_t skip_name(const xcm_xml_scan *sc, const unsigned char *u,
                        size_t i, size_t len) {
  while (i < len && (sc->cls[u[i]] & C_NAME))
    i++;
  return i;
}

/* Past character data from u[i]: for an attribute value (q its quote)
 * past the closing quote, for text (q == 0) up to the next '<'. 0 to
 * decline. */
static size_t chars(xcm_xml_scan *sc, const unsigned char *u, size_t i,
                    size_t len, unsigned char q) {
  uint32_t cp;
  size_t k;

  for (;;) {
    i = skip_plain(sc, u, i, len, q != 0);
    if (i >= len)
      return more(sc);
    if (q != 0 ? u[i] == q : u[i] == '<')
      return q != 0 ? i + 1 : i;
    if (u[i] == '"' || u[i] == '\'') {
      k = 1; /* the other quote */
    } else if (u[i] == ']') {
      /* No "]]>" in text. Near the end, wait only while the bytes so far
       * could still begin one: what follows may be a byte expat refuses
       * at once, and it must be refused here as soon. */
      if (i + 1 < len && u[i + 1] != ']')
        k = 1;
      else if (i + 2 >= len)
        return more(sc);
      else
        k = !(u[i + 1] == ']' && u[i + 2] == '>');
    } else if (u[i] == '&') {
      k = reference(u + i, len - i, &cp);
      if (k == 0 && reference_prefix(u + i, len - i))
        return more(sc);
    } else if (u[i] >= 0x80) {
      k = utf8_char(u + i, len - i, &cp);
      if (k == 0 && utf8_prefix(u + i, len - i))
        return more(sc);
    } else {
      k = 0; /* '<' in a value, or a control character */
    }
    if (k == 0)
      return 0;
    i += k;
  }
}

static int is_reserved_ns(const unsigned char *v, size_t len) {
  return (len == sizeof NS_XML - 1 && memcmp(v, NS_XML, len) == 0) ||
         (len == sizeof NS_XMLNS - 1 && memcmp(v, NS_XMLNS, len) == 0);
}

static int is_decl(const unsigned char *u, const hattr *a) {
  return a->alen >= 5 && memcmp(u + a->a0, "xmlns", 5) == 0;
}

/* The attribute at u[j] (after white space): a name with at most one
 * prefix, '=', a quoted value. Declines a repeat of one of at[0..na), a
 * name that starts with "xmlns" but is neither xmlns nor xmlns:p, and a
 * declaration whose value is reserved or would change when decoded or
 * normalised (expat's business). Returns the offset past it, or 0. */
static size_t attribute(xcm_xml_scan *sc, const unsigned char *u, size_t j,
                        size_t len, const hattr *at, size_t na, hattr *a) {
  size_t k;

  if (!(sc->cls[u[j]] & C_START))
    return 0;
  a->a0 = j;
  a->colon = 0;
  j = skip_name(sc, u, j + 1, len);
  if (j < len && u[j] == ':') {
    a->colon = j;
    if (j + 1 >= len)
      return more(sc);
    if (!(sc->cls[u[j + 1]] & C_START))
      return 0;
    j = skip_name(sc, u, j + 2, len);
  }
  if (j >= len)
    return more(sc); /* the name may go on */
  a->alen = j - a->a0;
  for (k = 0; k < na; k++)
    if (at[k].alen == a->alen && memcmp(u + at[k].a0, u + a->a0, a->alen) == 0)
      return 0;
  j = skip_space(sc, u, j, len);
  if (j >= len)
    return more(sc);
  if (u[j] != '=')
    return 0;
  j = skip_space(sc, u, j + 1, len);
  if (j >= len)
    return more(sc);
  if (u[j] != '"' && u[j] != '\'')
    return 0;
  a->v0 = j + 1;
  j = chars(sc, u, j + 1, len, u[j]);
  if (j == 0)
    return 0;
  a->v1 = j - 1;
  if (is_decl(u, a)) {
    if (a->colon != 0 ? a->colon != a->a0 + 5 : a->alen != 5)
      return 0;
    if (is_reserved_ns(u + a->v0, a->v1 - a->v0))
      return 0;
    for (k = a->v0; k < a->v1; k++)
      if (u[k] == '&' || (sc->cls[u[k]] & C_SPACE))
        return 0;
  }
  return j;
}

/* The start tag at u[i] == '<'. Fills r (but not its depth and parent)
 * and says whether the element is empty. Returns the offset past the tag,
 * or 0 to decline. */
static size_t start_tag(xcm_xml_scan *sc, const unsigned char *u, size_t i,
                        size_t len, rec *r, int *empty) {
  hattr at[MAX_TAG_ATTRS];
  size_t na = 0, j;

  if (i + 1 >= len)
    return more(sc);
  if (!(sc->cls[u[i + 1]] & C_START))
    return 0;
  j = skip_name(sc, u, i + 2, len);
  if (j >= len)
    return more(sc);
  memset(r, 0, sizeof(*r));
  r->start = i;
  r->name_len = j - (i + 1);
  /* Names beginning with "xmlns" are namespace business: expat's. */
  if (r->name_len >= 5 && memcmp(u + i + 1, "xmlns", 5) == 0)
    return 0;
  for (;;) {
    size_t ws = j;
    const hattr *a = &at[na];

    j = skip_space(sc, u, j, len);
    if (j >= len)
      return more(sc);
    if (u[j] == '>') {
      *empty = 0;
      return j + 1;
    }
    if (u[j] == '/') {
      if (j + 1 >= len)
        return more(sc);
      if (u[j + 1] != '>')
        return 0;
      *empty = 1;
      return j + 2;
    }
    if (j == ws || na == MAX_TAG_ATTRS)
      return 0;
    j = attribute(sc, u, j, len, at, na, &at[na]);
    if (j == 0)
      return 0;
    na++;
    /* Of prefixes, only xml (always bound); of declarations, only the
     * default namespace. */
    if (a->colon != 0 && (is_decl(u, a) || a->colon - a->a0 != 3 ||
                          memcmp(u + a->a0, "xml", 3) != 0))
      return 0;
    if (is_decl(u, a)) {
      r->has_xmlns = 1;
      r->xmlns_off = a->v0;
      r->xmlns_len = a->v1 - a->v0;
    }
  }
}

static size_t scan(xcm_xml_scan *sc, const unsigned char *u, size_t len,
                   size_t max_len, unsigned max_depth) {
  size_t name_at[MAX_STACK], name_len[MAX_STACK], i = 0, j;
  int rec_at[MAX_STACK];
  unsigned depth = 0;

  sc->nrecs = 0;
  sc->unrecorded = 0;
  sc->ran_out = 0;
  /* Whatever lies past the limit cannot complete an acceptable element
   * (and running out there is no reason to wait: see the caller). */
  if (len > max_len)
    len = max_len;
  if (max_depth > MAX_STACK)
    max_depth = MAX_STACK;
  if (len == 0 || u[0] != '<')
    return 0;
  for (;;) {
    if (i + 1 >= len)
      return more(sc);
    if (u[i + 1] == '/') {
      size_t nl;
      int r;

      if (depth == 0)
        return 0;
      nl = name_len[depth - 1];
      r = rec_at[depth - 1];
      if (i + 2 + nl >= len) {
        /* The end tag so far must be the start of the right one. */
        size_t have = len - (i + 2);

        return memcmp(u + i + 2, u + name_at[depth - 1], have) == 0 ? more(sc)
                                                                    : 0;
      }
      if (memcmp(u + i + 2, u + name_at[depth - 1], nl) != 0)
        return 0;
      j = skip_space(sc, u, i + 2 + nl, len);
      if (j >= len)
        return more(sc);
      if (u[j] != '>')
        return 0;
      j++;
      if (r >= 0) {
        sc->recs[r].content_end = i;
        sc->recs[r].end = j;
      }
      if (--depth == 0)
        return j;
    } else {
      rec tmp, *r = sc->nrecs < MAX_NODES ? &sc->recs[sc->nrecs] : &tmp;
      int empty;

      if (depth + 1 > max_depth)
        return 0;
      j = start_tag(sc, u, i, len, r, &empty);
      if (j == 0)
        return 0;
      depth++;
      r->tag_end = j;
      r->depth = depth;
      r->parent = depth > 1 ? rec_at[depth - 2] : -1;
      if (r != &tmp)
        sc->nrecs++;
      else if (sc->unrecorded == 0 || depth < sc->unrecorded)
        sc->unrecorded = depth;
      if (empty) {
        r->content_end = r->end = j;
        if (--depth == 0)
          return j;
      } else {
        name_at[depth - 1] = i + 1;
        name_len[depth - 1] = r->name_len;
        rec_at[depth - 1] = r != &tmp ? (int)(sc->nrecs - 1) : -1;
      }
    }
    i = chars(sc, u, j, len, 0);
    if (i == 0)
      return 0;
  }
}

/* ---- the tree ---------------------------------------------------------- */

/* Room for every string a build can make from an element of n bytes:
 * decoding never lengthens, and each string gets one NUL. */
static int prepare(xcm_xml_scan *sc, size_t n) {
  xcm__buf_reset(&sc->strings);
  if (sc->strings.cap > KEEP_STRINGS_MAX && n < KEEP_STRINGS_MAX / 2)
    xcm__buf_free(&sc->strings);
  return xcm__buf_reserve(&sc->strings,
                          2 * n + 4 * MAX_NODES + 2 * MAX_ATTRS + 16);
}

/* Appends within the room prepare() made, so pointers stay valid. */
static char *put(xcm_xml_scan *sc, const unsigned char *s, size_t len) {
  char *at = sc->strings.data + sc->strings.len;

  memcpy(at, s, len);
  at[len] = '\0';
  sc->strings.len += len + 1;
  return at;
}

static void put_char(xcm_buf *b, uint32_t cp) {
  char *o = b->data + b->len;

  if (cp < 0x80) {
    o[0] = (char)cp;
    b->len += 1;
  } else if (cp < 0x800) {
    o[0] = (char)(0xC0 | (cp >> 6));
    o[1] = (char)(0x80 | (cp & 0x3F));
    b->len += 2;
  } else if (cp < 0x10000) {
    o[0] = (char)(0xE0 | (cp >> 12));
    o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[2] = (char)(0x80 | (cp & 0x3F));
    b->len += 3;
  } else {
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    b->len += 4;
  }
}

/* Append u[from, to) decoded as expat reports it: references replaced,
 * line ends normalised to '\n', and in an attribute value white space
 * turned into spaces. The bytes were validated by the scan. */
static void put_decoded(xcm_xml_scan *sc, const unsigned char *u, size_t from,
                        size_t to, int attr) {
  xcm_buf *b = &sc->strings;
  size_t i = from;
  uint32_t cp;

  while (i < to) {
    size_t run = i;

    while (run < to && u[run] != '&' && u[run] != '\r' &&
           !(attr && (u[run] == '\n' || u[run] == '\t')))
      run++;
    memcpy(b->data + b->len, u + i, run - i);
    b->len += run - i;
    i = run;
    if (i >= to)
      break;
    if (u[i] == '&') {
      i += reference(u + i, to - i, &cp);
      put_char(b, cp);
      continue;
    }
    if (u[i] == '\r' && i + 1 < to && u[i + 1] == '\n')
      i++; /* \r\n is one line end */
    b->data[b->len++] = attr ? ' ' : '\n';
    i++;
  }
}

static const char *finish_string(xcm_xml_scan *sc, size_t start) {
  sc->strings.data[sc->strings.len++] = '\0';
  return sc->strings.data + start;
}

size_t xcm__xml_scan_element(xcm_xml_scan *sc, const char *p, size_t len,
                             size_t max_len, unsigned max_depth) {
  const unsigned char *u = (const unsigned char *)p;
  size_t n = scan(sc, u, len, max_len, max_depth);

  sc->name = sc->ns = NULL;
  sc->incomplete = n == 0 && sc->ran_out && len <= max_len;
  if (n == 0 || prepare(sc, n) != 0)
    return 0;
  sc->name = put(sc, u + 1, sc->recs[0].name_len);
  if (sc->recs[0].has_xmlns)
    sc->ns = put(sc, u + sc->recs[0].xmlns_off, sc->recs[0].xmlns_len);
  return n;
}

int xcm__xml_scan_incomplete(const xcm_xml_scan *sc) {
  return sc->incomplete;
}

const char *xcm__xml_scan_name(xcm_xml_scan *sc) {
  return sc->name;
}

const char *xcm__xml_scan_ns(xcm_xml_scan *sc, const char *default_ns) {
  return sc->ns != NULL ? sc->ns : default_ns;
}

/* The attributes of r's start tag into sc->attrs from *na on. */
static int build_attrs(xcm_xml_scan *sc, const unsigned char *u, const rec *r,
                       size_t *na) {
  size_t j = r->start + 1 + r->name_len;

  for (;;) {
    size_t a0, alen, colon = 0, v0, v1, vs;
    xcm_xml_attr *a;

    j = skip_space(sc, u, j, r->tag_end);
    if (u[j] == '>' || u[j] == '/')
      return 0;
    a0 = j;
    while (u[j] != '=' && !(sc->cls[u[j]] & C_SPACE)) {
      if (u[j] == ':')
        colon = j;
      j++;
    }
    alen = j - a0;
    j = skip_space(sc, u, j, r->tag_end) + 1; /* past '=' */
    j = skip_space(sc, u, j, r->tag_end);
    v0 = j + 1;
    v1 = v0;
    while (u[v1] != u[j])
      v1++;
    j = v1 + 1;
    if (alen == 5 && memcmp(u + a0, "xmlns", 5) == 0)
      continue; /* a declaration, not an attribute (as expat reports) */
    if (*na == MAX_ATTRS)
      return 1;
    a = &sc->attrs[(*na)++];
    if (colon != 0) {
      a->ns = NS_XML;
      a->name = put(sc, u + colon + 1, a0 + alen - colon - 1);
    } else {
      a->ns = "";
      a->name = put(sc, u + a0, alen);
    }
    vs = sc->strings.len;
    put_decoded(sc, u, v0, v1, 1);
    a->value = finish_string(sc, vs);
  }
}

/* r's own character data: its content minus its children's bytes. */
static void build_text(xcm_xml_scan *sc, const unsigned char *u, size_t ri,
                       xcm_xml_node *n) {
  const rec *r = &sc->recs[ri];
  size_t at = r->tag_end, k, ts = sc->strings.len;

  for (k = ri + 1; k < sc->nrecs && sc->recs[k].start < r->end; k++) {
    if (sc->recs[k].parent != (int)ri)
      continue;
    put_decoded(sc, u, at, sc->recs[k].start, 0);
    at = sc->recs[k].end;
  }
  put_decoded(sc, u, at, r->content_end, 0);
  n->text_len = sc->strings.len - ts;
  n->text = finish_string(sc, ts);
  if (n->text_len == 0)
    n->text = "";
}

int xcm__xml_scan_build(xcm_xml_scan *sc, const char *p, size_t n, int levels,
                        const char *default_ns, xcm_xml_stanza *st) {
  const unsigned char *u = (const unsigned char *)p;
  unsigned want = (unsigned)levels & ~(unsigned)XCM_XML_BARE_LAST;
  unsigned bare = (levels & XCM_XML_BARE_LAST) ? want : 0;
  size_t i, na = 0, nn = 0;

  memset(st, 0, sizeof(*st));
  st->bytes = p;
  st->len = n;
  st->name = sc->name;
  st->ns = xcm__xml_scan_ns(sc, default_ns);
  st->qname_len = sc->recs[0].name_len;
  st->declares_default = sc->recs[0].has_xmlns;
  if (want == 0)
    return 0;
  /* A node's text needs its children's extents, one level further. */
  if (sc->unrecorded != 0 && sc->unrecorded <= want + 1)
    return 1;
  for (i = 0; i < sc->nrecs; i++) {
    const rec *r = &sc->recs[i];
    xcm_xml_node *node, *parent;

    sc->node_of[i] = -1;
    if (r->depth > want)
      continue;
    node = &sc->nodes[nn];
    sc->last_child[nn] = NULL;
    sc->node_of[i] = (int)nn++;
    memset(node, 0, sizeof(*node));
    parent = r->parent >= 0 ? &sc->nodes[sc->node_of[r->parent]] : NULL;
    if (i == 0) {
      node->name = sc->name;
      node->ns = st->ns;
    } else {
      node->name = put(sc, u + r->start + 1, r->name_len);
      node->ns =
          r->has_xmlns ? put(sc, u + r->xmlns_off, r->xmlns_len) : parent->ns;
    }
    node->attrs = &sc->attrs[na];
    if (r->depth != bare && build_attrs(sc, u, r, &na) != 0)
      return 1;
    node->nattrs = (size_t)(&sc->attrs[na] - node->attrs);
    build_text(sc, u, i, node);
    node->off = r->start;
    node->len = r->end - r->start;
    if (parent != NULL) {
      xcm_xml_node **last = &sc->last_child[sc->node_of[r->parent]];

      if (*last != NULL)
        (*last)->next = node;
      else
        parent->children = node;
      *last = node;
      node->parent = parent;
      parent->nchildren++;
    }
  }
  st->root = &sc->nodes[0];
  return 0;
}

/* ---- the stream header ------------------------------------------------- */

/* Whether the n bytes at v, cut off by the end of the input before the
 * closing quote, begin (or are) the value the declaration's k-th
 * pseudo-attribute must have ("1.0", or "UTF-8" in any case). */
static int decl_value_prefix(size_t k, const unsigned char *v, size_t n) {
  const char *want = k == 0 ? "1.0" : "utf-8";
  size_t i;

  if (n > strlen(want))
    return 0;
  for (i = 0; i < n; i++)
    if ((want[i] >= 'a' && want[i] <= 'z' ? v[i] | 0x20 : v[i]) != want[i])
      return 0;
  return 1;
}

/* Past an XML declaration of the usual form at u[0] ("<?xml version='1.0'"
 * with an optional UTF-8 encoding), or 0. */
static size_t xml_decl(xcm_xml_scan *sc, const unsigned char *u, size_t len) {
  static const char *const names[] = {"version", "encoding"};
  size_t i = 5, k;

  if (len < 5 || memcmp(u, "<?xml", 5) != 0)
    return 0;
  for (k = 0; k < 2; k++) {
    size_t ws = i, nl = strlen(names[k]), v0;
    unsigned char q;

    i = skip_space(sc, u, i, len);
    if (i >= len ||
        (i != ws && len - i < nl && memcmp(u + i, names[k], len - i) == 0))
      return more(sc);
    if (i == ws || len - i < nl || memcmp(u + i, names[k], nl) != 0) {
      if (k == 1) {
        i = ws;
        break; /* no encoding */
      }
      return 0;
    }
    i = skip_space(sc, u, i + nl, len);
    if (i >= len)
      return more(sc);
    if (u[i] != '=')
      return 0;
    i = skip_space(sc, u, i + 1, len);
    if (i >= len)
      return more(sc);
    if (u[i] != '"' && u[i] != '\'')
      return 0;
    q = u[i];
    v0 = ++i;
    while (i < len && u[i] != q && i - v0 < 8)
      i++;
    if (i >= len)
      return decl_value_prefix(k, u + v0, i - v0) ? more(sc) : 0;
    if (u[i] != q)
      return 0;
    if (k == 0 ? (i - v0 != 3 || memcmp(u + v0, "1.0", 3) != 0)
               : (i - v0 != 5 ||
                  !((u[v0] | 0x20) == 'u' && (u[v0 + 1] | 0x20) == 't' &&
                    (u[v0 + 2] | 0x20) == 'f' && u[v0 + 3] == '-' &&
                    u[v0 + 4] == '8')))
      return 0;
    i++;
  }
  i = skip_space(sc, u, i, len);
  if (i >= len || (i + 1 == len && u[i] == '?'))
    return more(sc);
  if (u[i] != '?' || u[i + 1] != '>')
    return 0;
  return i + 2;
}

/* Whether a name starts with "xml" in any case: reserved, and the xml
 * and xmlns prefixes, all of which expat judges. */
static int starts_xml(const unsigned char *n, size_t len) {
  return len >= 3 && (n[0] | 0x20) == 'x' && (n[1] | 0x20) == 'm' &&
         (n[2] | 0x20) == 'l';
}

static size_t header(xcm_xml_scan *sc, const unsigned char *u, size_t len,
                     xcm_xml_header *h, xcm_xml_nsdecl *decls, size_t max_decls,
                     const char **qname) {
  hattr at[MAX_TAG_ATTRS];
  size_t na = 0, nd = 0, i = 0, j, k, start, plen = 0, name_end;

  if (len < 5 && memcmp(u, "<?xml", len) == 0)
    return more(sc); /* a declaration or the root may follow */
  if (len >= 5 && memcmp(u, "<?xml", 5) == 0 && (i = xml_decl(sc, u, len)) == 0)
    return 0;
  i = skip_space(sc, u, i, len);
  if (i >= len || (i + 1 == len && u[i] == '<'))
    return more(sc);
  if (u[i] != '<' || !(sc->cls[u[i + 1]] & C_START))
    return 0;
  start = i;
  j = skip_name(sc, u, i + 2, len);
  if (j < len && u[j] == ':') {
    plen = j - (i + 1);
    if (j + 1 >= len)
      return more(sc);
    if (!(sc->cls[u[j + 1]] & C_START))
      return 0;
    j = skip_name(sc, u, j + 2, len);
  }
  if (starts_xml(u + i + 1, j - i - 1))
    return 0;
  if (j >= len)
    return more(sc);
  name_end = j;
  for (;;) {
    size_t ws = j;
    const hattr *a = &at[na];

    j = skip_space(sc, u, j, len);
    if (j >= len)
      return more(sc);
    if (u[j] == '>')
      break;
    if (j == ws || na == MAX_TAG_ATTRS)
      return 0;
    j = attribute(sc, u, j, len, at, na, &at[na]);
    if (j == 0)
      return 0;
    na++;
    if (is_decl(u, a)) {
      /* A prefix declared must be a name not starting with xml, and not
       * undeclared (xmlns:p=""). */
      if (a->colon != 0 &&
          (starts_xml(u + a->colon + 1, a->a0 + a->alen - a->colon - 1) ||
           a->v1 == a->v0))
        return 0;
      if (nd++ == max_decls)
        return 0;
    } else if (a->colon != 0 &&
               (a->colon - a->a0 != 3 || memcmp(u + a->a0, "xml", 3) != 0)) {
      return 0; /* prefixed attributes other than xml: are expat's */
    }
  }
  j++;
  if (prepare(sc, j) != 0)
    return 0;
  memset(h, 0, sizeof(*h));
  h->ns = "";
  h->decls = decls;
  h->attrs = sc->attrs;
  for (k = 0, nd = 0; k < na; k++) {
    const hattr *a = &at[k];
    xcm_xml_attr *t;
    size_t vs;

    if (a->alen >= 5 && memcmp(u + a->a0, "xmlns", 5) == 0) {
      decls[nd].prefix =
          a->colon ? put(sc, u + a->colon + 1, a->a0 + a->alen - a->colon - 1)
                   : "";
      decls[nd].uri = put(sc, u + a->v0, a->v1 - a->v0);
      if (plen > 0 ? a->colon != 0 && a->alen - 6 == plen &&
                         memcmp(u + a->colon + 1, u + start + 1, plen) == 0
                   : a->colon == 0)
        h->ns = decls[nd].uri;
      nd++;
      continue;
    }
    t = &sc->attrs[h->nattrs++];
    t->ns = a->colon ? NS_XML : "";
    t->name = a->colon
                  ? put(sc, u + a->colon + 1, a->a0 + a->alen - a->colon - 1)
                  : put(sc, u + a->a0, a->alen);
    vs = sc->strings.len;
    put_decoded(sc, u, a->v0, a->v1, 1);
    t->value = finish_string(sc, vs);
  }
  /* A prefix the tag does not declare is unbound: expat's error. */
  if (plen > 0 && h->ns[0] == '\0')
    return 0;
  h->ndecls = nd;
  *qname = put(sc, u + start + 1, name_end - start - 1);
  h->name = *qname + (plen > 0 ? plen + 1 : 0);
  return j;
}

size_t xcm__xml_scan_header(xcm_xml_scan *sc, const char *p, size_t len,
                            size_t max_len, xcm_xml_header *h,
                            xcm_xml_nsdecl *decls, size_t max_decls,
                            const char **qname) {
  size_t n;

  sc->ran_out = 0;
  n = header(sc, (const unsigned char *)p, len < max_len ? len : max_len, h,
             decls, max_decls, qname);
  sc->incomplete = n == 0 && sc->ran_out && len <= max_len;
  return n;
}
