/* The XML stream reader: a thin layer over expat that turns the bytes of
 * one XML stream (a root element whose children arrive one by one and are
 * handed over as each completes) into events.
 *
 *   header  the stream's root start tag (depth 0), with its attributes and
 *           namespace declarations;
 *   stanza  one complete depth-1 element: its exact bytes as they came in
 *           (for forwarding without re-serialising) and, when the owner asks
 *           for it at the element's start tag, a small read-only tree;
 *   end     the root's end tag.
 *
 * Errors are returned from xcm__xml_reader_feed() as negative codes, with
 * the stream-error condition they map to (RFC 6120) readable afterwards.
 *
 * Memory follows activity. The expat parser (9 to 11 KB) and the buffers
 * live in a "slot" borrowed from a per-loop xcm_xml_pool while bytes are
 * being parsed. Between stanzas, xcm__xml_reader_shrink() hands the slot
 * back; the reader then keeps only the stream's namespace context, and the
 * next feed primes a slot with it again. An idle reader costs
 * sizeof(xcm_xml_reader) and, for an unusual stream header, one small
 * string. With the scanner on (xcm__xml_reader_set_scan), a reader in
 * the middle of a usual element cut off by the end of a read holds no
 * slot either, only that element's bytes so far (up to 2 KiB; a longer
 * one borrows a slot), and xcm__xml_reader_shrink() returns 0 then.
 *
 * The reader knows no namespace and no protocol: every namespace it
 * treats specially comes from its owner, as an xcm_xml_context (the usual
 * header to share rather than copy, the context assumed for bytes that
 * stand alone), and what it reports about namespaces (see xcm_xml_stanza)
 * is the same for every document.
 *
 * Nothing here is thread-safe; a pool and its readers belong to one loop.
 */
#ifndef XCM_XML_READER_H
#define XCM_XML_READER_H

#include <stddef.h>
#include <stdint.h>

#include "xcm/alloc.h"
#include "xcm/condition.h"

/* Header prefixes beyond this count are refused (policy-violation): a
 * stanza reports which of them it uses in a 32-bit mask
 * (xcm_xml_stanza.header_prefixes_used). */
#define XCM_XML_MAX_HEADER_PREFIXES 16

typedef struct xcm_xml_pool xcm_xml_pool;
typedef struct xcm_xml_reader xcm_xml_reader;
typedef struct xcm_xml_slot xcm_xml_slot;

/* Strings below are NUL-terminated and valid only during the callback
 * that receives them. ns is "" for no namespace. */
typedef struct xcm_xml_attr {
  const char *ns;
  const char *name; /* local name */
  const char *value;
} xcm_xml_attr;

typedef struct xcm_xml_nsdecl {
  const char *prefix; /* "" for the default namespace */
  const char *uri;    /* "" when the declaration undeclares it */
} xcm_xml_nsdecl;

/* A document's namespace context as its root start tag sets it: the
 * root's name as written (an end tag must repeat it to end the document)
 * and the declarations on the tag. The strings and the array stay the
 * owner's. */
typedef struct xcm_xml_context {
  const char *root; /* never NULL: "p:doc", or "doc" without a prefix */
  const xcm_xml_nsdecl *decls;
  size_t ndecls;
} xcm_xml_context;

typedef struct xcm_xml_node xcm_xml_node;
struct xcm_xml_node {
  const char *ns;
  const char *name;
  const xcm_xml_attr *attrs;
  size_t nattrs;
  /* Character data directly inside this element, unescaped and
   * concatenated (children's text is theirs). */
  const char *text;
  size_t text_len;
  xcm_xml_node *parent;
  xcm_xml_node *children; /* first child */
  xcm_xml_node *next;     /* next sibling */
  size_t nchildren;
  /* This element's bytes within the stanza's bytes. */
  size_t off;
  size_t len;
};

typedef struct xcm_xml_header {
  const char *ns;
  const char *name;
  const xcm_xml_attr *attrs;
  size_t nattrs;
  const xcm_xml_nsdecl *decls;
  size_t ndecls;
} xcm_xml_header;

