/* What a tree costs per byte of its element, for bench/tree-count: reads
 * one stanza shape REPS times through the stream reader with a two-level
 * tree (as the CM asks for a client's pre-auth iqs and <compress>), in
 * reads of 4 KB, with the scanner on or off.
 *
 * usage: xcm-tree SHAPE SIZE REPS SCAN
 *   SHAPE  plain (text in a body), mixed (tttttttt<a>u</a>...), siblings
 *          (<a/>...), deep (nesting 30 deep with text at every level)
 *   SIZE   bytes of the stanza (at most 262144, the stanza limit)
 *   REPS   how many times to read it; 0 only sets up, for a baseline
 *   SCAN   1: the scanner reads first; 0: expat alone */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xml/reader.h"

#define HDR                                                                    \
  "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' "            \
  "xmlns='jabber:client' to='example.test' version='1.0'>"

static char *shape(const char *name, size_t size) {
  static const char head[] = "<message>", tail[] = "</message>";
  char *b = malloc(size + 1), *p, *end;
  int i;

  if (b == NULL || size < 64)
    return NULL;
  p = b;
  end = b + size - (sizeof tail - 1);
  memcpy(p, head, sizeof head - 1);
  p += sizeof head - 1;
  if (strcmp(name, "plain") == 0) {
    memcpy(p, "<body>", 6);
    p += 6;
    memset(p, 't', (size_t)(end - 7 - p));
    p = end - 7;
    memcpy(p, "</body>", 7);
    p += 7;
  } else if (strcmp(name, "mixed") == 0) {
    for (; end - p >= 16; p += 16)
      memcpy(p, "tttttttt<a>u</a>", 16);
  } else if (strcmp(name, "siblings") == 0) {
    for (; end - p >= 4; p += 4)
      memcpy(p, "<a/>", 4);
  } else if (strcmp(name, "deep") == 0) {
    while (end - p >= 30 * 9) {
      for (i = 0; i < 30; i++, p += 4)
        memcpy(p, "<a>t", 4);
      for (i = 0; i < 30; i++, p += 5)
        memcpy(p, "</a>t", 5);
    }
  } else {
    free(b);
    return NULL;
  }
  memset(p, 't', (size_t)(end - p));
  memcpy(end, tail, sizeof tail);
  return b;
}

static int two_levels(void *ud, const char *ns, const char *name) {
  (void)ud;
  (void)ns;
  (void)name;
  return 2;
}

static int on_stanza(void *ud, const xcm_xml_stanza *s) {
  const xcm_xml_node *c;

  for (c = s->root->children; c != NULL; c = c->next)
    ++*(size_t *)ud;
  return 0;
}

int main(int argc, char **argv) {
  static const xcm_xml_callbacks cb = {NULL, two_levels, on_stanza, NULL};
  xcm_xml_pool *pool;
  xcm_xml_reader *r;
  size_t size, reps, i, off, consumed, nodes = 0;
  char *st;
  int err = 0;

  if (argc != 5 || (size = strtoul(argv[2], NULL, 10)) > 262144 ||
      (st = shape(argv[1], size)) == NULL) {
    fprintf(stderr, "usage: xcm-tree plain|mixed|siblings|deep SIZE REPS "
                    "SCAN\n");
    return 2;
  }
  reps = strtoul(argv[3], NULL, 10);
  if (xcm__xml_pool_new(&pool, NULL, 1) != 0 ||
      xcm__xml_reader_new(&r, pool, &cb, &nodes, NULL) != 0 ||
      xcm__xml_reader_set_scan(r, atoi(argv[4])) != 0)
    return 1;
  err = xcm__xml_reader_feed(r, HDR, strlen(HDR), &consumed);
  for (i = 0; i < reps && err == 0; i++)
    for (off = 0; off < size && err == 0; off += consumed) {
      size_t n = size - off < 4096 ? size - off : 4096;

      err = xcm__xml_reader_feed(r, st + off, n, &consumed);
    }
  if (err != 0) {
    fprintf(stderr, "xcm-tree: %s\n", xcm__xml_reader_error_text(r));
    return 1;
  }
  printf("%zu children\n", nodes);
  xcm__xml_reader_free(r);
  xcm__xml_pool_free(pool);
  free(st);
  return 0;
}
