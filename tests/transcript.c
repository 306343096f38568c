#include "transcript.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef XCM_TRANSCRIPTS_DIR
#define XCM_TRANSCRIPTS_DIR "tests/transcripts"
#endif

typedef struct parser {
  xcm_transcript *t;
  const char *path;
  char *p;   /* next unread byte */
  char *end; /* one past the last byte of the file */
  unsigned line;
  size_t cap; /* of t->chunks */
} parser;

static int fail(parser *ps, const char *fmt, ...) {
  int n;
  va_list ap;

  n = snprintf(ps->t->error, sizeof(ps->t->error), "%s:%u: ", ps->path,
               ps->line);
  if (n < 0 || (size_t)n >= sizeof(ps->t->error))
    return -EINVAL;
  va_start(ap, fmt);
  vsnprintf(ps->t->error + n, sizeof(ps->t->error) - (size_t)n, fmt, ap);
  va_end(ap);
  return -EINVAL;
}

static int read_file(const char *path, xcm_transcript *t, size_t *len) {
  FILE *f;
  long size;
  int err = 0;

  f = fopen(path, "rb");
  if (f == NULL) {
    err = -errno;
    snprintf(t->error, sizeof(t->error), "%s: %s", path, strerror(errno));
    return err;
  }
  if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 ||
      fseek(f, 0, SEEK_SET) != 0) {
    err = -errno;
    snprintf(t->error, sizeof(t->error), "%s: %s", path, strerror(errno));
    goto out;
  }
  /* One byte more for a NUL after the last payload even when the file
   * does not end in a newline. */
  t->data = malloc((size_t)size + 1);
  if (t->data == NULL) {
    err = -ENOMEM;
    snprintf(t->error, sizeof(t->error), "%s: out of memory", path);
    goto out;
  }
  if (fread(t->data, 1, (size_t)size, f) != (size_t)size) {
    err = ferror(f) ? -EIO : -EINVAL;
    snprintf(t->error, sizeof(t->error), "%s: short read", path);
    goto out;
  }
  t->data[size] = '\0';
  *len = (size_t)size;
out:
  fclose(f);
  return err;
}

static int push_chunk(parser *ps, const xcm_transcript_chunk *c) {
  xcm_transcript *t = ps->t;
  xcm_transcript_chunk *grown;

  if (t->nchunks == ps->cap) {
    ps->cap = ps->cap ? ps->cap * 2 : 64;
    grown = realloc(t->chunks, ps->cap * sizeof(*grown));
    if (grown == NULL) {
      snprintf(t->error, sizeof(t->error), "%s: out of memory", ps->path);
      return -ENOMEM;
    }
    t->chunks = grown;
  }
  t->chunks[t->nchunks++] = *c;
  return 0;
}

/* "[   +0.125s] CM1 SEND 128B", then exactly 128 bytes and a newline.
 * line..eol is the header line without its newline. */
static int parse_chunk(parser *ps, char *line, char *eol) {
  xcm_transcript_chunk c;
  char *s = line + 1, *conn_end, *num_end, *payload;
  unsigned long long len;

  while (*s == ' ')
    s++;
  /* strtod would skip a newline as whitespace: check for a digit first. */
  if (*s++ != '+' || !isdigit((unsigned char)*s))
    return fail(ps, "header: expected '+seconds' after '['");
  c.time = strtod(s, &s);
  if (s + 3 > eol || memcmp(s, "s] ", 3) != 0)
    return fail(ps, "header: expected 's] ' after the time");
  s += 3;
  c.conn = s;
  conn_end = memchr(s, ' ', (size_t)(eol - s));
  if (conn_end == NULL || conn_end == s)
    return fail(ps, "header: no connection label");
  s = conn_end + 1;
  if (eol - s >= 5 && memcmp(s, "SEND ", 5) == 0)
    c.is_send = 1;
  else if (eol - s >= 5 && memcmp(s, "RECV ", 5) == 0)
    c.is_send = 0;
  else
    return fail(ps, "header: expected SEND or RECV");
  s += 5;
  if (!isdigit((unsigned char)*s))
    return fail(ps, "header: expected a byte count");
  errno = 0;
  len = strtoull(s, &num_end, 10);
  if (errno != 0 || num_end + 1 != eol || *num_end != 'B')
    return fail(ps, "header: expected '<count>B' at the end");

  payload = eol + 1;
  if (len > (unsigned long long)(ps->end - payload))
    return fail(ps, "payload of %llu bytes runs past the end of the file", len);
  if (payload + len < ps->end && payload[len] != '\n')
    return fail(ps, "payload of %llu bytes is not followed by a newline", len);
  c.bytes = payload;
  c.len = (size_t)len;

  /* NUL-terminate the label and the payload in place, so tests can use
   * them as strings. */
  *conn_end = '\0';
  payload[len] = '\0';
  /* The header's newline and the payload's closing one. */
  ps->line += 2;
  for (size_t i = 0; i < c.len; i++)
    ps->line += payload[i] == '\n';
  ps->p = payload + len < ps->end ? payload + len + 1 : ps->end;
  return push_chunk(ps, &c);
}

