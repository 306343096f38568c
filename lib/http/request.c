/* One request read by http-parser: see request.h. */
#include "http/request.h"

#include <string.h>
#include <strings.h>

#include "util/alloc.h"

typedef xcm_http_reading reading;

static const char *const header_names[H_COUNT] = {"host",
                                                  "origin",
                                                  "connection",
                                                  "upgrade",
                                                  "sec-websocket-key",
                                                  "sec-websocket-version",
                                                  "sec-websocket-protocol",
                                                  "content-type",
                                                  "expect"};

static int keep(reading *rd, const char *at, size_t len) {
  if (rd->used + len + 1 > rd->cap)
    return -1;
  memcpy(rd->arena + rd->used, at, len);
  rd->used += len;
  rd->arena[rd->used] = '\0';
  return 0;
}

static int on_url(http_parser *p, const char *at, size_t len) {
  reading *rd = p->data;

  rd->hbytes += len;
  if (rd->url == (size_t)-1)
    rd->url = rd->used;
  else
    rd->used--; /* the piece before ended in its NUL */
  if (rd->hbytes > rd->cap || keep(rd, at, len) != 0) {
    rd->status = 414;
    return -1;
  }
  rd->used++;
  return 0;
}

static int is_tchar(unsigned char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
         (ch >= '0' && ch <= '9') || (ch != 0 && strchr("!#$%&'*+-.^_`|~", ch));
}

static int on_header_field(http_parser *p, const char *at, size_t len) {
  reading *rd = p->data;

  if (rd->in_value || rd->field_len == (size_t)-1) {
    /* A new header begins. */
    rd->in_value = 0;
    rd->field_len = 0;
    rd->which = -1;
    rd->hbytes += 4; /* ": " and CRLF */
  }
  rd->hbytes += len;
  if (rd->hbytes > rd->cap) {
    rd->status = 431;
    return -1;
  }
  /* RFC 7230 3.2: a name is a token. http-parser as Debian builds it
   * (not HTTP_PARSER_STRICT) lets blanks through, which a proxy in
   * front may read otherwise: refused here. */
  for (size_t i = 0; i < len; i++)
    if (!is_tchar((unsigned char)at[i])) {
      rd->status = 400;
      return -1;
    }
  /* Names longer than any kept are read past. */
  if (rd->field_len + len < sizeof rd->field)
    memcpy(rd->field + rd->field_len, at, len);
  rd->field_len += len;
  return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len) {
  reading *rd = p->data;

  if (!rd->in_value) {
    rd->in_value = 1;
    rd->which = -1;
    if (rd->field_len < sizeof rd->field)
      for (int h = 0; h < H_COUNT; h++)
        if (strlen(header_names[h]) == rd->field_len &&
            strncasecmp(header_names[h], rd->field, rd->field_len) == 0) {
          /* One of each: two Hosts or two keys are an attempt to be
           * read two ways. */
          if (rd->val[h] != (size_t)-1) {
            rd->status = 400;
            return -1;
          }
          rd->which = h;
          rd->val[h] = rd->used;
          if (keep(rd, "", 0) != 0) {
            rd->status = 431;
            return -1;
          }
          rd->used++;
          break;
        }
  }
  rd->hbytes += len;
  if (rd->hbytes > rd->cap) {
    rd->status = 431;
    return -1;
  }
  if (rd->which >= 0) {
    rd->used--; /* over the NUL */
    if (keep(rd, at, len) != 0) {
      rd->status = 431;
      return -1;
    }
    rd->used++;
  }
  return 0;
}

static int on_headers_complete(http_parser *p) {
  reading *rd = p->data;

  rd->headers_done = 1;
  if ((p->flags & F_CONTENTLENGTH) && p->content_length > rd->max_body) {
    rd->status = 413;
    return -1;
  }
  if (rd->head != NULL)
    rd->head(rd->ud, rd);
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t len) {
  reading *rd = p->data;

  if (rd->body.len + len > rd->max_body) {
    rd->status = 413;
    return -1;
  }
  if (xcm__buf_append(&rd->body, at, len) != 0) {
    rd->status = 503;
    return -1;
  }
  return 0;
}

static int on_message_complete(http_parser *p) {
  reading *rd = p->data;

  rd->done = 1;
  /* Stop here: the request is dispatched before the next one is read. */
  http_parser_pause(p, 1);
  return 0;
}

static const http_parser_settings settings = {
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

xcm_http_reading *xcm__http_reading_new(const xcm_allocator *a,
                                        size_t max_header, size_t max_body,
                                        xcm_http_head_fn head, void *ud) {
  reading *rd = xcm__calloc(a, sizeof(*rd) + max_header + 1);

  if (rd == NULL)
    return NULL;
  http_parser_init(&rd->p, HTTP_REQUEST);
  rd->p.data = rd;
  rd->alloc = a;
  rd->cap = max_header;
  rd->max_body = max_body;
  rd->head = head;
  rd->ud = ud;
  rd->url = (size_t)-1;
  rd->field_len = (size_t)-1;
  for (int h = 0; h < H_COUNT; h++)
    rd->val[h] = (size_t)-1;
  xcm__buf_init(&rd->body, a);
  return rd;
}

void xcm__http_reading_free(xcm_http_reading *rd) {
  if (rd == NULL)
    return;
  xcm__buf_free(&rd->body);
  xcm__free(rd->alloc, rd);
}

static int status_of(enum http_errno e) {
  switch (e) {
  case HPE_HEADER_OVERFLOW:
    return 431;
  default:
    return 400;
  }
}

int xcm__http_reading_feed(xcm_http_reading *rd, const char *data, size_t len,
                           size_t *used) {
  size_t n = http_parser_execute(&rd->p, &settings, data, len);
  enum http_errno e = HTTP_PARSER_ERRNO(&rd->p);

  *used = n > len ? len : n;
  if (rd->status != 0)
    return rd->status;
  if (e != HPE_OK && e != HPE_PAUSED)
    return status_of(e);
  if (rd->done) {
    http_parser_pause(&rd->p, 0);
    return rd->url == (size_t)-1 ? 400 : 1;
  }
  /* Stopped early without a word: not a request to go on with. */
  return *used < len ? 400 : 0;
}

const char *xcm__http_reading_header(const xcm_http_reading *rd, int h) {
  return rd->val[h] == (size_t)-1 ? NULL : rd->arena + rd->val[h];
}

char *xcm__http_reading_target(xcm_http_reading *rd) {
  return rd->arena + rd->url;
}

size_t xcm__http_reading_footprint(const xcm_http_reading *rd) {
  return sizeof(*rd) + rd->cap + 1 + rd->body.cap;
}