typedef struct xcm_xml_stanza {
  const char *bytes; /* exact bytes of the element, start to end tag */
  size_t len;
  const char *ns; /* namespace and local name of the element */
  const char *name;
  size_t qname_len; /* length of the name as written (with prefix) */
  /* The tree, when the start callback asked for one, else NULL. */
  const xcm_xml_node *root;
  /* What the element takes from the header's namespace context, for an
   * owner that copies its bytes out of the document and must give them
   * the namespaces they had there: whether the element's own start tag
   * declares the default namespace (if not, it is in the header's), and a
   * bit per header prefix (index into xcm__xml_reader_decls()) that the
   * element or anything inside it uses without the start tag declaring it
   * again. Both are exact, however many declarations the tag carries. */
  int declares_default;
  uint32_t header_prefixes_used;
} xcm_xml_stanza;

/* What a stanza callback may return besides 0 and a negative error. */
enum {
  /* This element ends the document: feed returns right after it and the
   * reader is back in its initial state, expecting a new header. The bytes
   * after the element are not consumed (they may be another layer's, such
   * as the start of a TLS handshake). */
  XCM_XML_RESTART = 1
};

/* Or'ed into stanza_start's level count: the deepest level built gets its
 * name, namespace, bytes and text but no attributes, for an owner that
 * needs where the elements at that level lie, not what they say: their
 * attributes cost copies nobody reads. */
enum { XCM_XML_BARE_LAST = 0x100 };

typedef struct xcm_xml_callbacks {
  /* The stream header. Return 0 or a negative error (and set the
   * condition with xcm__xml_reader_fail()). */
  int (*header)(void *ud, const xcm_xml_header *h);
  /* The start tag of a depth-1 element, before any of its content is
   * buffered. Return how many levels of tree to build for it (0: none,
   * 1: the element alone, 2: with its children, ...), possibly with
   * XCM_XML_BARE_LAST, or a negative error
   * to refuse it right away. The tree's root carries the attributes; the
   * hot path that wants none copies none. May be NULL: no trees. */
  int (*stanza_start)(void *ud, const char *ns, const char *name);
  /* One complete depth-1 element. Return 0, XCM_XML_RESTART or a negative
   * error. */
  int (*stanza)(void *ud, const xcm_xml_stanza *s);
  /* The root's end tag. Feed returns right after it. */
  void (*end)(void *ud);
} xcm_xml_callbacks;

typedef struct xcm_xml_limits {
  size_t max_stanza;  /* bytes of one depth-1 element, and of the header */
  unsigned max_depth; /* nesting below the root; a stanza is depth 1 */
  /* A zero field above means the default: 256 KiB, depth 32. */
  /* Bytes of a depth-1 element for which stanza_start asked for a tree;
   * 0 for no cap other than max_stanza. A tree costs memory per element
   * (about 150 bytes for each node, even <a/>), so an owner that builds
   * trees only to look into a few small elements caps them well below
   * max_stanza. A larger element is a policy-violation stream error
   * ("element too large for the CM to read"), from expat and the scanner
   * alike. */
  size_t max_tree;
} xcm_xml_limits;

/* The pool: parsers and buffers shared by every reader on one loop.
 * keep: how many idle slots to keep for reuse. */
int xcm__xml_pool_new(xcm_xml_pool **out, const xcm_allocator *alloc,
                      unsigned keep);
/* All readers must be freed first. */
void xcm__xml_pool_free(xcm_xml_pool *pool);
/* Slots currently lent out, and kept idle: for tests and statistics. */
size_t xcm__xml_pool_busy(const xcm_xml_pool *pool);
size_t xcm__xml_pool_idle(const xcm_xml_pool *pool);
/* Stanzas and stream headers the scanner (xcm__xml_reader_set_scan)
 * handed over so far. */
uint64_t xcm__xml_pool_scanned(const xcm_xml_pool *pool);

/* cb and limits are copied; ud is passed to every callback. */
int xcm__xml_reader_new(xcm_xml_reader **out, xcm_xml_pool *pool,
                        const xcm_xml_callbacks *cb, void *ud,
                        const xcm_xml_limits *limits);
void xcm__xml_reader_free(xcm_xml_reader *r);

