#include "upstream/servers.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "xcm/error.h"

/* Host names longer than DNS allows are a typo, not a server. */
#define HOST_MAX 253

static int blank(char c) {
  return c == ' ' || c == '\t';
}

static int refuse(char *why, size_t whylen, const char *what, const char *e,
                  size_t n) {
  if (why != NULL && whylen > 0)
    snprintf(why, whylen, "\"%.*s%s\" %s", (int)(n > 80 ? 80 : n), e,
             n > 80 ? "..." : "", what);
  return XCM_EINVAL;
}

/* Digits only, 1 to 65535. */
static int read_port(const char *s, size_t n) {
  int v = 0;
  size_t i;

  if (n == 0 || n > 5)
    return -1;
  for (i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9')
      return -1;
    v = v * 10 + (s[i] - '0');
  }
  return v >= 1 && v <= 65535 ? v : -1;
}

/* One entry e[0..n), already trimmed. */
static int parse_one(const char *e, size_t n, xcm_server_ref *out, char *why,
                     size_t whylen) {
  const char *colon, *port = NULL;
  size_t i, plen = 0;

  out->port = XCM_SERVERS_DEFAULT_PORT;
  if (e[0] == '[') {
    const char *close = memchr(e, ']', n);

    if (close == NULL)
      return refuse(why, whylen, "has no ']' after the IPv6 address", e, n);
    out->host = e + 1;
    out->len = (size_t)(close - e) - 1;
    if (close + 1 < e + n) {
      if (close[1] != ':')
        return refuse(why, whylen, "has text after ']' (write [address]:port)",
                      e, n);
      port = close + 2;
      plen = (size_t)(e + n - port);
    }
  } else {
    colon = memchr(e, ':', n);
    if (colon != NULL && memchr(colon + 1, ':', (size_t)(e + n - colon - 1)))
      return refuse(why, whylen,
                    "looks like an IPv6 address: write it in brackets, "
                    "e.g. [::1]:5262",
                    e, n);
    out->host = e;
    out->len = colon ? (size_t)(colon - e) : n;
    if (colon != NULL) {
      port = colon + 1;
      plen = (size_t)(e + n - port);
    }
  }
  if (out->len == 0)
    return refuse(why, whylen, "has no host", e, n);
  if (out->len > HOST_MAX)
    return refuse(why, whylen, "has a host name longer than 253 bytes", e, n);
  for (i = 0; i < out->len; i++) {
    char c = out->host[i];

    if (blank(c))
      return refuse(why, whylen,
                    "has a space in the host (separate servers with ',')", e,
                    n);
    /* A name's or an address's characters (a zone id's '%' included):
     * the list is shown in logs and metric labels as it is. */
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_' ||
          c == ':' || c == '%'))
      return refuse(why, whylen, "has a character no host name or address has",
                    e, n);
  }
  if (port != NULL && (out->port = read_port(port, plen)) < 0)
    return refuse(why, whylen, "has no valid port (1 to 65535)", e, n);
  return 0;
}

int xcm__servers_parse(const char *list, xcm_server_ref out[XCM_SERVERS_MAX],
                       char *why, size_t whylen) {
  const char *p = list, *end, *comma;
  unsigned count = 0, j;
  int err;

  if (list == NULL)
    return XCM_EINVAL;
  end = list + strlen(list);
  for (;;) {
    const char *e = p, *e_end;

    comma = memchr(p, ',', (size_t)(end - p));
    e_end = comma ? comma : end;
    while (e < e_end && blank(*e))
      e++;
    while (e_end > e && blank(e_end[-1]))
      e_end--;
    if (e == e_end) {
      if (why != NULL && whylen > 0)
        snprintf(why, whylen,
                 "entry %u is empty (write host:port entries separated by "
                 "',', e.g. \"of1:5262, of2:5262\")",
                 count + 1);
      return XCM_EINVAL;
    }
    if (count == XCM_SERVERS_MAX) {
      if (why != NULL && whylen > 0)
        snprintf(why, whylen, "more than %d servers", XCM_SERVERS_MAX);
      return XCM_EINVAL;
    }
    err = parse_one(e, (size_t)(e_end - e), &out[count], why, whylen);
    if (err != 0)
      return err;
    for (j = 0; j < count; j++)
      if (out[j].port == out[count].port && out[j].len == out[count].len &&
          strncasecmp(out[j].host, out[count].host, out[j].len) == 0)
        return refuse(why, whylen, "is listed twice", e, (size_t)(e_end - e));
    count++;
    if (comma == NULL)
      break;
    p = comma + 1;
  }
  return (int)count;
}

void xcm__server_label(const xcm_server_ref *s, char *buf, size_t len) {
  int v6 = memchr(s->host, ':', s->len) != NULL;

  snprintf(buf, len, "%s%.*s%s:%d", v6 ? "[" : "", (int)s->len, s->host,
           v6 ? "]" : "", s->port);
}
