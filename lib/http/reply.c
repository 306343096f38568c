/* The HTTP layer's small pieces: the WebSocket accept value, reason
 * phrases, the listener's paths and origins, and host-meta. */
#include <mbedtls/base64.h>
#include <mbedtls/sha1.h>
#include <stdio.h>
#include <string.h>

#include "http/http.h"
#include "util/alloc.h"
#include "xcm/error.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

int xcm__http_ws_accept(const char *key, char out[29]) {
  unsigned char raw[20], decoded[18];
  char in[24 + sizeof WS_GUID];
  size_t n = strlen(key), dn;

  /* RFC 6455 4.2.1: the key is 16 random bytes in base64, 24 characters. */
  if (n != 24 ||
      mbedtls_base64_decode(decoded, sizeof decoded, &dn,
                            (const unsigned char *)key, n) != 0 ||
      dn != 16)
    return XCM_EINVAL;
  memcpy(in, key, 24);
  memcpy(in + 24, WS_GUID, sizeof WS_GUID - 1);
  if (mbedtls_sha1_ret((const unsigned char *)in, 24 + sizeof WS_GUID - 1,
                       raw) != 0 ||
      mbedtls_base64_encode((unsigned char *)out, 29, &n, raw, sizeof raw) != 0)
    return XCM_EINVAL;
  return 0;
}

const char *xcm__http_reason(int status) {
  switch (status) {
  case 101:
    return "Switching Protocols";
  case 200:
    return "OK";
  case 204:
    return "No Content";
  case 400:
    return "Bad Request";
  case 403:
    return "Forbidden";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 408:
    return "Request Timeout";
  case 413:
    return "Payload Too Large";
  case 414:
    return "URI Too Long";
  case 426:
    return "Upgrade Required";
  case 431:
    return "Request Header Fields Too Large";
  case 500:
    return "Internal Server Error";
  case 503:
    return "Service Unavailable";
  default:
    return "Unknown";
  }
}

/* A path a client can ask for: '/' and then printable ASCII without
 * blanks, '?' or '#', short enough for the cfg. */
static int good_path(const char *p, size_t n) {
  if (n == 0 || n >= 128 || p[0] != '/')
    return 0;
  for (size_t i = 0; i < n; i++)
    if (p[i] <= ' ' || p[i] >= 127 || p[i] == '?' || p[i] == '#' ||
        p[i] == '"' || p[i] == '\'' || p[i] == '<' || p[i] == '>' ||
        p[i] == '&' || p[i] == '\\')
      return 0;
  return 1;
}

static int fail(char *errbuf, size_t errlen, const char *field, const char *why,
                const char *what, size_t n) {
  if (errbuf != NULL && errlen > 0)
    snprintf(errbuf, errlen, "xcm_listen_options.%s: %s: '%.*s'", field, why,
             (int)(n > 80 ? 80 : n), what);
  return XCM_EINVAL;
}

/* Call fn for each comma-separated entry of list, blanks trimmed. */
static int each_entry(const char *list,
                      int (*fn)(void *ud, const char *s, size_t n), void *ud) {
  const char *p = list;

  while (p != NULL && *p != '\0') {
    const char *end = strchr(p, ','), *e;
    int err;

    if (end == NULL)
      end = p + strlen(p);
    while (p < end && (*p == ' ' || *p == '\t'))
      p++;
    e = end;
    while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
      e--;
    if ((err = fn(ud, p, (size_t)(e - p))) != 0)
      return err;
    p = *end ? end + 1 : end;
  }
  return 0;
}

typedef struct parse_ctx {
  xcm_http_cfg *cfg;
  const xcm_allocator *a;
  char *errbuf;
  size_t errlen;
} parse_ctx;

static int add_ws(void *ud, const char *s, size_t n) {
  parse_ctx *pc = ud;

  if (n == 0)
    return 0;
  if (!good_path(s, n))
    return fail(pc->errbuf, pc->errlen, "http_ws_paths",
                "not a path (one '/' first, no blanks, '?' or '#', under "
                "128 bytes)",
                s, n);
  if (pc->cfg->nws == HTTP_MAX_WS_PATHS)
    return fail(pc->errbuf, pc->errlen, "http_ws_paths",
                "at most 4 paths; too many at", s, n);
  memcpy(pc->cfg->ws_paths[pc->cfg->nws], s, n);
  pc->cfg->ws_paths[pc->cfg->nws++][n] = '\0';
  return 0;
}

/* An origin as browsers send it: scheme "://" host [":" port], nothing
 * else (RFC 6454). */
static int good_origin(const char *s, size_t n) {
  const char *sep = NULL;

  for (size_t i = 0; i + 2 < n; i++)
    if (s[i] == ':' && s[i + 1] == '/' && s[i + 2] == '/') {
      sep = s + i;
      break;
    }
  if (sep == NULL || sep == s || (size_t)(sep - s) + 3 == n)
    return 0;
  for (const char *p = sep + 3; p < s + n; p++)
    if (*p <= ' ' || *p >= 127 || *p == '/' || *p == '"' || *p == ',')
      return 0;
  return 1;
}

