#include "xml/reader.h"

#include <expat.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

#include "util/alloc.h"
#include "util/buf.h"
#include "xcm/error.h"
#include "xcm_config.h"
#include "xml/scan.h"

/* Expat joins namespace URI, local name and prefix with this byte. It
 * cannot occur in an XML name or a namespace URI that expat accepts. */
#define SEP '\x01'

/* Input is handed to expat in pieces of at most this size so that the
 * stanza limit is checked often and expat's own buffer stays bounded. */
#define PIECE_MAX 16384

/* Buffers that grew past this for one large stanza are given back rather
 * than kept for the next one. */
#define KEEP_BUF_MAX 65536

/* The most bytes of a cut-off element the reader keeps itself, scanning
 * them again with each read, before it lends the element a parser. A
 * parser costs about 15 KB for as long as the element stays open; these
 * bytes cost their size. 2 KiB holds every stanza of a usual login (SASL
 * auth and responses, bind, session, roster get) and most messages, and
 * bounds the rescanning a sender of one byte per read can cause to 2 KiB
 * per read. A larger element comes from a sender that is busy sending,
 * and expat reads it as before. */
#define KEEP_MAX 2048

/* Scans that may run at once: one, and one inside its callback. */
#define SCAN_NEST 2

#define ARENA_CHUNK 4096
/* Each new chunk is twice the last, up to this: a large tree costs a
 * few allocations, not one per 4 KB. */
#define ARENA_CHUNK_MAX (256 * 1024)

enum reader_state { R_INIT, R_STREAM, R_ENDED, R_FAILED };

enum stop_kind { STOP_NONE, STOP_ERROR, STOP_RESTART, STOP_END, STOP_PAUSE };

typedef struct arena_chunk arena_chunk;
struct arena_chunk {
  arena_chunk *next;
  size_t cap;
  size_t used;
  /* Followed by cap bytes. */
};

/* A further run of a node's character data in the slot's text buffer,
 * when a child's text came between it and the node's earlier text. */
typedef struct text_run text_run;
struct text_run {
  size_t off;
  size_t len;
  text_run *next;
};

/* A tree node under construction. The public node comes first so that
 * the links between public nodes can point straight at it.
 *
 * Text is appended to the slot's text buffer once, as it comes; a node
 * whose text is interrupted by children gets a list of runs, gathered
 * once when the node ends. Building is linear in the element's size in
 * time and memory, whatever its shape. */
typedef struct build_node build_node;
struct build_node {
  xcm_xml_node n;
  size_t starttag_len;
  int64_t start; /* expat index of the start tag */
  build_node *last_child;
  /* The text: its first run, then the others; after the node's end,
   * text_off is where all of it lies, contiguous and NUL-terminated. */
  size_t text_off; /* into the slot's text buffer until the fix-up */
  size_t run_len;  /* of the first run */
  text_run *more, *more_last;
};

struct xcm_xml_slot {
  XML_Parser parser;
  xcm_xml_slot *next_idle;
  int dirty; /* the parser needs a reset before use */

  /* Position bookkeeping, all as expat byte indices of this document. */
  int64_t fed;        /* bytes given to expat */
  int64_t chunk_base; /* index of chunk[0] */
  const char *chunk;  /* the piece being parsed now */
  size_t chunk_len;
  int64_t boundary;     /* just after the last depth-1 element or header */
  int64_t stanza_start; /* start of the open depth-1 element */
  size_t stanza_starttag_len;
  unsigned depth; /* open elements, the root included */
  int priming;

  /* Bytes from earlier pieces still needed: [carry_base, chunk_base). */
  xcm_buf carry;
  int64_t carry_base;

  enum stop_kind stop;
  int stop_err;
  int64_t stop_at;

  /* Per stanza. */
  unsigned tree_levels;
  unsigned bare_level; /* built without attributes; 0 for none */
  build_node *cur;     /* deepest open node that was built */
  build_node *first;   /* the root of the tree */
  const char *stanza_ns;
  const char *stanza_name;
  size_t qname_len;
  int declares_default;
  uint32_t declared_mask; /* header prefixes redeclared on the start tag */
  uint32_t used_mask;

  /* The stream header's namespace declarations, as they come; more than
   * XCM_XML_MAX_HEADER_PREFIXES are refused. */
  xcm_xml_nsdecl pending[XCM_XML_MAX_HEADER_PREFIXES];
  size_t npending;
  int pending_overflow;
  /* What the declarations seen since the last start tag mean for a
   * stanza, computed as each comes, however many there are: whether one
   * declares the default namespace and which header prefixes they
   * redeclare. Those the stanza does not take from the header
   * (xcm_xml_stanza.declares_default, header_prefixes_used). */
  int pending_default;
  uint32_t pending_mask;

  arena_chunk *arena;
  xcm_buf text;
};

struct xcm_xml_pool {
  const xcm_allocator *alloc;
  xcm_xml_slot *idle;
  size_t nidle;
  size_t keep;
  size_t busy;
  unsigned long salt;
  /* Made for the first reader that scans; the second the first time a
   * scan runs inside a scanned element's callback. */
  xcm_xml_scan *scan[SCAN_NEST];
  int no_scan; /* xcm__xml_pool_set_scan(pool, 0) */
  /* Scanners in use: a scanned element's tree lives in its scanner's
   * scratch while its callback runs (see scan_enter). */
  unsigned scan_depth;
  uint64_t scanned; /* stanzas the scanner handed over */
};

/* The start of a depth-1 element (or of the stream header) that the
 * scanner found cut off by the end of a read, kept by the reader instead
 * of a parser: len bytes, at most KEEP_MAX, all consumed already. */
typedef struct kept_bytes {
  size_t len;
  char data[];
} kept_bytes;

struct xcm_xml_reader {
  xcm_xml_pool *pool;
  xcm_xml_slot *slot; /* NULL while idle */
  xcm_xml_callbacks cb;
  void *ud;
  xcm_xml_limits limits;
  enum reader_state state;
  xcm_cond cond;
  int err;
  int scan; /* try the scanner before expat */
  const char *err_text;
  /* The document's namespace context: the owner's (the usual header, or
   * an assumed one), else decls_mem owns it. */
  const xcm_xml_nsdecl *decls;
  size_t ndecls;
  void *decls_mem;
  /* The root's name as written, for the priming header to match the end
   * tag: the owner's, or in decls_mem. */
  const char *root_qname;
  const xcm_xml_context *usual; /* xcm__xml_reader_set_usual */
  uint64_t offset;
  kept_bytes *kept; /* NULL unless an element is cut off (see KEEP_MAX) */
};

static const xcm_xml_limits default_limits = {262144, 32, 0};

static const char too_large_tree[] = "element too large for the CM to read";

static void apply_limits(xcm_xml_reader *r, const xcm_xml_limits *l) {
  r->limits = default_limits;
  if (l != NULL && l->max_stanza != 0)
    r->limits.max_stanza = l->max_stanza;
  if (l != NULL && l->max_depth != 0)
    r->limits.max_depth = l->max_depth;
  if (l != NULL)
    r->limits.max_tree = l->max_tree;
}

/* Whether an element of len bytes (or more) is past the cap on what a
 * tree may be built for. */
static int tree_too_large(const xcm_xml_reader *r, unsigned levels,
                          int64_t len) {
  return levels > 0 && r->limits.max_tree != 0 &&
         len > (int64_t)r->limits.max_tree;
}

/* ---- arena ------------------------------------------------------------ */

static void *arena_alloc(xcm_xml_reader *r, size_t size) {
  xcm_xml_slot *s = r->slot;
  arena_chunk *c = s->arena;
  size_t cap;
  void *p;

  size = (size + 7) & ~(size_t)7;
  if (c == NULL || c->cap - c->used < size) {
    cap = c == NULL                  ? ARENA_CHUNK
          : c->cap < ARENA_CHUNK_MAX ? 2 * c->cap
                                     : c->cap;
    if (cap < size)
      cap = size;
    c = xcm__alloc(r->pool->alloc, sizeof(*c) + cap);
    if (c == NULL)
      return NULL;
    c->cap = cap;
    c->used = 0;
    c->next = s->arena;
    s->arena = c;
  }
  p = (char *)(c + 1) + c->used;
  c->used += size;
  return p;
}