/* Parse len bytes. On return *consumed says how many were used: all of
 * them, unless a stanza callback returned XCM_XML_RESTART or the end tag
 * came (the rest belongs to what follows). Returns 0 or a negative error;
 * after an error the reader is failed and refuses further input.
 * Must not be called from inside one of its own callbacks. */
int xcm__xml_reader_feed(xcm_xml_reader *r, const char *data, size_t len,
                         size_t *consumed);

/* Let the validating scanner (xml/scan.h) read the stanzas it can before
 * expat is asked: the same events for about a fifth of the instructions on a
 * typical stanza. stanza_start may then be called twice for one element
 * (once by each), so it must answer the same both times. Costs nothing
 * per reader; the pool makes its scratch (about 15 KB) once, and a second
 * for bytes read inside a scanned element's callback. */
int xcm__xml_reader_set_scan(xcm_xml_reader *r, int on);
/* Whether the pool's readers may scan at all (default yes): readers
 * made afterwards that ask for the scanner get expat alone. */
void xcm__xml_pool_set_scan(xcm_xml_pool *pool, int allowed);

/* The header most of this reader's documents open with. A header with
 * the same root name and the same declarations (in any order) is then
 * kept as a pointer to ctx instead of a copy, so that an idle reader of a
 * usual document holds no string of its own; ctx and what it points to
 * must outlive the reader. NULL (the default): every header is copied.
 * Changes nothing but memory. */
void xcm__xml_reader_set_usual(xcm_xml_reader *r, const xcm_xml_context *ctx);

/* Back to the initial state: the next bytes start a new document.
 * Not from inside a callback (return XCM_XML_RESTART there instead). */
void xcm__xml_reader_restart(xcm_xml_reader *r);

/* Put the reader inside a document whose root start tag set ctx, without
 * a header event: for bytes that stand alone but must be read in the
 * namespaces of the document they come from (ctx->decls may be NULL and
 * ctx->ndecls 0). ctx is not copied: what it points to must stay valid
 * until the reader restarts or is freed. Only in the initial state. */
int xcm__xml_reader_assume_header(xcm_xml_reader *r,
                                  const xcm_xml_context *ctx);

/* Give the slot back to the pool if the reader sits between stanzas with
 * nothing buffered. Returns 1 if it did, 0 if it could not. */
int xcm__xml_reader_shrink(xcm_xml_reader *r);

/* Limits may change at any time, for instance after authentication. */
void xcm__xml_reader_set_limits(xcm_xml_reader *r,
                                const xcm_xml_limits *limits);

/* Called from a callback that returns an error: the condition to report. */
void xcm__xml_reader_fail(xcm_xml_reader *r, xcm_cond cond, const char *text);

/* After a failed feed: the stream-error condition and a short explanation
 * (static or reader-owned text, valid until the next call). */
xcm_cond xcm__xml_reader_condition(const xcm_xml_reader *r);
const char *xcm__xml_reader_error_text(const xcm_xml_reader *r);

/* The namespace declarations of the current header (valid until the next
 * restart). */
const xcm_xml_nsdecl *xcm__xml_reader_decls(const xcm_xml_reader *r,
                                            size_t *ndecls);

/* 1 once a header was read (or assumed) and the end tag was not. */
int xcm__xml_reader_in_stream(const xcm_xml_reader *r);

/* Total bytes consumed since creation: offsets for error messages. */
uint64_t xcm__xml_reader_offset(const xcm_xml_reader *r);

/* Look-ups in a tree: the first child with that namespace and name (ns NULL
 * matches any namespace), and an attribute's value (no namespace) or
 * NULL. */
const xcm_xml_node *xcm__xml_node_child(const xcm_xml_node *n, const char *ns,
                                        const char *name);
const char *xcm__xml_node_attr(const xcm_xml_node *n, const char *name);
/* The value of the stream header's attribute name in namespace ns (""
 * for none), or NULL. */
const char *xcm__xml_header_attr(const xcm_xml_header *h, const char *ns,
                                 const char *name);
/* The default namespace the stream header declares, or NULL. */
const char *xcm__xml_header_default_ns(const xcm_xml_header *h);

#endif