static int add_origin(void *ud, const char *s, size_t n) {
  parse_ctx *pc = ud;

  if (n == 0)
    return 0;
  if (n == 1 && s[0] == '*') {
    pc->cfg->any_origin = 1;
    return 0;
  }
  if (!good_origin(s, n))
    return fail(pc->errbuf, pc->errlen, "http_origins",
                "not an origin (scheme://host[:port], no path)", s, n);
  if (pc->cfg->norigins == HTTP_MAX_ORIGINS)
    return fail(pc->errbuf, pc->errlen, "http_origins",
                "at most 32 origins; too many at", s, n);
  pc->cfg->origins[pc->cfg->norigins] = xcm__strndup(pc->a, s, n);
  if (pc->cfg->origins[pc->cfg->norigins] == NULL)
    return XCM_ENOMEM;
  pc->cfg->norigins++;
  return 0;
}

int xcm__http_cfg_parse(xcm_http_cfg *cfg, const xcm_allocator *a,
                        const char *bosh_path, const char *ws_paths,
                        const char *origins, char *errbuf, size_t errlen) {
  parse_ctx pc = {cfg, a, errbuf, errlen};
  int err;

  if (bosh_path != NULL && bosh_path[0] != '\0') {
    if (!good_path(bosh_path, strlen(bosh_path)))
      return fail(errbuf, errlen, "http_bosh_path",
                  "not a path (one '/' first, no blanks, '?' or '#', under "
                  "128 bytes)",
                  bosh_path, strlen(bosh_path));
    strcpy(cfg->bosh_path, bosh_path);
  }
  if ((err = each_entry(ws_paths, add_ws, &pc)) != 0 ||
      (err = each_entry(origins, add_origin, &pc)) != 0) {
    xcm__http_cfg_free(cfg, a);
    return err;
  }
  if (origins == NULL || (cfg->norigins == 0 && !cfg->any_origin))
    cfg->any_origin = 1;
  return 0;
}

void xcm__http_cfg_free(xcm_http_cfg *cfg, const xcm_allocator *a) {
  for (unsigned i = 0; i < cfg->norigins; i++)
    xcm__free(a, cfg->origins[i]);
  cfg->norigins = 0;
}

int xcm__http_origin_ok(const xcm_http_cfg *cfg, const char *origin) {
  if (origin == NULL || cfg->any_origin)
    return 1;
  /* Scheme and host are case-insensitive; browsers send them lowercase,
   * operators may not write them so. */
  for (unsigned i = 0; i < cfg->norigins; i++)
    if (strcasecmp(cfg->origins[i], origin) == 0)
      return 1;
  return 0;
}

static int link_xml(xcm_buf *b, const char *rel, const char *base,
                    const char *path) {
  return xcm__buf_append_str(b, "  <Link rel='") ||
         xcm__buf_append_str(b, rel) || xcm__buf_append_str(b, "' href='") ||
         xcm__buf_append_str(b, base) || xcm__buf_append_str(b, path) ||
         xcm__buf_append_str(b, "'/>\n");
}

static int link_json(xcm_buf *b, int *first, const char *rel, const char *base,
                     const char *path) {
  int err = xcm__buf_append_str(b, *first ? "" : ",") ||
            xcm__buf_append_str(b, "{\"rel\":\"") ||
            xcm__buf_append_str(b, rel) ||
            xcm__buf_append_str(b, "\",\"href\":\"") ||
            xcm__buf_append_str(b, base) || xcm__buf_append_str(b, path) ||
            xcm__buf_append_str(b, "\"}");

  *first = 0;
  return err;
}

/* The bases come from the public URL (checked by options.c) or the
 * request's Host (checked by the caller: host characters only), and the
 * paths from good_path: none holds a quote or '<', so they go into XML
 * and JSON as they are. */
int xcm__http_host_meta(xcm_buf *b, const xcm_http_cfg *cfg, const char *http,
                        const char *ws, int json) {
  static const char bosh_rel[] = "urn:xmpp:alt-connections:xbosh";
  static const char ws_rel[] = "urn:xmpp:alt-connections:websocket";
  int err = 0, first = 1;

  if (!json) {
    err = xcm__buf_append_str(
        b, "<?xml version='1.0' encoding='utf-8'?>\n"
           "<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n");
    if (cfg->bosh_path[0] != '\0')
      err = err || link_xml(b, bosh_rel, http, cfg->bosh_path);
    for (unsigned i = 0; i < cfg->nws; i++)
      err = err || link_xml(b, ws_rel, ws, cfg->ws_paths[i]);
    err = err || xcm__buf_append_str(b, "</XRD>\n");
  } else {
    err = xcm__buf_append_str(b, "{\"links\":[");
    if (cfg->bosh_path[0] != '\0')
      err = err || link_json(b, &first, bosh_rel, http, cfg->bosh_path);
    for (unsigned i = 0; i < cfg->nws; i++)
      err = err || link_json(b, &first, ws_rel, ws, cfg->ws_paths[i]);
    err = err || xcm__buf_append_str(b, "]}\n");
  }
  return err ? XCM_ENOMEM : 0;
}
