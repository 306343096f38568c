/* Start-tag surgery on the exact bytes of a well-formed element.
 *
 * Openfire parses a stanza into a dom4j tree, sets from/to/type on it and
 * writes it out again. dom4j keeps attributes in document order: a value
 * that is set replaces the old one in place, a new attribute goes last.
 * The captures show exactly that (from appended after id and xml:lang),
 * so the testkit edits start tags the same way and leaves everything
 * after the start tag byte for byte as the client wrote it. */
#include <string.h>

#include "testkit/testkit.h"
#include "xcm/error.h"
#include "xml/writer.h"

typedef struct raw_attr {
  const char *name;
  size_t name_len;
  const char *value; /* between the quotes, still escaped */
  size_t value_len;
  const char *text; /* name="value", quotes included */
  size_t text_len;
} raw_attr;

typedef struct tag {
  const char *bytes;
  size_t len;
  size_t qname_end; /* just past "<qname" */
  size_t pos;       /* scanning position */
  size_t tail;      /* start of the whitespace and "/>" or ">" */
  size_t end;       /* just past the start tag */
} tag;

static int is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static void tag_open(tag *t, const char *bytes, size_t len) {
  size_t i = 1;

  t->bytes = bytes;
  t->len = len;
  while (i < len && !is_space(bytes[i]) && bytes[i] != '>' && bytes[i] != '/')
    i++;
  t->qname_end = t->pos = i;
  t->tail = t->end = 0;
}

/* The next attribute, or 0 at the end of the start tag (then tail and
 * end are set). The element is well-formed, so a value ends at its own
 * quote whatever it contains. */
static int tag_next(tag *t, raw_attr *a) {
  const char *b = t->bytes;
  size_t i = t->pos, start;
  char q;

  while (i < t->len && is_space(b[i]))
    i++;
  if (i >= t->len || b[i] == '>' || b[i] == '/') {
    /* Keep the whitespace before "/>" with the tail. */
    t->tail = t->pos;
    while (i < t->len && b[i] != '>')
      i++;
    t->end = i < t->len ? i + 1 : t->len;
    return 0;
  }
  start = i;
  a->name = b + i;
  while (i < t->len && b[i] != '=' && !is_space(b[i]))
    i++;
  a->name_len = (size_t)(b + i - a->name);
  while (i < t->len && b[i] != '\'' && b[i] != '"')
    i++;
  q = i < t->len ? b[i] : '"';
  i++;
  a->value = b + i;
  while (i < t->len && b[i] != q)
    i++;
  a->value_len = (size_t)(b + i - a->value);
  i++;
  a->text = b + start;
  a->text_len = i - start;
  t->pos = i;
  return 1;
}

static int name_is(const raw_attr *a, const char *name) {
  return strlen(name) == a->name_len && memcmp(a->name, name, a->name_len) == 0;
}

static int value_is(const raw_attr *a, const char *v) {
  return strlen(v) == a->value_len && memcmp(a->value, v, a->value_len) == 0;
}

static int put_attr(xcm_buf *b, const char *name, const char *value) {
  int err = xcm__buf_append_char(b, ' ');

  if (err == 0)
    err = xcm__buf_append_str(b, name);
  if (err == 0)
    err = xcm__buf_append_str(b, "=\"");
  if (err == 0)
    err = xcm__xml_escape_attr(b, value, strlen(value));
  if (err == 0)
    err = xcm__buf_append_char(b, '"');
  return err;
}

/* The op that applies to a, or NULL. */
static const xcm_tk_attr_op *op_for(const raw_attr *a,
                                    const xcm_tk_attr_op *ops, size_t nops) {
  size_t i;

  for (i = 0; i < nops; i++)
    if (name_is(a, ops[i].name) &&
        (ops[i].match == NULL || value_is(a, ops[i].match)))
      return &ops[i];
  return NULL;
}

static int present(const tag *t0, const xcm_tk_attr_op *op) {
  tag t = *t0;
  raw_attr a;

  while (tag_next(&t, &a))
    if (name_is(&a, op->name))
      return 1;
  return 0;
}

static int appended(const tag *t, const xcm_tk_attr_op *op, int first) {
  return op->match == NULL && op->value != NULL && !!op->first == first &&
         !present(t, op);
}

