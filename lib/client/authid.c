#include "client/authid.h"

#include <mbedtls/base64.h>
#include <string.h>

#include "util/alloc.h"

/* SASL initial responses are small; anything bigger names nobody. */
#define MAX_RESPONSE 1024

static char lower(char c) {
  return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* "id" (len bytes, no NUL inside), with "@domain" when it has no '@'. */
static char *make_bare(const xcm_allocator *a, const char *id, size_t len,
                       const char *domain) {
  int has_at = memchr(id, '@', len) != NULL;
  size_t dl = has_at ? 0 : strlen(domain), i, n = len + (has_at ? 0 : 1 + dl);
  char *out;

  if (len == 0 || memchr(id, '\0', len) != NULL || memchr(id, '/', len))
    return NULL;
  out = xcm__alloc(a, n + 1);
  if (out == NULL)
    return NULL;
  memcpy(out, id, len);
  if (!has_at) {
    out[len] = '@';
    memcpy(out + len + 1, domain, dl);
  }
  for (i = 0; i < n; i++)
    out[i] = lower(out[i]);
  out[n] = '\0';
  return out;
}

/* PLAIN (RFC 4616): authzid NUL authcid NUL passwd. */
static char *plain(const xcm_allocator *a, const char *m, size_t n,
                   const char *domain) {
  const char *z1 = memchr(m, '\0', n), *z2;

  if (z1 == NULL)
    return NULL;
  z2 = memchr(z1 + 1, '\0', n - (size_t)(z1 + 1 - m));
  if (z2 == NULL)
    return NULL;
  if (z1 > m)
    return make_bare(a, m, (size_t)(z1 - m), domain);
  return make_bare(a, z1 + 1, (size_t)(z2 - z1 - 1), domain);
}

/* A SCRAM saslname (RFC 5802 5.1): "=2C" is ',' and "=3D" is '='. */
static char *saslname(const xcm_allocator *a, const char *s, size_t n,
                      const char *domain) {
  char buf[MAX_RESPONSE];
  size_t i, o = 0;

  for (i = 0; i < n; i++) {
    if (s[i] != '=') {
      buf[o++] = s[i];
    } else if (i + 2 < n && s[i + 1] == '2' && s[i + 2] == 'C') {
      buf[o++] = ',';
      i += 2;
    } else if (i + 2 < n && s[i + 1] == '3' && s[i + 2] == 'D') {
      buf[o++] = '=';
      i += 2;
    } else {
      return NULL;
    }
  }
  return make_bare(a, buf, o, domain);
}

/* SCRAM client-first-message: gs2-cbind-flag "," [ "a=" authzid ] ","
 * "n=" username "," ... */
static char *scram(const xcm_allocator *a, const char *m, size_t n,
                   const char *domain) {
  const char *end = m + n, *c1 = memchr(m, ',', n), *c2, *c3;

  if (c1 == NULL)
    return NULL;
  c2 = memchr(c1 + 1, ',', (size_t)(end - c1 - 1));
  if (c2 == NULL || end - c2 < 3 || c2[1] != 'n' || c2[2] != '=')
    return NULL;
  if (c2 - c1 - 1 > 2 && c1[1] == 'a' && c1[2] == '=')
    return saslname(a, c1 + 3, (size_t)(c2 - c1 - 3), domain);
  if (c2 != c1 + 1)
    return NULL;
  c3 = memchr(c2 + 3, ',', (size_t)(end - c2 - 3));
  if (c3 == NULL)
    return NULL;
  return saslname(a, c2 + 3, (size_t)(c3 - c2 - 3), domain);
}

char *xcm__authid_from_auth(const xcm_allocator *a, const char *mech,
                            const char *b64, size_t b64_len,
                            const char *domain) {
  unsigned char m[MAX_RESPONSE];
  size_t n = 0;

  if (mech == NULL || b64 == NULL || domain == NULL)
    return NULL;
  if (mbedtls_base64_decode(m, sizeof m, &n, (const unsigned char *)b64,
                            b64_len) != 0 ||
      n == 0)
    return NULL;
  if (strcmp(mech, "PLAIN") == 0)
    return plain(a, (const char *)m, n, domain);
  if (strncmp(mech, "SCRAM-", 6) == 0)
    return scram(a, (const char *)m, n, domain);
  return NULL;
}

int xcm__authid_matches(const char *bare, const char *jid) {
  size_t i;

  if (bare == NULL || jid == NULL)
    return 0;
  for (i = 0; bare[i] != '\0'; i++)
    if (jid[i] == '\0' || lower(jid[i]) != bare[i])
      return 0;
  return jid[i] == '\0' || jid[i] == '/';
}