/* One character of a Python bytes literal, escapes included. Returns the
 * byte, or -1 if the escape is not one Python's repr() writes. */
static int repr_byte(const char **sp, const char *end) {
  const char *s = *sp;
  char hex[3] = {0};

  if (*s != '\\') {
    *sp = s + 1;
    return (unsigned char)*s;
  }
  if (end - s < 2)
    return -1;
  *sp = s + 2;
  switch (s[1]) {
  case 'n':
    return '\n';
  case 'r':
    return '\r';
  case 't':
    return '\t';
  case '\\':
  case '\'':
  case '"':
    return (unsigned char)s[1];
  case 'x':
    if (end - s < 4 || !isxdigit((unsigned char)s[2]) ||
        !isxdigit((unsigned char)s[3]))
      return -1;
    hex[0] = s[2];
    hex[1] = s[3];
    *sp = s + 4;
    return (int)strtol(hex, NULL, 16);
  default:
    return -1;
  }
}

/* "    repr: b' '": what the previous, whitespace-only payload was. Check
 * that it says the same as the byte count did. */
static int check_repr(parser *ps, const xcm_transcript_chunk *c,
                      const char *line, const char *eol) {
  const char *s = line + strlen("    repr: ");
  size_t i = 0;
  char quote;
  int b;

  if (c == NULL)
    return fail(ps, "repr line does not follow a payload");
  if (eol - s < 3 || s[0] != 'b' || (s[1] != '\'' && s[1] != '"') ||
      eol[-1] != s[1])
    return fail(ps, "repr line is not a bytes literal");
  quote = s[1];
  s += 2;
  eol--;
  while (s < eol) {
    if (*s == quote)
      return fail(ps, "repr line: stray quote");
    b = repr_byte(&s, eol);
    if (b < 0)
      return fail(ps, "repr line: unknown escape");
    if (i >= c->len || (unsigned char)c->bytes[i] != b)
      return fail(ps, "repr line disagrees with the payload at byte %zu", i);
    i++;
  }
  if (i != c->len)
    return fail(ps, "repr line has %zu bytes, the payload %zu", i, c->len);
  return 0;
}

int xcm_transcript_load(const char *path, xcm_transcript *out) {
  parser ps;
  size_t len = 0;
  /* The chunk whose payload ended just before the current line. */
  const xcm_transcript_chunk *just_read = NULL;
  int err;

  memset(out, 0, sizeof(*out));
  err = read_file(path, out, &len);
  if (err != 0)
    goto fail;

  ps.t = out;
  ps.path = path;
  ps.p = out->data;
  ps.end = out->data + len;
  ps.line = 1;
  ps.cap = 0;
  while (ps.p < ps.end) {
    char *line = ps.p;
    char *eol = memchr(line, '\n', (size_t)(ps.end - line));
    const xcm_transcript_chunk *prev = just_read;

    if (eol == NULL)
      eol = ps.end;
    just_read = NULL;
    if (line[0] == '[') {
      err = parse_chunk(&ps, line, eol);
      if (err != 0)
        goto fail;
      just_read = &out->chunks[out->nchunks - 1];
      continue;
    }
    if ((size_t)(eol - line) >= strlen("    repr: ") &&
        memcmp(line, "    repr: ", strlen("    repr: ")) == 0) {
      err = check_repr(&ps, prev, line, eol);
      if (err != 0)
        goto fail;
    } else if (line[0] != '#' && eol != line) {
      err = fail(&ps, "expected a chunk header, a comment or a repr line");
      goto fail;
    }
    ps.p = eol < ps.end ? eol + 1 : ps.end;
    ps.line++;
  }
  return 0;

fail:
  free(out->chunks);
  free(out->data);
  out->chunks = NULL;
  out->data = NULL;
  out->nchunks = 0;
  return err;
}

void xcm_transcript_free(xcm_transcript *t) {
  free(t->chunks);
  free(t->data);
  t->chunks = NULL;
  t->data = NULL;
  t->nchunks = 0;
}

const char *xcm_transcript_dir(void) {
  const char *dir = getenv("XCM_TRANSCRIPTS");

  return dir != NULL && dir[0] != '\0' ? dir : XCM_TRANSCRIPTS_DIR;
}

int xcm_transcript_load_named(const char *name, xcm_transcript *out) {
  char path[4096];
  int n;

  n = snprintf(path, sizeof(path), "%s/%s", xcm_transcript_dir(), name);
  if (n < 0 || (size_t)n >= sizeof(path)) {
    memset(out, 0, sizeof(*out));
    snprintf(out->error, sizeof(out->error), "path too long for %s", name);
    return -ENAMETOOLONG;
  }
  return xcm_transcript_load(path, out);
}