int xcm__tk_rewrite(xcm_buf *b, const char *bytes, size_t len,
                    const xcm_tk_attr_op *ops, size_t nops) {
  size_t mark = b->len, i;
  tag t, start;
  raw_attr a;
  int err;

  if (len < 3 || bytes[0] != '<')
    return XCM_EINVAL;
  tag_open(&t, bytes, len);
  start = t;
  err = xcm__buf_append(b, bytes, t.qname_end);
  for (i = 0; err == 0 && i < nops; i++)
    if (appended(&start, &ops[i], 1))
      err = put_attr(b, ops[i].name, ops[i].value);
  while (err == 0 && tag_next(&t, &a)) {
    const xcm_tk_attr_op *op = op_for(&a, ops, nops);

    if (op == NULL) {
      err = xcm__buf_append_char(b, ' ');
      if (err == 0)
        err = xcm__buf_append(b, a.text, a.text_len);
    } else if (op->value != NULL) {
      err = put_attr(b, op->name, op->value);
    }
  }
  for (i = 0; err == 0 && i < nops; i++)
    if (appended(&start, &ops[i], 0))
      err = put_attr(b, ops[i].name, ops[i].value);
  if (err == 0) {
    const char *tail = bytes + t.tail;

    /* Openfire writes no space before "/>" or ">"; the client's own
     * spacing there is not kept. */
    while (is_space(*tail))
      tail++;
    err = xcm__buf_append(b, tail, len - (size_t)(tail - bytes));
  }
  if (err != 0)
    b->len = mark;
  return err;
}

static int self_closing(const tag *t) {
  return t->end >= 2 && t->bytes[t->end - 2] == '/';
}

/* Where the end tag starts: the last "</" of a well-formed element. */
static size_t end_tag_at(const char *bytes, size_t len) {
  size_t i = len;

  while (i >= 2) {
    i--;
    if (bytes[i - 1] == '<' && bytes[i] == '/')
      return i - 1;
  }
  return len;
}

int xcm__tk_add_child(xcm_buf *b, const char *bytes, size_t len,
                      const char *child, size_t child_len) {
  size_t mark = b->len;
  tag t;
  raw_attr a;
  int err;

  tag_open(&t, bytes, len);
  while (tag_next(&t, &a))
    ;
  if (self_closing(&t)) {
    size_t slash = t.end - 2;

    while (slash > t.qname_end && is_space(bytes[slash - 1]))
      slash--;
    err = xcm__buf_append(b, bytes, slash);
    if (err == 0)
      err = xcm__buf_append_char(b, '>');
    if (err == 0)
      err = xcm__buf_append(b, child, child_len);
    if (err == 0)
      err = xcm__buf_append_str(b, "</");
    if (err == 0)
      err = xcm__buf_append(b, bytes + 1, t.qname_end - 1);
    if (err == 0)
      err = xcm__buf_append_char(b, '>');
  } else {
    size_t at = end_tag_at(bytes, len);

    err = xcm__buf_append(b, bytes, at);
    if (err == 0)
      err = xcm__buf_append(b, child, child_len);
    if (err == 0)
      err = xcm__buf_append(b, bytes + at, len - at);
  }
  if (err != 0)
    b->len = mark;
  return err;
}

void xcm__tk_content(const char *bytes, size_t len, const char **content,
                     size_t *content_len) {
  tag t;
  raw_attr a;
  size_t at;

  tag_open(&t, bytes, len);
  while (tag_next(&t, &a))
    ;
  if (self_closing(&t)) {
    *content = bytes + len;
    *content_len = 0;
    return;
  }
  at = end_tag_at(bytes, len);
  *content = bytes + t.end;
  *content_len = at > t.end ? at - t.end : 0;
}

size_t xcm__tk_start_tag(const char *bytes, size_t len, int *self_closing_out) {
  tag t;
  raw_attr a;

  tag_open(&t, bytes, len);
  while (tag_next(&t, &a))
    ;
  *self_closing_out = self_closing(&t);
  return t.end;
}

int xcm__tk_attr_raw(const char *bytes, size_t len, const char *name,
                     const char **value, size_t *vlen) {
  tag t;
  raw_attr a;

  tag_open(&t, bytes, len);
  while (tag_next(&t, &a)) {
    if (name_is(&a, name)) {
      *value = a.value;
      *vlen = a.value_len;
      return 1;
    }
  }
  return 0;
}