static char *arena_strndup(xcm_xml_reader *r, const char *str, size_t len) {
  char *p = arena_alloc(r, len + 1);

  if (p != NULL) {
    memcpy(p, str, len);
    p[len] = '\0';
  }
  return p;
}

/* Keep one chunk (the oldest, which is last in the list) for reuse. */
static void arena_reset(const xcm_allocator *alloc, xcm_xml_slot *s) {
  arena_chunk *c = s->arena, *next;

  while (c != NULL && c->next != NULL) {
    next = c->next;
    xcm__free(alloc, c);
    c = next;
  }
  s->arena = c;
  if (c != NULL)
    c->used = 0;
}

static void arena_free(const xcm_allocator *alloc, xcm_xml_slot *s) {
  arena_reset(alloc, s);
  xcm__free(alloc, s->arena);
  s->arena = NULL;
}

/* ---- small helpers ---------------------------------------------------- */

static int is_space(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Split an expat name "uri SEP local [SEP prefix]" (or a bare "local"). */
static void split_name(const char *full, const char **ns, size_t *ns_len,
                       const char **local, size_t *local_len,
                       const char **prefix, size_t *prefix_len) {
  const char *a = strchr(full, SEP), *b;

  if (a == NULL) {
    *ns = "";
    *ns_len = 0;
    *local = full;
    *local_len = strlen(full);
    *prefix = "";
    *prefix_len = 0;
    return;
  }
  *ns = full;
  *ns_len = (size_t)(a - full);
  *local = a + 1;
  b = strchr(*local, SEP);
  if (b == NULL) {
    *local_len = strlen(*local);
    *prefix = "";
    *prefix_len = 0;
  } else {
    *local_len = (size_t)(b - *local);
    *prefix = b + 1;
    *prefix_len = strlen(*prefix);
  }
}

static int header_prefix_index(const xcm_xml_reader *r, const char *prefix,
                               size_t len) {
  size_t i;

  for (i = 0; i < r->ndecls; i++)
    if (strlen(r->decls[i].prefix) == len &&
        memcmp(r->decls[i].prefix, prefix, len) == 0 && len > 0)
      return (int)i;
  return -1;
}

static void stop(xcm_xml_reader *r, enum stop_kind kind, int err, int64_t at) {
  xcm_xml_slot *s = r->slot;

  if (s->stop != STOP_NONE)
    return;
  s->stop = kind;
  s->stop_err = err;
  s->stop_at = at;
  XML_StopParser(s->parser, XML_FALSE);
}

static void stop_error(xcm_xml_reader *r, int err, xcm_cond cond,
                       const char *text) {
  xcm__xml_reader_fail(r, cond, text);
  stop(r, STOP_ERROR, err, 0);
}

static int64_t cur_index(const xcm_xml_reader *r) {
  return (int64_t)XML_GetCurrentByteIndex(r->slot->parser);
}

/* The byte at expat index idx, given the invariant that the carry
 * buffer holds [carry_base, chunk_base). */
static char byte_at(const xcm_xml_slot *s, int64_t idx) {
  if (idx >= s->chunk_base)
    return s->chunk[idx - s->chunk_base];
  return s->carry.data[idx - s->carry_base];
}

/* ---- namespace context ------------------------------------------------ */

static int decls_equal(const xcm_xml_nsdecl *a, size_t na,
                       const xcm_xml_nsdecl *b, size_t nb) {
  size_t i, j;

  if (na != nb)
    return 0;
  for (i = 0; i < na; i++) {
    for (j = 0; j < nb; j++)
      if (strcmp(a[i].prefix, b[j].prefix) == 0 &&
          strcmp(a[i].uri, b[j].uri) == 0)
        break;
    if (j == nb)
      return 0;
  }
  return 1;
}

static void clear_decls(xcm_xml_reader *r) {
  xcm__free(r->pool->alloc, r->decls_mem);
  r->decls_mem = NULL;
  r->decls = NULL;
  r->ndecls = 0;
  r->root_qname = NULL;
}

/* Remember the header's declarations beyond the slot's lifetime. The
 * usual header (the owner's) is pointed at, so an idle reader of a usual
 * document costs nothing. */
static int save_decls(xcm_xml_reader *r, const xcm_xml_nsdecl *d, size_t n,
                      const char *qname) {
  const xcm_xml_context *u = r->usual;
  size_t i, size, off;
  xcm_xml_nsdecl *copy;
  char *strings;

  clear_decls(r);
  if (u != NULL && strcmp(qname, u->root) == 0 &&
      decls_equal(d, n, u->decls, u->ndecls)) {
    r->decls = u->decls;
    r->ndecls = u->ndecls;
    r->root_qname = u->root;
    return 0;
  }
  size = n * sizeof(*copy) + strlen(qname) + 1;
  for (i = 0; i < n; i++)
    size += strlen(d[i].prefix) + strlen(d[i].uri) + 2;
  copy = xcm__alloc(r->pool->alloc, size);
  if (copy == NULL)
    return XCM_ENOMEM;
  strings = (char *)(copy + n);
  memcpy(strings, qname, strlen(qname) + 1);
  r->root_qname = strings;
  off = strlen(qname) + 1;
  for (i = 0; i < n; i++) {
    size_t pl = strlen(d[i].prefix) + 1, ul = strlen(d[i].uri) + 1;
    memcpy(strings + off, d[i].prefix, pl);
    copy[i].prefix = strings + off;
    off += pl;
    memcpy(strings + off, d[i].uri, ul);
    copy[i].uri = strings + off;
    off += ul;
  }
  r->decls_mem = copy;
  r->decls = copy;
  r->ndecls = n;
  return 0;
}

/* ---- expat handlers ---------------------------------------------------- */

static void on_ns_start(void *ud, const XML_Char *prefix, const XML_Char *uri) {
  xcm_xml_reader *r = ud;
  xcm_xml_slot *s = r->slot;
  xcm_xml_nsdecl *d;

  if (s->stop != STOP_NONE || s->priming || s->depth > 1)
    return;
  if (s->depth == 1) {
    /* On a stanza's start tag: no record to fill, only two facts. */
    int hi;

    if (prefix == NULL || prefix[0] == '\0') {
      s->pending_default = 1;
    } else if ((hi = header_prefix_index(r, prefix, strlen(prefix))) >= 0) {
      s->pending_mask |= (uint32_t)1 << hi;
    }
    return;
  }
  if (s->npending == XCM_XML_MAX_HEADER_PREFIXES) {
    s->pending_overflow = 1;
    return;
  }
  d = &s->pending[s->npending];
  d->prefix =
      arena_strndup(r, prefix ? prefix : "", prefix ? strlen(prefix) : 0);
  d->uri = arena_strndup(r, uri ? uri : "", uri ? strlen(uri) : 0);
  if (d->prefix == NULL || d->uri == NULL) {
    stop_error(r, XCM_ENOMEM, XCM_COND_RESOURCE_CONSTRAINT, "out of memory");
    return;
  }
  s->npending++;
}

static xcm_xml_attr *copy_attrs(xcm_xml_reader *r, const XML_Char **atts,
                                size_t *count) {
  size_t n = 0, i;
  xcm_xml_attr *a;

  /* Never written: a node without attributes shares it. */
  static xcm_xml_attr none[1];

  while (atts[2 * n] != NULL)
    n++;
  *count = n;
  if (n == 0)
    return none;
  a = arena_alloc(r, n * sizeof(*a));
  if (a == NULL)
    return NULL;
  for (i = 0; i < n; i++) {
    const char *ns, *local, *prefix;
    size_t ns_len, local_len, prefix_len;

    split_name(atts[2 * i], &ns, &ns_len, &local, &local_len, &prefix,
               &prefix_len);
    a[i].ns = arena_strndup(r, ns, ns_len);
    a[i].name = arena_strndup(r, local, local_len);
    a[i].value = arena_strndup(r, atts[2 * i + 1], strlen(atts[2 * i + 1]));
    if (a[i].ns == NULL || a[i].name == NULL || a[i].value == NULL)
      return NULL;
  }
  return a;
}

static void on_header(xcm_xml_reader *r, const char *full,
                      const XML_Char **atts) {
  xcm_xml_slot *s = r->slot;
  xcm_xml_header h;
  const char *ns, *local, *prefix;
  size_t ns_len, local_len, prefix_len;
  char *qname;
  int err;

  if (s->pending_overflow) {
    stop_error(r, XCM_ELIMIT, XCM_COND_POLICY_VIOLATION,
               "too many namespace declarations on the stream header");
    return;
  }
  if (cur_index(r) + XML_GetCurrentByteCount(s->parser) >
      (int64_t)r->limits.max_stanza) {
    stop_error(r, XCM_ELIMIT, XCM_COND_POLICY_VIOLATION,
               "stream header larger than the limit");
    return;
  }
  split_name(full, &ns, &ns_len, &local, &local_len, &prefix, &prefix_len);
  h.ns = arena_strndup(r, ns, ns_len);
  h.name = arena_strndup(r, local, local_len);
  h.attrs = copy_attrs(r, atts, &h.nattrs);
  if (h.ns == NULL || h.name == NULL || h.attrs == NULL) {
    stop_error(r, XCM_ENOMEM, XCM_COND_RESOURCE_CONSTRAINT, "out of memory");
    return;
  }
  h.decls = s->pending;
  h.ndecls = s->npending;
  qname = arena_alloc(r, local_len + prefix_len + 2);
  if (qname == NULL) {
    stop_error(r, XCM_ENOMEM, XCM_COND_RESOURCE_CONSTRAINT, "out of memory");
    return;
  }
  if (prefix_len > 0)
    sprintf(qname, "%.*s:%.*s", (int)prefix_len, prefix, (int)local_len, local);
  else
    sprintf(qname, "%.*s", (int)local_len, local);
  err = save_decls(r, s->pending, s->npending, qname);
  if (err == 0 && r->cb.header != NULL)
    err = r->cb.header(r->ud, &h);
  s->npending = 0;
  if (err < 0) {
    stop(r, STOP_ERROR, err, 0);
    return;
  }
  r->state = R_STREAM;
  s->boundary = cur_index(r) + XML_GetCurrentByteCount(s->parser);
  arena_reset(r->pool->alloc, s);
}

/* Note which header prefixes a stanza uses (those its own start tag
 * redeclares are taken out when it ends): what the stanza needs from the
 * header to be read on its own (xcm_xml_stanza.header_prefixes_used). */
static void note_prefix(xcm_xml_reader *r, const char *prefix, size_t len) {
  int i;

  if (len == 0)
    return;
  i = header_prefix_index(r, prefix, len);
  if (i >= 0)
    r->slot->used_mask |= (uint32_t)1 << i;
}

static build_node *build(xcm_xml_reader *r, const char *ns, size_t ns_len,
                         const char *local, size_t local_len,
                         const XML_Char **atts, int64_t start) {
  static const XML_Char *const none[] = {NULL};
  xcm_xml_slot *s = r->slot;
  build_node *b = arena_alloc(r, sizeof(*b)), *prev;
  xcm_xml_node *p;

  if (b == NULL)
    return NULL;
  memset(b, 0, sizeof(*b));
  if (s->depth - 1 == s->bare_level)
    atts = (const XML_Char **)none;
  /* Children mostly share their parent's namespace and their previous
   * sibling's name: share the strings too. */
  p = s->cur != NULL ? &s->cur->n : NULL;
  if (p != NULL && strlen(p->ns) == ns_len && memcmp(p->ns, ns, ns_len) == 0)
    b->n.ns = p->ns;
  else
    b->n.ns = arena_strndup(r, ns, ns_len);
  prev = s->cur != NULL ? s->cur->last_child : NULL;
  if (prev != NULL && strlen(prev->n.name) == local_len &&
      memcmp(prev->n.name, local, local_len) == 0)
    b->n.name = prev->n.name;
  else
    b->n.name = arena_strndup(r, local, local_len);
  b->n.attrs = copy_attrs(r, atts, &b->n.nattrs);
  if (b->n.ns == NULL || b->n.name == NULL || b->n.attrs == NULL)
    return NULL;
  b->n.text = "";
  b->start = start;
  b->starttag_len = (size_t)XML_GetCurrentByteCount(s->parser);
  b->n.off = (size_t)(start - s->stanza_start);
  if (p != NULL) {
    if (prev != NULL)
      prev->n.next = &b->n;
    else
      p->children = &b->n;
    s->cur->last_child = b;
    b->n.parent = p;
    p->nchildren++;
  } else {
    s->first = b;
  }
  s->cur = b;
  return b;
}

static void on_start(void *ud, const XML_Char *full, const XML_Char **atts) {
  xcm_xml_reader *r = ud;
  xcm_xml_slot *s = r->slot;
  const char *ns, *local, *prefix;
  size_t ns_len, local_len, prefix_len, i;
  int64_t idx;
  unsigned level;
  int levels;

  if (s->stop != STOP_NONE)
    return;
  if (s->priming) {
    s->depth++;
    return;
  }
  if (s->depth == 0) {
    s->depth = 1;
    on_header(r, full, atts);
    return;
  }
  idx = cur_index(r);
  level = s->depth; /* of the element starting now: a stanza is 1 */
  s->depth++;
  if (level > r->limits.max_depth) {
    stop_error(r, XCM_ELIMIT, XCM_COND_POLICY_VIOLATION,
               "elements nested deeper than the limit");
    return;
  }
  split_name(full, &ns, &ns_len, &local, &local_len, &prefix, &prefix_len);

  if (level == 1) {
    s->stanza_start = idx;
    s->stanza_starttag_len = (size_t)XML_GetCurrentByteCount(s->parser);
    s->qname_len = local_len + (prefix_len ? prefix_len + 1 : 0);
    s->used_mask = 0;
    s->first = s->cur = NULL;
    s->declares_default = s->pending_default;
    s->declared_mask = s->pending_mask;
    s->pending_default = 0;
    s->pending_mask = 0;
    s->stanza_ns = arena_strndup(r, ns, ns_len);
    s->stanza_name = arena_strndup(r, local, local_len);
    if (s->stanza_ns == NULL || s->stanza_name == NULL) {
      stop_error(r, XCM_ENOMEM, XCM_COND_RESOURCE_CONSTRAINT, "out of memory");
      return;
    }
    levels = 0;
    if (r->cb.stanza_start != NULL) {
      levels = r->cb.stanza_start(r->ud, s->stanza_ns, s->stanza_name);
      if (levels < 0) {
        stop(r, STOP_ERROR, levels, 0);
        return;
      }
    }
    s->tree_levels = (unsigned)levels & ~(unsigned)XCM_XML_BARE_LAST;
    s->bare_level = (levels & XCM_XML_BARE_LAST) ? s->tree_levels : 0;
  } else {
    if (idx - s->stanza_start > (int64_t)r->limits.max_stanza) {
      stop_error(r, XCM_ELIMIT, XCM_COND_POLICY_VIOLATION,
                 "stanza larger than the limit");
      return;
    }
    if (tree_too_large(r, s->tree_levels, idx - s->stanza_start)) {
      stop_error(r, XCM_ELIMIT, XCM_COND_POLICY_VIOLATION, too_large_tree);
      return;
    }
  }

  note_prefix(r, prefix, prefix_len);
  for (i = 0; atts[2 * i] != NULL; i++) {
    const char *an, *al, *ap;
    size_t anl, all, apl;

    /* Only a namespaced attribute can carry a prefix. */
    if (strchr(atts[2 * i], SEP) == NULL)
      continue;
    split_name(atts[2 * i], &an, &anl, &al, &all, &ap, &apl);
    note_prefix(r, ap, apl);
  }

  if (level <= s->tree_levels &&
      build(r, ns, ns_len, local, local_len, atts, idx) == NULL)
    stop_error(r, XCM_ENOMEM, XCM_COND_RESOURCE_CONSTRAINT, "out of memory");
}

/* Give each built node its text as a pointer, now that the text buffer
 * no longer moves: a walk over the tree in document order. */
static void fix_up_text(xcm_xml_slot *s) {
  xcm_xml_node *n = s->first != NULL ? &s->first->n : NULL;

  while (n != NULL) {
    if (n->text_len > 0)
      n->text = s->text.data + ((build_node *)n)->text_off;
    if (n->children != NULL) {
      n = n->children;
      continue;
    }
    while (n != NULL && n->next == NULL)
      n = n->parent;
    if (n != NULL)
      n = n->next;
  }
}

static void finish_stanza(xcm_xml_reader *r, int64_t end) {
  xcm_xml_slot *s = r->slot;
  xcm_xml_stanza st;
  size_t len = (size_t)(end - s->stanza_start);
  int rc;

  if (len > r->limits.max_stanza) {
    stop_error(r, XCM_ELIMIT, XCM_COND_POLICY_VIOLATION,
               "stanza larger than the limit");
    return;
  }
  if (tree_too_large(r, s->tree_levels, (int64_t)len)) {
    stop_error(r, XCM_ELIMIT, XCM_COND_POLICY_VIOLATION, too_large_tree);
    return;
  }
  if (s->stanza_start < s->chunk_base) {
    /* The stanza began in an earlier piece: complete it in the carry. */
    if (end > s->chunk_base &&
        xcm__buf_append(&s->carry, s->chunk, (size_t)(end - s->chunk_base)) !=
            0) {
      stop_error(r, XCM_ENOMEM, XCM_COND_RESOURCE_CONSTRAINT, "out of memory");
      return;
    }
    st.bytes = s->carry.data + (s->stanza_start - s->carry_base);
  } else {
    st.bytes = s->chunk + (s->stanza_start - s->chunk_base);
  }
  st.len = len;
  st.ns = s->stanza_ns;
  st.name = s->stanza_name;
  st.qname_len = s->qname_len;
  fix_up_text(s);
  st.root = s->first != NULL ? &s->first->n : NULL;
  st.declares_default = s->declares_default;
  st.header_prefixes_used = s->used_mask & ~s->declared_mask;

  rc = r->cb.stanza != NULL ? r->cb.stanza(r->ud, &st) : 0;

  /* Nothing before the end of this stanza is needed any more. */
  s->boundary = end;
  if (end >= s->chunk_base) {
    xcm__buf_reset(&s->carry);
    if (s->carry.cap > KEEP_BUF_MAX)
      xcm__buf_free(&s->carry);
    s->carry_base = s->chunk_base;
  } else {
    xcm__buf_consume(&s->carry, (size_t)(end - s->carry_base));
    s->carry_base = end;
  }
  arena_reset(r->pool->alloc, s);
  xcm__buf_reset(&s->text);
  if (s->text.cap > KEEP_BUF_MAX)
    xcm__buf_free(&s->text);
  s->first = s->cur = NULL;
  s->tree_levels = 0;
  s->bare_level = 0;

  if (rc == XCM_XML_RESTART)
    stop(r, STOP_RESTART, 0, end);
  else if (rc < 0)
    stop(r, STOP_ERROR, rc, 0);
  else if (r->scan && end < s->chunk_base + (int64_t)s->chunk_len)
    stop(r, STOP_PAUSE, 0, end); /* the scanner takes the rest */
}

/* At a node's end: make its text contiguous and NUL-terminated at the
 * end of the text buffer. Text that is already there, as one run, is
 * only terminated; interrupted text is gathered once, so every byte of
 * text is copied at most once in all. */
static int end_text(xcm_xml_slot *s, build_node *b) {
  size_t off = s->text.len, at;
  text_run *t;

  if (b->more == NULL && b->text_off + b->run_len == off)
    return xcm__buf_append_char(&s->text, '\0');
  if (xcm__buf_reserve(&s->text, b->n.text_len + 1) != 0)
    return XCM_ENOMEM;
  memcpy(s->text.data + off, s->text.data + b->text_off, b->run_len);
  at = off + b->run_len;
  for (t = b->more; t != NULL; t = t->next) {
    memcpy(s->text.data + at, s->text.data + t->off, t->len);
    at += t->len;
  }
  s->text.data[at] = '\0';
  s->text.len = at + 1;
  b->text_off = off;
  return 0;
}

static void on_end(void *ud, const XML_Char *full) {
  xcm_xml_reader *r = ud;
  xcm_xml_slot *s = r->slot;
  int count = XML_GetCurrentByteCount(s->parser);
  int64_t idx = cur_index(r), end;
  unsigned level;

  (void)full;
  if (s->stop != STOP_NONE)
    return;
  if (s->priming) {
    s->depth--;
    return;
  }
  level = s->depth - 1;
  s->depth--;
  if (level == 0) {
    if (r->cb.end != NULL)
      r->cb.end(r->ud);
    stop(r, STOP_END, 0, idx + count);
    return;
  }
  if (level <= s->tree_levels && s->cur != NULL) {
    build_node *b = s->cur;

    /* An empty element's end event has no bytes of its own. */
    end = count > 0 ? idx + count : b->start + (int64_t)b->starttag_len;
    b->n.len = (size_t)(end - b->start);
    if (b->n.text_len > 0 && end_text(s, b) != 0) {
      stop_error(r, XCM_ENOMEM, XCM_COND_RESOURCE_CONSTRAINT, "out of memory");
      return;
    }
    s->cur = b->n.parent != NULL ? (build_node *)b->n.parent : NULL;
  }
  if (level == 1) {
    end = count > 0 ? idx + count
                    : s->stanza_start + (int64_t)s->stanza_starttag_len;
    finish_stanza(r, end);
  }
}

static void on_text(void *ud, const XML_Char *text, int len) {
  xcm_xml_reader *r = ud;
  xcm_xml_slot *s = r->slot;
  build_node *b;
  int i;

  if (s->stop != STOP_NONE || s->priming)
    return;
  if (s->depth <= 1) {
    for (i = 0; i < len; i++)
      if (!is_space(text[i])) {
        stop_error(r, XCM_EXML, XCM_COND_BAD_FORMAT,
                   "text outside of any stanza");
        return;
      }
    return;
  }
  b = s->cur;
  if (b == NULL || s->depth - 1 > s->tree_levels)
    return;
  if (b->n.text_len == 0) {
    b->text_off = s->text.len;
    b->run_len = (size_t)len;
  } else if (b->more == NULL && b->text_off + b->run_len == s->text.len) {
    b->run_len += (size_t)len; /* the same run goes on */
  } else if (b->more != NULL &&
             b->more_last->off + b->more_last->len == s->text.len) {
    b->more_last->len += (size_t)len;
  } else {
    /* Mixed content: a child's text came in between. Note where this
     * run lies; the node's end gathers them. */
    text_run *t = arena_alloc(r, sizeof(*t));

    if (t == NULL)
      goto nomem;
    t->off = s->text.len;
    t->len = (size_t)len;
    t->next = NULL;
    if (b->more_last != NULL)
      b->more_last->next = t;
    else
      b->more = t;
    b->more_last = t;
  }
  if (xcm__buf_append(&s->text, text, (size_t)len) != 0)
    goto nomem;
  b->n.text_len += (size_t)len;
  return;
nomem:
  stop_error(r, XCM_ENOMEM, XCM_COND_RESOURCE_CONSTRAINT, "out of memory");
}

static void on_xmldecl(void *ud, const XML_Char *version,
                       const XML_Char *encoding, int standalone) {
  xcm_xml_reader *r = ud;

  (void)version;
  if (r->slot->stop != STOP_NONE)
    return;
  (void)standalone;
  if (encoding != NULL && strcasecmp(encoding, "UTF-8") != 0)
    stop_error(r, XCM_EXML, XCM_COND_UNSUPPORTED_ENCODING,
               "only UTF-8 is allowed");
}

static void on_comment(void *ud, const XML_Char *data) {
  (void)data;
  stop_error(ud, XCM_EXML, XCM_COND_RESTRICTED_XML, "comments are not allowed");
}

static void on_pi(void *ud, const XML_Char *target, const XML_Char *data) {
  (void)target;
  (void)data;
  stop_error(ud, XCM_EXML, XCM_COND_RESTRICTED_XML,
             "processing instructions are not allowed");
}

static void on_doctype(void *ud, const XML_Char *name, const XML_Char *sysid,
                       const XML_Char *pubid, int has_internal_subset) {
  (void)name;
  (void)sysid;
  (void)pubid;
  (void)has_internal_subset;
  stop_error(ud, XCM_EXML, XCM_COND_RESTRICTED_XML,
             "document type declarations are not allowed");
}

static void on_entity_decl(void *ud, const XML_Char *name, int is_param,
                           const XML_Char *value, int value_len,
                           const XML_Char *base, const XML_Char *sysid,
                           const XML_Char *pubid, const XML_Char *notation) {
  (void)name;
  (void)is_param;
  (void)value;
  (void)value_len;
  (void)base;
  (void)sysid;
  (void)pubid;
  (void)notation;
  stop_error(ud, XCM_EXML, XCM_COND_RESTRICTED_XML,
             "entity declarations are not allowed");
}

/* ---- slots and the pool ------------------------------------------------ */

static void setup_parser(xcm_xml_reader *r, xcm_xml_slot *s) {
  XML_Parser p = s->parser;

  if (s->dirty)
    XML_ParserReset(p, "UTF-8");
  s->dirty = 1;
  /* A fixed salt spares expat a getrandom() call at every reset; the
   * pool drew it from the system's random source. */
  XML_SetHashSalt(p, r->pool->salt);
#if HAVE_XML_SETREPARSEDEFERRALENABLED
  /* Hand a stanza over as soon as its last byte is read. */
  XML_SetReparseDeferralEnabled(p, XML_FALSE);
#endif
  XML_SetUserData(p, r);
  XML_SetElementHandler(p, on_start, on_end);
  XML_SetCharacterDataHandler(p, on_text);
  XML_SetNamespaceDeclHandler(p, on_ns_start, NULL);
  XML_SetXmlDeclHandler(p, on_xmldecl);
  XML_SetCommentHandler(p, on_comment);
  XML_SetProcessingInstructionHandler(p, on_pi);
  XML_SetStartDoctypeDeclHandler(p, on_doctype);
  XML_SetEntityDeclHandler(p, on_entity_decl);
  XML_SetParamEntityParsing(p, XML_PARAM_ENTITY_PARSING_NEVER);

  s->fed = 0;
  s->chunk_base = 0;
  s->chunk = NULL;
  s->boundary = 0;
  s->stanza_start = 0;
  s->depth = 0;
  s->priming = 0;
  xcm__buf_reset(&s->carry);
  s->carry_base = 0;
  s->stop = STOP_NONE;
  s->tree_levels = 0;
  s->bare_level = 0;
  s->first = s->cur = NULL;
  s->npending = 0;
  s->pending_overflow = 0;
  s->pending_default = 0;
  s->pending_mask = 0;
  xcm__buf_reset(&s->text);
}

static void slot_destroy(xcm_xml_pool *pool, xcm_xml_slot *s) {
  XML_ParserFree(s->parser);
  xcm__buf_free(&s->carry);
  xcm__buf_free(&s->text);
  arena_free(pool->alloc, s);
  xcm__free(pool->alloc, s);
}

static xcm_xml_slot *slot_get(xcm_xml_pool *pool) {
  xcm_xml_slot *s = pool->idle;

  if (s != NULL) {
    pool->idle = s->next_idle;
    pool->nidle--;
  } else {
    s = xcm__calloc(pool->alloc, sizeof(*s));
    if (s == NULL)
      return NULL;
    s->parser = XML_ParserCreateNS("UTF-8", SEP);
    if (s->parser == NULL) {
      xcm__free(pool->alloc, s);
      return NULL;
    }
    XML_SetReturnNSTriplet(s->parser, XML_TRUE);
    xcm__buf_init(&s->carry, pool->alloc);
    xcm__buf_init(&s->text, pool->alloc);
  }
  pool->busy++;
  return s;
}

static void slot_put(xcm_xml_pool *pool, xcm_xml_slot *s) {
  pool->busy--;
  if (pool->nidle >= pool->keep) {
    slot_destroy(pool, s);
    return;
  }
  /* An idle slot keeps its parser and first arena chunk, but no input. */
  xcm__buf_free(&s->carry);
  xcm__buf_free(&s->text);
  arena_reset(pool->alloc, s);
  s->next_idle = pool->idle;
  pool->idle = s;
  pool->nidle++;
}

int xcm__xml_pool_new(xcm_xml_pool **out, const xcm_allocator *alloc,
                      unsigned keep) {
  xcm_xml_pool *pool;

  *out = NULL;
  pool = xcm__calloc(alloc, sizeof(*pool));
  if (pool == NULL)
    return XCM_ENOMEM;
  pool->alloc = alloc;
  pool->keep = keep;
  if (uv_random(NULL, NULL, &pool->salt, sizeof(pool->salt), 0, NULL) != 0 ||
      pool->salt == 0)
    pool->salt = (unsigned long)(uintptr_t)pool ^ 0x9e3779b97f4a7c15u;
  *out = pool;
  return 0;
}

void xcm__xml_pool_free(xcm_xml_pool *pool) {
  xcm_xml_slot *s, *next;

  if (pool == NULL)
    return;
  for (s = pool->idle; s != NULL; s = next) {
    next = s->next_idle;
    slot_destroy(pool, s);
  }
  for (unsigned i = 0; i < SCAN_NEST; i++)
    xcm__xml_scan_free(pool->scan[i]);
  xcm__free(pool->alloc, pool);
}

size_t xcm__xml_pool_busy(const xcm_xml_pool *pool) {
  return pool->busy;
}

size_t xcm__xml_pool_idle(const xcm_xml_pool *pool) {
  return pool->nidle;
}

uint64_t xcm__xml_pool_scanned(const xcm_xml_pool *pool) {
  return pool->scanned;
}

/* ---- the reader ------------------------------------------------------- */

int xcm__xml_reader_new(xcm_xml_reader **out, xcm_xml_pool *pool,
                        const xcm_xml_callbacks *cb, void *ud,
                        const xcm_xml_limits *limits) {
  xcm_xml_reader *r;

  *out = NULL;
  r = xcm__calloc(pool->alloc, sizeof(*r));
  if (r == NULL)
    return XCM_ENOMEM;
  r->pool = pool;
  r->cb = *cb;
  r->ud = ud;
  apply_limits(r, limits);
  r->state = R_INIT;
  *out = r;
  return 0;
}

static void release_slot(xcm_xml_reader *r) {
  if (r->slot == NULL)
    return;
  slot_put(r->pool, r->slot);
  r->slot = NULL;
}

static void drop_kept(xcm_xml_reader *r) {
  xcm__free(r->pool->alloc, r->kept);
  r->kept = NULL;
}

void xcm__xml_reader_free(xcm_xml_reader *r) {
  if (r == NULL)
    return;
  release_slot(r);
  drop_kept(r);
  clear_decls(r);
  xcm__free(r->pool->alloc, r);
}

/* Escape a URI for the priming header: it came from expat unescaped. */
static int append_attr_value(xcm_buf *b, const char *v) {
  int err = 0;

  for (; *v != '\0' && err == 0; v++) {
    switch (*v) {
    case '"':
      err = xcm__buf_append_str(b, "&quot;");
      break;
    case '&':
      err = xcm__buf_append_str(b, "&amp;");
      break;
    case '<':
      err = xcm__buf_append_str(b, "&lt;");
      break;
    default:
      err = xcm__buf_append_char(b, *v);
    }
  }
  return err;
}

/* Bring a fresh slot to where the stream was: inside the root, with the
 * header's namespaces bound, by parsing a header made from them. */
static int prime(xcm_xml_reader *r) {
  xcm_xml_slot *s = r->slot;
  xcm_buf hdr;
  size_t i;
  int err;

  xcm__buf_init(&hdr, r->pool->alloc);
  err = xcm__buf_append_char(&hdr, '<');
  if (err == 0)
    err = xcm__buf_append_str(&hdr, r->root_qname);
  for (i = 0; i < r->ndecls && err == 0; i++) {
    err =
        xcm__buf_append_str(&hdr, r->decls[i].prefix[0] ? " xmlns:" : " xmlns");
    if (err == 0)
      err = xcm__buf_append_str(&hdr, r->decls[i].prefix);
    if (err == 0)
      err = xcm__buf_append_str(&hdr, "=\"");
    if (err == 0)
      err = append_attr_value(&hdr, r->decls[i].uri);
    if (err == 0)
      err = xcm__buf_append_char(&hdr, '"');
  }
  if (err == 0)
    err = xcm__buf_append_char(&hdr, '>');
  if (err == 0) {
    s->priming = 1;
    if (XML_Parse(s->parser, hdr.data, (int)hdr.len, XML_FALSE) !=
        XML_STATUS_OK)
      err = XCM_ENOMEM;
    s->priming = 0;
    s->fed = (int64_t)hdr.len;
    s->boundary = s->fed;
    s->carry_base = s->fed;
  }
  xcm__buf_free(&hdr);
  return err;
}

static int fail_with(xcm_xml_reader *r, int err) {
  if (r->cond == XCM_COND_NONE)
    r->cond = err == XCM_ENOMEM ? XCM_COND_RESOURCE_CONSTRAINT
                                : XCM_COND_UNDEFINED_CONDITION;
  if (r->err_text == NULL)
    r->err_text = xcm_strerror(err);
  r->err = err;
  r->state = R_FAILED;
  release_slot(r);
  drop_kept(r);
  return err;
}

static int map_expat_error(xcm_xml_reader *r) {
  enum XML_Error code = XML_GetErrorCode(r->slot->parser);

  r->err_text = XML_ErrorString(code);
  switch (code) {
  case XML_ERROR_NO_MEMORY:
    r->cond = XCM_COND_RESOURCE_CONSTRAINT;
    return XCM_ENOMEM;
  case XML_ERROR_UNKNOWN_ENCODING:
  case XML_ERROR_INCORRECT_ENCODING:
    r->cond = XCM_COND_UNSUPPORTED_ENCODING;
    return XCM_EXML;
  case XML_ERROR_UNDEFINED_ENTITY:
  case XML_ERROR_EXTERNAL_ENTITY_HANDLING:
  case XML_ERROR_NOT_STANDALONE:
    r->cond = XCM_COND_RESTRICTED_XML;
    return XCM_EXML;
  case XML_ERROR_UNBOUND_PREFIX:
    r->err_text = "undeclared namespace prefix";
    r->cond = XCM_COND_NOT_WELL_FORMED;
    return XCM_EXML;
  default:
    r->cond = XCM_COND_NOT_WELL_FORMED;
    return XCM_EXML;
  }
}

/* Keep [keep_from, fed) for the next piece, and check the limit on what
 * an unfinished element (or the header) may hold. */
static int carry_over(xcm_xml_reader *r) {
  xcm_xml_slot *s = r->slot;
  int64_t keep_from, from, idx;

  if (s->depth <= 1) {
    /* Whitespace after the last stanza needs no keeping. */
    for (idx = s->boundary; idx < s->fed; idx++)
      if (!is_space(byte_at(s, idx)))
        break;
    if (idx == s->fed)
      s->boundary = s->fed;
    keep_from = s->boundary;
  } else {
    keep_from = s->stanza_start;
  }
  if (s->fed - keep_from > (int64_t)r->limits.max_stanza) {
    xcm__xml_reader_fail(r, XCM_COND_POLICY_VIOLATION,
                         "stanza larger than the limit");
    return XCM_ELIMIT;
  }
  if (s->depth > 1 && tree_too_large(r, s->tree_levels, s->fed - keep_from)) {
    xcm__xml_reader_fail(r, XCM_COND_POLICY_VIOLATION, too_large_tree);
    return XCM_ELIMIT;
  }
  if (s->carry.len == 0 || keep_from >= s->chunk_base) {
    xcm__buf_reset(&s->carry);
    s->carry_base = keep_from;
    from = keep_from;
  } else {
    if (keep_from > s->carry_base) {
      xcm__buf_consume(&s->carry, (size_t)(keep_from - s->carry_base));
      s->carry_base = keep_from;
    }
    from = s->chunk_base;
  }
  if (xcm__buf_append(&s->carry, s->chunk + (from - s->chunk_base),
                      (size_t)(s->fed - from)) != 0)
    return XCM_ENOMEM;
  if (s->carry.len == 0 && s->carry.cap > KEEP_BUF_MAX)
    xcm__buf_free(&s->carry);
  return 0;
}

static void reset_document(xcm_xml_reader *r) {
  release_slot(r);
  drop_kept(r);
  clear_decls(r);
  r->state = R_INIT;
}

static int parse_piece(xcm_xml_reader *r, const char *data, size_t n,
                       size_t *used, int *paused) {
  xcm_xml_slot *s = r->slot;
  enum XML_Status status;
  int err;

  *used = n;
  *paused = 0;
  s->chunk = data;
  s->chunk_len = n;
  s->chunk_base = s->fed;
  s->stop = STOP_NONE;
  status = XML_Parse(s->parser, data, (int)n, XML_FALSE);
  s->fed += (int64_t)n;
  if (status != XML_STATUS_ERROR) {
    err = carry_over(r);
    s->chunk = NULL;
    return err;
  }
  s->chunk = NULL;
  if (s->stop == STOP_NONE || XML_GetErrorCode(s->parser) != XML_ERROR_ABORTED)
    return map_expat_error(r);
  switch (s->stop) {
  case STOP_RESTART:
    *used = (size_t)(s->stop_at - s->chunk_base);
    reset_document(r);
    return 0;
  case STOP_END:
    *used = (size_t)(s->stop_at - s->chunk_base);
    release_slot(r);
    r->state = R_ENDED;
    return 0;
  case STOP_PAUSE:
    /* The parser was aborted mid-piece: the next one primes afresh. */
    *used = (size_t)(s->stop_at - s->chunk_base);
    *paused = 1;
    release_slot(r);
    return 0;
  default:
    return s->stop_err;
  }
}

/* Lend the reader a parser from the pool, brought to where its stream
 * is: inside the root, with the header's namespaces bound. */
static int take_slot(xcm_xml_reader *r) {
  if (r->slot != NULL)
    return 0;
  r->slot = slot_get(r->pool);
  if (r->slot == NULL)
    return XCM_ENOMEM;
  setup_parser(r, r->slot);
  return r->state == R_STREAM ? prime(r) : 0;
}

/* Whether expat sits between stanzas with nothing of its own buffered,
 * so that bytes it never sees cannot confuse it. */
static int slot_clean(const xcm_xml_reader *r) {
  const xcm_xml_slot *s = r->slot;

  return s == NULL ||
         (s->depth == 1 && s->boundary == s->fed && s->carry.len == 0);
}

static const char *default_ns(const xcm_xml_reader *r) {
  size_t i;

  for (i = 0; i < r->ndecls; i++)
    if (r->decls[i].prefix[0] == '\0')
      return r->decls[i].uri;
  return "";
}

/* Whether the stream binds the xml prefix itself: expat then counts
 * xml:lang as a use of a header prefix, which the scanner does not. */
static int binds_xml(const xcm_xml_reader *r) {
  size_t i;

  for (i = 0; i < r->ndecls; i++)
    if (strcmp(r->decls[i].prefix, "xml") == 0)
      return 1;
  return 0;
}

/* How many bytes of a cut-off element the reader may keep: KEEP_MAX, or
 * less if a limit is lower. An element past a limit is expat's to
 * refuse, at the same byte it always did. */
static size_t keep_cap(const xcm_xml_reader *r) {
  size_t cap = KEEP_MAX;

  if (r->limits.max_stanza < cap)
    cap = r->limits.max_stanza;
  if (r->limits.max_tree != 0 && r->limits.max_tree < cap)
    cap = r->limits.max_tree;
  return cap;
}

/* Whether the n bytes at p are the root's end tag cut off by the end of a
 * read: "</", then a prefix of the root's name, or all of it and white
 * space. The scanner never reads an end tag at depth 0 and expat could
 * not refuse these bytes yet, so they are kept like a cut-off element
 * and given to expat once the tag is whole. */
static int root_end_cut_off(const xcm_xml_reader *r, const char *p, size_t n) {
  size_t ql, i;

  if (r->root_qname == NULL || n < 2 || p[0] != '<' || p[1] != '/')
    return 0;
  ql = strlen(r->root_qname);
  if (n - 2 <= ql)
    return memcmp(p + 2, r->root_qname, n - 2) == 0;
  if (memcmp(p + 2, r->root_qname, ql) != 0)
    return 0;
  for (i = 2 + ql; i < n; i++)
    if (!is_space(p[i]))
      return 0;
  return 1;
}

/* Keep the n bytes at p, an element the scanner found cut off by the end
 * of the read, and give the parser back: until the element ends the
 * reader holds those bytes and nothing more. Returns 0, or -1 (out of
 * memory: expat reads the element instead). */
static int keep(xcm_xml_reader *r, const char *p, size_t n) {
  kept_bytes *k = xcm__alloc(r->pool->alloc, sizeof(*k) + n);

  if (k == NULL)
    return -1;
  k->len = n;
  memcpy(k->data, p, n);
  r->kept = k;
  release_slot(r);
  return 0;
}

/* The scanner for a scan starting now, or NULL when there is none: then
 * expat reads. A scanned element's tree lives in its scanner's scratch
 * while its callback runs, and the callback may read other bytes that
 * stand alone (xml/element.h; the CM does for every answer a client gets
 * while it logs in): those get the next scanner, made the first time,
 * so that they are scanned too. */
static xcm_xml_scan *scan_enter(xcm_xml_pool *pool) {
  xcm_xml_scan **sc;

  if (pool->scan_depth == SCAN_NEST)
    return NULL;
  sc = &pool->scan[pool->scan_depth];
  if (*sc == NULL && xcm__xml_scan_new(sc, pool->alloc) != 0)
    return NULL;
  pool->scan_depth++;
  return *sc;
}

static void scan_leave(xcm_xml_pool *pool) {
  pool->scan_depth--;
}

/* Hand over the element of n bytes at p that the scanner just took.
 * Returns 0, 1 when the scanner cannot build the tree asked for (the
 * element is expat's), or a negative error. */
static int hand_over(xcm_xml_reader *r, xcm_xml_scan *sc, const char *p,
                     size_t n) {
  xcm_xml_pool *pool = r->pool;
  const char *dns = default_ns(r);
  xcm_xml_stanza st;
  int levels = 0, rc;

  if (r->cb.stanza_start != NULL) {
    levels = r->cb.stanza_start(r->ud, xcm__xml_scan_ns(sc, dns),
                                xcm__xml_scan_name(sc));
    if (levels < 0)
      return levels;
  }
  if (tree_too_large(r, (unsigned)levels & ~(unsigned)XCM_XML_BARE_LAST,
                     (int64_t)n)) {
    xcm__xml_reader_fail(r, XCM_COND_POLICY_VIOLATION, too_large_tree);
    return XCM_ELIMIT;
  }
  if (xcm__xml_scan_build(sc, p, n, levels, dns, &st) != 0)
    return 1;
  pool->scanned++;
  rc = r->cb.stanza != NULL ? r->cb.stanza(r->ud, &st) : 0;
  if (rc == XCM_XML_RESTART) {
    reset_document(r);
    return 0;
  }
  return rc < 0 ? rc : 0;
}

/* Hand over the complete elements at the front of data that the scanner
 * accepts, and the white space between them. Stops at the first it
 * declines, which is then expat's, or keeps the last if it is only cut
 * off by the end of data; *used says how far it got. */
static int scan_run(xcm_xml_reader *r, const char *data, size_t len,
                    size_t *used) {
  xcm_xml_pool *pool = r->pool;
  xcm_xml_scan *sc;
  size_t i = 0;
  int err = 0;

  *used = 0;
  if (binds_xml(r) || (sc = scan_enter(pool)) == NULL)
    return 0;
  while (r->state == R_STREAM) {
    size_t j = i, n;
    int rc;

    while (j < len && is_space(data[j]))
      j++;
    i = j;
    if (j == len)
      break;
    n = xcm__xml_scan_element(sc, data + j, len - j, r->limits.max_stanza,
                              r->limits.max_depth);
    if (n == 0) {
      if ((xcm__xml_scan_incomplete(sc) ||
           root_end_cut_off(r, data + j, len - j)) &&
          len - j <= keep_cap(r) && keep(r, data + j, len - j) == 0)
        i = len;
      break;
    }
    rc = hand_over(r, sc, data + j, n);
    if (rc == 1)
      break;
    i = j + n;
    if (rc < 0) {
      err = rc;
      break;
    }
  }
  scan_leave(pool);
  *used = i;
  return err;
}

/* The stream header at p if the scanner accepts it: the reader enters
 * the stream without a parser. *n is its length, 0 if declined. */
static int header_at(xcm_xml_reader *r, xcm_xml_scan *sc, const char *p,
                     size_t len, size_t *n) {
  xcm_xml_pool *pool = r->pool;
  xcm_xml_nsdecl decls[XCM_XML_MAX_HEADER_PREFIXES];
  xcm_xml_header h;
  const char *qname;
  int err;

  *n = xcm__xml_scan_header(sc, p, len, r->limits.max_stanza, &h, decls,
                            XCM_XML_MAX_HEADER_PREFIXES, &qname);
  if (*n == 0)
    return 0;
  err = save_decls(r, decls, h.ndecls, qname);
  if (err != 0)
    return err;
  pool->scanned++;
  err = r->cb.header != NULL ? r->cb.header(r->ud, &h) : 0;
  if (err < 0)
    return err;
  r->state = R_STREAM;
  return 0;
}

/* A stream header at the front of data: handed over if the scanner takes
 * it, kept if it is only cut off, else left to expat. */
static int scan_header(xcm_xml_reader *r, const char *data, size_t len,
                       size_t *used) {
  xcm_xml_scan *sc;
  size_t n;
  int err;

  *used = 0;
  if ((sc = scan_enter(r->pool)) == NULL)
    return 0;
  err = header_at(r, sc, data, len, &n);
  if (err == 0 && n == 0 && xcm__xml_scan_incomplete(sc) &&
      len <= keep_cap(r) && keep(r, data, len) == 0)
    n = len;
  scan_leave(r->pool);
  *used = n;
  return err;
}

/* Give the kept bytes to expat, with a parser primed for the stream, and
 * forget them: expat reads the element on as if it had had it from its
 * first byte, and judges it as it always did. */
static int unkeep(xcm_xml_reader *r) {
  size_t used;
  int err, paused;

  err = take_slot(r);
  if (err == 0)
    err = parse_piece(r, r->kept->data, r->kept->len, &used, &paused);
  drop_kept(r);
  return err;
}

/* More bytes for the kept element: scan it again from its start with
 * them appended, up to the cap. If it is complete now, hand it over
 * (*used: the bytes of data it took); if it is still cut off and all of
 * data fit, keep it (*used: all); otherwise give the kept bytes to expat
 * (*used: none), which reads data on from there. Rescanning costs the
 * kept bytes again at each read, hence the cap. */
static int resume_kept(xcm_xml_reader *r, const char *data, size_t len,
                       size_t *used) {
  xcm_xml_pool *pool = r->pool;
  kept_bytes *k = r->kept;
  size_t old = k->len, cap = keep_cap(r), add, n;
  xcm_xml_scan *sc;
  int rc;

  *used = 0;
  if (!r->scan || binds_xml(r) || old >= cap)
    return unkeep(r);
  add = len < cap - old ? len : cap - old;
  k = xcm__realloc(pool->alloc, k, sizeof(*k) + old + add);
  if (k == NULL)
    return unkeep(r);
  r->kept = k;
  memcpy(k->data + old, data, add);
  if ((sc = scan_enter(pool)) == NULL)
    return unkeep(r);
  if (r->state == R_INIT) {
    /* A cut-off stream header. */
    rc = header_at(r, sc, k->data, old + add, &n);
    if (rc == 0 && n == 0) {
      rc = add < len || !xcm__xml_scan_incomplete(sc);
      scan_leave(pool);
      if (rc)
        return unkeep(r);
      k->len = old + add;
      *used = len;
      return 0;
    }
    scan_leave(pool);
    *used = n > old ? n - old : 0;
    drop_kept(r);
    return rc;
  }
  n = xcm__xml_scan_element(sc, k->data, old + add, r->limits.max_stanza,
                            r->limits.max_depth);
  if (n == 0 && add == len &&
      (xcm__xml_scan_incomplete(sc) ||
       root_end_cut_off(r, k->data, old + add))) {
    scan_leave(pool);
    k->len = old + add;
    *used = len;
    return 0;
  }
  /* A complete element ends in the new bytes: the kept ones were cut
   * off. */
  rc = n > old ? hand_over(r, sc, k->data, n) : 1;
  scan_leave(pool);
  if (rc == 1)
    return unkeep(r);
  *used = n - old;
  drop_kept(r);
  return rc;
}

int xcm__xml_reader_feed(xcm_xml_reader *r, const char *data, size_t len,
                         size_t *consumed) {
  size_t used, piece;
  int err, paused;

  *consumed = 0;
  if (r->state == R_FAILED)
    return r->err;
  if (r->state == R_ENDED)
    return XCM_ECLOSED;
  while (len > 0) {
    enum reader_state before = r->state;

    if (r->kept != NULL) {
      err = resume_kept(r, data, len, &used);
      *consumed += used;
      r->offset += used;
      data += used;
      len -= used;
      if (err != 0)
        return fail_with(r, err);
      /* After a restart, the rest is not this document's. */
      if (len == 0 || (before == R_STREAM && r->state != R_STREAM))
        return 0;
    }
    if (r->scan && r->state == R_INIT && r->slot == NULL) {
      err = scan_header(r, data, len, &used);
      *consumed += used;
      r->offset += used;
      data += used;
      len -= used;
      if (err != 0)
        return fail_with(r, err);
      if (len == 0)
        return 0;
    }
    if (r->scan && r->state == R_STREAM && slot_clean(r)) {
      err = scan_run(r, data, len, &used);
      *consumed += used;
      r->offset += used;
      data += used;
      len -= used;
      if (err != 0)
        return fail_with(r, err);
      if (len == 0 || r->state != R_STREAM)
        return 0;
    }
    if (r->slot == NULL && (err = take_slot(r)) != 0)
      return fail_with(r, err);
    before = r->state;
    piece = len < PIECE_MAX ? len : PIECE_MAX;
    err = parse_piece(r, data, piece, &used, &paused);
    if (err != 0)
      return fail_with(r, err);
    *consumed += used;
    r->offset += used;
    if (!paused && (used < piece || r->state == R_ENDED ||
                    (before == R_STREAM && r->state == R_INIT)))
      return 0;
    data += used;
    len -= used;
  }
  return 0;
}

void xcm__xml_pool_set_scan(xcm_xml_pool *pool, int allowed) {
  pool->no_scan = !allowed;
}

int xcm__xml_reader_set_scan(xcm_xml_reader *r, int on) {
  on = on && !r->pool->no_scan;
  if (on && r->pool->scan[0] == NULL) {
    int err = xcm__xml_scan_new(&r->pool->scan[0], r->pool->alloc);

    if (err != 0)
      return err;
  }
  r->scan = on != 0;
  return 0;
}

void xcm__xml_reader_restart(xcm_xml_reader *r) {
  reset_document(r);
  r->cond = XCM_COND_NONE;
  r->err_text = NULL;
  r->err = 0;
}

void xcm__xml_reader_set_usual(xcm_xml_reader *r, const xcm_xml_context *ctx) {
  r->usual = ctx;
}

int xcm__xml_reader_assume_header(xcm_xml_reader *r,
                                  const xcm_xml_context *ctx) {
  if (r->state != R_INIT)
    return XCM_EINVAL;
  if (ctx->ndecls > XCM_XML_MAX_HEADER_PREFIXES)
    return XCM_ELIMIT;
  release_slot(r);
  drop_kept(r);
  clear_decls(r);
  /* Pointed at, not copied: bytes read in an assumed context are read
   * while the owner holds it, and a copy would cost an allocation for
   * every element read that way. */
  r->decls = ctx->decls;
  r->ndecls = ctx->ndecls;
  r->root_qname = ctx->root;
  r->state = R_STREAM;
  return 0;
}

int xcm__xml_reader_shrink(xcm_xml_reader *r) {
  xcm_xml_slot *s = r->slot;

  if (r->kept != NULL)
    return 0; /* mid-element, though holding no parser */
  if (s == NULL)
    return 1;
  if (r->state == R_STREAM && !slot_clean(r))
    return 0;
  if (r->state == R_INIT && s->fed != 0)
    return 0;
  release_slot(r);
  return 1;
}

void xcm__xml_reader_set_limits(xcm_xml_reader *r,
                                const xcm_xml_limits *limits) {
  apply_limits(r, limits);
}

void xcm__xml_reader_fail(xcm_xml_reader *r, xcm_cond cond, const char *text) {
  if (r->cond != XCM_COND_NONE)
    return;
  r->cond = cond;
  r->err_text = text;
}

xcm_cond xcm__xml_reader_condition(const xcm_xml_reader *r) {
  return r->cond;
}

const char *xcm__xml_reader_error_text(const xcm_xml_reader *r) {
  return r->err_text != NULL ? r->err_text : "";
}

const xcm_xml_nsdecl *xcm__xml_reader_decls(const xcm_xml_reader *r,
                                            size_t *ndecls) {
  *ndecls = r->ndecls;
  return r->decls;
}

int xcm__xml_reader_in_stream(const xcm_xml_reader *r) {
  return r->state == R_STREAM;
}

uint64_t xcm__xml_reader_offset(const xcm_xml_reader *r) {
  return r->offset;
}

const xcm_xml_node *xcm__xml_node_child(const xcm_xml_node *n, const char *ns,
                                        const char *name) {
  const xcm_xml_node *c;

  for (c = n->children; c != NULL; c = c->next)
    if (strcmp(c->name, name) == 0 && (ns == NULL || strcmp(c->ns, ns) == 0))
      return c;
  return NULL;
}

/* ns "" for an attribute without a namespace (a hand-built tree may
 * leave its ns NULL). */
static const char *find_attr(const xcm_xml_attr *a, size_t n, const char *ns,
                             const char *name) {
  size_t i;

  for (i = 0; i < n; i++)
    if (strcmp(a[i].name, name) == 0 &&
        strcmp(a[i].ns != NULL ? a[i].ns : "", ns) == 0)
      return a[i].value;
  return NULL;
}

const char *xcm__xml_node_attr(const xcm_xml_node *n, const char *name) {
  return find_attr(n->attrs, n->nattrs, "", name);
}

const char *xcm__xml_header_attr(const xcm_xml_header *h, const char *ns,
                                 const char *name) {
  return find_attr(h->attrs, h->nattrs, ns, name);
}

const char *xcm__xml_header_default_ns(const xcm_xml_header *h) {
  size_t i;

  for (i = 0; i < h->ndecls; i++)
    if (h->decls[i].prefix[0] == '\0')
      return h->decls[i].uri;
  return NULL;
}
