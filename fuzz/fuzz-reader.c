/* libFuzzer target for the XML stream reader (lib/xml/reader.h).
 *
 * Input layout: the first PREFIX bytes steer the run, the rest is the
 * stream.
 *
 *   byte 0      flags: bits 0-1 choose which stanzas get a tree (none, the
 *               four stanza kinds, all, all but only one level); bit 2
 *               skips xcm__xml_reader_shrink() between feeds; bit 3 turns
 *               the scanner on (xcm__xml_reader_set_scan).
 *   bytes 1-8   split sizes: the stream is fed in pieces of byte+1 bytes,
 *               cycling through the eight.
 *
 * Stanzas named proceed, success or compressed (in any namespace) end the
 * document as STARTTLS, SASL and compression do; the target then restarts
 * the reader and feeds the rest, as a connection would. So does the root's
 * end tag.
 *
 * Besides ASan and UBSan, the target checks what the header promises about
 * every event and aborts when a promise is broken. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xml/reader.h"

#define PREFIX 9
#define MAX_STANZA 8192
#define MAX_DEPTH 16
#define TREE_LEVELS 3

/* Abort with a message libFuzzer shows beside the stack. */
#define ENSURE(c)                                                              \
  do {                                                                         \
    if (!(c))                                                                  \
      broken(#c, __LINE__);                                                    \
  } while (0)

typedef struct fuzz_run {
  unsigned flags;
  int levels;    /* what stanza_start asked for the open stanza */
  unsigned sink; /* touched bytes end here, so reads are not elided */
  int doc_ended; /* a restart or the end tag came during this feed */
} fuzz_run;

static void broken(const char *what, int line) {
  fprintf(stderr, "fuzz-reader.c:%d: broken promise: %s\n", line, what);
  abort();
}

static void touch(fuzz_run *f, const char *s, size_t len) {
  size_t i;

  for (i = 0; i < len; i++)
    f->sink += (unsigned char)s[i];
}

static void touch_str(fuzz_run *f, const char *s) {
  ENSURE(s != NULL);
  touch(f, s, strlen(s));
}

static void touch_attrs(fuzz_run *f, const xcm_xml_attr *a, size_t n) {
  size_t i;

  for (i = 0; i < n; i++) {
    touch_str(f, a[i].ns);
    touch_str(f, a[i].name);
    touch_str(f, a[i].value);
  }
}

static int on_header(void *ud, const xcm_xml_header *h) {
  fuzz_run *f = ud;
  size_t i;

  touch_str(f, h->ns);
  touch_str(f, h->name);
  touch_attrs(f, h->attrs, h->nattrs);
  for (i = 0; i < h->ndecls; i++) {
    touch_str(f, h->decls[i].prefix);
    touch_str(f, h->decls[i].uri);
  }
  return 0;
}

static int on_stanza_start(void *ud, const char *ns, const char *name) {
  fuzz_run *f = ud;

  touch_str(f, ns);
  touch_str(f, name);
  switch (f->flags & 3) {
  case 0:
    f->levels = 0;
    break;
  case 1:
    f->levels = strcmp(name, "iq") == 0 || strcmp(name, "message") == 0 ||
                        strcmp(name, "presence") == 0 ||
                        strcmp(name, "route") == 0
                    ? TREE_LEVELS
                    : 0;
    break;
  case 2:
    f->levels = TREE_LEVELS;
    break;
  default:
    f->levels = 1;
    break;
  }
  return f->levels;
}

/* Walk a tree: every node's bytes lie inside the stanza's and start a tag,
 * the child counts are right, and no level past the one asked for. */
static void walk(fuzz_run *f, const xcm_xml_stanza *s, const xcm_xml_node *n,
                 int level) {
  const xcm_xml_node *c;
  size_t count = 0;

  ENSURE(level <= f->levels);
  ENSURE(n->off < s->len && n->len <= s->len - n->off && n->len >= 2);
  ENSURE(s->bytes[n->off] == '<' && s->bytes[n->off + n->len - 1] == '>');
  touch_str(f, n->ns);
  touch_str(f, n->name);
  touch_attrs(f, n->attrs, n->nattrs);
  if (n->text_len > 0)
    touch(f, n->text, n->text_len);
  for (c = n->children; c != NULL; c = c->next) {
    ENSURE(c->parent == n);
    walk(f, s, c, level + 1);
    count++;
  }
  ENSURE(count == n->nchildren);
}

static int on_stanza(void *ud, const xcm_xml_stanza *s) {
  fuzz_run *f = ud;

  ENSURE(s->len >= 2 && s->len <= MAX_STANZA);
  ENSURE(s->bytes[0] == '<' && s->bytes[s->len - 1] == '>');
  touch(f, s->bytes, s->len);
  touch_str(f, s->ns);
  touch_str(f, s->name);
  ENSURE(s->qname_len >= strlen(s->name) && s->qname_len < s->len);
  ENSURE((s->root != NULL) == (f->levels > 0));
  if (s->root != NULL) {
    ENSURE(s->root->parent == NULL && s->root->off == 0 &&
           s->root->len == s->len);
    walk(f, s, s->root, 1);
    if (xcm__xml_node_attr(s->root, "id") != NULL)
      f->sink++;
    if (xcm__xml_node_child(s->root, NULL, "body") != NULL)
      f->sink++;
  }
  if (strcmp(s->name, "proceed") == 0 || strcmp(s->name, "success") == 0 ||
      strcmp(s->name, "compressed") == 0) {
    f->doc_ended = 1;
    return XCM_XML_RESTART;
  }
  return 0;
}

static void on_end(void *ud) {
  fuzz_run *f = ud;

  f->doc_ended = 1;
}

static const xcm_xml_callbacks callbacks = {
    .header = on_header,
    .stanza_start = on_stanza_start,
    .stanza = on_stanza,
    .end = on_end,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const xcm_xml_limits limits = {MAX_STANZA, MAX_DEPTH, 0};
  uint8_t splits[PREFIX - 1] = {0};
  xcm_xml_pool *pool;
  xcm_xml_reader *r;
  fuzz_run f = {0};
  const char *in = (const char *)data;
  size_t pos = 0, piece = 0, n = size;
  int stalled = 0;

  if (size >= PREFIX) {
    f.flags = data[0];
    memcpy(splits, data + 1, sizeof(splits));
    in += PREFIX;
    n -= PREFIX;
  } else {
    /* Too short to steer: one feed of everything. */
    memset(splits, 0xff, sizeof(splits));
  }
  if (xcm__xml_pool_new(&pool, NULL, 1) != 0)
    abort();
  if (xcm__xml_reader_new(&r, pool, &callbacks, &f, &limits) != 0 ||
      xcm__xml_reader_set_scan(r, (f.flags & 8) != 0) != 0)
    abort();

  while (pos < n) {
    size_t want = (size_t)splits[piece++ % sizeof(splits)] + 1;
    size_t consumed = (size_t)-1;
    size_t ndecls = 0;
    int rc;

    if (want > n - pos)
      want = n - pos;
    rc = xcm__xml_reader_feed(r, in + pos, want, &consumed);
    if (rc < 0) {
      /* A failed reader names the stream error to send. */
      ENSURE(xcm__xml_reader_condition(r) != XCM_COND_NONE);
      touch_str(&f, xcm__xml_reader_error_text(r));
      break;
    }
    /* All bytes are taken unless the document ended on the way. */
    ENSURE(consumed == want || (consumed < want && f.doc_ended));
    pos += consumed;
    ENSURE(xcm__xml_reader_offset(r) == (uint64_t)pos);
    if (xcm__xml_reader_in_stream(r))
      (void)xcm__xml_reader_decls(r, &ndecls);
    /* A reader that keeps stopping without taking a byte would make a
     * connection loop forever. */
    stalled = consumed > 0 ? 0 : stalled + 1;
    ENSURE(stalled < 2);
    if (f.doc_ended) {
      /* A new document follows, as after STARTTLS or SASL success. */
      f.doc_ended = 0;
      xcm__xml_reader_restart(r);
    }
    if (!(f.flags & 4))
      (void)xcm__xml_reader_shrink(r);
  }

  xcm__xml_reader_free(r);
  ENSURE(xcm__xml_pool_busy(pool) == 0);
  xcm__xml_pool_free(pool);
  return 0;
}
